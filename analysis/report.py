#!/usr/bin/env python3
"""Tables from a resae run directory (reads RUN_DIR/results.h5 with analysis/resae_store.py).

usage: /usr/bin/python3 analysis/report.py RUN_DIR|results.h5 [--no-figures]

Prints:
  - the cross-layer regression study: R^2 (eval split) of every fitted affine map, and its mean by
    layer gap (the paper's Figure 1);
  - SAE training metrics: final FVU (mean over the last steps) by variant x k x layer;
  - SAE quality per SAE: dead fraction (end of training, eval split) and fvu_last20_gain (relative
    FVU improvement over the last 20% of steps, from the training curve when train.curve_bins > 0),
    flagged DEAD>10% / NOT-FLAT (gain >= 2%) when an SAE misses the demo's bar;
  - evaluation (when /eval exists): EV by variant x k x layer (target space and original-space chain,
    mean over sets and seeds), decoder redundancy by variant x k x gap, dCE by variant x k x mode, and
    the affine-only control beside the resae SAE splices;
  - sparse probing (when /probing exists): test accuracy by variant x k x layer (and the union of a
    set's layers) for each K, the model ceiling (pooled h, top-K and all dims) and the random floor,
    means over classes then class sets, and the layers the union's latents come from;
  - TPP (when /tpp exists): the paper's layout (rows k; columns global / per-layer joint x raw /
    resae) for TPP and for the interaction at each N, then every kind's intended and unintended parts.
The figures are drawn by analysis/figures.py RUN_DIR (the paper's five figures, into RUN_DIR/figures/);
this script draws none (--no-figures is accepted and changes nothing). Variant and CE mode names are
read from the file. Column meanings: docs/store.md; results layouts: analysis/README.md.
Exit status 1 when the file is missing or lacks a table or attribute (the message names it)."""
import sys
from collections import defaultdict

import numpy as np

import resae_store

# the CE passes that splice SAE reconstructions in (the other rows are the clean pass and ablations)
SPLICE_MODES = ("single", "tf", "so")


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------

def affine_tables(r):
    """Print every affine map's R^2 and the mean by layer gap; return (table, {gap: [R^2]})."""
    aff = r.table("affine")
    a, b, gap, r2 = aff.col("layer_a"), aff.col("layer_b"), aff.col("gap"), aff.col("r2")
    lam, retries, s = aff.col("lambda_used"), aff.col("retries"), aff.col("s")
    print("\naffine maps (R^2 on the eval split):")
    print(f"  {'a':>3} {'b':>3} {'gap':>3} {'R^2':>8} {'lambda':>10} {'retries':>7} {'s':>8}")
    for i in np.lexsort((b, a)):
        print(f"  {a[i]:3.0f} {b[i]:3.0f} {gap[i]:3.0f} {r2[i]:8.4f} "
              f"{lam[i]:10.3g} {retries[i]:7.0f} {s[i]:8.4g}")
    by_gap = defaultdict(list)
    for g, x in zip(gap, r2):
        by_gap[int(g)].append(x)
    print("\nmean R^2 by layer gap:")
    for g in sorted(by_gap):
        print(f"  gap {g:2d}: {np.mean(by_gap[g]):.4f} over {len(by_gap[g])} pairs")
    return aff, by_gap


def sae_table(r):
    """Print the training FVU by variant x k x layer; return {(label, k): {layer: fvu}}."""
    sae = r.table("sae")
    layer, pred, k, fvu = sae.col("layer"), sae.col("pred"), sae.col("k"), sae.col("fvu")
    variant = sae.labels("variant")
    print("\nSAE training FVU (mean over the last steps of training) by variant x k x layer:")
    layers = sorted(set(int(l) for l in layer))
    print("  " + f"{'variant':<22} {'k':>4} " + " ".join(f"{'L' + str(l):>7}" for l in layers))
    rows = defaultdict(dict)
    for i in range(len(sae)):
        label = variant[i] if variant[i] == "raw" else f"{variant[i]}(gap {int(layer[i] - pred[i])})"
        rows[(label, int(k[i]))][int(layer[i])] = fvu[i]
    for (label, kk) in sorted(rows, key=lambda t: (t[0] != "raw", t[0], t[1])):
        vals = [rows[(label, kk)].get(l) for l in layers]
        print("  " + f"{label:<22} {kk:>4} " + " ".join(f"{v:7.4f}" if v is not None else f"{'-':>7}" for v in vals))
    return rows


# the demo's bar for a trustworthy SAE (README "The demo"): few dead latents, a flattened curve
MAX_EVAL_DEAD = 0.10
MAX_LAST20_GAIN = 0.02


def quality_table(r):
    """Per SAE: dead fraction (end of training; eval split, when evaluated) and fvu_last20_gain (when the
    run recorded the training curve, train.curve_bins), flagging the SAEs that miss the bar; return
    the number of SAEs that miss it."""
    eval_dead = {}
    if r.has("eval/recon"):
        rec = r.table("eval/recon").dict()
        for i in range(len(rec["layer"])):
            key = tuple(int(rec[c][i]) for c in ("layer", "pred", "k", "seed"))
            eval_dead[key] = max(eval_dead.get(key, 0.0), rec["dead_frac"][i])
    names = sorted(n for n in r.h5["sae"] if n != "table")
    print(f"\nSAE quality (bar: eval dead fraction <= {MAX_EVAL_DEAD:.0%}, FVU gain over the last 20% of steps "
          f"< {MAX_LAST20_GAIN:.0%}):")
    print(f"  {'SAE':<22} {'dead_train':>10} {'dead_eval':>9} {'FVU':>7} {'gain_last20':>11}  flags")
    missed = 0
    for n in names:
        g = f"sae/{n}"
        key = tuple(int(r.attr(g, c)) for c in ("layer", "pred", "k", "seed"))
        dead_ev, gain = eval_dead.get(key, np.nan), r.attr(g, "fvu_last20_gain", np.nan)
        flags = []
        if dead_ev > MAX_EVAL_DEAD:
            flags.append("DEAD>10%")
        if gain >= MAX_LAST20_GAIN:
            flags.append("NOT-FLAT")
        missed += bool(flags)
        print(f"  {n:<22} {r.attr(g, 'dead_frac'):10.4f} {dead_ev:9.4f} {r.attr(g, 'fvu'):7.4f} "
              f"{100 * gain:10.2f}%  {' '.join(flags)}")
    unknown = [w for w, v in (("eval dead fraction (no evaluation)", eval_dead),
                              ("gain (no curve: train.curve_bins is 0)",
                               r.has(f"sae/{names[0]}/fvu_curve") if names else False)) if not v]
    print(f"  {len(names) - missed} of {len(names)} SAEs meet the bar" + (f", {missed} MISS it" if missed else "")
          + (f"; not known: {', '.join(unknown)}" if unknown else ""))
    return missed


def recon_table(rec):
    acc = defaultdict(list)
    variant, k, layer = rec.col("variant"), rec.col("k"), rec.col("layer")
    ev_t, ev_1, ev_c = rec.col("ev_target"), rec.col("ev_orig_onestep"), rec.col("ev_orig_chain")
    ev_cl = rec.col("ev_orig_closed") if "ev_orig_closed" in rec.columns else np.full(len(rec), np.nan)
    print("\nEV on the eval split by variant x k x layer (mean over sets and seeds): target / original one-step / "
          "open-loop chain / closed-loop chain")
    for i in range(len(rec)):
        acc[(int(variant[i]), int(k[i]), int(layer[i]))].append((ev_t[i], ev_1[i], ev_c[i], ev_cl[i]))
    for key in sorted(acc):
        v = np.mean(acc[key], axis=0)
        print(f"  {rec.name('variant', key[0]):<6} k={key[1]:<4} L{key[2]:<3} {v[0]:8.4f} {v[1]:8.4f} {v[2]:8.4f} "
              f"{v[3]:8.4f}")


def redundancy_table(red):
    print("\ndecoder redundancy by variant x k x gap (mean over distinct pairs): max cos, max |cos|")
    c = red.dict()
    seen, acc = set(), defaultdict(list)
    for i in range(len(red)):
        # sets sharing a layer pair repeat its row: count each (SAE pair) once
        u = (c["variant"][i], c["k"][i], c["seed"][i], c["layer_a"][i], c["layer_b"][i])
        if u in seen:
            continue
        seen.add(u)
        acc[(int(u[0]), int(u[1]), int(c["gap"][i]))].append((c["mean_max_cos"][i], c["mean_max_abs_cos"][i]))
    for key in sorted(acc):
        v = np.mean(acc[key], axis=0)
        print(f"  {red.name('variant', key[0]):<6} k={key[1]:<4} gap {key[2]:<3} {v[0]:8.4f} {v[1]:8.4f} "
              f"({len(acc[key])} pairs)")


def ce_table(ce):
    """Print dCE by variant x k x splice mode; return {(variant, k, mode): mean dCE} of the joint modes."""
    print("\ndCE by variant x k x mode (mean over sets, seeds and, for single, layers); recovered (zero), "
          "overinteraction")
    c = ce.dict()
    variant, mode = ce.labels("variant"), ce.labels("mode")
    acc = defaultdict(list)
    for i in range(len(ce)):
        if mode[i] in SPLICE_MODES:
            acc[(variant[i], int(c["k"][i]), mode[i])].append(
                (c["dce"][i], c["recovered_zero"][i], c["overinteraction"][i]))
    out = {}
    for key in sorted(acc):
        if key[2] != "single":
            v = np.nanmean(np.array(acc[key], dtype=float), axis=0)
            out[key] = v[0]
        else:  # no overinteraction for a single-layer splice
            v = np.array([np.mean([a[0] for a in acc[key]]), np.mean([a[1] for a in acc[key]]), np.nan])
        print(f"  {key[0]:<6} k={key[1]:<4} {key[2]:<7} dCE {v[0]:8.4f}  recovered {v[1]:8.4f}  overint {v[2]:8.4f}")
    return out


def eval_tables(r):
    """Print the evaluation summaries; return {(variant, k, mode): mean dCE} of the joint modes."""
    if not r.has("eval"):
        print("\nevaluation: not run yet")
        return {}
    recon_table(r.table("eval/recon"))
    redundancy_table(r.table("eval/redundancy"))
    out = ce_table(r.table("eval/ce"))
    if r.has("eval/affine_only"):
        affine_only_table(r.table("eval/affine_only"), r.table("eval/ce"))
    return out


def affine_only_table(aff, ce):
    """The affine-only control beside the resae SAE splices of the same set and mode (mean over k, seeds)."""
    if not len(aff):
        return
    print("\naffine-only control (h <- A h_prev + c at l_2..l_M, no SAE) vs resae SAEs, same set and pass: dCE, "
          "recovered (zero)")
    a, c = aff.dict(), ce.dict()
    amode, cmode, cvar = aff.labels("mode"), ce.labels("mode"), ce.labels("variant")
    for i in range(len(aff)):
        if amode[i] == "clean":
            continue
        sel = [j for j in range(len(ce)) if cvar[j] == "resae" and c["set"][j] == a["set"][i]
               and cmode[j] == amode[i] and c["layer"][j] == a["layer"][i]]
        sae = f"resae SAEs dCE {np.mean([c['dce'][j] for j in sel]):8.4f}" if sel else ""
        layer = "-" if a["layer"][i] < 0 else f"L{int(a['layer'][i])}"
        print(f"  set {int(a['set'][i])} {amode[i]:<7} {layer:<4} affine dCE {a['dce'][i]:8.4f}  recovered "
              f"{a['recovered_zero'][i]:8.4f}   {sae}")


def probing_tables(r):
    """Print the probing accuracies."""
    if not r.has("probing"):
        return
    t = r.table("probing/probing")
    c = t.dict()
    kind = t.labels("kind")
    sets = r.attr("eval", "set_names").split(",")
    print("\nsparse probing: test accuracy (mean over classes, then class sets) by set x variant x k x layer "
          "(layer -1: union of the set's layers); model = pooled h (K = d: all dims), random = K random latents")
    Ks = sorted({int(k) for k, kd in zip(c["K"], kind) if kd != "model_all"})
    print(f"  {'set':<10} {'variant':<7} {'k':>3} {'seed':>4} {'kind':<10} {'layer':>5} "
          + " ".join(f"{'K=' + str(k):>7}" for k in Ks) + f" {'all d':>7}")
    rows = defaultdict(dict)
    for i in np.flatnonzero(c["class_set"] == -1):
        v = "model" if c["variant"][i] < 0 else t.name("variant", c["variant"][i])
        key = (int(c["set"][i]), v, int(c["k"][i]), int(c["seed"][i]),
               "model" if kind[i].startswith("model") else kind[i], int(c["layer"][i]))
        rows[key]["all" if kind[i] == "model_all" else int(c["K"][i])] = c["accuracy"][i]
    order = {"model": 0, "sae": 1, "random": 2}
    for key in sorted(rows, key=lambda q: (q[0], q[1] != "model", q[1], q[2], q[3], order[q[4]], q[5])):
        vals = [rows[key].get(k) for k in Ks] + [rows[key].get("all")]
        print(f"  {sets[key[0]] if key[0] < len(sets) else key[0]:<10} {key[1]:<7} {key[2]:>3} {key[3]:>4} "
              f"{key[4]:<10} {key[5]:>5} " + " ".join(f"{x:7.4f}" if x is not None else f"{'-':>7}" for x in vals))
    lat = r.table("probing/probing_latents")
    lc = lat.dict()
    share = defaultdict(lambda: defaultdict(int))
    for i in np.flatnonzero(lc["scope"] == -1):
        share[(int(lc["set"][i]), lat.name("variant", lc["variant"][i]), int(lc["k"][i]))][int(lc["layer"][i])] += 1
    if share:
        print("\n  union probes (largest K, every class): share of the chosen latents by layer")
        for key in sorted(share):
            tot = sum(share[key].values())
            print(f"  {sets[key[0]] if key[0] < len(sets) else key[0]:<10} {key[1]:<7} k={key[2]:<4} "
                  + "  ".join(f"L{l} {100 * n / tot:3.0f}%" for l, n in sorted(share[key].items())))


def tpp_tables(r):
    """Print TPP as the paper lays it out (rows k; columns global / per-layer joint x raw / resae) for TPP
    and the interaction at each N, then every kind's intended and unintended parts."""
    if not r.has("tpp"):
        return
    t = r.table("tpp/tpp")
    c = t.dict()
    kind = t.labels("kind")
    sets = r.attr("eval", "set_names").split(",")
    var = [t.name("variant", v) for v in c["variant"]]
    top = np.flatnonzero((c["class_set"] == -1) & (c["label"] == -1))
    cell = defaultdict(list)
    for i in top:
        cell[(int(c["set"][i]), var[i], int(c["k"][i]), kind[i], int(c["layer"][i]), int(c["N"][i]))].append(i)

    def mean(key, col):
        rows = cell.get(key)
        return float(np.mean(c[col][rows])) if rows else None

    fmt = lambda x: f"{x:9.4f}" if x is not None else f"{'-':>9}"  # noqa: E731
    for s in sorted({k[0] for k in cell}):
        ks = sorted({k[2] for k in cell if k[0] == s})
        for what, kinds in (("TPP = mean_i [intended - unintended]", ("global", "joint")),
                            ("interaction = TPP(budget) - sum of its layers' parts",
                             ("global_interaction", "joint_interaction"))):
            for N in sorted({k[5] for k in cell if k[0] == s}):
                print(f"\nTPP {sets[s] if s < len(sets) else s}, N = {N} ablated latents in all: {what} "
                      "(mean over classes, class sets, seeds)")
                print(f"  {'k':>3} {'glob raw':>9} {'glob resae':>10} {'joint raw':>9} {'joint resae':>11}")
                for k in ks:
                    v = [mean((s, vn, k, kd, -1, N), "tpp") for kd in kinds for vn in ("raw", "resae")]
                    print(f"  {k:>3} {fmt(v[0])} {fmt(v[1]):>10} {fmt(v[2])} {fmt(v[3]):>11}")
    print("\nTPP by kind (local: SAEBench-exact at that layer, no forward; random: control; layer -1: every layer)")
    print(f"  {'set':<10} {'variant':<7} {'k':>3} {'kind':<18} {'layer':>5} {'N':>4} {'intended':>9} "
          f"{'unintended':>10} {'tpp':>9}")
    for key in sorted(cell, key=lambda q: (q[0], q[2], q[1], q[3], q[4], q[5])):
        vals = [mean(key, col) for col in ("intended", "unintended", "tpp")]
        print(f"  {sets[key[0]] if key[0] < len(sets) else key[0]:<10} {key[1]:<7} {key[2]:>3} {key[3]:<18} "
              f"{key[4]:>5} {key[5]:>4} {fmt(vals[0])} {fmt(vals[1]):>10} {fmt(vals[2])}")


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) >= 2 else 2
    path = resae_store.results_path(argv[1])
    try:
        with resae_store.open_results(path) as r:
            print(f"results {path} (schema {r.schema_version}, config {r.attr('', 'config_hash')})")
            affine_tables(r)
            sae_table(r)
            quality_table(r)
            eval_tables(r)
            probing_tables(r)
            tpp_tables(r)
    except resae_store.StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
