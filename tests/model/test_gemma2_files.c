/* Gemma-2 config.json handling: hostile and unsupported settings are refused with the key named, the
 * weights' shapes are checked against the config (head_dim, kv heads), and the shipped real-shape
 * config.json of Gemma-2-9B and Pythia-1.4B (tests/data/models/) parse to the public values. Bad
 * checkpoints are the gemma2_gqa fixture's weights (symlinked) under a patched config.json. */
#define _DEFAULT_SOURCE /* realpath */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "load_modes.h"
#include "resae/log.h"
#include "resae/model.h"
#include "resae/util.h"

#include "testlib.h"

static int g_cases = 0, g_dirs = 0;
static char g_out[4096], g_data[4096];

static void expect_fail(const char *what, rs_err err, const char *n1, const char *n2) {
    g_cases++;
    const char *msg = rs_err_msg();
    if (!err) {
        fprintf(stderr, "FAIL %s: accepted\n", what);
        rs_check_fails++;
        return;
    }
    const char *needles[] = {n1, n2};
    for (int i = 0; i < 2; i++)
        if (needles[i] && !strstr(msg, needles[i])) {
            fprintf(stderr, "FAIL %s: message lacks '%s': %s\n", what, needles[i], msg);
            rs_check_fails++;
        }
    printf("ok  %-32s %s\n", what, msg);
    rs_err_clear();
}

/* A checkpoint directory: the gemma2_gqa weights and its config.json with `key` set to the JSON text
 * `val` (NULL: key removed; key NULL: unchanged). Returns the directory in dir. */
static void patched(char *dir, size_t cap, const char *key, const char *val) {
    snprintf(dir, cap, "%s/g%02d", g_out, g_dirs++);
    mkdir(dir, 0755);
    char src[4200], dst[4300];
    snprintf(src, sizeof src, "%s/runtime/gemma2_gqa/model.safetensors", g_data);
    char *abs = realpath(src, NULL);
    snprintf(dst, sizeof dst, "%s/model.safetensors", dir);
    unlink(dst);
    if (!abs || symlink(abs, dst)) {
        perror(dst);
        exit(1);
    }
    free(abs);
    snprintf(src, sizeof src, "%s/runtime/gemma2_gqa/config.json", g_data);
    char *text = NULL;
    size_t len = 0;
    if (rs_read_file(&text, &len, src, 1 << 20)) {
        rs_err_print();
        exit(1);
    }
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(text);
    if (key) {
        cJSON_DeleteItemFromObject(cfg, key);
        if (val) {
            cJSON *v = cJSON_Parse(val);
            if (!v) {
                fprintf(stderr, "bad JSON in the test: %s\n", val);
                exit(1);
            }
            cJSON_AddItemToObject(cfg, key, v);
        }
    }
    text = cJSON_Print(cfg);
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    FILE *f = fopen(dst, "wb");
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(cfg);
}

static rs_err load_patched(const char *key, const char *val) {
    char dir[4200];
    patched(dir, sizeof dir, key, val);
    return load_both_modes(dir);
}

static void test_hostile(void) {
    CHECK(!load_patched(NULL, NULL), "the unpatched gemma2_gqa config is refused: %s", rs_err_msg());
    rs_err_clear();
    /* null means none for the window and the soft-caps */
    CHECK(!load_patched("sliding_window", "null"), "sliding_window null refused: %s", rs_err_msg());
    CHECK(!load_patched("attn_logit_softcapping", "null"), "attn_logit_softcapping null refused: %s", rs_err_msg());
    CHECK(!load_patched("final_logit_softcapping", "null"), "final_logit_softcapping null refused: %s", rs_err_msg());
    rs_err_clear();

    expect_fail("sliding_window 0", load_patched("sliding_window", "0"), "config.json", "sliding_window 0");
    expect_fail("sliding_window -4", load_patched("sliding_window", "-4"), "sliding_window -4", NULL);
    expect_fail("sliding_window 2.5", load_patched("sliding_window", "2.5"), "'sliding_window'", "integer");
    expect_fail("kv heads not dividing", load_patched("num_key_value_heads", "3"), "num_key_value_heads 3",
                "num_attention_heads 4");
    expect_fail("kv heads 0", load_patched("num_key_value_heads", "0"), "num_key_value_heads", "positive");
    expect_fail("head_dim vs weights", load_patched("head_dim", "16"), "'model.layers.0.self_attn.q_proj.weight'",
                "num_attention_heads x head_dim");
    expect_fail("head_dim odd", load_patched("head_dim", "7"), "head_dim 7", "even");
    expect_fail("head_dim missing", load_patched("head_dim", NULL), "missing required key 'head_dim'", NULL);
    expect_fail("kv heads missing", load_patched("num_key_value_heads", NULL), "'num_key_value_heads'", NULL);
    expect_fail("kv heads vs weights", load_patched("num_key_value_heads", "4"),
                "'model.layers.0.self_attn.k_proj.weight'", "num_key_value_heads x head_dim");
    expect_fail("untied without lm_head", load_patched("tie_word_embeddings", "false"), "'lm_head.weight' is missing",
                NULL);
    expect_fail("rope_scaling", load_patched("rope_scaling", "{\"rope_type\":\"linear\",\"factor\":2.0}"),
                "rope_scaling", "not supported");
    expect_fail("rope_parameters type", load_patched("rope_parameters", "{\"rope_type\":\"yarn\",\"factor\":4}"),
                "rope_parameters.rope_type 'yarn'", NULL);
    expect_fail("rope_parameters extra", load_patched("rope_parameters", "{\"rope_type\":\"default\",\"factor\":4}"),
                "rope_parameters.factor", NULL);
    expect_fail("rope_theta 0", load_patched("rope_theta", "0"), "rope_theta 0", NULL);
    expect_fail("activation", load_patched("hidden_activation", "\"gelu\""), "hidden_activation 'gelu'",
                "gelu_pytorch_tanh");
    expect_fail("activation type", load_patched("hidden_activation", "5"), "'hidden_activation'", "string");
    expect_fail("attention_bias", load_patched("attention_bias", "true"), "attention_bias", "not supported");
    expect_fail("attn softcap 0", load_patched("attn_logit_softcapping", "0"), "attn_logit_softcapping 0",
                "positive");
    expect_fail("final softcap -1", load_patched("final_logit_softcapping", "-1"), "final_logit_softcapping -1", NULL);
    expect_fail("query_pre_attn_scalar 0", load_patched("query_pre_attn_scalar", "0"), "query_pre_attn_scalar 0",
                NULL);
    expect_fail("layer_types length", load_patched("layer_types", "[\"full_attention\"]"), "layer_types",
                "num_hidden_layers = 3");
    expect_fail("layer_types entry",
                load_patched("layer_types", "[\"full_attention\",\"chunked_attention\",\"full_attention\"]"),
                "layer_types[1]", NULL);
    expect_fail("bidirectional", load_patched("use_bidirectional_attention", "true"), "use_bidirectional_attention",
                NULL);
    expect_fail("rms_norm_eps", load_patched("rms_norm_eps", "-1"), "rms_norm_eps", NULL);
    expect_fail("model_type unknown", load_patched("model_type", "\"llama\""), "model_type 'llama'", "not supported");
    expect_fail("model_type type", load_patched("model_type", "3"), "'model_type'", "string");
    expect_fail("class vs model_type", load_patched("architectures", "[\"GPTNeoXForCausalLM\"]"),
                "architecture 'GPTNeoXForCausalLM'", "model_type 'gemma2'");
    expect_fail("sequence classifier", load_patched("architectures", "[\"Gemma2ForSequenceClassification\"]"),
                "Gemma2ForSequenceClassification", NULL);
    expect_fail("too many layers", load_patched("num_hidden_layers", "513"), "num_hidden_layers 513", NULL);
}

/* the config decides which layers slide: layer_types, else layers 0, 2, 4, ... */
static void test_layer_types(void) {
    char dir[4200];
    rs_model_config c;
    patched(dir, sizeof dir, NULL, NULL);
    CHECK(!rs_model_config_load(&c, dir), "%s", rs_err_msg());
    CHECK(c.layer_sliding[0] == 1 && c.layer_sliding[1] == 0 && c.layer_sliding[2] == 1, "default sliding rule");
    patched(dir, sizeof dir, "layer_types", "[\"full_attention\",\"full_attention\",\"sliding_attention\"]");
    CHECK(!rs_model_config_load(&c, dir), "%s", rs_err_msg());
    CHECK(c.layer_sliding[0] == 0 && c.layer_sliding[1] == 0 && c.layer_sliding[2] == 1, "layer_types not followed");
    patched(dir, sizeof dir, "sliding_window", "null");
    CHECK(!rs_model_config_load(&c, dir), "%s", rs_err_msg());
    CHECK(!c.layer_sliding[0] && !c.layer_sliding[2] && c.sliding_window == 0, "sliding_window null: no window");
    patched(dir, sizeof dir, "rope_parameters", "{\"rope_type\":\"default\",\"rope_theta\":777.0}");
    CHECK(!rs_model_config_load(&c, dir), "%s", rs_err_msg());
    CHECK(c.rotary_base == 777.0, "rope_parameters.rope_theta not read (%g)", c.rotary_base);
    rs_err_clear();
}

/* the shipped config.json files carry the public values */
static void test_real_shapes(void) {
    char dir[4200];
    rs_model_config c;
    snprintf(dir, sizeof dir, "%s/models/gemma-2-9b", g_data);
    CHECK(!rs_model_config_load(&c, dir), "%s", rs_err_msg());
    CHECK(c.arch == RS_ARCH_GEMMA2 && c.n_layers == 42 && c.d_model == 3584 && c.n_heads == 16 && c.n_kv_heads == 8 &&
          c.head_dim == 256 && c.d_ff == 14336 && c.vocab_size == 256000 && c.sliding_window == 4096 &&
          c.max_positions == 8192 && c.tie_word_embeddings, "gemma-2-9b shape");
    CHECK(c.attn_scale == 1.0 / 16 && c.attn_softcap == 50 && c.final_softcap == 30 && c.layer_norm_eps == 1e-6 &&
          c.rotary_base == 10000 && c.rotary_dim == 256, "gemma-2-9b attention settings");
    CHECK(c.embed_scale == (float)sqrt(3584.0), "gemma-2-9b embedding scale %.9g", (double)c.embed_scale);
    int slide = 0;
    for (int l = 0; l < c.n_layers; l++) slide += c.layer_sliding[l] == (l % 2 == 0);
    CHECK(slide == 42, "gemma-2-9b: the even layers slide");
    snprintf(dir, sizeof dir, "%s/models/pythia-1.4b", g_data);
    CHECK(!rs_model_config_load(&c, dir), "%s", rs_err_msg());
    CHECK(c.arch == RS_ARCH_GPT_NEOX && c.n_layers == 24 && c.d_model == 2048 && c.n_heads == 16 && c.head_dim == 128 &&
          c.rotary_dim == 32 && c.d_ff == 8192 && c.vocab_size == 50304 && c.parallel_residual &&
          !c.tie_word_embeddings && c.embed_scale == 1.0f, "pythia-1.4b shape");
    rs_err_clear();
}

int main(void) {
    rs_log_init(0);
    const char *out = getenv("RESAE_TEST_OUT"), *data = getenv("RESAE_TEST_DATA");
    snprintf(g_out, sizeof g_out, "%s/runtime_gemma2_files", out ? out : "/tmp");
    snprintf(g_data, sizeof g_data, "%s", data ? data : "tests/data");
    mkdir(g_out, 0755);
    test_hostile();
    test_layer_types();
    test_real_shapes();
    printf("%d error cases checked\n", g_cases);
    if (rs_check_fails) fprintf(stderr, "FAILED\n");
    return rs_check_fails;
}
