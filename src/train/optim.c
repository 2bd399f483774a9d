/* optim.c — SGD (momentum, Nesterov, weight decay), Adam and AdamW on FP32
 * master weights, with the working copy refreshed in the same kernel; the
 * gradient norm for clipping. Kernels: cl/optim.cl. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void mpcl_optimizer_options_init(mpcl_optimizer_options *o, mpcl_optimizer kind)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->lr = kind == MPCL_OPT_SGD ? 0.01f : 1e-3f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = kind == MPCL_OPT_ADAMW ? 0.01f : 0.0f;
}

const char *mpcl_optimizer_name(mpcl_optimizer k)
{
    switch (k) {
    case MPCL_OPT_SGD: return "sgd";
    case MPCL_OPT_ADAM: return "adam";
    case MPCL_OPT_ADAMW: return "adamw";
    }
    return "unknown";
}

mpcl_status mpcl_optimizer_parse(const char *name, mpcl_optimizer *out)
{
    static const mpcl_optimizer all[] = {MPCL_OPT_SGD, MPCL_OPT_ADAM, MPCL_OPT_ADAMW};
    if (!name || !out)
        return MPCL_ERR_ARGUMENT;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, mpcl_optimizer_name(all[i])) == 0) {
            *out = all[i];
            return MPCL_OK;
        }
    return MPCL_ERR_ARGUMENT;
}

static const char OP[] = "mpcl_optimizer_step";

mpcl_status mpcl_optimizer_step(mpcl_context *ctx, const mpcl_optimizer_options *o, float lr,
                                uint64_t t, mpcl_tensor *master, mpcl_tensor *working,
                                const mpcl_tensor *grad, mpcl_tensor *state1, mpcl_tensor *state2,
                                float grad_mul)
{
    mpcl_status s = mpcl_check_ctx(ctx, OP);
    if (s != MPCL_OK)
        return s;
    if (!o || t == 0 || (unsigned)o->kind > MPCL_OPT_ADAMW)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: options NULL, unknown optimizer, or t == 0", OP);
    if (!master)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: master is NULL", OP);
    size_t p = master->numel;
    mpcl_dtype sd = mpcl_storage_dtype(ctx);
    mpcl_tensor *work = working ? working : master;
    int refresh = working != NULL && working != master;
    if ((s = mpcl_check_tensor(ctx, OP, "master", master, MPCL_F32, master->ndim, NULL)) != MPCL_OK)
        return s;
    if (!working && sd != MPCL_F32)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: working is NULL, but the storage dtype is %s: a master in f32 cannot "
                              "be the working copy",
                              OP, mpcl_dtype_name(sd));
    if (!grad || grad->numel != p || grad->dtype != sd || work->numel != p || work->dtype != (refresh ? sd : MPCL_F32)) {
        char a[128], b[128], c[128];
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: master %s, working %s and grad %s must have the "
                              "same element count (grad and working in %s)", OP,
                              mpcl_tensor_describe(master, a, sizeof a), mpcl_tensor_describe(work, b, sizeof b),
                              mpcl_tensor_describe(grad, c, sizeof c), mpcl_dtype_name(sd));
    }
    int needs1 = o->kind != MPCL_OPT_SGD || o->momentum != 0.0f, needs2 = o->kind != MPCL_OPT_SGD;
    mpcl_tensor *states[2] = {state1, state2};
    for (int i = 0; i < 2; i++) {
        if (!(i == 0 ? needs1 : needs2))
            continue;
        if (!states[i] || states[i]->numel != p || states[i]->dtype != MPCL_F32) {
            char a[128];
            return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: state%d is %s, expected %zu elements of f32 for %s",
                                  OP, i + 1, mpcl_tensor_describe(states[i], a, sizeof a), p,
                                  mpcl_optimizer_name(o->kind));
        }
    }
    if ((s = mpcl_check_u32(ctx, OP, "the parameters", p)) != MPCL_OK)
        return s;
    cl_kernel k;
    cl_uint n = (cl_uint)p;
    cl_int refresh_i = refresh;
    cl_int rc;
    if (o->kind == MPCL_OPT_SGD) {
        if ((s = mpcl_kernel_get(ctx, "optim", mpcl_ctx_variant(ctx), "sgd_step", &k)) != MPCL_OK)
            return s;
        cl_mem buf = state1 ? state1->mem : master->mem; /* unused without momentum */
        cl_int nesterov = o->nesterov, first = t == 1;
        rc = mpcl_kernel_args(k, 12, sizeof(cl_mem), &master->mem, sizeof(cl_mem), &work->mem,
                              sizeof(cl_mem), &grad->mem, sizeof(cl_mem), &buf, sizeof n, &n,
                              sizeof(float), &lr, sizeof(float), &o->momentum, sizeof(float),
                              &o->weight_decay, sizeof nesterov, &nesterov, sizeof first, &first,
                              sizeof(float), &grad_mul, sizeof refresh_i, &refresh_i);
    } else {
        if ((s = mpcl_kernel_get(ctx, "optim", mpcl_ctx_variant(ctx), "adam_step", &k)) != MPCL_OK)
            return s;
        cl_int decoupled = o->kind == MPCL_OPT_ADAMW;
        float bc1 = (float)(1.0 - pow((double)o->beta1, (double)t));
        float bc2 = (float)(1.0 - pow((double)o->beta2, (double)t));
        rc = mpcl_kernel_args(k, 16, sizeof(cl_mem), &master->mem, sizeof(cl_mem), &work->mem,
                              sizeof(cl_mem), &grad->mem, sizeof(cl_mem), &state1->mem,
                              sizeof(cl_mem), &state2->mem, sizeof n, &n, sizeof(float), &lr,
                              sizeof(float), &o->beta1, sizeof(float), &o->beta2, sizeof(float),
                              &o->eps, sizeof(float), &o->weight_decay, sizeof decoupled, &decoupled,
                              sizeof(float), &bc1, sizeof(float), &bc2, sizeof(float), &grad_mul,
                              sizeof refresh_i, &refresh_i);
    }
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clSetKernelArg: %s", OP, mpcl_cl_error_name(rc));
    return mpcl_launch_1d(ctx, k, OP, p);
}

mpcl_status mpcl_refresh_working(mpcl_context *ctx, mpcl_tensor *working, const mpcl_tensor *master)
{
    const char *op = "mpcl_refresh_working";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    if ((s = mpcl_check_tensor(ctx, op, "master", master, MPCL_F32, master ? master->ndim : 1, NULL)) != MPCL_OK)
        return s;
    if (!working || working->numel != master->numel || working->dtype != mpcl_storage_dtype(ctx)) {
        char a[128], b[128];
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: working %s does not match master %s in the storage dtype %s",
                              op, mpcl_tensor_describe(working, a, sizeof a),
                              mpcl_tensor_describe(master, b, sizeof b), mpcl_dtype_name(mpcl_storage_dtype(ctx)));
    }
    cl_kernel k;
    if ((s = mpcl_check_u32(ctx, op, "master", master->numel)) != MPCL_OK ||
        (s = mpcl_kernel_get(ctx, "optim", mpcl_ctx_variant(ctx), "refresh_working", &k)) != MPCL_OK)
        return s;
    cl_uint n = (cl_uint)master->numel;
    cl_int rc = mpcl_kernel_args(k, 3, sizeof(cl_mem), &master->mem, sizeof(cl_mem), &working->mem, sizeof n, &n);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clSetKernelArg: %s", op, mpcl_cl_error_name(rc));
    return mpcl_launch_1d(ctx, k, op, master->numel);
}

#define NORM_GROUPS 64
#define NORM_WG 64 /* cl/optim.cl SUMSQ_WG: the most; a power of two up to it is used */

mpcl_status mpcl_grad_norm(mpcl_context *ctx, const mpcl_tensor *grad, double *norm)
{
    const char *op = "mpcl_grad_norm";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    if (!norm || (s = mpcl_check_tensor(ctx, op, "grad", grad, mpcl_storage_dtype(ctx), grad ? grad->ndim : 1, NULL)) != MPCL_OK)
        return s ? s : MPCL_ERR_ARGUMENT;
    cl_kernel k;
    if ((s = mpcl_check_u32(ctx, op, "grad", grad->numel)) != MPCL_OK ||
        (s = mpcl_kernel_get(ctx, "optim", mpcl_ctx_variant(ctx), "sumsq_partial", &k)) != MPCL_OK)
        return s;
    cl_int rc;
    cl_mem partial = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, NORM_GROUPS * sizeof(float), NULL, &rc);
    if (!partial || rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clCreateBuffer: %s", op, mpcl_cl_error_name(rc));
    cl_uint n = (cl_uint)grad->numel;
    float part[NORM_GROUPS];
    const size_t lim = mpcl_wg_limit(ctx, k);
    size_t local = mpcl_pow2_floor(lim < NORM_WG ? lim : NORM_WG), global = NORM_GROUPS * local;
    rc = mpcl_kernel_args(k, 3, sizeof(cl_mem), &grad->mem, sizeof(cl_mem), &partial, sizeof n, &n);
    if (rc != CL_SUCCESS) {
        clReleaseMemObject(partial);
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clSetKernelArg: %s", op, mpcl_cl_error_name(rc));
    }
    s = mpcl_launch(ctx, k, op, 1, &global, &local);
    if (s == MPCL_OK)
        rc = clEnqueueReadBuffer(ctx->queue, partial, CL_TRUE, 0, sizeof part, part, 0, NULL, NULL);
    clReleaseMemObject(partial);
    if (s != MPCL_OK)
        return s;
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clEnqueueReadBuffer: %s", op, mpcl_cl_error_name(rc));
    double acc = 0;
    for (int i = 0; i < NORM_GROUPS; i++)
        acc += part[i];
    *norm = sqrt(acc);
    return MPCL_OK;
}
