/* The experiment pipeline behind `resae run` (see pipeline.h and docs/store.md). */
#define _GNU_SOURCE
#include "resae/pipeline.h"

#include <hdf5.h>
#include <inttypes.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resae/actstore.h"
#include "resae/affine.h"
#include "resae/harvest.h"
#include "resae/h5util.h"
#include "resae/log.h"
#include "resae/model.h"
#include "resae/mpi_util.h"
#include "resae/pipeline_eval.h" /* evaluation stage (pipeline_eval.c) */
#include "resae/sae.h"
#include "resae/sched.h"
#include "resae/splits.h"
#include "resae/tokens.h"
#include "resae/util.h"
#include "resae/version.h"

/* =====================================================================================================
 * Set-up
 * ===================================================================================================== */

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

rs_err rs_pipeline_init(rs_pipeline *p, const char *config_path, MPI_Comm comm) {
    memset(p, 0, sizeof *p);
    p->until = -1;
    p->comm = comm;
    MPI_Comm_rank(comm, &p->rank);
    MPI_Comm_size(comm, &p->size);
    RS_TRY(rs_config_load(&p->cfg, config_path));
    rs_err err = RS_OK;
    RS_TRY_GOTO(rs_config_load_model(&p->mc, &p->cfg), fail);
    RS_TRY_GOTO(rs_grid_build(&p->grid, &p->cfg, &p->mc), fail);
    /* the store holds every selected layer and every regression layer */
    int n = 0;
    for (int i = 0; i < p->grid.n_union_layers; i++) p->store_layers[n++] = p->grid.union_layers[i];
    for (int i = 0; i < p->cfg.layers.regression.n; i++) p->store_layers[n++] = (int)p->cfg.layers.regression.v[i];
    if (n > RS_ACTSTORE_MAX_LAYERS)
        RS_FAIL_GOTO(fail, RS_ERR_CONFIG, "%s: the experiment needs %d stored layers, more than the %d supported",
                     p->cfg.path, n, RS_ACTSTORE_MAX_LAYERS);
    qsort(p->store_layers, (size_t)n, sizeof(int), cmp_int);
    p->n_store_layers = 0;
    for (int i = 0; i < n; i++)
        if (!p->n_store_layers || p->store_layers[p->n_store_layers - 1] != p->store_layers[i])
            p->store_layers[p->n_store_layers++] = p->store_layers[i];
    return RS_OK;
fail:
    rs_pipeline_free(p);
    return err;
}

void rs_pipeline_free(rs_pipeline *p) {
    rs_grid_free(&p->grid);
    rs_config_free(&p->cfg);
    memset(p, 0, sizeof *p);
}

/* A local error turned into an agreed one: every rank returns the same failure (the failing rank
 * keeps its own message; the others say which rank failed). Collective. */
static rs_err agree(const rs_pipeline *p, rs_err local) {
    rs_err all = rs_mpi_agree(local, p->comm);
    if (all && !local)
        return rs_err_set(all, __FILE__, __LINE__, __func__, "%s", RS_PIPELINE_OTHER_RANK);
    return all;
}

static int stop_requested(const rs_pipeline *p) {
    int mine = p->stop && *p->stop, any = 0;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, p->comm);
    return any;
}

/* =====================================================================================================
 * Task files
 * ===================================================================================================== */

uint64_t rs_pipeline_pair_hash(const rs_pipeline *p, int a, int b) {
    for (int i = 0; i < p->grid.n_affine; i++)
        if (p->grid.affine[i].a == a && p->grid.affine[i].b == b) return p->grid.affine[i].hash;
    for (int i = 0; i < p->grid.n_regression; i++)
        if (p->grid.regression[i].a == a && p->grid.regression[i].b == b) return p->grid.regression[i].hash;
    return 0;
}

void rs_pipeline_affine_path(char *out, size_t n, const rs_pipeline *p, int a, int b) {
    snprintf(out, n, "%s/tasks/affine_L%d_L%d_%016" PRIx64 ".h5", p->cfg.run_dir, a, b, rs_pipeline_pair_hash(p, a, b));
}

void rs_pipeline_sae_name(char *out, size_t n, const rs_grid_sae *s) {
    if (s->kind == RS_SAE_RAW)
        snprintf(out, n, "raw_L%d_k%d_s%" PRId64, s->layer, s->k, s->seed);
    else
        snprintf(out, n, "resae_L%d_P%d_k%d_s%" PRId64, s->layer, s->pred, s->k, s->seed);
}

void rs_pipeline_sae_path(char *out, size_t n, const rs_pipeline *p, const rs_grid_sae *s) {
    char name[128];
    rs_pipeline_sae_name(name, sizeof name, s);
    snprintf(out, n, "%s/tasks/sae_%s_%016" PRIx64 ".h5", p->cfg.run_dir, name, s->hash);
}

void rs_pipeline_ckpt_path(char *out, size_t n, const rs_pipeline *p, const rs_grid_sae *s) {
    char name[128];
    rs_pipeline_sae_name(name, sizeof name, s);
    snprintf(out, n, "%s/ckpt/sae_%s_%016" PRIx64 ".ckpt", p->cfg.run_dir, name, s->hash);
}

/* Whether a task file exists, as rank 0 sees it (so every rank takes the same branch). */
static int task_done(const rs_pipeline *p, const char *path) {
    int done = p->rank == 0 ? rs_file_exists(path) : 0;
    MPI_Bcast(&done, 1, MPI_INT, 0, p->comm);
    return done;
}

/* Create path.tmp for writing (serial HDF5, one rank). */
static hid_t task_create(char *tmp, size_t n, const char *path) {
    snprintf(tmp, n, "%s.tmp", path);
    return H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
}

static rs_err task_commit(hid_t f, const char *tmp, const char *path) {
    if (H5Fclose(f) < 0) RS_FAIL(RS_ERR_IO, "%s: cannot close", tmp);
    return rs_file_commit(tmp, path);
}

/* =====================================================================================================
 * Harvest
 * ===================================================================================================== */

typedef struct harvest_ctx {
    const rs_model *model;
    rs_run_state rs;
    rs_tokens tk;
    int32_t *tok; /* (max_B, T) */
    const rs_harvest_batch *b;
    float *const *out;
} harvest_ctx;

static rs_err capture_hook(void *vctx, int layer, float *h, int B, int T, int d) {
    harvest_ctx *c = vctx;
    for (int i = 0; i < c->b->n_layers; i++)
        if (c->b->layers[i] == layer) {
            if (c->b->put) return c->b->put(c->b->put_ctx, i, h); /* packed into the store's buffer at once */
            memcpy(c->out[i], h, sizeof(float) * (size_t)B * (size_t)T * (size_t)d);
        }
    return RS_OK;
}

static rs_err harvest_produce(void *vctx, float *const *out, const rs_harvest_batch *b) {
    harvest_ctx *c = vctx;
    int T = b->T;
    /* read runs of consecutive sequence ids at once */
    for (int s = 0; s < b->n_seq;) {
        int e = s + 1;
        while (e < b->n_seq && b->seq_ids[e] == b->seq_ids[e - 1] + 1) e++;
        RS_TRY(rs_tokens_read(c->tok + (size_t)s * (size_t)T, &c->tk, b->seq_ids[s], e - s));
        s = e;
    }
    c->b = b;
    c->out = out;
    rs_forward_args a = RS_FORWARD_ARGS_INIT;
    a.tokens = c->tok;
    a.stop_layer = b->layers[b->n_layers - 1];
    a.hook = capture_hook;
    a.hook_ctx = c;
    return rs_model_forward(c->model, &c->rs, &a, b->n_seq, T);
}

static rs_err open_tokens(rs_tokens *tk, const rs_pipeline *p) {
    rs_tokens_opts o = {0};
    o.format = rs_tokens_format_parse(rs_format_names[p->cfg.data.format]);
    o.seq_len = (int)p->cfg.data.seq_len;
    o.vocab = p->mc.vocab_size;
    RS_TRY(rs_tokens_open(tk, p->cfg.data.tokens, &o));
    if (tk->seq_len > p->mc.max_positions)
        RS_FAIL(RS_ERR_CONFIG, "%s: sequences of %d tokens are longer than the model's max_position_embeddings %d; "
                "set data.seq_len", p->cfg.data.tokens, tk->seq_len, p->mc.max_positions);
    return RS_OK;
}

static rs_err build_splits(rs_splits *sp, const rs_pipeline *p, const rs_tokens *tk) {
    rs_split_config sc = {0};
    sc.seed = (uint64_t)p->cfg.data.split_seed;
    sc.budget[RS_SPLIT_CALIB] = p->cfg.data.calibration;
    sc.budget[RS_SPLIT_TRAIN] = p->cfg.data.train;
    sc.budget[RS_SPLIT_EVAL] = p->cfg.data.eval;
    sc.skip_pos0 = p->cfg.data.exclude_first_position;
    return rs_splits_build(sp, &sc, tk->n_seq, tk->seq_len, NULL);
}

static rs_err store_identity(rs_actstore_identity *id, const rs_pipeline *p, const rs_splits *sp) {
    rs_actstore_identity_init(id);
    snprintf(id->model_path, sizeof id->model_path, "%s", p->cfg.model.path);
    snprintf(id->data_path, sizeof id->data_path, "%s", p->cfg.data.tokens);
    rs_err err = RS_OK;
    uint64_t h[2] = {0, 0};
    if (p->rank == 0) {
        err = rs_harvest_hash_model_dir(&h[0], p->cfg.model.path);
        if (!err) err = rs_harvest_hash_file(&h[1], p->cfg.data.tokens);
    }
    RS_TRY(agree(p, err));
    MPI_Bcast(h, 2, MPI_UINT64_T, 0, p->comm);
    id->model_hash = h[0];
    id->data_hash = h[1];
    rs_actstore_identity_set_splits(id, sp);
    id->n_layers = p->n_store_layers;
    memcpy(id->layers, p->store_layers, sizeof(int) * (size_t)p->n_store_layers);
    id->d = p->mc.d_model;
    id->dtype = p->cfg.store.dtype;
    id->batch_seqs = (int)p->cfg.eval.batch_sequences;
    id->chunk_rows = (int)p->cfg.store.chunk_rows;
    return rs_actstore_identity_check(id);
}

static void store_path(char *out, size_t n, const rs_pipeline *p) {
    snprintf(out, n, "%s/%s", p->cfg.run_dir, RS_ACTSTORE_FILE);
}

rs_err rs_pipeline_harvest(rs_pipeline *p) {
    harvest_ctx c;
    memset(&c, 0, sizeof c);
    rs_splits sp;
    memset(&sp, 0, sizeof sp);
    rs_model model;
    memset(&model, 0, sizeof model);
    rs_err err = open_tokens(&c.tk, p);
    if (!err) err = build_splits(&sp, p, &c.tk);
    RS_TRY_GOTO(agree(p, err), done);

    /* a complete store is reused without loading the model */
    char path[4096];
    store_path(path, sizeof path, p);
    char journal[4096];
    snprintf(journal, sizeof journal, "%s/%s", p->cfg.run_dir, RS_HARVEST_JOURNAL);
    rs_harvest_config hc;
    memset(&hc, 0, sizeof hc);
    hc.run_dir = p->cfg.run_dir;
    RS_TRY_GOTO(store_identity(&hc.id, p, &sp), done);
    hc.batches_per_round = 1;
    hc.flush_seconds = 30.0; /* a kill loses at most this much work; fsyncs block the ranks */
    hc.force = p->force;
    hc.stop = p->stop;

    err = rs_model_load(&model, p->cfg.model.path);
    if (!err) err = rs_run_state_init(&c.rs, &model, hc.id.batch_seqs, c.tk.seq_len);
    if (!err) {
        c.tok = malloc(sizeof(int32_t) * (size_t)hc.id.batch_seqs * (size_t)c.tk.seq_len);
        if (!c.tok) err = rs_err_set(RS_ERR_NOMEM, __FILE__, __LINE__, __func__, "out of memory for token batch");
    }
    RS_TRY_GOTO(agree(p, err), done);
    c.model = &model;
    RS_INFO("harvest: %d layers x %" PRId64 " + %" PRId64 " + %" PRId64 " tokens (calib + train + eval) into %s",
            hc.id.n_layers, sp.split[RS_SPLIT_CALIB].n_tokens, sp.split[RS_SPLIT_TRAIN].n_tokens,
            sp.split[RS_SPLIT_EVAL].n_tokens, path);
    rs_harvest_stats hs;
    RS_TRY_GOTO(rs_harvest_run(&hs, &hc, &sp, harvest_produce, &c, p->comm), done);
done:
    free(c.tok);
    rs_run_state_free(&c.rs);
    rs_model_free(&model);
    rs_splits_free(&sp);
    rs_tokens_close(&c.tk);
    return err;
}

/* =====================================================================================================
 * Affine fits
 * ===================================================================================================== */

/* This rank's contiguous share [lo, hi) of n rows. */
static void my_share(int64_t *lo, int64_t *hi, int64_t n, int rank, int size) {
    *lo = n * rank / size;
    *hi = n * (rank + 1) / size;
}

typedef struct pair_source {
    const rs_actstore *st;
    int split, la, lb;
    int64_t lo, hi, row;
    int chunk;
    float *x, *y; /* (chunk, d) */
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

static rs_err pair_source_init(pair_source *s, const rs_pipeline *p, const rs_actstore *st, int split, int a, int b) {
    memset(s, 0, sizeof *s);
    s->st = st;
    s->split = split;
    s->la = a;
    s->lb = b;
    my_share(&s->lo, &s->hi, rs_actstore_n_rows(st, split), p->rank, p->size);
    s->row = s->lo;
    s->chunk = (int)p->cfg.store.chunk_rows;
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

static rs_err write_affine(const char *path, const rs_affine_map *m, int a, int b, uint64_t hash) {
    char tmp[4200];
    hid_t f = task_create(tmp, sizeof tmp, path);
    if (f < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create", tmp);
    rs_err err = RS_OK;
    hsize_t dA[2] = {(hsize_t)m->dy, (hsize_t)m->dx}, dy = (hsize_t)m->dy, dx = (hsize_t)m->dx;
    RS_TRY_GOTO(rs_h5_write(f, "A", H5T_NATIVE_DOUBLE, 2, dA, m->A), fail);
    RS_TRY_GOTO(rs_h5_write(f, "c", H5T_NATIVE_DOUBLE, 1, &dy, m->c), fail);
    RS_TRY_GOTO(rs_h5_write(f, "mu_x", H5T_NATIVE_DOUBLE, 1, &dx, m->mu_x), fail);
    RS_TRY_GOTO(rs_h5_write(f, "mu_y", H5T_NATIVE_DOUBLE, 1, &dy, m->mu_y), fail);
    RS_TRY_GOTO(rs_h5_attr_str(f, "task", "affine"), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "layer_a", a), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "layer_b", b), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "hash", (int64_t)hash), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "lambda_rel", m->lambda_rel), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "lambda_used", m->lambda_used), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "retries", m->retries), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "trace_cxx", m->trace_cxx), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "solve_resid", m->solve_resid), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "n_tokens_calib", m->n_tokens_calib), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "r2", m->r2), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "n_tokens_eval", m->n_tokens_eval), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "s", m->s), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "grid_rows", m->nprow), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "grid_cols", m->npcol), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "block", m->block), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "seconds", m->t_total), fail);
    RS_TRY_GOTO(rs_h5_attr_str(f, "definition", "METHOD.md 2: centered ridge normal equations, lambda = "
                                                "lambda_rel*trace(C_xx)/d; R^2 on eval; s = sqrt(d/E_calib||y-Ax-c||^2)"),
                fail);
    return task_commit(f, tmp, path);
fail:
    H5Fclose(f);
    return err;
}

/* Read an affine task file into a map (A, means, c and the float copies; s and R^2). */
static rs_err read_affine(rs_affine_map *m, const char *path, int d) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open affine result", path);
    rs_err err = RS_OK;
    size_t nd = (size_t)d;
    double *buf = malloc(sizeof(double) * (nd * nd + 2 * nd));
    if (!buf) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory reading %s", path);
    RS_TRY_GOTO(rs_h5_read(f, "A", H5T_NATIVE_DOUBLE, buf, nd * nd, path), done);
    RS_TRY_GOTO(rs_h5_read(f, "mu_x", H5T_NATIVE_DOUBLE, buf + nd * nd, nd, path), done);
    RS_TRY_GOTO(rs_h5_read(f, "mu_y", H5T_NATIVE_DOUBLE, buf + nd * nd + nd, nd, path), done);
    RS_TRY_GOTO(rs_affine_map_set(m, d, d, buf, buf + nd * nd, buf + nd * nd + nd), done);
    RS_TRY_GOTO(rs_h5_attr_get_f64(&m->s, f, "s", path), done);
    RS_TRY_GOTO(rs_h5_attr_get_f64(&m->r2, f, "r2", path), done);
done:
    free(buf);
    H5Fclose(f);
    return err;
}

static void open_store_path(char *out, size_t n, const rs_pipeline *p) { store_path(out, n, p); }

rs_err rs_pipeline_load_affine(rs_affine_map *m, const rs_pipeline *p, int a, int b) {
    char path[4096];
    rs_pipeline_affine_path(path, sizeof path, p, a, b);
    if (!rs_file_exists(path)) RS_FAIL(RS_ERR_INVAL, "affine fit %d->%d is not done yet (%s missing)", a, b, path);
    return read_affine(m, path, p->mc.d_model);
}

/* Every affine fit the experiment needs: consecutive pairs, then regression pairs not among them. */
static int collect_pairs(int (*pairs)[2], int max, const rs_pipeline *p) {
    int n = 0;
    for (int i = 0; i < p->grid.n_affine && n < max; i++) {
        pairs[n][0] = p->grid.affine[i].a;
        pairs[n][1] = p->grid.affine[i].b;
        n++;
    }
    for (int i = 0; i < p->grid.n_regression && n < max; i++) {
        int a = p->grid.regression[i].a, b = p->grid.regression[i].b, dup = 0;
        for (int j = 0; j < n; j++) dup |= pairs[j][0] == a && pairs[j][1] == b;
        if (!dup) {
            pairs[n][0] = a;
            pairs[n][1] = b;
            n++;
        }
    }
    return n;
}

static void affine_opts(rs_affine_opts *o, const rs_pipeline *p) {
    rs_affine_opts_default(o);
    o->lambda_rel = p->cfg.affine.lambda_rel;
    o->max_retries = (int)p->cfg.affine.max_retries;
    o->block = (int)p->cfg.affine.block_size;
    o->chunk_rows = (int)p->cfg.store.chunk_rows;
}

/* Fit the map a -> b on p->comm and write its task file (rank 0 of p->comm). Collective. */
static rs_err affine_one(const rs_pipeline *p, const rs_actstore *st, int a, int b, const char *path) {
    rs_affine_opts o;
    affine_opts(&o, p);
    int d = p->mc.d_model;
    rs_err err = RS_OK;
    pair_source cs, es;
    rs_affine_map m;
    memset(&m, 0, sizeof m);
    err = pair_source_init(&cs, p, st, RS_SPLIT_CALIB, a, b);
    if (!err) {
        err = pair_source_init(&es, p, st, RS_SPLIT_EVAL, a, b);
        if (err) pair_source_free(&cs);
    }
    RS_TRY(agree(p, err));
    rs_affine_source calib = {&cs, pair_next, pair_rewind, cs.hi - cs.lo}, eval = {&es, pair_next, pair_rewind, es.hi - es.lo};
    err = rs_affine_fit(&m, &calib, d, d, &o, p->comm);
    if (!err) err = rs_affine_eval(&m, &eval, p->comm);
    pair_source_free(&cs);
    pair_source_free(&es);
    if (!err && p->rank == 0) err = write_affine(path, &m, a, b, rs_pipeline_pair_hash(p, a, b));
    if (!err)
        RS_INFO("affine %d->%d: R^2 %.4f (eval), s %.4g, lambda %.3g (%d retries), %" PRId64 " calib tokens, %.2fs", a,
                b, m.r2, m.s, m.lambda_used, m.retries, m.n_tokens_calib, m.t_total);
    rs_affine_map_free(&m);
    RS_TRY(agree(p, err));
    return RS_OK;
}

rs_err rs_pipeline_affine(rs_pipeline *p) {
    int max = p->grid.n_affine + p->grid.n_regression;
    int(*pairs)[2] = malloc(sizeof(int[2]) * (size_t)(max > 0 ? max : 1));
    RS_CHECK_ALLOC(pairs);
    int n = collect_pairs(pairs, max, p);
    rs_actstore st;
    memset(&st, 0, sizeof st);
    char spath[4096];
    open_store_path(spath, sizeof spath, p);
    rs_err err = RS_OK;
    int todo = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        rs_pipeline_affine_path(path, sizeof path, p, pairs[i][0], pairs[i][1]);
        todo += !task_done(p, path);
    }
    RS_INFO("affine: %d fits (%d consecutive pairs, %d regression pairs), %d to do", n, p->grid.n_affine,
            p->grid.n_regression, todo);
    if (!todo) goto done;
    RS_TRY_GOTO(rs_actstore_open(&st, spath, 0, p->comm), done);
    rs_progress prog;
    rs_progress_init(&prog, "affine", todo, "fits", p->rank == 0);
    int done_n = 0;
    for (int i = 0; i < n; i++) {
        int a = pairs[i][0], b = pairs[i][1];
        char path[4096];
        rs_pipeline_affine_path(path, sizeof path, p, a, b);
        if (task_done(p, path)) continue;
        if (stop_requested(p)) RS_FAIL_GOTO(done, RS_ERR_INTERRUPTED, "stopped by a signal before affine fit %d->%d", a, b);
        RS_TRY_GOTO(affine_one(p, &st, a, b, path), done);
        rs_progress_update(&prog, ++done_n);
    }
    rs_progress_finish(&prog);
done:
    rs_actstore_close(&st);
    free(pairs);
    return err;
}

/* =====================================================================================================
 * SAE training
 * ===================================================================================================== */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Fisher-Yates permutation of 0..n-1 from a seed. */
static void permute(int32_t *perm, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i++) perm[i] = (int32_t)i;
    uint64_t s = seed;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(splitmix64(&s) % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* Seed of an SAE's initialization and of its data order: the experiment seed and what the SAE is
 * (kind, layer, predecessor, k, seed), never paths, so the same experiment in another directory
 * trains the same SAEs. */
static uint64_t sae_seed(const rs_pipeline *p, const rs_grid_sae *g) {
    int64_t v[6] = {p->cfg.seed, g->kind, g->layer, g->pred, g->k, g->seed};
    return rs_hash64(RS_HASH64_INIT, v, sizeof v);
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
    int32_t *chunk_perm; /* (n_chunks) */
    int32_t *row_perm;   /* (chunks_per_buf * C) */
    float *buf;          /* (chunks_per_buf * C, d) */
    float *xbuf;         /* (chunks_per_buf * C, d) predecessor rows (resae) */
} sae_stream;

static rs_err stream_load(sae_stream *s, int64_t epoch, int64_t b) {
    if (epoch != s->cur_epoch) {
        uint64_t x = s->seed ^ (0x5851f42d4c957f2dULL * (uint64_t)(epoch + 1));
        permute(s->chunk_perm, s->n_chunks, splitmix64(&x));
        s->cur_epoch = epoch;
        s->cur_buf = -1;
    }
    int64_t c0 = b * s->chunks_per_buf, c1 = c0 + s->chunks_per_buf;
    if (c1 > s->n_chunks) c1 = s->n_chunks;
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
    s->buf_rows = (c1 - c0) * s->C;
    for (size_t i = 0; i < (size_t)s->buf_rows * d; i++) s->buf[i] *= s->scale;
    uint64_t x = s->seed ^ (0x2545f4914f6cdd1dULL * (uint64_t)(epoch + 1)) ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(b + 1));
    permute(s->row_perm, s->buf_rows, splitmix64(&x));
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
}

static rs_err stream_init(sae_stream *s, const rs_pipeline *p, const rs_actstore *st, const rs_grid_sae *g,
                          const rs_affine_map *map, double scale) {
    memset(s, 0, sizeof *s);
    s->st = st;
    s->map = map;
    s->layer = g->layer;
    s->pred = g->pred;
    s->d = p->mc.d_model;
    s->C = (int)p->cfg.store.chunk_rows;
    s->scale = (float)scale;
    int64_t rows = rs_actstore_n_rows(st, RS_SPLIT_TRAIN);
    s->n_chunks = rows / s->C;
    if (s->n_chunks < 1)
        RS_FAIL(RS_ERR_CONFIG, "%s: the train split has %" PRId64 " tokens, fewer than one chunk of store.chunk_rows = %d",
                p->cfg.path, rows, s->C);
    s->chunks_per_buf = p->cfg.train.shuffle_buffer / s->C;
    if (s->chunks_per_buf < 1) s->chunks_per_buf = 1;
    if (s->chunks_per_buf > s->n_chunks) s->chunks_per_buf = s->n_chunks;
    s->epoch_rows = s->n_chunks * s->C;
    s->seed = sae_seed(p, g) ^ 0x5bd1e9955bd1e995ULL; /* data order: a stream apart from the init */
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

static rs_err write_sae(const char *path, const rs_sae *sae, const rs_grid_sae *g, const rs_sae_metrics *mt,
                        const rs_sae_config *sc, double scale) {
    char tmp[4200];
    hid_t f = task_create(tmp, sizeof tmp, path);
    if (f < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create", tmp);
    rs_err err = RS_OK;
    hsize_t dw[2] = {(hsize_t)sae->n_latents, (hsize_t)sae->d}, dn = (hsize_t)sae->n_latents, dd = (hsize_t)sae->d;
    RS_TRY_GOTO(rs_h5_write(f, "W_enc", H5T_NATIVE_FLOAT, 2, dw, sae->p.W_enc), fail);
    RS_TRY_GOTO(rs_h5_write(f, "b_enc", H5T_NATIVE_FLOAT, 1, &dn, sae->p.b_enc), fail);
    RS_TRY_GOTO(rs_h5_write(f, "W_dec", H5T_NATIVE_FLOAT, 2, dw, sae->p.W_dec), fail);
    RS_TRY_GOTO(rs_h5_write(f, "b_dec", H5T_NATIVE_FLOAT, 1, &dd, sae->p.b_dec), fail);
    RS_TRY_GOTO(rs_h5_attr_str(f, "task", "sae"), fail);
    RS_TRY_GOTO(rs_h5_attr_str(f, "kind", g->kind == RS_SAE_RAW ? "raw" : "resae"), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "layer", g->layer), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "pred", g->pred), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "k", g->k), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "seed", g->seed), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "hash", (int64_t)g->hash), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "n_latents", sae->n_latents), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "scale", scale), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "fvu", mt->fvu), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "auxk", mt->auxk), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "l0", mt->l0), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "dead_frac", mt->dead_frac), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "last_fvu", mt->last_fvu), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "tail_steps", mt->tail_steps), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "tokens", mt->tokens), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "steps", mt->steps), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "seconds", mt->seconds), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "tokens_per_s", mt->tokens_per_s), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "lr", rs_sae_config_lr(sc)), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "batch", sc->batch), fail);
    RS_TRY_GOTO(rs_h5_attr_str(f, "definition", "METHOD.md 3-4: TopK SAE on s*u (raw: u = h_l; resae: u = h_l - A h_pred "
                                                "- c); metrics are training-time means over the last tail_steps steps"),
                fail);
    return task_commit(f, tmp, path);
fail:
    H5Fclose(f);
    return err;
}

rs_err rs_pipeline_load_sae(rs_sae *sae, double *scale, const rs_pipeline *p, const rs_grid_sae *g) {
    char path[4096];
    rs_pipeline_sae_path(path, sizeof path, p, g);
    if (!rs_file_exists(path)) RS_FAIL(RS_ERR_INVAL, "SAE %s is not trained yet", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open", path);
    rs_err err = RS_OK;
    int64_t n = 0;
    RS_TRY_GOTO(rs_h5_attr_get_i64(&n, f, "n_latents", path), done);
    RS_TRY_GOTO(rs_h5_attr_get_f64(scale, f, "scale", path), done);
    RS_TRY_GOTO(rs_sae_init(sae, p->mc.d_model, (int)n, g->k), done);
    size_t nd = (size_t)n * (size_t)p->mc.d_model;
    RS_TRY_GOTO(rs_h5_read(f, "W_enc", H5T_NATIVE_FLOAT, sae->p.W_enc, nd, path), done);
    RS_TRY_GOTO(rs_h5_read(f, "b_enc", H5T_NATIVE_FLOAT, sae->p.b_enc, (size_t)n, path), done);
    RS_TRY_GOTO(rs_h5_read(f, "W_dec", H5T_NATIVE_FLOAT, sae->p.W_dec, nd, path), done);
    RS_TRY_GOTO(rs_h5_read(f, "b_dec", H5T_NATIVE_FLOAT, sae->p.b_dec, (size_t)p->mc.d_model, path), done);
done:
    H5Fclose(f);
    if (err) rs_sae_free(sae);
    return err;
}

/* Input scale of an SAE: raw from the store's calibration E||h||^2; resae from the affine fit. */
static rs_err sae_scale(double *scale, rs_affine_map *map, const rs_pipeline *p, const rs_actstore *st,
                        const rs_grid_sae *g) {
    if (g->kind == RS_SAE_RAW) {
        double msq = 0;
        RS_TRY(rs_actstore_stats(st, NULL, &msq, RS_SPLIT_CALIB, g->layer));
        if (!(msq > 0))
            RS_FAIL(RS_ERR_NUMERIC, "layer %d: the calibration activations have mean squared norm %g", g->layer, msq);
        *scale = sqrt((double)p->mc.d_model / msq);
        return RS_OK;
    }
    char path[4096];
    rs_pipeline_affine_path(path, sizeof path, p, g->pred, g->layer);
    RS_TRY(read_affine(map, path, p->mc.d_model));
    if (!(map->s > 0)) RS_FAIL(RS_ERR_NUMERIC, "%s: residual scale s is %g", path, map->s);
    *scale = map->s;
    return RS_OK;
}


static void sae_config(rs_sae_config *sc, const rs_pipeline *p, const rs_grid_sae *g) {
    rs_sae_config_default(sc, p->mc.d_model, (int)p->grid.n_latents, g->k);
    sc->batch = (int)p->cfg.train.batch_size;
    sc->steps = p->grid.train_steps;
    sc->lr = p->grid.lr;
    sc->warmup_steps = p->cfg.train.warmup_steps;
    sc->decay_frac = p->cfg.train.decay_fraction;
    sc->alpha_aux = p->cfg.train.aux_alpha;
    sc->dead_tokens = p->grid.dead_tokens;
    sc->beta1 = p->cfg.train.beta1;
    sc->beta2 = p->cfg.train.beta2;
    sc->eps = p->cfg.train.eps;
    sc->seed = sae_seed(p, g);
    sc->bdec_init = p->cfg.train.b_dec_init == RS_BDEC_MEAN   ? RS_SAE_BDEC_MEAN
                    : p->cfg.train.b_dec_init == RS_BDEC_ZERO ? RS_SAE_BDEC_ZERO
                                                              : RS_SAE_BDEC_GEOMEDIAN;
    sc->chunk_rows = 1024;
    sc->ckpt_every = p->cfg.train.checkpoint_every;
    sc->stop = p->stop;
}

static rs_err train_one(const rs_pipeline *p, const rs_actstore *st, const rs_grid_sae *g, const char *path) {
    rs_affine_map map;
    memset(&map, 0, sizeof map);
    double scale = 1.0;
    rs_err err = agree(p, sae_scale(&scale, &map, p, st, g));
    if (err) {
        rs_affine_map_free(&map);
        return err;
    }
    sae_stream s;
    rs_sae sae;
    memset(&sae, 0, sizeof sae);
    err = stream_init(&s, p, st, g, g->kind == RS_SAE_RESAE ? &map : NULL, scale);
    if (err) {
        rs_affine_map_free(&map);
        return agree(p, err);
    }
    RS_TRY_GOTO(agree(p, RS_OK), done);
    rs_sae_config sc;
    sae_config(&sc, p, g);
    char ckpt[4096];
    rs_pipeline_ckpt_path(ckpt, sizeof ckpt, p, g);
    sc.ckpt_path = ckpt;
    RS_TRY_GOTO(agree(p, rs_sae_init(&sae, p->mc.d_model, (int)p->grid.n_latents, g->k)), done);
    rs_sae_metrics mt;
    memset(&mt, 0, sizeof mt);
    rs_sae_source src = {stream_read, &s};
    RS_TRY_GOTO(rs_sae_train(&sae, &mt, &sc, src, p->comm), done);
    err = p->rank == 0 ? write_sae(path, &sae, g, &mt, &sc, scale) : RS_OK;
    if (!err && p->rank == 0) unlink(ckpt);
    RS_TRY_GOTO(agree(p, err), done);
    char name[128];
    rs_pipeline_sae_name(name, sizeof name, g);
    RS_INFO("sae %s: FVU %.4f, L0 %.2f, dead %.3f, %.0f tokens/s; input path on rank 0: store reads %.2fs, "
            "residuals %.2fs of %.2fs training", name, mt.fvu, mt.l0, mt.dead_frac, mt.tokens_per_s, s.t_read, s.t_resid,
            mt.seconds);
done:
    rs_sae_free(&sae);
    stream_free(&s);
    rs_affine_map_free(&map);
    return err;
}

rs_err rs_pipeline_train(rs_pipeline *p) {
    int todo = 0;
    for (int i = 0; i < p->grid.n_saes; i++) {
        char path[4096];
        rs_pipeline_sae_path(path, sizeof path, p, &p->grid.saes[i]);
        todo += !task_done(p, path);
    }
    RS_INFO("train: %d SAEs (%d raw, %d resae), %d to do; %" PRId64 " steps of %" PRId64 " tokens each", p->grid.n_saes,
            p->grid.n_raw, p->grid.n_resae, todo, p->grid.train_steps, p->cfg.train.batch_size);
    if (!todo) return RS_OK;
    rs_actstore st;
    memset(&st, 0, sizeof st);
    char spath[4096];
    store_path(spath, sizeof spath, p);
    rs_err err = RS_OK;
    RS_TRY_GOTO(rs_actstore_open(&st, spath, 0, p->comm), done);
    rs_progress prog;
    rs_progress_init(&prog, "train", todo, "SAEs", p->rank == 0);
    prog.interval = 0;
    int n_done = 0;
    for (int i = 0; i < p->grid.n_saes; i++) {
        const rs_grid_sae *g = &p->grid.saes[i];
        char path[4096];
        rs_pipeline_sae_path(path, sizeof path, p, g);
        if (task_done(p, path)) continue;
        if (stop_requested(p)) RS_FAIL_GOTO(done, RS_ERR_INTERRUPTED, "stopped by a signal before the next SAE");
        RS_TRY_GOTO(train_one(p, &st, g, path), done);
        rs_progress_update(&prog, ++n_done);
    }
    rs_progress_finish(&prog);
done:
    rs_actstore_close(&st);
    return err;
}

/* =====================================================================================================
 * Results file
 * ===================================================================================================== */

static rs_err copy_obj(hid_t src, const char *sname, hid_t dst, const char *dname) {
    if (H5Ocopy(src, sname, dst, dname, H5P_DEFAULT, H5P_DEFAULT) < 0)
        RS_FAIL(RS_ERR_IO, "HDF5: cannot copy '%s' into the results file", sname);
    return RS_OK;
}

static rs_err copy_attrs_num(hid_t src, hid_t dst, const char *const *names, int n, const char *file) {
    for (int i = 0; i < n; i++) {
        double v;
        RS_TRY(rs_h5_attr_get_f64(&v, src, names[i], file));
        RS_TRY(rs_h5_attr_f64(dst, names[i], v));
    }
    return RS_OK;
}

static rs_err results_affine(hid_t out, const rs_pipeline *p) {
    static const char *const attrs[] = {"layer_a", "layer_b", "lambda_rel", "lambda_used", "retries", "r2",
                                        "s", "n_tokens_calib", "n_tokens_eval", "solve_resid", "seconds"};
    int max = p->grid.n_affine + p->grid.n_regression;
    int(*pairs)[2] = malloc(sizeof(int[2]) * (size_t)(max > 0 ? max : 1));
    RS_CHECK_ALLOC(pairs);
    int n = collect_pairs(pairs, max, p);
    rs_err err = RS_OK;
    hid_t g = H5Gcreate2(out, "affine", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    double *table = calloc((size_t)(n > 0 ? n : 1) * 12, sizeof(double));
    if (g < 0 || !table) RS_FAIL_GOTO(done, RS_ERR_IO, "results: cannot create /affine");
    int rows = 0;
    for (int i = 0; i < n; i++) {
        char path[4096], name[64];
        rs_pipeline_affine_path(path, sizeof path, p, pairs[i][0], pairs[i][1]);
        if (!rs_file_exists(path)) continue;
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) RS_FAIL_GOTO(done, RS_ERR_IO, "%s: cannot open", path);
        snprintf(name, sizeof name, "L%d_L%d", pairs[i][0], pairs[i][1]);
        hid_t pg = H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        err = pg < 0 ? rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "results: cannot create /affine/%s", name)
                     : RS_OK;
        if (!err) err = copy_obj(f, "A", pg, "A");
        if (!err) err = copy_obj(f, "c", pg, "c");
        if (!err) err = copy_attrs_num(f, pg, attrs, (int)(sizeof attrs / sizeof *attrs), path);
        double *row = table + (size_t)rows * 12;
        row[0] = pairs[i][0];
        row[1] = pairs[i][1];
        row[2] = pairs[i][1] - pairs[i][0];
        for (int a = 2; a < 11 && !err; a++) err = rs_h5_attr_get_f64(&row[a + 1], f, attrs[a], path);
        if (pg >= 0) H5Gclose(pg);
        H5Fclose(f);
        if (err) goto done;
        rows++;
    }
    hsize_t dims[2] = {(hsize_t)rows, 12};
    RS_TRY_GOTO(rs_h5_write(g, "table", H5T_NATIVE_DOUBLE, 2, dims, table), done);
    RS_TRY_GOTO(rs_h5_attr_str(g, "table_columns", "layer_a,layer_b,gap,lambda_rel,lambda_used,retries,r2,s,"
                                                  "n_tokens_calib,n_tokens_eval,solve_resid,seconds"),
                done);
done:
    free(table);
    if (g >= 0) H5Gclose(g);
    free(pairs);
    return err;
}

static rs_err results_sae(hid_t out, const rs_pipeline *p) {
    static const char *const cols[] = {"layer", "pred", "k", "seed", "fvu", "auxk", "l0", "dead_frac", "tokens",
                                       "steps", "seconds", "tokens_per_s", "scale"};
    enum { NC = 14 };
    rs_err err = RS_OK;
    hid_t g = H5Gcreate2(out, "sae", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    double *table = calloc((size_t)(p->grid.n_saes > 0 ? p->grid.n_saes : 1) * NC, sizeof(double));
    if (g < 0 || !table) RS_FAIL_GOTO(done, RS_ERR_IO, "results: cannot create /sae");
    int rows = 0;
    for (int i = 0; i < p->grid.n_saes; i++) {
        const rs_grid_sae *s = &p->grid.saes[i];
        char path[4096], name[128];
        rs_pipeline_sae_path(path, sizeof path, p, s);
        if (!rs_file_exists(path)) continue;
        rs_pipeline_sae_name(name, sizeof name, s);
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) RS_FAIL_GOTO(done, RS_ERR_IO, "%s: cannot open", path);
        hid_t sg = H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        err = sg < 0 ? rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "results: cannot create /sae/%s", name)
                     : RS_OK;
        static const char *const w[] = {"W_enc", "b_enc", "W_dec", "b_dec"};
        for (int j = 0; j < 4 && !err; j++) err = copy_obj(f, w[j], sg, w[j]);
        if (!err) err = rs_h5_attr_str(sg, "kind", s->kind == RS_SAE_RAW ? "raw" : "resae");
        if (!err) err = copy_attrs_num(f, sg, cols, (int)(sizeof cols / sizeof *cols), path);
        double *row = table + (size_t)rows * NC;
        row[0] = s->kind;
        for (int j = 0; j < NC - 1 && !err; j++) err = rs_h5_attr_get_f64(&row[j + 1], f, cols[j], path);
        if (sg >= 0) H5Gclose(sg);
        H5Fclose(f);
        if (err) goto done;
        rows++;
    }
    hsize_t dims[2] = {(hsize_t)rows, NC};
    RS_TRY_GOTO(rs_h5_write(g, "table", H5T_NATIVE_DOUBLE, 2, dims, table), done);
    RS_TRY_GOTO(rs_h5_attr_str(g, "table_columns", "kind(0=raw;1=resae),layer,pred,k,seed,fvu,auxk,l0,dead_frac,tokens,"
                                                  "steps,seconds,tokens_per_s,scale"),
                done);
done:
    free(table);
    if (g >= 0) H5Gclose(g);
    return err;
}

static rs_err results_config(hid_t out, const rs_pipeline *p) {
    char *text = NULL;
    size_t len = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", p->cfg.run_dir, RS_RUN_CONFIG_FILE);
    RS_TRY(rs_read_file(&text, &len, path, RS_CONFIG_MAX_BYTES * 4));
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, len + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t ds = H5Dcreate2(out, "config_yaml", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = ds < 0 ? -1 : H5Dwrite(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, text);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    H5Tclose(t);
    free(text);
    if (e < 0) RS_FAIL(RS_ERR_IO, "results: cannot write config_yaml");
    char hex[32];
    snprintf(hex, sizeof hex, "%016" PRIx64, p->grid.config_hash);
    RS_TRY(rs_h5_attr_str(out, "config_hash", hex));
    RS_TRY(rs_h5_attr_i64(out, "schema_version", RESAE_SCHEMA_VERSION));
    RS_TRY(rs_h5_attr_str(out, "resae_version", RESAE_VERSION));
    RS_TRY(rs_h5_attr_i64(out, "n_ranks", p->size));
    return RS_OK;
}

rs_err rs_pipeline_results(rs_pipeline *p) { return rs_pipeline_results_tasks(p, NULL); }

rs_err rs_pipeline_results_tasks(rs_pipeline *p, const rs_sched *s) {
    rs_err err = RS_OK;
    if (p->rank == 0) {
        char path[4096], tmp[4200];
        snprintf(path, sizeof path, "%s/%s", p->cfg.run_dir, RS_RESULTS_FILE);
        hid_t f = task_create(tmp, sizeof tmp, path);
        if (f < 0) {
            err = rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "%s: cannot create", tmp);
        } else {
            err = results_config(f, p);
            if (!err) err = results_affine(f, p);
            if (!err) err = results_sae(f, p);
            if (!err) err = rs_pipeline_results_eval(f, p); /* evaluation tables (pipeline_eval.c) */
            if (!err && s) err = rs_sched_write_table(f, "tasks", s);
            if (!err) err = task_commit(f, tmp, path);
            else H5Fclose(f);
            if (!err) RS_INFO("results: %s", path);
        }
    }
    return agree(p, err);
}

/* =====================================================================================================
 * The whole run
 * ===================================================================================================== */

/* Record the resolved config in the run directory (rank 0); a different one there is reported. */
static rs_err record_config(const rs_pipeline *p) {
    rs_err err = RS_OK;
    if (p->rank == 0) {
        char path[4096], tmp[4200];
        snprintf(path, sizeof path, "%s/%s", p->cfg.run_dir, RS_RUN_CONFIG_FILE);
        if (rs_file_exists(path)) {
            rs_config old;
            if (rs_config_load(&old, path) == RS_OK) {
                if (rs_config_hash(&old) != p->grid.config_hash)
                    RS_WARN("the config differs from the one this run directory was started with: tasks whose inputs "
                            "changed are run again, finished tasks with unchanged inputs are kept");
                rs_config_free(&old);
            }
            rs_err_clear();
        }
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        if (!f) {
            err = rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "%s: cannot write", tmp);
        } else {
            err = rs_config_write_yaml(f, &p->cfg);
            if (fclose(f) && !err) err = rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "%s: write failed", tmp);
            if (!err) err = rs_file_commit(tmp, path);
        }
    }
    return agree(p, err);
}

/* ---- the task graph ------------------------------------------------------------------------------- */

enum { TASK_HARVEST = 0, TASK_AFFINE = 1, TASK_TRAIN = 2, TASK_EVAL = 3, TASK_ABLATE = 4, TASK_KINDS = 5 };
static const char *const stage_names[TASK_KINDS] = {"harvest", "affine", "train", "evaluate", "ablate"};

typedef struct run_ctx {
    rs_pipeline *p;
    int (*pairs)[2]; /* (n_pairs) affine fits */
    int n_pairs;
    int eval_loaded; /* this rank loaded model and tokens for evaluation tasks */
    rs_model model;
    rs_tokens tk;
    int started[TASK_KINDS]; /* this rank has led a task of the kind (for the "stage" lines) */
} run_ctx;

static void task_path(char *out, size_t n, const run_ctx *c, const rs_sched_task *t) {
    const rs_pipeline *p = c->p;
    int i = (int)(intptr_t)t->data;
    out[0] = 0;
    if (t->kind == TASK_AFFINE) rs_pipeline_affine_path(out, n, p, c->pairs[i][0], c->pairs[i][1]);
    else if (t->kind == TASK_TRAIN) rs_pipeline_sae_path(out, n, p, &p->grid.saes[i]);
    else if (t->kind == TASK_EVAL) rs_pipeline_eval_path(out, n, p, &p->grid.evals[i]);
    else if (t->kind == TASK_ABLATE) rs_pipeline_ablate_path(out, n, p, i);
}

/* done(): the task file exists (asked on rank 0). The harvest always runs: it reuses a complete
 * store, so a finished harvest costs only the check. */
static int sched_done(void *vctx, const rs_sched_task *t) {
    if (t->kind == TASK_HARVEST) return 0;
    char path[4096];
    task_path(path, sizeof path, vctx, t);
    return rs_file_exists(path);
}

/* Model and tokens of the evaluation tasks, loaded once per rank on first use. Collective over q->comm. */
static rs_err eval_resources(run_ctx *c, const rs_pipeline *q) {
    if (c->eval_loaded || !q->cfg.eval.ce) return RS_OK;
    memset(&c->tk, 0, sizeof c->tk);
    c->tk.fd = -1;
    rs_err err = open_tokens(&c->tk, q);
    if (!err) {
        err = rs_model_load(&c->model, q->cfg.model.path);
        if (err) rs_tokens_close(&c->tk);
    }
    err = agree(q, err);
    if (err) {
        rs_model_free(&c->model);
        return err;
    }
    c->eval_loaded = 1;
    return RS_OK;
}

/* Run one task on comm (a group, or the world for the harvest): a shallow copy of the pipeline with
 * the group's communicator, rank and size; the store is opened on that communicator. */
static rs_err sched_run(void *vctx, const rs_sched_task *t, MPI_Comm comm) {
    run_ctx *c = vctx;
    rs_pipeline q = *c->p;
    q.comm = comm;
    MPI_Comm_rank(comm, &q.rank);
    MPI_Comm_size(comm, &q.size);
    if (q.rank == 0 && !c->started[t->kind]) {
        c->started[t->kind] = 1;
        rs_log_all(RS_LOG_INFO, "stage %s: first task %s on %d ranks", stage_names[t->kind], t->name, q.size);
    }
    int i = (int)(intptr_t)t->data;
    if (t->kind == TASK_HARVEST) return rs_pipeline_harvest(&q);
    if (t->kind == TASK_EVAL) {
        RS_TRY(eval_resources(c, &q));
        return rs_pipeline_eval_task(&q, i, &c->model, &c->tk);
    }
    if (t->kind == TASK_ABLATE) {
        RS_TRY(eval_resources(c, &q));
        return rs_pipeline_ablate_task(&q, i, &c->model, &c->tk);
    }
    char path[4096], spath[4096];
    task_path(path, sizeof path, c, t);
    store_path(spath, sizeof spath, &q);
    rs_actstore st;
    memset(&st, 0, sizeof st);
    rs_err err = RS_OK;
    RS_TRY_GOTO(rs_actstore_open(&st, spath, 0, comm), done);
    if (t->kind == TASK_AFFINE) err = affine_one(&q, &st, c->pairs[i][0], c->pairs[i][1], path);
    else err = train_one(&q, &st, &q.grid.saes[i], path);
done:
    rs_actstore_close(&st);
    return err;
}

/* Rough costs in floating-point operations (only their ratios matter to the scheduler). */
static double cost_affine(const rs_pipeline *p) {
    double d = p->mc.d_model;
    return 2.0 * d * d * (double)(p->cfg.data.calibration + p->cfg.data.eval) + 4.0 * d * d * d;
}
static double cost_sae(const rs_pipeline *p, const rs_grid_sae *g) {
    double d = p->mc.d_model, n = (double)p->grid.n_latents;
    double c = 6.0 * d * n * (double)p->grid.train_steps * (double)p->cfg.train.batch_size;
    if (g->kind == RS_SAE_RESAE) c += 2.0 * d * d * (double)p->grid.train_steps * (double)p->cfg.train.batch_size;
    return c;
}
static double cost_eval(const rs_pipeline *p, const rs_grid_eval *e) {
    double d = p->mc.d_model, n = (double)p->grid.n_latents, M = p->grid.sets[e->set].n;
    double c = 4.0 * d * n * M * (double)p->cfg.data.eval + 2.0 * n * n * d * M * (M - 1) / 2;
    /* CE splices: about (3M + 3) forward passes over the eval tokens; 24 d^2 flops per token-layer */
    if (p->cfg.eval.ce) c += (3.0 * M + 3.0) * 24.0 * d * d * p->mc.n_layers * (double)p->cfg.data.eval;
    return c;
}

static double cost_ablate(const rs_pipeline *p, const rs_grid_set *s) {
    double d = p->mc.d_model, M = s->n;
    /* a clean pass and 2M ablation passes over the eval tokens */
    return (2.0 * M + 1.0) * 24.0 * d * d * p->mc.n_layers * (double)p->cfg.data.eval;
}

static int pair_index(const run_ctx *c, int a, int b) {
    for (int i = 0; i < c->n_pairs; i++)
        if (c->pairs[i][0] == a && c->pairs[i][1] == b) return i;
    return -1;
}

/* The graph: harvest (world) -> affine fits -> SAEs (resae: after the fit of its pair) -> evaluations
 * (after the SAEs of their set and the set's ablation baselines, which need only the harvest). Only
 * stages up to p->until are added. */
static rs_err build_graph(rs_sched *s, run_ctx *c, int *pair_task, int *sae_task) {
    rs_pipeline *p = c->p;
    int until = p->until < 0 ? 3 : p->until;
    double harvest_cost = 2.0 * 12.0 * p->mc.d_model * p->mc.d_model * p->mc.n_layers *
                          (double)(p->cfg.data.calibration + p->cfg.data.train + p->cfg.data.eval);
    int h;
    RS_TRY(rs_sched_add(&h, s, "harvest", TASK_HARVEST, p->grid.inputs_hash, harvest_cost, RS_SCHED_WORLD, 0, NULL));
    if (until < 1) return RS_OK;
    char name[RS_SCHED_NAME_MAX];
    for (int i = 0; i < c->n_pairs; i++) {
        snprintf(name, sizeof name, "affine L%d_L%d", c->pairs[i][0], c->pairs[i][1]);
        RS_TRY(rs_sched_add(&pair_task[i], s, name, TASK_AFFINE, rs_pipeline_pair_hash(p, c->pairs[i][0], c->pairs[i][1]),
                            cost_affine(p), 1, 0, (void *)(intptr_t)i));
        RS_TRY(rs_sched_add_dep(s, pair_task[i], h));
    }
    if (until < 2) return RS_OK;
    for (int i = 0; i < p->grid.n_saes; i++) {
        const rs_grid_sae *g = &p->grid.saes[i];
        char sn[128];
        rs_pipeline_sae_name(sn, sizeof sn, g);
        snprintf(name, sizeof name, "sae %.80s", sn);
        RS_TRY(rs_sched_add(&sae_task[i], s, name, TASK_TRAIN, g->hash, cost_sae(p, g), 1, 0, (void *)(intptr_t)i));
        RS_TRY(rs_sched_add_dep(s, sae_task[i], h));
        if (g->kind == RS_SAE_RESAE) {
            int k = pair_index(c, g->pred, g->layer);
            if (k < 0) RS_FAIL(RS_ERR_INTERNAL, "no affine fit %d->%d for SAE %s", g->pred, g->layer, sn);
            RS_TRY(rs_sched_add_dep(s, sae_task[i], pair_task[k]));
        }
    }
    if (until < 3) return RS_OK;
    /* the ablation baselines of each distinct set: they need only the store, so they run early */
    int *ablate_task = malloc(sizeof(int) * (size_t)(p->grid.n_sets > 0 ? p->grid.n_sets : 1));
    RS_CHECK_ALLOC(ablate_task);
    rs_err err = RS_OK;
    for (int i = 0; i < p->grid.n_sets; i++) ablate_task[i] = -1;
    if (rs_pipeline_ablate_needed(p)) {
        for (int i = 0; i < p->grid.n_sets && !err; i++) {
            const rs_grid_set *set = &p->grid.sets[i];
            if (set->same_as >= 0) continue;
            snprintf(name, sizeof name, "ablate %.80s", set->name);
            err = rs_sched_add(&ablate_task[i], s, name, TASK_ABLATE, rs_hash64(p->grid.inputs_hash, name, strlen(name)),
                               cost_ablate(p, set), 1, 0, (void *)(intptr_t)i);
            if (!err) err = rs_sched_add_dep(s, ablate_task[i], h);
        }
    }
    for (int i = 0; i < p->grid.n_evals && !err; i++) {
        if (!rs_pipeline_eval_first(p, i)) continue;
        const rs_grid_eval *e = &p->grid.evals[i];
        char en[RS_SCHED_NAME_MAX - 8];
        rs_pipeline_eval_name(en, sizeof en, p, e);
        snprintf(name, sizeof name, "eval %s", en);
        int t;
        err = rs_sched_add(&t, s, name, TASK_EVAL, e->hash, cost_eval(p, e), 1, 0, (void *)(intptr_t)i);
        for (int m = 0; m < p->grid.sets[e->set].n && !err; m++)
            err = rs_sched_add_dep(s, t, sae_task[p->grid.eval_sae[e->sae_off + m]]);
        const rs_grid_set *set = &p->grid.sets[e->set];
        int key = set->same_as >= 0 ? set->same_as : e->set;
        if (!err && ablate_task[key] >= 0) err = rs_sched_add_dep(s, t, ablate_task[key]);
    }
    free(ablate_task);
    return err;
}

rs_err rs_pipeline_run(rs_pipeline *p) {
    char dir[4096];
    rs_err err = RS_OK;
    if (p->rank == 0) {
        snprintf(dir, sizeof dir, "%s/tasks", p->cfg.run_dir);
        err = rs_mkdirs(dir);
        snprintf(dir, sizeof dir, "%s/ckpt", p->cfg.run_dir);
        if (!err) err = rs_mkdirs(dir);
    }
    RS_TRY(agree(p, err));
    RS_TRY(record_config(p));
    RS_INFO("run %s: %d sets, %d affine fits, %d SAEs, %d evaluations; run directory %s", p->cfg.name, p->grid.n_sets,
            p->grid.n_affine + p->grid.n_regression_extra, p->grid.n_saes, p->grid.n_evals, p->cfg.run_dir);
    /* one task per harvest, affine fit, SAE and unique evaluation, scheduled over worker groups */
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.p = p;
    c.tk.fd = -1;
    int max = p->grid.n_affine + p->grid.n_regression;
    c.pairs = malloc(sizeof(int[2]) * (size_t)(max > 0 ? max : 1));
    int *pair_task = malloc(sizeof(int) * (size_t)(max > 0 ? max : 1));
    int *sae_task = malloc(sizeof(int) * (size_t)(p->grid.n_saes > 0 ? p->grid.n_saes : 1));
    rs_sched_opts o;
    rs_sched_opts_default(&o);
    o.group_size = (int)p->cfg.parallel.group_size;
    o.max_retries = (int)p->cfg.parallel.max_task_retries;
    o.stop = p->stop;
    o.other_rank_msg = RS_PIPELINE_OTHER_RANK;
    char status_path[4096];
    snprintf(status_path, sizeof status_path, "%s/%s", p->cfg.run_dir, RS_RUN_STATUS_FILE);
    o.status_path = status_path;
    rs_sched s;
    rs_sched_init(&s, &o);
    if (!c.pairs || !pair_task || !sae_task) {
        err = rs_err_set(RS_ERR_NOMEM, __FILE__, __LINE__, __func__, "out of memory for the task graph");
        goto done;
    }
    c.n_pairs = collect_pairs(c.pairs, max, p);
    RS_TRY_GOTO(agree(p, build_graph(&s, &c, pair_task, sae_task)), done);
    {
        int todo[TASK_KINDS] = {0}, n[TASK_KINDS] = {0};
        if (p->rank == 0)
            for (int i = 0; i < s.n_tasks; i++) {
                n[s.tasks[i].kind]++;
                todo[s.tasks[i].kind] += !sched_done(&c, &s.tasks[i]);
            }
        MPI_Bcast(todo, TASK_KINDS, MPI_INT, 0, p->comm);
        MPI_Bcast(n, TASK_KINDS, MPI_INT, 0, p->comm);
        if (n[TASK_AFFINE] || p->until < 0 || p->until >= 1)
            RS_INFO("affine: %d fits (%d consecutive pairs, %d regression pairs), %d to do", c.n_pairs, p->grid.n_affine,
                    p->grid.n_regression, todo[TASK_AFFINE]);
        if (p->until < 0 || p->until >= 2)
            RS_INFO("train: %d SAEs (%d raw, %d resae), %d to do; %" PRId64 " steps of %" PRId64 " tokens each",
                    p->grid.n_saes, p->grid.n_raw, p->grid.n_resae, todo[TASK_TRAIN], p->grid.train_steps,
                    p->cfg.train.batch_size);
        if (p->until < 0 || p->until >= 3)
            RS_INFO("evaluate: %d evaluations (%d unique), %d to do", p->grid.n_evals, n[TASK_EVAL], todo[TASK_EVAL]);
    }
    double t0 = rs_now();
    err = rs_sched_run(&s, sched_run, sched_done, &c, p->comm);
    {
        /* wall time per stage: first start to last end of its tasks run now */
        double t_lo[TASK_KINDS], t_hi[TASK_KINDS] = {0}, busy[TASK_KINDS] = {0};
        int ran[TASK_KINDS] = {0};
        for (int k = 0; k < TASK_KINDS; k++) t_lo[k] = 1e300;
        for (int i = 0; i < s.n_tasks; i++) {
            const rs_sched_record *r = &s.table[i];
            if (r->attempts <= 0) continue;
            int k = s.tasks[i].kind;
            ran[k]++;
            if (r->t_start < t_lo[k]) t_lo[k] = r->t_start;
            if (r->t_end > t_hi[k]) t_hi[k] = r->t_end;
            busy[k] += r->seconds * r->group_size;
        }
        for (int k = 0; k < TASK_KINDS; k++)
            if (ran[k])
                RS_INFO("stage %s: %d tasks, %.1fs to %.1fs (span %.1fs), %.1f rank-seconds", stage_names[k], ran[k],
                        t_lo[k], t_hi[k], t_hi[k] - t_lo[k], busy[k]);
        RS_INFO("tasks: %.1fs on %d groups of %d ranks", rs_now() - t0, s.n_groups, s.group_size);
    }
    if (err) {
        /* keep the scheduler's message (failed and skipped tasks) while the results are written */
        char msg[4096];
        snprintf(msg, sizeof msg, "%s", rs_err_msg());
        rs_err r = rs_pipeline_results_tasks(p, &s);
        (void)r;
        rs_err_clear();
        err = rs_err_set(err, __FILE__, __LINE__, __func__, "%s", msg);
        goto done;
    }
    RS_TRY_GOTO(rs_pipeline_results_tasks(p, &s), done);
    if (p->until >= 0 && p->until < 3) {
        RS_INFO("stopped after stage %s (--until)", stage_names[p->until]);
        goto done;
    }
    RS_INFO("stages run: harvest, affine, train, evaluate (reconstruction, redundancy, CE splices); not built yet: "
            "probing, TPP");
done:
    if (c.eval_loaded) {
        rs_tokens_close(&c.tk);
        rs_model_free(&c.model);
    }
    rs_sched_free(&s);
    free(c.pairs);
    free(pair_task);
    free(sae_task);
    return err;
}
