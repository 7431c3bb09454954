/* `resae run`: build the run (rs_run, immutable from then on), then schedule one task per harvest,
 * affine fit, SAE, ablation baseline and unique evaluation over worker groups (sched.h); each task
 * runs on its group's communicator (rs_task_ctx) and leaves a task file (taskfile.h), so a restart
 * skips finished work. Long tasks checkpoint (harvest journal, SAE checkpoints under
 * <run_dir>/ckpt/). <run_dir>/results.h5 is rebuilt from the task files at the end (results.h).
 * Layout: docs/store.md; scheduling: docs/sched.md. */
#ifndef RESAE_RUN_H
#define RESAE_RUN_H

#include <mpi.h>

#include "resae/err.h"
#include "resae/stage.h"

/* The message of a rank whose own work succeeded when another rank failed (the scheduler's
 * other_rank_msg: the task table shows the failing rank's text instead). */
#define RS_RUN_OTHER_RANK "another rank failed (see its error above)"

/* Load config_path and the model config, build the grid and the stored-layer list; run_dir, if not
 * NULL, replaces the config's (a run directory read where it now is). One rank, no MPI. */
rs_err rs_run_init(rs_run *run, const char *config_path, const rs_run_opts *opts, const char *run_dir);
void rs_run_free(rs_run *run);

/* Run or resume every stage up to run->opts.until on comm. Collective. */
rs_err rs_run_exec(const rs_run *run, MPI_Comm comm);

/* Whether the current error only reports another rank's failure (RS_RUN_OTHER_RANK or the agreed
 * "rank R failed in ..." of rs_agree): such a rank need not print it. */
int rs_run_err_is_remote(void);

#endif
