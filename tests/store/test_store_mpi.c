/* Activation store and harvest at any rank count: values at the right rows, statistics, float16,
 * resume after a failing producer, identity refusal and --force, NaN rejection, torn journal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "resae/mpi_util.h"
#include "store/store_testlib.h"
#include "testlib.h"

static int g_rank, g_size;

static long all_sum(long v) {
    long out = 0;
    MPI_Allreduce(&v, &out, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    return out;
}

static rs_err harvest(rs_harvest_stats *hs, const test_setup *t, const rs_splits *sp, const char *dir, fake_producer *fp) {
    rs_harvest_config cfg;
    test_config(&cfg, t, dir);
    return rs_harvest_run(hs, &cfg, sp, fake_produce, fp, MPI_COMM_WORLD);
}

/* Rows and statistics of two stores must be bitwise equal. */
static void compare_stores(const char *dir_a, const char *dir_b, const test_setup *t) {
    char pa[1100], pb[1100];
    snprintf(pa, sizeof pa, "%s/%s", dir_a, RS_ACTSTORE_FILE);
    snprintf(pb, sizeof pb, "%s/%s", dir_b, RS_ACTSTORE_FILE);
    rs_actstore a, b;
    rs_err ea = rs_actstore_open(&a, pa, 0, MPI_COMM_WORLD);
    rs_err eb = rs_actstore_open(&b, pb, 0, MPI_COMM_WORLD);
    CHECK(!ea && !eb, "cannot open %s or %s: %s", pa, pb, rs_err_msg());
    if (ea || eb) return;
    for (int s = 0; s < RS_SPLIT_COUNT; s++)
        for (int li = 0; li < t->n_layers; li++) {
            int64_t n = rs_actstore_n_rows(&a, s);
            CHECK(n == rs_actstore_n_rows(&b, s), "row counts differ");
            size_t cnt = (size_t)n * t->d;
            float *x = malloc((cnt + 1) * sizeof *x), *y = malloc((cnt + 1) * sizeof *y);
            CHECK(!rs_actstore_read_rows(&a, x, s, t->layers[li], 0, n), "read a");
            CHECK(!rs_actstore_read_rows(&b, y, s, t->layers[li], 0, n), "read b");
            CHECK(!memcmp(x, y, cnt * sizeof *x), "rows of %s L%d differ", rs_split_name(s), t->layers[li]);
            double ma[64], mb[64], qa = 0, qb = 1;
            CHECK(!rs_actstore_stats(&a, ma, &qa, s, t->layers[li]) && !rs_actstore_stats(&b, mb, &qb, s, t->layers[li]),
                  "stats");
            CHECK(!memcmp(ma, mb, (size_t)t->d * sizeof *ma) && !memcmp(&qa, &qb, sizeof qa),
                  "statistics of %s L%d differ", rs_split_name(s), t->layers[li]);
            free(x);
            free(y);
        }
    rs_actstore_close(&a);
    rs_actstore_close(&b);
}

/* Rows read over arbitrary ranges (crossing sequences and chunks) equal the producer's values. */
static void check_ranges(const char *dir, const test_setup *t, const rs_splits *sp) {
    char p[1100];
    snprintf(p, sizeof p, "%s/%s", dir, RS_ACTSTORE_FILE);
    rs_actstore st;
    if (rs_actstore_open(&st, p, 0, MPI_COMM_WORLD)) {
        CHECK(0, "open %s: %s", p, rs_err_msg());
        return;
    }
    const int tps = t->T - t->skip_pos0, d = t->d;
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(g_rank + 1);
    for (int it = 0; it < 40; it++) {
        x = fake_mix(x);
        int s = (int)(x % RS_SPLIT_COUNT);
        int li = (int)((x >> 8) % (uint64_t)t->n_layers);
        int64_t nr = rs_actstore_n_rows(&st, s);
        int64_t r0 = (int64_t)((x >> 16) % (uint64_t)nr);
        int64_t n = 1 + (int64_t)((x >> 40) % 100);
        if (r0 + n > nr) n = nr - r0;
        float *buf = malloc((size_t)n * d * sizeof *buf);
        CHECK(!rs_actstore_read_rows(&st, buf, s, t->layers[li], r0, n), "read");
        for (int64_t r = 0; r < n; r++) {
            int64_t row = r0 + r;
            int32_t seq = sp->split[s].seq_ids[row / tps];
            int pos = (int)(row % tps) + t->skip_pos0;
            for (int j = 0; j < d; j++) {
                float f = fake_value(seq, pos, t->layers[li], j);
                if (t->dtype == RS_DTYPE_F16) f = rs_f16_to_f32(rs_f32_to_f16(f));
                if (memcmp(&f, &buf[r * d + j], sizeof f)) {
                    CHECK(0, "%s L%d row %lld dim %d: %g != %g", rs_split_name(s), t->layers[li], (long long)row, j,
                          (double)buf[r * d + j], (double)f);
                    r = n;
                    break;
                }
            }
        }
        free(buf);
    }
    /* out-of-range reads and unknown layers are refused */
    float tmp[64];
    CHECK(rs_actstore_read_rows(&st, tmp, RS_SPLIT_EVAL, t->layers[0], rs_actstore_n_rows(&st, RS_SPLIT_EVAL), 1) ==
              RS_ERR_INVAL, "read past the end accepted");
    CHECK(rs_actstore_read_rows(&st, tmp, RS_SPLIT_EVAL, 2, 0, 1) == RS_ERR_INVAL, "unknown layer accepted");
    CHECK(strstr(rs_err_msg(), "layer 2 is not stored (stored layers: -1,1,3)"), "message: %s", rs_err_msg());
    rs_actstore_close(&st);
}

int main(int argc, char **argv) {
    if (rs_mpi_begin(&argc, &argv)) return 1;
    g_rank = rs_check_rank = rs_mpi_rank();
    g_size = rs_mpi_size();
    const char *out = getenv("RESAE_TEST_OUT");
    char base[512], d_f32[600], d_f16[600], d_resume[600], d_nan[600];
    snprintf(base, sizeof base, "%s/store_mpi_np%d", out ? out : "/tmp", g_size);
    snprintf(d_f32, sizeof d_f32, "%s/f32", base);
    snprintf(d_f16, sizeof d_f16, "%s/f16", base);
    snprintf(d_resume, sizeof d_resume, "%s/resume", base);
    snprintf(d_nan, sizeof d_nan, "%s/nan", base);
    if (g_rank == 0) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", base, base);
        if (system(cmd)) fprintf(stderr, "cannot prepare %s\n", base);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    test_setup t;
    test_setup_default(&t);
    t.per_round = 2;
    rs_splits sp;
    if (test_splits(&sp, &t)) {
        rs_err_print();
        return 1;
    }
    rs_harvest_stats hs;
    fake_producer fp;

    /* 1. float32: exact values and statistics */
    fake_producer_init(&fp);
    rs_err e = harvest(&hs, &t, &sp, d_f32, &fp);
    CHECK(!e, "f32 harvest: %s", rs_err_msg());
    CHECK(hs.batches_total == 25 && hs.batches_run == 25 && hs.batches_skipped == 0, "batch counts %lld/%lld/%lld",
          (long long)hs.batches_total, (long long)hs.batches_run, (long long)hs.batches_skipped);
    CHECK(all_sum(fp.calls) == 25, "producer called %ld times, expected 25", all_sum(fp.calls));
    CHECK(test_check_store(d_f32, &t, &sp, MPI_COMM_WORLD) == 0, "f32 store differs from the producer");
    check_ranges(d_f32, &t, &sp);

    /* 2. a complete store is not redone; a torn journal record is dropped */
    fake_producer_init(&fp);
    e = harvest(&hs, &t, &sp, d_f32, &fp);
    CHECK(!e && all_sum(fp.calls) == 0 && hs.batches_skipped == 25, "rerun of a complete store did work");
    if (g_rank == 0) {
        char jp[700];
        snprintf(jp, sizeof jp, "%s/%s", d_f32, RS_HARVEST_JOURNAL);
        FILE *f = fopen(jp, "a");
        fputs("done tra", f);
        fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    e = harvest(&hs, &t, &sp, d_f32, &fp);
    CHECK(!e && all_sum(fp.calls) == 0, "torn journal record: %s", rs_err_msg());

    /* 3. float16 within half precision, rounded to nearest even */
    test_setup t16 = t;
    t16.dtype = RS_DTYPE_F16;
    fake_producer_init(&fp);
    e = harvest(&hs, &t16, &sp, d_f16, &fp);
    CHECK(!e, "f16 harvest: %s", rs_err_msg());
    CHECK(test_check_store(d_f16, &t16, &sp, MPI_COMM_WORLD) == 0, "f16 store differs from the producer");
    check_ranges(d_f16, &t16, &sp);

    /* 4. a producer failure on the last rank stops every rank; the rerun does only the rest and
     *    ends identical to the uninterrupted store */
    fake_producer_init(&fp);
    if (g_rank == g_size - 1) fp.fail_at_call = 3;
    e = harvest(&hs, &t, &sp, d_resume, &fp);
    CHECK(e != RS_OK, "failing producer not reported");
    if (g_rank == g_size - 1) CHECK(strstr(rs_err_msg(), "failing on purpose at call 3"), "message: %s", rs_err_msg());
    else CHECK(strstr(rs_err_msg(), "rank"), "message: %s", rs_err_msg());
    long first_calls = all_sum(fp.calls);
    fake_producer_init(&fp);
    e = harvest(&hs, &t, &sp, d_resume, &fp);
    CHECK(!e, "resume: %s", rs_err_msg());
    CHECK(hs.batches_skipped >= 2L * g_size && hs.batches_skipped < 25, "skipped %lld", (long long)hs.batches_skipped);
    CHECK(all_sum(fp.calls) == 25 - hs.batches_skipped, "resume ran %ld batches, %lld were missing",
          all_sum(fp.calls), (long long)(25 - hs.batches_skipped));
    CHECK(first_calls >= hs.batches_skipped, "more batches journaled than produced");
    compare_stores(d_f32, d_resume, &t);

    /* 4b. the same with a checkpoint interval: agreements complete some rounds late, and a rank
     *     failing in round 2 (its 5th batch, 2 per round) still leaves rounds 0 and 1 recorded */
    {
        char dir[700];
        snprintf(dir, sizeof dir, "%s/resume_lag", base);
        fake_producer_init(&fp);
        if (g_rank == g_size - 1) fp.fail_at_call = 5;
        rs_harvest_config cfg;
        test_config(&cfg, &t, dir);
        cfg.flush_seconds = 1e-9;
        e = rs_harvest_run(&hs, &cfg, &sp, fake_produce, &fp, MPI_COMM_WORLD);
        CHECK(all_sum(e != RS_OK) == g_size, "failing producer not reported on every rank");
        if (g_rank == g_size - 1) CHECK(strstr(rs_err_msg(), "failing on purpose at call 5"), "message: %s", rs_err_msg());
        fake_producer_init(&fp);
        e = rs_harvest_run(&hs, &cfg, &sp, fake_produce, &fp, MPI_COMM_WORLD);
        CHECK(!e, "resume after a lagged failure: %s", rs_err_msg());
        CHECK(hs.batches_skipped == 4L * g_size, "skipped %lld, expected %d", (long long)hs.batches_skipped, 4 * g_size);
        CHECK(all_sum(fp.calls) == 25 - hs.batches_skipped, "resume ran %ld batches", all_sum(fp.calls));
        compare_stores(d_f32, dir, &t);
    }

    /* 5. another identity is refused with the field and the fix; --force recreates */
    test_setup tm = t;
    tm.model_hash = 0xabcdef;
    fake_producer_init(&fp);
    e = harvest(&hs, &tm, &sp, d_resume, &fp);
    CHECK(e == RS_ERR_CONFIG, "different identity accepted (%d)", e);
    CHECK(strstr(rs_err_msg(), "model_hash is 0000000000001111 (model fake-model) in the store but 0000000000abcdef"),
          "message: %s", rs_err_msg());
    CHECK(strstr(rs_err_msg(), "Delete the run directory (or use a new run_dir), or pass --force"), "message: %s",
          rs_err_msg());
    CHECK(all_sum(fp.calls) == 0, "refused store was written");
    test_setup tl = t;
    tl.layers[2] = 4;
    e = harvest(&hs, &tl, &sp, d_resume, &fp);
    CHECK(e == RS_ERR_CONFIG && strstr(rs_err_msg(), "layers are [-1,1,3] in the store but [-1,1,4]"), "message: %s",
          rs_err_msg());
    tm.force = 1;
    e = harvest(&hs, &tm, &sp, d_resume, &fp);
    CHECK(!e && hs.batches_skipped == 0 && all_sum(fp.calls) == 25, "force: %s", rs_err_msg());
    {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", d_resume, RS_ACTSTORE_FILE);
        rs_actstore st;
        CHECK(!rs_actstore_open(&st, p, 0, MPI_COMM_WORLD), "open");
        CHECK(st.id.model_hash == 0xabcdef && rs_actstore_is_complete(&st), "force did not recreate");
        rs_actstore_close(&st);
    }

    /* 6. NaN in the produced activations: an error naming split, layer, sequence and position */
    fake_producer_init(&fp);
    int32_t victim = sp.split[RS_SPLIT_EVAL].seq_ids[5];
    fp.nan_seq = victim;
    fp.nan_pos = 7;
    fp.nan_layer = 1;
    e = harvest(&hs, &t, &sp, d_nan, &fp);
    CHECK(e == RS_ERR_NUMERIC, "NaN not reported (%d)", e);
    char want[200];
    snprintf(want, sizeof want, "non-finite value nan produced for split eval, layer 1, sequence %d (batch 1), position 7, dim 12",
             (int)victim);
    long named = all_sum(strstr(rs_err_msg(), want) != NULL);
    CHECK(named == 1, "%ld ranks name the NaN; message here: %s", named, rs_err_msg());
    {
        char p[700];
        snprintf(p, sizeof p, "%s/%s", d_nan, RS_ACTSTORE_FILE);
        rs_actstore st;
        CHECK(!rs_actstore_open(&st, p, 0, MPI_COMM_WORLD), "open");
        CHECK(!rs_actstore_is_complete(&st), "store with a NaN batch marked complete");
        double m[64], q;
        CHECK(rs_actstore_stats(&st, m, &q, RS_SPLIT_EVAL, 1) == RS_ERR_INVAL, "stats of an incomplete store");
        rs_actstore_close(&st);
    }

    /* 6b. float16 range: a value that would round to inf is refused at a stored position and
     *     accepted at the excluded position 0 */
    {
        char dir[700];
        snprintf(dir, sizeof dir, "%s/f16range", base);
        test_setup tr = t16;
        tr.force = 1;
        fake_producer_init(&fp);
        fp.nan_seq = sp.split[RS_SPLIT_TRAIN].seq_ids[9];
        fp.nan_pos = 0;
        fp.nan_layer = 3;
        fp.bad_value = 70000.0f;
        e = harvest(&hs, &tr, &sp, dir, &fp);
        CHECK(!e, "a large value at the excluded position 0 was refused: %s", rs_err_msg());
        fake_producer_init(&fp);
        fp.nan_seq = sp.split[RS_SPLIT_TRAIN].seq_ids[9];
        fp.nan_pos = 16;
        fp.nan_layer = 3;
        fp.bad_value = -70000.0f;
        snprintf(dir, sizeof dir, "%s/f16range2", base);
        e = harvest(&hs, &tr, &sp, dir, &fp);
        snprintf(want, sizeof want, "out-of-float16-range value -70000 produced for split train, layer 3, sequence %d "
                 "(batch 2), position 16", (int)fp.nan_seq);
        named = all_sum(strstr(rs_err_msg(), want) != NULL && strstr(rs_err_msg(), "use dtype float32") != NULL);
        CHECK(all_sum(e == RS_ERR_NUMERIC) == g_size && named == 1, "float16 range: %s", rs_err_msg());
    }

    /* 6c. the same through the producer's put (packing while the stream is still in cache) */
    {
        char dir[700];
        snprintf(dir, sizeof dir, "%s/nan_put", base);
        fake_producer_init(&fp);
        fp.use_put = 1;
        fp.nan_seq = victim;
        fp.nan_pos = 7;
        fp.nan_layer = 1;
        e = harvest(&hs, &t, &sp, dir, &fp);
        snprintf(want, sizeof want,
                 "non-finite value nan produced for split eval, layer 1, sequence %d (batch 1), position 7, dim 12",
                 (int)victim);
        named = all_sum(strstr(rs_err_msg(), want) != NULL);
        CHECK(all_sum(e == RS_ERR_NUMERIC) == g_size && named == 1, "NaN through put: %s", rs_err_msg());
        test_setup tr = t16;
        tr.force = 1;
        fake_producer_init(&fp);
        fp.use_put = 1;
        snprintf(dir, sizeof dir, "%s/f16_put", base);
        e = harvest(&hs, &tr, &sp, dir, &fp);
        CHECK(!e, "f16 harvest through put: %s", rs_err_msg());
        compare_stores(d_f16, dir, &t16);
    }

    /* 7. a foreign HDF5 file in the store's place is never overwritten without force */
    {
        char dir[700], p[800];
        snprintf(dir, sizeof dir, "%s/foreign", base);
        snprintf(p, sizeof p, "%s/%s", dir, RS_ACTSTORE_FILE);
        if (g_rank == 0) {
            mkdir(dir, 0755);
            hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
            H5Fclose(f);
        }
        MPI_Barrier(MPI_COMM_WORLD);
        fake_producer_init(&fp);
        e = harvest(&hs, &t, &sp, dir, &fp);
        CHECK(e == RS_ERR_CONFIG && strstr(rs_err_msg(), "not a resae activation store") &&
                  strstr(rs_err_msg(), "--force"),
              "foreign file: %d %s", e, rs_err_msg());
        test_setup tf = t;
        tf.force = 1;
        e = harvest(&hs, &tf, &sp, dir, &fp);
        CHECK(!e && all_sum(fp.calls) == 25, "foreign file with force: %s", rs_err_msg());
    }

    rs_splits_free(&sp);
    long total = all_sum(rs_check_fails);
    if (g_rank == 0) printf("store_mpi at %d ranks: %s (%ld failures)\n", g_size, total ? "FAILED" : "ok", total);
    rs_mpi_end();
    return total ? 1 : 0;
}
