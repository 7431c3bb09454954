#include "resae/h5util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------------
 * whole datasets
 * ---------------------------------------------------------------------------------------------- */

/* Datasets of serial files (task files, results.h5) carry a Fletcher-32 checksum, which HDF5 checks on
 * every read: stored as one chunk (a chunk must be non-empty and under 4 GB; other datasets stay
 * contiguous, unchecked). */
static hid_t checksummed_dcpl(hid_t mem_type, int rank, const hsize_t *dims) {
    if (rank < 1 || rank > 8) return H5P_DEFAULT;
    double bytes = (double)H5Tget_size(mem_type);
    for (int i = 0; i < rank; i++) {
        if (!dims[i]) return H5P_DEFAULT;
        bytes *= (double)dims[i];
    }
    if (bytes >= 4.0e9) return H5P_DEFAULT;
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl < 0) return H5P_DEFAULT;
    if (H5Pset_chunk(dcpl, rank, dims) < 0 || H5Pset_fletcher32(dcpl) < 0 || H5Pset_obj_track_times(dcpl, 0) < 0) {
        H5Pclose(dcpl);
        return H5P_DEFAULT;
    }
    return dcpl;
}

rs_err rs_h5_write(hid_t loc, const char *name, hid_t mem_type, int rank, const hsize_t *dims, const void *data) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    if (sp < 0) RS_FAIL(RS_ERR_IO, "HDF5: cannot create the dataspace of '%s'", name);
    hid_t dcpl = checksummed_dcpl(mem_type, rank, dims);
    hid_t ds = H5Dcreate2(loc, name, mem_type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl != H5P_DEFAULT) H5Pclose(dcpl);
    H5Sclose(sp);
    if (ds < 0) RS_FAIL(RS_ERR_IO, "HDF5: cannot create dataset '%s'", name);
    herr_t e = H5Dwrite(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(ds);
    if (e < 0) RS_FAIL(RS_ERR_IO, "HDF5: cannot write dataset '%s'", name);
    return RS_OK;
}

rs_err rs_h5_read(hid_t loc, const char *name, hid_t mem_type, void *data, size_t n_elems, const char *file) {
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) RS_FAIL(RS_ERR_FORMAT, "%s: dataset '%s' is missing", file, name);
    hid_t sp = H5Dget_space(ds);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (n < 0 || (size_t)n != n_elems) {
        H5Dclose(ds);
        RS_FAIL(RS_ERR_FORMAT, "%s: dataset '%s' has %lld elements, expected %zu", file, name, (long long)n, n_elems);
    }
    herr_t e = H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    H5Dclose(ds);
    if (e < 0)
        RS_FAIL(RS_ERR_IO, "%s: cannot read dataset '%s': the file is damaged (its checksum does not verify) or "
                "unreadable; delete it and run the same command again to redo the task that wrote it", file, name);
    return RS_OK;
}

hid_t rs_h5_dataset_create(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims, int prealloc,
                           hsize_t chunk_rows) {
    hid_t sp = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    if (sp < 0) return sp;
    hid_t dcpl = H5P_DEFAULT;
    if (prealloc) {
        dcpl = H5Pcreate(H5P_DATASET_CREATE);
        if (dcpl < 0 || H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0 ||
            H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 || H5Pset_obj_track_times(dcpl, 0) < 0) {
            if (dcpl >= 0) H5Pclose(dcpl);
            H5Sclose(sp);
            return -1;
        }
        if (chunk_rows && rank == 2 && dims[0] > 0) {
            hsize_t c[2] = {chunk_rows < dims[0] ? chunk_rows : dims[0], dims[1]};
            if (H5Pset_chunk(dcpl, 2, c) < 0) {
                H5Pclose(dcpl);
                H5Sclose(sp);
                return -1;
            }
        }
    }
    hid_t d = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl != H5P_DEFAULT) H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

/* ------------------------------------------------------------------------------------------------
 * row ranges
 * ---------------------------------------------------------------------------------------------- */

/* The file (and object) an id belongs to, for messages: "file:/object". */
static void where(char *out, size_t n, hid_t id) {
    char file[1024] = "?", obj[512] = "";
    if (H5Fget_name(id, file, sizeof file) < 0) snprintf(file, sizeof file, "?");
    if (H5Iget_name(id, obj, sizeof obj) < 0) obj[0] = '\0';
    snprintf(out, n, "%s%s%s", file, obj[0] ? ":" : "", obj);
}

enum { ROWS_MAX_RANK = 4 };

/* Select rows [row0, row0 + n) with every trailing dimension in the file space fs, and make the
 * matching memory space *ms. Returns < 0 on failure. */
static herr_t select_rows(hid_t *ms, hid_t fs, int64_t row0, int64_t n) {
    *ms = -1;
    int rank = H5Sget_simple_extent_ndims(fs);
    if (rank < 1 || rank > ROWS_MAX_RANK) return -1;
    hsize_t dims[ROWS_MAX_RANK], start[ROWS_MAX_RANK] = {(hsize_t)row0}, count[ROWS_MAX_RANK];
    if (H5Sget_simple_extent_dims(fs, dims, NULL) < 0) return -1;
    count[0] = (hsize_t)n;
    for (int i = 1; i < rank; i++) count[i] = dims[i];
    if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0) return -1;
    *ms = H5Screate_simple(rank, count, NULL);
    return *ms < 0 ? -1 : 0;
}

static rs_err rows_io(hid_t dset, hid_t mem_type, int64_t row0, int64_t n, void *rbuf, const void *wbuf) {
    if (n == 0) return RS_OK;
    hid_t fs = H5Dget_space(dset), ms = -1;
    herr_t e = fs < 0 || row0 < 0 || n < 0 ? -1 : select_rows(&ms, fs, row0, n);
    if (e >= 0)
        e = wbuf ? H5Dwrite(dset, mem_type, ms, fs, H5P_DEFAULT, wbuf)
                 : H5Dread(dset, mem_type, ms, fs, H5P_DEFAULT, rbuf);
    int saved_errno = errno;
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    if (e < 0) {
        char w[1600], file[1024] = "";
        where(w, sizeof w, dset);
        /* MPI-IO does not always leave errno set: look at the file system itself */
        int full = saved_errno == ENOSPC;
        if (wbuf && !full && H5Fget_name(dset, file, sizeof file) > 0) {
            int64_t avail = rs_fs_avail(file);
            full = avail >= 0 && avail < (1 << 20);
        }
        errno = full ? ENOSPC : saved_errno;
        return RS_ERR(RS_ERR_IO, "%s: cannot %s rows [%lld, %lld)%s", w, wbuf ? "write" : "read", (long long)row0,
                      (long long)(row0 + n), wbuf && !full ? " (disk full?)" : "");
    }
    return RS_OK;
}

rs_err rs_h5_write_rows(hid_t dset, hid_t mem_type, int64_t row0, int64_t n, const void *buf) {
    return rows_io(dset, mem_type, row0, n, NULL, buf);
}

rs_err rs_h5_read_rows(void *buf, hid_t dset, hid_t mem_type, int64_t row0, int64_t n) {
    return rows_io(dset, mem_type, row0, n, buf, NULL);
}

hid_t rs_h5_type_f16(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    if (t < 0) return t;
    if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 || H5Tset_ebias(t, 15) < 0 ||
        H5Tset_precision(t, 16) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* ------------------------------------------------------------------------------------------------
 * attributes
 * ---------------------------------------------------------------------------------------------- */

/* n == 0: a scalar attribute; else 1-D of n values. */
static rs_err attr_put(hid_t loc, const char *name, hid_t type, const void *v, size_t n) {
    if (H5Aexists(loc, name) > 0 && H5Adelete(loc, name) < 0) {
        char w[1600];
        where(w, sizeof w, loc);
        RS_FAIL(RS_ERR_IO, "%s: cannot replace attribute '%s'", w, name);
    }
    hsize_t dim = (hsize_t)n;
    hid_t sp = n ? H5Screate_simple(1, &dim, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (sp >= 0) H5Sclose(sp);
    herr_t e = a < 0 ? -1 : H5Awrite(a, type, v);
    if (a >= 0) H5Aclose(a);
    if (e < 0) {
        char w[1600];
        where(w, sizeof w, loc);
        RS_FAIL(RS_ERR_IO, "%s: cannot %s attribute '%s'", w, a < 0 ? "create" : "write", name);
    }
    return RS_OK;
}

rs_err rs_h5_attr_f64(hid_t loc, const char *name, double v) { return attr_put(loc, name, H5T_NATIVE_DOUBLE, &v, 0); }
rs_err rs_h5_attr_i64(hid_t loc, const char *name, int64_t v) { return attr_put(loc, name, H5T_NATIVE_INT64, &v, 0); }
rs_err rs_h5_attr_i32(hid_t loc, const char *name, int32_t v) { return attr_put(loc, name, H5T_NATIVE_INT32, &v, 0); }
rs_err rs_h5_attr_u64(hid_t loc, const char *name, uint64_t v) { return attr_put(loc, name, H5T_NATIVE_UINT64, &v, 0); }

rs_err rs_h5_attr_array(hid_t loc, const char *name, hid_t mem_type, const void *v, size_t n) {
    if (n == 0) RS_FAIL(RS_ERR_INTERNAL, "HDF5: attribute '%s' would have no values", name);
    return attr_put(loc, name, mem_type, v, n);
}

rs_err rs_h5_attr_str(hid_t loc, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0 || H5Tset_size(t, strlen(s) + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        if (t >= 0) H5Tclose(t);
        RS_FAIL(RS_ERR_IO, "HDF5: cannot build the string type of attribute '%s'", name);
    }
    rs_err err = attr_put(loc, name, t, s, 0);
    H5Tclose(t);
    return err;
}

/* At most cap values (scalar or 1-D) into v; *n = the count. */
static rs_err attr_get(void *v, size_t *n, size_t cap, hid_t type, hid_t loc, const char *name, const char *file) {
    if (H5Aexists(loc, name) <= 0) RS_FAIL(RS_ERR_FORMAT, "%s: attribute '%s' is missing", file, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) RS_FAIL(RS_ERR_FORMAT, "%s: attribute '%s' cannot be opened", file, name);
    hid_t sp = H5Aget_space(a);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5Sclose(sp);
    if (np < 0 || (size_t)np > cap) {
        H5Aclose(a);
        RS_FAIL(RS_ERR_FORMAT, "%s: attribute '%s' has %lld values, expected at most %zu", file, name, (long long)np,
                cap);
    }
    herr_t e = H5Aread(a, type, v);
    H5Aclose(a);
    if (e < 0) RS_FAIL(RS_ERR_FORMAT, "%s: cannot read attribute '%s'", file, name);
    if (n) *n = (size_t)np;
    return RS_OK;
}

rs_err rs_h5_attr_get_f64(double *v, hid_t loc, const char *name, const char *file) {
    return attr_get(v, NULL, 1, H5T_NATIVE_DOUBLE, loc, name, file);
}
rs_err rs_h5_attr_get_i64(int64_t *v, hid_t loc, const char *name, const char *file) {
    return attr_get(v, NULL, 1, H5T_NATIVE_INT64, loc, name, file);
}
rs_err rs_h5_attr_get_i32(int32_t *v, hid_t loc, const char *name, const char *file) {
    return attr_get(v, NULL, 1, H5T_NATIVE_INT32, loc, name, file);
}
rs_err rs_h5_attr_get_u64(uint64_t *v, hid_t loc, const char *name, const char *file) {
    return attr_get(v, NULL, 1, H5T_NATIVE_UINT64, loc, name, file);
}
rs_err rs_h5_attr_get_array(void *v, size_t *n, size_t cap, hid_t mem_type, hid_t loc, const char *name,
                            const char *file) {
    return attr_get(v, n, cap, mem_type, loc, name, file);
}

rs_err rs_h5_attr_get_str(char *out, size_t n, hid_t loc, const char *name, const char *file) {
    if (H5Aexists(loc, name) <= 0) RS_FAIL(RS_ERR_FORMAT, "%s: attribute '%s' is missing", file, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t ft = a < 0 ? -1 : H5Aget_type(a);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5Sclose(sp);
    /* ASCII (older files) and UTF-8 alike: the memory type is the file's own */
    if (ft < 0 || H5Tget_class(ft) != H5T_STRING || H5Tis_variable_str(ft) > 0 || np != 1) {
        if (ft >= 0) H5Tclose(ft);
        if (a >= 0) H5Aclose(a);
        RS_FAIL(RS_ERR_FORMAT, "%s: attribute '%s' is not a fixed-length string", file, name);
    }
    size_t len = H5Tget_size(ft);
    char buf[8192];
    rs_err err = RS_OK;
    if (len >= sizeof buf) {
        err = RS_ERR(RS_ERR_FORMAT, "%s: attribute '%s' is too long", file, name);
    } else {
        hid_t mt = H5Tcopy(ft);
        if (H5Aread(a, mt, buf) < 0)
            err = RS_ERR(RS_ERR_FORMAT, "%s: cannot read attribute '%s'", file, name);
        buf[len] = '\0';
        H5Tclose(mt);
        snprintf(out, n, "%s", buf);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return err;
}

static rs_err fsync_path(const char *path, int dir) {
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open to sync: %s", path, strerror(errno));
    int e = fsync(fd);
    close(fd);
    if (e) RS_FAIL(RS_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    return RS_OK;
}

rs_err rs_file_write_all(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            close(fd);
            unlink(path);
            errno = e;
            RS_FAIL(RS_ERR_IO, "%s: write failed: %s", path, strerror(e));
        }
        p += w;
        n -= (size_t)w;
    }
    if (close(fd)) {
        int e = errno;
        unlink(path);
        errno = e;
        RS_FAIL(RS_ERR_IO, "%s: close failed: %s", path, strerror(e));
    }
    return RS_OK;
}

rs_err rs_file_commit(const char *tmp, const char *path) {
    RS_TRY(fsync_path(tmp, 0));
    if (rename(tmp, path)) RS_FAIL(RS_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        if (!dir[0]) snprintf(dir, sizeof dir, "/");
    } else {
        snprintf(dir, sizeof dir, ".");
    }
    return fsync_path(dir, 1);
}

rs_err rs_mkdirs(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof buf) RS_FAIL(RS_ERR_INVAL, "path too long: %s", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0777) && errno != EEXIST) RS_FAIL(RS_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    return RS_OK;
}

int rs_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int64_t rs_fs_avail(const char *path) {
    struct statvfs v;
    if (statvfs(path, &v)) return -1;
    return (int64_t)v.f_bavail * (int64_t)v.f_frsize;
}

int64_t rs_dir_bytes(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int64_t total = 0;
    struct dirent *e;
    char p[4352];
    while ((e = readdir(d))) {
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (!stat(p, &st) && S_ISREG(st.st_mode)) total += (int64_t)st.st_size;
    }
    closedir(d);
    return total;
}
