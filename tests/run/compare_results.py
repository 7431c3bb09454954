"""Compare the datasets of two resae results files (or check one).

usage: compare_results.py RESULTS_A [RESULTS_B] [--tol T]
With one file: checks the structure and the sanity of the numbers (R^2 in (0, 1], FVU in (0, 1.5),
L0 = k, every grid task present). With two: every dataset under /affine and /sae must be equal
(bitwise by default, or within --tol relative), except timing columns of the tables (and with --tol
the affine solver's residual, a diagnostic that depends on the process grid)."""
import sys

import h5py
import numpy as np

TIMING_COLS = {"seconds", "tokens_per_s"}
# solver diagnostics that depend on the process grid (compared only bitwise, not with --tol)
GRID_COLS = {"solve_resid"}


def datasets(f):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and (name.startswith("affine") or name.startswith("sae")
                                                or name.startswith("eval")):
            out[name] = obj
    f.visititems(visit)
    return out


def table_mask(f, group, tol=0.0):
    cols = f[group].attrs["table_columns"].decode().split(",")
    skip = TIMING_COLS | (GRID_COLS if tol > 0 else set())
    return np.array([c.split("(")[0] not in skip for c in cols])


def check_one(path):
    f = h5py.File(path, "r")
    bad = []
    t = f["affine/table"][:]
    if len(t) == 0:
        bad.append("no affine fits")
    r2 = t[:, 6]
    if not np.all((r2 > 0) & (r2 <= 1)):
        bad.append(f"affine R^2 out of (0, 1]: {r2}")
    s = f["sae/table"][:]
    if len(s) == 0:
        bad.append("no SAEs")
    fvu, l0, k = s[:, 5], s[:, 7], s[:, 3]
    if not np.all((fvu > 0) & (fvu < 1.5)):
        bad.append(f"FVU out of range: {fvu}")
    if not np.all(np.abs(l0 - k) < 1e-6):
        bad.append(f"L0 != k: {l0} vs {k}")
    for name in f["sae"]:
        if name == "table":
            continue
        g = f["sae"][name]
        wd = g["W_dec"][:]
        norms = np.linalg.norm(wd, axis=1)
        if not np.allclose(norms, 1, atol=1e-4):
            bad.append(f"{name}: decoder rows not unit norm (max dev {abs(norms - 1).max():.2e})")
    bad += check_eval(f)
    print(f"{path}: {len(t)} affine fits, {len(s)} SAEs, mean FVU {fvu.mean():.4f}, R^2 {r2.min():.4f}..{r2.max():.4f}")
    return bad


def check_eval(f):
    """The evaluation tables: every unique evaluation present, EVs and L0 sane, CE finite, the clean CE
    the same for every evaluation of a set, and at the first layer raw and resae identical."""
    bad = []
    if "eval" not in f:
        return ["no /eval group"]
    rec, red, ce = f["eval/recon"][:], f["eval/redundancy"][:], f["eval/ce"][:]
    if len(rec) == 0 or len(ce) == 0:
        return ["empty evaluation tables"]
    ev = rec[:, 10:13]
    # EV = 1 - MSE / variance lies in (-inf, 1]: a chain of maps can amplify errors past -1
    if not np.all(np.isfinite(ev) & (ev <= 1)):
        bad.append(f"EV not finite or above 1: {ev.min()}..{ev.max()}")
    if not np.all(np.abs(rec[:, 7] - rec[:, 2]) < 1e-9):
        bad.append("eval L0 != k")
    if not np.all((red[:, 7] > -1) & (red[:, 7] <= 1 + 1e-6) & (red[:, 8] >= red[:, 7] - 1e-7)):
        bad.append("redundancy out of range")
    if not np.all(np.isfinite(ce[:, 6:9])):
        bad.append("non-finite CE or KL")
    clean = ce[ce[:, 4] == 0]
    for s in np.unique(clean[:, 0]):
        v = clean[clean[:, 0] == s, 6]
        if not np.all(v == v[0]):
            bad.append(f"set {s}: clean CE differs between evaluations")
    for s in np.unique(rec[:, 0]):
        for k in np.unique(rec[:, 2]):
            sel = (rec[:, 0] == s) & (rec[:, 2] == k)
            raw, res = rec[sel & (rec[:, 1] == 0)], rec[sel & (rec[:, 1] == 1)]
            if len(raw) and len(res) and not np.array_equal(raw[0, 4:], res[0, 4:]):
                bad.append(f"set {s} k {k}: first-layer raw and resae reconstruction differ")
    print(f"eval: {len(rec)} reconstruction rows, {len(red)} redundancy pairs, {len(ce)} CE rows")
    return bad


def compare(a, b, tol):
    fa, fb = h5py.File(a, "r"), h5py.File(b, "r")
    da, db = datasets(fa), datasets(fb)
    bad = []
    if set(da) != set(db):
        bad.append(f"different datasets: {sorted(set(da) ^ set(db))}")
    for name in sorted(set(da) & set(db)):
        x, y = da[name][:], db[name][:]
        if name.endswith("table"):
            m = table_mask(fa, name.split("/")[0], tol)
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
    bad = check_one(argv[1])
    if len(argv) > 2:
        bad += check_one(argv[2]) + compare(argv[1], argv[2], tol)
    for b in bad:
        print("FAIL:", b)
    print("results check:", "FAILED" if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
