/* conv.c — 2-D convolution, forward and backward (kernels in cl/conv.cl
 * and cl/conv_direct.cl).
 *
 * Letters: B batch, C input channels, K output channels, H W input height
 * and width, OH OW output height and width, R S kernel height and width,
 * P = OH*OW output pixels per image, NB images per chunk, N = NB*P columns.
 *
 * Two algorithms (docs/ops/conv-pool.md has the measurements):
 *   im2col  per chunk of NB images (the whole batch when the scratch budget
 *           allows): col (C*R*S, N) = im2col(x); one GEMM
 *           yt (K, N) = w (K, C*R*S) * col through the GEMM router; yt back
 *           to NCHW with the bias added. Backward: dyt (K, N) = dy in GEMM
 *           layout; dw += dytt^T * colt (beta 1), from the transposed
 *           layouts dytt (N, K) and colt (N, C*R*S) that GEMM kernels read
 *           without a copy (cl/conv.cl); dcol = w^T * dyt, then
 *           col2im (a gather, no atomics) assigns dx. The kernels are built
 *           per layer geometry (sizes as -D defines) and launched in 3-D
 *           over exactly their items.
 *   direct  one work item per output (forward) or input element (dx), two
 *           passes for dw: no scratch matrix, no GEMM. For skinny layers,
 *           where GEMM's fixed costs dominate.
 * db += sum over B, OH, OW of dy in both (one work-group per channel, or
 * fused into the direct dw passes).
 * Which one each pass of a layer runs (forward; backward with or without
 * dx) is measured on the device at its first call and
 * kept in the cache directory (pick_algo); without a cache a static rule
 * (choose) applies. In the 16-bit modes im2col runs in float on cast copies
 * (float_pipeline) and im2col16 on the storage type, a third candidate.
 * im2col-dwt, a backward candidate, sums the weight gradient transposed
 * (im2col_backward).
 * MPCL_CONV_ALGO=auto|im2col|im2col-dwt|im2col16|direct overrides the choice
 * (tests use it); MPCL_CONV_CHUNK=n caps the images per im2col chunk
 * (1: a GEMM per image).
 * Scratch slots 4 (col), 5 (yt / dyt), 6 (dcol), 7 (float weights), 9
 * (float x), 10 (float dy), 11 (float dw), 12 (float db), 13 (float dw
 * transposed); 0..3 and 8 belong to the GEMM
 * router. Every sum accumulates in float. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define CONV_WG 64                       /* = CONV_WG in cl/conv.cl: the most */
#define CONV_SCRATCH_BYTES ((size_t)64 << 20) /* per scratch buffer: bounds NB */
#define CONV_DIRECT_MAX_CRS 25           /* the rule in choose() */
#define SLOT_COL 4
#define SLOT_YT 5
#define SLOT_DCOL 6
#define SLOT_PARAMS 7 /* the direct kernels' float copy of half weights and bias */
#define SLOT_XF 9     /* the im2col path's float copy of 16-bit x */
#define SLOT_DYF 10   /* ... of 16-bit dy */
#define SLOT_DWF 11   /* ... its float weight gradient, added to 16-bit dw */
#define SLOT_DBF 12   /* ... its float bias gradient */
#define SLOT_DWT 13   /* im2col-dwt's float (C*R*S, K) weight gradient */

/* CONV_IM2COL16: the im2col path on the storage type in the 16-bit modes
 * (CONV_IM2COL runs it in float there: float_pipeline()). */
/* CONV_IM2COL_DWT: im2col whose backward pass sums the weight gradient
 * transposed, from the forward layout of the column matrix (a backward
 * candidate only; its forward pass is CONV_IM2COL's). */
typedef enum { CONV_AUTO = 0, CONV_IM2COL, CONV_DIRECT, CONV_IM2COL16, CONV_IM2COL_DWT } conv_algo;

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

/* The settings (mpcl_options.conv_algo, conv_im2col, conv_chunk;
 * mpcl_conv_configure), parsed once into ctx. `what` names their source in
 * messages. */
static mpcl_status parse_algo(mpcl_context *ctx, const char *what, const char *e, int *out)
{
    if (!e || !*e || strcmp(e, "auto") == 0)
        *out = CONV_AUTO;
    else if (strcmp(e, "im2col") == 0)
        *out = CONV_IM2COL;
    else if (strcmp(e, "im2col16") == 0) /* the same as im2col in fp32 */
        *out = CONV_IM2COL16;
    else if (strcmp(e, "im2col-dwt") == 0)
        *out = CONV_IM2COL_DWT;
    else if (strcmp(e, "direct") == 0)
        *out = CONV_DIRECT;
    else
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s is \"%s\"; expected auto, im2col, im2col-dwt, im2col16 or direct",
                              what, e);
    return MPCL_OK;
}

static mpcl_status parse_im2col(mpcl_context *ctx, const char *what, const char *e, int *out)
{
    if (!e || !*e || strcmp(e, "auto") == 0)
        *out = -1;
    else if (strcmp(e, "rows") == 0 || strcmp(e, "taps") == 0)
        *out = e[0] == 'r';
    else
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s is \"%s\"; expected auto, rows or taps", what, e);
    return MPCL_OK;
}

mpcl_status mpcl_conv_settings_init(mpcl_context *ctx, const mpcl_options *opt)
{
    const char *algo = opt->conv_algo, *im2col = opt->conv_im2col;
    const char *algo_what = "mpcl_options.conv_algo", *im2col_what = "mpcl_options.conv_im2col";
    if (!algo) {
        algo = getenv("MPCL_CONV_ALGO");
        algo_what = "MPCL_CONV_ALGO";
    }
    if (!im2col) {
        im2col = getenv("MPCL_IM2COL");
        im2col_what = "MPCL_IM2COL";
    }
    mpcl_status s = parse_algo(ctx, algo_what, algo, &ctx->conv_algo);
    if (s == MPCL_OK)
        s = parse_im2col(ctx, im2col_what, im2col, &ctx->conv_rows);
    ctx->conv_chunk = opt->conv_chunk;
    const char *e = getenv("MPCL_CONV_CHUNK");
    if (s == MPCL_OK && !opt->conv_chunk && e && *e) {
        char *end = NULL;
        long long v = strtoll(e, &end, 10);
        if (*end || v < 0)
            return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                                  "MPCL_CONV_CHUNK is \"%s\"; expected a number of images >= 0", e);
        ctx->conv_chunk = (size_t)v;
    }
    return s;
}

mpcl_status mpcl_conv_configure(mpcl_context *ctx, const char *algo, const char *im2col, size_t chunk)
{
    static const char op[] = "mpcl_conv_configure";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    int a = ctx->conv_algo, r = ctx->conv_rows;
    if (algo)
        s = parse_algo(ctx, "mpcl_conv_configure: algo", algo, &a);
    if (s == MPCL_OK && im2col)
        s = parse_im2col(ctx, "mpcl_conv_configure: im2col", im2col, &r);
    if (s != MPCL_OK)
        return s;
    ctx->conv_algo = a;
    ctx->conv_rows = r;
    if (chunk != MPCL_CONV_KEEP)
        ctx->conv_chunk = chunk;
    return MPCL_OK;
}

/* The algorithm the settings force; CONV_AUTO: measured. */
static conv_algo forced_algo(const mpcl_context *ctx)
{
    conv_algo a = (conv_algo)ctx->conv_algo;
    return a == CONV_IM2COL16 && mpcl_storage_dtype(ctx) == MPCL_F32 ? CONV_IM2COL : a;
}

/* The static rule, used without a cache directory (pick_algo measures
 * otherwise), from measurements on PoCL (CPU, docs/ops/conv-pool.md): direct
 * when the reduction per output, C*R*S, is short (one-channel first layers
 * up to 5x5: 25 measured faster direct, 27 = 3x3x3 faster with im2col),
 * where GEMM's fixed costs (im2col traffic, layout passes, CLBlast's
 * launches, an M = C*R*S too small to tile) outweigh its arithmetic speed;
 * im2col + GEMM otherwise. One choice for all three passes. */
static conv_algo choose(const conv_dims *d)
{
    return d->c * d->r * d->s <= CONV_DIRECT_MAX_CRS ? CONV_DIRECT : CONV_IM2COL;
}

/* ----------------------------------------------------------- launching */

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

/* The kernels of cl/conv.cl built for d's geometry (every size a -D
 * define; the image count stays an argument). */
static void conv_defines(const conv_dims *d, char *dst, size_t len)
{
    mpcl_strfmt(dst, len,
                "-DCONV_C=%zu -DCONV_H=%zu -DCONV_W=%zu -DCONV_K=%zu -DCONV_R=%zu -DCONV_S=%zu "
                "-DCONV_OH=%zu -DCONV_OW=%zu -DCONV_SH=%d -DCONV_SW=%d -DCONV_PH=%d -DCONV_PW=%d "
                "-DCONV_DH=%d -DCONV_DW=%d",
                d->c, d->h, d->w, d->k, d->r, d->s, d->oh, d->ow, d->p.stride_h, d->p.stride_w,
                d->p.pad_h, d->p.pad_w, d->p.dilation_h, d->p.dilation_w);
}

/* name of cl/conv.cl for d, built in the context's variant, or with f32 in
 * the fp32 one (the 16-bit modes' float pipeline). */
static mpcl_status conv_kernel_v(mpcl_context *ctx, const conv_dims *d, int f32, const char *name,
                                 cl_kernel *k)
{
    char defs[MPCL_SPEC_DEFINES_LEN];
    conv_defines(d, defs, sizeof defs);
    return mpcl_kernel_get_spec(ctx, "conv", f32 ? MPCL_VARIANT_FP32 : mpcl_ctx_variant(ctx), defs,
                                name, k);
}

static mpcl_status conv_kernel(mpcl_context *ctx, const conv_dims *d, const char *name,
                               cl_kernel *k)
{
    return conv_kernel_v(ctx, d, 0, name, k);
}

/* db (K) += sum over B, OH, OW of dy (B, K, OH, OW), both the storage
 * type, or with f32 both float. */
static mpcl_status bias_grad_mem(mpcl_context *ctx, const char *op, cl_mem db, cl_mem dy, int f32,
                                 const conv_dims *d)
{
    cl_kernel k;
    mpcl_status s = conv_kernel_v(ctx, d, f32, "conv_bias_grad", &k);
    if (s != MPCL_OK)
        return s;
    cl_int nb = (cl_int)d->b;
    cl_int rc = mpcl_kernel_args(k, 3, sizeof(cl_mem), &dy, /* (B, K, OH, OW) */
                                 sizeof(cl_mem), &db,       /* (K) */
                                 sizeof nb, &nb);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return launch_groups(ctx, k, op, d->k);
}

static mpcl_status bias_grad(mpcl_context *ctx, const char *op, mpcl_tensor *db,
                             const mpcl_tensor *dy, const conv_dims *d)
{
    return bias_grad_mem(ctx, op, db->mem, dy->mem, 0, d);
}

/* t as float: t's own buffer in fp32, else a float copy in `slot`. */
static mpcl_status as_float(mpcl_context *ctx, const char *op, const mpcl_tensor *t, int slot,
                            cl_mem *out)
{
    if (t->dtype == MPCL_F32) {
        *out = t->mem;
        return MPCL_OK;
    }
    mpcl_status s = mpcl_scratch(ctx, slot, t->numel * sizeof(cl_float), out);
    return s == MPCL_OK ? mpcl_cast_raw(ctx, op, 1, t->mem, *out, t->numel) : s;
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
    if (s == MPCL_OK)
        s = as_float(ctx, op, x, SLOT_COL, &xm);
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
        s = as_float(ctx, op, dy, SLOT_YT, &dym);
        if (s == MPCL_OK)
            s = as_float(ctx, op, x, SLOT_DCOL, &xm);
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

/* The im2col kernels: IM2COL_TAPS one item per entry (conv_im2col, or
 * conv_im2col_pairs), IM2COL_ROWS one item per column-matrix row and image
 * (conv_im2col_rows: stride 1 across only), IM2COL_T the transposed
 * layout. */
enum { IM2COL_TAPS, IM2COL_ROWS, IM2COL_T };

/* col (C*R*S, NB*P) from images i0 .. i0+nb-1 of x (B, C, H, W) of numel
 * elements with kernel `kind`, or with IM2COL_T its transpose colt
 * (NB*P, C*R*S); with f32 x and col are float (the float pipeline), else
 * the storage type. */
static mpcl_status im2col_run(mpcl_context *ctx, const char *op, int kind, cl_mem col, cl_mem x,
                              size_t numel, int f32, const conv_dims *d, size_t i0, size_t nb)
{
    /* 16-bit storage and x ending on a 32-bit word: taps gathered as words */
    const int pairs = !f32 && mpcl_storage_dtype(ctx) != MPCL_F32 && numel % 2 == 0;
    const int transposed = kind == IM2COL_T, rows = kind == IM2COL_ROWS;
    const char *name = transposed ? (pairs ? "conv_im2col_t_pairs" : "conv_im2col_t")
                       : rows     ? "conv_im2col_rows"
                                  : (pairs ? "conv_im2col_pairs" : "conv_im2col");
    cl_kernel k;
    mpcl_status s = conv_kernel_v(ctx, d, f32, name, &k);
    if (s != MPCL_OK)
        return s;
    cl_uint off = (cl_uint)(i0 * d->c * d->h * d->w);
    cl_int nbi = (cl_int)nb;
    cl_int rc = mpcl_kernel_args(k, 4, sizeof(cl_mem), &x, /* (B, C, H, W) */
                                 sizeof off, &off, sizeof(cl_mem), &col, sizeof nbi, &nbi);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    if (transposed)
        return mpcl_launch_rows(ctx, k, op, d->c * d->r * d->s, d->oh * d->ow, nb);
    if (rows) { /* an item a work-group: each copies its rows with vectors */
        const size_t global[2] = {d->c * d->r * d->s, nb}, local[2] = {1, 1};
        return mpcl_launch(ctx, k, op, 2, global, local);
    }
    return mpcl_launch_rows(ctx, k, op, d->oh * d->ow, 1, nb * d->c * d->r * d->s);
}

/* MPCL_IM2COL=auto|rows|taps: which im2col kernel runs where both apply
 * (-1 auto, 1 rows, 0 taps). */
/* col (C*R*S, NB*P) from images i0 .. i0+nb-1 of x, or with transposed
 * colt (NB*P, C*R*S): im2col_run with the kernel that applies; where two
 * do (the forward layout at stride 1 across), the rows kernel when rows
 * is set. */
static mpcl_status im2col(mpcl_context *ctx, const char *op, cl_mem col, cl_mem x, size_t numel,
                          int f32, const conv_dims *d, size_t i0, size_t nb, int transposed,
                          int rows)
{
    const int kind = transposed                    ? IM2COL_T
                     : rows && d->p.stride_w == 1 ? IM2COL_ROWS
                                                  : IM2COL_TAPS;
    return im2col_run(ctx, op, kind, col, x, numel, f32, d, i0, nb);
}

/* dx images i0 .. i0+nb-1 = col2im(dcol (C*R*S, NB*P)). */
static mpcl_status col2im(mpcl_context *ctx, const char *op, mpcl_tensor *dx, cl_mem dcol,
                          const conv_dims *d, size_t i0, size_t nb)
{
    cl_kernel k;
    mpcl_status s = conv_kernel(ctx, d, "conv_col2im", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint dx_off = (cl_uint)(i0 * d->c * d->h * d->w);
    cl_int nbi = (cl_int)nb;
    cl_int rc = mpcl_kernel_args(k, 4, sizeof(cl_mem), &dcol, sizeof nbi, &nbi,
                                 sizeof(cl_mem), &dx->mem, /* (B, C, H, W) */
                                 sizeof dx_off, &dx_off);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch_rows(ctx, k, op, d->w, d->h, nb * d->c);
}

/* MPCL_CONV_CHUNK=n caps the images per im2col chunk (n = 1: one GEMM per
 * image); unset or 0: no cap beyond the scratch budget. */
/* Images per chunk: as many as keep each scratch matrix within
 * CONV_SCRATCH_BYTES and its element count within int, at least 1, at most
 * cap (0: no cap). The scratch matrices are float in every mode (the
 * 16-bit modes' float pipeline, dcol). */
static size_t chunk_images(const mpcl_context *ctx, const conv_dims *d, size_t cap)
{
    const size_t es = sizeof(cl_float);
    const size_t p = d->oh * d->ow, rows = d->c * d->r * d->s > d->k ? d->c * d->r * d->s : d->k;
    size_t budget = CONV_SCRATCH_BYTES;
    if (ctx->caps.max_alloc_bytes && budget > ctx->caps.max_alloc_bytes / 2)
        budget = (size_t)(ctx->caps.max_alloc_bytes / 2); /* scratch rounds up to a power of two */
    size_t nb = budget / (rows * p * es);
    if (nb > ((size_t)INT_MAX - 16 * rows) / (rows * p)) /* conv_ld may add 16 per row */
        nb = ((size_t)INT_MAX - 16 * rows) / (rows * p);
    if (cap && nb > cap)
        nb = cap;
    if (nb < 1)
        nb = 1;
    return nb < d->b ? nb : d->b;
}

/* A (P, K, nb) launch of a layout kernel of cl/conv.cl (conv_gather_out,
 * conv_scatter_dy) over nb images, its arguments set. */
static mpcl_status launch_pkb(mpcl_context *ctx, const char *op, cl_kernel k, const conv_dims *d,
                              size_t nb)
{
    return mpcl_launch_rows(ctx, k, op, d->oh * d->ow, d->k, nb);
}

/* The row length of the (rows, nb*P) scratch matrices (col, yt, dyt, dcol):
 * CONV_LD in cl/conv.cl, rows off a multiple of 4 KiB of floats. */
static size_t conv_ld(size_t n)
{
    return n % 1024 == 0 ? n + 16 : n;
}

/* The 16-bit modes run the im2col path in float: x, dy and the weights
 * are cast to float scratch copies once per call (a few hundred thousand
 * elements), im2col, the layout kernels and the GEMMs are the fp32 builds
 * on them, and only the results (y, dx, dw) are rounded to the storage
 * type, once. The column matrix is read by its GEMM once per block of
 * rows and has R*S entries per input element: converting it there cost
 * more than the cast (LeNet-5's 16 x 6400 x 150 forward GEMM: 0.63 ms in
 * 16-bit against 0.30 in float on PoCL), and a 16-bit col saved only
 * memory traffic these CPU devices barely feel. Activations and
 * gradients between layers stay 16-bit. */
static int float_pipeline(const mpcl_context *ctx, conv_algo algo)
{
    return (algo == CONV_IM2COL || algo == CONV_IM2COL_DWT) && mpcl_storage_dtype(ctx) != MPCL_F32;
}

static mpcl_status im2col_forward(mpcl_context *ctx, const char *op, conv_algo algo,
                                  mpcl_tensor *y, const mpcl_tensor *x, const mpcl_tensor *w,
                                  const mpcl_tensor *b, const conv_dims *d, size_t nb_max,
                                  int rows)
{
    const int f32 = float_pipeline(ctx, algo);
    const mpcl_dtype dt = f32 ? MPCL_F32 : mpcl_storage_dtype(ctx);
    const size_t es = mpcl_dtype_size(dt), crs = d->c * d->r * d->s, p = d->oh * d->ow;
    cl_mem col, yt; /* (C*R*S, N), (K, N) */
    const size_t ldm = conv_ld(nb_max * p);
    cl_mem xm = x->mem, wm = w->mem, bmem = b ? b->mem : w->mem; /* read at 0 and not used
                                                                  * without a bias */
    mpcl_status s = MPCL_OK;
    if (f32) { /* float x, weights and bias (the bias in the dw slot, free here) */
        s = as_float(ctx, op, x, SLOT_XF, &xm);
        if (s == MPCL_OK)
            s = as_float(ctx, op, w, SLOT_PARAMS, &wm);
        if (s == MPCL_OK)
            s = b ? as_float(ctx, op, b, SLOT_DWF, &bmem) : (bmem = wm, MPCL_OK);
    }
    if (s == MPCL_OK)
        s = mpcl_scratch(ctx, SLOT_COL, crs * ldm * es, &col);
    if (s == MPCL_OK)
        s = mpcl_scratch(ctx, SLOT_YT, d->k * ldm * es, &yt);
    cl_uint has_bias = b != NULL;
    for (size_t i0 = 0; i0 < d->b && s == MPCL_OK; i0 += nb_max) {
        const size_t nb = d->b - i0 < nb_max ? d->b - i0 : nb_max, n = nb * p, ld = conv_ld(n);
        cl_kernel k;
        s = im2col(ctx, op, col, xm, x->numel, f32, d, i0, nb, 0, rows);
        if (s == MPCL_OK) /* yt (K, N) = w (K, CRS) * col (CRS, N) */
            s = mpcl_gemm_raw(ctx, op, dt, 0, 0, d->k, n, crs, 1.0f, wm, 0, crs, col, 0, ld,
                              0.0f, yt, 0, ld);
        if (s == MPCL_OK)
            s = conv_kernel(ctx, d, f32 ? "conv_gather_out_f32" : "conv_gather_out", &k);
        if (s != MPCL_OK)
            break;
        cl_uint y_off = (cl_uint)(i0 * d->k * p);
        cl_int nbi = (cl_int)nb;
        cl_int rc = mpcl_kernel_args(k, 6, sizeof(cl_mem), &yt, /* (K, N) */
                                     sizeof(cl_mem), &bmem,     /* (K) */
                                     sizeof has_bias, &has_bias,
                                     sizeof(cl_mem), &y->mem,   /* (B, K, OH, OW) */
                                     sizeof y_off, &y_off, sizeof nbi, &nbi);
        if (rc != CL_SUCCESS)
            return arg_error(ctx, op, rc);
        s = launch_pkb(ctx, op, k, d, nb);
    }
    return s;
}

/* dyt (K, NB*P) from images i0 .. i0+nb-1 of dy (B, K, OH, OW), or with
 * transposed its transpose dytt (NB*P, K); f32 as for im2col. */
static mpcl_status scatter_dy(mpcl_context *ctx, const char *op, cl_mem dyt, cl_mem dy, int f32,
                              const conv_dims *d, size_t i0, size_t nb, int transposed)
{
    cl_kernel k;
    mpcl_status s =
        conv_kernel_v(ctx, d, f32, transposed ? "conv_scatter_dy_t" : "conv_scatter_dy", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint off = (cl_uint)(i0 * d->k * d->oh * d->ow);
    cl_int nbi = (cl_int)nb;
    cl_int rc = mpcl_kernel_args(k, 4, sizeof(cl_mem), &dy, sizeof off, &off,
                                 sizeof(cl_mem), &dyt, sizeof nbi, &nbi);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    if (transposed)
        return mpcl_launch_rows(ctx, k, op, d->k, d->oh * d->ow, nb);
    return launch_pkb(ctx, op, k, d, nb);
}

/* dw (K, C*R*S) += dwt (C*R*S, K), both float: im2col-dwt's weight
 * gradient. */
static mpcl_status add_dwt(mpcl_context *ctx, const char *op, cl_mem dw, cl_mem dwt,
                           const conv_dims *d)
{
    cl_kernel k;
    mpcl_status s = conv_kernel_v(ctx, d, 1, "conv_add_dwt", &k);
    if (s != MPCL_OK)
        return s;
    cl_int rc = mpcl_kernel_args(k, 2, sizeof(cl_mem), &dw, sizeof(cl_mem), &dwt);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, op, rc);
    return mpcl_launch_rows(ctx, k, op, d->c * d->r * d->s, d->k, 1);
}

/* dx, dw and db (each may be NULL) on the im2col path. The weight
 * gradient, dw (K, CRS) += dy (K, N) col (CRS, N)^T, sums over N = NB*P,
 * the long index; GEMM kernels of the outer-product kind want it as the
 * rows of both operands. im2col and im2col16 write both transposed
 * (dytt (N, K), colt (N, CRS)) and sum dw itself; im2col-dwt sums its
 * transpose dwt (CRS, K) = col (CRS, N) dytt (N, K) from the forward
 * layout of col into float scratch and adds it to dw transposed. Which is
 * faster depends on the layer and the device (wide-cnn's 32->64 layer on
 * PoCL: im2col-dwt; LeNet-5's: im2col), so it is a measured candidate. */
static mpcl_status im2col_backward(mpcl_context *ctx, const char *op, conv_algo algo,
                                   mpcl_tensor *dx, mpcl_tensor *dw, mpcl_tensor *db,
                                   const mpcl_tensor *dy, const mpcl_tensor *x,
                                   const mpcl_tensor *w, const conv_dims *d, size_t nb_max,
                                   int rows)
{
    const int f32 = float_pipeline(ctx, algo);
    const mpcl_dtype dt = f32 ? MPCL_F32 : mpcl_storage_dtype(ctx);
    const size_t es = mpcl_dtype_size(dt), crs = d->c * d->r * d->s, p = d->oh * d->ow;
    cl_mem col = NULL, dyt = NULL, dcol = NULL, dwt = NULL; /* (C*R*S, N), (K, N), (C*R*S, N),
                                                               * (C*R*S, K) */
    const int dwt_form = algo == CONV_IM2COL_DWT;
    cl_mem xm = x->mem, dym = dy->mem, wm = w->mem, dwm = dw ? dw->mem : NULL;
    const size_t ldm = conv_ld(nb_max * p);
    mpcl_status s = MPCL_OK;
    /* db from the float copy of dy where the pipeline makes one */
    if (db && !(f32 && (dx || dw)))
        s = bias_grad(ctx, op, db, dy, d);
    if (s != MPCL_OK || (!dx && !dw))
        return s;
    if (f32) { /* float dy, db, x and dw, weights (for dx) */
        s = as_float(ctx, op, dy, SLOT_DYF, &dym);
        cl_mem dbm;
        if (s == MPCL_OK && db) /* db += the float sum, rounded once */
            s = as_float(ctx, op, db, SLOT_DBF, &dbm);
        if (s == MPCL_OK && db)
            s = bias_grad_mem(ctx, op, dbm, dym, 1, d);
        if (s == MPCL_OK && db)
            s = mpcl_cast_raw(ctx, op, 0, dbm, db->mem, db->numel);
        if (s == MPCL_OK && dw)
            s = as_float(ctx, op, x, SLOT_XF, &xm);
        if (s == MPCL_OK && dw)
            s = as_float(ctx, op, dw, SLOT_DWF, &dwm);
        if (s == MPCL_OK && dx)
            s = as_float(ctx, op, w, SLOT_PARAMS, &wm);
    }
    if (s == MPCL_OK)
        s = mpcl_scratch(ctx, SLOT_YT, d->k * ldm * es, &dyt);
    if (s == MPCL_OK && dx) /* float in every mode (conv_col2im) */
        s = mpcl_scratch(ctx, SLOT_DCOL, crs * ldm * sizeof(cl_float), &dcol);
    if (s == MPCL_OK && dw)
        s = mpcl_scratch(ctx, SLOT_COL, crs * ldm * es, &col);
    if (s == MPCL_OK && dw && dwt_form)
        s = mpcl_scratch(ctx, SLOT_DWT, crs * d->k * sizeof(cl_float), &dwt);
    for (size_t i0 = 0; i0 < d->b && s == MPCL_OK; i0 += nb_max) {
        const size_t nb = d->b - i0 < nb_max ? d->b - i0 : nb_max, n = nb * p, ld = conv_ld(n);
        if (dw) { /* first, while dyt's slot is free for dytt (N, K) */
            s = scatter_dy(ctx, op, dyt, dym, f32, d, i0, nb, 1);
            if (s == MPCL_OK)
                s = im2col(ctx, op, col, xm, x->numel, f32, d, i0, nb, !dwt_form, rows);
            if (s == MPCL_OK && dwt_form) { /* float: dt is MPCL_F32 here */
                /* dwt (CRS, K) = col (CRS, N) * dytt (N, K); dw += dwt^T */
                s = mpcl_gemm_raw(ctx, op, dt, 0, 0, crs, d->k, n, 1.0f, col, 0, ld, dyt, 0,
                                  d->k, 0.0f, dwt, 0, d->k);
                if (s == MPCL_OK)
                    s = add_dwt(ctx, op, dwm, dwt, d);
            } else if (s == MPCL_OK) {
                /* dw (K, CRS) += dytt (N, K)^T * colt (N, CRS) */
                s = mpcl_gemm_raw(ctx, op, dt, 1, 0, d->k, crs, n, 1.0f, dyt, 0, d->k, col, 0,
                                  crs, 1.0f, dwm, 0, crs);
            }
        }
        if (s == MPCL_OK && dx) {
            s = scatter_dy(ctx, op, dyt, dym, f32, d, i0, nb, 0);
            /* dcol (CRS, N) = w (K, CRS)^T * dyt (K, N), float */
            if (s == MPCL_OK)
                s = mpcl_gemm_raw_c32(ctx, op, dt, 1, 0, crs, n, d->k, 1.0f, wm, 0, crs, dyt, 0,
                                      ld, 0.0f, dcol, 0, ld);
            if (s == MPCL_OK)
                s = col2im(ctx, op, dx, dcol, d, i0, nb);
        }
    }
    if (s == MPCL_OK && dwm != (dw ? dw->mem : NULL)) /* the float sum, rounded once */
        s = mpcl_cast_raw(ctx, op, 0, dwm, dw->mem, dw->numel);
    return s;
}

/* ------------------------------------------- measured choice per layer */

/* The first forward call of a layer geometry (sizes, stride, padding,
 * dilation and batch) in a context with a cache directory, and its first
 * backward call with and without an input gradient, each time every
 * algorithm on that pass at the layer's real shape, on x and w and on
 * zeroed temporary buffers: forward and backward are separate verdicts,
 * because a layer's two passes may favour different algorithms and a
 * first layer needs no dx (direct's dx pass is its slowest: measured as
 * one forward and backward with dx, a first layer of the seed CNN in
 * fp16-storage took im2col, at 0.4x of direct's training speed). Each warms up
 * CHOICE_WARMUPS times on the whole batch (program builds, scratch, CLBlast's kernels: a
 * build left to a timed run would decide the verdict), then they run CHOICE_REPS times
 * each on the whole batch, alternating, host clock around clFinish; the
 * lower best time wins. A candidate that fails loses; a direct run, or its
 * forward pass alone, that takes more than CHOICE_CUTOFF times im2col's
 * best stops direct there (it loses): on wide layers, where direct is
 * slow, that costs one forward pass of it. A winning im2col or im2col-dwt
 * (the paths that sum dw in float, so chunks add no rounding) then tries
 * half its chunk of images, and half again (measure_algo: until a half is
 * CHOICE_CHUNK_STOP slower, a smaller chunk winning when CHOICE_CHUNK_GAIN
 * faster): a chunk whose column matrix stays in the caches between im2col
 * and the GEMMs can beat one GEMM over the batch (wide-cnn's 32->64 layer
 * on PoCL: 8-16 images of 64). The verdict is kept in
 * the context and in <cache dir>/conv-<variant>-<device hash>.txt:
 *   mpcl-conv 3
 *   ALGO NB ROWS PASS B C H W K R S SH SW PH PW DH DW   (one line per layer and pass)
 * ALGO direct, im2col, im2col-dwt (backward passes) or im2col16; NB the
 * images per chunk, 0 for the most that fit (chunk_images); ROWS 1 when
 * conv_im2col_rows writes a forward-layout column matrix (where it
 * applies), 0 for the tap kernel, measured last at the chosen chunk;
 * PASS 0 forward, 1 backward with dx, 2 backward without dx.
 * written through a temporary file and a rename, read by later contexts on
 * the same platform, device and driver. A file that does not parse is
 * ignored (and replaced on the next write), so a corrupt one means a new
 * measurement. Without a cache (MPCL_NO_CACHE, no_cache: oclgrind runs)
 * nothing is measured and the static rule choose() applies. */
#define CHOICE_REPS 3
/* untimed runs of each candidate first: with one, a process on a cold
 * cache once chose im2col16 for LeNet-5's 6->16 backward pass in
 * fp16-storage on PoCL, which trains at 0.83x of fp32 against 0.88-0.92x
 * with the float im2col that warm processes choose */
#define CHOICE_WARMUPS 2
#define CHOICE_CUTOFF 3.0
/* a smaller chunk wins only when this much faster (noise) */
#define CHOICE_CHUNK_GAIN 1.03
#define CHOICE_CHUNK_STOP 1.25
/* halves tried while a chunk's GEMMs keep this many columns (N = NB*P):
 * every chunk size is a new set of GEMM shapes, each measured by the GEMM
 * router at its first call, and narrower products are not worth that */
#define CHOICE_CHUNK_MIN_N 1024
#define CHOICE_FIELDS 14 /* the pass and the sizes after ALGO */

static void choice_fields(const conv_dims *d, int pass, unsigned long long v[CHOICE_FIELDS])
{
    const unsigned long long f[CHOICE_FIELDS] = {
        (unsigned)pass, d->b, d->c, d->h, d->w, d->k, d->r, d->s, (unsigned)d->p.stride_h,
        (unsigned)d->p.stride_w, (unsigned)d->p.pad_h, (unsigned)d->p.pad_w,
        (unsigned)d->p.dilation_h, (unsigned)d->p.dilation_w};
    memcpy(v, f, sizeof f);
}

static uint64_t choice_key(const conv_dims *d, int pass)
{
    unsigned long long v[CHOICE_FIELDS];
    choice_fields(d, pass, v);
    return mpcl_hash64(v, sizeof v, MPCL_HASH_SEED);
}

static void choice_path(const mpcl_context *ctx, char *dst, size_t len)
{
    mpcl_strfmt(dst, len, "%s/conv-%s-%016llx.txt", ctx->cache_dir,
                mpcl_variant_name(mpcl_ctx_variant(ctx)), (unsigned long long)mpcl_device_hash(ctx));
}

static const char *algo_name(conv_algo a)
{
    return a == CONV_DIRECT       ? "direct"
           : a == CONV_IM2COL16   ? "im2col16"
           : a == CONV_IM2COL_DWT ? "im2col-dwt"
                                  : "im2col";
}

/* One line of the cache file: the layer's fields, their key, the verdict. */
#define CHOICE_FILE_MAX 256 /* lines read at most */
typedef struct {
    uint64_t key;
    conv_algo algo;
    unsigned long long nb;   /* images per chunk, 0: the most that fit */
    unsigned long long rows; /* 1: conv_im2col_rows writes the forward col */
    unsigned long long v[CHOICE_FIELDS];
} choice_line;

/* Reads the cache file into lines[]; returns the count, 0 when the file is
 * missing or does not parse. */
static size_t choice_read(const mpcl_context *ctx, choice_line *lines)
{
    char path[MPCL_PATH_LEN + 96], buf[512];
    choice_path(ctx, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = 0;
    int ok = fgets(buf, sizeof buf, f) && strcmp(buf, "mpcl-conv 3\n") == 0;
    while (ok && n < CHOICE_FILE_MAX && fgets(buf, sizeof buf, f)) {
        choice_line *l = &lines[n];
        char name[16];
        unsigned long long *v = l->v;
        static const conv_algo known[] = {CONV_IM2COL, CONV_DIRECT, CONV_IM2COL16,
                                          CONV_IM2COL_DWT};
        int used = 0;
        int got = sscanf(buf,
                         "%15s %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu "
                         "%llu %llu %llu%n",
                         name, &l->nb, &l->rows, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
                         &v[7], &v[8], &v[9], &v[10], &v[11], &v[12], &v[13], &used);
        l->algo = CONV_AUTO;
        for (size_t a = 0; a < sizeof known / sizeof known[0]; a++)
            if (strcmp(name, algo_name(known[a])) == 0)
                l->algo = known[a];
        /* im2col-dwt is a backward verdict only; a chunk only for the
         * float-summing im2col paths, at most the batch */
        ok = got == 3 + CHOICE_FIELDS && strcmp(buf + used, "\n") == 0 && v[0] <= 2 &&
             l->rows <= 1 && l->algo != CONV_AUTO && !(l->algo == CONV_IM2COL_DWT && v[0] == 0) &&
             l->nb <= v[1] &&
             (l->nb == 0 || l->algo == CONV_IM2COL || l->algo == CONV_IM2COL_DWT);
        if (!ok)
            break;
        l->key = mpcl_hash64(v, sizeof l->v, MPCL_HASH_SEED);
        n++;
    }
    ok = ok && !ferror(f);
    fclose(f);
    return ok ? n : 0;
}

/* Adds d's verdict to the cache file (the lines it holds that parse, with
 * any older verdict for the same layer dropped). Failures are ignored: the
 * next context measures again. */
static void choice_write(mpcl_context *ctx, const conv_dims *d, int pass, conv_algo algo,
                         size_t nb, int rows)
{
    choice_line *have = malloc(CHOICE_FILE_MAX * sizeof *have);
    if (!have)
        return;
    size_t n = choice_read(ctx, have);
    const uint64_t key = choice_key(d, pass);
    char path[MPCL_PATH_LEN + 96], tmp[MPCL_CACHE_TMP_LEN];
    choice_path(ctx, path, sizeof path);
    FILE *f = mpcl_cache_tmp_open(ctx, path, tmp, "w");
    if (!f) {
        free(have);
        return;
    }
    int ok = fprintf(f, "mpcl-conv 3\n") > 0;
    for (size_t i = 0; i < n && ok; i++) {
        if (have[i].key == key)
            continue;
        const unsigned long long *v = have[i].v;
        ok = fprintf(f,
                     "%s %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu "
                     "%llu %llu\n",
                     algo_name(have[i].algo), have[i].nb, have[i].rows, v[0], v[1], v[2], v[3],
                     v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13]) > 0;
    }
    unsigned long long v[CHOICE_FIELDS];
    choice_fields(d, pass, v);
    ok = ok && fprintf(f,
                       "%s %llu %d %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu "
                       "%llu %llu\n",
                       algo_name(algo), (unsigned long long)nb, rows ? 1 : 0, v[0], v[1], v[2],
                       v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12],
                       v[13]) > 0;
    mpcl_cache_tmp_commit(ctx, f, ok, tmp, path);
    free(have);
}

/* A zeroed device buffer of n elements of dt as a tensor of the given
 * shape (not accounted: it lives for one measurement). */
static cl_int temp_tensor(mpcl_context *ctx, mpcl_tensor *t, mpcl_dtype dt, int ndim,
                          const size_t *shape)
{
    memset(t, 0, sizeof *t);
    t->ctx = ctx;
    t->dtype = dt;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    const size_t bytes = t->numel * mpcl_dtype_size(dt);
    cl_int rc;
    t->mem = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, bytes, NULL, &rc);
    if (rc == CL_SUCCESS) {
        const cl_uchar zero = 0;
        rc = clEnqueueFillBuffer(ctx->queue, t->mem, &zero, 1, 0, bytes, 0, NULL, NULL);
    }
    return rc;
}

/* One pass of algo on d, waited for, *t its seconds: pass 0 forward (y,
 * with db as a zero bias), 1 backward (dx, dw, db from y as dy), 2 backward
 * without dx. */
static mpcl_status run_algo(mpcl_context *ctx, const char *op, conv_algo algo, size_t nb,
                            int rows, int pass, mpcl_tensor *y, mpcl_tensor *dx, mpcl_tensor *dw,
                            mpcl_tensor *db, const mpcl_tensor *x, const mpcl_tensor *w,
                            const conv_dims *d, double *t)
{
    const double t0 = mpcl_now_s();
    mpcl_status s;
    if (pass == 0)
        s = algo == CONV_DIRECT ? direct_forward(ctx, op, y, x, w, db, d)
                                : im2col_forward(ctx, op, algo, y, x, w, db, d, nb, rows);
    else if (algo == CONV_DIRECT)
        s = direct_backward(ctx, op, pass == 1 ? dx : NULL, dw, db, y, x, w, d);
    else
        s = im2col_backward(ctx, op, algo, pass == 1 ? dx : NULL, dw, db, y, x, w, d, nb, rows);
    if (s == MPCL_OK && clFinish(ctx->queue) != CL_SUCCESS)
        s = MPCL_ERR_OPENCL;
    *t = mpcl_now_s() - t0;
    return s;
}

/* The best of CHOICE_REPS timed runs of algo on pass of d, after
 * CHOICE_WARMUPS untimed ones, in seconds; -1 when a run fails. */
static double best_of_runs(mpcl_context *ctx, const char *op, conv_algo algo, size_t nb, int rows,
                           int pass, mpcl_tensor *y, mpcl_tensor *dx, mpcl_tensor *dw,
                           mpcl_tensor *db, const mpcl_tensor *x, const mpcl_tensor *w,
                           const conv_dims *d)
{
    double best = -1.0, t;
    for (int r = 0; r < CHOICE_WARMUPS + CHOICE_REPS; r++) {
        if (run_algo(ctx, op, algo, nb, rows, pass, y, dx, dw, db, x, w, d, &t) != MPCL_OK)
            return -1.0;
        if (r >= CHOICE_WARMUPS && (best < 0.0 || t < best))
            best = t;
    }
    return best;
}

/* The fastest algorithm for pass of d on this device (CONV_AUTO when none
 * ran); for the im2col paths that sum in float, its chunk of images
 * (*nb_out 0 keeps the largest, chunk_images, else the count measured
 * faster); and where the pass writes a column matrix in the forward layout
 * at stride 1 across, whether the rows kernel writes it (*rows_out; rows_env
 * >= 0: MPCL_IM2COL's, not measured). */
static conv_algo measure_algo(mpcl_context *ctx, const char *op, const mpcl_tensor *x,
                              const mpcl_tensor *w, const conv_dims *d, int pass, int rows_env,
                              size_t *nb_out, int *rows_out)
{
    const size_t nb_max = chunk_images(ctx, d, 0);
    const int rows0 = rows_env >= 0 ? rows_env : 1;
    *nb_out = 0;
    *rows_out = rows0;
    const mpcl_dtype dt = mpcl_storage_dtype(ctx);
    const size_t ydims[4] = {d->b, d->k, d->oh, d->ow}, bdims[1] = {d->k};
    mpcl_tensor y, dx, dw, db; /* y doubles as dy */
    cl_int rc = temp_tensor(ctx, &y, dt, 4, ydims);
    if (rc == CL_SUCCESS)
        rc = temp_tensor(ctx, &dx, dt, 4, x->shape);
    else
        dx.mem = NULL;
    if (rc == CL_SUCCESS)
        rc = temp_tensor(ctx, &dw, dt, 4, w->shape);
    else
        dw.mem = NULL;
    if (rc == CL_SUCCESS)
        rc = temp_tensor(ctx, &db, dt, 1, bdims);
    else
        db.mem = NULL;
    /* warm-up (program builds, scratch, CLBlast's kernels), both on the
     * whole batch and whole: a program built for another batch or a kernel
     * first launched in a timed run (PoCL compiles at the first launch of a
     * work-group shape) would put a build into the timing and the cutoff
     * below would drop the algorithm on it */
    /* the candidates: im2col first (the reference of the cutoff), on
     * backward passes im2col-dwt, in the 16-bit modes im2col on the
     * storage type, then direct */
    conv_algo cand[4];
    size_t nc = 0;
    cand[nc++] = CONV_IM2COL;
    if (pass != 0)
        cand[nc++] = CONV_IM2COL_DWT;
    if (dt != MPCL_F32)
        cand[nc++] = CONV_IM2COL16;
    cand[nc++] = CONV_DIRECT;
    double t, best_t[4] = {-1.0, -1.0, -1.0, -1.0};
    mpcl_status st[4];
    int live = 0;
    for (size_t c = 0; c < nc; c++) {
        st[c] = rc == CL_SUCCESS ? MPCL_OK : MPCL_ERR_OPENCL;
        for (int wu = 0; wu < CHOICE_WARMUPS && st[c] == MPCL_OK; wu++)
            st[c] = run_algo(ctx, op, cand[c], nb_max, rows0, pass, &y, &dx, &dw, &db, x, w, d, &t);
        live += st[c] == MPCL_OK;
    }
    /* timed runs, alternating, so that load from elsewhere hits all */
    for (int r = 0; r < CHOICE_REPS && live; r++)
        for (size_t c = 0; c < nc; c++) {
            if (st[c] != MPCL_OK)
                continue;
            const double limit = c > 0 && best_t[0] > 0.0 ? CHOICE_CUTOFF * best_t[0] : 0.0;
            st[c] = run_algo(ctx, op, cand[c], nb_max, rows0, pass, &y, &dx, &dw, &db, x, w, d, &t);
            if (st[c] == MPCL_OK && limit > 0.0 && t > limit)
                st[c] = MPCL_ERR_STATE; /* clearly slower than im2col: no more runs */
            else if (st[c] == MPCL_OK && (best_t[c] < 0.0 || t < best_t[c]))
                best_t[c] = t;
            if (st[c] != MPCL_OK)
                live--;
        }
    conv_algo best = CONV_AUTO;
    double best_time = -1.0;
    for (size_t c = 0; c < nc; c++) /* ties go to the earlier candidate */
        if (best_t[c] >= 0.0 && (c == 0 || st[c] == MPCL_OK) &&
            (best_time < 0.0 || best_t[c] < best_time)) {
            best = cand[c];
            best_time = best_t[c];
        }
    /* the chunk: halved until a half is CHOICE_CHUNK_STOP slower than the
     * best so far (the time is not monotonic in the chunk: wide-cnn's
     * 32->64 layer on PoCL is no faster at 32 images than at 64, and
     * fastest at 8) or its GEMMs narrower than CHOICE_CHUNK_MIN_N columns;
     * a smaller chunk must be CHOICE_CHUNK_GAIN faster */
    for (size_t nb = (nb_max + 1) / 2; (best == CONV_IM2COL || best == CONV_IM2COL_DWT) &&
                                       nb_max > 1 && best_time > 0.0 &&
                                       nb * d->oh * d->ow >= CHOICE_CHUNK_MIN_N;
         nb = (nb + 1) / 2) {
        const double nb_t = best_of_runs(ctx, op, best, nb, rows0, pass, &y, &dx, &dw, &db, x, w, d);
        if (nb_t < 0.0 || nb_t > best_time * CHOICE_CHUNK_STOP)
            break;
        if (nb_t < best_time / CHOICE_CHUNK_GAIN) {
            *nb_out = nb;
            best_time = nb_t;
        }
        if (nb == 1)
            break;
    }
    /* the other im2col kernel at that chunk: the rows kernel copies runs,
     * the tap kernel gathers; which is faster depends on the device, the
     * row length and what the caches hold in the pass (timed alone, the
     * kernels ranked otherwise than in training on PoCL) */
    const int fwd_layout = pass == 0 ? best != CONV_DIRECT && best != CONV_AUTO
                                     : best == CONV_IM2COL_DWT;
    if (rows_env < 0 && fwd_layout && d->p.stride_w == 1 && best_time > 0.0) {
        const size_t nb = *nb_out ? *nb_out : nb_max;
        const double alt_t = best_of_runs(ctx, op, best, nb, !rows0, pass, &y, &dx, &dw, &db, x,
                                          w, d);
        if (alt_t >= 0.0 && alt_t < best_time / CHOICE_CHUNK_GAIN)
            *rows_out = !rows0;
    }
    clFinish(ctx->queue);
    const cl_mem mems[4] = {y.mem, dx.mem, dw.mem, db.mem};
    for (int i = 0; i < 4; i++)
        if (mems[i])
            clReleaseMemObject(mems[i]);
    return best;
}

/* The algorithm for d and its chunk of images (*nb 0: the most that fit,
 * chunk_images): MPCL_CONV_ALGO when set; else the context's verdict
 * for this layer, the cache file's, a new measurement (with a cache), or
 * the static rule (without one). Measuring never changes the context's
 * error message, and a failure to measure falls back to the rule. */
static mpcl_status pick_algo(mpcl_context *ctx, const char *op, const mpcl_tensor *x,
                             const mpcl_tensor *w, const conv_dims *d, int pass, conv_algo *out,
                             size_t *nb, int *rows)
{
    int rows_env = ctx->conv_rows;
    *nb = 0;
    *out = forced_algo(ctx);
    *rows = rows_env >= 0 ? rows_env : 1;
    if (*out != CONV_AUTO)
        return MPCL_OK;
    if (!ctx->cache_enabled) {
        *out = choose(d);
        return MPCL_OK;
    }
    const uint64_t key = choice_key(d, pass);
    const size_t kept = ctx->conv_choice_n < MPCL_CONV_CHOICES ? ctx->conv_choice_n
                                                               : MPCL_CONV_CHOICES;
    for (size_t i = 0; i < kept; i++)
        if (ctx->conv_choice[i].key == key) {
            *out = (conv_algo)ctx->conv_choice[i].algo;
            *nb = ctx->conv_choice[i].nb;
            *rows = rows_env >= 0 ? rows_env : ctx->conv_choice[i].rows;
            return MPCL_OK;
        }
    conv_algo algo = CONV_AUTO;
    size_t chunk = 0;
    int krows = 1;
    choice_line *lines = malloc(CHOICE_FILE_MAX * sizeof *lines);
    const size_t n = lines ? choice_read(ctx, lines) : 0;
    for (size_t i = n; i-- > 0 && algo == CONV_AUTO;) /* the last line for a layer counts */
        if (lines[i].key == key) {
            algo = lines[i].algo;
            chunk = (size_t)lines[i].nb;
            krows = (int)lines[i].rows;
        }
    free(lines);
    if (algo == CONV_AUTO && ctx->gemm_rec_on) {
        /* mpcl_tune_model's recording step: the GEMMs the im2col path would
         * run are what the CLBlast search needs, and a verdict measured
         * before the search would compare untuned GEMMs: nothing is
         * measured or kept */
        *out = CONV_IM2COL;
        return MPCL_OK;
    }
    if (algo != CONV_AUTO) {
        ctx->conv_cached++;
    } else {
        char saved[MPCL_ERR_LEN];
        const int prof = ctx->prof_on;
        mpcl_strfmt(saved, sizeof saved, "%s", ctx->err);
        ctx->prof_on = 0; /* the measurement is not part of the profiled work */
        algo = measure_algo(ctx, op, x, w, d, pass, rows_env, &chunk, &krows);
        ctx->prof_on = prof;
        mpcl_strfmt(ctx->err, sizeof ctx->err, "%s", saved);
        if (algo == CONV_AUTO) {
            algo = choose(d);
        } else {
            ctx->conv_measured++;
            choice_write(ctx, d, pass, algo, chunk, krows);
        }
    }
    const size_t slot = ctx->conv_choice_n++ % MPCL_CONV_CHOICES; /* the oldest when full */
    ctx->conv_choice[slot].key = key;
    ctx->conv_choice[slot].algo = (int)algo;
    ctx->conv_choice[slot].nb = chunk;
    ctx->conv_choice[slot].rows = krows;
    *out = algo;
    *nb = chunk;
    *rows = rows_env >= 0 ? rows_env : krows;
    return MPCL_OK;
}

/* ------------------------------------------------------------ public ops */

mpcl_status mpcl_conv2d_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                const mpcl_tensor *w, const mpcl_tensor *b,
                                const mpcl_conv2d_params *p)
{
    static const char op[] = "mpcl_conv2d_forward";
    conv_dims d;
    conv_algo algo;
    size_t cap, nb;
    int rows;
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
    cap = ctx->conv_chunk;
    if (s == MPCL_OK)
        s = pick_algo(ctx, op, x, w, &d, 0, &algo, &nb, &rows);
    if (s != MPCL_OK)
        return s;
    if (algo == CONV_DIRECT)
        return direct_forward(ctx, op, y, x, w, b, &d);
    return im2col_forward(ctx, op, algo, y, x, w, b, &d, chunk_images(ctx, &d, cap ? cap : nb),
                          rows);
}

mpcl_status mpcl_conv2d_backward(mpcl_context *ctx, mpcl_tensor *dx, mpcl_tensor *dw,
                                 mpcl_tensor *db, const mpcl_tensor *dy, const mpcl_tensor *x,
                                 const mpcl_tensor *w, const mpcl_conv2d_params *p)
{
    static const char op[] = "mpcl_conv2d_backward";
    conv_dims d;
    conv_algo algo;
    size_t cap, nb;
    int rows;
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
    cap = ctx->conv_chunk;
    if (s == MPCL_OK)
        s = pick_algo(ctx, op, x, w, &d, dx ? 1 : 2, &algo, &nb, &rows);
    if (s != MPCL_OK)
        return s;
    if (algo == CONV_DIRECT) /* db is fused into the weight gradient's passes */
        return direct_backward(ctx, op, dx, dw, db, dy, x, w, &d);
    return im2col_backward(ctx, op, algo, dx, dw, db, dy, x, w, &d,
                           chunk_images(ctx, &d, cap ? cap : nb), rows);
}
