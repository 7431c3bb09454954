/* resae validate CONFIG: check a config against the schema and the model, print it resolved and
 * the grid it implies. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "resae/cli.h"
#include "resae/config.h"
#include "resae/err.h"
#include "resae/grid.h"
#include "resae/model.h"

/* The rate the cost estimate converts FLOPs at: a realistic sustained fraction of the ~160
 * GFLOP/s single-core SGEMM peak measured on the reference machine (ENVIRONMENT.md). */
#define RS_ASSUMED_GFLOPS_PER_CORE 100.0

static void usage(FILE *f) {
    fprintf(f,
            "usage: resae validate [--quiet] [--no-grid] CONFIG\n"
            "       resae validate --keys\n"
            "\n"
            "Check an experiment config (docs/config.md): the YAML syntax, every key, type and range, the\n"
            "consistency between settings, and, reading model.path/config.json, the layers and k against\n"
            "the model. Errors are printed as CONFIG:LINE:COLUMN: KEY: problem; fix.\n"
            "\n"
            "On success it prints to stdout the resolved config (every default filled in, relative paths\n"
            "made absolute) as YAML that validates again to the same config, followed by YAML comments\n"
            "describing the grid it implies: the expanded layer sets, the affine fits (consecutive pairs,\n"
            "shared across sets), the cross-layer regression pairs, the SAEs to train after sharing\n"
            "identical work, the evaluations per kind, and a rough cost estimate in FLOPs and core-hours\n"
            "at an assumed %.0f GFLOP/s per core.\n"
            "\n"
            "options:\n"
            "  -q, --quiet    print nothing on success (errors still go to stderr)\n"
            "  --no-grid      print the resolved config only\n"
            "  --keys         print every config key: type, default, range, identity hashes (docs/config.md)\n"
            "  -h, --help     this text\n"
            "\n"
            "exit codes: 0 valid, 1 invalid (the error is printed), 2 usage\n",
            RS_ASSUMED_GFLOPS_PER_CORE);
}

static void warn_missing(const rs_config *c, const char *key, const char *path, const char *why) {
    struct stat st;
    if (!path || !stat(path, &st)) return;
    rs_loc l = rs_config_loc(c, key);
    fprintf(stderr, "warning: %s:%d:%d: %s: '%s' does not exist (yet); %s\n", c->path, l.line, l.col, key, path, why);
}

static void print_layers(FILE *f, const int *v, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", v[i]);
    fputc(']', f);
}

static void print_cost_line(FILE *f, const char *what, double flops) {
    double core_h = flops / (RS_ASSUMED_GFLOPS_PER_CORE * 1e9) / 3600.0;
    fprintf(f, "#   %-10s %10.3e FLOP  %10.4f core-hours\n", what, flops, core_h);
}

static void print_grid(FILE *f, const rs_grid *g, const rs_config *c, const rs_model_config *mc) {
    fprintf(f, "# ---- the grid this config implies ----\n");
    fprintf(f, "# model: %s, %d layers, hidden_size %d, vocab %d\n", mc->arch_name, mc->n_layers, mc->d_model,
            mc->vocab_size);
    fprintf(f, "# config hash: %016llx\n", (unsigned long long)g->config_hash);
    fprintf(f, "# SAE width n_latents = %lld x %d = %lld; lr %.4g%s; %lld training tokens per SAE = %lld steps "
            "of %lld; dead_tokens %lld%s\n",
            (long long)c->sae.expansion, mc->d_model, (long long)g->n_latents, g->lr, c->train.lr > 0 ? "" : " (auto)",
            (long long)g->train_tokens, (long long)g->train_steps, (long long)c->train.batch_size,
            (long long)g->dead_tokens, c->train.dead_tokens ? "" : " (auto)");
    fprintf(f, "# layer sets (%d):\n", g->n_sets);
    for (int i = 0; i < g->n_sets; i++) {
        fprintf(f, "#   %-16s ", g->sets[i].name);
        print_layers(f, g->sets[i].layers, g->sets[i].n);
        if (g->sets[i].same_as >= 0)
            fprintf(f, "  (same layers as %s: evaluated once)", g->sets[g->sets[i].same_as].name);
        fputc('\n', f);
    }
    fprintf(f, "# selected layers (union): ");
    print_layers(f, g->union_layers, g->n_union_layers);
    fprintf(f, "\n# affine fits: %d (consecutive pairs, shared across sets):", g->n_affine);
    for (int i = 0; i < g->n_affine; i++) fprintf(f, "%s(%d,%d)", i % 12 ? " " : "\n#   ", g->affine[i].a, g->affine[i].b);
    fprintf(f, "\n# regression pairs: %d (every a < b of the %s), %d of them extra fits beyond the affine pairs\n",
            g->n_regression, c->layers.regression_auto ? "selected layers" : "layers.regression list",
            g->n_regression_extra);
    int64_t uses = 0;
    for (int i = 0; i < g->n_evals; i++) uses += g->sets[g->evals[i].set].n;
    fprintf(f, "# SAEs to train: %d (%d raw + %d resae) for %d k x %d seed(s); %lld SAE uses before sharing\n",
            g->n_saes, g->n_raw, g->n_resae, c->sae.k.n, c->sae.seeds.n, (long long)uses);
    fprintf(f, "# evaluations: %d (set x variant x k x seed), %d after merging sets with identical layers\n",
            g->n_evals, g->n_evals_unique);
    const rs_grid_eval_counts *n = &g->counts;
    fprintf(f, "#   reconstruction (per layer): %lld\n#   decoder redundancy (layer pairs): %lld\n"
            "#   CE single-layer passes: %lld\n#   CE joint passes (tf/so): %lld\n#   CE ablation passes: %lld\n"
            "#   probing: %lld\n#   tpp: %lld\n",
            (long long)n->recon, (long long)n->redundancy, (long long)n->ce_single, (long long)n->ce_joint,
            (long long)n->ce_ablation, (long long)n->probing, (long long)n->tpp);
    rs_grid_cost cost;
    rs_grid_estimate_cost(&cost, g, c, mc);
    fprintf(f, "# cost estimate (rough: sequence length %lld, %.0f GFLOP/s per core; probing/tpp not included):\n",
            (long long)cost.seq_len_assumed, RS_ASSUMED_GFLOPS_PER_CORE);
    print_cost_line(f, "harvest", cost.harvest);
    print_cost_line(f, "affine", cost.affine);
    print_cost_line(f, "training", cost.train);
    print_cost_line(f, "evaluation", cost.eval);
    print_cost_line(f, "total", cost.total);
}

static const char *fmt_bytes(char *buf, size_t n, double bytes) {
    if (bytes >= 1e9) snprintf(buf, n, "%.2f GB", 1e-9 * bytes);
    else snprintf(buf, n, "%.3g MB", 1e-6 * bytes);
    return buf;
}

/* What the weights take, read from the checkpoint's tensor table (no weight is read but the final
 * norm): mapped, one copy per node in the checkpoint's dtype plus per rank the fp32 block scratch;
 * resident, an fp32 copy per rank. */
static void print_weights(FILE *f, const rs_config *c) {
    rs_model m;
    if (rs_model_load(&m, c->model.path, RS_WEIGHTS_MAPPED)) {
        fprintf(f, "# weights: not sized (%s)\n", rs_err_msg());
        rs_err_clear();
        return;
    }
    double per_rank = 4.0 * (double)rs_model_rank_floats(&m);
    char a[32], b[32];
    fprintf(f, "# weights: %.3g parameters; model.weights %s:\n", (double)m.n_params,
            rs_weights_mode_names[c->model.weights]);
    fprintf(f, "#   mapped    %s of the checkpoint in each node's page cache, shared by its ranks, + %s fp32 per "
               "rank (the largest block, a block of the output matrix, the final norm)\n",
            fmt_bytes(a, sizeof a, (double)m.mapped_bytes), fmt_bytes(b, sizeof b, per_rank));
    fprintf(f, "#   resident  %s fp32 per rank\n", fmt_bytes(a, sizeof a, 4.0 * (double)m.n_params));
    rs_model_free(&m);
}

int rs_cmd_validate(int argc, char **argv) {
    if (rs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return RS_EXIT_OK;
    }
    int quiet = 0, grid = 1;
    const char *path = NULL;
    if (argc == 2 && !strcmp(argv[1], "--keys")) {
        rs_config_write_keys(stdout);
        return RS_EXIT_OK;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) quiet = 1;
        else if (!strcmp(argv[i], "--no-grid")) grid = 0;
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "resae validate: unknown option '%s'\n\n", argv[i]);
            usage(stderr);
            return RS_EXIT_USAGE;
        } else if (path) {
            fprintf(stderr, "resae validate: one CONFIG only (got '%s' and '%s')\n\n", path, argv[i]);
            usage(stderr);
            return RS_EXIT_USAGE;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return RS_EXIT_USAGE;
    }

    rs_config c;
    rs_model_config mc;
    rs_grid g;
    if (rs_config_load(&c, path)) return rs_cli_fail();
    int rc = RS_EXIT_OK;
    if (rs_config_load_model(&mc, &c) || rs_grid_build(&g, &c, &mc)) {
        rc = rs_cli_fail();
        goto done;
    }
    warn_missing(&c, "data.tokens", c.data.tokens, "the harvest stage reads it");
    if (c.eval.probing.enabled) warn_missing(&c, "eval.probing.data", c.eval.probing.data, "probing reads it");
    if (c.eval.tpp.enabled && !c.eval.probing.enabled) warn_missing(&c, "eval.probing.data", c.eval.probing.data, "TPP reads it");
    if (!quiet) {
        printf("# resolved experiment config (defaults filled in, paths absolute); validates as it is\n");
        if (rs_config_write_yaml(stdout, &c)) rc = rs_cli_fail();
        if (grid && !rc) {
            print_grid(stdout, &g, &c, &mc);
            print_weights(stdout, &c);
        }
        if (fflush(stdout)) rc = RS_EXIT_ERROR;
    }
    rs_grid_free(&g);
done:
    rs_config_free(&c);
    return rc;
}
