/* launch.c — kernel objects kept per context, argument setting, launches. */
#include <string.h>

#include "internal.h"

mpcl_variant mpcl_ctx_variant(const mpcl_context *ctx) { return mpcl_variant_of(ctx->precision); }

mpcl_status mpcl_kernel_get(mpcl_context *ctx, const char *family, mpcl_variant variant,
                            const char *name, cl_kernel *out)
{
    for (size_t i = 0; i < ctx->kernel_count; i++) {
        mpcl_kernel_slot *s = &ctx->kernels[i];
        if (s->variant == variant && strcmp(s->name, name) == 0 && strcmp(s->family, family) == 0) {
            *out = s->kernel;
            return MPCL_OK;
        }
    }
    if (ctx->kernel_count == MPCL_MAX_KERNELS)
        return mpcl_set_error(ctx, MPCL_ERR_STATE, "too many kernels in one context (%d)",
                              MPCL_MAX_KERNELS);
    cl_kernel k;
    mpcl_status st = mpcl_kernel_create(ctx, family, variant, name, &k);
    if (st != MPCL_OK)
        return st;
    mpcl_kernel_slot *s = &ctx->kernels[ctx->kernel_count++];
    s->family = family;
    s->name = name;
    s->variant = variant;
    s->kernel = k;
    *out = k;
    return MPCL_OK;
}

cl_int mpcl_kernel_args(cl_kernel k, int nargs, ...)
{
    va_list ap;
    va_start(ap, nargs);
    cl_int rc = CL_SUCCESS;
    for (int i = 0; i < nargs && rc == CL_SUCCESS; i++) {
        size_t sz = va_arg(ap, size_t);
        const void *p = va_arg(ap, const void *);
        rc = clSetKernelArg(k, (cl_uint)i, sz, p);
    }
    va_end(ap);
    return rc;
}

mpcl_status mpcl_launch(mpcl_context *ctx, cl_kernel k, const char *what, cl_uint dims,
                        const size_t *global, const size_t *local)
{
    for (cl_uint d = 0; d < dims; d++)
        if (global[d] == 0)
            return MPCL_OK; /* nothing to do */
    cl_int rc = clEnqueueNDRangeKernel(ctx->queue, k, dims, NULL, global, local, 0, NULL, NULL);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clEnqueueNDRangeKernel failed: %s", what,
                              mpcl_cl_error_name(rc));
    return MPCL_OK;
}

mpcl_status mpcl_launch_1d(mpcl_context *ctx, cl_kernel k, const char *what, size_t n)
{
    size_t wg = ctx->wg_1d ? ctx->wg_1d : 64;
    size_t global = (n + wg - 1) / wg * wg;
    return mpcl_launch(ctx, k, what, 1, &global, &wg);
}

mpcl_status mpcl_finish(mpcl_context *ctx)
{
    if (!ctx || !ctx->usable)
        return MPCL_ERR_STATE;
    cl_int rc = clFinish(ctx->queue);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "clFinish failed: %s", mpcl_cl_error_name(rc));
    return MPCL_OK;
}
