/* The harvest stage (stage_harvest.h): the model glue between rs_harvest_run and the forward pass. */
#define _GNU_SOURCE
#include "resae/stage_harvest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/actstore.h"
#include "resae/harvest.h"
#include "resae/log.h"
#include "resae/model.h"
#include "resae/mpi_util.h"
#include "resae/splits.h"
#include "resae/tasks.h"
#include "resae/tokens.h"

typedef struct harvest_ctx {
    const rs_model *model;
    rs_run_state rs;
    rs_tokens tk;
    int32_t *tok; // (max_B, T)
    const rs_harvest_batch *b;
    float *const *out;
} harvest_ctx;

static rs_err capture_hook(void *vctx, int layer, float *h, int B, int T, int d) {
    harvest_ctx *c = vctx;
    for (int i = 0; i < c->b->n_layers; i++)
        if (c->b->layers[i] == layer) {
            if (c->b->put) return c->b->put(c->b->put_ctx, i, h); /* packed into the store's buffer at once */
            memcpy(c->out[i], h, sizeof(float) * (size_t)B * (size_t)T * (size_t)d);
        }
    return RS_OK;
}

static rs_err harvest_produce(void *vctx, float *const *out, const rs_harvest_batch *b) {
    harvest_ctx *c = vctx;
    int T = b->T;
    /* read runs of consecutive sequence ids at once */
    for (int s = 0; s < b->n_seq;) {
        int e = s + 1;
        while (e < b->n_seq && b->seq_ids[e] == b->seq_ids[e - 1] + 1) e++;
        RS_TRY(rs_tokens_read(c->tok + (size_t)s * (size_t)T, &c->tk, b->seq_ids[s], e - s));
        s = e;
    }
    c->b = b;
    c->out = out;
    rs_forward_args a = RS_FORWARD_ARGS_INIT;
    a.tokens = c->tok;
    a.stop_layer = b->layers[b->n_layers - 1];
    a.hook = capture_hook;
    a.hook_ctx = c;
    return rs_model_forward(c->model, &c->rs, &a, b->n_seq, T);
}

/* What the store is of: model, data, splits, layers and layout (a store of another identity is
 * refused unless --force). Collective (rank 0 hashes the files). */
static rs_err store_identity(rs_actstore_identity *id, const rs_task_ctx *c, const rs_splits *sp) {
    const rs_run *run = c->run;
    rs_actstore_identity_init(id);
    snprintf(id->model_path, sizeof id->model_path, "%s", run->cfg.model.path);
    snprintf(id->data_path, sizeof id->data_path, "%s", run->cfg.data.tokens);
    rs_err err = RS_OK;
    uint64_t h[2] = {0, 0};
    if (c->rank == 0) {
        err = rs_harvest_hash_model_dir(&h[0], run->cfg.model.path);
        if (!err) err = rs_harvest_hash_file(&h[1], run->cfg.data.tokens);
    }
    RS_AGREE(err, c->comm, "hashing the model and the tokens");
    MPI_Bcast(h, 2, MPI_UINT64_T, 0, c->comm);
    id->model_hash = h[0];
    id->data_hash = h[1];
    rs_actstore_identity_set_splits(id, sp);
    id->n_layers = run->n_store_layers;
    memcpy(id->layers, run->store_layers, sizeof(int) * (size_t)run->n_store_layers);
    id->d = run->mc.d_model;
    id->dtype = run->cfg.store.dtype;
    id->batch_seqs = (int)run->cfg.eval.batch_sequences;
    id->chunk_rows = (int)run->cfg.store.chunk_rows;
    return rs_actstore_identity_check(id);
}

rs_err rs_stage_harvest_run(const rs_task_ctx *c) {
    const rs_run *run = c->run;
    harvest_ctx h;
    memset(&h, 0, sizeof h);
    rs_splits sp;
    memset(&sp, 0, sizeof sp);
    rs_model model;
    memset(&model, 0, sizeof model);
    char path[4096];
    rs_err err = rs_stage_tokens_open(&h.tk, run, 1);
    if (!err) err = rs_stage_splits_build(&sp, run, &h.tk);
    if (!err) err = rs_tasks_run_file(path, sizeof path, run, RS_ACTSTORE_FILE);
    RS_TRY_GOTO(rs_agree(err, c->comm, "opening the tokens"), done);
    rs_harvest_config hc;
    memset(&hc, 0, sizeof hc);
    hc.run_dir = run->cfg.run_dir;
    RS_TRY_GOTO(store_identity(&hc.id, c, &sp), done);
    hc.batches_per_round = 1;
    hc.flush_seconds = 30.0; /* a kill loses at most this much work; fsyncs block the ranks */
    hc.force = run->opts.force;
    hc.stop = run->opts.stop;

    /* (a complete store is reused by rs_harvest_run; the model is loaded regardless) */
    err = rs_model_load(&model, run->cfg.model.path, (enum rs_weights_mode)run->cfg.model.weights);
    if (!err) err = rs_run_state_init(&h.rs, &model, hc.id.batch_seqs, h.tk.seq_len);
    if (!err) {
        h.tok = malloc(sizeof(int32_t) * (size_t)hc.id.batch_seqs * (size_t)h.tk.seq_len);
        if (!h.tok) err = RS_ERR(RS_ERR_NOMEM, "out of memory for token batch");
    }
    RS_TRY_GOTO(rs_agree(err, c->comm, "loading the model"), done);
    h.model = &model;
    RS_INFO("harvest: %d layers x %" PRId64 " + %" PRId64 " + %" PRId64 " tokens (calib + train + eval) into %s",
            hc.id.n_layers, sp.split[RS_SPLIT_CALIB].n_tokens, sp.split[RS_SPLIT_TRAIN].n_tokens,
            sp.split[RS_SPLIT_EVAL].n_tokens, path);
    rs_harvest_stats hs;
    RS_TRY_GOTO(rs_harvest_run(&hs, &hc, &sp, harvest_produce, &h, c->comm), done);
done:
    free(h.tok);
    rs_run_state_free(&h.rs);
    rs_model_free(&model);
    rs_splits_free(&sp);
    rs_tokens_close(&h.tk);
    return err;
}

rs_err rs_stage_harvest_batches(int64_t *n, const rs_run *run) {
    rs_tokens tk;
    memset(&tk, 0, sizeof tk);
    tk.fd = -1;
    rs_splits sp;
    memset(&sp, 0, sizeof sp);
    rs_err err = rs_stage_tokens_open(&tk, run, 0);
    if (!err) err = rs_stage_splits_build(&sp, run, &tk);
    if (!err) {
        int64_t B = run->cfg.eval.batch_sequences;
        *n = 0;
        for (int s = 0; s < RS_SPLIT_COUNT; s++) *n += (sp.split[s].n_seq + B - 1) / B;
    }
    rs_splits_free(&sp);
    rs_tokens_close(&tk);
    return err;
}
