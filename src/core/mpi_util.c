#include "resae/mpi_util.h"

#include <stdlib.h>

#include "resae/blacs.h"
#include "resae/blas.h"
#include "resae/log.h"

static int g_rank, g_size = 1;

rs_err rs_mpi_begin(int *argc, char ***argv) {
    int provided = 0;
    /* the scheduler's coordinator thread on rank 0 talks MPI while the main thread works */
    RS_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    rs_log_init(g_rank);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node);
    int local = 1;
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
    rs_blas_set_threads_for_ranks(local);
    RS_INFO("MPI: %d rank(s), %d on this node; BLAS kernels %s [%s], %d thread(s) per rank", g_size, local,
            rs_blas_corename(), rs_blas_guard_status(), rs_blas_threads());
    return RS_OK;
}

void rs_mpi_end(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (fin) return;
    rs_blacs_exit(); /* BLACS frees its communicators and tables while MPI is still up */
    MPI_Finalize();
}

int rs_mpi_rank(void) { return g_rank; }
int rs_mpi_size(void) { return g_size; }

rs_err rs_mpi_agree(rs_err err, MPI_Comm comm) {
    int in = err, out = 0;
    /* MAX picks some failing code; every rank learns that some rank failed */
    MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, comm);
    return out;
}
