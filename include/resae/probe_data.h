/* Labelled sequences for sparse probing and TPP (EVAL_SPEC.md A2, A5, C2, F1-F4; docs/probing.md):
 * the file loader, the class sets and the one-vs-rest binary tasks with their train/test splits.
 *
 * File (HDF5): /tokens int32 (n, T) token ids in [0, vocab); /labels int32 (n) ids into
 * /label_names (fixed-length strings, n_labels); optional /groups int32 (n) >= 0 (e.g. the source
 * file: a group never straddles the train/test split; absent = every window its own group).
 *
 * The plan (rs_probe_plan_build), a pure function of the file and the options:
 *  1. Group split (F2), per label in label order: its groups, in the order of the seeded hash
 *     splitmix64(seed ^ splitmix64(group + 1)) (ties: lower group), each go to test if that brings
 *     the label's test windows closer to test_fraction of its windows, else to train. A group
 *     already placed by an earlier label keeps its side.
 *  2. Eligible labels (F3): >= n_train + n_test windows, >= 3 groups, no group holding more than
 *     half of them, and >= n_train train-side and >= n_test test-side windows.
 *  3. Class sets: eligible labels ranked by window count (ties: lower id), S = min(max_sets,
 *     floor(#eligible / classes_per_set)); set s gets ranks s, s + S, ... (classes_per_set each).
 *  4. Pools: per class, n_train windows drawn from its train side and n_test from its test side
 *     (partial Fisher-Yates with xoshiro256** seeded from (seed, label, side)), sorted ascending.
 *     A set's windows are the union of its classes' pools, ascending (the order in which a task
 *     runs the model over them); every index below is a position in that list.
 *  5. Binary task of class i (A5): positives = its train pool; negatives = ceil(n/(C-1)) random
 *     windows of each other class's train pool, concatenated, then n of them kept at random (same
 *     generator, stream (seed, set, class, side)); the test set likewise from the test pools.
 *     Order: positives then negatives (y = 1 then 0).
 * Every variant, k and budget of a run uses the same plan, so their accuracies are paired. */
#ifndef RESAE_PROBE_DATA_H
#define RESAE_PROBE_DATA_H

#include <stdint.h>

#include "resae/err.h"

#define RS_PROBE_MAX_CLASSES 5
#define RS_PROBE_NAME_MAX 64

typedef struct rs_probe_data {
    char path[4096];
    int64_t n;               /* windows */
    int T;                   /* tokens per window */
    int n_labels;
    int32_t *tokens;         // (n, T)
    int32_t *labels;         // (n) in [0, n_labels)
    int32_t *groups;         // (n) >= 0
    char (*label_names)[RS_PROBE_NAME_MAX]; // (n_labels)
} rs_probe_data;

/* Read and check PATH. vocab > 0: token ids must be < vocab. Errors name the file, the dataset and
 * the fix. */
rs_err rs_probe_data_load(rs_probe_data *d, const char *path, int vocab);
void rs_probe_data_free(rs_probe_data *d);

typedef struct rs_probe_opts {
    int64_t n_train, n_test; /* windows per class on each side */
    int classes_per_set;     /* 2..RS_PROBE_MAX_CLASSES */
    int max_sets;
    double test_fraction;    /* group split target (0.25) */
    uint64_t seed;
} rs_probe_opts;

/* One binary task: indices into the set's window list, labels y (1 = the class). */
typedef struct rs_probe_task {
    int n_train, n_test;     /* 2 n_train, 2 n_test of the options */
    int32_t *train, *test;   // (n_train), (n_test)
    int8_t *y_train, *y_test; // (n_train), (n_test)
} rs_probe_task;

typedef struct rs_probe_set {
    int C;                                /* classes */
    int label[RS_PROBE_MAX_CLASSES];      /* label ids */
    int n_windows;
    int64_t *windows;                     // (n_windows) window indices into the file, ascending
    rs_probe_task task[RS_PROBE_MAX_CLASSES];
} rs_probe_set;

typedef struct rs_probe_plan {
    rs_probe_opts o;
    int n_sets;
    rs_probe_set *sets;      // (n_sets)
    int n_eligible;
    int8_t *test_side;       // (n) window on the test side of the group split
} rs_probe_plan;

/* Build the plan; RS_ERR_INVAL naming the file when fewer than classes_per_set labels are eligible. */
rs_err rs_probe_plan_build(rs_probe_plan *p, const rs_probe_data *d, const rs_probe_opts *o);
void rs_probe_plan_free(rs_probe_plan *p);

#endif
