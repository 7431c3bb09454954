"""Labelled windows for the probing and TPP pipeline tests, made from the small fixture's token file:
every sequence is a window, labels are blocks of 8 sequences cycling over 6 classes, and groups are
the blocks (so a block never straddles the train/test split).
usage: make_probe_windows.py TOKENS_H5 OUT_H5"""
import sys

import h5py
import numpy as np

tok = h5py.File(sys.argv[1], "r")["tokens"][()].astype(np.int32)
n = len(tok)
with h5py.File(sys.argv[2], "w") as f:
    f["tokens"] = tok
    f["labels"] = ((np.arange(n) // 8) % 6).astype(np.int32)
    f["groups"] = (np.arange(n) // 8).astype(np.int32)
    f["label_names"] = np.array([f"c{i}" for i in range(6)], dtype="S")
