/* Sparse probing (EVAL_SPEC.md A4, A6-A8, C1, C7; docs/probing.md): pooled features of windows,
 * top-K selection by the class-mean difference, and L2 logistic-regression probes (LIBLINEAR).
 *
 * Features of a set's windows are one or more blocks X_b (n_windows, F_b) seen as their
 * concatenation (the union over layers): a feature is (block, column), numbered globally
 * off_b + column. Pooled SAE latents are in original units, zh = z / s (C1), averaged over the
 * positions skip..T-1 of a window (F1), accumulated in double and stored as float (A7's float32).
 *
 * The probe is LIBLINEAR's L2R_LR (primal trust-region Newton) with bias 1 (the intercept is a
 * feature of value 1, regularized like the weights) and eps RS_PROBE_EPS, which is exactly
 * scikit-learn's LogisticRegression(solver="liblinear", C=C, tol=1e-4, intercept_scaling=1).
 * Features are not standardized (A7). Everything here is serial and deterministic. */
#ifndef RESAE_PROBE_H
#define RESAE_PROBE_H

#include <stdint.h>

#include "resae/err.h"
#include "resae/probe_data.h"

#define RS_PROBE_EPS 1e-4

/* out (B, n_lat): mean over positions skip..T-1 of each window of the codes (idx, val) of its T
 * rows (k slots per row, idx -1 for unused), divided by scale. acc: (n_lat) double scratch. */
void rs_probe_pool_codes(float *out, double *acc, const int32_t *idx /*(B*T, k)*/, const float *val /*(B*T, k)*/,
                         int k, int n_lat, double scale, int B, int T, int skip);
/* out (B, d): mean over positions skip..T-1 of h (B, T, d). acc: (d) double scratch. */
void rs_probe_pool_dense(float *out, double *acc, const float *h, int d, int B, int T, int skip);

/* Feature blocks over the same windows. */
typedef struct rs_probe_blocks {
    int n;
    const float *const *X; // (n) each (n_windows, F[b])
    const int *F;          // (n)
} rs_probe_blocks;

/* The K features with the largest |mean over positives - mean over negatives| on task t's train
 * windows (means in double), descending; ties go to the lower global index. sel (K) global indices. */
rs_err rs_probe_topk(int64_t *sel, const rs_probe_blocks *X, const rs_probe_task *t, int K);
/* K distinct features drawn uniformly (seeded), ascending: the random-latent floor. */
rs_err rs_probe_random(int64_t *sel, int64_t n_features, int K, uint64_t seed, uint64_t a, uint64_t b);
/* Train the probe on t's train windows restricted to the K features sel; *acc = its accuracy on
 * t's test windows. */
rs_err rs_probe_fit(double *acc, const rs_probe_blocks *X, const int64_t *sel, int K, const rs_probe_task *t,
                    double C);

#endif
