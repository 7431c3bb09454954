/* Task files: create, commit and read every kind (taskfile.h, docs/store.md "Task files"). */
#define _GNU_SOURCE
#include "resae/taskfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/affine.h"
#include "resae/eval.h"
#include "resae/h5util.h"
#include "resae/sae.h"
#include "resae/tasks.h"
#include "resae/util.h"

const char *const rs_eval_ce_row_names[RS_CE_ROW_COUNT] = {"clean", "single", "tf", "so", "zero", "mean"};

void rs_taskfile_ce_modes(char *out, size_t n) {
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < RS_CE_ROW_COUNT && o < n; i++)
        o += (size_t)snprintf(out + o, n - o, i ? ",%d=%s" : "%d=%s", i, rs_eval_ce_row_names[i]);
}

/* The definition strings stored with every table (METHOD.md §5-6 as implemented). */
#define DEF_RECON                                                                                                    \
    "METHOD.md 5-6 on the eval split (activation store rows; position 0 excluded when configured). u: raw h_l; "    \
    "resae u_1 = h_l1, u_m = h_lm - A h_l(m-1) - c. r_hat = SAE(s u)/s. l0 = mean active latents per token; "       \
    "dead_frac = fraction of latents never active on the eval split (dead_frac_train: dead after the last training " \
    "step, over the last dead_tokens training tokens); mse = sum||u - r_hat||^2/(n d) (target space, " \
    "unscaled); ev_target = 1 - sum||u - r_hat||^2 / sum||u - mu_u||^2 (mu_u = eval mean of u = mu_h - A mu_hprev - " \
    "c); ev_orig_onestep = 1 - sum||h - (A h_prev + c + r_hat)||^2 / sum||h - mu_h||^2; ev_orig_chain the same with "  \
    "x_hat_m = A x_hat_(m-1) + c + r_hat_m, x_hat_1 = r_hat_1 (r_hat_m from the clean u_m: open loop); "            \
    "ev_orig_closed the closed loop: x_m = A x_(m-1) + c + SAE_m(s (h_lm - A x_(m-1) - c))/s, each SAE seeing the " \
    "residual of the previous reconstruction; raw: x_hat = r_hat (all four EVs equal)"
#define DEF_CURVE                                                                                                    \
    "training FVU (the loss's FVU of each global batch, before the step's update) averaged over each of "           \
    "train.curve_bins equal spans of steps (step s of S in span floor(s bins / S)); fvu_last20_gain = "              \
    "(F_80 - F_end) / F_80 with F_80 the mean of the span ending at 80% of the steps and F_end of the last span"
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

const char *const rs_affine_only_definition =
    "METHOD.md 6, affine-only control, per distinct layer set of at least two layers: the CE passes of the SAE "
    "splices with every reconstruction replaced by the affine prediction and no SAE. l_1 stays clean. single (layer "
    "l_m, m >= 2): h_{l_m} <- A_{m-1} h_{l_{m-1}} + c_{m-1} on clean inputs. tf: one pass adding eps_m = A_{m-1} "
    "h_{l_{m-1}} + c_{m-1} - h_{l_m} (clean activations) at every l_m, m >= 2, to the running stream, as the SAE "
    "splices do. so: one pass writing x_m = A_{m-1} x_{m-1} + c_{m-1} at l_m, x_{m-1} the value written at l_{m-1} "
    "(x_1 = the clean h_{l_1}). Columns as /eval/ce; recovered_X against the same ablation baselines as the SAE "
    "rows; overinteraction = dce_joint - sum_{m >= 2} dce_single(m). Position 0 untouched when excluded";

const rs_eval_table_desc rs_eval_tables[RS_EVAL_TABLE_COUNT] = {
    {"recon", RS_EVAL_RECON_NC, RS_EVAL_RECON_COLS, DEF_RECON},
    {"redundancy", RS_EVAL_RED_NC, RS_EVAL_RED_COLS, DEF_RED},
    {"ce", RS_EVAL_CE_NC, RS_EVAL_CE_COLS, DEF_CE},
};

/* =====================================================================================================
 * Any task file
 * ===================================================================================================== */

int rs_taskfile_done(const rs_task_ctx *c, const char *path) {
    int done = c->rank == 0 ? rs_file_exists(path) : 0;
    MPI_Bcast(&done, 1, MPI_INT, 0, c->comm);
    return done;
}

static rs_err create_file(hid_t *f, char *tmp, size_t n, const char *path, int in_memory) {
    int len = snprintf(tmp, n, "%s.tmp", path);
    RS_CHECK(len >= 0 && (size_t)len < n, RS_ERR_INVAL, "%s: path too long for a temporary name", path);
    /* the 1.8 format's object headers and superblock carry checksums; 1.10's readers (h5py) read it */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    RS_CHECK(fapl >= 0 && H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V110) >= 0 &&
                 (!in_memory || H5Pset_fapl_core(fapl, (size_t)1 << 20, 0) >= 0),
             RS_ERR_IO, "%s: cannot set the HDF5 file format", tmp);
    *f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    RS_CHECK(*f >= 0, RS_ERR_IO, "%s: cannot create", tmp);
    return RS_OK;
}

rs_err rs_taskfile_create(hid_t *f, char *tmp, size_t n, const char *path) { return create_file(f, tmp, n, path, 1); }

rs_err rs_taskfile_create_on_disk(hid_t *f, char *tmp, size_t n, const char *path) {
    return create_file(f, tmp, n, path, 0);
}

/* Bob Jenkins' lookup3 hash (hashlittle, initial value 0), the checksum of HDF5's metadata. */
static uint32_t rot32(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static uint32_t word_at(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t lookup3(const unsigned char *k, size_t n) {
    uint32_t a, b, c;
    a = b = c = 0xdeadbeefu + (uint32_t)n;
    for (; n > 12; n -= 12, k += 12) {
        a += word_at(k), b += word_at(k + 4), c += word_at(k + 8);
        a -= c, a ^= rot32(c, 4), c += b;
        b -= a, b ^= rot32(a, 6), a += c;
        c -= b, c ^= rot32(b, 8), b += a;
        a -= c, a ^= rot32(c, 16), c += b;
        b -= a, b ^= rot32(a, 19), a += c;
        c -= b, c ^= rot32(b, 4), b += a;
    }
    if (!n) return c;
    unsigned char tail[12] = {0};
    memcpy(tail, k, n);
    a += word_at(tail), b += word_at(tail + 4), c += word_at(tail + 8);
    c ^= b, c -= rot32(b, 14);
    a ^= c, a -= rot32(c, 11);
    b ^= a, b -= rot32(a, 25);
    c ^= b, c -= rot32(b, 16);
    a ^= c, a -= rot32(c, 4);
    b ^= a, b -= rot32(a, 14);
    c ^= b, c -= rot32(b, 24);
    return c;
}

/* HDF5 1.10.8's H5Fget_file_image returns a version 2 or 3 superblock whose checksum it did not
 * recompute after patching the image (the file then fails to open: "incorrect metadata checksum").
 * Recompute it: signature, version, the two size bytes, the flags, four addresses, then the checksum. */
static void fix_superblock_checksum(unsigned char *img, size_t size) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (size < 13 || memcmp(img, sig, 8) || (img[8] != 2 && img[8] != 3)) return;
    size_t at = 12 + 4 * (size_t)img[9];
    if (at + 4 > size) return;
    uint32_t cs = lookup3(img, at);
    for (int i = 0; i < 4; i++) img[at + (size_t)i] = (unsigned char)(cs >> (8 * i));
}

/* An in-memory task file goes to disk as one image written by plain write(2): a full disk is then an
 * ordinary write error, never a failed H5Fclose, which leaves HDF5 1.10 a half-closed file that it
 * crashes on at exit. */
static rs_err write_image(hid_t f, const char *tmp) {
    if (H5Fflush(f, H5F_SCOPE_LOCAL) < 0) {
        H5Fclose(f);
        RS_FAIL(RS_ERR_IO, "%s: cannot flush the file in memory", tmp);
    }
    ssize_t size = H5Fget_file_image(f, NULL, 0);
    void *img = size > 0 ? malloc((size_t)size) : NULL;
    if (!img || H5Fget_file_image(f, img, (size_t)size) != size) {
        free(img);
        H5Fclose(f);
        RS_FAIL(RS_ERR_NOMEM, "%s: cannot take the file's image (%lld bytes)", tmp, (long long)size);
    }
    H5Fclose(f);
    fix_superblock_checksum(img, (size_t)size);
    rs_err err = rs_file_write_all(tmp, img, (size_t)size);
    free(img);
    return err;
}

typedef struct verify_ctx {
    double budget; /* dataset bytes still to read */
    char *why;
    size_t n;
} verify_ctx;

static herr_t verify_object(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    verify_ctx *v = data;
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT); /* loads (and checks) the object header */
    if (o < 0) {
        snprintf(v->why, v->n, "the header of /%s does not verify", name);
        return 1;
    }
    int bad = 0;
    if (H5Iget_type(o) == H5I_DATASET) {
        hid_t type = H5Dget_type(o), sp = H5Dget_space(o);
        hssize_t npts = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
        size_t esize = type >= 0 ? H5Tget_size(type) : 0;
        int vlen = type >= 0 && (H5Tis_variable_str(type) > 0 || H5Tget_class(type) == H5T_VLEN);
        double bytes = (double)npts * (double)esize;
        if (npts < 0 || !esize) {
            snprintf(v->why, v->n, "the dataspace or type of /%s does not read", name);
            bad = 1;
        } else if (npts > 0 && !vlen && bytes <= v->budget) {
            v->budget -= bytes;
            void *buf = malloc((size_t)bytes);
            if (!buf) {
                snprintf(v->why, v->n, "out of memory reading /%s", name);
                bad = 1;
            } else if (H5Dread(o, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
                snprintf(v->why, v->n, "the data of /%s does not verify against its checksum", name);
                bad = 1;
            }
            free(buf);
        }
        if (type >= 0) H5Tclose(type);
        if (sp >= 0) H5Sclose(sp);
    }
    H5Oclose(o);
    return bad;
}

int rs_taskfile_intact(const char *path, char *why, size_t n) {
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); }
    H5E_END_TRY
    if (f < 0) {
        snprintf(why, n, "HDF5 cannot open it (a truncated or overwritten file)");
        return 0;
    }
    verify_ctx v = {RS_TASKFILE_VERIFY_BYTES, why, n};
    herr_t r;
    H5E_BEGIN_TRY { r = H5Lvisit(f, H5_INDEX_NAME, H5_ITER_NATIVE, verify_object, &v); }
    H5E_END_TRY
    if (r < 0) snprintf(why, n, "its groups do not read");
    H5E_BEGIN_TRY { H5Fclose(f); }
    H5E_END_TRY
    return r == 0;
}

rs_err rs_taskfile_commit(hid_t f, const char *tmp, const char *path) {
    hid_t fapl = H5Fget_access_plist(f);
    int in_memory = fapl >= 0 && H5Pget_driver(fapl) == H5FD_CORE;
    if (fapl >= 0) H5Pclose(fapl);
    if (in_memory) RS_TRY(write_image(f, tmp));
    else RS_CHECK(H5Fclose(f) >= 0, RS_ERR_IO, "%s: cannot close", tmp);
    return rs_file_commit(tmp, path);
}

double rs_taskfile_seconds(const char *path) {
    double s = 0;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return 0;
    if (rs_h5_attr_get_f64(&s, f, "seconds", path)) s = 0;
    H5Fclose(f);
    rs_err_clear();
    return s;
}

rs_err rs_taskfile_read_table(double **out, int *rows, hid_t f, const char *name, int cols, const char *file) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    RS_CHECK(ds >= 0, RS_ERR_FORMAT, "%s: no dataset %s", file, name);
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[2] = {0, 0};
    int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Dclose(ds);
    RS_CHECK(nd == 2 && dims[1] == (hsize_t)cols, RS_ERR_FORMAT, "%s: %s is not a table of %d columns", file, name, cols);
    *rows = (int)dims[0];
    *out = malloc(sizeof(double) * (dims[0] ? dims[0] : 1) * (size_t)cols);
    RS_CHECK_ALLOC(*out);
    if (dims[0]) RS_TRY(rs_h5_read(f, name, H5T_NATIVE_DOUBLE, *out, (size_t)dims[0] * (size_t)cols, file));
    return RS_OK;
}

rs_err rs_taskfile_write_table(hid_t f, const char *name, const double *t, int rows, int cols, const char *columns,
                               const char *definition) {
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    RS_TRY(rs_h5_write(f, name, H5T_NATIVE_DOUBLE, 2, dims, t));
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    RS_CHECK(ds >= 0, RS_ERR_IO, "cannot reopen dataset %s", name);
    rs_err err = rs_h5_attr_str(ds, "columns", columns);
    if (!err) err = rs_h5_attr_str(ds, "definition", definition);
    H5Dclose(ds);
    return err;
}

/* =====================================================================================================
 * Affine fits
 * ===================================================================================================== */

static rs_err affine_attrs(hid_t f, const rs_affine_map *m, int a, int b, uint64_t hash) {
    RS_TRY(rs_h5_attr_str(f, "task", "affine"));
    RS_TRY(rs_h5_attr_i64(f, "layer_a", a));
    RS_TRY(rs_h5_attr_i64(f, "layer_b", b));
    RS_TRY(rs_h5_attr_i64(f, "hash", (int64_t)hash));
    RS_TRY(rs_h5_attr_f64(f, "lambda_rel", m->lambda_rel));
    RS_TRY(rs_h5_attr_f64(f, "lambda_used", m->lambda_used));
    RS_TRY(rs_h5_attr_i64(f, "retries", m->retries));
    RS_TRY(rs_h5_attr_f64(f, "trace_cxx", m->trace_cxx));
    RS_TRY(rs_h5_attr_f64(f, "solve_resid", m->solve_resid));
    RS_TRY(rs_h5_attr_i64(f, "n_tokens_calib", m->n_tokens_calib));
    RS_TRY(rs_h5_attr_f64(f, "r2", m->r2));
    RS_TRY(rs_h5_attr_i64(f, "n_tokens_eval", m->n_tokens_eval));
    RS_TRY(rs_h5_attr_f64(f, "s", m->s));
    RS_TRY(rs_h5_attr_i64(f, "grid_rows", m->nprow));
    RS_TRY(rs_h5_attr_i64(f, "grid_cols", m->npcol));
    RS_TRY(rs_h5_attr_i64(f, "block", m->block));
    RS_TRY(rs_h5_attr_f64(f, "seconds", m->t_total));
    return rs_h5_attr_str(f, "definition", "METHOD.md 2: centered ridge normal equations, lambda = "
                                           "lambda_rel*trace(C_xx)/d; R^2 on eval; s = sqrt(d/E_calib||y-Ax-c||^2)");
}

rs_err rs_taskfile_write_affine(const char *path, const rs_affine_map *m, int a, int b, uint64_t hash) {
    char tmp[4200];
    hid_t f;
    RS_TRY(rs_taskfile_create(&f, tmp, sizeof tmp, path));
    rs_err err = RS_OK;
    hsize_t dA[2] = {(hsize_t)m->dy, (hsize_t)m->dx}, dy = (hsize_t)m->dy, dx = (hsize_t)m->dx;
    RS_TRY_GOTO(rs_h5_write(f, "A", H5T_NATIVE_DOUBLE, 2, dA, m->A), fail);
    RS_TRY_GOTO(rs_h5_write(f, "c", H5T_NATIVE_DOUBLE, 1, &dy, m->c), fail);
    RS_TRY_GOTO(rs_h5_write(f, "mu_x", H5T_NATIVE_DOUBLE, 1, &dx, m->mu_x), fail);
    RS_TRY_GOTO(rs_h5_write(f, "mu_y", H5T_NATIVE_DOUBLE, 1, &dy, m->mu_y), fail);
    RS_TRY_GOTO(affine_attrs(f, m, a, b, hash), fail);
    return rs_taskfile_commit(f, tmp, path);
fail:
    H5Fclose(f);
    return err;
}

rs_err rs_taskfile_read_affine(rs_affine_map *m, const char *path, int d) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    RS_CHECK(f >= 0, RS_ERR_IO, "%s: cannot open affine result", path);
    rs_err err = RS_OK;
    size_t nd = (size_t)d;
    double *buf = malloc(sizeof(double) * (nd * nd + 2 * nd));
    if (!buf) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory reading %s", path);
    RS_TRY_GOTO(rs_h5_read(f, "A", H5T_NATIVE_DOUBLE, buf, nd * nd, path), done);
    RS_TRY_GOTO(rs_h5_read(f, "mu_x", H5T_NATIVE_DOUBLE, buf + nd * nd, nd, path), done);
    RS_TRY_GOTO(rs_h5_read(f, "mu_y", H5T_NATIVE_DOUBLE, buf + nd * nd + nd, nd, path), done);
    RS_TRY_GOTO(rs_affine_map_set(m, d, d, buf, buf + nd * nd, buf + nd * nd + nd), done);
    err = rs_h5_attr_get_f64(&m->s, f, "s", path);
    if (!err) err = rs_h5_attr_get_f64(&m->r2, f, "r2", path);
    if (err) rs_affine_map_free(m); /* the map is the caller's only when the whole file read */
done:
    free(buf);
    H5Fclose(f);
    return err;
}

rs_err rs_taskfile_load_affine(rs_affine_map *m, const rs_run *run, int a, int b) {
    char path[4096];
    RS_TRY(rs_tasks_affine_path(path, sizeof path, run, a, b));
    RS_CHECK(rs_file_exists(path), RS_ERR_INVAL, "affine fit %d->%d is not done yet (%s missing)", a, b, path);
    return rs_taskfile_read_affine(m, path, run->mc.d_model);
}

/* =====================================================================================================
 * SAEs
 * ===================================================================================================== */

static rs_err sae_attrs(hid_t f, const rs_sae *sae, const rs_grid_sae *g, const rs_sae_metrics *mt,
                        const rs_sae_config *sc, double scale) {
    RS_TRY(rs_h5_attr_str(f, "task", "sae"));
    RS_TRY(rs_h5_attr_str(f, "kind", rs_variant_names[g->kind]));
    RS_TRY(rs_h5_attr_i64(f, "layer", g->layer));
    RS_TRY(rs_h5_attr_i64(f, "pred", g->pred));
    RS_TRY(rs_h5_attr_i64(f, "k", g->k));
    RS_TRY(rs_h5_attr_i64(f, "seed", g->seed));
    RS_TRY(rs_h5_attr_i64(f, "hash", (int64_t)g->hash));
    RS_TRY(rs_h5_attr_i64(f, "n_latents", sae->n_latents));
    RS_TRY(rs_h5_attr_f64(f, "scale", scale));
    RS_TRY(rs_h5_attr_f64(f, "fvu", mt->fvu));
    RS_TRY(rs_h5_attr_f64(f, "auxk", mt->auxk));
    RS_TRY(rs_h5_attr_f64(f, "l0", mt->l0));
    RS_TRY(rs_h5_attr_f64(f, "dead_frac", mt->dead_frac));
    RS_TRY(rs_h5_attr_f64(f, "last_fvu", mt->last_fvu));
    RS_TRY(rs_h5_attr_i64(f, "tail_steps", mt->tail_steps));
    RS_TRY(rs_h5_attr_i64(f, "tokens", mt->tokens));
    RS_TRY(rs_h5_attr_i64(f, "steps", mt->steps));
    RS_TRY(rs_h5_attr_f64(f, "seconds", mt->seconds));
    RS_TRY(rs_h5_attr_f64(f, "tokens_per_s", mt->tokens_per_s));
    RS_TRY(rs_h5_attr_f64(f, "lr", rs_sae_config_lr(sc)));
    RS_TRY(rs_h5_attr_i64(f, "batch", sc->batch));
    return rs_h5_attr_str(f, "definition", "METHOD.md 3-4: TopK SAE on s*u (raw: u = h_l; resae: u = h_l - A h_pred "
                                           "- c); metrics are training-time means over the last tail_steps steps");
}

/* The training curve (train.curve_bins > 0): fvu_curve (bins) and fvu_last20_gain. */
static rs_err sae_curve(hid_t f, const rs_sae_metrics *mt) {
    hsize_t n = (hsize_t)mt->curve_bins;
    RS_TRY(rs_h5_write(f, "fvu_curve", H5T_NATIVE_DOUBLE, 1, &n, mt->fvu_curve));
    RS_TRY(rs_h5_attr_f64(f, "fvu_last20_gain", mt->fvu_last20_gain));
    return rs_h5_attr_str(f, "fvu_curve_definition", DEF_CURVE);
}

rs_err rs_taskfile_write_sae(const char *path, const rs_sae *sae, const rs_grid_sae *g, const rs_sae_metrics *mt,
                             const rs_sae_config *sc, double scale) {
    char tmp[4200];
    hid_t f;
    RS_TRY(rs_taskfile_create(&f, tmp, sizeof tmp, path));
    rs_err err = RS_OK;
    hsize_t dw[2] = {(hsize_t)sae->n_latents, (hsize_t)sae->d}, dn = (hsize_t)sae->n_latents, dd = (hsize_t)sae->d;
    RS_TRY_GOTO(rs_h5_write(f, "W_enc", H5T_NATIVE_FLOAT, 2, dw, sae->p.W_enc), fail);
    RS_TRY_GOTO(rs_h5_write(f, "b_enc", H5T_NATIVE_FLOAT, 1, &dn, sae->p.b_enc), fail);
    RS_TRY_GOTO(rs_h5_write(f, "W_dec", H5T_NATIVE_FLOAT, 2, dw, sae->p.W_dec), fail);
    RS_TRY_GOTO(rs_h5_write(f, "b_dec", H5T_NATIVE_FLOAT, 1, &dd, sae->p.b_dec), fail);
    RS_TRY_GOTO(sae_attrs(f, sae, g, mt, sc, scale), fail);
    if (mt->curve_bins > 0) RS_TRY_GOTO(sae_curve(f, mt), fail);
    return rs_taskfile_commit(f, tmp, path);
fail:
    H5Fclose(f);
    return err;
}

rs_err rs_taskfile_load_sae(rs_sae *sae, double *scale, double *dead_frac, const rs_run *run, const rs_grid_sae *g) {
    char path[4096];
    RS_TRY(rs_tasks_sae_path(path, sizeof path, run, g));
    RS_CHECK(rs_file_exists(path), RS_ERR_INVAL, "SAE %s is not trained yet", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    RS_CHECK(f >= 0, RS_ERR_IO, "%s: cannot open", path);
    rs_err err = RS_OK;
    int64_t n = 0;
    int d = run->mc.d_model;
    RS_TRY_GOTO(rs_h5_attr_get_i64(&n, f, "n_latents", path), done);
    RS_TRY_GOTO(rs_h5_attr_get_f64(scale, f, "scale", path), done);
    if (dead_frac) RS_TRY_GOTO(rs_h5_attr_get_f64(dead_frac, f, "dead_frac", path), done);
    RS_TRY_GOTO(rs_sae_init(sae, d, (int)n, g->k), done);
    size_t nd = (size_t)n * (size_t)d;
    RS_TRY_GOTO(rs_h5_read(f, "W_enc", H5T_NATIVE_FLOAT, sae->p.W_enc, nd, path), done);
    RS_TRY_GOTO(rs_h5_read(f, "b_enc", H5T_NATIVE_FLOAT, sae->p.b_enc, (size_t)n, path), done);
    RS_TRY_GOTO(rs_h5_read(f, "W_dec", H5T_NATIVE_FLOAT, sae->p.W_dec, nd, path), done);
    RS_TRY_GOTO(rs_h5_read(f, "b_dec", H5T_NATIVE_FLOAT, sae->p.b_dec, (size_t)d, path), done);
done:
    H5Fclose(f);
    if (err) rs_sae_free(sae);
    return err;
}

/* =====================================================================================================
 * Evaluations and ablation baselines
 * ===================================================================================================== */

static rs_err eval_attrs(hid_t f, const rs_run *run, const rs_grid_eval *e, double seconds) {
    const rs_grid_set *s = &run->grid.sets[e->set];
    char layers[2048];
    size_t o = 0;
    layers[0] = 0;
    for (int m = 0; m < s->n && o < sizeof layers - 16; m++)
        o += (size_t)snprintf(layers + o, sizeof layers - o, m ? ",%d" : "%d", s->layers[m]);
    RS_TRY(rs_h5_attr_str(f, "task", "eval"));
    RS_TRY(rs_h5_attr_str(f, "set", s->name));
    RS_TRY(rs_h5_attr_str(f, "layers", layers));
    RS_TRY(rs_h5_attr_str(f, "variant", rs_variant_names[e->variant]));
    RS_TRY(rs_h5_attr_i64(f, "k", e->k));
    RS_TRY(rs_h5_attr_i64(f, "seed", e->seed));
    RS_TRY(rs_h5_attr_i64(f, "hash", (int64_t)e->hash));
    RS_TRY(rs_h5_attr_f64(f, "seconds", seconds));
    char modes[128];
    rs_taskfile_ce_modes(modes, sizeof modes);
    return rs_h5_attr_str(f, "ce_modes", modes);
}

rs_err rs_taskfile_write_eval(const char *path, const rs_run *run, const rs_grid_eval *e, const double *recon, int M,
                              const double *red, int npairs, const double *ce, int nce, double seconds) {
    char tmp[4200];
    hid_t f;
    RS_TRY(rs_taskfile_create(&f, tmp, sizeof tmp, path));
    rs_err err = RS_OK;
    const double *data[RS_EVAL_TABLE_COUNT] = {recon, red, ce};
    const int rows[RS_EVAL_TABLE_COUNT] = {M, npairs, nce};
    for (int t = 0; t < RS_EVAL_TABLE_COUNT; t++) {
        const rs_eval_table_desc *d = &rs_eval_tables[t];
        RS_TRY_GOTO(rs_taskfile_write_table(f, d->name, data[t], rows[t], d->ncols, d->columns, d->definition), fail);
    }
    RS_TRY_GOTO(eval_attrs(f, run, e, seconds), fail);
    return rs_taskfile_commit(f, tmp, path);
fail:
    H5Fclose(f);
    return err;
}

rs_err rs_taskfile_read_ablate(rs_eval_ce_result *res, int M, const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    RS_CHECK(f >= 0, RS_ERR_IO, "%s: cannot open", path);
    double *t = malloc(sizeof(double) * 4 * 2 * (size_t)M);
    rs_err err = t ? rs_h5_read(f, "ablation", H5T_NATIVE_DOUBLE, t, 8 * (size_t)M, path) : RS_ERR(RS_ERR_NOMEM, "out of memory");
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

rs_err rs_taskfile_write_ablate(const char *path, const rs_eval_ce_result *res, int M, const double *aff, int n_aff) {
    double *t = malloc(sizeof(double) * 8 * (size_t)M);
    RS_CHECK_ALLOC(t);
    for (int i = 0; i < 2 * M; i++) {
        t[4 * i] = res[i].ce;
        t[4 * i + 1] = res[i].kl;
        t[4 * i + 2] = (double)res[i].n;
        t[4 * i + 3] = res[i].ran;
    }
    char tmp[4200];
    hid_t f;
    rs_err err = rs_taskfile_create(&f, tmp, sizeof tmp, path);
    if (err) {
        free(t);
        return err;
    }
    hsize_t dims[2] = {2 * (hsize_t)M, 4};
    err = rs_h5_write(f, "ablation", H5T_NATIVE_DOUBLE, 2, dims, t);
    if (!err) err = rs_h5_attr_str(f, "columns", "ce,kl,n_tokens,ran; rows: zero at each layer, then mean");
    if (!err && n_aff > 0) {
        hsize_t ad[2] = {(hsize_t)n_aff, RS_EVAL_CE_NC};
        err = rs_h5_write(f, "affine_only", H5T_NATIVE_DOUBLE, 2, ad, aff);
        if (!err) err = rs_h5_attr_str(f, "affine_only_columns", RS_EVAL_CE_COLS);
    }
    free(t);
    if (err) {
        H5Fclose(f);
        return err;
    }
    return rs_taskfile_commit(f, tmp, path);
}

rs_err rs_taskfile_open_store(rs_actstore *st, const rs_task_ctx *c) {
    char spath[4096];
    memset(st, 0, sizeof *st);
    RS_TRY(rs_tasks_run_file(spath, sizeof spath, c->run, RS_ACTSTORE_FILE));
    return rs_actstore_open(st, spath, 0, c->comm);
}
