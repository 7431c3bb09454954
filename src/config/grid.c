/* The grid a config implies: expanded sets, affine/regression pairs, shared SAEs, evaluations. */
#include "resae/grid.h"

#include <stdlib.h>
#include <string.h>

#include "resae/util.h"
#include "resae/version.h"
#include "schema.h"

/* SAE uses (set layers x variants x k x seeds) the grid accepts: far above any planned
 * experiment, low enough that the arrays stay within tens of MB. */
#define RS_GRID_MAX_SAE_USES 1000000

/* ============================================================================================
 * Identity hashing: fixed-width fields, strings with their length, so that no two different
 * field sequences serialize alike. Which config fields go into which hash, and in what order, is
 * declared once in the schema tables (src/config/config.c, H_* in schema.h); the hashes here add
 * what the grid knows (model, layers, k, seeds, the items a task builds on).
 * ========================================================================================== */

#define h_i64 rs_cfg_h_i64
#define h_f64 rs_cfg_h_f64
#define h_str rs_cfg_h_str

static uint64_t inputs_hash(const rs_config *c, const rs_model_config *mc) {
    uint64_t h = h_str(RS_HASH64_INIT, "resae inputs");
    h = h_i64(h, RESAE_SCHEMA_VERSION);
    h = h_str(h, mc->arch_name);
    int64_t ints[] = {mc->n_layers, mc->d_model, mc->n_heads, mc->d_ff, mc->vocab_size, mc->max_positions,
                      mc->parallel_residual, mc->tie_word_embeddings, mc->attention_bias};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) h = h_i64(h, ints[i]);
    h = h_f64(h, mc->rotary_pct);
    h = h_f64(h, mc->rotary_base);
    h = h_f64(h, mc->layer_norm_eps);
    h = h_str(h, mc->hidden_act);
    if (mc->arch == RS_ARCH_GEMMA2) { /* the fields GPT-NeoX does not have (its hashes are unchanged) */
        int64_t g2[] = {mc->n_kv_heads, mc->head_dim, mc->sliding_window};
        for (size_t i = 0; i < sizeof g2 / sizeof *g2; i++) h = h_i64(h, g2[i]);
        for (int l = 0; l < mc->n_layers; l++) h = h_i64(h, mc->layer_sliding[l]);
        h = h_f64(h, mc->query_pre_attn_scalar);
        h = h_f64(h, mc->attn_softcap);
        h = h_f64(h, mc->final_softcap);
        h = h_f64(h, mc->embed_scale);
    }
    return rs_cfg_hash(h, c, H_INPUTS, 0);
}

static uint64_t pair_hash(const rs_grid *g, const rs_config *c, int a, int b) {
    uint64_t h = h_str(g->inputs_hash, "affine");
    h = h_i64(h, a);
    h = h_i64(h, b);
    return rs_cfg_hash(h, c, H_AFFINE, 0);
}

static uint64_t sae_hash(const rs_grid *g, const rs_config *c, int kind, int layer, uint64_t affine_hash, int k,
                         int64_t seed) {
    uint64_t h = h_str(g->inputs_hash, "sae");
    h = h_i64(h, kind);
    h = h_i64(h, layer);
    if (kind == RS_VARIANT_RESAE) h = h_i64(h, (int64_t)affine_hash);
    h = h_i64(h, k);
    h = h_i64(h, g->n_latents);
    h = h_i64(h, seed);
    /* the base seed and the training settings, the auto ones resolved */
    return rs_cfg_hash(h, c, H_SAE, g->n_latents);
}

/* ============================================================================================
 * Building
 * ========================================================================================== */

static int cmp_int(const void *x, const void *y) {
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

static int cmp_pair(const void *x, const void *y) {
    const rs_grid_pair *p = x, *q = y;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

/* Open-addressing index from SAE hash to position in g->saes. */
typedef struct sae_index {
    size_t cap;
    int *slot; // (cap) -1 = empty
} sae_index;

static int index_find(const sae_index *ix, const rs_grid *g, uint64_t h, size_t *pos) {
    size_t i = (size_t)(h ^ (h >> 29)) & (ix->cap - 1);
    while (ix->slot[i] >= 0) {
        if (g->saes[ix->slot[i]].hash == h) return ix->slot[i];
        i = (i + 1) & (ix->cap - 1);
    }
    *pos = i;
    return -1;
}

static rs_err expand_sets(rs_grid *g, const rs_config *c, const rs_model_config *mc) {
    int total = 0;
    for (int i = 0; i < c->layers.n_sets; i++) total += c->layers.sets[i].is_family ? c->layers.sets[i].gaps.n : 1;
    int64_t n_set_layers = 0; /* bounded before allocating: "as many as fit" follows the model */
    for (int i = 0; i < c->layers.n_sets; i++) {
        const rs_set_spec *s = &c->layers.sets[i];
        if (!s->is_family) n_set_layers += s->layers.n;
        for (int j = 0; s->is_family && j < s->gaps.n; j++)
            n_set_layers += rs_config_family_count(s, s->gaps.v[j], mc->n_layers);
    }
    if (n_set_layers > RS_GRID_MAX_SAE_USES)
        RS_CONFIG_FAIL(c, "layers.sets", "the sets hold %lld layers in all, more than the %d this program plans for",
                       (long long)n_set_layers, RS_GRID_MAX_SAE_USES);
    g->sets = calloc((size_t)total, sizeof *g->sets);
    RS_CHECK_ALLOC(g->sets);
    for (int i = 0; i < c->layers.n_sets; i++) {
        const rs_set_spec *s = &c->layers.sets[i];
        int cnt = s->is_family ? s->gaps.n : 1;
        for (int j = 0; j < cnt; j++) {
            rs_grid_set *gs = &g->sets[g->n_sets];
            gs->spec = i;
            gs->same_as = -1;
            if (s->is_family) {
                int64_t gap = s->gaps.v[j];
                gs->gap = (int)gap;
                gs->n = (int)rs_config_family_count(s, gap, mc->n_layers);
                snprintf(gs->name, sizeof gs->name, "%s%lld", s->name, (long long)gap);
            } else {
                gs->n = s->layers.n;
                snprintf(gs->name, sizeof gs->name, "%s", s->name);
            }
            gs->layers = malloc((size_t)gs->n * sizeof *gs->layers);
            RS_CHECK_ALLOC(gs->layers);
            g->n_sets++;
            for (int m = 0; m < gs->n; m++)
                gs->layers[m] = s->is_family ? (int)(s->start + (int64_t)m * gs->gap) : (int)s->layers.v[m];
            for (int e = 0; e < g->n_sets - 1 && gs->same_as < 0; e++)
                if (g->sets[e].n == gs->n && !memcmp(g->sets[e].layers, gs->layers, (size_t)gs->n * sizeof(int)))
                    gs->same_as = e;
        }
    }
    /* union of the selected layers: sort all, drop repeats */
    int total_layers = 0;
    for (int i = 0; i < g->n_sets; i++) total_layers += g->sets[i].n;
    g->union_layers = malloc((size_t)total_layers * sizeof(int) + 1);
    RS_CHECK_ALLOC(g->union_layers);
    for (int i = 0, j = 0; i < g->n_sets; i++)
        for (int m = 0; m < g->sets[i].n; m++) g->union_layers[j++] = g->sets[i].layers[m];
    qsort(g->union_layers, (size_t)total_layers, sizeof(int), cmp_int);
    for (int i = 0; i < total_layers; i++)
        if (!g->n_union_layers || g->union_layers[g->n_union_layers - 1] != g->union_layers[i])
            g->union_layers[g->n_union_layers++] = g->union_layers[i];
    return RS_OK;
}

static rs_err build_pairs(rs_grid *g, const rs_config *c) {
    int total = 0;
    for (int i = 0; i < g->n_sets; i++) total += g->sets[i].n - 1;
    g->affine = calloc((size_t)total + 1, sizeof *g->affine);
    RS_CHECK_ALLOC(g->affine);
    for (int i = 0; i < g->n_sets; i++)
        for (int m = 1; m < g->sets[i].n; m++) g->affine[g->n_affine++] = (rs_grid_pair){g->sets[i].layers[m - 1], g->sets[i].layers[m], 0};
    qsort(g->affine, (size_t)g->n_affine, sizeof *g->affine, cmp_pair);
    int u = 0;
    for (int i = 0; i < g->n_affine; i++)
        if (!u || cmp_pair(&g->affine[u - 1], &g->affine[i])) g->affine[u++] = g->affine[i];
    g->n_affine = u;
    for (int i = 0; i < u; i++) g->affine[i].hash = pair_hash(g, c, g->affine[i].a, g->affine[i].b);

    const int *rl = g->union_layers;
    int rn = g->n_union_layers;
    int *tmp = NULL;
    if (!c->layers.regression_auto) {
        rn = c->layers.regression.n;
        tmp = malloc((size_t)rn * sizeof *tmp + 1);
        RS_CHECK_ALLOC(tmp);
        for (int i = 0; i < rn; i++) tmp[i] = (int)c->layers.regression.v[i];
        rl = tmp;
    }
    size_t np = (size_t)rn * (size_t)(rn > 0 ? rn - 1 : 0) / 2;
    g->regression = calloc(np + 1, sizeof *g->regression);
    if (!g->regression) {
        free(tmp);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for %zu regression pairs", np);
    }
    for (int i = 0; i < rn; i++)
        for (int j = i + 1; j < rn; j++) {
            rs_grid_pair *p = &g->regression[g->n_regression++];
            p->a = rl[i];
            p->b = rl[j];
            p->hash = pair_hash(g, c, p->a, p->b);
            if (!bsearch(p, g->affine, (size_t)g->n_affine, sizeof *g->affine, cmp_pair)) g->n_regression_extra++;
        }
    free(tmp);
    return RS_OK;
}

static int affine_index(const rs_grid *g, int a, int b) {
    rs_grid_pair key = {a, b, 0};
    const rs_grid_pair *p = bsearch(&key, g->affine, (size_t)g->n_affine, sizeof *g->affine, cmp_pair);
    return p ? (int)(p - g->affine) : -1;
}

/* The SAE a variant uses at position m of set s (added to saes[] on first use). */
static rs_err sae_for(rs_grid *g, sae_index *ix, const rs_config *c, const rs_grid_set *s, int m, int variant, int k,
                      int64_t seed, int *out) {
    rs_grid_sae sp = {RS_VARIANT_RAW, s->layers[m], -1, -1, k, seed, 0};
    if (variant == RS_VARIANT_RESAE && m > 0) {
        sp.kind = RS_VARIANT_RESAE;
        sp.pred = s->layers[m - 1];
        sp.affine = affine_index(g, sp.pred, sp.layer);
        if (sp.affine < 0) RS_FAIL(RS_ERR_INTERNAL, "affine pair (%d, %d) missing from the grid", sp.pred, sp.layer);
    }
    sp.hash = sae_hash(g, c, sp.kind, sp.layer, sp.affine >= 0 ? g->affine[sp.affine].hash : 0, k, seed);
    size_t pos = 0;
    int at = index_find(ix, g, sp.hash, &pos);
    if (at >= 0) {
        *out = at;
        return RS_OK;
    }
    ix->slot[pos] = g->n_saes;
    g->saes[g->n_saes] = sp;
    *out = g->n_saes++;
    if (sp.kind == RS_VARIANT_RAW) g->n_raw++;
    else g->n_resae++;
    return RS_OK;
}

static uint64_t eval_hash(const rs_grid *g, const rs_config *c, const rs_grid_set *s, int variant, int k,
                          int64_t seed, const int *sae) {
    uint64_t h = h_str(g->inputs_hash, "eval");
    /* the layout of the evaluation tables: a task file of another layout is not reused */
    h = h_str(h, "recon+ev_orig_closed");
    h = h_i64(h, variant);
    h = h_i64(h, k);
    h = h_i64(h, seed);
    h = h_i64(h, s->n);
    for (int m = 0; m < s->n; m++) {
        h = h_i64(h, s->layers[m]);
        h = h_i64(h, (int64_t)g->saes[sae[m]].hash);
    }
    /* ce, the CE modes and ablations (as sets), probing and TPP when enabled */
    h = rs_cfg_hash(h, c, H_EVAL, 0);
    return h;
}

static rs_err build_saes_and_evals(rs_grid *g, const rs_config *c) {
    int64_t per = (int64_t)c->n_variants * c->sae.k.n * c->sae.seeds.n;
    int64_t n_eval = (int64_t)g->n_sets * per, n_slots = 0;
    for (int i = 0; i < g->n_sets; i++) n_slots += (int64_t)g->sets[i].n * per;
    if (n_slots > RS_GRID_MAX_SAE_USES)
        RS_CONFIG_FAIL(c, "layers.sets", "the grid has %lld SAE uses over %lld evaluations, more than this program "
                       "plans for; use fewer sets, layers, k values or seeds", (long long)n_slots, (long long)n_eval);
    g->evals = calloc((size_t)n_eval + 1, sizeof *g->evals);
    g->eval_sae = malloc((size_t)n_slots * sizeof *g->eval_sae + 1);
    g->saes = calloc((size_t)n_slots + 1, sizeof *g->saes);
    RS_CHECK_ALLOC(g->evals);
    RS_CHECK_ALLOC(g->eval_sae);
    RS_CHECK_ALLOC(g->saes);
    sae_index ix = {64, NULL};
    while (ix.cap < 2 * (size_t)n_slots) ix.cap *= 2;
    ix.slot = malloc(ix.cap * sizeof *ix.slot);
    RS_CHECK_ALLOC(ix.slot);
    for (size_t i = 0; i < ix.cap; i++) ix.slot[i] = -1;

    rs_err err = RS_OK;
    int off = 0;
    for (int si = 0; si < g->n_sets; si++) {
        const rs_grid_set *s = &g->sets[si];
        for (int vi = 0; vi < c->n_variants; vi++)
            for (int ki = 0; ki < c->sae.k.n; ki++)
                for (int ei = 0; ei < c->sae.seeds.n; ei++) {
                    rs_grid_eval *e = &g->evals[g->n_evals++];
                    e->set = si;
                    e->variant = c->variants[vi];
                    e->k = (int)c->sae.k.v[ki];
                    e->seed = c->sae.seeds.v[ei];
                    e->sae_off = off;
                    for (int m = 0; m < s->n; m++)
                        RS_TRY_GOTO(sae_for(g, &ix, c, s, m, e->variant, e->k, e->seed, &g->eval_sae[off + m]), done);
                    e->hash = eval_hash(g, c, s, e->variant, e->k, e->seed, &g->eval_sae[off]);
                    off += s->n;
                    if (s->same_as < 0) g->n_evals_unique++;
                }
    }
done:
    free(ix.slot);
    return err;
}

static void count_evals(rs_grid *g, const rs_config *c) {
    rs_grid_eval_counts *n = &g->counts;
    int single = 0, joint = 0;
    for (int i = 0; i < c->eval.n_ce_modes; i++) {
        if (c->eval.ce_modes[i] == RS_CE_SINGLE) single = 1;
        else joint++;
    }
    if (!c->eval.ce) single = joint = 0;
    int64_t joint_sets = 0;
    for (int i = 0; i < g->n_evals; i++) {
        const rs_grid_set *s = &g->sets[g->evals[i].set];
        if (s->same_as >= 0) continue; /* identical layers: evaluated once */
        n->recon += s->n;
        n->redundancy += (int64_t)s->n * (s->n - 1) / 2;
        n->ce_single += single ? s->n : 0;
        n->ce_joint += s->n >= 2 ? joint : 0;
        n->probing += c->eval.probing.enabled;
        n->tpp += c->eval.tpp.enabled;
    }
    for (int i = 0; i < g->n_sets; i++) joint_sets += g->sets[i].same_as < 0 && g->sets[i].n >= 2 && joint > 0;
    if (c->eval.ce)
        n->ce_ablation = (int64_t)c->eval.n_ablations * ((single ? g->n_union_layers : 0) + joint_sets);
}

rs_err rs_grid_build(rs_grid *g, const rs_config *c, const rs_model_config *mc) {
    memset(g, 0, sizeof *g);
    RS_TRY(rs_config_check_model(c, mc));
    rs_err err = RS_OK;
    g->n_layers = mc->n_layers;
    g->d_model = mc->d_model;
    g->n_latents = rs_config_n_latents(c, mc);
    g->train_tokens = rs_config_train_tokens(c);
    g->train_steps = rs_config_train_steps(c);
    g->dead_tokens = rs_config_dead_tokens(c);
    g->lr = rs_config_lr(c, g->n_latents);
    g->config_hash = rs_config_hash(c);
    g->inputs_hash = inputs_hash(c, mc);
    RS_TRY_GOTO(expand_sets(g, c, mc), fail);
    RS_TRY_GOTO(build_pairs(g, c), fail);
    RS_TRY_GOTO(build_saes_and_evals(g, c), fail);
    count_evals(g, c);
    return RS_OK;
fail:
    rs_grid_free(g);
    return err;
}

void rs_grid_free(rs_grid *g) {
    if (!g) return;
    for (int i = 0; i < g->n_sets; i++) free(g->sets[i].layers);
    free(g->sets);
    free(g->affine);
    free(g->regression);
    free(g->union_layers);
    free(g->saes);
    free(g->evals);
    free(g->eval_sae);
    memset(g, 0, sizeof *g);
}

int rs_grid_find_sae(const rs_grid *g, enum rs_variant kind, int layer, int pred, int k, int64_t seed) {
    for (int i = 0; i < g->n_saes; i++) {
        const rs_grid_sae *s = &g->saes[i];
        if (s->kind == kind && s->layer == layer && s->k == k && s->seed == seed &&
            (kind == RS_VARIANT_RAW || s->pred == pred))
            return i;
    }
    return -1;
}

/* ============================================================================================
 * Trainer settings of one SAE
 * ========================================================================================== */

uint64_t rs_grid_sae_seed(const rs_grid_sae *s, const rs_config *c) {
    int64_t v[6] = {c->seed, s->kind, s->layer, s->pred, s->k, s->seed};
    return rs_hash64(RS_HASH64_INIT, v, sizeof v);
}

void rs_grid_sae_config(rs_sae_config *sc, const rs_grid *g, const rs_config *c, const rs_grid_sae *s) {
    rs_sae_config_default(sc, g->d_model, (int)g->n_latents, s->k);
    sc->batch = (int)c->train.batch_size;
    sc->steps = g->train_steps;
    sc->lr = g->lr;
    sc->warmup_steps = c->train.warmup_steps;
    sc->decay_frac = c->train.decay_fraction;
    sc->alpha_aux = c->train.aux_alpha;
    sc->dead_tokens = g->dead_tokens;
    sc->beta1 = c->train.beta1;
    sc->beta2 = c->train.beta2;
    sc->eps = c->train.eps;
    sc->seed = rs_grid_sae_seed(s, c);
    sc->bdec_init = c->train.b_dec_init; /* one enum: rs_sae_bdec_init */
    sc->enc_init = c->train.enc_init;
    sc->aux_norm = c->train.aux_norm;
    sc->encoder_precision = c->train.encoder_precision;
    sc->chunk_rows = 1024;
    sc->ckpt_every = c->train.checkpoint_every;
    sc->curve_bins = (int)c->train.curve_bins;
    sc->max_fvu = c->train.max_fvu;
}

/* ============================================================================================
 * Cost model (rough, stated in docs/config.md)
 * ========================================================================================== */

/* Mean forward FLOP per token of one block: the Q, K, V and output projections (2d(2 H hd + 2 KV hd);
 * GPT-NeoX: 8d^2), the MLP (GPT-NeoX 4 d d_ff; Gemma-2's GeGLU has three matrices, 6 d d_ff) and causal
 * attention over ~T/2 keys (2 H hd T; a sliding layer sees at most its window). */
static double block_flops(const rs_model_config *mc, double T) {
    double d = mc->d_model;
    double hd = mc->head_dim > 0 ? mc->head_dim : d / mc->n_heads;
    double kv = mc->n_kv_heads > 0 ? mc->n_kv_heads : mc->n_heads;
    double qo = mc->n_heads * hd;
    double f = 2 * d * (2 * qo + 2 * kv * hd) + (mc->arch == RS_ARCH_GEMMA2 ? 6.0 : 4.0) * d * mc->d_ff;
    double keys = 0;
    for (int l = 0; l < mc->n_layers; l++) {
        double w = mc->sliding_window > 0 && mc->layer_sliding[l] && mc->sliding_window < T ? mc->sliding_window : T;
        keys += w;
    }
    return f + 2 * qo * (mc->n_layers > 0 ? keys / mc->n_layers : T);
}

void rs_grid_estimate_cost(rs_grid_cost *out, const rs_grid *g, const rs_config *c, const rs_model_config *mc) {
    memset(out, 0, sizeof *out);
    double d = mc->d_model, T = (double)(c->data.seq_len ? c->data.seq_len : mc->max_positions);
    out->seq_len_assumed = (int64_t)T;
    double nl = (double)g->n_latents;
    double f_block = block_flops(mc, T);
    double f_unembed = 2 * d * mc->vocab_size;
    double cal = (double)c->data.calibration, tr = (double)c->data.train, ev = (double)c->data.eval;

    int top = g->n_union_layers ? g->union_layers[g->n_union_layers - 1] + 1 : 0;
    out->harvest = (cal + tr + ev) * top * f_block;

    double fits = g->n_affine + g->n_regression_extra;
    out->affine = fits * (cal * 3 * d * d + (7.0 / 3.0) * d * d * d + ev * 2 * d * d);

    double tt = (double)g->train_tokens;
    for (int i = 0; i < g->n_saes; i++) {
        const rs_grid_sae *s = &g->saes[i];
        /* encoder GEMM, sparse decoder and backward (~6kd), AuxK over up to d/2 dead latents */
        double per_tok = 2 * d * nl + 6.0 * s->k * d + d * d;
        if (s->kind == RS_VARIANT_RESAE) per_tok += 2 * d * d; /* residual target A x + c */
        out->train += tt * per_tok;
    }

    double pass_from_sum = 0;
    int single = 0, joint = 0;
    for (int i = 0; i < c->eval.n_ce_modes; i++) {
        if (c->eval.ce_modes[i] == RS_CE_SINGLE) single = 1;
        else joint++;
    }
    for (int i = 0; i < g->n_evals; i++) {
        const rs_grid_eval *e = &g->evals[i];
        const rs_grid_set *s = &g->sets[e->set];
        if (s->same_as >= 0) continue;
        double enc = 2 * d * nl + 2.0 * e->k * d + 2 * d * d;
        out->eval += ev * s->n * enc;                                     /* reconstruction metrics */
        out->eval += (double)s->n * (s->n - 1) / 2 * 2 * nl * nl * d;     /* redundancy */
        if (!c->eval.ce) continue;
        if (single)
            for (int m = 0; m < s->n; m++) pass_from_sum += ev * ((mc->n_layers - s->layers[m]) * f_block + f_unembed + enc);
        if (s->n >= 2) pass_from_sum += joint * ev * ((mc->n_layers - s->layers[0]) * f_block + f_unembed + s->n * enc);
    }
    if (c->eval.ce) {
        double abl = 0;
        if (single)
            for (int i = 0; i < g->n_union_layers; i++) abl += ev * ((mc->n_layers - g->union_layers[i]) * f_block + f_unembed);
        for (int i = 0; i < g->n_sets; i++)
            if (g->sets[i].same_as < 0 && g->sets[i].n >= 2 && joint)
                abl += ev * ((mc->n_layers - g->sets[i].layers[0]) * f_block + f_unembed);
        pass_from_sum += c->eval.n_ablations * abl;
        pass_from_sum += ev * (mc->n_layers * f_block + f_unembed); /* clean pass */
    }
    out->eval += pass_from_sum;
    out->total = out->harvest + out->affine + out->train + out->eval;
}
