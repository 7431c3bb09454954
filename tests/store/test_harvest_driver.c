/* Runs a harvest with the fake producer into a run directory; used by the kill/restart and
 * cross-rank-count scripts. Exit codes: 0 done, 1 error (or a check mismatch), 2 usage,
 * 3 interrupted (SIGTERM/SIGUSR1 after a checkpoint).
 *
 *   test_harvest_driver RUN_DIR [--dtype float32|float16] [--sleep-us N] [--per-round K]
 *       [--batch B] [--d D] [--flush-seconds S] [--train-tokens N] [--calib-tokens N] [--model-hash H] [--force] [--nan SEQ,POS,LAYER]
 *       [--pid-dir DIR] [--check] [--keep-pos0] [--put] */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resae/mpi_util.h"
#include "store/store_testlib.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_harvest_driver RUN_DIR [options]\n");
        return 2;
    }
    if (rs_mpi_begin(&argc, &argv)) {
        rs_err_print();
        return 1;
    }
    int rank = rs_mpi_rank();
    test_setup t;
    test_setup_default(&t);
    fake_producer fp;
    fake_producer_init(&fp);
    const char *run_dir = argv[1], *pid_dir = NULL;
    int check = 0;
    double flush_s = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--check")) check = 1;
        else if (!strcmp(a, "--force")) t.force = 1;
        else if (!strcmp(a, "--keep-pos0")) t.skip_pos0 = 0;
        else if (!strcmp(a, "--put")) fp.use_put = 1;
        else if (v && !strcmp(a, "--dtype")) t.dtype = rs_dtype_from_name(argv[++i]);
        else if (v && !strcmp(a, "--sleep-us")) fp.sleep_us = atol(argv[++i]);
        else if (v && !strcmp(a, "--per-round")) t.per_round = atoi(argv[++i]);
        else if (v && !strcmp(a, "--batch")) t.batch_seqs = atoi(argv[++i]);
        else if (v && !strcmp(a, "--d")) t.d = atoi(argv[++i]);
        else if (v && !strcmp(a, "--flush-seconds")) flush_s = atof(argv[++i]);
        else if (v && !strcmp(a, "--train-tokens")) t.budget[RS_SPLIT_TRAIN] = atoll(argv[++i]);
        else if (v && !strcmp(a, "--calib-tokens")) t.budget[RS_SPLIT_CALIB] = atoll(argv[++i]);
        else if (v && !strcmp(a, "--model-hash")) t.model_hash = strtoull(argv[++i], NULL, 0);
        else if (v && !strcmp(a, "--pid-dir")) pid_dir = argv[++i];
        else if (v && !strcmp(a, "--nan")) {
            long long sq;
            if (sscanf(argv[++i], "%lld,%d,%d", &sq, &fp.nan_pos, &fp.nan_layer) != 3) t.dtype = -1;
            fp.nan_seq = sq;
        } else {
            if (rank == 0) fprintf(stderr, "test_harvest_driver: unknown or incomplete option %s\n", a);
            rs_mpi_end();
            return 2;
        }
    }
    if (t.dtype < 0) {
        if (rank == 0) fprintf(stderr, "test_harvest_driver: bad --dtype or --nan\n");
        rs_mpi_end();
        return 2;
    }
    if (pid_dir) {
        char p[1100];
        snprintf(p, sizeof p, "%s/pid.%d", pid_dir, rank);
        FILE *f = fopen(p, "w");
        if (f) {
            fprintf(f, "%ld\n", (long)getpid());
            fclose(f);
        }
    }
    signal(SIGTERM, on_signal);
    signal(SIGUSR1, on_signal);

    rs_splits sp;
    if (test_splits(&sp, &t)) {
        rs_err_print();
        rs_mpi_end();
        return 1;
    }
    rs_harvest_config cfg;
    test_config(&cfg, &t, run_dir);
    cfg.stop = &g_stop;
    cfg.flush_seconds = flush_s;
    rs_harvest_stats hs;
    rs_err err = rs_harvest_run(&hs, &cfg, &sp, fake_produce, &fp, MPI_COMM_WORLD);
    int rc = 0;
    if (err == RS_ERR_INTERRUPTED) {
        rc = 3;
    } else if (err) {
        rs_err_print();
        rc = 1;
    } else {
        if (rank == 0)
            printf("harvest done: %lld batches total, %lld skipped, %lld run\n", (long long)hs.batches_total,
                   (long long)hs.batches_skipped, (long long)hs.batches_run);
        long bad = check ? test_check_store(run_dir, &t, &sp, MPI_COMM_WORLD) : 0, all = 0;
        MPI_Allreduce(&bad, &all, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        if (check && rank == 0) printf("check: %s (%ld mismatches)\n", all ? "FAILED" : "ok", all);
        if (all) rc = 1;
    }
    rs_splits_free(&sp);
    rs_mpi_end();
    return rc;
}
