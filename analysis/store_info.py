#!/usr/bin/env python3
"""Summarize (and optionally verify or compare) a resae activation store.

usage: /usr/bin/python3 analysis/store_info.py RUN_DIR|activations.h5 [--verify] [--compare OTHER] [--json]

  --verify   recompute every dataset's mean and E||h||^2 from its rows in float64 and compare with
             the stored statistics (relative 1e-10); check shapes, dtypes and the completion flag
  --compare  require OTHER to hold bitwise identical rows and statistics and the same identity (every
             root attribute but the provenance ones: resae_store.PROVENANCE_ATTRS)
  --json     print the summary as JSON

Layout: docs/store.md; the store is opened (kind and schema version checked) by analysis/resae_store.py.
Exit status 1 on any failed check, or when a store cannot be opened (the message says why).
"""
import json
import sys

import numpy as np

from resae_store import SPLITS, StoreError, layer_name, open_activations, text


def summarize(f):
    a = f.attrs
    out = {k: (text(a[k]) if isinstance(a[k], bytes) else a[k].tolist()) for k in a}
    out["complete"] = int(f["complete"][()])
    out["splits"] = {}
    for s in SPLITS:
        g = f[s]
        sd = {"n_seq": int(g.attrs["n_seq"]), "n_rows": int(g.attrs["n_rows"]), "n_batches": int(g.attrs["n_batches"]),
              "layers": {}}
        for layer in a["layers"]:
            name = layer_name(int(layer))
            ds = g[name]
            sd["layers"][name] = {"shape": list(ds.shape), "dtype": str(ds.dtype), "chunks": list(ds.chunks or ()),
                                  "mean_norm": float(np.linalg.norm(g[name + "_mean"][()])),
                                  "mean_sqnorm": float(g[name + "_sqnorm"][()])}
        out["splits"][s] = sd
    return out


def verify(f):
    errors = []
    a = f.attrs
    d = int(a["d"])
    tps = int(a["seq_len"]) - int(a["skip_pos0"])
    want_dtype = np.float16 if text(a["dtype"]) == "float16" else np.float32
    if int(f["complete"][()]) != 1:
        errors.append("store is not complete")
    for s in SPLITS:
        g = f[s]
        n_seq = int(g.attrs["n_seq"])
        if g["seq_ids"].shape != (n_seq,) or np.any(np.diff(g["seq_ids"][()]) <= 0):
            errors.append("/%s/seq_ids: wrong shape or not ascending" % s)
        for layer in a["layers"]:
            name = layer_name(int(layer))
            ds = g[name]
            if ds.shape != (n_seq * tps, d):
                errors.append("/%s/%s: shape %s, expected %s" % (s, name, ds.shape, (n_seq * tps, d)))
                continue
            if ds.dtype != want_dtype:
                errors.append("/%s/%s: dtype %s, expected %s" % (s, name, ds.dtype, np.dtype(want_dtype)))
            x = ds[()].astype(np.float64)
            if x.shape[0] == 0:
                continue
            if not np.all(np.isfinite(x)):
                errors.append("/%s/%s: non-finite values" % (s, name))
            mean = x.mean(axis=0)
            sq = float((x * x).sum(axis=1).mean())
            m_st = g[name + "_mean"][()]
            q_st = float(g[name + "_sqnorm"][()])
            if not np.allclose(m_st, mean, rtol=1e-10, atol=1e-10 * (np.abs(mean).max() + 1)):
                errors.append("/%s/%s_mean differs from the rows (max |diff| %.3g)" % (s, name, np.abs(m_st - mean).max()))
            if abs(q_st - sq) > 1e-10 * sq:
                errors.append("/%s/%s_sqnorm %.17g, rows give %.17g" % (s, name, q_st, sq))
            bs = g[name + "_bsum"][()]
            if not np.allclose(bs.sum(axis=0), x.sum(axis=0), rtol=1e-10, atol=1e-8):
                errors.append("/%s/%s_bsum does not add up to the rows" % (s, name))
    return errors


def compare(st, other):
    errors = []
    a, b = st.identity(), other.identity()
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            errors.append("attribute %s only in %s" % (k, (st if k in a else other).path))
        elif not np.array_equal(np.asarray(a[k]), np.asarray(b[k])):
            errors.append("attribute %s differs: %r vs %r" % (k, a[k], b[k]))
    f, g = st.h5, other.h5
    for s in SPLITS:
        for key in sorted(set(f[s]) ^ set(g[s])):
            errors.append("/%s/%s only in %s" % (s, key, st.path if key in f[s] else other.path))
        for key in f[s]:
            if key not in g[s]:
                continue
            x, y = f[s][key][()], g[s][key][()]
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                errors.append("/%s/%s differs" % (s, key))
    if int(f["complete"][()]) != int(g["complete"][()]):
        errors.append("/complete differs")
    return errors


def main(argv):
    args = [x for x in argv[1:] if not x.startswith("--")]
    if not args or "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0 if args else 2
    try:
        with open_activations(args[0]) as st:
            return show(st, argv)
    except StoreError as e:
        print(e, file=sys.stderr)
        return 1


def show(st, argv):
    """Print the summary and run the checks argv asks for; return the exit status."""
    f = st.h5
    info = summarize(f)
    if "--json" in argv:
        print(json.dumps(info, indent=1, default=str))
    else:
        print("%s: schema %s, model %s (hash %016x), tokens %s (hash %016x)" % (
            f.filename, info["schema_version"], info["model_path"], info["model_hash"] & (2**64 - 1),
            info["data_path"], info["data_hash"] & (2**64 - 1)))
        print("  seq_len %d, skip_pos0 %d, layers %s, d %d, %s, batch %d seqs, chunk %d rows, complete %d" % (
            info["seq_len"], info["skip_pos0"], info["layers"], info["d"], info["dtype"], info["batch_seqs"],
            info["chunk_rows"], info["complete"]))
        for s, sd in info["splits"].items():
            print("  %-5s %6d seqs %9d rows %5d batches" % (s, sd["n_seq"], sd["n_rows"], sd["n_batches"]))
            for name, ld in sd["layers"].items():
                print("    %-5s %-14s %-8s |mean| %.4g  E||h||^2 %.6g" % (
                    name, "x".join(map(str, ld["shape"])), ld["dtype"], ld["mean_norm"], ld["mean_sqnorm"]))
    errors = []
    if "--verify" in argv:
        errors += verify(f)
    if "--compare" in argv:
        with open_activations(argv[argv.index("--compare") + 1]) as other:
            errors += compare(st, other)
    for e in errors:
        print("MISMATCH: " + e)
    if "--verify" in argv or "--compare" in argv:
        print("store check: %s" % ("FAILED" if errors else "ok"))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
