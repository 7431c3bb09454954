/* Transformer kernels in fp32, shared by every architecture: norms, linear layers (OpenBLAS SGEMM),
 * rotary embeddings, causal attention, activations, next-token cross-entropy.
 * Arguments are outputs, then inputs, then sizes (llm.c); N is the number of token rows (B*T).
 * Elementwise loops are single-threaded and compiled for AVX-512, AVX2 and baseline x86-64,
 * picked at load time; parallelism comes from BLAS. */
#ifndef RESAE_KERNELS_H
#define RESAE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Rows of queries processed at once by rs_attention_forward; scratch is (RS_ATTN_QBLOCK, T). */
#define RS_ATTN_QBLOCK 128

/* out = (inp - mean) / sqrt(var + eps) * w + b per row (biased variance, like torch). In place allowed. */
void rs_layernorm_forward(float *out, const float *inp, const float *w, const float *b, int N, int C, float eps);

/* RMSNorm (Gemma-2): out = x / sqrt(mean(x^2) + eps) * (w_offset + w) per row, in fp32 with the
 * mean of squares accumulated in double; Gemma2RMSNorm is w_offset 1. In place allowed. */
void rs_rmsnorm_forward(float *out, const float *inp, const float *w, int N, int C, float eps, float w_offset);

/* out (N, OC) = beta * out + inp (N, IC) @ w^T + bias; w (OC, IC) in Hugging Face's Linear layout;
 * bias (OC) or NULL. beta is 0 (overwrite) or 1 (accumulate into out). */
void rs_linear_forward(float *out, const float *inp, const float *w, const float *bias, int N, int IC, int OC,
                       float beta);
/* out (N, OC) with row stride ld_out = inp (N, IC) @ w(OC, IC)^T, no bias: a column block of a wider
 * output (the logits of a block of vocabulary rows). */
void rs_linear_forward_ld(float *out, int ld_out, const float *inp, const float *w, int N, int IC, int OC);

/* out = inp + add, elementwise over n values (out may alias inp). */
void rs_add_forward(float *out, const float *inp, const float *add, size_t n);

/* Exact (erf) GELU, in place allowed: 0.5 x (1 + erf(x / sqrt 2)), evaluated as 0.5 x erfc(-x / sqrt 2)
 * (no cancellation for negative x); |error| < 3e-7 |x| (tests/model/test_kernels.c). */
void rs_gelu_forward(float *out, const float *inp, size_t n);

/* GeGLU with the tanh-approximate GELU (transformers' gelu_pytorch_tanh), in place on gate allowed:
 * out = gelu_tanh(gate) * up, gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated
 * as x / (1 + exp(-2 sqrt(2/pi) (x + 0.044715 x^3))) (the same function, no cancellation).
 * up NULL: out = gelu_tanh(gate). */
void rs_geglu_forward(float *out, const float *gate, const float *up, size_t n);

/* Soft-cap in place: x = cap * tanh(x / cap) (Gemma-2's final logits; cap > 0). */
void rs_softcap_forward(float *x, size_t n, float cap);

/* exp(x) with a relative error of a few ulp for x in [-87, 88] (0 below, clamped above). */
float rs_expf(float x);
/* log(sum_j exp(x[j])) of one row (the cross-entropy's, ~1e-7 relative; NaN if any x is not finite). */
double rs_logsumexp(const float *x, int V);

/* Rotary tables for positions 0..T-1 and `rot` rotated channels (Hugging Face semantics):
 * inv_freq[i] = 1 / base^(2i / rot), angle = t * inv_freq[i]; cos/sin (T, rot/2). */
void rs_rope_tables(float *cos_t, float *sin_t, int T, int rot, double base);

/* Rotate-half rotary embedding of the first `rot` channels of each head, in place:
 * x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin with x1 = x[0:rot/2], x2 = x[rot/2:rot].
 * Element (b, t, h, c) lives at x[(b*T + t) * row + h * head + c]; position = t. */
void rs_rope_forward(float *x, const float *cos_t, const float *sin_t, int row, int head, int n_heads, int rot,
                     int B, int T);

typedef struct rs_attn_shape {
    int n_heads;      /* query heads */
    int n_kv_heads;   /* key/value heads; query head h reads kv head h / (n_heads / n_kv_heads) */
    int head_dim;
    float scale;      /* multiplies q . k (1/sqrt(head_dim) for GPT-NeoX) */
    float softcap;    /* > 0: score = softcap * tanh(score / softcap) before the mask; 0: off */
    int window;       /* > 0: query i sees keys j with i - window < j <= i; 0: every j <= i */
} rs_attn_shape;

/* Causal softmax attention. out (B*T, n_heads*head_dim), head h at columns [h*head_dim, (h+1)*head_dim).
 * q element (b, t, h, c) at q[(b*T + t) * q_row + h * q_head + c]; k and v likewise with kv_row, kv_head.
 * scratch holds RS_ATTN_QBLOCK * T floats. */
void rs_attention_forward(float *out, float *scratch, const float *q, const float *k, const float *v, int q_row,
                          int q_head, int kv_row, int kv_head, const rs_attn_shape *a, int B, int T);

/* Per-row next-token cross-entropy: ce[i] = logsumexp(logits[i, :]) - logits[i, target[i]], with the
 * log-sum-exp accumulated in double. Rows with target < 0 are skipped (ce untouched). A NaN logit
 * makes the row's CE NaN. */
void rs_ce_forward(float *ce, const float *logits, const int32_t *target, int N, int V);

#endif
