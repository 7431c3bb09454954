/* Pooling, top-K selection and LIBLINEAR probes (probe.h). */
#include "resae/probe.h"

#include <linear.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resae/rng.h"

/* ---- pooling ---------------------------------------------------------------------------------------- */

void rs_probe_pool_codes(float *out, double *acc, const int32_t *idx, const float *val, int k, int n_lat, double scale,
                         int B, int T, int skip) {
    double cnt = (double)(T - skip);
    for (int b = 0; b < B; b++) {
        memset(acc, 0, sizeof(double) * (size_t)n_lat);
        for (int t = skip; t < T; t++) {
            size_t r = ((size_t)b * (size_t)T + (size_t)t) * (size_t)k;
            for (int j = 0; j < k; j++)
                if (idx[r + j] >= 0) acc[idx[r + j]] += (double)val[r + j] / scale;
        }
        float *o = out + (size_t)b * (size_t)n_lat;
        for (int f = 0; f < n_lat; f++) o[f] = (float)(acc[f] / cnt);
    }
}

void rs_probe_pool_dense(float *out, double *acc, const float *h, int d, int B, int T, int skip) {
    double cnt = (double)(T - skip);
    for (int b = 0; b < B; b++) {
        memset(acc, 0, sizeof(double) * (size_t)d);
        for (int t = skip; t < T; t++) {
            const float *x = h + ((size_t)b * (size_t)T + (size_t)t) * (size_t)d;
            for (int i = 0; i < d; i++) acc[i] += (double)x[i];
        }
        float *o = out + (size_t)b * (size_t)d;
        for (int i = 0; i < d; i++) o[i] = (float)(acc[i] / cnt);
    }
}

/* ---- features ----------------------------------------------------------------------------------------- */

static int64_t n_features(const rs_probe_blocks *X) {
    int64_t n = 0;
    for (int b = 0; b < X->n; b++) n += X->F[b];
    return n;
}

/* Value of global feature g of window w. */
static float feature(const rs_probe_blocks *X, int64_t g, int32_t w) {
    int b = 0;
    while (g >= X->F[b]) g -= X->F[b++];
    return X->X[b][(size_t)w * (size_t)X->F[b] + (size_t)g];
}

typedef struct scored {
    double s;
    int64_t g;
} scored;

static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->g > y->g) - (x->g < y->g);
}

rs_err rs_probe_topk(int64_t *sel, const rs_probe_blocks *X, const rs_probe_task *t, int K) {
    int64_t nf = n_features(X);
    if (K < 1 || K > nf) RS_FAIL(RS_ERR_INVAL, "top-%d of %lld features", K, (long long)nf);
    scored *s = malloc(sizeof *s * (size_t)nf);
    double *mu = calloc((size_t)nf * 2, sizeof *mu);
    if (!s || !mu) {
        free(s);
        free(mu);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for top-K over %lld features", (long long)nf);
    }
    int64_t np = 0, nn = 0, off = 0;
    for (int i = 0; i < t->n_train; i++) {
        np += t->y_train[i] != 0;
        nn += t->y_train[i] == 0;
    }
    for (int b = 0; b < X->n; b++) {
        for (int i = 0; i < t->n_train; i++) {
            const float *x = X->X[b] + (size_t)t->train[i] * (size_t)X->F[b];
            double *m = mu + 2 * off + (t->y_train[i] ? 0 : 1);
            for (int f = 0; f < X->F[b]; f++) m[2 * f] += (double)x[f];
        }
        off += X->F[b];
    }
    for (int64_t g = 0; g < nf; g++) s[g] = (scored){fabs(mu[2 * g] / (double)np - mu[2 * g + 1] / (double)nn), g};
    qsort(s, (size_t)nf, sizeof *s, cmp_scored);
    for (int j = 0; j < K; j++) sel[j] = s[j].g;
    free(s);
    free(mu);
    return RS_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

rs_err rs_probe_random(int64_t *sel, int64_t n_features_, int K, uint64_t seed, uint64_t a, uint64_t b) {
    if (K < 1 || K > n_features_) RS_FAIL(RS_ERR_INVAL, "%d random features of %lld", K, (long long)n_features_);
    uint64_t st[4];
    rs_rng_stream(st, seed, a, b, 7);
    /* Floyd's sampling: K distinct values without a permutation of all n */
    int n = 0;
    for (int64_t j = n_features_ - K; j < n_features_; j++) {
        int64_t v = (int64_t)rs_rng_below(st, (uint64_t)j + 1), dup = 0;
        for (int i = 0; i < n; i++) dup |= sel[i] == v;
        sel[n++] = dup ? j : v;
    }
    qsort(sel, (size_t)K, sizeof *sel, cmp_i64);
    return RS_OK;
}

/* ---- the probe ----------------------------------------------------------------------------------------- */

static void quiet(const char *s) { (void)s; }

/* rows (n) of feature nodes: the nonzero selected features (index 1..K), the bias (K + 1), the end. */
static void fill_rows(struct feature_node **x, struct feature_node *nodes, const rs_probe_blocks *X, const int64_t *sel,
                      int K, const int32_t *win, int n) {
    struct feature_node *p = nodes;
    for (int i = 0; i < n; i++) {
        x[i] = p;
        for (int j = 0; j < K; j++) {
            float v = feature(X, sel[j], win[i]);
            if (v != 0.0f) *p++ = (struct feature_node){j + 1, (double)v};
        }
        *p++ = (struct feature_node){K + 1, 1.0};
        *p++ = (struct feature_node){-1, 0.0};
    }
}

rs_err rs_probe_fit(double *acc, const rs_probe_blocks *X, const int64_t *sel, int K, const rs_probe_task *t, double C) {
    int n = t->n_train > t->n_test ? t->n_train : t->n_test;
    struct feature_node **x = malloc(sizeof *x * (size_t)n);
    struct feature_node *nodes = malloc(sizeof *nodes * (size_t)n * (size_t)(K + 2));
    double *y = malloc(sizeof *y * (size_t)t->n_train);
    if (!x || !nodes || !y) {
        free(x);
        free(nodes);
        free(y);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for a probe of %d rows x %d features", n, K);
    }
    for (int i = 0; i < t->n_train; i++) y[i] = t->y_train[i] ? 1.0 : 0.0;
    fill_rows(x, nodes, X, sel, K, t->train, t->n_train);
    struct problem prob = {.l = t->n_train, .n = K + 1, .y = y, .x = x, .bias = 1.0};
    struct parameter par = {.solver_type = L2R_LR, .eps = RS_PROBE_EPS, .C = C};
    set_print_string_function(quiet);
    rs_err err = RS_OK;
    const char *bad = check_parameter(&prob, &par);
    struct model *m = bad ? NULL : train(&prob, &par);
    if (bad || !m) {
        err = RS_ERR(RS_ERR_NUMERIC, "LIBLINEAR could not train a probe: %s", bad ? bad : "train failed");
    } else {
        fill_rows(x, nodes, X, sel, K, t->test, t->n_test);
        int hit = 0;
        for (int i = 0; i < t->n_test; i++) hit += (predict(m, x[i]) > 0.5) == (t->y_test[i] != 0);
        *acc = (double)hit / (double)t->n_test;
        free_and_destroy_model(&m);
    }
    free(x);
    free(nodes);
    free(y);
    return err;
}
