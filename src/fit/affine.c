#include "resae/affine.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/blacs.h"
#include "resae/blas.h"
#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/util.h"

/* On a zero pivot with lambda = 0 the first retry starts here (relative to trace(C_xx)/dx). */
#define RS_AFFINE_LAMBDA_FLOOR_REL 1e-12
/* MPI counts are int: long reductions go in pieces of this many doubles. */
#define RS_AFFINE_REDUCE_PIECE (1 << 24)

void rs_affine_opts_default(rs_affine_opts *o) {
    o->lambda_rel = 1e-4;
    o->block = 64;
    o->max_retries = 8;
    o->max_procs = 0;
    o->chunk_rows = 1024;
    o->check = 1;
    o->max_resid = 100.0;
    o->scale_pass = 1;
}

static rs_err allreduce_sum_d(double *buf, size_t n, MPI_Comm comm) {
    for (size_t off = 0; off < n; off += RS_AFFINE_REDUCE_PIECE) {
        size_t len = n - off < RS_AFFINE_REDUCE_PIECE ? n - off : RS_AFFINE_REDUCE_PIECE;
        RS_MPI(MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)len, MPI_DOUBLE, MPI_SUM, comm));
    }
    return RS_OK;
}

/* =====================================================================================================
 * Moment accumulation
 * ===================================================================================================== */

rs_err rs_affine_stats_init(rs_affine_stats *s, int dx, int dy, int chunk_rows) {
    memset(s, 0, sizeof *s);
    if (dx < 1 || dy < 1) RS_FAIL(RS_ERR_INVAL, "affine stats: dimensions dx=%d, dy=%d must be >= 1", dx, dy);
    if (chunk_rows <= 0) chunk_rows = 1024;
    size_t ndx = (size_t)dx, ndy = (size_t)dy, rows = (size_t)chunk_rows + 1;
    size_t n_mu = ndx + ndy, n_cxx = ndx * ndx, n_cxy = ndx * ndy;
    size_t n_xc = rows * ndx, n_yc = rows * ndy, n_tmp = ndx + ndy;
    /* each piece rounded up to 8 doubles (64 bytes) so every view stays aligned */
#define RS_ROUND8(v) (((v) + 7) & ~(size_t)7)
    size_t total = RS_ROUND8(n_mu) + RS_ROUND8(n_cxx) + RS_ROUND8(n_cxy) + RS_ROUND8(n_xc) + RS_ROUND8(n_yc) +
                   RS_ROUND8(n_tmp);
    double *p = rs_calloc_aligned(total, sizeof(double));
    if (!p)
        RS_FAIL(RS_ERR_NOMEM, "affine stats: cannot allocate %.1f MiB for dx=%d, dy=%d, chunk_rows=%d",
                (double)total * 8 / 1048576.0, dx, dy, chunk_rows);
    s->slab = p;
    s->dx = dx;
    s->dy = dy;
    s->chunk_rows = chunk_rows;
    s->mu_x = p;
    s->mu_y = p + ndx;
    p += RS_ROUND8(n_mu);
    s->cxx = p;
    p += RS_ROUND8(n_cxx);
    s->cxy = p;
    p += RS_ROUND8(n_cxy);
    s->xc = p;
    p += RS_ROUND8(n_xc);
    s->yc = p;
    p += RS_ROUND8(n_yc);
    s->tmp = p;
#undef RS_ROUND8
    return RS_OK;
}

void rs_affine_stats_free(rs_affine_stats *s) {
    free(s->slab);
    memset(s, 0, sizeof *s);
}

void rs_affine_stats_reset(rs_affine_stats *s) {
    s->n = 0;
    s->reduced = 0;
    memset(s->mu_x, 0, sizeof(double) * (size_t)s->dx);
    memset(s->mu_y, 0, sizeof(double) * (size_t)s->dy);
    memset(s->cxx, 0, sizeof(double) * (size_t)s->dx * (size_t)s->dx);
    memset(s->cxy, 0, sizeof(double) * (size_t)s->dx * (size_t)s->dy);
}

/* Center m rows of v (m, d) at their own mean into out (m, d), double; writes the mean to mean (d).
 * Returns the first non-finite row index, or -1. */
static int64_t center_rows(double *out, double *mean, const float *v, int64_t m, int d) {
    for (int j = 0; j < d; j++) mean[j] = 0.0;
    for (int64_t i = 0; i < m; i++) {
        const float *row = v + (size_t)i * (size_t)d;
        for (int j = 0; j < d; j++) mean[j] += (double)row[j];
    }
    double inv = 1.0 / (double)m;
    int bad = 0;
    for (int j = 0; j < d; j++) {
        mean[j] *= inv;
        bad |= !isfinite(mean[j]);
    }
    if (bad) {
        for (int64_t i = 0; i < m; i++)
            for (int j = 0; j < d; j++)
                if (!isfinite(v[(size_t)i * (size_t)d + (size_t)j])) return i;
        return 0; /* finite values whose sum overflowed */
    }
    for (int64_t i = 0; i < m; i++) {
        const float *row = v + (size_t)i * (size_t)d;
        double *o = out + (size_t)i * (size_t)d;
        for (int j = 0; j < d; j++) o[j] = (double)row[j] - mean[j];
    }
    return -1;
}

/* Merge one block of m <= chunk_rows rows. Chan et al.: with counts na, nb (n = na + nb), means mu_a,
 * mu_b, delta = mu_b - mu_a,
 *     M = M_a + M_b + (na nb / n) delta_x delta_y^T,   mu = mu_a + delta nb / n.
 * M_b and the rank-1 term come from one DSYRK/DGEMM: the centered block gets one extra row
 * sqrt(na nb / n) delta, so the update costs no separate pass over C. */
static rs_err stats_add_block(rs_affine_stats *s, const float *x, const float *y, int64_t m, int64_t row0) {
    int dx = s->dx, dy = s->dy;
    double *mbx = s->tmp, *mby = s->tmp + dx;
    int64_t bad = center_rows(s->xc, mbx, x, m, dx);
    if (bad >= 0)
        RS_FAIL(RS_ERR_NUMERIC, "affine stats: non-finite x in chunk row %lld (or an overflowing sum); check the "
                "activations", (long long)(row0 + bad));
    bad = center_rows(s->yc, mby, y, m, dy);
    if (bad >= 0)
        RS_FAIL(RS_ERR_NUMERIC, "affine stats: non-finite y in chunk row %lld (or an overflowing sum); check the "
                "activations", (long long)(row0 + bad));
    double na = (double)s->n, nb = (double)m, n = na + nb;
    double w = sqrt(na * nb / n);
    double *ex = s->xc + (size_t)m * (size_t)dx, *ey = s->yc + (size_t)m * (size_t)dy;
    for (int j = 0; j < dx; j++) {
        double dlt = mbx[j] - s->mu_x[j];
        ex[j] = w * dlt;
        s->mu_x[j] += dlt * (nb / n);
    }
    for (int j = 0; j < dy; j++) {
        double dlt = mby[j] - s->mu_y[j];
        ey[j] = w * dlt;
        s->mu_y[j] += dlt * (nb / n);
    }
    int k = (int)m + (s->n > 0 ? 1 : 0); /* the extra row is zero for the first block */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dx, k, 1.0, s->xc, dx, 1.0, s->cxx, dx);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dx, dy, k, 1.0, s->xc, dx, s->yc, dy, 1.0, s->cxy, dy);
    s->n += m;
    return RS_OK;
}

rs_err rs_affine_stats_add(rs_affine_stats *s, const float *x, const float *y, int64_t n) {
    if (n < 0) RS_FAIL(RS_ERR_INVAL, "affine stats: negative row count %lld", (long long)n);
    if (s->reduced)
        RS_FAIL(RS_ERR_INVAL, "affine stats: adding rows to statistics that were already reduced across ranks");
    if (n > 0 && (!x || !y)) RS_FAIL(RS_ERR_INVAL, "affine stats: a chunk of %lld rows lacks x or y", (long long)n);
    for (int64_t off = 0; off < n; off += s->chunk_rows) {
        int64_t m = n - off < s->chunk_rows ? n - off : s->chunk_rows;
        RS_TRY(stats_add_block(s, x + (size_t)off * (size_t)s->dx, y + (size_t)off * (size_t)s->dy, m, off));
    }
    return RS_OK;
}

rs_err rs_affine_stats_merge(rs_affine_stats *a, const rs_affine_stats *b) {
    if (a->dx != b->dx || a->dy != b->dy)
        RS_FAIL(RS_ERR_INVAL, "affine stats merge: shapes (%d, %d) and (%d, %d) differ", a->dx, a->dy, b->dx, b->dy);
    if (a->reduced || b->reduced)
        RS_FAIL(RS_ERR_INVAL, "affine stats merge: statistics already reduced across ranks cannot be merged again");
    if (b->n == 0) return RS_OK;
    int dx = a->dx, dy = a->dy;
    double na = (double)a->n, nb = (double)b->n, n = na + nb;
    double *dlx = a->tmp, *dly = a->tmp + dx;
    for (int j = 0; j < dx; j++) dlx[j] = b->mu_x[j] - a->mu_x[j];
    for (int j = 0; j < dy; j++) dly[j] = b->mu_y[j] - a->mu_y[j];
    size_t nxx = (size_t)dx * (size_t)dx, nxy = (size_t)dx * (size_t)dy;
    for (size_t i = 0; i < nxx; i++) a->cxx[i] += b->cxx[i];
    for (size_t i = 0; i < nxy; i++) a->cxy[i] += b->cxy[i];
    double w = na * nb / n;
    cblas_dsyr(CblasRowMajor, CblasUpper, dx, w, dlx, 1, a->cxx, dx);
    cblas_dger(CblasRowMajor, dx, dy, w, dlx, 1, dly, 1, a->cxy, dy);
    for (int j = 0; j < dx; j++) a->mu_x[j] += dlx[j] * (nb / n);
    for (int j = 0; j < dy; j++) a->mu_y[j] += dly[j] * (nb / n);
    a->n += b->n;
    return RS_OK;
}

rs_err rs_affine_stats_allreduce(rs_affine_stats *s, MPI_Comm comm) {
    int dx = s->dx, dy = s->dy;
    /* a second reduction would count every token once per rank; refuse on every rank alike */
    RS_AGREE(s->reduced ? RS_ERR(RS_ERR_INVAL, "affine stats allreduce: the statistics were already reduced") : RS_OK,
             comm, "the affine statistics allreduce");
    int64_t n_all = 0;
    RS_MPI(MPI_Allreduce(&s->n, &n_all, 1, MPI_INT64_T, MPI_SUM, comm));
    if (n_all == 0) { /* nothing anywhere: leave zeros, the solve reports it */
        s->reduced = 1;
        return RS_OK;
    }
    /* global means first: weighted sum of the rank means (dx + dy doubles) */
    size_t nmu = (size_t)dx + (size_t)dy;
    double *mu = malloc(sizeof(double) * nmu);
    rs_err err = mu ? RS_OK : RS_ERR(RS_ERR_NOMEM, "affine stats allreduce: out of memory (%zu doubles)", nmu);
    if ((err = rs_agree(err, comm, "the affine statistics allreduce"))) {
        free(mu);
        return err;
    }
    double frac = (double)s->n / (double)n_all;
    for (int j = 0; j < dx; j++) mu[j] = s->mu_x[j] * frac;
    for (int j = 0; j < dy; j++) mu[dx + j] = s->mu_y[j] * frac;
    err = allreduce_sum_d(mu, nmu, comm);
    if (err) {
        free(mu);
        return err;
    }
    /* move this rank's co-moment to the global mean: M += n_r d d^T with d = mu_r - mu */
    if (s->n > 0) {
        double *dlx = s->tmp, *dly = s->tmp + dx;
        for (int j = 0; j < dx; j++) dlx[j] = s->mu_x[j] - mu[j];
        for (int j = 0; j < dy; j++) dly[j] = s->mu_y[j] - mu[dx + j];
        cblas_dsyr(CblasRowMajor, CblasUpper, dx, (double)s->n, dlx, 1, s->cxx, dx);
        cblas_dger(CblasRowMajor, dx, dy, (double)s->n, dlx, 1, dly, 1, s->cxy, dy);
    }
    memcpy(s->mu_x, mu, sizeof(double) * (size_t)dx);
    memcpy(s->mu_y, mu + dx, sizeof(double) * (size_t)dy);
    free(mu);
    /* sum the upper triangle of C_xx packed in place (row i moves down to i*dx - i(i-1)/2, never past
     * its own start, so a forward sweep is safe; unpacking sweeps backwards), then C_xy: no copy of
     * either matrix is needed */
    size_t ndx = (size_t)dx, ntri = ndx * (ndx + 1) / 2, nxy = ndx * (size_t)dy;
    for (size_t i = 1, k = ndx; i < ndx; k += ndx - i, i++)
        memmove(s->cxx + k, s->cxx + i * ndx + i, sizeof(double) * (ndx - i));
    err = allreduce_sum_d(s->cxx, ntri, comm);
    if (!err) err = allreduce_sum_d(s->cxy, nxy, comm);
    for (size_t i = ndx; i-- > 1;) {
        size_t k = i * ndx - i * (i - 1) / 2; /* <= i * ndx: earlier packed rows end before row i */
        memmove(s->cxx + i * ndx + i, s->cxx + k, sizeof(double) * (ndx - i));
        memset(s->cxx + i * ndx, 0, sizeof(double) * i); /* the unused lower part, left as before */
    }
    if (!err) {
        s->n = n_all;
        s->reduced = 1;
    }
    return err;
}

/* =====================================================================================================
 * The map
 * ===================================================================================================== */

static rs_err map_alloc(rs_affine_map *m, int dx, int dy) {
    memset(m, 0, sizeof *m);
    size_t ndx = (size_t)dx, ndy = (size_t)dy;
    size_t nd = ndy * ndx + 2 * ndy + ndx; /* A, c, mu_y, mu_x */
    size_t nf = ndy * ndx + 2 * (ndx + ndy); /* A_f32, mu_x_f32, mu_y_f32, mu_x_lo_f32, mu_y_lo_f32 */
    size_t bytes = nd * sizeof(double) + nf * sizeof(float);
    char *p = rs_calloc_aligned(bytes, 1);
    if (!p) RS_FAIL(RS_ERR_NOMEM, "affine map: cannot allocate %.1f MiB for dx=%d, dy=%d", bytes / 1048576.0, dx, dy);
    m->slab = p;
    m->dx = dx;
    m->dy = dy;
    m->A = (double *)p;
    m->c = m->A + ndy * ndx;
    m->mu_y = m->c + ndy;
    m->mu_x = m->mu_y + ndy;
    m->A_f32 = (float *)(m->mu_x + ndx);
    m->mu_x_f32 = m->A_f32 + ndy * ndx;
    m->mu_y_f32 = m->mu_x_f32 + ndx;
    m->mu_x_lo_f32 = m->mu_y_f32 + ndy;
    m->mu_y_lo_f32 = m->mu_x_lo_f32 + ndx;
    m->r2 = NAN;
    m->s = NAN;
    m->solve_resid = NAN;
    return RS_OK;
}

/* c = mu_y - A mu_x, and the float copies the residual uses, from A, mu_x and mu_y. */
static void map_derive(rs_affine_map *m) {
    int dx = m->dx, dy = m->dy;
    for (int i = 0; i < dy; i++) {
        const double *row = m->A + (size_t)i * (size_t)dx;
        double acc = 0.0;
        for (int j = 0; j < dx; j++) acc += row[j] * m->mu_x[j];
        m->c[i] = m->mu_y[i] - acc;
        m->mu_y_f32[i] = (float)m->mu_y[i];
        m->mu_y_lo_f32[i] = (float)(m->mu_y[i] - (double)m->mu_y_f32[i]);
    }
    for (int j = 0; j < dx; j++) {
        m->mu_x_f32[j] = (float)m->mu_x[j];
        m->mu_x_lo_f32[j] = (float)(m->mu_x[j] - (double)m->mu_x_f32[j]);
    }
    for (size_t i = 0; i < (size_t)dx * (size_t)dy; i++) m->A_f32[i] = (float)m->A[i];
}

rs_err rs_affine_map_set(rs_affine_map *m, int dx, int dy, const double *A, const double *mu_x, const double *mu_y) {
    if (dx < 1 || dy < 1) RS_FAIL(RS_ERR_INVAL, "affine map: dimensions %d x %d must be positive", dy, dx);
    RS_TRY(map_alloc(m, dx, dy));
    memcpy(m->A, A, sizeof(double) * (size_t)dx * (size_t)dy);
    memcpy(m->mu_x, mu_x, sizeof(double) * (size_t)dx);
    memcpy(m->mu_y, mu_y, sizeof(double) * (size_t)dy);
    map_derive(m);
    return RS_OK;
}

void rs_affine_map_free(rs_affine_map *m) {
    free(m->slab);
    memset(m, 0, sizeof *m);
}

/* C_xx entry (i, j) from the upper-triangle storage. */
static inline double cxx_at(const rs_affine_stats *g, int i, int j) {
    return i <= j ? g->cxx[(size_t)i * (size_t)g->dx + (size_t)j] : g->cxx[(size_t)j * (size_t)g->dx + (size_t)i];
}

/* The local pieces of one block-cyclic layout on one grid rank. */
typedef struct layout {
    int mloc, nloc_a, nloc_b, lld;
    int desc_a[RS_DESC_LEN], desc_b[RS_DESC_LEN];
} layout;

/* The local pieces are walked one nb x nb block at a time, so the reads of the row-major source
 * stay within a few KiB (a plain column walk strides through all of C and misses cache on every
 * element). f(i, j) gives global entry (i, j); out is column-major with leading dimension lld. */
#define RS_FOR_LOCAL_BLOCKS(L, nloc, gr, nb, BODY)                                                     \
    for (int jb = 0; jb < (nloc); jb += (nb))                                                         \
        for (int ib = 0; ib < (L)->mloc; ib += (nb)) {                                                \
            int je = jb + (nb) < (nloc) ? jb + (nb) : (nloc);                                         \
            int ie = ib + (nb) < (L)->mloc ? ib + (nb) : (L)->mloc;                                   \
            int j0 = rs_blacs_l2g(jb, nb, (gr)->mycol, (gr)->npcol);                                  \
            int i0 = rs_blacs_l2g(ib, nb, (gr)->myrow, (gr)->nprow);                                  \
            for (int jl = jb; jl < je; jl++)                                                          \
                for (int il = ib; il < ie; il++) {                                                    \
                    int i = i0 + (il - ib), j = j0 + (jl - jb);                                       \
                    size_t loc = (size_t)il + (size_t)jl * (size_t)(L)->lld;                          \
                    BODY;                                                                             \
                }                                                                                     \
        }

static void fill_a(double *aloc, const layout *L, const rs_blacs_grid *gr, const rs_affine_stats *g, int nb,
                   double lambda) {
    RS_FOR_LOCAL_BLOCKS(L, L->nloc_a, gr, nb, aloc[loc] = cxx_at(g, i, j) + (i == j ? lambda : 0.0))
}

/* B (dx, dy) column-major holds C_xy (row-major (dx, dy)) */
static void fill_b(double *bloc, const layout *L, const rs_blacs_grid *gr, const rs_affine_stats *g, int nb) {
    RS_FOR_LOCAL_BLOCKS(L, L->nloc_b, gr, nb, bloc[loc] = g->cxy[(size_t)i * (size_t)g->dy + (size_t)j])
}

typedef struct solve_ws {
    rs_blacs_grid grid;
    layout L;
    double *aloc, *bloc, *rloc; /* (lld, nloc_a), (lld, nloc_b), (lld, nloc_b) column-major */
} solve_ws;

static void ws_free(solve_ws *w) {
    free(w->aloc);
    free(w->bloc);
    free(w->rloc);
    rs_blacs_grid_free(&w->grid);
}

/* One attempt at lambda: factor and solve, gather X (= A^T, column-major (dx, dy), i.e. A row-major)
 * into m->A on every rank. *info: the agreed PDPOSV info (max over ranks; < 0 = argument error).
 * *resid: the scaled residual (NaN when not checked). Collective over comm. */
static rs_err solve_once(rs_affine_map *m, int *info, double *resid, double *t_pdposv, solve_ws *w,
                         const rs_affine_stats *g, const rs_affine_opts *o, double lambda, MPI_Comm comm) {
    int dx = g->dx, dy = g->dy, nb = o->block, one = 1;
    const rs_blacs_grid *gr = &w->grid;
    const layout *L = &w->L;
    int my_info = 0;
    if (gr->in_grid) {
        fill_a(w->aloc, L, gr, g, nb, lambda);
        fill_b(w->bloc, L, gr, g, nb);
    }
    MPI_Barrier(comm); /* so the PDPOSV time is the solve's, not the wait for the slowest fill */
    double t0 = rs_now();
    if (gr->in_grid)
        pdposv_("U", &dx, &dy, w->aloc, &one, &one, L->desc_a, w->bloc, &one, &one, L->desc_b, &my_info, 1);
    *t_pdposv += rs_now() - t0;
    int inf[2] = {my_info, -my_info}, agreed[2];
    RS_MPI(MPI_Allreduce(inf, agreed, 2, MPI_INT, MPI_MAX, comm));
    if (agreed[1] > 0) { /* some rank saw an illegal argument: a bug here, not in the data */
        *info = -agreed[1];
        return RS_OK;
    }
    *info = agreed[0];
    *resid = NAN;
    if (*info > 0) return RS_OK;

    size_t nA = (size_t)dx * (size_t)dy;
    memset(m->A, 0, sizeof(double) * nA);
    if (gr->in_grid) {
        double *A = m->A;
        const double *bloc = w->bloc;
        RS_FOR_LOCAL_BLOCKS(L, L->nloc_b, gr, nb, A[(size_t)j * (size_t)dx + (size_t)i] = bloc[loc])
    }
    /* each entry has exactly one nonzero contributor, so the sum is exact and identical everywhere */
    RS_TRY(allreduce_sum_d(m->A, nA, comm));
    if (!o->check) return RS_OK;

    /* R = B - (C + lambda I) X with PDGEMM on the (refilled) matrix; X stays in bloc */
    double ss = 0.0;
    if (gr->in_grid) {
        fill_a(w->aloc, L, gr, g, nb, lambda);
        fill_b(w->rloc, L, gr, g, nb);
        double alpha = -1.0, beta = 1.0;
        pdgemm_("N", "N", &dx, &dy, &dx, &alpha, w->aloc, &one, &one, L->desc_a, w->bloc, &one, &one, L->desc_b,
                &beta, w->rloc, &one, &one, L->desc_b, 1, 1);
        for (int jl = 0; jl < L->nloc_b; jl++)
            for (int il = 0; il < L->mloc; il++) {
                double v = w->rloc[(size_t)il + (size_t)jl * (size_t)L->lld];
                ss += v * v;
            }
    }
    RS_MPI(MPI_Allreduce(MPI_IN_PLACE, &ss, 1, MPI_DOUBLE, MPI_SUM, comm));
    /* ||C + lambda I||_F and ||X||_F from the replicated data: the same value on every rank */
    double na = 0.0, nx = 0.0;
    for (int i = 0; i < dx; i++) {
        double dii = g->cxx[(size_t)i * (size_t)dx + (size_t)i] + lambda;
        na += dii * dii;
        for (int j = i + 1; j < dx; j++) {
            double v = g->cxx[(size_t)i * (size_t)dx + (size_t)j];
            na += 2.0 * v * v;
        }
    }
    for (size_t i = 0; i < nA; i++) nx += m->A[i] * m->A[i];
    double denom = sqrt(na) * sqrt(nx) * DBL_EPSILON * (double)dx;
    *resid = denom > 0 ? sqrt(ss) / denom : (ss == 0.0 ? 0.0 : INFINITY);
    return RS_OK;
}

rs_err rs_affine_solve(rs_affine_map *m, const rs_affine_stats *g, const rs_affine_opts *opts, MPI_Comm comm) {
    rs_affine_opts o;
    if (opts) o = *opts;
    else rs_affine_opts_default(&o);
    memset(m, 0, sizeof *m);
    int dx = g->dx, dy = g->dy;
    /* local statistics on a multi-rank group would give every rank a different matrix */
    int gsize = 1;
    RS_MPI(MPI_Comm_size(comm, &gsize));
    RS_AGREE(gsize > 1 && !g->reduced ? RS_ERR(RS_ERR_INVAL, "affine solve: the statistics are not reduced across "
                                               "the group's %d ranks (call rs_affine_stats_allreduce first)", gsize)
                                      : RS_OK,
             comm, "the affine solve's input check");
    /* checks on replicated values: every rank decides the same */
    if (o.block < 1) RS_FAIL(RS_ERR_INVAL, "affine solve: block size %d must be >= 1 (affine.block)", o.block);
    if (!(o.lambda_rel >= 0.0) || !isfinite(o.lambda_rel))
        RS_FAIL(RS_ERR_INVAL, "affine solve: lambda_rel %g must be finite and >= 0 (affine.lambda_rel)", o.lambda_rel);
    if (o.max_retries < 0) RS_FAIL(RS_ERR_INVAL, "affine solve: max_retries %d must be >= 0", o.max_retries);
    if (g->n < 2)
        RS_FAIL(RS_ERR_INVAL, "affine solve: %lld calibration token(s) in the group; need at least 2 (check the "
                "calibration split)", (long long)g->n);
    double trace = 0.0;
    for (int i = 0; i < dx; i++) trace += g->cxx[(size_t)i * (size_t)dx + (size_t)i];
    if (!isfinite(trace))
        RS_FAIL(RS_ERR_NUMERIC, "affine solve: trace(C_xx) is %g; the calibration activations hold huge or non-finite "
                "values", trace);
    if (trace <= 0.0)
        RS_FAIL(RS_ERR_NUMERIC, "affine solve: the inputs x have zero variance over %lld calibration tokens "
                "(trace C_xx = 0); no map can be fitted", (long long)g->n);

    double t_start = rs_now();
    rs_err err = RS_OK;
    solve_ws w;
    memset(&w, 0, sizeof w);
    int size = 0, crank = 0;
    RS_MPI(MPI_Comm_size(comm, &size));
    RS_MPI(MPI_Comm_rank(comm, &crank));
    int procs = o.max_procs > 0 && o.max_procs < size ? o.max_procs : size;
    int nprow, npcol;
    rs_blacs_grid_shape(&nprow, &npcol, procs);
    /* more process rows/columns than blocks would only add idle grid members */
    int nblk_x = (dx + o.block - 1) / o.block, nblk_y = (dy + o.block - 1) / o.block;
    int nblk_max = nblk_x > nblk_y ? nblk_x : nblk_y;
    if (nprow > nblk_x) nprow = nblk_x;
    if (npcol > nblk_max) npcol = nblk_max;
    /* the kernels this solve runs, checked on this grid shape against plain C (a few ms) */
    RS_TRY(rs_blas_selftest_pdposv(comm, nprow, npcol));
    RS_TRY(rs_blacs_grid_init(&w.grid, comm, nprow, npcol));

    rs_err local = map_alloc(m, dx, dy);
    if (!local && w.grid.in_grid) {
        layout *L = &w.L;
        L->mloc = rs_blacs_numroc(dx, o.block, w.grid.myrow, nprow);
        L->nloc_a = rs_blacs_numroc(dx, o.block, w.grid.mycol, npcol);
        L->nloc_b = rs_blacs_numroc(dy, o.block, w.grid.mycol, npcol);
        L->lld = L->mloc > 1 ? L->mloc : 1;
        int zero = 0, info_a = 0, info_b = 0;
        descinit_(L->desc_a, &dx, &dx, &o.block, &o.block, &zero, &zero, &w.grid.ctxt, &L->lld, &info_a);
        descinit_(L->desc_b, &dx, &dy, &o.block, &o.block, &zero, &zero, &w.grid.ctxt, &L->lld, &info_b);
        if (info_a || info_b) {
            local = RS_ERR(RS_ERR_INTERNAL, "affine solve: descinit failed (info %d, %d) for dx=%d, dy=%d, block %d",
                           info_a, info_b, dx, dy, o.block);
        } else {
            size_t na = (size_t)L->lld * (size_t)(L->nloc_a > 0 ? L->nloc_a : 1);
            size_t nbb = (size_t)L->lld * (size_t)(L->nloc_b > 0 ? L->nloc_b : 1);
            w.aloc = malloc(sizeof(double) * na);
            w.bloc = malloc(sizeof(double) * nbb);
            w.rloc = o.check ? malloc(sizeof(double) * nbb) : NULL;
            if (!w.aloc || !w.bloc || (o.check && !w.rloc))
                local = RS_ERR(RS_ERR_NOMEM, "affine solve: out of memory for the local blocks (%zu + %zu doubles)",
                               na, nbb);
        }
    }
    if ((err = rs_agree(local, comm, "the affine solve's set-up"))) {
        ws_free(&w);
        rs_affine_map_free(m);
        return err;
    }

    double lambda = o.lambda_rel * trace / dx;
    double floor = RS_AFFINE_LAMBDA_FLOOR_REL * trace / dx;
    double t_pdposv = 0.0;
    int accepted = 0, info = 0, attempt;
    double resid = NAN;
    for (attempt = 0; attempt <= o.max_retries; attempt++) {
        if (attempt > 0) lambda = lambda * 10.0 > floor ? lambda * 10.0 : floor;
        RS_TRY_GOTO(solve_once(m, &info, &resid, &t_pdposv, &w, g, &o, lambda, comm), fail);
        if (info < 0)
            RS_FAIL_GOTO(fail, RS_ERR_INTERNAL, "affine solve: PDPOSV rejected argument %d (dx=%d, dy=%d, block %d, "
                         "grid %dx%d)", -info, dx, dy, o.block, nprow, npcol);
        int finite = 1;
        if (info == 0)
            for (size_t i = 0; i < (size_t)dx * (size_t)dy && finite; i++) finite = isfinite(m->A[i]);
        if (info == 0 && finite && (!o.check || resid <= o.max_resid)) {
            accepted = 1;
            break;
        }
        if (crank != 0) continue; /* every rank agrees on the outcome; one warning per group */
        if (info > 0)
            RS_WARN("affine fit %d->%d: C_xx + lambda I not positive definite at lambda %.3e (leading minor %d); "
                    "raising lambda 10x", dx, dy, lambda, info);
        else
            RS_WARN("affine fit %d->%d: solve at lambda %.3e rejected (%s, scaled residual %.3g); raising lambda 10x",
                    dx, dy, lambda, finite ? "finite" : "non-finite solution", resid);
    }
    if (!accepted)
        RS_FAIL_GOTO(fail, RS_ERR_NUMERIC,
                     "affine fit %d->%d: no valid solve after %d retries (last lambda %.3e = %.3g x trace(C_xx)/d, "
                     "last PDPOSV info %d, scaled residual %g: %s). The calibration inputs are (nearly) "
                     "rank-deficient: raise affine.lambda_rel or affine.max_retries, or check the activations",
                     dx, dy, o.max_retries, lambda, lambda * dx / trace, info, resid,
                     info > 0 ? "not positive definite" : "the residual check rejected the solve");

    memcpy(m->mu_x, g->mu_x, sizeof(double) * (size_t)dx);
    memcpy(m->mu_y, g->mu_y, sizeof(double) * (size_t)dy);
    map_derive(m);
    m->lambda_rel = o.lambda_rel;
    m->lambda_used = lambda;
    m->retries = attempt;
    m->trace_cxx = trace;
    m->solve_resid = resid;
    m->n_tokens_calib = g->n;
    m->n_tokens_eval = 0;
    m->nprow = nprow;
    m->npcol = npcol;
    m->block = o.block;
    m->t_solve = t_pdposv;
    m->t_total = rs_now() - t_start;
    ws_free(&w);
    RS_INFO("affine fit %d->%d: %lld tokens, lambda %.3e (%d retries), grid %dx%d block %d, scaled residual %.3g, "
             "PDPOSV %.3fs", dx, dy, (long long)g->n, lambda, attempt, nprow, npcol, o.block, resid, t_pdposv);
    return RS_OK;
fail:
    ws_free(&w);
    rs_affine_map_free(m);
    return err;
}

/* =====================================================================================================
 * Passes over a data source
 * ===================================================================================================== */

/* Drain src into s (local); progress lines from the group's first rank when the size is known. */
static rs_err accumulate_source(rs_affine_stats *s, const rs_affine_source *src, int print) {
    rs_progress p;
    char label[64];
    snprintf(label, sizeof label, "affine Gram %d->%d", s->dx, s->dy);
    rs_progress_init(&p, label, (double)src->n_hint, "tok", print && src->n_hint > 0);
    for (;;) {
        const float *x = NULL, *y = NULL;
        int64_t n = 0;
        RS_TRY(src->next(src->ctx, &x, &y, &n));
        if (n <= 0) break;
        RS_TRY(rs_affine_stats_add(s, x, y, n));
        rs_progress_update(&p, (double)s->n);
    }
    rs_progress_finish(&p);
    return RS_OK;
}

rs_err rs_affine_fit(rs_affine_map *m, const rs_affine_source *calib, int dx, int dy, const rs_affine_opts *opts,
                     MPI_Comm comm) {
    rs_affine_opts o;
    if (opts) o = *opts;
    else rs_affine_opts_default(&o);
    memset(m, 0, sizeof *m);
    rs_affine_stats s;
    double t0 = rs_now();
    int crank = 0;
    RS_MPI(MPI_Comm_rank(comm, &crank));
    rs_err local = rs_affine_stats_init(&s, dx, dy, o.chunk_rows);
    if (!local) local = accumulate_source(&s, calib, crank == 0);
    rs_err err = rs_agree(local, comm, "the affine fit's accumulation");
    if (err) {
        rs_affine_stats_free(&s);
        return err;
    }
    err = rs_affine_stats_allreduce(&s, comm);
    double t_gram = rs_now() - t0;
    if (!err) err = rs_affine_solve(m, &s, &o, comm);
    rs_affine_stats_free(&s);
    if (err) return rs_err_push(err, __FILE__, __LINE__, __func__);
    m->t_gram = t_gram;
    if (o.scale_pass && calib->rewind) {
        local = calib->rewind(calib->ctx);
        if ((err = rs_agree(local, comm, "rewinding the affine calibration source"))) {
            rs_affine_map_free(m);
            return err;
        }
        err = rs_affine_scale(&m->s, NULL, calib, m, dy, comm);
        if (err) {
            rs_affine_map_free(m);
            return rs_err_push(err, __FILE__, __LINE__, __func__);
        }
    }
    return RS_OK;
}

rs_err rs_affine_residual(float *r, const rs_affine_map *m, const float *x, const float *y, int64_t n) {
    enum { ROWS = 512 };
    int dx = m->dx, dy = m->dy;
    if (n <= 0) return RS_OK;
    int64_t rows = n < ROWS ? n : ROWS;
    float *xc = malloc(sizeof(float) * (size_t)rows * (size_t)dx); /* (rows, dx) */
    RS_CHECK_ALLOC(xc);
    for (int64_t off = 0; off < n; off += ROWS) {
        int64_t b = n - off < ROWS ? n - off : ROWS;
        const float *xb = x + (size_t)off * (size_t)dx;
        const float *yb = y + (size_t)off * (size_t)dy;
        float *rb = r + (size_t)off * (size_t)dy;
        /* (v - mu_hi) is exact when v is near mu (Sterbenz), so a large mean cancels without error */
        for (int64_t i = 0; i < b; i++) {
            const float *xr = xb + (size_t)i * (size_t)dx;
            const float *yr = yb + (size_t)i * (size_t)dy;
            float *xo = xc + (size_t)i * (size_t)dx;
            float *ro = rb + (size_t)i * (size_t)dy;
            for (int j = 0; j < dx; j++) xo[j] = (xr[j] - m->mu_x_f32[j]) - m->mu_x_lo_f32[j];
            for (int j = 0; j < dy; j++) ro[j] = (yr[j] - m->mu_y_f32[j]) - m->mu_y_lo_f32[j];
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, dy, dx, -1.0f, xc, dx, m->A_f32, dx, 1.0f, rb,
                    dy);
    }
    free(xc);
    return RS_OK;
}

/* Grow a float buffer to hold n elements. */
static rs_err grow(float **buf, size_t *cap, size_t n) {
    if (n <= *cap) return RS_OK;
    float *p = realloc(*buf, sizeof(float) * n);
    RS_CHECK_ALLOC(p);
    *buf = p;
    *cap = n;
    return RS_OK;
}

/* Local: sum ||u||^2 over the source's tokens; u = y or the residual. */
static rs_err sumsq_source(double *ss, int64_t *count, const rs_affine_source *src, const rs_affine_map *m, int d) {
    float *rbuf = NULL;
    size_t cap = 0;
    rs_err err = RS_OK;
    *ss = 0.0;
    *count = 0;
    for (;;) {
        const float *x = NULL, *y = NULL;
        int64_t n = 0;
        RS_TRY_GOTO(src->next(src->ctx, &x, &y, &n), done);
        if (n <= 0) break;
        const float *u = y;
        if (m) {
            if (!x) RS_FAIL_GOTO(done, RS_ERR_INVAL, "affine scale: the source gave no x for the residual target");
            RS_TRY_GOTO(grow(&rbuf, &cap, (size_t)n * (size_t)d), done);
            RS_TRY_GOTO(rs_affine_residual(rbuf, m, x, y, n), done);
            u = rbuf;
        }
        double chunk = 0.0;
        for (size_t i = 0; i < (size_t)n * (size_t)d; i++) chunk += (double)u[i] * (double)u[i];
        *ss += chunk;
        *count += n;
    }
    if (!isfinite(*ss)) RS_FAIL_GOTO(done, RS_ERR_NUMERIC, "affine scale: the sum of squared norms is not finite");
done:
    free(rbuf);
    return err;
}

rs_err rs_affine_scale(double *s, int64_t *n_out, const rs_affine_source *src, const rs_affine_map *m, int d,
                       MPI_Comm comm) {
    if (m) d = m->dy;
    double ss = 0.0;
    int64_t cnt = 0;
    rs_err local = d >= 1 ? sumsq_source(&ss, &cnt, src, m, d) : RS_ERR(RS_ERR_INVAL, "affine scale: d=%d", d);
    RS_AGREE(local, comm, "the affine scale pass");
    double buf[2] = {ss, (double)cnt};
    RS_MPI(MPI_Allreduce(MPI_IN_PLACE, buf, 2, MPI_DOUBLE, MPI_SUM, comm));
    if (buf[1] < 1) RS_FAIL(RS_ERR_INVAL, "affine scale: no tokens in the group");
    if (!(buf[0] > 0)) RS_FAIL(RS_ERR_NUMERIC, "affine scale: the target is identically zero over %.0f tokens", buf[1]);
    *s = sqrt((double)d / (buf[0] / buf[1]));
    if (n_out) *n_out = (int64_t)buf[1];
    return RS_OK;
}

/* ---- R^2 on the eval split: per-dimension (count, mean, M2) of y, Chan-merged per chunk, and
 * sum ||r||^2 ---------------------------------------------------------------------------------------- */

rs_err rs_affine_evalacc_init(rs_affine_evalacc *a, int dy) {
    memset(a, 0, sizeof *a);
    if (dy < 1) RS_FAIL(RS_ERR_INVAL, "affine eval: dy=%d must be >= 1", dy);
    double *slab = calloc((size_t)4 * (size_t)dy, sizeof(double));
    if (!slab) RS_FAIL(RS_ERR_NOMEM, "affine eval: out of memory for dy=%d", dy);
    a->dy = dy;
    a->mu = slab;
    a->m2 = slab + dy;
    a->cm = slab + 2 * (size_t)dy;
    a->cm2 = slab + 3 * (size_t)dy;
    return RS_OK;
}

void rs_affine_evalacc_free(rs_affine_evalacc *a) {
    free(a->mu); /* the slab */
    free(a->r);
    memset(a, 0, sizeof *a);
}

rs_err rs_affine_evalacc_add(rs_affine_evalacc *a, const rs_affine_map *m, const float *x, const float *y,
                             int64_t n) {
    int dy = m->dy;
    if (dy != a->dy) RS_FAIL(RS_ERR_INVAL, "affine eval: accumulator for dy=%d given a map with dy=%d", a->dy, dy);
    if (n <= 0) return RS_OK;
    if (!x || !y) RS_FAIL(RS_ERR_INVAL, "affine eval: a chunk of %lld rows lacks x or y", (long long)n);
    RS_TRY(grow(&a->r, &a->rcap, (size_t)n * (size_t)dy));
    RS_TRY(rs_affine_residual(a->r, m, x, y, n));
    double sse = 0.0;
    for (size_t i = 0; i < (size_t)n * (size_t)dy; i++) sse += (double)a->r[i] * (double)a->r[i];
    a->sse += sse;
    double nb = (double)n, na = (double)a->n, nt = na + nb;
    for (int j = 0; j < dy; j++) a->cm[j] = a->cm2[j] = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < dy; j++) a->cm[j] += (double)y[(size_t)i * (size_t)dy + (size_t)j];
    for (int j = 0; j < dy; j++) a->cm[j] /= nb;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < dy; j++) {
            double v = (double)y[(size_t)i * (size_t)dy + (size_t)j] - a->cm[j];
            a->cm2[j] += v * v;
        }
    for (int j = 0; j < dy; j++) {
        double dlt = a->cm[j] - a->mu[j];
        a->m2[j] += a->cm2[j] + dlt * dlt * na * nb / nt;
        a->mu[j] += dlt * nb / nt;
    }
    a->n += n;
    return RS_OK;
}

rs_err rs_affine_evalacc_finish(rs_affine_map *m, rs_affine_evalacc *a, MPI_Comm comm) {
    int dy = a->dy;
    /* counts and means first, then each rank's M2 moved to the global mean, then the sums */
    int64_t n_all = 0;
    RS_MPI(MPI_Allreduce(&a->n, &n_all, 1, MPI_INT64_T, MPI_SUM, comm));
    if (n_all < 1) RS_FAIL(RS_ERR_INVAL, "affine eval: no eval tokens in the group (check the eval split)");
    double frac = (double)a->n / (double)n_all;
    for (int j = 0; j < dy; j++) a->cm[j] = a->mu[j] * frac;
    RS_TRY(allreduce_sum_d(a->cm, (size_t)dy, comm));
    double sums[2] = {0.0, a->sse};
    for (int j = 0; j < dy; j++) {
        double dlt = a->mu[j] - a->cm[j];
        sums[0] += a->m2[j] + (double)a->n * dlt * dlt;
    }
    RS_MPI(MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, comm));
    if (!(sums[0] > 0))
        RS_FAIL(RS_ERR_NUMERIC, "affine eval: y has zero variance over %lld eval tokens; R^2 is undefined",
                (long long)n_all);
    m->r2 = 1.0 - sums[1] / sums[0];
    m->n_tokens_eval = n_all;
    return RS_OK;
}

rs_err rs_affine_eval(rs_affine_map *m, const rs_affine_source *eval, MPI_Comm comm) {
    rs_affine_evalacc a;
    rs_err local = rs_affine_evalacc_init(&a, m->dy);
    while (!local) {
        const float *x = NULL, *y = NULL;
        int64_t n = 0;
        local = eval->next(eval->ctx, &x, &y, &n);
        if (local || n <= 0) break;
        local = rs_affine_evalacc_add(&a, m, x, y, n);
    }
    rs_err err = rs_agree(local, comm, "the affine evaluation");
    if (err) {
        rs_affine_evalacc_free(&a);
        return err;
    }
    err = rs_affine_evalacc_finish(m, &a, comm);
    rs_affine_evalacc_free(&a);
    return err;
}
