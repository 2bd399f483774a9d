/* tensor.c — device tensors: allocation with per-tag memory accounting,
 * views, host <-> device transfer with conversion. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

const char *mpcl_dtype_name(mpcl_dtype d)
{
    switch (d) {
    case MPCL_F16: return "f16";
    case MPCL_F32: return "f32";
    case MPCL_I32: return "i32";
    case MPCL_U8: return "u8";
    case MPCL_BF16: return "bf16";
    }
    return "unknown";
}

size_t mpcl_dtype_size(mpcl_dtype d)
{
    switch (d) {
    case MPCL_F16: return 2;
    case MPCL_F32: return 4;
    case MPCL_I32: return 4;
    case MPCL_U8: return 1;
    case MPCL_BF16: return 2;
    }
    return 0;
}

const char *mpcl_mem_tag_name(mpcl_mem_tag t)
{
    static const char *names[MPCL_MEM_TAG_COUNT] = {"weights", "activations", "gradients",
                                                    "optimizer", "scratch"};
    return (unsigned)t < MPCL_MEM_TAG_COUNT ? names[t] : "unknown";
}

mpcl_dtype mpcl_storage_dtype(const mpcl_context *ctx)
{
    if (!ctx || ctx->precision == MPCL_PRECISION_FP32)
        return MPCL_F32;
    return ctx->precision == MPCL_PRECISION_BF16 ? MPCL_BF16 : MPCL_F16;
}

size_t mpcl_view_alignment(const mpcl_context *ctx, mpcl_dtype dtype)
{
    size_t align = (ctx && ctx->base_align_bytes) ? ctx->base_align_bytes : 128;
    size_t es = mpcl_dtype_size(dtype);
    return es ? (align + es - 1) / es : 1;
}

const char *mpcl_tensor_describe(const mpcl_tensor *t, char *buf, size_t len)
{
    if (!t) {
        mpcl_strfmt(buf, len, "(null)");
        return buf;
    }
    char dims[96] = "";
    size_t used = 0;
    for (int i = 0; i < t->ndim && used < sizeof dims; i++)
        used += (size_t)snprintf(dims + used, sizeof dims - used, "%s%zu", i ? ", " : "", t->shape[i]);
    mpcl_strfmt(buf, len, "(%s) %s", dims, mpcl_dtype_name(t->dtype));
    return buf;
}

static mpcl_status check_shape(mpcl_context *ctx, const char *what, int ndim, const size_t *shape,
                               size_t *numel)
{
    if (ndim < 1 || ndim > MPCL_MAX_DIMS || !shape)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: a tensor has 1 to %d dimensions, not %d",
                              what, MPCL_MAX_DIMS, ndim);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 0)
            return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: dimension %d is 0", what, i);
        if (n > SIZE_MAX / shape[i])
            return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: the element count overflows", what);
        n *= shape[i];
    }
    *numel = n;
    return MPCL_OK;
}

static void account(mpcl_context *ctx, mpcl_mem_tag tag, long long delta)
{
    mpcl_mem_stats *m = &ctx->mem;
    m->current[tag] = (uint64_t)((long long)m->current[tag] + delta);
    m->current_total = (uint64_t)((long long)m->current_total + delta);
    if (m->current[tag] > m->peak[tag])
        m->peak[tag] = m->current[tag];
    if (m->current_total > m->peak_total)
        m->peak_total = m->current_total;
}

/* The device memory mpcl may use: the device's global memory, or less
 * where MPCL_DEVICE_MEMORY says so (bytes, or with a K, M or G suffix: to
 * keep room for other work on the device, or to try a small device's
 * limits on a large one). */
static uint64_t memory_budget(const mpcl_context *ctx, int *capped)
{
    uint64_t have = ctx->caps.global_mem_bytes ? ctx->caps.global_mem_bytes : UINT64_MAX;
    const char *e = getenv("MPCL_DEVICE_MEMORY");
    *capped = 0;
    if (e && *e) {
        char *end = NULL;
        double v = strtod(e, &end);
        double mul = *end == 'K' || *end == 'k' ? 1024.0 : *end == 'M' || *end == 'm' ? 1048576.0
                   : *end == 'G' || *end == 'g' ? 1073741824.0 : 1.0;
        if (v > 0 && v * mul < (double)have) {
            have = (uint64_t)(v * mul);
            *capped = 1;
        }
    }
    return have;
}

/* Device memory for `bytes` more of `tag`: MPCL_ERR_DEVICE_MEMORY naming
 * the request, what the device has and what mpcl holds, when it does not
 * fit (one allocation over the device's largest, or the total over its
 * global memory), or when the driver refused it (rc). */
static mpcl_status no_room(mpcl_context *ctx, const char *what, size_t bytes, mpcl_mem_tag tag, cl_int rc)
{
    int capped;
    uint64_t have = memory_budget(ctx, &capped);
    const mpcl_mem_stats *m = &ctx->mem;
    char held[256];
    size_t used = 0;
    held[0] = '\0';
    for (int k = 0; k < MPCL_MEM_TAG_COUNT && used < sizeof held; k++)
        if (m->current[k])
            used += (size_t)snprintf(held + used, sizeof held - used, "%s%s %.1f MiB", used ? ", " : "",
                                     mpcl_mem_tag_name((mpcl_mem_tag)k), (double)m->current[k] / 1048576.0);
    return mpcl_set_error(ctx, MPCL_ERR_DEVICE_MEMORY,
                          "%s: out of device memory: %.1f MiB of %s asked%s%s; the device (%s) has %.1f MiB of "
                          "global memory%s, at most %.1f MiB in one allocation, and mpcl holds %.1f MiB (%s)%s",
                          what, (double)bytes / 1048576.0, mpcl_mem_tag_name(tag), rc != CL_SUCCESS ? ", refused: " : "",
                          rc != CL_SUCCESS ? mpcl_cl_error_name(rc) : "", ctx->desc.name, (double)have / 1048576.0,
                          capped ? " (capped by MPCL_DEVICE_MEMORY)" : "",
                          (double)ctx->caps.max_alloc_bytes / 1048576.0, (double)m->current_total / 1048576.0,
                          used ? held : "nothing yet",
                          tag == MPCL_MEM_ACTIVATIONS || tag == MPCL_MEM_SCRATCH ? ": a smaller batch needs less" : "");
}

static int fits(const mpcl_context *ctx, size_t bytes)
{
    int capped;
    return bytes <= ctx->caps.max_alloc_bytes && ctx->mem.current_total + bytes <= memory_budget(ctx, &capped);
}

static int allocation_failure(cl_int rc)
{
    return rc == CL_MEM_OBJECT_ALLOCATION_FAILURE || rc == CL_OUT_OF_RESOURCES || rc == CL_INVALID_BUFFER_SIZE;
}

mpcl_status mpcl_tensor_create(mpcl_context *ctx, mpcl_dtype dtype, int ndim, const size_t *shape,
                               mpcl_mem_tag tag, mpcl_tensor **out)
{
    if (!ctx || !out)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "mpcl_tensor_create: ctx and out must not be NULL");
    *out = NULL;
    if (!ctx->usable)
        return MPCL_ERR_STATE;
    if (mpcl_dtype_size(dtype) == 0 || (unsigned)tag >= MPCL_MEM_TAG_COUNT)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "mpcl_tensor_create: unknown dtype %d or tag %d",
                              (int)dtype, (int)tag);
    size_t numel;
    mpcl_status s = check_shape(ctx, "mpcl_tensor_create", ndim, shape, &numel);
    if (s != MPCL_OK)
        return s;
    if (numel > SIZE_MAX / mpcl_dtype_size(dtype))
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "mpcl_tensor_create: %zu elements of %s overflow a size",
                              numel, mpcl_dtype_name(dtype));
    size_t bytes = numel * mpcl_dtype_size(dtype);
    if (!fits(ctx, bytes))
        return no_room(ctx, "mpcl_tensor_create", bytes, tag, CL_SUCCESS);
    mpcl_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "mpcl_tensor_create: out of host memory");
    cl_int rc;
    t->mem = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, bytes, NULL, &rc);
    if (!t->mem || rc != CL_SUCCESS) {
        free(t);
        if (allocation_failure(rc))
            return no_room(ctx, "mpcl_tensor_create", bytes, tag, rc);
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL,
                              "mpcl_tensor_create: clCreateBuffer of %zu bytes (%s) failed: %s", bytes,
                              mpcl_mem_tag_name(tag), mpcl_cl_error_name(rc));
    }
    t->ctx = ctx;
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->numel = numel;
    t->tag = tag;
    t->accounted = bytes;
    account(ctx, tag, (long long)bytes);
    *out = t;
    return MPCL_OK;
}

mpcl_status mpcl_tensor_view(mpcl_tensor *base, size_t offset, int ndim, const size_t *shape,
                             mpcl_tensor **out)
{
    if (!base || !out)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = base->ctx;
    *out = NULL;
    size_t numel;
    mpcl_status s = check_shape(ctx, "mpcl_tensor_view", ndim, shape, &numel);
    if (s != MPCL_OK)
        return s;
    char bd[128];
    if (offset > base->numel || numel > base->numel - offset)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "mpcl_tensor_view: %zu elements from offset %zu do not fit in %s", numel,
                              offset, mpcl_tensor_describe(base, bd, sizeof bd));
    size_t align = mpcl_view_alignment(ctx, base->dtype);
    if (offset % align)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "mpcl_tensor_view: offset %zu is not a multiple of the device's "
                              "alignment (%zu elements of %s)",
                              offset, align, mpcl_dtype_name(base->dtype));
    mpcl_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "mpcl_tensor_view: out of host memory");
    size_t es = mpcl_dtype_size(base->dtype);
    if (offset == 0 && numel == base->numel) {
        clRetainMemObject(base->mem);
        t->mem = base->mem;
    } else {
        cl_buffer_region region = {offset * es, numel * es};
        cl_int rc;
        t->mem = clCreateSubBuffer(base->mem, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION,
                                   &region, &rc);
        if (!t->mem || rc != CL_SUCCESS) {
            free(t);
            return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "mpcl_tensor_view: clCreateSubBuffer failed: %s",
                                  mpcl_cl_error_name(rc));
        }
    }
    t->ctx = ctx;
    t->dtype = base->dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->numel = numel;
    t->tag = base->tag;
    *out = t;
    return MPCL_OK;
}

void mpcl_tensor_destroy(mpcl_tensor *t)
{
    if (!t)
        return;
    if (t->mem)
        clReleaseMemObject(t->mem);
    if (t->accounted)
        account(t->ctx, t->tag, -(long long)t->accounted);
    free(t);
}

size_t mpcl_tensor_numel(const mpcl_tensor *t) { return t ? t->numel : 0; }
int mpcl_tensor_ndim(const mpcl_tensor *t) { return t ? t->ndim : 0; }
size_t mpcl_tensor_dim(const mpcl_tensor *t, int i)
{
    return (t && i >= 0 && i < t->ndim) ? t->shape[i] : 0;
}
mpcl_dtype mpcl_tensor_dtype(const mpcl_tensor *t) { return t ? t->dtype : MPCL_F32; }

static mpcl_status check_count(const mpcl_tensor *t, const char *what, size_t n)
{
    char d[128];
    if (n != t->numel)
        return mpcl_set_error(t->ctx, MPCL_ERR_SHAPE, "%s: %zu host values for tensor %s of %zu elements",
                              what, n, mpcl_tensor_describe(t, d, sizeof d), t->numel);
    return MPCL_OK;
}

mpcl_status mpcl_tensor_write(mpcl_tensor *t, const void *src, size_t bytes)
{
    if (!t || (!src && bytes))
        return MPCL_ERR_ARGUMENT;
    char d[128];
    if (bytes != t->numel * mpcl_dtype_size(t->dtype))
        return mpcl_set_error(t->ctx, MPCL_ERR_SHAPE, "mpcl_tensor_write: %zu bytes for tensor %s (%zu bytes)",
                              bytes, mpcl_tensor_describe(t, d, sizeof d),
                              t->numel * mpcl_dtype_size(t->dtype));
    cl_int rc = clEnqueueWriteBuffer(t->ctx->queue, t->mem, CL_TRUE, 0, bytes, src, 0, NULL, NULL);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(t->ctx, MPCL_ERR_OPENCL, "mpcl_tensor_write to %s: %s",
                              mpcl_tensor_describe(t, d, sizeof d), mpcl_cl_error_name(rc));
    return MPCL_OK;
}

mpcl_status mpcl_tensor_read(const mpcl_tensor *t, void *dst, size_t bytes)
{
    if (!t || (!dst && bytes))
        return MPCL_ERR_ARGUMENT;
    char d[128];
    if (bytes != t->numel * mpcl_dtype_size(t->dtype))
        return mpcl_set_error(t->ctx, MPCL_ERR_SHAPE, "mpcl_tensor_read: %zu bytes from tensor %s (%zu bytes)",
                              bytes, mpcl_tensor_describe(t, d, sizeof d),
                              t->numel * mpcl_dtype_size(t->dtype));
    cl_int rc = clEnqueueReadBuffer(t->ctx->queue, t->mem, CL_TRUE, 0, bytes, dst, 0, NULL, NULL);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(t->ctx, MPCL_ERR_OPENCL, "mpcl_tensor_read from %s: %s",
                              mpcl_tensor_describe(t, d, sizeof d), mpcl_cl_error_name(rc));
    return MPCL_OK;
}

mpcl_status mpcl_tensor_upload(mpcl_tensor *t, const float *src, size_t n)
{
    if (!t || !src)
        return MPCL_ERR_ARGUMENT;
    mpcl_status s = check_count(t, "mpcl_tensor_upload", n);
    if (s != MPCL_OK)
        return s;
    if (t->dtype == MPCL_F32)
        return mpcl_tensor_write(t, src, n * 4);
    size_t es = mpcl_dtype_size(t->dtype);
    void *tmp = malloc(n * es);
    if (!tmp)
        return mpcl_set_error(t->ctx, MPCL_ERR_NOMEM, "mpcl_tensor_upload: out of host memory");
    for (size_t i = 0; i < n; i++) {
        float v = src[i];
        if (t->dtype == MPCL_F16) {
            ((uint16_t *)tmp)[i] = mpcl_half_from_float(v);
            continue;
        }
        if (t->dtype == MPCL_BF16) {
            ((uint16_t *)tmp)[i] = mpcl_bf16_from_float(v);
            continue;
        }
        double lo = t->dtype == MPCL_U8 ? 0 : -2147483648.0, hi = t->dtype == MPCL_U8 ? 255 : 2147483647.0;
        if (!(v >= lo && v <= hi) || v != floorf(v)) {
            free(tmp);
            return mpcl_set_error(t->ctx, MPCL_ERR_ARGUMENT,
                                  "mpcl_tensor_upload: element %zu (%g) is not a %s value", i, (double)v,
                                  mpcl_dtype_name(t->dtype));
        }
        if (t->dtype == MPCL_U8)
            ((uint8_t *)tmp)[i] = (uint8_t)v;
        else
            ((int32_t *)tmp)[i] = (int32_t)v;
    }
    s = mpcl_tensor_write(t, tmp, n * es);
    free(tmp);
    return s;
}

mpcl_status mpcl_tensor_download(const mpcl_tensor *t, float *dst, size_t n)
{
    if (!t || !dst)
        return MPCL_ERR_ARGUMENT;
    mpcl_status s = check_count(t, "mpcl_tensor_download", n);
    if (s != MPCL_OK)
        return s;
    if (t->dtype == MPCL_F32)
        return mpcl_tensor_read(t, dst, n * 4);
    size_t es = mpcl_dtype_size(t->dtype);
    void *tmp = malloc(n * es);
    if (!tmp)
        return mpcl_set_error(t->ctx, MPCL_ERR_NOMEM, "mpcl_tensor_download: out of host memory");
    s = mpcl_tensor_read(t, tmp, n * es);
    for (size_t i = 0; s == MPCL_OK && i < n; i++) {
        if (t->dtype == MPCL_F16)
            dst[i] = mpcl_half_to_float(((uint16_t *)tmp)[i]);
        else if (t->dtype == MPCL_BF16)
            dst[i] = mpcl_bf16_to_float(((uint16_t *)tmp)[i]);
        else if (t->dtype == MPCL_U8)
            dst[i] = ((uint8_t *)tmp)[i];
        else
            dst[i] = (float)((int32_t *)tmp)[i];
    }
    free(tmp);
    return s;
}

mpcl_status mpcl_tensor_fill(mpcl_tensor *t, float value)
{
    if (!t)
        return MPCL_ERR_ARGUMENT;
    unsigned char pattern[4];
    size_t es = mpcl_dtype_size(t->dtype);
    if (t->dtype == MPCL_F16) {
        uint16_t h = mpcl_half_from_float(value);
        memcpy(pattern, &h, 2);
    } else if (t->dtype == MPCL_BF16) {
        uint16_t h = mpcl_bf16_from_float(value);
        memcpy(pattern, &h, 2);
    } else if (t->dtype == MPCL_F32) {
        memcpy(pattern, &value, 4);
    } else if (t->dtype == MPCL_I32) {
        int32_t v = (int32_t)value;
        memcpy(pattern, &v, 4);
    } else {
        pattern[0] = (uint8_t)value;
    }
    cl_int rc = clEnqueueFillBuffer(t->ctx->queue, t->mem, pattern, es, 0, t->numel * es, 0, NULL, NULL);
    char d[128];
    if (rc != CL_SUCCESS)
        return mpcl_set_error(t->ctx, MPCL_ERR_OPENCL, "mpcl_tensor_fill of %s: %s",
                              mpcl_tensor_describe(t, d, sizeof d), mpcl_cl_error_name(rc));
    return MPCL_OK;
}

void mpcl_memory_stats(const mpcl_context *ctx, mpcl_mem_stats *out)
{
    if (!out)
        return;
    if (!ctx) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = ctx->mem;
}

mpcl_status mpcl_scratch(mpcl_context *ctx, int slot, size_t bytes, cl_mem *out)
{
    if (slot < 0 || slot >= MPCL_SCRATCH_SLOTS)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "scratch slot %d out of range", slot);
    if (bytes == 0)
        bytes = 4;
    if (ctx->scratch_bytes[slot] < bytes) {
        size_t old = ctx->scratch_bytes[slot]; /* released before the new one */
        if (bytes > ctx->caps.max_alloc_bytes || !fits(ctx, bytes - old))
            return no_room(ctx, "a scratch buffer", bytes, MPCL_MEM_SCRATCH, CL_SUCCESS);
        if (ctx->scratch[slot]) {
            clReleaseMemObject(ctx->scratch[slot]); /* in-order queue: later use is safe */
            account(ctx, MPCL_MEM_SCRATCH, -(long long)ctx->scratch_bytes[slot]);
            ctx->scratch[slot] = NULL;
            ctx->scratch_bytes[slot] = 0;
        }
        cl_int rc;
        cl_mem m = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, bytes, NULL, &rc);
        if (!m || rc != CL_SUCCESS)
            return allocation_failure(rc) ? no_room(ctx, "a scratch buffer", bytes, MPCL_MEM_SCRATCH, rc)
                                          : mpcl_set_error(ctx, MPCL_ERR_OPENCL,
                                                           "scratch buffer of %zu bytes: clCreateBuffer: %s", bytes,
                                                           mpcl_cl_error_name(rc));
        ctx->scratch[slot] = m;
        ctx->scratch_bytes[slot] = bytes;
        account(ctx, MPCL_MEM_SCRATCH, (long long)bytes);
    }
    *out = ctx->scratch[slot];
    return MPCL_OK;
}
