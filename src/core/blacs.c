#include "resae/blacs.h"

#include <math.h>
#include <string.h>

void rs_blacs_grid_shape(int *nprow, int *npcol, int nprocs) {
    if (nprocs < 1) nprocs = 1;
    int r = (int)floor(sqrt((double)nprocs));
    while (r > 1 && (r + 1) * (r + 1) <= nprocs) r++; /* guard against sqrt rounding down */
    while (r > 1 && r * r > nprocs) r--;
    if (r < 1) r = 1;
    *nprow = r;
    *npcol = nprocs / r;
}

/* BLACS (2.2.1) allocates its per-process request and status arrays in gridmap whenever this process
 * holds no context yet, without freeing the previous ones: a rank that is outside every grid leaks
 * them on each call. Holding one context from the start (a 1x1 grid on MPI_COMM_SELF, released at
 * once: the context table it created stays) avoids that. Local, not collective. */
static int g_blacs_used; /* BLACS holds global state that rs_blacs_exit releases */

static void blacs_prime(void) {
    if (g_blacs_used) return;
    g_blacs_used = 1;
    int handle = Csys2blacs_handle(MPI_COMM_SELF);
    int ctxt = handle;
    Cblacs_gridinit(&ctxt, "Row", 1, 1);
    Cfree_blacs_system_handle(handle);
    if (ctxt >= 0) Cblacs_gridexit(ctxt);
}

rs_err rs_blacs_grid_init(rs_blacs_grid *g, MPI_Comm comm, int nprow, int npcol) {
    memset(g, 0, sizeof *g);
    g->ctxt = -1;
    g->myrow = g->mycol = -1;
    int size = 0;
    RS_MPI(MPI_Comm_size(comm, &size));
    /* every rank checks the same arguments, so either all return here or none does */
    if (nprow < 1 || npcol < 1 || nprow * npcol > size)
        RS_FAIL(RS_ERR_INVAL, "BLACS grid %d x %d does not fit a communicator of %d rank(s)", nprow, npcol,
                size);
    g->nprow = nprow;
    g->npcol = npcol;
    /* BLACS keeps a table of system contexts; the handle is only needed to create the grid, whose
     * communicators are derived from it (MPI_Comm_create inside gridinit, collective over comm) */
    blacs_prime();
    int handle = Csys2blacs_handle(comm);
    int ctxt = handle;
    Cblacs_gridinit(&ctxt, "Row", nprow, npcol);
    Cfree_blacs_system_handle(handle);
    if (ctxt < 0) return RS_OK; /* outside the grid */
    int r = -1, c = -1, pr = 0, pc = 0;
    Cblacs_gridinfo(ctxt, &pr, &pc, &r, &c);
    if (r < 0 || c < 0 || pr != nprow || pc != npcol)
        RS_FAIL(RS_ERR_MPI, "BLACS grid %d x %d came back as %d x %d (this rank at %d,%d)", nprow, npcol, pr,
                pc, r, c);
    g->ctxt = ctxt;
    g->myrow = r;
    g->mycol = c;
    g->in_grid = 1;
    return RS_OK;
}

void rs_blacs_grid_free(rs_blacs_grid *g) {
    if (g->in_grid && g->ctxt >= 0) Cblacs_gridexit(g->ctxt);
    g->ctxt = -1;
    g->in_grid = 0;
    g->myrow = g->mycol = -1;
}

void rs_blacs_exit(void) {
    if (!g_blacs_used) return;
    g_blacs_used = 0;
    Cblacs_exit(1);
}

int rs_blacs_numroc(int n, int nb, int iproc, int nprocs) {
    int src = 0;
    return numroc_(&n, &nb, &iproc, &src, &nprocs);
}
