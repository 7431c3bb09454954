/* The trainer against the PyTorch reference (tests/reference/sae_ref.py, fixture
 * tests/data/sae/sae_ref.bin, computed in float64 with dense autograd):
 *   - geometric-median b_dec init of the first batch;
 *   - loss parts and raw gradients of step 0 (same parameters, same batch, half the latents dead);
 *   - three full steps (projection, Adam, renormalization, schedule, dead bookkeeping): losses,
 *     raw gradients, fired counters (exact) and parameters after every step.
 * Tolerances (float32 implementation vs float64 reference): losses 2e-6 relative; gradients
 * 1e-5 of each tensor's max |g|; parameters 2e-5 absolute (lr = 1e-2, unit-scale weights). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/log.h"
#include "resae/sae.h"

#include "testlib.h"


typedef struct fixture {
    int d, n, k, B, steps, k_aux, gm_iters;
    double lr, alpha, beta1, beta2, eps, decay_frac;
    int64_t warmup, dead_tokens;
    double *x;      // (steps B, d)
    double *slab0;  // (np)
    int64_t *since0;
    double *gm;     // (d)
    double *loss;   // (steps, 3)
    double *raw;    // (steps, np)
    double *slab;   // (steps, np)
    int64_t *since; // (steps, n)
} fixture;

static int rd(FILE *f, void *p, size_t size, size_t n) { return fread(p, size, n, f) == n; }

static int load(fixture *fx, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s (regenerate with tests/reference/sae_ref.py)\n", path);
        return 1;
    }
    char magic[8];
    int32_t iv[8];
    double dv[6];
    int64_t lv[2];
    if (!rd(f, magic, 1, 8) || memcmp(magic, "RSAEREF1", 8) || !rd(f, iv, 4, 8) || iv[0] != 1 || !rd(f, dv, 8, 6) ||
        !rd(f, lv, 8, 2)) {
        fprintf(stderr, "%s: bad header\n", path);
        fclose(f);
        return 1;
    }
    fx->d = iv[1], fx->n = iv[2], fx->k = iv[3], fx->B = iv[4], fx->steps = iv[5], fx->k_aux = iv[6];
    fx->gm_iters = iv[7];
    fx->lr = dv[0], fx->alpha = dv[1], fx->beta1 = dv[2], fx->beta2 = dv[3], fx->eps = dv[4], fx->decay_frac = dv[5];
    fx->warmup = lv[0], fx->dead_tokens = lv[1];
    size_t np = rs_sae_slab_size(fx->d, fx->n), S = (size_t)fx->steps, n = (size_t)fx->n;
    fx->x = malloc(sizeof(double) * S * fx->B * fx->d);
    fx->slab0 = malloc(sizeof(double) * np);
    fx->since0 = malloc(sizeof(int64_t) * n);
    fx->gm = malloc(sizeof(double) * fx->d);
    fx->loss = malloc(sizeof(double) * S * 3);
    fx->raw = malloc(sizeof(double) * S * np);
    fx->slab = malloc(sizeof(double) * S * np);
    fx->since = malloc(sizeof(int64_t) * S * n);
    int ok = rd(f, fx->x, 8, S * fx->B * fx->d) && rd(f, fx->slab0, 8, np) && rd(f, fx->since0, 8, n) &&
             rd(f, fx->gm, 8, fx->d);
    for (size_t s = 0; ok && s < S; s++)
        ok = rd(f, fx->loss + 3 * s, 8, 3) && rd(f, fx->raw + s * np, 8, np) && rd(f, fx->slab + s * np, 8, np) &&
             rd(f, fx->since + s * n, 8, n);
    ok = ok && fgetc(f) == EOF;
    fclose(f);
    if (!ok) fprintf(stderr, "%s: truncated or oversized fixture\n", path);
    return !ok;
}

static rs_err fx_read(void *ctx, float *rows, int64_t first, int n) {
    fixture *fx = ctx;
    if (first + n > (int64_t)fx->steps * fx->B) RS_FAIL(RS_ERR_INVAL, "fixture has no row %lld", (long long)(first + n - 1));
    for (size_t i = 0; i < (size_t)n * fx->d; i++) rows[i] = (float)fx->x[(size_t)first * fx->d + i];
    return RS_OK;
}

static const char *names[] = {"W_enc", "b_enc", "W_dec", "b_dec"};

/* per tensor: max |a - b| / max |b| (rel) or max |a - b| (abs) */
static void compare(const char *what, const float *a, const double *b, int d, int n, double tol, int relative) {
    size_t nd = (size_t)n * d, off[] = {0, nd, nd + n, 2 * nd + n, 2 * nd + n + d};
    for (int t = 0; t < 4; t++) {
        rs_check_diff df = rs_check_diff_fd(a + off[t], b + off[t], off[t + 1] - off[t]);
        double e = relative ? df.rel : df.max_abs;
        printf("  %s %-5s: %s err %.2e (max |ref| %.2e)\n", what, names[t], relative ? "rel" : "abs", e, df.max_ref);
        CHECK(e <= tol, "%s %s differs from the PyTorch reference: %.3e > %.1e", what, names[t], e, tol);
    }
}

static void setup(rs_sae_config *cfg, const fixture *fx) {
    rs_sae_config_default(cfg, fx->d, fx->n, fx->k);
    cfg->batch = fx->B;
    cfg->steps = fx->steps;
    cfg->lr = fx->lr;
    cfg->warmup_steps = fx->warmup;
    cfg->decay_frac = fx->decay_frac;
    cfg->alpha_aux = fx->alpha;
    cfg->dead_tokens = fx->dead_tokens;
    cfg->k_aux = fx->k_aux;
    cfg->beta1 = fx->beta1;
    cfg->beta2 = fx->beta2;
    cfg->eps = fx->eps;
    cfg->init_tokens = fx->B;
    cfg->geomedian_iters = fx->gm_iters;
}

int main(int argc, char **argv) {
    rs_log_init(0);
    char path[4096];
    const char *data = getenv("RESAE_TEST_DATA");
    if (argc > 1) snprintf(path, sizeof path, "%s", argv[1]);
    else snprintf(path, sizeof path, "%s/sae/sae_ref.bin", data ? data : "tests/data");
    fixture fx;
    if (load(&fx, path)) return 1;
    int d = fx.d, n = fx.n;
    size_t np = rs_sae_slab_size(d, n);
    rs_sae sae;
    rs_sae_config cfg;
    rs_sae_trainer tr;
    rs_sae_source src = {fx_read, &fx};
    if (rs_sae_init(&sae, d, n, fx.k)) return 1;
    setup(&cfg, &fx);
    printf("fixture: d=%d n=%d k=%d batch=%d steps=%d\n", d, n, fx.k, fx.B, fx.steps);

    /* ---- init: tied unit rows, zero b_enc, geometric median b_dec ---- */
    if (rs_sae_trainer_init(&tr, &sae, &cfg, MPI_COMM_NULL) || rs_sae_trainer_init_params(&tr, src)) {
        rs_err_print();
        return 1;
    }
    double gerr = 0, nerr = 0;
    for (int i = 0; i < d; i++) gerr = fmax(gerr, fabs(sae.p.b_dec[i] - fx.gm[i]));
    for (int j = 0; j < n; j++) {
        double s = 0;
        for (int i = 0; i < d; i++) s += (double)sae.p.W_dec[j * d + i] * sae.p.W_dec[j * d + i];
        nerr = fmax(nerr, fabs(sqrt(s) - 1));
    }
    printf("init: geometric median max err %.2e, decoder row norm max err %.2e\n", gerr, nerr);
    CHECK(gerr < 1e-5, "geometric median differs from the reference by %.3e", gerr);
    CHECK(nerr < 1e-6, "decoder rows not unit norm (%.3e)", nerr);
    CHECK(!memcmp(sae.p.W_enc, sae.p.W_dec, sizeof(float) * n * d), "init is not tied (W_enc != W_dec)");
    for (int j = 0; j < n; j++) CHECK(sae.p.b_enc[j] == 0.0f, "b_enc[%d] = %g after init", j, sae.p.b_enc[j]);
    rs_sae_trainer_free(&tr);

    /* ---- three steps from the reference parameters ---- */
    if (rs_sae_trainer_init(&tr, &sae, &cfg, MPI_COMM_NULL)) return 1;
    for (size_t i = 0; i < np; i++) sae.slab[i] = (float)fx.slab0[i];
    memcpy(tr.since_fired, fx.since0, sizeof(int64_t) * n);
    for (int s = 0; s < fx.steps; s++) {
        rs_sae_step_stats st;
        if (rs_sae_trainer_step(&tr, &st, src)) {
            rs_err_print();
            return 1;
        }
        const double *L = fx.loss + 3 * s;
        printf("step %d: loss %.7f (ref %.7f) fvu %.7f (ref %.7f) auxk %.6f (ref %.6f) dead %d\n", s, st.loss, L[0],
               st.fvu, L[1], st.auxk, L[2], st.n_dead);
        CHECK(fabs(st.loss - L[0]) <= 2e-6 * fabs(L[0]), "step %d loss %.9g vs %.9g", s, st.loss, L[0]);
        CHECK(fabs(st.fvu - L[1]) <= 2e-6 * fabs(L[1]), "step %d fvu %.9g vs %.9g", s, st.fvu, L[1]);
        CHECK(fabs(st.auxk - L[2]) <= 2e-6 * fabs(L[2]), "step %d auxk %.9g vs %.9g", s, st.auxk, L[2]);
        CHECK(st.n_dead > 0 && L[2] > 0, "step %d: the fixture must exercise AuxK", s);
        /* after a step t->g is not the raw gradient (projected, or on one rank only the biases); the raw
         * one is recomputed below */
        compare("params", sae.slab, fx.slab + (size_t)s * np, d, n, 2e-5, 0);
        int same = !memcmp(tr.since_fired, fx.since + (size_t)s * n, sizeof(int64_t) * n);
        CHECK(same, "step %d: fired counters differ from the reference", s);
    }
    rs_sae_trainer_free(&tr);

    /* ---- raw gradients of every step at the reference parameters of that step ---- */
    if (rs_sae_trainer_init(&tr, &sae, &cfg, MPI_COMM_NULL)) return 1;
    float *xb = malloc(sizeof(float) * fx.B * d);
    for (int s = 0; s < fx.steps; s++) {
        const double *p = s == 0 ? fx.slab0 : fx.slab + (size_t)(s - 1) * np;
        const int64_t *sn = s == 0 ? fx.since0 : fx.since + (size_t)(s - 1) * n;
        for (size_t i = 0; i < np; i++) sae.slab[i] = (float)p[i];
        memcpy(tr.since_fired, sn, sizeof(int64_t) * n);
        if (fx_read(&fx, xb, (int64_t)s * fx.B, fx.B)) return 1;
        rs_sae_step_stats st;
        if (rs_sae_trainer_loss_grad(&tr, &st, xb, fx.B)) {
            rs_err_print();
            return 1;
        }
        printf("step %d gradient at the reference parameters:\n", s);
        compare("grad", tr.grad_slab, fx.raw + (size_t)s * np, d, n, 1e-5, 1);
    }
    free(xb);
    rs_sae_trainer_free(&tr);
    rs_sae_free(&sae);
    free(fx.x), free(fx.slab0), free(fx.since0), free(fx.gm), free(fx.loss), free(fx.raw), free(fx.slab), free(fx.since);
    printf("%s\n", rs_check_fails ? "FAILED" : "ok");
    return rs_check_fails ? 1 : 0;
}
