/* Harvest driver: batches -> producer -> activation store, resumable through a journal. */
#include "resae/harvest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/util.h"

#define JOURNAL_MAGIC "resae-harvest-journal"
#define JOURNAL_VERSION 1

enum { JOURNAL_MISSING = 0, JOURNAL_OK = 1, JOURNAL_STALE = 2 };

/* The global batch list: split s owns indices [off[s], off[s] + n_batches[s]). */
typedef struct batch_map {
    int64_t off[RS_SPLIT_COUNT + 1];
} batch_map;

static void global_to_local(int *split, int64_t *batch, const batch_map *m, int64_t g) {
    int s = 0;
    while (s + 1 < RS_SPLIT_COUNT && g >= m->off[s + 1]) s++;
    *split = s;
    *batch = g - m->off[s];
}

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
    snprintf(path, sizeof path, "%s/config.json", dir);
    RS_TRY_GOTO(hash_stream(&h, path), done);
    for (size_t i = 0; i < n; i++) {
        h = rs_hash64(h, names[i], strlen(names[i]) + 1);
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
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
 * journal (rank 0 only)
 * ---------------------------------------------------------------------------------------------- */

static rs_err fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY);
    if (fd < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    int e = fsync(fd);
    close(fd);
    if (e) RS_FAIL(RS_ERR_IO, "%s: fsync failed: %s", dir, strerror(errno));
    return RS_OK;
}

/* Read the journal into done (total entries); *status tells whether it exists and matches the
 * identity hash. A torn last line (a write cut by a kill) is cut off the file. */
static rs_err journal_read(int *status, int *complete, unsigned char *done, const char *path, uint64_t ident,
                           const batch_map *m) {
    *status = JOURNAL_MISSING;
    *complete = 0;
    struct stat sb;
    if (stat(path, &sb)) {
        if (errno == ENOENT) return RS_OK;
        RS_FAIL(RS_ERR_IO, "%s: %s", path, strerror(errno));
    }
    char *text = NULL;
    size_t len = 0;
    RS_TRY(rs_read_file(&text, &len, path, (size_t)1 << 32));
    size_t keep = len;
    while (keep > 0 && text[keep - 1] != '\n') keep--;
    if (keep != len) {
        RS_WARN("%s: dropping a torn last record (%zu bytes)", path, len - keep);
        if (truncate(path, (off_t)keep)) {
            free(text);
            RS_FAIL(RS_ERR_IO, "%s: cannot truncate a torn record: %s", path, strerror(errno));
        }
        text[keep] = '\0';
    }
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    char magic[64];
    int version = 0;
    unsigned long long h = 0;
    if (!line || sscanf(line, "%63s %d %16llx", magic, &version, &h) != 3 || strcmp(magic, JOURNAL_MAGIC) ||
        version != JOURNAL_VERSION || (uint64_t)h != ident) {
        free(text);
        *status = JOURNAL_STALE;
        return RS_OK;
    }
    int lineno = 1;
    while ((line = strtok_r(NULL, "\n", &save))) {
        lineno++;
        char sname[16];
        long long b = -1;
        if (!strcmp(line, "complete")) {
            *complete = 1;
            continue;
        }
        int s = -1;
        if (sscanf(line, "done %15s %lld", sname, &b) == 2) s = rs_split_from_name(sname);
        if (s < 0 || b < 0 || b >= m->off[s + 1] - m->off[s]) {
            free(text);
            RS_FAIL(RS_ERR_FORMAT,
                    "%s: line %d ('%s') is not a valid record: the journal is damaged. Delete the run directory "
                    "(or use a new run_dir) to harvest again",
                    path, lineno, line);
        }
        done[m->off[s] + b] = 1;
    }
    free(text);
    *status = JOURNAL_OK;
    return RS_OK;
}

/* Start a fresh journal atomically (temp file, fsync, rename, fsync of the directory). */
static rs_err journal_reset(const char *path, const char *dir, uint64_t ident) {
    char tmp[RS_ACTSTORE_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    char head[128];
    int n = snprintf(head, sizeof head, "%s %d %016" PRIx64 "\n", JOURNAL_MAGIC, JOURNAL_VERSION, ident);
    int bad = write(fd, head, (size_t)n) != n || fsync(fd);
    close(fd);
    if (bad || rename(tmp, path)) RS_FAIL(RS_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    RS_TRY(fsync_dir(dir));
    return RS_OK;
}

static rs_err journal_append(int fd, const char *path, const char *text, size_t n) {
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) RS_FAIL(RS_ERR_IO, "%s: append failed: %s", path, strerror(errno));
        off += (size_t)w;
    }
    if (fsync(fd)) RS_FAIL(RS_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    return RS_OK;
}

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

static rs_err run_batch(rs_harvest_stats *stats, rs_actstore *st, float *const *bufs, const rs_splits *splits,
                        int split, int64_t batch, rs_harvest_produce_fn produce, void *ctx) {
    const rs_actstore_identity *id = &st->id;
    const rs_split *sp = &splits->split[split];
    int64_t s0 = batch * id->batch_seqs;
    int n_seq = (int)(sp->n_seq - s0 < id->batch_seqs ? sp->n_seq - s0 : id->batch_seqs);
    put_ctx pc;
    memset(&pc, 0, sizeof pc);
    pc.st = st;
    pc.bufs = bufs;
    pc.n_seq = n_seq;
    rs_harvest_batch b = {.split = split, .batch = batch, .seq_ids = sp->seq_ids + s0, .n_seq = n_seq,
                          .T = id->T, .n_layers = id->n_layers, .layers = id->layers, .d = id->d,
                          .put = put_layer, .put_ctx = &pc};
    double t0 = rs_now(), pack0 = st->pack_s;
    rs_err err = produce(ctx, bufs, &b);
    /* the packing inside the producer's puts is the store's time, not the producer's */
    stats->produce_s += rs_now() - t0 - (st->pack_s - pack0);
    /* the layers not put are checked, packed and summed in place; nothing is written unless every
     * layer is valid */
    for (int i = 0; !err && i < id->n_layers; i++)
        if (!pc.put[i]) {
            err = rs_actstore_pack_layer(st, &pc.bad, i, bufs[i], bufs[i], n_seq);
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
    RS_TRY(rs_actstore_write_packed(st, split, batch, (const void *const *)bufs, n_seq));
    stats->my_batches++;
    return RS_OK;
}

/* ------------------------------------------------------------------------------------------------
 * driver
 * ---------------------------------------------------------------------------------------------- */

static void report_ranks(const rs_harvest_stats *stats, MPI_Comm comm, int rank, int size) {
    enum { NV = 7 };
    double mine[NV] = {(double)stats->my_batches, stats->produce_s, stats->pack_s, stats->io_s,
                       stats->wait_s,             stats->flush_s,   stats->loop_s};
    double *all = rank == 0 ? malloc((size_t)size * NV * sizeof *all) : NULL;
    MPI_Gather(mine, NV, MPI_DOUBLE, all, NV, MPI_DOUBLE, 0, comm);
    if (rank != 0 || !all) return;
    double busy_max = 0, busy_sum = 0;
    for (int r = 0; r < size; r++) {
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
        RS_INFO("harvest balance: busiest rank %.2fs, mean %.2fs (max/mean %.2f)", busy_max, busy_sum / size,
                busy_max / (busy_sum / size));
    free(all);
}

/* Flush the store on every rank, then record todo[*pending, upto) in the journal (rank 0). */
static rs_err checkpoint(rs_harvest_stats *stats, rs_actstore *st, int jfd, const char *jpath, char *jbuf,
                         const int64_t *todo, const batch_map *map, int64_t *pending, int64_t upto, MPI_Comm comm,
                         int rank) {
    rs_err err = rs_actstore_flush(st);
    if (rs_mpi_agree(err, comm)) {
        if (!err) RS_FAIL(RS_ERR_IO, "harvest: flush failed on another rank");
        return err;
    }
    /* the data since the last flush is durable: record it */
    if (rank == 0) {
        size_t used = 0;
        for (int64_t k = *pending; k < upto; k++) {
            int s;
            int64_t b;
            global_to_local(&s, &b, map, todo[k]);
            used += (size_t)sprintf(jbuf + used, "done %s %lld\n", rs_split_name(s), (long long)b);
        }
        err = journal_append(jfd, jpath, jbuf, used);
    }
    if (rs_mpi_agree(err, comm)) {
        if (!err) RS_FAIL(RS_ERR_IO, "harvest: rank 0 could not append to the journal");
        return err;
    }
    for (int64_t k = *pending; k < upto; k++) {
        int s;
        int64_t b, r0, nr;
        global_to_local(&s, &b, map, todo[k]);
        rs_actstore_batch_rows(&r0, &nr, st, s, b);
        stats->tokens_run += nr;
    }
    stats->batches_run += upto - *pending;
    *pending = upto;
    return RS_OK;
}

/* A rank failed in the round starting at todo index first (agreed: out[0] its code, out[2] its
 * rank): keep the rounds before it, whose agreements found no error, then return the failure. */
static rs_err failed_round(rs_harvest_stats *stats, rs_actstore *st, int jfd, const char *jpath, char *jbuf,
                           const int64_t *todo, const batch_map *map, int64_t *pending, int64_t first, MPI_Comm comm,
                           int rank, rs_err my_err, const int *out) {
    if (*pending < first) RS_TRY(checkpoint(stats, st, jfd, jpath, jbuf, todo, map, pending, first, comm, rank));
    if (my_err) return my_err; /* its message is still the current one */
    RS_FAIL(out[0], "harvest stopped: rank %d failed (its error is printed above)", out[2]);
}

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

rs_err rs_harvest_run(rs_harvest_stats *stats_out, const rs_harvest_config *cfg, const rs_splits *splits,
                      rs_harvest_produce_fn produce, void *ctx, MPI_Comm comm) {
    rs_err err = RS_OK;
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    rs_harvest_stats stats;
    memset(&stats, 0, sizeof stats);
    rs_actstore st;
    memset(&st, 0, sizeof st);
    unsigned char *done = NULL;
    int64_t *todo = NULL;
    float **bufs = NULL;
    int jfd = -1;

    rs_actstore_identity id = cfg->id;
    rs_actstore_identity_set_splits(&id, splits);
    /* the same on every rank (same config), so every rank returns here or none does */
    RS_TRY(rs_actstore_identity_check(&id));
    const int per_round = cfg->batches_per_round > 0 ? cfg->batches_per_round : 1;
    const uint64_t ident = rs_actstore_identity_hash(&id);

    char store_path[RS_ACTSTORE_PATH_MAX], jpath[RS_ACTSTORE_PATH_MAX];
    if (snprintf(store_path, sizeof store_path, "%s/%s", cfg->run_dir, RS_ACTSTORE_FILE) >= (int)sizeof store_path ||
        snprintf(jpath, sizeof jpath, "%s/%s", cfg->run_dir, RS_HARVEST_JOURNAL) >= (int)sizeof jpath)
        RS_FAIL(RS_ERR_CONFIG, "harvest: run directory path '%s' is too long", cfg->run_dir);

    batch_map map;
    map.off[0] = 0;
    for (int s = 0; s < RS_SPLIT_COUNT; s++)
        map.off[s + 1] = map.off[s] + (splits->split[s].n_seq + id.batch_seqs - 1) / id.batch_seqs;
    const int64_t total = map.off[RS_SPLIT_COUNT];
    stats.batches_total = total;
    done = calloc((size_t)(total ? total : 1), 1);
    if (rs_mpi_agree(done ? RS_OK : RS_ERR_NOMEM, comm))
        RS_FAIL_GOTO(out, RS_ERR_NOMEM, "harvest: out of memory for %lld batch flags", (long long)total);

    /* rank 0 inspects the run directory and the journal; everyone learns the outcome */
    int jstatus = JOURNAL_MISSING, jcomplete = 0;
    if (rank == 0) {
        if (mkdir(cfg->run_dir, 0755) && errno != EEXIST)
            err = rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "%s: cannot create the run directory: %s",
                             cfg->run_dir, strerror(errno));
        if (!err) err = journal_read(&jstatus, &jcomplete, done, jpath, ident, &map);
    }
    if (rs_mpi_agree(err, comm)) {
        if (!err) RS_FAIL_GOTO(out, RS_ERR_IO, "harvest: rank 0 could not read the run directory");
        goto out;
    }
    int jinfo[2] = {jstatus, jcomplete};
    MPI_Bcast(jinfo, 2, MPI_INT, 0, comm);
    jstatus = jinfo[0];
    jcomplete = jinfo[1];

    int created = 0;
    err = rs_actstore_open_or_create(&st, &created, store_path, &id, splits, cfg->force, jstatus == JOURNAL_OK, comm);
    if (rs_mpi_agree(err, comm)) {
        if (!err) RS_FAIL_GOTO(out, RS_ERR_IO, "harvest: opening the store failed on another rank");
        goto out;
    }
    if (created) {
        memset(done, 0, (size_t)(total ? total : 1));
        jcomplete = 0;
        if (rank == 0) err = journal_reset(jpath, cfg->run_dir, ident);
        if (rs_mpi_agree(err, comm)) {
            if (!err) RS_FAIL_GOTO(out, RS_ERR_IO, "harvest: rank 0 could not start the journal");
            goto out;
        }
        RS_INFO("harvest: new store %s (%lld batches of %d sequences)", store_path, (long long)total, id.batch_seqs);
    }
    MPI_Bcast(done, (int)(total ? total : 1), MPI_UNSIGNED_CHAR, 0, comm);

    int64_t n_todo = 0;
    for (int64_t g = 0; g < total; g++) n_todo += !done[g];
    stats.batches_skipped = total - n_todo;
    if (!created && stats.batches_skipped)
        RS_INFO("harvest: resuming, %lld of %lld batches already done", (long long)stats.batches_skipped,
                (long long)total);
    if (jcomplete && n_todo == 0 && rs_actstore_is_complete(&st)) {
        RS_INFO("harvest: %s is complete", store_path);
        goto out;
    }
    /* allocations agree across ranks: the store is open, so nobody may leave alone */
    todo = malloc((size_t)(n_todo ? n_todo : 1) * sizeof *todo);
    bufs = calloc((size_t)id.n_layers, sizeof *bufs);
    int alloc_ok = todo && bufs;
    for (int i = 0; alloc_ok && i < id.n_layers; i++) {
        bufs[i] = rs_calloc_aligned((size_t)id.batch_seqs * id.T * id.d, sizeof(float));
        alloc_ok = bufs[i] != NULL;
    }
    if (rs_mpi_agree(alloc_ok ? RS_OK : RS_ERR_NOMEM, comm))
        RS_FAIL_GOTO(out, RS_ERR_NOMEM, "harvest: out of memory for a batch of %d x %d x %d floats per layer (%d layers)",
                     id.batch_seqs, id.T, id.d, id.n_layers);
    int64_t tokens_todo = 0;
    for (int64_t g = 0, k = 0; g < total; g++)
        if (!done[g]) {
            todo[k++] = g;
            int s;
            int64_t b, r0, nr;
            global_to_local(&s, &b, &map, g);
            rs_actstore_batch_rows(&r0, &nr, &st, s, b);
            tokens_todo += nr;
        }

    if (rank == 0) {
        jfd = open(jpath, O_WRONLY | O_APPEND);
        if (jfd < 0) err = rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "%s: %s", jpath, strerror(errno));
    }
    if (rs_mpi_agree(err, comm)) {
        if (!err) RS_FAIL_GOTO(out, RS_ERR_IO, "harvest: rank 0 could not open the journal");
        goto out;
    }

    rs_progress prog;
    rs_progress_init(&prog, "harvest", (double)tokens_todo, "tok", rank == 0);
    const int64_t per_global_round = (int64_t)size * per_round;
    const int64_t n_rounds = (n_todo + per_global_round - 1) / per_global_round;
    char *jbuf = rank == 0 ? malloc((size_t)n_todo * 48 + 16) : NULL;
    if (rs_mpi_agree(rank == 0 && !jbuf ? RS_ERR_NOMEM : RS_OK, comm)) {
        free(jbuf);
        RS_FAIL_GOTO(out, RS_ERR_NOMEM, "harvest: out of memory for the journal buffer");
    }
    /* Each rank starts the round's agreement (errors, stop request, rank 0's flush decision) without
     * waiting and completes it AGREE_LAG rounds later: ranks wait for each other only when one falls
     * that many rounds behind, so the slowdowns of different ranks (other work on shared cores)
     * overlap instead of adding up. When a completed agreement asks for a checkpoint (or a stop),
     * the ranks complete every outstanding agreement, flush and journal every batch written so
     * far: the journal only records rounds that an agreement found free of errors. */
    double t_loop = rs_now();
    int64_t pending = 0; /* first todo index not yet journaled */
    double t_flush = rs_now();
    agreements ag;
    memset(&ag, 0, sizeof ag);
    rs_err my_err = RS_OK; /* once a rank failed it runs no more batches, only the collectives */
    const int every_round = cfg->flush_seconds <= 0; /* the same on every rank: checkpoint after each round */
    for (int64_t r = 0; r < n_rounds && !err; r++) {
        const int64_t first = r * per_global_round;
        const int64_t last = first + per_global_round < n_todo ? first + per_global_round : n_todo;
        for (int j = 0; j < per_round && !my_err; j++) {
            int64_t k = first + (int64_t)j * size + rank;
            if (k >= n_todo) break;
            int s;
            int64_t b;
            global_to_local(&s, &b, &map, todo[k]);
            my_err = run_batch(&stats, &st, bufs, splits, s, b, produce, ctx);
        }
        /* every rank reaches this point each round, with or without a batch; rank 0's clock decides
         * when to checkpoint, so that all ranks agree */
        double t_sync = rs_now();
        agree_start(&ag, my_err, cfg->stop ? (int)*cfg->stop : 0, rank,
                    rank == 0 && t_sync - t_flush >= cfg->flush_seconds, first, last, comm);
        agreement prev = {.out = {0, 0, -1, 0}};
        if (ag.n > AGREE_LAG) agree_wait_oldest(&prev, &ag);
        agreement settled = {.out = {0, 0, -1, 0}};
        if (prev.out[0] || prev.out[1] || prev.out[3] || every_round) agree_settle(&settled, &ag, &prev);
        double t_waited = rs_now();
        stats.wait_s += t_waited - t_sync;
        if (settled.out[0]) { /* a rank failed in round settled.first: keep the rounds before it */
            err = failed_round(&stats, &st, jfd, jpath, jbuf, todo, &map, &pending, settled.first, comm, rank, my_err,
                               settled.out);
            break;
        }
        if (!prev.out[1] && !prev.out[3] && !every_round) continue;
        err = checkpoint(&stats, &st, jfd, jpath, jbuf, todo, &map, &pending, last, comm, rank);
        t_flush = rs_now();
        stats.flush_s += t_flush - t_waited;
        if (err) break;
        rs_progress_update(&prog, (double)stats.tokens_run);
        if (settled.out[1] && pending < n_todo) {
            RS_INFO("harvest: stop requested; %lld of %lld batches done, the next run continues",
                    (long long)(stats.batches_skipped + stats.batches_run), (long long)total);
            err = rs_err_set(RS_ERR_INTERRUPTED, __FILE__, __LINE__, __func__,
                             "harvest interrupted by a signal after a checkpoint; run the same command again");
            break;
        }
    }
    /* the outstanding agreements, then the final checkpoint; after a failed flush every rank is
     * here with the same agreements outstanding */
    if (ag.n) {
        double t_sync = rs_now();
        agreement settled = {.out = {0, 0, -1, 0}};
        agree_settle(&settled, &ag, NULL);
        double t_waited = rs_now();
        stats.wait_s += t_waited - t_sync;
        if (!err && settled.out[0])
            err = failed_round(&stats, &st, jfd, jpath, jbuf, todo, &map, &pending, settled.first, comm, rank, my_err,
                               settled.out);
        if (!err && pending < settled.last) {
            err = checkpoint(&stats, &st, jfd, jpath, jbuf, todo, &map, &pending, settled.last, comm, rank);
            stats.flush_s += rs_now() - t_waited;
        }
    }
    free(jbuf);
    stats.seconds = rs_now() - t_loop;
    stats.loop_s = stats.seconds;
    stats.pack_s = st.pack_s;
    stats.io_s = st.io_s;
    if (!err) {
        rs_progress_update(&prog, (double)stats.tokens_run);
        rs_progress_finish(&prog);
        report_ranks(&stats, comm, rank, size);
        double t_fin = rs_now();
        RS_TRY_GOTO(rs_actstore_finalize(&st), out);
        if (rank == 0) err = journal_append(jfd, jpath, "complete\n", 9);
        if (rs_mpi_agree(err, comm) && !err)
            err = rs_err_set(RS_ERR_IO, __FILE__, __LINE__, __func__, "harvest: rank 0 could not complete the journal");
        stats.finalize_s = rs_now() - t_fin;
        if (!err)
            RS_INFO("harvest: %s complete; %lld tok in %.2fs including the statistics and the last flush "
                    "(finalize %.2fs): %.1f tok/s",
                    store_path, (long long)stats.tokens_run, stats.seconds + stats.finalize_s, stats.finalize_s,
                    stats.seconds + stats.finalize_s > 0 ? (double)stats.tokens_run / (stats.seconds + stats.finalize_s)
                                                         : 0.0);
    }
out:
    if (jfd >= 0) close(jfd);
    if (bufs)
        for (int i = 0; i < id.n_layers; i++) free(bufs[i]);
    free(bufs);
    free(todo);
    free(done);
    rs_actstore_close(&st);
    if (stats_out) *stats_out = stats;
    return err;
}
