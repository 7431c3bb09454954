/* safetensors checkpoints: a single file or a set of shards named by model.safetensors.index.json.
 * Files are mmapped read-only and treated as hostile: the header length, every tensor's dtype,
 * shape and data_offsets are checked (inside the data section, equal to shape x dtype size, no
 * overlaps or holes, no overflowing shapes, no duplicate names) before any tensor is visible.
 * Errors name the file and the tensor. */
#ifndef RESAE_SAFETENSORS_H
#define RESAE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "resae/err.h"

#define RS_ST_MAX_DIMS 8
/* Largest header accepted (the format's own readers use the same bound). */
#define RS_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

enum rs_st_dtype {
    RS_ST_INVALID = -1, /* a name the format does not define (the parser reports it) */
    RS_ST_BOOL, RS_ST_U8, RS_ST_I8, RS_ST_F8_E5M2, RS_ST_F8_E4M3, RS_ST_I16, RS_ST_U16, RS_ST_F16,
    RS_ST_BF16, RS_ST_I32, RS_ST_U32, RS_ST_F32, RS_ST_I64, RS_ST_U64, RS_ST_F64, RS_ST_N_DTYPES
};

typedef struct rs_st_tensor {
    char *name;
    enum rs_st_dtype dtype;
    int ndim;
    int64_t shape[RS_ST_MAX_DIMS];
    int64_t numel;
    const unsigned char *data;          /* into the mmapped file; no alignment guaranteed */
    size_t nbytes;
    int file;                           /* index into rs_safetensors.paths */
} rs_st_tensor;

typedef struct rs_safetensors {
    int n_files;
    char **paths;                       /* (n_files) */
    void **maps;                        /* (n_files) mmapped regions */
    size_t *map_sizes;                  /* (n_files) */
    int n_tensors;
    rs_st_tensor *tensors;              /* (n_tensors) sorted by name */
} rs_safetensors;

/* One .safetensors file. */
rs_err rs_safetensors_open_file(rs_safetensors *st, const char *path);
/* A checkpoint directory: DIR/model.safetensors.index.json (its weight_map names the shards; every
 * tensor must be in the shard the map names) if present, else DIR/model.safetensors. */
rs_err rs_safetensors_open_dir(rs_safetensors *st, const char *dir);
void rs_safetensors_free(rs_safetensors *st);

/* The tensor called name, or NULL. */
const rs_st_tensor *rs_safetensors_find(const rs_safetensors *st, const char *name);
/* The file a tensor lives in (for messages). */
const char *rs_safetensors_path(const rs_safetensors *st, const rs_st_tensor *t);

/* Convert a floating-point tensor (F32, F16, BF16, F64) to fp32; out holds t->numel floats. */
rs_err rs_st_tensor_to_f32(float *out, const rs_safetensors *st, const rs_st_tensor *t);
/* The same for elements [first, first + n) of the tensor in C order (a few rows of a matrix). */
rs_err rs_st_tensor_range_to_f32(float *out, const rs_safetensors *st, const rs_st_tensor *t, size_t first, size_t n);

/* One tensor to write: little-endian, C order; data holds numel x dtype-size bytes. */
typedef struct rs_st_out {
    const char *name;
    enum rs_st_dtype dtype;
    int ndim;
    int64_t shape[RS_ST_MAX_DIMS];
    const void *data;
} rs_st_out;

/* Write a .safetensors file atomically (PATH.tmp, fsync, rename): the u64 header length, the JSON
 * header (tensors in the order given, contiguous, padded with spaces to a multiple of 8 bytes so the
 * data starts aligned) and the data. meta holds n_meta key/value string pairs for "__metadata__"
 * (meta[2i] the key, meta[2i+1] the value); n_meta may be 0. Names must be unique and non-empty. */
rs_err rs_safetensors_write(const char *path, const rs_st_out *t, int n, const char *const *meta, int n_meta);

const char *rs_st_dtype_name(int dtype);
size_t rs_st_dtype_size(int dtype);
/* Format a shape as "[a, b, c]". */
void rs_st_fmt_shape(char *out, size_t n, const int64_t *shape, int ndim);

#endif
