/* normalize.c — bytes to normalised activations on the device (cl/data.cl). */
#include "internal.h"

mpcl_status mpcl_normalize_u8(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x, float mean,
                              float std)
{
    const char *op = "mpcl_normalize_u8";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    if (!x || x->dtype != MPCL_U8)
        return mpcl_check_tensor(ctx, op, "x", x, MPCL_U8, x ? x->ndim : 1, NULL);
    if (!y || y->dtype != mpcl_storage_dtype(ctx) || y->numel != x->numel) {
        char a[128], b[128];
        return mpcl_set_error(ctx, y && y->numel != x->numel ? MPCL_ERR_SHAPE : MPCL_ERR_ARGUMENT,
                              "%s: y is %s, expected %zu elements of %s for x %s", op,
                              mpcl_tensor_describe(y, a, sizeof a), x->numel,
                              mpcl_dtype_name(mpcl_storage_dtype(ctx)), mpcl_tensor_describe(x, b, sizeof b));
    }
    if (!(std > 0.0f))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: std must be > 0, got %g", op, (double)std);
    cl_kernel k;
    if ((s = mpcl_check_u32(ctx, op, "x", x->numel)) != MPCL_OK ||
        (s = mpcl_kernel_get(ctx, "data", mpcl_ctx_variant(ctx), "normalize_u8", &k)) != MPCL_OK)
        return s;
    cl_uint n = (cl_uint)x->numel;
    float inv = 1.0f / std;
    cl_int rc = mpcl_kernel_args(k, 5, sizeof(cl_mem), &x->mem, sizeof(cl_mem), &y->mem, sizeof n, &n,
                                 sizeof(float), &mean, sizeof(float), &inv);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clSetKernelArg: %s", op, mpcl_cl_error_name(rc));
    return mpcl_launch_1d(ctx, k, op, x->numel);
}

mpcl_status mpcl_labels_to_i32(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x)
{
    const char *op = "mpcl_labels_to_i32";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    if ((s = mpcl_check_tensor(ctx, op, "x", x, MPCL_U8, 1, NULL)) != MPCL_OK)
        return s;
    size_t d[1] = {x->numel};
    if ((s = mpcl_check_tensor(ctx, op, "y", y, MPCL_I32, 1, d)) != MPCL_OK)
        return s;
    cl_kernel k;
    if ((s = mpcl_check_u32(ctx, op, "x", x->numel)) != MPCL_OK ||
        (s = mpcl_kernel_get(ctx, "data", mpcl_ctx_variant(ctx), "labels_u8_to_i32", &k)) != MPCL_OK)
        return s;
    cl_uint n = (cl_uint)x->numel;
    cl_int rc = mpcl_kernel_args(k, 3, sizeof(cl_mem), &x->mem, sizeof(cl_mem), &y->mem, sizeof n, &n);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clSetKernelArg: %s", op, mpcl_cl_error_name(rc));
    return mpcl_launch_1d(ctx, k, op, x->numel);
}
