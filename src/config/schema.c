/* Walkers over the config schema tables (schema.h): defaults, parsing, canonical YAML, identity
 * hashes and the key reference of docs/config.md, each one loop over the declared fields. */
#include "schema.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "resae/util.h"

#define VAL(c, fd, type) ((type *)((char *)(c) + (fd)->off))
#define CVAL(c, fd, type) ((const type *)((const char *)(c) + (fd)->off))

/* ============================================================================================
 * Defaults
 * ========================================================================================== */

rs_err rs_cfg_defaults(rs_config *c, const rs_cfg_section *s) {
    for (int i = 0; i < s->n; i++) {
        const rs_cfg_field *fd = &s->fields[i];
        switch (fd->kind) {
        case CFG_INT: *VAL(c, fd, int64_t) = fd->def; break;
        case CFG_NUM: *VAL(c, fd, double) = fd->def_num; break;
        case CFG_BOOL:
        case CFG_ENUM: *VAL(c, fd, int) = (int)fd->def; break;
        case CFG_STR:
        case CFG_PATH:
            if (fd->def_str) {
                *VAL(c, fd, char *) = strdup(fd->def_str);
                RS_CHECK_ALLOC(*VAL(c, fd, char *));
            }
            break;
        case CFG_NAME: break;
        case CFG_INT_LIST: {
            rs_int_list *l = VAL(c, fd, rs_int_list);
            l->v = malloc((size_t)fd->def_n * sizeof *l->v + 1);
            RS_CHECK_ALLOC(l->v);
            if (fd->def_n) memcpy(l->v, fd->def_list, (size_t)fd->def_n * sizeof *l->v);
            l->n = fd->def_n;
            break;
        }
        case CFG_ENUM_LIST:
            for (int j = 0; j < fd->n_names; j++) VAL(c, fd, int)[j] = j;
            *(int *)((char *)c + fd->count_off) = fd->n_names;
            break;
        case CFG_SECTION: RS_TRY(rs_cfg_defaults(c, fd->sub)); break;
        case CFG_CUSTOM:
            if (fd->set_default) fd->set_default(c);
            break;
        }
    }
    return RS_OK;
}

/* ============================================================================================
 * Parsing
 * ========================================================================================== */

static rs_err parse_value(yg_parser *p, const rs_cfg_field *fd, const char *key, yaml_node_t *v) {
    rs_config *c = p->c;
    if (((fd->flags & CFG_NULL) && yg_is_null(v)) || ((fd->flags & CFG_AUTO) && yg_is_auto(v))) return RS_OK;
    switch (fd->kind) {
    case CFG_INT: return yg_int(p, v, key, fd->lo, fd->hi, VAL(c, fd, int64_t));
    case CFG_NUM:
        return yg_num(p, v, key, fd->num_lo, fd->lo_open, fd->num_hi, fd->hi_open, VAL(c, fd, double));
    case CFG_BOOL: return yg_bool(p, v, key, VAL(c, fd, int));
    case CFG_ENUM: return yg_enum(p, v, key, fd->names, fd->n_names, VAL(c, fd, int));
    case CFG_STR: return yg_str(p, v, key, VAL(c, fd, char *));
    case CFG_PATH: return yg_path(p, v, key, VAL(c, fd, char *));
    case CFG_NAME: return yg_name(p, v, key, VAL(c, fd, char));
    case CFG_INT_LIST:
        return yg_int_list(p, v, key, fd->what, fd->lo, fd->hi, fd->list_flags, VAL(c, fd, rs_int_list));
    case CFG_ENUM_LIST:
        return yg_enum_list(p, v, key, fd->what, fd->names, fd->n_names, VAL(c, fd, int),
                            (int *)((char *)c + fd->count_off));
    case CFG_SECTION: return rs_cfg_parse(p, fd->sub, v);
    case CFG_CUSTOM: return fd->parse(p, v);
    }
    RS_FAIL(RS_ERR_INTERNAL, "%s: unknown field kind %d", key, (int)fd->kind);
}

rs_err rs_cfg_parse(yg_parser *p, const rs_cfg_section *s, yaml_node_t *n) {
    yg_field f[32];
    if (s->n > (int)(sizeof f / sizeof *f)) RS_FAIL(RS_ERR_INTERNAL, "section '%s' has too many keys", s->key);
    for (int i = 0; i < s->n; i++) f[i] = (yg_field){s->fields[i].name, NULL};
    RS_TRY(yg_map_fields(p, n, s->key, f, s->n));
    /* in table order: a config with several mistakes reports the first key's */
    for (int i = 0; i < s->n; i++) {
        const rs_cfg_field *fd = &s->fields[i];
        if (fd->required) RS_TRY(yg_require(p, n, s->key, &f[i], fd->required));
        char key[96];
        yg_join_key(key, sizeof key, s->key, fd->name);
        if (f[i].val) RS_TRY(parse_value(p, fd, key, f[i].val));
        if (fd->after) RS_TRY(fd->after(p, f[i].val));
    }
    if (s->after) RS_TRY(s->after(p, n));
    return RS_OK;
}

/* ============================================================================================
 * Canonical YAML
 * ========================================================================================== */

void rs_cfg_put_str(FILE *f, const char *s) {
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

void rs_cfg_put_num(FILE *f, double v) {
    char buf[40];
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
    fputs(buf, f);
}

void rs_cfg_put_list(FILE *f, const rs_int_list *l) {
    fputc('[', f);
    for (int i = 0; i < l->n; i++) fprintf(f, "%s%lld", i ? ", " : "", (long long)l->v[i]);
    fputc(']', f);
}

/* The value of a leaf field as written after "key: ". */
static void put_value(FILE *f, const rs_config *c, const rs_cfg_field *fd) {
    const char *word = fd->flags & CFG_NULL ? "null" : fd->flags & CFG_AUTO ? "auto" : NULL;
    switch (fd->kind) {
    case CFG_INT:
        if (word && *CVAL(c, fd, int64_t) == fd->def) fputs(word, f);
        else fprintf(f, "%lld", (long long)*CVAL(c, fd, int64_t));
        break;
    case CFG_NUM:
        if (word && *CVAL(c, fd, double) == fd->def_num) fputs(word, f);
        else rs_cfg_put_num(f, *CVAL(c, fd, double));
        break;
    case CFG_BOOL: fputs(*CVAL(c, fd, int) ? "true" : "false", f); break;
    case CFG_ENUM:
        if (word && *CVAL(c, fd, int) == fd->def) fputs(word, f);
        else fputs(fd->names[*CVAL(c, fd, int)], f);
        break;
    case CFG_STR:
    case CFG_PATH:
        if (*CVAL(c, fd, char *)) rs_cfg_put_str(f, *CVAL(c, fd, char *));
        else fputs("null", f);
        break;
    case CFG_NAME: rs_cfg_put_str(f, CVAL(c, fd, char)); break;
    case CFG_INT_LIST: rs_cfg_put_list(f, CVAL(c, fd, rs_int_list)); break;
    case CFG_ENUM_LIST: {
        const int *v = CVAL(c, fd, int), n = *(const int *)((const char *)c + fd->count_off);
        fputc('[', f);
        for (int i = 0; i < n; i++) fprintf(f, "%s%s", i ? ", " : "", fd->names[v[i]]);
        fputc(']', f);
        break;
    }
    case CFG_SECTION:
    case CFG_CUSTOM: break;
    }
}

/* A CFG_HASH_SET int or enum at its default is left out of every hash. */
static int hash_skipped(const rs_config *c, const rs_cfg_field *fd) {
    if (!(fd->flags & CFG_HASH_SET)) return 0;
    if (fd->kind == CFG_INT) return *CVAL(c, fd, int64_t) == fd->def;
    if (fd->kind == CFG_ENUM) return *CVAL(c, fd, int) == fd->def;
    return 0;
}

/* Does the field (or, for a section, any of its fields) belong in rs_config_hash? */
static int in_config_hash(const rs_cfg_field *fd) {
    if (fd->kind != CFG_SECTION) return (fd->hash & H_CONFIG) != 0;
    for (int i = 0; i < fd->sub->n; i++)
        if (in_config_hash(&fd->sub->fields[i])) return 1;
    return 0;
}

void rs_cfg_write(FILE *f, const rs_config *c, const rs_cfg_section *s, int indent, int for_hash) {
    for (int i = 0; i < s->n; i++) {
        const rs_cfg_field *fd = &s->fields[i];
        if (for_hash && (!in_config_hash(fd) || hash_skipped(c, fd))) continue;
        if (fd->kind == CFG_CUSTOM) {
            fd->write(f, c, indent);
        } else if (fd->kind == CFG_SECTION && (fd->sub->flags & CFG_FLOW)) {
            fprintf(f, "%*s%s: {", indent, "", fd->name);
            for (int j = 0, m = 0; j < fd->sub->n; j++) {
                if (for_hash && (!in_config_hash(&fd->sub->fields[j]) || hash_skipped(c, &fd->sub->fields[j])))
                    continue;
                fprintf(f, "%s%s: ", m++ ? ", " : "", fd->sub->fields[j].name);
                put_value(f, c, &fd->sub->fields[j]);
            }
            fputs("}\n", f);
        } else if (fd->kind == CFG_SECTION) {
            fprintf(f, "%*s%s:\n", indent, "", fd->name);
            rs_cfg_write(f, c, fd->sub, indent + 2, for_hash);
        } else {
            fprintf(f, "%*s%s: ", indent, "", fd->name);
            put_value(f, c, fd);
            fputc('\n', f);
        }
    }
}

/* ============================================================================================
 * Identity hashes
 * ========================================================================================== */

uint64_t rs_cfg_h_i64(uint64_t h, int64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)v >> (8 * i));
    return rs_hash64(h, b, 8);
}

uint64_t rs_cfg_h_f64(uint64_t h, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    return rs_cfg_h_i64(h, (int64_t)bits);
}

uint64_t rs_cfg_h_str(uint64_t h, const char *s) {
    size_t n = s ? strlen(s) : 0;
    h = rs_cfg_h_i64(h, (int64_t)n);
    return rs_hash64(h, s ? s : "", n);
}

/* One field's value: lists item by item, word lists as the set of their words (file order does
 * not change a result), auto fields as what they resolve to. */
static uint64_t hash_value(uint64_t h, const rs_config *c, const rs_cfg_field *fd, int64_t n_latents) {
    switch (fd->kind) {
    case CFG_INT: return rs_cfg_h_i64(h, fd->resolve_int ? fd->resolve_int(c) : *CVAL(c, fd, int64_t));
    case CFG_NUM: return rs_cfg_h_f64(h, fd->resolve_num ? fd->resolve_num(c, n_latents) : *CVAL(c, fd, double));
    case CFG_BOOL:
    case CFG_ENUM: return rs_cfg_h_i64(h, *CVAL(c, fd, int));
    case CFG_STR:
    case CFG_PATH: return rs_cfg_h_str(h, *CVAL(c, fd, char *));
    case CFG_NAME: return rs_cfg_h_str(h, CVAL(c, fd, char));
    case CFG_INT_LIST: {
        const rs_int_list *l = CVAL(c, fd, rs_int_list);
        for (int i = 0; i < l->n; i++) h = rs_cfg_h_i64(h, l->v[i]);
        return h;
    }
    case CFG_ENUM_LIST: {
        const int *v = CVAL(c, fd, int), n = *(const int *)((const char *)c + fd->count_off);
        int set = 0;
        for (int i = 0; i < n; i++) set |= 1 << v[i];
        return rs_cfg_h_i64(h, set);
    }
    case CFG_SECTION:
    case CFG_CUSTOM: break;
    }
    return h;
}

static uint64_t hash_section(uint64_t h, const rs_config *c, const rs_cfg_section *s, unsigned which,
                             int64_t n_latents) {
    for (int last = 0; last < 2; last++)
        for (int i = 0; i < s->n; i++) {
            const rs_cfg_field *fd = &s->fields[i];
            if (!!(fd->flags & CFG_HASH_LAST) != last) continue;
            if (fd->kind == CFG_SECTION) {
                h = hash_section(h, c, fd->sub, which, n_latents);
                continue;
            }
            if (!(fd->hash & which) || fd->kind == CFG_CUSTOM || hash_skipped(c, fd)) continue;
            h = hash_value(h, c, fd, n_latents);
            if ((fd->flags & CFG_GATE) && !*CVAL(c, fd, int)) return h;
        }
    return h;
}

uint64_t rs_cfg_hash(uint64_t h, const rs_config *c, unsigned which, int64_t n_latents) {
    return hash_section(h, c, &rs_cfg_root, which, n_latents);
}

/* ============================================================================================
 * Key reference (docs/config.md)
 * ========================================================================================== */

/* 2^n, 2^31-1 or 10^n where that is how the bound was chosen, else the number. */
static void fmt_bound(char *out, size_t n, int64_t v) {
    if (v == INT32_MAX) snprintf(out, n, "2^31-1");
    else if (v >= 65536 && !(v & (v - 1))) snprintf(out, n, "2^%d", __builtin_ctzll((unsigned long long)v));
    else if (v == (int64_t)1e15) snprintf(out, n, "10^15");
    else snprintf(out, n, "%lld", (long long)v);
}

static void fmt_num_bound(char *out, size_t n, double v) {
    if (v >= 1e6) snprintf(out, n, "10^%d", (int)(__builtin_log10(v) + 0.5));
    else snprintf(out, n, "%g", v);
}

static void doc_type(char *out, size_t n, const rs_cfg_field *fd) {
    static const char *const kinds[] = {"int", "num", "bool", "", "str", "path", "str", "list of int", "", "", ""};
    if (fd->doc_type) {
        snprintf(out, n, "%s", fd->doc_type);
        return;
    }
    if (fd->kind == CFG_ENUM || fd->kind == CFG_ENUM_LIST) {
        size_t o = (size_t)snprintf(out, n, "%s", fd->kind == CFG_ENUM_LIST ? "list of " : "");
        for (int i = 0; i < fd->n_names && o < n; i++)
            o += (size_t)snprintf(out + o, n - o, "%s`%s`", i ? ", " : "", fd->names[i]);
        return;
    }
    const char *alt = fd->flags & CFG_NULL ? " or null" : fd->flags & CFG_AUTO ? " or `auto`" : "";
    snprintf(out, n, "%s%s", kinds[fd->kind], alt);
}

static void doc_default(char *out, size_t n, const rs_config *defaults, const rs_cfg_field *fd) {
    if (fd->doc_default) snprintf(out, n, "%s", fd->doc_default);
    else if (fd->required) snprintf(out, n, "**required**");
    else if (fd->kind == CFG_STR) snprintf(out, n, "`%s`", fd->def_str ? fd->def_str : "");
    else {
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (m) {
            put_value(m, defaults, fd);
            fclose(m);
        }
        /* numbers, true/false and null as they are; words and lists as code */
        int plain = fd->kind == CFG_INT || fd->kind == CFG_NUM || fd->kind == CFG_BOOL || (buf && !strcmp(buf, "null"));
        if (buf && !strcmp(buf, "auto")) plain = 0;
        snprintf(out, n, plain ? "%s" : "`%s`", buf ? buf : "");
        free(buf);
    }
}

static void doc_range(char *out, size_t n, const rs_cfg_field *fd) {
    char lo[32], hi[32];
    out[0] = '\0';
    if (fd->doc_range) snprintf(out, n, "%s", fd->doc_range);
    else if (fd->kind == CFG_INT || fd->kind == CFG_INT_LIST) {
        fmt_bound(lo, sizeof lo, fd->lo);
        fmt_bound(hi, sizeof hi, fd->hi);
        const char *each = fd->kind == CFG_INT_LIST ? "each " : "";
        if (fd->hi == INT64_MAX) snprintf(out, n, "%s>= %s", each, lo);
        else snprintf(out, n, "%s[%s, %s]", each, lo, hi);
        if (fd->kind == CFG_INT_LIST) {
            size_t o = strlen(out);
            snprintf(out + o, n - o, "%s%s", fd->list_flags & YG_LIST_SORTED ? "; sorted" : "",
                     fd->list_flags & YG_LIST_UNIQUE ? "; unique" : "");
        }
    } else if (fd->kind == CFG_NUM) {
        fmt_num_bound(lo, sizeof lo, fd->num_lo);
        fmt_num_bound(hi, sizeof hi, fd->num_hi);
        snprintf(out, n, "%c%s, %s%c", fd->lo_open ? '(' : '[', lo, hi, fd->hi_open ? ')' : ']');
    } else if (fd->kind == CFG_ENUM_LIST) {
        snprintf(out, n, "non-empty, unique");
    }
}

/* The identity hashes a field is in; for one in none, why. */
static void doc_hashes(char *out, size_t n, const rs_cfg_field *fd) {
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{H_INPUTS, "inputs"}, {H_AFFINE, "affine"}, {H_SAE, "SAE"}, {H_EVAL, "eval"}, {H_GRID, "grid"},
                 {H_PROBE, "probe"}, {H_TPP, "tpp"}};
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof *names && o < n; i++)
        if (fd->hash & names[i].bit) o += (size_t)snprintf(out + o, n - o, "%s%s", o ? ", " : "", names[i].name);
    if (!o) snprintf(out, n, "none: %s", fd->unhashed ? fd->unhashed : "?");
}

static void keys_rows(FILE *f, const rs_config *defaults, const rs_cfg_section *s, const char *prefix) {
    for (int i = 0; i < s->n; i++) {
        const rs_cfg_field *fd = &s->fields[i];
        char key[96], type[160], def[160], range[160], hashes[160];
        if (prefix[0]) snprintf(key, sizeof key, "%s.%s", prefix, fd->name);
        else snprintf(key, sizeof key, "%s", fd->name);
        if (fd->kind == CFG_SECTION) {
            /* the top level's sections get their own table; nested ones join their parent's */
            if (s != &rs_cfg_root) keys_rows(f, defaults, fd->sub, key);
            continue;
        }
        doc_type(type, sizeof type, fd);
        doc_default(def, sizeof def, defaults, fd);
        doc_range(range, sizeof range, fd);
        doc_hashes(hashes, sizeof hashes, fd);
        fprintf(f, "| `%s` | %s | %s | %s | %s | %s |\n", key, type, def, range, hashes, fd->doc ? fd->doc : "");
    }
}

static void keys_table(FILE *f, const rs_config *defaults, const char *title, const rs_cfg_section *s) {
    fprintf(f, "### %s\n\n| key | type | default | range | hashes | meaning |\n|---|---|---|---|---|---|\n", title);
    keys_rows(f, defaults, s, "");
    if (s->doc) fprintf(f, "\n%s\n", s->doc);
    fputc('\n', f);
}

void rs_cfg_write_keys(FILE *f, const rs_cfg_section *s) {
    rs_config defaults;
    memset(&defaults, 0, sizeof defaults);
    if (rs_cfg_defaults(&defaults, s)) rs_err_clear();
    keys_table(f, &defaults, "Top level", s);
    for (int i = 0; i < s->n; i++)
        if (s->fields[i].kind == CFG_SECTION) {
            char title[96];
            snprintf(title, sizeof title, "`%s`", s->fields[i].name);
            keys_table(f, &defaults, title, s->fields[i].sub);
        }
    rs_config_free(&defaults);
}
