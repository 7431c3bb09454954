/* TopK SAE: the parameter slab, the row kernels (dot, axpy, partial top-k selection, sparse
 * decode) and inference (encode, decode, reconstruct). The trainer lives in sae_train.c. */
#include "resae/sae.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "sae_kern.h"
#include "resae/util.h"

/* ============================== slab ============================== */

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
    sae->slab = rs_calloc_aligned(sae->n_params, sizeof(float));
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

/* Heap scan starting from threshold thr0 >= 0; returns the number of filled slots. Blocks of 16
 * with no entry above the threshold are skipped after a vectorized count; the threshold only
 * rises, so after the first few blocks almost every block is skipped. */
static int topk_scan(int32_t *restrict idx, float *restrict val, const float *restrict row,
                            const float *restrict bias, int n, int k, float thr0) {
    heap_reset(idx, val, k);
    float thr = thr0;
    int filled = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        int cnt = 0;
        for (int l = 0; l < 16; l++) cnt += (row[i + l] + bias[i + l]) > thr;
        if (!cnt) continue;
        for (int l = 0; l < 16; l++) {
            float v = row[i + l] + bias[i + l];
            if (v > thr) {
                filled += idx[0] < 0;
                heap_sift(idx, val, k, v, i + l);
                thr = val[0] > thr0 ? val[0] : thr0;
            }
        }
    }
    for (; i < n; i++) {
        float v = row[i] + bias[i];
        if (v > thr) {
            filled += idx[0] < 0;
            heap_sift(idx, val, k, v, i);
            thr = val[0] > thr0 ? val[0] : thr0;
        }
    }
    return filled;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(RESAE_NO_CLONES)
#include <immintrin.h>
#define RS_HAVE_AVX512_SCAN 1
/* The same scan with a 16-lane compare mask: only lanes above the threshold are visited. The sum
 * row + bias is the same IEEE single addition as in the scalar scan, so results are identical. */
__attribute__((target("avx512f"))) static int topk_scan_avx512(int32_t *restrict idx, float *restrict val,
                                                               const float *restrict row,
                                                               const float *restrict bias, int n, int k,
                                                               float thr0) {
    heap_reset(idx, val, k);
    float thr = thr0;
    int filled = 0, i = 0;
    __m512 vt = _mm512_set1_ps(thr);
    float tmp[16];
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(row + i), _mm512_loadu_ps(bias + i));
        unsigned m = _mm512_cmp_ps_mask(v, vt, _CMP_GT_OQ);
        if (!m) continue;
        _mm512_storeu_ps(tmp, v);
        while (m) {
            int l = __builtin_ctz(m);
            m &= m - 1;
            if (tmp[l] > thr) {
                filled += idx[0] < 0;
                heap_sift(idx, val, k, tmp[l], i + l);
                thr = val[0] > thr0 ? val[0] : thr0;
            }
        }
        vt = _mm512_set1_ps(thr);
    }
    for (; i < n; i++) {
        float v = row[i] + bias[i];
        if (v > thr) {
            filled += idx[0] < 0;
            heap_sift(idx, val, k, v, i);
            thr = val[0] > thr0 ? val[0] : thr0;
        }
    }
    return filled;
}
#endif

static int (*topk_scan_fn(void))(int32_t *, float *, const float *, const float *, int, int, float) {
#ifdef RS_HAVE_AVX512_SCAN
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") ? 1 : 0;
    }
    if (have) return topk_scan_avx512;
#endif
    return topk_scan;
}

enum { TOPK_EST_MAX = 256 };

/* For wide rows, first estimate a threshold from the leading n/8 entries: their (k/4)-th largest
 * value is exceeded by about 2k entries of the whole row (latent order carries no information),
 * so the full scan starts high and inserts few heap entries. If fewer than k entries pass the
 * estimate, the scan is redone from 0: the result is always the exact top-k. */
void rs_sae_topk_row(int32_t *restrict idx, float *restrict val, const float *restrict row,
                     const float *restrict bias, int n, int k) {
    int (*scan)(int32_t *, float *, const float *, const float *, int, int, float) = topk_scan_fn();
    float thr0 = 0.0f;
    int kk = k / 4;
    if (n >= 1024 && kk >= 4 && kk <= TOPK_EST_MAX) {
        int32_t ei[TOPK_EST_MAX];
        float ev[TOPK_EST_MAX];
        if (scan(ei, ev, row, bias, n / 8, kk, 0.0f) == kk) thr0 = ev[0];
    }
    if (scan(idx, val, row, bias, n, k, thr0) < k && thr0 > 0.0f) scan(idx, val, row, bias, n, k, 0.0f);
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
    if (!xc || !pre) {
        free(xc);
        free(pre);
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
                            pre + (size_t)r * (size_t)n, sae->p.b_enc, n, k);
    }
    free(xc);
    free(pre);
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
