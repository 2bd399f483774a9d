/* check.c — argument checks at the op boundary, with messages that show
 * both shapes. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

mpcl_status mpcl_check_ctx(mpcl_context *ctx, const char *op)
{
    (void)op;
    if (!ctx)
        return MPCL_ERR_ARGUMENT;
    if (!ctx->usable)
        return MPCL_ERR_STATE;
    return MPCL_OK;
}

static void describe_expected(mpcl_dtype dtype, int ndim, const size_t *dims, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    used += (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < ndim && used < len; i++) {
        if (dims && dims[i])
            used += (size_t)snprintf(buf + used, len - used, "%s%zu", i ? ", " : "", dims[i]);
        else
            used += (size_t)snprintf(buf + used, len - used, "%s*", i ? ", " : "");
    }
    if (used < len)
        snprintf(buf + used, len - used, ") %s", mpcl_dtype_name(dtype));
}

mpcl_status mpcl_check_tensor(mpcl_context *ctx, const char *op, const char *name,
                              const mpcl_tensor *t, mpcl_dtype dtype, int ndim, const size_t *dims)
{
    char want[128], got[128];
    describe_expected(dtype, ndim, dims, want, sizeof want);
    if (!t)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %s is NULL, expected %s", op, name, want);
    if (t->ctx != ctx)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %s belongs to another context", op, name);
    int ok = t->dtype == dtype && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        if (dims && dims[i] && dims[i] != t->shape[i])
            ok = 0;
    if (!ok) {
        mpcl_tensor_describe(t, got, sizeof got);
        return mpcl_set_error(ctx, t->dtype != dtype ? MPCL_ERR_ARGUMENT : MPCL_ERR_SHAPE,
                              "%s: %s is %s, expected %s", op, name, got, want);
    }
    return MPCL_OK;
}

mpcl_status mpcl_check_same(mpcl_context *ctx, const char *op, const char *name_a,
                            const mpcl_tensor *a, const char *name_b, const mpcl_tensor *b)
{
    char da[128], db[128];
    if (!a || !b)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %s is NULL", op, !a ? name_a : name_b);
    if (a->ctx != ctx || b->ctx != ctx)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %s belongs to another context", op,
                              a->ctx != ctx ? name_a : name_b);
    if (a->numel != b->numel || a->dtype != b->dtype)
        return mpcl_set_error(ctx, a->dtype != b->dtype ? MPCL_ERR_ARGUMENT : MPCL_ERR_SHAPE,
                              "%s: %s is %s but %s is %s", op, name_a,
                              mpcl_tensor_describe(a, da, sizeof da), name_b,
                              mpcl_tensor_describe(b, db, sizeof db));
    return MPCL_OK;
}

mpcl_status mpcl_check_u32(mpcl_context *ctx, const char *op, const char *name, size_t n)
{
    if (n <= UINT32_MAX)
        return MPCL_OK;
    return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %s has %zu elements; the kernels index "
                          "at most %u (32-bit)", op, name, n, (unsigned)UINT32_MAX);
}
