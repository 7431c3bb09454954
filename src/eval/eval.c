/* Evaluation kernels: splice errors, reconstruction metrics, decoder redundancy (see eval.h). The
 * CE splices live in eval_ce.c. */
#include "resae/eval.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resae/config.h"
#include "resae/mpi_util.h"

/* ---- work buffers ----------------------------------------------------------------------------------- */

rs_err rs_eval_work_init(rs_eval_work *w, const rs_eval_set *es, int64_t rows) {
    memset(w, 0, sizeof *w);
    int k = 1;
    for (int m = 0; m < es->M; m++)
        if (es->L[m].sae && es->L[m].sae->k > k) k = es->L[m].sae->k;
    w->rows = rows;
    w->d = es->d;
    w->k = k;
    size_t nd = (size_t)rows * (size_t)es->d, nk = (size_t)rows * (size_t)k;
    w->u = malloc(sizeof(float) * nd);
    w->rhat = malloc(sizeof(float) * nd);
    w->idx = malloc(sizeof(int32_t) * nk);
    w->val = malloc(sizeof(float) * nk);
    if (!w->u || !w->rhat || !w->idx || !w->val) {
        rs_eval_work_free(w);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for evaluation buffers of %lld rows x %d", (long long)rows, es->d);
    }
    return RS_OK;
}

void rs_eval_work_free(rs_eval_work *w) {
    free(w->u);
    free(w->rhat);
    free(w->idx);
    free(w->val);
    memset(w, 0, sizeof *w);
}

rs_err rs_eval_splice_error(float *eps, rs_eval_work *w, const rs_eval_set *es, int m, const float *h,
                            const float *x_prev, int64_t n) {
    if (n > w->rows) RS_FAIL(RS_ERR_INVAL, "splice error of %lld rows with buffers for %lld", (long long)n, (long long)w->rows);
    const rs_eval_layer *L = &es->L[m];
    size_t nd = (size_t)n * (size_t)es->d;
    if (es->variant == RS_VARIANT_RESAE && m > 0) {
        if (!L->map || !x_prev) RS_FAIL(RS_ERR_INVAL, "resae layer %d needs the affine map and the previous layer", L->layer);
        RS_TRY(rs_affine_residual(w->u, L->map, x_prev, h, n));
    } else {
        memcpy(w->u, h, sizeof(float) * nd);
    }
    if (L->zero) {
        memset(w->rhat, 0, sizeof(float) * nd);
    } else if (!L->sae) {
        memcpy(w->rhat, w->u, sizeof(float) * nd);
    } else {
        double s = L->scale;
        for (size_t i = 0; i < nd; i++) w->rhat[i] = (float)(s * (double)w->u[i]);
        /* codes are packed with this SAE's k; idx/val hold rows*w->k >= rows*k entries */
        RS_TRY(rs_sae_encode(w->idx, w->val, L->sae, w->rhat, n));
        rs_sae_decode(w->rhat, L->sae, w->idx, w->val, n);
        for (size_t i = 0; i < nd; i++) w->rhat[i] = (float)((double)w->rhat[i] / s);
    }
    if (eps)
        for (size_t i = 0; i < nd; i++) eps[i] = w->rhat[i] - w->u[i];
    return RS_OK;
}

/* ---- reconstruction metrics -------------------------------------------------------------------------- */

enum { S_SSE_T, S_SST_T, S_SST_O, S_SSE_C, S_ACTIVE, S_SSE_CL, NS };

static int64_t fired_off(const rs_eval_set *es, int m) {
    int64_t off = 0;
    for (int i = 0; i < m; i++) off += es->L[i].sae ? es->L[i].sae->n_latents : 0;
    return off;
}

rs_err rs_eval_recon_init(rs_eval_recon_acc *a, const rs_eval_set *es, const double *mu_h, int64_t rows) {
    memset(a, 0, sizeof *a);
    a->es = es;
    int M = es->M, d = es->d;
    size_t Md = (size_t)M * (size_t)d;
    a->mu_h = malloc(sizeof(double) * Md);
    a->mu_u = malloc(sizeof(double) * Md);
    a->sums = calloc((size_t)M * NS, sizeof(double));
    a->fired = calloc((size_t)fired_off(es, M) + 1, 1);
    a->chain = malloc(sizeof(float) * (size_t)rows * (size_t)d);
    a->tmp = malloc(sizeof(float) * (size_t)rows * (size_t)d);
    a->closed = malloc(sizeof(float) * (size_t)rows * (size_t)d);
    rs_err err = RS_OK;
    if (!a->mu_h || !a->mu_u || !a->sums || !a->fired || !a->chain || !a->tmp || !a->closed)
        RS_FAIL_GOTO(fail, RS_ERR_NOMEM, "out of memory for reconstruction metrics");
    RS_TRY_GOTO(rs_eval_work_init(&a->w, es, rows), fail);
    memcpy(a->mu_h, mu_h, sizeof(double) * Md);
    memcpy(a->mu_u, mu_h, sizeof(double) * Md);
    if (es->variant == RS_VARIANT_RESAE)
        for (int m = 1; m < M; m++) {
            /* mu_u = (mu_h_m - mu_y) - A (mu_h_{m-1} - mu_x): u is linear in the inputs */
            const rs_affine_map *A = es->L[m].map;
            if (!A) RS_FAIL_GOTO(fail, RS_ERR_INVAL, "resae layer %d has no affine map", es->L[m].layer);
            const double *hp = mu_h + (size_t)(m - 1) * (size_t)d;
            for (int i = 0; i < d; i++) {
                double acc = mu_h[(size_t)m * (size_t)d + (size_t)i] - A->mu_y[i];
                for (int j = 0; j < d; j++) acc -= A->A[(size_t)i * (size_t)d + (size_t)j] * (hp[j] - A->mu_x[j]);
                a->mu_u[(size_t)m * (size_t)d + (size_t)i] = acc;
            }
        }
    return RS_OK;
fail:
    rs_eval_recon_free(a);
    return err;
}

void rs_eval_recon_free(rs_eval_recon_acc *a) {
    free(a->mu_h);
    free(a->mu_u);
    free(a->sums);
    free(a->fired);
    free(a->chain);
    free(a->tmp);
    free(a->closed);
    rs_eval_work_free(&a->w);
    memset(a, 0, sizeof *a);
}

rs_err rs_eval_recon_add(rs_eval_recon_acc *a, const float *const *h, int64_t n) {
    const rs_eval_set *es = a->es;
    int d = es->d;
    size_t nd = (size_t)n * (size_t)d;
    int resae = es->variant == RS_VARIANT_RESAE;
    for (int m = 0; m < es->M; m++) {
        double *S = a->sums + (size_t)m * NS;
        RS_TRY(rs_eval_splice_error(NULL, &a->w, es, m, h[m], resae && m > 0 ? h[m - 1] : NULL, n));
        const float *u = a->w.u, *rh = a->w.rhat, *hm = h[m];
        const double *mu_u = a->mu_u + (size_t)m * (size_t)d, *mu_h = a->mu_h + (size_t)m * (size_t)d;
        double sse = 0, sstt = 0, ssto = 0, ssec = 0;
        for (int64_t r = 0; r < n; r++)
            for (int i = 0; i < d; i++) {
                size_t q = (size_t)r * (size_t)d + (size_t)i;
                double e = (double)u[q] - (double)rh[q], cu = (double)u[q] - mu_u[i], ch = (double)hm[q] - mu_h[i];
                sse += e * e;
                sstt += cu * cu;
                ssto += ch * ch;
            }
        /* chain: x_hat_1 = r_hat_1; x_hat_m = A x_hat_{m-1} + c + r_hat_m = h - (h - A x_hat_{m-1} - c) + r_hat */
        if (!resae || m == 0) {
            memcpy(a->chain, rh, sizeof(float) * nd);
        } else {
            RS_TRY(rs_affine_residual(a->tmp, es->L[m].map, a->chain, hm, n));
            /* written as h - (residual - r_hat) so that a perfect reconstruction gives h exactly */
            for (size_t q = 0; q < nd; q++) a->chain[q] = hm[q] - (a->tmp[q] - rh[q]);
        }
        for (size_t q = 0; q < nd; q++) {
            double e = (double)hm[q] - (double)a->chain[q];
            ssec += e * e;
        }
        S[S_SSE_T] += sse;
        S[S_SST_T] += sstt;
        S[S_SST_O] += ssto;
        S[S_SSE_C] += ssec;
        if (es->L[m].sae) {
            int k = es->L[m].sae->k;
            unsigned char *f = a->fired + fired_off(es, m);
            int64_t act = 0;
            for (size_t q = 0; q < (size_t)n * (size_t)k; q++)
                if (a->w.idx[q] >= 0) {
                    f[a->w.idx[q]] = 1;
                    act++;
                }
            S[S_ACTIVE] += (double)act;
        }
        /* closed loop: the SAE of layer m sees h - A x_closed_{m-1} - c (its own chain, not the clean
         * previous layer); x_closed_m = A x_closed_{m-1} + c + r_hat' = h - (u' - r_hat') */
        if (!resae || m == 0) {
            memcpy(a->closed, a->chain, sizeof(float) * nd);
        } else {
            RS_TRY(rs_eval_splice_error(NULL, &a->w, es, m, h[m], a->closed, n));
            for (size_t q = 0; q < nd; q++) a->closed[q] = h[m][q] - (a->w.u[q] - a->w.rhat[q]);
        }
        double sscl = 0;
        for (size_t q = 0; q < nd; q++) {
            double e = (double)h[m][q] - (double)a->closed[q];
            sscl += e * e;
        }
        S[S_SSE_CL] += sscl;
    }
    a->n += n;
    return RS_OK;
}

rs_err rs_eval_recon_finish(rs_eval_recon *out, rs_eval_recon_acc *a, MPI_Comm comm) {
    const rs_eval_set *es = a->es;
    int M = es->M;
    int64_t nf = fired_off(es, M);
    int64_t n = a->n;
    if (comm != MPI_COMM_NULL) {
        RS_MPI(MPI_Allreduce(MPI_IN_PLACE, a->sums, M * NS, MPI_DOUBLE, MPI_SUM, comm));
        RS_MPI(MPI_Allreduce(MPI_IN_PLACE, &n, 1, MPI_INT64_T, MPI_SUM, comm));
        if (nf > 0) RS_MPI(MPI_Allreduce(MPI_IN_PLACE, a->fired, (int)nf, MPI_UNSIGNED_CHAR, MPI_MAX, comm));
    }
    for (int m = 0; m < M; m++) {
        const double *S = a->sums + (size_t)m * NS;
        rs_eval_recon *o = &out[m];
        o->n_tokens = n;
        o->l0 = es->L[m].sae ? S[S_ACTIVE] / (double)n : NAN;
        o->mse = S[S_SSE_T] / ((double)n * es->d);
        o->ev_target = 1.0 - S[S_SSE_T] / S[S_SST_T];
        o->ev_onestep = 1.0 - S[S_SSE_T] / S[S_SST_O];
        o->ev_chain = 1.0 - S[S_SSE_C] / S[S_SST_O];
        o->ev_closed = 1.0 - S[S_SSE_CL] / S[S_SST_O];
        o->dead_frac = NAN;
        if (es->L[m].sae) {
            const unsigned char *f = a->fired + fired_off(es, m);
            int nl = es->L[m].sae->n_latents, dead = 0;
            for (int i = 0; i < nl; i++) dead += !f[i];
            o->dead_frac = (double)dead / nl;
        }
    }
    return RS_OK;
}

/* ---- decoder redundancy ------------------------------------------------------------------------------- */

static rs_err inv_norms(float *out, const float *W, int n, int d) {
    for (int i = 0; i < n; i++) {
        double s = 0;
        const float *w = W + (size_t)i * (size_t)d;
        for (int j = 0; j < d; j++) s += (double)w[j] * w[j];
        out[i] = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
    }
    return RS_OK;
}

rs_err rs_eval_redundancy(double *mean_max, double *mean_absmax, const float *Wb, int nb, const float *Wa, int na,
                          int d, int block, MPI_Comm comm) {
    int rank = 0, size = 1;
    if (comm != MPI_COMM_NULL) {
        MPI_Comm_rank(comm, &rank);
        MPI_Comm_size(comm, &size);
    }
    if (block < 1) block = 1;
    int64_t lo = 0, hi = 0;
    rs_range_share(&lo, &hi, nb, rank, size); /* this rank's rows of Wb */
    const int j0 = (int)lo, j1 = (int)hi;
    float *ia = malloc(sizeof(float) * (size_t)(na > 0 ? na : 1));
    float *ib = malloc(sizeof(float) * (size_t)(nb > 0 ? nb : 1));
    float *C = malloc(sizeof(float) * (size_t)block * (size_t)block);
    float *rmax = malloc(sizeof(float) * (size_t)block), *rabs = malloc(sizeof(float) * (size_t)block);
    rs_err err = RS_OK;
    double sums[2] = {0, 0};
    if (!ia || !ib || !C || !rmax || !rabs) {
        err = RS_ERR(RS_ERR_NOMEM, "out of memory for redundancy blocks of %d", block);
    } else {
        inv_norms(ia, Wa, na, d);
        inv_norms(ib, Wb + (size_t)j0 * (size_t)d, j1 - j0, d);
        for (int jb = j0; jb < j1; jb += block) {
            int mb = j1 - jb < block ? j1 - jb : block;
            for (int r = 0; r < mb; r++) rmax[r] = -INFINITY, rabs[r] = 0;
            for (int i0 = 0; i0 < na; i0 += block) {
                int nbk = na - i0 < block ? na - i0 : block;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mb, nbk, d, 1.0f, Wb + (size_t)jb * (size_t)d, d,
                            Wa + (size_t)i0 * (size_t)d, d, 0.0f, C, nbk);
                for (int r = 0; r < mb; r++) {
                    const float *c = C + (size_t)r * (size_t)nbk;
                    float mx = rmax[r], ma = rabs[r];
                    for (int i = 0; i < nbk; i++) {
                        float v = c[i] * ia[i0 + i];
                        if (v > mx) mx = v;
                        if (fabsf(v) > ma) ma = fabsf(v);
                    }
                    rmax[r] = mx;
                    rabs[r] = ma;
                }
            }
            for (int r = 0; r < mb; r++) {
                float s = ib[jb - j0 + r];
                sums[0] += (double)rmax[r] * s;
                sums[1] += (double)rabs[r] * s;
            }
        }
    }
    free(ia);
    free(ib);
    free(C);
    free(rmax);
    free(rabs);
    if (comm != MPI_COMM_NULL) {
        RS_AGREE(err, comm, "the decoder redundancy measure");
        RS_MPI(MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, comm));
    } else if (err) {
        return err;
    }
    *mean_max = sums[0] / nb;
    *mean_absmax = sums[1] / nb;
    return RS_OK;
}
