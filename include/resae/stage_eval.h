/* The evaluation stage (METHOD.md §5-6): one task per unique evaluation of the grid (set x variant x
 * k x seed; identical sets share one), each leaving tasks/eval_<name>_<hash>.h5 with its tables, and
 * one task per distinct set for the zero/mean ablation baselines (they depend only on the model, the
 * eval tokens and the set's layers) and the affine-only control (the set's affine maps alone, no
 * SAEs), leaving tasks/ablate_<set>_<hash>.h5, whose baselines the set's evaluations read. Ranks partition the eval rows (reconstruction), the decoder rows (redundancy)
 * and the eval sequences (CE splices) inside each task. */
#ifndef RESAE_STAGE_EVAL_H
#define RESAE_STAGE_EVAL_H

#include "resae/err.h"
#include "resae/stage.h"

struct rs_model;
struct rs_tokens;
/* Run grid evaluation i (the first of its hash) on c->comm and write its task file at path (rank 0).
 * model and tk are loaded by the caller when eval.ce is on (else unused). Collective. */
rs_err rs_stage_eval_run(const rs_task_ctx *c, int i, const char *path, const struct rs_model *model,
                         struct rs_tokens *tk);
/* The ablation baselines of grid set `set` and, where rs_tasks_affine_only, the affine-only control;
 * writes its task file (rank 0). Collective. */
rs_err rs_stage_eval_ablate(const rs_task_ctx *c, int set, const struct rs_model *model, struct rs_tokens *tk);

#endif
