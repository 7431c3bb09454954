/* One SAE training run of the recipe study (tests/bench/sae_recipe.sh): trains on a row stream and
 * prints the held-out FVU and dead fractions at evenly spaced points of the run.
 *   sae_recipe DATA_DIR [options]     rows from DATA_DIR/{train,eval}.f32 (sae_recipe_data.py)
 *   sae_recipe --synth D M K_TRUE [options]   the known-dictionary source of tests/sae/sae_synth.h
 * Options: --n N --k K --batch B --tokens T --lr LR (0: auto) --warmup W --decay F --dead-tokens D
 *          --alpha-aux A --enc-init tied|data|openai|sparsify --bdec geometric_median|mean|zero
 *          --aux-norm residual|input --points P --seed S --eval-rows R --encoder-precision fp32|bf16
 * Output lines:
 *   curve TOKENS FVU_EVAL DEAD_TRAIN
 *   final tokens T fvu_eval F fvu_train_tail F dead_train X dead_eval Y [recovered R] init_fvu F0 seconds S
 * DEAD_TRAIN is the trainer's dead fraction (no firing for dead_tokens); dead_eval the fraction of
 * latents that never fire on the eval rows; recovered (synthetic only) the fraction of true atoms
 * whose best decoder row has cosine > 0.9. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/log.h"
#include "resae/sae.h"
#include "resae/util.h"
#include "sae/sae_synth.h"

typedef struct rows_src {
    float *rows;
    int64_t n;
    int d;
} rows_src;

static rs_err rows_read(void *ctx, float *out, int64_t first, int n) {
    rows_src *p = ctx;
    for (int r = 0; r < n; r++)
        memcpy(out + (size_t)r * p->d, p->rows + (size_t)((first + r) % p->n) * p->d, sizeof(float) * (size_t)p->d);
    return RS_OK;
}

static float *read_f32(const char *dir, const char *name, int64_t n, int d) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "sae_recipe: cannot open %s\n", path);
        return NULL;
    }
    float *b = malloc(sizeof(float) * (size_t)n * (size_t)d);
    if (b && fread(b, sizeof(float) * (size_t)d, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "sae_recipe: %s is shorter than %lld rows of %d\n", path, (long long)n, d);
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

static int pick(const char *const *names, int count, const char *v, const char *flag) {
    for (int i = 0; i < count; i++)
        if (!strcmp(names[i], v)) return i;
    fprintf(stderr, "sae_recipe: unknown %s value '%s'\n", flag, v);
    exit(2);
}

/* held-out FVU and the fraction of latents that never fire on the rows */
static int eval_sae(double *fvu, double *dead, const rs_sae *sae, const float *ev, int64_t m) {
    int d = sae->d, n = sae->n_latents, k = sae->k;
    float *xh = malloc(sizeof(float) * (size_t)m * (size_t)d);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)m * (size_t)k);
    float *val = malloc(sizeof(float) * (size_t)m * (size_t)k);
    unsigned char *fired = calloc((size_t)n, 1);
    double *mu = calloc((size_t)d, sizeof(double));
    if (!xh || !idx || !val || !fired || !mu) return 1;
    if (rs_sae_encode(idx, val, sae, ev, m)) return 1;
    rs_sae_decode(xh, sae, idx, val, m);
    for (int64_t t = 0; t < m * k; t++)
        if (idx[t] >= 0 && val[t] > 0) fired[idx[t]] = 1;
    for (int64_t r = 0; r < m; r++)
        for (int i = 0; i < d; i++) mu[i] += ev[r * d + i];
    for (int i = 0; i < d; i++) mu[i] /= (double)m;
    double sse = 0, var = 0;
    for (int64_t r = 0; r < m; r++)
        for (int i = 0; i < d; i++) {
            double e = (double)ev[r * d + i] - xh[r * d + i], c = (double)ev[r * d + i] - mu[i];
            sse += e * e;
            var += c * c;
        }
    int nd = 0;
    for (int j = 0; j < n; j++) nd += !fired[j];
    *fvu = sse / var;
    *dead = (double)nd / n;
    free(xh);
    free(idx);
    free(val);
    free(fired);
    free(mu);
    return 0;
}

/* fraction of the true atoms with a decoder row at cosine > 0.9 (decoder rows are unit norm) */
static double recovered(const rs_sae *sae, const synth *s) {
    int hit = 0;
    for (int a = 0; a < s->M; a++) {
        double best = -1;
        for (int j = 0; j < sae->n_latents; j++) {
            double c = 0;
            for (int i = 0; i < s->d; i++) c += (double)s->atoms[(size_t)a * s->d + i] * sae->p.W_dec[(size_t)j * s->d + i];
            if (c > best) best = c;
        }
        hit += best > 0.9;
    }
    return (double)hit / s->M;
}

int main(int argc, char **argv) {
    rs_log_init(0);
    if (argc < 2) {
        fprintf(stderr, "usage: sae_recipe DATA_DIR|--synth D M K_TRUE [options] (see the source's header)\n");
        return 2;
    }
    const char *dir = NULL;
    int synth_d = 0, synth_m = 0, synth_k = 0, ai = 1;
    if (!strcmp(argv[1], "--synth")) {
        if (argc < 5) return 2;
        synth_d = atoi(argv[2]);
        synth_m = atoi(argv[3]);
        synth_k = atoi(argv[4]);
        ai = 5;
    } else {
        dir = argv[1];
        ai = 2;
    }
    int n = 256, k = 8, batch = 1024, points = 20;
    int64_t tokens = 2380000, dead_tokens = 0, eval_rows = 30000, warmup = -1;
    double lr = 0.004, decay = 0.2, alpha_aux = 1.0 / 32;
    int enc = RS_SAE_ENC_TIED, bdec = RS_SAE_BDEC_GEOMEDIAN, auxn = RS_SAE_AUX_RESIDUAL, prec = RS_SAE_PREC_FP32;
    uint64_t seed = 1;
    for (int i = ai; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "sae_recipe: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--n")) n = atoi(v);
        else if (!strcmp(a, "--k")) k = atoi(v);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--tokens")) tokens = atoll(v);
        else if (!strcmp(a, "--lr")) lr = atof(v);
        else if (!strcmp(a, "--warmup")) warmup = atoll(v);
        else if (!strcmp(a, "--decay")) decay = atof(v);
        else if (!strcmp(a, "--dead-tokens")) dead_tokens = atoll(v);
        else if (!strcmp(a, "--alpha-aux")) alpha_aux = atof(v);
        else if (!strcmp(a, "--points")) points = atoi(v);
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--eval-rows")) eval_rows = atoll(v);
        else if (!strcmp(a, "--enc-init")) enc = pick(rs_sae_enc_init_names, RS_SAE_ENC_COUNT, v, a);
        else if (!strcmp(a, "--bdec")) bdec = pick(rs_sae_bdec_init_names, RS_SAE_BDEC_COUNT, v, a);
        else if (!strcmp(a, "--aux-norm")) auxn = pick(rs_sae_aux_norm_names, RS_SAE_AUX_COUNT, v, a);
        else if (!strcmp(a, "--encoder-precision")) prec = pick(rs_sae_precision_names, RS_SAE_PREC_COUNT, v, a);
        else {
            fprintf(stderr, "sae_recipe: unknown option %s\n", a);
            return 2;
        }
    }
    int d;
    rows_src src_rows = {0};
    float *ev = NULL;
    synth s = {0};
    int64_t n_eval;
    if (dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/shape.txt", dir);
        FILE *f = fopen(path, "r");
        long long nt, ne;
        if (!f || fscanf(f, "%lld %lld %d", &nt, &ne, &d) != 3) {
            fprintf(stderr, "sae_recipe: cannot read %s (write it with sae_recipe_data.py)\n", path);
            return 1;
        }
        fclose(f);
        n_eval = ne < eval_rows ? ne : eval_rows;
        src_rows.n = nt;
        src_rows.d = d;
        if (!(src_rows.rows = read_f32(dir, "train.f32", nt, d)) || !(ev = read_f32(dir, "eval.f32", n_eval, d))) return 1;
    } else {
        d = synth_d;
        if (synth_init(&s, d, synth_m, synth_k, 0.05, 11)) return 1;
        /* a fixed pool of distinct rows, like a real train split; eval rows come after it */
        int64_t pool = tokens < 2000000 ? tokens : 2000000;
        n_eval = eval_rows;
        src_rows.rows = malloc(sizeof(float) * (size_t)(pool + n_eval) * (size_t)d);
        if (!src_rows.rows) return 1;
        synth_read(&s, src_rows.rows, 0, (int)(pool + n_eval));
        src_rows.n = pool;
        src_rows.d = d;
        ev = src_rows.rows + (size_t)pool * d;
    }
    rs_sae_source src = {rows_read, &src_rows};
    rs_sae sae;
    if (rs_sae_init(&sae, d, n, k)) return 1;
    rs_sae_config cfg;
    rs_sae_config_default(&cfg, d, n, k);
    cfg.batch = batch;
    cfg.steps = tokens / batch;
    cfg.lr = lr;
    cfg.warmup_steps = warmup;
    cfg.decay_frac = decay;
    cfg.alpha_aux = alpha_aux;
    cfg.dead_tokens = dead_tokens > 0 ? dead_tokens : (tokens / 10 < 10000000 ? tokens / 10 : 10000000);
    cfg.enc_init = enc;
    cfg.bdec_init = bdec;
    cfg.aux_norm = auxn;
    cfg.encoder_precision = prec;
    cfg.seed = seed;
    rs_sae_trainer t;
    if (rs_sae_trainer_init(&t, &sae, &cfg, MPI_COMM_NULL) || rs_sae_trainer_init_params(&t, src)) {
        rs_err_print();
        return 1;
    }
    double f0, dz;
    if (eval_sae(&f0, &dz, &sae, ev, n_eval)) return 1;
    double t0 = rs_now(), tail = 0;
    int64_t ntail = cfg.steps / 10 > 0 ? cfg.steps / 10 : 1;
    rs_sae_step_stats st = {0};
    for (int64_t step = 0; step < cfg.steps; step++) {
        if (rs_sae_trainer_step(&t, &st, src)) {
            rs_err_print();
            return 1;
        }
        if (step >= cfg.steps - ntail) tail += st.fvu / ntail;
        int64_t p = (step + 1) * points / cfg.steps, pp = step * points / cfg.steps;
        if (p != pp || step == 0) {
            double fe, de;
            if (eval_sae(&fe, &de, &sae, ev, n_eval)) return 1;
            printf("curve %lld %.6f %.4f\n", (long long)((step + 1) * batch), fe, st.dead_frac);
            fflush(stdout);
        }
    }
    double fe, de;
    if (eval_sae(&fe, &de, &sae, ev, n_eval)) return 1;
    printf("final tokens %lld fvu_eval %.6f fvu_train_tail %.6f dead_train %.4f dead_eval %.4f", (long long)(cfg.steps * batch),
           fe, tail, st.dead_frac, de);
    if (!dir) printf(" recovered %.4f", recovered(&sae, &s));
    printf(" init_fvu %.6f seconds %.1f\n", f0, rs_now() - t0);
    rs_sae_trainer_free(&t);
    rs_sae_free(&sae);
    if (dir) free(ev);
    else synth_free(&s);
    free(src_rows.rows);
    return 0;
}
