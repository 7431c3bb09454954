/* Small shared helpers: files, hashing, aligned allocation. */
#ifndef RESAE_UTIL_H
#define RESAE_UTIL_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "resae/err.h"

/* Read a whole file into a NUL-terminated buffer (caller frees). Refuses files over max_bytes. */
rs_err rs_read_file(char **out, size_t *len, const char *path, size_t max_bytes);
/* 64-bit FNV-1a, chainable: h = rs_hash64(h, data, n); start with RS_HASH64_INIT. */
#define RS_HASH64_INIT 0xcbf29ce484222325ULL
uint64_t rs_hash64(uint64_t h, const void *data, size_t n);
/* A fast 64-bit checksum of n bytes (four interleaved multiply-xorshift lanes, about 8 bytes a cycle):
 * any change confined to one 8-byte word changes it; not a cryptographic hash. */
uint64_t rs_checksum64(const void *data, size_t n);
/* out = "dir/name" (just name when dir is empty); fails with RS_ERR_INVAL naming both when the result
 * does not fit cap bytes, so no path is ever silently truncated. */
rs_err rs_path_join(char *out, size_t cap, const char *dir, const char *name);
/* 64-byte aligned, zeroed allocation; free with free(). Returns NULL on failure or overflow. */
void *rs_calloc_aligned(size_t n, size_t size);

/* A hook for the Slurm tests (tests/slurm/slurm_jobs.sh), inert unless RESAE_TEST_HOLD is set: its
 * comma-separated entry i (i = SLURM_RESTART_COUNT, 0 when unset) names the stage (harvest, train or
 * evaluate; "-" for none) in which this process, at its first hold point of that stage, waits for a
 * stop request (*stop set by SIGUSR1/SIGTERM; at most RESAE_TEST_HOLD_SECONDS, default 600), so that
 * a time limit's signal lands inside that stage in that allocation. Each caller's hold point comes
 * after some of the stage's work is done. Returns 1 when it waited. */
int rs_test_hold(const char *stage, volatile sig_atomic_t *stop);

#endif
