/* results.h5 from the task files (results.h, docs/store.md "Results file"). */
#define _GNU_SOURCE
#include "resae/results.h"

#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/h5util.h"
#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/sched.h"
#include "resae/stage_probe.h"
#include "resae/stage_tpp.h"
#include "resae/tasks.h"
#include "resae/util.h"
#include "resae/version.h"

/* =====================================================================================================
 * Tables
 * ===================================================================================================== */

/* names[0..n) joined by commas (the value order of an enum). */
static void join_names(char *out, size_t cap, const char *const *names, int n) {
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < n && o < cap; i++) o += (size_t)snprintf(out + o, cap - o, i ? ",%s" : "%s", names[i]);
}

/* The enum-valued columns of the results tables and their name tables. */
static rs_err table_enums(hid_t ds, int variant, int mode) {
    char names[256];
    if (variant) {
        join_names(names, sizeof names, rs_variant_names, RS_VARIANT_COUNT);
        RS_TRY(rs_h5_attr_str(ds, "enum:variant", names));
    }
    if (mode) {
        join_names(names, sizeof names, rs_eval_ce_row_names, RS_CE_ROW_COUNT);
        RS_TRY(rs_h5_attr_str(ds, "enum:mode", names));
    }
    return RS_OK;
}

/* A results table: loc/name (rows, cols) with `columns`, `definition` (if not NULL) and the enums. */
static rs_err write_table(hid_t loc, const char *name, const double *t, int rows, int cols, const char *columns,
                          const char *def, int variant, int mode) {
    static const double none = 0;
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    RS_TRY(rs_h5_write(loc, name, H5T_NATIVE_DOUBLE, 2, dims, t ? t : &none));
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    RS_CHECK(ds >= 0, RS_ERR_IO, "results: cannot reopen dataset %s", name);
    rs_err err = rs_h5_attr_str(ds, "columns", columns);
    if (!err && def) err = rs_h5_attr_str(ds, "definition", def);
    if (!err) err = table_enums(ds, variant, mode);
    H5Dclose(ds);
    return err;
}

static rs_err copy_obj(hid_t src, const char *sname, hid_t dst, const char *dname) {
    RS_CHECK(H5Ocopy(src, sname, dst, dname, H5P_DEFAULT, H5P_DEFAULT) >= 0, RS_ERR_IO,
             "HDF5: cannot copy '%s' into the results file", sname);
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

/* =====================================================================================================
 * /affine
 * ===================================================================================================== */

static const char *const affine_attrs[] = {"layer_a", "layer_b", "lambda_rel", "lambda_used", "retries", "r2",
                                           "s", "n_tokens_calib", "n_tokens_eval", "solve_resid", "seconds"};
enum { AFFINE_NC = 12 };

/* /affine/L<a>_L<b> of one fit and its table row (layer_a, layer_b, gap, attrs[2..]). */
static rs_err affine_one(hid_t g, double *row, const rs_task *t, int a, int b) {
    hid_t f = H5Fopen(t->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    RS_CHECK(f >= 0, RS_ERR_IO, "%s: cannot open", t->path);
    char name[64];
    snprintf(name, sizeof name, "L%d_L%d", a, b);
    hid_t pg = H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    rs_err err = pg < 0 ? RS_ERR(RS_ERR_IO, "results: cannot create /affine/%s", name) : RS_OK;
    if (!err) err = copy_obj(f, "A", pg, "A");
    if (!err) err = copy_obj(f, "c", pg, "c");
    if (!err) err = copy_attrs_num(f, pg, affine_attrs, (int)(sizeof affine_attrs / sizeof *affine_attrs), t->path);
    row[0] = a;
    row[1] = b;
    row[2] = b - a;
    for (int i = 2; i < 11 && !err; i++) err = rs_h5_attr_get_f64(&row[i + 1], f, affine_attrs[i], t->path);
    if (pg >= 0) H5Gclose(pg);
    H5Fclose(f);
    return err;
}

static rs_err results_affine(hid_t out, const rs_task_list *l) {
    hid_t g = H5Gcreate2(out, "affine", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    double *table = calloc((size_t)(l->n_pairs > 0 ? l->n_pairs : 1) * AFFINE_NC, sizeof(double));
    rs_err err = g < 0 || !table ? RS_ERR(RS_ERR_IO, "results: cannot create /affine") : RS_OK;
    int rows = 0;
    for (int i = 0; i < l->n && !err; i++) {
        const rs_task *t = &l->tasks[i];
        if (t->kind != RS_TASK_AFFINE || !rs_file_exists(t->path)) continue;
        err = affine_one(g, table + (size_t)rows * AFFINE_NC, t, l->pairs[t->index][0], l->pairs[t->index][1]);
        rows += !err;
    }
    if (!err)
        err = write_table(g, "table", table, rows, AFFINE_NC, "layer_a,layer_b,gap,lambda_rel,lambda_used,retries,r2,s,"
                          "n_tokens_calib,n_tokens_eval,solve_resid,seconds", NULL, 0, 0);
    free(table);
    if (g >= 0) H5Gclose(g);
    return err;
}

/* =====================================================================================================
 * /sae
 * ===================================================================================================== */

static const char *const sae_cols[] = {"layer", "pred", "k", "seed", "fvu", "auxk", "l0", "dead_frac", "tokens",
                                       "steps", "seconds", "tokens_per_s", "scale"};
enum { SAE_NC = 14 };


/* The training curve of an SAE trained with train.curve_bins > 0. */
static rs_err sae_curve_copy(hid_t f, hid_t sg, const char *file) {
    static const char *const gain[] = {"fvu_last20_gain"};
    char def[1024];
    RS_TRY(copy_obj(f, "fvu_curve", sg, "fvu_curve"));
    RS_TRY(copy_attrs_num(f, sg, gain, 1, file));
    RS_TRY(rs_h5_attr_get_str(def, sizeof def, f, "fvu_curve_definition", file));
    return rs_h5_attr_str(sg, "fvu_curve_definition", def);
}

/* /sae/<name> of one SAE and its table row (variant, then sae_cols). */
static rs_err sae_one(hid_t g, double *row, const rs_task *t, const rs_grid_sae *s) {
    char name[128];
    rs_tasks_sae_name(name, sizeof name, s);
    hid_t f = H5Fopen(t->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    RS_CHECK(f >= 0, RS_ERR_IO, "%s: cannot open", t->path);
    hid_t sg = H5Gcreate2(g, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    rs_err err = sg < 0 ? RS_ERR(RS_ERR_IO, "results: cannot create /sae/%s", name) : RS_OK;
    static const char *const w[] = {"W_enc", "b_enc", "W_dec", "b_dec"};
    for (int j = 0; j < 4 && !err; j++) err = copy_obj(f, w[j], sg, w[j]);
    if (!err) err = rs_h5_attr_str(sg, "kind", rs_variant_names[s->kind]);
    if (!err) err = copy_attrs_num(f, sg, sae_cols, (int)(sizeof sae_cols / sizeof *sae_cols), t->path);
    if (!err && H5Lexists(f, "fvu_curve", H5P_DEFAULT) > 0) err = sae_curve_copy(f, sg, t->path);
    row[0] = (double)s->kind;
    for (int j = 0; j < SAE_NC - 1 && !err; j++) err = rs_h5_attr_get_f64(&row[j + 1], f, sae_cols[j], t->path);
    if (sg >= 0) H5Gclose(sg);
    H5Fclose(f);
    return err;
}

static rs_err results_sae(hid_t out, const rs_run *run, const rs_task_list *l) {
    int n = run->grid.n_saes;
    hid_t g = H5Gcreate2(out, "sae", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    double *table = calloc((size_t)(n > 0 ? n : 1) * SAE_NC, sizeof(double));
    rs_err err = g < 0 || !table ? RS_ERR(RS_ERR_IO, "results: cannot create /sae") : RS_OK;
    int rows = 0;
    for (int i = 0; i < l->n && !err; i++) {
        const rs_task *t = &l->tasks[i];
        if (t->kind != RS_TASK_TRAIN || !rs_file_exists(t->path)) continue;
        err = sae_one(g, table + (size_t)rows * SAE_NC, t, &run->grid.saes[t->index]);
        rows += !err;
    }
    if (!err)
        err = write_table(g, "table", table, rows, SAE_NC, "variant,layer,pred,k,seed,fvu,auxk,l0,dead_frac,tokens,"
                          "steps,seconds,tokens_per_s,scale", NULL, 1, 0);
    free(table);
    if (g >= 0) H5Gclose(g);
    return err;
}

/* =====================================================================================================
 * /eval
 * ===================================================================================================== */

/* The rows of every finished evaluation, per table, each prefixed with set, variant, k, seed. */
typedef struct eval_acc {
    double *rows[RS_EVAL_TABLE_COUNT];
    int n[RS_EVAL_TABLE_COUNT], cap[RS_EVAL_TABLE_COUNT];
} eval_acc;

static rs_err eval_append(eval_acc *a, int t, const double *tab, int n, const rs_grid_eval *e) {
    int nc = rs_eval_tables[t].ncols;
    if (a->n[t] + n > a->cap[t]) {
        int cap = 2 * (a->n[t] + n) + 8;
        double *q = realloc(a->rows[t], sizeof(double) * (size_t)cap * (size_t)(nc + 4));
        RS_CHECK(q, RS_ERR_NOMEM, "out of memory");
        a->rows[t] = q;
        a->cap[t] = cap;
    }
    for (int r = 0; r < n; r++) {
        double *q = a->rows[t] + (size_t)(a->n[t]++) * (size_t)(nc + 4);
        q[0] = e->set;
        q[1] = e->variant;
        q[2] = e->k;
        q[3] = (double)e->seed;
        memcpy(q + 4, tab + (size_t)r * (size_t)nc, sizeof(double) * (size_t)nc);
    }
    return RS_OK;
}

static rs_err eval_read(eval_acc *a, const rs_task *t, const rs_grid_eval *e) {
    hid_t f = H5Fopen(t->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    RS_CHECK(f >= 0, RS_ERR_IO, "%s: cannot open", t->path);
    rs_err err = RS_OK;
    for (int k = 0; k < RS_EVAL_TABLE_COUNT && !err; k++) {
        double *tab = NULL;
        int n = 0;
        err = rs_taskfile_read_table(&tab, &n, f, rs_eval_tables[k].name, rs_eval_tables[k].ncols, t->path);
        if (!err) err = eval_append(a, k, tab, n, e);
        free(tab);
    }
    H5Fclose(f);
    return err;
}

/* The affine-only control rows of an ablation task file (none in files of one-layer sets), prefixed
 * with the set. */
static rs_err affine_only_read(double **rows, int *n, int *cap, const rs_task *t) {
    hid_t f = H5Fopen(t->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    RS_CHECK(f >= 0, RS_ERR_IO, "%s: cannot open", t->path);
    rs_err err = RS_OK;
    double *tab = NULL;
    int nr = 0, nc = RS_EVAL_CE_NC;
    if (H5Lexists(f, "affine_only", H5P_DEFAULT) > 0) err = rs_taskfile_read_table(&tab, &nr, f, "affine_only", nc, t->path);
    if (!err && *n + nr > *cap) {
        int c2 = 2 * (*n + nr) + 8;
        double *q = realloc(*rows, sizeof(double) * (size_t)c2 * (size_t)(nc + 1));
        if (q) *rows = q, *cap = c2;
        else err = RS_ERR(RS_ERR_NOMEM, "out of memory");
    }
    for (int r = 0; r < nr && !err; r++) {
        double *q = *rows + (size_t)(*n)++ * (size_t)(nc + 1);
        q[0] = t->index;
        memcpy(q + 1, tab + (size_t)r * (size_t)nc, sizeof(double) * (size_t)nc);
    }
    free(tab);
    H5Fclose(f);
    return err;
}

static rs_err eval_group_attrs(hid_t g, const rs_run *run) {
    char sets[8192];
    size_t o = 0;
    sets[0] = 0;
    for (int i = 0; i < run->grid.n_sets && o < sizeof sets - 200; i++)
        o += (size_t)snprintf(sets + o, sizeof sets - o, i ? ",%s" : "%s", run->grid.sets[i].name);
    RS_TRY(rs_h5_attr_str(g, "set_names", sets));
    char modes[128];
    rs_taskfile_ce_modes(modes, sizeof modes);
    return rs_h5_attr_str(g, "ce_modes", modes);
}

static rs_err results_eval(hid_t out, const rs_run *run, const rs_task_list *l) {
    hid_t g = H5Gcreate2(out, "eval", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    RS_CHECK(g >= 0, RS_ERR_IO, "results: cannot create /eval");
    eval_acc a;
    memset(&a, 0, sizeof a);
    rs_err err = RS_OK;
    double *aff = NULL;
    int n_aff = 0, cap_aff = 0;
    for (int i = 0; i < l->n && !err; i++) {
        const rs_task *t = &l->tasks[i];
        if (t->kind == RS_TASK_EVAL && rs_file_exists(t->path)) err = eval_read(&a, t, &run->grid.evals[t->index]);
        if (t->kind == RS_TASK_ABLATE && rs_file_exists(t->path)) err = affine_only_read(&aff, &n_aff, &cap_aff, t);
    }
    for (int t = 0; t < RS_EVAL_TABLE_COUNT && !err; t++) {
        const rs_eval_table_desc *d = &rs_eval_tables[t];
        char c[512];
        snprintf(c, sizeof c, "set,variant,k,seed,%s", d->columns);
        err = write_table(g, d->name, a.rows[t], a.n[t], d->ncols + 4, c, d->definition, 1, t == RS_EVAL_TABLE_CE);
    }
    if (!err) err = write_table(g, "affine_only", aff, n_aff, RS_EVAL_CE_NC + 1, "set," RS_EVAL_CE_COLS,
                                rs_affine_only_definition, 0, 1);
    if (!err) err = eval_group_attrs(g, run);
    free(aff);
    for (int t = 0; t < RS_EVAL_TABLE_COUNT; t++) free(a.rows[t]);
    H5Gclose(g);
    return err;
}

/* =====================================================================================================
 * /probing
 * ===================================================================================================== */

/* The three tables of a probing or TPP task file, rows prefixed with the layer set. */
typedef struct study_tables {
    enum rs_task_kind kind;
    const char *group;
    const char *name[3], *cols[3];
    int nc[3];
    const char *const *defs;
    const char *const *kind_names;
    int n_kinds;
    int variant[3]; /* tables with a variant column */
} study_tables;

static const study_tables probe_tables = {
    RS_TASK_PROBE, "probing",
    {"probing", "probing_latents", "probing_classes"},
    {RS_PROBE_TABLE_COLS, RS_PROBE_LATENT_COLS, RS_PROBE_CLASS_COLS},
    {RS_PROBE_TABLE_NC, RS_PROBE_LATENT_NC, RS_PROBE_CLASS_NC},
    rs_probe_definitions, rs_probe_kind_names, RS_PROBE_KIND_COUNT, {1, 1, 0}};

static const study_tables tpp_tables = {
    RS_TASK_TPP, "tpp",
    {"tpp", "tpp_latents", "tpp_probes"},
    {RS_TPP_TABLE_COLS, RS_TPP_LATENT_COLS, RS_TPP_PROBE_COLS},
    {RS_TPP_TABLE_NC, RS_TPP_LATENT_NC, RS_TPP_PROBE_NC},
    rs_tpp_definitions, rs_tpp_kind_names, RS_TPP_KIND_COUNT, {1, 1, 0}};

static rs_err study_read(eval_acc *a, char *label_names, size_t cap, const rs_task *t, const study_tables *st) {
    hid_t f = H5Fopen(t->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    RS_CHECK(f >= 0, RS_ERR_IO, "%s: cannot open", t->path);
    rs_err err = rs_h5_attr_get_str(label_names, cap, f, "label_names", t->path);
    for (int k = 0; k < 3 && !err; k++) {
        double *tab = NULL;
        int n = 0, nc = st->nc[k];
        err = rs_taskfile_read_table(&tab, &n, f, st->name[k], nc, t->path);
        if (!err && a->n[k] + n > a->cap[k]) {
            int cap2 = 2 * (a->n[k] + n) + 8;
            double *q = realloc(a->rows[k], sizeof(double) * (size_t)cap2 * (size_t)(nc + 1));
            if (q) a->rows[k] = q, a->cap[k] = cap2;
            else err = RS_ERR(RS_ERR_NOMEM, "out of memory");
        }
        for (int r = 0; r < n && !err; r++) {
            double *q = a->rows[k] + (size_t)(a->n[k]++) * (size_t)(nc + 1);
            q[0] = t->index;
            memcpy(q + 1, tab + (size_t)r * (size_t)nc, sizeof(double) * (size_t)nc);
        }
        free(tab);
    }
    H5Fclose(f);
    return err;
}

static rs_err results_study(hid_t out, const rs_task_list *l, const study_tables *st) {
    if (!rs_tasks_count(l, st->kind)) return RS_OK;
    hid_t g = H5Gcreate2(out, st->group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    RS_CHECK(g >= 0, RS_ERR_IO, "results: cannot create /%s", st->group);
    eval_acc a;
    memset(&a, 0, sizeof a);
    size_t cap = 1 << 20;
    char *names = calloc(cap, 1);
    rs_err err = names ? RS_OK : RS_ERR(RS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < l->n && !err; i++)
        if (l->tasks[i].kind == st->kind && rs_file_exists(l->tasks[i].path)) err = study_read(&a, names, cap, &l->tasks[i], st);
    for (int k = 0; k < 3 && !err; k++) {
        char c[512];
        snprintf(c, sizeof c, "set,%s", st->cols[k]);
        err = write_table(g, st->name[k], a.rows[k], a.n[k], st->nc[k] + 1, c, st->defs[k], st->variant[k], 0);
    }
    char kinds[256];
    join_names(kinds, sizeof kinds, st->kind_names, st->n_kinds);
    hid_t ds = err ? -1 : H5Dopen2(g, st->name[0], H5P_DEFAULT);
    if (ds >= 0) {
        err = rs_h5_attr_str(ds, "enum:kind", kinds);
        H5Dclose(ds);
    }
    if (!err) err = rs_h5_attr_str(g, "label_names", names);
    for (int k = 0; k < 3; k++) free(a.rows[k]);
    free(names);
    H5Gclose(g);
    return err;
}

/* =====================================================================================================
 * The file
 * ===================================================================================================== */

static rs_err results_config(hid_t out, const rs_task_ctx *c) {
    const rs_run *run = c->run;
    char *text = NULL;
    size_t len = 0;
    char path[4096];
    RS_TRY(rs_tasks_run_file(path, sizeof path, run, RS_RUN_CONFIG_FILE));
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
    RS_CHECK(e >= 0, RS_ERR_IO, "results: cannot write config_yaml");
    char hex[32];
    snprintf(hex, sizeof hex, "%016" PRIx64, run->grid.config_hash);
    RS_TRY(rs_h5_attr_str(out, "config_hash", hex));
    RS_TRY(rs_h5_attr_i64(out, "schema_version", RESAE_SCHEMA_VERSION));
    RS_TRY(rs_h5_attr_i64(out, "results_layout", RS_RESULTS_LAYOUT));
    RS_TRY(rs_h5_attr_str(out, "resae_version", RESAE_VERSION));
    return rs_h5_attr_i64(out, "n_ranks", c->size);
}

static rs_err write_file(const rs_task_ctx *c, const rs_sched *s) {
    char path[4096], tmp[4200];
    RS_TRY(rs_tasks_run_file(path, sizeof path, c->run, RS_RESULTS_FILE));
    rs_task_list l;
    RS_TRY(rs_tasks_build(&l, c->run));
    /* results.h5 holds about what the task files hold. Checked before writing: HDF5 1.10's H5Ocopy
     * can crash when a write fails in the middle of a copy */
    char tasks_dir[4200];
    rs_err err = rs_tasks_run_file(tasks_dir, sizeof tasks_dir, c->run, "tasks");
    if (err) {
        rs_tasks_free(&l);
        return err;
    }
    int64_t need = rs_dir_bytes(tasks_dir) + (1 << 20), avail = rs_fs_avail(c->run->cfg.run_dir);
    if (avail >= 0 && avail < need) {
        rs_tasks_free(&l);
        errno = ENOSPC;
        RS_FAIL(RS_ERR_IO, "%s: cannot write results.h5: it needs about %.1f MB (the task files and 1 MB), the file system "
                "has %.1f MB free", path, (double)need / 1e6, (double)avail / 1e6);
    }
    hid_t f;
    err = rs_taskfile_create_on_disk(&f, tmp, sizeof tmp, path);
    if (err) {
        rs_tasks_free(&l);
        return err;
    }
    err = results_config(f, c);
    if (!err) err = results_affine(f, &l);
    if (!err) err = results_sae(f, c->run, &l);
    if (!err) err = results_eval(f, c->run, &l);
    if (!err) err = results_study(f, &l, &probe_tables);
    if (!err) err = results_study(f, &l, &tpp_tables);
    if (!err && s) err = rs_sched_write_table(f, "tasks", s);
    rs_tasks_free(&l);
    if (err) {
        H5Fclose(f);
        return err;
    }
    RS_TRY(rs_taskfile_commit(f, tmp, path));
    RS_INFO("results: %s", path);
    return RS_OK;
}

rs_err rs_results_write(const rs_task_ctx *c, const rs_sched *s) {
    rs_err err = c->rank == 0 ? write_file(c, s) : RS_OK;
    return rs_agree(err, c->comm, "writing results.h5");
}
