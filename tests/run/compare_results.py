#!/usr/bin/env python3
"""Compare the datasets of two resae results files (or check one).

usage: compare_results.py RESULTS_A [RESULTS_B] [--tol T]
With one file: checks the structure and the sanity of the numbers (R^2 in (0, 1], FVU in (0, 1.5),
L0 = k, every grid task present). With two: every dataset under /affine, /sae and /eval must be equal
(bitwise by default, or within --tol relative), except timing columns of the tables (and with --tol
the affine solver's residual, a diagnostic that depends on the process grid); the tables must have
the same columns and enum names. The files are read with analysis/resae_store.py, so either may be
of results layout 1 or 2 (a new run against results saved by an older version).
Exit status 0 when every check passes ("results check: ok"), 1 otherwise."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "analysis"))
import resae_store  # noqa: E402

TIMING_COLS = {"seconds", "tokens_per_s"}
# solver diagnostics that depend on the process grid (compared only bitwise, not with --tol)
GRID_COLS = {"solve_resid"}


def table_mask(t, tol=0.0):
    """The columns of table t that are compared (all but timings, and with a tolerance the grid's)."""
    skip = TIMING_COLS | (GRID_COLS if tol > 0 else set())
    return np.array([c not in skip for c in t.columns])


def check_one(path):
    with resae_store.open_results(path) as r:
        bad = []
        aff = r.table("affine")
        if len(aff) == 0:
            bad.append("no affine fits")
        r2 = aff.col("r2")
        if not np.all((r2 > 0) & (r2 <= 1)):
            bad.append(f"affine R^2 out of (0, 1]: {r2}")
        sae = r.table("sae")
        if len(sae) == 0:
            bad.append("no SAEs")
        fvu, l0, k = sae.col("fvu"), sae.col("l0"), sae.col("k")
        if not np.all((fvu > 0) & (fvu < 1.5)):
            bad.append(f"FVU out of range: {fvu}")
        if not np.all(np.abs(l0 - k) < 1e-6):
            bad.append(f"L0 != k: {l0} vs {k}")
        for name in r.h5["sae"]:
            if name == "table":
                continue
            wd = r.h5["sae"][name]["W_dec"][:]
            norms = np.linalg.norm(wd, axis=1)
            if not np.allclose(norms, 1, atol=1e-4):
                bad.append(f"{name}: decoder rows not unit norm (max dev {abs(norms - 1).max():.2e})")
        bad += check_eval(r)
        print(f"{path}: {len(aff)} affine fits, {len(sae)} SAEs, mean FVU {fvu.mean():.4f}, "
              f"R^2 {r2.min():.4f}..{r2.max():.4f}")
    return bad


def check_eval(r):
    """The evaluation tables: every unique evaluation present, EVs and L0 sane, CE finite, the clean CE
    the same for every evaluation of a set, and at the first layer raw and resae identical."""
    bad = []
    if not r.has("eval"):
        return ["no /eval group"]
    rec, red, ce = r.table("eval/recon"), r.table("eval/redundancy"), r.table("eval/ce")
    if len(rec) == 0 or len(ce) == 0:
        return ["empty evaluation tables"]
    ev = rec.array[:, [rec.index(c) for c in ("ev_target", "ev_orig_onestep", "ev_orig_chain", "ev_orig_closed")]]
    # EV = 1 - MSE / variance lies in (-inf, 1]: a chain of maps can amplify errors past -1
    if not np.all(np.isfinite(ev) & (ev <= 1)):
        bad.append(f"EV not finite or above 1: {ev.min()}..{ev.max()}")
    if not np.all(np.abs(rec.col("l0") - rec.col("k")) < 1e-9):
        bad.append("eval L0 != k")
    cos, abs_cos = red.col("mean_max_cos"), red.col("mean_max_abs_cos")
    if not np.all((cos > -1) & (cos <= 1 + 1e-6) & (abs_cos >= cos - 1e-7)):
        bad.append("redundancy out of range")
    if not np.all(np.isfinite(ce.array[:, [ce.index(c) for c in ("ce", "dce", "kl")]])):
        bad.append("non-finite CE or KL")
    clean = ce.col("mode") == ce.code("mode", "clean")
    cset, cce = ce.col("set")[clean], ce.col("ce")[clean]
    for s in np.unique(cset):
        v = cce[cset == s]
        if not np.all(v == v[0]):
            bad.append(f"set {s}: clean CE differs between evaluations")
    rset, rk, rvar = rec.col("set"), rec.col("k"), rec.col("variant")
    raw_v, res_v = rec.code("variant", "raw"), rec.code("variant", "resae")
    # the columns after the key columns set, variant, k, seed
    metrics = rec.array[:, rec.index("layer"):]
    for s in np.unique(rset):
        for k in np.unique(rk):
            sel = (rset == s) & (rk == k)
            raw, res = metrics[sel & (rvar == raw_v)], metrics[sel & (rvar == res_v)]
            if len(raw) and len(res) and not np.array_equal(raw[0], res[0]):
                bad.append(f"set {s} k {k}: first-layer raw and resae reconstruction differ")
    print(f"eval: {len(rec)} reconstruction rows, {len(red)} redundancy pairs, {len(ce)} CE rows")
    return bad


def compare_tables(name, ta, tb, tol):
    """Columns and enum names of one table in both files; return (mask, problems)."""
    bad = []
    if ta.columns != tb.columns:
        bad.append(f"{name}: columns {','.join(ta.columns)} vs {','.join(tb.columns)}")
    def names(e):
        return ",".join(f"{v}={n}" for v, n in sorted(e.items())) if e else "none"
    for c in sorted(set(ta.enums) | set(tb.enums)):
        if ta.enums.get(c) != tb.enums.get(c):
            bad.append(f"{name}: names of column {c}: {names(ta.enums.get(c))} vs {names(tb.enums.get(c))}")
    return table_mask(ta, tol), bad


def compare(a, b, tol):
    with resae_store.open_results(a) as ra, resae_store.open_results(b) as rb:
        da, db = ra.datasets(), rb.datasets()
        bad = []
        if set(da) != set(db):
            bad.append(f"different datasets: {sorted(set(da) ^ set(db))}")
        for name in sorted(set(da) & set(db)):
            x, y = da[name][()], db[name][()]
            if ra.is_table(name) and rb.is_table(name):
                m, problems = compare_tables(name, ra.table(name), rb.table(name), tol)
                bad += problems
                if len(m) == x.shape[1] and len(m) == y.shape[1]:
                    x, y = x[:, m], y[:, m]
            if x.shape != y.shape:
                bad.append(f"{name}: shape {x.shape} vs {y.shape}")
                continue
            if tol == 0:
                same = np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
            else:
                same = np.allclose(x, y, rtol=tol, atol=tol, equal_nan=True)
            if not same:
                diff = np.abs(x.astype(np.float64) - y.astype(np.float64)).max()
                bad.append(f"{name}: differs (max abs diff {diff:.3e})")
        print(f"compared {len(da)} datasets of {a} and {b}")
    return bad


def main(argv):
    tol = 0.0
    if "--tol" in argv:
        i = argv.index("--tol")
        tol = float(argv[i + 1])
        del argv[i:i + 2]
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) >= 2 else 2
    try:
        bad = check_one(argv[1])
        if len(argv) > 2:
            bad += check_one(argv[2]) + compare(argv[1], argv[2], tol)
    except resae_store.StoreError as e:
        bad = [str(e)]
    for b in bad:
        print("FAIL:", b)
    print("results check:", "FAILED" if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
