"""Tiny GPT-NeoX checkpoints, token files and expected outputs for resae's runtime tests.

Run:  OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/reference/make_runtime_fixtures.py [OUTDIR]
(default OUTDIR: tests/data/runtime). Seeded; rerunning reproduces the files.

Each fixture directory holds (3 sequences of 12 tokens unless the fixture says otherwise) a Hugging Face checkpoint (config.json + safetensors), token files and
expected.h5 computed by the PyTorch reference (tests/reference/neox.py) in float64 from the weights
read back from the checkpoint (so bf16/f16 checkpoints are compared on the same rounded weights):
  /tokens       int32   (n_seq, T)
  /logits       float64 (n_seq, T, V)
  /ce           float64 (n_seq, T-1)   CE of predicting token t+1 at position t
  /resid/<l>    float64 (n_seq, T, d)  l = -1 (embedding output), 0..L-1 (after block l)
Token files: tokens.h5 (/tokens int32, the same sequences), tokens_u16.bin (uint16, the same
sequences followed by a 5-token remainder), and for one fixture tokens_u32.bin (uint32).
"""
import json
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import neox  # noqa: E402

N_SEQ, T = 3, 12

FIXTURES = [
    # Pythia layout: rotary 0.25 (2 of 8 channels), parallel residual, fp32, plus the buffers real
    # Pythia checkpoints carry (causal mask, masked_bias, inv_freq) which the loader must ignore.
    dict(name="base", dtype=torch.float32, shards=1, pythia_buffers=True,
         cfg=dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128,
                  vocab_size=96, rotary_pct=0.25, use_parallel_residual=True, max_position_embeddings=32)),
    # 3 heads of 12, full rotary, sequential residual, non-default eps and base, 3 layers.
    dict(name="seq_odd", dtype=torch.float32, shards=1, u32=True,
         cfg=dict(hidden_size=36, num_attention_heads=3, num_hidden_layers=3, intermediate_size=72,
                  vocab_size=80, rotary_pct=1.0, use_parallel_residual=False, layer_norm_eps=1e-6,
                  rotary_emb_base=500, max_position_embeddings=64)),
    # 5 heads of 8, no attention biases, tied embeddings, bf16 weights.
    dict(name="bf16_tied", dtype=torch.bfloat16, shards=1,
         cfg=dict(hidden_size=40, num_attention_heads=5, num_hidden_layers=2, intermediate_size=160,
                  vocab_size=64, rotary_pct=0.5, use_parallel_residual=True, attention_bias=False,
                  tie_word_embeddings=True, max_position_embeddings=16)),
    # 3 heads of 10 with rotary_pct 0.25 -> int(2.5) = 2 channels, sequential, f16, two shards.
    dict(name="f16_sharded", dtype=torch.float16, shards=2,
         cfg=dict(hidden_size=30, num_attention_heads=3, num_hidden_layers=2, intermediate_size=60,
                  vocab_size=72, rotary_pct=0.25, use_parallel_residual=False, max_position_embeddings=16)),
    # sequences longer than one block of queries in the attention kernel (RS_ATTN_QBLOCK = 128)
    dict(name="long_seq", dtype=torch.float32, shards=1, n_seq=2, T=160,
         cfg=dict(hidden_size=16, num_attention_heads=2, num_hidden_layers=2, intermediate_size=32,
                  vocab_size=40, rotary_pct=0.5, use_parallel_residual=True, max_position_embeddings=256)),
]


def randomize(model, seed):
    """Weights large enough that attention is far from uniform and every sublayer matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("final_layer_norm.weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name == "gpt_neox.embed_in.weight":
                # tied: the same matrix makes the logits; keep them at a realistic scale
                std = 0.4 if model.cfg["tie_word_embeddings"] else 1.0
                p.copy_(std * torch.randn(p.shape, generator=g))
            else:
                gain = 2.0 if "query_key_value" in name else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def pythia_buffers(cfg):
    P = cfg["max_position_embeddings"]
    hs = cfg["hidden_size"] // cfg["num_attention_heads"]
    rot = int(hs * cfg["rotary_pct"])
    out = {}
    for layer in range(cfg["num_hidden_layers"]):
        pre = f"gpt_neox.layers.{layer}.attention."
        out[pre + "bias"] = torch.ones(P, P, dtype=torch.bool).tril().view(1, 1, P, P)
        out[pre + "masked_bias"] = torch.tensor(-1e9)
        out[pre + "rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    return out


def expected(model, tokens):
    """Logits, CE and every residual stream in float64."""
    m = model.double()
    resid = {}

    def hook(layer, h):
        resid[layer] = h.detach().clone()

    with torch.no_grad():
        logits, _ = m(tokens, hook=hook)
        ce = neox.token_ce(logits, tokens)
    return logits, ce.double(), resid


def make(fx, outdir, seed):
    torch.manual_seed(seed)
    cfg = neox.make_config(**fx["cfg"])
    model = neox.GPTNeoX(cfg)
    randomize(model, seed)
    d = os.path.join(outdir, fx["name"])
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    extra = pythia_buffers(cfg) if fx.get("pythia_buffers") else None
    neox.save_checkpoint(model, d, dtype=fx["dtype"], shards=fx["shards"], extra=extra)
    ref = neox.load_checkpoint(d)  # the weights as stored (rounded for bf16/f16), as fp32

    rng = np.random.default_rng(seed)
    V = cfg["vocab_size"]
    toks = rng.integers(0, V, size=(fx.get("n_seq", N_SEQ), fx.get("T", T)), dtype=np.int64)
    toks[0, :3] = [0, V - 1, 0]  # the id range edges
    logits, ce, resid = expected(ref, torch.from_numpy(toks))

    with h5py.File(os.path.join(d, "expected.h5"), "w") as f:
        f["tokens"] = toks.astype(np.int32)
        f["logits"] = logits.numpy()
        f["ce"] = ce.numpy()
        g = f.create_group("resid")
        for layer, h in sorted(resid.items()):
            g[str(layer)] = h.numpy()
        f.attrs["fixture"] = fx["name"]
    with h5py.File(os.path.join(d, "tokens.h5"), "w") as f:
        f["tokens"] = toks.astype(np.int32)
    tail = rng.integers(0, V, size=5)
    np.concatenate([toks.reshape(-1), tail]).astype("<u2").tofile(os.path.join(d, "tokens_u16.bin"))
    if fx.get("u32"):
        toks.reshape(-1).astype("<u4").tofile(os.path.join(d, "tokens_u32.bin"))
    mean_ce = float(ce.mean())
    print(f"{fx['name']}: d={cfg['hidden_size']} heads={cfg['num_attention_heads']} layers={cfg['num_hidden_layers']} "
          f"V={V} dtype={fx['dtype']} shards={fx['shards']} mean CE {mean_ce:.4f} "
          f"max|logit| {float(logits.abs().max()):.2f}")


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "data", "runtime")
    torch.set_num_threads(1)
    for i, fx in enumerate(FIXTURES):
        make(fx, outdir, 1000 + i)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(outdir) for f in fs)
    print(f"total {total / 1e6:.2f} MB in {outdir}")


if __name__ == "__main__":
    main()
