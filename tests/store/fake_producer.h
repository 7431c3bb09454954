/* A deterministic stand-in for the model: value(seq, pos, layer, dim) from a hash, so any rank can
 * recompute what belongs at any row. Values lie in [-4, 4] + 0.25 * (layer + 2) (a nonzero mean per
 * layer, well inside float16 range). Optional: a per-batch sleep (to let kills land mid-run), a NaN
 * at one (seq, pos, layer), a failure at the n-th call, a call counter, and handing the layers to the
 * driver's put instead of filling its buffers. */
#ifndef RESAE_TEST_FAKE_PRODUCER_H
#define RESAE_TEST_FAKE_PRODUCER_H

#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>

#include "resae/harvest.h"

static inline uint64_t fake_mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline float fake_value(int64_t seq, int pos, int layer, int dim) {
    uint64_t h = fake_mix(fake_mix(fake_mix(fake_mix((uint64_t)seq) ^ (uint64_t)pos) ^ (uint64_t)(layer + 2)) ^
                          (uint64_t)dim);
    return (float)((double)(h >> 40) * 0x1p-24 * 8.0 - 4.0) + 0.25f * (float)(layer + 2);
}

typedef struct fake_producer {
    long sleep_us;      /* per batch */
    int64_t nan_seq;    /* -1: none */
    int nan_pos, nan_layer;
    float bad_value;    /* what is planted at (nan_seq, nan_pos, nan_layer); NaN by default */
    long fail_at_call;  /* 1-based call that fails; 0: never */
    long calls;
    int use_put;        /* hand the layers to b->put instead of filling out[] */
} fake_producer;

static inline void fake_producer_init(fake_producer *p) {
    p->sleep_us = 0;
    p->nan_seq = -1;
    p->nan_pos = p->nan_layer = 0;
    p->bad_value = (float)NAN;
    p->fail_at_call = 0;
    p->calls = 0;
    p->use_put = 0;
}

static inline rs_err fake_produce(void *ctx, float *const *out, const rs_harvest_batch *b) {
    fake_producer *p = ctx;
    p->calls++;
    if (p->fail_at_call && p->calls == p->fail_at_call)
        RS_FAIL(RS_ERR_IO, "fake producer: failing on purpose at call %ld", p->calls);
    if (p->sleep_us > 0) {
        struct timespec ts = {p->sleep_us / 1000000, (p->sleep_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
    /* with use_put, each layer goes through b->put from a buffer of its own, as a model's hook would */
    float *own = p->use_put && b->put ? malloc(sizeof(float) * (size_t)b->n_seq * b->T * b->d) : NULL;
    if (p->use_put && b->put && !own) RS_FAIL(RS_ERR_NOMEM, "fake producer: out of memory");
    for (int i = 0; i < b->n_layers; i++) {
        float *x = own ? own : out[i];
        for (int s = 0; s < b->n_seq; s++)
            for (int t = 0; t < b->T; t++) {
                float *row = x + ((size_t)s * b->T + t) * b->d;
                for (int j = 0; j < b->d; j++) row[j] = fake_value(b->seq_ids[s], t, b->layers[i], j);
                if (b->seq_ids[s] == p->nan_seq && t == p->nan_pos && b->layers[i] == p->nan_layer)
                    row[b->d / 2] = p->bad_value;
            }
        rs_err err = own ? b->put(b->put_ctx, i, own) : RS_OK;
        if (err) {
            free(own);
            return err;
        }
    }
    free(own);
    return RS_OK;
}

#endif
