/* The sparse-probing stage (EVAL_SPEC.md A, C1, C2, C7; docs/probing.md): one task per probed
 * distinct layer set, leaving tasks/probe_<set>_<hash>.h5. It runs the model once per class set over
 * that class set's windows up to the layer set's deepest layer (ranks take whole batches of
 * windows, so every number is independent of the rank count), pools h and the original-unit codes
 * zh = z / s of every SAE of the set's evaluations (all variants, k and seeds), and rank 0 fits the
 * probes: per layer and over the union of the set's layers on the top-K latents, K random latents
 * (floor), and the model's pooled h on all d dimensions and on its top-K dimensions (ceiling). */
#ifndef RESAE_STAGE_PROBE_H
#define RESAE_STAGE_PROBE_H

#include "resae/affine.h"
#include "resae/err.h"
#include "resae/eval.h"
#include "resae/h5util.h"
#include "resae/model.h"
#include "resae/probe_data.h"
#include "resae/sae.h"
#include "resae/stage.h"

/* Task-file (and results.h5 /probing, prefixed with the layer set) tables. */
#define RS_PROBE_TABLE_COLS "variant,k,seed,kind,layer,K,class_set,label,accuracy"
#define RS_PROBE_TABLE_NC 9
#define RS_PROBE_LATENT_COLS "variant,k,seed,scope,class_set,label,rank,layer,latent"
#define RS_PROBE_LATENT_NC 9
#define RS_PROBE_CLASS_COLS "class_set,label,n_windows,n_test_side,n_train,n_test"
#define RS_PROBE_CLASS_NC 6

/* Column `kind` of the probing table. */
enum rs_probe_kind {
    RS_PROBE_SAE = 0,        /* top-K latents of the SAE(s) by |mean_pos - mean_neg| */
    RS_PROBE_MODEL_TOPK = 1, /* top-K dimensions of pooled h (variant, k, seed -1) */
    RS_PROBE_MODEL_ALL = 2,  /* all d dimensions of pooled h (K = d) */
    RS_PROBE_RANDOM = 3,     /* K latents drawn at random (seeded) */
    RS_PROBE_KIND_COUNT = 4
};
extern const char *const rs_probe_kind_names[RS_PROBE_KIND_COUNT];
/* The definitions stored with the three tables (probing, probing_latents, probing_classes). */
extern const char *const rs_probe_definitions[3];

/* ---- shared with the TPP stage (stage_tpp.c) -------------------------------------------------- */

/* What a probed set needs: the model, the labelled windows and their plan (eval.probing), and every
 * SAE (and resae affine map) of the set's evaluations. */
typedef struct rs_probe_inputs {
    const rs_grid_set *set;
    int M, d, n_lat, T, skip, top, n_e;
    rs_model model;
    rs_probe_data data;
    rs_probe_plan plan;
    const rs_grid_eval **ev; // (n_e) the set's evaluations (variant, k, seed)
    rs_eval_set *es;         // (n_e)
    rs_sae *sae;             // (n_e * M)
    rs_affine_map *map;      // (n_e * M)
} rs_probe_inputs;

/* keep: which of the set's evaluations to load (NULL: all). */
typedef int (*rs_probe_eval_filter)(const rs_run *run, const rs_grid_eval *e);
rs_err rs_probe_inputs_load(rs_probe_inputs *in, const rs_run *run, int set, rs_probe_eval_filter keep);
void rs_probe_inputs_free(rs_probe_inputs *in);

/* Pooled features of one class set's windows (in the order of rs_probe_set.windows). */
typedef struct rs_probe_feats {
    int n_w;
    float *h; // (M, n_w, d) pooled h at each layer of the set
    float *z; // (n_e, M, n_w, n_lat) pooled original-unit codes z / s
} rs_probe_feats;

/* Collective: the features of class set S on rank 0 (other ranks hold only their own rows; the
 * caller frees h and z). Ranks take whole batches, so the numbers do not depend on the rank count. */
rs_err rs_probe_class_set_feats(rs_probe_feats *f, const rs_probe_inputs *in, const rs_probe_set *S,
                                const rs_task_ctx *c);
float *rs_probe_h_block(const rs_probe_inputs *in, const rs_probe_feats *f, int m);
float *rs_probe_z_block(const rs_probe_inputs *in, const rs_probe_feats *f, int e, int m);
/* A growing table of rows of nc doubles (the task files' tables). */
typedef struct rs_probe_rows {
    double *v;
    int n, cap, nc;
} rs_probe_rows;
rs_err rs_probe_rows_push(rs_probe_rows *r, const double *q);

/* The file's label names, comma-separated, as the attribute label_names of f. */
rs_err rs_probe_label_names_attr(hid_t f, const rs_probe_data *d);

/* Probe grid set `set` on c->comm and write its task file at path (rank 0). Collective. */
rs_err rs_stage_probe_run(const rs_task_ctx *c, int set, const char *path);

#endif
