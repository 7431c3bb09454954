/* resae run CONFIG: run or resume the experiment under mpirun. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "resae/cli.h"
#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/pipeline.h"

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
    int force = 0, until = -1;
    static const char *const stages[] = {"harvest", "affine", "train", "evaluate"};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--force")) {
            force = 1;
        } else if (!strcmp(argv[i], "--until")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "resae run: --until needs a stage (harvest, affine, train, evaluate)\n");
                return RS_EXIT_USAGE;
            }
            i++;
            for (int s = 0; s < 4; s++)
                if (!strcmp(argv[i], stages[s])) until = s;
            if (until < 0) {
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

    rs_pipeline p;
    rs_err local = rs_pipeline_init(&p, config, MPI_COMM_WORLD);
    rs_err err = rs_mpi_agree(local, MPI_COMM_WORLD);
    if (err && !local) rs_pipeline_free(&p);
    int code = RS_EXIT_OK;
    if (!err) {
        p.force = force;
        p.until = until;
        p.stop = &g_stop;
        err = rs_pipeline_run(&p);
        rs_pipeline_free(&p);
    }
    if (err == RS_ERR_INTERRUPTED) {
        RS_WARN("interrupted: state is checkpointed; run the same command again to continue");
        code = RS_EXIT_INCOMPLETE;
    } else if (err) {
        /* rank 0 prints its error; another rank prints only an error of its own that rank 0 lacks */
        int own = strcmp(rs_err_msg(), RS_PIPELINE_OTHER_RANK) != 0 && (local || err);
        int root_own = own;
        MPI_Bcast(&root_own, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (rs_mpi_rank() == 0 || (own && !root_own)) rs_err_print();
        code = RS_EXIT_ERROR;
    }
    rs_mpi_end();
    return code;
}
