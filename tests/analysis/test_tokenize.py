#!/usr/bin/env python3
"""analysis/tokenize_text.py with the byte tokenizer: windows, separators, BOS, groups and the
dropped remainder against a hand computation; the refusals (id >= vocab_size, non-UTF-8 input,
a too-short input) name the file and exit 1; the output runs through `resae forward` on the demo
model. The Hugging Face tokenizers are not installed here; their path differs only in encode().
    test_tokenize.py SOURCE_DIR RESAE OUT_DIR"""
import os
import subprocess
import sys

import h5py
import numpy as np

src, resae, out = sys.argv[1:4]
script = os.path.join(src, "analysis", "tokenize_text.py")
os.makedirs(out, exist_ok=True)
checks = 0
failed = []


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        failed.append(what)
        print(f"FAIL: {what}")


def run(*args):
    return subprocess.run([sys.executable, script, *args], capture_output=True, text=True)


docs = ["def f(x):\n    return x + 1\n", "caf\u00e9 \u2013 na\u00efve\n", "z" * 40]
paths = []
os.makedirs(os.path.join(out, "docs"), exist_ok=True)
for i, d in enumerate(docs):
    p = os.path.join(out, "docs", f"d{i}.txt")
    with open(p, "w", encoding="utf-8") as f:
        f.write(d)
    paths.append(p)

# the hand computation: bytes of each document, then the separator, concatenated, cut into windows
stream, doc = [], []
for i, d in enumerate(docs):
    b = list(d.encode("utf-8")) + [0]
    stream += b
    doc += [i] * len(b)

for seq_len, bos in ((16, None), (16, 1), (7, None)):
    o = os.path.join(out, f"t{seq_len}_{bos}.h5")
    args = [o, os.path.join(out, "docs"), "--tokenizer", "bytes", "--seq-len", str(seq_len), "--sep", "0"]
    if bos is not None:
        args += ["--bos", str(bos)]
    r = run(*args)
    check(r.returncode == 0, f"seq_len {seq_len} bos {bos}: exit {r.returncode}: {r.stderr}")
    if r.returncode:
        continue
    body = seq_len - (bos is not None)
    n = len(stream) // body
    want = np.asarray(stream[: n * body], dtype=np.int32).reshape(n, body)
    if bos is not None:
        want = np.concatenate([np.full((n, 1), bos, dtype=np.int32), want], axis=1)
    with h5py.File(o, "r") as h:
        t = h["tokens"][...]
        check(t.dtype == np.int32 and t.shape == (n, seq_len), f"shape {t.dtype} {t.shape} vs (int32, ({n}, {seq_len}))")
        check(np.array_equal(t, want), f"seq_len {seq_len} bos {bos}: tokens differ from the hand computation")
        check(np.array_equal(h["groups"][...], np.asarray(doc[: n * body : body])), "groups: the document of each window")
        check(int(h.attrs["dropped"]) == len(stream) - n * body, "dropped remainder")
        check(h.attrs["tokenizer"] == "bytes", "tokenizer attribute")
    check(not os.path.exists(o + ".tmp"), "no temporary file left")

# refusals: exit 1, the file or flag named, no output written
bad = os.path.join(out, "bad.bin")
with open(bad, "wb") as f:
    f.write(b"ok \xff\xfe not utf-8")
for what, args, needle in (
    ("vocab", [paths[1], "--vocab-size", "200"], "d1.txt: token id"),
    ("utf8", [bad], "bad.bin: not UTF-8"),
    ("short", [paths[0], "--seq-len", "4096"], "fewer than one window"),
    ("missing", [os.path.join(out, "nope.txt")], "nope.txt: no such file"),
    ("model", [paths[0], "--model", os.path.join(src, "configs", "demo", "model"), "--sep", "256"], "vocab_size 256"),
):
    o = os.path.join(out, f"refused_{what}.h5")
    a = [o, *args, "--tokenizer", "bytes"]
    if "--seq-len" not in args:
        a += ["--seq-len", "8"]
    r = run(*a)
    check(r.returncode == 1 and needle in r.stderr, f"{what}: exit {r.returncode}, stderr {r.stderr.strip()!r}")
    check(not os.path.exists(o), f"{what}: no output written")

# the demo's byte-level model reads the file
o = os.path.join(out, "t16_None.h5")
f = os.path.join(out, "forward.h5")
r = subprocess.run([resae, "forward", "--model", os.path.join(src, "configs", "demo", "model"), "--tokens", o,
                    "--out", f], capture_output=True, text=True)
check(r.returncode == 0, f"resae forward: exit {r.returncode}: {r.stderr[-400:]}")
if r.returncode == 0:
    with h5py.File(f, "r") as h:
        ce = h["ce"][...]
        check(ce.shape == (len(stream) // 16, 15) and np.isfinite(ce).all(), f"resae forward CE {ce.shape}")

if failed:
    print(f"tokenize: {len(failed)} of {checks} checks FAILED")
    sys.exit(1)
print(f"tokenize: {checks} checks ok")
