/* test_bench_cli.c — `mpcl bench train`: the JSON document's shape (never
 * the speed: tests assert no timings), the device-time breakdown's
 * bookkeeping, `--precision all` listing refused modes, and usage errors
 * (exit 2). Runs the built binary ($MPCL_BIN) without a shell; the suite's
 * parent process never calls OpenCL. Every run is a few steps of batch 8 on
 * synthetic data, so the suite needs no data set. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "testutil.h"

#define HAS(hay, needle) \
    ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

typedef tu_result result;
#define mpcl_run tu_mpcl_run
#define result_free tu_result_free
#define RC TU_RC

static int g_storage_passed, g_arith_passed, g_bf16_passed;

static cJSON *get(const cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(v != NULL, "the JSON lacks '%s'", key);
    return v;
}

static double num(const cJSON *o, const char *key)
{
    cJSON *v = get(o, key);
    ck_assert_msg(cJSON_IsNumber(v), "'%s' is not a number", key);
    return v->valuedouble;
}

static const char *str(const cJSON *o, const char *key)
{
    cJSON *v = get(o, key);
    ck_assert_msg(cJSON_IsString(v), "'%s' is not a string", key);
    return v->valuestring;
}

/* Checks one entry of "modes"; profile_steps > 0 means a breakdown. */
static void check_mode(const cJSON *m, const char *want_precision, int steps, int batch,
                       int rounds, int profile_steps)
{
    ck_assert_str_eq(str(m, "precision"), want_precision);
    ck_assert(strlen(str(m, "why")) > 0);
    double img_s = num(m, "img_s"), ms = num(m, "ms_per_step");
    ck_assert_msg(isfinite(img_s) && img_s > 0, "img_s %g", img_s);
    ck_assert_msg(isfinite(ms) && ms > 0, "ms_per_step %g", ms);
    cJSON *r = get(m, "rounds_img_s");
    ck_assert(cJSON_IsArray(r));
    ck_assert_int_eq(cJSON_GetArraySize(r), rounds);
    /* warm-up 1 step, steps per round, then the profiled steps */
    ck_assert_int_eq((int)num(m, "total_steps"), 1 + steps * rounds + profile_steps);
    ck_assert(isfinite(num(m, "final_loss")) && num(m, "final_loss") >= 0);
    ck_assert(num(m, "loss_scale") > 0);
    cJSON *dt = get(m, "device_time");
    if (!profile_steps) {
        ck_assert(cJSON_IsNull(dt));
        return;
    }
    ck_assert(cJSON_IsObject(dt));
    ck_assert_int_eq((int)num(dt, "profiled_steps"), profile_steps);
    double total = num(dt, "ms_per_step");
    ck_assert(total > 0);
    /* the families partition the kernels: shares sum to 1, times to the total */
    double fam_ms = 0, fam_share = 0, k_ms = 0;
    int conv = 0, pool = 0, gemm = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, get(dt, "families"))
    {
        const char *f = str(e, "family");
        conv |= strcmp(f, "conv_direct") == 0; /* cl/conv_direct.cl */
        pool |= strcmp(f, "pool") == 0;
        gemm |= strcmp(f, "gemm") == 0;
        ck_assert_msg(strcmp(f, "other") != 0, "a kernel of the seed CNN has no family");
        fam_ms += num(e, "ms_per_step");
        fam_share += num(e, "share");
    }
    ck_assert_msg(conv && pool && gemm, "the seed CNN runs conv, pool and gemm kernels");
    ck_assert_msg(fabs(fam_share - 1.0) < 1e-9, "family shares sum to %.12f", fam_share);
    ck_assert_msg(fabs(fam_ms - total) <= 1e-9 * total, "families %g ms, total %g ms", fam_ms, total);
    int direct_fwd = 0;
    cJSON_ArrayForEach(e, get(dt, "kernels"))
    {
        const char *name = str(e, "name");
        if (strcmp(name, "conv_direct_forward") == 0) {
            direct_fwd = 1;
            ck_assert_str_eq(str(e, "family"), "conv_direct");
            /* one launch per step, exactly */
            ck_assert(num(e, "launches_per_step") == 1.0);
        }
        ck_assert(num(e, "launches_per_step") > 0);
        k_ms += num(e, "ms_per_step");
    }
    ck_assert_msg(direct_fwd, "the seed CNN's conv runs conv_direct_forward");
    ck_assert_msg(fabs(k_ms - total) <= 1e-9 * total, "kernels %g ms, total %g ms", k_ms, total);
    (void)batch;
}

static cJSON *parse_out(const result *r)
{
    cJSON *root = cJSON_Parse(r->out);
    ck_assert_msg(root != NULL && cJSON_IsObject(root), "not a JSON object:\n%s", r->out);
    ck_assert_int_eq((int)num(root, "schema"), 1);
    ck_assert_str_eq(str(root, "bench"), "train");
    cJSON *d = get(root, "device");
    ck_assert(strlen(str(d, "name")) > 0);
    ck_assert(strlen(str(d, "platform")) > 0);
    ck_assert(num(d, "compute_units") >= 1);
    return root;
}

START_TEST(test_bench_fp32)
{
    result r = mpcl_run(NULL, "bench", "train", "--synthetic", "--batch", "8", "--steps", "3",
                        "--warmup", "1", "--rounds", "2", "--profile-steps", "2", "--precision",
                        "fp32", NULL);
    RC(r, 0);
    cJSON *root = parse_out(&r);
    cJSON *st = get(root, "settings");
    ck_assert_str_eq(str(st, "data"), "synthetic");
    HAS(str(st, "model"), "seed-cnn");
    ck_assert_int_eq((int)num(st, "batch"), 8);
    ck_assert_int_eq((int)num(st, "steps"), 3);
    ck_assert_int_eq((int)num(st, "parameters"), 14780);
    cJSON *modes = get(root, "modes");
    ck_assert_int_eq(cJSON_GetArraySize(modes), 1);
    check_mode(cJSON_GetArrayItem(modes, 0), "fp32", 3, 8, 2, 2);
    ck_assert(num(cJSON_GetArrayItem(modes, 0), "relative_to_first") == 1.0);
    ck_assert_int_eq(cJSON_GetArraySize(get(root, "skipped")), 0);
    cJSON_Delete(root);
    result_free(&r);
}
END_TEST

START_TEST(test_bench_all)
{
    result r = mpcl_run(NULL, "bench", "train", "--synthetic", "--batch", "4", "--steps", "2",
                        "--warmup", "1", "--profile-steps", "0", "--precision", "all", NULL);
    RC(r, 0);
    cJSON *root = parse_out(&r);
    cJSON *modes = get(root, "modes"), *skipped = get(root, "skipped");
    int want = 1 + g_storage_passed + g_arith_passed + g_bf16_passed;
    ck_assert_int_eq(cJSON_GetArraySize(modes), want);
    ck_assert_int_eq(cJSON_GetArraySize(skipped), 4 - want);
    cJSON *e;
    cJSON_ArrayForEach(e, modes)
    {
        check_mode(e, str(e, "requested"), 2, 4, 1, 0);
    }
    cJSON_ArrayForEach(e, skipped)
    {
        ck_assert(strlen(str(e, "reason")) > 0);
        str(e, "precision");
    }
    if (!g_arith_passed) /* the fp16 mode is listed with the device's reason */
        HAS(str(cJSON_GetArrayItem(skipped, 0), "precision"), "fp16");
    cJSON_Delete(root);
    result_free(&r);
}
END_TEST

START_TEST(test_bench_usage)
{
    static const char *const bad[][4] = {
        {"--steps", "0", NULL, "--steps"},
        {"--batch", "x", NULL, "--batch"},
        {"--precision", "fp8", NULL, "fp8"},
        {"--precision", "fp32,fp32", NULL, "twice"},
        {"--precision", "fp32,", NULL, "empty"},
        {"--rounds", "0", NULL, "--rounds"},
        {"--bogus", NULL, NULL, "--bogus"},
        {"--synthetic", "--data", "/nonexistent", "do not go together"},
        {"stray", NULL, NULL, "stray"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        result r = mpcl_run(NULL, "bench", "train", bad[i][0], bad[i][1], bad[i][2], NULL);
        RC(r, 2);
        HAS(r.err, bad[i][3]);
        result_free(&r);
    }
    result r = mpcl_run(NULL, "bench", "nothing", NULL);
    RC(r, 2);
    HAS(r.err, "unknown benchmark");
    result_free(&r);
    r = mpcl_run(NULL, "bench", NULL);
    RC(r, 2);
    HAS(r.err, "usage: mpcl bench train");
    result_free(&r);
    r = mpcl_run(NULL, "bench", "train", "--model", "no-such-model", NULL);
    RC(r, 2);
    HAS(r.err, "no-such-model");
    result_free(&r);
    r = mpcl_run(NULL, "bench", "train", "--help", NULL);
    RC(r, 0);
    HAS(r.out, "usage: mpcl bench train");
    HAS(r.out, "--profile-steps");
    result_free(&r);
    r = mpcl_run(NULL, "help", "bench", NULL);
    RC(r, 0);
    HAS(r.out, "usage: mpcl bench train");
    result_free(&r);
    /* a data directory without the IDX files is a runtime error */
    char *dir = tu_mkdtemp("bench-empty");
    r = mpcl_run(NULL, "bench", "train", "--data", dir, "--steps", "1", NULL);
    RC(r, 1);
    HAS(r.err, "train-images-idx3-ubyte");
    result_free(&r);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    if (!tu_cli_init("test_bench_cli"))
        return 1;
    Suite *s = suite_create("bench_cli");
    TCase *usage = tcase_create("usage");
    tcase_add_test(usage, test_bench_usage);
    suite_add_tcase(s, usage);

    tu_device_info dev;
    tu_probe_device(&dev);
    if (tu_no_device(&dev)) {
        fprintf(stderr, "test_bench_cli: no OpenCL device (%s: %s): the bench runs are skipped\n",
                mpcl_status_name((mpcl_status)dev.status), dev.message);
    } else {
        g_storage_passed = dev.storage_passed;
        g_bf16_passed = dev.bf16_passed;
        g_arith_passed = dev.arith_passed;
        TCase *tc = tcase_create("bench");
        tcase_set_timeout(tc, 240);
        tcase_add_test(tc, test_bench_fp32);
        tcase_add_test(tc, test_bench_all);
        suite_add_tcase(s, tc);
    }
    return tu_run_suite(s);
}
