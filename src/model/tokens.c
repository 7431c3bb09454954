#include "resae/tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resae/log.h"

enum rs_tokens_format rs_tokens_format_parse(const char *s) {
    if (!strcmp(s, "auto")) return RS_TOKENS_AUTO;
    if (!strcmp(s, "hdf5")) return RS_TOKENS_HDF5;
    if (!strcmp(s, "bin_u16")) return RS_TOKENS_BIN_U16;
    if (!strcmp(s, "bin_u32")) return RS_TOKENS_BIN_U32;
    return RS_TOKENS_INVALID;
}

const char *rs_tokens_format_name(enum rs_tokens_format f) {
    switch (f) {
    case RS_TOKENS_HDF5: return "hdf5";
    case RS_TOKENS_BIN_U16: return "bin_u16";
    case RS_TOKENS_BIN_U32: return "bin_u32";
    default: return "auto";
    }
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static rs_err open_hdf5(rs_tokens *tk, const char *path, const rs_tokens_opts *o) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create an HDF5 file access list", path);
    if (o->comm) H5Pset_fapl_mpio(fapl, *o->comm, MPI_INFO_NULL);
    H5E_BEGIN_TRY { tk->file = H5Fopen(path, H5F_ACC_RDONLY, fapl); }
    H5E_END_TRY;
    H5Pclose(fapl);
    if (tk->file < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open as an HDF5 file (missing, or not HDF5?)", path);
    htri_t has = 0;
    H5E_BEGIN_TRY { has = H5Lexists(tk->file, "tokens", H5P_DEFAULT); }
    H5E_END_TRY;
    if (has <= 0)
        RS_FAIL(RS_ERR_FORMAT, "%s: no dataset /tokens (expected integer token ids [n_seq, seq_len])", path);
    /* Harvest reads sequences in split order, spread over the whole file: a chunk cache of 64 MiB
     * keeps decompressed chunks of compressed token files instead of inflating one per sequence. */
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 12421, (size_t)64 << 20, 1.0);
    H5E_BEGIN_TRY { tk->dset = H5Dopen2(tk->file, "tokens", dapl); }
    H5E_END_TRY;
    H5Pclose(dapl);
    if (tk->dset < 0) RS_FAIL(RS_ERR_FORMAT, "%s: /tokens is not a dataset", path);
    hid_t type = H5Dget_type(tk->dset);
    H5T_class_t cls = H5Tget_class(type);
    H5Tclose(type);
    if (cls != H5T_INTEGER) RS_FAIL(RS_ERR_FORMAT, "%s: /tokens is not an integer dataset", path);
    hid_t space = H5Dget_space(tk->dset);
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[2] = {0, 0};
    if (rank == 2) H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    if (rank != 2) RS_FAIL(RS_ERR_FORMAT, "%s: /tokens has %d dimensions, expected 2 [n_seq, seq_len]", path, rank);
    if (dims[1] < 1 || dims[1] > (hsize_t)(1 << 30))
        RS_FAIL(RS_ERR_FORMAT, "%s: /tokens rows of %llu tokens are not usable", path, (unsigned long long)dims[1]);
    tk->n_seq = (int64_t)dims[0];
    tk->stored_len = (int)dims[1];
    tk->seq_len = tk->stored_len;
    if (o->seq_len > 0) {
        if (o->seq_len > tk->stored_len)
            RS_FAIL(RS_ERR_INVAL, "%s: sequence length %d asked for, but /tokens holds sequences of %d", path,
                    o->seq_len, tk->stored_len);
        tk->seq_len = o->seq_len;
    }
    return RS_OK;
}

static rs_err open_bin(rs_tokens *tk, const char *path, const rs_tokens_opts *o) {
    const int w = tk->format == RS_TOKENS_BIN_U16 ? 2 : 4;
    if (o->seq_len < 1)
        RS_FAIL(RS_ERR_INVAL, "%s: a raw token file needs a sequence length (--seq-len)", path);
    tk->fd = open(path, O_RDONLY);
    if (tk->fd < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(tk->fd, &sb) || !S_ISREG(sb.st_mode)) RS_FAIL(RS_ERR_IO, "%s: not a regular file", path);
    if (sb.st_size % w)
        RS_FAIL(RS_ERR_FORMAT, "%s: size %lld bytes is not a multiple of %d (%s tokens); wrong --format?", path,
                (long long)sb.st_size, w, rs_tokens_format_name(tk->format));
    int64_t n_tok = (int64_t)sb.st_size / w;
    tk->seq_len = tk->stored_len = o->seq_len;
    tk->n_seq = n_tok / o->seq_len;
    tk->remainder = n_tok % o->seq_len;
    if (tk->n_seq < 1)
        RS_FAIL(RS_ERR_FORMAT, "%s: %lld tokens, fewer than one sequence of %d", path, (long long)n_tok, o->seq_len);
    int rank = 0;
    if (o->comm) MPI_Comm_rank(*o->comm, &rank);
    if (tk->remainder && rank == 0)
        RS_WARN("%s: %lld trailing tokens after the last whole sequence of %d are ignored", path,
                (long long)tk->remainder, o->seq_len);
    return RS_OK;
}

rs_err rs_tokens_open(rs_tokens *tk, const char *path, const rs_tokens_opts *o) {
    memset(tk, 0, sizeof *tk);
    tk->file = tk->dset = -1;
    tk->fd = -1;
    snprintf(tk->path, sizeof tk->path, "%s", path);
    tk->vocab = o->vocab;
    tk->format = o->format;
    if (tk->format == RS_TOKENS_AUTO) {
        if (ends_with(path, ".h5") || ends_with(path, ".hdf5")) tk->format = RS_TOKENS_HDF5;
        else if (ends_with(path, ".bin")) tk->format = RS_TOKENS_BIN_U16;
        else RS_FAIL(RS_ERR_INVAL, "%s: cannot tell the token format from the name; give --format hdf5|bin_u16|bin_u32",
                     path);
    }
    rs_err err = tk->format == RS_TOKENS_HDF5 ? open_hdf5(tk, path, o) : open_bin(tk, path, o);
    if (err) {
        rs_err_push(err, __FILE__, __LINE__, __func__);
        rs_tokens_close(tk);
    }
    return err;
}

static rs_err check_ids(const rs_tokens *tk, const int32_t *out, int64_t s0, int64_t n) {
    if (tk->vocab <= 0) return RS_OK;
    const size_t total = (size_t)n * (size_t)tk->seq_len;
    for (size_t i = 0; i < total; i++)
        if (out[i] < 0 || out[i] >= tk->vocab)
            RS_FAIL(RS_ERR_FORMAT, "%s: token id %d at sequence %lld, position %zu is outside [0, %d) (the model's vocab)",
                    tk->path, out[i], (long long)(s0 + (int64_t)(i / (size_t)tk->seq_len)), i % (size_t)tk->seq_len,
                    tk->vocab);
    return RS_OK;
}

static rs_err read_bin(int32_t *out, rs_tokens *tk, int64_t s0, int64_t n) {
    const int w = tk->format == RS_TOKENS_BIN_U16 ? 2 : 4;
    const size_t count = (size_t)n * (size_t)tk->seq_len;
    unsigned char *buf = malloc(count * (size_t)w);
    RS_CHECK_ALLOC(buf);
    size_t want = count * (size_t)w, got = 0;
    off_t off = (off_t)s0 * tk->seq_len * w;
    while (got < want) {
        ssize_t r = pread(tk->fd, buf + got, want - got, off + (off_t)got);
        if (r <= 0) {
            free(buf);
            RS_FAIL(RS_ERR_IO, "%s: read of sequences %lld..%lld failed: %s", tk->path, (long long)s0,
                    (long long)(s0 + n - 1), r < 0 ? strerror(errno) : "unexpected end of file");
        }
        got += (size_t)r;
    }
    for (size_t i = 0; i < count; i++) {
        if (w == 2) {
            out[i] = (int32_t)(buf[2 * i] | (buf[2 * i + 1] << 8));
        } else {
            uint32_t v = (uint32_t)buf[4 * i] | (uint32_t)buf[4 * i + 1] << 8 | (uint32_t)buf[4 * i + 2] << 16 |
                         (uint32_t)buf[4 * i + 3] << 24;
            if (v > (uint32_t)INT32_MAX) {
                free(buf);
                RS_FAIL(RS_ERR_FORMAT, "%s: token id %u at sequence %lld, position %zu is outside [0, %d)", tk->path, v,
                        (long long)(s0 + (int64_t)(i / (size_t)tk->seq_len)), i % (size_t)tk->seq_len,
                        tk->vocab > 0 ? tk->vocab : INT32_MAX);
            }
            out[i] = (int32_t)v;
        }
    }
    free(buf);
    return RS_OK;
}

static rs_err read_hdf5(int32_t *out, rs_tokens *tk, int64_t s0, int64_t n) {
    hsize_t start[2] = {(hsize_t)s0, 0}, count[2] = {(hsize_t)n, (hsize_t)tk->seq_len};
    hid_t fs = H5Dget_space(tk->dset);
    hid_t ms = H5Screate_simple(2, count, NULL);
    herr_t e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e >= 0) e = H5Dread(tk->dset, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, out);
    H5Sclose(ms);
    H5Sclose(fs);
    if (e < 0)
        RS_FAIL(RS_ERR_IO, "%s: reading /tokens sequences %lld..%lld failed", tk->path, (long long)s0,
                (long long)(s0 + n - 1));
    return RS_OK;
}

rs_err rs_tokens_read(int32_t *out, rs_tokens *tk, int64_t s0, int64_t n) {
    if (s0 < 0 || n < 0 || s0 + n > tk->n_seq)
        RS_FAIL(RS_ERR_INVAL, "%s: sequences %lld..%lld asked for, the file has %lld", tk->path, (long long)s0,
                (long long)(s0 + n - 1), (long long)tk->n_seq);
    if (!n) return RS_OK;
    if (tk->format == RS_TOKENS_HDF5) RS_TRY(read_hdf5(out, tk, s0, n));
    else RS_TRY(read_bin(out, tk, s0, n));
    RS_TRY(check_ids(tk, out, s0, n));
    return RS_OK;
}

void rs_tokens_close(rs_tokens *tk) {
    if (tk->dset >= 0) H5Dclose(tk->dset);
    if (tk->file >= 0) H5Fclose(tk->file);
    if (tk->fd >= 0) close(tk->fd);
    tk->dset = tk->file = -1;
    tk->fd = -1;
}
