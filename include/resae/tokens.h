/* Token files: fixed-length sequences of token ids.
 *   hdf5     dataset /tokens, integer [n_seq, T] (int32 natively; other integer types converted)
 *   bin_u16  raw little-endian uint16 ids (nanoGPT), cut into n_seq = floor(n_tokens / T) sequences
 *   bin_u32  the same with uint32 ids
 * Ids outside [0, vocab) are an error naming the file, the sequence and the position. */
#ifndef RESAE_TOKENS_H
#define RESAE_TOKENS_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#include "resae/err.h"

enum rs_tokens_format {
    RS_TOKENS_INVALID = -1, /* a name rs_tokens_format_parse does not know */
    RS_TOKENS_AUTO = 0,
    RS_TOKENS_HDF5,
    RS_TOKENS_BIN_U16,
    RS_TOKENS_BIN_U32
};

typedef struct rs_tokens_opts {
    enum rs_tokens_format format; /* AUTO: .h5/.hdf5 -> hdf5, .bin -> bin_u16 */
    int seq_len;          /* bin: tokens per sequence (required); hdf5: 0 = the stored length, or a
                             shorter length (the first seq_len tokens of each stored sequence) */
    int vocab;            /* > 0: ids are checked against [0, vocab) on every read */
    const MPI_Comm *comm; /* NULL: serial; else the HDF5 file is opened collectively over *comm with
                             MPI-IO (reads stay independent; raw files are read by each rank) */
} rs_tokens_opts;

typedef struct rs_tokens {
    char path[4096];
    int format;
    int64_t n_seq;
    int seq_len;          /* tokens per sequence returned by rs_tokens_read */
    int stored_len;       /* hdf5: row length in the file; bin: seq_len */
    int64_t remainder;    /* bin: trailing tokens after the last whole sequence (not returned) */
    int vocab;
    hid_t file, dset;     /* hdf5 */
    int fd;               /* bin */
} rs_tokens;

/* Parse "hdf5", "bin_u16", "bin_u32" (or "auto"); -1 if unknown. */
enum rs_tokens_format rs_tokens_format_parse(const char *s);
const char *rs_tokens_format_name(enum rs_tokens_format format);

rs_err rs_tokens_open(rs_tokens *tk, const char *path, const rs_tokens_opts *opts);
/* Sequences [s0, s0 + n) into out (n, seq_len). */
rs_err rs_tokens_read(int32_t *out, rs_tokens *tk, int64_t s0, int64_t n);
void rs_tokens_close(rs_tokens *tk);

#endif
