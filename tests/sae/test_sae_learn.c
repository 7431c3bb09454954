/* Learning with ground truth: data from a known sparse dictionary (random unit directions,
 * k-sparse positive codes, small noise); the trained TopK SAE must recover >= 90% of the true
 * directions with max cosine > 0.9, and reach a low FVU. */
#include <stdio.h>
#include <stdlib.h>

#include "resae/log.h"
#include "resae/sae.h"
#include "sae/sae_synth.h"

int main(int argc, char **argv) {
    rs_log_init(0);
    int steps = argc > 1 ? atoi(argv[1]) : 600;
    synth s;
    if (synth_init(&s, 32, 48, 3, 0.05, 7)) return 1;
    rs_sae sae;
    if (rs_sae_init(&sae, 32, 96, 4)) return 1;
    rs_sae_config cfg;
    rs_sae_config_default(&cfg, 32, 96, 4);
    cfg.batch = 256;
    cfg.steps = steps;
    cfg.lr = 4e-3;
    cfg.warmup_steps = 20;
    cfg.dead_tokens = 256 * 20;
    cfg.seed = 3;
    cfg.init_tokens = 1024;
    rs_sae_metrics met;
    rs_sae_source src = {synth_read, &s};
    if (rs_sae_train(&sae, &met, &cfg, src, MPI_COMM_NULL)) {
        rs_err_print();
        return 1;
    }
    double mean_best;
    double rec = synth_recovered(&s, sae.p.W_dec, sae.n_latents, 0.9, &mean_best);
    printf("final fvu %.4f L0 %.2f dead %.3f; recovered %.1f%% of %d true directions (cos > 0.9), mean best cos %.3f\n",
           met.fvu, met.l0, met.dead_frac, 100 * rec, s.M, mean_best);
    int fail = 0;
    if (rec < 0.9) {
        fprintf(stderr, "FAIL: recovered only %.1f%% of the true directions (need >= 90%%)\n", 100 * rec);
        fail = 1;
    }
    if (!(met.fvu < 0.1)) {
        fprintf(stderr, "FAIL: final FVU %.4f (need < 0.1)\n", met.fvu);
        fail = 1;
    }
    rs_sae_free(&sae);
    synth_free(&s);
    printf("%s\n", fail ? "FAILED" : "ok");
    return fail;
}
