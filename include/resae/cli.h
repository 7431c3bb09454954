/* Command-line entry points. Each returns a process exit code (enum rs_exit). */
#ifndef RESAE_CLI_H
#define RESAE_CLI_H

#include <stdio.h>

enum rs_exit { RS_EXIT_OK = 0, RS_EXIT_ERROR = 1, RS_EXIT_USAGE = 2, RS_EXIT_INCOMPLETE = 3 };

int rs_cmd_run(int argc, char **argv);
int rs_cmd_validate(int argc, char **argv);
int rs_cmd_status(int argc, char **argv);
int rs_cmd_report(int argc, char **argv);
int rs_cmd_export(int argc, char **argv);
int rs_cmd_forward(int argc, char **argv);
int rs_cmd_version(int argc, char **argv);

/* True if argv[1..] contains -h or --help. */
int rs_cli_wants_help(int argc, char **argv);
/* The common start of a command taking exactly n_args arguments (argv[1..n_args]): prints usage and
 * returns RS_EXIT_OK for --help, RS_EXIT_USAGE for another count, -1 to go on. */
int rs_cli_args(int argc, char **argv, int n_args, void (*usage)(FILE *));
/* Exit code for an rs_err (prints the error). */
int rs_cli_fail(void);

#endif
