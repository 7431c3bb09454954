/* Labelled sequences, class sets and binary tasks (probe_data.h). */
#include "resae/probe_data.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resae/rng.h"

/* =====================================================================================================
 * Loading
 * ===================================================================================================== */

/* Dataset NAME of D's file: rank-1 or rank-2 dims into dims; a missing one is an error naming the fix. */
static rs_err dset_dims(hsize_t dims[2], int want_rank, hid_t f, const char *name, const char *path,
                        const char *what) {
    htri_t has = 0;
    H5E_BEGIN_TRY { has = H5Lexists(f, name, H5P_DEFAULT); }
    H5E_END_TRY;
    if (has <= 0)
        RS_FAIL(RS_ERR_FORMAT, "%s: no dataset /%s (%s); add it (docs/probing.md describes the layout)", path, name,
                what);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) RS_FAIL(RS_ERR_FORMAT, "%s: /%s is not a dataset (%s)", path, name, what);
    hid_t sp = H5Dget_space(ds);
    int rank = H5Sget_simple_extent_ndims(sp);
    dims[0] = dims[1] = 0;
    if (rank == want_rank) H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Dclose(ds);
    if (rank != want_rank)
        RS_FAIL(RS_ERR_FORMAT, "%s: /%s has %d dimensions, expected %d (%s)", path, name, rank, want_rank, what);
    return RS_OK;
}

static rs_err read_i32(int32_t *out, hid_t f, const char *name, const char *path) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t type = ds >= 0 ? H5Dget_type(ds) : -1;
    int is_int = type >= 0 && H5Tget_class(type) == H5T_INTEGER;
    herr_t st = is_int ? H5Dread(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) : -1;
    if (type >= 0) H5Tclose(type);
    if (ds >= 0) H5Dclose(ds);
    if (!is_int) RS_FAIL(RS_ERR_FORMAT, "%s: /%s is not an integer dataset; write it as int32", path, name);
    if (st < 0) RS_FAIL(RS_ERR_IO, "%s: cannot read /%s", path, name);
    return RS_OK;
}

/* /label_names: fixed-length or variable-length strings, truncated to RS_PROBE_NAME_MAX - 1. */
static rs_err read_names(rs_probe_data *d, hid_t f) {
    hid_t ds = H5Dopen2(f, "label_names", H5P_DEFAULT);
    hid_t type = H5Dget_type(ds);
    rs_err err = RS_OK;
    if (H5Tget_class(type) != H5T_STRING) {
        err = RS_ERR(RS_ERR_FORMAT, "%s: /label_names is not a string dataset; write the class names as strings",
                     d->path);
    } else if (H5Tis_variable_str(type) > 0) {
        char **v = calloc((size_t)d->n_labels, sizeof *v);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        if (!v || H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
            err = RS_ERR(RS_ERR_IO, "%s: cannot read /label_names", d->path);
        for (int i = 0; i < d->n_labels && !err; i++) snprintf(d->label_names[i], RS_PROBE_NAME_MAX, "%s", v[i] ? v[i] : "");
        for (int i = 0; v && i < d->n_labels; i++) free(v[i]);
        free(v);
        H5Tclose(mt);
    } else {
        size_t w = H5Tget_size(type);
        char *buf = malloc(w * (size_t)d->n_labels + 1);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, w);
        if (!buf || H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
            err = RS_ERR(RS_ERR_IO, "%s: cannot read /label_names", d->path);
        for (int i = 0; i < d->n_labels && !err; i++) {
            size_t n = w < RS_PROBE_NAME_MAX - 1 ? w : RS_PROBE_NAME_MAX - 1;
            memcpy(d->label_names[i], buf + (size_t)i * w, n);
            d->label_names[i][n] = 0;
        }
        free(buf);
        H5Tclose(mt);
    }
    H5Tclose(type);
    H5Dclose(ds);
    return err;
}

/* Shapes, then the contents' ranges. */
static rs_err load_checked(rs_probe_data *d, hid_t f, int vocab) {
    hsize_t td[2], ld[2], nd[2], gd[2];
    RS_TRY(dset_dims(td, 2, f, "tokens", d->path, "int32 token ids [n, T]"));
    RS_TRY(dset_dims(ld, 1, f, "labels", d->path, "int32 class id of each window [n]"));
    RS_TRY(dset_dims(nd, 1, f, "label_names", d->path, "one string per class id"));
    if (ld[0] != td[0])
        RS_FAIL(RS_ERR_FORMAT, "%s: /labels has %llu entries but /tokens has %llu windows; give one label per window",
                d->path, (unsigned long long)ld[0], (unsigned long long)td[0]);
    if (td[0] < 1 || td[1] < 2 || nd[0] < 1 || nd[0] > (1u << 20))
        RS_FAIL(RS_ERR_FORMAT, "%s: /tokens is [%llu, %llu] and /label_names has %llu entries; need at least one window "
                "of >= 2 tokens and 1..2^20 names", d->path, (unsigned long long)td[0], (unsigned long long)td[1],
                (unsigned long long)nd[0]);
    d->n = (int64_t)td[0];
    d->T = (int)td[1];
    d->n_labels = (int)nd[0];
    d->tokens = malloc(sizeof(int32_t) * (size_t)d->n * (size_t)d->T);
    d->labels = malloc(sizeof(int32_t) * (size_t)d->n);
    d->groups = malloc(sizeof(int32_t) * (size_t)d->n);
    d->label_names = calloc((size_t)d->n_labels, sizeof *d->label_names);
    RS_CHECK(d->tokens && d->labels && d->groups && d->label_names, RS_ERR_NOMEM, "%s: out of memory for %lld windows",
             d->path, (long long)d->n);
    RS_TRY(read_i32(d->tokens, f, "tokens", d->path));
    RS_TRY(read_i32(d->labels, f, "labels", d->path));
    RS_TRY(read_names(d, f));
    htri_t has_groups = 0;
    H5E_BEGIN_TRY { has_groups = H5Lexists(f, "groups", H5P_DEFAULT); }
    H5E_END_TRY;
    if (has_groups > 0) {
        RS_TRY(dset_dims(gd, 1, f, "groups", d->path, "int32 group of each window [n]"));
        if (gd[0] != td[0])
            RS_FAIL(RS_ERR_FORMAT, "%s: /groups has %llu entries but /tokens has %llu windows; give one group per window",
                    d->path, (unsigned long long)gd[0], (unsigned long long)td[0]);
        RS_TRY(read_i32(d->groups, f, "groups", d->path));
    } else {
        for (int64_t i = 0; i < d->n; i++) d->groups[i] = (int32_t)i;
    }
    for (int64_t i = 0; i < d->n; i++) {
        if (d->labels[i] < 0 || d->labels[i] >= d->n_labels)
            RS_FAIL(RS_ERR_FORMAT, "%s: /labels[%lld] = %d is not a class id in [0, %d) (the length of /label_names); "
                    "fix the label or add its name", d->path, (long long)i, d->labels[i], d->n_labels);
        if (d->groups[i] < 0)
            RS_FAIL(RS_ERR_FORMAT, "%s: /groups[%lld] = %d is negative; groups are ids >= 0", d->path, (long long)i,
                    d->groups[i]);
    }
    for (size_t q = 0; q < (size_t)d->n * (size_t)d->T; q++)
        if (d->tokens[q] < 0 || (vocab > 0 && d->tokens[q] >= vocab))
            RS_FAIL(RS_ERR_FORMAT, "%s: /tokens[%zu, %zu] = %d is outside the model's vocabulary [0, %d); tokenize the "
                    "windows with the model's tokenizer", d->path, q / (size_t)d->T, q % (size_t)d->T, d->tokens[q],
                    vocab);
    return RS_OK;
}

rs_err rs_probe_data_load(rs_probe_data *d, const char *path, int vocab) {
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s", path);
    hid_t f = -1;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open the labelled sequences as an HDF5 file (missing, or not HDF5?)", path);
    rs_err err = load_checked(d, f, vocab);
    H5Fclose(f);
    if (err) {
        rs_probe_data_free(d);
        snprintf(d->path, sizeof d->path, "%s", path);
    }
    return err;
}

void rs_probe_data_free(rs_probe_data *d) {
    free(d->tokens);
    free(d->labels);
    free(d->groups);
    free(d->label_names);
    memset(d, 0, sizeof *d);
}

/* =====================================================================================================
 * The plan
 * ===================================================================================================== */

/* The first k of a uniform random permutation of v (n) in place (partial Fisher-Yates). */
static void draw(int64_t *v, int64_t n, int64_t k, uint64_t s[4]) {
    for (int64_t i = 0; i < k && i < n; i++) {
        int64_t j = i + (int64_t)rs_rng_below(s, (uint64_t)(n - i));
        int64_t t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct label_stat {
    int64_t count, n_test;
    int n_groups, big_group; /* big_group: the largest group's windows exceed half */
} label_stat;

typedef struct group_key {
    uint64_t h;
    int32_t g;
    int64_t size;
} group_key;

static int cmp_key(const void *a, const void *b) {
    const group_key *x = a, *y = b;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    return (x->g > y->g) - (x->g < y->g);
}

/* Step 1 (and the counts of step 2) for label L: its groups' sizes, then the greedy split. keys and
 * gsize are scratch (gsize all zero on entry and on return). */
static void split_label(label_stat *st, int8_t *side, group_key *keys, int64_t *gsize, const rs_probe_data *d, int L,
                        uint64_t seed, double frac) {
    int nk = 0;
    for (int64_t i = 0; i < d->n; i++)
        if (d->labels[i] == L) {
            if (gsize[d->groups[i]]++ == 0) keys[nk++].g = d->groups[i];
            st->count++;
        }
    int64_t test = 0;
    for (int j = 0; j < nk; j++) {
        keys[j].size = gsize[keys[j].g];
        keys[j].h = rs_splitmix64(seed ^ rs_splitmix64((uint64_t)keys[j].g + 1));
        gsize[keys[j].g] = 0;
        if (2 * keys[j].size > st->count) st->big_group = 1;
        if (side[keys[j].g] == 1) test += keys[j].size; /* placed by an earlier label */
    }
    qsort(keys, (size_t)nk, sizeof *keys, cmp_key);
    double target = frac * (double)st->count;
    for (int j = 0; j < nk; j++) {
        int8_t *s = &side[keys[j].g];
        if (*s >= 0) continue;
        *s = fabs((double)(test + keys[j].size) - target) < fabs((double)test - target);
        if (*s) test += keys[j].size;
    }
    st->n_groups = nk;
    st->n_test = test;
}

typedef struct rank_item {
    int64_t count;
    int label;
} rank_item;

static int cmp_rank(const void *a, const void *b) {
    const rank_item *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return (x->label > y->label) - (x->label < y->label);
}

/* Steps 1-3: the split of every window and the eligible labels in rank order (*ranked, caller frees). */
static rs_err split_and_rank(rs_probe_plan *p, rank_item **ranked, const rs_probe_data *d) {
    const rs_probe_opts *o = &p->o;
    int32_t max_g = 0;
    for (int64_t i = 0; i < d->n; i++) max_g = d->groups[i] > max_g ? d->groups[i] : max_g;
    int8_t *side = malloc((size_t)max_g + 1);
    int64_t *gsize = calloc((size_t)max_g + 1, sizeof *gsize);
    group_key *keys = malloc(sizeof *keys * (size_t)(max_g + 1));
    label_stat *st = calloc((size_t)d->n_labels, sizeof *st);
    *ranked = calloc((size_t)d->n_labels, sizeof **ranked);
    p->test_side = malloc((size_t)d->n);
    rs_err err = side && gsize && keys && st && *ranked && p->test_side ? RS_OK
                 : RS_ERR(RS_ERR_NOMEM, "%s: out of memory for the group split", d->path);
    if (!err) {
        memset(side, -1, (size_t)max_g + 1);
        for (int L = 0; L < d->n_labels; L++) split_label(&st[L], side, keys, gsize, d, L, o->seed, o->test_fraction);
        for (int64_t i = 0; i < d->n; i++) p->test_side[i] = side[d->groups[i]];
        for (int L = 0; L < d->n_labels; L++) {
            const label_stat *s = &st[L];
            if (s->count >= o->n_train + o->n_test && s->n_groups >= 3 && !s->big_group &&
                s->n_test >= o->n_test && s->count - s->n_test >= o->n_train)
                (*ranked)[p->n_eligible++] = (rank_item){s->count, L};
        }
        qsort(*ranked, (size_t)p->n_eligible, sizeof **ranked, cmp_rank);
    }
    free(side);
    free(gsize);
    free(keys);
    free(st);
    return err;
}

/* Step 4: n windows of label L on the given side, drawn and sorted, appended to out. */
static rs_err draw_pool(int64_t *out, int64_t n, const rs_probe_data *d, const rs_probe_plan *p, int L, int side) {
    int64_t m = 0;
    for (int64_t i = 0; i < d->n; i++) m += d->labels[i] == L && p->test_side[i] == side;
    int64_t *v = malloc(sizeof(int64_t) * (size_t)(m > 0 ? m : 1));
    RS_CHECK_ALLOC(v);
    m = 0;
    for (int64_t i = 0; i < d->n; i++)
        if (d->labels[i] == L && p->test_side[i] == side) v[m++] = i;
    uint64_t s[4];
    rs_rng_stream(s, p->o.seed, (uint64_t)L, 1000 + (uint64_t)side, 0);
    draw(v, m, n, s);
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    memcpy(out, v, sizeof(int64_t) * (size_t)n);
    free(v);
    return RS_OK;
}

/* Position of window w in the set's ascending list. */
static int32_t local_index(const rs_probe_set *S, int64_t w) {
    const int64_t *q = bsearch(&w, S->windows, (size_t)S->n_windows, sizeof *q, cmp_i64);
    return (int32_t)(q - S->windows);
}

/* Step 5, one side of class c's task: pools (C) of n windows each, in the set's window order. */
static rs_err binary_side(int32_t *idx, int8_t *y, const rs_probe_set *S, int64_t *const *pools, int64_t n, int c,
                          uint64_t seed, int set, int side) {
    int C = S->C;
    int64_t per = (n + C - 2) / (C - 1), m = 0;
    int64_t *neg = malloc(sizeof(int64_t) * (size_t)(per * (C - 1)));
    int64_t *tmp = malloc(sizeof(int64_t) * (size_t)n);
    if (!neg || !tmp) {
        free(neg);
        free(tmp);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for a binary probe task");
    }
    uint64_t s[4];
    rs_rng_stream(s, seed, 100000 + (uint64_t)set, (uint64_t)c, (uint64_t)side);
    for (int j = 0; j < C; j++) {
        if (j == c) continue;
        memcpy(tmp, pools[j], sizeof(int64_t) * (size_t)n);
        draw(tmp, n, per, s);
        memcpy(neg + m, tmp, sizeof(int64_t) * (size_t)per);
        m += per;
    }
    draw(neg, m, n, s);
    for (int64_t i = 0; i < n; i++) {
        idx[i] = local_index(S, pools[c][i]);
        y[i] = 1;
        idx[n + i] = local_index(S, neg[i]);
        y[n + i] = 0;
    }
    free(neg);
    free(tmp);
    return RS_OK;
}

static rs_err build_set(rs_probe_set *S, const rs_probe_plan *p, const rs_probe_data *d, int set) {
    const rs_probe_opts *o = &p->o;
    int64_t per = o->n_train + o->n_test;
    S->n_windows = (int)(S->C * per);
    S->windows = malloc(sizeof(int64_t) * (size_t)S->n_windows);
    int64_t *pools[2][RS_PROBE_MAX_CLASSES];
    RS_CHECK_ALLOC(S->windows);
    for (int c = 0; c < S->C; c++) {
        int64_t *base = S->windows + (size_t)c * (size_t)per;
        RS_TRY(draw_pool(base, o->n_train, d, p, S->label[c], 0));
        RS_TRY(draw_pool(base + o->n_train, o->n_test, d, p, S->label[c], 1));
    }
    /* the pools, kept aside before the list is sorted */
    int64_t *copy = malloc(sizeof(int64_t) * (size_t)S->n_windows);
    RS_CHECK_ALLOC(copy);
    memcpy(copy, S->windows, sizeof(int64_t) * (size_t)S->n_windows);
    qsort(S->windows, (size_t)S->n_windows, sizeof(int64_t), cmp_i64);
    for (int c = 0; c < S->C; c++) {
        pools[0][c] = copy + (size_t)c * (size_t)per;
        pools[1][c] = pools[0][c] + o->n_train;
    }
    rs_err err = RS_OK;
    for (int c = 0; c < S->C && !err; c++) {
        rs_probe_task *t = &S->task[c];
        t->n_train = (int)(2 * o->n_train);
        t->n_test = (int)(2 * o->n_test);
        t->train = malloc(sizeof(int32_t) * (size_t)t->n_train);
        t->test = malloc(sizeof(int32_t) * (size_t)t->n_test);
        t->y_train = malloc((size_t)t->n_train);
        t->y_test = malloc((size_t)t->n_test);
        if (!t->train || !t->test || !t->y_train || !t->y_test) err = RS_ERR(RS_ERR_NOMEM, "out of memory for probe tasks");
        if (!err) err = binary_side(t->train, t->y_train, S, pools[0], o->n_train, c, o->seed, set, 0);
        if (!err) err = binary_side(t->test, t->y_test, S, pools[1], o->n_test, c, o->seed, set, 1);
    }
    free(copy);
    return err;
}

rs_err rs_probe_plan_build(rs_probe_plan *p, const rs_probe_data *d, const rs_probe_opts *o) {
    memset(p, 0, sizeof *p);
    p->o = *o;
    int C = o->classes_per_set;
    if (C < 2 || C > RS_PROBE_MAX_CLASSES || o->max_sets < 1 || o->n_train < 1 || o->n_test < 1)
        RS_FAIL(RS_ERR_INVAL, "probe plan: classes per set %d (2..%d), sets %d, sizes %lld/%lld are not usable", C,
                RS_PROBE_MAX_CLASSES, o->max_sets, (long long)o->n_train, (long long)o->n_test);
    rank_item *ranked = NULL;
    rs_err err = split_and_rank(p, &ranked, d);
    int S = p->n_eligible / C < o->max_sets ? p->n_eligible / C : o->max_sets;
    if (!err && S < 1)
        err = RS_ERR(RS_ERR_INVAL, "%s: only %d classes are eligible for probing (each needs >= %lld windows, %lld on "
                     "each side of the group split, >= 3 groups, no group over half of them), fewer than the %d of a "
                     "class set; lower eval.probing.n_train/n_test or classes_per_set, or add windows", d->path,
                     p->n_eligible, (long long)(o->n_train + o->n_test), (long long)o->n_test, C);
    if (!err) {
        p->sets = calloc((size_t)(S > 0 ? S : 1), sizeof *p->sets);
        err = p->sets ? RS_OK : RS_ERR(RS_ERR_NOMEM, "out of memory for class sets");
    }
    for (int s = 0; s < S && !err; s++) {
        p->n_sets++;
        p->sets[s].C = C;
        for (int c = 0; c < C; c++) p->sets[s].label[c] = ranked[s + c * S].label;
        err = build_set(&p->sets[s], p, d, s);
    }
    free(ranked);
    if (err) rs_probe_plan_free(p);
    return err;
}

void rs_probe_plan_free(rs_probe_plan *p) {
    for (int s = 0; s < p->n_sets; s++) {
        rs_probe_set *S = &p->sets[s];
        free(S->windows);
        for (int c = 0; c < RS_PROBE_MAX_CLASSES; c++) {
            free(S->task[c].train);
            free(S->task[c].test);
            free(S->task[c].y_train);
            free(S->task[c].y_test);
        }
    }
    free(p->sets);
    free(p->test_side);
    memset(p, 0, sizeof *p);
}
