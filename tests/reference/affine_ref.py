#!/usr/bin/env python3
"""Reference for the affine-map fit (METHOD.md §2-§3), independent of the C code.

Writes tests/data/affine/affine_ref.bin: synthetic float32 activations (a calibration and an eval
split) and, computed from the published definitions in float64 numpy,

    mu_x, mu_y                    calibration means
    C_xx = sum (x-mu_x)(x-mu_x)^T, C_xy = sum (x-mu_x)(y-mu_y)^T
    lambda = lambda_rel * trace(C_xx) / dx
    A^T = solve(C_xx + lambda I, C_xy),  c = mu_y - A mu_x
    R^2 = 1 - sum ||y - A x - c||^2 / sum ||y - mu_y||^2        (eval split, mu_y its own mean)
    s_resae = sqrt(dy / mean_calib ||y - A x - c||^2),  s_raw = sqrt(dy / mean_calib ||y||^2)

Layout (little endian): b"RSAFFREF", u32 version=1, u32 dx, dy, n_calib, n_eval, f64 lambda_rel;
f32 x_calib (n_calib, dx), y_calib (n_calib, dy), x_eval (n_eval, dx), y_eval (n_eval, dy);
f64 lambda, A (dy, dx), c (dy), mu_x (dx), mu_y (dy), r2, s_resae, s_raw.

Run: OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/reference/affine_ref.py [out.bin]
"""
import os
import struct
import sys

import numpy as np

DX, DY, N_CALIB, N_EVAL = 48, 40, 3000, 1000
LAMBDA_REL = 1e-4
SEED = 20240607


def make_data(rng, n, mix, w, b, mean_x, noise):
    z = rng.standard_normal((n, DX))
    # heavy-ish tails and correlated dimensions, like residual streams
    z[:, :4] *= 4.0
    x = mean_x + z @ mix
    y = x @ w.T + b + noise * rng.standard_normal((n, DY))
    return x.astype(np.float32), y.astype(np.float32)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "data", "affine", "affine_ref.bin")
    rng = np.random.default_rng(SEED)
    mix = rng.standard_normal((DX, DX)) / np.sqrt(DX) + np.eye(DX)
    w = rng.standard_normal((DY, DX)) / np.sqrt(DX)
    b = rng.standard_normal(DY) * 3.0
    mean_x = rng.standard_normal(DX) * 5.0 + 20.0
    xc, yc = make_data(rng, N_CALIB, mix, w, b, mean_x, 0.5)
    xe, ye = make_data(rng, N_EVAL, mix, w, b, mean_x, 0.5)

    X = xc.astype(np.float64)
    Y = yc.astype(np.float64)
    mu_x = X.mean(axis=0)
    mu_y = Y.mean(axis=0)
    Xc = X - mu_x
    Yc = Y - mu_y
    cxx = Xc.T @ Xc
    cxy = Xc.T @ Yc
    lam = LAMBDA_REL * np.trace(cxx) / DX
    At = np.linalg.solve(cxx + lam * np.eye(DX), cxy)  # (dx, dy)
    A = At.T.copy()
    c = mu_y - A @ mu_x

    Xe = xe.astype(np.float64)
    Ye = ye.astype(np.float64)
    res = Ye - Xe @ A.T - c
    r2 = 1.0 - (res ** 2).sum() / ((Ye - Ye.mean(axis=0)) ** 2).sum()
    rc = Y - X @ A.T - c
    s_resae = np.sqrt(DY / (rc ** 2).sum(axis=1).mean())
    s_raw = np.sqrt(DY / (Y ** 2).sum(axis=1).mean())

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(b"RSAFFREF")
        f.write(struct.pack("<5I", 1, DX, DY, N_CALIB, N_EVAL))
        f.write(struct.pack("<d", LAMBDA_REL))
        for arr in (xc, yc, xe, ye):
            f.write(np.ascontiguousarray(arr, dtype="<f4").tobytes())
        f.write(struct.pack("<d", lam))
        for arr in (A, c, mu_x, mu_y):
            f.write(np.ascontiguousarray(arr, dtype="<f8").tobytes())
        f.write(struct.pack("<3d", r2, s_resae, s_raw))
    print(f"wrote {out}: dx={DX} dy={DY} n_calib={N_CALIB} n_eval={N_EVAL} lambda={lam:.6e} "
          f"R2={r2:.6f} s_resae={s_resae:.6f} s_raw={s_raw:.6f} cond={np.linalg.cond(cxx + lam*np.eye(DX)):.3e}")


if __name__ == "__main__":
    main()
