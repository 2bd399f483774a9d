/* test_offline.c — every kernel source compiles offline with clang for a
 * generic SPIR target in each precision variant (fp16, fp16-storage, fp32,
 * bf16), with cl_khr_fp16 enabled only for the fp16 variant: a kernel that uses half arithmetic outside the
 * fp16 variant fails here, before any device sees it.
 *
 * Usage: test_offline CL_FILE... (src/meson.build's cl_sources; the entry
 * named precision.h is the header), with MPCL_CLANG naming clang. No
 * OpenCL runtime is involved. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *g_header;      /* cl/precision.h */
static const char *g_files[64];   /* the .cl sources */
static int g_nfiles;

/* fp16-storage twice: with the integer half conversions of cl/precision.h
 * and with the built-ins (-DMPCL_HALF_BUILTIN), as src/halfconv.c may choose. */
#define NVARIANTS 5
static const struct {
    const char *define;
    const char *ext;   /* -cl-ext= value */
    const char *extra; /* one more option */
} VARIANTS[NVARIANTS] = {
    {"MPCL_FP16", "+cl_khr_fp16", "-DMPCL_OFFLINE"},
    {"MPCL_FP16_STORAGE", "-cl_khr_fp16", "-DMPCL_OFFLINE"},
    {"MPCL_FP16_STORAGE", "-cl_khr_fp16", "-DMPCL_HALF_BUILTIN"},
    {"MPCL_FP32", "-cl_khr_fp16", "-DMPCL_OFFLINE"},
    {"MPCL_BF16", "-cl_khr_fp16", "-DMPCL_OFFLINE"}, /* integer conversions: no extension */
};

/* Runs clang -fsyntax-only on file for variant v; returns its exit status
 * and, in *err, its diagnostics. */
static int clang_check(const char *file, int v, char **err)
{
    char ext[64], def[64];
    snprintf(ext, sizeof ext, "-cl-ext=%s", VARIANTS[v].ext);
    snprintf(def, sizeof def, "-D%s", VARIANTS[v].define);
    const char *clang = tu_env("MPCL_CLANG");
    char *const argv[] = {(char *)clang, "-x", "cl", "-cl-std=CL1.2", "-Xclang",
                          "-finclude-default-header", "--target=spir64", "-Xclang", ext, def,
                          (char *)VARIANTS[v].extra,
                          "-include", (char *)g_header, "-fsyntax-only", (char *)file, NULL};
    char *out = NULL;
    int rc = tu_run(argv, NULL, &out, err);
    free(out);
    return rc;
}

START_TEST(test_compiles)
{
    const char *file = g_files[_i / NVARIANTS];
    int v = _i % NVARIANTS;
    char *err = NULL;
    int rc = clang_check(file, v, &err);
    ck_assert_msg(rc == 0, "clang (%s) failed on %s with -D%s -cl-ext=%s (exit %d):\n%s",
                  tu_env("MPCL_CLANG"), file, VARIANTS[v].define, VARIANTS[v].ext, rc, err ? err : "");
    if (err && *err) /* warnings do not fail the test, but show them */
        fprintf(stderr, "%s (%s %s): %s", file, VARIANTS[v].define, VARIANTS[v].extra, err);
    free(err);
}
END_TEST

/* The guard works: half arithmetic does not compile without cl_khr_fp16
 * (storage variant, or fp16 with the extension off), and does with it. */
START_TEST(test_half_guard)
{
    char *dir = tu_mkdtemp("offline");
    size_t n = strlen(dir) + 16;
    char *file = malloc(n);
    ck_assert_ptr_nonnull(file);
    snprintf(file, n, "%s/half.cl", dir);
    const char *src = "kernel void k(global half *p)\n"
                      "{\n"
                      "    half x = p[0];\n"
                      "    p[0] = x * x + x;\n"
                      "}\n";
    ck_assert_int_eq(tu_write_file(file, src, strlen(src)), 0);
    char *err = NULL;
    int rc = clang_check(file, 1, &err); /* MPCL_FP16_STORAGE, -cl_khr_fp16 */
    ck_assert_msg(rc != 0 && rc != -1, "half arithmetic compiled without cl_khr_fp16 (exit %d)", rc);
    ck_assert_msg(strstr(err, "half") != NULL, "clang's error does not mention half:\n%s", err);
    free(err);
    rc = clang_check(file, 2, &err); /* MPCL_FP32 */
    ck_assert_int_ne(rc, 0);
    free(err);
    rc = clang_check(file, 3, &err); /* MPCL_BF16 */
    ck_assert_int_ne(rc, 0);
    free(err);
    rc = clang_check(file, 0, &err); /* MPCL_FP16, +cl_khr_fp16: the same source is fine */
    ck_assert_msg(rc == 0, "the fp16 control failed (exit %d):\n%s", rc, err);
    free(err);
    /* and a plain syntax error fails in every variant (the check is real) */
    const char *broken = "kernel void k(global float *p) { p[0] = ; }\n";
    ck_assert_int_eq(tu_write_file(file, broken, strlen(broken)), 0);
    for (int v = 0; v < NVARIANTS; v++) {
        rc = clang_check(file, v, &err);
        ck_assert_msg(rc != 0 && rc != -1, "a syntax error compiled in %s", VARIANTS[v].define);
        free(err);
    }
    tu_rmtree(dir);
    free(file);
    free(dir);
}
END_TEST

int main(int argc, char **argv)
{
    tu_clean_env();
    for (int i = 1; i < argc; i++) {
        const char *base = strrchr(argv[i], '/');
        base = base ? base + 1 : argv[i];
        size_t bl = strlen(base);
        if (strcmp(base, "precision.h") == 0)
            g_header = argv[i];
        else if (bl > 3 && strcmp(base + bl - 3, ".cl") == 0 && g_nfiles < 64)
            g_files[g_nfiles++] = argv[i];
    }
    if (!g_header || g_nfiles == 0) {
        fprintf(stderr, "usage: test_offline CL_FILE... (with cl/precision.h among them)\n");
        return 1;
    }
    Suite *s = suite_create("offline");
    TCase *tc = tcase_create("clang");
    tcase_add_loop_test(tc, test_compiles, 0, g_nfiles * NVARIANTS);
    tcase_add_test(tc, test_half_guard);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
