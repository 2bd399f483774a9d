/* test_tune.c — the CLBlast tuner (src/tune.c) and the tuning cache
 * (src/tuning.c): a search over a tiny space stores an entry that a second
 * context applies without searching; a wrong parameter set is rejected by
 * the exactness check; a corrupt or stale cache file is ignored with a
 * message; shape recording counts a model's GEMMs; MPCL_TUNE=0 and
 * --no-tune never search. Each test has its own cache directory. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "internal.h"
#include "testutil.h"

#define HAS(hay, needle) ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

static mpcl_context *open_ctx(const char *cache, int own)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    opt.cache_dir = cache;
    opt.clblast_own = own;
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
    return ctx;
}

static char *cache_file(mpcl_context *ctx)
{
    char *p = malloc(MPCL_PATH_LEN + 64);
    ck_assert_ptr_nonnull(p);
    mpcl_tuning_path(ctx, p, MPCL_PATH_LEN + 64);
    return p;
}

/* A GEMM through the router, checked against the host on small integers
 * (exact in float): whatever parameters are in force must be right. */
static void check_gemm_exact(mpcl_context *ctx, size_t m, size_t n, size_t k)
{
    float *a = malloc(m * k * 4), *b = malloc(k * n * 4), *c = malloc(m * n * 4);
    ck_assert(a && b && c);
    for (size_t i = 0; i < m * k; i++)
        a[i] = (float)((int)(i % 7) - 3);
    for (size_t i = 0; i < k * n; i++)
        b[i] = (float)((int)(i % 5) - 2);
    mpcl_tensor *ta, *tb, *tc;
    const size_t sa[2] = {m, k}, sb[2] = {k, n}, sc[2] = {m, n};
    ck_assert_int_eq(mpcl_tensor_create(ctx, MPCL_F32, 2, sa, MPCL_MEM_SCRATCH, &ta), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_create(ctx, MPCL_F32, 2, sb, MPCL_MEM_SCRATCH, &tb), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_create(ctx, MPCL_F32, 2, sc, MPCL_MEM_SCRATCH, &tc), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_upload(ta, a, m * k), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_upload(tb, b, k * n), MPCL_OK);
    ck_assert_msg(mpcl_gemm(ctx, 0, 0, 1.0f, ta, tb, 0.0f, tc) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_int_eq(mpcl_tensor_download(tc, c, m * n), MPCL_OK);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t p = 0; p < k; p++)
                s += (double)a[i * k + p] * b[p * n + j];
            ck_assert_msg(c[i * n + j] == (float)s, "C[%zu][%zu] = %g, exact %g", i, j, (double)c[i * n + j], s);
        }
    mpcl_tensor_destroy(ta);
    mpcl_tensor_destroy(tb);
    mpcl_tensor_destroy(tc);
    free(a);
    free(b);
    free(c);
}

/* --------------------------------------------------- search and reuse */

static unsigned g_progress_calls;
static void count_progress(const mpcl_tune_progress *p, void *user)
{
    (void)user;
    ck_assert_str_eq(p->precision, "single");
    g_progress_calls++;
}

START_TEST(test_search_store_reuse)
{
    char *dir = tu_mkdtemp("tune");
    mpcl_context *ctx = open_ctx(dir, 1);
    HAS(mpcl_tuning_describe(ctx), "own parameters");
    ck_assert_int_eq(mpcl_tune_cached(ctx, MPCL_TUNE_SINGLE), 0);
    /* a tiny space: one shape, one candidate, CLBlast's own measured first */
    const mpcl_gemm_shape shape = {0, 0, 1, 40, 24, 56, 1, 2};
    mpcl_tune_options o;
    mpcl_tune_options_init(&o);
    o.shapes = &shape;
    o.shape_count = 1;
    o.precisions = MPCL_TUNE_SINGLE;
    o.max_candidates = 1;
    o.budget_s = 1; /* one candidate always runs; no threshold run after it */
    o.progress = count_progress;
    g_progress_calls = 0;
    mpcl_tune_result r;
    mpcl_status s = mpcl_tune(ctx, &o, &r);
    ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
    printf("tune: %s\n", r.summary);
    ck_assert_int_eq(r.searched, 1);
    ck_assert_uint_eq(r.candidates, 1);
    ck_assert(r.tuned_gflops > 0);
    ck_assert(r.stock_gflops > 0); /* measured: the context was on CLBlast's own */
    ck_assert_uint_ge(g_progress_calls, 2);
    check_gemm_exact(ctx, 40, 24, 56); /* the applied winner computes right */

    /* the file: the documented format, this device, the winner's parameters */
    char *path = cache_file(ctx);
    ck_assert_str_eq(path, r.path);
    char *text = tu_read_file(path, NULL);
    ck_assert_ptr_nonnull(text);
    cJSON *root = cJSON_Parse(text);
    ck_assert_ptr_nonnull(root);
    ck_assert_str_eq(cJSON_GetObjectItem(root, "format")->valuestring, "mpcl-clblast-tuning");
    const cJSON *single = cJSON_GetObjectItem(root, "single");
    ck_assert_ptr_nonnull(single);
    /* the winner's parameters, or CLBlast's own where they were not slower */
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(single, "own")) ||
              cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetObjectItem(single, "Xgemm"), "MWG")));
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(single, "tried")), 1);
    const cJSON *sh = cJSON_GetArrayItem(cJSON_GetObjectItem(single, "shapes"), 0);
    ck_assert_int_eq((int)cJSON_GetObjectItem(sh, "k")->valuedouble, 56);
    ck_assert_int_eq((int)cJSON_GetObjectItem(sh, "trans_b")->valuedouble, 1);
    cJSON_Delete(root);
    free(text);
    mpcl_context_destroy(ctx);

    /* a second context applies the entry, and a second tune searches nothing */
    ctx = open_ctx(dir, 0);
    HAS(mpcl_tuning_describe(ctx), "(cache)");
    ck_assert_int_eq(mpcl_tune_cached(ctx, MPCL_TUNE_SINGLE), 1);
    g_progress_calls = 0;
    s = mpcl_tune(ctx, &o, &r);
    ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_int_eq(r.searched, 0);
    ck_assert_uint_eq(g_progress_calls, 0);
    check_gemm_exact(ctx, 67, 33, 29);
    mpcl_context_destroy(ctx);
    free(path);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------- wrong sets rejected */

/* Writes a cache entry for ctx's device with the given Xgemm values. */
static void write_entry(mpcl_context *ctx, const size_t *xgemm, const char *clblast)
{
    cJSON *root = cJSON_CreateObject();
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)mpcl_device_hash(ctx));
    cJSON_AddStringToObject(root, "format", "mpcl-clblast-tuning");
    cJSON_AddNumberToObject(root, "version", MPCL_TUNING_FORMAT_VERSION);
    cJSON_AddStringToObject(root, "device_hash", hash);
    cJSON_AddStringToObject(root, "clblast", clblast);
    cJSON *e = cJSON_AddObjectToObject(root, "single");
    cJSON *x = cJSON_AddObjectToObject(e, "Xgemm");
    for (int i = 0; i < MPCL_XGEMM_NPARAMS; i++)
        cJSON_AddNumberToObject(x, mpcl_xgemm_param_names[i], (double)xgemm[i]);
    cJSON_AddNumberToObject(e, "XGEMM_MIN_INDIRECT_SIZE", 1);
    char *text = cJSON_Print(root);
    char *path = cache_file(ctx);
    ck_assert_int_eq(tu_write_file(path, text, strlen(text)), 0);
    free(path);
    free(text);
    cJSON_Delete(root);
}

/* NWG 12 is not a multiple of NDIMC x VWN = 8: CLBlast accepts the set and
 * its kernel computes only 8 of every 12 columns (its own tuner's
 * constraints exclude it; mpcl's check must catch it). */
static const size_t WRONG_SET[MPCL_XGEMM_NPARAMS] = {0, 1, 32, 1, 1, 1, 32, 1, 1, 12, 0, 0, 0, 0, 16, 8};

START_TEST(test_wrong_set_rejected)
{
    char *dir = tu_mkdtemp("tune-wrong");
    mpcl_context *ctx = open_ctx(dir, 0);
    write_entry(ctx, WRONG_SET, mpcl_clblast_version());
    mpcl_context_destroy(ctx);
    ctx = open_ctx(dir, 0);
    const char *d = mpcl_tuning_describe(ctx);
    printf("wrong set: %s\n", d);
    HAS(d, "cached single tuning rejected");
    ck_assert_int_eq(ctx->tuning_cached[0], 0);
    check_gemm_exact(ctx, 40, 36, 56); /* the rejected set is not in force */
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_corrupt_and_stale_ignored)
{
    char *dir = tu_mkdtemp("tune-corrupt");
    mpcl_context *ctx = open_ctx(dir, 0);
    char *path = cache_file(ctx);
    mpcl_context_destroy(ctx);
    static const char *bad[] = {
        "{\"format\": \"mpcl-clblast-tuning\", \"version\": 1, \"single\": {", /* truncated */
        "\x01\x02 not json",
        "[1, 2, 3]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(tu_write_file(path, bad[i], strlen(bad[i])), 0);
        ctx = open_ctx(dir, 0);
        HAS(mpcl_tuning_describe(ctx), "CLBlast tuning cache ignored");
        HAS(mpcl_tuning_describe(ctx), "not valid JSON");
        ck_assert_int_eq(mpcl_tune_cached(ctx, MPCL_TUNE_SINGLE), 0);
        check_gemm_exact(ctx, 19, 23, 17);
        mpcl_context_destroy(ctx);
    }
    /* a valid entry written by another CLBlast: stale */
    ctx = open_ctx(dir, 0);
    static const size_t good[MPCL_XGEMM_NPARAMS] = {0, 1, 32, 1, 1, 1, 32, 1, 1, 12, 0, 0, 0, 0, 16, 4};
    write_entry(ctx, good, "0.0.1");
    mpcl_context_destroy(ctx);
    ctx = open_ctx(dir, 0);
    HAS(mpcl_tuning_describe(ctx), "another CLBlast version (stale)");
    ck_assert_int_eq(mpcl_tune_cached(ctx, MPCL_TUNE_SINGLE), 0);
    /* a missing parameter: named */
    char *text = tu_read_file(path, NULL);
    mpcl_context_destroy(ctx);
    cJSON *root = cJSON_Parse(text);
    cJSON_ReplaceItemInObject(root, "clblast", cJSON_CreateString(mpcl_clblast_version()));
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "single"), "Xgemm"), "VWN");
    char *t2 = cJSON_Print(root);
    ck_assert_int_eq(tu_write_file(path, t2, strlen(t2)), 0);
    ctx = open_ctx(dir, 0);
    HAS(mpcl_tuning_describe(ctx), "Xgemm.VWN is missing");
    mpcl_context_destroy(ctx);
    /* an entry of format version 1 (sets measured on row-major calls): stale */
    cJSON_ReplaceItemInObject(root, "version", cJSON_CreateNumber(1));
    free(t2);
    t2 = cJSON_Print(root);
    ck_assert_int_eq(tu_write_file(path, t2, strlen(t2)), 0);
    ctx = open_ctx(dir, 0);
    HAS(mpcl_tuning_describe(ctx), "another version of the format (stale)");
    ck_assert_int_eq(mpcl_tune_cached(ctx, MPCL_TUNE_SINGLE), 0);
    mpcl_context_destroy(ctx);
    cJSON_Delete(root);
    free(t2);
    free(text);
    free(path);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ----------------------------------------------------- shape recording */

START_TEST(test_record_model_shapes)
{
    char *dir = tu_mkdtemp("tune-rec");
    mpcl_context *ctx = open_ctx(dir, 0);
    mpcl_model_spec spec;
    char err[512];
    ck_assert_int_eq(mpcl_model_spec_parse("input 1x8x8\nflatten\nlinear in=64 out=12\nrelu\nlinear out=5\n",
                                           "rec", &spec, err, sizeof err),
                     MPCL_OK);
    mpcl_model *m;
    ck_assert_int_eq(mpcl_model_create(ctx, &spec, 16, 1, &m), MPCL_OK);
    mpcl_tensor *x, *dl, *logits;
    const size_t xs[4] = {16, 1, 8, 8}, ds[2] = {16, 5};
    ck_assert_int_eq(mpcl_tensor_create(ctx, MPCL_F32, 4, xs, MPCL_MEM_ACTIVATIONS, &x), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_create(ctx, MPCL_F32, 2, ds, MPCL_MEM_ACTIVATIONS, &dl), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_fill(x, 0.5f), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_fill(dl, 0.1f), MPCL_OK);
    ck_assert_int_eq(mpcl_gemm_record(ctx, 1), MPCL_OK);
    for (int rep = 0; rep < 2; rep++) {
        ck_assert_int_eq(mpcl_model_forward(m, x, 1, 0, &logits), MPCL_OK);
        ck_assert_int_eq(mpcl_model_backward(m, dl), MPCL_OK);
    }
    ck_assert_int_eq(mpcl_gemm_record(ctx, 0), MPCL_OK);
    mpcl_gemm_shape sh[16];
    size_t n = mpcl_gemm_recorded(ctx, sh, 16);
    /* two linear layers: forward (B, O, I), dx (not for the first layer's
     * input) and dw, each run twice */
    int fwd1 = 0, fwd2 = 0, dw1 = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(sh[i].calls, 2);
        ck_assert_int_eq(sh[i].half, 0);
        if (sh[i].m == 16 && sh[i].n == 12 && sh[i].k == 64)
            fwd1 = 1;
        if (sh[i].m == 16 && sh[i].n == 5 && sh[i].k == 12)
            fwd2 = 1;
        if (sh[i].m * sh[i].n == 12 * 64 && sh[i].k == 16)
            dw1 = 1;
    }
    ck_assert_msg(fwd1 && fwd2 && dw1, "recorded %zu shapes without the expected ones", n);
    ck_assert_uint_ge(n, 4);
    /* recording again starts afresh; off records nothing */
    ck_assert_int_eq(mpcl_gemm_record(ctx, 1), MPCL_OK);
    ck_assert_uint_eq(mpcl_gemm_recorded(ctx, NULL, 0), 0);
    ck_assert_int_eq(mpcl_gemm_record(ctx, 0), MPCL_OK);
    ck_assert_int_eq(mpcl_model_forward(m, x, 1, 0, &logits), MPCL_OK);
    ck_assert_uint_eq(mpcl_gemm_recorded(ctx, NULL, 0), 0);
    mpcl_tensor_destroy(x);
    mpcl_tensor_destroy(dl);
    mpcl_model_destroy(m);
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_bad_options)
{
    char *dir = tu_mkdtemp("tune-opt");
    mpcl_context *ctx = open_ctx(dir, 0);
    mpcl_tune_options o;
    mpcl_tune_options_init(&o);
    o.budget_s = -1;
    mpcl_tune_result r;
    ck_assert_int_eq(mpcl_tune(ctx, &o, &r), MPCL_ERR_ARGUMENT);
    HAS(mpcl_last_error(ctx), "budget");
    mpcl_tune_options_init(&o);
    const mpcl_gemm_shape zero = {0, 0, 0, 0, 4, 4, 1, 1};
    o.shapes = &zero;
    o.shape_count = 1;
    ck_assert_int_eq(mpcl_tune(ctx, &o, &r), MPCL_ERR_ARGUMENT);
    HAS(mpcl_last_error(ctx), "shape 0");
    ck_assert_int_eq(mpcl_tune(NULL, &o, &r), MPCL_ERR_ARGUMENT);
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* --------------------------------------------------------- the CLI */

START_TEST(test_cli_no_search)
{
    char *dir = tu_mkdtemp("tune-cli");
    char cache[4200], env1[4300];
    snprintf(cache, sizeof cache, "XDG_CACHE_HOME=%s", dir);
    snprintf(env1, sizeof env1, "%s", cache);
    /* usage errors name the option */
    char *const env[] = {env1, NULL};
    tu_result r = tu_mpcl_run(env, "tune", "--budget", "0", NULL);
    TU_RC(r, 2);
    HAS(r.err, "--budget");
    tu_result_free(&r);
    r = tu_mpcl_run(env, "tune", "--precision", "quarter", NULL);
    TU_RC(r, 2);
    HAS(r.err, "--precision");
    tu_result_free(&r);
    /* MPCL_TUNE=0 and --no-tune: a short training run writes no tuning */
    char *const env0[] = {env1, "MPCL_TUNE=0", NULL};
    char *const env_on[] = {env1, "MPCL_TUNE=1", NULL};
    r = tu_mpcl_run(env0, "bench", "train", "--synthetic", "--steps", "1", "--warmup", "0",
                    "--profile-steps", "0", NULL);
    TU_RC(r, 0);
    ck_assert_ptr_null(strstr(r.err, "tuning"));
    tu_result_free(&r);
    r = tu_mpcl_run(env_on, "train", "--no-tune", "--epochs", "1", "--limit", "64", "--batch", "64",
                    "--model", "seed-cnn", NULL);
    ck_assert_msg(r.rc == 0 || strstr(r.err, "fashion") || strstr(r.err, "data"), "exit %d: %s", r.rc, r.err);
    ck_assert_ptr_null(strstr(r.err, "tuning CLBlast"));
    tu_result_free(&r);
    /* nothing named clblast-*.json was written */
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/mpcl", dir);
    DIR *d = opendir(sub);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            ck_assert_msg(strncmp(e->d_name, "clblast-", 8) != 0, "a tuning file was written: %s", e->d_name);
        closedir(d);
    }
    tu_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    if (!tu_cli_init("test_tune"))
        return 1;
    Suite *s = suite_create("tune");
    TCase *plain = tcase_create("options");
    tcase_add_test(plain, test_bad_options);
    tu_device_info dev;
    tu_probe_device(&dev);
    if (tu_no_device(&dev)) {
        fprintf(stderr, "test_tune: no OpenCL device (%s): the tuning tests are skipped\n", dev.message);
        return 77;
    }
    suite_add_tcase(s, plain);
    TCase *tc = tcase_create("tune");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_search_store_reuse);
    tcase_add_test(tc, test_wrong_set_rejected);
    tcase_add_test(tc, test_corrupt_and_stale_ignored);
    tcase_add_test(tc, test_record_model_shapes);
    tcase_add_test(tc, test_cli_no_search);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
