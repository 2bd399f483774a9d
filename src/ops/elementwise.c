/* ops/elementwise.c — activations, dropout, add, scale (cl/elementwise.cl).
 *
 * Dimension letters: N elements of a tensor of any shape, flattened.
 * Every op checks ctx, dtypes and shapes first (and enqueues nothing on a bad
 * argument), then enqueues one 1-D launch of one work-item per element. */
#include <limits.h>
#include <math.h>

#include "internal.h"

/* ------------------------------------------------------------ checks */

/* t is in the storage dtype, any shape. */
static mpcl_status check_storage(mpcl_context *ctx, const char *op, const char *name,
                                 const mpcl_tensor *t)
{
    return mpcl_check_tensor(ctx, op, name, t, mpcl_storage_dtype(ctx), t ? t->ndim : 1, NULL);
}

/* t has exactly the dtype and shape of ref (already checked). */
static mpcl_status check_like(mpcl_context *ctx, const char *op, const char *name,
                              const mpcl_tensor *t, const mpcl_tensor *ref)
{
    return mpcl_check_tensor(ctx, op, name, t, ref->dtype, ref->ndim, ref->shape);
}

/* The kernels index with uint element counts. */
static mpcl_status check_numel(mpcl_context *ctx, const char *op, const char *name,
                               const mpcl_tensor *t)
{
    char d[128];
    if (t->numel > UINT_MAX)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %s is %s, more than %u elements", op,
                              name, mpcl_tensor_describe(t, d, sizeof d), UINT_MAX);
    return MPCL_OK;
}

/* x in the storage dtype; y (when not NULL) of x's shape and dtype. */
static mpcl_status check_pair(mpcl_context *ctx, const char *op, const char *xname,
                              const mpcl_tensor *x, const char *yname, const mpcl_tensor *y)
{
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s == MPCL_OK)
        s = check_storage(ctx, op, xname, x);
    if (s == MPCL_OK && y)
        s = check_like(ctx, op, yname, y, x);
    if (s == MPCL_OK)
        s = check_numel(ctx, op, xname, x);
    return s;
}

static mpcl_status check_activation(mpcl_context *ctx, const char *op, mpcl_activation f,
                                    float alpha)
{
    if ((unsigned)f > (unsigned)MPCL_ACT_TANH)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: unknown activation %d", op, (int)f);
    if (f == MPCL_ACT_LEAKY_RELU && !isfinite(alpha))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: leaky ReLU slope %g is not finite", op,
                              (double)alpha);
    return MPCL_OK;
}

static mpcl_status enqueue_error(mpcl_context *ctx, const char *op, cl_int rc)
{
    return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clSetKernelArg failed: %s", op,
                          mpcl_cl_error_name(rc));
}

/* -------------------------------------------------------- activations */

mpcl_status mpcl_activation_forward(mpcl_context *ctx, mpcl_activation f, float alpha,
                                    mpcl_tensor *y, const mpcl_tensor *x)
{
    static const char *op = "mpcl_activation_forward";
    mpcl_status s = check_pair(ctx, op, "x", x, "y", y);
    if (s == MPCL_OK && !y)
        s = check_like(ctx, op, "y", y, x); /* reports y NULL */
    if (s == MPCL_OK)
        s = check_activation(ctx, op, f, alpha);
    if (s != MPCL_OK)
        return s;

    cl_kernel k;
    cl_int rc;
    if (f == MPCL_ACT_RELU) { /* the common case, in a kernel a CPU device vectorises */
        s = mpcl_kernel_get(ctx, "elementwise", mpcl_ctx_variant(ctx), "relu_forward", &k);
        if (s != MPCL_OK)
            return s;
        rc = mpcl_kernel_args(k, 2, sizeof(cl_mem), &x->mem, sizeof(cl_mem), &y->mem);
        if (rc != CL_SUCCESS)
            return enqueue_error(ctx, op, rc);
        return mpcl_launch_exact_1d(ctx, k, op, x->numel);
    }
    s = mpcl_kernel_get(ctx, "elementwise", mpcl_ctx_variant(ctx), "activation_forward", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint n = (cl_uint)x->numel;
    cl_int fi = (cl_int)f;
    rc = mpcl_kernel_args(k, 5, sizeof(cl_mem), &x->mem, /* x (N) */
                          sizeof(cl_mem), &y->mem,       /* y (N) */
                          sizeof n, &n, sizeof fi, &fi, sizeof alpha, &alpha);
    if (rc != CL_SUCCESS)
        return enqueue_error(ctx, op, rc);
    return mpcl_launch_1d(ctx, k, op, n);
}

/* sigmoid and tanh differentiate from y, the others from x. */
static int uses_output(mpcl_activation f) { return f == MPCL_ACT_SIGMOID || f == MPCL_ACT_TANH; }

mpcl_status mpcl_activation_backward(mpcl_context *ctx, mpcl_activation f, float alpha,
                                     mpcl_tensor *dx, const mpcl_tensor *dy, const mpcl_tensor *x,
                                     const mpcl_tensor *y)
{
    static const char *op = "mpcl_activation_backward";
    mpcl_status s = check_pair(ctx, op, "dy", dy, "dx", dx);
    if (s == MPCL_OK)
        s = check_activation(ctx, op, f, alpha);
    /* The operand f' needs must be there; the other may be NULL (checked if given). */
    const mpcl_tensor *need = uses_output(f) ? y : x;
    if (s == MPCL_OK)
        s = check_like(ctx, op, uses_output(f) ? "y" : "x", need, dy);
    if (s == MPCL_OK && x && x != need)
        s = check_like(ctx, op, "x", x, dy);
    if (s == MPCL_OK && y && y != need)
        s = check_like(ctx, op, "y", y, dy);
    if (s != MPCL_OK || !dx)
        return s; /* NULL dx: nothing to compute */

    cl_kernel k;
    if (f == MPCL_ACT_RELU) { /* the common case, in a kernel a CPU device vectorises */
        s = mpcl_kernel_get(ctx, "elementwise", mpcl_ctx_variant(ctx), "relu_backward", &k);
        if (s != MPCL_OK)
            return s;
        cl_int rc = mpcl_kernel_args(k, 3, sizeof(cl_mem), &dy->mem, sizeof(cl_mem), &x->mem,
                                     sizeof(cl_mem), &dx->mem);
        if (rc != CL_SUCCESS)
            return enqueue_error(ctx, op, rc);
        return mpcl_launch_exact_1d(ctx, k, op, dy->numel);
    }
    s = mpcl_kernel_get(ctx, "elementwise", mpcl_ctx_variant(ctx), "activation_backward", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint n = (cl_uint)dy->numel;
    cl_int fi = (cl_int)f;
    cl_mem xm = (x ? x : need)->mem; /* the unused operand's pointer is never read */
    cl_mem ym = (y ? y : need)->mem;
    cl_int rc = mpcl_kernel_args(k, 7, sizeof(cl_mem), &dy->mem, /* dy (N) */
                                 sizeof(cl_mem), &xm,            /* x (N) */
                                 sizeof(cl_mem), &ym,            /* y (N) */
                                 sizeof(cl_mem), &dx->mem,       /* dx (N) */
                                 sizeof n, &n, sizeof fi, &fi, sizeof alpha, &alpha);
    if (rc != CL_SUCCESS)
        return enqueue_error(ctx, op, rc);
    return mpcl_launch_1d(ctx, k, op, n);
}

/* ------------------------------------------------------------ dropout */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The key of the counter-based generator (cl/elementwise.cl, dropout). */
static uint64_t dropout_key(uint64_t seed, uint64_t step)
{
    return mix64(seed ^ mix64(step ^ 0x9e3779b97f4a7c15ULL));
}

/* out (N) = keep ? in * 1 / (1 - p) : 0, the mask from (seed, step). */
static mpcl_status dropout_apply(mpcl_context *ctx, const char *op, mpcl_tensor *out,
                                 const mpcl_tensor *in, float p, uint64_t seed, uint64_t step)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "elementwise", mpcl_ctx_variant(ctx), "dropout", &k);
    if (s != MPCL_OK)
        return s;
    uint64_t key = dropout_key(seed, step);
    cl_uint key_lo = (cl_uint)(key & 0xffffffffu), key_hi = (cl_uint)(key >> 32);
    float scale = (float)(1.0 / (1.0 - (double)p));
    cl_int rc = mpcl_kernel_args(k, 6, sizeof(cl_mem), &in->mem, /* x (N) */
                                 sizeof(cl_mem), &out->mem,      /* y (N) */
                                 sizeof key_lo, &key_lo, sizeof key_hi, &key_hi, sizeof p, &p,
                                 sizeof scale, &scale);
    if (rc != CL_SUCCESS)
        return enqueue_error(ctx, op, rc);
    return mpcl_launch_exact_1d(ctx, k, op, in->numel);
}

static mpcl_status check_p(mpcl_context *ctx, const char *op, float p)
{
    if (!(p >= 0.0f && p < 1.0f))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: p is %g, expected 0 <= p < 1", op,
                              (double)p);
    return MPCL_OK;
}

mpcl_status mpcl_dropout_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x, float p,
                                 uint64_t seed, uint64_t step)
{
    static const char *op = "mpcl_dropout_forward";
    mpcl_status s = check_pair(ctx, op, "x", x, "y", y);
    if (s == MPCL_OK && !y)
        s = check_like(ctx, op, "y", y, x);
    if (s == MPCL_OK)
        s = check_p(ctx, op, p);
    if (s != MPCL_OK)
        return s;
    return dropout_apply(ctx, op, y, x, p, seed, step);
}

mpcl_status mpcl_dropout_backward(mpcl_context *ctx, mpcl_tensor *dx, const mpcl_tensor *dy,
                                  float p, uint64_t seed, uint64_t step)
{
    static const char *op = "mpcl_dropout_backward";
    mpcl_status s = check_pair(ctx, op, "dy", dy, "dx", dx);
    if (s == MPCL_OK)
        s = check_p(ctx, op, p);
    if (s != MPCL_OK || !dx)
        return s;
    return dropout_apply(ctx, op, dx, dy, p, seed, step);
}

/* ------------------------------------------------------- add, scale */

mpcl_status mpcl_add(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *a, const mpcl_tensor *b)
{
    static const char *op = "mpcl_add";
    mpcl_status s = check_pair(ctx, op, "a", a, "b", b);
    if (s == MPCL_OK && !b)
        s = check_like(ctx, op, "b", b, a);
    if (s == MPCL_OK)
        s = check_like(ctx, op, "y", y, a);
    if (s != MPCL_OK)
        return s;

    cl_kernel k;
    s = mpcl_kernel_get(ctx, "elementwise", mpcl_ctx_variant(ctx), "add", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint n = (cl_uint)a->numel;
    cl_int rc = mpcl_kernel_args(k, 4, sizeof(cl_mem), &a->mem, /* a (N) */
                                 sizeof(cl_mem), &b->mem,       /* b (N) */
                                 sizeof(cl_mem), &y->mem,       /* y (N) */
                                 sizeof n, &n);
    if (rc != CL_SUCCESS)
        return enqueue_error(ctx, op, rc);
    return mpcl_launch_1d(ctx, k, op, n);
}

mpcl_status mpcl_copy_block(mpcl_context *ctx, mpcl_tensor *dst, size_t dst_ld, size_t dst_off,
                            const mpcl_tensor *src, size_t src_ld, size_t src_off, size_t rows,
                            size_t cols, int accumulate)
{
    static const char *op = "mpcl_copy_block";
    mpcl_status s = check_pair(ctx, op, "src", src, NULL, NULL);
    if (s == MPCL_OK)
        s = check_storage(ctx, op, "dst", dst);
    if (s == MPCL_OK)
        s = check_numel(ctx, op, "dst", dst);
    if (s != MPCL_OK)
        return s;
    /* the last row's block ends inside each tensor */
    int fits = rows > 0 && cols > 0 && src_off + cols <= src_ld && dst_off + cols <= dst_ld &&
               (rows - 1) * src_ld + src_off + cols <= src->numel &&
               (rows - 1) * dst_ld + dst_off + cols <= dst->numel && rows * cols <= UINT_MAX;
    if (!fits) {
        char a[128], b[128];
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: %zu rows of %zu elements (source rows of %zu from %zu, destination "
                              "rows of %zu from %zu) do not fit src %s and dst %s",
                              op, rows, cols, src_ld, src_off, dst_ld, dst_off,
                              mpcl_tensor_describe(src, a, sizeof a), mpcl_tensor_describe(dst, b, sizeof b));
    }
    cl_kernel k;
    s = mpcl_kernel_get(ctx, "elementwise", mpcl_ctx_variant(ctx), "copy_block", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint a[7] = {(cl_uint)src_ld, (cl_uint)src_off, (cl_uint)dst_ld, (cl_uint)dst_off,
                    (cl_uint)rows,   (cl_uint)cols,    (cl_uint)(accumulate != 0)};
    cl_int rc = mpcl_kernel_args(k, 9, sizeof(cl_mem), &src->mem, sizeof(cl_mem), &dst->mem, sizeof a[0],
                                 &a[0], sizeof a[1], &a[1], sizeof a[2], &a[2], sizeof a[3], &a[3],
                                 sizeof a[4], &a[4], sizeof a[5], &a[5], sizeof a[6], &a[6]);
    if (rc != CL_SUCCESS)
        return enqueue_error(ctx, op, rc);
    return mpcl_launch_1d(ctx, k, op, rows * cols);
}

mpcl_status mpcl_scale(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x, float alpha)
{
    static const char *op = "mpcl_scale";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    /* The storage dtype, or f32 in any mode. */
    int f32 = x && x->dtype == MPCL_F32;
    char d[128];
    if (x && x->ctx == ctx && !f32 && x->dtype != mpcl_storage_dtype(ctx))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: x is %s, expected (any shape) %s%s", op,
                              mpcl_tensor_describe(x, d, sizeof d),
                              mpcl_dtype_name(mpcl_storage_dtype(ctx)),
                              mpcl_storage_dtype(ctx) == MPCL_F32 ? "" : " or f32");
    mpcl_dtype want = f32 ? MPCL_F32 : mpcl_storage_dtype(ctx);
    s = mpcl_check_tensor(ctx, op, "x", x, want, x ? x->ndim : 1, NULL);
    if (s == MPCL_OK)
        s = check_like(ctx, op, "y", y, x);
    if (s == MPCL_OK)
        s = check_numel(ctx, op, "x", x);
    if (s != MPCL_OK)
        return s;

    cl_kernel k;
    if (f32 && mpcl_storage_dtype(ctx) != MPCL_F32)
        s = mpcl_kernel_get(ctx, "elementwise", mpcl_ctx_variant(ctx), "scale_f32", &k);
    else
        s = mpcl_kernel_get(ctx, "elementwise", mpcl_ctx_variant(ctx), "scale", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint n = (cl_uint)x->numel;
    cl_int rc = mpcl_kernel_args(k, 4, sizeof(cl_mem), &x->mem, /* x (N) */
                                 sizeof(cl_mem), &y->mem,       /* y (N) */
                                 sizeof n, &n, sizeof alpha, &alpha);
    if (rc != CL_SUCCESS)
        return enqueue_error(ctx, op, rc);
    return mpcl_launch_1d(ctx, k, op, n);
}
