/* The config schema tables (src/config/config.c): every field marked as part of an identity hash
 * changes that hash when its value changes, and no unmarked field does; the tables are sane; and
 * docs/config.md's key reference is the one the tables print.
 *
 * usage: test_config_table DOCS/config.md                  (the tests)
 *        test_config_table --write-docs DOCS/config.md     (rewrite the generated key reference) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/config.h"
#include "resae/err.h"
#include "resae/grid.h"
#include "resae/util.h"
#include "model8.h"
#include "../../src/config/schema.h"

#define KEYS_BEGIN "<!-- keys: generated from the schema tables in src/config/config.c"
#define KEYS_END "<!-- keys: end -->"

static const char *g_docs;

/* Both studies enabled, so that the fields they gate are hashed. */
static const char *const base_yaml =
    "name: t\nmodel: {path: m}\n"
    "data: {tokens: t.h5, splits: {calibration: 1000, train: 100000, eval: 1000}}\n"
    "layers:\n  sets:\n    - {name: q, layers: [0, 2, 4]}\n    - {name: gap, start: 1, gaps: [3]}\n"
    "sae: {k: [4, 8], seeds: [0, 1]}\n"
    "train: {tokens: 50000, warmup_steps: 1}\n"
    "eval:\n  probing: {enabled: true, data: p.h5}\n  tpp: {enabled: true}\n";

static void load_base(rs_config *c, const char *extra) {
    char text[2048];
    snprintf(text, sizeof text, "%s%s", base_yaml, extra ? extra : "");
    if (rs_config_load_text(c, "/tmp/config-table/inline.yaml", text, strlen(text))) fail_msg("%s", rs_err_msg());
}

/* ============================================================================================
 * The hashes of a config: its own, the inputs, and the sets of affine, SAE and eval hashes
 * ========================================================================================== */

enum { D_CONFIG, D_INPUTS, D_AFFINE, D_SAE, D_EVAL, D_COUNT };
static const char *const digest_names[D_COUNT] = {"config", "inputs", "affine", "sae", "eval"};

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t set_digest(uint64_t *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    return rs_hash64(RS_HASH64_INIT, v, (size_t)n * sizeof *v);
}

static void digests(uint64_t d[D_COUNT], const rs_config *c) {
    rs_grid g;
    rs_model_config m = model8();
    if (rs_grid_build(&g, c, &m)) fail_msg("grid: %s", rs_err_msg());
    d[D_CONFIG] = rs_config_hash(c);
    d[D_INPUTS] = g.inputs_hash;
    int n = g.n_affine + g.n_regression + g.n_saes + g.n_evals;
    uint64_t *v = malloc((size_t)n * sizeof *v + 1), *q = v;
    assert_non_null(v);
    for (int i = 0; i < g.n_affine; i++) *q++ = g.affine[i].hash;
    for (int i = 0; i < g.n_regression; i++) *q++ = g.regression[i].hash;
    d[D_AFFINE] = set_digest(v, g.n_affine + g.n_regression);
    for (int i = 0; i < g.n_saes; i++) v[i] = g.saes[i].hash;
    d[D_SAE] = set_digest(v, g.n_saes);
    for (int i = 0; i < g.n_evals; i++) v[i] = g.evals[i].hash;
    d[D_EVAL] = set_digest(v, g.n_evals);
    free(v);
    rs_grid_free(&g);
}

/* Which digests a change of a field with hash bits H must change: a task hash starts from the
 * inputs hash, a resae SAE's from its affine pair's, an evaluation's from its SAEs'. */
static unsigned expected_changes(unsigned h) {
    unsigned e = 0;
    if (h & H_CONFIG) e |= 1u << D_CONFIG;
    if (h & H_INPUTS) e |= 1u << D_INPUTS | 1u << D_AFFINE | 1u << D_SAE | 1u << D_EVAL;
    if (h & H_AFFINE) e |= 1u << D_AFFINE | 1u << D_SAE | 1u << D_EVAL;
    if (h & H_SAE) e |= 1u << D_SAE | 1u << D_EVAL;
    if (h & H_EVAL) e |= 1u << D_EVAL;
    if (h & H_GRID) e |= 1u << D_SAE | 1u << D_EVAL; /* the fields that decide which SAEs exist */
    return e;
}

/* Change the value of FD in C to another valid one. */
static void mutate(rs_config *c, const rs_cfg_field *fd) {
    void *p = (char *)c + fd->off;
    switch (fd->kind) {
    case CFG_INT: {
        int64_t *v = p, step = *v / 2 > 1 ? *v / 2 : 1; /* big enough to change what is derived from it */
        *v = *v <= fd->hi - step ? *v + step : *v - 1;
        break;
    }
    case CFG_NUM: {
        double *v = p;
        *v = (*v + fd->num_hi) / 2;
        break;
    }
    case CFG_BOOL: *(int *)p = !*(int *)p; break;
    case CFG_ENUM: *(int *)p = (*(int *)p + 1) % fd->n_names; break;
    case CFG_STR:
    case CFG_PATH: {
        char **s = p, *t = malloc(strlen(*s ? *s : "") + 2);
        assert_non_null(t);
        sprintf(t, "%sx", *s ? *s : "");
        free(*s);
        *s = t;
        break;
    }
    case CFG_NAME: strcat((char *)p, "x"); break;
    case CFG_INT_LIST: {
        rs_int_list *l = p;
        if (l->n == 0) { /* an empty default (eval.tpp.k): one value */
            int64_t *v = realloc(l->v, sizeof *v);
            assert_non_null(v);
            l->v = v;
            l->v[l->n++] = fd->lo;
            break;
        }
        l->v[l->n - 1]++; /* stays sorted and unique */
        break;
    }
    case CFG_ENUM_LIST: {
        int *n = (int *)((char *)c + fd->count_off);
        assert_true(*n > 1);
        (*n)--;
        break;
    }
    case CFG_SECTION:
    case CFG_CUSTOM: fail_msg("%s: not a value", fd->name);
    }
}

static int n_checked;

static void check_fields(const rs_cfg_section *s, const uint64_t base[D_COUNT]) {
    for (int i = 0; i < s->n; i++) {
        const rs_cfg_field *fd = &s->fields[i];
        if (fd->kind == CFG_SECTION) {
            check_fields(fd->sub, base);
            continue;
        }
        if (fd->kind == CFG_CUSTOM) continue; /* layer sets: test_grid builds them every way */
        rs_config c;
        load_base(&c, NULL);
        mutate(&c, fd);
        uint64_t d[D_COUNT];
        digests(d, &c);
        rs_config_free(&c);
        unsigned want = expected_changes(fd->hash);
        for (int k = 0; k < D_COUNT; k++) {
            int changed = d[k] != base[k], should = (want >> k) & 1;
            if (changed != should)
                fail_msg("%s%s%s: the %s hash %s when the value changes; fix its H_* marks in the schema table "
                         "or the hash", s->key, s->key[0] ? "." : "", fd->name, digest_names[k],
                         changed ? "changes" : "does not change");
        }
        n_checked++;
    }
}

static void test_hash_membership(void **state) {
    (void)state;
    rs_config c;
    load_base(&c, NULL);
    uint64_t base[D_COUNT];
    digests(base, &c);
    rs_config_free(&c);
    n_checked = 0;
    check_fields(&rs_cfg_root, base);
    assert_true(n_checked >= 50);
}

/* A disabled study's settings do not change the evaluations (CFG_GATE). */
static void test_gate(void **state) {
    (void)state;
    const char *variants[][2] = {
        {"eval:\n  probing: {enabled: false, data: p.h5}\n",
         "eval:\n  probing: {enabled: false, data: p.h5, l2_c: 3}\n"},
        {"eval:\n  probing: {data: p.h5}\n  tpp: {enabled: false}\n",
         "eval:\n  probing: {data: p.h5}\n  tpp: {enabled: false, budgets: [7]}\n"},
    };
    for (int i = 0; i < 2; i++) {
        rs_config a, b;
        char ta[1024], tb[1024];
        const char *head = "name: t\nmodel: {path: m}\ndata: {tokens: t.h5, splits: {calibration: 1000, train: "
                           "100000, eval: 1000}}\nlayers: {sets: [{layers: [0, 2]}]}\ntrain: {tokens: 50000, "
                           "warmup_steps: 1}\n";
        snprintf(ta, sizeof ta, "%s%s", head, variants[i][0]);
        snprintf(tb, sizeof tb, "%s%s", head, variants[i][1]);
        if (rs_config_load_text(&a, "/tmp/x.yaml", ta, strlen(ta))) fail_msg("%s", rs_err_msg());
        if (rs_config_load_text(&b, "/tmp/x.yaml", tb, strlen(tb))) fail_msg("%s", rs_err_msg());
        uint64_t da[D_COUNT], db[D_COUNT];
        digests(da, &a);
        digests(db, &b);
        assert_true(da[D_CONFIG] != db[D_CONFIG]);
        assert_true(da[D_EVAL] == db[D_EVAL]);
        rs_config_free(&a);
        rs_config_free(&b);
    }
}

/* With probing on, its settings change the probing hash and never the evaluations' (they run in
 * their own tasks); turning it on changes both. */
static void test_probe_hash(void **state) {
    (void)state;
    const char *head = "name: t\nmodel: {path: m}\ndata: {tokens: t.h5, splits: {calibration: 1000, train: "
                       "100000, eval: 1000}}\nlayers: {sets: [{layers: [0, 2]}]}\ntrain: {tokens: 50000, "
                       "warmup_steps: 1}\n";
    const char *tails[] = {"eval:\n  probing: {enabled: false, data: p.h5}\n",
                           "eval:\n  probing: {enabled: true, data: p.h5}\n",
                           "eval:\n  probing: {enabled: true, data: p.h5, l2_c: 3}\n",
                           "eval:\n  probing: {enabled: true, data: p.h5, n_train: 7}\n",
                           "eval:\n  probing: {enabled: true, data: p.h5, layer_set: x}\n"};
    uint64_t ph[5], ev[5];
    for (int i = 0; i < 5; i++) {
        rs_config c;
        char t[1024];
        snprintf(t, sizeof t, "%s%s", head, tails[i]);
        if (rs_config_load_text(&c, "/tmp/x.yaml", t, strlen(t))) fail_msg("%s", rs_err_msg());
        uint64_t d[D_COUNT];
        digests(d, &c);
        ev[i] = d[D_EVAL];
        ph[i] = rs_config_probe_hash(1, &c);
        rs_config_free(&c);
    }
    assert_true(ev[0] != ev[1] && ph[0] != ph[1]);
    for (int i = 2; i < 5; i++) {
        assert_true(ev[i] == ev[1]);
        assert_true(ph[i] != ph[1]);
    }
}

/* The trainer settings rs_grid_sae_config derives: every field in the SAE hash that the trainer
 * reads changes the trainer's own hash (rs_sae_config_hash, kept in its checkpoints). */
static uint64_t first_sae_config_hash(const rs_config *c) {
    rs_grid g;
    rs_model_config m = model8();
    if (rs_grid_build(&g, c, &m)) fail_msg("grid: %s", rs_err_msg());
    rs_sae_config sc;
    rs_grid_sae_config(&sc, &g, c, &g.saes[0]);
    uint64_t h = rs_sae_config_hash(&sc);
    rs_grid_free(&g);
    return h;
}

static void check_sae_fields(const rs_cfg_section *s, uint64_t base, int *n) {
    for (int i = 0; i < s->n; i++) {
        const rs_cfg_field *fd = &s->fields[i];
        if (fd->kind == CFG_SECTION) check_sae_fields(fd->sub, base, n);
        /* the shuffle buffer shapes the data stream, which the pipeline builds */
        if (fd->kind == CFG_SECTION || !(fd->hash & H_SAE) || !strcmp(fd->name, "shuffle_buffer")) continue;
        rs_config c;
        load_base(&c, NULL);
        mutate(&c, fd);
        if (first_sae_config_hash(&c) == base) fail_msg("%s.%s: not passed to the trainer", s->key, fd->name);
        rs_config_free(&c);
        (*n)++;
    }
}

static void test_sae_config(void **state) {
    (void)state;
    rs_config c;
    load_base(&c, NULL);
    rs_grid g;
    rs_model_config m = model8();
    if (rs_grid_build(&g, &c, &m)) fail_msg("grid: %s", rs_err_msg());
    rs_sae_config sc;
    rs_grid_sae_config(&sc, &g, &c, &g.saes[0]);
    assert_int_equal(sc.d, 128);
    assert_int_equal(sc.n_latents, 1024);
    assert_int_equal(sc.k, g.saes[0].k);
    assert_int_equal(sc.batch, 4096);
    assert_int_equal(sc.steps, 50000 / 4096);
    assert_true(sc.lr == g.lr);
    assert_int_equal(sc.dead_tokens, 5000);
    assert_int_equal(sc.warmup_steps, 1);
    assert_true(sc.beta1 == 0.9 && sc.beta2 == 0.999 && sc.eps == 6.25e-10);
    assert_int_equal(sc.ckpt_every, 200);
    assert_int_equal(sc.curve_bins, 0);
    assert_int_equal(sc.enc_init, RS_SAE_ENC_TIED);
    assert_int_equal(sc.aux_norm, RS_SAE_AUX_RESIDUAL);
    assert_true(sc.seed == rs_grid_sae_seed(&g.saes[0], &c));
    rs_grid_free(&g);
    uint64_t base = first_sae_config_hash(&c);
    rs_config_free(&c);
    int n = 0;
    check_sae_fields(&rs_cfg_root, base, &n);
    assert_int_equal(n, 16); /* seed and the train.* fields but shuffle_buffer */
}

/* ============================================================================================
 * The tables themselves
 * ========================================================================================== */

static void check_table(const rs_cfg_section *s) {
    for (int i = 0; i < s->n; i++) {
        const rs_cfg_field *fd = &s->fields[i];
        for (int j = 0; j < i; j++)
            if (!strcmp(fd->name, s->fields[j].name)) fail_msg("%s.%s: declared twice", s->key, fd->name);
        if (fd->kind == CFG_SECTION) {
            check_table(fd->sub);
            continue;
        }
        if (!fd->doc || !fd->doc[0]) fail_msg("%s.%s: no doc string", s->key, fd->name);
        /* what changes a task's result also changes the config hash */
        if ((fd->hash & (H_TASKS | H_GRID)) && !(fd->hash & H_CONFIG))
            fail_msg("%s.%s: in a task hash but not in H_CONFIG", s->key, fd->name);
        /* a field in no task hash says why it cannot change a result: forgetting a mark is a decision */
        int in_task = (fd->hash & (H_TASKS | H_GRID)) != 0;
        if (!in_task && !fd->unhashed)
            fail_msg("%s.%s: in no task hash; mark the hashes it changes (H_*) or say why it cannot change a "
                     "result (.unhashed)", s->key, fd->name);
        if (in_task && fd->unhashed) fail_msg("%s.%s: hashed, yet .unhashed says why not", s->key, fd->name);
        if (fd->kind == CFG_INT && !(fd->flags & (CFG_NULL | CFG_AUTO)) && (fd->def < fd->lo || fd->def > fd->hi))
            fail_msg("%s.%s: the default %lld is outside [%lld, %lld]", s->key, fd->name, (long long)fd->def,
                     (long long)fd->lo, (long long)fd->hi);
        if (fd->kind == CFG_CUSTOM && (!fd->parse || !fd->write))
            fail_msg("%s.%s: a custom field needs parse and write", s->key, fd->name);
        if ((fd->flags & CFG_GATE) && fd->kind != CFG_BOOL) fail_msg("%s.%s: a gate must be a bool", s->key, fd->name);
    }
}

static void test_tables(void **state) {
    (void)state;
    check_table(&rs_cfg_root);
}

/* ============================================================================================
 * docs/config.md
 * ========================================================================================== */

static char *generated_keys(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    rs_config_write_keys(f);
    fclose(f);
    return buf;
}

/* The generated block of TEXT: [*begin, *end) is the text between the marker lines. */
static int find_block(const char *text, const char **begin, const char **end) {
    const char *b = strstr(text, KEYS_BEGIN), *e = strstr(text, KEYS_END);
    if (!b || !e || e < b) return 0;
    b = strchr(b, '\n');
    if (!b || b > e) return 0;
    *begin = b + 1;
    *end = e;
    return 1;
}

static void test_docs_keys(void **state) {
    (void)state;
    char *text = NULL;
    size_t len = 0;
    if (rs_read_file(&text, &len, g_docs, 1 << 22)) fail_msg("%s", rs_err_msg());
    const char *b = NULL, *e = NULL;
    if (!find_block(text, &b, &e)) fail_msg("%s: no '%s' ... '%s' block", g_docs, KEYS_BEGIN, KEYS_END);
    char *want = generated_keys();
    if (strlen(want) != (size_t)(e - b) || memcmp(want, b, (size_t)(e - b))) {
        size_t i = 0;
        while (want[i] && b + i < e && want[i] == b[i]) i++;
        fail_msg("%s: the key reference differs from the schema tables at byte %zu of the block (\"%.60s\" vs "
                 "\"%.60s\"); regenerate it: build/test_config_table --write-docs docs/config.md",
                 g_docs, i, want + i, b + i);
    }
    free(want);
    free(text);
}

static int write_docs(const char *path) {
    char *text = NULL;
    size_t len = 0;
    if (rs_read_file(&text, &len, path, 1 << 22)) {
        rs_err_print();
        return 1;
    }
    const char *b = NULL, *e = NULL;
    if (!find_block(text, &b, &e)) {
        fprintf(stderr, "%s: no '%s' ... '%s' block\n", path, KEYS_BEGIN, KEYS_END);
        free(text);
        return 1;
    }
    char *keys = generated_keys();
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 1;
    }
    fwrite(text, 1, (size_t)(b - text), f);
    fputs(keys, f);
    fputs(e, f);
    int bad = fclose(f) != 0;
    free(keys);
    free(text);
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-docs")) return write_docs(argv[2]);
    if (argc != 2) {
        fprintf(stderr, "usage: test_config_table DOCS/config.md | --write-docs DOCS/config.md\n");
        return 2;
    }
    g_docs = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_hash_membership),
        cmocka_unit_test(test_gate),
        cmocka_unit_test(test_probe_hash),
        cmocka_unit_test(test_sae_config),
        cmocka_unit_test(test_docs_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
