"""GPT-NeoX (Pythia) forward pass in float64 numpy, from Hugging Face's GPTNeoXForCausalLM semantics.

The same model as tests/reference/neox.py (which needs PyTorch, for training and fixture making), for
references that run inside the test suite, where only numpy and h5py are installed. Reads a
checkpoint directory (config.json + model.safetensors; F32, F16 or BF16). Call signature as neox.py:
model(tokens, hook) -> (logits, {layer: resid}); hook(layer, h) may return a replacement for h."""
import json
import math
import os
import struct

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base, out = 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[base + a:base + b]
        dt = info["dtype"]
        if dt == "F32":
            arr = np.frombuffer(raw, dtype="<f4")
        elif dt == "F16":
            arr = np.frombuffer(raw, dtype="<f2")
        elif dt == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            continue  # buffers of other types are not parameters
        out[name] = arr.astype(np.float64).reshape(info["shape"])
    return out


def load_weights(directory):
    """Every tensor of a checkpoint directory: model.safetensors, or the shards its index names."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if not os.path.exists(index):
        return load_safetensors(os.path.join(directory, "model.safetensors"))
    w = {}
    with open(index) as f:
        for fname in sorted(set(json.load(f)["weight_map"].values())):
            w.update(load_safetensors(os.path.join(directory, fname)))
    return w


def hooked_recorder(hook, resid):
    """f(layer, h): applies hook (which may return a replacement for h), records h in resid, returns it."""
    def hooked(layer, h):
        if hook is not None:
            out = hook(layer, h)
            if out is not None:
                h = out
        resid[layer] = h
        return h
    return hooked


class NeoX:
    def __init__(self, directory):
        with open(os.path.join(directory, "config.json")) as f:
            c = json.load(f)
        self.d, self.nh, self.L = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
        self.hs = self.d // self.nh
        self.rot = int(self.hs * c.get("rotary_pct", 0.25))
        self.base = c.get("rotary_emb_base", 10000)
        self.eps = c.get("layer_norm_eps", 1e-5)
        self.parallel = c.get("use_parallel_residual", True)
        w = load_weights(directory)
        if c.get("tie_word_embeddings", False):
            w["embed_out.weight"] = w["gpt_neox.embed_in.weight"]
        self.w = w

    def _ln(self, x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _lin(self, x, name):
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y if b is None else y + b

    def _attn(self, x, i):
        B, T, d = x.shape
        p = f"gpt_neox.layers.{i}.attention."
        qkv = self._lin(x, p + "query_key_value").reshape(B, T, self.nh, 3 * self.hs).transpose(0, 2, 1, 3)
        q, k, v = qkv[..., :self.hs], qkv[..., self.hs:2 * self.hs], qkv[..., 2 * self.hs:]
        if self.rot > 0:
            inv = 1.0 / (self.base ** (np.arange(0, self.rot, 2, dtype=np.float64) / self.rot))
            fr = np.outer(np.arange(T, dtype=np.float64), inv)
            emb = np.concatenate([fr, fr], -1)
            cos, sin = np.cos(emb), np.sin(emb)

            def rope(t):
                r, rest = t[..., :self.rot], t[..., self.rot:]
                h = self.rot // 2
                rh = np.concatenate([-r[..., h:], r[..., :h]], -1)
                return np.concatenate([r * cos + rh * sin, rest], -1)
            q, k = rope(q), rope(k)
        att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(self.hs)
        att = np.where(np.tril(np.ones((T, T), dtype=bool)), att, -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, d)
        return self._lin(y, p + "dense")

    def _mlp(self, x, i):
        p = f"gpt_neox.layers.{i}.mlp."
        u = self._lin(x, p + "dense_h_to_4h")
        return self._lin(0.5 * u * (1.0 + _erf(u / math.sqrt(2.0))), p + "dense_4h_to_h")

    def __call__(self, tokens, hook=None):
        resid = {}
        hooked = hooked_recorder(hook, resid)
        h = hooked(-1, self.w["gpt_neox.embed_in.weight"][tokens])
        for i in range(self.L):
            p = f"gpt_neox.layers.{i}."
            a = self._attn(self._ln(h, p + "input_layernorm"), i)
            if self.parallel:
                h = h + a + self._mlp(self._ln(h, p + "post_attention_layernorm"), i)
            else:
                h = h + a
                h = h + self._mlp(self._ln(h, p + "post_attention_layernorm"), i)
            h = hooked(i, h)
        logits = self._lin(self._ln(h, "gpt_neox.final_layer_norm"), "embed_out")
        return logits, resid


def log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
