/* Hugging Face config.json of a supported causal LM. */
#ifndef RESAE_MODEL_CONFIG_H
#define RESAE_MODEL_CONFIG_H

#include "resae/err.h"

enum rs_arch { RS_ARCH_GPT_NEOX = 1 };

typedef struct rs_model_config {
    enum rs_arch arch;
    char arch_name[64];        /* "GPTNeoXForCausalLM" */
    int n_layers;              /* num_hidden_layers */
    int d_model;               /* hidden_size */
    int n_heads;               /* num_attention_heads */
    int n_kv_heads;            /* key/value heads (GPT-NeoX: n_heads) */
    int head_dim;              /* d_model / n_heads */
    int rotary_dim;            /* channels of q and k rotated: int(head_dim * rotary_pct), even */
    int d_ff;                  /* intermediate_size */
    int vocab_size;
    int max_positions;         /* max_position_embeddings */
    double rotary_pct;
    double rotary_base;        /* rotary_emb_base (or rope_theta) */
    double layer_norm_eps;
    int parallel_residual;     /* use_parallel_residual */
    int tie_word_embeddings;
    int attention_bias;
    char hidden_act[32];       /* "gelu" (exact erf GELU) */
} rs_model_config;

/* Read DIR/config.json. Unsupported settings are refused by name. */
rs_err rs_model_config_load(rs_model_config *out, const char *dir);

#endif
