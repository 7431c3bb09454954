"""GPT-NeoX (Pythia) in PyTorch, written from Hugging Face's GPTNeoXForCausalLM semantics.

Independent reference for resae's C runtime and the trainer of the embedded demo model.
Parameter names and shapes are Hugging Face's, so state_dict() is a loadable checkpoint:
  gpt_neox.embed_in.weight                                (vocab, d)
  gpt_neox.layers.N.input_layernorm.{weight,bias}         (d,)
  gpt_neox.layers.N.post_attention_layernorm.{weight,bias}
  gpt_neox.layers.N.attention.query_key_value.{weight,bias} (3d, d): packed per head [q|k|v] x heads
  gpt_neox.layers.N.attention.dense.{weight,bias}          (d, d)
  gpt_neox.layers.N.mlp.dense_h_to_4h.{weight,bias}        (ff, d)
  gpt_neox.layers.N.mlp.dense_4h_to_h.{weight,bias}        (d, ff)
  gpt_neox.final_layer_norm.{weight,bias}
  embed_out.weight                                         (vocab, d)
Residual streams follow METHOD.md §1: resid[-1] is the embedding output, resid[l] the stream after
block l (before the final layer norm).
"""
import json
import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULTS = dict(rotary_pct=0.25, rotary_emb_base=10000, layer_norm_eps=1e-5, use_parallel_residual=True,
                hidden_act="gelu", tie_word_embeddings=False, attention_bias=True,
                max_position_embeddings=2048)


def make_config(**kw):
    cfg = dict(DEFAULTS)
    cfg.update(kw)
    for key in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size"):
        if key not in cfg:
            raise ValueError(f"config needs {key}")
    cfg.update(architectures=["GPTNeoXForCausalLM"], model_type="gpt_neox", torch_dtype="float32")
    return cfg


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, self.nh = cfg["hidden_size"], cfg["num_attention_heads"]
        self.hs = d // self.nh
        self.rot = int(self.hs * cfg["rotary_pct"])
        self.base = cfg["rotary_emb_base"]
        bias = cfg["attention_bias"]
        self.query_key_value = nn.Linear(d, 3 * d, bias=bias)
        self.dense = nn.Linear(d, d, bias=bias)

    def rotary(self, T, device):
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.rot, 2, device=device).float() / self.rot))
        t = torch.arange(T, device=device, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    @staticmethod
    def rotate_half(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    def forward(self, x):
        B, T, d = x.shape
        qkv = self.query_key_value(x).view(B, T, self.nh, 3 * self.hs).permute(0, 2, 1, 3)
        q, k, v = qkv[..., : self.hs], qkv[..., self.hs: 2 * self.hs], qkv[..., 2 * self.hs:]
        if self.rot > 0:
            cos, sin = self.rotary(T, x.device)
            qr, qp = q[..., : self.rot], q[..., self.rot:]
            kr, kp = k[..., : self.rot], k[..., self.rot:]
            qr = qr * cos + self.rotate_half(qr) * sin
            kr = kr * cos + self.rotate_half(kr) * sin
            q, k = torch.cat((qr, qp), dim=-1), torch.cat((kr, kp), dim=-1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hs)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, torch.finfo(att.dtype).min)
        att = F.softmax(att, dim=-1)
        y = (att @ v).permute(0, 2, 1, 3).reshape(B, T, d)
        return self.dense(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"])
        self.dense_4h_to_h = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"])

    def forward(self, x):
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))  # exact (erf) GELU


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.parallel = cfg["use_parallel_residual"]
        self.input_layernorm = nn.LayerNorm(d, eps=eps)
        self.post_attention_layernorm = nn.LayerNorm(d, eps=eps)
        self.attention = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward(self, h):
        a = self.attention(self.input_layernorm(h))
        if self.parallel:
            return h + a + self.mlp(self.post_attention_layernorm(h))
        h = h + a
        return h + self.mlp(self.post_attention_layernorm(h))


class Trunk(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_in = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.final_layer_norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])


class GPTNeoX(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.gpt_neox = Trunk(cfg)
        self.embed_out = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg["tie_word_embeddings"]:
            self.embed_out.weight = self.gpt_neox.embed_in.weight

    def forward(self, tokens, hook=None, start_layer=0, start_resid=None, stop_layer=None):
        """tokens (B, T) int64. hook(layer, h) -> h or None, called on the embedding output (-1) and
        after every block. Returns (logits or None, {layer: resid}). With start_resid the pass begins
        at block start_layer from that stream (the stream after block start_layer-1)."""
        resid = {}
        n = len(self.gpt_neox.layers)
        stop = n - 1 if stop_layer is None else stop_layer
        if start_resid is None:
            h = self.gpt_neox.embed_in(tokens)
            start_layer = 0
            h = self._hook(hook, -1, h)
            resid[-1] = h
        else:
            h = start_resid
        for i in range(start_layer, stop + 1):
            h = self.gpt_neox.layers[i](h)
            h = self._hook(hook, i, h)
            resid[i] = h
        if stop != n - 1:
            return None, resid
        return self.embed_out(self.gpt_neox.final_layer_norm(h)), resid

    @staticmethod
    def _hook(hook, layer, h):
        if hook is None:
            return h
        out = hook(layer, h)
        return h if out is None else out


def token_ce(logits, tokens):
    """(B, T-1) CE of predicting token t+1 at position t."""
    B, T, V = logits.shape
    return F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), tokens[:, 1:].reshape(-1),
                           reduction="none").view(B, T - 1)


# ---- safetensors ----------------------------------------------------------------------------------
_DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32",
       torch.int64: "I64", torch.bool: "BOOL", torch.float64: "F64"}
_DT_INV = {v: k for k, v in _DT.items()}


def _raw_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def save_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        b = _raw_bytes(t)
        header[name] = {"dtype": _DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8: 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dt = _DT_INV[info["dtype"]]
        raw = bytearray(data[base + a: base + b])
        if dt == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(raw, dtype=dt)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def save_checkpoint(model, directory, dtype=torch.float32, shards=1, extra=None):
    """config.json + model.safetensors in Hugging Face's layout; with shards > 1,
    model-0000i-of-0000n.safetensors plus model.safetensors.index.json (weight_map). `extra` adds
    tensors as they are (e.g. the non-parameter buffers real Pythia checkpoints carry)."""
    import os
    os.makedirs(directory, exist_ok=True)
    cfg = dict(model.cfg)
    cfg["torch_dtype"] = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    sd = {k: v.to(dtype) for k, v in model.state_dict().items()}
    if cfg["tie_word_embeddings"]:
        sd.pop("embed_out.weight", None)
    sd.update(extra or {})
    if shards <= 1:
        save_safetensors(os.path.join(directory, "model.safetensors"), sd, {"format": "pt"})
        return
    names = sorted(sd)
    weight_map, total = {}, 0
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_safetensors(os.path.join(directory, fname), {k: sd[k] for k in part}, {"format": "pt"})
        for k in part:
            weight_map[k] = fname
            total += sd[k].numel() * sd[k].element_size()
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")


def load_checkpoint(directory):
    """A model from config.json and its safetensors (single file or sharded); weights as fp32."""
    import os
    with open(os.path.join(directory, "config.json")) as f:
        cfg = json.load(f)
    model = GPTNeoX(make_config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type",
                                                                          "torch_dtype")}))
    index = os.path.join(directory, "model.safetensors.index.json")
    raw = {}
    if os.path.exists(index):
        with open(index) as f:
            for fname in sorted(set(json.load(f)["weight_map"].values())):
                raw.update(load_safetensors(os.path.join(directory, fname)))
    else:
        raw = load_safetensors(os.path.join(directory, "model.safetensors"))
    params = set(model.state_dict())
    sd = {k: v.float() for k, v in raw.items() if k in params}
    if cfg.get("tie_word_embeddings"):
        sd["embed_out.weight"] = sd["gpt_neox.embed_in.weight"]
    model.load_state_dict(sd)
    return model
