/* resae report RUN_DIR [--format text|markdown|csv] [--table NAME]: the evaluation tables of a run's
 * results file (the rows the paper's figures plot) as aligned text, GitHub pipe tables or CSV. Reads
 * RUN_DIR/results.h5 only (docs/store.md "Evaluation"). Each table is built once, as columns and rows of
 * cells (a number, and for set, enum and SAE names the name), and written by one emitter per format. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/cli.h"
#include "resae/h5util.h"
#include "resae/results.h"
#include "resae/stage_probe.h"
#include "resae/stage_tpp.h"
#include "resae/util.h"

/* The tables by name, in output order (--table, --help). */
static const struct {
    const char *name, *what;
} TABLES[] = {
    {"recon", "set x variant x k x seed x layer: L0, dead fraction (eval split, end of training),\n"
              "MSE, EV in target and original space (one-step, open- and closed-loop chain)"},
    {"sae_quality", "per SAE: dead fraction (end of training, eval split), FVU, fvu_last20_gain\n"
                    "(train.curve_bins > 0), flags DEAD>10% and NOT-FLAT (gain >= 2%)"},
    {"redundancy", "variant x k x gap: mean over rows of max cos (and max |cos|) between decoder rows\n"
                   "of layer pairs, averaged over distinct pairs with that gap"},
    {"ce", "set x variant x k x seed x mode: CE, dCE, KL(clean||spliced), recovered CE against\n"
           "zero and mean ablation, overinteraction of the joint modes"},
    {"affine_only", "set x mode: the CE columns with no SAE (h <- A h_prev + c at l_2..l_M)"},
    {"probing", "set x variant x k x seed x kind x layer x K: test accuracy of the sparse probes\n"
                "(mean over classes, then class sets), pooled h (ceiling), K random latents (floor)"},
    {"probing_union", "set x variant x k x seed x layer: the union probes' latents per layer"},
    {"tpp_matrix", "set x quantity (tpp, interaction) x N x k: global / joint budget x raw / resae"},
    {"tpp_kinds", "set x variant x k x kind x layer x N: intended and unintended accuracy changes, TPP"},
};
#define N_TABLES ((int)(sizeof TABLES / sizeof TABLES[0]))

enum rep_format { REP_TEXT, REP_MARKDOWN, REP_CSV, REP_FORMAT_COUNT };
static const char *const FORMAT_NAMES[REP_FORMAT_COUNT] = {"text", "markdown", "csv"};

static void usage(FILE *f) {
    fprintf(f, "usage: resae report RUN_DIR [--format text|markdown|csv] [--table NAME]\n\n"
               "Prints the evaluation tables of RUN_DIR/results.h5 (written by `resae run`):\n");
    for (int i = 0; i < N_TABLES; i++) {
        fprintf(f, "  %-14s ", TABLES[i].name);
        for (const char *s = TABLES[i].what; *s; s++) {
            fputc(*s, f);
            if (*s == '\n') fprintf(f, "%17s", "");
        }
        fputc('\n', f);
    }
    fprintf(f, "affine_only, probing* and tpp* only when the run has them (eval.affine_only,\n"
               "eval.probing, eval.tpp). Definitions are stored with each table (attribute `definition`).\n\n"
               "options:\n"
               "  --format F    text (default): aligned columns, numbers rounded, layer - for every layer\n"
               "                markdown: a GitHub pipe table per table after `### NAME` and a one-line\n"
               "                  description, numbers as in text\n"
               "                csv: RFC 4180, a header row, names for sets and enums, numbers at full\n"
               "                  precision (layer -1: every layer; NaN: empty); without --table every table\n"
               "                  follows a line `# table: NAME`, tables separated by a blank line\n"
               "  --table NAME  only that table (csv: plain CSV, e.g. for pandas.read_csv)\n"
               "exit codes: 0 ok, 1 error (no results file, no evaluation tables, or no table NAME in the run),\n"
               "  2 usage\n");
}

/* ---- one table emitter for the three formats ------------------------------------------------------ */

#define COL_STR 1u      /* shows the cell's name (set, enum, SAE, flags); its number is the code */
#define COL_DASH_NEG 2u /* text and markdown show a negative number as "-" (layer -1: every layer) */
#define COL_DASH_NAN 4u /* text and markdown show NaN as "-" */
#define COL_X100 8u     /* text and markdown show 100 x the number */
#define COL_PSIGN 16u   /* text and markdown append "%" */
#define COL_GAP2 32u    /* two spaces before the column in text */

typedef struct rep_col {
    const char *name; /* header (csv's header is csv if set) */
    int width;        /* text field width, negative: left-aligned */
    int prec;         /* text and markdown: printf precision and conversion ('f' or 'g') */
    char conv;
    unsigned flags;
    const char *csv;
} rep_col;
#define COL_S(name, width, flags) {name, width, 0, 0, COL_STR | (flags), NULL}
#define COL_N(name, width, prec, conv, flags) {name, width, prec, conv, flags, NULL}

typedef struct rep_cell {
    double v; /* the number; for a name the code it stands for (rows are grouped by it) */
    char *s;  /* the name, or NULL */
} rep_cell;

typedef struct rep_out rep_out;
typedef struct rep_table rep_table;
struct rep_table {
    const char *name, *title, *desc; /* title: text (and markdown unless desc is set) */
    const rep_col *cols;
    int nc;
    rep_cell *cells; /* row-major, n / nc rows */
    size_t n, cap;
    int oom, hide_empty;                         /* hide_empty: text prints nothing without rows */
    void (*text)(rep_out *o, const rep_table *t); /* a text layout other than one line per row */
};
#define TABLE(nm, ttl, columns) \
    {.name = nm, .title = ttl, .cols = columns, .nc = (int)(sizeof columns / sizeof columns[0])}

struct rep_out {
    int format;
    const char *only; /* --table */
    int blocks;       /* titled blocks (text) or tables written so far */
    int found;        /* the --table table was written */
};

static int wanted(const rep_out *o, const char *name) { return !o->only || !strcmp(o->only, name); }

/* Appends a cell to the row being built: a number, or a name s for the code v. */
static void put_str(rep_table *t, double v, const char *s) {
    if (t->oom) return;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        rep_cell *c = realloc(t->cells, cap * sizeof *c);
        if (!c) {
            t->oom = 1;
            return;
        }
        t->cells = c;
        t->cap = cap;
    }
    char *d = NULL;
    if (s) {
        size_t len = strlen(s) + 1;
        if (!(d = malloc(len))) {
            t->oom = 1;
            return;
        }
        memcpy(d, s, len);
    }
    t->cells[t->n++] = (rep_cell){v, d};
}
static void put_num(rep_table *t, double v) { put_str(t, v, NULL); }

static size_t n_rows(const rep_table *t) { return t->n / (size_t)t->nc; }
static const rep_cell *row_at(const rep_table *t, size_t r) { return t->cells + r * (size_t)t->nc; }

/* Rows a and b have bitwise the same numbers in their first n cells. */
static int same_key(const rep_cell *a, const rep_cell *b, int n) {
    for (int i = 0; i < n; i++)
        if (memcmp(&a[i].v, &b[i].v, sizeof(double))) return 0;
    return 1;
}

#define CELL_MAX 400 /* longest text of a number (%.4f of DBL_MAX has 314 characters) */

/* The text and markdown form of a cell of column k: its name, "-", or the number as the column shows it. */
static const char *cell_text(char *buf, size_t n, const rep_col *k, const rep_cell *c) {
    if (c->s) return c->s;
    if ((k->flags & COL_DASH_NAN && isnan(c->v)) || (k->flags & COL_DASH_NEG && c->v < 0)) return "-";
    double v = k->flags & COL_X100 ? 100 * c->v : c->v;
    if (k->conv == 'g') snprintf(buf, n, "%.*g%s", k->prec, v, k->flags & COL_PSIGN ? "%" : "");
    else snprintf(buf, n, "%.*f%s", k->prec, v, k->flags & COL_PSIGN ? "%" : "");
    return buf;
}

/* Text: a title line, after a blank line unless it is the first thing written. */
static void text_title(rep_out *o, const char *title) {
    if (o->blocks++) putchar('\n');
    printf("%s\n", title);
}

/* Text: columns c0..c1-1 of a row (the header if row is NULL), padded, no newline. */
static void text_cells(const rep_table *t, const rep_cell *row, int c0, int c1) {
    char buf[CELL_MAX];
    for (int c = c0; c < c1; c++) {
        const rep_col *k = &t->cols[c];
        if (c > c0) fputs(k->flags & COL_GAP2 ? "  " : " ", stdout);
        printf("%*s", k->width, row ? cell_text(buf, sizeof buf, k, &row[c]) : k->name);
    }
}

static void text_table(rep_out *o, const rep_table *t) {
    text_title(o, t->title);
    text_cells(t, NULL, 0, t->nc);
    putchar('\n');
    for (size_t r = 0; r < n_rows(t); r++) {
        text_cells(t, row_at(t, r), 0, t->nc);
        putchar('\n');
    }
}

/* Markdown cell: trailing blanks dropped, '|' escaped. */
static void md_cell(const char *s) {
    size_t len = strlen(s);
    while (len && s[len - 1] == ' ') len--;
    putchar(' ');
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '|') putchar('\\');
        putchar(s[i]);
    }
    fputs(" |", stdout);
}

static void md_table(rep_out *o, const rep_table *t) {
    if (o->blocks++) putchar('\n');
    printf("### %s\n\n%s\n\n|", t->name, t->desc ? t->desc : t->title);
    for (int c = 0; c < t->nc; c++) md_cell(t->cols[c].name);
    fputs("\n|", stdout);
    for (int c = 0; c < t->nc; c++) fputs(t->cols[c].flags & COL_STR ? " --- |" : " ---: |", stdout);
    putchar('\n');
    char buf[CELL_MAX];
    for (size_t r = 0; r < n_rows(t); r++) {
        putchar('|');
        for (int c = 0; c < t->nc; c++) md_cell(cell_text(buf, sizeof buf, &t->cols[c], &row_at(t, r)[c]));
        putchar('\n');
    }
}

/* CSV field (RFC 4180): trailing blanks dropped, quoted if it holds a comma, quote or line break. */
static void csv_str(const char *s) {
    size_t len = strlen(s);
    while (len && s[len - 1] == ' ') len--;
    int quote = 0;
    for (size_t i = 0; i < len; i++) quote |= s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
    if (quote) putchar('"');
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"') putchar('"');
        putchar(s[i]);
    }
    if (quote) putchar('"');
}

/* CSV number: the shortest of %.15g, %.16g, %.17g that reads back to the same double; NaN: empty. */
static void csv_num(double v) {
    if (isnan(v)) return;
    char buf[40];
    for (int p = 15; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, stdout);
}

static void csv_table(rep_out *o, const rep_table *t) {
    if (!o->only) {
        if (o->blocks++) putchar('\n');
        printf("# table: %s\n", t->name);
    }
    for (int c = 0; c < t->nc; c++) {
        if (c) putchar(',');
        csv_str(t->cols[c].csv ? t->cols[c].csv : t->cols[c].name);
    }
    putchar('\n');
    for (size_t r = 0; r < n_rows(t); r++) {
        const rep_cell *q = row_at(t, r);
        for (int c = 0; c < t->nc; c++) {
            if (c) putchar(',');
            if (q[c].s) csv_str(q[c].s);
            else csv_num(q[c].v);
        }
        putchar('\n');
    }
}

static void table_free(rep_table *t) {
    for (size_t i = 0; i < t->n; i++) free(t->cells[i].s);
    free(t->cells);
    t->cells = NULL;
    t->n = t->cap = 0;
}

/* Writes t in o's format if --table selects it, then frees its cells. 0, or 1 when out of memory. */
static int emit(rep_out *o, rep_table *t) {
    int rc = 0;
    if (t->oom) {
        fprintf(stderr, "error: out of memory\n");
        rc = 1;
    } else if (wanted(o, t->name)) {
        o->found = 1;
        if (o->format == REP_MARKDOWN) md_table(o, t);
        else if (o->format == REP_CSV) csv_table(o, t);
        else if (!t->hide_empty || n_rows(t)) (t->text ? t->text : text_table)(o, t);
    }
    table_free(t);
    return rc;
}

/* ---- the results file -------------------------------------------------------------------------- */

static int read_table(double **out, int *rows, int cols, hid_t f, const char *name, const char *path) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) {
        fprintf(stderr, "error: %s has no %s: the run has not reached the evaluation stage (run `resae run` again)\n",
                path, name);
        return 1;
    }
    hid_t sp = H5Dget_space(ds);
    hsize_t d[2] = {0, 0};
    int nd = H5Sget_simple_extent_dims(sp, d, NULL);
    H5Sclose(sp);
    if (nd != 2 || d[1] != (hsize_t)cols) {
        H5Dclose(ds);
        fprintf(stderr, "error: %s: %s is not a table of %d columns (results of another version?)\n", path, name, cols);
        return 1;
    }
    *rows = (int)d[0];
    *out = malloc(sizeof(double) * (d[0] ? d[0] : 1) * (size_t)cols);
    herr_t e = !*out ? -1 : d[0] ? H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) : 0;
    H5Dclose(ds);
    if (e < 0) {
        fprintf(stderr, "error: %s: cannot read %s\n", path, name);
        return 1;
    }
    return 0;
}

/* i-th comma-separated name of a list attribute, or the number itself. */
static void set_name(char *out, size_t n, const char *list, int i) {
    const char *s = list;
    for (int k = 0; k < i && s; k++) {
        s = strchr(s, ',');
        if (s) s++;
    }
    if (!s || !*s) {
        snprintf(out, n, "%d", i);
        return;
    }
    size_t len = strcspn(s, ",");
    if (len >= n) len = n - 1;
    memcpy(out, s, len);
    out[len] = 0;
}

static void put_set(rep_table *t, const char *sets, double set) {
    char sn[128];
    set_name(sn, sizeof sn, sets, (int)set);
    put_str(t, set, sn);
}

static const char *variant(double v) {
    int i = (int)v;
    return i >= 0 && i < RS_VARIANT_COUNT && i == v ? rs_variant_names[i] : "?";
}
static void put_variant(rep_table *t, double v) { put_str(t, v, variant(v)); }

static const char *ce_mode(double v) {
    int mode = (int)v;
    return mode >= 0 && mode < RS_CE_ROW_COUNT ? rs_eval_ce_row_names[mode] : "?";
}

/* ---- the tables -------------------------------------------------------------------------------- */

static const rep_col RECON_COLS[] = {
    COL_S("set", -12, 0),           COL_S("var", -6, 0),           COL_N("k", 5, 0, 'f', 0),
    COL_N("seed", 5, 0, 'f', 0),    COL_N("layer", 6, 0, 'f', 0),  COL_N("L0", 8, 2, 'f', 0),
    COL_N("dead_ev", 8, 4, 'f', 0), COL_N("dead_tr", 8, 4, 'f', 0), COL_N("MSE", 10, 4, 'g', 0),
    COL_N("EV_target", 10, 4, 'f', 0), COL_N("EV_1step", 10, 4, 'f', 0), COL_N("EV_chain", 10, 4, 'f', 0),
    COL_N("EV_closed", 10, 4, 'f', 0),
};

static int table_recon(rep_out *o, const double *rec, int nrec, const char *sets) {
    if (!wanted(o, "recon")) return 0;
    rep_table t = TABLE("recon",
                        "Reconstruction on the eval split (EV: target space; original space one-step, open-loop chain "
                        "and closed-loop chain)",
                        RECON_COLS);
    for (int r = 0; r < nrec; r++) {
        const double *q = rec + (size_t)r * (RS_EVAL_RECON_NC + 4);
        put_set(&t, sets, q[0]);
        put_variant(&t, q[1]);
        static const int src[] = {2, 3, 4, 7, 8, 14, 9, 10, 11, 12, 15};
        for (int j = 0; j < (int)(sizeof src / sizeof src[0]); j++) put_num(&t, q[src[j]]);
    }
    return emit(o, &t);
}

/* The demo's bar for an SAE (README "The demo"), as analysis/report.py flags it. */
#define MAX_EVAL_DEAD 0.10
#define MAX_LAST20_GAIN 0.02

typedef struct sae_quality_ctx {
    const double *rec; /* eval/recon rows */
    int nrec;
    const char *path;
    rep_table *t;
} sae_quality_ctx;

/* Largest eval-split dead fraction of the SAE (layer, pred, k, seed) over the recon rows; NaN if none. */
static double eval_dead(const sae_quality_ctx *q, double layer, double pred, double k, double seed) {
    double dead = NAN;
    for (int r = 0; r < q->nrec; r++) {
        const double *x = q->rec + (size_t)r * (RS_EVAL_RECON_NC + 4);
        if (x[4] == layer && x[5] == pred && x[2] == k && x[3] == seed && !(x[8] <= dead)) dead = x[8];
    }
    return dead;
}

/* One row per /sae/<name>: dead fractions, FVU, fvu_last20_gain (train.curve_bins > 0) and flags. */
static herr_t sae_quality_row(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    const sae_quality_ctx *q = data;
    if (!strcmp(name, "table")) return 0;
    hid_t sg = H5Gopen2(g, name, H5P_DEFAULT);
    if (sg < 0) return 0;
    double v[6] = {0}, gain = NAN;
    static const char *const attrs[] = {"layer", "pred", "k", "seed", "dead_frac", "fvu"};
    for (int i = 0; i < 6; i++)
        if (rs_h5_attr_get_f64(&v[i], sg, attrs[i], q->path)) v[i] = NAN;
    if (H5Aexists(sg, "fvu_last20_gain") > 0 && rs_h5_attr_get_f64(&gain, sg, "fvu_last20_gain", q->path)) gain = NAN;
    H5Gclose(sg);
    double dead = eval_dead(q, v[0], v[1], v[2], v[3]);
    char flags[32];
    snprintf(flags, sizeof flags, "%s%s", dead > MAX_EVAL_DEAD ? "DEAD>10% " : "",
             gain >= MAX_LAST20_GAIN ? "NOT-FLAT" : "");
    put_str(q->t, 0, name);
    put_num(q->t, v[4]);
    put_num(q->t, dead);
    put_num(q->t, v[5]);
    put_num(q->t, gain);
    put_str(q->t, 0, flags);
    return 0;
}

static const rep_col SAE_COLS[] = {
    COL_S("SAE", -22, 0),
    COL_N("dead_train", 10, 4, 'f', 0),
    COL_N("dead_eval", 9, 4, 'f', COL_DASH_NAN),
    COL_N("FVU", 8, 4, 'f', 0),
    COL_N("gain_last20", 11, 2, 'f', COL_DASH_NAN | COL_X100 | COL_PSIGN),
    COL_S("flags", 0, COL_GAP2),
};

static int table_sae_quality(rep_out *o, hid_t f, const double *rec, int nrec, const char *path) {
    if (!wanted(o, "sae_quality")) return 0;
    hid_t g = H5Gopen2(f, "sae", H5P_DEFAULT);
    if (g < 0) return 0;
    rep_table t = TABLE("sae_quality",
                        "SAE quality (bar: eval dead fraction <= 10%, FVU gain over the last 20% of steps < 2%; "
                        "gain - : no training curve, train.curve_bins 0)",
                        SAE_COLS);
    sae_quality_ctx q = {rec, nrec, path, &t};
    H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, sae_quality_row, &q);
    H5Gclose(g);
    return emit(o, &t);
}

static const rep_col RED_COLS[] = {
    COL_S("var", -6, 0),
    COL_N("k", 5, 0, 'f', 0),
    COL_N("gap", 5, 0, 'f', 0),
    COL_N("pairs", 6, 0, 'f', 0),
    COL_N("mean_max_cos", 14, 4, 'f', 0),
    {"mean_max_|cos|", 14, 4, 'f', 0, "mean_max_abs_cos"},
};

static int table_redundancy(rep_out *o, const double *red, int nred) {
    if (!wanted(o, "redundancy")) return 0;
    rep_table t = TABLE("redundancy", "Decoder redundancy by gap (mean over distinct layer pairs and seeds)", RED_COLS);
    /* distinct (variant, k, seed, a, b), then means per (variant, k, gap) in table order */
    int n = 0, ng = 0;
    double (*u)[7] = calloc((size_t)(nred ? nred : 1), sizeof *u);     /* variant,k,seed,a,b,cos,abs */
    double (*grp)[6] = calloc((size_t)(nred ? nred : 1), sizeof *grp); /* variant,k,gap,count,cos,abs */
    if (!u || !grp) {
        free(u);
        free(grp);
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    for (int r = 0; r < nred; r++) {
        const double *q = red + (size_t)r * (RS_EVAL_RED_NC + 4);
        int dup = 0;
        for (int i = 0; i < n && !dup; i++)
            dup = u[i][0] == q[1] && u[i][1] == q[2] && u[i][2] == q[3] && u[i][3] == q[4] && u[i][4] == q[5];
        if (dup) continue;
        double row[7] = {q[1], q[2], q[3], q[4], q[5], q[7], q[8]};
        memcpy(u[n++], row, sizeof row);
    }
    for (int i = 0; i < n; i++) {
        double gap = u[i][4] - u[i][3];
        int j = 0;
        while (j < ng && !(grp[j][0] == u[i][0] && grp[j][1] == u[i][1] && grp[j][2] == gap)) j++;
        if (j == ng) {
            grp[ng][0] = u[i][0], grp[ng][1] = u[i][1], grp[ng][2] = gap;
            ng++;
        }
        grp[j][3] += 1;
        grp[j][4] += u[i][5];
        grp[j][5] += u[i][6];
    }
    for (int j = 0; j < ng; j++) {
        put_variant(&t, grp[j][0]);
        put_num(&t, grp[j][1]);
        put_num(&t, grp[j][2]);
        put_num(&t, grp[j][3]);
        put_num(&t, grp[j][4] / grp[j][3]);
        put_num(&t, grp[j][5] / grp[j][3]);
    }
    free(u);
    free(grp);
    return emit(o, &t);
}

/* The CE columns of eval/ce and eval/affine_only from `layer` on. */
#define CE_COLS                                                                                                    \
    COL_N("layer", 6, 0, 'f', COL_DASH_NEG), COL_N("CE", 9, 4, 'f', 0), COL_N("dCE", 9, 4, 'f', 0),               \
        COL_N("KL", 9, 4, 'f', COL_DASH_NAN), COL_N("rec_zero", 9, 4, 'f', COL_DASH_NAN),                         \
        COL_N("rec_mean", 9, 4, 'f', COL_DASH_NAN), COL_N("overint", 9, 4, 'f', COL_DASH_NAN)
static const rep_col CE_TABLE_COLS[] = {
    COL_S("set", -12, 0),        COL_S("var", -6, 0),  COL_N("k", 5, 0, 'f', 0),
    COL_N("seed", 5, 0, 'f', 0), COL_S("mode", -7, 0), CE_COLS,
};

static int table_ce(rep_out *o, const double *ce, int nce, const char *sets) {
    if (!wanted(o, "ce")) return 0;
    rep_table t = TABLE("ce",
                        "CE splices on the eval split (layer -: all layers of the set; recovered = (CE_ablate - CE) / "
                        "(CE_ablate - CE_clean))",
                        CE_TABLE_COLS);
    for (int r = 0; r < nce; r++) {
        const double *q = ce + (size_t)r * (RS_EVAL_CE_NC + 4);
        put_set(&t, sets, q[0]);
        put_variant(&t, q[1]);
        put_num(&t, q[2]);
        put_num(&t, q[3]);
        put_str(&t, q[4], ce_mode(q[4]));
        for (int j = 5; j < 12; j++) put_num(&t, q[j]);
    }
    return emit(o, &t);
}

/* The affine-only control (METHOD.md §6): the set's CE passes with l_2..l_M replaced by the affine
 * prediction and no SAE. */
static const rep_col AFFINE_COLS[] = {COL_S("set", -12, 0), COL_S("mode", -7, 0), CE_COLS};

static int table_affine_only(rep_out *o, hid_t f, const char *path, const char *sets) {
    if (!wanted(o, "affine_only")) return 0;
    double *a = NULL;
    int n = 0, nc = RS_EVAL_CE_NC + 1;
    if (read_table(&a, &n, nc, f, "eval/affine_only", path)) {
        free(a);
        return 1;
    }
    rep_table t = TABLE("affine_only",
                        "Affine-only control (no SAE: h <- A h_prev + c at l_2..l_M, l_1 clean; tf adds the clean "
                        "affine error, so writes A x_prev + c)",
                        AFFINE_COLS);
    t.hide_empty = 1;
    for (int r = 0; r < n; r++) {
        const double *q = a + (size_t)r * (size_t)nc;
        put_set(&t, sets, q[0]);
        put_str(&t, q[1], ce_mode(q[1]));
        for (int j = 2; j < 9; j++) put_num(&t, q[j]);
    }
    free(a);
    return emit(o, &t);
}

/* Probing in text: one line per set x variant x k x seed x kind x layer with its K:accuracy pairs. */
static void text_probing(rep_out *o, const rep_table *t) {
    text_title(o, t->title);
    text_cells(t, NULL, 0, 6);
    printf("  %s\n", "K:accuracy ...");
    char a[CELL_MAX], b[CELL_MAX];
    for (size_t r = 0; r < n_rows(t); r++) {
        const rep_cell *q = row_at(t, r);
        if (!r || !same_key(q - t->nc, q, 6)) {
            if (r) putchar('\n');
            text_cells(t, q, 0, 6);
            putchar(' ');
        }
        printf(" %s:%s", cell_text(a, sizeof a, &t->cols[6], &q[6]), cell_text(b, sizeof b, &t->cols[7], &q[7]));
    }
    if (n_rows(t)) putchar('\n');
}

/* The union probes' latents in text: one line per set x variant x k x seed, "L<layer> <percent>" each. */
static void text_probing_union(rep_out *o, const rep_table *t) {
    text_title(o, t->title);
    char a[CELL_MAX], b[CELL_MAX];
    for (size_t r = 0; r < n_rows(t); r++) {
        const rep_cell *q = row_at(t, r);
        if (!r || !same_key(q - t->nc, q, 4)) {
            if (r) putchar('\n');
            text_cells(t, q, 0, 4);
            putchar(':');
        }
        printf(" L%s %s", cell_text(a, sizeof a, &t->cols[4], &q[4]), cell_text(b, sizeof b, &t->cols[6], &q[6]));
    }
    if (n_rows(t)) putchar('\n');
}

static const rep_col PROBING_COLS[] = {
    COL_S("set", -12, 0),        COL_S("var", -6, 0),   COL_N("k", 5, 0, 'f', 0),
    COL_N("seed", 5, 0, 'f', 0), COL_S("kind", -10, 0), COL_N("layer", 6, 0, 'f', COL_DASH_NEG),
    COL_N("K", 0, 0, 'f', 0),    COL_N("accuracy", 0, 4, 'f', 0),
};
static const rep_col UNION_COLS[] = {
    COL_S("set", -12, 0),        COL_S("var", -6, 0),          COL_N("k", 5, 0, 'f', 0),
    COL_N("seed", 5, 0, 'f', 0), COL_N("layer", 0, 0, 'f', 0), COL_N("latents", 0, 0, 'f', 0),
    COL_N("percent", 0, 0, 'f', COL_PSIGN),
};

/* Probing accuracy by set x variant x k x seed x kind x layer x K (rows with class_set -1: means over
 * classes, then class sets), then the layers of the union's latents. */
static int table_probing(rep_out *o, hid_t f, const char *path, const char *sets) {
    if (!wanted(o, "probing") && !wanted(o, "probing_union")) return 0;
    double *t = NULL, *lat = NULL;
    int n = 0, nl = 0, nc = RS_PROBE_TABLE_NC + 1, nlc = RS_PROBE_LATENT_NC + 1, rc = 1;
    rep_table acc = TABLE("probing",
                          "Sparse probing (test accuracy, mean over classes then class sets; layer -: union of the "
                          "set's layers; model: pooled h, K = d for all dims; random: K random latents)",
                          PROBING_COLS);
    rep_table un = TABLE("probing_union",
                         "Layers of the union probes' latents (largest K, all classes): set var k seed: layer share ...",
                         UNION_COLS);
    acc.text = text_probing;
    un.text = text_probing_union;
    un.desc = "Layers of the union probes' latents (largest K, all classes): how many of a probe's latents are at "
              "each layer, and their percentage";
    char *done = NULL, *seen = NULL;
    if (read_table(&t, &n, nc, f, "probing/probing", path) || read_table(&lat, &nl, nlc, f, "probing/probing_latents", path))
        goto out;
    done = calloc((size_t)n + 1, 1);
    seen = calloc((size_t)nl + 1, 1);
    if (!done || !seen) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const double *q = t + (size_t)i * nc;
        if (done[i] || q[7] != -1) continue;
        int kind = (int)q[4];
        for (int j = i; j < n; j++) {
            const double *p = t + (size_t)j * nc;
            if (p[7] != -1 || memcmp(p, q, sizeof(double) * 6)) continue;
            done[j] = 1;
            put_set(&acc, sets, p[0]);
            put_str(&acc, p[1], p[1] < 0 ? "model" : variant(p[1]));
            put_num(&acc, p[2]);
            put_num(&acc, p[3]);
            put_str(&acc, p[4], kind >= 0 && kind < RS_PROBE_KIND_COUNT ? rs_probe_kind_names[kind] : "?");
            put_num(&acc, p[5]);
            put_num(&acc, p[6]);
            put_num(&acc, p[9]);
        }
    }
    if (emit(o, &acc)) goto out;
    /* union scope: share of the chosen latents (largest K, every class) per layer */
    for (int i = 0; i < nl; i++) {
        const double *q = lat + (size_t)i * nlc;
        if (seen[i] || q[4] != -1) continue;
        int total = 0;
        for (int j = i; j < nl; j++) {
            const double *p = lat + (size_t)j * nlc;
            total += p[4] == -1 && !memcmp(p, q, sizeof(double) * 4);
        }
        for (int j = i; j < nl; j++) {
            const double *p = lat + (size_t)j * nlc;
            if (seen[j] || p[4] != -1 || memcmp(p, q, sizeof(double) * 4)) continue;
            int cnt = 0;
            for (int k = j; k < nl; k++) {
                const double *r = lat + (size_t)k * nlc;
                if (!seen[k] && r[4] == -1 && !memcmp(r, q, sizeof(double) * 4) && r[8] == p[8]) {
                    seen[k] = 1;
                    cnt++;
                }
            }
            put_set(&un, sets, q[0]);
            put_variant(&un, q[1]);
            put_num(&un, q[2]);
            put_num(&un, q[3]);
            put_num(&un, p[8]);
            put_num(&un, cnt);
            put_num(&un, 100.0 * cnt / total);
        }
    }
    rc = emit(o, &un);
out:
    table_free(&acc);
    table_free(&un);
    free(done);
    free(seen);
    free(t);
    free(lat);
    return rc;
}

/* Mean over seeds of column col of the TPP rows (set, variant, k, kind, layer, N) averaged over classes and
 * class sets; NaN if there is none. */
static double tpp_cell(const double *t, int n, double set, double var, double k, double kind, double layer, double N,
                       int col) {
    double sum = 0;
    int cnt = 0;
    for (int r = 0; r < n; r++) {
        const double *q = t + (size_t)r * (RS_TPP_TABLE_NC + 1);
        if (q[0] == set && q[1] == var && q[2] == k && q[4] == kind && q[5] == layer && q[6] == N && q[7] == -1 &&
            q[8] == -1) {
            sum += q[col];
            cnt++;
        }
    }
    return cnt ? sum / cnt : NAN;
}

static const char *const TPP_QUANTITY[2] = {"tpp", "interaction"};
static const char *const TPP_WHAT[2] = {"TPP = mean_i [intended - unintended]",
                                        "interaction = TPP(budget) - sum of its layers' parts"};

/* The TPP matrices in text: a block per set x quantity x N, rows k. */
static void text_tpp_matrix(rep_out *o, const rep_table *t) {
    for (size_t r = 0; r < n_rows(t); r++) {
        const rep_cell *q = row_at(t, r);
        if (!r || !same_key(q - t->nc, q, 3)) {
            char title[512];
            snprintf(title, sizeof title,
                     "TPP set %s, N = %.0f total ablated latents: %s (mean over classes, class sets, seeds)", q[0].s,
                     q[2].v, TPP_WHAT[q[1].v != 0]);
            text_title(o, title);
            text_cells(t, NULL, 3, t->nc);
            putchar('\n');
        }
        text_cells(t, q, 3, t->nc);
        putchar('\n');
    }
}

static const rep_col TPP_MATRIX_COLS[] = {
    COL_S("set", 0, 0),
    COL_S("quantity", 0, 0),
    COL_N("N", 0, 0, 'f', 0),
    COL_N("k", 5, 0, 'f', 0),
    COL_N("global_raw", 11, 4, 'f', COL_DASH_NAN),
    COL_N("global_resae", 11, 4, 'f', COL_DASH_NAN),
    COL_N("joint_raw", 11, 4, 'f', COL_DASH_NAN),
    COL_N("joint_resae", 11, 4, 'f', COL_DASH_NAN),
};
static const rep_col TPP_KIND_COLS[] = {
    COL_S("set", -12, 0),
    COL_S("var", -6, 0),
    COL_N("k", 5, 0, 'f', 0),
    COL_S("kind", -18, 0),
    COL_N("layer", 6, 0, 'f', COL_DASH_NEG),
    COL_N("N", 6, 0, 'f', 0),
    COL_N("intended", 10, 4, 'f', COL_DASH_NAN),
    COL_N("unintended", 10, 4, 'f', COL_DASH_NAN),
    COL_N("tpp", 10, 4, 'f', COL_DASH_NAN),
};

/* TPP as the paper lays it out (rows k; columns global / per-layer joint x raw / resae) for TPP and the
 * interaction at each N, then every kind's intended and unintended parts. */
static int table_tpp(rep_out *o, hid_t f, const char *path, const char *sets) {
    if (!wanted(o, "tpp_matrix") && !wanted(o, "tpp_kinds")) return 0;
    double *t = NULL;
    int n = 0, nc = RS_TPP_TABLE_NC + 1;
    if (read_table(&t, &n, nc, f, "tpp/tpp", path)) {
        free(t);
        return 1;
    }
    rep_table mat = TABLE("tpp_matrix", NULL, TPP_MATRIX_COLS);
    mat.text = text_tpp_matrix;
    mat.desc = "TPP (quantity tpp: mean_i [intended - unintended]) and the interaction (TPP(budget) - sum of its "
               "layers' parts) per set and N total ablated latents, rows k, columns global / per-layer joint budget "
               "x raw / resae (mean over classes, class sets, seeds)";
    double seen_set[64];
    int n_set = 0;
    for (int r = 0; r < n && n_set < 64; r++) {
        int dup = 0;
        for (int i = 0; i < n_set; i++) dup |= seen_set[i] == t[(size_t)r * nc];
        if (!dup) seen_set[n_set++] = t[(size_t)r * nc];
    }
    for (int si = 0; si < n_set; si++) {
        double set = seen_set[si], Ns[64], ks[64];
        int nN = 0, nk = 0;
        for (int r = 0; r < n; r++) {
            const double *q = t + (size_t)r * nc;
            if (q[0] != set) continue;
            int d1 = 0, d2 = 0;
            for (int i = 0; i < nN; i++) d1 |= Ns[i] == q[6];
            for (int i = 0; i < nk; i++) d2 |= ks[i] == q[2];
            if (!d1 && nN < 64) Ns[nN++] = q[6];
            if (!d2 && nk < 64) ks[nk++] = q[2];
        }
        for (int w = 0; w < 2; w++)
            for (int a = 0; a < nN; a++)
                for (int b = 0; b < nk; b++) {
                    double kinds[2] = {w ? RS_TPP_GLOBAL_INTER : RS_TPP_GLOBAL, w ? RS_TPP_JOINT_INTER : RS_TPP_JOINT};
                    put_set(&mat, sets, set);
                    put_str(&mat, w, TPP_QUANTITY[w]);
                    put_num(&mat, Ns[a]);
                    put_num(&mat, ks[b]);
                    for (int x = 0; x < 4; x++) put_num(&mat, tpp_cell(t, n, set, x % 2, ks[b], kinds[x / 2], -1, Ns[a], 11));
                }
    }
    if (emit(o, &mat)) {
        free(t);
        return 1;
    }
    rep_table bykind = TABLE("tpp_kinds",
                            "TPP by kind (mean over classes, class sets, seeds; layer -: every layer of the set; local: "
                            "SAEBench-exact at that layer; random: control)",
                             TPP_KIND_COLS);
    for (int r = 0; r < n; r++) {
        const double *q = t + (size_t)r * nc;
        if (q[7] != -1 || q[3] != 0) continue; /* one line per cell: the first seed's row, seeds averaged */
        int kind = (int)q[4];
        put_set(&bykind, sets, q[0]);
        put_variant(&bykind, q[1]);
        put_num(&bykind, q[2]);
        put_str(&bykind, q[4], kind >= 0 && kind < RS_TPP_KIND_COUNT ? rs_tpp_kind_names[kind] : "?");
        put_num(&bykind, q[5]);
        put_num(&bykind, q[6]);
        for (int x = 0; x < 3; x++) put_num(&bykind, tpp_cell(t, n, q[0], q[1], q[2], q[4], q[5], q[6], 9 + x));
    }
    free(t);
    return emit(o, &bykind);
}

/* ---- the command ------------------------------------------------------------------------------- */

static int has_link(hid_t f, const char *name) {
    htri_t has = 0;
    H5E_BEGIN_TRY { has = H5Lexists(f, name, H5P_DEFAULT); }
    H5E_END_TRY;
    return has > 0;
}

/* --name VALUE or --name=VALUE at argv[*i]: the value (advancing *i), NULL if argv[*i] is not --name. */
static const char *option(int argc, char **argv, int *i, const char *name, int *missing) {
    size_t len = strlen(name);
    if (strncmp(argv[*i], name, len)) return NULL;
    if (argv[*i][len] == '=') return argv[*i] + len + 1;
    if (argv[*i][len]) return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

static int parse_args(rep_out *o, const char **dir, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int missing = 0;
        const char *fmt = option(argc, argv, &i, "--format", &missing);
        const char *table = fmt || missing ? NULL : option(argc, argv, &i, "--table", &missing);
        if (missing) {
            fprintf(stderr, "resae report: %s needs a value\n", argv[i]);
            usage(stderr);
            return RS_EXIT_USAGE;
        }
        if (fmt) {
            o->format = -1;
            for (int k = 0; k < REP_FORMAT_COUNT; k++)
                if (!strcmp(fmt, FORMAT_NAMES[k])) o->format = k;
            if (o->format < 0) {
                fprintf(stderr, "resae report: unknown format '%s' (text, markdown, csv)\n", fmt);
                usage(stderr);
                return RS_EXIT_USAGE;
            }
        } else if (table) {
            o->only = NULL;
            for (int k = 0; k < N_TABLES; k++)
                if (!strcmp(table, TABLES[k].name)) o->only = TABLES[k].name;
            if (!o->only) {
                fprintf(stderr, "resae report: unknown table '%s'; tables:", table);
                for (int k = 0; k < N_TABLES; k++) fprintf(stderr, "%s %s", k ? "," : "", TABLES[k].name);
                fprintf(stderr, "\n");
                return RS_EXIT_USAGE;
            }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "resae report: unknown option %s\n", argv[i]);
            usage(stderr);
            return RS_EXIT_USAGE;
        } else if (*dir) {
            usage(stderr);
            return RS_EXIT_USAGE;
        } else {
            *dir = argv[i];
        }
    }
    if (!*dir) {
        usage(stderr);
        return RS_EXIT_USAGE;
    }
    return -1;
}

int rs_cmd_report(int argc, char **argv) {
    if (rs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return RS_EXIT_OK;
    }
    rep_out o = {.format = REP_TEXT};
    const char *dir = NULL;
    int rc = parse_args(&o, &dir, argc, argv);
    if (rc >= 0) return rc;
    char path[4096];
    if (rs_path_join(path, sizeof path, dir, RS_RESULTS_FILE)) return rs_cli_fail();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (!rs_file_exists(path)) {
        fprintf(stderr, "error: %s not found: %s is not a finished run directory (run `resae run CONFIG`)\n", path, dir);
        return RS_EXIT_ERROR;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "error: cannot open %s\n", path);
        return RS_EXIT_ERROR;
    }
    double *rec = NULL, *red = NULL, *ce = NULL;
    int nrec = 0, nred = 0, nce = 0, code = RS_EXIT_ERROR;
    char sets[8192] = "";
    if (read_table(&rec, &nrec, RS_EVAL_RECON_NC + 4, f, "eval/recon", path) ||
        read_table(&red, &nred, RS_EVAL_RED_NC + 4, f, "eval/redundancy", path) ||
        read_table(&ce, &nce, RS_EVAL_CE_NC + 4, f, "eval/ce", path))
        goto done;
    hid_t g = H5Gopen2(f, "eval", H5P_DEFAULT);
    if (g >= 0) {
        if (rs_h5_attr_get_str(sets, sizeof sets, g, "set_names", path)) sets[0] = 0;
        H5Gclose(g);
    }
    if (table_recon(&o, rec, nrec, sets) || table_sae_quality(&o, f, rec, nrec, path) || table_redundancy(&o, red, nred) ||
        table_ce(&o, ce, nce, sets))
        goto done;
    if (has_link(f, "eval/affine_only") && table_affine_only(&o, f, path, sets)) goto done;
    if (has_link(f, "probing") && table_probing(&o, f, path, sets)) goto done;
    if (has_link(f, "tpp") && table_tpp(&o, f, path, sets)) goto done;
    if (o.only && !o.found) {
        fprintf(stderr, "error: %s has no table %s (the run did not compute it)\n", path, o.only);
        goto done;
    }
    code = RS_EXIT_OK;
done:
    free(rec);
    free(red);
    free(ce);
    H5Fclose(f);
    return code;
}
