/* src/ops/norm.c — batch norm over (B, H, W) per channel and layer norm over
 * the last dimension (kernels in cl/norm.cl).
 *
 * Dimension letters: B batch, C channels, H W height and width, HW = H * W,
 * M = B * HW values per channel; N rows, D features per row.
 *
 * Statistics are f32 and computed in float in every mode; gamma, beta, y,
 * dx, dgamma and dbeta are in the storage dtype. Parameter gradients
 * accumulate (+=), dx is assigned; NULL dx, dgamma or dbeta skips that
 * output.
 *
 * Batch-norm launches, all over exact 3-D ranges (HW, C, G or B) with
 * mpcl_launch_rows (no index division, no bounds checks) except the
 * per-channel finals: training forward bn_stats_partial (column partials
 * over chunks of the batch), bn_stats_final (a work item per channel:
 * statistics and running statistics), bn_apply; backward
 * bn_backward_partial (sum dy and sum dy xhat in one read of dy and x),
 * bn_backward_final (sums, dgamma and dbeta +=), bn_backward_dx. Layer norm:
 * ln_forward (a work-group per row, two-pass), or ln_backward_params then
 * ln_backward_dx. Every += runs in a one-work-item-per-value kernel without
 * barriers (see cl/norm.cl for the PoCL miscompilation that rules it out
 * after a work-group reduction). The order makes in-place use safe: every
 * reduction over dy or x is enqueued before the kernel that writes dx or y
 * (one in-order queue). */
#include <math.h>
#include <stdint.h>

#include "internal.h"

#define NORM_WG_MAX 256     /* cl/norm.cl's NORM_WG_MAX */
#define NORM_SCRATCH_SLOT 7 /* batch-norm (C, 2) f32 sums; within one call only */
#define NORM_PARTIAL_SLOT 6 /* batch-norm (2, G, C, HW) f32 partials; within one call only */
/* Batch-norm partial kernels split the batch until this many work items
 * run (when the batch has rows enough): a few times what a device's
 * work-groups hold at once, so that small layers still fill it. */
#define NORM_PARTIAL_ITEMS 16384
#define NORM_BC_MAX 16 /* rows a block of the partial kernels (unrolled) */
#define NORM_R_MAX 4   /* rows an item of the elementwise kernels */

static const char *const BN_FWD = "mpcl_batchnorm2d_forward";
static const char *const BN_BWD = "mpcl_batchnorm2d_backward";
static const char *const BNR_FWD = "mpcl_batchnorm2d_relu_forward";
static const char *const BNR_BWD = "mpcl_batchnorm2d_relu_backward";
static const char *const LN_FWD = "mpcl_layernorm_forward";
static const char *const LN_BWD = "mpcl_layernorm_backward";

/* The work-group size for reducing n values: the smallest power of two
 * >= n, at most NORM_WG_MAX and what the kernel and device allow. */
static size_t group_size(mpcl_context *ctx, cl_kernel k, size_t n)
{
    size_t limit = mpcl_wg_limit(ctx, k); /* kernel, device and the context's cap */
    if (limit > NORM_WG_MAX)
        limit = NORM_WG_MAX;
    size_t p = 1;
    while (p < n && p * 2 <= limit)
        p *= 2;
    return p;
}

/* groups work-groups of a reduction over n values each. */
static mpcl_status launch_groups(mpcl_context *ctx, cl_kernel k, const char *op, size_t groups,
                                 size_t n)
{
    size_t local = group_size(ctx, k, n);
    size_t global = groups * local;
    return mpcl_launch(ctx, k, op, 1, &global, &local);
}

static mpcl_status arg_error(mpcl_context *ctx, const char *op, const char *kernel, cl_int rc)
{
    return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: setting %s arguments: %s", op, kernel,
                          mpcl_cl_error_name(rc));
}

static mpcl_status check_small(mpcl_context *ctx, const char *op, const char *name,
                               const mpcl_tensor *t)
{
    char d[128];
    if (t->numel > UINT32_MAX)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: %s %s has more than 2^32 - 1 elements", op,
                              name, mpcl_tensor_describe(t, d, sizeof d));
    return MPCL_OK;
}

static mpcl_status check_eps(mpcl_context *ctx, const char *op, float eps)
{
    if (!(eps >= 0.0f) || !isfinite(eps))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: eps %g must be finite and >= 0", op,
                              (double)eps);
    return MPCL_OK;
}

/* ------------------------------------------------------------ batch norm */

static mpcl_status bn_forward_check(mpcl_context *ctx, const char *op, const mpcl_tensor *y,
                                    const mpcl_tensor *x,
                                    const mpcl_tensor *gamma, const mpcl_tensor *beta,
                                    const mpcl_tensor *running_mean, const mpcl_tensor *running_var,
                                    const mpcl_tensor *save_mean, const mpcl_tensor *save_invstd,
                                    float momentum, float eps, int training)
{
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    mpcl_status s = mpcl_check_tensor(ctx, op, "x", x, st, 4, NULL);
    if (s != MPCL_OK)
        return s;
    const size_t *xs = x->shape; /* (B, C, H, W) */
    const size_t c_dims[1] = {xs[1]};
    if ((s = mpcl_check_tensor(ctx, op, "y", y, st, 4, xs)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, op, "gamma", gamma, st, 1, c_dims)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, op, "beta", beta, st, 1, c_dims)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, op, "running_mean", running_mean, MPCL_F32, 1, c_dims)) !=
            MPCL_OK ||
        (s = mpcl_check_tensor(ctx, op, "running_var", running_var, MPCL_F32, 1, c_dims)) !=
            MPCL_OK)
        return s;
    /* eval leaves save_* alone, so they may be NULL there */
    if ((training || save_mean) &&
        (s = mpcl_check_tensor(ctx, op, "save_mean", save_mean, MPCL_F32, 1, c_dims)) != MPCL_OK)
        return s;
    if ((training || save_invstd) &&
        (s = mpcl_check_tensor(ctx, op, "save_invstd", save_invstd, MPCL_F32, 1, c_dims)) !=
            MPCL_OK)
        return s;
    if ((s = check_small(ctx, op, "x", x)) != MPCL_OK || (s = check_eps(ctx, op, eps)) != MPCL_OK)
        return s;
    if (!isfinite(momentum))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: momentum %g is not finite", op,
                              (double)momentum);
    char d[128];
    if (training && xs[0] * xs[2] * xs[3] < 2)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: x is %s, expected more than one value per channel (B * H * W >= 2) "
                              "when training",
                              op, mpcl_tensor_describe(x, d, sizeof d));
    return MPCL_OK;
}

/* The batch split of the batch-norm partial kernels: G blocks of bc rows
 * (the last one shorter, none empty), at most NORM_BC_MAX rows a block (the
 * kernels unroll them), and more blocks when that brings HW * C * G items
 * up towards NORM_PARTIAL_ITEMS (small layers, or a large batch of few
 * pixels, still fill the device). */
typedef struct {
    cl_uint B, C, HW, bc, G;
    cl_uint R; /* rows an item of bn_apply and bn_backward_dx: a divisor of B */
} bn_split;

static bn_split bn_split_of(const mpcl_tensor *x)
{
    bn_split p;
    p.B = (cl_uint)x->shape[0];
    p.C = (cl_uint)x->shape[1];
    p.HW = (cl_uint)(x->shape[2] * x->shape[3]);
    size_t cols = (size_t)p.C * p.HW, g = (NORM_PARTIAL_ITEMS + cols - 1) / cols;
    if (g < (p.B + NORM_BC_MAX - 1) / NORM_BC_MAX)
        g = (p.B + NORM_BC_MAX - 1) / NORM_BC_MAX;
    if (g > p.B)
        g = p.B;
    if (g < 1)
        g = 1;
    p.bc = (cl_uint)((p.B + g - 1) / g);
    p.G = (p.B + p.bc - 1) / p.bc;
    p.R = (cl_uint)mpcl_largest_divisor_le(p.B, NORM_R_MAX);
    return p;
}

/* The kernel `name` built for this split (-DNORM_B, -DNORM_BC, -DNORM_R)
 * and, with relu, fused with the ReLU after it (-DNORM_RELU=1). */
static mpcl_status bn_spec_kernel(mpcl_context *ctx, const bn_split *p, int relu, const char *name,
                                  cl_kernel *k)
{
    char defs[80];
    mpcl_strfmt(defs, sizeof defs, "-DNORM_B=%u -DNORM_BC=%u -DNORM_R=%u -DNORM_RELU=%d",
                (unsigned)p->B, (unsigned)p->bc, (unsigned)p->R, relu ? 1 : 0);
    return mpcl_kernel_get_spec(ctx, "norm", mpcl_ctx_variant(ctx), defs, name, k);
}

/* The (2, G, C, HW) f32 partials of one call. */
static mpcl_status bn_partials(mpcl_context *ctx, const bn_split *p, cl_mem *out)
{
    return mpcl_scratch(ctx, NORM_PARTIAL_SLOT, (size_t)p->G * p->C * p->HW * 2 * sizeof(float),
                        out);
}

/* save_mean, save_invstd (C) from x, and running_mean, running_var (C)
 * updated. */
static mpcl_status bn_launch_stats(mpcl_context *ctx, const mpcl_tensor *x, mpcl_tensor *save_mean,
                                   mpcl_tensor *save_invstd, mpcl_tensor *running_mean,
                                   mpcl_tensor *running_var, float momentum, float eps)
{
    const bn_split p = bn_split_of(x);
    cl_mem part;
    cl_kernel k;
    mpcl_status s = bn_partials(ctx, &p, &part);
    if (s != MPCL_OK ||
        (s = bn_spec_kernel(ctx, &p, 0, "bn_stats_partial", &k)) != MPCL_OK)
        return s;
    cl_int rc = mpcl_kernel_args(k, 2, sizeof(cl_mem), &x->mem, sizeof(cl_mem), &part);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, BN_FWD, "bn_stats_partial", rc);
    if ((s = mpcl_launch_rows(ctx, k, BN_FWD, p.HW, p.C, p.G)) != MPCL_OK ||
        (s = mpcl_kernel_get(ctx, "norm", mpcl_ctx_variant(ctx), "bn_stats_final", &k)) != MPCL_OK)
        return s;
    rc = mpcl_kernel_args(k, 12, sizeof(cl_mem), &part, sizeof(cl_mem), &save_mean->mem,
                          sizeof(cl_mem), &save_invstd->mem, sizeof(cl_mem), &running_mean->mem,
                          sizeof(cl_mem), &running_var->mem, sizeof p.C, &p.C, sizeof p.HW, &p.HW,
                          sizeof p.B, &p.B, sizeof p.bc, &p.bc, sizeof p.G, &p.G, sizeof(cl_float),
                          &eps, sizeof(cl_float), &momentum);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, BN_FWD, "bn_stats_final", rc);
    return mpcl_launch_1d(ctx, k, BN_FWD, p.C);
}

/* y = (x - mean) invstd gamma + beta, with relu max(that, 0); stat is
 * invstd, or a variance when stat_is_var. */
static mpcl_status bn_launch_apply(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                   const mpcl_tensor *gamma, const mpcl_tensor *beta,
                                   const mpcl_tensor *mean, const mpcl_tensor *stat, float eps,
                                   int stat_is_var, int relu)
{
    cl_kernel k;
    const bn_split p = bn_split_of(x);
    mpcl_status s = bn_spec_kernel(ctx, &p, relu, "bn_apply", &k);
    if (s != MPCL_OK)
        return s;
    cl_int is_var = stat_is_var;
    cl_int rc = mpcl_kernel_args(k, 8, sizeof(cl_mem), &y->mem, sizeof(cl_mem), &x->mem,
                                 sizeof(cl_mem), &gamma->mem, sizeof(cl_mem), &beta->mem,
                                 sizeof(cl_mem), &mean->mem, sizeof(cl_mem), &stat->mem,
                                 sizeof(cl_float), &eps, sizeof is_var, &is_var);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, BN_FWD, "bn_apply", rc);
    return mpcl_launch_rows(ctx, k, BN_FWD, p.HW, p.C, p.B / p.R);
}

static mpcl_status bn_forward(mpcl_context *ctx, const char *op, mpcl_tensor *y,
                              const mpcl_tensor *x, const mpcl_tensor *gamma,
                              const mpcl_tensor *beta, mpcl_tensor *running_mean,
                              mpcl_tensor *running_var, mpcl_tensor *save_mean,
                              mpcl_tensor *save_invstd, float momentum, float eps, int training,
                              int relu)
{
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    s = bn_forward_check(ctx, op, y, x, gamma, beta, running_mean, running_var, save_mean,
                         save_invstd, momentum, eps, training);
    if (s != MPCL_OK)
        return s;
    if (!training)
        return bn_launch_apply(ctx, y, x, gamma, beta, running_mean, running_var, eps, 1, relu);
    if ((s = bn_launch_stats(ctx, x, save_mean, save_invstd, running_mean, running_var, momentum,
                             eps)) != MPCL_OK)
        return s;
    return bn_launch_apply(ctx, y, x, gamma, beta, save_mean, save_invstd, eps, 0, relu);
}

mpcl_status mpcl_batchnorm2d_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                     const mpcl_tensor *gamma, const mpcl_tensor *beta,
                                     mpcl_tensor *running_mean, mpcl_tensor *running_var,
                                     mpcl_tensor *save_mean, mpcl_tensor *save_invstd,
                                     float momentum, float eps, int training)
{
    return bn_forward(ctx, BN_FWD, y, x, gamma, beta, running_mean, running_var, save_mean,
                      save_invstd, momentum, eps, training, 0);
}

mpcl_status mpcl_batchnorm2d_relu_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                          const mpcl_tensor *gamma, const mpcl_tensor *beta,
                                          mpcl_tensor *running_mean, mpcl_tensor *running_var,
                                          mpcl_tensor *save_mean, mpcl_tensor *save_invstd,
                                          float momentum, float eps, int training)
{
    return bn_forward(ctx, BNR_FWD, y, x, gamma, beta, running_mean, running_var, save_mean,
                      save_invstd, momentum, eps, training, 1);
}

static mpcl_status bn_backward_check(mpcl_context *ctx, const char *op, const mpcl_tensor *dx,
                                     const mpcl_tensor *dgamma, const mpcl_tensor *dbeta,
                                     const mpcl_tensor *dy, const mpcl_tensor *x,
                                     const mpcl_tensor *gamma, const mpcl_tensor *save_mean,
                                     const mpcl_tensor *save_invstd)
{
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    mpcl_status s = mpcl_check_tensor(ctx, op, "dy", dy, st, 4, NULL);
    if (s != MPCL_OK)
        return s;
    const size_t *ys = dy->shape; /* (B, C, H, W) */
    const size_t c_dims[1] = {ys[1]};
    if ((s = mpcl_check_tensor(ctx, op, "x", x, st, 4, ys)) != MPCL_OK ||
        (dx && (s = mpcl_check_tensor(ctx, op, "dx", dx, st, 4, ys)) != MPCL_OK) ||
        (s = mpcl_check_tensor(ctx, op, "gamma", gamma, st, 1, c_dims)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, op, "save_mean", save_mean, MPCL_F32, 1, c_dims)) !=
            MPCL_OK ||
        (s = mpcl_check_tensor(ctx, op, "save_invstd", save_invstd, MPCL_F32, 1, c_dims)) !=
            MPCL_OK ||
        (dgamma && (s = mpcl_check_tensor(ctx, op, "dgamma", dgamma, st, 1, c_dims)) != MPCL_OK) ||
        (dbeta && (s = mpcl_check_tensor(ctx, op, "dbeta", dbeta, st, 1, c_dims)) != MPCL_OK))
        return s;
    return check_small(ctx, op, "dy", dy);
}

/* sums (C, 2) = per-channel (sum dy, sum dy xhat); dgamma, dbeta (C) +=
 * them (a NULL one is skipped). */
static mpcl_status bn_launch_sums(mpcl_context *ctx, cl_mem sums, mpcl_tensor *dgamma,
                                  mpcl_tensor *dbeta, const mpcl_tensor *dy, const mpcl_tensor *y,
                                  const mpcl_tensor *x, const mpcl_tensor *save_mean,
                                  const mpcl_tensor *save_invstd)
{
    const cl_mem ym = y ? y->mem : dy->mem; /* not read without the ReLU */
    const bn_split p = bn_split_of(x);
    cl_mem part;
    cl_kernel k;
    mpcl_status s = bn_partials(ctx, &p, &part);
    if (s != MPCL_OK ||
        (s = bn_spec_kernel(ctx, &p, y != NULL, "bn_backward_partial", &k)) != MPCL_OK)
        return s;
    cl_int rc = mpcl_kernel_args(k, 6, sizeof(cl_mem), &dy->mem, sizeof(cl_mem), &ym,
                                 sizeof(cl_mem), &x->mem, sizeof(cl_mem), &save_mean->mem,
                                 sizeof(cl_mem), &save_invstd->mem, sizeof(cl_mem), &part);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, BN_BWD, "bn_backward_partial", rc);
    if ((s = mpcl_launch_rows(ctx, k, BN_BWD, p.HW, p.C, p.G)) != MPCL_OK ||
        (s = mpcl_kernel_get(ctx, "norm", mpcl_ctx_variant(ctx), "bn_backward_final", &k)) !=
            MPCL_OK)
        return s;
    cl_int want_dg = dgamma != NULL, want_db = dbeta != NULL;
    /* a skipped gradient's argument is never touched by the kernel */
    cl_mem dg = dgamma ? dgamma->mem : sums, db = dbeta ? dbeta->mem : sums;
    rc = mpcl_kernel_args(k, 9, sizeof(cl_mem), &part, sizeof(cl_mem), &sums, sizeof(cl_mem), &dg,
                          sizeof(cl_mem), &db, sizeof p.C, &p.C, sizeof p.HW, &p.HW, sizeof p.G,
                          &p.G, sizeof want_dg, &want_dg, sizeof want_db, &want_db);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, BN_BWD, "bn_backward_final", rc);
    return mpcl_launch_1d(ctx, k, BN_BWD, p.C);
}

static mpcl_status bn_launch_dx(mpcl_context *ctx, mpcl_tensor *dx, const mpcl_tensor *dy,
                                const mpcl_tensor *y, const mpcl_tensor *x,
                                const mpcl_tensor *gamma, const mpcl_tensor *save_mean,
                                const mpcl_tensor *save_invstd, cl_mem sums)
{
    cl_kernel k;
    const bn_split p = bn_split_of(x);
    mpcl_status s = bn_spec_kernel(ctx, &p, y != NULL, "bn_backward_dx", &k);
    if (s != MPCL_OK)
        return s;
    const cl_mem ym = y ? y->mem : dy->mem; /* not read without the ReLU */
    cl_float m = (cl_float)((double)p.B * p.HW);
    cl_int rc = mpcl_kernel_args(k, 9, sizeof(cl_mem), &dx->mem, sizeof(cl_mem), &dy->mem,
                                 sizeof(cl_mem), &ym, sizeof(cl_mem), &x->mem, sizeof(cl_mem), &gamma->mem, sizeof(cl_mem),
                                 &save_mean->mem, sizeof(cl_mem), &save_invstd->mem, sizeof(cl_mem),
                                 &sums, sizeof m, &m);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, BN_BWD, "bn_backward_dx", rc);
    return mpcl_launch_rows(ctx, k, BN_BWD, p.HW, p.C, p.B / p.R);
}

/* relu: fused with the ReLU whose output is y (else y is not used). */
static mpcl_status bn_backward(mpcl_context *ctx, const char *op, mpcl_tensor *dx,
                               mpcl_tensor *dgamma, mpcl_tensor *dbeta, const mpcl_tensor *dy,
                               int relu, const mpcl_tensor *y, const mpcl_tensor *x,
                               const mpcl_tensor *gamma, const mpcl_tensor *save_mean,
                               const mpcl_tensor *save_invstd)
{
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    s = bn_backward_check(ctx, op, dx, dgamma, dbeta, dy, x, gamma, save_mean, save_invstd);
    if (s == MPCL_OK && relu) /* the ReLU's output selects the gradient */
        s = mpcl_check_tensor(ctx, op, "y", y, mpcl_storage_dtype(ctx), 4, dy->shape);
    if (s == MPCL_OK && y && dx && dx->mem == y->mem)
        s = mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                           "%s: dx and y share a buffer; y is read after dx is written", op);
    if (s != MPCL_OK)
        return s;
    if (!dx && !dgamma && !dbeta)
        return MPCL_OK;
    cl_mem sums; /* (C, 2) f32 */
    s = mpcl_scratch(ctx, NORM_SCRATCH_SLOT, x->shape[1] * 2 * sizeof(float), &sums);
    if (s != MPCL_OK)
        return s;
    if ((s = bn_launch_sums(ctx, sums, dgamma, dbeta, dy, y, x, save_mean, save_invstd)) !=
        MPCL_OK)
        return s;
    if (!dx)
        return MPCL_OK;
    return bn_launch_dx(ctx, dx, dy, y, x, gamma, save_mean, save_invstd, sums);
}

mpcl_status mpcl_batchnorm2d_backward(mpcl_context *ctx, mpcl_tensor *dx, mpcl_tensor *dgamma,
                                      mpcl_tensor *dbeta, const mpcl_tensor *dy,
                                      const mpcl_tensor *x, const mpcl_tensor *gamma,
                                      const mpcl_tensor *save_mean, const mpcl_tensor *save_invstd)
{
    return bn_backward(ctx, BN_BWD, dx, dgamma, dbeta, dy, 0, NULL, x, gamma, save_mean,
                       save_invstd);
}

mpcl_status mpcl_batchnorm2d_relu_backward(mpcl_context *ctx, mpcl_tensor *dx,
                                           mpcl_tensor *dgamma, mpcl_tensor *dbeta,
                                           const mpcl_tensor *dy, const mpcl_tensor *y,
                                           const mpcl_tensor *x, const mpcl_tensor *gamma,
                                           const mpcl_tensor *save_mean,
                                           const mpcl_tensor *save_invstd)
{
    return bn_backward(ctx, BNR_BWD, dx, dgamma, dbeta, dy, 1, y, x, gamma, save_mean,
                       save_invstd);
}

/* ------------------------------------------------------------ layer norm */

static mpcl_status ln_forward_check(mpcl_context *ctx, const mpcl_tensor *y, const mpcl_tensor *x,
                                    const mpcl_tensor *gamma, const mpcl_tensor *beta,
                                    const mpcl_tensor *save_mean, const mpcl_tensor *save_invstd,
                                    float eps)
{
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    mpcl_status s = mpcl_check_tensor(ctx, LN_FWD, "x", x, st, 2, NULL);
    if (s != MPCL_OK)
        return s;
    const size_t *xs = x->shape; /* (N, D) */
    const size_t n_dims[1] = {xs[0]}, d_dims[1] = {xs[1]};
    if ((s = mpcl_check_tensor(ctx, LN_FWD, "y", y, st, 2, xs)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, LN_FWD, "gamma", gamma, st, 1, d_dims)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, LN_FWD, "beta", beta, st, 1, d_dims)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, LN_FWD, "save_mean", save_mean, MPCL_F32, 1, n_dims)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, LN_FWD, "save_invstd", save_invstd, MPCL_F32, 1, n_dims)) !=
            MPCL_OK)
        return s;
    if ((s = check_small(ctx, LN_FWD, "x", x)) != MPCL_OK)
        return s;
    return check_eps(ctx, LN_FWD, eps);
}

mpcl_status mpcl_layernorm_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                   const mpcl_tensor *gamma, const mpcl_tensor *beta,
                                   mpcl_tensor *save_mean, mpcl_tensor *save_invstd, float eps)
{
    mpcl_status s = mpcl_check_ctx(ctx, LN_FWD);
    if (s != MPCL_OK)
        return s;
    s = ln_forward_check(ctx, y, x, gamma, beta, save_mean, save_invstd, eps);
    if (s != MPCL_OK)
        return s;
    cl_kernel k;
    s = mpcl_kernel_get(ctx, "norm", mpcl_ctx_variant(ctx), "ln_forward", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint N = (cl_uint)x->shape[0], D = (cl_uint)x->shape[1];
    cl_int rc = mpcl_kernel_args(k, 9, sizeof(cl_mem), &y->mem, sizeof(cl_mem), &x->mem,
                                 sizeof(cl_mem), &gamma->mem, sizeof(cl_mem), &beta->mem,
                                 sizeof(cl_mem), &save_mean->mem, sizeof(cl_mem), &save_invstd->mem,
                                 sizeof N, &N, sizeof D, &D, sizeof(cl_float), &eps);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, LN_FWD, "ln_forward", rc);
    return launch_groups(ctx, k, LN_FWD, N, D);
}

static mpcl_status ln_backward_check(mpcl_context *ctx, const mpcl_tensor *dx,
                                     const mpcl_tensor *dgamma, const mpcl_tensor *dbeta,
                                     const mpcl_tensor *dy, const mpcl_tensor *x,
                                     const mpcl_tensor *gamma, const mpcl_tensor *save_mean,
                                     const mpcl_tensor *save_invstd)
{
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    mpcl_status s = mpcl_check_tensor(ctx, LN_BWD, "dy", dy, st, 2, NULL);
    if (s != MPCL_OK)
        return s;
    const size_t *ys = dy->shape; /* (N, D) */
    const size_t n_dims[1] = {ys[0]}, d_dims[1] = {ys[1]};
    if ((s = mpcl_check_tensor(ctx, LN_BWD, "x", x, st, 2, ys)) != MPCL_OK ||
        (dx && (s = mpcl_check_tensor(ctx, LN_BWD, "dx", dx, st, 2, ys)) != MPCL_OK) ||
        (s = mpcl_check_tensor(ctx, LN_BWD, "gamma", gamma, st, 1, d_dims)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, LN_BWD, "save_mean", save_mean, MPCL_F32, 1, n_dims)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, LN_BWD, "save_invstd", save_invstd, MPCL_F32, 1, n_dims)) !=
            MPCL_OK ||
        (dgamma && (s = mpcl_check_tensor(ctx, LN_BWD, "dgamma", dgamma, st, 1, d_dims)) != MPCL_OK) ||
        (dbeta && (s = mpcl_check_tensor(ctx, LN_BWD, "dbeta", dbeta, st, 1, d_dims)) != MPCL_OK))
        return s;
    return check_small(ctx, LN_BWD, "dy", dy);
}

/* dgamma, dbeta (D) += column sums over the N rows. */
static mpcl_status ln_launch_params(mpcl_context *ctx, mpcl_tensor *dgamma, mpcl_tensor *dbeta,
                                    const mpcl_tensor *dy, const mpcl_tensor *x,
                                    const mpcl_tensor *save_mean, const mpcl_tensor *save_invstd)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "norm", mpcl_ctx_variant(ctx), "ln_backward_params", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint N = (cl_uint)x->shape[0], D = (cl_uint)x->shape[1];
    cl_int want_dg = dgamma != NULL, want_db = dbeta != NULL;
    /* a skipped gradient's argument is never touched by the kernel */
    cl_mem dg = dgamma ? dgamma->mem : dy->mem, db = dbeta ? dbeta->mem : dy->mem;
    cl_int rc = mpcl_kernel_args(k, 10, sizeof(cl_mem), &dg, sizeof(cl_mem), &db, sizeof(cl_mem),
                                 &dy->mem, sizeof(cl_mem), &x->mem, sizeof(cl_mem), &save_mean->mem,
                                 sizeof(cl_mem), &save_invstd->mem, sizeof N, &N, sizeof D, &D,
                                 sizeof want_dg, &want_dg, sizeof want_db, &want_db);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, LN_BWD, "ln_backward_params", rc);
    return mpcl_launch_1d(ctx, k, LN_BWD, D);
}

static mpcl_status ln_launch_dx(mpcl_context *ctx, mpcl_tensor *dx, const mpcl_tensor *dy,
                                const mpcl_tensor *x, const mpcl_tensor *gamma,
                                const mpcl_tensor *save_mean, const mpcl_tensor *save_invstd)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "norm", mpcl_ctx_variant(ctx), "ln_backward_dx", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint N = (cl_uint)x->shape[0], D = (cl_uint)x->shape[1];
    cl_int rc = mpcl_kernel_args(k, 8, sizeof(cl_mem), &dx->mem, sizeof(cl_mem), &dy->mem,
                                 sizeof(cl_mem), &x->mem, sizeof(cl_mem), &gamma->mem, sizeof(cl_mem),
                                 &save_mean->mem, sizeof(cl_mem), &save_invstd->mem, sizeof N, &N,
                                 sizeof D, &D);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, LN_BWD, "ln_backward_dx", rc);
    return launch_groups(ctx, k, LN_BWD, N, D);
}

mpcl_status mpcl_layernorm_backward(mpcl_context *ctx, mpcl_tensor *dx, mpcl_tensor *dgamma,
                                    mpcl_tensor *dbeta, const mpcl_tensor *dy, const mpcl_tensor *x,
                                    const mpcl_tensor *gamma, const mpcl_tensor *save_mean,
                                    const mpcl_tensor *save_invstd)
{
    mpcl_status s = mpcl_check_ctx(ctx, LN_BWD);
    if (s != MPCL_OK)
        return s;
    s = ln_backward_check(ctx, dx, dgamma, dbeta, dy, x, gamma, save_mean, save_invstd);
    if (s != MPCL_OK)
        return s;
    /* the parameter sums read dy before dx (which may be dy) is written */
    if ((dgamma || dbeta) &&
        (s = ln_launch_params(ctx, dgamma, dbeta, dy, x, save_mean, save_invstd)) != MPCL_OK)
        return s;
    if (!dx)
        return MPCL_OK;
    return ln_launch_dx(ctx, dx, dy, x, gamma, save_mean, save_invstd);
}
