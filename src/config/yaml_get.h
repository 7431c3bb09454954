/* Typed getters over a libyaml document for the config loader (yaml_get.c). Every getter checks
 * the node's type and range and fails with "PATH:LINE:COL: KEY: problem; fix" at the node. */
#ifndef RESAE_CONFIG_YAML_GET_H
#define RESAE_CONFIG_YAML_GET_H

#include <stdint.h>
#include <yaml.h>

#include "resae/config.h"

typedef struct yg_parser {
    rs_config *c;
    yaml_document_t *doc;
} yg_parser;

/* One key of a mapping with a fixed key set; val is NULL when the key is absent. */
typedef struct yg_field {
    const char *name;
    yaml_node_t *val;
} yg_field;

/* ---- nodes ---- */
rs_loc yg_loc(const yaml_node_t *n);
yaml_node_t *yg_node(yg_parser *p, yaml_node_item_t i);
const char *yg_sval(const yaml_node_t *n);
int yg_is_plain(const yaml_node_t *n);
int yg_is_null(const yaml_node_t *n);   /* plain "", ~, null */
int yg_is_auto(const yaml_node_t *n);   /* plain auto */
/* "a mapping", "a list", "null" or the quoted scalar, for "found ..." in messages */
void yg_describe(char *out, size_t n, const yaml_node_t *v);
/* "parent.child" (or "child" at the top level), control characters replaced */
void yg_join_key(char *out, size_t n, const char *parent, const char *child);

/* ---- errors and positions ---- */
/* Fail at node N (its own position), or at KEY's recorded position when N is NULL. */
rs_err yg_fail(yg_parser *p, const yaml_node_t *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define YG_FAIL(...) return yg_fail(__VA_ARGS__)
/* Record where KEY's value is (bounded by RS_CONFIG_MAX_VALUES). */
rs_err yg_loc_record(rs_config *c, const char *key, rs_loc loc);

/* ---- mappings ---- */
/* Match MAP's keys against F (unknown and duplicate keys fail with a hint); records positions. */
rs_err yg_map_fields(yg_parser *p, yaml_node_t *map, const char *key, yg_field *f, int nf);
rs_err yg_require(yg_parser *p, yaml_node_t *map, const char *key, const yg_field *f, const char *what);

/* ---- scalars ---- */
rs_err yg_int(yg_parser *p, yaml_node_t *n, const char *key, int64_t lo, int64_t hi, int64_t *out);
/* lo_open / hi_open make the bounds exclusive */
rs_err yg_num(yg_parser *p, yaml_node_t *n, const char *key, double lo, int lo_open, double hi, int hi_open,
              double *out);
rs_err yg_bool(yg_parser *p, yaml_node_t *n, const char *key, int *out);
rs_err yg_str(yg_parser *p, yaml_node_t *n, const char *key, char **out);   /* replaces *out */
rs_err yg_enum(yg_parser *p, yaml_node_t *n, const char *key, const char *const *names, int count, int *out);
/* [A-Za-z0-9_.-]{1,63} into OUT (RS_CONFIG_NAME_MAX bytes) */
rs_err yg_name(yg_parser *p, yaml_node_t *n, const char *key, char *out);
/* A string resolved against the config's directory (absolute, folded lexically); replaces *out. */
rs_err yg_path(yg_parser *p, yaml_node_t *n, const char *key, char **out);
rs_err yg_resolve_path(const rs_config *c, const char *path, char **out);

/* ---- lists ---- */
enum { YG_LIST_UNIQUE = 1, YG_LIST_SORTED = 2, YG_LIST_MAY_BE_EMPTY = 4, YG_LIST_LONG = 8 };
/* N is a list within the length bound of FLAGS; *len its length. WHAT names one item. */
rs_err yg_seq_check(yg_parser *p, yaml_node_t *n, const char *key, const char *what, int flags, int *len);
rs_err yg_int_list(yg_parser *p, yaml_node_t *n, const char *key, const char *what, int64_t lo, int64_t hi,
                   int flags, rs_int_list *out);
/* unique words of NAMES into OUT (at most COUNT items) */
rs_err yg_enum_list(yg_parser *p, yaml_node_t *n, const char *key, const char *what, const char *const *names,
                    int count, int *out, int *n_out);

#endif
