/* The harnesses' main() where libFuzzer is not linked in (gcc, the default build): runs every seed
 * of the corpus, then RUNS mutations of each (bit flips, interesting bytes, insertions, deletions,
 * truncations, duplicated spans; a fixed xorshift stream, so a failure reproduces), and prints the
 * count. A crash or a sanitizer report ends the process: the test fails.
 *   fuzz_NAME [-runs=N] [-seed=S] FILE_OR_DIR...        (defaults: 500 mutations per seed, seed 1) */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fuzz.h"

static uint64_t g_rng;

static uint64_t next(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(size > 0 ? (size_t)size : 1);
    if (buf && size > 0 && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = size > 0 ? (size_t)size : 0;
    return buf;
}

/* One to four mutations of seed (n bytes) into out (capacity n + 64); returns the new length. */
static size_t mutate(unsigned char *out, const unsigned char *seed, size_t n) {
    static const unsigned char interesting[] = {0, 1, 0x7f, 0x80, 0xff, '"', '{', '}', ':', '\n', '-', '9'};
    memcpy(out, seed, n);
    size_t len = n;
    int k = 1 + (int)(next() % 4);
    for (int i = 0; i < k; i++) {
        size_t at = len ? (size_t)(next() % len) : 0;
        switch (next() % 6) {
        case 0:
            if (len) out[at] ^= (unsigned char)(1u << (next() % 8));
            break;
        case 1:
            if (len) out[at] = interesting[next() % sizeof interesting];
            break;
        case 2: /* insert a byte */
            if (len < n + 64) {
                memmove(out + at + 1, out + at, len - at);
                out[at] = (unsigned char)next();
                len++;
            }
            break;
        case 3: /* delete a byte */
            if (len) {
                memmove(out + at, out + at + 1, len - at - 1);
                len--;
            }
            break;
        case 4: /* truncate */
            len = at;
            break;
        default: { /* overwrite a span with a copy of another */
            if (len < 2) break;
            size_t from = (size_t)(next() % len), span = 1 + (size_t)(next() % 16);
            if (from + span > len) span = len - from;
            if (at + span > len) span = len - at;
            memmove(out + at, out + from, span);
        }
        }
    }
    return len;
}

static long g_inputs, g_seeds;

static void run_seed(const char *path, long runs) {
    size_t n = 0;
    unsigned char *seed = read_all(path, &n);
    if (!seed) {
        fprintf(stderr, "fuzz: cannot read %s\n", path);
        exit(2);
    }
    g_seeds++;
    LLVMFuzzerTestOneInput(seed, n);
    g_inputs++;
    unsigned char *buf = malloc(n + 64);
    for (long r = 0; buf && r < runs; r++, g_inputs++) {
        size_t len = mutate(buf, seed, n);
        LLVMFuzzerTestOneInput(buf, len);
    }
    free(buf);
    free(seed);
}

static void run_path(const char *path, long runs) {
    struct stat s;
    if (stat(path, &s)) {
        fprintf(stderr, "fuzz: %s does not exist\n", path);
        exit(2);
    }
    if (!S_ISDIR(s.st_mode)) {
        run_seed(path, runs);
        return;
    }
    struct dirent **names = NULL;
    int m = scandir(path, &names, NULL, alphasort); /* sorted: the same order everywhere */
    for (int i = 0; i < m; i++) {
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", path, names[i]->d_name);
        struct stat t;
        if (names[i]->d_name[0] != '.' && !stat(sub, &t) && S_ISREG(t.st_mode)) run_seed(sub, runs);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv) {
    long runs = 500;
    g_rng = 1;
    int paths = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "-runs=", 6)) runs = atol(argv[i] + 6);
        else if (!strncmp(argv[i], "-seed=", 6)) g_rng = strtoull(argv[i] + 6, NULL, 10) | 1;
        else {
            run_path(argv[i], runs);
            paths++;
        }
    }
    if (!paths) {
        fprintf(stderr, "usage: %s [-runs=N] [-seed=S] FILE_OR_DIR...\n", argv[0]);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("%s: %ld inputs (%ld seeds, %ld mutations each) in %.1f s, 0 crashes\n", argv[0], g_inputs, g_seeds, runs, s);
    return 0;
}
