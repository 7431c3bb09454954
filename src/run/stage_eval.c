/* The evaluation stage (stage_eval.h, docs/store.md "Evaluation"). */
#define _GNU_SOURCE
#include "resae/stage_eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/actstore.h"
#include "resae/affine.h"
#include "resae/eval.h"
#include "resae/log.h"
#include "resae/model.h"
#include "resae/mpi_util.h"
#include "resae/sae.h"
#include "resae/splits.h"
#include "resae/taskfile.h"
#include "resae/tasks.h"
#include "resae/tokens.h"
#include "resae/util.h"

/* =====================================================================================================
 * Inputs
 * ===================================================================================================== */

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
static rs_err inputs_set(eval_inputs *in, const rs_run *run, const rs_actstore *st, const rs_grid_set *s, int variant) {
    int d = run->mc.d_model;
    RS_CHECK(s->n <= RS_EVAL_MAX_LAYERS, RS_ERR_CONFIG, "set %s has %d layers; evaluation supports at most %d", s->name,
             s->n, RS_EVAL_MAX_LAYERS);
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

static rs_err inputs_load(eval_inputs *in, const rs_run *run, const rs_actstore *st, const rs_grid_eval *e) {
    const rs_grid_set *s = &run->grid.sets[e->set];
    RS_TRY(inputs_set(in, run, st, s, e->variant));
    for (int m = 0; m < s->n; m++) {
        const rs_grid_sae *g = &run->grid.saes[run->grid.eval_sae[e->sae_off + m]];
        rs_eval_layer *L = &in->es.L[m];
        RS_TRY(rs_taskfile_load_sae(&in->sae[m], &L->scale, &in->dead_train[m], run, g));
        L->sae = &in->sae[m];
        if (g->kind == RS_VARIANT_RESAE) {
            RS_CHECK(g->pred == s->layers[m - 1], RS_ERR_INTERNAL, "resae SAE at layer %d predicts from %d, not %d",
                     g->layer, g->pred, s->layers[m - 1]);
            RS_TRY(rs_taskfile_load_affine(&in->map[m], run, g->pred, g->layer));
            L->map = &in->map[m];
        }
    }
    return RS_OK;
}

/* =====================================================================================================
 * Reconstruction and redundancy
 * ===================================================================================================== */

static rs_err eval_recon(rs_eval_recon *out, const rs_task_ctx *c, const rs_actstore *st, const eval_inputs *in) {
    int M = in->es.M, d = in->es.d;
    int64_t lo, hi;
    rs_range_share(&lo, &hi, rs_actstore_n_rows(st, RS_SPLIT_EVAL), c->rank, c->size);
    int64_t C = c->run->cfg.store.chunk_rows;
    rs_eval_recon_acc acc;
    float *buf = malloc(sizeof(float) * (size_t)M * (size_t)C * (size_t)d);
    const float *h[RS_EVAL_MAX_LAYERS];
    rs_err err = buf ? rs_eval_recon_init(&acc, &in->es, in->mu_h, C) : RS_ERR(RS_ERR_NOMEM, "out of memory for eval rows");
    if (err) {
        free(buf);
        return rs_agree(err, c->comm, "setting up the reconstruction");
    }
    for (int m = 0; m < M; m++) h[m] = buf + (size_t)m * (size_t)C * (size_t)d;
    for (int64_t r = lo; r < hi && !err; r += C) {
        int64_t n = hi - r < C ? hi - r : C;
        for (int m = 0; m < M && !err; m++)
            err = rs_actstore_read_rows(st, (float *)h[m], RS_SPLIT_EVAL, in->es.L[m].layer, r, n);
        if (!err) err = rs_eval_recon_add(&acc, h, n);
    }
    err = rs_agree(err, c->comm, "the reconstruction");
    if (!err) err = rs_eval_recon_finish(out, &acc, c->comm);
    rs_eval_recon_free(&acc);
    free(buf);
    return err;
}

/* The recon table (M rows of RS_EVAL_RECON_NC). */
static void recon_rows(double *rows, const rs_run *run, const rs_grid_eval *e, const eval_inputs *in,
                       const rs_eval_recon *rec) {
    for (int m = 0; m < in->es.M; m++) {
        double *q = rows + (size_t)m * RS_EVAL_RECON_NC;
        const rs_grid_sae *g = &run->grid.saes[run->grid.eval_sae[e->sae_off + m]];
        q[0] = in->es.L[m].layer;
        q[1] = g->pred;
        q[2] = in->es.L[m].scale;
        q[3] = rec[m].l0;
        q[4] = rec[m].dead_frac;
        q[5] = rec[m].mse;
        q[6] = rec[m].ev_target;
        q[7] = rec[m].ev_onestep;
        q[8] = rec[m].ev_chain;
        q[9] = (double)rec[m].n_tokens;
        q[10] = in->dead_train[m];
        q[11] = rec[m].ev_closed;
    }
}

/* The redundancy table: one row per layer pair a < b (*np rows of RS_EVAL_RED_NC). Collective. */
static rs_err redundancy_rows(double *rows, int *np, const rs_task_ctx *c, const eval_inputs *in) {
    int M = in->es.M, d = in->es.d;
    *np = 0;
    for (int b = 1; b < M; b++)
        for (int a = 0; a < b; a++) {
            double *q = rows + (size_t)*np * RS_EVAL_RED_NC;
            RS_TRY(rs_eval_redundancy(&q[3], &q[4], in->sae[b].p.W_dec, in->sae[b].n_latents, in->sae[a].p.W_dec,
                                      in->sae[a].n_latents, d, (int)c->run->cfg.eval.redundancy_block, c->comm));
            q[0] = in->es.L[a].layer;
            q[1] = in->es.L[b].layer;
            q[2] = q[1] - q[0];
            q[5] = in->sae[b].n_latents;
            (*np)++;
        }
    return RS_OK;
}

/* =====================================================================================================
 * CE splices
 * ===================================================================================================== */

/* The passes the config asks for: the one mapping of eval.ce_modes and eval.ablations to the
 * evaluator's passes (ablations_only: just the baselines). */
static void ce_opts(rs_eval_ce_opts *o, const rs_config *c, const eval_inputs *in, int ablations_only) {
    memset(o, 0, sizeof *o);
    for (int i = 0; i < c->eval.n_ce_modes && !ablations_only; i++) {
        if (c->eval.ce_modes[i] == RS_CE_SINGLE) o->single = 1;
        if (c->eval.ce_modes[i] == RS_CE_TF) o->tf = 1;
        if (c->eval.ce_modes[i] == RS_CE_SO) o->so = 1;
    }
    for (int i = 0; i < c->eval.n_ablations; i++) {
        if (c->eval.ablations[i] == RS_ABLATE_ZERO) o->zero = 1;
        if (c->eval.ablations[i] == RS_ABLATE_MEAN) o->mean = 1;
    }
    o->skip_pos0 = c->data.exclude_first_position;
    o->mu = in->mu_f;
}

static int ce_batch(const rs_run *run, int T) {
    return rs_eval_ce_batch_seqs(run->cfg.eval.batch_sequences, T, run->mc.vocab_size);
}

/* The passes over this rank's share of the eval sequences, summed over c->comm into res. */
static rs_err ce_passes(rs_eval_ce_result *res, rs_eval_ce *ce, const rs_task_ctx *c, const rs_actstore *st,
                        const rs_model *model, rs_tokens *tk, const eval_inputs *in, const rs_eval_ce_opts *o) {
    int64_t n_seq = st->n_seq[RS_SPLIT_EVAL], lo, hi;
    rs_range_share(&lo, &hi, n_seq, c->rank, c->size);
    int T = tk->seq_len, B = ce_batch(c->run, T);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n_seq > 0 ? n_seq : 1));
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)B * (size_t)T);
    rs_err err = ids && tok ? RS_OK : RS_ERR(RS_ERR_NOMEM, "out of memory for tokens");
    if (!err) err = rs_actstore_read_seq_ids(st, ids, RS_SPLIT_EVAL);
    if (!err) err = rs_eval_ce_init(ce, model, &in->es, o, B, T);
    for (int64_t s0 = lo; s0 < hi && !err; s0 += B) {
        int nb = (int)(hi - s0 < B ? hi - s0 : B);
        for (int s = 0; s < nb && !err;) {
            int e = s + 1;
            while (e < nb && ids[s0 + e] == ids[s0 + e - 1] + 1) e++;
            err = rs_tokens_read(tok + (size_t)s * (size_t)T, tk, ids[s0 + s], e - s);
            s = e;
        }
        if (!err) err = rs_eval_ce_batch(ce, tok, nb);
    }
    free(ids);
    free(tok);
    err = rs_agree(err, c->comm, "the CE passes");
    if (!err) err = rs_eval_ce_finish(res, ce, c->comm);
    return err;
}

/* The CE splices of a set; the ablation baselines come from the set's ablation task file when it
 * exists, else they are computed here (the ablation task writes that file). secs: rank 0's seconds and
 * block-tokens (clean, splice). */
static rs_err eval_ce(rs_eval_ce_result *res, double secs[4], const rs_task_ctx *c, const rs_actstore *st,
                      const rs_model *model, rs_tokens *tk, const eval_inputs *in, int set) {
    rs_eval_ce_opts o;
    ce_opts(&o, &c->run->cfg, in, 0);
    int M = in->es.M;
    char apath[4096];
    RS_TRY(rs_tasks_ablate_path(apath, sizeof apath, c->run, set));
    int have_base = (o.zero || o.mean) && rs_taskfile_done(c, apath);
    rs_eval_ce_result base[2 * RS_EVAL_MAX_LAYERS];
    if (have_base) {
        RS_AGREE(rs_taskfile_read_ablate(base, M, apath), c->comm, "reading the ablation baselines");
        o.zero = o.mean = 0;
    }
    rs_eval_ce ce;
    memset(&ce, 0, sizeof ce);
    rs_err err = ce_passes(res, &ce, c, st, model, tk, in, &o);
    if (!err && have_base) memcpy(&res[RS_PASS_SINGLE + M], base, sizeof(rs_eval_ce_result) * 2 * (size_t)M);
    secs[0] = ce.seconds_clean;
    secs[1] = ce.seconds_splice;
    secs[2] = (double)ce.block_tokens_clean;
    secs[3] = (double)ce.block_tokens_splice;
    rs_eval_ce_free(&ce);
    return err;
}
/* CE rows from the pass results (see DEF_CE); single-layer passes from layer index `first` (the
 * affine-only control leaves l_1 clean, so its sum of single-layer dCE starts at l_2); baselines: also
 * the rows of the ablation passes themselves. */
static int ce_rows(double *rows, const rs_eval_ce_result *r, const eval_inputs *in, int first, int baselines) {
    int M = in->es.M, n = 0;
    double clean = r[RS_PASS_CLEAN].ce;
    int last = M - 1;
    const rs_eval_ce_result *zj = &r[RS_PASS_SINGLE + M + last], *mj = &r[RS_PASS_SINGLE + 2 * M + last];
    double sum_single = 0;
    int have_single = 1;
    for (int m = first; m < M; m++) {
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
    for (int kind = 0; kind < 2 && baselines; kind++) {
        const rs_eval_ce_result *base = &r[RS_PASS_SINGLE + (kind + 1) * M];
        if (!base[0].ran) continue;
        int mode = kind ? RS_CE_ROW_MEAN : RS_CE_ROW_ZERO;
        for (int m = 0; m < M; m++) ROW(mode, in->es.L[m].layer, &base[m], none, none, NAN);
        ROW(mode, -1, &base[last], none, none, NAN);
    }
#undef ROW
    return n;
}

/* =====================================================================================================
 * The tasks
 * ===================================================================================================== */

/* The tables of one evaluation (rows as written to its task file). */
typedef struct eval_tables {
    double *recon;          // (M, RS_EVAL_RECON_NC)
    double *red;            // (M (M - 1) / 2, RS_EVAL_RED_NC)
    double *ce;             // (3 + 3M + 4, RS_EVAL_CE_NC)
    rs_eval_recon *rec;     // (M)
    rs_eval_ce_result *cer; // (rs_eval_n_passes(M))
    int np, nce;
} eval_tables;

static rs_err tables_alloc(eval_tables *t, int M) {
    int npairs = M * (M - 1) / 2, nce_max = 3 + 3 * M + 4;
    memset(t, 0, sizeof *t);
    t->recon = calloc((size_t)M * RS_EVAL_RECON_NC, sizeof(double));
    t->red = calloc((size_t)(npairs ? npairs : 1) * RS_EVAL_RED_NC, sizeof(double));
    t->ce = calloc((size_t)nce_max * RS_EVAL_CE_NC, sizeof(double));
    t->rec = calloc((size_t)M, sizeof *t->rec);
    t->cer = calloc((size_t)rs_eval_n_passes(M), sizeof *t->cer);
    RS_CHECK(t->recon && t->red && t->ce && t->rec && t->cer, RS_ERR_NOMEM, "out of memory");
    return RS_OK;
}

static void tables_free(eval_tables *t) {
    free(t->recon);
    free(t->red);
    free(t->ce);
    free(t->rec);
    free(t->cer);
}

static rs_err evaluate(const rs_task_ctx *c, const rs_actstore *st, const rs_model *model, rs_tokens *tk,
                       const rs_grid_eval *e, const char *path) {
    const rs_run *run = c->run;
    eval_inputs in;
    memset(&in, 0, sizeof in);
    int M = run->grid.sets[e->set].n;
    eval_tables t;
    rs_err err = tables_alloc(&t, M);
    if (!err) err = inputs_load(&in, run, st, e);
    RS_TRY_GOTO(rs_agree(err, c->comm, "loading the evaluation inputs"), done);
    double t0 = rs_now();
    RS_TRY_GOTO(eval_recon(t.rec, c, st, &in), done);
    recon_rows(t.recon, run, e, &in, t.rec);
    double t1 = rs_now();
    RS_TRY_GOTO(redundancy_rows(t.red, &t.np, c, &in), done);
    double t2 = rs_now();
    double secs[4] = {0, 0, 0, 0};
    if (run->cfg.eval.ce) {
        RS_TRY_GOTO(eval_ce(t.cer, secs, c, st, model, tk, &in, e->set), done);
        t.nce = ce_rows(t.ce, t.cer, &in, 0, 1);
    }
    double t3 = rs_now();
    err = c->rank == 0 ? rs_taskfile_write_eval(path, run, e, t.recon, M, t.red, t.np, t.ce, t.nce, rs_now() - t0) : RS_OK;
    RS_TRY_GOTO(rs_agree(err, c->comm, "writing the evaluation task file"), done);
    char name[256];
    rs_tasks_eval_name(name, sizeof name, run, e);
    RS_INFO("eval %s: EV (target) L%d %.4f .. L%d %.4f; recon %.2fs, redundancy %.2fs, CE %.2fs (rank 0: clean "
            "%.0f, splices %.0f block-tokens/s)",
            name, in.es.L[0].layer, t.rec[0].ev_target, in.es.L[M - 1].layer, t.rec[M - 1].ev_target, t1 - t0, t2 - t1,
            t3 - t2, secs[0] > 0 ? secs[2] / secs[0] : 0, secs[1] > 0 ? secs[3] / secs[1] : 0);
done:
    inputs_free(&in);
    tables_free(&t);
    return err;
}

/* RESAE_TEST_HOLD (util.h): the hold point of the evaluation stage is the start of the second
 * evaluation this process runs; a stop request seen there by any rank of the group leaves the task
 * to the next run. Collective over c->comm. */
static rs_err eval_test_hold(const rs_task_ctx *c) {
    static int n_started;
    volatile sig_atomic_t *stop = c->run->opts.stop;
    if (++n_started != 2 || !rs_test_hold("evaluate", stop)) return RS_OK;
    int mine = *stop != 0, any = 0;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, c->comm);
    if (any) RS_FAIL(RS_ERR_INTERRUPTED, "evaluation not started: stop requested (test hold)");
    return RS_OK;
}

rs_err rs_stage_eval_run(const rs_task_ctx *c, int i, const char *path, const rs_model *model, rs_tokens *tk) {
    RS_TRY(eval_test_hold(c));
    rs_actstore st;
    rs_err err = RS_OK;
    RS_TRY_GOTO(rs_taskfile_open_store(&st, c), done);
    err = evaluate(c, &st, model, tk, &c->run->grid.evals[i], path);
done:
    rs_actstore_close(&st);
    return err;
}

rs_err rs_stage_eval_ablate(const rs_task_ctx *c, int set, const rs_model *model, rs_tokens *tk) {
    RS_CHECK(rs_tasks_ablate_needed(c->run), RS_ERR_INTERNAL, "ablation task without eval.ce and ablations or eval.affine_only");
    const rs_grid_set *s = &c->run->grid.sets[set];
    int M = s->n, aff = rs_tasks_affine_only(c->run, set), nrows = 0;
    eval_inputs in;
    memset(&in, 0, sizeof in);
    rs_actstore st;
    memset(&st, 0, sizeof st);
    rs_eval_ce ce;
    memset(&ce, 0, sizeof ce);
    rs_eval_ce_result *cer = calloc((size_t)rs_eval_n_passes(M), sizeof *cer);
    double *rows = calloc((size_t)(3 + 3 * M + 4) * RS_EVAL_CE_NC, sizeof(double));
    rs_err err = cer && rows ? RS_OK : RS_ERR(RS_ERR_NOMEM, "out of memory");
    RS_TRY_GOTO(rs_agree(err, c->comm, "allocating the ablation passes"), done);
    RS_TRY_GOTO(rs_taskfile_open_store(&st, c), done);
    /* No SAEs: the ablations read only the clean streams and the eval means. The affine-only control
     * is a resae set whose reconstructions are 0 at l_2 .. l_M and the identity at l_1, so the same
     * passes write A x_{m-1} + c there (METHOD.md §6). */
    err = inputs_set(&in, c->run, &st, s, aff ? RS_VARIANT_RESAE : RS_VARIANT_RAW);
    for (int m = 1; m < M && aff && !err; m++) {
        err = rs_taskfile_load_affine(&in.map[m], c->run, s->layers[m - 1], s->layers[m]);
        in.es.L[m].map = &in.map[m];
        in.es.L[m].zero = 1;
    }
    RS_TRY_GOTO(rs_agree(err, c->comm, "the set's eval means and affine maps"), done);
    rs_eval_ce_opts o;
    ce_opts(&o, &c->run->cfg, &in, !aff);
    o.single_from = 1;
    double t0 = rs_now();
    RS_TRY_GOTO(ce_passes(cer, &ce, c, &st, model, tk, &in, &o), done);
    if (aff) nrows = ce_rows(rows, cer, &in, 1, 0);
    char apath[4096];
    err = rs_tasks_ablate_path(apath, sizeof apath, c->run, set);
    if (!err && c->rank == 0) err = rs_taskfile_write_ablate(apath, &cer[RS_PASS_SINGLE + M], M, rows, nrows);
    RS_TRY_GOTO(rs_agree(err, c->comm, "writing the ablation baselines"), done);
    RS_INFO("ablate %s: zero/mean ablation baselines at %d layers%s in %.2fs (rank 0: clean %.0f, other passes %.0f "
            "block-tokens/s)", s->name, M, aff ? " and the affine-only control" : "", rs_now() - t0,
            ce.seconds_clean > 0 ? (double)ce.block_tokens_clean / ce.seconds_clean : 0,
            ce.seconds_splice > 0 ? (double)ce.block_tokens_splice / ce.seconds_splice : 0);
done:
    rs_eval_ce_free(&ce);
    rs_actstore_close(&st);
    inputs_free(&in);
    free(cer);
    free(rows);
    return err;
}
