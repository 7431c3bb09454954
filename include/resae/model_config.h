/* Hugging Face config.json of a supported causal LM (docs/models.md). */
#ifndef RESAE_MODEL_CONFIG_H
#define RESAE_MODEL_CONFIG_H

#include "resae/err.h"

/* The architecture is chosen by config.json's model_type ("gpt_neox", "gemma2"). */
enum rs_arch { RS_ARCH_GPT_NEOX = 1, RS_ARCH_GEMMA2 = 2 };

/* Most layers an architecture with per-layer attention types (Gemma-2) may have. */
#define RS_MODEL_MAX_LAYERS 512

typedef struct rs_model_config {
    enum rs_arch arch;
    char arch_name[64];        /* "GPTNeoXForCausalLM", "Gemma2ForCausalLM" */
    int n_layers;              /* num_hidden_layers */
    int d_model;               /* hidden_size */
    int n_heads;               /* num_attention_heads */
    int n_kv_heads;            /* num_key_value_heads (GPT-NeoX: n_heads) */
    int head_dim;              /* GPT-NeoX: d_model / n_heads; Gemma-2: head_dim, independent of d_model */
    int rotary_dim;            /* channels of q and k rotated: GPT-NeoX int(head_dim * rotary_pct); Gemma-2 head_dim */
    int d_ff;                  /* intermediate_size */
    int vocab_size;
    int max_positions;         /* max_position_embeddings */
    double rotary_pct;         /* 1 for Gemma-2 */
    double rotary_base;        /* rotary_emb_base or rope_theta */
    double layer_norm_eps;     /* GPT-NeoX layer_norm_eps; Gemma-2 rms_norm_eps */
    int parallel_residual;     /* use_parallel_residual (Gemma-2: 0) */
    int tie_word_embeddings;
    int attention_bias;
    char hidden_act[32];       /* "gelu" (exact erf GELU, GPT-NeoX) or "gelu_pytorch_tanh" (Gemma-2 GeGLU) */
    /* attention: scores q.k * attn_scale (GPT-NeoX 1/sqrt(head_dim); Gemma-2 query_pre_attn_scalar^-0.5),
     * then attn_softcap * tanh(score / attn_softcap) when attn_softcap > 0 */
    double attn_scale;
    double query_pre_attn_scalar;  /* Gemma-2; 0 for GPT-NeoX */
    double attn_softcap;           /* attn_logit_softcapping; 0 = none (null) */
    double final_softcap;          /* final_logit_softcapping on the logits; 0 = none (null) */
    int sliding_window;            /* keys a sliding layer's query sees (itself included); 0 = none */
    unsigned char layer_sliding[RS_MODEL_MAX_LAYERS]; /* (n_layers) 1: sliding-window layer (Gemma-2) */
    float embed_scale;             /* embedding output multiplier: 1, or (float)sqrt(hidden_size) for Gemma-2 */
} rs_model_config;

/* Read DIR/config.json. Unsupported settings are refused by name. */
rs_err rs_model_config_load(rs_model_config *out, const char *dir);

#endif
