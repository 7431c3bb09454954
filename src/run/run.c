/* `resae run` (run.h): the run, the task graph and the scheduler callback. The only file that knows
 * every stage. */
#define _GNU_SOURCE
#include "resae/run.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "resae/actstore.h"
#include "resae/h5util.h"
#include "resae/log.h"
#include "resae/memplan.h"
#include "resae/model.h"
#include "resae/mpi_util.h"
#include "resae/results.h"
#include "resae/sched.h"
#include "resae/stage_affine.h"
#include "resae/stage_eval.h"
#include "resae/stage_probe.h"
#include "resae/stage_tpp.h"
#include "resae/stage_harvest.h"
#include "resae/stage_train.h"
#include "resae/taskfile.h"
#include "resae/tasks.h"
#include "resae/tokens.h"
#include "resae/util.h"

/* =====================================================================================================
 * The run
 * ===================================================================================================== */

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Every layer the store holds: the selected layers and the regression layers, sorted, unique. */
static rs_err store_layers(rs_run *run) {
    int n = run->grid.n_union_layers + run->cfg.layers.regression.n;
    RS_CHECK(n <= RS_ACTSTORE_MAX_LAYERS, RS_ERR_CONFIG,
             "%s: the experiment needs %d stored layers, more than the %d supported", run->cfg.path, n,
             RS_ACTSTORE_MAX_LAYERS);
    int *v = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    RS_CHECK_ALLOC(v);
    int m = 0;
    for (int i = 0; i < run->grid.n_union_layers; i++) v[m++] = run->grid.union_layers[i];
    for (int i = 0; i < run->cfg.layers.regression.n; i++) v[m++] = (int)run->cfg.layers.regression.v[i];
    qsort(v, (size_t)m, sizeof(int), cmp_int);
    run->n_store_layers = 0;
    for (int i = 0; i < m; i++)
        if (!run->n_store_layers || v[run->n_store_layers - 1] != v[i]) v[run->n_store_layers++] = v[i];
    run->store_layers = v;
    return RS_OK;
}

rs_err rs_run_init(rs_run *run, const char *config_path, const rs_run_opts *opts, const char *run_dir) {
    memset(run, 0, sizeof *run);
    run->opts = *opts;
    RS_TRY(rs_config_load(&run->cfg, config_path));
    rs_err err = RS_OK;
    if (run_dir) {
        char *d = strdup(run_dir);
        if (!d) RS_FAIL_GOTO(fail, RS_ERR_NOMEM, "out of memory for the run directory");
        free(run->cfg.run_dir);
        run->cfg.run_dir = d;
    }
    RS_TRY_GOTO(rs_config_load_model(&run->mc, &run->cfg), fail);
    RS_TRY_GOTO(rs_grid_build(&run->grid, &run->cfg, &run->mc), fail);
    RS_TRY_GOTO(store_layers(run), fail);
    return RS_OK;
fail:
    rs_run_free(run);
    return err;
}

void rs_run_free(rs_run *run) {
    rs_grid_free(&run->grid);
    rs_config_free(&run->cfg);
    free(run->store_layers);
    memset(run, 0, sizeof *run);
}

int rs_run_err_is_remote(void) { return rs_err_is_remote(); }

/* Record the resolved config in the run directory (rank 0); a different one there is reported. */
static rs_err record_config(const rs_task_ctx *c) {
    const rs_run *run = c->run;
    rs_err err = RS_OK;
    if (c->rank == 0) {
        char path[4096], tmp[4200];
        err = rs_tasks_run_file(path, sizeof path, run, RS_RUN_CONFIG_FILE);
        if (!err && rs_file_exists(path)) {
            rs_config old;
            if (rs_config_load(&old, path) == RS_OK) {
                if (rs_config_hash(&old) != run->grid.config_hash)
                    RS_WARN("the config differs from the one this run directory was started with: tasks whose inputs "
                            "changed are run again, finished tasks with unchanged inputs are kept");
                rs_config_free(&old);
            }
            rs_err_clear();
        }
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = err ? NULL : fopen(tmp, "w");
        if (!err && !f) {
            err = RS_ERR(RS_ERR_IO, "%s: cannot write", tmp);
        } else if (f) {
            err = rs_config_write_yaml(f, &run->cfg);
            if (fclose(f) && !err) err = RS_ERR(RS_ERR_IO, "%s: write failed", tmp);
            if (!err) err = rs_file_commit(tmp, path);
        }
    }
    return rs_agree(err, c->comm, "recording the config");
}

/* =====================================================================================================
 * The scheduler's callbacks
 * ===================================================================================================== */

typedef struct run_ctx {
    const rs_run *run;
    const rs_task_list *l; /* sched task i is l->tasks[i] */
    int eval_loaded;       /* this rank loaded model and tokens for evaluation tasks */
    rs_model model;
    rs_tokens tk;
    int started[RS_TASK_KIND_COUNT]; /* this rank has led a task of the kind (for the "stage" lines) */
    signed char *done;     /* (l->n) rank 0's verdict on each task file: 0 not taken yet, 1 done, -1 to run */
} run_ctx;

static const rs_task *task_of(const run_ctx *c, const rs_sched_task *t) { return &c->l->tasks[(intptr_t)t->data]; }

/* done(): the task file exists and reads back whole (asked on rank 0, by the plan and then by the
 * scheduler, both before any task runs: each file is verified once). The harvest always runs: it
 * reuses a complete store, so a finished harvest costs only the check. */
static int task_file_done(const rs_task *task);

static int sched_done(void *vctx, const rs_sched_task *t) {
    run_ctx *c = vctx;
    signed char *d = &c->done[(intptr_t)t->data];
    if (!*d) *d = task_file_done(task_of(c, t)) ? 1 : -1;
    return *d > 0;
}

static int task_file_done(const rs_task *task) {
    if (task->kind == RS_TASK_HARVEST || !rs_file_exists(task->path)) return 0;
    /* a damaged task file (flipped bytes, a truncated tail) is moved aside and its task runs again */
    char why[256] = "", aside[4200];
    if (rs_taskfile_intact(task->path, why, sizeof why)) return 1;
    snprintf(aside, sizeof aside, "%s.damaged", task->path);
    if (rename(task->path, aside)) {
        RS_WARN("task file %s is damaged (%s) and cannot be moved aside (%s): the task runs again and replaces it",
                task->path, why, strerror(errno));
        return 0;
    }
    RS_WARN("task file %s is damaged (%s): moved to %s; the task runs again", task->path, why, aside);
    return 0;
}

/* Model and tokens of the evaluation tasks, loaded once per rank on first use. Collective over tc->comm. */
static rs_err eval_resources(run_ctx *c, const rs_task_ctx *tc) {
    if (c->eval_loaded || !c->run->cfg.eval.ce) return RS_OK;
    memset(&c->tk, 0, sizeof c->tk);
    c->tk.fd = -1;
    rs_err err = rs_stage_tokens_open(&c->tk, c->run, 1);
    if (!err) {
        err = rs_model_load(&c->model, c->run->cfg.model.path, (enum rs_weights_mode)c->run->cfg.model.weights);
        if (err) rs_tokens_close(&c->tk);
    }
    err = rs_agree(err, tc->comm, "loading the model and tokens for evaluation");
    if (err) {
        rs_model_free(&c->model);
        return err;
    }
    c->eval_loaded = 1;
    return RS_OK;
}

static rs_err run_task(run_ctx *c, const rs_task *t, const rs_task_ctx *tc) {
    const rs_run *run = c->run;
    switch (t->kind) {
    case RS_TASK_HARVEST: return rs_stage_harvest_run(tc);
    case RS_TASK_AFFINE: return rs_stage_affine_run(tc, c->l->pairs[t->index][0], c->l->pairs[t->index][1], t->path);
    case RS_TASK_TRAIN: return rs_stage_train_run(tc, &run->grid.saes[t->index], t->path);
    case RS_TASK_EVAL:
        RS_TRY(eval_resources(c, tc));
        return rs_stage_eval_run(tc, t->index, t->path, &c->model, &c->tk);
    case RS_TASK_ABLATE:
        RS_TRY(eval_resources(c, tc));
        return rs_stage_eval_ablate(tc, t->index, &c->model, &c->tk);
    case RS_TASK_PROBE: return rs_stage_probe_run(tc, t->index, t->path);
    case RS_TASK_TPP: return rs_stage_tpp_run(tc, t->index, t->path);
    case RS_TASK_KIND_COUNT: break;
    }
    RS_FAIL(RS_ERR_INTERNAL, "task %s of unknown kind %d", t->name, (int)t->kind);
}

/* Run one task on comm (a group, or the world for the harvest). A rank that only heard of another
 * rank's failure says so in the scheduler's words, so the task table shows the failing rank's text. */
static rs_err sched_run(void *vctx, const rs_sched_task *st, MPI_Comm comm) {
    run_ctx *c = vctx;
    const rs_task *t = task_of(c, st);
    rs_task_ctx tc;
    rs_task_ctx_init(&tc, c->run, comm);
    if (tc.rank == 0 && !c->started[t->kind]) {
        c->started[t->kind] = 1;
        rs_log_all(RS_LOG_INFO, "stage %s: first task %s on %d ranks", rs_task_kind_name(t->kind), t->name, tc.size);
    }
    rs_err err = run_task(c, t, &tc);
    if (err && err != RS_ERR_INTERRUPTED && rs_run_err_is_remote()) {
        err = RS_ERR(err, "%s", RS_RUN_OTHER_RANK);
        rs_err_mark_remote();
    }
    return err;
}

/* =====================================================================================================
 * The graph and the stage lines
 * ===================================================================================================== */

/* The tasks of the stages up to `until` (a prefix of the list: their indices and deps are kept). */
static rs_err build_graph(rs_sched *s, const rs_task_list *l, enum rs_stage until) {
    for (int i = 0; i < l->n; i++) {
        const rs_task *t = &l->tasks[i];
        if (rs_task_kind_stage(t->kind) > until) break;
        int k;
        RS_TRY(rs_sched_add(&k, s, t->name, t->kind, t->hash, t->cost, t->kind == RS_TASK_HARVEST ? RS_SCHED_WORLD : 1,
                            0, (void *)(intptr_t)i));
        RS_CHECK(k == i, RS_ERR_INTERNAL, "task %s got index %d, expected %d", t->name, k, i);
        for (int d = 0; d < t->n_deps; d++) RS_TRY(rs_sched_add_dep(s, i, t->deps[d]));
    }
    return RS_OK;
}

/* The plan of each stage: tasks in all and to do (rank 0 checks the files). Collective. */
static void log_plan(const rs_task_ctx *tc, const rs_sched *s, run_ctx *c) {
    const rs_run *run = tc->run;
    int todo[RS_TASK_KIND_COUNT] = {0}, n[RS_TASK_KIND_COUNT] = {0};
    if (tc->rank == 0)
        for (int i = 0; i < s->n_tasks; i++) {
            n[s->tasks[i].kind]++;
            todo[s->tasks[i].kind] += !sched_done(c, &s->tasks[i]);
        }
    MPI_Bcast(todo, RS_TASK_KIND_COUNT, MPI_INT, 0, tc->comm);
    MPI_Bcast(n, RS_TASK_KIND_COUNT, MPI_INT, 0, tc->comm);
    enum rs_stage until = run->opts.until;
    if (until >= RS_STAGE_AFFINE)
        RS_INFO("affine: %d fits (%d consecutive pairs, %d regression pairs), %d to do", c->l->n_pairs,
                run->grid.n_affine, run->grid.n_regression, todo[RS_TASK_AFFINE]);
    if (until >= RS_STAGE_TRAIN)
        RS_INFO("train: %d SAEs (%d raw, %d resae), %d to do; %" PRId64 " steps of %" PRId64 " tokens each",
                run->grid.n_saes, run->grid.n_raw, run->grid.n_resae, todo[RS_TASK_TRAIN], run->grid.train_steps,
                run->cfg.train.batch_size);
    if (until >= RS_STAGE_EVAL)
        RS_INFO("evaluate: %d evaluations (%d unique), %d to do", run->grid.n_evals, n[RS_TASK_EVAL], todo[RS_TASK_EVAL]);
}

/* Wall time per task kind: first start to last end of its tasks run now. */
static void log_times(const rs_sched *s, double seconds) {
    double t_lo[RS_TASK_KIND_COUNT], t_hi[RS_TASK_KIND_COUNT] = {0}, busy[RS_TASK_KIND_COUNT] = {0};
    int ran[RS_TASK_KIND_COUNT] = {0};
    for (int k = 0; k < RS_TASK_KIND_COUNT; k++) t_lo[k] = 1e300;
    for (int i = 0; i < s->n_tasks; i++) {
        const rs_sched_record *r = &s->table[i];
        if (r->attempts <= 0) continue;
        int k = s->tasks[i].kind;
        ran[k]++;
        if (r->t_start < t_lo[k]) t_lo[k] = r->t_start;
        if (r->t_end > t_hi[k]) t_hi[k] = r->t_end;
        busy[k] += r->seconds * r->group_size;
    }
    for (int k = 0; k < RS_TASK_KIND_COUNT; k++)
        if (ran[k])
            RS_INFO("stage %s: %d tasks, %.1fs to %.1fs (span %.1fs), %.1f rank-seconds",
                    rs_task_kind_name((enum rs_task_kind)k), ran[k], t_lo[k], t_hi[k], t_hi[k] - t_lo[k], busy[k]);
    RS_INFO("tasks: %.1fs on %d groups of %d ranks", seconds, s->n_groups, s->group_size);
}

/* =====================================================================================================
 * One run per run directory: RUN_DIR/run.lock, flock()ed by rank 0 for the whole run. The kernel
 * drops the lock when the holder dies (SIGKILL too; on NFS when the holder's lease ends), so a lock
 * left by a killed run, on this host or another, is simply taken over; a live holder is named.
 * ===================================================================================================== */

static rs_err lock_acquire(int *fd_out, const rs_task_ctx *tc) {
    *fd_out = -1;
    if (tc->rank != 0) return RS_OK;
    char path[4096];
    RS_TRY(rs_tasks_run_file(path, sizeof path, tc->run, RS_RUN_LOCK_FILE));
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open the run lock: %s", path, strerror(errno));
    char held[512] = "";
    ssize_t n = pread(fd, held, sizeof held - 1, 0);
    held[n > 0 ? n : 0] = 0;
    held[strcspn(held, "\n")] = 0;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            RS_FAIL(RS_ERR_INVAL,
                    "%s: another resae run is using this run directory (%s); wait for it to end, stop it, or give "
                    "this run another run_dir",
                    path, held[0] ? held : "holder unknown");
        RS_WARN("%s: the file system does not support locks (%s): a second resae run on this run directory "
                "would not be detected",
                path, strerror(e));
        return RS_OK;
    }
    if (held[0]) RS_INFO("run lock: taking over %s, left by a run that is no longer running (%s)", path, held);
    char host[256] = "?", line[768];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    const char *job = getenv("SLURM_JOB_ID");
    time_t now = time(NULL);
    struct tm tm;
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&now, &tm));
    int len = snprintf(line, sizeof line, "pid %ld on host %s, started %s%s%s\n", (long)getpid(), host, when,
                       job ? ", Slurm job " : "", job ? job : "");
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len)
        RS_WARN("%s: cannot record the holder in the run lock: %s", path, strerror(errno));
    *fd_out = fd;
    return RS_OK;
}

/* The holder's line stays in the file after the run (the next run says whose lock it took over only
 * when it was left by a killed run: a clean end empties it). */
static void lock_release(int fd) {
    if (fd < 0) return;
    if (ftruncate(fd, 0) != 0) RS_WARN("cannot empty the run lock: %s", strerror(errno));
    close(fd);
}

/* =====================================================================================================
 * The whole run
 * ===================================================================================================== */

static rs_err make_dirs(const rs_task_ctx *tc) {
    rs_err err = RS_OK;
    if (tc->rank == 0) {
        char dir[4096];
        err = rs_tasks_run_file(dir, sizeof dir, tc->run, "tasks");
        if (!err) err = rs_mkdirs(dir);
        if (!err) err = rs_tasks_run_file(dir, sizeof dir, tc->run, "ckpt");
        if (!err) err = rs_mkdirs(dir);
    }
    return rs_agree(err, tc->comm, "creating the run directory");
}

/* Schedule the graph and write the results (also after a failure, keeping the scheduler's message). */
static rs_err schedule(const rs_task_ctx *tc, rs_sched *s, run_ctx *c) {
    const rs_run *run = tc->run;
    RS_TRY(rs_agree(build_graph(s, c->l, run->opts.until), tc->comm, "building the task graph"));
    log_plan(tc, s, c);
    double t0 = rs_now();
    rs_err err = rs_sched_run(s, sched_run, sched_done, c, tc->comm);
    log_times(s, rs_now() - t0);
    if (err) {
        char msg[4096];
        snprintf(msg, sizeof msg, "%s", rs_err_msg());
        rs_err r = rs_results_write(tc, s);
        (void)r;
        rs_err_clear();
        return RS_ERR(err, "%s", msg);
    }
    RS_TRY(rs_results_write(tc, s));
    if (run->opts.until < RS_STAGE_EVAL)
        RS_INFO("stopped after stage %s (--until)", rs_stage_name(run->opts.until));
    else
        RS_INFO("stages run: harvest, affine, train, evaluate (reconstruction, redundancy, CE splices%s%s)",
                run->cfg.eval.probing.enabled ? ", sparse probing" : "", run->cfg.eval.tpp.enabled ? ", TPP" : "");
    return RS_OK;
}

static rs_err run_locked(const rs_run *run, const rs_task_ctx *tc0, MPI_Comm comm);

/* The memory plan against the node's memory, before any work (rank 0 reads the tensor table). */
static rs_err memory_check(const rs_run *run, const rs_task_ctx *tc) {
    rs_err err = RS_OK;
    if (tc->rank == 0) {
        rs_model m;
        if (rs_model_load(&m, run->cfg.model.path, RS_WEIGHTS_MAPPED)) {
            /* the stage that loads the model reports it, as it always has */
            RS_DEBUG("memory plan: not sized (%s)", rs_err_msg());
            rs_err_clear();
        } else {
            rs_mem_plan p;
            rs_mem_plan_build(&p, &run->cfg, &run->mc, &run->grid, &m, rs_mpi_node_ranks());
            rs_model_free(&m);
            const char *src = "unknown";
            double node = rs_mem_node_bytes(&src);
            const rs_mem_stage_plan *w = &p.st[p.peak_stage];
            RS_INFO("memory plan: %d rank(s) per node; the largest stage per rank is %s, %.2f GB; node peak %.2f GB "
                    "private + %.2f GB mapped of %.2f GB (%s)", p.ranks_per_node, w->name, 1e-9 * w->rank,
                    1e-9 * p.node_private, 1e-9 * (p.node_peak - p.node_private), 1e-9 * node, src);
            err = rs_mem_plan_check(&p, node, src, run->cfg.path);
        }
    }
    return rs_agree(err, tc->comm, "the memory plan");
}

rs_err rs_run_exec(const rs_run *run, MPI_Comm comm) {
    rs_task_ctx tc;
    rs_task_ctx_init(&tc, run, comm);
    RS_TRY(memory_check(run, &tc));
    RS_TRY(make_dirs(&tc));
    int lock_fd = -1;
    RS_TRY(rs_agree(lock_acquire(&lock_fd, &tc), comm, "locking the run directory"));
    rs_err err = run_locked(run, &tc, comm);
    lock_release(lock_fd);
    return err;
}

static rs_err run_locked(const rs_run *run, const rs_task_ctx *tc0, MPI_Comm comm) {
    rs_task_ctx tc = *tc0;
    RS_TRY(record_config(&tc));
    RS_INFO("run %s: %d sets, %d affine fits, %d SAEs, %d evaluations; run directory %s", run->cfg.name,
            run->grid.n_sets, run->grid.n_affine + run->grid.n_regression_extra, run->grid.n_saes, run->grid.n_evals,
            run->cfg.run_dir);
    rs_task_list l;
    rs_err err = rs_agree(rs_tasks_build(&l, run), comm, "building the task list");
    if (err) {
        rs_tasks_free(&l); /* another rank failed: this one's list is whole */
        return err;
    }
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.run = run;
    c.l = &l;
    c.tk.fd = -1;
    c.done = calloc(l.n > 0 ? (size_t)l.n : 1, sizeof *c.done);
    if (!c.done) {
        rs_tasks_free(&l);
        return RS_ERR(RS_ERR_NOMEM, "out of memory for the task table");
    }
    rs_sched_opts o;
    rs_sched_opts_default(&o);
    o.group_size = (int)run->cfg.parallel.group_size;
    o.max_retries = (int)run->cfg.parallel.max_task_retries;
    o.stop = run->opts.stop;
    o.other_rank_msg = RS_RUN_OTHER_RANK;
    char status_path[4096];
    err = rs_tasks_run_file(status_path, sizeof status_path, run, RS_RUN_STATUS_FILE);
    o.status_path = status_path;
    rs_sched s;
    rs_sched_init(&s, &o);
    if (!err) err = schedule(&tc, &s, &c);
    if (c.eval_loaded) {
        rs_tokens_close(&c.tk);
        rs_model_free(&c.model);
    }
    rs_sched_free(&s);
    rs_tasks_free(&l);
    free(c.done);
    return err;
}
