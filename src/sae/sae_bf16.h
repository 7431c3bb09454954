/* Optional reduced-precision encoder product of the SAE trainer (train.encoder_precision = bf16):
 * pre = X W^T with X and W rounded to bfloat16 (round to nearest even) and the sums accumulated in
 * float32, by oneDNN's matmul (Debian's OpenBLAS 0.3.21 has no sbgemm). Internal to src/sae. */
#ifndef RESAE_SAE_BF16_H
#define RESAE_SAE_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "resae/err.h"

/* fp32 -> bf16, round to nearest even; a NaN stays a (quiet) NaN with its sign, +-Inf stays +-Inf,
 * finite values beyond the largest bf16 round to +-Inf, subnormals round like any other value. */
static inline uint16_t rs_bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float rs_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* dst[i] = rs_bf16_round(src[i]) (vectorized where the CPU allows). */
void rs_bf16_convert(uint16_t *dst, const float *src, size_t count);

/* 1 when built with oneDNN (RESAE_HAVE_DNNL). */
int rs_bf16_built(void);
/* Whether the CPU has AVX512_BF16 and the OS saves the AVX-512 state; the CPU's brand string into
 * cpu (may be NULL). */
int rs_bf16_cpu_ok(char *cpu, size_t cpu_len);
/* RS_OK when bf16 encoder products can run here; else RS_ERR_UNSUPPORTED naming
 * train.encoder_precision, the reason (no oneDNN in the build, or the CPU) and the fix. */
rs_err rs_bf16_check(void);
/* oneDNN's thread count: OMP_NUM_THREADS when set, else OpenBLAS's (resae/blas.h). */
int rs_bf16_threads(void);

typedef struct rs_bf16_ctx rs_bf16_ctx;
/* Context for products of up to max_m rows against an (n, d) weight matrix. */
rs_err rs_bf16_ctx_create(rs_bf16_ctx **out, int max_m, int n, int d);
void rs_bf16_ctx_free(rs_bf16_ctx *c);
/* The weights changed: the next product converts W again (otherwise the bf16 copy is reused). */
void rs_bf16_mark_dirty(rs_bf16_ctx *c);
/* pre (m, n, row stride n) = bf16(X) bf16(W)^T in float32; X (m, d) with row stride ldx, W (n, d)
 * row-major (converted when dirty or on first use). m <= max_m. */
rs_err rs_bf16_encoder_gemm(rs_bf16_ctx *c, int m, int n, int d, const float *X, size_t ldx, const float *W,
                            float *pre);

#endif
