#include "resae/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resae/h5util.h"
#include "resae/util.h"

/* ---- dtypes ------------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    size_t size;
} DTYPES[RS_ST_N_DTYPES] = {
    [RS_ST_BOOL] = {"BOOL", 1},       [RS_ST_U8] = {"U8", 1},   [RS_ST_I8] = {"I8", 1},
    [RS_ST_F8_E5M2] = {"F8_E5M2", 1}, [RS_ST_F8_E4M3] = {"F8_E4M3", 1},
    [RS_ST_I16] = {"I16", 2},         [RS_ST_U16] = {"U16", 2}, [RS_ST_F16] = {"F16", 2},
    [RS_ST_BF16] = {"BF16", 2},       [RS_ST_I32] = {"I32", 4}, [RS_ST_U32] = {"U32", 4},
    [RS_ST_F32] = {"F32", 4},         [RS_ST_I64] = {"I64", 8}, [RS_ST_U64] = {"U64", 8},
    [RS_ST_F64] = {"F64", 8},
};

const char *rs_st_dtype_name(int dtype) {
    return dtype >= 0 && dtype < RS_ST_N_DTYPES ? DTYPES[dtype].name : "?";
}

size_t rs_st_dtype_size(int dtype) { return dtype >= 0 && dtype < RS_ST_N_DTYPES ? DTYPES[dtype].size : 0; }

static int dtype_from_name(const char *s) {
    for (int i = 0; i < RS_ST_N_DTYPES; i++)
        if (!strcmp(s, DTYPES[i].name)) return i;
    return -1;
}

void rs_st_fmt_shape(char *out, size_t n, const int64_t *shape, int ndim) {
    size_t used = 0;
    int w = snprintf(out, n, "[");
    if (w > 0) used = (size_t)w;
    for (int i = 0; i < ndim && used < n; i++) {
        w = snprintf(out + used, n - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (w > 0) used += (size_t)w;
    }
    if (used < n) snprintf(out + used, n - used, "]");
}

/* ---- header parsing ---------------------------------------------------------------------------- */

/* JSON numbers are doubles: integers are exact up to 2^53, far beyond any real offset or dim. */
static int json_u53(const cJSON *it, uint64_t *out) {
    if (!cJSON_IsNumber(it)) return 0;
    double v = it->valuedouble;
    if (!(v >= 0) || v > 9007199254740992.0 || v != floor(v)) return 0;
    *out = (uint64_t)v;
    return 1;
}

static rs_err push_tensor(rs_safetensors *st, int *cap, const rs_st_tensor *t) {
    if (st->n_tensors == *cap) {
        int nc = *cap ? 2 * *cap : 64;
        rs_st_tensor *nt = realloc(st->tensors, (size_t)nc * sizeof *nt);
        RS_CHECK_ALLOC(nt);
        st->tensors = nt;
        *cap = nc;
    }
    st->tensors[st->n_tensors++] = *t;
    return RS_OK;
}

typedef struct {
    uint64_t begin, end;
    const char *name;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Parse one tensor entry of the header of file `fi`; data section is `data` of `data_size` bytes. */
static rs_err parse_entry(rs_st_tensor *t, uint64_t *begin, uint64_t *end, const cJSON *e, const char *path,
                          const unsigned char *data, uint64_t data_size) {
    const char *name = e->string;
    if (!cJSON_IsObject(e)) RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s': header entry is not a JSON object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s': missing or non-string 'dtype'", path, name);
    t->dtype = dtype_from_name(dt->valuestring);
    if (t->dtype < 0)
        RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", path, name, dt->valuestring);
    if (!cJSON_IsArray(sh)) RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s': missing or non-array 'shape'", path, name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > RS_ST_MAX_DIMS)
        RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s': %d dimensions, at most %d supported", path, name, nd, RS_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < nd; i++) {
        uint64_t v;
        if (!json_u53(cJSON_GetArrayItem(sh, i), &v))
            RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s': shape entry %d is not a non-negative integer below 2^53", path,
                    name, i);
        t->shape[i] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel) || numel > (uint64_t)INT64_MAX) overflow = 1;
    }
    uint64_t nbytes = 0;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)DTYPES[t->dtype].size, &nbytes) ||
        nbytes > (uint64_t)INT64_MAX) {
        char s[256];
        rs_st_fmt_shape(s, sizeof s, t->shape, t->ndim);
        RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s': shape %s of %s overflows the size of any file", path, name, s,
                DTYPES[t->dtype].name);
    }
    t->numel = (int64_t)numel;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !json_u53(cJSON_GetArrayItem(off, 0), begin) ||
        !json_u53(cJSON_GetArrayItem(off, 1), end))
        RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s': 'data_offsets' must be two non-negative integers [begin, end]",
                path, name);
    if (*begin > *end)
        RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path, name,
                (unsigned long long)*begin, (unsigned long long)*end);
    if (*end > data_size)
        RS_FAIL(RS_ERR_FORMAT,
                "%s: tensor '%s': data_offsets [%llu, %llu] extend past the data section (%llu bytes; file "
                "truncated or header corrupt)",
                path, name, (unsigned long long)*begin, (unsigned long long)*end, (unsigned long long)data_size);
    if (*end - *begin != nbytes) {
        char s[256];
        rs_st_fmt_shape(s, sizeof s, t->shape, t->ndim);
        RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s of %s needs %llu",
                path, name, (unsigned long long)*begin, (unsigned long long)*end,
                (unsigned long long)(*end - *begin), s, DTYPES[t->dtype].name, (unsigned long long)nbytes);
    }
    t->data = data + *begin;
    t->nbytes = (size_t)nbytes;
    return RS_OK;
}

static rs_err parse_header(rs_safetensors *st, int *cap, int fi, const char *path, const unsigned char *map,
                           uint64_t size) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | map[i]; /* little-endian u64 */
    if (n > RS_ST_MAX_HEADER)
        RS_FAIL(RS_ERR_FORMAT, "%s: header length %llu exceeds the %llu-byte limit (not a safetensors file?)", path,
                (unsigned long long)n, (unsigned long long)RS_ST_MAX_HEADER);
    if (n > size - 8)
        RS_FAIL(RS_ERR_FORMAT, "%s: header length %llu extends past the end of the file (%llu bytes; truncated?)",
                path, (unsigned long long)n, (unsigned long long)size);
    const char *hdr = (const char *)map + 8;
    const char *endp = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &endp, 0);
    if (!root) RS_FAIL(RS_ERR_FORMAT, "%s: header is not valid JSON (near byte %lld of it)", path,
                       endp ? (long long)(endp - hdr) : -1LL);
    rs_err err = RS_OK;
    span *spans = NULL;
    for (const char *p = endp; p < hdr + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0')
            RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: header has bytes after its JSON object", path);
    if (!cJSON_IsObject(root)) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: header is not a JSON object", path);

    const unsigned char *data = map + 8 + n;
    uint64_t data_size = size - 8 - n;
    int n_entries = cJSON_GetArraySize(root);
    spans = calloc((size_t)n_entries + 1, sizeof *spans);
    if (!spans) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "%s: out of memory for %d header entries", path, n_entries);
    int ns = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: '__metadata__' is not an object", path);
            continue;
        }
        rs_st_tensor t;
        memset(&t, 0, sizeof t);
        uint64_t b = 0, en = 0;
        RS_TRY_GOTO(parse_entry(&t, &b, &en, e, path, data, data_size), done);
        t.file = fi;
        t.name = strdup(e->string);
        if (!t.name) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory");
        err = push_tensor(st, cap, &t);
        if (err) {
            free(t.name);
            goto done;
        }
        spans[ns].begin = b;
        spans[ns].end = en;
        spans[ns].name = st->tensors[st->n_tensors - 1].name;
        ns++;
    }
    /* The byte buffer must be covered exactly: no overlaps (aliasing), no holes, nothing trailing. */
    qsort(spans, (size_t)ns, sizeof *spans, span_cmp);
    uint64_t pos = 0;
    const char *prev = NULL;
    for (int i = 0; i < ns; i++) {
        if (spans[i].begin < pos)
            RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap (bytes %llu..%llu and %llu..%llu)",
                         path, prev, spans[i].name, (unsigned long long)spans[i - 1].begin, (unsigned long long)pos,
                         (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end);
        if (spans[i].begin > pos)
            RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: tensor '%s': %llu unindexed bytes before it (data_offsets begin at %llu, "
                         "previous tensor ends at %llu)", path, spans[i].name,
                         (unsigned long long)(spans[i].begin - pos), (unsigned long long)spans[i].begin,
                         (unsigned long long)pos);
        pos = spans[i].end;
        prev = spans[i].name;
    }
    if (pos != data_size)
        RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: %llu bytes after the last tensor%s%s%s are not indexed by the header", path,
                     (unsigned long long)(data_size - pos), prev ? " ('" : "", prev ? prev : "", prev ? "')" : "");
done:
    free(spans);
    cJSON_Delete(root);
    return err;
}

/* ---- files ------------------------------------------------------------------------------------- */

static rs_err add_file(rs_safetensors *st, int *cap, const char *path) {
    int fi = st->n_files;
    char **np = realloc(st->paths, (size_t)(fi + 1) * sizeof *np);
    RS_CHECK_ALLOC(np);
    st->paths = np;
    void **nm = realloc(st->maps, (size_t)(fi + 1) * sizeof *nm);
    RS_CHECK_ALLOC(nm);
    st->maps = nm;
    size_t *ns = realloc(st->map_sizes, (size_t)(fi + 1) * sizeof *ns);
    RS_CHECK_ALLOC(ns);
    st->map_sizes = ns;
    st->paths[fi] = strdup(path);
    RS_CHECK_ALLOC(st->paths[fi]);
    st->maps[fi] = NULL;
    st->map_sizes[fi] = 0;
    st->n_files = fi + 1;

    int fd = open(path, O_RDONLY);
    if (fd < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        RS_FAIL(RS_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        RS_FAIL(RS_ERR_FORMAT, "%s: file is %lld bytes, too short for a safetensors header (truncated?)", path,
                (long long)sb.st_size);
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int merr = errno;
    close(fd);
    if (map == MAP_FAILED) RS_FAIL(RS_ERR_IO, "%s: cannot mmap: %s", path, strerror(merr));
    st->maps[fi] = map;
    st->map_sizes[fi] = (size_t)sb.st_size;
    RS_TRY(parse_header(st, cap, fi, path, map, (uint64_t)sb.st_size));
    return RS_OK;
}

static int tensor_cmp(const void *a, const void *b) {
    return strcmp(((const rs_st_tensor *)a)->name, ((const rs_st_tensor *)b)->name);
}

static rs_err finish(rs_safetensors *st) {
    if (st->n_tensors > 1) qsort(st->tensors, (size_t)st->n_tensors, sizeof *st->tensors, tensor_cmp);
    for (int i = 1; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i - 1].name, st->tensors[i].name))
            RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s' appears twice%s%s", st->paths[st->tensors[i].file],
                    st->tensors[i].name, st->tensors[i - 1].file != st->tensors[i].file ? " (also in " : "",
                    st->tensors[i - 1].file != st->tensors[i].file ? st->paths[st->tensors[i - 1].file] : "");
    return RS_OK;
}

rs_err rs_safetensors_open_file(rs_safetensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    int cap = 0;
    rs_err err = RS_OK;
    RS_TRY_GOTO(add_file(st, &cap, path), fail);
    RS_TRY_GOTO(finish(st), fail);
    return RS_OK;
fail:
    rs_safetensors_free(st);
    return err;
}

static rs_err open_sharded(rs_safetensors *st, int *cap, const char *dir, const char *index_path) {
    char *text = NULL;
    size_t len = 0;
    RS_TRY(rs_read_file(&text, &len, index_path, (size_t)64 << 20));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) RS_FAIL(RS_ERR_FORMAT, "%s: not valid JSON", index_path);
    rs_err err = RS_OK;
    char **names = NULL;
    int n_names = 0;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: no 'weight_map' object", index_path);
    int n_entries = cJSON_GetArraySize(wm);
    names = calloc((size_t)n_entries + 1, sizeof *names);
    if (!names) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "out of memory");
    const cJSON *e;
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e))
            RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: weight_map entry for '%s' is not a file name", index_path, e->string);
        const char *f = e->valuestring;
        /* shards live in the checkpoint directory: refuse paths that would leave it */
        if (!*f || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, ".."))
            RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: weight_map entry for '%s' names '%s', not a file in the directory",
                         index_path, e->string, f);
        int seen = 0;
        for (int i = 0; i < n_names && !seen; i++) seen = !strcmp(names[i], f);
        if (!seen) names[n_names++] = e->valuestring;
    }
    if (!n_names) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: weight_map is empty", index_path);
    for (int i = 0; i < n_names; i++) {
        char path[4096];
        RS_TRY_GOTO(rs_path_join(path, sizeof path, dir, names[i]), done);
        RS_TRY_GOTO(add_file(st, cap, path), done);
    }
    RS_TRY_GOTO(finish(st), done);
    /* every mapped tensor must be in the shard the map names */
    cJSON_ArrayForEach(e, wm) {
        const rs_st_tensor *t = rs_safetensors_find(st, e->string);
        if (!t) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: tensor '%s' is listed in the weight_map but is in no shard",
                             index_path, e->string);
        const char *p = st->paths[t->file];
        size_t pl = strlen(p), fl = strlen(e->valuestring);
        if (pl < fl + 1 || strcmp(p + pl - fl, e->valuestring) || p[pl - fl - 1] != '/')
            RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: tensor '%s' is mapped to '%s' but found in %s", index_path,
                         e->string, e->valuestring, p);
    }
done:
    free(names);
    cJSON_Delete(root);
    return err;
}

rs_err rs_safetensors_open_dir(rs_safetensors *st, const char *dir) {
    memset(st, 0, sizeof *st);
    char index[4096], single[4096];
    RS_TRY(rs_path_join(index, sizeof index, dir, "model.safetensors.index.json"));
    RS_TRY(rs_path_join(single, sizeof single, dir, "model.safetensors"));
    int cap = 0;
    rs_err err = RS_OK;
    if (access(index, F_OK) == 0) {
        RS_TRY_GOTO(open_sharded(st, &cap, dir, index), fail);
    } else if (access(single, F_OK) == 0) {
        RS_TRY_GOTO(add_file(st, &cap, single), fail);
        RS_TRY_GOTO(finish(st), fail);
    } else {
        RS_FAIL_GOTO(fail, RS_ERR_IO,
                     "%s: no model.safetensors or model.safetensors.index.json (a Hugging Face checkpoint directory "
                     "with safetensors weights is needed; convert .bin checkpoints first)", dir);
    }
    return RS_OK;
fail:
    rs_safetensors_free(st);
    return err;
}

void rs_safetensors_free(rs_safetensors *st) {
    for (int i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    free(st->tensors);
    for (int i = 0; i < st->n_files; i++) {
        if (st->maps && st->maps[i]) munmap(st->maps[i], st->map_sizes[i]);
        if (st->paths) free(st->paths[i]);
    }
    free(st->paths);
    free(st->maps);
    free(st->map_sizes);
    memset(st, 0, sizeof *st);
}

const rs_st_tensor *rs_safetensors_find(const rs_safetensors *st, const char *name) {
    int lo = 0, hi = st->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->tensors[mid].name);
        if (!c) return &st->tensors[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *rs_safetensors_path(const rs_safetensors *st, const rs_st_tensor *t) {
    return t->file >= 0 && t->file < st->n_files ? st->paths[t->file] : "?";
}

/* ---- conversion -------------------------------------------------------------------------------- */

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (!man) {
        bits = sign;
    } else { /* subnormal: exact in fp32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

rs_err rs_st_tensor_to_f32(float *out, const rs_safetensors *st, const rs_st_tensor *t) {
    return rs_st_tensor_range_to_f32(out, st, t, 0, (size_t)t->numel);
}

rs_err rs_st_tensor_range_to_f32(float *out, const rs_safetensors *st, const rs_st_tensor *t, size_t first, size_t n) {
    if (first > (size_t)t->numel || n > (size_t)t->numel - first)
        RS_FAIL(RS_ERR_INTERNAL, "%s: elements [%zu, %zu) of tensor '%s' asked for; it has %lld",
                rs_safetensors_path(st, t), first, first + n, t->name, (long long)t->numel);
    const unsigned char *p = t->data + first * (size_t)rs_st_dtype_size(t->dtype);
    switch (t->dtype) {
    case RS_ST_F32:
        memcpy(out, p, n * 4);
        break;
    case RS_ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = f16_to_f32(h);
        }
        break;
    case RS_ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, 4);
        }
        break;
    case RS_ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        break;
    default:
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s; only F32, F16, BF16 and F64 weights are supported",
                rs_safetensors_path(st, t), t->name, rs_st_dtype_name(t->dtype));
    }
    return RS_OK;
}

/* ---- writing ----------------------------------------------------------------------------------- */

static int write_all(FILE *f, const void *p, size_t n) { return !n || fwrite(p, 1, n, f) == n; }

rs_err rs_safetensors_write(const char *path, const rs_st_out *t, int n, const char *const *meta, int n_meta) {
    char tmp[4096];
    RS_CHECK(snprintf(tmp, sizeof tmp, "%s.tmp", path) < (int)sizeof tmp, RS_ERR_INVAL, "path too long: %s", path);
    cJSON *root = cJSON_CreateObject();
    RS_CHECK_ALLOC(root);
    rs_err err = RS_OK;
    char *hdr = NULL;
    FILE *f = NULL;
    uint64_t off = 0;
    if (n_meta > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; m && i < n_meta; i++)
            if (!cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1])) m = NULL;
        if (!m) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "%s: out of memory building the header", path);
    }
    for (int i = 0; i < n; i++) {
        size_t esz = rs_st_dtype_size(t[i].dtype);
        if (!t[i].name || !t[i].name[0] || !strcmp(t[i].name, "__metadata__") || !esz || t[i].ndim < 0 ||
            t[i].ndim > RS_ST_MAX_DIMS || cJSON_GetObjectItemCaseSensitive(root, t[i].name))
            RS_FAIL_GOTO(done, RS_ERR_INVAL, "%s: tensor %d ('%s'): empty, reserved or duplicate name, or bad dtype/rank",
                         path, i, t[i].name ? t[i].name : "");
        uint64_t bytes = esz;
        for (int j = 0; j < t[i].ndim; j++) {
            if (t[i].shape[j] < 0 || (t[i].shape[j] && bytes > UINT64_MAX / (uint64_t)t[i].shape[j]))
                RS_FAIL_GOTO(done, RS_ERR_INVAL, "%s: tensor '%s': bad shape", path, t[i].name);
            bytes *= (uint64_t)t[i].shape[j];
        }
        cJSON *o = cJSON_AddObjectToObject(root, t[i].name);
        cJSON *sh = o ? cJSON_AddArrayToObject(o, "shape") : NULL;
        cJSON *of = o ? cJSON_AddArrayToObject(o, "data_offsets") : NULL;
        int ok = o && sh && of && cJSON_AddStringToObject(o, "dtype", rs_st_dtype_name(t[i].dtype));
        for (int j = 0; ok && j < t[i].ndim; j++) ok = cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[j]));
        ok = ok && cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off)) &&
             cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + bytes)));
        if (!ok) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "%s: out of memory building the header", path);
        off += bytes;
    }
    hdr = cJSON_PrintUnformatted(root);
    if (!hdr) RS_FAIL_GOTO(done, RS_ERR_NOMEM, "%s: out of memory printing the header", path);
    size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8;
    unsigned char len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (unsigned char)((uint64_t)padded >> (8 * b));
    f = fopen(tmp, "wb");
    if (!f) RS_FAIL_GOTO(done, RS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    int ok = write_all(f, len8, 8) && write_all(f, hdr, hlen);
    for (size_t p = hlen; ok && p < padded; p++) ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < n; i++) {
        size_t bytes = rs_st_dtype_size(t[i].dtype);
        for (int j = 0; j < t[i].ndim; j++) bytes *= (size_t)t[i].shape[j];
        ok = write_all(f, t[i].data, bytes);
    }
    if (fclose(f) != 0) ok = 0;
    f = NULL;
    if (!ok) {
        remove(tmp);
        RS_FAIL_GOTO(done, RS_ERR_IO, "%s: write failed (disk full?): %s", tmp, strerror(errno));
    }
    RS_TRY_GOTO(rs_file_commit(tmp, path), done);
done:
    if (f) {
        fclose(f);
        remove(tmp);
    }
    cJSON_free(hdr);
    cJSON_Delete(root);
    return err;
}
