/* test_reduce.c — mpcl_reduce, mpcl_all_finite and mpcl_unscale against
 * double-precision host references, in every precision mode the device runs.
 *
 * Dimension letters: N elements (any shape, flattened).
 *
 * References take the inputs as the device holds them. Tolerances
 * (docs/ops/elementwise-reduce.md):
 *   sum, mean of reals:  |err| <= 4e-6 sum |x_i| (/ N for the mean) in every
 *                        mode: the accumulation is float everywhere, and a
 *                        float tree of depth k <= 64 errs by at most
 *                        k 2^-24 sum |x_i|
 *   sum of integers:     exact (every partial sum is an integer < 2^24)
 *   max |x|:             exact
 *   unscale:             one float product, then the storage rounding:
 *                        fp32 rtol 1e-6; fp16 modes rtol 1e-3 (two half ulps) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

static mpcl_context *mode_ctx(int i) { return optest_modes[i].ctx; }
static mpcl_dtype sdt(mpcl_context *ctx) { return mpcl_storage_dtype(ctx); }

static void expect_ok(mpcl_context *ctx, mpcl_status s, const char *what)
{
    ck_assert_msg(s == MPCL_OK, "%s: %s (%s)", what, mpcl_status_name(s), mpcl_last_error(ctx));
}

static float *alloc_floats(size_t n)
{
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    return x;
}

/* A 1-D tensor of dtype holding x (N), x replaced by what the device holds. */
static mpcl_tensor *make_1d(mpcl_context *ctx, mpcl_dtype dtype, float *x, size_t n)
{
    if (dtype == MPCL_F16)
        for (size_t i = 0; i < n; i++)
            x[i] = mpcl_half_to_float(mpcl_half_from_float(x[i]));
    if (dtype == MPCL_BF16)
        for (size_t i = 0; i < n; i++)
            x[i] = mpcl_bf16_to_float(mpcl_bf16_from_float(x[i]));
    return optest_tensor(ctx, dtype, MPCL_MEM_GRADIENTS, x, n, 0, 0, 0);
}

static mpcl_tensor *make_scalar(mpcl_context *ctx, mpcl_dtype dtype, float v)
{
    return optest_tensor(ctx, dtype, MPCL_MEM_SCRATCH, &v, 1, 0, 0, 0);
}

static float read_scalar(mpcl_tensor *t)
{
    float v;
    mpcl_status s = mpcl_tensor_download(t, &v, 1);
    ck_assert_msg(s == MPCL_OK, "download: %s", mpcl_status_name(s));
    return v;
}

static void set_scalar(mpcl_tensor *t, float v)
{
    mpcl_status s = mpcl_tensor_upload(t, &v, 1);
    ck_assert_msg(s == MPCL_OK, "upload: %s", mpcl_status_name(s));
}

static float run_reduce(mpcl_context *ctx, mpcl_reduction r, mpcl_tensor *out, mpcl_tensor *x)
{
    expect_ok(ctx, mpcl_reduce(ctx, r, out, x), "mpcl_reduce");
    return read_scalar(out);
}

static const char *red_name(mpcl_reduction r)
{
    return r == MPCL_REDUCE_SUM ? "sum" : r == MPCL_REDUCE_MEAN ? "mean" : "max_abs";
}

/* sum, sum |x|, max |x| of x (N) in double. */
static void ref_stats(const float *x, size_t n, double *sum, double *abs_sum, double *max_abs)
{
    double s = 0, a = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        a += fabs(x[i]);
        m = fabs(x[i]) > m ? fabs(x[i]) : m;
    }
    *sum = s;
    *abs_sum = a;
    *max_abs = m;
}

/* The sizes of the size sweep: not multiples of any work-group size. */
static size_t sizes(size_t *out)
{
    size_t full[] = {1, 7, 1000, 1000003}, small[] = {1, 7, 1000, 5003};
    memcpy(out, optest_small() ? small : full, sizeof full);
    return 4;
}

/* Reals in [-1, 1) reduced in dtype, against double. */
static void check_reals(mpcl_context *ctx, mpcl_dtype dtype, size_t n, uint64_t seed,
                        const char *mode)
{
    float *x = alloc_floats(n); /* (N) */
    optest_fill_uniform(x, n, seed, -1.0f, 1.0f);
    mpcl_tensor *tx = make_1d(ctx, dtype, x, n);
    mpcl_tensor *out = make_scalar(ctx, MPCL_F32, 0.0f);
    double sum, abs_sum, max_abs;
    ref_stats(x, n, &sum, &abs_sum, &max_abs);
    float got_sum = run_reduce(ctx, MPCL_REDUCE_SUM, out, tx);
    float got_mean = run_reduce(ctx, MPCL_REDUCE_MEAN, out, tx);
    float got_max = run_reduce(ctx, MPCL_REDUCE_MAX_ABS, out, tx);
    double tol = 4e-6 * abs_sum;
    ck_assert_msg(fabs(got_sum - sum) <= tol, "sum of %zu %s (%s): %.9g, expected %.9g +- %.3g", n,
                  mpcl_dtype_name(dtype), mode, (double)got_sum, sum, tol);
    ck_assert_msg(fabs(got_mean - sum / (double)n) <= tol / (double)n,
                  "mean of %zu %s (%s): %.9g, expected %.9g +- %.3g", n, mpcl_dtype_name(dtype),
                  mode, (double)got_mean, sum / (double)n, tol / (double)n);
    ck_assert_msg(got_max == max_abs, "max |x| of %zu %s (%s): %.9g, expected %.9g", n,
                  mpcl_dtype_name(dtype), mode, (double)got_max, max_abs);
    free(x);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(out);
}

START_TEST(test_reduce_sizes)
{
    mpcl_context *ctx = mode_ctx(_i);
    size_t ns[4];
    for (size_t c = 0, k = sizes(ns); c < k; c++)
        check_reals(ctx, sdt(ctx), ns[c], 1 + c, optest_modes[_i].name);
}
END_TEST

/* f32 inputs in every mode (the _f32 kernels in the half-storage modes). */
START_TEST(test_reduce_f32_input)
{
    mpcl_context *ctx = mode_ctx(_i);
    size_t ns[4];
    for (size_t c = 0, k = sizes(ns); c < k; c++)
        check_reals(ctx, MPCL_F32, ns[c], 11 + c, optest_modes[_i].name);
}
END_TEST

/* Integers in [-7, 7] with one 8 (or -8) at the end: the sum is exact in
 * float, so any element lost or counted twice shows. Sizes beyond the group
 * cap (G = 1024) in the full run. */
START_TEST(test_reduce_exact_integers)
{
    mpcl_context *ctx = mode_ctx(_i);
    size_t full[] = {7, 1000003, (size_t)1 << 23 | 5}, small[] = {7, 5003, 1025};
    const size_t *ns = optest_small() ? small : full;
    for (size_t c = 0; c < 3; c++) {
        size_t n = ns[c];
        float *x = alloc_floats(n); /* (N) */
        optest_fill_uniform(x, n, 21 + c, -7.0f, 8.0f);
        for (size_t i = 0; i < n; i++)
            x[i] = floorf(x[i]);
        x[n - 1] = c % 2 ? -8.0f : 8.0f;
        mpcl_tensor *tx = make_1d(ctx, sdt(ctx), x, n);
        mpcl_tensor *out = make_scalar(ctx, MPCL_F32, 0.0f);
        double sum, abs_sum, max_abs;
        ref_stats(x, n, &sum, &abs_sum, &max_abs);
        float got = run_reduce(ctx, MPCL_REDUCE_SUM, out, tx);
        ck_assert_msg(got == sum, "sum of %zu integers (%s): %.9g, expected %.17g", n,
                      optest_modes[_i].name, (double)got, sum);
        float mean = run_reduce(ctx, MPCL_REDUCE_MEAN, out, tx);
        double want = sum / (double)n;
        ck_assert_msg(fabs(mean - want) <= 3e-7 * fabs(want),
                      "mean of %zu integers: %.9g, expected %.17g", n, (double)mean, want);
        float m = run_reduce(ctx, MPCL_REDUCE_MAX_ABS, out, tx);
        ck_assert_msg(m == 8.0f, "max |x| of %zu integers: %.9g, expected 8", n, (double)m);
        free(x);
        mpcl_tensor_destroy(tx);
        mpcl_tensor_destroy(out);
    }
}
END_TEST

/* 100000 halves of 1.0 sum to exactly 100000: a half accumulator stalls at
 * 2048 (2048 + 1 rounds back to 2048). */
START_TEST(test_reduce_half_ones)
{
    mpcl_context *ctx = mode_ctx(_i);
    size_t n = optest_small() ? 3001 : 100000;
    float *x = alloc_floats(n); /* (N) */
    for (size_t i = 0; i < n; i++)
        x[i] = 1.0f;
    mpcl_tensor *tx = make_1d(ctx, sdt(ctx), x, n);
    mpcl_tensor *out = make_scalar(ctx, MPCL_F32, 0.0f);
    float got = run_reduce(ctx, MPCL_REDUCE_SUM, out, tx);
    ck_assert_msg(got == (float)n, "sum of %zu ones in %s (%s): %.9g", n, mpcl_dtype_name(sdt(ctx)),
                  optest_modes[_i].name, (double)got);
    float mean = run_reduce(ctx, MPCL_REDUCE_MEAN, out, tx);
    ck_assert_msg(fabsf(mean - 1.0f) <= 2.5e-7f, "mean of ones: %.9g", (double)mean);
    free(x);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(out);
}
END_TEST

/* The same input gives the same bits on every run. */
START_TEST(test_reduce_deterministic)
{
    mpcl_context *ctx = mode_ctx(_i);
    size_t n = optest_small() ? 5003 : 1000003;
    float *x = alloc_floats(n); /* (N) */
    optest_fill_uniform(x, n, 31, -100.0f, 100.0f);
    mpcl_tensor *tx = make_1d(ctx, sdt(ctx), x, n);
    mpcl_tensor *out = make_scalar(ctx, MPCL_F32, 0.0f);
    for (int r = MPCL_REDUCE_SUM; r <= MPCL_REDUCE_MAX_ABS; r++) {
        float first = run_reduce(ctx, (mpcl_reduction)r, out, tx);
        for (int k = 0; k < 3; k++) {
            float again = run_reduce(ctx, (mpcl_reduction)r, out, tx);
            ck_assert_msg(memcmp(&first, &again, sizeof first) == 0, "%s run %d: %.9g, first %.9g",
                          red_name((mpcl_reduction)r), k + 2, (double)again, (double)first);
        }
    }
    free(x);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(out);
}
END_TEST

/* max |x| at the first and last element, negative; inf and NaN propagate. */
START_TEST(test_reduce_special_values)
{
    mpcl_context *ctx = mode_ctx(_i);
    size_t n = optest_small() ? 777 : 10007;
    float *x = alloc_floats(n); /* (N) */
    mpcl_tensor *out = make_scalar(ctx, MPCL_F32, 0.0f);
    struct {
        size_t at;
        float v;
        float want_sum_nan, want_max; /* want_max NaN: expect NaN */
    } cases[] = {
        {0, -5.0f, 0, 5.0f},
        {n - 1, -6.0f, 0, 6.0f},
        {n / 2, 7.5f, 0, 7.5f},
        {n - 1, INFINITY, 0, INFINITY},
        {0, -INFINITY, 0, INFINITY},
        {n - 1, NAN, 1, NAN},
        {0, NAN, 1, NAN},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        optest_fill_uniform(x, n, 41, -1.0f, 1.0f);
        x[cases[c].at] = cases[c].v;
        mpcl_tensor *tx = make_1d(ctx, sdt(ctx), x, n);
        float m = run_reduce(ctx, MPCL_REDUCE_MAX_ABS, out, tx);
        float s = run_reduce(ctx, MPCL_REDUCE_SUM, out, tx);
        if (isnan(cases[c].want_max))
            ck_assert_msg(isnan(m), "max |x| with NaN at %zu: %g", cases[c].at, (double)m);
        else
            ck_assert_msg(m == cases[c].want_max, "max |x| with %g at %zu: %g", (double)cases[c].v,
                          cases[c].at, (double)m);
        if (cases[c].want_sum_nan)
            ck_assert_msg(isnan(s), "sum with NaN at %zu: %g", cases[c].at, (double)s);
        if (isinf(cases[c].v))
            ck_assert_msg(s == cases[c].v, "sum with %g at %zu: %g", (double)cases[c].v,
                          cases[c].at, (double)s);
        mpcl_tensor_destroy(tx);
    }
    /* +inf and -inf: the sum is NaN. */
    optest_fill_uniform(x, n, 42, -1.0f, 1.0f);
    x[0] = INFINITY;
    x[n - 1] = -INFINITY;
    mpcl_tensor *tx = make_1d(ctx, sdt(ctx), x, n);
    float s = run_reduce(ctx, MPCL_REDUCE_SUM, out, tx);
    ck_assert_msg(isnan(s), "sum of inf and -inf: %g", (double)s);
    mpcl_tensor_destroy(tx);
    free(x);
    mpcl_tensor_destroy(out);
}
END_TEST

/* ------------------------------------------------------ finite checks */

static float max_finite(mpcl_dtype dtype)
{
    return dtype == MPCL_F16 ? 65504.0f : dtype == MPCL_BF16 ? 0x1.fep127f : 3.4028235e38f;
}

static int run_all_finite(mpcl_context *ctx, mpcl_tensor *flag, mpcl_tensor *const *ts, size_t n)
{
    expect_ok(ctx, mpcl_all_finite(ctx, flag, (const mpcl_tensor *const *)ts, n),
              "mpcl_all_finite");
    return (int)read_scalar(flag);
}

START_TEST(test_all_finite)
{
    mpcl_context *ctx = mode_ctx(_i);
    mpcl_dtype st = sdt(ctx);
    size_t full[3] = {1000, 7, 100003}, small[3] = {100, 7, 1031};
    const size_t *ns = optest_small() ? small : full;
    /* three tensors: storage, storage, and f32 (any mode) */
    const mpcl_dtype dts[3] = {st, st, MPCL_F32};
    float *xs[3];
    mpcl_tensor *ts[3];
    for (int k = 0; k < 3; k++) {
        xs[k] = alloc_floats(ns[k]); /* (N_k) */
        optest_fill_uniform(xs[k], ns[k], 51 + (uint64_t)k, -3.0f, 3.0f);
        xs[k][ns[k] / 2] = max_finite(dts[k]); /* finite extremes keep the flag */
        xs[k][ns[k] / 3] = -max_finite(dts[k]);
        ts[k] = make_1d(ctx, dts[k], xs[k], ns[k]);
    }
    mpcl_tensor *flag = make_scalar(ctx, MPCL_I32, 0.0f);
    /* The flag is assigned: 0 before, 1 after, for finite inputs. */
    ck_assert_int_eq(run_all_finite(ctx, flag, ts, 3), 1);
    ck_assert_int_eq(run_all_finite(ctx, flag, ts, 0), 1);

    const float bad[3] = {INFINITY, -INFINITY, NAN};
    for (int k = 0; k < 3; k++) {
        size_t where[2] = {0, ns[k] - 1};
        for (int w = 0; w < 2; w++) {
            for (int b = 0; b < 3; b++) {
                float keep = xs[k][where[w]];
                xs[k][where[w]] = bad[b];
                expect_ok(ctx, mpcl_tensor_upload(ts[k], xs[k], ns[k]), "upload");
                int f = run_all_finite(ctx, flag, ts, 3);
                ck_assert_msg(f == 0, "%g at [%zu] of tensor %d of 3 (%s, %s): flag %d",
                              (double)bad[b], where[w], k, mpcl_dtype_name(dts[k]),
                              optest_modes[_i].name, f);
                /* only the tensors after it: still caught when it is the last one */
                f = run_all_finite(ctx, flag, ts + k, (size_t)(3 - k));
                ck_assert_int_eq(f, 0);
                xs[k][where[w]] = keep;
                expect_ok(ctx, mpcl_tensor_upload(ts[k], xs[k], ns[k]), "upload");
            }
        }
    }
    /* The 2nd of 3 tensors poisoned, the others finite; then only the others. */
    xs[1][3] = NAN;
    expect_ok(ctx, mpcl_tensor_upload(ts[1], xs[1], ns[1]), "upload");
    ck_assert_int_eq(run_all_finite(ctx, flag, ts, 3), 0);
    mpcl_tensor *others[2] = {ts[0], ts[2]};
    ck_assert_int_eq(run_all_finite(ctx, flag, others, 2), 1);
    for (int k = 0; k < 3; k++) {
        free(xs[k]);
        mpcl_tensor_destroy(ts[k]);
    }
    mpcl_tensor_destroy(flag);
}
END_TEST

/* Unscale of x (N) in dtype by inv_scale: values and the flag. */
static void check_unscale(mpcl_context *ctx, mpcl_precision mode, mpcl_dtype dtype, size_t n)
{
    float *x = alloc_floats(n); /* (N) */
    optest_fill_uniform(x, n, 61, -1000.0f, 1000.0f);
    const float inv = 1.0f / 1000.0f;
    mpcl_tensor *tx = make_1d(ctx, dtype, x, n);
    mpcl_tensor *flag = make_scalar(ctx, MPCL_I32, 1.0f);
    expect_ok(ctx, mpcl_unscale(ctx, tx, inv, flag), "mpcl_unscale");
    float *y = optest_download(tx);
    double *ref = malloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)x[i] * inv;
    double rtol = dtype == MPCL_F16 ? 1e-3 : dtype == MPCL_BF16 ? 8e-3 : 1e-6;
    char what[64];
    snprintf(what, sizeof what, "unscale %s (%s)", mpcl_dtype_name(dtype),
             mpcl_precision_name(mode));
    optest_assert_close(what, y, ref, n, dtype == MPCL_F32 ? 0 : 1e-7, rtol);
    ck_assert_msg(read_scalar(flag) == 1.0f, "%s: finite data cleared the flag", what);

    /* flag &= ...: a cleared flag stays cleared. */
    set_scalar(flag, 0.0f);
    expect_ok(ctx, mpcl_unscale(ctx, tx, 1.0f, flag), "mpcl_unscale");
    ck_assert_msg(read_scalar(flag) == 0.0f, "%s: unscale set a cleared flag", what);

    /* One inf or NaN anywhere clears it. */
    /* (unscale runs blocks of 8 * L elements unchecked, then the rest: the
     * first, middle and last elements, and the last of a 2048 block) */
    size_t where[4] = {0, n / 2, n - 1, n >= 2048 ? n / 2048 * 2048 - 1 : n / 3};
    const float bad[4] = {INFINITY, NAN, -INFINITY, NAN};
    for (int w = 0; w < 4; w++) {
        memcpy(y, x, n * sizeof *x);
        y[where[w]] = bad[w];
        expect_ok(ctx, mpcl_tensor_upload(tx, y, n), "upload");
        set_scalar(flag, 1.0f);
        expect_ok(ctx, mpcl_unscale(ctx, tx, inv, flag), "mpcl_unscale");
        ck_assert_msg(read_scalar(flag) == 0.0f, "%s: %g at [%zu] left the flag set", what,
                      (double)bad[w], where[w]);
    }
    free(ref);
    free(y);
    free(x);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(flag);
}

START_TEST(test_unscale)
{
    mpcl_context *ctx = mode_ctx(_i);
    /* whole blocks of 8 * L (L a power of two <= 256) or not, one element,
     * fewer than one block */
    const size_t big[] = {1, 7, 1031, 6144, 100003}, small[] = {1, 7, 1031, 4101};
    const size_t *ns = optest_small() ? small : big;
    const size_t count = optest_small() ? sizeof small / sizeof small[0] : sizeof big / sizeof big[0];
    for (size_t i = 0; i < count; i++) {
        check_unscale(ctx, optest_modes[_i].mode, sdt(ctx), ns[i]);
        check_unscale(ctx, optest_modes[_i].mode, MPCL_F32, ns[i]);
    }
}
END_TEST

/* A result that overflows the stored dtype clears the flag, exactly at the
 * rounding threshold, and the flag agrees with what was stored. */
START_TEST(test_unscale_overflow)
{
    mpcl_context *ctx = mode_ctx(_i);
    mpcl_dtype st = sdt(ctx);
    float big = max_finite(st); /* (1) */
    /* half: 65504 s < 65520 stays finite (rounds to 65504), >= 65520 is inf */
    /* bf16: 0x1.fep127 s stays finite below the midpoint 0x1.ffp127, i.e. for
     * s < 511/510 = 1.00196..., and is inf from there on */
    const float s_in = st == MPCL_F16 ? 1.0002441f : st == MPCL_BF16 ? 1.0019f : 1.0f;
    const float s_out = st == MPCL_F16 ? 1.0002443f : st == MPCL_BF16 ? 1.0020f : 2.0f;
    const float scales[2] = {s_in, s_out};
    for (int c = 0; c < 2; c++) {
        float x[3] = {1.0f, big, -2.0f}; /* (N) */
        mpcl_tensor *tx = make_1d(ctx, st, x, 3);
        mpcl_tensor *flag = make_scalar(ctx, MPCL_I32, 1.0f);
        expect_ok(ctx, mpcl_unscale(ctx, tx, scales[c], flag), "mpcl_unscale");
        float y[3];
        expect_ok(ctx, mpcl_tensor_download(tx, y, 3), "download");
        int f = (int)read_scalar(flag);
        ck_assert_msg(f == (c == 0), "%g * %.9g: flag %d, stored %g", (double)big,
                      (double)scales[c], f, (double)y[1]);
        ck_assert_msg(f == (isfinite(y[0]) && isfinite(y[1]) && isfinite(y[2])),
                      "flag %d disagrees with the stored %g", f, (double)y[1]);
        mpcl_tensor_destroy(tx);
        mpcl_tensor_destroy(flag);
    }
}
END_TEST

/* --------------------------------------------------------- bad arguments */

static void expect_refused(mpcl_context *ctx, mpcl_status got, mpcl_status want, const char *s1,
                           const char *s2, const char *what)
{
    const char *msg = mpcl_last_error(ctx);
    ck_assert_msg(got == want, "%s: %s, expected %s (%s)", what, mpcl_status_name(got),
                  mpcl_status_name(want), msg);
    if (s1)
        ck_assert_msg(strstr(msg, s1) != NULL, "%s: message \"%s\" lacks \"%s\"", what, msg, s1);
    if (s2)
        ck_assert_msg(strstr(msg, s2) != NULL, "%s: message \"%s\" lacks \"%s\"", what, msg, s2);
}

START_TEST(test_bad_arguments)
{
    mpcl_context *ctx = mode_ctx(_i);
    mpcl_dtype st = sdt(ctx);
    float xv[6] = {1, 2, 3, 4, 5, 6};
    mpcl_tensor *x = make_1d(ctx, st, xv, 6);
    mpcl_tensor *xi = optest_tensor(ctx, MPCL_I32, MPCL_MEM_SCRATCH, xv, 2, 3, 0, 0);
    mpcl_tensor *out = make_scalar(ctx, MPCL_F32, 7.0f);
    mpcl_tensor *out2 = optest_tensor(ctx, MPCL_F32, MPCL_MEM_SCRATCH, xv, 2, 0, 0, 0);
    mpcl_tensor *outi = make_scalar(ctx, MPCL_I32, 7.0f);
    mpcl_tensor *flag = make_scalar(ctx, MPCL_I32, 5.0f);
    mpcl_tensor *flagf = make_scalar(ctx, MPCL_F32, 5.0f);
    mpcl_tensor *flag2 = optest_tensor(ctx, MPCL_I32, MPCL_MEM_SCRATCH, xv, 2, 0, 0, 0);

    expect_refused(ctx, mpcl_reduce(ctx, MPCL_REDUCE_SUM, out2, x), MPCL_ERR_SHAPE, "(2) f32",
                   "(1) f32", "reduce out (2)");
    expect_refused(ctx, mpcl_reduce(ctx, MPCL_REDUCE_SUM, outi, x), MPCL_ERR_ARGUMENT, "(1) i32",
                   "(1) f32", "reduce out i32");
    expect_refused(ctx, mpcl_reduce(ctx, MPCL_REDUCE_MEAN, out, xi), MPCL_ERR_ARGUMENT,
                   "(2, 3) i32", mpcl_dtype_name(st), "reduce x i32");
    expect_refused(ctx, mpcl_reduce(ctx, (mpcl_reduction)9, out, x), MPCL_ERR_ARGUMENT, "9", NULL,
                   "unknown reduction");
    expect_refused(ctx, mpcl_reduce(ctx, MPCL_REDUCE_SUM, NULL, x), MPCL_ERR_ARGUMENT,
                   "out is NULL", NULL, "reduce out NULL");
    expect_refused(ctx, mpcl_reduce(ctx, MPCL_REDUCE_SUM, out, NULL), MPCL_ERR_ARGUMENT,
                   "x is NULL", NULL, "reduce x NULL");

    const mpcl_tensor *list[3] = {x, x, xi};
    expect_refused(ctx, mpcl_all_finite(ctx, flag, list, 3), MPCL_ERR_ARGUMENT, "xs[2]",
                   "(2, 3) i32", "all_finite xs[2] i32");
    expect_refused(ctx, mpcl_all_finite(ctx, flag, NULL, 2), MPCL_ERR_ARGUMENT, "xs is NULL", NULL,
                   "all_finite xs NULL");
    expect_refused(ctx, mpcl_all_finite(ctx, flagf, list, 2), MPCL_ERR_ARGUMENT, "(1) f32",
                   "(1) i32", "all_finite flag f32");
    expect_refused(ctx, mpcl_all_finite(ctx, flag2, list, 2), MPCL_ERR_SHAPE, "(2) i32", "(1) i32",
                   "all_finite flag (2)");
    expect_refused(ctx, mpcl_unscale(ctx, xi, 0.5f, flag), MPCL_ERR_ARGUMENT, "(2, 3) i32",
                   mpcl_dtype_name(st), "unscale x i32");
    expect_refused(ctx, mpcl_unscale(ctx, x, 0.5f, flagf), MPCL_ERR_ARGUMENT, "(1) f32", "(1) i32",
                   "unscale flag f32");
    expect_refused(ctx, mpcl_unscale(ctx, x, 0.5f, flag2), MPCL_ERR_SHAPE, "(2) i32", "(1) i32",
                   "unscale flag (2)");
    expect_refused(ctx, mpcl_unscale(NULL, x, 0.5f, flag), MPCL_ERR_ARGUMENT, NULL, NULL,
                   "unscale NULL ctx");

    /* Nothing was written. */
    expect_ok(ctx, mpcl_finish(ctx), "mpcl_finish");
    ck_assert_msg(read_scalar(out) == 7.0f, "out written");
    ck_assert_msg(read_scalar(outi) == 7.0f, "outi written");
    ck_assert_msg(read_scalar(flag) == 5.0f, "flag written by a refused call");
    ck_assert_msg(read_scalar(flagf) == 5.0f, "flagf written");
    float v[6];
    expect_ok(ctx, mpcl_tensor_download(x, v, 6), "download");
    ck_assert_msg(memcmp(v, xv, sizeof v) == 0, "x written by a refused unscale");
    expect_ok(ctx, mpcl_tensor_download(out2, v, 2), "download");
    ck_assert_msg(v[0] == 1.0f && v[1] == 2.0f, "out (2) written");
    expect_ok(ctx, mpcl_tensor_download(flag2, v, 2), "download");
    ck_assert_msg(v[0] == 1.0f && v[1] == 2.0f, "flag (2) written");

    mpcl_tensor_destroy(x);
    mpcl_tensor_destroy(xi);
    mpcl_tensor_destroy(out);
    mpcl_tensor_destroy(out2);
    mpcl_tensor_destroy(outi);
    mpcl_tensor_destroy(flag);
    mpcl_tensor_destroy(flagf);
    mpcl_tensor_destroy(flag2);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("reduce");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"reduce_sizes", test_reduce_sizes},
        {"reduce_f32_input", test_reduce_f32_input},
        {"reduce_exact_integers", test_reduce_exact_integers},
        {"reduce_half_ones", test_reduce_half_ones},
        {"reduce_deterministic", test_reduce_deterministic},
        {"reduce_special_values", test_reduce_special_values},
        {"all_finite", test_all_finite},
        {"unscale", test_unscale},
        {"unscale_overflow", test_unscale_overflow},
        {"bad_arguments", test_bad_arguments},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 600);
        tcase_add_loop_test(tc, cases[i].fn, 0, optest_nmodes);
        suite_add_tcase(s, tc);
    }
    return optest_run(s);
}
