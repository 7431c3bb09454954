/* TPP probes, effects, selections and the metric (tpp.h). */
#include "resae/tpp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resae/rng.h"

static double sigmoid(double z) {
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    double e = exp(z);
    return e / (1.0 + e);
}

static double sign(double x) { return (x > 0) - (x < 0); }

double rs_tpp_probe_accuracy(const rs_tpp_probe *p, const float *X, const int32_t *idx, const int8_t *y, int n) {
    int ok = 0;
    for (int r = 0; r < n; r++) ok += (rs_tpp_logit(p, X + (size_t)idx[r] * (size_t)p->d) > 0) == (y[r] == 1);
    return n ? (double)ok / n : 0.0;
}

void rs_tpp_probe_free(rs_tpp_probe *p) {
    free(p->w);
    memset(p, 0, sizeof *p);
}

rs_err rs_tpp_probe_train(rs_tpp_probe *p, const float *X, int d, const rs_probe_task *t, const rs_tpp_probe_opts *o,
                          uint64_t seed, uint64_t a, uint64_t b) {
    memset(p, 0, sizeof *p);
    int n = t->n_train;
    /* w, m_w, v_w, g_w, best w (d each); the bias's state in the scalars */
    double *buf = calloc((size_t)d * 5, sizeof(double));
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!buf || !perm) {
        free(buf);
        free(perm);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for a TPP probe of %d dimensions", d);
    }
    double *w = buf, *mw = buf + d, *vw = buf + 2 * (size_t)d, *gw = buf + 3 * (size_t)d, *best = buf + 4 * (size_t)d;
    double bias, mb = 0, vb = 0, best_b = 0, bound = 1.0 / sqrt((double)d), best_acc = -1;
    uint64_t st[4];
    rs_rng_stream(st, seed, a, b, 31);
    for (int j = 0; j < d; j++) w[j] = (2 * rs_rng_unit(st) - 1) * bound;
    bias = (2 * rs_rng_unit(st) - 1) * bound;
    for (int r = 0; r < n; r++) perm[r] = r;
    rs_tpp_probe q = {d, w, 0, 0, 0};
    int64_t step = 0;
    for (int ep = 1; ep <= o->epochs; ep++) {
        for (int i = 0; i + 1 < n; i++) {
            int j = i + (int)rs_rng_below(st, (uint64_t)(n - i));
            int32_t s = perm[i];
            perm[i] = perm[j];
            perm[j] = s;
        }
        for (int r0 = 0; r0 < n; r0 += o->batch) {
            int nb = n - r0 < o->batch ? n - r0 : o->batch;
            double gb = 0;
            memset(gw, 0, sizeof(double) * (size_t)d);
            q.b = bias;
            for (int r = r0; r < r0 + nb; r++) {
                const float *x = X + (size_t)t->train[perm[r]] * (size_t)d;
                double g = (sigmoid(rs_tpp_logit(&q, x)) - (double)t->y_train[perm[r]]) / nb;
                for (int j = 0; j < d; j++) gw[j] += g * (double)x[j];
                gb += g;
            }
            for (int j = 0; j < d; j++) gw[j] += o->l1 * sign(w[j]);
            step++;
            double bc1 = 1 - pow(o->beta1, (double)step), bc2 = sqrt(1 - pow(o->beta2, (double)step));
            double decay = 1 - o->lr * o->weight_decay, lr1 = o->lr / bc1;
            for (int j = 0; j < d; j++) {
                w[j] *= decay;
                mw[j] = o->beta1 * mw[j] + (1 - o->beta1) * gw[j];
                vw[j] = o->beta2 * vw[j] + (1 - o->beta2) * gw[j] * gw[j];
                w[j] -= lr1 * mw[j] / (sqrt(vw[j]) / bc2 + o->eps);
            }
            bias *= decay;
            mb = o->beta1 * mb + (1 - o->beta1) * gb;
            vb = o->beta2 * vb + (1 - o->beta2) * gb * gb;
            bias -= lr1 * mb / (sqrt(vb) / bc2 + o->eps);
        }
        q.b = bias;
        double acc = rs_tpp_probe_accuracy(&q, X, t->test, t->y_test, t->n_test);
        if (acc > best_acc) {
            best_acc = acc;
            memcpy(best, w, sizeof(double) * (size_t)d);
            best_b = bias;
            p->best_epoch = ep;
        }
    }
    free(perm);
    p->d = d;
    p->w = malloc(sizeof(double) * (size_t)d);
    if (!p->w) {
        free(buf);
        RS_FAIL(RS_ERR_NOMEM, "out of memory");
    }
    memcpy(p->w, o->epochs > 0 ? best : w, sizeof(double) * (size_t)d);
    p->b = o->epochs > 0 ? best_b : bias;
    p->accuracy = o->epochs > 0 ? best_acc : rs_tpp_probe_accuracy(&q, X, t->test, t->y_test, t->n_test);
    free(buf);
    return RS_OK;
}

rs_err rs_tpp_effects(double *E, const float *Z, int n_lat, const rs_probe_task *t, const double *v,
                      const float *W_dec, int d) {
    double *mu = calloc(2 * (size_t)n_lat, sizeof(double));
    int cnt[2] = {0, 0};
    RS_CHECK(mu, RS_ERR_NOMEM, "out of memory for the effects of %d latents", n_lat);
    for (int r = 0; r < t->n_train; r++) {
        int c = t->y_train[r] == 1;
        const float *z = Z + (size_t)t->train[r] * (size_t)n_lat;
        double *m = mu + (size_t)c * (size_t)n_lat;
        for (int f = 0; f < n_lat; f++) m[f] += (double)z[f];
        cnt[c]++;
    }
    for (int f = 0; f < n_lat; f++) {
        double dm = (cnt[1] ? mu[n_lat + f] / cnt[1] : 0) - (cnt[0] ? mu[f] / cnt[0] : 0), dot = 0;
        const float *row = W_dec + (size_t)f * (size_t)d;
        for (int j = 0; j < d; j++) dot += v[j] * (double)row[j];
        E[f] = (dm > 0 ? dm : 0) * dot;
    }
    free(mu);
    return RS_OK;
}

typedef struct scored {
    double e;
    int32_t i;
} scored;

static int cmp_scored(const void *pa, const void *pb) {
    const scored *x = pa, *y = pb;
    if (x->e != y->e) return x->e < y->e ? 1 : -1;
    return (x->i > y->i) - (x->i < y->i);
}

rs_err rs_tpp_top(int *k_out, int32_t *sel, const double *E, int n, int N) {
    int nz = 0;
    for (int i = 0; i < n; i++) nz += E[i] != 0;
    int k = N < nz ? N : nz;
    *k_out = k;
    if (!k) return RS_OK;
    scored *v = malloc(sizeof(scored) * (size_t)n);
    RS_CHECK(v, RS_ERR_NOMEM, "out of memory ranking %d effects", n);
    for (int i = 0; i < n; i++) v[i] = (scored){E[i], i};
    qsort(v, (size_t)n, sizeof *v, cmp_scored);
    for (int s = 0; s < k; s++) sel[s] = v[s].i;
    free(v);
    return RS_OK;
}

void rs_tpp_metric(double *intended, double *unintended, const double *a, const double *a_abl, int C, int i) {
    double u = 0;
    for (int j = 0; j < C; j++)
        if (j != i) u += a[j] - a_abl[j];
    *intended = a[i] - a_abl[i];
    *unintended = C > 1 ? u / (C - 1) : 0;
}
