/* normalize.c — bytes to normalised activations on the device (cl/data.cl). */
#include <math.h>
#include <string.h>

#include "internal.h"

void mpcl_normalization_init(mpcl_normalization *n)
{
    if (!n)
        return;
    memset(n, 0, sizeof *n);
    n->channels = 1;
    for (int c = 0; c < MPCL_MAX_NORM_CHANNELS; c++)
        n->std[c] = 1.0f;
}

void mpcl_normalization_measure(mpcl_normalization *n, const uint8_t *images, size_t count, size_t c,
                                size_t plane)
{
    mpcl_normalization_init(n);
    if (!n || !images || !count || !c || !plane)
        return;
    size_t groups = c <= MPCL_MAX_NORM_CHANNELS ? c : 1;
    n->channels = groups;
    for (size_t g = 0; g < groups; g++) {
        /* byte histograms: exact sums, no rounding drift over 10^8 bytes */
        uint64_t hist[256] = {0};
        for (size_t i = 0; i < count; i++) {
            const uint8_t *p = images + i * c * plane;
            if (groups == 1) {
                for (size_t k = 0; k < c * plane; k++)
                    hist[p[k]]++;
            } else {
                for (size_t k = 0; k < plane; k++)
                    hist[p[g * plane + k]]++;
            }
        }
        /* two passes over the histogram: the mean, then the squared deviations */
        double total = 0, sum = 0, var = 0;
        for (int v = 0; v < 256; v++) {
            total += (double)hist[v];
            sum += (double)hist[v] * (v / 255.0);
        }
        double mean = sum / total;
        for (int v = 0; v < 256; v++)
            var += (double)hist[v] * (v / 255.0 - mean) * (v / 255.0 - mean);
        double sd = sqrt(var / total);
        n->mean[g] = (float)mean;
        n->std[g] = sd > 1e-12 ? (float)sd : 1.0f;
    }
}

mpcl_status mpcl_normalize_u8(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                              const mpcl_normalization *nz)
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
    if (!nz || nz->channels < 1 || nz->channels > MPCL_MAX_NORM_CHANNELS)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: the normalisation must have 1 to %d channels",
                              op, MPCL_MAX_NORM_CHANNELS);
    size_t plane = 1;
    if (nz->channels > 1) {
        if (y->ndim != 4 || y->shape[1] != nz->channels) {
            char a[128];
            return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                                  "%s: a normalisation of %zu channels needs y (B, %zu, H, W), got %s", op,
                                  nz->channels, nz->channels, mpcl_tensor_describe(y, a, sizeof a));
        }
        plane = y->shape[2] * y->shape[3];
    }
    cl_float4 mean, inv;
    for (size_t c = 0; c < MPCL_MAX_NORM_CHANNELS; c++) {
        size_t k = c < nz->channels ? c : 0;
        if (!isfinite(nz->mean[k]) || !(nz->std[k] > 0.0f) || !isfinite(nz->std[k]))
            return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                                  "%s: channel %zu: mean %g and std %g (a finite mean and a std > 0)", op,
                                  k, (double)nz->mean[k], (double)nz->std[k]);
        mean.s[c] = nz->mean[k];
        inv.s[c] = 1.0f / nz->std[k];
    }
    cl_kernel k;
    if ((s = mpcl_check_u32(ctx, op, "x", x->numel)) != MPCL_OK ||
        (s = mpcl_kernel_get(ctx, "data", mpcl_ctx_variant(ctx), "normalize_u8", &k)) != MPCL_OK)
        return s;
    cl_uint n = (cl_uint)x->numel, pl = (cl_uint)plane, ch = (cl_uint)nz->channels;
    cl_int rc = mpcl_kernel_args(k, 7, sizeof(cl_mem), &x->mem, sizeof(cl_mem), &y->mem, sizeof n, &n,
                                 sizeof pl, &pl, sizeof ch, &ch, sizeof mean, &mean, sizeof inv, &inv);
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
