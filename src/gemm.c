/* gemm.c — the GEMM router: C = alpha op(A) op(B) + beta C, row-major,
 * routed by the context's precision mode (docs/gemm.md):
 *
 *   f32 operands                 CLBlast Sgemm (StridedBatched for G > 1)
 *   f16, fp16 mode, half accum   CLBlast Hgemm (accumulates in half)
 *   f16 otherwise                FP32 accumulation on half operands, either
 *                                (convert) half -> float copies in scratch
 *                                slots 0..2, Sgemm, float -> half of C, or
 *                                (direct) convert.cl gemm_f32acc, which reads
 *                                half and sums in float
 *   bf16 (bf16 mode)             the same FP32 accumulation, with bf16.cl's
 *                                bf16 <-> float copies on the convert path
 *                                and gemm_f32acc built in the bf16 variant
 *   f16 or bf16 A, B, f32 C      (mpcl_gemm_raw_c32) FP32 accumulation, C
 *                                written as float: the own kernel built
 *                                with SG_CF, or the convert path without
 *                                C's conversions
 *
 * Letters: G batch of products, M N K the sizes of C (M, N) = op(A) (M, K)
 * op(B) (K, N). Offsets, leading dimensions and strides in elements. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#include <clblast_c.h>

/* One stored operand: `rows` x `cols` elements as it lies in memory (the
 * transpose of op(X) when transposed), leading dimension ld, the i-th of G
 * matrices at off + i * stride. */
typedef struct {
    cl_mem mem;
    size_t off, ld, stride, rows, cols;
} gemm_mat;

typedef struct {
    const char *what; /* the op, for messages */
    int trans_a, trans_b;
    size_t m, n, k, batch;
    float alpha, beta;
    gemm_mat a, b, c;
    int bf16; /* operands are bf16 (else half) on the float-accumulating paths */
    int c_f32; /* 16-bit A and B, float C (mpcl_gemm_raw_c32) */
} gemm_call;

/* fp16 mode's default accumulation (docs/gemm.md: Hgemm rounds every partial
 * sum to half, a normwise error of 1.9 % at K = 4096 against 0.04 % with
 * float sums, and conv weight gradients have K = B OH OW in the tens of
 * thousands). */
#define GEMM_FP16_DEFAULT_ACCUM MPCL_ACCUM_FLOAT

/* The float-accumulating path for half operands when the context leaves it
 * to the router (docs/gemm.md):
 * - fp16-storage: the convert path (tuned CLBlast Sgemm between
 *   conversions) measured faster than the direct kernel on every shape of
 *   docs/gemm.md's table on a device without half hardware, where every
 *   half load is a software conversion;
 * - fp16 (the device's half arithmetic verified, so half loads are
 *   native): the direct kernel, which reads half and sums in float in one
 *   pass; the convert path spends two to four extra passes over the
 *   operands, and measured 1.0x to 5x slower on a device with native half
 *   on every training shape of docs/gemm.md.
 * MPCL_GEMM_F16_PATH=convert|direct overrides both (for measuring). */
#define GEMM_F16_DEFAULT_PATH MPCL_GEMM_F16_CONVERT
#define GEMM_FP16_DEFAULT_PATH MPCL_GEMM_F16_DIRECT

/* -------------------------------------------------------------- helpers */


static mpcl_status clblast_fail(mpcl_context *ctx, const gemm_call *g, const char *routine,
                                CLBlastStatusCode st)
{
    return mpcl_set_error(ctx, MPCL_ERR_CLBLAST,
                          "%s: %s failed on M=%zu, N=%zu, K=%zu (batch %zu, trans_a %d, trans_b %d): "
                          "%s (%d)",
                          g->what, routine, g->m, g->n, g->k, g->batch, g->trans_a, g->trans_b,
                          mpcl_clblast_status_name((int)st), (int)st);
}

/* Elements from the first to one past the last element of all G matrices. */
static size_t mat_span(const gemm_mat *x, size_t batch)
{
    return (batch - 1) * x->stride + (x->rows - 1) * x->ld + x->cols;
}

/* The G matrices overlap in memory (a stride shorter than one matrix). */
static int mat_overlaps(const gemm_mat *x, size_t batch)
{
    return batch > 1 && x->stride != 0 && x->stride < (x->rows - 1) * x->ld + x->cols;
}

static mpcl_accumulation fp16_accum(const mpcl_context *ctx)
{
    return ctx->gemm_accum == MPCL_ACCUM_DEFAULT ? GEMM_FP16_DEFAULT_ACCUM : ctx->gemm_accum;
}

/* ------------------------------------------------------------- CLBlast */

/* With profiling on (mpcl_profile_enable), CLBlast's event (that of its
 * last kernel) is recorded under the routine's name. */
static void profile_clblast(mpcl_context *ctx, const char *name, cl_event *evp, CLBlastStatusCode st)
{
    if (evp && st == CLBlastSuccess)
        mpcl_profile_add(ctx, name, *evp);
}

static mpcl_status gemm_scratch(mpcl_context *ctx, int slot, size_t elems, cl_mem *out);

/* Every CLBlast GEMM of mpcl goes through here (the router, the tuner's
 * exactness check and timing, bench, probe), so what is tuned is what runs.
 *
 * mpcl's matrices are row-major. CLBlast's indirect Xgemm kernel (GEMMK 0)
 * wants C column-major: a row-major call makes it compute into a temporary
 * and transpose C back at every call, a full pass over the largest matrix
 * of a conv layer (the transpose kernels took 30 % of a wide-cnn step on
 * PoCL, more than im2col). The same product is issued instead as the
 * column-major one C^T = op(B)^T op(A)^T: C^T's column-major layout is C's
 * row-major one, B and A trade places, M and N too, and the transposition
 * flags stay. CLBlast then copies or transposes only the operands it must
 * (the same ones as before) and writes C in place. */
static void xgemm_swap(const mpcl_xgemm *x, CLBlastTranspose *ta, CLBlastTranspose *tb)
{
    *ta = x->trans_b ? CLBlastTransposeYes : CLBlastTransposeNo; /* CLBlast's A: our B */
    *tb = x->trans_a ? CLBlastTransposeYes : CLBlastTransposeNo;
}

int mpcl_clblast_run(mpcl_context *ctx, const mpcl_xgemm *x, cl_event *evp)
{
    cl_command_queue q = ctx->queue;
    CLBlastTranspose ta, tb;
    xgemm_swap(x, &ta, &tb);
    const CLBlastLayout cm = CLBlastLayoutColMajor;
    if (x->half) {
        const cl_half al = mpcl_half_from_float(x->alpha), be = mpcl_half_from_float(x->beta);
        if (x->batch <= 1)
            return CLBlastHgemm(cm, ta, tb, x->n, x->m, x->k, al, x->b, x->b_off, x->ldb, x->a, x->a_off,
                                x->lda, be, x->c, x->c_off, x->ldc, &q, evp);
        return CLBlastHgemmStridedBatched(cm, ta, tb, x->n, x->m, x->k, al, x->b, x->b_off, x->ldb,
                                          x->sb, x->a, x->a_off, x->lda, x->sa, be, x->c, x->c_off,
                                          x->ldc, x->sc, x->batch, &q, evp);
    }
    if (x->batch <= 1 && x->tmp)
        return CLBlastSgemmWithTempBuffer(cm, ta, tb, x->n, x->m, x->k, x->alpha, x->b, x->b_off, x->ldb,
                                          x->a, x->a_off, x->lda, x->beta, x->c, x->c_off, x->ldc, &q,
                                          evp, x->tmp);
    if (x->batch <= 1)
        return CLBlastSgemm(cm, ta, tb, x->n, x->m, x->k, x->alpha, x->b, x->b_off, x->ldb, x->a,
                            x->a_off, x->lda, x->beta, x->c, x->c_off, x->ldc, &q, evp);
    return CLBlastSgemmStridedBatched(cm, ta, tb, x->n, x->m, x->k, x->alpha, x->b, x->b_off, x->ldb,
                                      x->sb, x->a, x->a_off, x->lda, x->sa, x->beta, x->c, x->c_off,
                                      x->ldc, x->sc, x->batch, &q, evp);
}

size_t mpcl_clblast_temp_bytes(mpcl_context *ctx, const mpcl_xgemm *x)
{
    cl_command_queue q = ctx->queue;
    CLBlastTranspose ta, tb;
    xgemm_swap(x, &ta, &tb);
    size_t bytes = 0;
    if (x->half || x->batch > 1 ||
        CLBlastSGemmTempBufferSize(CLBlastLayoutColMajor, ta, tb, x->n, x->m, x->k, x->b_off, x->ldb,
                                   x->a_off, x->lda, x->c_off, x->ldc, &q, &bytes) != CLBlastSuccess)
        return 0;
    return bytes;
}

int mpcl_clblast_gemm(mpcl_context *ctx, int half, int trans_a, int trans_b, size_t m, size_t n,
                      size_t k, size_t batch, cl_mem a, cl_mem b, cl_mem c, cl_mem tmp)
{
    const mpcl_xgemm x = {.half = half, .trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n,
                          .k = k, .batch = batch, .alpha = 1.0f, .beta = 0.0f, .a = a, .b = b,
                          .c = c, .lda = trans_a ? m : k, .ldb = trans_b ? k : n, .ldc = n,
                          .sa = m * k, .sb = k * n, .sc = m * n, .tmp = tmp};
    return mpcl_clblast_run(ctx, &x, NULL);
}

/* The router's call as a CLBlast one. */
static mpcl_xgemm xgemm_of(const gemm_call *g, int half, cl_mem a, size_t a_off, cl_mem b,
                           size_t b_off, cl_mem c, size_t c_off)
{
    const mpcl_xgemm x = {.half = half, .trans_a = g->trans_a, .trans_b = g->trans_b, .m = g->m,
                          .n = g->n, .k = g->k, .batch = g->batch, .alpha = g->alpha,
                          .beta = g->beta, .a = a, .a_off = a_off, .lda = g->a.ld,
                          .sa = g->a.stride, .b = b, .b_off = b_off, .ldb = g->b.ld,
                          .sb = g->b.stride, .c = c, .c_off = c_off, .ldc = g->c.ld,
                          .sc = g->c.stride};
    return x;
}


/* CLBlast's indirect GEMM copies (pads, transposes) its operands into a
 * temporary buffer that it allocates and frees at every call unless the
 * caller lends one: a call on large operands then spends more host time in
 * the allocation and the first touch of its pages than the device spends
 * computing. So Sgemm runs with scratch slot MPCL_SCRATCH_GEMM_T, grown to
 * what CLBlast asks for; where that fails, CLBlast allocates as before. */
static cl_mem sgemm_temp(mpcl_context *ctx, const mpcl_xgemm *x)
{
    const size_t bytes = mpcl_clblast_temp_bytes(ctx, x);
    cl_mem t = NULL;
    if (bytes == 0)
        return NULL;
    char saved[MPCL_ERR_LEN];
    mpcl_strfmt(saved, sizeof saved, "%s", ctx->err);
    if (gemm_scratch(ctx, MPCL_SCRATCH_GEMM_T, (bytes + 3) / 4, &t) != MPCL_OK)
        t = NULL;
    mpcl_strfmt(ctx->err, sizeof ctx->err, "%s", saved); /* a failure here is not the GEMM's */
    return t;
}

mpcl_status mpcl_gemm_part_buffer(mpcl_context *ctx, size_t elems, cl_mem *out)
{
    return gemm_scratch(ctx, MPCL_SCRATCH_GEMM_T, elems, out);
}

int mpcl_sgemm_clblast(mpcl_context *ctx, const mpcl_xgemm *x0)
{
    cl_event ev;
    cl_event *evp = mpcl_profile_event(ctx, &ev);
    mpcl_xgemm x = *x0;
    x.tmp = x.batch <= 1 ? sgemm_temp(ctx, &x) : NULL;
    CLBlastStatusCode st = (CLBlastStatusCode)mpcl_clblast_run(ctx, &x, evp);
    profile_clblast(ctx, x.batch <= 1 ? "CLBlastSgemm" : "CLBlastSgemmStridedBatched", evp, st);
    return (int)st;
}

/* Runs x with mpcl's own kernel when the choice for its shape (sgemm.c:
 * MPCL_SGEMM, the cached verdict, or measured now) says so; *ran 1 then.
 * *ran 0 and MPCL_OK: the caller runs its reference path. */
static mpcl_status own_if_chosen(mpcl_context *ctx, const mpcl_xgemm *x, const char *what, int *ran)
{
    int own = 0;
    mpcl_sgemm_cfg cfg;
    *ran = 0;
    mpcl_status s = mpcl_sgemm_pick(ctx, x, what, &own, &cfg);
    if (s != MPCL_OK || !own)
        return s;
    *ran = 1;
    return mpcl_sgemm_own(ctx, x, &cfg, what);
}

/* Sgemm: mpcl's own kernel where it measured faster on this shape
 * (sgemm.c), else CLBlast. */
static mpcl_status run_sgemm(mpcl_context *ctx, const gemm_call *g, cl_mem a, size_t a_off,
                             cl_mem b, size_t b_off, cl_mem c, size_t c_off)
{
    mpcl_gemm_note_shape(ctx, 0, g->trans_a, g->trans_b, g->m, g->n, g->k, g->batch);
    const mpcl_xgemm x = xgemm_of(g, 0, a, a_off, b, b_off, c, c_off);
    int ran = 0;
    mpcl_status s = own_if_chosen(ctx, &x, g->what, &ran);
    if (s != MPCL_OK || ran)
        return s;
    CLBlastStatusCode st = (CLBlastStatusCode)mpcl_sgemm_clblast(ctx, &x);
    return st == CLBlastSuccess ? MPCL_OK
                                : clblast_fail(ctx, g, g->batch == 1 ? "CLBlastSgemm" : "CLBlastSgemmStridedBatched", st);
}

static CLBlastStatusCode run_hgemm(mpcl_context *ctx, const gemm_call *g)
{
    cl_event ev;
    cl_event *evp = mpcl_profile_event(ctx, &ev);
    mpcl_gemm_note_shape(ctx, 1, g->trans_a, g->trans_b, g->m, g->n, g->k, g->batch);
    const mpcl_xgemm x = xgemm_of(g, 1, g->a.mem, g->a.off, g->b.mem, g->b.off, g->c.mem, g->c.off);
    CLBlastStatusCode st = (CLBlastStatusCode)mpcl_clblast_run(ctx, &x, evp);
    profile_clblast(ctx, g->batch == 1 ? "CLBlastHgemm" : "CLBlastHgemmStridedBatched", evp, st);
    return st;
}

/* ------------------------------------------------- float accumulation */

/* Launches convert.cl's mat_f16_f32 or mat_f32_f16 over the G matrices of x
 * (or, when they overlap or lie back to back without gaps, span_f16_f32 /
 * span_f32_f16 over their whole span: one flat launch). */
static mpcl_status convert_mat(mpcl_context *ctx, const gemm_call *g, const gemm_mat *x,
                               int to_float, cl_mem scratch)
{
    mpcl_variant v = mpcl_ctx_variant(ctx);
    cl_kernel k;
    mpcl_status s;
    /* bf16 operands: cl/bf16.cl's kernels, with the same arguments */
    const char *fam = g->bf16 ? "bf16" : "convert";
    const char *k_span = to_float ? (g->bf16 ? "span_bf16_f32" : "span_f16_f32")
                                  : (g->bf16 ? "span_f32_bf16" : "span_f32_f16");
    const char *k_to_f = g->bf16 ? "mat_bf16_f32" : "mat_f16_f32";
    const char *k_from_f = g->bf16 ? "mat_f32_bf16" : "mat_f32_f16";
    cl_ulong off = x->off, stride = x->stride;
    cl_uint rows = (cl_uint)x->rows, cols = (cl_uint)x->cols, ld = (cl_uint)x->ld;
    cl_mem src = to_float ? x->mem : scratch, dst = to_float ? scratch : x->mem;
    /* matrices without gaps between rows or between matrices: one span */
    const int dense = x->ld == x->cols &&
                      (g->batch == 1 || x->stride == x->rows * x->ld);
    if ((to_float && mat_overlaps(x, g->batch)) || dense) {
        cl_ulong n = mat_span(x, g->batch);
        s = mpcl_kernel_get(ctx, fam, v, k_span, &k);
        if (s != MPCL_OK)
            return s;
        cl_int rc = mpcl_kernel_args(k, 4, sizeof src, &src, sizeof off, &off, sizeof n, &n,
                                     sizeof dst, &dst);
        if (rc != CL_SUCCESS)
            return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: %s arguments: %s", g->what, k_span,
                                  mpcl_cl_error_name(rc));
        return mpcl_launch_1d(ctx, k, g->what, (size_t)n);
    }
    s = mpcl_kernel_get(ctx, fam, v, to_float ? k_to_f : k_from_f, &k);
    if (s != MPCL_OK)
        return s;
    cl_int rc = mpcl_kernel_args(k, 7, sizeof src, &src, sizeof off, &off, sizeof rows, &rows,
                                 sizeof cols, &cols, sizeof ld, &ld, sizeof stride, &stride,
                                 sizeof dst, &dst);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: %s arguments: %s", g->what,
                              to_float ? k_to_f : k_from_f, mpcl_cl_error_name(rc));
    /* A stride of 0 shares one matrix among the G products: convert it once. */
    size_t w = mpcl_wg_limit(ctx, k);
    if (w > mpcl_wg_1d(ctx))
        w = mpcl_wg_1d(ctx);
    size_t lx = w >= 16 ? 16 : w, ly = w / lx;
    if (lx > ctx->max_item[0])
        lx = ctx->max_item[0];
    if (ly > ctx->max_item[1])
        ly = ctx->max_item[1];
    size_t local[3] = {lx, ly, 1};
    size_t global[3] = {(x->cols + lx - 1) / lx * lx, (x->rows + ly - 1) / ly * ly,
                        x->stride ? g->batch : 1};
    return mpcl_launch(ctx, k, g->what, 3, global, local);
}

/* A scratch slot for `elems` floats, sized up to a power of two of at least
 * GEMM_SCRATCH_MIN bytes: the layers of a model ask for many different
 * sizes, and each growth is a reallocation. (oclgrind 21.10 also reports
 * the contents of a scratch buffer that grew between GEMMs as
 * uninitialised: docs/gemm.md.) */
#define GEMM_SCRATCH_MIN ((size_t)1 << 20)

static mpcl_status gemm_scratch(mpcl_context *ctx, int slot, size_t elems, cl_mem *out)
{
    size_t bytes = GEMM_SCRATCH_MIN;
    while (bytes < elems * 4 && bytes <= SIZE_MAX / 2)
        bytes *= 2;
    if (bytes > ctx->caps.max_alloc_bytes && elems * 4 <= ctx->caps.max_alloc_bytes)
        bytes = elems * 4; /* the rounding would not fit, the exact size does */
    return mpcl_scratch(ctx, slot, bytes, out);
}

/* Half operands as float copies in scratch slots 0..2, Sgemm, C back to
 * half (a float C: the Sgemm writes it). */
static mpcl_status f32acc_convert(mpcl_context *ctx, const gemm_call *g)
{
    cl_mem sa, sb, sc;
    mpcl_status s = gemm_scratch(ctx, MPCL_SCRATCH_GEMM_A, mat_span(&g->a, g->batch), &sa);
    if (s == MPCL_OK)
        s = gemm_scratch(ctx, MPCL_SCRATCH_GEMM_B, mat_span(&g->b, g->batch), &sb);
    if (s == MPCL_OK && g->c_f32) {
        s = convert_mat(ctx, g, &g->a, 1, sa);
        if (s == MPCL_OK)
            s = convert_mat(ctx, g, &g->b, 1, sb);
        return s == MPCL_OK ? run_sgemm(ctx, g, sa, 0, sb, 0, g->c.mem, g->c.off) : s;
    }
    if (s == MPCL_OK)
        s = gemm_scratch(ctx, MPCL_SCRATCH_GEMM_C, mat_span(&g->c, g->batch), &sc);
    if (s == MPCL_OK)
        s = convert_mat(ctx, g, &g->a, 1, sa);
    if (s == MPCL_OK)
        s = convert_mat(ctx, g, &g->b, 1, sb);
    if (s == MPCL_OK && g->beta != 0.0f)
        s = convert_mat(ctx, g, &g->c, 1, sc);
    if (s == MPCL_OK)
        s = run_sgemm(ctx, g, sa, 0, sb, 0, sc, 0);
    if (s == MPCL_OK)
        s = convert_mat(ctx, g, &g->c, 0, sc);
    return s;
}

#define GEMM_GW 4     /* convert.cl: GW, the C block of one work item is GW x GW */
#define GEMM_GT_MAX 8 /* convert.cl: GEMM_GT's default; groups of GT x GT items */

/* convert.cl gemm_f32acc with the largest GT (8, 4, 2, 1) whose GT x GT
 * group the device, the kernel and the context's cap allow: GT = 8 from the
 * convert program, a smaller one from a program built with -DGEMM_GT=GT.
 * The choice is kept in ctx->gemm_gt. */
static mpcl_status direct_kernel(mpcl_context *ctx, cl_kernel *k, size_t *gt_out)
{
    const mpcl_variant v = mpcl_ctx_variant(ctx);
    const size_t dev = mpcl_wg_device_limit(ctx);
    for (size_t gt = ctx->gemm_gt ? (size_t)ctx->gemm_gt : GEMM_GT_MAX; gt >= 1; gt /= 2) {
        if (gt * gt > dev || gt > ctx->max_item[0] || gt > ctx->max_item[1])
            continue;
        char defines[32];
        mpcl_status s;
        if (gt == GEMM_GT_MAX) {
            s = mpcl_kernel_get(ctx, "convert", v, "gemm_f32acc", k);
        } else {
            mpcl_strfmt(defines, sizeof defines, "-DGEMM_GT=%zu", gt);
            s = mpcl_kernel_get_spec(ctx, "convert", v, defines, "gemm_f32acc", k);
        }
        if (s != MPCL_OK)
            return s;
        if (mpcl_wg_limit(ctx, *k) >= gt * gt) {
            ctx->gemm_gt = (int)gt;
            *gt_out = gt;
            return MPCL_OK;
        }
    }
    return mpcl_set_error(ctx, MPCL_ERR_UNSUPPORTED, "gemm_f32acc: device '%s' runs no work-group "
                          "of even 1 item", ctx->desc.name);
}

/* convert.cl gemm_f32acc in the context's half variant. */
static mpcl_status f32acc_direct(mpcl_context *ctx, const gemm_call *g)
{
    cl_kernel k;
    size_t gt = 0;
    mpcl_status s = direct_kernel(ctx, &k, &gt);
    if (s != MPCL_OK)
        return s;
    cl_uint ta = (cl_uint)g->trans_a, tb = (cl_uint)g->trans_b;
    cl_uint m = (cl_uint)g->m, n = (cl_uint)g->n, kk = (cl_uint)g->k;
    cl_uint lda = (cl_uint)g->a.ld, ldb = (cl_uint)g->b.ld, ldc = (cl_uint)g->c.ld;
    cl_ulong ao = g->a.off, bo = g->b.off, co = g->c.off;
    cl_ulong as = g->a.stride, bs = g->b.stride, cs = g->c.stride;
    cl_int rc = mpcl_kernel_args(k, 19, sizeof ta, &ta, sizeof tb, &tb, sizeof m, &m, sizeof n, &n,
                                 sizeof kk, &kk, sizeof g->alpha, &g->alpha, sizeof g->a.mem,
                                 &g->a.mem, sizeof ao, &ao, sizeof lda, &lda, sizeof as, &as,
                                 sizeof g->b.mem, &g->b.mem, sizeof bo, &bo, sizeof ldb, &ldb,
                                 sizeof bs, &bs, sizeof g->beta, &g->beta, sizeof g->c.mem,
                                 &g->c.mem, sizeof co, &co, sizeof ldc, &ldc, sizeof cs, &cs);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: gemm_f32acc arguments: %s", g->what,
                              mpcl_cl_error_name(rc));
    const size_t tile = gt * GEMM_GW;
    size_t local[3] = {gt, gt, 1};
    size_t global[3] = {(g->n + tile - 1) / tile * gt, (g->m + tile - 1) / tile * gt, g->batch};
    return mpcl_launch(ctx, k, g->what, 3, global, local);
}

/* The direct kernel needs a variant whose store_t is the operands' dtype
 * (half, or bf16 in the bf16 variant); its tile adapts to the work-group
 * size the device allows. */
static int direct_possible(const mpcl_context *ctx, const gemm_call *g)
{
    return ctx->precision != MPCL_PRECISION_FP32 &&
           (ctx->precision == MPCL_PRECISION_BF16) == (g->bf16 != 0);
}

/* The conversion or the direct path, as chosen above. */
static mpcl_status f32acc_path(mpcl_context *ctx, const gemm_call *g)
{
    int path = ctx->gemm_f16_path;
    if (path == MPCL_GEMM_F16_AUTO)
        path = ctx->gemm_f16_env; /* $MPCL_GEMM_F16_PATH */
    if (path == MPCL_GEMM_F16_AUTO)
        path = ctx->precision == MPCL_PRECISION_FP16 ? GEMM_FP16_DEFAULT_PATH : GEMM_F16_DEFAULT_PATH;
    if (path == MPCL_GEMM_F16_DIRECT && direct_possible(ctx, g) && !g->c_f32)
        return f32acc_direct(ctx, g);
    return f32acc_convert(ctx, g);
}

/* x (16-bit operands, one product) on f32acc_path: the reference the own
 * kernel's 16-bit build is measured against. */
static mpcl_status f32acc_baseline(mpcl_context *ctx, const mpcl_xgemm *x)
{
    const gemm_call g = {.what = "GEMM choice", .trans_a = x->trans_a, .trans_b = x->trans_b,
                         .m = x->m, .n = x->n, .k = x->k, .batch = 1, .alpha = x->alpha,
                         .beta = x->beta,
                         .a = {x->a, x->a_off, x->lda, 0, x->trans_a ? x->k : x->m,
                               x->trans_a ? x->m : x->k},
                         .b = {x->b, x->b_off, x->ldb, 0, x->trans_b ? x->n : x->k,
                               x->trans_b ? x->k : x->n},
                         .c = {x->c, x->c_off, x->ldc, 0, x->m, x->n},
                         .bf16 = ctx->precision == MPCL_PRECISION_BF16, .c_f32 = x->c_f32};
    return f32acc_path(ctx, &g);
}

/* Float sums on 16-bit operands: the own kernel built for the context's
 * 16-bit type, which reads them (a transposed B copied to rows first) and
 * rounds C once, where it measured faster
 * on the shape than the conversion or direct path (sgemm.c; its operands
 * must be the context's storage type, as for the direct path). */
static mpcl_status f32acc(mpcl_context *ctx, const gemm_call *g)
{
    if (direct_possible(ctx, g)) {
        mpcl_xgemm x = xgemm_of(g, 0, g->a.mem, g->a.off, g->b.mem, g->b.off, g->c.mem, g->c.off);
        x.store16 = 1;
        x.c_f32 = g->c_f32;
        x.baseline = f32acc_baseline;
        int ran = 0;
        mpcl_status s = own_if_chosen(ctx, &x, g->what, &ran);
        if (s != MPCL_OK || ran)
            return s;
    }
    return f32acc_path(ctx, g);
}

/* ---------------------------------------------------------- the router */

static void note_hgemm_refused(mpcl_context *ctx, CLBlastStatusCode st)
{
    if (ctx->hgemm_refused)
        return;
    ctx->hgemm_refused = 1;
    size_t used = strlen(ctx->caps.chosen_why);
    if (used < sizeof ctx->caps.chosen_why)
        snprintf(ctx->caps.chosen_why + used, sizeof ctx->caps.chosen_why - used,
                 "; CLBlast Hgemm refused (%s): GEMMs accumulate in fp32",
                 mpcl_clblast_status_name((int)st));
}

static mpcl_status route(mpcl_context *ctx, const gemm_call *g, mpcl_dtype dtype)
{
    if (dtype == MPCL_F32)
        return run_sgemm(ctx, g, g->a.mem, g->a.off, g->b.mem, g->b.off, g->c.mem, g->c.off);
    if (dtype == MPCL_F16 && ctx->precision == MPCL_PRECISION_FP16 && !ctx->hgemm_refused &&
        fp16_accum(ctx) == MPCL_ACCUM_HALF && !g->c_f32) {
        CLBlastStatusCode st = run_hgemm(ctx, g);
        if (st == CLBlastSuccess)
            return MPCL_OK;
        if (st != CLBlastNoHalfPrecision)
            return clblast_fail(ctx, g, g->batch == 1 ? "CLBlastHgemm" : "CLBlastHgemmStridedBatched",
                                st);
        note_hgemm_refused(ctx, st); /* then accumulate in float */
    }
    return f32acc(ctx, g);
}

static mpcl_status check_mat(mpcl_context *ctx, const gemm_call *g, const char *name,
                             const gemm_mat *x)
{
    if (!x->mem)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: GEMM operand %s is NULL", g->what, name);
    if (x->ld < x->cols || x->ld > UINT32_MAX || x->rows > UINT32_MAX)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: GEMM operand %s is %zu x %zu with leading dimension %zu "
                              "(M=%zu, N=%zu, K=%zu)",
                              g->what, name, x->rows, x->cols, x->ld, g->m, g->n, g->k);
    return MPCL_OK;
}

static mpcl_status gemm_batched(mpcl_context *ctx, const char *what, mpcl_dtype dtype, int c_f32,
                                int trans_a, int trans_b, size_t m, size_t n, size_t k,
                                float alpha, cl_mem a, size_t a_off, size_t lda, size_t a_stride,
                                cl_mem b, size_t b_off, size_t ldb, size_t b_stride, float beta,
                                cl_mem c, size_t c_off, size_t ldc, size_t c_stride, size_t batch)
{
    mpcl_status s = mpcl_check_ctx(ctx, what);
    if (s != MPCL_OK)
        return s;
    if (!what)
        what = "gemm";
    if (m == 0 || n == 0 || batch == 0)
        return MPCL_OK; /* an empty product */
    gemm_call g = {
        .what = what, .trans_a = trans_a != 0, .trans_b = trans_b != 0,
        .m = m, .n = n, .k = k, .batch = batch, .alpha = alpha, .beta = beta,
        .a = {a, a_off, lda, a_stride, trans_a ? k : m, trans_a ? m : k}, /* (M, K) or (K, M) */
        .b = {b, b_off, ldb, b_stride, trans_b ? n : k, trans_b ? k : n}, /* (K, N) or (N, K) */
        .c = {c, c_off, ldc, c_stride, m, n},                             /* (M, N) */
    };
    if (dtype != MPCL_F16 && dtype != MPCL_F32 && dtype != MPCL_BF16)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: GEMM operands must be f16, bf16 or f32, not %s", what,
                              mpcl_dtype_name(dtype));
    g.bf16 = dtype == MPCL_BF16;
    g.c_f32 = c_f32 && dtype != MPCL_F32;
    if (k == 0 || m > UINT32_MAX || n > UINT32_MAX || k > UINT32_MAX)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: GEMM sizes M=%zu, N=%zu, K=%zu out of range",
                              what, m, n, k);
    if ((s = check_mat(ctx, &g, "A", &g.a)) != MPCL_OK || (s = check_mat(ctx, &g, "B", &g.b)) != MPCL_OK ||
        (s = check_mat(ctx, &g, "C", &g.c)) != MPCL_OK)
        return s;
    if (batch > 1 && mat_overlaps(&g.c, batch))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: the %zu C matrices (%zu x %zu, leading dimension %zu) overlap: "
                              "stride %zu",
                              what, batch, m, n, ldc, c_stride);
    return route(ctx, &g, dtype);
}

mpcl_status mpcl_gemm_batched_raw(mpcl_context *ctx, const char *what, mpcl_dtype dtype,
                                  int trans_a, int trans_b, size_t m, size_t n, size_t k,
                                  float alpha, cl_mem a, size_t a_off, size_t lda, size_t a_stride,
                                  cl_mem b, size_t b_off, size_t ldb, size_t b_stride, float beta,
                                  cl_mem c, size_t c_off, size_t ldc, size_t c_stride,
                                  size_t batch)
{
    return gemm_batched(ctx, what, dtype, 0, trans_a, trans_b, m, n, k, alpha, a, a_off, lda,
                        a_stride, b, b_off, ldb, b_stride, beta, c, c_off, ldc, c_stride, batch);
}

mpcl_status mpcl_gemm_raw(mpcl_context *ctx, const char *what, mpcl_dtype dtype, int trans_a,
                          int trans_b, size_t m, size_t n, size_t k, float alpha, cl_mem a,
                          size_t a_off, size_t lda, cl_mem b, size_t b_off, size_t ldb, float beta,
                          cl_mem c, size_t c_off, size_t ldc)
{
    return gemm_batched(ctx, what, dtype, 0, trans_a, trans_b, m, n, k, alpha, a, a_off, lda, 0, b,
                        b_off, ldb, 0, beta, c, c_off, ldc, 0, 1);
}

mpcl_status mpcl_gemm_raw_c32(mpcl_context *ctx, const char *what, mpcl_dtype dtype, int trans_a,
                              int trans_b, size_t m, size_t n, size_t k, float alpha, cl_mem a,
                              size_t a_off, size_t lda, cl_mem b, size_t b_off, size_t ldb,
                              float beta, cl_mem c, size_t c_off, size_t ldc)
{
    return gemm_batched(ctx, what, dtype, 1, trans_a, trans_b, m, n, k, alpha, a, a_off, lda, 0, b,
                        b_off, ldb, 0, beta, c, c_off, ldc, 0, 1);
}

mpcl_status mpcl_gemm_batched_raw_c32(mpcl_context *ctx, const char *what, mpcl_dtype dtype,
                                      int trans_a, int trans_b, size_t m, size_t n, size_t k,
                                      float alpha, cl_mem a, size_t a_off, size_t lda,
                                      size_t a_stride, cl_mem b, size_t b_off, size_t ldb,
                                      size_t b_stride, float beta, cl_mem c, size_t c_off,
                                      size_t ldc, size_t c_stride, size_t batch)
{
    return gemm_batched(ctx, what, dtype, 1, trans_a, trans_b, m, n, k, alpha, a, a_off, lda,
                        a_stride, b, b_off, ldb, b_stride, beta, c, c_off, ldc, c_stride, batch);
}

/* ------------------------------------------------------------ public */

static mpcl_status gemm_shape_error(mpcl_context *ctx, const char *why, int trans_a, int trans_b,
                                    const mpcl_tensor *a, const mpcl_tensor *b, const mpcl_tensor *c)
{
    char da[128], db[128], dc[128];
    return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                          "mpcl_gemm: %s: A is %s%s, B is %s%s, C is %s", why,
                          mpcl_tensor_describe(a, da, sizeof da), trans_a ? " (transposed)" : "",
                          mpcl_tensor_describe(b, db, sizeof db), trans_b ? " (transposed)" : "",
                          mpcl_tensor_describe(c, dc, sizeof dc));
}

mpcl_status mpcl_gemm(mpcl_context *ctx, int trans_a, int trans_b, float alpha,
                      const mpcl_tensor *a, const mpcl_tensor *b, float beta, mpcl_tensor *c)
{
    static const char op[] = "mpcl_gemm";
    mpcl_status s = mpcl_check_ctx(ctx, op);
    if (s != MPCL_OK)
        return s;
    mpcl_dtype dt = mpcl_storage_dtype(ctx);
    const mpcl_tensor *ts[3] = {a, b, c};
    const char *names[3] = {"A", "B", "C"};
    for (int i = 0; i < 3; i++) {
        const mpcl_tensor *t = ts[i];
        int nd = t ? t->ndim : 2;
        if (t && (nd < 2 || nd > 3))
            return gemm_shape_error(ctx, "A, B and C must be 2-D (rows, cols) or 3-D (G, rows, cols)",
                                    trans_a, trans_b, a, b, c);
        s = mpcl_check_tensor(ctx, op, names[i], t, dt, nd, NULL);
        if (s != MPCL_OK)
            return s;
    }
    if (a->ndim != b->ndim || a->ndim != c->ndim)
        return gemm_shape_error(ctx, "A, B and C must have the same number of dimensions", trans_a,
                                trans_b, a, b, c);
    int d = a->ndim - 2; /* index of the rows dimension */
    size_t batch = d ? a->shape[0] : 1;
    if (d && (b->shape[0] != batch || c->shape[0] != batch))
        return gemm_shape_error(ctx, "the batch dimensions G differ", trans_a, trans_b, a, b, c);
    /* op(A) (M, K), op(B) (K, N), C (M, N) */
    size_t m = trans_a ? a->shape[d + 1] : a->shape[d], k = trans_a ? a->shape[d] : a->shape[d + 1];
    size_t kb = trans_b ? b->shape[d + 1] : b->shape[d], n = trans_b ? b->shape[d] : b->shape[d + 1];
    if (k != kb)
        return gemm_shape_error(ctx, "the inner dimensions K of op(A) and op(B) differ", trans_a,
                                trans_b, a, b, c);
    if (c->shape[d] != m || c->shape[d + 1] != n)
        return gemm_shape_error(ctx, "C must be (M, N) of op(A) (M, K) times op(B) (K, N)", trans_a,
                                trans_b, a, b, c);
    return mpcl_gemm_batched_raw(ctx, op, dt, trans_a, trans_b, m, n, k, alpha, a->mem, 0,
                                 a->shape[d + 1], m * k, b->mem, 0, b->shape[d + 1], k * n, beta,
                                 c->mem, 0, n, m * n, batch);
}

mpcl_status mpcl_set_gemm_accumulation(mpcl_context *ctx, mpcl_accumulation acc)
{
    mpcl_status s = mpcl_check_ctx(ctx, "mpcl_set_gemm_accumulation");
    if (s != MPCL_OK)
        return s;
    if (acc != MPCL_ACCUM_DEFAULT && acc != MPCL_ACCUM_HALF && acc != MPCL_ACCUM_FLOAT)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "mpcl_set_gemm_accumulation: unknown accumulation %d", (int)acc);
    ctx->gemm_accum = acc;
    return MPCL_OK;
}
