#!/usr/bin/env python3
"""Tables and figures from a resae run directory (reads RUN_DIR/results.h5 with h5py).

usage: /usr/bin/python3 analysis/report.py RUN_DIR [--no-figures]

Prints:
  - the cross-layer regression study: R^2 (eval split) of every fitted affine map, and its mean by
    layer gap (the paper's Figure 1);
  - SAE training metrics: final FVU (mean over the last steps) by variant x k x layer;
  - evaluation (when /eval exists): EV by variant x k x layer (target space and original-space chain,
    mean over sets and seeds), decoder redundancy by variant x k x gap, dCE by variant x k x mode.
Writes RUN_DIR/figures/regression_r2_by_gap.png, RUN_DIR/figures/fvu_by_layer.png and (with
evaluations) RUN_DIR/figures/dce_by_mode.png (matplotlib, Agg backend). Column meanings:
docs/store.md."""
import os
import sys
from collections import defaultdict

import h5py
import numpy as np


def table(f, group):
    cols = [c.split("(")[0] for c in f[group].attrs["table_columns"].decode().split(",")]
    data = f[group]["table"][:]
    return {c: data[:, i] for i, c in enumerate(cols)}


def eval_table(f, name):
    d = f["eval"][name]
    cols = [c.split("(")[0] for c in d.attrs["columns"].decode().split(",")]
    data = d[:]
    return {c: data[:, i] for i, c in enumerate(cols)}


def eval_tables(f):
    """Print the evaluation summaries; return {(variant, k, mode): mean dCE} of the joint modes."""
    if "eval" not in f:
        print("\nevaluation: not run yet")
        return {}
    var = {0: "raw", 1: "resae"}
    rec = eval_table(f, "recon")
    print("\nEV on the eval split by variant x k x layer (mean over sets and seeds): target / original chain")
    acc = defaultdict(list)
    for i in range(len(rec["layer"])):
        acc[(int(rec["variant"][i]), int(rec["k"][i]), int(rec["layer"][i]))].append(
            (rec["ev_target"][i], rec["ev_orig_chain"][i]))
    for key in sorted(acc):
        v = np.mean(acc[key], axis=0)
        print(f"  {var[key[0]]:<6} k={key[1]:<4} L{key[2]:<3} {v[0]:8.4f} {v[1]:8.4f}")
    red = eval_table(f, "redundancy")
    print("\ndecoder redundancy by variant x k x gap (mean over distinct pairs): max cos, max |cos|")
    seen, acc = set(), defaultdict(list)
    for i in range(len(red["gap"])):
        u = (red["variant"][i], red["k"][i], red["seed"][i], red["layer_a"][i], red["layer_b"][i])
        if u in seen:
            continue
        seen.add(u)
        acc[(int(u[0]), int(u[1]), int(red["gap"][i]))].append((red["mean_max_cos"][i], red["mean_max_abs_cos"][i]))
    for key in sorted(acc):
        v = np.mean(acc[key], axis=0)
        print(f"  {var[key[0]]:<6} k={key[1]:<4} gap {key[2]:<3} {v[0]:8.4f} {v[1]:8.4f} ({len(acc[key])} pairs)")
    ce = eval_table(f, "ce")
    names = {1: "single", 2: "tf", 3: "so"}
    print("\ndCE by variant x k x mode (mean over sets, seeds and, for single, layers); recovered (zero), "
          "overinteraction")
    acc = defaultdict(list)
    for i in range(len(ce["mode"])):
        m = int(ce["mode"][i])
        if m in names:
            acc[(var[int(ce["variant"][i])], int(ce["k"][i]), names[m])].append(
                (ce["dce"][i], ce["recovered_zero"][i], ce["overinteraction"][i]))
    out = {}
    for key in sorted(acc):
        v = np.nanmean(np.array(acc[key], dtype=float), axis=0) if key[2] != "single" else \
            np.array([np.mean([a[0] for a in acc[key]]), np.mean([a[1] for a in acc[key]]), np.nan])
        print(f"  {key[0]:<6} k={key[1]:<4} {key[2]:<7} dCE {v[0]:8.4f}  recovered {v[1]:8.4f}  overint {v[2]:8.4f}")
        if key[2] != "single":
            out[key] = v[0]
    return out


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) >= 2 else 2
    run = argv[1]
    figures = "--no-figures" not in argv
    path = os.path.join(run, "results.h5")
    if not os.path.exists(path):
        print(f"error: {path} not found (has `resae run` finished a stage yet?)", file=sys.stderr)
        return 1
    f = h5py.File(path, "r")
    print(f"results {path} (schema {f.attrs['schema_version']}, config {f.attrs['config_hash'].decode()})")

    aff = table(f, "affine")
    print("\naffine maps (R^2 on the eval split):")
    print(f"  {'a':>3} {'b':>3} {'gap':>3} {'R^2':>8} {'lambda':>10} {'retries':>7} {'s':>8}")
    order = np.lexsort((aff["layer_b"], aff["layer_a"]))
    for i in order:
        print(f"  {aff['layer_a'][i]:3.0f} {aff['layer_b'][i]:3.0f} {aff['gap'][i]:3.0f} {aff['r2'][i]:8.4f} "
              f"{aff['lambda_used'][i]:10.3g} {aff['retries'][i]:7.0f} {aff['s'][i]:8.4g}")
    by_gap = defaultdict(list)
    for g, r in zip(aff["gap"], aff["r2"]):
        by_gap[int(g)].append(r)
    print("\nmean R^2 by layer gap:")
    for g in sorted(by_gap):
        print(f"  gap {g:2d}: {np.mean(by_gap[g]):.4f} over {len(by_gap[g])} pairs")

    sae = table(f, "sae")
    print("\nSAE training FVU (mean over the last steps of training) by variant x k x layer:")
    layers = sorted(set(int(l) for l in sae["layer"]))
    ks = sorted(set(int(k) for k in sae["k"]))
    print("  " + f"{'variant':<22} {'k':>4} " + " ".join(f"{'L' + str(l):>7}" for l in layers))
    rows = defaultdict(dict)
    for i in range(len(sae["k"])):
        kind = "raw" if sae["kind"][i] == 0 else f"resae(pred {int(sae['pred'][i])})"
        if sae["kind"][i] != 0:
            kind = "resae(gap " + str(int(sae["layer"][i] - sae["pred"][i])) + ")"
        rows[(kind, int(sae["k"][i]))][int(sae["layer"][i])] = sae["fvu"][i]
    for (kind, k) in sorted(rows, key=lambda t: (t[0] != "raw", t[0], t[1])):
        vals = [rows[(kind, k)].get(l) for l in layers]
        print("  " + f"{kind:<22} {k:>4} " + " ".join(f"{v:7.4f}" if v is not None else f"{'-':>7}" for v in vals))

    ev = eval_tables(f)

    if figures:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        out = os.path.join(run, "figures")
        os.makedirs(out, exist_ok=True)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.scatter(aff["gap"], aff["r2"], alpha=0.6, label="layer pairs")
        gs = sorted(by_gap)
        ax.plot(gs, [np.mean(by_gap[g]) for g in gs], "k-o", label="mean")
        ax.set_xlabel("layer gap b - a")
        ax.set_ylabel("R^2 of affine map (eval)")
        ax.set_title("Cross-layer linear predictability")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out, "regression_r2_by_gap.png"), dpi=120)
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for (kind, k), v in sorted(rows.items()):
            ls = "-" if kind == "raw" else "--"
            xs = sorted(v)
            ax.plot(xs, [v[x] for x in xs], ls, marker="o", label=f"{kind} k={k}")
        ax.set_xlabel("layer")
        ax.set_ylabel("training FVU")
        ax.set_title("SAE reconstruction (target space)")
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "fvu_by_layer.png"), dpi=120)
        print(f"\nfigures: {out}/regression_r2_by_gap.png, {out}/fvu_by_layer.png")
        if ev:
            fig, ax = plt.subplots(figsize=(6, 3.8))
            keys = sorted(ev)
            ax.bar(range(len(keys)), [ev[k] for k in keys])
            ax.set_xticks(range(len(keys)))
            ax.set_xticklabels([f"{v} k{k} {m}" for v, k, m in keys], rotation=60, fontsize=6)
            ax.set_ylabel("dCE (nats)")
            ax.set_title("CE increase of joint splices")
            fig.tight_layout()
            fig.savefig(os.path.join(out, "dce_by_mode.png"), dpi=120)
            print(f"figures: {out}/dce_by_mode.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
