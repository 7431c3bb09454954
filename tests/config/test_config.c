/* Config parsing: defaults, every key of a full config, source locations, the canonical YAML
 * round trip, the config hash, model checks, and hostile input (deep nesting, alias bombs, NUL
 * bytes, oversize files, random mutations of a valid config). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/config.h"
#include "resae/err.h"
#include "resae/util.h"
#include "model8.h"

static char g_dir[4096]; /* tests/data/config */

static void data_path(char *out, size_t n, const char *rel) { snprintf(out, n, "%s/%s", g_dir, rel); }

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static rs_err load_text(rs_config *c, const char *text) {
    char path[4200];
    data_path(path, sizeof path, "good/inline.yaml");
    return rs_config_load_text(c, path, text, strlen(text));
}

static char *yaml_of(const rs_config *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(rs_config_write_yaml(f, c), RS_OK);
    fclose(f);
    return buf;
}

/* ---- defaults ------------------------------------------------------------------------------ */

static void test_defaults(void **state) {
    (void)state;
    char path[4200];
    data_path(path, sizeof path, "good/minimal.yaml");
    rs_config c;
    assert_int_equal(rs_config_load(&c, path), RS_OK);
    assert_string_equal(c.name, "minimal");
    assert_true(ends_with(c.run_dir, "/config/good/runs/minimal"));
    assert_true(ends_with(c.model.path, "/tests/data/config/model"));
    assert_true(ends_with(c.data.tokens, "/tests/data/config/tokens.h5"));
    assert_int_equal(c.data.format, RS_FORMAT_HDF5);
    assert_string_equal(c.data.dataset, "/tokens");
    assert_int_equal(c.data.seq_len, 0);
    assert_int_equal(c.data.exclude_first_position, 1);
    assert_int_equal(c.data.calibration, 500000);
    assert_int_equal(c.data.train, 10000000);
    assert_int_equal(c.data.eval, 1000000);
    assert_int_equal(c.layers.n_sets, 1);
    assert_string_equal(c.layers.sets[0].name, "set0");
    assert_int_equal(c.layers.regression_auto, 1);
    assert_int_equal(c.n_variants, 2);
    assert_int_equal(c.sae.k.n, 4);
    assert_int_equal(c.sae.k.v[3], 320);
    assert_int_equal(c.sae.expansion, 8);
    assert_int_equal(c.sae.seeds.n, 1);
    assert_true(c.affine.lambda_rel == 1e-4);
    assert_int_equal(c.train.tokens, 0);
    assert_int_equal(rs_config_train_tokens(&c), 10000000);
    assert_int_equal(rs_config_train_steps(&c), 10000000 / 4096);
    assert_int_equal(rs_config_dead_tokens(&c), 1000000);
    assert_true(fabs(rs_config_lr(&c, 1024) - 8e-4) < 1e-15);
    assert_true(fabs(rs_config_lr(&c, 16384) - 2e-4) < 1e-15);
    assert_true(c.train.eps == 6.25e-10);
    assert_int_equal(c.train.b_dec_init, RS_SAE_BDEC_GEOMEDIAN);
    assert_int_equal(c.eval.n_ce_modes, 3);
    assert_int_equal(c.eval.n_ablations, 2);
    assert_int_equal(c.eval.tpp.budgets.n, 4);
    assert_int_equal(c.eval.tpp.k.n, 0);
    assert_int_equal(c.eval.tpp.class_sets, 2);
    assert_int_equal(c.eval.tpp.epochs, 20);
    assert_int_equal(c.store.dtype, RS_DTYPE_F32);
    rs_config_free(&c);
}

static void test_full(void **state) {
    (void)state;
    char path[4200];
    data_path(path, sizeof path, "good/full.yaml");
    rs_config c;
    assert_int_equal(rs_config_load(&c, path), RS_OK);
    assert_string_equal(c.name, "full-1.0_test");
    assert_true(ends_with(c.run_dir, "/config/good/runs/full"));
    assert_true(ends_with(c.model.path, "/tests/data/config/model"));
    assert_int_equal(c.seed, 7);
    assert_int_equal(c.data.format, RS_FORMAT_BIN_U32);
    assert_int_equal(c.data.seq_len, 128);
    assert_int_equal(c.data.exclude_first_position, 0);
    assert_int_equal(c.data.calibration, 200000);
    assert_int_equal(c.data.train, 2000000);
    assert_int_equal(c.layers.n_sets, 3);
    assert_int_equal(c.layers.sets[1].is_family, 1);
    assert_int_equal(c.layers.sets[1].start, 1);
    assert_int_equal(c.layers.sets[1].count, 3);
    assert_int_equal(c.layers.sets[2].count, 0);
    assert_int_equal(c.layers.regression_auto, 0);
    assert_int_equal(c.layers.regression.n, 3);
    assert_int_equal(c.n_variants, 1);
    assert_int_equal(c.variants[0], RS_VARIANT_RESAE);
    assert_int_equal(c.sae.expansion, 4);
    assert_int_equal(c.sae.seeds.v[0], 1);
    assert_int_equal(c.eval.probing.top_k.n, 2); /* an alias of sae.k */
    assert_int_equal(c.eval.probing.top_k.v[1], 32);
    assert_true(c.train.lr == 3e-4);
    assert_int_equal(c.train.tokens, 1000000);
    assert_int_equal(c.train.b_dec_init, RS_SAE_BDEC_MEAN);
    assert_int_equal(c.eval.ce, 0);
    assert_int_equal(c.eval.n_ce_modes, 2);
    assert_int_equal(c.eval.ce_modes[0], RS_CE_SO);
    assert_int_equal(c.eval.ablations[0], RS_ABLATE_MEAN);
    assert_int_equal(c.eval.tpp.enabled, 1);
    assert_int_equal(c.eval.tpp.k.n, 1);
    assert_int_equal(c.eval.tpp.k.v[0], 8);
    assert_int_equal(c.eval.tpp.epochs, 5);
    assert_int_equal(c.eval.tpp.random, 0);
    assert_int_equal(c.store.dtype, RS_DTYPE_F16);
    assert_int_equal(c.parallel.group_size, 2);
    rs_config_free(&c);
}

/* ---- locations ----------------------------------------------------------------------------- */

static void test_locations(void **state) {
    (void)state;
    const char *text = "name: x\n"
                       "model: {path: m}\n"
                       "data: {tokens: t.h5}\n"
                       "layers:\n"
                       "  sets:\n"
                       "    - {name: a, layers: [0, 3]}\n"
                       "sae:\n"
                       "  k: [4,   9]\n";
    rs_config c;
    assert_int_equal(load_text(&c, text), RS_OK);
    rs_loc l = rs_config_loc(&c, "sae.k[1]");
    assert_int_equal(l.line, 8);
    assert_int_equal(l.col, 12);
    l = rs_config_loc(&c, "sae.k[7]"); /* not in the file: nearest ancestor */
    assert_int_equal(l.line, 8);
    assert_int_equal(l.col, 6);
    l = rs_config_loc(&c, "layers.sets[0].layers[1]");
    assert_int_equal(l.line, 6);
    assert_int_equal(l.col, 29);
    l = rs_config_loc(&c, "train.lr"); /* a default */
    assert_int_equal(l.line, 0);

    /* a later stage reporting against the file */
    rs_err e = rs_config_fail_at(&c, RS_ERR_CONFIG, "layers.sets[0].layers[1]", __FILE__, __LINE__, __func__,
                                 "layer %d needs more tokens", 3);
    assert_int_equal(e, RS_ERR_CONFIG);
    assert_non_null(strstr(rs_err_msg(), "inline.yaml:6:29: layers.sets[0].layers[1]: layer 3 needs more tokens"));
    rs_config_fail_at(&c, RS_ERR_CONFIG, "train.lr", __FILE__, __LINE__, __func__, "too high");
    assert_non_null(strstr(rs_err_msg(), "inline.yaml: train.lr (default): too high"));
    rs_config_free(&c);
}

/* ---- round trip and hash ------------------------------------------------------------------- */

static void roundtrip_one(const char *rel) {
    char path[4200];
    data_path(path, sizeof path, rel);
    rs_config a, b;
    assert_int_equal(rs_config_load(&a, path), RS_OK);
    char *ya = yaml_of(&a);
    /* load the resolved text from elsewhere: absolute paths make it location-independent */
    assert_int_equal(rs_config_load_text(&b, "/tmp/elsewhere/resolved.yaml", ya, strlen(ya)), RS_OK);
    char *yb = yaml_of(&b);
    assert_string_equal(ya, yb);
    assert_true(rs_config_hash(&a) == rs_config_hash(&b));
    free(ya);
    free(yb);
    rs_config_free(&a);
    rs_config_free(&b);
}

static void test_roundtrip(void **state) {
    (void)state;
    roundtrip_one("good/minimal.yaml");
    roundtrip_one("good/full.yaml");
    roundtrip_one("good/demo_like.yaml");
}

static void test_hash(void **state) {
    (void)state;
    const char *base = "name: x\nmodel: {path: m}\ndata: {tokens: t.h5}\nlayers: {sets: [{layers: [0, 3]}]}\n";
    char text[1024];
    rs_config c;
    assert_int_equal(load_text(&c, base), RS_OK);
    uint64_t h0 = rs_config_hash(&c);
    rs_config_free(&c);
    /* not part of the results: run_dir, parallel, checkpoint interval */
    snprintf(text, sizeof text, "%srun_dir: /elsewhere\nparallel: {group_size: 4}\ntrain: {checkpoint_every: 7}\n", base);
    assert_int_equal(load_text(&c, text), RS_OK);
    assert_true(rs_config_hash(&c) == h0);
    rs_config_free(&c);
    /* defaults written out explicitly: same resolved config */
    snprintf(text, sizeof text, "%ssae: {expansion: 8, k: [40, 80, 160, 320]}\nvariants: [raw, resae]\n", base);
    assert_int_equal(load_text(&c, text), RS_OK);
    assert_true(rs_config_hash(&c) == h0);
    rs_config_free(&c);
    /* keys added later at their defaults (no curve, one pass) leave the hash as it was */
    snprintf(text, sizeof text, "%strain: {curve_bins: 0, max_epochs: 3}\n", base);
    assert_int_equal(load_text(&c, text), RS_OK);
    assert_true(rs_config_hash(&c) == h0);
    rs_config_free(&c);
    /* anything that changes results changes the hash */
    const char *changes[] = {"sae: {expansion: 16}\n", "train: {lr: 1.0e-3}\n", "eval: {ce: false}\n",
                             "seed: 1\n", "store: {activation_dtype: float16}\n", "train: {curve_bins: 20}\n"};
    for (size_t i = 0; i < sizeof changes / sizeof *changes; i++) {
        snprintf(text, sizeof text, "%s%s", base, changes[i]);
        assert_int_equal(load_text(&c, text), RS_OK);
        assert_true(rs_config_hash(&c) != h0);
        rs_config_free(&c);
    }
}

/* train.tokens may span max_epochs passes over the train split, no more; curve_bins is a multiple of 5. */
static void test_epochs_and_curve(void **state) {
    (void)state;
    const char *base = "name: x\nmodel: {path: m}\ndata: {tokens: t.h5, splits: {calibration: 1000, train: 100000, "
                       "eval: 1000}}\nlayers: {sets: [{layers: [0, 3]}]}\n";
    char text[1024];
    rs_config c;
    snprintf(text, sizeof text, "%strain: {tokens: 200000, max_epochs: 2, warmup_steps: 1, curve_bins: 20}\n", base);
    assert_int_equal(load_text(&c, text), RS_OK);
    assert_int_equal(rs_config_train_tokens(&c), 200000);
    rs_config_free(&c);
    snprintf(text, sizeof text, "%strain: {tokens: 200001, max_epochs: 2, warmup_steps: 1}\n", base);
    assert_int_equal(load_text(&c, text), RS_ERR_CONFIG);
    assert_non_null(strstr(rs_err_msg(), "train.max_epochs"));
    rs_err_clear();
    snprintf(text, sizeof text, "%strain: {tokens: 100000, warmup_steps: 1, curve_bins: 12}\n", base);
    assert_int_equal(load_text(&c, text), RS_ERR_CONFIG);
    assert_non_null(strstr(rs_err_msg(), "train.curve_bins"));
    rs_err_clear();
    snprintf(text, sizeof text, "%strain: {tokens: 8192, warmup_steps: 0, decay_fraction: 0, curve_bins: 5}\n", base);
    assert_int_equal(load_text(&c, text), RS_ERR_CONFIG); /* 2 steps cannot fill 5 spans */
    assert_non_null(strstr(rs_err_msg(), "training steps"));
    rs_err_clear();
}

/* ---- model checks -------------------------------------------------------------------------- */

static void test_check_model(void **state) {
    (void)state;
    rs_model_config m = model8();
    rs_config c;
    assert_int_equal(load_text(&c, "name: x\nmodel: {path: m}\ndata: {tokens: t.h5}\n"
                                   "layers: {sets: [{layers: [0, 7]}, {gaps: [7]}]}\nsae: {k: [1023]}\n"),
                     RS_OK);
    assert_int_equal(rs_config_check_model(&c, &m), RS_OK);
    m.n_layers = 7;
    assert_int_equal(rs_config_check_model(&c, &m), RS_ERR_CONFIG);
    assert_non_null(strstr(rs_err_msg(), "inline.yaml:4:30: layers.sets[0].layers[1]: layer 7 is beyond the model's 7 layers"));
    m = model8();
    m.d_model = 64; /* width 512 */
    assert_int_equal(rs_config_check_model(&c, &m), RS_ERR_CONFIG);
    assert_non_null(strstr(rs_err_msg(), "inline.yaml:5:11: sae.k[0]: k = 1023 is not below the SAE width n_latents"));
    rs_config_free(&c);

    /* the model directory cannot be read: the error names model.path at its position */
    assert_int_equal(load_text(&c, "name: x\nmodel:\n  path: no/such/dir\ndata: {tokens: t.h5}\n"
                                   "layers: {sets: [{layers: [0]}]}\n"),
                     RS_OK);
    rs_model_config mc;
    assert_int_equal(rs_config_load_model(&mc, &c), RS_ERR_CONFIG);
    assert_non_null(strstr(rs_err_msg(), "inline.yaml:3:9: model.path: cannot load the model's config.json: "));
    assert_non_null(strstr(rs_err_msg(), "no/such/dir/config.json: cannot open"));
    rs_config_free(&c);
}

/* ---- hostile input ------------------------------------------------------------------------- */

static void expect_error_at(const char *text, size_t len, const char *want) {
    rs_config c;
    char path[4200];
    data_path(path, sizeof path, "good/inline.yaml");
    rs_err e = rs_config_load_text(&c, path, text, len);
    assert_int_equal(e, RS_ERR_CONFIG);
    if (!strstr(rs_err_msg(), want)) fail_msg("message '%s' lacks '%s'", rs_err_msg(), want);
}

/* sizeof keeps embedded NUL bytes of the literal */
#define BASE "name: x\nmodel: {path: m}\ndata: {tokens: t.h5}\nlayers: {sets: [{layers: [1]}]}\n"
#define EXPECT_ERR(lit, want) expect_error_at(lit, sizeof(lit) - 1, want)

static void test_hostile(void **state) {
    (void)state;
    /* deep nesting: 200k levels of flow sequences (refused after 32, in microseconds) */
    size_t depth = 200000;
    char *t = malloc(4 * depth + 64);
    assert_non_null(t);
    size_t o = (size_t)sprintf(t, "name: x\nmodel: ");
    for (size_t i = 0; i < depth; i++) t[o++] = '[';
    for (size_t i = 0; i < depth; i++) t[o++] = ']';
    t[o] = '\0';
    expect_error_at(t, o, "inline.yaml:2:39: lists and mappings are nested more than 32 levels deep here");
    free(t);

    /* an alias bomb: nine levels of nine aliases, never expanded */
    char bomb[2048];
    o = (size_t)sprintf(bomb, "a0: &a0 [1]\n");
    for (int l = 1; l < 9; l++) {
        o += (size_t)sprintf(bomb + o, "a%d: &a%d [", l, l);
        for (int j = 0; j < 9; j++) o += (size_t)sprintf(bomb + o, "%s*a%d", j ? "," : "", l - 1);
        o += (size_t)sprintf(bomb + o, "]\n");
    }
    expect_error_at(bomb, o, "inline.yaml:1:1: a0: unknown key");
    o = (size_t)sprintf(bomb, "name: x\nmodel: {path: m}\ndata: {tokens: t.h5}\nlayers: {sets: [{layers: [1]}]}\n"
                               "sae:\n  k: &k [1, 2]\n  seeds: *k\n  expansion: *k\n");
    expect_error_at(bomb, o, "inline.yaml:6:6: sae.expansion: expected an integer in [1, 1024], found a list");

    EXPECT_ERR("name: x\n\0model: 1\n", "inline.yaml: the file contains NUL bytes");
    EXPECT_ERR("\"\\0\": 1\n", "inline.yaml:1:1: a key contains a NUL character");
    EXPECT_ERR("name: \"a\\0b\"\n", "inline.yaml:1:7: name: the string contains a NUL character");
    EXPECT_ERR("name: x\nseed: -99999999999999999999\n", "seed: '-99999999999999999999' is out of range");
    EXPECT_ERR("name: x\nseed: 1e400\n", "seed: '1e400' is out of range");
    EXPECT_ERR("name: x\nseed: .nan\n", "seed: expected an integer");
    EXPECT_ERR("name: x\nseed: 0x10\n", "seed: expected an integer");
    EXPECT_ERR(BASE "affine: {lambda_rel: .inf}\n", "affine.lambda_rel: expected a number");
    EXPECT_ERR(BASE "affine: {lambda_rel: 1e999}\n", "affine.lambda_rel: '1e999' is out of range");
    EXPECT_ERR("\xff\xfe\x00", "inline.yaml");
    EXPECT_ERR("name: x\n!!binary : 1\n", "inline.yaml:2:1");
    EXPECT_ERR("name: x\n\"a\\nb\": 1\n", "inline.yaml:2:1: a?b: unknown key");
    EXPECT_ERR("name: \"my\\tname\"\n", "inline.yaml:1:7: name: invalid name 'my?name'");
    EXPECT_ERR("---\n...\n", "inline.yaml:2:1: the config is empty");
    EXPECT_ERR("# only a comment\n", "inline.yaml:1:1: the config is empty");
    EXPECT_ERR("plain text\n", "inline.yaml:1:1: the config must be a mapping");

    /* aliases multiplying a long list: bounded by the count of values read, refused quickly */
    size_t cap = 200000;
    char *al = malloc(cap);
    assert_non_null(al);
    o = (size_t)snprintf(al, cap, "name: x\nmodel: {path: m}\ndata: {tokens: t.h5}\nlayers:\n  sets:\n"
                                  "    - {name: s0, layers: &big [");
    for (int i = 0; i < 4096; i++) o += (size_t)snprintf(al + o, cap - o, "%s%d", i ? "," : "", i);
    o += (size_t)snprintf(al + o, cap - o, "]}\n");
    for (int i = 1; i < 256; i++) o += (size_t)snprintf(al + o, cap - o, "    - {name: s%d, layers: *big}\n", i);
    expect_error_at(al, o, "the config holds more than 100000 values (counting each use of an alias)");
    o = (size_t)snprintf(al, cap, BASE "sae: {seeds: [");
    for (int i = 0; i < 65; i++) o += (size_t)snprintf(al + o, cap - o, "%s%d", i ? "," : "", i);
    o += (size_t)snprintf(al + o, cap - o, "]}\n");
    expect_error_at(al, o, "sae.seeds: the list has 65 items, more than the 64 allowed");
    free(al);

    size_t big = RS_CONFIG_MAX_BYTES + 10;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, '#', big);
    expect_error_at(huge, big, "bytes, more than the");
    free(huge);
}

/* Random byte edits of a valid config never crash; failures carry the file name, and whatever
 * still loads round-trips through its canonical YAML. */
static void test_mutations(void **state) {
    (void)state;
    char path[4200];
    data_path(path, sizeof path, "good/full.yaml");
    char *src = NULL;
    size_t n = 0;
    assert_int_equal(rs_read_file(&src, &n, path, 1 << 20), RS_OK);
    char *buf = malloc(n + 64);
    assert_non_null(buf);
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    int loaded = 0, failed = 0;
    static const char alphabet[] = " \t\n:-[]{},#&*!|>'\"%@`0123456789.eE_abz\\?";
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, src, n);
        size_t len = n;
        int edits = 1 + (int)(it % 4);
        for (int e = 0; e < edits; e++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t pos = (size_t)(s >> 33) % len;
            char ch = alphabet[(s >> 17) % (sizeof alphabet - 1)];
            switch ((s >> 9) % 3) {
            case 0: buf[pos] = ch; break;
            case 1: /* delete */
                memmove(buf + pos, buf + pos + 1, len - pos - 1);
                len--;
                break;
            default: /* insert */
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = ch;
                len++;
            }
        }
        rs_config c;
        rs_err err = rs_config_load_text(&c, path, buf, len);
        if (err) {
            failed++;
            if (strncmp(rs_err_msg(), path, strlen(path))) fail_msg("message without the file: %s", rs_err_msg());
            continue;
        }
        loaded++;
        char *y1 = yaml_of(&c);
        rs_config d;
        assert_int_equal(rs_config_load_text(&d, path, y1, strlen(y1)), RS_OK);
        char *y2 = yaml_of(&d);
        assert_string_equal(y1, y2);
        free(y1);
        free(y2);
        rs_config_free(&d);
        rs_config_free(&c);
    }
    print_message("mutations: %d loaded, %d rejected\n", loaded, failed);
    assert_true(loaded > 0 && failed > 0);
    free(buf);
    free(src);
}

int main(void) {
    const char *d = getenv("RESAE_TEST_DATA");
    snprintf(g_dir, sizeof g_dir, "%s/config", d ? d : "tests/data");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),   cmocka_unit_test(test_full),       cmocka_unit_test(test_locations),
        cmocka_unit_test(test_roundtrip),  cmocka_unit_test(test_hash),       cmocka_unit_test(test_check_model),
        cmocka_unit_test(test_hostile),    cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_epochs_and_curve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
