"""Tiny Gemma-2 checkpoints, token files and expected outputs for resae's runtime tests.

Run:  OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/reference/make_gemma2_fixtures.py [OUTDIR]
(default OUTDIR: tests/data/runtime). Seeded; rerunning reproduces the files. Needs PyTorch (the
tests do not: they read the committed expected.h5).

Each fixture directory has the layout of make_runtime_fixtures.py's (config.json + safetensors,
tokens.h5, tokens_u16.bin with a 5-token remainder, expected.h5 with /tokens, /logits, /ce and
/resid/<l> in float64), computed by the PyTorch reference tests/reference/gemma2.py in float64 from
the weights read back from the checkpoint (bf16 checkpoints are compared on the same rounded weights).
Soft-caps are set low enough that tanh is far from linear on these random weights (the script prints
the share of attention scores and logits beyond half the cap).
"""
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gemma2  # noqa: E402
import neox  # noqa: E402

FIXTURES = [
    # GQA 2 (4 query heads, 2 kv heads), head_dim 12 != hidden 32 / 4 heads, 3 layers (sliding 0 and 2
    # by the default rule) with a window of 5 < 12 tokens, both soft-caps, query_pre_attn_scalar 16
    # != head_dim, tied embeddings, f32.
    dict(name="gemma2_gqa", dtype=torch.float32, shards=1,
         cfg=dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=12, num_hidden_layers=3,
                  intermediate_size=64, vocab_size=64, sliding_window=5, query_pre_attn_scalar=16,
                  attn_logit_softcapping=3.0, final_logit_softcapping=4.0, rms_norm_eps=1e-6, rope_theta=10000.0,
                  max_position_embeddings=32, hidden_act="gelu_pytorch_tanh")),
    # GQA 1 (2 heads, 2 kv heads), head_dim 16, explicit layer_types (full, sliding: the opposite of the
    # default rule) with a window of 3, no soft-caps (null), untied lm_head, bf16, two shards.
    dict(name="gemma2_bf16_sharded", dtype=torch.bfloat16, shards=2,
         cfg=dict(hidden_size=24, num_attention_heads=2, num_key_value_heads=2, head_dim=16, num_hidden_layers=2,
                  intermediate_size=48, vocab_size=48, sliding_window=3, query_pre_attn_scalar=16,
                  attn_logit_softcapping=None, final_logit_softcapping=None, rms_norm_eps=1e-5, rope_theta=500.0,
                  layer_types=["full_attention", "sliding_attention"], tie_word_embeddings=False,
                  max_position_embeddings=16)),
    # sequences longer than one block of queries (RS_ATTN_QBLOCK = 128) with a window of 100 that
    # reaches across the block boundary; GQA 2 with a single kv head; both soft-caps. q/k gain 1.5
    # (scores up to ~16): with gain 2 the fp32 rounding of scores near 30 alone gave a CE error of 6e-6.
    dict(name="gemma2_long", dtype=torch.float32, shards=1, n_seq=2, T=150, qk_gain=1.5,
         cfg=dict(hidden_size=16, num_attention_heads=2, num_key_value_heads=1, head_dim=8, num_hidden_layers=2,
                  intermediate_size=32, vocab_size=32, sliding_window=100, query_pre_attn_scalar=8,
                  attn_logit_softcapping=4.0, final_logit_softcapping=5.0, max_position_embeddings=256)),
]
N_SEQ, T = 3, 12


def randomize(model, seed, qk_gain=2.0):
    """Weights large enough that attention is far from uniform and every sublayer matters."""
    g = torch.Generator().manual_seed(seed)
    tied = model.cfg["tie_word_embeddings"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))  # applied as 1 + w
            elif name == "model.embed_tokens.weight":
                p.copy_((0.4 if tied else 1.0) * torch.randn(p.shape, generator=g))
            else:
                gain = qk_gain if ("q_proj" in name or "k_proj" in name) else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def cap_stats(model, tokens):
    """Share of attention scores (before the cap) and logits (before the cap) beyond half their cap."""
    scores, pre = [], []
    cfg = model.cfg

    def attn_hook(mod, inp, out):
        x = inp[0]
        B, T_, _ = x.shape
        q = mod.q_proj(x).view(B, T_, mod.nh, mod.hd).transpose(1, 2)
        k = mod.k_proj(x).view(B, T_, mod.nkv, mod.hd).transpose(1, 2).repeat_interleave(mod.nh // mod.nkv, 1)
        cos, sin = mod.rotary(T_, x.dtype)
        q = q * cos + gemma2.rotate_half(q) * sin
        k = k * cos + gemma2.rotate_half(k) * sin
        s = (q @ k.transpose(2, 3)) * mod.scaling
        scores.append(s[..., torch.tril(torch.ones(T_, T_, dtype=torch.bool))].reshape(-1))

    hs = [blk.self_attn.register_forward_hook(attn_hook) for blk in model.model.layers]
    hn = model.model.norm.register_forward_hook(lambda m, i, o: pre.append(model.lm_head(o).reshape(-1)))
    with torch.no_grad():
        model(tokens)
    for h in hs + [hn]:
        h.remove()
    s, lg = torch.cat(scores), torch.cat(pre)
    ca, cf = cfg["attn_logit_softcapping"], cfg["final_logit_softcapping"]
    fa = float((s.abs() > ca / 2).double().mean()) if ca else 0.0
    ff = float((lg.abs() > cf / 2).double().mean()) if cf else 0.0
    return fa, ff, float(s.abs().max()), float(lg.abs().max())


def make(fx, outdir, seed):
    torch.manual_seed(seed)
    cfg = gemma2.make_config(**fx["cfg"])
    model = gemma2.Gemma2(cfg)
    randomize(model, seed, fx.get("qk_gain", 2.0))
    d = os.path.join(outdir, fx["name"])
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    gemma2.save_checkpoint(model, d, dtype=fx["dtype"], shards=fx["shards"])
    ref = gemma2.load_checkpoint(d).double()  # the weights as stored (rounded for bf16), in float64

    rng = np.random.default_rng(seed)
    V = cfg["vocab_size"]
    toks = rng.integers(0, V, size=(fx.get("n_seq", N_SEQ), fx.get("T", T)), dtype=np.int64)
    toks[0, :3] = [0, V - 1, 0]  # the id range edges
    tt = torch.from_numpy(toks)
    resid = {}
    with torch.no_grad():
        logits, _ = ref(tt, hook=lambda layer, h: resid.__setitem__(layer, h.detach().clone()))
        ce = neox.token_ce(logits, tt).double()
        # token_ce goes through float32; recompute the CE in float64
        lsm = torch.log_softmax(logits[:, :-1], dim=-1)
        ce = -lsm.gather(-1, tt[:, 1:, None])[..., 0]
    fa, ff, ms, ml = cap_stats(ref, tt)

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
    print(f"{fx['name']}: d={cfg['hidden_size']} heads={cfg['num_attention_heads']}/{cfg['num_key_value_heads']} "
          f"head_dim={cfg['head_dim']} layers={cfg['num_hidden_layers']} sliding={gemma2.sliding_layers(cfg)} "
          f"window={cfg['sliding_window']} V={V} dtype={fx['dtype']} shards={fx['shards']} "
          f"mean CE {float(ce.mean()):.4f} max|logit| {float(logits.abs().max()):.2f}; "
          f"beyond half the cap: scores {fa:.1%} (max |s| {ms:.1f}), logits {ff:.1%} (max {ml:.1f})")


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "data", "runtime")
    torch.set_num_threads(1)
    for i, fx in enumerate(FIXTURES):
        make(fx, outdir, 2000 + i)
    total = sum(os.path.getsize(os.path.join(outdir, fx["name"], f)) for fx in FIXTURES
                for f in os.listdir(os.path.join(outdir, fx["name"])))
    print(f"total {total / 1e3:.0f} kB in {len(FIXTURES)} Gemma-2 fixtures")


if __name__ == "__main__":
    main()
