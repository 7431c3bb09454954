/* The harvest stage: the model's activations at every stored layer for the calibration, train and
 * eval splits, into the run's activation store (harvest.h; resumable from its journal). */
#ifndef RESAE_STAGE_HARVEST_H
#define RESAE_STAGE_HARVEST_H

#include <stdint.h>

#include "resae/err.h"
#include "resae/stage.h"

/* Harvest (or reuse a complete store) on c->comm (the world). Collective. */
rs_err rs_stage_harvest_run(const rs_task_ctx *c);
/* Batches the harvest has in all (the journal counts the done ones), for `resae status`; one rank. */
rs_err rs_stage_harvest_batches(int64_t *n, const rs_run *run);

#endif
