/* OpenBLAS kernel guard, kernel self-test and thread policy.
 *
 * OpenBLAS picks its kernel set when the library loads: from OPENBLAS_CORETYPE if that is set (sites
 * and container images preset it, because some OpenBLAS builds compute wrong results or crash with
 * their auto-detected kernels on some CPUs), else by detecting the CPU (Debian's 0.3.21 misdetects
 * some AVX-512 Xeons and falls back to SSE3 "Prescott" kernels, about 5x slower).
 *
 * The guard classifies the kernel set by the instruction set it uses (a table of OpenBLAS core names,
 * case-insensitive) against what the CPU offers, and then checks the kernels by their results:
 *   - a set the user chose (OPENBLAS_CORETYPE set before resae started) is respected; if a wider set
 *     would be faster, one warning names it and the expected gain;
 *   - a generic (SSE-only, pre-AVX) set on an AVX2/AVX-512 CPU is the trap (SGEMM 3-7x slower; the
 *     AVX sets such as Sandybridge run SGEMM about as fast as Haswell): when the user did not choose it the
 *     process re-execs itself with OPENBLAS_CORETYPE set (before MPI_Init), when the user did it is
 *     refused (RESAE_ALLOW_GENERIC_BLAS=1 runs it anyway);
 *   - a set wider than the CPU (a site presetting SkylakeX on every node of a mixed cluster) would stop
 *     on an illegal instruction: the process re-execs itself with the best set the CPU runs and warns
 *     once, naming the variable and the value it replaced;
 *   - a name the table does not know runs with a warning that names it;
 *   - then SGEMM, DGEMM, DSYRK, DSYR, DGER and DPOSV are run on small problems and compared with plain
 *     C loops; wrong results are refused with the kernel set's name and the fix. PDPOSV is checked the
 *     same way on each worker group before its first solve (rs_blas_selftest_pdposv, affine.c).
 * RESAE_NO_BLAS_GUARD=1 skips the guard and the self-tests. */
#ifndef RESAE_BLAS_H
#define RESAE_BLAS_H

#include <mpi.h>

#include "resae/err.h"

/* Instruction-set level of a CPU or of an OpenBLAS kernel set, narrowest first. */
enum rs_isa {
    RS_ISA_UNKNOWN = 0, /* a kernel-set name the table does not know */
    RS_ISA_SSE,         /* SSE2/SSE3: Prescott, Core2, Nehalem, Barcelona, ... (generic) */
    RS_ISA_AVX,         /* AVX (and FMA3/FMA4 on AMD): Sandybridge, Bulldozer ... Excavator */
    RS_ISA_AVX2,        /* AVX2 + FMA3: Haswell, Zen */
    RS_ISA_AVX512,      /* AVX-512 F/BW/VL/DQ: SkylakeX, Cooperlake, SapphireRapids */
    RS_ISA_COUNT
};
const char *rs_isa_name(enum rs_isa isa);

/* The widest level this CPU (and the OS, which must save the vector state) supports; capped by
 * RESAE_TEST_CPU_ISA (SSE, AVX, AVX2 or AVX-512), which the guard's tests use to stand for a narrower CPU. */
enum rs_isa rs_cpu_isa(void);
/* The level an OpenBLAS core name uses (case-insensitive); RS_ISA_UNKNOWN if not in the table. */
enum rs_isa rs_blas_core_isa(const char *core);
/* The OpenBLAS kernel set to ask for on a CPU of level cpu ("SkylakeX", "Haswell", ...). */
const char *rs_blas_best_core(enum rs_isa cpu);
/* Expected SGEMM speed-up of moving from a kernel set of level from to one of level to (measured;
 * 1 when to <= from or a level is unknown). */
double rs_blas_expected_gain(enum rs_isa from, enum rs_isa to);

/* ---- the decision, as a pure function (tested for every case without the CPU in question) ---- */
enum rs_blas_action {
    RS_BLAS_RUN,    /* run with the kernels in use */
    RS_BLAS_WARN,   /* run, after printing msg once */
    RS_BLAS_REEXEC, /* re-exec with OPENBLAS_CORETYPE=reexec_core */
    RS_BLAS_REFUSE, /* fail with msg */
    RS_BLAS_ACTION_COUNT
};
const char *rs_blas_action_name(enum rs_blas_action a);

typedef struct rs_blas_situation {
    enum rs_isa cpu;   /* rs_cpu_isa() */
    const char *core;  /* the kernel set OpenBLAS runs (openblas_get_corename) */
    const char *user;  /* OPENBLAS_CORETYPE as set before resae started; NULL if unset or empty */
    int reexeced;      /* this process is the guard's own re-exec */
    const char *replaced; /* in the re-exec: the OPENBLAS_CORETYPE it replaced (kernels above the CPU) */
    int allow_generic; /* RESAE_ALLOW_GENERIC_BLAS=1 */
} rs_blas_situation;

typedef struct rs_blas_verdict {
    enum rs_blas_action action;
    const char *reexec_core; /* for RS_BLAS_REEXEC */
    char msg[640];           /* the warning or the refusal (without "warning: " / "error: ") */
    char status[256];        /* one line for `resae version` and the run log */
} rs_blas_verdict;

void rs_blas_decide(rs_blas_verdict *v, const rs_blas_situation *s);

/* Call first in main(), before MPI_Init and before any thread starts: decides as above (may re-exec
 * and then does not return), prints a warning once per job (only the launcher's rank 0 prints, and
 * not for the bookkeeping commands status, validate, report and help), runs
 * the kernel self-test. Fails with RS_ERR_UNSUPPORTED (refused kernels) or RS_ERR_NUMERIC (wrong
 * results). Idempotent: a second call returns the first one's result. */
rs_err rs_blas_guard(int argc, char **argv);

/* The kernel self-test on its own (local, a few milliseconds): the BLAS and LAPACK routines resae
 * calls, on small problems, against plain C loops. */
rs_err rs_blas_selftest(void);
/* Collective over comm: PDPOSV on a small SPD system spread over every rank of an nprow x npcol grid
 * on comm (the grid a solve is about to use), gathered and compared with a plain C Cholesky solve.
 * Every rank returns the same result. */
rs_err rs_blas_selftest_pdposv(MPI_Comm comm, int nprow, int npcol);

/* Name of the OpenBLAS kernel set in use, e.g. "SkylakeX", "Prescott". */
const char *rs_blas_corename(void);
/* How the guard ended, e.g. "native detection, AVX-512, self-test passed". */
const char *rs_blas_guard_status(void);

/* Threads per rank: OPENBLAS_NUM_THREADS if set, else cores / ranks on this node (at least 1). */
void rs_blas_set_threads_for_ranks(int local_ranks);
int rs_blas_threads(void);

#endif
