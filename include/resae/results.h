/* <run_dir>/results.h5, rebuilt from the task files at the end of every run (written to a temporary
 * name and renamed): /affine, /sae and /eval with one table each, plus the config and the task table
 * (docs/store.md "Results file"). Every table dataset carries `columns` (plain comma-separated
 * names) and, for each enum-valued column C, `enum:C` (the names in value order). */
#ifndef RESAE_RESULTS_H
#define RESAE_RESULTS_H

#include "resae/err.h"
#include "resae/stage.h"
#include "resae/taskfile.h" /* the evaluation tables' columns (RS_EVAL_*), read by `resae report` */

#define RS_RESULTS_FILE "results.h5"
/* Version of the results file's layout (root attribute `results_layout`): 2 = `columns` and `enum:C`
 * on every table dataset; 1 (no attribute) = `table_columns` on /affine and /sae. Apart from
 * schema_version, which versions the activation store and enters every identity hash. */
#define RS_RESULTS_LAYOUT 2

/* Write results.h5 (rank 0 of c->comm; every rank returns the same code); s, the scheduler of the
 * run, gives /tasks (may be NULL). Collective. */
struct rs_sched;
rs_err rs_results_write(const rs_task_ctx *c, const struct rs_sched *s);

#endif
