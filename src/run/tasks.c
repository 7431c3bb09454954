/* The task list of a run and the task-file names (tasks.h, docs/store.md "Task files"). */
#define _GNU_SOURCE
#include "resae/tasks.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/sched.h"
#include "resae/util.h"

const char *const rs_task_kind_names[RS_TASK_KIND_COUNT] = {"harvest", "affine", "train", "evaluate", "ablate",
                                                            "probe",   "tpp"};

const char *rs_task_kind_name(enum rs_task_kind k) {
    return k >= 0 && k < RS_TASK_KIND_COUNT ? rs_task_kind_names[k] : "?";
}

rs_err rs_task_kind_parse(enum rs_task_kind *out, const char *name) {
    for (int k = 0; k < RS_TASK_KIND_COUNT; k++)
        if (!strcmp(name, rs_task_kind_names[k])) {
            *out = (enum rs_task_kind)k;
            return RS_OK;
        }
    RS_FAIL(RS_ERR_INVAL, "unknown task kind '%s' (harvest, affine, train, evaluate, ablate, probe, tpp)", name);
}

enum rs_stage rs_task_kind_stage(enum rs_task_kind k) {
    switch (k) {
    case RS_TASK_HARVEST: return RS_STAGE_HARVEST;
    case RS_TASK_AFFINE: return RS_STAGE_AFFINE;
    case RS_TASK_TRAIN: return RS_STAGE_TRAIN;
    default: return RS_STAGE_EVAL;
    }
}

/* =====================================================================================================
 * Names and paths
 * ===================================================================================================== */

rs_err rs_tasks_run_file(char *out, size_t n, const rs_run *run, const char *name) {
    return rs_path_join(out, n, run->cfg.run_dir, name);
}

uint64_t rs_tasks_pair_hash(const rs_run *run, int a, int b) {
    const rs_grid *g = &run->grid;
    for (int i = 0; i < g->n_affine; i++)
        if (g->affine[i].a == a && g->affine[i].b == b) return g->affine[i].hash;
    for (int i = 0; i < g->n_regression; i++)
        if (g->regression[i].a == a && g->regression[i].b == b) return g->regression[i].hash;
    return 0;
}

rs_err rs_tasks_affine_path(char *out, size_t n, const rs_run *run, int a, int b) {
    char name[128];
    snprintf(name, sizeof name, "tasks/affine_L%d_L%d_%016" PRIx64 ".h5", a, b, rs_tasks_pair_hash(run, a, b));
    return rs_path_join(out, n, run->cfg.run_dir, name);
}

void rs_tasks_sae_name(char *out, size_t n, const rs_grid_sae *s) {
    if (s->kind == RS_VARIANT_RAW)
        snprintf(out, n, "raw_L%d_k%d_s%" PRId64, s->layer, s->k, s->seed);
    else
        snprintf(out, n, "resae_L%d_P%d_k%d_s%" PRId64, s->layer, s->pred, s->k, s->seed);
}

/* <run_dir>/<dir>/sae_<name>_<hash><ext> */
static rs_err sae_file(char *out, size_t n, const rs_run *run, const rs_grid_sae *s, const char *dir, const char *ext) {
    char name[128], rel[256];
    rs_tasks_sae_name(name, sizeof name, s);
    snprintf(rel, sizeof rel, "%s/sae_%s_%016" PRIx64 "%s", dir, name, s->hash, ext);
    return rs_path_join(out, n, run->cfg.run_dir, rel);
}

rs_err rs_tasks_sae_path(char *out, size_t n, const rs_run *run, const rs_grid_sae *s) {
    return sae_file(out, n, run, s, "tasks", ".h5");
}

rs_err rs_tasks_ckpt_path(char *out, size_t n, const rs_run *run, const rs_grid_sae *s) {
    return sae_file(out, n, run, s, "ckpt", ".ckpt");
}

void rs_tasks_eval_name(char *out, size_t n, const rs_run *run, const rs_grid_eval *e) {
    snprintf(out, n, "%s_%s_k%d_s%" PRId64, run->grid.sets[e->set].name, rs_variant_names[e->variant], e->k, e->seed);
}

rs_err rs_tasks_eval_path(char *out, size_t n, const rs_run *run, const rs_grid_eval *e) {
    const rs_grid_eval *f = e;
    for (int i = 0; i < run->grid.n_evals; i++)
        if (run->grid.evals[i].hash == e->hash) {
            f = &run->grid.evals[i];
            break;
        }
    char name[256], rel[320];
    rs_tasks_eval_name(name, sizeof name, run, f);
    snprintf(rel, sizeof rel, "tasks/eval_%s_%016" PRIx64 ".h5", name, e->hash);
    return rs_path_join(out, n, run->cfg.run_dir, rel);
}

int rs_tasks_eval_first(const rs_run *run, int i) {
    for (int j = 0; j < i; j++)
        if (run->grid.evals[j].hash == run->grid.evals[i].hash) return 0;
    return 1;
}

int rs_tasks_ablate_needed(const rs_run *run) {
    return run->cfg.eval.ce && (run->cfg.eval.n_ablations > 0 || (run->cfg.eval.affine_only && run->cfg.eval.n_ce_modes > 0));
}

int rs_tasks_affine_only(const rs_run *run, int set) {
    const rs_config *c = &run->cfg;
    return c->eval.ce && c->eval.affine_only && c->eval.n_ce_modes > 0 && run->grid.sets[set].n >= 2;
}

/* The file hash of a set's ablation baselines: the inputs, the layers and what is ablated; like the
 * evaluation hashes, not the rank count (task files are reused across group sizes). */
static uint64_t ablate_hash(const rs_run *run, int set) {
    const rs_grid_set *s = &run->grid.sets[set];
    uint64_t h = rs_hash64(run->grid.inputs_hash, "ablate", 6);
    h = rs_hash64(h, s->layers, sizeof(int) * (size_t)s->n);
    int32_t flags[3] = {run->cfg.data.exclude_first_position, 0, 0};
    for (int i = 0; i < run->cfg.eval.n_ablations; i++) flags[1 + run->cfg.eval.ablations[i]] = 1;
    h = rs_hash64(h, flags, sizeof flags);
    if (!rs_tasks_affine_only(run, set)) return h;
    /* the control: its CE modes and the affine fits along the set */
    int32_t modes[4] = {0, 0, 0, 0};
    for (int i = 0; i < run->cfg.eval.n_ce_modes; i++) modes[run->cfg.eval.ce_modes[i]] = 1;
    h = rs_hash64(h, "affine_only", 11);
    h = rs_hash64(h, modes, sizeof modes);
    for (int m = 1; m < s->n; m++) {
        uint64_t p = rs_tasks_pair_hash(run, s->layers[m - 1], s->layers[m]);
        h = rs_hash64(h, &p, sizeof p);
    }
    return h;
}

rs_err rs_tasks_ablate_path(char *out, size_t n, const rs_run *run, int set) {
    const rs_grid_set *s = &run->grid.sets[set];
    const rs_grid_set *f = s->same_as >= 0 ? &run->grid.sets[s->same_as] : s;
    char rel[256];
    snprintf(rel, sizeof rel, "tasks/ablate_%s_%016" PRIx64 ".h5", f->name, ablate_hash(run, set));
    return rs_path_join(out, n, run->cfg.run_dir, rel);
}

static const rs_grid_set *probe_named_set(const rs_run *run) {
    const char *name = run->cfg.eval.probing.layer_set;
    for (int i = 0; name && i < run->grid.n_sets; i++)
        if (!strcmp(run->grid.sets[i].name, name)) return &run->grid.sets[i];
    return NULL;
}

int rs_tasks_probe_needed(const rs_run *run, int set) {
    const rs_grid_set *s = &run->grid.sets[set], *want = probe_named_set(run);
    if (!run->cfg.eval.probing.enabled || s->same_as >= 0) return 0;
    if (!run->cfg.eval.probing.layer_set) return 1;
    return want && want->n == s->n && !memcmp(want->layers, s->layers, sizeof(int) * (size_t)s->n);
}

uint64_t rs_tasks_probe_hash(const rs_run *run, int set) {
    const rs_grid *g = &run->grid;
    const rs_grid_set *s = &g->sets[set];
    uint64_t h = rs_hash64(g->inputs_hash, "probe", 5);
    h = rs_hash64(h, s->layers, sizeof(int) * (size_t)s->n);
    for (int i = 0; i < g->n_evals; i++)
        if (g->evals[i].set == set)
            for (int m = 0; m < s->n; m++) h = rs_hash64(h, &g->saes[g->eval_sae[g->evals[i].sae_off + m]].hash, 8);
    return rs_config_probe_hash(h, &run->cfg);
}

rs_err rs_tasks_probe_path(char *out, size_t n, const rs_run *run, int set) {
    char rel[256];
    snprintf(rel, sizeof rel, "tasks/probe_%s_%016" PRIx64 ".h5", run->grid.sets[set].name, rs_tasks_probe_hash(run, set));
    return rs_path_join(out, n, run->cfg.run_dir, rel);
}

int rs_tasks_tpp_needed(const rs_run *run, int set) {
    if (!run->cfg.eval.tpp.enabled) return 0;
    const rs_grid_set *s = &run->grid.sets[set], *want = probe_named_set(run);
    if (s->same_as >= 0) return 0;
    if (!run->cfg.eval.probing.layer_set) return 1;
    return want && want->n == s->n && !memcmp(want->layers, s->layers, sizeof(int) * (size_t)s->n);
}

int rs_tasks_tpp_eval(const rs_run *run, const rs_grid_eval *e) {
    const rs_int_list *k = &run->cfg.eval.tpp.k;
    for (int i = 0; i < k->n; i++)
        if (k->v[i] == e->k) return 1;
    return k->n == 0;
}

uint64_t rs_tasks_tpp_hash(const rs_run *run, int set) {
    const rs_grid *g = &run->grid;
    const rs_grid_set *s = &g->sets[set];
    uint64_t h = rs_hash64(g->inputs_hash, "tpp", 3);
    h = rs_hash64(h, s->layers, sizeof(int) * (size_t)s->n);
    for (int i = 0; i < g->n_evals; i++)
        if (g->evals[i].set == set && rs_tasks_tpp_eval(run, &g->evals[i]))
            for (int m = 0; m < s->n; m++) h = rs_hash64(h, &g->saes[g->eval_sae[g->evals[i].sae_off + m]].hash, 8);
    for (int m = 1; m < s->n; m++) {
        uint64_t p = rs_tasks_pair_hash(run, s->layers[m - 1], s->layers[m]);
        h = rs_hash64(h, &p, 8);
    }
    return rs_config_tpp_hash(h, &run->cfg);
}

rs_err rs_tasks_tpp_path(char *out, size_t n, const rs_run *run, int set) {
    char rel[256];
    snprintf(rel, sizeof rel, "tasks/tpp_%s_%016" PRIx64 ".h5", run->grid.sets[set].name, rs_tasks_tpp_hash(run, set));
    return rs_path_join(out, n, run->cfg.run_dir, rel);
}

/* =====================================================================================================
 * Costs: rough floating-point operations (only their ratios matter to the scheduler)
 * ===================================================================================================== */

static double cost_harvest(const rs_run *r) {
    return 2.0 * 12.0 * r->mc.d_model * r->mc.d_model * r->mc.n_layers *
           (double)(r->cfg.data.calibration + r->cfg.data.train + r->cfg.data.eval);
}

static double cost_affine(const rs_run *r) {
    double d = r->mc.d_model;
    return 2.0 * d * d * (double)(r->cfg.data.calibration + r->cfg.data.eval) + 4.0 * d * d * d;
}

static double cost_sae(const rs_run *r, const rs_grid_sae *g) {
    double d = r->mc.d_model, n = (double)r->grid.n_latents;
    double c = 6.0 * d * n * (double)r->grid.train_steps * (double)r->cfg.train.batch_size;
    if (g->kind == RS_VARIANT_RESAE) c += 2.0 * d * d * (double)r->grid.train_steps * (double)r->cfg.train.batch_size;
    return c;
}

static double cost_eval(const rs_run *r, const rs_grid_eval *e) {
    double d = r->mc.d_model, n = (double)r->grid.n_latents, M = r->grid.sets[e->set].n;
    double c = 4.0 * d * n * M * (double)r->cfg.data.eval + 2.0 * n * n * d * M * (M - 1) / 2;
    /* CE splices: about (3M + 3) forward passes over the eval tokens; 24 d^2 flops per token-layer */
    if (r->cfg.eval.ce) c += (3.0 * M + 3.0) * 24.0 * d * d * r->mc.n_layers * (double)r->cfg.data.eval;
    return c;
}

static double cost_ablate(const rs_run *r, int set) {
    const rs_grid_set *s = &r->grid.sets[set];
    double d = r->mc.d_model, M = s->n, passes = 1.0 + r->cfg.eval.n_ablations * M;
    /* a clean pass, an ablation pass per layer and baseline, and the affine-only control's passes */
    if (rs_tasks_affine_only(r, set)) passes += M + 1.0;
    return passes * 24.0 * d * d * r->mc.n_layers * (double)r->cfg.data.eval;
}

/* A forward pass to the set's deepest layer and every SAE encode over the probe windows. */
static double cost_probe(const rs_run *r, const rs_grid_set *s) {
    const rs_config *c = &r->cfg;
    double d = r->mc.d_model, n = (double)r->grid.n_latents;
    double tokens = 4.0 * (double)c->eval.probing.classes_per_set * (double)(c->eval.probing.n_train + c->eval.probing.n_test) *
                    (double)(c->data.seq_len > 0 ? c->data.seq_len : 256);
    double saes = (double)c->n_variants * c->sae.k.n * c->sae.seeds.n * s->n;
    return tokens * (24.0 * d * d * (s->layers[s->n - 1] + 1) + 2.0 * d * n * saes);
}

/* =====================================================================================================
 * The list
 * ===================================================================================================== */

/* Every affine fit: consecutive pairs, then regression pairs not among them. */
static int collect_pairs(int (*pairs)[2], const rs_grid *g) {
    int n = 0;
    for (int i = 0; i < g->n_affine; i++) {
        pairs[n][0] = g->affine[i].a;
        pairs[n][1] = g->affine[i].b;
        n++;
    }
    for (int i = 0; i < g->n_regression; i++) {
        int a = g->regression[i].a, b = g->regression[i].b, dup = 0;
        for (int j = 0; j < n; j++) dup |= pairs[j][0] == a && pairs[j][1] == b;
        if (!dup) {
            pairs[n][0] = a;
            pairs[n][1] = b;
            n++;
        }
    }
    return n;
}

static int pair_index(const rs_task_list *l, int a, int b) {
    for (int i = 0; i < l->n_pairs; i++)
        if (l->pairs[i][0] == a && l->pairs[i][1] == b) return i;
    return -1;
}

typedef struct builder {
    rs_task_list *l;
    int n_deps, cap_deps;
} builder;

/* Append a task (name and path copied); *at receives its index. */
static rs_err add(int *at, builder *b, enum rs_task_kind kind, int index, const char *name, const char *path,
                  uint64_t hash, double cost) {
    rs_task *t = &b->l->tasks[b->l->n];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->index = index;
    t->hash = hash;
    t->cost = cost;
    t->name = strdup(name);
    t->path = strdup(path);
    if (!t->name || !t->path) {
        free(t->name);
        free(t->path);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for the task list");
    }
    t->deps = NULL;
    *at = b->l->n++;
    return RS_OK;
}

/* Task `task` needs `dep` first; deps are stored as offsets until the list is complete. */
static rs_err add_dep(builder *b, int task, int dep) {
    if (b->n_deps == b->cap_deps) {
        int cap = 2 * b->cap_deps + 64;
        int *q = realloc(b->l->dep_store, sizeof(int) * 2 * (size_t)cap);
        RS_CHECK_ALLOC(q);
        b->l->dep_store = q;
        b->cap_deps = cap;
    }
    b->l->dep_store[2 * b->n_deps] = task;
    b->l->dep_store[2 * b->n_deps + 1] = dep;
    b->n_deps++;
    b->l->tasks[task].n_deps++;
    return RS_OK;
}

static rs_err add_affine_train(builder *b, const rs_run *run, int h) {
    rs_task_list *l = b->l;
    char name[RS_SCHED_NAME_MAX], path[4096];
    int first_pair = l->n;
    for (int i = 0; i < l->n_pairs; i++) {
        int a = l->pairs[i][0], c = l->pairs[i][1], t;
        snprintf(name, sizeof name, "affine L%d_L%d", a, c);
        RS_TRY(rs_tasks_affine_path(path, sizeof path, run, a, c));
        RS_TRY(add(&t, b, RS_TASK_AFFINE, i, name, path, rs_tasks_pair_hash(run, a, c), cost_affine(run)));
        RS_TRY(add_dep(b, t, h));
    }
    for (int i = 0; i < run->grid.n_saes; i++) {
        const rs_grid_sae *g = &run->grid.saes[i];
        char sn[128];
        int t;
        rs_tasks_sae_name(sn, sizeof sn, g);
        snprintf(name, sizeof name, "sae %.80s", sn);
        RS_TRY(rs_tasks_sae_path(path, sizeof path, run, g));
        RS_TRY(add(&t, b, RS_TASK_TRAIN, i, name, path, g->hash, cost_sae(run, g)));
        RS_TRY(add_dep(b, t, h));
        if (g->kind == RS_VARIANT_RESAE) {
            int k = pair_index(l, g->pred, g->layer);
            RS_CHECK(k >= 0, RS_ERR_INTERNAL, "no affine fit %d->%d for SAE %s", g->pred, g->layer, sn);
            RS_TRY(add_dep(b, t, first_pair + k));
        }
    }
    return RS_OK;
}

/* The ablation baselines of each distinct set (they need only the store, so they run early), then
 * one task per unique evaluation after the SAEs of its set and the set's baselines. */
static rs_err add_ablate_eval(builder *b, const rs_run *run, int h, int first_sae) {
    const rs_grid *g = &run->grid;
    char name[RS_SCHED_NAME_MAX], path[4096];
    int *ablate = malloc(sizeof(int) * (size_t)(g->n_sets > 0 ? g->n_sets : 1));
    RS_CHECK_ALLOC(ablate);
    rs_err err = RS_OK;
    for (int i = 0; i < g->n_sets; i++) ablate[i] = -1;
    for (int i = 0; i < g->n_sets && !err && rs_tasks_ablate_needed(run); i++) {
        const rs_grid_set *set = &g->sets[i];
        if (set->same_as >= 0) continue;
        snprintf(name, sizeof name, "ablate %.80s", set->name);
        err = rs_tasks_ablate_path(path, sizeof path, run, i);
        if (!err)
            err = add(&ablate[i], b, RS_TASK_ABLATE, i, name, path, rs_hash64(g->inputs_hash, name, strlen(name)),
                      cost_ablate(run, i));
        if (!err) err = add_dep(b, ablate[i], h);
        for (int m = 1; m < set->n && !err && rs_tasks_affine_only(run, i); m++) {
            int k = pair_index(b->l, set->layers[m - 1], set->layers[m]);
            err = k >= 0 ? add_dep(b, ablate[i], 1 + k)
                         : RS_ERR(RS_ERR_INTERNAL, "no affine fit %d->%d for the control of %s", set->layers[m - 1],
                                  set->layers[m], set->name);
        }
    }
    for (int i = 0; i < g->n_evals && !err; i++) {
        if (!rs_tasks_eval_first(run, i)) continue;
        const rs_grid_eval *e = &g->evals[i];
        const rs_grid_set *set = &g->sets[e->set];
        char en[256];
        int t;
        rs_tasks_eval_name(en, sizeof en, run, e);
        /* the scheduler's name keeps RS_SCHED_NAME_MAX - 9 characters of it */
        snprintf(name, sizeof name, "eval %.*s", RS_SCHED_NAME_MAX - 9, en);
        err = rs_tasks_eval_path(path, sizeof path, run, e);
        if (!err) err = add(&t, b, RS_TASK_EVAL, i, name, path, e->hash, cost_eval(run, e));
        for (int m = 0; m < set->n && !err; m++) err = add_dep(b, t, first_sae + g->eval_sae[e->sae_off + m]);
        int key = set->same_as >= 0 ? set->same_as : e->set;
        if (!err && ablate[key] >= 0) err = add_dep(b, t, ablate[key]);
    }
    free(ablate);
    return err;
}

/* One probing task per probed set, after every SAE of the set's evaluations. */
static rs_err add_probe(builder *b, const rs_run *run, int h, int first_sae) {
    const rs_grid *g = &run->grid;
    if (run->cfg.eval.probing.enabled && run->cfg.eval.probing.layer_set && !probe_named_set(run))
        RS_CONFIG_FAIL(&run->cfg, "eval.probing.layer_set", "no layer set is named '%s'; name one of layers.sets",
                       run->cfg.eval.probing.layer_set);
    char name[RS_SCHED_NAME_MAX], path[4096];
    for (int i = 0; i < g->n_sets; i++) {
        if (!rs_tasks_probe_needed(run, i)) continue;
        const rs_grid_set *set = &g->sets[i];
        int t;
        snprintf(name, sizeof name, "probe %.80s", set->name);
        RS_TRY(rs_tasks_probe_path(path, sizeof path, run, i));
        RS_TRY(add(&t, b, RS_TASK_PROBE, i, name, path, rs_tasks_probe_hash(run, i), cost_probe(run, set)));
        RS_TRY(add_dep(b, t, h));
        for (int e = 0; e < g->n_evals; e++)
            if (g->evals[e].set == i)
                for (int m = 0; m < set->n; m++) RS_TRY(add_dep(b, t, first_sae + g->eval_sae[g->evals[e].sae_off + m]));
    }
    return RS_OK;
}

/* A clean pass over every window of the used class sets, then about (3M + 2) ablation passes per class
 * and evaluation over the test windows from the first ablated layer (half the set's depth on average). */
static double cost_tpp(const rs_run *r, int set) {
    const rs_grid_set *s = &r->grid.sets[set];
    const rs_config *c = &r->cfg;
    double d = r->mc.d_model, C = (double)c->eval.probing.classes_per_set, T = c->data.seq_len > 0 ? c->data.seq_len : 256;
    double sets = (double)c->eval.tpp.class_sets, evals = 0, depth = s->layers[s->n - 1] + 1;
    for (int i = 0; i < r->grid.n_evals; i++) evals += r->grid.evals[i].set == set && rs_tasks_tpp_eval(r, &r->grid.evals[i]);
    double clean = sets * C * (double)(c->eval.probing.n_train + c->eval.probing.n_test) * T * 24.0 * d * d * depth;
    double abl = sets * evals * C * (3.0 * s->n + 2) * (double)c->eval.tpp.budgets.n * C * (double)c->eval.probing.n_test *
                 T * 24.0 * d * d * depth / 2;
    return clean + abl;
}

/* One TPP task per TPP set, after the SAEs of its evaluations and the affine fits along the set. */
static rs_err add_tpp(builder *b, const rs_run *run, int h, int first_sae) {
    const rs_grid *g = &run->grid;
    if (run->cfg.eval.tpp.enabled && run->cfg.eval.probing.layer_set && !probe_named_set(run))
        RS_CONFIG_FAIL(&run->cfg, "eval.probing.layer_set", "no layer set is named '%s'; name one of layers.sets",
                       run->cfg.eval.probing.layer_set);
    char name[RS_SCHED_NAME_MAX], path[4096];
    for (int i = 0; i < g->n_sets; i++) {
        if (!rs_tasks_tpp_needed(run, i)) continue;
        const rs_grid_set *set = &g->sets[i];
        int t, n_ev = 0;
        for (int e = 0; e < g->n_evals; e++) n_ev += g->evals[e].set == i && rs_tasks_tpp_eval(run, &g->evals[e]);
        if (!n_ev)
            RS_CONFIG_FAIL(&run->cfg, "eval.tpp.k", "no k of eval.tpp.k is in sae.k; use values of sae.k or [] for all");
        snprintf(name, sizeof name, "tpp %.80s", set->name);
        RS_TRY(rs_tasks_tpp_path(path, sizeof path, run, i));
        RS_TRY(add(&t, b, RS_TASK_TPP, i, name, path, rs_tasks_tpp_hash(run, i), cost_tpp(run, i)));
        RS_TRY(add_dep(b, t, h));
        for (int e = 0; e < g->n_evals; e++)
            if (g->evals[e].set == i && rs_tasks_tpp_eval(run, &g->evals[e]))
                for (int m = 0; m < set->n; m++) RS_TRY(add_dep(b, t, first_sae + g->eval_sae[g->evals[e].sae_off + m]));
        for (int m = 1; m < set->n; m++) {
            int k = pair_index(b->l, set->layers[m - 1], set->layers[m]);
            RS_CHECK(k >= 0, RS_ERR_INTERNAL, "no affine fit %d->%d for TPP of %s", set->layers[m - 1], set->layers[m],
                     set->name);
            RS_TRY(add_dep(b, t, 1 + k));
        }
    }
    return RS_OK;
}

/* Turn the (task, dep) pairs into each task's deps array, in the order they were added. */
static rs_err finish_deps(builder *b) {
    rs_task_list *l = b->l;
    int *flat = malloc(sizeof(int) * (size_t)(b->n_deps > 0 ? b->n_deps : 1));
    RS_CHECK_ALLOC(flat);
    int off = 0;
    for (int t = 0; t < l->n; t++) {
        l->tasks[t].deps = flat + off;
        off += l->tasks[t].n_deps;
        l->tasks[t].n_deps = 0;
    }
    for (int i = 0; i < b->n_deps; i++) {
        rs_task *t = &l->tasks[l->dep_store[2 * i]];
        t->deps[t->n_deps++] = l->dep_store[2 * i + 1];
    }
    free(l->dep_store);
    l->dep_store = flat;
    return RS_OK;
}

rs_err rs_tasks_build(rs_task_list *out, const rs_run *run) {
    memset(out, 0, sizeof *out);
    const rs_grid *g = &run->grid;
    int max_pairs = g->n_affine + g->n_regression;
    int max = 1 + max_pairs + g->n_saes + 3 * g->n_sets + g->n_evals;
    out->tasks = calloc((size_t)max, sizeof *out->tasks);
    out->pairs = malloc(sizeof(int[2]) * (size_t)(max_pairs > 0 ? max_pairs : 1));
    rs_err err = out->tasks && out->pairs ? RS_OK : RS_ERR(RS_ERR_NOMEM, "out of memory for the task list");
    builder b = {out, 0, 0};
    int h = 0;
    if (!err) {
        out->n_pairs = collect_pairs(out->pairs, g);
        err = add(&h, &b, RS_TASK_HARVEST, 0, "harvest", "", g->inputs_hash, cost_harvest(run));
    }
    int first_sae = 1 + out->n_pairs;
    if (!err) err = add_affine_train(&b, run, h);
    if (!err) err = add_ablate_eval(&b, run, h, first_sae);
    if (!err) err = add_probe(&b, run, h, first_sae);
    if (!err) err = add_tpp(&b, run, h, first_sae);
    if (!err) err = finish_deps(&b);
    if (err) rs_tasks_free(out);
    return err;
}

void rs_tasks_free(rs_task_list *l) {
    for (int i = 0; i < l->n; i++) {
        free(l->tasks[i].name);
        free(l->tasks[i].path);
    }
    free(l->tasks);
    free(l->pairs);
    free(l->dep_store);
    memset(l, 0, sizeof *l);
}

int rs_tasks_count(const rs_task_list *l, enum rs_task_kind k) {
    int n = 0;
    for (int i = 0; i < l->n; i++) n += l->tasks[i].kind == k;
    return n;
}
