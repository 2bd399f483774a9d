/* test_elementwise.c — activations, dropout, add and scale against
 * double-precision host references, in every precision mode the device runs.
 *
 * Dimension letters: N elements (the ops see any shape as N flat elements).
 *
 * References take the inputs as the device holds them (optest_quantize), so
 * fp16 rounding of the inputs is not counted as op error. Tolerances, with
 * |err| <= atol + rtol |ref| (docs/ops/elementwise-reduce.md):
 *   fp32          atol 1e-6, rtol 1e-5 (exp / tanh are a few float ulps; the
 *                 atol covers gelu' where it crosses zero)
 *   fp16-storage  atol 1e-6, rtol 1e-3 (float math, one half rounding of the
 *                 output: 2^-11 relative, here two half ulps)
 *   fp16          atol 1e-4, rtol 1e-2 (half arithmetic in relu, add and the
 *                 sigmoid / tanh backward products, subnormals may flush)
 * Finite-difference checks (fp32): central differences of the double
 * reference f, |err| <= 1e-5 + 1e-4 |ref|. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

typedef struct {
    double atol, rtol;
} tol;

static tol mode_tol(mpcl_precision m)
{
    switch (m) {
    case MPCL_PRECISION_FP32: return (tol){1e-6, 1e-5};
    case MPCL_PRECISION_FP16_STORAGE: return (tol){1e-6, 1e-3};
    case MPCL_PRECISION_BF16: return (tol){1e-5, 8e-3}; /* one bf16 rounding: 2^-8 */
    default: return (tol){1e-4, 1e-2};
    }
}

static mpcl_context *mode_ctx(int i) { return optest_modes[i].ctx; }
static mpcl_dtype sdt(mpcl_context *ctx) { return mpcl_storage_dtype(ctx); }

/* A storage-dtype activation tensor of n elements holding x (n), with x
 * replaced by what the device holds. */
static mpcl_tensor *make_1d(mpcl_context *ctx, float *x, size_t n)
{
    optest_quantize(ctx, x, n);
    return optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, x, n, 0, 0, 0);
}

static void expect_ok(mpcl_context *ctx, mpcl_status s, const char *what)
{
    ck_assert_msg(s == MPCL_OK, "%s: %s (%s)", what, mpcl_status_name(s), mpcl_last_error(ctx));
}

static void fill_and_wait(mpcl_context *ctx, mpcl_tensor *t, float v)
{
    expect_ok(ctx, mpcl_tensor_fill(t, v), "mpcl_tensor_fill");
    expect_ok(ctx, mpcl_finish(ctx), "mpcl_finish");
}

/* Every element of t set to v by an upload. Inputs of kernels are uploaded,
 * not filled: oclgrind 21.10 treats clEnqueueFillBuffer data as uninitialised. */
static void upload_const(mpcl_context *ctx, mpcl_tensor *t, float v)
{
    size_t n = mpcl_tensor_numel(t);
    float *h = malloc(n * sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (size_t i = 0; i < n; i++)
        h[i] = v;
    expect_ok(ctx, mpcl_tensor_upload(t, h, n), "mpcl_tensor_upload");
    free(h);
}

/* ------------------------------------------------------------ reference */

static const char *act_name(mpcl_activation f)
{
    static const char *names[] = {"relu", "leaky_relu", "gelu", "sigmoid", "tanh"};
    return names[f];
}

#define GELU_C 0.79788456080286535588 /* sqrt(2 / pi) */
#define GELU_K 0.044715

static double ref_sigmoid(double t) { return 1.0 / (1.0 + exp(-t)); }

/* f(x). gelu: 0.5 x (1 + tanh(u)), evaluated as the identical x sigmoid(2u),
 * which keeps its relative accuracy for negative x. */
static double ref_act(mpcl_activation f, double alpha, double x)
{
    switch (f) {
    case MPCL_ACT_RELU: return x > 0 ? x : 0;
    case MPCL_ACT_LEAKY_RELU: return x > 0 ? x : alpha * x;
    case MPCL_ACT_GELU: {
        double u = GELU_C * (x + GELU_K * x * x * x);
        return x * ref_sigmoid(2 * u);
    }
    case MPCL_ACT_SIGMOID: return ref_sigmoid(x);
    default: return tanh(x);
    }
}

/* f'(x) from x (relu, leaky, gelu) or from y = f(x) (sigmoid, tanh). */
static double ref_grad(mpcl_activation f, double alpha, double x, double y)
{
    switch (f) {
    case MPCL_ACT_RELU: return x > 0 ? 1 : 0;
    case MPCL_ACT_LEAKY_RELU: return x > 0 ? 1 : alpha;
    case MPCL_ACT_GELU: {
        double u = GELU_C * (x + GELU_K * x * x * x);
        double du = GELU_C * (1 + 3 * GELU_K * x * x);
        double s = ref_sigmoid(2 * u), sm = ref_sigmoid(-2 * u); /* s, 1 - s */
        return s + 2 * x * du * s * sm;
    }
    case MPCL_ACT_SIGMOID: return y * (1 - y);
    default: return 1 - y * y;
    }
}

/* The dropout generator, as documented in cl/elementwise.cl. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int ref_keep(uint64_t seed, uint64_t step, uint64_t i, float p)
{
    uint64_t key = mix64(seed ^ mix64(step ^ 0x9e3779b97f4a7c15ULL));
    uint64_t h = mix64(key + (i + 1) * 0x9e3779b97f4a7c15ULL);
    float u = (float)(uint32_t)(h >> 40) * 0x1p-24f;
    return u >= p;
}

/* ----------------------------------------------------------- activations */

static const float alpha_leaky = 0.07f;

/* x (N): uniform in [-4, 4) plus a few values around 0 and the kinks. */
static float *act_inputs(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    optest_fill_uniform(x, n, seed, -4.0f, 4.0f);
    static const float special[] = {0.0f, -0.0f, 1e-3f, -1e-3f, 0.75f, -0.75f, 2.0f, -2.0f};
    for (size_t i = 0; i < n && i < sizeof special / sizeof special[0]; i++)
        x[i * 3 % n] = special[i];
    return x;
}

static size_t act_n(void) { return optest_small() ? 3 * 5 : 7 * 13 * 3; }

/* ReLU runs in its own kernels over exactly n items: full work-groups and,
 * for a prime n above the group size, a last group at a global offset.
 * Results are exact, in place too. */
START_TEST(test_relu_groups_and_tail)
{
    mpcl_context *ctx = mode_ctx(_i);
    const size_t n = optest_small() ? 263 : 1013; /* primes: groups of 256 plus a tail */
    float *x = malloc(n * sizeof *x), *dy = malloc(n * sizeof *dy); /* (N) */
    optest_fill_uniform(x, n, 91, -3.0f, 3.0f);
    optest_fill_uniform(dy, n, 92, -2.0f, 2.0f);
    x[0] = 0.0f;
    x[n - 1] = -0.0f;
    /* special values (fp16-storage works on the bits): NaN of either sign,
     * infinities, half subnormals, the largest half; NaN gradients */
    const float special[] = {NAN, -NAN, INFINITY, -INFINITY, 1e-7f, -1e-7f, 65504.0f, -65504.0f};
    for (size_t j = 0; j < sizeof special / sizeof special[0]; j++)
        x[1 + j] = special[j];
    dy[3] = NAN;  /* x = inf: the NaN passes */
    dy[4] = NAN;  /* x = -inf: +0 */
    dy[7] = -NAN; /* x = 65504: the NaN passes */
    mpcl_tensor *tx = make_1d(ctx, x, n), *tdy = make_1d(ctx, dy, n);
    mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    float *xs = optest_download(tx), *dys = optest_download(tdy); /* as stored */
    expect_ok(ctx, mpcl_activation_forward(ctx, MPCL_ACT_RELU, 0.0f, ty, tx), "relu forward");
    float *y = optest_download(ty);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(isnan(xs[i]) ? isnan(y[i])
                                   : y[i] == (xs[i] > 0 ? xs[i] : 0.0f) && !signbit(y[i]),
                      "relu(%g) = %g at %zu of %zu", (double)xs[i], (double)y[i], i, n);
    expect_ok(ctx, mpcl_activation_backward(ctx, MPCL_ACT_RELU, 0.0f, ty, tdy, tx, NULL),
              "relu backward");
    float *dx = optest_download(ty);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(xs[i] > 0 && isnan(dys[i]) ? isnan(dx[i])
                                                  : dx[i] == (xs[i] > 0 ? dys[i] : 0.0f) &&
                                                        !(dx[i] == 0 && signbit(dx[i]) && xs[i] <= 0),
                      "relu'(%g) * %g = %g at %zu of %zu", (double)xs[i], (double)dys[i],
                      (double)dx[i], i, n);
    expect_ok(ctx, mpcl_activation_forward(ctx, MPCL_ACT_RELU, 0.0f, tx, tx), "relu in place");
    float *yi = optest_download(tx);
    ck_assert_msg(memcmp(yi, y, n * sizeof *y) == 0, "relu in place differs");
    /* NaNs: as the float path stores them (quiet, sign and payload kept) */
    ck_assert_msg(isnan(y[1]) && !signbit(y[1]) && isnan(y[2]) && signbit(y[2]),
                  "relu(NaN) = %g, relu(-NaN) = %g", (double)y[1], (double)y[2]);
    free(yi); free(dx); free(y); free(xs); free(dys); free(x); free(dy);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(tdy);
    mpcl_tensor_destroy(ty);
}
END_TEST

START_TEST(test_activation_forward)
{
    mpcl_context *ctx = mode_ctx(_i);
    tol t = mode_tol(optest_modes[_i].mode);
    size_t n = act_n();
    for (int f = MPCL_ACT_RELU; f <= MPCL_ACT_TANH; f++) {
        float *x = act_inputs(n, 11 + (uint64_t)f); /* (N) */
        mpcl_tensor *tx = make_1d(ctx, x, n);
        mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
        expect_ok(ctx, mpcl_activation_forward(ctx, (mpcl_activation)f, alpha_leaky, ty, tx),
                  "mpcl_activation_forward");
        float *y = optest_download(ty); /* (N) */
        double *ref = malloc(n * sizeof *ref);
        for (size_t i = 0; i < n; i++)
            ref[i] = ref_act((mpcl_activation)f, alpha_leaky, x[i]);
        char what[64];
        snprintf(what, sizeof what, "%s forward (%s)", act_name((mpcl_activation)f),
                 optest_modes[_i].name);
        optest_assert_close(what, y, ref, n, t.atol, t.rtol);

        /* In place (y = x) gives the same bits. */
        expect_ok(ctx, mpcl_activation_forward(ctx, (mpcl_activation)f, alpha_leaky, tx, tx),
                  "mpcl_activation_forward in place");
        float *yi = optest_download(tx);
        ck_assert_msg(memcmp(yi, y, n * sizeof *y) == 0, "%s in place differs", what);
        free(yi);
        free(ref);
        free(y);
        free(x);
        mpcl_tensor_destroy(tx);
        mpcl_tensor_destroy(ty);
    }
}
END_TEST

START_TEST(test_activation_backward)
{
    mpcl_context *ctx = mode_ctx(_i);
    tol t = mode_tol(optest_modes[_i].mode);
    size_t n = act_n();
    for (int f = MPCL_ACT_RELU; f <= MPCL_ACT_TANH; f++) {
        mpcl_activation a = (mpcl_activation)f;
        float *x = act_inputs(n, 21 + (uint64_t)f); /* (N) */
        float *dy = malloc(n * sizeof *dy);         /* (N) */
        optest_fill_uniform(dy, n, 31 + (uint64_t)f, -2.0f, 2.0f);
        mpcl_tensor *tx = make_1d(ctx, x, n);
        mpcl_tensor *tdy = make_1d(ctx, dy, n);
        mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
        mpcl_tensor *tdx = optest_tensor(ctx, sdt(ctx), MPCL_MEM_GRADIENTS, NULL, n, 0, 0, 0);
        expect_ok(ctx, mpcl_activation_forward(ctx, a, alpha_leaky, ty, tx), "forward");
        float *y = optest_download(ty); /* (N) as the device holds it */
        /* The operand f' does not use may be NULL. */
        int from_y = a == MPCL_ACT_SIGMOID || a == MPCL_ACT_TANH;
        expect_ok(ctx,
                  mpcl_activation_backward(ctx, a, alpha_leaky, tdx, tdy, from_y ? NULL : tx,
                                           from_y ? ty : NULL),
                  "mpcl_activation_backward");
        float *dx = optest_download(tdx);
        double *ref = malloc(n * sizeof *ref);
        for (size_t i = 0; i < n; i++)
            ref[i] = (double)dy[i] * ref_grad(a, alpha_leaky, x[i], y[i]);
        char what[64];
        snprintf(what, sizeof what, "%s backward (%s)", act_name(a), optest_modes[_i].name);
        optest_assert_close(what, dx, ref, n, t.atol, t.rtol);

        /* dx = dy in place, both operands given: the same bits. */
        expect_ok(ctx, mpcl_activation_backward(ctx, a, alpha_leaky, tdy, tdy, tx, ty),
                  "mpcl_activation_backward in place");
        float *dxi = optest_download(tdy);
        ck_assert_msg(memcmp(dxi, dx, n * sizeof *dx) == 0, "%s in place differs", what);
        /* NULL dx: nothing to compute, still OK. */
        expect_ok(ctx, mpcl_activation_backward(ctx, a, alpha_leaky, NULL, tdy, tx, ty),
                  "mpcl_activation_backward with NULL dx");
        free(dxi);
        free(ref);
        free(dx);
        free(y);
        free(dy);
        free(x);
        mpcl_tensor_destroy(tx);
        mpcl_tensor_destroy(ty);
        mpcl_tensor_destroy(tdy);
        mpcl_tensor_destroy(tdx);
    }
}
END_TEST

/* Central differences of the double reference against the device's dx (fp32). */
START_TEST(test_activation_finite_difference)
{
    mpcl_context *ctx = mode_ctx(_i);
    size_t n = act_n();
    int fp32 = optest_modes[_i].mode == MPCL_PRECISION_FP32;
    /* Half modes: dx is a half rounding of float math; compare at their tolerance
     * for the x-based derivatives (y-based ones see the half rounding of y). */
    tol t = fp32 ? (tol){1e-5, 1e-4} : mode_tol(optest_modes[_i].mode);
    for (int f = MPCL_ACT_RELU; f <= MPCL_ACT_TANH; f++) {
        mpcl_activation a = (mpcl_activation)f;
        if (!fp32 && (a == MPCL_ACT_SIGMOID || a == MPCL_ACT_TANH))
            continue;
        float *x = malloc(n * sizeof *x); /* (N) */
        optest_fill_uniform(x, n, 41 + (uint64_t)f, -3.0f, 3.0f);
        for (size_t i = 0; i < n; i++) /* away from the kink of relu / leaky */
            if (fabsf(x[i]) < 0.01f)
                x[i] = 0.5f;
        float *dy = malloc(n * sizeof *dy); /* (N) */
        optest_fill_uniform(dy, n, 51 + (uint64_t)f, -1.5f, 1.5f);
        mpcl_tensor *tx = make_1d(ctx, x, n);
        mpcl_tensor *tdy = make_1d(ctx, dy, n);
        mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
        mpcl_tensor *tdx = optest_tensor(ctx, sdt(ctx), MPCL_MEM_GRADIENTS, NULL, n, 0, 0, 0);
        expect_ok(ctx, mpcl_activation_forward(ctx, a, alpha_leaky, ty, tx), "forward");
        expect_ok(ctx, mpcl_activation_backward(ctx, a, alpha_leaky, tdx, tdy, tx, ty), "backward");
        float *dx = optest_download(tdx);
        double *fd = malloc(n * sizeof *fd);
        for (size_t i = 0; i < n; i++) {
            double h = 1e-5;
            double d =
                (ref_act(a, alpha_leaky, x[i] + h) - ref_act(a, alpha_leaky, x[i] - h)) / (2 * h);
            fd[i] = (double)dy[i] * d;
        }
        char what[80];
        snprintf(what, sizeof what, "%s backward vs finite differences (%s)", act_name(a),
                 optest_modes[_i].name);
        optest_assert_close(what, dx, fd, n, t.atol, t.rtol);
        free(fd);
        free(dx);
        free(dy);
        free(x);
        mpcl_tensor_destroy(tx);
        mpcl_tensor_destroy(ty);
        mpcl_tensor_destroy(tdy);
        mpcl_tensor_destroy(tdx);
    }
}
END_TEST

/* Large |x|, zeros of both signs, infinities: no NaN from finite inputs,
 * the right limits, and relu(-0) = +0. */
START_TEST(test_activation_edges)
{
    mpcl_context *ctx = mode_ctx(_i);
    tol t = mode_tol(optest_modes[_i].mode);
    int half = sdt(ctx) == MPCL_F16;
    const float big = half ? 65504.0f : 3.0e38f, mid = half ? 1.0e4f : 1.0e30f;
    float x[] = {big,
                 -big,
                 mid,
                 -mid,
                 60.0f,
                 -60.0f,
                 25.0f,
                 -25.0f,
                 12.0f,
                 -12.0f,
                 0.0f,
                 -0.0f,
                 half ? 6.0e-8f : 1.0e-40f,
                 INFINITY,
                 -INFINITY}; /* (N) */
    const size_t n = sizeof x / sizeof x[0], nfinite = n - 2;
    for (int f = MPCL_ACT_RELU; f <= MPCL_ACT_TANH; f++) {
        mpcl_activation a = (mpcl_activation)f;
        float xs[sizeof x / sizeof x[0]];
        memcpy(xs, x, sizeof x);
        mpcl_tensor *tx = make_1d(ctx, xs, n);
        mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
        mpcl_tensor *tdy = optest_tensor(ctx, sdt(ctx), MPCL_MEM_GRADIENTS, NULL, n, 0, 0, 0);
        mpcl_tensor *tdx = optest_tensor(ctx, sdt(ctx), MPCL_MEM_GRADIENTS, NULL, n, 0, 0, 0);
        upload_const(ctx, tdy, 1.0f);
        expect_ok(ctx, mpcl_activation_forward(ctx, a, alpha_leaky, ty, tx), "forward");
        expect_ok(ctx, mpcl_activation_backward(ctx, a, alpha_leaky, tdx, tdy, tx, ty), "backward");
        float *y = optest_download(ty);
        float *dx = optest_download(tdx);
        for (size_t i = 0; i < nfinite; i++) {
            ck_assert_msg(!isnan(y[i]) && !isnan(dx[i]), "%s(%g) = %g, f' %g: NaN (%s)",
                          act_name(a), (double)xs[i], (double)y[i], (double)dx[i],
                          optest_modes[_i].name);
            /* Large finite inputs must not overflow into inf either (except where
             * the function itself is that large). */
            /* f' from x, or (sigmoid, tanh) from y as the device holds it */
            double r = ref_act(a, alpha_leaky, xs[i]);
            double g = ref_grad(a, alpha_leaky, xs[i], y[i]);
            ck_assert_msg(fabs(y[i] - r) <= t.atol + t.rtol * fabs(r),
                          "%s(%g) = %.9g, expected %.9g (%s)", act_name(a), (double)xs[i],
                          (double)y[i], r, optest_modes[_i].name);
            ck_assert_msg(fabs(dx[i] - g) <= t.atol + t.rtol * fabs(g),
                          "%s'(%g) = %.9g, expected %.9g (%s)", act_name(a), (double)xs[i],
                          (double)dx[i], g, optest_modes[_i].name);
        }
        /* relu(-0) is +0 (x <= 0 gives 0). */
        if (a == MPCL_ACT_RELU)
            ck_assert_msg(y[11] == 0.0f && !signbit(y[11]), "relu(-0) = %g", (double)y[11]);
        /* Limits at +-inf: sigmoid 1, 0; tanh +-1; relu inf, 0; leaky inf, -inf;
         * gelu(+inf) = +inf (gelu(-inf) is NaN by design: an overflow stays visible). */
        double lim_p[] = {INFINITY, INFINITY, INFINITY, 1, 1};
        double lim_n[] = {0, -INFINITY, NAN, 0, -1};
        ck_assert_msg(y[n - 2] == lim_p[f], "%s(inf) = %.9g", act_name(a), (double)y[n - 2]);
        if (a != MPCL_ACT_GELU)
            ck_assert_msg(y[n - 1] == lim_n[f], "%s(-inf) = %.9g", act_name(a), (double)y[n - 1]);
        free(y);
        free(dx);
        mpcl_tensor_destroy(tx);
        mpcl_tensor_destroy(ty);
        mpcl_tensor_destroy(tdy);
        mpcl_tensor_destroy(tdx);
    }
}
END_TEST

/* -------------------------------------------------------------- dropout */

static size_t dropout_n(void) { return optest_small() ? 4000 : 100000; }

/* |count - n q| within 6 standard deviations of a binomial (n, q). */
static void assert_binomial(const char *what, size_t count, size_t n, double q)
{
    double mean = (double)n * q, sd = sqrt((double)n * q * (1 - q));
    ck_assert_msg(fabs((double)count - mean) <= 6 * sd,
                  "%s: %zu of %zu, expected %.1f +- %.1f (6 sd)", what, count, n, mean, 6 * sd);
}

START_TEST(test_dropout_forward)
{
    mpcl_context *ctx = mode_ctx(_i);
    tol t = mode_tol(optest_modes[_i].mode);
    size_t n = dropout_n();
    const float p = 0.3f;
    const uint64_t seed = 0x1234567890abcdefULL, step = 7;
    float *x = malloc(n * sizeof *x); /* (N), never 0, so y != 0 iff kept */
    optest_fill_uniform(x, n, 61, 0.5f, 1.5f);
    mpcl_tensor *tx = make_1d(ctx, x, n);
    mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    expect_ok(ctx, mpcl_dropout_forward(ctx, ty, tx, p, seed, step), "mpcl_dropout_forward");
    float *y = optest_download(ty);
    double *ref = malloc(n * sizeof *ref);
    size_t kept = 0, pairs = 0, mismatch = 0;
    double scale = 1.0 / (1.0 - p);
    for (size_t i = 0; i < n; i++) {
        int k = ref_keep(seed, step, i, p);
        ref[i] = k ? x[i] * scale : 0.0;
        kept += y[i] != 0.0f;
        mismatch += (y[i] != 0.0f) != k;
        if (i > 0)
            pairs += y[i] != 0.0f && y[i - 1] != 0.0f;
    }
    ck_assert_msg(mismatch == 0, "dropout mask differs from the documented generator in %zu of %zu",
                  mismatch, n);
    assert_binomial("dropout kept", kept, n, 1.0 - p);
    /* Neighbours independent: both kept with probability (1 - p)^2. */
    assert_binomial("dropout neighbours both kept", pairs, n - 1, (1.0 - p) * (1.0 - p));
    optest_assert_close("dropout forward", y, ref, n, t.atol, t.rtol);
    free(ref);
    free(y);
    free(x);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(ty);
}
END_TEST

START_TEST(test_dropout_backward_same_mask)
{
    mpcl_context *ctx = mode_ctx(_i);
    tol t = mode_tol(optest_modes[_i].mode);
    size_t n = dropout_n() / 4;
    const float p = 0.45f;
    const uint64_t seed = 99, step = 123456789012ULL;
    float *x = malloc(n * sizeof *x);   /* (N), never 0 */
    float *dy = malloc(n * sizeof *dy); /* (N), never 0 */
    optest_fill_uniform(x, n, 71, 0.5f, 2.0f);
    optest_fill_uniform(dy, n, 72, -2.0f, -0.25f);
    mpcl_tensor *tx = make_1d(ctx, x, n);
    mpcl_tensor *tdy = make_1d(ctx, dy, n);
    mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    mpcl_tensor *tdx = optest_tensor(ctx, sdt(ctx), MPCL_MEM_GRADIENTS, NULL, n, 0, 0, 0);
    expect_ok(ctx, mpcl_dropout_forward(ctx, ty, tx, p, seed, step), "forward");
    expect_ok(ctx, mpcl_dropout_backward(ctx, tdx, tdy, p, seed, step), "backward");
    float *y = optest_download(ty);
    float *dx = optest_download(tdx);
    double *ref = malloc(n * sizeof *ref);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) {
        differ += (y[i] != 0.0f) != (dx[i] != 0.0f);
        ref[i] = y[i] != 0.0f ? dy[i] / (1.0 - p) : 0.0;
    }
    ck_assert_msg(differ == 0, "backward mask differs from forward in %zu of %zu", differ, n);
    optest_assert_close("dropout backward", dx, ref, n, t.atol, t.rtol);
    /* In place (dx = dy) and NULL dx. */
    expect_ok(ctx, mpcl_dropout_backward(ctx, tdy, tdy, p, seed, step), "backward in place");
    float *dxi = optest_download(tdy);
    ck_assert_msg(memcmp(dxi, dx, n * sizeof *dx) == 0, "dropout backward in place differs");
    expect_ok(ctx, mpcl_dropout_backward(ctx, NULL, tdy, p, seed, step), "backward, NULL dx");
    free(dxi);
    free(ref);
    free(dx);
    free(y);
    free(dy);
    free(x);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(ty);
    mpcl_tensor_destroy(tdy);
    mpcl_tensor_destroy(tdx);
}
END_TEST

/* Runs forward with ones and returns the mask (1 kept, 0 dropped). */
static unsigned char *dropout_mask(mpcl_context *ctx, mpcl_tensor *ones, mpcl_tensor *ty, float p,
                                   uint64_t seed, uint64_t step)
{
    size_t n = mpcl_tensor_numel(ones);
    expect_ok(ctx, mpcl_dropout_forward(ctx, ty, ones, p, seed, step), "mpcl_dropout_forward");
    float *y = optest_download(ty);
    unsigned char *m = malloc(n);
    for (size_t i = 0; i < n; i++)
        m[i] = y[i] != 0.0f;
    free(y);
    return m;
}

static size_t count_differ(const unsigned char *a, const unsigned char *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += a[i] != b[i];
    return d;
}

START_TEST(test_dropout_determinism)
{
    mpcl_context *ctx = mode_ctx(_i);
    size_t n = dropout_n() / 4;
    const float p = 0.5f;
    mpcl_tensor *ones = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    upload_const(ctx, ones, 1.0f);
    unsigned char *base = dropout_mask(ctx, ones, ty, p, 5, 10);
    unsigned char *again = dropout_mask(ctx, ones, ty, p, 5, 10);
    ck_assert_msg(count_differ(base, again, n) == 0, "same (seed, step) gave another mask");
    /* Each change of seed or step (low and high 32 bits) changes about half
     * of the mask (p = 0.5: a fresh mask differs in 2 p (1 - p) = 1/2). */
    const uint64_t other[][2] = {
        {5, 11}, {6, 10}, {5 + (1ULL << 32), 10}, {5, 10 + (1ULL << 32)}, {10, 5}};
    for (size_t c = 0; c < sizeof other / sizeof other[0]; c++) {
        unsigned char *m = dropout_mask(ctx, ones, ty, p, other[c][0], other[c][1]);
        size_t d = count_differ(base, m, n);
        char what[96];
        snprintf(what, sizeof what, "mask of (seed %llu, step %llu) against (5, 10)",
                 (unsigned long long)other[c][0], (unsigned long long)other[c][1]);
        assert_binomial(what, d, n, 0.5);
        free(m);
    }
    free(again);
    free(base);
    mpcl_tensor_destroy(ones);
    mpcl_tensor_destroy(ty);
}
END_TEST

START_TEST(test_dropout_p0_identity)
{
    mpcl_context *ctx = mode_ctx(_i);
    size_t n = 1013;
    float *x = malloc(n * sizeof *x); /* (N) */
    optest_fill_uniform(x, n, 81, -3.0f, 3.0f);
    mpcl_tensor *tx = make_1d(ctx, x, n);
    mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    expect_ok(ctx, mpcl_dropout_forward(ctx, ty, tx, 0.0f, 42, 1), "forward p = 0");
    float *y = optest_download(ty);
    ck_assert_msg(memcmp(x, y, n * sizeof *x) == 0, "dropout p = 0 is not the identity");
    expect_ok(ctx, mpcl_dropout_backward(ctx, ty, tx, 0.0f, 42, 1), "backward p = 0");
    float *dx = optest_download(ty);
    ck_assert_msg(memcmp(x, dx, n * sizeof *x) == 0, "dropout backward p = 0 is not the identity");
    free(dx);
    free(y);
    free(x);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(ty);
}
END_TEST

/* ----------------------------------------------------------- add, scale */

START_TEST(test_add)
{
    mpcl_context *ctx = mode_ctx(_i);
    tol t = mode_tol(optest_modes[_i].mode);
    size_t B = optest_small() ? 2 : 3, C = 3, H = optest_small() ? 3 : 7,
           W = optest_small() ? 5 : 13;
    size_t n = B * C * H * W;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b); /* (B, C, H, W) */
    optest_fill_uniform(a, n, 91, -5.0f, 5.0f);
    optest_fill_uniform(b, n, 92, -5.0f, 5.0f);
    b[0] = -a[0]; /* exact cancellation */
    optest_quantize(ctx, a, n);
    optest_quantize(ctx, b, n);
    mpcl_tensor *ta = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, a, B, C, H, W);
    mpcl_tensor *tb = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, b, B, C, H, W);
    mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, B, C, H, W);
    double *ref = malloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)a[i] + b[i];
    expect_ok(ctx, mpcl_add(ctx, ty, ta, tb), "mpcl_add");
    float *y = optest_download(ty);
    optest_assert_close("add", y, ref, n, t.atol, t.rtol);
    ck_assert_msg(y[0] == 0.0f, "a + (-a) = %g", (double)y[0]);
    /* y aliasing b, then a: a + b twice more gives a + b + b ... check each. */
    expect_ok(ctx, mpcl_add(ctx, tb, ta, tb), "mpcl_add, y = b");
    float *yb = optest_download(tb);
    ck_assert_msg(memcmp(yb, y, n * sizeof *y) == 0, "add with y = b differs");
    expect_ok(ctx, mpcl_add(ctx, ta, ta, ta), "mpcl_add, y = a = b");
    float *ya = optest_download(ta);
    for (size_t i = 0; i < n; i++)
        ref[i] = 2.0 * a[i];
    optest_assert_close("add, y = a = b", ya, ref, n, 0, 0); /* doubling is exact */
    free(ya);
    free(yb);
    free(y);
    free(ref);
    free(a);
    free(b);
    mpcl_tensor_destroy(ta);
    mpcl_tensor_destroy(tb);
    mpcl_tensor_destroy(ty);
}
END_TEST

START_TEST(test_scale)
{
    mpcl_context *ctx = mode_ctx(_i);
    tol t = mode_tol(optest_modes[_i].mode);
    size_t n = optest_small() ? 37 : 7 * 13 * 11;
    const float alphas[] = {0.37f, -3.0f, 0.0f, 1.0f / 1024.0f};
    for (size_t c = 0; c < sizeof alphas / sizeof alphas[0]; c++) {
        float *x = malloc(n * sizeof *x); /* (N) */
        optest_fill_uniform(x, n, 101 + c, -8.0f, 8.0f);
        mpcl_tensor *tx = make_1d(ctx, x, n);
        mpcl_tensor *ty = optest_tensor(ctx, sdt(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
        double *ref = malloc(n * sizeof *ref);
        for (size_t i = 0; i < n; i++)
            ref[i] = (double)alphas[c] * x[i];
        expect_ok(ctx, mpcl_scale(ctx, ty, tx, alphas[c]), "mpcl_scale");
        float *y = optest_download(ty);
        char what[64];
        snprintf(what, sizeof what, "scale by %g (%s)", (double)alphas[c], optest_modes[_i].name);
        optest_assert_close(what, y, ref, n, t.atol, t.rtol);
        expect_ok(ctx, mpcl_scale(ctx, tx, tx, alphas[c]), "mpcl_scale in place");
        float *yi = optest_download(tx);
        ck_assert_msg(memcmp(yi, y, n * sizeof *y) == 0, "%s in place differs", what);
        free(yi);
        free(y);
        free(ref);
        free(x);
        mpcl_tensor_destroy(tx);
        mpcl_tensor_destroy(ty);
    }
    /* f32 tensors in any mode, with a scalar far outside half's range. */
    float *x = malloc(n * sizeof *x);
    optest_fill_uniform(x, n, 111, -8.0f, 8.0f);
    mpcl_tensor *tx = optest_tensor(ctx, MPCL_F32, MPCL_MEM_GRADIENTS, x, n, 0, 0, 0);
    mpcl_tensor *ty = optest_tensor(ctx, MPCL_F32, MPCL_MEM_GRADIENTS, NULL, n, 0, 0, 0);
    expect_ok(ctx, mpcl_scale(ctx, ty, tx, 1e-9f), "mpcl_scale f32");
    float *y = optest_download(ty);
    double *ref = malloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)1e-9f * x[i];
    optest_assert_close("scale f32 by 1e-9", y, ref, n, 0, 1e-6);
    free(ref);
    free(y);
    free(x);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(ty);
}
END_TEST

/* --------------------------------------------------------- bad arguments */

/* The status is `want`, the message names both shapes, and out still holds 7. */
static void expect_refused(mpcl_context *ctx, mpcl_status got, mpcl_status want, const char *s1,
                           const char *s2, mpcl_tensor *out, const char *what)
{
    const char *msg = mpcl_last_error(ctx);
    ck_assert_msg(got == want, "%s: %s, expected %s (%s)", what, mpcl_status_name(got),
                  mpcl_status_name(want), msg);
    if (s1)
        ck_assert_msg(strstr(msg, s1) != NULL, "%s: message \"%s\" lacks \"%s\"", what, msg, s1);
    if (s2)
        ck_assert_msg(strstr(msg, s2) != NULL, "%s: message \"%s\" lacks \"%s\"", what, msg, s2);
    if (out) {
        expect_ok(ctx, mpcl_finish(ctx), "mpcl_finish");
        float *v = optest_download(out);
        for (size_t i = 0; i < mpcl_tensor_numel(out); i++)
            ck_assert_msg(v[i] == 7.0f, "%s: output [%zu] written (%g)", what, i, (double)v[i]);
        free(v);
    }
}

START_TEST(test_bad_arguments)
{
    mpcl_context *ctx = mode_ctx(_i);
    mpcl_dtype st = sdt(ctx);
    const char *sn = mpcl_dtype_name(st);
    const char *other_name = st == MPCL_F16 ? "f32" : "f16";
    mpcl_dtype other = st == MPCL_F16 ? MPCL_F32 : MPCL_F16;
    char s23[32], s32[32], s23o[32], s6[32];
    snprintf(s23, sizeof s23, "(2, 3) %s", sn);
    snprintf(s32, sizeof s32, "(3, 2) %s", sn);
    snprintf(s6, sizeof s6, "(6) %s", sn);
    snprintf(s23o, sizeof s23o, "(2, 3) %s", other_name);
    mpcl_tensor *x = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, 2, 3, 0, 0);
    mpcl_tensor *y = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, 2, 3, 0, 0);
    mpcl_tensor *y32 = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, 3, 2, 0, 0);
    mpcl_tensor *y6 = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, 6, 0, 0, 0);
    mpcl_tensor *xo = optest_tensor(ctx, other, MPCL_MEM_ACTIVATIONS, NULL, 2, 3, 0, 0);
    mpcl_tensor *xi = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, 2, 3, 0, 0);
    expect_ok(ctx, mpcl_tensor_fill(x, 1.0f), "fill");
    fill_and_wait(ctx, xo, 1.0f);
    fill_and_wait(ctx, xi, 1.0f);
    fill_and_wait(ctx, y, 7.0f);
    fill_and_wait(ctx, y32, 7.0f);
    fill_and_wait(ctx, y6, 7.0f);

    /* Mismatched shapes: same element count is not enough. */
    expect_refused(ctx, mpcl_activation_forward(ctx, MPCL_ACT_RELU, 0, y32, x), MPCL_ERR_SHAPE, s32,
                   s23, y32, "activation_forward y (3, 2) for x (2, 3)");
    expect_refused(ctx, mpcl_activation_forward(ctx, MPCL_ACT_TANH, 0, y6, x), MPCL_ERR_SHAPE, s6,
                   s23, y6, "activation_forward y (6) for x (2, 3)");
    expect_refused(ctx, mpcl_activation_backward(ctx, MPCL_ACT_GELU, 0, y, x, y32, NULL),
                   MPCL_ERR_SHAPE, s32, s23, y, "activation_backward x (3, 2) for dy (2, 3)");
    expect_refused(ctx, mpcl_activation_backward(ctx, MPCL_ACT_SIGMOID, 0, y32, x, NULL, x),
                   MPCL_ERR_SHAPE, s32, s23, y32, "activation_backward dx (3, 2)");
    expect_refused(ctx, mpcl_add(ctx, y, x, y32), MPCL_ERR_SHAPE, s32, s23, y, "add b (3, 2)");
    expect_refused(ctx, mpcl_add(ctx, y32, x, x), MPCL_ERR_SHAPE, s32, s23, y32, "add y (3, 2)");
    expect_refused(ctx, mpcl_scale(ctx, y32, x, 2.0f), MPCL_ERR_SHAPE, s32, s23, y32,
                   "scale y (3, 2)");
    expect_refused(ctx, mpcl_dropout_forward(ctx, y32, x, 0.5f, 1, 1), MPCL_ERR_SHAPE, s32, s23,
                   y32, "dropout_forward y (3, 2)");
    expect_refused(ctx, mpcl_dropout_backward(ctx, y6, x, 0.5f, 1, 1), MPCL_ERR_SHAPE, s6, s23, y6,
                   "dropout_backward dx (6)");

    /* Wrong dtypes. */
    expect_refused(ctx, mpcl_activation_forward(ctx, MPCL_ACT_RELU, 0, y, xo), MPCL_ERR_ARGUMENT,
                   s23o, sn, y, "activation_forward x in the other float dtype");
    expect_refused(ctx, mpcl_add(ctx, y, x, xo), MPCL_ERR_ARGUMENT, s23o, s23, y,
                   "add b in the other float dtype");
    expect_refused(ctx, mpcl_scale(ctx, y, xi, 2.0f), MPCL_ERR_ARGUMENT, "(2, 3) i32", sn, y,
                   "scale x i32");
    /* fp16 modes: x f32 is fine, y f16 is not; fp32: x f16 is refused. */
    expect_refused(ctx, mpcl_scale(ctx, y, xo, 2.0f), MPCL_ERR_ARGUMENT, s23o, sn, y,
                   "scale y and x in different dtypes");
    expect_refused(ctx, mpcl_dropout_forward(ctx, y, xi, 0.5f, 1, 1), MPCL_ERR_ARGUMENT,
                   "(2, 3) i32", sn, y, "dropout x i32");

    /* NULL tensors, bad enums and scalars. */
    expect_refused(ctx, mpcl_activation_forward(ctx, MPCL_ACT_RELU, 0, NULL, x), MPCL_ERR_ARGUMENT,
                   "y is NULL", NULL, NULL, "activation_forward y NULL");
    expect_refused(ctx, mpcl_activation_backward(ctx, MPCL_ACT_TANH, 0, y, x, x, NULL),
                   MPCL_ERR_ARGUMENT, "y is NULL", NULL, y, "activation_backward tanh without y");
    expect_refused(ctx, mpcl_activation_backward(ctx, MPCL_ACT_RELU, 0, y, x, NULL, x),
                   MPCL_ERR_ARGUMENT, "x is NULL", NULL, y, "activation_backward relu without x");
    expect_refused(ctx, mpcl_activation_forward(ctx, (mpcl_activation)17, 0, y, x),
                   MPCL_ERR_ARGUMENT, "17", NULL, y, "unknown activation");
    expect_refused(ctx, mpcl_activation_forward(ctx, MPCL_ACT_LEAKY_RELU, NAN, y, x),
                   MPCL_ERR_ARGUMENT, "slope", NULL, y, "leaky slope NaN");
    const float bad_p[] = {1.0f, -0.1f, NAN, 2.0f};
    for (size_t i = 0; i < sizeof bad_p / sizeof bad_p[0]; i++) {
        expect_refused(ctx, mpcl_dropout_forward(ctx, y, x, bad_p[i], 1, 1), MPCL_ERR_ARGUMENT,
                       "p is", NULL, y, "dropout_forward bad p");
        expect_refused(ctx, mpcl_dropout_backward(ctx, y, x, bad_p[i], 1, 1), MPCL_ERR_ARGUMENT,
                       "p is", NULL, y, "dropout_backward bad p");
    }
    expect_refused(ctx, mpcl_add(NULL, y, x, x), MPCL_ERR_ARGUMENT, NULL, NULL, y, "add NULL ctx");

    /* A tensor of another context. */
    if (optest_nmodes > 1) {
        mpcl_context *c2 = mode_ctx((_i + 1) % optest_nmodes);
        mpcl_tensor *x2 = optest_tensor(c2, sdt(c2), MPCL_MEM_ACTIVATIONS, NULL, 2, 3, 0, 0);
        expect_refused(ctx, mpcl_add(ctx, y, x, x2), MPCL_ERR_ARGUMENT, "another context", NULL, y,
                       "add b of another context");
        mpcl_tensor_destroy(x2);
    }
    mpcl_tensor_destroy(x);
    mpcl_tensor_destroy(y);
    mpcl_tensor_destroy(y32);
    mpcl_tensor_destroy(y6);
    mpcl_tensor_destroy(xo);
    mpcl_tensor_destroy(xi);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("elementwise");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"activation_forward", test_activation_forward},
        {"activation_backward", test_activation_backward},
        {"relu_groups_and_tail", test_relu_groups_and_tail},
        {"activation_finite_difference", test_activation_finite_difference},
        {"activation_edges", test_activation_edges},
        {"dropout_forward", test_dropout_forward},
        {"dropout_backward_same_mask", test_dropout_backward_same_mask},
        {"dropout_determinism", test_dropout_determinism},
        {"dropout_p0_identity", test_dropout_p0_identity},
        {"add", test_add},
        {"scale", test_scale},
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
