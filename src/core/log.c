#include "resae/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int g_rank = 0;
static int g_level = RS_LOG_INFO;
static double g_t0 = -1.0;

double rs_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double rs_elapsed(void) {
    if (g_t0 < 0) g_t0 = rs_now();
    return rs_now() - g_t0;
}

void rs_log_init(int rank) {
    g_rank = rank;
    if (g_t0 < 0) g_t0 = rs_now();
    const char *e = getenv("RESAE_LOG_LEVEL");
    if (e) {
        if (!strcasecmp(e, "error")) g_level = RS_LOG_ERROR;
        else if (!strcasecmp(e, "warn")) g_level = RS_LOG_WARN;
        else if (!strcasecmp(e, "info")) g_level = RS_LOG_INFO;
        else if (!strcasecmp(e, "debug")) g_level = RS_LOG_DEBUG;
    }
}

void rs_log_set_level(int level) { g_level = level; }
int rs_log_level(void) { return g_level; }

static const char *level_name(int level) {
    switch (level) {
    case RS_LOG_ERROR: return "ERROR";
    case RS_LOG_WARN: return "WARN ";
    case RS_LOG_INFO: return "INFO ";
    default: return "DEBUG";
    }
}

static void vlog(int level, const char *fmt, va_list ap) {
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%H:%M:%S", &tm);
    /* one fprintf per line so concurrent ranks do not interleave within a line */
    fprintf(stderr, "[%s %7.1fs r%d] %s %s\n", ts, rs_elapsed(), g_rank, level_name(level), msg);
    fflush(stderr);
}

void rs_log(int level, const char *fmt, ...) {
    if (level > g_level) return;
    if (level >= RS_LOG_INFO && g_rank != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void rs_log_all(int level, const char *fmt, ...) {
    if (level > g_level) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

void rs_fmt_duration(char *out, int n, double s) {
    if (!(s >= 0) || s > 1e9) {
        snprintf(out, (size_t)n, "?");
    } else if (s >= 3600) {
        long t = (long)(s + 0.5);
        snprintf(out, (size_t)n, "%ldh%02ldm%02lds", t / 3600, (t / 60) % 60, t % 60);
    } else if (s >= 60) {
        long t = (long)(s + 0.5);
        snprintf(out, (size_t)n, "%ldm%02lds", t / 60, t % 60);
    } else {
        snprintf(out, (size_t)n, "%.1fs", s);
    }
}

void rs_progress_init(rs_progress *p, const char *label, double total, const char *unit, int print) {
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->unit, sizeof p->unit, "%s", unit);
    p->total = total;
    p->t0 = p->t_last = rs_now();
    p->print = print;
    const char *e = getenv("RESAE_PROGRESS_INTERVAL");
    p->interval = e ? atof(e) : 5.0;
    if (!(p->interval >= 0)) p->interval = 5.0;
}

static void progress_line(rs_progress *p, int final) {
    double t = rs_now();
    double el = t - p->t0;
    double rate = el > 0 ? p->done / el : 0.0;
    char eta[32], els[32];
    rs_fmt_duration(els, sizeof els, el);
    if (final) {
        rs_log_all(RS_LOG_INFO, "%s: %.0f %s done in %s (%.1f %s/s)", p->label, p->done, p->unit, els,
                   rate, p->unit);
    } else {
        rs_fmt_duration(eta, sizeof eta, rate > 0 ? (p->total - p->done) / rate : -1.0);
        rs_log_all(RS_LOG_INFO, "%s: %.0f/%.0f %s (%.1f%%) %.1f %s/s, elapsed %s, ETA %s", p->label,
                   p->done, p->total, p->unit, p->total > 0 ? 100.0 * p->done / p->total : 0.0, rate,
                   p->unit, els, eta);
    }
}

void rs_progress_update(rs_progress *p, double done) {
    p->done = done;
    if (!p->print || rs_log_level() < RS_LOG_INFO) return;
    double t = rs_now();
    if (t - p->t_last >= p->interval) {
        p->t_last = t;
        progress_line(p, 0);
    }
}

void rs_progress_finish(rs_progress *p) {
    if (!p->print || rs_log_level() < RS_LOG_INFO) return;
    progress_line(p, 1);
}
