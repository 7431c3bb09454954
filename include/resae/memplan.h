/* The memory plan of a run: the peak memory of every stage per rank and per node, computed from the
 * config, the model's tensor table and the sizes the stages allocate (docs/scaling.md). `resae
 * validate` prints it; `resae run` refuses, before any work, a run whose stage cannot fit the node.
 *
 * Per rank is the private memory of one process (its heap and the process's own baseline: MPI,
 * HDF5, OpenBLAS). Shared is what the node's ranks read through one page-cache copy: the checkpoint
 * pages a stage maps (model.weights: mapped). A node holds ranks_per_node x per rank + shared. Private
 * memory that does not fit is fatal (the kernel kills a rank); shared pages that do not fit are only
 * read again from disk, so the plan warns about them and refuses only the private part. */
#ifndef RESAE_MEMPLAN_H
#define RESAE_MEMPLAN_H

#include <stdio.h>

#include "resae/config.h"
#include "resae/err.h"
#include "resae/grid.h"
#include "resae/model.h"

enum rs_mem_stage { RS_MEM_HARVEST, RS_MEM_AFFINE, RS_MEM_TRAIN, RS_MEM_EVAL, RS_MEM_PROBE, RS_MEM_TPP, RS_MEM_STAGES };

#define RS_MEM_MAX_PARTS 10

/* The private memory of one rank before any stage runs (MPI, HDF5, OpenBLAS, the binary), in every
 * stage's total: an allowance, not measured on its own; tests/bench/rehearsal.py checks the totals. */
#define RS_MEM_BASELINE_BYTES (64.0 * 1048576.0)

typedef struct rs_mem_part {
    const char *what;
    double bytes;
} rs_mem_part;

typedef struct rs_mem_stage_plan {
    const char *name;  /* as the tasks are named: harvest, affine, train, evaluate, probe, tpp */
    int used;          /* the grid runs this stage */
    double rank;       /* private bytes of the busiest rank */
    double shared;     /* checkpoint bytes the stage reads through the node's page cache */
    double node;       /* ranks_per_node * rank + shared */
    const char *knob;  /* the setting that lowers `rank` most */
    int n_parts;
    rs_mem_part parts[RS_MEM_MAX_PARTS]; /* the largest contributions to rank, largest first */
} rs_mem_stage_plan;

typedef struct rs_mem_plan {
    int ranks_per_node;
    int group_ranks;   /* ranks an SAE's batch is shared over (parallel.group_size; auto plans for 1) */
    rs_mem_stage_plan st[RS_MEM_STAGES];
    int peak_stage;    /* the stage with the largest private memory per rank */
    double node_private; /* ranks_per_node x the largest per-rank private memory (groups run side by side) */
    double node_peak;    /* node_private + the largest shared part */
} rs_mem_plan;

/* The plan for ranks_per_node ranks on each node. m is the model's tensor table (loaded mapped or
 * resident; only sizes are read). */
void rs_mem_plan_build(rs_mem_plan *p, const rs_config *c, const rs_model_config *mc, const rs_grid *g,
                       const rs_model *m, int ranks_per_node);

/* The node's memory in bytes: RESAE_NODE_MEMORY if set (bytes, or a number with K, M, G or T),
 * else the smallest of MemTotal (/proc/meminfo), the cgroup's memory.max and Slurm's
 * SLURM_MEM_PER_NODE; *source names where it came from. 0 when none can be read. */
double rs_mem_node_bytes(const char **source);

/* RS_OK when every stage fits node_bytes; else RS_ERR_CONFIG naming the stage, its size and the
 * setting to change. Writes a warning to stderr when only the shared pages do not fit. */
rs_err rs_mem_plan_check(const rs_mem_plan *p, double node_bytes, const char *node_source, const char *config_path);

/* The plan as YAML comments ("# memory plan ..."); and as one JSON object (resae validate --plan-json). */
void rs_mem_plan_print(FILE *f, const rs_mem_plan *p, double node_bytes, const char *node_source);
void rs_mem_plan_write_json(FILE *f, const rs_mem_plan *p, double node_bytes);

#endif
