#!/usr/bin/env python3
"""The ridge-strength study (METHOD.md §6): R^2, EVs, CE recovery and the affine-only control against
affine.lambda_rel, from one results.h5 per lambda (jobs/lambda_study.sh writes them).

usage: /usr/bin/python3 analysis/lambda_study.py RESULTS.h5 [RESULTS.h5 ...]

Per file (its lambda_rel read from /affine/table): the mean eval R^2 of the set's affine maps; per
resae layer l_m (m >= 2), mean over sets, k and seeds: ev_target, ev_orig_onestep, ev_orig_chain,
ev_orig_closed; per CE pass (tf, so, and single at each layer): dCE and recovered (zero) of the resae
SAEs and of the affine-only control. raw rows do not depend on lambda and are printed once.
Exit status 1 when a file lacks a table (the message names it)."""
import sys
from collections import defaultdict

import numpy as np

import resae_store


def load(path):
    with resae_store.open_results(path) as r:
        return load_open(r, path)


def load_open(r, path):
    aff = r.table("affine")
    lam = sorted(set(aff.col("lambda_rel")))
    if len(lam) != 1:
        raise resae_store.StoreError(f"{path}: /affine/table holds lambda_rel {lam}; one run per lambda expected")
    out = dict(path=path, lam=lam[0], r2={(int(a), int(b)): x for a, b, x in
                                          zip(aff.col("layer_a"), aff.col("layer_b"), aff.col("r2"))})
    rec = r.table("eval/recon")
    c, var = rec.dict(), rec.labels("variant")
    ev = defaultdict(list)
    for i in range(len(rec)):
        ev[(var[i], int(c["layer"][i]))].append([c[k][i] for k in
                                                 ("ev_target", "ev_orig_onestep", "ev_orig_chain", "ev_orig_closed")])
    out["ev"] = {k: np.mean(v, axis=0) for k, v in ev.items()}
    ce = r.table("eval/ce")
    c, var, mode = ce.dict(), ce.labels("variant"), ce.labels("mode")
    acc = defaultdict(list)
    for i in range(len(ce)):
        if mode[i] in ("single", "tf", "so"):
            acc[(var[i], mode[i], int(c["layer"][i]))].append((c["dce"][i], c["recovered_zero"][i]))
    if r.has("eval/affine_only"):
        a = r.table("eval/affine_only")
        d, amode = a.dict(), a.labels("mode")
        for i in range(len(a)):
            if amode[i] != "clean":
                acc[("affine-only", amode[i], int(d["layer"][i]))].append((d["dce"][i], d["recovered_zero"][i]))
    out["ce"] = {k: np.mean(v, axis=0) for k, v in acc.items()}
    return out


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        runs = sorted((load(p) for p in argv), key=lambda x: x["lam"])
    except resae_store.StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("ridge-strength study: lambda = lambda_rel * trace(C_xx) / d")
    print("\nR^2 of the affine maps (eval split)")
    pairs = sorted(runs[0]["r2"])
    print(f"  {'lambda_rel':>10} " + " ".join(f"{f'L{a}->L{b}':>9}" for a, b in pairs))
    for x in runs:
        print(f"  {x['lam']:10.3g} " + " ".join(f"{x['r2'].get(p, np.nan):9.4f}" for p in pairs))
    layers = sorted(l for v, l in runs[0]["ev"] if v == "resae")
    print("\nresae EVs by layer (target / one-step / open-loop chain / closed-loop chain); raw EV for reference")
    for l in layers:
        raw = runs[0]["ev"].get(("raw", l))
        print(f"  L{l}: raw {raw[0]:.4f}" if raw is not None else f"  L{l}:")
        for x in runs:
            e = x["ev"][("resae", l)]
            print(f"    lambda_rel {x['lam']:8.3g}: {e[0]:8.4f} {e[1]:8.4f} {e[2]:8.4f} {e[3]:8.4f}")
    keys = sorted({(m, l) for x in runs for (v, m, l) in x["ce"] if v == "resae"}, key=lambda t: (t[0] != "tf", t))
    print("\nCE: dCE (recovered, zero baseline) of the resae SAEs and of the affine-only control; raw for reference")
    for m, l in keys:
        where = "all" if l < 0 else f"L{l}"
        raw = runs[0]["ce"].get(("raw", m, l))
        print(f"  {m:<6} {where:<4}" + (f" raw {raw[0]:.4f} ({raw[1]:.4f})" if raw is not None else ""))
        for x in runs:
            s = x["ce"].get(("resae", m, l), (np.nan, np.nan))
            a = x["ce"].get(("affine-only", m, l), (np.nan, np.nan))
            print(f"    lambda_rel {x['lam']:8.3g}: resae {s[0]:8.4f} ({s[1]:7.4f})   affine-only {a[0]:8.4f} ({a[1]:7.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
