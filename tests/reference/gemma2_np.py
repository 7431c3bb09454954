"""Gemma-2 forward pass in float64 numpy, from Hugging Face's Gemma2ForCausalLM semantics.

The same model as tests/reference/gemma2.py (which needs PyTorch, for fixture making), for references
that run inside the test suite, where only numpy and h5py are installed (as tests/reference/neox_np.py
is for GPT-NeoX). Reads a checkpoint directory (config.json + model.safetensors or shards with
model.safetensors.index.json; F32, F16 or BF16). Call signature as neox_np.NeoX:
model(tokens, hook) -> (logits, {layer: resid}); hook(layer, h) may return a replacement for h.
The semantics are gemma2.py's docstring; the embedding normalizer is fp32(sqrt(hidden_size)), as
resae computes in fp32.

Self-check: python3 gemma2_np.py FIXTURE_DIR... compares with each fixture's expected.h5 (made by
make_gemma2_fixtures.py from gemma2.py) and exits non-zero beyond the tolerances below."""
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from neox_np import hooked_recorder, load_weights, log_softmax  # noqa: E402,F401  (log_softmax re-exported)

DEFAULTS = dict(rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=256, sliding_window=4096,
                final_logit_softcapping=30.0, attn_logit_softcapping=50.0, tie_word_embeddings=True)


class Gemma2:
    def __init__(self, directory):
        with open(os.path.join(directory, "config.json")) as f:
            c = dict(DEFAULTS)
            c.update(json.load(f))
        self.c = c
        self.d, self.nh, self.nkv, self.hd = (c["hidden_size"], c["num_attention_heads"],
                                              c["num_key_value_heads"], c["head_dim"])
        self.L, self.eps = c["num_hidden_layers"], c["rms_norm_eps"]
        types = c.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention"
                                         for i in range(self.L)]
        self.sliding = [t == "sliding_attention" for t in types]
        w = load_weights(directory)
        if c["tie_word_embeddings"]:
            w["lm_head.weight"] = w["model.embed_tokens.weight"]
        self.w = w

    def _norm(self, x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * (1.0 + self.w[name + ".weight"])

    def _lin(self, x, name):
        return x @ self.w[name + ".weight"].T

    def _attn(self, x, i):
        B, T, _ = x.shape
        p = f"model.layers.{i}.self_attn."
        q = self._lin(x, p + "q_proj").reshape(B, T, self.nh, self.hd).transpose(0, 2, 1, 3)
        k = self._lin(x, p + "k_proj").reshape(B, T, self.nkv, self.hd).transpose(0, 2, 1, 3)
        v = self._lin(x, p + "v_proj").reshape(B, T, self.nkv, self.hd).transpose(0, 2, 1, 3)
        # transformers' rotary rule: inv_freq, angles, cos and sin in float32 (as gemma2.py)
        f32 = np.float32
        inv = f32(1.0) / (f32(self.c["rope_theta"]) ** (np.arange(0, self.hd, 2).astype(f32) / f32(self.hd)))
        fr = np.outer(np.arange(T, dtype=f32), inv.astype(f32))
        emb = np.concatenate([fr, fr], -1)
        e64 = emb.astype(np.float64)  # cos and sin rounded once to float32 from the exact values
        cos, sin = np.cos(e64).astype(f32).astype(np.float64), np.sin(e64).astype(f32).astype(np.float64)

        def rope(t):
            h = self.hd // 2
            return t * cos + np.concatenate([-t[..., h:], t[..., :h]], -1) * sin
        q, k = rope(q), rope(k)
        rep = self.nh // self.nkv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        s = q @ k.transpose(0, 1, 3, 2) * self.c["query_pre_attn_scalar"] ** -0.5
        cap = self.c["attn_logit_softcapping"]
        if cap is not None:
            s = np.tanh(s / cap) * cap
        ii, jj = np.arange(T)[:, None], np.arange(T)[None, :]
        visible = jj <= ii
        if self.sliding[i]:
            visible &= jj > ii - self.c["sliding_window"]
        s = np.where(visible, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        y = (s @ v).transpose(0, 2, 1, 3).reshape(B, T, self.nh * self.hd)
        return self._lin(y, p + "o_proj")

    def _mlp(self, x, i):
        p = f"model.layers.{i}.mlp."
        g = self._lin(x, p + "gate_proj")
        g = 0.5 * g * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * g ** 3)))
        return self._lin(g * self._lin(x, p + "up_proj"), p + "down_proj")

    def __call__(self, tokens, hook=None):
        resid = {}
        hooked = hooked_recorder(hook, resid)
        normalizer = float(np.float32(math.sqrt(self.d)))
        h = hooked(-1, self.w["model.embed_tokens.weight"][tokens] * normalizer)
        for i in range(self.L):
            p = f"model.layers.{i}."
            h = h + self._norm(self._attn(self._norm(h, p + "input_layernorm"), i), p + "post_attention_layernorm")
            h = h + self._norm(self._mlp(self._norm(h, p + "pre_feedforward_layernorm"), i),
                               p + "post_feedforward_layernorm")
            h = hooked(i, h)
        logits = self._lin(self._norm(h, "model.norm"), "lm_head")
        cap = self.c["final_logit_softcapping"]
        if cap is not None:
            logits = np.tanh(logits / cap) * cap
        return logits, resid


def _self_check(dirs):
    """Against gemma2.py's fixtures: logits and every stream to 1e-6 relative. Both compute in float64
    except the rotary cos and sin, float32 in both; PyTorch's float32 cos/sin are within an ulp of the
    correctly rounded values used here, which moves the outputs by ~3e-7 relative."""
    import h5py
    worst = 0.0
    for d in dirs:
        with h5py.File(os.path.join(d, "expected.h5"), "r") as f:
            tok = f["tokens"][:]
            logits, resid = Gemma2(d)(tok)
            e = float(np.abs(logits - f["logits"][:]).max() / np.abs(f["logits"][:]).max())
            for layer, h in resid.items():
                ref = f[f"resid/{layer}"][:]
                e = max(e, float(np.abs(h - ref).max() / np.abs(ref).max()))
        print(f"{os.path.basename(os.path.normpath(d))}: max relative difference {e:.2e}")
        worst = max(worst, e)
    if worst > 1e-6:
        print(f"FAIL: numpy Gemma-2 differs from the PyTorch reference by {worst:.2e} (tolerance 1e-6)")
        sys.exit(1)
    print(f"numpy Gemma-2 equals the PyTorch reference on {len(dirs)} fixtures (worst {worst:.2e} <= 1e-6)")


if __name__ == "__main__":
    _self_check(sys.argv[1:])
