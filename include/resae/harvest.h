/* Harvest: run a producer (the model forward with capture hooks) over every split and write the
 * residual streams into the activation store. The only stage that runs the model over the training
 * data; everything after it reads the store.
 *
 * Work unit: a global batch of batch_seqs consecutive sequences of one split (fixed boundaries in
 * split order, so the values never depend on the rank count). The batches not yet done are dealt
 * round-robin over the ranks, batches_per_round per rank per round. Each batch is checked, packed
 * and written by its rank alone (rs_actstore_pack_layer, as the producer puts each layer, and
 * rs_actstore_write_packed: independent I/O, write-back to disk started at once). At the end of a
 * round every rank starts a non-blocking agreement (errors, stop request, rank 0's flush decision)
 * and completes it up to 4 rounds later, so ranks wait for each other only when one falls that far
 * behind. A checkpoint (after every round when flush_seconds <= 0; else once an agreement reports
 * that rank 0 saw flush_seconds pass since the previous checkpoint; also on a stop request)
 * completes every outstanding agreement, then the ranks flush the store collectively (durable
 * data), then rank 0 appends the ids of the batches
 * written since the last checkpoint to <run_dir>/harvest.journal and fsyncs it: a batch is recorded
 * only after its data is durable and an agreement found its round free of errors. A restart skips
 * the recorded batches, so a harvest killed at any instant and restarted ends with a store
 * identical to an uninterrupted run. When all batches are done the per-batch statistics are summed
 * (rs_actstore_finalize) and the journal gets its "complete" line.
 *
 * Journal format (text, one record per line; a torn last line is dropped on restart):
 *   resae-harvest-journal 1 <identity hash, 16 hex digits>
 *   done <split name> <batch index>
 *   complete */
#ifndef RESAE_HARVEST_H
#define RESAE_HARVEST_H

#include <mpi.h>
#include <signal.h>
#include <stdint.h>

#include "resae/actstore.h"
#include "resae/err.h"
#include "resae/splits.h"

#define RS_HARVEST_JOURNAL "harvest.journal"

/* What the producer must compute for one batch. */
typedef struct rs_harvest_batch {
    enum rs_split_id split;
    int64_t batch;           /* batch index within the split */
    const int32_t *seq_ids;  /* (n_seq) sequence ids in the token data, ascending */
    int n_seq;
    int T;                   /* positions per sequence (all of them, position 0 included) */
    int n_layers;
    const int *layers;       /* (n_layers) model layers; -1 = embedding output */
    int d;
    /* Instead of filling out[i], a producer may hand layer i's stream h (n_seq*T, d, laid out like
     * out[i], only read during the call) to put(put_ctx, i, h) as soon as it exists: the driver
     * checks, packs and sums it at once, while it is still in cache, and out[i] is not read. A
     * nonzero return (RS_ERR_NUMERIC for a value that cannot be stored) must be returned by the
     * producer. */
    rs_err (*put)(void *put_ctx, int i, const float *h);
    void *put_ctx;
} rs_harvest_batch;

/* Fill out[i] (n_seq*T, d), row s*T + t, with the residual stream after layers[i] at position t of
 * sequence seq_ids[s] (or hand it to b->put). The buffers belong to the driver (allocated once,
 * sized for a full batch). A model forward over the batch's tokens that stops after the last
 * needed block and whose capture hook passes the stream after each needed block (and the
 * embedding output for -1) to put is a producer; ctx carries the model and the token data. */
typedef rs_err (*rs_harvest_produce_fn)(void *ctx, float *const *out, const rs_harvest_batch *b);

typedef struct rs_harvest_config {
    const char *run_dir;        /* created if missing; holds activations.h5 and harvest.journal */
    rs_actstore_identity id;    /* model/data identity, layers, d, dtype, batch_seqs, chunk_rows;
                                   the split fields are filled from the splits */
    int batches_per_round;      /* per rank per round (>= 1) */
    double flush_seconds;       /* checkpoint (flush + journal) about this often (0: after every
                                   round); bounds the work a kill loses */
    int force;                  /* recreate a store whose identity differs */
    volatile sig_atomic_t *stop; /* optional: nonzero asks for a clean stop at the next round */
} rs_harvest_config;

typedef struct rs_harvest_stats {
    int64_t batches_total;    /* all splits */
    int64_t batches_skipped;  /* already done before this run */
    int64_t batches_run;      /* by every rank in this run */
    int64_t tokens_run;       /* stored rows per layer written in this run, all ranks */
    double seconds;           /* wall time of the batch loop (with the last checkpoint) */
    double finalize_s;        /* summing the statistics, the final flushes and the journal's last line */
    /* this rank */
    int64_t my_batches;
    double loop_s;            /* = seconds */
    double produce_s;         /* the producer (the model forward with its capture copies) */
    double pack_s;            /* checking, packing/converting and summing the batch statistics */
    double io_s;              /* the store's writes (HDF5 independent writes, starting write-back) */
    double wait_s;            /* waiting for the other ranks' round agreements */
    double flush_s;           /* checkpoints: collective flushes and the journal */
} rs_harvest_stats;

/* Content hashes for the store's identity (FNV-1a 64 over the bytes, streamed).
 * rs_harvest_hash_file: one file. rs_harvest_hash_model_dir: config.json, then every *.json and
 * *.safetensors file of the directory in name order (names and contents), so a changed weight,
 * shard or config changes the hash and a moved directory does not. */
rs_err rs_harvest_hash_file(uint64_t *out, const char *path);
rs_err rs_harvest_hash_model_dir(uint64_t *out, const char *dir);

/* Run or resume the harvest. Collective over comm. Returns RS_ERR_INTERRUPTED (after a clean
 * checkpoint) when *cfg->stop became nonzero. stats may be NULL. */
rs_err rs_harvest_run(rs_harvest_stats *stats, const rs_harvest_config *cfg, const rs_splits *splits,
                      rs_harvest_produce_fn produce, void *ctx, MPI_Comm comm);

#endif
