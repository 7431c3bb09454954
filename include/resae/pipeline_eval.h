/* The evaluation stage of `resae run` (METHOD.md §5-6): one task per unique evaluation of the grid
 * (set x variant x k x seed; identical sets share one), each leaving an atomic task file
 * <run_dir>/tasks/eval_<name>_<hash>.h5 with its tables (docs/store.md "Evaluation"). Ranks
 * partition the eval rows (reconstruction), the decoder rows (redundancy) and the eval sequences
 * (CE splices) inside each task. */
#ifndef RESAE_PIPELINE_EVAL_H
#define RESAE_PIPELINE_EVAL_H

#include <hdf5.h>

#include "resae/pipeline.h"

/* Columns of the task tables (the results file prefixes set, variant, k, seed). */
#define RS_EVAL_RECON_COLS \
    "layer,pred,scale,l0,dead_frac,mse,ev_target,ev_orig_onestep,ev_orig_chain,n_tokens,dead_frac_train"
#define RS_EVAL_RECON_NC 11
#define RS_EVAL_RED_COLS "layer_a,layer_b,gap,mean_max_cos,mean_max_abs_cos,n_rows"
#define RS_EVAL_RED_NC 6
#define RS_EVAL_CE_COLS "mode,layer,ce,dce,kl,recovered_zero,recovered_mean,overinteraction,n_tokens"
#define RS_EVAL_CE_NC 9
/* CE table modes (column `mode`); layer -1 marks a pass over all layers of the set. */
enum rs_eval_ce_row { RS_CE_ROW_CLEAN = 0, RS_CE_ROW_SINGLE = 1, RS_CE_ROW_TF = 2, RS_CE_ROW_SO = 3,
                      RS_CE_ROW_ZERO = 4, RS_CE_ROW_MEAN = 5 };
extern const char *const rs_eval_ce_row_names[6];

/* Name "<set>_<variant>_k<k>_s<seed>" and task file path of an evaluation. */
void rs_pipeline_eval_name(char *out, size_t n, const rs_pipeline *p, const rs_grid_eval *e);
void rs_pipeline_eval_path(char *out, size_t n, const rs_pipeline *p, const rs_grid_eval *e);
/* Whether evals[i] is the first of the grid's evaluations with its hash (the one that runs). */
int rs_pipeline_eval_first(const rs_pipeline *p, int i);

/* Run grid evaluation i (the first of its hash) on p->comm: opens the activation store on that
 * communicator; model and tk are loaded by the caller when eval.ce is on (else unused). Collective
 * over p->comm; every rank returns the same code; rank 0 of p->comm writes the task file. */
struct rs_model;
struct rs_tokens;
rs_err rs_pipeline_eval_task(const rs_pipeline *p, int i, const struct rs_model *model, struct rs_tokens *tk);

/* Ablation baselines (the zero/mean passes of METHOD.md §5, which depend only on the model, the
 * eval tokens and a set's layers): one task per distinct set, run before the set's evaluations,
 * leaving tasks/ablate_<set>_<hash>.h5, which the evaluations read. Needed when eval.ce is on and
 * ablations are configured. Collective over p->comm; rank 0 writes the file. */
int rs_pipeline_ablate_needed(const rs_pipeline *p);
void rs_pipeline_ablate_path(char *out, size_t n, const rs_pipeline *p, int set);
rs_err rs_pipeline_ablate_task(const rs_pipeline *p, int set, const struct rs_model *model, struct rs_tokens *tk);

/* Run or resume the evaluation stage. Collective. */
rs_err rs_pipeline_evaluate(rs_pipeline *p);
/* Write /eval (tables of every finished evaluation) into an open results file (rank 0 only). */
rs_err rs_pipeline_results_eval(hid_t out, const rs_pipeline *p);

#endif
