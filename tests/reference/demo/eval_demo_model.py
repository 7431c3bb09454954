"""Held-out CE of the committed demo checkpoint on the shipped (validation-file) windows, and the
expected-CE fixture for resae's forward pass.

CE of a window = mean over positions t = 0..SEQ_LEN-2 of -log softmax(logits[t])[token[t+1]]
(neox.token_ce, float32 model, float64 accumulation). The held-out CE is the mean over all positions
of all windows in <tokens>/tokens (equal-length windows, so also the mean of the per-window CEs).

Writes <fixture> (HDF5):
  /mean_ce        float64 scalar   held-out CE over all shipped windows
  /n_seq          int64 scalar     number of windows it averages
  /seq_ce         float64 (16,)    per-window CE of windows 0..15
  /mean_ce_first  float64 scalar   mean of /seq_ce
  /token_ce       float32 (16, SEQ_LEN-1)  per-position CE of windows 0..15
  /logits0        float32 (8, 256) logits of window 0 at positions 0..7
  attributes: model and tokens paths and their sha256, command.

With --check it writes nothing: it verifies that the fixture belongs to the committed checkpoint
and tokens (sha256) and that the first 16 windows still give /seq_ce and /token_ce (tolerance
CHECK_TOL, float32 forward on a possibly different BLAS path), and exits non-zero otherwise.

Usage (from the repository root):
  OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/reference/demo/eval_demo_model.py
  OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/reference/demo/eval_demo_model.py --check
"""
import argparse
import hashlib
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see train_demo_model.py
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import neox  # noqa: E402

N_FIXTURE = 16
CHECK_TOL = 1e-5


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="configs/demo/model")
    ap.add_argument("--tokens", default="configs/demo/tokens.h5")
    ap.add_argument("--fixture", default="tests/data/demo/expected_ce.h5",
                    help="output fixture ('' to skip writing it)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--check", action="store_true", help="verify the fixture instead of writing it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.check:
        return check(args)

    model = neox.load_checkpoint(args.model)
    model.eval()
    with h5py.File(args.tokens, "r") as h:
        tokens = torch.from_numpy(h["tokens"][...].astype(np.int64))
    n = tokens.shape[0]
    t0 = time.time()
    seq_ce = np.empty(n, np.float64)
    first_tok_ce, logits0 = None, None
    for i in range(0, n, args.batch):
        x = tokens[i: i + args.batch]
        logits, _ = model(x)
        ce = neox.token_ce(logits, x)
        seq_ce[i: i + x.shape[0]] = ce.double().mean(dim=1).numpy()
        if i == 0:
            first_tok_ce = ce[:N_FIXTURE].numpy().astype(np.float32)
            logits0 = logits[0, :8].numpy().astype(np.float32)
    mean_ce = float(seq_ce.mean())
    print(f"held-out CE over {n} windows ({n * (tokens.shape[1] - 1)} predicted bytes): {mean_ce:.6f} nats/byte "
          f"({mean_ce / np.log(2):.4f} bits/byte); first {N_FIXTURE} windows: {seq_ce[:N_FIXTURE].mean():.6f} "
          f"[{time.time() - t0:.0f} s]")
    if args.fixture:
        os.makedirs(os.path.dirname(os.path.abspath(args.fixture)), exist_ok=True)
        with h5py.File(args.fixture, "w") as f:
            f["mean_ce"] = mean_ce
            f["n_seq"] = n
            f["seq_ce"] = seq_ce[:N_FIXTURE]
            f["mean_ce_first"] = float(seq_ce[:N_FIXTURE].mean())
            f["token_ce"] = first_tok_ce
            f["logits0"] = logits0
            f.attrs["model"] = args.model
            f.attrs["model_sha256"] = sha256(os.path.join(args.model, "model.safetensors"))
            f.attrs["tokens"] = args.tokens
            f.attrs["tokens_sha256"] = sha256(args.tokens)
            f.attrs["command"] = "OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/reference/demo/eval_demo_model.py"
        print(f"wrote {args.fixture}")


@torch.no_grad()
def check(args):
    bad = []
    with h5py.File(args.fixture, "r") as f:
        want_seq = f["seq_ce"][...]
        want_tok = f["token_ce"][...]
        want_logits = f["logits0"][...]
        for key, path in (("model_sha256", os.path.join(args.model, "model.safetensors")),
                          ("tokens_sha256", args.tokens)):
            if f.attrs[key] != sha256(path):
                bad.append(f"{path}: sha256 differs from {args.fixture} attribute {key}; "
                           f"regenerate the fixture with eval_demo_model.py")
    model = neox.load_checkpoint(args.model)
    model.eval()
    with h5py.File(args.tokens, "r") as h:
        x = torch.from_numpy(h["tokens"][:N_FIXTURE].astype(np.int64))
    logits, _ = model(x)
    ce = neox.token_ce(logits, x)
    errs = {"seq_ce": np.abs(ce.double().mean(dim=1).numpy() - want_seq).max(),
            "token_ce": np.abs(ce.numpy() - want_tok).max(),
            "logits0": np.abs(logits[0, :8].numpy() - want_logits).max()}
    for k, e in errs.items():
        print(f"{k}: max abs diff {e:.3e} (tolerance {CHECK_TOL:g})")
        if not e <= CHECK_TOL:
            bad.append(f"{k} differs from {args.fixture} by {e:.3e}")
    for b in bad:
        print("MISMATCH: " + b)
    if bad:
        sys.exit(1)
    print("demo fixture consistent")


if __name__ == "__main__":
    main()
