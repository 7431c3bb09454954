/* CHECK for the plain (non-cmocka) test programs: a failed condition prints FAIL FILE:LINE and a
 * message and is counted in rs_check_fails; the program returns non-zero when it is non-zero. MPI
 * tests set rs_check_rank so messages say which rank failed. */
#ifndef RESAE_TESTS_CHECK_H
#define RESAE_TESTS_CHECK_H

#include <stdio.h>

static int rs_check_fails;
static int rs_check_rank __attribute__((unused)) = -1;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            rs_check_fails++;                                                   \
            if (rs_check_rank >= 0) fprintf(stderr, "[rank %d] ", rs_check_rank); \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

#endif
