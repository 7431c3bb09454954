"""Gemma-2 in PyTorch, written from transformers' Gemma2ForCausalLM semantics (modeling_gemma2.py),
without importing transformers. Independent reference for resae's C runtime (src/model/gemma2.c).

Parameter names and shapes are Hugging Face's, so state_dict() is a loadable checkpoint:
  model.embed_tokens.weight                               (vocab, d)
  model.layers.N.input_layernorm.weight                   (d,)   RMSNorm, applied as (1 + w)
  model.layers.N.self_attn.q_proj.weight                  (heads * head_dim, d)
  model.layers.N.self_attn.{k,v}_proj.weight              (kv_heads * head_dim, d)
  model.layers.N.self_attn.o_proj.weight                  (d, heads * head_dim)
  model.layers.N.post_attention_layernorm.weight          (d,)   on the attention output
  model.layers.N.pre_feedforward_layernorm.weight         (d,)   the MLP's input norm
  model.layers.N.mlp.{gate,up}_proj.weight                (ff, d)
  model.layers.N.mlp.down_proj.weight                     (d, ff)
  model.layers.N.post_feedforward_layernorm.weight        (d,)   on the MLP output
  model.norm.weight                                       (d,)
  lm_head.weight                                          (vocab, d), only when tie_word_embeddings is false
The semantics followed (docs/models.md):
  h_-1 = embed_tokens[tok] * normalizer, normalizer = sqrt(hidden_size) cast to the activation dtype;
         resae computes in fp32, so the normalizer is fp32(sqrt(hidden_size)) here too
  block: h += post_attention_layernorm(o_proj(attn(input_layernorm(h))))
         h += post_feedforward_layernorm(down_proj(gelu_tanh(gate_proj(x)) * up_proj(x))),
              x = pre_feedforward_layernorm(h)
  RMSNorm(x) = x * rsqrt(mean(x^2) + eps) * (1 + w)
  attention: GQA (kv head = q head // (heads / kv_heads)), rotate-half RoPE over the full head_dim
         (theta rope_theta), scores q.k * query_pre_attn_scalar^-0.5, then c * tanh(s / c) with
         c = attn_logit_softcapping (skipped when null), causal mask, and on sliding layers only keys
         j > i - sliding_window; sliding layers: config layer_types, else transformers' default
         "sliding_attention" if (i + 1) % 2 (layers 0, 2, 4, ...)
  logits = lm_head(norm(h_{L-1})), then c * tanh(logits / c) with c = final_logit_softcapping
Residual streams follow METHOD.md §1: resid[-1] is the embedding output, resid[l] the stream after
block l (before the final norm).
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import neox  # safetensors reading and writing

# Gemma2Config's defaults for the keys a config.json may leave out
DEFAULTS = dict(hidden_activation="gelu_pytorch_tanh", max_position_embeddings=8192, rms_norm_eps=1e-6,
                rope_theta=10000.0, attention_bias=False, query_pre_attn_scalar=256, sliding_window=4096,
                final_logit_softcapping=30.0, attn_logit_softcapping=50.0, tie_word_embeddings=True)
REQUIRED = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "num_hidden_layers",
            "intermediate_size", "vocab_size")


def make_config(**kw):
    cfg = dict(DEFAULTS)
    cfg.update(kw)
    for key in REQUIRED:
        if key not in cfg:
            raise ValueError(f"config needs {key}")
    cfg.update(architectures=["Gemma2ForCausalLM"], model_type="gemma2", torch_dtype="float32")
    return cfg


def sliding_layers(cfg):
    types = cfg.get("layer_types")
    if types is None:
        types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(cfg["num_hidden_layers"])]
    return [t == "sliding_attention" for t in types]


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        d, self.nh, self.nkv, self.hd = (cfg["hidden_size"], cfg["num_attention_heads"],
                                         cfg["num_key_value_heads"], cfg["head_dim"])
        self.base = cfg["rope_theta"]
        self.scaling = cfg["query_pre_attn_scalar"] ** -0.5
        self.softcap = cfg["attn_logit_softcapping"]
        self.window = cfg["sliding_window"] if sliding_layers(cfg)[layer] else None
        self.q_proj = nn.Linear(d, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, d, bias=False)

    def rotary(self, T, dtype):
        # transformers: inv_freq in fp32 from int64 arange; angles and cos/sin in fp32
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.hd, 2, dtype=torch.int64).float() / self.hd))
        freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, x):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        cos, sin = self.rotary(T, x.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv  # repeat_kv: kv head g serves query heads g*rep .. g*rep+rep-1
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(2, 3)) * self.scaling
        if self.softcap is not None:
            att = torch.tanh(att / self.softcap) * self.softcap
        i = torch.arange(T)[:, None]
        j = torch.arange(T)[None, :]
        visible = j <= i
        if self.window is not None:
            visible = visible & (j > i - self.window)
        att = att.masked_fill(~visible, torch.finfo(att.dtype).min)
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, ff = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(d, ff, bias=False)
        self.up_proj = nn.Linear(d, ff, bias=False)
        self.down_proj = nn.Linear(ff, d, bias=False)

    def forward(self, x):
        return self.down_proj(gelu_tanh(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        d, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        self.self_attn = Attention(cfg, layer)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(d, eps)
        self.post_attention_layernorm = RMSNorm(d, eps)
        self.pre_feedforward_layernorm = RMSNorm(d, eps)
        self.post_feedforward_layernorm = RMSNorm(d, eps)

    def forward(self, h):
        h = h + self.post_attention_layernorm(self.self_attn(self.input_layernorm(h)))
        return h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h)))


class Trunk(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class Gemma2(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Trunk(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg["tie_word_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, tokens, hook=None, start_layer=0, start_resid=None, stop_layer=None):
        """As neox.GPTNeoX.forward: returns (logits or None, {layer: resid})."""
        resid = {}
        n = len(self.model.layers)
        stop = n - 1 if stop_layer is None else stop_layer
        if start_resid is None:
            h = self.model.embed_tokens(tokens)
            # the activation dtype is fp32 in resae: sqrt(hidden_size) rounded to fp32
            normalizer = torch.tensor(self.cfg["hidden_size"] ** 0.5, dtype=torch.float32).to(h.dtype)
            h = h * normalizer
            start_layer = 0
            h = neox.GPTNeoX._hook(hook, -1, h)
            resid[-1] = h
        else:
            h = start_resid
        for i in range(start_layer, stop + 1):
            h = self.model.layers[i](h)
            h = neox.GPTNeoX._hook(hook, i, h)
            resid[i] = h
        if stop != n - 1:
            return None, resid
        logits = self.lm_head(self.model.norm(h))
        cap = self.cfg["final_logit_softcapping"]
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits, resid


def save_checkpoint(model, directory, dtype=torch.float32, shards=1):
    """config.json + safetensors as neox.save_checkpoint (model.safetensors, or shards with an index)."""
    os.makedirs(directory, exist_ok=True)
    cfg = dict(model.cfg)
    cfg["torch_dtype"] = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    sd = {k: v.to(dtype) for k, v in model.state_dict().items()}
    if cfg["tie_word_embeddings"]:
        sd.pop("lm_head.weight", None)
    if shards <= 1:
        neox.save_safetensors(os.path.join(directory, "model.safetensors"), sd, {"format": "pt"})
        return
    names = sorted(sd)
    weight_map, total = {}, 0
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        neox.save_safetensors(os.path.join(directory, fname), {k: sd[k] for k in part}, {"format": "pt"})
        for k in part:
            weight_map[k] = fname
            total += sd[k].numel() * sd[k].element_size()
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")


def load_checkpoint(directory):
    """A model from config.json and its safetensors (single file or sharded); weights as fp32."""
    with open(os.path.join(directory, "config.json")) as f:
        cfg = json.load(f)
    model = Gemma2(make_config(**{k: v for k, v in cfg.items()
                                  if k not in ("architectures", "model_type", "torch_dtype")}))
    index = os.path.join(directory, "model.safetensors.index.json")
    raw = {}
    if os.path.exists(index):
        with open(index) as f:
            for fname in sorted(set(json.load(f)["weight_map"].values())):
                raw.update(neox.load_safetensors(os.path.join(directory, fname)))
    else:
        raw = neox.load_safetensors(os.path.join(directory, "model.safetensors"))
    sd = {k: v.float() for k, v in raw.items()}
    if cfg.get("tie_word_embeddings", True):
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    model.load_state_dict(sd)
    return model
