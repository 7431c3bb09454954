/* Shared transformer kernels against direct double-precision implementations of their definitions:
 * exp, exact GELU, tanh-GELU GeGLU, layer norm, RMSNorm (1 + w), logit soft-cap, rotary (rotate-half), causal attention with grouped-query heads,
 * sliding window and soft-capping (several query blocks), next-token CE. Exits non-zero on mismatch. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/kernels.h"

#include "testlib.h"


static uint64_t g_rng = 88172645463325252ULL;
static double urand(void) { /* xorshift64*, uniform in [0, 1) */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (double)((g_rng * 2685821657736338717ULL) >> 11) * 0x1p-53;
}
static float nrand(void) { return (float)(sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand())); }

static void test_exp(void) {
    double worst = 0;
    for (double x = -87.0; x <= 88.0; x += 0.00137) {
        float xf = (float)x;
        double ref = exp((double)xf), got = rs_expf(xf);
        double rel = fabs(got - ref) / ref;
        if (rel > worst) worst = rel;
    }
    printf("expf: max relative error %.2e\n", worst);
    CHECK(worst < 5e-7, "expf relative error %.3e", worst);
    CHECK(rs_expf(-1000.0f) < 1e-37f && rs_expf(0.0f) == 1.0f, "expf edges");
}

static void test_gelu(void) {
    enum { N = 200001 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) x[i] = -12.0f + 24.0f * (float)i / (N - 1);
    rs_gelu_forward(y, x, N);
    /* error relative to the size of the input: the output feeds a matrix product */
    double worst = 0, worst_phi = 0;
    for (int i = 0; i < N; i++) {
        double xd = x[i], ref = 0.5 * xd * erfc(-xd / sqrt(2.0));
        double e = fabs(y[i] - ref) / (fabs(xd) > 1e-30 ? fabs(xd) : 1);
        if (e > worst) worst = e;
        /* for negative x also the relative error of the (tiny) output itself, down to 1e-30 */
        if (xd < 0 && fabs(ref) > 1e-30) {
            double r = fabs(y[i] - ref) / fabs(ref);
            if (r > worst_phi) worst_phi = r;
        }
    }
    printf("gelu: max |err|/|x| %.2e, max relative error for x < 0: %.2e\n", worst, worst_phi);
    CHECK(worst < 3e-7, "gelu error %.3e", worst);
    CHECK(worst_phi < 2e-5, "gelu relative error on the negative side %.3e", worst_phi);
    float z = 0;
    rs_gelu_forward(y, &z, 1);
    CHECK(y[0] == 0, "gelu(0)");
    free(x);
    free(y);
}

static void test_layernorm(void) {
    const int N = 5, C = 77;
    float x[5 * 77], w[77], b[77], y[5 * 77];
    for (int i = 0; i < N * C; i++) x[i] = 3.0f + 2.0f * nrand();
    for (int c = 0; c < C; c++) {
        w[c] = 1.0f + 0.3f * nrand();
        b[c] = 0.2f * nrand();
    }
    rs_layernorm_forward(y, x, w, b, N, C, 1e-5f);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[i * C + c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[i * C + c] - m) * (x[i * C + c] - m);
        v /= C;
        for (int c = 0; c < C; c++) {
            double ref = (x[i * C + c] - m) / sqrt(v + 1e-5) * w[c] + b[c];
            worst = fmax(worst, fabs(ref - y[i * C + c]));
        }
    }
    printf("layernorm: max |err| %.2e\n", worst);
    CHECK(worst < 2e-6, "layernorm error %.3e", worst);
    rs_layernorm_forward(x, x, w, b, N, C, 1e-5f); /* in place */
    CHECK(!memcmp(x, y, sizeof y), "layernorm in place differs");
}

static void test_geglu(void) {
    enum { N = 200001 };
    float *x = malloc(N * sizeof *x), *u = malloc(N * sizeof *u), *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) {
        x[i] = -12.0f + 24.0f * (float)i / (N - 1);
        u[i] = 0.5f + nrand();
    }
    rs_geglu_forward(y, x, u, N);
    /* the definition (transformers' gelu_pytorch_tanh) times up; error relative to |x| |up| */
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double xd = x[i];
        double ref = 0.5 * xd * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (xd + 0.044715 * xd * xd * xd))) * u[i];
        double sc = fabs(xd * u[i]) > 1e-30 ? fabs(xd * u[i]) : 1;
        worst = fmax(worst, fabs(y[i] - ref) / sc);
    }
    printf("geglu (tanh GELU): max |err|/|x up| %.2e\n", worst);
    CHECK(worst < 3e-7, "geglu error %.3e", worst);
    rs_geglu_forward(y, x, NULL, N);
    double w2 = 0;
    for (int i = 0; i < N; i++) {
        double xd = x[i], ref = 0.5 * xd * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (xd + 0.044715 * xd * xd * xd)));
        w2 = fmax(w2, fabs(y[i] - ref) / (fabs(xd) > 1e-30 ? fabs(xd) : 1));
    }
    CHECK(w2 < 3e-7, "tanh gelu without up: error %.3e", w2);
    rs_geglu_forward(x, x, u, N); /* in place on the gate */
    rs_geglu_forward(y, y, u, 0);
    free(x);
    free(u);
    free(y);
}

static void test_rmsnorm(void) {
    const int N = 5, C = 77;
    float x[5 * 77], w[77], y[5 * 77];
    for (int i = 0; i < N * C; i++) x[i] = 3.0f + 2.0f * nrand();
    for (int c = 0; c < C; c++) w[c] = 0.3f * nrand();
    rs_rmsnorm_forward(y, x, w, N, C, 1e-6f, 1.0f);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double ms = 0;
        for (int c = 0; c < C; c++) ms += (double)x[i * C + c] * x[i * C + c];
        ms /= C;
        for (int c = 0; c < C; c++) {
            double ref = x[i * C + c] / sqrt(ms + 1e-6) * (1.0 + w[c]);
            worst = fmax(worst, fabs(ref - y[i * C + c]));
        }
    }
    printf("rmsnorm: max |err| %.2e\n", worst);
    CHECK(worst < 2e-6, "rmsnorm error %.3e", worst);
    rs_rmsnorm_forward(x, x, w, N, C, 1e-6f, 1.0f); /* in place */
    CHECK(!memcmp(x, y, sizeof y), "rmsnorm in place differs");
}

static void test_softcap(void) {
    enum { N = 4001 };
    float x[N];
    double worst = 0;
    for (int i = 0; i < N; i++) x[i] = -200.0f + 400.0f * (float)i / (N - 1);
    float x0[N];
    memcpy(x0, x, sizeof x);
    rs_softcap_forward(x, N, 30.0f);
    for (int i = 0; i < N; i++) worst = fmax(worst, fabs(x[i] - 30.0 * tanh(x0[i] / 30.0)));
    printf("softcap: max |err| %.2e\n", worst);
    CHECK(worst < 1e-5, "softcap error %.3e", worst);
}

static void test_rope(void) {
    const int B = 2, T = 9, nh = 3, hs = 10, rot = 6, row = 3 * nh * hs, head = 3 * hs;
    const double base = 500;
    float *x = malloc((size_t)B * T * row * sizeof *x), *x0 = malloc((size_t)B * T * row * sizeof *x);
    float cs[9 * 3], sn[9 * 3];
    for (int i = 0; i < B * T * row; i++) x0[i] = x[i] = nrand();
    rs_rope_tables(cs, sn, T, rot, base);
    rs_rope_forward(x, cs, sn, row, head, nh, rot, B, T);
    double worst = 0;
    int untouched = 1;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < nh; h++) {
                const float *in = x0 + ((size_t)b * T + t) * row + (size_t)h * head;
                const float *out = x + ((size_t)b * T + t) * row + (size_t)h * head;
                for (int c = 0; c < head; c++) {
                    double ref;
                    if (c < rot) {
                        /* q*cos(emb) + rotate_half(q)*sin(emb), emb = cat(freqs, freqs) */
                        int i = c % (rot / 2);
                        double ang = t / pow(base, 2.0 * i / rot);
                        double rh = c < rot / 2 ? -in[c + rot / 2] : in[c - rot / 2];
                        ref = in[c] * cos(ang) + rh * sin(ang);
                        worst = fmax(worst, fabs(ref - out[c]));
                    } else if (out[c] != in[c]) {
                        untouched = 0;
                    }
                }
            }
    printf("rope: max |err| %.2e\n", worst);
    CHECK(worst < 2e-6, "rope error %.3e", worst);
    CHECK(untouched, "rope changed channels past rot or other heads' k/v");
    free(x);
    free(x0);
}

/* out (B*T, nh*hs) by the definition, in double */
static void attention_ref(double *out, const float *q, const float *k, const float *v, const rs_attn_shape *a, int B,
                          int T) {
    const int nh = a->n_heads, nkv = a->n_kv_heads, hs = a->head_dim, group = nh / nkv;
    double *s = malloc((size_t)T * sizeof *s);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < T; i++) {
                const float *qi = q + ((size_t)b * T + i) * nh * hs + (size_t)h * hs;
                double m = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    int visible = j <= i && (a->window <= 0 || i - j < a->window);
                    if (!visible) {
                        s[j] = -INFINITY;
                        continue;
                    }
                    const float *kj = k + ((size_t)b * T + j) * nkv * hs + (size_t)(h / group) * hs;
                    double dot = 0;
                    for (int c = 0; c < hs; c++) dot += (double)qi[c] * kj[c];
                    dot *= a->scale;
                    if (a->softcap > 0) dot = a->softcap * tanh(dot / a->softcap);
                    s[j] = dot;
                    m = fmax(m, dot);
                }
                for (int j = 0; j < T; j++) {
                    s[j] = s[j] == -INFINITY ? 0 : exp(s[j] - m);
                    sum += s[j];
                }
                double *o = out + ((size_t)b * T + i) * nh * hs + (size_t)h * hs;
                for (int c = 0; c < hs; c++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++)
                        acc += s[j] * v[((size_t)b * T + j) * nkv * hs + (size_t)(h / group) * hs + c];
                    o[c] = acc / sum;
                }
            }
    free(s);
}

static void test_attention(int nh, int nkv, int window, float softcap, int T) {
    const int B = 2, hs = 16;
    rs_attn_shape a = {.n_heads = nh, .n_kv_heads = nkv, .head_dim = hs, .scale = 0.25f, .softcap = softcap,
                       .window = window};
    size_t nq = (size_t)B * T * nh * hs, nk = (size_t)B * T * nkv * hs;
    float *q = malloc(nq * sizeof *q), *k = malloc(nk * sizeof *k), *v = malloc(nk * sizeof *v);
    float *out = malloc(nq * sizeof *out), *scratch = malloc((size_t)RS_ATTN_QBLOCK * T * sizeof *scratch);
    double *ref = malloc(nq * sizeof *ref);
    for (size_t i = 0; i < nq; i++) q[i] = 1.5f * nrand();
    for (size_t i = 0; i < nk; i++) {
        k[i] = 1.5f * nrand();
        v[i] = nrand();
    }
    rs_attention_forward(out, scratch, q, k, v, nh * hs, hs, nkv * hs, hs, &a, B, T);
    attention_ref(ref, q, k, v, &a, B, T);
    rs_check_diff e = rs_check_diff_fd(out, ref, nq);
    printf("attention heads %d/%d window %d softcap %g T %d: max |err| %.2e\n", nh, nkv, window, softcap, T,
           e.max_abs);
    CHECK_DIFF(e, max_abs, 2e-5, "attention heads %d/%d window %d softcap %g T %d", nh, nkv, window, softcap, T);
    free(q);
    free(k);
    free(v);
    free(out);
    free(scratch);
    free(ref);
}

static void test_ce(void) {
    const int N = 4, V = 3001;
    float *x = malloc((size_t)N * V * sizeof *x), ce[4] = {-1, -1, -1, -1};
    int32_t tgt[4] = {5, V - 1, -1, 0};
    for (int i = 0; i < N * V; i++) x[i] = 4.0f * nrand();
    x[1 * V + 7] = 60.0f; /* a dominant logit */
    rs_ce_forward(ce, x, tgt, N, V);
    for (int i = 0; i < N; i++) {
        if (tgt[i] < 0) {
            CHECK(ce[i] == -1, "row with target -1 must be skipped");
            continue;
        }
        double m = -INFINITY, s = 0;
        for (int j = 0; j < V; j++) m = fmax(m, x[i * V + j]);
        for (int j = 0; j < V; j++) s += exp(x[i * V + j] - m);
        double ref = m + log(s) - x[i * V + tgt[i]];
        CHECK(fabs(ce[i] - ref) <= 2e-6 * fmax(1, fabs(ref)), "CE row %d: %.9g vs %.9g", i, ce[i], ref);
    }
    x[3 * V + 11] = NAN;
    rs_ce_forward(ce, x, tgt, N, V);
    CHECK(isnan(ce[3]), "a NaN logit must give a NaN CE");
    x[3 * V + 11] = INFINITY;
    rs_ce_forward(ce, x, tgt, N, V);
    CHECK(isnan(ce[3]), "an infinite logit must give a NaN CE");
    free(x);
}

int main(void) {
    test_exp();
    test_gelu();
    test_layernorm();
    test_geglu();
    test_rmsnorm();
    test_softcap();
    test_rope();
    test_attention(4, 4, 0, 0.0f, 300);    /* plain causal, 3 query blocks */
    test_attention(6, 2, 0, 0.0f, 140);    /* grouped-query */
    test_attention(4, 2, 50, 0.0f, 300);   /* sliding window across blocks */
    test_attention(3, 1, 0, 5.0f, 131);    /* soft-capping, multi-query */
    test_attention(2, 2, 1, 0.0f, 7);      /* window 1: attends to itself only */
    test_ce();
    if (rs_check_fails) fprintf(stderr, "FAILED\n");
    return rs_check_fails;
}
