/* The TPP stage (EVAL_SPEC.md B, C; METHOD.md §6; docs/tpp.md): one task per probed distinct layer
 * set, leaving tasks/tpp_<set>_<hash>.h5. Per class set of the probing plan (the first
 * eval.tpp.class_sets) it pools the clean features of the class set's windows (as probing does),
 * trains one probe per class on pooled h at the set's last layer P (and, for the local control, at
 * every layer), ranks every latent of every SAE by its effect on the probe carried to P through the
 * affine chain, and measures each ablation set of each budget by a teacher-forced pass over the class
 * set's test windows that starts from the cached clean residual at the first ablated layer. Ranks take
 * whole batches of test windows; rank 0 trains the probes and selects, so the numbers do not depend on
 * the rank count. */
#ifndef RESAE_STAGE_TPP_H
#define RESAE_STAGE_TPP_H

#include "resae/err.h"
#include "resae/stage.h"

#define RS_TPP_TABLE_COLS "variant,k,seed,kind,layer,N,class_set,label,intended,unintended,tpp"
#define RS_TPP_TABLE_NC 11
#define RS_TPP_LATENT_COLS "variant,k,seed,kind,N,class_set,label,rank,layer,latent,effect"
#define RS_TPP_LATENT_NC 11
#define RS_TPP_PROBE_COLS "class_set,label,layer,accuracy,best_epoch"
#define RS_TPP_PROBE_NC 5

/* Column `kind` of the TPP table. */
enum rs_tpp_kind {
    RS_TPP_SINGLE = 0,       /* N latents of one layer, ablated there, measured at P */
    RS_TPP_GLOBAL = 1,       /* the N largest effects over every layer of the set */
    RS_TPP_JOINT = 2,        /* per-layer joint: n_m at each layer, one pass */
    RS_TPP_GLOBAL_PART = 3,  /* the global set's latents of one layer, ablated alone */
    RS_TPP_JOINT_PART = 4,   /* the joint set's latents of one layer, ablated alone */
    RS_TPP_RANDOM = 5,       /* n_m random latents at each layer (control) */
    RS_TPP_LOCAL = 6,        /* SAEBench-exact at one layer: probe there, no forward (control) */
    RS_TPP_GLOBAL_INTER = 7, /* TPP(global) - sum of its parts */
    RS_TPP_JOINT_INTER = 8,  /* TPP(joint) - sum of its parts */
    RS_TPP_KIND_COUNT = 9
};
extern const char *const rs_tpp_kind_names[RS_TPP_KIND_COUNT];
/* The definitions stored with the three tables (tpp, tpp_latents, tpp_probes). */
extern const char *const rs_tpp_definitions[3];

/* TPP of grid set `set` on c->comm; rank 0 writes the task file at path. Collective. */
rs_err rs_stage_tpp_run(const rs_task_ctx *c, int set, const char *path);

#endif
