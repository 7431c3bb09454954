/* Storage element types of activations (config store.activation_dtype, the activation store) and
 * the IEEE 754 binary16 conversions behind float16 storage. */
#ifndef RESAE_DTYPE_H
#define RESAE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

enum rs_dtype { RS_DTYPE_INVALID = -1, RS_DTYPE_F32 = 0, RS_DTYPE_F16 = 1, RS_DTYPE_COUNT = 2 };

/* "float32" / "float16" (as numpy names them); rs_dtype_from_name returns RS_DTYPE_INVALID if unknown. */
const char *rs_dtype_name(enum rs_dtype dtype);
enum rs_dtype rs_dtype_from_name(const char *name);

/* IEEE 754 binary16 conversion: round to nearest, ties to even; overflow gives inf, NaN stays NaN. */
uint16_t rs_f32_to_f16(float f);
float rs_f16_to_f32(uint16_t h);
#define RS_F16_MAX 65504.0f
/* The same conversions over arrays, with the CPU's F16C instructions when present (identical
 * results; RESAE_NO_F16C=1 forces the scalar code). dst and src must not overlap. */
void rs_f32_to_f16_n(uint16_t *dst, const float *src, size_t n);
void rs_f16_to_f32_n(float *dst, const uint16_t *src, size_t n);
/* 1 if the bulk conversions use F16C (the CPU has AVX and F16C, the OS saves the AVX state, and
 * RESAE_NO_F16C is unset): callers with their own AVX kernels choose their path with it. */
int rs_dtype_f16c(void);

#endif
