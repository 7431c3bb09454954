#define _GNU_SOURCE
#include "resae/blas.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "resae/log.h"

static char g_status[128] = "not run";

int rs_cpu_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return RS_CPU_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return RS_CPU_AVX2;
    return RS_CPU_BASE;
}

const char *rs_cpu_level_name(int level) {
    switch (level) {
    case RS_CPU_AVX512: return "AVX-512";
    case RS_CPU_AVX2: return "AVX2";
    default: return "baseline x86-64";
    }
}

const char *rs_blas_corename(void) {
    const char *n = openblas_get_corename();
    return n ? n : "unknown";
}

static int name_in(const char *name, const char *const *list) {
    for (; *list; list++)
        if (!strcasecmp(name, *list)) return 1;
    return 0;
}

int rs_blas_kernels_ok(void) {
    static const char *const avx512_ok[] = {"skylakex", "cooperlake", "sapphirerapids", "zen", NULL};
    static const char *const avx2_ok[] = {"haswell",    "zen",           "skylakex",
                                          "cooperlake", "sapphirerapids", NULL};
    const char *name = rs_blas_corename();
    switch (rs_cpu_level()) {
    case RS_CPU_AVX512: return name_in(name, avx512_ok);
    case RS_CPU_AVX2: return name_in(name, avx2_ok);
    default: return 1;
    }
}

const char *rs_blas_guard_status(void) { return g_status; }

static int env_is(const char *name, const char *val) {
    const char *e = getenv(name);
    return e && !strcmp(e, val);
}

rs_err rs_blas_guard(int argc, char **argv) {
    (void)argc;
    if (env_is("RESAE_NO_BLAS_GUARD", "1")) {
        snprintf(g_status, sizeof g_status, "disabled (RESAE_NO_BLAS_GUARD=1)");
        return RS_OK;
    }
    const char *user = getenv("OPENBLAS_CORETYPE");
    int reexeced = env_is("RESAE_BLAS_REEXEC", "1");
    if (rs_blas_kernels_ok()) {
        if (reexeced) snprintf(g_status, sizeof g_status, "re-exec with OPENBLAS_CORETYPE=%s", user ? user : "?");
        else if (user) snprintf(g_status, sizeof g_status, "user OPENBLAS_CORETYPE=%s", user);
        else snprintf(g_status, sizeof g_status, "native detection");
        unsetenv("RESAE_BLAS_REEXEC");
        return RS_OK;
    }
    int level = rs_cpu_level();
    if (!user && !reexeced) {
        const char *want = level == RS_CPU_AVX512 ? "SkylakeX" : "Haswell";
        setenv("OPENBLAS_CORETYPE", want, 1);
        setenv("RESAE_BLAS_REEXEC", "1", 1);
        execv("/proc/self/exe", argv);
        /* execv returned: fall through to the refusal below with the original kernels */
        unsetenv("OPENBLAS_CORETYPE");
    }
    if (env_is("RESAE_ALLOW_GENERIC_BLAS", "1")) {
        snprintf(g_status, sizeof g_status, "allowed generic (RESAE_ALLOW_GENERIC_BLAS=1)");
        fprintf(stderr,
                "warning: OpenBLAS runs its '%s' kernels on a CPU with %s; BLAS is several times slower "
                "than it should be (allowed by RESAE_ALLOW_GENERIC_BLAS=1)\n",
                rs_blas_corename(), rs_cpu_level_name(level));
        return RS_OK;
    }
    RS_FAIL(RS_ERR_UNSUPPORTED,
            "OpenBLAS selected its '%s' kernels on a CPU with %s (about 5x slower)%s%s%s. Fix: run with "
            "OPENBLAS_CORETYPE=%s (or unset it and let resae choose), or set RESAE_ALLOW_GENERIC_BLAS=1 to "
            "run slowly anyway",
            rs_blas_corename(), rs_cpu_level_name(level), user ? "; OPENBLAS_CORETYPE=" : "",
            user ? user : "", user ? " is set" : "", level == RS_CPU_AVX512 ? "SkylakeX" : "Haswell");
}

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
