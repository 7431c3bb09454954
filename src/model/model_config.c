#include "resae/model_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/util.h"

static rs_err get_int(int *out, const cJSON *root, const char *path, const char *key, int required, int dflt) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        if (required) RS_FAIL(RS_ERR_FORMAT, "%s: missing required key '%s'", path, key);
        *out = dflt;
        return RS_OK;
    }
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > 2e9)
        RS_FAIL(RS_ERR_FORMAT, "%s: key '%s' must be an integer", path, key);
    *out = (int)it->valuedouble;
    return RS_OK;
}

static rs_err get_num(double *out, const cJSON *root, const char *path, const char *key, double dflt) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        *out = dflt;
        return RS_OK;
    }
    if (!cJSON_IsNumber(it)) RS_FAIL(RS_ERR_FORMAT, "%s: key '%s' must be a number", path, key);
    *out = it->valuedouble;
    return RS_OK;
}

static rs_err get_bool(int *out, const cJSON *root, const char *path, const char *key, int dflt) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        *out = dflt;
        return RS_OK;
    }
    if (!cJSON_IsBool(it)) RS_FAIL(RS_ERR_FORMAT, "%s: key '%s' must be true or false", path, key);
    *out = cJSON_IsTrue(it);
    return RS_OK;
}

static rs_err parse_neox(rs_model_config *c, const cJSON *root, const char *path) {
    RS_TRY(get_int(&c->n_layers, root, path, "num_hidden_layers", 1, 0));
    RS_TRY(get_int(&c->d_model, root, path, "hidden_size", 1, 0));
    RS_TRY(get_int(&c->n_heads, root, path, "num_attention_heads", 1, 0));
    RS_TRY(get_int(&c->d_ff, root, path, "intermediate_size", 1, 0));
    RS_TRY(get_int(&c->vocab_size, root, path, "vocab_size", 1, 0));
    RS_TRY(get_int(&c->max_positions, root, path, "max_position_embeddings", 0, 2048));
    RS_TRY(get_num(&c->rotary_pct, root, path, "rotary_pct", 0.25));
    /* newer conversions name the rotary base rope_theta */
    double theta = 0;
    RS_TRY(get_num(&theta, root, path, "rope_theta", 10000.0));
    RS_TRY(get_num(&c->rotary_base, root, path, "rotary_emb_base", theta));
    if (!(c->rotary_base > 0)) RS_FAIL(RS_ERR_FORMAT, "%s: rotary_emb_base %g must be positive", path, c->rotary_base);
    RS_TRY(get_num(&c->layer_norm_eps, root, path, "layer_norm_eps", 1e-5));
    if (!(c->layer_norm_eps >= 0)) RS_FAIL(RS_ERR_FORMAT, "%s: layer_norm_eps must be non-negative", path);
    RS_TRY(get_bool(&c->parallel_residual, root, path, "use_parallel_residual", 1));
    RS_TRY(get_bool(&c->tie_word_embeddings, root, path, "tie_word_embeddings", 0));
    RS_TRY(get_bool(&c->attention_bias, root, path, "attention_bias", 1));
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && !cJSON_IsNull(act) && !cJSON_IsString(act))
        RS_FAIL(RS_ERR_FORMAT, "%s: key 'hidden_act' must be a string", path);
    snprintf(c->hidden_act, sizeof c->hidden_act, "%s", cJSON_IsString(act) ? act->valuestring : "gelu");

    if (c->n_layers < 1 || c->d_model < 1 || c->n_heads < 1 || c->d_ff < 1 || c->vocab_size < 1)
        RS_FAIL(RS_ERR_FORMAT, "%s: num_hidden_layers, hidden_size, num_attention_heads, intermediate_size "
                "and vocab_size must be positive", path);
    if (c->d_model % c->n_heads)
        RS_FAIL(RS_ERR_FORMAT, "%s: hidden_size %d is not divisible by num_attention_heads %d", path,
                c->d_model, c->n_heads);
    c->head_dim = c->d_model / c->n_heads;
    c->n_kv_heads = c->n_heads;
    if (!(c->rotary_pct > 0 && c->rotary_pct <= 1))
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: rotary_pct %g is outside (0, 1]", path, c->rotary_pct);
    /* the same truncation as Hugging Face: int(head_size * rotary_pct) */
    c->rotary_dim = (int)((double)c->head_dim * c->rotary_pct);
    if (c->rotary_dim % 2)
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: rotary_pct %g gives %d rotary dimensions of head size %d; an odd count "
                "is not supported (rotate-half needs an even number)", path, c->rotary_pct, c->rotary_dim, c->head_dim);
    if (c->max_positions < 1)
        RS_FAIL(RS_ERR_FORMAT, "%s: max_position_embeddings %d must be positive", path, c->max_positions);
    if (strcmp(c->hidden_act, "gelu"))
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: hidden_act '%s' is not supported (only exact 'gelu')", path,
                c->hidden_act);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs))
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: rope_scaling is set; scaled rotary embeddings are not supported", path);
    return RS_OK;
}

rs_err rs_model_config_load(rs_model_config *c, const char *dir) {
    memset(c, 0, sizeof *c);
    char path[4096];
    RS_TRY(rs_path_join(path, sizeof path, dir, "config.json"));
    char *text = NULL;
    size_t len = 0;
    RS_TRY(rs_read_file(&text, &len, path, 1 << 20));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) RS_FAIL(RS_ERR_FORMAT, "%s: not valid JSON", path);
    rs_err err = RS_OK;
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const char *name = cJSON_IsString(a0) ? a0->valuestring : NULL;
    if (!name && cJSON_IsString(mt) && !strcmp(mt->valuestring, "gpt_neox")) name = "GPTNeoXForCausalLM";
    if (!name) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: no 'architectures' list naming the model class", path);
    snprintf(c->arch_name, sizeof c->arch_name, "%s", name);
    if (!strcmp(name, "GPTNeoXForCausalLM")) {
        c->arch = RS_ARCH_GPT_NEOX;
        RS_TRY_GOTO(parse_neox(c, root, path), done);
    } else {
        RS_FAIL_GOTO(done, RS_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (supported: GPTNeoXForCausalLM)",
                     path, name);
    }
done:
    cJSON_Delete(root);
    return err;
}
