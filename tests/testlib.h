/* The test helpers: one assertion for the plain (non-cmocka) test programs and the numeric
 * comparisons every test uses against a reference.
 *
 *   CHECK(cond, fmt, ...)              a failed condition prints "FAIL FILE:LINE: message" (with
 *                                      "[rank R] " first when rs_check_rank >= 0) and is counted in
 *                                      rs_check_fails; the program returns non-zero when it is non-zero
 *   rs_check_diff_ff/_fd/_dd(a, b, n)  a (float or double) against a reference b: max |a - b|, the
 *                                      relative error, NMSE, and the worst index (rs_check_diff)
 *   CHECK_DIFF(d, measure, tol, ...)   CHECK that d.measure <= tol; a failure also prints the measure,
 *                                      the tolerance, the worst index and both values there
 *   DIFF_WITHIN(d, measure, tol, ...)  the same test as an expression that prints but does not count,
 *                                      for cmocka: assert_true(DIFF_WITHIN(d, rel, 1e-6, "W"))
 *   rs_check_rel(a, b)                 |a - b| / |b| of two scalars (|a - b| when b is 0)
 *
 * The measures (fields of rs_check_diff): max_abs, rel (max |a - b| / max |b|, the error relative to
 * the reference's scale, as in tests against PyTorch dumps), nmse (sum (a - b)^2 / sum b^2, ggml's
 * test-backend-ops measure) and rel_l2 (sqrt(nmse) = ||a - b|| / ||b||). A NaN anywhere in a or b makes
 * max_abs, rel and nmse NaN, so every tolerance fails and the worst index names the first NaN.
 * MPI tests set rs_check_rank so messages say which rank failed, and sum rs_check_fails over the ranks
 * before they return. */
#ifndef RESAE_TESTS_TESTLIB_H
#define RESAE_TESTS_TESTLIB_H

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static int rs_check_fails __attribute__((unused));
static int rs_check_rank __attribute__((unused)) = -1;

/* ---- assertions ------------------------------------------------------------------------------- */

static inline void rs_check_fail_at(const char *file, int line) {
    if (rs_check_rank >= 0) fprintf(stderr, "[rank %d] ", rs_check_rank);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rs_check_fails++;                                                                      \
            rs_check_fail_at(__FILE__, __LINE__);                                                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

/* ---- numeric comparison against a reference --------------------------------------------------- */

typedef struct rs_check_diff {
    size_t n;       /* elements compared */
    size_t worst;   /* index of the largest |a - b| (of the first NaN if there is one) */
    double a, b;    /* a[worst], b[worst] */
    double max_abs; /* max |a - b| */
    double max_ref; /* max |b| */
    double rel;     /* max_abs / max_ref (max_abs when the reference is all zero) */
    double nmse;    /* sum (a - b)^2 / sum b^2 (sum (a - b)^2 when the reference is all zero) */
    double rel_l2;  /* sqrt(nmse) */
} rs_check_diff;

/* One body for the three element types; sums run in index order in double. */
#define RS_CHECK_DIFF_BODY                                                                         \
    rs_check_diff d = {n, 0, 0, 0, 0, 0, 0, 0, 0};                                                 \
    double se = 0, sb = 0;                                                                         \
    int nan_seen = 0;                                                                              \
    for (size_t i = 0; i < n; i++) {                                                               \
        double ai = (double)a[i], bi = (double)b[i], e = fabs(ai - bi);                            \
        se += (ai - bi) * (ai - bi);                                                               \
        sb += bi * bi;                                                                             \
        if (fabs(bi) > d.max_ref) d.max_ref = fabs(bi);                                            \
        if (isnan(e)) {                                                                            \
            if (!nan_seen) d.worst = i;                                                            \
            nan_seen = 1;                                                                          \
        } else if (e > d.max_abs) {                                                                \
            d.max_abs = e;                                                                         \
            if (!nan_seen) d.worst = i;                                                            \
        }                                                                                          \
    }                                                                                              \
    if (nan_seen) d.max_abs = NAN;                                                                 \
    if (n) {                                                                                       \
        d.a = (double)a[d.worst];                                                                  \
        d.b = (double)b[d.worst];                                                                  \
    }                                                                                              \
    d.rel = d.max_ref > 0 ? d.max_abs / d.max_ref : d.max_abs;                                     \
    d.nmse = sb > 0 ? se / sb : se;                                                                \
    d.rel_l2 = sqrt(d.nmse);                                                                       \
    return d

static inline rs_check_diff rs_check_diff_ff(const float *a, const float *b, size_t n) { RS_CHECK_DIFF_BODY; }
static inline rs_check_diff rs_check_diff_fd(const float *a, const double *b, size_t n) { RS_CHECK_DIFF_BODY; }
static inline rs_check_diff rs_check_diff_dd(const double *a, const double *b, size_t n) { RS_CHECK_DIFF_BODY; }
#undef RS_CHECK_DIFF_BODY

static inline double rs_check_rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1e-300 ? fabs(b) : 1); }

/* 1 when err (the measure called measure of d) is <= tol (NaN never is); otherwise prints
 * FAIL FILE:LINE: <message>: <measure> <err> > <tol> (worst [i] of n: a vs b) and returns 0. */
static inline int rs_check_diff_within(const rs_check_diff *d, const char *measure, double err, double tol,
                                       const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static inline int rs_check_diff_within(const rs_check_diff *d, const char *measure, double err, double tol,
                                       const char *file, int line, const char *fmt, ...) {
    if (err <= tol) return 1;
    rs_check_fail_at(file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, ": %s %.3e > %.1e (worst [%zu] of %zu: %.9g vs %.9g)\n", measure, err, tol, d->worst, d->n,
            d->a, d->b);
    return 0;
}

#define DIFF_WITHIN(d, measure, tol, ...)                                                          \
    rs_check_diff_within(&(d), #measure, (d).measure, (tol), __FILE__, __LINE__, __VA_ARGS__)

#define CHECK_DIFF(d, measure, tol, ...)                                                           \
    do {                                                                                           \
        if (!DIFF_WITHIN(d, measure, tol, __VA_ARGS__)) rs_check_fails++;                          \
    } while (0)

#endif
