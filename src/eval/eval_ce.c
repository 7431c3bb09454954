/* Cross-entropy splices (METHOD.md §6): per batch of sequences one clean pass captures the stream at
 * every layer of the set and the clean log-probabilities; every other pass starts from a cached
 * stream entering the block after its first spliced layer, so the blocks below it never run twice. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "resae/config.h"
#include "resae/eval.h"
#include "resae/kernels.h"
#include "resae/log.h"
#include "resae/util.h"

enum { HOOK_NONE = 0, HOOK_CAPTURE, HOOK_TF, HOOK_SO };

int rs_eval_ce_batch_seqs(int64_t batch_sequences, int T, int V) {
    int64_t per_seq = 2 * (int64_t)T * (int64_t)V * (int64_t)sizeof(float);
    int64_t fit = RS_EVAL_LOGIT_BYTES / (per_seq > 0 ? per_seq : 1);
    if (fit < 1) fit = 1;
    return batch_sequences > fit ? (int)fit : (int)batch_sequences;
}

rs_err rs_eval_ce_init(rs_eval_ce *c, const rs_model *model, const rs_eval_set *es, const rs_eval_ce_opts *o,
                       int max_B, int T) {
    memset(c, 0, sizeof *c);
    c->model = model;
    c->es = es;
    c->o = *o;
    c->max_B = max_B;
    c->T = T;
    c->V = model->cfg.vocab_size;
    c->n_pass = rs_eval_n_passes(es->M);
    if (o->mean && !o->mu) RS_FAIL(RS_ERR_INVAL, "mean ablation needs the layer means");
    if (es->d != model->cfg.d_model) RS_FAIL(RS_ERR_INVAL, "SAE width %d differs from the model's %d", es->d, model->cfg.d_model);
    for (int m = 0; m < es->M; m++)
        if (es->L[m].layer < 0 || es->L[m].layer >= model->cfg.n_layers || (m && es->L[m].layer <= es->L[m - 1].layer))
            RS_FAIL(RS_ERR_INVAL, "set layer %d: layers must be ascending block outputs of the model", es->L[m].layer);
    size_t N = (size_t)max_B * (size_t)T, d = (size_t)es->d, V = (size_t)c->V, M = (size_t)es->M;
    rs_err err = RS_OK;
    RS_TRY_GOTO(rs_run_state_init(&c->rs, model, max_B, T), fail);
    RS_TRY_GOTO(rs_eval_work_init(&c->w, es, (int64_t)N), fail);
    c->hc = malloc(sizeof(float) * M * N * d);
    c->eps = malloc(sizeof(float) * M * N * d);
    c->x = malloc(sizeof(float) * N * d);
    c->xprev = malloc(sizeof(float) * N * d);
    c->logits = malloc(sizeof(float) * N * V);
    c->lp_clean = malloc(sizeof(float) * N * V);
    c->row_S = malloc(sizeof(double) * N);
    c->row_H = malloc(sizeof(double) * N);
    c->pass = calloc((size_t)c->n_pass, sizeof *c->pass);
    if (!c->hc || !c->eps || !c->x || !c->xprev || !c->logits || !c->lp_clean || !c->row_S || !c->row_H || !c->pass)
        RS_FAIL_GOTO(fail, RS_ERR_NOMEM, "out of memory for CE splices of %d sequences x %d tokens (%zu MB of logits); "
                     "lower eval.batch_sequences", max_B, T, 2 * N * V * sizeof(float) >> 20);
    return RS_OK;
fail:
    rs_eval_ce_free(c);
    return err;
}

void rs_eval_ce_free(rs_eval_ce *c) {
    rs_run_state_free(&c->rs);
    rs_eval_work_free(&c->w);
    free(c->hc);
    free(c->eps);
    free(c->x);
    free(c->xprev);
    free(c->logits);
    free(c->lp_clean);
    free(c->row_S);
    free(c->row_H);
    free(c->pass);
    memset(c, 0, sizeof *c);
}

static int layer_index(const rs_eval_set *es, int layer) {
    for (int m = 0; m < es->M; m++)
        if (es->L[m].layer == layer) return m;
    return -1;
}

/* Rows of position 0 keep their clean values: zero them in a perturbation. */
static void clear_pos0(float *x, int B, int T, int d) {
    for (int b = 0; b < B; b++) memset(x + (size_t)b * (size_t)T * (size_t)d, 0, sizeof(float) * (size_t)d);
}

static rs_err hook(void *vctx, int layer, float *h, int B, int T, int d) {
    rs_eval_ce *c = vctx;
    const rs_eval_set *es = c->es;
    int m = layer_index(es, layer);
    if (m < 0 || c->cur_mode == HOOK_NONE) return RS_OK;
    size_t N = (size_t)B * (size_t)T, nd = N * (size_t)d;
    if (c->cur_mode == HOOK_CAPTURE) {
        memcpy(c->hc + (size_t)m * (size_t)c->max_B * (size_t)T * (size_t)d, h, sizeof(float) * nd);
        return RS_OK;
    }
    if (m == 0) return RS_OK; /* the first layer is spliced in the stream the pass starts from */
    if (c->cur_mode == HOOK_TF) {
        const float *e = c->eps + (size_t)m * (size_t)c->max_B * (size_t)T * (size_t)d;
        for (size_t q = 0; q < nd; q++) h[q] += e[q];
        return RS_OK;
    }
    /* sequential-online: the SAE reads the perturbed stream; resae predicts from the value written at
     * the previous layer. c->x is free here (the pass copied it into its own stream at the start). */
    int resae = es->variant == RS_VARIANT_RESAE;
    RS_TRY(rs_eval_splice_error(c->x, &c->w, es, m, h, resae ? c->xprev : NULL, (int64_t)N));
    if (c->o.skip_pos0) clear_pos0(c->x, B, T, d);
    for (size_t q = 0; q < nd; q++) h[q] += c->x[q];
    if (resae) memcpy(c->xprev, h, sizeof(float) * nd);
    return RS_OK;
}

/* Sum of a[i] * b[i]: 16 float lanes per block of 1024, blocks summed in double (vectorizes). */
static double dot_blocks(const float *a, const float *b, int n) {
    double s = 0;
    for (int j0 = 0; j0 < n; j0 += 1024) {
        int j1 = n - j0 < 1024 ? n : j0 + 1024;
        float acc[16] = {0};
        int j = j0;
        for (; j + 16 <= j1; j += 16)
            for (int l = 0; l < 16; l++) acc[l] += a[j + l] * b[j + l];
        double t = 0;
        for (; j < j1; j++) t += (double)a[j] * b[j];
        for (int l = 0; l < 16; l++) t += acc[l];
        s += t;
    }
    return s;
}

/* CE and KL(clean || this pass) of the predictions from positions p0 .. T-2. The clean pass stores
 * p = softmax(z_clean) (float), S = sum p and H = p . z_clean - lse_clean S (= sum p log p); a pass
 * with logits z then has KL = H - (p . z - lse(z) S): one exp sweep (the lse) and one dot product per
 * row, no log-probabilities stored, and identical logits give KL = 0 exactly. */
static void accumulate(rs_eval_ce *c, rs_eval_ce_sums *s, const int32_t *tokens, int B, int clean) {
    int T = c->T, V = c->V, p0 = c->o.skip_pos0 ? 1 : 0;
    for (int b = 0; b < B; b++)
        for (int t = p0; t < T - 1; t++) {
            size_t r = (size_t)b * (size_t)T + (size_t)t, row = r * (size_t)V;
            const float *z = c->logits + row;
            double lse = rs_logsumexp(z, V);
            int tgt = tokens[r + 1];
            s->ce += lse - (double)z[tgt];
            float *pc = c->lp_clean + row;
            if (clean) {
                double S = 0;
                for (int v = 0; v < V; v++) {
                    pc[v] = (float)exp((double)z[v] - lse);
                    S += pc[v];
                }
                c->row_S[r] = S;
                c->row_H[r] = dot_blocks(pc, z, V) - lse * S;
            } else {
                s->kl += c->row_H[r] - (dot_blocks(pc, z, V) - lse * c->row_S[r]);
            }
            s->n++;
        }
    s->ran = 1;
}

/* One pass from the stream x after layer l (x is the stream entering block l+1). */
static rs_err run_from(rs_eval_ce *c, int pass, int l, int mode, const int32_t *tokens, int B) {
    double t0 = rs_now();
    rs_forward_args a = RS_FORWARD_ARGS_INIT;
    a.tokens = tokens;
    a.resid_in = c->x;
    a.start_layer = l + 1;
    a.hook = hook;
    a.hook_ctx = c;
    a.logits = c->logits;
    c->cur_mode = mode;
    rs_err err = rs_model_forward(c->model, &c->rs, &a, B, c->T);
    c->cur_mode = HOOK_NONE;
    RS_TRY(err);
    accumulate(c, &c->pass[pass], tokens, B, 0);
    c->seconds_splice += rs_now() - t0;
    c->block_tokens_splice += (int64_t)B * c->T * (c->model->cfg.n_layers - (l + 1));
    return RS_OK;
}

rs_err rs_eval_ce_batch(rs_eval_ce *c, const int32_t *tokens, int B) {
    if (B > c->max_B) RS_FAIL(RS_ERR_INVAL, "batch of %d sequences, buffers for %d", B, c->max_B);
    const rs_eval_set *es = c->es;
    int M = es->M, T = c->T, d = es->d;
    size_t N = (size_t)B * (size_t)T, nd = N * (size_t)d, stride = (size_t)c->max_B * (size_t)T * (size_t)d;
    int resae = es->variant == RS_VARIANT_RESAE;

    /* clean pass: capture h at every layer of the set and the clean log-probabilities */
    double t0 = rs_now();
    rs_forward_args a = RS_FORWARD_ARGS_INIT;
    a.tokens = tokens;
    a.hook = hook;
    a.hook_ctx = c;
    a.logits = c->logits;
    c->cur_mode = HOOK_CAPTURE;
    rs_err err = rs_model_forward(c->model, &c->rs, &a, B, T);
    c->cur_mode = HOOK_NONE;
    RS_TRY(err);
    accumulate(c, &c->pass[RS_PASS_CLEAN], tokens, B, 1);
    c->seconds_clean += rs_now() - t0;
    c->block_tokens_clean += (int64_t)N * c->model->cfg.n_layers;

    int any_splice = c->o.single || c->o.tf || c->o.so;
    if (any_splice) {
        t0 = rs_now();
        /* splice errors on clean inputs */
        for (int m = 0; m < M; m++) {
            float *e = c->eps + (size_t)m * stride;
            RS_TRY(rs_eval_splice_error(e, &c->w, es, m, c->hc + (size_t)m * stride,
                                        resae && m > 0 ? c->hc + (size_t)(m - 1) * stride : NULL, (int64_t)N));
            if (c->o.skip_pos0) clear_pos0(e, B, T, d);
        }
        c->seconds_splice += rs_now() - t0;
    }
    const float *h0 = c->hc, *e0 = c->eps;
    if (c->o.single)
        for (int m = c->o.single_from; m < M; m++) {
            const float *h = c->hc + (size_t)m * stride, *e = c->eps + (size_t)m * stride;
            for (size_t q = 0; q < nd; q++) c->x[q] = h[q] + e[q];
            RS_TRY(run_from(c, RS_PASS_SINGLE + m, es->L[m].layer, HOOK_NONE, tokens, B));
        }
    if (c->o.tf) {
        for (size_t q = 0; q < nd; q++) c->x[q] = h0[q] + e0[q];
        RS_TRY(run_from(c, RS_PASS_TF, es->L[0].layer, HOOK_TF, tokens, B));
    }
    if (c->o.so) {
        for (size_t q = 0; q < nd; q++) c->x[q] = h0[q] + e0[q];
        if (resae) memcpy(c->xprev, c->x, sizeof(float) * nd);
        RS_TRY(run_from(c, RS_PASS_SO, es->L[0].layer, HOOK_SO, tokens, B));
    }
    for (int kind = 0; kind < 2; kind++) {
        if (kind == 0 ? !c->o.zero : !c->o.mean) continue;
        for (int m = 0; m < M; m++) {
            const float *h = c->hc + (size_t)m * stride;
            for (size_t r = 0; r < N; r++) {
                float *x = c->x + r * (size_t)d;
                if (c->o.skip_pos0 && r % (size_t)T == 0) {
                    memcpy(x, h + r * (size_t)d, sizeof(float) * (size_t)d);
                } else if (kind == 0) {
                    memset(x, 0, sizeof(float) * (size_t)d);
                } else {
                    memcpy(x, c->o.mu + (size_t)m * (size_t)d, sizeof(float) * (size_t)d);
                }
            }
            RS_TRY(run_from(c, RS_PASS_SINGLE + (kind + 1) * M + m, es->L[m].layer, HOOK_NONE, tokens, B));
        }
    }
    return RS_OK;
}

rs_err rs_eval_ce_finish(rs_eval_ce_result *out, const rs_eval_ce *c, MPI_Comm comm) {
    int n = c->n_pass;
    /* on the stack: an allocation failure here would leave the collective early on one rank */
    double buf[4 * (RS_PASS_SINGLE + 3 * RS_EVAL_MAX_LAYERS)];
    for (int i = 0; i < n; i++) {
        buf[4 * i] = c->pass[i].ce;
        buf[4 * i + 1] = c->pass[i].kl;
        buf[4 * i + 2] = (double)c->pass[i].n;
        buf[4 * i + 3] = c->pass[i].ran;
    }
    if (comm != MPI_COMM_NULL) {
        RS_MPI(MPI_Allreduce(MPI_IN_PLACE, buf, 4 * n, MPI_DOUBLE, MPI_SUM, comm));
    }
    for (int i = 0; i < n; i++) {
        int64_t cnt = (int64_t)buf[4 * i + 2];
        out[i].n = cnt;
        out[i].ran = buf[4 * i + 3] > 0;
        out[i].ce = out[i].ran && cnt ? buf[4 * i] / (double)cnt : NAN;
        out[i].kl = out[i].ran && cnt ? buf[4 * i + 1] / (double)cnt : NAN;
    }
    return RS_OK;
}
