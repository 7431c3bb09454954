/* Task files, structure-aware: the input describes an affine task file (the shape and type of A, c,
 * mu_x, mu_y, which attributes exist and with what type) that the harness writes with HDF5 the way
 * resae does (rs_taskfile_create, rs_h5_write), then optionally flips bits of the written file at
 * input-chosen offsets (the checksums' work), then runs the start-of-run check (rs_taskfile_intact)
 * and the reader (rs_taskfile_read_affine with an input-chosen model width). Byte-level fuzzing of
 * the HDF5 format itself is HDF5's; this drives resae's own checks of what HDF5 returns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "resae/affine.h"
#include "resae/h5util.h"
#include "resae/taskfile.h"

typedef struct cursor {
    const uint8_t *p;
    size_t n;
} cursor;

static unsigned take(cursor *c) {
    if (!c->n) return 0;
    c->n--;
    return *c->p++;
}

static void write_file(const char *path, cursor *in, int d) {
    char tmp[600];
    hid_t f;
    if (rs_taskfile_create(&f, tmp, sizeof tmp, path)) return;
    static const char *const names[] = {"A", "c", "mu_x", "mu_y"};
    for (int i = 0; i < 4; i++) {
        unsigned what = take(in);
        if (what % 5 == 0) continue; /* missing */
        hsize_t dims[2] = {(hsize_t)(take(in) % 12), (hsize_t)(take(in) % 12)};
        int rank = i == 0 ? 2 : 1;
        if (what % 5 == 1) { /* the right shape */
            dims[0] = dims[1] = (hsize_t)d;
        }
        size_t count = (size_t)dims[0] * (rank == 2 ? dims[1] : 1);
        double *v = calloc(count ? count : 1, sizeof *v);
        if (!v) break;
        for (size_t j = 0; j < count; j++) v[j] = (double)(int8_t)take(in) / 7.0;
        hid_t type = what % 5 == 4 ? H5T_NATIVE_INT : H5T_NATIVE_DOUBLE; /* a wrong element type */
        if (type == H5T_NATIVE_INT) {
            int *iv = calloc(count ? count : 1, sizeof *iv);
            if (iv) (void)rs_h5_write(f, names[i], type, rank, dims, iv);
            free(iv);
        } else {
            (void)rs_h5_write(f, names[i], type, rank, dims, v);
        }
        free(v);
    }
    unsigned attrs = take(in);
    if (attrs & 1) (void)rs_h5_attr_f64(f, "s", (double)take(in) / 16.0);
    if (attrs & 2) (void)rs_h5_attr_f64(f, "r2", (double)take(in) / 255.0);
    if (attrs & 4) (void)rs_h5_attr_str(f, "s", "not a number"); /* fails if "s" exists: fine */
    if (attrs & 8) (void)rs_h5_attr_i64(f, "r2", 3);
    rs_err_clear();
    (void)rs_taskfile_commit(f, tmp, path);
    rs_err_clear();
}

static void flip_bits(const char *path, cursor *in) {
    unsigned n = take(in) % 4;
    if (!n || getenv("FUZZ_NO_FLIPS")) return; /* FUZZ_NO_FLIPS=1: intact files only */
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    for (unsigned i = 0; i < n && size > 0; i++) {
        long at = (long)((take(in) << 8 | take(in)) % (unsigned long)size);
        unsigned bit = take(in) % 8;
        fseek(f, at, SEEK_SET);
        int ch = fgetc(f);
        if (ch == EOF) break;
        fseek(f, at, SEEK_SET);
        fputc(ch ^ (1 << bit), f);
    }
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    cursor in = {data, size};
    int d = 1 + (int)(take(&in) % 8);
    char path[512], why[256];
    fuzz_path(path, sizeof path, "affine.h5");
    remove(path);
    write_file(path, &in, d);
    flip_bits(path, &in);
    (void)rs_taskfile_intact(path, why, sizeof why);
    int read_d = take(&in) % 4 == 0 ? 1 + (int)(take(&in) % 10) : d;
    rs_affine_map m;
    memset(&m, 0, sizeof m);
    if (rs_taskfile_read_affine(&m, path, read_d) == RS_OK) rs_affine_map_free(&m);
    rs_err_clear();
    return 0;
}
