#include <stdio.h>

#include "resae/cli.h"

int rs_cmd_forward(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "resae forward: not built yet\n");
    return RS_EXIT_ERROR;
}
