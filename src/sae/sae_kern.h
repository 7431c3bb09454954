/* Private kernels shared by sae.c and sae_train.c. */
#ifndef RESAE_SAE_KERN_H
#define RESAE_SAE_KERN_H

#include <stddef.h>
#include <stdint.h>

/* Hot kernels are compiled for AVX-512, AVX2 and baseline and picked at load time. Floating-point
 * contraction stays off (ISO C mode), so every clone computes bit-identical results. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(RESAE_NO_CLONES)
#define RS_HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RS_HOT
#endif

/* Zeroed allocation; 2 MB aligned with huge pages requested when at least 2 MB. free() it. */
void *rs_sae_alloc_big(size_t n, size_t size);

float rs_sae_dot(const float *a, const float *b, int n);
void rs_sae_axpy(float *y, float a, const float *x, int n);
float rs_sae_dot_axpy(float *y, float a, const float *w, const float *x, int n);
/* sum (x - mu)^2 in double (8 lanes, fixed combination order) */
double rs_sae_sq_dev(const float *x, const float *mu, int n);
/* g -= x; sum += g (double); returns sum g^2 in double (8 lanes) */
double rs_sae_resid(float *g, const float *x, double *sum, int n);
/* rs_sae_resid, then g *= s and gsum += g (double), in one pass */
double rs_sae_resid_scale(float *g, const float *x, double *sum, float s, double *gsum, int n);
/* g *= s; sum += g (double) */
void rs_sae_scale_sum(float *g, float s, double *sum, int n);
/* prefetch the n floats at p into cache (a scattered row about to be read) */
void rs_sae_prefetch_row(const float *p, int n);

/* The k largest entries of row + bias that are > 0: idx/val (k) in ascending latent order (ties by
 * smaller id), unfilled slots idx -1, val 0. hint (may be NULL): a threshold guess carried from
 * row to row (start with 0); the result never depends on it. scratch: 4 n floats. */
void rs_sae_topk_row(int32_t *idx /*(k)*/, float *val /*(k)*/, const float *row /*(n)*/,
                     const float *bias /*(n)*/, int n, int k, float *hint, float *scratch /*(4 n)*/);
/* The same over the entries listed in sel (nsel latent ids). */
void rs_sae_topk_sel(int32_t *idx /*(k)*/, float *val /*(k)*/, const float *row /*(n)*/,
                     const float *bias /*(n)*/, const int32_t *sel /*(nsel)*/, int nsel, int k);

/* out = base + sum_s val[s] W[idx[s]] over slots with val > 0 (base may be NULL: zero). */
void rs_sae_decode_row(float *out /*(d)*/, const float *W /*(n,d)*/, const float *base /*(d)*/,
                       const int32_t *idx, const float *val, int k, int d);

#endif
