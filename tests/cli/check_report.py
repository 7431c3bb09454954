"""Checks `resae report` in its three formats against RUN_DIR/results.h5 read with h5py.
usage: check_report.py RESAE RUN_DIR WORK_DIR   (RUN_DIR is only read; WORK_DIR is created)

Every table is recomputed here from the file (the same rows, groupings and means as the report):
  text      the whole report, `--format text` and each `--table NAME` are byte for byte the layout of
            the report before --format existed (its printf formats, rendered here)
  csv       read with the csv module: `# table: NAME` before each table, one blank line between tables,
            the header row, every name cell equal, every number within 1e-12 relative of the file's
            (NaN: an empty field); `--table NAME` is plain CSV equal to that block and numpy.genfromtxt
            reads the same numbers from it
  markdown  `### NAME`, a one-line description, a pipe table with as many cells as columns on every
            row, `---:` for the numeric columns, every cell as text shows it; `--table NAME` that block
  optional  on a copy without /probing, /tpp and /eval/affine_only those tables are left out and
            `--table probing` exits 1
  usage     --format bogus and --table bogus exit 2 (with the usage, with the list of tables); --help
            lists every table
"""
import csv
import io
import math
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np

resae, run, work = sys.argv[1:4]
os.makedirs(work, exist_ok=True)
failures = []
n_checks = 0


def check(cond, msg):
    global n_checks
    n_checks += 1
    if not cond and len(failures) < 40:
        failures.append(msg)
    return cond


def s(x):
    return x.decode() if isinstance(x, bytes) else str(x)


# ---- the expected tables -------------------------------------------------------------------------


def f4(v):
    return "-" if math.isnan(v) else "%.4f" % v


def lay(v):
    return "-" if v < 0 else "%.0f" % v


def num(spec):
    return lambda v: ("%" + spec) % v


class Table:
    """cols: (header, csv header, formatter or None for a name column); rows: name cells are str, numbers
    float; blocks: the text layout, lists of lines."""

    def __init__(self, name, cols):
        self.name, self.cols, self.rows, self.blocks = name, cols, [], []


def build(path):
    f = h5py.File(path, "r")
    sets = s(f["eval"].attrs["set_names"]).split(",")

    def set_name(v):
        i = int(v)
        return sets[i] if 0 <= i < len(sets) and sets[i] else str(i)

    def enum(ds, col):
        e = s(ds.attrs["enum:" + col]).split(",")
        return lambda v: e[int(v)] if v == int(v) and 0 <= int(v) < len(e) else "?"

    tables = []
    rec_ds = f["eval/recon"]
    rec = rec_ds[()]
    var = enum(rec_ds, "variant")

    # recon
    t = Table("recon", [("set", "set", None), ("var", "var", None)] +
              [(n, n, num(sp)) for n, sp in [("k", ".0f"), ("seed", ".0f"), ("layer", ".0f"), ("L0", ".2f"),
                                             ("dead_ev", ".4f"), ("dead_tr", ".4f"), ("MSE", ".4g"),
                                             ("EV_target", ".4f"), ("EV_1step", ".4f"), ("EV_chain", ".4f"),
                                             ("EV_closed", ".4f")]])
    lines = ["Reconstruction on the eval split (EV: target space; original space one-step, open-loop chain and "
             "closed-loop chain)",
             "%-12s %-6s %5s %5s %6s %8s %8s %8s %10s %10s %10s %10s %10s" % tuple(c[0] for c in t.cols)]
    for q in rec:
        row = [set_name(q[0]), var(q[1])] + [float(q[j]) for j in (2, 3, 4, 7, 8, 14, 9, 10, 11, 12, 15)]
        t.rows.append(row)
        lines.append("%-12s %-6s %5.0f %5.0f %6.0f %8.2f %8.4f %8.4f %10.4g %10.4f %10.4f %10.4f %10.4f" % tuple(row))
    t.blocks.append(lines)
    tables.append(t)

    # sae_quality
    if "sae" in f:
        t = Table("sae_quality", [("SAE", "SAE", None), ("dead_train", "dead_train", num(".4f")),
                                  ("dead_eval", "dead_eval", f4), ("FVU", "FVU", num(".4f")),
                                  ("gain_last20", "gain_last20", lambda v: "-" if math.isnan(v) else "%.2f%%" % (100 * v)),
                                  ("flags", "flags", None)])
        lines = ["SAE quality (bar: eval dead fraction <= 10%, FVU gain over the last 20% of steps < 2%; gain - : "
                 "no training curve, train.curve_bins 0)",
                 "%-22s %10s %9s %8s %11s  %s" % tuple(c[0] for c in t.cols)]
        for name in sorted(k for k in f["sae"].keys() if k != "table"):
            a = f["sae"][name].attrs
            layer, pred, k, seed, dead_tr, fvu = (float(a[x]) for x in ("layer", "pred", "k", "seed", "dead_frac", "fvu"))
            gain = float(a["fvu_last20_gain"]) if "fvu_last20_gain" in a else math.nan
            m = [x[8] for x in rec if x[4] == layer and x[5] == pred and x[2] == k and x[3] == seed]
            dead = float(max(m)) if m else math.nan
            flags = ("DEAD>10% " if dead > 0.10 else "") + ("NOT-FLAT" if gain >= 0.02 else "")
            t.rows.append([name, dead_tr, dead, fvu, gain, flags])
            lines.append("%-22s %10.4f %9s %8.4f %11s  %s" % (name, dead_tr, f4(dead), fvu,
                                                               "-" if math.isnan(gain) else "%.2f%%" % (100 * gain), flags))
        t.blocks.append(lines)
        tables.append(t)

    # redundancy: distinct (variant, k, seed, a, b), then means per (variant, k, gap) in order
    red = f["eval/redundancy"][()]
    t = Table("redundancy", [("var", "var", None), ("k", "k", num(".0f")), ("gap", "gap", num(".0f")),
                             ("pairs", "pairs", num(".0f")), ("mean_max_cos", "mean_max_cos", num(".4f")),
                             ("mean_max_|cos|", "mean_max_abs_cos", num(".4f"))])
    seen, groups = set(), {}
    for q in red:
        key = tuple(q[1:6])
        if key in seen:
            continue
        seen.add(key)
        g = groups.setdefault((q[1], q[2], q[5] - q[4]), [0, 0.0, 0.0])
        g[0] += 1
        g[1] += q[7]
        g[2] += q[8]
    lines = ["Decoder redundancy by gap (mean over distinct layer pairs and seeds)",
             "%-6s %5s %5s %6s %14s %14s" % tuple(c[0] for c in t.cols)]
    for (v, k, gap), (n, c, a) in groups.items():
        row = [var(v), float(k), float(gap), float(n), c / n, a / n]
        t.rows.append(row)
        lines.append("%-6s %5.0f %5.0f %6.0f %14.4f %14.4f" % tuple(row))
    t.blocks.append(lines)
    tables.append(t)

    # ce and affine_only
    ce_cols = [("layer", "layer", lay), ("CE", "CE", num(".4f")), ("dCE", "dCE", num(".4f"))] + \
              [(n, n, f4) for n in ("KL", "rec_zero", "rec_mean", "overint")]
    ce_ds = f["eval/ce"]
    mode = enum(ce_ds, "mode")
    t = Table("ce", [("set", "set", None), ("var", "var", None), ("k", "k", num(".0f")), ("seed", "seed", num(".0f")),
                     ("mode", "mode", None)] + ce_cols)
    lines = ["CE splices on the eval split (layer -: all layers of the set; recovered = (CE_ablate - CE) / "
             "(CE_ablate - CE_clean))",
             "%-12s %-6s %5s %5s %-7s %6s %9s %9s %9s %9s %9s %9s" % tuple(c[0] for c in t.cols)]
    for q in ce_ds[()]:
        row = [set_name(q[0]), var(q[1]), float(q[2]), float(q[3]), mode(q[4])] + [float(x) for x in q[5:12]]
        t.rows.append(row)
        lines.append("%-12s %-6s %5.0f %5.0f %-7s %6s %9.4f %9.4f %9s %9s %9s %9s" %
                     tuple(row[:5] + [lay(row[5]), row[6], row[7]] + [f4(x) for x in row[8:]]))
    t.blocks.append(lines)
    tables.append(t)
    if "eval/affine_only" in f:
        ds = f["eval/affine_only"]
        t = Table("affine_only", [("set", "set", None), ("mode", "mode", None)] + ce_cols)
        lines = ["Affine-only control (no SAE: h <- A h_prev + c at l_2..l_M, l_1 clean; tf adds the clean affine "
                 "error, so writes A x_prev + c)",
                 "%-12s %-7s %6s %9s %9s %9s %9s %9s %9s" % tuple(c[0] for c in t.cols)]
        for q in ds[()]:
            row = [set_name(q[0]), enum(ds, "mode")(q[1])] + [float(x) for x in q[2:9]]
            t.rows.append(row)
            lines.append("%-12s %-7s %6s %9.4f %9.4f %9s %9s %9s %9s" %
                         tuple(row[:2] + [lay(row[2]), row[3], row[4]] + [f4(x) for x in row[5:]]))
        if t.rows:
            t.blocks.append(lines)
        tables.append(t)

    # probing: groups of rows (class_set -1) with the same set..layer, in order of their first row
    if "probing" in f:
        ds = f["probing/probing"]
        p = ds[()]
        kind = enum(ds, "kind")
        t = Table("probing", [("set", "set", None), ("var", "var", None), ("k", "k", num(".0f")),
                              ("seed", "seed", num(".0f")), ("kind", "kind", None), ("layer", "layer", lay),
                              ("K", "K", num(".0f")), ("accuracy", "accuracy", num(".4f"))])
        lines = ["Sparse probing (test accuracy, mean over classes then class sets; layer -: union of the set's "
                 "layers; model: pooled h, K = d for all dims; random: K random latents)",
                 "%-12s %-6s %5s %5s %-10s %6s  %s" % ("set", "var", "k", "seed", "kind", "layer", "K:accuracy ...")]
        order = {}
        for q in p:
            if q[7] == -1:
                order.setdefault(tuple(q[:6]), []).append(q)
        for key, members in order.items():
            line = "%-12s %-6s %5.0f %5.0f %-10s %6s " % (set_name(key[0]), "model" if key[1] < 0 else var(key[1]),
                                                         key[2], key[3], kind(key[4]), lay(key[5]))
            for q in members:
                t.rows.append([set_name(q[0]), "model" if q[1] < 0 else var(q[1]), float(q[2]), float(q[3]),
                               kind(q[4]), float(q[5]), float(q[6]), float(q[9])])
                line += " %.0f:%.4f" % (q[6], q[9])
            lines.append(line)
        t.blocks.append(lines)
        tables.append(t)

        lat = f["probing/probing_latents"][()]
        t = Table("probing_union", [("set", "set", None), ("var", "var", None), ("k", "k", num(".0f")),
                                    ("seed", "seed", num(".0f")), ("layer", "layer", num(".0f")),
                                    ("latents", "latents", num(".0f")), ("percent", "percent", lambda v: "%.0f%%" % v)])
        lines = ["Layers of the union probes' latents (largest K, all classes): set var k seed: layer share ..."]
        order = {}
        for q in lat:
            if q[4] == -1:
                layers = order.setdefault(tuple(q[:4]), {})
                layers[q[8]] = layers.get(q[8], 0) + 1
        for key, layers in order.items():
            total = sum(layers.values())
            line = "%-12s %-6s %5.0f %5.0f:" % (set_name(key[0]), var(key[1]), key[2], key[3])
            for layer, cnt in layers.items():
                t.rows.append([set_name(key[0]), var(key[1]), float(key[2]), float(key[3]), float(layer), float(cnt),
                               100.0 * cnt / total])
                line += " L%.0f %.0f%%" % (layer, 100.0 * cnt / total)
            lines.append(line)
        t.blocks.append(lines)
        tables.append(t)

    # TPP: the matrices per set, quantity and N, then every kind (seeds averaged)
    if "tpp" in f:
        ds = f["tpp/tpp"]
        p = ds[()]
        kind = enum(ds, "kind")
        kid = {n: i for i, n in enumerate(s(ds.attrs["enum:kind"]).split(","))}

        def cell(st, v, k, kd, layer, N, col):
            m = [q[col] for q in p if q[0] == st and q[1] == v and q[2] == k and q[4] == kd and q[5] == layer and
                 q[6] == N and q[7] == -1 and q[8] == -1]
            return float(sum(m) / len(m)) if m else math.nan

        t = Table("tpp_matrix", [("set", "set", None), ("quantity", "quantity", None), ("N", "N", num(".0f")),
                                 ("k", "k", num(".0f"))] +
                  [(n, n, f4) for n in ("global_raw", "global_resae", "joint_raw", "joint_resae")])
        what = ["TPP = mean_i [intended - unintended]", "interaction = TPP(budget) - sum of its layers' parts"]
        for st in dict.fromkeys(p[:, 0]):
            Ns = list(dict.fromkeys(q[6] for q in p if q[0] == st))
            ks = list(dict.fromkeys(q[2] for q in p if q[0] == st))
            for w in range(2):
                kinds = [kid["global_interaction"], kid["joint_interaction"]] if w else [kid["global"], kid["joint"]]
                for N in Ns:
                    lines = ["TPP set %s, N = %.0f total ablated latents: %s (mean over classes, class sets, seeds)" %
                             (set_name(st), N, what[w]),
                             "%5s %11s %11s %11s %11s" % ("k", "global_raw", "global_resae", "joint_raw", "joint_resae")]
                    for k in ks:
                        c = [cell(st, x % 2, k, kinds[x // 2], -1, N, 11) for x in range(4)]
                        t.rows.append([set_name(st), ["tpp", "interaction"][w], float(N), float(k)] + c)
                        lines.append("%5.0f %11s %11s %11s %11s" % tuple([k] + [f4(x) for x in c]))
                    t.blocks.append(lines)
        tables.append(t)

        t = Table("tpp_kinds", [("set", "set", None), ("var", "var", None), ("k", "k", num(".0f")),
                                ("kind", "kind", None), ("layer", "layer", lay), ("N", "N", num(".0f"))] +
                  [(n, n, f4) for n in ("intended", "unintended", "tpp")])
        lines = ["TPP by kind (mean over classes, class sets, seeds; layer -: every layer of the set; local: "
                 "SAEBench-exact at that layer; random: control)",
                 "%-12s %-6s %5s %-18s %6s %6s %10s %10s %10s" % tuple(c[0] for c in t.cols)]
        for q in p:
            if q[7] != -1 or q[3] != 0:
                continue
            c = [cell(q[0], q[1], q[2], q[4], q[5], q[6], 9 + x) for x in range(3)]
            t.rows.append([set_name(q[0]), var(q[1]), float(q[2]), kind(q[4]), float(q[5]), float(q[6])] + c)
            lines.append("%-12s %-6s %5.0f %-18s %6s %6.0f %10s %10s %10s" %
                         (set_name(q[0]), var(q[1]), q[2], kind(q[4]), lay(q[5]), q[6], f4(c[0]), f4(c[1]), f4(c[2])))
        t.blocks.append(lines)
        tables.append(t)
    return tables


def text_of(tables):
    return "\n".join("".join(line + "\n" for line in b) for t in tables for b in t.blocks)


# ---- running the report --------------------------------------------------------------------------


def report(args, rc=0, what=""):
    p = subprocess.run([resae, "report"] + args, capture_output=True, text=True)
    check(p.returncode == rc, f"report {' '.join(args)}: exit {p.returncode}, expected {rc} {what}; stderr: "
                              f"{p.stderr.strip()[:300]}")
    return p


def close(a, b):
    return a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12 * abs(b)


def check_csv_rows(t, rows, where):
    if not check(rows, f"{where}: no rows, not even a header"):
        return
    check(rows[0] == [c[1] for c in t.cols], f"{where}: header {rows[0]}")
    check(len(rows) - 1 == len(t.rows), f"{where}: {len(rows) - 1} rows, expected {len(t.rows)}")
    for i, (got, want) in enumerate(zip(rows[1:], t.rows)):
        if not check(len(got) == len(want), f"{where} row {i}: {len(got)} fields, expected {len(want)}"):
            continue
        for j, (g, w) in enumerate(zip(got, want)):
            if isinstance(w, str):
                check(g == w.rstrip(), f"{where} row {i} {t.cols[j][1]}: {g!r}, expected {w!r}")
            elif math.isnan(w):
                check(g == "", f"{where} row {i} {t.cols[j][1]}: {g!r}, expected empty (NaN)")
            else:
                try:
                    ok = close(float(g), w)
                except ValueError:
                    ok = False
                check(ok, f"{where} row {i} {t.cols[j][1]}: {g!r}, expected {w!r}")


def parse_csv(text, where):
    """The tables of a whole csv report: {name: rows}, in order."""
    out, name = {}, None
    rows = list(csv.reader(io.StringIO(text)))
    check(not rows or (len(rows[0]) == 1 and rows[0][0].startswith("# table: ")), f"{where}: does not start with # table:")
    for i, r in enumerate(rows):
        if len(r) == 1 and r[0].startswith("# table: "):
            check(i == 0 or rows[i - 1] == [], f"{where}: no blank line before {r[0]}")
            name = r[0][len("# table: "):]
            out[name] = []
        elif r == []:
            check(i + 1 < len(rows) and rows[i + 1][:1] and rows[i + 1][0].startswith("# table: "),
                  f"{where}: blank line {i + 1} not followed by # table:")
        elif check(name is not None, f"{where}: row {i + 1} before any table"):
            out[name].append(r)
    return out


def md_cells(line):
    if not (line.startswith("| ") and line.endswith(" |")):
        return None
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line[1:-1])]


def check_md(t, lines, where):
    """lines: one table's block, from ### on, without the blank line after it."""
    check(lines[:2] == [f"### {t.name}", ""] and len(lines) > 4 and lines[2] and lines[3] == "",
          f"{where}: heading, blank, description, blank expected, got {lines[:4]}")
    body = lines[4:]
    nc = len(t.cols)
    cells = [md_cells(line) for line in body]
    for i, c in enumerate(cells):
        check(c is not None and len(c) == nc, f"{where}: line {i + 5} has {None if c is None else len(c)} cells, "
                                              f"expected {nc}: {body[i][:120]!r}")
    if len(cells) < 2 or any(c is None or len(c) != nc for c in cells):
        return
    check(cells[0] == [c[0] for c in t.cols], f"{where}: header {cells[0]}")
    check(cells[1] == ["---" if c[2] is None else "---:" for c in t.cols], f"{where}: alignment row {cells[1]}")
    check(len(cells) - 2 == len(t.rows), f"{where}: {len(cells) - 2} rows, expected {len(t.rows)}")
    for i, (got, want) in enumerate(zip(cells[2:], t.rows)):
        exp = [w.rstrip() if c[2] is None else c[2](w) for c, w in zip(t.cols, want)]
        check(got == exp, f"{where} row {i}: {got}, expected {exp}")


def md_blocks(text):
    blocks, cur = {}, None
    for line in text.split("\n"):
        if line.startswith("### "):
            cur = blocks.setdefault(line[4:], [])
        if cur is not None:
            cur.append(line)
    for b in blocks.values():
        while b and b[-1] == "":
            b.pop()
    return blocks


def check_run(path_dir, tables, full):
    names = [t.name for t in tables]
    # text
    want = text_of(tables)
    got = report([path_dir]).stdout
    check(got == want, f"text report of {path_dir} differs from the previous layout:\n" +
          "".join(f"  got  {a!r}\n  want {b!r}\n" for a, b in
                  [(x, y) for x, y in zip(got.split("\n"), want.split("\n")) if x != y][:3]))
    check(report(["--format", "text", path_dir]).stdout == got, "--format text differs from the default")
    # csv
    text = report([path_dir, "--format", "csv"]).stdout
    parsed = parse_csv(text, "csv")
    check(list(parsed) == names, f"csv tables {list(parsed)}, expected {names}")
    for t in tables:
        if t.name in parsed:
            check_csv_rows(t, parsed[t.name], f"csv {t.name}")
    # markdown
    text = report(["--format=markdown", path_dir]).stdout
    check(text.endswith("|\n"), "markdown does not end with a table row")
    blocks = md_blocks(text)
    check(list(blocks) == names, f"markdown tables {list(blocks)}, expected {names}")
    check(text.split("\n")[0] == f"### {names[0]}", "markdown does not start with ###")
    for t in tables:
        if t.name in blocks:
            check_md(t, blocks[t.name], f"markdown {t.name}")
    if not full:
        return
    # --table NAME in each format
    for t in tables:
        got = report(["--table", t.name, path_dir]).stdout
        check(got == text_of([t]), f"--table {t.name} (text) is not that table's text")
        got = report(["--table", t.name, "--format", "markdown", path_dir]).stdout
        check(got.rstrip("\n").split("\n") == blocks.get(t.name), f"--table {t.name} --format markdown is not its block")
        got = report([path_dir, "--format", "csv", "--table", t.name]).stdout
        check(not got.startswith("#"), f"--table {t.name} --format csv has a # line")
        rows = list(csv.reader(io.StringIO(got)))
        check(rows == parsed.get(t.name), f"--table {t.name} --format csv is not its block of the whole csv")
        check_csv_rows(t, rows, f"csv --table {t.name}")
        if not t.rows or not rows:
            continue
        try:
            arr = np.atleast_1d(np.genfromtxt(io.StringIO(got), delimiter=",", names=True, dtype=None, encoding="utf-8"))
        except (ValueError, IndexError) as e:
            check(False, f"numpy.genfromtxt cannot read --table {t.name} --format csv: {e}")
            continue
        if not check(arr.dtype.names and len(arr) == len(t.rows) and len(arr.dtype.names) == len(t.cols),
                     f"numpy.genfromtxt reads {arr.shape} x {arr.dtype.names} from --table {t.name}"):
            continue
        for j, c in enumerate(t.cols):
            if c[2] is None:
                continue
            col = arr[arr.dtype.names[j]].astype(float)
            want_col = np.array([r[j] for r in t.rows], dtype=float)
            ok = np.all((col == want_col) | (np.isnan(col) & np.isnan(want_col)) |
                        (np.abs(col - want_col) <= 1e-12 * np.abs(want_col)))
            check(ok, f"numpy.genfromtxt: --table {t.name} column {c[1]} differs")


tables = build(os.path.join(run, "results.h5"))
names = [t.name for t in tables]
for want in ("recon", "sae_quality", "redundancy", "ce", "affine_only", "probing", "probing_union", "tpp_matrix",
             "tpp_kinds"):
    check(want in names, f"the run has no {want} table: the test does not cover it")
check(any(isinstance(v, float) and not math.isnan(v) for r in tables[1].rows for v in r[4:5]),
      "no SAE with a training curve (gain column untested)")
check_run(run, tables, True)

# optional groups left out
bare = os.path.join(work, "bare")
os.makedirs(bare, exist_ok=True)
shutil.copy(os.path.join(run, "results.h5"), os.path.join(bare, "results.h5"))
with h5py.File(os.path.join(bare, "results.h5"), "a") as f:
    for g in ("probing", "tpp", "eval/affine_only"):
        del f[g]
bare_tables = build(os.path.join(bare, "results.h5"))
check([t.name for t in bare_tables] == ["recon", "sae_quality", "redundancy", "ce"], "bare copy still has optional tables")
check_run(bare, bare_tables, False)
p = report(["--table", "probing", bare], rc=1, what="(a table the run does not have)")
check("probing" in p.stderr and p.stdout == "", f"--table probing on a run without probing: {p.stderr!r}")

# usage errors
p = report([run, "--format", "bogus"], rc=2)
check("usage: resae report" in p.stderr and p.stdout == "", "--format bogus does not print the usage")
p = report([run, "--table", "bogus"], rc=2)
check(all(n in p.stderr for n in names) and p.stdout == "", f"--table bogus does not list the tables: {p.stderr!r}")
report([run, "--format"], rc=2)
report([run, run], rc=2)
report(["--bogus", run], rc=2)
report([os.path.join(work, "nonexistent")], rc=1)
p = report(["--help"])
for n in names:
    check(re.search(rf"^  {n} ", p.stdout, re.M), f"--help does not list table {n}")

if failures:
    print("\n".join("FAIL: " + m for m in failures))
    sys.exit(1)
print(f"resae report formats: {n_checks} checks ok")
