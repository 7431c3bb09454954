/* Checkpoints in one process: a run stopped (stop flag) and resumed ends bitwise equal to an
 * uninterrupted run; resume refuses another configuration naming the field; a corrupted file is
 * refused by its checksum; a truncated one as truncated. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "resae/log.h"
#include "resae/sae.h"
#include "sae/sae_synth.h"

#include "testlib.h"


enum { D = 16, N = 64, K = 4 };

static synth g_s;
static volatile sig_atomic_t g_stop = 0;
static int64_t g_stop_after = -1;

/* raises the stop flag once a given number of rows has been read */
static rs_err read_and_maybe_stop(void *ctx, float *rows, int64_t first, int n) {
    if (g_stop_after >= 0 && first + n >= g_stop_after) g_stop = 1;
    return synth_read(ctx, rows, first, n);
}

static void config(rs_sae_config *c, const char *ckpt) {
    rs_sae_config_default(c, D, N, K);
    c->batch = 128;
    c->steps = 40;
    c->lr = 3e-3;
    c->warmup_steps = 5;
    c->dead_tokens = 128 * 4;
    c->seed = 4;
    c->init_tokens = 256;
    c->ckpt_path = ckpt;
    c->ckpt_every = 7;
    c->stop = &g_stop;
}

int main(void) {
    rs_log_init(0);
    const char *outdir = getenv("RESAE_TEST_OUT");
    char path[4096], path2[4096];
    snprintf(path, sizeof path, "%s/sae_ckpt_test.bin", outdir ? outdir : "/tmp");
    snprintf(path2, sizeof path2, "%s/sae_ckpt_test2.bin", outdir ? outdir : "/tmp");
    unlink(path);
    unlink(path2);
    if (synth_init(&g_s, D, 24, 2, 0.05, 3)) return 1;
    rs_sae_source src = {read_and_maybe_stop, &g_s};
    rs_sae_config cfg;
    rs_sae_metrics met, met2;

    /* uninterrupted reference (no checkpoint) */
    rs_sae a, b;
    if (rs_sae_init(&a, D, N, K) || rs_sae_init(&b, D, N, K)) return 1;
    config(&cfg, NULL);
    if (rs_sae_train(&a, &met, &cfg, src, MPI_COMM_NULL)) return rs_err_print(), 1;

    /* stopped after step 16 (between checkpoints), then resumed */
    config(&cfg, path);
    g_stop_after = 16 * 128;
    rs_err e = rs_sae_train(&b, &met2, &cfg, src, MPI_COMM_NULL);
    CHECK(e == RS_ERR_INTERRUPTED, "stop flag: expected RS_ERR_INTERRUPTED, got %d (%s)", e, rs_err_msg());
    CHECK(access(path, F_OK) == 0, "no checkpoint written on stop");
    g_stop = 0;
    g_stop_after = -1;
    memset(b.slab, 0, b.n_params * sizeof(float));
    e = rs_sae_train(&b, &met2, &cfg, src, MPI_COMM_NULL);
    CHECK(e == RS_OK, "resume failed: %s", rs_err_msg());
    CHECK(met2.resumed_from == 16, "resumed from step %d, expected 16", met2.resumed_from);
    CHECK(!memcmp(a.slab, b.slab, a.n_params * sizeof(float)), "resumed weights differ from the uninterrupted run");
    CHECK(met.fvu == met2.fvu && met.l0 == met2.l0, "resumed metrics differ: fvu %.9g vs %.9g", met2.fvu, met.fvu);
    printf("stop/resume: bitwise equal weights, fvu %.5f\n", met2.fvu);

    /* refusal of another configuration, naming the field */
    config(&cfg, path);
    cfg.lr = 1e-3;
    e = rs_sae_train(&b, &met2, &cfg, src, MPI_COMM_NULL);
    CHECK(e == RS_ERR_CONFIG && strstr(rs_err_msg(), "lr ="), "lr mismatch: got %d: %s", e, rs_err_msg());
    printf("refused: %s\n", rs_err_msg());
    config(&cfg, path);
    cfg.dead_tokens = 999;
    e = rs_sae_train(&b, &met2, &cfg, src, MPI_COMM_NULL);
    CHECK(e == RS_ERR_CONFIG && strstr(rs_err_msg(), "dead_tokens"), "dead_tokens mismatch: got %d: %s", e, rs_err_msg());
    {
        rs_sae c;
        if (rs_sae_init(&c, D, N, K + 1)) return 1;
        rs_sae_config_default(&cfg, D, N, K + 1);
        config(&cfg, path);
        cfg.k = K + 1;
        e = rs_sae_train(&c, &met2, &cfg, src, MPI_COMM_NULL);
        CHECK(e == RS_ERR_CONFIG && strstr(rs_err_msg(), "k = 4"), "k mismatch: got %d: %s", e, rs_err_msg());
        printf("refused: %s\n", rs_err_msg());
        rs_sae_free(&c);
    }

    /* corruption: flip one byte in the middle */
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, path2);
    if (system(cmd)) return 1;
    FILE *f = fopen(path2, "r+b");
    if (!f) return 1;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, sz / 2, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, sz / 2, SEEK_SET);
    fputc(ch ^ 0x10, f);
    fclose(f);
    config(&cfg, path2);
    e = rs_sae_train(&b, &met2, &cfg, src, MPI_COMM_NULL);
    CHECK(e == RS_ERR_FORMAT && strstr(rs_err_msg(), "checksum"), "corrupt file: got %d: %s", e, rs_err_msg());
    printf("refused: %s\n", rs_err_msg());
    /* truncation */
    if (truncate(path2, sz - 100)) return 1;
    e = rs_sae_train(&b, &met2, &cfg, src, MPI_COMM_NULL);
    CHECK(e == RS_ERR_FORMAT && strstr(rs_err_msg(), "truncated"), "truncated file: got %d: %s", e, rs_err_msg());
    printf("refused: %s\n", rs_err_msg());

    unlink(path);
    unlink(path2);
    rs_sae_free(&a);
    rs_sae_free(&b);
    synth_free(&g_s);
    printf("%s\n", rs_check_fails ? "FAILED" : "ok");
    return rs_check_fails ? 1 : 0;
}
