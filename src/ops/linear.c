/* ops/linear.c — the fully connected layer through the GEMM router.
 *
 *   forward   y (B, O) = x (B, I) w (O, I)^T + b (O)
 *   backward  dx (B, I) = dy (B, O) w (O, I)          (assigned)
 *             dw (O, I) += dy (B, O)^T x (B, I)       (accumulated, beta = 1)
 *             db (O) += sum over B of dy (B, O)       (accumulated, in float)
 *
 * Letters: B batch, I input features, O output features. Bias kernels live
 * in cl/convert.cl. */
#include "internal.h"

/* convert.cl bias_add_rows (grad = 0) or bias_grad_rows (grad = 1). */
static mpcl_status bias_kernel(mpcl_context *ctx, const char *op, int grad, cl_mem rows_mem,
                               cl_mem vec_mem, size_t bsz, size_t o)
{
    cl_kernel k;
    mpcl_status s;
    if (grad)
        s = mpcl_kernel_get(ctx, "convert", mpcl_ctx_variant(ctx), "bias_grad_rows", &k);
    else
        s = mpcl_kernel_get(ctx, "convert", mpcl_ctx_variant(ctx), "bias_add_rows", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint rows = (cl_uint)bsz, cols = (cl_uint)o;
    cl_mem first = grad ? vec_mem : rows_mem, second = grad ? rows_mem : vec_mem;
    cl_int rc = mpcl_kernel_args(k, 4, sizeof first, &first, sizeof second, &second, sizeof rows,
                                 &rows, sizeof cols, &cols);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: %s arguments: %s", op,
                              grad ? "bias_grad_rows" : "bias_add_rows", mpcl_cl_error_name(rc));
    return grad ? mpcl_launch_1d(ctx, k, op, o) : mpcl_launch_rows(ctx, k, op, o, bsz, 1);
}

static mpcl_status check_sizes(mpcl_context *ctx, const char *op, size_t bsz, size_t i, size_t o)
{
    if (bsz > UINT32_MAX || o > UINT32_MAX || bsz * o > UINT32_MAX || i > UINT32_MAX)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: B=%zu, I=%zu, O=%zu too large", op, bsz, i, o);
    return MPCL_OK;
}

mpcl_status mpcl_linear_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                const mpcl_tensor *w, const mpcl_tensor *b)
{
    static const char op[] = "mpcl_linear_forward";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    mpcl_dtype dt = mpcl_storage_dtype(ctx);
    if ((s = mpcl_check_tensor(ctx, op, "x", x, dt, 2, NULL)) != MPCL_OK)
        return s;
    size_t bsz = x->shape[0], in = x->shape[1]; /* x (B, I) */
    const size_t w_dims[2] = {MPCL_ANY, in};     /* w (O, I) */
    if ((s = mpcl_check_tensor(ctx, op, "w", w, dt, 2, w_dims)) != MPCL_OK)
        return s;
    size_t out = w->shape[0];
    const size_t y_dims[2] = {bsz, out}; /* y (B, O) */
    const size_t b_dims[1] = {out};      /* b (O) */
    if ((s = mpcl_check_tensor(ctx, op, "y", y, dt, 2, y_dims)) != MPCL_OK)
        return s;
    if (b && (s = mpcl_check_tensor(ctx, op, "b", b, dt, 1, b_dims)) != MPCL_OK)
        return s;
    if ((s = check_sizes(ctx, op, bsz, in, out)) != MPCL_OK)
        return s;

    /* y (B, O) = x (B, I) w (O, I)^T */
    s = mpcl_gemm_raw(ctx, op, dt, 0, 1, bsz, out, in, 1.0f, x->mem, 0, in, w->mem, 0, in, 0.0f,
                      y->mem, 0, out);
    if (s == MPCL_OK && b)
        s = bias_kernel(ctx, op, 0, y->mem, b->mem, bsz, out);
    return s;
}

mpcl_status mpcl_linear_backward(mpcl_context *ctx, mpcl_tensor *dx, mpcl_tensor *dw,
                                 mpcl_tensor *db, const mpcl_tensor *dy, const mpcl_tensor *x,
                                 const mpcl_tensor *w)
{
    static const char op[] = "mpcl_linear_backward";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    mpcl_dtype dt = mpcl_storage_dtype(ctx);
    if ((s = mpcl_check_tensor(ctx, op, "x", x, dt, 2, NULL)) != MPCL_OK)
        return s;
    size_t bsz = x->shape[0], in = x->shape[1]; /* x (B, I) */
    const size_t w_dims[2] = {MPCL_ANY, in};     /* w (O, I) */
    if ((s = mpcl_check_tensor(ctx, op, "w", w, dt, 2, w_dims)) != MPCL_OK)
        return s;
    size_t out = w->shape[0];
    const size_t dy_dims[2] = {bsz, out}; /* dy (B, O) */
    const size_t dx_dims[2] = {bsz, in};  /* dx (B, I) */
    const size_t dw_dims[2] = {out, in};  /* dw (O, I) */
    const size_t db_dims[1] = {out};      /* db (O) */
    if ((s = mpcl_check_tensor(ctx, op, "dy", dy, dt, 2, dy_dims)) != MPCL_OK)
        return s;
    if (dx && (s = mpcl_check_tensor(ctx, op, "dx", dx, dt, 2, dx_dims)) != MPCL_OK)
        return s;
    if (dw && (s = mpcl_check_tensor(ctx, op, "dw", dw, dt, 2, dw_dims)) != MPCL_OK)
        return s;
    if (db && (s = mpcl_check_tensor(ctx, op, "db", db, dt, 1, db_dims)) != MPCL_OK)
        return s;
    if ((s = check_sizes(ctx, op, bsz, in, out)) != MPCL_OK)
        return s;

    /* dx (B, I) = dy (B, O) w (O, I) */
    if (dx)
        s = mpcl_gemm_raw(ctx, op, dt, 0, 0, bsz, in, out, 1.0f, dy->mem, 0, out, w->mem, 0, in, 0.0f,
                          dx->mem, 0, in);
    /* dw (O, I) += dy (B, O)^T x (B, I) */
    if (s == MPCL_OK && dw)
        s = mpcl_gemm_raw(ctx, op, dt, 1, 0, out, in, bsz, 1.0f, dy->mem, 0, out, x->mem, 0, in, 1.0f,
                          dw->mem, 0, in);
    /* db (O) += column sums of dy (B, O) */
    if (s == MPCL_OK && db)
        s = bias_kernel(ctx, op, 1, dy->mem, db->mem, bsz, out);
    return s;
}
