/* TPP (tpp.h) against tests/reference/tpp_ref.py's numpy implementation on its committed fixture
 * (tests/data/tpp/tpp_fixture.h5):
 *   - the probes: weights and bias within 1e-8 (relative to their scale), accuracy and kept epoch exact;
 *   - effects through the affine chain within 1e-9 relative; the single, global and per-layer joint
 *     selections exact;
 *   - TPP (intended, unintended, tpp) of every budget kind, their interactions and the local control
 *     within 1e-6, where the model between the layers is the affine chain (so an ablation at layer m
 *     moves pooled h at the probe layer by -zh J_m d; this test applies that map, the library does the
 *     rest);
 * and the exactness properties: an empty ablation set gives TPP = 0 exactly; with one layer, the
 * global and per-layer joint sets are the single-layer set; the joint shares sum to N, deepest first.
 * usage: test_tpp FIXTURE_H5 */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resae/h5util.h"
#include "resae/tpp.h"
#include "testlib.h"

#define TRY(e)                                                                                                         \
    do {                                                                                                               \
        if (e) {                                                                                                       \
            rs_err_print();                                                                                            \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

enum { M = 3, D = 6, NL = 20, C = 3, NB = 3 };

static hid_t g_f;

static void *rd(const char *name, hid_t type, size_t elem, size_t *n_out) {
    hid_t ds = H5Dopen2(g_f, name, H5P_DEFAULT);
    if (ds < 0) {
        fprintf(stderr, "fixture has no %s\n", name);
        exit(1);
    }
    hid_t sp = H5Dget_space(ds);
    size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
    void *v = malloc(elem * n + 1);
    if (!v || H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) exit(1);
    H5Sclose(sp);
    H5Dclose(ds);
    if (n_out) *n_out = n;
    return v;
}

static float *H, *Z, *W;
static double *A, *J; // A (M, D, D); J (M, D, D) = A_{M-1} ... A_{m+1}
static int n_w;
static rs_probe_task task[C];
static rs_tpp_probe probe[M][C];

static const float *Hm(int m) { return H + (size_t)m * (size_t)n_w * D; }
static const float *Zm(int m) { return Z + (size_t)m * (size_t)n_w * NL; }
static const float *Wm(int m) { return W + (size_t)m * NL * D; }

/* Accuracies of the probes at layer pl after ablating the latents F (lists per layer), propagated to
 * pl by J (transfer) or not. */
static void acc_after(double *acc, int pl, int transfer, int32_t *const *F, const int *n) {
    float x[D];
    for (int j = 0; j < C; j++) {
        const rs_probe_task *t = &task[j];
        int ok = 0;
        for (int r = 0; r < t->n_test; r++) {
            int w = t->test[r];
            double h[D];
            for (int q = 0; q < D; q++) h[q] = Hm(pl)[(size_t)w * D + q];
            for (int m = 0; m < M; m++)
                for (int s = 0; s < n[m]; s++) {
                    int f = F[m][s];
                    double zf = Zm(m)[(size_t)w * NL + f], g[D];
                    for (int q = 0; q < D; q++) {
                        g[q] = 0;
                        if (!transfer) g[q] = Wm(m)[f * D + q];
                        else
                            for (int u = 0; u < D; u++) g[q] += J[((size_t)m * D + q) * D + u] * Wm(m)[f * D + u];
                        h[q] -= zf * g[q];
                    }
                }
            for (int q = 0; q < D; q++) x[q] = (float)h[q];
            /* the reference evaluates in double; x is rounded to float as pooled features are */
            double z = probe[pl][j].b;
            for (int q = 0; q < D; q++) z += probe[pl][j].w[q] * h[q];
            (void)x;
            ok += (z > 0) == (t->y_test[r] == 1);
        }
        acc[j] = (double)ok / t->n_test;
    }
}

static void tpp_of(double out[3], int pl, int transfer, int32_t *const *F, const int *n, int i) {
    double a[C], ab[C];
    for (int j = 0; j < C; j++) a[j] = probe[pl][j].accuracy;
    acc_after(ab, pl, transfer, F, n);
    rs_tpp_metric(&out[0], &out[1], a, ab, C, i);
    out[2] = out[0] - out[1];
}

static void check3(const double *got, const double *want, const char *what, int b, int i, int m) {
    for (int x = 0; x < 3; x++)
        CHECK(fabs(got[x] - want[x]) <= 1e-6, "%s budget %d class %d layer %d part %d: %.9f, reference %.9f", what, b,
              i, m, x, got[x], want[x]);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: test_tpp FIXTURE_H5\n");
        return 2;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    g_f = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
    if (g_f < 0) {
        fprintf(stderr, "cannot open %s (rebuild it with tests/reference/tpp_ref.py)\n", argv[1]);
        return 1;
    }
    size_t nh;
    H = rd("H", H5T_NATIVE_FLOAT, sizeof(float), &nh);
    n_w = (int)(nh / (M * D));
    Z = rd("Z", H5T_NATIVE_FLOAT, sizeof(float), NULL);
    W = rd("W", H5T_NATIVE_FLOAT, sizeof(float), NULL);
    A = rd("A", H5T_NATIVE_DOUBLE, sizeof(double), NULL);
    int32_t *layers = rd("layers", H5T_NATIVE_INT32, 4, NULL), *budgets = rd("budgets", H5T_NATIVE_INT32, 4, NULL);
    double *pw = rd("probe_w", H5T_NATIVE_DOUBLE, 8, NULL), *pb = rd("probe_b", H5T_NATIVE_DOUBLE, 8, NULL);
    double *pacc = rd("probe_acc", H5T_NATIVE_DOUBLE, 8, NULL), *E_ref = rd("E", H5T_NATIVE_DOUBLE, 8, NULL);
    int32_t *pep = rd("probe_epoch", H5T_NATIVE_INT32, 4, NULL);
    int32_t *sg = rd("sel_global", H5T_NATIVE_INT32, 4, NULL), *sj = rd("sel_joint", H5T_NATIVE_INT32, 4, NULL);
    int32_t *ss = rd("sel_single", H5T_NATIVE_INT32, 4, NULL);
    double *r_g = rd("tpp_global", H5T_NATIVE_DOUBLE, 8, NULL), *r_j = rd("tpp_joint", H5T_NATIVE_DOUBLE, 8, NULL);
    double *r_gi = rd("tpp_global_inter", H5T_NATIVE_DOUBLE, 8, NULL);
    double *r_ji = rd("tpp_joint_inter", H5T_NATIVE_DOUBLE, 8, NULL);
    double *r_s = rd("tpp_single", H5T_NATIVE_DOUBLE, 8, NULL), *r_l = rd("tpp_local", H5T_NATIVE_DOUBLE, 8, NULL);
    double epochs = 0;
    TRY(rs_h5_attr_get_f64(&epochs, g_f, "epochs", argv[1]));
    for (int i = 0; i < C; i++) {
        char nm[64];
        size_t n;
        snprintf(nm, sizeof nm, "task%d/train", i);
        task[i].train = rd(nm, H5T_NATIVE_INT32, 4, &n);
        task[i].n_train = (int)n;
        snprintf(nm, sizeof nm, "task%d/y_train", i);
        task[i].y_train = rd(nm, H5T_NATIVE_INT8, 1, NULL);
        snprintf(nm, sizeof nm, "task%d/test", i);
        task[i].test = rd(nm, H5T_NATIVE_INT32, 4, &n);
        task[i].n_test = (int)n;
        snprintf(nm, sizeof nm, "task%d/y_test", i);
        task[i].y_test = rd(nm, H5T_NATIVE_INT8, 1, NULL);
    }
    /* J_{M-1} = I, J_m = J_{m+1} A_{m+1} */
    J = calloc((size_t)M * D * D, sizeof(double));
    for (int q = 0; q < D; q++) J[((size_t)(M - 1) * D + q) * D + q] = 1;
    for (int m = M - 2; m >= 0; m--)
        for (int r = 0; r < D; r++)
            for (int c = 0; c < D; c++) {
                double s = 0;
                for (int u = 0; u < D; u++) s += J[((size_t)(m + 1) * D + r) * D + u] * A[((size_t)(m + 1) * D + u) * D + c];
                J[((size_t)m * D + r) * D + c] = s;
            }

    /* probes */
    rs_tpp_probe_opts po = RS_TPP_PROBE_OPTS_DEFAULT;
    po.epochs = (int)epochs;
    double werr = 0;
    for (int m = 0; m < M; m++)
        for (int i = 0; i < C; i++) {
            rs_tpp_probe *p = &probe[m][i];
            TRY(rs_tpp_probe_train(p, Hm(m), D, &task[i], &po, 42, (uint64_t)i, (uint64_t)layers[m]));
            size_t q = (size_t)m * C + i;
            rs_check_diff dw = rs_check_diff_dd(p->w, pw + q * D, D);
            CHECK_DIFF(dw, rel, 1e-8, "probe w layer %d class %d", m, i);
            CHECK(fabs(p->b - pb[q]) <= 1e-8 * (1 + fabs(pb[q])), "probe b layer %d class %d: %.12g vs %.12g", m, i, p->b,
                  pb[q]);
            CHECK(p->accuracy == pacc[q], "probe accuracy layer %d class %d: %g vs %g", m, i, p->accuracy, pacc[q]);
            CHECK(p->best_epoch == pep[q], "probe epoch layer %d class %d: %d vs %d", m, i, p->best_epoch, pep[q]);
            if (dw.rel > werr) werr = dw.rel;
        }

    /* effects through the chain, selections, TPP */
    double E[M * NL], El[NL], v[M][D], maxE = 0, eerr = 0;
    int n_sel = 0;
    for (int i = 0; i < C; i++) {
        for (int m = 0; m < M; m++)
            for (int q = 0; q < D; q++) {
                v[m][q] = 0;
                for (int r = 0; r < D; r++) v[m][q] += J[((size_t)m * D + r) * D + q] * probe[M - 1][i].w[r];
            }
        for (int m = 0; m < M; m++) TRY(rs_tpp_effects(E + m * NL, Zm(m), NL, &task[i], v[m], Wm(m), D));
        for (int x = 0; x < M * NL; x++) {
            double ref = E_ref[(size_t)i * M * NL + x];
            if (fabs(ref) > maxE) maxE = fabs(ref);
            if (fabs(E[x] - ref) > eerr) eerr = fabs(E[x] - ref);
        }
        for (int b = 0; b < NB; b++) {
            int N = budgets[b], Nmax = budgets[NB - 1], k, n[M];
            int32_t sel[M * NL], lists[M][NL], *L[M];
            for (int m = 0; m < M; m++) L[m] = lists[m];
            double got[3];
            const size_t base3 = ((size_t)b * C + i) * 3;
            /* global */
            TRY(rs_tpp_top(&k, sel, E, M * NL, N));
            for (int s = 0; s < Nmax; s++) {
                int want = sg[((size_t)b * C + i) * Nmax + s];
                CHECK((s < k ? sel[s] : -1) == want, "global budget %d class %d rank %d: %d vs %d", N, i, s,
                      s < k ? sel[s] : -1, want);
            }
            for (int m = 0; m < M; m++) n[m] = 0;
            for (int s = 0; s < k; s++) lists[sel[s] / NL][n[sel[s] / NL]++] = sel[s] % NL;
            tpp_of(got, M - 1, 1, L, n, i);
            check3(got, r_g + base3, "global", N, i, -1);
            double parts[3] = {0, 0, 0};
            for (int m = 0; m < M; m++) {
                if (!n[m]) continue;
                int one[M] = {0};
                one[m] = n[m];
                double pp[3];
                tpp_of(pp, M - 1, 1, L, one, i);
                for (int x = 0; x < 3; x++) parts[x] += pp[x];
            }
            for (int x = 0; x < 3; x++) got[x] -= parts[x];
            check3(got, r_gi + base3, "global interaction", N, i, -1);
            /* per-layer joint */
            for (int m = 0; m < M; m++) {
                TRY(rs_tpp_top(&n[m], lists[m], E + m * NL, NL, rs_tpp_joint_share(N, M, m)));
                for (int s = 0; s < Nmax; s++) {
                    int want = sj[(((size_t)b * C + i) * M + m) * Nmax + s];
                    CHECK((s < n[m] ? lists[m][s] : -1) == want, "joint budget %d class %d layer %d rank %d", N, i, m, s);
                }
                n_sel += n[m];
            }
            tpp_of(got, M - 1, 1, L, n, i);
            check3(got, r_j + base3, "joint", N, i, -1);
            for (int x = 0; x < 3; x++) parts[x] = 0;
            for (int m = 0; m < M; m++) {
                if (!n[m]) continue;
                int one[M] = {0};
                one[m] = n[m];
                double pp[3];
                tpp_of(pp, M - 1, 1, L, one, i);
                for (int x = 0; x < 3; x++) parts[x] += pp[x];
            }
            for (int x = 0; x < 3; x++) got[x] -= parts[x];
            check3(got, r_ji + base3, "joint interaction", N, i, -1);
            /* single and local at each layer */
            for (int m = 0; m < M; m++) {
                int one[M] = {0};
                TRY(rs_tpp_top(&one[m], lists[m], E + m * NL, NL, N));
                for (int s = 0; s < Nmax; s++) {
                    int want = ss[(((size_t)b * C + i) * M + m) * Nmax + s];
                    CHECK((s < one[m] ? lists[m][s] : -1) == want, "single budget %d class %d layer %d rank %d", N, i, m, s);
                }
                double z3[3] = {0, 0, 0};
                if (one[m]) tpp_of(z3, M - 1, 1, L, one, i);
                check3(z3, r_s + (((size_t)b * C + i) * M + m) * 3, "single", N, i, m);
                TRY(rs_tpp_effects(El, Zm(m), NL, &task[i], probe[m][i].w, Wm(m), D));
                int lo[M] = {0};
                TRY(rs_tpp_top(&lo[m], lists[m], El, NL, N));
                for (int x = 0; x < 3; x++) z3[x] = 0;
                if (lo[m]) tpp_of(z3, m, 0, L, lo, i);
                check3(z3, r_l + (((size_t)b * C + i) * M + m) * 3, "local", N, i, m);
            }
            /* an empty set: TPP exactly 0 */
            int none[M] = {0};
            tpp_of(got, M - 1, 1, L, none, i);
            CHECK(got[0] == 0 && got[1] == 0 && got[2] == 0, "empty ablation: TPP %g (intended %g, unintended %g)",
                  got[2], got[0], got[1]);
        }
    }
    CHECK(eerr <= 1e-9 * maxE, "effects: max error %.3g (scale %.3g)", eerr, maxE);
    CHECK(n_sel > 0, "no latent was selected: the fixture does not exercise the selections");

    /* one layer: global over the concatenation = joint (share N) = single */
    {
        int32_t a[NL], b2[NL];
        int ka, kb;
        TRY(rs_tpp_top(&ka, a, E_ref, NL, 5));
        TRY(rs_tpp_top(&kb, b2, E_ref, NL, rs_tpp_joint_share(5, 1, 0)));
        CHECK(ka == kb && !memcmp(a, b2, sizeof(int32_t) * (size_t)ka), "one layer: global != joint");
    }
    /* the joint shares: sum N, the extra ones at the deepest layers */
    for (int N = 0; N <= 11; N++) {
        int sum = 0;
        for (int m = 0; m < 4; m++) sum += rs_tpp_joint_share(N, 4, m);
        CHECK(sum == N, "joint shares of %d over 4 layers sum to %d", N, sum);
    }
    CHECK(rs_tpp_joint_share(10, 4, 0) == 2 && rs_tpp_joint_share(10, 4, 1) == 2 && rs_tpp_joint_share(10, 4, 2) == 3 &&
              rs_tpp_joint_share(10, 4, 3) == 3,
          "joint shares of 10 over 4 layers are not 2 2 3 3");
    /* ties: equal effects go to the lower index; k counts the nonzero effects, then the k largest signed
     * values are taken (B4: a zero effect ranks above a negative one) */
    {
        double e[6] = {1, 3, 3, 0, -1, 3};
        int32_t s[6];
        int k;
        TRY(rs_tpp_top(&k, s, e, 6, 6));
        CHECK(k == 5 && s[0] == 1 && s[1] == 2 && s[2] == 5 && s[3] == 0 && s[4] == 3, "ties or zeros mishandled (k %d)", k);
    }
    printf("tpp reference: probes max rel err %.2e, effects %.2e (scale %.2e), %d joint latents selected\n", werr, eerr,
           maxE, n_sel);
    for (int m = 0; m < M; m++)
        for (int i = 0; i < C; i++) rs_tpp_probe_free(&probe[m][i]);
    for (int i = 0; i < C; i++) {
        free(task[i].train);
        free(task[i].test);
        free(task[i].y_train);
        free(task[i].y_test);
    }
    free(H), free(Z), free(W), free(A), free(J), free(layers), free(budgets), free(pw), free(pb), free(pacc);
    free(E_ref), free(pep), free(sg), free(sj), free(ss), free(r_g), free(r_j), free(r_gi), free(r_ji), free(r_s);
    free(r_l);
    H5Fclose(g_f);
    printf("tpp: %s\n", rs_check_fails ? "FAILED" : "ok");
    return rs_check_fails ? 1 : 0;
}
