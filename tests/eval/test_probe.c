/* Sparse probing against the numpy + scikit-learn reference (tests/reference/probe_ref.py).
 *
 * usage: test_probe reference FIXTURE_H5 | loader TMP_DIR
 *   reference  on tests/data/probe/probe_fixture.h5: the plan (group split, eligible classes, class
 *              sets, pools, binary tasks) equals the reference's exactly; pooled h and pooled
 *              original-unit codes z/s of a raw and a resae TopK SAE (through rs_eval_splice_error)
 *              within 1e-6 (max |a - b| / (1 + |b|)); top-K selections (per layer, union) and random
 *              latents exactly; every probe accuracy (LIBLINEAR) equal to sklearn's liblinear; at the
 *              first layer raw and resae bitwise identical
 *   loader     bad files: missing datasets, shape mismatches, label ids out of range, token ids >= vocab,
 *              negative groups; each error names the file and the dataset */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/affine.h"
#include "resae/config.h"
#include "resae/eval.h"
#include "resae/h5util.h"
#include "resae/mpi_util.h"
#include "resae/probe.h"
#include "resae/probe_data.h"
#include "resae/sae.h"

#include "testlib.h"

#define TRY(e)                                                     \
    do {                                                           \
        if (e) {                                                   \
            rs_err_print();                                        \
            exit(1);                                               \
        }                                                          \
    } while (0)

/* ---- fixture ---------------------------------------------------------------------------------------- */

static hid_t g_f;

static void *rd(const char *name, hid_t type, size_t elem, size_t *n_out) {
    hid_t ds = H5Dopen2(g_f, name, H5P_DEFAULT);
    if (ds < 0) {
        fprintf(stderr, "fixture has no %s\n", name);
        exit(1);
    }
    hid_t sp = H5Dget_space(ds);
    size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
    void *v = malloc(elem * n + 1);
    if (!v || H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) exit(1);
    H5Sclose(sp);
    H5Dclose(ds);
    if (n_out) *n_out = n;
    return v;
}

static double attr_f(const char *name) {
    double v = 0;
    TRY(rs_h5_attr_get_f64(&v, g_f, name, "fixture"));
    return v;
}

enum { D = 8, NL = 32, T = 12, KS = 4, NK = 3 };
static const int TOPK[NK] = {1, 2, 5};

static void load_sae(rs_sae *s, int i) {
    char name[64];
    TRY(rs_sae_init(s, D, NL, KS));
    const char *w[4] = {"W_enc", "b_enc", "W_dec", "b_dec"};
    float *dst[4] = {s->p.W_enc, s->p.b_enc, s->p.W_dec, s->p.b_dec};
    for (int j = 0; j < 4; j++) {
        size_t n;
        snprintf(name, sizeof name, "sae%d/%s", i, w[j]);
        float *v = rd(name, H5T_NATIVE_FLOAT, sizeof(float), &n);
        memcpy(dst[j], v, sizeof(float) * n);
        free(v);
    }
}

/* Pooled z/s of every window at both layers of es (out (2, n, NL)). */
static void pooled_codes(float *out, const rs_eval_set *es, const float *h, int64_t n) {
    rs_eval_work w;
    TRY(rs_eval_work_init(&w, es, T));
    double acc[NL];
    for (int m = 0; m < 2; m++)
        for (int64_t i = 0; i < n; i++) {
            const float *hm = h + ((size_t)m * (size_t)n + (size_t)i) * T * D;
            const float *hp = m ? h + (size_t)i * T * D : NULL;
            TRY(rs_eval_splice_error(NULL, &w, es, m, hm, es->variant == RS_VARIANT_RESAE ? hp : NULL, T));
            rs_probe_pool_codes(out + ((size_t)m * (size_t)n + (size_t)i) * NL, acc, w.idx, w.val, KS, NL,
                                es->L[m].scale, 1, T, 1);
        }
    rs_eval_work_free(&w);
}

static void check_close(const float *a, const float *b, size_t n, const char *what) {
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]) / (1.0 + fabs((double)b[i]));
        if (e > worst) worst = e, at = i;
    }
    CHECK(worst <= 1e-6, "%s: relative difference %.3g at %zu (%.9g vs reference %.9g)", what, worst, at, a[at], b[at]);
}

/* Rows (n_w, F) of the set's windows. */
static float *gather(const float *X, const int64_t *win, int n_w, int F) {
    float *o = malloc(sizeof(float) * (size_t)n_w * (size_t)F);
    for (int i = 0; i < n_w; i++) memcpy(o + (size_t)i * F, X + (size_t)win[i] * F, sizeof(float) * (size_t)F);
    return o;
}

typedef struct ref_acc {
    double *v; // (n, 6): variant, kind, layer index, K, class, accuracy
    size_t n;
} ref_acc;

static double ref_lookup(const ref_acc *r, int variant, int kind, int m, int K, int c) {
    for (size_t i = 0; i < r->n; i++) {
        const double *q = r->v + 6 * i;
        if (q[0] == variant && q[1] == kind && q[2] == m && q[3] == K && q[4] == c) return q[5];
    }
    return NAN;
}

static void check_plan(const rs_probe_plan *p) {
    size_t n;
    int8_t *side = rd("expect/test_side", H5T_NATIVE_INT8, 1, &n);
    CHECK(!memcmp(side, p->test_side, n), "group split differs from the reference");
    free(side);
    int32_t *ne = rd("expect/n_eligible", H5T_NATIVE_INT32, 4, NULL);
    CHECK(p->n_eligible == *ne && p->n_sets == 2, "%d eligible, %d sets (reference %d eligible, 2 sets)", p->n_eligible,
          p->n_sets, *ne);
    free(ne);
    for (int s = 0; s < p->n_sets; s++) {
        char name[96];
        const rs_probe_set *S = &p->sets[s];
        snprintf(name, sizeof name, "expect/set%d/labels", s);
        int32_t *lab = rd(name, H5T_NATIVE_INT32, 4, &n);
        for (int c = 0; c < S->C; c++) CHECK(S->label[c] == lab[c], "set %d class %d: label %d, reference %d", s, c, S->label[c], lab[c]);
        free(lab);
        snprintf(name, sizeof name, "expect/set%d/windows", s);
        int64_t *win = rd(name, H5T_NATIVE_INT64, 8, &n);
        CHECK(n == (size_t)S->n_windows && !memcmp(win, S->windows, 8 * n), "set %d: windows differ", s);
        free(win);
        for (int c = 0; c < S->C; c++) {
            const char *parts[4] = {"train", "y_train", "test", "y_test"};
            const void *mine[4] = {S->task[c].train, S->task[c].y_train, S->task[c].test, S->task[c].y_test};
            for (int j = 0; j < 4; j++) {
                snprintf(name, sizeof name, "expect/set%d/task%d/%s", s, c, parts[j]);
                int is_y = j & 1;
                void *v = rd(name, is_y ? H5T_NATIVE_INT8 : H5T_NATIVE_INT32, is_y ? 1 : 4, &n);
                CHECK(!memcmp(v, mine[j], n * (is_y ? 1 : 4)), "set %d class %d: %s differs", s, c, parts[j]);
                free(v);
            }
        }
    }
}

/* One class set: top-K and accuracies of every probe against the reference. */
static void check_set(const rs_probe_plan *p, int s, float *const hp[2], float *const zp[2][2]) {
    const rs_probe_set *S = &p->sets[s];
    char name[96];
    size_t n;
    snprintf(name, sizeof name, "expect/set%d/acc", s);
    ref_acc r = {rd(name, H5T_NATIVE_DOUBLE, 8, &n), 0};
    r.n = n / 6;
    snprintf(name, sizeof name, "expect/set%d/sel", s);
    int64_t *sel_ref = rd(name, H5T_NATIVE_INT64, 8, &n);
    int n_sel = (int)(n / 8), F_h = D, F_z[2] = {NL, NL};
    float *H[2], *Z[2][2];
    for (int m = 0; m < 2; m++) {
        H[m] = gather(hp[m], S->windows, S->n_windows, D);
        for (int v = 0; v < 2; v++) Z[v][m] = gather(zp[v][m], S->windows, S->n_windows, NL);
    }
    int fits = 0, mism = 0;
    for (int c = 0; c < S->C; c++) {
        const rs_probe_task *t = &S->task[c];
        int64_t sel[D];
        double a;
        for (int m = 0; m < 2; m++) {
            const float *x = H[m];
            rs_probe_blocks X = {1, &x, &F_h};
            TRY(rs_probe_topk(sel, &X, t, 5));
            for (int k = 0; k < NK; k++) {
                TRY(rs_probe_fit(&a, &X, sel, TOPK[k], t, 1.0));
                mism += a != ref_lookup(&r, -1, 1, m, TOPK[k], c);
                fits++;
            }
            for (int i = 0; i < D; i++) sel[i] = i;
            TRY(rs_probe_fit(&a, &X, sel, D, t, 1.0));
            mism += a != ref_lookup(&r, -1, 2, m, D, c);
            fits++;
        }
        double first[2][NK];
        for (int v = 0; v < 2; v++)
            for (int m = -1; m < 2; m++) {
                const float *xs[2] = {Z[v][m < 0 ? 0 : m], Z[v][1]};
                rs_probe_blocks X = {m < 0 ? 2 : 1, xs, F_z};
                TRY(rs_probe_topk(sel, &X, t, 5));
                const int64_t *want = NULL;
                for (int i = 0; i < n_sel; i++)
                    if (sel_ref[8 * i] == v && sel_ref[8 * i + 1] == m && sel_ref[8 * i + 2] == c) want = sel_ref + 8 * i + 3;
                CHECK(want && !memcmp(want, sel, 5 * sizeof *sel), "set %d class %d variant %d layer %d: top-5 %lld %lld "
                      "%lld %lld %lld differs from the reference", s, c, v, m, (long long)sel[0], (long long)sel[1],
                      (long long)sel[2], (long long)sel[3], (long long)sel[4]);
                for (int k = 0; k < NK; k++) {
                    TRY(rs_probe_fit(&a, &X, sel, TOPK[k], t, 1.0));
                    mism += a != ref_lookup(&r, v, 0, m, TOPK[k], c);
                    fits++;
                    if (m == 0) first[v][k] = a;
                }
            }
        for (int k = 0; k < NK; k++)
            CHECK(first[0][k] == first[1][k], "first layer: raw %.6f and resae %.6f probes differ", first[0][k], first[1][k]);
        for (int v = 0; v < 2; v++)
            for (int m = 0; m < 2; m++) {
                const float *x = Z[v][m];
                rs_probe_blocks X = {1, &x, &F_z[0]};
                for (int k = 0; k < NK; k++) {
                    TRY(rs_probe_random(sel, NL, TOPK[k], 42, (uint64_t)(s * RS_PROBE_MAX_CLASSES + c),
                                        (uint64_t)m * 65536 + (uint64_t)TOPK[k]));
                    TRY(rs_probe_fit(&a, &X, sel, TOPK[k], t, 1.0));
                    mism += a != ref_lookup(&r, v, 3, m, TOPK[k], c);
                    fits++;
                }
            }
    }
    CHECK(mism == 0, "set %d: %d of %d probe accuracies differ from scikit-learn's", s, mism, fits);
    printf("set %d: %d probes, %d accuracies differ from the reference\n", s, fits, mism);
    for (int m = 0; m < 2; m++) {
        free(H[m]);
        for (int v = 0; v < 2; v++) free(Z[v][m]);
    }
    free(r.v);
    free(sel_ref);
}

static void case_reference(const char *path) {
    g_f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (g_f < 0) exit(1);
    rs_probe_data d;
    TRY(rs_probe_data_load(&d, path, 50));
    rs_probe_opts o = {(int64_t)attr_f("n_train"), (int64_t)attr_f("n_test"), (int)attr_f("classes_per_set"),
                       (int)attr_f("max_sets"), attr_f("test_fraction"), (uint64_t)attr_f("seed")};
    rs_probe_plan p;
    TRY(rs_probe_plan_build(&p, &d, &o));
    check_plan(&p);
    size_t nh;
    float *h = rd("h", H5T_NATIVE_FLOAT, 4, &nh);
    double scales[3];
    size_t ns;
    TRY(rs_h5_attr_get_array(scales, &ns, 3, H5T_NATIVE_DOUBLE, g_f, "scales", path));
    rs_sae sae[3];
    for (int i = 0; i < 3; i++) load_sae(&sae[i], i);
    rs_affine_map map;
    memset(&map, 0, sizeof map);
    double *A = rd("map/A", H5T_NATIVE_DOUBLE, 8, NULL), *mx = rd("map/mu_x", H5T_NATIVE_DOUBLE, 8, NULL),
           *my = rd("map/mu_y", H5T_NATIVE_DOUBLE, 8, NULL);
    TRY(rs_affine_map_set(&map, D, D, A, mx, my));
    rs_eval_set es[2] = {{.variant = RS_VARIANT_RAW, .M = 2, .d = D}, {.variant = RS_VARIANT_RESAE, .M = 2, .d = D}};
    es[0].L[0] = (rs_eval_layer){.layer = 0, .sae = &sae[0], .scale = scales[0], .map = NULL};
    es[0].L[1] = (rs_eval_layer){.layer = 1, .sae = &sae[1], .scale = scales[1], .map = NULL};
    es[1].L[0] = es[0].L[0];
    es[1].L[1] = (rs_eval_layer){.layer = 1, .sae = &sae[2], .scale = scales[2], .map = &map};
    int64_t n = d.n;
    float *z[2], *zp[2][2], *hp[2], *ref;
    const char *names[2] = {"expect/pooled_raw", "expect/pooled_resae"};
    for (int v = 0; v < 2; v++) {
        z[v] = malloc(sizeof(float) * 2 * (size_t)n * NL);
        pooled_codes(z[v], &es[v], h, n);
        ref = rd(names[v], H5T_NATIVE_FLOAT, 4, NULL);
        check_close(z[v], ref, 2 * (size_t)n * NL, names[v]);
        free(ref);
        for (int m = 0; m < 2; m++) zp[v][m] = z[v] + (size_t)m * (size_t)n * NL;
    }
    CHECK(!memcmp(z[0], z[1], sizeof(float) * (size_t)n * NL), "first layer: raw and resae pooled codes differ");
    float *hpool = malloc(sizeof(float) * 2 * (size_t)n * D);
    double acc[D];
    for (int m = 0; m < 2; m++) {
        hp[m] = hpool + (size_t)m * (size_t)n * D;
        rs_probe_pool_dense(hp[m], acc, h + (size_t)m * (size_t)n * T * D, D, (int)n, T, 1);
    }
    ref = rd("expect/hpool", H5T_NATIVE_FLOAT, 4, NULL);
    check_close(hpool, ref, 2 * (size_t)n * D, "pooled h");
    free(ref);
    for (int s = 0; s < p.n_sets; s++) check_set(&p, s, hp, zp);
    for (int i = 0; i < 3; i++) rs_sae_free(&sae[i]);
    rs_affine_map_free(&map);
    free(A);
    free(mx);
    free(my);
    free(h);
    free(hpool);
    free(z[0]);
    free(z[1]);
    rs_probe_plan_free(&p);
    rs_probe_data_free(&d);
    H5Fclose(g_f);
}

/* ---- loader errors ------------------------------------------------------------------------------------ */

typedef struct bad_file {
    const char *what;
    int drop;           /* 0 none, 1 tokens, 2 labels, 3 label_names */
    int bad_label, bad_token, short_groups, neg_group;
    const char *expect; /* substring of the message */
} bad_file;

static void write_bad(const char *path, const bad_file *b) {
    enum { N = 6, TT = 4 };
    int32_t tok[N * TT], lab[N], grp[N];
    for (int i = 0; i < N * TT; i++) tok[i] = i % 10;
    for (int i = 0; i < N; i++) lab[i] = i % 2, grp[i] = i;
    if (b->bad_label) lab[3] = 2;
    if (b->bad_token) tok[5] = 10;
    if (b->neg_group) grp[2] = -1;
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dt[2] = {N, TT}, dl = N, dg = b->short_groups ? N - 1 : N, dn = 2;
    if (b->drop != 1) TRY(rs_h5_write(f, "tokens", H5T_NATIVE_INT32, 2, dt, tok));
    if (b->drop != 2) TRY(rs_h5_write(f, "labels", H5T_NATIVE_INT32, 1, &dl, lab));
    TRY(rs_h5_write(f, "groups", H5T_NATIVE_INT32, 1, &dg, grp));
    if (b->drop != 3) {
        hid_t st = H5Tcopy(H5T_C_S1);
        H5Tset_size(st, 4);
        hid_t sp = H5Screate_simple(1, &dn, NULL);
        hid_t ds = H5Dcreate2(f, "label_names", st, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dwrite(ds, st, H5S_ALL, H5S_ALL, H5P_DEFAULT, "aaa\0bbb\0");
        H5Dclose(ds);
        H5Sclose(sp);
        H5Tclose(st);
    }
    H5Fclose(f);
}

static void case_loader(const char *dir) {
    const bad_file cases[] = {
        {"good", 0, 0, 0, 0, 0, NULL},
        {"no tokens", 1, 0, 0, 0, 0, "no dataset /tokens"},
        {"no labels", 2, 0, 0, 0, 0, "no dataset /labels"},
        {"no names", 3, 0, 0, 0, 0, "no dataset /label_names"},
        {"label out of range", 0, 1, 0, 0, 0, "/labels[3] = 2 is not a class id in [0, 2)"},
        {"token >= vocab", 0, 0, 1, 0, 0, "/tokens[1, 1] = 10 is outside the model's vocabulary [0, 10)"},
        {"groups shape", 0, 0, 0, 1, 0, "/groups has 5 entries but /tokens has 6 windows"},
        {"negative group", 0, 0, 0, 0, 1, "/groups[2] = -1 is negative"},
    };
    char path[4096];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(path, sizeof path, "%s/bad%zu.h5", dir, i);
        write_bad(path, &cases[i]);
        rs_probe_data d;
        rs_err e = rs_probe_data_load(&d, path, 10);
        if (!cases[i].expect) {
            CHECK(!e && d.n == 6 && d.T == 4 && d.n_labels == 2 && !strcmp(d.label_names[1], "bbb"),
                  "good file refused: %s", rs_err_msg());
        } else {
            CHECK(e == RS_ERR_FORMAT, "%s: accepted or wrong code %d", cases[i].what, e);
            CHECK(strstr(rs_err_msg(), cases[i].expect) && strstr(rs_err_msg(), path),
                  "%s: message '%s' lacks '%s' or the file name", cases[i].what, rs_err_msg(), cases[i].expect);
            printf("%-20s -> %s\n", cases[i].what, rs_err_msg());
        }
        rs_probe_data_free(&d);
        rs_err_clear();
    }
    rs_probe_data d;
    CHECK(rs_probe_data_load(&d, "/nonexistent/probe.h5", 10) == RS_ERR_IO, "a missing file must fail with RS_ERR_IO");
    rs_err_clear();
}

int main(int argc, char **argv) {
    if (rs_mpi_begin(&argc, &argv)) {
        rs_err_print();
        return 1;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int ran = argc >= 3;
    if (ran && !strcmp(argv[1], "reference")) case_reference(argv[2]);
    else if (ran && !strcmp(argv[1], "loader")) case_loader(argv[2]);
    else ran = 0;
    if (!ran) fprintf(stderr, "usage: test_probe reference FIXTURE_H5 | loader TMP_DIR\n");
    printf("probe %s: %s\n", ran ? argv[1] : "?", !ran ? "USAGE" : rs_check_fails ? "FAILED" : "ok");
    rs_mpi_end();
    return (!ran || rs_check_fails) ? 1 : 0;
}
