/* resae status RUN_DIR: progress of a run per stage, readable while the run is going. It only reads:
 * the run's recorded config, the harvest journal, the task files and the checkpoints. */
#include <hdf5.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "resae/cli.h"
#include "resae/h5util.h"
#include "resae/harvest.h"
#include "resae/log.h"
#include "resae/results.h"
#include "resae/run.h"
#include "resae/sched.h"
#include "resae/stage_harvest.h"
#include "resae/taskfile.h"
#include "resae/tasks.h"
#include "resae/util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: resae status RUN_DIR\n\n"
               "Shows whether the last run is going, ended or was killed, then per stage how many tasks are\n"
               "done, running, failed or skipped and pending, an ETA from the measured task times, and the\n"
               "wall time and rank-seconds of the last run; failed tasks with their errors. Reads\n"
               "RUN_DIR/config.yaml (written by `resae run`), the harvest journal, RUN_DIR/tasks/,\n"
               "RUN_DIR/ckpt/ and the scheduler's RUN_DIR/status.tsv; safe while a run is going.\n"
               "exit codes: 0 complete, 3 incomplete, 1 error, 2 usage\n");
}

/* Harvest batches done according to the journal, and whether it is complete. */
static void journal_count(int64_t *done, int *complete, const char *run_dir) {
    char path[4096];
    *done = 0;
    *complete = 0;
    if (rs_path_join(path, sizeof path, run_dir, RS_HARVEST_JOURNAL)) {
        rs_err_clear();
        return;
    }
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "done ", 5)) (*done)++;
        if (!strcmp(line, "complete\n")) *complete = 1;
    }
    fclose(f);
}

/* What the scheduler's snapshot says of one task kind. */
typedef struct stage_snap {
    int running, failed, skipped, interrupted, ran;
    double t_lo, t_hi, rank_secs;
} stage_snap;

static void line(const char *stage, int64_t done, int64_t running, int64_t total, const char *unit, double rate_s,
                 const stage_snap *sn, int n_groups) {
    char eta[32] = "-";
    int64_t left = total - done;
    if (sn && sn->running > running) running = sn->running;
    int failed = sn ? sn->failed + sn->skipped : 0;
    int64_t pending = left - running - failed > 0 ? left - running - failed : 0;
    if (left <= 0)
        snprintf(eta, sizeof eta, "done");
    else if (rate_s > 0)
        rs_fmt_duration(eta, sizeof eta, (double)(left - failed) * rate_s / (n_groups > 0 ? n_groups : 1));
    printf("  %-10s %6" PRId64 " / %-6" PRId64 " %-12s running %-3" PRId64 " failed/skipped %-3d pending %-6" PRId64 " %s%-10s",
           stage, done, total, unit, running, failed, pending, left > 0 && rate_s > 0 ? "ETA " : "", eta);
    if (sn && sn->ran) {
        char span[32];
        rs_fmt_duration(span, sizeof span, sn->t_hi - sn->t_lo);
        printf("  last run: %d task(s), wall %s, %.1f rank-s", sn->ran, span, sn->rank_secs);
        if (sn->interrupted) printf(", %d interrupted", sn->interrupted);
    }
    printf("\n");
}

/* The Slurm job of the run holding the run lock now (" (Slurm job N)"; empty when none). */
static void lock_job(char *out, size_t cap, const char *run_dir) {
    out[0] = 0;
    char path[4096], *text = NULL;
    size_t len = 0;
    if (rs_path_join(path, sizeof path, run_dir, RS_RUN_LOCK_FILE) || rs_read_file(&text, &len, path, 4096)) {
        rs_err_clear();
        return;
    }
    const char *job = strstr(text, ", Slurm job ");
    if (job) snprintf(out, cap, " (Slurm job %.*s)", (int)strcspn(job + 12, "\n"), job + 12);
    free(text);
}

/* The scheduler's snapshot: running, failed and per-kind times of the last (or current) run; prints
 * the run's state and its failed tasks. Returns whether there is a snapshot; *ng: its group count. */
static int read_snapshot(stage_snap sn[RS_TASK_KIND_COUNT], int *ng, const char *run_dir) {
    memset(sn, 0, sizeof(stage_snap) * RS_TASK_KIND_COUNT);
    *ng = 1;
    char spath[4096];
    rs_sched_status ss;
    if (rs_path_join(spath, sizeof spath, run_dir, RS_RUN_STATUS_FILE) || !rs_file_exists(spath)) {
        rs_err_clear();
        return 0;
    }
    if (rs_sched_status_read(&ss, spath)) {
        rs_err_print();
        rs_err_clear();
        return 0;
    }
    int live = rs_sched_status_live(&ss);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    char ago[32], upd[32];
    rs_fmt_duration(ago, sizeof ago, now > ss.started ? now - ss.started : 0);
    rs_fmt_duration(upd, sizeof upd, now > ss.updated ? now - ss.updated : 0);
    const char *what = ss.final ? "ended" : live == 1 ? "running" : live == 0 ? "killed or lost (no exit recorded)"
                                                                              : "on another host";
    char job[64] = "";
    if (live != 0 && !ss.final) lock_job(job, sizeof job, run_dir);
    printf("last run: %s%s; pid %ld on %s, started %s ago, snapshot %s old; %d group(s) of %d rank(s)\n", what, job,
           ss.pid, ss.host, ago, upd, ss.n_groups, ss.group_size);
    for (int i = 0; i < RS_TASK_KIND_COUNT; i++) sn[i].t_lo = 1e300;
    int n_skipped = 0;
    for (int i = 0; i < ss.n; i++) {
        const rs_sched_status_row *r = &ss.rows[i];
        if (r->kind < 0 || r->kind >= RS_TASK_KIND_COUNT) continue;
        stage_snap *g = &sn[r->kind];
        if (r->state == RS_SCHED_RUNNING) {
            if (live != 0) g->running++;
            else g->interrupted++;
        }
        if (r->state == RS_SCHED_FAILED) g->failed++;
        if (r->state == RS_SCHED_SKIPPED) g->skipped++;
        if (r->state == RS_SCHED_FAILED) printf("  failed %s: %s\n", r->name, r->error);
        if (r->state == RS_SCHED_SKIPPED && ++n_skipped <= 3) printf("  skipped %s: %s\n", r->name, r->error);
        if (r->attempts > 0) {
            double end = r->state == RS_SCHED_RUNNING ? (live == 1 ? now - ss.started : ss.updated - ss.started)
                                                      : r->t_start + r->seconds;
            g->ran++;
            if (r->t_start < g->t_lo) g->t_lo = r->t_start;
            if (end > g->t_hi) g->t_hi = end;
            if (r->state != RS_SCHED_RUNNING) g->rank_secs += r->seconds * r->group_size;
        }
    }
    *ng = ss.n_groups > 0 ? ss.n_groups : 1;
    if (n_skipped > 3) printf("  ... and %d more skipped tasks (`h5dump -d tasks RUN_DIR/results.h5` lists them)\n", n_skipped - 3);
    rs_sched_status_free(&ss);
    return 1;
}

/* The harvest line: batches from the journal out of the batches the splits make. */
static int harvest_line(const rs_run *run, const char *run_dir, const stage_snap *sn) {
    int64_t done = 0, total = -1;
    int complete = 0;
    journal_count(&done, &complete, run_dir);
    if (rs_stage_harvest_batches(&total, run)) total = -1;
    rs_err_clear();
    if (complete && total < 0) total = done;
    line("harvest", complete ? (total > 0 ? total : done) : done, !complete && done > 0,
         total > 0 ? total : done + !complete, "batches", 0, sn, 1);
    return complete;
}

/* Done, running (a checkpoint exists) and measured seconds of the tasks of one kind; the line. */
static int kind_line(const rs_run *run, const rs_task_list *l, enum rs_task_kind k, const char *unit,
                     const stage_snap *sn, int ng) {
    int done = 0, running = 0, total = 0;
    double secs = 0;
    for (int i = 0; i < l->n; i++) {
        const rs_task *t = &l->tasks[i];
        if (t->kind != k) continue;
        total++;
        char ck[4096];
        if (rs_file_exists(t->path)) {
            done++;
            secs += rs_taskfile_seconds(t->path);
        } else if (k == RS_TASK_TRAIN && !rs_tasks_ckpt_path(ck, sizeof ck, run, &run->grid.saes[t->index]) &&
                   rs_file_exists(ck)) {
            running++;
        }
    }
    rs_err_clear();
    /* ablation files record no seconds: no per-task rate, so no ETA */
    line(rs_task_kind_name(k), done, running, total, unit, done && k != RS_TASK_ABLATE ? secs / done : 0, sn, ng);
    return done == total;
}

static void results_line(const char *run_dir) {
    char rpath[4096];
    struct stat st;
    if (!rs_path_join(rpath, sizeof rpath, run_dir, RS_RESULTS_FILE) && !stat(rpath, &st)) {
        char when[64];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&st.st_mtime));
        printf("results: %s (written %s)\n", rpath, when);
    } else {
        printf("results: not written yet\n");
    }
    rs_err_clear();
}

int rs_cmd_status(int argc, char **argv) {
    int rc = rs_cli_args(argc, argv, 1, usage);
    if (rc >= 0) return rc;
    const char *run_dir = argv[1];
    char cpath[4096];
    if (rs_path_join(cpath, sizeof cpath, run_dir, RS_RUN_CONFIG_FILE)) return rs_cli_fail();
    if (!rs_file_exists(cpath)) {
        fprintf(stderr, "error: %s not found: %s is not a run directory started by `resae run`\n", cpath, run_dir);
        return RS_EXIT_ERROR;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    /* the run directory given may have moved: read task files there */
    rs_run run;
    rs_run_opts opts = {0, RS_STAGE_EVAL, NULL};
    if (rs_run_init(&run, cpath, &opts, run_dir)) return rs_cli_fail();
    rs_task_list l;
    if (rs_tasks_build(&l, &run)) {
        rs_run_free(&run);
        return rs_cli_fail();
    }
    printf("run %s (%s)\n", run.cfg.name, run_dir);
    stage_snap sn[RS_TASK_KIND_COUNT];
    int ng = 1, have = read_snapshot(sn, &ng, run_dir);
#define SNAP(k) (have ? &sn[k] : NULL)
    printf("stages:\n");
    int complete = harvest_line(&run, run_dir, SNAP(RS_TASK_HARVEST));
    complete &= kind_line(&run, &l, RS_TASK_AFFINE, "fits", SNAP(RS_TASK_AFFINE), ng);
    complete &= kind_line(&run, &l, RS_TASK_TRAIN, "SAEs", SNAP(RS_TASK_TRAIN), ng);
    if (rs_tasks_count(&l, RS_TASK_ABLATE)) complete &= kind_line(&run, &l, RS_TASK_ABLATE, "sets", SNAP(RS_TASK_ABLATE), ng);
    complete &= kind_line(&run, &l, RS_TASK_EVAL, "evaluations", SNAP(RS_TASK_EVAL), ng);
    if (rs_tasks_count(&l, RS_TASK_PROBE)) complete &= kind_line(&run, &l, RS_TASK_PROBE, "sets", SNAP(RS_TASK_PROBE), ng);
    if (rs_tasks_count(&l, RS_TASK_TPP)) complete &= kind_line(&run, &l, RS_TASK_TPP, "sets", SNAP(RS_TASK_TPP), ng);
#undef SNAP
    results_line(run_dir);
    printf("state: %s\n", complete ? "complete (every stage that exists)" : "incomplete");
    rs_tasks_free(&l);
    rs_run_free(&run);
    return complete ? RS_EXIT_OK : RS_EXIT_INCOMPLETE;
}
