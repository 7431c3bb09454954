/* Throughput of the CE splice passes against the plain forward pass (what `resae forward` runs) on
 * the same tokens, same process, same BLAS. Not a test: prints ratios.
 *
 * usage: bench_eval MODEL_DIR TOKENS_H5 [B] [expansion] [k] [repeats]
 * Set: layers {1, L/2, L-1} with random SAEs (expansion x d latents, top-k). Measured per batch of
 * B sequences (best of repeats):
 *   fwd      rs_model_forward from tokens, CE only (the `resae forward` pass)
 *   fwd_mid  rs_model_forward from a cached stream after layer l_1, CE only: the work a splice pass
 *            cannot avoid
 *   splice_identity  the tf pass with perfect reconstructions (sae NULL): the splice bookkeeping
 *            (hooks, stream copies, full logits, log-softmax and KL) without SAE arithmetic
 *   splice_sae       the tf and so passes with the random SAEs
 * and the whole evaluation batch (clean + single + tf + so + ablations) in tokens/s of passes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/config.h"
#include "resae/eval.h"
#include "resae/log.h"
#include "resae/model.h"
#include "resae/mpi_util.h"
#include "resae/tokens.h"

#define TRY(e)                    \
    do {                          \
        if (e) {                  \
            rs_err_print();       \
            exit(1);              \
        }                         \
    } while (0)

static uint64_t g_rng = 88172645463325252ULL;
static float rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2 - 1);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_eval MODEL_DIR TOKENS_H5 [B] [expansion] [k] [repeats]\n");
        return 2;
    }
    TRY(rs_mpi_begin(&argc, &argv));
    int B = argc > 3 ? atoi(argv[3]) : 4, expansion = argc > 4 ? atoi(argv[4]) : 4, k = argc > 5 ? atoi(argv[5]) : 32;
    int reps = argc > 6 ? atoi(argv[6]) : 3;
    rs_model model;
    TRY(rs_model_load(&model, argv[1], RS_WEIGHTS_MAPPED));
    rs_tokens tk;
    rs_tokens_opts o = {0};
    TRY(rs_tokens_open(&tk, argv[2], &o));
    int T = tk.seq_len, d = model.cfg.d_model, L = model.cfg.n_layers, V = model.cfg.vocab_size;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * (size_t)T);
    TRY(rs_tokens_read(tok, &tk, 0, B));
    int layers[3] = {1, L / 2, L - 1};
    int M = 3;
    rs_sae saes[3];
    for (int m = 0; m < M; m++) {
        TRY(rs_sae_init(&saes[m], d, expansion * d, k));
        size_t nd = (size_t)expansion * (size_t)d * (size_t)d;
        for (size_t i = 0; i < nd; i++) saes[m].p.W_dec[i] = saes[m].p.W_enc[i] = rnd() / sqrtf((float)d);
    }
    rs_eval_set es_id, es;
    memset(&es_id, 0, sizeof es_id);
    es_id.variant = RS_VARIANT_RAW;
    es_id.M = M;
    es_id.d = d;
    for (int m = 0; m < M; m++) es_id.L[m].layer = layers[m], es_id.L[m].scale = 1.0;
    es = es_id;
    for (int m = 0; m < M; m++) es.L[m].sae = &saes[m];

    /* plain forward passes */
    rs_run_state rs;
    TRY(rs_run_state_init(&rs, &model, B, T));
    float *ce = malloc(sizeof(float) * (size_t)B * (size_t)(T - 1));
    float *mid = malloc(sizeof(float) * (size_t)B * (size_t)T * (size_t)d);
    double t_fwd = 1e30, t_mid = 1e30;
    for (int r = 0; r < reps; r++) {
        rs_forward_args a = RS_FORWARD_ARGS_INIT;
        a.tokens = tok;
        a.ce = ce;
        double t0 = rs_now();
        TRY(rs_model_forward(&model, &rs, &a, B, T));
        t_fwd = fmin(t_fwd, rs_now() - t0);
        rs_forward_args s = RS_FORWARD_ARGS_INIT;
        s.tokens = tok;
        s.stop_layer = layers[0];
        s.resid_out = mid;
        TRY(rs_model_forward(&model, &rs, &s, B, T));
        rs_forward_args f = RS_FORWARD_ARGS_INIT;
        f.tokens = tok;
        f.resid_in = mid;
        f.start_layer = layers[0] + 1;
        f.ce = ce;
        t0 = rs_now();
        TRY(rs_model_forward(&model, &rs, &f, B, T));
        t_mid = fmin(t_mid, rs_now() - t0);
    }
    rs_run_state_free(&rs);

    /* splice passes: tf only (identity and SAEs), so only, and a whole evaluation batch */
    double t_id = 1e30, t_tf = 1e30, t_so = 1e30, t_all = 1e30;
    int passes_all = 0;
    for (int which = 0; which < 4; which++) {
        rs_eval_ce_opts eo = {0};
        eo.skip_pos0 = 1;
        eo.tf = which == 0 || which == 1;
        eo.so = which == 2;
        float *mu = calloc((size_t)M * (size_t)d, sizeof(float));
        if (which == 3) eo.single = eo.tf = eo.so = eo.zero = eo.mean = 1;
        eo.mu = mu;
        rs_eval_ce c;
        TRY(rs_eval_ce_init(&c, &model, which == 0 ? &es_id : &es, &eo, B, T));
        for (int r = 0; r < reps; r++) {
            c.seconds_clean = c.seconds_splice = 0;
            double t0 = rs_now();
            TRY(rs_eval_ce_batch(&c, tok, B));
            double tot = rs_now() - t0;
            double *dst = which == 0 ? &t_id : which == 1 ? &t_tf : which == 2 ? &t_so : &t_all;
            *dst = fmin(*dst, which == 3 ? tot : c.seconds_splice);
        }
        passes_all = 1 + 3 + 3 * M;
        rs_eval_ce_free(&c);
        free(mu);
    }
    double tokens = (double)B * T;
    printf("model d=%d, %d layers, vocab %d; %d x %d tokens; set {%d,%d,%d}, %d latents, k=%d\n", d, L, V, B, T, layers[0],
           layers[1], layers[2], expansion * d, k);
    printf("fwd (resae forward pass, CE only, from tokens):  %10.0f tokens/s\n", tokens / t_fwd);
    printf("fwd_mid (from the cached stream after L%d):       %10.0f tokens/s\n", layers[0], tokens / t_mid);
    printf("tf splice, perfect SAEs (bookkeeping only):     %10.0f tokens/s  ratio to fwd_mid %.3f\n", tokens / t_id,
           t_mid / t_id);
    printf("tf splice, SAEs:                                %10.0f tokens/s  ratio to fwd_mid %.3f\n", tokens / t_tf,
           t_mid / t_tf);
    printf("so splice, SAEs:                                %10.0f tokens/s  ratio to fwd_mid %.3f\n", tokens / t_so,
           t_mid / t_so);
    printf("whole evaluation batch (%d passes):             %10.0f pass-tokens/s  ratio to fwd %.3f\n", passes_all,
           tokens * passes_all / t_all, (tokens * passes_all / t_all) / (tokens / t_fwd));
    printf("splice bookkeeping overhead: %.1f%% (limit 10%%)\n", 100.0 * (t_id / t_mid - 1));
    for (int m = 0; m < M; m++) rs_sae_free(&saes[m]);
    free(tok);
    free(ce);
    free(mid);
    rs_tokens_close(&tk);
    rs_model_free(&model);
    rs_mpi_end();
    return 0;
}
