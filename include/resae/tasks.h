/* The tasks of a run, worked out once: the scheduler's graph (run.c) and `resae status` both read
 * this list. Every task but the harvest leaves one task file <run_dir>/tasks/<kind>_<name>_<hash>.h5
 * (taskfile.h) whose name carries the task's identity hash, so a changed config never reuses a
 * stale result. The file names are part of the run directory's format (docs/store.md): users
 * resume old run directories. */
#ifndef RESAE_TASKS_H
#define RESAE_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "resae/err.h"
#include "resae/stage.h"

/* Task kinds (the scheduler's `kind`, recorded in status.tsv and results.h5 /tasks: values fixed). */
enum rs_task_kind {
    RS_TASK_HARVEST = 0, /* the activation store (on every rank) */
    RS_TASK_AFFINE = 1,  /* one affine fit a -> b */
    RS_TASK_TRAIN = 2,   /* one SAE */
    RS_TASK_EVAL = 3,    /* one unique evaluation (identical sets share one) */
    RS_TASK_ABLATE = 4,  /* the zero/mean ablation baselines of one distinct set */
    RS_TASK_PROBE = 5,   /* sparse probing of one distinct set: every variant, k and seed */
    RS_TASK_TPP = 6,     /* targeted probe perturbation of one probed set: every variant, eval.tpp.k and seed */
    RS_TASK_KIND_COUNT = 7
};
extern const char *const rs_task_kind_names[RS_TASK_KIND_COUNT]; /* harvest affine train evaluate ablate probe tpp */
const char *rs_task_kind_name(enum rs_task_kind k);
rs_err rs_task_kind_parse(enum rs_task_kind *out, const char *name);
/* The stage a kind belongs to (ablation baselines: the evaluation stage). */
enum rs_stage rs_task_kind_stage(enum rs_task_kind k);

typedef struct rs_task {
    enum rs_task_kind kind;
    int index;     /* affine: pair index (rs_task_list.pairs); train: grid.saes; eval: grid.evals; ablate: grid.sets */
    char *name;    /* for logs and the task table, e.g. "sae raw_L3_k32_s0" (owned) */
    char *path;    /* the task file; "" for the harvest (owned) */
    uint64_t hash; /* identity hash given to the scheduler */
    double cost;   /* rough floating-point operations (only ratios matter) */
    int n_deps;
    int *deps;     // (n_deps) indices of tasks that must be done first (into the list's dep array)
} rs_task;

typedef struct rs_task_list {
    int n;
    rs_task *tasks;  // (n) harvest, affine fits, SAEs, ablation baselines, evaluations: stages never decrease
    int n_pairs;
    int (*pairs)[2]; // (n_pairs) every affine fit: consecutive pairs, then regression pairs not among them
    int *dep_store;  /* backing of every task's deps (owned) */
} rs_task_list;

/* Every task of the run, every stage (run.c drops those after opts.until: a suffix of the list). */
rs_err rs_tasks_build(rs_task_list *out, const rs_run *run);
void rs_tasks_free(rs_task_list *l);
/* Tasks of one kind in the list. */
int rs_tasks_count(const rs_task_list *l, enum rs_task_kind k);

/* ---- task names and paths --------------------------------------------------------------------------- */

/* Hash of an affine fit from a to b (the grid's pair hash; 0 if the grid has no such pair). */
uint64_t rs_tasks_pair_hash(const rs_run *run, int a, int b);
rs_err rs_tasks_affine_path(char *out, size_t n, const rs_run *run, int a, int b);
/* "raw_L<l>_k<k>_s<seed>" or "resae_L<l>_P<pred>_k<k>_s<seed>". */
void rs_tasks_sae_name(char *out, size_t n, const rs_grid_sae *s);
rs_err rs_tasks_sae_path(char *out, size_t n, const rs_run *run, const rs_grid_sae *s);
rs_err rs_tasks_ckpt_path(char *out, size_t n, const rs_run *run, const rs_grid_sae *s);
/* "<set>_<variant>_k<k>_s<seed>"; identical sets share the task file of the first one. */
void rs_tasks_eval_name(char *out, size_t n, const rs_run *run, const rs_grid_eval *e);
rs_err rs_tasks_eval_path(char *out, size_t n, const rs_run *run, const rs_grid_eval *e);
/* Whether grid.evals[i] is the first evaluation with its hash (the one that runs). */
int rs_tasks_eval_first(const rs_run *run, int i);
/* Whether the run has ablation tasks (eval.ce on and ablations or eval.affine_only configured). */
int rs_tasks_ablate_needed(const rs_run *run);
/* Whether the ablation task of grid.sets[set] also runs the affine-only control (eval.ce and
 * eval.affine_only on, CE modes configured, at least two layers). */
int rs_tasks_affine_only(const rs_run *run, int set);
rs_err rs_tasks_ablate_path(char *out, size_t n, const rs_run *run, int set);
/* Whether grid.sets[set] has a probing task: eval.probing on, the first set with its layers, and
 * (eval.probing.layer_set) the named set's layers. */
int rs_tasks_probe_needed(const rs_run *run, int set);
/* tasks/probe_<set>_<hash>.h5; the hash covers the inputs, the layers, every SAE of the set's
 * evaluations and the eval.probing keys. */
uint64_t rs_tasks_probe_hash(const rs_run *run, int set);
rs_err rs_tasks_probe_path(char *out, size_t n, const rs_run *run, int set);
/* Whether grid.sets[set] has a TPP task: eval.tpp on and the set chosen as for probing. */
int rs_tasks_tpp_needed(const rs_run *run, int set);
/* Whether evaluation e is in the TPP grid (its k in eval.tpp.k, or that list empty). */
int rs_tasks_tpp_eval(const rs_run *run, const rs_grid_eval *e);
/* tasks/tpp_<set>_<hash>.h5; the hash covers the inputs, the layers, the TPP evaluations' SAEs, the
 * set's affine maps and the eval.probing and eval.tpp keys. */
uint64_t rs_tasks_tpp_hash(const rs_run *run, int set);
rs_err rs_tasks_tpp_path(char *out, size_t n, const rs_run *run, int set);
/* <run_dir>/<name> (the activation store, results.h5, config.yaml, the status snapshot, ...). */
rs_err rs_tasks_run_file(char *out, size_t n, const rs_run *run, const char *name);

#endif
