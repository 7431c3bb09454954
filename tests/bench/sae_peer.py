#!/usr/bin/env python3
"""Peer side of tests/bench/sae_peer.sh: EleutherAI sparsify's own TopK SAE training step.

Trains sparsify's `SparseCoder` on CPU in float32 on the rows of DIR/pool.f32 (written by the C
benchmark; consecutive rows, cycled, the same batches in the same order as the C trainer) and
reproduces, step by step, what `sparsify.trainer.Trainer.fit` does for one SAE with
loss_fn="fvu", grad_acc_steps = micro_acc_steps = 1 and no excluded tokens:

  step 0 only : b_dec <- batch mean (the Trainer's "centre the pre-activations" init)
  every step  : set_decoder_norm_to_unit_norm(); dead_mask = num_tokens_since_fired >
                dead_feature_threshold; out = sae(x, x, dead_mask=...);
                did_fire[out.latent_indices] = True;
                loss = fvu + auxk_alpha * auxk_loss + multi_topk_fvu / 8; loss.backward();
                remove_gradient_parallel_to_decoder_directions(); Adam step; zero_grad;
                LR scheduler step; num_tokens_since_fired += tokens; [did_fire] = 0.
Initialisation is sparsify's own: torch.manual_seed(seed 0, its init_seeds default), then
SparseCoder(d, cfg, dtype=float32) (nn.Linear encoder with zero bias, W_dec = row-normalised copy
of W_enc, b_dec = 0). The decoder is sparsify's eager `embedding_bag` path (its fallback when
Triton is absent, which is what it runs on CPU).

Recipe choices (sparsify's TrainConfig defaults, except where marked):
  * optimizer "adam" (NOT its default "signum" = schedule-free SignSGD; resae uses Adam) with
    its betas/eps (torch defaults 0.9, 0.999, 1e-8) and its lr rule 2e-4 / sqrt(num_latents/2^14);
    bitsandbytes' 8-bit Adam is not installed, so the Trainer itself would fall back to
    torch.optim.Adam, which is used here.
  * LR schedule: transformers' get_linear_schedule_with_warmup (linear warm-up, then linear
    decay to 0 at the last step), re-implemented below with the same formula; the warm-up is
    steps // 10 (same as the C side) instead of its default lr_warmup_steps=1000, which in a
    20-step run would keep the lr near 0.
  * auxk_alpha = 1/32 (NOT its default 0.0, which drops dead_mask and AuxK entirely); resae uses
    1/32. dead_feature_threshold is its default (10M tokens), as in resae, so in a short run no
    latent is dead and the AuxK branch (a second decode) is not entered on either side.
  * zero_grad(set_to_none=True): torch >= 2's default, which sparsify's code relies on;
    torch 1.13's default is False.

Prints tokens/s (wall, steps after the first 2), tokens per CPU second (process CPU time, all
threads), the final FVU (mean over the last steps/10 steps; FVU = sum ||x - x_hat||^2 /
sum ||x - mean_batch(x)||^2 per batch, sparsify's own `fvu` output, the same definition as resae),
and the time of the encoder product alone (x @ W_enc^T at the batch shape); writes
DIR/peer_result.txt.

With INIT = resae (sae_peer.sh --init resae) the peer starts from resae's initial parameters
(DIR/init.f32, the C trainer's slab [W_enc (n,d) | b_enc (n) | W_dec (n,d) | b_dec (d)], b_dec
already the geometric median, so the step-0 mean is skipped) and follows resae's recipe where the
two differ: Adam eps 6.25e-10 and resae's schedule (linear warm-up over steps/10, constant, linear
decay to 0 over the last 20% of the steps, rs_sae_lr_at). Everything else stays sparsify's code:
both sides then train the same model from the same point, so their FVU after the same tokens must
agree and the tokens/s ratio is at equal FVU.
  sae_peer.py DIR D N K BATCH STEPS THREADS SPARSIFY_DIR [own|resae]
"""
import dataclasses
import math
import os
import re
import sys
import time
import types

import numpy as np
import torch


def install_stubs():
    """Stand-ins for import-time dependencies Debian lacks. Only `sparsify.config`,
    `sparsify.sparse_coder`, `sparsify.fused_encoder` and `sparsify.utils` are imported (the
    package __init__ is bypassed because it imports the Trainer, which pulls in datasets,
    schedulefree, tqdm, bitsandbytes, ...). None of the stubbed names is used by the training step,
    with one exception: einops.einsum, which remove_gradient_parallel_to_decoder_directions calls,
    is given a faithful implementation (named axes mapped to letters, then torch.einsum, which is
    what einops does)."""

    def mod(name, **attrs):
        if name in sys.modules:
            return sys.modules[name]
        try:  # use the real package when it is installed
            __import__(name)
            return sys.modules[name]
        except ImportError:
            pass
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, m)
        return m

    def unused(what):
        def f(*a, **k):
            raise RuntimeError(f"{what} is a benchmark stub (not used by the training step)")
        return f

    def einsum(*args):
        *tensors, pattern = args
        lhs, rhs = pattern.split("->")
        names = {}

        def axes(s):
            return "".join(names.setdefault(a, "abcdefghijklmnopqrstuvwxyz"[len(names)]) for a in s.split())

        ins = [axes(s) for s in lhs.split(",")]
        return torch.einsum(",".join(ins) + "->" + axes(rhs), *tensors)

    mod("einops", einsum=einsum)
    mod("natsort", natsorted=sorted)
    mod("safetensors", safe_open=unused("safetensors.safe_open"))
    mod("safetensors.torch", load_model=unused("safetensors.torch.load_model"),
        save_model=unused("safetensors.torch.save_model"))
    mod("huggingface_hub", snapshot_download=unused("huggingface_hub.snapshot_download"))

    class Serializable:  # config base class: only to_dict/from_dict/save_json, not used here
        pass

    def list_field(*default):
        return dataclasses.field(default_factory=lambda: list(default))

    mod("simple_parsing", Serializable=Serializable, list_field=list_field)
    mod("accelerate")
    mod("accelerate.utils", send_to_device=unused("accelerate.utils.send_to_device"))

    class PreTrainedModel:  # type annotations only
        pass

    mod("transformers", PreTrainedModel=PreTrainedModel)


def install_torch_shims():
    """torch >= 2 behaviour that sparsify relies on, for Debian's torch 1.13."""
    # sparse_coder.py evaluates torch.cuda.is_bf16_supported() at import (autocast decorator);
    # torch 2 returns False without CUDA, torch 1.13 raises "Torch not compiled with CUDA enabled".
    real = torch.cuda.is_bf16_supported
    torch.cuda.is_bf16_supported = lambda *a, **k: torch.cuda.is_available() and real(*a, **k)

    # The same decorator, @torch.autocast("cuda", dtype=torch.bfloat16, enabled=False): torch 1.13
    # raises "Current CUDA Device does not support bfloat16" even when disabled; torch 2 only
    # checks when enabled. A disabled autocast does nothing, so drop the dtype in that case.
    class autocast(torch.autocast):
        def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
            if device_type == "cuda" and not enabled:
                dtype = None
            super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    torch.autocast = autocast


def import_sparsify(root):
    sys.path.insert(0, root)
    pkg = types.ModuleType("sparsify")  # bypass sparsify/__init__.py (it imports the Trainer)
    pkg.__path__ = [os.path.join(root, "sparsify")]
    sys.modules["sparsify"] = pkg
    # utils.py picks its sparse decoder at import: Triton kernel if `triton` imports, else eager.
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    from sparsify.config import SparseCoderConfig, TrainConfig
    from sparsify.sparse_coder import SparseCoder
    import sparsify.utils as su
    return SparseCoderConfig, TrainConfig, SparseCoder, su


def check_trainer_source(root):
    """Warn if the peer's Trainer no longer contains the lines this script reproduces."""
    try:
        src = open(os.path.join(root, "sparsify", "trainer.py")).read()
    except OSError:
        return ["sparsify/trainer.py not found"]
    want = {
        "lr rule": r"2e-4 / \(sae\.num_latents / \(2\*\*14\)\) \*\* 0\.5",
        "schedule": r"get_linear_schedule_with_warmup\(\s*adam, cfg\.lr_warmup_steps, num_batches",
        "b_dec init": r"raw\.b_dec\.data = mean",
        "unit norm": r"raw\.set_decoder_norm_to_unit_norm\(\)",
        "dead mask": r"num_tokens_since_fired\[name\] > self\.cfg\.dead_feature_threshold",
        "loss": r"out\.fvu \+ self\.cfg\.auxk_alpha \* out\.auxk_loss \+ out\.multi_topk_fvu / 8",
        "grad projection": r"remove_gradient_parallel_to_decoder_directions\(\)",
        "dead update": r"counts \+= num_tokens_in_step\s+counts\[did_fire\[name\]\] = 0",
    }
    return [k for k, pat in want.items() if not re.search(pat, src)]


def resae_schedule(opt, steps, decay_frac=0.2):
    """rs_sae_lr_at (src/sae/sae_train.c) with warm-up steps // 10: the lr factor of step s."""
    warmup, decay = steps // 10, int(decay_frac * steps + 0.5)

    def f(s):
        v = (s + 1) / warmup if warmup > 0 and s < warmup else 1.0
        if decay > 0 and s >= steps - decay:
            v *= (steps - s) / decay
        return v if s < steps else 0.0
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def load_resae_init(sae, path, d, n):
    """resae's initial slab into sparsify's SparseCoder (same parameter shapes, same roles)."""
    slab = np.fromfile(path, dtype=np.float32)
    if slab.size != 2 * n * d + n + d:
        raise SystemExit(f"sae_peer.py: {path} holds {slab.size} floats, not the {2 * n * d + n + d} of d={d}, n={n}")
    w_enc, b_enc, w_dec, b_dec = np.split(slab, [n * d, n * d + n, 2 * n * d + n])
    with torch.no_grad():
        sae.encoder.weight.copy_(torch.from_numpy(w_enc.reshape(n, d)))
        sae.encoder.bias.copy_(torch.from_numpy(b_enc))
        sae.W_dec.copy_(torch.from_numpy(w_dec.reshape(n, d)))
        sae.b_dec.copy_(torch.from_numpy(b_dec))


def linear_schedule_with_warmup(opt, warmup, total):
    """transformers.get_linear_schedule_with_warmup (same lambda)."""
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def main():
    out, d, n, k, B, steps, threads = sys.argv[1], *map(int, sys.argv[2:8])
    root = sys.argv[8]
    init = sys.argv[9] if len(sys.argv) > 9 else "own"
    if init not in ("own", "resae"):
        raise SystemExit(f"sae_peer.py: INIT must be own or resae, not {init!r}")
    torch.set_num_threads(threads)
    install_stubs()
    install_torch_shims()
    SparseCoderConfig, TrainConfig, SparseCoder, su = import_sparsify(root)
    missing = check_trainer_source(root)
    if missing:
        print(f"WARNING: sparsify's trainer.py no longer matches this script at: {', '.join(missing)}",
              file=sys.stderr)
    decoder = "eager embedding_bag" if su.decoder_impl is su.eager_decode else "triton"

    cfg = TrainConfig(sae=SparseCoderConfig(num_latents=n, k=k), optimizer="adam",
                      auxk_alpha=1 / 32, lr_warmup_steps=steps // 10)
    pool = torch.from_numpy(np.fromfile(os.path.join(out, "pool.f32"), dtype=np.float32).reshape(-1, d))

    torch.set_float32_matmul_precision("high")  # as Trainer.fit (no effect on CPU)
    torch.manual_seed(cfg.init_seeds[0])
    sae = SparseCoder(d, cfg.sae, "cpu", dtype=torch.float32)
    lr = cfg.lr or 2e-4 / (sae.num_latents / (2 ** 14)) ** 0.5
    if init == "resae":
        load_resae_init(sae, os.path.join(out, "init.f32"), d, n)
        opt = torch.optim.Adam([dict(params=sae.parameters(), lr=lr)], eps=6.25e-10)
        sched = resae_schedule(opt, steps)
    else:
        opt = torch.optim.Adam([dict(params=sae.parameters(), lr=lr)])
        sched = linear_schedule_with_warmup(opt, cfg.lr_warmup_steps, steps)
    since = torch.zeros(sae.num_latents, dtype=torch.long)
    did_fire = torch.zeros(sae.num_latents, dtype=torch.bool)
    acc_steps = cfg.grad_acc_steps * cfg.micro_acc_steps

    # the encoder product alone, x @ W_enc^T at the batch shape (as the C side's standalone SGEMM)
    with torch.no_grad():
        xg = pool[torch.arange(B) % pool.shape[0]].contiguous()
        W = sae.encoder.weight
        torch.mm(xg, W.t())
        reps = 3
        tg, cg = time.perf_counter(), time.process_time()
        for _ in range(reps):
            torch.mm(xg, W.t())
        gemm_s, gemm_cpu = (time.perf_counter() - tg) / reps, (time.process_time() - cg) / reps
        del xg

    tail = max(1, steps // 10)
    fvu_tail, warm, t0, c0 = 0.0, 2, None, None
    n_dead_max = 0
    for s in range(steps):
        if s == warm:
            t0, c0 = time.perf_counter(), time.process_time()
        rows = torch.arange(s * B, (s + 1) * B) % pool.shape[0]
        x = pool[rows]
        if s == 0 and not cfg.finetune and init == "own":
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        if sae.cfg.normalize_decoder and not cfg.sae.transcode:
            sae.set_decoder_norm_to_unit_norm()
        dead_mask = since > cfg.dead_feature_threshold if cfg.auxk_alpha > 0 else None
        if dead_mask is not None:
            n_dead_max = max(n_dead_max, int(dead_mask.sum()))
        o = sae(x=x, y=x, dead_mask=dead_mask)
        did_fire[o.latent_indices.flatten()] = True
        fvu, auxk = float(o.fvu.detach()), float(o.auxk_loss.detach())
        loss = o.fvu + cfg.auxk_alpha * o.auxk_loss + o.multi_topk_fvu / 8
        loss.div(acc_steps).backward()
        if cfg.sae.normalize_decoder and not cfg.sae.transcode:
            sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        with torch.no_grad():
            since += B
            since[did_fire] = 0
            did_fire.zero_()
        if not math.isfinite(fvu):
            print(f"sparsify: non-finite FVU at step {s}", file=sys.stderr)
            return 1
        if s >= steps - tail:
            fvu_tail += fvu / tail
        if s % 10 == 0 or s == steps - 1:
            print(f"sparsify step {s}: fvu {fvu:.4f} auxk {auxk:.4f}", file=sys.stderr, flush=True)
    el = (time.perf_counter() - t0) / (steps - warm)
    cpu = (time.process_time() - c0) / (steps - warm)
    flop = 2.0 * B * n * d
    print(f"sparsify: {steps} steps of {B} tokens, {1e3 * el:.1f} ms/step wall, {B / el:.0f} tokens/s "
          f"({B / cpu:.0f} tokens per CPU second), final fvu (mean last {tail} steps) {fvu_tail:.4f}, "
          f"{threads} thread(s), lr {lr:.3g}, decoder {decoder}, max dead latents {n_dead_max}, init {init}")
    print(f"sparsify encoder product {B}x{n}x{d}: {1e3 * gemm_s:.1f} ms wall ({flop / gemm_s * 1e-9:.1f} GFLOP/s), "
          f"{1e3 * gemm_cpu:.1f} ms CPU; step / encoder product = {el / gemm_s:.2f}x wall, {cpu / gemm_cpu:.2f}x CPU")
    with open(os.path.join(out, "peer_result.txt"), "w") as f:
        f.write(f"tokens_per_s {B / el:.3f}\ntokens_per_cpu_s {B / cpu:.3f}\nfvu {fvu_tail:.6f}\n"
                f"gemm_wall_s {gemm_s:.6f}\ngemm_cpu_s {gemm_cpu:.6f}\nstep_wall_s {el:.6f}\nstep_cpu_s {cpu:.6f}\n"
                f"max_dead {n_dead_max}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
