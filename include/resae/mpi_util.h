/* MPI start-up and shutdown shared by the commands that use MPI. */
#ifndef RESAE_MPI_UTIL_H
#define RESAE_MPI_UTIL_H

#include <mpi.h>
#include <stdint.h>

#include "resae/err.h"

/* MPI_Init_thread (MPI_THREAD_MULTIPLE requested, for the scheduler's coordinator thread), logging with the rank, BLAS threads per rank on this node. */
rs_err rs_mpi_begin(int *argc, char ***argv);
void rs_mpi_end(void);
int rs_mpi_rank(void);
int rs_mpi_size(void);
/* The most ranks any node runs (after rs_mpi_begin; 1 before). */
int rs_mpi_node_ranks(void);
/* Agree on an error across comm: returns the largest err of any rank (0 if all OK); no message.
 * Collective. Prefer rs_agree, which also says which rank failed. */
rs_err rs_mpi_agree(rs_err err, MPI_Comm comm);

/* Agreement over a communicator (collective): returns the error of the lowest failing rank (RS_OK if
 * none failed). On a rank that did not fail the record becomes "rank R failed in WHAT" (R = that
 * rank in comm); a failing rank keeps its own message and gets a traceback frame. */
rs_err rs_agree_at(rs_err local, MPI_Comm comm, const char *what, const char *file, int line, const char *func);
#define rs_agree(local, comm, what) rs_agree_at((local), (comm), (what), __FILE__, __LINE__, __func__)
/* Agree, and return the agreed error from the enclosing function if any rank failed. */
#define RS_AGREE(local, comm, what)                                                                          \
    do {                                                                                                     \
        rs_err rs_agree_e_ = rs_agree_at((local), (comm), (what), __FILE__, __LINE__, __func__);             \
        if (rs_agree_e_) return rs_agree_e_;                                                                 \
    } while (0)
/* This rank's contiguous share [*lo, *hi) of n items split over size ranks (the same split
 * everywhere in resae: lo = n * rank / size). */
void rs_range_share(int64_t *lo, int64_t *hi, int64_t n, int rank, int size);

#endif
