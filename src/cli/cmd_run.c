/* resae run CONFIG: run or resume the experiment under mpirun. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "resae/cli.h"
#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/run.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: mpirun -n N resae run [--force] [--until STAGE] CONFIG\n\n"
            "Runs the experiment CONFIG describes, or continues it: the same command starts a run and\n"
            "resumes it after any interruption. Finished tasks (recorded under RUN_DIR/tasks/) are skipped;\n"
            "the harvest resumes from its journal and SAE training from its last checkpoint.\n\n"
            "options:\n"
            "  --force         recreate an activation store written for another model, data or split\n"
            "                  configuration (otherwise such a store is refused)\n"
            "  --until STAGE   stop after STAGE: harvest, affine, train or evaluate (default: every\n"
            "                  stage)\n\n"
            "signals: SIGTERM, SIGUSR1 or SIGINT make every rank checkpoint and exit with code 3.\n"
            "exit codes: 0 every stage that exists is complete, 1 error, 2 usage, 3 interrupted\n"
            "(checkpointed; run the same command again).\n");
}

int rs_cmd_run(int argc, char **argv) {
    if (rs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return RS_EXIT_OK;
    }
    const char *config = NULL;
    rs_run_opts opts = {0, RS_STAGE_EVAL, &g_stop};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--force")) {
            opts.force = 1;
        } else if (!strcmp(argv[i], "--until")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "resae run: --until needs a stage (harvest, affine, train, evaluate)\n");
                return RS_EXIT_USAGE;
            }
            i++;
            if (rs_stage_parse(&opts.until, argv[i])) {
                rs_err_clear();
                fprintf(stderr, "resae run: unknown stage '%s' for --until (harvest, affine, train, evaluate)\n", argv[i]);
                return RS_EXIT_USAGE;
            }
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "resae run: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return RS_EXIT_USAGE;
        } else if (!config) {
            config = argv[i];
        } else {
            fprintf(stderr, "resae run: one config file expected, got '%s' and '%s'\n", config, argv[i]);
            return RS_EXIT_USAGE;
        }
    }
    if (!config) {
        usage(stderr);
        return RS_EXIT_USAGE;
    }
    if (rs_mpi_begin(&argc, &argv)) return rs_cli_fail();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    rs_run run;
    rs_err local = rs_run_init(&run, config, &opts, NULL);
    rs_err err = rs_agree(local, MPI_COMM_WORLD, "loading the config");
    if (err && !local) rs_run_free(&run);
    int code = RS_EXIT_OK;
    if (!err) {
        err = rs_run_exec(&run, MPI_COMM_WORLD);
        rs_run_free(&run);
    }
    if (err == RS_ERR_INTERRUPTED) {
        RS_WARN("interrupted: state is checkpointed; run the same command again to continue");
        code = RS_EXIT_INCOMPLETE;
    } else if (err) {
        /* rank 0 prints its error; another rank prints only an error of its own that rank 0 lacks */
        int own = !rs_run_err_is_remote() && (local || err);
        int root_own = own;
        MPI_Bcast(&root_own, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (rs_mpi_rank() == 0 || (own && !root_own)) rs_err_print();
        code = RS_EXIT_ERROR;
    }
    rs_mpi_end();
    return code;
}
