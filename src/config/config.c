/* Experiment configuration: the schema tables (every key declared once: type, range, default,
 * identity hashes, documentation), the hooks for what a table cannot say (layer sets, the data
 * format's auto rule, cross-field checks), loading, derived values and the model checks.
 * The table walkers are in schema.c, the typed YAML getters in yaml_get.c; docs/config.md's key
 * reference is printed from these tables (rs_config_write_keys). */
#define _XOPEN_SOURCE 700 /* realpath */
#include "resae/config.h"
#include "resae/model.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "resae/util.h"
#include "resae/version.h"
#include "schema.h"
#include "yaml_get.h"

const char *const rs_variant_names[RS_VARIANT_COUNT] = {"raw", "resae"};
const char *const rs_format_names[3] = {"hdf5", "bin_u16", "bin_u32"};
const char *const rs_dtype_names[2] = {"float32", "float16"};
const char *const rs_ce_mode_names[RS_CE_MODE_COUNT] = {"single", "tf", "so"};
const char *const rs_ablation_names[RS_ABLATION_COUNT] = {"zero", "mean"};

#define I64_MAX_TOKENS ((int64_t)1e15)
#define FORMAT_AUTO 3 /* index of "auto" in format_words */
static const char *const format_words[] = {"hdf5", "bin_u16", "bin_u32", "auto"};

/* ============================================================================================
 * Hooks: what a table entry cannot express
 * ========================================================================================== */

static rs_err run_dir_default(yg_parser *p, yaml_node_t *v) {
    (void)v;
    if (p->c->run_dir) return RS_OK;
    char rel[RS_CONFIG_NAME_MAX + 8];
    snprintf(rel, sizeof rel, "runs/%s", p->c->name);
    return yg_resolve_path(p->c, rel, &p->c->run_dir);
}

/* data.format auto: .h5/.hdf5 is HDF5; a flat file must name its format. */
static rs_err format_resolve(yg_parser *p, yaml_node_t *v) {
    rs_config *c = p->c;
    if (c->data.format == FORMAT_AUTO) c->data.format = -1;
    if (c->data.format >= 0) return RS_OK;
    const char *dot = strrchr(c->data.tokens, '.');
    if (dot && (!strcmp(dot, ".h5") || !strcmp(dot, ".hdf5"))) c->data.format = RS_FORMAT_HDF5;
    else RS_CONFIG_FAIL(c, v ? "data.format" : "data.tokens",
                        "cannot tell the token format of '%s' from its extension (auto knows .h5/.hdf5); "
                        "set data.format to hdf5, bin_u16 or bin_u32", c->data.tokens);
    return RS_OK;
}

static rs_err seq_len_check(yg_parser *p, yaml_node_t *v) {
    rs_config *c = p->c;
    if (c->data.format != RS_FORMAT_HDF5 && c->data.seq_len == 0)
        RS_CONFIG_FAIL(c, v ? "data.seq_len" : "data.format",
                       "flat %s token files need data.seq_len (tokens per sequence); add e.g. 'seq_len: 2048' "
                       "under data", rs_format_names[c->data.format]);
    return RS_OK;
}

static rs_err study_check(const rs_config *c, const char *key, int enabled, const char *data) {
    if (enabled && !data) {
        char sub[96];
        yg_join_key(sub, sizeof sub, key, "enabled");
        RS_CONFIG_FAIL(c, sub, "%s is enabled but %s.data (the labelled sequences) is not set; add it or set "
                       "enabled: false", key, key);
    }
    return RS_OK;
}

static rs_err probing_check(yg_parser *p, yaml_node_t *n) {
    (void)n;
    return study_check(p->c, "eval.probing", p->c->eval.probing.enabled, p->c->eval.probing.data);
}

static rs_err tpp_check(yg_parser *p, yaml_node_t *n) {
    (void)n;
    if (p->c->eval.tpp.enabled && !p->c->eval.probing.data)
        RS_CONFIG_FAIL(p->c, "eval.tpp.enabled", "TPP uses the labelled sequences of eval.probing.data, which is not "
                       "set; add it (eval.probing.enabled may stay false) or set eval.tpp.enabled: false");
    return RS_OK;
}

/* layers.regression: null = the union of the selected layers (regression_auto), [] = none. */
static rs_err regression_parse(yg_parser *p, yaml_node_t *v) {
    if (yg_is_null(v)) return RS_OK;
    p->c->layers.regression_auto = 0;
    return yg_int_list(p, v, "layers.regression", "layer", 0, RS_CONFIG_MAX_LAYER,
                       YG_LIST_UNIQUE | YG_LIST_SORTED | YG_LIST_MAY_BE_EMPTY, &p->c->layers.regression);
}

static void regression_write(FILE *f, const rs_config *c, int indent) {
    fprintf(f, "%*sregression: ", indent, "");
    if (c->layers.regression_auto) fputs("null", f);
    else rs_cfg_put_list(f, &c->layers.regression);
    fputc('\n', f);
}

static void regression_default(rs_config *c) { c->layers.regression_auto = 1; }

static rs_err sets_parse(yg_parser *p, yaml_node_t *v);
static void sets_write(FILE *f, const rs_config *c, int indent);
static rs_err check_consistency(yg_parser *p, yaml_node_t *n);

/* ============================================================================================
 * The schema: one table per section, in the order of the canonical YAML
 * ========================================================================================== */

#define OFF(m) offsetof(rs_config, m)
#define LIST(...) (const int64_t[]){__VA_ARGS__}, .def_n = sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)
#define INT(key, m, l, h, d, hs)                                                                        \
    .name = key, .kind = CFG_INT, .off = OFF(m), .lo = (l), .hi = (h), .def = (d), .hash = (hs)
#define NUM(key, m, l, lo_x, h, hi_x, d, hs)                                                                   \
    .name = key, .kind = CFG_NUM, .off = OFF(m), .num_lo = (l), .lo_open = (lo_x), .num_hi = (h),             \
    .hi_open = (hi_x), .def_num = (d), .hash = (hs)
#define BOOL(key, m, d, hs) .name = key, .kind = CFG_BOOL, .off = OFF(m), .def = (d), .hash = (hs)
#define ENUM(key, m, nm, d, hs)                                                                                \
    .name = key, .kind = CFG_ENUM, .off = OFF(m), .names = (nm), .n_names = (int)(sizeof(nm) / sizeof *(nm)),  \
    .def = (d), .hash = (hs)
#define WORDS(key, m, cnt, nm, n_nm, item, hs)                                                                 \
    .name = key, .kind = CFG_ENUM_LIST, .off = OFF(m), .count_off = OFF(cnt), .names = (nm), .n_names = (n_nm), \
    .what = (item), .hash = (hs)
#define INTS(key, m, item, l, h, lf, hs)                                                                       \
    .name = key, .kind = CFG_INT_LIST, .off = OFF(m), .what = (item), .lo = (l), .hi = (h), .list_flags = (lf), \
    .hash = (hs), .def_list = LIST
#define PATH(key, m, hs) .name = key, .kind = CFG_PATH, .off = OFF(m), .hash = (hs)
#define SECTION(key, s) .name = key, .kind = CFG_SECTION, .sub = &(s)
#define FIELDS(t) (t), (int)(sizeof(t) / sizeof *(t))

/* every field that can change a result is in the config hash */
#define HC H_CONFIG
#define HIN (H_CONFIG | H_INPUTS)

static const rs_cfg_field model_fields[] = {
    {PATH("path", model.path, HIN), .required = "the Hugging Face checkpoint directory",
     .doc = "Hugging Face checkpoint directory (`config.json`, `*.safetensors`)"},
    {ENUM("weights", model.weights, rs_weights_mode_names, RS_WEIGHTS_MAPPED, 0),
     .unhashed = "bitwise the same results either way",
     .doc = "`mapped`: the transformer blocks (and an untied embedding) stay in the checkpoint's read-only "
            "mapping in its dtype, one copy per node in the page cache, widened to fp32 one block at a time per "
            "rank; `resident`: every rank holds all weights as fp32"},
};
static const rs_cfg_section model_section = {"model", FIELDS(model_fields), 0, NULL, NULL};

static const rs_cfg_field splits_fields[] = {
    {INT("calibration", data.calibration, 1, I64_MAX_TOKENS, 500000, HIN),
     .doc = "tokens for the affine fits and the scale `s_m`"},
    {INT("train", data.train, 1, I64_MAX_TOKENS, 10000000, HIN), .doc = "tokens of the SAE training split"},
    {INT("eval", data.eval, 1, I64_MAX_TOKENS, 1000000, HIN), .doc = "tokens for every metric"},
};
static const rs_cfg_section splits_section = {"data.splits", FIELDS(splits_fields), CFG_FLOW, NULL, NULL};

static const rs_cfg_field data_fields[] = {
    {PATH("tokens", data.tokens, HIN), .doc = "token file",
     .required = "the token file: HDF5 with an int32 (n_seq, seq_len) dataset, or flat .bin"},
    {ENUM("format", data.format, format_words, -1, HIN), .flags = CFG_AUTO, .after = format_resolve,
     .doc = "`auto`: `.h5`/`.hdf5` means hdf5; other extensions must name the format. The resolved config "
            "holds the concrete format"},
    {.name = "dataset", .kind = CFG_STR, .off = OFF(data.dataset), .def_str = "/tokens", .hash = HIN,
     .doc = "HDF5 dataset of int32 tokens, shape `(n_seq, seq_len)`"},
    {INT("seq_len", data.seq_len, 2, 1 << 20, 0, HIN), .flags = CFG_NULL, .after = seq_len_check,
     .doc = "tokens per sequence; null = read from the HDF5 file; **required** for `bin_*` (flat token "
            "streams cut into sequences)"},
    {BOOL("exclude_first_position", data.exclude_first_position, 1, HIN),
     .doc = "leave position 0 (attention sink) out of fits, training and activation metrics"},
    {INT("split_seed", data.split_seed, 0, INT64_MAX, 0, HIN), .doc = "seed of the assignment of sequences to splits"},
    {SECTION("splits", splits_section)},
};
static const rs_cfg_section data_section = {"data", FIELDS(data_fields), 0, NULL,
                                            "Splits are disjoint by sequence (METHOD.md section 1)."};

static const rs_cfg_field layers_fields[] = {
    {.name = "sets", .kind = CFG_CUSTOM, .parse = sets_parse, .write = sets_write, .hash = HC | H_GRID,
     .required = "a list of layer sets", .doc_type = "list of set items", .doc_default = "**required**",
     .doc_range = "non-empty; at most 256 after expanding gap families", .doc = "the selected-layer sets (below)"},
    {.name = "regression", .kind = CFG_CUSTOM, .parse = regression_parse, .write = regression_write,
     .set_default = regression_default, .hash = HC | H_GRID, .doc_type = "list of layers, or null",
     .doc_default = "null", .doc_range = "sorted, unique",
     .doc = "layers of the cross-layer regression study (an affine fit for every ordered pair `a < b`); null = "
            "the union of all selected layers; `[]` = no regression study"},
};
static const rs_cfg_section layers_section = {"layers", FIELDS(layers_fields), 0, NULL, NULL};

static const rs_cfg_field sae_fields[] = {
    {INTS("k", sae.k, "k", 1, 1 << 24, YG_LIST_UNIQUE, HC | H_GRID)(40, 80, 160, 320),
     .doc = "TopK sparsities; each below n_latents"},
    {INT("expansion", sae.expansion, 1, 1024, 8, HC | H_GRID), .doc = "`n_latents = expansion * hidden_size`"},
    {INTS("seeds", sae.seeds, "seed", 0, INT32_MAX, YG_LIST_UNIQUE, HC | H_GRID)(0),
     .doc = "replicate seeds; every SAE is trained once per seed"},
};
static const rs_cfg_section sae_section = {"sae", FIELDS(sae_fields), 0, NULL, NULL};

static const rs_cfg_field affine_fields[] = {
    {NUM("lambda_rel", affine.lambda_rel, 0, 1, 1e6, 0, 1e-4, HC | H_AFFINE),
     .doc = "ridge `lambda = lambda_rel * trace(C_xx) / d`"},
    {INT("max_retries", affine.max_retries, 0, 20, 4, HC | H_AFFINE),
     .doc = "times lambda is raised 10x when Cholesky fails"},
    {INT("block_size", affine.block_size, 1, 4096, 64, HC),
     .unhashed = "layout and summation order only", .doc = "ScaLAPACK block size (MB = NB)"},
};
static const rs_cfg_section affine_section = {"affine", FIELDS(affine_fields), 0, NULL, NULL};

static const rs_cfg_field adam_fields[] = {
    {NUM("beta1", train.beta1, 0, 0, 1, 1, 0.9, HC | H_SAE), .doc = "Adam first-moment decay"},
    {NUM("beta2", train.beta2, 0, 0, 1, 1, 0.999, HC | H_SAE), .doc = "Adam second-moment decay"},
    {NUM("eps", train.eps, 0, 1, 1, 0, 6.25e-10, HC | H_SAE), .doc = "Adam epsilon"},
};
static const rs_cfg_section adam_section = {"train.adam", FIELDS(adam_fields), CFG_FLOW, NULL, NULL};

static const rs_cfg_field train_fields[] = {
    {INT("tokens", train.tokens, 1, I64_MAX_TOKENS, 0, HC | H_SAE), .flags = CFG_AUTO,
     .resolve_int = rs_config_train_tokens, .doc_range = "[batch_size, max_epochs * splits.train]",
     .doc = "training tokens per SAE; auto = `data.splits.train`"},
    {INT("batch_size", train.batch_size, 1, 1 << 24, 4096, HC | H_SAE), .doc = "global batch in tokens"},
    {NUM("lr", train.lr, 0, 1, 10, 0, 0, HC | H_SAE), .flags = CFG_AUTO, .resolve_num = rs_config_lr,
     .doc = "auto = `2e-4 / sqrt(n_latents / 2^14)`"},
    {SECTION("adam", adam_section)},
    {INT("warmup_steps", train.warmup_steps, 0, INT32_MAX, 100, HC | H_SAE), .doc = "linear warm-up steps"},
    {NUM("decay_fraction", train.decay_fraction, 0, 0, 1, 0, 0.2, HC | H_SAE),
     .doc = "final fraction of steps with linear decay to 0"},
    {NUM("aux_alpha", train.aux_alpha, 0, 0, 1e3, 0, 0.03125, HC | H_SAE), .doc = "AuxK loss weight"},
    {NUM("max_fvu", train.max_fvu, 1, 0, 1e12, 0, 100, 0), .unhashed = "a stop for diverged training only",
     .doc = "a training step whose FVU exceeds this stops the SAE as diverged (predicting the mean gives FVU 1): "
            "the error names the SAE, the step and the weights' norms; no SAE is written"},
    {INT("dead_tokens", train.dead_tokens, 1, I64_MAX_TOKENS, 0, HC | H_SAE), .flags = CFG_AUTO,
     .resolve_int = rs_config_dead_tokens, .doc_range = "[1, tokens]",
     .doc = "a latent inactive this many tokens is dead; auto = `min(10^7, tokens / 10)`"},
    {ENUM("b_dec_init", train.b_dec_init, rs_sae_bdec_init_names, RS_SAE_BDEC_GEOMEDIAN, HC | H_SAE),
     .doc = "decoder bias initialization"},
    {ENUM("enc_init", train.enc_init, rs_sae_enc_init_names, RS_SAE_ENC_TIED, HC | H_SAE), .flags = CFG_HASH_SET,
     .doc = "encoder initialization (docs/sae.md, Recipe): `tied` W_enc = W_dec; `data` scaled by the "
            "least-squares fit of the init sample's reconstruction; `openai` scaled so random unit inputs "
            "reconstruct to unit norm; `sparsify` uniform +-1/sqrt(d) entries, decoder their normalised copy"},
    {ENUM("aux_norm", train.aux_norm, rs_sae_aux_norm_names, RS_SAE_AUX_RESIDUAL, HC | H_SAE), .flags = CFG_HASH_SET,
     .doc = "AuxK loss denominator: `residual` = the residual's variance (METHOD.md, OpenAI); `input` = the "
            "input's variance, the loss weighted by min(n_dead / k_aux, 1) (sparsify)"},
    {ENUM("encoder_precision", train.encoder_precision, rs_sae_precision_names, RS_SAE_PREC_FP32, HC | H_SAE),
     .flags = CFG_HASH_SET,
     .doc = "precision of the training encoder product (docs/sae.md, Reduced-precision encoder): `fp32` OpenBLAS "
            "SGEMM; `bf16` inputs and W_enc rounded to bfloat16, float32 accumulation (oneDNN; needs "
            "libdnnl-dev at build time and a CPU with AVX512_BF16)"},
    {INT("checkpoint_every", train.checkpoint_every, 1, INT32_MAX, 200, 0),
     .unhashed = "a resumed run continues bit for bit", .doc = "steps between checkpoints"},
    {INT("shuffle_buffer", train.shuffle_buffer, 1, (int64_t)1 << 34, 65536, HC | H_SAE),
     .doc_range = "[batch_size, 2^34]", .doc = "tokens in the shuffle buffer"},
    {INT("max_epochs", train.max_epochs, 1, 1000, 1, 0), .unhashed = "a bound on train.tokens only",
     .doc = "passes over the train split an SAE may make: `train.tokens <= max_epochs * splits.train` (each "
            "pass visits the split in a new seeded order)"},
    {INT("curve_bins", train.curve_bins, 0, RS_SAE_MAX_CURVE_BINS, 0, HC | H_SAE), .flags = CFG_HASH_SET,
     .doc_range = "0, or a multiple of 5 in [5, 100]",
     .doc = "record the training FVU averaged over each of this many equal spans of steps, and "
            "`fvu_last20_gain`; 0 = no curve"},
};
static const rs_cfg_section train_section = {
    "train", FIELDS(train_fields), 0, NULL,
    "Consistency: `steps = tokens / batch_size` (at least 1) and "
    "`warmup_steps + ceil(decay_fraction * steps) <= steps`."};

#define HE (H_CONFIG | H_EVAL)
/* probing runs in its own tasks (H_PROBE); `enabled` stays in the eval hash, as it always was */
#define HP (H_CONFIG | H_PROBE)
static const rs_cfg_field probing_fields[] = {
    {BOOL("enabled", eval.probing.enabled, 0, HE | H_PROBE), .flags = CFG_GATE,
     .doc = "sparse probing (SAEBench protocol, docs/probing.md)"},
    {PATH("data", eval.probing.data, HP), .flags = CFG_NULL, .doc_range = "required when enabled",
     .doc = "labelled sequences (HDF5: /tokens, /labels, /label_names, optional /groups)"},
    {INTS("top_k", eval.probing.top_k, "K", 1, 1 << 24, YG_LIST_UNIQUE | YG_LIST_SORTED, HP)(1, 2, 5),
     .doc = "numbers of latents K"},
    {NUM("l2_c", eval.probing.l2_c, 0, 1, 1e12, 0, 1.0, HP),
     .doc = "inverse L2 strength C of the logistic regression"},
    {INT("n_train", eval.probing.n_train, 1, 1 << 24, 250, HP),
     .doc = "windows per class on the train side (a binary task has 2 n_train)"},
    {INT("n_test", eval.probing.n_test, 1, 1 << 24, 100, HP), .doc = "windows per class on the test side"},
    {INT("classes_per_set", eval.probing.classes_per_set, 2, 5, 5, HP), .doc = "classes of one class set"},
    {INT("class_sets", eval.probing.class_sets, 1, 64, 4, HP), .doc = "at most this many class sets"},
    {NUM("test_fraction", eval.probing.test_fraction, 0, 1, 1, 1, 0.25, HP),
     .doc = "target share of a class's windows on the test side of the group split"},
    {INT("pool_skip_first", eval.probing.pool_skip_first, 0, 1 << 20, 1, HP), .doc_range = "[0, T-1]",
     .doc = "positions 0..pool_skip_first-1 of a window are left out of the pooled mean"},
    {INT("seed", eval.probing.seed, 0, INT32_MAX, 42, HP), .doc = "seed of the group split and the draws"},
    {.name = "layer_set", .kind = CFG_STR, .off = OFF(eval.probing.layer_set), .hash = HP, .flags = CFG_NULL,
     .doc_type = "str or null", .doc_default = "null", .doc_range = "a layer set's name",
     .doc = "probe only the layer sets with this set's layers; null = every set"},
};
static const rs_cfg_section probing_section = {"eval.probing", FIELDS(probing_fields), 0, probing_check, NULL};

/* TPP runs in its own tasks (H_TPP) on the probing plan; `enabled` stays in the eval hash */
#define HT (H_CONFIG | H_TPP)
static const rs_cfg_field tpp_fields[] = {
    {BOOL("enabled", eval.tpp.enabled, 0, HE | H_TPP), .flags = CFG_GATE,
     .doc = "targeted probe perturbation (docs/tpp.md) on the eval.probing data, plan and layer sets"},
    {INTS("budgets", eval.tpp.budgets, "budget", 1, 1 << 24, YG_LIST_UNIQUE | YG_LIST_SORTED, HT)(4, 8, 20, 40),
     .doc = "total ablated latents N (over a set's layers; N per layer for single-layer TPP)"},
    {.name = "k", .kind = CFG_INT_LIST, .off = OFF(eval.tpp.k), .what = "k", .lo = 1, .hi = 1 << 24,
     .list_flags = YG_LIST_UNIQUE | YG_LIST_SORTED | YG_LIST_MAY_BE_EMPTY, .hash = HT, .def_list = NULL, .def_n = 0,
     .doc_default = "[]", .doc = "the SAE sparsities k to run TPP for; [] = every sae.k"},
    {INT("class_sets", eval.tpp.class_sets, 1, 64, 2, HT),
     .doc = "the first this many class sets of the probing plan (SAEBench uses 2 datasets)"},
    {INT("n_test", eval.tpp.n_test, 0, 1 << 24, 0, HT), .doc_range = "0, or [1, eval.probing.n_test]",
     .doc = "test windows per class the ablation passes run over: the first n of each class's probing test pool "
            "(accuracies on the test tasks' entries among them); 0 = all"},
    {INT("epochs", eval.tpp.epochs, 1, 10000, 20, HT), .doc = "probe training epochs (SAEBench: 20)"},
    {BOOL("single", eval.tpp.single, 1, HT),
     .doc = "also single-layer TPP at the probe layer: N latents of one layer at a time (M passes per budget)"},
    {BOOL("random", eval.tpp.random, 1, HT), .doc = "also ablate random latents (the per-layer joint split; control)"},
};
static const rs_cfg_section tpp_section = {"eval.tpp", FIELDS(tpp_fields), 0, tpp_check, NULL};

static const rs_cfg_field eval_fields[] = {
    {INT("batch_sequences", eval.batch_sequences, 1, 1 << 20, 8, HC),
     .unhashed = "summation order only", .doc = "sequences per forward batch"},
    {BOOL("ce", eval.ce, 1, HE), .doc = "run the CE splice evaluations"},
    {WORDS("ce_modes", eval.ce_modes, eval.n_ce_modes, rs_ce_mode_names, RS_CE_MODE_COUNT, "CE mode", HE),
     .doc = "single-layer, joint teacher-forced, joint sequential-online"},
    {WORDS("ablations", eval.ablations, eval.n_ablations, rs_ablation_names, RS_ABLATION_COUNT, "ablation", HE),
     .doc = "ablation baselines for recovered CE"},
    {BOOL("affine_only", eval.affine_only, 1, HC), .unhashed = "mixed into the ablation task hash only",
     .doc = "also the affine-only control per set: l_2..l_M replaced by the affine prediction from the layer "
            "before, in each of eval.ce_modes (the set's ablation task)"},
    {INT("redundancy_block", eval.redundancy_block, 1, 1 << 20, 1024, HC), .unhashed = "summation order only",
     .doc = "latents per block when streaming decoder cosine maxima"},
    {SECTION("probing", probing_section)},
    {SECTION("tpp", tpp_section)},
};
static const rs_cfg_section eval_section = {"eval", FIELDS(eval_fields), 0, NULL, NULL};

static const rs_cfg_field store_fields[] = {
    {ENUM("activation_dtype", store.dtype, rs_dtype_names, RS_DTYPE_F32, HIN),
     .doc = "element type of the activation store"},
    {INT("chunk_rows", store.chunk_rows, 1, 1 << 24, 1024, HC),
     .unhashed = "HDF5 layout only", .doc = "HDF5 chunk rows (tokens)"},
};
static const rs_cfg_section store_section = {"store", FIELDS(store_fields), 0, NULL, NULL};

/* how the work is spread and retried: no result depends on it */
static const rs_cfg_field parallel_fields[] = {
    {INT("group_size", parallel.group_size, 0, 1 << 24, 0, 0),
     .unhashed = "how the work is spread", .doc = "ranks per worker group; 0 = chosen automatically"},
    {INT("max_task_retries", parallel.max_task_retries, 0, 100, 2, 0),
     .unhashed = "how failures are retried", .doc = "retries of a failed task"},
};
static const rs_cfg_section parallel_section = {"parallel", FIELDS(parallel_fields), 0, NULL, NULL};

static const rs_cfg_field root_fields[] = {
    {.name = "name", .kind = CFG_NAME, .off = OFF(name), .hash = HC, .doc_range = "1-63 of `A-Za-z0-9_.-`",
     .required = "the experiment's name, e.g. 'name: demo'", .unhashed = "it names the run", .doc = "experiment name"},
    {PATH("run_dir", run_dir, 0), .flags = CFG_NULL, .after = run_dir_default,
     .unhashed = "where the run is written", .doc_default = "`runs/<name>`",
     .doc = "the run directory (activation store, results, journal)"},
    {INT("seed", seed, 0, INT32_MAX, 0, HC | H_SAE),
     .doc = "base seed mixed into every random stream (SAE init, shuffling)"},
    {SECTION("model", model_section), .required = "the model section with 'path:' of the checkpoint directory"},
    {SECTION("data", data_section), .required = "the data section with 'tokens:'"},
    {SECTION("layers", layers_section), .required = "the layers section with 'sets:'"},
    {WORDS("variants", variants, n_variants, rs_variant_names, RS_VARIANT_COUNT, "variant", HC | H_GRID),
     .doc = "SAE variants to train and evaluate"},
    {SECTION("sae", sae_section)},
    {SECTION("affine", affine_section)},
    {SECTION("train", train_section)},
    {SECTION("eval", eval_section)},
    {SECTION("store", store_section)},
    {SECTION("parallel", parallel_section)},
};
const rs_cfg_section rs_cfg_root = {"", FIELDS(root_fields), 0, check_consistency, NULL};

/* ============================================================================================
 * Layer sets (explicit, or gap families expanded by the grid)
 * ========================================================================================== */

static rs_err parse_set(yg_parser *p, yaml_node_t *n, int idx) {
    rs_config *c = p->c;
    rs_set_spec *s = &c->layers.sets[idx];
    char key[64], sub[96];
    snprintf(key, sizeof key, "layers.sets[%d]", idx);
    yg_field f[] = {{"name", 0}, {"layers", 0}, {"start", 0}, {"gaps", 0}, {"count", 0}};
    RS_TRY(yg_map_fields(p, n, key, f, 5));
    int explicit_ = f[1].val != NULL, family = f[2].val || f[3].val || f[4].val;
    if (explicit_ && family)
        YG_FAIL(p, f[f[2].val ? 2 : f[3].val ? 3 : 4].val, key,
                "a set has either 'layers' (explicit) or 'start'/'gaps'/'count' (a gap family), not both; "
                "split it into two items");
    if (!explicit_ && !family)
        YG_FAIL(p, n, key, "a set needs 'layers: [..]' (explicit) or 'gaps: [..]' with an optional 'start' (a gap family)");
    s->is_family = family;
    if (f[0].val) {
        yg_join_key(sub, sizeof sub, key, "name");
        RS_TRY(yg_name(p, f[0].val, sub, s->name));
    } else if (family) {
        snprintf(s->name, sizeof s->name, "gap");
    } else {
        snprintf(s->name, sizeof s->name, "set%d", idx);
    }
    if (explicit_) {
        yg_join_key(sub, sizeof sub, key, "layers");
        RS_TRY(yg_int_list(p, f[1].val, sub, "layer", 0, RS_CONFIG_MAX_LAYER, YG_LIST_UNIQUE | YG_LIST_SORTED, &s->layers));
        return RS_OK;
    }
    if (f[2].val) {
        yg_join_key(sub, sizeof sub, key, "start");
        RS_TRY(yg_int(p, f[2].val, sub, 0, RS_CONFIG_MAX_LAYER, &s->start));
    }
    yg_join_key(sub, sizeof sub, key, "gaps");
    RS_TRY(yg_require(p, n, key, &f[3], "the layer gaps of the family, e.g. [4, 6, 8]"));
    RS_TRY(yg_int_list(p, f[3].val, sub, "gap", 1, RS_CONFIG_MAX_LAYER, YG_LIST_UNIQUE, &s->gaps));
    if (f[4].val && !yg_is_null(f[4].val) && !(yg_is_plain(f[4].val) && !strcmp(yg_sval(f[4].val), "auto"))) {
        yg_join_key(sub, sizeof sub, key, "count");
        RS_TRY(yg_int(p, f[4].val, sub, 2, RS_CONFIG_MAX_LAYER, &s->count));
    }
    if ((int64_t)strlen(s->name) + 8 > RS_CONFIG_NAME_MAX) {
        yg_join_key(sub, sizeof sub, key, "name");
        RS_CONFIG_FAIL(c, sub, "a gap family's name must leave room for the gap suffix; use at most %d characters",
                       RS_CONFIG_NAME_MAX - 8);
    }
    return RS_OK;
}

/* Names of the sets after expansion (NAME<gap> for families) must be unique. */
static rs_err check_set_names(rs_config *c) {
    int total = 0;
    for (int i = 0; i < c->layers.n_sets; i++) total += c->layers.sets[i].is_family ? c->layers.sets[i].gaps.n : 1;
    if (total > RS_CONFIG_MAX_SETS)
        RS_CONFIG_FAIL(c, "layers.sets", "%d layer sets after expanding the gap families, more than the %d allowed",
                       total, RS_CONFIG_MAX_SETS);
    char (*names)[RS_CONFIG_NAME_MAX + 24] = calloc((size_t)total, sizeof *names);
    int *owner = calloc((size_t)total, sizeof *owner);
    rs_err err = RS_OK;
    if (!names || !owner) {
        free(names);
        free(owner);
        RS_FAIL(RS_ERR_NOMEM, "out of memory checking set names");
    }
    int m = 0;
    for (int i = 0; i < c->layers.n_sets; i++) {
        const rs_set_spec *s = &c->layers.sets[i];
        int cnt = s->is_family ? s->gaps.n : 1;
        for (int g = 0; g < cnt; g++) {
            if (s->is_family) snprintf(names[m], sizeof names[m], "%s%lld", s->name, (long long)s->gaps.v[g]);
            else snprintf(names[m], sizeof names[m], "%s", s->name);
            for (int j = 0; j < m; j++)
                if (!strcmp(names[j], names[m])) {
                    char key[64];
                    snprintf(key, sizeof key, "layers.sets[%d].name", i);
                    int fj = owner[j];
                    err = rs_config_fail_at(c, RS_ERR_CONFIG, key, __FILE__, __LINE__, __func__,
                                            "the set name '%s' is already used by layers.sets[%d]%s; give each set a "
                                            "unique name", names[m], fj,
                                            c->layers.sets[fj].is_family || s->is_family ? " (gap family members are named NAME<gap>)"
                                                                                      : "");
                    goto done;
                }
            owner[m++] = i;
        }
    }
done:
    free(names);
    free(owner);
    return err;
}


static rs_err sets_parse(yg_parser *p, yaml_node_t *v) {
    rs_config *c = p->c;
    int cnt = 0;
    RS_TRY(yg_seq_check(p, v, "layers.sets", "layer set", YG_LIST_LONG, &cnt));
    if (cnt > RS_CONFIG_MAX_SETS)
        YG_FAIL(p, v, "layers.sets", "%d sets, more than the %d allowed", cnt, RS_CONFIG_MAX_SETS);
    c->layers.sets = calloc((size_t)cnt, sizeof *c->layers.sets);
    RS_CHECK_ALLOC(c->layers.sets);
    c->layers.n_sets = cnt;
    for (int i = 0; i < cnt; i++) {
        yaml_node_t *it = yg_node(p, v->data.sequence.items.start[i]);
        char key[64];
        snprintf(key, sizeof key, "layers.sets[%d]", i);
        if (!it) YG_FAIL(p, v, key, "malformed list");
        RS_TRY(yg_loc_record(c, key, yg_loc(it)));
        RS_TRY(parse_set(p, it, i));
    }
    return check_set_names(c);
}

static void sets_write(FILE *f, const rs_config *c, int indent) {
    fprintf(f, "%*ssets:\n", indent, "");
    for (int i = 0; i < c->layers.n_sets; i++) {
        const rs_set_spec *s = &c->layers.sets[i];
        fprintf(f, "%*s- {name: ", indent + 2, "");
        rs_cfg_put_str(f, s->name);
        if (s->is_family) {
            fprintf(f, ", start: %lld, gaps: ", (long long)s->start);
            rs_cfg_put_list(f, &s->gaps);
            if (s->count) fprintf(f, ", count: %lld}\n", (long long)s->count);
            else fprintf(f, ", count: auto}\n");
        } else {
            fprintf(f, ", layers: ");
            rs_cfg_put_list(f, &s->layers);
            fprintf(f, "}\n");
        }
    }
}

/* Checks across sections that need no model. */
static rs_err check_consistency(yg_parser *p, yaml_node_t *n) {
    (void)n;
    const rs_config *c = p->c;
#ifndef RESAE_HAVE_DNNL
    if (c->train.encoder_precision == RS_SAE_PREC_BF16)
        RS_CONFIG_FAIL(c, "train.encoder_precision", "bf16 needs oneDNN (Debian libdnnl-dev); rebuild after "
                       "installing it, or use fp32");
#endif
    int64_t tokens = rs_config_train_tokens(c);
    if (tokens > c->train.max_epochs * c->data.train)
        RS_CONFIG_FAIL(c, "train.tokens", "%lld tokens per SAE exceed %lld pass(es) (train.max_epochs) over the %lld "
                       "tokens of the train split; raise data.splits.train or train.max_epochs, or lower train.tokens",
                       (long long)tokens, (long long)c->train.max_epochs, (long long)c->data.train);
    if (tokens < c->train.batch_size)
        RS_CONFIG_FAIL(c, c->train.tokens ? "train.tokens" : "train.batch_size",
                       "%lld training tokens are less than one batch of %lld; raise train.tokens (or "
                       "data.splits.train) or lower train.batch_size", (long long)tokens, (long long)c->train.batch_size);
    int64_t steps = rs_config_train_steps(c);
    int64_t decay = (int64_t)ceil(c->train.decay_fraction * (double)steps);
    if (c->train.warmup_steps + decay > steps)
        RS_CONFIG_FAIL(c, "train.warmup_steps", "%lld warm-up steps plus %lld decay steps exceed the %lld training "
                       "steps (train.tokens / train.batch_size); lower train.warmup_steps or train.decay_fraction",
                       (long long)c->train.warmup_steps, (long long)decay, (long long)steps);
    if (c->train.dead_tokens > tokens)
        RS_CONFIG_FAIL(c, "train.dead_tokens", "%lld is more than the %lld training tokens, so no latent could ever be "
                       "found dead; lower it or use auto", (long long)c->train.dead_tokens, (long long)tokens);
    if (c->train.curve_bins % 5)
        RS_CONFIG_FAIL(c, "train.curve_bins", "%lld is not a multiple of 5 (the last 20%% of steps must be whole "
                       "spans); use 0 (no curve), 5, 10, 20, ...", (long long)c->train.curve_bins);
    if (c->train.curve_bins > steps)
        RS_CONFIG_FAIL(c, "train.curve_bins", "%lld spans are more than the %lld training steps; lower it or raise "
                       "train.tokens", (long long)c->train.curve_bins, (long long)steps);
    if (c->train.shuffle_buffer < c->train.batch_size)
        RS_CONFIG_FAIL(c, "train.shuffle_buffer", "%lld tokens is smaller than one batch (%lld); make it at least "
                       "train.batch_size", (long long)c->train.shuffle_buffer, (long long)c->train.batch_size);
    return RS_OK;
}


/* ============================================================================================
 * Loading
 * ========================================================================================== */

static rs_err parse_root(yg_parser *p, yaml_node_t *root) {
    if (root->type != YAML_MAPPING_NODE) {
        char found[64];
        yg_describe(found, sizeof found, root);
        YG_FAIL(p, root, "", "the config must be a mapping with keys such as 'name:', 'model:', 'data:', 'layers:'; "
                "found %s", found);
    }
    return rs_cfg_parse(p, &rs_cfg_root, root);
}

static rs_err yaml_fail(const rs_config *c, const yaml_parser_t *yp) {
    const yaml_mark_t *m = &yp->problem_mark;
    char ctx[256] = "";
    if (yp->context)
        snprintf(ctx, sizeof ctx, " (%s at line %d, column %d)", yp->context, (int)yp->context_mark.line + 1,
                 (int)yp->context_mark.column + 1);
    const char *prob = yp->problem ? yp->problem : "malformed YAML";
    const char *hint = "";
    if (strstr(prob, "cannot start any token")) hint = "; indent with spaces, not tabs, and quote values that start with @ or `";
    else if (strstr(prob, "tab")) hint = "; indent with spaces, not tabs";
    else if (strstr(prob, "mapping values are not allowed")) hint = "; a value may not contain ': ' unless quoted";
    else if (strstr(prob, "did not find expected")) hint = "; check the indentation and the closing brackets above";
    return RS_ERR(RS_ERR_CONFIG, "%s:%d:%d: YAML syntax error: %s%s%s", c->path,
                      (int)m->line + 1, (int)m->column + 1, prob, ctx, hint);
}

/* A first pass over the event stream that stops at the first node nested deeper than any config
 * needs. libyaml's scanner costs O(depth) per token in flow collections, so a small file of
 * nested brackets would otherwise take minutes to load. */
#define RS_CONFIG_MAX_DEPTH 32
static rs_err prescan(const rs_config *c, const char *text, size_t len) {
    yaml_parser_t yp;
    yaml_event_t ev;
    if (!yaml_parser_initialize(&yp)) RS_FAIL(RS_ERR_NOMEM, "out of memory initializing the YAML yg_parser");
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    rs_err err = RS_OK;
    int depth = 0;
    for (;;) {
        if (!yaml_parser_parse(&yp, &ev)) {
            err = yaml_fail(c, &yp);
            break;
        }
        int type = ev.type;
        if (type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT) depth++;
        if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT) depth--;
        if (depth > RS_CONFIG_MAX_DEPTH)
            err = RS_ERR(RS_ERR_CONFIG, "%s:%d:%d: lists and mappings are nested more than %d levels deep here; a config "
                             "needs at most 4 (see docs/config.md)", c->path, (int)ev.start_mark.line + 1,
                             (int)ev.start_mark.column + 1, RS_CONFIG_MAX_DEPTH);
        yaml_event_delete(&ev);
        if (err || type == YAML_STREAM_END_EVENT) break;
    }
    yaml_parser_delete(&yp);
    return err;
}

static rs_err config_dir(rs_config *c, const char *path) {
    char *abs = realpath(path, NULL);
    if (!abs) {
        /* text without a file (tests): anchor at the path's directory as written */
        const char *slash = strrchr(path, '/');
        size_t n = slash ? (size_t)(slash - path) : 1;
        abs = malloc(n + 2);
        RS_CHECK_ALLOC(abs);
        if (slash) memcpy(abs, path, n);
        else abs[0] = '.';
        abs[n] = '\0';
        if (slash && n == 0) abs[0] = '/', abs[1] = '\0';
        c->dir = abs;
        return RS_OK;
    }
    char *slash = strrchr(abs, '/');
    if (slash == abs) slash[1] = '\0';
    else if (slash) *slash = '\0';
    c->dir = abs;
    return RS_OK;
}

rs_err rs_config_load_text(rs_config *c, const char *path, const char *text, size_t len) {
    memset(c, 0, sizeof *c);
    rs_err err = RS_OK;
    c->path = strdup(path);
    if (!c->path) RS_FAIL(RS_ERR_NOMEM, "out of memory");
    RS_TRY_GOTO(config_dir(c, path), fail);
    RS_TRY_GOTO(rs_cfg_defaults(c, &rs_cfg_root), fail);
    if (len > RS_CONFIG_MAX_BYTES)
        RS_FAIL_GOTO(fail, RS_ERR_CONFIG, "%s: the config is %zu bytes, more than the %d allowed", path, len,
                     RS_CONFIG_MAX_BYTES);
    if (memchr(text, '\0', len))
        RS_FAIL_GOTO(fail, RS_ERR_CONFIG, "%s: the file contains NUL bytes; it is not a YAML text file", path);

    RS_TRY_GOTO(prescan(c, text, len), fail);

    yaml_parser_t yp;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&yp)) RS_FAIL_GOTO(fail, RS_ERR_NOMEM, "out of memory initializing the YAML yg_parser");
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    if (!yaml_parser_load(&yp, &doc)) {
        err = yaml_fail(c, &yp);
        yaml_parser_delete(&yp);
        goto fail;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || yg_is_null(root)) {
        rs_loc at = root ? yg_loc(root) : (rs_loc){1, 1};
        err = RS_ERR(RS_ERR_CONFIG, "%s:%d:%d: the config is empty; it needs at least 'name:', 'model: {path: ..}', "
                         "'data: {tokens: ..}' and 'layers: {sets: [..]}' (see docs/config.md)", path, at.line, at.col);
    } else {
        /* a second document would be silently ignored: refuse it */
        yaml_document_t doc2;
        if (!yaml_parser_load(&yp, &doc2)) {
            err = yaml_fail(c, &yp);
        } else {
            yaml_node_t *r2 = yaml_document_get_root_node(&doc2);
            if (r2)
                err = RS_ERR(RS_ERR_CONFIG, "%s:%d:%d: a second YAML document starts here; a config is one document (remove "
                                 "the '---' line and what follows, or merge it)", path,
                                 (int)doc2.start_mark.line + 1, (int)doc2.start_mark.column + 1);
            yaml_document_delete(&doc2);
        }
        if (!err) {
            yg_parser p = {c, &doc};
            err = parse_root(&p, root);
            if (err) rs_err_push(err, __FILE__, __LINE__, __func__);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&yp);
    if (err) goto fail;
    return RS_OK;
fail:
    rs_config_free(c);
    return err;
}

rs_err rs_config_load(rs_config *c, const char *path) {
    memset(c, 0, sizeof *c);
    char *text = NULL;
    size_t len = 0;
    rs_err err = rs_read_file(&text, &len, path, RS_CONFIG_MAX_BYTES);
    if (err) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", rs_err_msg());
        RS_FAIL(err, "cannot read the config: %s", msg);
    }
    err = rs_config_load_text(c, path, text, len);
    free(text);
    RS_TRY(err);
    return RS_OK;
}

void rs_config_free(rs_config *c) {
    if (!c) return;
    free(c->path);
    free(c->dir);
    free(c->run_dir);
    free(c->model.path);
    free(c->data.tokens);
    free(c->data.dataset);
    for (int i = 0; i < c->layers.n_sets; i++) {
        free(c->layers.sets[i].layers.v);
        free(c->layers.sets[i].gaps.v);
    }
    free(c->layers.sets);
    free(c->layers.regression.v);
    free(c->sae.k.v);
    free(c->sae.seeds.v);
    free(c->eval.probing.data);
    free(c->eval.probing.top_k.v);
    free(c->eval.probing.layer_set);
    free(c->eval.tpp.budgets.v);
    free(c->eval.tpp.k.v);
    free(c->locs);
    memset(c, 0, sizeof *c);
}

/* ============================================================================================
 * Derived values
 * ========================================================================================== */

int64_t rs_config_n_latents(const rs_config *c, const rs_model_config *mc) {
    return c->sae.expansion * (int64_t)mc->d_model;
}

int64_t rs_config_train_tokens(const rs_config *c) { return c->train.tokens ? c->train.tokens : c->data.train; }

int64_t rs_config_train_steps(const rs_config *c) { return rs_config_train_tokens(c) / c->train.batch_size; }

int64_t rs_config_dead_tokens(const rs_config *c) {
    if (c->train.dead_tokens) return c->train.dead_tokens;
    int64_t t = rs_config_train_tokens(c) / 10;
    return t < 10000000 ? (t > 0 ? t : 1) : 10000000;
}

double rs_config_lr(const rs_config *c, int64_t n_latents) {
    if (c->train.lr > 0) return c->train.lr;
    return 2e-4 / sqrt((double)n_latents / 16384.0);
}

int64_t rs_config_family_count(const rs_set_spec *s, int64_t gap, int n_layers) {
    if (s->count) return s->count;
    if (s->start > n_layers - 1) return 0;
    return (n_layers - 1 - s->start) / gap + 1;
}

/* ============================================================================================
 * Model checks
 * ========================================================================================== */

rs_err rs_config_load_model(rs_model_config *mc, const rs_config *c) {
    rs_err e = rs_model_config_load(mc, c->model.path);
    if (e) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", rs_err_msg());
        RS_CONFIG_FAIL(c, "model.path", "cannot load the model's config.json: %s; point model.path at a Hugging "
                       "Face checkpoint directory (relative paths start at the config file's directory)", msg);
    }
    return RS_OK;
}

static rs_err check_layer(const rs_config *c, const char *key, int64_t l, const rs_model_config *mc) {
    if (l > mc->n_layers - 1)
        RS_CONFIG_FAIL(c, key, "layer %lld is beyond the model's %d layers; layers are 0..%d (residual stream after "
                       "each block)", (long long)l, mc->n_layers, mc->n_layers - 1);
    return RS_OK;
}

rs_err rs_config_check_model(const rs_config *c, const rs_model_config *mc) {
    char key[96];
    for (int i = 0; i < c->layers.n_sets; i++) {
        const rs_set_spec *s = &c->layers.sets[i];
        if (!s->is_family) {
            for (int j = 0; j < s->layers.n; j++) {
                snprintf(key, sizeof key, "layers.sets[%d].layers[%d]", i, j);
                RS_TRY(check_layer(c, key, s->layers.v[j], mc));
            }
            continue;
        }
        snprintf(key, sizeof key, "layers.sets[%d].start", i);
        RS_TRY(check_layer(c, key, s->start, mc));
        for (int g = 0; g < s->gaps.n; g++) {
            int64_t gap = s->gaps.v[g];
            int64_t cnt = rs_config_family_count(s, gap, mc->n_layers);
            int64_t last = s->start + (cnt - 1) * gap;
            if (s->count && last > mc->n_layers - 1) {
                snprintf(key, sizeof key, "layers.sets[%d].count", i);
                RS_CONFIG_FAIL(c, key, "%lld layers with gap %lld from layer %lld end at layer %lld, beyond the "
                               "model's %d layers; lower count (at most %lld fit) or omit it (as many as fit)",
                               (long long)s->count, (long long)gap, (long long)s->start, (long long)last,
                               mc->n_layers, (long long)((mc->n_layers - 1 - s->start) / gap + 1));
            }
            if (cnt < 2) {
                snprintf(key, sizeof key, "layers.sets[%d].gaps[%d]", i, g);
                RS_CONFIG_FAIL(c, key, "gap %lld from layer %lld leaves a single layer in the model's %d layers; "
                               "use a gap of at most %lld or an explicit set", (long long)gap, (long long)s->start,
                               mc->n_layers, (long long)(mc->n_layers - 1 - s->start));
            }
        }
    }
    for (int j = 0; j < c->layers.regression.n; j++) {
        snprintf(key, sizeof key, "layers.regression[%d]", j);
        RS_TRY(check_layer(c, key, c->layers.regression.v[j], mc));
    }
    int64_t width = rs_config_n_latents(c, mc);
    for (int j = 0; j < c->sae.k.n; j++)
        if (c->sae.k.v[j] >= width) {
            snprintf(key, sizeof key, "sae.k[%d]", j);
            RS_CONFIG_FAIL(c, key, "k = %lld is not below the SAE width n_latents = expansion %lld x hidden_size %d "
                           "= %lld; lower k or raise sae.expansion", (long long)c->sae.k.v[j],
                           (long long)c->sae.expansion, mc->d_model, (long long)width);
        }
    if (c->data.seq_len > mc->max_positions)
        RS_CONFIG_FAIL(c, "data.seq_len", "%lld tokens per sequence exceed the model's max_position_embeddings %d",
                       (long long)c->data.seq_len, mc->max_positions);
    return RS_OK;
}


/* ============================================================================================
 * Canonical YAML, hash, key reference
 * ========================================================================================== */

rs_err rs_config_write_yaml(FILE *f, const rs_config *c) {
    rs_cfg_write(f, c, &rs_cfg_root, 0, 0);
    if (ferror(f)) RS_FAIL(RS_ERR_IO, "write error while printing the resolved config");
    return RS_OK;
}

uint64_t rs_config_probe_hash(uint64_t h, const rs_config *c) { return rs_cfg_hash(h, c, H_PROBE, 0); }

uint64_t rs_config_tpp_hash(uint64_t h, const rs_config *c) {
    return rs_cfg_hash(rs_cfg_hash(h, c, H_PROBE, 0), c, H_TPP, 0);
}

uint64_t rs_config_hash(const rs_config *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return 0;
    fprintf(f, "resae-config schema %d\n", RESAE_SCHEMA_VERSION);
    rs_cfg_write(f, c, &rs_cfg_root, 0, 1);
    fclose(f);
    uint64_t h = rs_hash64(RS_HASH64_INIT, buf, len);
    free(buf);
    return h;
}

void rs_config_write_keys(FILE *f) { rs_cfg_write_keys(f, &rs_cfg_root); }
