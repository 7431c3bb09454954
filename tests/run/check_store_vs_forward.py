"""Check an activation store against `resae forward` residual streams of the same sequences.

usage: check_store_vs_forward.py ACTIVATIONS.h5 FORWARD.h5 [--rtol R]
For every split and stored layer, row r of /<split>/L<l> must equal forward's
/resid/<l>[seq_ids[r // tps], pos] with pos = r % tps (+1 when position 0 is excluded)."""
import sys

import h5py
import numpy as np


def main(argv):
    rtol = 1e-5
    if "--rtol" in argv:
        i = argv.index("--rtol")
        rtol = float(argv[i + 1])
        del argv[i:i + 2]
    st, fw = h5py.File(argv[1], "r"), h5py.File(argv[2], "r")
    bad, n_checked = [], 0
    for split in ("calib", "train", "eval"):
        if split not in st:
            continue
        g = st[split]
        seq = g["seq_ids"][:]
        for name in g:
            if not name.startswith("L") or "_" in name:
                continue
            layer = -1 if name == "Lemb" else int(name[1:])
            rows = g[name][:].astype(np.float32)
            if len(seq) == 0:
                continue
            tps = rows.shape[0] // len(seq)
            skip = fw["resid"][str(layer)].shape[1] - tps
            ref = fw["resid"][str(layer)][:][seq][:, skip:, :].reshape(rows.shape)
            scale = np.abs(ref).max()
            err = np.abs(rows - ref).max() / scale
            n_checked += rows.size
            if not err <= rtol:
                bad.append(f"{split}/{name}: max |store - forward| / max|forward| = {err:.3e} > {rtol}")
    for b in bad:
        print("FAIL:", b)
    print(f"store vs forward: {n_checked} values checked:", "FAILED" if bad or not n_checked else "ok")
    return 1 if bad or not n_checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
