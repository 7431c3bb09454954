/* LD_PRELOAD shim for the BLAS guard's tests: BLAS and LAPACK kernels that compute wrong results, and
 * an OpenBLAS that reports a kernel set of a name no table knows. The real routine runs, then
 * RESAE_TEST_BLAS_FAULT (sgemm, dgemm, dsyrk, dposv, pdposv) corrupts one entry of its output;
 * RESAE_TEST_BLAS_CORENAME replaces openblas_get_corename's answer while OPENBLAS_CORETYPE is unset
 * (a misdetection, or a kernel set of a new name). Test-only: never linked into resae. */
#define _GNU_SOURCE
#include <cblas.h>
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static int fault(const char *routine) {
    const char *e = getenv("RESAE_TEST_BLAS_FAULT");
    return e && !strcmp(e, routine);
}

/* the next definition of name (the real library's), looked up once */
#define REAL(name)                                                                                           \
    static __typeof__(&name) real_##name;                                                                    \
    if (!real_##name) *(void **)&real_##name = dlsym(RTLD_NEXT, #name)

char *openblas_get_corename(void) {
    const char *e = getenv("RESAE_TEST_BLAS_CORENAME"), *set = getenv("OPENBLAS_CORETYPE");
    if (e && (!set || !*set)) return (char *)e; /* what OpenBLAS's detection would have said */
    REAL(openblas_get_corename);
    return real_openblas_get_corename();
}

void cblas_sgemm(const enum CBLAS_ORDER o, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint m, const blasint n, const blasint k, const float alpha, const float *a,
                 const blasint lda, const float *b, const blasint ldb, const float beta, float *c, const blasint ldc) {
    REAL(cblas_sgemm);
    real_cblas_sgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (fault("sgemm") && m > 1 && n > 1) c[ldc + 1] += 0.01f;
}

void cblas_dgemm(const enum CBLAS_ORDER o, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint m, const blasint n, const blasint k, const double alpha, const double *a,
                 const blasint lda, const double *b, const blasint ldb, const double beta, double *c, const blasint ldc) {
    REAL(cblas_dgemm);
    real_cblas_dgemm(o, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (fault("dgemm") && m > 1 && n > 1) c[ldc + 1] *= 1.0 + 1e-9;
}

void cblas_dsyrk(const enum CBLAS_ORDER o, const enum CBLAS_UPLO uplo, const enum CBLAS_TRANSPOSE t, const blasint n,
                 const blasint k, const double alpha, const double *a, const blasint lda, const double beta, double *c,
                 const blasint ldc) {
    REAL(cblas_dsyrk);
    real_cblas_dsyrk(o, uplo, t, n, k, alpha, a, lda, beta, c, ldc);
    if (fault("dsyrk") && n > 1) c[1] = -c[1] - 1.0;
}

void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b, const int *ldb,
            int *info, size_t uplo_len) {
    REAL(dposv_);
    real_dposv_(uplo, n, nrhs, a, lda, b, ldb, info, uplo_len);
    if (fault("dposv") && *n > 0) b[0] += 1e-6;
}

void pdposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *ia, const int *ja,
             const int *desca, double *b, const int *ib, const int *jb, const int *descb, int *info,
             size_t uplo_len) {
    REAL(pdposv_);
    real_pdposv_(uplo, n, nrhs, a, ia, ja, desca, b, ib, jb, descb, info, uplo_len);
    if (fault("pdposv") && *n > 0) b[0] += 1e-6; /* the grid rank that holds block (0, 0) */
}
