/* SAE initialisation recipes (train.enc_init, docs/sae.md "Initialisation"), on data from a known
 * sparse dictionary:
 *  1. tied: decoder rows unit, encoder = decoder.
 *  2. data: the encoder is the tied one times alpha, and alpha is the least-squares scale computed
 *     here independently (double, from the tied model's reconstructions of the init sample):
 *     within 1e-5; the init sample's reconstruction error at alpha is below that at alpha (1 +- 2%)
 *     and at the tied scale 1 (b_enc = 0 makes TopK positively homogeneous in W_enc).
 *  3. openai: the mean norm of (x_hat - b_dec) over fresh random unit vectors about b_dec is 1
 *     within sampling error (0.05).
 *  4. sparsify: encoder entries within +-1/sqrt(d), decoder rows = the encoder rows normalised.
 *  5. Every recipe trains (the error on the same data falls by at least 30%) and the config hash
 *     tells the recipes and the AuxK normalisers apart. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/log.h"
#include "resae/sae.h"
#include "sae/sae_synth.h"
#include "testlib.h"

enum { D = 24, N = 64, K = 4, M = 2048 };

/* sum ||x - x_hat||^2 over the rows of xs with the SAE as it is */
static double sse_of(const rs_sae *sae, const float *xs, int m) {
    float *xh = malloc(sizeof(float) * (size_t)m * D);
    if (!xh || rs_sae_reconstruct(xh, sae, xs, m)) {
        free(xh);
        return NAN;
    }
    double s = 0;
    for (size_t q = 0; q < (size_t)m * D; q++) s += ((double)xs[q] - xh[q]) * ((double)xs[q] - xh[q]);
    free(xh);
    return s;
}

static int init_with(rs_sae *sae, rs_sae_config *cfg, enum rs_sae_enc_init e, rs_sae_source src) {
    rs_sae_config_default(cfg, D, N, K);
    cfg->enc_init = e;
    cfg->init_tokens = M;
    cfg->seed = 5;
    cfg->batch = 256;
    cfg->steps = 300;
    cfg->warmup_steps = 20;
    cfg->lr = 4e-3;
    rs_sae_trainer t;
    int bad = rs_sae_init(sae, D, N, K) || rs_sae_trainer_init(&t, sae, cfg, MPI_COMM_NULL);
    if (bad) return 1;
    bad = rs_sae_trainer_init_params(&t, src) != RS_OK;
    rs_sae_trainer_free(&t);
    if (bad) rs_err_print();
    return bad;
}

int main(void) {
    rs_log_init(0);
    synth s;
    if (synth_init(&s, D, 96, 3, 0.05, 21)) return 1;
    rs_sae_source src = {synth_read, &s};
    float *xs = malloc(sizeof(float) * M * D);
    if (!xs) return 1;
    synth_read(&s, xs, 0, M);

    rs_sae tied, data, oa, sp;
    rs_sae_config ct, cd, co, cs;
    if (init_with(&tied, &ct, RS_SAE_ENC_TIED, src) || init_with(&data, &cd, RS_SAE_ENC_DATA, src) ||
        init_with(&oa, &co, RS_SAE_ENC_OPENAI, src) || init_with(&sp, &cs, RS_SAE_ENC_SPARSIFY, src))
        return 1;
    size_t nd = (size_t)N * D;

    /* 1. tied */
    double unit_err = 0, tie_err = 0;
    for (int j = 0; j < N; j++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)tied.p.W_dec[j * D + i] * tied.p.W_dec[j * D + i];
        unit_err = fmax(unit_err, fabs(sqrt(ss) - 1));
    }
    for (size_t q = 0; q < nd; q++) tie_err = fmax(tie_err, fabs(tied.p.W_enc[q] - tied.p.W_dec[q]));
    printf("tied: max | ||W_dec row|| - 1 | %.2g, max |W_enc - W_dec| %.2g\n", unit_err, tie_err);
    CHECK(unit_err < 1e-6 && tie_err == 0, "tied init: rows not unit (%g) or encoder not the decoder (%g)", unit_err, tie_err);

    /* 2. data: alpha from the tied model's reconstructions, computed here */
    CHECK(memcmp(tied.p.W_dec, data.p.W_dec, nd * sizeof(float)) == 0 && memcmp(tied.p.b_dec, data.p.b_dec, D * sizeof(float)) == 0,
          "the data recipe's decoder differs from the tied one");
    float *xh = malloc(sizeof(float) * M * D);
    if (!xh || rs_sae_reconstruct(xh, &tied, xs, M)) return 1;
    double num = 0, den = 0;
    for (int r = 0; r < M; r++)
        for (int i = 0; i < D; i++) {
            double u = (double)xh[r * D + i] - tied.p.b_dec[i];
            num += ((double)xs[r * D + i] - tied.p.b_dec[i]) * u;
            den += u * u;
        }
    double alpha_ref = num / den, ratio_err = 0, alpha = (double)data.p.W_enc[0] / tied.p.W_enc[0];
    for (size_t q = 0; q < nd; q++)
        if (fabs(tied.p.W_enc[q]) > 1e-3) ratio_err = fmax(ratio_err, fabs(data.p.W_enc[q] / tied.p.W_enc[q] - alpha_ref));
    printf("data: alpha %.6f, reference %.6f, max |ratio - reference| %.2g\n", alpha, alpha_ref, ratio_err);
    CHECK(ratio_err < 1e-5 * alpha_ref, "data init: W_enc / W_enc(tied) differs from the least-squares alpha %.6f by %.3g",
          alpha_ref, ratio_err);
    CHECK(fabs(alpha_ref - 1) > 0.05, "the case needs a scale away from 1 (alpha %.4f)", alpha_ref);
    double s0 = sse_of(&data, xs, M), s1 = sse_of(&tied, xs, M);
    float *keep = malloc(nd * sizeof(float));
    if (!keep) return 1;
    memcpy(keep, data.p.W_enc, nd * sizeof(float));
    double s_lo, s_hi;
    for (size_t q = 0; q < nd; q++) data.p.W_enc[q] = (float)(keep[q] * 0.98);
    s_lo = sse_of(&data, xs, M);
    for (size_t q = 0; q < nd; q++) data.p.W_enc[q] = (float)(keep[q] * 1.02);
    s_hi = sse_of(&data, xs, M);
    memcpy(data.p.W_enc, keep, nd * sizeof(float));
    free(keep);
    printf("data: init-sample SSE %.4f at alpha, %.4f at 0.98 alpha, %.4f at 1.02 alpha, %.4f tied\n", s0, s_lo, s_hi, s1);
    CHECK(s0 < s_lo && s0 < s_hi && s0 < s1, "data init: the SSE at alpha is not the smallest");

    /* 3. openai: mean ||x_hat - b_dec|| over fresh random unit vectors about b_dec */
    {
        enum { G = 2048 };
        float *g = malloc(sizeof(float) * G * D), *gh = malloc(sizeof(float) * G * D);
        uint64_t st = 99;
        if (!g || !gh) return 1;
        for (int r = 0; r < G; r++) {
            double v[D], ss = 0;
            for (int i = 0; i < D; i++) {
                v[i] = synth_n(&st);
                ss += v[i] * v[i];
            }
            for (int i = 0; i < D; i++) g[r * D + i] = (float)(v[i] / sqrt(ss) + oa.p.b_dec[i]);
        }
        if (rs_sae_reconstruct(gh, &oa, g, G)) return 1;
        double mean = 0;
        for (int r = 0; r < G; r++) {
            double ss = 0;
            for (int i = 0; i < D; i++) ss += ((double)gh[r * D + i] - oa.p.b_dec[i]) * ((double)gh[r * D + i] - oa.p.b_dec[i]);
            mean += sqrt(ss) / G;
        }
        printf("openai: mean ||x_hat - b_dec|| over %d random unit inputs %.4f (target 1)\n", (int)G, mean);
        CHECK(fabs(mean - 1) < 0.05, "openai init: mean reconstruction norm %.4f, want 1 +- 0.05", mean);
        free(g);
        free(gh);
    }

    /* 4. sparsify */
    {
        double bound = 1 / sqrt((double)D), over = 0, par = 0;
        for (size_t q = 0; q < nd; q++) over = fmax(over, fabs(sp.p.W_enc[q]) - bound);
        for (int j = 0; j < N; j++) {
            double ee = 0, ed = 0, dd = 0;
            for (int i = 0; i < D; i++) {
                ee += (double)sp.p.W_enc[j * D + i] * sp.p.W_enc[j * D + i];
                ed += (double)sp.p.W_enc[j * D + i] * sp.p.W_dec[j * D + i];
                dd += (double)sp.p.W_dec[j * D + i] * sp.p.W_dec[j * D + i];
            }
            par = fmax(par, fmax(fabs(dd - 1), fabs(ed / sqrt(ee * dd) - 1)));
        }
        printf("sparsify: max |W_enc| - 1/sqrt(d) = %.3g; decoder rows unit and parallel to the encoder's within %.2g\n",
               over, par);
        CHECK(over <= 0 && par < 1e-5, "sparsify init: entries out of range (%g) or decoder not the normalised encoder (%g)",
              over, par);
    }

    /* 5. each recipe trains; hashes */
    rs_sae *saes[4] = {&tied, &data, &oa, &sp};
    rs_sae_config *cfgs[4] = {&ct, &cd, &co, &cs};
    uint64_t h[4];
    for (int e = 0; e < 4; e++) {
        rs_sae_metrics met;
        double before = sse_of(saes[e], xs, M);
        if (rs_sae_train(saes[e], &met, cfgs[e], src, MPI_COMM_NULL)) {
            rs_err_print();
            return 1;
        }
        double after = sse_of(saes[e], xs, M);
        printf("%-8s init SSE %.4f -> %.4f after %lld steps (fvu %.4f)\n", rs_sae_enc_init_names[e], before, after,
               (long long)cfgs[e]->steps, met.fvu);
        CHECK(after < 0.7 * before, "%s: training did not lower the error (%.4f -> %.4f)", rs_sae_enc_init_names[e], before, after);
        h[e] = rs_sae_config_hash(cfgs[e]);
        for (int f = 0; f < e; f++) CHECK(h[e] != h[f], "recipes %d and %d have the same config hash", e, f);
    }
    rs_sae_config c0 = ct, c1 = ct;
    c1.aux_norm = RS_SAE_AUX_INPUT;
    CHECK(rs_sae_config_hash(&c0) != rs_sae_config_hash(&c1), "aux_norm does not change the config hash");

    free(xh);
    free(xs);
    for (int e = 0; e < 4; e++) rs_sae_free(saes[e]);
    synth_free(&s);
    printf("%s\n", rs_check_fails ? "FAILED" : "ok");
    return rs_check_fails ? 1 : 0;
}
