/* Benchmarks of the affine fit, each against a reference measured in the same run.
 *
 *   bench_affine gram [d] [tokens] [rows]   Gram accumulation (rs_affine_stats_add: float->double centering,
 *                                    DSYRK for C_xx, DGEMM for C_xy, Chan merge) in useful GFLOP/s
 *                                    (tokens*d*(d+1) + 2*tokens*d*d) as a fraction of plain DSYRK and of
 *                                    plain DSYRK+DGEMM on the same shapes. Default d=1024, 65536 tokens.
 *   bench_affine solve [d] [block]   rs_affine_solve (PDPOSV on the group's grid, nrhs = d) against serial
 *                                    dposv_ on rank 0 for the same matrix. Run at 1 and 2 ranks.
 *
 * Run with OPENBLAS_CORETYPE set for this CPU and OPENBLAS_NUM_THREADS=1, e.g.
 *   OPENBLAS_CORETYPE=SkylakeX OPENBLAS_NUM_THREADS=1 mpirun -n 2 --bind-to none --mca btl self,vader \
 *       build/tests/bench/bench_affine solve 2048 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/affine.h"
#include "resae/blacs.h"
#include "resae/blas.h"
#include "resae/log.h"
#include "resae/mpi_util.h"

static void fill_random(float *v, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5) * 2.0f;
    }
}

/* Mix: x gets correlated columns and an offset so the matrices are not trivially diagonal. */
static void make_rows(float *x, float *y, int64_t n, int d, uint64_t seed) {
    fill_random(x, (size_t)n * d, seed);
    fill_random(y, (size_t)n * d, seed + 1);
    for (int64_t i = 0; i < n; i++) {
        float *xr = x + (size_t)i * d, *yr = y + (size_t)i * d;
        for (int j = 1; j < d; j++) xr[j] += 0.5f * xr[j - 1];
        for (int j = 0; j < d; j++) {
            yr[j] = 0.1f * yr[j] + 0.8f * xr[(j * 7) % d];
            xr[j] += 3.0f;
        }
    }
}

static double best(double a, double b) { return a < b ? a : b; }

static int bench_gram(int d, int64_t tokens, int rows, int rounds) {
    const int64_t chunk = 8192;
    if (tokens < chunk) tokens = chunk;
    tokens = tokens / chunk * chunk;
    if (rows < 1 || rows > chunk) rows = 1024;
    float *x = malloc(sizeof(float) * chunk * d), *y = malloc(sizeof(float) * chunk * d);
    double *a = malloc(sizeof(double) * rows * d), *b = malloc(sizeof(double) * rows * d);
    double *big = malloc(sizeof(double) * chunk * d);
    double *c1 = calloc((size_t)d * d, sizeof(double)), *c2 = calloc((size_t)d * d, sizeof(double));
    rs_affine_stats s;
    if (!x || !y || !a || !b || !big || !c1 || !c2 || rs_affine_stats_init(&s, d, d, rows)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    make_rows(x, y, chunk, d, 1);
    for (size_t i = 0; i < (size_t)rows * d; i++) {
        a[i] = x[i];
        b[i] = y[i];
    }
    for (size_t i = 0; i < (size_t)chunk * d; i++) big[i] = x[i];
    int64_t reps = tokens / rows;
    /* warm-up, then rounds of every variant interleaved (best of each), so a busy machine hurts
     * all of them alike */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, rows, 1.0, a, d, 1.0, c1, d);
    rs_affine_stats_add(&s, x, y, chunk);
    double t_syrk = 1e30, t_syrk_long = 1e30, t_gemm = 1e30, t_acc = 1e30;
    for (int r = 0; r < rounds; r++) {
        double t0 = rs_now();
        for (int64_t k = 0; k < reps; k++)
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, rows, 1.0, a, d, 1.0, c1, d);
        t_syrk = best(t_syrk, rs_now() - t0);
        t0 = rs_now();
        for (int64_t off = 0; off < tokens; off += chunk)
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, (int)chunk, 1.0, big, d, 1.0, c1, d);
        t_syrk_long = best(t_syrk_long, rs_now() - t0);
        t0 = rs_now();
        for (int64_t k = 0; k < reps; k++)
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, rows, 1.0, a, d, b, d, 1.0, c2, d);
        t_gemm = best(t_gemm, rs_now() - t0);
        rs_affine_stats_reset(&s);
        t0 = rs_now();
        for (int64_t off = 0; off < tokens; off += chunk)
            if (rs_affine_stats_add(&s, x, y, chunk)) {
                rs_err_print();
                return 1;
            }
        t_acc = best(t_acc, rs_now() - t0);
    }
    double f_syrk = (double)tokens * d * (d + 1), f_gemm = 2.0 * tokens * d * d;
    double g_syrk = f_syrk / t_syrk * 1e-9, g_gemm = f_gemm / t_gemm * 1e-9;
    double g_syrk_long = f_syrk / t_syrk_long * 1e-9, g_syrk_best = g_syrk > g_syrk_long ? g_syrk : g_syrk_long;
    double g_acc = (f_syrk + f_gemm) / t_acc * 1e-9;
    double g_both = (f_syrk + f_gemm) / (t_syrk + t_gemm) * 1e-9;
    printf("gram: d=%d tokens=%lld, accumulator block %d rows, BLAS %s, %d thread(s), best of %d rounds\n", d,
           (long long)tokens, rows, rs_blas_corename(), rs_blas_threads(), rounds);
    printf("  plain DSYRK K=%-6d  %8.3f s  %7.2f GFLOP/s\n", rows, t_syrk, g_syrk);
    printf("  plain DSYRK K=%-6lld  %8.3f s  %7.2f GFLOP/s\n", (long long)chunk, t_syrk_long, g_syrk_long);
    printf("  plain DGEMM K=%-6d  %8.3f s  %7.2f GFLOP/s\n", rows, t_gemm, g_gemm);
    printf("  rs_affine_stats_add  %8.3f s  %7.2f GFLOP/s (useful flops)\n", t_acc, g_acc);
    printf("  ratio vs plain DSYRK rate (best of the two): %.3f (target >= 0.70)\n", g_acc / g_syrk_best);
    printf("  ratio vs plain DSYRK+DGEMM (K=%d) time:    %.3f\n", rows, g_acc / g_both);
    rs_affine_stats_free(&s);
    free(x);
    free(y);
    free(a);
    free(b);
    free(big);
    free(c1);
    free(c2);
    return 0;
}

static int bench_solve(int d, int block) {
    int rank = rs_mpi_rank(), size = rs_mpi_size();
    int64_t n = 2 * (int64_t)d, t0 = n * rank / size, t1 = n * (rank + 1) / size;
    float *x = malloc(sizeof(float) * (size_t)(t1 - t0 + 1) * d), *y = malloc(sizeof(float) * (size_t)(t1 - t0 + 1) * d);
    make_rows(x, y, t1 - t0, d, 100 + (uint64_t)rank);
    rs_affine_stats s;
    if (rs_affine_stats_init(&s, d, d, 0) || rs_affine_stats_add(&s, x, y, t1 - t0) ||
        rs_affine_stats_allreduce(&s, MPI_COMM_WORLD)) {
        rs_err_print();
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    free(x);
    free(y);
    rs_affine_opts o;
    rs_affine_opts_default(&o);
    if (block > 0) o.block = block;
    rs_affine_map m;
    double best_pd = 1e30, best_tot = 1e30, best_nochk = 1e30;
    int nprow = 0, npcol = 0;
    for (int rep = 0; rep < 3; rep++) {
        for (int chk = 0; chk < 2; chk++) {
            o.check = chk;
            MPI_Barrier(MPI_COMM_WORLD);
            if (rs_affine_solve(&m, &s, &o, MPI_COMM_WORLD)) {
                rs_err_print();
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            double tp = m.t_solve, tt = m.t_total;
            MPI_Allreduce(MPI_IN_PLACE, &tp, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            MPI_Allreduce(MPI_IN_PLACE, &tt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            if (tp < best_pd) best_pd = tp;
            if (chk && tt < best_tot) best_tot = tt;
            if (!chk && tt < best_nochk) best_nochk = tt;
            nprow = m.nprow;
            npcol = m.npcol;
            rs_affine_map_free(&m);
        }
    }
    double best_ser = 1e30;
    if (rank == 0) {
        double lambda = 0;
        for (int i = 0; i < d; i++) lambda += s.cxx[(size_t)i * d + i];
        lambda *= o.lambda_rel / d;
        double *a = malloc(sizeof(double) * d * d), *b = malloc(sizeof(double) * d * d);
        for (int rep = 0; rep < 3; rep++) {
            for (int i = 0; i < d; i++)
                for (int j = 0; j < d; j++) {
                    a[(size_t)i + (size_t)j * d] =
                        (i <= j ? s.cxx[(size_t)i * d + j] : s.cxx[(size_t)j * d + i]) + (i == j ? lambda : 0);
                    b[(size_t)i + (size_t)j * d] = s.cxy[(size_t)i * d + j];
                }
            int info = 0;
            double ts = rs_now();
            dposv_("U", &d, &d, a, &d, b, &d, &info, 1);
            ts = rs_now() - ts;
            if (info) fprintf(stderr, "dposv info %d\n", info);
            if (ts < best_ser) best_ser = ts;
        }
        free(a);
        free(b);
        printf("solve: d=%d nrhs=%d at %d rank(s), grid %dx%d block %d, BLAS %s, %d thread(s)/rank (best of 3)\n", d,
               d, size, nprow, npcol, o.block, rs_blas_corename(), rs_blas_threads());
        printf("  serial dposv_ (rank 0)                 %8.3f s\n", best_ser);
        printf("  PDPOSV alone                           %8.3f s   ratio dposv/PDPOSV %.3f\n", best_pd,
               best_ser / best_pd);
        printf("  rs_affine_solve, no residual check     %8.3f s   ratio dposv/solve  %.3f\n", best_nochk,
               best_ser / best_nochk);
        printf("  rs_affine_solve, with residual check   %8.3f s   ratio dposv/solve  %.3f\n", best_tot,
               best_ser / best_tot);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    rs_affine_stats_free(&s);
    return 0;
}

int main(int argc, char **argv) {
    if (rs_mpi_begin(&argc, &argv)) {
        rs_err_print();
        return 1;
    }
    int rc = 2;
    if (argc > 1 && !strcmp(argv[1], "gram")) {
        int d = argc > 2 ? atoi(argv[2]) : 1024;
        int64_t tok = argc > 3 ? atoll(argv[3]) : 65536;
        int rows = argc > 4 ? atoi(argv[4]) : 1024;
        rc = rs_mpi_rank() == 0 ? bench_gram(d, tok, rows, 3) : 0;
    } else if (argc > 1 && !strcmp(argv[1], "solve")) {
        rc = bench_solve(argc > 2 ? atoi(argv[2]) : 1024, argc > 3 ? atoi(argv[3]) : 0);
    } else if (rs_mpi_rank() == 0) {
        fprintf(stderr, "usage: bench_affine gram [d] [tokens] [rows] | solve [d] [block]\n");
    }
    rs_mpi_end();
    return rc;
}
