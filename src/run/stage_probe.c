/* The sparse-probing stage (stage_probe.h, docs/probing.md). */
#define _GNU_SOURCE
#include "resae/stage_probe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/affine.h"
#include "resae/eval.h"
#include "resae/h5util.h"
#include "resae/log.h"
#include "resae/model.h"
#include "resae/mpi_util.h"
#include "resae/probe.h"
#include "resae/probe_data.h"
#include "resae/sae.h"
#include "resae/taskfile.h"
#include "resae/util.h"

const char *const rs_probe_kind_names[RS_PROBE_KIND_COUNT] = {"sae", "model_topk", "model_all", "random"};

const char *const rs_probe_definitions[3] = {
    "Sparse probing (SAEBench protocol, EVAL_SPEC A/C7): per class of a class set a balanced one-vs-rest task "
    "(negatives from the set's other classes), windows split by group; features pooled over positions "
    "pool_skip_first..T-1 of clean windows: kind sae = original-unit SAE codes z/s (resae m>=2: codes of "
    "r = h_l - A h_prev - c), top-K by |mean_pos - mean_neg| on train (ties: lower index), layer -1 = the union of "
    "the set's layers; model_topk / model_all = pooled h (ceiling; variant, k, seed -1; K = d for all dims); random = "
    "K latents drawn uniformly (floor). Probe: LIBLINEAR L2R_LR, bias 1, eps 1e-4, C = eval.probing.l2_c (= sklearn "
    "LogisticRegression(solver='liblinear', tol=1e-4)). accuracy on the test task; label -1 = mean over the class "
    "set's classes, class_set -1 = mean of the class-set means",
    "The chosen latents of every kind-sae probe at the largest K: scope = the probed layer or -1 (union), rank = "
    "position in the top-K order, layer and latent = where the chosen latent lives",
    "The class sets: label id (index into the attribute label_names), windows of the label in the file, of them on "
    "the test side of the group split, and the windows drawn per class (n_train, n_test)"};

/* =====================================================================================================
 * Inputs
 * ===================================================================================================== */

void rs_probe_inputs_free(rs_probe_inputs *in) {
    for (int i = 0; in->sae && i < in->n_e * in->M; i++) {
        rs_sae_free(&in->sae[i]);
        rs_affine_map_free(&in->map[i]);
    }
    free(in->sae);
    free(in->map);
    free(in->es);
    free(in->ev);
    rs_probe_plan_free(&in->plan);
    rs_probe_data_free(&in->data);
    rs_model_free(&in->model);
}

static rs_err load_saes(rs_probe_inputs *in, const rs_run *run, int set, rs_probe_eval_filter keep) {
    const rs_grid *g = &run->grid;
#define KEPT(i) (g->evals[i].set == set && (!keep || keep(run, &g->evals[i])))
    for (int i = 0; i < g->n_evals; i++) in->n_e += KEPT(i);
    size_t n = (size_t)in->n_e * (size_t)in->M;
    in->ev = calloc((size_t)in->n_e, sizeof *in->ev);
    in->es = calloc((size_t)in->n_e, sizeof *in->es);
    in->sae = calloc(n, sizeof *in->sae);
    in->map = calloc(n, sizeof *in->map);
    RS_CHECK(in->ev && in->es && in->sae && in->map, RS_ERR_NOMEM, "out of memory for the probed SAEs");
    for (int i = 0, e = 0; i < g->n_evals; i++) {
        if (!KEPT(i)) continue;
        const rs_grid_eval *ge = in->ev[e] = &g->evals[i];
        rs_eval_set *es = &in->es[e];
        es->variant = ge->variant;
        es->M = in->M;
        es->d = in->d;
        for (int m = 0; m < in->M; m++) {
            const rs_grid_sae *gs = &g->saes[g->eval_sae[ge->sae_off + m]];
            size_t q = (size_t)e * (size_t)in->M + (size_t)m;
            es->L[m].layer = in->set->layers[m];
            RS_TRY(rs_taskfile_load_sae(&in->sae[q], &es->L[m].scale, NULL, run, gs));
            es->L[m].sae = &in->sae[q];
            RS_CHECK(in->sae[q].n_latents == in->n_lat, RS_ERR_INTERNAL, "SAE with %d latents, expected %d",
                     in->sae[q].n_latents, in->n_lat);
            if (gs->kind == RS_VARIANT_RESAE) {
                RS_TRY(rs_taskfile_load_affine(&in->map[q], run, gs->pred, gs->layer));
                es->L[m].map = &in->map[q];
            }
        }
        e++;
    }
    return RS_OK;
}

rs_err rs_probe_inputs_load(rs_probe_inputs *in, const rs_run *run, int set, rs_probe_eval_filter keep) {
    const rs_config *c = &run->cfg;
    in->set = &run->grid.sets[set];
    in->M = in->set->n;
    in->d = run->mc.d_model;
    in->n_lat = (int)run->grid.n_latents;
    in->top = in->set->layers[in->M - 1];
    RS_CHECK(in->M <= RS_EVAL_MAX_LAYERS, RS_ERR_CONFIG, "set %s has %d layers; probing supports at most %d",
             in->set->name, in->M, RS_EVAL_MAX_LAYERS);
    RS_TRY(rs_model_load(&in->model, c->model.path, (enum rs_weights_mode)c->model.weights));
    RS_TRY(rs_probe_data_load(&in->data, c->eval.probing.data, run->mc.vocab_size));
    in->T = in->data.T;
    in->skip = (int)c->eval.probing.pool_skip_first;
    if (in->skip >= in->T || in->T > run->mc.max_positions)
        RS_CONFIG_FAIL(c, "eval.probing.pool_skip_first", "%s holds windows of %d tokens (the model takes at most %d) "
                       "and pooling skips %d positions; use shorter windows or lower eval.probing.pool_skip_first",
                       in->data.path, in->T, run->mc.max_positions, in->skip);
    rs_probe_opts o = {c->eval.probing.n_train, c->eval.probing.n_test, (int)c->eval.probing.classes_per_set,
                       (int)c->eval.probing.class_sets, c->eval.probing.test_fraction, (uint64_t)c->eval.probing.seed};
    RS_TRY(rs_probe_plan_build(&in->plan, &in->data, &o));
    return load_saes(in, run, set, keep);
#undef KEPT
}

/* =====================================================================================================
 * Pooled features of one class set (collective)
 * ===================================================================================================== */

typedef struct capture {
    const rs_probe_inputs *in;
    float *hc; // (M, B, T, d)
    size_t stride;
} capture;

static rs_err capture_hook(void *vctx, int layer, float *h, int B, int T, int d) {
    capture *c = vctx;
    for (int m = 0; m < c->in->M; m++)
        if (c->in->set->layers[m] == layer)
            memcpy(c->hc + (size_t)m * c->stride, h, sizeof(float) * (size_t)B * (size_t)T * (size_t)d);
    return RS_OK;
}

float *rs_probe_h_block(const rs_probe_inputs *in, const rs_probe_feats *f, int m) {
    return f->h + (size_t)m * (size_t)f->n_w * (size_t)in->d;
}

float *rs_probe_z_block(const rs_probe_inputs *in, const rs_probe_feats *f, int e, int m) {
    return f->z + ((size_t)e * (size_t)in->M + (size_t)m) * (size_t)f->n_w * (size_t)in->n_lat;
}

/* Scratch of one batch. */
typedef struct batch_work {
    rs_run_state rs;
    rs_eval_work w;
    int32_t *tok;  // (B, T)
    float *hc;     // (M, B, T, d)
    double *acc;   // (max(d, n_lat))
} batch_work;

static void work_free(batch_work *b) {
    rs_run_state_free(&b->rs);
    rs_eval_work_free(&b->w);
    free(b->tok);
    free(b->hc);
    free(b->acc);
}

static rs_err work_init(batch_work *b, const rs_probe_inputs *in, int B) {
    memset(b, 0, sizeof *b);
    int big = 0;
    for (int e = 1; e < in->n_e; e++)
        if (in->ev[e]->k > in->ev[big]->k) big = e;
    size_t BT = (size_t)B * (size_t)in->T;
    RS_TRY(rs_run_state_init(&b->rs, &in->model, B, in->T));
    RS_TRY(rs_eval_work_init(&b->w, &in->es[big], (int64_t)BT));
    b->tok = malloc(sizeof(int32_t) * BT);
    b->hc = malloc(sizeof(float) * (size_t)in->M * BT * (size_t)in->d);
    b->acc = malloc(sizeof(double) * (size_t)(in->d > in->n_lat ? in->d : in->n_lat));
    RS_CHECK(b->tok && b->hc && b->acc, RS_ERR_NOMEM, "out of memory for probe batches of %d windows", B);
    return RS_OK;
}

/* Windows [w0, w0 + B) of the class set: one forward pass, then every pooled feature. */
static rs_err batch_feats(rs_probe_feats *f, batch_work *b, const rs_probe_inputs *in, const rs_probe_set *S, int w0, int B) {
    int T = in->T, d = in->d;
    for (int i = 0; i < B; i++)
        memcpy(b->tok + (size_t)i * (size_t)T, in->data.tokens + (size_t)S->windows[w0 + i] * (size_t)T,
               sizeof(int32_t) * (size_t)T);
    capture cap = {in, b->hc, (size_t)B * (size_t)T * (size_t)d};
    rs_forward_args a = RS_FORWARD_ARGS_INIT;
    a.tokens = b->tok;
    a.stop_layer = in->top;
    a.hook = capture_hook;
    a.hook_ctx = &cap;
    RS_TRY(rs_model_forward(&in->model, &b->rs, &a, B, T));
    for (int m = 0; m < in->M; m++)
        rs_probe_pool_dense(rs_probe_h_block(in, f, m) + (size_t)w0 * (size_t)d, b->acc, b->hc + (size_t)m * cap.stride, d, B,
                            T, in->skip);
    for (int e = 0; e < in->n_e; e++) {
        const rs_eval_set *es = &in->es[e];
        for (int m = 0; m < in->M; m++) {
            const float *hm = b->hc + (size_t)m * cap.stride;
            const float *hp = es->variant == RS_VARIANT_RESAE && m > 0 ? hm - cap.stride : NULL;
            RS_TRY(rs_eval_splice_error(NULL, &b->w, es, m, hm, hp, (int64_t)B * T));
            rs_probe_pool_codes(rs_probe_z_block(in, f, e, m) + (size_t)w0 * (size_t)in->n_lat, b->acc, b->w.idx, b->w.val,
                                es->L[m].sae->k, in->n_lat, es->L[m].scale, B, T, in->skip);
        }
    }
    return RS_OK;
}

/* Every block on rank 0: each rank sends its windows' rows. */
static rs_err gather_rows(float *blk, int F, const int *w_lo, const int *w_hi, const rs_task_ctx *c) {
    if (c->size == 1) return RS_OK;
    int *cnt = malloc(sizeof(int) * (size_t)c->size), *off = malloc(sizeof(int) * (size_t)c->size);
    RS_CHECK(cnt && off, RS_ERR_NOMEM, "out of memory");
    for (int r = 0; r < c->size; r++) {
        cnt[r] = (w_hi[r] - w_lo[r]) * F;
        off[r] = w_lo[r] * F;
    }
    float *mine = blk + (size_t)off[c->rank];
    int rc = MPI_Gatherv(c->rank == 0 ? MPI_IN_PLACE : mine, cnt[c->rank], MPI_FLOAT, blk, cnt, off, MPI_FLOAT, 0,
                         c->comm);
    free(cnt);
    free(off);
    RS_CHECK(rc == MPI_SUCCESS, RS_ERR_MPI, "MPI_Gatherv of pooled probe features failed");
    return RS_OK;
}

/* The features of class set S on rank 0 (other ranks hold only their own rows). Ranks take whole
 * batches of B windows, so each window's numbers do not depend on the rank count. */
rs_err rs_probe_class_set_feats(rs_probe_feats *f, const rs_probe_inputs *in, const rs_probe_set *S, const rs_task_ctx *c) {
    int B = (int)c->run->cfg.eval.batch_sequences, nb = (S->n_windows + B - 1) / B;
    f->n_w = S->n_windows;
    f->h = calloc((size_t)in->M * (size_t)f->n_w * (size_t)in->d, sizeof(float));
    f->z = calloc((size_t)in->n_e * (size_t)in->M * (size_t)f->n_w * (size_t)in->n_lat, sizeof(float));
    int *w_lo = calloc((size_t)c->size, sizeof(int)), *w_hi = calloc((size_t)c->size, sizeof(int));
    batch_work b;
    memset(&b, 0, sizeof b);
    rs_err err = f->h && f->z && w_lo && w_hi ? work_init(&b, in, B)
                                              : RS_ERR(RS_ERR_NOMEM, "out of memory for pooled probe features");
    for (int r = 0; r < c->size && w_lo && w_hi; r++) {
        int64_t lo, hi;
        rs_range_share(&lo, &hi, nb, r, c->size);
        w_lo[r] = (int)lo * B < f->n_w ? (int)lo * B : f->n_w;
        w_hi[r] = (int)hi * B < f->n_w ? (int)hi * B : f->n_w;
    }
    for (int w0 = err ? 0 : w_lo[c->rank]; !err && w0 < w_hi[c->rank]; w0 += B)
        err = batch_feats(f, &b, in, S, w0, w_hi[c->rank] - w0 < B ? w_hi[c->rank] - w0 : B);
    work_free(&b);
    err = rs_agree(err, c->comm, "pooling the probe features");
    for (int m = 0; m < in->M && !err; m++) err = gather_rows(rs_probe_h_block(in, f, m), in->d, w_lo, w_hi, c);
    for (int q = 0; q < in->n_e * in->M && !err; q++)
        err = gather_rows(rs_probe_z_block(in, f, q / in->M, q % in->M), in->n_lat, w_lo, w_hi, c);
    free(w_lo);
    free(w_hi);
    return err;
}

/* =====================================================================================================
 * Probes (rank 0)
 * ===================================================================================================== */

typedef rs_probe_rows rows;
#define push rs_probe_rows_push

rs_err rs_probe_rows_push(rs_probe_rows *r, const double *q) {
    if (r->n == r->cap) {
        int cap = 2 * r->cap + 256;
        double *p = realloc(r->v, sizeof(double) * (size_t)cap * (size_t)r->nc);
        RS_CHECK_ALLOC(p);
        r->v = p;
        r->cap = cap;
    }
    memcpy(r->v + (size_t)r->n++ * (size_t)r->nc, q, sizeof(double) * (size_t)r->nc);
    return RS_OK;
}

typedef struct probe_out {
    rows acc, lat, cls;
} probe_out;

/* Fits for each K of the config on the top-K of sel (sel sorted by score, kmax long; a K above
 * kmax, more than the features there are, is skipped). */
static rs_err fit_ks(probe_out *o, const double *key, const rs_probe_blocks *X, const int64_t *sel, int kmax,
                     const rs_probe_task *t, const rs_config *c) {
    double q[RS_PROBE_TABLE_NC];
    memcpy(q, key, sizeof q);
    for (int j = 0; j < c->eval.probing.top_k.n; j++) {
        int K = (int)c->eval.probing.top_k.v[j];
        if (K > kmax) continue;
        q[5] = K;
        RS_TRY(rs_probe_fit(&q[8], X, sel, K, t, c->eval.probing.l2_c));
        RS_TRY(push(&o->acc, q));
    }
    return RS_OK;
}

static int kmax_of(const rs_config *c, int64_t n_features) {
    int64_t k = c->eval.probing.top_k.v[c->eval.probing.top_k.n - 1];
    return (int)(k < n_features ? k : n_features);
}

/* The model's pooled h at layer m: top-K dimensions and all d. */
static rs_err probe_model(probe_out *o, const rs_probe_inputs *in, const rs_probe_feats *f, int m, const rs_probe_task *t,
                          const double *key, const rs_config *c) {
    const float *X0 = rs_probe_h_block(in, f, m);
    rs_probe_blocks X = {1, &X0, &in->d};
    int64_t *sel = malloc(sizeof(int64_t) * (size_t)in->d);
    RS_CHECK_ALLOC(sel);
    double q[RS_PROBE_TABLE_NC];
    memcpy(q, key, sizeof q);
    q[0] = q[1] = q[2] = -1;
    q[3] = RS_PROBE_MODEL_TOPK;
    q[4] = in->set->layers[m];
    rs_err err = rs_probe_topk(sel, &X, t, kmax_of(c, in->d));
    if (!err) err = fit_ks(o, q, &X, sel, kmax_of(c, in->d), t, c);
    for (int i = 0; i < in->d; i++) sel[i] = i;
    q[3] = RS_PROBE_MODEL_ALL;
    q[5] = in->d;
    if (!err) err = rs_probe_fit(&q[8], &X, sel, in->d, t, c->eval.probing.l2_c);
    if (!err) err = push(&o->acc, q);
    free(sel);
    return err;
}

/* SAE latents of evaluation e over layers [m0, m1) (one layer, or the union: scope -1). */
static rs_err probe_sae(probe_out *o, const rs_probe_inputs *in, const rs_probe_feats *f, int e, int m0, int m1,
                        const rs_probe_task *t, const double *key, const rs_config *c) {
    const float *Xs[RS_EVAL_MAX_LAYERS];
    int F[RS_EVAL_MAX_LAYERS];
    for (int m = m0; m < m1; m++) {
        Xs[m - m0] = rs_probe_z_block(in, f, e, m);
        F[m - m0] = in->n_lat;
    }
    rs_probe_blocks X = {m1 - m0, Xs, F};
    int kmax = kmax_of(c, (int64_t)(m1 - m0) * in->n_lat);
    int64_t sel[64 + 1], *s = kmax <= 64 ? sel : malloc(sizeof(int64_t) * (size_t)kmax);
    RS_CHECK_ALLOC(s);
    double q[RS_PROBE_TABLE_NC], l[RS_PROBE_LATENT_NC];
    memcpy(q, key, sizeof q);
    q[3] = RS_PROBE_SAE;
    q[4] = m1 - m0 == 1 ? in->set->layers[m0] : -1;
    rs_err err = rs_probe_topk(s, &X, t, kmax);
    if (!err) err = fit_ks(o, q, &X, s, kmax, t, c);
    for (int j = 0; j < kmax && !err; j++) {
        double row[RS_PROBE_LATENT_NC] = {q[0], q[1], q[2], q[4], q[6], q[7], j,
                                          in->set->layers[m0 + s[j] / in->n_lat], (double)(s[j] % in->n_lat)};
        memcpy(l, row, sizeof l);
        err = push(&o->lat, l);
    }
    if (s != sel) free(s);
    return err;
}

/* K random latents of layer m (the floor), one draw per class set, class, layer and K. */
static rs_err probe_random(probe_out *o, const rs_probe_inputs *in, const rs_probe_feats *f, int e, int m, int cs, int cls,
                           const rs_probe_task *t, const double *key, const rs_config *c) {
    const float *X0 = rs_probe_z_block(in, f, e, m);
    rs_probe_blocks X = {1, &X0, &in->n_lat};
    double q[RS_PROBE_TABLE_NC];
    memcpy(q, key, sizeof q);
    q[3] = RS_PROBE_RANDOM;
    q[4] = in->set->layers[m];
    for (int j = 0; j < c->eval.probing.top_k.n; j++) {
        int K = (int)c->eval.probing.top_k.v[j];
        if (K > in->n_lat) continue;
        int64_t *sel = malloc(sizeof(int64_t) * (size_t)K);
        RS_CHECK_ALLOC(sel);
        rs_err err = rs_probe_random(sel, in->n_lat, K, (uint64_t)c->eval.probing.seed,
                                     (uint64_t)cs * RS_PROBE_MAX_CLASSES + (uint64_t)cls,
                                     (uint64_t)in->set->layers[m] * 65536 + (uint64_t)K);
        q[5] = K;
        if (!err) err = rs_probe_fit(&q[8], &X, sel, K, t, c->eval.probing.l2_c);
        free(sel);
        RS_TRY(err);
        RS_TRY(push(&o->acc, q));
    }
    return RS_OK;
}

static rs_err probe_class(probe_out *o, const rs_probe_inputs *in, const rs_probe_feats *f, int cs, int cls,
                          const rs_config *c) {
    const rs_probe_task *t = &in->plan.sets[cs].task[cls];
    double key[RS_PROBE_TABLE_NC] = {0, 0, 0, 0, 0, 0, cs, in->plan.sets[cs].label[cls], 0};
    for (int m = 0; m < in->M; m++) RS_TRY(probe_model(o, in, f, m, t, key, c));
    for (int e = 0; e < in->n_e; e++) {
        key[0] = in->ev[e]->variant;
        key[1] = in->ev[e]->k;
        key[2] = (double)in->ev[e]->seed;
        for (int m = 0; m < in->M; m++) {
            RS_TRY(probe_sae(o, in, f, e, m, m + 1, t, key, c));
            RS_TRY(probe_random(o, in, f, e, m, cs, cls, t, key, c));
        }
        if (in->M > 1) RS_TRY(probe_sae(o, in, f, e, 0, in->M, t, key, c));
    }
    return RS_OK;
}

/* Mean rows of the probing table over the rows with class_set >= 0 and (by_label) label >= 0 or (else)
 * label -1, grouped by their first ncmp columns; the mean row has -1 in columns ncmp..7. So
 * add_means(r, 7, 1) gives each class set's mean over its classes, then add_means(r, 6, 0) the mean
 * of those over the class sets. */
static rs_err add_means(rows *r, int ncmp, int by_label) {
    int n0 = r->n;
    char *done = calloc((size_t)n0 + 1, 1);
    RS_CHECK_ALLOC(done);
    rs_err err = RS_OK;
    for (int i = 0; i < n0 && !err; i++) {
        const double *q = r->v + (size_t)i * (size_t)r->nc;
        if (done[i] || q[6] < 0 || (by_label ? q[7] < 0 : q[7] != -1)) continue;
        double sum = 0, row[RS_PROBE_TABLE_NC];
        int cnt = 0;
        for (int j = i; j < n0; j++) {
            const double *p = r->v + (size_t)j * (size_t)r->nc;
            if (done[j] || p[6] < 0 || (by_label ? p[7] < 0 : p[7] != -1)) continue;
            if (memcmp(p, q, sizeof(double) * (size_t)ncmp)) continue;
            done[j] = 1;
            sum += p[8];
            cnt++;
        }
        memcpy(row, q, sizeof row);
        for (int k = ncmp; k < 8; k++) row[k] = -1;
        row[8] = sum / cnt;
        err = push(r, row);
    }
    free(done);
    return err;
}

/* =====================================================================================================
 * The task
 * ===================================================================================================== */

static rs_err class_rows(rows *r, const rs_probe_inputs *in, int cs) {
    const rs_probe_set *S = &in->plan.sets[cs];
    for (int c = 0; c < S->C; c++) {
        double q[RS_PROBE_CLASS_NC] = {cs, S->label[c], 0, 0, (double)in->plan.o.n_train, (double)in->plan.o.n_test};
        for (int64_t i = 0; i < in->data.n; i++)
            if (in->data.labels[i] == S->label[c]) {
                q[2]++;
                q[3] += in->plan.test_side[i] == 1;
            }
        RS_TRY(push(r, q));
    }
    return RS_OK;
}

rs_err rs_probe_label_names_attr(hid_t f, const rs_probe_data *d) {
    char *names = malloc((size_t)d->n_labels * RS_PROBE_NAME_MAX + 1);
    RS_CHECK(names, RS_ERR_NOMEM, "out of memory");
    size_t off = 0;
    names[0] = '\0';
    for (int i = 0; i < d->n_labels; i++) off += (size_t)sprintf(names + off, i ? ",%s" : "%s", d->label_names[i]);
    rs_err err = rs_h5_attr_str(f, "label_names", names);
    free(names);
    return err;
}

static rs_err write_file(const char *path, const rs_probe_inputs *in, const probe_out *o, const rs_run *run,
                         double seconds) {
    char tmp[4200];
    hid_t f;
    RS_TRY(rs_taskfile_create(&f, tmp, sizeof tmp, path));
    rs_err err = rs_taskfile_write_table(f, "probing", o->acc.v, o->acc.n, RS_PROBE_TABLE_NC, RS_PROBE_TABLE_COLS,
                                         rs_probe_definitions[0]);
    if (!err) err = rs_taskfile_write_table(f, "probing_latents", o->lat.v, o->lat.n, RS_PROBE_LATENT_NC,
                                            RS_PROBE_LATENT_COLS, rs_probe_definitions[1]);
    if (!err) err = rs_taskfile_write_table(f, "probing_classes", o->cls.v, o->cls.n, RS_PROBE_CLASS_NC,
                                            RS_PROBE_CLASS_COLS, rs_probe_definitions[2]);
    if (!err) err = rs_probe_label_names_attr(f, &in->data);
    if (!err) err = rs_h5_attr_str(f, "task", "probe");
    if (!err) err = rs_h5_attr_str(f, "set", in->set->name);
    if (!err) err = rs_h5_attr_str(f, "data", run->cfg.eval.probing.data);
    if (!err) err = rs_h5_attr_i64(f, "n_class_sets", in->plan.n_sets);
    if (!err) err = rs_h5_attr_i64(f, "n_eligible", in->plan.n_eligible);
    if (!err) err = rs_h5_attr_f64(f, "seconds", seconds);
    if (err) {
        H5Fclose(f);
        return err;
    }
    return rs_taskfile_commit(f, tmp, path);
}

/* One class set: pooled features (collective), then the probes on rank 0. */
static rs_err probe_class_set(probe_out *o, double *secs, const rs_probe_inputs *in, int cs, const rs_task_ctx *c) {
    rs_probe_feats f;
    memset(&f, 0, sizeof f);
    double t0 = rs_now();
    rs_err err = rs_probe_class_set_feats(&f, in, &in->plan.sets[cs], c);
    double t1 = rs_now();
    if (!err && c->rank == 0) {
        for (int cls = 0; cls < in->plan.sets[cs].C && !err; cls++) err = probe_class(o, in, &f, cs, cls, &c->run->cfg);
        if (!err) err = class_rows(&o->cls, in, cs);
    }
    secs[0] += t1 - t0;
    secs[1] += rs_now() - t1;
    free(f.h);
    free(f.z);
    return err;
}

rs_err rs_stage_probe_run(const rs_task_ctx *c, int set, const char *path) {
    const rs_run *run = c->run;
    rs_probe_inputs in;
    memset(&in, 0, sizeof in);
    probe_out o = {{.nc = RS_PROBE_TABLE_NC}, {.nc = RS_PROBE_LATENT_NC}, {.nc = RS_PROBE_CLASS_NC}};
    double t0 = rs_now(), secs[2] = {0, 0};
    rs_err err = rs_probe_inputs_load(&in, run, set, NULL);
    RS_TRY_GOTO(rs_agree(err, c->comm, "loading the probing inputs"), done);
    for (int cs = 0; cs < in.plan.n_sets; cs++) {
        err = probe_class_set(&o, secs, &in, cs, c);
        RS_TRY_GOTO(rs_agree(err, c->comm, "the probes of a class set"), done);
    }
    if (c->rank == 0) {
        err = add_means(&o.acc, 7, 1);
        if (!err) err = add_means(&o.acc, 6, 0);
        if (!err) err = write_file(path, &in, &o, run, rs_now() - t0);
    }
    RS_TRY_GOTO(rs_agree(err, c->comm, "writing the probing task file"), done);
    RS_INFO("probe %s: %d class sets of %d classes, %d evaluations; features %.2fs, probes %.2fs (rank 0)",
            in.set->name, in.plan.n_sets, in.plan.n_sets ? in.plan.sets[0].C : 0, in.n_e, secs[0], secs[1]);
done:
    rs_probe_inputs_free(&in);
    free(o.acc.v);
    free(o.lat.v);
    free(o.cls.v);
    return err;
}
