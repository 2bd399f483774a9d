/* src/ops/loss.c — fused softmax + cross-entropy (kernels in cl/loss.cl).
 *
 * Dimension letters: B rows (batch), C classes.
 *
 * Two launches per call: xent_rows (one work-group per row: max, sum of
 * exp, the row's loss and, when asked, its dlogits) and xent_mean (one
 * work-group: the mean of the B row losses, in a fixed order, so the same
 * inputs give the same loss bit for bit). The loss stays on the device. */
#include <math.h>
#include <stdint.h>

#include "internal.h"

#define LOSS_WG_MAX 256     /* cl/loss.cl's LOSS_WG_MAX */
#define LOSS_SCRATCH_SLOT 3 /* row losses, (B) f32; used within one call only */

static const char *const OP = "mpcl_softmax_cross_entropy";

/* The work-group size for reducing n values: the smallest power of two
 * >= n, at most LOSS_WG_MAX and what the kernel and device allow. */
static size_t group_size(mpcl_context *ctx, cl_kernel k, size_t n)
{
    size_t limit = mpcl_wg_limit(ctx, k); /* kernel, device and the context's cap */
    if (limit > LOSS_WG_MAX)
        limit = LOSS_WG_MAX;
    size_t p = 1;
    while (p < n && p * 2 <= limit)
        p *= 2;
    return p;
}

static mpcl_status check_args(mpcl_context *ctx, const mpcl_tensor *loss, const mpcl_tensor *dlogits,
                              const mpcl_tensor *logits, const mpcl_tensor *labels, float smoothing,
                              float grad_scale)
{
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    mpcl_status s = mpcl_check_tensor(ctx, OP, "logits", logits, st, 2, NULL);
    if (s != MPCL_OK)
        return s;
    size_t B = logits->shape[0], C = logits->shape[1];
    const size_t b_dims[1] = {B}, one[1] = {1}, bc_dims[2] = {B, C};
    if ((s = mpcl_check_tensor(ctx, OP, "labels", labels, MPCL_I32, 1, b_dims)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, OP, "loss", loss, MPCL_F32, 1, one)) != MPCL_OK)
        return s;
    if (dlogits && (s = mpcl_check_tensor(ctx, OP, "dlogits", dlogits, st, 2, bc_dims)) != MPCL_OK)
        return s;
    if (!(smoothing >= 0.0f && smoothing <= 1.0f))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: smoothing %g is outside [0, 1]", OP,
                              (double)smoothing);
    if (!isfinite(grad_scale))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: grad_scale %g is not finite", OP,
                              (double)grad_scale);
    char d[128];
    if (logits->numel > UINT32_MAX)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: logits %s has more than 2^32 - 1 elements",
                              OP, mpcl_tensor_describe(logits, d, sizeof d));
    return MPCL_OK;
}

/* row_loss (B) and, with dlogits, dlogits (B, C), from logits (B, C). */
static mpcl_status launch_rows(mpcl_context *ctx, cl_mem row_loss, mpcl_tensor *dlogits,
                               const mpcl_tensor *logits, const mpcl_tensor *labels, float smoothing,
                               float grad_scale)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "loss", mpcl_ctx_variant(ctx), "xent_rows", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint B = (cl_uint)logits->shape[0], C = (cl_uint)logits->shape[1];
    cl_float gscale = grad_scale / (float)B;
    cl_int want_grad = dlogits != NULL;
    /* without dlogits the kernel never touches its dlogits argument */
    cl_mem dl = dlogits ? dlogits->mem : logits->mem;
    cl_int rc = mpcl_kernel_args(k, 9, sizeof(cl_mem), &logits->mem, sizeof(cl_mem), &labels->mem,
                                 sizeof(cl_mem), &dl, sizeof(cl_mem), &row_loss, sizeof B, &B,
                                 sizeof C, &C, sizeof(cl_float), &smoothing, sizeof gscale, &gscale,
                                 sizeof want_grad, &want_grad);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: setting xent_rows arguments: %s", OP,
                              mpcl_cl_error_name(rc));
    size_t local = group_size(ctx, k, C);
    size_t global = (size_t)B * local;
    return mpcl_launch(ctx, k, OP, 1, &global, &local);
}

/* loss (1) = mean of row_loss (B). */
static mpcl_status launch_mean(mpcl_context *ctx, mpcl_tensor *loss, cl_mem row_loss, cl_uint B)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "loss", mpcl_ctx_variant(ctx), "xent_mean", &k);
    if (s != MPCL_OK)
        return s;
    cl_int rc = mpcl_kernel_args(k, 3, sizeof(cl_mem), &row_loss, sizeof(cl_mem), &loss->mem,
                                 sizeof B, &B);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: setting xent_mean arguments: %s", OP,
                              mpcl_cl_error_name(rc));
    size_t local = group_size(ctx, k, B);
    return mpcl_launch(ctx, k, OP, 1, &local, &local);
}

mpcl_status mpcl_softmax_cross_entropy(mpcl_context *ctx, mpcl_tensor *loss, mpcl_tensor *dlogits,
                                       const mpcl_tensor *logits, const mpcl_tensor *labels,
                                       float smoothing, float grad_scale)
{
    mpcl_status s = mpcl_check_ctx(ctx, OP);
    if (s != MPCL_OK)
        return s;
    s = check_args(ctx, loss, dlogits, logits, labels, smoothing, grad_scale);
    if (s != MPCL_OK)
        return s;
    size_t B = logits->shape[0];
    cl_mem row_loss; /* (B) f32 */
    s = mpcl_scratch(ctx, LOSS_SCRATCH_SLOT, B * sizeof(float), &row_loss);
    if (s != MPCL_OK)
        return s;
    s = launch_rows(ctx, row_loss, dlogits, logits, labels, smoothing, grad_scale);
    if (s != MPCL_OK)
        return s;
    return launch_mean(ctx, loss, row_loss, (cl_uint)B);
}
