/* The training stage (stage_train.h): the SAE data stream and the mapping of the run to the trainer. */
#define _GNU_SOURCE
#include "resae/stage_train.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resae/actstore.h"
#include "resae/affine.h"
#include "resae/grid.h"
#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/rng.h"
#include "resae/sae.h"
#include "resae/splits.h"
#include "resae/taskfile.h"
#include "resae/tasks.h"
#include "resae/util.h"

/* =====================================================================================================
 * The data stream
 * ===================================================================================================== */

/* Fisher-Yates permutation of 0..n-1 from a seed. */
static void permute(int32_t *perm, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) perm[i] = (int32_t)i;
    uint64_t s = seed;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(rs_splitmix64_next(&s) % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* The shuffled, scaled training stream of one SAE. The train split's rows are cut into chunks of
 * chunk_rows (a trailing partial chunk is not used); an epoch visits every chunk once in a seeded
 * order, a buffer of shuffle_buffer tokens (whole chunks) at a time, and the rows of each buffer in
 * a seeded order. Stream index i is row (buffer, position) of epoch i / (chunks * chunk_rows), so
 * any index maps to the same row on every rank and after every restart. Inputs are u (raw: h_l;
 * resae: h_l - A h_pred - c) times the scale s. */
typedef struct sae_stream {
    const rs_actstore *st;
    const rs_affine_map *map; /* resae: the map pred -> layer; NULL for raw */
    int layer, pred, d, C;
    float scale;
    int64_t n_chunks, chunks_per_buf, epoch_rows;
    uint64_t seed;
    int64_t cur_epoch, cur_buf, buf_rows;
    double t_read, t_resid; /* seconds reading the store and computing residuals */
    int32_t *chunk_perm;    // (n_chunks)
    int32_t *row_perm;      // (chunks_per_buf * C)
    float *buf;             // (chunks_per_buf * C, d)
    float *xbuf;            // (chunks_per_buf * C, d) predecessor rows (resae)
} sae_stream;

/* Chunks c0..c1 of buffer b into s->buf: u = h (raw) or h - A h_pred - c (resae). */
static rs_err stream_fill(sae_stream *s, int64_t c0, int64_t c1) {
    size_t d = (size_t)s->d;
    for (int64_t c = c0; c < c1; c++) {
        int64_t row0 = (int64_t)s->chunk_perm[c] * s->C;
        float *dst = s->buf + (size_t)(c - c0) * (size_t)s->C * d;
        double t0 = rs_now();
        RS_TRY(rs_actstore_read_rows(s->st, dst, RS_SPLIT_TRAIN, s->layer, row0, s->C));
        if (s->map) {
            float *x = s->xbuf + (size_t)(c - c0) * (size_t)s->C * d;
            RS_TRY(rs_actstore_read_rows(s->st, x, RS_SPLIT_TRAIN, s->pred, row0, s->C));
            double t1 = rs_now();
            s->t_read += t1 - t0;
            RS_TRY(rs_affine_residual(dst, s->map, x, dst, s->C));
            s->t_resid += rs_now() - t1;
        } else {
            s->t_read += rs_now() - t0;
        }
    }
    return RS_OK;
}

static rs_err stream_load(sae_stream *s, int64_t epoch, int64_t b) {
    if (epoch != s->cur_epoch) {
        uint64_t x = s->seed ^ (0x5851f42d4c957f2dULL * (uint64_t)(epoch + 1));
        permute(s->chunk_perm, s->n_chunks, rs_splitmix64_next(&x));
        s->cur_epoch = epoch;
        s->cur_buf = -1;
    }
    int64_t c0 = b * s->chunks_per_buf, c1 = c0 + s->chunks_per_buf;
    if (c1 > s->n_chunks) c1 = s->n_chunks;
    RS_TRY(stream_fill(s, c0, c1));
    s->buf_rows = (c1 - c0) * s->C;
    for (size_t i = 0; i < (size_t)s->buf_rows * (size_t)s->d; i++) s->buf[i] *= s->scale;
    uint64_t x = s->seed ^ (0x2545f4914f6cdd1dULL * (uint64_t)(epoch + 1)) ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(b + 1));
    permute(s->row_perm, s->buf_rows, rs_splitmix64_next(&x));
    s->cur_buf = b;
    return RS_OK;
}

static rs_err stream_read(void *ctx, float *rows, int64_t first, int n) {
    sae_stream *s = ctx;
    size_t d = (size_t)s->d;
    int64_t buf_span = s->chunks_per_buf * s->C;
    for (int i = 0; i < n; i++) {
        int64_t idx = first + i;
        int64_t epoch = idx / s->epoch_rows, j = idx % s->epoch_rows;
        int64_t b = j / buf_span, off = j % buf_span;
        if (epoch != s->cur_epoch || b != s->cur_buf) RS_TRY(stream_load(s, epoch, b));
        memcpy(rows + (size_t)i * d, s->buf + (size_t)s->row_perm[off] * d, sizeof(float) * d);
    }
    return RS_OK;
}

static void stream_free(sae_stream *s) {
    free(s->chunk_perm);
    free(s->row_perm);
    free(s->buf);
    free(s->xbuf);
    s->chunk_perm = s->row_perm = NULL;
    s->buf = s->xbuf = NULL;
}

static rs_err stream_init(sae_stream *s, const rs_run *run, const rs_actstore *st, const rs_grid_sae *g,
                          const rs_affine_map *map, double scale) {
    memset(s, 0, sizeof *s);
    s->st = st;
    s->map = map;
    s->layer = g->layer;
    s->pred = g->pred;
    s->d = run->mc.d_model;
    s->C = (int)run->cfg.store.chunk_rows;
    s->scale = (float)scale;
    int64_t rows = rs_actstore_n_rows(st, RS_SPLIT_TRAIN);
    s->n_chunks = rows / s->C;
    RS_CHECK(s->n_chunks >= 1, RS_ERR_CONFIG,
             "%s: the train split has %" PRId64 " tokens, fewer than one chunk of store.chunk_rows = %d", run->cfg.path,
             rows, s->C);
    s->chunks_per_buf = run->cfg.train.shuffle_buffer / s->C;
    if (s->chunks_per_buf < 1) s->chunks_per_buf = 1;
    if (s->chunks_per_buf > s->n_chunks) s->chunks_per_buf = s->n_chunks;
    s->epoch_rows = s->n_chunks * s->C;
    s->seed = rs_grid_sae_seed(g, &run->cfg) ^ 0x5bd1e9955bd1e995ULL; /* data order: a stream apart from the init */
    s->cur_epoch = s->cur_buf = -1;
    size_t cap = (size_t)s->chunks_per_buf * (size_t)s->C;
    s->chunk_perm = malloc(sizeof(int32_t) * (size_t)s->n_chunks);
    s->row_perm = malloc(sizeof(int32_t) * cap);
    s->buf = malloc(sizeof(float) * cap * (size_t)s->d);
    if (map) s->xbuf = malloc(sizeof(float) * cap * (size_t)s->d);
    if (!s->chunk_perm || !s->row_perm || !s->buf || (map && !s->xbuf)) {
        stream_free(s);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for the SAE shuffle buffer (%zu rows of %d)", cap, s->d);
    }
    return RS_OK;
}

/* =====================================================================================================
 * Training one SAE
 * ===================================================================================================== */

/* Input scale of an SAE: raw from the store's calibration E||h||^2; resae from the affine fit. */
static rs_err sae_scale(double *scale, rs_affine_map *map, const rs_run *run, const rs_actstore *st,
                        const rs_grid_sae *g) {
    if (g->kind == RS_VARIANT_RAW) {
        double msq = 0;
        RS_TRY(rs_actstore_stats(st, NULL, &msq, RS_SPLIT_CALIB, g->layer));
        RS_CHECK(msq > 0, RS_ERR_NUMERIC, "layer %d: the calibration activations have mean squared norm %g", g->layer,
                 msq);
        *scale = sqrt((double)run->mc.d_model / msq);
        return RS_OK;
    }
    char path[4096];
    RS_TRY(rs_tasks_affine_path(path, sizeof path, run, g->pred, g->layer));
    RS_TRY(rs_taskfile_read_affine(map, path, run->mc.d_model));
    RS_CHECK(map->s > 0, RS_ERR_NUMERIC, "%s: residual scale s is %g", path, map->s);
    *scale = map->s;
    return RS_OK;
}

/* Train on the stream s (set up) and write the task file; the checkpoint goes once it is written. */
static rs_err train(const rs_task_ctx *c, sae_stream *s, const rs_grid_sae *g, double scale, const char *path) {
    const rs_run *run = c->run;
    rs_sae_config sc;
    rs_grid_sae_config(&sc, &run->grid, &run->cfg, g); /* the config layer maps the train section */
    sc.stop = run->opts.stop;
    char ckpt[4096];
    RS_TRY(rs_tasks_ckpt_path(ckpt, sizeof ckpt, run, g));
    sc.ckpt_path = ckpt;
    rs_sae sae;
    memset(&sae, 0, sizeof sae);
    rs_err err = RS_OK;
    RS_TRY_GOTO(rs_agree(rs_sae_init(&sae, run->mc.d_model, (int)run->grid.n_latents, g->k), c->comm, "rs_sae_init"),
                done);
    rs_sae_metrics mt;
    memset(&mt, 0, sizeof mt);
    rs_sae_source src = {stream_read, s};
    RS_TRY_GOTO(rs_sae_train(&sae, &mt, &sc, src, c->comm), done);
    err = c->rank == 0 ? rs_taskfile_write_sae(path, &sae, g, &mt, &sc, scale) : RS_OK;
    if (!err && c->rank == 0) unlink(ckpt);
    RS_TRY_GOTO(rs_agree(err, c->comm, "writing the SAE task file"), done);
    char name[128];
    rs_tasks_sae_name(name, sizeof name, g);
    RS_INFO("sae %s: FVU %.4f, L0 %.2f, dead %.3f, %.0f tokens/s; input path on rank 0: store reads %.2fs, "
            "residuals %.2fs of %.2fs training", name, mt.fvu, mt.l0, mt.dead_frac, mt.tokens_per_s, s->t_read,
            s->t_resid, mt.seconds);
    if (mt.curve_bins > 0)
        RS_INFO("sae %s: FVU %.4f at 80%% of the steps, %.4f at the end: gain over the last 20%% %.2f%%", name,
                mt.fvu_curve[mt.curve_bins / 5 * 4 - 1], mt.fvu_curve[mt.curve_bins - 1],
                100 * mt.fvu_last20_gain);
done:
    rs_sae_free(&sae);
    return err;
}

static rs_err train_on(const rs_task_ctx *c, const rs_actstore *st, const rs_grid_sae *g, const char *path) {
    rs_affine_map map;
    memset(&map, 0, sizeof map);
    double scale = 1.0;
    sae_stream s;
    memset(&s, 0, sizeof s);
    rs_err err = rs_agree(sae_scale(&scale, &map, c->run, st, g), c->comm, "the SAE input scale");
    if (!err)
        err = rs_agree(stream_init(&s, c->run, st, g, g->kind == RS_VARIANT_RESAE ? &map : NULL, scale), c->comm,
                       "the SAE data stream");
    if (!err) err = train(c, &s, g, scale, path);
    stream_free(&s);
    rs_affine_map_free(&map);
    return err;
}

rs_err rs_stage_train_run(const rs_task_ctx *c, const rs_grid_sae *g, const char *path) {
    rs_actstore st;
    rs_err err = RS_OK;
    RS_TRY_GOTO(rs_taskfile_open_store(&st, c), done);
    err = train_on(c, &st, g, path);
done:
    rs_actstore_close(&st);
    return err;
}
