/* The grid: set expansion, affine and regression pairs, SAE sharing across overlapping sets,
 * evaluation specs, and identity hashes (what changes them and what does not). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/config.h"
#include "resae/err.h"
#include "resae/grid.h"
#include "model8.h"

/* Build the grid of BASE + EXTRA (YAML text) on the 8-layer model. */
static void build(rs_config *c, rs_grid *g, const char *layers_yaml, const char *extra) {
    char text[4096];
    snprintf(text, sizeof text,
             "name: t\nmodel: {path: m}\ndata: {tokens: t.h5, splits: {calibration: 1000, train: 100000, eval: 1000}}\n"
             "%s"
             "layers:\n%s%s",
             extra && strstr(extra, "train:") ? "" : "train: {tokens: 50000, warmup_steps: 1}\n", layers_yaml,
             extra ? extra : "");
    rs_err e = rs_config_load_text(c, "/tmp/grid-test/inline.yaml", text, strlen(text));
    if (e) fail_msg("config: %s", rs_err_msg());
    rs_model_config m = model8();
    e = rs_grid_build(g, c, &m);
    if (e) fail_msg("grid: %s", rs_err_msg());
}

static void check_set(const rs_grid *g, int i, const char *name, const int *layers, int n) {
    assert_string_equal(g->sets[i].name, name);
    assert_int_equal(g->sets[i].n, n);
    for (int m = 0; m < n; m++) assert_int_equal(g->sets[i].layers[m], layers[m]);
}

/* The demo design: quarters {0,2,4,6} plus gaps 1, 2, 3 from layer 0 on 8 layers. */
static void test_demo_grid(void **state) {
    (void)state;
    rs_config c;
    rs_grid g;
    build(&c, &g, "  sets:\n    - {name: quarters, layers: [0, 2, 4, 6]}\n    - {name: gap, start: 0, gaps: [1, 2, 3]}\n",
          "sae: {k: [3, 6, 12, 20]}\n");
    assert_int_equal(g.n_sets, 4);
    check_set(&g, 0, "quarters", (int[]){0, 2, 4, 6}, 4);
    check_set(&g, 1, "gap1", (int[]){0, 1, 2, 3, 4, 5, 6, 7}, 8);
    check_set(&g, 2, "gap2", (int[]){0, 2, 4, 6}, 4);
    check_set(&g, 3, "gap3", (int[]){0, 3, 6}, 3);
    assert_int_equal(g.sets[2].same_as, 0);
    assert_int_equal(g.sets[1].same_as, -1);
    /* consecutive pairs: gap1 7, quarters/gap2 3 (shared), gap3 (0,3) (3,6) */
    assert_int_equal(g.n_affine, 12);
    /* regression over the union 0..7: 28 pairs, 12 of them already affine pairs */
    assert_int_equal(g.n_union_layers, 8);
    assert_int_equal(g.n_regression, 28);
    assert_int_equal(g.n_regression_extra, 16);
    /* raw: 8 layers x 4 k; resae: 12 unique pairs x 4 k */
    assert_int_equal(g.n_raw, 32);
    assert_int_equal(g.n_resae, 48);
    assert_int_equal(g.n_saes, 80);
    assert_int_equal(g.n_evals, 4 * 2 * 4);
    assert_int_equal(g.n_evals_unique, 3 * 2 * 4);
    /* counts per kind over the unique sets (quarters, gap1, gap3): sizes 4 + 8 + 3 = 15 */
    assert_int_equal(g.counts.recon, 15 * 8);
    assert_int_equal(g.counts.redundancy, (6 + 28 + 3) * 8);
    assert_int_equal(g.counts.ce_single, 15 * 8);
    assert_int_equal(g.counts.ce_joint, 3 * 8 * 2);
    assert_int_equal(g.counts.ce_ablation, 2 * (8 + 3));
    assert_int_equal(g.n_latents, 1024);
    assert_int_equal(g.train_steps, 50000 / 4096);

    /* the resae evaluation of quarters at k=3 uses raw(0), resae(0->2), resae(2->4), resae(4->6);
     * gap2 uses the very same SAEs and has the same identity */
    const rs_grid_eval *q = NULL, *g2 = NULL;
    for (int i = 0; i < g.n_evals; i++) {
        const rs_grid_eval *e = &g.evals[i];
        if (e->variant != RS_VARIANT_RESAE || e->k != 3) continue;
        if (e->set == 0) q = e;
        if (e->set == 2) g2 = e;
    }
    assert_non_null(q);
    assert_non_null(g2);
    const int *sq = &g.eval_sae[q->sae_off], *sg = &g.eval_sae[g2->sae_off];
    assert_int_equal(sq[0], rs_grid_find_sae(&g, RS_VARIANT_RAW, 0, -1, 3, 0));
    assert_int_equal(sq[1], rs_grid_find_sae(&g, RS_VARIANT_RESAE, 2, 0, 3, 0));
    assert_int_equal(sq[3], rs_grid_find_sae(&g, RS_VARIANT_RESAE, 6, 4, 3, 0));
    assert_true(sq[1] >= 0 && sq[3] >= 0);
    for (int m = 0; m < 4; m++) assert_int_equal(sq[m], sg[m]);
    assert_true(q->hash == g2->hash);
    /* a resae SAE knows its affine map */
    const rs_grid_sae *s = &g.saes[sq[2]];
    assert_int_equal(s->kind, RS_VARIANT_RESAE);
    assert_int_equal(g.affine[s->affine].a, 2);
    assert_int_equal(g.affine[s->affine].b, 4);
    /* no resae SAE at a set's first layer, and none for a pair that is not consecutive anywhere */
    assert_int_equal(rs_grid_find_sae(&g, RS_VARIANT_RESAE, 0, -1, 3, 0), -1);
    assert_int_equal(rs_grid_find_sae(&g, RS_VARIANT_RESAE, 7, 5, 3, 0), -1);
    /* the raw SAE at layer 2 serves the raw evaluations of quarters and gap1 */
    int raw2 = rs_grid_find_sae(&g, RS_VARIANT_RAW, 2, -1, 6, 0);
    assert_true(raw2 >= 0);
    int uses = 0;
    for (int i = 0; i < g.n_evals; i++) {
        const rs_grid_eval *e = &g.evals[i];
        for (int m = 0; m < g.sets[e->set].n; m++) uses += g.eval_sae[e->sae_off + m] == raw2;
    }
    assert_int_equal(uses, 3); /* raw evaluations of quarters, gap1, gap2 at k=6 */
    /* every SAE hash unique */
    for (int i = 0; i < g.n_saes; i++)
        for (int j = i + 1; j < g.n_saes; j++) assert_true(g.saes[i].hash != g.saes[j].hash);
    rs_grid_free(&g);
    rs_config_free(&c);
}

/* Overlapping sets {0,2,4} and {2,4,6}: the pair (2,4) is shared; variant choices change what
 * is raw. */
static void test_overlap_variants(void **state) {
    (void)state;
    const char *sets = "  sets:\n    - {name: a, layers: [0, 2, 4]}\n    - {name: b, layers: [2, 4, 6]}\n";
    rs_config c;
    rs_grid g;
    build(&c, &g, sets, "sae: {k: [4, 8], seeds: [0, 1, 2]}\n");
    assert_int_equal(g.n_affine, 3);
    assert_int_equal(g.n_raw, 4 * 2 * 3);   /* union {0,2,4,6} x k x seeds */
    assert_int_equal(g.n_resae, 3 * 2 * 3); /* (0,2) (2,4) (4,6) */
    assert_int_equal(g.n_evals, 2 * 2 * 2 * 3);
    rs_grid_free(&g);
    rs_config_free(&c);

    build(&c, &g, sets, "variants: [resae]\nsae: {k: [4, 8], seeds: [0, 1, 2]}\n");
    assert_int_equal(g.n_raw, 2 * 2 * 3);   /* first layers 0 and 2 */
    assert_int_equal(g.n_resae, 3 * 2 * 3);
    assert_int_equal(g.n_evals, 2 * 1 * 2 * 3);
    rs_grid_free(&g);
    rs_config_free(&c);

    build(&c, &g, sets, "variants: [raw]\nsae: {k: [4, 8], seeds: [0, 1, 2]}\n");
    assert_int_equal(g.n_raw, 4 * 2 * 3);
    assert_int_equal(g.n_resae, 0);
    assert_int_equal(g.n_affine, 3); /* R^2 per consecutive pair is reported for every variant */
    rs_grid_free(&g);
    rs_config_free(&c);

    /* explicit regression list; a single-layer set; counted gap family */
    build(&c, &g, "  sets:\n    - {name: one, layers: [5]}\n    - {name: f, start: 1, gaps: [2], count: 3}\n"
                  "  regression: [1, 3, 5, 7]\n",
          "sae: {k: [4]}\n");
    check_set(&g, 1, "f2", (int[]){1, 3, 5}, 3);
    assert_int_equal(g.n_regression, 6);
    assert_int_equal(g.n_regression_extra, 4); /* all but (1,3) and (3,5) */
    assert_int_equal(g.n_raw, 3);              /* layers 5, 1, 3; layer 5 shared by both sets */
    assert_int_equal(g.n_resae, 2);
    assert_int_equal(g.counts.redundancy, 2 * 3); /* set 'one' has no pairs */
    rs_grid_free(&g);
    rs_config_free(&c);
}

static uint64_t sae_hash_of(const rs_grid *g, int kind, int layer, int pred, int k) {
    int i = rs_grid_find_sae(g, kind, layer, pred, k, 0);
    assert_true(i >= 0);
    return g->saes[i].hash;
}

/* What a hash depends on. */
static void test_hashes(void **state) {
    (void)state;
    const char *sets = "  sets:\n    - {name: a, layers: [0, 2, 4]}\n";
    const char *sets_renamed = "  sets:\n    - {name: other, layers: [0, 2, 4]}\n";
    rs_config c0, c1;
    rs_grid g0, g1;
    build(&c0, &g0, sets, "sae: {k: [4]}\n");
    uint64_t raw0 = sae_hash_of(&g0, RS_VARIANT_RAW, 2, -1, 4), res0 = sae_hash_of(&g0, RS_VARIANT_RESAE, 2, 0, 4);
    assert_true(raw0 != res0);

    /* identical config: identical hashes (stable) */
    build(&c1, &g1, sets, "sae: {k: [4]}\n");
    assert_true(sae_hash_of(&g1, RS_VARIANT_RAW, 2, -1, 4) == raw0);
    assert_true(g1.evals[0].hash == g0.evals[0].hash);
    rs_grid_free(&g1);
    rs_config_free(&c1);

    /* set name, run_dir, eval batch, parallel: nothing changes */
    build(&c1, &g1, sets_renamed, "sae: {k: [4]}\nrun_dir: /x\neval: {batch_sequences: 3}\nparallel: {group_size: 2}\n");
    assert_true(sae_hash_of(&g1, RS_VARIANT_RAW, 2, -1, 4) == raw0);
    assert_true(sae_hash_of(&g1, RS_VARIANT_RESAE, 2, 0, 4) == res0);
    assert_true(g1.evals[0].hash == g0.evals[0].hash);
    rs_grid_free(&g1);
    rs_config_free(&c1);

    /* evaluation settings change evaluations, not SAEs */
    build(&c1, &g1, sets, "sae: {k: [4]}\neval: {ce_modes: [tf]}\n");
    assert_true(sae_hash_of(&g1, RS_VARIANT_RAW, 2, -1, 4) == raw0);
    assert_true(g1.evals[0].hash != g0.evals[0].hash);
    rs_grid_free(&g1);
    rs_config_free(&c1);

    /* the affine regularizer changes resae SAEs (and the pair), not raw ones */
    build(&c1, &g1, sets, "sae: {k: [4]}\naffine: {lambda_rel: 1.0e-3}\n");
    assert_true(sae_hash_of(&g1, RS_VARIANT_RAW, 2, -1, 4) == raw0);
    assert_true(sae_hash_of(&g1, RS_VARIANT_RESAE, 2, 0, 4) != res0);
    assert_true(g1.affine[0].hash != g0.affine[0].hash);
    rs_grid_free(&g1);
    rs_config_free(&c1);

    /* training settings, data and the auto learning rate (through the width) change every SAE */
    const char *changes[] = {"sae: {k: [4]}\ntrain: {tokens: 50000, lr: 1.0e-3, warmup_steps: 1}\n",
                             "sae: {k: [4], expansion: 4}\n",
                             "sae: {k: [4]}\nstore: {activation_dtype: float16}\n",
                             "sae: {k: [4]}\nseed: 5\n"};
    for (size_t i = 0; i < sizeof changes / sizeof *changes; i++) {
        build(&c1, &g1, sets, changes[i]);
        assert_true(sae_hash_of(&g1, RS_VARIANT_RAW, 2, -1, 4) != raw0);
        assert_true(sae_hash_of(&g1, RS_VARIANT_RESAE, 2, 0, 4) != res0);
        rs_grid_free(&g1);
        rs_config_free(&c1);
    }
    /* the regression pair (0,2) is the same fit as the affine pair (0,2) */
    int found = 0;
    for (int i = 0; i < g0.n_regression; i++)
        if (g0.regression[i].a == 0 && g0.regression[i].b == 2) {
            found = 1;
            assert_true(g0.regression[i].hash == g0.affine[0].hash);
        }
    assert_true(found);
    rs_grid_free(&g0);
    rs_config_free(&c0);
}

/* Model-dependent errors surface from rs_grid_build with positions in the file. */
static void test_model_errors(void **state) {
    (void)state;
    const char *text = "name: t\nmodel: {path: m}\ndata: {tokens: t.h5}\nlayers:\n  sets:\n"
                       "    - {gaps: [2], start: 1, count: 5}\n";
    rs_config c;
    rs_grid g;
    assert_int_equal(rs_config_load_text(&c, "/tmp/grid-test/x.yaml", text, strlen(text)), RS_OK);
    rs_model_config m = model8();
    assert_int_equal(rs_grid_build(&g, &c, &m), RS_ERR_CONFIG);
    assert_non_null(strstr(rs_err_msg(), "x.yaml:6:36: layers.sets[0].count: 5 layers with gap 2 from layer 1 end at "
                                         "layer 9, beyond the model's 8 layers; lower count (at most 4 fit)"));
    m.n_layers = 10;
    assert_int_equal(rs_grid_build(&g, &c, &m), RS_OK);
    check_set(&g, 0, "gap2", (int[]){1, 3, 5, 7, 9}, 5);
    rs_grid_free(&g);
    rs_config_free(&c);

    /* "as many as fit" on an absurd model is refused before anything model-sized is allocated */
    text = "name: t\nmodel: {path: m}\ndata: {tokens: t.h5}\nlayers:\n  sets:\n    - {gaps: [1]}\n";
    assert_int_equal(rs_config_load_text(&c, "/tmp/grid-test/x.yaml", text, strlen(text)), RS_OK);
    m.n_layers = 2000000000;
    assert_int_equal(rs_grid_build(&g, &c, &m), RS_ERR_CONFIG);
    assert_non_null(strstr(rs_err_msg(), "x.yaml:6:5: layers.sets: the sets hold 2000000000 layers in all"));
    rs_config_free(&c);
}

/* Cost estimate: positive, and training scales with the number of SAEs. */
static void test_cost(void **state) {
    (void)state;
    rs_config c;
    rs_grid g;
    rs_model_config m = model8();
    rs_grid_cost a, b;
    build(&c, &g, "  sets:\n    - {layers: [0, 2, 4]}\n", "sae: {k: [4]}\n");
    rs_grid_estimate_cost(&a, &g, &c, &m);
    rs_grid_free(&g);
    rs_config_free(&c);
    build(&c, &g, "  sets:\n    - {layers: [0, 2, 4]}\n", "sae: {k: [4], seeds: [0, 1]}\n");
    rs_grid_estimate_cost(&b, &g, &c, &m);
    assert_true(a.harvest > 0 && a.affine > 0 && a.train > 0 && a.eval > 0);
    assert_true(b.harvest == a.harvest);
    assert_true(b.train > 1.99 * a.train && b.train < 2.01 * a.train);
    assert_true(a.total == a.harvest + a.affine + a.train + a.eval);
    assert_int_equal(a.seq_len_assumed, 256);
    rs_grid_free(&g);
    rs_config_free(&c);
}

/* The model fields that differ between the architectures: the cost model's block FLOP against the
 * formulas in docs/config.md, computed here by hand, and the inputs hash, which must see every
 * Gemma-2 field that changes the forward pass (and keeps GPT-NeoX's hash as it was). */
static void grid_for(rs_config *c, rs_grid *g, const rs_model_config *m) {
    static const char text[] = "name: t\nmodel: {path: m}\n"
                               "data: {tokens: t.h5, splits: {calibration: 1000, train: 100000, eval: 1000}}\n"
                               "train: {tokens: 50000, warmup_steps: 1}\nlayers:\n  sets:\n    - {layers: [0, 2, 4]}\n"
                               "sae: {k: [4]}\n";
    if (rs_config_load_text(c, "/tmp/grid-test/inline.yaml", text, strlen(text))) fail_msg("config: %s", rs_err_msg());
    if (rs_grid_build(g, c, m)) fail_msg("grid: %s", rs_err_msg());
}

static rs_model_config gemma8(void) {
    rs_model_config m = model8();
    m.arch = RS_ARCH_GEMMA2;
    snprintf(m.arch_name, sizeof m.arch_name, "Gemma2ForCausalLM");
    m.n_heads = 4, m.n_kv_heads = 2, m.head_dim = 48, m.d_ff = 384, m.rotary_pct = 1, m.parallel_residual = 0;
    m.query_pre_attn_scalar = 48, m.attn_softcap = 50, m.final_softcap = 30, m.sliding_window = 64;
    for (int l = 0; l < m.n_layers; l += 2) m.layer_sliding[l] = 1;
    m.embed_scale = 11.3137085f;
    snprintf(m.hidden_act, sizeof m.hidden_act, "gelu_pytorch_tanh");
    return m;
}

static void cost_and_hash(const rs_model_config *m, double *harvest, uint64_t *hash) {
    rs_config c;
    rs_grid g;
    rs_grid_cost k;
    grid_for(&c, &g, m);
    rs_grid_estimate_cost(&k, &g, &c, m);
    *harvest = k.harvest;
    *hash = g.inputs_hash;
    rs_grid_free(&g);
    rs_config_free(&c);
}

static void test_arch_cost_hash(void **state) {
    (void)state;
    const double tokens = 1000 + 100000 + 1000, blocks = 5, T = 256; /* harvest runs blocks 0..4 */
    double h;
    uint64_t neox_hash, hash;
    rs_model_config n = model8();
    cost_and_hash(&n, &h, &neox_hash);
    double d = 128, f = 8 * d * d + 4 * d * 512 + 2 * d * T;
    assert_true(fabs(h - tokens * blocks * f) <= 1e-12 * h);
    /* fields GPT-NeoX does not read leave its hash alone */
    n.attn_softcap = 50, n.sliding_window = 64;
    cost_and_hash(&n, &h, &hash);
    assert_true(hash == neox_hash);

    rs_model_config g = gemma8();
    uint64_t g_hash;
    cost_and_hash(&g, &h, &g_hash);
    /* Q, O: 4 x 48 = 192 wide; K, V: 2 x 48 = 96; GeGLU 3 matrices; half the layers see 64 keys */
    double qo = 192, kv = 96, keys = (64 + T) / 2;
    double fg = 2 * d * (2 * qo + 2 * kv) + 6 * d * 384 + 2 * qo * keys;
    assert_true(fabs(h - tokens * blocks * fg) <= 1e-12 * h);
    assert_true(g_hash != neox_hash);
    /* every Gemma-2 field that changes the forward pass changes the identity */
    for (int field = 0; field < 8; field++) {
        rs_model_config v = gemma8();
        switch (field) {
        case 0: v.n_kv_heads = 4; break;
        case 1: v.head_dim = 32; break;
        case 2: v.sliding_window = 32; break;
        case 3: v.layer_sliding[0] = 0, v.layer_sliding[1] = 1; break;
        case 4: v.query_pre_attn_scalar = 32; break;
        case 5: v.attn_softcap = 0; break;
        case 6: v.final_softcap = 0; break;
        default: v.embed_scale = 1; break;
        }
        cost_and_hash(&v, &h, &hash);
        if (hash == g_hash) fail_msg("Gemma-2 field %d left the inputs hash unchanged", field);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_demo_grid), cmocka_unit_test(test_overlap_variants), cmocka_unit_test(test_hashes),
        cmocka_unit_test(test_model_errors), cmocka_unit_test(test_cost), cmocka_unit_test(test_arch_cost_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
