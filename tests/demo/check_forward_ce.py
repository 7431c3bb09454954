"""`resae forward` on the demo checkpoint against the PyTorch fixture (tests/data/demo/expected_ce.h5,
written by tests/reference/demo/eval_demo_model.py).

usage: check_forward_ce.py FORWARD.h5 FIXTURE.h5 [--full]
Checks per-position CE of the first 16 windows (|diff| <= 5e-5 each: both sides run fp32 with different summation orders) and their mean; with --full
(FORWARD.h5 covers every window) also the mean over all windows (|diff| <= 1e-4)."""
import sys

import h5py
import numpy as np


def main(argv):
    fw, fx = h5py.File(argv[1], "r"), h5py.File(argv[2], "r")
    ce = fw["ce"][:].astype(np.float64)
    tok = fx["token_ce"][:]
    bad = []
    n = tok.shape[0]
    got = ce[:n]
    err = np.abs(got - tok).max()
    print(f"first {n} windows: max |resae - torch| per-position CE = {err:.2e} (limit 5e-5)")
    if not err <= 5e-5:
        bad.append("per-position CE")
    m_err = abs(got.mean() - fx["mean_ce_first"][()])
    print(f"first {n} windows: mean CE resae {got.mean():.6f} vs torch {fx['mean_ce_first'][()]:.6f} (diff {m_err:.1e}, limit 1e-4)")
    if not m_err <= 1e-4:
        bad.append("mean CE of the first windows")
    if "--full" in argv:
        if ce.shape[0] != int(fx["n_seq"][()]):
            bad.append(f"--full needs all {int(fx['n_seq'][()])} windows, got {ce.shape[0]}")
        else:
            f_err = abs(ce.mean() - fx["mean_ce"][()])
            print(f"all {ce.shape[0]} windows: mean CE resae {ce.mean():.6f} vs torch {fx['mean_ce'][()]:.6f} "
                  f"(diff {f_err:.1e}, limit 1e-4)")
            if not f_err <= 1e-4:
                bad.append("mean CE over all windows")
    for b in bad:
        print("FAIL:", b)
    print("demo forward CE:", "FAILED" if bad else "ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
