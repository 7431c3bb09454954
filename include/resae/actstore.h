/* The activation store: one parallel HDF5 file per run (<run_dir>/activations.h5), written once
 * by harvest and read by every later stage. Layout, schema version and identity rules are in
 * docs/store.md; in short:
 *
 *   /<split>/L<layer>          (n_rows, d) float32 or float16, chunked (chunk_rows, d);
 *                              layer -1 (the embedding output) is named "Lemb"
 *   /<split>/L<layer>_rowsum   (n_rows) uint64  rs_checksum64 of each stored row, checked on every read
 *                              (absent in stores written before it: their rows are read unchecked)
 *   /<split>/L<layer>_bsum     (n_batches, d) float64  per-batch sums of the stored rows
 *   /<split>/L<layer>_bsqnorm  (n_batches)    float64  per-batch sums of ||h||^2
 *   /<split>/L<layer>_mean     (d) float64    per-dimension mean over the split (at finalize)
 *   /<split>/L<layer>_sqnorm   ()  float64    E||h||^2 over the split (at finalize)
 *   /<split>/seq_ids, /<split>/labels (n_seq) int32
 *   /complete                  () int32       1 once every batch and the statistics are durable
 *
 * Row r of a split holds sequence seq_ids[r / tokens_per_seq] at stored position
 * r % tokens_per_seq (+1 when position 0 is excluded): sequence-major in split order.
 *
 * Every object is created collectively up front with its storage allocated at creation, so
 * writing rows and statistics never changes file metadata: a writer killed at any instant after
 * creation leaves a file that reopens. Row and statistics writes and all reads are independent
 * (per rank); create/open/flush/finalize/close are collective over the store's communicator. */
#ifndef RESAE_ACTSTORE_H
#define RESAE_ACTSTORE_H

#include <hdf5.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "resae/dtype.h"
#include "resae/err.h"
#include "resae/splits.h"

#define RS_ACTSTORE_FILE "activations.h5"
#define RS_ACTSTORE_MAX_LAYERS 128
#define RS_ACTSTORE_PATH_MAX 1024

/* The storage types and their float16 conversions are in resae/dtype.h (included above). */

/* Everything that determines the store's content. Two stores with equal identities hold the same
 * bytes. The paths are provenance only: a changed path with an equal hash is accepted (warned). */
typedef struct rs_actstore_identity {
    int schema_version;                    /* RESAE_SCHEMA_VERSION of the writer */
    char model_path[RS_ACTSTORE_PATH_MAX]; /* checkpoint directory */
    uint64_t model_hash;                   /* hash of the checkpoint (config + weights) */
    char data_path[RS_ACTSTORE_PATH_MAX];  /* token data file */
    uint64_t data_hash;                    /* hash of the token data */
    int64_t n_seq_data;                    /* sequences in the token data */
    int T;                                 /* tokens per sequence in the token data */
    int skip_pos0;                         /* position 0 excluded from the stored rows */
    uint64_t split_seed;
    int64_t budget[RS_SPLIT_COUNT];        /* token budgets as configured (train may be RS_SPLIT_ALL) */
    int n_layers;
    int layers[RS_ACTSTORE_MAX_LAYERS];    /* ascending model layers; -1 = embedding output */
    int d;
    enum rs_dtype dtype;
    int batch_seqs;                        /* sequences per harvest batch (fixes the statistics order) */
    int chunk_rows;                        /* rows per HDF5 chunk */
} rs_actstore_identity;

/* Zeroed identity with schema_version, chunk_rows 1024 and batch_seqs 8 set. */
void rs_actstore_identity_init(rs_actstore_identity *id);
/* Copy seed, budgets, position-0 switch, T and n_seq_data from the splits. */
void rs_actstore_identity_set_splits(rs_actstore_identity *id, const rs_splits *splits);
/* Validate the fields (layers ascending and in range, d > 0, ...). */
rs_err rs_actstore_identity_check(const rs_actstore_identity *id);
/* 0 if the identities agree on everything but the paths; otherwise 1 and a message in msg
 * naming the first field that differs with both values. */
int rs_actstore_identity_diff(char *msg, size_t n, const rs_actstore_identity *have,
                              const rs_actstore_identity *want);
/* Hash of the identity without the paths (the journal records it). */
uint64_t rs_actstore_identity_hash(const rs_actstore_identity *id);
/* Dataset name of a layer: "L6", "Lemb" for -1. */
void rs_actstore_layer_name(char *out, size_t n, int layer);

typedef struct rs_actstore {
    MPI_Comm comm; /* not owned: must outlive the store */
    int rank, size;
    int writable;
    char path[RS_ACTSTORE_PATH_MAX];
    rs_actstore_identity id;
    int tokens_per_seq;
    int64_t n_seq[RS_SPLIT_COUNT], n_rows[RS_SPLIT_COUNT], n_batches[RS_SPLIT_COUNT];
    hid_t file, half_type;
    hid_t grp[RS_SPLIT_COUNT];
    hid_t dset[RS_SPLIT_COUNT][RS_ACTSTORE_MAX_LAYERS];  /* (n_rows, d) */
    hid_t bsum[RS_SPLIT_COUNT][RS_ACTSTORE_MAX_LAYERS];  /* (n_batches, d) */
    hid_t bsqn[RS_SPLIT_COUNT][RS_ACTSTORE_MAX_LAYERS];  /* (n_batches) */
    hid_t mean[RS_SPLIT_COUNT][RS_ACTSTORE_MAX_LAYERS];  /* (d) */
    hid_t sqn[RS_SPLIT_COUNT][RS_ACTSTORE_MAX_LAYERS];   /* () */
    hid_t rsum[RS_SPLIT_COUNT][RS_ACTSTORE_MAX_LAYERS];  /* (n_rows) row checksums; -1 if the store has none */
    hid_t seq_ids[RS_SPLIT_COUNT];
    hid_t complete;
    uint16_t *scratch; /* f16 conversion buffer for writes */
    size_t scratch_n;
    double *stat_buf;  /* (n_layers, 2d + 1) batch statistics of the layers packed for the next write */
    unsigned char packed[RS_ACTSTORE_MAX_LAYERS]; /* layer packed since the last write */
    int packed_n_seq;
    int wb_fd;         /* a plain descriptor of the file for starting write-back early; -1: none */
    double pack_s, io_s; /* seconds spent checking/packing/summing and in the writes (this rank) */
} rs_actstore;

/* Create (truncate) the store at path for this identity and splits. Collective. */
rs_err rs_actstore_create(rs_actstore *st, const char *path, const rs_actstore_identity *id,
                          const rs_splits *splits, MPI_Comm comm);
/* Open an existing store. Collective. Fails with RS_ERR_UNSUPPORTED if the file is not a resae
 * activation store or has another schema version, RS_ERR_FORMAT if it cannot be opened or is
 * incomplete (a creation cut short). */
rs_err rs_actstore_open(rs_actstore *st, const char *path, int writable, MPI_Comm comm);
/* Harvest's entry: open the store at path if it exists with this identity and reuse is nonzero,
 * otherwise (re)create it; *created tells which. An existing store with a different identity is
 * refused (naming the field and the fix) unless force is nonzero; so is a file of another schema
 * version or a file that is not a store. A file that cannot be opened (a creation cut short) is
 * recreated when reuse is zero (nothing was recorded as done). Collective. */
rs_err rs_actstore_open_or_create(rs_actstore *st, int *created, const char *path,
                                  const rs_actstore_identity *id, const rs_splits *splits, int force,
                                  int reuse, MPI_Comm comm);
/* Collective; safe on a zeroed or already closed store. */
void rs_actstore_close(rs_actstore *st);

/* Index of a model layer in id.layers, or -1. */
int rs_actstore_layer_index(const rs_actstore *st, int layer);
/* Rows of one harvest batch: [*row0, *row0 + *n) of the split. */
rs_err rs_actstore_batch_rows(int64_t *row0, int64_t *n, const rs_actstore *st, int split, int64_t batch);

/* Write the rows of one batch (independent). rows (n, d) must be exactly the batch's rows. The
 * batch's statistics are computed from the values as stored (after float16 rounding) and written
 * with them. Values must be finite (and within float16 range for float16 stores). */
rs_err rs_actstore_write_batch(rs_actstore *st, int split, int layer, int64_t batch,
                               const float *rows /* (n, d) */, int64_t n);
/* Where rs_actstore_write_batch_layers found a value it cannot store. */
typedef struct rs_actstore_bad {
    int layer_index;  /* into id.layers */
    int seq;          /* sequence within the batch */
    int pos;          /* position within the sequence (0 .. T-1, position 0 included) */
    int dim;
    float value;
    int out_of_range; /* finite, but it would round to infinity in float16 */
} rs_actstore_bad;

/* Harvest's write: every stored layer of one batch at once, straight from a producer's buffers.
 * bufs[i] (n_seq * T, d) holds layer id.layers[i] at all T positions of the batch's n_seq sequences
 * (n_seq must be the batch's). One pass over each buffer checks every value (finite everywhere,
 * below 65520 in magnitude at the stored positions of a float16 store), packs the stored rows (position 0
 * left out when the store excludes it) to the front of the buffer in the stored type and sums the
 * batch statistics of the stored values; the buffers are overwritten. Only when every layer passed
 * are the rows and statistics written (independent I/O), and write-back of the new data to disk is
 * started without waiting, so that a later flush finds little left to do. A bad value writes
 * nothing and returns RS_ERR_NUMERIC with the first bad value (in layer, sequence, position, dim
 * order) in *bad. The bytes written equal those of rs_actstore_write_batch on the packed rows. */
rs_err rs_actstore_write_batch_layers(rs_actstore *st, rs_actstore_bad *bad, int split, int64_t batch,
                                      float *const *bufs /* (n_layers) of (n_seq*T, d) */, int n_seq);
/* The two halves of rs_actstore_write_batch_layers, for writers that pack each layer as soon as it
 * exists (while it is still in cache). rs_actstore_pack_layer: check, pack and sum layer id.layers[i]
 * of a batch of n_seq sequences, src (n_seq*T, d) -> dst (n_seq*tokens_per_seq, d) in the stored
 * type; dst is src itself (packed in place) or does not overlap it; the statistics stay in the store
 * for the write. RS_ERR_NUMERIC with *bad on a value that cannot be stored. rs_actstore_write_packed:
 * write the packed rows of every layer (packed[i] from rs_actstore_pack_layer for this batch, every
 * layer packed since the last write) and their statistics. */
rs_err rs_actstore_pack_layer(rs_actstore *st, rs_actstore_bad *bad, int i, void *dst, const float *src, int n_seq);
rs_err rs_actstore_write_packed(rs_actstore *st, int split, int64_t batch, const void *const *packed, int n_seq);
/* Make every write so far durable (H5Fflush, which syncs the MPI-IO file). Collective. */
rs_err rs_actstore_flush(rs_actstore *st);
/* Sum the per-batch statistics in batch order, write the means and mean squared norms, make them
 * durable, then mark the store complete and flush again. Collective. */
rs_err rs_actstore_finalize(rs_actstore *st);
int rs_actstore_is_complete(const rs_actstore *st);

/* Read rows [row0, row0 + n) of (split, layer) as float32 (independent; converts float16). */
rs_err rs_actstore_read_rows(const rs_actstore *st, float *dst /* (n, d) */, int split, int layer,
                             int64_t row0, int64_t n);
int64_t rs_actstore_n_rows(const rs_actstore *st, int split);
int rs_actstore_d(const rs_actstore *st);
/* Per-dimension mean (d) and E||h||^2 of (split, layer); the store must be complete. */
rs_err rs_actstore_stats(const rs_actstore *st, double *mean /* (d) or NULL */, double *mean_sqnorm,
                         int split, int layer);
/* Sequence ids of a split (n_seq), read from the store. */
rs_err rs_actstore_read_seq_ids(const rs_actstore *st, int32_t *dst, int split);
/* Per-sequence labels of a split (n_seq); *has = 0 (and dst untouched) when the data had none. */
rs_err rs_actstore_read_labels(const rs_actstore *st, int32_t *dst, int *has, int split);

#endif
