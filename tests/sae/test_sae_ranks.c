/* Data-parallel agreement: the same training (same data, seed and configuration) on 1, 2, ...
 * ranks (sub-communicators of the world, up to its size) must give the same final FVU within
 * 1e-3, and within each run every rank must hold bitwise identical parameters. Dead latents are
 * forced early (small dead_tokens) so AuxK and the global fired bookkeeping take part. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/mpi_util.h"
#include "resae/sae.h"
#include "resae/util.h"
#include "sae/sae_synth.h"

enum { D = 32, N = 192, K = 4 };

int main(int argc, char **argv) {
    if (rs_mpi_begin(&argc, &argv)) return 1;
    int rank = rs_mpi_rank(), size = rs_mpi_size();
    synth s;
    if (synth_init(&s, D, 48, 3, 0.05, 5)) return 1;
    double fvu1 = 0, dead1 = 0;
    float *w1 = malloc(sizeof(float) * rs_sae_slab_size(D, N));
    int fails = 0;
    for (int g = 1; g <= size; g *= 2) {
        MPI_Comm comm;
        MPI_Comm_split(MPI_COMM_WORLD, rank < g ? 0 : MPI_UNDEFINED, rank, &comm);
        if (comm != MPI_COMM_NULL) {
            rs_sae sae;
            rs_sae_config cfg;
            rs_sae_metrics met;
            if (rs_sae_init(&sae, D, N, K)) MPI_Abort(MPI_COMM_WORLD, 1);
            rs_sae_config_default(&cfg, D, N, K);
            cfg.batch = 512;
            cfg.steps = 150;
            cfg.lr = 4e-3;
            cfg.warmup_steps = 10;
            cfg.dead_tokens = 512 * 5;
            cfg.seed = 9;
            cfg.init_tokens = 512;
            rs_sae_source src = {synth_read, &s};
            RS_TRY_COLL(rs_sae_train(&sae, &met, &cfg, src, comm), comm);
            /* identical parameters on every rank of the group */
            uint64_t h = rs_hash64(RS_HASH64_INIT, sae.slab, sae.n_params * sizeof(float)), hmin, hmax;
            MPI_Allreduce(&h, &hmin, 1, MPI_UINT64_T, MPI_MIN, comm);
            MPI_Allreduce(&h, &hmax, 1, MPI_UINT64_T, MPI_MAX, comm);
            if (hmin != hmax) {
                fprintf(stderr, "FAIL: ranks of the %d-rank run hold different parameters\n", g);
                fails++;
            }
            if (g == 1 && rank == 0) {
                fvu1 = met.fvu;
                dead1 = met.dead_frac;
                memcpy(w1, sae.slab, sizeof(float) * sae.n_params);
            } else if (rank == 0) {
                double dmax = 0, wmax = 0;
                for (size_t i = 0; i < sae.n_params; i++) {
                    dmax = fmax(dmax, fabs((double)sae.slab[i] - w1[i]));
                    wmax = fmax(wmax, fabs((double)w1[i]));
                }
                printf("%d ranks: fvu %.6f (1 rank: %.6f, diff %.2e), dead %.3f (1 rank %.3f), max |dW| %.2e of %.2e\n",
                       g, met.fvu, fvu1, fabs(met.fvu - fvu1), met.dead_frac, dead1, dmax, wmax);
                if (!(fabs(met.fvu - fvu1) <= 1e-3)) {
                    fprintf(stderr, "FAIL: final FVU at %d ranks %.6f differs from 1 rank %.6f by more than 1e-3\n", g,
                            met.fvu, fvu1);
                    fails++;
                }
            }
            if (rank == 0 && g == 1) {
                printf("1 rank: fvu %.6f auxk %.4f L0 %.2f dead %.3f\n", met.fvu, met.auxk, met.l0, met.dead_frac);
                if (!(met.auxk > 0)) {
                    fprintf(stderr, "FAIL: no dead latents in the last steps: AuxK was not exercised\n");
                    fails++;
                }
            }
            rs_sae_free(&sae);
            MPI_Comm_free(&comm);
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
    if (rank == 0 && !(fvu1 < 0.5)) {
        fprintf(stderr, "FAIL: 1-rank training did not learn (fvu %.4f)\n", fvu1);
        fails++;
    }
    int total = 0;
    MPI_Allreduce(&fails, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("%s\n", total ? "FAILED" : "ok");
    free(w1);
    synth_free(&s);
    rs_mpi_end();
    return total ? 1 : 0;
}
