#include "resae/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

rs_err rs_h5_write(hid_t loc, const char *name, hid_t mem_type, int rank, const hsize_t *dims, const void *data) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    if (sp < 0) RS_FAIL(RS_ERR_IO, "HDF5: cannot create the dataspace of '%s'", name);
    hid_t ds = H5Dcreate2(loc, name, mem_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
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
    if (e < 0) RS_FAIL(RS_ERR_IO, "%s: cannot read dataset '%s'", file, name);
    return RS_OK;
}

static rs_err attr_put(hid_t loc, const char *name, hid_t type, const void *v) {
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(sp);
    if (a < 0) RS_FAIL(RS_ERR_IO, "HDF5: cannot create attribute '%s'", name);
    herr_t e = H5Awrite(a, type, v);
    H5Aclose(a);
    if (e < 0) RS_FAIL(RS_ERR_IO, "HDF5: cannot write attribute '%s'", name);
    return RS_OK;
}

rs_err rs_h5_attr_f64(hid_t loc, const char *name, double v) { return attr_put(loc, name, H5T_NATIVE_DOUBLE, &v); }
rs_err rs_h5_attr_i64(hid_t loc, const char *name, int64_t v) { return attr_put(loc, name, H5T_NATIVE_INT64, &v); }

rs_err rs_h5_attr_str(hid_t loc, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    H5Tset_cset(t, H5T_CSET_UTF8);
    rs_err err = attr_put(loc, name, t, s);
    H5Tclose(t);
    return err;
}

static rs_err attr_get(hid_t loc, const char *name, hid_t type, void *v, const char *file) {
    if (H5Aexists(loc, name) <= 0) RS_FAIL(RS_ERR_FORMAT, "%s: attribute '%s' is missing", file, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    herr_t e = a < 0 ? -1 : H5Aread(a, type, v);
    if (a >= 0) H5Aclose(a);
    if (e < 0) RS_FAIL(RS_ERR_FORMAT, "%s: cannot read attribute '%s'", file, name);
    return RS_OK;
}

rs_err rs_h5_attr_get_f64(double *v, hid_t loc, const char *name, const char *file) {
    return attr_get(loc, name, H5T_NATIVE_DOUBLE, v, file);
}
rs_err rs_h5_attr_get_i64(int64_t *v, hid_t loc, const char *name, const char *file) {
    return attr_get(loc, name, H5T_NATIVE_INT64, v, file);
}

rs_err rs_h5_attr_get_str(char *out, size_t n, hid_t loc, const char *name, const char *file) {
    if (H5Aexists(loc, name) <= 0) RS_FAIL(RS_ERR_FORMAT, "%s: attribute '%s' is missing", file, name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t ft = a < 0 ? -1 : H5Aget_type(a);
    if (ft < 0 || H5Tget_class(ft) != H5T_STRING || H5Tis_variable_str(ft) > 0) {
        if (ft >= 0) H5Tclose(ft);
        if (a >= 0) H5Aclose(a);
        RS_FAIL(RS_ERR_FORMAT, "%s: attribute '%s' is not a fixed-length string", file, name);
    }
    size_t len = H5Tget_size(ft);
    char buf[8192];
    rs_err err = RS_OK;
    if (len >= sizeof buf) {
        err = rs_err_set(RS_ERR_FORMAT, __FILE__, __LINE__, __func__, "%s: attribute '%s' is too long", file, name);
    } else {
        hid_t mt = H5Tcopy(ft);
        if (H5Aread(a, mt, buf) < 0)
            err = rs_err_set(RS_ERR_FORMAT, __FILE__, __LINE__, __func__, "%s: cannot read attribute '%s'", file, name);
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
