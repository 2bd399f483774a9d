/* test_linear.c — mpcl_linear_forward / mpcl_linear_backward against a
 * double-precision host reference, a finite-difference check of the
 * backward pass, odd sizes and bad arguments, in every precision mode the
 * device runs.
 *
 * Dimension letters: B batch, I input features, O output features.
 *
 * Tolerances (docs/gemm.md): worst-case rounding bounds per element, with
 * mag the sum of the magnitudes of the terms of the reference and K the
 * number of terms:
 *   |err| <= (K + 2) u_acc mag + u_out (|ref| + |gemm part|) + 1e-30
 * u_acc = 2^-24 (float sums; 2^-11 where fp16 mode uses Hgemm), u_out =
 * 2^-11 for f16 storage (one rounding of each stored result; the forward
 * rounds the product, then product + bias), 0 for f32. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

#define U_F32 0x1p-24
#define U_F16 0x1p-11

typedef struct {
    size_t B, I, O;
} lin_shape;

static double u_acc(const mpcl_context *ctx)
{
    return ctx->precision == MPCL_PRECISION_FP16 && ctx->gemm_accum == MPCL_ACCUM_HALF &&
                   !ctx->hgemm_refused
               ? U_F16
               : U_F32;
}

static double u_out(const mpcl_context *ctx)
{
    /* one rounding of the output to the storage dtype */
    mpcl_dtype d = mpcl_storage_dtype(ctx);
    return d == MPCL_F16 ? U_F16 : d == MPCL_BF16 ? 0x1p-8 : 0.0;
}

/* ---------------------------------------------------------- reference */

/* Sets every element of t to v by an upload. (Not mpcl_tensor_fill: under
 * oclgrind 21.10 memory written by clEnqueueFillBuffer reads as
 * uninitialised in later kernels; docs/gemm.md.) */
static void set_all(mpcl_tensor *t, float v)
{
    size_t n = mpcl_tensor_numel(t);
    float *h = malloc(n * sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (size_t i = 0; i < n; i++)
        h[i] = v;
    ck_assert_int_eq(mpcl_tensor_upload(t, h, n), MPCL_OK);
    free(h);
}



/* y (B, O) = x (B, I) w (O, I)^T + b (O) in double; gemm (B, O) the product
 * alone, mag (B, O) the sum of |terms|. b may be NULL. */
static void ref_forward(const lin_shape *s, const float *x, const float *w, const float *b, double *y,
                        double *gemm, double *mag)
{
    for (size_t i = 0; i < s->B; i++)
        for (size_t o = 0; o < s->O; o++) {
            double acc = 0, m = 0;
            for (size_t k = 0; k < s->I; k++) {
                double t = (double)x[i * s->I + k] * w[o * s->I + k];
                acc += t;
                m += fabs(t);
            }
            double bias = b ? b[o] : 0.0;
            if (gemm)
                gemm[i * s->O + o] = acc;
            if (mag)
                mag[i * s->O + o] = m + fabs(bias);
            y[i * s->O + o] = acc + bias;
        }
}

/* The scalar loss L = sum y .* g of the double reference forward, with x, w
 * and b in double (for finite differences). */
static double ref_loss(const lin_shape *s, const double *x, const double *w, const double *b,
                       const float *g)
{
    double l = 0;
    for (size_t i = 0; i < s->B; i++)
        for (size_t o = 0; o < s->O; o++) {
            double acc = b[o];
            for (size_t k = 0; k < s->I; k++)
                acc += x[i * s->I + k] * w[o * s->I + k];
            l += acc * g[i * s->O + o];
        }
    return l;
}

/* -------------------------------------------------------------- data */

typedef struct {
    mpcl_tensor *x, *w, *b, *y, *dy, *dx, *dw, *db;
    float *hx, *hw, *hb, *hdy, *hdw0, *hdb0; /* as the device holds them */
} lin_data;

static float *upload_random(mpcl_context *ctx, mpcl_tensor **t, size_t d0, size_t d1, uint64_t seed,
                            float lo, float hi)
{
    size_t n = d0 * (d1 ? d1 : 1);
    float *h = malloc(n * sizeof *h);
    ck_assert_ptr_nonnull(h);
    optest_fill_uniform(h, n, seed, lo, hi);
    *t = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, h, d0, d1, 0, 0);
    free(h);
    return optest_download(*t);
}

static void data_make(mpcl_context *ctx, const lin_shape *s, lin_data *d, uint64_t seed)
{
    memset(d, 0, sizeof *d);
    mpcl_dtype dt = mpcl_storage_dtype(ctx);
    d->hx = upload_random(ctx, &d->x, s->B, s->I, seed, -1, 1);
    d->hw = upload_random(ctx, &d->w, s->O, s->I, seed + 1, -0.5f, 0.5f);
    d->hb = upload_random(ctx, &d->b, s->O, 0, seed + 2, -1, 1);
    d->hdy = upload_random(ctx, &d->dy, s->B, s->O, seed + 3, -1, 1);
    d->hdw0 = upload_random(ctx, &d->dw, s->O, s->I, seed + 4, -0.25f, 0.25f);
    d->hdb0 = upload_random(ctx, &d->db, s->O, 0, seed + 5, -0.25f, 0.25f);
    d->y = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, s->B, s->O, 0, 0);
    d->dx = optest_tensor(ctx, dt, MPCL_MEM_GRADIENTS, NULL, s->B, s->I, 0, 0);
    set_all(d->y, 9.0f);
    set_all(d->dx, NAN); /* assigned: the NaN must go */
}

static void data_free(lin_data *d)
{
    mpcl_tensor *t[] = {d->x, d->w, d->b, d->y, d->dy, d->dx, d->dw, d->db};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        mpcl_tensor_destroy(t[i]);
    free(d->hx);
    free(d->hw);
    free(d->hb);
    free(d->hdy);
    free(d->hdw0);
    free(d->hdb0);
}

static lin_shape shape_at(int small, int i, int *count)
{
    static const lin_shape big[] = {{1, 1440, 10}, {5, 37, 13}, {64, 1440, 10}, {7, 1, 3}};
    static const lin_shape tiny[] = {{1, 1440, 10}, {3, 37, 13}, {2, 1, 3}};
    *count = small ? 3 : 4;
    return small ? tiny[i] : big[i];
}

/* -------------------------------------------------------------- tests */

START_TEST(test_linear_forward)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    int count;
    shape_at(optest_small(), 0, &count);
    for (int si = 0; si < count; si++)
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            lin_shape s = shape_at(optest_small(), si, &count);
            lin_data d;
            data_make(ctx, &s, &d, 10 + (uint64_t)si);
            mpcl_status st = mpcl_linear_forward(ctx, d.y, d.x, d.w, with_bias ? d.b : NULL);
            ck_assert_msg(st == MPCL_OK, "mpcl_linear_forward: %s", mpcl_last_error(ctx));
            float *got = optest_download(d.y);
            size_t n = s.B * s.O;
            double *ref = malloc(n * sizeof *ref), *gemm = malloc(n * sizeof *gemm),
                   *mag = malloc(n * sizeof *mag);
            ck_assert(ref && gemm && mag);
            ref_forward(&s, d.hx, d.hw, with_bias ? d.hb : NULL, ref, gemm, mag);
            double worst = 0;
            for (size_t i = 0; i < n; i++) {
                double tol = (double)(s.I + 2) * u_acc(ctx) * mag[i] +
                             u_out(ctx) * (fabs(ref[i]) + fabs(gemm[i])) + 1e-30;
                double err = fabs(got[i] - ref[i]);
                ck_assert_msg(err <= tol,
                              "%s B=%zu I=%zu O=%zu bias %d: y[%zu] = %.9g, reference %.9g, error "
                              "%.3g > %.3g",
                              optest_modes[_i].name, s.B, s.I, s.O, with_bias, i, (double)got[i],
                              ref[i], err, tol);
                worst = fmax(worst, err / (mag[i] + 1e-30));
            }
            if (with_bias)
                printf("linear forward %s B=%zu I=%zu O=%zu: max |err|/mag %.3g\n",
                       optest_modes[_i].name, s.B, s.I, s.O, worst);
            free(got);
            free(ref);
            free(gemm);
            free(mag);
            data_free(&d);
        }
}
END_TEST

/* dx assigned, dw and db accumulated onto their previous contents. */
START_TEST(test_linear_backward)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    int count;
    shape_at(optest_small(), 0, &count);
    for (int si = 0; si < count; si++) {
        lin_shape s = shape_at(optest_small(), si, &count);
        lin_data d;
        data_make(ctx, &s, &d, 20 + (uint64_t)si);
        mpcl_status st = mpcl_linear_backward(ctx, d.dx, d.dw, d.db, d.dy, d.x, d.w);
        ck_assert_msg(st == MPCL_OK, "mpcl_linear_backward: %s", mpcl_last_error(ctx));
        float *dx = optest_download(d.dx), *dw = optest_download(d.dw), *db = optest_download(d.db);
        double wdx = 0, wdw = 0, wdb = 0;
        /* dx (B, I) = dy (B, O) w (O, I) */
        for (size_t b = 0; b < s.B; b++)
            for (size_t i = 0; i < s.I; i++) {
                double r = 0, m = 0;
                for (size_t o = 0; o < s.O; o++) {
                    double t = (double)d.hdy[b * s.O + o] * d.hw[o * s.I + i];
                    r += t;
                    m += fabs(t);
                }
                double tol = (double)(s.O + 2) * u_acc(ctx) * m + u_out(ctx) * fabs(r) + 1e-30;
                double e = fabs(dx[b * s.I + i] - r);
                ck_assert_msg(e <= tol, "%s B=%zu I=%zu O=%zu: dx[%zu][%zu] = %.9g, reference %.9g",
                              optest_modes[_i].name, s.B, s.I, s.O, b, i, (double)dx[b * s.I + i], r);
                wdx = fmax(wdx, e / (m + 1e-30));
            }
        /* dw (O, I) = dw0 + dy^T x */
        for (size_t o = 0; o < s.O; o++)
            for (size_t i = 0; i < s.I; i++) {
                double r = d.hdw0[o * s.I + i], m = fabs(r);
                for (size_t b = 0; b < s.B; b++) {
                    double t = (double)d.hdy[b * s.O + o] * d.hx[b * s.I + i];
                    r += t;
                    m += fabs(t);
                }
                double tol = (double)(s.B + 2) * u_acc(ctx) * m + u_out(ctx) * fabs(r) + 1e-30;
                double e = fabs(dw[o * s.I + i] - r);
                ck_assert_msg(e <= tol, "%s B=%zu I=%zu O=%zu: dw[%zu][%zu] = %.9g, reference %.9g",
                              optest_modes[_i].name, s.B, s.I, s.O, o, i, (double)dw[o * s.I + i], r);
                wdw = fmax(wdw, e / (m + 1e-30));
            }
        /* db (O) = db0 + column sums of dy, summed in float in every mode */
        for (size_t o = 0; o < s.O; o++) {
            double r = d.hdb0[o], m = fabs(r);
            for (size_t b = 0; b < s.B; b++) {
                r += d.hdy[b * s.O + o];
                m += fabs(d.hdy[b * s.O + o]);
            }
            double tol = (double)(s.B + 2) * U_F32 * m + u_out(ctx) * fabs(r) + 1e-30;
            double e = fabs(db[o] - r);
            ck_assert_msg(e <= tol, "%s B=%zu O=%zu: db[%zu] = %.9g, reference %.9g",
                          optest_modes[_i].name, s.B, s.O, o, (double)db[o], r);
            wdb = fmax(wdb, e / (m + 1e-30));
        }
        printf("linear backward %s B=%zu I=%zu O=%zu: max |err|/mag dx %.3g dw %.3g db %.3g\n",
               optest_modes[_i].name, s.B, s.I, s.O, wdx, wdw, wdb);
        free(dx);
        free(dw);
        free(db);

        /* NULL dx skips it; dw and db accumulate a second time */
        set_all(d.dx, 5.0f);
        float *dw1 = optest_download(d.dw);
        st = mpcl_linear_backward(ctx, NULL, d.dw, NULL, d.dy, d.x, d.w);
        ck_assert_msg(st == MPCL_OK, "mpcl_linear_backward: %s", mpcl_last_error(ctx));
        float *dw2 = optest_download(d.dw), *dx2 = optest_download(d.dx);
        for (size_t i = 0; i < s.B * s.I; i++)
            ck_assert_msg(dx2[i] == 5.0f, "dx written with dx = NULL");
        for (size_t o = 0; o < s.O; o++)
            for (size_t i = 0; i < s.I; i++) {
                double r = dw1[o * s.I + i], m = fabs(r);
                for (size_t b = 0; b < s.B; b++) {
                    double t = (double)d.hdy[b * s.O + o] * d.hx[b * s.I + i];
                    r += t;
                    m += fabs(t);
                }
                double tol = (double)(s.B + 2) * u_acc(ctx) * m + u_out(ctx) * fabs(r) + 1e-30;
                ck_assert_msg(fabs(dw2[o * s.I + i] - r) <= tol, "second dw accumulation: [%zu][%zu]",
                              o, i);
            }
        free(dw1);
        free(dw2);
        free(dx2);
        data_free(&d);
    }
}
END_TEST

/* The device backward against central differences of the double reference
 * loss L = sum y .* dy, at sampled entries of x, w and b. L is linear in
 * each, so the differences are exact to double rounding; the device values
 * must be within the backward's own bound above. */
START_TEST(test_linear_finite_difference)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    lin_shape s = optest_small() ? (lin_shape){3, 37, 13} : (lin_shape){5, 37, 13};
    lin_data d;
    data_make(ctx, &s, &d, 77);
    set_all(d.dw, 0.0f);
    set_all(d.db, 0.0f);
    ck_assert_msg(mpcl_linear_backward(ctx, d.dx, d.dw, d.db, d.dy, d.x, d.w) == MPCL_OK, "%s",
                  mpcl_last_error(ctx));
    float *dx = optest_download(d.dx), *dw = optest_download(d.dw), *db = optest_download(d.db);
    size_t nx = s.B * s.I, nw = s.O * s.I;
    double *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w), *b = malloc(s.O * sizeof *b);
    ck_assert(x && w && b);
    for (size_t i = 0; i < nx; i++)
        x[i] = d.hx[i];
    for (size_t i = 0; i < nw; i++)
        w[i] = d.hw[i];
    for (size_t i = 0; i < s.O; i++)
        b[i] = d.hb[i];
    const double h = 1e-3;
    struct {
        const char *name;
        double *p;
        size_t n;
        const float *dev;
    } params[3] = {{"dx", x, nx, dx}, {"dw", w, nw, dw}, {"db", b, s.O, db}};
    int checked = 0;
    for (int pi = 0; pi < 3; pi++)
        for (size_t i = 0; i < params[pi].n; i += 1 + params[pi].n / 23) {
            double keep = params[pi].p[i];
            params[pi].p[i] = keep + h;
            double lp = ref_loss(&s, x, w, b, d.hdy);
            params[pi].p[i] = keep - h;
            double lm = ref_loss(&s, x, w, b, d.hdy);
            params[pi].p[i] = keep;
            double fd = (lp - lm) / (2 * h);
            /* the magnitude of the terms of this derivative */
            double m = 0;
            size_t kterms = 0;
            if (pi == 0) { /* dx[bb][ii] = sum_o dy[bb][o] w[o][ii] */
                size_t bb = i / s.I, ii = i % s.I;
                for (size_t o = 0; o < s.O; o++)
                    m += fabs((double)d.hdy[bb * s.O + o] * w[o * s.I + ii]);
                kterms = s.O;
            } else if (pi == 1) { /* dw[o][ii] = sum_b dy[b][o] x[b][ii] */
                size_t o = i / s.I, ii = i % s.I;
                for (size_t bb = 0; bb < s.B; bb++)
                    m += fabs((double)d.hdy[bb * s.O + o] * x[bb * s.I + ii]);
                kterms = s.B;
            } else {
                for (size_t bb = 0; bb < s.B; bb++)
                    m += fabs((double)d.hdy[bb * s.O + i]);
                kterms = s.B;
            }
            double tol = (double)(kterms + 2) * u_acc(ctx) * m + u_out(ctx) * fabs(fd) + 1e-9;
            ck_assert_msg(fabs(params[pi].dev[i] - fd) <= tol,
                          "%s %s[%zu]: device %.9g, finite difference %.9g (bound %.3g)",
                          optest_modes[_i].name, params[pi].name, i, (double)params[pi].dev[i], fd, tol);
            checked++;
        }
    ck_assert_int_gt(checked, 30);
    free(x);
    free(w);
    free(b);
    free(dx);
    free(dw);
    free(db);
    data_free(&d);
}
END_TEST

static void assert_all(const mpcl_tensor *t, float v, const char *what)
{
    float *got = optest_download(t);
    for (size_t i = 0; i < mpcl_tensor_numel(t); i++)
        ck_assert_msg(got[i] == v, "%s: a refused call wrote [%zu] = %g (was %g)", what, i,
                      (double)got[i], (double)v);
    free(got);
}

/* Bad shapes and dtypes: the status, both shapes in the message, nothing
 * written. */
START_TEST(test_linear_bad_args)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_dtype dt = mpcl_storage_dtype(ctx), other = dt == MPCL_F16 ? MPCL_F32 : MPCL_F16;
    const size_t B = 4;
    mpcl_tensor *x = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, B, 1440, 0, 0);
    mpcl_tensor *w_bad = optest_tensor(ctx, dt, MPCL_MEM_WEIGHTS, NULL, 10, 20, 0, 0);
    mpcl_tensor *w = optest_tensor(ctx, dt, MPCL_MEM_WEIGHTS, NULL, 10, 1440, 0, 0);
    mpcl_tensor *b_bad = optest_tensor(ctx, dt, MPCL_MEM_WEIGHTS, NULL, 11, 0, 0, 0);
    mpcl_tensor *y = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, B, 10, 0, 0);
    mpcl_tensor *y_bad = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, B, 11, 0, 0);
    mpcl_tensor *x_other = optest_tensor(ctx, other, MPCL_MEM_ACTIVATIONS, NULL, B, 1440, 0, 0);
    mpcl_tensor *dx = optest_tensor(ctx, dt, MPCL_MEM_GRADIENTS, NULL, B, 1440, 0, 0);
    mpcl_tensor *dw = optest_tensor(ctx, dt, MPCL_MEM_GRADIENTS, NULL, 10, 1440, 0, 0);
    mpcl_tensor *dw_bad = optest_tensor(ctx, dt, MPCL_MEM_GRADIENTS, NULL, 10, 21, 0, 0);
    mpcl_tensor *db = optest_tensor(ctx, dt, MPCL_MEM_GRADIENTS, NULL, 10, 0, 0, 0);
    mpcl_tensor *dy_bad = optest_tensor(ctx, dt, MPCL_MEM_GRADIENTS, NULL, B + 1, 10, 0, 0);
    mpcl_tensor *fill[] = {x, w, y, y_bad, dx, dw, dw_bad, db, dy_bad};
    for (size_t i = 0; i < sizeof fill / sizeof fill[0]; i++)
        set_all(fill[i], 2.0f);

    /* w (10, 20) with x (B, 1440) */
    ck_assert_int_eq(mpcl_linear_forward(ctx, y, x, w_bad, NULL), MPCL_ERR_SHAPE);
    const char *e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(10, 20)") && strstr(e, "1440)"), "message lacks a shape: %s", e);
    /* y (B, 11) for O = 10 */
    ck_assert_int_eq(mpcl_linear_forward(ctx, y_bad, x, w, NULL), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(4, 11)") && strstr(e, "(4, 10)"), "message lacks a shape: %s", e);
    /* b (11) for O = 10 */
    ck_assert_int_eq(mpcl_linear_forward(ctx, y, x, w, b_bad), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(11)") && strstr(e, "(10)"), "message lacks a shape: %s", e);
    /* x in the wrong dtype */
    ck_assert_int_eq(mpcl_linear_forward(ctx, y, x_other, w, NULL), MPCL_ERR_ARGUMENT);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, mpcl_dtype_name(other)) && strstr(e, mpcl_dtype_name(dt)), "%s", e);
    ck_assert_int_eq(mpcl_linear_forward(ctx, y, NULL, w, NULL), MPCL_ERR_ARGUMENT);
    assert_all(y, 2.0f, "y");
    assert_all(y_bad, 2.0f, "y_bad");

    /* backward: dw (10, 21), dy (B + 1, 10), w (10, 20) */
    ck_assert_int_eq(mpcl_linear_backward(ctx, dx, dw_bad, db, y, x, w), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(10, 21)") && strstr(e, "(10, 1440)"), "message lacks a shape: %s", e);
    ck_assert_int_eq(mpcl_linear_backward(ctx, dx, dw, db, dy_bad, x, w), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(5, 10)") && strstr(e, "(4, 10)"), "message lacks a shape: %s", e);
    ck_assert_int_eq(mpcl_linear_backward(ctx, dx, dw, db, y, x, w_bad), MPCL_ERR_SHAPE);
    ck_assert_int_eq(mpcl_linear_backward(ctx, dx, dw, b_bad, y, x, w), MPCL_ERR_SHAPE);
    assert_all(dx, 2.0f, "dx");
    assert_all(dw, 2.0f, "dw");
    assert_all(db, 2.0f, "db");

    mpcl_tensor *all[] = {x, w_bad, w, b_bad, y, y_bad, x_other, dx, dw, dw_bad, db, dy_bad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mpcl_tensor_destroy(all[i]);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("linear");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"forward", test_linear_forward},
        {"backward", test_linear_backward},
        {"finite_difference", test_linear_finite_difference},
        {"bad_args", test_linear_bad_args},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 1200);
        tcase_add_loop_test(tc, cases[i].fn, 0, optest_nmodes);
        suite_add_tcase(s, tc);
    }
    return optest_run(s);
}
