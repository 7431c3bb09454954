/* Training driver for the SIGKILL resume test (tests/sae/resume_kill.sh):
 *   sae_resume_driver CKPT OUT [STEPS]
 * Trains a small SAE on synthetic data with a checkpoint every 10 steps at CKPT (resuming from it
 * if present), then rank 0 writes the final parameters and Adam moments to OUT (a checkpoint file,
 * written atomically). Prints "resumed_from N". */
#include <stdio.h>
#include <stdlib.h>

#include "resae/mpi_util.h"
#include "resae/sae.h"
#include "sae/sae_synth.h"

enum { D = 64, N = 512, K = 16 };

int main(int argc, char **argv) {
    if (rs_mpi_begin(&argc, &argv)) return 1;
    if (argc < 3) {
        fprintf(stderr, "usage: sae_resume_driver CKPT OUT [STEPS]\n");
        rs_mpi_end();
        return 2;
    }
    synth s;
    if (synth_init(&s, D, 256, 8, 0.05, 21)) return 1;
    rs_sae sae;
    if (rs_sae_init(&sae, D, N, K)) return 1;
    rs_sae_config cfg;
    rs_sae_config_default(&cfg, D, N, K);
    cfg.batch = 512;
    cfg.steps = argc > 3 ? atoll(argv[3]) : 120;
    cfg.lr = 2e-3;
    cfg.warmup_steps = 10;
    cfg.dead_tokens = 512 * 8;
    cfg.seed = 17;
    cfg.init_tokens = 1024;
    cfg.ckpt_path = argv[1];
    cfg.ckpt_every = 10;
    rs_sae_source src = {synth_read, &s};
    rs_sae_metrics met;
    rs_err err = rs_sae_train(&sae, &met, &cfg, src, MPI_COMM_WORLD);
    if (!err) {
        /* the final state through the checkpoint writer: parameters, moments, counters */
        rs_sae_trainer t;
        RS_TRY_COLL(rs_sae_trainer_init(&t, &sae, &cfg, MPI_COMM_WORLD), MPI_COMM_WORLD);
        RS_TRY_COLL(rs_sae_ckpt_load(&t, argv[1]), MPI_COMM_WORLD);
        RS_TRY_COLL(rs_sae_ckpt_save(&t, argv[2]), MPI_COMM_WORLD);
        rs_sae_trainer_free(&t);
        if (rs_mpi_rank() == 0) printf("resumed_from %d fvu %.6f\n", met.resumed_from, met.fvu);
    } else {
        rs_err_print();
    }
    rs_sae_free(&sae);
    synth_free(&s);
    rs_mpi_end();
    return err ? 1 : 0;
}
