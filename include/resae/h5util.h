/* Small HDF5 helpers shared by the result files: whole-dataset and attribute writes and reads,
 * and durable atomic file replacement (write to a temporary name, fsync, rename). */
#ifndef RESAE_H5UTIL_H
#define RESAE_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

#include "resae/err.h"

/* Whole-dataset write of a rank-n array (n <= 4) of type mem_type (H5T_NATIVE_*). */
rs_err rs_h5_write(hid_t loc, const char *name, hid_t mem_type, int rank, const hsize_t *dims, const void *data);
/* Whole-dataset read into data; the dataset must have exactly n_elems elements. */
rs_err rs_h5_read(hid_t loc, const char *name, hid_t mem_type, void *data, size_t n_elems, const char *file);
/* Scalar attributes. */
rs_err rs_h5_attr_f64(hid_t loc, const char *name, double v);
rs_err rs_h5_attr_i64(hid_t loc, const char *name, int64_t v);
rs_err rs_h5_attr_str(hid_t loc, const char *name, const char *s);
rs_err rs_h5_attr_get_f64(double *v, hid_t loc, const char *name, const char *file);
rs_err rs_h5_attr_get_i64(int64_t *v, hid_t loc, const char *name, const char *file);
/* String attribute into out (n bytes, truncated); missing attribute is an error naming file. */
rs_err rs_h5_attr_get_str(char *out, size_t n, hid_t loc, const char *name, const char *file);

/* Make path durable and atomically visible: fsync tmp, rename tmp -> path, fsync the directory. */
rs_err rs_file_commit(const char *tmp, const char *path);
/* mkdir -p */
rs_err rs_mkdirs(const char *path);
int rs_file_exists(const char *path);

#endif
