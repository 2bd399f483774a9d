/* ops/cast.c — mpcl_cast: dst = src converted between f16 and f32.
 * f32 -> f16 rounds to nearest even (vstore_half_rte), f16 -> f32 is exact,
 * same-dtype casts copy. Letters: N elements. */
#include "internal.h"

/* convert.cl cast_f16_f32 (to_float) or cast_f32_f16 over n elements. */
mpcl_status mpcl_cast_raw(mpcl_context *ctx, const char *op, int to_float, cl_mem src, cl_mem dst,
                          size_t n)
{
    const char *name = to_float ? "cast_f16_f32" : "cast_f32_f16";
    cl_kernel k;
    mpcl_status s;
    if (to_float)
        s = mpcl_kernel_get(ctx, "convert", mpcl_ctx_variant(ctx), "cast_f16_f32", &k);
    else
        s = mpcl_kernel_get(ctx, "convert", mpcl_ctx_variant(ctx), "cast_f32_f16", &k);
    if (s != MPCL_OK)
        return s;
    cl_ulong nn = n;
    cl_int rc = mpcl_kernel_args(k, 3, sizeof src, &src, sizeof dst, &dst, sizeof nn, &nn);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: %s arguments: %s", op, name,
                              mpcl_cl_error_name(rc));
    return mpcl_launch_1d(ctx, k, op, n);
}

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
    int float_types = (src->dtype == MPCL_F16 || src->dtype == MPCL_F32) &&
                      (dst->dtype == MPCL_F16 || dst->dtype == MPCL_F32);
    if (!float_types)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: dst %s and src %s must be f16 or f32", op,
                              mpcl_tensor_describe(dst, dd, sizeof dd),
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
    return mpcl_cast_raw(ctx, op, src->dtype == MPCL_F16, src->mem, dst->mem, n);
}
