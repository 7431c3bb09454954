/* The one random-number toolkit: splitmix64 (seeding, hashing a counter) and xoshiro256** (streams).
 * Header-only so the hot loops inline it. The sequences are part of what a seed means: changing any
 * constant here changes every split, permutation and SAE initialisation. */
#ifndef RESAE_RNG_H
#define RESAE_RNG_H

#include <stdint.h>

/* Advance *state and return its next output (Steele, Lea, Flood 2014). */
static inline uint64_t rs_splitmix64_next(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The stateless form: the output for state x (= rs_splitmix64_next on a state of x - golden gamma). */
static inline uint64_t rs_splitmix64(uint64_t x) {
    uint64_t s = x;
    return rs_splitmix64_next(&s);
}

static inline uint64_t rs_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* xoshiro256** (Blackman, Vigna 2018): s must not be all zero (seed it with rs_splitmix64_next). */
static inline uint64_t rs_xoshiro256ss_next(uint64_t s[4]) {
    uint64_t out = rs_rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rs_rotl64(s[3], 45);
    return out;
}

/* A stream named by (seed, a, b, c): the state is splitmix64 of a hash of the four. */
static inline void rs_rng_stream(uint64_t s[4], uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t x = rs_splitmix64(seed ^ rs_splitmix64(a + 1) ^ rs_splitmix64(rs_splitmix64(b + 1) + c));
    for (int i = 0; i < 4; i++) s[i] = rs_splitmix64_next(&x);
}

/* Uniform in [0, n), n >= 1 (rejection, no modulo bias). */
static inline uint64_t rs_rng_below(uint64_t s[4], uint64_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, v;
    do v = rs_xoshiro256ss_next(s);
    while (v >= lim);
    return v % n;
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double rs_rng_unit(uint64_t s[4]) { return (double)(rs_xoshiro256ss_next(s) >> 11) * 0x1p-53; }

#endif
