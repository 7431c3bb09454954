/* OpenBLAS speed guard and thread policy.
 * Debian's OpenBLAS 0.3.21 misdetects some AVX-512 Xeons and falls back to SSE3 ("Prescott")
 * kernels, about 5x slower. The kernel set is chosen when the library loads, so the fix is to
 * re-exec the process with OPENBLAS_CORETYPE set, before MPI_Init. */
#ifndef RESAE_BLAS_H
#define RESAE_BLAS_H

#include "resae/err.h"

enum rs_cpu_level { RS_CPU_BASE = 0, RS_CPU_AVX2 = 1, RS_CPU_AVX512 = 2 };

/* Call first in main(), before MPI_Init and before any thread starts. If the active kernels are
 * generic on a CPU with AVX2/AVX-512 and OPENBLAS_CORETYPE is unset, re-execs the program with it
 * set (does not return on success). Fails (RS_ERR_UNSUPPORTED) if the kernels are still generic,
 * unless RESAE_ALLOW_GENERIC_BLAS=1. RESAE_NO_BLAS_GUARD=1 skips the check entirely. */
rs_err rs_blas_guard(int argc, char **argv);

int rs_cpu_level(void);
const char *rs_cpu_level_name(int level);
/* Name of the OpenBLAS kernel set in use, e.g. "SkylakeX", "Prescott". */
const char *rs_blas_corename(void);
/* Whether the kernel set is the one this CPU should run (not a generic fallback). */
int rs_blas_kernels_ok(void);
/* How the guard ended: "native", "re-exec with OPENBLAS_CORETYPE=...", "user OPENBLAS_CORETYPE=...",
 * "disabled", "allowed generic". */
const char *rs_blas_guard_status(void);

/* Threads per rank: OPENBLAS_NUM_THREADS if set, else cores / ranks on this node (at least 1). */
void rs_blas_set_threads_for_ranks(int local_ranks);
int rs_blas_threads(void);

#endif
