/* conv.c — 2-D convolution, forward and backward (kernels in cl/conv.cl).
 *
 * Letters: B batch, C input channels, K output channels, H W input height
 * and width, OH OW output height and width, R S kernel height and width,
 * P = OH*OW output pixels per image, NB images per chunk, N = NB*P columns.
 *
 * Two algorithms (docs/ops/conv-pool.md has the measurements and the rule):
 *   im2col  per chunk of NB images: col (C*R*S, N) = im2col(x); one GEMM
 *           yt (K, N) = w (K, C*R*S) * col through the GEMM router; yt back
 *           to NCHW with the bias added. Backward: dyt (K, N) = dy in GEMM
 *           layout; dw += dyt * col^T (beta 1); dcol = w^T * dyt, then
 *           col2im (a gather, no atomics) assigns dx.
 *   direct  one work item per output (forward) or input element (dx), one
 *           work-group per weight (dw): no scratch, no GEMM. For skinny
 *           layers, where GEMM's fixed costs dominate.
 * db += sum over B, OH, OW of dy in both (one work-group per channel).
 * MPCL_CONV_ALGO=auto|im2col|direct overrides the choice (tests use it);
 * MPCL_CONV_CHUNK=n caps the images per im2col chunk (1: a GEMM per image).
 * Scratch slots 4 (col), 5 (yt / dyt), 6 (dcol); 0..3 belong to the GEMM
 * router. Every sum accumulates in float. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CONV_WG 64                       /* = CONV_WG in cl/conv.cl: the most */
#define CONV_SCRATCH_BYTES (32u << 20)   /* per scratch buffer: bounds NB */
#define CONV_DIRECT_MAX_CRS 25           /* the rule in choose() */
#define SLOT_COL 4
#define SLOT_YT 5
#define SLOT_DCOL 6
#define SLOT_PARAMS 7 /* the direct kernels' float copy of half weights and bias */

typedef enum { CONV_AUTO = 0, CONV_IM2COL, CONV_DIRECT } conv_algo;

/* One convolution's sizes. */
typedef struct {
    size_t b, c, h, w, k, r, s, oh, ow;
    mpcl_conv2d_params p;
} conv_dims;

mpcl_conv2d_params mpcl_conv2d_default(void)
{
    mpcl_conv2d_params p = {1, 1, 0, 0, 1, 1};
    return p;
}

static int params_valid(const mpcl_conv2d_params *p)
{
    return p && p->stride_h >= 1 && p->stride_w >= 1 && p->pad_h >= 0 && p->pad_w >= 0 &&
           p->dilation_h >= 1 && p->dilation_w >= 1;
}

/* One dimension: (n + 2 pad - dil (k - 1) - 1) / stride + 1, 0 when empty. */
static size_t out_dim(size_t n, size_t k, int stride, int pad, int dil)
{
    if (n == 0 || k == 0)
        return 0;
    unsigned long long span = (unsigned long long)dil * (k - 1) + 1;
    unsigned long long padded = (unsigned long long)n + 2ull * (unsigned)pad;
    if (padded < span)
        return 0;
    return (size_t)((padded - span) / (unsigned)stride + 1);
}

mpcl_status mpcl_conv2d_output_size(size_t h, size_t w, size_t r, size_t s,
                                    const mpcl_conv2d_params *p, size_t *oh, size_t *ow)
{
    if (!params_valid(p) || !oh || !ow)
        return MPCL_ERR_ARGUMENT;
    *oh = out_dim(h, r, p->stride_h, p->pad_h, p->dilation_h);
    *ow = out_dim(w, s, p->stride_w, p->pad_w, p->dilation_w);
    if (*oh == 0 || *ow == 0) {
        *oh = *ow = 0;
        return MPCL_ERR_SHAPE;
    }
    return MPCL_OK;
}

/* ----------------------------------------------------------- argument checks */

/* mpcl_check_tensor, with `ref`'s shape added to the message on failure. */
static mpcl_status check_against(mpcl_context *ctx, const char *op, const char *name,
                                 const mpcl_tensor *t, int ndim, const size_t *dims,
                                 const char *ref_name, const mpcl_tensor *ref)
{
    mpcl_status s = mpcl_check_tensor(ctx, op, name, t, mpcl_storage_dtype(ctx), ndim, dims);
    if (s == MPCL_OK)
        return s;
    char msg[MPCL_ERR_LEN], d[128];
    mpcl_strfmt(msg, sizeof msg, "%s", mpcl_last_error(ctx));
    return mpcl_set_error(ctx, s, "%s (%s is %s)", msg, ref_name,
                          mpcl_tensor_describe(ref, d, sizeof d));
}

/* x (B, C, H, W), w (K, C, R, S), the parameters and a non-empty output. */
static mpcl_status check_conv(mpcl_context *ctx, const char *op, const mpcl_tensor *x,
                              const mpcl_tensor *w, const mpcl_conv2d_params *p, conv_dims *d)
{
    mpcl_status s = mpcl_check_tensor(ctx, op, "x", x, mpcl_storage_dtype(ctx), 4, NULL);
    if (s != MPCL_OK)
        return s;
    const size_t wdims[4] = {0, x->shape[1], 0, 0};
    s = check_against(ctx, op, "w", w, 4, wdims, "x", x);
    if (s != MPCL_OK)
        return s;
    if (!params_valid(p))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: params must be non-NULL with stride >= 1, padding >= 0 and "
                              "dilation >= 1",
                              op);
    memset(d, 0, sizeof *d);
    d->b = x->shape[0];
    d->c = x->shape[1];
    d->h = x->shape[2];
    d->w = x->shape[3];
    d->k = w->shape[0];
    d->r = w->shape[2];
    d->s = w->shape[3];
    d->p = *p;
    if (mpcl_conv2d_output_size(d->h, d->w, d->r, d->s, p, &d->oh, &d->ow) != MPCL_OK) {
        char dx[128], dw[128];
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: the output is empty: a %zux%zu kernel (R %zu, S %zu, dilation "
                              "%dx%d) with stride %dx%d and padding %dx%d over a %zux%zu image "
                              "(H %zu, W %zu); x is %s, w is %s",
                              op, d->r, d->s, d->r, d->s, p->dilation_h, p->dilation_w,
                              p->stride_h, p->stride_w, p->pad_h, p->pad_w, d->h, d->w, d->h,
                              d->w, mpcl_tensor_describe(x, dx, sizeof dx),
                              mpcl_tensor_describe(w, dw, sizeof dw));
    }
    return MPCL_OK;
}

/* Kernels index with int: every tensor and column matrix stays below 2^31. */
static mpcl_status check_int_range(mpcl_context *ctx, const char *op, const conv_dims *d)
{
    const size_t crs = d->c * d->r * d->s, p = d->oh * d->ow;
    if (d->b * d->c * d->h * d->w > INT_MAX || d->b * d->k * p > INT_MAX || d->k * crs > INT_MAX ||
        crs * p > INT_MAX || d->b > INT_MAX / (p ? p : 1))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: tensors over %d elements are not supported",
                              op, INT_MAX);
    return MPCL_OK;
}

/* ------------------------------------------------------ algorithm choice */

static mpcl_status algo_from_env(mpcl_context *ctx, const char *op, conv_algo *out)
{
    const char *e = getenv("MPCL_CONV_ALGO");
    *out = CONV_AUTO;
    if (!e || !*e || strcmp(e, "auto") == 0)
        return MPCL_OK;
    if (strcmp(e, "im2col") == 0)
        *out = CONV_IM2COL;
    else if (strcmp(e, "direct") == 0)
        *out = CONV_DIRECT;
    else
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: MPCL_CONV_ALGO is \"%s\"; expected auto, im2col or direct", op, e);
    return MPCL_OK;
}

/* The rule of docs/ops/conv-pool.md, from measurements on PoCL (CPU): direct
 * when the reduction per output, C*R*S, is short (one-channel first layers
 * up to 5x5: 25 measured faster direct, 27 = 3x3x3 faster with im2col),
 * where GEMM's fixed costs (im2col traffic, layout passes, CLBlast's
 * launches, an M = C*R*S too small to tile) outweigh its arithmetic speed;
 * im2col + GEMM otherwise. One choice for all three passes. */
static conv_algo choose(const conv_dims *d)
{
    return d->c * d->r * d->s <= CONV_DIRECT_MAX_CRS ? CONV_DIRECT : CONV_IM2COL;
}

static mpcl_status pick_algo(mpcl_context *ctx, const char *op, const conv_dims *d, conv_algo *out)
{
    mpcl_status s = algo_from_env(ctx, op, out);
    if (s == MPCL_OK && *out == CONV_AUTO)
        *out = choose(d);
    return s;
}

/* ----------------------------------------------------------- launching */

/* The geometry as the kernels take it (CONV_GEO_PARAMS in cl/conv.cl):
 * C, H, W, K, R, S, OH, OW, stride, padding, dilation (h, w), NB. */
#define GEO_N 15
typedef struct {
    cl_int v[GEO_N];
} conv_geo;

/* The GEO_N (size, value) argument pairs of g for mpcl_kernel_args. */
#define GEO_ARGS(g)                                                                              \
    sizeof(cl_int), &(g).v[0], sizeof(cl_int), &(g).v[1], sizeof(cl_int), &(g).v[2],            \
        sizeof(cl_int), &(g).v[3], sizeof(cl_int), &(g).v[4], sizeof(cl_int), &(g).v[5],        \
        sizeof(cl_int), &(g).v[6], sizeof(cl_int), &(g).v[7], sizeof(cl_int), &(g).v[8],        \
        sizeof(cl_int), &(g).v[9], sizeof(cl_int), &(g).v[10], sizeof(cl_int), &(g).v[11],      \
        sizeof(cl_int), &(g).v[12], sizeof(cl_int), &(g).v[13], sizeof(cl_int), &(g).v[14]

/* nb images in this launch. */
static conv_geo make_geo(const conv_dims *d, size_t nb)
{
    conv_geo g = {{(cl_int)d->c, (cl_int)d->h, (cl_int)d->w, (cl_int)d->k, (cl_int)d->r,
                   (cl_int)d->s, (cl_int)d->oh, (cl_int)d->ow, d->p.stride_h, d->p.stride_w,
                   d->p.pad_h, d->p.pad_w, d->p.dilation_h, d->p.dilation_w, (cl_int)nb}};
    return g;
}

static mpcl_status arg_error(mpcl_context *ctx, const char *what, cl_int rc)
{
    return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clSetKernelArg failed: %s", what,
                          mpcl_cl_error_name(rc));
}

/* Launches `groups` work-groups of L items, L the largest power of two up
 * to CONV_WG that the kernel, the device and the context's cap allow (the
 * kernel's reduction covers any such L, down to 1). */
static mpcl_status launch_groups(mpcl_context *ctx, cl_kernel k, const char *what, size_t groups)
{
    size_t lim = mpcl_wg_limit(ctx, k);
    size_t wg = mpcl_pow2_floor(lim < CONV_WG ? lim : CONV_WG);
    if (groups > SIZE_MAX / wg)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %zu work-groups overflow size_t", what,
                              groups);
    size_t global = groups * wg, local = wg;
    return mpcl_launch(ctx, k, what, 1, &global, &local);
}

/* db (K) += sum over B, OH, OW of dy (B, K, OH, OW). */
static mpcl_status bias_grad(mpcl_context *ctx, const char *op, mpcl_tensor *db,
                             const mpcl_tensor *dy, const conv_dims *d)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "conv", mpcl_ctx_variant(ctx), "conv_bias_grad", &k);
    if (s != MPCL_OK)
        return s;
    conv_geo geo = make_geo(d, d->b);
    cl_int rc = mpcl_kernel_args(k, 2 + GEO_N, sizeof(cl_mem), &dy->mem, /* (B, K, OH, OW) */
                                 sizeof(cl_mem), &db->mem,       /* (K) */
                                 GEO_ARGS(geo));
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return launch_groups(ctx, k, op, d->k);
}

/* ---------------------------------------------------------------- direct */

/* The direct kernels (cl/conv_direct.cl) are built once per geometry, with
 * every size a -D define (the batch size stays a run-time argument). */
#define DIRECT_MAX_KB 16  /* output channels per forward work item, at most */
#define DIRECT_FILTER_ITEMS 512 /* weight-gradient first-pass items to aim for */

static size_t largest_divisor_le(size_t n, size_t cap)
{
    for (size_t v = n < cap ? n : cap; v > 1; v--)
        if (n % v == 0)
            return v;
    return 1;
}

/* Output channels per forward work item: the largest divisor of K up to
 * DIRECT_MAX_KB (the kernel has no check for channels past K). */
static size_t direct_kb(size_t k)
{
    return largest_divisor_le(k, DIRECT_MAX_KB);
}

static void direct_defines(const conv_dims *d, char *dst, size_t len)
{
    mpcl_strfmt(dst, len,
                "-DCONV_C=%zu -DCONV_H=%zu -DCONV_W=%zu -DCONV_K=%zu -DCONV_R=%zu -DCONV_S=%zu "
                "-DCONV_OH=%zu -DCONV_OW=%zu -DCONV_SH=%d -DCONV_SW=%d -DCONV_PH=%d -DCONV_PW=%d "
                "-DCONV_DH=%d -DCONV_DW=%d -DCONV_KB=%zu",
                d->c, d->h, d->w, d->k, d->r, d->s, d->oh, d->ow, d->p.stride_h, d->p.stride_w,
                d->p.pad_h, d->p.pad_w, d->p.dilation_h, d->p.dilation_w, direct_kb(d->k));
}

static mpcl_status direct_kernel(mpcl_context *ctx, const conv_dims *d, const char *name,
                                 cl_kernel *k)
{
    char defs[MPCL_SPEC_DEFINES_LEN];
    direct_defines(d, defs, sizeof defs);
    return mpcl_kernel_get_spec(ctx, "conv_direct", mpcl_ctx_variant(ctx), defs, name, k);
}

/* The weights and bias as the forward and input-gradient kernels read them:
 * float. f32 tensors are used as they are (*bias_at 0); half ones are
 * converted into one scratch buffer, weights at 0 and the bias (0 without
 * one) at *bias_at = KCRS (cl/conv_direct.cl conv_direct_params_f32). */
static mpcl_status direct_params(mpcl_context *ctx, const char *op, const mpcl_tensor *w,
                                 const mpcl_tensor *b, const conv_dims *d, cl_mem *wmem,
                                 cl_mem *bmem, cl_uint *bias_at)
{
    if (w->dtype == MPCL_F32) {
        *wmem = w->mem;
        *bmem = b ? b->mem : w->mem; /* read but unused without a bias (w has >= K entries) */
        *bias_at = 0;
        return MPCL_OK;
    }
    const size_t kcrs = d->k * d->c * d->r * d->s, n = kcrs + d->k;
    cl_mem out;
    cl_kernel k;
    mpcl_status s = mpcl_scratch(ctx, SLOT_PARAMS, n * sizeof(cl_float), &out);
    if (s == MPCL_OK)
        s = direct_kernel(ctx, d, "conv_direct_params_f32", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint has_bias = b != NULL;
    cl_mem src_b = b ? b->mem : w->mem; /* not read without a bias */
    cl_int rc = mpcl_kernel_args(k, 4, sizeof(cl_mem), &w->mem, /* (K, C, R, S) */
                                 sizeof(cl_mem), &src_b,         /* (K) */
                                 sizeof has_bias, &has_bias,
                                 sizeof(cl_mem), &out);          /* (KCRS + K) f32 */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    *wmem = *bmem = out;
    *bias_at = (cl_uint)kcrs;
    return mpcl_launch_1d(ctx, k, op, n);
}

static mpcl_status direct_forward(mpcl_context *ctx, const char *op, mpcl_tensor *y,
                                  const mpcl_tensor *x, const mpcl_tensor *w, const mpcl_tensor *b,
                                  const conv_dims *d)
{
    cl_kernel k;
    cl_mem wmem, bmem, xm = x->mem;
    cl_uint bias_at;
    mpcl_status s = direct_params(ctx, op, w, b, d, &wmem, &bmem, &bias_at);
    if (s == MPCL_OK)
        s = direct_kernel(ctx, d, "conv_direct_forward", &k);
    /* 16-bit storage: x as float too (cl/conv_direct.cl xin_t), in SLOT_COL */
    if (s == MPCL_OK && mpcl_storage_dtype(ctx) != MPCL_F32) {
        s = mpcl_scratch(ctx, SLOT_COL, x->numel * sizeof(cl_float), &xm);
        if (s == MPCL_OK)
            s = mpcl_cast_raw(ctx, op, 1, x->mem, xm, x->numel);
    }
    if (s != MPCL_OK)
        return s;
    cl_uint has_bias = b != NULL;
    cl_int rc = mpcl_kernel_args(k, 6, sizeof(cl_mem), &xm,     /* (B, C, H, W) */
                                 sizeof(cl_mem), &wmem,          /* (K, C, R, S) f32 */
                                 sizeof(cl_mem), &bmem,          /* (K) f32 from bias_at */
                                 sizeof bias_at, &bias_at,
                                 sizeof has_bias, &has_bias,
                                 sizeof(cl_mem), &y->mem);       /* (B, K, OH, OW) */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    const size_t kb = direct_kb(d->k);
    return mpcl_launch_rows(ctx, k, op, d->ow, d->oh, d->b * (d->k / kb));
}

/* dw += and, when db is not NULL, db += in two passes: partial sums per
 * chunk of images into scratch, then one item per entry adds them up.
 * Chunks: as many as give DIRECT_FILTER_ITEMS first-pass items. */
static mpcl_status direct_filter(mpcl_context *ctx, const char *op, mpcl_tensor *dw,
                                 mpcl_tensor *db, const mpcl_tensor *dy, const mpcl_tensor *x,
                                 const conv_dims *d)
{
    const size_t kcrs = d->k * d->c * d->r * d->s, rows = d->k * d->c * d->r + (db ? d->k : 0);
    size_t want = (DIRECT_FILTER_ITEMS + rows - 1) / rows; /* chunks */
    if (want > d->b)
        want = d->b;
    const size_t cb = (d->b + want - 1) / want, chunks = (d->b + cb - 1) / cb;
    cl_mem part, dym = dy->mem, xm = x->mem;
    mpcl_status s = mpcl_scratch(ctx, SLOT_COL, chunks * (kcrs + d->k) * sizeof(cl_float), &part);
    cl_kernel k;
    if (s == MPCL_OK && ctx->precision == MPCL_PRECISION_FP16_STORAGE) {
        /* The first pass reads every dy row C*R*S times and every x row
         * K*S times: without half hardware, converting dy and x to float
         * once (scratch slots YT and DCOL) and running the fp32 build of
         * the first pass costs a fraction of converting at every read. */
        s = mpcl_scratch(ctx, SLOT_YT, dy->numel * sizeof(cl_float), &dym);
        if (s == MPCL_OK)
            s = mpcl_scratch(ctx, SLOT_DCOL, x->numel * sizeof(cl_float), &xm);
        if (s == MPCL_OK)
            s = mpcl_cast_raw(ctx, op, 1, dy->mem, dym, dy->numel);
        if (s == MPCL_OK)
            s = mpcl_cast_raw(ctx, op, 1, x->mem, xm, x->numel);
        char defs[MPCL_SPEC_DEFINES_LEN];
        direct_defines(d, defs, sizeof defs);
        if (s == MPCL_OK)
            s = mpcl_kernel_get_spec(ctx, "conv_direct", MPCL_VARIANT_FP32, defs,
                                     "conv_direct_filter_partial", &k);
    } else if (s == MPCL_OK) {
        s = direct_kernel(ctx, d, "conv_direct_filter_partial", &k);
    }
    if (s != MPCL_OK)
        return s;
    cl_int nb = (cl_int)d->b, cbi = (cl_int)cb, nch = (cl_int)chunks;
    cl_int n = (cl_int)(kcrs + (db ? d->k : 0));
    cl_int rc = mpcl_kernel_args(k, 5, sizeof(cl_mem), &dym, /* (B, K, OH, OW) */
                                 sizeof(cl_mem), &xm,        /* (B, C, H, W) */
                                 sizeof(cl_mem), &part,          /* (chunks, KCRS + K) f32 */
                                 sizeof nb, &nb, sizeof cbi, &cbi);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    const size_t lim = mpcl_wg_limit(ctx, k);
    size_t global[2] = {rows, chunks}, local[2] = {largest_divisor_le(rows, lim < 64 ? lim : 64), 1};
    s = mpcl_launch(ctx, k, op, 2, global, local);
    if (s == MPCL_OK)
        s = direct_kernel(ctx, d, "conv_direct_filter_final", &k);
    if (s != MPCL_OK)
        return s;
    cl_mem dbmem = db ? db->mem : dw->mem; /* not written without db */
    rc = mpcl_kernel_args(k, 5, sizeof(cl_mem), &part, sizeof(cl_mem), &dw->mem, /* (K, C, R, S) */
                          sizeof(cl_mem), &dbmem,                                  /* (K) */
                          sizeof n, &n, sizeof nch, &nch);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch_1d(ctx, k, op, (size_t)n);
}

static mpcl_status direct_backward(mpcl_context *ctx, const char *op, mpcl_tensor *dx,
                                   mpcl_tensor *dw, mpcl_tensor *db, const mpcl_tensor *dy,
                                   const mpcl_tensor *x, const mpcl_tensor *w, const conv_dims *d)
{
    mpcl_status s = MPCL_OK;
    if (dw)
        s = direct_filter(ctx, op, dw, db, dy, x, d);
    else if (db)
        s = bias_grad(ctx, op, db, dy, d);
    if (s != MPCL_OK || !dx)
        return s;
    cl_kernel k;
    cl_mem wmem, bmem;
    cl_uint bias_at;
    s = direct_params(ctx, op, w, NULL, d, &wmem, &bmem, &bias_at);
    if (s == MPCL_OK)
        s = direct_kernel(ctx, d, "conv_direct_backward_data", &k);
    if (s != MPCL_OK)
        return s;
    cl_int rc = mpcl_kernel_args(k, 3, sizeof(cl_mem), &dy->mem, /* (B, K, OH, OW) */
                                 sizeof(cl_mem), &wmem,          /* (K, C, R, S) f32 */
                                 sizeof(cl_mem), &dx->mem);      /* (B, C, H, W) */
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch_rows(ctx, k, op, d->w, d->h, d->b * d->c);
}

/* ---------------------------------------------------------------- im2col */

/* MPCL_CONV_CHUNK=n caps the images per im2col chunk (n = 1: one GEMM per
 * image); unset or 0: no cap beyond the scratch budget. */
static mpcl_status chunk_cap_from_env(mpcl_context *ctx, const char *op, size_t *cap)
{
    const char *e = getenv("MPCL_CONV_CHUNK");
    *cap = 0;
    if (!e || !*e)
        return MPCL_OK;
    char *end = NULL;
    long v = strtol(e, &end, 10);
    if (*end || v < 0)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: MPCL_CONV_CHUNK is \"%s\"; expected a number of images >= 0", op, e);
    *cap = (size_t)v;
    return MPCL_OK;
}

/* Images per chunk: as many as keep each scratch matrix within
 * CONV_SCRATCH_BYTES and its element count within int, at least 1, at most
 * cap (0: no cap). */
static size_t chunk_images(const mpcl_context *ctx, const conv_dims *d, size_t cap)
{
    const size_t es = mpcl_dtype_size(mpcl_storage_dtype(ctx));
    const size_t p = d->oh * d->ow, rows = d->c * d->r * d->s > d->k ? d->c * d->r * d->s : d->k;
    size_t nb = CONV_SCRATCH_BYTES / (rows * p * es);
    if (nb > (size_t)INT_MAX / (rows * p))
        nb = (size_t)INT_MAX / (rows * p);
    if (cap && nb > cap)
        nb = cap;
    if (nb < 1)
        nb = 1;
    return nb < d->b ? nb : d->b;
}

/* A re-layout kernel of the im2col path over images i0 .. i0+nb-1: name
 * reads src from element src_off and writes dst, one work item per element
 * of dst (items). */
static mpcl_status relayout(mpcl_context *ctx, const char *op, const char *name, const mpcl_tensor *src,
                            size_t src_off, cl_mem dst, const conv_dims *d, size_t nb, size_t items)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "conv", mpcl_ctx_variant(ctx), name, &k);
    if (s != MPCL_OK)
        return s;
    conv_geo geo = make_geo(d, nb);
    cl_uint off = (cl_uint)src_off;
    cl_int rc = mpcl_kernel_args(k, 3 + GEO_N, sizeof(cl_mem), &src->mem, sizeof off, &off,
                                 sizeof(cl_mem), &dst, GEO_ARGS(geo));
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch_1d(ctx, k, op, items);
}

/* col (C*R*S, NB*P) from images i0 .. i0+nb-1 of x (B, C, H, W). */
static mpcl_status im2col(mpcl_context *ctx, const char *op, cl_mem col, const mpcl_tensor *x,
                          const conv_dims *d, size_t i0, size_t nb)
{
    /* 16-bit storage and x ending on a 32-bit word: taps gathered as words */
    const char *name = mpcl_storage_dtype(ctx) != MPCL_F32 && x->numel % 2 == 0 ? "conv_im2col_pairs"
                                                                             : "conv_im2col";
    return relayout(ctx, op, name, x, i0 * d->c * d->h * d->w, col, d, nb,
                    d->c * d->r * d->s * nb * d->oh * d->ow);
}

static mpcl_status im2col_forward(mpcl_context *ctx, const char *op, mpcl_tensor *y,
                                  const mpcl_tensor *x, const mpcl_tensor *w, const mpcl_tensor *b,
                                  const conv_dims *d, size_t nb_max)
{
    const mpcl_dtype dt = mpcl_storage_dtype(ctx);
    const size_t es = mpcl_dtype_size(dt), crs = d->c * d->r * d->s, p = d->oh * d->ow;
    cl_mem col, yt; /* (C*R*S, N), (K, N) */
    mpcl_status s = mpcl_scratch(ctx, SLOT_COL, crs * nb_max * p * es, &col);
    if (s == MPCL_OK)
        s = mpcl_scratch(ctx, SLOT_YT, d->k * nb_max * p * es, &yt);
    if (s != MPCL_OK)
        return s;
    cl_kernel gather;
    s = mpcl_kernel_get(ctx, "conv", mpcl_ctx_variant(ctx), "conv_gather_out", &gather);
    if (s != MPCL_OK)
        return s;
    cl_uint has_bias = b != NULL;
    cl_mem bmem = b ? b->mem : w->mem; /* not read without a bias */
    for (size_t i0 = 0; i0 < d->b && s == MPCL_OK; i0 += nb_max) {
        const size_t nb = d->b - i0 < nb_max ? d->b - i0 : nb_max, n = nb * p;
        s = im2col(ctx, op, col, x, d, i0, nb);
        if (s == MPCL_OK) /* yt (K, N) = w (K, CRS) * col (CRS, N) */
            s = mpcl_gemm_raw(ctx, op, dt, 0, 0, d->k, n, crs, 1.0f, w->mem, 0, crs, col, 0, n,
                              0.0f, yt, 0, n);
        if (s != MPCL_OK)
            break;
        conv_geo geo = make_geo(d, nb);
        cl_uint y_off = (cl_uint)(i0 * d->k * p);
        cl_int rc = mpcl_kernel_args(gather, 5 + GEO_N, sizeof(cl_mem), &yt, /* (K, N) */
                                     sizeof(cl_mem), &bmem,           /* (K) */
                                     sizeof has_bias, &has_bias,
                                     sizeof(cl_mem), &y->mem,         /* (B, K, OH, OW) */
                                     sizeof y_off, &y_off,
                                     GEO_ARGS(geo));
        if (rc != CL_SUCCESS)
            return arg_error(ctx, op, rc);
        s = mpcl_launch_1d(ctx, gather, op, nb * d->k * p);
    }
    return s;
}

/* dyt (K, NB*P) from images i0 .. i0+nb-1 of dy (B, K, OH, OW). */
static mpcl_status scatter_dy(mpcl_context *ctx, const char *op, cl_mem dyt, const mpcl_tensor *dy,
                              const conv_dims *d, size_t i0, size_t nb)
{
    return relayout(ctx, op, "conv_scatter_dy", dy, i0 * d->k * d->oh * d->ow, dyt, d, nb,
                    nb * d->k * d->oh * d->ow);
}

/* dx images i0 .. i0+nb-1 = col2im(dcol (C*R*S, NB*P)). */
static mpcl_status col2im(mpcl_context *ctx, const char *op, mpcl_tensor *dx, cl_mem dcol,
                          const conv_dims *d, size_t i0, size_t nb)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "conv", mpcl_ctx_variant(ctx), "conv_col2im", &k);
    if (s != MPCL_OK)
        return s;
    conv_geo geo = make_geo(d, nb);
    cl_uint dx_off = (cl_uint)(i0 * d->c * d->h * d->w);
    cl_int rc = mpcl_kernel_args(k, 3 + GEO_N, sizeof(cl_mem), &dcol, /* (C*R*S, NB*P) */
                                 sizeof(cl_mem), &dx->mem,     /* (B, C, H, W) */
                                 sizeof dx_off, &dx_off,
                                 GEO_ARGS(geo));
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch_1d(ctx, k, op, nb * d->c * d->h * d->w);
}

static mpcl_status im2col_backward(mpcl_context *ctx, const char *op, mpcl_tensor *dx,
                                   mpcl_tensor *dw, const mpcl_tensor *dy, const mpcl_tensor *x,
                                   const mpcl_tensor *w, const conv_dims *d, size_t nb_max)
{
    const mpcl_dtype dt = mpcl_storage_dtype(ctx);
    const size_t es = mpcl_dtype_size(dt), crs = d->c * d->r * d->s, p = d->oh * d->ow;
    cl_mem col = NULL, dyt = NULL, dcol = NULL; /* (C*R*S, N), (K, N), (C*R*S, N) */
    mpcl_status s = mpcl_scratch(ctx, SLOT_YT, d->k * nb_max * p * es, &dyt);
    if (s == MPCL_OK && dx)
        s = mpcl_scratch(ctx, SLOT_DCOL, crs * nb_max * p * es, &dcol);
    if (s == MPCL_OK && dw)
        s = mpcl_scratch(ctx, SLOT_COL, crs * nb_max * p * es, &col);
    for (size_t i0 = 0; i0 < d->b && s == MPCL_OK; i0 += nb_max) {
        const size_t nb = d->b - i0 < nb_max ? d->b - i0 : nb_max, n = nb * p;
        s = scatter_dy(ctx, op, dyt, dy, d, i0, nb);
        if (s == MPCL_OK && dx) {
            /* dcol (CRS, N) = w (K, CRS)^T * dyt (K, N) */
            s = mpcl_gemm_raw(ctx, op, dt, 1, 0, crs, n, d->k, 1.0f, w->mem, 0, crs, dyt, 0, n,
                              0.0f, dcol, 0, n);
            if (s == MPCL_OK)
                s = col2im(ctx, op, dx, dcol, d, i0, nb);
        }
        if (s == MPCL_OK && dw) {
            s = im2col(ctx, op, col, x, d, i0, nb);
            if (s == MPCL_OK) /* dw (K, CRS) += dyt (K, N) * col (CRS, N)^T */
                s = mpcl_gemm_raw(ctx, op, dt, 0, 1, d->k, crs, n, 1.0f, dyt, 0, n, col, 0, n,
                                  1.0f, dw->mem, 0, crs);
        }
    }
    return s;
}

/* ------------------------------------------------------------ public ops */

mpcl_status mpcl_conv2d_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                const mpcl_tensor *w, const mpcl_tensor *b,
                                const mpcl_conv2d_params *p)
{
    static const char op[] = "mpcl_conv2d_forward";
    conv_dims d;
    conv_algo algo;
    size_t cap;
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s == MPCL_OK)
        s = check_conv(ctx, op, x, w, p, &d);
    if (s != MPCL_OK)
        return s;
    const size_t bdims[1] = {d.k}, ydims[4] = {d.b, d.k, d.oh, d.ow};
    if (b)
        s = check_against(ctx, op, "b", b, 1, bdims, "w", w);
    if (s == MPCL_OK)
        s = check_against(ctx, op, "y", y, 4, ydims, "x", x);
    if (s == MPCL_OK)
        s = check_int_range(ctx, op, &d);
    if (s == MPCL_OK)
        s = pick_algo(ctx, op, &d, &algo);
    if (s == MPCL_OK)
        s = chunk_cap_from_env(ctx, op, &cap);
    if (s != MPCL_OK)
        return s;
    if (algo == CONV_DIRECT)
        return direct_forward(ctx, op, y, x, w, b, &d);
    return im2col_forward(ctx, op, y, x, w, b, &d, chunk_images(ctx, &d, cap));
}

mpcl_status mpcl_conv2d_backward(mpcl_context *ctx, mpcl_tensor *dx, mpcl_tensor *dw,
                                 mpcl_tensor *db, const mpcl_tensor *dy, const mpcl_tensor *x,
                                 const mpcl_tensor *w, const mpcl_conv2d_params *p)
{
    static const char op[] = "mpcl_conv2d_backward";
    conv_dims d;
    conv_algo algo;
    size_t cap;
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s == MPCL_OK)
        s = check_conv(ctx, op, x, w, p, &d);
    if (s != MPCL_OK)
        return s;
    const size_t dydims[4] = {d.b, d.k, d.oh, d.ow}, bdims[1] = {d.k};
    s = check_against(ctx, op, "dy", dy, 4, dydims, "x", x);
    if (s == MPCL_OK && dx)
        s = check_against(ctx, op, "dx", dx, 4, x->shape, "x", x);
    if (s == MPCL_OK && dw)
        s = check_against(ctx, op, "dw", dw, 4, w->shape, "w", w);
    if (s == MPCL_OK && db)
        s = check_against(ctx, op, "db", db, 1, bdims, "w", w);
    if (s == MPCL_OK)
        s = check_int_range(ctx, op, &d);
    if (s == MPCL_OK)
        s = pick_algo(ctx, op, &d, &algo);
    if (s == MPCL_OK)
        s = chunk_cap_from_env(ctx, op, &cap);
    if (s != MPCL_OK)
        return s;
    if (algo == CONV_DIRECT) /* db is fused into the weight gradient's passes */
        return direct_backward(ctx, op, dx, dw, db, dy, x, w, &d);
    if (db && (s = bias_grad(ctx, op, db, dy, &d)) != MPCL_OK)
        return s;
    if (!dx && !dw)
        return MPCL_OK;
    return im2col_backward(ctx, op, dx, dw, dy, x, w, &d, chunk_images(ctx, &d, cap));
}
