/* What every stage of `resae run` reads: the run (rs_run, built once by rs_run_init in run.c and
 * const from then on), the task context a stage runs in (rs_task_ctx: the run plus the communicator
 * of the group running the task), and the stages themselves (enum rs_stage, for --until and
 * `resae status`). Also the config-to-domain mappings more than one stage needs (tokens, splits).
 *
 * The layering inside src/run/: run.c (graph, scheduler callback) -> stage_*.c and results.c ->
 * taskfile.c -> tasks.c -> stage.c; only run.c knows every stage. */
#ifndef RESAE_STAGE_H
#define RESAE_STAGE_H

#include <mpi.h>
#include <signal.h>

#include "resae/config.h"
#include "resae/err.h"
#include "resae/grid.h"
#include "resae/model_config.h"

/* Files of a run directory besides the task files (docs/store.md). */
#define RS_RUN_CONFIG_FILE "config.yaml" /* the resolved config, recorded by `resae run` */
#define RS_RUN_LOCK_FILE "run.lock"     /* flock()ed by rank 0 while a run goes: one run per run directory */
#define RS_RUN_STATUS_FILE "status.tsv"  /* the scheduler's status snapshot (sched.h), read by `resae status` */

/* The stages in the order they run; --until STAGE stops after STAGE. The ablation baselines belong
 * to the evaluation stage. */
enum rs_stage { RS_STAGE_HARVEST = 0, RS_STAGE_AFFINE = 1, RS_STAGE_TRAIN = 2, RS_STAGE_EVAL = 3, RS_STAGE_COUNT = 4 };
extern const char *const rs_stage_names[RS_STAGE_COUNT]; /* "harvest", "affine", "train", "evaluate" */
const char *rs_stage_name(enum rs_stage s);
/* The stage called name; RS_ERR_INVAL (message lists the stages) when there is none. */
rs_err rs_stage_parse(enum rs_stage *out, const char *name);

/* How a run was asked to go (the command line). */
typedef struct rs_run_opts {
    int force;                   /* recreate an activation store of another identity */
    enum rs_stage until;         /* last stage to run (RS_STAGE_EVAL: every stage) */
    volatile sig_atomic_t *stop; /* set by SIGTERM/SIGUSR1: checkpoint and return RS_ERR_INTERRUPTED (may be NULL) */
} rs_run_opts;

/* The experiment of one run: immutable once rs_run_init has built it (owns every pointer). */
typedef struct rs_run {
    rs_config cfg;
    rs_model_config mc;
    rs_grid grid;
    rs_run_opts opts;
    int n_store_layers;
    int *store_layers; // (n_store_layers) ascending: every layer the store holds (selected and regression)
} rs_run;

/* One task's view: the run and the communicator of the ranks running the task (a worker group, or
 * the world for the harvest). Ranks partition tokens, rows or sequences inside the task. */
typedef struct rs_task_ctx {
    const rs_run *run;
    MPI_Comm comm;
    int rank, size; /* in comm */
} rs_task_ctx;

void rs_task_ctx_init(rs_task_ctx *c, const rs_run *run, MPI_Comm comm);

/* ---- config -> domain mappings shared by the stages -------------------------------------------------- */

struct rs_tokens;
struct rs_splits;
/* The tokens file of the run (data.format mapped to the tokens reader's format); check_positions:
 * refuse sequences longer than the model's max_position_embeddings. */
rs_err rs_stage_tokens_open(struct rs_tokens *tk, const rs_run *run, int check_positions);
/* The calibration/train/eval splits of the run's tokens. */
rs_err rs_stage_splits_build(struct rs_splits *sp, const rs_run *run, const struct rs_tokens *tk);

#endif
