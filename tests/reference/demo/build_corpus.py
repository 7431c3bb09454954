"""Byte-level corpus of the embedded demo: the Python standard library sources of Debian's python3.

Source text: /usr/lib/python3.11/**/*.py (PSF License, see configs/demo/README.md), a fixed sorted
list of files, excluding
  - test suites: any directory named test, tests or idle_test (the libpython3.11-testsuite parts
    that are installed, plus package-internal tests such as ctypes/test, lib2to3/tests),
  - third-party code: site-packages and dist-packages,
  - build configuration: config-3.11-*, lib-dynload, __pycache__.
Tokens are bytes (vocabulary 256). Each file is assigned to train or validation by its relative
path alone: validation iff sha256(relpath)[:8] (big-endian) mod VAL_MOD == 0, so the split does not
depend on the file list or its order.

The label of a file (and of every window cut from it) is its top-level stdlib name: the first path
component with a trailing .py removed (`email/mime/text.py` -> `email`, `json/decoder.py` -> `json`,
`argparse.py` -> `argparse`). Label ids index the sorted table of every label in the corpus.

Two kinds of windows of SEQ_LEN bytes:
  - shipped (evaluation/probing) windows, cut within one validation file: starts 0, SEQ_LEN, ...
    while a full window fits, plus, if the remaining tail is at least MIN_TAIL bytes, one last
    window ending at the end of the file (it overlaps its predecessor). Files shorter than SEQ_LEN
    give no window. Every window therefore has one file and one label.
  - training windows (train_demo_model.py) are drawn at seeded random offsets from the
    concatenation of the train files, each file followed by one separator byte 0x00 (no source
    file contains NUL), see train_stream().

Usage: build_corpus.py [--root /usr/lib/python3.11] [--out configs/demo] [--check]
Writes <out>/tokens.h5 and <out>/corpus_files.tsv (relpath, bytes, sha256, split, label).
With --check it writes nothing and verifies the committed <out>/tokens.h5 against the rules above
and <out>/corpus_files.tsv; where a source file under --root still has the recorded sha256, every
window cut from it must equal its bytes. Exits non-zero on any mismatch.
"""
import argparse
import hashlib
import os
import subprocess
import sys

import numpy as np

ROOT = "/usr/lib/python3.11"
SEQ_LEN = 256
VAL_MOD = 8
MIN_TAIL = 64
SEP = 0
EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                 "lib-dynload"}


def excluded_dir(name):
    return name in EXCLUDED_DIRS or name.startswith("config-")


def list_files(root=ROOT):
    """Sorted relative paths of the corpus files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not excluded_dir(d))
        for fn in filenames:
            if fn.endswith(".py"):
                out.append(os.path.relpath(os.path.join(dirpath, fn), root))
    return sorted(out)


def label_of(relpath):
    top = relpath.split(os.sep)[0]
    return top[:-3] if top.endswith(".py") else top


def is_validation(relpath):
    h = hashlib.sha256(relpath.encode()).digest()
    return int.from_bytes(h[:8], "big") % VAL_MOD == 0


def load_corpus(root=ROOT):
    """List of dicts: path, data (bytes), sha256, split ('train'/'val'), label."""
    files = []
    for rel in list_files(root):
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        if b"\x00" in data:
            raise ValueError(f"{rel} contains a NUL byte, which is the file separator of the training stream")
        files.append(dict(path=rel, data=data, sha256=hashlib.sha256(data).hexdigest(),
                          split="val" if is_validation(rel) else "train", label=label_of(rel)))
    return files


def label_table(files):
    return sorted({f["label"] for f in files})


def file_windows(n):
    """Start offsets of the windows cut within a file of n bytes."""
    if n < SEQ_LEN:
        return []
    starts = list(range(0, n - SEQ_LEN + 1, SEQ_LEN))
    tail = n - (starts[-1] + SEQ_LEN)
    if tail >= MIN_TAIL:
        starts.append(n - SEQ_LEN)
    return starts


def split_windows(files, split):
    """Windows within the files of one split: tokens (n, SEQ_LEN) int32, labels, file index, offsets."""
    names = label_table(files)
    lid = {n: i for i, n in enumerate(names)}
    toks, labels, fidx, offs = [], [], [], []
    for i, f in enumerate(files):
        if f["split"] != split:
            continue
        buf = np.frombuffer(f["data"], dtype=np.uint8)
        for s in file_windows(len(buf)):
            toks.append(buf[s: s + SEQ_LEN].astype(np.int32))
            labels.append(lid[f["label"]])
            fidx.append(i)
            offs.append(s)
    return (np.stack(toks), np.array(labels, np.int32), np.array(fidx, np.int32),
            np.array(offs, np.int64))


def train_stream(files):
    """uint8 concatenation of the train files, each followed by the separator byte."""
    parts = []
    for f in files:
        if f["split"] == "train":
            parts.append(f["data"])
            parts.append(bytes([SEP]))
    return np.frombuffer(b"".join(parts), dtype=np.uint8)


def source_description():
    try:
        deb = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}", "libpython3.11-stdlib"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        deb = "unknown"
    return deb, sys.version.split()[0]


def read_manifest(out):
    """corpus_files.tsv of the directory out: relpath -> size, sha256, split, label."""
    manifest = {}
    with open(os.path.join(out, "corpus_files.tsv")) as f:
        for line in f:
            if line.startswith("#") or line.startswith("relpath\t"):
                continue
            rel, size, digest, split, label = line.rstrip("\n").split("\t")
            manifest[rel] = dict(size=int(size), sha256=digest, split=split, label=label)
    return manifest


def unchanged(root, rel, m):
    """The bytes of root/rel if the file is there with the manifest's sha256, else None."""
    path = os.path.join(root, rel)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    return data if hashlib.sha256(data).hexdigest() == m["sha256"] else None


def check(root, out):
    import h5py
    bad = []
    manifest = read_manifest(out)
    names = sorted({m["label"] for m in manifest.values()})
    for rel, m in manifest.items():
        if m["split"] != ("val" if is_validation(rel) else "train") or m["label"] != label_of(rel):
            bad.append(f"corpus_files.tsv: {rel} has split/label {m['split']}/{m['label']} against the rules")
    with h5py.File(os.path.join(out, "tokens.h5"), "r") as h:
        toks = h["tokens"][...]
        labels = h["labels"][...]
        fidx = h["file_index"][...]
        offs = h["offsets"][...]
        lnames = [x.decode() for x in h["label_names"][...]]
        fnames = [x.decode() for x in h["file_names"][...]]
    n = toks.shape[0]
    if toks.dtype != np.int32 or toks.ndim != 2 or toks.shape[1] != SEQ_LEN:
        bad.append(f"/tokens is {toks.dtype} {toks.shape}, expected int32 (n, {SEQ_LEN})")
    if toks.min() < 0 or toks.max() > 255:
        bad.append("/tokens has values outside 0..255")
    if lnames != names:
        bad.append("/label_names differs from the sorted labels of corpus_files.tsv")
    if not (labels.shape == fidx.shape == offs.shape == (n,)):
        bad.append("/labels, /file_index, /offsets must have one entry per window")
    verified = 0
    expect_windows = 0
    for j, rel in enumerate(fnames):
        m = manifest.get(rel)
        if m is None or m["split"] != "val":
            bad.append(f"/file_names[{j}] = {rel} is not a validation file of corpus_files.tsv")
            continue
        rows = np.nonzero(fidx == j)[0]
        if list(offs[rows]) != file_windows(m["size"]):
            bad.append(f"{rel}: window offsets {list(offs[rows])} differ from the window rule")
        if np.any(labels[rows] != names.index(m["label"])):
            bad.append(f"{rel}: windows carry a label other than {m['label']}")
        path = os.path.join(root, rel)
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            if hashlib.sha256(data).hexdigest() == m["sha256"]:
                buf = np.frombuffer(data, np.uint8)
                for r in rows:
                    if not np.array_equal(toks[r], buf[offs[r]: offs[r] + SEQ_LEN]):
                        bad.append(f"{rel}: window {r} differs from the file bytes at offset {offs[r]}")
                verified += 1
    for rel, m in manifest.items():
        if m["split"] == "val":
            expect_windows += len(file_windows(m["size"]))
    if expect_windows != n:
        bad.append(f"tokens.h5 has {n} windows, the validation files of corpus_files.tsv give {expect_windows}")
    for b in bad[:20]:
        print("MISMATCH: " + b)
    print(f"{n} windows from {len(fnames)} files; {verified} files compared byte for byte with {root}")
    if bad:
        sys.exit(1)
    print("demo tokens consistent")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=ROOT)
    ap.add_argument("--out", default="configs/demo")
    ap.add_argument("--check", action="store_true", help="verify <out>/tokens.h5 instead of writing it")
    args = ap.parse_args()
    if args.check:
        return check(args.root, args.out)
    import h5py

    files = load_corpus(args.root)
    names = label_table(files)
    toks, labels, fidx, offs = split_windows(files, "val")
    deb, pyver = source_description()
    os.makedirs(args.out, exist_ok=True)

    with open(os.path.join(args.out, "corpus_files.tsv"), "w") as f:
        f.write(f"# source: {args.root} ({deb}; python {pyver}); seq_len {SEQ_LEN}; "
                f"validation iff sha256(relpath)[:8] mod {VAL_MOD} == 0\n")
        f.write("relpath\tbytes\tsha256\tsplit\tlabel\n")
        for x in files:
            f.write(f"{x['path']}\t{len(x['data'])}\t{x['sha256']}\t{x['split']}\t{x['label']}\n")

    # Only the files that give windows are listed in /file_names; /file_index indexes that list.
    used = sorted(set(fidx.tolist()))
    remap = {old: new for new, old in enumerate(used)}
    fidx_local = np.array([remap[i] for i in fidx.tolist()], np.int32)
    path = os.path.join(args.out, "tokens.h5")
    with h5py.File(path, "w") as h:
        gz = dict(compression="gzip", compression_opts=9, shuffle=True)
        h.create_dataset("tokens", data=toks, chunks=(min(256, len(toks)), SEQ_LEN), **gz)
        h.create_dataset("labels", data=labels, **gz)
        # Fixed-length, NUL-padded ASCII strings: one contiguous buffer for C readers.
        h.create_dataset("label_names", data=np.array([n.encode() for n in names]))
        h.create_dataset("file_index", data=fidx_local, **gz)
        h.create_dataset("file_names", data=np.array([files[i]["path"].encode() for i in used]))
        h.create_dataset("offsets", data=offs, **gz)
        h.attrs["source"] = f"{args.root}/**/*.py, {deb}, python {pyver}"
        h.attrs["split"] = "validation files only (held out from model training)"
        h.attrs["seq_len"] = SEQ_LEN
        h.attrs["vocab_size"] = 256
        h.attrs["val_rule"] = f"sha256(relpath)[:8] big-endian mod {VAL_MOD} == 0"
        h.attrs["window_rule"] = f"within one file: starts 0, {SEQ_LEN}, ...; tail window ending at EOF if tail >= {MIN_TAIL}"

    n_train = sum(len(x["data"]) for x in files if x["split"] == "train")
    n_val = sum(len(x["data"]) for x in files if x["split"] == "val")
    counts = np.bincount(labels, minlength=len(names))
    print(f"{len(files)} files: train {sum(x['split'] == 'train' for x in files)} files / {n_train} bytes, "
          f"val {sum(x['split'] == 'val' for x in files)} files / {n_val} bytes")
    print(f"shipped {toks.shape[0]} validation windows ({toks.size} tokens) from {len(used)} files, "
          f"{int((counts > 0).sum())} of {len(names)} labels present -> {path}")
    top = np.argsort(-counts)[:25]
    print("windows per label (top 25): " + ", ".join(f"{names[i]}:{counts[i]}" for i in top))


if __name__ == "__main__":
    main()
