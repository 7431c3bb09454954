/* Model weights, run state and the architecture-independent forward driver. */
#include "resae/model.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "resae/kernels.h"
#include "resae/log.h"
#include "resae/safetensors.h"
#include "resae/util.h"

/* Pieces of a slab start on 64-byte boundaries. */
static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

/* ================================================================================================
 * loading
 * ================================================================================================ */

static int spec_index(const rs_tensor_spec *specs, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (specs[i].name[0] && !strcmp(specs[i].name, name)) return i;
    return -1;
}

static rs_err check_specs(const rs_safetensors *st, const rs_tensor_spec *specs, int n, const char *dir) {
    int missing = 0, first = -1;
    for (int i = 0; i < n; i++) {
        if (!specs[i].name[0]) continue;
        const rs_st_tensor *t = rs_safetensors_find(st, specs[i].name);
        if (!t) {
            if (first < 0) first = i;
            missing++;
            continue;
        }
        int same = t->ndim == specs[i].ndim;
        for (int k = 0; same && k < t->ndim; k++) same = t->shape[k] == specs[i].shape[k];
        if (!same) {
            char got[256], want[64];
            rs_st_fmt_shape(got, sizeof got, t->shape, t->ndim);
            rs_st_fmt_shape(want, sizeof want, specs[i].shape, specs[i].ndim);
            RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s%s%s%s", rs_safetensors_path(st, t),
                    t->name, got, want, specs[i].dims ? " (" : "", specs[i].dims ? specs[i].dims : "",
                    specs[i].dims ? " in config.json)" : "");
        }
        if (t->dtype != RS_ST_F32 && t->dtype != RS_ST_F16 && t->dtype != RS_ST_BF16 && t->dtype != RS_ST_F64)
            RS_FAIL(RS_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s; weights must be F32, F16 or BF16",
                    rs_safetensors_path(st, t), t->name, rs_st_dtype_name(t->dtype));
    }
    if (missing)
        RS_FAIL(RS_ERR_FORMAT, "%s: tensor '%s' is missing from the checkpoint%s (%d missing in all; is config.json "
                "the one for these weights?)", dir, specs[first].name, missing > 1 ? " among others" : "", missing);
    return RS_OK;
}

/* The per-architecture tensor tables. */
typedef struct arch_ops {
    int (*n_specs)(const rs_model_config *);
    void (*specs)(rs_tensor_spec *, rs_model *);
    int (*ignorable)(const char *);
    const char *tied_out;  /* the output matrix's name, which a tied checkpoint may still carry */
} arch_ops;

static const arch_ops *ops_of(enum rs_arch arch) {
    static const arch_ops neox = {rs_neox_n_specs, rs_neox_specs, rs_neox_ignorable, "embed_out.weight"};
    static const arch_ops gemma2 = {rs_gemma2_n_specs, rs_gemma2_specs, rs_gemma2_ignorable, "lm_head.weight"};
    switch (arch) {
    case RS_ARCH_GPT_NEOX: return &neox;
    case RS_ARCH_GEMMA2: return &gemma2;
    }
    return NULL;
}

static void warn_unexpected(const rs_safetensors *st, const rs_tensor_spec *specs, int n, const rs_model *m) {
    int shown = 0, extra = 0;
    for (int i = 0; i < st->n_tensors; i++) {
        const char *name = st->tensors[i].name;
        if (spec_index(specs, n, name) >= 0) continue;
        const arch_ops *ops = ops_of(m->cfg.arch);
        if (ops->ignorable(name)) continue;
        /* a tied checkpoint may still carry the output matrix; the input embedding is used */
        if (m->cfg.tie_word_embeddings && !strcmp(name, ops->tied_out)) continue;
        if (shown < 8) RS_WARN("%s: unexpected tensor '%s' ignored", rs_safetensors_path(st, &st->tensors[i]), name);
        else extra++;
        shown++;
    }
    if (extra) RS_WARN("%s: %d more unexpected tensors ignored", m->dir, extra);
}

const char *const rs_weights_mode_names[2] = {"mapped", "resident"};

/* The block a spec's pointer belongs to (its field's offset in rs_layer_weights), or -1. */
static int spec_block(const rs_model *m, const rs_tensor_spec *sp, size_t *field_off) {
    uintptr_t p = (uintptr_t)sp->slot, lo = (uintptr_t)m->layers;
    uintptr_t hi = (uintptr_t)(m->layers + m->cfg.n_layers);
    if (p < lo || p >= hi) return -1;
    *field_off = (size_t)(p - lo) % sizeof(rs_layer_weights);
    return (int)((size_t)(p - lo) / sizeof(rs_layer_weights));
}

/* Whether a spec's tensor is converted to fp32 at load (else, mapped, it is read from the mapping). */
static int spec_resident(const rs_model *m, const rs_tensor_spec *sp) {
    size_t field;
    if (m->mode != RS_WEIGHTS_MAPPED) return 1;
    return spec_block(m, sp, &field) < 0 && sp->slot != &m->embed && sp->slot != &m->unembed;
}

rs_err rs_model_load(rs_model *m, const char *dir, enum rs_weights_mode mode) {
    memset(m, 0, sizeof *m);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    m->mode = mode;
    RS_TRY(rs_model_config_load(&m->cfg, dir));
    const arch_ops *ops = ops_of(m->cfg.arch);
    if (!ops) RS_FAIL(RS_ERR_UNSUPPORTED, "%s: architecture '%s' has no runtime", dir, m->cfg.arch_name);

    const int mapped = mode == RS_WEIGHTS_MAPPED, L = m->cfg.n_layers;
    rs_err err = RS_OK;
    rs_tensor_spec *specs = NULL;
    rs_safetensors *st = calloc(1, sizeof *st);
    if (!st) RS_FAIL(RS_ERR_NOMEM, "out of memory");
    if ((err = rs_safetensors_open_dir(st, dir))) {
        free(st);
        return err;
    }
    if (mapped) m->st = st; /* from here on rs_model_free owns it */
    m->layers = calloc((size_t)L, sizeof *m->layers);
    if (!m->layers) RS_FAIL_GOTO(fail, RS_ERR_NOMEM, "out of memory for %d layers", L);
    if (mapped) {
        m->blocks = calloc((size_t)L, sizeof *m->blocks);
        m->block_n = calloc((size_t)L, sizeof *m->block_n);
        if (!m->blocks || !m->block_n) RS_FAIL_GOTO(fail, RS_ERR_NOMEM, "out of memory for %d layers", L);
    }
    int n = ops->n_specs(&m->cfg);
    specs = calloc((size_t)n, sizeof *specs);
    if (!specs) RS_FAIL_GOTO(fail, RS_ERR_NOMEM, "out of memory");
    ops->specs(specs, m);
    RS_TRY_GOTO(check_specs(st, specs, n, dir), fail);

    /* mapped: the blocks and an untied embedding stay in the file; the rest is fp32 here */
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!specs[i].name[0]) continue;
        const rs_st_tensor *t = rs_safetensors_find(st, specs[i].name);
        size_t field;
        int l = spec_block(m, &specs[i], &field);
        m->n_params += (size_t)t->numel;
        if (spec_resident(m, &specs[i])) {
            total += align16((size_t)t->numel);
        } else if (l >= 0) {
            if (m->block_n[l] == RS_BLOCK_MAX_TENSORS)
                RS_FAIL_GOTO(fail, RS_ERR_INTERNAL, "block %d has more than %d tensors", l, RS_BLOCK_MAX_TENSORS);
            rs_block_tensor *b = &m->blocks[l][m->block_n[l]];
            size_t at = m->block_n[l] ? b[-1].scratch_off + align16((size_t)b[-1].t->numel) : 0;
            *b = (rs_block_tensor){t, at, field};
            m->block_n[l]++;
            if (at + align16((size_t)t->numel) > m->block_floats) m->block_floats = at + align16((size_t)t->numel);
            m->mapped_bytes += (size_t)t->numel * rs_st_dtype_size(t->dtype);
        } else {
            *(specs[i].slot == &m->embed ? &m->embed_src : &m->unembed_src) = t;
            m->mapped_bytes += (size_t)t->numel * rs_st_dtype_size(t->dtype);
        }
    }
    m->slab = rs_calloc_aligned(total, sizeof(float));
    if (!m->slab) RS_FAIL_GOTO(fail, RS_ERR_NOMEM, "%s: out of memory for %zu weights (%.1f GB)", dir, total,
                               4e-9 * (double)total);
    m->n_floats = total;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!specs[i].name[0] || !spec_resident(m, &specs[i])) continue;
        const rs_st_tensor *t = rs_safetensors_find(st, specs[i].name);
        RS_TRY_GOTO(rs_st_tensor_to_f32(m->slab + off, st, t), fail);
        *specs[i].slot = m->slab + off;
        off += align16((size_t)t->numel);
    }
    if (m->cfg.tie_word_embeddings) {
        m->unembed = m->embed;
        m->unembed_src = m->embed_src;
    }
    warn_unexpected(st, specs, n, m);
    free(specs);
    if (!mapped) {
        rs_safetensors_free(st);
        free(st);
    }
    return RS_OK;
fail:
    free(specs);
    if (!mapped) {
        rs_safetensors_free(st);
        free(st);
    }
    rs_model_free(m);
    return err;
}

void rs_model_free(rs_model *m) {
    free(m->slab);
    free(m->layers);
    free(m->blocks);
    free(m->block_n);
    if (m->st) {
        rs_safetensors_free(m->st);
        free(m->st);
    }
    memset(m, 0, sizeof *m);
}

int rs_model_unembed_rows(const rs_model *m) {
    const size_t d = (size_t)m->cfg.d_model, V = (size_t)m->cfg.vocab_size;
    size_t rows = ((size_t)16 << 20) / (4 * d);
    if (rows < 1) rows = 1;
    return (int)(rows < V ? rows : V);
}

size_t rs_model_rank_floats(const rs_model *m) {
    if (m->mode != RS_WEIGHTS_MAPPED) return m->n_floats;
    return m->n_floats + m->block_floats + (size_t)rs_model_unembed_rows(m) * (size_t)m->cfg.d_model;
}

/* ================================================================================================
 * run state
 * ================================================================================================ */

/* The run state's buffers for s->max_B x s->max_T tokens, laid out in one slab: returns its size in
 * floats; given the slab, points s's buffers into it (rs_run_state_floats sizes it without one). */
static size_t state_layout(rs_run_state *s, const rs_model *m, float *slab) {
    const rs_model_config *c = &m->cfg;
    const size_t N = (size_t)s->max_B * (size_t)s->max_T, d = (size_t)c->d_model;
    const size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    const size_t n_up = c->arch == RS_ARCH_GEMMA2 ? N * (size_t)c->d_ff : 0;
    /* CE-only passes compute logits a block of rows at a time: SGEMM repacks the (V, d) output
     * matrix on every call, so blocks of >= 1000 rows (<= 256 MB of logits) keep that cheap */
    size_t lr = ((size_t)256 << 20) / (4 * (size_t)c->vocab_size);
    if (lr < 128) lr = 128;
    s->logit_rows = (int)(N < lr ? N : lr);
    s->unembed_rows = rs_model_unembed_rows(m);
    const size_t half = (size_t)(c->rotary_dim / 2);
    const size_t qb = (size_t)(s->max_T < RS_ATTN_QBLOCK ? s->max_T : RS_ATTN_QBLOCK);
    struct {
        float **p;
        size_t n;
    } parts[] = {
        {&s->h, N * d},
        {&s->xn, N * d},
        {&s->qkv, N * (qd + 2 * kvd)},
        {&s->att, N * qd},
        {&s->ff, N * (size_t)c->d_ff},
        {&s->up, n_up},
        {&s->scores, qb * (size_t)s->max_T},
        {&s->ce_tmp, (size_t)s->logit_rows},
        {(float **)&s->targets, (size_t)s->logit_rows}, /* int32 and float have the same size */
        {&s->rope_cos, (size_t)s->max_T * half},
        {&s->rope_sin, (size_t)s->max_T * half},
        {&s->block_w, m->mode == RS_WEIGHTS_MAPPED ? m->block_floats : 0},
        {&s->unembed_w, m->mode == RS_WEIGHTS_MAPPED ? (size_t)s->unembed_rows * d : 0},
    };
    const int np = (int)(sizeof parts / sizeof *parts);
    size_t off = 0;
    for (int i = 0; i < np; i++) {
        if (slab) *parts[i].p = parts[i].n ? slab + off : NULL;
        off += align16(parts[i].n);
    }
    return off;
}

size_t rs_run_state_floats(const rs_model *m, int max_B, int max_T, int ce_only) {
    rs_run_state s;
    memset(&s, 0, sizeof s);
    s.max_B = max_B;
    s.max_T = max_T;
    size_t n = state_layout(&s, m, NULL);
    return n + (ce_only ? (size_t)s.logit_rows * (size_t)m->cfg.vocab_size : 0);
}

rs_err rs_run_state_init(rs_run_state *s, const rs_model *m, int max_B, int max_T) {
    memset(s, 0, sizeof *s);
    const rs_model_config *c = &m->cfg;
    if (max_B < 1 || max_T < 1) RS_FAIL(RS_ERR_INVAL, "run state needs at least one sequence of one token");
    if (max_T > c->max_positions)
        RS_FAIL(RS_ERR_INVAL, "%s: sequence length %d exceeds max_position_embeddings %d", m->dir, max_T,
                c->max_positions);
    if ((size_t)max_B * (size_t)max_T > (size_t)INT_MAX / 4)
        RS_FAIL(RS_ERR_INVAL, "batch of %d x %d tokens is too large", max_B, max_T);
    s->max_B = max_B;
    s->max_T = max_T;
    size_t total = state_layout(s, m, NULL);
    s->slab = rs_calloc_aligned(total, sizeof(float));
    if (!s->slab)
        RS_FAIL(RS_ERR_NOMEM, "out of memory for the run state of %d x %d tokens (%.2f GB)", max_B, max_T,
                4e-9 * (double)total);
    state_layout(s, m, s->slab);
    rs_rope_tables(s->rope_cos, s->rope_sin, max_T, c->rotary_dim, c->rotary_base);
    return RS_OK;
}

void rs_run_state_free(rs_run_state *s) {
    free(s->logits);
    free(s->slab);
    memset(s, 0, sizeof *s);
}

/* ================================================================================================
 * forward
 * ================================================================================================ */

/* The per-architecture block; everything around it (embedding, hooks, final norm, logits, CE) is
 * shared. */
static void run_block(rs_run_state *s, const rs_model *m, int layer, const rs_layer_weights *w, int B, int T) {
    switch (m->cfg.arch) {
    case RS_ARCH_GPT_NEOX: rs_neox_block(s, m, layer, w, B, T); break;
    case RS_ARCH_GEMMA2: rs_gemma2_block(s, m, layer, w, B, T); break;
    }
}

/* The weights of block l: the resident views, or (mapped) the block widened from the checkpoint's
 * mapping into the run state's scratch (exact: the same fp32 values as a resident load). */
static rs_err block_weights(const rs_layer_weights **w, const rs_model *m, rs_run_state *s, int l) {
    if (m->mode != RS_WEIGHTS_MAPPED) {
        *w = &m->layers[l];
        return RS_OK;
    }
    memset(&s->block_view, 0, sizeof s->block_view);
    for (int i = 0; i < m->block_n[l]; i++) {
        const rs_block_tensor *b = &m->blocks[l][i];
        const float *view = s->block_w + b->scratch_off;
        RS_TRY(rs_st_tensor_to_f32(s->block_w + b->scratch_off, m->st, b->t));
        memcpy((char *)&s->block_view + b->field_off, &view, sizeof view);
    }
    *w = &s->block_view;
    return RS_OK;
}

/* Final norm of the stream: LayerNorm (GPT-NeoX) or RMSNorm with weight 1 + w (Gemma-2). */
static void final_norm(float *out, const float *h, const rs_model *m, int N) {
    const rs_model_config *c = &m->cfg;
    if (c->arch == RS_ARCH_GEMMA2)
        rs_rmsnorm_forward(out, h, m->final_norm_w, N, c->d_model, (float)c->layer_norm_eps, 1.0f);
    else
        rs_layernorm_forward(out, h, m->final_norm_w, m->final_norm_b, N, c->d_model, (float)c->layer_norm_eps);
}

/* Logits of `rows` normalized rows: the unembedding, then the final soft-cap where the model has one.
 * A block of s->unembed_rows vocabulary rows at a time (mapped weights widen each block into
 * s->unembed_w first), each block's logits a column block of the same (rows, V) output. */
static rs_err logits_rows(float *logits, const float *xn, const rs_model *m, rs_run_state *s, int rows) {
    const rs_model_config *c = &m->cfg;
    const int d = c->d_model, V = c->vocab_size;
    for (int v0 = 0; v0 < V; v0 += s->unembed_rows) {
        int nv = V - v0 < s->unembed_rows ? V - v0 : s->unembed_rows;
        const float *w = m->unembed + (size_t)v0 * d;
        if (!m->unembed) {
            RS_TRY(rs_st_tensor_range_to_f32(s->unembed_w, m->st, m->unembed_src, (size_t)v0 * d, (size_t)nv * d));
            w = s->unembed_w;
        }
        rs_linear_forward_ld(logits + v0, V, xn, w, rows, d, nv);
    }
    if (c->final_softcap > 0) rs_softcap_forward(logits, (size_t)rows * V, (float)c->final_softcap);
    return RS_OK;
}

static rs_err call_hook(const rs_forward_args *a, int layer, float *h, int B, int T, int d) {
    if (a->hook) RS_TRY(a->hook(a->hook_ctx, layer, h, B, T, d));
    return RS_OK;
}

/* CE of rows [r0, r0 + rows) whose logits are in `logits`; targets are the next tokens. */
static void ce_rows(float *ce, rs_run_state *s, const float *logits, const int32_t *tokens, int r0, int rows, int T,
                    int V) {
    for (int i = 0; i < rows; i++) {
        int r = r0 + i, t = r % T;
        s->targets[i] = t < T - 1 ? tokens[r + 1] : -1;
    }
    rs_ce_forward(s->ce_tmp, logits, s->targets, rows, V);
    for (int i = 0; i < rows; i++) {
        int r = r0 + i, b = r / T, t = r % T;
        if (t < T - 1) ce[(size_t)b * (T - 1) + t] = s->ce_tmp[i];
    }
}

rs_err rs_model_forward(const rs_model *m, rs_run_state *s, const rs_forward_args *a, int B, int T) {
    const rs_model_config *c = &m->cfg;
    const int L = c->n_layers, d = c->d_model, V = c->vocab_size;
    if (B < 1 || B > s->max_B || T < 1 || T > s->max_T)
        RS_FAIL(RS_ERR_INVAL, "forward pass of %d x %d tokens does not fit the run state (%d x %d)", B, T, s->max_B,
                s->max_T);
    const int stop = a->stop_layer >= L - 1 ? L - 1 : a->stop_layer;
    const int full = stop == L - 1;
    if ((a->logits || a->ce) && !full)
        RS_FAIL(RS_ERR_INVAL, "logits and CE need the full model, but the pass stops after block %d of %d", stop, L);
    if (a->ce && !a->tokens) RS_FAIL(RS_ERR_INVAL, "CE needs the tokens");
    if (!a->resid_in && a->start_layer != 0)
        RS_FAIL(RS_ERR_INVAL, "a pass starting at block %d needs the residual stream entering it", a->start_layer);
    if (a->start_layer < 0 || a->start_layer > L)
        RS_FAIL(RS_ERR_INVAL, "start layer %d is outside 0..%d", a->start_layer, L);
    if (stop < a->start_layer - 1)
        RS_FAIL(RS_ERR_INVAL, "stop layer %d is before start layer %d", a->stop_layer, a->start_layer);
    const size_t N = (size_t)B * T;
    if (a->tokens && (!a->resid_in || a->ce))
        for (size_t i = 0; i < N; i++)
            if (a->tokens[i] < 0 || a->tokens[i] >= V)
                RS_FAIL(RS_ERR_INVAL, "token id %d at sequence %zu, position %zu is outside [0, %d)", a->tokens[i],
                        i / (size_t)T, i % (size_t)T, V);

    if (!a->resid_in) {
        if (!a->tokens) RS_FAIL(RS_ERR_INVAL, "a pass from the embedding needs the tokens");
        for (size_t i = 0; i < N; i++)
            if (m->embed)
                memcpy(s->h + i * d, m->embed + (size_t)a->tokens[i] * d, (size_t)d * sizeof(float));
            else
                RS_TRY(rs_st_tensor_range_to_f32(s->h + i * d, m->st, m->embed_src, (size_t)a->tokens[i] * d, (size_t)d));
        if (c->embed_scale != 1.0f)
            for (size_t i = 0; i < N * d; i++) s->h[i] *= c->embed_scale;
        RS_TRY(call_hook(a, -1, s->h, B, T, d));
    } else {
        memmove(s->h, a->resid_in, N * d * sizeof(float));
    }
    for (int l = a->start_layer; l <= stop; l++) {
        const rs_layer_weights *w = NULL;
        RS_TRY(block_weights(&w, m, s, l));
        run_block(s, m, l, w, B, T);
        RS_TRY(call_hook(a, l, s->h, B, T, d));
    }
    if (a->resid_out) memmove(a->resid_out, s->h, N * d * sizeof(float));
    if (!full || (!a->logits && !a->ce)) return RS_OK;

    final_norm(s->xn, s->h, m, (int)N);
    if (a->logits) {
        RS_TRY(logits_rows(a->logits, s->xn, m, s, (int)N));
        if (a->ce)
            for (size_t r0 = 0; r0 < N; r0 += (size_t)s->logit_rows) {
                int rows = (int)(N - r0 < (size_t)s->logit_rows ? N - r0 : (size_t)s->logit_rows);
                ce_rows(a->ce, s, a->logits + r0 * V, a->tokens, (int)r0, rows, T, V);
            }
        return RS_OK;
    }
    /* CE only: logits a block of rows at a time, never (B, T, V) at once. The block is allocated on
     * the first such pass (passes that stop early, e.g. harvesting, never need it) and kept. */
    if (!s->logits) {
        s->logits = rs_calloc_aligned((size_t)s->logit_rows * (size_t)V, sizeof(float));
        if (!s->logits)
            RS_FAIL(RS_ERR_NOMEM, "out of memory for %d rows of logits (%.2f GB)", s->logit_rows,
                    4e-9 * (double)s->logit_rows * V);
    }
    for (size_t r0 = 0; r0 < N; r0 += (size_t)s->logit_rows) {
        int rows = (int)(N - r0 < (size_t)s->logit_rows ? N - r0 : (size_t)s->logit_rows);
        RS_TRY(logits_rows(s->logits, s->xn + r0 * d, m, s, rows));
        ce_rows(a->ce, s, s->logits, a->tokens, (int)r0, rows, T, V);
    }
    return RS_OK;
}
