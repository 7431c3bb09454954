/* A straightforward dense double-precision TopK SAE loss and backward (METHOD.md §4), written
 * independently of src/sae*.c to check them: full matrices, a full sort for top-k, dense products. */
#ifndef RESAE_TEST_SAE_REF_DENSE_H
#define RESAE_TEST_SAE_REF_DENSE_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

typedef struct ref_sae {
    int d, n, k;
    double *We, *be, *Wd, *bd; // (n,d) (n) (n,d) (d)
} ref_sae;

/* indices of the m largest entries of v over the candidates with cand[j] != 0 and v[j] > 0 */
static inline void ref_topk_mask(unsigned char *mask /*(n)*/, const double *v, const unsigned char *cand, int n, int m) {
    memset(mask, 0, (size_t)n);
    for (int s = 0; s < m; s++) {
        int best = -1;
        for (int j = 0; j < n; j++)
            if ((!cand || cand[j]) && !mask[j] && v[j] > 0 && (best < 0 || v[j] > v[best])) best = j;
        if (best < 0) break;
        mask[best] = 1;
    }
}

/* AuxK normaliser: 0 = METHOD.md's (the variance of e), 1 = sparsify's (the variance of x, divided
 * by min(n_dead / k_aux, 1) with the configured k_aux) */
static int ref_aux_input_norm;

/* Loss of batch x (B, d). dead (n) marks dead latents; k_aux as configured (capped by the dead count).
 * e_fixed (B, d): if given, AuxK uses it as e (the stop-gradient target), else e = x - x_hat.
 * Writes e (B,d) if e_out; gradients (same layout as the model) if g* are non-NULL.
 * Returns the loss; *fvu and *auxk get the parts. */
static inline double ref_loss(const ref_sae *m, const double *x, int B, const unsigned char *dead, int k_aux, double alpha,
                       const double *e_fixed, double *e_out, double *fvu, double *auxk, double *gWe, double *gbe,
                       double *gWd, double *gbd) {
    int d = m->d, n = m->n, k = m->k;
    int n_dead = 0;
    for (int j = 0; j < n; j++) n_dead += dead[j] != 0;
    int ka = n_dead < k_aux ? n_dead : k_aux;
    double *xc = calloc((size_t)B * d, sizeof(double)), *pre = calloc((size_t)B * n, sizeof(double));
    double *z = calloc((size_t)B * n, sizeof(double)), *a = calloc((size_t)B * n, sizeof(double));
    double *xh = calloc((size_t)B * d, sizeof(double)), *e = calloc((size_t)B * d, sizeof(double));
    double *eh = calloc((size_t)B * d, sizeof(double)), *G = calloc((size_t)B * d, sizeof(double));
    double *H = calloc((size_t)B * d, sizeof(double)), *gpre = calloc((size_t)B * n, sizeof(double));
    unsigned char *mk = calloc((size_t)n, 1), *ma = calloc((size_t)B * n, 1), *mz = calloc((size_t)B * n, 1);
    double *mu = calloc((size_t)d, sizeof(double)), *mue = calloc((size_t)d, sizeof(double));
    for (int t = 0; t < B; t++)
        for (int i = 0; i < d; i++) {
            xc[t * d + i] = x[t * d + i] - m->bd[i];
            mu[i] += x[t * d + i] / B;
        }
    for (int t = 0; t < B; t++) {
        for (int j = 0; j < n; j++) {
            double s = m->be[j];
            for (int i = 0; i < d; i++) s += m->We[j * d + i] * xc[t * d + i];
            pre[t * n + j] = s > 0 ? s : 0;
        }
        ref_topk_mask(mk, pre + t * n, NULL, n, k);
        for (int j = 0; j < n; j++) {
            mz[t * n + j] = mk[j];
            z[t * n + j] = mk[j] ? pre[t * n + j] : 0;
        }
        ref_topk_mask(mk, pre + t * n, dead, n, ka);
        for (int j = 0; j < n; j++) {
            ma[t * n + j] = mk[j];
            a[t * n + j] = mk[j] ? pre[t * n + j] : 0;
        }
    }
    double sse = 0, Dx = 0;
    for (int t = 0; t < B; t++)
        for (int i = 0; i < d; i++) {
            double s = m->bd[i], sa = 0;
            for (int j = 0; j < n; j++) {
                s += z[t * n + j] * m->Wd[j * d + i];
                sa += a[t * n + j] * m->Wd[j * d + i];
            }
            xh[t * d + i] = s;
            eh[t * d + i] = sa;
            double r = x[t * d + i] - s;
            e[t * d + i] = e_fixed ? e_fixed[t * d + i] : r;
            sse += r * r;
            Dx += (x[t * d + i] - mu[i]) * (x[t * d + i] - mu[i]);
        }
    for (int t = 0; t < B; t++)
        for (int i = 0; i < d; i++) mue[i] += e[t * d + i] / B;
    double De = 0, asse = 0;
    for (int t = 0; t < B; t++)
        for (int i = 0; i < d; i++) {
            De += (e[t * d + i] - mue[i]) * (e[t * d + i] - mue[i]);
            asse += (e[t * d + i] - eh[t * d + i]) * (e[t * d + i] - eh[t * d + i]);
        }
    if (ref_aux_input_norm) {
        double scale = (double)n_dead / (double)k_aux;
        De = Dx / (scale < 1 ? scale : 1);
    }
    *fvu = sse / Dx;
    *auxk = ka > 0 ? asse / De : 0;
    if (e_out) memcpy(e_out, e, sizeof(double) * (size_t)B * d);
    if (gWe) {
        for (int q = 0; q < B * d; q++) {
            G[q] = 2 * (xh[q] - x[q]) / Dx;
            H[q] = ka > 0 ? 2 * alpha * (eh[q] - e[q]) / De : 0;
        }
        /* dense products: gWd = z^T G + a^T H; gz = G Wd^T masked; ga = H Wd^T masked */
        for (int j = 0; j < n; j++)
            for (int i = 0; i < d; i++) {
                double s = 0;
                for (int t = 0; t < B; t++) s += z[t * n + j] * G[t * d + i] + a[t * n + j] * H[t * d + i];
                gWd[j * d + i] = s;
            }
        for (int t = 0; t < B; t++)
            for (int j = 0; j < n; j++) {
                double gz = 0, ga = 0;
                for (int i = 0; i < d; i++) {
                    gz += G[t * d + i] * m->Wd[j * d + i];
                    ga += H[t * d + i] * m->Wd[j * d + i];
                }
                int on = pre[t * n + j] > 0;
                gpre[t * n + j] = on ? (mz[t * n + j] ? gz : 0) + (ma[t * n + j] ? ga : 0) : 0;
            }
        for (int j = 0; j < n; j++) {
            double sb = 0;
            for (int t = 0; t < B; t++) sb += gpre[t * n + j];
            gbe[j] = sb;
            for (int i = 0; i < d; i++) {
                double s = 0;
                for (int t = 0; t < B; t++) s += gpre[t * n + j] * xc[t * d + i];
                gWe[j * d + i] = s;
            }
        }
        for (int i = 0; i < d; i++) {
            double s = 0;
            for (int t = 0; t < B; t++) s += G[t * d + i];
            for (int t = 0; t < B; t++)
                for (int j = 0; j < n; j++) s -= gpre[t * n + j] * m->We[j * d + i];
            gbd[i] = s;
        }
    }
    free(xc); free(pre); free(z); free(a); free(xh); free(e); free(eh); free(G); free(H); free(gpre);
    free(mk); free(ma); free(mz); free(mu); free(mue);
    return *fvu + alpha * *auxk;
}

/* ---- shared by the tests that use the reference: a seeded generator and an error measure ---- */

/* LCG state; each test sets its seed before its first draw */
static uint64_t ref_rng_state;
static double ref_urand(void) {
    ref_rng_state = ref_rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((ref_rng_state >> 11) + 0.5) * 0x1.0p-53;
}
static double ref_nrand(void) { return sqrt(-2 * log(ref_urand())) * cos(6.283185307179586 * ref_urand()); }

static const char *const ref_block_names[4] = {"W_enc", "b_enc", "W_dec", "b_dec"};

/* err[b]: max |g - gd| / max |gd| (rs_check_diff .rel) of each parameter block of a float gradient slab (W_enc (n, d), b_enc (n),
 * W_dec (n, d), b_dec (d)) against the reference gradient gd; prints a line per block. */
static void ref_grad_block_errors(double err[4], const float *g, const double *gd, int n, int d) {
    size_t N = (size_t)n, D = (size_t)d;
    size_t off[5] = {0, N * D, N * D + N, 2 * N * D + N, 2 * N * D + N + D};
    for (int b = 0; b < 4; b++) {
        err[b] = rs_check_diff_fd(g + off[b], gd + off[b], off[b + 1] - off[b]).rel;
        printf("grad %-5s: max rel err %.3g\n", ref_block_names[b], err[b]);
    }
}

#endif
