/* Error convention, logging helpers, hashing and file reading. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/err.h"
#include "resae/log.h"
#include "resae/rng.h"
#include "resae/util.h"

static rs_err inner(int x) {
    if (x < 0) RS_FAIL(RS_ERR_INVAL, "x is %d, must be >= 0", x);
    return RS_OK;
}

static rs_err outer(int x) {
    RS_TRY(inner(x));
    return RS_OK;
}

static void test_err_propagates_with_trace(void **state) {
    (void)state;
    rs_err_clear();
    assert_int_equal(outer(1), RS_OK);
    assert_int_equal(outer(-3), RS_ERR_INVAL);
    assert_string_equal(rs_err_msg(), "x is -3, must be >= 0");
    const char *tb = rs_err_trace();
    assert_non_null(strstr(tb, "inner"));
    assert_non_null(strstr(tb, "outer"));
    assert_true(strstr(tb, "inner") < strstr(tb, "outer")); /* innermost first */
}

static rs_err with_goto(int fail) {
    rs_err err = RS_OK;
    char *p = malloc(16);
    RS_CHECK_ALLOC(p);
    if (fail) RS_FAIL_GOTO(done, RS_ERR_IO, "failed on purpose");
    RS_TRY_GOTO(inner(1), done);
done:
    free(p);
    return err;
}

static void test_err_goto_cleanup(void **state) {
    (void)state;
    assert_int_equal(with_goto(0), RS_OK);
    assert_int_equal(with_goto(1), RS_ERR_IO);
    assert_string_equal(rs_err_msg(), "failed on purpose");
}

static void test_fmt_duration(void **state) {
    (void)state;
    char b[32];
    rs_fmt_duration(b, sizeof b, 4.14);
    assert_string_equal(b, "4.1s");
    rs_fmt_duration(b, sizeof b, 123);
    assert_string_equal(b, "2m03s");
    rs_fmt_duration(b, sizeof b, 3723);
    assert_string_equal(b, "1h02m03s");
    rs_fmt_duration(b, sizeof b, -1);
    assert_string_equal(b, "?");
}

static void test_hash(void **state) {
    (void)state;
    /* FNV-1a 64 test vectors */
    assert_true(rs_hash64(RS_HASH64_INIT, "", 0) == 0xcbf29ce484222325ULL);
    assert_true(rs_hash64(RS_HASH64_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true(rs_hash64(RS_HASH64_INIT, "foobar", 6) == 0x85944171f73967e8ULL);
    uint64_t h = rs_hash64(RS_HASH64_INIT, "foo", 3);
    assert_true(rs_hash64(h, "bar", 3) == 0x85944171f73967e8ULL);
}

static void test_read_file(void **state) {
    (void)state;
    const char *dir = getenv("RESAE_TEST_OUT");
    char path[1024];
    snprintf(path, sizeof path, "%s/core_read.txt", dir ? dir : ".");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("hello", f);
    fclose(f);
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(rs_read_file(&text, &len, path, 100), RS_OK);
    assert_int_equal(len, 5);
    assert_string_equal(text, "hello");
    free(text);
    assert_int_equal(rs_read_file(&text, &len, path, 3), RS_ERR_FORMAT);
    assert_null(text);
    assert_int_equal(rs_read_file(&text, &len, "/nonexistent/x", 100), RS_ERR_IO);
    assert_non_null(strstr(rs_err_msg(), "/nonexistent/x"));
}

static void test_aligned(void **state) {
    (void)state;
    float *p = rs_calloc_aligned(1000, sizeof(float));
    assert_non_null(p);
    assert_true(((uintptr_t)p & 63) == 0);
    for (int i = 0; i < 1000; i++) assert_true(p[i] == 0.0f);
    free(p);
    assert_null(rs_calloc_aligned(SIZE_MAX / 2, 4));
}

static rs_err checked(int x) {
    RS_CHECK(x > 0, RS_ERR_INVAL, "x = %d must be positive", x);
    return RS_OK;
}

static rs_err prefixed(void) {
    rs_err e = checked(-1);
    if (e) return rs_err_prefix(e, "reading %s", "f.yaml");
    return RS_OK;
}

static void test_err_forms(void **state) {
    (void)state;
    assert_int_equal(checked(1), RS_OK);
    assert_int_equal(checked(-2), RS_ERR_INVAL);
    assert_string_equal(rs_err_msg(), "x = -2 must be positive");
    rs_err e = RS_ERR(RS_ERR_IO, "disk %s", "gone");
    assert_int_equal(e, RS_ERR_IO);
    assert_string_equal(rs_err_msg(), "disk gone");
    assert_int_equal(prefixed(), RS_ERR_INVAL);
    assert_string_equal(rs_err_msg(), "reading f.yaml: x = -1 must be positive");
    assert_non_null(strstr(rs_err_trace(), "checked")); /* the frame of the origin survives */
}

static void test_path_join(void **state) {
    (void)state;
    char out[16];
    assert_int_equal(rs_path_join(out, sizeof out, "runs", "a.h5"), RS_OK);
    assert_string_equal(out, "runs/a.h5");
    assert_int_equal(rs_path_join(out, sizeof out, "", "a.h5"), RS_OK);
    assert_string_equal(out, "a.h5");
    assert_int_equal(rs_path_join(out, sizeof out, "runs/demo", "ab.h5"), RS_OK); /* 15 bytes fit */
    assert_int_equal(rs_path_join(out, sizeof out, "runs/demo", "abc.h5"), RS_ERR_INVAL);
    assert_string_equal(out, "");
    assert_non_null(strstr(rs_err_msg(), "longer than 15 bytes"));
}

static void test_rng(void **state) {
    (void)state;
    /* published splitmix64 outputs for seed 0 (the first two of the reference generator) */
    uint64_t s = 0;
    assert_true(rs_splitmix64_next(&s) == 0xe220a8397b1dcdafULL);
    assert_true(rs_splitmix64_next(&s) == 0x6e789e6aa1b965f4ULL);
    assert_true(rs_splitmix64(0) == 0xe220a8397b1dcdafULL);
    uint64_t x[4] = {1, 2, 3, 4};
    assert_true(rs_xoshiro256ss_next(x) == 11520ULL); /* rotl(2 * 5, 7) * 9 */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_propagates_with_trace), cmocka_unit_test(test_err_goto_cleanup),
        cmocka_unit_test(test_fmt_duration),              cmocka_unit_test(test_hash),
        cmocka_unit_test(test_read_file),                 cmocka_unit_test(test_aligned),
        cmocka_unit_test(test_err_forms),                 cmocka_unit_test(test_path_join),
        cmocka_unit_test(test_rng),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
