#include <stdio.h>

#include <hdf5.h>
#include <mpi.h>
#include <yaml.h>

#include "resae/blas.h"
#include "resae/cli.h"
#include "resae/version.h"

int rs_cmd_version(int argc, char **argv) {
    if (rs_cli_wants_help(argc, argv)) {
        printf("usage: resae version\n\nPrints the resae version, the libraries it was built with, the CPU's\n"
               "vector level and the OpenBLAS kernel set in use (and how the BLAS guard chose it, and whether\n"
               "the kernel self-test passed).\n");
        return RS_EXIT_OK;
    }
    unsigned maj, min, rel;
    H5get_libversion(&maj, &min, &rel);
    char mpiv[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(mpiv, &len);
    for (int i = 0; i < len; i++)
        if (mpiv[i] == '\n' || mpiv[i] == ',') {
            mpiv[i] = '\0';
            break;
        }
    printf("resae %s (store schema %d)\n", RESAE_VERSION, RESAE_SCHEMA_VERSION);
    enum rs_isa cpu = rs_cpu_isa();
    printf("cpu: %s (best OpenBLAS kernel set: %s)\n", rs_isa_name(cpu), rs_blas_best_core(cpu));
    printf("blas: OpenBLAS kernels %s [%s]\n", rs_blas_corename(), rs_blas_guard_status());
    printf("hdf5: %u.%u.%u (parallel)\n", maj, min, rel);
    printf("mpi: %s\n", mpiv);
    printf("yaml: %s\n", yaml_get_version_string());
    return RS_EXIT_OK;
}
