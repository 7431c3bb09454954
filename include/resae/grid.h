/* The grid an experiment config implies (METHOD.md section 7): expanded layer sets, affine fits,
 * cross-layer regression pairs, the SAEs to train after sharing identical work, and the
 * evaluations. A pure computation from (config, model config); later stages schedule its items.
 *
 * Sharing: a raw SAE for (layer, k, seed) is trained once for all sets containing the layer; the
 * resae SAE at the first layer of a set IS that raw SAE; a resae SAE at l_m with predecessor
 * l_{m-1} is identified by (l_{m-1}, l_m, k, seed) and shared between sets with that consecutive
 * pair. Every item carries a 64-bit identity hash over everything that determines its output
 * (inputs, hyperparameters, schema version), so a changed config never reuses stale results. */
#ifndef RESAE_GRID_H
#define RESAE_GRID_H

#include <stdint.h>

#include "resae/config.h"
#include "resae/model_config.h"
#include "resae/sae.h"

/* One expanded layer set. */
typedef struct rs_grid_set {
    char name[RS_CONFIG_NAME_MAX + 24]; /* explicit: its name; gap family: NAME<gap> */
    int spec;                 /* index into config layers.sets */
    int gap;                  /* the family's gap, 0 for explicit sets */
    int n;                    /* number of layers */
    int *layers;              // (n) ascending
    int same_as;              /* index of an earlier set with identical layers, or -1 */
} rs_grid_set;

/* An affine fit y = A x + c from layer a to layer b (a < b). */
typedef struct rs_grid_pair {
    int a, b;
    uint64_t hash;            /* same (a, b) -> same hash, whichever list it is in */
} rs_grid_pair;


typedef struct rs_grid_sae {
    enum rs_variant kind;     /* raw (on h_l) or resae (on the residual after the map from pred) */
    int layer;
    int pred;                 /* predecessor layer (resae), -1 for raw */
    int affine;               /* index into affine[] of (pred, layer), -1 for raw */
    int k;
    int64_t seed;             /* a value of sae.seeds */
    uint64_t hash;
} rs_grid_sae;

/* One evaluation: a set x variant x k x seed; reads the SAEs of every layer of the set. */
typedef struct rs_grid_eval {
    int set;                  /* index into sets[] */
    enum rs_variant variant;
    int k;
    int64_t seed;
    int sae_off;              /* the set's SAEs are eval_sae[sae_off .. sae_off + sets[set].n) */
    uint64_t hash;            /* independent of the set's name: identical sets evaluate identically */
} rs_grid_eval;

/* Counts of the work of the evaluation stage, per kind. */
typedef struct rs_grid_eval_counts {
    int64_t recon;            /* per-layer reconstruction metrics (EV, L0, dead), sum of set sizes */
    int64_t redundancy;       /* decoder-redundancy layer pairs */
    int64_t ce_single;        /* single-layer splice forward passes */
    int64_t ce_joint;         /* joint splice forward passes (tf, so) */
    int64_t ce_ablation;      /* ablation-baseline forward passes (shared across variants, k, seeds) */
    int64_t probing;
    int64_t tpp;
} rs_grid_eval_counts;

/* Rough cost in FLOPs per stage (see rs_grid_estimate_cost). */
typedef struct rs_grid_cost {
    double harvest, affine, train, eval;
    double total;
    int64_t seq_len_assumed;
} rs_grid_cost;

typedef struct rs_grid {
    int n_layers, d_model;    /* of the model */
    int64_t n_latents;
    int64_t train_tokens, train_steps, dead_tokens;
    double lr;                /* resolved learning rate */
    uint64_t config_hash;     /* rs_config_hash */
    uint64_t inputs_hash;     /* model config + data + splits + store dtype + schema version */

    int n_sets;
    rs_grid_set *sets;        // (n_sets)
    int n_affine;
    rs_grid_pair *affine;     // (n_affine) unique consecutive pairs, sorted by (a, b)
    int n_regression;
    rs_grid_pair *regression; // (n_regression) every a < b of the regression layers
    int n_regression_extra;   /* regression pairs that are not also affine pairs (extra fits) */
    int n_union_layers;
    int *union_layers;        // (n_union_layers) every selected layer, ascending
    int n_saes;
    rs_grid_sae *saes;        // (n_saes) unique
    int n_raw, n_resae;
    int n_evals;
    rs_grid_eval *evals;      // (n_evals)
    int n_evals_unique;       /* distinct eval hashes (identical sets share evaluations) */
    int *eval_sae;            // (sum of set sizes over evals) indices into saes[]
    rs_grid_eval_counts counts;
} rs_grid;

/* Build the grid. Runs rs_config_check_model first (errors point into the config file). */
rs_err rs_grid_build(rs_grid *g, const rs_config *c, const rs_model_config *mc);
void rs_grid_free(rs_grid *g);

/* Index of the SAE with this identity, or -1. pred is ignored for RS_VARIANT_RAW. */
int rs_grid_find_sae(const rs_grid *g, enum rs_variant kind, int layer, int pred, int k, int64_t seed);

/* The seed of SAE S's random streams (initialization; the data order xors a constant into it):
 * the base seed and the SAE's identity. */
uint64_t rs_grid_sae_seed(const rs_grid_sae *s, const rs_config *c);
/* The trainer settings of SAE S: the train.* section with its auto rules resolved (steps, lr,
 * dead_tokens), the grid's width and S's k and seed (rs_grid_sae_seed). The caller sets ckpt_path
 * and stop. Every setting read here is in the SAE's identity hash except checkpoint_every. */
void rs_grid_sae_config(rs_sae_config *sc, const rs_grid *g, const rs_config *c, const rs_grid_sae *s);

/* Rough FLOPs of each stage (forward passes, Gram and solve, SAE steps, evaluation passes). The
 * sequence length is data.seq_len, or the model's max_position_embeddings when read from the file. */
void rs_grid_estimate_cost(rs_grid_cost *out, const rs_grid *g, const rs_config *c, const rs_model_config *mc);

#endif
