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
    c->attn_scale = 1.0 / sqrt((double)c->head_dim);
    c->embed_scale = 1.0f;
    return RS_OK;
}

/* A soft-cap: null or absent-with-null-default means none; a number must be positive (HF divides by it). */
static rs_err get_softcap(double *out, const cJSON *root, const char *path, const char *key, double dflt) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (it && cJSON_IsNull(it)) {
        *out = 0;
        return RS_OK;
    }
    RS_TRY(get_num(out, root, path, key, dflt));
    if (!(*out > 0) || !isfinite(*out))
        RS_FAIL(RS_ERR_FORMAT, "%s: %s %g must be positive (or null for no soft-capping)", path, key, *out);
    return RS_OK;
}

/* Gemma2ForCausalLM (transformers' modeling_gemma2.py / configuration_gemma2.py). Defaults are
 * Gemma2Config's where a real config.json may leave a key out; the shape keys are required. */
static rs_err parse_gemma2(rs_model_config *c, const cJSON *root, const char *path) {
    RS_TRY(get_int(&c->n_layers, root, path, "num_hidden_layers", 1, 0));
    RS_TRY(get_int(&c->d_model, root, path, "hidden_size", 1, 0));
    RS_TRY(get_int(&c->n_heads, root, path, "num_attention_heads", 1, 0));
    RS_TRY(get_int(&c->n_kv_heads, root, path, "num_key_value_heads", 1, 0));
    RS_TRY(get_int(&c->head_dim, root, path, "head_dim", 1, 0));
    RS_TRY(get_int(&c->d_ff, root, path, "intermediate_size", 1, 0));
    RS_TRY(get_int(&c->vocab_size, root, path, "vocab_size", 1, 0));
    RS_TRY(get_int(&c->max_positions, root, path, "max_position_embeddings", 0, 8192));
    RS_TRY(get_num(&c->layer_norm_eps, root, path, "rms_norm_eps", 1e-6));
    if (!(c->layer_norm_eps >= 0)) RS_FAIL(RS_ERR_FORMAT, "%s: rms_norm_eps must be non-negative", path);
    RS_TRY(get_bool(&c->tie_word_embeddings, root, path, "tie_word_embeddings", 1));
    RS_TRY(get_bool(&c->attention_bias, root, path, "attention_bias", 0));
    RS_TRY(get_num(&c->query_pre_attn_scalar, root, path, "query_pre_attn_scalar", 256));
    RS_TRY(get_softcap(&c->attn_softcap, root, path, "attn_logit_softcapping", 50.0));
    RS_TRY(get_softcap(&c->final_softcap, root, path, "final_logit_softcapping", 30.0));

    if (c->n_layers < 1 || c->d_model < 1 || c->n_heads < 1 || c->n_kv_heads < 1 || c->head_dim < 1 || c->d_ff < 1 ||
        c->vocab_size < 1)
        RS_FAIL(RS_ERR_FORMAT, "%s: num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads, "
                "head_dim, intermediate_size and vocab_size must be positive", path);
    if (c->n_layers > RS_MODEL_MAX_LAYERS)
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: num_hidden_layers %d exceeds the %d supported", path, c->n_layers,
                RS_MODEL_MAX_LAYERS);
    if (c->n_heads % c->n_kv_heads)
        RS_FAIL(RS_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2)
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: head_dim %d is odd; rotate-half rotary embeddings need an even head_dim",
                path, c->head_dim);
    if ((long long)c->n_heads * c->head_dim > (1 << 24) || (long long)c->d_model > (1 << 24))
        RS_FAIL(RS_ERR_FORMAT, "%s: num_attention_heads x head_dim or hidden_size is implausibly large", path);
    if (c->max_positions < 1)
        RS_FAIL(RS_ERR_FORMAT, "%s: max_position_embeddings %d must be positive", path, c->max_positions);
    if (!(c->query_pre_attn_scalar > 0) || !isfinite(c->query_pre_attn_scalar))
        RS_FAIL(RS_ERR_FORMAT, "%s: query_pre_attn_scalar %g must be positive", path, c->query_pre_attn_scalar);
    if (c->attention_bias)
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: attention_bias true is not supported for Gemma-2 (released checkpoints have "
                "no attention biases)", path);

    /* the MLP activation: Gemma2MLP uses hidden_activation; hidden_act is the older key */
    const char *act_key = "hidden_activation";
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, act_key);
    if (!act || cJSON_IsNull(act)) {
        act_key = "hidden_act";
        act = cJSON_GetObjectItemCaseSensitive(root, act_key);
    }
    if (act && !cJSON_IsNull(act) && !cJSON_IsString(act))
        RS_FAIL(RS_ERR_FORMAT, "%s: key '%s' must be a string", path, act_key);
    snprintf(c->hidden_act, sizeof c->hidden_act, "%s", cJSON_IsString(act) ? act->valuestring : "gelu_pytorch_tanh");
    if (strcmp(c->hidden_act, "gelu_pytorch_tanh"))
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: %s '%s' is not supported (only 'gelu_pytorch_tanh')", path, act_key,
                c->hidden_act);

    /* rotary: rope_theta, or transformers v5's rope_parameters {rope_type: default, rope_theta} */
    RS_TRY(get_num(&c->rotary_base, root, path, "rope_theta", 10000.0));
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (rp && !cJSON_IsNull(rp)) {
        if (!cJSON_IsObject(rp)) RS_FAIL(RS_ERR_FORMAT, "%s: key 'rope_parameters' must be an object", path);
        const cJSON *rt = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
        if (rt && !(cJSON_IsString(rt) && !strcmp(rt->valuestring, "default")))
            RS_FAIL(RS_ERR_UNSUPPORTED, "%s: rope_parameters.rope_type '%s' is not supported (only 'default')", path,
                    cJSON_IsString(rt) ? rt->valuestring : "?");
        for (const cJSON *it = rp->child; it; it = it->next)
            if (strcmp(it->string, "rope_type") && strcmp(it->string, "rope_theta"))
                RS_FAIL(RS_ERR_UNSUPPORTED, "%s: rope_parameters.%s is not supported", path, it->string);
        RS_TRY(get_num(&c->rotary_base, rp, path, "rope_theta", c->rotary_base));
    }
    if (!(c->rotary_base > 0) || !isfinite(c->rotary_base))
        RS_FAIL(RS_ERR_FORMAT, "%s: rope_theta %g must be positive", path, c->rotary_base);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs))
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: rope_scaling is set; scaled rotary embeddings are not supported", path);
    int bidir = 0;
    RS_TRY(get_bool(&bidir, root, path, "use_bidirectional_attention", 0));
    if (bidir)
        RS_FAIL(RS_ERR_UNSUPPORTED, "%s: use_bidirectional_attention true is not supported (causal LMs only)", path);

    /* sliding-window layers: layer_types when given, else transformers' default rule
     * "sliding_attention" if (i + 1) % 2 (older versions: not bool(layer_idx % 2)): layers 0, 2, 4, ... */
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
    if (sw && cJSON_IsNull(sw)) c->sliding_window = 0;
    else {
        RS_TRY(get_int(&c->sliding_window, root, path, "sliding_window", 0, 4096));
        if (c->sliding_window < 1)
            RS_FAIL(RS_ERR_FORMAT, "%s: sliding_window %d must be positive (or null for none)", path,
                    c->sliding_window);
    }
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
    if (lt && !cJSON_IsNull(lt)) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != c->n_layers)
            RS_FAIL(RS_ERR_FORMAT, "%s: layer_types must be a list of num_hidden_layers = %d entries", path,
                    c->n_layers);
        int i = 0;
        for (const cJSON *it = lt->child; it; it = it->next, i++) {
            if (cJSON_IsString(it) && !strcmp(it->valuestring, "sliding_attention")) c->layer_sliding[i] = 1;
            else if (cJSON_IsString(it) && !strcmp(it->valuestring, "full_attention")) c->layer_sliding[i] = 0;
            else
                RS_FAIL(RS_ERR_UNSUPPORTED, "%s: layer_types[%d] must be 'sliding_attention' or 'full_attention'",
                        path, i);
        }
    } else {
        for (int i = 0; i < c->n_layers; i++) c->layer_sliding[i] = (unsigned char)((i + 1) % 2);
    }
    /* a sliding layer without a window attends to everything (transformers passes sliding_window None) */
    if (!c->sliding_window) memset(c->layer_sliding, 0, sizeof c->layer_sliding);

    c->rotary_pct = 1.0;
    c->rotary_dim = c->head_dim;
    c->parallel_residual = 0;
    c->attn_scale = pow(c->query_pre_attn_scalar, -0.5);
    /* resae computes in fp32: the normalizer is sqrt(hidden_size) rounded to fp32 (transformers casts it
     * to the activation dtype; docs/models.md) */
    c->embed_scale = (float)sqrt((double)c->d_model);
    return RS_OK;
}

/* The model class each supported model_type's checkpoints are saved from. */
static const struct {
    const char *model_type, *arch_name;
    enum rs_arch arch;
    rs_err (*parse)(rs_model_config *, const cJSON *, const char *);
} k_archs[] = {
    {"gpt_neox", "GPTNeoXForCausalLM", RS_ARCH_GPT_NEOX, parse_neox},
    {"gemma2", "Gemma2ForCausalLM", RS_ARCH_GEMMA2, parse_gemma2},
};

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
    const int n_archs = (int)(sizeof k_archs / sizeof *k_archs);
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const cJSON *a0 = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const char *name = cJSON_IsString(a0) ? a0->valuestring : NULL;
    int which = -1;
    /* model_type picks the architecture; architectures[0], when present, must be its causal-LM class */
    if (cJSON_IsString(mt)) {
        for (int i = 0; i < n_archs; i++)
            if (!strcmp(mt->valuestring, k_archs[i].model_type)) which = i;
        if (which < 0)
            RS_FAIL_GOTO(done, RS_ERR_UNSUPPORTED, "%s: model_type '%s'%s%s%s is not supported (supported: gpt_neox "
                         "GPTNeoXForCausalLM, gemma2 Gemma2ForCausalLM)", path, mt->valuestring, name ? " ('" : "",
                         name ? name : "", name ? "')" : "");
        if (name && strcmp(name, k_archs[which].arch_name))
            RS_FAIL_GOTO(done, RS_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported for model_type '%s' "
                         "(supported: %s)", path, name, mt->valuestring, k_archs[which].arch_name);
    } else if (mt && !cJSON_IsNull(mt)) {
        RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: key 'model_type' must be a string", path);
    } else {
        if (!name) RS_FAIL_GOTO(done, RS_ERR_FORMAT, "%s: neither 'model_type' nor an 'architectures' list names the "
                                "model", path);
        for (int i = 0; i < n_archs; i++)
            if (!strcmp(name, k_archs[i].arch_name)) which = i;
        if (which < 0)
            RS_FAIL_GOTO(done, RS_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (supported: "
                         "GPTNeoXForCausalLM, Gemma2ForCausalLM)", path, name);
    }
    snprintf(c->arch_name, sizeof c->arch_name, "%s", k_archs[which].arch_name);
    c->arch = k_archs[which].arch;
    RS_TRY_GOTO(k_archs[which].parse(c, root, path), done);
done:
    cJSON_Delete(root);
    return err;
}
