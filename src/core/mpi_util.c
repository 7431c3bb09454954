#include "resae/mpi_util.h"

#include <hdf5.h>
#include <limits.h>
#include <stdlib.h>

#include "resae/blacs.h"
#include "resae/blas.h"
#include "resae/log.h"

static int g_rank, g_size = 1, g_node_ranks = 1;

rs_err rs_mpi_begin(int *argc, char ***argv) {
    int provided = 0;
    /* the scheduler's coordinator thread on rank 0 talks MPI while the main thread works */
    RS_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    rs_log_init(g_rank);
    /* every HDF5 failure resae meets becomes an error naming the file and the fix; HDF5's own error
     * stack (dozens of lines per rank on a full disk) is printed only with RESAE_LOG_LEVEL=debug */
    if (rs_log_level() < RS_LOG_DEBUG) H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node);
    int local = 1;
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
    MPI_Allreduce(&local, &g_node_ranks, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
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
int rs_mpi_node_ranks(void) { return g_node_ranks; }

rs_err rs_mpi_agree(rs_err err, MPI_Comm comm) {
    int in = err, out = 0;
    /* MAX picks some failing code; every rank learns that some rank failed */
    MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, comm);
    return out;
}

rs_err rs_agree_at(rs_err local, MPI_Comm comm, const char *what, const char *file, int line, const char *func) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    /* MINLOC over (failed ? rank : INT_MAX) finds the lowest failing rank; it then sends its code */
    struct {
        int key, rank;
    } in = {local ? rank : INT_MAX, rank}, out = {INT_MAX, -1};
    if (MPI_Allreduce(&in, &out, 1, MPI_2INT, MPI_MINLOC, comm) != MPI_SUCCESS)
        return rs_err_set(RS_ERR_MPI, file, line, func, "MPI_Allreduce failed agreeing on %s", what);
    if (out.key == INT_MAX) return RS_OK;
    int code = local;
    if (MPI_Bcast(&code, 1, MPI_INT, out.key, comm) != MPI_SUCCESS)
        return rs_err_set(RS_ERR_MPI, file, line, func, "MPI_Bcast failed agreeing on %s", what);
    if (local) return rs_err_push(local, file, line, func);
    rs_err_set(code ? code : RS_ERR_INTERNAL, file, line, func, "rank %d failed in %s (its error is in its log)",
               out.key, what);
    rs_err_mark_remote();
    return code ? code : RS_ERR_INTERNAL;
}

void rs_range_share(int64_t *lo, int64_t *hi, int64_t n, int rank, int size) {
    *lo = n * rank / size;
    *hi = n * (rank + 1) / size;
}
