/* optest.c — see optest.h. */
#include "optest.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

optest_mode optest_modes[4];
int optest_nmodes;

/* oclgrind 21.10's uninitialised-value checker sizes a buffer slot's shadow
 * memory at the slot's first allocation and keeps it (and its contents) for
 * every later buffer that reuses the slot: a larger successor reads as
 * uninitialised past the old size, so whichever kernel reads it next gets
 * false reports (reproduced outside mpcl with three buffers and two
 * kernels). Context creation frees small probe buffers. So in small mode
 * under oclgrind, right after the contexts exist, we pin the freed slots
 * with PLUG_N tiny buffers held to the end, then allocate and free
 * BALLAST_N never-written buffers of BALLAST_BYTES: every slot the suite
 * reuses then has a large, uninitialised shadow. (A slot's stale contents
 * can still hide an unwritten read on its second reuse.) */
#define PLUG_N 256
#define BALLAST_N 96
#define BALLAST_BYTES (512u << 10)
static cl_mem plugs[4][PLUG_N];

static void oclgrind_shadow_workaround(void)
{
    if (!optest_small())
        return;
    for (int mi = 0; mi < optest_nmodes; mi++) {
        mpcl_context *ctx = optest_modes[mi].ctx;
        char name[128] = "";
        if (clGetPlatformInfo(ctx->platform, CL_PLATFORM_NAME, sizeof name, name, NULL) != CL_SUCCESS ||
            !strstr(name, "Oclgrind"))
            return;
        for (int i = 0; i < PLUG_N; i++)
            plugs[mi][i] = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, 4, NULL, NULL);
        cl_mem m[BALLAST_N];
        for (int i = 0; i < BALLAST_N; i++)
            m[i] = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, BALLAST_BYTES, NULL, NULL);
        for (int i = 0; i < BALLAST_N; i++)
            if (m[i])
                clReleaseMemObject(m[i]);
    }
}

static void oclgrind_shadow_release(void)
{
    for (int mi = 0; mi < 4; mi++)
        for (int i = 0; i < PLUG_N; i++)
            if (plugs[mi][i]) {
                clReleaseMemObject(plugs[mi][i]);
                plugs[mi][i] = NULL;
            }
}

/* MPCL_TEST_CAPS=1,7,16,32: run the suite once per work-group cap. */
#define MAX_CAPS 8
static size_t caps[MAX_CAPS];
static int ncaps;

static void parse_caps(void)
{
    const char *env = getenv("MPCL_TEST_CAPS");
    ncaps = 0;
    for (const char *p = env; p && *p && ncaps < MAX_CAPS;) {
        char *end;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || v == 0) {
            fprintf(stderr, "MPCL_TEST_CAPS='%s': expected work-group sizes >= 1, e.g. 1,7,16,32\n",
                    env);
            exit(1);
        }
        caps[ncaps++] = v;
        p = *end == ',' ? end + 1 : end;
    }
}

/* Opens the contexts with work-group cap `cap` (0: none). The cap goes in
 * through mpcl_options for the suite's contexts and through
 * MPCL_MAX_WORK_GROUP for contexts a test opens itself. */
static void open_contexts(size_t cap)
{
    static const mpcl_precision modes[4] = {MPCL_PRECISION_FP32, MPCL_PRECISION_FP16_STORAGE,
                                            MPCL_PRECISION_FP16, MPCL_PRECISION_BF16};
    if (cap) {
        char v[32];
        snprintf(v, sizeof v, "%zu", cap);
        setenv("MPCL_MAX_WORK_GROUP", v, 1);
    }
    optest_nmodes = 0;
    for (int i = 0; i < 4; i++) {
        mpcl_options o;
        mpcl_options_init(&o);
        o.precision = modes[i];
        o.max_work_group_size = cap;
        mpcl_context *ctx = NULL;
        mpcl_status s = mpcl_context_create(&o, &ctx);
        if (s == MPCL_ERR_NO_PLATFORM || s == MPCL_ERR_NO_DEVICE) {
            fprintf(stderr, "no OpenCL device: %s\n", mpcl_last_error(ctx));
            mpcl_context_destroy(ctx);
            exit(77);
        }
        if (s != MPCL_OK) {
            printf("mode %s skipped on this device: %s\n", mpcl_precision_name(modes[i]),
                   mpcl_last_error(ctx));
            mpcl_context_destroy(ctx);
            continue;
        }
        optest_modes[optest_nmodes].mode = modes[i];
        optest_modes[optest_nmodes].ctx = ctx;
        optest_modes[optest_nmodes].name = mpcl_precision_name(modes[i]);
        optest_nmodes++;
    }
    oclgrind_shadow_workaround(); /* only in small mode under oclgrind */
    printf("running in %d precision mode(s):", optest_nmodes);
    for (int i = 0; i < optest_nmodes; i++)
        printf(" %s", optest_modes[i].name);
    if (cap)
        printf(", work-groups capped at %zu items", cap);
    printf("\n");
}

void optest_init(void)
{
    parse_caps();
    open_contexts(ncaps ? caps[0] : 0);
}

void optest_cleanup(void)
{
    oclgrind_shadow_release();
    for (int i = 0; i < optest_nmodes; i++)
        mpcl_context_destroy(optest_modes[i].ctx);
    optest_nmodes = 0;
}

int optest_small(void)
{
    const char *s = getenv("MPCL_TEST_SMALL");
    return s && *s && strcmp(s, "0") != 0;
}

size_t optest_cap(void) { return ncaps ? optest_modes[0].ctx->wg_cap : 0; }

int optest_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    int failed = 0, runs = ncaps ? ncaps : 1; /* Check's failure count adds up over the runs */
    for (int ci = 0; ci < runs; ci++) {
        if (ci > 0) {
            const int before = optest_nmodes;
            oclgrind_shadow_release();
            for (int i = 0; i < optest_nmodes; i++)
                mpcl_context_destroy(optest_modes[i].ctx);
            open_contexts(caps[ci]);
            if (optest_nmodes != before) {
                printf("work-group cap %zu: %d precision modes, %d with the first cap\n", caps[ci],
                       optest_nmodes, before);
                failed++;
                break;
            }
        }
        srunner_run_all(sr, CK_NORMAL);
        /* Every launch stayed within the cap (launch.c records the largest group). */
        for (int i = 0; ncaps && i < optest_nmodes; i++)
            if (optest_modes[i].ctx->wg_seen > caps[ci]) {
                printf("work-group cap %zu: %s launched a group of %zu items\n", caps[ci],
                       optest_modes[i].name, optest_modes[i].ctx->wg_seen);
                failed++;
            }
    }
    failed += srunner_ntests_failed(sr);
    srunner_free(sr);
    optest_cleanup();
    return failed == 0 ? 0 : 1;
}

void optest_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        double u = (double)(s >> 11) * 0x1p-53;
        x[i] = (float)(lo + (hi - lo) * u);
    }
}

mpcl_tensor *optest_tensor(mpcl_context *ctx, mpcl_dtype dtype, mpcl_mem_tag tag, const float *data,
                           size_t d0, size_t d1, size_t d2, size_t d3)
{
    size_t shape[4] = {d0, d1, d2, d3};
    int ndim = 0;
    while (ndim < 4 && shape[ndim])
        ndim++;
    mpcl_tensor *t = NULL;
    mpcl_status s = mpcl_tensor_create(ctx, dtype, ndim, shape, tag, &t);
    ck_assert_msg(s == MPCL_OK, "mpcl_tensor_create: %s", mpcl_last_error(ctx));
    if (data) {
        s = mpcl_tensor_upload(t, data, mpcl_tensor_numel(t));
        ck_assert_msg(s == MPCL_OK, "mpcl_tensor_upload: %s", mpcl_last_error(ctx));
    }
    return t;
}

float *optest_download(const mpcl_tensor *t)
{
    size_t n = mpcl_tensor_numel(t);
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    mpcl_status s = mpcl_tensor_download(t, x, n);
    ck_assert_msg(s == MPCL_OK, "mpcl_tensor_download: %s", mpcl_last_error(t->ctx));
    return x;
}

float optest_round_storage(const mpcl_context *ctx, float x)
{
    switch (mpcl_storage_dtype(ctx)) {
    case MPCL_F16: return mpcl_half_to_float(mpcl_half_from_float(x));
    case MPCL_BF16: return mpcl_bf16_to_float(mpcl_bf16_from_float(x));
    default: return x;
    }
}

void optest_quantize(mpcl_context *ctx, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = optest_round_storage(ctx, x[i]);
}

double optest_unit_roundoff(mpcl_precision mode)
{
    switch (mode) {
    case MPCL_PRECISION_FP32: return 0x1p-24;
    case MPCL_PRECISION_BF16: return 0x1p-8;
    default: return 0x1p-11;
    }
}

double optest_rtol(mpcl_precision mode)
{
    switch (mode) {
    case MPCL_PRECISION_FP32: return 1e-5;
    case MPCL_PRECISION_FP16_STORAGE: return 2e-3; /* one half rounding of the output (2^-11) */
    case MPCL_PRECISION_BF16: return 1.6e-2;       /* one bf16 rounding of the output (2^-8) */
    default: return 1e-2;                          /* half arithmetic */
    }
}

void optest_assert_close(const char *what, const float *got, const double *ref, size_t n,
                         double atol, double rtol)
{
    size_t bad = 0, first = 0, worst_i = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]);
        double tol = atol + rtol * fabs(ref[i]);
        if (!(err <= tol)) { /* NaN fails */
            if (bad++ == 0)
                first = i;
        }
        if (!(err <= worst)) {
            worst = err;
            worst_i = i;
        }
    }
    ck_assert_msg(bad == 0,
                  "%s: %zu of %zu values out of tolerance (atol %g, rtol %g); first [%zu] got %.9g "
                  "ref %.9g; worst [%zu] got %.9g ref %.9g",
                  what, bad, n, atol, rtol, first, (double)got[first], ref[first], worst_i,
                  (double)got[worst_i], ref[worst_i]);
}

mpcl_model *optest_model(mpcl_context *ctx, const char *text, const char *name, size_t max_batch,
                         int inference)
{
    mpcl_model_spec spec;
    char err[256];
    ck_assert_msg(mpcl_model_spec_parse(text, name, &spec, err, sizeof err) == MPCL_OK, "%s", err);
    mpcl_model_options o;
    mpcl_model_options_init(&o);
    o.max_batch = max_batch;
    o.seed = 3;
    o.inference = inference;
    mpcl_model *m = NULL;
    mpcl_status s = mpcl_model_create_with(ctx, &spec, &o, &m);
    ck_assert_msg(s == MPCL_OK, "create: %s", mpcl_last_error(ctx));
    return m;
}

void optest_set_weights(mpcl_model *m, uint64_t seed, float bound)
{
    mpcl_tensor *master = mpcl_model_master(m);
    size_t p = mpcl_tensor_numel(master);
    float *w = calloc(p, sizeof *w);
    ck_assert_ptr_nonnull(w);
    mpcl_param_info pi;
    for (size_t i = 0; mpcl_model_param(m, i, &pi) == MPCL_OK; i++) {
        optest_fill_uniform(w + pi.offset, pi.numel, seed + i, -bound, bound);
        if (strstr(pi.name, "ln_") && strstr(pi.name, ".weight"))
            for (size_t j = 0; j < pi.numel; j++)
                w[pi.offset + j] += 1.0f;
    }
    ck_assert_int_eq(mpcl_tensor_upload(master, w, p), MPCL_OK);
    mpcl_tensor *working = mpcl_model_working(m);
    if (working != master)
        ck_assert_int_eq(mpcl_refresh_working(mpcl_model_context(m), working, master), MPCL_OK);
    free(w);
}
