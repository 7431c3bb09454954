/* Gemma-2: tensor table and block, following transformers' Gemma2ForCausalLM (modeling_gemma2.py):
 *   h = h + post_attention_layernorm(o_proj(attn(input_layernorm(h))))
 *   h = h + post_feedforward_layernorm(down_proj(gelu_tanh(gate_proj(x)) * up_proj(x))),
 *       x = pre_feedforward_layernorm(h)
 * with RMSNorm x / rms(x) * (1 + w), GQA, full-head rotary, scores scaled by query_pre_attn_scalar^-0.5
 * and soft-capped, and a sliding window on the layers config.json (or the default rule) marks.
 * The embedding scale, the final norm and the logit soft-cap are the driver's (model.c). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "arch.h"
#include "resae/kernels.h"

/* ---- tensors ----------------------------------------------------------------------------------- */

int rs_gemma2_n_specs(const rs_model_config *c) { return 3 + 11 * c->n_layers; }

__attribute__((format(printf, 7, 8))) static void add(rs_tensor_spec *s, int *n, const float **slot, int64_t d0,
                                                      int64_t d1, const char *dims, const char *fmt, ...) {
    rs_tensor_spec *t = &s[(*n)++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = d1 > 0 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1 > 0 ? d1 : 0;
    t->slot = slot;
    t->dims = dims;
}

void rs_gemma2_specs(rs_tensor_spec *specs, rs_model *m) {
    const rs_model_config *c = &m->cfg;
    const int64_t d = c->d_model, ff = c->d_ff, V = c->vocab_size;
    const int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    static const char *D = "hidden_size", *VD = "vocab_size x hidden_size",
                      *QD = "num_attention_heads x head_dim, hidden_size",
                      *KVD = "num_key_value_heads x head_dim, hidden_size",
                      *OD = "hidden_size, num_attention_heads x head_dim", *FD = "intermediate_size, hidden_size",
                      *DF = "hidden_size, intermediate_size";
    int n = 0;
    add(specs, &n, &m->embed, V, d, VD, "model.embed_tokens.weight");
    add(specs, &n, &m->final_norm_w, d, 0, D, "model.norm.weight");
    if (!c->tie_word_embeddings) add(specs, &n, &m->unembed, V, d, VD, "lm_head.weight");
    for (int l = 0; l < c->n_layers; l++) {
        rs_layer_weights *w = &m->layers[l];
        add(specs, &n, &w->attn_norm_w, d, 0, D, "model.layers.%d.input_layernorm.weight", l);
        add(specs, &n, &w->q_w, qd, d, QD, "model.layers.%d.self_attn.q_proj.weight", l);
        add(specs, &n, &w->k_w, kvd, d, KVD, "model.layers.%d.self_attn.k_proj.weight", l);
        add(specs, &n, &w->v_w, kvd, d, KVD, "model.layers.%d.self_attn.v_proj.weight", l);
        add(specs, &n, &w->o_w, d, qd, OD, "model.layers.%d.self_attn.o_proj.weight", l);
        add(specs, &n, &w->attn_out_norm_w, d, 0, D, "model.layers.%d.post_attention_layernorm.weight", l);
        add(specs, &n, &w->mlp_norm_w, d, 0, D, "model.layers.%d.pre_feedforward_layernorm.weight", l);
        add(specs, &n, &w->gate_w, ff, d, FD, "model.layers.%d.mlp.gate_proj.weight", l);
        add(specs, &n, &w->up_w, ff, d, FD, "model.layers.%d.mlp.up_proj.weight", l);
        add(specs, &n, &w->down_w, d, ff, DF, "model.layers.%d.mlp.down_proj.weight", l);
        add(specs, &n, &w->mlp_out_norm_w, d, 0, D, "model.layers.%d.post_feedforward_layernorm.weight", l);
    }
    for (int i = n; i < rs_gemma2_n_specs(c); i++) specs[i].name[0] = '\0';
}

/* Released Gemma-2 checkpoints carry parameters only. */
int rs_gemma2_ignorable(const char *name) {
    (void)name;
    return 0;
}

/* ---- block ------------------------------------------------------------------------------------- */

void rs_gemma2_block(rs_run_state *s, const rs_model *m, int layer, const rs_layer_weights *w, int B, int T) {
    const rs_model_config *c = &m->cfg;
    const int N = B * T, d = c->d_model, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, ff = c->d_ff;
    const int qd = nh * hd, kvd = nkv * hd;
    const float eps = (float)c->layer_norm_eps;
    float *q = s->qkv;                        /* (N, qd) */
    float *k = q + (size_t)N * qd;            /* (N, kvd) */
    float *v = k + (size_t)N * kvd;           /* (N, kvd) */

    /* attention sublayer: the output projection lands in xn, is normalized there, then added */
    rs_rmsnorm_forward(s->xn, s->h, w->attn_norm_w, N, d, eps, 1.0f);
    rs_linear_forward(q, s->xn, w->q_w, NULL, N, d, qd, 0.0f);
    rs_linear_forward(k, s->xn, w->k_w, NULL, N, d, kvd, 0.0f);
    rs_linear_forward(v, s->xn, w->v_w, NULL, N, d, kvd, 0.0f);
    rs_rope_forward(q, s->rope_cos, s->rope_sin, qd, hd, nh, hd, B, T);
    rs_rope_forward(k, s->rope_cos, s->rope_sin, kvd, hd, nkv, hd, B, T);
    rs_attn_shape a = {.n_heads = nh, .n_kv_heads = nkv, .head_dim = hd, .scale = (float)c->attn_scale,
                       .softcap = (float)c->attn_softcap, .window = c->layer_sliding[layer] ? c->sliding_window : 0};
    rs_attention_forward(s->att, s->scores, q, k, v, qd, hd, kvd, hd, &a, B, T);
    rs_linear_forward(s->xn, s->att, w->o_w, NULL, N, qd, d, 0.0f);
    rs_rmsnorm_forward(s->xn, s->xn, w->attn_out_norm_w, N, d, eps, 1.0f);
    rs_add_forward(s->h, s->h, s->xn, (size_t)N * d);

    /* MLP sublayer (GeGLU) */
    rs_rmsnorm_forward(s->xn, s->h, w->mlp_norm_w, N, d, eps, 1.0f);
    rs_linear_forward(s->ff, s->xn, w->gate_w, NULL, N, d, ff, 0.0f);
    rs_linear_forward(s->up, s->xn, w->up_w, NULL, N, d, ff, 0.0f);
    rs_geglu_forward(s->ff, s->ff, s->up, (size_t)N * ff);
    rs_linear_forward(s->xn, s->ff, w->down_w, NULL, N, ff, d, 0.0f);
    rs_rmsnorm_forward(s->xn, s->xn, w->mlp_out_norm_w, N, d, eps, 1.0f);
    rs_add_forward(s->h, s->h, s->xn, (size_t)N * d);
}
