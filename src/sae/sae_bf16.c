/* bf16 encoder product of the SAE trainer (sae_bf16.h): bf16 copies of the weights (refreshed when
 * the trainer marks them dirty) and of each input chunk, one oneDNN matmul primitive per chunk row
 * count (and thread count), float32 output. */
#include "sae_bf16.h"

#include <cpuid.h>
#include <stdio.h>
#include <stdlib.h>

#include "resae/blas.h"
#include "resae/log.h"
#include "resae/util.h"

#ifdef RESAE_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <omp.h>
#endif

/* ---- conversion ------------------------------------------------------------------------------ */

/* The rs_bf16_round formula without a branch, so that the loop vectorizes. */
static inline void convert_body(uint16_t *restrict dst, const float *restrict src, size_t count) {
    for (size_t i = 0; i < count; i++) {
        uint32_t u;
        memcpy(&u, src + i, sizeof u);
        uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        uint32_t quiet = (u >> 16) | 0x0040u;
        dst[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
    }
}

__attribute__((target("avx512f,avx512bw"))) static void convert_avx512(uint16_t *restrict dst,
                                                                        const float *restrict src, size_t count) {
    convert_body(dst, src, count);
}

static void convert_generic(uint16_t *restrict dst, const float *restrict src, size_t count) {
    convert_body(dst, src, count);
}

void rs_bf16_convert(uint16_t *dst, const float *src, size_t count) {
    static int have_avx512 = -1;
    if (have_avx512 < 0) {
        __builtin_cpu_init();
        have_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    }
    if (have_avx512) convert_avx512(dst, src, count);
    else convert_generic(dst, src, count);
}

/* ---- what this machine and build can do -------------------------------------------------------- */

int rs_bf16_built(void) {
#ifdef RESAE_HAVE_DNNL
    return 1;
#else
    return 0;
#endif
}

static void cpu_brand(char *cpu, size_t len) {
    unsigned r[12] = {0}, a, b, c, d;
    if (!cpu || !len) return;
    snprintf(cpu, len, "unknown CPU");
    if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000004u) return;
    for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002u + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
    char s[49];
    memcpy(s, r, 48);
    s[48] = 0;
    char *p = s;
    while (*p == ' ') p++;
    size_t n = strlen(p);
    while (n > 0 && p[n - 1] == ' ') p[--n] = 0;
    if (*p) snprintf(cpu, len, "%s", p);
}

int rs_bf16_cpu_ok(char *cpu, size_t cpu_len) {
    cpu_brand(cpu, cpu_len);
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE: xgetbv usable */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    /* XCR0: SSE, AVX, opmask, ZMM_Hi256 and Hi16_ZMM state saved by the OS */
    if ((lo & 0xe6u) != 0xe6u) return 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    unsigned max_sub = a;
    if (!(b & (1u << 16)) || !(b & (1u << 30)) || max_sub < 1) return 0; /* AVX512F, AVX512BW */
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1u; /* AVX512_BF16 */
}

rs_err rs_bf16_check(void) {
    if (!rs_bf16_built())
        RS_FAIL(RS_ERR_UNSUPPORTED, "train.encoder_precision: bf16 needs oneDNN (Debian libdnnl-dev); rebuild after "
                "installing it, or use fp32");
    char cpu[64];
    if (!rs_bf16_cpu_ok(cpu, sizeof cpu))
        RS_FAIL(RS_ERR_UNSUPPORTED, "train.encoder_precision: bf16 needs a CPU with AVX512_BF16 (and an OS that saves "
                "the AVX-512 state); this %s has none; use fp32", cpu);
    return RS_OK;
}

int rs_bf16_threads(void) {
#ifdef RESAE_HAVE_DNNL
    const char *e = getenv("OMP_NUM_THREADS");
    if (e && atoi(e) > 0) return omp_get_max_threads(); /* libgomp read it at load */
#endif
    int t = rs_blas_threads();
    return t > 0 ? t : 1;
}

/* ---- the context --------------------------------------------------------------------------------- */

#ifdef RESAE_HAVE_DNNL

#define BF16_CACHE 4

typedef struct bf16_prim {
    int m, nthr;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, dst;
} bf16_prim;

struct rs_bf16_ctx {
    int max_m, n, d;
    int dirty;
    const float *w_src; /* the weights last converted */
    uint16_t *wb;       /* (n, d) bf16 weights */
    uint16_t *xb;       /* (max_m, d) bf16 input chunk */
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    bf16_prim cache[BF16_CACHE];
    int n_cache, next;
};

#define DNNL_TRY(call)                                                                                         \
    do {                                                                                                       \
        dnnl_status_t dnnl_s_ = (call);                                                                        \
        if (dnnl_s_ != dnnl_success)                                                                           \
            RS_FAIL(dnnl_s_ == dnnl_unimplemented ? RS_ERR_UNSUPPORTED : RS_ERR_INTERNAL,                      \
                    "oneDNN: %s failed: %s", #call, dnnl_status2str(dnnl_s_));                                 \
    } while (0)

static void prim_free(bf16_prim *p) {
    if (p->prim) dnnl_primitive_destroy(p->prim);
    if (p->src) dnnl_memory_destroy(p->src);
    if (p->wei) dnnl_memory_destroy(p->wei);
    if (p->dst) dnnl_memory_destroy(p->dst);
    memset(p, 0, sizeof *p);
}

static rs_err prim_make(bf16_prim *p, rs_bf16_ctx *c, int m, int nthr) {
    dnnl_memory_desc_t src_md, wei_md, dst_md;
    /* src (m, d) contiguous; weights (d, n) as the transpose of the row-major (n, d) W; dst (m, n) */
    dnnl_dims_t sdims = {m, c->d}, sstr = {c->d, 1};
    dnnl_dims_t wdims = {c->d, c->n}, wstr = {1, c->d};
    dnnl_dims_t ddims = {m, c->n}, dstr = {c->n, 1};
    DNNL_TRY(dnnl_memory_desc_init_by_strides(&src_md, 2, sdims, dnnl_bf16, sstr));
    DNNL_TRY(dnnl_memory_desc_init_by_strides(&wei_md, 2, wdims, dnnl_bf16, wstr));
    DNNL_TRY(dnnl_memory_desc_init_by_strides(&dst_md, 2, ddims, dnnl_f32, dstr));
    dnnl_matmul_desc_t md;
    DNNL_TRY(dnnl_matmul_desc_init(&md, &src_md, &wei_md, NULL, &dst_md));
    dnnl_primitive_desc_t pd;
    DNNL_TRY(dnnl_primitive_desc_create(&pd, &md, NULL, c->engine, NULL));
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    dnnl_status_t s = dnnl_primitive_create(&p->prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) RS_FAIL(RS_ERR_INTERNAL, "oneDNN: creating the bf16 matmul failed: %s", dnnl_status2str(s));
    p->m = m;
    p->nthr = nthr;
    DNNL_TRY(dnnl_memory_create(&p->src, &src_md, c->engine, c->xb));
    DNNL_TRY(dnnl_memory_create(&p->wei, &wei_md, c->engine, c->wb));
    DNNL_TRY(dnnl_memory_create(&p->dst, &dst_md, c->engine, DNNL_MEMORY_NONE));
    RS_DEBUG("bf16 encoder matmul %d x %d x %d on %d thread(s): %s", m, c->n, c->d, nthr, impl ? impl : "?");
    return RS_OK;
}

static rs_err prim_get(bf16_prim **out, rs_bf16_ctx *c, int m, int nthr) {
    for (int i = 0; i < c->n_cache; i++)
        if (c->cache[i].m == m && c->cache[i].nthr == nthr) {
            *out = &c->cache[i];
            return RS_OK;
        }
    bf16_prim *p;
    if (c->n_cache < BF16_CACHE) {
        p = &c->cache[c->n_cache++];
    } else {
        p = &c->cache[c->next];
        c->next = (c->next + 1) % BF16_CACHE;
        prim_free(p);
    }
    rs_err err = prim_make(p, c, m, nthr);
    if (err) {
        prim_free(p);
        return err;
    }
    *out = p;
    return RS_OK;
}

rs_err rs_bf16_ctx_create(rs_bf16_ctx **out, int max_m, int n, int d) {
    *out = NULL;
    RS_TRY(rs_bf16_check());
    RS_CHECK(max_m >= 1 && n >= 1 && d >= 1, RS_ERR_INVAL, "bf16 encoder: bad shape %d x %d x %d", max_m, n, d);
    rs_bf16_ctx *c = calloc(1, sizeof *c);
    RS_CHECK_ALLOC(c);
    c->max_m = max_m;
    c->n = n;
    c->d = d;
    c->dirty = 1;
    c->wb = rs_calloc_aligned((size_t)n * (size_t)d, sizeof(uint16_t));
    c->xb = rs_calloc_aligned((size_t)max_m * (size_t)d, sizeof(uint16_t));
    if (!c->wb || !c->xb) {
        rs_bf16_ctx_free(c);
        RS_FAIL(RS_ERR_NOMEM, "out of memory for the bf16 encoder copies (n=%d, d=%d, %d rows)", n, d, max_m);
    }
    dnnl_status_t s = dnnl_engine_create(&c->engine, dnnl_cpu, 0);
    if (s == dnnl_success) s = dnnl_stream_create(&c->stream, c->engine, dnnl_stream_default_flags);
    if (s != dnnl_success) {
        rs_bf16_ctx_free(c);
        RS_FAIL(RS_ERR_INTERNAL, "oneDNN: creating the CPU engine failed: %s", dnnl_status2str(s));
    }
    *out = c;
    return RS_OK;
}

void rs_bf16_ctx_free(rs_bf16_ctx *c) {
    if (!c) return;
    for (int i = 0; i < c->n_cache; i++) prim_free(&c->cache[i]);
    if (c->stream) dnnl_stream_destroy(c->stream);
    if (c->engine) dnnl_engine_destroy(c->engine);
    free(c->wb);
    free(c->xb);
    free(c);
}

void rs_bf16_mark_dirty(rs_bf16_ctx *c) {
    if (c) c->dirty = 1;
}

rs_err rs_bf16_encoder_gemm(rs_bf16_ctx *c, int m, int n, int d, const float *X, size_t ldx, const float *W,
                            float *pre) {
    RS_CHECK(c && m >= 1 && m <= c->max_m && n == c->n && d == c->d && ldx >= (size_t)d, RS_ERR_INVAL,
             "bf16 encoder: product %d x %d x %d (ldx %zu) does not fit the context (%d x %d x %d)", m, n, d, ldx,
             c ? c->max_m : 0, c ? c->n : 0, c ? c->d : 0);
    if (c->dirty || W != c->w_src) {
        rs_bf16_convert(c->wb, W, (size_t)n * (size_t)d);
        c->w_src = W;
        c->dirty = 0;
    }
    for (int r = 0; r < m; r++) rs_bf16_convert(c->xb + (size_t)r * (size_t)d, X + (size_t)r * ldx, (size_t)d);
    /* oneDNN (OpenMP build) runs on omp_get_max_threads() threads */
    int nthr = rs_bf16_threads();
    if (omp_get_max_threads() != nthr) omp_set_num_threads(nthr);
    bf16_prim *p;
    RS_TRY(prim_get(&p, c, m, nthr));
    DNNL_TRY(dnnl_memory_set_data_handle(p->dst, pre));
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, p->src}, {DNNL_ARG_WEIGHTS, p->wei}, {DNNL_ARG_DST, p->dst}};
    DNNL_TRY(dnnl_primitive_execute(p->prim, c->stream, 3, args));
    DNNL_TRY(dnnl_stream_wait(c->stream));
    return RS_OK;
}

#else /* !RESAE_HAVE_DNNL */

struct rs_bf16_ctx {
    int unused;
};

rs_err rs_bf16_ctx_create(rs_bf16_ctx **out, int max_m, int n, int d) {
    (void)max_m;
    (void)n;
    (void)d;
    *out = NULL;
    RS_TRY(rs_bf16_check());
    RS_FAIL(RS_ERR_INTERNAL, "bf16 encoder: unreachable");
}

void rs_bf16_ctx_free(rs_bf16_ctx *c) { (void)c; }

void rs_bf16_mark_dirty(rs_bf16_ctx *c) { (void)c; }

rs_err rs_bf16_encoder_gemm(rs_bf16_ctx *c, int m, int n, int d, const float *X, size_t ldx, const float *W,
                            float *pre) {
    (void)c, (void)m, (void)n, (void)d, (void)X, (void)ldx, (void)W, (void)pre;
    return rs_bf16_check();
}

#endif
