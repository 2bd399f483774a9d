/* test_probe.c — the capability probe on the real device: facts against
 * the driver's own answers, the functional fp16 checks, the precision
 * choice and the CLBlast checks. The suite runs on PoCL without
 * cl_khr_fp16 and on Intel's OpenCL CPU runtime, which declares it: on both
 * the verdicts are known (the half device's against a half kernel of the
 * test's own with exact answers); elsewhere the suite asserts that facts,
 * checks and choice are consistent with each other. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define HAS(hay, needle) ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

static mpcl_context *open_ctx(mpcl_precision p)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = p;
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_msg(s == MPCL_OK, "mpcl_context_create(%s): %s: %s", mpcl_precision_name(p),
                  mpcl_status_name(s), mpcl_last_error(ctx));
    return ctx;
}

/* PoCL without cl_khr_fp16: the configuration whose verdicts are known. */
static int known_pocl(const mpcl_caps *c)
{
    return strstr(c->platform, "Portable Computing Language") != NULL && c->ext_fp16 == 0;
}

static int arith_works(const mpcl_caps *c)
{
    return c->fp16_arith_check.passed && (c->fp16_arith == MPCL_FP16_DECLARED_WORKS ||
                                          c->fp16_arith == MPCL_FP16_UNDECLARED_WORKS);
}

/* Builds a half-arithmetic kernel ourselves: an independent view of
 * whether the compiler takes half arithmetic at all. */
static int own_half_kernel_builds(mpcl_context *ctx)
{
    const char *src = "#pragma OPENCL EXTENSION cl_khr_fp16 : enable\n"
                      "kernel void k(global half *p) { half x = p[0]; p[0] = x * x + x; }\n";
    cl_int rc;
    cl_program prog = clCreateProgramWithSource(ctx->cl, 1, &src, NULL, &rc);
    ck_assert_int_eq(rc, CL_SUCCESS);
    rc = clBuildProgram(prog, 1, &ctx->device, "-cl-std=CL1.2", NULL, NULL);
    clReleaseProgram(prog);
    return rc == CL_SUCCESS;
}

START_TEST(test_facts)
{
    mpcl_context *ctx = open_ctx(MPCL_PRECISION_AUTO);
    const mpcl_caps *c = &ctx->caps;
    ck_assert_msg(c->device[0] != '\0', "device name is empty");
    ck_assert_msg(c->platform[0] != '\0', "platform name is empty");
    ck_assert_uint_ge(c->compute_units, 1);
    ck_assert_uint_gt(c->global_mem_bytes, 0);
    ck_assert_uint_gt(c->max_alloc_bytes, 0);
    ck_assert_uint_ge(c->max_work_group_size, 1);
    ck_assert_msg(strncmp(c->device_version, "OpenCL ", 7) == 0, "device version '%s'", c->device_version);
    ck_assert_msg(strncmp(c->c_version, "OpenCL C ", 9) == 0, "OpenCL C version '%s'", c->c_version);
    ck_assert_msg(strncmp(c->platform_version, "OpenCL ", 7) == 0, "platform version '%s'",
                  c->platform_version);

    /* against the driver's own answers */
    cl_uint cu = 0;
    cl_ulong mem = 0;
    char name[256] = "", ext[16384] = "";
    ck_assert_int_eq(clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL), CL_SUCCESS);
    ck_assert_int_eq(clGetDeviceInfo(ctx->device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL), CL_SUCCESS);
    ck_assert_int_eq(clGetDeviceInfo(ctx->device, CL_DEVICE_NAME, sizeof name, name, NULL), CL_SUCCESS);
    ck_assert_uint_eq(c->compute_units, cu);
    ck_assert_uint_eq(c->global_mem_bytes, mem);
    size_t nl = strlen(name);
    while (nl > 0 && name[nl - 1] == ' ') /* the probe trims trailing blanks */
        name[--nl] = '\0';
    ck_assert_str_eq(c->device, name);
    size_t ext_len = 0;
    ck_assert_int_eq(clGetDeviceInfo(ctx->device, CL_DEVICE_EXTENSIONS, 0, NULL, &ext_len), CL_SUCCESS);
    if (ext_len < sizeof ext) {
        ck_assert_int_eq(clGetDeviceInfo(ctx->device, CL_DEVICE_EXTENSIONS, sizeof ext, ext, NULL), CL_SUCCESS);
        int has_fp16 = 0;
        for (char *tok = strtok(ext, " "); tok; tok = strtok(NULL, " "))
            has_fp16 |= strcmp(tok, "cl_khr_fp16") == 0;
        ck_assert_int_eq(c->ext_fp16, has_fp16);
    }
    ck_assert_int_eq(c->type, ctx->desc.type);
    mpcl_context_destroy(ctx);
}
END_TEST

START_TEST(test_checks_consistent)
{
    mpcl_context *ctx = open_ctx(MPCL_PRECISION_AUTO);
    const mpcl_caps *c = &ctx->caps;
    ck_assert_msg(c->fp16_storage.reason[0] != '\0', "storage check has no reason");
    ck_assert_msg(c->fp16_arith_check.reason[0] != '\0', "arithmetic check has no reason");
    ck_assert_msg(c->chosen_why[0] != '\0', "choice has no reason");
    /* the classification follows the declaration and the verdict */
    if (c->ext_fp16)
        ck_assert_msg(c->fp16_arith == (c->fp16_arith_check.passed ? MPCL_FP16_DECLARED_WORKS
                                                                    : MPCL_FP16_DECLARED_BROKEN),
                      "declared fp16, check %s, classified '%s'",
                      c->fp16_arith_check.passed ? "passed" : "failed", mpcl_fp16_arith_name(c->fp16_arith));
    else
        ck_assert_msg(c->fp16_arith == (c->fp16_arith_check.passed ? MPCL_FP16_UNDECLARED_WORKS
                                                                    : MPCL_FP16_UNSUPPORTED),
                      "undeclared fp16, check %s, classified '%s'",
                      c->fp16_arith_check.passed ? "passed" : "failed", mpcl_fp16_arith_name(c->fp16_arith));
    if (c->fp16_flushes_subnormals)
        ck_assert(c->fp16_arith_check.passed);
    /* auto: fp16 exactly when half arithmetic verified, else fp32 */
    ck_assert_int_eq(c->chosen, arith_works(c) ? MPCL_PRECISION_FP16 : MPCL_PRECISION_FP32);
    const char *why = NULL;
    ck_assert_int_eq(mpcl_precision_chosen(ctx, &why), c->chosen);
    ck_assert_str_eq(why, c->chosen_why);
    /* a compiler that refuses our own half kernel cannot have passed */
    if (!own_half_kernel_builds(ctx))
        ck_assert_msg(!c->fp16_arith_check.passed,
                      "the device refuses half arithmetic, yet the check passed: %s",
                      c->fp16_arith_check.reason);
    mpcl_context_destroy(ctx);
}
END_TEST

START_TEST(test_known_pocl_verdicts)
{
    mpcl_context *ctx = open_ctx(MPCL_PRECISION_AUTO);
    const mpcl_caps *c = &ctx->caps;
    if (!known_pocl(c)) {
        fprintf(stderr, "test_known_pocl_verdicts: '%s' on '%s' is not PoCL without cl_khr_fp16; "
                        "only the consistency tests apply\n", c->device, c->platform);
        mpcl_context_destroy(ctx);
        return;
    }
    ck_assert_msg(c->fp16_storage.passed, "storage check failed on PoCL: %s", c->fp16_storage.reason);
    HAS(c->fp16_storage.reason, "65536");
    ck_assert_int_eq(c->fp16_arith, MPCL_FP16_UNSUPPORTED);
    ck_assert_int_eq(c->fp16_arith_check.passed, 0);
    ck_assert_int_eq(c->fp16_flushes_subnormals, 0);
    ck_assert_int_eq(c->chosen, MPCL_PRECISION_FP32);
    HAS(c->chosen_why, "unsupported");
    ck_assert_int_eq(own_half_kernel_builds(ctx), 0);
    mpcl_context_destroy(ctx);
}
END_TEST

/* Half arithmetic run by a kernel of this test's own, with answers known
 * exactly: an independent view of whether the device's half arithmetic
 * works. Returns 1 when every answer matched, 0 when one did not or the
 * kernel did not build or run. `denorm`: also check subnormal results. */
static int own_half_answers_right(mpcl_context *ctx, int denorm)
{
    const char *src =
        "#pragma OPENCL EXTENSION cl_khr_fp16 : enable\n"
        "kernel void k(global const ushort *in, global ushort *out) {\n"
        "  half big = as_half(in[0]), one = as_half(in[1]), max = as_half(in[2]);\n"
        "  half two = as_half(in[3]), tenth = as_half(in[4]), ten = as_half(in[5]);\n"
        "  half tiny = as_half(in[6]), three = as_half(in[7]);\n"
        "  out[0] = as_ushort((half)(big + one));\n"    /* 2048 + 1 = 2048 (11 bits) */
        "  out[1] = as_ushort((half)(max * two));\n"    /* 65504 x 2 = inf */
        "  out[2] = as_ushort((half)(one / three));\n"  /* 1/3 = 0x3555 */
        "  out[3] = as_ushort((half)(tenth * ten));\n"  /* 0.0999755859375 x 10: a tie, to 1.0 */
        "  out[4] = as_ushort((half)(-max - max));\n"   /* -inf */
        "  out[5] = as_ushort((half)(tiny + tiny));\n"  /* 2^-24 + 2^-24 = 2^-23 (subnormal) */
        "  out[6] = as_ushort((half)(big - one));\n"    /* 2047, exact */
        "}\n";
    const uint16_t in[8] = {0x6800, 0x3c00, 0x7bff, 0x4000, 0x2e66, 0x4900, 0x0001, 0x4200};
    const uint16_t want[7] = {0x6800, 0x7c00, 0x3555, 0x3c00, 0xfc00, 0x0002, 0x67ff};
    uint16_t got[7] = {0};
    cl_int rc;
    int ok = 0;
    cl_program prog = clCreateProgramWithSource(ctx->cl, 1, &src, NULL, &rc);
    ck_assert_int_eq(rc, CL_SUCCESS);
    cl_kernel k = NULL;
    cl_mem bin = NULL, bout = NULL;
    if (clBuildProgram(prog, 1, &ctx->device, "-cl-std=CL1.2", NULL, NULL) != CL_SUCCESS)
        goto done;
    k = clCreateKernel(prog, "k", &rc);
    bin = clCreateBuffer(ctx->cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof in, (void *)in, &rc);
    bout = clCreateBuffer(ctx->cl, CL_MEM_WRITE_ONLY, sizeof got, NULL, &rc);
    size_t one = 1;
    if (!k || !bin || !bout || clSetKernelArg(k, 0, sizeof bin, &bin) != CL_SUCCESS ||
        clSetKernelArg(k, 1, sizeof bout, &bout) != CL_SUCCESS ||
        clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &one, NULL, 0, NULL, NULL) != CL_SUCCESS ||
        clEnqueueReadBuffer(ctx->queue, bout, CL_TRUE, 0, sizeof got, got, 0, NULL, NULL) != CL_SUCCESS)
        goto done;
    ok = 1;
    for (int i = 0; i < 7; i++) {
        if (i == 5 && !denorm)
            continue;
        if (got[i] != want[i]) {
            fprintf(stderr, "own half kernel: answer %d is 0x%04x, expected 0x%04x\n", i, got[i], want[i]);
            ok = 0;
        }
    }
done:
    if (bin)
        clReleaseMemObject(bin);
    if (bout)
        clReleaseMemObject(bout);
    if (k)
        clReleaseKernel(k);
    clReleaseProgram(prog);
    return ok;
}

/* A device that declares cl_khr_fp16 (Intel's OpenCL CPU runtime in the
 * suite): when half arithmetic gives the known answers, the probe must say
 * "declared and works", auto must pick fp16, an fp16 context must run and
 * CLBlast's Hgemm must pass; when it does not, "declared but broken" and
 * fp32. */
START_TEST(test_declared_half_verdicts)
{
    mpcl_context *ctx = open_ctx(MPCL_PRECISION_AUTO);
    const mpcl_caps *c = &ctx->caps;
    if (!c->ext_fp16) {
        fprintf(stderr, "test_declared_half_verdicts: '%s' on '%s' does not declare cl_khr_fp16; "
                        "nothing to check\n", c->device, c->platform);
        mpcl_context_destroy(ctx);
        return;
    }
    int works = own_half_answers_right(ctx, !c->fp16_flushes_subnormals);
    if (works) {
        ck_assert_msg(c->fp16_arith == MPCL_FP16_DECLARED_WORKS && c->fp16_arith_check.passed,
                      "half arithmetic gives the known answers, yet the probe says '%s': %s",
                      mpcl_fp16_arith_name(c->fp16_arith), c->fp16_arith_check.reason);
        ck_assert_msg(c->fp16_storage.passed, "%s", c->fp16_storage.reason);
        ck_assert_int_eq(c->chosen, MPCL_PRECISION_FP16);
        HAS(c->chosen_why, "declared and works");
        mpcl_caps *out = calloc(1, sizeof *out);
        ck_assert_ptr_nonnull(out);
        ck_assert_int_eq(mpcl_probe(ctx, NULL, out), MPCL_OK);
        ck_assert_msg(out->hgemm.passed, "CLBlast Hgemm failed on a half device: %s", out->hgemm.reason);
        HAS(out->hgemm.reason, "Hgemm");
        free(out);
        mpcl_context *h = open_ctx(MPCL_PRECISION_FP16);
        ck_assert_int_eq(mpcl_precision_chosen(h, NULL), MPCL_PRECISION_FP16);
        ck_assert_int_eq(mpcl_storage_dtype(h), MPCL_F16);
        mpcl_context_destroy(h);
    } else {
        ck_assert_int_eq(c->fp16_arith, MPCL_FP16_DECLARED_BROKEN);
        ck_assert_int_eq(c->chosen, MPCL_PRECISION_FP32);
    }
    mpcl_context_destroy(ctx);
}
END_TEST

START_TEST(test_fp16_request)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP16;
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_ptr_nonnull(ctx);
    const mpcl_caps *c = &ctx->caps; /* filled before the choice, even on refusal */
    if (arith_works(c)) {
        ck_assert_msg(s == MPCL_OK, "fp16 refused although its check passed: %s", mpcl_last_error(ctx));
        ck_assert_int_eq(mpcl_precision_chosen(ctx, NULL), MPCL_PRECISION_FP16);
    } else {
        ck_assert_int_eq(s, MPCL_ERR_UNSUPPORTED);
        const char *msg = mpcl_last_error(ctx);
        HAS(msg, "fp16");
        HAS(msg, mpcl_fp16_arith_name(c->fp16_arith));
        /* the reason names what failed: the start of the check's own reason */
        char head[64];
        snprintf(head, sizeof head, "%.63s", c->fp16_arith_check.reason);
        HAS(msg, head);
        HAS(msg, ctx->desc.name);
    }
    if (known_pocl(c))
        ck_assert_int_eq(s, MPCL_ERR_UNSUPPORTED);
    mpcl_context_destroy(ctx);
}
END_TEST

START_TEST(test_storage_and_fp32_requests)
{
    mpcl_context *ctx = NULL;
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP16_STORAGE;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_ptr_nonnull(ctx);
    int storage = ctx->caps.fp16_storage.passed;
    if (storage) {
        ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
        const char *why = NULL;
        ck_assert_int_eq(mpcl_precision_chosen(ctx, &why), MPCL_PRECISION_FP16_STORAGE);
        HAS(why, "fp16-storage");
    } else {
        ck_assert_int_eq(s, MPCL_ERR_UNSUPPORTED);
    }
    if (known_pocl(&ctx->caps))
        ck_assert_int_eq(s, MPCL_OK);
    mpcl_context_destroy(ctx);

    ctx = open_ctx(MPCL_PRECISION_FP32);
    const char *why = NULL;
    ck_assert_int_eq(mpcl_precision_chosen(ctx, &why), MPCL_PRECISION_FP32);
    HAS(why, "fp32");
    mpcl_context_destroy(ctx);
}
END_TEST

START_TEST(test_probe_clblast)
{
    mpcl_context *ctx = open_ctx(MPCL_PRECISION_AUTO);
    mpcl_caps *out = calloc(1, sizeof *out);
    ck_assert_ptr_nonnull(out);
    memset(out, 0xab, sizeof *out);
    mpcl_status s = mpcl_probe(ctx, NULL, out);
    ck_assert_msg(s == MPCL_OK, "mpcl_probe: %s", mpcl_last_error(ctx));
    /* the facts and checks come back unchanged */
    ck_assert_str_eq(out->device, ctx->caps.device);
    ck_assert_uint_eq(out->compute_units, ctx->caps.compute_units);
    ck_assert_int_eq(out->fp16_storage.passed, ctx->caps.fp16_storage.passed);
    ck_assert_int_eq(out->chosen, ctx->caps.chosen);
    ck_assert_int_eq(out->bench_ran, 0);
    ck_assert_msg(out->sgemm.reason[0] != '\0', "sgemm check has no reason");
    ck_assert_msg(out->hgemm.reason[0] != '\0', "hgemm check has no reason");
    ck_assert_msg(out->sgemm.passed, "CLBlast Sgemm failed: %s", out->sgemm.reason);
    HAS(out->sgemm.reason, "Sgemm");
    if (known_pocl(out)) {
        ck_assert_int_eq(out->hgemm.passed, 0);
        HAS(out->hgemm.reason, "CLBlastNoHalfPrecision");
    }
    if (out->ext_fp16 == 0) /* CLBlast refuses Hgemm without the extension */
        ck_assert_int_eq(out->hgemm.passed, 0);
    /* a second call gives the same verdicts without re-running */
    mpcl_caps *again = calloc(1, sizeof *again);
    ck_assert_ptr_nonnull(again);
    ck_assert_int_eq(mpcl_probe(ctx, NULL, again), MPCL_OK);
    ck_assert_int_eq(again->sgemm.passed, out->sgemm.passed);
    ck_assert_str_eq(again->hgemm.reason, out->hgemm.reason);
    /* bad arguments */
    ck_assert_int_eq(mpcl_probe(ctx, NULL, NULL), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_probe(NULL, NULL, again), MPCL_ERR_ARGUMENT);
    free(out);
    free(again);
    mpcl_context_destroy(ctx);
}
END_TEST

int main(void)
{
    tu_clean_env();
    tu_device_info dev;
    tu_probe_device(&dev);
    if (tu_no_device(&dev)) {
        fprintf(stderr, "test_probe: no OpenCL device (%s: %s): skipped\n",
                mpcl_status_name((mpcl_status)dev.status), dev.message);
        return TU_EXIT_SKIP;
    }
    Suite *s = suite_create("probe");
    TCase *tc = tcase_create("probe");
    tcase_add_test(tc, test_facts);
    tcase_add_test(tc, test_checks_consistent);
    tcase_add_test(tc, test_known_pocl_verdicts);
    tcase_add_test(tc, test_declared_half_verdicts);
    tcase_add_test(tc, test_fp16_request);
    tcase_add_test(tc, test_storage_and_fp32_requests);
    tcase_add_test(tc, test_probe_clblast);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
