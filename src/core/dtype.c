/* float16 storage: names of the storage types and the IEEE binary16 conversions, scalar (the
 * reference) and bulk (F16C when the CPU has it; identical results). */
#include "resae/dtype.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------------
 * names
 * ---------------------------------------------------------------------------------------------- */

const char *rs_dtype_name(enum rs_dtype dtype) {
    switch (dtype) {
    case RS_DTYPE_F32: return "float32";
    case RS_DTYPE_F16: return "float16";
    default: return "unknown";
    }
}

enum rs_dtype rs_dtype_from_name(const char *name) {
    if (!strcmp(name, "float32") || !strcmp(name, "f32")) return RS_DTYPE_F32;
    if (!strcmp(name, "float16") || !strcmp(name, "f16")) return RS_DTYPE_F16;
    return RS_DTYPE_INVALID;
}

/* ------------------------------------------------------------------------------------------------
 * scalar conversions (the reference the tests compare against)
 * ---------------------------------------------------------------------------------------------- */

static inline __attribute__((always_inline)) uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf, or NaN kept quiet with its top payload bits */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) {                                    /* below 2^-14: subnormal or zero */
        if (ax <= 0x33000000u) return (uint16_t)sign;          /* <= 2^-25 rounds (ties even) to 0 */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* value / 2^-24 = m * 2^(e-126) */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = ax - 0x38000000u; /* rebias the exponent from 127 to 15 */
    uint32_t q = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

uint16_t rs_f32_to_f16(float f) { return f32_to_f16(f); }

static inline __attribute__((always_inline)) float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    float f;
    if (e == 0) {
        f = (float)m * 0x1p-24f;
        memcpy(&x, &f, sizeof x);
        x |= sign;
    } else if (e == 31) {
        x = sign | 0x7f800000u | (m << 13);
    } else {
        x = sign | ((e + 112u) << 23) | (m << 13);
    }
    memcpy(&f, &x, sizeof f);
    return f;
}

float rs_f16_to_f32(uint16_t h) { return f16_to_f32(h); }

/* ------------------------------------------------------------------------------------------------
 * bulk conversions
 * ---------------------------------------------------------------------------------------------- */

/* Bulk conversion: the F16C instructions when the CPU has them (same rounding: nearest even),
 * the scalar code otherwise. The software path is the reference the tests compare against. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define RS_HAVE_F16C_PATH 1
static int cpu_has_f16c(void) {
    static int cached = -1;
    if (cached < 0) {
        unsigned a, b, c, d;
        cached = 0;
        if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) && (c & (1u << 28)) && (c & (1u << 27))) {
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            cached = (lo & 6u) == 6u; /* the OS saves the SSE and AVX state */
        }
        if (getenv("RESAE_NO_F16C")) cached = 0;
    }
    return cached;
}

__attribute__((target("avx,f16c"))) static void f32_to_f16_hw(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = f32_to_f16(src[i]);
}

__attribute__((target("avx,f16c"))) static void f16_to_f32_hw(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = f16_to_f32(src[i]);
}
#endif

void rs_f32_to_f16_n(uint16_t *dst, const float *src, size_t n) {
#ifdef RS_HAVE_F16C_PATH
    if (cpu_has_f16c()) {
        f32_to_f16_hw(dst, src, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_f16(src[i]);
}

void rs_f16_to_f32_n(float *dst, const uint16_t *src, size_t n) {
#ifdef RS_HAVE_F16C_PATH
    if (cpu_has_f16c()) {
        f16_to_f32_hw(dst, src, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(src[i]);
}

int rs_dtype_f16c(void) {
#ifdef RS_HAVE_F16C_PATH
    return cpu_has_f16c();
#else
    return 0;
#endif
}
