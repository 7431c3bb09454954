/* Targeted probe perturbation (EVAL_SPEC.md B, C; METHOD.md §6; docs/tpp.md): the class probes,
 * latent effects, the ablation sets of the budgets and the metric. Serial, deterministic, double.
 *
 * Probe (EVAL_SPEC B2, SAEBench train_probe_gpu): logit = w . x + b on pooled activations x (d).
 * Initialisation w_j, b ~ U(-1/sqrt(d), 1/sqrt(d)) (torch's nn.Linear rule), drawn in the order
 * w_0 .. w_{d-1}, b as (2 u - 1) / sqrt(d) from the stream rs_rng_stream(seed, a, b, 31). Each
 * epoch visits the train windows in a uniform random order (Fisher-Yates: for i = 0 .. n-2 swap i
 * with i + below(n - i), continuing the same stream) in minibatches of `batch`; the loss of a
 * minibatch is its mean BCE-with-logits plus l1 * sum_j |w_j| (sign(0) = 0; the bias is not
 * penalised). AdamW as torch.optim.AdamW: t += 1; p *= 1 - lr wd (w and b);
 * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 * After each epoch the test accuracy (prediction: logit > 0) is measured and the probe is kept if it
 * is strictly better than every earlier epoch (B2: best epoch by test accuracy, all epochs run).
 *
 * Effects (B3, C3): E_f = max(0, mean_pos(Z_f) - mean_neg(Z_f)) * (v . W_dec[f]) over the train
 * task, where v = J^T w carries the probe direction back to the latent's layer (J the product of the
 * linear parts of the affine maps, identity at the probe layer).
 * Selection (B4, C4): k = min(N, #nonzero effects), the k largest signed effects, ties to the lower
 * index. Budgets over M layers: global = that rule over the concatenation of the M layers' effects;
 * per-layer joint = n_m = floor(N / M) at every layer plus one at each of the deepest N mod M. */
#ifndef RESAE_TPP_H
#define RESAE_TPP_H

#include <stdint.h>

#include "resae/err.h"
#include "resae/probe_data.h"

typedef struct rs_tpp_probe_opts {
    int epochs, batch;
    double lr, weight_decay, l1, beta1, beta2, eps;
} rs_tpp_probe_opts;

/* EVAL_SPEC B2: 20 epochs, batch 16, lr 1e-3, AdamW wd 0.01, l1 1e-3, betas (0.9, 0.999), eps 1e-8. */
#define RS_TPP_PROBE_OPTS_DEFAULT {20, 16, 1e-3, 1e-2, 1e-3, 0.9, 0.999, 1e-8}

typedef struct rs_tpp_probe {
    int d;
    double *w;       // (d)
    double b;
    double accuracy; /* test accuracy of the kept epoch */
    int best_epoch;  /* 1-based */
} rs_tpp_probe;

/* Train on X's rows t->train (labels t->y_train), pick the epoch on t->test. X (n_windows, d). */
rs_err rs_tpp_probe_train(rs_tpp_probe *p, const float *X, int d, const rs_probe_task *t, const rs_tpp_probe_opts *o,
                          uint64_t seed, uint64_t a, uint64_t b);
void rs_tpp_probe_free(rs_tpp_probe *p);
static inline double rs_tpp_logit(const rs_tpp_probe *p, const float *x) {
    double z = p->b;
    for (int j = 0; j < p->d; j++) z += p->w[j] * (double)x[j];
    return z;
}
/* Accuracy over rows idx (n) of X with labels y. */
double rs_tpp_probe_accuracy(const rs_tpp_probe *p, const float *X, const int32_t *idx, const int8_t *y, int n);

/* E (n_lat) for pooled latents Z (n_windows, n_lat) on t's train task, direction v (d), decoder
 * rows W_dec (n_lat, d). */
rs_err rs_tpp_effects(double *E, const float *Z, int n_lat, const rs_probe_task *t, const double *v,
                      const float *W_dec, int d);

/* The *k = min(N, #nonzero E) largest E (n), descending (ties: lower index), into sel (N). */
rs_err rs_tpp_top(int *k, int32_t *sel, const double *E, int n, int N);
/* n_m of the per-layer joint budget N over M layers for layer m (0-based). */
static inline int rs_tpp_joint_share(int N, int M, int m) { return N / M + (m >= M - N % M); }

/* dAcc_{i,j} = a[j] - a_abl[j]; *intended = dAcc_{i,i}, *unintended = mean_{j != i} dAcc_{i,j}. */
void rs_tpp_metric(double *intended, double *unintended, const double *a, const double *a_abl, int C, int i);

#endif
