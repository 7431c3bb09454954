/* GPT-NeoX (Pythia): tensor table and block, following Hugging Face's GPTNeoXForCausalLM. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "arch.h"
#include "resae/kernels.h"

/* ---- tensors ----------------------------------------------------------------------------------- */

int rs_neox_n_specs(const rs_model_config *c) { return 4 + 12 * c->n_layers; }

__attribute__((format(printf, 6, 7))) static void add(rs_tensor_spec *s, int *n, const float **slot, int64_t d0,
                                                      int64_t d1, const char *fmt, ...) {
    rs_tensor_spec *t = &s[(*n)++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->slot = slot;
}

void rs_neox_specs(rs_tensor_spec *specs, rs_model *m) {
    const rs_model_config *c = &m->cfg;
    const int64_t d = c->d_model, ff = c->d_ff, V = c->vocab_size;
    int n = 0;
    add(specs, &n, &m->embed, V, d, "gpt_neox.embed_in.weight");
    add(specs, &n, &m->final_norm_w, d, 0, "gpt_neox.final_layer_norm.weight");
    add(specs, &n, &m->final_norm_b, d, 0, "gpt_neox.final_layer_norm.bias");
    if (!c->tie_word_embeddings) add(specs, &n, &m->unembed, V, d, "embed_out.weight");
    for (int l = 0; l < c->n_layers; l++) {
        rs_layer_weights *w = &m->layers[l];
        add(specs, &n, &w->attn_norm_w, d, 0, "gpt_neox.layers.%d.input_layernorm.weight", l);
        add(specs, &n, &w->attn_norm_b, d, 0, "gpt_neox.layers.%d.input_layernorm.bias", l);
        add(specs, &n, &w->mlp_norm_w, d, 0, "gpt_neox.layers.%d.post_attention_layernorm.weight", l);
        add(specs, &n, &w->mlp_norm_b, d, 0, "gpt_neox.layers.%d.post_attention_layernorm.bias", l);
        add(specs, &n, &w->qkv_w, 3 * d, d, "gpt_neox.layers.%d.attention.query_key_value.weight", l);
        if (c->attention_bias) add(specs, &n, &w->qkv_b, 3 * d, 0, "gpt_neox.layers.%d.attention.query_key_value.bias", l);
        add(specs, &n, &w->o_w, d, d, "gpt_neox.layers.%d.attention.dense.weight", l);
        if (c->attention_bias) add(specs, &n, &w->o_b, d, 0, "gpt_neox.layers.%d.attention.dense.bias", l);
        add(specs, &n, &w->up_w, ff, d, "gpt_neox.layers.%d.mlp.dense_h_to_4h.weight", l);
        add(specs, &n, &w->up_b, ff, 0, "gpt_neox.layers.%d.mlp.dense_h_to_4h.bias", l);
        add(specs, &n, &w->down_w, d, ff, "gpt_neox.layers.%d.mlp.dense_4h_to_h.weight", l);
        add(specs, &n, &w->down_b, d, 0, "gpt_neox.layers.%d.mlp.dense_4h_to_h.bias", l);
    }
    /* terminate: the loader counts entries up to rs_neox_n_specs and skips empty names */
    for (int i = n; i < rs_neox_n_specs(c); i++) specs[i].name[0] = '\0';
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Buffers older GPT-NeoX checkpoints (Pythia) carry: the causal mask, its fill value and the
 * rotary inverse frequencies, all recomputed here. */
int rs_neox_ignorable(const char *name) {
    if (strncmp(name, "gpt_neox.layers.", 16)) return 0;
    return ends_with(name, ".attention.bias") || ends_with(name, ".attention.masked_bias") ||
           ends_with(name, ".attention.rotary_emb.inv_freq");
}

/* ---- block ------------------------------------------------------------------------------------- */

void rs_neox_block(rs_run_state *s, const rs_model *m, int layer, const rs_layer_weights *w, int B, int T) {
    (void)layer;
    const rs_model_config *c = &m->cfg;
    const int N = B * T, d = c->d_model, hs = c->head_dim, nh = c->n_heads;
    const float eps = (float)c->layer_norm_eps;

    /* attention: qkv (N, 3d) packed per head as [q | k | v] of hs channels each */
    rs_layernorm_forward(s->xn, s->h, w->attn_norm_w, w->attn_norm_b, N, d, eps);
    rs_linear_forward(s->qkv, s->xn, w->qkv_w, w->qkv_b, N, d, 3 * d, 0.0f);
    rs_rope_forward(s->qkv, s->rope_cos, s->rope_sin, 3 * d, 3 * hs, nh, c->rotary_dim, B, T);      /* q */
    rs_rope_forward(s->qkv + hs, s->rope_cos, s->rope_sin, 3 * d, 3 * hs, nh, c->rotary_dim, B, T); /* k */
    rs_attn_shape a = {.n_heads = nh, .n_kv_heads = nh, .head_dim = hs, .scale = (float)(1.0 / sqrt((double)hs)),
                       .softcap = 0.0f, .window = 0};
    rs_attention_forward(s->att, s->scores, s->qkv, s->qkv + hs, s->qkv + 2 * hs, 3 * d, 3 * hs, 3 * d, 3 * hs,
                         &a, B, T);
    /* parallel: h + attn(ln1(h)) + mlp(ln2(h)); sequential: h' = h + attn(ln1(h)), h' + mlp(ln2(h')).
     * Both projections accumulate straight into the stream (SGEMM beta = 1). */
    if (c->parallel_residual) {
        rs_layernorm_forward(s->xn, s->h, w->mlp_norm_w, w->mlp_norm_b, N, d, eps);
        rs_linear_forward(s->h, s->att, w->o_w, w->o_b, N, d, d, 1.0f);
    } else {
        rs_linear_forward(s->h, s->att, w->o_w, w->o_b, N, d, d, 1.0f);
        rs_layernorm_forward(s->xn, s->h, w->mlp_norm_w, w->mlp_norm_b, N, d, eps);
    }
    rs_linear_forward(s->ff, s->xn, w->up_w, w->up_b, N, d, c->d_ff, 0.0f);
    rs_gelu_forward(s->ff, s->ff, (size_t)N * c->d_ff);
    rs_linear_forward(s->h, s->ff, w->down_w, w->down_b, N, c->d_ff, d, 1.0f);
}
