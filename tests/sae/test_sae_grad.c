/* TopK SAE loss and gradient checks on a tiny model (d=6, n=24, k=3, half the latents dead):
 *  1. the dense double reference gradient (FVU + AuxK, e held constant) equals central finite
 *     differences of the reference loss, for every parameter;
 *  2. the float loss of the trainer equals the reference loss;
 *  3. the sparse backward equals the dense reference backward;
 *  4. encode/decode/reconstruct agree with the reference forward; rows with fewer than k positive
 *     pre-activations give idx -1 slots;
 *  5. the top-k selection on wide rows (n=8192, k=64; row scales that vary 50x so the carried
 *     threshold over- and undershoots; quantized values with many ties) equals a full-sort
 *     reference: same set, ties to the smaller id, ascending order;
 *  6. train.aux_norm = input (sparsify's normaliser, with fewer dead latents than k_aux so that
 *     min(n_dead / k_aux, 1) < 1): loss and sparse gradient equal the reference's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/sae/sae_kern.h"
#include "resae/sae.h"
#include "sae/sae_ref_dense.h"

#include "testlib.h"



enum { D = 6, N = 24, K = 3, B = 16 };


int main(void) {
    ref_rng_state = 12345ULL;
    rs_sae sae;
    if (rs_sae_init(&sae, D, N, K)) return 1;
    /* untied random parameters (W_dec unit rows) so the encoder and decoder paths differ */
    for (int j = 0; j < N; j++) {
        double s = 0;
        for (int i = 0; i < D; i++) {
            sae.p.W_dec[j * D + i] = (float)ref_nrand();
            s += sae.p.W_dec[j * D + i] * sae.p.W_dec[j * D + i];
        }
        for (int i = 0; i < D; i++) sae.p.W_dec[j * D + i] /= (float)sqrt(s);
        for (int i = 0; i < D; i++) sae.p.W_enc[j * D + i] = (float)(0.6 * ref_nrand());
        sae.p.b_enc[j] = (float)(0.3 * ref_nrand());
    }
    for (int i = 0; i < D; i++) sae.p.b_dec[i] = (float)(0.2 * ref_nrand());
    float x[B * D];
    for (int q = 0; q < B * D; q++) x[q] = (float)(ref_nrand() + 0.5);

    rs_sae_config cfg;
    rs_sae_config_default(&cfg, D, N, K);
    cfg.batch = B;
    cfg.alpha_aux = 0.25; /* weight AuxK enough that an error in its gradient shows */
    cfg.dead_tokens = 100;
    cfg.chunk_rows = 5;   /* several GEMM chunks, the last one partial */
    rs_sae_trainer tr;
    if (rs_sae_trainer_init(&tr, &sae, &cfg, MPI_COMM_NULL)) return 1;
    unsigned char dead[N] = {0};
    for (int j = 0; j < N; j += 2) {
        dead[j] = 1;
        tr.since_fired[j] = 100;
    }
    rs_sae_step_stats st;
    if (rs_sae_trainer_loss_grad(&tr, &st, x, B)) {
        rs_err_print();
        return 1;
    }

    /* ---- reference ---- */
    ref_sae m = {D, N, K, NULL, NULL, NULL, NULL};
    size_t np = sae.n_params;
    double *pd = calloc(np, sizeof(double)), *gd = calloc(np, sizeof(double));
    for (size_t i = 0; i < np; i++) pd[i] = sae.slab[i];
    m.We = pd;
    m.be = pd + N * D;
    m.Wd = pd + N * D + N;
    m.bd = pd + 2 * N * D + N;
    double xd[B * D], e0[B * D], fvu, auxk;
    for (int q = 0; q < B * D; q++) xd[q] = x[q];
    int k_aux = D / 2;
    double L0 = ref_loss(&m, xd, B, dead, k_aux, cfg.alpha_aux, NULL, e0, &fvu, &auxk, gd, gd + N * D,
                         gd + N * D + N, gd + 2 * N * D + N);
    printf("loss %.8f (ref %.8f) fvu %.6f auxk %.6f l0 %.2f n_dead %d\n", st.loss, L0, st.fvu, st.auxk, st.l0, st.n_dead);
    CHECK(auxk > 0.01, "AuxK is %g: the test needs active dead latents", auxk);
    CHECK(fabs(st.loss - L0) <= 1e-5 * fabs(L0), "loss %.9g vs reference %.9g", st.loss, L0);
    CHECK(fabs(st.fvu - fvu) <= 1e-5 * fabs(fvu), "fvu %.9g vs reference %.9g", st.fvu, fvu);
    CHECK(fabs(st.auxk - auxk) <= 1e-5 * fabs(auxk), "auxk %.9g vs reference %.9g", st.auxk, auxk);

    /* 1. finite differences of the reference (e fixed at the base point) */
    double fd_err = 0, gmax = 0;
    for (size_t i = 0; i < np; i++) {
        double h = 1e-6, keep = pd[i], lp, lm, f1, a1;
        pd[i] = keep + h;
        lp = ref_loss(&m, xd, B, dead, k_aux, cfg.alpha_aux, e0, NULL, &f1, &a1, NULL, NULL, NULL, NULL);
        pd[i] = keep - h;
        lm = ref_loss(&m, xd, B, dead, k_aux, cfg.alpha_aux, e0, NULL, &f1, &a1, NULL, NULL, NULL, NULL);
        pd[i] = keep;
        double fd = (lp - lm) / (2 * h);
        if (fabs(fd - gd[i]) > fd_err) fd_err = fabs(fd - gd[i]);
        if (fabs(gd[i]) > gmax) gmax = fabs(gd[i]);
    }
    printf("finite differences: max |fd - grad| = %.3g (max |grad| %.3g)\n", fd_err, gmax);
    CHECK(fd_err <= 1e-6 * gmax + 1e-9, "reference gradient differs from finite differences by %.3g", fd_err);

    /* 3. sparse float backward against the dense reference */
    double gerr[4];
    ref_grad_block_errors(gerr, tr.grad_slab, gd, N, D);
    for (int b = 0; b < 4; b++) CHECK(gerr[b] < 2e-5, "sparse gradient of %s differs from the dense reference: %.3g", ref_block_names[b], gerr[b]);
    /* the dead latents receive AuxK gradient */
    double dead_g = 0;
    for (int j = 0; j < N; j += 2) dead_g += fabs(gd[N * D + j]);
    CHECK(dead_g > 0, "no gradient reached a dead latent");

    /* 4. inference API */
    int32_t idx[B * K];
    float val[B * K], xh[B * D], xh2[B * D];
    if (rs_sae_encode(idx, val, &sae, x, B)) return 1;
    rs_sae_decode(xh, &sae, idx, val, B);
    if (rs_sae_reconstruct(xh2, &sae, x, B)) return 1;
    double sse = 0;
    for (int q = 0; q < B * D; q++) {
        CHECK(xh[q] == xh2[q], "decode(encode) differs from reconstruct at %d", q);
        double r = x[q] - xh[q];
        sse += r * r;
    }
    double Dx = fvu > 0 ? 0 : 1;
    { /* sse must match the reference forward: fvu * D_x */
        double mu[D] = {0};
        for (int t = 0; t < B; t++)
            for (int i = 0; i < D; i++) mu[i] += xd[t * D + i] / B;
        for (int t = 0; t < B; t++)
            for (int i = 0; i < D; i++) Dx += (xd[t * D + i] - mu[i]) * (xd[t * D + i] - mu[i]);
    }
    CHECK(fabs(sse / Dx - fvu) < 1e-5 * fvu, "reconstruct fvu %.9g vs reference %.9g", sse / Dx, fvu);
    /* a row with every pre-activation negative: all slots empty */
    float neg[D];
    for (int i = 0; i < D; i++) neg[i] = sae.p.b_dec[i];
    float save_be[N];
    memcpy(save_be, sae.p.b_enc, sizeof save_be);
    for (int j = 0; j < N; j++) sae.p.b_enc[j] = (j == 5) ? 1.0f : -1.0f;
    if (rs_sae_encode(idx, val, &sae, neg, 1)) return 1;
    int n_on = 0, n_empty = 0;
    for (int s = 0; s < K; s++) {
        if (idx[s] == 5 && val[s] == 1.0f) n_on++;
        if (idx[s] == -1 && val[s] == 0.0f) n_empty++;
    }
    CHECK(n_on == 1 && n_empty == K - 1, "expected one active latent and %d empty slots, got %d and %d", K - 1, n_on,
          n_empty);
    memcpy(sae.p.b_enc, save_be, sizeof save_be);

    /* 5. wide-row top-k against a full sort */
    {
        enum { NW = 8192, KW = 64, RW = 120 };
        float *row = malloc(sizeof(float) * NW), *bias = calloc(NW, sizeof(float)), *scr = malloc(sizeof(float) * 4 * NW);
        int32_t ti[KW], *ord = malloc(sizeof(int32_t) * NW);
        float tv[KW], hint = 0.0f;
        int bad = 0;
        for (int r = 0; r < RW && row && bias && scr && ord; r++) {
            double scale = exp(4.0 * (ref_urand() - 0.5)); /* 0.14x .. 7.4x */
            int quant = r % 3 == 0;
            for (int j = 0; j < NW; j++) {
                double v = scale * ref_nrand() - (r % 7 == 0 ? 3.5 * scale : 0.0); /* some rows: < k positives */
                row[j] = quant ? (float)(floor(v * 4) / 4) : (float)v;
                bias[j] = 0.0f;
            }
            rs_sae_topk_row(ti, tv, row, bias, NW, KW, &hint, scr);
            /* reference: positives ordered by (value desc, id asc), the first KW, then by id */
            int np_ = 0;
            for (int j = 0; j < NW; j++)
                if (row[j] > 0) ord[np_++] = j;
            for (int a = 1; a < np_; a++) { /* insertion sort is fine for a test */
                int32_t xa = ord[a];
                int b = a - 1;
                while (b >= 0 && (row[ord[b]] < row[xa] || (row[ord[b]] == row[xa] && ord[b] > xa))) {
                    ord[b + 1] = ord[b];
                    b--;
                }
                ord[b + 1] = xa;
            }
            int msel = np_ < KW ? np_ : KW;
            unsigned char *sel = calloc(NW, 1);
            for (int q = 0; q < msel; q++) sel[ord[q]] = 1;
            int q = 0;
            for (int j = 0; j < NW && q < KW; j++)
                if (sel[j]) {
                    if (ti[q] != j || tv[q] != row[j]) bad++;
                    q++;
                }
            for (; q < KW; q++)
                if (ti[q] != -1 || tv[q] != 0.0f) bad++;
            free(sel);
        }
        CHECK(bad == 0, "wide-row top-k differs from the full-sort reference in %d slots", bad);
        printf("wide-row top-k (n=%d, k=%d, %d rows): %s\n", NW, KW, RW, bad ? "MISMATCH" : "equal to the reference");
        free(row);
        free(bias);
        free(scr);
        free(ord);
    }

    /* 6. the input-variance AuxK normaliser */
    {
        rs_sae_config ci = cfg;
        ci.aux_norm = RS_SAE_AUX_INPUT;
        rs_sae_trainer ti;
        if (rs_sae_trainer_init(&ti, &sae, &ci, MPI_COMM_NULL)) return 1;
        unsigned char dead2[N] = {0};
        dead2[0] = dead2[2] = 1; /* 2 dead of k_aux = 3 */
        ti.since_fired[0] = ti.since_fired[2] = 100;
        rs_sae_step_stats si;
        if (rs_sae_trainer_loss_grad(&ti, &si, x, B)) {
            rs_err_print();
            return 1;
        }
        memset(gd, 0, np * sizeof(double));
        ref_aux_input_norm = 1;
        double fvu2, auxk2;
        double L2 = ref_loss(&m, xd, B, dead2, k_aux, ci.alpha_aux, NULL, NULL, &fvu2, &auxk2, gd, gd + N * D,
                             gd + N * D + N, gd + 2 * N * D + N);
        ref_aux_input_norm = 0;
        printf("aux_norm=input: loss %.8f (ref %.8f) auxk %.6f (ref %.6f), n_dead %d\n", si.loss, L2, si.auxk, auxk2,
               si.n_dead);
        CHECK(si.n_dead == 2 && auxk2 > 0.01, "the case needs 2 active dead latents (n_dead %d, auxk %g)", si.n_dead, auxk2);
        CHECK(fabs(si.loss - L2) <= 1e-5 * fabs(L2), "aux_norm=input loss %.9g vs reference %.9g", si.loss, L2);
        CHECK(fabs(si.auxk - auxk2) <= 1e-5 * fabs(auxk2), "aux_norm=input auxk %.9g vs reference %.9g", si.auxk, auxk2);
        ref_grad_block_errors(gerr, ti.grad_slab, gd, N, D);
        for (int b = 0; b < 4; b++)
            CHECK(gerr[b] < 2e-5, "aux_norm=input: gradient of %s differs from the reference: %.3g", ref_block_names[b], gerr[b]);
        rs_sae_trainer_free(&ti);
    }

    free(pd);
    free(gd);
    rs_sae_trainer_free(&tr);
    rs_sae_free(&sae);
    printf("%s\n", rs_check_fails ? "FAILED" : "ok");
    return rs_check_fails ? 1 : 0;
}
