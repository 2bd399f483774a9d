/* ops/cast.c — mpcl_cast: dst = src converted between f16 and f32, or
 * between bf16 and f32. f32 -> f16 rounds to nearest even
 * (vstore_half_rte), f32 -> bf16 too (cl/bf16.cl), the widening casts are
 * exact, same-dtype casts copy. Letters: N elements. */
#include "internal.h"

/* The kernel of a cast between two different dtypes, or NULL. */
static const char *cast_kernel_name(mpcl_dtype from, mpcl_dtype to, const char **family)
{
    *family = "convert";
    if (from == MPCL_F16 && to == MPCL_F32)
        return "cast_f16_f32";
    if (from == MPCL_F32 && to == MPCL_F16)
        return "cast_f32_f16";
    *family = "bf16";
    if (from == MPCL_BF16 && to == MPCL_F32)
        return "cast_bf16_f32";
    if (from == MPCL_F32 && to == MPCL_BF16)
        return "cast_f32_bf16";
    return NULL;
}

/* convert.cl / bf16.cl cast kernel `name` over n elements. */
static mpcl_status cast_kernel(mpcl_context *ctx, const char *op, const char *family,
                               const char *name, cl_mem src, cl_mem dst, size_t n)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, family, mpcl_ctx_variant(ctx), name, &k);
    if (s != MPCL_OK)
        return s;
    cl_ulong nn = n;
    cl_int rc = mpcl_kernel_args(k, 3, sizeof src, &src, sizeof dst, &dst, sizeof nn, &nn);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: %s arguments: %s", op, name,
                              mpcl_cl_error_name(rc));
    return mpcl_launch_1d(ctx, k, op, n);
}

/* n elements between the context's storage dtype (f16 or bf16) and f32. */
mpcl_status mpcl_cast_raw(mpcl_context *ctx, const char *op, int to_float, cl_mem src, cl_mem dst,
                          size_t n)
{
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    const char *family,
        *name = to_float ? cast_kernel_name(st, MPCL_F32, &family) : cast_kernel_name(MPCL_F32, st, &family);
    if (!name)
        return mpcl_set_error(ctx, MPCL_ERR_STATE, "%s: no cast between %s storage and f32", op,
                              mpcl_dtype_name(st));
    return cast_kernel(ctx, op, family, name, src, dst, n);
}

static int float_dtype(mpcl_dtype d) { return d == MPCL_F16 || d == MPCL_F32 || d == MPCL_BF16; }

mpcl_status mpcl_cast(mpcl_context *ctx, mpcl_tensor *dst, const mpcl_tensor *src)
{
    static const char op[] = "mpcl_cast";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    char ds[128], dd[128];
    if (!dst || !src)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %s is NULL", op, !dst ? "dst" : "src");
    if (dst->ctx != ctx || src->ctx != ctx)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %s belongs to another context", op,
                              dst->ctx != ctx ? "dst" : "src");
    if (!float_dtype(src->dtype) || !float_dtype(dst->dtype))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: dst %s and src %s must be f16, bf16 or f32",
                              op, mpcl_tensor_describe(dst, dd, sizeof dd),
                              mpcl_tensor_describe(src, ds, sizeof ds));
    if (dst->numel != src->numel)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: dst is %s but src is %s (%zu vs %zu elements)",
                              op, mpcl_tensor_describe(dst, dd, sizeof dd),
                              mpcl_tensor_describe(src, ds, sizeof ds), dst->numel, src->numel);
    size_t n = src->numel; /* (N) */
    if (src->dtype == dst->dtype) {
        if (src->mem == dst->mem)
            return MPCL_OK;
        cl_int rc = clEnqueueCopyBuffer(ctx->queue, src->mem, dst->mem, 0, 0,
                                        n * mpcl_dtype_size(src->dtype), 0, NULL, NULL);
        if (rc != CL_SUCCESS)
            return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clEnqueueCopyBuffer of %s: %s", op,
                                  mpcl_tensor_describe(src, ds, sizeof ds), mpcl_cl_error_name(rc));
        return MPCL_OK;
    }
    const char *family, *name = cast_kernel_name(src->dtype, dst->dtype, &family);
    if (!name)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: no direct cast from %s to %s (one side must be f32): dst %s, src %s",
                              op, mpcl_dtype_name(src->dtype), mpcl_dtype_name(dst->dtype),
                              mpcl_tensor_describe(dst, dd, sizeof dd),
                              mpcl_tensor_describe(src, ds, sizeof ds));
    return cast_kernel(ctx, op, family, name, src->mem, dst->mem, n);
}
