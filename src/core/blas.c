#define _GNU_SOURCE
#include "resae/blas.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "resae/blacs.h"
#include "resae/log.h"

/* ---- classification ------------------------------------------------------------------------------ */

const char *rs_isa_name(enum rs_isa isa) {
    switch (isa) {
    case RS_ISA_SSE: return "SSE";
    case RS_ISA_AVX: return "AVX";
    case RS_ISA_AVX2: return "AVX2";
    case RS_ISA_AVX512: return "AVX-512";
    default: return "unknown";
    }
}

enum rs_isa rs_cpu_isa(void) {
    /* __builtin_cpu_supports reports a feature only when the OS saves its vector state (XCR0) */
    __builtin_cpu_init();
    enum rs_isa isa = RS_ISA_SSE;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        isa = RS_ISA_AVX512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = RS_ISA_AVX2;
    else if (__builtin_cpu_supports("avx")) isa = RS_ISA_AVX;
    const char *cap = getenv("RESAE_TEST_CPU_ISA");
    for (int l = RS_ISA_SSE; cap && l < (int)isa; l++)
        if (!strcasecmp(cap, rs_isa_name((enum rs_isa)l))) isa = (enum rs_isa)l;
    return isa;
}

/* Every x86-64 core name of OpenBLAS 0.3.x (driver/others/dynamic.c: the names openblas_get_corename
 * returns and the ones OPENBLAS_CORETYPE accepts), by the widest instruction set its kernels use.
 * Piledriver, Steamroller and Excavator kernels use AVX with FMA3/FMA4, not AVX2. */
static const struct {
    const char *name;
    enum rs_isa isa;
} CORES[] = {
    {"Unknown", RS_ISA_SSE},     {"Katmai", RS_ISA_SSE},      {"Coppermine", RS_ISA_SSE},
    {"Northwood", RS_ISA_SSE},   {"Prescott", RS_ISA_SSE},    {"Banias", RS_ISA_SSE},
    {"Atom", RS_ISA_SSE},        {"Core2", RS_ISA_SSE},       {"Penryn", RS_ISA_SSE},
    {"Dunnington", RS_ISA_SSE},  {"Nehalem", RS_ISA_SSE},     {"Athlon", RS_ISA_SSE},
    {"Opteron", RS_ISA_SSE},     {"Opteron(SSE3)", RS_ISA_SSE}, {"Barcelona", RS_ISA_SSE},
    {"Nano", RS_ISA_SSE},        {"Bobcat", RS_ISA_SSE},      {"Sandybridge", RS_ISA_AVX},
    {"Bulldozer", RS_ISA_AVX},   {"Piledriver", RS_ISA_AVX},  {"Steamroller", RS_ISA_AVX},
    {"Excavator", RS_ISA_AVX},   {"Haswell", RS_ISA_AVX2},    {"Zen", RS_ISA_AVX2},
    {"SkylakeX", RS_ISA_AVX512}, {"Cooperlake", RS_ISA_AVX512}, {"SapphireRapids", RS_ISA_AVX512},
};

enum rs_isa rs_blas_core_isa(const char *core) {
    if (!core) return RS_ISA_UNKNOWN;
    for (size_t i = 0; i < sizeof CORES / sizeof *CORES; i++)
        if (!strcasecmp(core, CORES[i].name)) return CORES[i].isa;
    return RS_ISA_UNKNOWN;
}

const char *rs_blas_best_core(enum rs_isa cpu) {
    switch (cpu) {
    case RS_ISA_AVX512: return "SkylakeX";
    case RS_ISA_AVX2: return "Haswell";
    case RS_ISA_AVX: return "Sandybridge";
    default: return "Prescott";
    }
}

double rs_blas_expected_gain(enum rs_isa from, enum rs_isa to) {
    /* SGEMM 1024^3 on one thread, GFLOP/s, medians of tests/bench/blas_guard_bench.sh on a Zen 4 EPYC
     * (AVX-512): Prescott 38.1, Sandybridge 94.9, Haswell 102.2, SkylakeX 190.1. AVX without AVX2 is
     * no trap there; SSE is. */
    static const double rate[RS_ISA_COUNT] = {0.0, 38.1, 94.9, 102.2, 190.1};
    if (from <= RS_ISA_UNKNOWN || to <= RS_ISA_UNKNOWN || from >= RS_ISA_COUNT || to >= RS_ISA_COUNT || to <= from)
        return 1.0;
    return rate[to] > rate[from] ? rate[to] / rate[from] : 1.0;
}

const char *rs_blas_action_name(enum rs_blas_action a) {
    switch (a) {
    case RS_BLAS_RUN: return "run";
    case RS_BLAS_WARN: return "warn";
    case RS_BLAS_REEXEC: return "reexec";
    case RS_BLAS_REFUSE: return "refuse";
    default: return "?";
    }
}

/* ---- the decision -------------------------------------------------------------------------------- */

void rs_blas_decide(rs_blas_verdict *v, const rs_blas_situation *s) {
    memset(v, 0, sizeof *v);
    enum rs_isa cpu = s->cpu, kern = rs_blas_core_isa(s->core);
    const char *core = s->core ? s->core : "unknown", *best = rs_blas_best_core(cpu);
    const char *user = s->user && *s->user && !s->reexeced ? s->user : NULL;
    char how[96];
    if (s->reexeced) snprintf(how, sizeof how, "resae set OPENBLAS_CORETYPE=%s", s->user ? s->user : "?");
    else if (user) snprintf(how, sizeof how, "user OPENBLAS_CORETYPE=%s", user);
    else snprintf(how, sizeof how, "native detection");
    snprintf(v->status, sizeof v->status, "%s; kernels %s, CPU %s", how, rs_isa_name(kern), rs_isa_name(cpu));
    /* a name OPENBLAS_CORETYPE gives that OpenBLAS did not take: it ignored it and detected the CPU */
    char ignored[200] = "";
    if (user && rs_blas_core_isa(user) == RS_ISA_UNKNOWN)
        snprintf(ignored, sizeof ignored,
                 "OPENBLAS_CORETYPE=%s names no OpenBLAS kernel set, so OpenBLAS ignored it and detected '%s'; ",
                 user, core);

    if (kern == RS_ISA_UNKNOWN) {
        v->action = RS_BLAS_WARN;
        snprintf(v->msg, sizeof v->msg,
                 "%sOpenBLAS runs a kernel set named '%s', which resae's table of OpenBLAS kernel sets does not "
                 "know, so whether it suits this CPU (%s) is not checked (its results are, by the self-test); "
                 "if BLAS is slow, set OPENBLAS_CORETYPE=%s",
                 ignored, core, rs_isa_name(cpu), best);
        return;
    }
    if (kern > cpu) {
        if (!s->reexeced) { /* the best set this CPU runs, in a re-exec that warns */
            v->action = RS_BLAS_REEXEC;
            v->reexec_core = best;
            return;
        }
        v->action = RS_BLAS_REFUSE;
        snprintf(v->msg, sizeof v->msg,
                 "%sOpenBLAS runs its '%s' kernels (%s) on a CPU with only %s: they would stop on an illegal "
                 "instruction (%s). Fix: set OPENBLAS_CORETYPE=%s, or unset it",
                 ignored, core, rs_isa_name(kern), rs_isa_name(cpu), how, best);
        return;
    }
    if (s->reexeced && s->replaced && *s->replaced) { /* the re-exec above: say what it replaced */
        v->action = RS_BLAS_WARN;
        snprintf(v->status, sizeof v->status, "%s in place of OPENBLAS_CORETYPE=%s; kernels %s, CPU %s", how,
                 s->replaced, rs_isa_name(kern), rs_isa_name(cpu));
        enum rs_isa was = rs_blas_core_isa(s->replaced);
        char what[160];
        if (was == RS_ISA_UNKNOWN) /* OpenBLAS ignored the name and detected a set above the CPU */
            snprintf(what, sizeof what, "names no OpenBLAS kernel set, and the set OpenBLAS detected instead uses "
                     "instructions");
        else
            snprintf(what, sizeof what, "(set before resae started) selects %s kernels, which", rs_isa_name(was));
        snprintf(v->msg, sizeof v->msg,
                 "OPENBLAS_CORETYPE=%s %s this CPU (%s) cannot run: they would stop on an illegal instruction. "
                 "resae re-executed itself with OPENBLAS_CORETYPE=%s. To silence this, set OPENBLAS_CORETYPE=%s "
                 "on this node or unset it",
                 s->replaced, what, rs_isa_name(cpu), core, best);
        return;
    }
    /* the trap is the SSE-only sets on a CPU with AVX2 (3-7x); AVX and AVX2 sets are SIMD choices */
    int generic_trap = kern == RS_ISA_SSE && cpu >= RS_ISA_AVX2;
    double gain = rs_blas_expected_gain(kern, cpu);
    if (generic_trap) {
        if (!user && !s->reexeced) {
            v->action = RS_BLAS_REEXEC;
            v->reexec_core = best;
            return;
        }
        if (s->allow_generic) {
            v->action = RS_BLAS_WARN;
            snprintf(v->status, sizeof v->status, "%s; generic %s kernels allowed (RESAE_ALLOW_GENERIC_BLAS=1), CPU %s",
                     how, rs_isa_name(kern), rs_isa_name(cpu));
            snprintf(v->msg, sizeof v->msg,
                     "%sOpenBLAS runs its generic '%s' kernels (%s) on a CPU with %s (%s): BLAS is about %.1fx "
                     "slower than with OPENBLAS_CORETYPE=%s (allowed by RESAE_ALLOW_GENERIC_BLAS=1)",
                     ignored, core, rs_isa_name(kern), rs_isa_name(cpu), how, gain, best);
            return;
        }
        v->action = RS_BLAS_REFUSE;
        snprintf(v->msg, sizeof v->msg,
                 "%sOpenBLAS runs its generic '%s' kernels (%s) on a CPU with %s (%s), about %.1fx slower than "
                 "it should be. Fix: set OPENBLAS_CORETYPE=%s%s, or RESAE_ALLOW_GENERIC_BLAS=1 to run slowly "
                 "anyway",
                 ignored, core, rs_isa_name(kern), rs_isa_name(cpu), how, gain, best,
                 user ? " (or unset it and let resae choose)" : "");
        return;
    }
    if (kern < cpu && !s->reexeced && gain >= 1.1) { /* a faster set exists: say so, keep this one */
        v->action = RS_BLAS_WARN;
        snprintf(v->msg, sizeof v->msg,
                 "%sOpenBLAS runs its '%s' kernels (%s) on a CPU with %s (%s); OPENBLAS_CORETYPE=%s would make "
                 "SGEMM about %.1fx faster. resae keeps %s",
                 ignored, core, rs_isa_name(kern), rs_isa_name(cpu), how, best, gain,
                 user ? "your setting" : "OpenBLAS's choice");
        return;
    }
    v->action = ignored[0] ? RS_BLAS_WARN : RS_BLAS_RUN;
    if (ignored[0]) {
        snprintf(v->msg, sizeof v->msg, "%s", ignored);
        v->msg[strlen(v->msg) - 2] = '\0'; /* drop the "; " */
    }
}

/* ---- the self-test ------------------------------------------------------------------------------- */

/* Deterministic values in [-1, 1): the test needs no quality, only non-trivial inputs. */
static double tval(unsigned i, unsigned salt) {
    unsigned h = (i + 1u) * 2654435761u ^ (salt * 40503u + 0x9e3779b9u);
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    return (double)(h % 2001u) / 1000.0 - 1.0;
}

/* |got - want| <= bound for every entry; reports the worst violation. bound(i) = tol * scale(i). */
typedef struct check {
    double worst; /* worst |got - want| / bound, > 1 fails */
    size_t at;
} check;

static void check_entry(check *c, size_t i, double got, double want, double bound) {
    double r = fabs(got - want) / bound;
    if (!(r <= c->worst)) { /* NaN counts as the worst */
        c->worst = isnan(r) ? INFINITY : r;
        c->at = i;
    }
}

static rs_err selftest_fail(const char *routine, const check *c) {
    const char *core = rs_blas_corename();
    enum rs_isa cpu = rs_cpu_isa();
    /* the widest other kernel set this CPU runs */
    static const char *const order[] = {"SkylakeX", "Haswell", "Sandybridge", "Prescott"};
    const char *other = "Prescott";
    for (size_t i = 0; i < sizeof order / sizeof *order; i++)
        if (strcasecmp(order[i], core) && rs_blas_core_isa(order[i]) <= cpu) {
            other = order[i];
            break;
        }
    int generic = rs_blas_core_isa(other) == RS_ISA_SSE && cpu >= RS_ISA_AVX2;
    RS_FAIL(RS_ERR_NUMERIC,
            "the BLAS self-test failed: %s with OpenBLAS's '%s' kernels is wrong at entry %zu (error %.3g times "
            "the rounding bound). Fix: choose another kernel set, e.g. OPENBLAS_CORETYPE=%s%s; "
            "RESAE_NO_BLAS_GUARD=1 skips the check at your own risk",
            routine, core, c->at, c->worst, other, generic ? " with RESAE_ALLOW_GENERIC_BLAS=1" : "");
}

/* Entry bound for a sum of k products: gamma_k * sum |a||b| with a safety factor (Higham 3.5). */
static double dot_bound(double abs_sum, int k, double eps) { return 4.0 * (k + 2) * eps * abs_sum + 1e-300; }

static rs_err selftest_sgemm(void) {
    enum { M = 37, N = 29, K = 53 };
    static float a[M * K], b[K * N], bt[N * K], c[M * N];
    for (unsigned i = 0; i < M * K; i++) a[i] = (float)tval(i, 1);
    for (unsigned i = 0; i < K * N; i++) b[i] = (float)tval(i, 2);
    for (int l = 0; l < K; l++)
        for (int j = 0; j < N; j++) bt[j * K + l] = b[l * N + j];
    for (int pass = 0; pass < 2; pass++) { /* the two forms resae uses: NN and NT, beta 0 and 1 */
        for (unsigned i = 0; i < M * N; i++) c[i] = pass ? (float)tval(i, 3) : 0.0f;
        float c0[M * N];
        memcpy(c0, c, sizeof c);
        if (pass == 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, -0.5f, a, K, bt, K, 1.0f, c, N);
        check ck = {0};
        double alpha = pass ? -0.5 : 1.0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0, as = 0;
                for (int l = 0; l < K; l++) {
                    s += (double)a[i * K + l] * b[l * N + j];
                    as += fabs((double)a[i * K + l] * b[l * N + j]);
                }
                double want = alpha * s + c0[i * N + j];
                check_entry(&ck, (size_t)i * N + j, c[i * N + j], want,
                            dot_bound(fabs(alpha) * as + fabs(c0[i * N + j]), K, FLT_EPSILON));
            }
        if (ck.worst > 1.0) return selftest_fail(pass ? "SGEMM (NT, beta 1)" : "SGEMM (NN)", &ck);
    }
    return RS_OK;
}

/* DGEMM (TN), DSYRK (upper, T), DSYR and DGER: the Gram accumulation of the affine fits. */
static rs_err selftest_gram(void) {
    enum { K = 41, DX = 23, DY = 19 };
    static double x[K * DX], y[K * DY], cxx[DX * DX], cxy[DX * DY];
    for (unsigned i = 0; i < K * DX; i++) x[i] = tval(i, 4);
    for (unsigned i = 0; i < K * DY; i++) y[i] = tval(i, 5);
    for (unsigned i = 0; i < DX * DX; i++) cxx[i] = tval(i, 6);
    for (unsigned i = 0; i < DX * DY; i++) cxy[i] = tval(i, 7);
    double cxx0[DX * DX], cxy0[DX * DY];
    memcpy(cxx0, cxx, sizeof cxx);
    memcpy(cxy0, cxy, sizeof cxy);
    double w = 0.75, u[DX], v[DY];
    for (int i = 0; i < DX; i++) u[i] = tval((unsigned)i, 8);
    for (int j = 0; j < DY; j++) v[j] = tval((unsigned)j, 9);
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, DX, K, 1.0, x, DX, 1.0, cxx, DX);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, DX, DY, K, 1.0, x, DX, y, DY, 1.0, cxy, DY);
    cblas_dsyr(CblasRowMajor, CblasUpper, DX, w, u, 1, cxx, DX);
    cblas_dger(CblasRowMajor, DX, DY, w, u, 1, v, 1, cxy, DY);
    check cs = {0}, cg = {0};
    for (int i = 0; i < DX; i++) {
        for (int j = i; j < DX; j++) {
            double s = cxx0[i * DX + j] + w * u[i] * u[j], as = fabs(s);
            for (int l = 0; l < K; l++) {
                s += x[l * DX + i] * x[l * DX + j];
                as += fabs(x[l * DX + i] * x[l * DX + j]);
            }
            check_entry(&cs, (size_t)i * DX + j, cxx[i * DX + j], s, dot_bound(as, K + 2, DBL_EPSILON));
        }
        for (int j = 0; j < DY; j++) {
            double s = cxy0[i * DY + j] + w * u[i] * v[j], as = fabs(s);
            for (int l = 0; l < K; l++) {
                s += x[l * DX + i] * y[l * DY + j];
                as += fabs(x[l * DX + i] * y[l * DY + j]);
            }
            check_entry(&cg, (size_t)i * DY + j, cxy[i * DY + j], s, dot_bound(as, K + 2, DBL_EPSILON));
        }
    }
    if (cs.worst > 1.0) return selftest_fail("DSYRK/DSYR", &cs);
    if (cg.worst > 1.0) return selftest_fail("DGEMM (TN)/DGER", &cg);
    return RS_OK;
}

/* An SPD test matrix (n, n) column-major: M^T M / n + I, well conditioned; b (n, nrhs). */
static void spd_system(double *a, double *b, int n, int nrhs) {
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) {
            double s = i == j ? 1.0 : 0.0;
            for (int l = 0; l < n; l++) s += tval((unsigned)(l * n + i), 10) * tval((unsigned)(l * n + j), 10) / n;
            a[(size_t)j * n + i] = s;
        }
    for (int i = 0; i < n * nrhs; i++) b[i] = tval((unsigned)i, 11);
}

/* Plain C Cholesky solve of the column-major system in place (b <- a^-1 b); a is overwritten. */
static void cholesky_solve(double *a, double *b, int n, int nrhs) {
    for (int j = 0; j < n; j++) { /* a = L L^T, L in the lower triangle */
        double d = a[(size_t)j * n + j];
        for (int l = 0; l < j; l++) d -= a[(size_t)l * n + j] * a[(size_t)l * n + j];
        d = sqrt(d);
        a[(size_t)j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = a[(size_t)j * n + i];
            for (int l = 0; l < j; l++) s -= a[(size_t)l * n + i] * a[(size_t)l * n + j];
            a[(size_t)j * n + i] = s / d;
        }
    }
    for (int r = 0; r < nrhs; r++) {
        double *x = b + (size_t)r * n;
        for (int i = 0; i < n; i++) {
            double s = x[i];
            for (int l = 0; l < i; l++) s -= a[(size_t)l * n + i] * x[l];
            x[i] = s / a[(size_t)i * n + i];
        }
        for (int i = n - 1; i >= 0; i--) {
            double s = x[i];
            for (int l = i + 1; l < n; l++) s -= a[(size_t)i * n + l] * x[l];
            x[i] = s / a[(size_t)i * n + i];
        }
    }
}

/* The solution of a well-conditioned system (cond < 10 here) agrees to ~n*eps*cond; 1e-10 is far
 * from both the rounding level and from what wrong kernels give. */
static void check_solution(check *c, const double *got, const double *want, int count) {
    for (int i = 0; i < count; i++) check_entry(c, (size_t)i, got[i], want[i], 1e-10 * (1.0 + fabs(want[i])));
}

static rs_err selftest_dposv(void) {
    enum { N = 31, R = 3 };
    static double a[N * N], b[N * R], a2[N * N], ref[N * R];
    spd_system(a, b, N, R);
    memcpy(a2, a, sizeof a);
    memcpy(ref, b, sizeof b);
    cholesky_solve(a2, ref, N, R);
    int n = N, nrhs = R, info = 0;
    dposv_("U", &n, &nrhs, a, &n, b, &n, &info, 1);
    check ck = {0};
    if (info != 0) ck.worst = INFINITY;
    else check_solution(&ck, b, ref, N * R);
    if (ck.worst > 1.0) return selftest_fail(info ? "DPOSV (reported the SPD matrix singular)" : "DPOSV", &ck);
    return RS_OK;
}

rs_err rs_blas_selftest(void) {
    RS_TRY(selftest_sgemm());
    RS_TRY(selftest_gram());
    RS_TRY(selftest_dposv());
    return RS_OK;
}

rs_err rs_blas_selftest_pdposv(MPI_Comm comm, int nprow, int npcol) {
    if (getenv("RESAE_NO_BLAS_GUARD") && !strcmp(getenv("RESAE_NO_BLAS_GUARD"), "1")) return RS_OK;
    /* n spans several nb blocks on every grid rank of grids up to 4 x 4 */
    enum { N = 40, R = 2, NB = 4 };
    rs_blacs_grid g;
    RS_TRY(rs_blacs_grid_init(&g, comm, nprow, npcol));
    double *a = malloc(sizeof(double) * N * N), *b = malloc(sizeof(double) * N * R);
    double *ref = malloc(sizeof(double) * N * R), *x = calloc((size_t)N * R, sizeof(double));
    double *aloc = NULL, *bloc = NULL;
    int info = 0, bad_alloc = !a || !b || !ref || !x;
    if (!bad_alloc) {
        spd_system(a, b, N, R);
        memcpy(ref, b, sizeof(double) * N * R);
        double *a2 = malloc(sizeof(double) * N * N);
        if (a2) {
            memcpy(a2, a, sizeof(double) * N * N);
            cholesky_solve(a2, ref, N, R);
            free(a2);
        } else bad_alloc = 1;
    }
    if (!bad_alloc && g.in_grid) {
        int n = N, r = R, nb = NB, zero = 0, one = 1, ctxt = g.ctxt, dinfo = 0;
        int mloc = rs_blacs_numroc(N, NB, g.myrow, g.nprow), nla = rs_blacs_numroc(N, NB, g.mycol, g.npcol);
        int nlb = rs_blacs_numroc(R, NB, g.mycol, g.npcol), lld = mloc > 1 ? mloc : 1;
        int desc_a[RS_DESC_LEN], desc_b[RS_DESC_LEN];
        descinit_(desc_a, &n, &n, &nb, &nb, &zero, &zero, &ctxt, &lld, &dinfo);
        descinit_(desc_b, &n, &r, &nb, &nb, &zero, &zero, &ctxt, &lld, &dinfo);
        aloc = calloc((size_t)lld * (size_t)(nla > 0 ? nla : 1), sizeof(double));
        bloc = calloc((size_t)lld * (size_t)(nlb > 0 ? nlb : 1), sizeof(double));
        if (!aloc || !bloc) bad_alloc = 1;
        else {
            for (int jl = 0; jl < nla; jl++)
                for (int il = 0; il < mloc; il++)
                    aloc[il + (size_t)jl * lld] = a[(size_t)rs_blacs_l2g(jl, NB, g.mycol, g.npcol) * N +
                                                    rs_blacs_l2g(il, NB, g.myrow, g.nprow)];
            for (int jl = 0; jl < nlb; jl++)
                for (int il = 0; il < mloc; il++)
                    bloc[il + (size_t)jl * lld] = b[(size_t)rs_blacs_l2g(jl, NB, g.mycol, g.npcol) * N +
                                                    rs_blacs_l2g(il, NB, g.myrow, g.nprow)];
            pdposv_("U", &n, &r, aloc, &one, &one, desc_a, bloc, &one, &one, desc_b, &info, 1);
            if (info == 0 && g.myrow >= 0) /* each entry of x lives on exactly one grid rank */
                for (int jl = 0; jl < nlb; jl++)
                    for (int il = 0; il < mloc; il++)
                        x[(size_t)rs_blacs_l2g(jl, NB, g.mycol, g.npcol) * N + rs_blacs_l2g(il, NB, g.myrow, g.nprow)] =
                            bloc[il + (size_t)jl * lld];
        }
    }
    int flags[2] = {bad_alloc, info != 0}, any[2] = {0, 0};
    MPI_Allreduce(flags, any, 2, MPI_INT, MPI_MAX, comm);
    rs_err err = RS_OK;
    if (any[0]) err = RS_ERR(RS_ERR_NOMEM, "out of memory in the PDPOSV self-test");
    else {
        if (x) MPI_Allreduce(MPI_IN_PLACE, x, N * R, MPI_DOUBLE, MPI_SUM, comm);
        check ck = {0};
        if (any[1]) ck.worst = INFINITY;
        else check_solution(&ck, x, ref, N * R);
        /* every rank compared the same gathered x with the same reference, so all agree */
        if (ck.worst > 1.0) {
            char what[96];
            snprintf(what, sizeof what, "PDPOSV on a %d x %d grid%s", nprow, npcol,
                     any[1] ? " (reported the SPD matrix singular)" : "");
            err = selftest_fail(what, &ck);
        }
    }
    free(a);
    free(b);
    free(ref);
    free(x);
    free(aloc);
    free(bloc);
    rs_blacs_grid_free(&g);
    return err;
}

/* ---- the guard ----------------------------------------------------------------------------------- */

static char g_status[384] = "not run";

const char *rs_blas_corename(void) {
    const char *n = openblas_get_corename();
    return n ? n : "unknown";
}

const char *rs_blas_guard_status(void) { return g_status; }

static int env_is(const char *name, const char *val) {
    const char *e = getenv(name);
    return e && !strcmp(e, val);
}

/* Whether this process is rank 0 of its job as the launcher numbers it (MPI_Init has not run yet);
 * a process started without a launcher counts as rank 0. */
static int launcher_rank0(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID", NULL};
    for (const char *const *v = vars; *v; v++) {
        const char *e = getenv(*v);
        if (e && *e) return atoi(e) == 0;
    }
    return 1;
}

/* Commands that read files and print, with no BLAS work to speak of: the warning would only repeat
 * what `resae run` and `resae version` say (refusals and the self-test still apply). */
static int bookkeeping_command(int argc, char **argv) {
    static const char *const quiet[] = {"status", "validate", "report", "help", NULL};
    if (argc < 2) return 0;
    for (const char *const *q = quiet; *q; q++)
        if (!strcmp(argv[1], *q)) return 1;
    return 0;
}

rs_err rs_blas_guard(int argc, char **argv) {
    static int done = 0;
    static rs_err result = RS_OK;
    if (done) return result;
    done = 1;
    if (env_is("RESAE_NO_BLAS_GUARD", "1")) {
        snprintf(g_status, sizeof g_status, "guard and self-test disabled (RESAE_NO_BLAS_GUARD=1)");
        return RS_OK;
    }
    rs_blas_situation s = {
        .cpu = rs_cpu_isa(),
        .core = rs_blas_corename(),
        .user = getenv("OPENBLAS_CORETYPE"),
        .reexeced = env_is("RESAE_BLAS_REEXEC", "1"),
        .replaced = getenv("RESAE_BLAS_REPLACED"),
        .allow_generic = env_is("RESAE_ALLOW_GENERIC_BLAS", "1"),
    };
    if (s.user && !*s.user) s.user = NULL;
    rs_blas_verdict v;
    rs_blas_decide(&v, &s);
    if (v.action == RS_BLAS_REEXEC) {
        /* kernels above the CPU: the re-exec names the value it replaced in its warning */
        if (rs_blas_core_isa(s.core) > s.cpu && s.user) setenv("RESAE_BLAS_REPLACED", s.user, 1);
        setenv("OPENBLAS_CORETYPE", v.reexec_core, 1);
        setenv("RESAE_BLAS_REEXEC", "1", 1);
        execv("/proc/self/exe", argv);
        /* execv returned: the kernels stay; refuse as if the user had chosen them */
        unsetenv("RESAE_BLAS_REEXEC");
        unsetenv("RESAE_BLAS_REPLACED");
        unsetenv("OPENBLAS_CORETYPE");
        s.reexeced = 1;
        s.user = "(re-exec failed)";
        rs_blas_decide(&v, &s);
    }
    unsetenv("RESAE_BLAS_REEXEC"); /* not inherited by anything this process starts */
    unsetenv("RESAE_BLAS_REPLACED");
    if (v.action == RS_BLAS_REFUSE) {
        snprintf(g_status, sizeof g_status, "refused: %s", v.status);
        result = RS_ERR(RS_ERR_UNSUPPORTED, "%s", v.msg);
        return result;
    }
    if (v.action == RS_BLAS_WARN && launcher_rank0() && !bookkeeping_command(argc, argv)) {
        fprintf(stderr, "warning: %s\n", v.msg);
        fflush(stderr);
    }
    double t0 = rs_now();
    result = rs_blas_selftest();
    if (result) {
        snprintf(g_status, sizeof g_status, "self-test failed: %s", v.status);
        return result;
    }
    snprintf(g_status, sizeof g_status, "%s; self-test passed in %.1f ms", v.status, 1e3 * (rs_now() - t0));
    return RS_OK;
}

/* ---- threads ------------------------------------------------------------------------------------- */

void rs_blas_set_threads_for_ranks(int local_ranks) {
    const char *e = getenv("OPENBLAS_NUM_THREADS");
    if (e && atoi(e) > 0) return; /* the user's choice, read by OpenBLAS at load */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1) ncpu = 1;
    if (local_ranks < 1) local_ranks = 1;
    long t = ncpu / local_ranks;
    openblas_set_num_threads(t < 1 ? 1 : (int)t);
}

int rs_blas_threads(void) { return openblas_get_num_threads(); }
