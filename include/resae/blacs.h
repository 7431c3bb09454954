/* BLACS process grids on an MPI sub-communicator, and the ScaLAPACK/LAPACK entry points resae uses.
 *
 * Debian's ScaLAPACK ships no BLACS header, so the C interface is declared here. Fortran routines
 * are lower case with a trailing underscore, take every argument by pointer, use 32-bit integers,
 * and take one hidden trailing size_t length per CHARACTER argument (after all other arguments).
 *
 * A grid is always built on a given communicator (a worker group), never on MPI_COMM_WORLD:
 * Csys2blacs_handle turns the communicator into a BLACS system context, Cblacs_gridinit lays the
 * first nprow*npcol ranks of it out row-major. Ranks of the communicator beyond the grid get
 * in_grid = 0 and must not call ScaLAPACK on it, but they do take part in the collective
 * rs_blacs_grid_init / rs_blacs_grid_free. */
#ifndef RESAE_BLACS_H
#define RESAE_BLACS_H

#include <mpi.h>
#include <stddef.h>

#include "resae/err.h"

/* ---- BLACS C interface (exported by libscalapack-openmpi) ------------------------------------ */
void Cblacs_pinfo(int *mypnum, int *nprocs);
void Cblacs_get(int ictxt, int what, int *val);
void Cblacs_gridinit(int *ictxt, const char *order, int nprow, int npcol);
void Cblacs_gridinfo(int ictxt, int *nprow, int *npcol, int *myrow, int *mycol);
void Cblacs_gridexit(int ictxt);
void Cblacs_exit(int notdone);
int Csys2blacs_handle(MPI_Comm comm);
void Cfree_blacs_system_handle(int handle);

/* ---- ScaLAPACK tools and drivers (Fortran) ------------------------------------------------------ */
enum { RS_DESC_LEN = 9 }; /* length of a ScaLAPACK array descriptor */
int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc, const int *nprocs);
void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb, const int *irsrc,
               const int *icsrc, const int *ictxt, const int *lld, int *info);
void pdposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *ia, const int *ja,
             const int *desca, double *b, const int *ib, const int *jb, const int *descb, int *info,
             size_t uplo_len);
void pdgemm_(const char *transa, const char *transb, const int *m, const int *n, const int *k,
             const double *alpha, const double *a, const int *ia, const int *ja, const int *desca,
             const double *b, const int *ib, const int *jb, const int *descb, const double *beta, double *c,
             const int *ic, const int *jc, const int *descc, size_t transa_len, size_t transb_len);

/* ---- serial LAPACK (OpenBLAS ships no LAPACKE on Debian) ---------------------------------------- */
void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b,
            const int *ldb, int *info, size_t uplo_len);

/* ---- grids ------------------------------------------------------------------------------------------ */
typedef struct rs_blacs_grid {
    int ctxt;         /* BLACS context; -1 on ranks outside the grid */
    int nprow, npcol; /* grid shape (the same on every rank of the communicator) */
    int myrow, mycol; /* this rank's grid coordinates; -1 outside the grid */
    int in_grid;
} rs_blacs_grid;

/* Near-square shape for nprocs ranks: nprow = floor(sqrt(nprocs)), npcol = nprocs / nprow
 * (nprow <= npcol; nprow*npcol may be less than nprocs, the rest stay outside the grid). */
void rs_blacs_grid_shape(int *nprow, int *npcol, int nprocs);
/* Collective over comm: build an nprow x npcol grid on the first nprow*npcol ranks of comm. */
rs_err rs_blacs_grid_init(rs_blacs_grid *g, MPI_Comm comm, int nprow, int npcol);
/* Release the grid's context (a no-op outside the grid and for a zeroed struct). */
void rs_blacs_grid_free(rs_blacs_grid *g);
/* Release BLACS' global state once no grid is left; MPI stays initialized. A no-op if no grid was
 * ever built; rs_mpi_end calls it before MPI_Finalize (afterwards no further grid may be built). */
void rs_blacs_exit(void);

/* Local extent of a block-cyclically distributed dimension (numroc_ with source process 0). */
int rs_blacs_numroc(int n, int nb, int iproc, int nprocs);
/* Global index of local index il (0-based) on process iproc, block size nb, source process 0. */
static inline int rs_blacs_l2g(int il, int nb, int iproc, int nprocs) {
    return (il / nb) * nb * nprocs + iproc * nb + il % nb;
}

#endif
