/* Distributed affine-map fit against independent references.
 *
 * usage: test_affine CASE   (mpirun at 1, 2, 4 ranks)
 *   serial    synthetic shards; rank 0 solves the whole problem serially (two-pass double moments,
 *             LAPACK dposv_): A, c relative difference <= 1e-10, scaled residual < 10; R^2 and s against
 *             a double brute-force pass
 *   numpy     the committed fixture of tests/reference/affine_ref.py (float64 numpy from the published
 *             definitions): A, c within 1e-10 relative, R^2 within 1e-6, s within 1e-5 relative
 *   retry     x with a zero and a duplicated column, lambda_rel = 0: Cholesky fails, lambda is raised
 *             (retries > 0) and the accepted solve matches dposv_ at lambda_used; with max_retries = 0
 *             the fit fails with RS_ERR_NUMERIC on every rank
 *   identity  y = x + small noise: ||A - I||_F small, R^2 close to 1
 *   offset    data with a 1e4 mean offset (exact in float) gives the same A, R^2 and s as zero-mean data
 *   subcomm   the world split in two groups solving different problems concurrently, both correct
 *   edge      more ranks than blocks, d not a multiple of the block, a rank with zero tokens,
 *             ranks outside the grid (max_procs)
 * Every case also checks that every rank of a group holds bitwise the same A. */
#include <math.h>
#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/affine.h"
#include "resae/blacs.h"
#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/util.h"

#include "testlib.h"



/* =====================================================================================================
 * Synthetic data: row t is a pure function of (seed, t), so any rank can generate any shard
 * ===================================================================================================== */

static uint64_t splitmix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double unif(uint64_t seed, uint64_t a, uint64_t b) { /* (0, 1) */
    uint64_t h = splitmix(seed ^ splitmix(a * 0x100000001b3ULL + b));
    return ((double)(h >> 11) + 0.5) / 9007199254740992.0;
}
static double gauss(uint64_t seed, uint64_t a, uint64_t b) {
    double u1 = unif(seed, a, 2 * b), u2 = unif(seed, a, 2 * b + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

enum syn_kind { SYN_GENERAL, SYN_IDENTITY, SYN_GRID, SYN_DEFICIENT };

typedef struct synth {
    int dx, dy, kind;
    uint64_t seed;
    double offset, noise;
    double *mix;  /* (dx, dx) */
    double *w;    /* (dy, dx) */
    double *bias; /* (dy) */
    double *mean; /* (dx) */
} synth;

static void synth_init(synth *s, int kind, int dx, int dy, uint64_t seed, double offset, double noise) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->dx = dx;
    s->dy = dy;
    s->seed = seed;
    s->offset = offset;
    s->noise = noise;
    s->mix = calloc((size_t)dx * dx, sizeof(double));
    s->w = calloc((size_t)dy * dx, sizeof(double));
    s->bias = calloc((size_t)dy, sizeof(double));
    s->mean = calloc((size_t)dx, sizeof(double));
    uint64_t ps = splitmix(seed + 17);
    for (int i = 0; i < dx; i++)
        for (int j = 0; j < dx; j++) s->mix[i * dx + j] = (i == j) + 0.5 * gauss(ps, 1000000 + i, j) / sqrt(dx);
    for (int i = 0; i < dy; i++)
        for (int j = 0; j < dx; j++) s->w[i * dx + j] = gauss(ps, 2000000 + i, j) / sqrt(dx);
    for (int i = 0; i < dy; i++) s->bias[i] = 2.0 * gauss(ps, 3000000, i);
    for (int j = 0; j < dx; j++) s->mean[j] = 3.0 * gauss(ps, 4000000, j);
}

static void synth_free(synth *s) {
    free(s->mix);
    free(s->w);
    free(s->bias);
    free(s->mean);
}

/* x (dx), y (dy) of token t */
static void synth_row(const synth *s, int64_t t, float *x, float *y) {
    int dx = s->dx, dy = s->dy;
    double z[512], xd[512] = {0};
    for (int j = 0; j < dx; j++) z[j] = gauss(s->seed, (uint64_t)t, (uint64_t)j);
    switch (s->kind) {
    case SYN_IDENTITY:
        for (int j = 0; j < dx; j++) x[j] = (float)(s->offset + z[j]);
        for (int j = 0; j < dy; j++) y[j] = (float)((double)x[j] + s->noise * gauss(s->seed, (uint64_t)t, 1000 + j));
        return;
    case SYN_GRID: {
        /* values on a 2^-8 grid within +-8: with an offset of 1e4 they stay exact in float */
        for (int j = 0; j < dx; j++) {
            double v = 0.0;
            for (int k = 0; k <= j && k < 4; k++) v += z[j - k] * (k == 0 ? 1.0 : 0.3);
            v = fmax(-7.9, fmin(7.9, v));
            xd[j] = round(v * 256.0) / 256.0;
            x[j] = (float)(s->offset + xd[j]);
        }
        for (int i = 0; i < dy; i++) {
            double v = s->noise * gauss(s->seed, (uint64_t)t, 1000 + i);
            for (int j = 0; j < dx; j++) v += 0.3 * s->w[i * dx + j] * xd[j];
            v = fmax(-7.9, fmin(7.9, v));
            y[i] = (float)(s->offset + round(v * 256.0) / 256.0);
        }
        return;
    }
    default:
        break;
    }
    for (int i = 0; i < dx; i++) {
        double v = s->mean[i];
        for (int j = 0; j < dx; j++) v += s->mix[i * dx + j] * z[j];
        xd[i] = v + s->offset;
    }
    if (s->kind == SYN_DEFICIENT) {
        xd[0] = 0.0;     /* a zero column */
        xd[2] = xd[1];   /* a duplicated column */
    }
    for (int i = 0; i < dx; i++) x[i] = (float)xd[i];
    for (int i = 0; i < dy; i++) {
        double v = s->bias[i] + s->noise * gauss(s->seed, (uint64_t)t, 1000 + i);
        for (int j = 0; j < dx; j++) v += s->w[i * dx + j] * (double)x[j];
        y[i] = (float)v;
    }
}

/* Materialize tokens [t0, t1): x (n, dx), y (n, dy). */
static void synth_rows(const synth *s, int64_t t0, int64_t t1, float **x, float **y) {
    size_t n = (size_t)(t1 - t0);
    *x = malloc(sizeof(float) * (n ? n : 1) * (size_t)s->dx);
    *y = malloc(sizeof(float) * (n ? n : 1) * (size_t)s->dy);
    for (int64_t t = t0; t < t1; t++)
        synth_row(s, t, *x + (size_t)(t - t0) * s->dx, *y + (size_t)(t - t0) * s->dy);
}

/* =====================================================================================================
 * A source over in-memory rows, served in irregular chunk sizes
 * ===================================================================================================== */

typedef struct mem_src {
    const float *x, *y;
    int dx, dy;
    int64_t n, pos;
    int k;
} mem_src;

static rs_err mem_next(void *ctx, const float **x, const float **y, int64_t *n) {
    mem_src *m = ctx;
    int64_t want = 1 + (int64_t)((m->k++ * 7919 + 13) % 389); /* 1..389 rows */
    int64_t left = m->n - m->pos;
    *n = want < left ? want : left;
    *x = m->x ? m->x + (size_t)m->pos * m->dx : NULL;
    *y = m->y + (size_t)m->pos * m->dy;
    m->pos += *n;
    return RS_OK;
}

static rs_err mem_rewind(void *ctx) {
    mem_src *m = ctx;
    m->pos = 0;
    m->k = 0;
    return RS_OK;
}

static rs_affine_source mem_source(mem_src *m, const float *x, const float *y, int dx, int dy, int64_t n) {
    memset(m, 0, sizeof *m);
    m->x = x;
    m->y = y;
    m->dx = dx;
    m->dy = dy;
    m->n = n;
    rs_affine_source s = {m, mem_next, mem_rewind, n};
    return s;
}

/* =====================================================================================================
 * Serial references (double, two-pass, plain loops) on the full data
 * ===================================================================================================== */

typedef struct ref {
    int dx, dy;
    double lambda;
    double *cxx; /* (dx, dx) full */
    double *cxy; /* (dx, dy) */
    double *mu_x, *mu_y;
    double *A; /* (dy, dx) */
    double *c; /* (dy) */
} ref;

static void ref_free(ref *r) {
    free(r->cxx);
    free(r->cxy);
    free(r->mu_x);
    free(r->mu_y);
    free(r->A);
    free(r->c);
}

/* Moments of x (n, dx), y (n, dy); lambda = lambda_rel * trace/dx unless lambda_abs >= 0. */
static void ref_moments(ref *r, const float *x, const float *y, int64_t n, int dx, int dy) {
    memset(r, 0, sizeof *r);
    r->dx = dx;
    r->dy = dy;
    r->mu_x = calloc(dx, sizeof(double));
    r->mu_y = calloc(dy, sizeof(double));
    r->cxx = calloc((size_t)dx * dx, sizeof(double));
    r->cxy = calloc((size_t)dx * dy, sizeof(double));
    r->A = calloc((size_t)dx * dy, sizeof(double));
    r->c = calloc(dy, sizeof(double));
    for (int64_t t = 0; t < n; t++) {
        for (int j = 0; j < dx; j++) r->mu_x[j] += x[t * dx + j];
        for (int j = 0; j < dy; j++) r->mu_y[j] += y[t * dy + j];
    }
    for (int j = 0; j < dx; j++) r->mu_x[j] /= (double)n;
    for (int j = 0; j < dy; j++) r->mu_y[j] /= (double)n;
    double *xc = malloc(sizeof(double) * dx), *yc = malloc(sizeof(double) * dy);
    for (int64_t t = 0; t < n; t++) {
        for (int j = 0; j < dx; j++) xc[j] = x[t * dx + j] - r->mu_x[j];
        for (int j = 0; j < dy; j++) yc[j] = y[t * dy + j] - r->mu_y[j];
        for (int i = 0; i < dx; i++) {
            for (int j = 0; j < dx; j++) r->cxx[i * dx + j] += xc[i] * xc[j];
            for (int j = 0; j < dy; j++) r->cxy[i * dy + j] += xc[i] * yc[j];
        }
    }
    free(xc);
    free(yc);
}

static double ref_trace(const ref *r) {
    double t = 0;
    for (int i = 0; i < r->dx; i++) t += r->cxx[i * r->dx + i];
    return t;
}

/* Solve with LAPACK dposv_ at lambda; returns info. */
static int ref_solve(ref *r, double lambda) {
    int dx = r->dx, dy = r->dy, info = 0;
    r->lambda = lambda;
    double *a = malloc(sizeof(double) * dx * dx), *b = malloc(sizeof(double) * dx * dy);
    for (int i = 0; i < dx; i++)
        for (int j = 0; j < dx; j++) a[i + j * dx] = r->cxx[i * dx + j] + (i == j ? lambda : 0.0);
    for (int i = 0; i < dx; i++)
        for (int j = 0; j < dy; j++) b[i + j * dx] = r->cxy[i * dy + j];
    dposv_("U", &dx, &dy, a, &dx, b, &dx, &info, 1);
    for (int i = 0; i < dx; i++)
        for (int j = 0; j < dy; j++) r->A[j * dx + i] = b[i + j * dx];
    for (int i = 0; i < dy; i++) {
        double acc = r->mu_y[i];
        for (int j = 0; j < dx; j++) acc -= r->A[i * dx + j] * r->mu_x[j];
        r->c[i] = acc;
    }
    free(a);
    free(b);
    return info;
}

/* ||a - b|| / ||b|| */
static double rel_diff(const double *a, const double *b, size_t n) { return rs_check_diff_dd(a, b, n).rel_l2; }

/* ||(C + lambda I) X - B||_inf / (||X||_inf ||C + lambda I||_inf eps dx), X = A^T, with the reference C. */
static double scaled_residual(const ref *r, const double *A, double lambda) {
    int dx = r->dx, dy = r->dy;
    double rn = 0, an = 0, xn = 0;
    for (int i = 0; i < dx; i++) {
        double rowr = 0, rowa = 0, rowx = 0;
        for (int j = 0; j < dy; j++) {
            double v = -r->cxy[i * dy + j];
            for (int k = 0; k < dx; k++) v += (r->cxx[i * dx + k] + (i == k ? lambda : 0.0)) * A[j * dx + k];
            rowr += fabs(v);
            rowx += fabs(A[j * dx + i]);
        }
        for (int k = 0; k < dx; k++) rowa += fabs(r->cxx[i * dx + k] + (i == k ? lambda : 0.0));
        rn = fmax(rn, rowr);
        an = fmax(an, rowa);
        xn = fmax(xn, rowx);
    }
    return rn / (xn * an * DBL_EPSILON * dx);
}

/* R^2 and s from the full data in double with a double map. */
static void ref_r2_s(double *r2, double *s, const double *A, const double *c, int dx, int dy, const float *xe,
                     const float *ye, int64_t ne, const float *xc, const float *yc, int64_t nc) {
    double *mu = calloc(dy, sizeof(double));
    for (int64_t t = 0; t < ne; t++)
        for (int j = 0; j < dy; j++) mu[j] += ye[t * dy + j];
    for (int j = 0; j < dy; j++) mu[j] /= (double)ne;
    double sse = 0, sst = 0;
    for (int64_t t = 0; t < ne; t++)
        for (int i = 0; i < dy; i++) {
            double v = ye[t * dy + i] - c[i];
            for (int j = 0; j < dx; j++) v -= A[i * dx + j] * xe[t * dx + j];
            sse += v * v;
            sst += (ye[t * dy + i] - mu[i]) * (ye[t * dy + i] - mu[i]);
        }
    *r2 = 1 - sse / sst;
    double ss = 0;
    for (int64_t t = 0; t < nc; t++)
        for (int i = 0; i < dy; i++) {
            double v = yc[t * dy + i] - c[i];
            for (int j = 0; j < dx; j++) v -= A[i * dx + j] * xc[t * dx + j];
            ss += v * v;
        }
    *s = sqrt(dy / (ss / (double)nc));
    free(mu);
}

/* Every rank of comm holds bitwise the same A and c. */
static void check_replicated(const rs_affine_map *m, MPI_Comm comm) {
    uint64_t h = rs_hash64(RS_HASH64_INIT, m->A, sizeof(double) * m->dx * m->dy);
    h = rs_hash64(h, m->c, sizeof(double) * m->dy);
    uint64_t lo = 0, hi = 0;
    MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, comm);
    MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, comm);
    CHECK(lo == hi, "A/c differ between ranks of the group");
}

/* This rank's share [t0, t1) of n tokens split over size ranks; `skew` makes the shares uneven. */
static void shard(int64_t *t0, int64_t *t1, int64_t n, int rank, int size) {
    /* weights 1, 2, 3, ... so the shards differ in size */
    int64_t wsum = (int64_t)size * (size + 1) / 2, acc = 0;
    for (int r = 0; r < rank; r++) acc += r + 1;
    *t0 = n * acc / wsum;
    *t1 = n * (acc + rank + 1) / wsum;
}

/* =====================================================================================================
 * Cases
 * ===================================================================================================== */

/* Fit a synthetic problem over comm (calibration tokens [0, n), eval tokens [n, n + ne)) and compare
 * with the serial reference on rank 0 of comm. */
static void fit_and_compare(const char *name, const synth *syn, int64_t n, int64_t ne, const rs_affine_opts *o,
                            MPI_Comm comm, int zero_last_rank) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int dx = syn->dx, dy = syn->dy;
    int64_t t0, t1, e0, e1;
    int nsh = zero_last_rank && size > 1 ? size - 1 : size;
    if (rank < nsh) {
        shard(&t0, &t1, n, rank, nsh);
        shard(&e0, &e1, ne, rank, nsh);
    } else {
        t0 = t1 = n;
        e0 = e1 = ne;
    }
    float *x, *y, *xe, *ye;
    synth_rows(syn, t0, t1, &x, &y);
    synth_rows(syn, n + e0, n + e1, &xe, &ye);
    mem_src ms, me;
    rs_affine_source src = mem_source(&ms, x, y, dx, dy, t1 - t0);
    rs_affine_source esrc = mem_source(&me, xe, ye, dx, dy, e1 - e0);
    rs_affine_map m;
    rs_err e = rs_affine_fit(&m, &src, dx, dy, o, comm);
    CHECK(e == RS_OK, "%s: fit failed: %s", name, rs_err_msg());
    if (e) goto out;
    e = rs_affine_eval(&m, &esrc, comm);
    CHECK(e == RS_OK, "%s: eval failed: %s", name, rs_err_msg());
    check_replicated(&m, comm);
    CHECK(m.n_tokens_calib == n && m.n_tokens_eval == ne, "%s: token counts %lld/%lld, want %lld/%lld", name,
          (long long)m.n_tokens_calib, (long long)m.n_tokens_eval, (long long)n, (long long)ne);
    if (rank == 0) {
        float *fx, *fy, *fxe, *fye;
        synth_rows(syn, 0, n, &fx, &fy);
        synth_rows(syn, n, n + ne, &fxe, &fye);
        ref r;
        ref_moments(&r, fx, fy, n, dx, dy);
        double lam = o->lambda_rel * ref_trace(&r) / dx;
        int info = ref_solve(&r, lam);
        CHECK(info == 0, "%s: reference dposv info %d", name, info);
        double dA = rel_diff(m.A, r.A, (size_t)dx * dy), dc = rel_diff(m.c, r.c, dy);
        double res = scaled_residual(&r, m.A, m.lambda_used);
        double r2, s;
        ref_r2_s(&r2, &s, r.A, r.c, dx, dy, fxe, fye, ne, fx, fy, n);
        printf("%s: dx=%d dy=%d n=%lld grid %dx%d block %d: |dA|/|A| %.2e |dc|/|c| %.2e lambda %.6e (ref %.6e) "
               "scaled residual %.3f (internal %.3f) R2 %.8f (ref %.8f) s %.6f (ref %.6f)\n",
               name, dx, dy, (long long)n, m.nprow, m.npcol, m.block, dA, dc, m.lambda_used, lam, res,
               m.solve_resid, m.r2, r2, m.s, s);
        CHECK(m.retries == 0, "%s: %d retries on a well-posed problem", name, m.retries);
        CHECK(fabs(m.lambda_used - lam) <= 1e-12 * lam, "%s: lambda %.17g vs %.17g", name, m.lambda_used, lam);
        CHECK(dA <= 1e-10, "%s: A relative difference %.3e > 1e-10", name, dA);
        CHECK(dc <= 1e-10, "%s: c relative difference %.3e > 1e-10", name, dc);
        CHECK(res < 10, "%s: scaled residual %.3f >= 10", name, res);
        CHECK(fabs(m.r2 - r2) <= 1e-6, "%s: R2 %.10f vs %.10f", name, m.r2, r2);
        CHECK(fabs(m.s - s) <= 1e-5 * s, "%s: s %.10f vs %.10f", name, m.s, s);
        ref_free(&r);
        free(fx);
        free(fy);
        free(fxe);
        free(fye);
    }
    rs_affine_map_free(&m);
out:
    free(x);
    free(y);
    free(xe);
    free(ye);
}

/* Local: accumulating in one stream equals two halves merged (Chan), and matches the two-pass
 * reference moments; the residual helper (in place too) matches a double computation. */
static void check_local_pieces(void) {
    synth syn;
    int dx = 30, dy = 18;
    int64_t n = 777;
    synth_init(&syn, SYN_GENERAL, dx, dy, 44 + (uint64_t)rs_check_rank, 50.0, 0.3);
    float *x, *y;
    synth_rows(&syn, 0, n, &x, &y);
    rs_affine_stats all, a, b;
    rs_err e = rs_affine_stats_init(&all, dx, dy, 50);
    e |= rs_affine_stats_init(&a, dx, dy, 64);
    e |= rs_affine_stats_init(&b, dx, dy, 0);
    CHECK(e == RS_OK, "stats init: %s", rs_err_msg());
    e = rs_affine_stats_add(&all, x, y, n);
    e |= rs_affine_stats_add(&a, x, y, 300);
    e |= rs_affine_stats_add(&b, x + 300 * dx, y + 300 * dy, n - 300);
    e |= rs_affine_stats_merge(&a, &b);
    CHECK(e == RS_OK, "stats add/merge: %s", rs_err_msg());
    ref r;
    ref_moments(&r, x, y, n, dx, dy);
    double *up = calloc((size_t)dx * dx, sizeof(double)); /* reference upper triangle */
    for (int i = 0; i < dx; i++)
        for (int j = i; j < dx; j++) up[i * dx + j] = r.cxx[i * dx + j];
    double e1 = rel_diff(all.cxx, up, (size_t)dx * dx), e2 = rel_diff(a.cxx, up, (size_t)dx * dx);
    double e3 = rel_diff(all.cxy, r.cxy, (size_t)dx * dy), e4 = rel_diff(a.cxy, r.cxy, (size_t)dx * dy);
    double e5 = rel_diff(a.mu_x, r.mu_x, dx), e6 = rel_diff(all.mu_y, r.mu_y, dy);
    CHECK(all.n == n && a.n == n, "stats counts %lld %lld", (long long)all.n, (long long)a.n);
    CHECK(e1 <= 1e-12 && e2 <= 1e-12 && e3 <= 1e-12 && e4 <= 1e-12 && e5 <= 1e-14 && e6 <= 1e-14,
          "local moments differ from two-pass reference: %.2e %.2e %.2e %.2e %.2e %.2e", e1, e2, e3, e4, e5, e6);
    /* statistics of a group are final: a second reduction or more rows are refused */
    e = rs_affine_stats_allreduce(&all, MPI_COMM_SELF);
    CHECK(e == RS_OK && all.reduced == 1 && all.n == n, "stats allreduce over one rank: %d", e);
    double e7 = rel_diff(all.cxx, up, (size_t)dx * dx), e8 = rel_diff(all.cxy, r.cxy, (size_t)dx * dy);
    CHECK(e7 <= 1e-12 && e8 <= 1e-12, "moments changed by a one-rank allreduce: %.2e %.2e", e7, e8);
    e = rs_affine_stats_allreduce(&all, MPI_COMM_SELF);
    CHECK(e == RS_ERR_INVAL, "a second allreduce was accepted");
    e = rs_affine_stats_add(&all, x, y, 1);
    CHECK(e == RS_ERR_INVAL, "adding to reduced statistics was accepted");
    /* residual helper against double arithmetic with the same (double) map */
    rs_affine_map m;
    rs_affine_opts o;
    rs_affine_opts_default(&o);
    e = rs_affine_solve(&m, &all, &o, MPI_COMM_SELF);
    CHECK(e == RS_OK, "local solve: %s", rs_err_msg());
    if (!e) {
        float *rr = malloc(sizeof(float) * n * dy), *yy = malloc(sizeof(float) * n * dy);
        memcpy(yy, y, sizeof(float) * n * dy);
        rs_affine_residual(rr, &m, x, y, n);
        rs_affine_residual(yy, &m, x, yy, n); /* in place */
        double num = 0, den = 0;
        int same = !memcmp(rr, yy, sizeof(float) * n * dy);
        for (int64_t t = 0; t < n; t++)
            for (int i = 0; i < dy; i++) {
                double v = (double)y[t * dy + i] - m.c[i];
                for (int j = 0; j < dx; j++) v -= m.A[i * dx + j] * (double)x[t * dx + j];
                num += (rr[t * dy + i] - v) * (rr[t * dy + i] - v);
                den += v * v;
            }
        CHECK(same, "in-place residual differs");
        CHECK(sqrt(num / den) < 1e-5, "residual vs double: relative %.3e", sqrt(num / den));
        if (rs_check_rank == 0) printf("local: moments vs two-pass %.1e..%.1e, merge %.1e, residual vs double %.2e\n",
                                fmin(e1, e3), fmax(e1, e3), fmax(e2, e4), sqrt(num / den));
        free(rr);
        free(yy);
        rs_affine_map_free(&m);
    }
    free(up);
    ref_free(&r);
    rs_affine_stats_free(&all);
    rs_affine_stats_free(&a);
    rs_affine_stats_free(&b);
    free(x);
    free(y);
    synth_free(&syn);
}

static void case_serial(void) {
    check_local_pieces();
    synth syn;
    synth_init(&syn, SYN_GENERAL, 70, 50, 11, 0.0, 0.3);
    rs_affine_opts o;
    rs_affine_opts_default(&o);
    o.block = 16;      /* 70 = 4 x 16 + 6 */
    o.chunk_rows = 64; /* many merges */
    fit_and_compare("serial", &syn, 2500, 700, &o, MPI_COMM_WORLD, 0);
    /* default block and chunk size, square map */
    synth_free(&syn);
    synth_init(&syn, SYN_GENERAL, 96, 96, 12, 0.0, 0.3);
    rs_affine_opts_default(&o);
    o.block = 32;
    fit_and_compare("serial-square", &syn, 3000, 500, &o, MPI_COMM_WORLD, 0);
    synth_free(&syn);
}

/* ---- numpy fixture -------------------------------------------------------------------------------- */
typedef struct fixture {
    int dx, dy, nc, ne;
    double lambda_rel, lambda, r2, s_resae, s_raw;
    float *xc, *yc, *xe, *ye;
    double *A, *c, *mu_x, *mu_y;
    char *buf;
} fixture;

static int fixture_load(fixture *f, const char *path) {
    memset(f, 0, sizeof *f);
    size_t len = 0;
    if (rs_read_file(&f->buf, &len, path, 64u << 20)) {
        fprintf(stderr, "cannot read %s: %s (regenerate with tests/reference/affine_ref.py)\n", path, rs_err_msg());
        return -1;
    }
    uint32_t hdr[5];
    if (len < 36 || memcmp(f->buf, "RSAFFREF", 8)) return -1;
    memcpy(hdr, f->buf + 8, sizeof hdr);
    if (hdr[0] != 1) return -1;
    f->dx = (int)hdr[1];
    f->dy = (int)hdr[2];
    f->nc = (int)hdr[3];
    f->ne = (int)hdr[4];
    memcpy(&f->lambda_rel, f->buf + 28, 8);
    size_t off = 36;
    size_t need = off + 4 * ((size_t)(f->nc + f->ne) * (f->dx + f->dy)) +
                  8 * (1 + (size_t)f->dy * f->dx + f->dy + f->dx + f->dy + 3);
    if (len != need) {
        fprintf(stderr, "%s: %zu bytes, expected %zu\n", path, len, need);
        return -1;
    }
    /* copy out so every array is aligned */
    size_t nxc = (size_t)f->nc * f->dx, nyc = (size_t)f->nc * f->dy, nxe = (size_t)f->ne * f->dx,
           nye = (size_t)f->ne * f->dy;
    f->xc = malloc(4 * nxc);
    f->yc = malloc(4 * nyc);
    f->xe = malloc(4 * nxe);
    f->ye = malloc(4 * nye);
    memcpy(f->xc, f->buf + off, 4 * nxc);
    off += 4 * nxc;
    memcpy(f->yc, f->buf + off, 4 * nyc);
    off += 4 * nyc;
    memcpy(f->xe, f->buf + off, 4 * nxe);
    off += 4 * nxe;
    memcpy(f->ye, f->buf + off, 4 * nye);
    off += 4 * nye;
    memcpy(&f->lambda, f->buf + off, 8);
    off += 8;
    f->A = malloc(8 * (size_t)f->dy * f->dx);
    f->c = malloc(8 * (size_t)f->dy);
    f->mu_x = malloc(8 * (size_t)f->dx);
    f->mu_y = malloc(8 * (size_t)f->dy);
    memcpy(f->A, f->buf + off, 8 * (size_t)f->dy * f->dx);
    off += 8 * (size_t)f->dy * f->dx;
    memcpy(f->c, f->buf + off, 8 * (size_t)f->dy);
    off += 8 * (size_t)f->dy;
    memcpy(f->mu_x, f->buf + off, 8 * (size_t)f->dx);
    off += 8 * (size_t)f->dx;
    memcpy(f->mu_y, f->buf + off, 8 * (size_t)f->dy);
    off += 8 * (size_t)f->dy;
    memcpy(&f->r2, f->buf + off, 8);
    memcpy(&f->s_resae, f->buf + off + 8, 8);
    memcpy(&f->s_raw, f->buf + off + 16, 8);
    return 0;
}

static void fixture_free(fixture *f) {
    free(f->buf);
    free(f->xc);
    free(f->yc);
    free(f->xe);
    free(f->ye);
    free(f->A);
    free(f->c);
    free(f->mu_x);
    free(f->mu_y);
}

static void case_numpy(void) {
    const char *dir = getenv("RESAE_TEST_DATA");
    char path[4096];
    snprintf(path, sizeof path, "%s/affine/affine_ref.bin", dir ? dir : "tests/data");
    fixture f;
    int bad = fixture_load(&f, path);
    CHECK(bad == 0, "cannot load fixture %s", path);
    if (bad) {
        fixture_free(&f);
        return;
    }
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int64_t t0 = (int64_t)f.nc * rank / size, t1 = (int64_t)f.nc * (rank + 1) / size;
    int64_t e0 = (int64_t)f.ne * rank / size, e1 = (int64_t)f.ne * (rank + 1) / size;
    mem_src ms, me, mr;
    rs_affine_source src = mem_source(&ms, f.xc + t0 * f.dx, f.yc + t0 * f.dy, f.dx, f.dy, t1 - t0);
    rs_affine_source esrc = mem_source(&me, f.xe + e0 * f.dx, f.ye + e0 * f.dy, f.dx, f.dy, e1 - e0);
    rs_affine_opts o;
    rs_affine_opts_default(&o);
    o.lambda_rel = f.lambda_rel;
    o.block = 8; /* a real block-cyclic layout even for d=48 */
    o.chunk_rows = 100;
    rs_affine_map m;
    rs_err e = rs_affine_fit(&m, &src, f.dx, f.dy, &o, MPI_COMM_WORLD);
    CHECK(e == RS_OK, "numpy: fit failed: %s", rs_err_msg());
    if (!e) {
        e = rs_affine_eval(&m, &esrc, MPI_COMM_WORLD);
        CHECK(e == RS_OK, "numpy: eval failed: %s", rs_err_msg());
        /* raw target scale: u = y, no x needed */
        rs_affine_source rsrc = mem_source(&mr, NULL, f.yc + t0 * f.dy, f.dx, f.dy, t1 - t0);
        double s_raw = 0;
        int64_t cnt = 0;
        e = rs_affine_scale(&s_raw, &cnt, &rsrc, NULL, f.dy, MPI_COMM_WORLD);
        CHECK(e == RS_OK, "numpy: raw scale failed: %s", rs_err_msg());
        check_replicated(&m, MPI_COMM_WORLD);
        double dA = rel_diff(m.A, f.A, (size_t)f.dx * f.dy), dc = rel_diff(m.c, f.c, f.dy);
        double dmx = rel_diff(m.mu_x, f.mu_x, f.dx), dmy = rel_diff(m.mu_y, f.mu_y, f.dy);
        if (rank == 0)
            printf("numpy: grid %dx%d: |dA|/|A| %.2e |dc|/|c| %.2e |dmu| %.1e %.1e lambda %.10e (ref %.10e) R2 %.8f "
                   "(ref %.8f) s %.6f (ref %.6f) s_raw %.6f (ref %.6f)\n",
                   m.nprow, m.npcol, dA, dc, dmx, dmy, m.lambda_used, f.lambda, m.r2, f.r2, m.s, f.s_resae, s_raw,
                   f.s_raw);
        CHECK(dA <= 1e-10, "numpy: A relative difference %.3e > 1e-10", dA);
        CHECK(dc <= 1e-10, "numpy: c relative difference %.3e > 1e-10", dc);
        CHECK(dmx <= 1e-12 && dmy <= 1e-12, "numpy: means differ %.3e %.3e", dmx, dmy);
        CHECK(fabs(m.lambda_used - f.lambda) <= 1e-12 * f.lambda, "numpy: lambda %.17g vs %.17g", m.lambda_used,
              f.lambda);
        CHECK(fabs(m.r2 - f.r2) <= 1e-6, "numpy: R2 %.10f vs %.10f", m.r2, f.r2);
        CHECK(fabs(m.s - f.s_resae) <= 1e-5 * f.s_resae, "numpy: s %.10f vs %.10f", m.s, f.s_resae);
        CHECK(fabs(s_raw - f.s_raw) <= 1e-6 * f.s_raw, "numpy: s_raw %.10f vs %.10f", s_raw, f.s_raw);
        CHECK(cnt == f.nc, "numpy: scale counted %lld tokens", (long long)cnt);
        /* the same data and rank count give bitwise the same map */
        rs_affine_map m2;
        mem_rewind(&ms);
        e = rs_affine_fit(&m2, &src, f.dx, f.dy, &o, MPI_COMM_WORLD);
        CHECK(e == RS_OK, "numpy: second fit failed: %s", rs_err_msg());
        if (!e) {
            CHECK(!memcmp(m.A, m2.A, sizeof(double) * f.dx * f.dy) && !memcmp(m.c, m2.c, sizeof(double) * f.dy) &&
                      m.s == m2.s,
                  "numpy: a repeated fit differs");
            rs_affine_map_free(&m2);
        }
        rs_affine_map_free(&m);
    }
    fixture_free(&f);
}

/* ---- rank-deficient inputs: the retry path -------------------------------------------------------------- */
static void case_retry(void) {
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    synth syn;
    int dx = 24, dy = 10;
    int64_t n = 1200;
    synth_init(&syn, SYN_DEFICIENT, dx, dy, 5, 0.0, 0.1);
    int64_t t0, t1;
    shard(&t0, &t1, n, rank, size);
    float *x, *y;
    synth_rows(&syn, t0, t1, &x, &y);
    mem_src ms;
    rs_affine_source src = mem_source(&ms, x, y, dx, dy, t1 - t0);
    rs_affine_opts o;
    rs_affine_opts_default(&o);
    o.lambda_rel = 0.0;
    o.block = 8;
    rs_affine_map m;
    rs_err e = rs_affine_fit(&m, &src, dx, dy, &o, MPI_COMM_WORLD);
    CHECK(e == RS_OK, "retry: fit failed: %s", rs_err_msg());
    if (!e) {
        check_replicated(&m, MPI_COMM_WORLD);
        CHECK(m.retries > 0, "retry: expected retries > 0, got %d", m.retries);
        CHECK(m.lambda_used > 0, "retry: lambda_used %g", m.lambda_used);
        /* the zero column maps to nothing */
        double zc = 0;
        for (int i = 0; i < dy; i++) zc += fabs(m.A[i * dx + 0]);
        CHECK(zc == 0.0, "retry: A column of the zero input is %g, want 0", zc);
        if (rank == 0) {
            float *fx, *fy;
            synth_rows(&syn, 0, n, &fx, &fy);
            ref r;
            ref_moments(&r, fx, fy, n, dx, dy);
            int info = ref_solve(&r, m.lambda_used);
            double dA = rel_diff(m.A, r.A, (size_t)dx * dy);
            double res = scaled_residual(&r, m.A, m.lambda_used);
            int info0 = ref_solve(&r, 0.0);
            printf("retry: %d retries, lambda_used %.3e (%.1e x trace/d), |dA|/|A| %.2e vs dposv at lambda_used, "
                   "scaled residual %.3f; dposv at lambda 0 info %d\n",
                   m.retries, m.lambda_used, m.lambda_used * dx / m.trace_cxx, dA, res, info0);
            CHECK(info == 0, "retry: reference dposv at lambda_used info %d", info);
            CHECK(info0 > 0, "retry: the data was meant to be singular (dposv at lambda 0 gave info %d)", info0);
            /* the matrix is ill-conditioned (cond ~ 1e12), so compare in the residual and loosely in A */
            CHECK(res < 10, "retry: scaled residual %.3f", res);
            CHECK(dA <= 1e-3, "retry: A relative difference %.3e", dA);
            ref_free(&r);
            free(fx);
            free(fy);
        }
        rs_affine_map_free(&m);
    }
    /* no retries allowed: a clear numeric error on every rank, never a silent solve */
    o.max_retries = 0;
    mem_rewind(&ms);
    rs_err_clear();
    e = rs_affine_fit(&m, &src, dx, dy, &o, MPI_COMM_WORLD);
    CHECK(e == RS_ERR_NUMERIC, "retry: max_retries 0 returned %d (%s), want RS_ERR_NUMERIC", e, rs_err_msg());
    CHECK(strstr(rs_err_msg(), "no valid solve") && strstr(rs_err_msg(), "lambda_rel"),
          "retry: unclear message '%s'", rs_err_msg());
    CHECK(m.slab == NULL && m.A == NULL, "retry: a failed fit left a map behind");
    if (rank == 0) printf("retry: max_retries 0 -> %s\n", rs_err_msg());
    /* a solve whose residual check fails is rejected like a failed factorization */
    o.lambda_rel = 1e-4;
    o.max_retries = 2;
    o.max_resid = 1e-300;
    mem_rewind(&ms);
    rs_err_clear();
    e = rs_affine_fit(&m, &src, dx, dy, &o, MPI_COMM_WORLD);
    CHECK(e == RS_ERR_NUMERIC && strstr(rs_err_msg(), "after 2 retries"),
          "retry: an impossible residual bound returned %d (%s), want RS_ERR_NUMERIC", e, rs_err_msg());
    free(x);
    free(y);
    synth_free(&syn);
}

/* ---- near-identity map ---------------------------------------------------------------------------------- */
static void case_identity(void) {
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int d = 32;
    synth syn;
    synth_init(&syn, SYN_IDENTITY, d, d, 21, 0.5, 1e-3);
    int64_t n = 4000, ne = 1000, t0, t1, e0, e1;
    shard(&t0, &t1, n, rank, size);
    shard(&e0, &e1, ne, rank, size);
    float *x, *y, *xe, *ye;
    synth_rows(&syn, t0, t1, &x, &y);
    synth_rows(&syn, n + e0, n + e1, &xe, &ye);
    mem_src ms, me;
    rs_affine_source src = mem_source(&ms, x, y, d, d, t1 - t0);
    rs_affine_source esrc = mem_source(&me, xe, ye, d, d, e1 - e0);
    rs_affine_opts o;
    rs_affine_opts_default(&o);
    o.block = 8;
    rs_affine_map m;
    rs_err e = rs_affine_fit(&m, &src, d, d, &o, MPI_COMM_WORLD);
    CHECK(e == RS_OK, "identity: fit failed: %s", rs_err_msg());
    if (!e) {
        e = rs_affine_eval(&m, &esrc, MPI_COMM_WORLD);
        CHECK(e == RS_OK, "identity: eval failed: %s", rs_err_msg());
        double dev = 0, cn = 0;
        for (int i = 0; i < d; i++) {
            for (int j = 0; j < d; j++) {
                double v = m.A[i * d + j] - (i == j);
                dev += v * v;
            }
            cn += m.c[i] * m.c[i];
        }
        dev = sqrt(dev);
        cn = sqrt(cn);
        if (rank == 0)
            printf("identity: ||A - I||_F %.3e, ||c|| %.3e, R2 %.8f, s %.4f (noise 1e-3: s ~ 1000)\n", dev, cn, m.r2,
                   m.s);
        /* the ridge shrinks A by ~lambda_rel = 1e-4 per entry: ||A - I||_F ~ 1e-4 sqrt(d) */
        CHECK(dev < 2e-3, "identity: ||A - I||_F = %.3e", dev);
        CHECK(cn < 2e-3, "identity: ||c|| = %.3e", cn);
        CHECK(m.r2 > 0.9999 && m.r2 <= 1.0, "identity: R2 = %.8f", m.r2);
        CHECK(m.s > 800 && m.s < 1200, "identity: s = %.3f, expected ~1000 (residual std 1e-3)", m.s);
        check_replicated(&m, MPI_COMM_WORLD);
        rs_affine_map_free(&m);
    }
    free(x);
    free(y);
    free(xe);
    free(ye);
    synth_free(&syn);
}

/* ---- catastrophic cancellation --------------------------------------------------------------------------- */
static void case_offset(void) {
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int dx = 40, dy = 24;
    int64_t n = 4000, ne = 800, t0, t1, e0, e1;
    shard(&t0, &t1, n, rank, size);
    shard(&e0, &e1, ne, rank, size);
    rs_affine_map maps[2];
    double offsets[2] = {0.0, 1e4};
    rs_err errs[2];
    for (int k = 0; k < 2; k++) {
        synth syn;
        synth_init(&syn, SYN_GRID, dx, dy, 33, offsets[k], 0.05);
        float *x, *y, *xe, *ye;
        synth_rows(&syn, t0, t1, &x, &y);
        synth_rows(&syn, n + e0, n + e1, &xe, &ye);
        if (k == 1) /* exactness of the data: the offset copy is the zero-mean copy shifted */
            for (int64_t i = 0; i < (t1 - t0) * dx; i++) {
                float back = x[i] - 1e4f;
                if (back < -8.0f || back > 8.0f || back * 256.0f != roundf(back * 256.0f)) {
                    CHECK(0, "offset: data not exact in float");
                    break;
                }
            }
        mem_src ms, me;
        rs_affine_source src = mem_source(&ms, x, y, dx, dy, t1 - t0);
        rs_affine_source esrc = mem_source(&me, xe, ye, dx, dy, e1 - e0);
        rs_affine_opts o;
        rs_affine_opts_default(&o);
        o.block = 16;
        o.chunk_rows = 256;
        errs[k] = rs_affine_fit(&maps[k], &src, dx, dy, &o, MPI_COMM_WORLD);
        CHECK(errs[k] == RS_OK, "offset %g: fit failed: %s", offsets[k], rs_err_msg());
        if (!errs[k]) {
            errs[k] = rs_affine_eval(&maps[k], &esrc, MPI_COMM_WORLD);
            CHECK(errs[k] == RS_OK, "offset %g: eval failed: %s", offsets[k], rs_err_msg());
        }
        free(x);
        free(y);
        free(xe);
        free(ye);
        synth_free(&syn);
    }
    if (!errs[0] && !errs[1]) {
        double dA = rel_diff(maps[1].A, maps[0].A, (size_t)dx * dy);
        /* c absorbs the offset: c1 = c0 + 1e4 (1 - A 1) */
        double dc = 0, cn = 0;
        for (int i = 0; i < dy; i++) {
            double rs = 0;
            for (int j = 0; j < dx; j++) rs += maps[0].A[i * dx + j];
            double want = maps[0].c[i] + 1e4 * (1.0 - rs);
            dc += (maps[1].c[i] - want) * (maps[1].c[i] - want);
            cn += want * want;
        }
        dc = sqrt(dc / cn);
        double dl = fabs(maps[1].lambda_used - maps[0].lambda_used) / maps[0].lambda_used;
        if (rank == 0)
            printf("offset: 1e4 mean vs zero mean: |dA|/|A| %.2e, |dc|/|c| %.2e, dlambda %.1e, R2 %.10f vs %.10f, "
                   "s %.8f vs %.8f\n",
                   dA, dc, dl, maps[1].r2, maps[0].r2, maps[1].s, maps[0].s);
        CHECK(dA <= 1e-10, "offset: A differs by %.3e (cancellation?)", dA);
        CHECK(dc <= 1e-10, "offset: c differs by %.3e", dc);
        CHECK(dl <= 1e-12, "offset: lambda differs by %.3e", dl);
        CHECK(fabs(maps[1].r2 - maps[0].r2) <= 1e-6, "offset: R2 %.10f vs %.10f", maps[1].r2, maps[0].r2);
        CHECK(fabs(maps[1].s - maps[0].s) <= 1e-5 * maps[0].s, "offset: s %.8f vs %.8f", maps[1].s, maps[0].s);
    }
    for (int k = 0; k < 2; k++)
        if (!errs[k]) rs_affine_map_free(&maps[k]);
}

/* ---- two groups at once ---------------------------------------------------------------------------------- */
static void case_subcomm(void) {
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int color = size >= 2 ? (rank < size / 2 ? 0 : 1) : 0;
    MPI_Comm group;
    MPI_Comm_split(MPI_COMM_WORLD, color, rank, &group);
    synth syn;
    rs_affine_opts o;
    rs_affine_opts_default(&o);
    char name[32];
    snprintf(name, sizeof name, "subcomm-group%d", color);
    if (color == 0) {
        synth_init(&syn, SYN_GENERAL, 40, 30, 101, 1.0, 0.2);
        o.block = 8;
        fit_and_compare(name, &syn, 1500, 300, &o, group, 0);
    } else {
        synth_init(&syn, SYN_GENERAL, 33, 45, 202, -2.0, 0.4);
        o.block = 4;
        o.lambda_rel = 1e-3;
        fit_and_compare(name, &syn, 1800, 400, &o, group, 0);
    }
    synth_free(&syn);
    if (size == 1) { /* a single group: also prove nothing assumes the world (a duplicate comm) */
        MPI_Comm dup;
        MPI_Comm_dup(MPI_COMM_WORLD, &dup);
        synth_init(&syn, SYN_GENERAL, 20, 20, 303, 0.0, 0.2);
        rs_affine_opts_default(&o);
        o.block = 4;
        fit_and_compare("subcomm-dup", &syn, 600, 100, &o, dup, 0);
        synth_free(&syn);
        MPI_Comm_free(&dup);
    }
    MPI_Comm_free(&group);
}

/* ---- edges ------------------------------------------------------------------------------------------------ */
static void case_edge(void) {
    int size;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    synth syn;
    rs_affine_opts o;
    /* one block for the whole matrix: more ranks than blocks, the grid shrinks to 1x1 */
    synth_init(&syn, SYN_GENERAL, 20, 12, 7, 0.0, 0.2);
    rs_affine_opts_default(&o);
    fit_and_compare("edge-one-block", &syn, 400, 100, &o, MPI_COMM_WORLD, 0);
    synth_free(&syn);
    /* d not a multiple of the block, a rank with zero tokens (the last, when there are several) */
    synth_init(&syn, SYN_GENERAL, 37, 29, 8, 0.5, 0.2);
    rs_affine_opts_default(&o);
    o.block = 5;
    o.chunk_rows = 33;
    fit_and_compare("edge-zero-rank", &syn, 900, 200, &o, MPI_COMM_WORLD, 1);
    /* ranks outside the grid: use one rank fewer than the group */
    if (size > 1) {
        o.max_procs = size - 1;
        fit_and_compare("edge-outside", &syn, 900, 200, &o, MPI_COMM_WORLD, 0);
    }
    synth_free(&syn);
    /* dy much wider than dx: process columns beyond x's single block hold only pieces of B */
    synth_init(&syn, SYN_GENERAL, 8, 40, 10, 1.0, 0.2);
    rs_affine_opts_default(&o);
    o.block = 8;
    fit_and_compare("edge-wide", &syn, 300, 60, &o, MPI_COMM_WORLD, 0);
    synth_free(&syn);
    /* tiny: dx = dy = 1 */
    synth_init(&syn, SYN_GENERAL, 1, 1, 9, 0.0, 0.2);
    rs_affine_opts_default(&o);
    fit_and_compare("edge-1x1", &syn, 50, 20, &o, MPI_COMM_WORLD, 0);
    synth_free(&syn);
    /* no tokens at all, and zero-variance x: clear errors, on every rank */
    {
        rs_affine_map m;
        mem_src ms;
        float x1[4] = {1, 1, 1, 1}, y1[4] = {1, 2, 3, 4};
        rs_affine_source src = mem_source(&ms, x1, y1, 1, 1, 0);
        rs_err e = rs_affine_fit(&m, &src, 1, 1, NULL, MPI_COMM_WORLD);
        CHECK(e == RS_ERR_INVAL && strstr(rs_err_msg(), "calibration"), "edge: no tokens gave %d '%s'", e,
              rs_err_msg());
        src = mem_source(&ms, x1, y1, 1, 1, 4);
        e = rs_affine_fit(&m, &src, 1, 1, NULL, MPI_COMM_WORLD);
        CHECK(e == RS_ERR_NUMERIC && strstr(rs_err_msg(), "zero variance"), "edge: constant x gave %d '%s'", e,
              rs_err_msg());
        float xn[2] = {1, NAN}, yn[2] = {0, 1};
        src = mem_source(&ms, xn, yn, 1, 1, 2);
        e = rs_affine_fit(&m, &src, 1, 1, NULL, MPI_COMM_WORLD);
        CHECK(e == RS_ERR_NUMERIC, "edge: NaN input gave %d '%s'", e, rs_err_msg());
    }
}

int main(int argc, char **argv) {
    if (rs_mpi_begin(&argc, &argv)) {
        rs_err_print();
        return 1;
    }
    rs_check_rank = rs_mpi_rank();
    const char *which = argc > 1 ? argv[1] : "";
    int ran = 1;
    if (!strcmp(which, "serial")) case_serial();
    else if (!strcmp(which, "numpy")) case_numpy();
    else if (!strcmp(which, "retry")) case_retry();
    else if (!strcmp(which, "identity")) case_identity();
    else if (!strcmp(which, "offset")) case_offset();
    else if (!strcmp(which, "subcomm")) case_subcomm();
    else if (!strcmp(which, "edge")) case_edge();
    else ran = 0;
    if (!ran && rs_check_rank == 0) fprintf(stderr, "usage: test_affine serial|numpy|retry|identity|offset|subcomm|edge\n");
    int total = 0;
    MPI_Allreduce(&rs_check_fails, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rs_check_rank == 0) printf("affine %s at %d rank(s): %s\n", which, rs_mpi_size(), !ran ? "USAGE" : total ? "FAILED" : "ok");
    rs_mpi_end();
    return (!ran || total) ? 1 : 0;
}
