/* The evaluation stage of `resae run` (pipeline_eval.h, docs/store.md "Evaluation"). */
#define _GNU_SOURCE
#include "resae/pipeline_eval.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/actstore.h"
#include "resae/affine.h"
#include "resae/eval.h"
#include "resae/h5util.h"
#include "resae/log.h"
#include "resae/model.h"
#include "resae/mpi_util.h"
#include "resae/sae.h"
#include "resae/splits.h"
#include "resae/tokens.h"
#include "resae/util.h"

/* Bytes of logits and clean probabilities a CE batch may hold per rank. */
#define RS_EVAL_LOGIT_BYTES ((int64_t)1 << 30)

const char *const rs_eval_ce_row_names[6] = {"clean", "single", "tf", "so", "zero", "mean"};

/* The definition strings stored with every table (METHOD.md §5-6 as implemented). */
#define DEF_RECON                                                                                                    \
    "METHOD.md 5-6 on the eval split (activation store rows; position 0 excluded when configured). u: raw h_l; "    \
    "resae u_1 = h_l1, u_m = h_lm - A h_l(m-1) - c. r_hat = SAE(s u)/s. l0 = mean active latents per token; "       \
    "dead_frac = fraction of latents never active on the eval split (dead_frac_train: dead after the last training " \
    "step, over the last dead_tokens training tokens); mse = sum||u - r_hat||^2/(n d) (target space, " \
    "unscaled); ev_target = 1 - sum||u - r_hat||^2 / sum||u - mu_u||^2 (mu_u = eval mean of u = mu_h - A mu_hprev - " \
    "c); ev_orig_onestep = 1 - sum||h - (A h_prev + c + r_hat)||^2 / sum||h - mu_h||^2; ev_orig_chain the same with "  \
    "x_hat_m = A x_hat_(m-1) + c + r_hat_m, x_hat_1 = r_hat_1; raw: x_hat = r_hat (all three EVs equal)"
#define DEF_RED                                                                                                      \
    "METHOD.md 6: for every pair a < b of the set's layers, mean over rows j of W_dec^b of max_i cos(W_dec^b[j], "   \
    "W_dec^a[i]) and of max_i |cos|; blocked SGEMM with running row maxima (eval.redundancy_block)"
#define DEF_CE                                                                                                       \
    "METHOD.md 6 on the eval split sequences (tokens re-read by seq_id, all positions run through the model). CE = "  \
    "mean next-token CE over predictions from positions p0..T-2 (p0 = 1 when data.exclude_first_position, else 0); " \
    "position 0 is never spliced or ablated when excluded. kl = mean over the same predictions of KL(clean || "        \
    "spliced). eps_m = r_hat_m - u_m, written as h <- h + eps_m. single (layer l): eps on clean inputs at l only; "    \
    "tf: every eps_m from clean activations in one pass; so: each SAE reads the perturbed stream, resae r' = h' - A "  \
    "x_hat_prev - c with x_hat_prev the value written at the previous layer. zero/mean ablation with layer l: h <- 0 " \
    "or h <- mu (eval-split mean at l) at l only; layer -1: at every layer of the set jointly (equal to the last "    \
    "layer's ablation, since it overwrites the stream, and stored as such). dce = ce - ce_clean. recovered_X = "        \
    "(ce_X - ce) / (ce_X - ce_clean) with the X ablation at the same layer (single) or at all layers (tf, so); "      \
    "overinteraction (tf, so) = dce_joint - sum_m dce_single(m)"

void rs_pipeline_eval_name(char *out, size_t n, const rs_pipeline *p, const rs_grid_eval *e) {
    snprintf(out, n, "%s_%s_k%d_s%" PRId64, p->grid.sets[e->set].name, rs_variant_names[e->variant], e->k, e->seed);
}

void rs_pipeline_eval_path(char *out, size_t n, const rs_pipeline *p, const rs_grid_eval *e) {
    /* identical sets share the task file of the first one */
    const rs_grid_eval *f = e;
    for (int i = 0; i < p->grid.n_evals; i++)
        if (p->grid.evals[i].hash == e->hash) {
            f = &p->grid.evals[i];
            break;
        }
    char name[256];
    rs_pipeline_eval_name(name, sizeof name, p, f);
    snprintf(out, n, "%s/tasks/eval_%s_%016" PRIx64 ".h5", p->cfg.run_dir, name, e->hash);
}

int rs_pipeline_eval_first(const rs_pipeline *p, int i) {
    for (int j = 0; j < i; j++)
        if (p->grid.evals[j].hash == p->grid.evals[i].hash) return 0;
    return 1;
}

static rs_err agree(const rs_pipeline *p, rs_err local) {
    rs_err all = rs_mpi_agree(local, p->comm);
    if (all && !local) return rs_err_set(all, __FILE__, __LINE__, __func__, "%s", RS_PIPELINE_OTHER_RANK);
    return all;
}

static int task_done(const rs_pipeline *p, const char *path) {
    int done = p->rank == 0 ? rs_file_exists(path) : 0;
    MPI_Bcast(&done, 1, MPI_INT, 0, p->comm);
    return done;
}

/* Everything one evaluation reads. */
typedef struct eval_inputs {
    rs_eval_set es;
    rs_sae sae[RS_EVAL_MAX_LAYERS];
    rs_affine_map map[RS_EVAL_MAX_LAYERS];
    double *mu_h; // (M, d) eval means
    float *mu_f;  // (M, d)
    double dead_train[RS_EVAL_MAX_LAYERS]; /* the SAE task file's dead_frac (end of training) */
} eval_inputs;

static void inputs_free(eval_inputs *in) {
    for (int m = 0; m < RS_EVAL_MAX_LAYERS; m++) {
        rs_sae_free(&in->sae[m]);
        rs_affine_map_free(&in->map[m]);
    }
    free(in->mu_h);
    free(in->mu_f);
}

/* The set's layers and their eval means (no SAEs yet: scale 1, identity reconstructions). */
static rs_err inputs_set(eval_inputs *in, const rs_pipeline *p, const rs_actstore *st, const rs_grid_set *s, int variant) {
    int d = p->mc.d_model;
    if (s->n > RS_EVAL_MAX_LAYERS)
        RS_FAIL(RS_ERR_CONFIG, "set %s has %d layers; evaluation supports at most %d", s->name, s->n, RS_EVAL_MAX_LAYERS);
    in->es.variant = variant;
    in->es.M = s->n;
    in->es.d = d;
    in->mu_h = malloc(sizeof(double) * (size_t)s->n * (size_t)d);
    in->mu_f = malloc(sizeof(float) * (size_t)s->n * (size_t)d);
    RS_CHECK_ALLOC(in->mu_h);
    RS_CHECK_ALLOC(in->mu_f);
    for (int m = 0; m < s->n; m++) {
        rs_eval_layer *L = &in->es.L[m];
        L->layer = s->layers[m];
        L->scale = 1.0;
        double msq;
        RS_TRY(rs_actstore_stats(st, in->mu_h + (size_t)m * (size_t)d, &msq, RS_SPLIT_EVAL, L->layer));
        for (int i = 0; i < d; i++) in->mu_f[(size_t)m * (size_t)d + (size_t)i] = (float)in->mu_h[(size_t)m * (size_t)d + (size_t)i];
    }
    return RS_OK;
}

static rs_err inputs_load(eval_inputs *in, const rs_pipeline *p, const rs_actstore *st, const rs_grid_eval *e) {
    const rs_grid_set *s = &p->grid.sets[e->set];
    RS_TRY(inputs_set(in, p, st, s, e->variant));
    for (int m = 0; m < s->n; m++) {
        const rs_grid_sae *g = &p->grid.saes[p->grid.eval_sae[e->sae_off + m]];
        rs_eval_layer *L = &in->es.L[m];
        RS_TRY(rs_pipeline_load_sae(&in->sae[m], &L->scale, p, g));
        char spath[4096];
        rs_pipeline_sae_path(spath, sizeof spath, p, g);
        hid_t sf = H5Fopen(spath, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (sf < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open", spath);
        rs_err e2 = rs_h5_attr_get_f64(&in->dead_train[m], sf, "dead_frac", spath);
        H5Fclose(sf);
        RS_TRY(e2);
        L->sae = &in->sae[m];
        if (g->kind == RS_SAE_RESAE) {
            if (g->pred != s->layers[m - 1])
                RS_FAIL(RS_ERR_INTERNAL, "resae SAE at layer %d predicts from %d, not %d", g->layer, g->pred, s->layers[m - 1]);
            RS_TRY(rs_pipeline_load_affine(&in->map[m], p, g->pred, g->layer));
            L->map = &in->map[m];
        }
    }
    return RS_OK;
}

static rs_err eval_recon(rs_eval_recon *out, const rs_pipeline *p, const rs_actstore *st, const eval_inputs *in) {
    int M = in->es.M, d = in->es.d;
    int64_t rows = rs_actstore_n_rows(st, RS_SPLIT_EVAL);
    int64_t lo = rows * p->rank / p->size, hi = rows * (p->rank + 1) / p->size;
    int64_t C = p->cfg.store.chunk_rows;
    rs_eval_recon_acc acc;
    float *buf = malloc(sizeof(float) * (size_t)M * (size_t)C * (size_t)d);
    const float *h[RS_EVAL_MAX_LAYERS];
    rs_err err = buf ? rs_eval_recon_init(&acc, &in->es, in->mu_h, C)
                     : rs_err_set(RS_ERR_NOMEM, __FILE__, __LINE__, __func__, "out of memory for eval rows");
    if (err) {
        free(buf);
        return agree(p, err);
    }
    for (int m = 0; m < M; m++) h[m] = buf + (size_t)m * (size_t)C * (size_t)d;
    for (int64_t r = lo; r < hi && !err; r += C) {
        int64_t n = hi - r < C ? hi - r : C;
        for (int m = 0; m < M && !err; m++) err = rs_actstore_read_rows(st, (float *)h[m], RS_SPLIT_EVAL, in->es.L[m].layer, r, n);
        if (!err) err = rs_eval_recon_add(&acc, h, n);
    }
    err = agree(p, err);
    if (!err) err = rs_eval_recon_finish(out, &acc, p->comm);
    rs_eval_recon_free(&acc);
    free(buf);
    return err;
}

/* ---- ablation baselines, shared by every evaluation of a set ------------------------------------------
 * The zero and mean ablation passes depend only on the model, the eval tokens and the set's layers,
 * not on the SAEs: `resae run` runs them as one task per distinct set (rs_pipeline_ablate_task), which
 * leaves tasks/ablate_<set>_<hash>.h5; the set's evaluations read it. (rs_pipeline_evaluate, the
 * stage without the scheduler, lets the first evaluation of a set write it.) The passes are the same
 * computation at the same rank count, so the numbers are bitwise those an evaluation computing them
 * itself would give. */

static uint64_t ablate_hash(const rs_pipeline *p, const rs_grid_set *s) {
    uint64_t h = rs_hash64(p->grid.inputs_hash, "ablate", 6);
    h = rs_hash64(h, s->layers, sizeof(int) * (size_t)s->n);
    /* like the evaluation hashes, not the rank count: task files are reused across group sizes (sums
     * over ranks differ only in float rounding) */
    int32_t flags[3] = {p->cfg.data.exclude_first_position, 0, 0};
    for (int i = 0; i < p->cfg.eval.n_ablations; i++) flags[1 + p->cfg.eval.ablations[i]] = 1;
    return rs_hash64(h, flags, sizeof flags);
}

static void ablate_path(char *out, size_t n, const rs_pipeline *p, const rs_grid_set *s) {
    const rs_grid_set *f = s->same_as >= 0 ? &p->grid.sets[s->same_as] : s;
    snprintf(out, n, "%s/tasks/ablate_%s_%016" PRIx64 ".h5", p->cfg.run_dir, f->name, ablate_hash(p, s));
}

/* res (2M): zero at each layer, then mean at each layer. */
static rs_err ablate_read(rs_eval_ce_result *res, int M, const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open", path);
    double *t = malloc(sizeof(double) * 4 * 2 * (size_t)M);
    rs_err err = t ? rs_h5_read(f, "ablation", H5T_NATIVE_DOUBLE, t, 8 * (size_t)M, path)
                   : rs_err_set(RS_ERR_NOMEM, __FILE__, __LINE__, __func__, "out of memory");
    for (int i = 0; !err && i < 2 * M; i++) {
        res[i].ce = t[4 * i];
        res[i].kl = t[4 * i + 1];
        res[i].n = (int64_t)t[4 * i + 2];
        res[i].ran = t[4 * i + 3] != 0;
    }
    free(t);
    H5Fclose(f);
    return err;
}

static rs_err ablate_write(const char *path, const rs_eval_ce_result *res, int M) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    double *t = malloc(sizeof(double) * 8 * (size_t)M);
    RS_CHECK_ALLOC(t);
    for (int i = 0; i < 2 * M; i++) {
        t[4 * i] = res[i].ce;
        t[4 * i + 1] = res[i].kl;
        t[4 * i + 2] = (double)res[i].n;
        t[4 * i + 3] = res[i].ran;
    }
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    rs_err err = f < 0 ? rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "%s: cannot create", tmp) : RS_OK;
    hsize_t dims[2] = {2 * (hsize_t)M, 4};
    if (!err) err = rs_h5_write(f, "ablation", H5T_NATIVE_DOUBLE, 2, dims, t);
    if (!err) err = rs_h5_attr_str(f, "columns", "ce,kl,n_tokens,ran; rows: zero at each layer, then mean");
    if (f >= 0 && H5Fclose(f) < 0 && !err) err = rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "%s: close", tmp);
    free(t);
    if (!err) err = rs_file_commit(tmp, path);
    return err;
}

/* The CE splices over this rank's share of the eval sequences. */
static rs_err eval_ce(rs_eval_ce_result *res, double *secs, const rs_pipeline *p, const rs_actstore *st,
                      const rs_model *model, rs_tokens *tk, const eval_inputs *in, const rs_grid_set *set,
                      int ablations_only) {
    const rs_config *c = &p->cfg;
    rs_eval_ce_opts o = {0};
    for (int i = 0; i < c->eval.n_ce_modes && !ablations_only; i++) {
        if (c->eval.ce_modes[i] == RS_CE_SINGLE) o.single = 1;
        if (c->eval.ce_modes[i] == RS_CE_TF) o.tf = 1;
        if (c->eval.ce_modes[i] == RS_CE_SO) o.so = 1;
    }
    for (int i = 0; i < c->eval.n_ablations; i++) {
        if (c->eval.ablations[i] == RS_ABLATE_ZERO) o.zero = 1;
        if (c->eval.ablations[i] == RS_ABLATE_MEAN) o.mean = 1;
    }
    o.skip_pos0 = c->data.exclude_first_position;
    o.mu = in->mu_f;
    int M = in->es.M;
    char apath[4096];
    ablate_path(apath, sizeof apath, p, set);
    int have_base = (o.zero || o.mean) && task_done(p, apath);
    rs_eval_ce_result base[2 * RS_EVAL_MAX_LAYERS];
    if (have_base) {
        RS_TRY(agree(p, ablate_read(base, M, apath)));
        o.zero = o.mean = 0;
    }
    int64_t n_seq = st->n_seq[RS_SPLIT_EVAL];
    int64_t lo = n_seq * p->rank / p->size, hi = n_seq * (p->rank + 1) / p->size;
    int B = (int)c->eval.batch_sequences, T = tk->seq_len;
    /* logits and clean probabilities take 2 B T V floats: keep them under RS_EVAL_LOGIT_BYTES by
     * running fewer sequences at once (the sums do not depend on the batch, up to float rounding) */
    int64_t per_seq = 2 * (int64_t)T * (int64_t)p->mc.vocab_size * (int64_t)sizeof(float);
    int64_t fit = RS_EVAL_LOGIT_BYTES / (per_seq > 0 ? per_seq : 1);
    if (fit < 1) fit = 1;
    if (B > fit) B = (int)fit;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n_seq > 0 ? n_seq : 1));
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * (size_t)T);
    rs_eval_ce ce;
    memset(&ce, 0, sizeof ce);
    rs_err err = ids && tok ? RS_OK : rs_err_set(RS_ERR_NOMEM, __FILE__, __LINE__, __func__, "out of memory for tokens");
    if (!err) err = rs_actstore_read_seq_ids(st, ids, RS_SPLIT_EVAL);
    if (!err) err = rs_eval_ce_init(&ce, model, &in->es, &o, B, T);
    for (int64_t s0 = lo; s0 < hi && !err; s0 += B) {
        int nb = (int)(hi - s0 < B ? hi - s0 : B);
        for (int s = 0; s < nb && !err;) {
            int e = s + 1;
            while (e < nb && ids[s0 + e] == ids[s0 + e - 1] + 1) e++;
            err = rs_tokens_read(tok + (size_t)s * (size_t)T, tk, ids[s0 + s], e - s);
            s = e;
        }
        if (!err) err = rs_eval_ce_batch(&ce, tok, nb);
    }
    err = agree(p, err);
    if (!err) err = rs_eval_ce_finish(res, &ce, p->comm);
    if (!err && have_base) {
        memcpy(&res[RS_PASS_SINGLE + M], base, sizeof(rs_eval_ce_result) * 2 * (size_t)M);
    } else if (!err && (o.zero || o.mean)) {
        err = p->rank == 0 ? ablate_write(apath, &res[RS_PASS_SINGLE + M], M) : RS_OK;
        err = agree(p, err);
    }
    secs[0] = ce.seconds_clean;
    secs[1] = ce.seconds_splice;
    secs[2] = (double)ce.block_tokens_clean;
    secs[3] = (double)ce.block_tokens_splice;
    rs_eval_ce_free(&ce);
    free(ids);
    free(tok);
    return err;
}

/* CE rows from the pass results (see DEF_CE). */
static int ce_rows(double *rows, const rs_eval_ce_result *r, const eval_inputs *in) {
    int M = in->es.M, n = 0;
    double clean = r[RS_PASS_CLEAN].ce;
    int last = M - 1;
    const rs_eval_ce_result *zj = &r[RS_PASS_SINGLE + M + last], *mj = &r[RS_PASS_SINGLE + 2 * M + last];
    double sum_single = 0;
    int have_single = 1;
    for (int m = 0; m < M; m++) {
        have_single &= r[RS_PASS_SINGLE + m].ran;
        sum_single += r[RS_PASS_SINGLE + m].ce - clean;
    }
#define ROW(mode, layer, res, zero, mean, over)                                                                     \
    do {                                                                                                           \
        double *q = rows + (size_t)n * RS_EVAL_CE_NC;                                                              \
        q[0] = (mode);                                                                                             \
        q[1] = (layer);                                                                                            \
        q[2] = (res)->ce;                                                                                          \
        q[3] = (res)->ce - clean;                                                                                  \
        q[4] = (mode) == RS_CE_ROW_CLEAN ? 0.0 : (res)->kl;                                                        \
        q[5] = (zero) && (zero)->ran ? ((zero)->ce - (res)->ce) / ((zero)->ce - clean) : NAN;                      \
        q[6] = (mean) && (mean)->ran ? ((mean)->ce - (res)->ce) / ((mean)->ce - clean) : NAN;                      \
        q[7] = (over);                                                                                             \
        q[8] = (double)(res)->n;                                                                                   \
        n++;                                                                                                       \
    } while (0)
    const rs_eval_ce_result *none = NULL;
    ROW(RS_CE_ROW_CLEAN, -1, &r[RS_PASS_CLEAN], none, none, NAN);
    for (int m = 0; m < M; m++)
        if (r[RS_PASS_SINGLE + m].ran)
            ROW(RS_CE_ROW_SINGLE, in->es.L[m].layer, &r[RS_PASS_SINGLE + m], &r[RS_PASS_SINGLE + M + m],
                &r[RS_PASS_SINGLE + 2 * M + m], NAN);
    if (r[RS_PASS_TF].ran)
        ROW(RS_CE_ROW_TF, -1, &r[RS_PASS_TF], zj, mj, have_single ? r[RS_PASS_TF].ce - clean - sum_single : NAN);
    if (r[RS_PASS_SO].ran)
        ROW(RS_CE_ROW_SO, -1, &r[RS_PASS_SO], zj, mj, have_single ? r[RS_PASS_SO].ce - clean - sum_single : NAN);
    for (int kind = 0; kind < 2; kind++) {
        const rs_eval_ce_result *base = &r[RS_PASS_SINGLE + (kind + 1) * M];
        if (!base[0].ran) continue;
        int mode = kind ? RS_CE_ROW_MEAN : RS_CE_ROW_ZERO;
        for (int m = 0; m < M; m++) ROW(mode, in->es.L[m].layer, &base[m], none, none, NAN);
        ROW(mode, -1, &base[last], none, none, NAN);
    }
#undef ROW
    return n;
}

static rs_err write_table(hid_t f, const char *name, const double *t, int rows, int cols, const char *columns,
                          const char *def) {
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    RS_TRY(rs_h5_write(f, name, H5T_NATIVE_DOUBLE, 2, dims, t));
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) RS_FAIL(RS_ERR_IO, "cannot reopen dataset %s", name);
    rs_err err = rs_h5_attr_str(ds, "columns", columns);
    if (!err) err = rs_h5_attr_str(ds, "definition", def);
    H5Dclose(ds);
    return err;
}

static rs_err write_eval(const char *path, const rs_pipeline *p, const rs_grid_eval *e, const double *recon, int M,
                         const double *red, int npairs, const double *ce, int nce, double seconds) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create", tmp);
    rs_err err = RS_OK;
    const rs_grid_set *s = &p->grid.sets[e->set];
    char layers[2048];
    size_t o = 0;
    layers[0] = 0;
    for (int m = 0; m < s->n && o < sizeof layers - 16; m++) o += (size_t)snprintf(layers + o, sizeof layers - o, m ? ",%d" : "%d", s->layers[m]);
    RS_TRY_GOTO(write_table(f, "recon", recon, M, RS_EVAL_RECON_NC, RS_EVAL_RECON_COLS, DEF_RECON), fail);
    RS_TRY_GOTO(write_table(f, "redundancy", red, npairs, RS_EVAL_RED_NC, RS_EVAL_RED_COLS, DEF_RED), fail);
    RS_TRY_GOTO(write_table(f, "ce", ce, nce, RS_EVAL_CE_NC, RS_EVAL_CE_COLS, DEF_CE), fail);
    RS_TRY_GOTO(rs_h5_attr_str(f, "task", "eval"), fail);
    RS_TRY_GOTO(rs_h5_attr_str(f, "set", s->name), fail);
    RS_TRY_GOTO(rs_h5_attr_str(f, "layers", layers), fail);
    RS_TRY_GOTO(rs_h5_attr_str(f, "variant", rs_variant_names[e->variant]), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "k", e->k), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "seed", e->seed), fail);
    RS_TRY_GOTO(rs_h5_attr_i64(f, "hash", (int64_t)e->hash), fail);
    RS_TRY_GOTO(rs_h5_attr_f64(f, "seconds", seconds), fail);
    RS_TRY_GOTO(rs_h5_attr_str(f, "ce_modes", "0=clean,1=single,2=tf,3=so,4=zero,5=mean"), fail);
    if (H5Fclose(f) < 0) RS_FAIL(RS_ERR_IO, "%s: cannot close", tmp);
    return rs_file_commit(tmp, path);
fail:
    H5Fclose(f);
    return err;
}

static rs_err evaluate_one(const rs_pipeline *p, const rs_actstore *st, const rs_model *model, rs_tokens *tk,
                           const rs_grid_eval *e, const char *path) {
    eval_inputs in;
    memset(&in, 0, sizeof in);
    int M = p->grid.sets[e->set].n, d = p->mc.d_model;
    int npairs = M * (M - 1) / 2, nce_max = 3 + 3 * M + 4;
    double *recon = calloc((size_t)M * RS_EVAL_RECON_NC, sizeof(double));
    double *red = calloc((size_t)(npairs ? npairs : 1) * RS_EVAL_RED_NC, sizeof(double));
    double *ce = calloc((size_t)nce_max * RS_EVAL_CE_NC, sizeof(double));
    rs_eval_recon *rec = calloc((size_t)M, sizeof *rec);
    rs_eval_ce_result *cer = calloc((size_t)rs_eval_n_passes(M), sizeof *cer);
    rs_err err = recon && red && ce && rec && cer ? RS_OK : rs_err_set(RS_ERR_NOMEM, __FILE__, __LINE__, __func__, "out of memory");
    if (!err) err = inputs_load(&in, p, st, e);
    RS_TRY_GOTO(agree(p, err), done);
    double t0 = rs_now();
    RS_TRY_GOTO(eval_recon(rec, p, st, &in), done);
    for (int m = 0; m < M; m++) {
        double *q = recon + (size_t)m * RS_EVAL_RECON_NC;
        const rs_grid_sae *g = &p->grid.saes[p->grid.eval_sae[e->sae_off + m]];
        q[0] = in.es.L[m].layer;
        q[1] = g->pred;
        q[2] = in.es.L[m].scale;
        q[3] = rec[m].l0;
        q[4] = rec[m].dead_frac;
        q[5] = rec[m].mse;
        q[6] = rec[m].ev_target;
        q[7] = rec[m].ev_onestep;
        q[8] = rec[m].ev_chain;
        q[9] = (double)rec[m].n_tokens;
        q[10] = in.dead_train[m];
    }
    double t1 = rs_now();
    int np = 0;
    for (int b = 1; b < M; b++)
        for (int a = 0; a < b; a++) {
            double *q = red + (size_t)np * RS_EVAL_RED_NC;
            RS_TRY_GOTO(rs_eval_redundancy(&q[3], &q[4], in.sae[b].p.W_dec, in.sae[b].n_latents, in.sae[a].p.W_dec,
                                           in.sae[a].n_latents, d, (int)p->cfg.eval.redundancy_block, p->comm),
                        done);
            q[0] = in.es.L[a].layer;
            q[1] = in.es.L[b].layer;
            q[2] = q[1] - q[0];
            q[5] = in.sae[b].n_latents;
            np++;
        }
    double t2 = rs_now();
    int nce = 0;
    double secs[4] = {0, 0, 0, 0};
    if (p->cfg.eval.ce) {
        RS_TRY_GOTO(eval_ce(cer, secs, p, st, model, tk, &in, &p->grid.sets[e->set], 0), done);
        nce = ce_rows(ce, cer, &in);
    }
    double t3 = rs_now();
    err = p->rank == 0 ? write_eval(path, p, e, recon, M, red, np, ce, nce, rs_now() - t0) : RS_OK;
    RS_TRY_GOTO(agree(p, err), done);
    char name[256];
    rs_pipeline_eval_name(name, sizeof name, p, e);
    RS_INFO("eval %s: EV (target) L%d %.4f .. L%d %.4f; recon %.2fs, redundancy %.2fs, CE %.2fs (rank 0: clean "
            "%.0f, splices %.0f block-tokens/s)",
            name, in.es.L[0].layer, rec[0].ev_target, in.es.L[M - 1].layer, rec[M - 1].ev_target, t1 - t0, t2 - t1,
            t3 - t2, secs[0] > 0 ? secs[2] / secs[0] : 0, secs[1] > 0 ? secs[3] / secs[1] : 0);
done:
    inputs_free(&in);
    free(recon);
    free(red);
    free(ce);
    free(rec);
    free(cer);
    return err;
}

rs_err rs_pipeline_eval_task(const rs_pipeline *p, int i, const rs_model *model, rs_tokens *tk) {
    const rs_grid_eval *e = &p->grid.evals[i];
    char path[4096], spath[4096];
    rs_pipeline_eval_path(path, sizeof path, p, e);
    snprintf(spath, sizeof spath, "%s/%s", p->cfg.run_dir, RS_ACTSTORE_FILE);
    rs_actstore st;
    memset(&st, 0, sizeof st);
    rs_err err = RS_OK;
    RS_TRY_GOTO(rs_actstore_open(&st, spath, 0, p->comm), done);
    err = evaluate_one(p, &st, model, tk, e, path);
done:
    rs_actstore_close(&st);
    return err;
}

int rs_pipeline_ablate_needed(const rs_pipeline *p) { return p->cfg.eval.ce && p->cfg.eval.n_ablations > 0; }

void rs_pipeline_ablate_path(char *out, size_t n, const rs_pipeline *p, int set) {
    ablate_path(out, n, p, &p->grid.sets[set]);
}

rs_err rs_pipeline_ablate_task(const rs_pipeline *p, int set, const rs_model *model, rs_tokens *tk) {
    if (!rs_pipeline_ablate_needed(p)) RS_FAIL(RS_ERR_INTERNAL, "ablation task without eval.ce and ablations");
    const rs_grid_set *s = &p->grid.sets[set];
    char spath[4096];
    snprintf(spath, sizeof spath, "%s/%s", p->cfg.run_dir, RS_ACTSTORE_FILE);
    eval_inputs in;
    memset(&in, 0, sizeof in);
    rs_actstore st;
    memset(&st, 0, sizeof st);
    rs_eval_ce_result *cer = calloc((size_t)rs_eval_n_passes(s->n), sizeof *cer);
    rs_err err = cer ? RS_OK : rs_err_set(RS_ERR_NOMEM, __FILE__, __LINE__, __func__, "out of memory");
    RS_TRY_GOTO(agree(p, err), done);
    RS_TRY_GOTO(rs_actstore_open(&st, spath, 0, p->comm), done);
    /* no SAEs: the ablation passes only read the clean streams and the eval means */
    RS_TRY_GOTO(agree(p, inputs_set(&in, p, &st, s, RS_VARIANT_RAW)), done);
    double t0 = rs_now(), secs[4] = {0, 0, 0, 0};
    /* eval_ce writes the ablation file (rank 0) once the passes are summed */
    RS_TRY_GOTO(eval_ce(cer, secs, p, &st, model, tk, &in, s, 1), done);
    RS_INFO("ablate %s: zero/mean ablation baselines at %d layers in %.2fs (rank 0: clean %.0f, ablations %.0f "
            "block-tokens/s)", s->name, s->n, rs_now() - t0, secs[0] > 0 ? secs[2] / secs[0] : 0,
            secs[1] > 0 ? secs[3] / secs[1] : 0);
done:
    rs_actstore_close(&st);
    inputs_free(&in);
    free(cer);
    return err;
}

rs_err rs_pipeline_evaluate(rs_pipeline *p) {
    int todo = 0, unique = 0;
    for (int i = 0; i < p->grid.n_evals; i++) {
        if (!rs_pipeline_eval_first(p, i)) continue;
        char path[4096];
        rs_pipeline_eval_path(path, sizeof path, p, &p->grid.evals[i]);
        unique++;
        todo += !task_done(p, path);
    }
    RS_INFO("evaluate: %d evaluations (%d unique), %d to do", p->grid.n_evals, unique, todo);
    if (!todo) return RS_OK;
    rs_actstore st;
    memset(&st, 0, sizeof st);
    rs_model model;
    memset(&model, 0, sizeof model);
    rs_tokens tk;
    memset(&tk, 0, sizeof tk);
    tk.fd = -1;
    char spath[4096];
    snprintf(spath, sizeof spath, "%s/%s", p->cfg.run_dir, RS_ACTSTORE_FILE);
    rs_err err = RS_OK;
    RS_TRY_GOTO(rs_actstore_open(&st, spath, 0, p->comm), done);
    if (p->cfg.eval.ce) {
        rs_tokens_opts o = {0};
        o.format = rs_tokens_format_parse(rs_format_names[p->cfg.data.format]);
        o.seq_len = (int)p->cfg.data.seq_len;
        o.vocab = p->mc.vocab_size;
        err = rs_tokens_open(&tk, p->cfg.data.tokens, &o);
        if (!err) err = rs_model_load(&model, p->cfg.model.path);
        RS_TRY_GOTO(agree(p, err), done);
    }
    rs_progress prog;
    rs_progress_init(&prog, "evaluate", todo, "evaluations", p->rank == 0);
    prog.interval = 0;
    int n_done = 0;
    for (int i = 0; i < p->grid.n_evals; i++) {
        if (!rs_pipeline_eval_first(p, i)) continue;
        const rs_grid_eval *e = &p->grid.evals[i];
        char path[4096];
        rs_pipeline_eval_path(path, sizeof path, p, e);
        if (task_done(p, path)) continue;
        int mine = p->stop && *p->stop, any = 0;
        MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, p->comm);
        if (any) RS_FAIL_GOTO(done, RS_ERR_INTERRUPTED, "stopped by a signal before the next evaluation");
        RS_TRY_GOTO(evaluate_one(p, &st, &model, &tk, e, path), done);
        rs_progress_update(&prog, ++n_done);
    }
    rs_progress_finish(&prog);
done:
    if (p->cfg.eval.ce) {
        rs_tokens_close(&tk);
        rs_model_free(&model);
    }
    rs_actstore_close(&st);
    return err;
}

/* ---- results file ------------------------------------------------------------------------------------ */

static rs_err read_table(double **out, int *rows, hid_t f, const char *name, int cols, const char *file) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) RS_FAIL(RS_ERR_FORMAT, "%s: no dataset %s", file, name);
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[2] = {0, 0};
    int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Dclose(ds);
    if (nd != 2 || dims[1] != (hsize_t)cols) RS_FAIL(RS_ERR_FORMAT, "%s: %s is not a table of %d columns", file, name, cols);
    *rows = (int)dims[0];
    *out = malloc(sizeof(double) * (dims[0] ? dims[0] : 1) * (size_t)cols);
    RS_CHECK_ALLOC(*out);
    if (dims[0]) RS_TRY(rs_h5_read(f, name, H5T_NATIVE_DOUBLE, *out, (size_t)dims[0] * (size_t)cols, file));
    return RS_OK;
}

rs_err rs_pipeline_results_eval(hid_t out, const rs_pipeline *p) {
    static const char *const names[3] = {"recon", "redundancy", "ce"};
    static const int ncols[3] = {RS_EVAL_RECON_NC, RS_EVAL_RED_NC, RS_EVAL_CE_NC};
    static const char *const cols[3] = {RS_EVAL_RECON_COLS, RS_EVAL_RED_COLS, RS_EVAL_CE_COLS};
    static const char *const defs[3] = {DEF_RECON, DEF_RED, DEF_CE};
    rs_err err = RS_OK;
    double *acc[3] = {NULL, NULL, NULL};
    int nrows[3] = {0, 0, 0}, cap[3] = {0, 0, 0};
    hid_t g = H5Gcreate2(out, "eval", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) RS_FAIL(RS_ERR_IO, "results: cannot create /eval");
    for (int i = 0; i < p->grid.n_evals && !err; i++) {
        if (!rs_pipeline_eval_first(p, i)) continue;
        const rs_grid_eval *e = &p->grid.evals[i];
        char path[4096];
        rs_pipeline_eval_path(path, sizeof path, p, e);
        if (!rs_file_exists(path)) continue;
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) {
            err = rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "%s: cannot open", path);
            break;
        }
        for (int t = 0; t < 3 && !err; t++) {
            double *tab = NULL;
            int n = 0;
            err = read_table(&tab, &n, f, names[t], ncols[t], path);
            if (!err && nrows[t] + n > cap[t]) {
                int nc = 2 * (nrows[t] + n) + 8;
                double *q = realloc(acc[t], sizeof(double) * (size_t)nc * (size_t)(ncols[t] + 4));
                if (!q) err = rs_err_set(RS_ERR_NOMEM, __FILE__, __LINE__, __func__, "out of memory");
                else acc[t] = q, cap[t] = nc;
            }
            for (int r = 0; r < n && !err; r++) {
                double *q = acc[t] + (size_t)(nrows[t]++) * (size_t)(ncols[t] + 4);
                q[0] = e->set;
                q[1] = e->variant;
                q[2] = e->k;
                q[3] = (double)e->seed;
                memcpy(q + 4, tab + (size_t)r * (size_t)ncols[t], sizeof(double) * (size_t)ncols[t]);
            }
            free(tab);
        }
        H5Fclose(f);
    }
    for (int t = 0; t < 3 && !err; t++) {
        char c[512];
        snprintf(c, sizeof c, "set,variant(0=raw;1=resae),k,seed,%s", cols[t]);
        double dummy = 0;
        err = write_table(g, names[t], acc[t] ? acc[t] : &dummy, nrows[t], ncols[t] + 4, c, defs[t]);
    }
    if (!err) {
        char sets[8192];
        size_t o = 0;
        sets[0] = 0;
        for (int i = 0; i < p->grid.n_sets && o < sizeof sets - 200; i++)
            o += (size_t)snprintf(sets + o, sizeof sets - o, i ? ",%s" : "%s", p->grid.sets[i].name);
        err = rs_h5_attr_str(g, "set_names", sets);
        if (!err) err = rs_h5_attr_str(g, "ce_modes", "0=clean,1=single,2=tf,3=so,4=zero,5=mean");
    }
    for (int t = 0; t < 3; t++) free(acc[t]);
    H5Gclose(g);
    return err;
}
