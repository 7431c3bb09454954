/* A diverging SAE stops with an error that names the step, the FVU, the limit and the setting to
 * change (train.max_fvu, sae_train.c), never with a trained SAE: once with a limit below the first
 * step's FVU (deterministic), once with a learning rate far too high (a real divergence: FVU above
 * the default limit, or a non-finite loss). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/log.h"
#include "resae/sae.h"
#include "sae/sae_synth.h"

static int fails;

static void setup(rs_sae_config *cfg) {
    rs_sae_config_default(cfg, 32, 96, 4);
    cfg->batch = 256;
    cfg->steps = 200;
    cfg->lr = 4e-3;
    cfg->warmup_steps = 0;
    cfg->dead_tokens = 256 * 20;
    cfg->seed = 3;
    cfg->init_tokens = 1024;
}

/* train; expect a numeric error whose message holds every needle */
static void expect_diverged(const char *name, const rs_sae_config *cfg, const char *const *needles) {
    synth s;
    rs_sae sae;
    if (synth_init(&s, 32, 48, 3, 0.05, 7) || rs_sae_init(&sae, 32, 96, 4)) {
        printf("FAIL %s: setup\n", name);
        fails++;
        return;
    }
    rs_sae_metrics met;
    rs_sae_source src = {synth_read, &s};
    rs_err e = rs_sae_train(&sae, &met, cfg, src, MPI_COMM_NULL);
    const char *msg = rs_err_msg();
    int ok = e == RS_ERR_NUMERIC;
    for (const char *const *n = needles; ok && *n; n++) ok = strstr(msg, *n) != NULL;
    printf("%s %s: error %d: %s\n", ok ? "ok" : "FAIL", name, (int)e, e ? msg : "(training finished)");
    fails += !ok;
    rs_err_clear();
    rs_sae_free(&sae);
    synth_free(&s);
}

int main(void) {
    rs_log_init(0);
    rs_log_set_level(RS_LOG_ERROR);
    rs_sae_config cfg;
    setup(&cfg);
    cfg.max_fvu = 0.5; /* the first step's FVU is about 0.7 */
    const char *limit[] = {"diverged at step 0 of 200", "above train.max_fvu = 0.5", "encoder row norm",
                           "Lower train.lr", NULL};
    expect_diverged("limit below the first FVU", &cfg, limit);
    setup(&cfg);
    cfg.lr = 10; /* the largest train.lr the schema allows */
    const char *high[] = {"diverged at step", "train.max_fvu = 100", "train.lr (now 10)", NULL};
    expect_diverged("learning rate 10", &cfg, high);
    /* the default limit does not stop ordinary training */
    setup(&cfg);
    synth s;
    rs_sae sae;
    if (synth_init(&s, 32, 48, 3, 0.05, 7) || rs_sae_init(&sae, 32, 96, 4)) return 1;
    rs_sae_metrics met;
    rs_sae_source src = {synth_read, &s};
    rs_err e = rs_sae_train(&sae, &met, &cfg, src, MPI_COMM_NULL);
    printf("%s default limit %g: %s (final fvu %.4f)\n", e ? "FAIL" : "ok", cfg.max_fvu, e ? rs_err_msg() : "trained",
           met.fvu);
    fails += e != RS_OK;
    rs_sae_free(&sae);
    synth_free(&s);
    printf("sae divergence: %d failure(s)\n", fails);
    return fails != 0;
}
