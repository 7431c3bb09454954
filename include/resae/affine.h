/* Affine maps between residual-stream layers (METHOD.md §2-§3), fitted across a worker group.
 *
 *     (A, c) = argmin sum_t ||y(t) - A x(t) - c||^2 + lambda ||A||_F^2,   x in R^dx, y in R^dy
 *
 * solved through the centered normal equations in double precision:
 *     (C_xx + lambda I) A^T = C_xy,  c = mu_y - A mu_x,  lambda = lambda_rel * trace(C_xx) / dx.
 *
 * Flow (every rank of the group `comm` holds a shard of the calibration tokens):
 *   1. rs_affine_stats_add per chunk (local): chunk mean and centered co-moments with DSYRK/DGEMM,
 *      merged into the running (count, mean, co-moment) with Chan et al.'s pairwise update.
 *   2. rs_affine_stats_allreduce (collective): reduce counts and means first, move each rank's
 *      co-moment to the global mean, then sum. X^T X - n mu mu^T is never formed.
 *   3. rs_affine_solve (collective): (C_xx + lambda I) laid out block-cyclically on a near-square
 *      BLACS grid built on `comm`, PDPOSV, the solution checked by its scaled residual. On a
 *      non-positive-definite matrix (or a rejected solve) lambda is raised 10x (from 0 to
 *      1e-12 trace(C_xx)/dx) and the solve retried, up to max_retries times, else RS_ERR_NUMERIC.
 *      A and c are gathered to every rank of `comm` (bitwise identical everywhere).
 *   rs_affine_fit does 1-3 over a data source (plus the residual scale pass); rs_affine_eval gives
 *   R^2 on the eval split; rs_affine_residual computes r = y - A x - c for the resae SAE input.
 *
 * The same functions fit any (a, b) layer pair, dx == dy or not (the cross-layer regression study
 * is many fits). Matrices are row-major unless stated. */
#ifndef RESAE_AFFINE_H
#define RESAE_AFFINE_H

#include <mpi.h>
#include <stdint.h>

#include "resae/err.h"

/* ---- options ------------------------------------------------------------------------------------ */
typedef struct rs_affine_opts {
    double lambda_rel; /* ridge strength relative to trace(C_xx)/dx (default 1e-4; 0 allowed) */
    int block;         /* square ScaLAPACK block size MB = NB (default 64) */
    int max_retries;   /* times lambda may be raised 10x after a failed solve (default 8) */
    int max_procs;     /* use at most this many ranks of comm for the grid (0 = all) */
    int chunk_rows;    /* rows per DSYRK/DGEMM update in the accumulation (default 1024) */
    int check;         /* verify each solve by its scaled residual (default 1) */
    double max_resid;  /* accept a solve when ||(C+lambda I)X - B||_F / (||C+lambda I||_F ||X||_F eps dx)
                          is below this (default 100; a backward-stable solve gives O(1)) */
    int scale_pass;    /* rs_affine_fit: second pass over the calibration source for s (default 1;
                          needs source->rewind) */
} rs_affine_opts;

void rs_affine_opts_default(rs_affine_opts *o);

/* ---- data source ---------------------------------------------------------------------------------- */
/* Chunks of paired rows, the calling rank's shard only. next() returns the next chunk: x (n, dx),
 * y (n, dy) as float32 rows, valid until the next call; n = 0 marks the end. x may be NULL when only
 * y is needed (rs_affine_scale with no map). rewind() restarts from the first chunk (NULL if the
 * source cannot: then no second pass is possible). */
typedef struct rs_affine_source {
    void *ctx;
    rs_err (*next)(void *ctx, const float **x, const float **y, int64_t *n);
    rs_err (*rewind)(void *ctx);
    int64_t n_hint; /* tokens this rank will deliver, for progress lines (0 = unknown: no progress) */
} rs_affine_source;

/* ---- moment accumulator ----------------------------------------------------------------------------- */
typedef struct rs_affine_stats {
    int dx, dy;
    int chunk_rows;
    int64_t n;    /* tokens accumulated */
    int reduced;  /* 1 after rs_affine_stats_allreduce: these are the group's statistics */
    double *mu_x; /* (dx) */
    double *mu_y; /* (dy) */
    double *cxx;  /* (dx, dx) co-moment sum (x-mu_x)(x-mu_x)^T; upper triangle only (j >= i) */
    double *cxy;  /* (dx, dy) co-moment sum (x-mu_x)(y-mu_y)^T */
    double *xc;   /* (chunk_rows+1, dx) scratch: centered chunk plus the merge row */
    double *yc;   /* (chunk_rows+1, dy) scratch */
    double *tmp;  /* (dx + dy) scratch: chunk means */
    void *slab;   /* the one allocation behind every pointer above */
} rs_affine_stats;

/* chunk_rows <= 0 takes the default (1024). */
rs_err rs_affine_stats_init(rs_affine_stats *s, int dx, int dy, int chunk_rows);
void rs_affine_stats_free(rs_affine_stats *s);
void rs_affine_stats_reset(rs_affine_stats *s);
/* Local: merge n rows, x (n, dx), y (n, dy). Fails on non-finite input (naming the row). */
rs_err rs_affine_stats_add(rs_affine_stats *s, const float *x, const float *y, int64_t n);
/* Local: merge b into a (same shapes). */
rs_err rs_affine_stats_merge(rs_affine_stats *a, const rs_affine_stats *b);
/* Collective over comm: afterwards every rank holds the group's global statistics (reduced = 1;
 * adding to or reducing them again is refused, rs_affine_stats_reset starts over). */
rs_err rs_affine_stats_allreduce(rs_affine_stats *s, MPI_Comm comm);

/* ---- the fitted map ---------------------------------------------------------------------------------- */
typedef struct rs_affine_map {
    int dx, dy;
    double *A;      /* (dy, dx) */
    double *c;      /* (dy) c = mu_y - A mu_x */
    double *mu_x;   /* (dx) calibration means */
    double *mu_y;   /* (dy) */
    float *A_f32;   /* (dy, dx) float copies for the SGEMM residual */
    float *mu_x_f32; /* (dx) */
    float *mu_y_f32; /* (dy) */
    float *mu_x_lo_f32, *mu_y_lo_f32; /* (dx), (dy): mu - (double)mu_f32, the part float drops */
    double lambda_rel;   /* as requested */
    double lambda_used;  /* the ridge of the accepted solve */
    int retries;         /* failed solves before it (lambda raised 10x each time) */
    double trace_cxx;    /* trace(C_xx) over the calibration tokens */
    double solve_resid;  /* scaled residual of the accepted solve (NaN if not checked) */
    int64_t n_tokens_calib;
    double r2;           /* R^2 on the eval split (NaN until rs_affine_eval) */
    int64_t n_tokens_eval;
    double s;            /* residual scale sqrt(dy / E_calib ||y - A x - c||^2) (NaN until computed) */
    int nprow, npcol, block; /* the grid and block size used */
    double t_gram, t_solve, t_total; /* seconds: accumulation, PDPOSV (all attempts), whole solve */
    void *slab;
} rs_affine_map;

void rs_affine_map_free(rs_affine_map *m);
/* Rebuild a map from stored A (dy, dx) and calibration means (c and the float copies are derived);
 * the other fields are left for the caller. */
rs_err rs_affine_map_set(rs_affine_map *m, int dx, int dy, const double *A, const double *mu_x, const double *mu_y);

/* Collective over comm. g: global statistics (after rs_affine_stats_allreduce), identical on every
 * rank. Fills m on every rank of comm. RS_ERR_NUMERIC if no accepted solve within max_retries. */
rs_err rs_affine_solve(rs_affine_map *m, const rs_affine_stats *g, const rs_affine_opts *o, MPI_Comm comm);

/* Collective: accumulate the calibration source, reduce, solve; then (scale_pass and src->rewind)
 * a second pass for m->s. */
rs_err rs_affine_fit(rs_affine_map *m, const rs_affine_source *calib, int dx, int dy, const rs_affine_opts *o,
                     MPI_Comm comm);

/* Collective: m->r2 = 1 - sum ||y - A x - c||^2 / sum ||y - mu_y||^2 over the eval source
 * (mu_y the eval mean; both sums reduced across comm), m->n_tokens_eval. */
rs_err rs_affine_eval(rs_affine_map *m, const rs_affine_source *eval, MPI_Comm comm);

/* The same R^2 one chunk at a time, for a caller that feeds several maps from one pass over the data:
 * init, add (local) per chunk, finish (collective over comm: sets m->r2, m->n_tokens_eval), free. */
typedef struct rs_affine_evalacc {
    int dy;
    int64_t n;
    double sse;                 /* sum ||y - A x - c||^2 */
    double *mu, *m2, *cm, *cm2; /* (dy) each: mean and M2 of y, chunk scratch (one allocation at mu) */
    float *r;                   /* residual buffer, grown as needed */
    size_t rcap;
} rs_affine_evalacc;

rs_err rs_affine_evalacc_init(rs_affine_evalacc *a, int dy);
void rs_affine_evalacc_free(rs_affine_evalacc *a);
rs_err rs_affine_evalacc_add(rs_affine_evalacc *a, const rs_affine_map *m, const float *x, const float *y,
                             int64_t n);
rs_err rs_affine_evalacc_finish(rs_affine_map *m, rs_affine_evalacc *a, MPI_Comm comm);

/* Collective: s = sqrt(d / E ||u||^2) over the source's tokens in comm, with u = y (raw target,
 * m == NULL, d = dy of the source given as `d`) or u = y - A x - c (resae target, m given, d = m->dy).
 * n_out (may be NULL) receives the token count. */
rs_err rs_affine_scale(double *s, int64_t *n_out, const rs_affine_source *src, const rs_affine_map *m, int d,
                       MPI_Comm comm);

/* Local: r (n, dy) = y - A x - c, computed as (y - mu_y) - A_f32 (x - mu_x) with SGEMM (the same
 * map, centered first so a large mean offset does not cancel in float). r may equal y. */
rs_err rs_affine_residual(float *r, const rs_affine_map *m, const float *x, const float *y, int64_t n);

#endif
