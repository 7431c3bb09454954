/* SGEMM rate of the OpenBLAS kernels this process runs (no BLAS guard: the environment decides).
 * usage: bench_sgemm [N] [REPEATS]  — prints the kernel name and GFLOP/s of an N x N x N SGEMM.
 * tests/bench/blas_guard_bench.sh runs it with the generic and the native kernels. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "resae/log.h"

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1024, reps = argc > 2 ? atoi(argv[2]) : 5;
    if (n < 16 || reps < 1) {
        fprintf(stderr, "usage: bench_sgemm [N >= 16] [REPEATS >= 1]\n");
        return 2;
    }
    size_t nn = (size_t)n * (size_t)n;
    float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
    if (!a || !b || !c) return 1;
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)((i * 7919) % 1000) / 1000.0f;
        b[i] = (float)((i * 104729) % 1000) / 1000.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm-up */
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = rs_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = rs_now() - t0;
        if (t < best) best = t;
    }
    printf("kernels %s threads %d: SGEMM %d^3 best of %d: %.1f GFLOP/s\n", openblas_get_corename(),
           openblas_get_num_threads(), n, reps, 2.0 * n * (double)n * n / best / 1e9);
    free(a);
    free(b);
    free(c);
    return 0;
}
