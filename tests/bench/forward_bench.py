"""Tokens/s of `resae forward` against the PyTorch reference (tests/reference/neox.py or gemma2.py),
same machine, same run, same BLAS (OpenBLAS, SkylakeX kernels), same thread counts.

usage: forward_bench.py RESAE_BINARY [--arch neox|gemma2] [--shape small|pythia-1.4b] [--threads 1,2] [--repeats 3]
                        [--workdir DIR]
Model: random GPT-NeoX, d=512, 8 heads, 8 layers, ff 2048, vocab 50304, fp32; or (--arch gemma2) a
Gemma-2-shaped one: d=512, 8 query / 4 kv heads of head_dim 96 (!= d / heads), 8 layers with a
sliding window of 128 on the even ones, GeGLU ff 2048, both soft-caps (50, 30), tied, vocab 50304,
fp32; or (--shape pythia-1.4b) GPT-NeoX at the real Pythia-1.4B shape (d 2048, 16 heads, 24 layers,
ff 8192), fp32, one batch of 4 x 256 tokens. Data: 4 batches of 8 x 256 tokens. Both sides compute the full forward pass and the per-token CE (no logits written).
resae's rate is the one its progress line reports for the forward loop (token reads, passes and
/ce writes; model loading excluded); PyTorch's is timed around the same loop. Best of --repeats.
Run through tests/bench/forward_bench.sh, which sets OPENBLAS_CORETYPE for both.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))

CFG = dict(hidden_size=512, num_attention_heads=8, num_hidden_layers=8, intermediate_size=2048, vocab_size=50304,
           rotary_pct=0.25, use_parallel_residual=True, max_position_embeddings=2048)
GEMMA_CFG = dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=4, head_dim=96, num_hidden_layers=8,
                 intermediate_size=2048, vocab_size=50304, sliding_window=128, query_pre_attn_scalar=96,
                 attn_logit_softcapping=50.0, final_logit_softcapping=30.0, max_position_embeddings=2048)
B, T, NBATCH = 8, 256, 4
# --shape pythia-1.4b: the real model's shape (random weights, fp32: 5.6 GB on disk), 1 batch of 4 x 256
PYTHIA_1_4B = dict(hidden_size=2048, num_attention_heads=16, num_hidden_layers=24, intermediate_size=8192)


def reference(arch):
    """The PyTorch reference module for the architecture."""
    import gemma2
    import neox
    return gemma2 if arch == "gemma2" else neox


def prepare(workdir, arch="neox", shape="small"):
    import torch
    ref = reference(arch)
    mdir = os.path.join(workdir, ("model" if arch == "neox" else "model_" + arch) + ("" if shape == "small" else "_" + shape))
    tok_path = os.path.join(workdir, "tokens.h5" if shape == "small" else f"tokens_{shape}.h5")
    if not os.path.exists(os.path.join(mdir, "model.safetensors")):
        torch.manual_seed(0)
        if arch == "gemma2":
            model = ref.Gemma2(ref.make_config(**GEMMA_CFG))
        else:
            model = ref.GPTNeoX(ref.make_config(**dict(CFG, **(PYTHIA_1_4B if shape != "small" else {}))))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2:
                    p.normal_(0, 0.02)
        ref.save_checkpoint(model, mdir)
    if not os.path.exists(tok_path):
        rng = np.random.default_rng(0)
        with h5py.File(tok_path, "w") as f:
            f["tokens"] = rng.integers(0, CFG["vocab_size"], size=(B * NBATCH, T)).astype(np.int32)
    return mdir, tok_path


def bench_torch(mdir, tok_path, threads, repeats, arch="neox"):
    import torch
    import neox
    torch.set_num_threads(threads)
    model = reference(arch).load_checkpoint(mdir).eval()
    with h5py.File(tok_path, "r") as f:
        toks = torch.from_numpy(f["tokens"][:].astype(np.int64))
    best = 0.0
    best_cpu = 0.0
    with torch.no_grad():
        model(toks[:1, :16])  # warm-up
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            ce_sum = 0.0
            for i in range(NBATCH):
                batch = toks[i * B:(i + 1) * B]
                logits, _ = model(batch)
                ce_sum += float(neox.token_ce(logits, batch).sum())
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            best = max(best, B * NBATCH * T / dt)
            best_cpu = max(best_cpu, B * NBATCH * T / dc)
    return best, ce_sum / (B * NBATCH * (T - 1)), best_cpu


def bench_resae(binary, mdir, tok_path, threads, repeats, workdir):
    best, best_cpu, mean_ce = 0.0, 0.0, None
    out = os.path.join(workdir, "out.h5")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), RESAE_LOG_LEVEL="info")
    for _ in range(repeats):
        r = subprocess.run([binary, "forward", "--model", mdir, "--tokens", tok_path, "--out", out, "--batch", str(B),
                            "--threads", str(threads)], env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"resae forward failed:\n{r.stderr}")
        m = re.search(r"forward: \d+ tok done in \S+ \(([\d.]+) tok/s\)", r.stderr)
        best = max(best, float(m.group(1)))
        m = re.search(r"([\d.]+) tok per CPU second", r.stderr)
        best_cpu = max(best_cpu, float(m.group(1)))
        with h5py.File(out, "r") as f:
            mean_ce = float(f.attrs["mean_ce"])
    return best, mean_ce, best_cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/resae_forward_bench")
    ap.add_argument("--arch", choices=("neox", "gemma2"), default="neox")
    ap.add_argument("--shape", choices=("small", "pythia-1.4b"), default="small")
    a = ap.parse_args()
    global B, NBATCH
    if a.shape != "small":
        if a.arch != "neox":
            sys.exit("--shape pythia-1.4b is a GPT-NeoX shape")
        B, NBATCH = 4, 1
    os.makedirs(a.workdir, exist_ok=True)
    mdir, tok_path = prepare(a.workdir, a.arch, a.shape)
    shape = ("GPT-NeoX d=512 heads=8 layers=8 ff=2048" if a.arch == "neox" else
             "Gemma-2 d=512 heads=8/4 head_dim=96 layers=8 window=128 ff=2048 (GeGLU) soft-caps 50/30")
    if a.shape != "small":
        shape = "GPT-NeoX at the Pythia-1.4B shape: d=2048 heads=16 layers=24 ff=8192"
    print(f"model {shape} vocab=50304 fp32; {NBATCH} batches of {B} x {T} tokens; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; best of {a.repeats}")
    for th in [int(x) for x in a.threads.split(",")]:
        # torch reads OPENBLAS_NUM_THREADS at load: measure it in a child with the variable set.
        # resae and torch runs alternate so both see the same machine load; best of each.
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(th), OMP_NUM_THREADS=str(th))
        code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                f"import forward_bench as fb; fb.B, fb.NBATCH = {B}, {NBATCH}; "
                f"r = fb.bench_torch({mdir!r}, {tok_path!r}, {th}, 1, {a.arch!r}); "
                f"print(r[0], r[1], r[2])")
        c_best = t_best = c_cpu = t_cpu = 0.0
        for rep in range(a.repeats):
            c_rate, c_ce, c_cr = bench_resae(a.binary, mdir, tok_path, th, 1, a.workdir)
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if r.returncode:
                sys.exit(f"torch run failed:\n{r.stderr}")
            t_rate, t_ce, t_cr = (float(x) for x in r.stdout.split())
            print(f"  threads {th} run {rep + 1}: resae {c_rate:7.0f} tok/s ({c_cr:6.0f} tok/CPU-s), "
                  f"pytorch {t_rate:7.0f} tok/s ({t_cr:6.0f} tok/CPU-s)", flush=True)
            c_best, t_best = max(c_best, c_rate), max(t_best, t_rate)
            c_cpu, t_cpu = max(c_cpu, c_cr), max(t_cpu, t_cr)
        print(f"threads {th}: resae {c_best:7.0f} tok/s   pytorch {t_best:7.0f} tok/s   ratio resae/pytorch "
              f"{c_best / t_best:5.2f}   | per CPU second: resae {c_cpu:6.0f}, pytorch {t_cpu:6.0f}, ratio "
              f"{c_cpu / t_cpu:5.2f}   (mean CE resae {c_ce:.6f}, pytorch {t_ce:.6f})", flush=True)

if __name__ == "__main__":
    main()
