/* resae forward: run a checkpoint over a token file; write per-token CE, residual streams and logits. */
#include <cblas.h>
#include <errno.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "resae/blas.h"
#include "resae/cli.h"
#include "resae/h5util.h"
#include "resae/log.h"
#include "resae/model.h"
#include "resae/mpi_util.h"
#include "resae/tokens.h"
#include "resae/version.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: resae forward --model DIR --tokens FILE --out OUT.h5 [options]\n"
            "\n"
            "Runs a Hugging Face checkpoint (GPT-NeoX / Pythia or Gemma-2, chosen by config.json's model_type)\n"
            "over fixed-length token sequences in fp32 and writes an HDF5 file with\n"
            "  /ce          float32 [n_seq, T-1]  cross-entropy of predicting token t+1 at position t\n"
            "  /resid/<L>   float32 [n_seq, T, d] residual stream after block L, before the final layer norm\n"
            "               (L = -1: the embedding output), for each layer of --layers\n"
            "  /logits      float32 [n_seq, T, vocab] with --logits\n"
            "and attributes model, tokens, format, n_seq, seq_len, mean_ce (mean over all positions), arch.\n"
            "\n"
            "options:\n"
            "  --model DIR        checkpoint directory: config.json and model.safetensors (or sharded with\n"
            "                     model.safetensors.index.json); F32, F16 or BF16 weights\n"
            "  --tokens FILE      token ids: HDF5 with dataset /tokens [n_seq, T], or a raw .bin file\n"
            "  --out OUT.h5       output file (overwritten)\n"
            "  --format F         hdf5 | bin_u16 | bin_u32 (default: from the extension; .h5/.hdf5 -> hdf5,\n"
            "                     .bin -> bin_u16)\n"
            "  --seq-len T        tokens per sequence: required for .bin files (cut into floor(n/T)\n"
            "                     sequences, a remainder is reported and ignored); for HDF5, use only the\n"
            "                     first T tokens of each stored sequence (default: all)\n"
            "  --layers LIST      comma-separated layers to save (-1..n_layers-1), or 'all'; default none\n"
            "  --logits           also save the logits (large: n_seq x T x vocab floats)\n"
            "  --batch B          sequences per forward pass (default: about 4096 tokens per pass)\n"
            "  --max-seqs N       process only the first N sequences\n"
            "  --threads N        BLAS threads (default: OPENBLAS_NUM_THREADS, else all cores / ranks)\n"
            "  --weights W        mapped (default: the blocks stay in the checkpoint's mapping, one copy per\n"
            "                     node, widened to fp32 a block at a time) or resident (all fp32 per rank);\n"
            "                     bitwise the same outputs\n"
            "  -h, --help         this text\n"
            "\n"
            "Under mpirun (or srun) the sequences are split into contiguous ranges over the ranks, which\n"
            "write their parts of the same output file (parallel HDF5).\n");
}

typedef struct {
    const char *model, *tokens, *out, *layers;
    int format, seq_len, logits, batch, threads, weights;
    long long max_seqs;
} opts;

static int parse_int(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    if (!v) {
        fprintf(stderr, "resae forward: %s needs a value\n", flag);
        return 0;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "resae forward: %s %s: expected an integer in [%lld, %lld]\n", flag, v, lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

/* Returns -1 on success, else an exit code. */
static int parse_args(opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->max_seqs = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
        if (!strcmp(a, "--model") && v) o->model = argv[++i];
        else if (!strcmp(a, "--tokens") && v) o->tokens = argv[++i];
        else if (!strcmp(a, "--out") && v) o->out = argv[++i];
        else if (!strcmp(a, "--layers") && v) o->layers = argv[++i];
        else if (!strcmp(a, "--logits")) o->logits = 1;
        else if (!strcmp(a, "--weights") && v) {
            i++;
            o->weights = -1;
            for (int k = 0; k < 2; k++)
                if (!strcmp(v, rs_weights_mode_names[k])) o->weights = k;
            if (o->weights < 0) {
                fprintf(stderr, "resae forward: --weights %s: expected mapped or resident\n", v);
                return RS_EXIT_USAGE;
            }
        }
        else if (!strcmp(a, "--format") && v) {
            o->format = rs_tokens_format_parse(argv[++i]);
            if (o->format < 0) {
                fprintf(stderr, "resae forward: --format %s: expected hdf5, bin_u16 or bin_u32\n", v);
                return RS_EXIT_USAGE;
            }
        } else if (!strcmp(a, "--seq-len")) {
            if (!parse_int(a, v, 2, 1 << 24, &x)) return RS_EXIT_USAGE;
            o->seq_len = (int)x;
            i++;
        } else if (!strcmp(a, "--batch")) {
            if (!parse_int(a, v, 1, 1 << 20, &x)) return RS_EXIT_USAGE;
            o->batch = (int)x;
            i++;
        } else if (!strcmp(a, "--max-seqs")) {
            if (!parse_int(a, v, 1, LLONG_MAX, &x)) return RS_EXIT_USAGE;
            o->max_seqs = x;
            i++;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_int(a, v, 1, 1024, &x)) return RS_EXIT_USAGE;
            o->threads = (int)x;
            i++;
        } else {
            fprintf(stderr, "resae forward: unknown or incomplete option '%s' (see resae forward --help)\n", a);
            return RS_EXIT_USAGE;
        }
    }
    if (!o->model || !o->tokens || !o->out) {
        fprintf(stderr, "resae forward: --model, --tokens and --out are required (see resae forward --help)\n");
        return RS_EXIT_USAGE;
    }
    return -1;
}

/* "all" or "a,b,c" -> sorted unique flags[l+1] for l in -1..L-1. */
static rs_err parse_layers(int *want, const char *s, int L) {
    if (!s) return RS_OK;
    if (!strcmp(s, "all")) {
        for (int l = -1; l < L; l++) want[l + 1] = 1;
        return RS_OK;
    }
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || (*end && *end != ','))
            RS_FAIL(RS_ERR_INVAL, "--layers %s: expected comma-separated integers or 'all'", s);
        if (v < -1 || v >= L)
            RS_FAIL(RS_ERR_INVAL, "--layers: layer %ld is outside -1..%d (the model has %d blocks)", v, L - 1, L);
        want[v + 1] = 1;
        p = *end ? end + 1 : end;
    }
    return RS_OK;
}

/* ---- output file ------------------------------------------------------------------------------- */

typedef struct {
    hid_t file;
    hid_t ce, logits;
    hid_t *resid;       /* (L+1) or -1 */
    int L;
    int64_t s0;         /* first sequence of the current batch */
    int T, d;
} out_file;

static rs_err write_hook(void *ctx, int layer, float *h, int B, int T, int d) {
    out_file *o = ctx;
    if (layer + 1 < 0 || layer + 1 > o->L || o->resid[layer + 1] < 0) return RS_OK;
    RS_TRY(rs_h5_write_rows(o->resid[layer + 1], H5T_NATIVE_FLOAT, o->s0, B, h));
    return RS_OK;
}

/* Collective when comm != NULL: every rank creates the same objects. */
static rs_err out_create(out_file *o, const char *path, const int *want, int L, int64_t n_seq, int T, int d, int V,
                         int logits, const MPI_Comm *comm) {
    memset(o, 0, sizeof *o);
    o->file = o->ce = o->logits = -1;
    o->L = L;
    o->T = T;
    o->d = d;
    o->resid = malloc((size_t)(L + 1) * sizeof *o->resid);
    RS_CHECK_ALLOC(o->resid);
    for (int i = 0; i <= L; i++) o->resid[i] = -1;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (comm) H5Pset_fapl_mpio(fapl, *comm, MPI_INFO_NULL);
    H5E_BEGIN_TRY { o->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl); }
    H5E_END_TRY;
    H5Pclose(fapl);
    if (o->file < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create the output file (directory missing or not writable?)", path);
    hsize_t dce[2] = {(hsize_t)n_seq, (hsize_t)(T - 1)};
    o->ce = rs_h5_dataset_create(o->file, "ce", H5T_IEEE_F32LE, 2, dce, 0, 0);
    if (o->ce < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create /ce", path);
    int any = 0;
    for (int i = 0; i <= L; i++) any |= want[i];
    if (any) {
        hid_t g = H5Gcreate2(o->file, "resid", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create /resid", path);
        hsize_t dr[3] = {(hsize_t)n_seq, (hsize_t)T, (hsize_t)d};
        for (int i = 0; i <= L; i++) {
            if (!want[i]) continue;
            char name[32];
            snprintf(name, sizeof name, "%d", i - 1);
            o->resid[i] = rs_h5_dataset_create(g, name, H5T_IEEE_F32LE, 3, dr, 0, 0);
            if (o->resid[i] < 0) {
                H5Gclose(g);
                RS_FAIL(RS_ERR_IO, "%s: cannot create /resid/%s", path, name);
            }
        }
        H5Gclose(g);
    }
    if (logits) {
        hsize_t dl[3] = {(hsize_t)n_seq, (hsize_t)T, (hsize_t)V};
        o->logits = rs_h5_dataset_create(o->file, "logits", H5T_IEEE_F32LE, 3, dl, 0, 0);
        if (o->logits < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create /logits", path);
    }
    return RS_OK;
}

static void out_close(out_file *o) {
    if (o->resid)
        for (int i = 0; i <= o->L; i++)
            if (o->resid[i] >= 0) H5Dclose(o->resid[i]);
    free(o->resid);
    o->resid = NULL;
    if (o->ce >= 0) H5Dclose(o->ce);
    if (o->logits >= 0) H5Dclose(o->logits);
    if (o->file >= 0) H5Fclose(o->file);
    o->file = o->ce = o->logits = -1;
}

/* ---- the command ------------------------------------------------------------------------------- */

/* CPU time of the process (every thread), seconds. */
static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

static int under_mpi_launcher(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("SLURM_STEP_ID");
}

/* Everything one run of the command holds; fwd_free releases it. */
typedef struct {
    rs_model m;
    rs_run_state s;
    rs_tokens tk;
    out_file out;
    int *want;                  /* (L+1) layers to save, index layer + 1 */
    int32_t *tok;               /* (B, T) */
    float *ce;                  /* (B, T-1) */
    float *logits;              /* (B, T, V) with --logits, else NULL */
    int64_t n_seq, lo, hi;      /* sequences used; this rank's share [lo, hi) */
    int T, B;
    double ce_sum, t_loop;      /* this rank's CE sum; its loop time (after fwd_run: the slowest rank's) */
} fwd;

static void fwd_reset(fwd *f) {
    memset(f, 0, sizeof *f);
    f->tk.file = f->tk.dset = -1;
    f->tk.fd = -1;
    f->out.file = f->out.ce = f->out.logits = -1;
}

static void fwd_free(fwd *f) {
    out_close(&f->out);
    rs_tokens_close(&f->tk);
    free(f->tok);
    free(f->ce);
    free(f->logits);
    free(f->want);
    rs_run_state_free(&f->s);
    rs_model_free(&f->m);
    fwd_reset(f);
}

/* Load the model and the tokens, size the batch and create the output file. Every step ends with
 * an agreement when comm is given, so all ranks stop at the same step. */
static rs_err fwd_open(fwd *f, const opts *o, const MPI_Comm *comm, int rank, int size) {
    rs_err err = rs_model_load(&f->m, o->model, (enum rs_weights_mode)o->weights);
    if (comm) err = rs_agree(err, *comm, "loading the model");
    if (err) return err;
    const int L = f->m.cfg.n_layers, d = f->m.cfg.d_model, V = f->m.cfg.vocab_size;
    f->want = calloc((size_t)L + 1, sizeof *f->want);
    err = f->want ? parse_layers(f->want, o->layers, L) : RS_ERR(RS_ERR_NOMEM, "out of memory");
    if (!err) {
        rs_tokens_opts to = {.format = o->format, .seq_len = o->seq_len, .vocab = V, .comm = comm};
        err = rs_tokens_open(&f->tk, o->tokens, &to);
    }
    if (comm) err = rs_agree(err, *comm, "opening the tokens");
    if (err) return err;
    const int T = f->T = f->tk.seq_len;
    f->n_seq = f->tk.n_seq;
    if (o->max_seqs > 0 && o->max_seqs < f->n_seq) f->n_seq = o->max_seqs;
    /* replicated values: every rank decides the same */
    RS_CHECK(T >= 2, RS_ERR_INVAL, "%s: sequences of %d token(s) have no next-token CE", o->tokens, T);
    int B = o->batch ? o->batch : (T >= 4096 ? 1 : 4096 / T);
    rs_range_share(&f->lo, &f->hi, f->n_seq, rank, size); /* this rank's contiguous share of the sequences */
    if (B > f->hi - f->lo && f->hi > f->lo) B = (int)(f->hi - f->lo);
    if (B < 1) B = 1;
    f->B = B;
    err = rs_run_state_init(&f->s, &f->m, B, T);
    if (!err) {
        f->tok = malloc((size_t)B * T * sizeof *f->tok);
        f->ce = malloc((size_t)B * (T - 1) * sizeof *f->ce);
        if (o->logits) f->logits = malloc((size_t)B * T * V * sizeof *f->logits);
        if (!f->tok || !f->ce || (o->logits && !f->logits))
            err = RS_ERR(RS_ERR_NOMEM, "out of memory for a batch of %d x %d", B, T);
    }
    if (comm) err = rs_agree(err, *comm, "allocating the batch");
    if (err) return err;
    err = out_create(&f->out, o->out, f->want, L, f->n_seq, T, d, V, o->logits, comm);
    if (comm) err = rs_agree(err, *comm, "creating the output file");
    return err;
}

/* This rank's sequences, batch by batch: forward, then its rows of /ce, /logits and /resid. */
static rs_err fwd_loop(fwd *f, int rank) {
    const int T = f->T, B = f->B;
    rs_err err = RS_OK;
    rs_progress pr;
    rs_progress_init(&pr, "forward", (double)(f->hi - f->lo) * T, "tok", rank == 0);
    const double cpu0 = cpu_seconds(), t_loop0 = rs_now();
    for (int64_t s0 = f->lo; s0 < f->hi && !err; s0 += B) {
        int nb = (int)(f->hi - s0 < B ? f->hi - s0 : B);
        err = rs_tokens_read(f->tok, &f->tk, s0, nb);
        if (err) break;
        f->out.s0 = s0;
        rs_forward_args a = RS_FORWARD_ARGS_INIT;
        a.tokens = f->tok;
        a.hook = write_hook;
        a.hook_ctx = &f->out;
        a.ce = f->ce;
        a.logits = f->logits;
        err = rs_model_forward(&f->m, &f->s, &a, nb, T);
        if (!err) err = rs_h5_write_rows(f->out.ce, H5T_NATIVE_FLOAT, s0, nb, f->ce);
        if (!err && f->logits) err = rs_h5_write_rows(f->out.logits, H5T_NATIVE_FLOAT, s0, nb, f->logits);
        for (size_t i = 0; !err && i < (size_t)nb * (T - 1); i++) f->ce_sum += f->ce[i];
        rs_progress_update(&pr, (double)(s0 + nb - f->lo) * T);
    }
    if (!err) {
        rs_progress_finish(&pr);
        double cpu = cpu_seconds() - cpu0;
        RS_INFO("forward: %.2f s of CPU time in the loop (all threads of rank 0), %.1f tok per CPU second", cpu,
                cpu > 0 ? (double)(f->hi - f->lo) * T / cpu : 0.0);
    }
    f->t_loop = rs_now() - t_loop0;
    return err;
}

/* The file's attributes (collective under MPI: every rank writes the same values). */
static rs_err fwd_attrs(const fwd *f, const opts *o, double mean) {
    hid_t file = f->out.file;
    RS_TRY(rs_h5_attr_str(file, "model", o->model));
    RS_TRY(rs_h5_attr_str(file, "tokens", o->tokens));
    RS_TRY(rs_h5_attr_str(file, "format", rs_tokens_format_name(f->tk.format)));
    RS_TRY(rs_h5_attr_str(file, "arch", f->m.cfg.arch_name));
    RS_TRY(rs_h5_attr_str(file, "resae_version", RESAE_VERSION));
    RS_TRY(rs_h5_attr_i64(file, "n_seq", f->n_seq));
    RS_TRY(rs_h5_attr_i32(file, "seq_len", f->T));
    RS_TRY(rs_h5_attr_f64(file, "mean_ce", mean));
    return RS_OK;
}

/* Open, loop, reduce the CE and the loop time over the ranks, write the attributes. */
static rs_err fwd_run(fwd *f, const opts *o, const MPI_Comm *comm, int rank, int size) {
    RS_TRY(fwd_open(f, o, comm, rank, size));
    const int T = f->T;
    RS_INFO("forward: %s (%s, %d layers, d=%d, weights %s) over %lld sequences of %d tokens from %s; batch %d, "
            "%d rank(s), %d BLAS thread(s), kernels %s", o->model, f->m.cfg.arch_name, f->m.cfg.n_layers,
            f->m.cfg.d_model, rs_weights_mode_names[f->m.mode], (long long)f->n_seq, T, o->tokens, f->B, size,
            rs_blas_threads(), rs_blas_corename());
    rs_err err = fwd_loop(f, rank);
    /* the loop of the slowest rank: the time all sequences took (start-up and output excluded) */
    if (comm) {
        err = rs_agree(err, *comm, "the forward loop");
        double local = f->ce_sum;
        MPI_Allreduce(&local, &f->ce_sum, 1, MPI_DOUBLE, MPI_SUM, *comm);
        local = f->t_loop;
        MPI_Allreduce(&local, &f->t_loop, 1, MPI_DOUBLE, MPI_MAX, *comm);
    }
    if (err) return err;
    RS_INFO("forward: %lld tok on %d rank(s) in %.2fs (the slowest rank's loop): %.1f tok/s", (long long)f->n_seq * T,
            size, f->t_loop, f->t_loop > 0 ? (double)f->n_seq * T / f->t_loop : 0.0);
    double mean = f->ce_sum / ((double)f->n_seq * (T - 1));
    err = fwd_attrs(f, o, mean);
    if (comm) err = rs_agree(err, *comm, "writing the output attributes");
    if (err) return err;
    RS_INFO("forward: mean CE %.6f over %lld x %d positions; wrote %s", mean, (long long)f->n_seq, T - 1, o->out);
    return RS_OK;
}

int rs_cmd_forward(int argc, char **argv) {
    if (rs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return RS_EXIT_OK;
    }
    opts o;
    int rc = parse_args(&o, argc, argv);
    if (rc >= 0) return rc;

    const int use_mpi = under_mpi_launcher();
    int rank = 0, size = 1;
    MPI_Comm comm = MPI_COMM_WORLD;
    if (use_mpi) {
        if (rs_mpi_begin(&argc, &argv)) return rs_cli_fail();
        rank = rs_mpi_rank();
        size = rs_mpi_size();
    } else if (!getenv("OPENBLAS_NUM_THREADS")) {
        rs_blas_set_threads_for_ranks(1);
    }
    if (o.threads) openblas_set_num_threads(o.threads);

    fwd f;
    fwd_reset(&f);
    rs_err err = fwd_run(&f, &o, use_mpi ? &comm : NULL, rank, size);
    fwd_free(&f);
    if (use_mpi) rs_mpi_end();
    return err ? rs_cli_fail() : RS_EXIT_OK;
}
