"""Reference for sparse probing (EVAL_SPEC.md A4-A8, C1, C7; docs/probing.md), written from the
protocol with numpy and scikit-learn, independent of the C code.

It builds a small labelled fixture (windows with labels and groups, per-token activations at two
layers, a tiny TopK SAE per layer, an affine map between the layers) and computes in float64:
  - the plan: group split, eligible classes, class sets, pools and one-vs-rest binary tasks
    (the algorithm documented in include/resae/probe_data.h, re-implemented here: splitmix64 and
    xoshiro256** streams, partial Fisher-Yates draws, Floyd sampling for the random floor);
  - pooled original-unit latents zh = z / s over positions skip..T-1 for raw and resae (resae at
    the second layer encodes r = h_2 - A (h_1 - mu_x) - mu_y);
  - top-K by |mean_pos - mean_neg| on the train task (ties to the lower index), per layer and over
    the union, and K random latents;
  - the test accuracy of sklearn LogisticRegression(solver="liblinear", C=1, tol=1e-4) on each.
Writes tests/data/probe/probe_fixture.h5 (inputs and expected outputs); test_probe.c reads it.
Tokens are random ids below VOCAB (only the loader reads them: activations are given)."""
import os
import sys

import h5py
import numpy as np
from sklearn.linear_model import LogisticRegression

M64 = (1 << 64) - 1
VOCAB = 50
N_LABELS, T, D, N_LAT, K_SAE, SKIP = 7, 12, 8, 32, 4, 1
OPTS = dict(n_train=30, n_test=10, classes_per_set=3, max_sets=2, test_fraction=0.25, seed=42)
TOP_K = [1, 2, 5]


# ---- random streams (as documented in rng.h / probe_data.h) ------------------------------------------
def splitmix(x):
    z = (x + 0x9e3779b97f4a7c15) & M64
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)


class Xoshiro:
    def __init__(self, x):
        self.s = []
        for _ in range(4):
            x = (x + 0x9e3779b97f4a7c15) & M64
            self.s.append(splitmix((x - 0x9e3779b97f4a7c15) & M64))

    def next(self):
        s = self.s
        rotl = lambda v, r: ((v << r) | (v >> (64 - r))) & M64  # noqa: E731
        out = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return out

    def below(self, n):
        lim = M64 - (M64 % n)
        while True:
            v = self.next()
            if v < lim:
                return v % n


def stream(seed, a, b, c):
    return Xoshiro(splitmix(seed ^ splitmix(a + 1) ^ splitmix((splitmix(b + 1) + c) & M64)))


def draw(v, k, rng):
    v = list(v)
    for i in range(min(k, len(v))):
        j = i + rng.below(len(v) - i)
        v[i], v[j] = v[j], v[i]
    return v


# ---- the plan ----------------------------------------------------------------------------------------
def build_plan(labels, groups, o, n_labels=N_LABELS):
    labels, groups = [int(x) for x in labels], [int(x) for x in groups]
    n = len(labels)
    side = {}
    stats = []
    for L in range(n_labels):
        idx = [i for i in range(n) if labels[i] == L]
        sizes = {}
        for i in idx:
            sizes[groups[i]] = sizes.get(groups[i], 0) + 1
        count = len(idx)
        big = any(2 * s > count for s in sizes.values())
        test = sum(s for g, s in sizes.items() if side.get(g) == 1)
        target = o["test_fraction"] * count
        for g in sorted(sizes, key=lambda g: (splitmix(o["seed"] ^ splitmix(g + 1)), g)):
            if g in side:
                continue
            side[g] = int(abs(test + sizes[g] - target) < abs(test - target))
            test += sizes[g] if side[g] else 0
        stats.append((count, test, len(sizes), big))
    test_side = np.array([side[groups[i]] for i in range(n)], np.int8)
    elig = [(-c, L) for L, (c, te, ng, big) in enumerate(stats)
            if c >= o["n_train"] + o["n_test"] and ng >= 3 and not big and te >= o["n_test"]
            and c - te >= o["n_train"]]
    elig.sort()
    C = o["classes_per_set"]
    S = min(o["max_sets"], len(elig) // C)
    sets = []
    for s in range(S):
        labs = [elig[s + c * S][1] for c in range(C)]
        pools = []
        for L in labs:
            p = []
            for sd, k in ((0, o["n_train"]), (1, o["n_test"])):
                cand = [i for i in range(n) if labels[i] == L and test_side[i] == sd]
                p.append(sorted(draw(cand, k, stream(o["seed"], L, 1000 + sd, 0))[:k]))
            pools.append(p)
        windows = sorted(w for p in pools for side_p in p for w in side_p)
        pos = {w: i for i, w in enumerate(windows)}
        tasks = []
        for c in range(C):
            t = {}
            for sd, k in ((0, o["n_train"]), (1, o["n_test"])):
                rng = stream(o["seed"], 100000 + s, c, sd)
                per = (k + C - 2) // (C - 1)
                neg = []
                for j in range(C):
                    if j != c:
                        neg += draw(pools[j][sd], per, rng)[:per]
                neg = draw(neg, k, rng)[:k]
                t[sd] = (np.array([pos[w] for w in pools[c][sd] + neg], np.int32),
                         np.array([1] * k + [0] * k, np.int8))
            tasks.append(t)
        sets.append(dict(labels=labs, windows=np.array(windows, np.int64), tasks=tasks))
    return test_side, len(elig), sets


def random_latents(n, K, seed, a, b):
    rng = Xoshiro(splitmix(seed ^ splitmix(a + 1) ^ splitmix((splitmix(b + 1) + 7) & M64)))
    sel = []
    for j in range(n - K, n):
        v = rng.below(j + 1)
        sel.append(j if v in sel else v)
    return sorted(sel)


# ---- SAE and probes -------------------------------------------------------------------------------------
def topk_codes(x, W_enc, b_enc, b_dec, k):
    """TopK SAE codes (float64): ReLU(W_enc (x - b_dec) + b_enc), the k largest kept; also the margin
    between the k-th and (k+1)-th pre-activations (the fixture avoids near-ties)."""
    pre = np.maximum((x - b_dec) @ W_enc.T + b_enc, 0)
    order = np.argsort(-pre, axis=1, kind="stable")
    z = np.zeros_like(pre)
    rows = np.arange(len(pre))[:, None]
    z[rows, order[:, :k]] = pre[rows, order[:, :k]]
    srt = -np.sort(-pre, axis=1)
    live = srt[:, k - 1] > 0
    margin = np.min((srt[:, k - 1] - srt[:, k])[live]) if live.any() else np.inf
    return z, margin


def pool(x):
    """Mean over positions SKIP..T-1 of (n, T, F), as float32."""
    return x[:, SKIP:, :].mean(axis=1).astype(np.float32)


def topk_select(X, tr, y, K):
    Xd = X[tr].astype(np.float64)
    score = np.abs(Xd[y == 1].mean(0) - Xd[y == 0].mean(0))
    return np.lexsort((np.arange(len(score)), -score))[:K]


def probe_acc(X, sel, task):
    (tr, ytr), (te, yte) = task[0], task[1]
    clf = LogisticRegression(solver="liblinear", C=1.0, tol=1e-4)
    clf.fit(X[tr][:, sel].astype(np.float64), ytr)
    return float((clf.predict(X[te][:, sel].astype(np.float64)) == yte).mean())


def make_inputs(rng):
    """Windows of N_LABELS classes from groups of 3..25 windows; class-dependent activations."""
    labels, groups = [], []
    g = 0
    for L in range(N_LABELS):
        want = [30, 90, 70, 60, 55, 80, 65][L]
        while want > 0:
            s = min(want, int(rng.integers(3, 15)))
            labels += [L] * s
            groups += [g] * s
            g += 1
            want -= s
    n = len(labels)
    perm = rng.permutation(n)
    labels = np.array(labels, np.int32)[perm]
    groups = np.array(groups, np.int32)[perm]
    centers = rng.normal(0, 0.6, (N_LABELS, D))
    h1 = (rng.normal(0, 1, (n, T, D)) + centers[labels][:, None, :]).astype(np.float32)
    A = rng.normal(0, 0.4, (D, D))
    h2 = (h1 @ A.T.astype(np.float32) + rng.normal(0, 0.7, (n, T, D)).astype(np.float32)
          + 0.5 * centers[(labels + 1) % N_LABELS][:, None, :].astype(np.float32)).astype(np.float32)
    return labels, groups, [h1, h2]


def make_sae(rng):
    W_dec = rng.normal(0, 1, (N_LAT, D))
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    W_enc = W_dec + rng.normal(0, 0.3, (N_LAT, D))
    return dict(W_enc=W_enc.astype(np.float32), b_enc=rng.normal(0, 0.1, N_LAT).astype(np.float32),
                W_dec=W_dec.astype(np.float32), b_dec=rng.normal(0, 0.1, D).astype(np.float32))


def fit_map(x, y):
    X = x.reshape(-1, D).astype(np.float64)
    Y = y.reshape(-1, D).astype(np.float64)
    mx, my = X.mean(0), Y.mean(0)
    Cxx = (X - mx).T @ (X - mx) + 1e-3 * np.eye(D)
    A = np.linalg.solve(Cxx, (X - mx).T @ (Y - my)).T
    return A, mx, my


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "data", "probe",
                                                             "probe_fixture.h5")
    for attempt in range(50):
        rng = np.random.default_rng(1000 + attempt)
        labels, groups, hs = make_inputs(rng)
        saes = [make_sae(rng), make_sae(rng), make_sae(rng)]  # raw L1 (= resae L1), raw L2, resae L2
        A, mx, my = fit_map(hs[0], hs[1])
        r2 = (hs[1].astype(np.float64) - (hs[0].astype(np.float64) - mx) @ A.T - my)
        targets = {"raw": [hs[0].astype(np.float64), hs[1].astype(np.float64)],
                   "resae": [hs[0].astype(np.float64), r2]}
        which = {"raw": [0, 1], "resae": [0, 2]}
        scales = [1.3, 0.8, 1.7]
        pooled, margin = {}, np.inf
        for v in ("raw", "resae"):
            pooled[v] = []
            for m in range(2):
                sae = {k: a.astype(np.float64) for k, a in saes[which[v][m]].items()}
                s = scales[which[v][m]]
                z, mg = topk_codes(s * targets[v][m].reshape(-1, D), sae["W_enc"], sae["b_enc"], sae["b_dec"], K_SAE)
                margin = min(margin, mg)
                pooled[v].append(pool(z.reshape(len(labels), T, N_LAT) / s))
        if margin > 1e-5:
            break
    else:
        raise SystemExit("no fixture without near-ties in TopK")
    test_side, n_elig, sets = build_plan(labels, groups, OPTS)
    hpool = [pool(h.astype(np.float64)) for h in hs]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with h5py.File(out, "w") as f:
        f.attrs["definition"] = __doc__.splitlines()[0]
        f.attrs["margin"] = margin
        for k, v in OPTS.items():
            f.attrs[k] = v
        f.attrs["skip"] = SKIP
        f.attrs["k_sae"] = K_SAE
        f.attrs["top_k"] = np.array(TOP_K, np.int64)
        f.attrs["scales"] = np.array(scales)
        f["tokens"] = rng.integers(0, VOCAB, (len(labels), T)).astype(np.int32)
        f["labels"] = labels
        f["groups"] = groups
        f["label_names"] = np.array([f"class{i}" for i in range(N_LABELS)], dtype="S")
        f["h"] = np.stack(hs)                    # (2, n, T, D) float32
        for i, s in enumerate(saes):
            for k, a in s.items():
                f[f"sae{i}/{k}"] = a
        f["map/A"], f["map/mu_x"], f["map/mu_y"] = A, mx, my
        f["expect/test_side"] = test_side
        f["expect/n_eligible"] = n_elig
        f["expect/hpool"] = np.stack(hpool)
        for v in ("raw", "resae"):
            f[f"expect/pooled_{v}"] = np.stack(pooled[v])  # (2, n, N_LAT)
        for s, S in enumerate(sets):
            g = f.create_group(f"expect/set{s}")
            g["labels"] = np.array(S["labels"], np.int32)
            g["windows"] = S["windows"]
            acc, sel_rows = [], []
            for c, t in enumerate(S["tasks"]):
                g[f"task{c}/train"], g[f"task{c}/y_train"] = t[0]
                g[f"task{c}/test"], g[f"task{c}/y_test"] = t[1]
                tr, ytr = t[0]
                Hm = [x[S["windows"]] for x in hpool]
                for m in range(2):
                    sel = topk_select(Hm[m], tr, ytr, max(TOP_K))
                    for K in TOP_K:
                        acc.append([-1, 1, m, K, c, probe_acc(Hm[m], sel[:K], t)])
                    acc.append([-1, 2, m, D, c, probe_acc(Hm[m], np.arange(D), t)])
                for vi, v in enumerate(("raw", "resae")):
                    Z = [x[S["windows"]] for x in pooled[v]]
                    for m in (0, 1, -1):
                        X = Z[m] if m >= 0 else np.concatenate(Z, axis=1)
                        sel = topk_select(X, tr, ytr, max(TOP_K))
                        sel_rows.append([vi, m, c] + list(sel))
                        for K in TOP_K:
                            acc.append([vi, 0, m, K, c, probe_acc(X, sel[:K], t)])
                    for m in range(2):
                        for K in TOP_K:
                            sel = random_latents(N_LAT, K, OPTS["seed"], s * 5 + c, m * 65536 + K)
                            acc.append([vi, 3, m, K, c, probe_acc(Z[m], sel, t)])
            # columns: variant (-1 model), kind, layer index (-1 union), K, class, accuracy
            g["acc"] = np.array(acc)
            g["sel"] = np.array(sel_rows, np.int64)  # variant, layer index, class, top-5 global indices
    print(f"wrote {out}: {len(labels)} windows, {n_elig} eligible classes, {len(sets)} class sets, "
          f"TopK margin {margin:.2e}")


if __name__ == "__main__":
    main()
