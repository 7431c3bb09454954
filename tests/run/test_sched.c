/* The scheduler on a synthetic task graph.
 *
 *   test_sched graph RUNDIR GS   fresh run: every task once, dependencies respected (timestamps),
 *                                world tasks on every rank, groups overlap, rank 0 works
 *   test_sched random RUNDIR GS --seed N   a random graph with world tasks and tasks that always
 *                                fail: exactly the expected tasks done (once), failed, skipped
 *   test_sched fail RUNDIR GS    a task failing once is retried and succeeds; a task failing always
 *                                is recorded failed after max_retries, its dependents skipped
 *   test_sched run RUNDIR GS [--fail] [--scale X]   run or resume (for the kill/SIGTERM scripts);
 *                                exit 0 complete, 1 failed tasks, 3 interrupted
 *   test_sched check RUNDIR      (one rank) every task's result file present, no finished task run
 *                                again, dependencies respected
 *
 * A task sleeps (in slices, checking the stop flag collectively), gathers the world ranks of its
 * communicator and has the communicator's rank 0 write RUNDIR/res/NAME.txt atomically (group size,
 * ranks, start and end times). Before working, it appends "start NAME" to RUNDIR/starts.log and,
 * if its result file already exists (a finished task run again), a line to RUNDIR/violations.log. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "resae/err.h"
#include "resae/h5util.h"
#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/sched.h"

#include "testlib.h"

#define OTHER "another rank failed"
#define MAXT 64

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

typedef struct tinfo {
    double sleep; /* seconds of work */
    int world;
    int fail_always; /* fails on the last rank of its communicator, every attempt */
} tinfo;

typedef struct ctx {
    const char *dir;
    double scale;
    tinfo info[MAXT];
} ctx;

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void nap(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void result_path(char *out, size_t n, const ctx *c, const char *name) { snprintf(out, n, "%s/res/%s.txt", c->dir, name); }

static void append_line(const char *path, const char *line) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;
    ssize_t w = write(fd, line, strlen(line));
    (void)w;
    fsync(fd);
    close(fd);
}

static int task_done(void *vc, const rs_sched_task *t) {
    /* a broken done() for the faults script's self-test: the checks must catch the re-runs */
    const char *forget = getenv("RESAE_SCHED_TEST_FORGET");
    if (forget && forget[0] == '1') return 0;
    char p[4096];
    result_path(p, sizeof p, vc, t->name);
    return rs_file_exists(p);
}

static rs_err write_result(const ctx *c, const char *name, int size, const int *ranks, double t0, double t1) {
    char path[4096], tmp[4200];
    result_path(path, sizeof path, c, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) RS_FAIL(RS_ERR_IO, "%s: cannot create (%s)", tmp, strerror(errno));
    fprintf(f, "group_size %d\nranks", size);
    for (int i = 0; i < size; i++) fprintf(f, " %d", ranks[i]);
    fprintf(f, "\nt_start %.6f\nt_end %.6f\n", t0, t1);
    fflush(f);
    fsync(fileno(f));
    if (fclose(f)) RS_FAIL(RS_ERR_IO, "%s: write failed", tmp);
    return rs_file_commit(tmp, path);
}

static rs_err run_task(void *vc, const rs_sched_task *t, MPI_Comm comm) {
    ctx *c = vc;
    int rank, size, wrank;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
    double t0 = wall();
    char path[4096], line[256];
    rs_err err = RS_OK;
    if (rank == 0) {
        result_path(path, sizeof path, c, t->name);
        if (rs_file_exists(path)) {
            snprintf(line, sizeof line, "%s ran again after it had finished\n", t->name);
            snprintf(path, sizeof path, "%s/violations.log", c->dir);
            append_line(path, line);
        }
        snprintf(line, sizeof line, "start %s %d\n", t->name, (int)getpid());
        snprintf(path, sizeof path, "%s/starts.log", c->dir);
        append_line(path, line);
        if (!strcmp(t->name, "flaky")) {
            snprintf(path, sizeof path, "%s/flaky.marker", c->dir);
            if (!rs_file_exists(path)) {
                append_line(path, "failed once\n");
                err = rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "injected first-attempt failure");
            }
        }
    }
    const tinfo *ti = &c->info[t->kind];
    if ((!strcmp(t->name, "broken") || ti->fail_always) && rank == size - 1)
        err = rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "injected failure in %s (world rank %d)", t->name, wrank);
    /* work in slices; the stop flag is agreed so every rank leaves at the same slice */
    int slices = (int)ceil(ti->sleep / 0.01);
    for (int i = 0; i < slices; i++) {
        nap(0.01);
        int mine = g_stop, any = 0;
        MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, comm);
        if (any) return rs_err_set(RS_ERR_INTERRUPTED, __FILE__, __LINE__, __func__, "task %s: stopped", t->name);
    }
    int ranks[1024];
    MPI_Gather(&wrank, 1, MPI_INT, ranks, 1, MPI_INT, 0, comm);
    rs_err all = rs_mpi_agree(err, comm);
    if (all) {
        if (!err) return rs_err_set(all, __FILE__, __LINE__, __func__, OTHER);
        return err;
    }
    if (rank == 0) err = write_result(c, t->name, size, ranks, t0, wall());
    all = rs_mpi_agree(err, comm);
    if (all && !err) return rs_err_set(all, __FILE__, __LINE__, __func__, OTHER);
    return all;
}

/* =====================================================================================================
 * The graph
 * ===================================================================================================== */

static int add(rs_sched *s, ctx *c, const char *name, double cost, int min_ranks, double sleep) {
    int i = -1;
    /* kind = index, so the run function finds its sleep time */
    if (rs_sched_add(&i, s, name, s->n_tasks, 0x1000u + (unsigned)s->n_tasks, cost, min_ranks, 1, NULL)) {
        rs_err_print();
        exit(1);
    }
    c->info[i].sleep = sleep * c->scale;
    c->info[i].world = min_ranks == RS_SCHED_WORLD;
    return i;
}

static void dep(rs_sched *s, int t, int d) {
    if (rs_sched_add_dep(s, t, d)) {
        rs_err_print();
        exit(1);
    }
}

static void build_graph(rs_sched *s, ctx *c, int with_fail) {
    int h = add(s, c, "harvest", 3, RS_SCHED_WORLD, 0.15);
    int aff[3], tr[3][2], ev[3];
    char name[64];
    for (int l = 0; l < 3; l++) {
        snprintf(name, sizeof name, "affine_L%d", l);
        aff[l] = add(s, c, name, 2, 1, 0.1);
        dep(s, aff[l], h);
    }
    static const int ks[2] = {8, 32};
    for (int l = 0; l < 3; l++)
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "train_L%d_k%d", l, ks[k]);
            double cost = 1 + l + 2 * k;
            tr[l][k] = add(s, c, name, cost, 1, 0.06 * cost);
            dep(s, tr[l][k], aff[l]);
        }
    for (int l = 0; l < 3; l++) {
        snprintf(name, sizeof name, "eval_L%d", l);
        ev[l] = add(s, c, name, 1, 1, 0.05);
        dep(s, ev[l], tr[l][0]);
        dep(s, ev[l], tr[l][1]);
    }
    int rep = add(s, c, "report", 0.5, RS_SCHED_WORLD, 0.05);
    for (int l = 0; l < 3; l++) dep(s, rep, ev[l]);
    if (with_fail) {
        int f = add(s, c, "flaky", 1.5, 1, 0.05);
        dep(s, f, h);
        int b = add(s, c, "broken", 1.5, 1, 0.05);
        dep(s, b, h);
        int ab = add(s, c, "after_broken", 1, 1, 0.05);
        dep(s, ab, b);
        int aab = add(s, c, "after_after_broken", 1, 1, 0.05);
        dep(s, aab, ab);
        dep(s, aab, f);
    }
}

/* A random graph from a seed: 48 tasks, up to 3 dependencies on earlier tasks each, three world
 * tasks, up to three tasks that always fail. Every rank builds the same one. */
static uint64_t g_rng;
static uint32_t rnd(void) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(g_rng >> 33);
}

/* Priorities: a cheap task that heads an expensive chain starts before a mid-sized task alone; a
 * cheap chain does not. One group runs them one at a time: order A B C D E (largest own cost first
 * would give C A B D E). */
static void build_prio(rs_sched *s, ctx *c) {
    int a = add(s, c, "A_head_of_big", 1, 1, 0.02);
    int b = add(s, c, "B_big", 100, 1, 0.02);
    add(s, c, "C_mid_alone", 50, 1, 0.02);
    int d = add(s, c, "D_head_of_small", 1, 1, 0.02);
    int e = add(s, c, "E_small", 10, 1, 0.02);
    dep(s, b, a);
    dep(s, e, d);
}

static void build_random(rs_sched *s, ctx *c, uint64_t seed) {
    g_rng = seed;
    char name[32];
    for (int i = 0; i < 48; i++) {
        snprintf(name, sizeof name, "r%02d", i);
        int world = i % 16 == 5;
        int t = add(s, c, name, 1 + rnd() % 10, world ? RS_SCHED_WORLD : 1, 0.01 + 0.01 * (rnd() % 5));
        int nd = i ? (int)(rnd() % 4) : 0;
        for (int k = 0; k < nd; k++) dep(s, t, (int)(rnd() % (uint32_t)i));
    }
    for (int k = 0; k < 3; k++) c->info[2 + rnd() % 46].fail_always = 1;
}

/* =====================================================================================================
 * Checks (rank 0)
 * ===================================================================================================== */

typedef struct res {
    int ok, group_size, n_ranks, ranks[64];
    double t0, t1;
} res;

static void read_res(res *r, const ctx *c, const char *name) {
    memset(r, 0, sizeof *r);
    char path[4096];
    result_path(path, sizeof path, c, name);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char word[32];
    if (fscanf(f, "%31s %d", word, &r->group_size) == 2 && fscanf(f, "%31s", word) == 1) {
        while (r->n_ranks < r->group_size && r->n_ranks < 64 && fscanf(f, "%d", &r->ranks[r->n_ranks]) == 1) r->n_ranks++;
        if (fscanf(f, "%31s %lf %31s %lf", word, &r->t0, word, &r->t1) == 4) r->ok = 1;
    }
    fclose(f);
}

static int count_starts(const ctx *c, const char *name) {
    char path[4096], line[512], nm[256];
    snprintf(path, sizeof path, "%s/starts.log", c->dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0, pid;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "start %255s %d", nm, &pid) == 2 && !strcmp(nm, name)) n++;
    fclose(f);
    return n;
}

/* Every task finished has a result file; no finished task ran again; dependencies respected.
 * Returns the number of tasks with a result. */
static int check_files(const rs_sched *s, const ctx *c, int world_size, res *rs) {
    char path[4096];
    snprintf(path, sizeof path, "%s/violations.log", c->dir);
    CHECK(!rs_file_exists(path), "%s exists: a finished task ran again", path);
    int n_ok = 0;
    for (int i = 0; i < s->n_tasks; i++) {
        read_res(&rs[i], c, s->tasks[i].name);
        n_ok += rs[i].ok;
        if (rs[i].ok && c->info[i].world && world_size > 0)
            CHECK(rs[i].group_size == world_size, "world task %s ran on %d ranks, not %d", s->tasks[i].name,
                  rs[i].group_size, world_size);
    }
    for (int i = 0; i < s->n_tasks; i++) {
        if (!rs[i].ok) continue;
        for (int j = 0; j < s->tasks[i].n_deps; j++) {
            int d = s->tasks[i].deps[j];
            CHECK(rs[d].ok, "%s finished but its dependency %s did not", s->tasks[i].name, s->tasks[d].name);
            CHECK(!rs[d].ok || rs[d].t1 <= rs[i].t0, "%s started at %.3f before its dependency %s ended at %.3f",
                  s->tasks[i].name, rs[i].t0, s->tasks[d].name, rs[d].t1);
        }
    }
    return n_ok;
}

static int has_rank(const res *r, int rank) {
    for (int i = 0; i < r->n_ranks; i++)
        if (r->ranks[i] == rank) return 1;
    return 0;
}

static int disjoint(const res *a, const res *b) {
    for (int i = 0; i < a->n_ranks; i++)
        if (has_rank(b, a->ranks[i])) return 0;
    return 1;
}

static void check_graph(const rs_sched *s, const ctx *c, rs_err err, int size) {
    res rs[MAXT];
    CHECK(err == RS_OK, "rs_sched_run returned %d: %s", err, rs_err_msg());
    int n_ok = check_files(s, c, size, rs);
    CHECK(n_ok == s->n_tasks, "%d of %d tasks have a result", n_ok, s->n_tasks);
    int overlap = 0, r0_works = 0, other_works = 0;
    for (int i = 0; i < s->n_tasks; i++) {
        int n = count_starts(c, s->tasks[i].name);
        CHECK(n == 1, "task %s started %d times", s->tasks[i].name, n);
        const rs_sched_record *r = &s->table[i];
        CHECK(r->state == RS_SCHED_DONE && r->attempts == 1, "task %s: state %s after %d attempts", s->tasks[i].name,
              rs_sched_state_name(r->state), r->attempts);
        CHECK(r->group_size == rs[i].group_size, "task %s: table says %d ranks, the task saw %d", s->tasks[i].name,
              r->group_size, rs[i].group_size);
        if (s->n_groups == 1) CHECK(rs[i].group_size == size, "task %s ran on %d of %d ranks with one group",
                                    s->tasks[i].name, rs[i].group_size, size);
        if (c->info[i].world) continue;
        if (s->n_groups > 1) CHECK(rs[i].group_size == s->group_size, "task %s ran on %d ranks, group size is %d",
                                   s->tasks[i].name, rs[i].group_size, s->group_size);
        r0_works |= has_rank(&rs[i], 0);
        other_works |= !has_rank(&rs[i], 0);
        for (int j = 0; j < i; j++)
            if (!c->info[j].world && rs[i].t0 < rs[j].t1 && rs[j].t0 < rs[i].t1 && disjoint(&rs[i], &rs[j])) overlap++;
    }
    if (s->n_groups > 1) {
        CHECK(overlap > 0, "no two tasks ran at the same time on different groups (%d groups)", s->n_groups);
        CHECK(r0_works && other_works, "rank 0 ran tasks: %d; other groups ran tasks: %d", r0_works, other_works);
    }
    printf("graph: %d tasks on %d group(s) of %d, %d overlapping pairs of tasks on different groups, rank 0 worked: %s\n",
           s->n_tasks, s->n_groups, s->group_size, overlap, r0_works ? "yes" : "no");
}

/* Write the task table to RUNDIR/table.h5 and read back the state and attempts of every row. */
static void check_table_h5(const rs_sched *s, const ctx *c) {
    char path[4096];
    snprintf(path, sizeof path, "%s/table.h5", c->dir);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(f >= 0, "%s: cannot create", path);
    if (f < 0) return;
    rs_err e = rs_sched_write_table(f, "tasks", s);
    CHECK(!e, "rs_sched_write_table: %s", rs_err_msg());
    H5Fclose(f);
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "tasks", H5P_DEFAULT);
    typedef struct row {
        char state[16];
        int attempts;
    } row;
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, 16);
    hid_t ty = H5Tcreate(H5T_COMPOUND, sizeof(row));
    H5Tinsert(ty, "state", HOFFSET(row, state), st);
    H5Tinsert(ty, "attempts", HOFFSET(row, attempts), H5T_NATIVE_INT);
    row rows[MAXT];
    CHECK(ds >= 0 && H5Dread(ds, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows) >= 0, "cannot read %s/tasks", path);
    for (int i = 0; i < s->n_tasks && !rs_check_fails; i++)
        CHECK(!strcmp(rows[i].state, rs_sched_state_name(s->table[i].state)) && rows[i].attempts == s->table[i].attempts,
              "table.h5 row %d: %s/%d, expected %s/%d", i, rows[i].state, rows[i].attempts,
              rs_sched_state_name(s->table[i].state), s->table[i].attempts);
    H5Tclose(ty);
    H5Tclose(st);
    if (ds >= 0) H5Dclose(ds);
    H5Fclose(f);
}

static void check_prio(const ctx *c, rs_err err) {
    CHECK(!err, "prio run failed: %s", rs_err_msg());
    static const char *want[5] = {"A_head_of_big", "B_big", "C_mid_alone", "D_head_of_small", "E_small"};
    char path[4096], line[512], nm[256];
    snprintf(path, sizeof path, "%s/starts.log", c->dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "%s missing", path);
    if (!f) return;
    int n = 0, pid;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "start %255s %d", nm, &pid) == 2) {
            CHECK(n < 5 && !strcmp(nm, want[n]), "start %d is %s, want %s", n, nm, n < 5 ? want[n] : "nothing");
            n++;
        }
    fclose(f);
    CHECK(n == 5, "%d starts, want 5", n);
}

static void check_random(const rs_sched *s, const ctx *c, rs_err err, int size) {
    res rs[MAXT];
    check_files(s, c, size, rs);
    int n = s->n_tasks, bad_expected = 0;
    /* expected: failed = fail_always; skipped = a failed task among its ancestors */
    int expect[MAXT];
    for (int i = 0; i < n; i++) {
        expect[i] = RS_SCHED_DONE;
        for (int j = 0; j < s->tasks[i].n_deps; j++) {
            int st = expect[s->tasks[i].deps[j]];
            if (st == RS_SCHED_FAILED || st == RS_SCHED_SKIPPED) expect[i] = RS_SCHED_SKIPPED;
        }
        if (expect[i] == RS_SCHED_DONE && c->info[i].fail_always) expect[i] = RS_SCHED_FAILED;
        bad_expected += expect[i] != RS_SCHED_DONE;
    }
    CHECK(bad_expected ? err != RS_OK && err != RS_ERR_INTERRUPTED : err == RS_OK, "rs_sched_run returned %d", err);
    int counts[6] = {0};
    for (int i = 0; i < n; i++) {
        const rs_sched_record *r = &s->table[i];
        const char *nm = s->tasks[i].name;
        int starts = count_starts(c, nm);
        counts[r->state]++;
        CHECK(r->state == expect[i], "%s: %s, expected %s", nm, rs_sched_state_name(r->state), rs_sched_state_name(expect[i]));
        if (expect[i] == RS_SCHED_DONE) CHECK(starts == 1 && rs[i].ok, "%s: %d starts", nm, starts);
        if (expect[i] == RS_SCHED_FAILED)
            CHECK(starts == s->opts.max_retries + 1 && !rs[i].ok, "%s: failed with %d starts", nm, starts);
        if (expect[i] == RS_SCHED_SKIPPED) CHECK(starts == 0 && !rs[i].ok, "%s: skipped but started %d times", nm, starts);
    }
    printf("random: %d done, %d failed, %d skipped on %d group(s) of %d\n", counts[RS_SCHED_DONE],
           counts[RS_SCHED_FAILED], counts[RS_SCHED_SKIPPED], s->n_groups, s->group_size);
}

static int find(const rs_sched *s, const char *name) {
    for (int i = 0; i < s->n_tasks; i++)
        if (!strcmp(s->tasks[i].name, name)) return i;
    return -1;
}

static void check_fail(const rs_sched *s, const ctx *c, rs_err err, const char *msg, int size) {
    res rs[MAXT];
    CHECK(err != RS_OK && err != RS_ERR_INTERRUPTED, "rs_sched_run returned %d, expected a failure", err);
    CHECK(strstr(msg, "broken") && strstr(msg, "after_broken") && strstr(msg, "after_after_broken"),
          "the run's error does not list the failed and skipped tasks: %s", msg);
    check_files(s, c, size, rs);
    for (int i = 0; i < s->n_tasks; i++) {
        const char *nm = s->tasks[i].name;
        const rs_sched_record *r = &s->table[i];
        if (!strcmp(nm, "flaky")) {
            CHECK(r->state == RS_SCHED_DONE && r->attempts == 2, "flaky: %s after %d attempts (expected done after 2)",
                  rs_sched_state_name(r->state), r->attempts);
            CHECK(count_starts(c, nm) == 2, "flaky started %d times", count_starts(c, nm));
        } else if (!strcmp(nm, "broken")) {
            CHECK(r->state == RS_SCHED_FAILED && r->attempts == s->opts.max_retries + 1,
                  "broken: %s after %d attempts (expected failed after %d)", rs_sched_state_name(r->state), r->attempts,
                  s->opts.max_retries + 1);
            CHECK(strstr(r->error, "injected failure in broken") != NULL, "broken: error text '%s'", r->error);
            CHECK(!rs[i].ok, "broken has a result file");
        } else if (strstr(nm, "after_")) {
            CHECK(r->state == RS_SCHED_SKIPPED && r->attempts == 0, "%s: %s after %d attempts (expected skipped)", nm,
                  rs_sched_state_name(r->state), r->attempts);
            CHECK(strstr(r->error, "broken") != NULL, "%s: skip reason '%s'", nm, r->error);
            CHECK(count_starts(c, nm) == 0, "skipped task %s started", nm);
        } else {
            CHECK(r->state == RS_SCHED_DONE && r->attempts == 1 && rs[i].ok, "%s: %s after %d attempts", nm,
                  rs_sched_state_name(r->state), r->attempts);
        }
    }
    int b = find(s, "broken");
    printf("fail: broken recorded as '%s' (%s); run error: %s\n", b >= 0 ? rs_sched_state_name(s->table[b].state) : "?",
           b >= 0 ? s->table[b].error : "?", msg);
}

/* =====================================================================================================
 * API
 * ===================================================================================================== */

/* The API's refusals and the automatic group size; every rank must get the same answers. */
static rs_err noop_run(void *vc, const rs_sched_task *t, MPI_Comm comm) { return RS_OK; }

static void check_api(int rank, int size) {
    rs_sched s;
    rs_sched_init(&s, NULL);
    int a, b, c, d;
    CHECK(rs_sched_add(&a, &s, "bad", 0, 1, 1.0, 0, 0, NULL) == RS_ERR_INVAL, "min_ranks 0 accepted");
    CHECK(rs_sched_add(&a, &s, "bad", 0, 1, -1.0, 1, 0, NULL) == RS_ERR_INVAL, "negative cost accepted");
    CHECK(!rs_sched_add(&a, &s, "a", 0, 1, 1.0, 1, 0, NULL) && a == 0, "add a");
    CHECK(!rs_sched_add(&b, &s, "b", 0, 2, 2.0, 1, 0, NULL) && b == 1, "add b");
    CHECK(!rs_sched_add(&c, &s, "c", 0, 3, 3.0, 1, 0, NULL) && c == 2, "add c");
    CHECK(rs_sched_add_dep(&s, a, a) == RS_ERR_INVAL, "self dependency accepted");
    CHECK(rs_sched_add_dep(&s, a, 7) == RS_ERR_INVAL, "dependency on a missing task accepted");
    CHECK(!rs_sched_add_dep(&s, b, a) && !rs_sched_add_dep(&s, b, a) && s.tasks[b].n_deps == 1, "duplicate dependency");
    CHECK(!rs_sched_add_dep(&s, c, b) && !rs_sched_add_dep(&s, a, c), "cycle edges");
    rs_err e = rs_sched_run(&s, noop_run, NULL, NULL, MPI_COMM_WORLD);
    CHECK(e == RS_ERR_INVAL && strstr(rs_err_msg(), "cycle"), "a cycle gave %d: %s", e, rs_err_msg());
    rs_sched_free(&s);

    /* ranks that built different graphs are refused on every rank */
    rs_sched_init(&s, NULL);
    rs_sched_add(&a, &s, rank == size - 1 ? "other" : "same", 0, 1, 1.0, 1, 0, NULL);
    e = rs_sched_run(&s, noop_run, NULL, NULL, MPI_COMM_WORLD);
    if (size > 1) CHECK(e == RS_ERR_INTERNAL && strstr(rs_err_msg(), "different task graphs"), "mismatch gave %d: %s", e,
                        rs_err_msg());
    else CHECK(e == RS_OK, "one-rank run gave %d", e);
    rs_sched_free(&s);

    /* automatic group size */
    rs_sched_init(&s, NULL);
    CHECK(rs_sched_auto_group_size(&s, 8) == 1, "empty graph");
    for (int i = 0; i < 8; i++) rs_sched_add(&d, &s, "t", 0, 1, 1.0, 1, 1, NULL);
    CHECK(rs_sched_auto_group_size(&s, 8) == 1, "8 one-rank tasks on 8 ranks: %d", rs_sched_auto_group_size(&s, 8));
    CHECK(rs_sched_auto_group_size(&s, 16) == 2, "8 tasks on 16 ranks: %d", rs_sched_auto_group_size(&s, 16));
    rs_sched_add(&d, &s, "world", 0, 1, 100.0, RS_SCHED_WORLD, 0, NULL);
    CHECK(rs_sched_auto_group_size(&s, 8) == 1, "a world task changed the group size");
    rs_sched_add(&d, &s, "big", 0, 1, 100.0, 1, 4, NULL); /* most of the cost prefers 4 ranks */
    CHECK(rs_sched_auto_group_size(&s, 8) == 4, "cost-weighted preference: %d", rs_sched_auto_group_size(&s, 8));
    rs_sched_add(&d, &s, "wide", 0, 1, 0.1, 3, 0, NULL); /* needs 3, prefers 4: 4 divides 12; at 6, the next divisor is 6 */
    CHECK(rs_sched_auto_group_size(&s, 12) == 4 && rs_sched_auto_group_size(&s, 6) == 6,
          "min_ranks 3: %d at 12, %d at 6", rs_sched_auto_group_size(&s, 12), rs_sched_auto_group_size(&s, 6));
    CHECK(rs_sched_auto_group_size(&s, 2) == 2, "min_ranks above the world: %d", rs_sched_auto_group_size(&s, 2));
    rs_sched_free(&s);

    /* an empty graph runs and succeeds */
    rs_sched_init(&s, NULL);
    e = rs_sched_run(&s, noop_run, NULL, NULL, MPI_COMM_WORLD);
    CHECK(e == RS_OK, "empty graph gave %d: %s", e, rs_err_msg());
    rs_sched_free(&s);
    if (rank == 0) printf("api: refusals and automatic group size checked\n");
}

/* =====================================================================================================
 * Main
 * ===================================================================================================== */

static void mkdirs_or_die(const char *p) {
    if (rs_mkdirs(p)) {
        rs_err_print();
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_sched graph|fail|random|prio|run|check|api RUNDIR [GS] [--fail] [--scale X] [--seed N]\n");
        return 2;
    }
    const char *mode = argv[1];
    ctx c;
    memset(&c, 0, sizeof c);
    c.dir = argv[2];
    c.scale = getenv("RESAE_SCHED_TEST_SCALE") ? atof(getenv("RESAE_SCHED_TEST_SCALE")) : 1.0;
    if (!(c.scale > 0)) c.scale = 1.0;
    int gs = argc > 3 && argv[3][0] != '-' ? atoi(argv[3]) : 0, with_fail = !strcmp(mode, "fail");
    uint64_t seed = 1;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--fail")) with_fail = 1;
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = (uint64_t)atoll(argv[++i]);
        if (!strcmp(argv[i], "--scale") && i + 1 < argc) c.scale = atof(argv[++i]);
    }
    if (rs_mpi_begin(&argc, &argv)) {
        rs_err_print();
        return 1;
    }
    int rank = rs_mpi_rank(), size = rs_mpi_size();
    rs_check_rank = rank;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);

    rs_sched_opts o;
    rs_sched_opts_default(&o);
    o.group_size = gs;
    o.max_retries = 2;
    o.stop = &g_stop;
    o.other_rank_msg = OTHER;
    o.status_interval = 0.3; /* exercise the coordinator's status lines */
    rs_sched s;
    rs_sched_init(&s, &o);
    if (!strcmp(mode, "random")) build_random(&s, &c, seed);
    else if (!strcmp(mode, "prio")) build_prio(&s, &c);
    else build_graph(&s, &c, with_fail);

    char path[4096];
    int code = 0;
    if (!strcmp(mode, "api")) {
        check_api(rank, size);
        int any = 0;
        MPI_Allreduce(&rs_check_fails, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (rank == 0) printf("api at %d ranks: %s\n", size, any ? "FAILED" : "ok");
        rs_sched_free(&s);
        rs_mpi_end();
        return any ? 1 : 0;
    }
    if (!strcmp(mode, "check")) {
        if (rank == 0) {
            res rs[MAXT];
            int n = check_files(&s, &c, 0, rs);
            CHECK(n == s.n_tasks, "%d of %d tasks have a result", n, s.n_tasks);
            int starts = 0;
            for (int i = 0; i < s.n_tasks; i++) starts += count_starts(&c, s.tasks[i].name);
            printf("check: %d/%d tasks done, %d task starts in all, no finished task ran again: %s\n", n, s.n_tasks,
                   starts, rs_check_fails ? "FAILED" : "ok");
        }
        MPI_Bcast(&rs_check_fails, 1, MPI_INT, 0, MPI_COMM_WORLD);
        rs_sched_free(&s);
        rs_mpi_end();
        return rs_check_fails ? 1 : 0;
    }
    if (rank == 0 && strcmp(mode, "run")) {
        /* graph and fail start from nothing */
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", c.dir);
        if (system(cmd)) fprintf(stderr, "warning: could not clear %s\n", c.dir);
    }
    if (rank == 0) {
        snprintf(path, sizeof path, "%s/res", c.dir);
        mkdirs_or_die(path);
        snprintf(path, sizeof path, "%s/pids", c.dir);
        mkdirs_or_die(path);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    snprintf(path, sizeof path, "%s/pids/rank%d.pid", c.dir, rank);
    char line[32];
    snprintf(line, sizeof line, "%d\n", (int)getpid());
    append_line(path, line);

    rs_err err = rs_sched_run(&s, run_task, task_done, &c, MPI_COMM_WORLD);
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", err ? rs_err_msg() : "");
    if (!strcmp(mode, "run")) {
        if (err == RS_ERR_INTERRUPTED) code = 3;
        else if (err) code = 1;
        if (err && rank == 0) rs_err_print();
    } else {
        if (rank == 0) {
            if (!strcmp(mode, "graph")) check_graph(&s, &c, err, size);
            else if (!strcmp(mode, "random")) check_random(&s, &c, err, size);
            else if (!strcmp(mode, "prio")) check_prio(&c, err);
            else check_fail(&s, &c, err, msg, size);
            check_table_h5(&s, &c);
        }
        MPI_Bcast(&rs_check_fails, 1, MPI_INT, 0, MPI_COMM_WORLD);
        code = rs_check_fails ? 1 : 0;
        if (rank == 0) printf("%s at %d ranks: %s\n", mode, size, rs_check_fails ? "FAILED" : "ok");
    }
    rs_sched_free(&s);
    rs_mpi_end();
    return code;
}
