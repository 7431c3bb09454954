#!/usr/bin/env python3
"""Training and held-out rows for the SAE recipe study (tests/bench/sae_recipe.sh).

Reads a finished run's activations.h5 (and results.h5 for the affine maps) and writes, for one layer,
the SAE's input stream exactly as resae scales it:
  raw:   x = h_l * sqrt(d / E||h_l||^2)           (E from the calibration split)
  resae: x = (h_l - h_p A^T - c) * s             (A, c, s of the affine map p -> l)
DIR/train.f32 (the train split in a seeded random order), DIR/eval.f32 (the eval split), DIR/shape.txt.
  sae_recipe_data.py RUN_DIR OUT_DIR LAYER [PRED_LAYER]
"""
import os
import sys

import h5py
import numpy as np


def main():
    run, out, layer = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pred = int(sys.argv[4]) if len(sys.argv) > 4 else None
    os.makedirs(out, exist_ok=True)
    with h5py.File(os.path.join(run, "activations.h5"), "r") as f:
        tr = f[f"train/L{layer}"][()].astype(np.float64)
        ev = f[f"eval/L{layer}"][()].astype(np.float64)
        if pred is None:
            msq = float(f[f"calib/L{layer}_sqnorm"][()])
            scale = np.sqrt(tr.shape[1] / msq)
        else:
            with h5py.File(os.path.join(run, "results.h5"), "r") as r:
                g = r[f"affine/L{pred}_L{layer}"]
                A, c, scale = g["A"][()], g["c"][()], float(g.attrs["s"])
            tr -= f[f"train/L{pred}"][()].astype(np.float64) @ A.T + c
            ev -= f[f"eval/L{pred}"][()].astype(np.float64) @ A.T + c
    tr *= scale
    ev *= scale
    order = np.random.default_rng(0).permutation(tr.shape[0])
    tr[order].astype(np.float32).tofile(os.path.join(out, "train.f32"))
    ev.astype(np.float32).tofile(os.path.join(out, "eval.f32"))
    with open(os.path.join(out, "shape.txt"), "w") as f:
        f.write(f"{tr.shape[0]} {ev.shape[0]} {tr.shape[1]}\n")
    print(f"{out}: train {tr.shape[0]} x {tr.shape[1]}, eval {ev.shape[0]}, scale {scale:.5f}")


if __name__ == "__main__":
    main()
