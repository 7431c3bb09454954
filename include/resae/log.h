/* Logging: timestamped, rank-prefixed lines on stderr, with levels; progress lines with rate and ETA.
 * By default INFO/DEBUG print on rank 0 only (rs_log_all prints on every rank); WARN and ERROR
 * print on every rank. Level from RESAE_LOG_LEVEL (error|warn|info|debug) or rs_log_set_level. */
#ifndef RESAE_LOG_H
#define RESAE_LOG_H

#include <stdint.h>

enum rs_log_level { RS_LOG_ERROR = 0, RS_LOG_WARN = 1, RS_LOG_INFO = 2, RS_LOG_DEBUG = 3 };

void rs_log_init(int rank);          /* call once the rank is known (0 before MPI_Init) */
void rs_log_set_level(int level);
int rs_log_level(void);
double rs_now(void);                 /* monotonic seconds */
double rs_elapsed(void);             /* seconds since rs_log_init */

void rs_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rs_log_all(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define RS_ERROR(...) rs_log(RS_LOG_ERROR, __VA_ARGS__)
#define RS_WARN(...) rs_log(RS_LOG_WARN, __VA_ARGS__)
#define RS_INFO(...) rs_log(RS_LOG_INFO, __VA_ARGS__)
#define RS_DEBUG(...) rs_log(RS_LOG_DEBUG, __VA_ARGS__)

/* Progress of a long loop. `done` and `total` are in `unit`s (e.g. "tok", "step"). A line is
 * printed at most every `interval` seconds (default 5, RESAE_PROGRESS_INTERVAL) with the rate
 * since start, percent and ETA. Printed by the calling rank only if `print` is nonzero. */
typedef struct rs_progress {
    char label[64];
    char unit[16];
    double total, done;
    double t0, t_last, interval;
    int print;
} rs_progress;

void rs_progress_init(rs_progress *p, const char *label, double total, const char *unit, int print);
void rs_progress_update(rs_progress *p, double done);
void rs_progress_finish(rs_progress *p);
/* Format seconds as "1h02m03s" / "2m03s" / "4.1s". */
void rs_fmt_duration(char *out, int n, double seconds);

#endif
