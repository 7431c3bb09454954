/* TopK SAE training throughput (C side of tests/bench/sae_bench.sh).
 *   sae_bench DIR [--d 512] [--n 8192] [--k 64] [--batch 4096] [--steps 40] [--pool 32768] [--write]
 *             [--encoder-precision fp32|bf16]
 * Trains on a pool of synthetic rows (cycled), reports tokens/s, the per-phase split, the encoder
 * GEMM's share and GFLOP/s, and a standalone SGEMM of the same shape. With --write it first
 * stores the pool (DIR/pool.f32, (pool, d)) and the initial parameters (DIR/init.f32, the slab)
 * for the PyTorch reference. Final metrics go to DIR/c_result.txt. */
#include <cblas.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "resae/log.h"
#include "resae/sae.h"
#include "resae/util.h"
#include "sae/sae_synth.h"

typedef struct pool {
    const float *rows;
    int64_t n;
    int d;
} pool;

static rs_err pool_read(void *ctx, float *out, int64_t first, int n) {
    pool *p = ctx;
    for (int r = 0; r < n; r++)
        memcpy(out + (size_t)r * p->d, p->rows + (size_t)((first + r) % p->n) * p->d, sizeof(float) * (size_t)p->d);
    return RS_OK;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double proc_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int write_file(const char *path, const void *buf, size_t bytes) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    int bad = fwrite(buf, 1, bytes, f) != bytes;
    return fclose(f) || bad;
}

int main(int argc, char **argv) {
    rs_log_init(0);
    if (argc < 2) {
        fprintf(stderr, "usage: sae_bench DIR [--d D] [--n N] [--k K] [--batch B] [--steps S] [--pool P] [--write] "
                "[--encoder-precision fp32|bf16]\n");
        return 2;
    }
    const char *dir = argv[1];
    int d = 512, n = 8192, k = 64, batch = 4096, steps = 40, wr = 0, chunk = 1024, prec = RS_SAE_PREC_FP32;
    int64_t npool = 32768;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--write")) wr = 1;
        else if (i + 1 < argc && !strcmp(argv[i], "--d")) d = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--n")) n = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--k")) k = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--batch")) batch = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--steps")) steps = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--chunk")) chunk = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--pool")) npool = atoll(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--encoder-precision")) {
            const char *v = argv[++i];
            for (prec = 0; prec < RS_SAE_PREC_COUNT && strcmp(v, rs_sae_precision_names[prec]); prec++) {}
            if (prec == RS_SAE_PREC_COUNT) {
                fprintf(stderr, "--encoder-precision: '%s' is not fp32 or bf16\n", v);
                return 2;
            }
        }
        else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    /* data: 2n true directions, 32 active per token */
    synth s;
    if (synth_init(&s, d, 2 * n, 32, 0.05, 11)) return 1;
    float *rows = malloc(sizeof(float) * (size_t)npool * (size_t)d);
    if (!rows) return 1;
    synth_read(&s, rows, 0, (int)npool);
    pool p = {rows, npool, d};
    rs_sae_source src = {pool_read, &p};

    rs_sae sae;
    if (rs_sae_init(&sae, d, n, k)) return 1;
    rs_sae_config cfg;
    rs_sae_config_default(&cfg, d, n, k);
    cfg.batch = batch;
    cfg.steps = steps;
    cfg.warmup_steps = steps / 10;
    cfg.seed = 1;
    cfg.chunk_rows = chunk;
    cfg.encoder_precision = (enum rs_sae_precision)prec;
    rs_sae_trainer t;
    if (rs_sae_trainer_init(&t, &sae, &cfg, MPI_COMM_NULL) || rs_sae_trainer_init_params(&t, src)) {
        rs_err_print();
        return 1;
    }
    char path[4096];
    if (wr) {
        snprintf(path, sizeof path, "%s/pool.f32", dir);
        if (write_file(path, rows, sizeof(float) * (size_t)npool * (size_t)d)) return 1;
        snprintf(path, sizeof path, "%s/init.f32", dir);
        if (write_file(path, sae.slab, sizeof(float) * sae.n_params)) return 1;
    }
    /* standalone SGEMM of the encoder's shape */
    int reps = 3;
    float *A = calloc((size_t)batch * d, sizeof(float)), *C = malloc(sizeof(float) * (size_t)batch * n);
    if (!A || !C) return 1;
    for (size_t i = 0; i < (size_t)batch * d; i++) A[i] = rows[i % ((size_t)npool * d)];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, n, d, 1.0f, A, d, sae.p.W_enc, d, 0.0f, C, n);
    double tg = rs_now(), tgc = cpu_now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, n, d, 1.0f, A, d, sae.p.W_enc, d, 0.0f, C, n);
    double gemm_s = (rs_now() - tg) / reps, gemm_cpu = (cpu_now() - tgc) / reps;
    double flop = 2.0 * batch * (double)n * d;
    free(A);
    free(C);

    rs_sae_step_stats st;
    double fvu_tail = 0;
    int tail = steps / 10 > 0 ? steps / 10 : 1, warm = 2;
    double t0 = 0, tg0 = 0, pc0 = 0;
    for (int sidx = 0; sidx < steps; sidx++) {
        if (sidx == warm) {
            t0 = rs_now();
            pc0 = proc_cpu_now();
            tg0 = t.t_gemm;
        }
        if (rs_sae_trainer_step(&t, &st, src)) {
            rs_err_print();
            return 1;
        }
        if (sidx >= steps - tail) fvu_tail += st.fvu / tail;
        if (sidx % 10 == 0 || sidx == steps - 1)
            fprintf(stderr, "C step %d: fvu %.4f auxk %.4f L0 %.1f\n", sidx, st.fvu, st.auxk, st.l0);
    }
    double el = rs_now() - t0, pcpu = proc_cpu_now() - pc0;
    int timed = steps - warm;
    double step_s = el / timed, step_cpu = pcpu / timed;
    /* CPU time of this thread per phase (only meaningful with 1 BLAS thread) */
    double g_cpu = t.t_gemm - tg0 > 0 ? (t.t_gemm - tg0) / timed : 0;
    double rest = (t.t_prep + t.t_select + t.t_decode + t.t_backward + t.t_update) / steps;
    double g_all = t.t_gemm / steps;
    printf("C: encoder %s\n", rs_sae_precision_names[prec]);
    printf("C: %d steps of %d tokens, %.1f ms/step wall, %.0f tokens/s (%.0f tokens per CPU second), final fvu "
           "(mean last %d steps) %.4f\n", steps, batch, 1e3 * step_s, batch / step_s, batch / step_cpu, tail, fvu_tail);
    printf("C CPU time per step: encoder GEMM %.1f ms (%.1f GFLOP/s), everything else %.1f ms "
           "(input %.1f, select %.1f, decode %.1f, backward %.1f, update %.1f); step / GEMM = %.2fx; GEMM share %.1f%%\n",
           1e3 * g_all, flop / g_all * 1e-9, 1e3 * rest, 1e3 * t.t_prep / steps, 1e3 * t.t_select / steps, 1e3 * t.t_decode / steps,
           1e3 * t.t_backward / steps, 1e3 * t.t_update / steps, (g_all + rest) / g_all, 100 * g_all / (g_all + rest));
    printf("standalone SGEMM %dx%dx%d: %.1f GFLOP/s by CPU time (%.1f by wall time); the step's GEMM ran at "
           "%.0f%% of it\n", batch, n, d, flop / gemm_cpu * 1e-9, flop / gemm_s * 1e-9, 100 * gemm_cpu / g_all);
    (void)g_cpu;
    /* changes meant to be exact must leave this unchanged */
    printf("final parameters: FNV-1a %016llx\n", (unsigned long long)rs_hash64(RS_HASH64_INIT, sae.slab, sizeof(float) * sae.n_params));
    snprintf(path, sizeof path, "%s/c_result.txt", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "tokens_per_cpu_s %.3f\n", batch / step_cpu);
        fprintf(f, "tokens_per_s %.3f\nfvu %.6f\ngemm_gflops %.3f\nstep_over_gemm %.4f\ngemm_share %.4f\n",
                batch / step_s, fvu_tail, flop / gemm_cpu * 1e-9, (g_all + rest) / g_all, g_all / (g_all + rest));
        fclose(f);
    }
    rs_sae_trainer_free(&t);
    rs_sae_free(&sae);
    synth_free(&s);
    free(rows);
    return 0;
}
