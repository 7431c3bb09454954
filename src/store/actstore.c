/* Activation store on parallel HDF5 (layout: docs/store.md). */
#define _GNU_SOURCE /* sync_file_range */
#include "resae/actstore.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resae/h5util.h"
#include "resae/log.h"
#include "resae/mpi_util.h"
#include "resae/util.h"
#include "resae/version.h"

#define STORE_KIND "resae-activations"

/* ------------------------------------------------------------------------------------------------
 * float16 (the conversions are in core/dtype.c; the AVX statistics kernel below needs these)
 * ---------------------------------------------------------------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RS_HAVE_F16C_PATH 1
#endif

/* ------------------------------------------------------------------------------------------------
 * identity
 * ---------------------------------------------------------------------------------------------- */

void rs_actstore_identity_init(rs_actstore_identity *id) {
    memset(id, 0, sizeof *id);
    id->schema_version = RESAE_SCHEMA_VERSION;
    id->chunk_rows = 1024;
    id->batch_seqs = 8;
    id->dtype = RS_DTYPE_F32;
}

void rs_actstore_identity_set_splits(rs_actstore_identity *id, const rs_splits *splits) {
    id->split_seed = splits->cfg.seed;
    for (int s = 0; s < RS_SPLIT_COUNT; s++) id->budget[s] = splits->cfg.budget[s];
    id->skip_pos0 = splits->cfg.skip_pos0;
    id->T = splits->T;
    id->n_seq_data = splits->n_seq_data;
}

rs_err rs_actstore_identity_check(const rs_actstore_identity *id) {
    if (id->n_layers < 1 || id->n_layers > RS_ACTSTORE_MAX_LAYERS)
        RS_FAIL(RS_ERR_CONFIG, "activation store: %d layers requested; between 1 and %d are supported", id->n_layers,
                RS_ACTSTORE_MAX_LAYERS);
    for (int i = 0; i < id->n_layers; i++) {
        if (id->layers[i] < -1)
            RS_FAIL(RS_ERR_CONFIG, "activation store: layer %d is invalid (-1 is the embedding, 0.. the blocks)",
                    id->layers[i]);
        if (i && id->layers[i] <= id->layers[i - 1])
            RS_FAIL(RS_ERR_CONFIG, "activation store: layers must be ascending without repeats (%d after %d)",
                    id->layers[i], id->layers[i - 1]);
    }
    if (id->d < 1) RS_FAIL(RS_ERR_CONFIG, "activation store: d = %d must be positive", id->d);
    if (id->dtype != RS_DTYPE_F32 && id->dtype != RS_DTYPE_F16)
        RS_FAIL(RS_ERR_CONFIG, "activation store: dtype %d is neither float32 nor float16", id->dtype);
    if (id->batch_seqs < 1) RS_FAIL(RS_ERR_CONFIG, "activation store: batch_seqs = %d must be >= 1", id->batch_seqs);
    if (id->chunk_rows < 1) RS_FAIL(RS_ERR_CONFIG, "activation store: chunk_rows = %d must be >= 1", id->chunk_rows);
    if ((int64_t)id->chunk_rows * id->d * 4 > ((int64_t)1 << 32) - 1)
        RS_FAIL(RS_ERR_CONFIG, "activation store: a chunk of %d rows x %d exceeds HDF5's 4 GiB chunk limit",
                id->chunk_rows, id->d);
    if (id->T < 1 || (id->skip_pos0 && id->T < 2))
        RS_FAIL(RS_ERR_CONFIG, "activation store: sequence length %d is too short", id->T);
    return RS_OK;
}

static void fmt_layers(char *out, size_t n, const rs_actstore_identity *id) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < id->n_layers && used + 16 < n; i++)
        used += (size_t)snprintf(out + used, n - used, "%s%d", i ? "," : "", id->layers[i]);
}

int rs_actstore_identity_diff(char *msg, size_t n, const rs_actstore_identity *a, const rs_actstore_identity *b) {
#define DIFF_INT(field, name, fmt, cast)                                                                \
    if (a->field != b->field) {                                                                        \
        snprintf(msg, n, name " is " fmt " in the store but " fmt " in this run", (cast)a->field, (cast)b->field); \
        return 1;                                                                                      \
    }
    DIFF_INT(schema_version, "schema_version", "%d", int)
    if (a->model_hash != b->model_hash) {
        snprintf(msg, n, "model_hash is %016" PRIx64 " (model %s) in the store but %016" PRIx64 " (model %s) in this run",
                 a->model_hash, a->model_path, b->model_hash, b->model_path);
        return 1;
    }
    if (a->data_hash != b->data_hash) {
        snprintf(msg, n, "data_hash is %016" PRIx64 " (tokens %s) in the store but %016" PRIx64 " (tokens %s) in this run",
                 a->data_hash, a->data_path, b->data_hash, b->data_path);
        return 1;
    }
    DIFF_INT(n_seq_data, "n_seq_data", "%lld", long long)
    DIFF_INT(T, "seq_len", "%d", int)
    DIFF_INT(skip_pos0, "skip_pos0", "%d", int)
    DIFF_INT(split_seed, "split_seed", "%llu", unsigned long long)
    DIFF_INT(budget[RS_SPLIT_CALIB], "budget_calib", "%lld", long long)
    DIFF_INT(budget[RS_SPLIT_TRAIN], "budget_train", "%lld", long long)
    DIFF_INT(budget[RS_SPLIT_EVAL], "budget_eval", "%lld", long long)
    int same_layers = a->n_layers == b->n_layers;
    for (int i = 0; same_layers && i < a->n_layers; i++) same_layers = a->layers[i] == b->layers[i];
    if (!same_layers) {
        char la[512], lb[512];
        fmt_layers(la, sizeof la, a);
        fmt_layers(lb, sizeof lb, b);
        snprintf(msg, n, "layers are [%s] in the store but [%s] in this run", la, lb);
        return 1;
    }
    DIFF_INT(d, "d", "%d", int)
    if (a->dtype != b->dtype) {
        snprintf(msg, n, "dtype is %s in the store but %s in this run", rs_dtype_name(a->dtype), rs_dtype_name(b->dtype));
        return 1;
    }
    DIFF_INT(batch_seqs, "batch_seqs", "%d", int)
    DIFF_INT(chunk_rows, "chunk_rows", "%d", int)
#undef DIFF_INT
    return 0;
}

uint64_t rs_actstore_identity_hash(const rs_actstore_identity *id) {
    uint64_t h = RS_HASH64_INIT;
#define H(x) h = rs_hash64(h, &(x), sizeof(x))
    H(id->schema_version);
    H(id->model_hash);
    H(id->data_hash);
    H(id->n_seq_data);
    H(id->T);
    H(id->skip_pos0);
    H(id->split_seed);
    H(id->budget);
    H(id->n_layers);
    h = rs_hash64(h, id->layers, (size_t)id->n_layers * sizeof id->layers[0]);
    H(id->d);
    H(id->dtype);
    H(id->batch_seqs);
    H(id->chunk_rows);
#undef H
    return h;
}

void rs_actstore_layer_name(char *out, size_t n, int layer) {
    if (layer == -1) snprintf(out, n, "Lemb");
    else snprintf(out, n, "L%d", layer);
}

/* ------------------------------------------------------------------------------------------------
 * HDF5 objects (datasets, attributes and row ranges go through resae/h5util.h)
 * ---------------------------------------------------------------------------------------------- */

static hid_t fapl_mpio(MPI_Comm comm) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    return fapl;
}

static void store_reset(rs_actstore *st) {
    memset(st, 0, sizeof *st);
    st->wb_fd = -1;
    st->file = st->half_type = -1;
    st->complete = -1;
    for (int s = 0; s < RS_SPLIT_COUNT; s++) {
        st->grp[s] = st->seq_ids[s] = -1;
        for (int i = 0; i < RS_ACTSTORE_MAX_LAYERS; i++)
            st->dset[s][i] = st->bsum[s][i] = st->bsqn[s][i] = st->mean[s][i] = st->sqn[s][i] = st->rsum[s][i] = -1;
    }
}

/* The checksums of n stored rows of row_bytes each. */
static void row_checksums(uint64_t *out, const void *rows, int64_t n, size_t row_bytes) {
    const unsigned char *p = rows;
    for (int64_t r = 0; r < n; r++) out[r] = rs_checksum64(p + (size_t)r * row_bytes, row_bytes);
}

/* Write the checksums of rows [row0, row0 + n) of (split, layer index li), stored as `rows`. */
static rs_err write_row_checksums(rs_actstore *st, int split, int li, int64_t row0, int64_t n, const void *rows) {
    if (st->rsum[split][li] < 0 || n == 0) return RS_OK;
    uint64_t *sums = malloc((size_t)n * sizeof *sums);
    RS_CHECK_ALLOC(sums);
    row_checksums(sums, rows, n, (size_t)st->id.d * (st->id.dtype == RS_DTYPE_F16 ? 2u : 4u));
    rs_err e = rs_h5_write_rows(st->rsum[split][li], H5T_NATIVE_UINT64, row0, n, sums);
    free(sums);
    return e;
}

static void derive_sizes(rs_actstore *st) {
    st->tokens_per_seq = st->id.T - st->id.skip_pos0;
    for (int s = 0; s < RS_SPLIT_COUNT; s++) {
        st->n_rows[s] = st->n_seq[s] * st->tokens_per_seq;
        st->n_batches[s] = (st->n_seq[s] + st->id.batch_seqs - 1) / st->id.batch_seqs;
    }
}

static hid_t stored_type(const rs_actstore *st) {
    return st->id.dtype == RS_DTYPE_F16 ? st->half_type : H5T_IEEE_F32LE;
}

/* ------------------------------------------------------------------------------------------------
 * create / open / close
 * ---------------------------------------------------------------------------------------------- */

/* The identity as root attributes (names and types are the store's schema: docs/store.md). */
static rs_err write_identity(hid_t f, const rs_actstore_identity *id) {
    RS_TRY(rs_h5_attr_str(f, "kind", STORE_KIND));
    RS_TRY(rs_h5_attr_i32(f, "schema_version", id->schema_version));
    RS_TRY(rs_h5_attr_str(f, "resae_version", RESAE_VERSION));
    RS_TRY(rs_h5_attr_str(f, "model_path", id->model_path));
    RS_TRY(rs_h5_attr_u64(f, "model_hash", id->model_hash));
    RS_TRY(rs_h5_attr_str(f, "data_path", id->data_path));
    RS_TRY(rs_h5_attr_u64(f, "data_hash", id->data_hash));
    RS_TRY(rs_h5_attr_i64(f, "n_seq_data", id->n_seq_data));
    RS_TRY(rs_h5_attr_i32(f, "seq_len", id->T));
    RS_TRY(rs_h5_attr_i32(f, "skip_pos0", id->skip_pos0));
    RS_TRY(rs_h5_attr_i32(f, "tokens_per_seq", id->T - id->skip_pos0));
    RS_TRY(rs_h5_attr_u64(f, "split_seed", id->split_seed));
    for (int s = 0; s < RS_SPLIT_COUNT; s++) {
        char name[32];
        snprintf(name, sizeof name, "budget_%s", rs_split_name(s));
        RS_TRY(rs_h5_attr_i64(f, name, id->budget[s]));
    }
    int32_t layers[RS_ACTSTORE_MAX_LAYERS];
    for (int i = 0; i < id->n_layers; i++) layers[i] = id->layers[i];
    RS_TRY(rs_h5_attr_array(f, "layers", H5T_NATIVE_INT32, layers, (size_t)id->n_layers));
    RS_TRY(rs_h5_attr_i32(f, "d", id->d));
    RS_TRY(rs_h5_attr_str(f, "dtype", rs_dtype_name(id->dtype)));
    RS_TRY(rs_h5_attr_i32(f, "batch_seqs", id->batch_seqs));
    RS_TRY(rs_h5_attr_i32(f, "chunk_rows", id->chunk_rows));
    return RS_OK;
}

static rs_err read_identity(rs_actstore_identity *id, hid_t f, const char *path) {
    memset(id, 0, sizeof *id);
    char kind[64];
    int32_t i32;
    int64_t i64;
    uint64_t u64;
    rs_err err = rs_h5_attr_get_str(kind, sizeof kind, f, "kind", path);
    if (err || strcmp(kind, STORE_KIND))
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: not a resae activation store (root attribute kind != '%s')", path, STORE_KIND);
#define RD(get, name, var)                                                                                   \
    do {                                                                                                     \
        rs_err e_ = get(&var, f, name, path);                                                                \
        if (e_) RS_TRY(rs_err_prefix(e_, "damaged activation store, or one of another schema"));             \
    } while (0)
    RD(rs_h5_attr_get_i32, "schema_version", i32);
    id->schema_version = i32;
    if (i32 != RESAE_SCHEMA_VERSION) return RS_OK; /* the caller reports the version difference */
    RD(rs_h5_attr_get_u64, "model_hash", u64);
    id->model_hash = u64;
    RD(rs_h5_attr_get_u64, "data_hash", u64);
    id->data_hash = u64;
    RD(rs_h5_attr_get_i64, "n_seq_data", i64);
    id->n_seq_data = i64;
    RD(rs_h5_attr_get_i32, "seq_len", i32);
    id->T = i32;
    RD(rs_h5_attr_get_i32, "skip_pos0", i32);
    id->skip_pos0 = i32;
    RD(rs_h5_attr_get_u64, "split_seed", u64);
    id->split_seed = u64;
    for (int s = 0; s < RS_SPLIT_COUNT; s++) {
        char name[32];
        snprintf(name, sizeof name, "budget_%s", rs_split_name(s));
        RD(rs_h5_attr_get_i64, name, i64);
        id->budget[s] = i64;
    }
    RD(rs_h5_attr_get_i32, "d", i32);
    id->d = i32;
    RD(rs_h5_attr_get_i32, "batch_seqs", i32);
    id->batch_seqs = i32;
    RD(rs_h5_attr_get_i32, "chunk_rows", i32);
    id->chunk_rows = i32;
#undef RD
    int32_t layers[RS_ACTSTORE_MAX_LAYERS];
    size_t nl = 0;
    RS_TRY(rs_h5_attr_get_array(layers, &nl, RS_ACTSTORE_MAX_LAYERS, H5T_NATIVE_INT32, f, "layers", path));
    if (nl < 1) RS_FAIL(RS_ERR_FORMAT, "%s: attribute 'layers' is empty", path);
    id->n_layers = (int)nl;
    for (int i = 0; i < id->n_layers; i++) id->layers[i] = layers[i];
    /* strings: UTF-8 since the writer moved to h5util, ASCII in older stores; both read */
    char dt[32];
    RS_TRY(rs_h5_attr_get_str(dt, sizeof dt, f, "dtype", path));
    id->dtype = rs_dtype_from_name(dt);
    if (id->dtype < 0) RS_FAIL(RS_ERR_FORMAT, "%s: unknown dtype '%s'", path, dt);
    RS_TRY(rs_h5_attr_get_str(id->model_path, sizeof id->model_path, f, "model_path", path));
    RS_TRY(rs_h5_attr_get_str(id->data_path, sizeof id->data_path, f, "data_path", path));
    return rs_actstore_identity_check(id);
}

static rs_err open_objects(rs_actstore *st, int create, const rs_splits *splits) {
    const rs_actstore_identity *id = &st->id;
    hid_t ftype = stored_type(st);
    for (int s = 0; s < RS_SPLIT_COUNT; s++) {
        const char *sname = rs_split_name(s);
        if (create) {
            st->grp[s] = H5Gcreate2(st->file, sname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (st->grp[s] < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create group /%s", st->path, sname);
            RS_TRY(rs_h5_attr_i64(st->grp[s], "n_seq", st->n_seq[s]));
            RS_TRY(rs_h5_attr_i64(st->grp[s], "n_rows", st->n_rows[s]));
            RS_TRY(rs_h5_attr_i64(st->grp[s], "n_batches", st->n_batches[s]));
            hsize_t n = (hsize_t)st->n_seq[s];
            st->seq_ids[s] = rs_h5_dataset_create(st->grp[s], "seq_ids", H5T_STD_I32LE, 1, &n, 1, 0);
            if (st->seq_ids[s] < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create /%s/seq_ids", st->path, sname);
            if (splits->split[s].labels) {
                hid_t ld = rs_h5_dataset_create(st->grp[s], "labels", H5T_STD_I32LE, 1, &n, 1, 0);
                if (ld < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create /%s/labels", st->path, sname);
                const int32_t *labels = splits->split[s].labels;
                rs_err e = st->rank == 0 ? rs_h5_write_rows(ld, H5T_NATIVE_INT32, 0, st->n_seq[s], labels) : RS_OK;
                H5Dclose(ld);
                RS_TRY(e);
            }
            if (st->rank == 0)
                RS_TRY(rs_h5_write_rows(st->seq_ids[s], H5T_NATIVE_INT32, 0, st->n_seq[s], splits->split[s].seq_ids));
        } else {
            st->grp[s] = H5Gopen2(st->file, sname, H5P_DEFAULT);
            if (st->grp[s] < 0) RS_FAIL(RS_ERR_FORMAT, "%s: group /%s is missing", st->path, sname);
            int64_t nseq = 0;
            RS_TRY(rs_h5_attr_get_i64(&nseq, st->grp[s], "n_seq", st->path));
            st->n_seq[s] = nseq;
            st->seq_ids[s] = H5Dopen2(st->grp[s], "seq_ids", H5P_DEFAULT);
            if (st->seq_ids[s] < 0) RS_FAIL(RS_ERR_FORMAT, "%s: /%s/seq_ids is missing", st->path, sname);
        }
        derive_sizes(st);
        for (int i = 0; i < id->n_layers; i++) {
            char base[32], name[64];
            rs_actstore_layer_name(base, sizeof base, id->layers[i]);
            hsize_t dims[2] = {(hsize_t)st->n_rows[s], (hsize_t)id->d};
            hsize_t bdims[2] = {(hsize_t)st->n_batches[s], (hsize_t)id->d};
            struct {
                hid_t *h;
                const char *suffix;
                hid_t type;
                int rank;
                const hsize_t *dims;
                hsize_t chunk;
            } objs[6] = {
                {&st->dset[s][i], "", ftype, 2, dims, (hsize_t)id->chunk_rows},
                {&st->rsum[s][i], "_rowsum", H5T_STD_U64LE, 1, dims, 0},
                {&st->bsum[s][i], "_bsum", H5T_IEEE_F64LE, 2, bdims, 0},
                {&st->bsqn[s][i], "_bsqnorm", H5T_IEEE_F64LE, 1, bdims, 0},
                {&st->mean[s][i], "_mean", H5T_IEEE_F64LE, 1, &dims[1], 0},
                {&st->sqn[s][i], "_sqnorm", H5T_IEEE_F64LE, 0, NULL, 0},
            };
            for (int o = 0; o < 6; o++) {
                snprintf(name, sizeof name, "%s%s", base, objs[o].suffix);
                if (!create && objs[o].h == &st->rsum[s][i] && H5Lexists(st->grp[s], name, H5P_DEFAULT) <= 0)
                    continue; /* a store from before the row checksums */
                *objs[o].h = create ? rs_h5_dataset_create(st->grp[s], name, objs[o].type, objs[o].rank,
                                                           objs[o].dims, 1, objs[o].chunk)
                                    : H5Dopen2(st->grp[s], name, H5P_DEFAULT);
                if (*objs[o].h < 0)
                    RS_FAIL(create ? RS_ERR_IO : RS_ERR_FORMAT, "%s: cannot %s dataset /%s/%s", st->path,
                            create ? "create" : "open", sname, name);
            }
        }
    }
    if (create) {
        st->complete = rs_h5_dataset_create(st->file, "complete", H5T_STD_I32LE, 0, NULL, 1, 0);
        if (st->complete < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create /complete", st->path);
        int32_t zero = 0;
        if (st->rank == 0 && H5Dwrite(st->complete, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, &zero) < 0)
            RS_FAIL(RS_ERR_IO, "%s: cannot write /complete", st->path);
    } else {
        st->complete = H5Dopen2(st->file, "complete", H5P_DEFAULT);
        if (st->complete < 0) RS_FAIL(RS_ERR_FORMAT, "%s: /complete is missing", st->path);
    }
    return RS_OK;
}

/* A second, plain descriptor of the store for sync_file_range: HDF5's MPI-IO driver does not
 * expose one. Only a hint (starting write-back early); without it every flush still syncs. */
static void open_writeback(rs_actstore *st) {
#ifdef SYNC_FILE_RANGE_WRITE
    st->wb_fd = open(st->path, O_RDONLY | O_CLOEXEC);
#else
    st->wb_fd = -1;
#endif
}

static void store_init_common(rs_actstore *st, const char *path, MPI_Comm comm) {
    store_reset(st);
    st->comm = comm;
    MPI_Comm_rank(comm, &st->rank);
    MPI_Comm_size(comm, &st->size);
    snprintf(st->path, sizeof st->path, "%s", path);
    st->half_type = rs_h5_type_f16();
}

rs_err rs_actstore_create(rs_actstore *st, const char *path, const rs_actstore_identity *id,
                          const rs_splits *splits, MPI_Comm comm) {
    rs_err err = RS_OK;
    store_init_common(st, path, comm);
    if (strlen(path) >= sizeof st->path)
        RS_FAIL_GOTO(fail, RS_ERR_INVAL, "%s: the activation store's path is longer than %zu bytes", path,
                     sizeof st->path - 1);
    RS_TRY_GOTO(rs_actstore_identity_check(id), fail);
    st->id = *id;
    st->writable = 1;
    for (int s = 0; s < RS_SPLIT_COUNT; s++) st->n_seq[s] = splits->split[s].n_seq;
    derive_sizes(st);
    if (st->half_type < 0) RS_FAIL_GOTO(fail, RS_ERR_IO, "HDF5: cannot build the float16 type");
    /* made under a temporary name and renamed once its identity and datasets are written, so that a
     * run killed while creating it never leaves a file at path that is not a whole store */
    char tmp[RS_ACTSTORE_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    hid_t fapl = fapl_mpio(comm);
    st->file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (st->file < 0)
        RS_FAIL_GOTO(fail, RS_ERR_IO, "%s: cannot create the activation store (is the directory writable?)", tmp);
    /* any failure from here on is collective-fatal: the ranks would disagree on the metadata */
    RS_TRY_COLL(write_identity(st->file, id), comm);
    RS_TRY_COLL(open_objects(st, 1, splits), comm);
    RS_TRY_COLL(rs_actstore_flush(st), comm);
    int rank = st->rank; /* close resets st */
    rs_actstore_close(st);
    rs_err mine = rank == 0 ? rs_file_commit(tmp, path) : RS_OK;
    RS_TRY_GOTO(rs_agree(mine, comm, "creating the activation store"), fail);
    return rs_actstore_open(st, path, 1, comm);
fail:
    rs_actstore_close(st);
    return err;
}

rs_err rs_actstore_open(rs_actstore *st, const char *path, int writable, MPI_Comm comm) {
    rs_err err = RS_OK;
    store_init_common(st, path, comm);
    st->writable = writable;
    if (strlen(path) >= sizeof st->path)
        RS_FAIL_GOTO(fail, RS_ERR_INVAL, "%s: the activation store's path is longer than %zu bytes", path,
                     sizeof st->path - 1);
    if (st->half_type < 0) RS_FAIL_GOTO(fail, RS_ERR_IO, "HDF5: cannot build the float16 type");
    struct stat sb;
    if (stat(path, &sb)) RS_FAIL_GOTO(fail, RS_ERR_IO, "%s: no activation store here (%s)", path, strerror(errno));
    hid_t fapl = fapl_mpio(comm);
    H5E_auto2_t fn;
    void *fn_data;
    H5Eget_auto2(H5E_DEFAULT, &fn, &fn_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    st->file = H5Fopen(path, writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (st->file < 0) {
        H5Eset_auto2(H5E_DEFAULT, fn, fn_data);
        RS_FAIL_GOTO(fail, RS_ERR_FORMAT, "%s: cannot be opened as HDF5 (damaged or not a store)", path);
    }
    err = read_identity(&st->id, st->file, path);
    if (!err && st->id.schema_version != RESAE_SCHEMA_VERSION)
        err = RS_ERR(RS_ERR_UNSUPPORTED,
                     "%s: store schema version %d, this resae reads version %d: delete the run directory (or use a "
                     "new run_dir) to harvest again",
                     path, st->id.schema_version, RESAE_SCHEMA_VERSION);
    if (!err) err = open_objects(st, 0, NULL);
    H5Eset_auto2(H5E_DEFAULT, fn, fn_data);
    if (err) goto fail;
    if (writable) open_writeback(st);
    return RS_OK;
fail:
    rs_actstore_close(st);
    return err;
}

rs_err rs_actstore_open_or_create(rs_actstore *st, int *created, const char *path, const rs_actstore_identity *id,
                                  const rs_splits *splits, int force, int reuse, MPI_Comm comm) {
    *created = 0;
    int rank;
    MPI_Comm_rank(comm, &rank);
    int exists = 0;
    if (rank == 0) {
        struct stat sb;
        exists = stat(path, &sb) == 0;
    }
    MPI_Bcast(&exists, 1, MPI_INT, 0, comm);
    if (exists) {
        rs_err mine = rs_actstore_open(st, path, 1, comm);
        /* decide on the agreed code so that every rank takes the same branch */
        char what[RS_ACTSTORE_PATH_MAX + 32];
        snprintf(what, sizeof what, "opening %s", path);
        rs_err err = rs_agree(mine, comm, what);
        if (err && !mine) rs_actstore_close(st); /* the record says why: this rank's error, or which rank failed */
        if (!err) {
            char diff[2048];
            int differs = rs_actstore_identity_diff(diff, sizeof diff, &st->id, id);
            if (differs && !force) {
                rs_actstore_close(st);
                RS_FAIL(RS_ERR_CONFIG,
                        "%s was harvested for a different run: %s. Delete the run directory (or use a new "
                        "run_dir), or pass --force to recreate the store",
                        path, diff);
            }
            if (!differs && reuse) {
                if (strcmp(st->id.model_path, id->model_path))
                    RS_WARN("%s: model path changed from %s to %s (same hash): reusing the store", path,
                            st->id.model_path, id->model_path);
                if (strcmp(st->id.data_path, id->data_path))
                    RS_WARN("%s: token data path changed from %s to %s (same hash): reusing the store", path,
                            st->id.data_path, id->data_path);
                return RS_OK;
            }
            if (differs && rank == 0) RS_WARN("%s: %s; recreating it (--force)", path, diff);
            rs_actstore_close(st);
        } else if (err == RS_ERR_UNSUPPORTED && !force) {
            /* another schema, or not ours at all: never overwrite it silently */
            RS_TRY(rs_err_prefix(RS_ERR_CONFIG, "%s is not replaced without --force (pass --force to replace it)",
                                 path));
        } else if (reuse && !force) {
            RS_TRY(rs_err_prefix(RS_ERR_FORMAT,
                                 "%s cannot be opened although the harvest journal records finished batches: the "
                                 "file is damaged (a truncated or overwritten file). Delete it and run the same "
                                 "command again (the harvest runs again; finished SAEs and evaluations are kept), or "
                                 "pass --force to recreate it",
                                 path));
        } else {
            RS_DEBUG("%s: unusable store (%s); recreating it", path, rs_err_msg());
        }
    }
    RS_TRY(rs_actstore_create(st, path, id, splits, comm));
    *created = 1;
    return RS_OK;
}

void rs_actstore_close(rs_actstore *st) {
    if (!st) return;
    for (int s = 0; s < RS_SPLIT_COUNT; s++) {
        for (int i = 0; i < RS_ACTSTORE_MAX_LAYERS; i++) {
            hid_t *hs[6] = {&st->dset[s][i], &st->bsum[s][i], &st->bsqn[s][i], &st->mean[s][i], &st->sqn[s][i],
                            &st->rsum[s][i]};
            for (int o = 0; o < 6; o++)
                if (*hs[o] > 0) H5Dclose(*hs[o]);
        }
        if (st->seq_ids[s] > 0) H5Dclose(st->seq_ids[s]);
        if (st->grp[s] > 0) H5Gclose(st->grp[s]);
    }
    if (st->complete > 0) H5Dclose(st->complete);
    if (st->file > 0) H5Fclose(st->file);
    if (st->half_type > 0) H5Tclose(st->half_type);
    if (st->wb_fd > 0) close(st->wb_fd); /* > 0: a zeroed store holds 0, never a descriptor of ours */
    free(st->scratch);
    free(st->stat_buf);
    MPI_Comm comm = st->comm;
    store_reset(st);
    st->comm = comm;
}

/* ------------------------------------------------------------------------------------------------
 * write
 * ---------------------------------------------------------------------------------------------- */

int rs_actstore_layer_index(const rs_actstore *st, int layer) {
    for (int i = 0; i < st->id.n_layers; i++)
        if (st->id.layers[i] == layer) return i;
    return -1;
}

static rs_err check_split_layer(int *li, const rs_actstore *st, int split, int layer) {
    if (split < 0 || split >= RS_SPLIT_COUNT) RS_FAIL(RS_ERR_INVAL, "activation store: split %d does not exist", split);
    *li = rs_actstore_layer_index(st, layer);
    if (*li < 0) {
        char ls[512];
        fmt_layers(ls, sizeof ls, &st->id);
        RS_FAIL(RS_ERR_INVAL, "%s: layer %d is not stored (stored layers: %s)", st->path, layer, ls);
    }
    if (st->file <= 0) RS_FAIL(RS_ERR_INVAL, "activation store: not open");
    return RS_OK;
}

rs_err rs_actstore_batch_rows(int64_t *row0, int64_t *n, const rs_actstore *st, int split, int64_t batch) {
    if (split < 0 || split >= RS_SPLIT_COUNT || batch < 0 || batch >= st->n_batches[split])
        RS_FAIL(RS_ERR_INVAL, "activation store: batch %lld of split %d does not exist", (long long)batch, split);
    int64_t s0 = batch * st->id.batch_seqs;
    int64_t ns = st->n_seq[split] - s0 < st->id.batch_seqs ? st->n_seq[split] - s0 : st->id.batch_seqs;
    *row0 = s0 * st->tokens_per_seq;
    *n = ns * st->tokens_per_seq;
    return RS_OK;
}

/* Batch statistics, row by row in row order (restrict lets the compiler vectorize over d). */
static void accumulate_row(double *restrict sum /* (d) */, double *restrict sq /* (d) */,
                           const float *restrict x /* (d) */, int d) {
    for (int j = 0; j < d; j++) {
        double v = x[j];
        sum[j] += v;
        sq[j] += v * v;
    }
}

rs_err rs_actstore_write_batch(rs_actstore *st, int split, int layer, int64_t batch, const float *rows, int64_t n) {
    int li = -1;
    RS_TRY(check_split_layer(&li, st, split, layer));
    if (!st->writable) RS_FAIL(RS_ERR_INVAL, "%s: opened read-only", st->path);
    int64_t row0 = 0, nb = 0;
    RS_TRY(rs_actstore_batch_rows(&row0, &nb, st, split, batch));
    if (n != nb)
        RS_FAIL(RS_ERR_INTERNAL, "%s: batch %lld of %s has %lld rows, %lld given", st->path, (long long)batch,
                rs_split_name(split), (long long)nb, (long long)n);
    const int d = st->id.d;
    const size_t count = (size_t)n * (size_t)d;
    /* sum (d), sq (d), and a float row of stored values (d) */
    double *acc = calloc((size_t)d * 2 + ((size_t)d + 1) / 2, sizeof *acc);
    RS_CHECK_ALLOC(acc);
    double *sum = acc, *sq = acc + d;
    float *stored = (float *)(acc + 2 * (size_t)d);
    const void *buf = rows;
    hid_t mtype = H5T_NATIVE_FLOAT;
    if (st->id.dtype == RS_DTYPE_F16) {
        if (st->scratch_n < count) {
            free(st->scratch);
            st->scratch = rs_calloc_aligned(count, sizeof *st->scratch);
            st->scratch_n = st->scratch ? count : 0;
            if (!st->scratch) {
                free(acc);
                RS_FAIL(RS_ERR_NOMEM, "activation store: out of memory for %zu float16 values", count);
            }
        }
        for (int64_t r = 0; r < n; r++) {
            uint16_t *h = st->scratch + (size_t)r * d;
            rs_f32_to_f16_n(h, rows + (size_t)r * d, (size_t)d);
            rs_f16_to_f32_n(stored, h, (size_t)d); /* statistics of what is stored */
            accumulate_row(sum, sq, stored, d);
        }
        buf = st->scratch;
        mtype = st->half_type;
    } else {
        for (int64_t r = 0; r < n; r++) accumulate_row(sum, sq, rows + (size_t)r * d, d);
    }
    /* per-dimension sums of squares added in dimension order: fixed, so deterministic */
    double sqn = 0.0;
    for (int j = 0; j < d; j++) sqn += sq[j];
    rs_err e = rs_h5_write_rows(st->dset[split][li], mtype, row0, n, buf);
    if (!e) e = write_row_checksums(st, split, li, row0, n, buf);
    if (!e) e = rs_h5_write_rows(st->bsum[split][li], H5T_NATIVE_DOUBLE, batch, 1, sum);
    if (!e) e = rs_h5_write_rows(st->bsqn[split][li], H5T_NATIVE_DOUBLE, batch, 1, &sqn);
    free(acc);
    if (e) RS_TRY(rs_err_prefix(e, "batch %lld", (long long)batch));
    return RS_OK;
}

/* ---- harvest's batch write: check, pack and sum in one pass, then write ------------------------ */

enum { PACK_BLOCK = 8192 }; /* values per block: the converted block stays in L1/L2 */

/* First bad value of rows (n, d) in row order: non-finite, or (range) finite but >= 65520 in magnitude. */
static int find_bad(int *row, int *dim, const float *x, int n, int d, int range) {
    for (int r = 0; r < n; r++)
        for (int j = 0; j < d; j++) {
            float v = x[(size_t)r * d + j];
            if (!isfinite(v) || (range && fabsf(v) >= 65520.0f)) {
                *row = r;
                *dim = j;
                return 1;
            }
        }
    return 0;
}

/* 1 if every value is finite (NaN fails the comparison); branch-free so it vectorizes. */
static int all_finite(const float *restrict x, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad |= !(fabsf(x[i]) < INFINITY);
    return !bad;
}

/* 1 if no half is infinite or NaN (exponent all ones): exactly the floats below 65520 in magnitude. */
static int all_half_finite(const uint16_t *restrict h, size_t n) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (h[i] & 0x7c00u) == 0x7c00u;
    return !bad;
}

/* Batch statistics of nr rows (nr, d), float32 or float16 (the stored values), added to sum and sq
 * row by row in row order: every sum[j] and sq[j] sees exactly the additions of accumulate_row, in
 * the same order, so the results are bitwise those of the scalar code (no FMA: products are
 * rounded before they are added). */
static void accumulate_rows_scalar(double *sum, double *sq, const void *rows, int f16, int nr, int d) {
    float back[256];
    for (int r = 0; r < nr; r++) {
        if (!f16) {
            accumulate_row(sum, sq, (const float *)rows + (size_t)r * d, d);
            continue;
        }
        const uint16_t *h = (const uint16_t *)rows + (size_t)r * d;
        for (int j0 = 0; j0 < d; j0 += 256) {
            int m = d - j0 < 256 ? d - j0 : 256;
            rs_f16_to_f32_n(back, h + j0, (size_t)m);
            accumulate_row(sum + j0, sq + j0, back, m);
        }
    }
}

#ifdef RS_HAVE_F16C_PATH
/* The same with AVX: eight columns at a time held in registers over all rows. */
__attribute__((target("avx,f16c"))) static void accumulate_rows_hw(double *sum, double *sq, const void *rows, int f16,
                                                                     int nr, int d) {
    int j = 0;
    for (; j + 8 <= d; j += 8) {
        __m256d s0 = _mm256_loadu_pd(sum + j), s1 = _mm256_loadu_pd(sum + j + 4);
        __m256d q0 = _mm256_loadu_pd(sq + j), q1 = _mm256_loadu_pd(sq + j + 4);
        for (int r = 0; r < nr; r++) {
            __m256 f = f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)rows + (size_t)r * d + j)))
                           : _mm256_loadu_ps((const float *)rows + (size_t)r * d + j);
            __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(f)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
            s0 = _mm256_add_pd(s0, lo);
            s1 = _mm256_add_pd(s1, hi);
            q0 = _mm256_add_pd(q0, _mm256_mul_pd(lo, lo));
            q1 = _mm256_add_pd(q1, _mm256_mul_pd(hi, hi));
        }
        _mm256_storeu_pd(sum + j, s0);
        _mm256_storeu_pd(sum + j + 4, s1);
        _mm256_storeu_pd(sq + j, q0);
        _mm256_storeu_pd(sq + j + 4, q1);
    }
    for (; j < d; j++)
        for (int r = 0; r < nr; r++) {
            size_t i = (size_t)r * d + j;
            double v = f16 ? (double)rs_f16_to_f32(((const uint16_t *)rows)[i]) : (double)((const float *)rows)[i];
            sum[j] += v;
            sq[j] += v * v;
        }
}
#endif

static void accumulate_rows(double *sum, double *sq, const void *rows, int f16, int nr, int d) {
#ifdef RS_HAVE_F16C_PATH
    if (rs_dtype_f16c()) {
        accumulate_rows_hw(sum, sq, rows, f16, nr, d);
        return;
    }
#endif
    accumulate_rows_scalar(sum, sq, rows, f16, nr, d);
}

/* Halves of one conversion block. */
static size_t block_halves(int d) {
    size_t rows = PACK_BLOCK / d > 0 ? PACK_BLOCK / d : 1;
    return rows * (size_t)d;
}

/* One layer of a batch: x (n_seq*T, d) -> the packed stored rows at out, which is x itself (packed
 * in place) or does not overlap it. Returns 0, or 1 with *bad filled (nothing of x is changed from
 * the bad block on), or -1 if the float16 conversion disagrees with the range check. */
static int pack_layer(rs_actstore *st, rs_actstore_bad *bad, double *sum /* (d) */, double *sq /* (d) */,
                      unsigned char *out, const float *x, int n_seq) {
    const int d = st->id.d, T = st->id.T, skip = st->id.skip_pos0, tps = T - skip;
    const int f16 = st->id.dtype == RS_DTYPE_F16;
    const int block_rows = PACK_BLOCK / d > 0 ? PACK_BLOCK / d : 1;
    uint16_t *h16 = st->scratch; /* (block_rows * d) */
    const size_t out_row = (size_t)d * (f16 ? sizeof(uint16_t) : sizeof(float));
    for (int s = 0; s < n_seq; s++) {
        const float *seq = x + (size_t)s * T * d;
        if (skip && !all_finite(seq, (size_t)d)) { /* excluded position 0: only finite */
            int r = 0, j = 0;
            find_bad(&r, &j, seq, 1, d, 0);
            *bad = (rs_actstore_bad){.seq = s, .pos = 0, .dim = j, .value = seq[j]};
            return 1;
        }
        for (int t0 = skip; t0 < T; t0 += block_rows) {
            const int nr = T - t0 < block_rows ? T - t0 : block_rows;
            const float *src = seq + (size_t)t0 * d;
            const size_t nv = (size_t)nr * d;
            /* in place, the source block is read completely before its packed rows are stored: a
             * packed row never lies past its source row, so later blocks are never overwritten early */
            int ok = f16 ? (rs_f32_to_f16_n(h16, src, nv), all_half_finite(h16, nv)) : all_finite(src, nv);
            if (!ok) {
                int r = 0, j = 0;
                if (!find_bad(&r, &j, src, nr, d, f16)) return -1; /* the conversion disagrees with the check */
                *bad = (rs_actstore_bad){.seq = s, .pos = t0 + r, .dim = j, .value = src[(size_t)r * d + j],
                                         .out_of_range = isfinite(src[(size_t)r * d + j])};
                return 1;
            }
            unsigned char *dst = out + ((size_t)s * tps + (size_t)(t0 - skip)) * out_row;
            if (f16) {
                accumulate_rows(sum, sq, h16, 1, nr, d); /* statistics of what is stored */
                memcpy(dst, h16, nv * sizeof *h16);
            } else {
                accumulate_rows(sum, sq, src, 0, nr, d);
                if ((const unsigned char *)src != dst) memmove(dst, src, nv * sizeof *src);
            }
        }
    }
    return 0;
}

#ifdef SYNC_FILE_RANGE_WRITE
/* Start write-back of every dirty page of the store without waiting for it: the disk works while
 * the next batch is computed, and the durability flush (an fsync) finds little left to write. */
static void start_writeback(const rs_actstore *st) {
    if (st->wb_fd > 0) (void)sync_file_range(st->wb_fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}
#else
static void start_writeback(const rs_actstore *st) { (void)st; }
#endif

static rs_err pack_prepare(rs_actstore *st) {
    const int d = st->id.d;
    const size_t need = block_halves(d); /* halves of a conversion block */
    if (st->scratch_n < need) {
        free(st->scratch);
        st->scratch = rs_calloc_aligned(need, sizeof *st->scratch);
        st->scratch_n = st->scratch ? need : 0;
        if (!st->scratch) RS_FAIL(RS_ERR_NOMEM, "activation store: out of memory for a conversion block");
    }
    if (!st->stat_buf) {
        st->stat_buf = malloc((size_t)st->id.n_layers * (2 * (size_t)d + 1) * sizeof *st->stat_buf);
        RS_CHECK_ALLOC(st->stat_buf);
    }
    return RS_OK;
}

rs_err rs_actstore_pack_layer(rs_actstore *st, rs_actstore_bad *bad, int layer_index, void *dst, const float *src,
                              int n_seq) {
    if (layer_index < 0 || layer_index >= st->id.n_layers)
        RS_FAIL(RS_ERR_INVAL, "activation store: layer index %d out of range", layer_index);
    if (!st->writable) RS_FAIL(RS_ERR_INVAL, "%s: opened read-only", st->path);
    RS_TRY(pack_prepare(st));
    const int d = st->id.d;
    double t0 = rs_now();
    double *sum = st->stat_buf + (size_t)layer_index * (2 * (size_t)d + 1), *sq = sum + d;
    memset(sum, 0, (2 * (size_t)d + 1) * sizeof *sum);
    st->packed[layer_index] = 0;
    rs_actstore_bad b;
    int rc = pack_layer(st, &b, sum, sq, dst, src, n_seq);
    st->pack_s += rs_now() - t0;
    if (rc < 0) RS_FAIL(RS_ERR_INTERNAL, "%s: the float16 conversion and the range check disagree", st->path);
    if (rc) {
        b.layer_index = layer_index;
        if (bad) *bad = b;
        RS_FAIL(RS_ERR_NUMERIC, "%s: %s value %g for layer %d (sequence %d of the batch, position %d)", st->path,
                b.out_of_range ? "out-of-float16-range" : "non-finite", (double)b.value, st->id.layers[layer_index],
                b.seq, b.pos);
    }
    /* per-dimension sums of squares added in dimension order: fixed, so deterministic */
    double sqn = 0.0;
    for (int j = 0; j < d; j++) sqn += sq[j];
    sum[2 * (size_t)d] = sqn;
    st->packed[layer_index] = 1;
    st->packed_n_seq = n_seq;
    return RS_OK;
}

rs_err rs_actstore_write_packed(rs_actstore *st, int split, int64_t batch, const void *const *packed, int n_seq) {
    if (split < 0 || split >= RS_SPLIT_COUNT) RS_FAIL(RS_ERR_INVAL, "activation store: split %d does not exist", split);
    if (st->file <= 0) RS_FAIL(RS_ERR_INVAL, "activation store: not open");
    if (!st->writable) RS_FAIL(RS_ERR_INVAL, "%s: opened read-only", st->path);
    int64_t row0 = 0, nb = 0;
    RS_TRY(rs_actstore_batch_rows(&row0, &nb, st, split, batch));
    if ((int64_t)n_seq * st->tokens_per_seq != nb)
        RS_FAIL(RS_ERR_INTERNAL, "%s: batch %lld of %s has %lld rows, %d sequences given", st->path, (long long)batch,
                rs_split_name(split), (long long)nb, n_seq);
    const int d = st->id.d, nl = st->id.n_layers;
    for (int i = 0; i < nl; i++)
        if (!st->packed[i] || st->packed_n_seq != n_seq)
            RS_FAIL(RS_ERR_INTERNAL, "%s: layer %d of batch %lld was not packed before the write", st->path,
                    st->id.layers[i], (long long)batch);
    double t1 = rs_now();
    const size_t stride = 2 * (size_t)d + 1; /* sum (d), sq (d), sqnorm */
    const hid_t mtype = st->id.dtype == RS_DTYPE_F16 ? st->half_type : H5T_NATIVE_FLOAT;
    rs_err e = RS_OK;
    for (int li = 0; li < nl && !e; li++) {
        const double *sum = st->stat_buf + (size_t)li * stride;
        e = rs_h5_write_rows(st->dset[split][li], mtype, row0, nb, packed[li]);
        if (!e) e = write_row_checksums(st, split, li, row0, nb, packed[li]);
        if (!e) e = rs_h5_write_rows(st->bsum[split][li], H5T_NATIVE_DOUBLE, batch, 1, sum);
        if (!e) e = rs_h5_write_rows(st->bsqn[split][li], H5T_NATIVE_DOUBLE, batch, 1, sum + 2 * d);
    }
    memset(st->packed, 0, sizeof st->packed);
    if (!e) start_writeback(st);
    st->io_s += rs_now() - t1;
    if (e) RS_TRY(rs_err_prefix(e, "batch %lld", (long long)batch));
    return RS_OK;
}

rs_err rs_actstore_write_batch_layers(rs_actstore *st, rs_actstore_bad *bad, int split, int64_t batch,
                                      float *const *bufs, int n_seq) {
    for (int i = 0; i < st->id.n_layers; i++) RS_TRY(rs_actstore_pack_layer(st, bad, i, bufs[i], bufs[i], n_seq));
    return rs_actstore_write_packed(st, split, batch, (const void *const *)bufs, n_seq);
}

rs_err rs_actstore_flush(rs_actstore *st) {
    if (H5Fflush(st->file, H5F_SCOPE_GLOBAL) < 0) RS_FAIL(RS_ERR_IO, "%s: flush failed", st->path);
    return RS_OK;
}

rs_err rs_actstore_finalize(rs_actstore *st) {
    rs_err err = RS_OK;
    const int d = st->id.d;
    const int64_t block = 256; /* batches read at a time: bounded memory for any split size */
    double *buf = malloc((size_t)block * (size_t)d * sizeof *buf);
    double *acc = malloc((size_t)d * sizeof *acc);
    double *sq = malloc((size_t)block * sizeof *sq);
    if (!buf || !acc || !sq) err = RS_ERR(RS_ERR_NOMEM, "%s: finalize: out of memory", st->path);
    /* (split, layer) pairs dealt round-robin; each pair is summed by one rank in batch order */
    int task = 0;
    for (int s = 0; s < RS_SPLIT_COUNT && !err; s++) {
        for (int li = 0; li < st->id.n_layers && !err; li++, task++) {
            if (task % st->size != st->rank) continue;
            memset(acc, 0, (size_t)d * sizeof *acc);
            double sqn = 0.0;
            for (int64_t b0 = 0; b0 < st->n_batches[s] && !err; b0 += block) {
                int64_t nb = st->n_batches[s] - b0 < block ? st->n_batches[s] - b0 : block;
                err = rs_h5_read_rows(buf, st->bsum[s][li], H5T_NATIVE_DOUBLE, b0, nb);
                if (!err) err = rs_h5_read_rows(sq, st->bsqn[s][li], H5T_NATIVE_DOUBLE, b0, nb);
                if (err) break;
                for (int64_t b = 0; b < nb; b++) {
                    for (int j = 0; j < d; j++) acc[j] += buf[(size_t)b * d + j];
                    sqn += sq[b];
                }
            }
            if (err) break;
            double inv = st->n_rows[s] ? 1.0 / (double)st->n_rows[s] : 0.0;
            for (int j = 0; j < d; j++) acc[j] *= inv;
            sqn *= inv;
            err = rs_h5_write_rows(st->mean[s][li], H5T_NATIVE_DOUBLE, 0, d, acc);
            if (!err && H5Dwrite(st->sqn[s][li], H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &sqn) < 0)
                err = RS_ERR(RS_ERR_IO, "%s: cannot write the statistics of /%s/L%d", st->path, rs_split_name(s),
                             st->id.layers[li]);
        }
    }
    free(buf);
    free(acc);
    free(sq);
    char what[RS_ACTSTORE_PATH_MAX + 64];
    snprintf(what, sizeof what, "finalizing the statistics of %s", st->path);
    RS_AGREE(err, st->comm, what);
    RS_TRY(rs_actstore_flush(st)); /* statistics durable before the completion mark */
    int32_t one = 1;
    if (st->rank == 0 && H5Dwrite(st->complete, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, &one) < 0)
        err = RS_ERR(RS_ERR_IO, "%s: cannot write /complete", st->path);
    snprintf(what, sizeof what, "marking %s complete", st->path);
    RS_AGREE(err, st->comm, what);
    RS_TRY(rs_actstore_flush(st));
    return RS_OK;
}

int rs_actstore_is_complete(const rs_actstore *st) {
    int32_t v = 0;
    if (st->complete <= 0) return 0;
    if (H5Dread(st->complete, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0) return 0;
    return v == 1;
}

/* ------------------------------------------------------------------------------------------------
 * read
 * ---------------------------------------------------------------------------------------------- */

/* Rows [row0, row0 + n) of (split, li) as read (stored form) against their checksums. */
static rs_err verify_rows(const rs_actstore *st, int split, int li, int64_t row0, int64_t n, const void *rows) {
    if (st->rsum[split][li] < 0 || n == 0) return RS_OK;
    uint64_t *want = malloc((size_t)n * 2 * sizeof *want);
    RS_CHECK_ALLOC(want);
    uint64_t *got = want + n;
    rs_err e = rs_h5_read_rows(want, st->rsum[split][li], H5T_NATIVE_UINT64, row0, n);
    if (!e) row_checksums(got, rows, n, (size_t)st->id.d * (st->id.dtype == RS_DTYPE_F16 ? 2u : 4u));
    int64_t bad = -1;
    for (int64_t r = 0; !e && r < n && bad < 0; r++)
        if (got[r] != want[r]) bad = r;
    free(want);
    RS_TRY(e);
    if (bad >= 0) {
        char lname[32];
        rs_actstore_layer_name(lname, sizeof lname, st->id.layers[li]);
        RS_FAIL(RS_ERR_FORMAT,
                "%s: row %lld of /%s/%s does not match its checksum: the activation store is damaged on disk. Delete "
                "it and run the same command again (the harvest runs again; finished SAEs and evaluations are kept)",
                st->path, (long long)(row0 + bad), rs_split_name(split), lname);
    }
    return RS_OK;
}

rs_err rs_actstore_read_rows(const rs_actstore *st, float *dst, int split, int layer, int64_t row0, int64_t n) {
    int li = -1;
    RS_TRY(check_split_layer(&li, st, split, layer));
    if (row0 < 0 || n < 0 || row0 + n > st->n_rows[split])
        RS_FAIL(RS_ERR_INVAL, "%s: rows [%lld, %lld) of /%s are out of range (%lld rows)", st->path, (long long)row0,
                (long long)(row0 + n), rs_split_name(split), (long long)st->n_rows[split]);
    const size_t count = (size_t)n * (size_t)st->id.d;
    if (st->id.dtype == RS_DTYPE_F32) {
        RS_TRY(rs_h5_read_rows(dst, st->dset[split][li], H5T_NATIVE_FLOAT, row0, n));
        RS_TRY(verify_rows(st, split, li, row0, n, dst));
        return RS_OK;
    }
    /* float16: read into the upper half of dst, then widen front to back in blocks copied out
     * first: block [i, i+B) writes bytes [4i, 4i+4B), which never reach the halves of a later
     * block (they start at 2*count + 2(i+B) >= 4i + 4B while i + B <= count) */
    unsigned char *bytes = (unsigned char *)dst;
    unsigned char *halves = bytes + 2 * count;
    RS_TRY(rs_h5_read_rows(halves, st->dset[split][li], st->half_type, row0, n));
    RS_TRY(verify_rows(st, split, li, row0, n, halves));
    enum { BLOCK = 1024 };
    uint16_t tmp[BLOCK];
    for (size_t i = 0; i < count; i += BLOCK) {
        size_t m = count - i < BLOCK ? count - i : BLOCK;
        memcpy(tmp, halves + 2 * i, m * sizeof *tmp);
        rs_f16_to_f32_n(dst + i, tmp, m);
    }
    return RS_OK;
}

int64_t rs_actstore_n_rows(const rs_actstore *st, int split) {
    return split >= 0 && split < RS_SPLIT_COUNT ? st->n_rows[split] : 0;
}

int rs_actstore_d(const rs_actstore *st) { return st->id.d; }

rs_err rs_actstore_stats(const rs_actstore *st, double *mean, double *mean_sqnorm, int split, int layer) {
    int li = -1;
    RS_TRY(check_split_layer(&li, st, split, layer));
    if (!rs_actstore_is_complete(st))
        RS_FAIL(RS_ERR_INVAL, "%s: the harvest is not complete (no statistics yet): run the harvest again", st->path);
    if (mean && H5Dread(st->mean[split][li], H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, mean) < 0)
        RS_FAIL(RS_ERR_IO, "%s: cannot read the mean of /%s/L%d", st->path, rs_split_name(split), layer);
    if (mean_sqnorm && H5Dread(st->sqn[split][li], H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, mean_sqnorm) < 0)
        RS_FAIL(RS_ERR_IO, "%s: cannot read the squared norm of /%s/L%d", st->path, rs_split_name(split), layer);
    return RS_OK;
}

rs_err rs_actstore_read_seq_ids(const rs_actstore *st, int32_t *dst, int split) {
    if (split < 0 || split >= RS_SPLIT_COUNT) RS_FAIL(RS_ERR_INVAL, "activation store: split %d does not exist", split);
    RS_TRY(rs_h5_read_rows(dst, st->seq_ids[split], H5T_NATIVE_INT32, 0, st->n_seq[split]));
    return RS_OK;
}

rs_err rs_actstore_read_labels(const rs_actstore *st, int32_t *dst, int *has, int split) {
    *has = 0;
    if (split < 0 || split >= RS_SPLIT_COUNT) RS_FAIL(RS_ERR_INVAL, "activation store: split %d does not exist", split);
    if (H5Lexists(st->grp[split], "labels", H5P_DEFAULT) <= 0) return RS_OK;
    hid_t d = H5Dopen2(st->grp[split], "labels", H5P_DEFAULT);
    if (d < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open /%s/labels", st->path, rs_split_name(split));
    rs_err e = rs_h5_read_rows(dst, d, H5T_NATIVE_INT32, 0, st->n_seq[split]);
    H5Dclose(d);
    RS_TRY(e);
    *has = 1;
    return RS_OK;
}
