/* The training curve (cfg.curve_bins): each span's value is the mean of the per-step FVUs the
 * step-by-step trainer reports, over spans cut by an independent rule; the curve does not change
 * the trained weights; a stopped and resumed run gives the same curve bit for bit; a checkpoint
 * written without a curve is refused naming curve_bins. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resae/log.h"
#include "resae/sae.h"
#include "sae/sae_synth.h"

#include "testlib.h"

enum { D = 16, N = 64, K = 4, STEPS = 43, BINS = 10 };

static synth g_s;
static volatile sig_atomic_t g_stop = 0;
static int64_t g_stop_after = -1;

static rs_err read_and_maybe_stop(void *ctx, float *rows, int64_t first, int n) {
    if (g_stop_after >= 0 && first + n >= g_stop_after) g_stop = 1;
    return synth_read(ctx, rows, first, n);
}

static void config(rs_sae_config *c, const char *ckpt, int bins) {
    rs_sae_config_default(c, D, N, K);
    c->batch = 128;
    c->steps = STEPS;
    c->lr = 3e-3;
    c->warmup_steps = 5;
    c->dead_tokens = 128 * 4;
    c->seed = 5;
    c->init_tokens = 256;
    c->ckpt_path = ckpt;
    c->ckpt_every = 9;
    c->stop = &g_stop;
    c->curve_bins = bins;
}

/* The reference curve: per-step FVUs from the step-by-step trainer, span b holding the steps s
 * with b <= s * BINS / STEPS < b + 1 (exact rationals). */
static int reference_curve(double curve[BINS], double *gain, rs_sae_source src) {
    rs_sae sae;
    rs_sae_config cfg;
    rs_sae_trainer t;
    double sum[BINS] = {0};
    int n[BINS] = {0};
    config(&cfg, NULL, 0);
    if (rs_sae_init(&sae, D, N, K) || rs_sae_trainer_init(&t, &sae, &cfg, MPI_COMM_NULL) ||
        rs_sae_trainer_init_params(&t, src))
        return rs_err_print(), 1;
    for (int s = 0; s < STEPS; s++) {
        rs_sae_step_stats st;
        if (rs_sae_trainer_step(&t, &st, src)) return rs_err_print(), 1;
        int b = 0;
        while ((b + 1) * STEPS <= s * BINS) b++;
        sum[b] += st.fvu;
        n[b]++;
    }
    for (int b = 0; b < BINS; b++) {
        CHECK(n[b] >= 4 && n[b] <= 5, "span %d holds %d steps", b, n[b]);
        curve[b] = sum[b] / n[b];
    }
    *gain = (curve[7] - curve[9]) / curve[7]; /* span 7 ends at 80% of the steps */
    rs_sae_trainer_free(&t);
    rs_sae_free(&sae);
    return 0;
}

int main(void) {
    rs_log_init(0);
    const char *outdir = getenv("RESAE_TEST_OUT");
    char path[4096];
    snprintf(path, sizeof path, "%s/sae_curve_test.bin", outdir ? outdir : "/tmp");
    unlink(path);
    if (synth_init(&g_s, D, 24, 2, 0.05, 3)) return 1;
    rs_sae_source src = {read_and_maybe_stop, &g_s};
    double ref[BINS], ref_gain;
    if (reference_curve(ref, &ref_gain, src)) return 1;

    rs_sae a, b;
    rs_sae_config cfg;
    rs_sae_metrics ma, mb;
    if (rs_sae_init(&a, D, N, K) || rs_sae_init(&b, D, N, K)) return 1;
    config(&cfg, NULL, BINS);
    if (rs_sae_train(&a, &ma, &cfg, src, MPI_COMM_NULL)) return rs_err_print(), 1;
    CHECK(ma.curve_bins == BINS, "curve_bins %d", ma.curve_bins);
    double worst = 0;
    for (int i = 0; i < BINS; i++) worst = fmax(worst, fabs(ma.fvu_curve[i] - ref[i]) / ref[i]);
    CHECK(worst < 1e-12, "curve differs from the per-step reference by %.3g (relative)", worst);
    CHECK(fabs(ma.fvu_last20_gain - ref_gain) < 1e-12, "gain %.9g, reference %.9g", ma.fvu_last20_gain, ref_gain);
    CHECK(ma.fvu_curve[0] > ma.fvu_curve[BINS - 1], "FVU did not fall: %.4f -> %.4f", ma.fvu_curve[0],
          ma.fvu_curve[BINS - 1]);
    printf("curve: %.4f .. %.4f, gain over the last 20%% %.4f, max rel. diff to reference %.2g\n", ma.fvu_curve[0],
           ma.fvu_curve[BINS - 1], ma.fvu_last20_gain, worst);

    /* no curve: the same weights, no gain */
    config(&cfg, NULL, 0);
    if (rs_sae_train(&b, &mb, &cfg, src, MPI_COMM_NULL)) return rs_err_print(), 1;
    CHECK(!memcmp(a.slab, b.slab, a.n_params * sizeof(float)), "the curve changed the weights");
    CHECK(mb.curve_bins == 0 && isnan(mb.fvu_last20_gain), "no curve: bins %d gain %g", mb.curve_bins,
          mb.fvu_last20_gain);

    /* stopped at step 20 (between checkpoints and inside a span), then resumed */
    config(&cfg, path, BINS);
    g_stop_after = 20 * 128;
    rs_err e = rs_sae_train(&b, &mb, &cfg, src, MPI_COMM_NULL);
    CHECK(e == RS_ERR_INTERRUPTED, "stop flag: expected RS_ERR_INTERRUPTED, got %d (%s)", e, rs_err_msg());
    g_stop = 0;
    g_stop_after = -1;
    e = rs_sae_train(&b, &mb, &cfg, src, MPI_COMM_NULL);
    CHECK(e == RS_OK, "resume failed: %s", rs_err_msg());
    CHECK(mb.resumed_from == 20, "resumed from step %d", mb.resumed_from);
    CHECK(!memcmp(ma.fvu_curve, mb.fvu_curve, sizeof(double) * BINS), "resumed curve differs");
    CHECK(ma.fvu_last20_gain == mb.fvu_last20_gain, "resumed gain differs");

    /* a checkpoint without a curve is refused by a run with one */
    unlink(path);
    config(&cfg, path, 0);
    g_stop_after = 20 * 128;
    e = rs_sae_train(&b, &mb, &cfg, src, MPI_COMM_NULL);
    CHECK(e == RS_ERR_INTERRUPTED, "stop flag: got %d (%s)", e, rs_err_msg());
    g_stop = 0;
    g_stop_after = -1;
    config(&cfg, path, BINS);
    e = rs_sae_train(&b, &mb, &cfg, src, MPI_COMM_NULL);
    CHECK(e == RS_ERR_CONFIG && strstr(rs_err_msg(), "curve_bins"), "curve_bins mismatch: got %d: %s", e,
          rs_err_msg());
    printf("refused: %s\n", rs_err_msg());

    unlink(path);
    rs_sae_free(&a);
    rs_sae_free(&b);
    synth_free(&g_s);
    printf("%s\n", rs_check_fails ? "FAILED" : "ok");
    return rs_check_fails ? 1 : 0;
}
