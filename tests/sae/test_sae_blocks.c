/* The blocked kernels of the trainer at a size where they take several blocks (d=512: decode
 * blocks of 512 tokens, backward blocks of 256 latents; here 2 token blocks and 3 latent blocks, the
 * last ones partial), a third of the latents dead so AuxK pairs are in every block:
 *  1. loss and sparse gradient equal the dense double reference (tests/sae/sae_ref_dense.h);
 *  2. the one-rank step, whose update is fused into the backward, ends bitwise equal to
 *     rs_sae_trainer_loss_grad followed by rs_sae_trainer_update (parameters, both Adam moments,
 *     dead counters), over steps with a changing dead set. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/log.h"
#include "resae/sae.h"
#include "sae/sae_ref_dense.h"
#include "sae/sae_synth.h"

#include "testlib.h"

enum { D = 512, N = 600, K = 8, B = 600, KAUX = 16, STEPS = 4 };



static void config(rs_sae_config *c) {
    rs_sae_config_default(c, D, N, K);
    c->batch = B;
    c->steps = STEPS;
    c->warmup_steps = 1;
    c->lr = 1e-3;
    c->k_aux = KAUX;
    c->alpha_aux = 0.25;
    c->dead_tokens = 2 * B;
    c->seed = 5;
    c->init_tokens = 512;
}

int main(void) {
    ref_rng_state = 99ULL;
    rs_log_init(0);
    rs_sae sae;
    if (rs_sae_init(&sae, D, N, K)) return 1;
    /* untied random parameters, unit decoder rows */
    for (int j = 0; j < N; j++) {
        double s = 0;
        float *wd = sae.p.W_dec + (size_t)j * D;
        for (int i = 0; i < D; i++) {
            wd[i] = (float)ref_nrand();
            s += (double)wd[i] * wd[i];
        }
        for (int i = 0; i < D; i++) wd[i] = (float)(wd[i] / sqrt(s));
        for (int i = 0; i < D; i++) sae.p.W_enc[(size_t)j * D + i] = (float)(ref_nrand() / sqrt(D));
        sae.p.b_enc[j] = (float)(0.1 * ref_nrand());
    }
    for (int i = 0; i < D; i++) sae.p.b_dec[i] = (float)(0.2 * ref_nrand());
    float *x = malloc(sizeof(float) * B * D);
    for (size_t q = 0; q < (size_t)B * D; q++) x[q] = (float)(ref_nrand() + 0.3);

    rs_sae_config cfg;
    config(&cfg);
    rs_sae_trainer tr;
    if (rs_sae_trainer_init(&tr, &sae, &cfg, MPI_COMM_NULL)) return rs_err_print(), 1;
    unsigned char dead[N] = {0};
    for (int j = 0; j < N; j += 3) {
        dead[j] = 1;
        tr.since_fired[j] = cfg.dead_tokens;
    }

    /* ---- 1. gradient against the dense reference ---- */
    rs_sae_step_stats st;
    if (rs_sae_trainer_loss_grad(&tr, &st, x, B)) return rs_err_print(), 1;
    size_t np = sae.n_params;
    double *pd = malloc(np * sizeof(double)), *gd = calloc(np, sizeof(double)), *xd = malloc(sizeof(double) * B * D);
    for (size_t i = 0; i < np; i++) pd[i] = sae.slab[i];
    for (size_t q = 0; q < (size_t)B * D; q++) xd[q] = x[q];
    ref_sae m = {D, N, K, pd, pd + (size_t)N * D, pd + (size_t)N * D + N, pd + 2 * (size_t)N * D + N};
    double fvu, auxk;
    double L = ref_loss(&m, xd, B, dead, KAUX, cfg.alpha_aux, NULL, NULL, &fvu, &auxk, gd, gd + (size_t)N * D,
                        gd + (size_t)N * D + N, gd + 2 * (size_t)N * D + N);
    printf("loss %.8f (ref %.8f) fvu %.6f (ref %.6f) auxk %.6f (ref %.6f) n_dead %d\n", st.loss, L, st.fvu, fvu,
           st.auxk, auxk, st.n_dead);
    CHECK(auxk > 0.01 && st.n_dead == (N + 2) / 3, "the test needs active dead latents (auxk %g, %d dead)", auxk,
          st.n_dead);
    CHECK(fabs(st.loss - L) <= 1e-5 * fabs(L), "loss %.9g vs reference %.9g", st.loss, L);
    double gerr[4];
    ref_grad_block_errors(gerr, tr.grad_slab, gd, N, D);
    for (int b = 0; b < 4; b++) CHECK(gerr[b] < 1e-4, "blocked gradient of %s differs from the dense reference: %.3g", ref_block_names[b], gerr[b]);
    rs_sae_trainer_free(&tr);
    free(pd), free(gd), free(xd);

    /* ---- 2. fused one-rank step == gradient, then update ---- */
    synth syn;
    if (synth_init(&syn, D, 2 * N, 6, 0.05, 3)) return 1;
    rs_sae_source src = {synth_read, &syn};
    rs_sae a, b;
    if (rs_sae_init(&a, D, N, K) || rs_sae_init(&b, D, N, K)) return 1;
    rs_sae_trainer ta, tb;
    if (rs_sae_trainer_init(&ta, &a, &cfg, MPI_COMM_NULL) || rs_sae_trainer_init(&tb, &b, &cfg, MPI_COMM_NULL) ||
        rs_sae_trainer_init_params(&ta, src) || rs_sae_trainer_init_params(&tb, src))
        return rs_err_print(), 1;
    for (int s = 0; s < STEPS; s++) {
        rs_sae_step_stats sa, sb;
        /* keep a third of the latents dead (AuxK) in every step, the same in both */
        for (int j = s % 3; j < N; j += 3) ta.since_fired[j] = tb.since_fired[j] = cfg.dead_tokens;
        if (rs_sae_trainer_step(&ta, &sa, src)) return rs_err_print(), 1;
        if (synth_read(&syn, x, (int64_t)s * B, B) || rs_sae_trainer_loss_grad(&tb, &sb, x, B)) return rs_err_print(), 1;
        rs_sae_trainer_update(&tb);
        printf("step %d: loss %.7f / %.7f, dead %d\n", s, sa.loss, sb.loss, sa.n_dead);
        CHECK(sa.loss == sb.loss && sa.n_dead == sb.n_dead, "step %d: fused loss %.9g vs %.9g", s, sa.loss, sb.loss);
        CHECK(sa.n_dead >= N / 3 && sa.auxk > 0, "step %d: AuxK must be active (%d dead, auxk %g)", s, sa.n_dead, sa.auxk);
        CHECK(!memcmp(a.slab, b.slab, sizeof(float) * np), "step %d: fused parameters differ", s);
        CHECK(!memcmp(ta.m_slab, tb.m_slab, sizeof(float) * np) && !memcmp(ta.v_slab, tb.v_slab, sizeof(float) * np),
              "step %d: fused Adam moments differ", s);
        CHECK(!memcmp(ta.since_fired, tb.since_fired, sizeof(int64_t) * N) && ta.step == tb.step,
              "step %d: dead counters or step differ", s);
    }
    rs_sae_trainer_free(&ta);
    rs_sae_trainer_free(&tb);
    rs_sae_free(&a);
    rs_sae_free(&b);
    rs_sae_free(&sae);
    synth_free(&syn);
    free(x);
    printf("%s\n", rs_check_fails ? "FAILED" : "ok");
    return rs_check_fails ? 1 : 0;
}
