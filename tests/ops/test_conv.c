/* test_conv.c — 2-D convolution, forward and backward, both algorithms
 * (im2col + GEMM and direct, forced with MPCL_CONV_ALGO), against
 * double-precision host references in every precision mode.
 *
 * Letters: B batch, C input channels, K output channels, H W input, OH OW
 * output, R S kernel.
 *
 * Tolerances (docs/ops/conv-pool.md): each result sums m terms in float and
 * is rounded to storage a few times (GEMM output, then bias / col2im /
 * accumulation into the gradient):
 *   |err| <= mag * (m 2^-24 + q u) + floor,
 * mag = sum of |terms| (|x||w| for y, |dy||w| for dx, |dy||x| for dw, |dy|
 * for db, plus the previous gradient's magnitude), u = 2^-24 in fp32 and
 * 2^-11 with half storage, q = 2 roundings (+1 per extra im2col chunk for
 * dw), floor = the smallest half subnormal in half modes. Finite
 * differences of the double reference check every gradient in fp32.
 *
 * MPCL_CONV_BENCH=1 runs the timing table of docs/ops/conv-pool.md instead
 * of the tests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "optest.h"

typedef struct {
    size_t b, c, h, w, k, r, s;
    mpcl_conv2d_params p;
    int fd; /* run the finite-difference check (fp32) */
} conv_case;

typedef struct {
    size_t oh, ow;
} conv_out;

static conv_out out_of(const conv_case *cc)
{
    conv_out o = {0, 0};
    ck_assert_int_eq(mpcl_conv2d_output_size(cc->h, cc->w, cc->r, cc->s, &cc->p, &o.oh, &o.ow), MPCL_OK);
    return o;
}

static size_t nx_of(const conv_case *cc) { return cc->b * cc->c * cc->h * cc->w; }
static size_t nw_of(const conv_case *cc) { return cc->k * cc->c * cc->r * cc->s; }
static size_t ny_of(const conv_case *cc)
{
    conv_out o = out_of(cc);
    return cc->b * cc->k * o.oh * o.ow;
}

/* ------------------------------------------------------ host references */

/* Calls f(b, k, oh, ow, c, ih, iw, r, s) for every (output, tap) pair that
 * lands inside the image: the one loop nest all references share. */
#define FOR_EACH_TAP(cc, o, BODY)                                                              \
    for (size_t b_ = 0; b_ < (cc)->b; b_++)                                                    \
        for (size_t k_ = 0; k_ < (cc)->k; k_++)                                                \
            for (size_t oh_ = 0; oh_ < (o).oh; oh_++)                                          \
                for (size_t ow_ = 0; ow_ < (o).ow; ow_++)                                      \
                    for (size_t c_ = 0; c_ < (cc)->c; c_++)                                    \
                        for (size_t r_ = 0; r_ < (cc)->r; r_++)                                \
                            for (size_t s_ = 0; s_ < (cc)->s; s_++) {                          \
                                long ih_ = (long)oh_ * (cc)->p.stride_h - (cc)->p.pad_h +      \
                                           (long)r_ * (cc)->p.dilation_h;                      \
                                long iw_ = (long)ow_ * (cc)->p.stride_w - (cc)->p.pad_w +      \
                                           (long)s_ * (cc)->p.dilation_w;                      \
                                if (ih_ < 0 || iw_ < 0 || ih_ >= (long)(cc)->h ||              \
                                    iw_ >= (long)(cc)->w)                                      \
                                    continue;                                                  \
                                size_t yi = ((b_ * (cc)->k + k_) * (o).oh + oh_) * (o).ow + ow_; \
                                size_t xi = ((b_ * (cc)->c + c_) * (cc)->h + (size_t)ih_) *    \
                                                (cc)->w + (size_t)iw_;                         \
                                size_t wi = ((k_ * (cc)->c + c_) * (cc)->r + r_) * (cc)->s + s_; \
                                BODY                                                           \
                            }

/* y (B, K, OH, OW) = x conv w + bias (bias may be NULL); ymag = sum of |terms|. */
static void ref_forward(const conv_case *cc, const double *x, const double *w, const double *bias,
                        double *y, double *ymag)
{
    conv_out o = out_of(cc);
    size_t ny = ny_of(cc), p = o.oh * o.ow;
    for (size_t i = 0; i < ny; i++) {
        size_t k = (i / p) % cc->k;
        y[i] = bias ? bias[k] : 0;
        if (ymag)
            ymag[i] = bias ? fabs(bias[k]) : 0;
    }
    FOR_EACH_TAP(cc, o, {
        y[yi] += x[xi] * w[wi];
        if (ymag)
            ymag[yi] += fabs(x[xi] * w[wi]);
    })
}

/* dx = (dy conv^T w); dw = dw0 + dy * x; db = db0 + sum dy; with magnitudes. */
static void ref_backward(const conv_case *cc, const double *dy, const double *x, const double *w,
                         const double *dw0, const double *db0, double *dx, double *dxmag,
                         double *dw, double *dwmag, double *db, double *dbmag)
{
    conv_out o = out_of(cc);
    size_t nx = nx_of(cc), nw = nw_of(cc), ny = ny_of(cc), p = o.oh * o.ow;
    for (size_t i = 0; i < nx; i++)
        dx[i] = dxmag[i] = 0;
    for (size_t i = 0; i < nw; i++) {
        dw[i] = dw0[i];
        dwmag[i] = fabs(dw0[i]);
    }
    for (size_t k = 0; k < cc->k; k++) {
        db[k] = db0[k];
        dbmag[k] = fabs(db0[k]);
    }
    for (size_t i = 0; i < ny; i++) {
        size_t k = (i / p) % cc->k;
        db[k] += dy[i];
        dbmag[k] += fabs(dy[i]);
    }
    FOR_EACH_TAP(cc, o, {
        dx[xi] += dy[yi] * w[wi];
        dxmag[xi] += fabs(dy[yi] * w[wi]);
        dw[wi] += dy[yi] * x[xi];
        dwmag[wi] += fabs(dy[yi] * x[xi]);
    })
}

/* --------------------------------------------------------------- helpers */

static double unit_roundoff(mpcl_precision mode) { return optest_unit_roundoff(mode); }

/* |got - ref| <= mag (m 2^-24 + q u) + floor elementwise; prints the worst
 * error relative to magnitude and the share of the bound it used. */
static void assert_conv_close(const char *what, const char *algo, mpcl_precision mode,
                              const float *got, const double *ref, const double *mag, size_t n,
                              size_t m, int q)
{
    double u = unit_roundoff(mode), floor_abs = mode == MPCL_PRECISION_FP32 ? 1e-30 : 0x1p-24;
    double rel = (double)m * 0x1p-24 + q * u, worst = 0, used = 0;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - ref[i]), bound = mag[i] * rel + floor_abs;
        if (!(err <= bound) && bad++ == 0)
            first = i;
        if (err / bound > used)
            used = err / bound;
        if (mag[i] >= 0x1p-10 && err / mag[i] > worst)
            worst = err / mag[i];
    }
    printf("  %-4s %-7s %-12s worst |err|/mag %.3g (bound %.3g), %.0f%% of the bound used\n", what,
           algo, mpcl_precision_name(mode), worst, rel, 100 * used);
    ck_assert_msg(bad == 0,
                  "%s (%s, %s): %zu of %zu out of tolerance; first [%zu] got %.9g ref %.9g mag %.3g",
                  what, algo, mpcl_precision_name(mode), bad, n, first, (double)got[first], ref[first],
                  mag[first]);
}

static double *to_double(const float *x, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    ck_assert_ptr_nonnull(d);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

static double *alloc_d(size_t n)
{
    double *d = calloc(n ? n : 1, sizeof *d);
    ck_assert_ptr_nonnull(d);
    return d;
}

static float *random_values(mpcl_context *ctx, size_t n, uint64_t seed, float lo, float hi)
{
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    optest_fill_uniform(x, n, seed, lo, hi);
    optest_quantize(ctx, x, n);
    return x;
}

static mpcl_tensor *st4(mpcl_context *ctx, const float *data, size_t a, size_t b, size_t c, size_t d)
{
    return optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, data, a, b, c, d);
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

/* The convolution settings of every mode's context (mpcl_conv_configure;
 * also called outside the test cases, so without ck_assert). */
static void configure_all(const char *algo, const char *im2col, size_t chunk)
{
    for (int i = 0; i < optest_nmodes; i++)
        if (optest_modes[i].ctx &&
            mpcl_conv_configure(optest_modes[i].ctx, algo, im2col, chunk) != MPCL_OK) {
            fprintf(stderr, "test_conv: %s\n", mpcl_last_error(optest_modes[i].ctx));
            exit(1);
        }
}

static void set_algo(const char *algo) { configure_all(algo, NULL, MPCL_CONV_KEEP); }
static void set_chunk(size_t n) { configure_all(NULL, NULL, n); }
static void set_im2col(const char *kind) { configure_all(NULL, kind, MPCL_CONV_KEEP); }
static void reset_settings(void) { configure_all("auto", "auto", 0); }

/* ------------------------------------------------------------ the cases */

static mpcl_conv2d_params P(int sh, int sw, int ph, int pw, int dh, int dw)
{
    mpcl_conv2d_params p = {sh, sw, ph, pw, dh, dw};
    return p;
}

/* ---------------------------------------------- forward + backward, one case */

/* Runs forward and backward with the algorithm `algo` and checks y, dx, dw
 * and db (dw and db start from non-zero values: they accumulate). chunk > 0
 * caps the im2col chunk. with_bias 0 runs without b and db; with_dx 0 passes
 * dx = NULL. */
static void run_case(const optest_mode *md, const conv_case *cc, const char *algo, size_t chunk,
                     int with_bias, int with_dx, uint64_t seed)
{
    mpcl_context *ctx = md->ctx;
    conv_out o = out_of(cc);
    size_t nx = nx_of(cc), nw = nw_of(cc), ny = ny_of(cc), crs = cc->c * cc->r * cc->s;
    float *x = random_values(ctx, nx, seed, -1, 1), *w = random_values(ctx, nw, seed + 1, -0.5f, 0.5f);
    float *bias = random_values(ctx, cc->k, seed + 2, -1, 1), *dy = random_values(ctx, ny, seed + 3, -1, 1);
    float *dw0 = random_values(ctx, nw, seed + 4, -1, 1), *db0 = random_values(ctx, cc->k, seed + 5, -1, 1);

    mpcl_tensor *tx = st4(ctx, x, cc->b, cc->c, cc->h, cc->w);
    mpcl_tensor *tw = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_WEIGHTS, w, cc->k, cc->c, cc->r, cc->s);
    mpcl_tensor *tb = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_WEIGHTS, bias, cc->k, 0, 0, 0);
    mpcl_tensor *ty = st4(ctx, NULL, cc->b, cc->k, o.oh, o.ow);
    mpcl_tensor *tdy = st4(ctx, dy, cc->b, cc->k, o.oh, o.ow);
    mpcl_tensor *tdx = st4(ctx, NULL, cc->b, cc->c, cc->h, cc->w);
    mpcl_tensor *tdw = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_GRADIENTS, dw0, cc->k, cc->c, cc->r, cc->s);
    mpcl_tensor *tdb = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_GRADIENTS, db0, cc->k, 0, 0, 0);
    ck_assert_int_eq(mpcl_tensor_fill(ty, NAN), MPCL_OK); /* every element must be written */
    ck_assert_int_eq(mpcl_tensor_fill(tdx, NAN), MPCL_OK);

    set_algo(algo);
    if (chunk)
        set_chunk(chunk);
    mpcl_status s = mpcl_conv2d_forward(ctx, ty, tx, tw, with_bias ? tb : NULL, &cc->p);
    ck_assert_msg(s == MPCL_OK, "forward: %s", mpcl_last_error(ctx));
    s = mpcl_conv2d_backward(ctx, with_dx ? tdx : NULL, tdw, with_bias ? tdb : NULL, tdy, tx, tw, &cc->p);
    ck_assert_msg(s == MPCL_OK, "backward: %s", mpcl_last_error(ctx));
    reset_settings();
    float *y = optest_download(ty), *dx = optest_download(tdx), *dw = optest_download(tdw);
    float *db = optest_download(tdb);

    double *xd = to_double(x, nx), *wd = to_double(w, nw), *bd = to_double(bias, cc->k);
    double *dyd = to_double(dy, ny), *dw0d = to_double(dw0, nw), *db0d = to_double(db0, cc->k);
    double *yr = alloc_d(ny), *ym = alloc_d(ny), *dxr = alloc_d(nx), *dxm = alloc_d(nx);
    double *dwr = alloc_d(nw), *dwm = alloc_d(nw), *dbr = alloc_d(cc->k), *dbm = alloc_d(cc->k);
    ref_forward(cc, xd, wd, with_bias ? bd : NULL, yr, ym);
    ref_backward(cc, dyd, xd, wd, dw0d, db0d, dxr, dxm, dwr, dwm, dbr, dbm);

    /* chunks of the im2col path each round dw to storage once (in the
     * 16-bit modes only im2col16: im2col sums dw in float there) */
    size_t nchunks = 1;
    if (strncmp(algo, "im2col", 6) == 0 && chunk)
        nchunks = (cc->b + chunk - 1) / chunk;
    assert_conv_close("y", algo, md->mode, y, yr, ym, ny, crs + 1, 2);
    if (with_dx)
        assert_conv_close("dx", algo, md->mode, dx, dxr, dxm, nx, cc->k * cc->r * cc->s, 2);
    else
        for (size_t i = 0; i < nx; i++) /* dx = NULL: the tensor was not touched */
            ck_assert_msg(isnan(dx[i]), "dx[%zu] written although dx was NULL", i);
    assert_conv_close("dw", algo, md->mode, dw, dwr, dwm, nw, cc->b * o.oh * o.ow + 1,
                      (int)nchunks + 1);
    if (with_bias)
        assert_conv_close("db", algo, md->mode, db, dbr, dbm, cc->k, cc->b * o.oh * o.ow + 1, 1);
    else
        for (size_t k = 0; k < cc->k; k++)
            ck_assert_msg(db[k] == db0[k], "db[%zu] changed although db was NULL", k);

    if (cc->fd && md->mode == MPCL_PRECISION_FP32 && with_bias && with_dx) {
        /* L = sum dy * y(x, w, b) is linear in each of x, w, b: central
         * differences in double (eps 1e-3) are exact up to rounding. The
         * device dw, db hold dw0 + grad. */
        const double eps = 1e-3;
        double *yp = alloc_d(ny), worst = 0;
        struct {
            double *v;
            size_t n;
            const float *dev;
            const float *base;
            const char *name;
        } vars[3] = {{xd, nx, dx, NULL, "dx"}, {wd, nw, dw, dw0, "dw"}, {bd, cc->k, db, db0, "db"}};
        for (int vi = 0; vi < 3; vi++)
            for (size_t j = 0; j < vars[vi].n; j++) {
                double keep = vars[vi].v[j], lp = 0, lm = 0;
                vars[vi].v[j] = keep + eps;
                ref_forward(cc, xd, wd, bd, yp, NULL);
                for (size_t i = 0; i < ny; i++)
                    lp += dyd[i] * yp[i];
                vars[vi].v[j] = keep - eps;
                ref_forward(cc, xd, wd, bd, yp, NULL);
                for (size_t i = 0; i < ny; i++)
                    lm += dyd[i] * yp[i];
                vars[vi].v[j] = keep;
                double fd = (lp - lm) / (2 * eps);
                double dev = vars[vi].dev[j] - (vars[vi].base ? (double)vars[vi].base[j] : 0.0);
                double err = fabs(fd - dev);
                if (err > worst)
                    worst = err;
                ck_assert_msg(err <= 1e-5 + 1e-4 * fabs(fd), "%s[%zu] (%s): device %g, finite difference %g",
                              vars[vi].name, j, algo, dev, fd);
            }
        printf("  fd   %-7s %-12s worst |grad - finite difference| %.3g\n", algo, md->name, worst);
        free(yp);
    }
    free(x); free(w); free(bias); free(dy); free(dw0); free(db0);
    free(y); free(dx); free(dw); free(db);
    free(xd); free(wd); free(bd); free(dyd); free(dw0d); free(db0d);
    free(yr); free(ym); free(dxr); free(dxm); free(dwr); free(dwm); free(dbr); free(dbm);
    mpcl_tensor_destroy(tx); mpcl_tensor_destroy(tw); mpcl_tensor_destroy(tb);
    mpcl_tensor_destroy(ty); mpcl_tensor_destroy(tdy); mpcl_tensor_destroy(tdx);
    mpcl_tensor_destroy(tdw); mpcl_tensor_destroy(tdb);
}

/* Normal mode: odd sizes, batch 1, stride 2, padding 1, dilation 2,
 * rectangular kernels and strides, K = C*R*S not a multiple of 16, and the
 * layers of the small CNNs mpcl trains. */
static const conv_case normal_cases[] = {
    {2, 3, 7, 13, 5, 3, 3, {2, 2, 1, 1, 1, 1}, 1},   /* odd image, stride 2, pad 1 */
    {1, 3, 7, 13, 5, 3, 3, {1, 1, 1, 1, 2, 2}, 1},   /* batch 1, dilation 2 */
    {2, 4, 9, 10, 7, 2, 3, {1, 2, 0, 1, 2, 1}, 1},   /* rectangular everything, CRS 24 */
    {3, 1, 28, 28, 10, 5, 5, {1, 1, 0, 0, 1, 1}, 0}, /* seed CNN conv1 */
    {2, 6, 14, 14, 16, 5, 5, {1, 1, 0, 0, 1, 1}, 0}, /* LeNet-5 conv2 */
    {2, 32, 14, 14, 64, 3, 3, {1, 1, 1, 1, 1, 1}, 0}, /* CRS 288 */
    {2, 2, 3, 1, 3, 3, 3, {1, 1, 1, 1, 1, 1}, 1},    /* W 1: side taps never land */
    {3, 5, 6, 7, 4, 1, 1, {1, 1, 0, 0, 1, 1}, 1},    /* 1x1, C 5 */
    {2, 3, 15, 13, 5, 7, 7, {2, 2, 3, 3, 1, 1}, 0},  /* 7x7, stride 2, pad 3 */
    {2, 5, 11, 12, 6, 3, 3, {3, 2, 2, 1, 2, 1}, 0},  /* stride 3x2, pad 2x1, dilation 2x1 */
    {4, 7, 9, 9, 9, 2, 2, {2, 2, 0, 0, 1, 1}, 0},    /* even kernel, stride 2, C 7 */
    {4, 2, 16, 16, 3, 3, 3, {1, 1, 1, 1, 1, 1}, 0},  /* N = 4*16*16 = 1024: rows padded off 4 KiB */
};
/* Small mode (oclgrind): tiny shapes with the same features. */
static const conv_case small_cases[] = {
    {1, 2, 5, 6, 3, 3, 3, {2, 2, 1, 1, 1, 1}, 1},
    {1, 1, 6, 7, 2, 3, 2, {1, 1, 1, 1, 2, 2}, 1},
    {1, 2, 3, 1, 2, 3, 3, {1, 1, 1, 1, 1, 1}, 1},
    {2, 3, 4, 3, 2, 1, 1, {1, 1, 0, 0, 1, 1}, 0},   /* 1x1, two images */
    {2, 1, 7, 6, 2, 7, 7, {2, 3, 3, 3, 1, 1}, 0},   /* 7x7, stride 2x3, pad 3 */
    {1, 1, 32, 32, 2, 1, 1, {1, 1, 0, 0, 1, 1}, 0}, /* N = 1024: rows padded off 4 KiB */
};

static const conv_case *cases(size_t *n)
{
    if (optest_small()) {
        *n = sizeof small_cases / sizeof small_cases[0];
        return small_cases;
    }
    *n = sizeof normal_cases / sizeof normal_cases[0];
    return normal_cases;
}

/* The cases for a mode: all of them in fp32; in the 16-bit modes, outside
 * oclgrind, the first seven (odd sizes, stride, padding, dilation,
 * rectangular kernels, the shipped nets' layers, W 1): the index
 * arithmetic is the same kernel text in every mode and fp32 runs the
 * rest, and each case costs a program build per mode (the suite's time). */
static const conv_case *mode_cases(int mode_index, size_t *n)
{
    const conv_case *cs = cases(n);
    if (!optest_small() && mpcl_storage_dtype(optest_modes[mode_index].ctx) != MPCL_F32 && *n > 7)
        *n = 7;
    return cs;
}

START_TEST(test_im2col)
{
    size_t n;
    const conv_case *cs = mode_cases(_i, &n);
    for (size_t i = 0; i < n; i++)
        run_case(&optest_modes[_i], &cs[i], "im2col", 0, 1, 1, 1000 + 10 * i);
}
END_TEST

/* The 16-bit modes' im2col path on the storage type (im2col runs it in
 * float there; fp32 has one im2col path): three cases (odd sizes, stride
 * and padding; rectangular kernel, stride and dilation; a LeNet-5 layer,
 * or a 1x1 one under oclgrind), which reach the 16-bit column matrix, the
 * pair gathers and the 16-bit GEMMs. */
START_TEST(test_im2col16)
{
    if (mpcl_storage_dtype(optest_modes[_i].ctx) == MPCL_F32)
        return;
    size_t n;
    const conv_case *cs = cases(&n);
    static const size_t pick[] = {0, 2, 4}; /* stride 2 pad 1; rectangular; LeNet-5 / 1x1 */
    for (size_t i = 0; i < sizeof pick / sizeof pick[0] && pick[i] < n; i++)
        run_case(&optest_modes[_i], &cs[pick[i]], "im2col16", 0, 1, 1, 1500 + 10 * pick[i]);
}
END_TEST

/* im2col-dwt (the weight gradient summed transposed from the forward
 * column matrix): in fp32 stride and padding, rectangular everything,
 * CRS 288, 1x1, 7x7 and N = 1024; in the 16-bit modes, whose float
 * pipeline runs the same fp32 kernels on cast copies, the first. */
START_TEST(test_im2col_dwt)
{
    size_t n;
    const conv_case *cs = mode_cases(_i, &n);
    static const size_t pick[] = {0, 2, 5, 7, 8, 11};
    const size_t picks = mpcl_storage_dtype(optest_modes[_i].ctx) == MPCL_F32 ? 6 : 1;
    for (size_t i = 0; i < picks && pick[i] < n; i++)
        run_case(&optest_modes[_i], &cs[pick[i]], "im2col-dwt", 0, 1, 1, 1700 + 10 * pick[i]);
}
END_TEST

/* Both forward-layout im2col kernels where both apply (stride 1 across),
 * forced with mpcl_conv_configure (the measured choice runs one of them): the
 * first three such cases in fp32, the first in the 16-bit modes (a copy of
 * bits there), the rows kernel under im2col-dwt (whose backward pass
 * writes col in the forward layout too), the tap kernel under im2col. */
START_TEST(test_im2col_kernels)
{
    size_t n;
    const conv_case *cs = mode_cases(_i, &n);
    static const char *const kinds[] = {"rows", "taps"};
    const size_t want = mpcl_storage_dtype(optest_modes[_i].ctx) == MPCL_F32 ? 3 : 1;
    for (size_t i = 0, done = 0; i < n && done < want; i++) {
        if (cs[i].p.stride_w != 1)
            continue;
        for (int k = 0; k < 2; k++) {
            set_im2col(kinds[k]);
            run_case(&optest_modes[_i], &cs[i], k ? "im2col" : "im2col-dwt", 0, 1, 1,
                     1800 + 10 * i);
        }
        done++;
    }
}
END_TEST

START_TEST(test_direct)
{
    size_t n;
    const conv_case *cs = mode_cases(_i, &n);
    for (size_t i = 0; i < n; i++)
        run_case(&optest_modes[_i], &cs[i], "direct", 0, 1, 1, 2000 + 10 * i);
}
END_TEST

/* No bias, no dx (a first layer), in both algorithms. */
START_TEST(test_no_bias_no_dx)
{
    const conv_case cc = {2, 2, 6, 5, 3, 3, 2, {1, 2, 1, 0, 1, 1}, 0};
    run_case(&optest_modes[_i], &cc, "im2col", 0, 0, 0, 3000);
    run_case(&optest_modes[_i], &cc, "direct", 0, 0, 0, 3010);
}
END_TEST

/* im2col in chunks: one image per GEMM, and 2 images per chunk over a batch
 * of 3 or 5 (a partial last chunk), checking the chunk offsets. */
START_TEST(test_im2col_chunks)
{
    conv_case cc = {5, 3, 7, 13, 5, 3, 3, {2, 2, 1, 1, 1, 1}, 0};
    if (optest_small())
        cc.b = 3, cc.h = 5, cc.w = 6, cc.c = 2;
    run_case(&optest_modes[_i], &cc, "im2col", 1, 1, 1, 4000);
    run_case(&optest_modes[_i], &cc, "im2col", 2, 1, 1, 4010);
    run_case(&optest_modes[_i], &cc, "im2col-dwt", 2, 1, 1, 4015);
    if (mpcl_storage_dtype(optest_modes[_i].ctx) != MPCL_F32)
        run_case(&optest_modes[_i], &cc, "im2col16", 2, 1, 1, 4020);
}
END_TEST

/* auto (direct for C*R*S <= 25, im2col above) gives the same answers, on
 * both sides of the rule. */
START_TEST(test_auto)
{
    const conv_case direct_side = {2, 1, 7, 13, 5, 5, 5, {2, 2, 1, 1, 1, 1}, 0}; /* CRS 25 */
    const conv_case gemm_side = {2, 3, 7, 13, 5, 3, 3, {2, 2, 1, 1, 1, 1}, 0};   /* CRS 27 */
    run_case(&optest_modes[_i], &direct_side, "auto", 0, 1, 1, 5000);
    run_case(&optest_modes[_i], &gemm_side, "auto", 0, 1, 1, 5010);
}
END_TEST

/* ------------------------------------------- measured choice and cache */

/* The algorithm a context ran for its only convolution geometry: which of
 * the families "conv" (im2col) and "conv_direct" it built a specialised
 * program of (1 im2col, 2 direct, 3 both, 0 none). */
static int families_built(const mpcl_context *ctx)
{
    int got = 0;
    for (size_t i = 0; i < ctx->spec_count && i < MPCL_MAX_SPEC_PROGRAMS; i++) {
        if (!ctx->spec[i].program)
            continue;
        if (strcmp(ctx->spec[i].family, "conv") == 0)
            got |= 1;
        else if (strcmp(ctx->spec[i].family, "conv_direct") == 0)
            got |= 2;
    }
    return got;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
}

/* Opens a context in mode on cache directory dir (NULL: no cache), runs
 * one forward and one backward pass of cc with MPCL_CONV_ALGO unset, checks
 * y against the reference and returns the context (the caller destroys
 * it). */
static mpcl_context *choice_run(mpcl_precision mode, const char *dir, const conv_case *cc)
{
    mpcl_options o;
    mpcl_options_init(&o);
    o.precision = mode;
    o.cache_dir = dir;
    o.no_cache = dir == NULL;
    o.max_work_group_size = optest_cap();
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&o, &ctx);
    ck_assert_msg(s == MPCL_OK, "context: %s", mpcl_last_error(ctx));
    reset_settings();
    conv_out o2 = out_of(cc);
    size_t nx = nx_of(cc), nw = nw_of(cc), ny = ny_of(cc);
    float *x = random_values(ctx, nx, 77, -1, 1), *w = random_values(ctx, nw, 78, -0.5f, 0.5f);
    mpcl_tensor *tx = st4(ctx, x, cc->b, cc->c, cc->h, cc->w);
    mpcl_tensor *tw = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_WEIGHTS, w, cc->k, cc->c, cc->r, cc->s);
    mpcl_tensor *ty = st4(ctx, NULL, cc->b, cc->k, o2.oh, o2.ow);
    mpcl_tensor *tdx = st4(ctx, NULL, cc->b, cc->c, cc->h, cc->w);
    mpcl_tensor *tdw = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_GRADIENTS, NULL, cc->k, cc->c, cc->r, cc->s);
    ck_assert_int_eq(mpcl_tensor_fill(tdw, 0), MPCL_OK);
    s = mpcl_conv2d_forward(ctx, ty, tx, tw, NULL, &cc->p);
    ck_assert_msg(s == MPCL_OK, "forward: %s", mpcl_last_error(ctx));
    s = mpcl_conv2d_backward(ctx, tdx, tdw, NULL, ty, tx, tw, &cc->p);
    ck_assert_msg(s == MPCL_OK, "backward: %s", mpcl_last_error(ctx));
    float *y = optest_download(ty);
    double *xd = to_double(x, nx), *wd = to_double(w, nw), *yr = alloc_d(ny), *ym = alloc_d(ny);
    ref_forward(cc, xd, wd, NULL, yr, ym);
    assert_conv_close("y", "auto", mode, y, yr, ym, ny, cc->c * cc->r * cc->s + 1, 2);
    free(x); free(w); free(y); free(xd); free(wd); free(yr); free(ym);
    mpcl_tensor_destroy(tx); mpcl_tensor_destroy(tw); mpcl_tensor_destroy(ty);
    mpcl_tensor_destroy(tdx); mpcl_tensor_destroy(tdw);
    return ctx;
}

/* The first context on a cache directory measures each layer once and
 * writes the verdict; a second one reads it instead of measuring and runs
 * what it says (a hand-written verdict, either way); a file that does not
 * parse is measured again and replaced; without a cache nothing is
 * measured and the static rule applies. No timing is asserted. */
START_TEST(test_choice_cache)
{
    if (optest_cap()) { /* the verdict file, not a launch shape: the uncapped run covers it */
        printf("  choice cache: not run under a work-group cap\n");
        return;
    }
    const mpcl_precision mode = optest_modes[_i].mode;
    /* CRS 18: the static rule says direct */
    const conv_case cc = {2, 2, 6, 7, 3, 3, 3, {1, 1, 1, 1, 1, 1}, 0};
    const char *base = getenv("MPCL_TEST_TMPDIR");
    char dir[1024], path[1400], line[256];
    snprintf(dir, sizeof dir, "%s/mpcl-convchoice-XXXXXX", base && *base ? base : "/tmp");
    if (base && *base)
        mkdir(base, 0755);
    ck_assert_msg(mkdtemp(dir) != NULL, "mkdtemp %s", dir);

    mpcl_context *a = choice_run(mode, dir, &cc);
    if (!a->cache_enabled) { /* MPCL_NO_CACHE in the environment */
        printf("  choice cache: skipped, the cache is disabled in this environment\n");
        mpcl_context_destroy(a);
        return;
    }
    ck_assert_uint_eq(a->conv_measured, 2); /* the forward pass and the backward one (with dx) */
    ck_assert_uint_eq(a->conv_cached, 0);
    const int measured = families_built(a);
    ck_assert_msg(measured == 3, "the measurement ran both algorithms (families %d)", measured);
    snprintf(path, sizeof path, "%s/conv-%s-%016llx.txt", dir,
             mpcl_variant_name(mpcl_ctx_variant(a)), (unsigned long long)mpcl_device_hash(a));
    mpcl_context_destroy(a);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no cache file %s", path);
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "mpcl-conv 3\n");
    for (int pass = 0; pass < 2; pass++) {
        char name[16];
        unsigned nb = 9, rows = 9;
        int got_pass = -1, used = 0;
        ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
        ck_assert_msg(sscanf(line, "%15s %u %u %d%n", name, &nb, &rows, &got_pass, &used) == 4 &&
                          got_pass == pass && rows <= 1 &&
                          strcmp(line + used, " 2 2 6 7 3 3 3 1 1 1 1 1 1\n") == 0,
                      "cache line: %s", line);
        /* direct and im2col16 without chunks, im2col16 only in the 16-bit
         * modes, im2col-dwt only backward; the float-summing im2col paths
         * may measure chunks of 1 image faster */
        const int is_d = strcmp(name, "direct") == 0, is_i = strcmp(name, "im2col") == 0;
        const int is_16 = strcmp(name, "im2col16") == 0, is_t = strcmp(name, "im2col-dwt") == 0;
        ck_assert_msg(((is_d || is_16) && nb == 0) || ((is_i || is_t) && nb <= 1),
                      "cache line: %s", line);
        ck_assert_msg(!is_16 || mode != MPCL_PRECISION_FP32, "cache line: %s", line);
        ck_assert_msg(!is_t || pass == 1, "cache line: %s", line);
    }
    ck_assert_ptr_null(fgets(line, sizeof line, f));
    fclose(f);

    /* a second context reads the verdict: hand-written, each way */
    static const struct {
        const char *text;
        int family;
    } verdicts[] = {{"mpcl-conv 3\ndirect 0 1 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n"
                     "direct 0 1 1 2 2 6 7 3 3 3 1 1 1 1 1 1\n", 2},
                    {"mpcl-conv 3\nim2col 0 1 0 9 9 9 9 9 3 3 1 1 1 1 1 1\n"
                     "im2col 0 1 0 2 2 6 7 3 3 3 1 1 1 1 1 1\nim2col 0 1 1 2 2 6 7 3 3 3 1 1 1 1 1 1\n", 1},
                    {"mpcl-conv 3\nim2col16 0 1 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n"
                     "im2col16 0 1 1 2 2 6 7 3 3 3 1 1 1 1 1 1\n", 1},
                    {"mpcl-conv 3\nim2col 0 1 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n"
                     "im2col-dwt 0 1 1 2 2 6 7 3 3 3 1 1 1 1 1 1\n", 1},
                    {"mpcl-conv 3\nim2col 1 1 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n" /* chunks of 1 image */
                     "im2col-dwt 1 1 1 2 2 6 7 3 3 3 1 1 1 1 1 1\n", 1},
                    {"mpcl-conv 3\nim2col 0 0 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n" /* the tap kernel */
                     "im2col-dwt 0 0 1 2 2 6 7 3 3 3 1 1 1 1 1 1\n", 1}};
    /* the file's parsing is the same code in every mode: all of it in
     * fp32; in the 16-bit modes the direct verdict and im2col16, theirs
     * alone (each case is a context of its own: the suite's time) */
    const int every = mode == MPCL_PRECISION_FP32;
    for (int v = 0; v < 6; v++) {
        if (!every && v != 0 && v != 2)
            continue;
        write_text(path, verdicts[v].text);
        mpcl_context *b = choice_run(mode, dir, &cc);
        ck_assert_uint_eq(b->conv_measured, 0);
        ck_assert_uint_eq(b->conv_cached, 2);
        ck_assert_int_eq(families_built(b), verdicts[v].family);
        mpcl_context_destroy(b);
    }

    /* files that do not parse: measured again, and replaced */
    static const char *const corrupt[] = {
        "mpcl-conv 3\nwinograd 0 1 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n",
        "mpcl-conv 1\ndirect 2 2 6 7 3 3 3 1 1 1 1 1 1\n", /* format 1: one verdict per layer */
        "mpcl-conv 2\ndirect 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n", /* format 2: no chunks, no im2col-dwt */
        "mpcl-conv 3\nim2col-dwt 0 1 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n", /* im2col-dwt is backward only */
        "mpcl-conv 3\ndirect 0 1 0 2 2 6 7 3 3 3 1 1 1 1 1\n",
        "mpcl-conv 3\ndirect 0 1 3 2 2 6 7 3 3 3 1 1 1 1 1 1\n", /* no pass 3 */
        "mpcl-conv 3\ndirect 1 1 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n",  /* direct has no chunks */
        "mpcl-conv 3\nim2col 3 1 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n",  /* a chunk above the batch */
        "mpcl-conv 3\nim2col 0 2 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n",  /* rows is 0 or 1 */
        "\x01\x02garbage",
    };
    for (size_t c = 0; c < (every ? sizeof corrupt / sizeof corrupt[0] : 2); c++) {
        write_text(path, corrupt[c]);
        mpcl_context *d = choice_run(mode, dir, &cc);
        ck_assert_msg(d->conv_measured == 2 && d->conv_cached == 0,
                      "corrupt file %zu: measured %u, cached %u", c, d->conv_measured, d->conv_cached);
        mpcl_context_destroy(d);
        f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
        ck_assert_str_eq(line, "mpcl-conv 3\n");
        ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
        ck_assert_msg(strstr(line, " 0 2 2 6 7 3 3 3 1 1 1 1 1 1\n") != NULL, "rewritten: %s", line);
        fclose(f);
    }

    /* no cache: the static rule (direct for C*R*S 18), nothing measured */
    mpcl_context *n = choice_run(mode, NULL, &cc);
    ck_assert_uint_eq(n->conv_measured, 0);
    ck_assert_uint_eq(n->conv_cached, 0);
    ck_assert_int_eq(families_built(n), 2);
    mpcl_context_destroy(n);
}
END_TEST

START_TEST(test_output_size)
{
    size_t oh = 99, ow = 99;
    mpcl_conv2d_params d = mpcl_conv2d_default();
    ck_assert(d.stride_h == 1 && d.stride_w == 1 && d.pad_h == 0 && d.pad_w == 0 &&
              d.dilation_h == 1 && d.dilation_w == 1);
    ck_assert_int_eq(mpcl_conv2d_output_size(28, 28, 5, 5, &d, &oh, &ow), MPCL_OK);
    ck_assert(oh == 24 && ow == 24);
    mpcl_conv2d_params p = P(2, 2, 1, 1, 1, 1);
    ck_assert_int_eq(mpcl_conv2d_output_size(7, 13, 3, 3, &p, &oh, &ow), MPCL_OK);
    ck_assert(oh == 4 && ow == 7);
    p = P(1, 1, 1, 1, 2, 2); /* (7 + 2 - 2*2 - 1) / 1 + 1 = 5; (13 + 2 - 5) + 1 = 11 */
    ck_assert_int_eq(mpcl_conv2d_output_size(7, 13, 3, 3, &p, &oh, &ow), MPCL_OK);
    ck_assert(oh == 5 && ow == 11);
    p = P(1, 2, 0, 1, 2, 1); /* (9 - 2 - 1) + 1 = 7; (10 + 2 - 3) / 2 + 1 = 5 */
    ck_assert_int_eq(mpcl_conv2d_output_size(9, 10, 2, 3, &p, &oh, &ow), MPCL_OK);
    ck_assert(oh == 7 && ow == 5);
    ck_assert_int_eq(mpcl_conv2d_output_size(2, 2, 3, 3, &d, &oh, &ow), MPCL_ERR_SHAPE);
    ck_assert(oh == 0 && ow == 0);
    p = P(1, 1, 0, 0, 3, 3); /* a dilated 3x3 spans 7 */
    ck_assert_int_eq(mpcl_conv2d_output_size(6, 7, 3, 3, &p, &oh, &ow), MPCL_ERR_SHAPE);
    ck_assert_int_eq(mpcl_conv2d_output_size(7, 7, 3, 3, &p, &oh, &ow), MPCL_OK);
    ck_assert(oh == 1 && ow == 1);
    p = P(0, 1, 0, 0, 1, 1);
    ck_assert_int_eq(mpcl_conv2d_output_size(7, 7, 3, 3, &p, &oh, &ow), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_conv2d_output_size(7, 7, 3, 3, NULL, &oh, &ow), MPCL_ERR_ARGUMENT);
}
END_TEST

/* Refused calls return the status, name both shapes, and write nothing. */
START_TEST(test_bad_arguments)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_dtype st = mpcl_storage_dtype(ctx), other = st == MPCL_F32 ? MPCL_F16 : MPCL_F32;
    mpcl_conv2d_params p = P(2, 2, 1, 1, 1, 1), d = mpcl_conv2d_default();
    mpcl_tensor *x = st4(ctx, NULL, 2, 3, 7, 13);
    mpcl_tensor *w = optest_tensor(ctx, st, MPCL_MEM_WEIGHTS, NULL, 5, 3, 3, 3);
    mpcl_tensor *w4 = optest_tensor(ctx, st, MPCL_MEM_WEIGHTS, NULL, 5, 4, 3, 3);
    mpcl_tensor *w_f = optest_tensor(ctx, other, MPCL_MEM_WEIGHTS, NULL, 5, 3, 3, 3);
    mpcl_tensor *b = optest_tensor(ctx, st, MPCL_MEM_WEIGHTS, NULL, 5, 0, 0, 0);
    mpcl_tensor *b6 = optest_tensor(ctx, st, MPCL_MEM_WEIGHTS, NULL, 6, 0, 0, 0);
    mpcl_tensor *y = st4(ctx, NULL, 2, 5, 4, 7), *y_bad = st4(ctx, NULL, 2, 5, 4, 6);
    mpcl_tensor *dx = st4(ctx, NULL, 2, 3, 7, 13), *dx_bad = st4(ctx, NULL, 2, 3, 7, 12);
    mpcl_tensor *dw = optest_tensor(ctx, st, MPCL_MEM_GRADIENTS, NULL, 5, 3, 3, 3);
    mpcl_tensor *dw_bad = optest_tensor(ctx, st, MPCL_MEM_GRADIENTS, NULL, 5, 3, 3, 2);
    mpcl_tensor *db = optest_tensor(ctx, st, MPCL_MEM_GRADIENTS, NULL, 5, 0, 0, 0);
    mpcl_tensor *tiny = st4(ctx, NULL, 1, 1, 2, 2), *tiny_y = st4(ctx, NULL, 1, 1, 1, 1);
    mpcl_tensor *w33 = optest_tensor(ctx, st, MPCL_MEM_WEIGHTS, NULL, 1, 1, 3, 3);
    mpcl_tensor *all[] = {x, w, w4, w_f, b, b6, y, y_bad, dx, dx_bad, dw, dw_bad, db, tiny, tiny_y, w33};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ck_assert_int_eq(mpcl_tensor_fill(all[i], 7.0f), MPCL_OK);
    const char *e;

    /* empty output: a 3x3 kernel over a 2x2 image without padding */
    ck_assert_int_eq(mpcl_conv2d_forward(ctx, tiny_y, tiny, w33, NULL, &d), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "2x2") && strstr(e, "3x3") && strstr(e, "stride 1x1") &&
                      strstr(e, "padding 0x0") && strstr(e, "dilation 1x1"),
                  "message: %s", e);
    ck_assert_int_eq(mpcl_conv2d_backward(ctx, tiny, w33, NULL, tiny_y, tiny, w33, &d), MPCL_ERR_SHAPE);
    /* mismatched channel counts: x has 3, w 4 */
    ck_assert_int_eq(mpcl_conv2d_forward(ctx, y, x, w4, b, &p), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(5, 4, 3, 3)") && strstr(e, "(2, 3, 7, 13)"), "message: %s", e);
    ck_assert_int_eq(mpcl_conv2d_backward(ctx, dx, dw, db, y, x, w4, &p), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(5, 4, 3, 3)") && strstr(e, "(2, 3, 7, 13)"), "message: %s", e);
    /* wrong output shape */
    ck_assert_int_eq(mpcl_conv2d_forward(ctx, y_bad, x, w, b, &p), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(2, 5, 4, 6)") && strstr(e, "(2, 5, 4, 7)") && strstr(e, "(2, 3, 7, 13)"),
                  "message: %s", e);
    /* bias of the wrong length, weights of the wrong dtype, bad parameters */
    ck_assert_int_eq(mpcl_conv2d_forward(ctx, y, x, w, b6, &p), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(6)") && strstr(e, "(5, 3, 3, 3)"), "message: %s", e);
    ck_assert_int_eq(mpcl_conv2d_forward(ctx, y, x, w_f, b, &p), MPCL_ERR_ARGUMENT);
    mpcl_conv2d_params bad = P(0, 1, 0, 0, 1, 1);
    ck_assert_int_eq(mpcl_conv2d_forward(ctx, y, x, w, b, &bad), MPCL_ERR_ARGUMENT);
    bad = P(1, 1, -1, 0, 1, 1);
    ck_assert_int_eq(mpcl_conv2d_forward(ctx, y, x, w, b, &bad), MPCL_ERR_ARGUMENT);
    bad = P(1, 1, 0, 0, 1, 0);
    ck_assert_int_eq(mpcl_conv2d_forward(ctx, y, x, w, b, &bad), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_conv2d_forward(ctx, y, x, w, b, NULL), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_conv2d_forward(NULL, y, x, w, b, &p), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_conv2d_forward(ctx, NULL, x, w, b, &p), MPCL_ERR_ARGUMENT);
    /* backward: wrong dy, dx, dw shapes */
    ck_assert_int_eq(mpcl_conv2d_backward(ctx, dx, dw, db, y_bad, x, w, &p), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(2, 5, 4, 6)") && strstr(e, "(2, 3, 7, 13)"), "message: %s", e);
    ck_assert_int_eq(mpcl_conv2d_backward(ctx, dx_bad, dw, db, y, x, w, &p), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(2, 3, 7, 12)") && strstr(e, "(2, 3, 7, 13)"), "message: %s", e);
    ck_assert_int_eq(mpcl_conv2d_backward(ctx, dx, dw_bad, db, y, x, w, &p), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(5, 3, 3, 2)") && strstr(e, "(5, 3, 3, 3)"), "message: %s", e);
    ck_assert_int_eq(mpcl_conv2d_backward(ctx, dx, dw, b6, y, x, w, &p), MPCL_ERR_SHAPE);
    /* an unknown algorithm or im2col kernel: refused, the settings kept */
    ck_assert_int_eq(mpcl_conv_configure(ctx, "im2col", NULL, 0), MPCL_OK);
    ck_assert_int_eq(mpcl_conv_configure(ctx, "winograd", "rows", 5), MPCL_ERR_ARGUMENT);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "winograd") && strstr(e, "algo"), "message: %s", e);
    ck_assert_int_eq(mpcl_conv_configure(ctx, NULL, "gathers", 5), MPCL_ERR_ARGUMENT);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "im2col") && strstr(e, "gathers"), "message: %s", e);
    ck_assert_int_eq(mpcl_conv_configure(NULL, "im2col", NULL, 0), MPCL_ERR_ARGUMENT);
    reset_settings();
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        assert_all_equal("a tensor after refused calls", all[i], 7.0f);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mpcl_tensor_destroy(all[i]);
}
END_TEST

/* ----------------------------------------------------------- benchmark */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Milliseconds per call, median of REPS after a warm-up: which 0 forward,
 * 1 backward dx only, 2 backward dw and db only. t: x, w, b, y (= dy), dx,
 * dw, db. */
static double time_conv(mpcl_context *ctx, const conv_case *cc, int which, mpcl_tensor *const *t)
{
    enum { REPS = 7 };
    double ms[REPS];
    for (int rep = -1; rep < REPS; rep++) { /* rep -1 warms up (builds, scratch) */
        double t0 = now_s();
        mpcl_status s;
        if (which == 0)
            s = mpcl_conv2d_forward(ctx, t[3], t[0], t[1], t[2], &cc->p);
        else if (which == 1)
            s = mpcl_conv2d_backward(ctx, t[4], NULL, NULL, t[3], t[0], t[1], &cc->p);
        else
            s = mpcl_conv2d_backward(ctx, NULL, t[5], t[6], t[3], t[0], t[1], &cc->p);
        if (s == MPCL_OK)
            s = mpcl_finish(ctx);
        if (s != MPCL_OK) {
            fprintf(stderr, "bench: %s\n", mpcl_last_error(ctx));
            return -1;
        }
        if (rep >= 0)
            ms[rep] = 1e3 * (now_s() - t0);
    }
    for (int i = 0; i < REPS; i++) /* insertion sort for the median */
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            double tmp = ms[j];
            ms[j] = ms[j - 1];
            ms[j - 1] = tmp;
        }
    return ms[REPS / 2];
}

static int run_bench(void)
{
    static const struct {
        const char *name;
        conv_case cc;
    } layers[] = {
        {"seed CNN conv 1->10 k5, 28x28", {64, 1, 28, 28, 10, 5, 5, {1, 1, 0, 0, 1, 1}, 0}},
        {"LeNet-5 conv 1->6 k5 pad 2, 28x28", {64, 1, 28, 28, 6, 5, 5, {1, 1, 2, 2, 1, 1}, 0}},
        {"LeNet-5 conv 6->16 k5, 14x14", {64, 6, 14, 14, 16, 5, 5, {1, 1, 0, 0, 1, 1}, 0}},
        {"conv 3->16 k3 pad 1, 32x32", {64, 3, 32, 32, 16, 3, 3, {1, 1, 1, 1, 1, 1}, 0}},
        {"conv 32->64 k3 pad 1, 14x14", {64, 32, 14, 14, 64, 3, 3, {1, 1, 1, 1, 1, 1}, 0}},
    };
    static const char *const settings[][2] = {
        {"direct", ""}, {"im2col", ""}, {"im2col", "1"}, {"auto", ""}};
    printf("B = 64; ms per call, median of 7 after a warm-up: forward, backward dx only, "
           "backward dw + db only\n");
    for (int mi = 0; mi < optest_nmodes; mi++) {
        mpcl_context *ctx = optest_modes[mi].ctx;
        for (size_t li = 0; li < sizeof layers / sizeof layers[0]; li++) {
            const conv_case *cc = &layers[li].cc;
            conv_out o;
            if (mpcl_conv2d_output_size(cc->h, cc->w, cc->r, cc->s, &cc->p, &o.oh, &o.ow) != MPCL_OK)
                return 1;
            size_t nx = nx_of(cc), nw = nw_of(cc), ny = cc->b * cc->k * o.oh * o.ow;
            float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w), *dy = malloc(ny * sizeof *dy);
            float *bias = malloc(cc->k * sizeof *bias);
            if (!x || !w || !dy || !bias)
                return 1;
            optest_fill_uniform(x, nx, 1, -1, 1);
            optest_fill_uniform(w, nw, 2, -0.5f, 0.5f);
            optest_fill_uniform(dy, ny, 3, -1, 1);
            optest_fill_uniform(bias, cc->k, 4, -1, 1);
            mpcl_dtype st = mpcl_storage_dtype(ctx);
            size_t xs[4] = {cc->b, cc->c, cc->h, cc->w}, ws[4] = {cc->k, cc->c, cc->r, cc->s};
            size_t ys[4] = {cc->b, cc->k, o.oh, o.ow}, bs[1] = {cc->k};
            mpcl_tensor *t[7] = {0};
            int ok = mpcl_tensor_create(ctx, st, 4, xs, MPCL_MEM_ACTIVATIONS, &t[0]) == MPCL_OK &&
                     mpcl_tensor_create(ctx, st, 4, ws, MPCL_MEM_WEIGHTS, &t[1]) == MPCL_OK &&
                     mpcl_tensor_create(ctx, st, 1, bs, MPCL_MEM_WEIGHTS, &t[2]) == MPCL_OK &&
                     mpcl_tensor_create(ctx, st, 4, ys, MPCL_MEM_ACTIVATIONS, &t[3]) == MPCL_OK &&
                     mpcl_tensor_create(ctx, st, 4, xs, MPCL_MEM_GRADIENTS, &t[4]) == MPCL_OK &&
                     mpcl_tensor_create(ctx, st, 4, ws, MPCL_MEM_GRADIENTS, &t[5]) == MPCL_OK &&
                     mpcl_tensor_create(ctx, st, 1, bs, MPCL_MEM_GRADIENTS, &t[6]) == MPCL_OK &&
                     mpcl_tensor_upload(t[0], x, nx) == MPCL_OK && mpcl_tensor_upload(t[1], w, nw) == MPCL_OK &&
                     mpcl_tensor_upload(t[2], bias, cc->k) == MPCL_OK &&
                     mpcl_tensor_upload(t[3], dy, ny) == MPCL_OK && mpcl_tensor_fill(t[5], 0) == MPCL_OK &&
                     mpcl_tensor_fill(t[6], 0) == MPCL_OK;
            if (!ok) {
                fprintf(stderr, "bench: %s\n", mpcl_last_error(ctx));
                return 1;
            }
            for (size_t si = 0; si < sizeof settings / sizeof settings[0]; si++) {
                ck_assert_int_eq(mpcl_conv_configure(ctx, settings[si][0], NULL,
                                                     settings[si][1][0] ? strtoul(settings[si][1], NULL, 10) : 0),
                                 MPCL_OK);
                double f = time_conv(ctx, cc, 0, t), bx = time_conv(ctx, cc, 1, t);
                double bw = time_conv(ctx, cc, 2, t);
                reset_settings();
                printf("%-12s %-36s %-7s chunk %-3s fwd %8.2f  dx %8.2f  dw+db %8.2f ms\n",
                       optest_modes[mi].name, layers[li].name, settings[si][0],
                       settings[si][1][0] ? settings[si][1] : "max", f, bx, bw);
                fflush(stdout);
            }
            for (int i = 0; i < 7; i++)
                mpcl_tensor_destroy(t[i]);
            free(x); free(w); free(dy); free(bias);
        }
    }
    optest_cleanup();
    return 0;
}

int main(void)
{
    optest_init();
    const char *bench = getenv("MPCL_CONV_BENCH");
    if (bench && *bench && strcmp(bench, "0") != 0)
        return run_bench();
    reset_settings();
    Suite *s = suite_create("conv");
    TCase *tc = tcase_create("conv");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_output_size);
    tcase_add_loop_test(tc, test_im2col, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_im2col16, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_im2col_dwt, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_im2col_kernels, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_direct, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_no_bias_no_dx, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_im2col_chunks, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_auto, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_bad_arguments, 0, optest_nmodes);
    tcase_add_loop_test(tc, test_choice_cache, 0, optest_nmodes);
    suite_add_tcase(s, tc);
    int rc = optest_run(s);
    return rc;
}
