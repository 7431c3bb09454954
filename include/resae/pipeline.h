/* The experiment pipeline behind `resae run`: harvest -> affine fits -> SAE training -> results.
 *
 * rs_pipeline_run schedules one task per harvest (every rank), affine fit, SAE and unique evaluation
 * over worker groups (sched.h); each task runs on its group's communicator (a shallow copy of the
 * pipeline with comm, rank and size of the group; ranks partition tokens inside the task). The
 * stage functions below run one whole stage over p->comm.
 * A finished task leaves one small HDF5 file under <run_dir>/tasks/, written by rank 0 to a
 * temporary name, fsync'd and renamed: the file exists only when the task is complete, and its
 * name carries the task's identity hash, so a restart skips finished work and a changed config
 * never reuses a stale result. Long tasks checkpoint (harvest journal, SAE checkpoints under
 * <run_dir>/ckpt/). <run_dir>/results.h5 is rebuilt from the task files at the end of a run
 * (written to a temporary name and renamed). Layout: docs/store.md. */
#ifndef RESAE_PIPELINE_H
#define RESAE_PIPELINE_H

#include <mpi.h>
#include <signal.h>
#include <stdint.h>

#include "resae/config.h"
#include "resae/err.h"
#include "resae/grid.h"
#include "resae/model_config.h"

#define RS_RUN_CONFIG_FILE "config.yaml"
#define RS_RESULTS_FILE "results.h5"
/* the scheduler's status snapshot (include/resae/sched.h), read by `resae status` */
#define RS_RUN_STATUS_FILE "status.tsv"
/* The message of a rank whose own work succeeded when another rank failed. */
#define RS_PIPELINE_OTHER_RANK "another rank failed (see its error above)"

typedef struct rs_pipeline {
    rs_config cfg;
    rs_model_config mc;
    rs_grid grid;
    MPI_Comm comm;
    int rank, size;
    int force;                   /* recreate an activation store of another identity */
    int until;                   /* last stage to run: -1 all, 0 harvest, 1 affine, 2 train, 3 evaluate */
    volatile sig_atomic_t *stop; /* set by SIGTERM/SIGUSR1: checkpoint and return RS_ERR_INTERRUPTED */
    int n_store_layers;
    int store_layers[512];       /* every layer the store holds: selected and regression layers */
} rs_pipeline;

/* Load the config and model config and build the grid (every rank). */
rs_err rs_pipeline_init(rs_pipeline *p, const char *config_path, MPI_Comm comm);
void rs_pipeline_free(rs_pipeline *p);

/* Run or resume every stage that exists. Collective. */
rs_err rs_pipeline_run(rs_pipeline *p);

/* The stages, each resumable on its own. Collective. */
rs_err rs_pipeline_harvest(rs_pipeline *p);
rs_err rs_pipeline_affine(rs_pipeline *p);
rs_err rs_pipeline_train(rs_pipeline *p);
/* Rebuild <run_dir>/results.h5 from the task files (rank 0 writes; collective). */
rs_err rs_pipeline_results(rs_pipeline *p);
/* The same with the task table of a scheduled run as /tasks (rs_sched_write_table; s may be NULL). */
struct rs_sched;
rs_err rs_pipeline_results_tasks(rs_pipeline *p, const struct rs_sched *s);

/* Task file paths. */
void rs_pipeline_affine_path(char *out, size_t n, const rs_pipeline *p, int a, int b);
void rs_pipeline_sae_name(char *out, size_t n, const rs_grid_sae *s);
void rs_pipeline_sae_path(char *out, size_t n, const rs_pipeline *p, const rs_grid_sae *s);
void rs_pipeline_ckpt_path(char *out, size_t n, const rs_pipeline *p, const rs_grid_sae *s);
/* Load a finished affine fit (A, c, means, float copies, s, R^2); every rank may call it. */
struct rs_affine_map;
rs_err rs_pipeline_load_affine(struct rs_affine_map *m, const rs_pipeline *p, int a, int b);
/* Load a finished SAE and its input scale (SAEs see scale * u; divide reconstructions by it). */
struct rs_sae;
rs_err rs_pipeline_load_sae(struct rs_sae *sae, double *scale, const rs_pipeline *p, const rs_grid_sae *g);

/* Hash of an affine fit from a to b (the grid's pair hash, or one computed the same way). */
uint64_t rs_pipeline_pair_hash(const rs_pipeline *p, int a, int b);

#endif
