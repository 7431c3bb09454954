/* The shared test helpers (tests/testlib.h) themselves: CHECK counts, the comparison measures on
 * known arrays (worst index, an all-zero reference, NaN on either side), and DIFF_WITHIN's verdict.
 * Exits non-zero on any mismatch. */
#include <math.h>
#include <stdio.h>

#include "testlib.h"

static int close_to(double a, double b) { return fabs(a - b) <= 1e-12 * (fabs(b) > 1 ? fabs(b) : 1); }

int main(void) {
    int fails = 0; /* counted here: the failures provoked below must not count */
#define MUST(cond)                                                                                 \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)

    /* CHECK counts failed conditions only */
    CHECK(1 == 1, "never printed");
    MUST(rs_check_fails == 0);
    fprintf(stderr, "(two provoked failures follow)\n");
    CHECK(1 == 2, "provoked failure %d", 1);
    MUST(rs_check_fails == 1);

    /* a = b + (0, 0.5, -2, 0.25): worst index 2 */
    const double b[4] = {1, -4, 2, 8};
    const float af[4] = {1, -3.5f, 0, 8.25f};
    rs_check_diff d = rs_check_diff_fd(af, b, 4);
    MUST(d.n == 4 && d.worst == 2 && d.a == 0 && d.b == 2);
    MUST(close_to(d.max_abs, 2) && close_to(d.max_ref, 8) && close_to(d.rel, 0.25));
    MUST(close_to(d.nmse, (0.25 + 4 + 0.0625) / (1 + 16 + 4 + 64)) && close_to(d.rel_l2, sqrt(d.nmse)));
    MUST(DIFF_WITHIN(d, rel, 0.25, "at the tolerance"));
    CHECK_DIFF(d, max_abs, 1.5, "provoked failure 2");
    MUST(rs_check_fails == 2);

    /* an all-zero reference: the relative measures fall back to the absolute ones */
    const double z[3] = {0, 0, 0}, ad[3] = {0, 3, -1};
    d = rs_check_diff_dd(ad, z, 3);
    MUST(d.worst == 1 && close_to(d.rel, 3) && close_to(d.nmse, 10));

    /* NaN on either side, anywhere, fails every tolerance and names the first NaN */
    const float fa[5] = {1, 2, NAN, 4, NAN}, fb[5] = {1, 9, 3, 4, 5};
    rs_check_diff dn = rs_check_diff_ff(fa, fb, 5);
    MUST(isnan(dn.max_abs) && isnan(dn.rel) && isnan(dn.nmse) && dn.worst == 2);
    rs_check_diff dm = rs_check_diff_ff(fb, fa, 5);
    MUST(isnan(dm.max_abs) && dm.worst == 2);
    const float one[1] = {NAN}, last[3] = {0, 0, NAN}, zero3[3] = {0, 0, 0};
    MUST(isnan(rs_check_diff_ff(one, one, 1).max_abs));
    MUST(isnan(rs_check_diff_ff(last, zero3, 3).rel) && rs_check_diff_ff(last, zero3, 3).worst == 2);

    /* scalars */
    MUST(close_to(rs_check_rel(1.5, 1), 0.5) && close_to(rs_check_rel(2, 0), 2));

    /* empty arrays compare equal */
    d = rs_check_diff_ff(fa, fb, 0);
    MUST(d.n == 0 && d.max_abs == 0 && d.rel == 0 && d.nmse == 0);

    printf("testlib: %s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
