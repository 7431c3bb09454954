#include "resae/err.h"

#include <errno.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RS_ERR_MSG_MAX 2048
#define RS_ERR_TRACE_MAX 4096

static _Thread_local char g_msg[RS_ERR_MSG_MAX];
static _Thread_local char g_trace[RS_ERR_TRACE_MAX];
static _Thread_local size_t g_trace_len;
static _Thread_local int g_remote; /* the record reports another rank's failure */

static void trace_append(const char *file, int line, const char *func) {
    if (g_trace_len >= RS_ERR_TRACE_MAX - 1) return;
    const char *base = strrchr(file, '/');
    int n = snprintf(g_trace + g_trace_len, RS_ERR_TRACE_MAX - g_trace_len, "  at %s (%s:%d)\n", func,
                     base ? base + 1 : file, line);
    if (n > 0) {
        g_trace_len += (size_t)n;
        if (g_trace_len >= RS_ERR_TRACE_MAX) g_trace_len = RS_ERR_TRACE_MAX - 1;
    }
}

/* An I/O error raised right after a failed write on a full file system (or quota) says so, whatever
 * layer (HDF5, stdio, MPI-IO) failed: errno is ENOSPC / EDQUOT there. */
static int space_hint(int saved_errno) {
    const char *what = saved_errno == ENOSPC ? "no space left on device"
#ifdef EDQUOT
                       : saved_errno == EDQUOT ? "disk quota exceeded"
#endif
                                               : NULL;
    const char *fix = "free space on that file system and run the same command again; finished work is kept";
    if (!what) return 0;
    if (strstr(g_msg, fix)) return 1;
    int named = strstr(g_msg, what + 1) != NULL; /* "o space left": strerror says "No space left" */
    size_t n = strlen(g_msg);
    snprintf(g_msg + n, sizeof g_msg - n, " (%s%s%s)", named ? "" : what, named ? "" : ": ", fix);
    return 1;
}

rs_err rs_err_set(rs_err code, const char *file, int line, const char *func, const char *fmt, ...) {
    int saved_errno = errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    if (code == RS_ERR_IO && space_hint(saved_errno)) code = RS_ERR_NOSPACE;
    g_trace_len = 0;
    g_trace[0] = '\0';
    g_remote = 0;
    trace_append(file, line, func);
    return code;
}

int rs_err_is_remote(void) { return g_remote; }
void rs_err_mark_remote(void) { g_remote = 1; }

rs_err rs_err_push(rs_err code, const char *file, int line, const char *func) {
    if (!g_msg[0]) snprintf(g_msg, sizeof g_msg, "%s", rs_err_name(code));
    trace_append(file, line, func);
    return code;
}

rs_err rs_err_prefix(rs_err code, const char *fmt, ...) {
    char ctx[RS_ERR_MSG_MAX], old[RS_ERR_MSG_MAX]; /* ctx may hold a path (up to 1024 bytes) and a hint */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    snprintf(old, sizeof old, "%s", g_msg[0] ? g_msg : rs_err_name(code));
    size_t n = strlen(ctx);
    if (n > sizeof g_msg - 3) n = sizeof g_msg - 3;
    memcpy(g_msg, ctx, n);
    memcpy(g_msg + n, ": ", 2);
    size_t room = sizeof g_msg - n - 2, m = strlen(old);
    if (m >= room) m = room - 1;
    memcpy(g_msg + n + 2, old, m);
    g_msg[n + 2 + m] = '\0';
    return code;
}

const char *rs_err_msg(void) { return g_msg; }
const char *rs_err_trace(void) { return g_trace; }

void rs_err_clear(void) {
    g_msg[0] = '\0';
    g_trace[0] = '\0';
    g_trace_len = 0;
    g_remote = 0;
}

const char *rs_err_name(rs_err code) {
    switch (code) {
    case RS_OK: return "success";
    case RS_ERR_IO: return "I/O error";
    case RS_ERR_INVAL: return "invalid value";
    case RS_ERR_FORMAT: return "malformed input";
    case RS_ERR_NOMEM: return "out of memory";
    case RS_ERR_MPI: return "MPI error";
    case RS_ERR_NUMERIC: return "numerical error";
    case RS_ERR_CONFIG: return "configuration error";
    case RS_ERR_UNSUPPORTED: return "unsupported";
    case RS_ERR_INTERRUPTED: return "interrupted";
    case RS_ERR_INTERNAL: return "internal error";
    case RS_ERR_NOSPACE: return "no space left on device";
    default: return "unknown error";
    }
}

void rs_err_print(void) {
    fprintf(stderr, "error: %s\n", g_msg[0] ? g_msg : "unknown error");
    const char *tb = getenv("RESAE_TRACEBACK");
    if (tb && tb[0] == '1' && g_trace_len) fprintf(stderr, "traceback (innermost first):\n%s", g_trace);
    fflush(stderr);
}

void rs_err_abort_comm(void *comm_ptr, rs_err code, const char *file, int line, const char *func) {
    rs_err_push(code, file, line, func);
    int rank = -1;
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fprintf(stderr, "[r%d] fatal inside a collective: %s\n%s", rank, g_msg, g_trace);
    fflush(stderr);
    if (inited) MPI_Abort(*(MPI_Comm *)comm_ptr, 1);
    exit(1);
}
