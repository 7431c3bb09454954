/* The sparse-probing stage (EVAL_SPEC.md A, C1, C2, C7; docs/probing.md): one task per probed
 * distinct layer set, leaving tasks/probe_<set>_<hash>.h5. It runs the model once per class set over
 * that class set's windows up to the layer set's deepest layer (ranks take whole batches of
 * windows, so every number is independent of the rank count), pools h and the original-unit codes
 * zh = z / s of every SAE of the set's evaluations (all variants, k and seeds), and rank 0 fits the
 * probes: per layer and over the union of the set's layers on the top-K latents, K random latents
 * (floor), and the model's pooled h on all d dimensions and on its top-K dimensions (ceiling). */
#ifndef RESAE_STAGE_PROBE_H
#define RESAE_STAGE_PROBE_H

#include "resae/err.h"
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

/* Probe grid set `set` on c->comm and write its task file at path (rank 0). Collective. */
rs_err rs_stage_probe_run(const rs_task_ctx *c, int set, const char *path);

#endif
