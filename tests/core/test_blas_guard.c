/* The BLAS guard's decision for every case, on synthetic situations (so no case depends on the CPU
 * the suite runs on), the core-name table, and the self-test on the kernels of this machine. */
#include <stdio.h>
#include <string.h>

#include "testlib.h"
#include "resae/blas.h"

static rs_blas_verdict decide(enum rs_isa cpu, const char *core, const char *user, int reexeced, int allow) {
    rs_blas_situation s = {.cpu = cpu, .core = core, .user = user, .reexeced = reexeced, .allow_generic = allow};
    rs_blas_verdict v;
    rs_blas_decide(&v, &s);
    return v;
}

#define EXPECT_ACTION(v, a)                                                                                   \
    CHECK((v).action == (a), "action %s, expected %s (msg: %s)", rs_blas_action_name((v).action),          \
          rs_blas_action_name(a), (v).msg)
#define EXPECT_MSG(v, needle) CHECK(strstr((v).msg, needle), "message lacks '%s': %s", needle, (v).msg)

static void test_table(void) {
    /* case variants and every level */
    const char *names[] = {"Haswell", "haswell", "HASWELL", "hAsWeLl", "Zen", "zen"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        CHECK(rs_blas_core_isa(names[i]) == RS_ISA_AVX2, "%s is AVX2", names[i]);
    const char *v512[] = {"SkylakeX", "skylakex", "SKYLAKEX", "Cooperlake", "CooperLake", "COOPERLAKE",
                          "SapphireRapids", "sapphirerapids"};
    for (size_t i = 0; i < sizeof v512 / sizeof *v512; i++)
        CHECK(rs_blas_core_isa(v512[i]) == RS_ISA_AVX512, "%s is AVX-512", v512[i]);
    const char *sse[] = {"Prescott", "prescott", "Core2", "Nehalem", "Atom", "Barcelona", "Penryn", "Dunnington",
                         "Opteron", "Opteron(SSE3)", "Nano", "Katmai", "Bobcat", "Unknown"};
    for (size_t i = 0; i < sizeof sse / sizeof *sse; i++)
        CHECK(rs_blas_core_isa(sse[i]) == RS_ISA_SSE, "%s is SSE", sse[i]);
    const char *avx[] = {"Sandybridge", "SandyBridge", "Bulldozer", "Piledriver", "Steamroller", "Excavator"};
    for (size_t i = 0; i < sizeof avx / sizeof *avx; i++)
        CHECK(rs_blas_core_isa(avx[i]) == RS_ISA_AVX, "%s is AVX", avx[i]);
    CHECK(rs_blas_core_isa("Futurelake") == RS_ISA_UNKNOWN, "unknown name");
    CHECK(rs_blas_core_isa("") == RS_ISA_UNKNOWN && rs_blas_core_isa(NULL) == RS_ISA_UNKNOWN, "empty name");
    CHECK(rs_blas_core_isa("Haswel") == RS_ISA_UNKNOWN, "no prefix match");
    for (int l = RS_ISA_SSE; l < RS_ISA_COUNT; l++)
        CHECK((int)rs_blas_core_isa(rs_blas_best_core((enum rs_isa)l)) == l, "best core of %s has its level",
              rs_isa_name((enum rs_isa)l));
    CHECK(rs_blas_expected_gain(RS_ISA_AVX2, RS_ISA_AVX512) > 1.5 && rs_blas_expected_gain(RS_ISA_AVX2, RS_ISA_AVX512) < 2.5,
          "AVX2 -> AVX-512 gain %.2f", rs_blas_expected_gain(RS_ISA_AVX2, RS_ISA_AVX512));
    CHECK(rs_blas_expected_gain(RS_ISA_SSE, RS_ISA_AVX512) > 4.0, "SSE -> AVX-512 gain");
    CHECK(rs_blas_expected_gain(RS_ISA_AVX512, RS_ISA_AVX2) == 1.0, "no gain downwards");
}

static void test_unset(void) {
    /* native detection that matches the CPU: run, no message */
    rs_blas_verdict v = decide(RS_ISA_AVX512, "Cooperlake", NULL, 0, 0);
    EXPECT_ACTION(v, RS_BLAS_RUN);
    CHECK(v.msg[0] == '\0', "no message: %s", v.msg);
    CHECK(strstr(v.status, "native detection"), "status: %s", v.status);
    v = decide(RS_ISA_AVX2, "Haswell", NULL, 0, 0);
    EXPECT_ACTION(v, RS_BLAS_RUN);
    v = decide(RS_ISA_SSE, "Prescott", NULL, 0, 0); /* an old CPU: generic is all there is */
    EXPECT_ACTION(v, RS_BLAS_RUN);
    /* OpenBLAS's misdetection (generic on an AVX-512 Xeon): re-exec into the best set */
    v = decide(RS_ISA_AVX512, "Prescott", NULL, 0, 0);
    EXPECT_ACTION(v, RS_BLAS_REEXEC);
    CHECK(v.reexec_core && !strcmp(v.reexec_core, "SkylakeX"), "re-exec core %s", v.reexec_core);
    v = decide(RS_ISA_AVX2, "Nehalem", NULL, 0, 0);
    EXPECT_ACTION(v, RS_BLAS_REEXEC);
    CHECK(v.reexec_core && !strcmp(v.reexec_core, "Haswell"), "re-exec core %s", v.reexec_core);
    /* an AVX set detected on an AVX2 CPU is no trap and measured no slower: run */
    v = decide(RS_ISA_AVX2, "Sandybridge", NULL, 0, 0);
    EXPECT_ACTION(v, RS_BLAS_RUN);
    /* an empty OPENBLAS_CORETYPE is unset for OpenBLAS too */
    v = decide(RS_ISA_AVX512, "Prescott", "", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_REEXEC);
    /* after the re-exec: run; still generic (OpenBLAS ignored it): refuse unless allowed */
    v = decide(RS_ISA_AVX512, "SkylakeX", "SkylakeX", 1, 0);
    EXPECT_ACTION(v, RS_BLAS_RUN);
    CHECK(strstr(v.status, "resae set OPENBLAS_CORETYPE=SkylakeX"), "status: %s", v.status);
    v = decide(RS_ISA_AVX512, "Prescott", "SkylakeX", 1, 0);
    EXPECT_ACTION(v, RS_BLAS_REFUSE);
    v = decide(RS_ISA_AVX512, "Prescott", "SkylakeX", 1, 1);
    EXPECT_ACTION(v, RS_BLAS_WARN);
    /* native detection below the CPU but not generic: run, one warning with the gain */
    v = decide(RS_ISA_AVX512, "Zen", NULL, 0, 0);
    EXPECT_ACTION(v, RS_BLAS_WARN);
    EXPECT_MSG(v, "OPENBLAS_CORETYPE=SkylakeX");
    EXPECT_MSG(v, "OpenBLAS's choice");
}

static void test_user_simd(void) {
    /* the case: Haswell preset on an AVX-512 CPU is respected with one warning */
    const char *spell[] = {"Haswell", "haswell", "HASWELL"};
    for (int i = 0; i < 3; i++) {
        rs_blas_verdict v = decide(RS_ISA_AVX512, "Haswell", spell[i], 0, 0);
        EXPECT_ACTION(v, RS_BLAS_WARN);
        EXPECT_MSG(v, "OPENBLAS_CORETYPE=SkylakeX");
        EXPECT_MSG(v, "about 1.9x faster");
        EXPECT_MSG(v, "your setting");
        CHECK(strstr(v.status, spell[i]), "status names the user's value: %s", v.status);
    }
    rs_blas_verdict v = decide(RS_ISA_AVX512, "Zen", "zen", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_WARN);
    /* the user's set is the CPU's best: no warning */
    v = decide(RS_ISA_AVX512, "SkylakeX", "SkylakeX", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_RUN);
    v = decide(RS_ISA_AVX512, "Cooperlake", "cooperlake", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_RUN);
    v = decide(RS_ISA_AVX2, "Haswell", "Haswell", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_RUN);
    /* a known name OpenBLAS replaced by a narrower one on this CPU (SapphireRapids -> Cooperlake) */
    v = decide(RS_ISA_AVX512, "Cooperlake", "SapphireRapids", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_RUN);
}

static void test_user_generic(void) {
    const char *spell[] = {"Prescott", "prescott", "PRESCOTT"};
    for (int i = 0; i < 3; i++) {
        rs_blas_verdict v = decide(RS_ISA_AVX512, "Prescott", spell[i], 0, 0);
        EXPECT_ACTION(v, RS_BLAS_REFUSE);
        EXPECT_MSG(v, "'Prescott'");
        EXPECT_MSG(v, "Fix: set OPENBLAS_CORETYPE=SkylakeX");
        EXPECT_MSG(v, "RESAE_ALLOW_GENERIC_BLAS=1");
    }
    rs_blas_verdict v = decide(RS_ISA_AVX2, "Nehalem", "Nehalem", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_REFUSE);
    EXPECT_MSG(v, "OPENBLAS_CORETYPE=Haswell");
    v = decide(RS_ISA_AVX2, "Sandybridge", "Sandybridge", 0, 0); /* an AVX set is a SIMD choice */
    EXPECT_ACTION(v, RS_BLAS_RUN); /* measured as fast as Haswell */
    v = decide(RS_ISA_AVX512, "Sandybridge", "sandybridge", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_WARN);
    EXPECT_MSG(v, "OPENBLAS_CORETYPE=SkylakeX");
    v = decide(RS_ISA_AVX512, "Prescott", "Prescott", 0, 1);
    EXPECT_ACTION(v, RS_BLAS_WARN);
    EXPECT_MSG(v, "allowed by RESAE_ALLOW_GENERIC_BLAS=1");
    CHECK(strstr(v.status, "allowed"), "status: %s", v.status);
    /* on a CPU without AVX2 a generic set is the right one: no refusal, no re-exec */
    v = decide(RS_ISA_AVX, "Prescott", "Prescott", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_WARN); /* Sandybridge would be faster */
    v = decide(RS_ISA_SSE, "Core2", "Core2", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_RUN);
}

static void test_unknown(void) {
    /* a kernel set OpenBLAS runs that the table does not know: run, warning naming it */
    rs_blas_verdict v = decide(RS_ISA_AVX512, "Futurelake", NULL, 0, 0);
    EXPECT_ACTION(v, RS_BLAS_WARN);
    EXPECT_MSG(v, "'Futurelake'");
    v = decide(RS_ISA_AVX2, "Futurelake", "Futurelake", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_WARN);
    EXPECT_MSG(v, "'Futurelake'");
    /* an OPENBLAS_CORETYPE OpenBLAS does not know: it detects instead; say so */
    v = decide(RS_ISA_AVX512, "Cooperlake", "Frobnicator", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_WARN);
    EXPECT_MSG(v, "OPENBLAS_CORETYPE=Frobnicator names no OpenBLAS kernel set");
    EXPECT_MSG(v, "'Cooperlake'");
    CHECK(v.msg[strlen(v.msg) - 1] != ' ', "message ends cleanly: '%s'", v.msg);
    /* ... and the detection it fell back to was generic: refused (the user set the variable) */
    v = decide(RS_ISA_AVX512, "Prescott", "Frobnicator", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_REFUSE);
    EXPECT_MSG(v, "names no OpenBLAS kernel set");
}

static void test_wider_than_cpu(void) {
    /* a preset above the CPU: re-exec with the best set the CPU runs ... */
    const char *spell[] = {"SkylakeX", "skylakex", "Cooperlake", "SapphireRapids"};
    for (size_t i = 0; i < sizeof spell / sizeof *spell; i++) {
        rs_blas_verdict v = decide(RS_ISA_AVX2, spell[i], spell[i], 0, 0);
        EXPECT_ACTION(v, RS_BLAS_REEXEC);
        CHECK(v.reexec_core && !strcmp(v.reexec_core, "Haswell"), "re-exec with Haswell, not %s",
              v.reexec_core ? v.reexec_core : "(none)");
    }
    rs_blas_verdict v = decide(RS_ISA_AVX, "Haswell", "Haswell", 0, 0);
    EXPECT_ACTION(v, RS_BLAS_REEXEC);
    CHECK(v.reexec_core && !strcmp(v.reexec_core, "Sandybridge"), "AVX CPU: re-exec with Sandybridge");
    /* ... also when OpenBLAS itself detected a set above the CPU */
    v = decide(RS_ISA_AVX2, "SkylakeX", NULL, 0, 0);
    EXPECT_ACTION(v, RS_BLAS_REEXEC);
    /* the re-exec runs and warns once, naming the variable, the value it replaced and the fix */
    rs_blas_situation s = {.cpu = RS_ISA_AVX2, .core = "Haswell", .user = "Haswell", .reexeced = 1,
                           .replaced = "SkylakeX"};
    rs_blas_decide(&v, &s);
    EXPECT_ACTION(v, RS_BLAS_WARN);
    EXPECT_MSG(v, "OPENBLAS_CORETYPE=SkylakeX (set before resae started) selects AVX-512 kernels");
    EXPECT_MSG(v, "this CPU (AVX2) cannot run");
    EXPECT_MSG(v, "re-executed itself with OPENBLAS_CORETYPE=Haswell");
    CHECK(strstr(v.status, "in place of OPENBLAS_CORETYPE=SkylakeX") != NULL, "status names the replaced value: %s",
          v.status);
    /* a re-exec that still runs kernels above the CPU is refused, naming the fix */
    s.core = "SkylakeX";
    rs_blas_decide(&v, &s);
    EXPECT_ACTION(v, RS_BLAS_REFUSE);
    EXPECT_MSG(v, "illegal instruction");
    EXPECT_MSG(v, "OPENBLAS_CORETYPE=Haswell");
}

int main(void) {
    test_table();
    test_unset();
    test_user_simd();
    test_user_generic();
    test_unknown();
    test_wider_than_cpu();
    /* the kernels this process runs pass the self-test */
    rs_err e = rs_blas_selftest();
    CHECK(e == RS_OK, "self-test with the '%s' kernels: %s", rs_blas_corename(), rs_err_msg());
    printf("blas guard: %d failure(s); kernels %s\n", rs_check_fails, rs_blas_corename());
    return rs_check_fails ? 1 : 0;
}
