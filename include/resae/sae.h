/* TopK sparse autoencoder: model, inference, and the data-parallel trainer (METHOD.md §4).
 *
 *   pre   = ReLU(W_enc (x - b_dec) + b_enc)          // (n_latents)
 *   z     = keep the k largest entries of pre, zero the rest
 *   x_hat = W_dec^T z + b_dec                         // (d)
 *
 * Parameters, gradients and both Adam moments are each one slab of floats laid out as
 * [W_enc (n,d) | b_enc (n) | W_dec (n,d) | b_dec (d)], viewed through rs_sae_params.
 *
 * Loss of one step over the GLOBAL batch X (all ranks' rows together, B tokens):
 *   mu    = mean_t x_t                                (global, per dimension)
 *   D_x   = sum_t ||x_t - mu||^2                      (global)
 *   FVU   = sum_t ||x_t - x_hat_t||^2 / D_x
 *   e_t   = x_t - x_hat_t (a constant for the gradient), mu_e = mean_t e_t (global)
 *   e_hat = W_dec^T a_t, a_t = the k_aux largest ReLU pre-activations among dead latents
 *   D_e   = sum_t ||e_t - mu_e||^2                    (global)
 *   AuxK  = sum_t ||e_t - e_hat_t||^2 / D_e            (0 when no latent is dead)
 *   loss  = FVU + alpha_aux * AuxK
 * Each rank differentiates its share of the sums with the global D_x, D_e; gradients are summed
 * over ranks, so every rank holds the gradient of the global loss and applies the same update.
 * A latent "fires" for a token when its z entry is > 0; it is dead while it has not fired for
 * dead_tokens training tokens (counted globally, in whole steps). */
#ifndef RESAE_SAE_H
#define RESAE_SAE_H

#include <mpi.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "resae/err.h"

/* ============================== model ============================== */

typedef struct rs_sae_params {
    float *W_enc; // (n, d)
    float *b_enc; // (n)
    float *W_dec; // (n, d), unit-norm rows
    float *b_dec; // (d)
} rs_sae_params;

typedef struct rs_sae {
    int d, n_latents, k;
    size_t n_params; /* floats in the slab: 2 n d + n + d */
    float *slab;     /* owns the parameters */
    rs_sae_params p; /* views into slab */
} rs_sae;

/* Number of floats in a parameter slab. */
size_t rs_sae_slab_size(int d, int n_latents);
/* Point the views at a slab of rs_sae_slab_size(d, n) floats. */
void rs_sae_params_view(rs_sae_params *v, float *slab, int d, int n_latents);

/* Allocate a zeroed SAE (k <= n_latents). */
rs_err rs_sae_init(rs_sae *sae, int d, int n_latents, int k);
void rs_sae_free(rs_sae *sae);

/* ============================== inference ============================== */

/* Top-k codes of rows of x. Per row the k entries are the latents with the largest positive
 * pre-activations (ties to the smaller id), in ascending latent order; when fewer than k are
 * positive the remaining slots are idx -1, val 0. */
rs_err rs_sae_encode(int32_t *idx /*(rows,k)*/, float *val /*(rows,k)*/, const rs_sae *sae,
                     const float *x /*(rows,d)*/, int64_t rows);
/* x_hat = W_dec^T z + b_dec for codes from rs_sae_encode (entries with idx < 0 are skipped). */
void rs_sae_decode(float *x_hat /*(rows,d)*/, const rs_sae *sae, const int32_t *idx /*(rows,k)*/,
                   const float *val /*(rows,k)*/, int64_t rows);
/* Encode then decode. x_hat may alias x. */
rs_err rs_sae_reconstruct(float *x_hat /*(rows,d)*/, const rs_sae *sae, const float *x /*(rows,d)*/,
                          int64_t rows);

/* ============================== training ============================== */

/* Training rows come from a random-access source: read(ctx, rows, first, n) fills rows (n, d)
 * with tokens first .. first+n-1 of the (already shuffled, already scaled) training stream.
 * Step s reads the global batch [s*batch, (s+1)*batch); rank r of P takes its contiguous share.
 * The same index must always give the same row (that is what makes resume exact). */
typedef rs_err (*rs_sae_read_fn)(void *ctx, float *rows /*(n,d)*/, int64_t first, int n);
typedef struct rs_sae_source {
    rs_sae_read_fn read;
    void *ctx;
} rs_sae_source;

enum rs_sae_bdec_init { RS_SAE_BDEC_GEOMEDIAN = 0, RS_SAE_BDEC_MEAN = 1, RS_SAE_BDEC_ZERO = 2, RS_SAE_BDEC_COUNT = 3 };
/* As the config file spells them (train.b_dec_init), indexed by the enum. */
extern const char *const rs_sae_bdec_init_names[RS_SAE_BDEC_COUNT];

/* Encoder initialisation (docs/sae.md "Recipe"). Every variant starts from random unit decoder rows
 * and b_enc = 0; they differ in the encoder:
 *   TIED      W_enc = W_dec (dictionary_learning's TopK trainer)
 *   DATA      W_enc = alpha W_dec, alpha the least-squares scale of the init sample's reconstruction:
 *             with u_t = W_dec^T TopK(ReLU(W_dec (x_t - b_dec))), alpha = sum <x_t - b_dec, u_t> / sum ||u_t||^2
 *             (exact, since the codes are linear in alpha when b_enc = 0)
 *   OPENAI    W_enc = W_dec / mean ||u(g)|| over 256 random unit vectors g placed at b_dec (OpenAI's
 *             init_from_data_)
 *   SPARSIFY  W_enc entries uniform in +-1/sqrt(d), W_dec = W_enc with rows normalised (sparsify's
 *             nn.Linear init; encoder rows of norm ~0.58) */
enum rs_sae_enc_init { RS_SAE_ENC_TIED = 0, RS_SAE_ENC_DATA = 1, RS_SAE_ENC_OPENAI = 2, RS_SAE_ENC_SPARSIFY = 3, RS_SAE_ENC_COUNT = 4 };
extern const char *const rs_sae_enc_init_names[RS_SAE_ENC_COUNT];

/* AuxK normaliser: RESIDUAL = sum ||e - e_hat||^2 / sum ||e - mean e||^2 (METHOD.md, and OpenAI's
 * normalized_mse); INPUT = min(n_dead / k_aux, 1) sum ||e - e_hat||^2 / sum ||x - mean x||^2 (sparsify),
 * with k_aux the configured width. */
enum rs_sae_aux_norm { RS_SAE_AUX_RESIDUAL = 0, RS_SAE_AUX_INPUT = 1, RS_SAE_AUX_COUNT = 2 };
extern const char *const rs_sae_aux_norm_names[RS_SAE_AUX_COUNT];

/* Encoder product precision: FP32 = OpenBLAS SGEMM; BF16 = inputs and W_enc rounded to bfloat16
 * (nearest even), float32 accumulation (oneDNN matmul; needs AVX512_BF16). Training only: inference
 * (rs_sae_encode) stays float32. */
enum rs_sae_precision { RS_SAE_PREC_FP32 = 0, RS_SAE_PREC_BF16 = 1, RS_SAE_PREC_COUNT = 2 };
extern const char *const rs_sae_precision_names[RS_SAE_PREC_COUNT];

typedef struct rs_sae_config {
    int d, n_latents, k;
    int batch;             /* global batch in tokens (4096) */
    int64_t steps;         /* optimizer steps */
    double lr;             /* <= 0: 2e-4 / sqrt(n_latents / 2^14) */
    int64_t warmup_steps;  /* < 0: min(1000, steps / 10) */
    double decay_frac;     /* linear decay to 0 over the last decay_frac of steps (0.2) */
    double alpha_aux;      /* 1/32 */
    int64_t dead_tokens;   /* 1e7 */
    int k_aux;             /* <= 0: d / 2 (capped at the number of dead latents each step) */
    double beta1, beta2, eps; /* Adam (0.9, 0.999, 6.25e-10) */
    uint64_t seed;
    enum rs_sae_bdec_init bdec_init; /* default: geometric median */
    enum rs_sae_enc_init enc_init;   /* default: tied */
    enum rs_sae_aux_norm aux_norm;   /* default: residual */
    enum rs_sae_precision encoder_precision; /* default: fp32 */
    int init_tokens;       /* sample for the b_dec init: the first init_tokens of the stream (4096) */
    int geomedian_iters;   /* Weiszfeld iterations (10) */
    int chunk_rows;        /* rows per encoder GEMM call (1024) */
    const char *ckpt_path; /* NULL: no checkpoints; if the file exists training resumes from it */
    int64_t ckpt_every;    /* steps between checkpoints (also written at the end) */
    int64_t log_every;     /* steps between log lines (0: only by the progress interval) */
    int curve_bins;        /* 0: no curve; else the mean FVU of each of curve_bins equal spans of steps */
    double max_fvu;        /* a step's FVU above this stops training as diverged (100; <= 0: no limit) */
    volatile sig_atomic_t *stop; /* when set on any rank: checkpoint and return RS_ERR_INTERRUPTED */
} rs_sae_config;

void rs_sae_config_default(rs_sae_config *c, int d, int n_latents, int k);
/* The base learning rate cfg resolves to, and the scheduled learning rate of step s (0-based). */
double rs_sae_config_lr(const rs_sae_config *c);
double rs_sae_lr_at(const rs_sae_config *c, int64_t step);
/* Hash of every setting that determines the trained weights (not paths, intervals, chunking). */
uint64_t rs_sae_config_hash(const rs_sae_config *c);

/* The training curve: step s (0-based) of steps falls in span s * bins / steps. */
#define RS_SAE_MAX_CURVE_BINS 100
int rs_sae_curve_bin(const rs_sae_config *c, int64_t step);
/* Relative FVU improvement over the last 20% of steps: (F_80 - F_end) / F_80, with F_80 the mean FVU
 * of the span that ends at 80% of the steps and F_end that of the last span. bins: a multiple of 5. */
double rs_sae_curve_gain(const double *curve /*(bins)*/, int bins);

typedef struct rs_sae_step_stats {
    double loss, fvu, auxk; /* global, this step */
    double l0;              /* mean fired latents per token */
    double dead_frac;       /* fraction of latents dead at the start of the step */
    int n_dead;
} rs_sae_step_stats;

typedef struct rs_sae_metrics {
    double fvu;          /* mean FVU over the last tail_steps steps */
    double auxk, l0;     /* same window */
    double dead_frac;    /* dead after the last step */
    double last_fvu;     /* FVU of the last step */
    int64_t tail_steps;
    int64_t tokens;      /* tokens seen (global), including before a resume */
    int64_t steps;
    double seconds;      /* wall time of this call's steps */
    double tokens_per_s; /* over this call's steps */
    int resumed_from;    /* step the run resumed from (-1: fresh) */
    int curve_bins;      /* cfg.curve_bins (0: no curve) */
    double fvu_curve[RS_SAE_MAX_CURVE_BINS]; /* mean FVU per span of steps (rs_sae_curve_bin) */
    double fvu_last20_gain;                  /* rs_sae_curve_gain of the curve (NaN: no curve) */
} rs_sae_metrics;

/* Trainer state. Everything but the scratch is identical on every rank. */
typedef struct rs_sae_trainer {
    rs_sae_config cfg;
    MPI_Comm comm; /* MPI_COMM_NULL: serial, no MPI calls */
    int rank, size;
    rs_sae *sae;   /* borrowed */
    /* optimizer: one slab for gradient, first and second moments, each n_params floats */
    float *opt_slab;
    float *grad_slab, *m_slab, *v_slab;
    rs_sae_params g, m, v;
    int64_t *since_fired; // (n) global tokens since each latent last fired
    int64_t step;         /* steps done */
    uint64_t rng[4];      /* xoshiro256** state (parameter init) */
    /* scratch for the local share of a batch */
    int rows_max;         /* local rows */
    int k_aux;            /* configured k_aux */
    float *x;             // (rows, d) inputs
    float *gx;            // (rows, 2 d) per token [dL/dx_hat | x - b_dec]: the backward reads both
    float *hbuf;          // (rows, d) e_hat, then dL/de_hat
    float *pre;           // (chunk_rows, n) encoder output chunk
    int32_t *top_idx;     // (rows, k)
    float *top_val;       // (rows, k)
    int32_t *aux_idx;     // (rows, k_aux)
    float *aux_val;       // (rows, k_aux)
    int32_t *dead;        // (n) dead latent ids of this step
    int n_dead, k_aux_eff;
    int32_t *pair_start;  // (n + 1) latent-major offsets of the main (token, code) pairs
    int32_t *pair_fill;   // (n) fill and sweep cursors
    int32_t *pair_tok;    // (rows k) token
    float *pair_coef;     // (rows k) code value
    int tok_block;        /* tokens per decode block */
    int lat_shift;        /* latents per backward block = 1 << lat_shift */
    int32_t *blk_start;   // (n_blocks + 1) offsets of each latent block's pairs
    int32_t *blk_tok;     // (rows (k + k_aux)) token, ascending within a block (AuxK pairs offset by rows)
    int32_t *blk_lat;     // (rows (k + k_aux)) latent
    float *blk_coef;      // (rows (k + k_aux)) code value
    float *acc;           // (1 << lat_shift, 2 d) gradient rows of one latent block
    double *blk_gbe;      // (1 << lat_shift) b_enc gradient of one latent block
    double *bdec_acc;     // (2 d) b_dec gradient parts: encoder-input path, decoder path
    int bw_rows;          /* local rows of the batch the backward works on */
    unsigned char *fired; // (n + 1) fired flags; the last byte carries the stop request
    double *dwork;        // (3 d) sums
    float *topk_scratch;  // (4 n) candidate buffers of the top-k selection
    struct rs_bf16_ctx *bf16; /* encoder_precision bf16: bf16 copies and oneDNN primitives (src/sae/sae_bf16.h) */
    /* cumulative CPU seconds of the calling thread per phase */
    double t_prep, t_gemm, t_select, t_decode, t_backward, t_update, t_comm;
    /* metric window over the last steps, kept in checkpoints so a resumed run reports the same */
    double tail_fvu, tail_auxk, tail_l0;
    int64_t tail_n;
    double curve_sum[RS_SAE_MAX_CURVE_BINS]; /* FVU summed per span of steps (cfg.curve_bins) */
} rs_sae_trainer;

/* Bytes rs_sae_trainer_init and the parameter initialisation allocate on the busiest of `ranks` ranks
 * for an SAE of d x n with top-k k (not the parameters themselves: rs_sae_slab_size floats). */
size_t rs_sae_trainer_bytes(int d, int n, int k, const rs_sae_config *cfg, int ranks);
rs_err rs_sae_trainer_init(rs_sae_trainer *t, rs_sae *sae, const rs_sae_config *cfg, MPI_Comm comm);
void rs_sae_trainer_free(rs_sae_trainer *t);
/* Init from cfg.seed (cfg.enc_init), b_dec from the first init_tokens of src (identical on all ranks). */
rs_err rs_sae_trainer_init_params(rs_sae_trainer *t, rs_sae_source src);
/* Loss and gradient (into t->g, unprojected) of the global batch whose local share is x.
 * rows is this rank's share; the dead set comes from t->since_fired. Fills t->fired (global). */
rs_err rs_sae_trainer_loss_grad(rs_sae_trainer *t, rs_sae_step_stats *st, const float *x /*(rows,d)*/, int rows);
/* Apply the (summed) gradient in t->g: project the decoder gradient, Adam, renormalize the decoder
 * rows, update the dead-latent counters, advance the step. */
void rs_sae_trainer_update(rs_sae_trainer *t);
/* One optimizer step on global batch t->step: read, loss_grad, allreduce, update. On one rank the
 * update is fused into the backward (same result, one pass less over the slabs), and t->g then
 * holds only the bias gradients. */
rs_err rs_sae_trainer_step(rs_sae_trainer *t, rs_sae_step_stats *st, rs_sae_source src);

/* Checkpoint: parameters, Adam moments, step, RNG, fired counters, data cursor; written by rank 0
 * atomically (tmp + fsync + rename). Load refuses a file of another shape or configuration. */
rs_err rs_sae_ckpt_save(const rs_sae_trainer *t, const char *path);
rs_err rs_sae_ckpt_load(rs_sae_trainer *t, const char *path);

/* The whole recipe: resume from cfg->ckpt_path if it exists, else init; train to cfg->steps with
 * checkpoints and progress lines. Collective over comm. Returns RS_ERR_INTERRUPTED (after a
 * checkpoint) when cfg->stop was raised. */
rs_err rs_sae_train(rs_sae *sae, rs_sae_metrics *out, const rs_sae_config *cfg, rs_sae_source src,
                    MPI_Comm comm);

#endif
