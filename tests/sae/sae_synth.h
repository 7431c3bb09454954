/* Synthetic SAE training data with a known answer: x = mu + sum_{a in S} c_a f_a + noise, with
 * M random unit directions f (the true dictionary), |S| = k_true distinct atoms per token,
 * coefficients c ~ U(0.5, 2) and Gaussian noise. Row t depends only on (seed, t), so the
 * source is random-access as the trainer requires. */
#ifndef RESAE_TEST_SAE_SYNTH_H
#define RESAE_TEST_SAE_SYNTH_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "resae/sae.h"

typedef struct synth {
    int d, M, k_true;
    double noise;
    uint64_t seed;
    float *atoms; // (M, d) unit rows
    float *mu;    // (d)
    int64_t reads; /* rows served (for tests that count) */
} synth;

static inline uint64_t synth_mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline double synth_u(uint64_t *s) {
    *s = synth_mix(*s);
    return ((double)(*s >> 11) + 0.5) * 0x1.0p-53;
}
static inline double synth_n(uint64_t *s) {
    double u1 = synth_u(s), u2 = synth_u(s);
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

static inline int synth_init(synth *s, int d, int M, int k_true, double noise, uint64_t seed) {
    s->d = d;
    s->M = M;
    s->k_true = k_true;
    s->noise = noise;
    s->seed = seed;
    s->reads = 0;
    s->atoms = malloc(sizeof(float) * (size_t)M * (size_t)d);
    s->mu = malloc(sizeof(float) * (size_t)d);
    if (!s->atoms || !s->mu) return 1;
    uint64_t st = synth_mix(seed ^ 0xa5a5a5a5ULL);
    for (int a = 0; a < M; a++) {
        double ss = 0;
        for (int i = 0; i < d; i++) {
            double v = synth_n(&st);
            s->atoms[(size_t)a * d + i] = (float)v;
            ss += v * v;
        }
        for (int i = 0; i < d; i++) s->atoms[(size_t)a * d + i] /= (float)sqrt(ss);
    }
    for (int i = 0; i < d; i++) s->mu[i] = (float)(0.5 * synth_n(&st));
    return 0;
}

static inline void synth_free(synth *s) {
    free(s->atoms);
    free(s->mu);
}

static inline void synth_row(const synth *s, float *x, int64_t t) {
    uint64_t st = synth_mix(s->seed * 0x100000001b3ULL + (uint64_t)t);
    int chosen[64];
    for (int i = 0; i < s->d; i++) x[i] = s->mu[i] + (float)(s->noise * synth_n(&st));
    for (int c = 0; c < s->k_true; c++) {
        int a, dup;
        do {
            a = (int)(synth_u(&st) * s->M);
            dup = 0;
            for (int q = 0; q < c; q++) dup |= chosen[q] == a;
        } while (dup);
        chosen[c] = a;
        float coef = (float)(0.5 + 1.5 * synth_u(&st));
        for (int i = 0; i < s->d; i++) x[i] += coef * s->atoms[(size_t)a * s->d + i];
    }
}

static inline rs_err synth_read(void *ctx, float *rows, int64_t first, int n) {
    synth *s = ctx;
    for (int r = 0; r < n; r++) synth_row(s, rows + (size_t)r * s->d, first + r);
    s->reads += n;
    return RS_OK;
}

/* fraction of true atoms whose best cosine with a decoder row exceeds thr */
static inline double synth_recovered(const synth *s, const float *W_dec /*(n,d)*/, int n, double thr, double *mean_best) {
    int hit = 0;
    double sum = 0;
    for (int a = 0; a < s->M; a++) {
        double best = -1;
        for (int j = 0; j < n; j++) {
            double dot = 0, nn = 0;
            for (int i = 0; i < s->d; i++) {
                dot += (double)W_dec[(size_t)j * s->d + i] * s->atoms[(size_t)a * s->d + i];
                nn += (double)W_dec[(size_t)j * s->d + i] * W_dec[(size_t)j * s->d + i];
            }
            double c = nn > 0 ? dot / sqrt(nn) : 0;
            if (c > best) best = c;
        }
        sum += best;
        hit += best > thr;
    }
    if (mean_best) *mean_best = sum / s->M;
    return (double)hit / s->M;
}

#endif
