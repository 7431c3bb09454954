"""Compare the output of `resae forward` with a fixture's expected.h5 (PyTorch reference).

usage: check_forward.py OUT.h5 EXPECTED.h5 [--n-seq N]
Checks /ce (max|diff| <= 1e-5), every /resid/<l> present (max|diff| / max|h| <= 1e-5), /logits if
present (max|diff| / max|logit| <= 1e-4), shapes, and the mean_ce attribute. Exits 1 on mismatch.
"""
import sys

import h5py
import numpy as np


def main():
    out_path, exp_path = sys.argv[1], sys.argv[2]
    n = int(sys.argv[sys.argv.index("--n-seq") + 1]) if "--n-seq" in sys.argv else None
    bad = []
    with h5py.File(out_path, "r") as o, h5py.File(exp_path, "r") as e:
        ce_ref = e["ce"][:n] if n else e["ce"][:]
        ce = o["ce"][:]
        if ce.shape != ce_ref.shape:
            bad.append(f"/ce shape {ce.shape} != {ce_ref.shape}")
        else:
            err = float(np.max(np.abs(ce - ce_ref)))
            print(f"/ce max|diff| {err:.2e}")
            if not err <= 1e-5:
                bad.append(f"/ce max|diff| {err:.3e} > 1e-5")
        mean = float(o.attrs["mean_ce"])
        if not abs(mean - float(ce_ref.mean())) <= 1e-5:
            bad.append(f"mean_ce {mean} != {float(ce_ref.mean())}")
        if int(o.attrs["n_seq"]) != ce_ref.shape[0]:
            bad.append(f"n_seq attribute {int(o.attrs['n_seq'])}")
        for name in o.get("resid", {}):
            h, ref = o["resid"][name][:], e["resid"][name][: ce_ref.shape[0]]
            if h.shape != ref.shape:
                bad.append(f"/resid/{name} shape {h.shape} != {ref.shape}")
                continue
            err = float(np.max(np.abs(h - ref)) / np.max(np.abs(ref)))
            print(f"/resid/{name} max|diff|/max|h| {err:.2e}")
            if not err <= 1e-5:
                bad.append(f"/resid/{name} error {err:.3e} > 1e-5")
        if "logits" in o:
            lg, ref = o["logits"][:], e["logits"][: ce_ref.shape[0]]
            err = float(np.max(np.abs(lg - ref)) / np.max(np.abs(ref))) if lg.shape == ref.shape else np.inf
            print(f"/logits max|diff|/max|logit| {err:.2e}")
            if not err <= 1e-4:
                bad.append(f"/logits error {err:.3e} > 1e-4 (shape {lg.shape})")
    for b in bad:
        print("FAIL:", b)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
