/* ops/reduce.c — whole-tensor reductions, finite checks and the fused
 * unscale (cl/reduce.cl).
 *
 * Dimension letters: N elements of x (any shape, flattened), G work-groups
 * of the first stage, L work-items per group.
 *
 * Reductions run in two stages: G groups of L work-items each reduce a
 * grid-stride share of x into partial (G) floats, then one group of L reduces
 * the partials into out (1). L is the largest power of two up to 256 that
 * the kernel and device allow, G = min(ceil(N / (8 L)), 1024): both depend
 * only on N and the device, so the result is the same on every run. The
 * partials live in a small buffer created per call and released right after
 * the launches are enqueued (OpenCL keeps it alive until they finish). */
#include <limits.h>
#include <string.h>

#include "internal.h"

#define RED_MAX_L 256
#define RED_MAX_GROUPS 1024
#define RED_ITEMS 8 /* elements per work-item before more groups are used */

/* Keep in step with cl/reduce.cl. */
#define RED_SUM 0
#define RED_MEAN 1
#define RED_MAX_ABS 2

/* ------------------------------------------------------------ checks */

/* t is in the storage dtype or f32 (any mode), any shape, at most UINT_MAX
 * elements. */
static mpcl_status check_float_tensor(mpcl_context *ctx, const char *op, const char *name,
                                      const mpcl_tensor *t)
{
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    char d[128];
    if (t && t->ctx == ctx && t->dtype != st && t->dtype != MPCL_F32)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %s is %s, expected (any shape) %s%s", op,
                              name, mpcl_tensor_describe(t, d, sizeof d), mpcl_dtype_name(st),
                              st == MPCL_F32 ? "" : " or f32");
    mpcl_status s = mpcl_check_tensor(ctx, op, name, t, t && t->dtype == MPCL_F32 ? MPCL_F32 : st,
                                      t ? t->ndim : 1, NULL);
    if (s == MPCL_OK && t->numel > UINT_MAX)
        s = mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %s is %s, more than %u elements", op, name,
                           mpcl_tensor_describe(t, d, sizeof d), UINT_MAX);
    return s;
}

/* t is one element of dtype (the output of a reduction, or a flag). */
static mpcl_status check_scalar(mpcl_context *ctx, const char *op, const char *name,
                                const mpcl_tensor *t, mpcl_dtype dtype)
{
    static const size_t one[1] = {1};
    return mpcl_check_tensor(ctx, op, name, t, dtype, 1, one);
}

/* The kernel variant that reads t: the storage one, or the _f32 twin when
 * t is f32 in a half-storage mode. */
static int use_f32_kernel(const mpcl_context *ctx, const mpcl_tensor *t)
{
    return t->dtype == MPCL_F32 && mpcl_storage_dtype(ctx) != MPCL_F32;
}

/* ---------------------------------------------------------- geometry */

/* L: the largest power of two <= RED_MAX_L that k and the device allow. */
static mpcl_status group_size(mpcl_context *ctx, cl_kernel k, const char *op, size_t *l)
{
    (void)op;
    size_t cap = mpcl_wg_limit(ctx, k); /* kernel, device and the context's cap */
    if (cap > RED_MAX_L)
        cap = RED_MAX_L;
    *l = mpcl_pow2_floor(cap);
    return MPCL_OK;
}

#define UNSCALE_U 8 /* cl/reduce.cl's UNSCALE_U: elements an item of unscale*_main */

/* G for n elements and groups of l. */
static size_t group_count(size_t n, size_t l)
{
    size_t g = (n + l * RED_ITEMS - 1) / (l * RED_ITEMS);
    if (g < 1)
        g = 1;
    return g > RED_MAX_GROUPS ? RED_MAX_GROUPS : g;
}

static mpcl_status arg_error(mpcl_context *ctx, const char *op, cl_int rc)
{
    return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clSetKernelArg failed: %s", op,
                          mpcl_cl_error_name(rc));
}

/* --------------------------------------------------------- reductions */

/* Stage 1: partial (G) from x (N). */
static mpcl_status reduce_stage1(mpcl_context *ctx, const char *op, int code, const mpcl_tensor *x,
                                 cl_mem partial, size_t groups, size_t l, cl_kernel k)
{
    cl_uint n = (cl_uint)x->numel;
    cl_int c = code;
    cl_int rc = mpcl_kernel_args(k, 5, sizeof(cl_mem), &x->mem, /* x (N) */
                                 sizeof n, &n, sizeof c, &c,
                                 sizeof(cl_mem), &partial,          /* partial (G) */
                                 l * sizeof(cl_float), (void *)NULL); /* tmp (L) local */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    size_t global = groups * l;
    return mpcl_launch(ctx, k, op, 1, &global, &l);
}

/* Stage 2: out (1) from partial (G). */
static mpcl_status reduce_stage2(mpcl_context *ctx, const char *op, int code, cl_mem partial,
                                 size_t groups, float scale, mpcl_tensor *out)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "reduce", mpcl_ctx_variant(ctx), "reduce_final", &k);
    size_t l = 0;
    if (s == MPCL_OK)
        s = group_size(ctx, k, op, &l);
    if (s != MPCL_OK)
        return s;
    cl_uint g = (cl_uint)groups;
    cl_int c = code;
    cl_int rc = mpcl_kernel_args(k, 6, sizeof(cl_mem), &partial, /* partial (G) */
                                 sizeof g, &g, sizeof c, &c, sizeof scale, &scale,
                                 sizeof(cl_mem), &out->mem,          /* out (1) */
                                 l * sizeof(cl_float), (void *)NULL); /* tmp (L) local */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch(ctx, k, op, 1, &l, &l);
}

mpcl_status mpcl_reduce(mpcl_context *ctx, mpcl_reduction r, mpcl_tensor *out, const mpcl_tensor *x)
{
    static const char *op = "mpcl_reduce";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    if ((unsigned)r > (unsigned)MPCL_REDUCE_MAX_ABS)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: unknown reduction %d", op, (int)r);
    s = check_scalar(ctx, op, "out", out, MPCL_F32);
    if (s == MPCL_OK)
        s = check_float_tensor(ctx, op, "x", x);
    if (s != MPCL_OK)
        return s;

    int code = r == MPCL_REDUCE_SUM ? RED_SUM : r == MPCL_REDUCE_MEAN ? RED_MEAN : RED_MAX_ABS;
    cl_kernel k;
    if (use_f32_kernel(ctx, x))
        s = mpcl_kernel_get(ctx, "reduce", mpcl_ctx_variant(ctx), "reduce_partial_f32", &k);
    else
        s = mpcl_kernel_get(ctx, "reduce", mpcl_ctx_variant(ctx), "reduce_partial", &k);
    size_t l = 0;
    if (s == MPCL_OK)
        s = group_size(ctx, k, op, &l);
    if (s != MPCL_OK)
        return s;
    size_t groups = group_count(x->numel, l);

    cl_int rc;
    static const cl_float zeros[RED_MAX_GROUPS];
    cl_mem partial = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                    groups * sizeof(cl_float), (void *)zeros, &rc); /* (G) */
    if (!partial || rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clCreateBuffer of %zu partials failed: %s",
                              op, groups, mpcl_cl_error_name(rc));
    float scale = (float)(1.0 / (double)x->numel);
    s = reduce_stage1(ctx, op, code, x, partial, groups, l, k);
    if (s != MPCL_OK)
        goto cleanup;
    s = reduce_stage2(ctx, op, code, partial, groups, scale, out);
cleanup:
    clReleaseMemObject(partial); /* the queue keeps it until the kernels ran */
    return s;
}

/* ----------------------------------------------------- finite checks */

/* One launch of a finite-check kernel (all_finite* or unscale*) over x:
 * args before the flag are set by the caller (x, n[, inv_scale]); here the
 * flag and the local tree are added at index `at`. */
static mpcl_status flag_launch(mpcl_context *ctx, const char *op, cl_kernel k, cl_uint at,
                               const mpcl_tensor *x, mpcl_tensor *flag)
{
    size_t l = 0;
    mpcl_status s = group_size(ctx, k, op, &l);
    if (s != MPCL_OK)
        return s;
    cl_int rc = clSetKernelArg(k, at, sizeof(cl_mem), &flag->mem); /* flag (1) */
    if (rc == CL_SUCCESS)
        rc = clSetKernelArg(k, at + 1, l * sizeof(cl_int), NULL); /* tmp (L) local */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    size_t global = group_count(x->numel, l) * l;
    return mpcl_launch(ctx, k, op, 1, &global, &l);
}

/* flag (1) = v, by a kernel (a fill would do as well on devices; oclgrind
 * 21.10 treats filled memory as uninitialised). */
static mpcl_status flag_set(mpcl_context *ctx, const char *op, mpcl_tensor *flag, int v)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "reduce", mpcl_ctx_variant(ctx), "flag_set", &k);
    if (s != MPCL_OK)
        return s;
    cl_int cv = v;
    cl_int rc = mpcl_kernel_args(k, 2, sizeof(cl_mem), &flag->mem, /* flag (1) */
                                 sizeof cv, &cv);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch_1d(ctx, k, op, 1);
}

static mpcl_status all_finite_one(mpcl_context *ctx, const char *op, const mpcl_tensor *x,
                                  mpcl_tensor *flag)
{
    cl_kernel k;
    mpcl_status s;
    if (use_f32_kernel(ctx, x))
        s = mpcl_kernel_get(ctx, "reduce", mpcl_ctx_variant(ctx), "all_finite_f32", &k);
    else
        s = mpcl_kernel_get(ctx, "reduce", mpcl_ctx_variant(ctx), "all_finite", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint n = (cl_uint)x->numel;
    cl_int rc = mpcl_kernel_args(k, 2, sizeof(cl_mem), &x->mem, /* x (N) */
                                 sizeof n, &n);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return flag_launch(ctx, op, k, 2, x, flag);
}

mpcl_status mpcl_all_finite(mpcl_context *ctx, mpcl_tensor *flag, const mpcl_tensor *const *xs,
                            size_t n)
{
    static const char *op = "mpcl_all_finite";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    s = check_scalar(ctx, op, "flag", flag, MPCL_I32);
    if (s != MPCL_OK)
        return s;
    if (n && !xs)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: xs is NULL with n = %zu", op, n);
    for (size_t i = 0; i < n; i++) {
        char name[32];
        mpcl_strfmt(name, sizeof name, "xs[%zu]", i);
        s = check_float_tensor(ctx, op, name, xs[i]);
        if (s != MPCL_OK)
            return s;
    }

    s = flag_set(ctx, op, flag, 1);
    for (size_t i = 0; s == MPCL_OK && i < n; i++)
        s = all_finite_one(ctx, op, xs[i], flag);
    return s;
}

mpcl_status mpcl_unscale(mpcl_context *ctx, mpcl_tensor *x, float inv_scale, mpcl_tensor *flag)
{
    static const char *op = "mpcl_unscale";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    s = check_float_tensor(ctx, op, "x", x);
    if (s == MPCL_OK)
        s = check_scalar(ctx, op, "flag", flag, MPCL_I32);
    if (s != MPCL_OK)
        return s;

    const int f32 = use_f32_kernel(ctx, x);
    cl_kernel k;
    size_t l = 0, done = 0;
    /* the first whole blocks of UNSCALE_U * l elements: unrolled, unchecked */
    s = mpcl_kernel_get(ctx, "reduce", mpcl_ctx_variant(ctx), f32 ? "unscale_f32_main" : "unscale_main",
                        &k);
    if (s == MPCL_OK)
        s = group_size(ctx, k, op, &l);
    if (s != MPCL_OK)
        return s;
    const size_t items = x->numel / (UNSCALE_U * l) * l;
    if (items) {
        cl_int rc = mpcl_kernel_args(k, 4, sizeof(cl_mem), &x->mem, /* x (N) */
                                     sizeof inv_scale, &inv_scale, sizeof(cl_mem), &flag->mem,
                                     l * sizeof(cl_int), NULL); /* tmp (L) local */
        if (rc != CL_SUCCESS)
            return arg_error(ctx, op, rc);
        if ((s = mpcl_launch(ctx, k, op, 1, &items, &l)) != MPCL_OK)
            return s;
        done = items * UNSCALE_U;
        if (done == x->numel)
            return MPCL_OK;
    }
    /* the rest, checked */
    s = mpcl_kernel_get(ctx, "reduce", mpcl_ctx_variant(ctx), f32 ? "unscale_f32" : "unscale", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint n = (cl_uint)x->numel, base = (cl_uint)done;
    cl_int rc = mpcl_kernel_args(k, 3, sizeof(cl_mem), &x->mem, /* x (N) */
                                 sizeof n, &n, sizeof inv_scale, &inv_scale);
    if (rc == CL_SUCCESS)
        rc = clSetKernelArg(k, 5, sizeof base, &base);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    if (!items) /* all of x: as many groups as a reduction of x uses */
        return flag_launch(ctx, op, k, 3, x, flag);
    /* fewer than UNSCALE_U * l elements: one group */
    if ((s = group_size(ctx, k, op, &l)) != MPCL_OK)
        return s;
    rc = clSetKernelArg(k, 3, sizeof(cl_mem), &flag->mem); /* flag (1) */
    if (rc == CL_SUCCESS)
        rc = clSetKernelArg(k, 4, l * sizeof(cl_int), NULL); /* tmp (L) local */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch(ctx, k, op, 1, &l, &l);
}
