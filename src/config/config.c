/* Experiment configuration: YAML -> typed struct, defaults, checks with FILE:LINE:COL errors,
 * canonical YAML output and hash. Schema and defaults: docs/config.md. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "resae/config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "resae/util.h"
#include "resae/version.h"

const char *const rs_variant_names[RS_VARIANT_COUNT] = {"raw", "resae"};
const char *const rs_format_names[3] = {"hdf5", "bin_u16", "bin_u32"};
const char *const rs_dtype_names[2] = {"float32", "float16"};
const char *const rs_bdec_init_names[3] = {"geometric_median", "mean", "zero"};
const char *const rs_ce_mode_names[RS_CE_MODE_COUNT] = {"single", "tf", "so"};
const char *const rs_ablation_names[RS_ABLATION_COUNT] = {"zero", "mean"};

#define I64_MAX_TOKENS ((int64_t)1e15)

/* ============================================================================================
 * Locations and error messages
 * ========================================================================================== */

static rs_err loc_record(rs_config *c, const char *key, rs_loc loc) {
    /* every value read is recorded once, so this bounds what aliases can multiply */
    if (c->n_locs >= RS_CONFIG_MAX_VALUES)
        return rs_err_set(RS_ERR_CONFIG, __FILE__, __LINE__, __func__,
                          "%s:%d:%d: %s: the config holds more than %d values (counting each use of an alias); "
                          "no experiment needs that many", c->path, loc.line, loc.col, key, RS_CONFIG_MAX_VALUES);
    if (c->n_locs == c->cap_locs) {
        int cap = c->cap_locs ? 2 * c->cap_locs : 64;
        void *p = realloc(c->locs, (size_t)cap * sizeof *c->locs);
        RS_CHECK_ALLOC(p);
        c->locs = p;
        c->cap_locs = cap;
    }
    struct rs_config_loc_entry *e = &c->locs[c->n_locs++];
    snprintf(e->key, sizeof e->key, "%s", key);
    e->loc = loc;
    return RS_OK;
}

rs_loc rs_config_loc(const rs_config *c, const char *key) {
    char k[96];
    snprintf(k, sizeof k, "%s", key ? key : "");
    for (;;) {
        for (int i = 0; i < c->n_locs; i++)
            if (!strcmp(c->locs[i].key, k)) return c->locs[i].loc;
        /* strip the last component: "a.b[3]" -> "a.b" -> "a" */
        char *dot = strrchr(k, '.'), *br = strrchr(k, '[');
        char *cut = dot > br ? dot : br;
        if (!cut) break;
        *cut = '\0';
    }
    return (rs_loc){0, 0};
}

static rs_err vfail(const rs_config *c, rs_err code, rs_loc loc, const char *key, const char *file, int line,
                    const char *func, const char *fmt, va_list ap) {
    char msg[1536];
    vsnprintf(msg, sizeof msg, fmt, ap);
    const char *path = c && c->path ? c->path : "<config>";
    if (loc.line > 0 && key && key[0])
        return rs_err_set(code, file, line, func, "%s:%d:%d: %s: %s", path, loc.line, loc.col, key, msg);
    if (loc.line > 0) return rs_err_set(code, file, line, func, "%s:%d:%d: %s", path, loc.line, loc.col, msg);
    if (key && key[0]) return rs_err_set(code, file, line, func, "%s: %s (default): %s", path, key, msg);
    return rs_err_set(code, file, line, func, "%s: %s", path, msg);
}

rs_err rs_config_fail_at(const rs_config *c, rs_err code, const char *key, const char *file, int line,
                         const char *func, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rs_err e = vfail(c, code, rs_config_loc(c, key), key, file, line, func, fmt, ap);
    va_end(ap);
    return e;
}

/* ============================================================================================
 * YAML node helpers
 * ========================================================================================== */

typedef struct parser {
    rs_config *c;
    yaml_document_t *doc;
} parser;

static rs_loc node_loc(const yaml_node_t *n) {
    return (rs_loc){(int)n->start_mark.line + 1, (int)n->start_mark.column + 1};
}

/* Fail at node N (its own position, even if not recorded). */
static rs_err pfail(parser *p, const yaml_node_t *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static rs_err pfail(parser *p, const yaml_node_t *n, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rs_err e = vfail(p->c, RS_ERR_CONFIG, n ? node_loc(n) : rs_config_loc(p->c, key), key, __FILE__, __LINE__,
                     __func__, fmt, ap);
    va_end(ap);
    return e;
}
#define PFAIL(...) return pfail(__VA_ARGS__)

static const char *sval(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

static int is_plain(const yaml_node_t *n) {
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static int is_null(const yaml_node_t *n) {
    if (!is_plain(n)) return 0;
    const char *s = sval(n);
    return !s[0] || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Keep messages on one line: control characters from the file become '?'. */
static void sanitize(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

/* Describe a node for "found ..." in messages. */
static void describe(char *out, size_t n, const yaml_node_t *v) {
    if (v->type == YAML_MAPPING_NODE) snprintf(out, n, "a mapping");
    else if (v->type == YAML_SEQUENCE_NODE) snprintf(out, n, "a list");
    else if (is_null(v)) snprintf(out, n, "null");
    else {
        const char *s = sval(v);
        size_t len = strlen(s);
        if (len > 40) snprintf(out, n, "'%.37s...'", s);
        else snprintf(out, n, "'%s'", s);
        sanitize(out);
    }
}

static yaml_node_t *get_node(parser *p, yaml_node_item_t i) { return yaml_document_get_node(p->doc, i); }

static void join_key(char *out, size_t n, const char *parent, const char *child) {
    if (parent && parent[0]) snprintf(out, n, "%s.%s", parent, child);
    else snprintf(out, n, "%s", child);
    sanitize(out);
}

/* Edit distance for "did you mean" hints. */
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            int m = sub < del ? sub : del;
            m = m < ins ? m : ins;
            /* a transposition counts as one edit */
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < m)
                m = d[i - 2][j - 2] + 1;
            d[i][j] = m;
        }
    return d[la][lb];
}

/* "did you mean 'x'? (allowed: a, b, c)" or "allowed: a, b, c". */
static void hint_choices(char *out, size_t n, const char *got, const char *const *names, int count) {
    int best = -1, bestd = 99;
    for (int i = 0; i < count; i++) {
        int dd = edit_distance(got, names[i]);
        if (dd < bestd) bestd = dd, best = i;
    }
    size_t len = strlen(got);
    int limit = len <= 3 ? 1 : len <= 6 ? 2 : 3;
    size_t o = 0;
    out[0] = '\0';
    if (best >= 0 && bestd <= limit) o += (size_t)snprintf(out, n, "did you mean '%s'? (", names[best]);
    o += (size_t)snprintf(out + (o < n ? o : n - 1), o < n ? n - o : 1, "allowed: ");
    for (int i = 0; i < count && o < n; i++)
        o += (size_t)snprintf(out + o, n - o, "%s%s", i ? ", " : "", names[i]);
    if (best >= 0 && bestd <= limit && o < n) snprintf(out + o, n - o, ")");
}

/* ---- mappings with a fixed key set ---- */

typedef struct field {
    const char *name;
    yaml_node_t *val; /* NULL if absent */
} field;

static rs_err map_fields(parser *p, yaml_node_t *map, const char *key, field *f, int nf) {
    if (map->type != YAML_MAPPING_NODE) {
        char found[64], keys[512];
        describe(found, sizeof found, map);
        size_t o = 0;
        keys[0] = '\0';
        for (int i = 0; i < nf && o < sizeof keys; i++)
            o += (size_t)snprintf(keys + o, sizeof keys - o, "%s%s", i ? ", " : "", f[i].name);
        PFAIL(p, map, key, "expected a mapping (keys: %s), found %s", keys, found);
    }
    const char *names[64];
    for (int i = 0; i < nf && i < 64; i++) names[i] = f[i].name;
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = get_node(p, pr->key), *v = get_node(p, pr->value);
        if (!k || !v) PFAIL(p, map, key, "malformed mapping");
        if (k->type != YAML_SCALAR_NODE || is_null(k))
            PFAIL(p, k, key, "keys must be plain names, found %s; write 'name: value'",
                  k->type == YAML_SCALAR_NODE ? "an empty key" : k->type == YAML_SEQUENCE_NODE ? "a list" : "a mapping");
        if (strlen(sval(k)) != k->data.scalar.length) PFAIL(p, k, key, "a key contains a NUL character");
        char sub[96];
        join_key(sub, sizeof sub, key, sval(k));
        int hit = -1;
        for (int i = 0; i < nf; i++)
            if (!strcmp(f[i].name, sval(k))) hit = i;
        if (hit < 0) {
            char hint[600];
            hint_choices(hint, sizeof hint, sval(k), names, nf);
            PFAIL(p, k, sub, "unknown key; %s", hint);
        }
        if (f[hit].val) {
            rs_loc first = rs_config_loc(p->c, sub);
            PFAIL(p, k, sub, "duplicate key (first given at line %d, column %d); keep one", first.line, first.col);
        }
        f[hit].val = v;
        RS_TRY(loc_record(p->c, sub, node_loc(v)));
    }
    return RS_OK;
}

static rs_err require(parser *p, yaml_node_t *map, const char *key, const field *f, const char *what) {
    if (!f->val) {
        char sub[96];
        join_key(sub, sizeof sub, key, f->name);
        if (map) PFAIL(p, map, key && key[0] ? key : "(top level)", "missing required key '%s' (%s)", f->name, what);
        RS_CONFIG_FAIL(p->c, sub, "missing required key '%s' (%s)", f->name, what);
    }
    return RS_OK;
}

/* ---- scalars ---- */

/* Parse a plain integer: decimal with optional sign and '_' separators, or a float notation that
 * is an exact integer (1e6, 5.0e5). Returns 0 ok, 1 not an integer, 2 out of int64 range. */
static int parse_int(const char *s, int64_t *out) {
    const char *q = s;
    int neg = 0;
    if (*q == '+' || *q == '-') neg = (*q++ == '-');
    if (*q >= '0' && *q <= '9') {
        uint64_t v = 0;
        int digits = 0, over = 0;
        const char *r = q;
        for (; *r; r++) {
            if (*r == '_') continue;
            if (*r < '0' || *r > '9') break;
            digits++;
            if (v > (UINT64_MAX - 9) / 10) over = 1;
            else v = v * 10 + (uint64_t)(*r - '0');
        }
        if (!*r && digits) {
            if (over || v > (uint64_t)INT64_MAX + (uint64_t)neg) return 2;
            *out = neg ? (int64_t)(0 - v) : (int64_t)v;
            return 0;
        }
    }
    /* float notation */
    char *end = NULL;
    errno = 0;
    double d = strtod(s, &end);
    if (!end || end == s || *end || !strpbrk(s, "0123456789")) return 1;
    if (strpbrk(s, "xXpP") || strstr(s, "nan") || strstr(s, "NAN") || strstr(s, "inf") || strstr(s, "INF")) return 1;
    if (errno == ERANGE || fabs(d) >= 9.2e18) return 2;
    if (d != floor(d)) return 1;
    *out = (int64_t)d;
    return 0;
}

static rs_err get_int(parser *p, yaml_node_t *n, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    char found[64];
    describe(found, sizeof found, n);
    if (!is_plain(n) || is_null(n))
        PFAIL(p, n, key, "expected an integer in [%lld, %lld], found %s", (long long)lo, (long long)hi, found);
    int64_t v = 0;
    int r = parse_int(sval(n), &v);
    if (r == 1) PFAIL(p, n, key, "expected an integer in [%lld, %lld], found %s", (long long)lo, (long long)hi, found);
    if (r == 2 || v < lo || v > hi)
        PFAIL(p, n, key, "%s is out of range; allowed: [%lld, %lld]", found, (long long)lo, (long long)hi);
    *out = v;
    return RS_OK;
}

/* Number in an interval; lo_open/hi_open make the bounds exclusive. */
static rs_err get_num(parser *p, yaml_node_t *n, const char *key, double lo, int lo_open, double hi, int hi_open,
                      double *out) {
    char found[64], range[96];
    describe(found, sizeof found, n);
    snprintf(range, sizeof range, "%c%g, %g%c", lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']');
    if (!is_plain(n) || is_null(n)) PFAIL(p, n, key, "expected a number in %s, found %s", range, found);
    const char *s = sval(n);
    char *end = NULL;
    errno = 0;
    double d = strtod(s, &end);
    if (!end || end == s || *end || strpbrk(s, "xXpP") || !strpbrk(s, "0123456789"))
        PFAIL(p, n, key, "expected a number in %s, found %s", range, found);
    if (!isfinite(d) || errno == ERANGE || d < lo || d > hi || (lo_open && d == lo) || (hi_open && d == hi))
        PFAIL(p, n, key, "%s is out of range; allowed: %s", found, range);
    *out = d;
    return RS_OK;
}

static rs_err get_bool(parser *p, yaml_node_t *n, const char *key, int *out) {
    if (is_plain(n)) {
        const char *s = sval(n);
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return *out = 1, RS_OK;
        if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return *out = 0, RS_OK;
    }
    char found[64];
    describe(found, sizeof found, n);
    PFAIL(p, n, key, "expected true or false, found %s", found);
}

static rs_err get_str(parser *p, yaml_node_t *n, const char *key, char **out) {
    if (n->type != YAML_SCALAR_NODE || is_null(n) || !sval(n)[0]) {
        char found[64];
        describe(found, sizeof found, n);
        PFAIL(p, n, key, "expected a non-empty string, found %s", found);
    }
    if (strlen(sval(n)) != n->data.scalar.length) PFAIL(p, n, key, "the string contains a NUL character");
    if (n->data.scalar.length > 4000) PFAIL(p, n, key, "string longer than 4000 characters");
    char *s = strdup(sval(n));
    RS_CHECK_ALLOC(s);
    free(*out);
    *out = s;
    return RS_OK;
}

static rs_err get_enum(parser *p, yaml_node_t *n, const char *key, const char *const *names, int count, int *out) {
    if (n->type == YAML_SCALAR_NODE && !is_null(n))
        for (int i = 0; i < count; i++)
            if (!strcmp(sval(n), names[i])) return *out = i, RS_OK;
    char found[64], hint[600];
    describe(found, sizeof found, n);
    hint_choices(hint, sizeof hint, n->type == YAML_SCALAR_NODE ? sval(n) : "", names, count);
    PFAIL(p, n, key, "unknown value %s; %s", found, hint);
}

/* ---- lists ---- */

enum { LIST_UNIQUE = 1, LIST_SORTED = 2, LIST_MAY_BE_EMPTY = 4, LIST_LONG = 8 };

static rs_err seq_check(parser *p, yaml_node_t *n, const char *key, const char *what, int flags, int *len) {
    if (n->type != YAML_SEQUENCE_NODE) {
        char found[64];
        describe(found, sizeof found, n);
        PFAIL(p, n, key, "expected a list of %s (e.g. [a, b]), found %s", what, found);
    }
    ptrdiff_t cnt = n->data.sequence.items.top - n->data.sequence.items.start;
    if (cnt == 0 && !(flags & LIST_MAY_BE_EMPTY)) PFAIL(p, n, key, "the list is empty; give at least one %s", what);
    int max = (flags & (LIST_SORTED | LIST_LONG)) ? RS_CONFIG_MAX_LIST : RS_CONFIG_MAX_SHORT_LIST;
    if (cnt > max) PFAIL(p, n, key, "the list has %td items, more than the %d allowed", cnt, max);
    *len = (int)cnt;
    return RS_OK;
}

static rs_err get_int_list(parser *p, yaml_node_t *n, const char *key, const char *what, int64_t lo, int64_t hi,
                           int flags, rs_int_list *out) {
    int cnt = 0;
    RS_TRY(seq_check(p, n, key, what, flags, &cnt));
    free(out->v);
    out->v = NULL;
    out->n = 0;
    if (cnt) {
        out->v = calloc((size_t)cnt, sizeof *out->v);
        RS_CHECK_ALLOC(out->v);
    }
    for (int i = 0; i < cnt; i++) {
        yaml_node_t *it = get_node(p, n->data.sequence.items.start[i]);
        char sub[96];
        snprintf(sub, sizeof sub, "%s[%d]", key, i);
        if (!it) PFAIL(p, n, sub, "malformed list");
        RS_TRY(loc_record(p->c, sub, node_loc(it)));
        RS_TRY(get_int(p, it, sub, lo, hi, &out->v[i]));
        out->n = i + 1;
        /* sorted lists only need their neighbour compared; the others are short */
        for (int j = (flags & LIST_SORTED) && i > 0 ? i - 1 : 0; j < i; j++) {
            if ((flags & LIST_UNIQUE) && out->v[j] == out->v[i])
                PFAIL(p, it, sub, "%s %lld is listed twice (also item %d); list each once", what,
                      (long long)out->v[i], j);
        }
        if ((flags & LIST_SORTED) && i > 0 && out->v[i - 1] > out->v[i])
            PFAIL(p, it, sub, "%s must be in increasing order: %lld comes after %lld; sort the list", what,
                  (long long)out->v[i], (long long)out->v[i - 1]);
    }
    return RS_OK;
}

static rs_err get_enum_list(parser *p, yaml_node_t *n, const char *key, const char *what, const char *const *names,
                            int count, int *out, int *n_out) {
    int cnt = 0;
    RS_TRY(seq_check(p, n, key, what, 0, &cnt));
    int seen[8] = {0};
    *n_out = 0;
    for (int i = 0; i < cnt; i++) {
        yaml_node_t *it = get_node(p, n->data.sequence.items.start[i]);
        char sub[96];
        snprintf(sub, sizeof sub, "%s[%d]", key, i);
        if (!it) PFAIL(p, n, sub, "malformed list");
        RS_TRY(loc_record(p->c, sub, node_loc(it)));
        int v = 0;
        RS_TRY(get_enum(p, it, sub, names, count, &v));
        if (seen[v]) PFAIL(p, it, sub, "%s '%s' is listed twice; list each once", what, names[v]);
        seen[v] = 1;
        out[(*n_out)++] = v;
    }
    return RS_OK;
}

/* ============================================================================================
 * Paths and names
 * ========================================================================================== */

/* Lexically drop "." components, "x/.." pairs and repeated or trailing slashes, in place
 * (symbolic links are not followed: the path may not exist yet). */
static void normalize_path(char *s) {
    int abs = s[0] == '/';
    char *q = s, *out = s + abs; /* out: end of the text written so far (never ahead of q) */
    int kept = 0;                /* components written that ".." may remove */
    while (*q) {
        while (*q == '/') q++;
        if (!*q) break;
        char *e = q;
        while (*e && *e != '/') e++;
        size_t n = (size_t)(e - q);
        if (n == 1 && q[0] == '.') {
            /* "." adds nothing */
        } else if (n == 2 && q[0] == '.' && q[1] == '.') {
            if (kept > 0) {
                out--;
                while (out > s + abs && out[-1] != '/') out--;
                if (out > s + abs) out--;
                kept--;
            } else if (!abs) {
                if (out > s) *out++ = '/';
                memmove(out, "..", 2);
                out += 2;
            } /* "/.." is "/" */
        } else {
            if (out > s + abs) *out++ = '/';
            memmove(out, q, n);
            out += n;
            kept++;
        }
        q = e;
    }
    if (out == s) *out++ = '.';
    *out = '\0';
}

static rs_err resolve_path(const rs_config *c, const char *p, char **out) {
    char *r = NULL;
    if (p[0] == '/') r = strdup(p);
    else {
        const char *q = p;
        while (q[0] == '.' && q[1] == '/') q += 2; /* drop leading "./" */
        size_t n = strlen(c->dir) + strlen(q) + 2;
        r = malloc(n);
        if (r) snprintf(r, n, "%s/%s", c->dir, q[0] ? q : ".");
    }
    RS_CHECK_ALLOC(r);
    normalize_path(r);
    free(*out);
    *out = r;
    return RS_OK;
}

static rs_err get_name(parser *p, yaml_node_t *n, const char *key, char *out) {
    char *s = NULL;
    RS_TRY(get_str(p, n, key, &s));
    size_t len = strlen(s);
    int ok = len < RS_CONFIG_NAME_MAX;
    for (size_t i = 0; ok && i < len; i++) {
        char ch = s[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
             ch == '.' || ch == '-';
    }
    if (!ok) {
        char found[64];
        describe(found, sizeof found, n);
        free(s);
        PFAIL(p, n, key, "invalid name %s; use 1-%d characters from A-Z a-z 0-9 _ . -", found,
              RS_CONFIG_NAME_MAX - 1);
    }
    memcpy(out, s, len + 1);
    free(s);
    return RS_OK;
}

/* ============================================================================================
 * Defaults
 * ========================================================================================== */

static rs_err set_defaults(rs_config *c) {
    c->seed = 0;
    c->data.format = -1; /* auto until resolved */
    c->data.dataset = strdup("/tokens");
    RS_CHECK_ALLOC(c->data.dataset);
    c->data.exclude_first_position = 1;
    c->data.calibration = 500000;
    c->data.train = 10000000;
    c->data.eval = 1000000;
    c->layers.regression_auto = 1;
    c->n_variants = 2;
    c->variants[0] = RS_VARIANT_RAW;
    c->variants[1] = RS_VARIANT_RESAE;
    c->sae.expansion = 8;
    c->affine.lambda_rel = 1e-4;
    c->affine.max_retries = 4;
    c->affine.block_size = 64;
    c->train.batch_size = 4096;
    c->train.beta1 = 0.9;
    c->train.beta2 = 0.999;
    c->train.eps = 6.25e-10;
    c->train.warmup_steps = 100;
    c->train.decay_fraction = 0.2;
    c->train.aux_alpha = 0.03125;
    c->train.b_dec_init = RS_BDEC_GEOMETRIC_MEDIAN;
    c->train.checkpoint_every = 200;
    c->train.shuffle_buffer = 65536;
    c->eval.batch_sequences = 8;
    c->eval.ce = 1;
    c->eval.n_ce_modes = 3;
    for (int i = 0; i < 3; i++) c->eval.ce_modes[i] = i;
    c->eval.n_ablations = 2;
    c->eval.ablations[0] = RS_ABLATE_ZERO;
    c->eval.ablations[1] = RS_ABLATE_MEAN;
    c->eval.redundancy_block = 1024;
    c->eval.probing.l2_c = 1.0;
    c->eval.tpp.layer = -1;
    c->store.dtype = RS_DTYPE_F32;
    c->store.chunk_rows = 1024;
    c->parallel.group_size = 0;
    c->parallel.max_task_retries = 2;
    static const int64_t k_default[] = {40, 80, 160, 320}, topk_default[] = {1, 2, 5},
                         budgets_default[] = {10, 20, 50}, seeds_default[] = {0};
    struct {
        rs_int_list *l;
        const int64_t *v;
        int n;
    } lists[] = {{&c->sae.k, k_default, 4}, {&c->sae.seeds, seeds_default, 1},
                 {&c->eval.probing.top_k, topk_default, 3}, {&c->eval.tpp.budgets, budgets_default, 3}};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) {
        lists[i].l->v = malloc((size_t)lists[i].n * sizeof(int64_t));
        RS_CHECK_ALLOC(lists[i].l->v);
        memcpy(lists[i].l->v, lists[i].v, (size_t)lists[i].n * sizeof(int64_t));
        lists[i].l->n = lists[i].n;
    }
    return RS_OK;
}

/* ============================================================================================
 * Sections
 * ========================================================================================== */

static rs_err parse_data(parser *p, yaml_node_t *n) {
    rs_config *c = p->c;
    field f[] = {{"tokens", 0}, {"format", 0}, {"dataset", 0}, {"seq_len", 0}, {"exclude_first_position", 0},
                 {"split_seed", 0}, {"splits", 0}};
    RS_TRY(map_fields(p, n, "data", f, 7));
    RS_TRY(require(p, n, "data", &f[0], "the token file: HDF5 with an int32 (n_seq, seq_len) dataset, or flat .bin"));
    char *tok = NULL;
    RS_TRY(get_str(p, f[0].val, "data.tokens", &tok));
    rs_err err = resolve_path(c, tok, &c->data.tokens);
    free(tok);
    RS_TRY(err);
    int fmt = -1;
    if (f[1].val && !(is_plain(f[1].val) && !strcmp(sval(f[1].val), "auto"))) {
        static const char *const names[] = {"hdf5", "bin_u16", "bin_u32", "auto"};
        RS_TRY(get_enum(p, f[1].val, "data.format", names, 4, &fmt));
        if (fmt == 3) fmt = -1;
    }
    if (fmt < 0) {
        const char *dot = strrchr(c->data.tokens, '.');
        if (dot && (!strcmp(dot, ".h5") || !strcmp(dot, ".hdf5"))) fmt = RS_FORMAT_HDF5;
        else RS_CONFIG_FAIL(c, f[1].val ? "data.format" : "data.tokens",
                            "cannot tell the token format of '%s' from its extension (auto knows .h5/.hdf5); "
                            "set data.format to hdf5, bin_u16 or bin_u32", c->data.tokens);
    }
    c->data.format = fmt;
    if (f[2].val) RS_TRY(get_str(p, f[2].val, "data.dataset", &c->data.dataset));
    if (f[3].val && !is_null(f[3].val)) RS_TRY(get_int(p, f[3].val, "data.seq_len", 2, 1 << 20, &c->data.seq_len));
    if (c->data.format != RS_FORMAT_HDF5 && c->data.seq_len == 0)
        RS_CONFIG_FAIL(c, f[3].val ? "data.seq_len" : "data.format",
                       "flat %s token files need data.seq_len (tokens per sequence); add e.g. 'seq_len: 2048' "
                       "under data", rs_format_names[c->data.format]);
    if (f[4].val) RS_TRY(get_bool(p, f[4].val, "data.exclude_first_position", &c->data.exclude_first_position));
    if (f[5].val) RS_TRY(get_int(p, f[5].val, "data.split_seed", 0, INT64_MAX, &c->data.split_seed));
    if (f[6].val) {
        field s[] = {{"calibration", 0}, {"train", 0}, {"eval", 0}};
        RS_TRY(map_fields(p, f[6].val, "data.splits", s, 3));
        int64_t *dst[] = {&c->data.calibration, &c->data.train, &c->data.eval};
        for (int i = 0; i < 3; i++)
            if (s[i].val) {
                char key[64];
                snprintf(key, sizeof key, "data.splits.%s", s[i].name);
                RS_TRY(get_int(p, s[i].val, key, 1, I64_MAX_TOKENS, dst[i]));
            }
    }
    return RS_OK;
}

static rs_err parse_set(parser *p, yaml_node_t *n, int idx) {
    rs_config *c = p->c;
    rs_set_spec *s = &c->layers.sets[idx];
    char key[64], sub[96];
    snprintf(key, sizeof key, "layers.sets[%d]", idx);
    field f[] = {{"name", 0}, {"layers", 0}, {"start", 0}, {"gaps", 0}, {"count", 0}};
    RS_TRY(map_fields(p, n, key, f, 5));
    int explicit_ = f[1].val != NULL, family = f[2].val || f[3].val || f[4].val;
    if (explicit_ && family)
        PFAIL(p, f[f[2].val ? 2 : f[3].val ? 3 : 4].val, key,
              "a set has either 'layers' (explicit) or 'start'/'gaps'/'count' (a gap family), not both; "
              "split it into two items");
    if (!explicit_ && !family)
        PFAIL(p, n, key, "a set needs 'layers: [..]' (explicit) or 'gaps: [..]' with an optional 'start' (a gap family)");
    s->is_family = family;
    if (f[0].val) {
        join_key(sub, sizeof sub, key, "name");
        RS_TRY(get_name(p, f[0].val, sub, s->name));
    } else if (family) {
        snprintf(s->name, sizeof s->name, "gap");
    } else {
        snprintf(s->name, sizeof s->name, "set%d", idx);
    }
    if (explicit_) {
        join_key(sub, sizeof sub, key, "layers");
        RS_TRY(get_int_list(p, f[1].val, sub, "layer", 0, RS_CONFIG_MAX_LAYER, LIST_UNIQUE | LIST_SORTED, &s->layers));
        return RS_OK;
    }
    if (f[2].val) {
        join_key(sub, sizeof sub, key, "start");
        RS_TRY(get_int(p, f[2].val, sub, 0, RS_CONFIG_MAX_LAYER, &s->start));
    }
    join_key(sub, sizeof sub, key, "gaps");
    RS_TRY(require(p, n, key, &f[3], "the layer gaps of the family, e.g. [4, 6, 8]"));
    RS_TRY(get_int_list(p, f[3].val, sub, "gap", 1, RS_CONFIG_MAX_LAYER, LIST_UNIQUE, &s->gaps));
    if (f[4].val && !is_null(f[4].val) && !(is_plain(f[4].val) && !strcmp(sval(f[4].val), "auto"))) {
        join_key(sub, sizeof sub, key, "count");
        RS_TRY(get_int(p, f[4].val, sub, 2, RS_CONFIG_MAX_LAYER, &s->count));
    }
    if ((int64_t)strlen(s->name) + 8 > RS_CONFIG_NAME_MAX) {
        join_key(sub, sizeof sub, key, "name");
        RS_CONFIG_FAIL(c, sub, "a gap family's name must leave room for the gap suffix; use at most %d characters",
                       RS_CONFIG_NAME_MAX - 8);
    }
    return RS_OK;
}

/* Names of the sets after expansion (NAME<gap> for families) must be unique. */
static rs_err check_set_names(rs_config *c) {
    int total = 0;
    for (int i = 0; i < c->layers.n_sets; i++) total += c->layers.sets[i].is_family ? c->layers.sets[i].gaps.n : 1;
    if (total > RS_CONFIG_MAX_SETS)
        RS_CONFIG_FAIL(c, "layers.sets", "%d layer sets after expanding the gap families, more than the %d allowed",
                       total, RS_CONFIG_MAX_SETS);
    char (*names)[RS_CONFIG_NAME_MAX + 24] = calloc((size_t)total, sizeof *names);
    int *owner = calloc((size_t)total, sizeof *owner);
    rs_err err = RS_OK;
    if (!names || !owner) {
        free(names);
        free(owner);
        RS_FAIL(RS_ERR_NOMEM, "out of memory checking set names");
    }
    int m = 0;
    for (int i = 0; i < c->layers.n_sets; i++) {
        const rs_set_spec *s = &c->layers.sets[i];
        int cnt = s->is_family ? s->gaps.n : 1;
        for (int g = 0; g < cnt; g++) {
            if (s->is_family) snprintf(names[m], sizeof names[m], "%s%lld", s->name, (long long)s->gaps.v[g]);
            else snprintf(names[m], sizeof names[m], "%s", s->name);
            for (int j = 0; j < m; j++)
                if (!strcmp(names[j], names[m])) {
                    char key[64];
                    snprintf(key, sizeof key, "layers.sets[%d].name", i);
                    int fj = owner[j];
                    err = rs_config_fail_at(c, RS_ERR_CONFIG, key, __FILE__, __LINE__, __func__,
                                            "the set name '%s' is already used by layers.sets[%d]%s; give each set a "
                                            "unique name", names[m], fj,
                                            c->layers.sets[fj].is_family || s->is_family ? " (gap family members are named NAME<gap>)"
                                                                                      : "");
                    goto done;
                }
            owner[m++] = i;
        }
    }
done:
    free(names);
    free(owner);
    return err;
}

static rs_err parse_layers(parser *p, yaml_node_t *n) {
    rs_config *c = p->c;
    field f[] = {{"sets", 0}, {"regression", 0}};
    RS_TRY(map_fields(p, n, "layers", f, 2));
    RS_TRY(require(p, n, "layers", &f[0], "a list of layer sets"));
    int cnt = 0;
    RS_TRY(seq_check(p, f[0].val, "layers.sets", "layer set", LIST_LONG, &cnt));
    if (cnt > RS_CONFIG_MAX_SETS)
        PFAIL(p, f[0].val, "layers.sets", "%d sets, more than the %d allowed", cnt, RS_CONFIG_MAX_SETS);
    c->layers.sets = calloc((size_t)cnt, sizeof *c->layers.sets);
    RS_CHECK_ALLOC(c->layers.sets);
    c->layers.n_sets = cnt;
    for (int i = 0; i < cnt; i++) {
        yaml_node_t *it = get_node(p, f[0].val->data.sequence.items.start[i]);
        char key[64];
        snprintf(key, sizeof key, "layers.sets[%d]", i);
        if (!it) PFAIL(p, f[0].val, key, "malformed list");
        RS_TRY(loc_record(c, key, node_loc(it)));
        RS_TRY(parse_set(p, it, i));
    }
    RS_TRY(check_set_names(c));
    if (f[1].val && !is_null(f[1].val)) {
        c->layers.regression_auto = 0;
        RS_TRY(get_int_list(p, f[1].val, "layers.regression", "layer", 0, RS_CONFIG_MAX_LAYER,
                            LIST_UNIQUE | LIST_SORTED | LIST_MAY_BE_EMPTY, &c->layers.regression));
    }
    return RS_OK;
}

static rs_err parse_sae(parser *p, yaml_node_t *n) {
    rs_config *c = p->c;
    field f[] = {{"k", 0}, {"expansion", 0}, {"seeds", 0}};
    RS_TRY(map_fields(p, n, "sae", f, 3));
    if (f[0].val) RS_TRY(get_int_list(p, f[0].val, "sae.k", "k", 1, 1 << 24, LIST_UNIQUE, &c->sae.k));
    if (f[1].val) RS_TRY(get_int(p, f[1].val, "sae.expansion", 1, 1024, &c->sae.expansion));
    if (f[2].val) RS_TRY(get_int_list(p, f[2].val, "sae.seeds", "seed", 0, INT32_MAX, LIST_UNIQUE, &c->sae.seeds));
    return RS_OK;
}

static rs_err parse_affine(parser *p, yaml_node_t *n) {
    rs_config *c = p->c;
    field f[] = {{"lambda_rel", 0}, {"max_retries", 0}, {"block_size", 0}};
    RS_TRY(map_fields(p, n, "affine", f, 3));
    if (f[0].val) RS_TRY(get_num(p, f[0].val, "affine.lambda_rel", 0, 1, 1e6, 0, &c->affine.lambda_rel));
    if (f[1].val) RS_TRY(get_int(p, f[1].val, "affine.max_retries", 0, 20, &c->affine.max_retries));
    if (f[2].val) RS_TRY(get_int(p, f[2].val, "affine.block_size", 1, 4096, &c->affine.block_size));
    return RS_OK;
}

static int is_auto(const yaml_node_t *n) { return is_plain(n) && !strcmp(sval(n), "auto"); }

static rs_err parse_train(parser *p, yaml_node_t *n) {
    rs_config *c = p->c;
    field f[] = {{"tokens", 0},     {"batch_size", 0},     {"lr", 0},          {"adam", 0},
                 {"warmup_steps", 0}, {"decay_fraction", 0}, {"aux_alpha", 0}, {"dead_tokens", 0},
                 {"b_dec_init", 0}, {"checkpoint_every", 0}, {"shuffle_buffer", 0}};
    RS_TRY(map_fields(p, n, "train", f, 11));
    if (f[0].val && !is_auto(f[0].val)) RS_TRY(get_int(p, f[0].val, "train.tokens", 1, I64_MAX_TOKENS, &c->train.tokens));
    if (f[1].val) RS_TRY(get_int(p, f[1].val, "train.batch_size", 1, 1 << 24, &c->train.batch_size));
    if (f[2].val && !is_auto(f[2].val)) RS_TRY(get_num(p, f[2].val, "train.lr", 0, 1, 10, 0, &c->train.lr));
    if (f[3].val) {
        field a[] = {{"beta1", 0}, {"beta2", 0}, {"eps", 0}};
        RS_TRY(map_fields(p, f[3].val, "train.adam", a, 3));
        if (a[0].val) RS_TRY(get_num(p, a[0].val, "train.adam.beta1", 0, 0, 1, 1, &c->train.beta1));
        if (a[1].val) RS_TRY(get_num(p, a[1].val, "train.adam.beta2", 0, 0, 1, 1, &c->train.beta2));
        if (a[2].val) RS_TRY(get_num(p, a[2].val, "train.adam.eps", 0, 1, 1, 0, &c->train.eps));
    }
    if (f[4].val) RS_TRY(get_int(p, f[4].val, "train.warmup_steps", 0, INT32_MAX, &c->train.warmup_steps));
    if (f[5].val) RS_TRY(get_num(p, f[5].val, "train.decay_fraction", 0, 0, 1, 0, &c->train.decay_fraction));
    if (f[6].val) RS_TRY(get_num(p, f[6].val, "train.aux_alpha", 0, 0, 1e3, 0, &c->train.aux_alpha));
    if (f[7].val && !is_auto(f[7].val))
        RS_TRY(get_int(p, f[7].val, "train.dead_tokens", 1, I64_MAX_TOKENS, &c->train.dead_tokens));
    if (f[8].val) RS_TRY(get_enum(p, f[8].val, "train.b_dec_init", rs_bdec_init_names, 3, &c->train.b_dec_init));
    if (f[9].val) RS_TRY(get_int(p, f[9].val, "train.checkpoint_every", 1, INT32_MAX, &c->train.checkpoint_every));
    if (f[10].val) RS_TRY(get_int(p, f[10].val, "train.shuffle_buffer", 1, (int64_t)1 << 34, &c->train.shuffle_buffer));
    return RS_OK;
}

static rs_err parse_study(parser *p, yaml_node_t *n, const char *key, int is_tpp) {
    rs_config *c = p->c;
    field f[] = {{"enabled", 0}, {"data", 0}, {is_tpp ? "budgets" : "top_k", 0}, {is_tpp ? "layer" : "l2_c", 0}};
    RS_TRY(map_fields(p, n, key, f, 4));
    char sub[96];
    int *enabled = is_tpp ? &c->eval.tpp.enabled : &c->eval.probing.enabled;
    char **data = is_tpp ? &c->eval.tpp.data : &c->eval.probing.data;
    if (f[0].val) {
        join_key(sub, sizeof sub, key, "enabled");
        RS_TRY(get_bool(p, f[0].val, sub, enabled));
    }
    if (f[1].val && !is_null(f[1].val)) {
        join_key(sub, sizeof sub, key, "data");
        char *s = NULL;
        RS_TRY(get_str(p, f[1].val, sub, &s));
        rs_err err = resolve_path(c, s, data);
        free(s);
        RS_TRY(err);
    }
    if (f[2].val) {
        join_key(sub, sizeof sub, key, f[2].name);
        RS_TRY(get_int_list(p, f[2].val, sub, is_tpp ? "budget" : "K", 1, 1 << 24, LIST_UNIQUE | LIST_SORTED,
                            is_tpp ? &c->eval.tpp.budgets : &c->eval.probing.top_k));
    }
    if (f[3].val) {
        join_key(sub, sizeof sub, key, f[3].name);
        if (is_tpp) {
            if (!is_null(f[3].val)) RS_TRY(get_int(p, f[3].val, sub, 0, RS_CONFIG_MAX_LAYER, &c->eval.tpp.layer));
        } else {
            RS_TRY(get_num(p, f[3].val, sub, 0, 1, 1e12, 0, &c->eval.probing.l2_c));
        }
    }
    if (*enabled && !*data) {
        join_key(sub, sizeof sub, key, "enabled");
        RS_CONFIG_FAIL(c, sub, "%s is enabled but %s.data (the labelled sequences) is not set; add it or set "
                       "enabled: false", key, key);
    }
    return RS_OK;
}

static rs_err parse_eval(parser *p, yaml_node_t *n) {
    rs_config *c = p->c;
    field f[] = {{"batch_sequences", 0}, {"ce", 0}, {"ce_modes", 0}, {"ablations", 0},
                 {"redundancy_block", 0}, {"probing", 0}, {"tpp", 0}};
    RS_TRY(map_fields(p, n, "eval", f, 7));
    if (f[0].val) RS_TRY(get_int(p, f[0].val, "eval.batch_sequences", 1, 1 << 20, &c->eval.batch_sequences));
    if (f[1].val) RS_TRY(get_bool(p, f[1].val, "eval.ce", &c->eval.ce));
    if (f[2].val)
        RS_TRY(get_enum_list(p, f[2].val, "eval.ce_modes", "CE mode", rs_ce_mode_names, RS_CE_MODE_COUNT,
                             c->eval.ce_modes, &c->eval.n_ce_modes));
    if (f[3].val)
        RS_TRY(get_enum_list(p, f[3].val, "eval.ablations", "ablation", rs_ablation_names, RS_ABLATION_COUNT,
                             c->eval.ablations, &c->eval.n_ablations));
    if (f[4].val) RS_TRY(get_int(p, f[4].val, "eval.redundancy_block", 1, 1 << 20, &c->eval.redundancy_block));
    if (f[5].val) RS_TRY(parse_study(p, f[5].val, "eval.probing", 0));
    if (f[6].val) RS_TRY(parse_study(p, f[6].val, "eval.tpp", 1));
    return RS_OK;
}

static rs_err parse_store(parser *p, yaml_node_t *n) {
    field f[] = {{"activation_dtype", 0}, {"chunk_rows", 0}};
    RS_TRY(map_fields(p, n, "store", f, 2));
    if (f[0].val) RS_TRY(get_enum(p, f[0].val, "store.activation_dtype", rs_dtype_names, 2, &p->c->store.dtype));
    if (f[1].val) RS_TRY(get_int(p, f[1].val, "store.chunk_rows", 1, 1 << 24, &p->c->store.chunk_rows));
    return RS_OK;
}

static rs_err parse_parallel(parser *p, yaml_node_t *n) {
    field f[] = {{"group_size", 0}, {"max_task_retries", 0}};
    RS_TRY(map_fields(p, n, "parallel", f, 2));
    if (f[0].val) RS_TRY(get_int(p, f[0].val, "parallel.group_size", 0, 1 << 24, &p->c->parallel.group_size));
    if (f[1].val) RS_TRY(get_int(p, f[1].val, "parallel.max_task_retries", 0, 100, &p->c->parallel.max_task_retries));
    return RS_OK;
}

/* Checks across sections that need no model. */
static rs_err check_consistency(rs_config *c) {
    int64_t tokens = rs_config_train_tokens(c);
    if (tokens > c->data.train)
        RS_CONFIG_FAIL(c, "train.tokens", "%lld tokens per SAE exceed the %lld tokens of the train split; raise "
                       "data.splits.train or lower train.tokens", (long long)tokens, (long long)c->data.train);
    if (tokens < c->train.batch_size)
        RS_CONFIG_FAIL(c, c->train.tokens ? "train.tokens" : "train.batch_size",
                       "%lld training tokens are less than one batch of %lld; raise train.tokens (or "
                       "data.splits.train) or lower train.batch_size", (long long)tokens, (long long)c->train.batch_size);
    int64_t steps = rs_config_train_steps(c);
    int64_t decay = (int64_t)ceil(c->train.decay_fraction * (double)steps);
    if (c->train.warmup_steps + decay > steps)
        RS_CONFIG_FAIL(c, "train.warmup_steps", "%lld warm-up steps plus %lld decay steps exceed the %lld training "
                       "steps (train.tokens / train.batch_size); lower train.warmup_steps or train.decay_fraction",
                       (long long)c->train.warmup_steps, (long long)decay, (long long)steps);
    if (c->train.dead_tokens > tokens)
        RS_CONFIG_FAIL(c, "train.dead_tokens", "%lld is more than the %lld training tokens, so no latent could ever be "
                       "found dead; lower it or use auto", (long long)c->train.dead_tokens, (long long)tokens);
    if (c->train.shuffle_buffer < c->train.batch_size)
        RS_CONFIG_FAIL(c, "train.shuffle_buffer", "%lld tokens is smaller than one batch (%lld); make it at least "
                       "train.batch_size", (long long)c->train.shuffle_buffer, (long long)c->train.batch_size);
    return RS_OK;
}

/* ============================================================================================
 * Loading
 * ========================================================================================== */

static rs_err parse_root(parser *p, yaml_node_t *root) {
    rs_config *c = p->c;
    if (root->type != YAML_MAPPING_NODE) {
        char found[64];
        describe(found, sizeof found, root);
        PFAIL(p, root, "", "the config must be a mapping with keys such as 'name:', 'model:', 'data:', 'layers:'; "
              "found %s", found);
    }
    field f[] = {{"name", 0},     {"run_dir", 0}, {"seed", 0},   {"model", 0},  {"data", 0},
                 {"layers", 0},   {"variants", 0}, {"sae", 0},   {"affine", 0}, {"train", 0},
                 {"eval", 0},     {"store", 0},   {"parallel", 0}};
    enum { NF = sizeof f / sizeof *f };
    RS_TRY(map_fields(p, root, "", f, NF));
    RS_TRY(require(p, root, "", &f[0], "the experiment's name, e.g. 'name: demo'"));
    RS_TRY(get_name(p, f[0].val, "name", c->name));
    if (f[1].val && !is_null(f[1].val)) {
        char *s = NULL;
        RS_TRY(get_str(p, f[1].val, "run_dir", &s));
        rs_err err = resolve_path(c, s, &c->run_dir);
        free(s);
        RS_TRY(err);
    } else {
        char rel[RS_CONFIG_NAME_MAX + 8];
        snprintf(rel, sizeof rel, "runs/%s", c->name);
        RS_TRY(resolve_path(c, rel, &c->run_dir));
    }
    if (f[2].val) RS_TRY(get_int(p, f[2].val, "seed", 0, INT32_MAX, &c->seed));
    RS_TRY(require(p, root, "", &f[3], "the model section with 'path:' of the checkpoint directory"));
    {
        field m[] = {{"path", 0}};
        RS_TRY(map_fields(p, f[3].val, "model", m, 1));
        RS_TRY(require(p, f[3].val, "model", &m[0], "the Hugging Face checkpoint directory"));
        char *s = NULL;
        RS_TRY(get_str(p, m[0].val, "model.path", &s));
        rs_err err = resolve_path(c, s, &c->model.path);
        free(s);
        RS_TRY(err);
    }
    RS_TRY(require(p, root, "", &f[4], "the data section with 'tokens:'"));
    RS_TRY(parse_data(p, f[4].val));
    RS_TRY(require(p, root, "", &f[5], "the layers section with 'sets:'"));
    RS_TRY(parse_layers(p, f[5].val));
    if (f[6].val)
        RS_TRY(get_enum_list(p, f[6].val, "variants", "variant", rs_variant_names, RS_VARIANT_COUNT, c->variants,
                             &c->n_variants));
    if (f[7].val) RS_TRY(parse_sae(p, f[7].val));
    if (f[8].val) RS_TRY(parse_affine(p, f[8].val));
    if (f[9].val) RS_TRY(parse_train(p, f[9].val));
    if (f[10].val) RS_TRY(parse_eval(p, f[10].val));
    if (f[11].val) RS_TRY(parse_store(p, f[11].val));
    if (f[12].val) RS_TRY(parse_parallel(p, f[12].val));
    RS_TRY(check_consistency(c));
    return RS_OK;
}

static rs_err yaml_fail(const rs_config *c, const yaml_parser_t *yp) {
    const yaml_mark_t *m = &yp->problem_mark;
    char ctx[256] = "";
    if (yp->context)
        snprintf(ctx, sizeof ctx, " (%s at line %d, column %d)", yp->context, (int)yp->context_mark.line + 1,
                 (int)yp->context_mark.column + 1);
    const char *prob = yp->problem ? yp->problem : "malformed YAML";
    const char *hint = "";
    if (strstr(prob, "cannot start any token")) hint = "; indent with spaces, not tabs, and quote values that start with @ or `";
    else if (strstr(prob, "tab")) hint = "; indent with spaces, not tabs";
    else if (strstr(prob, "mapping values are not allowed")) hint = "; a value may not contain ': ' unless quoted";
    else if (strstr(prob, "did not find expected")) hint = "; check the indentation and the closing brackets above";
    return rs_err_set(RS_ERR_CONFIG, __FILE__, __LINE__, __func__, "%s:%d:%d: YAML syntax error: %s%s%s", c->path,
                      (int)m->line + 1, (int)m->column + 1, prob, ctx, hint);
}

/* A first pass over the event stream that stops at the first node nested deeper than any config
 * needs. libyaml's scanner costs O(depth) per token in flow collections, so a small file of
 * nested brackets would otherwise take minutes to load. */
#define RS_CONFIG_MAX_DEPTH 32
static rs_err prescan(const rs_config *c, const char *text, size_t len) {
    yaml_parser_t yp;
    yaml_event_t ev;
    if (!yaml_parser_initialize(&yp)) RS_FAIL(RS_ERR_NOMEM, "out of memory initializing the YAML parser");
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    rs_err err = RS_OK;
    int depth = 0;
    for (;;) {
        if (!yaml_parser_parse(&yp, &ev)) {
            err = yaml_fail(c, &yp);
            break;
        }
        int type = ev.type;
        if (type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT) depth++;
        if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT) depth--;
        if (depth > RS_CONFIG_MAX_DEPTH)
            err = rs_err_set(RS_ERR_CONFIG, __FILE__, __LINE__, __func__,
                             "%s:%d:%d: lists and mappings are nested more than %d levels deep here; a config "
                             "needs at most 4 (see docs/config.md)", c->path, (int)ev.start_mark.line + 1,
                             (int)ev.start_mark.column + 1, RS_CONFIG_MAX_DEPTH);
        yaml_event_delete(&ev);
        if (err || type == YAML_STREAM_END_EVENT) break;
    }
    yaml_parser_delete(&yp);
    return err;
}

static rs_err config_dir(rs_config *c, const char *path) {
    char *abs = realpath(path, NULL);
    if (!abs) {
        /* text without a file (tests): anchor at the path's directory as written */
        const char *slash = strrchr(path, '/');
        size_t n = slash ? (size_t)(slash - path) : 1;
        abs = malloc(n + 2);
        RS_CHECK_ALLOC(abs);
        if (slash) memcpy(abs, path, n);
        else abs[0] = '.';
        abs[n] = '\0';
        if (slash && n == 0) abs[0] = '/', abs[1] = '\0';
        c->dir = abs;
        return RS_OK;
    }
    char *slash = strrchr(abs, '/');
    if (slash == abs) slash[1] = '\0';
    else if (slash) *slash = '\0';
    c->dir = abs;
    return RS_OK;
}

rs_err rs_config_load_text(rs_config *c, const char *path, const char *text, size_t len) {
    memset(c, 0, sizeof *c);
    rs_err err = RS_OK;
    c->path = strdup(path);
    if (!c->path) RS_FAIL(RS_ERR_NOMEM, "out of memory");
    RS_TRY_GOTO(config_dir(c, path), fail);
    RS_TRY_GOTO(set_defaults(c), fail);
    if (len > RS_CONFIG_MAX_BYTES)
        RS_FAIL_GOTO(fail, RS_ERR_CONFIG, "%s: the config is %zu bytes, more than the %d allowed", path, len,
                     RS_CONFIG_MAX_BYTES);
    if (memchr(text, '\0', len))
        RS_FAIL_GOTO(fail, RS_ERR_CONFIG, "%s: the file contains NUL bytes; it is not a YAML text file", path);

    RS_TRY_GOTO(prescan(c, text, len), fail);

    yaml_parser_t yp;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&yp)) RS_FAIL_GOTO(fail, RS_ERR_NOMEM, "out of memory initializing the YAML parser");
    yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
    if (!yaml_parser_load(&yp, &doc)) {
        err = yaml_fail(c, &yp);
        yaml_parser_delete(&yp);
        goto fail;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || is_null(root)) {
        rs_loc at = root ? node_loc(root) : (rs_loc){1, 1};
        err = rs_err_set(RS_ERR_CONFIG, __FILE__, __LINE__, __func__,
                         "%s:%d:%d: the config is empty; it needs at least 'name:', 'model: {path: ..}', "
                         "'data: {tokens: ..}' and 'layers: {sets: [..]}' (see docs/config.md)", path, at.line, at.col);
    } else {
        /* a second document would be silently ignored: refuse it */
        yaml_document_t doc2;
        if (!yaml_parser_load(&yp, &doc2)) {
            err = yaml_fail(c, &yp);
        } else {
            yaml_node_t *r2 = yaml_document_get_root_node(&doc2);
            if (r2)
                err = rs_err_set(RS_ERR_CONFIG, __FILE__, __LINE__, __func__,
                                 "%s:%d:%d: a second YAML document starts here; a config is one document (remove "
                                 "the '---' line and what follows, or merge it)", path,
                                 (int)doc2.start_mark.line + 1, (int)doc2.start_mark.column + 1);
            yaml_document_delete(&doc2);
        }
        if (!err) {
            parser p = {c, &doc};
            err = parse_root(&p, root);
            if (err) rs_err_push(err, __FILE__, __LINE__, __func__);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&yp);
    if (err) goto fail;
    return RS_OK;
fail:
    rs_config_free(c);
    return err;
}

rs_err rs_config_load(rs_config *c, const char *path) {
    memset(c, 0, sizeof *c);
    char *text = NULL;
    size_t len = 0;
    rs_err err = rs_read_file(&text, &len, path, RS_CONFIG_MAX_BYTES);
    if (err) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", rs_err_msg());
        RS_FAIL(err, "cannot read the config: %s", msg);
    }
    err = rs_config_load_text(c, path, text, len);
    free(text);
    RS_TRY(err);
    return RS_OK;
}

void rs_config_free(rs_config *c) {
    if (!c) return;
    free(c->path);
    free(c->dir);
    free(c->run_dir);
    free(c->model.path);
    free(c->data.tokens);
    free(c->data.dataset);
    for (int i = 0; i < c->layers.n_sets; i++) {
        free(c->layers.sets[i].layers.v);
        free(c->layers.sets[i].gaps.v);
    }
    free(c->layers.sets);
    free(c->layers.regression.v);
    free(c->sae.k.v);
    free(c->sae.seeds.v);
    free(c->eval.probing.data);
    free(c->eval.probing.top_k.v);
    free(c->eval.tpp.data);
    free(c->eval.tpp.budgets.v);
    free(c->locs);
    memset(c, 0, sizeof *c);
}

/* ============================================================================================
 * Derived values
 * ========================================================================================== */

int64_t rs_config_n_latents(const rs_config *c, const rs_model_config *mc) {
    return c->sae.expansion * (int64_t)mc->d_model;
}

int64_t rs_config_train_tokens(const rs_config *c) { return c->train.tokens ? c->train.tokens : c->data.train; }

int64_t rs_config_train_steps(const rs_config *c) { return rs_config_train_tokens(c) / c->train.batch_size; }

int64_t rs_config_dead_tokens(const rs_config *c) {
    if (c->train.dead_tokens) return c->train.dead_tokens;
    int64_t t = rs_config_train_tokens(c) / 10;
    return t < 10000000 ? (t > 0 ? t : 1) : 10000000;
}

double rs_config_lr(const rs_config *c, int64_t n_latents) {
    if (c->train.lr > 0) return c->train.lr;
    return 2e-4 / sqrt((double)n_latents / 16384.0);
}

int64_t rs_config_family_count(const rs_set_spec *s, int64_t gap, int n_layers) {
    if (s->count) return s->count;
    if (s->start > n_layers - 1) return 0;
    return (n_layers - 1 - s->start) / gap + 1;
}

/* ============================================================================================
 * Model checks
 * ========================================================================================== */

rs_err rs_config_load_model(rs_model_config *mc, const rs_config *c) {
    rs_err e = rs_model_config_load(mc, c->model.path);
    if (e) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", rs_err_msg());
        RS_CONFIG_FAIL(c, "model.path", "cannot load the model's config.json: %s; point model.path at a Hugging "
                       "Face checkpoint directory (relative paths start at the config file's directory)", msg);
    }
    return RS_OK;
}

static rs_err check_layer(const rs_config *c, const char *key, int64_t l, const rs_model_config *mc) {
    if (l > mc->n_layers - 1)
        RS_CONFIG_FAIL(c, key, "layer %lld is beyond the model's %d layers; layers are 0..%d (residual stream after "
                       "each block)", (long long)l, mc->n_layers, mc->n_layers - 1);
    return RS_OK;
}

rs_err rs_config_check_model(const rs_config *c, const rs_model_config *mc) {
    char key[96];
    for (int i = 0; i < c->layers.n_sets; i++) {
        const rs_set_spec *s = &c->layers.sets[i];
        if (!s->is_family) {
            for (int j = 0; j < s->layers.n; j++) {
                snprintf(key, sizeof key, "layers.sets[%d].layers[%d]", i, j);
                RS_TRY(check_layer(c, key, s->layers.v[j], mc));
            }
            continue;
        }
        snprintf(key, sizeof key, "layers.sets[%d].start", i);
        RS_TRY(check_layer(c, key, s->start, mc));
        for (int g = 0; g < s->gaps.n; g++) {
            int64_t gap = s->gaps.v[g];
            int64_t cnt = rs_config_family_count(s, gap, mc->n_layers);
            int64_t last = s->start + (cnt - 1) * gap;
            if (s->count && last > mc->n_layers - 1) {
                snprintf(key, sizeof key, "layers.sets[%d].count", i);
                RS_CONFIG_FAIL(c, key, "%lld layers with gap %lld from layer %lld end at layer %lld, beyond the "
                               "model's %d layers; lower count (at most %lld fit) or omit it (as many as fit)",
                               (long long)s->count, (long long)gap, (long long)s->start, (long long)last,
                               mc->n_layers, (long long)((mc->n_layers - 1 - s->start) / gap + 1));
            }
            if (cnt < 2) {
                snprintf(key, sizeof key, "layers.sets[%d].gaps[%d]", i, g);
                RS_CONFIG_FAIL(c, key, "gap %lld from layer %lld leaves a single layer in the model's %d layers; "
                               "use a gap of at most %lld or an explicit set", (long long)gap, (long long)s->start,
                               mc->n_layers, (long long)(mc->n_layers - 1 - s->start));
            }
        }
    }
    for (int j = 0; j < c->layers.regression.n; j++) {
        snprintf(key, sizeof key, "layers.regression[%d]", j);
        RS_TRY(check_layer(c, key, c->layers.regression.v[j], mc));
    }
    if (c->eval.tpp.layer >= 0) RS_TRY(check_layer(c, "eval.tpp.layer", c->eval.tpp.layer, mc));
    int64_t width = rs_config_n_latents(c, mc);
    for (int j = 0; j < c->sae.k.n; j++)
        if (c->sae.k.v[j] >= width) {
            snprintf(key, sizeof key, "sae.k[%d]", j);
            RS_CONFIG_FAIL(c, key, "k = %lld is not below the SAE width n_latents = expansion %lld x hidden_size %d "
                           "= %lld; lower k or raise sae.expansion", (long long)c->sae.k.v[j],
                           (long long)c->sae.expansion, mc->d_model, (long long)width);
        }
    if (c->data.seq_len > mc->max_positions)
        RS_CONFIG_FAIL(c, "data.seq_len", "%lld tokens per sequence exceed the model's max_position_embeddings %d",
                       (long long)c->data.seq_len, mc->max_positions);
    return RS_OK;
}

/* ============================================================================================
 * Canonical YAML and hash
 * ========================================================================================== */

static void put_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if (*q == '"' || *q == '\\') fprintf(f, "\\%c", *q);
        else if (*q == '\n') fputs("\\n", f);
        else if (*q == '\t') fputs("\\t", f);
        else if (*q < 0x20 || *q == 0x7f) fprintf(f, "\\x%02x", *q);
        else fputc(*q, f);
    }
    fputc('"', f);
}

/* Shortest decimal that reads back to the same double, always with '.' or 'e' (a float). */
static void put_num(FILE *f, double v) {
    char buf[40];
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
    fputs(buf, f);
}

static void put_list(FILE *f, const rs_int_list *l) {
    fputc('[', f);
    for (int i = 0; i < l->n; i++) fprintf(f, "%s%lld", i ? ", " : "", (long long)l->v[i]);
    fputc(']', f);
}

static void put_enums(FILE *f, const int *v, int n, const char *const *names) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%s", i ? ", " : "", names[v[i]]);
    fputc(']', f);
}

static void write_yaml(FILE *f, const rs_config *c, int for_hash) {
    fprintf(f, "name: ");
    put_str(f, c->name);
    if (!for_hash) {
        fprintf(f, "\nrun_dir: ");
        put_str(f, c->run_dir);
    }
    fprintf(f, "\nseed: %lld\nmodel:\n  path: ", (long long)c->seed);
    put_str(f, c->model.path);
    fprintf(f, "\ndata:\n  tokens: ");
    put_str(f, c->data.tokens);
    fprintf(f, "\n  format: %s\n  dataset: ", rs_format_names[c->data.format]);
    put_str(f, c->data.dataset);
    if (c->data.seq_len) fprintf(f, "\n  seq_len: %lld", (long long)c->data.seq_len);
    else fprintf(f, "\n  seq_len: null");
    fprintf(f, "\n  exclude_first_position: %s\n  split_seed: %lld\n", c->data.exclude_first_position ? "true" : "false",
            (long long)c->data.split_seed);
    fprintf(f, "  splits: {calibration: %lld, train: %lld, eval: %lld}\n", (long long)c->data.calibration,
            (long long)c->data.train, (long long)c->data.eval);
    fprintf(f, "layers:\n  sets:\n");
    for (int i = 0; i < c->layers.n_sets; i++) {
        const rs_set_spec *s = &c->layers.sets[i];
        fprintf(f, "    - {name: ");
        put_str(f, s->name);
        if (s->is_family) {
            fprintf(f, ", start: %lld, gaps: ", (long long)s->start);
            put_list(f, &s->gaps);
            if (s->count) fprintf(f, ", count: %lld}\n", (long long)s->count);
            else fprintf(f, ", count: auto}\n");
        } else {
            fprintf(f, ", layers: ");
            put_list(f, &s->layers);
            fprintf(f, "}\n");
        }
    }
    fprintf(f, "  regression: ");
    if (c->layers.regression_auto) fprintf(f, "null");
    else put_list(f, &c->layers.regression);
    fprintf(f, "\nvariants: ");
    put_enums(f, c->variants, c->n_variants, rs_variant_names);
    fprintf(f, "\nsae:\n  k: ");
    put_list(f, &c->sae.k);
    fprintf(f, "\n  expansion: %lld\n  seeds: ", (long long)c->sae.expansion);
    put_list(f, &c->sae.seeds);
    fprintf(f, "\naffine:\n  lambda_rel: ");
    put_num(f, c->affine.lambda_rel);
    fprintf(f, "\n  max_retries: %lld\n  block_size: %lld\n", (long long)c->affine.max_retries,
            (long long)c->affine.block_size);
    fprintf(f, "train:\n  tokens: ");
    if (c->train.tokens) fprintf(f, "%lld", (long long)c->train.tokens);
    else fprintf(f, "auto");
    fprintf(f, "\n  batch_size: %lld\n  lr: ", (long long)c->train.batch_size);
    if (c->train.lr > 0) put_num(f, c->train.lr);
    else fprintf(f, "auto");
    fprintf(f, "\n  adam: {beta1: ");
    put_num(f, c->train.beta1);
    fprintf(f, ", beta2: ");
    put_num(f, c->train.beta2);
    fprintf(f, ", eps: ");
    put_num(f, c->train.eps);
    fprintf(f, "}\n  warmup_steps: %lld\n  decay_fraction: ", (long long)c->train.warmup_steps);
    put_num(f, c->train.decay_fraction);
    fprintf(f, "\n  aux_alpha: ");
    put_num(f, c->train.aux_alpha);
    fprintf(f, "\n  dead_tokens: ");
    if (c->train.dead_tokens) fprintf(f, "%lld", (long long)c->train.dead_tokens);
    else fprintf(f, "auto");
    fprintf(f, "\n  b_dec_init: %s\n", rs_bdec_init_names[c->train.b_dec_init]);
    if (!for_hash) fprintf(f, "  checkpoint_every: %lld\n", (long long)c->train.checkpoint_every);
    fprintf(f, "  shuffle_buffer: %lld\n", (long long)c->train.shuffle_buffer);
    fprintf(f, "eval:\n  batch_sequences: %lld\n  ce: %s\n  ce_modes: ", (long long)c->eval.batch_sequences,
            c->eval.ce ? "true" : "false");
    put_enums(f, c->eval.ce_modes, c->eval.n_ce_modes, rs_ce_mode_names);
    fprintf(f, "\n  ablations: ");
    put_enums(f, c->eval.ablations, c->eval.n_ablations, rs_ablation_names);
    fprintf(f, "\n  redundancy_block: %lld\n", (long long)c->eval.redundancy_block);
    fprintf(f, "  probing:\n    enabled: %s\n    data: ", c->eval.probing.enabled ? "true" : "false");
    if (c->eval.probing.data) put_str(f, c->eval.probing.data);
    else fprintf(f, "null");
    fprintf(f, "\n    top_k: ");
    put_list(f, &c->eval.probing.top_k);
    fprintf(f, "\n    l2_c: ");
    put_num(f, c->eval.probing.l2_c);
    fprintf(f, "\n  tpp:\n    enabled: %s\n    data: ", c->eval.tpp.enabled ? "true" : "false");
    if (c->eval.tpp.data) put_str(f, c->eval.tpp.data);
    else fprintf(f, "null");
    fprintf(f, "\n    budgets: ");
    put_list(f, &c->eval.tpp.budgets);
    if (c->eval.tpp.layer >= 0) fprintf(f, "\n    layer: %lld\n", (long long)c->eval.tpp.layer);
    else fprintf(f, "\n    layer: null\n");
    fprintf(f, "store:\n  activation_dtype: %s\n  chunk_rows: %lld\n", rs_dtype_names[c->store.dtype],
            (long long)c->store.chunk_rows);
    if (!for_hash)
        fprintf(f, "parallel:\n  group_size: %lld\n  max_task_retries: %lld\n", (long long)c->parallel.group_size,
                (long long)c->parallel.max_task_retries);
}

rs_err rs_config_write_yaml(FILE *f, const rs_config *c) {
    write_yaml(f, c, 0);
    if (ferror(f)) RS_FAIL(RS_ERR_IO, "write error while printing the resolved config");
    return RS_OK;
}

uint64_t rs_config_hash(const rs_config *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return 0;
    fprintf(f, "resae-config schema %d\n", RESAE_SCHEMA_VERSION);
    write_yaml(f, c, 1);
    fclose(f);
    uint64_t h = rs_hash64(RS_HASH64_INIT, buf, len);
    free(buf);
    return h;
}
