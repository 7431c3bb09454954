/* Shared by the store tests: a small harvest setup around the fake producer and a checker that
 * compares a finished store with the producer's values, row by row. */
#ifndef RESAE_TEST_STORE_TESTLIB_H
#define RESAE_TEST_STORE_TESTLIB_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/actstore.h"
#include "resae/harvest.h"
#include "resae/log.h"
#include "store/fake_producer.h"

typedef struct test_setup {
    int64_t n_seq_data;
    int T, d, skip_pos0, dtype, batch_seqs, chunk_rows, per_round, force;
    int64_t budget[RS_SPLIT_COUNT];
    uint64_t seed, model_hash, data_hash;
    int n_layers;
    int layers[8];
} test_setup;

static inline void test_setup_default(test_setup *t) {
    memset(t, 0, sizeof *t);
    t->n_seq_data = 96;
    t->T = 17;
    t->d = 24;
    t->skip_pos0 = 1;
    t->dtype = RS_DTYPE_F32;
    t->batch_seqs = 4;
    t->chunk_rows = 20; /* deliberately not aligned with the 64-row batches */
    t->per_round = 1;
    t->budget[RS_SPLIT_EVAL] = 160;
    t->budget[RS_SPLIT_CALIB] = 240;
    t->budget[RS_SPLIT_TRAIN] = RS_SPLIT_ALL;
    t->seed = 1234;
    t->model_hash = 0x1111;
    t->data_hash = 0x2222;
    t->n_layers = 3;
    t->layers[0] = -1;
    t->layers[1] = 1;
    t->layers[2] = 3;
}

static inline rs_err test_splits(rs_splits *sp, const test_setup *t) {
    rs_split_config sc = {.seed = t->seed, .skip_pos0 = t->skip_pos0};
    for (int s = 0; s < RS_SPLIT_COUNT; s++) sc.budget[s] = t->budget[s];
    int32_t *labels = malloc((size_t)t->n_seq_data * sizeof *labels);
    for (int64_t i = 0; i < t->n_seq_data; i++) labels[i] = (int32_t)(i % 5);
    rs_err e = rs_splits_build(sp, &sc, t->n_seq_data, t->T, labels);
    free(labels);
    return e;
}

static inline void test_config(rs_harvest_config *cfg, const test_setup *t, const char *run_dir) {
    memset(cfg, 0, sizeof *cfg);
    cfg->run_dir = run_dir;
    rs_actstore_identity_init(&cfg->id);
    snprintf(cfg->id.model_path, sizeof cfg->id.model_path, "fake-model");
    snprintf(cfg->id.data_path, sizeof cfg->id.data_path, "fake-tokens");
    cfg->id.model_hash = t->model_hash;
    cfg->id.data_hash = t->data_hash;
    cfg->id.n_layers = t->n_layers;
    for (int i = 0; i < t->n_layers; i++) cfg->id.layers[i] = t->layers[i];
    cfg->id.d = t->d;
    cfg->id.dtype = t->dtype;
    cfg->id.batch_seqs = t->batch_seqs;
    cfg->id.chunk_rows = t->chunk_rows;
    cfg->batches_per_round = t->per_round;
    cfg->force = t->force;
}

/* Compare a complete store with the producer: every row (split over the ranks), the sequence ids,
 * and the statistics recomputed in double (relative 1e-12). float16: every value must equal the
 * round-to-nearest-even half of the producer's value and lie within half precision of it.
 * Returns the number of mismatches on this rank (printed). Collective (opens the store). */
static inline long test_check_store(const char *run_dir, const test_setup *t, const rs_splits *sp, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", run_dir, RS_ACTSTORE_FILE);
    rs_actstore st;
    if (rs_actstore_open(&st, path, 0, comm)) {
        rs_err_print();
        return 1;
    }
    long bad = 0;
    if (!rs_actstore_is_complete(&st)) {
        fprintf(stderr, "check: store not complete\n");
        bad++;
    }
    const int d = t->d, tps = t->T - t->skip_pos0;
    for (int s = 0; s < RS_SPLIT_COUNT; s++) {
        const rs_split *spl = &sp->split[s];
        if (rs_actstore_n_rows(&st, s) != spl->n_seq * tps) {
            fprintf(stderr, "check: %s has %lld rows, expected %lld\n", rs_split_name(s),
                    (long long)rs_actstore_n_rows(&st, s), (long long)(spl->n_seq * tps));
            bad++;
            continue;
        }
        int32_t *ids = malloc((size_t)(spl->n_seq + 1) * sizeof *ids);
        if (rs_actstore_read_seq_ids(&st, ids, s) || (spl->n_seq && memcmp(ids, spl->seq_ids, (size_t)spl->n_seq * sizeof *ids))) {
            fprintf(stderr, "check: %s seq_ids differ from the splits\n", rs_split_name(s));
            bad++;
        }
        int has = 0;
        if (rs_actstore_read_labels(&st, ids, &has, s) || !has) {
            fprintf(stderr, "check: %s labels missing\n", rs_split_name(s));
            bad++;
        } else {
            for (int64_t q = 0; q < spl->n_seq; q++)
                if (ids[q] != spl->seq_ids[q] % 5) { /* test_splits labels sequence i with i % 5 */
                    fprintf(stderr, "check: %s label of sequence %d is %d\n", rs_split_name(s), spl->seq_ids[q], ids[q]);
                    bad++;
                    break;
                }
        }
        free(ids);
        for (int li = 0; li < t->n_layers; li++) {
            int layer = t->layers[li];
            double *mean = calloc((size_t)d, sizeof *mean), *ref = calloc((size_t)d, sizeof *ref);
            double sqn = 0, ref_sqn = 0;
            if (rs_actstore_stats(&st, mean, &sqn, s, layer)) {
                rs_err_print();
                bad++;
            }
            /* each rank checks a strided set of sequences, reading them one at a time */
            float *row = malloc((size_t)tps * d * sizeof *row);
            for (int64_t q = 0; q < spl->n_seq; q++) {
                int mine = q % size == rank;
                if (mine && rs_actstore_read_rows(&st, row, s, layer, q * tps, tps)) {
                    rs_err_print();
                    bad++;
                    mine = 0;
                }
                for (int tt = 0; tt < tps; tt++) {
                    int pos = tt + t->skip_pos0;
                    double rsq = 0;
                    for (int j = 0; j < d; j++) {
                        float f = fake_value(spl->seq_ids[q], pos, layer, j);
                        float want = t->dtype == RS_DTYPE_F16 ? rs_f16_to_f32(rs_f32_to_f16(f)) : f;
                        ref[j] += want;
                        rsq += (double)want * want;
                        if (!mine) continue;
                        float got = row[(size_t)tt * d + j];
                        int ok = memcmp(&got, &want, sizeof got) == 0;
                        if (t->dtype == RS_DTYPE_F16 && fabsf(got - f) > ldexpf(fabsf(f), -11) + 0x1p-24f) ok = 0;
                        if (!ok && bad < 20)
                            fprintf(stderr, "check: %s L%d seq %d pos %d dim %d: got %.9g, want %.9g\n",
                                    rs_split_name(s), layer, spl->seq_ids[q], pos, j, (double)got, (double)want);
                        bad += !ok;
                    }
                    ref_sqn += rsq;
                }
            }
            free(row);
            double nr = (double)(spl->n_seq * tps);
            for (int j = 0; j < d && nr > 0; j++) {
                ref[j] /= nr;
                if (fabs(ref[j] - mean[j]) > 1e-12 * (fabs(ref[j]) + 1)) {
                    if (bad < 20) fprintf(stderr, "check: %s L%d mean[%d] %.17g, want %.17g\n", rs_split_name(s), layer, j, mean[j], ref[j]);
                    bad++;
                }
            }
            if (nr > 0 && fabs(ref_sqn / nr - sqn) > 1e-12 * (ref_sqn / nr)) {
                fprintf(stderr, "check: %s L%d mean sqnorm %.17g, want %.17g\n", rs_split_name(s), layer, sqn, ref_sqn / nr);
                bad++;
            }
            free(mean);
            free(ref);
        }
    }
    rs_actstore_close(&st);
    return bad;
}

#endif
