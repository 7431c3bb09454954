#!/usr/bin/env python3
"""Tests of analysis/figures.py on small synthetic results files.

usage: /usr/bin/python3 tests/analysis/test_figures.py [SRC_DIR]   (ctest analysis_figures)

Writes results.h5 files laid out as docs/store.md says (results layout 2: `columns` and `enum:C` on
every table, /eval `set_names`) with 2 seeds, 3 sets ({0,1,2}, {0,2,4}, {0,2,4,6}), raw and resae,
k in {4, 8}, sparse probing and TPP, plus rows that the figures must leave out (per-class probing
and TPP rows, per-layer TPP parts, clean and ablation CE rows) holding values that would show if
they were used. Every value is a function of its key, so the expected means and standard errors
are computed here by hand from that function, not from the file. Checks:
  - figures.py RUN_DIR writes the 10 expected files (5 figures x PNG, PDF) into RUN_DIR/figures,
    each a valid, non-empty PNG (decoded: a non-blank image) or PDF, and prints each path once;
  - the plotted means and standard errors (fig1_data .. fig5_data) equal the hand numpy values, and
    the drawn figures carry error bars of exactly those sizes (matplotlib's errorbar segments);
  - the same numbers come out when the columns are stored in another order and the enums number
    their names differently (columns and enum values are found by name);
  - a one-seed file draws no error bar at all, and one without /tpp writes its figures with a note;
  - a results.h5 without /eval, or no results.h5, exits 1 with a message naming the file and what is
    missing; a bad --format exits 2.
Prints "figures: N checks ok" when everything passes, exit status 1 otherwise."""
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout

import h5py
import numpy as np

SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "analysis"))
import resae_store  # noqa: E402
import figures  # noqa: E402

PY = sys.executable
SCRIPT = os.path.join(SRC, "analysis", "figures.py")
N_CHECKS, FAILED = 0, []


def check(cond, what):
    global N_CHECKS
    N_CHECKS += 1
    if not cond:
        FAILED.append(what)
        print("FAIL:", what)


def close(a, b, tol=1e-12):
    return np.isfinite(a) and np.isfinite(b) and abs(a - b) <= tol * max(1.0, abs(b))


# ------------------------------------------------------------------------------------------------
# synthetic results (docs/store.md)
# ------------------------------------------------------------------------------------------------

SETS = {0: ("gap1", (0, 1, 2)), 1: ("gap2", (0, 2, 4)), 2: ("quad", (0, 2, 4, 6))}
KS = (4, 8)
SEEDS = (0, 1)
VARIANTS = ("raw", "resae")
MODES = ("clean", "single", "tf", "so", "zero", "mean")
PROBE_KINDS = ("sae", "model_topk", "model_all", "random")
TPP_KINDS = ("single", "global", "joint", "global_part", "joint_part", "random", "local", "global_interaction",
             "joint_interaction")
PROBE_SET, PROBE_KS, D = 2, (1, 2, 5), 16
TPP_NS = (10, 20)

COLS = {
    "affine/table": "layer_a,layer_b,gap,lambda_rel,lambda_used,retries,r2,s,n_tokens_calib,n_tokens_eval,"
                    "solve_resid,seconds",
    "sae/table": "variant,layer,pred,k,seed,fvu,auxk,l0,dead_frac,tokens,steps,seconds,tokens_per_s,scale",
    "eval/recon": "set,variant,k,seed,layer,pred,scale,l0,dead_frac,mse,ev_target,ev_orig_onestep,ev_orig_chain,"
                  "n_tokens,dead_frac_train,ev_orig_closed",
    "eval/redundancy": "set,variant,k,seed,layer_a,layer_b,gap,mean_max_cos,mean_max_abs_cos,n_rows",
    "eval/ce": "set,variant,k,seed,mode,layer,ce,dce,kl,recovered_zero,recovered_mean,overinteraction,n_tokens",
    "probing/probing": "set,variant,k,seed,kind,layer,K,class_set,label,accuracy",
    "tpp/tpp": "set,variant,k,seed,kind,layer,N,class_set,label,intended,unintended,tpp",
}
ENUMS = {"variant": VARIANTS, "mode": MODES}
TABLE_ENUMS = {"sae/table": ("variant",), "eval/recon": ("variant",), "eval/redundancy": ("variant",),
               "eval/ce": ("variant", "mode"), "probing/probing": ("variant", "kind"), "tpp/tpp": ("variant", "kind")}
KIND_NAMES = {"probing/probing": PROBE_KINDS, "tpp/tpp": TPP_KINDS}


def val(*key, lo=0.0, hi=1.0):
    """A value in [lo, hi) that depends only on key (the same in every run, for every caller)."""
    u = int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little") / 2.0 ** 64
    return lo + (hi - lo) * u


def v_r2(a, b):
    return val("r2", a, b, lo=0.4, hi=0.99)


def v_ev(col, v, k, seed, prefix):
    return val("recon", col, v, k, seed, prefix, lo=0.5, hi=1.0)


def v_red(v, k, seed, a, pred_a, b, pred_b, col):
    return val("red", v, k, seed, a, pred_a, b, pred_b, col, lo=0.2, hi=0.8)


CE_RANGE = {"dce": (0.0, 0.5), "recovered_zero": (0.9, 1.0), "recovered_mean": (0.7, 1.0),
            "overinteraction": (-0.1, 0.3)}


def v_ce(s, v, k, seed, mode, layer, col):
    """single rows: layer = the spliced layer; tf and so rows: layer = -1."""
    lo, hi = CE_RANGE[col]
    return val("ce", s, v, k, seed, mode, layer, col, lo=lo, hi=hi)


def v_probe(kind, v, k, seed, layer, K):
    return val("probe", kind, v, k, seed, layer, K, lo=0.5, hi=0.9)


def v_tpp(v, k, seed, kind, N, part):
    return val("tpp", v, k, seed, kind, N, part, hi=0.3 if part == "intended" else 0.1)


def pred_in(v, ls, layer):
    m = ls.index(layer)
    return -1 if v == "raw" or m == 0 else ls[m - 1]


def rows(seeds=SEEDS):
    """{table: [row dict]}; enum columns hold names."""
    t = {k: [] for k in COLS}
    for a in range(7):
        for b in range(a + 1, 7):
            t["affine/table"].append(dict(layer_a=a, layer_b=b, gap=b - a, lambda_rel=1e-4, lambda_used=0.1, retries=0,
                                          r2=v_r2(a, b), s=1.0, n_tokens_calib=100,
                                          n_tokens_eval=50, solve_resid=1e-9, seconds=0.1))
    for v in VARIANTS:
        for k in KS:
            for seed in seeds:
                t["sae/table"].append(dict(variant=v, layer=0, pred=-1, k=k, seed=seed, fvu=0.1, auxk=0.0, l0=k,
                                           dead_frac=0.0, tokens=1000, steps=10, seconds=1.0, tokens_per_s=1000.0,
                                           scale=1.0))
    for s, (_, ls) in SETS.items():
        for v in VARIANTS:
            for k in KS:
                for seed in seeds:
                    key = dict(set=s, variant=v, k=k, seed=seed)
                    for m, layer in enumerate(ls):
                        pre = ls[:m + 1]
                        ev = {c: v_ev(c, v, k, seed, pre)
                              for c in ("ev_target", "ev_orig_onestep", "ev_orig_chain", "ev_orig_closed")}
                        t["eval/recon"].append(dict(key, layer=layer, pred=pred_in(v, ls, layer), scale=1.0, l0=k,
                                                    dead_frac=0.0, mse=0.1, n_tokens=50, dead_frac_train=0.0, **ev))
                    for i, a in enumerate(ls):
                        for b in ls[i + 1:]:
                            u = (v, k, seed, a, pred_in(v, ls, a), b, pred_in(v, ls, b))
                            t["eval/redundancy"].append(dict(key, layer_a=a, layer_b=b, gap=b - a,
                                                             mean_max_cos=v_red(*u, "mean_max_cos"),
                                                             mean_max_abs_cos=v_red(*u, "mean_max_abs_cos"),
                                                             n_rows=32))
                    base = dict(key, ce=3.0, kl=0.1, n_tokens=60)
                    # rows the figures must not read: recovered values of 99 would show in any mean
                    t["eval/ce"].append(dict(base, mode="clean", layer=-1, dce=0.0, recovered_zero=99.0,
                                             recovered_mean=99.0, overinteraction=99.0))
                    for abl in ("zero", "mean"):
                        for layer in ls + (-1,):
                            t["eval/ce"].append(dict(base, mode=abl, layer=layer, dce=5.0, recovered_zero=99.0,
                                                     recovered_mean=99.0, overinteraction=99.0))
                    for mode, layer in [("single", x) for x in ls] + [("tf", -1), ("so", -1)]:
                        cv = {c: v_ce(s, v, k, seed, mode, layer, c) for c in CE_RANGE}
                        if mode == "single":
                            cv["overinteraction"] = np.nan
                        t["eval/ce"].append(dict(base, mode=mode, layer=layer, **cv))
    ls = SETS[PROBE_SET][1]
    for v in VARIANTS:
        for k in KS:
            for seed in seeds:
                for kind in ("sae", "random"):
                    for layer in (ls if kind == "random" else ls + (-1,)):
                        for K in PROBE_KS:
                            acc = v_probe(kind, v, k, seed, layer, K)
                            base = dict(set=PROBE_SET, variant=v, k=k, seed=seed, kind=kind, layer=layer, K=K)
                            t["probing/probing"].append(dict(base, class_set=-1, label=-1, accuracy=acc))
                            t["probing/probing"].append(dict(base, class_set=0, label=-1, accuracy=0.0))
                            t["probing/probing"].append(dict(base, class_set=0, label=3, accuracy=0.0))
                for N in TPP_NS:
                    base = dict(set=PROBE_SET, variant=v, k=k, seed=seed, N=N)
                    for kind in ("global", "joint", "random", "global_interaction"):
                        i, un = v_tpp(v, k, seed, kind, N, "intended"), v_tpp(v, k, seed, kind, N, "unintended")
                        t["tpp/tpp"].append(dict(base, kind=kind, layer=-1, class_set=-1, label=-1, intended=i,
                                                 unintended=un, tpp=i - un))
                        t["tpp/tpp"].append(dict(base, kind=kind, layer=-1, class_set=0, label=2, intended=9.0,
                                                 unintended=9.0, tpp=0.0))
                    for layer in ls:
                        t["tpp/tpp"].append(dict(base, kind="global_part", layer=layer, class_set=-1, label=-1,
                                                 intended=9.0, unintended=9.0, tpp=0.0))
    for layer in ls:
        for K in PROBE_KS + (D,):
            kind = "model_all" if K == D else "model_topk"
            t["probing/probing"].append(dict(set=PROBE_SET, variant=-1, k=-1, seed=-1, kind=kind, layer=layer, K=K,
                                             class_set=-1, label=-1, accuracy=val("model", kind, layer, K, lo=0.6)))
    return t


def sattr(obj, name, value):
    """A fixed-length ASCII string attribute, as the C side writes them."""
    obj.attrs[name] = np.bytes_(value.encode())


def write_results(path, t, permute=False, groups=("affine", "sae", "eval", "probing", "tpp")):
    """Write the tables; permute: columns in reverse order and every enum's names in reverse order
    (so every code and every column index differs from the documented layout)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = np.int64(1)
        f.attrs["results_layout"] = np.int64(2)
        sattr(f, "resae_version", "0.1.0")
        sattr(f, "config_hash", "0123456789abcdef")
        f.attrs["n_ranks"] = np.int64(1)
        f["config_yaml"] = np.bytes_(b"run_dir: synthetic\n")
        for g in groups:
            f.create_group(g)
        for name, cols in COLS.items():
            if name.split("/")[0] not in groups:
                continue
            cols = cols.split(",")
            if permute:
                cols = cols[::-1]
            enums = {c: (KIND_NAMES[name] if c == "kind" else ENUMS[c]) for c in TABLE_ENUMS.get(name, ())}
            if permute:
                enums = {c: names[::-1] for c, names in enums.items()}

            def code(c, x):
                return float(enums[c].index(x)) if c in enums and isinstance(x, str) else float(x)
            data = np.array([[code(c, r[c]) for c in cols] for r in t[name]], dtype=np.float64)
            f[name] = data
            sattr(f[name], "columns", ",".join(cols))
            for c, names in enums.items():
                sattr(f[name], "enum:" + c, ",".join(names))
        if "eval" in groups:
            sattr(f["eval"], "set_names", ",".join(SETS[s][0] for s in sorted(SETS)))
            sattr(f["eval"], "ce_modes", ",".join(f"{i}={m}" for i, m in enumerate(MODES)))
        if "probing" in groups:
            sattr(f["probing"], "label_names", "a,b,c,d,e")


# ------------------------------------------------------------------------------------------------
# hand computations
# ------------------------------------------------------------------------------------------------

def hand(per_seed):
    """Mean over seeds of the per-seed means, and its standard error (numpy, ddof 1)."""
    v = np.array([np.mean(x) for x in per_seed])
    return v.mean(), (v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan)


def expected(seeds=SEEDS):
    """{name: (getter of (mean, se, n) from the figure's data, (expected mean, expected se))} for a few
    points of every figure."""
    e = {}
    # fig 2, EV in target space, resae k=4 at gap 2: the chains (0,2), (0,2,4) (sets gap2 and quad) and
    # (0,2,4,6) (quad), each once
    e["fig2 ev_target resae k4 gap2"] = (lambda d: d[("ev_target", "resae", 4)].at(2), hand(
        [[v_ev("ev_target", "resae", 4, s, p) for p in ((0, 2), (0, 2, 4), (0, 2, 4, 6))] for s in seeds]))
    # raw k=8 open-loop chain at gap 1: set gap1's layers 1 and 2
    e["fig2 ev_orig_chain raw k8 gap1"] = (lambda d: d[("ev_orig_chain", "raw", 8)].at(1), hand(
        [[v_ev("ev_orig_chain", "raw", 8, s, p) for p in ((0, 1), (0, 1, 2))] for s in seeds]))
    # redundancy, resae k=4 at gap 2: four distinct SAE pairs (L2 with predecessor 1 in gap1, with 0 elsewhere)
    pairs = ((0, -1, 2, 1), (0, -1, 2, 0), (2, 0, 4, 2), (4, 2, 6, 4))
    red = hand([[v_red("resae", 4, s, *p, "mean_max_cos") for p in pairs] for s in seeds])
    e["fig2 redundancy resae k4 gap2"] = (lambda d: d[("mean_max_cos", "resae", 4)].at(2), red)
    # raw k=8 at gap 4: (0,4) of gap2 and quad are the same raw pair; (2,6) of quad
    e["fig2 redundancy raw k8 gap4"] = (lambda d: d[("mean_max_cos", "raw", 8)].at(4), hand(
        [[v_red("raw", 8, s, *p, "mean_max_cos") for p in ((0, -1, 4, -1), (2, -1, 6, -1))] for s in seeds]))
    # fig 3
    e["fig3 quad recovered_mean resae k8 TF"] = (lambda d: d[(2, "recovered_mean", "resae", 8)].at("TF"), hand(
        [[v_ce(2, "resae", 8, s, "tf", -1, "recovered_mean")] for s in seeds]))
    e["fig3 gap1 overinteraction raw k4 SO"] = (lambda d: d[(0, "overinteraction", "raw", 4)].at("SO"), hand(
        [[v_ce(0, "raw", 4, s, "so", -1, "overinteraction")] for s in seeds]))
    e["fig3 gap2 recovered_zero raw k4 single L4"] = (lambda d: d[(1, "recovered_zero", "raw", 4)].at("L4"), hand(
        [[v_ce(1, "raw", 4, s, "single", 4, "recovered_zero")] for s in seeds]))
    # fig 4
    e["fig4 probing sae resae k4 K2 L2"] = (lambda d: d["probing"][(2, "sae", "resae", 4, 2)].at(2), hand(
        [[v_probe("sae", "resae", 4, s, 2, 2)] for s in seeds]))
    e["fig4 probing sae raw k8 K5 union"] = (lambda d: d["probing"][(2, "sae", "raw", 8, 5)].at(-1), hand(
        [[v_probe("sae", "raw", 8, s, -1, 5)] for s in seeds]))
    e["fig4 probing random resae k8 K1 L6"] = (lambda d: d["probing"][(2, "random", "resae", 8, 1)].at(6), hand(
        [[v_probe("random", "resae", 8, s, 6, 1)] for s in seeds]))
    e["fig4 tpp resae k4 global N10 intended"] = (lambda d: d["tpp"][(2, "resae", 4, "global", "intended")].at(10),
                                                   hand([[v_tpp("resae", 4, s, "global", 10, "intended")]
                                                         for s in seeds]))
    e["fig4 tpp raw k8 joint N20 unintended"] = (lambda d: d["tpp"][(2, "raw", 8, "joint", "unintended")].at(20),
                                                  hand([[v_tpp("raw", 8, s, "joint", 20, "unintended")]
                                                        for s in seeds]))
    # fig 5: dCE of TF at gap 2 comes from set gap2 only (quad has 4 layers, the others 3)
    e["fig5 dce tf raw k8 gap2"] = (lambda d: d[("dce", "tf", "raw", 8)].at(2), hand(
        [[v_ce(1, "raw", 8, s, "tf", -1, "dce")] for s in seeds]))
    e["fig5 dce so resae k4 gap1"] = (lambda d: d[("dce", "so", "resae", 4)].at(1), hand(
        [[v_ce(0, "resae", 4, s, "so", -1, "dce")] for s in seeds]))
    e["fig5 redundancy resae k4 gap2"] = (lambda d: d[("redundancy", "resae", 4)].at(2), red)
    return e


FIG_OF = {"fig2": figures.fig2_data, "fig3": figures.fig3_data, "fig4": figures.fig4_data, "fig5": figures.fig5_data}
DRAW_OF = {"fig2": figures.fig2, "fig3": figures.fig3, "fig4": figures.fig4, "fig5": figures.fig5}


def check_numbers(path, seeds, what, skip=()):
    with resae_store.open_results(path) as r:
        data = {f: fn(r) for f, fn in FIG_OF.items()}
        d1 = figures.fig1_data(r)
    for name, (get, (m, se)) in expected(seeds).items():
        if name.startswith(skip):
            continue
        try:
            y, e, n = get(data[name.split()[0]])
        except (KeyError, ValueError) as ex:
            check(False, f"{what}: {name}: not plotted ({ex!r})")
            continue
        check(close(y, m), f"{what}: {name}: mean {y!r}, by hand {m!r}")
        if len(seeds) > 1:
            check(close(e, se), f"{what}: {name}: standard error {e!r}, by hand {se!r}")
        else:
            check(np.isnan(e), f"{what}: {name}: one seed but standard error {e!r}")
        check(n == len(seeds), f"{what}: {name}: {n} seeds, expected {len(seeds)}")
    # fig 1: the mean R^2 of the gap-3 pairs (0,3) .. (3,6)
    m3 = np.mean([v_r2(a, a + 3) for a in range(4)])
    got = d1["mean"][1e-4].at(3)
    check(close(got[0], m3) and got[2] == 4, f"{what}: fig1 mean R^2 at gap 3 {got}, by hand {m3} over 4 pairs")
    check(len(d1["pairs"][1e-4][1]) == 21, f"{what}: fig1 has {len(d1['pairs'][1e-4][1])} pairs, expected 21")
    return data


def all_axes(fig):
    out = list(fig.axes)
    for sf in getattr(fig, "subfigs", []):
        out += all_axes(sf)
    return out


def error_bars(fig):
    """[(x, y_center, half_length)] of every error bar drawn in the figure (lines and bars)."""
    from matplotlib.container import BarContainer, ErrorbarContainer
    out = []
    for ax in all_axes(fig):
        for c in ax.containers:
            eb = c if isinstance(c, ErrorbarContainer) else (c.errorbar if isinstance(c, BarContainer) else None)
            if eb is None or not eb.has_yerr:
                continue
            for seg in eb.lines[2][0].get_segments():
                (x0, y0), (_, y1) = seg[0], seg[-1]
                out.append((x0, (y0 + y1) / 2, abs(y1 - y0) / 2))
    return out


def check_bars(path, what):
    """The drawn error bars: one of each expected point's size at its mean (2 seeds)."""
    import matplotlib.pyplot as plt
    exp = expected()
    with resae_store.open_results(path) as r:
        for f, draw in DRAW_OF.items():
            with redirect_stdout(io.StringIO()):
                fig, _ = draw(r)
            bars = error_bars(fig)
            check(len(bars) > 0, f"{what}: {f} draws no error bars with 2 seeds")
            for name, (_, (m, se)) in exp.items():
                if name.split()[0] != f:
                    continue
                hit = [b for b in bars if abs(b[1] - m) < 1e-9 and abs(b[2] - se) < 1e-9]
                check(hit, f"{what}: {f}: no error bar of half-length {se:.6g} around {m:.6g} ({name})")
            plt.close(fig)


def check_no_bars(path, what):
    import matplotlib.pyplot as plt
    with resae_store.open_results(path) as r:
        for f, draw in DRAW_OF.items():
            with redirect_stdout(io.StringIO()):
                fig, _ = draw(r)
            if fig is None:
                continue
            bars = error_bars(fig)
            check(not bars, f"{what}: {f} draws {len(bars)} error bars with one seed")
            plt.close(fig)


def check_files(out_dir, names, formats, stdout, what):
    want = sorted(os.path.join(out_dir, f"{n}.{fmt}") for n in names for fmt in formats)
    got = sorted(os.path.join(out_dir, p) for p in os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    check(got == want, f"{what}: files {got}, expected {want}")
    printed = sorted(line for line in stdout.splitlines() if not line.startswith("note:"))
    check(printed == want, f"{what}: printed {printed}, expected one line per file {want}")
    import matplotlib.image as mpimg
    for p in want:
        if not os.path.exists(p):
            continue
        with open(p, "rb") as f:
            blob = f.read()
        if p.endswith(".png"):
            ok = blob.startswith(b"\x89PNG\r\n\x1a\n") and len(blob) > 20000
            check(ok, f"{what}: {p} is not a non-empty PNG ({len(blob)} bytes)")
            if ok:
                img = mpimg.imread(p)
                check(img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300 and float(img.std()) > 0.01,
                      f"{what}: {p} decodes to {img.shape}, std {float(img.std()):.4f}: blank or tiny")
        else:
            check(blob.startswith(b"%PDF-") and blob.rstrip().endswith(b"%%EOF") and len(blob) > 10000,
                  f"{what}: {p} is not a complete PDF ({len(blob)} bytes)")


def run(*args):
    """figures.py ARGS as a program: (exit status, stdout, stderr)."""
    p = subprocess.run([PY, SCRIPT, *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def run_here(*args):
    """The same through figures.main in this process (no interpreter start-up and imports)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = figures.main(["figures.py", *args])
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def main():
    d = tempfile.mkdtemp(prefix="resae_figures_test.")
    try:
        t2 = rows()
        two = os.path.join(d, "two", "results.h5")
        write_results(two, t2)
        # the whole script, default output directory and formats
        rc, out, err = run(os.path.dirname(two))
        check(rc == 0, f"figures.py on 2 seeds: exit {rc}: {err}")
        check_files(os.path.join(d, "two", "figures"), figures.NAMES, ("png", "pdf"), out, "2 seeds")

        data = check_numbers(two, SEEDS, "2 seeds")
        check_bars(two, "2 seeds")
        # columns stored in another order, enums numbered otherwise: the same numbers
        perm = os.path.join(d, "perm", "results.h5")
        write_results(perm, t2, permute=True)
        with resae_store.open_results(perm) as r:
            check(r.table("eval/ce").columns[0] == "n_tokens" and r.table("eval/ce").code("mode", "clean") == 5,
                  "the permuted file is not permuted")
            pdata = {f: fn(r) for f, fn in FIG_OF.items()}
        for f in FIG_OF:
            a, b = data[f], pdata[f]
            if f == "fig4":
                a, b = {**a["probing"], **{("tpp",) + k: v for k, v in a["tpp"].items()}}, \
                    {**b["probing"], **{("tpp",) + k: v for k, v in b["tpp"].items()}}
            same = set(a) == set(b) and all(
                not isinstance(a[k], figures.Series) or (a[k].x == b[k].x and np.allclose(a[k].y, b[k].y, equal_nan=True)
                                                         and np.allclose(a[k].se, b[k].se, equal_nan=True)) for k in a)
            check(same, f"{f}: other numbers when the columns and enum values are stored in another order")

        # one seed, no /tpp: no error bars; fig 4 keeps its probing part and says TPP is absent
        one = os.path.join(d, "one", "results.h5")
        write_results(one, rows(seeds=(0,)), groups=("affine", "sae", "eval", "probing"))
        check_numbers(one, (0,), "1 seed", skip=("fig4 tpp",))
        check_no_bars(one, "1 seed")
        out_dir = os.path.join(d, "one_png")
        rc, out, err = run_here(one, "--out", out_dir, "--format", "png")
        check(rc == 0, f"figures.py on 1 seed: exit {rc}: {err}")
        check_files(out_dir, figures.NAMES, ("png",), out, "1 seed, --format png")
        check("no /tpp/tpp" in out and one in out, f"no note naming the file and the missing /tpp: {out}")
        check("fig. 5: set quad left out of the dCE trend (4 layers, not 3)" in out, f"no note on fig. 5's sets: {out}")
        # neither /probing nor /tpp: fig. 4 is not drawn, with notes
        bare = os.path.join(d, "bare", "results.h5")
        write_results(bare, rows(seeds=(0,)), groups=("affine", "sae", "eval"))
        buf = io.StringIO()
        with resae_store.open_results(bare) as r, redirect_stdout(buf):
            fig, _ = figures.fig4(r)
        check(fig is None and "no /probing/probing" in buf.getvalue() and "fig. 4 not drawn" in buf.getvalue(),
              f"fig. 4 without /probing and /tpp: {fig}, {buf.getvalue()}")

        # errors
        noeval = os.path.join(d, "noeval", "results.h5")
        write_results(noeval, rows(seeds=(0,)), groups=("affine", "sae"))
        rc, out, err = run(os.path.dirname(noeval), "--out", os.path.join(d, "noeval_out"))
        check(rc == 1 and noeval in err and "no group /eval" in err, f"no /eval: exit {rc}, stderr {err!r}")
        check(not os.path.exists(os.path.join(d, "noeval_out")), "no /eval: figures were written")
        rc, out, err = run_here(os.path.join(d, "absent"))
        check(rc == 1 and os.path.join(d, "absent", "results.h5") + " not found" in err,
              f"no results.h5: exit {rc}, stderr {err!r}")
        rc, out, err = run_here(two, "--format", "png,bmp")
        check(rc == 2 and "bmp" in err, f"--format bmp: exit {rc}, stderr {err!r}")
        nored = os.path.join(d, "nored", "results.h5")
        os.makedirs(os.path.dirname(nored))
        shutil.copyfile(two, nored)
        with h5py.File(nored, "r+") as f:
            del f["eval/redundancy"]
        rc, out, err = run_here(nored, "--out", os.path.join(d, "nored_out"))
        check(rc == 1 and nored in err and "/eval/redundancy" in err, f"no /eval/redundancy: exit {rc}, {err!r}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if FAILED:
        print(f"figures: {len(FAILED)} of {N_CHECKS} checks FAILED")
        return 1
    print(f"figures: {N_CHECKS} checks ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
