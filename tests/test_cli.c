/* test_cli.c — the `mpcl` command line: exit codes, messages and the JSON
 * report of `mpcl probe`. Runs the built binary ($MPCL_BIN) without a
 * shell. Facts the answers depend on (device names, whether half
 * arithmetic works) come from the library in the test's own forked child,
 * after the binary has run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "testutil.h"

#define HAS(hay, needle) ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

typedef tu_result result;
#define mpcl_run tu_mpcl_run
#define result_free tu_result_free
#define RC TU_RC

static mpcl_device_desc *devices(size_t *n)
{
    char err[2048];
    size_t count = 0;
    ck_assert_msg(mpcl_device_list(NULL, 0, &count, err, sizeof err) == MPCL_OK, "%s", err);
    mpcl_device_desc *l = calloc(count + 1, sizeof *l);
    ck_assert_ptr_nonnull(l);
    ck_assert_int_eq(mpcl_device_list(l, count, &count, err, sizeof err), MPCL_OK);
    *n = count;
    return l;
}

/* The default device's verdicts, as the library sees them. */
static mpcl_caps default_caps(void)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_caps c = ctx->caps;
    mpcl_context_destroy(ctx);
    return c;
}

static int arith_works(const mpcl_caps *c)
{
    return c->fp16_arith_check.passed && (c->fp16_arith == MPCL_FP16_DECLARED_WORKS ||
                                          c->fp16_arith == MPCL_FP16_UNDECLARED_WORKS);
}

static int known_pocl(const mpcl_caps *c)
{
    return strstr(c->platform, "Portable Computing Language") != NULL && c->ext_fp16 == 0;
}

/* ------------------------------------------------------------- usage */

START_TEST(test_usage_errors)
{
    result r = mpcl_run(NULL, "frobnicate", NULL);
    RC(r, 2);
    HAS(r.err, "frobnicate");
    HAS(r.err, "probe"); /* names the subcommands there are */
    result_free(&r);

    r = mpcl_run(NULL, NULL);
    RC(r, 2);
    ck_assert_msg(r.err[0] != '\0', "no usage message for a bare 'mpcl'");
    result_free(&r);

    r = mpcl_run(NULL, "probe", "--precision", "bogus", NULL);
    RC(r, 2);
    HAS(r.err, "--precision");
    HAS(r.err, "bogus");
    ck_assert_str_eq(r.out, "");
    result_free(&r);

    r = mpcl_run(NULL, "probe", "--no-such-option", NULL);
    RC(r, 2);
    HAS(r.err, "--no-such-option");
    result_free(&r);

    r = mpcl_run(NULL, "probe", "--device", NULL);
    RC(r, 2);
    HAS(r.err, "--device");
    result_free(&r);

    r = mpcl_run(NULL, "probe", "stray", NULL);
    RC(r, 2);
    HAS(r.err, "stray");
    result_free(&r);
}
END_TEST

START_TEST(test_help_and_version)
{
    result r = mpcl_run(NULL, "version", NULL);
    RC(r, 0);
    HAS(r.out, mpcl_version());
    result_free(&r);

    r = mpcl_run(NULL, "help", NULL);
    RC(r, 0);
    HAS(r.out, "probe");
    result_free(&r);

    r = mpcl_run(NULL, "probe", "--help", NULL);
    RC(r, 0);
    HAS(r.out, "--device");
    HAS(r.out, "--precision");
    HAS(r.out, "--json");
    result_free(&r);
}
END_TEST

/* ------------------------------------------------------------ devices */

START_TEST(test_no_matching_device)
{
    result r = mpcl_run(NULL, "probe", "--device", "nomatch-xyz", NULL);
    RC(r, 3);
    HAS(r.err, "nomatch-xyz");
    ck_assert_str_eq(r.out, "");
    size_t n = 0;
    mpcl_device_desc *l = devices(&n);
    for (size_t i = 0; i < n; i++) /* it lists what exists */
        HAS(r.err, l[i].name);
    free(l);
    result_free(&r);
}
END_TEST

START_TEST(test_no_platform)
{
    char *dir = tu_mkdtemp("cli-no-icd");
    char v1[4200], v2[4200];
    snprintf(v1, sizeof v1, "OCL_ICD_VENDORS=%s", dir);
    snprintf(v2, sizeof v2, "OPENCL_VENDOR_PATH=%s", dir);
    char *const env[] = {v1, v2, NULL};
    unsetenv("OCL_ICD_FILENAMES");
    result r = mpcl_run(env, "probe", NULL);
    RC(r, 3);
    HAS(r.err, "no OpenCL platform");
    HAS(r.err, "pocl-opencl-icd");
    result_free(&r);
    r = mpcl_run(env, "probe", "--list", NULL);
    RC(r, 3);
    HAS(r.err, "no OpenCL platform");
    result_free(&r);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_list)
{
    result r = mpcl_run(NULL, "probe", "--list", NULL);
    RC(r, 0);
    result j = mpcl_run(NULL, "probe", "--list", "--json", NULL);
    RC(j, 0);
    size_t n = 0;
    mpcl_device_desc *l = devices(&n);
    ck_assert_uint_ge(n, 1);
    for (size_t i = 0; i < n; i++) {
        HAS(r.out, l[i].name);
        char idx[32];
        snprintf(idx, sizeof idx, "%u:%u", l[i].platform_index, l[i].device_index);
        HAS(r.out, idx);
    }
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithOpts(j.out, &end, 1);
    ck_assert_msg(doc != NULL, "--list --json is not JSON:\n%s", j.out);
    ck_assert(cJSON_IsArray(doc));
    ck_assert_int_eq(cJSON_GetArraySize(doc), (int)n);
    for (size_t i = 0; i < n; i++) {
        cJSON *d = cJSON_GetArrayItem(doc, (int)i);
        cJSON *name = cJSON_GetObjectItemCaseSensitive(d, "name");
        ck_assert(cJSON_IsString(name));
        ck_assert_str_eq(name->valuestring, l[i].name);
    }
    cJSON_Delete(doc);
    free(l);
    result_free(&r);
    result_free(&j);
}
END_TEST

/* ------------------------------------------------------------ precision */

START_TEST(test_precision_fp16)
{
    result r = mpcl_run(NULL, "probe", "--precision", "fp16", NULL);
    mpcl_caps c = default_caps();
    if (arith_works(&c)) {
        RC(r, 0);
    } else {
        RC(r, 4);
        HAS(r.err, "fp16");
        HAS(r.err, mpcl_fp16_arith_name(c.fp16_arith));
    }
    if (known_pocl(&c))
        RC(r, 4);
    result_free(&r);
}
END_TEST

START_TEST(test_precision_storage)
{
    result r = mpcl_run(NULL, "probe", "--precision", "fp16-storage", NULL);
    mpcl_caps c = default_caps();
    if (c.fp16_storage.passed) {
        RC(r, 0);
        HAS(r.out, "fp16-storage");
    } else {
        RC(r, 4);
    }
    if (known_pocl(&c))
        RC(r, 0);
    result_free(&r);
}
END_TEST

static cJSON *path_get(cJSON *root, const char *a, const char *b);

/* bf16: the probe reports check (d) and the cl_intel_bfloat16 verdict in
 * text and JSON, and chooses bf16 when asked (auto never does). */
START_TEST(test_precision_bf16)
{
    mpcl_caps c = default_caps();
    result r = mpcl_run(NULL, "probe", "--precision", "bf16", NULL);
    RC(r, c.bf16_storage.passed ? 0 : 4);
    if (c.bf16_storage.passed) {
        HAS(r.out, "bf16 storage");
        HAS(r.out, "bf16 intel built-ins");
        HAS(r.out, "cl_intel_bfloat16");
        HAS(r.out, "chosen                   bf16");
    }
    result_free(&r);
    r = mpcl_run(NULL, "probe", "--precision", "bf16", "--json", NULL);
    if (c.bf16_storage.passed) {
        RC(r, 0);
        cJSON *doc = cJSON_Parse(r.out);
        ck_assert_msg(doc != NULL, "stdout is not JSON:\n%s", r.out);
        cJSON *st = path_get(doc, "checks", "bf16_storage");
        cJSON *sp = cJSON_GetObjectItemCaseSensitive(st, "passed");
        ck_assert(cJSON_IsTrue(sp));
        cJSON *bi = path_get(doc, "checks", "bf16_intel_conversions");
        const char *keys[4] = {"present", "verified", "used", "reason"};
        for (int i = 0; i < 4; i++)
            ck_assert_msg(cJSON_GetObjectItemCaseSensitive(bi, keys[i]) != NULL, "no '%s'", keys[i]);
        ck_assert_int_eq(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bi, "present")),
                         c.ext_bf16_intel);
        ck_assert_int_eq(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bi, "used")), c.bf16_intel_used);
        cJSON *ext = path_get(doc, "device", "extensions");
        ck_assert(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(ext, "cl_intel_bfloat16")));
        ck_assert_str_eq(path_get(doc, "precision", "chosen")->valuestring, "bf16");
        cJSON_Delete(doc);
    }
    if (known_pocl(&c)) /* integer operations work on every OpenCL 1.2 device */
        RC(r, 0);
    result_free(&r);
}
END_TEST

static cJSON *path_get(cJSON *root, const char *a, const char *b)
{
    cJSON *o = cJSON_GetObjectItemCaseSensitive(root, a);
    ck_assert_msg(cJSON_IsObject(o), "no object '%s'", a);
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, b);
    ck_assert_msg(v != NULL, "no '%s.%s'", a, b);
    return v;
}

START_TEST(test_probe_json)
{
    result r = mpcl_run(NULL, "probe", "--json", NULL);
    RC(r, 0);
    const char *end = NULL;
    cJSON *doc = cJSON_ParseWithOpts(r.out, &end, 1); /* nothing but JSON on stdout */
    ck_assert_msg(doc != NULL, "stdout is not JSON (parse stopped at: %.60s)\n%s", end ? end : "?", r.out);
    ck_assert(cJSON_IsObject(doc));
    cJSON *checks = cJSON_GetObjectItemCaseSensitive(doc, "checks");
    ck_assert(cJSON_IsObject(checks));
    cJSON *storage = cJSON_GetObjectItemCaseSensitive(checks, "fp16_storage");
    cJSON *sp = cJSON_GetObjectItemCaseSensitive(storage, "passed");
    ck_assert(cJSON_IsBool(sp));
    cJSON *arith = cJSON_GetObjectItemCaseSensitive(checks, "fp16_arithmetic");
    cJSON *ap = cJSON_GetObjectItemCaseSensitive(arith, "passed");
    ck_assert(cJSON_IsBool(ap));
    cJSON *chosen = path_get(doc, "precision", "chosen");
    ck_assert(cJSON_IsString(chosen));
    cJSON *requested = path_get(doc, "precision", "requested");
    ck_assert(cJSON_IsString(requested));
    ck_assert_str_eq(requested->valuestring, "auto");
    cJSON *why = path_get(doc, "precision", "why");
    ck_assert(cJSON_IsString(why) && why->valuestring[0] != '\0');
    /* auto: fp16 exactly when the arithmetic check passed */
    ck_assert_str_eq(chosen->valuestring, cJSON_IsTrue(ap) ? "fp16" : "fp32");
    cJSON *name = path_get(doc, "device", "name");
    ck_assert(cJSON_IsString(name));
    cJSON *cu = path_get(doc, "device", "compute_units");
    ck_assert(cJSON_IsNumber(cu) && cu->valuedouble >= 1);

    /* against the library's own view of the same device */
    mpcl_caps c = default_caps();
    ck_assert_str_eq(name->valuestring, c.device);
    ck_assert_int_eq(cJSON_IsTrue(sp), c.fp16_storage.passed);
    ck_assert_int_eq(cJSON_IsTrue(ap), c.fp16_arith_check.passed);
    ck_assert_int_eq((int)cu->valuedouble, (int)c.compute_units);
    if (known_pocl(&c)) {
        ck_assert(cJSON_IsTrue(sp));
        ck_assert_str_eq(chosen->valuestring, "fp32");
        cJSON *hg = cJSON_GetObjectItemCaseSensitive(checks, "clblast_hgemm");
        cJSON *hr = cJSON_GetObjectItemCaseSensitive(hg, "reason");
        ck_assert(cJSON_IsString(hr));
        HAS(hr->valuestring, "CLBlastNoHalfPrecision");
    }
    cJSON_Delete(doc);
    result_free(&r);
}
END_TEST

int main(void)
{
    tu_clean_env();
    const char *bin = getenv("MPCL_BIN");
    if (!bin || !tu_exists(bin)) {
        fprintf(stderr, "test_cli: MPCL_BIN (%s) does not name the built mpcl binary\n",
                bin ? bin : "unset");
        return 1;
    }
    Suite *s = suite_create("cli");
    TCase *usage = tcase_create("usage");
    tcase_add_test(usage, test_usage_errors);
    tcase_add_test(usage, test_help_and_version);
    tcase_add_test(usage, test_no_platform);
    suite_add_tcase(s, usage);
    tu_device_info dev;
    tu_probe_device(&dev);
    if (tu_no_device(&dev)) {
        fprintf(stderr, "test_cli: no OpenCL device (%s: %s): skipped\n",
                mpcl_status_name((mpcl_status)dev.status), dev.message);
        return TU_EXIT_SKIP;
    }
    TCase *tc = tcase_create("device");
    tcase_add_test(tc, test_no_matching_device);
    tcase_add_test(tc, test_list);
    tcase_add_test(tc, test_precision_fp16);
    tcase_add_test(tc, test_precision_storage);
    tcase_add_test(tc, test_precision_bf16);
    tcase_add_test(tc, test_probe_json);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
