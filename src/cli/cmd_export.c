/* resae export RUN_DIR --format saelens|sparsify [--select KEY=V,...] [--model-name NAME] OUT: the
 * trained SAEs of a run's results file in the formats SAELens and sparsify load (docs/export.md,
 * EVAL_SPEC.md §D-E). Reads RUN_DIR/results.h5 only. The input scale s of each SAE is folded into
 * the weights (b_enc / s, b_dec / s), so the exported SAE applied to unscaled inputs reconstructs
 * exactly what resae's SAE(s u) / s does; a resae SAE beyond a set's first layer models the residual
 * u = h_l - A h_pred - c and its directory carries affine.safetensors {A, c}. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/cli.h"
#include "resae/config.h"
#include "resae/h5util.h"
#include "resae/safetensors.h"
#include "resae/util.h"
#include "resae/version.h"

/* The SAELens version whose on-disk layout (v6: metadata.sae_lens_version >= 6) the export follows. */
#define SAELENS_VERSION "6.18.0"
#define MAX_SELECT 64

static void usage(FILE *f) {
    fprintf(f,
            "usage: resae export RUN_DIR --format saelens|sparsify [--select KEY=V[,KEY=V...]] [--model-name NAME] OUT\n\n"
            "Writes the trained SAEs of RUN_DIR/results.h5 into OUT (created; existing files are replaced):\n"
            "  saelens   OUT/<sae name>/cfg.json + sae_weights.safetensors (W_enc [d_in, d_sae], b_enc, W_dec\n"
            "            [d_sae, d_in], b_dec), loadable with sae_lens SAE.load_from_disk; hook\n"
            "            blocks.<l>.hook_resid_post (TransformerLens naming)\n"
            "  sparsify  OUT/raw_k<k>_s<seed>/layers.<l>/ and, per evaluated layer set, OUT/<set>_resae_k<k>_s<seed>/\n"
            "            layers.<l>/ (cfg.json + sae.safetensors: encoder.weight, encoder.bias, W_dec, b_dec), with\n"
            "            OUT/<run>/config.json; loadable with sparsify SparseCoder.load_from_disk / load_many\n"
            "The input scale s is folded into the biases. A resae SAE at a set's layer l_m (m >= 2) encodes the\n"
            "residual u = h_l - A h_pred - c: its directory also has affine.safetensors (A [d, d], c [d], float64)\n"
            "and its metadata says resae_input \"residual\". OUT/README.md says how to use them; OUT/export.json\n"
            "lists every SAE written.\n"
            "  --select      keep only SAEs matching every key; a key given twice matches either value:\n"
            "                variant=raw|resae, k=K, layer=L, seed=S, set=NAME (an evaluated layer set)\n"
            "                e.g. --select variant=resae,k=8,k=20\n"
            "  --model-name  model_name in the metadata (default: the base name of the config's model.path);\n"
            "                use the name SAELens / TransformerLens know the model by, e.g. pythia-1.4b\n"
            "exit codes: 0 ok, 1 error, 2 usage\n");
}

/* ---- the run's tables ------------------------------------------------------------------------- */

typedef struct sae_row {
    int variant, layer, pred, k;
    int64_t seed;
    double scale, fvu, dead_frac, tokens;
    char name[96];
} sae_row;

/* One evaluated set: its name and, per (variant, k, seed), its layers come from /eval/recon. */
typedef struct recon_row {
    int set, variant, k, layer, pred;
    int64_t seed;
} recon_row;

typedef struct run_tables {
    const char *path;
    int n_sae;
    sae_row *sae;
    int n_recon;
    recon_row *recon;
    int n_sets;
    char **set_names;
    int d, n_latents;
} run_tables;

static void tables_free(run_tables *t) {
    free(t->sae);
    free(t->recon);
    for (int i = 0; i < t->n_sets; i++) free(t->set_names[i]);
    free(t->set_names);
}

/* Read a 2-D float64 table and the index of each wanted column (by the `columns` attribute). */
static rs_err read_table(double **out, int *rows, int *cols, hid_t f, const char *name, const char *path,
                         const char *const *want, int *idx, int n_want) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) RS_FAIL(RS_ERR_FORMAT, "%s has no %s: the run has not trained its SAEs yet (run `resae run`)", path, name);
    rs_err err = RS_OK;
    char colattr[2048];
    hid_t sp = H5Dget_space(ds);
    hsize_t d[2] = {0, 0};
    int nd = H5Sget_simple_extent_dims(sp, d, NULL);
    H5Sclose(sp);
    *out = NULL;
    if (nd != 2) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: %s is not a 2-D table", path, name);
    RS_TRY_GOTO(rs_h5_attr_get_str(colattr, sizeof colattr, ds, "columns", path), done);
    for (int w = 0; w < n_want; w++) {
        idx[w] = -1;
        int c = 0;
        for (char *s = colattr; *s; c++) {
            size_t len = strcspn(s, ",");
            if (len == strlen(want[w]) && !strncmp(s, want[w], len)) idx[w] = c;
            s += len + (s[len] == ',');
        }
        if (idx[w] < 0 || idx[w] >= (int)d[1])
            RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: %s has no column '%s' (columns: %s)", path, name, want[w], colattr);
    }
    *rows = (int)d[0];
    *cols = (int)d[1];
    *out = malloc(sizeof(double) * (d[0] ? d[0] * d[1] : 1));
    if (!*out) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory reading %s", name);
    if (d[0] && H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0)
        RS_FAIL_GOTO(done, RS_ERR_IO, "%s: cannot read %s", path, name);
done:
    H5Dclose(ds);
    if (err) {
        free(*out);
        *out = NULL;
    }
    return err;
}

static rs_err tables_read(run_tables *t, hid_t f, const char *path) {
    memset(t, 0, sizeof *t);
    t->path = path;
    static const char *const SAE_COLS[] = {"variant", "layer", "pred", "k", "seed", "scale", "fvu", "dead_frac",
                                           "tokens"};
    int ix[9], rows = 0, cols = 0;
    double *v = NULL;
    RS_TRY(read_table(&v, &rows, &cols, f, "sae/table", path, SAE_COLS, ix, 9));
    t->sae = calloc(rows ? (size_t)rows : 1, sizeof *t->sae);
    if (!t->sae) {
        free(v);
        RS_FAIL(RS_ERR_NOMEM, "out of memory");
    }
    t->n_sae = rows;
    for (int i = 0; i < rows; i++) {
        const double *r = v + (size_t)i * cols;
        sae_row *s = &t->sae[i];
        s->variant = (int)r[ix[0]];
        s->layer = (int)r[ix[1]];
        s->pred = (int)r[ix[2]];
        s->k = (int)r[ix[3]];
        s->seed = (int64_t)r[ix[4]];
        s->scale = r[ix[5]];
        s->fvu = r[ix[6]];
        s->dead_frac = r[ix[7]];
        s->tokens = r[ix[8]];
        if (s->variant == RS_VARIANT_RESAE)
            snprintf(s->name, sizeof s->name, "resae_L%d_P%d_k%d_s%" PRId64, s->layer, s->pred, s->k, s->seed);
        else
            snprintf(s->name, sizeof s->name, "raw_L%d_k%d_s%" PRId64, s->layer, s->k, s->seed);
        if (!(s->scale > 0) || !isfinite(s->scale)) {
            free(v);
            RS_FAIL(RS_ERR_FORMAT, "%s: sae/table row %d (%s) has scale %g; the file is damaged", path, i, s->name,
                    s->scale);
        }
    }
    free(v);
    v = NULL;
    /* the evaluated sets (optional: a run stopped after training has none) */
    if (H5Lexists(f, "eval", H5P_DEFAULT) > 0 && H5Lexists(f, "eval/recon", H5P_DEFAULT) > 0) {
        static const char *const REC_COLS[] = {"set", "variant", "k", "seed", "layer", "pred"};
        int rx[6];
        RS_TRY(read_table(&v, &rows, &cols, f, "eval/recon", path, REC_COLS, rx, 6));
        t->recon = calloc(rows ? (size_t)rows : 1, sizeof *t->recon);
        if (!t->recon) {
            free(v);
            RS_FAIL(RS_ERR_NOMEM, "out of memory");
        }
        t->n_recon = rows;
        for (int i = 0; i < rows; i++) {
            const double *r = v + (size_t)i * cols;
            t->recon[i] = (recon_row){(int)r[rx[0]], (int)r[rx[1]], (int)r[rx[2]], (int)r[rx[4]], (int)r[rx[5]],
                                      (int64_t)r[rx[3]]};
        }
        free(v);
        hid_t g = H5Gopen2(f, "eval", H5P_DEFAULT);
        char names[8192];
        rs_err err = g < 0 ? RS_ERR_IO : rs_h5_attr_get_str(names, sizeof names, g, "set_names", path);
        if (g >= 0) H5Gclose(g);
        RS_TRY(err);
        for (char *s = names; *s;) {
            size_t len = strcspn(s, ",");
            char **grown = realloc(t->set_names, sizeof *grown * (size_t)(t->n_sets + 1));
            RS_CHECK_ALLOC(grown);
            t->set_names = grown;
            t->set_names[t->n_sets] = malloc(len + 1);
            RS_CHECK_ALLOC(t->set_names[t->n_sets]);
            memcpy(t->set_names[t->n_sets], s, len);
            t->set_names[t->n_sets++][len] = 0;
            s += len + (s[len] == ',');
        }
        for (int i = 0; i < t->n_recon; i++)
            RS_CHECK(t->recon[i].set >= 0 && t->recon[i].set < t->n_sets, RS_ERR_FORMAT,
                     "%s: eval/recon row %d names set %d, but eval/set_names has %d sets", path, i, t->recon[i].set,
                     t->n_sets);
    }
    return RS_OK;
}

/* ---- selection -------------------------------------------------------------------------------- */

enum sel_key { SEL_VARIANT, SEL_K, SEL_LAYER, SEL_SEED, SEL_SET, SEL_N };
static const char *const SEL_NAMES[SEL_N] = {"variant", "k", "layer", "seed", "set"};

typedef struct selection {
    int n;
    int key[MAX_SELECT];
    char val[MAX_SELECT][64];
} selection;

static int parse_select(selection *sel, const char *spec) {
    char buf[4096];
    if (strlen(spec) >= sizeof buf) return 0;
    strcpy(buf, spec);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || !eq[1] || sel->n >= MAX_SELECT || strlen(eq + 1) >= 64) {
            fprintf(stderr, "resae export: --select: '%s' is not KEY=VALUE (keys: variant, k, layer, seed, set)\n", tok);
            return 0;
        }
        *eq = 0;
        int key = -1;
        for (int i = 0; i < SEL_N; i++)
            if (!strcmp(tok, SEL_NAMES[i])) key = i;
        if (key < 0) {
            fprintf(stderr, "resae export: --select: unknown key '%s' (keys: variant, k, layer, seed, set)\n", tok);
            return 0;
        }
        if (key == SEL_VARIANT && strcmp(eq + 1, "raw") && strcmp(eq + 1, "resae")) {
            fprintf(stderr, "resae export: --select: variant must be raw or resae, not '%s'\n", eq + 1);
            return 0;
        }
        if (key != SEL_VARIANT && key != SEL_SET) {
            char *end;
            errno = 0;
            long long x = strtoll(eq + 1, &end, 10);
            if (*end || errno || x < -1) {
                fprintf(stderr, "resae export: --select: %s=%s is not an integer\n", tok, eq + 1);
                return 0;
            }
        }
        sel->key[sel->n] = key;
        strcpy(sel->val[sel->n++], eq + 1);
    }
    return 1;
}

/* Does value v of key pass (no condition on the key, or one of its values equals v)? */
static int sel_pass(const selection *sel, int key, const char *v) {
    int any = 0;
    for (int i = 0; i < sel->n; i++)
        if (sel->key[i] == key) {
            if (!strcmp(sel->val[i], v)) return 1;
            any = 1;
        }
    return !any;
}

static int sel_pass_int(const selection *sel, int key, int64_t v) {
    char s[32];
    snprintf(s, sizeof s, "%" PRId64, v);
    return sel_pass(sel, key, s);
}

/* Is SAE s used at position m of set `set` (k, seed), per /eval/recon? */
static int sae_in_set(const run_tables *t, const sae_row *s, int set) {
    for (int i = 0; i < t->n_recon; i++) {
        const recon_row *r = &t->recon[i];
        if (r->set != set || r->k != s->k || r->seed != s->seed || r->layer != s->layer) continue;
        if (s->variant == RS_VARIANT_RESAE ? (r->variant == RS_VARIANT_RESAE && r->pred == s->pred) : r->pred < 0)
            return 1;
    }
    return 0;
}

static int sae_selected(const run_tables *t, const selection *sel, const sae_row *s, int as_variant) {
    if (!sel_pass(sel, SEL_VARIANT, rs_variant_names[as_variant]) || !sel_pass_int(sel, SEL_K, s->k) ||
        !sel_pass_int(sel, SEL_LAYER, s->layer) || !sel_pass_int(sel, SEL_SEED, s->seed))
        return 0;
    int any_set = 0;
    for (int i = 0; i < sel->n; i++) any_set |= sel->key[i] == SEL_SET;
    if (!any_set) return 1;
    for (int j = 0; j < t->n_sets; j++)
        if (sel_pass(sel, SEL_SET, t->set_names[j]) && sae_in_set(t, s, j)) return 1;
    return 0;
}

/* ---- writing ---------------------------------------------------------------------------------- */

typedef struct export_ctx {
    const char *results;       /* RUN_DIR/results.h5 */
    hid_t f;
    const run_tables *t;
    const rs_config *cfg;
    char model_name[256];
    int64_t context_size;      /* 0: unknown */
    int saelens;
    const char *out;
    cJSON *index;              /* export.json: array of written SAEs */
} export_ctx;

static rs_err write_text(const char *path, const char *text) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "w");
    if (!fp) RS_FAIL(RS_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    int ok = fputs(text, fp) >= 0;
    if (fclose(fp) != 0) ok = 0;
    if (!ok) {
        remove(tmp);
        RS_FAIL(RS_ERR_IO, "cannot write %s (disk full?)", tmp);
    }
    return rs_file_commit(tmp, path);
}

static rs_err write_json(const char *path, const cJSON *j) {
    char *s = cJSON_Print(j);
    RS_CHECK_ALLOC(s);
    size_t n = strlen(s);
    char *t = malloc(n + 2);
    if (!t) {
        cJSON_free(s);
        RS_FAIL(RS_ERR_NOMEM, "out of memory");
    }
    memcpy(t, s, n);
    t[n] = '\n';
    t[n + 1] = 0;
    cJSON_free(s);
    rs_err err = write_text(path, t);
    free(t);
    return err;
}

static void hook_name(char *out, size_t n, int layer, int saelens) {
    if (saelens)
        layer < 0 ? snprintf(out, n, "blocks.0.hook_resid_pre") : snprintf(out, n, "blocks.%d.hook_resid_post", layer);
    else
        layer < 0 ? snprintf(out, n, "embed_in") : snprintf(out, n, "layers.%d", layer);
}

static rs_err read_f32(float *dst, size_t n, hid_t f, const char *name, const char *path) {
    return rs_h5_read(f, name, H5T_NATIVE_FLOAT, dst, n, path);
}

/* The metadata both formats carry: what the SAE reads and how it was made. */
static cJSON *sae_metadata(const export_ctx *x, const sae_row *s, int saelens) {
    const run_tables *t = x->t;
    cJSON *m = cJSON_CreateObject();
    char hook[64], prev[64];
    hook_name(hook, sizeof hook, s->layer, 1);
    if (saelens) {
        cJSON_AddStringToObject(m, "sae_lens_version", SAELENS_VERSION);
        cJSON_AddStringToObject(m, "sae_lens_training_version", SAELENS_VERSION);
        cJSON_AddStringToObject(m, "model_name", x->model_name);
        cJSON_AddStringToObject(m, "hook_name", hook);
        cJSON_AddNullToObject(m, "hook_head_index");
        if (x->context_size > 0) cJSON_AddNumberToObject(m, "context_size", (double)x->context_size);
        else cJSON_AddNullToObject(m, "context_size");
        cJSON_AddBoolToObject(m, "prepend_bos", 0);
        cJSON_AddBoolToObject(m, "exclude_special_tokens", 0);
        cJSON_AddStringToObject(m, "dataset_path", x->cfg->data.tokens);
    }
    int residual = s->variant == RS_VARIANT_RESAE;
    cJSON_AddStringToObject(m, "resae_name", s->name);
    cJSON_AddStringToObject(m, "resae_variant", rs_variant_names[s->variant]);
    cJSON_AddNumberToObject(m, "resae_layer_index", s->layer);
    cJSON_AddStringToObject(m, "resae_hook_name", hook);
    cJSON_AddStringToObject(m, "resae_input", residual ? "residual" : "original");
    if (residual) {
        hook_name(prev, sizeof prev, s->pred, 1);
        cJSON_AddNumberToObject(m, "resae_pred_layer", s->pred);
        cJSON_AddStringToObject(m, "resae_prev_hook_name", prev);
        cJSON_AddStringToObject(m, "resae_residual",
                                "u = h[hook_name] - h[resae_prev_hook_name] @ A.T - c, with A and c from "
                                "affine.safetensors; the reconstruction of h is h_prev @ A.T + c + decode(encode(u))");
    }
    cJSON_AddNumberToObject(m, "scale_s", s->scale);
    cJSON_AddStringToObject(m, "scale_folded", "trained on s*u; exported b_enc and b_dec are divided by s, so the SAE "
                                               "reads and reconstructs u unscaled");
    cJSON_AddNumberToObject(m, "k", s->k);
    cJSON_AddNumberToObject(m, "seed", (double)s->seed);
    cJSON_AddNumberToObject(m, "resae_train_fvu", s->fvu);
    cJSON_AddNumberToObject(m, "resae_dead_frac", s->dead_frac);
    cJSON_AddNumberToObject(m, "resae_train_tokens", s->tokens);
    cJSON_AddBoolToObject(m, "resae_exclude_first_position", x->cfg->data.exclude_first_position);
    cJSON_AddStringToObject(m, "resae_version", RESAE_VERSION);
    cJSON_AddStringToObject(m, "resae_config_name", x->cfg->name);
    cJSON *sets = cJSON_AddArrayToObject(m, "resae_sets");
    for (int j = 0; j < t->n_sets; j++)
        if (sae_in_set(t, s, j)) cJSON_AddItemToArray(sets, cJSON_CreateString(t->set_names[j]));
    return m;
}

/* Write one SAE into dir: weights (scale folded), cfg.json, affine.safetensors for a residual SAE. */
static rs_err write_sae(export_ctx *x, const sae_row *s, const char *dir) {
    const int d = x->t->d, n = x->t->n_latents;
    const double sc = s->scale;
    rs_err err = RS_OK;
    char grp[160], path[4200];
    float *W_enc = malloc(sizeof(float) * (size_t)n * d), *W_t = NULL, *W_dec = malloc(sizeof(float) * (size_t)n * d);
    float *b_enc = malloc(sizeof(float) * n), *b_dec = malloc(sizeof(float) * d);
    double *A = NULL, *c = NULL;
    cJSON *cfg = NULL;
    if (!W_enc || !W_dec || !b_enc || !b_dec) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory for SAE %s", s->name);
    snprintf(grp, sizeof grp, "sae/%s/W_enc", s->name);
    RS_TRY_GOTO(read_f32(W_enc, (size_t)n * d, x->f, grp, x->results), done);
    snprintf(grp, sizeof grp, "sae/%s/W_dec", s->name);
    RS_TRY_GOTO(read_f32(W_dec, (size_t)n * d, x->f, grp, x->results), done);
    snprintf(grp, sizeof grp, "sae/%s/b_enc", s->name);
    RS_TRY_GOTO(read_f32(b_enc, (size_t)n, x->f, grp, x->results), done);
    snprintf(grp, sizeof grp, "sae/%s/b_dec", s->name);
    RS_TRY_GOTO(read_f32(b_dec, (size_t)d, x->f, grp, x->results), done);
    for (int i = 0; i < n; i++) b_enc[i] = (float)(b_enc[i] / sc);
    for (int i = 0; i < d; i++) b_dec[i] = (float)(b_dec[i] / sc);
    for (size_t i = 0; i < (size_t)n * d; i++)
        if (!isfinite(W_enc[i]) || !isfinite(W_dec[i]))
            RS_FAIL_GOTO(done, RS_ERR_NUMERIC, "%s: SAE %s has a non-finite weight; not exported", x->results, s->name);
    RS_TRY_GOTO(rs_mkdirs(dir), done);
    const char *meta[] = {"format", "pt", "resae_name", s->name};
    if (x->saelens) {
        W_t = malloc(sizeof(float) * (size_t)n * d);
        if (!W_t) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory for SAE %s", s->name);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) W_t[(size_t)j * n + i] = W_enc[(size_t)i * d + j];
        rs_st_out ts[4] = {{"W_enc", RS_ST_F32, 2, {d, n}, W_t},
                           {"b_enc", RS_ST_F32, 1, {n}, b_enc},
                           {"W_dec", RS_ST_F32, 2, {n, d}, W_dec},
                           {"b_dec", RS_ST_F32, 1, {d}, b_dec}};
        RS_TRY_GOTO(rs_path_join(path, sizeof path, dir, "sae_weights.safetensors"), done);
        RS_TRY_GOTO(rs_safetensors_write(path, ts, 4, meta, 2), done);
        cfg = cJSON_CreateObject();
        cJSON_AddStringToObject(cfg, "architecture", "topk");
        cJSON_AddNumberToObject(cfg, "d_in", d);
        cJSON_AddNumberToObject(cfg, "d_sae", n);
        cJSON_AddNumberToObject(cfg, "k", s->k);
        cJSON_AddStringToObject(cfg, "dtype", "float32");
        cJSON_AddStringToObject(cfg, "device", "cpu");
        cJSON_AddBoolToObject(cfg, "apply_b_dec_to_input", 1);
        cJSON_AddStringToObject(cfg, "normalize_activations", "none");
        cJSON_AddStringToObject(cfg, "reshape_activations", "none");
        cJSON_AddBoolToObject(cfg, "rescale_acts_by_decoder_norm", 0);
        cJSON_AddItemToObject(cfg, "metadata", sae_metadata(x, s, 1));
    } else {
        rs_st_out ts[4] = {{"encoder.weight", RS_ST_F32, 2, {n, d}, W_enc},
                           {"encoder.bias", RS_ST_F32, 1, {n}, b_enc},
                           {"W_dec", RS_ST_F32, 2, {n, d}, W_dec},
                           {"b_dec", RS_ST_F32, 1, {d}, b_dec}};
        RS_TRY_GOTO(rs_path_join(path, sizeof path, dir, "sae.safetensors"), done);
        RS_TRY_GOTO(rs_safetensors_write(path, ts, 4, meta, 2), done);
        cfg = cJSON_CreateObject();
        cJSON_AddStringToObject(cfg, "activation", "topk");
        cJSON_AddNumberToObject(cfg, "expansion_factor", n / d);
        cJSON_AddBoolToObject(cfg, "normalize_decoder", 1);
        cJSON_AddNumberToObject(cfg, "num_latents", n);
        cJSON_AddNumberToObject(cfg, "k", s->k);
        cJSON_AddBoolToObject(cfg, "multi_topk", 0);
        cJSON_AddBoolToObject(cfg, "skip_connection", 0);
        cJSON_AddBoolToObject(cfg, "transcode", 0);
        cJSON_AddNumberToObject(cfg, "d_in", d);
        cJSON_AddItemToObject(cfg, "resae", sae_metadata(x, s, 0));
    }
    RS_TRY_GOTO(rs_path_join(path, sizeof path, dir, "cfg.json"), done);
    RS_TRY_GOTO(write_json(path, cfg), done);
    if (s->variant == RS_VARIANT_RESAE) {
        A = malloc(sizeof(double) * (size_t)d * d);
        c = malloc(sizeof(double) * d);
        if (!A || !c) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory for the map of %s", s->name);
        snprintf(grp, sizeof grp, "affine/L%d_L%d/A", s->pred, s->layer);
        RS_TRY_GOTO(rs_h5_read(x->f, grp, H5T_NATIVE_DOUBLE, A, (size_t)d * d, x->results), done);
        snprintf(grp, sizeof grp, "affine/L%d_L%d/c", s->pred, s->layer);
        RS_TRY_GOTO(rs_h5_read(x->f, grp, H5T_NATIVE_DOUBLE, c, (size_t)d, x->results), done);
        char from[64], to[64];
        hook_name(from, sizeof from, s->pred, x->saelens);
        hook_name(to, sizeof to, s->layer, x->saelens);
        const char *am[] = {"format", "pt", "x_hook", from, "y_hook", to, "definition",
                            "y ~ x @ A.T + c (A [d_out, d_in]); the SAE's input is u = y - x @ A.T - c"};
        rs_st_out ts[2] = {{"A", RS_ST_F64, 2, {d, d}, A}, {"c", RS_ST_F64, 1, {d}, c}};
        RS_TRY_GOTO(rs_path_join(path, sizeof path, dir, "affine.safetensors"), done);
        RS_TRY_GOTO(rs_safetensors_write(path, ts, 2, am, 4), done);
    }
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", s->name);
    cJSON_AddStringToObject(e, "dir", dir + strlen(x->out) + (dir[strlen(x->out)] == '/'));
    cJSON_AddStringToObject(e, "variant", rs_variant_names[s->variant]);
    cJSON_AddNumberToObject(e, "layer", s->layer);
    cJSON_AddNumberToObject(e, "pred", s->pred);
    cJSON_AddNumberToObject(e, "k", s->k);
    cJSON_AddNumberToObject(e, "seed", (double)s->seed);
    cJSON_AddNumberToObject(e, "scale", s->scale);
    cJSON_AddStringToObject(e, "input", s->variant == RS_VARIANT_RESAE ? "residual" : "original");
    cJSON_AddItemToArray(x->index, e);
done:
    cJSON_Delete(cfg);
    free(W_enc);
    free(W_t);
    free(W_dec);
    free(b_enc);
    free(b_dec);
    free(A);
    free(c);
    return err;
}

static const char README[] =
    "# SAEs exported by resae\n\n"
    "Written by `resae export` from `%s` (config `%s`, model `%s`), format **%s**.\n"
    "`export.json` lists every SAE here: its directory, variant, layer, predecessor layer, k, seed, input\n"
    "scale and input kind.\n\n"
    "## What each SAE computes\n\n"
    "TopK SAE on unscaled inputs (the training scale s is folded into the biases):\n\n"
    "    pre = ReLU((u - b_dec) @ W_enc^T + b_enc)        # W_enc as [d_sae, d_in]; SAELens stores its transpose\n"
    "    z   = keep the k largest entries of pre, zero the rest\n"
    "    u_hat = z @ W_dec + b_dec                          # W_dec [d_sae, d_in], unit-norm rows\n\n"
    "SAELens's TopK (top k of the raw pre-activations, then ReLU) gives the same output; so does sparsify's.\n\n"
    "## Input kinds\n\n"
    "- `original` (raw SAEs, and the first layer of a ReSAE chain): u = h_l, the residual stream after\n"
    "  block l (TransformerLens `blocks.<l>.hook_resid_post`, Hugging Face `hidden_states[l + 1]` for every\n"
    "  block but the last, sparsify hookpoint `layers.<l>`).\n"
    "- `residual` (ReSAE SAEs at the later layers of a set): u = h_l - h_p @ A^T - c, where p is the previous\n"
    "  selected layer (`resae_pred_layer` in the metadata) and A [d, d], c [d] are in `affine.safetensors`\n"
    "  next to the weights. Both h_l and h_p come from the same clean forward pass. The reconstruction of\n"
    "  h_l is h_p @ A^T + c + u_hat. Tools that feed an SAE one hook's activations (SAEBench) need a wrapper\n"
    "  that computes u first.\n\n"
    "## Loading\n\n"
    "%s\n";

static const char LOAD_SAELENS[] =
    "    from sae_lens import SAE\n"
    "    sae = SAE.load_from_disk(\"<this dir>/raw_L2_k8_s0\")      # one folder per SAE\n\n"
    "numpy only: `safetensors.numpy.load_file(\".../sae_weights.safetensors\")` gives W_enc [d_in, d_sae],\n"
    "b_enc, W_dec [d_sae, d_in], b_dec (float32).";
static const char LOAD_SPARSIFY[] =
    "    from sparsify import SparseCoder\n"
    "    sae = SparseCoder.load_from_disk(\"<this dir>/raw_k8_s0/layers.2\")\n"
    "    saes = SparseCoder.load_many(\"<this dir>/quarters_resae_k8_s0\")  # every layer of a ReSAE chain\n\n"
    "`raw_k<k>_s<seed>/` holds the raw SAEs of every layer; `<set>_resae_k<k>_s<seed>/` the ReSAE chain of an\n"
    "evaluated layer set (its first layer is that layer's raw SAE, the others read residuals).";

static rs_err export_run(export_ctx *x, const selection *sel) {
    const run_tables *t = x->t;
    rs_err err = RS_OK;
    char dir[4200], path[4200];
    int written = 0;
    RS_TRY(rs_mkdirs(x->out));
    if (x->saelens) {
        for (int i = 0; i < t->n_sae; i++) {
            if (!sae_selected(t, sel, &t->sae[i], t->sae[i].variant)) continue;
            RS_TRY(rs_path_join(dir, sizeof dir, x->out, t->sae[i].name));
            RS_TRY(write_sae(x, &t->sae[i], dir));
            written++;
        }
    } else {
        /* raw SAEs, grouped by (k, seed) */
        for (int i = 0; i < t->n_sae; i++) {
            const sae_row *s = &t->sae[i];
            if (s->variant != RS_VARIANT_RAW || !sae_selected(t, sel, s, RS_VARIANT_RAW)) continue;
            char sub[160];
            snprintf(sub, sizeof sub, "raw_k%d_s%" PRId64 "/layers.%d", s->k, s->seed, s->layer);
            RS_TRY(rs_path_join(dir, sizeof dir, x->out, sub));
            RS_TRY(write_sae(x, s, dir));
            written++;
        }
        /* ReSAE chains, one per evaluated (set, k, seed); members by /eval/recon */
        for (int r = 0; r < t->n_recon; r++) {
            const recon_row *rr = &t->recon[r];
            if (rr->variant != RS_VARIANT_RESAE || !sel_pass(sel, SEL_SET, t->set_names[rr->set])) continue;
            for (int i = 0; i < t->n_sae; i++) {
                const sae_row *s = &t->sae[i];
                int hit = s->k == rr->k && s->seed == rr->seed && s->layer == rr->layer &&
                          (rr->pred < 0 ? s->variant == RS_VARIANT_RAW
                                        : s->variant == RS_VARIANT_RESAE && s->pred == rr->pred);
                /* the set filter was applied to the chain; check the other keys on the member */
                if (!hit || !sel_pass(sel, SEL_VARIANT, "resae") || !sel_pass_int(sel, SEL_K, s->k) ||
                    !sel_pass_int(sel, SEL_LAYER, s->layer) || !sel_pass_int(sel, SEL_SEED, s->seed))
                    continue;
                char sub[300];
                snprintf(sub, sizeof sub, "%s_resae_k%d_s%" PRId64 "/layers.%d", t->set_names[rr->set], s->k, s->seed,
                         s->layer);
                RS_TRY(rs_path_join(dir, sizeof dir, x->out, sub));
                RS_TRY(write_sae(x, s, dir));
                written++;
            }
        }
        /* the run config sparsify's readers look for, in every run directory written */
        cJSON *arr = x->index;
        for (int i = 0; i < cJSON_GetArraySize(arr); i++) {
            const char *d = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, i), "dir"));
            char run[300];
            size_t rl = strcspn(d, "/");
            snprintf(run, sizeof run, "%.*s", (int)rl, d);
            int seen = 0; /* one config.json per run directory: skip runs an earlier entry wrote */
            for (int j = 0; j < i && !seen; j++) {
                const char *dj = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, j), "dir"));
                seen = !strncmp(dj, d, rl) && dj[rl] == '/';
            }
            if (seen) continue;
            RS_TRY(rs_path_join(dir, sizeof dir, x->out, run));
            RS_TRY(rs_path_join(path, sizeof path, dir, "config.json"));
            cJSON *rc = cJSON_CreateObject();
            cJSON_AddStringToObject(rc, "model", x->model_name);
            cJSON_AddStringToObject(rc, "dataset", x->cfg->data.tokens);
            if (x->context_size > 0) cJSON_AddNumberToObject(rc, "ctx_len", (double)x->context_size);
            cJSON *hooks = cJSON_AddArrayToObject(rc, "hookpoints");
            for (int j = 0; j < cJSON_GetArraySize(arr); j++) {
                const char *dj = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, j), "dir"));
                if (!strncmp(dj, run, strlen(run)) && dj[strlen(run)] == '/')
                    cJSON_AddItemToArray(hooks, cJSON_CreateString(dj + strlen(run) + 1));
            }
            err = write_json(path, rc);
            cJSON_Delete(rc);
            RS_TRY(err);
        }
    }
    if (!written)
        RS_FAIL(RS_ERR_INVAL, "%s: no SAE matches the selection%s", x->results,
                !x->saelens && !t->n_recon ? " (sparsify exports ReSAE chains of evaluated sets: this run has no /eval)" : "");
    RS_TRY(rs_path_join(path, sizeof path, x->out, "export.json"));
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", x->saelens ? "saelens" : "sparsify");
    cJSON_AddStringToObject(root, "results", x->results);
    cJSON_AddStringToObject(root, "model_name", x->model_name);
    cJSON_AddStringToObject(root, "resae_version", RESAE_VERSION);
    cJSON_AddItemReferenceToObject(root, "saes", x->index);
    err = write_json(path, root);
    cJSON_Delete(root);
    RS_TRY(err);
    size_t cap = sizeof README + 8192;
    char *text = malloc(cap);
    RS_CHECK_ALLOC(text);
    snprintf(text, cap, README, x->results, x->cfg->name, x->model_name, x->saelens ? "SAELens" : "sparsify",
             x->saelens ? LOAD_SAELENS : LOAD_SPARSIFY);
    RS_TRY(rs_path_join(path, sizeof path, x->out, "README.md"));
    err = write_text(path, text);
    free(text);
    RS_TRY(err);
    printf("exported %d SAEs (%s format) to %s; index %s/export.json\n", written, x->saelens ? "SAELens" : "sparsify",
           x->out, x->out);
    return RS_OK;
}

/* The config the run recorded in results.h5 (model name, data, sequence length). */
static rs_err read_config(rs_config *cfg, hid_t f, const char *path) {
    hid_t ds = H5Dopen2(f, "config_yaml", H5P_DEFAULT);
    if (ds < 0) RS_FAIL(RS_ERR_FORMAT, "%s has no config_yaml (not written by resae run?)", path);
    hid_t ty = H5Dget_type(ds);
    size_t n = H5Tget_size(ty);
    char *text = n && n < ((size_t)1 << 26) ? calloc(n + 1, 1) : NULL;
    herr_t e = text && !H5Tis_variable_str(ty) ? H5Dread(ds, ty, H5S_ALL, H5S_ALL, H5P_DEFAULT, text) : -1;
    H5Tclose(ty);
    H5Dclose(ds);
    if (e < 0) {
        free(text);
        RS_FAIL(RS_ERR_FORMAT, "%s: cannot read config_yaml", path);
    }
    char name[4400];
    snprintf(name, sizeof name, "%s:config_yaml", path);
    rs_err err = rs_config_load_text(cfg, name, text, strlen(text));
    free(text);
    return err;
}

int rs_cmd_export(int argc, char **argv) {
    if (rs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return RS_EXIT_OK;
    }
    const char *run_dir = NULL, *out = NULL, *format = NULL, *model_name = NULL;
    selection sel = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "--format") || !strcmp(a, "--select") || !strcmp(a, "--model-name")) && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(a, "--format")) format = v;
            else if (!strcmp(a, "--model-name")) model_name = v;
            else if (!parse_select(&sel, v)) return RS_EXIT_USAGE;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "resae export: unknown option or missing value: %s\n\n", a);
            usage(stderr);
            return RS_EXIT_USAGE;
        } else if (!run_dir) run_dir = a;
        else if (!out) out = a;
        else {
            usage(stderr);
            return RS_EXIT_USAGE;
        }
    }
    if (!run_dir || !out || !format || (strcmp(format, "saelens") && strcmp(format, "sparsify"))) {
        if (format && strcmp(format, "saelens") && strcmp(format, "sparsify"))
            fprintf(stderr, "resae export: --format must be saelens or sparsify, not '%s'\n\n", format);
        usage(stderr);
        return RS_EXIT_USAGE;
    }
    char results[4200];
    if (rs_path_join(results, sizeof results, run_dir, "results.h5")) return rs_cli_fail();
    if (!rs_file_exists(results)) {
        fprintf(stderr, "error: %s does not exist: run `resae run` on this run directory first\n", results);
        return RS_EXIT_ERROR;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(results, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "error: %s is not a readable HDF5 file\n", results);
        return RS_EXIT_ERROR;
    }
    rs_config cfg = {0};
    run_tables t = {0};
    export_ctx x = {.results = results, .f = f, .t = &t, .cfg = &cfg, .saelens = !strcmp(format, "saelens"), .out = out};
    int rc = RS_EXIT_OK;
    if (read_config(&cfg, f, results) || tables_read(&t, f, results)) {
        rc = rs_cli_fail();
        goto done;
    }
    if (!t.n_sae) {
        fprintf(stderr, "error: %s has no trained SAEs\n", results);
        rc = RS_EXIT_ERROR;
        goto done;
    }
    {
        char grp[160];
        snprintf(grp, sizeof grp, "sae/%s/W_enc", t.sae[0].name);
        hid_t ds = H5Dopen2(f, grp, H5P_DEFAULT);
        hsize_t dims[2] = {0, 0};
        if (ds >= 0) {
            hid_t sp = H5Dget_space(ds);
            if (H5Sget_simple_extent_ndims(sp) == 2) H5Sget_simple_extent_dims(sp, dims, NULL);
            H5Sclose(sp);
            H5Dclose(ds);
        }
        if (!dims[0] || !dims[1] || dims[0] > (1u << 24) || dims[1] > (1u << 20)) {
            fprintf(stderr, "error: %s: %s is missing or not (n_latents, d)\n", results, grp);
            rc = RS_EXIT_ERROR;
            goto done;
        }
        t.n_latents = (int)dims[0];
        t.d = (int)dims[1];
    }
    if (model_name) snprintf(x.model_name, sizeof x.model_name, "%s", model_name);
    else { /* the last component of model.path, trailing slashes ignored */
        const char *p = cfg.model.path;
        size_t end = strlen(p), start;
        while (end > 1 && p[end - 1] == '/') end--;
        for (start = end; start > 0 && p[start - 1] != '/'; start--) {}
        snprintf(x.model_name, sizeof x.model_name, "%.*s", (int)(end - start), p + start);
    }
    x.context_size = cfg.data.seq_len;
    if (x.context_size <= 0 && cfg.data.format == RS_FORMAT_HDF5 && rs_file_exists(cfg.data.tokens)) {
        hid_t tf = H5Fopen(cfg.data.tokens, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t ds = tf >= 0 ? H5Dopen2(tf, cfg.data.dataset, H5P_DEFAULT) : -1;
        if (ds >= 0) {
            hid_t sp = H5Dget_space(ds);
            hsize_t dims[2] = {0, 0};
            if (H5Sget_simple_extent_ndims(sp) == 2) H5Sget_simple_extent_dims(sp, dims, NULL);
            x.context_size = (int64_t)dims[1];
            H5Sclose(sp);
            H5Dclose(ds);
        }
        if (tf >= 0) H5Fclose(tf);
    }
    x.index = cJSON_CreateArray();
    if (!x.index || export_run(&x, &sel)) rc = rs_cli_fail();
    cJSON_Delete(x.index);
done:
    tables_free(&t);
    rs_config_free(&cfg);
    H5Fclose(f);
    return rc;
}
