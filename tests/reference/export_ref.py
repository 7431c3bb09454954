"""Round trip of `resae export`: load every exported SAE the way SAELens / sparsify load it (numpy only,
no SAELens needed) and reproduce resae's reconstructions.

usage: export_ref.py RUN_DIR EXPORT_DIR [--tol 1e-6]

EXPORT_DIR is the output of `resae export RUN_DIR --format saelens|sparsify`; its export.json says which.
For each SAE listed there:
  - the files are read as the peer's loader does: cfg.json with the keys it requires (SAELens: architecture
    "topk", d_in, d_sae, k, metadata.sae_lens_version >= 6; sparsify: activation "topk", num_latents, k,
    d_in), the safetensors file parsed from its bytes with the exact key set of a strict load_state_dict,
    the shapes and F32 dtype the model's parameters have, contiguous data offsets;
  - the SAE is applied to the run's eval-split activations (activations.h5), unscaled, with the peer's
    own TopK (SAELens: top k of the raw pre-activations, then ReLU; sparsify: ReLU, then top k); a
    residual SAE reads u = h_l - h_pred @ A.T - c with A, c from its affine.safetensors;
  - the reconstruction must equal METHOD.md's SAE(s u) / s computed from the SAE's weights in results.h5
    (max abs difference <= tol x RMS(u)), and its explained variance in target space must equal the
    ev_target of every /eval/recon row that used this SAE within tol.
Exits 1 on any mismatch, listing each.
"""
import json
import os
import struct
import sys

import h5py
import numpy as np

SAELENS_KEYS = {"W_enc", "b_enc", "W_dec", "b_dec"}
SPARSIFY_KEYS = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}


def read_safetensors(path):
    """name -> (array, dtype name); checks the layout the format requires."""
    raw = open(path, "rb").read()
    if len(raw) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} beyond the file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    out, spans = {}, []
    for name, e in header.items():
        if name == "__metadata__":
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in e.items()):
                raise ValueError(f"{path}: __metadata__ must map strings to strings")
            continue
        dt = {"F32": "<f4", "F64": "<f8"}[e["dtype"]]
        b, end = e["data_offsets"]
        count = int(np.prod(e["shape"])) if e["shape"] else 1
        if end - b != count * np.dtype(dt).itemsize:
            raise ValueError(f"{path}: {name}: data_offsets span {end - b} bytes, shape needs {count * 4}")
        out[name] = (np.frombuffer(data[b:end], dtype=dt).reshape(e["shape"]), e["dtype"])
        spans.append((b, end))
    spans.sort()
    pos = 0
    for b, end in spans:
        if b != pos:
            raise ValueError(f"{path}: data has a hole or an overlap at byte {pos}")
        pos = end
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} bytes after the last tensor")
    return out


def strict(tensors, keys, shapes, path):
    got = set(tensors)
    if got != keys:
        raise ValueError(f"{path}: strict load_state_dict fails: missing {sorted(keys - got)}, unexpected {sorted(got - keys)}")
    for k, shp in shapes.items():
        a, dt = tensors[k]
        if list(a.shape) != list(shp) or dt != "F32":
            raise ValueError(f"{path}: {k} is {dt} {list(a.shape)}, the model's parameter is F32 {list(shp)}")
    return {k: tensors[k][0].astype(np.float64) for k in keys}


def topk_keep(pre, k):
    idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    z = np.zeros_like(pre)
    rows = np.arange(len(pre))[:, None]
    z[rows, idx] = pre[rows, idx]
    return z


def load_saelens(d):
    cfg = json.load(open(os.path.join(d, "cfg.json")))
    for key in ("architecture", "d_in", "d_sae"):
        if key not in cfg:
            raise ValueError(f"{d}/cfg.json: SAEConfig requires '{key}'")
    if cfg["architecture"] != "topk" or not cfg.get("apply_b_dec_to_input", True):
        raise ValueError(f"{d}/cfg.json: not a TopK SAE that subtracts b_dec")
    if cfg.get("normalize_activations", "none") != "none":
        raise ValueError(f"{d}/cfg.json: normalize_activations must be none (the scale is folded)")
    ver = cfg.get("metadata", {}).get("sae_lens_version", cfg.get("sae_lens_version", "0"))
    if int(ver.split(".")[0]) < 6:
        raise ValueError(f"{d}/cfg.json: sae_lens_version {ver} < 6 triggers the pre-v6 conversion")
    for key in ("model_name", "hook_name"):
        if key not in cfg["metadata"]:
            raise ValueError(f"{d}/cfg.json: SAEBench needs metadata.{key}")
    n, dim, k = cfg["d_sae"], cfg["d_in"], cfg["k"]
    p = os.path.join(d, "sae_weights.safetensors")
    w = strict(read_safetensors(p), SAELENS_KEYS,
               {"W_enc": [dim, n], "b_enc": [n], "W_dec": [n, dim], "b_dec": [dim]}, p)

    def apply(x):  # sae_lens TopKSAE.encode / decode
        pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        z = np.maximum(topk_keep(pre, k), 0)
        return z @ w["W_dec"] + w["b_dec"]
    return cfg, cfg["metadata"], apply


def load_sparsify(d):
    cfg = json.load(open(os.path.join(d, "cfg.json")))
    if cfg.get("activation") != "topk" or cfg.get("skip_connection") or cfg.get("transcode"):
        raise ValueError(f"{d}/cfg.json: not a plain TopK SparseCoder")
    n, dim, k = cfg["num_latents"], cfg["d_in"], cfg["k"]
    p = os.path.join(d, "sae.safetensors")
    w = strict(read_safetensors(p), SPARSIFY_KEYS,
               {"encoder.weight": [n, dim], "encoder.bias": [n], "W_dec": [n, dim], "b_dec": [dim]}, p)

    def apply(x):  # sparsify fused_encoder: relu(W (x - b_dec) + b), then top k; decode
        pre = np.maximum((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"], 0)
        return topk_keep(pre, k) @ w["W_dec"] + w["b_dec"]
    return cfg, cfg["resae"], apply


def reference(g, u, s, k):
    """METHOD.md §4 on resae's stored weights: SAE(s u) / s."""
    W_enc, b_enc, W_dec, b_dec = (g[n][:].astype(np.float64) for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    pre = np.maximum((s * u - b_dec) @ W_enc.T + b_enc, 0)
    return (topk_keep(pre, k) @ W_dec + b_dec) / s


def main():
    args = sys.argv[1:]
    tol = 1e-6
    if "--tol" in args:
        i = args.index("--tol"); tol = float(args[i + 1]); del args[i:i + 2]
    run, exp = args
    index = json.load(open(os.path.join(exp, "export.json")))
    fmt = index["format"]
    res = h5py.File(os.path.join(run, "results.h5"), "r")
    store = h5py.File(os.path.join(run, "activations.h5"), "r")
    rec = res["eval/recon"][:] if "eval/recon" in res else np.zeros((0, 16))
    rcols = res["eval/recon"].attrs["columns"].decode().split(",") if "eval/recon" in res else []
    col = {c: i for i, c in enumerate(rcols)}
    h_cache = {}

    def h(layer):
        if layer not in h_cache:
            h_cache[layer] = store["eval"][f"L{layer}"][:].astype(np.float64)
        return h_cache[layer]

    bad, worst_rec, worst_ev, n_ev = [], 0.0, 0.0, 0
    names = set()
    for e in index["saes"]:
        d = os.path.join(exp, e["dir"])
        try:
            cfg, meta, apply = (load_saelens if fmt == "saelens" else load_sparsify)(d)
        except (ValueError, KeyError, OSError) as err:
            bad.append(f"{e['dir']}: {err}")
            continue
        name = meta["resae_name"]
        names.add(name)
        g = res["sae"][name]
        layer = int(meta["resae_layer_index"])
        hook = meta.get("hook_name", meta["resae_hook_name"])
        if fmt == "saelens" and hook != f"blocks.{layer}.hook_resid_post":
            bad.append(f"{e['dir']}: hook_name {hook} is not layer {layer}'s resid_post")
        if fmt == "sparsify" and not e["dir"].endswith(f"layers.{layer}"):
            bad.append(f"{e['dir']}: a sparsify hookpoint directory for layer {layer} must be layers.{layer}")
        if meta["resae_input"] == "residual":
            pred = int(meta["resae_pred_layer"])
            aff = read_safetensors(os.path.join(d, "affine.safetensors"))
            if set(aff) != {"A", "c"}:
                bad.append(f"{e['dir']}/affine.safetensors: keys {sorted(aff)}, want A, c")
                continue
            A, c = aff["A"][0].astype(np.float64), aff["c"][0].astype(np.float64)
            ga = res["affine"][f"L{pred}_L{layer}"]
            if not (np.array_equal(A, ga["A"][:]) and np.array_equal(c, ga["c"][:])):
                bad.append(f"{e['dir']}: affine.safetensors differs from results.h5 affine/L{pred}_L{layer}")
            u = h(layer) - h(pred) @ A.T - c
        else:
            pred = -1
            u = h(layer)
        s = float(g.attrs["scale"])
        if abs(s - float(meta["scale_s"])) > 1e-15 * s:
            bad.append(f"{e['dir']}: metadata scale_s {meta['scale_s']} != results.h5 {s}")
        got = apply(u)
        want = reference(g, u, s, int(cfg["k"]))
        rms = np.sqrt((u ** 2).mean())
        err = np.abs(got - want).max() / rms
        worst_rec = max(worst_rec, err)
        if not err <= tol:
            bad.append(f"{name} ({e['dir']}): reconstruction differs from SAE(s u)/s by {err:.3e} x RMS(u) > {tol}")
        ev = 1 - ((u - got) ** 2).sum() / ((u - u.mean(0)) ** 2).sum()
        variant = 1 if meta["resae_variant"] == "resae" else 0
        for r in rec:
            if int(r[col["k"]]) != int(cfg["k"]) or int(r[col["seed"]]) != int(meta["seed"]) or int(r[col["layer"]]) != layer:
                continue
            if variant == 1 and not (int(r[col["variant"]]) == 1 and int(r[col["pred"]]) == pred):
                continue
            if variant == 0 and int(r[col["pred"]]) >= 0:
                continue
            n_ev += 1
            de = abs(ev - r[col["ev_target"]])
            worst_ev = max(worst_ev, de)
            if not de <= tol:
                bad.append(f"{name}: EV of the exported SAE {ev:.9f} != eval/recon ev_target {r[col['ev_target']]:.9f} (diff {de:.2e})")
    n_trained = len(res["sae"]["table"])
    print(f"export_ref: {len(index['saes'])} {fmt} SAEs ({len(names)} distinct of {n_trained} trained), "
          f"max reconstruction difference {worst_rec:.2e} x RMS(u), {n_ev} eval/recon EVs matched "
          f"(max diff {worst_ev:.2e}), tolerance {tol}")
    if not index["saes"]:
        bad.append("export.json lists no SAE")
    for b in bad:
        print("MISMATCH:", b)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
