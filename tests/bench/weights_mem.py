"""Node memory of the model weights with 2 ranks: model.weights mapped (one copy in the page cache,
shared by the node's ranks) against resident (an fp32 copy per rank), side by side in one run.

usage: weights_mem.py RESAE_BINARY [--arch neox|gemma2] [--layers N] [--ranks 2] [--modes mapped,resident]
                      [--workdir DIR] [--seqs 8] [--seq-len 256]
Model: random weights in the Pythia-1.4B shape (GPT-NeoX, d 2048, 16 heads, ff 8192, vocab 50304,
untied, parallel residual; 24 blocks: 2.8 GB of bf16) or (--arch gemma2) the Gemma-2-9B shape
(d 3584, 16 query / 8 kv heads of 256, ff 14336, vocab 256000, tied, soft-caps 50 / 30, window
4096; 42 blocks: 18.5 GB of bf16), bf16, --layers blocks (default: the real model's). Written with
numpy in the safetensors layout. Each mode runs `resae forward` over the same tokens at --ranks ranks
(mpirun); every 0.1 s the script reads each rank's /proc/PID/smaps_rollup: Rss and Pss (a shared
page counts 1/n in each of the n processes mapping it, so the ranks' Pss adds up to the node's
memory). Printed: peak node Pss and per-rank Rss of each mode, the ratio resident / mapped, the
forward rates, and whether the outputs are bitwise equal. (Gemma-2-9B resident needs 2 x 37 GB:
run it with --modes mapped on a 24 GB machine.)
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import time

import h5py
import numpy as np

NEOX = dict(d=2048, heads=16, ff=8192, vocab=50304, layers=24)
GEMMA = dict(d=3584, heads=16, kv=8, hd=256, ff=14336, vocab=256000, layers=42)


def shapes_of(arch, n_layers):
    """(config.json, [(tensor name, shape)]) of the architecture's checkpoint."""
    if arch == "gemma2":
        g = GEMMA
        d, qd, kvd, ff = g["d"], g["heads"] * g["hd"], g["kv"] * g["hd"], g["ff"]
        cfg = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "attention_bias": False,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "head_dim": g["hd"],
               "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": d,
               "intermediate_size": ff, "max_position_embeddings": 8192, "num_attention_heads": g["heads"],
               "num_hidden_layers": n_layers, "num_key_value_heads": g["kv"], "query_pre_attn_scalar": 256,
               "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": True,
               "torch_dtype": "bfloat16", "vocab_size": g["vocab"]}
        shapes = [("model.embed_tokens.weight", (g["vocab"], d)), ("model.norm.weight", (d,))]
        for l in range(n_layers):
            p = f"model.layers.{l}."
            shapes += [(p + "input_layernorm.weight", (d,)), (p + "self_attn.q_proj.weight", (qd, d)),
                       (p + "self_attn.k_proj.weight", (kvd, d)), (p + "self_attn.v_proj.weight", (kvd, d)),
                       (p + "self_attn.o_proj.weight", (d, qd)), (p + "post_attention_layernorm.weight", (d,)),
                       (p + "pre_feedforward_layernorm.weight", (d,)), (p + "mlp.gate_proj.weight", (ff, d)),
                       (p + "mlp.up_proj.weight", (ff, d)), (p + "mlp.down_proj.weight", (d, ff)),
                       (p + "post_feedforward_layernorm.weight", (d,))]
        return cfg, shapes
    D, FF, V = NEOX["d"], NEOX["ff"], NEOX["vocab"]
    cfg = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "attention_bias": True,
           "hidden_act": "gelu", "hidden_size": D, "intermediate_size": FF, "layer_norm_eps": 1e-5,
           "max_position_embeddings": 2048, "num_attention_heads": NEOX["heads"], "num_hidden_layers": n_layers,
           "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False,
           "torch_dtype": "bfloat16", "use_parallel_residual": True, "vocab_size": V}
    shapes = [("gpt_neox.embed_in.weight", (V, D)), ("gpt_neox.final_layer_norm.weight", (D,)),
              ("gpt_neox.final_layer_norm.bias", (D,)), ("embed_out.weight", (V, D))]
    for l in range(n_layers):
        p = f"gpt_neox.layers.{l}."
        shapes += [(p + "input_layernorm.weight", (D,)), (p + "input_layernorm.bias", (D,)),
                   (p + "post_attention_layernorm.weight", (D,)), (p + "post_attention_layernorm.bias", (D,)),
                   (p + "attention.query_key_value.weight", (3 * D, D)), (p + "attention.query_key_value.bias", (3 * D,)),
                   (p + "attention.dense.weight", (D, D)), (p + "attention.dense.bias", (D,)),
                   (p + "mlp.dense_h_to_4h.weight", (FF, D)), (p + "mlp.dense_h_to_4h.bias", (FF,)),
                   (p + "mlp.dense_4h_to_h.weight", (D, FF)), (p + "mlp.dense_4h_to_h.bias", (D,))]
    return cfg, shapes


def write_checkpoint(mdir, arch, n_layers):
    """Random bf16 weights (normal, std 0.02; norm weights 1 for GPT-NeoX, 0 for Gemma-2's 1 + w; biases 0)."""
    os.makedirs(mdir, exist_ok=True)
    cfg, shapes = shapes_of(arch, n_layers)
    path = os.path.join(mdir, "model.safetensors")
    cpath = os.path.join(mdir, "config.json")
    if os.path.exists(path) and os.path.exists(cpath) and json.load(open(cpath)) == cfg:
        return path
    header, off = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    rng = np.random.default_rng(0)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name, shape in shapes:
            if len(shape) == 2:
                rows = max(1, (1 << 24) // shape[1])  # 64 MB of float32 at a time
                for r0 in range(0, shape[0], rows):
                    x = rng.standard_normal((min(rows, shape[0] - r0), shape[1]), dtype=np.float32) * 0.02
                    f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())  # exact bf16 values
                continue
            x = np.ones(shape, np.float32) if arch == "neox" and name.endswith("norm.weight") else \
                np.zeros(shape, np.float32)
            f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    os.replace(path + ".tmp", path)
    json.dump(cfg, open(cpath, "w"), indent=1)
    return path


def mem_of(pid):
    """(Rss, Pss) in bytes of one process, or None once it is gone."""
    try:
        text = open(f"/proc/{pid}/smaps_rollup").read()
    except OSError:
        return None
    kb = {k: int(v) for k, v in re.findall(r"^(Rss|Pss):\s+(\d+) kB", text, re.M)}
    return kb.get("Rss", 0) * 1024, kb.get("Pss", 0) * 1024


def run(binary, mdir, tok, out, mode, ranks):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", str(ranks), binary, "forward", "--model", mdir,
           "--tokens", tok, "--out", out, "--weights", mode]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak_pss, peak_rss = 0, 0
    while p.poll() is None:
        pids = subprocess.run(["pgrep", "-f", f"{binary} forward .*--out {out}"], capture_output=True,
                              text=True).stdout.split()
        mems = [m for m in (mem_of(int(x)) for x in pids if int(x) != p.pid) if m]
        if mems:
            peak_pss = max(peak_pss, sum(m[1] for m in mems))
            peak_rss = max(peak_rss, max(m[0] for m in mems))
        time.sleep(0.1)
    log = p.stdout.read()
    if p.returncode:
        sys.exit(f"resae forward --weights {mode} failed:\n{log}")
    rate = re.findall(r"forward: .*?([0-9.]+) tok/s", log)
    return peak_pss, peak_rss, float(rate[-1]) if rate else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--arch", choices=("neox", "gemma2"), default="neox")
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--modes", default="mapped,resident")
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--workdir", default="/tmp/resae_weights_mem")
    a = ap.parse_args()
    layers = a.layers or (GEMMA if a.arch == "gemma2" else NEOX)["layers"]
    vocab = (GEMMA if a.arch == "gemma2" else NEOX)["vocab"]
    mdir = os.path.join(a.workdir, f"{a.arch}_shape_{layers}l")
    t = time.time()
    path = write_checkpoint(mdir, a.arch, layers)
    print(f"checkpoint: {path}, {os.path.getsize(path) / 1e9:.2f} GB bf16 ({time.time() - t:.0f} s)")
    tok = os.path.join(a.workdir, f"tokens_{a.arch}.h5")
    with h5py.File(tok, "w") as f:
        f["tokens"] = np.random.default_rng(1).integers(0, vocab, size=(a.seqs, a.seq_len)).astype(np.int32)
    # read the file once so that every mode starts with it in the page cache
    with open(path, "rb") as f:
        while f.read(1 << 26):
            pass
    modes = a.modes.split(",")
    res = {}
    for mode in modes:
        out = os.path.join(a.workdir, f"out_{a.arch}_{mode}.h5")
        res[mode] = run(a.binary, mdir, tok, out, mode, a.ranks)
        pss, rss, rate = res[mode]
        print(f"{mode:9s}: node Pss peak {pss / 1e9:6.2f} GB over {a.ranks} ranks, per-rank Rss peak {rss / 1e9:6.2f} GB, "
              f"forward {rate:.1f} tok/s")
    if len(modes) < 2:
        return 0
    outs = [os.path.join(a.workdir, f"out_{a.arch}_{m}.h5") for m in modes[:2]]
    with h5py.File(outs[0]) as f1, h5py.File(outs[1]) as f2:
        same = all(np.array_equal(f1[k][()], f2[k][()]) for k in f1 if isinstance(f1[k], h5py.Dataset))
    print(f"outputs bitwise equal: {same}")
    ratio = res[modes[1]][0] / res[modes[0]][0]
    print(f"node memory ratio {modes[1]} / {modes[0]}: {ratio:.2f}x ({a.ranks} ranks, {layers} layers); "
          f"forward rate {modes[0]} / {modes[1]}: {res[modes[0]][2] / res[modes[1]][2]:.3f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
