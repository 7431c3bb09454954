/* The TPP stage (stage_tpp.h, docs/tpp.md). */
#define _GNU_SOURCE
#include "resae/stage_tpp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/h5util.h"
#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/probe.h"
#include "resae/stage_probe.h"
#include "resae/taskfile.h"
#include "resae/tasks.h"
#include "resae/tpp.h"
#include "resae/util.h"

const char *const rs_tpp_kind_names[RS_TPP_KIND_COUNT] = {
    "single", "global", "joint", "global_part", "joint_part", "random", "local", "global_interaction",
    "joint_interaction"};

const char *const rs_tpp_definitions[3] = {
    "Targeted probe perturbation (EVAL_SPEC B/C, docs/tpp.md). Per class i of a class set (the probing plan): "
    "a probe (Linear+bias, AdamW lr 1e-3 wd 0.01, BCE + 1e-3 sum|w|, batch 16, eval.tpp.epochs epochs, best epoch by "
    "test accuracy) on pooled clean h at P = the set's last layer; effect of latent f of layer m: "
    "max(0, mean_pos(zh_f) - mean_neg(zh_f)) on the train task times w_i . J_m d_f (J_m the linear parts of the "
    "affine maps from l_m to P); the k = min(N, #nonzero) largest signed effects (ties: lower layer, latent). "
    "kind single: N at layer `layer`; global: N over all layers; joint: floor(N/M) per layer, +1 at the deepest N mod "
    "M; *_part: that set's latents of `layer` alone; random: the joint split of random latents; ablation h <- h - "
    "sum_F zh_f d_f at positions pool_skip_first..T-1 of layer l_m, teacher-forced (codes of the clean stream), "
    "forward from the first ablated layer to P, pooled over pool_skip_first..T-1. local: SAEBench-exact at "
    "`layer` (probe there, no forward, effects with J = I). intended = a_i - a'_i, unintended = mean_{j != i} (a_j - "
    "a'_j), tpp = intended - unintended, accuracies on the fixed test tasks; *_interaction = the budget's value minus "
    "the sum of its parts' values. label -1 = mean over the class set's classes, class_set -1 = mean of those",
    "The chosen latents of the global and joint sets: rank = position in the effect order (global) or within the "
    "layer (joint), layer = model layer, effect = the signed effect",
    "The TPP probes: accuracy on the class's clean test task (pooled as for the effects) and the kept epoch"};

/* =====================================================================================================
 * Passes: one ablation set each, as a flat int array that rank 0 builds and broadcasts
 *   [e, cls, kind, layer (0-based m or -1), N, n_0 .. n_{M-1}, latents of layer 0, ..., of layer M-1]
 * ===================================================================================================== */

enum { P_E, P_CLS, P_KIND, P_LAYER, P_N, P_HEAD };

typedef struct ints {
    int32_t *v;
    int64_t n, cap;
} ints;

static rs_err ints_push(ints *a, int32_t x) {
    if (a->n == a->cap) {
        int64_t cap = 2 * a->cap + 1024;
        int32_t *p = realloc(a->v, sizeof(int32_t) * (size_t)cap);
        RS_CHECK_ALLOC(p);
        a->v = p;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return RS_OK;
}

typedef rs_probe_rows rows;
#define push rs_probe_rows_push

/* Offsets of each pass in the flat array. */
static rs_err pass_index(int64_t **off, int *n_pass, const ints *a, int M) {
    int n = 0;
    for (int64_t p = 0; p < a->n; n++) {
        int64_t len = P_HEAD + M;
        for (int m = 0; m < M; m++) len += a->v[p + P_HEAD + m];
        p += len;
    }
    *off = malloc(sizeof(int64_t) * (size_t)(n + 1));
    RS_CHECK_ALLOC(*off);
    n = 0;
    for (int64_t p = 0; p < a->n; n++) {
        (*off)[n] = p;
        int64_t len = P_HEAD + M;
        for (int m = 0; m < M; m++) len += a->v[p + P_HEAD + m];
        p += len;
    }
    *n_pass = n;
    return RS_OK;
}

/* =====================================================================================================
 * The task state
 * ===================================================================================================== */

typedef struct tpp_state {
    rs_probe_inputs in;
    rs_affine_map *jm; // (M) jm[m] = the map l_{m-1} -> l_m, m >= 1 (the chain J)
    int C, n_cs, single, random;
    rs_int_list budgets;
    rs_tpp_probe_opts po;
    rows out, lat, prb;
    double secs[3];    // features, probes + selection, passes
    int64_t n_passes;
} tpp_state;

static void state_free(tpp_state *s) {
    for (int m = 0; s->jm && m < s->in.M; m++) rs_affine_map_free(&s->jm[m]);
    free(s->jm);
    rs_probe_inputs_free(&s->in);
    free(s->out.v);
    free(s->lat.v);
    free(s->prb.v);
}

static const float *W_dec(const tpp_state *s, int e, int m) {
    rs_sae_params p;
    const rs_sae *sae = s->in.es[e].L[m].sae;
    rs_sae_params_view(&p, sae->slab, sae->d, sae->n_latents);
    return p.W_dec;
}

/* =====================================================================================================
 * Rank 0: probes, effects and selections of one class set
 * ===================================================================================================== */

typedef struct cs_probes {
    rs_tpp_probe *p; // (M, C): p[m * C + i] the probe of class i at layer m; m = M-1 is P
} cs_probes;

static void probes_free(cs_probes *q, int n) {
    for (int i = 0; q->p && i < n; i++) rs_tpp_probe_free(&q->p[i]);
    free(q->p);
}

static rs_err train_probes(cs_probes *q, tpp_state *s, const rs_probe_feats *f, int cs) {
    const rs_probe_inputs *in = &s->in;
    const rs_probe_set *S = &in->plan.sets[cs];
    q->p = calloc((size_t)in->M * (size_t)s->C, sizeof *q->p);
    RS_CHECK_ALLOC(q->p);
    for (int m = 0; m < in->M; m++)
        for (int i = 0; i < s->C; i++) {
            rs_tpp_probe *p = &q->p[m * s->C + i];
            RS_TRY(rs_tpp_probe_train(p, rs_probe_h_block(in, f, m), in->d, &S->task[i], &s->po,
                                      (uint64_t)s->in.plan.o.seed, (uint64_t)cs * RS_PROBE_MAX_CLASSES + (uint64_t)i,
                                      (uint64_t)in->set->layers[m]));
            double row[RS_TPP_PROBE_NC] = {cs, S->label[i], in->set->layers[m], p->accuracy, p->best_epoch};
            RS_TRY(push(&s->prb, row));
        }
    return RS_OK;
}

/* v_m = J_m^T w for every m (J_{M-1} = I): v (M, d). */
static void carry_back(double *v, const tpp_state *s, const double *w) {
    int M = s->in.M, d = s->in.d;
    memcpy(v + (size_t)(M - 1) * (size_t)d, w, sizeof(double) * (size_t)d);
    for (int m = M - 1; m >= 1; m--) {
        const rs_affine_map *A = &s->jm[m];
        const double *vm = v + (size_t)m * (size_t)d;
        double *vp = v + (size_t)(m - 1) * (size_t)d;
        for (int k = 0; k < d; k++) vp[k] = 0;
        for (int r = 0; r < d; r++)
            for (int k = 0; k < d; k++) vp[k] += A->A[(size_t)r * (size_t)A->dx + (size_t)k] * vm[r];
    }
}

/* One pass: header, the counts, then each layer's latents. lists[m] (n[m]). */
static rs_err add_pass(ints *a, int M, int e, int cls, int kind, int layer, int N, const int *n,
                       int32_t *const *lists) {
    int32_t head[P_HEAD] = {e, cls, kind, layer, N};
    for (int j = 0; j < P_HEAD; j++) RS_TRY(ints_push(a, head[j]));
    for (int m = 0; m < M; m++) RS_TRY(ints_push(a, n[m]));
    for (int m = 0; m < M; m++)
        for (int j = 0; j < n[m]; j++) RS_TRY(ints_push(a, lists[m][j]));
    return RS_OK;
}

static rs_err latent_rows(tpp_state *s, int e, int kind, int N, int cs, int cls, int m, const int32_t *sel, int n,
                          const double *E) {
    const rs_grid_eval *ge = s->in.ev[e];
    for (int j = 0; j < n; j++) {
        double row[RS_TPP_LATENT_NC] = {ge->variant, ge->k, (double)ge->seed, kind, N, cs,
                                        s->in.plan.sets[cs].label[cls], j, s->in.set->layers[m], sel[j], E[sel[j]]};
        RS_TRY(push(&s->lat, row));
    }
    return RS_OK;
}

/* Every pass of evaluation e and class i at every budget, and the local control's rows. */
static rs_err select_class(ints *a, tpp_state *s, const rs_probe_feats *f, const cs_probes *q, int cs, int e, int i,
                           const double *a_loc /*(M, C) clean local accuracies*/) {
    const rs_probe_inputs *in = &s->in;
    const rs_probe_task *t = &in->plan.sets[cs].task[i];
    int M = in->M, d = in->d, nl = in->n_lat, C = s->C;
    const rs_int_list *budgets = &s->budgets;
    int Nmax = (int)budgets->v[budgets->n - 1];
    double *v = malloc(sizeof(double) * (size_t)M * (size_t)d);
    double *E = malloc(sizeof(double) * (size_t)M * (size_t)nl), *El = malloc(sizeof(double) * (size_t)nl);
    int32_t *sel = malloc(sizeof(int32_t) * (size_t)(Nmax > M * nl ? Nmax : M * nl) * 2);
    int32_t *lists[RS_EVAL_MAX_LAYERS], *store = malloc(sizeof(int32_t) * (size_t)M * (size_t)(Nmax + 1));
    float *hx = malloc(sizeof(float) * (size_t)d);
    rs_err err = v && E && El && sel && store && hx ? RS_OK : RS_ERR(RS_ERR_NOMEM, "out of memory for TPP selection");
    if (!err) carry_back(v, s, q->p[(M - 1) * C + i].w);
    for (int m = 0; m < M && !err; m++) {
        lists[m] = store + (size_t)m * (size_t)(Nmax + 1);
        err = rs_tpp_effects(E + (size_t)m * (size_t)nl, rs_probe_z_block(in, f, e, m), nl, t, v + (size_t)m * (size_t)d,
                             W_dec(s, e, m), d);
    }
    const rs_grid_eval *ge = in->ev[e];
    for (int b = 0; b < budgets->n && !err; b++) {
        int N = (int)budgets->v[b], n[RS_EVAL_MAX_LAYERS], k;
        /* single(m, N) */
        for (int m = 0; m < M && !err && s->single; m++) {
            for (int j = 0; j < M; j++) n[j] = 0;
            err = rs_tpp_top(&n[m], lists[m], E + (size_t)m * (size_t)nl, nl, N);
            if (!err && n[m]) err = add_pass(a, M, e, i, RS_TPP_SINGLE, m, N, n, lists);
        }
        /* global(N) and its parts */
        if (!err) err = rs_tpp_top(&k, sel, E, M * nl, N);
        for (int m = 0; m < M; m++) n[m] = 0;
        for (int j = 0; j < k && !err; j++) {
            int m = sel[j] / nl;
            lists[m][n[m]++] = sel[j] % nl;
        }
        if (!err) err = add_pass(a, M, e, i, RS_TPP_GLOBAL, -1, N, n, lists);
        for (int m = 0; m < M && !err; m++) {
            if (!n[m]) continue;
            int one[RS_EVAL_MAX_LAYERS] = {0};
            one[m] = n[m];
            err = add_pass(a, M, e, i, RS_TPP_GLOBAL_PART, m, N, one, lists);
            if (!err) err = latent_rows(s, e, RS_TPP_GLOBAL, N, cs, i, m, lists[m], n[m], E + (size_t)m * (size_t)nl);
        }
        /* per-layer joint(N) and its parts */
        for (int m = 0; m < M && !err; m++) {
            err = rs_tpp_top(&n[m], lists[m], E + (size_t)m * (size_t)nl, nl, rs_tpp_joint_share(N, M, m));
            if (!err) err = latent_rows(s, e, RS_TPP_JOINT, N, cs, i, m, lists[m], n[m], E + (size_t)m * (size_t)nl);
        }
        if (!err) err = add_pass(a, M, e, i, RS_TPP_JOINT, -1, N, n, lists);
        for (int m = 0; m < M && !err; m++) {
            if (!n[m]) continue;
            int one[RS_EVAL_MAX_LAYERS] = {0};
            one[m] = n[m];
            err = add_pass(a, M, e, i, RS_TPP_JOINT_PART, m, N, one, lists);
        }
        /* random control: the joint split, uniform latents (the same draw for every variant and k) */
        if (s->random) {
            for (int m = 0; m < M && !err; m++) {
                n[m] = rs_tpp_joint_share(N, M, m);
                if (n[m] > nl) n[m] = nl;
                if (!n[m]) continue;
                int64_t *r = malloc(sizeof(int64_t) * (size_t)n[m]);
                err = r ? rs_probe_random(r, nl, n[m], (uint64_t)in->plan.o.seed,
                                          (uint64_t)cs * RS_PROBE_MAX_CLASSES + (uint64_t)i,
                                          1000000 + (uint64_t)in->set->layers[m] * 65536 + (uint64_t)N)
                        : RS_ERR(RS_ERR_NOMEM, "out of memory");
                for (int j = 0; !err && j < n[m]; j++) lists[m][j] = (int32_t)r[j];
                free(r);
            }
            if (!err) err = add_pass(a, M, e, i, RS_TPP_RANDOM, -1, N, n, lists);
        }
        /* local control at each layer: probe there, effects with J = I, no forward (pooling is linear) */
        for (int m = 0; m < M && !err; m++) {
            const rs_tpp_probe *pm = &q->p[m * C + i];
            const float *Z = rs_probe_z_block(in, f, e, m), *H = rs_probe_h_block(in, f, m), *W = W_dec(s, e, m);
            err = rs_tpp_effects(El, Z, nl, t, pm->w, W, d);
            if (!err) err = rs_tpp_top(&k, sel, El, nl, N);
            if (err || !k) continue;
            double acc[RS_PROBE_MAX_CLASSES];
            for (int j = 0; j < C; j++) {
                const rs_probe_task *tj = &in->plan.sets[cs].task[j];
                const rs_tpp_probe *pj = &q->p[m * C + j];
                int ok = 0;
                for (int r = 0; r < tj->n_test; r++) {
                    size_t w = (size_t)tj->test[r];
                    for (int x = 0; x < d; x++) hx[x] = H[w * (size_t)d + (size_t)x];
                    for (int x = 0; x < k; x++) {
                        double zf = Z[w * (size_t)nl + (size_t)sel[x]];
                        const float *row = W + (size_t)sel[x] * (size_t)d;
                        for (int y = 0; y < d; y++) hx[y] = (float)((double)hx[y] - zf * (double)row[y]);
                    }
                    ok += (rs_tpp_logit(pj, hx) > 0) == (tj->y_test[r] == 1);
                }
                acc[j] = (double)ok / tj->n_test;
            }
            double row[RS_TPP_TABLE_NC] = {ge->variant, ge->k, (double)ge->seed, RS_TPP_LOCAL, in->set->layers[m], N, cs,
                                           in->plan.sets[cs].label[i], 0, 0, 0};
            rs_tpp_metric(&row[8], &row[9], a_loc + (size_t)m * (size_t)C, acc, C, i);
            row[10] = row[8] - row[9];
            err = push(&s->out, row);
        }
    }
    free(v);
    free(E);
    free(El);
    free(sel);
    free(store);
    free(hx);
    return err;
}

/* =====================================================================================================
 * Ablation passes over the class set's test windows (collective)
 * ===================================================================================================== */

typedef struct pass_work {
    rs_run_state rs;
    rs_eval_work w;
    int B, T, d, M, nl, kmax;
    int32_t *tok;     // (B, T)
    float *hc;        // (M, B, T, d) clean streams at the set's layers
    int32_t *idx;     // (M, B T, kmax) clean codes of the current evaluation
    float *val;       // (M, B T, kmax)
    float *delta;     // (M, B, T, d) the ablation of the current pass at each layer
    float *x;         // (B, T, d)
    float *out;       // (B, T, d)
    float *pooled;    // (B, d)
    double *acc;      // (d)
    unsigned char *mask; // (n_lat)
    /* hook */
    const int *layers;
    int m0, used[RS_EVAL_MAX_LAYERS];
} pass_work;

static void pw_free(pass_work *w) {
    rs_run_state_free(&w->rs);
    rs_eval_work_free(&w->w);
    free(w->tok);
    free(w->hc);
    free(w->idx);
    free(w->val);
    free(w->delta);
    free(w->x);
    free(w->out);
    free(w->pooled);
    free(w->acc);
    free(w->mask);
}

static rs_err pw_init(pass_work *w, const tpp_state *s, int B) {
    const rs_probe_inputs *in = &s->in;
    memset(w, 0, sizeof *w);
    w->B = B;
    w->T = in->T;
    w->d = in->d;
    w->M = in->M;
    w->nl = in->n_lat;
    w->layers = in->set->layers;
    int big = 0;
    for (int e = 0; e < in->n_e; e++) {
        if (in->ev[e]->k > w->kmax) w->kmax = in->ev[e]->k;
        if (in->ev[e]->k > in->ev[big]->k) big = e;
    }
    size_t BT = (size_t)B * (size_t)in->T, BTd = BT * (size_t)in->d, M = (size_t)in->M;
    RS_TRY(rs_run_state_init(&w->rs, &in->model, B, in->T));
    RS_TRY(rs_eval_work_init(&w->w, &in->es[big], (int64_t)BT));
    w->tok = malloc(sizeof(int32_t) * BT);
    w->hc = malloc(sizeof(float) * M * BTd);
    w->idx = malloc(sizeof(int32_t) * M * BT * (size_t)w->kmax);
    w->val = malloc(sizeof(float) * M * BT * (size_t)w->kmax);
    w->delta = malloc(sizeof(float) * M * BTd);
    w->x = malloc(sizeof(float) * BTd);
    w->out = malloc(sizeof(float) * BTd);
    w->pooled = malloc(sizeof(float) * (size_t)B * (size_t)in->d);
    w->acc = malloc(sizeof(double) * (size_t)in->d);
    w->mask = calloc((size_t)in->n_lat, 1);
    RS_CHECK(w->tok && w->hc && w->idx && w->val && w->delta && w->x && w->out && w->pooled && w->acc && w->mask,
             RS_ERR_NOMEM, "out of memory for TPP batches of %d windows", B);
    return RS_OK;
}

static rs_err capture_hook(void *ctx, int layer, float *h, int B, int T, int d) {
    pass_work *w = ctx;
    size_t n = (size_t)B * (size_t)T * (size_t)d, stride = (size_t)w->B * (size_t)w->T * (size_t)w->d;
    for (int m = 0; m < w->M; m++)
        if (w->layers[m] == layer) memcpy(w->hc + (size_t)m * stride, h, sizeof(float) * n);
    return RS_OK;
}

/* Teacher-forced: the ablation of every later layer was computed from the clean codes. */
static rs_err ablate_hook(void *ctx, int layer, float *h, int B, int T, int d) {
    pass_work *w = ctx;
    size_t n = (size_t)B * (size_t)T * (size_t)d, stride = (size_t)w->B * (size_t)w->T * (size_t)w->d;
    for (int m = w->m0 + 1; m < w->M; m++)
        if (w->layers[m] == layer && w->used[m]) {
            const float *dl = w->delta + (size_t)m * stride;
            for (size_t q = 0; q < n; q++) h[q] += dl[q];
        }
    return RS_OK;
}

/* delta_m = -sum_{f in F_m} zh_f d_f at positions skip..T-1 of the B windows. */
static void make_delta(pass_work *w, const tpp_state *s, int e, int m, const int32_t *lat, int n, int B) {
    const rs_probe_inputs *in = &s->in;
    size_t BT = (size_t)w->B * (size_t)w->T, stride = BT * (size_t)w->d;
    float *dl = w->delta + (size_t)m * stride;
    const int32_t *idx = w->idx + (size_t)m * BT * (size_t)w->kmax;
    const float *val = w->val + (size_t)m * BT * (size_t)w->kmax, *W = W_dec(s, e, m);
    int k = in->es[e].L[m].sae->k, d = w->d;
    double scale = in->es[e].L[m].scale;
    for (int j = 0; j < n; j++) w->mask[lat[j]] = 1;
    memset(dl, 0, sizeof(float) * (size_t)B * (size_t)w->T * (size_t)d);
    for (int b = 0; b < B; b++)
        for (int t = in->skip; t < w->T; t++) {
            size_t r = (size_t)b * (size_t)w->T + (size_t)t;
            float *o = dl + r * (size_t)d;
            for (int q = 0; q < k; q++) {
                int32_t f = idx[r * (size_t)k + (size_t)q];
                if (f < 0 || !w->mask[f]) continue;
                double zh = (double)val[r * (size_t)k + (size_t)q] / scale;
                const float *row = W + (size_t)f * (size_t)d;
                for (int x = 0; x < d; x++) o[x] = (float)((double)o[x] - zh * (double)row[x]);
            }
        }
    for (int j = 0; j < n; j++) w->mask[lat[j]] = 0;
}

/* Logits of the C probes at P for the B windows of pooled rows, into L (B, C). */
static void probe_logits(double *L, const pass_work *w, const rs_tpp_probe *P, int C, int B) {
    for (int b = 0; b < B; b++)
        for (int j = 0; j < C; j++) L[(size_t)b * (size_t)C + (size_t)j] = rs_tpp_logit(&P[j], w->pooled + (size_t)b * (size_t)w->d);
}

/* One batch of B test windows (positions tw[0..B) of the class set's list): the clean pass, then every
 * pass. logits (1 + n_pass, n_tw, C); this batch's rows start at window w0. */
static rs_err run_batch(double *logits, pass_work *w, const tpp_state *s, const rs_probe_set *S, const int32_t *tw,
                        int w0, int B, int n_tw, const ints *a, const int64_t *off, int n_pass, const rs_tpp_probe *P) {
    const rs_probe_inputs *in = &s->in;
    int T = w->T, d = w->d, M = w->M, C = s->C, top = in->set->layers[M - 1];
    size_t BT = (size_t)w->B * (size_t)T, stride = BT * (size_t)d, row = (size_t)n_tw * (size_t)C;
    for (int i = 0; i < B; i++)
        memcpy(w->tok + (size_t)i * (size_t)T, in->data.tokens + (size_t)S->windows[tw[w0 + i]] * (size_t)T,
               sizeof(int32_t) * (size_t)T);
    rs_forward_args fa = RS_FORWARD_ARGS_INIT;
    fa.tokens = w->tok;
    fa.stop_layer = top;
    fa.hook = capture_hook;
    fa.hook_ctx = w;
    RS_TRY(rs_model_forward(&in->model, &w->rs, &fa, B, T));
    rs_probe_pool_dense(w->pooled, w->acc, w->hc + (size_t)(M - 1) * stride, d, B, T, in->skip);
    probe_logits(logits + (size_t)w0 * (size_t)C, w, P, C, B);
    int cur_e = -1;
    for (int p = 0; p < n_pass; p++) {
        const int32_t *h = a->v + off[p], *n = h + P_HEAD;
        int e = h[P_E];
        if (e != cur_e) { /* clean codes of every layer for this evaluation */
            cur_e = e;
            const rs_eval_set *es = &in->es[e];
            for (int m = 0; m < M; m++) {
                const float *hm = w->hc + (size_t)m * stride;
                const float *hp = es->variant == RS_VARIANT_RESAE && m > 0 ? hm - stride : NULL;
                RS_TRY(rs_eval_splice_error(NULL, &w->w, es, m, hm, hp, (int64_t)B * T));
                size_t nk = (size_t)B * (size_t)T * (size_t)es->L[m].sae->k;
                memcpy(w->idx + (size_t)m * BT * (size_t)w->kmax, w->w.idx, sizeof(int32_t) * nk);
                memcpy(w->val + (size_t)m * BT * (size_t)w->kmax, w->w.val, sizeof(float) * nk);
            }
        }
        const int32_t *lat = n + M;
        w->m0 = -1;
        for (int m = 0; m < M; m++) {
            w->used[m] = n[m] > 0;
            if (n[m]) {
                if (w->m0 < 0) w->m0 = m;
                make_delta(w, s, e, m, lat, n[m], B);
            }
            lat += n[m];
        }
        double *L = logits + (size_t)(p + 1) * row + (size_t)w0 * (size_t)C;
        if (w->m0 < 0) { /* nothing to ablate: the clean logits */
            memcpy(L, logits + (size_t)w0 * (size_t)C, sizeof(double) * (size_t)B * (size_t)C);
            continue;
        }
        size_t nd = (size_t)B * (size_t)T * (size_t)d;
        const float *h0 = w->hc + (size_t)w->m0 * stride, *d0 = w->delta + (size_t)w->m0 * stride;
        for (size_t q = 0; q < nd; q++) w->x[q] = h0[q] + d0[q];
        const float *hp = w->x;
        if (w->m0 < M - 1) {
            rs_forward_args ab = RS_FORWARD_ARGS_INIT;
            ab.tokens = w->tok;
            ab.resid_in = w->x;
            ab.start_layer = in->set->layers[w->m0] + 1;
            ab.stop_layer = top;
            ab.hook = ablate_hook;
            ab.hook_ctx = w;
            ab.resid_out = w->out;
            RS_TRY(rs_model_forward(&in->model, &w->rs, &ab, B, T));
            hp = w->out;
        }
        rs_probe_pool_dense(w->pooled, w->acc, hp, d, B, T, in->skip);
        probe_logits(L, w, P, C, B);
    }
    return RS_OK;
}

/* Test windows of the class set, ascending: the first n_max (0: all) of each class's test pool (the
 * positives of its test task, which come first and ascending). where (n_windows): index into tw or -1. */
static rs_err test_windows(int32_t **tw, int *n_tw, int32_t **where, const rs_probe_set *S, int n_max) {
    *where = malloc(sizeof(int32_t) * (size_t)(S->n_windows > 0 ? S->n_windows : 1));
    *tw = malloc(sizeof(int32_t) * (size_t)(S->n_windows > 0 ? S->n_windows : 1));
    RS_CHECK(*where && *tw, RS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < S->n_windows; i++) (*where)[i] = -1;
    for (int c = 0; c < S->C; c++)
        for (int r = 0, kept = 0; r < S->task[c].n_test; r++)
            if (S->task[c].y_test[r] == 1 && (n_max <= 0 || kept < n_max)) {
                (*where)[S->task[c].test[r]] = 0;
                kept++;
            }
    int n = 0;
    for (int i = 0; i < S->n_windows; i++)
        if ((*where)[i] >= 0) {
            (*where)[i] = n;
            (*tw)[n++] = i;
        }
    *n_tw = n;
    return RS_OK;
}

/* =====================================================================================================
 * One class set
 * ===================================================================================================== */

/* Accuracy of probe j on the entries of its test task among the TPP test windows. */
static double task_accuracy(const double *L, const rs_probe_task *t, const int32_t *where, int C, int j) {
    int ok = 0, n = 0;
    for (int r = 0; r < t->n_test; r++) {
        int32_t w = where[t->test[r]];
        if (w < 0) continue;
        ok += (L[(size_t)w * (size_t)C + (size_t)j] > 0) == (t->y_test[r] == 1);
        n++;
    }
    return n ? (double)ok / n : 0.0;
}

/* Rank 0: the rows of every pass and the interactions of the budgets. */
static rs_err pass_rows(tpp_state *s, const double *logits, const int32_t *where, int n_tw, const ints *a,
                        const int64_t *off, int n_pass, int cs) {
    const rs_probe_set *S = &s->in.plan.sets[cs];
    int C = s->C;
    size_t row = (size_t)n_tw * (size_t)C;
    double a0[RS_PROBE_MAX_CLASSES], ap[RS_PROBE_MAX_CLASSES];
    for (int j = 0; j < C; j++) a0[j] = task_accuracy(logits, &S->task[j], where, C, j);
    int first = s->out.n;
    for (int p = 0; p < n_pass; p++) {
        const int32_t *h = a->v + off[p];
        const rs_grid_eval *ge = s->in.ev[h[P_E]];
        for (int j = 0; j < C; j++) ap[j] = task_accuracy(logits + (size_t)(p + 1) * row, &S->task[j], where, C, j);
        double q[RS_TPP_TABLE_NC] = {ge->variant, ge->k, (double)ge->seed, h[P_KIND],
                                     h[P_LAYER] >= 0 ? s->in.set->layers[h[P_LAYER]] : -1, h[P_N], cs,
                                     S->label[h[P_CLS]], 0, 0, 0};
        rs_tpp_metric(&q[8], &q[9], a0, ap, C, h[P_CLS]);
        q[10] = q[8] - q[9];
        RS_TRY(push(&s->out, q));
    }
    /* interactions: a budget's row minus its parts' rows (same variant, k, seed, N, class) */
    int last = s->out.n;
    for (int r = first; r < last; r++) {
        double q[RS_TPP_TABLE_NC];
        memcpy(q, s->out.v + (size_t)r * RS_TPP_TABLE_NC, sizeof q);
        int part = q[3] == RS_TPP_GLOBAL ? RS_TPP_GLOBAL_PART : q[3] == RS_TPP_JOINT ? RS_TPP_JOINT_PART : -1;
        if (part < 0) continue;
        q[3] = part == RS_TPP_GLOBAL_PART ? RS_TPP_GLOBAL_INTER : RS_TPP_JOINT_INTER;
        for (int u = first; u < last; u++) {
            const double *o = s->out.v + (size_t)u * RS_TPP_TABLE_NC;
            if (o[3] != part || o[0] != q[0] || o[1] != q[1] || o[2] != q[2] || o[5] != q[5] || o[7] != q[7]) continue;
            for (int x = 8; x < 11; x++) q[x] -= o[x];
        }
        RS_TRY(push(&s->out, q));
    }
    return RS_OK;
}

static rs_err class_set(tpp_state *s, int cs, const rs_task_ctx *c) {
    const rs_probe_inputs *in = &s->in;
    const rs_probe_set *S = &in->plan.sets[cs];
    int C = s->C, M = in->M, d = in->d, B = (int)c->run->cfg.eval.batch_sequences;
    rs_probe_feats f;
    memset(&f, 0, sizeof f);
    cs_probes q = {0};
    ints a = {0};
    int64_t *off = NULL, n_a = 0;
    int n_pass = 0, n_tw = 0;
    int32_t *tw = NULL, *where = NULL;
    double *logits = NULL, *wb = NULL, t0 = rs_now();
    rs_tpp_probe P[RS_PROBE_MAX_CLASSES];
    memset(P, 0, sizeof P);
    pass_work w;
    memset(&w, 0, sizeof w);
    rs_err err = rs_probe_class_set_feats(&f, in, S, c);
    double t1 = rs_now();
    if (!err && c->rank == 0) {
        err = train_probes(&q, s, &f, cs);
        double a_loc[RS_EVAL_MAX_LAYERS * RS_PROBE_MAX_CLASSES];
        for (int m = 0; !err && m < M; m++)
            for (int i = 0; i < C; i++) a_loc[m * C + i] = q.p[m * C + i].accuracy;
        for (int e = 0; e < in->n_e && !err; e++)
            for (int i = 0; i < C && !err; i++) err = select_class(&a, s, &f, &q, cs, e, i, a_loc);
        n_a = a.n;
    }
    err = rs_agree(err, c->comm, "training the TPP probes and selecting latents");
    /* the probes at P and the passes to every rank */
    wb = malloc(sizeof(double) * (size_t)C * (size_t)(d + 1));
    if (!err && !wb) err = RS_ERR(RS_ERR_NOMEM, "out of memory");
    if (!err && c->rank == 0)
        for (int i = 0; i < C; i++) {
            memcpy(wb + (size_t)i * (size_t)(d + 1), q.p[(M - 1) * C + i].w, sizeof(double) * (size_t)d);
            wb[(size_t)i * (size_t)(d + 1) + (size_t)d] = q.p[(M - 1) * C + i].b;
        }
    err = rs_agree(err, c->comm, "allocating the TPP probes");
    if (!err && MPI_Bcast(wb, C * (d + 1), MPI_DOUBLE, 0, c->comm) != MPI_SUCCESS) err = RS_ERR(RS_ERR_MPI, "MPI_Bcast");
    if (!err && MPI_Bcast(&n_a, 1, MPI_INT64_T, 0, c->comm) != MPI_SUCCESS) err = RS_ERR(RS_ERR_MPI, "MPI_Bcast");
    if (!err && c->rank != 0) {
        a.v = malloc(sizeof(int32_t) * (size_t)(n_a > 0 ? n_a : 1));
        a.n = a.cap = n_a;
        if (!a.v) err = RS_ERR(RS_ERR_NOMEM, "out of memory for %lld pass entries", (long long)n_a);
    }
    err = rs_agree(err, c->comm, "sharing the TPP passes");
    if (!err && n_a > 0 && MPI_Bcast(a.v, (int)n_a, MPI_INT32_T, 0, c->comm) != MPI_SUCCESS)
        err = RS_ERR(RS_ERR_MPI, "MPI_Bcast of the TPP passes");
    for (int i = 0; i < C && !err; i++) {
        P[i].d = d;
        P[i].w = wb + (size_t)i * (size_t)(d + 1);
        P[i].b = wb[(size_t)i * (size_t)(d + 1) + (size_t)d];
    }
    if (!err) err = pass_index(&off, &n_pass, &a, M);
    if (!err) err = test_windows(&tw, &n_tw, &where, S, (int)c->run->cfg.eval.tpp.n_test);
    size_t n_log = (size_t)(n_pass + 1) * (size_t)n_tw * (size_t)C;
    if (!err) {
        logits = calloc(n_log ? n_log : 1, sizeof(double));
        if (!logits) err = RS_ERR(RS_ERR_NOMEM, "out of memory for %zu TPP logits", n_log);
    }
    if (!err) err = pw_init(&w, s, B);
    err = rs_agree(err, c->comm, "preparing the TPP passes");
    double t2 = rs_now();
    if (!err) {
        int nb = (n_tw + B - 1) / B;
        int64_t lo, hi;
        rs_range_share(&lo, &hi, nb, c->rank, c->size);
        double tl = rs_now();
        for (int64_t b = lo; b < hi && !err; b++) {
            int w0 = (int)b * B, nw = n_tw - w0 < B ? n_tw - w0 : B;
            err = run_batch(logits, &w, s, S, tw, w0, nw, n_tw, &a, off, n_pass, P);
            if (!err && c->rank == 0 && rs_now() - tl > 10) {
                tl = rs_now();
                double done = (double)(b - lo + 1) / (double)(hi - lo), el = tl - t2;
                RS_INFO("tpp %s class set %d: %lld/%lld batches, %d passes each, %.1f s, ETA %.0f s", in->set->name, cs,
                        (long long)(b - lo + 1), (long long)(hi - lo), n_pass, el, el / done - el);
            }
        }
    }
    err = rs_agree(err, c->comm, "the TPP ablation passes");
    if (!err && c->size > 1) {
        /* each entry is written by one rank (the others hold 0), so the sum is exact */
        int rc = MPI_Reduce(c->rank == 0 ? MPI_IN_PLACE : logits, logits, (int)n_log, MPI_DOUBLE, MPI_SUM, 0, c->comm);
        if (rc != MPI_SUCCESS) err = RS_ERR(RS_ERR_MPI, "MPI_Reduce of the TPP logits");
    }
    if (!err && c->rank == 0) err = pass_rows(s, logits, where, n_tw, &a, off, n_pass, cs);
    s->secs[0] += t1 - t0;
    s->secs[1] += t2 - t1;
    s->secs[2] += rs_now() - t2;
    s->n_passes += n_pass;
    pw_free(&w);
    probes_free(&q, M * C);
    free(f.h);
    free(f.z);
    free(a.v);
    free(off);
    free(tw);
    free(where);
    free(logits);
    free(wb);
    return err;
}

/* =====================================================================================================
 * The task
 * ===================================================================================================== */

/* Means of rows with class_set >= 0 over labels (by_label) or over class sets (label -1 rows), grouped
 * by columns 0..5; the mean row has -1 in the class_set (by_label: only the label) column. */
static rs_err add_means(rows *r, int by_label) {
    int n0 = r->n;
    char *done = calloc((size_t)n0 + 1, 1);
    RS_CHECK_ALLOC(done);
    rs_err err = RS_OK;
    for (int i = 0; i < n0 && !err; i++) {
        const double *q = r->v + (size_t)i * RS_TPP_TABLE_NC;
        if (done[i] || q[6] < 0 || (by_label ? q[7] < 0 : q[7] != -1)) continue;
        double sum[3] = {0, 0, 0}, row[RS_TPP_TABLE_NC];
        int cnt = 0;
        for (int j = i; j < n0; j++) {
            const double *p = r->v + (size_t)j * RS_TPP_TABLE_NC;
            if (done[j] || p[6] < 0 || (by_label ? p[7] < 0 : p[7] != -1)) continue;
            if (memcmp(p, q, sizeof(double) * 6) || (by_label && p[6] != q[6])) continue;
            done[j] = 1;
            for (int x = 0; x < 3; x++) sum[x] += p[8 + x];
            cnt++;
        }
        memcpy(row, q, sizeof row);
        row[7] = -1;
        if (!by_label) row[6] = -1;
        for (int x = 0; x < 3; x++) row[8 + x] = sum[x] / cnt;
        err = push(r, row);
    }
    free(done);
    return err;
}

static rs_err write_file(const char *path, const tpp_state *s, const rs_run *run, double seconds) {
    char tmp[4200];
    hid_t f;
    RS_TRY(rs_taskfile_create(&f, tmp, sizeof tmp, path));
    rs_err err = rs_taskfile_write_table(f, "tpp", s->out.v, s->out.n, RS_TPP_TABLE_NC, RS_TPP_TABLE_COLS,
                                         rs_tpp_definitions[0]);
    if (!err) err = rs_taskfile_write_table(f, "tpp_latents", s->lat.v, s->lat.n, RS_TPP_LATENT_NC,
                                            RS_TPP_LATENT_COLS, rs_tpp_definitions[1]);
    if (!err) err = rs_taskfile_write_table(f, "tpp_probes", s->prb.v, s->prb.n, RS_TPP_PROBE_NC, RS_TPP_PROBE_COLS,
                                            rs_tpp_definitions[2]);
    if (!err) err = rs_probe_label_names_attr(f, &s->in.data);
    if (!err) err = rs_h5_attr_str(f, "task", "tpp");
    if (!err) err = rs_h5_attr_str(f, "set", s->in.set->name);
    if (!err) err = rs_h5_attr_str(f, "data", run->cfg.eval.probing.data);
    if (!err) err = rs_h5_attr_i64(f, "n_class_sets", s->n_cs);
    if (!err) err = rs_h5_attr_i64(f, "n_passes", s->n_passes);
    if (!err) err = rs_h5_attr_f64(f, "seconds", seconds);
    if (err) {
        H5Fclose(f);
        return err;
    }
    return rs_taskfile_commit(f, tmp, path);
}

static rs_err load_chain(tpp_state *s, const rs_run *run) {
    s->jm = calloc((size_t)s->in.M, sizeof *s->jm);
    RS_CHECK_ALLOC(s->jm);
    for (int m = 1; m < s->in.M; m++)
        RS_TRY(rs_taskfile_load_affine(&s->jm[m], run, s->in.set->layers[m - 1], s->in.set->layers[m]));
    return RS_OK;
}

rs_err rs_stage_tpp_run(const rs_task_ctx *c, int set, const char *path) {
    const rs_run *run = c->run;
    const rs_config *cfg = &run->cfg;
    tpp_state s;
    memset(&s, 0, sizeof s);
    s.out.nc = RS_TPP_TABLE_NC;
    s.lat.nc = RS_TPP_LATENT_NC;
    s.prb.nc = RS_TPP_PROBE_NC;
    s.budgets = cfg->eval.tpp.budgets;
    s.random = cfg->eval.tpp.random;
    s.single = cfg->eval.tpp.single;
    s.po = (rs_tpp_probe_opts)RS_TPP_PROBE_OPTS_DEFAULT;
    s.po.epochs = (int)cfg->eval.tpp.epochs;
    double t0 = rs_now();
    rs_err err = rs_probe_inputs_load(&s.in, run, set, rs_tasks_tpp_eval);
    if (!err) err = load_chain(&s, run);
    RS_TRY_GOTO(rs_agree(err, c->comm, "loading the TPP inputs"), done);
    s.n_cs = s.in.plan.n_sets < (int)cfg->eval.tpp.class_sets ? s.in.plan.n_sets : (int)cfg->eval.tpp.class_sets;
    s.C = s.in.plan.n_sets ? s.in.plan.sets[0].C : 0;
    for (int cs = 0; cs < s.n_cs; cs++) {
        err = class_set(&s, cs, c);
        RS_TRY_GOTO(rs_agree(err, c->comm, "the TPP of a class set"), done);
    }
    if (c->rank == 0) {
        err = add_means(&s.out, 1);
        if (!err) err = add_means(&s.out, 0);
        if (!err) err = write_file(path, &s, run, rs_now() - t0);
    }
    RS_TRY_GOTO(rs_agree(err, c->comm, "writing the TPP task file"), done);
    RS_INFO("tpp %s: %d class sets, %d evaluations, %lld passes; features %.2fs, probes+selection %.2fs, passes %.2fs",
            s.in.set->name, s.n_cs, s.in.n_e, (long long)s.n_passes, s.secs[0], s.secs[1], s.secs[2]);
done:
    state_free(&s);
    return err;
}
