"""Reference for TPP (EVAL_SPEC.md B2-B6, C3-C6; docs/tpp.md), written from the protocol in numpy,
independent of the C code.

It builds a small fixture of pooled features for one class set (M layers, pooled h and pooled
original-unit latents per window, unit-norm decoder rows, the linear parts of the affine maps
between consecutive layers, one-vs-rest tasks) and computes in float64:
  - the probes: Linear(d, 1) with bias, torch's nn.Linear initialisation drawn from the seeded stream,
    AdamW (torch.optim.AdamW semantics), mean BCE-with-logits + l1 * sum|w| per minibatch of 16 in a
    fresh random order each epoch, best epoch by test accuracy (strictly better only);
  - the effects E_i(m, f) = max(0, mu_pos - mu_neg) * (w_i . J_m d_f), J_m = A_{M-1} ... A_{m+1};
  - the selections: single (top-N at a layer), global (top-N over every layer), per-layer joint
    (floor(N/M), +1 at the deepest N mod M layers), k = min(N, #nonzero), ties to the lower index;
  - TPP when the model between the layers is the affine chain itself, so ablating zh_f d_f at layer
    m moves pooled h at the probe layer by -zh_f J_m d_f: intended, unintended and TPP per class for
    single, global, joint, their parts and interactions, and the local control at each layer.
Writes tests/data/tpp/tpp_fixture.h5; tests/eval/test_tpp.c reads it."""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_ref import stream  # noqa: E402  (the documented splitmix64 / xoshiro256** streams)

M, D, NL, C = 3, 6, 20, 3
N_TRAIN_POS, N_TEST_POS = 20, 10
BUDGETS = [1, 3, 7]
SEED = 42
EPOCHS, BATCH, LR, WD, L1, B1, B2, EPS = 150, 16, 1e-3, 1e-2, 1e-3, 0.9, 0.999, 1e-8
LAYERS = [0, 2, 3]  # model layer numbers of the M layers (only seed the probes)


def unit(rng):
    return (rng.next() >> 11) * 2.0 ** -53


def below(rng, n):
    return rng.below(n)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z)) if z >= 0 else np.exp(z) / (1.0 + np.exp(z))


def accuracy(w, b, X, idx, y):
    ok = 0
    for r, i in enumerate(idx):
        z = b + float(np.dot(w, X[i].astype(np.float64)))
        ok += int((z > 0) == (y[r] == 1))
    return ok / len(idx)


def train_probe(X, task, a, bb):
    tr, ytr, te, yte = task
    d = X.shape[1]
    rng = stream(SEED, a, bb, 31)
    bound = 1.0 / np.sqrt(d)
    w = np.array([(2 * unit(rng) - 1) * bound for _ in range(d)])
    b = (2 * unit(rng) - 1) * bound
    mw, vw, mb, vb = np.zeros(d), np.zeros(d), 0.0, 0.0
    n = len(tr)
    perm = list(range(n))
    best = (-1.0, None, None, 0)
    step = 0
    for ep in range(1, EPOCHS + 1):
        for i in range(n - 1):
            j = i + below(rng, n - i)
            perm[i], perm[j] = perm[j], perm[i]
        for r0 in range(0, n, BATCH):
            rows = perm[r0:r0 + BATCH]
            nb = len(rows)
            gw, gb = np.zeros(d), 0.0
            for r in rows:
                x = X[tr[r]].astype(np.float64)
                g = (sigmoid(b + float(np.dot(w, x))) - ytr[r]) / nb
                gw += g * x
                gb += g
            gw += L1 * np.sign(w)
            step += 1
            bc1, bc2 = 1 - B1 ** step, np.sqrt(1 - B2 ** step)
            w *= 1 - LR * WD
            mw = B1 * mw + (1 - B1) * gw
            vw = B2 * vw + (1 - B2) * gw * gw
            w -= LR / bc1 * mw / (np.sqrt(vw) / bc2 + EPS)
            b *= 1 - LR * WD
            mb = B1 * mb + (1 - B1) * gb
            vb = B2 * vb + (1 - B2) * gb * gb
            b -= LR / bc1 * mb / (np.sqrt(vb) / bc2 + EPS)
        acc = accuracy(w, b, X, te, yte)
        if acc > best[0]:
            best = (acc, w.copy(), b, ep)
    return best


def effects(Z, task, v, W):
    tr, ytr = task[0], task[1]
    pos = np.array([Z[i] for i, y in zip(tr, ytr) if y == 1], np.float64).mean(0)
    neg = np.array([Z[i] for i, y in zip(tr, ytr) if y == 0], np.float64).mean(0)
    dm = np.maximum(pos - neg, 0)
    return dm * (W.astype(np.float64) @ v)


def top(E, N):
    k = min(N, int(np.count_nonzero(E)))
    order = sorted(range(len(E)), key=lambda i: (-E[i], i))
    return order[:k]


def share(N, m):
    return N // M + (1 if m >= M - N % M else 0)


def main(out):
    rng = np.random.default_rng(7)
    n_w = C * (N_TRAIN_POS + N_TEST_POS) * 2
    labels = np.arange(n_w) % C
    test_side = (np.arange(n_w) // C) % 3 == 0
    mu = rng.normal(size=(C, D))
    H = np.zeros((M, n_w, D), np.float32)
    Z = np.zeros((M, n_w, NL), np.float32)
    cls_lat = rng.normal(size=(C, NL))
    for m in range(M):
        H[m] = (2.5 * mu[labels] * (m + 1) / M + rng.normal(size=(n_w, D))).astype(np.float32)
        Z[m] = np.maximum(0, 0.5 * cls_lat[labels] + rng.normal(size=(n_w, NL)) - 0.3).astype(np.float32)
    W = rng.normal(size=(M, NL, D))
    W = (W / np.linalg.norm(W, axis=2, keepdims=True)).astype(np.float32)
    A = (0.4 * rng.normal(size=(M, D, D)) + np.eye(D)).astype(np.float64)  # A[m]: l_{m-1} -> l_m, m >= 1
    A[0] = 0
    # tasks: positives = the class's windows on that side; negatives: the other classes' windows, first n of a shuffle
    tasks = []
    for i in range(C):
        t = []
        for side, n in ((False, N_TRAIN_POS), (True, N_TEST_POS)):
            pos = [w for w in range(n_w) if labels[w] == i and test_side[w] == side][:n]
            others = [w for w in range(n_w) if labels[w] != i and test_side[w] == side]
            neg = list(rng.permutation(others)[:n])
            t += [np.array(pos + neg, np.int32), np.array([1] * len(pos) + [0] * len(neg), np.int8)]
        tasks.append(t)
    # J_m d: chain products of the linear parts
    J = [None] * M
    J[M - 1] = np.eye(D)
    for m in range(M - 2, -1, -1):
        J[m] = J[m + 1] @ A[m + 1]
    probes = [[train_probe(H[m], tasks[i], i, LAYERS[m]) for i in range(C)] for m in range(M)]
    P = probes[M - 1]
    E = np.zeros((C, M, NL))
    for i in range(C):
        for m in range(M):
            E[i, m] = effects(Z[m], tasks[i], J[m].T @ P[i][1], W[m])

    def acc_after(F, probe_layer, transfer):
        """accuracies of every probe at probe_layer after ablating F = {m: [latents]}"""
        out = []
        for j in range(C):
            pj = probes[probe_layer][j]
            te, yte = tasks[j][2], tasks[j][3]
            ok = 0
            for r, w in enumerate(te):
                h = H[probe_layer][w].astype(np.float64)
                for m, lat in F.items():
                    for f in lat:
                        g = (J[m] @ W[m][f].astype(np.float64)) if transfer else W[m][f].astype(np.float64)
                        h = h - float(Z[m][w][f]) * g
                ok += int((pj[2] + float(np.dot(pj[1], h)) > 0) == (yte[r] == 1))
            out.append(ok / len(te))
        return np.array(out)

    def metric(a, ab, i):
        dacc = a - ab
        inten = dacc[i]
        un = np.mean([dacc[j] for j in range(C) if j != i])
        return np.array([inten, un, inten - un])

    clean = np.array([P[j][0] for j in range(C)])
    nb = len(BUDGETS)
    res = {k: np.zeros((nb, C, 3)) for k in ("global", "joint", "global_inter", "joint_inter")}
    res["single"] = np.zeros((nb, C, M, 3))
    res["local"] = np.zeros((nb, C, M, 3))
    sel_g = -np.ones((nb, C, max(BUDGETS)), np.int32)
    sel_j = -np.ones((nb, C, M, max(BUDGETS)), np.int32)
    sel_s = -np.ones((nb, C, M, max(BUDGETS)), np.int32)
    for b, N in enumerate(BUDGETS):
        for i in range(C):
            g = top(E[i].reshape(-1), N)
            sel_g[b, i, :len(g)] = g
            Fg = {}
            for x in g:
                Fg.setdefault(x // NL, []).append(x % NL)
            res["global"][b, i] = metric(clean, acc_after(Fg, M - 1, True), i)
            parts = sum(metric(clean, acc_after({m: l}, M - 1, True), i) for m, l in Fg.items())
            res["global_inter"][b, i] = res["global"][b, i] - parts
            Fj = {}
            for m in range(M):
                s = top(E[i, m], share(N, m))
                sel_j[b, i, m, :len(s)] = s
                if s:
                    Fj[m] = s
                s1 = top(E[i, m], N)
                sel_s[b, i, m, :len(s1)] = s1
                res["single"][b, i, m] = metric(clean, acc_after({m: s1}, M - 1, True), i) if s1 else 0
                El = effects(Z[m], tasks[i], probes[m][i][1], W[m])
                sl = top(El, N)
                a_loc = np.array([probes[m][j][0] for j in range(C)])
                res["local"][b, i, m] = metric(a_loc, acc_after({m: sl}, m, False), i) if sl else 0
            res["joint"][b, i] = metric(clean, acc_after(Fj, M - 1, True), i)
            parts = sum(metric(clean, acc_after({m: l}, M - 1, True), i) for m, l in Fj.items())
            res["joint_inter"][b, i] = res["joint"][b, i] - parts
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with h5py.File(out, "w") as f:
        f["H"], f["Z"], f["W"], f["A"] = H, Z, W, A
        f["layers"] = np.array(LAYERS, np.int32)
        f["budgets"] = np.array(BUDGETS, np.int32)
        f.attrs["epochs"] = EPOCHS
        for i in range(C):
            for k, nm in enumerate(("train", "y_train", "test", "y_test")):
                f[f"task{i}/{nm}"] = tasks[i][k]
        f["probe_w"] = np.array([[probes[m][i][1] for i in range(C)] for m in range(M)])
        f["probe_b"] = np.array([[probes[m][i][2] for i in range(C)] for m in range(M)])
        f["probe_acc"] = np.array([[probes[m][i][0] for i in range(C)] for m in range(M)])
        f["probe_epoch"] = np.array([[probes[m][i][3] for i in range(C)] for m in range(M)], np.int32)
        f["E"] = E
        f["sel_global"], f["sel_joint"], f["sel_single"] = sel_g, sel_j, sel_s
        for k, v in res.items():
            f[f"tpp_{k}"] = v
    print(f"wrote {out}: probe accuracies at P {clean}, TPP global N={BUDGETS[-1]} "
          f"{res['global'][-1, :, 2].mean():.4f}, joint {res['joint'][-1, :, 2].mean():.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../data/tpp/tpp_fixture.h5"))
