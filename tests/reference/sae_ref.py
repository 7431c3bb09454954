#!/usr/bin/env python3
"""Reference TopK SAE in PyTorch, written from METHOD.md section 4 with dense autograd.

Writes the fixture tests/data/sae/sae_ref.bin used by tests/sae/test_sae_torch.c:
a tiny SAE (d=16, n=128, k=4, batch 32) with half its latents dead, three training steps (FVU + AuxK,
decoder-gradient projection, Adam, decoder renormalization, warm-up/decay schedule), computed in
float64 so the fixture's own error is negligible next to the float32 implementation under test.

Run: OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/reference/sae_ref.py [OUT]

The class TopKSAE and train_step are also used by tests/bench/sae_bench.py (float32).
"""
import math
import os
import struct
import sys

import numpy as np
import torch


class TopKSAE(torch.nn.Module):
    def __init__(self, d, n, k, dtype=torch.float32):
        super().__init__()
        self.d, self.n, self.k = d, n, k
        self.W_enc = torch.nn.Parameter(torch.zeros(n, d, dtype=dtype))
        self.b_enc = torch.nn.Parameter(torch.zeros(n, dtype=dtype))
        self.W_dec = torch.nn.Parameter(torch.zeros(n, d, dtype=dtype))
        self.b_dec = torch.nn.Parameter(torch.zeros(d, dtype=dtype))

    def load_slab(self, slab):
        """slab layout: [W_enc (n,d) | b_enc (n) | W_dec (n,d) | b_dec (d)]"""
        n, d = self.n, self.d
        slab = torch.as_tensor(np.asarray(slab), dtype=self.W_enc.dtype)
        o = 0
        with torch.no_grad():
            for p, size, shape in ((self.W_enc, n * d, (n, d)), (self.b_enc, n, (n,)),
                                   (self.W_dec, n * d, (n, d)), (self.b_dec, d, (d,))):
                p.copy_(slab[o:o + size].reshape(shape))
                o += size

    def slab(self, grads=False):
        ps = (self.W_enc, self.b_enc, self.W_dec, self.b_dec)
        return torch.cat([(p.grad if grads else p).detach().reshape(-1) for p in ps])

    def losses(self, x, dead, k_aux, alpha):
        """Returns loss, fvu, auxk, fired (n bool). x: (B, d) global batch; dead: (n) bool."""
        pre = torch.relu((x - self.b_dec) @ self.W_enc.T + self.b_enc)          # (B, n)
        vals, idx = torch.topk(pre, self.k, dim=1)
        z = torch.zeros_like(pre).scatter(1, idx, vals)                           # dense codes
        x_hat = z @ self.W_dec + self.b_dec
        fvu = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        n_dead = int(dead.sum())
        ka = min(k_aux, n_dead)
        auxk = torch.zeros((), dtype=x.dtype)
        if ka > 0 and alpha > 0:
            e = (x - x_hat).detach()                                              # constant target
            masked = torch.where(dead[None, :], pre, torch.full_like(pre, -1.0))
            avals, aidx = torch.topk(masked, ka, dim=1)
            avals = torch.relu(avals)
            a = torch.zeros_like(pre).scatter(1, aidx, avals)
            e_hat = a @ self.W_dec
            auxk = ((e - e_hat) ** 2).sum() / ((e - e.mean(0)) ** 2).sum()
        fired = (z > 0).any(0)
        return fvu + alpha * auxk, fvu, auxk, fired


def lr_at(step, steps, lr, warmup, decay_frac):
    f = 1.0
    if warmup > 0 and step < warmup:
        f = (step + 1) / warmup
    decay = int(decay_frac * steps + 0.5)
    if decay > 0 and step >= steps - decay:
        f *= (steps - step) / decay
    return lr * f


def project_decoder_grad(sae):
    with torch.no_grad():
        g, w = sae.W_dec.grad, sae.W_dec
        g -= (g * w).sum(1, keepdim=True) * w


def renorm_decoder(sae):
    with torch.no_grad():
        sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)


def train_step(sae, opt, x, since, dead_tokens, k_aux, alpha, lr):
    """One recipe step; since (n) int64 tokens since each latent fired, updated in place."""
    dead = since >= dead_tokens
    opt.zero_grad(set_to_none=False)
    loss, fvu, auxk, fired = sae.losses(x, dead, k_aux, alpha)
    loss.backward()
    raw = sae.slab(grads=True).clone()
    project_decoder_grad(sae)
    for gr in opt.param_groups:
        gr["lr"] = lr
    opt.step()
    renorm_decoder(sae)
    since += x.shape[0]
    since[fired] = 0
    return float(loss), float(fvu), float(auxk), raw


def geometric_median(x, iters):
    y = x.mean(0)
    for _ in range(iters):
        dist = (x - y).norm(dim=1).clamp_min(1e-12)
        w = 1.0 / dist
        y = (w[:, None] * x).sum(0) / w.sum()
    return y


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "data", "sae", "sae_ref.bin")
    d, n, k, B, steps = 16, 128, 4, 32, 3
    k_aux, alpha, dead_tokens = d // 2, 1.0 / 32.0, B
    lr, warmup, decay_frac = 1e-2, 2, 0.34
    beta1, beta2, eps = 0.9, 0.999, 6.25e-10
    gm_iters = 10
    dt = torch.float64
    g = torch.Generator().manual_seed(1234)
    x_all = (torch.randn(steps * B, d, generator=g, dtype=dt) * 1.3 + 0.4)
    # tied init from random unit rows, then a small untied perturbation of the encoder so the
    # encoder and decoder paths are checked separately
    W = torch.randn(n, d, generator=g, dtype=dt)
    W /= W.norm(dim=1, keepdim=True)
    sae = TopKSAE(d, n, k, dt)
    gm = geometric_median(x_all[:B], gm_iters)
    with torch.no_grad():
        sae.W_dec.copy_(W)
        sae.W_enc.copy_(W + 0.1 * torch.randn(n, d, generator=g, dtype=dt))
        sae.b_enc.copy_(0.05 * torch.randn(n, generator=g, dtype=dt))
        sae.b_dec.copy_(gm)
    slab0 = sae.slab().clone()
    since = torch.zeros(n, dtype=torch.int64)
    since[: n // 2] = dead_tokens          # half the latents start dead
    since0 = since.clone()
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)
    rec = []
    for s in range(steps):
        x = x_all[s * B:(s + 1) * B]
        loss, fvu, auxk, raw = train_step(sae, opt, x, since, dead_tokens, k_aux, alpha,
                                          lr_at(s, steps, lr, warmup, decay_frac))
        rec.append((loss, fvu, auxk, raw, sae.slab().clone(), since.clone()))
        print(f"step {s}: loss {loss:.6f} fvu {fvu:.6f} auxk {auxk:.6f} "
              f"dead {(since >= dead_tokens).sum().item()}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(b"RSAEREF1")
        f.write(struct.pack("<8i", 1, d, n, k, B, steps, k_aux, gm_iters))
        f.write(struct.pack("<6d", lr, alpha, beta1, beta2, eps, decay_frac))
        f.write(struct.pack("<2q", warmup, dead_tokens))
        f.write(x_all.numpy().astype("<f8").tobytes())
        f.write(slab0.numpy().astype("<f8").tobytes())
        f.write(since0.numpy().astype("<i8").tobytes())
        f.write(gm.numpy().astype("<f8").tobytes())
        for loss, fvu, auxk, raw, slab, sn in rec:
            f.write(struct.pack("<3d", loss, fvu, auxk))
            f.write(raw.numpy().astype("<f8").tobytes())
            f.write(slab.numpy().astype("<f8").tobytes())
            f.write(sn.numpy().astype("<i8").tobytes())
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
