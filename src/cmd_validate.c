#include <stdio.h>

#include "resae/cli.h"

int rs_cmd_validate(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "resae validate: not built yet\n");
    return RS_EXIT_ERROR;
}
