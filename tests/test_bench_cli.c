/* test_bench_cli.c — `mpcl bench train` and `mpcl bench gemm`: the JSON
 * documents' shape (never the speed: tests assert no timings), the
 * device-time breakdown's bookkeeping, `--precision all` listing refused
 * modes, `--model all`, GEMM results checked before they are timed, no
 * line of CLBlast's own on stderr, and usage errors (exit 2). Runs the
 * built binary ($MPCL_BIN) without a shell; the suite's parent process
 * never calls OpenCL. Every training run is a few steps of small batches on
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

static int g_storage_passed, g_arith_passed, g_bf16_passed, g_ext_fp16;

/* No line of CLBlast's own ("CLBlast: Run-time error: -2045") reaches stderr. */
#define NO_CLBLAST_LINE(r)                                                                     \
    ck_assert_msg(strstr((r).err, "CLBlast:") == NULL, "stderr has CLBlast's line:\n%s", (r).err)

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


/* One timing object of bench gemm: sane numbers, and the product checked. */
static void check_timing(const cJSON *t, double m, double n)
{
    ck_assert(cJSON_IsObject(t));
    double g = num(t, "gflops"), med = num(t, "median_ms"), lo = num(t, "min_ms"),
           hi = num(t, "max_ms");
    ck_assert_msg(isfinite(g) && g > 0, "gflops %g", g);
    ck_assert_msg(lo > 0 && lo <= med && med <= hi, "min %g median %g max %g", lo, med, hi);
    ck_assert_int_eq((int)num(t, "repeats"), 2);
    ck_assert(num(t, "calls_per_repeat") >= 1);
    /* small shapes: every entry of C was compared, exactly */
    ck_assert_msg(num(t, "checked") == m * n, "checked %g of %g", num(t, "checked"), m * n);
    ck_assert(cJSON_IsTrue(get(t, "exact")));
}

START_TEST(test_gemm_json)
{
    result r = mpcl_run(NULL, "bench", "gemm", "--shapes", "64x48x40,37x29x45:nt", "--repeats", "2",
                        "--min-repeat-ms", "1", NULL);
    RC(r, 0);
    NO_CLBLAST_LINE(r);
    cJSON *root = cJSON_Parse(r.out);
    ck_assert_msg(root != NULL && cJSON_IsObject(root), "not a JSON object:\n%s", r.out);
    ck_assert_int_eq((int)num(root, "schema"), 1);
    ck_assert_str_eq(str(root, "bench"), "gemm");
    ck_assert(strlen(str(get(root, "device"), "name")) > 0);
    cJSON *cpu = get(root, "cpu");
    ck_assert(cJSON_IsString(cpu) || cJSON_IsNull(cpu));
    ck_assert_int_eq((int)num(get(root, "settings"), "repeats"), 2);
    cJSON *modes = get(root, "modes"), *skipped = get(root, "skipped");
    /* single always; half where the device declares cl_khr_fp16 and the probe
     * verified half arithmetic, else listed under skipped with the reason */
    int half = g_arith_passed && g_ext_fp16;
    ck_assert_int_eq(cJSON_GetArraySize(modes), 1 + half);
    ck_assert_int_eq(cJSON_GetArraySize(skipped), 1 - half);
    if (!half) {
        cJSON *sk = cJSON_GetArrayItem(skipped, 0);
        ck_assert_str_eq(str(sk, "precision"), "half");
        HAS(str(sk, "reason"), "Hgemm");
    }
    static const double dims[2][3] = {{64, 48, 40}, {37, 29, 45}};
    static const char *const names[2] = {"64x48x40:nn", "37x29x45:nt"};
    for (int p = 0; p < 1 + half; p++) {
        cJSON *m = cJSON_GetArrayItem(modes, p);
        ck_assert_str_eq(str(m, "precision"), p ? "half" : "single");
        ck_assert_str_eq(str(m, "routine"), p ? "CLBlastHgemm" : "CLBlastSgemm");
        cJSON *shapes = get(m, "shapes");
        ck_assert_int_eq(cJSON_GetArraySize(shapes), 2);
        for (int i = 0; i < 2; i++) {
            cJSON *e = cJSON_GetArrayItem(shapes, i);
            ck_assert_str_eq(str(e, "shape"), names[i]);
            ck_assert(num(e, "m") == dims[i][0] && num(e, "n") == dims[i][1] &&
                      num(e, "k") == dims[i][2]);
            ck_assert_str_eq(str(e, "transpose"), i ? "nt" : "nn");
            ck_assert(fabs(num(e, "gflop") - 2e-9 * dims[i][0] * dims[i][1] * dims[i][2]) < 1e-12);
            check_timing(get(e, "untuned"), dims[i][0], dims[i][1]);
            cJSON *t = get(e, "tuned"), *ratio = get(e, "tuned_over_untuned");
            if (cJSON_IsNull(t)) { /* no tuning for the device: null, with the reason */
                ck_assert(strlen(str(e, "tuned_reason")) > 0);
                ck_assert(cJSON_IsNull(ratio));
            } else {
                check_timing(t, dims[i][0], dims[i][1]);
                ck_assert(cJSON_IsNumber(ratio) && ratio->valuedouble > 0);
            }
            if (p == 0) { /* the router's Sgemm, as training runs it, tuned or not */
                check_timing(get(e, "routed"), dims[i][0], dims[i][1]);
                const char *kern = str(e, "routed_kernel");
                ck_assert_msg(strcmp(kern, "CLBlast") == 0 || strncmp(kern, "own MR ", 7) == 0, "%s", kern);
                if (cJSON_IsNull(t))
                    ck_assert(cJSON_IsNull(get(e, "routed_over_tuned")));
            } else {
                ck_assert(!cJSON_HasObjectItem(e, "routed"));
            }
        }
    }
    cJSON_Delete(root);
    result_free(&r);

    /* only the tuned figures: never an untuned one */
    r = mpcl_run(NULL, "bench", "gemm", "--shapes", "16x16x16", "--precision", "single",
                 "--tuning", "tuned", "--repeats", "1", "--min-repeat-ms", "0", NULL);
    RC(r, 0);
    root = cJSON_Parse(r.out);
    ck_assert_ptr_nonnull(root);
    cJSON *e = cJSON_GetArrayItem(get(cJSON_GetArrayItem(get(root, "modes"), 0), "shapes"), 0);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(e, "untuned"));
    get(e, "tuned");
    cJSON_Delete(root);
    result_free(&r);

    /* half named explicitly on a device without it is refused (exit 4) */
    if (!half) {
        r = mpcl_run(NULL, "bench", "gemm", "--shapes", "16x16x16", "--precision", "half", NULL);
        RC(r, 4);
        HAS(r.err, "half");
        NO_CLBLAST_LINE(r);
        result_free(&r);
    }
}
END_TEST

/* CLBlast's stderr line never reaches the terminal: the probe runs Hgemm
 * only where it can run, and the tools keep CLBlast's line to themselves. */
START_TEST(test_no_clblast_stderr)
{
    result r = mpcl_run(NULL, "probe", NULL);
    RC(r, 0);
    NO_CLBLAST_LINE(r);
    result_free(&r);
    r = mpcl_run(NULL, "probe", "--bench", "--gemm-n", "64", NULL);
    RC(r, 0);
    NO_CLBLAST_LINE(r);
    result_free(&r);
    r = mpcl_run(NULL, "bench", "train", "--synthetic", "--batch", "4", "--steps", "1", "--warmup",
                 "1", "--profile-steps", "0", "--precision", "all", NULL);
    RC(r, 0);
    NO_CLBLAST_LINE(r);
    result_free(&r);
}
END_TEST

START_TEST(test_train_all_models)
{
    result r = mpcl_run(NULL, "bench", "train", "--model", "all", "--synthetic", "--batch", "4",
                        "--steps", "1", "--warmup", "1", "--profile-steps", "0", NULL);
    RC(r, 0);
    cJSON *root = cJSON_Parse(r.out);
    ck_assert_msg(root != NULL && cJSON_IsObject(root), "not a JSON object:\n%s", r.out);
    ck_assert_int_eq((int)num(root, "schema"), 1);
    ck_assert_str_eq(str(root, "bench"), "train");
    cJSON *models = get(root, "models");
    ck_assert(cJSON_IsArray(models));
    static const char *const want[] = {"lenet5.txt", "mlp.txt", "seed-cnn.txt", "wide-cnn.txt"};
    int seen[4] = {0};
    cJSON *m;
    cJSON_ArrayForEach(m, models)
    {
        /* each entry is a whole single-model document */
        ck_assert_str_eq(str(m, "bench"), "train");
        const char *path = str(get(m, "settings"), "model");
        for (int i = 0; i < 4; i++) {
            size_t lp = strlen(path), lw = strlen(want[i]);
            if (lp >= lw && strcmp(path + lp - lw, want[i]) == 0 &&
                (lp == lw || path[lp - lw - 1] == '/'))
                seen[i]++;
        }
        cJSON *modes = get(m, "modes");
        ck_assert_int_eq(cJSON_GetArraySize(modes), 1);
        cJSON *e = cJSON_GetArrayItem(modes, 0);
        ck_assert_str_eq(str(e, "precision"), "fp32");
        ck_assert(num(e, "img_s") > 0);
        ck_assert_int_eq((int)num(e, "total_steps"), 2);
    }
    for (int i = 0; i < 4; i++)
        ck_assert_msg(seen[i] == 1, "%s appears %d times", want[i], seen[i]);
    cJSON_Delete(root);
    result_free(&r);
}
END_TEST

START_TEST(test_gemm_usage)
{
    static const char *const bad[][3] = {
        {"--shapes", "12x12", "--shapes"},
        {"--shapes", "0x4x4", "--shapes"},
        {"--shapes", "4x4x4x4", "--shapes"},
        {"--shapes", "axbxc", "--shapes"},
        {"--shapes", "4x4x4:xx", "--shapes"},
        {"--shapes", "4x4x4:", "--shapes"},
        {"--shapes", "4x4x4,", "empty"},
        {"--shapes", "4xx4x4", "--shapes"},
        {"--shapes", "65537x1x1", "--shapes"},
        {"--shapes", "", "--shapes"},
        {"--precision", "double", "--precision"},
        {"--precision", "single,single", "twice"},
        {"--tuning", "fast", "--tuning"},
        {"--repeats", "0", "--repeats"},
        {"--min-repeat-ms", "-1", "--min-repeat-ms"},
        {"--bogus", NULL, "--bogus"},
        {"stray", NULL, "stray"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        result r = mpcl_run(NULL, "bench", "gemm", bad[i][0], bad[i][1], NULL);
        RC(r, 2);
        HAS(r.err, bad[i][2]);
        ck_assert_str_eq(r.out, "");
        result_free(&r);
    }
    result r = mpcl_run(NULL, "bench", "gemm", "--help", NULL);
    RC(r, 0);
    HAS(r.out, "usage: mpcl bench gemm");
    HAS(r.out, "--shapes");
    result_free(&r);
    r = mpcl_run(NULL, "bench", "--help", NULL);
    RC(r, 0);
    HAS(r.out, "mpcl bench gemm");
    result_free(&r);
}
END_TEST

int main(void)
{
    if (!tu_cli_init("test_bench_cli"))
        return 1;
    Suite *s = suite_create("bench_cli");
    TCase *usage = tcase_create("usage");
    tcase_add_test(usage, test_bench_usage);
    tcase_add_test(usage, test_gemm_usage);
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
        g_ext_fp16 = dev.ext_fp16;
        TCase *tc = tcase_create("bench");
        tcase_set_timeout(tc, 240);
        tcase_add_test(tc, test_bench_fp32);
        tcase_add_test(tc, test_bench_all);
        tcase_add_test(tc, test_gemm_json);
        tcase_add_test(tc, test_no_clblast_stderr);
        tcase_add_test(tc, test_train_all_models);
        suite_add_tcase(s, tc);
    }
    return tu_run_suite(s);
}
