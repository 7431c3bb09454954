/* Shared by the fuzz harnesses (tests/fuzz/README.md): the libFuzzer entry point, and a private
 * scratch directory where a harness writes the input as the file its parser reads. */
#ifndef RESAE_FUZZ_H
#define RESAE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A directory of this process's own (created once, removed at exit), and PATH = dir/name. */
const char *fuzz_dir(void);
void fuzz_path(char *out, size_t n, const char *name);
/* Write data to dir/name; returns 0 on success. */
int fuzz_write(const char *name, const uint8_t *data, size_t size);
/* Quiet logging and a clean error record; call at the top of every input. */
void fuzz_begin(void);

#endif
