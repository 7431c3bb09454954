#!/usr/bin/env python3
"""Tests of analysis/resae_store.py and the scripts built on it, on tiny synthetic files.

usage: /usr/bin/python3 tests/analysis/test_resae_store.py [SRC_DIR]   (ctest analysis_resae_store)

Writes the same results in results layout 1 (the annotated `table_columns` of the first version) and
layout 2 (`columns` and `enum:C` on every table) into a temporary directory and checks: the reader
gives both the same columns and enum names, taken from the file; its errors name the file and the
missing object or attribute; report.py prints the same tables for both; compare_results.py finds
them identical and finds a changed value; store_info.py verifies and compares a small activation
store. Prints "resae_store: N checks ok" when everything passes, exit status 1 otherwise."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "analysis"))
import resae_store  # noqa: E402

PY = sys.executable
N_CHECKS, FAILED = 0, []


def check(cond, what):
    global N_CHECKS
    N_CHECKS += 1
    if not cond:
        FAILED.append(what)
        print("FAIL:", what)


def raises(fn, *patterns):
    """fn() raises StoreError whose message contains every pattern; return the message."""
    try:
        fn()
    except resae_store.StoreError as e:
        msg = str(e)
        for p in patterns:
            check(p in msg, f"error message '{msg}' lacks '{p}'")
        return msg
    check(False, f"no StoreError (expected one naming {patterns})")
    return ""


# ------------------------------------------------------------------------------------------------
# synthetic results
# ------------------------------------------------------------------------------------------------

AFF_COLS = "layer_a,layer_b,gap,lambda_rel,lambda_used,retries,r2,s,n_tokens_calib,n_tokens_eval,solve_resid,seconds"
SAE_COLS = "layer,pred,k,seed,fvu,auxk,l0,dead_frac,tokens,steps,seconds,tokens_per_s,scale"
KEY_COLS = "set,variant,k,seed"
RECON_COLS = ("layer,pred,scale,l0,dead_frac,mse,ev_target,ev_orig_onestep,ev_orig_chain,n_tokens,dead_frac_train,"
              "ev_orig_closed")
RED_COLS = "layer_a,layer_b,gap,mean_max_cos,mean_max_abs_cos,n_rows"
CE_COLS = "mode,layer,ce,dce,kl,recovered_zero,recovered_mean,overinteraction,n_tokens"
VARIANTS = ("raw", "resae")
MODES = ("clean", "single", "tf", "so", "zero", "mean")
SETS = ("all", "even")
LAYERS, KS, D = (0, 1, 2), (2, 4), 4


def tables():
    """The numbers of a tiny run: 3 layers, k in {2, 4}, sets 'all' (0, 1, 2) and 'even' (0, 2)."""
    rng = np.random.default_rng(7)
    aff = []
    for a in LAYERS:
        for b in LAYERS:
            if a < b:
                aff.append([a, b, b - a, 1e-4, 0.5, 0, 0.99 - 0.05 * (b - a), 2.0 / (b - a), 100, 50, 1e-3, 0.01])
    sae = []
    for v in (0, 1):
        for layer in LAYERS:
            for pred in ([-1] if v == 0 else [p for p in LAYERS if p < layer]):
                for k in KS:
                    sae.append([v, layer, pred, k, 0, 0.5 - 0.05 * k + 0.01 * layer, 0.1, k, 0.0, 1000, 10, 0.5,
                                2000, 1.5])
    recon, red, ce = [], [], []
    for s, layers in enumerate((LAYERS, LAYERS[::2])):
        for v in (0, 1):
            for k in KS:
                key = [s, v, k, 0]
                for i, layer in enumerate(layers):
                    # the first layer's reconstruction is the same for raw and resae
                    ev = 0.9 - 0.02 * k if i == 0 or v == 0 else 0.8 - 0.1 * i
                    recon.append(key + [layer, -1 if i == 0 or v == 0 else layers[i - 1], 1.5, k, 0.0, 0.1, ev,
                                        ev, ev - 0.1 * v * i, 50, 0.0, ev - 0.05 * v * i])
                for i, a in enumerate(layers):
                    for b in layers[i + 1:]:
                        c = 0.3 + 0.01 * rng.random()
                        red.append(key + [a, b, b - a, c, c + 0.01, 16])
                ce.append(key + [0, -1, 3.0, 0.0, 0.0, np.nan, np.nan, np.nan, 60])
                for layer in layers:
                    ce.append(key + [1, layer, 3.1, 0.1, 0.05, 0.9, 0.8, np.nan, 60])
                for m in (2, 3):
                    ce.append(key + [m, -1, 3.5, 0.5, 0.2, 0.5, 0.4, 0.2, 60])
                for m in (4, 5):
                    ce.append(key + [m, -1, 4.0, 1.0, 0.5, np.nan, np.nan, np.nan, 60])
    return {"affine": np.array(aff, float), "sae": np.array(sae, float), "recon": np.array(recon, float),
            "redundancy": np.array(red, float), "ce": np.array(ce, float)}


def sattr(obj, name, value):
    """A fixed-length ASCII string attribute, as the C side writes them (rs_h5_attr_str)."""
    obj.attrs[name] = np.bytes_(value.encode())


def write_results(path, layout, t, variant_names=VARIANTS):
    """Write the tables t as results layout 1 or 2."""
    var1 = ";".join(f"{i}={n}" for i, n in enumerate(variant_names))
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = np.int64(1)
        sattr(f, "resae_version", "0.1.0")
        sattr(f, "config_hash", "0123456789abcdef")
        f.attrs["n_ranks"] = np.int64(1)
        if layout == 2:
            f.attrs["results_layout"] = np.int64(2)
        f["config_yaml"] = np.bytes_(b"run_dir: synthetic\nseed: 0\n")
        ga, gs, ge = f.create_group("affine"), f.create_group("sae"), f.create_group("eval")
        ga["table"] = t["affine"]
        gs["table"] = t["sae"]
        for row in t["affine"]:
            g = ga.create_group("L%d_L%d" % (row[0], row[1]))
            g["A"], g["c"] = np.eye(D), np.zeros(D)
        for i, row in enumerate(t["sae"]):
            g = gs.create_group(f"sae{i}")
            cols = SAE_COLS.split(",")
            for c, v in zip(cols, row[len(row) - len(cols):]):
                g.attrs[c] = v
            w = np.ones((8, D), np.float32) / np.sqrt(D)
            g["W_dec"], g["W_enc"] = w, w
            g["b_enc"], g["b_dec"] = np.zeros(8, np.float32), np.zeros(D, np.float32)
        for name in ("recon", "redundancy", "ce"):
            ge[name] = t[name]
        sattr(ge, "set_names", ",".join(SETS))
        if layout == 1:
            sattr(ga, "table_columns", AFF_COLS)
            sattr(gs, "table_columns", f"kind({var1})," + SAE_COLS)
            for name, cols in (("recon", RECON_COLS), ("redundancy", RED_COLS), ("ce", CE_COLS)):
                sattr(ge[name], "columns", f"set,variant({var1}),k,seed," + cols)
            sattr(ge, "ce_modes", ",".join(f"{i}={n}" for i, n in enumerate(MODES)))
        else:
            sattr(ga["table"], "columns", AFF_COLS)
            sattr(gs["table"], "columns", "variant," + SAE_COLS)
            sattr(gs["table"], "enum:variant", ",".join(variant_names))
            for name, cols in (("recon", RECON_COLS), ("redundancy", RED_COLS), ("ce", CE_COLS)):
                sattr(ge[name], "columns", KEY_COLS + "," + cols)
                sattr(ge[name], "enum:variant", ",".join(variant_names))
            sattr(ge["ce"], "enum:mode", ",".join(MODES))


def edit(src, dst, fn):
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        fn(f)
    return dst


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------

def test_reader(l1, l2):
    want_cols = {"affine": AFF_COLS.split(","), "sae": ["variant"] + SAE_COLS.split(","),
                 "eval/recon": (KEY_COLS + "," + RECON_COLS).split(","),
                 "eval/redundancy": (KEY_COLS + "," + RED_COLS).split(","),
                 "eval/ce": (KEY_COLS + "," + CE_COLS).split(",")}
    for path, layout in ((l1, 1), (l2, 2)):
        with resae_store.open_results(path) as r:
            check(r.layout == layout and r.schema_version == 1, f"{path}: layout {r.layout}, schema {r.schema_version}")
            check(r.eval_tables() == ["ce", "recon", "redundancy"], f"layout {layout}: eval tables {r.eval_tables()}")
            check(sorted(r.tables()) == ["affine/table", "eval/ce", "eval/recon", "eval/redundancy", "sae/table"],
                  f"layout {layout}: tables {r.tables()}")
            check(r.config_yaml().startswith("run_dir: synthetic"), f"layout {layout}: config text")
            check(r.attr("", "config_hash") == "0123456789abcdef", f"layout {layout}: root attribute as str")
            for name, cols in want_cols.items():
                t = r.table(name)
                check(t.columns == cols, f"layout {layout} {name}: columns {t.columns}")
                check(t.array.shape[1] == len(cols), f"layout {layout} {name}: shape {t.array.shape}")
                check(t.names("variant") == list(VARIANTS) if "variant" in cols else "variant" not in t.enums,
                      f"layout {layout} {name}: variant names {t.enums.get('variant')}")
            sae = r.table("sae")
            check(sae.labels("variant")[0] == "raw" and sae.labels("variant")[-1] == "resae",
                  f"layout {layout}: sae labels")
            check(np.array_equal(sae.col("variant"), sae.dict()["variant"]), f"layout {layout}: col vs dict")
            ce = r.table("eval/ce")
            check(ce.names("mode") == list(MODES), f"layout {layout}: CE mode names {ce.enums.get('mode')}")
            check(ce.code("mode", "clean") == 0 and ce.code("mode", "so") == 3, f"layout {layout}: mode codes")
            check(ce.name("mode", 2.0) == "tf", f"layout {layout}: name of mode 2")
            check(ce.names("set") == list(SETS), f"layout {layout}: set names {ce.enums.get('set')}")
            raises(lambda: ce.col("nonexistent"), path, "/eval/ce", "no column 'nonexistent'")
            raises(lambda: ce.names("dce"), "/eval/ce", "'dce' has no enum names", "enum:dce")
            raises(lambda: ce.code("mode", "bogus"), "no value named 'bogus'")
            raises(lambda: ce.name("mode", 17), "holds 17")
            raises(lambda: r.table("eval/missing"), path, "no dataset /eval/missing")
            raises(lambda: r.attr("eval", "nope"), path, "/eval has no attribute `nope`")
            with resae_store.open_results(os.path.dirname(path)) as rd:
                check(rd.path == os.path.join(os.path.dirname(path), "results.h5"), "a run directory opens results.h5")


def test_names_from_file(d, t):
    """Enum names come from the file, in both layouts, never from the reader."""
    for layout in (1, 2):
        p = os.path.join(d, f"renamed{layout}.h5")
        write_results(p, layout, t, variant_names=("plain", "residual"))
        with resae_store.open_results(p) as r:
            for name in ("sae", "eval/recon", "eval/ce"):
                got = r.table(name).names("variant")
                check(got == ["plain", "residual"], f"layout {layout} {name}: names {got} not the file's")
    p = edit(os.path.join(d, "l1", "results.h5"), os.path.join(d, "modes1.h5"),
             lambda f: sattr(f["eval"], "ce_modes", "0=c,1=s,2=t,3=o,4=z,5=m"))
    with resae_store.open_results(p) as r:
        check(r.table("eval/ce").names("mode") == list("cstozm"), "layout 1: CE modes from the /eval attribute")


def test_errors(d, l1, l2):
    def drop(path, attr):
        return lambda f: f[path].attrs.__delitem__(attr)
    p = edit(l2, os.path.join(d, "nocolumns.h5"), drop("sae/table", "columns"))
    with resae_store.open_results(p) as r:
        raises(lambda: r.table("sae"), p, "/sae/table", "`columns`", "layout 2")
    p = edit(l1, os.path.join(d, "nocolumns1.h5"), drop("sae", "table_columns"))
    with resae_store.open_results(p) as r:
        raises(lambda: r.table("sae"), p, "/sae/table", "`columns`", "table_columns")
    p = edit(l2, os.path.join(d, "noenum.h5"), drop("eval/ce", "enum:mode"))
    with resae_store.open_results(p) as r:
        raises(lambda: r.table("eval/ce").names("mode"), p, "/eval/ce", "enum:mode")
    p = edit(l2, os.path.join(d, "nocfg.h5"), lambda f: f.__delitem__("config_yaml"))
    with resae_store.open_results(p) as r:
        raises(r.config_yaml, p, "no dataset /config_yaml")
    p = edit(l2, os.path.join(d, "shortcols.h5"), lambda f: sattr(f["affine/table"], "columns", "layer_a,layer_b"))
    with resae_store.open_results(p) as r:
        raises(lambda: r.table("affine"), p, "/affine/table has 12 columns", "names 2")
    p = edit(l2, os.path.join(d, "schema99.h5"), lambda f: f.attrs.__setitem__("schema_version", 99))
    raises(lambda: resae_store.open_results(p), p, "schema version 99")
    p = edit(l2, os.path.join(d, "layout3.h5"), lambda f: f.attrs.__setitem__("results_layout", 3))
    raises(lambda: resae_store.open_results(p), p, "results_layout 3")
    p = edit(l2, os.path.join(d, "noschema.h5"), drop("/", "schema_version"))
    raises(lambda: resae_store.open_results(p), p, "`schema_version`")
    raises(lambda: resae_store.open_results(os.path.join(d, "absent")), "absent/results.h5 not found")
    with open(os.path.join(d, "text.h5"), "w") as f:
        f.write("not hdf5\n")
    raises(lambda: resae_store.open_results(os.path.join(d, "text.h5")), "text.h5: cannot open as HDF5")


def write_store(path, model_path="model"):
    """A tiny complete activation store: 2 layers, d 3, 2 tokens per sequence, batches of 2 sequences."""
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        sattr(f, "kind", "resae-activations")
        f.attrs["schema_version"] = np.int32(1)
        sattr(f, "resae_version", "0.1.0")
        sattr(f, "model_path", model_path)
        f.attrs["model_hash"] = np.uint64(11)
        sattr(f, "data_path", "tokens.h5")
        f.attrs["data_hash"] = np.uint64(12)
        f.attrs["n_seq_data"] = np.int64(12)
        for k, v in (("seq_len", 3), ("skip_pos0", 1), ("tokens_per_seq", 2), ("d", 3), ("batch_seqs", 2),
                     ("chunk_rows", 4)):
            f.attrs[k] = np.int32(v)
        f.attrs["split_seed"] = np.uint64(5)
        for s in resae_store.SPLITS:
            f.attrs["budget_" + s] = np.int64(8)
        f.attrs["layers"] = np.array([-1, 0], np.int32)
        sattr(f, "dtype", "float32")
        f["complete"] = np.int32(1)
        for i, s in enumerate(resae_store.SPLITS):
            g = f.create_group(s)
            n_seq = 4
            g.attrs["n_seq"], g.attrs["n_rows"], g.attrs["n_batches"] = np.int64(n_seq), np.int64(8), np.int64(2)
            g["seq_ids"] = np.arange(i, 12, 3, dtype=np.int32)
            for layer in (-1, 0):
                x = rng.standard_normal((8, 3)).astype(np.float32)
                x64 = x.astype(np.float64)
                name = resae_store.layer_name(layer)
                g[name] = x
                g[name + "_bsum"] = np.stack([x64[:4].sum(0), x64[4:].sum(0)])
                g[name + "_bsqnorm"] = np.array([(x64[:4] ** 2).sum(), (x64[4:] ** 2).sum()])
                g[name + "_mean"] = x64.mean(0)
                g[name + "_sqnorm"] = np.float64((x64 * x64).sum(1).mean())


def run(*args):
    p = subprocess.run([PY, *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def test_store(d, l2):
    a, b, c = (os.path.join(d, n) for n in ("act_a.h5", "act_b.h5", "act_c.h5"))
    write_store(a)
    write_store(b, model_path="elsewhere/model")  # provenance only: the same store
    edit(a, c, lambda f: f.attrs.__setitem__("split_seed", np.uint64(6)))
    with resae_store.open_activations(a) as st:
        ident = st.identity()
        check("model_path" not in ident and "model_hash" in ident and "split_seed" in ident,
              f"store identity {sorted(ident)}")
    raises(lambda: resae_store.open_activations(l2), l2, "not a resae activation store")
    raises(lambda: resae_store.open_results(a), a, "an activation store, not a results file")
    info = os.path.join(SRC, "analysis", "store_info.py")
    rc, out, err = run(info, a, "--verify", "--compare", b)
    check(rc == 0 and out.rstrip().endswith("store check: ok"), f"store_info --verify --compare: {rc} {out}{err}")
    check("Lemb" in out and "schema 1" in out, f"store_info summary: {out}")
    rc, out, err = run(info, a, "--compare", c)
    check(rc == 1 and "MISMATCH: attribute split_seed differs" in out, f"store_info --compare a changed store: {out}")
    rc, out, err = run(info, l2)
    check(rc == 1 and "not a resae activation store" in err, f"store_info on a results file: {rc} {err}")


def test_scripts(d, l1, l2):
    report = os.path.join(SRC, "analysis", "report.py")
    outs = []
    for p in (l1, l2):
        rc, out, err = run(report, os.path.dirname(p), "--no-figures")
        check(rc == 0, f"report.py {p}: exit {rc}: {err}")
        outs.append(out.split("\n", 1))
    check(outs[0][1] == outs[1][1], "report.py prints different tables for layouts 1 and 2")
    body = outs[0][1]
    for want in ("raw                       2", "resae(gap 1)", "resae(gap 2)", "  raw    k=2    L0 ",
                 "  resae  k=4    gap 2 ", "  resae  k=4    so      dCE", "mean R^2 by layer gap:"):
        check(want in body, f"report.py output lacks '{want}'")
    check(not re.search(r"^ +\S+ +k=\S+ +(clean|zero|mean) ", body, re.M), "report.py lists non-splice CE rows")
    check(os.path.exists(os.path.dirname(l1)) and not os.path.exists(os.path.join(os.path.dirname(l1), "figures")),
          "--no-figures wrote figures")
    rc, out, err = run(report, os.path.join(d, "absent"))
    check(rc == 1 and "not found (has `resae run` finished a stage yet?)" in err, f"report.py on a missing run: {err}")

    # the ridge-strength table: one file per lambda_rel, rows sorted by lambda, R^2 and EVs from each file
    study = os.path.join(SRC, "analysis", "lambda_study.py")

    def relambda(lam, r2, ev):
        def fn(f):
            t = f["affine/table"][()]
            t[:, 3], t[:, 6] = lam, r2
            f["affine/table"][...] = t
            r = f["eval/recon"][()]
            r[r[:, 1] == 1, 12] = ev  # resae ev_orig_chain
            f["eval/recon"][...] = r
        return fn
    pa = edit(l2, os.path.join(d, "lam_a.h5"), relambda(0.1, 0.5, -1.25))
    pb = edit(l2, os.path.join(d, "lam_b.h5"), relambda(1e-4, 0.875, 0.625))
    rc, out, err = run(study, pa, pb)
    check(rc == 0, f"lambda_study.py: exit {rc}: {err}")
    rows = re.findall(r"^ +(\S+) +0\.\d+ .*$", out.split("resae EVs")[0], re.M)
    check(rows == ["0.0001", "0.1"], f"lambda_study.py R^2 rows {rows}, expected 0.0001 then 0.1: {out}")
    check(re.search(r"^ +0\.0001 +0\.8750 ", out, re.M) and re.search(r"^ +0\.1 +0\.5000 ", out, re.M),
          f"lambda_study.py R^2 values: {out}")
    check(" 0.6250 " in out and " -1.2500 " in out, f"lambda_study.py chain EVs: {out}")
    rc, out, err = run(study, l2, l2)
    check(rc == 0 and out.count("lambda_rel   0.0001:") >= 2, f"lambda_study.py on one lambda twice: {out}{err}")
    bad = edit(l2, os.path.join(d, "lam_mixed.h5"), lambda f: f["affine/table"].__setitem__((0, 3), 0.5))
    rc, out, err = run(study, bad)
    check(rc == 1 and "one run per lambda expected" in err, f"lambda_study.py on mixed lambdas: {rc} {err}")

    cmp = os.path.join(SRC, "tests", "run", "compare_results.py")
    rc, out, err = run(cmp, l1, l2)
    check(rc == 0 and out.rstrip().endswith("results check: ok"), f"compare_results layout 1 vs 2: {out}{err}")
    t = tables()
    n = 1 + 2 * len(t["affine"]) + 1 + 4 * len(t["sae"]) + 3
    check(f"compared {n} datasets of {l1} and {l2}" in out, f"compare_results does not count {n} datasets: {out}")
    rc, out, err = run(cmp, l2, l1, "--tol", "1e-6")
    check(rc == 0, f"compare_results layout 2 vs 1 --tol: {out}{err}")

    def bump(f, col, delta):
        t = f["sae/table"][()]
        t[2, col] += delta
        f["sae/table"][...] = t
    p = edit(l2, os.path.join(d, "fvu.h5"), lambda f: bump(f, 5, 1e-9))
    rc, out, err = run(cmp, l1, p)
    check(rc == 1 and "FAIL: sae/table: differs" in out, f"compare_results misses a changed FVU: {out}")
    p = edit(l2, os.path.join(d, "seconds.h5"), lambda f: bump(f, 11, 1.0))
    rc, out, err = run(cmp, l1, p)
    check(rc == 0, f"compare_results compares the timing column: {out}")
    p = edit(l2, os.path.join(d, "modes.h5"),
             lambda f: sattr(f["eval/ce"], "enum:mode", "clean,single,so,tf,zero,mean"))
    rc, out, err = run(cmp, l1, p)
    check(rc == 1 and "FAIL: eval/ce: names of column mode" in out, f"compare_results misses renamed modes: {out}")
    p = edit(l2, os.path.join(d, "bad_r2.h5"), lambda f: f["affine/table"].__setitem__((0, 6), 1.5))
    rc, out, err = run(cmp, p)
    check(rc == 1 and "FAIL: affine R^2 out of (0, 1]" in out, f"compare_results check of one file: {out}")
    p = edit(l2, os.path.join(d, "nocols.h5"), lambda f: f["eval/recon"].attrs.__delitem__("columns"))
    rc, out, err = run(cmp, p)
    check(rc == 1 and "FAIL: " + p + ": no attribute `columns` on /eval/recon" in out, f"compare_results: {out}")


def test_schema_version():
    """The reader knows the schema version the C side writes (include/resae/version.h)."""
    with open(os.path.join(SRC, "include", "resae", "version.h")) as f:
        m = re.search(r"#define\s+RESAE_SCHEMA_VERSION\s+(\d+)", f.read())
    check(m is not None, "include/resae/version.h defines no RESAE_SCHEMA_VERSION")
    if m:
        v = int(m.group(1))
        check(v in resae_store.SCHEMA_VERSIONS,
              f"RESAE_SCHEMA_VERSION is {v}; analysis/resae_store.py reads {resae_store.SCHEMA_VERSIONS}: update it")


def main():
    d = tempfile.mkdtemp(prefix="resae_store_test.")
    try:
        t = tables()
        l1, l2 = os.path.join(d, "l1", "results.h5"), os.path.join(d, "l2", "results.h5")
        for p, layout in ((l1, 1), (l2, 2)):
            os.makedirs(os.path.dirname(p))
            write_results(p, layout, t)
        test_schema_version()
        test_reader(l1, l2)
        test_names_from_file(d, t)
        test_errors(d, l1, l2)
        test_store(d, l2)
        test_scripts(d, l1, l2)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if FAILED:
        print(f"resae_store: {len(FAILED)} of {N_CHECKS} checks FAILED")
        return 1
    print(f"resae_store: {N_CHECKS} checks ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
