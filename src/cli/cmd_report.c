/* resae report RUN_DIR: the evaluation tables of a run's results file as text (the rows the paper's
 * figures plot). Reads RUN_DIR/results.h5 only (docs/store.md "Evaluation"). */
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

static void usage(FILE *f) {
    fprintf(f, "usage: resae report RUN_DIR\n\n"
               "Prints the evaluation tables of RUN_DIR/results.h5 (written by `resae run`):\n"
               "  reconstruction  set x variant x k x seed x layer: L0, dead fraction (eval split and end of\n"
               "                  training), MSE, EV in target\n"
               "                  space and in the original space (one-step, open- and closed-loop affine chain)\n"
               "  SAE quality     per SAE: dead fraction (end of training, eval split), FVU, fvu_last20_gain\n"
               "                  (train.curve_bins > 0), flags DEAD>10%% and NOT-FLAT (gain >= 2%%)\n"
               "  redundancy      variant x k x gap: mean over rows of max cos (and max |cos|) between\n"
               "                  decoder rows of layer pairs, averaged over distinct pairs with that gap\n"
               "  CE splices      set x variant x k x seed x mode: CE, dCE, KL(clean||spliced), recovered\n"
               "                  CE against zero and mean ablation, overinteraction of the joint modes\n"
               "  probing         set x variant x k x seed x kind x layer: test accuracy of the sparse probes\n"
               "                  for each K (mean over classes, then class sets), the model's pooled h\n"
               "                  (ceiling) and K random latents (floor); and where the union's latents live\n"
               "  TPP             per set and N: TPP and the interaction as rows k x columns global / per-layer\n"
               "                  joint x raw / resae; then every kind (single, local, random, parts) with\n"
               "                  its intended and unintended accuracy changes\n"
               "Definitions are stored with each table (attribute `definition`).\n"
               "exit codes: 0 ok, 1 error (no results file or no evaluation tables), 2 usage\n");
}

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

static const char *variant(double v) {
    int i = (int)v;
    return i >= 0 && i < RS_VARIANT_COUNT && i == v ? rs_variant_names[i] : "?";
}

static void fmt(char *out, size_t n, double v) {
    if (isnan(v)) snprintf(out, n, "-");
    else snprintf(out, n, "%.4f", v);
}

/* The affine-only control (METHOD.md §6): the set's CE passes with l_2..l_M replaced by the affine
 * prediction and no SAE. */
static int print_affine_only(hid_t f, const char *path, const char *sets) {
    double *t = NULL;
    int n = 0, nc = RS_EVAL_CE_NC + 1;
    if (read_table(&t, &n, nc, f, "eval/affine_only", path)) return 1;
    if (n) {
        printf("\nAffine-only control (no SAE: h <- A h_prev + c at l_2..l_M, l_1 clean; tf adds the clean affine "
               "error, so writes A x_prev + c)\n");
        printf("%-12s %-7s %6s %9s %9s %9s %9s %9s %9s\n", "set", "mode", "layer", "CE", "dCE", "KL", "rec_zero",
               "rec_mean", "overint");
    }
    char sn[64], a[4][32];
    for (int r = 0; r < n; r++) {
        const double *q = t + (size_t)r * (size_t)nc;
        set_name(sn, sizeof sn, sets, (int)q[0]);
        int mode = (int)q[1];
        char layer[16];
        if (q[2] < 0) snprintf(layer, sizeof layer, "-");
        else snprintf(layer, sizeof layer, "%.0f", q[2]);
        for (int j = 0; j < 4; j++) fmt(a[j], 32, q[5 + j]);
        printf("%-12s %-7s %6s %9.4f %9.4f %9s %9s %9s %9s\n", sn,
               mode >= 0 && mode < RS_CE_ROW_COUNT ? rs_eval_ce_row_names[mode] : "?", layer, q[3], q[4], a[0], a[1],
               a[2], a[3]);
    }
    free(t);
    return 0;
}

/* Probing accuracy by set x variant x k x seed x kind x layer, one column per K (rows with
 * class_set -1: means over classes, then class sets), then the layers of the union's latents. */
static int print_probing(hid_t f, const char *path, const char *sets) {
    double *t = NULL, *lat = NULL;
    int n = 0, nl = 0, nc = RS_PROBE_TABLE_NC + 1, nlc = RS_PROBE_LATENT_NC + 1;
    if (read_table(&t, &n, nc, f, "probing/probing", path) || read_table(&lat, &nl, nlc, f, "probing/probing_latents", path)) {
        free(t);
        free(lat);
        return 1;
    }
    printf("\nSparse probing (test accuracy, mean over classes then class sets; layer -: union of the set's layers;"
           " model: pooled h, K = d for all dims; random: K random latents)\n");
    printf("%-12s %-6s %5s %5s %-10s %6s  %s\n", "set", "var", "k", "seed", "kind", "layer", "K:accuracy ...");
    char *done = calloc((size_t)n + 1, 1), sn[128];
    for (int i = 0; i < n && done; i++) {
        const double *q = t + (size_t)i * nc;
        if (done[i] || q[7] != -1) continue;
        set_name(sn, sizeof sn, sets, (int)q[0]);
        int kind = (int)q[4];
        char layer[16];
        if (q[5] < 0) snprintf(layer, sizeof layer, "-");
        else snprintf(layer, sizeof layer, "%.0f", q[5]);
        printf("%-12s %-6s %5.0f %5.0f %-10s %6s ", sn, q[1] < 0 ? "model" : variant(q[1]), q[2], q[3],
               kind >= 0 && kind < RS_PROBE_KIND_COUNT ? rs_probe_kind_names[kind] : "?", layer);
        for (int j = i; j < n; j++) {
            const double *p = t + (size_t)j * nc;
            if (p[7] != -1 || memcmp(p, q, sizeof(double) * 6)) continue;
            done[j] = 1;
            printf(" %.0f:%.4f", p[6], p[9]);
        }
        printf("\n");
    }
    free(done);
    /* union scope: share of the chosen latents (largest K, every class) per layer */
    printf("\nLayers of the union probes' latents (largest K, all classes): set var k seed: layer share ...\n");
    char *seen = calloc((size_t)nl + 1, 1);
    for (int i = 0; i < nl && seen; i++) {
        const double *q = lat + (size_t)i * nlc;
        if (seen[i] || q[4] != -1) continue;
        set_name(sn, sizeof sn, sets, (int)q[0]);
        printf("%-12s %-6s %5.0f %5.0f:", sn, variant(q[1]), q[2], q[3]);
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
            printf(" L%.0f %.0f%%", p[8], 100.0 * cnt / total);
        }
        printf("\n");
    }
    free(seen);
    free(t);
    free(lat);
    return 0;
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

/* TPP as the paper lays it out (rows k; columns global / per-layer joint x raw / resae) for TPP and the
 * interaction at each N, then every kind's intended and unintended parts. */
static int print_tpp(hid_t f, const char *path, const char *sets) {
    double *t = NULL;
    int n = 0, nc = RS_TPP_TABLE_NC + 1;
    if (read_table(&t, &n, nc, f, "tpp/tpp", path)) return 1;
    char sn[128], c[4][32];
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
        set_name(sn, sizeof sn, sets, (int)set);
        static const char *const what[2] = {"TPP = mean_i [intended - unintended]", "interaction = TPP(budget) - sum of "
                                                                                     "its layers' parts"};
        for (int w = 0; w < 2; w++)
            for (int a = 0; a < nN; a++) {
                printf("\nTPP set %s, N = %.0f total ablated latents: %s (mean over classes, class sets, seeds)\n", sn,
                       Ns[a], what[w]);
                printf("%5s %11s %11s %11s %11s\n", "k", "global_raw", "global_resae", "joint_raw", "joint_resae");
                for (int b = 0; b < nk; b++) {
                    double kinds[2] = {w ? RS_TPP_GLOBAL_INTER : RS_TPP_GLOBAL, w ? RS_TPP_JOINT_INTER : RS_TPP_JOINT};
                    for (int x = 0; x < 4; x++)
                        fmt(c[x], 32, tpp_cell(t, n, set, x % 2, ks[b], kinds[x / 2], -1, Ns[a], 11));
                    printf("%5.0f %11s %11s %11s %11s\n", ks[b], c[0], c[1], c[2], c[3]);
                }
            }
    }
    printf("\nTPP by kind (mean over classes, class sets, seeds; layer -: every layer of the set; local: SAEBench-exact "
           "at that layer; random: control)\n");
    printf("%-12s %-6s %5s %-18s %6s %6s %10s %10s %10s\n", "set", "var", "k", "kind", "layer", "N", "intended",
           "unintended", "tpp");
    for (int r = 0; r < n; r++) {
        const double *q = t + (size_t)r * nc;
        if (q[7] != -1 || q[3] != 0) continue; /* one line per cell: the first seed's row, seeds averaged */
        int kind = (int)q[4];
        char layer[16];
        if (q[5] < 0) snprintf(layer, sizeof layer, "-");
        else snprintf(layer, sizeof layer, "%.0f", q[5]);
        set_name(sn, sizeof sn, sets, (int)q[0]);
        for (int x = 0; x < 3; x++) fmt(c[x], 32, tpp_cell(t, n, q[0], q[1], q[2], q[4], q[5], q[6], 9 + x));
        printf("%-12s %-6s %5.0f %-18s %6s %6.0f %10s %10s %10s\n", sn, variant(q[1]), q[2],
               kind >= 0 && kind < RS_TPP_KIND_COUNT ? rs_tpp_kind_names[kind] : "?", layer, q[6], c[0], c[1], c[2]);
    }
    free(t);
    return 0;
}

/* The demo's bar for an SAE (README "The demo"), as analysis/report.py flags it. */
#define MAX_EVAL_DEAD 0.10
#define MAX_LAST20_GAIN 0.02

typedef struct sae_quality_ctx {
    const double *rec; /* eval/recon rows */
    int nrec;
    const char *path;
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
    char d[32], gn[32];
    fmt(d, sizeof d, dead);
    if (isnan(gain)) snprintf(gn, sizeof gn, "-");
    else snprintf(gn, sizeof gn, "%.2f%%", 100 * gain);
    printf("%-22s %10.4f %9s %8.4f %11s  %s%s\n", name, v[4], d, v[5], gn, dead > MAX_EVAL_DEAD ? "DEAD>10% " : "",
           gain >= MAX_LAST20_GAIN ? "NOT-FLAT" : "");
    return 0;
}

static void sae_quality(hid_t f, const double *rec, int nrec, const char *path) {
    hid_t g = H5Gopen2(f, "sae", H5P_DEFAULT);
    if (g < 0) return;
    printf("\nSAE quality (bar: eval dead fraction <= 10%%, FVU gain over the last 20%% of steps < 2%%; gain - : "
           "no training curve, train.curve_bins 0)\n");
    printf("%-22s %10s %9s %8s %11s  %s\n", "SAE", "dead_train", "dead_eval", "FVU", "gain_last20", "flags");
    sae_quality_ctx q = {rec, nrec, path};
    H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, sae_quality_row, &q);
    H5Gclose(g);
}

int rs_cmd_report(int argc, char **argv) {
    int rc = rs_cli_args(argc, argv, 1, usage);
    if (rc >= 0) return rc;
    char path[4096];
    if (rs_path_join(path, sizeof path, argv[1], RS_RESULTS_FILE)) return rs_cli_fail();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (!rs_file_exists(path)) {
        fprintf(stderr, "error: %s not found: %s is not a finished run directory (run `resae run CONFIG`)\n", path, argv[1]);
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
    char sn[128], a[4][32];

    printf("Reconstruction on the eval split (EV: target space; original space one-step, open-loop chain and "
           "closed-loop chain)\n");
    printf("%-12s %-6s %5s %5s %6s %8s %8s %8s %10s %10s %10s %10s %10s\n", "set", "var", "k", "seed", "layer", "L0",
           "dead_ev", "dead_tr", "MSE", "EV_target", "EV_1step", "EV_chain", "EV_closed");
    for (int r = 0; r < nrec; r++) {
        const double *q = rec + (size_t)r * (RS_EVAL_RECON_NC + 4);
        set_name(sn, sizeof sn, sets, (int)q[0]);
        printf("%-12s %-6s %5.0f %5.0f %6.0f %8.2f %8.4f %8.4f %10.4g %10.4f %10.4f %10.4f %10.4f\n", sn, variant(q[1]),
               q[2], q[3], q[4], q[7], q[8], q[14], q[9], q[10], q[11], q[12], q[15]);
    }

    sae_quality(f, rec, nrec, path);

    printf("\nDecoder redundancy by gap (mean over distinct layer pairs and seeds)\n");
    printf("%-6s %5s %5s %6s %14s %14s\n", "var", "k", "gap", "pairs", "mean_max_cos", "mean_max_|cos|");
    {
        /* distinct (variant, k, seed, a, b), then means per (variant, k, gap) in table order */
        int n = 0, ng = 0;
        double (*u)[7] = calloc((size_t)(nred ? nred : 1), sizeof *u);     /* variant,k,seed,a,b,cos,abs */
        double (*grp)[6] = calloc((size_t)(nred ? nred : 1), sizeof *grp); /* variant,k,gap,count,cos,abs */
        if (!u || !grp) {
            free(u);
            free(grp);
            fprintf(stderr, "error: out of memory\n");
            goto done;
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
        for (int j = 0; j < ng; j++)
            printf("%-6s %5.0f %5.0f %6.0f %14.4f %14.4f\n", variant(grp[j][0]), grp[j][1], grp[j][2], grp[j][3],
                   grp[j][4] / grp[j][3], grp[j][5] / grp[j][3]);
        free(u);
        free(grp);
    }

    printf("\nCE splices on the eval split (layer -: all layers of the set; recovered = (CE_ablate - CE) / "
           "(CE_ablate - CE_clean))\n");
    printf("%-12s %-6s %5s %5s %-7s %6s %9s %9s %9s %9s %9s %9s\n", "set", "var", "k", "seed", "mode", "layer", "CE",
           "dCE", "KL", "rec_zero", "rec_mean", "overint");
    for (int r = 0; r < nce; r++) {
        const double *q = ce + (size_t)r * (RS_EVAL_CE_NC + 4);
        set_name(sn, sizeof sn, sets, (int)q[0]);
        int mode = (int)q[4];
        char layer[16];
        if (q[5] < 0) snprintf(layer, sizeof layer, "-");
        else snprintf(layer, sizeof layer, "%.0f", q[5]);
        fmt(a[0], 32, q[8]);
        fmt(a[1], 32, q[9]);
        fmt(a[2], 32, q[10]);
        fmt(a[3], 32, q[11]);
        printf("%-12s %-6s %5.0f %5.0f %-7s %6s %9.4f %9.4f %9s %9s %9s %9s\n", sn, variant(q[1]), q[2], q[3],
               mode >= 0 && mode < RS_CE_ROW_COUNT ? rs_eval_ce_row_names[mode] : "?", layer, q[6], q[7], a[0], a[1], a[2], a[3]);
    }
    htri_t has_aff = 0;
    H5E_BEGIN_TRY { has_aff = H5Lexists(f, "eval/affine_only", H5P_DEFAULT); }
    H5E_END_TRY;
    if (has_aff > 0 && print_affine_only(f, path, sets)) goto done;
    htri_t has_probing = 0;
    H5E_BEGIN_TRY { has_probing = H5Lexists(f, "probing", H5P_DEFAULT); }
    H5E_END_TRY;
    if (has_probing > 0 && print_probing(f, path, sets)) goto done;
    htri_t has_tpp = 0;
    H5E_BEGIN_TRY { has_tpp = H5Lexists(f, "tpp", H5P_DEFAULT); }
    H5E_END_TRY;
    if (has_tpp > 0 && print_tpp(f, path, sets)) goto done;
    code = RS_EXIT_OK;
done:
    free(rec);
    free(red);
    free(ce);
    H5Fclose(f);
    return code;
}
