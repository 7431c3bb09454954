#include "resae/kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Hot elementwise loops get AVX-512 / AVX2 / baseline clones, chosen by the loader (ifunc); the build
 * itself stays baseline x86-64 so the binary runs anywhere. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RS_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RS_CLONES
#endif
#define RS_INLINE static inline __attribute__((always_inline))

/* ================================================================================================
 * scalar building blocks (inlined into the vectorized loops)
 * ================================================================================================ */

/* exp(x): x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), exp(r) by its degree-7 Taylor
 * polynomial (truncation error < 6e-9), times 2^n built in the exponent bits. Branch-free so the
 * loops around it vectorize. */
RS_INLINE float expf_inl(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* round to nearest via the 1.5 * 2^23 trick (no SSE4.1 round instruction needed) */
    const float shifter = 12582912.0f;
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - n * 0.693359375f;   /* ln2 high part: exact product for |n| < 2^9 */
    r = r + n * 2.12194440e-4f;       /* ln2 = 0.693359375 - 2.12194440e-4 */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, 4);
    return p * s;
}

float rs_expf(float x) { return expf_inl(x); }

/* erfc(z) for z >= 0 as exp(-z^2) * P(u), P a degree-10 polynomial in u = 2.4 t - 1.4, t = 2 / (2 + z),
 * least-squares fitted to the scaled complementary error function erfcx(z) = exp(z^2) erfc(z) on
 * z in [0, 10] (relative error < 5e-7 in fp32 arithmetic). */
RS_INLINE float erfc_pos_inl(float z) {
    float t = 2.0f / (2.0f + z);
    float u = 2.4f * t - 1.4f;
    float p = 4.599082154e-06f;
    p = p * u - 1.798102460e-05f;
    p = p * u - 3.355022428e-05f;
    p = p * u + 2.459423250e-04f;
    p = p * u + 8.701946883e-05f;
    p = p * u - 2.923667479e-03f;
    p = p * u - 1.104542150e-03f;
    p = p * u + 4.599041398e-02f;
    p = p * u + 1.954433141e-01f;
    p = p * u + 4.286347937e-01f;
    p = p * u + 3.336736544e-01f;
    return expf_inl(-z * z) * p;
}

/* ================================================================================================
 * norms, linear layers, activations
 * ================================================================================================ */

RS_CLONES
void rs_layernorm_forward(float *out, const float *inp, const float *w, const float *b, int N, int C, float eps) {
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        /* 16 float lanes, combined in double: accurate and vectorizable */
        float acc[16] = {0};
        int c = 0;
        for (; c + 16 <= C; c += 16)
            for (int l = 0; l < 16; l++) acc[l] += x[c + l];
        double s = 0;
        for (; c < C; c++) s += x[c];
        for (int l = 0; l < 16; l++) s += acc[l];
        float mean = (float)(s / C);
        float acc2[16] = {0};
        c = 0;
        for (; c + 16 <= C; c += 16)
            for (int l = 0; l < 16; l++) {
                float dv = x[c + l] - mean;
                acc2[l] += dv * dv;
            }
        double v = 0;
        for (; c < C; c++) v += (double)(x[c] - mean) * (x[c] - mean);
        for (int l = 0; l < 16; l++) v += acc2[l];
        float rstd = (float)(1.0 / sqrt(v / C + (double)eps));
        for (c = 0; c < C; c++) y[c] = (x[c] - mean) * rstd * w[c] + b[c];
    }
}

RS_CLONES
void rs_rmsnorm_forward(float *out, const float *inp, const float *w, int N, int C, float eps, float w_offset) {
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        float acc[16] = {0};
        int c = 0;
        for (; c + 16 <= C; c += 16)
            for (int l = 0; l < 16; l++) acc[l] += x[c + l] * x[c + l];
        double v = 0;
        for (; c < C; c++) v += (double)x[c] * x[c];
        for (int l = 0; l < 16; l++) v += acc[l];
        float rstd = (float)(1.0 / sqrt(v / C + (double)eps));
        /* the reference's order: (x * rstd) * (1 + w), each rounded to fp32 */
        for (c = 0; c < C; c++) y[c] = (x[c] * rstd) * (w_offset + w[c]);
    }
}

void rs_linear_forward(float *out, const float *inp, const float *w, const float *bias, int N, int IC, int OC,
                       float beta) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, w, IC, beta, out, OC);
    if (bias)
        for (int i = 0; i < N; i++) rs_add_forward(out + (size_t)i * OC, out + (size_t)i * OC, bias, (size_t)OC);
}

void rs_linear_forward_ld(float *out, int ld_out, const float *inp, const float *w, int N, int IC, int OC) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, w, IC, 0.0f, out, ld_out);
}

RS_CLONES
void rs_add_forward(float *out, const float *inp, const float *add, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] + add[i];
}

RS_CLONES
void rs_gelu_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float z = x * -0.70710678118654752f; /* 1 + erf(x/sqrt2) = erfc(-x/sqrt2) */
        float az = z < 0 ? -z : z;
        float e = erfc_pos_inl(az);
        float phi2 = z < 0 ? 2.0f - e : e;
        out[i] = 0.5f * x * phi2;
    }
}

RS_CLONES
void rs_geglu_forward(float *out, const float *gate, const float *up, size_t n) {
    /* 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)) */
    const float k2 = -2.0f * 0.79788456080286536f; /* -2 sqrt(2/pi) */
    for (size_t i = 0; i < n; i++) {
        float x = gate[i];
        float u = x + 0.044715f * x * x * x;
        float g = x / (1.0f + expf_inl(k2 * u));
        out[i] = up ? g * up[i] : g;
    }
}

void rs_softcap_forward(float *x, size_t n, float cap) {
    for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
}

/* ================================================================================================
 * rotary embeddings
 * ================================================================================================ */

void rs_rope_tables(float *cos_t, float *sin_t, int T, int rot, double base) {
    int half = rot / 2;
    for (int i = 0; i < half; i++) {
        /* fp32 like the reference: inv_freq and the angle t * inv_freq are rounded to float */
        float inv = (float)(1.0 / pow(base, (double)(2 * i) / rot));
        for (int t = 0; t < T; t++) {
            float ang = (float)t * inv;
            cos_t[(size_t)t * half + i] = (float)cos((double)ang);
            sin_t[(size_t)t * half + i] = (float)sin((double)ang);
        }
    }
}

RS_CLONES
void rs_rope_forward(float *x, const float *cos_t, const float *sin_t, int row, int head, int n_heads, int rot,
                     int B, int T) {
    int half = rot / 2;
    if (half <= 0) return;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
            for (int h = 0; h < n_heads; h++) {
                float *x1 = x + ((size_t)b * T + t) * row + (size_t)h * head, *x2 = x1 + half;
                for (int i = 0; i < half; i++) {
                    float a = x1[i], bb = x2[i];
                    x1[i] = a * c[i] - bb * s[i];
                    x2[i] = bb * c[i] + a * s[i];
                }
            }
        }
}

/* ================================================================================================
 * attention
 * ================================================================================================ */

/* Softmax of one score row over columns [lo, hi) (the visible keys); everything else in [0, n) -> 0. */
RS_CLONES
static void softmax_row(float *s, int lo, int hi, int n, float softcap) {
    if (softcap > 0)
        for (int j = lo; j < hi; j++) s[j] = softcap * tanhf(s[j] / softcap);
    float mx[16], m = -INFINITY;
    for (int l = 0; l < 16; l++) mx[l] = -INFINITY;
    int j = lo;
    for (; j + 16 <= hi; j += 16)
        for (int l = 0; l < 16; l++) mx[l] = s[j + l] > mx[l] ? s[j + l] : mx[l];
    for (; j < hi; j++) m = s[j] > m ? s[j] : m;
    for (int l = 0; l < 16; l++) m = mx[l] > m ? mx[l] : m;
    float acc[16] = {0};
    j = lo;
    for (; j + 16 <= hi; j += 16)
        for (int l = 0; l < 16; l++) {
            float e = expf_inl(s[j + l] - m);
            s[j + l] = e;
            acc[l] += e;
        }
    float sum = 0;
    for (; j < hi; j++) {
        s[j] = expf_inl(s[j] - m);
        sum += s[j];
    }
    for (int l = 0; l < 16; l++) sum += acc[l];
    float inv = 1.0f / sum;
    for (j = lo; j < hi; j++) s[j] *= inv;
    for (j = 0; j < lo; j++) s[j] = 0;
    for (j = hi; j < n; j++) s[j] = 0;
}

void rs_attention_forward(float *out, float *scratch, const float *q, const float *k, const float *v, int q_row,
                          int q_head, int kv_row, int kv_head, const rs_attn_shape *a, int B, int T) {
    const int hs = a->head_dim, nh = a->n_heads, group = a->n_heads / a->n_kv_heads;
    const int out_row = nh * hs;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++) {
            const int kvh = h / group;
            const float *qb = q + (size_t)b * T * q_row + (size_t)h * q_head;
            const float *kb = k + (size_t)b * T * kv_row + (size_t)kvh * kv_head;
            const float *vb = v + (size_t)b * T * kv_row + (size_t)kvh * kv_head;
            float *ob = out + (size_t)b * T * out_row + (size_t)h * hs;
            for (int i0 = 0; i0 < T; i0 += RS_ATTN_QBLOCK) {
                int i1 = i0 + RS_ATTN_QBLOCK < T ? i0 + RS_ATTN_QBLOCK : T;
                /* keys any query of the block can see: [j0, i1) */
                int j0 = a->window > 0 && i0 - a->window + 1 > 0 ? i0 - a->window + 1 : 0;
                int nj = i1 - j0, ni = i1 - i0;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, nj, hs, a->scale, qb + (size_t)i0 * q_row,
                            q_row, kb + (size_t)j0 * kv_row, kv_row, 0.0f, scratch, nj);
                for (int i = i0; i < i1; i++) {
                    int lo = a->window > 0 && i - a->window + 1 > j0 ? i - a->window + 1 - j0 : 0;
                    softmax_row(scratch + (size_t)(i - i0) * nj, lo, i + 1 - j0, nj, a->softcap);
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, hs, nj, 1.0f, scratch, nj,
                            vb + (size_t)j0 * kv_row, kv_row, 0.0f, ob + (size_t)i0 * out_row, out_row);
            }
        }
}

/* ================================================================================================
 * cross-entropy
 * ================================================================================================ */

RS_CLONES
static double row_lse(const float *x, int V) {
    /* lane-wise max and a probe that stays 0 unless some x is NaN or infinite (x * 0 is NaN then) */
    float mx[16], probe[16] = {0};
    for (int l = 0; l < 16; l++) mx[l] = -INFINITY;
    int j = 0;
    for (; j + 16 <= V; j += 16)
        for (int l = 0; l < 16; l++) {
            mx[l] = x[j + l] > mx[l] ? x[j + l] : mx[l];
            probe[l] += x[j + l] * 0.0f;
        }
    float m = -INFINITY, nan_probe = 0;
    for (; j < V; j++) {
        m = x[j] > m ? x[j] : m;
        nan_probe += x[j] * 0.0f;
    }
    for (int l = 0; l < 16; l++) {
        m = mx[l] > m ? mx[l] : m;
        nan_probe += probe[l];
    }
    if (nan_probe != 0 || !isfinite(m)) return NAN;
    /* 16 float lanes per block of 1024, blocks summed in double: error ~1e-7 relative */
    double sum = 0;
    j = 0;
    while (j < V) {
        int end = j + 1024 < V ? j + 1024 : V;
        float acc[16] = {0};
        for (; j + 16 <= end; j += 16)
            for (int l = 0; l < 16; l++) acc[l] += expf_inl(x[j + l] - m);
        float tail = 0;
        for (; j < end; j++) tail += expf_inl(x[j] - m);
        double bs = tail;
        for (int l = 0; l < 16; l++) bs += acc[l];
        sum += bs;
    }
    return (double)m + log(sum);
}

double rs_logsumexp(const float *x, int V) { return row_lse(x, V); }

void rs_ce_forward(float *ce, const float *logits, const int32_t *target, int N, int V) {
    for (int i = 0; i < N; i++) {
        if (target[i] < 0) continue;
        const float *x = logits + (size_t)i * V;
        ce[i] = (float)(row_lse(x, V) - (double)x[target[i]]);
    }
}
