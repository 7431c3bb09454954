/* The memory plan (memplan.h): every stage's largest buffers, sized as the stages allocate them. */
#define _GNU_SOURCE
#include "resae/memplan.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "resae/eval.h"
#include "resae/safetensors.h"
#include "resae/sae.h"

static const char *const stage_names[RS_MEM_STAGES] = {"harvest", "affine", "train", "evaluate", "probe", "tpp"};

static void part(rs_mem_stage_plan *s, const char *what, double bytes) {
    if (bytes <= 0) return;
    s->rank += bytes;
    if (s->n_parts == RS_MEM_MAX_PARTS) { /* keep the largest: replace the smallest if this is larger */
        int lo = 0;
        for (int i = 1; i < s->n_parts; i++)
            if (s->parts[i].bytes < s->parts[lo].bytes) lo = i;
        if (s->parts[lo].bytes >= bytes) return;
        s->parts[lo] = (rs_mem_part){what, bytes};
        return;
    }
    s->parts[s->n_parts++] = (rs_mem_part){what, bytes};
}

static int cmp_part(const void *a, const void *b) {
    double x = ((const rs_mem_part *)a)->bytes, y = ((const rs_mem_part *)b)->bytes;
    return (x < y) - (x > y);
}

/* Checkpoint bytes of the blocks 0..top (mapped weights; 0 when resident). */
static double block_bytes(const rs_model *m, int top) {
    double b = 0;
    if (m->mode != RS_WEIGHTS_MAPPED) return 0;
    for (int l = 0; l <= top && l < m->cfg.n_layers; l++)
        for (int i = 0; i < m->block_n[l]; i++) b += (double)m->blocks[l][i].t->nbytes;
    return b;
}

/* The weights' share of a stage that runs the model through layer top (full: the logits too). */
static void weights_part(rs_mem_stage_plan *s, const rs_config *c, const rs_model *m, int top, int full) {
    if (c->model.weights == RS_WEIGHTS_RESIDENT) {
        part(s, "weights (fp32, resident)", 4.0 * (double)m->n_params);
        return;
    }
    part(s, "weights held fp32 (final norm)", 4.0 * (double)m->n_floats);
    if (m->mode != RS_WEIGHTS_MAPPED) return;
    s->shared = block_bytes(m, top);
    if (full && m->unembed_src) s->shared += (double)m->unembed_src->nbytes;
    /* the embedding is read a row per token: a page or two per distinct token */
    if (m->embed_src && !(full && m->unembed_src == m->embed_src)) {
        double rows = (double)m->cfg.vocab_size, row = (double)m->embed_src->nbytes / (rows > 0 ? rows : 1);
        double touched = row < 4096 ? 4096 : row;
        double tokens = (double)c->data.calibration + (double)c->data.train + (double)c->data.eval;
        s->shared += (tokens < rows ? tokens : rows) * touched;
    }
}

/* The forward pass's buffers for B x T tokens (weights mode of the config, not of the loaded table). */
static double state_bytes(const rs_config *c, const rs_model *m, int B, int T, int ce_only) {
    double f = (double)rs_run_state_floats(m, B, T, ce_only);
    if (m->mode == RS_WEIGHTS_MAPPED && c->model.weights != RS_WEIGHTS_MAPPED)
        f -= (double)m->block_floats + (double)rs_model_unembed_rows(m) * (double)m->cfg.d_model;
    return 4.0 * f;
}

static int n_store_layers(const rs_config *c, const rs_grid *g) {
    int n = g->n_union_layers;
    for (int i = 0; i < c->layers.regression.n; i++) {
        int seen = 0;
        for (int j = 0; j < g->n_union_layers; j++) seen |= g->union_layers[j] == (int)c->layers.regression.v[i];
        for (int j = 0; j < i; j++) seen |= c->layers.regression.v[j] == c->layers.regression.v[i];
        n += !seen;
    }
    return n;
}

static double sae_bytes(const rs_grid *g, int d) { return 4.0 * (double)rs_sae_slab_size(d, (int)g->n_latents); }
static double map_bytes(int d) { return 12.0 * (double)d * (double)d + 40.0 * (double)d; } /* A in double and float */

static void plan_harvest(rs_mem_stage_plan *s, const rs_config *c, const rs_grid *g, const rs_model *m, int T) {
    int B = (int)c->eval.batch_sequences, d = m->cfg.d_model, L = n_store_layers(c, g);
    int top = g->n_union_layers ? g->union_layers[g->n_union_layers - 1] : 0;
    for (int i = 0; i < c->layers.regression.n; i++)
        if ((int)c->layers.regression.v[i] > top) top = (int)c->layers.regression.v[i];
    weights_part(s, c, m, top, 0);
    part(s, "forward buffers (eval.batch_sequences x seq_len tokens)", state_bytes(c, m, B, T, 0));
    part(s, "captured activations (stored layers x batch)", 4.0 * L * (double)B * T * d);
    part(s, "store conversion block", 2.0 * (double)B * T * d);
    part(s, "token batch", 4.0 * (double)B * T);
}

static void plan_affine(rs_mem_stage_plan *s, const rs_config *c, int d, int ranks) {
    double dd = (double)d * (double)d, rows = 1025.0;
    part(s, "Gram matrices C_xx, C_xy (double)", 8.0 * 2 * dd + 8.0 * 2 * rows * d);
    /* ScaLAPACK's local blocks of A and B (and the residual check), spread over the group */
    part(s, "ScaLAPACK local blocks", 8.0 * 3 * dd / (ranks > 0 ? ranks : 1) + 8.0 * 3 * (double)c->affine.block_size * d);
    part(s, "the affine map (double and float)", map_bytes(d));
    part(s, "calibration rows", 4.0 * 2 * (double)c->store.chunk_rows * d);
}

static void plan_train(rs_mem_stage_plan *s, const rs_config *c, const rs_grid *g, int d, int ranks) {
    rs_sae_config sc;
    int resae = 0, k = 1;
    for (int i = 0; i < g->n_saes; i++) {
        resae |= g->saes[i].kind == RS_VARIANT_RESAE;
        if (g->saes[i].k > k) k = g->saes[i].k;
    }
    rs_grid_sae g0 = g->n_saes ? g->saes[0] : (rs_grid_sae){0};
    g0.k = k;
    rs_grid_sae_config(&sc, g, c, &g0);
    part(s, "SAE parameters", sae_bytes(g, d));
    double np4 = sae_bytes(g, d);
    part(s, "gradient and Adam moments", 3 * np4);
    part(s, "trainer buffers (train.batch_size rows)",
         (double)rs_sae_trainer_bytes(d, (int)g->n_latents, k, &sc, ranks) - 3 * np4);
    double C = (double)c->store.chunk_rows, chunks = (double)(c->data.train / c->store.chunk_rows);
    double per_buf = (double)(c->train.shuffle_buffer / c->store.chunk_rows);
    if (per_buf < 1) per_buf = 1;
    if (per_buf > chunks) per_buf = chunks;
    part(s, "shuffle buffer (train.shuffle_buffer tokens)", 4.0 * per_buf * C * d * (resae ? 2 : 1));
    if (resae) part(s, "the affine map (resae)", map_bytes(d));
}

/* CE splices (eval_ce.c), the reconstruction pass (stage_eval.c, eval.c) and the set's SAEs. */
static void plan_eval(rs_mem_stage_plan *s, const rs_config *c, const rs_grid *g, const rs_model *m, int T) {
    int d = m->cfg.d_model, M = 0, k = 1;
    for (int i = 0; i < g->n_evals; i++) {
        if (g->sets[g->evals[i].set].n > M) M = g->sets[g->evals[i].set].n;
        if (g->evals[i].k > k) k = g->evals[i].k;
    }
    weights_part(s, c, m, m->cfg.n_layers - 1, 1);
    part(s, "the set's SAEs (layers x parameters)", M * sae_bytes(g, d));
    part(s, "the set's affine maps", (M > 1 ? M - 1 : 0) * map_bytes(d));
    double recon = 0, ce = 0;
    double C = (double)c->store.chunk_rows;
    recon += 4.0 * M * C * d + 4.0 * 3 * C * d + 4.0 * C * (double)g->n_latents; /* rows, chain, pre-acts */
    double rb = (double)c->eval.redundancy_block;
    recon += 4.0 * rb * rb;
    if (c->eval.ce) {
        int B = rs_eval_ce_batch_seqs(c->eval.batch_sequences, T, m->cfg.vocab_size);
        double N = (double)B * T, V = m->cfg.vocab_size;
        ce = state_bytes(c, m, B, T, 0) + 4.0 * (2.0 * M * N * d + 2 * N * d) + 4.0 * 2 * N * V + 16 * N +
             4.0 * 2 * N * d + 8.0 * N * k;
    }
    part(s, ce >= recon ? "CE splices: logits, clean probabilities, streams (eval.batch_sequences)"
                        : "reconstruction rows (store.chunk_rows)", ce >= recon ? ce : recon);
}

/* Probing and TPP: the forward over the probing examples and every SAE of the set's evaluations.
 * The per-example features (examples x latents per rank) come on top and are not planned. */
static void plan_probe(rs_mem_stage_plan *s, const rs_config *c, const rs_grid *g, const rs_model *m, int T) {
    int d = m->cfg.d_model, M = 0;
    for (int i = 0; i < g->n_sets; i++)
        if (g->sets[i].n > M) M = g->sets[i].n;
    double per_set = (double)g->n_evals / (g->n_sets > 0 ? g->n_sets : 1);
    weights_part(s, c, m, m->cfg.n_layers - 1, 0);
    part(s, "the set's SAEs (evaluations x layers)", per_set * M * sae_bytes(g, d));
    part(s, "forward buffers", state_bytes(c, m, (int)c->eval.batch_sequences, T, 0));
    part(s, "captured streams", 4.0 * M * (double)c->eval.batch_sequences * T * d);
}

void rs_mem_plan_build(rs_mem_plan *p, const rs_config *c, const rs_model_config *mc, const rs_grid *g,
                       const rs_model *m, int ranks_per_node) {
    memset(p, 0, sizeof *p);
    p->ranks_per_node = ranks_per_node > 0 ? ranks_per_node : 1;
    p->group_ranks = c->parallel.group_size > 0 ? (int)c->parallel.group_size : 1;
    int T = (int)(c->data.seq_len ? c->data.seq_len : mc->max_positions), d = mc->d_model;
    static const char *const knobs[RS_MEM_STAGES] = {
        "eval.batch_sequences (or model.weights: mapped)", "parallel.group_size", "sae.expansion or train.batch_size",
        "eval.batch_sequences or sae.expansion", "sae.expansion", "sae.expansion"};
    for (int i = 0; i < RS_MEM_STAGES; i++) {
        p->st[i].name = stage_names[i];
        p->st[i].knob = knobs[i];
    }
    p->st[RS_MEM_HARVEST].used = 1;
    p->st[RS_MEM_AFFINE].used = g->n_affine + g->n_regression_extra > 0;
    p->st[RS_MEM_TRAIN].used = g->n_saes > 0;
    p->st[RS_MEM_EVAL].used = g->n_evals > 0;
    p->st[RS_MEM_PROBE].used = c->eval.probing.enabled && g->n_evals > 0;
    p->st[RS_MEM_TPP].used = c->eval.tpp.enabled && g->n_evals > 0;
    plan_harvest(&p->st[RS_MEM_HARVEST], c, g, m, T);
    plan_affine(&p->st[RS_MEM_AFFINE], c, d, p->group_ranks);
    plan_train(&p->st[RS_MEM_TRAIN], c, g, d, p->group_ranks);
    plan_eval(&p->st[RS_MEM_EVAL], c, g, m, T);
    plan_probe(&p->st[RS_MEM_PROBE], c, g, m, T);
    plan_probe(&p->st[RS_MEM_TPP], c, g, m, T);
    double top_rank = 0, top_shared = 0;
    for (int i = 0; i < RS_MEM_STAGES; i++) {
        rs_mem_stage_plan *s = &p->st[i];
        part(s, "process baseline (MPI, HDF5, OpenBLAS)", RS_MEM_BASELINE_BYTES);
        qsort(s->parts, (size_t)s->n_parts, sizeof *s->parts, cmp_part);
        s->node = p->ranks_per_node * s->rank + s->shared;
        if (!s->used) continue;
        if (s->rank > top_rank) {
            top_rank = s->rank;
            p->peak_stage = i;
        }
        if (s->shared > top_shared) top_shared = s->shared;
    }
    p->node_private = p->ranks_per_node * top_rank;
    p->node_peak = p->node_private + top_shared;
}

/* ---- the node's memory ---------------------------------------------------------------------------- */

static double parse_size(const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return -1;
    while (isspace((unsigned char)*end)) end++;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'K': mul = 1024.0; break;
    case 'M': mul = 1048576.0; break;
    case 'G': mul = 1073741824.0; break;
    case 'T': mul = 1099511627776.0; break;
    default: return -1;
    }
    const char *unit = *end ? end + 1 : end; /* K, KB, KiB */
    if (*unit && strcasecmp(unit, "b") && strcasecmp(unit, "ib")) return -1;
    return v * mul;
}

static double read_meminfo(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double kb = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "MemTotal:", 9)) kb = strtod(line + 9, NULL);
    fclose(f);
    return kb * 1024.0;
}

static double read_cgroup(void) {
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");
    if (!f) return 0;
    char buf[64] = "";
    double v = 0;
    if (fgets(buf, sizeof buf, f) && isdigit((unsigned char)buf[0])) v = strtod(buf, NULL);
    fclose(f);
    return v;
}

double rs_mem_node_bytes(const char **source) {
    const char *env = getenv("RESAE_NODE_MEMORY");
    if (env && *env) {
        double v = parse_size(env);
        if (v > 0) {
            *source = "RESAE_NODE_MEMORY";
            return v;
        }
        fprintf(stderr, "warning: RESAE_NODE_MEMORY='%s' is not a size (bytes, or a number with K, M, G or T); "
                        "ignored\n", env);
    }
    double best = read_meminfo();
    *source = best > 0 ? "MemTotal in /proc/meminfo" : "unknown";
    double cg = read_cgroup();
    if (cg > 0 && (best <= 0 || cg < best)) {
        best = cg;
        *source = "the cgroup's memory.max";
    }
    const char *slurm = getenv("SLURM_MEM_PER_NODE"); /* megabytes */
    if (slurm && *slurm) {
        double v = strtod(slurm, NULL) * 1048576.0;
        if (v > 0 && (best <= 0 || v < best)) {
            best = v;
            *source = "SLURM_MEM_PER_NODE";
        }
    }
    return best;
}

/* ---- check and print ------------------------------------------------------------------------------- */

static const char *gb(char *buf, size_t n, double bytes) {
    if (bytes >= 1e9) snprintf(buf, n, "%.2f GB", 1e-9 * bytes);
    else snprintf(buf, n, "%.0f MB", 1e-6 * bytes);
    return buf;
}

rs_err rs_mem_plan_check(const rs_mem_plan *p, double node_bytes, const char *node_source, const char *config_path) {
    if (node_bytes <= 0) return RS_OK;
    char a[32], b[32], n[32], s[32];
    const rs_mem_stage_plan *w = &p->st[p->peak_stage];
    int big = 0; /* the largest part that a setting changes (not the process baseline) */
    while (big + 1 < w->n_parts && !strncmp(w->parts[big].what, "process", 7)) big++;
    if (p->node_private > node_bytes)
        RS_FAIL(RS_ERR_CONFIG,
                "%s: stage %s needs %s per rank; %d ranks per node need %s, more than the node's %s (%s). Lower "
                "%s, or run fewer ranks per node (its largest part: %s, %s). `resae validate` prints the plan "
                "of every stage; RESAE_NODE_MEMORY sets the node's size",
                config_path, w->name, gb(a, sizeof a, w->rank), p->ranks_per_node, gb(b, sizeof b, p->node_private),
                gb(n, sizeof n, node_bytes), node_source, w->knob, w->n_parts ? w->parts[big].what : "-",
                gb(s, sizeof s, w->n_parts ? w->parts[big].bytes : 0));
    if (p->node_peak > node_bytes)
        fprintf(stderr,
                "warning: %s: the ranks' private memory (%s on %d ranks) and the mapped checkpoint pages (%s) "
                "exceed the node's %s (%s): the checkpoint will be read from disk again while the model runs\n",
                config_path, gb(a, sizeof a, p->node_private), p->ranks_per_node,
                gb(b, sizeof b, p->node_peak - p->node_private), gb(n, sizeof n, node_bytes), node_source);
    return RS_OK;
}

void rs_mem_plan_print(FILE *f, const rs_mem_plan *p, double node_bytes, const char *node_source) {
    char a[32], b[32], c[32], e[32];
    fprintf(f, "# memory plan for %d rank(s) per node (resae validate --ranks-per-node R), node memory %s (%s):\n",
            p->ranks_per_node, node_bytes > 0 ? gb(a, sizeof a, node_bytes) : "unknown", node_source);
    fprintf(f, "#   %-9s %10s %12s %10s   largest parts per rank\n", "stage", "per rank", "mapped (node)",
            "per node");
    for (int i = 0; i < RS_MEM_STAGES; i++) {
        const rs_mem_stage_plan *s = &p->st[i];
        if (!s->used) continue;
        fprintf(f, "#   %-9s %10s %12s %10s  ", s->name, gb(a, sizeof a, s->rank), gb(b, sizeof b, s->shared),
                gb(c, sizeof c, s->node));
        for (int j = 0; j < s->n_parts && j < 3; j++)
            fprintf(f, "%s %s %s", j ? ";" : "", s->parts[j].what, gb(a, sizeof a, s->parts[j].bytes));
        fputc('\n', f);
    }
    fprintf(f, "#   node peak: %s private (%d x %s, stage %s; groups run stages side by side) + %s mapped = %s%s\n",
            gb(a, sizeof a, p->node_private), p->ranks_per_node, gb(b, sizeof b, p->st[p->peak_stage].rank),
            p->st[p->peak_stage].name, gb(c, sizeof c, p->node_peak - p->node_private),
            gb(e, sizeof e, p->node_peak),
            node_bytes <= 0 ? "" : p->node_private > node_bytes ? "  -- DOES NOT FIT: resae run refuses it"
                                 : p->node_peak > node_bytes ? "  -- the mapped pages do not all fit: re-read from disk"
                                                             : "  -- fits");
}

void rs_mem_plan_write_json(FILE *f, const rs_mem_plan *p, double node_bytes) {
    fprintf(f, "{\"ranks_per_node\": %d, \"node_bytes\": %.0f, \"node_private\": %.0f, \"node_peak\": %.0f, "
               "\"stages\": {",
            p->ranks_per_node, node_bytes, p->node_private, p->node_peak);
    int first = 1;
    for (int i = 0; i < RS_MEM_STAGES; i++) {
        const rs_mem_stage_plan *s = &p->st[i];
        if (!s->used) continue;
        fprintf(f, "%s\"%s\": {\"rank\": %.0f, \"shared\": %.0f, \"node\": %.0f}", first ? "" : ", ", s->name, s->rank,
                s->shared, s->node);
        first = 0;
    }
    fprintf(f, "}}\n");
}
