/* The one HDF5 helper layer: whole-dataset and row-range writes and reads, scalar and 1-D
 * attributes, the float16 type, and durable atomic file replacement (write to a temporary name,
 * fsync, rename). Every error names the file (and the dataset or attribute). Attributes are stored
 * with the native type they are written with (h5py reads them as that numpy type); strings are
 * fixed-length, NUL-terminated UTF-8, and the string readers accept ASCII too (older files). Under
 * parallel HDF5 the attribute writes are collective: every rank calls them with the same values. */
#ifndef RESAE_H5UTIL_H
#define RESAE_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

#include "resae/err.h"

/* Whole-dataset write of a rank-n array (n <= 4) of type mem_type (H5T_NATIVE_*). */
rs_err rs_h5_write(hid_t loc, const char *name, hid_t mem_type, int rank, const hsize_t *dims, const void *data);
/* Whole-dataset read into data; the dataset must have exactly n_elems elements. */
rs_err rs_h5_read(hid_t loc, const char *name, hid_t mem_type, void *data, size_t n_elems, const char *file);
/* Create dataset name of file type `type` and shape dims (rank 0: a scalar). prealloc: storage
 * allocated at creation and never filled, no timestamps, so later raw writes never touch the
 * file's metadata (what a parallel writer that may be killed needs); chunk_rows > 0 (with
 * prealloc, rank 2) chunks it by (chunk_rows, dims[1]). Otherwise HDF5's defaults. Returns the
 * dataset, or a negative id (the caller names the file in its message). */
hid_t rs_h5_dataset_create(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims, int prealloc,
                           hsize_t chunk_rows);
/* Rows [row0, row0 + n) of a dataset (n_rows, ...) from or into a contiguous buffer of n full rows
 * (every trailing dimension); independent transfer, so one rank may write its rows alone. n == 0
 * does nothing. */
rs_err rs_h5_write_rows(hid_t dset, hid_t mem_type, int64_t row0, int64_t n, const void *buf);
rs_err rs_h5_read_rows(void *buf, hid_t dset, hid_t mem_type, int64_t row0, int64_t n);

/* The IEEE binary16 type (little endian) that h5py maps to numpy.float16; the caller closes it.
 * Returns a negative id on failure. */
hid_t rs_h5_type_f16(void);

/* Scalar attributes (an existing attribute of the same name is replaced). */
rs_err rs_h5_attr_f64(hid_t loc, const char *name, double v);
rs_err rs_h5_attr_i64(hid_t loc, const char *name, int64_t v);
rs_err rs_h5_attr_i32(hid_t loc, const char *name, int32_t v);
rs_err rs_h5_attr_u64(hid_t loc, const char *name, uint64_t v);
rs_err rs_h5_attr_str(hid_t loc, const char *name, const char *s);
/* 1-D attribute of n >= 1 values of mem_type (H5T_NATIVE_*), stored as that type. */
rs_err rs_h5_attr_array(hid_t loc, const char *name, hid_t mem_type, const void *v, size_t n);
/* Readers: a missing attribute, one of more than one value (scalar readers) or an unreadable one is
 * an RS_ERR_FORMAT naming file. */
rs_err rs_h5_attr_get_f64(double *v, hid_t loc, const char *name, const char *file);
rs_err rs_h5_attr_get_i64(int64_t *v, hid_t loc, const char *name, const char *file);
rs_err rs_h5_attr_get_i32(int32_t *v, hid_t loc, const char *name, const char *file);
rs_err rs_h5_attr_get_u64(uint64_t *v, hid_t loc, const char *name, const char *file);
/* Scalar or 1-D attribute of at most cap values into v (cap values of mem_type); *n = its count. */
rs_err rs_h5_attr_get_array(void *v, size_t *n, size_t cap, hid_t mem_type, hid_t loc, const char *name,
                            const char *file);
/* String attribute into out (n bytes, truncated); missing attribute is an error naming file. */
rs_err rs_h5_attr_get_str(char *out, size_t n, hid_t loc, const char *name, const char *file);

/* Make path durable and atomically visible: fsync tmp, rename tmp -> path, fsync the directory. */
rs_err rs_file_commit(const char *tmp, const char *path);
/* Create (or truncate) path and write n bytes to it; on failure the file is removed and the error names
 * it (a full disk says so). Not synced: rs_file_commit does that. */
rs_err rs_file_write_all(const char *path, const void *data, size_t n);
/* mkdir -p */
rs_err rs_mkdirs(const char *path);
int rs_file_exists(const char *path);
/* Bytes available to this user on the file system holding path (a file or a directory); -1 when
 * it cannot be told. */
int64_t rs_fs_avail(const char *path);
/* Total size of the regular files directly in dir (0 when it does not exist). */
int64_t rs_dir_bytes(const char *dir);

#endif
