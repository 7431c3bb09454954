/* MPI start-up helpers and error agreement across ranks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/mpi_util.h"

int main(int argc, char **argv) {
    if (rs_mpi_begin(&argc, &argv)) return 1;
    int rank = rs_mpi_rank(), size = rs_mpi_size();
    int fails = 0;
    int sum = 0;
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (sum != size * (size - 1) / 2) fails++;
    if (rs_mpi_agree(RS_OK, MPI_COMM_WORLD) != RS_OK) fails++;
    /* one failing rank is seen by all */
    rs_err e = rs_mpi_agree(rank == size - 1 ? RS_ERR_IO : RS_OK, MPI_COMM_WORLD);
    if (e != RS_ERR_IO) fails++;
    /* rs_agree: every rank learns the lowest failing rank; the others' message names it */
    rs_err_clear();
    int bad = size - 1;
    rs_err le = rank == bad ? rs_err_set(RS_ERR_NUMERIC, __FILE__, __LINE__, __func__, "NaN in row 7") : RS_OK;
    e = rs_agree(le, MPI_COMM_WORLD, "the smoke phase");
    if (e != RS_ERR_NUMERIC) fails++;
    char want[64];
    snprintf(want, sizeof want, "rank %d failed in the smoke phase", bad);
    if (rank == bad ? strcmp(rs_err_msg(), "NaN in row 7") != 0 : strncmp(rs_err_msg(), want, strlen(want)) != 0) {
        fprintf(stderr, "[rank %d] rs_agree message: %s\n", rank, rs_err_msg());
        fails++;
    }
    if (rs_err_is_remote() != (rank != bad)) fails++; /* only the others' records report a remote failure */
    if (rs_agree(RS_OK, MPI_COMM_WORLD, "nothing") != RS_OK) fails++;
    int64_t lo = 0, hi = 0, covered = 0;
    rs_range_share(&lo, &hi, 10, rank, size);
    covered = hi - lo;
    int64_t all = 0;
    MPI_Allreduce(&covered, &all, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (all != 10) fails++;
    int total = 0;
    MPI_Allreduce(&fails, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("mpi smoke at %d ranks: %s\n", size, total ? "FAILED" : "ok");
    rs_mpi_end();
    return total ? 1 : 0;
}
