/* MPI start-up helpers and error agreement across ranks. */
#include <stdio.h>
#include <stdlib.h>

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
    int total = 0;
    MPI_Allreduce(&fails, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("mpi smoke at %d ranks: %s\n", size, total ? "FAILED" : "ok");
    rs_mpi_end();
    return total ? 1 : 0;
}
