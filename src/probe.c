/* probe.c — device facts and the functional checks the backend choice rests on.
 *
 * The probe verifies, it does not trust flags:
 *   (a) fp16 storage: vstore_half_rte / vload_half against the host conversion;
 *   (b) fp16 arithmetic: half + - * / fma, comparisons, casts and a half
 *       dot-product loop against exact host emulation, bit for bit;
 *   (c) CLBlast Sgemm / Hgemm on a small problem against a double reference. */
#include "internal.h"

#include <clblast_c.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CL_DEVICE_HALF_FP_CONFIG
#define CL_DEVICE_HALF_FP_CONFIG 0x1033
#endif

/* ------------------------------------------------------------------ facts */

static int has_extension(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    return 0;
}

static uint64_t dev_u64(cl_device_id d, cl_device_info what)
{
    cl_ulong v = 0;
    return clGetDeviceInfo(d, what, sizeof v, &v, NULL) == CL_SUCCESS ? v : 0;
}

static unsigned dev_uint(cl_device_id d, cl_device_info what)
{
    cl_uint v = 0;
    return clGetDeviceInfo(d, what, sizeof v, &v, NULL) == CL_SUCCESS ? v : 0;
}

void mpcl_probe_facts(mpcl_context *ctx, mpcl_caps *c)
{
    cl_device_id d = ctx->device;
    memset(c, 0, sizeof *c);
    mpcl_strfmt(c->platform, sizeof c->platform, "%s", ctx->desc.platform);
    clGetPlatformInfo(ctx->platform, CL_PLATFORM_VENDOR, sizeof c->platform_vendor - 1,
                      c->platform_vendor, NULL);
    clGetPlatformInfo(ctx->platform, CL_PLATFORM_VERSION, sizeof c->platform_version - 1,
                      c->platform_version, NULL);
    mpcl_strfmt(c->device, sizeof c->device, "%s", ctx->desc.name);
    mpcl_strfmt(c->vendor, sizeof c->vendor, "%s", ctx->desc.vendor);
    mpcl_device_string(d, CL_DRIVER_VERSION, c->driver_version, sizeof c->driver_version);
    mpcl_device_string(d, CL_DEVICE_VERSION, c->device_version, sizeof c->device_version);
    mpcl_device_string(d, CL_DEVICE_OPENCL_C_VERSION, c->c_version, sizeof c->c_version);
    c->type = ctx->desc.type;
    c->compute_units = dev_uint(d, CL_DEVICE_MAX_COMPUTE_UNITS);
    c->clock_mhz = dev_uint(d, CL_DEVICE_MAX_CLOCK_FREQUENCY);
    c->global_mem_bytes = dev_u64(d, CL_DEVICE_GLOBAL_MEM_SIZE);
    c->local_mem_bytes = dev_u64(d, CL_DEVICE_LOCAL_MEM_SIZE);
    c->constant_mem_bytes = dev_u64(d, CL_DEVICE_MAX_CONSTANT_BUFFER_SIZE);
    c->max_alloc_bytes = dev_u64(d, CL_DEVICE_MAX_MEM_ALLOC_SIZE);
    size_t wg = 0;
    clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
    c->max_work_group_size = wg;
    c->preferred_half_width = dev_uint(d, CL_DEVICE_PREFERRED_VECTOR_WIDTH_HALF);
    c->native_half_width = dev_uint(d, CL_DEVICE_NATIVE_VECTOR_WIDTH_HALF);
    c->half_fp_config = dev_u64(d, CL_DEVICE_HALF_FP_CONFIG); /* cl_device_fp_config is a cl_ulong */

    size_t n = 0;
    char *ext = NULL;
    if (clGetDeviceInfo(d, CL_DEVICE_EXTENSIONS, 0, NULL, &n) == CL_SUCCESS && n > 0 &&
        (ext = calloc(n + 1, 1)) != NULL &&
        clGetDeviceInfo(d, CL_DEVICE_EXTENSIONS, n, ext, NULL) == CL_SUCCESS) {
        c->ext_fp16 = has_extension(ext, "cl_khr_fp16");
        c->ext_fp64 = has_extension(ext, "cl_khr_fp64");
        c->ext_subgroups = has_extension(ext, "cl_khr_subgroups") ||
                           has_extension(ext, "cl_intel_subgroups");
        c->ext_int64_atomics = has_extension(ext, "cl_khr_int64_base_atomics");
        c->ext_bf16_intel = has_extension(ext, "cl_intel_bfloat16") ||
                            has_extension(ext, "cl_intel_bfloat16_conversions");
    }
    free(ext);
}

/* ----------------------------------------------------- small OpenCL helpers */

#define BUFSET_MAX 16

typedef struct {
    mpcl_context *ctx;
    cl_mem mem[BUFSET_MAX];
    int count;
    cl_int rc;         /* first failure */
    const char *where; /* the call that failed */
} bufset;

static cl_mem buf_new(bufset *b, size_t bytes, const void *init)
{
    if (b->rc != CL_SUCCESS)
        return NULL;
    if (b->count == BUFSET_MAX) {
        b->rc = CL_OUT_OF_HOST_MEMORY;
        b->where = "the probe's buffer table (too many buffers)";
        return NULL;
    }
    cl_int rc;
    cl_mem m = clCreateBuffer(b->ctx->cl, CL_MEM_READ_WRITE | (init ? CL_MEM_COPY_HOST_PTR : 0),
                              bytes, (void *)init, &rc);
    if (rc != CL_SUCCESS) {
        b->rc = rc;
        b->where = "clCreateBuffer";
        return NULL;
    }
    b->mem[b->count++] = m;
    return m;
}

static void bufs_release(bufset *b)
{
    for (int i = 0; i < b->count; i++)
        clReleaseMemObject(b->mem[i]);
    b->count = 0;
}

/* Sets args (pairs of size, pointer), runs a 1-D range of n items, waits. */
static cl_int run_1d(mpcl_context *ctx, cl_kernel k, size_t n, int nargs, ...)
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
    size_t slot;
    if (rc == CL_SUCCESS)
        rc = clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &n, mpcl_cap_local_1d(ctx, k, n, &slot),
                                    0, NULL, NULL);
    if (rc == CL_SUCCESS)
        rc = clFinish(ctx->queue);
    return rc;
}

static cl_int read_back(mpcl_context *ctx, cl_mem m, size_t bytes, void *dst)
{
    return clEnqueueReadBuffer(ctx->queue, m, CL_TRUE, 0, bytes, dst, 0, NULL, NULL);
}

/* Deterministic generator for test vectors (the probe gives the same verdict
 * every run). */
static uint32_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(*s >> 33);
}

static int is_nan_half(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu); }

static int same_half(uint16_t a, uint16_t b)
{
    return a == b || (is_nan_half(a) && is_nan_half(b));
}

static int same_float(float a, float b)
{
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y || (isnan(a) && isnan(b));
}

/* ------------------------------------------------------ (a) fp16 storage */

/* Floats that exercise every rounding rule of float -> half. */
static size_t storage_edge_cases(float *out)
{
    const float v[] = {
        0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.996f, 65520.0f, 65536.0f, 1e10f, -1e10f,
        1.0f + 0x1p-11f,             /* tie, rounds to even (down) */
        1.0f + 0x1p-11f + 0x1p-23f,  /* just above the tie: up */
        1.0f + 3 * 0x1p-11f,         /* tie, rounds to even (up) */
        0x1p-14f,                    /* smallest normal */
        0x1p-14f - 0x1p-25f,         /* rounds up into the normals */
        0x1p-24f,                    /* smallest subnormal */
        0x1p-25f,                    /* tie between 0 and 2^-24: 0 */
        0x1p-25f + 0x1p-40f,         /* just above: 2^-24 */
        3 * 0x1p-25f,                /* tie between 1 and 2 subnormal ulps: 2 */
        0x1p-26f, -0x1p-25f, 6.1e-5f, 5.96e-8f, 2048.0f, 2049.0f, 4097.0f, 0.1f, 1.0f / 3.0f,
        INFINITY, -INFINITY, NAN, 0x1p-149f, 0x1p-126f, 3.4e38f};
    memcpy(out, v, sizeof v);
    return sizeof v / sizeof v[0];
}

#define STORAGE_RANDOM 4096

/* A kernel that cannot be had for reasons that say nothing about the device
 * (a missing source file, no memory) fails the probe instead of giving a
 * verdict. */
static int fatal(mpcl_status s) { return s == MPCL_ERR_IO || s == MPCL_ERR_NOMEM || s == MPCL_ERR_ARGUMENT; }

static mpcl_status check_storage(mpcl_context *ctx, mpcl_caps *caps)
{
    mpcl_status ret = MPCL_OK;
    mpcl_check *chk = &caps->fp16_storage;
    size_t n_edge_max = 64, n = 65536 + n_edge_max + STORAGE_RANDOM;
    float *in = malloc(n * sizeof *in), *back = malloc(65536 * sizeof *back);
    uint16_t *h = malloc(n * sizeof *h), *all = malloc(65536 * sizeof *all);
    cl_kernel ks = NULL, kl = NULL;
    bufset b = {.ctx = ctx, .rc = CL_SUCCESS};
    chk->passed = 0;
    if (!in || !back || !h || !all) {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "out of host memory");
        goto done;
    }
    /* every half as a float (exact), the edge cases, then random floats */
    for (uint32_t i = 0; i < 65536; i++) {
        all[i] = (uint16_t)i;
        in[i] = mpcl_half_to_float((uint16_t)i);
    }
    size_t m = 65536 + storage_edge_cases(in + 65536);
    uint64_t seed = 0x5eed;
    for (size_t i = 0; i < STORAGE_RANDOM; i++) {
        uint32_t bits = lcg(&seed);
        /* exponents around half's range, both signs */
        bits = (bits & 0x807fffffu) | ((uint32_t)(127 - 27 + (lcg(&seed) % 46)) << 23);
        memcpy(&in[m++], &bits, 4);
    }
    n = m;
    mpcl_status ks_st = mpcl_kernel_create(ctx, "probe", MPCL_VARIANT_FP32, "store_half_rte", &ks);
    if (ks_st == MPCL_OK)
        ks_st = mpcl_kernel_create(ctx, "probe", MPCL_VARIANT_FP32, "load_half", &kl);
    if (ks_st != MPCL_OK) {
        if (fatal(ks_st))
            ret = ks_st;
        mpcl_strfmt(chk->reason, sizeof chk->reason, "the storage kernels do not build: %.400s",
                    ctx->err);
        goto done;
    }
    cl_mem din = buf_new(&b, n * 4, in), dh = buf_new(&b, n * 2, NULL);
    cl_mem dall = buf_new(&b, 65536 * 2, all), dback = buf_new(&b, 65536 * 4, NULL);
    if (b.rc != CL_SUCCESS) {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "%s failed: %s", b.where, mpcl_cl_error_name(b.rc));
        goto done;
    }
    cl_uint un = (cl_uint)n, u64k = 65536;
    cl_int rc = run_1d(ctx, ks, n, 3, sizeof din, &din, sizeof dh, &dh, sizeof un, &un);
    if (rc == CL_SUCCESS)
        rc = run_1d(ctx, kl, 65536, 3, sizeof dall, &dall, sizeof dback, &dback, sizeof u64k, &u64k);
    if (rc == CL_SUCCESS)
        rc = read_back(ctx, dh, n * 2, h);
    if (rc == CL_SUCCESS)
        rc = read_back(ctx, dback, 65536 * 4, back);
    if (rc != CL_SUCCESS) {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "running the storage kernels failed: %s",
                    mpcl_cl_error_name(rc));
        goto done;
    }
    size_t bad_store = 0, bad_load = 0, first_store = 0, first_load = 0;
    for (size_t i = 0; i < n; i++)
        if (!same_half(h[i], mpcl_half_from_float(in[i])) && bad_store++ == 0)
            first_store = i;
    for (size_t i = 0; i < 65536; i++)
        if (!same_float(back[i], mpcl_half_to_float((uint16_t)i)) && bad_load++ == 0)
            first_load = i;
    if (bad_store) {
        mpcl_strfmt(chk->reason, sizeof chk->reason,
                    "vstore_half_rte differs from round-to-nearest-even in %zu of %zu values, "
                    "e.g. %a gave 0x%04x, expected 0x%04x",
                    bad_store, n, (double)in[first_store], h[first_store],
                    mpcl_half_from_float(in[first_store]));
    } else if (bad_load) {
        mpcl_strfmt(chk->reason, sizeof chk->reason,
                    "vload_half is wrong for %zu of 65536 halves, e.g. 0x%04zx gave %a, expected %a",
                    bad_load, first_load, (double)back[first_load],
                    (double)mpcl_half_to_float((uint16_t)first_load));
    } else {
        chk->passed = 1;
        mpcl_strfmt(chk->reason, sizeof chk->reason,
                    "vstore_half_rte and vload_half bit-exact on all 65536 halves, %zu rounding edge "
                    "cases and %d random floats",
                    n - 65536 - STORAGE_RANDOM, STORAGE_RANDOM);
    }
done:
    if (ks)
        clReleaseKernel(ks);
    if (kl)
        clReleaseKernel(kl);
    bufs_release(&b);
    free(in);
    free(back);
    free(h);
    free(all);
    return ret;
}

/* --------------------------------------------------- (b) fp16 arithmetic */

#define ARITH_OPS 6
#define DOT_ROWS 32
#define DOT_LEN 37

static double hd(uint16_t h) { return (double)mpcl_half_to_float(h); }

static int is_subnormal_half(uint16_t h) { return (h & 0x7c00u) == 0 && (h & 0x3ffu); }

static uint16_t flush(uint16_t h) { return is_subnormal_half(h) ? (uint16_t)(h & 0x8000u) : h; }

/* Exact result of fma(a, b, c) rounded once to half. a*b is exact in double;
 * TwoSum recovers what p + c loses, and that only matters to break a tie. */
static uint16_t emu_fma(uint16_t a, uint16_t b, uint16_t c)
{
    double p = hd(a) * hd(b), q = hd(c), s = p + q;
    if (!isfinite(s))
        return mpcl_half_from_double(s);
    double bb = s - p;
    double err = (p - (s - bb)) + (q - bb);
    return mpcl_half_from_double_sticky(s, err);
}

uint16_t mpcl_half_emulate(int op, uint16_t a, uint16_t b, uint16_t c)
{
    switch (op) {
    case 0: return mpcl_half_from_double(hd(a) + hd(b));
    case 1: return mpcl_half_from_double(hd(a) - hd(b));
    case 2: return mpcl_half_from_double(hd(a) * hd(b));
    case 3: return mpcl_half_from_double(hd(a) / hd(b)); /* 53 >= 2*11+2 bits: one rounding */
    default: return emu_fma(a, b, c);
    }
}

static unsigned emu_cmp(uint16_t a, uint16_t b)
{
    double x = hd(a), y = hd(b);
    return (unsigned)(x < y) | ((unsigned)(x == y) << 1) | ((unsigned)(x > y) << 2) |
           ((unsigned)(x <= y) << 3) | ((unsigned)(x != y) << 4);
}

static const char *OP_NAMES[ARITH_OPS] = {"a+b", "a-b", "a*b", "a/b", "fma(a,b,c)", "(half)f"};

typedef struct {
    size_t n;
    uint16_t *a, *b, *c;
    float *f;
} arith_vectors;

static void h_put(arith_vectors *v, float a, float b, float c)
{
    v->a[v->n] = mpcl_half_from_float(a);
    v->b[v->n] = mpcl_half_from_float(b);
    v->c[v->n] = mpcl_half_from_float(c);
    v->f[v->n] = a * 1.0001f + b; /* a float to cast, not always representable */
    v->n++;
}

static uint16_t random_half(uint64_t *s)
{
    uint32_t r = lcg(s);
    if ((r & 3) == 0)
        return (uint16_t)lcg(s); /* any bits: inf, NaN, subnormals included */
    unsigned e = 1 + (lcg(s) % 29); /* normal exponents 2^-14 .. 2^14 */
    return (uint16_t)(((r >> 2) & 0x8000u) | (e << 10) | (lcg(s) & 0x3ffu));
}

static void make_arith_vectors(arith_vectors *v, size_t n_random)
{
    /* known answers: rounding and range edges, subnormals */
    h_put(v, 2048.0f, 1.0f, 0.0f);         /* 2048 + 1 stays 2048 */
    h_put(v, 65504.0f, 2.0f, 0.0f);        /* 65504 * 2 is inf */
    h_put(v, 65504.0f, 65504.0f, -65504.0f);
    h_put(v, 1.0f, 0x1p-11f, 0.0f);        /* tie: stays 1 */
    h_put(v, 1.0f + 0x1p-10f, 0x1p-11f, 0.0f); /* tie: rounds up to even */
    h_put(v, 0x1p-24f, 0x1p-24f, 0x1p-24f);    /* subnormal sums */
    h_put(v, 0x1p-14f, 0.5f, 0x1p-24f);        /* normal * 0.5 -> subnormal */
    h_put(v, 0x1p-24f, 0.5f, 0.0f);            /* tie to 0 */
    h_put(v, 3 * 0x1p-24f, 0.5f, 0.0f);        /* tie to 2 ulps */
    h_put(v, 6.0976e-5f, 0x1p-24f, -6.0976e-5f);
    h_put(v, -0x1p-24f, 0x1p-24f, 0.0f);
    h_put(v, 1.0f, 3.0f, 0.0f);
    h_put(v, 1.0f, 0.0f, 1.0f);   /* 1/0 = inf */
    h_put(v, 0.0f, 0.0f, 0.0f);   /* 0/0 = NaN */
    h_put(v, -0.0f, 0.0f, -0.0f);
    h_put(v, INFINITY, 1.0f, -INFINITY);
    h_put(v, NAN, 1.0f, 1.0f);
    h_put(v, 1.0f + 0x1p-10f, 1.0f + 0x1p-10f, -1.0f); /* fma keeps 2^-20 */
    h_put(v, 1.0f + 3 * 0x1p-10f, 1.0f - 0x1p-10f, -1.0f);
    h_put(v, 300.0f, 300.0f, -65504.0f);
    uint64_t s = 0xfa57;
    for (size_t i = 0; i < n_random; i++) {
        uint16_t a = random_half(&s), b = random_half(&s), c;
        if (i % 3 == 0) /* cancellation: c near -a*b, where fma and mul+add differ */
            c = (uint16_t)(mpcl_half_from_double(-hd(a) * hd(b)) ^ (lcg(&s) & 3));
        else
            c = random_half(&s);
        v->a[v->n] = a;
        v->b[v->n] = b;
        v->c[v->n] = c;
        uint32_t fb = lcg(&s);
        fb = (fb & 0x807fffffu) | ((uint32_t)(127 - 26 + (lcg(&s) % 44)) << 23);
        memcpy(&v->f[v->n], &fb, 4);
        v->n++;
    }
}

/* Which results an element may have: exact, or with subnormal inputs and/or
 * outputs flushed to zero (accepted only where the device may flush). */
static int half_matches(uint16_t got, uint16_t exact, uint16_t in_flushed, int may_flush,
                        int *flushed)
{
    if (same_half(got, exact))
        return 1;
    if (!may_flush)
        return 0;
    if (same_half(got, flush(exact)) || same_half(got, in_flushed) ||
        same_half(got, flush(in_flushed))) {
        *flushed = 1;
        return 1;
    }
    return 0;
}

static void dot_emulate(const uint16_t *x, const uint16_t *y, uint16_t *out)
{
    for (int r = 0; r < DOT_ROWS; r++) {
        uint16_t acc = mpcl_half_from_double(hd(x[r * DOT_LEN]) * hd(y[r * DOT_LEN]));
        for (int k = 1; k < DOT_LEN; k++) {
            uint16_t p = mpcl_half_from_double(hd(x[r * DOT_LEN + k]) * hd(y[r * DOT_LEN + k]));
            acc = mpcl_half_from_double(hd(acc) + hd(p));
        }
        out[r] = acc;
    }
}

static mpcl_status check_arith(mpcl_context *ctx, mpcl_caps *caps)
{
    mpcl_status ret = MPCL_OK;
    mpcl_check *chk = &caps->fp16_arith_check;
    int declared = caps->ext_fp16;
    int may_flush = !(caps->half_fp_config & CL_FP_DENORM);
    const size_t n_random = 4096, cap = 64 + n_random;
    arith_vectors v = {0};
    uint16_t *out = NULL, *dx = NULL, *dy = NULL, dot_got[DOT_ROWS], dot_want[DOT_ROWS];
    unsigned *cmp = NULL;
    float *back = NULL;
    cl_kernel ka = NULL, kd = NULL;
    bufset b = {.ctx = ctx, .rc = CL_SUCCESS};
    char detail[MPCL_REASON_LEN] = "";
    int ok = 0, flushed = 0;

    chk->passed = 0;
    caps->fp16_arith = declared ? MPCL_FP16_DECLARED_BROKEN : MPCL_FP16_UNSUPPORTED;
    v.a = malloc(cap * 2);
    v.b = malloc(cap * 2);
    v.c = malloc(cap * 2);
    v.f = malloc(cap * 4);
    out = malloc(cap * ARITH_OPS * 2);
    cmp = malloc(cap * sizeof *cmp);
    back = malloc(cap * 4);
    dx = malloc(DOT_ROWS * DOT_LEN * 2);
    dy = malloc(DOT_ROWS * DOT_LEN * 2);
    if (!v.a || !v.b || !v.c || !v.f || !out || !cmp || !back || !dx || !dy) {
        mpcl_strfmt(detail, sizeof detail, "out of host memory");
        goto verdict;
    }
    mpcl_status ka_st = mpcl_kernel_create(ctx, "probe", MPCL_VARIANT_FP16, "arith_half", &ka);
    if (ka_st == MPCL_OK)
        ka_st = mpcl_kernel_create(ctx, "probe", MPCL_VARIANT_FP16, "dot_half", &kd);
    if (ka_st != MPCL_OK) {
        if (fatal(ka_st)) {
            ret = ka_st;
            goto verdict;
        }
        /* the first error of the build log says why, without the driver's
         * temporary file name */
        const char *log = strstr(ctx->err, "build log:\n");
        const char *line = log ? log + 11 : ctx->err;
        const char *e = strstr(line, "error:");
        if (e) {
            const char *msg = strstr(e, ".cl:");
            const char *colon = msg ? strstr(msg + 4, ": ") : NULL;
            line = colon ? colon + 2 : e + 6;
            while (*line == ' ')
                line++;
        }
        size_t len = strcspn(line, "\n");
        mpcl_strfmt(detail, sizeof detail, "the half-arithmetic kernel does not build (%.*s)",
                    (int)(len > 300 ? 300 : len), line);
        goto verdict;
    }
    make_arith_vectors(&v, n_random);
    uint64_t s = 0xd07;
    for (int i = 0; i < DOT_ROWS * DOT_LEN; i++) { /* |x| in [2^-4, 2): no subnormal products */
        dx[i] = (uint16_t)((lcg(&s) & 0x8000u) | ((11 + lcg(&s) % 5) << 10) | (lcg(&s) & 0x3ffu));
        dy[i] = (uint16_t)((lcg(&s) & 0x8000u) | ((11 + lcg(&s) % 5) << 10) | (lcg(&s) & 0x3ffu));
    }
    for (int k = 0; k < DOT_LEN; k++) /* one row overflows to inf */
        dx[k] = dy[k] = mpcl_half_from_float(200.0f);
    cl_mem ma = buf_new(&b, v.n * 2, v.a), mb = buf_new(&b, v.n * 2, v.b);
    cl_mem mc = buf_new(&b, v.n * 2, v.c), mf = buf_new(&b, v.n * 4, v.f);
    cl_mem mo = buf_new(&b, v.n * ARITH_OPS * 2, NULL), mcmp = buf_new(&b, v.n * 4, NULL);
    cl_mem mback = buf_new(&b, v.n * 4, NULL);
    cl_mem mx = buf_new(&b, DOT_ROWS * DOT_LEN * 2, dx), my = buf_new(&b, DOT_ROWS * DOT_LEN * 2, dy);
    cl_mem mdot = buf_new(&b, DOT_ROWS * 2, NULL);
    if (b.rc != CL_SUCCESS) {
        mpcl_strfmt(detail, sizeof detail, "%s failed: %s", b.where, mpcl_cl_error_name(b.rc));
        goto verdict;
    }
    cl_uint un = (cl_uint)v.n, rows = DOT_ROWS, len = DOT_LEN;
    cl_int rc = run_1d(ctx, ka, v.n, 8, sizeof ma, &ma, sizeof mb, &mb, sizeof mc, &mc, sizeof mf,
                       &mf, sizeof mo, &mo, sizeof mcmp, &mcmp, sizeof mback, &mback, sizeof un, &un);
    if (rc == CL_SUCCESS)
        rc = run_1d(ctx, kd, DOT_ROWS, 5, sizeof mx, &mx, sizeof my, &my, sizeof mdot, &mdot,
                    sizeof rows, &rows, sizeof len, &len);
    if (rc == CL_SUCCESS)
        rc = read_back(ctx, mo, v.n * ARITH_OPS * 2, out);
    if (rc == CL_SUCCESS)
        rc = read_back(ctx, mcmp, v.n * 4, cmp);
    if (rc == CL_SUCCESS)
        rc = read_back(ctx, mback, v.n * 4, back);
    if (rc == CL_SUCCESS)
        rc = read_back(ctx, mdot, DOT_ROWS * 2, dot_got);
    if (rc != CL_SUCCESS) {
        mpcl_strfmt(detail, sizeof detail, "running the half-arithmetic kernels failed: %s",
                    mpcl_cl_error_name(rc));
        goto verdict;
    }
    size_t bad = 0;
    for (size_t i = 0; i < v.n; i++) {
        uint16_t fa = flush(v.a[i]), fb = flush(v.b[i]), fc = flush(v.c[i]);
        for (int op = 0; op < ARITH_OPS; op++) {
            uint16_t got = out[i * ARITH_OPS + op], want, want_ftz;
            if (op == 5) {
                want = mpcl_half_from_float(v.f[i]);
                want_ftz = want;
            } else {
                want = mpcl_half_emulate(op, v.a[i], v.b[i], v.c[i]);
                want_ftz = mpcl_half_emulate(op, fa, fb, fc);
            }
            if (!half_matches(got, want, want_ftz, may_flush, &flushed) && bad++ == 0)
                mpcl_strfmt(detail, sizeof detail,
                            "%s with a=0x%04x b=0x%04x c=0x%04x gave 0x%04x, expected 0x%04x",
                            OP_NAMES[op], v.a[i], v.b[i], v.c[i], got, want);
        }
        unsigned want_c = emu_cmp(v.a[i], v.b[i]);
        if (cmp[i] != want_c) {
            if (may_flush && cmp[i] == emu_cmp(fa, fb))
                flushed = 1;
            else if (bad++ == 0)
                mpcl_strfmt(detail, sizeof detail,
                            "comparisons of a=0x%04x b=0x%04x gave mask 0x%x, expected 0x%x", v.a[i],
                            v.b[i], cmp[i], want_c);
        }
        float want_f = mpcl_half_to_float(v.a[i]);
        if (!same_float(back[i], want_f)) {
            if (may_flush && same_float(back[i], mpcl_half_to_float(fa)))
                flushed = 1;
            else if (bad++ == 0)
                mpcl_strfmt(detail, sizeof detail, "(float)0x%04x gave %a, expected %a", v.a[i],
                            (double)back[i], (double)want_f);
        }
    }
    dot_emulate(dx, dy, dot_want);
    for (int r = 0; r < DOT_ROWS; r++)
        if (!same_half(dot_got[r], dot_want[r]) && bad++ == 0)
            mpcl_strfmt(detail, sizeof detail,
                        "half dot-product loop row %d (length %d) gave 0x%04x, expected 0x%04x", r,
                        DOT_LEN, dot_got[r], dot_want[r]);
    if (bad) {
        char first[MPCL_REASON_LEN];
        mpcl_strfmt(first, sizeof first, "%s", detail);
        mpcl_strfmt(detail, sizeof detail, "%zu wrong results of %zu; first: %.380s", bad,
                    v.n * (ARITH_OPS + 2) + DOT_ROWS, first);
        goto verdict;
    }
    ok = 1;
verdict:
    caps->fp16_flushes_subnormals = ok && flushed;
    if (ok) {
        chk->passed = 1;
        caps->fp16_arith = declared ? MPCL_FP16_DECLARED_WORKS : MPCL_FP16_UNDECLARED_WORKS;
        mpcl_strfmt(chk->reason, sizeof chk->reason,
                    "%s; + - * / fma, comparisons, casts and a half dot loop match exact emulation "
                    "bit for bit on %zu cases%s",
                    declared ? "cl_khr_fp16 declared" : "cl_khr_fp16 not declared, yet half arithmetic compiles",
                    v.n * (ARITH_OPS + 2) + DOT_ROWS,
                    flushed ? " (half subnormals flushed to zero, as CL_DEVICE_HALF_FP_CONFIG allows)" : "");
    } else {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "%s; %s",
                    declared ? "cl_khr_fp16 declared" : "cl_khr_fp16 not declared", detail);
    }
    if (ka)
        clReleaseKernel(ka);
    if (kd)
        clReleaseKernel(kd);
    bufs_release(&b);
    free(v.a);
    free(v.b);
    free(v.c);
    free(v.f);
    free(out);
    free(cmp);
    free(back);
    free(dx);
    free(dy);
    return ret;
}

mpcl_status mpcl_probe_checks(mpcl_context *ctx, mpcl_caps *caps)
{
    mpcl_status s = check_storage(ctx, caps);
    if (s == MPCL_OK)
        s = check_arith(ctx, caps);
    if (s == MPCL_OK)
        mpcl_clear_error(ctx); /* a failed check is a verdict, not an error */
    return s;
}

/* ------------------------------------------------------------ (c) CLBlast */

#define GM 37
#define GN 29
#define GK 45

/* n values in [-2, 2] into dev (half or float) and, as the device holds
 * them, into ref. */
static void fill_operand(void *dev, double *ref, int n, int half, uint64_t *s)
{
    for (int i = 0; i < n; i++) {
        float x = (float)((int)(lcg(s) % 2001) - 1000) / 500.0f;
        if (half) {
            ((uint16_t *)dev)[i] = mpcl_half_from_float(x);
            ref[i] = hd(((uint16_t *)dev)[i]);
        } else {
            ((float *)dev)[i] = x;
            ref[i] = x;
        }
    }
}

static void check_gemm(mpcl_context *ctx, int half, mpcl_check *chk)
{
    const char *name = half ? "Hgemm" : "Sgemm";
    size_t es = half ? 2 : 4;
    void *a = malloc(GM * GK * es), *bm = malloc(GK * GN * es), *c = malloc(GM * GN * es);
    double ref[GM * GN], mag[GM * GN];
    bufset b = {.ctx = ctx, .rc = CL_SUCCESS};
    chk->passed = 0;
    if (!a || !bm || !c) {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "out of host memory");
        goto done;
    }
    uint64_t s = half ? 0x4a : 0x5a;
    double av[GM * GK], bv[GK * GN];
    fill_operand(a, av, GM * GK, half, &s);
    fill_operand(bm, bv, GK * GN, half, &s);
    for (int i = 0; i < GM; i++)
        for (int j = 0; j < GN; j++) {
            double acc = 0, m = 0;
            for (int k = 0; k < GK; k++) {
                acc += av[i * GK + k] * bv[k * GN + j];
                m += fabs(av[i * GK + k] * bv[k * GN + j]);
            }
            ref[i * GN + j] = acc;
            mag[i * GN + j] = m;
        }
    cl_mem ma = buf_new(&b, GM * GK * es, a), mb = buf_new(&b, GK * GN * es, bm);
    cl_mem mc = buf_new(&b, GM * GN * es, NULL);
    if (b.rc != CL_SUCCESS) {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "%s failed: %s", b.where, mpcl_cl_error_name(b.rc));
        goto done;
    }
    CLBlastStatusCode st =
        (CLBlastStatusCode)mpcl_clblast_gemm(ctx, half, 0, 0, GM, GN, GK, 1, ma, mb, mc, NULL);
    if (st != CLBlastSuccess) {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "CLBlast%s refused a %dx%dx%d problem: %s (%d)",
                    name, GM, GN, GK, mpcl_clblast_status_name(st), (int)st);
        goto done;
    }
    cl_int rc = clFinish(ctx->queue);
    if (rc == CL_SUCCESS)
        rc = read_back(ctx, mc, GM * GN * es, c);
    if (rc != CL_SUCCESS) {
        mpcl_strfmt(chk->reason, sizeof chk->reason, "CLBlast%s ran but reading C failed: %s", name,
                    mpcl_cl_error_name(rc));
        goto done;
    }
    /* a sum of K products rounded at each step: error within K ulps of the
     * magnitude sum, in the accumulating precision */
    double ulp = half ? 0x1p-11 : 0x1p-24, worst = 0;
    int bad = -1;
    for (int i = 0; i < GM * GN; i++) {
        double got = half ? hd(((uint16_t *)c)[i]) : ((float *)c)[i];
        double err = fabs(got - ref[i]), tol = (GK + 2) * ulp * mag[i] + 1e-30;
        if (!(err <= tol) && bad < 0)
            bad = i;
        if (err / (mag[i] + 1e-30) > worst)
            worst = err / (mag[i] + 1e-30);
    }
    if (bad >= 0) {
        double got = half ? hd(((uint16_t *)c)[bad]) : ((float *)c)[bad];
        mpcl_strfmt(chk->reason, sizeof chk->reason,
                    "CLBlast%s returned wrong results on %dx%dx%d: C[%d][%d] = %g, reference %g", name,
                    GM, GN, GK, bad / GN, bad % GN, got, ref[bad]);
        goto done;
    }
    chk->passed = 1;
    mpcl_strfmt(chk->reason, sizeof chk->reason,
                "CLBlast%s %dx%dx%d matches a double reference (max error %.2g of the magnitude sum)",
                name, GM, GN, GK, worst);
done:
    bufs_release(&b);
    free(a);
    free(bm);
    free(c);
}

/* Hgemm is run only where it can run: CLBlast 1.5 refuses half on a
 * device that does not declare cl_khr_fp16 (and prints a line on stderr
 * when it does), and mpcl never calls Hgemm on a device whose half
 * arithmetic the probe did not verify. Where the outcome is known, the
 * check says why it was not run instead of running it. */
static int hgemm_runnable(const mpcl_caps *caps, mpcl_check *chk)
{
    if (!caps->ext_fp16) {
        chk->passed = 0;
        mpcl_strfmt(chk->reason, sizeof chk->reason,
                    "CLBlastHgemm not run: the device does not declare cl_khr_fp16, without which "
                    "CLBlast refuses half precision (CLBlastNoHalfPrecision, -2045)");
        return 0;
    }
    if (!caps->fp16_arith_check.passed || (caps->fp16_arith != MPCL_FP16_DECLARED_WORKS &&
                                           caps->fp16_arith != MPCL_FP16_UNDECLARED_WORKS)) {
        chk->passed = 0;
        mpcl_strfmt(chk->reason, sizeof chk->reason,
                    "CLBlastHgemm not run: half arithmetic is not verified on this device (%s)",
                    mpcl_fp16_arith_name(caps->fp16_arith));
        return 0;
    }
    return 1;
}

void mpcl_probe_clblast(mpcl_context *ctx, mpcl_caps *caps)
{
    check_gemm(ctx, 0, &caps->sgemm);
    if (hgemm_runnable(caps, &caps->hgemm))
        check_gemm(ctx, 1, &caps->hgemm);
}

mpcl_status mpcl_probe(mpcl_context *ctx, const mpcl_probe_options *opt, mpcl_caps *out)
{
    if (!ctx || !out)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "mpcl_probe: ctx and out must not be NULL");
    if (!ctx->usable) /* keep the creation error the caller should read */
        return MPCL_ERR_STATE;
    if (!ctx->clblast_checked) {
        mpcl_probe_clblast(ctx, &ctx->caps);
        ctx->clblast_checked = 1;
    }
    *out = ctx->caps;
    if (opt && opt->bench) {
        mpcl_status s = mpcl_probe_bench(ctx, opt->gemm_n ? opt->gemm_n : 1024, out);
        if (s != MPCL_OK)
            return s;
    }
    return MPCL_OK;
}
