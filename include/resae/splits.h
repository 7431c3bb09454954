/* Token splits: calibration / train / eval, disjoint by sequence (METHOD.md §1).
 *
 * A token dataset holds n_seq sequences of T tokens. Every sequence gets a key
 * splitmix64(seed ^ splitmix64(seq_id)); sequences are ordered by (key, seq_id) and the order is
 * cut into eval first, then calibration, then train, each taking floor(budget / tokens_per_seq)
 * sequences (tokens_per_seq = T, or T-1 when position 0 is excluded). The assignment therefore
 * depends only on (seed, budgets, n_seq, T, skip_pos0): never on the rank count, and growing the
 * train budget never changes eval or calibration. Within a split the sequences are kept in
 * ascending sequence-id order, which fixes the row order of the activation store. */
#ifndef RESAE_SPLITS_H
#define RESAE_SPLITS_H

#include <stdint.h>

#include "resae/err.h"

enum rs_split_id { RS_SPLIT_CALIB = 0, RS_SPLIT_TRAIN = 1, RS_SPLIT_EVAL = 2, RS_SPLIT_COUNT = 3 };

/* "calib", "train", "eval" (the store's group names); NULL for an unknown id. */
const char *rs_split_name(int split);
/* Inverse of rs_split_name; -1 if unknown. */
int rs_split_from_name(const char *name);

/* A train budget of RS_SPLIT_ALL takes every sequence left after eval and calibration. */
#define RS_SPLIT_ALL (-1)

typedef struct rs_split_config {
    uint64_t seed;
    int64_t budget[RS_SPLIT_COUNT]; /* tokens per split (after the position-0 exclusion) */
    int skip_pos0;                  /* 1: position 0 of every sequence is not a stored token */
} rs_split_config;

typedef struct rs_split {
    int64_t n_seq;
    int64_t n_tokens;  /* n_seq * tokens_per_seq */
    int32_t *seq_ids;  /* (n_seq) ascending */
    int32_t *labels;   /* (n_seq) per-sequence labels, or NULL when none were given */
} rs_split;

typedef struct rs_splits {
    rs_split_config cfg;
    int64_t n_seq_data;  /* sequences in the token dataset */
    int T;               /* tokens per sequence in the dataset */
    int tokens_per_seq;  /* T - skip_pos0 */
    rs_split split[RS_SPLIT_COUNT];
} rs_splits;

/* Assign the n_seq_data sequences of length T. labels (n_seq_data) is optional (NULL).
 * Fails (RS_ERR_CONFIG) when the budgets need more sequences than the data holds, or when a
 * nonzero budget is smaller than one sequence. */
rs_err rs_splits_build(rs_splits *out, const rs_split_config *cfg, int64_t n_seq_data, int T,
                       const int32_t *labels);
void rs_splits_free(rs_splits *s);

/* The sort key of a sequence (exposed for tests and the analysis scripts). */
uint64_t rs_splits_key(uint64_t seed, int64_t seq_id);

#endif
