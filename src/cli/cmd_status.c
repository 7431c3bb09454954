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
#include "resae/config.h"
#include "resae/grid.h"
#include "resae/h5util.h"
#include "resae/harvest.h"
#include "resae/log.h"
#include "resae/pipeline.h"
#include "resae/pipeline_eval.h"
#include "resae/sched.h"
#include "resae/splits.h"
#include "resae/tokens.h"

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
    snprintf(path, sizeof path, "%s/%s", run_dir, RS_HARVEST_JOURNAL);
    *done = 0;
    *complete = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "done ", 5)) (*done)++;
        if (!strcmp(line, "complete\n")) *complete = 1;
    }
    fclose(f);
}

static double task_seconds(const char *path) {
    double s = 0;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return 0;
    if (rs_h5_attr_get_f64(&s, f, "seconds", path)) s = 0;
    H5Fclose(f);
    rs_err_clear();
    return s;
}

/* What the scheduler's snapshot says of one stage (task kind). */
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

int rs_cmd_status(int argc, char **argv) {
    if (rs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return RS_EXIT_OK;
    }
    if (argc != 2) {
        usage(stderr);
        return RS_EXIT_USAGE;
    }
    const char *run_dir = argv[1];
    char cpath[4096];
    snprintf(cpath, sizeof cpath, "%s/%s", run_dir, RS_RUN_CONFIG_FILE);
    if (!rs_file_exists(cpath)) {
        fprintf(stderr, "error: %s not found: %s is not a run directory started by `resae run`\n", cpath, run_dir);
        return RS_EXIT_ERROR;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    rs_pipeline p;
    memset(&p, 0, sizeof p);
    p.size = 1;
    if (rs_config_load(&p.cfg, cpath)) return rs_cli_fail();
    int code = RS_EXIT_ERROR;
    rs_tokens tk;
    memset(&tk, 0, sizeof tk);
    rs_splits sp;
    memset(&sp, 0, sizeof sp);
    if (rs_config_load_model(&p.mc, &p.cfg) || rs_grid_build(&p.grid, &p.cfg, &p.mc)) {
        rs_err_print();
        goto done;
    }
    /* the run directory given may have moved: read task files there */
    free(p.cfg.run_dir);
    p.cfg.run_dir = strdup(run_dir);

    printf("run %s (%s)\n", p.cfg.name, run_dir);
    int complete_all = 1;

    /* harvest */
    int64_t h_done = 0, h_total = -1;
    int h_complete = 0;
    journal_count(&h_done, &h_complete, run_dir);
    rs_tokens_opts o = {0};
    o.format = rs_tokens_format_parse(rs_format_names[p.cfg.data.format]);
    o.seq_len = (int)p.cfg.data.seq_len;
    if (!rs_tokens_open(&tk, p.cfg.data.tokens, &o)) {
        rs_split_config sc = {0};
        sc.seed = (uint64_t)p.cfg.data.split_seed;
        sc.budget[RS_SPLIT_CALIB] = p.cfg.data.calibration;
        sc.budget[RS_SPLIT_TRAIN] = p.cfg.data.train;
        sc.budget[RS_SPLIT_EVAL] = p.cfg.data.eval;
        sc.skip_pos0 = p.cfg.data.exclude_first_position;
        if (!rs_splits_build(&sp, &sc, tk.n_seq, tk.seq_len, NULL)) {
            h_total = 0;
            for (int s = 0; s < RS_SPLIT_COUNT; s++)
                h_total += (sp.split[s].n_seq + p.cfg.eval.batch_sequences - 1) / p.cfg.eval.batch_sequences;
        }
    }
    rs_err_clear();
    if (h_complete && h_total < 0) h_total = h_done;
    /* the scheduler's snapshot: running, failed and per-stage times of the last (or current) run */
    stage_snap sn[5];
    memset(sn, 0, sizeof sn);
    rs_sched_status ss;
    int have_ss = 0, live = 0, ng = 1;
    {
        char spath[4096];
        snprintf(spath, sizeof spath, "%s/%s", run_dir, RS_RUN_STATUS_FILE);
        if (rs_file_exists(spath)) {
            if (rs_sched_status_read(&ss, spath)) {
                rs_err_print();
                rs_err_clear();
            } else {
                have_ss = 1;
            }
        }
    }
    if (have_ss) {
        live = rs_sched_status_live(&ss);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double now = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
        char ago[32], upd[32];
        rs_fmt_duration(ago, sizeof ago, now > ss.started ? now - ss.started : 0);
        rs_fmt_duration(upd, sizeof upd, now > ss.updated ? now - ss.updated : 0);
        const char *what = ss.final ? "ended" : live == 1 ? "running" : live == 0 ? "killed or lost (no exit recorded)"
                                                                                  : "on another host";
        printf("last run: %s; pid %ld on %s, started %s ago, snapshot %s old; %d group(s) of %d rank(s)\n", what, ss.pid,
               ss.host, ago, upd, ss.n_groups, ss.group_size);
        for (int i = 0; i < 5; i++) sn[i].t_lo = 1e300;
        int n_skipped = 0;
        for (int i = 0; i < ss.n; i++) {
            const rs_sched_status_row *r = &ss.rows[i];
            if (r->kind < 0 || r->kind > 4) continue; /* kinds of src/pipeline.c; 4: ablation baselines */
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
        ng = ss.n_groups > 0 ? ss.n_groups : 1;
        if (n_skipped > 3) printf("  ... and %d more skipped tasks (`h5dump -d tasks RUN_DIR/results.h5` lists them)\n", n_skipped - 3);
        rs_sched_status_free(&ss);
    }
    printf("stages:\n");
    line("harvest", h_complete ? (h_total > 0 ? h_total : h_done) : h_done, !h_complete && h_done > 0,
         h_total > 0 ? h_total : h_done + !h_complete, "batches", 0, have_ss ? &sn[0] : NULL, 1);
    complete_all &= h_complete;

    /* affine fits */
    int n_pairs = 0, a_done = 0;
    double a_secs = 0;
    for (int pass = 0; pass < 2; pass++) {
        const rs_grid_pair *list = pass ? p.grid.regression : p.grid.affine;
        int n = pass ? p.grid.n_regression : p.grid.n_affine;
        for (int i = 0; i < n; i++) {
            int dup = 0;
            for (int j = 0; pass && j < p.grid.n_affine; j++)
                dup |= p.grid.affine[j].a == list[i].a && p.grid.affine[j].b == list[i].b;
            if (dup) continue;
            char path[4096];
            rs_pipeline_affine_path(path, sizeof path, &p, list[i].a, list[i].b);
            n_pairs++;
            if (rs_file_exists(path)) {
                a_done++;
                a_secs += task_seconds(path);
            }
        }
    }
    line("affine", a_done, 0, n_pairs, "fits", a_done ? a_secs / a_done : 0, have_ss ? &sn[1] : NULL, ng);
    complete_all &= a_done == n_pairs;

    /* SAE training */
    int s_done = 0, s_running = 0;
    double s_secs = 0;
    for (int i = 0; i < p.grid.n_saes; i++) {
        char path[4096], ck[4096];
        rs_pipeline_sae_path(path, sizeof path, &p, &p.grid.saes[i]);
        rs_pipeline_ckpt_path(ck, sizeof ck, &p, &p.grid.saes[i]);
        if (rs_file_exists(path)) {
            s_done++;
            s_secs += task_seconds(path);
        } else if (rs_file_exists(ck)) {
            s_running++;
        }
    }
    line("train", s_done, s_running, p.grid.n_saes, "SAEs", s_done ? s_secs / s_done : 0, have_ss ? &sn[2] : NULL, ng);
    complete_all &= s_done == p.grid.n_saes;
    /* ablation baselines (pipeline_eval.c): one per distinct set */
    if (rs_pipeline_ablate_needed(&p)) {
        int b_done = 0, b_total = 0;
        for (int i = 0; i < p.grid.n_sets; i++) {
            if (p.grid.sets[i].same_as >= 0) continue;
            char path[4096];
            rs_pipeline_ablate_path(path, sizeof path, &p, i);
            b_total++;
            b_done += rs_file_exists(path);
        }
        /* ablation files record no seconds: no per-task rate, so no ETA */
        line("ablate", b_done, 0, b_total, "sets", 0, have_ss ? &sn[4] : NULL, ng);
        complete_all &= b_done == b_total;
    }
    /* evaluation tasks (pipeline_eval.c): one per unique evaluation */
    int e_done = 0, e_total = 0;
    double e_secs = 0;
    for (int i = 0; i < p.grid.n_evals; i++) {
        if (!rs_pipeline_eval_first(&p, i)) continue;
        char path[4096];
        rs_pipeline_eval_path(path, sizeof path, &p, &p.grid.evals[i]);
        e_total++;
        if (rs_file_exists(path)) {
            e_done++;
            e_secs += task_seconds(path);
        }
    }
    line("evaluate", e_done, 0, e_total, "evaluations", e_done ? e_secs / e_done : 0, have_ss ? &sn[3] : NULL, ng);
    complete_all &= e_done == e_total;

    char rpath[4096];
    snprintf(rpath, sizeof rpath, "%s/%s", run_dir, RS_RESULTS_FILE);
    struct stat st;
    if (!stat(rpath, &st)) {
        char when[64];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&st.st_mtime));
        printf("results: %s (written %s)\n", rpath, when);
    } else {
        printf("results: not written yet\n");
    }
    printf("state: %s\n", complete_all ? "complete (every stage that exists)" : "incomplete");
    code = complete_all ? RS_EXIT_OK : RS_EXIT_INCOMPLETE;
done:
    rs_splits_free(&sp);
    rs_tokens_close(&tk);
    rs_grid_free(&p.grid);
    rs_config_free(&p.cfg);
    return code;
}
