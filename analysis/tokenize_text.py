#!/usr/bin/env python3
"""Turn text files into a resae token file: HDF5 /tokens int32 [n_seq, seq_len] (docs/models.md).

    analysis/tokenize_text.py --tokenizer TOK --seq-len T [options] OUT.h5 TEXT [TEXT ...]

TOK is the model's own tokenizer:
  - a checkpoint directory or hub name, loaded with transformers' AutoTokenizer when transformers
    is installed (the tokenizer the model was trained with: Pythia's GPT-NeoX BPE, Gemma-2's
    SentencePiece vocabulary);
  - a tokenizer.json file, loaded with the `tokenizers` library when that is installed;
  - `bytes`: one token per UTF-8 byte (ids 0..255), the tokenizer of the demo's byte-level model.

Each TEXT file is one document (a directory: every regular file below it, in sorted order). The
documents are tokenized one at a time, each followed by the separator (--sep, default: the
tokenizer's EOS id; `none` for no separator), concatenated, and cut into consecutive windows of
seq_len tokens; the remainder is dropped and reported. With --bos ID (default: the tokenizer's BOS
for Gemma-2 tokenizers, which the model expects at position 0; `none` otherwise), every window
starts with that id followed by seq_len - 1 stream tokens. --vocab-size N (or --model DIR, read from
its config.json) refuses ids >= N, naming the file. The output also has /groups int32 [n_seq] (the
index of the document a window starts in) and attributes tokenizer, sources, seq_len, dropped.
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


class ByteTokenizer:
    name = "bytes"
    bos_token_id = None
    eos_token_id = None

    def encode(self, text):
        return list(text.encode("utf-8"))


class HFTokenizer:
    def __init__(self, spec):
        self.name = spec
        if spec.endswith(".json") and os.path.isfile(spec):
            try:
                from tokenizers import Tokenizer
            except ImportError:
                fail(f"{spec}: reading a tokenizer.json needs the `tokenizers` package (or give the checkpoint "
                     "directory and install transformers)")
            self.tok = Tokenizer.from_file(spec)
            self.fast = True
            self.bos_token_id = self.eos_token_id = None
            self.gemma = False
            return
        try:
            from transformers import AutoTokenizer
        except ImportError:
            fail(f"--tokenizer {spec}: loading a Hugging Face tokenizer needs the `transformers` package "
                 "(pip install transformers), or pass the checkpoint's tokenizer.json with `tokenizers` installed")
        try:
            self.tok = AutoTokenizer.from_pretrained(spec)
        except Exception as e:  # transformers raises many kinds; name the input
            fail(f"--tokenizer {spec}: cannot load it: {e}")
        self.fast = False
        self.bos_token_id = self.tok.bos_token_id
        self.eos_token_id = self.tok.eos_token_id
        self.gemma = "gemma" in type(self.tok).__name__.lower()

    def encode(self, text):
        if self.fast:
            return self.tok.encode(text, add_special_tokens=False).ids
        return self.tok(text, add_special_tokens=False)["input_ids"]


def load_tokenizer(spec):
    return ByteTokenizer() if spec == "bytes" else HFTokenizer(spec)


def list_sources(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                out += [os.path.join(root, f) for f in sorted(files) if os.path.isfile(os.path.join(root, f))]
        elif os.path.isfile(p):
            out.append(p)
        else:
            fail(f"{p}: no such file or directory")
    if not out:
        fail("no input files")
    return out


def parse_id(value, default, what):
    if value is None:
        return default
    if value == "none":
        return None
    try:
        v = int(value)
    except ValueError:
        fail(f"--{what} {value}: expected a token id or `none`")
    if v < 0:
        fail(f"--{what} {value}: a token id is >= 0")
    return v


def vocab_of(args):
    if args.vocab_size is not None:
        return args.vocab_size
    if args.model is None:
        return None
    path = os.path.join(args.model, "config.json")
    try:
        with open(path) as f:
            return int(json.load(f)["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"{path}: cannot read vocab_size ({e}); pass --vocab-size")


def tokenize(tok, sources, sep, vocab):
    """The concatenated stream (int64) and, per token, the index of its document."""
    ids, doc = [], []
    for i, path in enumerate(sources):
        try:
            with open(path, encoding="utf-8", errors="strict") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            fail(f"{path}: not UTF-8 text ({e}); convert it or leave it out")
        except OSError as e:
            fail(f"{path}: {e.strerror}")
        t = list(tok.encode(text))
        if sep is not None:
            t.append(sep)
        if vocab is not None:
            bad = [x for x in t if x >= vocab]
            if bad:
                fail(f"{path}: token id {bad[0]} is >= the model's vocab_size {vocab}; the tokenizer does not "
                     "belong to this model")
        ids += t
        doc += [i] * len(t)
    return np.asarray(ids, dtype=np.int64), np.asarray(doc, dtype=np.int32)


def windows(stream, doc, seq_len, bos):
    body = seq_len - (1 if bos is not None else 0)
    n = len(stream) // body
    if n == 0:
        fail(f"the inputs give {len(stream)} tokens, fewer than one window of {body}")
    toks = stream[: n * body].reshape(n, body)
    groups = doc[: n * body : body].copy()
    if bos is not None:
        toks = np.concatenate([np.full((n, 1), bos, dtype=np.int64), toks], axis=1)
    return toks.astype(np.int32), groups, len(stream) - n * body


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("text", nargs="+")
    ap.add_argument("--tokenizer", required=True, help="checkpoint directory / hub name, tokenizer.json, or bytes")
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--sep", default=None, help="id after each document (default: the tokenizer's EOS; none)")
    ap.add_argument("--bos", default=None, help="id at position 0 of every window (default: BOS for Gemma-2)")
    ap.add_argument("--vocab-size", type=int, default=None)
    ap.add_argument("--model", default=None, help="checkpoint directory whose config.json gives vocab_size")
    args = ap.parse_args(argv)
    if args.seq_len < 2:
        fail(f"--seq-len {args.seq_len}: a sequence needs at least 2 tokens (CE predicts token t+1)")
    tok = load_tokenizer(args.tokenizer)
    sources = list_sources(args.text)
    sep = parse_id(args.sep, tok.eos_token_id, "sep")
    bos = parse_id(args.bos, tok.bos_token_id if getattr(tok, "gemma", False) else None, "bos")
    vocab = vocab_of(args)
    if vocab is not None:
        for what, v in (("sep", sep), ("bos", bos)):
            if v is not None and v >= vocab:
                fail(f"--{what} {v} is >= the model's vocab_size {vocab}")
    stream, doc = tokenize(tok, sources, sep, vocab)
    toks, groups, dropped = windows(stream, doc, args.seq_len, bos)
    tmp = args.out + ".tmp"
    with h5py.File(tmp, "w") as h:
        h.create_dataset("tokens", data=toks)
        h.create_dataset("groups", data=groups)
        h.attrs["tokenizer"] = tok.name
        h.attrs["sources"] = json.dumps(sources)
        h.attrs["seq_len"] = args.seq_len
        h.attrs["dropped"] = dropped
    os.replace(tmp, args.out)
    print(f"{args.out}: {toks.shape[0]} sequences x {args.seq_len} tokens from {len(sources)} files "
          f"({len(stream)} tokens, {dropped} dropped at the end; tokenizer {tok.name})")


if __name__ == "__main__":
    main()
