/* The config schema as data: every key of the experiment config is declared once, in the section
 * tables of config.c, with its type, range, default, identity-hash membership and documentation.
 * schema.c walks the tables to set the defaults, parse a section, write the canonical YAML, hash
 * the fields of an identity hash and print the key reference of docs/config.md. (The model is
 * PETSc's PetscOptionsReal: an option is declared once, with its name, help and default.) */
#ifndef RESAE_CONFIG_SCHEMA_H
#define RESAE_CONFIG_SCHEMA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "resae/config.h"
#include "yaml_get.h"

typedef enum rs_cfg_kind {
    CFG_INT,       /* int64_t */
    CFG_NUM,       /* double */
    CFG_BOOL,      /* int 0/1 */
    CFG_ENUM,      /* int, index into names */
    CFG_STR,       /* char * (owned) */
    CFG_PATH,      /* char * (owned), resolved against the config's directory */
    CFG_NAME,      /* char[RS_CONFIG_NAME_MAX] */
    CFG_INT_LIST,  /* rs_int_list */
    CFG_ENUM_LIST, /* int[n_names] with its count at count_off */
    CFG_SECTION,   /* a nested mapping: sub */
    CFG_CUSTOM,    /* parse / write / set_default hooks */
} rs_cfg_kind;

/* Field flags. */
enum {
    CFG_NULL = 1,      /* null keeps the default; the default is written as null */
    CFG_AUTO = 2,      /* auto keeps the default; the default is written as auto */
    CFG_GATE = 4,      /* a bool: when false, the section's later fields are left out of the task hashes */
    CFG_HASH_LAST = 8, /* hashed after the section's other fields (the order of a hash is frozen) */
    CFG_FLOW = 16,     /* a section written on one line: {a: 1, b: 2} */
    CFG_HASH_SET = 32, /* an int in every hash only when it is not its default: a key added later leaves
                        * the hashes of configs without it as they were */
};

/* Identity hashes a field belongs to. A change of a field in H_INPUTS changes every task hash;
 * in H_AFFINE, the affine pairs and what is built on them; in H_SAE, the SAEs and evaluations. */
enum {
    H_CONFIG = 1,  /* rs_config_hash (the canonical YAML): everything that can change a result */
    H_INPUTS = 2,  /* the inputs hash every task hash starts from (grid.c) */
    H_AFFINE = 4,  /* affine pair hashes */
    H_SAE = 8,     /* SAE hashes (with the auto rule resolved) */
    H_EVAL = 16,   /* evaluation hashes */
    H_GRID = 32,   /* not hashed as a value: it decides which tasks exist (layers, k, seeds, ...), and
                    * the grid hashes those items (rs_grid_build) */
    H_PROBE = 64,  /* sparse-probing task hashes (tasks.c); the TPP tasks' too (they share the plan) */
    H_TPP = 128,   /* TPP task hashes (tasks.c) */
};
#define H_TASKS (H_INPUTS | H_AFFINE | H_SAE | H_EVAL | H_PROBE | H_TPP)

typedef struct rs_cfg_section rs_cfg_section;

typedef struct rs_cfg_field {
    const char *name;
    rs_cfg_kind kind;
    size_t off;                 /* offsetof(rs_config, ...) of the value */
    unsigned flags;             /* CFG_* */
    unsigned hash;              /* H_* */
    const char *required;       /* non-NULL: the key is required; what it is, for the error */

    int64_t lo, hi;             /* INT, INT_LIST items: inclusive range */
    double num_lo, num_hi;      /* NUM range */
    int lo_open, hi_open;       /* NUM: exclusive bounds */
    int list_flags;             /* INT_LIST: YG_LIST_* */
    const char *what;           /* lists: one item, for messages ("k", "CE mode") */
    const char *const *names;   /* ENUM, ENUM_LIST */
    int n_names;
    size_t count_off;           /* ENUM_LIST: offsetof the int count */

    int64_t def;                /* INT, BOOL, ENUM default */
    double def_num;             /* NUM default */
    const char *def_str;        /* STR default (NULL: none) */
    const int64_t *def_list;    /* INT_LIST default (ENUM_LIST: every name, in order) */
    int def_n;

    /* the value an auto field resolves to, hashed instead of the field (SAE hash) */
    int64_t (*resolve_int)(const rs_config *c);
    double (*resolve_num)(const rs_config *c, int64_t n_latents);

    const rs_cfg_section *sub;  /* SECTION */
    /* CUSTOM: parse the value node; write the key's line(s) at INDENT; set the default */
    rs_err (*parse)(yg_parser *p, yaml_node_t *v);
    void (*write)(FILE *f, const rs_config *c, int indent);
    void (*set_default)(rs_config *c);
    /* run after the field is parsed, or found absent (v NULL): checks and resolution */
    rs_err (*after)(yg_parser *p, yaml_node_t *v);

    /* in no task hash: why the field cannot change a result (required then, checked by a test) */
    const char *unhashed;
    /* docs/config.md: the meaning; overrides of the generated type, default and range */
    const char *doc;
    const char *doc_type, *doc_default, *doc_range;
} rs_cfg_field;

struct rs_cfg_section {
    const char *key;            /* key path: "" for the top level, "train.adam" */
    const rs_cfg_field *fields;
    int n;
    unsigned flags;             /* CFG_FLOW */
    rs_err (*after)(yg_parser *p, yaml_node_t *n); /* checks across the section's fields */
    const char *doc;            /* docs/config.md: a note under the section's table */
};

/* The top level of the config (config.c). */
extern const rs_cfg_section rs_cfg_root;

/* ---- walkers (schema.c) ---- */
/* Every default of S and its subsections. */
rs_err rs_cfg_defaults(rs_config *c, const rs_cfg_section *s);
/* Parse mapping N as section S: unknown/duplicate keys, required keys, each value, hooks. */
rs_err rs_cfg_parse(yg_parser *p, const rs_cfg_section *s, yaml_node_t *n);
/* Canonical YAML of S at INDENT; for_hash leaves out what is not in H_CONFIG. */
void rs_cfg_write(FILE *f, const rs_config *c, const rs_cfg_section *s, int indent, int for_hash);
/* Mix every field of the config in hash WHICH (one H_* bit) into H, in table order. */
uint64_t rs_cfg_hash(uint64_t h, const rs_config *c, unsigned which, int64_t n_latents);
/* The key reference of docs/config.md (markdown tables). */
void rs_cfg_write_keys(FILE *f, const rs_cfg_section *s);

/* ---- identity hashing: fixed-width fields, strings with their length ---- */
uint64_t rs_cfg_h_i64(uint64_t h, int64_t v);
uint64_t rs_cfg_h_f64(uint64_t h, double v);
uint64_t rs_cfg_h_str(uint64_t h, const char *s);

/* ---- canonical YAML values ---- */
void rs_cfg_put_str(FILE *f, const char *s);
void rs_cfg_put_num(FILE *f, double v);     /* shortest round-trip decimal, always a float */
void rs_cfg_put_list(FILE *f, const rs_int_list *l);

#endif
