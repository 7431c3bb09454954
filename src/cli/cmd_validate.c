/* resae validate CONFIG: check a config against the schema and the model, print it resolved and
 * the grid it implies. */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resae/cli.h"
#include "resae/config.h"
#include "resae/err.h"
#include "resae/grid.h"
#include "resae/memplan.h"
#include "resae/rates.h"
#include "resae/model.h"

/* The rate the cost estimate converts FLOPs at: a realistic sustained fraction of the ~160
 * GFLOP/s single-core SGEMM peak measured on the reference machine (ENVIRONMENT.md). */
#define RS_ASSUMED_GFLOPS_PER_CORE 100.0

static void usage(FILE *f) {
    fprintf(f,
            "usage: resae validate [--quiet] [--no-grid] [--ranks-per-node R] [--plan-json FILE]\n"
            "                      [--rates FILE] [--nodes N] [--cores C] CONFIG\n"
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
            "at an assumed %.0f GFLOP/s per core, then the memory plan: the peak memory of every stage per\n"
            "rank and per node for R ranks per node (docs/scaling.md), which `resae run` checks at start.\n"
            "\n"
            "options:\n"
            "  -q, --quiet    print nothing on success (errors still go to stderr)\n"
            "  --no-grid      print the resolved config only\n"
            "  --ranks-per-node R  ranks per node for the memory plan (default: SLURM_NTASKS_PER_NODE, else\n"
            "                 the CPUs of this machine)\n"
            "  --plan-json FILE    also write the memory plan to FILE as JSON\n"
            "  --rates FILE   the cost model's GFLOP/s per core of each stage (tests/bench/rehearsal.py\n"
            "                 --rates-out writes it; default: the rates measured on the reference machine)\n"
            "  --nodes N      nodes of the cost model's wall time (default 1)\n"
            "  --cores C      cores (ranks) per node of the cost model (default: --ranks-per-node)\n"
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

/* The cost model: the estimated FLOPs of each stage at measured rates, in core-hours, and the wall
 * time on N nodes of C cores: the harvest runs on every core at once; the other tasks are packed
 * over every core, but none runs faster than on one node (the largest SAE sets that floor). */
static void print_cost_model(FILE *f, const rs_grid *g, const rs_config *c, const rs_model_config *mc,
                             const rs_rates *r, const char *rates_src, int nodes, int cores) {
    rs_grid_cost cost;
    rs_grid_estimate_cost(&cost, g, c, mc);
    const char *names[4] = {"harvest", "affine", "training", "evaluation"};
    const double flop[4] = {cost.harvest, cost.affine, cost.train, cost.eval};
    const double rate[4] = {r->harvest, r->affine, r->train, r->evaluate};
    double h[4], total = 0;
    fprintf(f, "# cost model at measured rates (%s; docs/scaling.md):\n", rates_src);
    for (int i = 0; i < 4; i++) {
        h[i] = flop[i] / (rate[i] * 1e9) / 3600;
        fprintf(f, "#   %-10s %10.3e FLOP at %6.1f GFLOP/s per core  %12.1f core-hours\n", names[i], flop[i], rate[i],
                h[i]);
        total += h[i];
    }
    double all = (double)nodes * cores, one_sae = g->n_saes ? h[2] / g->n_saes : 0;
    double rest = (h[1] + h[2] + h[3]) / all, floor_sae = one_sae / cores;
    if (rest < floor_sae) rest = floor_sae;
    fprintf(f, "#   total %.1f core-hours; on %d node(s) x %d cores: about %.1f hours of wall time (%.1f h harvest, "
               "then %.1f h; one SAE takes %.1f core-hours)\n",
            total, nodes, cores, h[0] / all + rest, h[0] / all, rest, one_sae);
}

static const char *fmt_bytes(char *buf, size_t n, double bytes) {
    if (bytes >= 1e9) snprintf(buf, n, "%.2f GB", 1e-9 * bytes);
    else snprintf(buf, n, "%.3g MB", 1e-6 * bytes);
    return buf;
}

/* What the weights take, read from the checkpoint's tensor table (no weight is read but the final
 * norm): mapped, one copy per node in the checkpoint's dtype plus per rank the fp32 block scratch;
 * resident, an fp32 copy per rank. */
static void print_weights(FILE *f, const rs_config *c, const rs_model *m) {
    double per_rank = 4.0 * (double)rs_model_rank_floats(m);
    char a[32], b[32];
    fprintf(f, "# weights: %.3g parameters; model.weights %s:\n", (double)m->n_params,
            rs_weights_mode_names[c->model.weights]);
    fprintf(f, "#   mapped    %s of the checkpoint in each node's page cache, shared by its ranks, + %s fp32 per "
               "rank (the largest block, a block of the output matrix, the final norm)\n",
            fmt_bytes(a, sizeof a, (double)m->mapped_bytes), fmt_bytes(b, sizeof b, per_rank));
    fprintf(f, "#   resident  %s fp32 per rank\n", fmt_bytes(a, sizeof a, 4.0 * (double)m->n_params));
}

static int default_ranks_per_node(void) {
    const char *s = getenv("SLURM_NTASKS_PER_NODE");
    if (s && atoi(s) > 0) return atoi(s);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The weights and the memory plan (the model's tensor table is read, no weight). */
static int print_memory(FILE *f, const rs_config *c, const rs_model_config *mc, const rs_grid *g, int rpn,
                        const char *json) {
    rs_model m;
    if (rs_model_load(&m, c->model.path, RS_WEIGHTS_MAPPED)) {
        fprintf(f, "# weights and memory plan: not sized (%s)\n", rs_err_msg());
        rs_err_clear();
        return 0;
    }
    print_weights(f, c, &m);
    rs_mem_plan p;
    rs_mem_plan_build(&p, c, mc, g, &m, rpn);
    rs_model_free(&m);
    const char *src = "unknown";
    double node = rs_mem_node_bytes(&src);
    rs_mem_plan_print(f, &p, node, src);
    if (!json) return 0;
    FILE *jf = fopen(json, "w");
    if (!jf) {
        fprintf(stderr, "resae validate: cannot write --plan-json %s\n", json);
        return 1;
    }
    rs_mem_plan_write_json(jf, &p, node);
    return fclose(jf) ? 1 : 0;
}

int rs_cmd_validate(int argc, char **argv) {
    if (rs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return RS_EXIT_OK;
    }
    int quiet = 0, grid = 1, rpn = default_ranks_per_node(), nodes = 1, cores = 0;
    const char *path = NULL, *json = NULL, *rates_path = NULL;
    if (argc == 2 && !strcmp(argv[1], "--keys")) {
        rs_config_write_keys(stdout);
        return RS_EXIT_OK;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) quiet = 1;
        else if (!strcmp(argv[i], "--no-grid")) grid = 0;
        else if (!strcmp(argv[i], "--nodes") || !strcmp(argv[i], "--cores") || !strcmp(argv[i], "--rates")) {
            int num = strcmp(argv[i], "--rates") != 0;
            if (i + 1 >= argc || (num && atoi(argv[i + 1]) < 1)) {
                fprintf(stderr, "resae validate: %s needs %s\n", argv[i], num ? "a count of 1 or more" : "a file name");
                return RS_EXIT_USAGE;
            }
            if (!num) rates_path = argv[++i];
            else if (argv[i][2] == 'n') nodes = atoi(argv[++i]);
            else cores = atoi(argv[++i]);
        }
        else if (!strcmp(argv[i], "--ranks-per-node") || !strcmp(argv[i], "--plan-json")) {
            if (i + 1 >= argc || (argv[i][2] == 'r' && atoi(argv[i + 1]) < 1)) {
                fprintf(stderr, "resae validate: %s needs %s\n", argv[i],
                        argv[i][2] == 'r' ? "a count of 1 or more" : "a file name");
                return RS_EXIT_USAGE;
            }
            if (argv[i][2] == 'r') rpn = atoi(argv[++i]);
            else json = argv[++i];
        }
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

    rs_rates rates;
    rs_rates_default(&rates);
    if (rates_path && rs_rates_load(&rates, rates_path)) return rs_cli_fail();
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
            print_cost_model(stdout, &g, &c, &mc, &rates, rates_path ? rates_path : "built-in reference rates", nodes,
                             cores > 0 ? cores : rpn);
            if (print_memory(stdout, &c, &mc, &g, rpn, json)) rc = RS_EXIT_ERROR;
        }
        if (fflush(stdout)) rc = RS_EXIT_ERROR;
    }
    rs_grid_free(&g);
done:
    rs_config_free(&c);
    return rc;
}
