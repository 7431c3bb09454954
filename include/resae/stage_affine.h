/* The affine stage: one ridge fit a -> b per task from the activation store (affine.h, METHOD.md §2). */
#ifndef RESAE_STAGE_AFFINE_H
#define RESAE_STAGE_AFFINE_H

#include "resae/err.h"
#include "resae/stage.h"

/* Fit the map a -> b on c->comm and write its task file at path (rank 0). Collective. */
rs_err rs_stage_affine_run(const rs_task_ctx *c, int a, int b, const char *path);

#endif
