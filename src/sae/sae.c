#define _DEFAULT_SOURCE /* madvise */
/* TopK SAE: the parameter slab, the row kernels (dot, axpy, partial top-k selection, sparse
 * decode) and inference (encode, decode, reconstruct). The trainer lives in sae_train.c. */
#include "resae/sae.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "sae_kern.h"
#include "resae/util.h"

/* ============================== slab ============================== */

/* Rows of the big matrices are read in random order (2 KB rows scattered over tens of MB): with
 * 4 KB pages nearly every row costs a TLB miss, so buffers of 2 MB or more ask for huge pages. */
void *rs_sae_alloc_big(size_t n, size_t size) {
    const size_t huge = (size_t)2 << 20;
    if (size && n > SIZE_MAX / size) return NULL;
    size_t bytes = n * size;
    if (bytes < huge) return rs_calloc_aligned(n, size);
    bytes = (bytes + huge - 1) & ~(huge - 1);
    void *p = aligned_alloc(huge, bytes);
    if (!p) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE); /* advice only: failure is harmless */
#endif
    memset(p, 0, bytes);
    return p;
}

size_t rs_sae_slab_size(int d, int n_latents) {
    return 2 * (size_t)n_latents * (size_t)d + (size_t)n_latents + (size_t)d;
}

void rs_sae_params_view(rs_sae_params *v, float *slab, int d, int n) {
    size_t nd = (size_t)n * (size_t)d;
    v->W_enc = slab;
    v->b_enc = slab + nd;
    v->W_dec = slab + nd + (size_t)n;
    v->b_dec = slab + 2 * nd + (size_t)n;
}

rs_err rs_sae_init(rs_sae *sae, int d, int n_latents, int k) {
    memset(sae, 0, sizeof *sae);
    if (d < 1 || n_latents < 1 || k < 1 || k > n_latents)
        RS_FAIL(RS_ERR_INVAL, "SAE shape d=%d n_latents=%d k=%d is invalid (need d, n_latents >= 1 and "
                "1 <= k <= n_latents)", d, n_latents, k);
    sae->d = d;
    sae->n_latents = n_latents;
    sae->k = k;
    sae->n_params = rs_sae_slab_size(d, n_latents);
    sae->slab = rs_sae_alloc_big(sae->n_params, sizeof(float));
    RS_CHECK_ALLOC(sae->slab);
    rs_sae_params_view(&sae->p, sae->slab, d, n_latents);
    return RS_OK;
}

void rs_sae_free(rs_sae *sae) {
    free(sae->slab);
    memset(sae, 0, sizeof *sae);
}

/* ============================== kernels ============================== */

/* 16 independent partial sums: vectorizable without reassociation, same result in every clone */
RS_HOT float rs_sae_dot(const float *restrict a, const float *restrict b, int n) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += a[i + l] * b[i + l];
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += acc[l];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

RS_HOT void rs_sae_axpy(float *restrict y, float a, const float *restrict x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

/* returns w . x while y += a x: one pass over x (same arithmetic as rs_sae_dot + rs_sae_axpy) */
RS_HOT float rs_sae_dot_axpy(float *restrict y, float a, const float *restrict w, const float *restrict x, int n) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            float xv = x[i + l];
            acc[l] += w[i + l] * xv;
            y[i + l] += a * xv;
        }
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += acc[l];
    for (; i < n; i++) {
        s += w[i] * x[i];
        y[i] += a * x[i];
    }
    return s;
}

/* Sums of squares over 8 double lanes combined in a fixed order: no loop-carried chain of
 * dependent additions, and the same result in every clone. */
static inline double lanes_sum(const double acc[8]) {
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

RS_HOT double rs_sae_sq_dev(const float *restrict x, const float *restrict mu, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) {
            double dv = (double)x[i + l] - (double)mu[i + l];
            acc[l] += dv * dv;
        }
    for (; i < n; i++) {
        double dv = (double)x[i] - (double)mu[i];
        acc[0] += dv * dv;
    }
    return lanes_sum(acc);
}

RS_HOT double rs_sae_resid(float *restrict g, const float *restrict x, double *restrict sum, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) {
            float r = g[i + l] - x[i + l];
            g[i + l] = r;
            sum[i + l] += r;
            acc[l] += (double)r * (double)r;
        }
    for (; i < n; i++) {
        float r = g[i] - x[i];
        g[i] = r;
        sum[i] += r;
        acc[0] += (double)r * (double)r;
    }
    return lanes_sum(acc);
}

RS_HOT double rs_sae_resid_scale(float *restrict g, const float *restrict x, double *restrict sum, float s,
                                 double *restrict gsum, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) {
            float r = g[i + l] - x[i + l], q = r * s;
            g[i + l] = q;
            sum[i + l] += r;
            gsum[i + l] += q;
            acc[l] += (double)r * (double)r;
        }
    for (; i < n; i++) {
        float r = g[i] - x[i], q = r * s;
        g[i] = q;
        sum[i] += r;
        gsum[i] += q;
        acc[0] += (double)r * (double)r;
    }
    return lanes_sum(acc);
}

RS_HOT void rs_sae_scale_sum(float *restrict g, float s, double *restrict sum, int n) {
    for (int i = 0; i < n; i++) {
        g[i] *= s;
        sum[i] += g[i];
    }
}

void rs_sae_prefetch_row(const float *p, int n) {
    for (int i = 0; i < n; i += 16) __builtin_prefetch(p + i, 0, 3);
}

/* min-heap on val of size k (root = current threshold) */
static inline void heap_sift(int32_t *idx, float *val, int k, float v, int32_t j) {
    int pos = 0;
    for (;;) {
        int c = 2 * pos + 1;
        if (c >= k) break;
        if (c + 1 < k && val[c + 1] < val[c]) c++;
        if (val[c] >= v) break;
        val[pos] = val[c];
        idx[pos] = idx[c];
        pos = c;
    }
    val[pos] = v;
    idx[pos] = j;
}

static inline void heap_reset(int32_t *idx, float *val, int k) {
    for (int s = 0; s < k; s++) {
        idx[s] = -1;
        val[s] = 0.0f;
    }
}

/* ---- top-k of one row: compress the entries above a threshold, then find the k-th by bisection ----
 * Order: larger value first, ties by smaller latent id, so the selected set is unique whatever
 * threshold produced the candidates; the k winners are written in ascending latent order. */

/* Candidates row[i] + bias[i] > thr, in index order; returns their number. */
static int compress_scalar(float *restrict cv, int32_t *restrict ci, const float *restrict row,
                           const float *restrict bias, int n, float thr) {
    int c = 0;
    for (int i = 0; i < n; i++) {
        float v = row[i] + bias[i];
        if (v > thr) {
            cv[c] = v;
            ci[c++] = i;
        }
    }
    return c;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(RESAE_NO_CLONES)
#include <immintrin.h>

const char *const rs_sae_bdec_init_names[RS_SAE_BDEC_COUNT] = {"geometric_median", "mean", "zero"};
const char *const rs_sae_enc_init_names[RS_SAE_ENC_COUNT] = {"tied", "data", "openai", "sparsify"};
const char *const rs_sae_aux_norm_names[RS_SAE_AUX_COUNT] = {"residual", "input"};
const char *const rs_sae_precision_names[RS_SAE_PREC_COUNT] = {"fp32", "bf16"};
#define RS_HAVE_AVX512_COMPRESS 1
/* floats the compress loop fetches ahead: the rows come from a GEMM output far larger than L2 */
#define RS_SAE_STREAM_AHEAD 1024
/* The same with 16-lane compares and compress stores (the sum is the same IEEE addition). */
__attribute__((target("avx512f"))) static int compress_avx512(float *restrict cv, int32_t *restrict ci,
                                                              const float *restrict row,
                                                              const float *restrict bias, int n, float thr) {
    int c = 0, i = 0;
    __m512 vt = _mm512_set1_ps(thr);
    __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (; i + 16 <= n; i += 16) {
        _mm_prefetch((const char *)(row + i + RS_SAE_STREAM_AHEAD), _MM_HINT_T0);
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(row + i), _mm512_loadu_ps(bias + i));
        __mmask16 m = _mm512_cmp_ps_mask(v, vt, _CMP_GT_OQ);
        /* no branch on m: whether a block has a candidate is a coin flip (a third of them do) */
        _mm512_mask_compressstoreu_ps(cv + c, m, v);
        _mm512_mask_compressstoreu_epi32(ci + c, m, _mm512_add_epi32(lane, _mm512_set1_epi32(i)));
        c += __builtin_popcount((unsigned)m);
    }
    for (; i < n; i++) {
        float v = row[i] + bias[i];
        if (v > thr) {
            cv[c] = v;
            ci[c++] = i;
        }
    }
    return c;
}
#endif

static int compress(float *cv, int32_t *ci, const float *row, const float *bias, int n, float thr) {
#ifdef RS_HAVE_AVX512_COMPRESS
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") ? 1 : 0;
    }
    if (have) return compress_avx512(cv, ci, row, bias, n, thr);
#endif
    return compress_scalar(cv, ci, row, bias, n, thr);
}

/* number of entries of v (c) that are >= x; inlined into each clone of its caller and vectorized */
static inline int count_ge(const float *restrict v, int c, float x) {
    int s = 0;
    for (int i = 0; i < c; i++) s += v[i] >= x;
    return s;
}

static inline uint32_t float_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static inline float bits_float(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* The k-th largest of c > k values, all > floor >= 0: the largest x with at least k values >= x.
 * Positive floats order like their bit patterns, so a bisection over the patterns between floor
 * and the largest value finds it exactly in at most 31 counting passes (vector compares, no
 * swaps). */
RS_HOT static float kth_largest(const float *restrict v, int c, int k, float floor) {
    float mx[16];
    for (int l = 0; l < 16; l++) mx[l] = v[0];
    int i = 0;
    for (; i + 16 <= c; i += 16)
        for (int l = 0; l < 16; l++) mx[l] = v[i + l] > mx[l] ? v[i + l] : mx[l];
    for (; i < c; i++) mx[0] = v[i] > mx[0] ? v[i] : mx[0];
    for (int l = 1; l < 16; l++) mx[0] = mx[l] > mx[0] ? mx[l] : mx[0];
    uint32_t lo = float_bits(floor), hi = float_bits(mx[0]) + 1; /* count(>= lo) >= k > count(>= hi) */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (count_ge(v, c, bits_float(mid)) >= k) lo = mid;
        else hi = mid;
    }
    return bits_float(lo);
}

void rs_sae_topk_row(int32_t *restrict idx, float *restrict val, const float *restrict row,
                     const float *restrict bias, int n, int k, float *hint, float *restrict scratch) {
    float *cv = scratch, *wv = scratch + n;
    int32_t *ci = (int32_t *)(scratch + 2 * (size_t)n), *wi = (int32_t *)(scratch + 3 * (size_t)n);
    float thr = hint && *hint > 0.0f ? *hint : 0.0f;
    int c = compress(cv, ci, row, bias, n, thr);
    /* too few above the guess: lower it (the row is in L1 now), at last to 0 */
    for (int retry = 0; c < k && thr > 0.0f; retry++) {
        thr = retry < 2 ? 0.75f * thr : 0.0f;
        c = compress(cv, ci, row, bias, n, thr);
    }
    if (c <= k) {
        for (int s = 0; s < c; s++) idx[s] = ci[s], val[s] = cv[s];
        for (int s = c; s < k; s++) idx[s] = -1, val[s] = 0.0f;
        if (hint) *hint = 0.0f;
        return;
    }
    float kv = kth_largest(cv, c, k, thr);
    /* all candidates above the k-th value, then the first (smallest-id) ties at it: gathered in
     * index order without branches (into the work buffers, which have room for the
     * one-past-the-end stores) */
    int ties = k - count_ge(cv, c, bits_float(float_bits(kv) + 1)), o = 0; /* v > kv: v >= next float */
    for (int s = 0; s < c; s++) {
        int gt = cv[s] > kv, eq = cv[s] == kv, take = gt | (eq & (ties > 0));
        ties -= eq & take;
        wv[o] = cv[s];
        wi[o] = ci[s];
        o += take;
    }
    memcpy(idx, wi, (size_t)k * sizeof(int32_t));
    memcpy(val, wv, (size_t)k * sizeof(float));
    /* the next row of the same matrix has a similar k-th value: start a little below it */
    if (hint) *hint = 0.85f * kv;
}

void rs_sae_topk_sel(int32_t *restrict idx, float *restrict val, const float *restrict row,
                     const float *restrict bias, const int32_t *restrict sel, int nsel, int k) {
    heap_reset(idx, val, k);
    float thr = 0.0f;
    for (int s = 0; s < nsel; s++) {
        int32_t j = sel[s];
        float v = row[j] + bias[j];
        if (v > thr) {
            heap_sift(idx, val, k, v, j);
            thr = val[0];
        }
    }
}

RS_HOT void rs_sae_decode_row(float *restrict out, const float *restrict W, const float *restrict base,
                              const int32_t *restrict idx, const float *restrict val, int k, int d) {
    if (base) memcpy(out, base, (size_t)d * sizeof(float));
    else memset(out, 0, (size_t)d * sizeof(float));
    for (int s = 0; s < k; s++) {
        if (!(val[s] > 0.0f)) continue;
        for (int q = s + 1; q < k && q <= s + 2; q++)
            if (val[q] > 0.0f) rs_sae_prefetch_row(W + (size_t)idx[q] * (size_t)d, d);
        const float *w = W + (size_t)idx[s] * (size_t)d;
        float a = val[s];
        for (int i = 0; i < d; i++) out[i] += a * w[i];
    }
}

/* ============================== inference ============================== */

enum { ENCODE_CHUNK = 256 };

rs_err rs_sae_encode(int32_t *idx, float *val, const rs_sae *sae, const float *x, int64_t rows) {
    int d = sae->d, n = sae->n_latents, k = sae->k;
    int64_t chunk = rows < ENCODE_CHUNK ? rows : ENCODE_CHUNK;
    if (chunk <= 0) return RS_OK;
    float *xc = malloc((size_t)chunk * (size_t)d * sizeof(float));
    float *pre = malloc((size_t)chunk * (size_t)n * sizeof(float));
    float *scratch = malloc(4 * (size_t)n * sizeof(float)), hint = 0.0f;
    if (!xc || !pre || !scratch) {
        free(xc);
        free(pre);
        free(scratch);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for an encode chunk of %lld rows x %d latents", (long long)chunk, n);
    }
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int m = (int)(rows - r0 < chunk ? rows - r0 : chunk);
        for (int r = 0; r < m; r++) {
            const float *xr = x + (size_t)(r0 + r) * (size_t)d;
            float *cr = xc + (size_t)r * (size_t)d;
            for (int i = 0; i < d; i++) cr[i] = xr[i] - sae->p.b_dec[i];
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, d, 1.0f, xc, d, sae->p.W_enc, d, 0.0f, pre, n);
        for (int r = 0; r < m; r++)
            rs_sae_topk_row(idx + (size_t)(r0 + r) * (size_t)k, val + (size_t)(r0 + r) * (size_t)k,
                            pre + (size_t)r * (size_t)n, sae->p.b_enc, n, k, &hint, scratch);
    }
    free(xc);
    free(pre);
    free(scratch);
    return RS_OK;
}

void rs_sae_decode(float *x_hat, const rs_sae *sae, const int32_t *idx, const float *val, int64_t rows) {
    int d = sae->d, k = sae->k;
    for (int64_t r = 0; r < rows; r++)
        rs_sae_decode_row(x_hat + (size_t)r * (size_t)d, sae->p.W_dec, sae->p.b_dec, idx + (size_t)r * (size_t)k,
                          val + (size_t)r * (size_t)k, k, d);
}

rs_err rs_sae_reconstruct(float *x_hat, const rs_sae *sae, const float *x, int64_t rows) {
    int k = sae->k;
    int64_t chunk = rows < ENCODE_CHUNK ? rows : ENCODE_CHUNK;
    if (chunk <= 0) return RS_OK;
    int32_t *idx = malloc((size_t)chunk * (size_t)k * sizeof(int32_t));
    float *val = malloc((size_t)chunk * (size_t)k * sizeof(float));
    if (!idx || !val) {
        free(idx);
        free(val);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for codes of %lld rows", (long long)chunk);
    }
    rs_err err = RS_OK;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t m = rows - r0 < chunk ? rows - r0 : chunk;
        RS_TRY_GOTO(rs_sae_encode(idx, val, sae, x + (size_t)r0 * (size_t)sae->d, m), done);
        rs_sae_decode(x_hat + (size_t)r0 * (size_t)sae->d, sae, idx, val, m);
    }
done:
    free(idx);
    free(val);
    return err;
}
