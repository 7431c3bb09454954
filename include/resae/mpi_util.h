/* MPI start-up and shutdown shared by the commands that use MPI. */
#ifndef RESAE_MPI_UTIL_H
#define RESAE_MPI_UTIL_H

#include <mpi.h>

#include "resae/err.h"

/* MPI_Init_thread (MPI_THREAD_MULTIPLE requested, for the scheduler's coordinator thread), logging with the rank, BLAS threads per rank on this node. */
rs_err rs_mpi_begin(int *argc, char ***argv);
void rs_mpi_end(void);
int rs_mpi_rank(void);
int rs_mpi_size(void);
/* Agree on an error across comm: returns the first nonzero err of any rank (0 if all OK).
 * Every rank must call it (it is a collective). */
rs_err rs_mpi_agree(rs_err err, MPI_Comm comm);

#endif
