/* The harnesses' scratch directory and per-input setup (fuzz.h). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "resae/err.h"
#include "resae/log.h"

static char g_dir[256];

static void remove_dir(void) {
    char cmd[400];
    if (!g_dir[0]) return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd)) fprintf(stderr, "fuzz: could not remove %s\n", g_dir);
}

const char *fuzz_dir(void) {
    if (!g_dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/resae-fuzz-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(g_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(remove_dir);
    }
    return g_dir;
}

void fuzz_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", fuzz_dir(), name); }

int fuzz_write(const char *name, const uint8_t *data, size_t size) {
    char path[512];
    fuzz_path(path, sizeof path, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    return fclose(f) || w != size ? -1 : 0;
}

void fuzz_begin(void) {
    static int once;
    if (!once) {
        once = 1;
        rs_log_init(0);
        rs_log_set_level(-1); /* nothing: the harness checks return codes, not messages */
    }
    rs_err_clear();
}
