/* Checkpoints in one process: a run stopped (stop flag) and resumed ends bitwise equal to an
 * uninterrupted run; resume refuses another configuration naming the field; a checkpoint with a
 * flipped byte (caught by its checksum) or a truncated tail is moved aside to <path>.damaged and the
 * SAE trains from the start, ending bitwise equal to the uninterrupted run. */
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

    /* damage: one flipped byte in the middle, then a truncated tail */
    char cmd[9000], aside[4200];
    snprintf(aside, sizeof aside, "%s.damaged", path2);
    for (int pass = 0; pass < 2; pass++) {
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, path2);
        unlink(aside);
        if (system(cmd)) return 1;
        FILE *f = fopen(path2, "r+b");
        if (!f) return 1;
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        if (pass == 0) {
            fseek(f, sz / 2, SEEK_SET);
            int ch = fgetc(f);
            fseek(f, sz / 2, SEEK_SET);
            fputc(ch ^ 0x10, f);
        }
        fclose(f);
        if (pass == 1 && truncate(path2, sz - 100)) return 1;
        config(&cfg, path2);
        memset(b.slab, 0, b.n_params * sizeof(float));
        e = rs_sae_train(&b, &met2, &cfg, src, MPI_COMM_NULL);
        const char *what = pass ? "truncated" : "flipped byte";
        CHECK(e == RS_OK, "%s: training failed: %s", what, rs_err_msg());
        CHECK(met2.resumed_from == -1, "%s: resumed from step %d instead of starting over", what, met2.resumed_from);
        CHECK(access(aside, F_OK) == 0, "%s: the damaged checkpoint was not moved to %s", what, aside);
        CHECK(!memcmp(a.slab, b.slab, a.n_params * sizeof(float)), "%s: weights differ from the uninterrupted run", what);
        printf("%s checkpoint: set aside, trained from the start, bitwise equal weights\n", what);
        unlink(aside);
    }

    unlink(path);
    unlink(path2);
    rs_sae_free(&a);
    rs_sae_free(&b);
    synth_free(&g_s);
    printf("%s\n", rs_check_fails ? "FAILED" : "ok");
    return rs_check_fails ? 1 : 0;
}
