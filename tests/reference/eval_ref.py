"""Independent reference for resae's evaluation stage (METHOD.md §5-6), in float64 numpy.

usage: eval_ref.py RUN_DIR [--tol-ce 1e-5] [--tol-ev 1e-6] [--pick I,J,...]

Reads the finished run (activations.h5, the token file, config.yaml and results.h5 for the SAE and
affine parameters), recomputes every number of /eval/recon, /eval/redundancy and /eval/ce from the
definitions, with plain full forward passes (no cached streams) of tests/reference/neox_np.py or
gemma2_np.py (by config.json's model_type) in float64, and compares. Exits 1 on any mismatch beyond the tolerances (CE-derived columns: --tol-ce,
absolute, propagated through the ratios of recovered CE and the sum of overinteraction; EV, MSE and redundancy: --tol-ev, absolute; L0 and dead fractions: 1e-9). --pick checks only those evaluations (indices in the order
of (set, variant, k, seed)), to keep tests at several rank counts short.
"""
import json
import os
import sys

import h5py
import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gemma2_np  # noqa: E402
import neox_np  # noqa: E402


def load_model(path):
    """The float64 reference model for the checkpoint's architecture (config.json's model_type)."""
    with open(os.path.join(path, "config.json")) as f:
        kind = json.load(f).get("model_type")
    return gemma2_np.Gemma2(path) if kind == "gemma2" else neox_np.NeoX(path)


def topk_sae(x, g, k):
    """x (n, d) float64 -> x_hat, number of active latents per row, fired latent ids."""
    W_enc, b_enc, W_dec, b_dec = (g[n][:].astype(np.float64) for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    pre = np.maximum((x - b_dec) @ W_enc.T + b_enc, 0)
    # k largest, ties to the smaller id (stable sort of -pre)
    order = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    z = np.zeros_like(pre)
    rows = np.arange(len(x))[:, None]
    z[rows, order] = pre[rows, order]
    active = (z > 0)
    return z @ W_dec + b_dec, active.sum(1), active.any(0)


class EvalSet:
    def __init__(self, res, layers, variant, k, seed):
        self.layers, self.variant, self.k = layers, variant, k
        self.sae, self.scale, self.maps = [], [], []
        for m, l in enumerate(layers):
            if variant == 1 and m > 0:
                name = f"resae_L{l}_P{layers[m - 1]}_k{k}_s{seed}"
                g = res["affine"][f"L{layers[m - 1]}_L{l}"]
                self.maps.append((g["A"][:], g["c"][:]))
            else:
                name = f"raw_L{l}_k{k}_s{seed}"
                self.maps.append(None)
            g = res["sae"][name]
            self.sae.append(g)
            self.scale.append(float(g.attrs["scale"]))

    def target(self, m, h, x_prev):
        if self.variant == 1 and m > 0:
            A, c = self.maps[m]
            return h - x_prev @ A.T - c
        return h

    def rhat(self, m, u):
        s = self.scale[m]
        xh, l0, fired = topk_sae(s * u, self.sae[m], self.k)
        return xh / s, l0, fired


def ref_recon(es, store, skip):
    hs = [store["eval"][f"L{l}"][:].astype(np.float64) for l in es.layers]
    mus = [store["eval"][f"L{l}_mean"][:] for l in es.layers]
    out, chain, closed = [], None, None
    for m in range(len(es.layers)):
        h = hs[m]
        u = es.target(m, h, hs[m - 1] if m else None)
        rh, l0, fired = es.rhat(m, u)
        if es.variant == 1 and m > 0:  # closed loop: the SAE sees the residual of the previous reconstruction
            A, c = es.maps[m]
            uc = h - closed @ A.T - c
            closed = closed @ A.T + c + es.rhat(m, uc)[0]
        else:
            closed = rh
        n, d = u.shape
        sse = ((u - rh) ** 2).sum()
        ev_t = 1 - sse / ((u - u.mean(0)) ** 2).sum()
        sst_o = ((h - mus[m]) ** 2).sum()
        if es.variant == 1 and m > 0:
            A, c = es.maps[m]
            x1 = hs[m - 1] @ A.T + c + rh
            chain = chain @ A.T + c + rh
        else:
            x1 = rh
            chain = rh
        ev_1 = 1 - ((h - x1) ** 2).sum() / sst_o
        ev_c = 1 - ((h - chain) ** 2).sum() / sst_o
        ev_cl = 1 - ((h - closed) ** 2).sum() / sst_o
        out.append(dict(layer=es.layers[m], dead_frac_train=float(es.sae[m].attrs["dead_frac"]), l0=l0.mean(), dead_frac=1 - fired.mean(), mse=sse / (n * d),
                        ev_target=ev_t, ev_orig_onestep=ev_1, ev_orig_chain=ev_c, ev_orig_closed=ev_cl, n_tokens=n))
    return out


def ref_redundancy(es):
    out = []
    for b in range(1, len(es.layers)):
        for a in range(b):
            Wb = es.sae[b]["W_dec"][:].astype(np.float64)
            Wa = es.sae[a]["W_dec"][:].astype(np.float64)
            Wb /= np.linalg.norm(Wb, axis=1, keepdims=True)
            Wa /= np.linalg.norm(Wa, axis=1, keepdims=True)
            C = Wb @ Wa.T
            out.append(dict(layer_a=es.layers[a], layer_b=es.layers[b], mean_max_cos=C.max(1).mean(),
                            mean_max_abs_cos=np.abs(C).max(1).mean()))
    return out


def add_ablations(res, model, tok, L, mus, p0, joint_pass):
    """Zero and mean ablation passes at each layer of L, and jointly at every layer (key -1): run as
    its own pass when joint_pass, else taken to equal the last layer's (it overwrites the stream)."""
    for kind in ("zero", "mean"):
        def abl(h, m):
            h = h.copy()
            h[:, p0:] = 0 if kind == "zero" else np.asarray(mus[m], dtype=np.float64)
            return h
        for m in range(len(L)):
            res[(kind, m)] = model(tok, hook=lambda l, h, m=m: abl(h, m) if l == L[m] else None)[0]
        res[(kind, -1)] = (model(tok, hook=lambda l, h: abl(h, L.index(l)) if l in L else None)[0] if joint_pass
                           else res[(kind, len(L) - 1)])


def scores(res, logits_clean, tok, p0):
    """{pass: (CE, KL(clean || pass))} over the predictions from positions p0 .. T-2."""
    lp_c = neox_np.log_softmax(logits_clean[:, p0:-1])
    tgt = tok[:, p0 + 1:]
    out = {}
    for key, lg in res.items():
        lp = neox_np.log_softmax(lg[:, p0:-1])
        out[key] = (-float(np.take_along_axis(lp, tgt[..., None], -1).mean()),
                    float((np.exp(lp_c) * (lp_c - lp)).sum(-1).mean()))
    return out


def ref_ce(es, model, tokens, mus, p0):
    """CE and KL of every pass over all eval sequences, by full forward passes with hooks."""
    tok = tokens.astype(np.int64)
    L = es.layers
    M = len(L)

    def t64(a):
        return np.asarray(a, dtype=np.float64)

    def splice(m, h, x_prev):
        """h (B, T, d) tensor -> h + eps, position 0 untouched when p0."""
        B, T, d = h.shape
        hn = h.reshape(-1, d)
        xp = None if x_prev is None else x_prev.reshape(-1, d)
        u = es.target(m, hn, xp)
        rh, _, _ = es.rhat(m, u)
        eps = (rh - u).reshape(B, T, d)
        if p0:
            eps[:, 0] = 0
        return h + t64(eps)

    logits_clean, clean = model(tok, hook=None)
    res = {"clean": logits_clean}
    # single-layer and teacher-forced: errors from clean inputs
    eps = {}
    for m in range(M):
        eps[m] = splice(m, clean[L[m]], clean[L[m - 1]] if (es.variant == 1 and m) else None) - clean[L[m]]
    for m in range(M):
        res[("single", m)] = model(tok, hook=lambda l, h, m=m: h + eps[m] if l == L[m] else None)[0]
    res["tf"] = model(tok, hook=lambda l, h: h + eps[L.index(l)] if l in L else None)[0]
    state = {}

    def so_hook(l, h):
        if l not in L:
            return None
        m = L.index(l)
        hn = splice(m, h, state.get("prev") if es.variant == 1 else None)
        state["prev"] = hn
        return hn
    res["so"] = model(tok, hook=so_hook)[0]
    add_ablations(res, model, tok, L, mus, p0, True)
    return scores(res, logits_clean, tok, p0)


def ref_affine_only(layers, maps, model, tokens, mus, p0):
    """The affine-only control (METHOD.md §6): CE and KL of its passes and of the ablation baselines."""
    tok = tokens.astype(np.int64)
    L, M = layers, len(layers)
    logits_clean, clean = model(tok, hook=None)
    pred = {m: clean[L[m - 1]] @ maps[m][0].T + maps[m][1] for m in range(1, M)}

    def keep0(new, h):
        if p0:
            new = new.copy()
            new[:, 0] = h[:, 0]
        return new
    res = {"clean": logits_clean}
    for m in range(1, M):
        res[("single", m)] = model(tok, hook=lambda l, h, m=m: keep0(pred[m], h) if l == L[m] else None)[0]
    # teacher-forced: the clean affine error added to the running stream
    res["tf"] = model(tok, hook=lambda l, h: keep0(h + pred[L.index(l)] - clean[l], h)
                      if l in L[1:] else None)[0]
    state = {}

    def so_hook(l, h):
        if l not in L:
            return None
        m = L.index(l)
        if m == 0:
            state["prev"] = h
            return None
        A, c = maps[m]
        hn = keep0(state["prev"] @ A.T + c, h)
        state["prev"] = hn
        return hn
    res["so"] = model(tok, hook=so_hook)[0]
    add_ablations(res, model, tok, L, mus, p0, False)
    return scores(res, logits_clean, tok, p0)


def check_ce_row(check, what, r, out, clean, m, single_sum, M, tol_ce, n_expect, kind="ce"):
    """One CE row (columns from index 0 = mode) against the reference passes in out."""
    mode = int(r[0])
    if mode == 0:
        want, z, mn, over = out["clean"], None, None, np.nan
    elif mode == 1:
        want, z, mn, over = out[("single", m)], out[("zero", m)], out[("mean", m)], np.nan
    elif mode in (2, 3):
        want = out["tf" if mode == 2 else "so"]
        z, mn, over = out[("zero", -1)], out[("mean", -1)], want[0] - clean - single_sum
    else:
        want, z, mn, over = out[("zero" if mode == 4 else "mean", m)], None, None, np.nan
    check(what + " ce", r[2], want[0], tol_ce, kind)
    check(what + " dce", r[3], want[0] - clean, tol_ce, kind)
    check(what + " kl", r[4], want[1] if mode else 0.0, tol_ce, kind)
    rz = (z[0] - want[0]) / (z[0] - clean) if z else np.nan
    rm = (mn[0] - want[0]) / (mn[0] - clean) if mn else np.nan
    # a ratio of CE differences: each CE is good to tol_ce, so |d r| <= tol_ce (2 + 2|r|) / |abl - clean|
    tz = tol_ce * (2 + 2 * abs(rz)) / abs(z[0] - clean) if z else tol_ce
    tm = tol_ce * (2 + 2 * abs(rm)) / abs(mn[0] - clean) if mn else tol_ce
    check(what + " recovered_zero", r[5], rz, max(tol_ce, tz), kind)
    check(what + " recovered_mean", r[6], rm, max(tol_ce, tm), kind)
    # dCE_joint - sum of the single dCEs: M + 2 CE values
    check(what + " overinteraction", r[7], over, tol_ce * (M + 2), kind)
    check(what + " n_tokens", r[8], n_expect, 0, None)


def main():
    args = sys.argv[1:]
    tol_ce, tol_ev = 1e-5, 1e-6
    if "--tol-ce" in args:
        i = args.index("--tol-ce"); tol_ce = float(args[i + 1]); del args[i:i + 2]
    if "--tol-ev" in args:
        i = args.index("--tol-ev"); tol_ev = float(args[i + 1]); del args[i:i + 2]
    pick = None
    if "--pick" in args:
        i = args.index("--pick"); pick = [int(x) for x in args[i + 1].split(",")]; del args[i:i + 2]
    run = args[0]
    cfg = yaml.safe_load(open(os.path.join(run, "config.yaml")))
    store = h5py.File(os.path.join(run, "activations.h5"), "r")
    res = h5py.File(os.path.join(run, "results.h5"), "r")
    skip = int(store.attrs["skip_pos0"])
    p0 = 1 if cfg["data"]["exclude_first_position"] else 0
    model = load_model(cfg["model"]["path"])
    ids = store["eval/seq_ids"][:]
    tokens = h5py.File(cfg["data"]["tokens"], "r")["tokens"][:][ids]
    rec, red, ce = res["eval/recon"][:], res["eval/redundancy"][:], res["eval/ce"][:]
    keys = sorted({tuple(r[:4]) for r in rec})
    if pick is not None:
        keys = [keys[i] for i in pick]
    bad, worst = [], {"ce": 0.0, "ev": 0.0, "aff": 0.0, "closed": 0.0}
    tol_closed = max(tol_ev, 3e-5)
    tol_aff = min(tol_ce, 1e-6)  # the affine-only control: no SAE, float32 passes against float64

    def check(what, got, want, tol, kind):
        if np.isnan(want) and np.isnan(got):
            return
        err = abs(got - want)
        if kind:
            worst[kind] = max(worst[kind], err)
        if not err <= tol:
            bad.append(f"{what}: resae {got!r}, reference {want!r} (diff {err:.3e} > {tol})")

    for key in keys:
        s, v, k, seed = key
        sel = np.all(rec[:, :4] == key, axis=1)
        layers = [int(x) for x in rec[sel, 4]]
        es = EvalSet(res, layers, int(v), int(k), int(seed))
        name = f"set {int(s)} variant {int(v)} k {int(k)} seed {int(seed)}"
        for r, want in zip(rec[sel], ref_recon(es, store, skip)):
            for col, j in (("mse", 9), ("ev_target", 10), ("ev_orig_onestep", 11), ("ev_orig_chain", 12)):
                check(f"{name} L{want['layer']} {col}", r[j], want[col], tol_ev, "ev")
            # The closed loop runs TopK on inputs that carry the previous layers' float32 reconstruction,
            # so a rounding difference can swap the k-th latent on a few tokens: a step of up to ~1e-5
            # in EV (7.4e-6 measured with OpenBLAS's native kernels on an AMD EPYC).
            check(f"{name} L{want['layer']} ev_orig_closed", r[15], want["ev_orig_closed"], tol_closed, "closed")
            check(f"{name} L{want['layer']} l0", r[7], want["l0"], 1e-9, None)
            check(f"{name} L{want['layer']} dead_frac", r[8], want["dead_frac"], 1e-9, None)
            check(f"{name} L{want['layer']} n_tokens", r[13], want["n_tokens"], 0, None)
            check(f"{name} L{want['layer']} dead_frac_train", r[14], want["dead_frac_train"], 0, None)
        rsel = red[np.all(red[:, :4] == key, axis=1)]
        for r, want in zip(rsel, ref_redundancy(es)):
            check(f"{name} redundancy L{want['layer_a']}-L{want['layer_b']}", r[7], want["mean_max_cos"], tol_ev, "ev")
            check(f"{name} redundancy |cos| L{want['layer_a']}-L{want['layer_b']}", r[8], want["mean_max_abs_cos"],
                  tol_ev, "ev")
        if len(rsel) != len(layers) * (len(layers) - 1) // 2:
            bad.append(f"{name}: {len(rsel)} redundancy rows")
        mus = [store["eval"][f"L{l}_mean"][:] for l in layers]
        out = ref_ce(es, model, tokens, mus, p0)
        clean = out["clean"][0]
        csel = ce[np.all(ce[:, :4] == key, axis=1)]
        M = len(layers)
        single_sum = sum(out[("single", m)][0] - clean for m in range(M))
        n_expect = tokens.shape[0] * (tokens.shape[1] - 1 - p0)
        for r in csel:
            layer = int(r[5])
            m = layers.index(layer) if layer >= 0 else -1
            check_ce_row(check, f"{name} mode {int(r[4])} layer {layer}", r[4:], out, clean, m, single_sum, M, tol_ce,
                         n_expect)
        if len(csel) != 1 + 3 * M + 2 + 2:
            bad.append(f"{name}: {len(csel)} CE rows, expected {1 + 3 * M + 4}")
    # the affine-only control: one table per distinct set of >= 2 layers
    aff = res["eval/affine_only"][:] if "affine_only" in res["eval"] else np.zeros((0, 10))
    n_aff_sets = 0
    for sset in sorted({int(x) for x in aff[:, 0]}):
        rows = aff[aff[:, 0] == sset]
        layers = sorted({int(x) for x in rec[rec[:, 0] == sset, 4]})
        M = len(layers)
        maps = [None] + [(res["affine"][f"L{layers[m - 1]}_L{layers[m]}"]["A"][:].astype(np.float64),
                          res["affine"][f"L{layers[m - 1]}_L{layers[m]}"]["c"][:].astype(np.float64))
                         for m in range(1, M)]
        mus = [store["eval"][f"L{l}_mean"][:] for l in layers]
        out = ref_affine_only(layers, maps, model, tokens, mus, p0)
        clean = out["clean"][0]
        single_sum = sum(out[("single", m)][0] - clean for m in range(1, M))
        n_expect = tokens.shape[0] * (tokens.shape[1] - 1 - p0)
        modes = cfg["eval"].get("ce_modes", ["single", "tf", "so"])
        want_rows = 1 + ("single" in modes) * (M - 1) + ("tf" in modes) + ("so" in modes)
        if len(rows) != want_rows:
            bad.append(f"affine-only set {sset}: {len(rows)} rows, expected {want_rows}")
        for r in rows:
            layer = int(r[2])
            m = layers.index(layer) if layer >= 0 else -1
            if int(r[1]) == 1 and m < 1:
                bad.append(f"affine-only set {sset}: a single-layer row at the first layer {layer}")
                continue
            check_ce_row(check, f"affine-only set {sset} mode {int(r[1])} layer {layer}", r[1:], out, clean, m,
                         single_sum, M, tol_aff, n_expect, "aff")
        n_aff_sets += 1
    expect_aff = cfg["eval"].get("affine_only", True) and cfg["eval"].get("ce", True)
    if expect_aff and pick is None and any(len({int(x) for x in rec[rec[:, 0] == s_, 4]}) >= 2
                                           for s_ in {int(x) for x in rec[:, 0]}) and not n_aff_sets:
        bad.append("no affine-only control rows in results.h5")
    print(f"eval reference: {len(keys)} evaluations, {n_aff_sets} affine-only controls; max abs diff CE {worst['ce']:.2e} (tol {tol_ce}), "
          f"EV/MSE/redundancy {worst['ev']:.2e} (tol {tol_ev}), affine-only CE {worst['aff']:.2e} (tol {tol_aff}), "
          f"closed-loop EV {worst['closed']:.2e} (tol {tol_closed})")
    for b in bad[:30]:
        print("MISMATCH", b)
    if bad:
        print(f"FAIL: {len(bad)} mismatches")
        sys.exit(1)
    print("eval reference: ok")


if __name__ == "__main__":
    main()
