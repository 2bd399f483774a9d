/* pool.c — 2-D max and average pooling (kernels in cl/pool.cl).
 *
 * Letters: B batch, C channels, H W input height and width, OH OW output
 * height and width, KH KW window height and width.
 *
 * Max: padded positions never win; argmax (i32) holds ih*W + iw of the first
 * maximum in row-major window order (a NaN wins, so overflow propagates).
 * Avg: padding counts as zeros, the divisor is always KH*KW (PyTorch's
 * count_include_pad=True). pad < window in both, so no window is all padding.
 * Backward passes gather per input pixel (windows overlap when stride <
 * window): dx is assigned, every element written. */
#include <limits.h>
#include <string.h>

#include "internal.h"

/* The geometry of one pooling call, as the kernels take it (cl/pool.cl). */
typedef struct {
    size_t b, c, h, w, oh, ow;
    size_t r; /* planes a work item (P_R): the largest divisor of B*C up to POOL_R_MAX */
} pool_dims;

/* At most this many planes a work item: enough that work-groups of small
 * planes (7x7) are not mostly start-up cost on CPU runtimes. */
#define POOL_R_MAX 4

static mpcl_status check_params(mpcl_context *ctx, const char *op, const mpcl_pool2d_params *p)
{
    if (!p)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: params is NULL", op);
    if (p->kernel_h < 1 || p->kernel_w < 1 || p->stride_h < 1 || p->stride_w < 1 || p->pad_h < 0 ||
        p->pad_w < 0 || p->pad_h >= p->kernel_h || p->pad_w >= p->kernel_w)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: window %dx%d, stride %dx%d, padding %dx%d: the window and stride "
                              "must be >= 1 and the padding in [0, window)",
                              op, p->kernel_h, p->kernel_w, p->stride_h, p->stride_w, p->pad_h,
                              p->pad_w);
    return MPCL_OK;
}

/* OH, OW of the window over H x W; MPCL_ERR_SHAPE when empty. */
static mpcl_status out_size(mpcl_context *ctx, const char *op, const mpcl_tensor *x,
                            const mpcl_pool2d_params *p, size_t *oh, size_t *ow)
{
    mpcl_conv2d_params cp = mpcl_conv2d_default();
    cp.stride_h = p->stride_h;
    cp.stride_w = p->stride_w;
    cp.pad_h = p->pad_h;
    cp.pad_w = p->pad_w;
    size_t h = x->shape[2], w = x->shape[3];
    if (mpcl_conv2d_output_size(h, w, (size_t)p->kernel_h, (size_t)p->kernel_w, &cp, oh, ow) != MPCL_OK) {
        char d[128];
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: a %dx%d window with stride %dx%d and padding %dx%d over a %zux%zu "
                              "image (%s) gives an empty output",
                              op, p->kernel_h, p->kernel_w, p->stride_h, p->stride_w, p->pad_h,
                              p->pad_w, h, w, mpcl_tensor_describe(x, d, sizeof d));
    }
    return MPCL_OK;
}

/* mpcl_check_tensor, with the reference tensor's shape and the window added
 * to the message on failure. */
static mpcl_status check_against(mpcl_context *ctx, const char *op, const char *name,
                                 const mpcl_tensor *t, mpcl_dtype dtype, const size_t *dims,
                                 const char *ref_name, const mpcl_tensor *ref,
                                 const mpcl_pool2d_params *p)
{
    mpcl_status s = mpcl_check_tensor(ctx, op, name, t, dtype, 4, dims);
    if (s == MPCL_OK)
        return s;
    char msg[MPCL_ERR_LEN], d[128];
    mpcl_strfmt(msg, sizeof msg, "%s", mpcl_last_error(ctx));
    return mpcl_set_error(ctx, s, "%s, for %s %s with a %dx%d window, stride %dx%d, padding %dx%d",
                          msg, ref_name, mpcl_tensor_describe(ref, d, sizeof d), p->kernel_h,
                          p->kernel_w, p->stride_h, p->stride_w, p->pad_h, p->pad_w);
}

/* Checks the image tensor `img` (B, C, H, W), the window, and that each
 * tensor in outs[] is (B, C, OH, OW) in its dtype. */
static mpcl_status check_pool(mpcl_context *ctx, const char *op, const char *img_name,
                              const mpcl_tensor *img, const mpcl_pool2d_params *p, int nout,
                              const char *const *out_names, const mpcl_tensor *const *outs,
                              const mpcl_dtype *out_dtypes, pool_dims *g)
{
    mpcl_status s = mpcl_check_tensor(ctx, op, img_name, img, mpcl_storage_dtype(ctx), 4, NULL);
    if (s == MPCL_OK)
        s = check_params(ctx, op, p);
    if (s == MPCL_OK)
        s = out_size(ctx, op, img, p, &g->oh, &g->ow);
    if (s != MPCL_OK)
        return s;
    g->b = img->shape[0];
    g->c = img->shape[1];
    g->h = img->shape[2];
    g->w = img->shape[3];
    g->r = mpcl_largest_divisor_le(g->b * g->c, POOL_R_MAX);
    const size_t want[4] = {g->b, g->c, g->oh, g->ow};
    for (int i = 0; i < nout && s == MPCL_OK; i++)
        s = check_against(ctx, op, out_names[i], outs[i], out_dtypes[i], want, img_name, img, p);
    if (s == MPCL_OK && (img->numel > INT_MAX || outs[0]->numel > INT_MAX))
        s = mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: tensors over %d elements are not supported",
                           op, INT_MAX);
    return s;
}

/* The kernel `name` of cl/pool.cl built for this geometry: every size is
 * a -D define (P_H ... in cl/pool.cl). The kernels run over exactly
 * (columns, rows, B*C / r plane groups) with mpcl_launch_rows. */
static mpcl_status pool_kernel(mpcl_context *ctx, const pool_dims *g, const mpcl_pool2d_params *p,
                               const char *name, cl_kernel *k)
{
    char defs[MPCL_SPEC_DEFINES_LEN];
    mpcl_strfmt(defs, sizeof defs,
                "-DP_H=%zu -DP_W=%zu -DP_OH=%zu -DP_OW=%zu -DP_KH=%d -DP_KW=%d -DP_SH=%d "
                "-DP_SW=%d -DP_PH=%d -DP_PW=%d -DP_R=%zu",
                g->h, g->w, g->oh, g->ow, p->kernel_h, p->kernel_w, p->stride_h, p->stride_w,
                p->pad_h, p->pad_w, g->r);
    return mpcl_kernel_get_spec(ctx, "pool", mpcl_ctx_variant(ctx), defs, name, k);
}

static mpcl_status arg_error(mpcl_context *ctx, const char *op, cl_int rc)
{
    return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clSetKernelArg failed: %s", op,
                          mpcl_cl_error_name(rc));
}

mpcl_status mpcl_maxpool2d_forward(mpcl_context *ctx, mpcl_tensor *y, mpcl_tensor *argmax,
                                   const mpcl_tensor *x, const mpcl_pool2d_params *p)
{
    static const char op[] = "mpcl_maxpool2d_forward";
    const char *names[2] = {"y", "argmax"};
    const mpcl_tensor *outs[2] = {y, argmax};
    pool_dims g;
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    const mpcl_dtype dts[2] = {mpcl_storage_dtype(ctx), MPCL_I32};
    s = check_pool(ctx, op, "x", x, p, 2, names, outs, dts, &g);
    if (s != MPCL_OK)
        return s;
    cl_kernel k;
    s = pool_kernel(ctx, &g, p, "pool_max_forward", &k);
    if (s != MPCL_OK)
        return s;
    cl_int rc = mpcl_kernel_args(k, 3, sizeof(cl_mem), &x->mem, /* (B, C, H, W) */
                                 sizeof(cl_mem), &y->mem,        /* (B, C, OH, OW) */
                                 sizeof(cl_mem), &argmax->mem);  /* (B, C, OH, OW) i32 */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch_rows(ctx, k, op, g.ow, g.oh, g.b * g.c / g.r);
}

mpcl_status mpcl_maxpool2d_backward(mpcl_context *ctx, mpcl_tensor *dx, const mpcl_tensor *dy,
                                    const mpcl_tensor *argmax, const mpcl_pool2d_params *p)
{
    static const char op[] = "mpcl_maxpool2d_backward";
    const char *names[2] = {"dy", "argmax"};
    const mpcl_tensor *outs[2] = {dy, argmax};
    pool_dims g;
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    const mpcl_dtype dts[2] = {mpcl_storage_dtype(ctx), MPCL_I32};
    s = check_pool(ctx, op, "dx", dx, p, 2, names, outs, dts, &g);
    if (s != MPCL_OK)
        return s;
    cl_kernel k;
    /* windows that tile the input exactly: a scatter per window, else a gather */
    const int tiled = p->kernel_h == p->stride_h && p->kernel_w == p->stride_w && p->pad_h == 0 &&
                      p->pad_w == 0 && g.h == g.oh * (size_t)p->stride_h &&
                      g.w == g.ow * (size_t)p->stride_w;
    s = pool_kernel(ctx, &g, p, tiled ? "pool_max_backward_tiled" : "pool_max_backward", &k);
    if (s != MPCL_OK)
        return s;
    cl_int rc = mpcl_kernel_args(k, 3, sizeof(cl_mem), &dy->mem, /* (B, C, OH, OW) */
                                 sizeof(cl_mem), &argmax->mem,   /* (B, C, OH, OW) i32 */
                                 sizeof(cl_mem), &dx->mem);      /* (B, C, H, W) */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    if (tiled)
        return mpcl_launch_rows(ctx, k, op, g.ow, g.oh, g.b * g.c / g.r);
    return mpcl_launch_rows(ctx, k, op, g.w, g.h, g.b * g.c / g.r);
}

mpcl_status mpcl_avgpool2d_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                   const mpcl_pool2d_params *p)
{
    static const char op[] = "mpcl_avgpool2d_forward";
    const char *names[1] = {"y"};
    const mpcl_tensor *outs[1] = {y};
    pool_dims g;
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    const mpcl_dtype dts[1] = {mpcl_storage_dtype(ctx)};
    s = check_pool(ctx, op, "x", x, p, 1, names, outs, dts, &g);
    if (s != MPCL_OK)
        return s;
    cl_kernel k;
    s = pool_kernel(ctx, &g, p, "pool_avg_forward", &k);
    if (s != MPCL_OK)
        return s;
    cl_int rc = mpcl_kernel_args(k, 2, sizeof(cl_mem), &x->mem, /* (B, C, H, W) */
                                 sizeof(cl_mem), &y->mem);       /* (B, C, OH, OW) */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch_rows(ctx, k, op, g.ow, g.oh, g.b * g.c / g.r);
}

mpcl_status mpcl_avgpool2d_backward(mpcl_context *ctx, mpcl_tensor *dx, const mpcl_tensor *dy,
                                    const mpcl_pool2d_params *p)
{
    static const char op[] = "mpcl_avgpool2d_backward";
    const char *names[1] = {"dy"};
    const mpcl_tensor *outs[1] = {dy};
    pool_dims g;
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    const mpcl_dtype dts[1] = {mpcl_storage_dtype(ctx)};
    s = check_pool(ctx, op, "dx", dx, p, 1, names, outs, dts, &g);
    if (s != MPCL_OK)
        return s;
    cl_kernel k;
    s = pool_kernel(ctx, &g, p, "pool_avg_backward", &k);
    if (s != MPCL_OK)
        return s;
    cl_int rc = mpcl_kernel_args(k, 2, sizeof(cl_mem), &dy->mem, /* (B, C, OH, OW) */
                                 sizeof(cl_mem), &dx->mem);      /* (B, C, H, W) */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch_rows(ctx, k, op, g.w, g.h, g.b * g.c / g.r);
}
