"""Small random GPT-NeoX checkpoint and token data for the pipeline tests (tests/data/pipeline/).

Run: OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 tests/reference/make_pipeline_fixture.py [gemma2]
The token data is a mixture of a few repeated patterns, so activations have structure an SAE can
learn; the model weights are random (seeded). With `gemma2`, only the Gemma-2 model (gemma2_model/,
the same experiment on the other architecture: tests/run/run_small.sh with RESAE_PIPELINE_MODEL) is
written: 4 layers, GQA 2, head_dim 8 != 32 / 4 heads, a sliding window of 8 < 32 tokens on layers 0
and 2, both soft-caps, tied embeddings, bf16 weights."""
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import neox  # noqa: E402

out = os.path.join(os.path.dirname(__file__), "..", "data", "pipeline")
if sys.argv[1:] == ["gemma2"]:
    import gemma2  # noqa: E402
    from make_gemma2_fixtures import randomize  # noqa: E402
    torch.manual_seed(4321)
    gcfg = gemma2.make_config(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                              num_hidden_layers=4, intermediate_size=64, vocab_size=64, sliding_window=8,
                              query_pre_attn_scalar=8, attn_logit_softcapping=10.0, final_logit_softcapping=15.0,
                              max_position_embeddings=64)
    gm = gemma2.Gemma2(gcfg)
    randomize(gm, 4321, 1.5)
    gemma2.save_checkpoint(gm, os.path.join(out, "gemma2_model"), dtype=torch.bfloat16)
    print("wrote", os.path.join(out, "gemma2_model"))
    sys.exit(0)
torch.manual_seed(1234)
cfg = neox.make_config(hidden_size=32, num_attention_heads=4, num_hidden_layers=4, intermediate_size=64,
                       vocab_size=64, max_position_embeddings=64, rotary_pct=0.5)
model = neox.GPTNeoX(cfg)
neox.save_checkpoint(model, os.path.join(out, "model"))

rng = np.random.default_rng(7)
n_seq, T = 640, 32
patterns = rng.integers(0, 64, size=(12, 6))
tokens = np.empty((n_seq, T), dtype=np.int32)
for s in range(n_seq):
    p = patterns[rng.integers(0, len(patterns), size=T // 6 + 1)].reshape(-1)[:T]
    noise = rng.random(T) < 0.2
    p[noise] = rng.integers(0, 64, size=noise.sum())
    tokens[s] = p
with h5py.File(os.path.join(out, "tokens.h5"), "w") as f:
    f.create_dataset("tokens", data=tokens, compression="gzip")
print("wrote", out)
