/* The affine stage (stage_affine.h): the store rows of a pair streamed into rs_affine_fit. */
#define _GNU_SOURCE
#include "resae/stage_affine.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "resae/actstore.h"
#include "resae/affine.h"
#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/splits.h"
#include "resae/taskfile.h"
#include "resae/tasks.h"

/* This rank's share of one split's rows of layers la (x) and lb (y), in chunks. */
typedef struct pair_source {
    const rs_actstore *st;
    int split, la, lb;
    int64_t lo, hi, row;
    int chunk;
    float *x, *y; // (chunk, d)
} pair_source;

static rs_err pair_next(void *vctx, const float **x, const float **y, int64_t *n) {
    pair_source *s = vctx;
    int64_t m = s->hi - s->row;
    if (m > s->chunk) m = s->chunk;
    if (m <= 0) {
        *n = 0;
        return RS_OK;
    }
    RS_TRY(rs_actstore_read_rows(s->st, s->x, s->split, s->la, s->row, m));
    RS_TRY(rs_actstore_read_rows(s->st, s->y, s->split, s->lb, s->row, m));
    s->row += m;
    *x = s->x;
    *y = s->y;
    *n = m;
    return RS_OK;
}

static rs_err pair_rewind(void *vctx) {
    pair_source *s = vctx;
    s->row = s->lo;
    return RS_OK;
}

static rs_err pair_source_init(pair_source *s, const rs_task_ctx *c, const rs_actstore *st, int split, int a, int b) {
    memset(s, 0, sizeof *s);
    s->st = st;
    s->split = split;
    s->la = a;
    s->lb = b;
    rs_range_share(&s->lo, &s->hi, rs_actstore_n_rows(st, split), c->rank, c->size);
    s->row = s->lo;
    s->chunk = (int)c->run->cfg.store.chunk_rows;
    size_t d = (size_t)rs_actstore_d(st);
    s->x = malloc(sizeof(float) * (size_t)s->chunk * d);
    s->y = malloc(sizeof(float) * (size_t)s->chunk * d);
    if (!s->x || !s->y) {
        free(s->x);
        free(s->y);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for affine read buffers");
    }
    return RS_OK;
}

static void pair_source_free(pair_source *s) {
    free(s->x);
    free(s->y);
}

static void affine_opts(rs_affine_opts *o, const rs_run *run) {
    rs_affine_opts_default(o);
    o->lambda_rel = run->cfg.affine.lambda_rel;
    o->max_retries = (int)run->cfg.affine.max_retries;
    o->block = (int)run->cfg.affine.block_size;
    o->chunk_rows = (int)run->cfg.store.chunk_rows;
}

static rs_err fit(const rs_task_ctx *c, const rs_actstore *st, int a, int b, const char *path) {
    const rs_run *run = c->run;
    rs_affine_opts o;
    affine_opts(&o, run);
    int d = run->mc.d_model;
    pair_source cs, es;
    rs_affine_map m;
    memset(&m, 0, sizeof m);
    rs_err err = pair_source_init(&cs, c, st, RS_SPLIT_CALIB, a, b);
    if (!err) {
        err = pair_source_init(&es, c, st, RS_SPLIT_EVAL, a, b);
        if (err) pair_source_free(&cs);
    }
    RS_AGREE(err, c->comm, "allocating the affine read buffers");
    rs_affine_source calib = {&cs, pair_next, pair_rewind, cs.hi - cs.lo}, eval = {&es, pair_next, pair_rewind, es.hi - es.lo};
    err = rs_affine_fit(&m, &calib, d, d, &o, c->comm);
    if (!err) err = rs_affine_eval(&m, &eval, c->comm);
    pair_source_free(&cs);
    pair_source_free(&es);
    if (!err && c->rank == 0) err = rs_taskfile_write_affine(path, &m, a, b, rs_tasks_pair_hash(run, a, b));
    if (!err)
        RS_INFO("affine %d->%d: R^2 %.4f (eval), s %.4g, lambda %.3g (%d retries), %" PRId64 " calib tokens, %.2fs", a,
                b, m.r2, m.s, m.lambda_used, m.retries, m.n_tokens_calib, m.t_total);
    rs_affine_map_free(&m);
    RS_AGREE(err, c->comm, "the affine fit");
    return RS_OK;
}

rs_err rs_stage_affine_run(const rs_task_ctx *c, int a, int b, const char *path) {
    rs_actstore st;
    rs_err err = RS_OK;
    RS_TRY_GOTO(rs_taskfile_open_store(&st, c), done);
    err = fit(c, &st, a, b, path);
done:
    rs_actstore_close(&st);
    return err;
}
