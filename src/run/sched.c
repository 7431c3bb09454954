/* Task scheduling over worker groups (see sched.h). */
#define _GNU_SOURCE
#include "resae/sched.h"

#include <inttypes.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "resae/h5util.h"
#include "resae/log.h"
#include "resae/util.h"

/* =====================================================================================================
 * Task list
 * ===================================================================================================== */

void rs_sched_opts_default(rs_sched_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_retries = 2;
    o->poll_min = 0.001;
    o->poll_max = 0.02;
    o->status_interval = 60.0;
}

void rs_sched_init(rs_sched *s, const rs_sched_opts *o) {
    memset(s, 0, sizeof *s);
    if (o) s->opts = *o;
    else rs_sched_opts_default(&s->opts);
    if (!(s->opts.poll_min > 0)) s->opts.poll_min = 0.001;
    if (!(s->opts.poll_max >= s->opts.poll_min)) s->opts.poll_max = s->opts.poll_min > 0.02 ? s->opts.poll_min : 0.02;
    if (s->opts.max_retries < 0) s->opts.max_retries = 0;
    if (!(s->opts.status_interval > 0)) s->opts.status_interval = 60.0;
}

void rs_sched_free(rs_sched *s) {
    for (int i = 0; i < s->n_tasks; i++) free(s->tasks[i].deps);
    free(s->tasks);
    free(s->table);
    memset(s, 0, sizeof *s);
}

rs_err rs_sched_add(int *index, rs_sched *s, const char *name, int kind, uint64_t hash, double cost, int min_ranks,
                    int pref_ranks, void *data) {
    if (min_ranks != RS_SCHED_WORLD && min_ranks < 1)
        RS_FAIL(RS_ERR_INVAL, "task '%s': min_ranks is %d; use 1 or more, or RS_SCHED_WORLD", name, min_ranks);
    if (!(cost >= 0)) RS_FAIL(RS_ERR_INVAL, "task '%s': estimated cost %g is not a non-negative number", name, cost);
    if (s->n_tasks == s->cap_tasks) {
        int cap = s->cap_tasks ? 2 * s->cap_tasks : 16;
        rs_sched_task *t = realloc(s->tasks, sizeof *t * (size_t)cap);
        RS_CHECK_ALLOC(t);
        s->tasks = t;
        s->cap_tasks = cap;
    }
    rs_sched_task *t = &s->tasks[s->n_tasks];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->kind = kind;
    t->hash = hash;
    t->cost = cost;
    t->min_ranks = min_ranks;
    t->pref_ranks = pref_ranks > 0 ? pref_ranks : 0;
    t->data = data;
    *index = s->n_tasks++;
    return RS_OK;
}

rs_err rs_sched_add_dep(rs_sched *s, int task, int dep) {
    if (task < 0 || task >= s->n_tasks || dep < 0 || dep >= s->n_tasks)
        RS_FAIL(RS_ERR_INVAL, "dependency %d -> %d: no such task (%d tasks)", task, dep, s->n_tasks);
    if (task == dep) RS_FAIL(RS_ERR_INVAL, "task '%s' cannot depend on itself", s->tasks[task].name);
    rs_sched_task *t = &s->tasks[task];
    for (int i = 0; i < t->n_deps; i++)
        if (t->deps[i] == dep) return RS_OK;
    int *d = realloc(t->deps, sizeof(int) * (size_t)(t->n_deps + 1));
    RS_CHECK_ALLOC(d);
    t->deps = d;
    t->deps[t->n_deps++] = dep;
    return RS_OK;
}

const char *rs_sched_state_name(int state) {
    switch (state) {
    case RS_SCHED_PENDING: return "pending";
    case RS_SCHED_RUNNING: return "running";
    case RS_SCHED_DONE: return "done";
    case RS_SCHED_DONE_BEFORE: return "done_before";
    case RS_SCHED_FAILED: return "failed";
    case RS_SCHED_SKIPPED: return "skipped";
    default: return "unknown";
    }
}

int rs_sched_state_parse(const char *name) {
    for (int st = RS_SCHED_PENDING; st <= RS_SCHED_SKIPPED; st++)
        if (!strcmp(name, rs_sched_state_name(st))) return st;
    return -1;
}

/* A topological order of the tasks (every task after its dependencies) by Kahn's algorithm into
 * order (n_tasks); returns the number of tasks placed: fewer than n_tasks means a cycle. -1: out of
 * memory. Every rank finds the same order. */
static int topo_order(const rs_sched *s, int *order) {
    int n = s->n_tasks;
    int *indeg = calloc((size_t)(n > 0 ? n : 1), sizeof(int));
    if (!indeg) return -1;
    for (int i = 0; i < n; i++) indeg[i] = s->tasks[i].n_deps;
    int head = 0, tail = 0;
    for (int i = 0; i < n; i++)
        if (!indeg[i]) order[tail++] = i;
    /* O(n^2) in the worst case; grids hold thousands of tasks at most */
    while (head < tail) {
        int u = order[head++];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < s->tasks[i].n_deps; j++)
                if (s->tasks[i].deps[j] == u && --indeg[i] == 0) order[tail++] = i;
    }
    free(indeg);
    return tail;
}

/* Refuse dependency cycles; every rank finds the same answer. */
static rs_err check_acyclic(const rs_sched *s) {
    int n = s->n_tasks;
    if (n <= 0) return RS_OK;
    int *order = malloc(sizeof(int) * (size_t)n);
    int placed = order ? topo_order(s, order) : -1;
    if (placed < 0) {
        free(order);
        RS_FAIL(RS_ERR_NOMEM, "out of memory checking the task graph");
    }
    int bad = -1;
    if (placed < n) {
        char *in = calloc((size_t)n, 1);
        for (int i = 0; in && i < placed; i++) in[order[i]] = 1;
        for (int i = 0; i < n && bad < 0; i++)
            if (!in || !in[i]) bad = i;
        free(in);
    }
    free(order);
    if (bad >= 0) RS_FAIL(RS_ERR_INVAL, "the task graph has a dependency cycle through task '%s'", s->tasks[bad].name);
    return RS_OK;
}

static uint64_t graph_hash(const rs_sched *s) {
    uint64_t h = rs_hash64(RS_HASH64_INIT, &s->n_tasks, sizeof s->n_tasks);
    for (int i = 0; i < s->n_tasks; i++) {
        const rs_sched_task *t = &s->tasks[i];
        h = rs_hash64(h, t->name, strlen(t->name));
        h = rs_hash64(h, &t->kind, sizeof t->kind);
        h = rs_hash64(h, &t->hash, sizeof t->hash);
        h = rs_hash64(h, &t->min_ranks, sizeof t->min_ranks);
        h = rs_hash64(h, &t->n_deps, sizeof t->n_deps);
        if (t->n_deps) h = rs_hash64(h, t->deps, sizeof(int) * (size_t)t->n_deps);
    }
    return h;
}

/* =====================================================================================================
 * Group size
 * ===================================================================================================== */

typedef struct pref_w {
    int r;
    double w;
} pref_w;

static int cmp_pref(const void *a, const void *b) {
    int x = ((const pref_w *)a)->r, y = ((const pref_w *)b)->r;
    return (x > y) - (x < y);
}

int rs_sched_auto_group_size(const rs_sched *s, int size) {
    if (size < 1) return 1;
    int g = 1, n_group_tasks = 0, n_pref = 0;
    pref_w *pw = malloc(sizeof *pw * (size_t)(s->n_tasks > 0 ? s->n_tasks : 1));
    double wsum = 0;
    for (int i = 0; i < s->n_tasks; i++) {
        const rs_sched_task *t = &s->tasks[i];
        if (t->min_ranks == RS_SCHED_WORLD) continue;
        n_group_tasks++;
        if (t->min_ranks > g) g = t->min_ranks;
        if (t->pref_ranks > 0 && pw) {
            pw[n_pref].r = t->pref_ranks;
            pw[n_pref].w = t->cost > 0 ? t->cost : 1e-9;
            wsum += pw[n_pref].w;
            n_pref++;
        }
    }
    if (n_pref) {
        qsort(pw, (size_t)n_pref, sizeof *pw, cmp_pref);
        double acc = 0;
        for (int i = 0; i < n_pref; i++) {
            acc += pw[i].w;
            if (acc >= 0.5 * wsum) {
                if (pw[i].r > g) g = pw[i].r;
                break;
            }
        }
    }
    free(pw);
    /* more groups than tasks would leave ranks idle for the whole run */
    if (n_group_tasks > 0 && (size + g - 1) / g > n_group_tasks) g = (size + n_group_tasks - 1) / n_group_tasks;
    if (g > size) g = size;
    while (size % g) g++;
    return g;
}

/* =====================================================================================================
 * The coordinator's state (rank 0)
 * ===================================================================================================== */

enum { MSG_FINISH = 1, MSG_NOTE = 2, MSG_BYE = 3 };
enum { TAG_UP = 7301, TAG_DOWN = 7302 };
#define ASSIGN_STOP (-1)

/* A group leader's message: the task it finished (-1: none) and a request for the next one. */
typedef struct sched_msg {
    int type, group, task, err, stop;
    double seconds;
    char text[RS_SCHED_MSG_MAX];
} sched_msg;

typedef struct coord {
    rs_sched *s;
    int size, gs, n_groups;
    const char *is_world; /* (n_tasks) */
    int *group_task;      /* (n_groups) task running on the group, -1 if none */
    int *waiting;         /* (n_groups) a request is waiting for an answer */
    int *stopped;         /* (n_groups) told to stop */
    double *prio;         /* (n_tasks) critical-path cost: own cost + the costliest chain of dependents */
    int world_task, world_reports, world_err;
    char world_text[RS_SCHED_MSG_MAX];
    int stopping, interrupted;
    double t0, t0_epoch; /* rs_now() and the wall clock at the start */
    double t_snap;       /* rs_now() of the last status snapshot */
    int snap_dirty;      /* the table changed since the last snapshot */
    double cost_todo, cost_done; /* estimated cost of the tasks to run in this run, of those finished */
    int n_todo, n_finished;
    /* the answer channel: MPI sends (threaded) or a slot (inline) */
    void (*reply)(struct coord *c, int group, int assign);
    MPI_Comm comm;
    int inline_assign;
} coord;

static int is_done_state(int st) { return st == RS_SCHED_DONE || st == RS_SCHED_DONE_BEFORE; }

static int task_ready(const coord *c, int i) {
    const rs_sched *s = c->s;
    if (s->table[i].state != RS_SCHED_PENDING) return 0;
    const rs_sched_task *t = &s->tasks[i];
    for (int j = 0; j < t->n_deps; j++)
        if (!is_done_state(s->table[t->deps[j]].state)) return 0;
    return 1;
}

/* Skip every pending task with a failed or skipped dependency, to a fixed point. */
static void propagate_skips(coord *c) {
    rs_sched *s = c->s;
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < s->n_tasks; i++) {
            rs_sched_record *r = &s->table[i];
            if (r->state != RS_SCHED_PENDING) continue;
            const rs_sched_task *t = &s->tasks[i];
            for (int j = 0; j < t->n_deps; j++) {
                int st = s->table[t->deps[j]].state;
                if (st == RS_SCHED_FAILED || st == RS_SCHED_SKIPPED) {
                    r->state = RS_SCHED_SKIPPED;
                    snprintf(r->error, sizeof r->error, "dependency '%s' %s", s->tasks[t->deps[j]].name,
                             st == RS_SCHED_FAILED ? "failed" : "was skipped");
                    c->cost_todo -= t->cost;
                    changed = 1;
                    RS_WARN("task %s: skipped (%s)", t->name, r->error);
                    break;
                }
            }
        }
    }
}

static void log_progress(const coord *c, const char *what, int i, int group) {
    const rs_sched *s = c->s;
    const rs_sched_record *r = &s->table[i];
    double el = rs_now() - c->t0;
    double rate = el > 0 ? c->cost_done / el : 0;
    char eta[32], secs[32];
    rs_fmt_duration(secs, sizeof secs, r->seconds);
    rs_fmt_duration(eta, sizeof eta, rate > 0 ? (c->cost_todo - c->cost_done) / rate : -1.0);
    char where[32];
    if (group < 0) snprintf(where, sizeof where, "the world");
    else snprintf(where, sizeof where, "group %d", group);
    RS_INFO("task %s: %s on %s in %s (attempt %d); %d/%d tasks, %.0f%% of the estimated cost, %.3g cost/s, ETA %s",
            s->tasks[i].name, what, where, secs, r->attempts, c->n_finished, c->n_todo,
            c->cost_todo > 0 ? 100.0 * c->cost_done / c->cost_todo : 100.0, rate, eta);
}

/* One line: the tasks running now and for how long. */
static void log_status(const coord *c) {
    const rs_sched *s = c->s;
    char line[1024];
    size_t len = 0;
    int n = 0;
    line[0] = '\0';
    for (int i = 0; i < s->n_tasks; i++) {
        const rs_sched_record *r = &s->table[i];
        if (r->state != RS_SCHED_RUNNING || len >= sizeof line - 1) continue;
        char el[32];
        rs_fmt_duration(el, sizeof el, rs_now() - c->t0 - r->t_start);
        len += (size_t)snprintf(line + len, sizeof line - len, "%s%s (%s)", n ? ", " : "", s->tasks[i].name, el);
        n++;
    }
    double el = rs_now() - c->t0, rate = el > 0 ? c->cost_done / el : 0;
    char eta[32];
    rs_fmt_duration(eta, sizeof eta, rate > 0 ? (c->cost_todo - c->cost_done) / rate : -1.0);
    RS_INFO("scheduler: %d/%d tasks done, %d running: %s; ETA %s", c->n_finished, c->n_todo, n, n ? line : "-", eta);
}

static double epoch_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Copy src into dst (n bytes) with tabs and line breaks turned into spaces. */
static void one_line(char *dst, size_t n, const char *src) {
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++) dst[i] = src[i] == '\t' || src[i] == '\n' || src[i] == '\r' ? ' ' : src[i];
    dst[i] = '\0';
}

/* Rewrite the status snapshot (sched.h). Best effort: a failure warns once, the run goes on. A
 * snapshot costs O(tasks), so on large graphs rewrites are spaced by n_tasks / 5000 seconds (0.2 s
 * for 1000 tasks); a change in between is written by the coordinator's next poll (or, with one
 * group, at the next task event). */
static void status_snapshot(coord *c, int final) {
    const rs_sched *s = c->s;
    const char *path = s->opts.status_path;
    if (!path) return;
    double now = rs_now();
    if (!final && c->t_snap > 0 && now - c->t_snap < (double)s->n_tasks / 5000.0) {
        c->snap_dirty = 1;
        return;
    }
    c->t_snap = now;
    c->snap_dirty = 0;
    static int warned;
    char tmp[4096], host[256] = "?";
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    FILE *f = fopen(tmp, "w");
    int ok = f != NULL;
    if (ok) {
        fprintf(f, "resae-sched-status\t1\nhost\t%s\npid\t%ld\nstarted\t%.3f\nupdated\t%.3f\nfinal\t%d\ngroups\t%d\t%d\n",
                host, (long)getpid(), c->t0_epoch, epoch_now(), final, c->n_groups, c->gs);
        for (int i = 0; i < s->n_tasks; i++) {
            const rs_sched_record *r = &s->table[i];
            char name[RS_SCHED_NAME_MAX], error[RS_SCHED_MSG_MAX];
            one_line(name, sizeof name, s->tasks[i].name);
            one_line(error, sizeof error, r->error);
            fprintf(f, "task\t%s\t%d\t%d\t%d\t%d\t%.3f\t%.3f\t%s\t%s\n", rs_sched_state_name(r->state), s->tasks[i].kind,
                    r->group, r->group_size, r->attempts, r->t_start, r->seconds, name, error);
        }
        ok = !ferror(f);
        ok &= fclose(f) == 0;
        ok = ok && rename(tmp, path) == 0;
    }
    if (!ok && !warned) {
        warned = 1;
        RS_WARN("cannot write the status snapshot %s (%s); `resae status` shows only finished tasks", path,
                strerror(errno));
    }
}

/* A task's attempt ended with (agreed) err. */
static void task_finished(coord *c, int i, int group, int err, double seconds, const char *text) {
    rs_sched *s = c->s;
    rs_sched_record *r = &s->table[i];
    const rs_sched_task *t = &s->tasks[i];
    r->t_end = rs_now() - c->t0;
    r->seconds = seconds;
    if (!err) {
        r->state = RS_SCHED_DONE;
        c->cost_done += t->cost;
        c->n_finished++;
        log_progress(c, "done", i, group);
    } else if (err == RS_ERR_INTERRUPTED) {
        r->state = RS_SCHED_PENDING;
        c->stopping = c->interrupted = 1;
        RS_WARN("task %s: interrupted after %.1fs (checkpointed); no more tasks are started", t->name, seconds);
    } else {
        r->err = err;
        snprintf(r->error, sizeof r->error, "%s", text && text[0] ? text : rs_err_name(err));
        /* a configuration, format or argument error fails the same way every time, and so does a numerical
         * one (NaN inputs, a diverging SAE, a failed factorization): every task is deterministic */
        int permanent = err == RS_ERR_CONFIG || err == RS_ERR_FORMAT || err == RS_ERR_INVAL ||
                        err == RS_ERR_UNSUPPORTED || err == RS_ERR_NUMERIC;
        /* a full file system stays full: no retry, and no new task (each would fail the same way) */
        int full = err == RS_ERR_NOSPACE;
        if (full && !c->stopping) {
            c->stopping = 1;
            RS_WARN("task %s: the file system is full; no more tasks are started", t->name);
        }
        if (r->attempts <= s->opts.max_retries && !permanent && !full) {
            r->state = RS_SCHED_PENDING;
            RS_WARN("task %s: attempt %d of %d failed on %s %d: %s; retrying", t->name, r->attempts,
                    s->opts.max_retries + 1, group < 0 ? "the world, group" : "group", group, r->error);
        } else {
            r->state = RS_SCHED_FAILED;
            c->cost_todo -= t->cost;
            RS_ERROR("task %s: failed after %d attempt(s)%s: %s", t->name, r->attempts,
                     permanent ? " (not retried: the same inputs fail the same way)"
                     : full    ? " (not retried: no space left on device)"
                               : "",
                     r->error);
            propagate_skips(c);
        }
    }
    status_snapshot(c, 0);
}

static void task_started(coord *c, int i, int group) {
    rs_sched *s = c->s;
    rs_sched_record *r = &s->table[i];
    r->state = RS_SCHED_RUNNING;
    r->attempts++;
    r->group = group;
    r->group_size = group < 0 ? c->size : (group + 1) * c->gs <= c->size ? c->gs : c->size - group * c->gs;
    r->t_start = rs_now() - c->t0;
    if (group < 0)
        RS_INFO("task %s: start on the world (%d ranks), attempt %d", s->tasks[i].name, c->size, r->attempts);
    else
        RS_INFO("task %s: start on group %d (ranks %d-%d), attempt %d", s->tasks[i].name, group, group * c->gs,
                group * c->gs + r->group_size - 1, r->attempts);
    status_snapshot(c, 0);
}

/* The ready task of the given class (world or group) that heads the costliest chain of work still
 * to do (then the larger own cost, then the first added), -1 if none. Largest-first by own cost
 * alone would start every big SAE before the cheap affine fits that the residualized SAEs wait
 * for, and leave the end of the run to one group. */
static int best_ready(const coord *c, int world) {
    const rs_sched *s = c->s;
    int best = -1;
    for (int i = 0; i < s->n_tasks; i++) {
        if ((c->is_world[i] != 0) != (world != 0) || !task_ready(c, i)) continue;
        if (best < 0 || c->prio[i] > c->prio[best] ||
            (c->prio[i] == c->prio[best] && s->tasks[i].cost > s->tasks[best].cost))
            best = i;
    }
    return best;
}

/* prio[i] = cost of i (0 if done before this run) + the largest prio of the tasks that depend on
 * it, over a reverse topological order (the graph was checked acyclic). */
static rs_err compute_priorities(coord *c) {
    const rs_sched *s = c->s;
    int n = s->n_tasks;
    if (n <= 0) return RS_OK;
    int *order = malloc(sizeof(int) * (size_t)n);
    if (!order || topo_order(s, order) != n) {
        free(order);
        RS_FAIL(RS_ERR_NOMEM, "out of memory ordering the task graph");
    }
    for (int i = 0; i < n; i++) c->prio[i] = s->table[i].state == RS_SCHED_DONE_BEFORE ? 0.0 : s->tasks[i].cost;
    for (int idx = n - 1; idx >= 0; idx--) {
        int i = order[idx]; /* every task depending on i comes later in order: prio[i] is final */
        const rs_sched_task *t = &s->tasks[i];
        for (int j = 0; j < t->n_deps; j++) {
            int d = t->deps[j];
            double own = s->table[d].state == RS_SCHED_DONE_BEFORE ? 0.0 : s->tasks[d].cost;
            if (own + c->prio[i] > c->prio[d]) c->prio[d] = own + c->prio[i];
        }
    }
    free(order);
    return RS_OK;
}

/* Answer every waiting group that can be answered now. */
static void dispatch(coord *c) {
    rs_sched *s = c->s;
    if (!c->stopping) {
        int w = best_ready(c, 1);
        if (w >= 0) {
            /* a world task starts when every group is free; until then the groups drain */
            int all = 1;
            for (int g = 0; g < c->n_groups; g++) all &= c->waiting[g];
            if (all) {
                task_started(c, w, -1);
                c->world_task = w;
                c->world_reports = c->n_groups;
                c->world_err = 0;
                c->world_text[0] = '\0';
                for (int g = 0; g < c->n_groups; g++) {
                    c->waiting[g] = 0;
                    c->group_task[g] = w;
                    c->reply(c, g, w);
                }
            }
            return;
        }
        for (int g = 0; g < c->n_groups; g++) {
            if (!c->waiting[g]) continue;
            int t = best_ready(c, 0);
            if (t < 0) break;
            task_started(c, t, g);
            c->waiting[g] = 0;
            c->group_task[g] = t;
            c->reply(c, g, t);
        }
    }
    /* nothing more will become ready: no task runs, or we are stopping */
    int running = 0;
    for (int g = 0; g < c->n_groups; g++) running |= c->group_task[g] >= 0;
    int more = 0;
    if (!c->stopping)
        for (int i = 0; i < s->n_tasks && !more; i++) more = s->table[i].state == RS_SCHED_PENDING && running;
    if (more) return;
    for (int g = 0; g < c->n_groups; g++) {
        if (!c->waiting[g]) continue;
        c->waiting[g] = 0;
        c->stopped[g] = 1;
        c->reply(c, g, ASSIGN_STOP);
    }
}

static void coord_handle(coord *c, const sched_msg *m) {
    if (m->stop && !c->stopping) {
        c->stopping = 1;
        c->interrupted = 1;
        RS_WARN("stop requested (signal on group %d): no more tasks are started", m->group);
    }
    if (m->type != MSG_FINISH) return;
    int g = m->group;
    if (m->task >= 0) {
        int i = m->task;
        if (c->is_world[i]) {
            if (m->err && (!c->world_err || c->world_err == RS_ERR_INTERRUPTED)) c->world_err = m->err;
            if (m->text[0] && !c->world_text[0]) snprintf(c->world_text, sizeof c->world_text, "%s", m->text);
            if (--c->world_reports == 0) task_finished(c, i, -1, c->world_err, m->seconds, c->world_text);
        } else {
            task_finished(c, i, g, m->err, m->seconds, m->text);
        }
        c->group_task[g] = -1;
    }
    c->waiting[g] = 1;
}

static rs_err coord_init(coord *c, rs_sched *s, const char *is_world, int size, int gs, int n_groups) {
    memset(c, 0, sizeof *c);
    c->s = s;
    c->size = size;
    c->gs = gs;
    c->n_groups = n_groups;
    c->is_world = is_world;
    c->world_task = -1;
    c->group_task = malloc(sizeof(int) * (size_t)n_groups);
    c->waiting = calloc((size_t)n_groups, sizeof(int));
    c->stopped = calloc((size_t)n_groups, sizeof(int));
    c->prio = calloc((size_t)(s->n_tasks > 0 ? s->n_tasks : 1), sizeof(double));
    if (!c->group_task || !c->waiting || !c->stopped || !c->prio) {
        free(c->group_task);
        free(c->waiting);
        free(c->stopped);
        free(c->prio);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for the coordinator");
    }
    for (int g = 0; g < n_groups; g++) c->group_task[g] = -1;
    return RS_OK;
}

static void coord_free(coord *c) {
    free(c->prio);
    free(c->group_task);
    free(c->waiting);
    free(c->stopped);
}

/* =====================================================================================================
 * Waiting without spinning (ranks share cores; Open MPI's blocking calls poll at full speed)
 * ===================================================================================================== */

static void nap(double seconds) {
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
}

/* Wait for req; while waiting, call tick (if any) each round. */
static void wait_req(MPI_Request *req, const rs_sched_opts *o, void (*tick)(void *), void *arg) {
    double d = o->poll_min;
    for (;;) {
        int flag = 0;
        MPI_Test(req, &flag, MPI_STATUS_IGNORE);
        if (flag) return;
        if (tick) tick(arg);
        nap(d);
        d *= 1.5;
        if (d > o->poll_max) d = o->poll_max;
    }
}

/* =====================================================================================================
 * The coordinator thread
 * ===================================================================================================== */

static void reply_mpi(coord *c, int group, int assign) {
    /* the leader posted its receive before asking, so this small send completes at once */
    MPI_Send(&assign, 1, MPI_INT, group * c->gs, TAG_DOWN, c->comm);
}

typedef struct coord_thread_arg {
    coord *c;
    volatile sig_atomic_t *stop;
    const rs_sched_opts *o;
} coord_thread_arg;

static void *coord_main(void *varg) {
    coord_thread_arg *a = varg;
    coord *c = a->c;
    int byes = 0;
    double d = a->o->poll_min, t_status = rs_now();
    sched_msg m;
    while (byes < c->n_groups) {
        /* long tasks finish rarely: say what runs now and then */
        if (rs_now() - t_status >= a->o->status_interval) {
            t_status = rs_now();
            log_status(c);
        }
        if (c->snap_dirty) status_snapshot(c, 0);
        int flag = 0;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_UP, c->comm, &flag, &st);
        if (flag) {
            MPI_Recv(&m, (int)sizeof m, MPI_BYTE, st.MPI_SOURCE, TAG_UP, c->comm, MPI_STATUS_IGNORE);
            if (m.type == MSG_BYE) {
                byes++;
            } else {
                coord_handle(c, &m);
                dispatch(c);
            }
            d = a->o->poll_min;
            continue;
        }
        if (a->stop && *a->stop && !c->stopping) {
            c->stopping = c->interrupted = 1;
            RS_WARN("stop requested (signal): no more tasks are started; running tasks checkpoint");
            dispatch(c);
        }
        nap(d);
        d *= 1.5;
        if (d > a->o->poll_max) d = a->o->poll_max;
    }
    return NULL;
}

/* =====================================================================================================
 * Running
 * ===================================================================================================== */

typedef struct worker {
    rs_sched *s;
    int rank, size, gs, group, n_groups, grank, gsize, leader;
    MPI_Comm world, group_comm, coord_comm;
    const char *is_world;
    int noted; /* a stop note was sent while waiting */
    char *txt; /* (gsize, RS_SCHED_MSG_MAX) the group's error texts, on the leader */
} worker;

static void leader_tick(void *arg) {
    worker *w = arg;
    volatile sig_atomic_t *stop = w->s->opts.stop;
    if (w->noted || !stop || !*stop) return;
    sched_msg m;
    memset(&m, 0, sizeof m);
    m.type = MSG_NOTE;
    m.group = w->group;
    m.task = -1;
    m.stop = 1;
    MPI_Send(&m, (int)sizeof m, MPI_BYTE, 0, TAG_UP, w->coord_comm);
    w->noted = 1;
}

/* Run task i on comm, agree on the outcome, collect the group's error text on the group leader. */
static int run_one(worker *w, int i, rs_sched_run_fn run, void *ctx, double *seconds, char *text, int *stop_seen) {
    const rs_sched_task *t = &w->s->tasks[i];
    MPI_Comm comm = w->is_world[i] ? w->world : w->group_comm;
    double t0 = rs_now();
    rs_err_clear();
    rs_err e = run(ctx, t, comm);
    *seconds = rs_now() - t0;
    /* the outcome, and whether any rank has seen the stop flag (a signal may reach only some ranks) */
    volatile sig_atomic_t *stop = w->s->opts.stop;
    int loc[3] = {e && e != RS_ERR_INTERRUPTED ? e : 0, e == RS_ERR_INTERRUPTED, stop && *stop}, all[3] = {0, 0, 0};
    MPI_Allreduce(loc, all, 3, MPI_INT, MPI_MAX, comm);
    *stop_seen = all[2];
    int err = all[0] ? all[0] : all[1] ? RS_ERR_INTERRUPTED : 0;
    text[0] = '\0';
    if (err && err != RS_ERR_INTERRUPTED) {
        /* the text of a rank that failed on its own (not one that only heard of another's failure) */
        char mine[RS_SCHED_MSG_MAX];
        const char *other = w->s->opts.other_rank_msg;
        mine[0] = '\0';
        if (e && e != RS_ERR_INTERRUPTED && !rs_err_is_remote() && !(other && !strcmp(rs_err_msg(), other)))
            snprintf(mine, sizeof mine, "rank %d: %s", w->rank, rs_err_msg()[0] ? rs_err_msg() : rs_err_name(e));
        char *all_txt = w->txt;
        MPI_Gather(mine, RS_SCHED_MSG_MAX, MPI_CHAR, all_txt, RS_SCHED_MSG_MAX, MPI_CHAR, 0, w->group_comm);
        if (w->leader) {
            for (int r = 0; r < w->gsize && !text[0]; r++)
                if (all_txt[(size_t)r * RS_SCHED_MSG_MAX])
                    snprintf(text, RS_SCHED_MSG_MAX, "%s", all_txt + (size_t)r * RS_SCHED_MSG_MAX);
        }
    }
    rs_err_clear();
    return err;
}

static void worker_loop(worker *w, rs_sched_run_fn run, void *ctx) {
    int prev = -1, prev_err = 0, stop_seen = 0;
    double prev_secs = 0;
    char text[RS_SCHED_MSG_MAX];
    text[0] = '\0';
    const rs_sched_opts *o = &w->s->opts;
    for (;;) {
        int assign = ASSIGN_STOP;
        if (w->leader) {
            MPI_Request req;
            MPI_Irecv(&assign, 1, MPI_INT, 0, TAG_DOWN, w->coord_comm, &req);
            sched_msg m;
            memset(&m, 0, sizeof m);
            m.type = MSG_FINISH;
            m.group = w->group;
            m.task = prev;
            m.err = prev_err;
            m.seconds = prev_secs;
            m.stop = (o->stop && *o->stop) || stop_seen;
            w->noted |= m.stop;
            snprintf(m.text, sizeof m.text, "%s", text);
            MPI_Send(&m, (int)sizeof m, MPI_BYTE, 0, TAG_UP, w->coord_comm);
            wait_req(&req, o, leader_tick, w);
        }
        if (w->gsize > 1) {
            MPI_Request req;
            MPI_Ibcast(&assign, 1, MPI_INT, 0, w->group_comm, &req);
            wait_req(&req, o, NULL, NULL);
        }
        if (assign < 0) break;
        prev = assign;
        prev_err = run_one(w, assign, run, ctx, &prev_secs, text, &stop_seen);
    }
    if (w->leader) {
        sched_msg m;
        memset(&m, 0, sizeof m);
        m.type = MSG_BYE;
        m.group = w->group;
        m.task = -1;
        MPI_Send(&m, (int)sizeof m, MPI_BYTE, 0, TAG_UP, w->coord_comm);
    }
}

static void reply_inline(coord *c, int group, int assign) {
    (void)group;
    c->inline_assign = assign;
}

/* One group (the world): rank 0 decides between tasks and broadcasts; no thread. */
static void run_inline(worker *w, coord *c, rs_sched_run_fn run, void *ctx) {
    int prev = -1, prev_err = 0;
    double prev_secs = 0;
    char text[RS_SCHED_MSG_MAX];
    text[0] = '\0';
    const rs_sched_opts *o = &w->s->opts;
    for (;;) {
        int mine = o->stop && *o->stop, any = 0;
        MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, w->world);
        int assign = ASSIGN_STOP;
        if (w->rank == 0) {
            sched_msg m;
            memset(&m, 0, sizeof m);
            m.type = MSG_FINISH;
            m.group = 0;
            m.task = prev;
            m.err = prev_err;
            m.seconds = prev_secs;
            m.stop = any;
            snprintf(m.text, sizeof m.text, "%s", text);
            c->inline_assign = ASSIGN_STOP;
            coord_handle(c, &m);
            dispatch(c);
            assign = c->inline_assign;
        }
        MPI_Bcast(&assign, 1, MPI_INT, 0, w->world);
        if (assign < 0) break;
        int stop_seen = 0; /* the next round's allreduce sees every rank's flag anyway */
        prev = assign;
        prev_err = run_one(w, assign, run, ctx, &prev_secs, text, &stop_seen);
    }
}

/* The summary error (every rank builds the same one from the shared table). */
static rs_err summarize(const rs_sched *s, int interrupted) {
    int n_failed = 0, n_skipped = 0, n_left = 0, first_err = 0;
    for (int i = 0; i < s->n_tasks; i++) {
        int st = s->table[i].state;
        n_failed += st == RS_SCHED_FAILED;
        n_skipped += st == RS_SCHED_SKIPPED;
        n_left += st == RS_SCHED_PENDING || st == RS_SCHED_RUNNING;
        if (st == RS_SCHED_FAILED && !first_err) first_err = s->table[i].err;
    }
    /* a stop that came after the last task is not an interruption */
    if (interrupted && n_left) {
        RS_FAIL(RS_ERR_INTERRUPTED, "stopped by a signal: %d task(s) not run yet (finished work is kept; run again "
                "to continue)", n_left);
    }
    if (!n_failed && !n_skipped) {
        if (n_left) RS_FAIL(RS_ERR_INTERNAL, "the scheduler ended with %d task(s) neither run nor failed", n_left);
        return RS_OK;
    }
    char msg[1800];
    size_t len = 0;
    len += (size_t)snprintf(msg + len, sizeof msg - len, "%d task(s) failed:", n_failed);
    for (int i = 0; i < s->n_tasks && len < sizeof msg - 1; i++)
        if (s->table[i].state == RS_SCHED_FAILED)
            len += (size_t)snprintf(msg + len, sizeof msg - len, " %s (%d attempts: %s);", s->tasks[i].name,
                                    s->table[i].attempts, s->table[i].error);
    if (n_skipped && len < sizeof msg - 1)
        len += (size_t)snprintf(msg + len, sizeof msg - len, " %d skipped because a dependency failed:", n_skipped);
    int listed = 0;
    for (int i = 0; i < s->n_tasks && len < sizeof msg - 1 && listed < 8; i++)
        if (s->table[i].state == RS_SCHED_SKIPPED) {
            len += (size_t)snprintf(msg + len, sizeof msg - len, " %s%s", s->tasks[i].name,
                                    listed + 1 < n_skipped ? "," : "");
            listed++;
        }
    if (listed < n_skipped && len < sizeof msg - 1)
        len += (size_t)snprintf(msg + len, sizeof msg - len, " and %d more (the task table lists them)",
                                n_skipped - listed);
    if (n_left && len < sizeof msg - 1) /* the run stopped early (a full file system) */
        snprintf(msg + len, sizeof msg - len, " %d task(s) not started (run the same command again to continue)",
                 n_left);
    RS_FAIL(first_err ? first_err : RS_ERR_INTERNAL, "%s", msg);
}

/* Every rank must hold the same graph, or the groups would disagree on what a task index is. */
static rs_err sched_check_graph(const rs_sched *s, int local, MPI_Comm world) {
    uint64_t h = graph_hash(s), h0 = h;
    MPI_Bcast(&h0, 1, MPI_UINT64_T, 0, world);
    int bad = h != h0 || local, any_bad = 0;
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, world);
    if (!any_bad) return RS_OK;
    if (local) return rs_err_push(local, __FILE__, __LINE__, __func__);
    RS_FAIL(RS_ERR_INTERNAL, "the ranks built different task graphs (graph hash %016" PRIx64 " here, %016" PRIx64
            " on rank 0)", h, h0);
}

/* The worker groups: size, this rank's group and its communicator, which tasks need the world. */
static void sched_make_groups(worker *w, rs_sched *s, char *is_world, MPI_Comm world) {
    int gs = s->opts.group_size > 0 ? s->opts.group_size : rs_sched_auto_group_size(s, w->size);
    if (gs > w->size) gs = w->size;
    int provided = MPI_THREAD_SINGLE;
    MPI_Query_thread(&provided);
    if (gs < w->size && provided < MPI_THREAD_MULTIPLE) {
        RS_WARN("the MPI library does not provide MPI_THREAD_MULTIPLE: tasks run one after another on all %d ranks",
                w->size);
        gs = w->size;
    }
    if (w->size % gs)
        RS_WARN("group size %d does not divide %d ranks: the last group has %d", gs, w->size, w->size % gs);
    w->gs = gs;
    w->n_groups = (w->size + gs - 1) / gs;
    w->group = w->rank / gs;
    s->group_size = gs;
    s->n_groups = w->n_groups;
    for (int i = 0; i < s->n_tasks; i++)
        is_world[i] = s->tasks[i].min_ranks == RS_SCHED_WORLD || s->tasks[i].min_ranks > gs || w->n_groups == 1;
    w->is_world = is_world;
    MPI_Comm_dup(world, &w->world);
    MPI_Comm_split(world, w->group, w->rank, &w->group_comm);
    MPI_Comm_rank(w->group_comm, &w->grank);
    MPI_Comm_size(w->group_comm, &w->gsize);
    w->leader = w->grank == 0;
    if (w->leader) w->txt = malloc((size_t)w->gsize * RS_SCHED_MSG_MAX);
}

/* Rank 0: the coordinator's state, with what is done already (whatever the run functions made
 * durable, as rank 0 sees it) and the priorities. */
static rs_err sched_coord_start(coord *c, rs_sched *s, const worker *w, rs_sched_done_fn done, void *ctx) {
    RS_TRY(coord_init(c, s, w->is_world, w->size, w->gs, w->n_groups));
    c->t0 = rs_now();
    c->t0_epoch = epoch_now();
    int n_before = 0;
    for (int i = 0; i < s->n_tasks; i++) {
        s->table[i].group = -1;
        if (done && done(ctx, &s->tasks[i])) {
            s->table[i].state = RS_SCHED_DONE_BEFORE;
            n_before++;
        } else {
            c->cost_todo += s->tasks[i].cost;
            c->n_todo++;
        }
        if (s->tasks[i].min_ranks > w->size)
            RS_WARN("task %s wants %d ranks; the world has %d: it runs on the world", s->tasks[i].name,
                    s->tasks[i].min_ranks, w->size);
    }
    rs_err err = compute_priorities(c);
    if (err) {
        coord_free(c);
        return err;
    }
    status_snapshot(c, 0);
    RS_INFO("scheduler: %d tasks, %d done before, %d to run; %d group(s) of %d rank(s)%s", s->n_tasks, n_before,
            c->n_todo, w->n_groups, w->gs, w->n_groups > 1 ? ", coordinator thread on rank 0" : "");
    return RS_OK;
}

static void sched_worker_free(worker *w, char *is_world) {
    MPI_Comm_free(&w->group_comm);
    MPI_Comm_free(&w->world);
    free(is_world);
    free(w->txt);
}

/* Run the tasks: inline on one group, else with the coordinator thread on rank 0. */
static rs_err sched_execute(worker *w, coord *c, rs_sched *s, rs_sched_run_fn run, void *ctx, MPI_Comm world) {
    if (w->n_groups == 1) {
        if (w->rank == 0) c->reply = reply_inline;
        run_inline(w, w->rank == 0 ? c : NULL, run, ctx);
        return RS_OK;
    }
    MPI_Comm_dup(world, &w->coord_comm);
    pthread_t th;
    coord_thread_arg arg = {w->rank == 0 ? c : NULL, s->opts.stop, &s->opts};
    int terr = 0;
    if (w->rank == 0) {
        c->reply = reply_mpi;
        c->comm = w->coord_comm;
        terr = pthread_create(&th, NULL, coord_main, &arg);
    }
    MPI_Bcast(&terr, 1, MPI_INT, 0, world);
    if (terr) { /* nothing has been sent yet: every rank can leave together */
        MPI_Comm_free(&w->coord_comm);
        RS_FAIL(RS_ERR_INTERNAL, "cannot start the coordinator thread on rank 0 (error %d)", terr);
    }
    worker_loop(w, run, ctx);
    if (w->rank == 0) pthread_join(th, NULL);
    MPI_Comm_free(&w->coord_comm);
    return RS_OK;
}

/* Rank 0 reports and frees the coordinator; then the table and the outcome go to every rank. */
static int sched_finish(rs_sched *s, coord *c, const worker *w, MPI_Comm world) {
    int interrupted = 0;
    if (w->rank == 0) {
        interrupted = c->interrupted;
        int n[6] = {0};
        for (int i = 0; i < s->n_tasks; i++) n[s->table[i].state]++;
        char el[32];
        rs_fmt_duration(el, sizeof el, rs_now() - c->t0);
        RS_INFO("scheduler: %d done, %d done before, %d failed, %d skipped, %d not run, in %s", n[RS_SCHED_DONE],
                n[RS_SCHED_DONE_BEFORE], n[RS_SCHED_FAILED], n[RS_SCHED_SKIPPED], n[RS_SCHED_PENDING] + n[RS_SCHED_RUNNING],
                el);
        status_snapshot(c, 1);
        coord_free(c);
    }
    MPI_Bcast(&interrupted, 1, MPI_INT, 0, world);
    if (s->n_tasks) {
        size_t bytes = sizeof *s->table * (size_t)s->n_tasks;
        for (size_t off = 0; off < bytes;) {
            size_t nb = bytes - off > (1u << 30) ? (1u << 30) : bytes - off;
            MPI_Bcast((char *)s->table + off, (int)nb, MPI_BYTE, 0, world);
            off += nb;
        }
    }
    return interrupted;
}

rs_err rs_sched_run(rs_sched *s, rs_sched_run_fn run, rs_sched_done_fn done, void *ctx, MPI_Comm world) {
    worker w;
    memset(&w, 0, sizeof w);
    w.s = s;
    MPI_Comm_rank(world, &w.rank);
    MPI_Comm_size(world, &w.size);
    free(s->table);
    s->table = calloc((size_t)(s->n_tasks > 0 ? s->n_tasks : 1), sizeof *s->table);
    char *is_world = calloc((size_t)(s->n_tasks > 0 ? s->n_tasks : 1), 1);
    int local = !s->table || !is_world ? RS_ERR_NOMEM : check_acyclic(s);
    rs_err err = sched_check_graph(s, local, world);
    if (err) {
        free(is_world);
        return err;
    }
    sched_make_groups(&w, s, is_world, world);

    coord c;
    memset(&c, 0, sizeof c);
    int cerr = w.leader && !w.txt ? RS_ERR_NOMEM : RS_OK;
    if (cerr) RS_ERR(cerr, "out of memory for the group's error texts");
    int coord_up = 0;
    if (w.rank == 0 && !cerr) {
        cerr = sched_coord_start(&c, s, &w, done, ctx);
        coord_up = !cerr;
    }
    int all_err = 0;
    MPI_Allreduce(&cerr, &all_err, 1, MPI_INT, MPI_MAX, world);
    if (all_err) {
        if (coord_up) coord_free(&c);
        sched_worker_free(&w, is_world);
        if (cerr) return rs_err_push(cerr, __FILE__, __LINE__, __func__);
        RS_FAIL(all_err, "another rank could not set up the scheduler (see its error above)");
    }
    err = sched_execute(&w, &c, s, run, ctx, world);
    if (err) {
        if (w.rank == 0) coord_free(&c);
        sched_worker_free(&w, is_world);
        return err;
    }
    int interrupted = sched_finish(s, &c, &w, world);
    sched_worker_free(&w, is_world);
    return summarize(s, interrupted);
}

/* =====================================================================================================
 * The task table in HDF5
 * ===================================================================================================== */

typedef struct table_row {
    char name[RS_SCHED_NAME_MAX];
    int32_t kind;
    uint64_t hash;
    char state[16];
    int32_t attempts, group, group_size, err;
    double t_start, t_end, seconds;
    char error[RS_SCHED_MSG_MAX];
} table_row;

rs_err rs_sched_write_table(hid_t loc, const char *name, const rs_sched *s) {
    if (!s->table) RS_FAIL(RS_ERR_INVAL, "task table '%s': the scheduler has not run", name);
    rs_err err = RS_OK;
    size_t n = (size_t)s->n_tasks;
    table_row *rows = calloc(n ? n : 1, sizeof *rows);
    RS_CHECK_ALLOC(rows);
    for (size_t i = 0; i < n; i++) {
        const rs_sched_task *t = &s->tasks[i];
        const rs_sched_record *r = &s->table[i];
        snprintf(rows[i].name, sizeof rows[i].name, "%s", t->name);
        rows[i].kind = t->kind;
        rows[i].hash = t->hash;
        snprintf(rows[i].state, sizeof rows[i].state, "%s", rs_sched_state_name(r->state));
        rows[i].attempts = r->attempts;
        rows[i].group = r->group;
        rows[i].group_size = r->group_size;
        rows[i].err = r->err;
        rows[i].t_start = r->t_start;
        rows[i].t_end = r->t_end;
        rows[i].seconds = r->seconds;
        snprintf(rows[i].error, sizeof rows[i].error, "%s", r->error);
    }
    hid_t s_name = H5Tcopy(H5T_C_S1), s_state = H5Tcopy(H5T_C_S1), s_err = H5Tcopy(H5T_C_S1);
    H5Tset_size(s_name, RS_SCHED_NAME_MAX);
    H5Tset_size(s_state, 16);
    H5Tset_size(s_err, RS_SCHED_MSG_MAX);
    hid_t ty = H5Tcreate(H5T_COMPOUND, sizeof(table_row));
    H5Tinsert(ty, "name", HOFFSET(table_row, name), s_name);
    H5Tinsert(ty, "kind", HOFFSET(table_row, kind), H5T_NATIVE_INT32);
    H5Tinsert(ty, "hash", HOFFSET(table_row, hash), H5T_NATIVE_UINT64);
    H5Tinsert(ty, "state", HOFFSET(table_row, state), s_state);
    H5Tinsert(ty, "attempts", HOFFSET(table_row, attempts), H5T_NATIVE_INT32);
    H5Tinsert(ty, "group", HOFFSET(table_row, group), H5T_NATIVE_INT32);
    H5Tinsert(ty, "group_size", HOFFSET(table_row, group_size), H5T_NATIVE_INT32);
    H5Tinsert(ty, "err", HOFFSET(table_row, err), H5T_NATIVE_INT32);
    H5Tinsert(ty, "t_start", HOFFSET(table_row, t_start), H5T_NATIVE_DOUBLE);
    H5Tinsert(ty, "t_end", HOFFSET(table_row, t_end), H5T_NATIVE_DOUBLE);
    H5Tinsert(ty, "seconds", HOFFSET(table_row, seconds), H5T_NATIVE_DOUBLE);
    H5Tinsert(ty, "error", HOFFSET(table_row, error), s_err);
    hsize_t dims = n;
    hid_t sp = H5Screate_simple(1, &dims, NULL);
    hid_t ds = H5Dcreate2(loc, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (ds < 0 || (n && H5Dwrite(ds, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) < 0))
        err = RS_ERR(RS_ERR_IO, "HDF5: cannot write the task table '%s'", name);
    if (!err) err = rs_h5_attr_i64(ds, "group_size", s->group_size);
    if (!err) err = rs_h5_attr_i64(ds, "n_groups", s->n_groups);
    if (!err) err = rs_h5_attr_i64(ds, "max_retries", s->opts.max_retries);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    H5Tclose(ty);
    H5Tclose(s_name);
    H5Tclose(s_state);
    H5Tclose(s_err);
    free(rows);
    return err;
}

/* ---- reading the status snapshot ------------------------------------------------------------------ */

void rs_sched_status_free(rs_sched_status *st) {
    free(st->rows);
    memset(st, 0, sizeof *st);
}

/* Split line at tabs into at most max fields (in place); returns the count. */
static int split_tabs(char **field, int max, char *line) {
    int n = 0;
    line[strcspn(line, "\n")] = '\0';
    for (char *p = line; n < max;) {
        field[n++] = p;
        char *t = strchr(p, '\t');
        if (!t) break;
        *t = '\0';
        p = t + 1;
    }
    return n;
}

rs_err rs_sched_status_read(rs_sched_status *st, const char *path) {
    memset(st, 0, sizeof *st);
    FILE *f = fopen(path, "r");
    if (!f) RS_FAIL(RS_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    rs_err err = RS_OK;
    char line[RS_SCHED_NAME_MAX + RS_SCHED_MSG_MAX + 256];
    int cap = 0, lineno = 0;
    while (!err && fgets(line, sizeof line, f)) {
        lineno++;
        char *fl[10] = {0};
        int nf = split_tabs(fl, 10, line);
        if (lineno == 1) {
            if (nf != 2 || strcmp(fl[0], "resae-sched-status") || strcmp(fl[1], "1"))
                err = RS_ERR(RS_ERR_FORMAT, "%s: not a scheduler status snapshot of version 1 (first line)", path);
        } else if (!strcmp(fl[0], "host") && nf == 2) {
            snprintf(st->host, sizeof st->host, "%s", fl[1]);
        } else if (!strcmp(fl[0], "pid") && nf == 2) {
            st->pid = strtol(fl[1], NULL, 10);
        } else if (!strcmp(fl[0], "started") && nf == 2) {
            st->started = strtod(fl[1], NULL);
        } else if (!strcmp(fl[0], "updated") && nf == 2) {
            st->updated = strtod(fl[1], NULL);
        } else if (!strcmp(fl[0], "final") && nf == 2) {
            st->final = atoi(fl[1]);
        } else if (!strcmp(fl[0], "groups") && nf == 3) {
            st->n_groups = atoi(fl[1]);
            st->group_size = atoi(fl[2]);
        } else if (!strcmp(fl[0], "task") && nf == 10) {
            if (st->n == cap) {
                int nc = cap ? 2 * cap : 64;
                rs_sched_status_row *r = realloc(st->rows, sizeof *r * (size_t)nc);
                if (!r) {
                    err = RS_ERR(RS_ERR_NOMEM, "%s: out of memory", path);
                    break;
                }
                st->rows = r;
                cap = nc;
            }
            rs_sched_status_row *r = &st->rows[st->n];
            memset(r, 0, sizeof *r);
            r->state = rs_sched_state_parse(fl[1]);
            r->kind = atoi(fl[2]);
            r->group = atoi(fl[3]);
            r->group_size = atoi(fl[4]);
            r->attempts = atoi(fl[5]);
            r->t_start = strtod(fl[6], NULL);
            r->seconds = strtod(fl[7], NULL);
            snprintf(r->name, sizeof r->name, "%s", fl[8]);
            snprintf(r->error, sizeof r->error, "%s", fl[9]);
            if (r->state < 0)
                err = RS_ERR(RS_ERR_FORMAT, "%s:%d: unknown task state '%s'", path,
                                 lineno, fl[1]);
            st->n++;
        } else {
            err = RS_ERR(RS_ERR_FORMAT, "%s:%d: unexpected line '%.40s'", path,
                             lineno, fl[0]);
        }
    }
    fclose(f);
    if (!err && lineno == 0) err = RS_ERR(RS_ERR_FORMAT, "%s: empty", path);
    if (err) rs_sched_status_free(st);
    return err;
}

int rs_sched_status_live(const rs_sched_status *st) {
    if (st->final) return 0;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    if (strcmp(host, st->host)) return -1;
    if (st->pid <= 0) return 0;
    if (!(kill((pid_t)st->pid, 0) == 0 || errno == EPERM)) return 0;
    /* a killed process can linger as a zombie until its parent reaps it */
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", st->pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')'); /* "pid (comm) state ..." */
    if (rp && (rp[2] == 'Z' || rp[2] == 'X')) return 0;
    return 1;
}
