"""Labelled windows for sparse probing and TPP on the embedded demo (EVAL_SPEC.md F1-F4).

Source: every corpus file of build_corpus.py (the same file list and exclusions), train and
validation alike, since the held-out files alone are too few per class; /in_train records which
windows come from a file the demo model was trained on.

Windows (F1): 256 bytes at offsets 256, 512, ... while a full window fits; each file's first window
(offset 0: license header or module docstring) and the partial tail are dropped. A window has one
file (/groups) and one label (its top-level stdlib name, ids into the corpus's sorted label table).

Classes (F3), from the counts over the whole corpus:
  - excluded: pydoc_data (one file) and encodings (generated codec tables);
  - eligible: >= ELIGIBLE_WINDOWS windows (n_tr + n_te of the fallback sizes 250/100), >= 3 files,
    no file holding more than half of the label's windows;
  - ranked by window count (ties: lower label id), S = min(4, floor(#eligible / 5)) sets, and only
    the first 5 S ranks are kept (the C side deals them round-robin into the sets again).
Size: each kept class keeps KEEP_BASE + (n_kept - rank) windows, a systematic sample of its windows
in (file, offset) order (every file keeps its share of the class up to one window), so the kept
counts decrease strictly with the rank and the C side ranks the classes exactly as here.

Usage: build_probe.py [--root /usr/lib/python3.11] [--out configs/demo/probe.h5] [--check]
--check writes nothing: it rebuilds the windows from --root and compares them with the committed
file, dataset by dataset (exit 1 on a difference).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_corpus as bc  # noqa: E402

EXCLUDED_LABELS = ("encodings", "pydoc_data")
ELIGIBLE_WINDOWS = 350
MIN_FILES = 3
MAX_FILE_SHARE = 0.5
CLASSES_PER_SET = 5
MAX_SETS = 4
KEEP_BASE = 500


def probe_windows(n):
    """Start offsets of the probing windows of a file of n bytes (F1)."""
    return list(range(bc.SEQ_LEN, n - bc.SEQ_LEN + 1, bc.SEQ_LEN))


def build(root):
    files = bc.load_corpus(root)
    names = bc.label_table(files)
    lid = {n: i for i, n in enumerate(names)}
    per_label = {}
    for fi, f in enumerate(files):
        starts = probe_windows(len(f["data"]))
        if starts and f["label"] not in EXCLUDED_LABELS:
            per_label.setdefault(f["label"], []).append((fi, starts))
    eligible = []
    for lab, lst in per_label.items():
        count = sum(len(s) for _, s in lst)
        biggest = max(len(s) for _, s in lst)
        if count >= ELIGIBLE_WINDOWS and len(lst) >= MIN_FILES and biggest <= MAX_FILE_SHARE * count:
            eligible.append((-count, lid[lab], lab))
    eligible.sort()
    n_sets = min(MAX_SETS, len(eligible) // CLASSES_PER_SET)
    kept = eligible[:n_sets * CLASSES_PER_SET]
    toks, labels, groups, offs = [], [], [], []
    used_files = []
    for rank, (_, label_id, lab) in enumerate(kept):
        wins = [(fi, s) for fi, starts in per_label[lab] for s in starts]
        keep = min(len(wins), KEEP_BASE + len(kept) - rank)
        for i in range(keep):
            fi, s = wins[i * len(wins) // keep]
            buf = np.frombuffer(files[fi]["data"], dtype=np.uint8)
            toks.append(buf[s: s + bc.SEQ_LEN].astype(np.int32))
            labels.append(label_id)
            if fi not in used_files:
                used_files.append(fi)
            groups.append(used_files.index(fi))
            offs.append(s)
    group_names = [files[fi]["path"] for fi in used_files]
    in_train = np.array([files[used_files[g]]["split"] == "train" for g in groups], np.int8)
    return dict(tokens=np.stack(toks), labels=np.array(labels, np.int32), groups=np.array(groups, np.int32),
                offsets=np.array(offs, np.int64), in_train=in_train, label_names=names,
                group_names=group_names, classes=[lab for _, _, lab in kept], n_sets=n_sets)


def write(path, b):
    import h5py
    deb, pyver = bc.source_description()
    gz = dict(compression="gzip", compression_opts=9, shuffle=True)
    with h5py.File(path + ".tmp", "w") as f:
        f.create_dataset("tokens", data=b["tokens"], chunks=(256, bc.SEQ_LEN), **gz)
        f.create_dataset("labels", data=b["labels"], **gz)
        f.create_dataset("groups", data=b["groups"], **gz)
        f.create_dataset("offsets", data=b["offsets"], **gz)
        f.create_dataset("in_train", data=b["in_train"], **gz)
        f.create_dataset("label_names", data=np.array(b["label_names"], dtype="S"))
        f.create_dataset("group_names", data=np.array(b["group_names"], dtype="S"), **gz)
        f.attrs["source"] = f"{deb} (Python {pyver}): /usr/lib/python3.11/**/*.py as in build_corpus.py"
        f.attrs["seq_len"] = bc.SEQ_LEN
        f.attrs["vocab_size"] = 256
        f.attrs["window_rule"] = "256-byte windows at file offsets 256, 512, ... (first window and partial tail dropped)"
        f.attrs["class_rule"] = (f"labels except {', '.join(EXCLUDED_LABELS)} with >= {ELIGIBLE_WINDOWS} windows, "
                                 f">= {MIN_FILES} files, no file > {MAX_FILE_SHARE} of the windows; the "
                                 f"{len(b['classes'])} largest kept ({b['n_sets']} sets of {CLASSES_PER_SET})")
        f.attrs["sample_rule"] = (f"class of rank r keeps {KEEP_BASE} + (n_classes - r) windows, a systematic "
                                  "sample in (file, offset) order")
        f.attrs["classes"] = ",".join(b["classes"])
    os.replace(path + ".tmp", path)


def check_partial(root, path, manifest, missing):
    """Where some corpus files are absent or changed under root (a stdlib package not installed, another
    point release): check what the manifest alone determines, and the bytes of every unchanged file."""
    import h5py
    bad = []
    with h5py.File(path, "r") as f:
        toks, labels, groups, offs = (f[k][()] for k in ("tokens", "labels", "groups", "offsets"))
        in_train = f["in_train"][()]
        lnames = [s.decode() for s in f["label_names"][()]]
        gnames = [s.decode() for s in f["group_names"][()]]
        classes = f.attrs["classes"].split(",")
    if lnames != sorted({m["label"] for m in manifest.values()}):
        bad.append("label_names")
    if sorted({lnames[x] for x in labels}) != sorted(classes):
        bad.append("classes")
    data = {}
    compared = 0
    for r in range(len(labels)):
        rel = gnames[groups[r]]
        m = manifest.get(rel)
        if m is None:
            bad.append(f"group {rel} not in corpus_files.tsv")
            break
        if lnames[labels[r]] != m["label"] or int(offs[r]) not in probe_windows(m["size"]) or \
                bool(in_train[r]) != (m["split"] == "train"):
            bad.append(f"window {r} ({rel} at {offs[r]}): label, offset or in_train against the rules")
            break
        if rel not in data:
            data[rel] = bc.unchanged(root, rel, m)
        if data[rel] is not None:
            buf = np.frombuffer(data[rel], np.uint8)
            if not np.array_equal(toks[r], buf[offs[r]: offs[r] + bc.SEQ_LEN]):
                bad.append(f"window {r} differs from {rel} at offset {offs[r]}")
                break
            compared += 1
    shown = ", ".join(sorted({x.split(os.sep)[0] for x in missing})[:8])
    print(f"{path}: {len(missing)} corpus files absent or changed under {root} ({shown}); full rebuild not "
          f"possible; {len(labels)} windows checked against corpus_files.tsv, {compared} byte for byte")
    if bad:
        print(f"{path}: differs from corpus_files.tsv and the unchanged sources in: {'; '.join(bad)}")
        return 1
    print("probe.h5 consistent (partial: install the missing stdlib files for the full rebuild check)")
    return 0


def check(root, path):
    import h5py
    manifest = bc.read_manifest(os.path.dirname(os.path.abspath(path)))
    missing = [rel for rel, m in manifest.items() if bc.unchanged(root, rel, m) is None]
    if missing:
        return check_partial(root, path, manifest, missing)
    b = build(root)
    bad = []
    with h5py.File(path, "r") as f:
        for key in ("tokens", "labels", "groups", "offsets", "in_train"):
            if f[key].shape != b[key].shape or not np.array_equal(f[key][()], b[key]):
                bad.append(key)
        for key in ("label_names", "group_names"):
            if [s.decode() for s in f[key][()]] != b[key]:
                bad.append(key)
        if f.attrs["classes"] != ",".join(b["classes"]):
            bad.append("classes")
    print(f"{path}: {len(b['labels'])} windows, {len(b['classes'])} classes ({','.join(b['classes'])}), "
          f"{len(b['group_names'])} files, {int(b['in_train'].sum())} windows from LM training files")
    if bad:
        print(f"{path}: differs from the windows rebuilt from {root} in: {', '.join(bad)}; rebuild it with "
              f"build_probe.py --out {path} (or restore the source files listed in corpus_files.tsv)")
        return 1
    print("probe.h5 consistent")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--root", default=bc.ROOT)
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "..", "configs", "demo", "probe.h5"))
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    if a.check:
        sys.exit(check(a.root, a.out))
    b = build(a.root)
    write(a.out, b)
    print(f"wrote {a.out}: {len(b['labels'])} windows, classes {','.join(b['classes'])}, "
          f"{os.path.getsize(a.out)} bytes")


if __name__ == "__main__":
    main()
