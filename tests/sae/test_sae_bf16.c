/* The bf16 encoder product (train.encoder_precision = bf16, src/sae/sae_bf16.h): the oneDNN product
 * equals the exact product of the bf16-rounded operands (float32 accumulation error only) and
 * differs from the float32 product by bf16 rounding; the conversion rounds to nearest even and keeps
 * NaN and Inf; a short training run reaches the float32 run's FVU within 5%. Without oneDNN in the
 * build or AVX512_BF16 in the CPU it prints why and returns 77 (ctest: skipped). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/sae/sae_bf16.h"
#include "resae/log.h"
#include "resae/sae.h"
#include "sae/sae_synth.h"

static int fails;
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                             \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
            fails++;                                                                                         \
        }                                                                                                    \
    } while (0)

static uint64_t rng = 12345;
static double unif(void) {
    rng = synth_mix(rng);
    return ((double)(rng >> 11) + 0.5) * 0x1.0p-53;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* (b) the conversion on hand-picked values, scalar and bulk */
static void test_convert(void) {
    struct {
        uint32_t in;
        uint16_t out;
    } cases[] = {
        {0x3f800000u, 0x3f80}, /* 1.0 exact */
        {0x3f808000u, 0x3f80}, /* tie, even below: stays */
        {0x3f818000u, 0x3f82}, /* tie, odd below: rounds up to even */
        {0x3f808001u, 0x3f81}, /* just above a tie */
        {0x3f807fffu, 0x3f80}, /* just below a tie */
        {0xbf818000u, 0xbf82}, /* negative tie to even */
        {0x00000000u, 0x0000}, {0x80000000u, 0x8000}, /* +-0 */
        {0x00008000u, 0x0000}, /* subnormal tie to even (0) */
        {0x00018000u, 0x0002}, /* subnormal tie to even (up) */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to Inf */
        {0x7f7f0000u, 0x7f7f}, /* the largest bf16 */
        {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80}, /* +-Inf */
        {0x3fffffffu, 0x4000}, /* carry into the exponent */
    };
    int nc = (int)(sizeof cases / sizeof *cases);
    float src[32];
    uint16_t dst[32];
    for (int i = 0; i < nc; i++) src[i] = from_bits(cases[i].in);
    rs_bf16_convert(dst, src, (size_t)nc);
    for (int i = 0; i < nc; i++) {
        CHECK(rs_bf16_round(src[i]) == cases[i].out, "round(0x%08x) = 0x%04x, want 0x%04x", cases[i].in,
              rs_bf16_round(src[i]), cases[i].out);
        CHECK(dst[i] == cases[i].out, "bulk(0x%08x) = 0x%04x, want 0x%04x", cases[i].in, dst[i], cases[i].out);
    }
    /* NaNs (quiet, signalling whose payload lives only in the low half, negative) stay NaN */
    uint32_t nans[] = {0x7fc00000u, 0x7f800001u, 0x7fbfffffu, 0xffc00001u, 0x7fffffffu};
    int nn = (int)(sizeof nans / sizeof *nans);
    for (int i = 0; i < nn; i++) src[i] = from_bits(nans[i]);
    rs_bf16_convert(dst, src, (size_t)nn);
    for (int i = 0; i < nn; i++) {
        CHECK(isnan(rs_bf16_to_f32(rs_bf16_round(src[i]))), "round(NaN 0x%08x) is not NaN", nans[i]);
        CHECK(isnan(rs_bf16_to_f32(dst[i])), "bulk(NaN 0x%08x) = 0x%04x is not NaN", nans[i], dst[i]);
        CHECK((dst[i] >> 15) == (nans[i] >> 31), "NaN 0x%08x lost its sign", nans[i]);
    }
    /* random values: bulk = scalar, and the result is one of the two neighbours, the nearer one */
    float r[4099];
    uint16_t rb[4099];
    for (int i = 0; i < 4099; i++) r[i] = (float)((unif() - 0.5) * pow(2.0, 40 * unif() - 20));
    rs_bf16_convert(rb, r, 4099);
    int bad_bulk = 0, bad_near = 0;
    for (int i = 0; i < 4099; i++) {
        if (rb[i] != rs_bf16_round(r[i])) bad_bulk++;
        /* 8 significant bits: the nearest bf16 is within half an ulp, 2^-8 relative; and rounding the
         * other way (one bf16 ulp off) would be farther than the chosen value */
        double v = rs_bf16_to_f32(rb[i]), e = fabs(v - r[i]);
        double up = rs_bf16_to_f32((uint16_t)(rb[i] + 1)), dn = rs_bf16_to_f32((uint16_t)(rb[i] - 1));
        if (e > 0x1.0p-8 * fabs((double)r[i]) || fabs(up - r[i]) < e || fabs(dn - r[i]) < e) bad_near++;
    }
    CHECK(bad_bulk == 0, "%d random bulk conversions differ from the scalar one", bad_bulk);
    CHECK(bad_near == 0, "%d random conversions are not the nearest bf16", bad_near);
}

/* (a) the product on random shapes: chunk and partial chunk, ld = 2d */
static void test_gemm(int max_m, int n, int d) {
    rs_bf16_ctx *c = NULL;
    if (rs_bf16_ctx_create(&c, max_m, n, d)) {
        rs_err_print();
        fails++;
        return;
    }
    size_t ld = 2 * (size_t)d;
    float *X = malloc((size_t)max_m * ld * sizeof(float)), *W = malloc((size_t)n * (size_t)d * sizeof(float));
    float *pre = malloc((size_t)max_m * (size_t)n * sizeof(float));
    for (size_t i = 0; i < (size_t)max_m * ld; i++) X[i] = (float)(2 * unif() - 1);
    for (size_t i = 0; i < (size_t)n * (size_t)d; i++) W[i] = (float)((2 * unif() - 1) / sqrt((double)d));
    int ms[2] = {max_m, max_m / 3 + 1};
    for (int pass = 0; pass < 3; pass++) {
        int m = ms[pass % 2];
        if (pass == 2) { /* an update: the bf16 copy of W must follow it */
            for (size_t i = 0; i < (size_t)n * (size_t)d; i += 7) W[i] *= -1.5f;
            rs_bf16_mark_dirty(c);
        }
        const float *Xc = X + (size_t)d; /* the xc half of [G | xc] rows */
        if (rs_bf16_encoder_gemm(c, m, n, d, Xc, ld, W, pre)) {
            rs_err_print();
            fails++;
            break;
        }
        double worst = 0, dev_fp32 = 0, scale_fp32 = 0;
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n; j++) {
                double exact_b = 0, abs_b = 0, exact_f = 0;
                for (int i = 0; i < d; i++) {
                    float a = Xc[(size_t)r * ld + (size_t)i], b = W[(size_t)j * (size_t)d + (size_t)i];
                    double ab = (double)rs_bf16_to_f32(rs_bf16_round(a)) * (double)rs_bf16_to_f32(rs_bf16_round(b));
                    exact_b += ab;
                    abs_b += fabs(ab);
                    exact_f += (double)a * (double)b;
                }
                double got = pre[(size_t)r * (size_t)n + (size_t)j];
                double e = fabs(got - exact_b) / (abs_b > 0 ? abs_b : 1);
                if (e > worst) worst = e;
                dev_fp32 += fabs(got - exact_f);
                scale_fp32 += abs_b;
            }
        double rel_fp32 = dev_fp32 / scale_fp32;
        printf("gemm %d x %d x %d (ld %zu): max |pre - bf16 exact| / sum|ab| = %.2e; mean |pre - fp32 exact| / "
               "sum|ab| = %.2e\n", m, n, d, ld, worst, rel_fp32);
        CHECK(worst <= 1e-5, "bf16 product off the exact product of the rounded operands: %.3e > 1e-5", worst);
        /* the rounding happened: bf16 has 8 significant bits, so each term moves by ~2^-9 relative and
         * the sum by ~2^-9 / sqrt(d) of sum |ab|; an fp32 product would be near 1e-7 */
        CHECK(rel_fp32 > 2e-5, "product is within %.2e of the fp32 one: no bf16 rounding took place", rel_fp32);
        CHECK(rel_fp32 < 0x1.0p-8, "product %.2e away from the fp32 one: more than bf16 rounding", rel_fp32);
    }
    free(X);
    free(W);
    free(pre);
    rs_bf16_ctx_free(c);
}

/* (c) a short training run, fp32 vs bf16 */
static double train_fvu(enum rs_sae_precision prec) {
    synth s;
    if (synth_init(&s, 32, 48, 3, 0.05, 7)) return NAN;
    rs_sae sae;
    if (rs_sae_init(&sae, 32, 96, 4)) return NAN;
    rs_sae_config cfg;
    rs_sae_config_default(&cfg, 32, 96, 4);
    cfg.batch = 256;
    cfg.steps = 300;
    cfg.lr = 4e-3;
    cfg.warmup_steps = 20;
    cfg.dead_tokens = 256 * 20;
    cfg.seed = 3;
    cfg.init_tokens = 1024;
    cfg.chunk_rows = 100; /* two chunks and a partial one per step */
    cfg.encoder_precision = prec;
    rs_sae_metrics met;
    rs_sae_source src = {synth_read, &s};
    double fvu = NAN;
    if (rs_sae_train(&sae, &met, &cfg, src, MPI_COMM_NULL)) rs_err_print();
    else fvu = met.fvu;
    printf("train %s: fvu %.5f L0 %.2f dead %.3f\n", rs_sae_precision_names[prec], met.fvu, met.l0, met.dead_frac);
    rs_sae_free(&sae);
    synth_free(&s);
    return fvu;
}

static void test_train(void) {
    rs_sae_config a, b;
    rs_sae_config_default(&a, 32, 96, 4);
    b = a;
    b.encoder_precision = RS_SAE_PREC_BF16;
    CHECK(rs_sae_config_hash(&a) != rs_sae_config_hash(&b), "encoder_precision bf16 not in the config hash");
    double f32 = train_fvu(RS_SAE_PREC_FP32), bf = train_fvu(RS_SAE_PREC_BF16);
    CHECK(isfinite(f32) && isfinite(bf), "training failed");
    CHECK(fabs(bf - f32) <= 0.05 * f32, "bf16 FVU %.5f not within 5%% of the fp32 FVU %.5f", bf, f32);
}

int main(void) {
    rs_log_init(0);
    if (rs_bf16_check()) {
        printf("skipped: %s\n", rs_err_msg());
        return 77;
    }
    test_convert();
    test_gemm(37, 53, 29);
    test_gemm(64, 256, 96);
    test_gemm(130, 100, 512);
    test_train();
    printf("%s\n", fails ? "FAILED" : "ok");
    return fails ? 1 : 0;
}
