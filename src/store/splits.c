#include "resae/splits.h"

#include <stdlib.h>
#include <string.h>

#include "resae/rng.h"

static const char *const SPLIT_NAMES[RS_SPLIT_COUNT] = {"calib", "train", "eval"};

const char *rs_split_name(int split) {
    return split >= 0 && split < RS_SPLIT_COUNT ? SPLIT_NAMES[split] : NULL;
}

int rs_split_from_name(const char *name) {
    for (int s = 0; s < RS_SPLIT_COUNT; s++)
        if (!strcmp(name, SPLIT_NAMES[s])) return s;
    return -1;
}

uint64_t rs_splits_key(uint64_t seed, int64_t seq_id) { return rs_splitmix64(seed ^ rs_splitmix64((uint64_t)seq_id)); }

typedef struct {
    uint64_t key;
    int32_t id;
} keyed;

static int cmp_keyed(const void *a, const void *b) {
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

void rs_splits_free(rs_splits *s) {
    if (!s) return;
    for (int i = 0; i < RS_SPLIT_COUNT; i++) {
        free(s->split[i].seq_ids);
        free(s->split[i].labels);
    }
    memset(s, 0, sizeof *s);
}

rs_err rs_splits_build(rs_splits *out, const rs_split_config *cfg, int64_t n_seq_data, int T,
                       const int32_t *labels) {
    memset(out, 0, sizeof *out);
    if (T < 1 || (cfg->skip_pos0 && T < 2))
        RS_FAIL(RS_ERR_CONFIG, "splits: sequence length %d is too short%s", T,
                cfg->skip_pos0 ? " (position 0 is excluded, so at least 2 tokens are needed)" : "");
    if (n_seq_data < 0 || n_seq_data > INT32_MAX)
        RS_FAIL(RS_ERR_CONFIG, "splits: %lld sequences is out of range (at most %d)", (long long)n_seq_data,
                INT32_MAX);
    out->cfg = *cfg;
    out->cfg.skip_pos0 = cfg->skip_pos0 ? 1 : 0;
    out->n_seq_data = n_seq_data;
    out->T = T;
    out->tokens_per_seq = T - out->cfg.skip_pos0;
    const int64_t tps = out->tokens_per_seq;

    /* sequences per split, in fill order eval, calib, train */
    static const int FILL[RS_SPLIT_COUNT] = {RS_SPLIT_EVAL, RS_SPLIT_CALIB, RS_SPLIT_TRAIN};
    int64_t want[RS_SPLIT_COUNT] = {0}, used = 0;
    for (int f = 0; f < RS_SPLIT_COUNT; f++) {
        int s = FILL[f];
        int64_t b = cfg->budget[s];
        if (b == RS_SPLIT_ALL && s == RS_SPLIT_TRAIN) {
            want[s] = n_seq_data - used;
            if (want[s] <= 0)
                RS_FAIL(RS_ERR_CONFIG,
                        "splits: no sequences are left for train after eval (%lld tokens) and calibration "
                        "(%lld tokens); the token data holds %lld tokens (%lld sequences x %lld): give more "
                        "data or smaller eval/calibration budgets",
                        (long long)cfg->budget[RS_SPLIT_EVAL], (long long)cfg->budget[RS_SPLIT_CALIB],
                        (long long)(n_seq_data * tps), (long long)n_seq_data, (long long)tps);
        } else if (b < 0) {
            RS_FAIL(RS_ERR_CONFIG, "splits: %s budget %lld is negative (only train may be 'all')",
                    rs_split_name(s), (long long)b);
        } else {
            want[s] = b / tps;
            if (b > 0 && want[s] == 0)
                RS_FAIL(RS_ERR_CONFIG,
                        "splits: %s budget of %lld tokens is smaller than one sequence (%lld tokens); raise "
                        "it to at least %lld or set it to 0",
                        rs_split_name(s), (long long)b, (long long)tps, (long long)tps);
        }
        used += want[s];
    }
    if (used > n_seq_data)
        RS_FAIL(RS_ERR_CONFIG,
                "splits: the budgets eval=%lld, calib=%lld, train=%lld tokens need %lld sequences of %lld "
                "tokens, but the token data holds %lld sequences (%lld tokens): give more data or smaller "
                "budgets",
                (long long)cfg->budget[RS_SPLIT_EVAL], (long long)cfg->budget[RS_SPLIT_CALIB],
                (long long)cfg->budget[RS_SPLIT_TRAIN], (long long)used, (long long)tps,
                (long long)n_seq_data, (long long)(n_seq_data * tps));

    keyed *order = malloc((size_t)(n_seq_data ? n_seq_data : 1) * sizeof *order);
    RS_CHECK_ALLOC(order);
    for (int64_t i = 0; i < n_seq_data; i++) order[i] = (keyed){rs_splits_key(cfg->seed, i), (int32_t)i};
    qsort(order, (size_t)n_seq_data, sizeof *order, cmp_keyed);

    int64_t pos = 0;
    for (int f = 0; f < RS_SPLIT_COUNT; f++) {
        int s = FILL[f];
        rs_split *sp = &out->split[s];
        sp->n_seq = want[s];
        sp->n_tokens = want[s] * tps;
        sp->seq_ids = malloc((size_t)(want[s] ? want[s] : 1) * sizeof *sp->seq_ids);
        if (!sp->seq_ids) {
            free(order);
            rs_splits_free(out);
            RS_FAIL(RS_ERR_NOMEM, "splits: out of memory for %lld sequence ids", (long long)want[s]);
        }
        for (int64_t i = 0; i < want[s]; i++) sp->seq_ids[i] = order[pos + i].id;
        pos += want[s];
        qsort(sp->seq_ids, (size_t)sp->n_seq, sizeof *sp->seq_ids, cmp_i32);
        if (labels) {
            sp->labels = malloc((size_t)(want[s] ? want[s] : 1) * sizeof *sp->labels);
            if (!sp->labels) {
                free(order);
                rs_splits_free(out);
                RS_FAIL(RS_ERR_NOMEM, "splits: out of memory for %lld labels", (long long)want[s]);
            }
            for (int64_t i = 0; i < want[s]; i++) sp->labels[i] = labels[sp->seq_ids[i]];
        }
    }
    free(order);
    return RS_OK;
}
