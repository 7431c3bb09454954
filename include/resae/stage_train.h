/* The training stage: one TopK SAE per task on the shuffled, scaled stream of its layer's train rows
 * (raw: h_l; resae: h_l - A h_pred - c), checkpointed under <run_dir>/ckpt/ (sae.h, METHOD.md §3-4). */
#ifndef RESAE_STAGE_TRAIN_H
#define RESAE_STAGE_TRAIN_H

#include "resae/err.h"
#include "resae/stage.h"

/* Train grid SAE g on c->comm and write its task file at path (rank 0). Collective. */
rs_err rs_stage_train_run(const rs_task_ctx *c, const rs_grid_sae *g, const char *path);

#endif
