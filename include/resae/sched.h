/* Task scheduling over worker groups: the coordinator of `resae run`.
 *
 * The world is split into worker groups of `group_size` consecutive ranks (MPI_Comm_split). Every
 * group takes one task at a time and runs it collectively on its group communicator; different
 * groups run different tasks concurrently. Rank 0 leads group 0 and works like every other rank;
 * a coordinator thread on rank 0 owns the task graph and answers the group leaders on a
 * communicator of its own (a duplicate of the world), so a group never waits for rank 0 to finish
 * its own task. It hands each free group the ready task (every dependency done) that heads the
 * costliest chain of remaining work (its cost plus the largest such chain among its dependents).
 * A task with min_ranks = RS_SCHED_WORLD (or more ranks than a group has) runs on the world
 * communicator once every group is free: all groups join it. While a world task is ready, no
 * other task is handed out, so the groups drain and it starts as soon as they are free.
 *
 * With one group (group_size = world size, or an MPI library without MPI_THREAD_MULTIPLE) no
 * thread is started: rank 0 decides between tasks and broadcasts its choice.
 *
 * Completion is whatever the run function made durable: at start rank 0 asks done(ctx, task) for
 * every task (e.g. "its task file exists"); nothing in memory survives a restart. A failing task
 * is retried up to max_retries times (not when its error is RS_ERR_CONFIG, _FORMAT, _INVAL or
 * _UNSUPPORTED, which fail the same way again); once it has failed for good its dependents (transitively)
 * are skipped, and every other task still runs. When the stop flag is set (SIGTERM/SIGUSR1), no
 * more tasks are handed out; running tasks see the same flag, checkpoint and return
 * RS_ERR_INTERRUPTED; every rank returns.
 *
 * Contract for run(ctx, task, comm): collective over comm; every rank of comm returns the same
 * success or failure (agree errors inside the comm, e.g. with rs_mpi_agree); never leaves a
 * collective early. The scheduler agrees the returned codes once more and collects the error text
 * of the ranks of the group. */
#ifndef RESAE_SCHED_H
#define RESAE_SCHED_H

#include <hdf5.h>
#include <mpi.h>
#include <signal.h>
#include <stdint.h>

#include "resae/err.h"

#define RS_SCHED_NAME_MAX 96
#define RS_SCHED_MSG_MAX 480
/* min_ranks of a task that needs every rank (all groups join it). */
#define RS_SCHED_WORLD (-1)

typedef enum rs_sched_state {
    RS_SCHED_PENDING = 0,  /* not started, or interrupted (runs on the next start) */
    RS_SCHED_RUNNING = 1,
    RS_SCHED_DONE = 2,     /* finished in this run */
    RS_SCHED_DONE_BEFORE = 3, /* done(ctx, task) said so at start: not run */
    RS_SCHED_FAILED = 4,   /* failed on every attempt */
    RS_SCHED_SKIPPED = 5   /* a dependency failed */
} rs_sched_state;

typedef struct rs_sched_task {
    char name[RS_SCHED_NAME_MAX]; /* for logs and the task table, e.g. "sae raw_L3_k32_s0" */
    int kind;                     /* the caller's task kind */
    uint64_t hash;                /* identity hash (every input that determines the output) */
    double cost;                  /* estimated cost, any unit shared by all tasks (e.g. seconds) */
    int min_ranks;                /* fewest ranks it runs on; RS_SCHED_WORLD: the whole world */
    int pref_ranks;               /* preferred group size, used by the automatic group size (0: none) */
    void *data;                   /* the caller's pointer (not owned) */
    int n_deps;
    int *deps;                    /* (n_deps) indices of tasks that must be done first (owned) */
} rs_sched_task;

/* One row of the task table (the results store writes it). Times are seconds on rank 0's clock
 * since the start of rs_sched_run. */
typedef struct rs_sched_record {
    int state;        /* rs_sched_state */
    int attempts;     /* attempts started in this run */
    int group;        /* group of the last attempt (-1: the world) */
    int group_size;   /* ranks of the last attempt */
    int err;          /* rs_err of the last failed attempt (0 if none) */
    double t_start, t_end;
    double seconds;   /* wall time of the last attempt */
    char error[RS_SCHED_MSG_MAX]; /* error text of the last failed attempt ("" if none) */
} rs_sched_record;

typedef struct rs_sched_opts {
    int group_size;   /* ranks per group; 0 = automatic (see rs_sched_auto_group_size) */
    int max_retries;  /* attempts after the first failing one */
    volatile sig_atomic_t *stop; /* set by a signal handler (may be NULL) */
    /* error text that only says another rank failed: the table shows another rank's text */
    const char *other_rank_msg;
    double poll_min, poll_max;   /* seconds between polls of a waiting rank (default 1 ms, 20 ms) */
    double status_interval;      /* seconds between "running now" lines of the coordinator (60) */
    const char *status_path;     /* if set, rank 0 keeps a text snapshot of the table there (below) */
} rs_sched_opts;

typedef rs_err (*rs_sched_run_fn)(void *ctx, const rs_sched_task *t, MPI_Comm comm);
typedef int (*rs_sched_done_fn)(void *ctx, const rs_sched_task *t);

typedef struct rs_sched {
    rs_sched_opts opts;
    int n_tasks, cap_tasks;
    rs_sched_task *tasks;   /* (n_tasks) */
    rs_sched_record *table; /* (n_tasks) filled by rs_sched_run, identical on every rank */
    int group_size;         /* used by the last run */
    int n_groups;
} rs_sched;

void rs_sched_opts_default(rs_sched_opts *o);
void rs_sched_init(rs_sched *s, const rs_sched_opts *o);
void rs_sched_free(rs_sched *s);

/* Add a task; *index receives its index (dependencies refer to it). Every rank must add the same
 * tasks with the same dependencies in the same order (rs_sched_run checks). */
rs_err rs_sched_add(int *index, rs_sched *s, const char *name, int kind, uint64_t hash, double cost, int min_ranks,
                    int pref_ranks, void *data);
/* Task `task` needs task `dep` done first (dep < task is not required; cycles are refused). */
rs_err rs_sched_add_dep(rs_sched *s, int task, int dep);

/* The group size chosen for 0 = auto, for `size` ranks: the largest min_ranks of the non-world
 * tasks, or more if the cost-weighted median preferred size is larger; grown while more groups
 * than runnable tasks would exist; then the next divisor of size (so groups are equal). */
int rs_sched_auto_group_size(const rs_sched *s, int size);

/* Run every task not done yet. Collective over world. Returns the same code on every rank:
 * RS_OK when every task is done; RS_ERR_INTERRUPTED when stopped by the flag; otherwise an error
 * whose message lists the failed and the skipped tasks. s->table is filled on every rank. */
rs_err rs_sched_run(rs_sched *s, rs_sched_run_fn run, rs_sched_done_fn done, void *ctx, MPI_Comm world);

const char *rs_sched_state_name(int state);
/* The state for a name of rs_sched_state_name, -1 if none. */
int rs_sched_state_parse(const char *name);

/* The status snapshot (opts.status_path): rewritten atomically (write + rename) by the coordinator
 * on rank 0 whenever a task starts, finishes, fails or is skipped, and at the end, so that another
 * process (`resae status`) can read where a run is while it goes. Text, one field per tab:
 *   resae-sched-status 1
 *   host HOSTNAME / pid PID / started EPOCH / updated EPOCH / final 0|1 / groups N_GROUPS GROUP_SIZE
 *   task STATE KIND GROUP GROUP_SIZE ATTEMPTS T_START SECONDS NAME ERROR   (one line per task)
 * EPOCH: seconds since 1970 (UTC); T_START: seconds since `started`; final 1: rs_sched_run returned
 * (a snapshot with final 0 whose writer is gone is a run that was killed). */
typedef struct rs_sched_status_row {
    int state, kind, group, group_size, attempts;
    double t_start, seconds;
    char name[RS_SCHED_NAME_MAX];
    char error[RS_SCHED_MSG_MAX];
} rs_sched_status_row;

typedef struct rs_sched_status {
    char host[256];
    long pid;
    double started, updated;
    int final, n_groups, group_size;
    int n;
    rs_sched_status_row *rows; /* (n) owned */
} rs_sched_status;

rs_err rs_sched_status_read(rs_sched_status *st, const char *path);
void rs_sched_status_free(rs_sched_status *st);
/* 1: the writing process is alive (same host); 0: it is gone or the snapshot is final; -1: it ran on
 * another host (cannot tell). */
int rs_sched_status_live(const rs_sched_status *st);

/* Write s->table as dataset `name` under loc (a file or group; one rank, serial HDF5): one compound
 * row per task with fields name, kind, hash, state (a name: done, done_before, failed, skipped,
 * pending), attempts, group, group_size, err, t_start, t_end, seconds, error. Attributes: group_size,
 * n_groups, max_retries. */
rs_err rs_sched_write_table(hid_t loc, const char *name, const rs_sched *s);

#endif
