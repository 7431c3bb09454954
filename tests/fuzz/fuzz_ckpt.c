/* SAE checkpoints: any bytes as the checkpoint of a small SAE (d = 8, 16 latents, k = 2, the shape of
 * the committed seed). A load either succeeds (the bytes were a whole, checksummed checkpoint) or fails
 * naming the file; it never reads past what it checked. FUZZ_CKPT_SEED=DIR writes the seed and exits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "resae/sae.h"

static void config(rs_sae_config *c) {
    rs_sae_config_default(c, 8, 16, 2);
    c->batch = 32;
    c->steps = 10;
    c->lr = 1e-3;
    c->warmup_steps = 2;
    c->dead_tokens = 64;
    c->init_tokens = 32;
    c->seed = 1;
}

static int with_trainer(int (*fn)(rs_sae_trainer *, const char *), const char *path) {
    rs_sae sae;
    if (rs_sae_init(&sae, 8, 16, 2)) return -1;
    rs_sae_config c;
    config(&c);
    rs_sae_trainer t;
    int rc = -1;
    if (rs_sae_trainer_init(&t, &sae, &c, MPI_COMM_NULL) == RS_OK) {
        rc = fn(&t, path);
        rs_sae_trainer_free(&t);
    }
    rs_sae_free(&sae);
    rs_err_clear();
    return rc;
}

static int load(rs_sae_trainer *t, const char *path) { return rs_sae_ckpt_load(t, path) == RS_OK; }
static int save(rs_sae_trainer *t, const char *path) { return rs_sae_ckpt_save(t, path) == RS_OK ? 0 : -1; }

__attribute__((constructor)) static void maybe_write_seed(void) {
    const char *dir = getenv("FUZZ_CKPT_SEED");
    if (!dir) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/seed.ckpt", dir);
    int rc = with_trainer(save, path);
    printf("%s %s\n", rc ? "could not write" : "wrote", path);
    exit(rc ? 1 : 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    if (fuzz_write("sae.ckpt", data, size)) return 0;
    char path[512];
    fuzz_path(path, sizeof path, "sae.ckpt");
    (void)with_trainer(load, path);
    return 0;
}
