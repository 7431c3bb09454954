/* Evaluation kernels: exactness checks that need no tolerance, and rank partitioning.
 *
 * usage: test_eval MODEL_DIR TOKENS_H5   (mpirun at 1, 2, 4 ranks)
 * On the small fixture model (d = 32, 4 layers) and 16 of its token sequences:
 *   identity   perfect SAEs (the identity, and a TopK SAE built to reconstruct exactly, n = 2d,
 *              k = d, scale 2) for raw and resae with random affine maps: dCE = 0 and KL = 0 exactly
 *              in single, tf and so; EV = 1 and MSE = 0 exactly in target space, one-step and chain
 *              (the chain reproduces h)
 *   first      random SAEs: at the first layer raw and resae give bitwise the same reconstruction
 *              metrics and single-layer CE; with one layer, tf = so = single bitwise
 *   redundancy blocked, rank-partitioned redundancy vs a double brute force (1e-6), with a block size
 *              that divides nothing
 *   partition  CE over rank shares of the sequences equals the serial value within 1e-12 relative
 *              (whole sequences go through the same batches); reconstruction metrics over rank shares
 *              of the rows within 1e-8 (EV absolute, MSE relative; chunk boundaries move, and OpenBLAS's SGEMM result
 *              for a row depends on the shape of the block it is in, at float rounding level) with
 *              L0 and dead fractions equal */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/config.h"
#include "resae/eval.h"
#include "resae/model.h"
#include "resae/mpi_util.h"
#include "resae/tokens.h"

#include "testlib.h"

static int g_rank, g_size;

#define TRY(e)                                                     \
    do {                                                           \
        if (e) {                                                   \
            rs_err_print();                                        \
            MPI_Abort(MPI_COMM_WORLD, 1);                          \
        }                                                          \
    } while (0)

enum { NSEQ = 16, BATCH = 4 };

static uint64_t g_rng = 0x1234567;
static double rnd(void) { /* uniform (-1, 1), the same stream on every rank */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return ((double)(g_rng >> 11) / 9007199254740992.0) * 2 - 1;
}

static rs_model g_model;
static int32_t *g_tok; /* (NSEQ, T) */
static int g_T, g_d;
static float *g_h[4];  /* (NSEQ * T, d) clean stream after each block */

static rs_err capture(void *ctx, int layer, float *h, int B, int T, int d) {
    int64_t s0 = *(int64_t *)ctx;
    if (layer >= 0) memcpy(g_h[layer] + (size_t)s0 * (size_t)T * (size_t)d, h, sizeof(float) * (size_t)B * (size_t)T * (size_t)d);
    return RS_OK;
}

static void setup(const char *model_dir, const char *tokens) {
    TRY(rs_model_load(&g_model, model_dir, RS_WEIGHTS_MAPPED));
    rs_tokens tk;
    rs_tokens_opts o = {0};
    TRY(rs_tokens_open(&tk, tokens, &o));
    g_T = tk.seq_len;
    g_d = g_model.cfg.d_model;
    g_tok = malloc(sizeof(int32_t) * NSEQ * (size_t)g_T);
    TRY(rs_tokens_read(g_tok, &tk, 0, NSEQ));
    rs_tokens_close(&tk);
    rs_run_state rs;
    TRY(rs_run_state_init(&rs, &g_model, NSEQ, g_T));
    for (int l = 0; l < 4; l++) g_h[l] = malloc(sizeof(float) * NSEQ * (size_t)g_T * (size_t)g_d);
    int64_t s0 = 0;
    rs_forward_args a = RS_FORWARD_ARGS_INIT;
    a.tokens = g_tok;
    a.hook = capture;
    a.hook_ctx = &s0;
    a.stop_layer = 3;
    TRY(rs_model_forward(&g_model, &rs, &a, NSEQ, g_T));
    rs_run_state_free(&rs);
}

static void random_sae(rs_sae *s, int n, int k, double bscale) {
    TRY(rs_sae_init(s, g_d, n, k));
    for (int i = 0; i < n; i++) {
        double nrm = 0;
        for (int j = 0; j < g_d; j++) {
            float v = (float)rnd();
            s->p.W_dec[(size_t)i * (size_t)g_d + (size_t)j] = v;
            nrm += (double)v * v;
        }
        for (int j = 0; j < g_d; j++) {
            s->p.W_dec[(size_t)i * (size_t)g_d + (size_t)j] /= (float)sqrt(nrm);
            s->p.W_enc[(size_t)i * (size_t)g_d + (size_t)j] = s->p.W_dec[(size_t)i * (size_t)g_d + (size_t)j];
        }
        s->p.b_enc[i] = (float)(0.1 * rnd());
    }
    for (int j = 0; j < g_d; j++) s->p.b_dec[j] = (float)(bscale * rnd());
}

/* n = 2d latents +-e_i, k = d: every positive pre-activation is kept and decodes exactly. */
static void identity_sae(rs_sae *s) {
    TRY(rs_sae_init(s, g_d, 2 * g_d, g_d));
    for (int i = 0; i < g_d; i++) {
        s->p.W_enc[(size_t)i * (size_t)g_d + (size_t)i] = 1;
        s->p.W_enc[(size_t)(i + g_d) * (size_t)g_d + (size_t)i] = -1;
        s->p.W_dec[(size_t)i * (size_t)g_d + (size_t)i] = 1;
        s->p.W_dec[(size_t)(i + g_d) * (size_t)g_d + (size_t)i] = -1;
    }
}

static void random_map(rs_affine_map *m) {
    size_t d = (size_t)g_d;
    double *A = malloc(sizeof(double) * d * d), *mx = malloc(sizeof(double) * d), *my = malloc(sizeof(double) * d);
    for (size_t i = 0; i < d * d; i++) A[i] = (i % (d + 1) == 0 ? 0.8 : 0) + 0.05 * rnd();
    for (size_t i = 0; i < d; i++) mx[i] = 0.1 * rnd(), my[i] = 0.1 * rnd();
    memset(m, 0, sizeof *m);
    TRY(rs_affine_map_set(m, g_d, g_d, A, mx, my));
    free(A);
    free(mx);
    free(my);
}

static void make_set(rs_eval_set *es, int variant, int M, const int *layers, const rs_sae *saes, double scale,
                     const rs_affine_map *maps) {
    memset(es, 0, sizeof *es);
    es->variant = variant;
    es->M = M;
    es->d = g_d;
    for (int m = 0; m < M; m++) {
        es->L[m].layer = layers[m];
        es->L[m].sae = saes ? &saes[m] : NULL;
        es->L[m].scale = scale;
        es->L[m].map = variant == RS_VARIANT_RESAE && m > 0 ? &maps[m] : NULL;
    }
}

static void means(float *mu, const rs_eval_set *es) {
    for (int m = 0; m < es->M; m++)
        for (int i = 0; i < g_d; i++) {
            double s = 0;
            for (int64_t r = 0; r < (int64_t)NSEQ * g_T; r++) s += g_h[es->L[m].layer][(size_t)r * (size_t)g_d + (size_t)i];
            mu[(size_t)m * (size_t)g_d + (size_t)i] = (float)(s / ((double)NSEQ * g_T));
        }
}

/* CE over sequences [s0, s1), serially in batches. */
static void run_ce(rs_eval_ce_result *out, const rs_eval_set *es, int skip0, int64_t s0, int64_t s1, MPI_Comm comm) {
    rs_eval_ce_opts o = {.single = 1, .tf = 1, .so = 1, .zero = 1, .mean = 1, .skip_pos0 = skip0};
    float *mu = malloc(sizeof(float) * (size_t)es->M * (size_t)g_d);
    means(mu, es);
    o.mu = mu;
    rs_eval_ce c;
    TRY(rs_eval_ce_init(&c, &g_model, es, &o, BATCH, g_T));
    for (int64_t s = s0; s < s1; s += BATCH) {
        int nb = (int)(s1 - s < BATCH ? s1 - s : BATCH);
        TRY(rs_eval_ce_batch(&c, g_tok + (size_t)s * (size_t)g_T, nb));
    }
    TRY(rs_eval_ce_finish(out, &c, comm));
    rs_eval_ce_free(&c);
    free(mu);
}

static void run_recon(rs_eval_recon *out, const rs_eval_set *es, int64_t r0, int64_t r1, MPI_Comm comm) {
    int M = es->M;
    double *mu = calloc((size_t)M * (size_t)g_d, sizeof(double));
    for (int m = 0; m < M; m++)
        for (int64_t r = 0; r < (int64_t)NSEQ * g_T; r++)
            for (int i = 0; i < g_d; i++) mu[(size_t)m * (size_t)g_d + (size_t)i] += g_h[es->L[m].layer][(size_t)r * (size_t)g_d + (size_t)i];
    for (size_t i = 0; i < (size_t)M * (size_t)g_d; i++) mu[i] /= (double)NSEQ * g_T;
    rs_eval_recon_acc a;
    enum { CH = 50 };
    TRY(rs_eval_recon_init(&a, es, mu, CH));
    for (int64_t r = r0; r < r1; r += CH) {
        int64_t n = r1 - r < CH ? r1 - r : CH;
        const float *h[RS_EVAL_MAX_LAYERS];
        for (int m = 0; m < M; m++) h[m] = g_h[es->L[m].layer] + (size_t)r * (size_t)g_d;
        TRY(rs_eval_recon_add(&a, h, n));
    }
    TRY(rs_eval_recon_finish(out, &a, comm));
    rs_eval_recon_free(&a);
    free(mu);
}

static void my_share(int64_t *lo, int64_t *hi, int64_t n) {
    *lo = n * g_rank / g_size;
    *hi = n * (g_rank + 1) / g_size;
}

static void case_identity(void) {
    static const int layers[3] = {0, 1, 3};
    rs_affine_map maps[3];
    memset(maps, 0, sizeof maps);
    random_map(&maps[1]);
    random_map(&maps[2]);
    rs_sae ids[3];
    for (int m = 0; m < 3; m++) identity_sae(&ids[m]);
    int64_t lo, hi;
    for (int which = 0; which < 2; which++)
        for (int v = 0; v < 2; v++)
            for (int skip0 = 0; skip0 < 2; skip0++) {
                rs_eval_set es;
                make_set(&es, v, 3, layers, which ? ids : NULL, which ? 2.0 : 1.0, maps);
                rs_eval_ce_result r[RS_PASS_SINGLE + 9];
                my_share(&lo, &hi, NSEQ);
                run_ce(r, &es, skip0, lo, hi, MPI_COMM_WORLD);
                double clean = r[RS_PASS_CLEAN].ce;
                for (int p = RS_PASS_TF; p < RS_PASS_SINGLE + 3; p++) {
                    CHECK(r[p].ran && r[p].ce == clean && r[p].kl == 0.0,
                          "identity %s, %s, skip0 %d, pass %d: dCE %.3e, KL %.3e (must be exactly 0)",
                          which ? "TopK" : "function", rs_variant_names[v], skip0, p, r[p].ce - clean, r[p].kl);
                }
                CHECK(r[RS_PASS_CLEAN].n == (int64_t)NSEQ * (g_T - 1 - skip0), "clean predictions %lld",
                      (long long)r[RS_PASS_CLEAN].n);
                rs_eval_recon rec[3];
                my_share(&lo, &hi, (int64_t)NSEQ * g_T);
                run_recon(rec, &es, lo, hi, MPI_COMM_WORLD);
                for (int m = 0; m < 3; m++)
                    CHECK(rec[m].ev_target == 1.0 && rec[m].ev_onestep == 1.0 && rec[m].ev_chain == 1.0 && rec[m].mse == 0.0,
                          "identity %s %s layer %d: EV %.17g %.17g %.17g, MSE %g (must be exact)", which ? "TopK" : "function",
                          rs_variant_names[v], layers[m], rec[m].ev_target, rec[m].ev_onestep, rec[m].ev_chain, rec[m].mse);
                if (which)
                    for (int m = 0; m < 3; m++) CHECK(rec[m].l0 <= g_d && rec[m].l0 > g_d - 1, "identity SAE L0 %g", rec[m].l0);
            }
    for (int m = 0; m < 3; m++) {
        rs_sae_free(&ids[m]);
        rs_affine_map_free(&maps[m]);
    }
}

static void case_first(void) {
    static const int layers[3] = {1, 2, 3};
    rs_affine_map maps[3];
    memset(maps, 0, sizeof maps);
    random_map(&maps[1]);
    random_map(&maps[2]);
    rs_sae saes[3];
    for (int m = 0; m < 3; m++) random_sae(&saes[m], 4 * g_d, 6, 0.1);
    int64_t lo, hi;
    rs_eval_set raw, res;
    make_set(&raw, RS_VARIANT_RAW, 3, layers, saes, 0.7, maps);
    make_set(&res, RS_VARIANT_RESAE, 3, layers, saes, 0.7, maps);
    rs_eval_ce_result a[RS_PASS_SINGLE + 9], b[RS_PASS_SINGLE + 9];
    my_share(&lo, &hi, NSEQ);
    run_ce(a, &raw, 1, lo, hi, MPI_COMM_WORLD);
    run_ce(b, &res, 1, lo, hi, MPI_COMM_WORLD);
    CHECK(a[RS_PASS_SINGLE].ce == b[RS_PASS_SINGLE].ce && a[RS_PASS_SINGLE].kl == b[RS_PASS_SINGLE].kl,
          "first layer single CE raw %.17g vs resae %.17g", a[RS_PASS_SINGLE].ce, b[RS_PASS_SINGLE].ce);
    CHECK(a[RS_PASS_SINGLE].ce != a[RS_PASS_CLEAN].ce, "a random SAE should change the CE");
    CHECK(a[RS_PASS_TF].ce != b[RS_PASS_TF].ce, "raw and resae joint passes should differ with random maps");
    rs_eval_recon ra[3], rb[3];
    my_share(&lo, &hi, (int64_t)NSEQ * g_T);
    run_recon(ra, &raw, lo, hi, MPI_COMM_WORLD);
    run_recon(rb, &res, lo, hi, MPI_COMM_WORLD);
    CHECK(!memcmp(&ra[0], &rb[0], sizeof ra[0]), "first-layer reconstruction metrics differ between raw and resae");
    CHECK(ra[0].ev_target < 1 && ra[0].l0 > 0, "random SAE metrics");
    /* one layer: tf = so = single */
    for (int v = 0; v < 2; v++) {
        rs_eval_set one;
        make_set(&one, v, 1, layers + 1, saes + 1, 0.7, maps);
        rs_eval_ce_result r[RS_PASS_SINGLE + 3];
        my_share(&lo, &hi, NSEQ);
        run_ce(r, &one, 0, lo, hi, MPI_COMM_WORLD);
        CHECK(r[RS_PASS_TF].ce == r[RS_PASS_SO].ce && r[RS_PASS_TF].ce == r[RS_PASS_SINGLE].ce &&
                  r[RS_PASS_TF].kl == r[RS_PASS_SO].kl && r[RS_PASS_TF].kl == r[RS_PASS_SINGLE].kl,
              "one layer (%s): tf %.17g, so %.17g, single %.17g must agree", rs_variant_names[v], r[RS_PASS_TF].ce,
              r[RS_PASS_SO].ce, r[RS_PASS_SINGLE].ce);
        /* joint ablation over one layer = the single ablation */
        CHECK(r[RS_PASS_SINGLE + 1].ce > r[RS_PASS_CLEAN].ce - 10, "zero ablation ran");
    }
    for (int m = 0; m < 3; m++) {
        rs_sae_free(&saes[m]);
        rs_affine_map_free(&maps[m]);
    }
}

static void case_redundancy(void) {
    int d = g_d, na = 77, nb = 53;
    float *Wa = malloc(sizeof(float) * (size_t)na * (size_t)d), *Wb = malloc(sizeof(float) * (size_t)nb * (size_t)d);
    for (int i = 0; i < na * d; i++) Wa[i] = (float)rnd();
    for (int i = 0; i < nb * d; i++) Wb[i] = (float)rnd();
    memcpy(Wb, Wa + 5 * d, sizeof(float) * (size_t)d); /* an exact duplicate: max cos 1 */
    for (int i = 0; i < d; i++) Wb[d + i] = -2 * Wa[7 * d + i]; /* an anti-parallel row: max |cos| 1 */
    double bm = 0, ba = 0;
    for (int j = 0; j < nb; j++) {
        double mx = -2, ma = 0;
        for (int i = 0; i < na; i++) {
            double dot = 0, n1 = 0, n2 = 0;
            for (int q = 0; q < d; q++) {
                dot += (double)Wb[j * d + q] * Wa[i * d + q];
                n1 += (double)Wb[j * d + q] * Wb[j * d + q];
                n2 += (double)Wa[i * d + q] * Wa[i * d + q];
            }
            double c = dot / sqrt(n1 * n2);
            if (c > mx) mx = c;
            if (fabs(c) > ma) ma = fabs(c);
        }
        bm += mx;
        ba += ma;
    }
    bm /= nb;
    ba /= nb;
    for (int block = 1; block <= 64; block = block * 3 + 4) {
        double m1, m2;
        TRY(rs_eval_redundancy(&m1, &m2, Wb, nb, Wa, na, d, block, MPI_COMM_WORLD));
        CHECK(fabs(m1 - bm) < 1e-6 && fabs(m2 - ba) < 1e-6, "block %d: redundancy %.9f %.9f vs brute force %.9f %.9f",
              block, m1, m2, bm, ba);
    }
    free(Wa);
    free(Wb);
}

static void case_partition(void) {
    static const int layers[3] = {0, 2, 3};
    rs_affine_map maps[3];
    memset(maps, 0, sizeof maps);
    random_map(&maps[1]);
    random_map(&maps[2]);
    rs_sae saes[3];
    for (int m = 0; m < 3; m++) random_sae(&saes[m], 4 * g_d, 5, 0.1);
    for (int v = 0; v < 2; v++) {
        rs_eval_set es;
        make_set(&es, v, 3, layers, saes, 1.3, maps);
        int64_t lo, hi;
        rs_eval_ce_result par[RS_PASS_SINGLE + 9], ser[RS_PASS_SINGLE + 9];
        my_share(&lo, &hi, NSEQ);
        run_ce(par, &es, 1, lo, hi, MPI_COMM_WORLD);
        run_ce(ser, &es, 1, 0, NSEQ, MPI_COMM_NULL);
        for (int p = 0; p < RS_PASS_SINGLE + 9; p++)
            CHECK(rs_check_rel(par[p].ce, ser[p].ce) < 1e-12 && fabs(par[p].kl - ser[p].kl) < 1e-12 &&
                      par[p].n == ser[p].n,
                  "%s pass %d: CE %.17g (%d ranks) vs %.17g (serial)", rs_variant_names[v], p, par[p].ce, g_size, ser[p].ce);
        rs_eval_recon rp[3], rsr[3];
        my_share(&lo, &hi, (int64_t)NSEQ * g_T);
        run_recon(rp, &es, lo, hi, MPI_COMM_WORLD);
        run_recon(rsr, &es, 0, (int64_t)NSEQ * g_T, MPI_COMM_NULL);
        for (int m = 0; m < 3; m++)
            CHECK(fabs(rp[m].ev_target - rsr[m].ev_target) < 1e-8 && fabs(rp[m].ev_chain - rsr[m].ev_chain) < 1e-8 &&
                      rs_check_rel(rp[m].mse, rsr[m].mse) < 1e-8 && rp[m].l0 == rsr[m].l0 &&
                      rp[m].dead_frac == rsr[m].dead_frac,
                  "%s layer %d: recon over %d ranks differs from serial: EV %.3e %.3e, MSE %.3e, L0 %g/%g, dead %g/%g",
                  rs_variant_names[v], layers[m], g_size, rs_check_rel(rp[m].ev_target, rsr[m].ev_target),
                  rs_check_rel(rp[m].ev_chain, rsr[m].ev_chain), rs_check_rel(rp[m].mse, rsr[m].mse), rp[m].l0,
                  rsr[m].l0, rp[m].dead_frac, rsr[m].dead_frac);
    }
    for (int m = 0; m < 3; m++) {
        rs_sae_free(&saes[m]);
        rs_affine_map_free(&maps[m]);
    }
}

int main(int argc, char **argv) {
    if (rs_mpi_begin(&argc, &argv)) {
        rs_err_print();
        return 1;
    }
    g_rank = rs_check_rank = rs_mpi_rank();
    g_size = rs_mpi_size();
    if (argc < 4) {
        if (g_rank == 0) fprintf(stderr, "usage: test_eval identity|first|redundancy|partition MODEL_DIR TOKENS_H5\n");
        rs_mpi_end();
        return 2;
    }
    setup(argv[2], argv[3]);
    const char *which = argv[1];
    int ran = 1;
    if (!strcmp(which, "identity")) case_identity();
    else if (!strcmp(which, "first")) case_first();
    else if (!strcmp(which, "redundancy")) case_redundancy();
    else if (!strcmp(which, "partition")) case_partition();
    else ran = 0;
    int total = 0;
    MPI_Allreduce(&rs_check_fails, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (g_rank == 0) printf("eval %s at %d rank(s): %s\n", which, g_size, !ran ? "USAGE" : total ? "FAILED" : "ok");
    rs_model_free(&g_model);
    free(g_tok);
    for (int l = 0; l < 4; l++) free(g_h[l]);
    rs_mpi_end();
    return (!ran || total) ? 1 : 0;
}
