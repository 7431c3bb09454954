/* Hostile and malformed inputs: safetensors files, checkpoint directories, config.json and token
 * files. Every case must fail with an error naming the file and the tensor (or position), never
 * crash (run under ASan/UBSan too). Bad files are generated here from scratch or from the `base`
 * fixture. */
#include <cjson/cJSON.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "load_modes.h"
#include "resae/log.h"
#include "resae/model.h"
#include "resae/safetensors.h"
#include "resae/tokens.h"

#include "testlib.h"

static int g_cases = 0;
static char g_out[4096], g_data[4096];


/* err must be nonzero and the message must contain every non-NULL needle. */
static void expect_fail(const char *what, rs_err err, const char *n1, const char *n2, const char *n3) {
    g_cases++;
    const char *msg = rs_err_msg();
    if (!err) {
        fprintf(stderr, "FAIL %s: accepted\n", what);
        rs_check_fails++;
        return;
    }
    const char *needles[] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        if (needles[i] && !strstr(msg, needles[i])) {
            fprintf(stderr, "FAIL %s: message lacks '%s': %s\n", what, needles[i], msg);
            rs_check_fails++;
        }
    printf("ok  %-28s %s\n", what, msg);
    rs_err_clear();
}

static void path_of(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_out, name); }

/* 8-byte little-endian length (hdr_len, or strlen(header) if UINT64_MAX), header, n_data zero bytes. */
static void write_raw(const char *path, const char *header, uint64_t hdr_len, size_t n_data) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    uint64_t n = hdr_len == UINT64_MAX ? strlen(header) : hdr_len;
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    for (size_t i = 0; i < n_data; i++) fputc(0, f);
    fclose(f);
}

static rs_err open_raw(const char *name, const char *header, uint64_t hdr_len, size_t n_data) {
    char p[4200];
    path_of(p, sizeof p, name);
    write_raw(p, header, hdr_len, n_data);
    rs_safetensors st;
    rs_err e = rs_safetensors_open_file(&st, p);
    if (!e) rs_safetensors_free(&st);
    return e;
}

/* ---- safetensors files ------------------------------------------------------------------------- */

static void test_safetensors_hostile(void) {
    char p[4200];
    path_of(p, sizeof p, "short.safetensors");
    FILE *f = fopen(p, "wb");
    fwrite("abcde", 1, 5, f);
    fclose(f);
    rs_safetensors st;
    expect_fail("truncated file", rs_safetensors_open_file(&st, p), "short.safetensors", "too short", NULL);
    expect_fail("missing file", rs_safetensors_open_file(&st, "/nonexistent/x.safetensors"), "x.safetensors",
                "cannot open", NULL);

    const char *good = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    expect_fail("header past end", open_raw("hdr_past.safetensors", good, 1000, 16), "hdr_past.safetensors",
                "past the end", NULL);
    expect_fail("header huge", open_raw("hdr_huge.safetensors", good, (uint64_t)1 << 40, 16), "hdr_huge",
                "exceeds", NULL);
    expect_fail("header not JSON", open_raw("notjson.safetensors", "{\"a\": [1, 2", UINT64_MAX, 0), "notjson",
                "not valid JSON", NULL);
    expect_fail("header not object", open_raw("array.safetensors", "[1,2]", UINT64_MAX, 0), "array",
                "not a JSON object", NULL);
    expect_fail("data truncated", open_raw("trunc_data.safetensors", good, UINT64_MAX, 10), "trunc_data",
                "'a'", "past the data section");
    expect_fail("offsets past end",
                open_raw("off_past.safetensors",
                         "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]},"
                         "\"v\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                         UINT64_MAX, 24),
                "off_past", "'w'", "past the data section");
    expect_fail("overlap",
                open_raw("overlap.safetensors",
                         "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                         "\"y\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                         UINT64_MAX, 24),
                "overlap.safetensors", "'x' and 'y' overlap", NULL);
    expect_fail("shape x dtype mismatch",
                open_raw("mismatch.safetensors", "{\"m\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                         UINT64_MAX, 8),
                "mismatch", "'m'", "needs 6");
    expect_fail("unknown dtype",
                open_raw("dtype.safetensors", "{\"q\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                         UINT64_MAX, 4),
                "dtype.safetensors", "'q'", "unknown dtype 'F12'");
    expect_fail("shape overflow",
                open_raw("overflow.safetensors",
                         "{\"big\":{\"dtype\":\"F32\",\"shape\":[4503599627370496,4503599627370496,16],"
                         "\"data_offsets\":[0,0]}}",
                         UINT64_MAX, 0),
                "overflow", "'big'", "overflows");
    expect_fail("shape overflow by dtype",
                open_raw("overflow2.safetensors",
                         "{\"big\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,0]}}",
                         UINT64_MAX, 0),
                "overflow2", "'big'", "overflows");
    expect_fail("shape entry too large",
                open_raw("overflow3.safetensors",
                         "{\"big\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,0]}}",
                         UINT64_MAX, 0),
                "overflow3", "'big'", "below 2^53");
    expect_fail("negative shape",
                open_raw("neg.safetensors", "{\"n\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
                         UINT64_MAX, 4),
                "neg.safetensors", "'n'", "non-negative");
    expect_fail("fractional offsets",
                open_raw("frac.safetensors", "{\"n\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4]}}",
                         UINT64_MAX, 4),
                "frac.safetensors", "'n'", "data_offsets");
    expect_fail("reversed offsets",
                open_raw("rev.safetensors", "{\"r\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}",
                         UINT64_MAX, 4),
                "rev.safetensors", "'r'", NULL);
    expect_fail("duplicate name",
                open_raw("dup.safetensors",
                         "{\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                         "\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                         UINT64_MAX, 8),
                "dup.safetensors", "'d' appears twice", NULL);
    expect_fail("hole",
                open_raw("hole.safetensors",
                         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                         UINT64_MAX, 12),
                "hole.safetensors", "'b'", "unindexed");
    expect_fail("trailing bytes", open_raw("trail.safetensors", good, UINT64_MAX, 20), "trail.safetensors",
                "not indexed", NULL);
    expect_fail("entry not object", open_raw("entry.safetensors", "{\"e\":[1,2,3]}", UINT64_MAX, 0),
                "entry.safetensors", "'e'", NULL);
    expect_fail("too many dims",
                open_raw("dims.safetensors",
                         "{\"k\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
                         UINT64_MAX, 4),
                "dims.safetensors", "'k'", "dimensions");
    expect_fail("garbage after JSON", open_raw("garbage.safetensors", "{} xyz", UINT64_MAX, 0), "garbage",
                "after its JSON", NULL);
}

static void test_safetensors_good(void) {
    /* F16: 1.0, -2.0, smallest subnormal, +inf; BF16: 1.0, -0.5; I32 7; metadata; empty tensor */
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"h\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]},"
        "\"i\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[12,16]},"
        "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[16,16]}}  ";
    char p[4200];
    path_of(p, sizeof p, "good.safetensors");
    FILE *f = fopen(p, "wb");
    uint64_t n = strlen(hdr);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(hdr, 1, n, f);
    const unsigned char data[16] = {0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0x00, 0x7c,
                                    0x80, 0x3f, 0x00, 0xbf, 7, 0, 0, 0};
    fwrite(data, 1, 16, f);
    fclose(f);
    rs_safetensors st;
    rs_err e = rs_safetensors_open_file(&st, p);
    CHECK(!e, "good file refused: %s", rs_err_msg());
    if (e) return;
    CHECK(st.n_tensors == 4, "%d tensors", st.n_tensors);
    const rs_st_tensor *h = rs_safetensors_find(&st, "h"), *b = rs_safetensors_find(&st, "b");
    const rs_st_tensor *i = rs_safetensors_find(&st, "i"), *z = rs_safetensors_find(&st, "z");
    CHECK(h && b && i && z && !rs_safetensors_find(&st, "__metadata__") && !rs_safetensors_find(&st, "nope"),
          "lookup");
    float v[4];
    CHECK(!rs_st_tensor_to_f32(v, &st, h), "f16 convert");
    CHECK(v[0] == 1.0f && v[1] == -2.0f && v[2] == 0x1p-24f && isinf(v[3]) && v[3] > 0, "f16 values %g %g %g %g",
          v[0], v[1], v[2], v[3]);
    CHECK(!rs_st_tensor_to_f32(v, &st, b) && v[0] == 1.0f && v[1] == -0.5f, "bf16 values %g %g", v[0], v[1]);
    CHECK(i->ndim == 0 && i->numel == 1 && z->numel == 0, "scalar / empty shapes");
    expect_fail("int tensor as float", rs_st_tensor_to_f32(v, &st, i), "good.safetensors", "'i'", "I32");
    rs_safetensors_free(&st);
}

/* rs_safetensors_write read back by the checked reader: names, dtypes, shapes, values, metadata-only
 * header entry, 8-byte aligned data start; bad requests refused without leaving a file. */
static void test_safetensors_write(void) {
    char p[4200];
    path_of(p, sizeof p, "written.safetensors");
    float a[6] = {1.5f, -2.0f, 0x1p-149f, 3.0e38f, -0.0f, 7.25f};
    double c[3] = {0.1, -1e-300, 12345.678901234567};
    const char *meta[] = {"format", "pt", "note", "quote \" and \\ escaped"};
    rs_st_out ts[3] = {{"W", RS_ST_F32, 2, {2, 3}, a}, {"c", RS_ST_F64, 1, {3}, c}, {"empty", RS_ST_F32, 2, {0, 4}, a}};
    rs_err e = rs_safetensors_write(p, ts, 3, meta, 2);
    CHECK(!e, "write: %s", rs_err_msg());
    if (e) return;
    rs_safetensors st;
    e = rs_safetensors_open_file(&st, p);
    CHECK(!e, "written file refused by the reader: %s", rs_err_msg());
    if (e) return;
    const rs_st_tensor *w = rs_safetensors_find(&st, "W"), *cc = rs_safetensors_find(&st, "c");
    const rs_st_tensor *z = rs_safetensors_find(&st, "empty");
    CHECK(st.n_tensors == 3 && w && cc && z, "%d tensors", st.n_tensors);
    if (w && cc && z) {
        CHECK(w->dtype == RS_ST_F32 && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3, "W dtype/shape");
        CHECK(cc->dtype == RS_ST_F64 && cc->ndim == 1 && cc->shape[0] == 3, "c dtype/shape");
        CHECK(z->numel == 0 && z->ndim == 2 && z->shape[1] == 4, "empty tensor shape");
        CHECK(!memcmp(w->data, a, sizeof a) && !memcmp(cc->data, c, sizeof c), "values differ after the round trip");
        size_t start = (size_t)(w->data - (const unsigned char *)st.maps[0]);
        CHECK(start % 8 == 0, "data starts at byte %zu, not 8-byte aligned", start);
    }
    rs_safetensors_free(&st);
    rs_st_out dup[2] = {{"x", RS_ST_F32, 1, {1}, a}, {"x", RS_ST_F32, 1, {1}, a}};
    char q[4200];
    path_of(q, sizeof q, "dup.safetensors");
    remove(q);
    expect_fail("write duplicate names", rs_safetensors_write(q, dup, 2, NULL, 0), "dup.safetensors", "'x'", NULL);
    rs_st_out bad[1] = {{"__metadata__", RS_ST_F32, 1, {1}, a}};
    expect_fail("write reserved name", rs_safetensors_write(q, bad, 1, NULL, 0), "dup.safetensors", "__metadata__", NULL);
    struct stat sb;
    CHECK(stat(q, &sb) != 0, "a refused write left %s", q);
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", q);
    CHECK(stat(tmp, &sb) != 0, "a refused write left %s", tmp);
}

/* Random corruption of a real file: flipped header bytes, random lengths, truncation. Each variant
 * must be either refused with a message naming the file or opened consistently; never a crash
 * (ASan/UBSan watch the reads). */
static void test_safetensors_mutations(void) {
    char src[4200], p[4200];
    snprintf(src, sizeof src, "%s/runtime/long_seq/model.safetensors", g_data);
    FILE *f = fopen(src, "rb");
    if (!f) {
        fprintf(stderr, "FAIL: cannot read %s\n", src);
        rs_check_fails++;
        return;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *orig = malloc((size_t)n), *buf = malloc((size_t)n);
    if (fread(orig, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | orig[i];
    path_of(p, sizeof p, "mutant.safetensors");
    uint64_t rng = 12345;
    int refused = 0, opened = 0;
    for (int it = 0; it < 600 && n > 0; it++) {
        memcpy(buf, orig, (size_t)n);
        long len = n;
        int kind = it % 4;
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        if (kind == 0 || kind == 1) { /* flip 1-3 header bytes to printable JSON-ish characters */
            static const char alphabet[] = "{}[]\",:0123456789-.eE \"FBIU";
            for (int k = 0; k <= (int)(rng >> 60) % 3; k++) {
                rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
                size_t pos = 8 + (size_t)((rng >> 20) % hl);
                buf[pos] = (unsigned char)alphabet[(rng >> 8) % (sizeof alphabet - 1)];
            }
        } else if (kind == 2) { /* random header length */
            uint64_t v = (rng >> 3) % (hl * 2 + 16);
            for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(v >> (8 * i));
        } else { /* truncation */
            len = (long)((rng >> 20) % (uint64_t)n);
        }
        f = fopen(p, "wb");
        fwrite(buf, 1, (size_t)len, f);
        fclose(f);
        rs_safetensors st;
        rs_err e = rs_safetensors_open_file(&st, p);
        if (e) {
            refused++;
            if (!strstr(rs_err_msg(), "mutant.safetensors")) {
                fprintf(stderr, "FAIL mutation %d: message does not name the file: %s\n", it, rs_err_msg());
                rs_check_fails++;
            }
            rs_err_clear();
        } else {
            opened++;
            /* whatever opened must be self-consistent: every tensor inside the mapping */
            for (int i = 0; i < st.n_tensors; i++) {
                const rs_st_tensor *t = &st.tensors[i];
                const unsigned char *base = st.maps[t->file];
                if (t->data < base || t->data + t->nbytes > base + st.map_sizes[t->file]) {
                    fprintf(stderr, "FAIL mutation %d: tensor '%s' outside the file\n", it, t->name);
                    rs_check_fails++;
                }
                if (t->dtype == RS_ST_F32 || t->dtype == RS_ST_F16 || t->dtype == RS_ST_BF16) {
                    float *tmp = malloc((size_t)t->numel * sizeof *tmp + 4);
                    rs_err ce = rs_st_tensor_to_f32(tmp, &st, t);
                    if (ce) rs_err_clear();
                    free(tmp);
                }
            }
            rs_safetensors_free(&st);
        }
    }
    printf("ok  %-28s %d refused, %d opened consistently\n", "random corruption", refused, opened);
    CHECK(refused > 300, "only %d of 600 corrupted files refused", refused);
    free(orig);
    free(buf);
}

/* ---- checkpoint directories built from the base fixture ---------------------------------------- */

typedef struct {
    const char *skip;         /* drop this tensor */
    const char *reshape;      /* give this tensor reshape_to */
    int64_t reshape_to[2];
    const char *extra;        /* add an unexpected tensor */
    const char *as_int;       /* relabel this tensor I32 */
} mutation;

static void write_checkpoint(const char *dir, const mutation *mu, const char *config_patch_key,
                             cJSON *config_patch_val) {
    mkdir(dir, 0755);
    char src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/runtime/base/model.safetensors", g_data);
    rs_safetensors st;
    if (rs_safetensors_open_file(&st, src)) {
        rs_err_print();
        exit(1);
    }
    cJSON *hdr = cJSON_CreateObject();
    size_t off = 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const rs_st_tensor *t = &st.tensors[i];
        if (mu->skip && !strcmp(t->name, mu->skip)) continue;
        cJSON *e = cJSON_AddObjectToObject(hdr, t->name);
        cJSON_AddStringToObject(e, "dtype", mu->as_int && !strcmp(t->name, mu->as_int) ? "I32"
                                                                                      : rs_st_dtype_name(t->dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        if (mu->reshape && !strcmp(t->name, mu->reshape))
            for (int k = 0; k < 2; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)mu->reshape_to[k]));
        else
            for (int k = 0; k < t->ndim; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[k]));
        cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + t->nbytes)));
        off += t->nbytes;
    }
    if (mu->extra) {
        cJSON *e = cJSON_AddObjectToObject(hdr, mu->extra);
        cJSON_AddStringToObject(e, "dtype", "F32");
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        cJSON_AddItemToArray(sh, cJSON_CreateNumber(1));
        cJSON *o = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + 4)));
    }
    char *text = cJSON_PrintUnformatted(hdr);
    snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
    FILE *f = fopen(dst, "wb");
    uint64_t n = strlen(text);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(n >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(text, 1, n, f);
    for (int i = 0; i < st.n_tensors; i++)
        if (!(mu->skip && !strcmp(st.tensors[i].name, mu->skip))) fwrite(st.tensors[i].data, 1, st.tensors[i].nbytes, f);
    if (mu->extra) fwrite("\0\0\0\0", 1, 4, f);
    fclose(f);
    free(text);
    cJSON_Delete(hdr);
    rs_safetensors_free(&st);

    /* config.json, optionally with one key replaced */
    snprintf(src, sizeof src, "%s/runtime/base/config.json", g_data);
    f = fopen(src, "rb");
    char buf[8192];
    size_t nr = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[nr] = '\0';
    cJSON *cfg = cJSON_Parse(buf);
    if (config_patch_key) {
        cJSON_DeleteItemFromObject(cfg, config_patch_key);
        cJSON_AddItemToObject(cfg, config_patch_key, config_patch_val);
    }
    text = cJSON_Print(cfg);
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    f = fopen(dst, "wb");
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(cfg);
}

static rs_err load_dir(const char *dir) {
    return load_both_modes(dir);
}

static void test_checkpoints(void) {
    char dir[4200];
    mutation none = {0};
    snprintf(dir, sizeof dir, "%s/ckpt_ok", g_out);
    write_checkpoint(dir, &none, NULL, NULL);
    CHECK(!load_dir(dir), "rebuilt base checkpoint refused: %s", rs_err_msg());

    mutation extra = {.extra = "gpt_neox.layers.0.attention.something_new"};
    snprintf(dir, sizeof dir, "%s/ckpt_extra", g_out);
    write_checkpoint(dir, &extra, NULL, NULL);
    CHECK(!load_dir(dir), "an unexpected tensor must only be warned about: %s", rs_err_msg());

    mutation miss = {.skip = "gpt_neox.layers.1.mlp.dense_4h_to_h.bias"};
    snprintf(dir, sizeof dir, "%s/ckpt_missing", g_out);
    write_checkpoint(dir, &miss, NULL, NULL);
    expect_fail("missing tensor", load_dir(dir), "ckpt_missing", "'gpt_neox.layers.1.mlp.dense_4h_to_h.bias' is missing",
                NULL);

    mutation shape = {.reshape = "gpt_neox.layers.0.attention.query_key_value.weight", .reshape_to = {32, 96}};
    snprintf(dir, sizeof dir, "%s/ckpt_shape", g_out);
    write_checkpoint(dir, &shape, NULL, NULL);
    expect_fail("wrong shape", load_dir(dir), "ckpt_shape/model.safetensors",
                "tensor 'gpt_neox.layers.0.attention.query_key_value.weight' has shape [32, 96], expected [96, 32]",
                NULL);

    mutation asint = {.as_int = "gpt_neox.final_layer_norm.bias"};
    snprintf(dir, sizeof dir, "%s/ckpt_int", g_out);
    write_checkpoint(dir, &asint, NULL, NULL);
    expect_fail("integer weights", load_dir(dir), "ckpt_int", "'gpt_neox.final_layer_norm.bias'", "I32");

    /* config.json settings the runtime refuses by name */
    snprintf(dir, sizeof dir, "%s/cfg_rot", g_out);
    write_checkpoint(dir, &none, "rotary_pct", cJSON_CreateNumber(0.375)); /* 8 * 0.375 = 3 channels */
    expect_fail("odd rotary dims", load_dir(dir), "cfg_rot/config.json", "rotary_pct", "odd");
    snprintf(dir, sizeof dir, "%s/cfg_scaling", g_out);
    write_checkpoint(dir, &none, "rope_scaling", cJSON_Parse("{\"type\":\"linear\",\"factor\":2.0}"));
    expect_fail("rope_scaling", load_dir(dir), "cfg_scaling/config.json", "rope_scaling", NULL);
    snprintf(dir, sizeof dir, "%s/cfg_act", g_out);
    write_checkpoint(dir, &none, "hidden_act", cJSON_CreateString("relu"));
    expect_fail("hidden_act", load_dir(dir), "cfg_act/config.json", "hidden_act 'relu'", NULL);
    snprintf(dir, sizeof dir, "%s/cfg_act2", g_out);
    write_checkpoint(dir, &none, "hidden_act", cJSON_CreateNumber(3));
    expect_fail("hidden_act type", load_dir(dir), "cfg_act2/config.json", "hidden_act", NULL);
    snprintf(dir, sizeof dir, "%s/cfg_heads", g_out);
    write_checkpoint(dir, &none, "num_attention_heads", cJSON_CreateNumber(5));
    expect_fail("heads", load_dir(dir), "cfg_heads/config.json", "not divisible", NULL);
    snprintf(dir, sizeof dir, "%s/cfg_arch", g_out);
    write_checkpoint(dir, &none, "architectures", cJSON_Parse("[\"LlamaForCausalLM\"]"));
    expect_fail("architecture", load_dir(dir), "cfg_arch/config.json", "LlamaForCausalLM", NULL);
    snprintf(dir, sizeof dir, "%s/cfg_vocab", g_out);
    write_checkpoint(dir, &none, "vocab_size", cJSON_CreateNumber(97));
    expect_fail("config vs weights", load_dir(dir), "'gpt_neox.embed_in.weight' has shape [96, 32], expected [97, 32]",
                NULL, NULL);

    expect_fail("no weights", load_dir("/nonexistent_dir"), "/nonexistent_dir/config.json", NULL, NULL);
    snprintf(dir, sizeof dir, "%s/ckpt_noweights", g_out);
    write_checkpoint(dir, &none, NULL, NULL);
    char p[4300];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    remove(p);
    expect_fail("no safetensors", load_dir(dir), "ckpt_noweights", "no model.safetensors", NULL);

    /* sharded: index naming a missing shard, a path outside the directory, a wrong shard */
    snprintf(dir, sizeof dir, "%s/ckpt_shard", g_out);
    write_checkpoint(dir, &none, NULL, NULL);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"weight_map\":{\"embed_out.weight\":\"model-00001-of-00002.safetensors\"}}", f);
    fclose(f);
    expect_fail("missing shard", load_dir(dir), "model-00001-of-00002.safetensors", "cannot open", NULL);
    f = fopen(p, "w");
    fputs("{\"weight_map\":{\"embed_out.weight\":\"../model.safetensors\"}}", f);
    fclose(f);
    expect_fail("shard path escapes", load_dir(dir), "index.json", "'embed_out.weight'", "not a file in the directory");
    f = fopen(p, "w");
    fputs("{\"weight_map\":{\"embed_out.weight\":\"model.safetensors\",\"nothere\":\"model.safetensors\"}}", f);
    fclose(f);
    expect_fail("mapped but absent", load_dir(dir), "index.json", "'nothere'", "in no shard");
    f = fopen(p, "w");
    fputs("{\"weight_map\":[]}", f);
    fclose(f);
    expect_fail("index without map", load_dir(dir), "index.json", "weight_map", NULL);
}

/* ---- token files ------------------------------------------------------------------------------- */

static void write_h5(const char *path, const char *name, hid_t type, int rank, const hsize_t *dims, const void *buf) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
}

static void test_tokens(void) {
    char p[4200];
    rs_tokens tk;
    rs_tokens_opts o = {.format = RS_TOKENS_AUTO, .seq_len = 4, .vocab = 100};
    int32_t out[64];

    path_of(p, sizeof p, "odd.bin");
    FILE *f = fopen(p, "wb");
    fwrite("\1\0\2\0\3", 1, 5, f);
    fclose(f);
    expect_fail("bin odd size", rs_tokens_open(&tk, p, &o), "odd.bin", "not a multiple of 2", NULL);
    o.format = RS_TOKENS_BIN_U32;
    path_of(p, sizeof p, "six.bin");
    f = fopen(p, "wb");
    fwrite("\1\0\2\0\3\0", 1, 6, f);
    fclose(f);
    expect_fail("bin u32 size", rs_tokens_open(&tk, p, &o), "six.bin", "not a multiple of 4", NULL);
    o.format = RS_TOKENS_AUTO;
    o.seq_len = 8;
    expect_fail("bin too short", rs_tokens_open(&tk, p, &o), "six.bin", "fewer than one sequence", NULL);
    o.seq_len = 0;
    expect_fail("bin no seq len", rs_tokens_open(&tk, p, &o), "six.bin", "sequence length", NULL);

    /* ids: 2 sequences of 4, id 150 at sequence 1, position 2 */
    uint16_t ids[9] = {1, 2, 3, 4, 5, 6, 150, 8, 9};
    path_of(p, sizeof p, "range.bin");
    f = fopen(p, "wb");
    fwrite(ids, 2, 9, f);
    fclose(f);
    o.seq_len = 4;
    rs_err e = rs_tokens_open(&tk, p, &o);
    CHECK(!e && tk.n_seq == 2 && tk.remainder == 1, "range.bin open");
    if (!e) {
        CHECK(!rs_tokens_read(out, &tk, 0, 1) && out[3] == 4, "first sequence readable");
        expect_fail("id out of range (bin)", rs_tokens_read(out, &tk, 0, 2), "range.bin",
                    "token id 150 at sequence 1, position 2", "[0, 100)");
        expect_fail("read past end", rs_tokens_read(out, &tk, 1, 2), "range.bin", "the file has 2", NULL);
        rs_tokens_close(&tk);
    }
    uint32_t big[4] = {1, 2, 0x80000001u, 4};
    path_of(p, sizeof p, "big.bin");
    f = fopen(p, "wb");
    fwrite(big, 4, 4, f);
    fclose(f);
    o.format = RS_TOKENS_BIN_U32;
    e = rs_tokens_open(&tk, p, &o);
    CHECK(!e, "big.bin open");
    if (!e) {
        expect_fail("u32 id > INT32_MAX", rs_tokens_read(out, &tk, 0, 1), "big.bin",
                    "token id 2147483649 at sequence 0, position 2", NULL);
        rs_tokens_close(&tk);
    }

    /* HDF5 */
    o.format = RS_TOKENS_AUTO;
    o.seq_len = 0;
    int32_t v[8] = {1, 2, 3, 4, 5, 6, -3, 8};
    hsize_t d2[2] = {2, 4}, d1[1] = {8};
    path_of(p, sizeof p, "other.h5");
    write_h5(p, "ids", H5T_NATIVE_INT32, 2, d2, v);
    expect_fail("no /tokens", rs_tokens_open(&tk, p, &o), "other.h5", "no dataset /tokens", NULL);
    path_of(p, sizeof p, "flat.h5");
    write_h5(p, "tokens", H5T_NATIVE_INT32, 1, d1, v);
    expect_fail("1-D /tokens", rs_tokens_open(&tk, p, &o), "flat.h5", "1 dimensions", NULL);
    float fv[8] = {0};
    path_of(p, sizeof p, "float.h5");
    write_h5(p, "tokens", H5T_NATIVE_FLOAT, 2, d2, fv);
    expect_fail("float /tokens", rs_tokens_open(&tk, p, &o), "float.h5", "not an integer", NULL);
    path_of(p, sizeof p, "neg.h5");
    write_h5(p, "tokens", H5T_NATIVE_INT32, 2, d2, v);
    o.seq_len = 5;
    expect_fail("seq len too long", rs_tokens_open(&tk, p, &o), "neg.h5", "holds sequences of 4", NULL);
    o.seq_len = 3;
    e = rs_tokens_open(&tk, p, &o);
    CHECK(!e && tk.seq_len == 3 && tk.n_seq == 2, "neg.h5 open with seq_len 3");
    if (!e) {
        CHECK(!rs_tokens_read(out, &tk, 0, 1) && out[0] == 1 && out[2] == 3, "prefix read");
        expect_fail("negative id (hdf5)", rs_tokens_read(out, &tk, 0, 2), "neg.h5", "token id -3 at sequence 1, position 2",
                    NULL);
        rs_tokens_close(&tk);
    }
    int16_t sv[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    path_of(p, sizeof p, "i16.h5");
    write_h5(p, "tokens", H5T_NATIVE_INT16, 2, d2, sv);
    o.seq_len = 0;
    e = rs_tokens_open(&tk, p, &o);
    CHECK(!e, "int16 /tokens refused");
    if (!e) {
        CHECK(!rs_tokens_read(out, &tk, 1, 1) && out[0] == 5 && out[3] == 8, "int16 converted");
        rs_tokens_close(&tk);
    }
    path_of(p, sizeof p, "odd.bin");
    o.format = RS_TOKENS_HDF5;
    expect_fail("not HDF5", rs_tokens_open(&tk, p, &o), "odd.bin", "not HDF5", NULL);
    o.format = RS_TOKENS_AUTO;
    expect_fail("unknown extension", rs_tokens_open(&tk, "/tmp/tokens.txt", &o), "tokens.txt", "--format", NULL);
}

int main(void) {
    rs_log_init(0);
    const char *out = getenv("RESAE_TEST_OUT"), *data = getenv("RESAE_TEST_DATA");
    snprintf(g_out, sizeof g_out, "%s/runtime_files", out ? out : "/tmp");
    snprintf(g_data, sizeof g_data, "%s", data ? data : "tests/data");
    mkdir(g_out, 0755);
    test_safetensors_hostile();
    test_safetensors_good();
    test_safetensors_mutations();
    test_safetensors_write();
    test_checkpoints();
    test_tokens();
    printf("%d error cases checked\n", g_cases);
    if (rs_check_fails) fprintf(stderr, "FAILED\n");
    return rs_check_fails;
}
