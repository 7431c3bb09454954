/* The PDPOSV self-test on every grid shape that fits the communicator, and the affine solve that runs
 * it first. Usage: test_pdposv_selftest ok|fail — "fail" runs under tests/core/blas_fault.c with
 * RESAE_TEST_BLAS_FAULT=pdposv: every rank must report the failure with the kernel set named, and
 * rs_affine_solve must refuse before solving. */
#include <stdio.h>
#include <string.h>

#include "testlib.h"
#include "resae/affine.h"
#include "resae/blacs.h"
#include "resae/blas.h"
#include "resae/mpi_util.h"

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "ok") && strcmp(argv[1], "fail"))) {
        fprintf(stderr, "usage: test_pdposv_selftest ok|fail\n");
        return 2;
    }
    int want_fail = !strcmp(argv[1], "fail");
    if (rs_mpi_begin(&argc, &argv)) return 1;
    rs_check_rank = rs_mpi_rank();
    int size = rs_mpi_size();
    for (int nprow = 1; nprow <= size; nprow++)
        for (int npcol = 1; nprow * npcol <= size; npcol++) {
            rs_err e = rs_blas_selftest_pdposv(MPI_COMM_WORLD, nprow, npcol);
            if (want_fail) {
                CHECK(e == RS_ERR_NUMERIC, "%d x %d grid: expected the self-test to fail, got %d", nprow, npcol, e);
                CHECK(strstr(rs_err_msg(), "PDPOSV") && strstr(rs_err_msg(), rs_blas_corename()) &&
                          strstr(rs_err_msg(), "Fix: "),
                      "message names the routine, the kernels and the fix: %s", rs_err_msg());
            } else {
                CHECK(e == RS_OK, "%d x %d grid: %s", nprow, npcol, rs_err_msg());
            }
        }
    /* the affine solve checks its grid before it solves: a small well-posed fit */
    enum { DX = 6, DY = 5, NTOK = 64 };
    rs_affine_stats st;
    CHECK(rs_affine_stats_init(&st, DX, DY, 16) == RS_OK, "stats init");
    float x[NTOK * DX], y[NTOK * DY];
    for (int t = 0; t < NTOK; t++) {
        for (int i = 0; i < DX; i++) x[t * DX + i] = (float)((t * 7 + i * 13 + rs_mpi_rank() * 3) % 17) / 17.0f;
        for (int j = 0; j < DY; j++) y[t * DY + j] = x[t * DX + j] * 0.5f + x[t * DX + (j + 1) % DX] * 0.25f;
    }
    CHECK(rs_affine_stats_add(&st, x, y, NTOK) == RS_OK, "stats add");
    CHECK(rs_affine_stats_allreduce(&st, MPI_COMM_WORLD) == RS_OK, "allreduce");
    rs_affine_opts o;
    rs_affine_opts_default(&o);
    o.block = 2;
    rs_affine_map m;
    memset(&m, 0, sizeof m);
    rs_err e = rs_affine_solve(&m, &st, &o, MPI_COMM_WORLD);
    if (want_fail) CHECK(e != RS_OK && strstr(rs_err_msg(), "self-test"), "affine solve refused: %s", rs_err_msg());
    else CHECK(e == RS_OK, "affine solve: %s", rs_err_msg());
    rs_affine_map_free(&m);
    rs_affine_stats_free(&st);
    int total = 0;
    MPI_Allreduce(&rs_check_fails, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rs_mpi_rank() == 0) printf("pdposv self-test (%s) at %d ranks: %s\n", argv[1], size, total ? "FAILED" : "ok");
    rs_mpi_end();
    return total ? 1 : 0;
}
