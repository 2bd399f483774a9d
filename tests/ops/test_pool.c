/* test_pool.c — max and average pooling, forward and backward, against
 * double-precision host references, in every precision mode.
 *
 * Letters: B batch, C channels, H W input, OH OW output, KH KW window.
 *
 * Tolerances (documented in docs/ops/conv-pool.md): max pooling forward and
 * its argmax are exact in every mode (a selection, no arithmetic). Sums
 * (avg forward, both backward passes) accumulate m <= KH*KW terms in float
 * and round once to storage: |err| <= mag * (m * 2^-24 + 2 u) + floor,
 * mag = sum of |terms|, u = 2^-24 (fp32) or 2^-11 (half storage), floor the
 * smallest half subnormal in half modes. Finite differences of the host
 * reference (double) check the device gradients in fp32. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

typedef struct {
    size_t b, c, h, w;
    int kh, kw, sh, sw, ph, pw;
} pool_case;

static mpcl_pool2d_params params_of(const pool_case *pc)
{
    mpcl_pool2d_params p = {pc->kh, pc->kw, pc->sh, pc->sw, pc->ph, pc->pw};
    return p;
}

static size_t out_h(const pool_case *pc) { return (pc->h + 2 * (size_t)pc->ph - (size_t)pc->kh) / (size_t)pc->sh + 1; }
static size_t out_w(const pool_case *pc) { return (pc->w + 2 * (size_t)pc->pw - (size_t)pc->kw) / (size_t)pc->sw + 1; }

/* ------------------------------------------------------ host references */

/* y (B, C, OH, OW), am: first maximum in row-major window order; a NaN wins. */
static void ref_max_forward(const pool_case *pc, const double *x, double *y, int *am)
{
    size_t oh_n = out_h(pc), ow_n = out_w(pc);
    for (size_t pl = 0; pl < pc->b * pc->c; pl++)
        for (size_t oh = 0; oh < oh_n; oh++)
            for (size_t ow = 0; ow < ow_n; ow++) {
                double best = 0;
                int at = -1;
                for (int r = 0; r < pc->kh; r++)
                    for (int s = 0; s < pc->kw; s++) {
                        long ih = (long)oh * pc->sh - pc->ph + r, iw = (long)ow * pc->sw - pc->pw + s;
                        if (ih < 0 || iw < 0 || ih >= (long)pc->h || iw >= (long)pc->w)
                            continue;
                        double v = x[pl * pc->h * pc->w + (size_t)ih * pc->w + (size_t)iw];
                        if (at < 0 || v > best || (isnan(v) && !isnan(best))) {
                            best = v;
                            at = (int)(ih * (long)pc->w + iw);
                        }
                    }
                size_t o = (pl * oh_n + oh) * ow_n + ow;
                y[o] = best;
                if (am)
                    am[o] = at;
            }
}

/* dx (B, C, H, W) = scatter of dy through am; mag = sum of |terms|. */
static void ref_max_backward(const pool_case *pc, const double *dy, const int *am, double *dx,
                             double *mag)
{
    size_t p_out = out_h(pc) * out_w(pc), p_in = pc->h * pc->w;
    memset(dx, 0, pc->b * pc->c * p_in * sizeof *dx);
    memset(mag, 0, pc->b * pc->c * p_in * sizeof *mag);
    for (size_t pl = 0; pl < pc->b * pc->c; pl++)
        for (size_t o = 0; o < p_out; o++) {
            size_t i = pl * p_in + (size_t)am[pl * p_out + o];
            dx[i] += dy[pl * p_out + o];
            mag[i] += fabs(dy[pl * p_out + o]);
        }
}

/* y = window sum / (KH*KW), padding as zeros; mag = sum of |terms| / (KH*KW). */
static void ref_avg_forward(const pool_case *pc, const double *x, double *y, double *mag)
{
    size_t oh_n = out_h(pc), ow_n = out_w(pc);
    double div = (double)pc->kh * pc->kw;
    for (size_t pl = 0; pl < pc->b * pc->c; pl++)
        for (size_t oh = 0; oh < oh_n; oh++)
            for (size_t ow = 0; ow < ow_n; ow++) {
                double acc = 0, m = 0;
                for (int r = 0; r < pc->kh; r++)
                    for (int s = 0; s < pc->kw; s++) {
                        long ih = (long)oh * pc->sh - pc->ph + r, iw = (long)ow * pc->sw - pc->pw + s;
                        if (ih < 0 || iw < 0 || ih >= (long)pc->h || iw >= (long)pc->w)
                            continue;
                        double v = x[pl * pc->h * pc->w + (size_t)ih * pc->w + (size_t)iw];
                        acc += v;
                        m += fabs(v);
                    }
                size_t o = (pl * oh_n + oh) * ow_n + ow;
                y[o] = acc / div;
                if (mag)
                    mag[o] = m / div;
            }
}

/* L(x) = sum dy * pool(x): central differences in double against dx, for
 * the fp32 runs. */
typedef void (*ref_fwd)(const pool_case *pc, const double *x, double *y);
static void max_fwd(const pool_case *pc, const double *x, double *y) { ref_max_forward(pc, x, y, NULL); }
static void avg_fwd(const pool_case *pc, const double *x, double *y) { ref_avg_forward(pc, x, y, NULL); }

static void check_finite_differences(const char *what, const char *mode, const pool_case *pc, ref_fwd fwd,
                                     double *xd, const double *dyd, const float *dx, size_t nx, size_t ny,
                                     double eps)
{
    double *yp = malloc(ny * sizeof *yp), worst = 0;
    ck_assert_ptr_nonnull(yp);
    for (size_t j = 0; j < nx; j++) {
        double keep = xd[j], lp = 0, lm = 0;
        xd[j] = keep + eps;
        fwd(pc, xd, yp);
        for (size_t i = 0; i < ny; i++)
            lp += dyd[i] * yp[i];
        xd[j] = keep - eps;
        fwd(pc, xd, yp);
        for (size_t i = 0; i < ny; i++)
            lm += dyd[i] * yp[i];
        xd[j] = keep;
        double fd = (lp - lm) / (2 * eps), err = fabs(fd - dx[j]);
        if (err > worst)
            worst = err;
        ck_assert_msg(err <= 1e-6 + 1e-5 * fabs(fd), "%s dx[%zu] %g, finite difference %g", what, j,
                      (double)dx[j], fd);
    }
    char label[64];
    snprintf(label, sizeof label, "%s dx vs finite diff.", what);
    printf("  %-28s %-12s worst |dx - fd| %.3g\n", label, mode, worst);
    free(yp);
}

static void ref_avg_backward(const pool_case *pc, const double *dy, double *dx, double *mag)
{
    size_t oh_n = out_h(pc), ow_n = out_w(pc), p_in = pc->h * pc->w;
    double div = (double)pc->kh * pc->kw;
    memset(dx, 0, pc->b * pc->c * p_in * sizeof *dx);
    memset(mag, 0, pc->b * pc->c * p_in * sizeof *mag);
    for (size_t pl = 0; pl < pc->b * pc->c; pl++)
        for (size_t oh = 0; oh < oh_n; oh++)
            for (size_t ow = 0; ow < ow_n; ow++) {
                double g = dy[(pl * oh_n + oh) * ow_n + ow] / div;
                for (int r = 0; r < pc->kh; r++)
                    for (int s = 0; s < pc->kw; s++) {
                        long ih = (long)oh * pc->sh - pc->ph + r, iw = (long)ow * pc->sw - pc->pw + s;
                        if (ih < 0 || iw < 0 || ih >= (long)pc->h || iw >= (long)pc->w)
                            continue;
                        size_t i = pl * p_in + (size_t)ih * pc->w + (size_t)iw;
                        dx[i] += g;
                        mag[i] += fabs(g);
                    }
            }
}

/* --------------------------------------------------------------- helpers */

static double unit_roundoff(mpcl_precision mode) { return optest_unit_roundoff(mode); }

/* |got - ref| <= mag * (m 2^-24 + 2 u) + floor, per element; reports the
 * worst error relative to its magnitude. */
static void assert_sum_close(const char *what, mpcl_precision mode, const float *got,
                             const double *ref, const double *mag, size_t n, int m)
{
    double u = unit_roundoff(mode), floor_abs = mode == MPCL_PRECISION_FP32 ? 1e-30 : 0x1p-24;
    double rel = m * 0x1p-24 + 2 * u, worst = 0, used = 0;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]), bound = mag[i] * rel + floor_abs;
        if (!(err <= bound) && bad++ == 0)
            first = i;
        if (err / bound > used)
            used = err / bound;
        if (mag[i] >= 0x1p-10 && err / mag[i] > worst) /* away from half's subnormals */
            worst = err / mag[i];
    }
    printf("  %-28s %-12s worst |err|/mag %.3g (bound %.3g), %.0f%% of the bound used\n", what,
           mpcl_precision_name(mode), worst, rel, 100 * used);
    ck_assert_msg(bad == 0, "%s (%s): %zu of %zu out of tolerance; first [%zu] got %.9g ref %.9g mag %.3g",
                  what, mpcl_precision_name(mode), bad, n, first, (double)got[first], ref[first],
                  mag[first]);
}

static double *to_double(const float *x, size_t n)
{
    double *d = malloc(n * sizeof *d);
    ck_assert_ptr_nonnull(d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

/* Host values in [-1, 1) as the device holds them. */
static float *random_input(mpcl_context *ctx, size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    optest_fill_uniform(x, n, seed, -1.0f, 1.0f);
    optest_quantize(ctx, x, n);
    return x;
}

static mpcl_tensor *act(mpcl_context *ctx, const float *data, size_t b, size_t c, size_t h, size_t w)
{
    return optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, data, b, c, h, w);
}

static void assert_all_equal(const char *what, const mpcl_tensor *t, float value)
{
    float *v = optest_download(t);
    size_t n = mpcl_tensor_numel(t);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(v[i] == value, "%s: element %zu is %g, expected the untouched fill %g", what, i,
                      (double)v[i], (double)value);
    free(v);
}

/* Normal mode: odd image sizes, overlapping windows (k3 s2), padding,
 * batch 1, rectangular windows, windows that tile the image exactly (max
 * pooling's backward pass then scatters per window) and ones that leave
 * a margin (14x14 in k3 s3: a gather); B*C with divisors 1 to 4 (the
 * kernels take up to 4 planes an item), 13x17, 7x7 and 1x1 planes. Small
 * mode (oclgrind): tiny versions. */
static const pool_case normal_cases[] = {
    {2, 3, 7, 13, 3, 3, 2, 2, 1, 1},  /* overlapping, padded, odd */
    {4, 6, 28, 28, 2, 2, 2, 2, 0, 0}, /* LeNet's pooling */
    {1, 3, 9, 8, 3, 2, 1, 2, 1, 0},   /* batch 1, stride 1 rows, rectangular */
    {3, 5, 14, 14, 3, 3, 3, 3, 0, 0}, /* stride = window, a margin left */
    {2, 3, 6, 9, 2, 3, 2, 3, 0, 0},   /* rectangular windows tiling the image */
    {3, 7, 13, 17, 2, 2, 2, 2, 0, 0}, /* 13x17: odd width, a margin; 3 planes an item */
    {5, 4, 14, 14, 2, 2, 2, 2, 0, 0}, /* 7x7 out, tiling; 4 planes an item */
    {1, 5, 1, 1, 1, 1, 1, 1, 0, 0},   /* 1x1 planes, batch 1, 5 planes: 1 an item */
    {2, 3, 7, 7, 7, 7, 7, 7, 0, 0},   /* 7x7 windows to 1x1 (global pooling) */
};
static const pool_case small_cases[] = {
    {1, 2, 5, 6, 3, 3, 2, 2, 1, 1},
    {2, 1, 4, 5, 2, 2, 2, 2, 0, 0},
    {1, 2, 4, 6, 2, 2, 2, 2, 0, 0}, /* windows tiling the image */
    {3, 3, 5, 7, 2, 2, 2, 2, 0, 0}, /* odd width; 3 planes an item */
    {2, 2, 4, 4, 2, 2, 2, 2, 0, 0}, /* tiling; 4 planes an item */
};

static const pool_case *cases(size_t *n)
{
    if (optest_small()) {
        *n = sizeof small_cases / sizeof small_cases[0];
        return small_cases;
    }
    *n = sizeof normal_cases / sizeof normal_cases[0];
    return normal_cases;
}

/* ----------------------------------------------------------------- max */

static void run_max_case(const optest_mode *md, const pool_case *pc, uint64_t seed)
{
    mpcl_context *ctx = md->ctx;
    mpcl_pool2d_params p = params_of(pc);
    size_t oh = out_h(pc), ow = out_w(pc);
    size_t nx = pc->b * pc->c * pc->h * pc->w, ny = pc->b * pc->c * oh * ow;
    float *x = random_input(ctx, nx, seed), *dy = random_input(ctx, ny, seed + 1);
    mpcl_tensor *tx = act(ctx, x, pc->b, pc->c, pc->h, pc->w);
    mpcl_tensor *ty = act(ctx, NULL, pc->b, pc->c, oh, ow);
    mpcl_tensor *tam = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, pc->b, pc->c, oh, ow);
    mpcl_tensor *tdy = act(ctx, dy, pc->b, pc->c, oh, ow);
    mpcl_tensor *tdx = act(ctx, NULL, pc->b, pc->c, pc->h, pc->w);
    ck_assert_int_eq(mpcl_tensor_fill(tdx, NAN), MPCL_OK); /* every element must be written */

    ck_assert_msg(mpcl_maxpool2d_forward(ctx, ty, tam, tx, &p) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(mpcl_maxpool2d_backward(ctx, tdx, tdy, tam, &p) == MPCL_OK, "%s", mpcl_last_error(ctx));
    float *y = optest_download(ty), *am_f = optest_download(tam), *dx = optest_download(tdx);

    double *xd = to_double(x, nx), *dyd = to_double(dy, ny);
    double *yr = malloc(ny * sizeof *yr), *dxr = malloc(nx * sizeof *dxr), *mag = malloc(nx * sizeof *mag);
    int *amr = malloc(ny * sizeof *amr), *am = malloc(ny * sizeof *am);
    ck_assert(yr && dxr && mag && amr && am);
    ref_max_forward(pc, xd, yr, amr);
    for (size_t i = 0; i < ny; i++) {
        am[i] = (int)am_f[i];
        ck_assert_msg(y[i] == (float)yr[i] && am[i] == amr[i],
                      "maxpool forward [%zu]: got %g at %d, expected %g at %d", i, (double)y[i], am[i],
                      yr[i], amr[i]);
    }
    ref_max_backward(pc, dyd, amr, dxr, mag);
    int overlap = (pc->kh + pc->sh - 1) / pc->sh * ((pc->kw + pc->sw - 1) / pc->sw);
    assert_sum_close("maxpool dx", md->mode, dx, dxr, mag, nx, overlap);

    if (md->mode == MPCL_PRECISION_FP32)
        /* L(x) = sum dy * maxpool(x): central differences in double. */
        check_finite_differences("maxpool", md->name, pc, max_fwd, xd, dyd, dx, nx, ny, 1e-6);
    free(x); free(dy); free(y); free(am_f); free(dx); free(xd); free(dyd);
    free(yr); free(dxr); free(mag); free(amr); free(am);
    mpcl_tensor_destroy(tx); mpcl_tensor_destroy(ty); mpcl_tensor_destroy(tam);
    mpcl_tensor_destroy(tdy); mpcl_tensor_destroy(tdx);
}

START_TEST(test_max_cases)
{
    size_t n;
    const pool_case *cs = cases(&n);
    for (size_t i = 0; i < n; i++)
        run_max_case(&optest_modes[_i], &cs[i], 100 + i);
}
END_TEST

/* Padding never wins: an all-negative image, padded, keeps negative maxima
 * and argmax inside the image. */
START_TEST(test_max_padding_never_wins)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    const size_t h = 3, w = 4;
    float x[12];
    for (int i = 0; i < 12; i++)
        x[i] = -1.0f - (float)i; /* -1 .. -12: the top-left is the maximum */
    mpcl_pool2d_params p = {3, 3, 1, 1, 1, 1};
    mpcl_tensor *tx = act(ctx, x, 1, 1, h, w), *ty = act(ctx, NULL, 1, 1, h, w);
    mpcl_tensor *tam = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, 1, 1, h, w);
    ck_assert_msg(mpcl_maxpool2d_forward(ctx, ty, tam, tx, &p) == MPCL_OK, "%s", mpcl_last_error(ctx));
    float *y = optest_download(ty), *am = optest_download(tam);
    for (size_t oh = 0; oh < h; oh++)
        for (size_t ow = 0; ow < w; ow++) {
            /* the window's top-left real pixel holds its maximum */
            size_t ih = oh ? oh - 1 : 0, iw = ow ? ow - 1 : 0, at = ih * w + iw;
            ck_assert_msg(y[oh * w + ow] == x[at] && am[oh * w + ow] == (float)at,
                          "[%zu, %zu]: got %g at %g, expected %g at %zu", oh, ow,
                          (double)y[oh * w + ow], (double)am[oh * w + ow], (double)x[at], at);
        }
    free(y); free(am);
    mpcl_tensor_destroy(tx); mpcl_tensor_destroy(ty); mpcl_tensor_destroy(tam);
}
END_TEST

/* A NaN in a window makes that window's maximum NaN (overflow detection
 * downstream must see it); windows without it are unaffected. */
START_TEST(test_max_nan_propagates)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    float x[16];
    for (int i = 0; i < 16; i++)
        x[i] = (float)i;
    x[5] = NAN; /* (1, 1): in the top-left 2x2 window only */
    mpcl_pool2d_params p = {2, 2, 2, 2, 0, 0};
    mpcl_tensor *tx = act(ctx, x, 1, 1, 4, 4), *ty = act(ctx, NULL, 1, 1, 2, 2);
    mpcl_tensor *tam = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, 1, 1, 2, 2);
    ck_assert_msg(mpcl_maxpool2d_forward(ctx, ty, tam, tx, &p) == MPCL_OK, "%s", mpcl_last_error(ctx));
    float *y = optest_download(ty), *am = optest_download(tam);
    ck_assert_msg(isnan(y[0]) && am[0] == 5.0f, "NaN window: got %g at %g", (double)y[0], (double)am[0]);
    ck_assert(y[1] == 7.0f && y[2] == 13.0f && y[3] == 15.0f);
    free(y); free(am);
    mpcl_tensor_destroy(tx); mpcl_tensor_destroy(ty); mpcl_tensor_destroy(tam);
}
END_TEST

/* Ties, signed zeros and infinities in 2x2 windows at stride 2 (the
 * geometry that fp16-storage compares as halves' bits): the first maximum
 * in window order wins, -0 and +0 tie (so the first of them is stored,
 * sign included), inf beats every finite value, -inf loses to them all. */
START_TEST(test_max_ties_zeros_inf)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    /* 2 x 8 image: four windows, columns (0,1), (2,3), (4,5), (6,7) */
    const float x[16] = {-0.0f, 0.0f,      3.0f, -INFINITY, INFINITY, 65504.0f, -5.0f, -4.0f,
                         0.0f,  -0.0f,     3.0f, 1.0f,      2.0f,     INFINITY, -4.0f, -INFINITY};
    mpcl_pool2d_params p = {2, 2, 2, 2, 0, 0};
    mpcl_tensor *tx = act(ctx, x, 1, 1, 2, 8), *ty = act(ctx, NULL, 1, 1, 1, 4);
    mpcl_tensor *tam = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, 1, 1, 1, 4);
    ck_assert_msg(mpcl_maxpool2d_forward(ctx, ty, tam, tx, &p) == MPCL_OK, "%s", mpcl_last_error(ctx));
    float *y = optest_download(ty), *am = optest_download(tam);
    ck_assert_msg(y[0] == 0.0f && signbit(y[0]) && am[0] == 0.0f, "zeros: got %g at %g",
                  (double)y[0], (double)am[0]);
    ck_assert_msg(y[1] == 3.0f && am[1] == 2.0f, "tie: got %g at %g", (double)y[1], (double)am[1]);
    ck_assert_msg(isinf(y[2]) && y[2] > 0 && am[2] == 4.0f, "inf: got %g at %g", (double)y[2],
                  (double)am[2]);
    ck_assert_msg(y[3] == -4.0f && am[3] == 7.0f, "negatives: got %g at %g", (double)y[3],
                  (double)am[3]);
    free(y);
    free(am);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(ty);
    mpcl_tensor_destroy(tam);
}
END_TEST

/* ----------------------------------------------------------------- avg */

static void run_avg_case(const optest_mode *md, const pool_case *pc, uint64_t seed)
{
    mpcl_context *ctx = md->ctx;
    mpcl_pool2d_params p = params_of(pc);
    size_t oh = out_h(pc), ow = out_w(pc);
    size_t nx = pc->b * pc->c * pc->h * pc->w, ny = pc->b * pc->c * oh * ow;
    float *x = random_input(ctx, nx, seed), *dy = random_input(ctx, ny, seed + 1);
    mpcl_tensor *tx = act(ctx, x, pc->b, pc->c, pc->h, pc->w);
    mpcl_tensor *ty = act(ctx, NULL, pc->b, pc->c, oh, ow);
    mpcl_tensor *tdy = act(ctx, dy, pc->b, pc->c, oh, ow);
    mpcl_tensor *tdx = act(ctx, NULL, pc->b, pc->c, pc->h, pc->w);
    ck_assert_int_eq(mpcl_tensor_fill(tdx, NAN), MPCL_OK);

    ck_assert_msg(mpcl_avgpool2d_forward(ctx, ty, tx, &p) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(mpcl_avgpool2d_backward(ctx, tdx, tdy, &p) == MPCL_OK, "%s", mpcl_last_error(ctx));
    float *y = optest_download(ty), *dx = optest_download(tdx);

    double *xd = to_double(x, nx), *dyd = to_double(dy, ny);
    double *yr = malloc(ny * sizeof *yr), *ymag = malloc(ny * sizeof *ymag);
    double *dxr = malloc(nx * sizeof *dxr), *dxmag = malloc(nx * sizeof *dxmag);
    ck_assert(yr && ymag && dxr && dxmag);
    ref_avg_forward(pc, xd, yr, ymag);
    /* + 1 term for the division's rounding */
    assert_sum_close("avgpool y", md->mode, y, yr, ymag, ny, pc->kh * pc->kw + 1);
    ref_avg_backward(pc, dyd, dxr, dxmag);
    int overlap = (pc->kh + pc->sh - 1) / pc->sh * ((pc->kw + pc->sw - 1) / pc->sw);
    assert_sum_close("avgpool dx", md->mode, dx, dxr, dxmag, nx, overlap + 1);

    if (md->mode == MPCL_PRECISION_FP32)
        /* avg pooling is linear: central differences of L = sum dy * avgpool(x)
         * are exact up to rounding; eps 1e-3 in double. */
        check_finite_differences("avgpool", md->name, pc, avg_fwd, xd, dyd, dx, nx, ny, 1e-3);
    free(x); free(dy); free(y); free(dx); free(xd); free(dyd);
    free(yr); free(ymag); free(dxr); free(dxmag);
    mpcl_tensor_destroy(tx); mpcl_tensor_destroy(ty); mpcl_tensor_destroy(tdy);
    mpcl_tensor_destroy(tdx);
}

START_TEST(test_avg_cases)
{
    size_t n;
    const pool_case *cs = cases(&n);
    for (size_t i = 0; i < n; i++)
        run_avg_case(&optest_modes[_i], &cs[i], 200 + i);
}
END_TEST

/* count_include_pad: ones, 3x3 window, stride 1, padding 1: a corner output
 * sees 4 pixels and 5 zeros (4/9), an edge 6/9, the inside 9/9. */
START_TEST(test_avg_padding_counts_as_zero)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    float x[20];
    for (int i = 0; i < 20; i++)
        x[i] = 1.0f;
    mpcl_pool2d_params p = {3, 3, 1, 1, 1, 1};
    mpcl_tensor *tx = act(ctx, x, 1, 1, 4, 5), *ty = act(ctx, NULL, 1, 1, 4, 5);
    ck_assert_msg(mpcl_avgpool2d_forward(ctx, ty, tx, &p) == MPCL_OK, "%s", mpcl_last_error(ctx));
    float *y = optest_download(ty);
    double tol = unit_roundoff(optest_modes[_i].mode);
    for (int oh = 0; oh < 4; oh++)
        for (int ow = 0; ow < 5; ow++) {
            int rows = (oh == 0 || oh == 3) ? 2 : 3, cols = (ow == 0 || ow == 4) ? 2 : 3;
            double want = rows * cols / 9.0;
            ck_assert_msg(fabs(y[oh * 5 + ow] - want) <= tol * want, "[%d, %d]: %g, expected %g", oh,
                          ow, (double)y[oh * 5 + ow], want);
        }
    free(y);
    mpcl_tensor_destroy(tx); mpcl_tensor_destroy(ty);
}
END_TEST

/* --------------------------------------------------------- bad arguments */

START_TEST(test_bad_arguments)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    mpcl_pool2d_params p = {3, 3, 2, 2, 1, 1}; /* 7x13 -> 4x7 */
    mpcl_tensor *x = act(ctx, NULL, 2, 3, 7, 13);
    mpcl_tensor *y_bad = act(ctx, NULL, 2, 3, 4, 6);
    mpcl_tensor *y = act(ctx, NULL, 2, 3, 4, 7);
    mpcl_tensor *am = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, 2, 3, 4, 7);
    mpcl_tensor *am_f = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, 2, 3, 4, 7);
    mpcl_tensor *x_wrong = optest_tensor(ctx, st == MPCL_F32 ? MPCL_F16 : MPCL_F32,
                                         MPCL_MEM_ACTIVATIONS, NULL, 2, 3, 7, 13);
    mpcl_tensor *tiny = act(ctx, NULL, 1, 1, 2, 2), *tiny_y = act(ctx, NULL, 1, 1, 1, 1);
    mpcl_tensor *dx = act(ctx, NULL, 2, 3, 7, 13);
    ck_assert_int_eq(mpcl_tensor_fill(x, 1.0f), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_fill(y_bad, 7.0f), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_fill(y, 7.0f), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_fill(tiny_y, 7.0f), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_fill(dx, 7.0f), MPCL_OK);

    /* wrong output shape: both shapes in the message, nothing written */
    ck_assert_int_eq(mpcl_maxpool2d_forward(ctx, y_bad, am, x, &p), MPCL_ERR_SHAPE);
    const char *e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(2, 3, 4, 6)") && strstr(e, "(2, 3, 4, 7)") && strstr(e, "(2, 3, 7, 13)"),
                  "message: %s", e);
    ck_assert_int_eq(mpcl_avgpool2d_forward(ctx, y_bad, x, &p), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(2, 3, 4, 6)") && strstr(e, "(2, 3, 7, 13)"), "message: %s", e);
    /* argmax must be i32, x the storage dtype */
    ck_assert_int_eq(mpcl_maxpool2d_forward(ctx, y, am_f, x, &p), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_maxpool2d_forward(ctx, y, am, x_wrong, &p), MPCL_ERR_ARGUMENT);
    /* empty output: 3x3 window over 2x2 without padding */
    mpcl_pool2d_params p3 = {3, 3, 1, 1, 0, 0};
    ck_assert_int_eq(mpcl_avgpool2d_forward(ctx, tiny_y, tiny, &p3), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "2x2") && strstr(e, "3x3"), "message: %s", e);
    /* padding >= window, zero stride, NULL params */
    mpcl_pool2d_params pp = {2, 2, 2, 2, 2, 0}, ps = {2, 2, 0, 2, 0, 0};
    ck_assert_int_eq(mpcl_avgpool2d_forward(ctx, y, x, &pp), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_avgpool2d_forward(ctx, y, x, &ps), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_avgpool2d_forward(ctx, y, x, NULL), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_avgpool2d_forward(NULL, y, x, &p), MPCL_ERR_ARGUMENT);
    /* backward: dy of the wrong shape for dx */
    ck_assert_int_eq(mpcl_avgpool2d_backward(ctx, dx, y_bad, &p), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(2, 3, 4, 6)") && strstr(e, "(2, 3, 7, 13)"), "message: %s", e);
    ck_assert_int_eq(mpcl_maxpool2d_backward(ctx, dx, y, am_f, &p), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_maxpool2d_backward(ctx, dx, y_bad, am, &p), MPCL_ERR_SHAPE);

    assert_all_equal("y after refused calls", y, 7.0f);
    assert_all_equal("y_bad after refused calls", y_bad, 7.0f);
    assert_all_equal("tiny y after refused calls", tiny_y, 7.0f);
    assert_all_equal("dx after refused calls", dx, 7.0f);
    mpcl_tensor_destroy(x); mpcl_tensor_destroy(y_bad); mpcl_tensor_destroy(y);
    mpcl_tensor_destroy(am); mpcl_tensor_destroy(am_f); mpcl_tensor_destroy(x_wrong);
    mpcl_tensor_destroy(tiny); mpcl_tensor_destroy(tiny_y); mpcl_tensor_destroy(dx);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_max_cases, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_max_padding_never_wins, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_max_nan_propagates, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_max_ties_zeros_inf, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_avg_cases, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_avg_padding_counts_as_zero, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_bad_arguments, 0, optest_nmodes);
    suite_add_tcase(s, tc);
    int rc = optest_run(s);
    return rc;
}
