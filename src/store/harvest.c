/* Harvest driver: batches -> producer -> activation store, resumable through the journal (journal.c). */
#include "resae/harvest.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/util.h"
#include "journal.h"

/* ------------------------------------------------------------------------------------------------
 * content hashes
 * ---------------------------------------------------------------------------------------------- */

static rs_err hash_stream(uint64_t *h, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) RS_FAIL(RS_ERR_IO, "%s: cannot open for hashing: %s", path, strerror(errno));
    enum { BUF = 1 << 20 };
    unsigned char *buf = malloc(BUF);
    if (!buf) {
        fclose(f);
        RS_FAIL(RS_ERR_NOMEM, "out of memory hashing %s", path);
    }
    size_t n;
    while ((n = fread(buf, 1, BUF, f)) > 0) *h = rs_hash64(*h, buf, n);
    int bad = ferror(f);
    fclose(f);
    free(buf);
    if (bad) RS_FAIL(RS_ERR_IO, "%s: read error while hashing", path);
    return RS_OK;
}

rs_err rs_harvest_hash_file(uint64_t *out, const char *path) {
    uint64_t h = RS_HASH64_INIT;
    RS_TRY(hash_stream(&h, path));
    *out = h;
    return RS_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

rs_err rs_harvest_hash_model_dir(uint64_t *out, const char *dir) {
    rs_err err = RS_OK;
    DIR *dp = opendir(dir);
    if (!dp) RS_FAIL(RS_ERR_IO, "%s: cannot list the model directory: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dp))) {
        if (!ends_with(de->d_name, ".json") && !ends_with(de->d_name, ".safetensors")) continue;
        if (!strcmp(de->d_name, "config.json")) continue; /* hashed first */
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory listing %s", dir);
            names = grown;
        }
        names[n] = strdup(de->d_name);
        if (!names[n]) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory listing %s", dir);
        n++;
    }
    if (n) qsort(names, n, sizeof *names, cmp_str);
    uint64_t h = RS_HASH64_INIT;
    char path[RS_ACTSTORE_PATH_MAX * 2];
    RS_TRY_GOTO(rs_path_join(path, sizeof path, dir, "config.json"), done);
    RS_TRY_GOTO(hash_stream(&h, path), done);
    for (size_t i = 0; i < n; i++) {
        h = rs_hash64(h, names[i], strlen(names[i]) + 1);
        RS_TRY_GOTO(rs_path_join(path, sizeof path, dir, names[i]), done);
        RS_TRY_GOTO(hash_stream(&h, path), done);
    }
    *out = h;
done:
    closedir(dp);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return err;
}

/* ------------------------------------------------------------------------------------------------
 * the run's state
 * ---------------------------------------------------------------------------------------------- */

/* The round agreements in flight (non-blocking MPI_MAX allreduces), oldest first. */
enum { AGREE_LAG = 4 }; /* rounds a rank may run ahead of the slowest one */
typedef struct agreement {
    MPI_Request req;
    int in[4];  /* my error, stop requested, my rank if I failed (else -1), rank 0 wants a checkpoint */
    int out[4]; /* the maxima over the ranks */
    int64_t first, last; /* the todo indices of the round */
} agreement;
typedef struct agreements {
    agreement a[AGREE_LAG + 1];
    int head, n;
} agreements;

/* One harvest from harvest_open to harvest_close: what it was asked, what it found on disk, its
 * buffers and the progress of its batch loop. One owner: harvest_close frees everything. */
typedef struct harvest_run {
    /* the request */
    const rs_harvest_config *cfg;
    const rs_splits *splits;
    rs_harvest_produce_fn produce;
    void *ctx;
    MPI_Comm comm;
    int rank, size;
    int per_round;                         /* batches per rank per round */
    rs_actstore_identity id;
    uint64_t ident;                        /* identity hash, in the journal's first line */
    char store_path[RS_ACTSTORE_PATH_MAX];
    char jpath[RS_ACTSTORE_PATH_MAX];
    batch_map map;
    int64_t total;                         /* global batches, all splits */
    /* what is on disk */
    rs_actstore st;
    unsigned char *done;                   /* (total) batch recorded in the journal before this run */
    int created, jcomplete;
    int64_t *todo;                         /* (n_todo) global indices of the batches to run, ascending */
    int64_t n_todo, tokens_todo;
    float **bufs;                          /* (n_layers) one batch (batch_seqs * T, d) per layer */
    journal jr;                            /* open on rank 0 */
    /* the batch loop */
    agreements ag;
    int64_t pending;                       /* first todo index not yet journaled */
    rs_err my_err;                         /* once a rank failed it runs no more batches, only the collectives */
    double t_flush;                        /* rank 0's clock at the last checkpoint */
    rs_progress prog;
    rs_harvest_stats stats;
} harvest_run;

/* ------------------------------------------------------------------------------------------------
 * one batch
 * ---------------------------------------------------------------------------------------------- */

/* The batch's put: pack layer i from the producer's stream into bufs[i]. */
typedef struct put_ctx {
    rs_actstore *st;
    float *const *bufs;
    int n_seq;
    unsigned char put[RS_ACTSTORE_MAX_LAYERS]; /* layer i was put */
    int has_bad;
    rs_actstore_bad bad;
} put_ctx;

static rs_err put_layer(void *vctx, int i, const float *h) {
    put_ctx *c = vctx;
    if (i < 0 || i >= c->st->id.n_layers || c->put[i])
        RS_FAIL(RS_ERR_INTERNAL, "harvest: producer put layer index %d twice or out of range", i);
    rs_err err = rs_actstore_pack_layer(c->st, &c->bad, i, c->bufs[i], h, c->n_seq);
    c->has_bad = err == RS_ERR_NUMERIC;
    c->put[i] = !err;
    return err;
}

/* Produce, check, pack and write global batch g (this rank alone). */
static rs_err run_batch(harvest_run *h, int64_t g) {
    rs_actstore *st = &h->st;
    const rs_actstore_identity *id = &st->id;
    int split;
    int64_t batch;
    batch_map_local(&split, &batch, &h->map, g);
    const rs_split *sp = &h->splits->split[split];
    int64_t s0 = batch * id->batch_seqs;
    int n_seq = (int)(sp->n_seq - s0 < id->batch_seqs ? sp->n_seq - s0 : id->batch_seqs);
    put_ctx pc;
    memset(&pc, 0, sizeof pc);
    pc.st = st;
    pc.bufs = h->bufs;
    pc.n_seq = n_seq;
    rs_harvest_batch b = {.split = split, .batch = batch, .seq_ids = sp->seq_ids + s0, .n_seq = n_seq,
                          .T = id->T, .n_layers = id->n_layers, .layers = id->layers, .d = id->d,
                          .put = put_layer, .put_ctx = &pc};
    double t0 = rs_now(), pack0 = st->pack_s;
    rs_err err = h->produce(h->ctx, h->bufs, &b);
    /* the packing inside the producer's puts is the store's time, not the producer's */
    h->stats.produce_s += rs_now() - t0 - (st->pack_s - pack0);
    /* the layers not put are checked, packed and summed in place; nothing is written unless every
     * layer is valid */
    for (int i = 0; !err && i < id->n_layers; i++)
        if (!pc.put[i]) {
            err = rs_actstore_pack_layer(st, &pc.bad, i, h->bufs[i], h->bufs[i], n_seq);
            pc.has_bad = err == RS_ERR_NUMERIC;
        }
    if (err == RS_ERR_NUMERIC && pc.has_bad) {
        const rs_actstore_bad *bad = &pc.bad;
        RS_FAIL(RS_ERR_NUMERIC,
                "harvest: %s value %g produced for split %s, layer %d, sequence %d (batch %lld), "
                "position %d, dim %d; nothing of this batch was stored%s",
                bad->out_of_range ? "out-of-float16-range" : "non-finite", (double)bad->value, rs_split_name(split),
                id->layers[bad->layer_index], b.seq_ids[bad->seq], (long long)batch, bad->pos, bad->dim,
                bad->out_of_range ? " (use dtype float32 for this model)" : "");
    }
    RS_TRY(err);
    RS_TRY(rs_actstore_write_packed(st, split, batch, (const void *const *)h->bufs, n_seq));
    h->stats.my_batches++;
    return RS_OK;
}

/* ------------------------------------------------------------------------------------------------
 * open: the identity, the run directory, the journal, the store and the batches to run
 * ---------------------------------------------------------------------------------------------- */

/* The state of the run directory: the store opened or created, done[] from the journal (on every
 * rank), the journal restarted for a new store. Collective. */
static rs_err open_store(harvest_run *h) {
    const rs_harvest_config *cfg = h->cfg;
    const int64_t nflags = h->total ? h->total : 1;
    h->done = calloc((size_t)nflags, 1);
    rs_err err = h->done ? RS_OK : RS_ERR(RS_ERR_NOMEM, "harvest: out of memory for %lld batch flags", (long long)h->total);
    RS_AGREE(err, h->comm, "allocating the harvest's batch flags");

    /* rank 0 inspects the run directory and the journal; everyone learns the outcome */
    int jinfo[2] = {JOURNAL_MISSING, 0}; /* status, complete */
    if (h->rank == 0) {
        if (mkdir(cfg->run_dir, 0755) && errno != EEXIST)
            err = RS_ERR(RS_ERR_IO, "%s: cannot create the run directory: %s", cfg->run_dir, strerror(errno));
        if (!err) err = journal_read(&jinfo[0], &jinfo[1], h->done, h->jpath, h->ident, &h->map);
    }
    RS_AGREE(err, h->comm, "reading the run directory and the harvest journal");
    MPI_Bcast(jinfo, 2, MPI_INT, 0, h->comm);
    h->jcomplete = jinfo[1];

    err = rs_actstore_open_or_create(&h->st, &h->created, h->store_path, &h->id, h->splits, cfg->force,
                                     jinfo[0] == JOURNAL_OK, h->comm);
    RS_AGREE(err, h->comm, "opening the activation store");
    if (h->created) {
        memset(h->done, 0, (size_t)nflags);
        h->jcomplete = 0;
        if (h->rank == 0) err = journal_reset(h->jpath, cfg->run_dir, h->ident);
        RS_AGREE(err, h->comm, "starting the harvest journal");
        RS_INFO("harvest: new store %s (%lld batches of %d sequences)", h->store_path, (long long)h->total,
                h->id.batch_seqs);
    }
    MPI_Bcast(h->done, (int)nflags, MPI_UNSIGNED_CHAR, 0, h->comm);
    return RS_OK;
}

/* The list of batches to run, the batch buffers and (rank 0) the journal open for appending.
 * Collective: the store is open, so nobody may leave alone. */
static rs_err open_batches(harvest_run *h) {
    const rs_actstore_identity *id = &h->id;
    h->todo = malloc((size_t)(h->n_todo ? h->n_todo : 1) * sizeof *h->todo);
    h->bufs = calloc((size_t)id->n_layers, sizeof *h->bufs);
    int alloc_ok = h->todo && h->bufs;
    for (int i = 0; alloc_ok && i < id->n_layers; i++) {
        h->bufs[i] = rs_calloc_aligned((size_t)id->batch_seqs * id->T * id->d, sizeof(float));
        alloc_ok = h->bufs[i] != NULL;
    }
    rs_err err = alloc_ok ? RS_OK
                          : RS_ERR(RS_ERR_NOMEM, "harvest: out of memory for a batch of %d x %d x %d floats per layer "
                                   "(%d layers)", id->batch_seqs, id->T, id->d, id->n_layers);
    RS_AGREE(err, h->comm, "allocating the harvest's batch buffers");
    for (int64_t g = 0, k = 0; g < h->total; g++)
        if (!h->done[g]) {
            h->todo[k++] = g;
            int s;
            int64_t b, r0, nr;
            batch_map_local(&s, &b, &h->map, g);
            rs_actstore_batch_rows(&r0, &nr, &h->st, s, b);
            h->tokens_todo += nr;
        }
    if (h->rank == 0) err = journal_open(&h->jr, h->jpath, h->n_todo);
    RS_AGREE(err, h->comm, "opening the harvest journal");
    return RS_OK;
}

/* Everything up to the batch loop; *complete: the store is complete already (nothing to run).
 * Collective; on error h still needs harvest_close. */
static rs_err harvest_open(harvest_run *h, int *complete, const rs_harvest_config *cfg, const rs_splits *splits,
                           rs_harvest_produce_fn produce, void *ctx, MPI_Comm comm) {
    memset(h, 0, sizeof *h);
    journal_init(&h->jr);
    *complete = 0;
    h->cfg = cfg;
    h->splits = splits;
    h->produce = produce;
    h->ctx = ctx;
    h->comm = comm;
    MPI_Comm_rank(comm, &h->rank);
    MPI_Comm_size(comm, &h->size);
    h->id = cfg->id;
    rs_actstore_identity_set_splits(&h->id, splits);
    /* the same on every rank (same config), so every rank returns here or none does */
    RS_TRY(rs_actstore_identity_check(&h->id));
    h->per_round = cfg->batches_per_round > 0 ? cfg->batches_per_round : 1;
    h->ident = rs_actstore_identity_hash(&h->id);
    RS_TRY(rs_path_join(h->store_path, sizeof h->store_path, cfg->run_dir, RS_ACTSTORE_FILE));
    RS_TRY(rs_path_join(h->jpath, sizeof h->jpath, cfg->run_dir, RS_HARVEST_JOURNAL));
    h->map.off[0] = 0;
    for (int s = 0; s < RS_SPLIT_COUNT; s++)
        h->map.off[s + 1] = h->map.off[s] + (splits->split[s].n_seq + h->id.batch_seqs - 1) / h->id.batch_seqs;
    h->total = h->map.off[RS_SPLIT_COUNT];
    h->stats.batches_total = h->total;

    RS_TRY(open_store(h));
    for (int64_t g = 0; g < h->total; g++) h->n_todo += !h->done[g];
    h->stats.batches_skipped = h->total - h->n_todo;
    if (!h->created && h->stats.batches_skipped)
        RS_INFO("harvest: resuming, %lld of %lld batches already done", (long long)h->stats.batches_skipped,
                (long long)h->total);
    if (h->jcomplete && h->n_todo == 0 && rs_actstore_is_complete(&h->st)) {
        RS_INFO("harvest: %s is complete", h->store_path);
        *complete = 1;
        return RS_OK;
    }
    RS_TRY(open_batches(h));
    rs_progress_init(&h->prog, "harvest", (double)h->tokens_todo, "tok", h->rank == 0);
    return RS_OK;
}

static void harvest_close(harvest_run *h) {
    journal_close(&h->jr);
    if (h->bufs)
        for (int i = 0; i < h->id.n_layers; i++) free(h->bufs[i]);
    free(h->bufs);
    free(h->todo);
    free(h->done);
    rs_actstore_close(&h->st);
}

/* ------------------------------------------------------------------------------------------------
 * checkpoints and round agreements
 * ---------------------------------------------------------------------------------------------- */

/* Flush the store on every rank, then record todo[pending, upto) in the journal (rank 0).
 * Collective. */
static rs_err checkpoint(harvest_run *h, int64_t upto) {
    RS_AGREE(rs_actstore_flush(&h->st), h->comm, "flushing the activation store");
    /* the data since the last flush is durable: record it */
    rs_err err = h->rank == 0 ? journal_record(&h->jr, h->todo, h->pending, upto, &h->map) : RS_OK;
    RS_AGREE(err, h->comm, "appending to the harvest journal");
    for (int64_t k = h->pending; k < upto; k++) {
        int s;
        int64_t b, r0, nr;
        batch_map_local(&s, &b, &h->map, h->todo[k]);
        rs_actstore_batch_rows(&r0, &nr, &h->st, s, b);
        h->stats.tokens_run += nr;
    }
    h->stats.batches_run += upto - h->pending;
    h->pending = upto;
    return RS_OK;
}

/* A rank failed in the round starting at todo index first (agreed: out[0] its code, out[2] its
 * rank): keep the rounds before it, whose agreements found no error, then return the failure. */
static rs_err failed_round(harvest_run *h, int64_t first, const int *out) {
    if (h->pending < first) RS_TRY(checkpoint(h, first));
    if (h->my_err) return h->my_err; /* its message is still the current one */
    rs_err e = RS_ERR(out[0], "harvest stopped: rank %d failed (its error is printed above)", out[2]);
    rs_err_mark_remote(); /* the scheduler reports the failing rank's own message, not this one */
    return e;
}

static void agree_start(agreements *g, rs_err my_err, int stop, int rank, int flush, int64_t first, int64_t last,
                        MPI_Comm comm) {
    agreement *x = &g->a[(g->head + g->n) % (AGREE_LAG + 1)];
    x->in[0] = my_err;
    x->in[1] = stop;
    x->in[2] = my_err ? rank : -1;
    x->in[3] = flush;
    x->first = first;
    x->last = last;
    MPI_Iallreduce(x->in, x->out, 4, MPI_INT, MPI_MAX, comm, &x->req);
    g->n++;
}

static void agree_wait_oldest(agreement *done, agreements *g) {
    agreement *x = &g->a[g->head];
    MPI_Wait(&x->req, MPI_STATUS_IGNORE);
    *done = *x;
    g->head = (g->head + 1) % (AGREE_LAG + 1);
    g->n--;
}

/* Complete every outstanding agreement. *sum: out[0], out[2] and first of the earliest round in
 * which a rank failed (from prev too, if given), out[1] any stop, last of the newest round. */
static void agree_settle(agreement *sum, agreements *g, const agreement *prev) {
    agreement acc = {.out = {0, 0, -1, 0}};
    if (prev) acc = *prev;
    while (g->n) {
        agreement x;
        agree_wait_oldest(&x, g);
        if (!acc.out[0] && x.out[0]) {
            acc.out[0] = x.out[0];
            acc.out[2] = x.out[2];
            acc.first = x.first;
        }
        acc.out[1] |= x.out[1];
        acc.last = x.last;
    }
    *sum = acc;
}

/* ------------------------------------------------------------------------------------------------
 * the batch loop
 * ---------------------------------------------------------------------------------------------- */

/* Round r: this rank's batches of it, then the round's agreement is started and the one AGREE_LAG
 * rounds old completed; a checkpoint when a completed agreement asks for one (or for a stop), or
 * after every round when flush_seconds <= 0. A nonzero return (the same on every rank) ends the
 * loop: a failed round, a failed checkpoint or a stop request. Collective. */
static rs_err harvest_round(harvest_run *h, int64_t r) {
    const rs_harvest_config *cfg = h->cfg;
    const int64_t per_global_round = (int64_t)h->size * h->per_round;
    const int64_t first = r * per_global_round;
    const int64_t last = first + per_global_round < h->n_todo ? first + per_global_round : h->n_todo;
    const int every_round = cfg->flush_seconds <= 0; /* the same on every rank: checkpoint after each round */
    if (r == 1) rs_test_hold("harvest", cfg->stop); /* after the first round's batches (RESAE_TEST_HOLD) */
    for (int j = 0; j < h->per_round && !h->my_err; j++) {
        int64_t k = first + (int64_t)j * h->size + h->rank;
        if (k >= h->n_todo) break;
        h->my_err = run_batch(h, h->todo[k]);
    }
    /* every rank reaches this point each round, with or without a batch; rank 0's clock decides
     * when to checkpoint, so that all ranks agree */
    double t_sync = rs_now();
    agree_start(&h->ag, h->my_err, cfg->stop ? (int)*cfg->stop : 0, h->rank,
                h->rank == 0 && t_sync - h->t_flush >= cfg->flush_seconds, first, last, h->comm);
    agreement prev = {.out = {0, 0, -1, 0}};
    if (h->ag.n > AGREE_LAG) agree_wait_oldest(&prev, &h->ag);
    agreement settled = {.out = {0, 0, -1, 0}};
    if (prev.out[0] || prev.out[1] || prev.out[3] || every_round) agree_settle(&settled, &h->ag, &prev);
    double t_waited = rs_now();
    h->stats.wait_s += t_waited - t_sync;
    /* a rank failed in round settled.first: keep the rounds before it */
    if (settled.out[0]) return failed_round(h, settled.first, settled.out);
    if (!prev.out[1] && !prev.out[3] && !every_round) return RS_OK;
    rs_err err = checkpoint(h, last);
    h->t_flush = rs_now();
    h->stats.flush_s += h->t_flush - t_waited;
    RS_TRY(err);
    rs_progress_update(&h->prog, (double)h->stats.tokens_run);
    if (settled.out[1] && h->pending < h->n_todo) {
        RS_INFO("harvest: stop requested; %lld of %lld batches done, the next run continues",
                (long long)(h->stats.batches_skipped + h->stats.batches_run), (long long)h->total);
        RS_FAIL(RS_ERR_INTERRUPTED, "harvest interrupted by a signal after a checkpoint; run the same command again");
    }
    return RS_OK;
}

/* Complete the outstanding agreements, then the final checkpoint (err: the loop's outcome, the same
 * on every rank, so after a failed flush every rank is here with the same agreements outstanding).
 * Collective. */
static rs_err harvest_drain(harvest_run *h, rs_err err) {
    if (!h->ag.n) return err;
    double t_sync = rs_now();
    agreement settled = {.out = {0, 0, -1, 0}};
    agree_settle(&settled, &h->ag, NULL);
    double t_waited = rs_now();
    h->stats.wait_s += t_waited - t_sync;
    if (!err && settled.out[0]) err = failed_round(h, settled.first, settled.out);
    if (!err && h->pending < settled.last) {
        err = checkpoint(h, settled.last);
        h->stats.flush_s += rs_now() - t_waited;
    }
    return err;
}

static void report_ranks(const harvest_run *h) {
    enum { NV = 7 };
    const rs_harvest_stats *stats = &h->stats;
    double mine[NV] = {(double)stats->my_batches, stats->produce_s, stats->pack_s, stats->io_s,
                       stats->wait_s,             stats->flush_s,   stats->loop_s};
    double *all = h->rank == 0 ? malloc((size_t)h->size * NV * sizeof *all) : NULL;
    MPI_Gather(mine, NV, MPI_DOUBLE, all, NV, MPI_DOUBLE, 0, h->comm);
    if (h->rank != 0 || !all) return;
    double busy_max = 0, busy_sum = 0;
    for (int r = 0; r < h->size; r++) {
        double *v = all + NV * r;
        double busy = v[1] + v[2] + v[3];
        busy_max = busy > busy_max ? busy : busy_max;
        busy_sum += busy;
        double store = v[2] + v[3] + v[5];
        RS_INFO("harvest rank %d: %.0f batches in %.2fs: produce %.2fs, store %.2fs (%.1f%%: check+pack+stats %.2fs, "
                "write %.2fs, flush+journal %.2fs), waiting for other ranks %.2fs",
                r, v[0], v[6], v[1], store, v[6] > 0 ? 100.0 * store / v[6] : 0.0, v[2], v[3], v[5], v[4]);
    }
    if (busy_sum > 0)
        RS_INFO("harvest balance: busiest rank %.2fs, mean %.2fs (max/mean %.2f)", busy_max, busy_sum / h->size,
                busy_max / (busy_sum / h->size));
    free(all);
}

/* After a loop without error: the per-rank report, the statistics summed (rs_actstore_finalize)
 * and the journal's "complete" line. Collective. */
static rs_err harvest_finish(harvest_run *h) {
    rs_harvest_stats *stats = &h->stats;
    rs_progress_update(&h->prog, (double)stats->tokens_run);
    rs_progress_finish(&h->prog);
    report_ranks(h);
    double t_fin = rs_now();
    RS_TRY(rs_actstore_finalize(&h->st));
    rs_err err = rs_agree(h->rank == 0 ? journal_complete(&h->jr) : RS_OK, h->comm, "completing the harvest journal");
    stats->finalize_s = rs_now() - t_fin;
    if (err) return err;
    double s = stats->seconds + stats->finalize_s;
    RS_INFO("harvest: %s complete; %lld tok in %.2fs including the statistics and the last flush (finalize %.2fs): "
            "%.1f tok/s", h->store_path, (long long)stats->tokens_run, s, stats->finalize_s,
            s > 0 ? (double)stats->tokens_run / s : 0.0);
    return RS_OK;
}

/* Each rank starts the round's agreement (errors, stop request, rank 0's flush decision) without
 * waiting and completes it AGREE_LAG rounds later: ranks wait for each other only when one falls
 * that many rounds behind, so the slowdowns of different ranks (other work on shared cores)
 * overlap instead of adding up. When a completed agreement asks for a checkpoint (or a stop), the
 * ranks complete every outstanding agreement, flush and journal every batch written so far: the
 * journal only records rounds that an agreement found free of errors. */
rs_err rs_harvest_run(rs_harvest_stats *stats_out, const rs_harvest_config *cfg, const rs_splits *splits,
                      rs_harvest_produce_fn produce, void *ctx, MPI_Comm comm) {
    harvest_run h;
    int complete = 0;
    rs_err err = harvest_open(&h, &complete, cfg, splits, produce, ctx, comm);
    if (!err && !complete) {
        const int64_t per_global_round = (int64_t)h.size * h.per_round;
        const int64_t n_rounds = (h.n_todo + per_global_round - 1) / per_global_round;
        double t_loop = rs_now();
        h.t_flush = t_loop;
        for (int64_t r = 0; r < n_rounds && !err; r++) err = harvest_round(&h, r);
        err = harvest_drain(&h, err);
        h.stats.seconds = rs_now() - t_loop;
        h.stats.loop_s = h.stats.seconds;
        h.stats.pack_s = h.st.pack_s;
        h.stats.io_s = h.st.io_s;
        if (!err) err = harvest_finish(&h);
    }
    if (stats_out) *stats_out = h.stats;
    harvest_close(&h);
    return err;
}
