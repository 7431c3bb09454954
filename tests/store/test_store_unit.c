/* Token splits, float16 conversion and the HDF5 helpers under the store (serial). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include "resae/actstore.h"
#include "resae/h5util.h"
#include "resae/harvest.h"
#include "resae/util.h"
#include "resae/splits.h"

static rs_split_config cfg3(uint64_t seed, int64_t calib, int64_t train, int64_t eval, int skip) {
    rs_split_config c = {.seed = seed, .skip_pos0 = skip};
    c.budget[RS_SPLIT_CALIB] = calib;
    c.budget[RS_SPLIT_TRAIN] = train;
    c.budget[RS_SPLIT_EVAL] = eval;
    return c;
}

static void test_splits_disjoint_budgets(void **state) {
    (void)state;
    rs_splits sp;
    rs_split_config c = cfg3(7, 1000, 5000, 700, 1); /* T = 64 -> 63 tokens per sequence */
    assert_int_equal(rs_splits_build(&sp, &c, 200, 64, NULL), RS_OK);
    assert_int_equal(sp.tokens_per_seq, 63);
    assert_int_equal(sp.split[RS_SPLIT_CALIB].n_seq, 1000 / 63);
    assert_int_equal(sp.split[RS_SPLIT_TRAIN].n_seq, 5000 / 63);
    assert_int_equal(sp.split[RS_SPLIT_EVAL].n_seq, 700 / 63);
    unsigned char *seen = calloc(200, 1);
    for (int s = 0; s < RS_SPLIT_COUNT; s++) {
        const rs_split *x = &sp.split[s];
        assert_true(x->n_tokens <= c.budget[s]);
        assert_int_equal(x->n_tokens, x->n_seq * 63);
        assert_null(x->labels);
        for (int64_t i = 0; i < x->n_seq; i++) {
            assert_true(x->seq_ids[i] >= 0 && x->seq_ids[i] < 200);
            if (i) assert_true(x->seq_ids[i] > x->seq_ids[i - 1]); /* ascending */
            assert_int_equal(seen[x->seq_ids[i]], 0);               /* disjoint */
            seen[x->seq_ids[i]] = 1;
        }
    }
    free(seen);
    rs_splits_free(&sp);
}

static int same_split(const rs_split *a, const rs_split *b) {
    return a->n_seq == b->n_seq && !memcmp(a->seq_ids, b->seq_ids, (size_t)a->n_seq * sizeof *a->seq_ids);
}

static void test_splits_deterministic_and_stable(void **state) {
    (void)state;
    rs_splits a, b, c, d;
    rs_split_config ca = cfg3(99, 320, 640, 160, 0), cc = cfg3(99, 320, 3200, 160, 0), cd = cfg3(100, 320, 640, 160, 0);
    assert_int_equal(rs_splits_build(&a, &ca, 500, 16, NULL), RS_OK);
    assert_int_equal(rs_splits_build(&b, &ca, 500, 16, NULL), RS_OK);
    assert_int_equal(rs_splits_build(&c, &cc, 500, 16, NULL), RS_OK);
    assert_int_equal(rs_splits_build(&d, &cd, 500, 16, NULL), RS_OK);
    for (int s = 0; s < RS_SPLIT_COUNT; s++) assert_true(same_split(&a.split[s], &b.split[s]));
    /* a larger train budget leaves eval and calibration alone, and only adds to train */
    assert_true(same_split(&a.split[RS_SPLIT_EVAL], &c.split[RS_SPLIT_EVAL]));
    assert_true(same_split(&a.split[RS_SPLIT_CALIB], &c.split[RS_SPLIT_CALIB]));
    assert_int_equal(c.split[RS_SPLIT_TRAIN].n_seq, 200);
    int64_t j = 0;
    for (int64_t i = 0; i < a.split[RS_SPLIT_TRAIN].n_seq; i++) {
        while (j < c.split[RS_SPLIT_TRAIN].n_seq && c.split[RS_SPLIT_TRAIN].seq_ids[j] < a.split[RS_SPLIT_TRAIN].seq_ids[i]) j++;
        assert_true(j < c.split[RS_SPLIT_TRAIN].n_seq);
        assert_int_equal(c.split[RS_SPLIT_TRAIN].seq_ids[j], a.split[RS_SPLIT_TRAIN].seq_ids[i]);
    }
    /* another seed gives another assignment */
    assert_false(same_split(&a.split[RS_SPLIT_EVAL], &d.split[RS_SPLIT_EVAL]));
    /* the assignment is not simply the first sequences */
    assert_false(a.split[RS_SPLIT_EVAL].seq_ids[a.split[RS_SPLIT_EVAL].n_seq - 1] == a.split[RS_SPLIT_EVAL].n_seq - 1);
    rs_splits_free(&a);
    rs_splits_free(&b);
    rs_splits_free(&c);
    rs_splits_free(&d);
}

static void test_splits_labels_and_all(void **state) {
    (void)state;
    int32_t labels[50];
    for (int i = 0; i < 50; i++) labels[i] = 1000 + i;
    rs_splits sp;
    rs_split_config c = cfg3(5, 80, RS_SPLIT_ALL, 40, 0);
    assert_int_equal(rs_splits_build(&sp, &c, 50, 8, labels), RS_OK);
    assert_int_equal(sp.split[RS_SPLIT_EVAL].n_seq, 5);
    assert_int_equal(sp.split[RS_SPLIT_CALIB].n_seq, 10);
    assert_int_equal(sp.split[RS_SPLIT_TRAIN].n_seq, 35);
    for (int s = 0; s < RS_SPLIT_COUNT; s++)
        for (int64_t i = 0; i < sp.split[s].n_seq; i++)
            assert_int_equal(sp.split[s].labels[i], 1000 + sp.split[s].seq_ids[i]);
    rs_splits_free(&sp);
}

static void test_splits_errors(void **state) {
    (void)state;
    rs_splits sp;
    rs_split_config c = cfg3(1, 1000, 1000, 1000, 1);
    assert_int_equal(rs_splits_build(&sp, &c, 40, 33, NULL), RS_ERR_CONFIG); /* needs 93 sequences of 32 */
    assert_non_null(strstr(rs_err_msg(), "eval=1000, calib=1000, train=1000"));
    assert_non_null(strstr(rs_err_msg(), "holds 40 sequences (1280 tokens)"));
    rs_split_config small = cfg3(1, 10, 100, 100, 1);
    assert_int_equal(rs_splits_build(&sp, &small, 40, 33, NULL), RS_ERR_CONFIG);
    assert_non_null(strstr(rs_err_msg(), "calib budget of 10 tokens is smaller than one sequence"));
    rs_split_config all = cfg3(1, 640, RS_SPLIT_ALL, 640, 1);
    assert_int_equal(rs_splits_build(&sp, &all, 40, 33, NULL), RS_ERR_CONFIG);
    assert_non_null(strstr(rs_err_msg(), "no sequences are left for train"));
    rs_split_config neg = cfg3(1, -1, 100, 100, 1);
    assert_int_equal(rs_splits_build(&sp, &neg, 40, 33, NULL), RS_ERR_CONFIG);
}

/* float16: every half survives f16 -> f32 -> f16; rounding of arbitrary floats is nearest-even,
 * checked against the two neighbouring halves in double. */
static void test_half_roundtrip(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = rs_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true(((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff));
            assert_true(isnan(rs_f16_to_f32(rs_f32_to_f16(f))));
            continue;
        }
        assert_int_equal(rs_f32_to_f16(f), h);
    }
    assert_true(rs_f16_to_f32(0x3c00) == 1.0f);
    assert_true(rs_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(rs_f16_to_f32(0x0001) == 0x1p-24f);
    assert_int_equal(rs_f32_to_f16(65520.0f), 0x7c00);       /* ties to even -> inf */
    assert_int_equal(rs_f32_to_f16(65519.996f), 0x7bff);
    assert_int_equal(rs_f32_to_f16(0x1p-25f), 0x0000);        /* half of the smallest subnormal */
    assert_int_equal(rs_f32_to_f16(0x1.000002p-25f), 0x0001);
    assert_int_equal(rs_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(rs_f32_to_f16(INFINITY), 0x7c00);
}

static double half_value(uint16_t h) { return (double)rs_f16_to_f32(h); }

static void test_half_nearest_even(void **state) {
    (void)state;
    uint64_t x = 88172645463325252ULL;
    for (int it = 0; it < 200000; it++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint32_t bits = (uint32_t)x;
        /* exponents from far below the subnormals to above the float16 range */
        bits = (bits & 0x807fffffu) | ((uint32_t)(100 + (x >> 40) % 45) << 23);
        if (it % 7 == 0) bits &= ~0x1fffu | 0x1000u; /* exact ties */
        float f;
        memcpy(&f, &bits, sizeof f);
        uint16_t h = rs_f32_to_f16(f);
        double v = half_value(h), af = fabs((double)f);
        if (af >= 65520.0) {
            assert_int_equal(h & 0x7fff, 0x7c00);
            continue;
        }
        /* no half is closer; at a tie the chosen one is even */
        uint16_t mag = h & 0x7fff;
        double up = mag < 0x7bff ? half_value((uint16_t)(mag + 1)) : INFINITY;
        double dn = mag > 0 ? half_value((uint16_t)(mag - 1)) : -INFINITY;
        double e = fabs(fabs(v) - af);
        assert_true(e <= fabs(up - af));
        assert_true(e <= fabs(af - dn));
        if (e == fabs(up - af) || e == fabs(af - dn)) assert_int_equal(mag & 1, 0);
        assert_true((h & 0x8000) == (signbit(f) ? 0x8000 : 0));
    }
}

/* The bulk conversions (F16C when the CPU has it) agree bit for bit with the scalar reference,
 * NaNs aside (both give a NaN). */
static void test_half_bulk_matches_scalar(void **state) {
    (void)state;
    enum { N = 65536 + 5 };
    uint16_t *h = malloc(N * sizeof *h), *h2 = malloc(N * sizeof *h2);
    float *f = malloc(N * sizeof *f), *f2 = malloc(N * sizeof *f2);
    for (uint32_t i = 0; i < N; i++) h[i] = (uint16_t)(i * 40503u);
    rs_f16_to_f32_n(f, h, N);
    for (uint32_t i = 0; i < N; i++) {
        float ref = rs_f16_to_f32(h[i]);
        if (isnan(ref)) assert_true(isnan(f[i]));
        else assert_memory_equal(&f[i], &ref, sizeof ref);
    }
    uint64_t x = 0x243f6a8885a308d3ULL;
    for (uint32_t i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint32_t bits = (uint32_t)x;
        if (i % 3 == 0) bits = (bits & 0x807fffffu) | ((uint32_t)(100 + (x >> 40) % 45) << 23);
        memcpy(&f2[i], &bits, sizeof bits);
    }
    rs_f32_to_f16_n(h2, f2, N);
    for (uint32_t i = 0; i < N; i++) {
        uint16_t ref = rs_f32_to_f16(f2[i]);
        if (isnan(f2[i])) assert_true((h2[i] & 0x7c00) == 0x7c00 && (h2[i] & 0x3ff));
        else assert_int_equal(h2[i], ref);
    }
    free(h);
    free(h2);
    free(f);
    free(f2);
}

static void test_identity_diff(void **state) {
    (void)state;
    rs_actstore_identity a, b;
    rs_actstore_identity_init(&a);
    a.n_layers = 2;
    a.layers[0] = -1;
    a.layers[1] = 4;
    a.d = 16;
    a.T = 8;
    b = a;
    char msg[512];
    assert_int_equal(rs_actstore_identity_diff(msg, sizeof msg, &a, &b), 0);
    snprintf(b.model_path, sizeof b.model_path, "/elsewhere");
    assert_int_equal(rs_actstore_identity_diff(msg, sizeof msg, &a, &b), 0); /* paths are provenance */
    assert_true(rs_actstore_identity_hash(&a) == rs_actstore_identity_hash(&b));
    b.layers[1] = 5;
    assert_int_equal(rs_actstore_identity_diff(msg, sizeof msg, &a, &b), 1);
    assert_string_equal(msg, "layers are [-1,4] in the store but [-1,5] in this run");
    assert_true(rs_actstore_identity_hash(&a) != rs_actstore_identity_hash(&b));
    b = a;
    b.dtype = RS_DTYPE_F16;
    assert_int_equal(rs_actstore_identity_diff(msg, sizeof msg, &a, &b), 1);
    assert_string_equal(msg, "dtype is float32 in the store but float16 in this run");
    b = a;
    b.budget[RS_SPLIT_TRAIN] = 77;
    assert_int_equal(rs_actstore_identity_diff(msg, sizeof msg, &a, &b), 1);
    assert_non_null(strstr(msg, "budget_train is 0 in the store but 77"));
    char name[16];
    rs_actstore_layer_name(name, sizeof name, -1);
    assert_string_equal(name, "Lemb");
    rs_actstore_layer_name(name, sizeof name, 12);
    assert_string_equal(name, "L12");
}

static void write_text(const char *dir, const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_content_hashes(void **state) {
    (void)state;
    char a[256], b[256];
    const char *out = getenv("RESAE_TEST_OUT");
    snprintf(a, sizeof a, "%s/hash_a_%d", out ? out : "/tmp", (int)getpid());
    snprintf(b, sizeof b, "%s/hash_b_%d", out ? out : "/tmp", (int)getpid());
    mkdir(a, 0755);
    mkdir(b, 0755);
    const char *files[3][2] = {{"config.json", "{\"hidden_size\": 8}"},
                               {"model-00001-of-00002.safetensors", "weights one"},
                               {"model-00002-of-00002.safetensors", "weights two"}};
    for (int i = 2; i >= 0; i--) write_text(a, files[i][0], files[i][1]); /* other creation order */
    for (int i = 0; i < 3; i++) write_text(b, files[i][0], files[i][1]);
    uint64_t ha = 0, hb = 1, hf = 0;
    assert_int_equal(rs_harvest_hash_model_dir(&ha, a), RS_OK);
    assert_int_equal(rs_harvest_hash_model_dir(&hb, b), RS_OK);
    assert_true(ha == hb); /* same content elsewhere */
    write_text(b, "README.md", "not part of the model");
    assert_int_equal(rs_harvest_hash_model_dir(&hb, b), RS_OK);
    assert_true(ha == hb);
    write_text(b, "model-00002-of-00002.safetensors", "weights twO");
    assert_int_equal(rs_harvest_hash_model_dir(&hb, b), RS_OK);
    assert_true(ha != hb);
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", a);
    assert_int_equal(rs_harvest_hash_file(&hf, p), RS_OK);
    const char *cfg = files[0][1];
    assert_true(hf == rs_hash64(RS_HASH64_INIT, cfg, strlen(cfg)));
    assert_int_equal(rs_harvest_hash_file(&hf, "/nonexistent/x"), RS_ERR_IO);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", a, b);
    assert_int_equal(system(cmd), 0);
}

/* The split key is splitmix64 of rng.h; these are the outputs of the copy splits.c had before it
 * used rng.h, so every stored split stays what its seed meant. */
static uint64_t old_splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void test_splits_key_bits(void **state) {
    (void)state;
    const uint64_t seeds[] = {0, 1, 7, 0x9e3779b97f4a7c15ULL, UINT64_MAX};
    for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++)
        for (int64_t id = -2; id < 1000; id += 37)
            assert_true(rs_splits_key(seeds[k], id) == old_splitmix64(seeds[k] ^ old_splitmix64((uint64_t)id)));
}

/* rs_h5_*: typed and 1-D attributes, strings written as UTF-8 and read back whether UTF-8 or ASCII
 * (stores written before the writer moved to h5util), row ranges, the float16 type, and errors
 * that name the file. */
static void test_h5util_attrs_rows(void **state) {
    (void)state;
    char path[300];
    const char *out = getenv("RESAE_TEST_OUT");
    snprintf(path, sizeof path, "%s/h5util_%d.h5", out ? out : "/tmp", (int)getpid());
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    assert_int_equal(rs_h5_attr_i32(f, "i32", -5), RS_OK);
    assert_int_equal(rs_h5_attr_u64(f, "u64", UINT64_MAX - 1), RS_OK);
    assert_int_equal(rs_h5_attr_i64(f, "i64", INT64_MIN), RS_OK);
    assert_int_equal(rs_h5_attr_f64(f, "f64", 0.25), RS_OK);
    assert_int_equal(rs_h5_attr_str(f, "s", "float16"), RS_OK);
    assert_int_equal(rs_h5_attr_str(f, "s", "float32"), RS_OK); /* replaced */
    const int32_t layers[3] = {-1, 2, 5};
    assert_int_equal(rs_h5_attr_array(f, "layers", H5T_NATIVE_INT32, layers, 3), RS_OK);
    { /* an ASCII string as the store wrote them before */
        hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR);
        H5Tset_size(t, 8);
        H5Tset_strpad(t, H5T_STR_NULLTERM);
        hid_t a = H5Acreate2(f, "ascii", t, sp, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(H5Awrite(a, t, "float16") >= 0);
        H5Aclose(a);
        H5Sclose(sp);
        H5Tclose(t);
    }
    int32_t i32 = 0;
    uint64_t u64 = 0;
    int64_t i64 = 0;
    double f64 = 0;
    char str[32];
    assert_int_equal(rs_h5_attr_get_i32(&i32, f, "i32", path), RS_OK);
    assert_int_equal(i32, -5);
    assert_int_equal(rs_h5_attr_get_u64(&u64, f, "u64", path), RS_OK);
    assert_true(u64 == UINT64_MAX - 1);
    assert_int_equal(rs_h5_attr_get_i64(&i64, f, "i64", path), RS_OK);
    assert_true(i64 == INT64_MIN);
    assert_int_equal(rs_h5_attr_get_f64(&f64, f, "f64", path), RS_OK);
    assert_true(f64 == 0.25);
    assert_int_equal(rs_h5_attr_get_str(str, sizeof str, f, "s", path), RS_OK);
    assert_string_equal(str, "float32");
    assert_int_equal(rs_h5_attr_get_str(str, sizeof str, f, "ascii", path), RS_OK);
    assert_string_equal(str, "float16");
    int32_t back[8] = {0};
    size_t n = 0;
    assert_int_equal(rs_h5_attr_get_array(back, &n, 8, H5T_NATIVE_INT32, f, "layers", path), RS_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(back, layers, sizeof layers);
    /* a scalar reader never overruns on an array, and errors name the file */
    assert_int_equal(rs_h5_attr_get_i32(&i32, f, "layers", path), RS_ERR_FORMAT);
    assert_non_null(strstr(rs_err_msg(), path));
    assert_int_equal(rs_h5_attr_get_i32(&i32, f, "missing", path), RS_ERR_FORMAT);
    assert_non_null(strstr(rs_err_msg(), "'missing'"));

    /* rows of a (6, 3) float16 dataset and a (6) int32 one */
    hid_t half = rs_h5_type_f16();
    assert_true(half >= 0);
    const hsize_t dims[2] = {6, 3};
    hid_t d2 = rs_h5_dataset_create(f, "x", half, 2, dims, 1, 4);
    hid_t d1 = rs_h5_dataset_create(f, "ids", H5T_STD_I32LE, 1, dims, 1, 0);
    assert_true(d2 >= 0 && d1 >= 0);
    float rows[6][3];
    uint16_t h[6][3];
    for (int r = 0; r < 6; r++)
        for (int j = 0; j < 3; j++) rows[r][j] = (float)(r * 3 + j) * 0.5f;
    rs_f32_to_f16_n(&h[0][0], &rows[0][0], 18);
    assert_int_equal(rs_h5_write_rows(d2, half, 0, 2, h[0]), RS_OK);
    assert_int_equal(rs_h5_write_rows(d2, half, 2, 4, h[2]), RS_OK);
    assert_int_equal(rs_h5_write_rows(d2, half, 6, 0, h[0]), RS_OK); /* nothing */
    const int32_t ids[6] = {3, 1, 4, 1, 5, 9};
    assert_int_equal(rs_h5_write_rows(d1, H5T_NATIVE_INT32, 0, 6, ids), RS_OK);
    float got[4][3];
    assert_int_equal(rs_h5_read_rows(got, d2, H5T_NATIVE_FLOAT, 1, 4), RS_OK); /* HDF5 widens to float */
    assert_memory_equal(got, rows[1], sizeof got);
    int32_t gid[2];
    assert_int_equal(rs_h5_read_rows(gid, d1, H5T_NATIVE_INT32, 4, 2), RS_OK);
    assert_true(gid[0] == 5 && gid[1] == 9);
    H5E_BEGIN_TRY { assert_int_equal(rs_h5_read_rows(got, d2, H5T_NATIVE_FLOAT, 5, 2), RS_ERR_IO); }
    H5E_END_TRY;
    assert_non_null(strstr(rs_err_msg(), path));
    assert_non_null(strstr(rs_err_msg(), "/x"));
    H5Dclose(d1);
    H5Dclose(d2);
    H5Tclose(half);
    H5Fclose(f);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splits_disjoint_budgets),
        cmocka_unit_test(test_splits_deterministic_and_stable),
        cmocka_unit_test(test_splits_labels_and_all),
        cmocka_unit_test(test_splits_errors),
        cmocka_unit_test(test_half_roundtrip),
        cmocka_unit_test(test_half_nearest_even),
        cmocka_unit_test(test_half_bulk_matches_scalar),
        cmocka_unit_test(test_identity_diff),
        cmocka_unit_test(test_content_hashes),
        cmocka_unit_test(test_splits_key_bits),
        cmocka_unit_test(test_h5util_attrs_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
