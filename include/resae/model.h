/* Transformer runtime: weights from a Hugging Face checkpoint, a forward pass over a batch of
 * sequences in fp32 with residual-stream hooks, partial passes and next-token cross-entropy.
 *
 * Split by lifetime (llama2.c):
 *   rs_model_config  immutable hyperparameters (model_config.h)
 *   rs_model         weights, read-only after load, shareable by any number of run states and
 *                    threads: either the blocks' weights stay in the checkpoint's read-only mapping
 *                    in its dtype (RS_WEIGHTS_MAPPED: the page cache holds one copy for every
 *                    process of a node) and are widened to fp32 one block at a time into the run
 *                    state just before that block runs, or every parameter is one fp32 slab
 *                    (RS_WEIGHTS_RESIDENT). Widening is exact, so both give bitwise the same results
 *   rs_run_state     scratch for at most max_B sequences of max_T tokens, sized once, reused
 *
 * Residual-stream numbering (METHOD.md §1): layer -1 is the embedding output, layer l in
 * 0..n_layers-1 is the stream after block l, before the final layer norm.
 *
 * Architectures: GPT-NeoX (Pythia) and Gemma-2 (docs/models.md). Per-architecture code is the
 * tensor table and the block function (src/model/neox.c, src/model/gemma2.c); the driver adds the
 * embedding scale, the final norm (LayerNorm or RMSNorm) and the final logit soft-cap; norms,
 * attention (GQA, window, soft-capping), rotary, activations and the cross-entropy are shared
 * kernels (kernels.h). */
#ifndef RESAE_MODEL_H
#define RESAE_MODEL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "resae/err.h"
#include "resae/model_config.h"

/* ---- weights -------------------------------------------------------------------------------- */

/* One block's parameters (views into rs_model.slab). Slots an architecture does not use are NULL.
 * qd = n_heads * head_dim, kvd = n_kv_heads * head_dim (GPT-NeoX: both d). */
typedef struct rs_layer_weights {
    const float *attn_norm_w, *attn_norm_b;  /* (d) input_layernorm */
    const float *mlp_norm_w, *mlp_norm_b;    /* (d) the MLP's input norm: GPT-NeoX post_attention_layernorm,
                                                Gemma-2 pre_feedforward_layernorm */
    const float *qkv_w;                      /* GPT-NeoX (3d, d) packed per head: head h rows [3hs h, 3hs(h+1)) = q|k|v */
    const float *qkv_b;                      /* (3d) or NULL (attention_bias false) */
    const float *q_w, *k_w, *v_w;            /* Gemma-2 (qd, d), (kvd, d), (kvd, d): self_attn.{q,k,v}_proj */
    const float *o_w, *o_b;                  /* (d, qd), (d) or NULL: attention.dense / self_attn.o_proj */
    const float *attn_out_norm_w;            /* Gemma-2 (d) post_attention_layernorm (on the attention output) */
    const float *gate_w;                     /* Gemma-2 (ff, d) mlp.gate_proj */
    const float *up_w, *up_b;                /* (ff, d), (ff) or NULL: mlp.dense_h_to_4h / mlp.up_proj */
    const float *down_w, *down_b;            /* (d, ff), (d) or NULL: mlp.dense_4h_to_h / mlp.down_proj */
    const float *mlp_out_norm_w;             /* Gemma-2 (d) post_feedforward_layernorm (on the MLP output) */
} rs_layer_weights;

/* How a model holds its weights (config key model.weights). */
enum rs_weights_mode { RS_WEIGHTS_MAPPED = 0, RS_WEIGHTS_RESIDENT = 1 };
extern const char *const rs_weights_mode_names[2]; /* "mapped", "resident" */

struct rs_safetensors;
struct rs_st_tensor;
/* Mapped mode: one tensor of a block, where its fp32 copy goes in the run state's block scratch
 * and which rs_layer_weights pointer views it. */
typedef struct rs_block_tensor {
    const struct rs_st_tensor *t;
    size_t scratch_off; /* floats, 64-byte aligned */
    size_t field_off;   /* offsetof(rs_layer_weights, that pointer) */
} rs_block_tensor;
#define RS_BLOCK_MAX_TENSORS 16

typedef struct rs_model {
    rs_model_config cfg;
    char dir[4096];
    enum rs_weights_mode mode;
    float *slab;                  /* fp32 parameters held by this process, 64-byte aligned pieces; one free:
                                     every one when resident; mapped: the final norm only */
    size_t n_floats;
    struct rs_safetensors *st;    /* mapped: the open checkpoint (NULL when resident) */
    const struct rs_st_tensor *embed_src;   /* mapped: the embedding, widened a row per token */
    const struct rs_st_tensor *unembed_src; /* mapped: the output matrix (the embedding when tied), widened a
                                               block of vocabulary rows at a time for the logits */
    rs_block_tensor (*blocks)[RS_BLOCK_MAX_TENSORS]; /* mapped: (n_layers) each block's tensors */
    int *block_n;                 /* mapped: (n_layers) tensors per block */
    size_t block_floats;          /* mapped: fp32 floats of the largest block (its scratch) */
    size_t mapped_bytes;          /* mapped: checkpoint bytes read through the mapping */
    size_t n_params;              /* parameters in all (a resident copy holds n_params floats) */
    const float *embed;           /* (V, d) gpt_neox.embed_in / model.embed_tokens (NULL when mapped) */
    const float *final_norm_w;    /* (d) gpt_neox.final_layer_norm / model.norm */
    const float *final_norm_b;    /* (d) or NULL (RMSNorm) */
    const float *unembed;         /* (V, d) embed_out / lm_head; == embed when tie_word_embeddings (NULL when mapped) */
    rs_layer_weights *layers;     /* (n_layers) resident: views into slab; mapped: unused (NULL views) */
} rs_model;

/* Load DIR/config.json and DIR's safetensors weights (single file or sharded). Every tensor's
 * shape is checked; missing tensors are named; known non-parameter buffers are ignored; other
 * unexpected tensors are warned about. Resident: F32, F16 and BF16 weights are converted to fp32
 * once; mapped: everything but the final norm stays in the file's mapping. */
rs_err rs_model_load(rs_model *m, const char *dir, enum rs_weights_mode mode);
void rs_model_free(rs_model *m);
/* Vocabulary rows of the output matrix per logits block (16 MB of fp32, at most the vocabulary). */
int rs_model_unembed_rows(const rs_model *m);
/* fp32 floats of weights one rank holds: the resident slab, and (mapped) the block scratch and one
 * block of the output matrix of a run state. */
size_t rs_model_rank_floats(const rs_model *m);

/* ---- run state ------------------------------------------------------------------------------ */

typedef struct rs_run_state {
    int max_B, max_T;
    int logit_rows;     /* rows of logits computed at once when the caller wants only CE */
    float *slab;        /* every buffer below; one free */
    float *h;           /* (B, T, d) the residual stream */
    float *xn;          /* (B, T, d) normalized input of a sublayer / final norm output */
    float *qkv;         /* (B, T, qd + 2 kvd): GPT-NeoX packed per head; Gemma-2 q (B,T,qd) | k | v blocks */
    float *att;         /* (B, T, qd) attention output before the output projection */
    float *ff;          /* (B, T, ff) MLP hidden (Gemma-2: the gate, then gelu(gate) * up) */
    float *up;          /* (B, T, ff) Gemma-2 up projection; NULL for GPT-NeoX */
    float *scores;      /* (RS_ATTN_QBLOCK, T) */
    float *logits;      /* (logit_rows, V), own allocation made by the first CE-only pass */
    float *ce_tmp;      /* (logit_rows) */
    int32_t *targets;   /* (logit_rows) */
    float *rope_cos;    /* (T, rotary_dim / 2) */
    float *rope_sin;    /* (T, rotary_dim / 2) */
    float *block_w;     /* mapped weights: (block_floats) the running block's fp32 weights; else NULL */
    float *unembed_w;   /* mapped weights: (unembed_rows, d) a block of the output matrix in fp32; else NULL */
    int unembed_rows;   /* vocabulary rows per block of unembed_w (mapped) */
    rs_layer_weights block_view; /* mapped weights: views into block_w */
} rs_run_state;

/* Floats rs_run_state_init allocates for max_B x max_T tokens; ce_only adds the block of logits a
 * pass with CE and no logits output allocates on its first use (the memory plan, resae validate). */
size_t rs_run_state_floats(const rs_model *m, int max_B, int max_T, int ce_only);
rs_err rs_run_state_init(rs_run_state *s, const rs_model *m, int max_B, int max_T);
void rs_run_state_free(rs_run_state *s);

/* ---- forward pass --------------------------------------------------------------------------- */

/* Residual-stream hook, called with the stream h (B, T, d), contiguous and mutable, right after it
 * is formed and before anything reads it: after the embedding (layer -1, only when the pass starts
 * from tokens) and after each block the pass runs. A hook may copy h out (capture), overwrite it
 * (replace) or modify it in place (add). A nonzero return stops the pass with that error. */
typedef rs_err (*rs_resid_hook)(void *ctx, int layer, float *h, int B, int T, int d);

/* Stop after the last block (then the final norm, logits and CE are available). */
#define RS_LAYER_FINAL INT_MAX

typedef struct rs_forward_args {
    /* (B, T) token ids in [0, V). Needed when the pass starts from the embedding and for CE. */
    const int32_t *tokens;
    /* Start: with resid_in == NULL the pass embeds tokens and runs from block 0 (start_layer must
     * be 0). With resid_in (B, T, d) the pass starts at block start_layer (0..n_layers) from that
     * stream, which is the stream entering the block: the output of block start_layer-1, or the
     * embedding output for start_layer 0. The supplied stream is copied, not hooked. */
    const float *resid_in;
    int start_layer;
    /* Last block to run, start_layer-1..n_layers-1, or RS_LAYER_FINAL. Logits and CE need the
     * full stack (stop_layer >= n_layers-1). */
    int stop_layer;
    rs_resid_hook hook;
    void *hook_ctx;
    float *logits;     /* (B, T, V) or NULL */
    float *ce;         /* (B, T-1) or NULL: ce[b, t] = CE of predicting tokens[b, t+1] at position t */
    float *resid_out;  /* (B, T, d) or NULL: the stream after stop_layer (before the final norm) */
} rs_forward_args;

/* A full pass from tokens: start 0, stop RS_LAYER_FINAL, nothing requested yet. */
#define RS_FORWARD_ARGS_INIT {.start_layer = 0, .stop_layer = RS_LAYER_FINAL}

/* Run B sequences of T tokens (B <= max_B, T <= max_T of the state). Deterministic for a fixed
 * BLAS thread count. Fails (RS_ERR_INVAL) on token ids outside [0, V) or inconsistent arguments. */
rs_err rs_model_forward(const rs_model *m, rs_run_state *s, const rs_forward_args *a, int B, int T);

#endif
