#!/usr/bin/env python3
"""PyTorch reference for the SAE training benchmark (see sae_bench.sh).

Trains the TopK SAE of tests/reference/sae_ref.py (dense autograd, float32) with the same recipe,
initial parameters (DIR/init.f32) and data (DIR/pool.f32, cycled) as the C trainer, for the same
number of steps; prints tokens/s and the final FVU (mean over the last steps/10 steps) and
writes DIR/py_result.txt.
  sae_bench.py DIR D N K BATCH STEPS [THREADS]
"""
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from sae_ref import TopKSAE, lr_at, train_step  # noqa: E402


def main():
    out, d, n, k, B, steps = sys.argv[1], *map(int, sys.argv[2:7])
    threads = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    torch.set_num_threads(threads)
    pool = torch.from_numpy(np.fromfile(os.path.join(out, "pool.f32"), dtype=np.float32).reshape(-1, d))
    sae = TopKSAE(d, n, k, torch.float32)
    sae.load_slab(np.fromfile(os.path.join(out, "init.f32"), dtype=np.float32))
    lr = 2e-4 / (n / 2 ** 14) ** 0.5
    warmup, decay_frac, dead_tokens, k_aux, alpha = steps // 10, 0.2, 10_000_000, d // 2, 1 / 32
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
    since = torch.zeros(n, dtype=torch.int64)
    tail = max(1, steps // 10)
    fvu_tail, t0, c0, warm = 0.0, None, None, 2
    for s in range(steps):
        if s == warm:
            t0, c0 = time.perf_counter(), time.process_time()
        rows = (torch.arange(s * B, (s + 1) * B) % pool.shape[0])
        x = pool[rows]
        loss, fvu, auxk, _ = train_step(sae, opt, x, since, dead_tokens, k_aux, alpha,
                                        lr_at(s, steps, lr, warmup, decay_frac))
        if s >= steps - tail:
            fvu_tail += fvu / tail
        if s % 10 == 0 or s == steps - 1:
            print(f"torch step {s}: fvu {fvu:.4f} auxk {auxk:.4f}", file=sys.stderr, flush=True)
    el = (time.perf_counter() - t0) / (steps - warm)
    cpu = (time.process_time() - c0) / (steps - warm)
    print(f"PyTorch: {steps} steps of {B} tokens, {1e3 * el:.1f} ms/step, {B / el:.0f} tokens/s, "
          f"final fvu (mean last {tail} steps) {fvu_tail:.4f}, {threads} thread(s)")
    with open(os.path.join(out, "py_result.txt"), "w") as f:
        f.write(f"tokens_per_s {B / el:.3f}\ntokens_per_cpu_s {B / cpu:.3f}\nfvu {fvu_tail:.6f}\n")


if __name__ == "__main__":
    main()
