#include "resae/util.h"

#include "resae/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

rs_err rs_read_file(char **out, size_t *len, const char *path, size_t max_bytes) {
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) RS_FAIL(RS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        fclose(f);
        RS_FAIL(RS_ERR_IO, "%s: not a regular file", path);
    }
    if ((size_t)st.st_size > max_bytes) {
        fclose(f);
        RS_FAIL(RS_ERR_FORMAT, "%s: file is %lld bytes, more than the %zu allowed", path, (long long)st.st_size,
                max_bytes);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        fclose(f);
        RS_FAIL(RS_ERR_NOMEM, "%s: out of memory reading %lld bytes", path, (long long)st.st_size);
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n != (size_t)st.st_size) {
        free(buf);
        RS_FAIL(RS_ERR_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return RS_OK;
}

uint64_t rs_hash64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Each lane step h -> ((h ^ w) * M) ^ (that >> 29) is a bijection of h for fixed w and of w for fixed
 * h, so a changed word leaves its lane changed to the end; the final mix is a bijection of each lane. */
uint64_t rs_checksum64(const void *data, size_t n) {
    const unsigned char *p = data;
    const uint64_t M = 0x9e3779b97f4a7c15ULL;
    uint64_t h[4] = {0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL, 0xa4093822299f31d0ULL, 0x082efa98ec4e6c89ULL};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int l = 0; l < 4; l++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * (size_t)l, 8);
            h[l] = (h[l] ^ w) * M;
            h[l] ^= h[l] >> 29;
        }
    for (int l = 0; i < n; i++, l = (l + 1) & 3) {
        h[l] = (h[l] ^ p[i]) * M;
        h[l] ^= h[l] >> 29;
    }
    uint64_t x = h[0] ^ ((h[1] << 16) | (h[1] >> 48)) ^ ((h[2] << 32) | (h[2] >> 32)) ^ ((h[3] << 48) | (h[3] >> 16));
    x ^= (uint64_t)n;
    x = (x ^ (x >> 33)) * 0xff51afd7ed558ccdULL;
    x = (x ^ (x >> 33)) * 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

void *rs_calloc_aligned(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) return NULL;
    size_t bytes = n * size;
    bytes = (bytes + 63) & ~(size_t)63;
    if (!bytes) bytes = 64;
    void *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

rs_err rs_path_join(char *out, size_t cap, const char *dir, const char *name) {
    int n = dir && *dir ? snprintf(out, cap, "%s/%s", dir, name) : snprintf(out, cap, "%s", name);
    if (n < 0 || (size_t)n >= cap) {
        if (cap) out[0] = '\0';
        RS_FAIL(RS_ERR_INVAL, "path '%s/%s' is longer than %zu bytes; use a shorter run directory", dir ? dir : "",
                name, cap ? cap - 1 : 0);
    }
    return RS_OK;
}

int rs_test_hold(const char *stage, volatile sig_atomic_t *stop) {
    static char held[8][16]; /* the stages this process has held in */
    const char *spec = getenv("RESAE_TEST_HOLD");
    if (!spec || !*spec || !stop) return 0;
    const char *rc = getenv("SLURM_RESTART_COUNT");
    long want = rc && *rc ? strtol(rc, NULL, 10) : 0;
    const char *p = spec;
    for (long i = 0; i < want && p; i++) {
        p = strchr(p, ',');
        if (p) p++;
    }
    size_t n = p ? strcspn(p, ",") : 0;
    if (!n || n != strlen(stage) || strncmp(p, stage, n) != 0) return 0;
    int slot = 0;
    while (slot < 8 && held[slot][0] && strcmp(held[slot], stage) != 0) slot++;
    if (slot == 8 || held[slot][0]) return 0;
    snprintf(held[slot], sizeof held[slot], "%s", stage);
    const char *ts = getenv("RESAE_TEST_HOLD_SECONDS");
    double limit = ts && *ts ? strtod(ts, NULL) : 600;
    RS_INFO("test hold (RESAE_TEST_HOLD): in stage %s until a stop request arrives (at most %.0f s)", stage, limit);
    struct timespec nap = {0, 20 * 1000 * 1000};
    for (double waited = 0; !*stop && waited < limit; waited += 0.02) nanosleep(&nap, NULL);
    RS_INFO("test hold: %s", *stop ? "stop request received" : "no stop request; going on");
    return 1;
}
