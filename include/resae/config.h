/* The experiment configuration: one YAML file describes a whole experiment (docs/config.md).
 *
 * rs_config_load parses the file with libyaml into the typed struct below, fills every default,
 * resolves relative paths against the config file's directory and runs every check that needs no
 * model. rs_config_check_model adds the checks that need the model's config.json (layer range,
 * k below the SAE width, ...). Every error message starts with FILE:LINE:COL of the offending
 * value and names the key and the fix.
 *
 * Source locations of every value read from the file are kept in a side table keyed by the
 * value's key path ("sae.k[2]", "layers.sets[0].layers[3]"), so later stages can report errors
 * against the file with rs_config_loc / RS_CONFIG_FAIL. */
#ifndef RESAE_CONFIG_H
#define RESAE_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "resae/dtype.h"
#include "resae/err.h"
#include "resae/model_config.h"
#include "resae/sae.h"

/* Bounds the loader enforces so that hostile input cannot make the grid explode. */
#define RS_CONFIG_MAX_BYTES (1 << 20)
#define RS_CONFIG_MAX_LIST 4096   /* items in a sorted list (layers, regression, top_k, budgets) */
#define RS_CONFIG_MAX_SHORT_LIST 64 /* items in k, seeds, gaps, and the enumeration lists */
#define RS_CONFIG_MAX_VALUES 100000 /* values read in all, counting each use of an alias */
#define RS_CONFIG_MAX_SETS 256    /* layer sets after expanding gap families */
#define RS_CONFIG_MAX_LAYER 100000
#define RS_CONFIG_NAME_MAX 64     /* names: [A-Za-z0-9_.-]{1,63} */

/* A position in the config file, 1-based. line == 0: the value is a default (not in the file). */
typedef struct rs_loc {
    int line, col;
} rs_loc;

enum rs_variant { RS_VARIANT_RAW = 0, RS_VARIANT_RESAE = 1, RS_VARIANT_COUNT = 2 };
enum rs_data_format { RS_FORMAT_HDF5 = 0, RS_FORMAT_BIN_U16 = 1, RS_FORMAT_BIN_U32 = 2 };
enum rs_ce_mode { RS_CE_SINGLE = 0, RS_CE_TF = 1, RS_CE_SO = 2, RS_CE_MODE_COUNT = 3 };
enum rs_ablation { RS_ABLATE_ZERO = 0, RS_ABLATE_MEAN = 1, RS_ABLATION_COUNT = 2 };

/* Names as written in the file (and by rs_config_write_yaml), indexed by the enums above. The
 * config struct keeps enum-valued keys as int: the schema tables (src/config/) read and write every
 * enum field through an int, -1 while a value such as data.format: auto is unresolved. */
extern const char *const rs_variant_names[RS_VARIANT_COUNT];
extern const char *const rs_format_names[3];
extern const char *const rs_dtype_names[2];
extern const char *const rs_ce_mode_names[RS_CE_MODE_COUNT];
extern const char *const rs_ablation_names[RS_ABLATION_COUNT];

/* A list of integers in file order. */
typedef struct rs_int_list {
    int n;
    int64_t *v; // (n)
} rs_int_list;

/* One item of layers.sets: explicit layers, or a gap family (expanded by the grid, because
 * "as many layers as fit" depends on the model). */
typedef struct rs_set_spec {
    char name[RS_CONFIG_NAME_MAX];
    int is_family;            /* 0: explicit `layers`; 1: `start` + `gaps` (+ `count`) */
    rs_int_list layers;       /* explicit: sorted, unique, >= 1 layer */
    int64_t start;            /* family: first layer */
    rs_int_list gaps;         /* family: unique, >= 1 each; expands to sets NAME<gap> */
    int64_t count;            /* family: layers per set; 0 = as many as fit below n_layers */
} rs_set_spec;

typedef struct rs_config {
    char *path;               /* the config file as given (prefix of every error message) */
    char *dir;                /* absolute directory of the config file; relative paths resolve here */

    char name[RS_CONFIG_NAME_MAX];
    char *run_dir;            /* absolute; default <dir>/runs/<name> */
    int64_t seed;             /* base seed of every random stream (SAE init, shuffling) */

    struct {
        char *path;           /* absolute; Hugging Face checkpoint directory */
        int weights;          /* enum rs_weights_mode (model.h): mapped (default) or resident */
    } model;

    struct {
        char *tokens;         /* absolute */
        int format;           /* enum rs_data_format (auto resolved at load) */
        char *dataset;        /* HDF5 dataset holding int32 (n_seq, seq_len) tokens */
        int64_t seq_len;      /* 0 = read from the file (HDF5 only) */
        int exclude_first_position;
        int64_t split_seed;
        int64_t calibration;  /* tokens in each split */
        int64_t train;
        int64_t eval;
    } data;

    struct {
        int n_sets;
        rs_set_spec *sets;    // (n_sets)
        int regression_auto;  /* 1: regression layers = union of the selected layers */
        rs_int_list regression; /* sorted, unique; may be empty (no regression study) */
    } layers;

    int n_variants;
    int variants[RS_VARIANT_COUNT]; /* enum rs_variant, file order, unique */

    struct {
        rs_int_list k;        /* unique, >= 1; < n_latents checked against the model */
        int64_t expansion;    /* n_latents = expansion * hidden_size */
        rs_int_list seeds;    /* unique, >= 0 */
    } sae;

    struct {
        double lambda_rel;
        int64_t max_retries;
        int64_t block_size;
    } affine;

    struct {
        int64_t tokens;       /* per SAE; 0 = auto (data.train) */
        int64_t batch_size;
        double lr;            /* 0 = auto: 2e-4 / sqrt(n_latents / 2^14) */
        double beta1, beta2, eps;
        int64_t warmup_steps;
        double decay_fraction;
        double aux_alpha;
        double max_fvu;       /* a training FVU above this stops the SAE as diverged */
        int64_t dead_tokens;  /* 0 = auto: min(1e7, tokens / 10) */
        int b_dec_init;       /* enum rs_sae_bdec_init (sae.h); names rs_sae_bdec_init_names */
        int enc_init;         /* enum rs_sae_enc_init (sae.h) */
        int aux_norm;         /* enum rs_sae_aux_norm (sae.h) */
        int encoder_precision; /* enum rs_sae_precision (sae.h) */
        int64_t checkpoint_every; /* steps */
        int64_t shuffle_buffer;   /* tokens */
        int64_t curve_bins;       /* 0 = no training curve */
        int64_t max_epochs;       /* train.tokens <= max_epochs * data.train */
    } train;

    struct {
        int64_t batch_sequences;
        int ce;
        int n_ce_modes;
        int ce_modes[RS_CE_MODE_COUNT];     /* enum rs_ce_mode, file order, unique */
        int n_ablations;
        int ablations[RS_ABLATION_COUNT];   /* enum rs_ablation, file order, unique */
        int affine_only;                    /* the affine-only control in the ablation tasks */
        int64_t redundancy_block;
        struct {
            int enabled;
            char *data;       /* absolute path or NULL; required when enabled */
            rs_int_list top_k;
            double l2_c;
            int64_t n_train, n_test;  /* windows per class on each side of the split */
            int64_t classes_per_set;  /* 2..5 */
            int64_t class_sets;       /* at most this many class sets */
            double test_fraction;     /* group split target */
            int64_t pool_skip_first;  /* pool positions pool_skip_first..T-1 */
            int64_t seed;             /* the splits and negative draws */
            char *layer_set;          /* NULL: every layer set; else only the sets with this set's layers */
        } probing;
        struct {
            int enabled;
            rs_int_list budgets;  /* total ablated latents N */
            rs_int_list k;        /* SAE k to run; empty = every sae.k */
            int64_t class_sets;   /* the first this many class sets of the probing plan */
            int64_t n_test;       /* test windows per class for the passes; 0 = all */
            int64_t epochs;       /* probe training epochs */
            int single;           /* single-layer TPP at P */
            int random;           /* the random-latent control */
        } tpp;
    } eval;

    struct {
        int dtype;            /* enum rs_dtype */
        int64_t chunk_rows;
    } store;

    struct {
        int64_t group_size;   /* 0 = auto */
        int64_t max_task_retries;
    } parallel;

    /* side table: key path -> position of its value in the file */
    int n_locs, cap_locs;
    struct rs_config_loc_entry {
        char key[96];
        rs_loc loc;
    } *locs;
} rs_config;

/* Parse and check PATH (no model needed). On failure *out is left freed/zeroed and the error
 * message reads "PATH:LINE:COL: KEY: problem; fix". */
rs_err rs_config_load(rs_config *out, const char *path);
/* Parse YAML text as if read from PATH (PATH only names errors and anchors relative paths). */
rs_err rs_config_load_text(rs_config *out, const char *path, const char *text, size_t len);
void rs_config_free(rs_config *c);

/* Read model.path/config.json; a failure names model.path with its position. */
rs_err rs_config_load_model(rs_model_config *mc, const rs_config *c);
/* Checks that need the model: layers in [0, n_layers-1], gap families fit, k < n_latents, ... */
rs_err rs_config_check_model(const rs_config *c, const rs_model_config *mc);

/* Canonical YAML of the resolved config (every default filled in, absolute paths). It loads
 * again to an identical config. */
rs_err rs_config_write_yaml(FILE *f, const rs_config *c);
/* Hash of the resolved config, excluding what does not change results (run_dir, parallel.*). */
uint64_t rs_config_hash(const rs_config *c);
/* h mixed with every eval.probing key (the probing tasks' identity; tasks.c). */
uint64_t rs_config_probe_hash(uint64_t h, const rs_config *c);
/* h mixed with every eval.probing and eval.tpp key (the TPP tasks' identity). */
uint64_t rs_config_tpp_hash(uint64_t h, const rs_config *c);
/* The key reference of docs/config.md (markdown tables, one per section), printed from the schema
 * tables in src/config/config.c. */
void rs_config_write_keys(FILE *f);

/* ---- derived values (the documented "auto" rules) ---- */
int64_t rs_config_n_latents(const rs_config *c, const rs_model_config *mc);
int64_t rs_config_train_tokens(const rs_config *c);
int64_t rs_config_train_steps(const rs_config *c);
int64_t rs_config_dead_tokens(const rs_config *c);
double rs_config_lr(const rs_config *c, int64_t n_latents);
/* Layers in one member of a gap family: `count`, or as many as fit below n_layers. */
int64_t rs_config_family_count(const rs_set_spec *s, int64_t gap, int n_layers);

/* ---- reporting errors against the file ---- */
/* Position of KEY's value, or of its nearest recorded ancestor ("sae.k[3]" -> "sae.k" -> "sae");
 * line 0 if none is in the file. */
rs_loc rs_config_loc(const rs_config *c, const char *key);
/* Record "PATH:LINE:COL: KEY: message" (the position from rs_config_loc) and return code. */
rs_err rs_config_fail_at(const rs_config *c, rs_err code, const char *key, const char *file, int line,
                         const char *func, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
#define RS_CONFIG_FAIL(c, key, ...) \
    return rs_config_fail_at((c), RS_ERR_CONFIG, (key), __FILE__, __LINE__, __func__, __VA_ARGS__)

#endif
