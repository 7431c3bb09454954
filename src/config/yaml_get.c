/* The libyaml side of the config loader: typed getters for scalars, lists and fixed-key mappings,
 * each failing with "PATH:LINE:COL: KEY: problem; fix" and a "did you mean" hint for unknown
 * names; the side table of value positions; paths resolved against the config's directory.
 * The schema (which keys exist, their types and ranges) lives in schema.c. */
#define _XOPEN_SOURCE 700
#include "yaml_get.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ============================================================================================
 * Locations and error messages
 * ========================================================================================== */

rs_err yg_loc_record(rs_config *c, const char *key, rs_loc loc) {
    /* every value read is recorded once, so this bounds what aliases can multiply */
    if (c->n_locs >= RS_CONFIG_MAX_VALUES)
        return RS_ERR(RS_ERR_CONFIG, "%s:%d:%d: %s: the config holds more than %d values (counting each use of an alias); "
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

rs_loc yg_loc(const yaml_node_t *n) {
    return (rs_loc){(int)n->start_mark.line + 1, (int)n->start_mark.column + 1};
}

/* Fail at node N (its own position, even if not recorded). */
rs_err yg_fail(yg_parser *p, const yaml_node_t *n, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rs_err e = vfail(p->c, RS_ERR_CONFIG, n ? yg_loc(n) : rs_config_loc(p->c, key), key, __FILE__, __LINE__,
                     __func__, fmt, ap);
    va_end(ap);
    return e;
}

const char *yg_sval(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

int yg_is_plain(const yaml_node_t *n) {
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

int yg_is_null(const yaml_node_t *n) {
    if (!yg_is_plain(n)) return 0;
    const char *s = yg_sval(n);
    return !s[0] || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Keep messages on one line: control characters from the file become '?'. */
static void sanitize(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

/* Describe a node for "found ..." in messages. */
void yg_describe(char *out, size_t n, const yaml_node_t *v) {
    if (v->type == YAML_MAPPING_NODE) snprintf(out, n, "a mapping");
    else if (v->type == YAML_SEQUENCE_NODE) snprintf(out, n, "a list");
    else if (yg_is_null(v)) snprintf(out, n, "null");
    else {
        const char *s = yg_sval(v);
        size_t len = strlen(s);
        if (len > 40) snprintf(out, n, "'%.37s...'", s);
        else snprintf(out, n, "'%s'", s);
        sanitize(out);
    }
}

yaml_node_t *yg_node(yg_parser *p, yaml_node_item_t i) { return yaml_document_get_node(p->doc, i); }

void yg_join_key(char *out, size_t n, const char *parent, const char *child) {
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

rs_err yg_map_fields(yg_parser *p, yaml_node_t *map, const char *key, yg_field *f, int nf) {
    if (map->type != YAML_MAPPING_NODE) {
        char found[64], keys[512];
        yg_describe(found, sizeof found, map);
        size_t o = 0;
        keys[0] = '\0';
        for (int i = 0; i < nf && o < sizeof keys; i++)
            o += (size_t)snprintf(keys + o, sizeof keys - o, "%s%s", i ? ", " : "", f[i].name);
        YG_FAIL(p, map, key, "expected a mapping (keys: %s), found %s", keys, found);
    }
    const char *names[64];
    for (int i = 0; i < nf && i < 64; i++) names[i] = f[i].name;
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yg_node(p, pr->key), *v = yg_node(p, pr->value);
        if (!k || !v) YG_FAIL(p, map, key, "malformed mapping");
        if (k->type != YAML_SCALAR_NODE || yg_is_null(k))
            YG_FAIL(p, k, key, "keys must be plain names, found %s; write 'name: value'",
                    k->type == YAML_SCALAR_NODE ? "an empty key" : k->type == YAML_SEQUENCE_NODE ? "a list" : "a mapping");
        if (strlen(yg_sval(k)) != k->data.scalar.length) YG_FAIL(p, k, key, "a key contains a NUL character");
        char sub[96];
        yg_join_key(sub, sizeof sub, key, yg_sval(k));
        int hit = -1;
        for (int i = 0; i < nf; i++)
            if (!strcmp(f[i].name, yg_sval(k))) hit = i;
        if (hit < 0) {
            char hint[600];
            hint_choices(hint, sizeof hint, yg_sval(k), names, nf);
            YG_FAIL(p, k, sub, "unknown key; %s", hint);
        }
        if (f[hit].val) {
            rs_loc first = rs_config_loc(p->c, sub);
            YG_FAIL(p, k, sub, "duplicate key (first given at line %d, column %d); keep one", first.line, first.col);
        }
        f[hit].val = v;
        RS_TRY(yg_loc_record(p->c, sub, yg_loc(v)));
    }
    return RS_OK;
}

rs_err yg_require(yg_parser *p, yaml_node_t *map, const char *key, const yg_field *f, const char *what) {
    if (!f->val) {
        char sub[96];
        yg_join_key(sub, sizeof sub, key, f->name);
        if (map) YG_FAIL(p, map, key && key[0] ? key : "(top level)", "missing required key '%s' (%s)", f->name, what);
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

rs_err yg_int(yg_parser *p, yaml_node_t *n, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    char found[64];
    yg_describe(found, sizeof found, n);
    if (!yg_is_plain(n) || yg_is_null(n))
        YG_FAIL(p, n, key, "expected an integer in [%lld, %lld], found %s", (long long)lo, (long long)hi, found);
    int64_t v = 0;
    int r = parse_int(yg_sval(n), &v);
    if (r == 1) YG_FAIL(p, n, key, "expected an integer in [%lld, %lld], found %s", (long long)lo, (long long)hi, found);
    if (r == 2 || v < lo || v > hi)
        YG_FAIL(p, n, key, "%s is out of range; allowed: [%lld, %lld]", found, (long long)lo, (long long)hi);
    *out = v;
    return RS_OK;
}

/* Number in an interval; lo_open/hi_open make the bounds exclusive. */
rs_err yg_num(yg_parser *p, yaml_node_t *n, const char *key, double lo, int lo_open, double hi, int hi_open,
                      double *out) {
    char found[64], range[96];
    yg_describe(found, sizeof found, n);
    snprintf(range, sizeof range, "%c%g, %g%c", lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']');
    if (!yg_is_plain(n) || yg_is_null(n)) YG_FAIL(p, n, key, "expected a number in %s, found %s", range, found);
    const char *s = yg_sval(n);
    char *end = NULL;
    errno = 0;
    double d = strtod(s, &end);
    if (!end || end == s || *end || strpbrk(s, "xXpP") || !strpbrk(s, "0123456789"))
        YG_FAIL(p, n, key, "expected a number in %s, found %s", range, found);
    if (!isfinite(d) || errno == ERANGE || d < lo || d > hi || (lo_open && d == lo) || (hi_open && d == hi))
        YG_FAIL(p, n, key, "%s is out of range; allowed: %s", found, range);
    *out = d;
    return RS_OK;
}

rs_err yg_bool(yg_parser *p, yaml_node_t *n, const char *key, int *out) {
    if (yg_is_plain(n)) {
        const char *s = yg_sval(n);
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return *out = 1, RS_OK;
        if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return *out = 0, RS_OK;
    }
    char found[64];
    yg_describe(found, sizeof found, n);
    YG_FAIL(p, n, key, "expected true or false, found %s", found);
}

rs_err yg_str(yg_parser *p, yaml_node_t *n, const char *key, char **out) {
    if (n->type != YAML_SCALAR_NODE || yg_is_null(n) || !yg_sval(n)[0]) {
        char found[64];
        yg_describe(found, sizeof found, n);
        YG_FAIL(p, n, key, "expected a non-empty string, found %s", found);
    }
    if (strlen(yg_sval(n)) != n->data.scalar.length) YG_FAIL(p, n, key, "the string contains a NUL character");
    if (n->data.scalar.length > 4000) YG_FAIL(p, n, key, "string longer than 4000 characters");
    char *s = strdup(yg_sval(n));
    RS_CHECK_ALLOC(s);
    free(*out);
    *out = s;
    return RS_OK;
}

rs_err yg_enum(yg_parser *p, yaml_node_t *n, const char *key, const char *const *names, int count, int *out) {
    if (n->type == YAML_SCALAR_NODE && !yg_is_null(n))
        for (int i = 0; i < count; i++)
            if (!strcmp(yg_sval(n), names[i])) return *out = i, RS_OK;
    char found[64], hint[600];
    yg_describe(found, sizeof found, n);
    hint_choices(hint, sizeof hint, n->type == YAML_SCALAR_NODE ? yg_sval(n) : "", names, count);
    YG_FAIL(p, n, key, "unknown value %s; %s", found, hint);
}

/* ---- lists ---- */

rs_err yg_seq_check(yg_parser *p, yaml_node_t *n, const char *key, const char *what, int flags, int *len) {
    if (n->type != YAML_SEQUENCE_NODE) {
        char found[64];
        yg_describe(found, sizeof found, n);
        YG_FAIL(p, n, key, "expected a list of %s (e.g. [a, b]), found %s", what, found);
    }
    ptrdiff_t cnt = n->data.sequence.items.top - n->data.sequence.items.start;
    if (cnt == 0 && !(flags & YG_LIST_MAY_BE_EMPTY)) YG_FAIL(p, n, key, "the list is empty; give at least one %s", what);
    int max = (flags & (YG_LIST_SORTED | YG_LIST_LONG)) ? RS_CONFIG_MAX_LIST : RS_CONFIG_MAX_SHORT_LIST;
    if (cnt > max) YG_FAIL(p, n, key, "the list has %td items, more than the %d allowed", cnt, max);
    *len = (int)cnt;
    return RS_OK;
}


/* Item i of the sequence n at key: its node and its name "key[i]" (recorded for error locations). */
static rs_err seq_item(yaml_node_t **it, char *sub, size_t cap, yg_parser *p, yaml_node_t *n, const char *key, int i) {
    *it = yg_node(p, n->data.sequence.items.start[i]);
    snprintf(sub, cap, "%s[%d]", key, i);
    if (!*it) YG_FAIL(p, n, sub, "malformed list");
    return yg_loc_record(p->c, sub, yg_loc(*it));
}

rs_err yg_int_list(yg_parser *p, yaml_node_t *n, const char *key, const char *what, int64_t lo, int64_t hi,
                           int flags, rs_int_list *out) {
    int cnt = 0;
    RS_TRY(yg_seq_check(p, n, key, what, flags, &cnt));
    free(out->v);
    out->v = NULL;
    out->n = 0;
    if (cnt) {
        out->v = calloc((size_t)cnt, sizeof *out->v);
        RS_CHECK_ALLOC(out->v);
    }
    for (int i = 0; i < cnt; i++) {
        yaml_node_t *it = NULL;
        char sub[96];
        RS_TRY(seq_item(&it, sub, sizeof sub, p, n, key, i));
        RS_TRY(yg_int(p, it, sub, lo, hi, &out->v[i]));
        out->n = i + 1;
        /* sorted lists only need their neighbour compared; the others are short */
        for (int j = (flags & YG_LIST_SORTED) && i > 0 ? i - 1 : 0; j < i; j++) {
            if ((flags & YG_LIST_UNIQUE) && out->v[j] == out->v[i])
                YG_FAIL(p, it, sub, "%s %lld is listed twice (also item %d); list each once", what,
                        (long long)out->v[i], j);
        }
        if ((flags & YG_LIST_SORTED) && i > 0 && out->v[i - 1] > out->v[i])
            YG_FAIL(p, it, sub, "%s must be in increasing order: %lld comes after %lld; sort the list", what,
                    (long long)out->v[i], (long long)out->v[i - 1]);
    }
    return RS_OK;
}

rs_err yg_enum_list(yg_parser *p, yaml_node_t *n, const char *key, const char *what, const char *const *names,
                            int count, int *out, int *n_out) {
    int cnt = 0;
    RS_TRY(yg_seq_check(p, n, key, what, 0, &cnt));
    int seen[8] = {0};
    *n_out = 0;
    for (int i = 0; i < cnt; i++) {
        yaml_node_t *it = NULL;
        char sub[96];
        RS_TRY(seq_item(&it, sub, sizeof sub, p, n, key, i));
        int v = 0;
        RS_TRY(yg_enum(p, it, sub, names, count, &v));
        if (seen[v]) YG_FAIL(p, it, sub, "%s '%s' is listed twice; list each once", what, names[v]);
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

rs_err yg_resolve_path(const rs_config *c, const char *p, char **out) {
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

rs_err yg_name(yg_parser *p, yaml_node_t *n, const char *key, char *out) {
    char *s = NULL;
    RS_TRY(yg_str(p, n, key, &s));
    size_t len = strlen(s);
    int ok = len < RS_CONFIG_NAME_MAX;
    for (size_t i = 0; ok && i < len; i++) {
        char ch = s[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
             ch == '.' || ch == '-';
    }
    if (!ok) {
        char found[64];
        yg_describe(found, sizeof found, n);
        free(s);
        YG_FAIL(p, n, key, "invalid name %s; use 1-%d characters from A-Z a-z 0-9 _ . -", found,
                RS_CONFIG_NAME_MAX - 1);
    }
    memcpy(out, s, len + 1);
    free(s);
    return RS_OK;
}

int yg_is_auto(const yaml_node_t *n) { return yg_is_plain(n) && !strcmp(yg_sval(n), "auto"); }

rs_err yg_path(yg_parser *p, yaml_node_t *n, const char *key, char **out) {
    char *s = NULL;
    RS_TRY(yg_str(p, n, key, &s));
    rs_err err = yg_resolve_path(p->c, s, out);
    free(s);
    return err;
}
