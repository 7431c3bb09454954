/* Task files: one small HDF5 file per finished task under <run_dir>/tasks/ (names: tasks.h), written
 * by rank 0 of the task's group to <path>.tmp, fsync'd and renamed, so the file exists only when the
 * task is complete. This module is the only one that knows their contents (docs/store.md "Task
 * files"): it creates, commits and reads every kind, and loads the affine maps and SAEs that later
 * tasks need. The contents are part of the run directory's format: users resume old directories. */
#ifndef RESAE_TASKFILE_H
#define RESAE_TASKFILE_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "resae/actstore.h"
#include "resae/err.h"
#include "resae/stage.h"

/* ---- evaluation tables (task files; results.h5 prefixes set, variant, k, seed) ------------------------ */

#define RS_EVAL_RECON_COLS \
    "layer,pred,scale,l0,dead_frac,mse,ev_target,ev_orig_onestep,ev_orig_chain,n_tokens,dead_frac_train,ev_orig_closed"
#define RS_EVAL_RECON_NC 12
#define RS_EVAL_RED_COLS "layer_a,layer_b,gap,mean_max_cos,mean_max_abs_cos,n_rows"
#define RS_EVAL_RED_NC 6
#define RS_EVAL_CE_COLS "mode,layer,ce,dce,kl,recovered_zero,recovered_mean,overinteraction,n_tokens"
#define RS_EVAL_CE_NC 9
/* CE table modes (column `mode`); layer -1 marks a pass over all layers of the set. */
enum rs_eval_ce_row { RS_CE_ROW_CLEAN = 0, RS_CE_ROW_SINGLE = 1, RS_CE_ROW_TF = 2, RS_CE_ROW_SO = 3,
                      RS_CE_ROW_ZERO = 4, RS_CE_ROW_MEAN = 5, RS_CE_ROW_COUNT = 6 };
extern const char *const rs_eval_ce_row_names[RS_CE_ROW_COUNT];
/* The attribute `ce_modes` of eval task files and /eval: "0=clean,1=single,...", from the names. */
void rs_taskfile_ce_modes(char *out, size_t n);

/* The three tables of an evaluation: dataset name, width, columns and the definition stored with it. */
enum rs_eval_table { RS_EVAL_TABLE_RECON = 0, RS_EVAL_TABLE_RED = 1, RS_EVAL_TABLE_CE = 2, RS_EVAL_TABLE_COUNT = 3 };
typedef struct rs_eval_table_desc {
    const char *name;       /* "recon", "redundancy", "ce" */
    int ncols;
    const char *columns;    /* comma-separated */
    const char *definition; /* METHOD.md as implemented */
} rs_eval_table_desc;
extern const rs_eval_table_desc rs_eval_tables[RS_EVAL_TABLE_COUNT];

/* ---- any task file ------------------------------------------------------------------------------------ */

/* Whether the task file exists, as rank 0 of c->comm sees it (every rank takes the same branch).
 * Collective. */
int rs_taskfile_done(const rs_task_ctx *c, const char *path);
/* Whether a finished task file reads back whole: HDF5 opens it (a truncated tail fails here), every
 * object header verifies its checksum, and, up to RS_TASKFILE_VERIFY_BYTES per file, every dataset's
 * Fletcher-32 checksum verifies (larger datasets are checked when they are read). 0 with the reason
 * in why when not. Serial, on the rank that asks. */
enum { RS_TASKFILE_VERIFY_BYTES = 64 << 20 };
int rs_taskfile_intact(const char *path, char *why, size_t n);
/* Create the task file <path>.tmp (into tmp) for writing, serial HDF5 on one rank, in the HDF5 1.8 file
 * format (every object header checksummed; datasets written by rs_h5_write carry their own checksum).
 * The file is built in memory (HDF5's core driver) and written out as one image at commit, so a full
 * disk fails a plain write rather than an HDF5 close. */
rs_err rs_taskfile_create(hid_t *f, char *tmp, size_t n, const char *path);
/* The same format, written through HDF5 as it goes (results.h5, which holds every task file's contents). */
rs_err rs_taskfile_create_on_disk(hid_t *f, char *tmp, size_t n, const char *path);
/* Close f and commit tmp to path (an in-memory file written as one image; fsync, rename: rs_file_commit). */
rs_err rs_taskfile_commit(hid_t f, const char *tmp, const char *path);
/* The `seconds` attribute of a finished task file (0 if absent or unreadable; clears the error). */
double rs_taskfile_seconds(const char *path);
/* A 2-D double table of `cols` columns: *out (rows, cols), caller frees. */
rs_err rs_taskfile_read_table(double **out, int *rows, hid_t f, const char *name, int cols, const char *file);
/* Write a 2-D double table with its `columns` and `definition` attributes. */
rs_err rs_taskfile_write_table(hid_t f, const char *name, const double *t, int rows, int cols, const char *columns,
                               const char *definition);

/* ---- affine fits -------------------------------------------------------------------------------------- */

struct rs_affine_map;
rs_err rs_taskfile_write_affine(const char *path, const struct rs_affine_map *m, int a, int b, uint64_t hash);
/* Read an affine task file into m (A, means, c and the float copies; s and R^2); d = d_model. */
rs_err rs_taskfile_read_affine(struct rs_affine_map *m, const char *path, int d);
/* The finished fit a -> b of the run (RS_ERR_INVAL if not done yet); every rank may call it. */
rs_err rs_taskfile_load_affine(struct rs_affine_map *m, const rs_run *run, int a, int b);

/* ---- SAEs --------------------------------------------------------------------------------------------- */

struct rs_sae;
struct rs_sae_metrics;
struct rs_sae_config;
rs_err rs_taskfile_write_sae(const char *path, const struct rs_sae *sae, const rs_grid_sae *g,
                             const struct rs_sae_metrics *mt, const struct rs_sae_config *sc, double scale);
/* A finished SAE, its input scale (SAEs see scale * u) and, if dead_frac is not NULL, its dead
 * fraction at the end of training. */
rs_err rs_taskfile_load_sae(struct rs_sae *sae, double *scale, double *dead_frac, const rs_run *run,
                            const rs_grid_sae *g);

/* The definition stored with /eval/affine_only (rows from the ablation task files). */
extern const char *const rs_affine_only_definition;

/* ---- evaluations and ablation baselines --------------------------------------------------------------- */

/* The eval task file: tables recon (M rows), redundancy (npairs), ce (nce) and the attributes. */
rs_err rs_taskfile_write_eval(const char *path, const rs_run *run, const rs_grid_eval *e, const double *recon, int M,
                              const double *red, int npairs, const double *ce, int nce, double seconds);
struct rs_eval_ce_result;
/* res (2M): zero ablation at each layer of the set, then mean ablation at each; aff (n_aff rows of
 * RS_EVAL_CE_NC, may be 0): the affine-only control's CE table (dataset "affine_only"). */
rs_err rs_taskfile_write_ablate(const char *path, const struct rs_eval_ce_result *res, int M, const double *aff,
                                int n_aff);
rs_err rs_taskfile_read_ablate(struct rs_eval_ce_result *res, int M, const char *path);

/* Open the run's activation store read-only on the task's group (collective over c->comm). */
rs_err rs_taskfile_open_store(rs_actstore *st, const rs_task_ctx *c);

#endif
