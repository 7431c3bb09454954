"""Train the embedded demo checkpoint: a small GPT-NeoX (Pythia-style) byte-level model on the Python
standard library sources (build_corpus.py), saved with neox.save_checkpoint.

Model: 8 layers, d_model 128, 4 heads, rotary_pct 0.25, parallel residual, intermediate 4*d,
vocab 256, context 256, untied embeddings, exact GELU (neox.py).
Initialisation (GPT-NeoX/Pythia style): weights N(0, 0.02), output projections of attention and MLP
(attention.dense, mlp.dense_4h_to_h) N(0, 0.02 / sqrt(2 * n_layers)), biases 0, layer norms (1, 0).
Data: every step draws BATCH windows of SEQ_LEN bytes at uniform random offsets (torch.Generator
seeded with SEED) from the concatenated train files (build_corpus.train_stream), so the data order
is fixed by the seed. Loss: mean next-byte CE over the SEQ_LEN-1 predicted positions.
Optimiser: AdamW (betas 0.9/0.95, weight decay 0.1 on matrices except the embedding), gradient-norm
clipping at 1.0, and a warmup-stable-decay schedule: linear warmup over WARMUP steps to LR_MAX,
constant LR_MAX, then linear decay to LR_MIN over the last DECAY_FRAC of the steps. The stable
phase does not depend on --steps, so a run can be continued from its state file (--resume) with a
larger --steps and gives the same weights as one uninterrupted run of that length (up to the
non-associativity of threaded float reductions).
Held-out CE: the same mean over the shipped validation windows (build_corpus.split_windows 'val');
during training on a fixed evenly spaced subset of EVAL_SUBSET windows, at the end on all of them.

Usage (from the repository root):
  OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/reference/demo/train_demo_model.py \
      --out configs/demo/model --log configs/demo/train_log.txt
"""
import argparse
import math
import os
import sys
import time

# OpenBLAS keeps its own thread pool apart from torch.set_num_threads; on a shared machine its
# spinning threads halve the speed, so BLAS runs on the calling thread only.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import build_corpus  # noqa: E402
import neox  # noqa: E402

SEED = 1234
BATCH = 16
LR_MAX = 3e-3
LR_MIN = 1e-4
WARMUP = 100
DECAY_FRAC = 0.25
WEIGHT_DECAY = 0.1
EVAL_SUBSET = 128
EVAL_EVERY = 50


def model_config(d, n_layers):
    return neox.make_config(hidden_size=d, num_attention_heads=4, num_hidden_layers=n_layers,
                            intermediate_size=4 * d, vocab_size=256, max_position_embeddings=build_corpus.SEQ_LEN,
                            rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False)


def init_weights(model, n_layers):
    out_std = 0.02 / math.sqrt(2 * n_layers)
    for name, p in model.named_parameters():
        if name.endswith("layernorm.weight") or name.endswith("final_layer_norm.weight"):
            torch.nn.init.ones_(p)
        elif name.endswith(".bias"):
            torch.nn.init.zeros_(p)
        elif name.endswith("attention.dense.weight") or name.endswith("dense_4h_to_h.weight"):
            torch.nn.init.normal_(p, 0.0, out_std)
        else:
            torch.nn.init.normal_(p, 0.0, 0.02)


def lr_at(step, steps):
    if step < WARMUP:
        return LR_MAX * (step + 1) / WARMUP
    decay_start = steps - int(DECAY_FRAC * steps)
    if step < decay_start:
        return LR_MAX
    frac = (step - decay_start + 1) / max(1, steps - decay_start)
    return LR_MAX + (LR_MIN - LR_MAX) * frac


@torch.no_grad()
def heldout_ce(model, windows, batch=64):
    """Mean next-byte CE over all predicted positions of the windows (n, SEQ_LEN) int64."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        x = windows[i: i + batch]
        logits, _ = model(x)
        ce = neox.token_ce(logits, x)
        total += ce.double().sum().item()
        count += ce.numel()
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--state", default="build/demo_train_state.pt",
                    help="training state (weights, optimiser, data generator) saved at every evaluation")
    ap.add_argument("--resume", action="store_true", help="continue from --state, appending to --log")
    ap.add_argument("--root", default=build_corpus.ROOT)
    ap.add_argument("--out", default="configs/demo/model")
    ap.add_argument("--log", default="configs/demo/train_log.txt")
    ap.add_argument("--no-final-eval", action="store_true", help="skip the full held-out CE at the end")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    files = build_corpus.load_corpus(args.root)
    stream = torch.from_numpy(build_corpus.train_stream(files).astype("int64"))
    val, _, _, _ = build_corpus.split_windows(files, "val")
    val = torch.from_numpy(val.astype("int64"))
    sub = val[torch.linspace(0, val.shape[0] - 1, min(EVAL_SUBSET, val.shape[0])).long()]

    cfg = model_config(args.d, args.layers)
    model = neox.GPTNeoX(cfg)
    init_weights(model, args.layers)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed_in" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed_in" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR_MAX, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(SEED)
    L = build_corpus.SEQ_LEN
    offsets = torch.arange(L)

    start = 0
    if args.resume:
        st = torch.load(args.state)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        start = st["step"]
        if lr_at(start - 1, args.steps) != LR_MAX and start > WARMUP:
            raise SystemExit(f"{args.state} is at step {start}, past the start of the decay for --steps {args.steps}")
    os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.state)), exist_ok=True)
    log = open(args.log, "a" if args.resume else "w")

    def say(msg):
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    if args.resume:
        say(f"# resumed from {args.state} at step {start} with --steps {args.steps}")
    say(f"# demo model: d={args.d} layers={args.layers} heads=4 params={n_params} seed={SEED} batch={BATCH}x{L} "
        f"steps={args.steps} lr={LR_MAX}->{LR_MIN} warmup={WARMUP} decay_frac={DECAY_FRAC} wd={WEIGHT_DECAY} threads={args.threads} "
        f"torch={torch.__version__}")
    say(f"# train stream {stream.numel()} bytes; held-out {val.shape[0]} windows; subset {sub.shape[0]}")
    say("# step  lr  train_loss(mean since last line)  heldout_ce_subset  elapsed_s")
    t0 = time.time()
    run_loss, run_n = 0.0, 0
    for step in range(start, args.steps):
        lr = lr_at(step, args.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, stream.numel() - L + 1, (BATCH,), generator=gen)
        x = stream[starts[:, None] + offsets[None, :]]
        logits, _ = model(x)
        loss = neox.token_ce(logits, x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += loss.item()
        run_n += 1
        if (step + 1) % EVAL_EVERY == 0 or step + 1 == args.steps or step == 0:
            ce = heldout_ce(model, sub)
            say(f"{step + 1:6d}  {lr:.2e}  {run_loss / run_n:.4f}  {ce:.4f}  {time.time() - t0:.0f}")
            run_loss, run_n = 0.0, 0
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                        "step": step + 1}, args.state + ".tmp")
            os.replace(args.state + ".tmp", args.state)
    neox.save_checkpoint(model, args.out)
    say(f"# saved {args.out} after {time.time() - t0:.0f} s")
    if not args.no_final_eval:
        ce = heldout_ce(model, val)
        say(f"# final held-out CE over all {val.shape[0]} validation windows: {ce:.6f} nats/byte "
            f"({time.time() - t0:.0f} s)")
    log.close()


if __name__ == "__main__":
    main()
