/* Evaluation of one set of SAEs (METHOD.md §5-6): reconstruction metrics on the eval split,
 * decoder redundancy between layers, and cross-entropy splices through the model.
 *
 * A set is M selected layers l_1 < ... < l_M, each with an SAE, its input scale s_m and (resae,
 * m >= 2) the affine map (A_{m-1}, c_{m-1}) from l_{m-1} to l_m. Targets: raw u_m = h_{l_m};
 * resae u_1 = h_{l_1}, u_m = h_{l_m} - A_{m-1} h_{l_{m-1}} - c_{m-1}. The SAE sees s_m u_m and its
 * reconstruction is divided by s_m: r_hat_m = SAE(s_m u_m) / s_m. The splice error is
 * eps_m = r_hat_m - u_m and a splice writes h <- h + eps_m (for resae this is exactly
 * A x_hat_{m-1} + c + r_hat_m with the x_hat_{m-1} the inputs came from), so a perfect SAE leaves
 * the stream bitwise unchanged in every mode.
 *
 * Position 0: with skip_pos0 the activation metrics never see it (the store excludes it) and CE
 * passes leave it untouched (neither spliced nor ablated); CE and KL are averaged over the
 * predictions made from positions skip_pos0 .. T-2 (each predicts the next token).
 *
 * Every function that takes a communicator is collective over it; each rank passes its share of
 * the rows or sequences, sums are kept in double and reduced with MPI_Allreduce, so results are
 * deterministic for a given rank count. */
#ifndef RESAE_EVAL_H
#define RESAE_EVAL_H

#include <mpi.h>
#include <stdint.h>

#include "resae/affine.h"
#include "resae/config.h"
#include "resae/err.h"
#include "resae/model.h"
#include "resae/sae.h"

#define RS_EVAL_MAX_LAYERS 64

/* One layer of a set. sae == NULL is the identity (a perfect reconstruction, for tests). zero: the
 * reconstruction is 0 whatever the SAE, so a resae layer m >= 2 splices h <- A x_{m-1} + c (the
 * affine-only control, METHOD.md §6). */
typedef struct rs_eval_layer {
    int layer;                 /* model layer l_m */
    const rs_sae *sae;
    double scale;              /* s_m */
    const rs_affine_map *map;  /* (A_{m-1}, c_{m-1}) for resae m >= 2; NULL otherwise */
    int zero;
} rs_eval_layer;

typedef struct rs_eval_set {
    enum rs_variant variant;
    int M;
    rs_eval_layer L[RS_EVAL_MAX_LAYERS];
    int d;
} rs_eval_set;

/* Scratch for splice errors of up to `rows` rows. */
typedef struct rs_eval_work {
    int64_t rows;
    int d, k;
    float *u;      // (rows, d)
    float *rhat;   // (rows, d)
    int32_t *idx;  // (rows, k)
    float *val;    // (rows, k)
} rs_eval_work;

rs_err rs_eval_work_init(rs_eval_work *w, const rs_eval_set *es, int64_t rows);
void rs_eval_work_free(rs_eval_work *w);

/* Target, reconstruction and splice error of layer m (0-based) for n rows:
 *   u = h (raw, or m == 0) or h - A x_prev - c (resae m >= 1), in w->u
 *   r_hat = SAE(s u) / s in w->rhat (codes in w->idx, w->val; idx -1 for unused slots)
 *   eps = r_hat - u (may be NULL). */
rs_err rs_eval_splice_error(float *eps /*(n,d) or NULL*/, rs_eval_work *w, const rs_eval_set *es, int m,
                            const float *h /*(n,d)*/, const float *x_prev /*(n,d) or NULL*/, int64_t n);

/* ---- reconstruction metrics ----------------------------------------------------------------------- */

/* Per layer, over the eval tokens. Definitions (stored with the results):
 *   l0          mean number of active latents per token (code entries > 0)
 *   dead_frac   fraction of latents never active on any eval token
 *   mse         sum_t ||u - r_hat||^2 / (n d), target space, unscaled
 *   ev_target   1 - sum ||u - r_hat||^2 / sum ||u - mu_u||^2, mu_u the eval mean of u
 *   ev_onestep  1 - sum ||h - x1||^2 / sum ||h - mu_h||^2, x1 = A h_{l_{m-1}} + c + r_hat (raw: r_hat)
 *   ev_chain    the same with the chain x_hat_m = A x_hat_{m-1} + c + r_hat_m, x_hat_1 = r_hat_1
 *               (raw: x_hat = r_hat, so for raw all three EVs coincide)
 *   ev_closed   the closed loop: x_1 = r_hat_1, x_m = A x_{m-1} + c + SAE_m(s (h - A x_{m-1} - c)) / s,
 *               each SAE seeing the residual of the previous layer's reconstruction (raw: = ev_chain) */
typedef struct rs_eval_recon {
    double l0, dead_frac, mse, ev_target, ev_onestep, ev_chain, ev_closed;
    int64_t n_tokens;
} rs_eval_recon;

/* Accumulator over chunks of rows of all M layers (the same tokens at every layer). */
typedef struct rs_eval_recon_acc {
    const rs_eval_set *es;
    double *mu_h;         // (M, d) eval means of h_{l_m}
    double *mu_u;         // (M, d) eval means of u_m
    double *sums;         // (M, 6): sse_target, sst_target, sst_orig, sse_chain, active, sse_closed
    unsigned char *fired; // (sum of n_latents over m)
    int64_t n;
    rs_eval_work w;
    float *chain;         // (rows, d) chain reconstruction of the previous layer
    float *tmp;           // (rows, d)
    float *closed;        // (rows, d) closed-loop reconstruction of the previous layer
} rs_eval_recon_acc;

/* mu_h (M, d): the eval-split means of h at each layer (the store's statistics). mu_u is derived:
 * raw mu_h; resae mu_h_m - A mu_h_{m-1} - c (in double). rows: the largest chunk passed to add. */
rs_err rs_eval_recon_init(rs_eval_recon_acc *a, const rs_eval_set *es, const double *mu_h, int64_t rows);
void rs_eval_recon_free(rs_eval_recon_acc *a);
/* Local: h[m] (n, d) are the rows of layer m for the same n tokens. */
rs_err rs_eval_recon_add(rs_eval_recon_acc *a, const float *const *h, int64_t n);
/* Collective: out (M) per layer. */
rs_err rs_eval_recon_finish(rs_eval_recon *out, rs_eval_recon_acc *a, MPI_Comm comm);

/* ---- decoder redundancy --------------------------------------------------------------------------- */

/* For each row j of Wb: max_i cos(Wb[j], Wa[i]) and max_i |cos|; *mean_max and *mean_absmax are
 * the means over j. Rows of Wb are partitioned over the ranks of comm (MPI_COMM_NULL: serial);
 * blocks of `block` rows of each matrix go through one SGEMM with running row maxima, so nothing
 * larger than block x block is formed. */
rs_err rs_eval_redundancy(double *mean_max, double *mean_absmax, const float *Wb /*(nb,d)*/, int nb,
                          const float *Wa /*(na,d)*/, int na, int d, int block, MPI_Comm comm);

/* ---- cross-entropy splices ------------------------------------------------------------------------- */

/* Passes of one set (the pass index into rs_eval_ce.pass): */
enum rs_eval_pass {
    RS_PASS_CLEAN = 0,
    RS_PASS_TF = 1,       /* joint, teacher-forced */
    RS_PASS_SO = 2,       /* joint, sequential-online */
    RS_PASS_SINGLE = 3,   /* + m: single layer m */
    /* then zero ablation at each layer m: RS_PASS_SINGLE + M + m; mean: RS_PASS_SINGLE + 2M + m */
};
static inline int rs_eval_n_passes(int M) { return RS_PASS_SINGLE + 3 * M; }

typedef struct rs_eval_ce_opts {
    int single, tf, so;       /* which splice passes to run */
    int zero, mean;           /* which ablation baselines to run (each at every layer of the set) */
    int skip_pos0;            /* leave position 0 untouched and do not average its prediction */
    const float *mu;          // (M, d) ablation means (eval mean at each layer); needed for mean
    int single_from;          /* single-layer passes only at layers m >= single_from (0-based) */
} rs_eval_ce_opts;

typedef struct rs_eval_ce_sums {
    double ce, kl;            /* sums over predictions */
    int64_t n;                /* predictions */
    int ran;
} rs_eval_ce_sums;

typedef struct rs_eval_ce {
    const rs_model *model;
    const rs_eval_set *es;
    rs_eval_ce_opts o;
    int max_B, T, V, n_pass;
    rs_run_state rs;
    rs_eval_work w;
    float *hc;          // (M, B, T, d) clean streams at the set's layers
    float *eps;         // (M, B, T, d) clean splice errors
    float *x;           // (B, T, d) stream handed to a pass
    float *xprev;       // (B, T, d) sequential-online: the value written at the previous layer
    float *logits;      // (B, T, V)
    float *lp_clean;    // (B, T, V) clean probabilities
    double *row_S, *row_H; // (B, T) per clean row: sum p and sum p log p (see eval_ce.c)
    rs_eval_ce_sums *pass; // (n_pass)
    double seconds_clean, seconds_splice; /* wall time of the clean and of the other passes */
    int64_t block_tokens_clean, block_tokens_splice; /* tokens x blocks run */
    /* hook state */
    int cur_mode, cur_B;
} rs_eval_ce;

/* Bytes of logits and clean probabilities a CE batch may hold per rank. */
#define RS_EVAL_LOGIT_BYTES ((int64_t)1 << 30)
/* Sequences per CE batch: logits and clean probabilities take 2 B T V floats, kept under
 * RS_EVAL_LOGIT_BYTES (at least one sequence; the sums do not depend on the batch, up to rounding). */
int rs_eval_ce_batch_seqs(int64_t batch_sequences, int T, int V);
rs_err rs_eval_ce_init(rs_eval_ce *c, const rs_model *model, const rs_eval_set *es, const rs_eval_ce_opts *o,
                       int max_B, int T);
void rs_eval_ce_free(rs_eval_ce *c);
/* Local: every configured pass over B sequences of T tokens; sums accumulate in c->pass. */
rs_err rs_eval_ce_batch(rs_eval_ce *c, const int32_t *tokens /*(B,T)*/, int B);

/* Means over all ranks of one pass. */
typedef struct rs_eval_ce_result {
    double ce, kl;
    int64_t n;
    int ran;
} rs_eval_ce_result;

/* Collective: out (n_pass). */
rs_err rs_eval_ce_finish(rs_eval_ce_result *out, const rs_eval_ce *c, MPI_Comm comm);

#endif
