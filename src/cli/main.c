/* resae: command-line dispatch only. */
#include <stdio.h>
#include <string.h>

#include "resae/blas.h"
#include "resae/cli.h"
#include "resae/err.h"
#include "resae/log.h"
#include "resae/version.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} rs_command;

static const rs_command COMMANDS[] = {
    {"run", rs_cmd_run, "run (or resume) the experiment a config describes (under mpirun)"},
    {"validate", rs_cmd_validate, "check a config; print it resolved and the grid it implies"},
    {"status", rs_cmd_status, "show the progress of a run directory"},
    {"report", rs_cmd_report, "print the evaluation tables of a finished run"},
    {"export", rs_cmd_export, "write a run's SAEs in the SAELens or sparsify format"},
    {"forward", rs_cmd_forward, "run a checkpoint over tokens; write CE, residual streams, logits"},
    {"version", rs_cmd_version, "print version, build and BLAS kernel information"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: resae <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        fprintf(f, "  %-9s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "  %-9s %s\n", "help", "this text; 'resae help COMMAND' or 'resae COMMAND --help' for one command");
    fprintf(f,
            "\nexit codes: 0 done, 1 error, 2 usage, 3 incomplete (checkpointed; run the same command again)\n"
            "environment: RESAE_LOG_LEVEL=error|warn|info|debug, RESAE_TRACEBACK=1 (print error tracebacks),\n"
            "  RESAE_PROGRESS_INTERVAL=seconds, RESAE_ALLOW_GENERIC_BLAS=1, RESAE_NO_BLAS_GUARD=1\n");
}

int rs_cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

int rs_cli_args(int argc, char **argv, int n_args, void (*print_usage)(FILE *)) {
    if (rs_cli_wants_help(argc, argv)) {
        print_usage(stdout);
        return RS_EXIT_OK;
    }
    if (argc != n_args + 1) {
        print_usage(stderr);
        return RS_EXIT_USAGE;
    }
    return -1;
}

int rs_cli_fail(void) {
    rs_err_print();
    return RS_EXIT_ERROR;
}

int main(int argc, char **argv) {
    /* before anything loads threads or MPI: may re-exec with OPENBLAS_CORETYPE set */
    if (rs_blas_guard(argc, argv)) return rs_cli_fail();
    rs_log_init(0);
    if (argc < 2) {
        usage(stderr);
        return RS_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        if (argc >= 3) {
            for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
                if (!strcmp(argv[2], COMMANDS[i].name)) {
                    char *hargv[] = {argv[2], "--help", NULL};
                    return COMMANDS[i].fn(2, hargv);
                }
            fprintf(stderr, "resae: unknown command '%s'\n", argv[2]);
            return RS_EXIT_USAGE;
        }
        usage(stdout);
        return RS_EXIT_OK;
    }
    if (!strcmp(cmd, "--version")) return rs_cmd_version(1, argv + 1);
    for (size_t i = 0; i < sizeof COMMANDS / sizeof *COMMANDS; i++)
        if (!strcmp(cmd, COMMANDS[i].name)) return COMMANDS[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "resae: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return RS_EXIT_USAGE;
}
