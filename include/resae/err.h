/* Errors: every fallible function returns an rs_err (0 = success); the message and a traceback live in
 * thread-local storage (rs_err_msg, rs_err_trace). Three tiers:
 *
 *   local   RS_FAIL / RS_ERR / RS_CHECK record a message with file:line; RS_TRY and RS_TRY_GOTO
 *           propagate it and append a traceback frame. Never re-wrap a propagated error with
 *           RS_FAIL(err, "...: %s", rs_err_msg()): that drops the traceback; use RS_TRY, or
 *           rs_err_prefix to add context in front of the message while keeping the frames.
 *   agreed  Code that runs on every rank of a communicator ends a collective phase with
 *           RS_AGREE(local, comm, "what") or rs_agree (resae/mpi_util.h): every rank learns the lowest failing rank's
 *           code and, on the ranks that did not fail, the message says "rank R failed in WHAT". No
 *           rank leaves the phase early, so the scheduler can retry the task.
 *   abort   Code that cannot return inside a collective (rare) calls RS_TRY_COLL, which prints the
 *           error and MPI_Aborts the communicator. */
#ifndef RESAE_ERR_H
#define RESAE_ERR_H

#include <stddef.h>

typedef int rs_err;

enum rs_err_code {
    RS_OK = 0,
    RS_ERR_IO = 1,       /* file system, HDF5 I/O */
    RS_ERR_INVAL = 2,    /* invalid argument or value */
    RS_ERR_FORMAT = 3,   /* malformed input file */
    RS_ERR_NOMEM = 4,    /* allocation failed */
    RS_ERR_MPI = 5,      /* MPI or BLACS failure */
    RS_ERR_NUMERIC = 6,  /* NaN/Inf, failed factorization */
    RS_ERR_CONFIG = 7,   /* configuration error */
    RS_ERR_UNSUPPORTED = 8,
    RS_ERR_INTERRUPTED = 9, /* stopped by a signal after checkpointing */
    RS_ERR_INTERNAL = 10,
    RS_ERR_NOSPACE = 11 /* an I/O error on a full file system or quota (ENOSPC, EDQUOT): not retried */
};

/* Record an error (message formatted like printf); returns code. Replaces any previous record. */
rs_err rs_err_set(rs_err code, const char *file, int line, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Append a traceback frame to the current record; returns code. */
rs_err rs_err_push(rs_err code, const char *file, int line, const char *func);
/* The current message ("" if none) and traceback (one frame per line). */
const char *rs_err_msg(void);
const char *rs_err_trace(void);
const char *rs_err_name(rs_err code);
void rs_err_clear(void);
/* Print "error: MSG" (and the traceback when RESAE_TRACEBACK=1 or verbose) to stderr. */
void rs_err_print(void);

/* Whether the current record only reports another rank's failure (set by rs_agree on the ranks that
 * did not fail, cleared by the next rs_err_set): such a rank need not print it. rs_err_mark_remote
 * marks the current record so after rewording it. */
int rs_err_is_remote(void);
void rs_err_mark_remote(void);

/* Put CTX in front of the current message ("CTX: message"), keeping the traceback; returns code. */
rs_err rs_err_prefix(rs_err code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The expression form: records the error and evaluates to code (for `err = RS_ERR(...)`). */
#define RS_ERR(code, ...) rs_err_set((code), __FILE__, __LINE__, __func__, __VA_ARGS__)

#define RS_FAIL(code, ...) return rs_err_set((code), __FILE__, __LINE__, __func__, __VA_ARGS__)

/* Fail with code and the message unless cond holds (after PETSc's PetscCheck). */
#define RS_CHECK(cond, code, ...)                                                                            \
    do {                                                                                                     \
        if (!(cond)) return rs_err_set((code), __FILE__, __LINE__, __func__, __VA_ARGS__);                   \
    } while (0)

#define RS_TRY(expr)                                                         \
    do {                                                                     \
        rs_err rs_try_e_ = (expr);                                           \
        if (rs_try_e_) return rs_err_push(rs_try_e_, __FILE__, __LINE__, __func__); \
    } while (0)

/* Propagate to a cleanup label: sets variable `err` and jumps. */
#define RS_TRY_GOTO(expr, label)                                             \
    do {                                                                     \
        err = (expr);                                                        \
        if (err) { rs_err_push(err, __FILE__, __LINE__, __func__); goto label; } \
    } while (0)

#define RS_FAIL_GOTO(label, code, ...)                                       \
    do {                                                                     \
        err = rs_err_set((code), __FILE__, __LINE__, __func__, __VA_ARGS__); \
        goto label;                                                          \
    } while (0)

#define RS_CHECK_ALLOC(p)                                                    \
    do {                                                                     \
        if (!(p)) RS_FAIL(RS_ERR_NOMEM, "out of memory allocating %s", #p);  \
    } while (0)

/* Abort the communicator on failure (for code inside collectives). comm is an MPI_Comm. */
void rs_err_abort_comm(void *comm_ptr, rs_err code, const char *file, int line, const char *func);
#define RS_TRY_COLL(expr, comm)                                              \
    do {                                                                     \
        rs_err rs_try_e_ = (expr);                                           \
        if (rs_try_e_) { MPI_Comm rs_c_ = (comm); rs_err_abort_comm(&rs_c_, rs_try_e_, __FILE__, __LINE__, __func__); } \
    } while (0)

/* Convert an MPI return code into an rs_err record. */
#define RS_MPI(call)                                                         \
    do {                                                                     \
        int rs_mpi_e_ = (call);                                              \
        if (rs_mpi_e_ != MPI_SUCCESS) RS_FAIL(RS_ERR_MPI, "MPI call failed (code %d): %s", rs_mpi_e_, #call); \
    } while (0)

#endif
