#!/usr/bin/env python3
"""The paper's five figures from a resae run directory (RUN_DIR/results.h5, read with analysis/resae_store.py).

usage: /usr/bin/python3 analysis/figures.py RUN_DIR|results.h5 [--out DIR] [--format png,pdf]

Writes into DIR (default RUN_DIR/figures), each as PNG and PDF unless --format says otherwise:
  fig1_regression_r2       R^2 of the affine maps h_b ~ A h_a + c (eval split) against the layer gap b - a:
                           one marker per fitted pair, the mean per gap as a line (/affine/table).
  fig2_ev_redundancy       explained variance in target space and in original space (one-step, open-loop
                           chain, closed-loop chain when the file has it) and decoder redundancy, by layer
                           gap, per variant and k (/eval/recon, /eval/redundancy).
  fig3_ce_recovery         recovered CE against the zero and the mean ablation, and overinteraction, per
                           set, for single-layer splices at each layer and the joint TF and SO splices, per
                           variant and k (/eval/ce).
  fig4_probing_tpp         sparse-probing accuracy over layers for each K with the model ceiling and the
                           random floor (/probing/probing), and TPP intended / unintended accuracy drops per
                           budget N, global and per-layer joint (/tpp/tpp); a part whose group is absent is
                           left out with a printed note.
  fig5_gap_trends          decoder redundancy (left axis) and dCE of the TF and SO splices (right axis)
                           against the layer gap, raw vs resae, one panel per k.
Every number plotted is a mean over seeds; with several seeds the error bars are mean +- standard error
over seeds (sample standard deviation / sqrt(n)); a single seed draws no bars. Columns and enum values
are found by name from the tables' `columns` and `enum:*` attributes (docs/store.md).

Prints the path of each file written, one per line. Exit status 1 when results.h5 is missing or lacks
/eval (or a table or column a figure needs; the message names the file and the object), 2 on a usage
error.

As a library (tests/analysis/test_figures.py): fig1_data(r) ... fig5_data(r) return the plotted
numbers ({key: Series}, Series = x, y (mean over seeds), se, n_seeds); fig1(r) ... fig5(r) return
(matplotlib Figure or None, data); write_figures(r, out, formats) writes them all."""
import argparse
import os
import sys
import textwrap
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import resae_store  # noqa: E402

FORMATS = ("png", "pdf", "svg")
NAMES = ("fig1_regression_r2", "fig2_ev_redundancy", "fig3_ce_recovery", "fig4_probing_tpp", "fig5_gap_trends")
EVAL_TABLES = ("recon", "redundancy", "ce")
EV_PANELS = (("ev_target", "EV in target space (the SAE's own input)"),
             ("ev_orig_onestep", "EV in original space, one-step\n(A h_prev + c + r̂, true h_prev)"),
             ("ev_orig_chain", "EV in original space, open-loop chain\n(A x̂_prev + c + r̂)"),
             ("ev_orig_closed", "EV in original space, closed-loop chain\n(each SAE encodes h − A x̂_prev − c)"))
DCE = "dCE = CE(spliced) − CE(clean), nats/token"


def note(msg):
    print("note: " + msg)


# ------------------------------------------------------------------------------------------------
# the numbers
# ------------------------------------------------------------------------------------------------

def mean_se(per_seed):
    """{seed: [values]} -> (mean, se, n): each seed's values are averaged, then the mean over the n seeds
    and its standard error std(ddof=1) / sqrt(n) (nan when n == 1). NaN values are left out."""
    v = []
    for s in sorted(per_seed):
        x = np.asarray(per_seed[s], float)
        x = x[np.isfinite(x)]
        if x.size:
            v.append(x.mean())
    v = np.asarray(v)
    if v.size == 0:
        return np.nan, np.nan, 0
    se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else np.nan
    return float(v.mean()), float(se), int(v.size)


class Series:
    """One plotted line or group of bars: x (sorted), y = mean over seeds, se (nan with one seed), n = seeds."""

    def __init__(self, x, y, se, n):
        self.x, self.y, self.se, self.n = list(x), np.asarray(y, float), np.asarray(se, float), np.asarray(n)

    @property
    def has_se(self):
        return bool(np.any(np.isfinite(self.se)))

    def at(self, x):
        i = self.x.index(x)
        return self.y[i], self.se[i], int(self.n[i])

    def __repr__(self):
        return f"<Series x={self.x} y={np.round(self.y, 4).tolist()} se={np.round(self.se, 4).tolist()}>"


class Acc:
    """Accumulates values by series key, x and seed; series() turns them into {key: Series}."""

    def __init__(self):
        self.v = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))

    def add(self, key, x, seed, value):
        if np.isfinite(value):
            self.v[key][x][int(seed)].append(float(value))

    def series(self, order=None):
        out = {}
        for key, pts in self.v.items():
            xs = sorted(pts, key=order) if order else sorted(pts)
            stats = [mean_se(pts[x]) for x in xs]
            out[key] = Series(xs, [s[0] for s in stats], [s[1] for s in stats], [s[2] for s in stats])
        return out


def require_eval(r):
    """/eval and its three tables, or a StoreError naming the file and what is missing."""
    if not r.has("eval"):
        raise resae_store.StoreError(
            f"{r.path}: no group /eval (no evaluation has finished; figures 2, 3 and 5 need /eval/recon, "
            "/eval/redundancy and /eval/ce: run `resae run` to the end)")
    missing = [t for t in EVAL_TABLES if not r.has("eval/" + t)]
    if missing:
        raise resae_store.StoreError(f"{r.path}: /eval lacks " + ", ".join("/eval/" + t for t in missing))


def set_layers(r):
    """{set index: sorted layers} from /eval/recon (every evaluated layer of a set has a row)."""
    rec = r.table("eval/recon")
    out = defaultdict(set)
    for s, layer in zip(rec.col("set"), rec.col("layer")):
        out[int(s)].add(int(layer))
    return {s: sorted(v) for s, v in out.items()}


def set_name(t, s):
    try:
        return t.name("set", s)
    except resae_store.StoreError:
        return f"set {int(s)}"


def n_seeds(r):
    """The number of distinct SAE seeds in /eval/recon."""
    return len(np.unique(r.table("eval/recon").col("seed")))


def fig1_data(r):
    """{'pairs': (gap, r2, layer_a, layer_b) arrays per lambda_rel, 'mean': {lambda_rel: Series of the mean
    R^2 per gap over the fitted pairs (no seeds: n counts pairs, se is nan)}}."""
    aff = r.table("affine")
    gap, r2, a, b, lam = (aff.col(c) for c in ("gap", "r2", "layer_a", "layer_b", "lambda_rel"))
    pairs, mean = {}, {}
    for lv in np.unique(lam):
        m = lam == lv
        pairs[float(lv)] = (gap[m], r2[m], a[m], b[m])
        gs = sorted({int(g) for g in gap[m]})
        mean[float(lv)] = Series(gs, [r2[m][gap[m] == g].mean() for g in gs], [np.nan] * len(gs),
                                 [int(np.sum(gap[m] == g)) for g in gs])
    return {"pairs": pairs, "mean": mean}


def redundancy_acc(r, layers):
    """Acc of mean_max_cos and mean_max_abs_cos by (column, variant, k) over gap and seed, each distinct
    pair of SAEs once (sets sharing a pair repeat its row; a resae SAE is named by its layer and its
    predecessor in the set, so the same layer pair from two sets may be two different SAE pairs)."""
    red = r.table("eval/redundancy")
    c = red.dict()
    var = red.labels("variant")
    acc, seen = Acc(), set()
    for i in range(len(red)):
        ls = layers.get(int(c["set"][i]), [])
        a, b = int(c["layer_a"][i]), int(c["layer_b"][i])

        def pred(layer):
            if var[i] == "raw" or layer not in ls or ls.index(layer) == 0:
                return -1
            return ls[ls.index(layer) - 1]
        u = (var[i], int(c["k"][i]), int(c["seed"][i]), a, pred(a), b, pred(b))
        if u in seen:
            continue
        seen.add(u)
        for col in ("mean_max_cos", "mean_max_abs_cos"):
            acc.add((col, var[i], int(c["k"][i])), int(c["gap"][i]), c["seed"][i], c[col][i])
    return acc


def fig2_data(r):
    """{(column, variant, k): Series over the layer gap}. EV columns: the rows of the layers l_m, m >= 2,
    of every set, x = l_m - l_{m-1} (the first layer of a set has no gap and is the same SAE for raw and
    resae), each distinct (variant, k, seed, layers l_1..l_m) once. Redundancy: see redundancy_acc."""
    require_eval(r)
    layers = set_layers(r)
    rec = r.table("eval/recon")
    c = rec.dict()
    var = rec.labels("variant")
    cols = [col for col, _ in EV_PANELS if rec.has(col)]
    acc, seen = Acc(), set()
    for i in range(len(rec)):
        ls, layer = layers[int(c["set"][i])], int(c["layer"][i])
        m = ls.index(layer)
        if m == 0:
            continue
        u = (var[i], int(c["k"][i]), int(c["seed"][i]), tuple(ls[:m + 1]))
        if u in seen:
            continue
        seen.add(u)
        for col in cols:
            acc.add((col, var[i], int(c["k"][i])), layer - ls[m - 1], c["seed"][i], c[col][i])
    out = acc.series()
    out.update(redundancy_acc(r, layers).series())
    return out


def ce_rows(r):
    """/eval/ce as (table, columns dict, variant labels, mode labels)."""
    ce = r.table("eval/ce")
    for m in ("single", "tf", "so"):
        ce.code("mode", m)  # a clear error when the file names its modes otherwise
    return ce, ce.dict(), ce.labels("variant"), ce.labels("mode")


def fig3_data(r):
    """{(set, column, variant, k): Series over categories 'L<layer>' (single-layer splices), 'TF', 'SO'},
    columns recovered_zero, recovered_mean, overinteraction (TF and SO only)."""
    require_eval(r)
    ce, c, var, mode = ce_rows(r)
    acc = Acc()
    for i in range(len(ce)):
        if mode[i] == "single":
            cat = (0, int(c["layer"][i]))
        elif mode[i] in ("tf", "so"):
            cat = (1, mode[i].upper())
        else:
            continue
        key = (int(c["set"][i]), var[i], int(c["k"][i]))
        for col in ("recovered_zero", "recovered_mean", "overinteraction"):
            if col == "overinteraction" and cat[0] == 0:
                continue
            acc.add((key[0], col) + key[1:], cat, c["seed"][i], c[col][i])
    out = acc.series()
    for s in out.values():
        s.x = [f"L{x[1]}" if x[0] == 0 else x[1] for x in s.x]
    return out


def fig4_data(r):
    """{'probing': {(set, row kind, variant, k, K): Series over layers (-1 = the union of the set's layers,
    plotted last)} or None, 'tpp': {(set, variant, k, kind, part): Series over N} or None}. Probing rows
    are the means over classes and class sets (class_set = label = -1); row kinds sae, random (per
    variant and k), model_topk and model_all (variant 'model', k -1; model_all at every K). TPP rows:
    kinds global, joint and random, parts intended, unintended, tpp."""
    out = {"probing": None, "tpp": None}
    if r.has("probing/probing"):
        t = r.table("probing/probing")
        c = t.dict()
        kind = t.labels("kind")
        sae_K = sorted({int(k) for k, kd in zip(c["K"], kind) if kd == "sae"})
        acc = Acc()
        for i in np.flatnonzero((c["class_set"] == -1) & (c["label"] == -1)):
            if kind[i] in ("sae", "random"):
                key = (int(c["set"][i]), kind[i], t.name("variant", c["variant"][i]), int(c["k"][i]), int(c["K"][i]))
                acc.add(key, int(c["layer"][i]), c["seed"][i], c["accuracy"][i])
            elif kind[i] in ("model_topk", "model_all"):
                for K in (sae_K if kind[i] == "model_all" else [int(c["K"][i])]):
                    acc.add((int(c["set"][i]), kind[i], "model", -1, K), int(c["layer"][i]), 0, c["accuracy"][i])
        out["probing"] = acc.series(order=lambda x: (x < 0, x))
    if r.has("tpp/tpp"):
        t = r.table("tpp/tpp")
        c = t.dict()
        kind = t.labels("kind")
        acc = Acc()
        for i in np.flatnonzero((c["class_set"] == -1) & (c["label"] == -1) & (c["layer"] == -1)):
            if kind[i] in ("global", "joint", "random"):
                for part in ("intended", "unintended", "tpp"):
                    acc.add((int(c["set"][i]), t.name("variant", c["variant"][i]), int(c["k"][i]), kind[i], part),
                            int(c["N"][i]), c["seed"][i], c[part][i])
        out["tpp"] = acc.series()
    return out


def uniform_sets(layers):
    """{set: spacing} of the sets whose consecutive layers are equally spaced, restricted to the most
    common number of layers among them (so that dCE compares sets of the same size); and the sets left
    out, as [(set, reason)]."""
    uni, out = {}, []
    for s, ls in layers.items():
        d = np.diff(ls)
        if len(ls) >= 2 and np.all(d == d[0]):
            uni[s] = (int(d[0]), len(ls))
        else:
            out.append((s, "unequal spacing" if len(ls) >= 2 else "one layer"))
    if not uni:
        return {}, out
    sizes = [m for _, m in uni.values()]
    M = max(set(sizes), key=lambda m: (sizes.count(m), m))
    keep = {s: g for s, (g, m) in uni.items() if m == M}
    out += [(s, f"{m} layers, not {M}") for s, (g, m) in uni.items() if m != M]
    return keep, out


def fig5_data(r):
    """{('redundancy', variant, k): Series over gap (mean_max_cos, as in fig 2), ('dce', mode, variant, k):
    Series over the spacing of the sets in uniform_sets (TF and SO joint splices), 'sets': {set: spacing},
    'left_out': [(set, reason)]}."""
    require_eval(r)
    layers = set_layers(r)
    out = {("redundancy",) + key[1:]: s for key, s in redundancy_acc(r, layers).series().items()
           if key[0] == "mean_max_cos"}
    keep, left = uniform_sets(layers)
    ce, c, var, mode = ce_rows(r)
    acc = Acc()
    for i in range(len(ce)):
        s = int(c["set"][i])
        if mode[i] in ("tf", "so") and s in keep:
            acc.add(("dce", mode[i], var[i], int(c["k"][i])), keep[s], c["seed"][i], c["dce"][i])
    out.update(acc.series())
    out["sets"], out["left_out"] = keep, left
    return out


# ------------------------------------------------------------------------------------------------
# drawing
# ------------------------------------------------------------------------------------------------

_PLT = None


def plt():
    global _PLT
    if _PLT is None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as p
        p.rcParams.update({"font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 8,
                           "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 11,
                           "axes.grid": True, "grid.alpha": 0.3, "pdf.fonttype": 42, "savefig.dpi": 150})
        _PLT = p
    return _PLT


VARIANT_MAPS = {"raw": "Blues", "resae": "Oranges"}
OTHER_MAPS = ("Greens", "Purples", "Reds", "Greys")
MARKERS = "osD^v<>ph*"


def variant_color(variant, i=None, n=1):
    """A colour per variant (raw blue, resae orange), darker for larger k (i of n)."""
    import matplotlib
    name = VARIANT_MAPS.get(variant) or OTHER_MAPS[sum(map(ord, variant)) % len(OTHER_MAPS)]
    t = 0.75 if i is None else (0.85 if n == 1 else 0.45 + 0.5 * i / (n - 1))
    return matplotlib.colormaps[name](t)


def style(variant, k, ks):
    i = ks.index(k)
    return dict(color=variant_color(variant, i, len(ks)), marker=MARKERS[i % len(MARKERS)],
                linestyle="--" if variant == "raw" else "-", label=f"{variant} k={k}")


def draw(ax, xs, s, **kw):
    """A line through the points of s at positions xs, with error bars (mean +- SE) when s has several seeds."""
    kw.setdefault("markersize", 5)
    if s.has_se:
        return ax.errorbar(xs, s.y, yerr=np.where(np.isfinite(s.se), s.se, 0.0), capsize=3, elinewidth=1, **kw)
    return ax.plot(xs, s.y, **kw)[0]


def grid(container, nrows, ncols, sharey=None, legend_h=0.22):
    """nrows x ncols axes (sharey None, 'row' or 'all') above a row that holds only a legend: an
    (nrows, ncols) array of axes and the legend axes (axis off)."""
    gs = container.add_gridspec(nrows + 1, ncols, height_ratios=[1] * nrows + [legend_h])
    axs = np.empty((nrows, ncols), dtype=object)
    for i in range(nrows):
        for j in range(ncols):
            share = None
            if sharey == "row" and j:
                share = axs[i, 0]
            elif sharey == "all" and (i or j):
                share = axs[0, 0]
            axs[i, j] = container.add_subplot(gs[i, j], sharey=share)
            if share is not None and j:
                axs[i, j].tick_params(labelleft=False)
    lax = container.add_subplot(gs[nrows, :])
    lax.axis("off")
    return axs, lax


def shift(xs, i, n, step, on=True):
    """xs moved by the i-th of n offsets step apart (centred on 0), so that the error bars of series
    that share x positions do not hide each other; unchanged when on is false (one seed: no bars)."""
    off = (i - (n - 1) / 2) * step if on else 0.0
    return [x + off for x in xs]


def figure_title(fig, text):
    """The figure's title, its lines rewrapped to the figure's width (about 11 characters per inch at the
    title's size), so that a narrow figure (few sets or k) does not cut it off."""
    width = int(fig.get_figwidth() * 11)
    fig.suptitle("\n".join(textwrap.wrap(" ".join(text.split("\n")), width)))


def seeds_text(n):
    return (f"mean ± standard error over {n} seeds" if n > 1 else "one seed: no error bars")


def int_ticks(ax, xs):
    ax.set_xticks(sorted(set(xs)))
    ax.set_xticklabels([str(x) for x in sorted(set(xs))])


def ordered(keys, pos):
    """The distinct values at position pos of the tuple keys, raw first, then by name or value."""
    vals = {k[pos] for k in keys if isinstance(k, tuple)}
    return sorted(vals, key=lambda v: (v != "raw", v) if isinstance(v, str) else (False, v))


def fig1(r):
    d = fig1_data(r)
    p = plt()
    fig, ax = p.subplots(figsize=(6.8, 4.4), layout="constrained")
    lams = sorted(d["pairs"])
    all_a = np.concatenate([d["pairs"][lv][2] for lv in lams])
    import matplotlib
    src = sorted({int(x) for x in all_a})
    bounds = np.arange(src[0] - 0.5, src[-1] + 1.5)
    norm = matplotlib.colors.BoundaryNorm(bounds, matplotlib.colormaps["viridis"].N)
    for j, lv in enumerate(lams):
        gap, r2, a, b = d["pairs"][lv]
        # spread the pairs of one gap by their source layer so that markers do not hide each other
        span = max(1, np.ptp(all_a))
        x = gap + 0.3 * ((a - all_a.min()) / span - 0.5)
        suffix = f" (λ_rel {lv:g})" if len(lams) > 1 else ""
        sc = ax.scatter(x, r2, c=a, cmap="viridis", norm=norm, s=36, marker=MARKERS[j], edgecolors="k",
                        linewidths=0.4, zorder=3, label="one fitted pair (a, b)" + suffix)
        m = d["mean"][lv]
        ax.plot(m.x, m.y, "k-", lw=1.5, marker="_", markersize=16, mew=2, zorder=2,
                label="mean over the pairs of that gap" + suffix)
        for g, y, n in zip(m.x, m.y, m.n):
            ax.annotate(f"{y:.3f}\n({n} pair{'s' if n != 1 else ''})", (g, y), xytext=(12, 0),
                        textcoords="offset points", va="center", fontsize=7)
    cb = fig.colorbar(sc, ax=ax, pad=0.01, ticks=list(range(src[0], src[-1] + 1)))
    cb.set_label("source layer a")
    gs = sorted({int(g) for lv in lams for g in d["pairs"][lv][0]})
    int_ticks(ax, gs)
    ax.set_xlim(min(gs) - 0.5, max(gs) + 0.9)
    ax.set_xlabel("layer gap b − a")
    ax.set_ylabel("R² of the affine map h_b ≈ A h_a + c\n(eval split; 1 = h_b exactly linear in h_a)")
    ax.set_title("Fig. 1. Cross-layer linear predictability: how much of layer b's residual stream\n"
                 "an affine function of layer a explains, by layer gap (markers within a gap spread by a)")
    ax.legend(loc="lower left")
    return fig, d


def fig2(r):
    d = fig2_data(r)
    p = plt()
    n = n_seeds(r)
    ev_cols = [(c, t) for c, t in EV_PANELS if any(k[0] == c for k in d)]
    variants, ks = ordered(d, 1), ordered(d, 2)
    fig, axs = p.subplots(2, 3, figsize=(13, 7.6), layout="constrained")
    axs = axs.ravel()
    ev_axes = []
    handles = {}
    for ax, (col, title) in zip(axs, ev_cols + [("mean_max_cos", None)]):
        for v in variants:
            for k in ks:
                s = d.get((col, v, k))
                if s is None:
                    continue
                q = variants.index(v) * len(ks) + ks.index(k)
                h = draw(ax, shift(s.x, q, len(variants) * len(ks), 0.035, n > 1), s, **style(v, k, ks))
                handles.setdefault((v, k), h)
        xs = sorted({x for key, s in d.items() if key[0] == col for x in s.x})
        int_ticks(ax, xs)
        ax.set_xlabel("layer gap l_m − l_(m−1) to the previous layer of the set"
                      if col != "mean_max_cos" else "layer gap b − a between the two SAEs")
        if col == "mean_max_cos":
            ax.set_title("(%s) Decoder redundancy\nmean over rows of W_dec(b) of max cos to any row of W_dec(a)"
                         % "abcde"[len(ev_cols)])
            ax.set_ylabel("mean max cosine (1 = every latent duplicated)")
        else:
            ev_axes.append(ax)
            ax.set_title("(%s) %s" % ("abcde"[len(ev_axes) - 1], title))
            ax.set_ylabel("explained variance (EV)")
    # one y scale for the EV panels, so that they compare at a glance, unless one panel's range is far
    # wider than another's (the open-loop chain can reach EV < 0): then each panel gets its own
    lows = [min(np.nanmin(s.y - np.nan_to_num(s.se)) for key, s in d.items() if key[0] == col)
            for col, _ in ev_cols]
    spans = [max(1 - x, 1e-3) for x in lows]
    shared = max(spans) <= 2.5 * min(spans)
    for ax, lo in zip(ev_axes, lows):
        lo = min(lows) if shared else lo
        ax.set_ylim(lo - 0.03 * (1 - lo), 1 + 0.03 * (1 - lo))
        ax.axhline(1, color="0.5", lw=0.8, ls=":")
    leg = axs[len(ev_cols) + 1]
    for ax in axs[len(ev_cols) + 2:]:
        ax.axis("off")
    leg.axis("off")
    leg.legend([handles[key] for key in sorted(handles, key=lambda q: (q[0] != "raw", q[0], q[1]))],
               [f"{v} k={k}" for v, k in sorted(handles, key=lambda q: (q[0] != "raw", q[0], q[1]))],
               loc="upper left", ncol=2, title="variant, active latents k", frameon=False)
    leg.text(0, 0.62, "\n".join(textwrap.wrap(
        "EV = 1 − Σ‖x − x̂‖² / Σ‖x − μ‖² over the eval tokens, μ the eval mean (1 = perfect). "
        "Target space: x is the SAE's input (raw: h_l; resae: the residual u = h_l − A h_prev − c). "
        "Original space: x = h_l, rebuilt by resae as A·prev + c + r̂. For raw SAEs all EVs are the same "
        "number. EV points: layers l_m (m ≥ 2) of every set whose previous layer is 'gap' below, each "
        "distinct SAE chain once. Redundancy: every distinct pair of SAEs of one variant and k.", 62)),
        transform=leg.transAxes, va="top", fontsize=8)
    figure_title(fig, "Fig. 2. Reconstruction quality (EV) and decoder redundancy by layer gap, raw vs residualized "
                 f"SAEs ({seeds_text(n)}" + ("" if shared else "; the EV panels have different y scales") + ")")
    return fig, d


def fig3(r):
    d = fig3_data(r)
    p = plt()
    n = n_seeds(r)
    ce = r.table("eval/ce")
    sets = ordered(d, 0)
    variants, ks = ordered(d, 2), ordered(d, 3)
    rows = (("recovered_zero", "recovered CE vs zero ablation\n(CE_zero − CE) / (CE_zero − CE_clean)"),
            ("recovered_mean", "recovered CE vs mean ablation\n(CE_mean − CE) / (CE_mean − CE_clean)"),
            ("overinteraction", "overinteraction (nats/token)\ndCE_joint − Σ_m dCE_single(m)"))
    fig = p.figure(figsize=(max(7.0, 3.6 * len(sets)), 9.6), layout="constrained")
    axs, lax = grid(fig, 3, len(sets), sharey="row", legend_h=0.18)
    series_keys = [(v, k) for v in variants for k in ks]
    width = 0.8
    handles = {}
    for j, s in enumerate(sets):
        for i, (col, label) in enumerate(rows):
            ax = axs[i, j]
            cats = []
            for key, ser in d.items():
                if key[0] == s and key[1] == col:
                    cats += [c for c in ser.x if c not in cats]
            singles = sorted([c for c in cats if c.startswith("L")], key=lambda c: int(c[1:]))
            joints = [c for c in ("TF", "SO") if c in cats]
            pos = {c: q for q, c in enumerate(singles)}
            pos.update({c: len(singles) + 0.4 + q for q, c in enumerate(joints)})
            for q, (v, k) in enumerate(series_keys):
                ser = d.get((s, col, v, k))
                if ser is None:
                    continue
                off = (q - (len(series_keys) - 1) / 2) * width / len(series_keys)
                st = style(v, k, ks)
                for part in (singles, joints):
                    idx = [ser.x.index(c) for c in part if c in ser.x]
                    if not idx:
                        continue
                    sub = Series([ser.x[t] for t in idx], ser.y[idx], ser.se[idx], ser.n[idx])
                    kw = dict(st, linestyle=st["linestyle"] if part is singles else "none", lw=0.8)
                    h = draw(ax, [pos[c] + off for c in sub.x], sub, **kw)
                    handles.setdefault((v, k), h)
            if singles and joints:
                ax.axvline(len(singles) - 0.3, color="0.4", lw=0.8, ls=":")
            ax.set_xticks([pos[c] for c in singles + joints])
            ax.set_xticklabels(singles + joints)
            ax.grid(False, axis="x")
            if col == "overinteraction":
                ax.axhline(0, color="0.3", lw=0.8)
            else:
                ax.axhline(1, color="0.5", lw=0.8, ls=":")
            if j == 0:
                ax.set_ylabel(label)
            if i == 0:
                ax.set_title(f"set {set_name(ce, s)}")
            if i == 2:
                ax.set_xlabel("splice: L<l> single layer l; TF / SO all layers jointly")
    lax.legend([handles[q] for q in series_keys if q in handles],
               [f"{v} k={k}" for v, k in series_keys if (v, k) in handles],
               loc="center", ncol=min(len(series_keys), 6), title="variant, active latents k", frameon=False)
    figure_title(fig, "Fig. 3. CE recovered when SAE reconstructions are spliced into the model (1 = clean CE, "
                 "0 = the ablation's CE), and overinteraction\nof the joint splices (> 0: the layers' errors "
                 "compound super-additively). Joint splices: TF = teacher-forced (every SAE reads the clean\n"
                 "activations), SO = sequential-online (each SAE reads the stream already spliced below it); "
                 f"{seeds_text(n)}")
    return fig, d


def _probing_panels(sf, pr, r):
    keys = list(pr)
    sets = ordered(keys, 0)
    sae = [q for q in keys if q[1] == "sae"]
    variants = ordered(sae, 2)
    Ks = ordered(sae, 4)
    rows = [(s, k) for s in sets for k in ordered([q for q in sae if q[0] == s], 3)]
    axs, lax = grid(sf, len(rows), len(Ks), sharey="all", legend_h=0.25)
    names = r.table("eval/recon") if r.has("eval/recon") else None
    handles = {}
    for i, (s, k) in enumerate(rows):
        for j, K in enumerate(Ks):
            ax = axs[i, j]
            layers = sorted({x for q in keys if q[0] == s for x in pr[q].x if x >= 0})
            pos = {layer: t for t, layer in enumerate(layers)}
            pos[-1] = len(layers) + 0.3
            lines = [(("sae", v, k), dict(color=variant_color(v), marker="o", lw=1.6, label=f"{v} SAE latents"))
                     for v in variants]
            lines += [(("random", v, k), dict(color=variant_color(v), marker=".", lw=0.9, ls=":",
                                              label=f"{v}: K random latents (floor)")) for v in variants]
            lines += [(("model_all", "model", -1), dict(color="k", marker="s", markersize=3.5, lw=1.2,
                                                         label="model h, all d dimensions (ceiling)")),
                      (("model_topk", "model", -1), dict(color="0.45", marker="s", markersize=3.5, lw=1.0,
                                                          ls="--", label="model h, top-K dimensions"))]
            for q, ((kind, v, kk), kw) in enumerate(lines):
                ser = pr.get((s, kind, v, kk, K))
                if ser is None:
                    continue
                lab = kw.pop("label")
                idx = [t for t, x in enumerate(ser.x) if x >= 0]
                sub = Series([ser.x[t] for t in idx], ser.y[idx], ser.se[idx], ser.n[idx])
                h = draw(ax, shift([pos[x] for x in sub.x], q, len(lines), 0.05, sub.has_se), sub, **kw)
                handles.setdefault(lab, h)
                if -1 in ser.x:  # the union of the set's layers: a separate point, not on the line
                    t = ser.x.index(-1)
                    draw(ax, shift([pos[-1]], q, len(lines), 0.05, ser.has_se), Series([-1], ser.y[[t]], ser.se[[t]], ser.n[[t]]),
                         **dict(kw, ls="none", marker="D"))
            ax.axhline(0.5, color="0.6", lw=0.8, ls="-.")
            ax.axvline(len(layers) - 0.35, color="0.4", lw=0.8, ls=":")
            ax.set_xticks([pos[x] for x in layers] + [pos[-1]])
            ax.set_xticklabels([f"L{x}" for x in layers] + ["union"])
            ax.grid(False, axis="x")
            sname = set_name(names, s) if names is not None else f"set {s}"
            ax.set_title(f"K = {K} latent{'s' if K != 1 else ''} per probe; k = {k}; set {sname}")
            if j == 0:
                ax.set_ylabel("probe test accuracy\n(balanced, chance 0.5)")
            if i == len(rows) - 1:
                ax.set_xlabel("probed layer (union: all of the set's layers' latents together)", fontsize=8)
    from matplotlib.lines import Line2D
    handles["union: one probe over the latents of all of the set's layers"] = Line2D(
        [], [], color="0.3", marker="D", ls="none")
    lax.legend(list(handles.values()), list(handles), loc="center", ncol=3, fontsize=8, frameon=False)
    sf.suptitle("(a) Sparse probing (SAEBench): top-K latents by |mean_pos − mean_neg|, logistic regression, "
                "accuracy averaged over classes and class sets", fontsize=10)
    return axs


def _tpp_panels(sf, tp, r):
    keys = list(tp)
    panels = sorted({(q[0], q[2]) for q in keys})
    variants = ordered(keys, 1)
    axs, lax = grid(sf, 1, len(panels), sharey="row", legend_h=0.12)
    axs = axs[0]
    names = r.table("eval/recon") if r.has("eval/recon") else None
    kind_label = {"global": "global", "joint": "per-layer joint", "random": "random (control)"}
    handles = {}
    for ax, (s, k) in zip(axs, panels):
        Ns = sorted({x for q in keys if q[0] == s and q[2] == k for x in tp[q].x})
        cats = [(N, kd) for N in Ns for kd in ("global", "joint", "random")
                if any(q[:4] == (s, v, k, kd) and N in tp[q].x for v in variants for q in keys)]
        bars = [(v, part) for v in variants for part in ("intended", "unintended")]
        w = 0.8 / len(bars)
        top = 0.0
        for b, (v, part) in enumerate(bars):
            xs, ys, es = [], [], []
            for c, (N, kd) in enumerate(cats):
                ser = tp.get((s, v, k, kd, part))
                if ser is None or N not in ser.x:
                    continue
                y, e, _ = ser.at(N)
                xs.append(c + (b - (len(bars) - 1) / 2) * w)
                ys.append(y)
                es.append(e)
                top = max(top, y + (e if np.isfinite(e) else 0))
            es = np.array(es)
            h = ax.bar(xs, ys, w * 0.95, yerr=np.where(np.isfinite(es), es, 0) if np.any(np.isfinite(es)) else None,
                       capsize=2, color=variant_color(v), edgecolor="k", lw=0.5,
                       hatch="//" if part == "unintended" else None, alpha=1.0 if part == "intended" else 0.55)
            handles.setdefault(f"{v}: {part}", h)
        for c, (N, kd) in enumerate(cats):
            for b, v in enumerate(variants):
                ser = tp.get((s, v, k, kd, "tpp"))
                if ser is None or N not in ser.x:
                    continue
                y, e, _ = ser.at(N)
                x = c + (2 * b + 0.5 - (len(bars) - 1) / 2) * w
                ax.annotate(f"TPP =\n{y:.3f}" + (f"\n±{e:.3f}" if np.isfinite(e) else ""), (x, top),
                            xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.set_ylim(min(0, ax.get_ylim()[0]), top * 1.35 + 1e-3)
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels([f"{kind_label[kd]}\nN = {N}" for N, kd in cats])
        ax.grid(False, axis="x")
        ax.axhline(0, color="0.3", lw=0.8)
        sname = set_name(names, s) if names is not None else f"set {s}"
        ax.set_title(f"k = {k}; set {sname} (probes at its last layer)")
        ax.set_xlabel("ablation budget: N latents in all (global: top N over all layers; per-layer joint: "
                      "N / M per layer)", fontsize=8)
    axs[0].set_ylabel("probe accuracy drop\n(intended: the targeted class;\nunintended: the other classes)")
    lax.legend(list(handles.values()), list(handles), loc="center", ncol=4, fontsize=8, frameon=False)
    sf.suptitle("(b) Targeted probe perturbation: ablate the N latents with the largest effect on a class's probe; "
                "TPP = intended − unintended drop", fontsize=10)
    return axs


def fig4(r):
    d = fig4_data(r)
    if d["probing"] is None:
        note(f"{r.path} has no /probing/probing (eval.probing.enabled was false): fig. 4 has no sparse-probing part")
    if d["tpp"] is None:
        note(f"{r.path} has no /tpp/tpp (eval.tpp.enabled was false): fig. 4 has no TPP part")
    if d["probing"] is None and d["tpp"] is None:
        note("fig. 4 not drawn: neither /probing nor /tpp is in the file")
        return None, d
    p = plt()
    parts = [x for x in ("probing", "tpp") if d[x] is not None]
    heights = {"probing": 2.7 * max(1, len({(q[0], q[3]) for q in d["probing"] if q[1] == "sae"})) + 1.4
               if d["probing"] else 0, "tpp": 4.4}
    fig = p.figure(figsize=(13.5, sum(heights[x] for x in parts) + 0.6), layout="constrained")
    sfs = fig.subfigures(len(parts), 1, height_ratios=[heights[x] for x in parts], squeeze=False).ravel()
    for sf, x in zip(sfs, parts):
        (_probing_panels if x == "probing" else _tpp_panels)(sf, d[x], r)
    seeds = set()
    for x in parts:
        seeds |= {int(s.n.max()) for s in d[x].values()}
    figure_title(fig, f"Fig. 4. Sparse probing and targeted probe perturbation, raw vs residualized SAEs "
                 f"({seeds_text(max(seeds))})")
    return fig, d


def fig5(r):
    d = fig5_data(r)
    p = plt()
    n = n_seeds(r)
    keys = [q for q in d if isinstance(q, tuple)]
    ks = ordered([q for q in keys if q[0] == "redundancy"], 2)
    variants = ordered([q for q in keys if q[0] == "redundancy"], 1)
    ce = r.table("eval/ce")
    for s, why in d["left_out"]:
        note(f"fig. 5: set {set_name(ce, s)} left out of the dCE trend ({why})")
    fig = p.figure(figsize=(max(6.5, 4.6 * len(ks)), 5.2), layout="constrained")
    axs, lax = grid(fig, 1, len(ks), sharey="row", legend_h=0.18)
    axs = axs[0]
    twins = []
    handles = {}
    for ax, k in zip(axs, ks):
        tw = ax.twinx()
        twins.append(tw)
        xs = set()
        for iv, v in enumerate(variants):
            s = d.get(("redundancy", v, k))
            if s is not None:
                h = draw(ax, shift(s.x, 3 * iv, 3 * len(variants), 0.04, n > 1), s, color=variant_color(v),
                         marker="o", lw=1.8)
                handles.setdefault(f"{v}: redundancy (left axis)", h)
                xs |= set(s.x)
            for im, (mode, ls, mk) in enumerate((("tf", "--", "s"), ("so", ":", "^"))):
                s = d.get(("dce", mode, v, k))
                if s is not None:
                    h = draw(tw, shift(s.x, 3 * iv + 1 + im, 3 * len(variants), 0.04, n > 1), s, color=variant_color(v), marker=mk, ls=ls, lw=1.4, mfc="white")
                    handles.setdefault(f"{v}: dCE {mode.upper()} (right axis)", h)
                    xs |= set(s.x)
        int_ticks(ax, xs)
        ax.set_title(f"k = {k} active latents")
        ax.set_xlabel("layer gap")
        tw.grid(False)
        if ax is axs[0]:
            ax.set_ylabel("decoder redundancy\n(mean max cos between the two layers' decoder rows)")
    lo = min(t.get_ylim()[0] for t in twins)
    hi = max(t.get_ylim()[1] for t in twins)
    for t in twins:
        t.set_ylim(min(0, lo), hi)
    twins[-1].set_ylabel(DCE + "\nof the joint splices (TF, SO)")
    # legend rows: one per variant (matplotlib fills columns first)
    what = lambda x: 0 if "redundancy" in x else 1 if "TF" in x else 2  # noqa: E731
    lab = sorted(handles, key=lambda x: (what(x), not x.startswith("raw"), x))
    lax.legend([handles[x] for x in lab], lab, loc="center", ncol=3, frameon=False)
    sets = ", ".join(f"{set_name(ce, s)} (gap {g})" for s, g in sorted(d["sets"].items(), key=lambda q: q[1]))
    left = " (not " + ", ".join(f"{set_name(ce, s)}: {why}" for s, why in d["left_out"]) + ")" \
        if d["left_out"] else ""
    figure_title(fig, "Fig. 5. Layer-gap trends, raw vs residualized SAEs: decoder redundancy (solid, left axis; every "
                 "distinct SAE pair at that gap)\nand the CE cost of splicing all of a set's layers jointly (right "
                 "axis; dashed: teacher-forced TF, dotted: sequential-online SO)\n"
                 f"dCE from the sets {sets}{left}; {seeds_text(n)}")
    return fig, d


FIGS = (fig1, fig2, fig3, fig4, fig5)


def write_figures(r, out, formats=("png", "pdf")):
    """Draw every figure and write it in each format into out; return the paths written."""
    require_eval(r)
    os.makedirs(out, exist_ok=True)
    written = []
    for name, fn in zip(NAMES, FIGS):
        fig, _ = fn(r)
        if fig is None:
            continue
        for fmt in formats:
            path = os.path.join(out, f"{name}.{fmt}")
            fig.savefig(path)
            written.append(path)
            print(path, flush=True)
        plt().close(fig)
    return written


def main(argv):
    ap = argparse.ArgumentParser(prog="figures.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", metavar="RUN_DIR", help="a run directory or its results.h5")
    ap.add_argument("--out", metavar="DIR", help="output directory (default RUN_DIR/figures)")
    ap.add_argument("--format", default="png,pdf", help="comma-separated formats: png, pdf, svg (default png,pdf)")
    a = ap.parse_args(argv[1:])
    formats = [f.strip().lower() for f in a.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        ap.error(f"--format {a.format}: formats are {', '.join(FORMATS)}")
    path = resae_store.results_path(a.run)
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(path)), "figures")
    try:
        with resae_store.open_results(path) as r:
            require_eval(r)
            write_figures(r, out, formats)
    except resae_store.StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
