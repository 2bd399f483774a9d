/* probe_bf16.c — check (d): bfloat16 conversions on the device, bit for bit
 * against the host's (bf16.c).
 *
 * The bf16 mode stores activations, gradients and working weights as
 * bfloat16 and converts with integer operations (cl/precision.h), which any
 * OpenCL 1.2 device runs. The check proves those conversions on this device:
 * cl/bf16.cl's cast_bf16_f32 on all 65,536 bf16 values and cast_f32_bf16 on
 * the rounding edge cases and random floats. Where the device declares
 * cl_intel_bfloat16, the same kernels are built with -DMPCL_BF16_INTEL (the
 * extension's intel_convert_* built-ins) and checked the same way; the mode
 * uses the built-ins only when they pass. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BF16_RANDOM 16384
#define BF16_EDGE_MAX 64

/* Floats that exercise every rounding rule of float -> bf16. */
static size_t bf16_edge_cases(float *out)
{
    static const uint32_t bits[] = {
        0x00000000u, 0x80000000u, 0x3f800000u, 0xbf800000u,
        0x3f808000u, /* 1 + 2^-8: tie, rounds to even (down to 1) */
        0x3f818000u, /* 1 + 3 * 2^-8: tie, rounds to even (up) */
        0x3f808001u, /* just above the tie: up */
        0x3f807fffu, /* just below the tie: down */
        0x7f7f7fffu, /* below the midpoint under 2^128: the largest bf16 */
        0x7f7f8000u, /* the midpoint: ties to even, which is inf */
        0x7f7fffffu, /* FLT_MAX: inf */
        0xff7fffffu, /* -FLT_MAX: -inf */
        0x7f800000u, 0xff800000u, /* inf, -inf stay */
        0x7fc00000u, 0xffc00000u, /* quiet NaNs */
        0x7f800001u, /* signalling NaN whose payload is below bf16: still NaN */
        0x7fa00000u, /* signalling NaN: quieted */
        0xff810000u,
        0x00000001u, /* smallest float subnormal: rounds to 0 */
        0x00008000u, /* tie between 0 and the smallest bf16 subnormal: 0 (even) */
        0x00018000u, /* tie: up to 2 ulps (even) */
        0x00008001u, /* above the tie: the smallest bf16 subnormal */
        0x007fffffu, /* largest float subnormal: rounds up to the smallest normal */
        0x00800000u, 0x80800000u, /* smallest normals */
        0x3dcccccdu, /* 0.1f */
        0x3eaaaaabu, /* 1/3 */
        0x477fe000u, /* 65504 */
        0x4b800000u, /* 2^24 */
        0x3f7fffffu, /* just below 1: rounds up to 1 */
    };
    size_t n = sizeof bits / sizeof bits[0];
    for (size_t i = 0; i < n; i++)
        memcpy(&out[i], &bits[i], 4);
    return n;
}

static uint32_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 32);
}

static int is_nan_bf16(uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu); }

/* NaN results match when both are NaN with the same sign (a device may pick
 * its own quiet payload); everything else bit for bit. */
static int same_bf16(uint16_t got, uint16_t want)
{
    return got == want || (is_nan_bf16(got) && is_nan_bf16(want) && (got & 0x8000u) == (want & 0x8000u));
}

static int same_bits_f32(float a, float b)
{
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

static cl_int run(mpcl_context *ctx, cl_kernel k, cl_mem in, cl_mem out, size_t n)
{
    cl_ulong nn = n;
    cl_int rc = clSetKernelArg(k, 0, sizeof in, &in);
    if (rc == CL_SUCCESS)
        rc = clSetKernelArg(k, 1, sizeof out, &out);
    if (rc == CL_SUCCESS)
        rc = clSetKernelArg(k, 2, sizeof nn, &nn);
    if (rc == CL_SUCCESS)
        rc = clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &n, NULL, 0, NULL, NULL);
    if (rc == CL_SUCCESS)
        rc = clFinish(ctx->queue);
    return rc;
}

/* Runs the two conversion kernels of prog over the test vectors and writes
 * the verdict into chk. what names the path ("integer operations"). */
static void verify(mpcl_context *ctx, cl_program prog, const char *what, const float *in, size_t n,
                   mpcl_check *chk)
{
    cl_int rc;
    cl_kernel ks = clCreateKernel(prog, "cast_f32_bf16", &rc);
    cl_kernel kl = rc == CL_SUCCESS ? clCreateKernel(prog, "cast_bf16_f32", &rc) : NULL;
    cl_mem din = NULL, dh = NULL, dall = NULL, dback = NULL;
    uint16_t *h = malloc(n * sizeof *h), *all = malloc(65536 * sizeof *all);
    float *back = malloc(65536 * sizeof *back);
    chk->passed = 0;
    if (rc != CL_SUCCESS) {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "%s: clCreateKernel failed: %s", what,
                    mpcl_cl_error_name(rc));
        goto done;
    }
    if (!h || !all || !back) {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "out of host memory");
        goto done;
    }
    for (uint32_t i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    din = clCreateBuffer(ctx->cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * 4, (void *)in, &rc);
    if (rc == CL_SUCCESS)
        dh = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, n * 2, NULL, &rc);
    if (rc == CL_SUCCESS)
        dall = clCreateBuffer(ctx->cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, 65536 * 2, all, &rc);
    if (rc == CL_SUCCESS)
        dback = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, 65536 * 4, NULL, &rc);
    if (rc == CL_SUCCESS)
        rc = run(ctx, ks, din, dh, n);
    if (rc == CL_SUCCESS)
        rc = run(ctx, kl, dall, dback, 65536);
    if (rc == CL_SUCCESS)
        rc = clEnqueueReadBuffer(ctx->queue, dh, CL_TRUE, 0, n * 2, h, 0, NULL, NULL);
    if (rc == CL_SUCCESS)
        rc = clEnqueueReadBuffer(ctx->queue, dback, CL_TRUE, 0, 65536 * 4, back, 0, NULL, NULL);
    if (rc != CL_SUCCESS) {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "%s: running the bf16 kernels failed: %s", what,
                    mpcl_cl_error_name(rc));
        goto done;
    }
    size_t bad_store = 0, bad_nan = 0, bad_load = 0, first_store = 0, first_load = 0;
    for (size_t i = 0; i < n; i++)
        if (!same_bf16(h[i], mpcl_bf16_from_float(in[i]))) {
            if (bad_store++ == 0)
                first_store = i;
            bad_nan += isnan(in[i]) ? 1 : 0;
        }
    for (size_t i = 0; i < 65536; i++)
        if (!same_bits_f32(back[i], mpcl_bf16_to_float((uint16_t)i)) && bad_load++ == 0)
            first_load = i;
    if (bad_store) {
        uint32_t bits;
        memcpy(&bits, &in[first_store], 4);
        mpcl_strfmt(chk->reason, sizeof chk->reason,
                    "%s: float -> bf16 differs from round-to-nearest-even in %zu of %zu values "
                    "(%zu of them NaN inputs), e.g. 0x%08x gave 0x%04x, expected 0x%04x; "
                    "bf16 -> float %s",
                    what, bad_store, n, bad_nan, bits, h[first_store],
                    mpcl_bf16_from_float(in[first_store]),
                    bad_load ? "wrong too" : "exact on all 65536");
    } else if (bad_load) {
        mpcl_strfmt(chk->reason, sizeof chk->reason,
                    "%s: bf16 -> float is wrong for %zu of 65536 values, e.g. 0x%04zx gave %a, "
                    "expected %a",
                    what, bad_load, first_load, (double)back[first_load],
                    (double)mpcl_bf16_to_float((uint16_t)first_load));
    } else {
        chk->passed = 1;
        mpcl_strfmt(chk->reason, sizeof chk->reason,
                    "%s bit-exact on all 65536 bf16 values, %zu rounding edge cases and %d random "
                    "floats",
                    what, n - BF16_RANDOM, BF16_RANDOM);
    }
done:
    if (ks)
        clReleaseKernel(ks);
    if (kl)
        clReleaseKernel(kl);
    if (din)
        clReleaseMemObject(din);
    if (dh)
        clReleaseMemObject(dh);
    if (dall)
        clReleaseMemObject(dall);
    if (dback)
        clReleaseMemObject(dback);
    free(h);
    free(all);
    free(back);
}

static int fatal(mpcl_status s) { return s == MPCL_ERR_IO || s == MPCL_ERR_NOMEM || s == MPCL_ERR_ARGUMENT; }

mpcl_status mpcl_probe_bf16(mpcl_context *ctx, mpcl_caps *caps)
{
    mpcl_status ret = MPCL_OK;
    size_t n = BF16_EDGE_MAX + BF16_RANDOM;
    float *in = malloc(n * sizeof *in);
    caps->bf16_storage.passed = 0;
    caps->bf16_intel.passed = 0;
    caps->bf16_intel_used = 0;
    if (!in) {
        mpcl_strfmt(caps->bf16_storage.reason, sizeof caps->bf16_storage.reason, "out of host memory");
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "bf16 check: out of host memory");
    }
    size_t m = bf16_edge_cases(in);
    uint64_t seed = 0xbf16;
    for (size_t i = 0; i < BF16_RANDOM; i++) {
        uint32_t bits = next(&seed);
        if (i % 4 == 0) /* a quarter with exactly tied or near-tied low halves */
            bits = (bits & 0xffff0000u) | (i % 8 == 0 ? 0x8000u : 0x7fffu);
        memcpy(&in[m++], &bits, 4);
    }
    n = m;

    /* integer operations: cl/bf16.cl in the fp32 variant, no extension */
    cl_program prog = NULL;
    mpcl_status s = mpcl_program_build(ctx, "bf16", MPCL_VARIANT_FP32, 1, &prog);
    if (s != MPCL_OK) {
        if (fatal(s))
            ret = s;
        mpcl_strfmt(caps->bf16_storage.reason, sizeof caps->bf16_storage.reason,
                    "the bf16 conversion kernels do not build: %.400s", ctx->err);
    } else {
        verify(ctx, prog, "integer conversions", in, n, &caps->bf16_storage);
        clReleaseProgram(prog);
    }

    /* cl_intel_bfloat16 built-ins, where declared */
    if (ret == MPCL_OK && !caps->ext_bf16_intel) {
        mpcl_strfmt(caps->bf16_intel.reason, sizeof caps->bf16_intel.reason,
                    "not checked: the device does not declare cl_intel_bfloat16");
    } else if (ret == MPCL_OK) {
        prog = NULL;
        s = mpcl_program_build_defines(ctx, "bf16", MPCL_VARIANT_FP32, "-DMPCL_BF16_INTEL", 1, &prog);
        if (s != MPCL_OK) {
            if (fatal(s))
                ret = s;
            mpcl_strfmt(caps->bf16_intel.reason, sizeof caps->bf16_intel.reason,
                        "declared, but kernels with intel_convert_bfloat16_as_ushort / "
                        "intel_convert_as_bfloat16_float do not build: %.380s",
                        ctx->err);
        } else {
            verify(ctx, prog, "cl_intel_bfloat16 built-ins", in, n, &caps->bf16_intel);
            clReleaseProgram(prog);
        }
    }
    caps->bf16_intel_used = caps->bf16_storage.passed && caps->bf16_intel.passed;
    free(in);
    if (ret == MPCL_OK)
        mpcl_clear_error(ctx); /* a failed check is a verdict, not an error */
    return ret;
}
