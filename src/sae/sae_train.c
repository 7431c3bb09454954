/* TopK SAE trainer: data-parallel steps with a sparse backward, Adam with a unit-norm decoder,
 * dead-latent bookkeeping, atomic checkpoints and the training loop (METHOD.md §4). */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/rng.h"
#include "resae/sae.h"
#include "resae/util.h"
#include "sae_bf16.h"
#include "sae_kern.h"


/* ============================== configuration ============================== */

void rs_sae_config_default(rs_sae_config *c, int d, int n_latents, int k) {
    memset(c, 0, sizeof *c);
    c->d = d;
    c->n_latents = n_latents;
    c->k = k;
    c->batch = 4096;
    c->steps = 1000;
    c->lr = 0.0;
    c->warmup_steps = -1;
    c->decay_frac = 0.2;
    c->alpha_aux = 1.0 / 32.0;
    c->dead_tokens = 10000000;
    c->k_aux = 0;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 6.25e-10;
    c->seed = 0;
    c->bdec_init = RS_SAE_BDEC_GEOMEDIAN;
    c->init_tokens = 4096;
    c->geomedian_iters = 10;
    c->chunk_rows = 1024;
    c->ckpt_path = NULL;
    c->ckpt_every = 1000;
    c->log_every = 0;
    c->max_fvu = 100;
    c->stop = NULL;
}

double rs_sae_config_lr(const rs_sae_config *c) {
    return c->lr > 0 ? c->lr : 2e-4 / sqrt((double)c->n_latents / 16384.0);
}

static int64_t cfg_warmup(const rs_sae_config *c) {
    if (c->warmup_steps >= 0) return c->warmup_steps;
    int64_t w = c->steps / 10;
    return w < 1000 ? w : 1000;
}

static int cfg_k_aux(const rs_sae_config *c) { return c->k_aux > 0 ? c->k_aux : (c->d / 2 > 0 ? c->d / 2 : 1); }

double rs_sae_lr_at(const rs_sae_config *c, int64_t s) {
    double f = 1.0;
    int64_t w = cfg_warmup(c);
    if (w > 0 && s < w) f = (double)(s + 1) / (double)w;
    int64_t decay = (int64_t)(c->decay_frac * (double)c->steps + 0.5);
    int64_t start = c->steps - decay;
    if (decay > 0 && s >= start) f *= (double)(c->steps - s) / (double)decay;
    if (s >= c->steps) f = 0.0;
    return rs_sae_config_lr(c) * f;
}

uint64_t rs_sae_config_hash(const rs_sae_config *c) {
    uint64_t h = RS_HASH64_INIT;
    int32_t iv[] = {c->d, c->n_latents, c->k, c->batch, cfg_k_aux(c), c->bdec_init, c->init_tokens,
                    c->geomedian_iters};
    int64_t lv[] = {c->steps, cfg_warmup(c), c->dead_tokens};
    double dv[] = {rs_sae_config_lr(c), c->decay_frac, c->alpha_aux, c->beta1, c->beta2, c->eps};
    h = rs_hash64(h, iv, sizeof iv);
    h = rs_hash64(h, lv, sizeof lv);
    h = rs_hash64(h, dv, sizeof dv);
    h = rs_hash64(h, &c->seed, sizeof c->seed);
    /* hashed only when recorded, so that the hashes of runs without a curve stay as they were */
    if (c->curve_bins > 0) h = rs_hash64(h, &c->curve_bins, sizeof c->curve_bins);
    /* likewise the recipe choices added later: hashed when not the first of their kind */
    int32_t recipe[2] = {(int32_t)c->enc_init, (int32_t)c->aux_norm};
    if (recipe[0] || recipe[1]) h = rs_hash64(h, recipe, sizeof recipe);
    /* and the encoder product's precision (bf16 changes the trained weights) */
    int32_t prec = (int32_t)c->encoder_precision;
    if (prec) h = rs_hash64(h, &prec, sizeof prec);
    return h;
}

/* ============================== training curve ============================== */

int rs_sae_curve_bin(const rs_sae_config *c, int64_t step) {
    return (int)(step * (int64_t)c->curve_bins / c->steps);
}

double rs_sae_curve_gain(const double *curve, int bins) {
    if (bins < 5 || bins % 5) return NAN;
    double f80 = curve[bins / 5 * 4 - 1], fend = curve[bins - 1];
    return (f80 - fend) / f80;
}

/* Mean FVU per span from the sums of t (every span holds at least one step: steps >= bins). */
static void curve_finish(rs_sae_metrics *out, const rs_sae_trainer *t) {
    const rs_sae_config *c = &t->cfg;
    int64_t n[RS_SAE_MAX_CURVE_BINS] = {0};
    out->curve_bins = c->curve_bins;
    out->fvu_last20_gain = NAN;
    if (c->curve_bins <= 0) return;
    for (int64_t s = 0; s < c->steps; s++) n[rs_sae_curve_bin(c, s)]++;
    for (int b = 0; b < c->curve_bins; b++) out->fvu_curve[b] = n[b] ? t->curve_sum[b] / (double)n[b] : NAN;
    out->fvu_last20_gain = rs_sae_curve_gain(out->fvu_curve, c->curve_bins);
}

/* ============================== RNG (xoshiro256**, resae/rng.h) ============================== */

static double rng_uniform(uint64_t s[4]) { return ((double)(rs_xoshiro256ss_next(s) >> 11) + 0.5) * 0x1.0p-53; }

static double rng_normal(uint64_t s[4]) {
    double u1 = rng_uniform(s), u2 = rng_uniform(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ============================== trainer state ============================== */

/* Phase timers use this thread's CPU time: on a shared machine wall time mostly measures the
 * neighbours. (BLAS threads beyond the calling one are not counted.) */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

rs_err rs_sae_trainer_init(rs_sae_trainer *t, rs_sae *sae, const rs_sae_config *cfg, MPI_Comm comm) {
    memset(t, 0, sizeof *t);
    if (cfg->d != sae->d || cfg->n_latents != sae->n_latents || cfg->k != sae->k)
        RS_FAIL(RS_ERR_INVAL, "SAE config (d=%d, n_latents=%d, k=%d) does not match the model (d=%d, n_latents=%d, k=%d)",
                cfg->d, cfg->n_latents, cfg->k, sae->d, sae->n_latents, sae->k);
    if (cfg->batch < 1 || cfg->steps < 0 || cfg->chunk_rows < 1 || cfg->dead_tokens < 1 || cfg->init_tokens < 1 ||
        !(cfg->decay_frac >= 0 && cfg->decay_frac <= 1) || !(cfg->alpha_aux >= 0) || cfg->curve_bins < 0 ||
        cfg->curve_bins > RS_SAE_MAX_CURVE_BINS || (cfg->curve_bins > 0 && cfg->steps < cfg->curve_bins) ||
        (unsigned)cfg->enc_init >= RS_SAE_ENC_COUNT || (unsigned)cfg->aux_norm >= RS_SAE_AUX_COUNT ||
        (unsigned)cfg->encoder_precision >= RS_SAE_PREC_COUNT)
        RS_FAIL(RS_ERR_CONFIG, "SAE training config invalid: batch=%d steps=%lld chunk_rows=%d dead_tokens=%lld "
                "init_tokens=%d decay_frac=%g alpha_aux=%g curve_bins=%d enc_init=%d aux_norm=%d "
                "encoder_precision=%d (need batch, chunk_rows, dead_tokens, init_tokens >= 1, steps >= 0, decay_frac "
                "in [0,1], alpha_aux >= 0, curve_bins in [0, %d] and at most steps, enc_init, aux_norm and "
                "encoder_precision one of their names)", cfg->batch, (long long)cfg->steps, cfg->chunk_rows,
                (long long)cfg->dead_tokens, cfg->init_tokens, cfg->decay_frac, cfg->alpha_aux, cfg->curve_bins,
                (int)cfg->enc_init, (int)cfg->aux_norm, (int)cfg->encoder_precision, RS_SAE_MAX_CURVE_BINS);
    /* bf16 needs oneDNN in the build and AVX512_BF16 in the CPU: refuse before allocating anything */
    if (cfg->encoder_precision == RS_SAE_PREC_BF16) RS_TRY(rs_bf16_check());
    t->cfg = *cfg;
    t->cfg.ckpt_path = NULL; /* borrowed strings are not kept */
    t->comm = comm;
    t->rank = 0;
    t->size = 1;
    if (comm != MPI_COMM_NULL) {
        MPI_Comm_rank(comm, &t->rank);
        MPI_Comm_size(comm, &t->size);
    }
    t->sae = sae;
    int d = sae->d, n = sae->n_latents, k = sae->k;
    int64_t lo, hi;
    rs_range_share(&lo, &hi, cfg->batch, t->rank, t->size);
    t->rows_max = (int)(hi - lo);
    t->k_aux = cfg_k_aux(cfg);
    size_t rows = (size_t)(t->rows_max > 0 ? t->rows_max : 1);
    size_t chunk = (size_t)(cfg->chunk_rows < (int)rows ? cfg->chunk_rows : (int)rows);
    size_t np = sae->n_params;
    if (t->size > 1 && np > (size_t)INT32_MAX)
        RS_FAIL(RS_ERR_INVAL, "SAE with %zu parameters exceeds the 2^31-element limit of one gradient allreduce",
                np);
    if ((int64_t)rows * (k + t->k_aux) >= INT32_MAX)
        RS_FAIL(RS_ERR_INVAL, "local batch of %zu rows x (k + k_aux) pairs exceeds 2^31; use more ranks or a "
                "smaller batch", rows);

    t->opt_slab = rs_sae_alloc_big(3 * np, sizeof(float));
    RS_CHECK_ALLOC(t->opt_slab);
    t->grad_slab = t->opt_slab;
    t->m_slab = t->opt_slab + np;
    t->v_slab = t->opt_slab + 2 * np;
    rs_sae_params_view(&t->g, t->grad_slab, d, n);
    rs_sae_params_view(&t->m, t->m_slab, d, n);
    rs_sae_params_view(&t->v, t->v_slab, d, n);

    t->since_fired = rs_calloc_aligned((size_t)n, sizeof(int64_t));
    t->x = rs_sae_alloc_big(rows * (size_t)d, sizeof(float));
    t->gx = rs_sae_alloc_big(rows * 2 * (size_t)d, sizeof(float));
    t->hbuf = rs_sae_alloc_big(rows * (size_t)d, sizeof(float));
    /* the chunk buffer also lends d floats for batch means before and after the GEMM */
    t->pre = rs_sae_alloc_big(chunk * (size_t)n > (size_t)d ? chunk * (size_t)n : (size_t)d, sizeof(float));
    t->top_idx = rs_calloc_aligned(rows * (size_t)k, sizeof(int32_t));
    t->top_val = rs_calloc_aligned(rows * (size_t)k, sizeof(float));
    t->aux_idx = rs_calloc_aligned(rows * (size_t)t->k_aux, sizeof(int32_t));
    t->aux_val = rs_calloc_aligned(rows * (size_t)t->k_aux, sizeof(float));
    t->dead = rs_calloc_aligned((size_t)n, sizeof(int32_t));
    t->pair_start = rs_calloc_aligned((size_t)n + 1, sizeof(int32_t));
    t->pair_fill = rs_calloc_aligned((size_t)n, sizeof(int32_t));
    t->pair_tok = rs_calloc_aligned(rows * (size_t)k, sizeof(int32_t));
    t->pair_coef = rs_calloc_aligned(rows * (size_t)k, sizeof(float));
    /* token blocks of the decode: each block sweeps the decoder rows its codes touch, so a block
     * should use each row several times (tok_block k / n >= 4) while its output rows stay cached
     * (at most 8 MB, at least 1 MB of rows); latent blocks of the backward: about 1 MB of rows. The
     * block size changes no result (each output row sums its codes in latent order). */
    {
        size_t tb_lo = ((size_t)1 << 18) / (size_t)d, tb_hi = ((size_t)1 << 21) / (size_t)d;
        size_t want = 4 * (size_t)n / (size_t)(k > 0 ? k : 1);
        size_t tb = want < tb_hi ? want : tb_hi;
        if (tb < tb_lo) tb = tb_lo;
        t->tok_block = tb < 1 ? 1 : (tb > (size_t)INT32_MAX ? INT32_MAX : (int)tb);
    }
    t->lat_shift = 0;
    while (t->lat_shift < 30 && ((size_t)2 << t->lat_shift) * 2 * (size_t)d * sizeof(float) <= ((size_t)1 << 20) &&
           ((size_t)1 << t->lat_shift) < (size_t)n)
        t->lat_shift++;
    size_t lat_block = (size_t)1 << t->lat_shift, nblk = (((size_t)n - 1) >> t->lat_shift) + 1;
    t->blk_start = rs_calloc_aligned(nblk + 1, sizeof(int32_t));
    t->blk_tok = rs_calloc_aligned(rows * (size_t)(k + t->k_aux), sizeof(int32_t));
    t->blk_lat = rs_calloc_aligned(rows * (size_t)(k + t->k_aux), sizeof(int32_t));
    t->blk_coef = rs_calloc_aligned(rows * (size_t)(k + t->k_aux), sizeof(float));
    t->acc = rs_calloc_aligned(lat_block * 2 * (size_t)d, sizeof(float));
    t->blk_gbe = rs_calloc_aligned(lat_block, sizeof(double));
    t->bdec_acc = rs_calloc_aligned(2 * (size_t)d, sizeof(double));
    t->fired = rs_calloc_aligned((size_t)n + 1, 1);
    t->topk_scratch = rs_calloc_aligned(4 * (size_t)n, sizeof(float));
    t->dwork = rs_calloc_aligned(3 * (size_t)d + 8, sizeof(double));
    if (!t->since_fired || !t->x || !t->gx || !t->hbuf || !t->pre || !t->top_idx || !t->top_val || !t->aux_idx ||
        !t->aux_val || !t->dead || !t->pair_start || !t->pair_fill || !t->pair_tok || !t->pair_coef || !t->fired || !t->topk_scratch ||
        !t->dwork || !t->blk_start || !t->blk_tok || !t->blk_lat || !t->blk_coef || !t->acc || !t->blk_gbe || !t->bdec_acc) {
        rs_sae_trainer_free(t);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for SAE trainer buffers (d=%d, n_latents=%d, %zu local rows)", d, n, rows);
    }
    if (cfg->encoder_precision == RS_SAE_PREC_BF16) {
        rs_err e = rs_bf16_ctx_create(&t->bf16, (int)chunk, n, d);
        if (e) {
            rs_sae_trainer_free(t);
            return rs_err_push(e, __FILE__, __LINE__, __func__);
        }
    }
    uint64_t s = cfg->seed;
    for (int i = 0; i < 4; i++) t->rng[i] = rs_splitmix64_next(&s);
    return RS_OK;
}

size_t rs_sae_trainer_bytes(int d, int n, int k, const rs_sae_config *cfg, int ranks) {
    rs_sae_config c = *cfg;
    c.d = d;
    int64_t lo, hi;
    rs_range_share(&lo, &hi, cfg->batch, 0, ranks > 0 ? ranks : 1); /* rank 0 has the largest share */
    size_t rows = (size_t)(hi - lo > 0 ? hi - lo : 1), nd = (size_t)n * (size_t)d, ka = (size_t)cfg_k_aux(&c);
    size_t chunk = (size_t)(cfg->chunk_rows < (int)rows ? cfg->chunk_rows : (int)rows);
    size_t np = rs_sae_slab_size(d, n);
    size_t b = 4 * 3 * np;                                    /* gradient, Adam moments */
    b += 4 * 4 * rows * (size_t)d;                            /* x, gx (2), hbuf */
    b += 4 * (chunk * (size_t)n > (size_t)d ? chunk * (size_t)n : (size_t)d); /* pre-activations */
    b += 16 * rows * (size_t)k + 8 * rows * ka;               /* top, aux and pair lists */
    b += 12 * rows * ((size_t)k + ka);                        /* latent-block lists */
    b += (size_t)n * (8 + 4 + 4 + 4 + 1 + 16);                /* since_fired .. topk_scratch */
    b += ((size_t)2 << 20) + 8 * 5 * (size_t)d;               /* accumulators (<= 1 MB of rows), dwork */
    if (cfg->encoder_precision == RS_SAE_PREC_BF16) b += 2 * nd + 2 * chunk * (size_t)d; /* bf16 copies */
    /* the initial parameters: xh and xs of init_tokens rows (the geometric median's working set) */
    b += 4 * 2 * (size_t)cfg->init_tokens * (size_t)d;
    return b;
}

void rs_sae_trainer_free(rs_sae_trainer *t) {
    rs_bf16_ctx_free(t->bf16);
    free(t->opt_slab);
    free(t->since_fired);
    free(t->x);
    free(t->gx);
    free(t->hbuf);
    free(t->pre);
    free(t->top_idx);
    free(t->top_val);
    free(t->aux_idx);
    free(t->aux_val);
    free(t->dead);
    free(t->pair_start);
    free(t->pair_fill);
    free(t->pair_tok);
    free(t->pair_coef);
    free(t->fired);
    free(t->topk_scratch);
    free(t->dwork);
    free(t->blk_start);
    free(t->blk_tok);
    free(t->blk_lat);
    free(t->blk_coef);
    free(t->acc);
    free(t->blk_gbe);
    free(t->bdec_acc);
    memset(t, 0, sizeof *t);
}

static rs_err allreduce_double(rs_sae_trainer *t, double *buf, int n) {
    if (t->size == 1) return RS_OK;
    double t0 = cpu_now();
    RS_MPI(MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, t->comm));
    t->t_comm += cpu_now() - t0;
    return RS_OK;
}

/* ============================== initialization ============================== */

/* Least-squares scale of the reconstructions of xs (m rows) under the current W_enc with b_enc = 0:
 * alpha = sum <x - b_dec, u> / sum ||u||^2, u = x_hat - b_dec. 1 when nothing reconstructs. */
static rs_err fit_enc_scale(double *alpha, const rs_sae *sae, const float *xs, int m, int centred_norm) {
    int d = sae->d;
    float *xh = malloc((size_t)m * (size_t)d * sizeof(float));
    RS_CHECK_ALLOC(xh);
    rs_err err = rs_sae_reconstruct(xh, sae, xs, m);
    double num = 0, den = 0, norm = 0;
    for (int r = 0; !err && r < m; r++) {
        const float *xr = xs + (size_t)r * (size_t)d, *hr = xh + (size_t)r * (size_t)d;
        double uu = 0;
        for (int i = 0; i < d; i++) {
            double u = (double)hr[i] - sae->p.b_dec[i];
            num += ((double)xr[i] - sae->p.b_dec[i]) * u;
            uu += u * u;
        }
        den += uu;
        norm += sqrt(uu);
    }
    free(xh);
    RS_TRY(err);
    /* centred_norm: OpenAI's rule, 1 / mean ||u|| (the inputs are unit vectors about b_dec) */
    if (centred_norm) *alpha = norm > 0 ? (double)m / norm : 1.0;
    else *alpha = den > 0 && num > 0 ? num / den : 1.0;
    return RS_OK;
}

rs_err rs_sae_trainer_init_params(rs_sae_trainer *t, rs_sae_source src) {
    rs_sae *sae = t->sae;
    rs_bf16_mark_dirty(t->bf16);
    int d = sae->d, n = sae->n_latents;
    rs_sae_params *p = &sae->p;
    size_t nd = (size_t)n * (size_t)d;
    double *row = t->dwork;
    if (t->cfg.enc_init == RS_SAE_ENC_SPARSIFY) {
        /* nn.Linear's default: entries uniform in +-1/sqrt(d); the decoder is the normalised copy */
        double bound = 1.0 / sqrt((double)d);
        for (size_t i = 0; i < nd; i++) p->W_enc[i] = (float)(bound * (2.0 * rng_uniform(t->rng) - 1.0));
        for (int j = 0; j < n; j++) {
            const float *we = p->W_enc + (size_t)j * (size_t)d;
            double ss = 0;
            for (int i = 0; i < d; i++) ss += (double)we[i] * we[i];
            double inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
            float *w = p->W_dec + (size_t)j * (size_t)d;
            for (int i = 0; i < d; i++) w[i] = (float)(we[i] * inv);
        }
    } else {
        /* random unit decoder rows, encoder = decoder */
        for (int j = 0; j < n; j++) {
            double ss = 0;
            for (int i = 0; i < d; i++) {
                row[i] = rng_normal(t->rng);
                ss += row[i] * row[i];
            }
            double inv = 1.0 / sqrt(ss);
            float *w = p->W_dec + (size_t)j * (size_t)d;
            for (int i = 0; i < d; i++) w[i] = (float)(row[i] * inv);
        }
        memcpy(p->W_enc, p->W_dec, nd * sizeof(float));
    }
    memset(p->b_enc, 0, (size_t)n * sizeof(float));
    memset(p->b_dec, 0, (size_t)d * sizeof(float));
    int need_sample = t->cfg.bdec_init != RS_SAE_BDEC_ZERO || t->cfg.enc_init == RS_SAE_ENC_DATA;
    float *xs = NULL;
    int m = t->cfg.init_tokens;
    rs_err err = RS_OK;
    if (need_sample) {
        /* the first init_tokens rows; every rank reads the same sample and computes the same values,
         * so no communication is needed and the result does not depend on the rank count */
        xs = malloc((size_t)m * (size_t)d * sizeof(float));
        RS_CHECK_ALLOC(xs);
        err = src.read(src.ctx, xs, 0, m);
        if (t->size > 1) err = rs_agree(err, t->comm, "reading the SAE init sample");
        if (err) {
            free(xs);
            return rs_err_prefix(err, "reading the %d-token sample for the SAE init", m);
        }
    }
    if (t->cfg.bdec_init != RS_SAE_BDEC_ZERO) {
        double *mu = t->dwork, *y = t->dwork + d, *num = t->dwork + 2 * d;
        memset(mu, 0, (size_t)d * sizeof(double));
        for (int r = 0; r < m; r++)
            for (int i = 0; i < d; i++) mu[i] += xs[(size_t)r * (size_t)d + i];
        for (int i = 0; i < d; i++) mu[i] /= m;
        memcpy(y, mu, (size_t)d * sizeof(double));
        if (t->cfg.bdec_init == RS_SAE_BDEC_GEOMEDIAN) {
            /* Weiszfeld: y <- sum_r x_r / |x_r - y| / sum_r 1 / |x_r - y| */
            for (int it = 0; it < t->cfg.geomedian_iters; it++) {
                memset(num, 0, (size_t)d * sizeof(double));
                double den = 0;
                for (int r = 0; r < m; r++) {
                    const float *xr = xs + (size_t)r * (size_t)d;
                    double dist = 0;
                    for (int i = 0; i < d; i++) dist += (xr[i] - y[i]) * (xr[i] - y[i]);
                    dist = sqrt(dist);
                    double w = 1.0 / (dist > 1e-12 ? dist : 1e-12);
                    den += w;
                    for (int i = 0; i < d; i++) num[i] += w * xr[i];
                }
                for (int i = 0; i < d; i++) y[i] = num[i] / den;
            }
        }
        for (int i = 0; i < d; i++) p->b_dec[i] = (float)y[i];
    }
    double alpha = 1.0;
    if (t->cfg.enc_init == RS_SAE_ENC_DATA) {
        err = fit_enc_scale(&alpha, sae, xs, m, 0);
    } else if (t->cfg.enc_init == RS_SAE_ENC_OPENAI) {
        enum { NG = 256 };
        float *g = malloc((size_t)NG * (size_t)d * sizeof(float));
        if (!g) {
            err = RS_ERR(RS_ERR_NOMEM, "out of memory for the encoder-scale sample (%d x %d)", (int)NG, d);
            goto done;
        }
        for (int r = 0; r < NG; r++) {
            float *gr = g + (size_t)r * (size_t)d;
            double ss = 0;
            for (int i = 0; i < d; i++) {
                row[i] = rng_normal(t->rng);
                ss += row[i] * row[i];
            }
            double inv = 1.0 / sqrt(ss);
            for (int i = 0; i < d; i++) gr[i] = (float)(row[i] * inv + p->b_dec[i]);
        }
        err = fit_enc_scale(&alpha, sae, g, NG, 1);
        free(g);
    }
    if (!err && alpha != 1.0)
        for (size_t i = 0; i < nd; i++) p->W_enc[i] = (float)(p->W_enc[i] * alpha);
    if (!err && t->rank == 0 && t->cfg.enc_init != RS_SAE_ENC_TIED && t->cfg.enc_init != RS_SAE_ENC_SPARSIFY)
        RS_DEBUG("SAE init: encoder scale %.4f (%s)", alpha, rs_sae_enc_init_names[t->cfg.enc_init]);
done:
    free(xs);
    return err;
}

/* ============================== forward: loss and what the backward needs ============================== */

/* The forward pass in phases, each its own function: batch_center (global mean, FVU denominator,
 * xc = x - b_dec), dead_set, encode_topk (chunked GEMM, top-k and dead top-k_aux per row),
 * pairs_bucket (latent-major pair lists), decode_resid (r = x_hat - x), auxk_forward (e_hat of the
 * dead latents), fired_reduce, grad_scale (G = dL/dx_hat, H = dL/de_hat) and pairs_bucket again
 * (the latent-block lists of the backward). Phases that end in an allreduce are collective. */

/* What one forward pass knows about the global batch (the same on every rank). */
typedef struct fwd_batch {
    double ntok;   /* tokens in the global batch */
    double D_x;    /* sum_t ||x_t - mean x||^2, the FVU denominator */
    float gs;      /* G = dL/dx_hat = gs r, gs = 2 / D_x */
    int ka;        /* AuxK codes per row this step (0: AuxK off) */
} fwd_batch;

/* Global mean of x (into t->pre, borrowed: the chunk buffer is free until the GEMM), the FVU
 * denominator, and xc = x - b_dec into the xc half of the gx rows. Collective. */
static rs_err batch_center(fwd_batch *b, rs_sae_trainer *t, const float *x /* (rows, d) */, int rows) {
    const rs_sae_params *p = &t->sae->p;
    int d = t->sae->d;
    const size_t ld = 2 * (size_t)d; /* row stride of the interleaved [G | xc] buffer */
    double tp = cpu_now(), *dw = t->dwork;
    memset(dw, 0, ((size_t)d + 1) * sizeof(double));
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * (size_t)d;
        for (int i = 0; i < d; i++) dw[i] += xr[i];
    }
    dw[d] = rows;
    RS_TRY(allreduce_double(t, dw, d + 1));
    double ntok = dw[d];
    RS_CHECK(ntok >= 1, RS_ERR_INVAL, "empty global batch");
    float *mu = t->pre;
    for (int i = 0; i < d; i++) mu[i] = (float)(dw[i] / ntok);
    double D_x = 0;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * (size_t)d;
        float *cr = t->gx + (size_t)r * ld + (size_t)d;
        D_x += rs_sae_sq_dev(xr, mu, d);
        for (int i = 0; i < d; i++) cr[i] = xr[i] - p->b_dec[i];
    }
    RS_TRY(allreduce_double(t, &D_x, 1));
    RS_CHECK(D_x > 0 && isfinite(D_x), RS_ERR_NUMERIC,
             "the global batch has zero or non-finite variance (sum ||x - mean||^2 = %g): FVU is undefined; check the "
             "activation source", D_x);
    b->ntok = ntok;
    b->D_x = D_x;
    b->gs = (float)(2.0 / D_x);
    t->t_prep += cpu_now() - tp;
    return RS_OK;
}

/* The dead latents into t->dead (identical on every rank: since_fired is global state); returns
 * this step's AuxK width. */
static int dead_set(rs_sae_trainer *t) {
    int n = t->sae->n_latents, n_dead = 0;
    for (int j = 0; j < n; j++)
        if (t->since_fired[j] >= t->cfg.dead_tokens) t->dead[n_dead++] = j;
    t->n_dead = n_dead;
    int ka = n_dead < t->k_aux ? n_dead : t->k_aux;
    if (!(t->cfg.alpha_aux > 0)) ka = 0;
    t->k_aux_eff = ka;
    return ka;
}

/* Encoder over chunks of rows (GEMM into t->pre), then per row the top-k codes and, when ka > 0,
 * the top-ka codes among the dead latents. */
static rs_err encode_topk(rs_sae_trainer *t, int rows, int ka) {
    const rs_sae_params *p = &t->sae->p;
    int d = t->sae->d, n = t->sae->n_latents, k = t->sae->k;
    const size_t ld = 2 * (size_t)d;
    int chunk = t->cfg.chunk_rows < t->rows_max ? t->cfg.chunk_rows : t->rows_max;
    float hint = 0.0f;
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int m = rows - r0 < chunk ? rows - r0 : chunk;
        double t0 = cpu_now();
        const float *xc = t->gx + (size_t)r0 * ld + (size_t)d;
        if (t->bf16) /* converts W_enc first when the last update marked it dirty */
            RS_TRY(rs_bf16_encoder_gemm(t->bf16, m, n, d, xc, ld, p->W_enc, t->pre));
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, d, 1.0f, xc, (int)ld, p->W_enc, d, 0.0f, t->pre,
                        n);
        double t1 = cpu_now();
        for (int r = 0; r < m; r++) {
            const float *pr = t->pre + (size_t)r * (size_t)n;
            size_t row = (size_t)(r0 + r);
            rs_sae_topk_row(t->top_idx + row * (size_t)k, t->top_val + row * (size_t)k, pr, p->b_enc, n, k, &hint,
                            t->topk_scratch);
            if (ka > 0)
                rs_sae_topk_sel(t->aux_idx + row * (size_t)ka, t->aux_val + row * (size_t)ka, pr, p->b_enc, t->dead,
                                t->n_dead, ka);
        }
        t->t_gemm += t1 - t0;
        t->t_select += cpu_now() - t1;
    }
    return RS_OK;
}

/* One list of codes: rows x kk (latent, value) slots; slot (r, s) belongs to token tok0 + r. */
typedef struct code_list {
    const int32_t *idx; /* (rows, kk) latents */
    const float *val;   /* (rows, kk) code values; only the ones > 0 make pairs */
    int rows, kk;
    int32_t tok0;
} code_list;

/* Counting sort of the pairs (token, latent, value) of the active codes by bucket = latent >> sh,
 * stable: within a bucket the pairs keep list order, then token order, then slot order. Bucket b's
 * pairs land at [start[b], start[b + 1]) of tok, coef and (unless NULL) lat. start (nb + 1),
 * cur (nb) scratch. */
static void pairs_bucket(int32_t *start, int32_t *tok, int32_t *lat, float *coef, int32_t *cur,
                         const code_list *lists, int n_lists, int nb, int sh) {
    memset(start, 0, ((size_t)nb + 1) * sizeof(int32_t));
    for (int l = 0; l < n_lists; l++) {
        const code_list *c = &lists[l];
        for (size_t s = 0; s < (size_t)c->rows * (size_t)c->kk; s++)
            if (c->val[s] > 0) start[(c->idx[s] >> sh) + 1]++;
    }
    for (int b = 0; b < nb; b++) start[b + 1] += start[b];
    memcpy(cur, start, (size_t)nb * sizeof(int32_t));
    for (int l = 0; l < n_lists; l++) {
        const code_list *c = &lists[l];
        for (int r = 0; r < c->rows; r++)
            for (int s = 0; s < c->kk; s++) {
                size_t q = (size_t)r * (size_t)c->kk + (size_t)s;
                if (c->val[q] > 0) {
                    int32_t at = cur[c->idx[q] >> sh]++;
                    tok[at] = c->tok0 + r;
                    if (lat) lat[at] = c->idx[q];
                    coef[at] = c->val[q];
                }
            }
    }
}

/* r = x_hat - x into the G half of the gx rows, from the latent-major pair lists. Blocks of tokens
 * whose G rows stay in L2; within a block the decoder is swept in latent order (each row streamed
 * once per block instead of gathered once per code), and every output row still receives b_dec and
 * then its codes in ascending latent order, as rs_sae_decode_row. Without AuxK nothing needs r
 * itself: G = gs r is scaled while the rows are in cache, and the decoder part of the b_dec
 * gradient, sum_t G[t], summed there too (into bdec_acc + d). Local sums into dwork: (d) sum of r,
 * then [sse, pair count]. */
static void decode_resid(rs_sae_trainer *t, const fwd_batch *b, const float *x /* (rows, d) */, int rows) {
    const rs_sae_params *p = &t->sae->p;
    int d = t->sae->d, n = t->sae->n_latents;
    const size_t ld = 2 * (size_t)d;
    const int32_t *start = t->pair_start;
    int32_t *cur = t->pair_fill;
    float *G = t->gx; /* rows of stride ld */
    double *sr = t->dwork, *gsum = t->bdec_acc + d;
    memset(t->dwork, 0, ((size_t)d + 2) * sizeof(double));
    memset(t->bdec_acc, 0, 2 * (size_t)d * sizeof(double));
    memcpy(cur, start, (size_t)n * sizeof(int32_t));
    double sse = 0;
    int tb = t->tok_block;
    for (int b0 = 0; b0 < rows; b0 += tb) {
        int b1 = rows - b0 < tb ? rows : b0 + tb;
        for (int r = b0; r < b1; r++) memcpy(G + (size_t)r * ld, p->b_dec, (size_t)d * sizeof(float));
        for (int j = 0; j < n; j++) {
            int32_t q = cur[j], e = start[j + 1];
            if (q >= e || t->pair_tok[q] >= b1) continue;
            const float *w = p->W_dec + (size_t)j * (size_t)d;
            /* the sweep streams the decoder: fetch two rows ahead */
            if (j + 2 < n) rs_sae_prefetch_row(w + 2 * (size_t)d, d);
            do {
                rs_sae_axpy(G + (size_t)t->pair_tok[q] * ld, t->pair_coef[q], w, d);
                q++;
            } while (q < e && t->pair_tok[q] < b1);
            cur[j] = q;
        }
        for (int r = b0; r < b1; r++) {
            float *gr = G + (size_t)r * ld;
            const float *xr = x + (size_t)r * (size_t)d;
            sse += b->ka == 0 ? rs_sae_resid_scale(gr, xr, sr, b->gs, gsum, d) : rs_sae_resid(gr, xr, sr, d);
        }
    }
    t->dwork[d] = sse;
    t->dwork[d + 1] = (double)start[n];
}

/* AuxK: e = -r; e_hat from the dead latents' codes into hbuf. sum_r (d) is the global sum of r.
 * *D_e = sum_t ||e_t - mean e||^2 and *aux_sse = sum_t ||e_hat_t - e_t||^2 over the global batch.
 * Collective. */
static rs_err auxk_forward(double *D_e, double *aux_sse, rs_sae_trainer *t, const fwd_batch *b,
                           const double *sum_r, int rows) {
    const rs_sae_params *p = &t->sae->p;
    int d = t->sae->d, ka = b->ka;
    const size_t ld = 2 * (size_t)d;
    double t0 = cpu_now();
    float *mr = t->pre; /* global mean of r, borrowed row */
    for (int i = 0; i < d; i++) mr[i] = (float)(sum_r[i] / b->ntok);
    double de_local = 0, asse = 0;
    for (int r = 0; r < rows; r++) {
        const float *gr = t->gx + (size_t)r * ld;
        float *hr = t->hbuf + (size_t)r * (size_t)d;
        rs_sae_decode_row(hr, p->W_dec, NULL, t->aux_idx + (size_t)r * (size_t)ka, t->aux_val + (size_t)r * (size_t)ka,
                          ka, d);
        for (int i = 0; i < d; i++) {
            double dv = (double)gr[i] - (double)mr[i];
            de_local += dv * dv;
            float q = hr[i] + gr[i]; /* e_hat - e */
            asse += (double)q * q;
        }
    }
    double red[2] = {de_local, asse};
    t->t_decode += cpu_now() - t0;
    RS_TRY(allreduce_double(t, red, 2));
    *D_e = red[0];
    *aux_sse = red[1];
    return RS_OK;
}

/* The fired flags are global; the extra byte carries a stop request from any rank. Collective. */
static rs_err fired_reduce(rs_sae_trainer *t) {
    int n = t->sae->n_latents;
    t->fired[n] = (unsigned char)(t->cfg.stop && *t->cfg.stop ? 1 : 0);
    if (t->size == 1) return RS_OK;
    double tc = cpu_now();
    RS_MPI(MPI_Allreduce(MPI_IN_PLACE, t->fired, n + 1, MPI_UNSIGNED_CHAR, MPI_MAX, t->comm));
    t->t_comm += cpu_now() - tc;
    return RS_OK;
}

/* The output gradients: G = dL/dx_hat = gs r (unless decode_resid scaled it already: ka == 0) and,
 * with use_aux, H = dL/de_hat = 2 alpha (e_hat - e) / D_e. */
static void grad_scale(rs_sae_trainer *t, const fwd_batch *b, int use_aux, double D_e, int rows) {
    int d = t->sae->d;
    const size_t ld = 2 * (size_t)d;
    float *G = t->gx, *H = t->hbuf;
    if (use_aux) {
        float hs = (float)(2.0 * t->cfg.alpha_aux / D_e);
        for (int r = 0; r < rows; r++) {
            float *hr = H + (size_t)r * (size_t)d;
            const float *gr = G + (size_t)r * ld;
            for (int i = 0; i < d; i++) hr[i] = hs * (hr[i] + gr[i]);
        }
    }
    if (b->ka > 0)
        for (int r = 0; r < rows; r++) rs_sae_scale_sum(G + (size_t)r * ld, b->gs, t->bdec_acc + d, d);
}

/* Loss of the batch x and everything the backward needs: codes, G = dL/dx_hat, H = dL/de_hat, pair lists. */
static rs_err forward(rs_sae_trainer *t, rs_sae_step_stats *st, const float *x /* (rows, d) */, int rows) {
    int d = t->sae->d, n = t->sae->n_latents, k = t->sae->k;
    RS_CHECK(rows <= t->rows_max, RS_ERR_INVAL, "%d local rows exceed the %d the trainer was sized for", rows,
             t->rows_max);
    memset(st, 0, sizeof *st);
    fwd_batch b = {0};
    RS_TRY(batch_center(&b, t, x, rows));
    b.ka = dead_set(t);
    RS_TRY(encode_topk(t, rows, b.ka));

    /* latent-major pair lists of the main codes (token order within a latent), then the decode */
    double t0 = cpu_now();
    const code_list main_codes = {t->top_idx, t->top_val, rows, k, 0};
    pairs_bucket(t->pair_start, t->pair_tok, NULL, t->pair_coef, t->pair_fill, &main_codes, 1, n, 0);
    memset(t->fired, 0, (size_t)n + 1);
    for (int j = 0; j < n; j++) t->fired[j] = t->pair_start[j + 1] > t->pair_start[j];
    decode_resid(t, &b, x, rows);
    t->t_decode += cpu_now() - t0;
    double *dw = t->dwork; /* (d) sum of r, sse, pair count */
    RS_TRY(allreduce_double(t, dw, d + 2));
    st->l0 = dw[d + 1] / b.ntok;
    st->fvu = dw[d] / b.D_x;

    double D_e = 0, aux_sse = 0;
    if (b.ka > 0) RS_TRY(auxk_forward(&D_e, &aux_sse, t, &b, dw, rows));
    if (b.ka > 0 && t->cfg.aux_norm == RS_SAE_AUX_INPUT) {
        /* sparsify: the input's variance as the denominator, scaled down while few latents are dead */
        double scale = (double)t->n_dead / (double)t->k_aux;
        D_e = b.D_x / (scale < 1.0 ? scale : 1.0);
    }
    int use_aux = b.ka > 0 && D_e > 0 && isfinite(D_e);
    st->auxk = use_aux ? aux_sse / D_e : 0.0;
    st->loss = st->fvu + t->cfg.alpha_aux * st->auxk;
    st->n_dead = t->n_dead;
    st->dead_frac = (double)t->n_dead / n;
    RS_TRY(fired_reduce(t));

    /* the output gradients, then the latent-block pair lists of the backward: block-major, main
     * pairs before AuxK pairs (tokens offset by rows) within a block, so each latent still sees its
     * pairs in token order */
    t0 = cpu_now();
    grad_scale(t, &b, use_aux, D_e, rows);
    const code_list bw_codes[2] = {main_codes, {t->aux_idx, t->aux_val, rows, b.ka, rows}};
    int sh = t->lat_shift, nblk = ((n - 1) >> sh) + 1;
    pairs_bucket(t->blk_start, t->blk_tok, t->blk_lat, t->blk_coef, t->pair_fill, bw_codes, use_aux ? 2 : 1, nblk, sh);
    t->bw_rows = rows;
    t->t_backward += cpu_now() - t0;
    return RS_OK;
}

/* ============================== backward and update ============================== */

/* Adam coefficients of one step, in PyTorch's arithmetic: denom = sqrt(v) / sqrt(bc2) + eps,
 * p -= (lr / bc1) * m / denom */
typedef struct adam_coef {
    float b1, b2, step_size, bc2_sqrt, eps;
} adam_coef;

static adam_coef adam_coef_at(const rs_sae_trainer *t) {
    double lr = rs_sae_lr_at(&t->cfg, t->step);
    double tt = (double)(t->step + 1);
    double bc1 = 1.0 - pow(t->cfg.beta1, tt), bc2 = 1.0 - pow(t->cfg.beta2, tt);
    adam_coef a = {(float)t->cfg.beta1, (float)t->cfg.beta2, (float)(lr / bc1), (float)sqrt(bc2), (float)t->cfg.eps};
    return a;
}

RS_HOT static void adam_range(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                              size_t len, adam_coef a) {
    float b1 = a.b1, b2 = a.b2, c1 = 1.0f - b1, c2 = 1.0f - b2, ss = a.step_size, bs = a.bc2_sqrt, eps = a.eps;
    for (size_t i = 0; i < len; i++) {
        float gi = g[i];
        float mi = m[i] * b1 + gi * c1;
        float vi = v[i] * b2 + gi * gi * c2;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bs + eps;
        p[i] += -ss * (mi / denom);
    }
}

/* Latent j's update from its gradient rows: the decoder gradient loses its component along the
 * (unit) row, Adam moves both rows, the decoder row is renormalized. gwd is modified. */
static void update_latent(rs_sae_trainer *t, int j, float *restrict gwd, const float *restrict gwe, adam_coef a) {
    rs_sae_params *p = &t->sae->p;
    int d = t->sae->d;
    size_t o = (size_t)j * (size_t)d;
    float *w = p->W_dec + o;
    float c = rs_sae_dot(gwd, w, d);
    if (c != 0.0f) rs_sae_axpy(gwd, -c, w, d);
    adam_range(p->W_enc + o, gwe, t->m.W_enc + o, t->v.W_enc + o, (size_t)d, a);
    adam_range(w, gwd, t->m.W_dec + o, t->v.W_dec + o, (size_t)d, a);
    float nrm = sqrtf(rs_sae_dot(w, w, d));
    if (nrm > 0)
        for (int i = 0; i < d; i++) w[i] /= nrm;
}

/* The sparse backward of the batch prepared by forward(), one block of latents at a time: the
 * block's gradient rows (and its decoder rows) stay in L2 while the tokens with pairs in the block
 * are streamed in ascending order, reading each token's record once per block rather than once
 * per pair. Per latent j: dL/dz = W_dec[j] . g_t, dW_dec[j] = sum z g_t, dW_enc[j] = sum dL/dz xc_t
 * in token order (main pairs, then AuxK pairs with h_t for g_t).
 * fuse NULL: the gradient goes to t->g. Otherwise each finished block is applied at once
 * (projection, Adam, renormalization) and only b_enc, b_dec of t->g are written: valid when the
 * gradient needs no reduction over ranks, and bitwise equal to t->g followed by
 * rs_sae_trainer_update. */
static void backward(rs_sae_trainer *t, const adam_coef *fuse) {
    rs_sae *sae = t->sae;
    rs_sae_params *p = &sae->p;
    const rs_sae_params *g = &t->g;
    int d = sae->d, n = sae->n_latents, rows = t->bw_rows, sh = t->lat_shift, nblk = ((n - 1) >> sh) + 1;
    const size_t ld = 2 * (size_t)d;
    const float *H = t->hbuf;
    const int32_t *bs = t->blk_start, *btok = t->blk_tok, *blat = t->blk_lat;
    double *bacc = t->bdec_acc, *gsum = t->bdec_acc + d; /* sum_j g_benc[j] W_enc[j]; sum_t G[t] */
    double tb = cpu_now(), tu = 0;
    for (int b = 0; b < nblk; b++) {
        int j0 = b << sh, nl = n - j0 < (1 << sh) ? n - j0 : 1 << sh;
        float *acc = t->acc; /* (nl, 2d): [dW_dec[j] | dW_enc[j]] */
        double *gbe = t->blk_gbe;
        memset(acc, 0, (size_t)nl * ld * sizeof(float));
        memset(gbe, 0, (size_t)nl * sizeof(double));
        int32_t q1 = bs[b + 1];
        for (int32_t q = bs[b]; q < q1; q++) {
            int32_t tok = btok[q], j = blat[q];
            const float *xr = t->gx + (size_t)(tok >= rows ? tok - rows : tok) * ld + (size_t)d;
            const float *gv = tok < rows ? xr - d : H + (size_t)(tok - rows) * (size_t)d;
            float *ar = acc + (size_t)(j - j0) * ld;
            float gz = rs_sae_dot_axpy(ar, t->blk_coef[q], p->W_dec + (size_t)j * (size_t)d, gv, d);
            rs_sae_axpy(ar + d, gz, xr, d);
            gbe[j - j0] += gz;
        }
        double tf = cpu_now();
        for (int l = 0; l < nl; l++) {
            int j = j0 + l;
            float gb = (float)gbe[l];
            g->b_enc[j] = gb;
            /* b_dec's encoder-input path, -W_enc^T dL/db_enc, with W_enc before this step's update */
            const float *we = p->W_enc + (size_t)j * (size_t)d;
            for (int i = 0; i < d; i++) bacc[i] += (double)gb * (double)we[i];
            float *ar = acc + (size_t)l * ld;
            if (fuse) {
                update_latent(t, j, ar, ar + d, *fuse);
            } else {
                memcpy(g->W_dec + (size_t)j * (size_t)d, ar, (size_t)d * sizeof(float));
                memcpy(g->W_enc + (size_t)j * (size_t)d, ar + d, (size_t)d * sizeof(float));
            }
        }
        if (fuse) adam_range(p->b_enc + j0, g->b_enc + j0, t->m.b_enc + j0, t->v.b_enc + j0, (size_t)nl, *fuse);
        tu += cpu_now() - tf;
    }
    for (int i = 0; i < d; i++) g->b_dec[i] = (float)(gsum[i] - bacc[i]);
    if (fuse) adam_range(p->b_dec, g->b_dec, t->m.b_dec, t->v.b_dec, (size_t)d, *fuse);
    double te = cpu_now();
    /* in the fused form the per-latent finish is mostly the update */
    if (fuse) {
        t->t_update += tu;
        t->t_backward += te - tb - tu;
    } else {
        t->t_backward += te - tb;
    }
}

static void finish_step(rs_sae_trainer *t) {
    int n = t->sae->n_latents;
    rs_bf16_mark_dirty(t->bf16); /* the parameters were just updated */
    for (int j = 0; j < n; j++) t->since_fired[j] = t->fired[j] ? 0 : t->since_fired[j] + t->cfg.batch;
    t->step++;
}

rs_err rs_sae_trainer_loss_grad(rs_sae_trainer *t, rs_sae_step_stats *st, const float *x, int rows) {
    RS_TRY(forward(t, st, x, rows));
    backward(t, NULL);
    return RS_OK;
}

void rs_sae_trainer_update(rs_sae_trainer *t) {
    double t0 = cpu_now();
    rs_sae *sae = t->sae;
    int d = sae->d, n = sae->n_latents;
    adam_coef a = adam_coef_at(t);
    for (int j = 0; j < n; j++) {
        size_t o = (size_t)j * (size_t)d;
        update_latent(t, j, t->g.W_dec + o, t->g.W_enc + o, a);
    }
    adam_range(sae->p.b_enc, t->g.b_enc, t->m.b_enc, t->v.b_enc, (size_t)n, a);
    adam_range(sae->p.b_dec, t->g.b_dec, t->m.b_dec, t->v.b_dec, (size_t)d, a);
    finish_step(t);
    t->t_update += cpu_now() - t0;
}

static double max_row_norm(const float *w, int rows, int cols) {
    double best = 0;
    for (int j = 0; j < rows; j++) {
        double s = 0;
        for (int i = 0; i < cols; i++) s += (double)w[(size_t)j * cols + i] * w[(size_t)j * cols + i];
        if (!(s <= best)) best = s; /* NaN wins */
    }
    return sqrt(best);
}

rs_err rs_sae_trainer_step(rs_sae_trainer *t, rs_sae_step_stats *st, rs_sae_source src) {
    int64_t lo, hi;
    rs_range_share(&lo, &hi, t->cfg.batch, t->rank, t->size);
    int rows = (int)(hi - lo);
    rs_err err = rows > 0 ? src.read(src.ctx, t->x, t->step * (int64_t)t->cfg.batch + lo, rows) : RS_OK;
    if (t->size > 1) err = rs_agree(err, t->comm, "reading its share of the batch");
    if (err) return rs_err_prefix(err, "reading the training tokens of step %lld", (long long)t->step);
    RS_TRY(forward(t, st, t->x, rows));
    if (!isfinite(st->loss))
        RS_FAIL(RS_ERR_NUMERIC, "SAE loss is not finite at step %lld (fvu %g, auxk %g); lower the learning rate or "
                "check the inputs for NaN/Inf", (long long)t->step, st->fvu, st->auxk);
    if (t->cfg.max_fvu > 0 && st->fvu > t->cfg.max_fvu) {
        const rs_sae *s = t->sae;
        RS_FAIL(RS_ERR_NUMERIC,
                "SAE training diverged at step %lld of %lld: the batch FVU is %.4g, above train.max_fvu = %g (an SAE "
                "that predicts the mean has FVU 1); largest encoder row norm %.4g, decoder row norm %.4g. Lower "
                "train.lr (now %g) or raise train.warmup_steps; check the inputs' scale",
                (long long)t->step, (long long)t->cfg.steps, st->fvu, t->cfg.max_fvu,
                max_row_norm(s->p.W_enc, s->n_latents, s->d), max_row_norm(s->p.W_dec, s->n_latents, s->d),
                rs_sae_config_lr(&t->cfg));
    }
    if (t->size == 1) {
        /* nothing to sum over ranks: apply each latent block's update as soon as its gradient is done */
        adam_coef a = adam_coef_at(t);
        backward(t, &a);
        double t0 = cpu_now();
        finish_step(t);
        t->t_update += cpu_now() - t0;
        return RS_OK;
    }
    backward(t, NULL);
    double t0 = cpu_now();
    RS_MPI(MPI_Allreduce(MPI_IN_PLACE, t->grad_slab, (int)t->sae->n_params, MPI_FLOAT, MPI_SUM, t->comm));
    t->t_comm += cpu_now() - t0;
    rs_sae_trainer_update(t);
    return RS_OK;
}

/* ============================== checkpoints ============================== */

#define CKPT_MAGIC "RSAECKPT"
#define CKPT_VERSION 1u

/* fixed layout, native byte order; 8-byte fields first so there is no padding */
typedef struct ckpt_header {
    char magic[8];
    uint64_t version;
    uint64_t seed, config_hash, n_params;
    int64_t steps, warmup, dead_tokens, step, cursor, tail_n;
    uint64_t rng[4];
    double lr, decay_frac, alpha_aux, beta1, beta2, eps, tail_fvu, tail_auxk, tail_l0;
    int32_t d, n_latents, k, batch, k_aux, bdec_init, init_tokens, geomedian_iters, nranks;
    int32_t curve_bins; /* > 0: that many FVU sums follow the fired counters */
} ckpt_header;

static void header_fill(ckpt_header *h, const rs_sae_trainer *t) {
    const rs_sae_config *c = &t->cfg;
    memset(h, 0, sizeof *h);
    memcpy(h->magic, CKPT_MAGIC, 8);
    h->version = CKPT_VERSION;
    h->seed = c->seed;
    h->config_hash = rs_sae_config_hash(c);
    h->n_params = t->sae->n_params;
    h->steps = c->steps;
    h->warmup = cfg_warmup(c);
    h->dead_tokens = c->dead_tokens;
    h->step = t->step;
    h->cursor = t->step * (int64_t)c->batch;
    h->tail_n = t->tail_n;
    memcpy(h->rng, t->rng, sizeof h->rng);
    h->lr = rs_sae_config_lr(c);
    h->decay_frac = c->decay_frac;
    h->alpha_aux = c->alpha_aux;
    h->beta1 = c->beta1;
    h->beta2 = c->beta2;
    h->eps = c->eps;
    h->tail_fvu = t->tail_fvu;
    h->tail_auxk = t->tail_auxk;
    h->tail_l0 = t->tail_l0;
    h->d = c->d;
    h->n_latents = c->n_latents;
    h->k = c->k;
    h->batch = c->batch;
    h->k_aux = cfg_k_aux(c);
    h->bdec_init = c->bdec_init;
    h->init_tokens = c->init_tokens;
    h->geomedian_iters = c->geomedian_iters;
    h->nranks = t->size;
    h->curve_bins = c->curve_bins;
}

static rs_err write_all(int fd, const void *buf, size_t n, const char *path, uint64_t *hash) {
    const char *p = buf;
    *hash = rs_hash64(*hash, buf, n);
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) RS_FAIL(RS_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return RS_OK;
}

static rs_err ckpt_write_file(const rs_sae_trainer *t, const char *path) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) RS_FAIL(RS_ERR_INVAL, "checkpoint path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    ckpt_header h;
    header_fill(&h, t);
    uint64_t hash = RS_HASH64_INIT;
    size_t np = t->sae->n_params;
    rs_err err = RS_OK;
    RS_TRY_GOTO(write_all(fd, &h, sizeof h, tmp, &hash), fail);
    RS_TRY_GOTO(write_all(fd, t->sae->slab, np * sizeof(float), tmp, &hash), fail);
    RS_TRY_GOTO(write_all(fd, t->m_slab, np * sizeof(float), tmp, &hash), fail);
    RS_TRY_GOTO(write_all(fd, t->v_slab, np * sizeof(float), tmp, &hash), fail);
    RS_TRY_GOTO(write_all(fd, t->since_fired, (size_t)t->sae->n_latents * sizeof(int64_t), tmp, &hash), fail);
    if (t->cfg.curve_bins > 0)
        RS_TRY_GOTO(write_all(fd, t->curve_sum, (size_t)t->cfg.curve_bins * sizeof(double), tmp, &hash), fail);
    uint64_t sum = hash, dummy = 0;
    RS_TRY_GOTO(write_all(fd, &sum, sizeof sum, tmp, &dummy), fail);
    if (fsync(fd)) RS_FAIL_GOTO(fail, RS_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd)) {
        fd = -1;
        RS_FAIL_GOTO(fail, RS_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    }
    fd = -1;
    if (rename(tmp, path)) RS_FAIL_GOTO(fail, RS_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    /* make the rename durable */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return RS_OK;
fail:
    if (fd >= 0) close(fd);
    unlink(tmp);
    return err;
}

rs_err rs_sae_ckpt_save(const rs_sae_trainer *t, const char *path) {
    rs_err err = t->rank == 0 ? ckpt_write_file(t, path) : RS_OK;
    if (t->size > 1) RS_AGREE(err, t->comm, "writing the SAE checkpoint");
    RS_TRY(err);
    return RS_OK;
}

#define CHECK_FIELD(fmt, name, have, want)                                                                   \
    do {                                                                                                     \
        if ((have) != (want))                                                                                \
            RS_FAIL_GOTO(done, RS_ERR_CONFIG, "checkpoint %s was written with " name " = " fmt                \
                         ", this run has " name " = " fmt "; use the configuration it was written with, or "  \
                         "delete it to start over", path, have, want);                                         \
    } while (0)

static rs_err ckpt_read_file(rs_sae_trainer *t, const char *path) {
    rs_err err = RS_OK;
    FILE *f = fopen(path, "rb");
    if (!f) RS_FAIL(RS_ERR_IO, "%s: cannot open checkpoint: %s", path, strerror(errno));
    ckpt_header h, want;
    header_fill(&want, t);
    size_t np = t->sae->n_params, n = (size_t)t->sae->n_latents;
    float *buf = NULL;
    int64_t *fired = NULL;
    if (fread(&h, sizeof h, 1, f) != 1) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: truncated checkpoint header", path);
    if (memcmp(h.magic, CKPT_MAGIC, 8)) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: not an SAE checkpoint (bad magic)", path);
    if (h.version != CKPT_VERSION)
        RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: checkpoint version %llu, this build reads version %u", path,
                     (unsigned long long)h.version, CKPT_VERSION);
    CHECK_FIELD("%d", "d", h.d, want.d);
    CHECK_FIELD("%d", "n_latents", h.n_latents, want.n_latents);
    CHECK_FIELD("%d", "k", h.k, want.k);
    CHECK_FIELD("%d", "batch", h.batch, want.batch);
    CHECK_FIELD("%lld", "steps", (long long)h.steps, (long long)want.steps);
    CHECK_FIELD("%lld", "warmup_steps", (long long)h.warmup, (long long)want.warmup);
    CHECK_FIELD("%lld", "dead_tokens", (long long)h.dead_tokens, (long long)want.dead_tokens);
    CHECK_FIELD("%d", "k_aux", h.k_aux, want.k_aux);
    CHECK_FIELD("%d", "bdec_init", h.bdec_init, want.bdec_init);
    CHECK_FIELD("%d", "init_tokens", h.init_tokens, want.init_tokens);
    CHECK_FIELD("%d", "geomedian_iters", h.geomedian_iters, want.geomedian_iters);
    CHECK_FIELD("%d", "curve_bins", h.curve_bins, want.curve_bins);
    CHECK_FIELD("%g", "lr", h.lr, want.lr);
    CHECK_FIELD("%g", "decay_frac", h.decay_frac, want.decay_frac);
    CHECK_FIELD("%g", "alpha_aux", h.alpha_aux, want.alpha_aux);
    CHECK_FIELD("%g", "beta1", h.beta1, want.beta1);
    CHECK_FIELD("%g", "beta2", h.beta2, want.beta2);
    CHECK_FIELD("%g", "eps", h.eps, want.eps);
    CHECK_FIELD("%llu", "seed", (unsigned long long)h.seed, (unsigned long long)want.seed);
    CHECK_FIELD("%llu", "n_params", (unsigned long long)h.n_params, (unsigned long long)want.n_params);
    if (h.config_hash != want.config_hash)
        RS_FAIL_GOTO(done, RS_ERR_CONFIG, "checkpoint %s: configuration hash differs; delete it to start over", path);
    if (h.step < 0 || h.step > h.steps || h.cursor != h.step * (int64_t)h.batch)
        RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: inconsistent step %lld / cursor %lld", path, (long long)h.step,
                     (long long)h.cursor);
    buf = malloc(3 * np * sizeof(float));
    fired = malloc(n * sizeof(int64_t));
    if (!buf || !fired) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory reading checkpoint %s", path);
    uint64_t sum = 0, hash = rs_hash64(RS_HASH64_INIT, &h, sizeof h);
    size_t nc = (size_t)h.curve_bins;
    double curve[RS_SAE_MAX_CURVE_BINS];
    if (fread(buf, sizeof(float), 3 * np, f) != 3 * np || fread(fired, sizeof(int64_t), n, f) != n ||
        fread(curve, sizeof(double), nc, f) != nc || fread(&sum, sizeof sum, 1, f) != 1)
        RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: truncated checkpoint", path);
    if (fgetc(f) != EOF) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: trailing bytes after the checksum", path);
    hash = rs_hash64(hash, buf, 3 * np * sizeof(float));
    hash = rs_hash64(hash, fired, n * sizeof(int64_t));
    if (nc) hash = rs_hash64(hash, curve, nc * sizeof(double));
    if (hash != sum) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: checksum mismatch (corrupt checkpoint)", path);
    if (h.nranks != t->size)
        RS_WARN("checkpoint %s was written by %d rank(s), resuming on %d: the result will equal an uninterrupted "
                "run only within floating-point tolerance", path, h.nranks, t->size);
    memcpy(t->sae->slab, buf, np * sizeof(float));
    memcpy(t->m_slab, buf + np, np * sizeof(float));
    memcpy(t->v_slab, buf + 2 * np, np * sizeof(float));
    memcpy(t->since_fired, fired, n * sizeof(int64_t));
    memcpy(t->rng, h.rng, sizeof t->rng);
    t->step = h.step;
    t->tail_fvu = h.tail_fvu;
    t->tail_auxk = h.tail_auxk;
    t->tail_l0 = h.tail_l0;
    t->tail_n = h.tail_n;
    memcpy(t->curve_sum, curve, nc * sizeof(double));
done:
    fclose(f);
    free(buf);
    free(fired);
    return err;
}

rs_err rs_sae_ckpt_load(rs_sae_trainer *t, const char *path) {
    rs_err err = ckpt_read_file(t, path);
    rs_bf16_mark_dirty(t->bf16);
    if (t->size > 1) RS_AGREE(err, t->comm, "loading the SAE checkpoint");
    RS_TRY(err);
    return RS_OK;
}

/* ============================== training loop ============================== */

static int64_t tail_window(const rs_sae_config *c) {
    int64_t w = c->steps / 10;
    if (w > 50) w = 50;
    return w < 1 ? 1 : w;
}

rs_err rs_sae_train(rs_sae *sae, rs_sae_metrics *out, const rs_sae_config *cfg, rs_sae_source src, MPI_Comm comm) {
    memset(out, 0, sizeof *out);
    out->resumed_from = -1;
    rs_sae_trainer t;
    RS_TRY(rs_sae_trainer_init(&t, sae, cfg, comm));
    rs_err err = RS_OK;
    int have = 0;
    if (cfg->ckpt_path && t.rank == 0) have = access(cfg->ckpt_path, F_OK) == 0;
    if (t.size > 1) MPI_Bcast(&have, 1, MPI_INT, 0, comm);
    if (have) {
        err = rs_sae_ckpt_load(&t, cfg->ckpt_path);
        if (err == RS_ERR_FORMAT) { /* damaged (truncated, flipped bytes): set aside, train from the start */
            char why[1024], aside[4200];
            snprintf(why, sizeof why, "%s", rs_err_msg());
            snprintf(aside, sizeof aside, "%s.damaged", cfg->ckpt_path);
            if (t.rank == 0 && rename(cfg->ckpt_path, aside)) unlink(cfg->ckpt_path);
            RS_WARN("SAE checkpoint not usable (%s): moved to %s; this SAE trains from the start", why, aside);
            rs_err_clear();
            err = RS_OK;
            have = 0;
        }
        RS_TRY_GOTO(err, done);
    }
    if (have) {
        out->resumed_from = (int)t.step;
        RS_INFO("SAE: resumed from %s at step %lld/%lld", cfg->ckpt_path, (long long)t.step, (long long)cfg->steps);
    } else {
        RS_TRY_GOTO(rs_sae_trainer_init_params(&t, src), done);
    }
    RS_INFO("SAE: d=%d n_latents=%d k=%d batch=%d steps=%lld lr=%.3g warmup=%lld ranks=%d", cfg->d, cfg->n_latents,
            cfg->k, cfg->batch, (long long)cfg->steps, rs_sae_config_lr(cfg), (long long)cfg_warmup(cfg), t.size);
    int64_t tail = tail_window(cfg), step0 = t.step;
    rs_progress prog;
    rs_progress_init(&prog, "SAE train", (double)(cfg->steps - step0) * cfg->batch, "tok", t.rank == 0);
    double t_start = rs_now(), t_last_log = t_start;
    rs_sae_step_stats st = {0};
    int64_t last_saved = -1;
    while (t.step < cfg->steps) {
        if (t.step == cfg->steps / 2) rs_test_hold("train", cfg->stop); /* halfway (RESAE_TEST_HOLD) */
        RS_TRY_GOTO(rs_sae_trainer_step(&t, &st, src), done);
        if (t.step > cfg->steps - tail) {
            t.tail_fvu += st.fvu;
            t.tail_auxk += st.auxk;
            t.tail_l0 += st.l0;
            t.tail_n++;
        }
        if (cfg->curve_bins > 0) t.curve_sum[rs_sae_curve_bin(cfg, t.step - 1)] += st.fvu;
        double now = rs_now();
        int log_now = (cfg->log_every > 0 && t.step % cfg->log_every == 0) || now - t_last_log >= prog.interval ||
                      t.step == cfg->steps;
        if (log_now && t.rank == 0) {
            t_last_log = now;
            double done_tok = (double)(t.step - step0) * cfg->batch, el = now - t_start;
            double rate = el > 0 ? done_tok / el : 0;
            char eta[32];
            rs_fmt_duration(eta, sizeof eta, rate > 0 ? (double)(cfg->steps - t.step) * cfg->batch / rate : -1);
            RS_INFO("SAE step %lld/%lld: loss %.5f fvu %.5f auxk %.4f L0 %.1f dead %.4f lr %.3g, %.0f tok/s, ETA %s",
                    (long long)t.step, (long long)cfg->steps, st.loss, st.fvu, st.auxk, st.l0, st.dead_frac,
                    rs_sae_lr_at(cfg, t.step - 1), rate, eta);
        }
        prog.done = (double)(t.step - step0) * cfg->batch;
        int stop = t.fired[sae->n_latents] != 0;
        if (cfg->ckpt_path && (stop || (cfg->ckpt_every > 0 && t.step % cfg->ckpt_every == 0) || t.step == cfg->steps)) {
            RS_TRY_GOTO(rs_sae_ckpt_save(&t, cfg->ckpt_path), done);
            last_saved = t.step;
        }
        if (stop && t.step < cfg->steps) {
            RS_INFO("SAE: stop requested; checkpoint at step %lld", (long long)t.step);
            err = RS_ERR(RS_ERR_INTERRUPTED, "SAE training stopped at step %lld of %lld (checkpointed: %s)",
                         (long long)t.step, (long long)cfg->steps, last_saved == t.step ? "yes" : "no");
            goto done;
        }
    }
    rs_progress_finish(&prog);
    out->seconds = rs_now() - t_start;
    out->steps = t.step;
    out->tokens = t.step * (int64_t)cfg->batch;
    out->tokens_per_s = out->seconds > 0 ? (double)(t.step - step0) * cfg->batch / out->seconds : 0;
    out->tail_steps = t.tail_n;
    if (t.tail_n > 0) {
        out->fvu = t.tail_fvu / t.tail_n;
        out->auxk = t.tail_auxk / t.tail_n;
        out->l0 = t.tail_l0 / t.tail_n;
    }
    out->last_fvu = st.fvu;
    curve_finish(out, &t);
    {
        int nd = 0;
        for (int j = 0; j < sae->n_latents; j++) nd += t.since_fired[j] >= cfg->dead_tokens;
        out->dead_frac = (double)nd / sae->n_latents;
    }
    RS_INFO("SAE done: fvu %.5f (last %d steps) L0 %.1f dead %.4f, %lld tokens, %.0f tok/s", out->fvu,
            (int)out->tail_steps, out->l0, out->dead_frac, (long long)out->tokens, out->tokens_per_s);
done:
    rs_sae_trainer_free(&t);
    return err;
}
