/* test_loss.c — mpcl_softmax_cross_entropy against a double-precision host
 * reference, in every precision mode the device runs.
 *
 * Dimension letters: B rows (batch), C classes.
 *
 * The reference takes the logits as the device holds them (downloaded after
 * upload, so fp16 rounding of the inputs is not counted as op error).
 * Tolerances (see docs/ops/loss-norm.md):
 *   loss (f32, float math in every mode): |err| <= 1e-5 (1 + R) + 1e-5 |ref|,
 *     R the largest spread max - min of a row's logits.
 *   dlogits, g = |grad_scale| / B:
 *     fp32:          |err| <= 1e-6 g + 1e-5 |ref|
 *     fp16-storage,
 *     fp16:          |err| <= 1e-6 g + 2^-24 + 1e-3 |ref| (two half ulps; the
 *                    kernel computes in float in the fp16 variant too) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

/* ------------------------------------------------------------ reference */

/* Mean cross-entropy of x (B, C) against labels y (B) with smoothing s; a
 * label outside [0, C) makes its row (and the mean) NaN. grad (B, C), when
 * not NULL, receives scale * (softmax - t) / B (NaN rows for bad labels). */
static double ref_xent(const double *x, const int *y, size_t B, size_t C, double s, double scale,
                       double *grad)
{
    double total = 0;
    for (size_t b = 0; b < B; b++) {
        const double *r = x + b * C;
        double m = r[0];
        for (size_t c = 1; c < C; c++)
            m = r[c] > m ? r[c] : m;
        double se = 0;
        for (size_t c = 0; c < C; c++)
            se += exp(r[c] - m);
        double lse = m + log(se);
        int valid = y[b] >= 0 && (size_t)y[b] < C;
        double row = 0;
        for (size_t c = 0; c < C; c++) {
            double t = s / (double)C + (valid && (size_t)y[b] == c ? 1.0 - s : 0.0);
            row += t * (lse - r[c]);
            if (grad)
                grad[b * C + c] = valid ? scale * (exp(r[c] - m) / se - t) / (double)B : NAN;
        }
        total += valid ? row : NAN;
    }
    return total / (double)B;
}

/* ------------------------------------------------------------ harness */

typedef struct {
    size_t B, C;
    float smoothing, scale;
    int want_grad;
} xent_case;

typedef struct {
    float loss;      /* device */
    double ref_loss; /* host */
    float *dlogits;  /* (B, C) device, or NULL */
    double *ref;     /* (B, C) host reference gradient */
    double *x;       /* (B, C) logits as the device holds them */
    double spread;   /* the largest max - min over rows */
} xent_result;

static void result_free(xent_result *r)
{
    free(r->dlogits);
    free(r->ref);
    free(r->x);
}

/* Sets every element of t to v by an upload. (Not mpcl_tensor_fill: under
 * oclgrind 21.10 a clEnqueueFillBuffer makes later kernels report reads of
 * other, fully written buffers as uninitialised.) */
static void fill_const(mpcl_tensor *t, float v)
{
    size_t n = mpcl_tensor_numel(t);
    float *h = malloc(n * sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (size_t i = 0; i < n; i++)
        h[i] = v;
    mpcl_status s = mpcl_tensor_upload(t, h, n);
    ck_assert_msg(s == MPCL_OK, "mpcl_tensor_upload: %s", mpcl_last_error(t->ctx));
    free(h);
}

/* An output tensor (d0, d1) that is a view of the start of a larger buffer
 * whose GUARD trailing elements hold GUARD_VALUE: a kernel that writes past
 * the end of its output changes them (checked by assert_guard). */
#define GUARD 256
#define GUARD_VALUE 7.0f

static mpcl_tensor *guarded_tensor(mpcl_context *ctx, mpcl_dtype dtype, size_t d0, size_t d1,
                                   mpcl_tensor **base)
{
    *base = optest_tensor(ctx, dtype, MPCL_MEM_GRADIENTS, NULL, d0 * d1 + GUARD, 0, 0, 0);
    fill_const(*base, GUARD_VALUE);
    size_t shape[2] = {d0, d1};
    mpcl_tensor *v = NULL;
    mpcl_status s = mpcl_tensor_view(*base, 0, 2, shape, &v);
    ck_assert_msg(s == MPCL_OK, "mpcl_tensor_view: %s", mpcl_last_error(ctx));
    return v;
}

static void assert_guard(const mpcl_tensor *base, size_t numel, const char *what)
{
    float *all = optest_download(base);
    for (size_t i = numel; i < numel + GUARD; i++)
        ck_assert_msg(all[i] == GUARD_VALUE, "%s: written past the end of the output: element %zu "
                      "of the guard tail is %g", what, i - numel, (double)all[i]);
    free(all);
}

static double dlogit_atol(mpcl_precision mode, const xent_case *k)
{
    double g = fabs((double)k->scale) / (double)k->B;
    return 1e-6 * g + (mode == MPCL_PRECISION_FP32 ? 0.0 : 0x1p-24);
}

static double dlogit_rtol(mpcl_precision mode)
{
    /* one rounding to the storage dtype, with a factor 2 of room */
    return mode == MPCL_PRECISION_FP32 ? 1e-5 : 2 * optest_unit_roundoff(mode);
}

/* Runs the op on logits (B, C) and labels (B); fills *r. */
static void run_xent(mpcl_context *ctx, const xent_case *k, const float *logits, const int *labels,
                     xent_result *r)
{
    size_t B = k->B, C = k->C, n = B * C;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    float *lab = malloc(B * sizeof *lab);
    ck_assert_ptr_nonnull(lab);
    for (size_t b = 0; b < B; b++)
        lab[b] = (float)labels[b];
    mpcl_tensor *tx = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, logits, B, C, 0, 0); /* (B, C) */
    mpcl_tensor *ty = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, lab, B, 0, 0, 0); /* (B) */
    mpcl_tensor *tl = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, 1, 0, 0, 0); /* (1) */
    mpcl_tensor *guard = NULL;
    mpcl_tensor *td = k->want_grad ? guarded_tensor(ctx, st, B, C, &guard) : NULL; /* (B, C) */
    fill_const(tl, -1.0f);

    mpcl_status s = mpcl_softmax_cross_entropy(ctx, tl, td, tx, ty, k->smoothing, k->scale);
    ck_assert_msg(s == MPCL_OK, "mpcl_softmax_cross_entropy: %s", mpcl_last_error(ctx));

    float *held = optest_download(tx);
    float *loss = optest_download(tl);
    r->loss = loss[0];
    free(loss);
    r->dlogits = td ? optest_download(td) : NULL;
    if (guard)
        assert_guard(guard, n, "dlogits");
    r->x = malloc(n * sizeof *r->x);
    r->ref = malloc(n * sizeof *r->ref);
    ck_assert_ptr_nonnull(r->x);
    ck_assert_ptr_nonnull(r->ref);
    r->spread = 0;
    for (size_t b = 0; b < B; b++) {
        double lo = held[b * C], hi = held[b * C];
        for (size_t c = 0; c < C; c++) {
            double v = held[b * C + c];
            r->x[b * C + c] = v;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        r->spread = hi - lo > r->spread ? hi - lo : r->spread;
    }
    r->ref_loss = ref_xent(r->x, labels, B, C, k->smoothing, k->scale, r->ref);
    free(held);
    free(lab);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(ty);
    mpcl_tensor_destroy(tl);
    mpcl_tensor_destroy(td);
    mpcl_tensor_destroy(guard);
}

static void assert_loss(const char *what, const xent_result *r)
{
    double atol = 1e-5 * (1.0 + r->spread);
    double ref = r->ref_loss;
    ck_assert_msg(isfinite(r->loss), "%s: loss %g is not finite", what, (double)r->loss);
    optest_assert_close(what, &r->loss, &ref, 1, atol, 1e-5);
}

/* Checks loss and dlogits of one case against the reference. */
static void check_case(int mi, const xent_case *k, const float *logits, const int *labels,
                       const char *what)
{
    mpcl_context *ctx = optest_modes[mi].ctx;
    xent_result r;
    run_xent(ctx, k, logits, labels, &r);
    char name[160];
    snprintf(name, sizeof name, "%s [%s] loss", what, optest_modes[mi].name);
    assert_loss(name, &r);
    if (k->want_grad) {
        snprintf(name, sizeof name, "%s [%s] dlogits", what, optest_modes[mi].name);
        optest_assert_close(name, r.dlogits, r.ref, k->B * k->C,
                            dlogit_atol(optest_modes[mi].mode, k), dlogit_rtol(optest_modes[mi].mode));
    }
    result_free(&r);
}

static float *random_logits(size_t n, uint64_t seed, float lo, float hi)
{
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    optest_fill_uniform(x, n, seed, lo, hi);
    return x;
}

static int *spread_labels(size_t B, size_t C, uint64_t seed)
{
    int *y = malloc(B * sizeof *y);
    ck_assert_ptr_nonnull(y);
    for (size_t b = 0; b < B; b++)
        y[b] = (int)((b * 7 + seed) % C);
    return y;
}

static void run_random(int mi, size_t B, size_t C, float smoothing, float scale, float lo, float hi,
                       const char *what)
{
    xent_case k = {B, C, smoothing, scale, 1};
    float *x = random_logits(B * C, B * 131 + C, lo, hi);
    int *y = spread_labels(B, C, C / 3);
    check_case(mi, &k, x, y, what);
    free(x);
    free(y);
}

/* ------------------------------------------------------------ tests */

START_TEST(test_basic)
{
    run_random(_i, 4, 10, 0.0f, 1.0f, -3.0f, 3.0f, "B=4 C=10");
    run_random(_i, 1, 10, 0.0f, 1.0f, -3.0f, 3.0f, "B=1 C=10");
}
END_TEST

START_TEST(test_smoothing_and_scale)
{
    run_random(_i, 4, 10, 0.1f, 1.0f, -3.0f, 3.0f, "smoothing 0.1");
    run_random(_i, 4, 10, 0.0f, 1024.0f, -3.0f, 3.0f, "scale 1024");
    run_random(_i, 5, 10, 0.1f, 1024.0f, -3.0f, 3.0f, "smoothing 0.1 scale 1024");
    run_random(_i, 3, 7, 1.0f, 1.0f, -3.0f, 3.0f, "smoothing 1 (uniform target)");
}
END_TEST

/* C = 1000 is not a multiple of any work-group size: the row loops stride. */
START_TEST(test_large_c)
{
    size_t B = optest_small() ? 2 : 33;
    run_random(_i, B, 1000, 0.0f, 1.0f, -5.0f, 5.0f, "C=1000");
    run_random(_i, B, 1000, 0.2f, 1024.0f, -5.0f, 5.0f, "C=1000 smoothing 0.2 scale 1024");
    run_random(_i, 3, 257, 0.0f, 1.0f, -5.0f, 5.0f, "C=257");
}
END_TEST

/* Logits around +-80 (exp overflows float past 88) and near 60000 (exp
 * overflows everything; 60000 is close to half's largest 65504): the loss
 * must be finite and right. */
START_TEST(test_large_logits)
{
    size_t B = 3, C = 10;
    float x[30];
    int y[3] = {2, 9, 0};
    for (size_t i = 0; i < B * C; i++)
        x[i] = (float)(((i * 37) % 17) * 10) - 80.0f; /* -80 .. 80 */
    xent_case k = {B, C, 0.0f, 1.0f, 1};
    check_case(_i, &k, x, y, "logits in [-80, 80]");
    k.smoothing = 0.1f;
    check_case(_i, &k, x, y, "logits in [-80, 80], smoothing");

    /* near 60000, 32 apart (one half ulp there), and one row of negatives */
    for (size_t c = 0; c < C; c++) {
        x[c] = 60000.0f - 32.0f * (float)((c * 3) % C);
        x[C + c] = 65504.0f - 32.0f * (float)c;
        x[2 * C + c] = -60000.0f + 32.0f * (float)(c % 4);
    }
    k.smoothing = 0.0f;
    check_case(_i, &k, x, y, "logits near 60000");
    k.smoothing = 0.1f;
    k.scale = 1024.0f;
    check_case(_i, &k, x, y, "logits near 60000, smoothing, scale 1024");
}
END_TEST

/* Central differences of the double reference loss against the device's
 * dlogits / grad_scale. */
static void fd_check(int mi, size_t B, size_t C, float smoothing, float scale)
{
    xent_case k = {B, C, smoothing, scale, 1};
    float *x = random_logits(B * C, 99 + C, -2.0f, 2.0f);
    int *y = spread_labels(B, C, 1);
    xent_result r;
    run_xent(optest_modes[mi].ctx, &k, x, y, &r);
    size_t n = B * C;
    double *fd = malloc(n * sizeof *fd);
    ck_assert_ptr_nonnull(fd);
    const double h = 1e-4;
    for (size_t i = 0; i < n; i++) {
        double keep = r.x[i];
        r.x[i] = keep + h;
        double up = ref_xent(r.x, y, B, C, smoothing, 1.0, NULL);
        r.x[i] = keep - h;
        double down = ref_xent(r.x, y, B, C, smoothing, 1.0, NULL);
        r.x[i] = keep;
        fd[i] = scale * (up - down) / (2 * h);
    }
    char name[128];
    snprintf(name, sizeof name, "finite differences B=%zu C=%zu s=%g [%s]", B, C, (double)smoothing,
             optest_modes[mi].name);
    double g = fabs((double)scale) / (double)B;
    optest_assert_close(name, r.dlogits, fd, n, dlogit_atol(optest_modes[mi].mode, &k) + 1e-7 * g,
                        dlogit_rtol(optest_modes[mi].mode));
    free(fd);
    free(x);
    free(y);
    result_free(&r);
}

START_TEST(test_finite_differences)
{
    fd_check(_i, 3, 10, 0.0f, 1.0f);
    fd_check(_i, 2, 13, 0.1f, 1.0f);
    fd_check(_i, 1, 10, 0.0f, 1024.0f);
}
END_TEST

/* Labels C and -1 must not be read through: their rows are NaN, the mean is
 * NaN, the other rows' gradients are right (oclgrind checks the reads).
 * NaN and +inf logits give a NaN loss too. */
START_TEST(test_invalid_label)
{
    size_t B = 4, C = 10;
    float *x = random_logits(B * C, 5, -2.0f, 2.0f);
    int y[4] = {3, 10, -1, 0};
    xent_case k = {B, C, 0.0f, 1.0f, 1};
    xent_result r;
    run_xent(optest_modes[_i].ctx, &k, x, y, &r);
    ck_assert_msg(isnan(r.loss), "[%s] loss %g with labels 10 and -1 of C=10, expected NaN",
                  optest_modes[_i].name, (double)r.loss);
    for (size_t c = 0; c < C; c++) {
        ck_assert_msg(isnan(r.dlogits[1 * C + c]) && isnan(r.dlogits[2 * C + c]),
                      "[%s] dlogits of a bad label's row: %g %g, expected NaN",
                      optest_modes[_i].name, (double)r.dlogits[1 * C + c],
                      (double)r.dlogits[2 * C + c]);
    }
    optest_assert_close("row 0 dlogits", r.dlogits, r.ref, C, dlogit_atol(optest_modes[_i].mode, &k),
                        dlogit_rtol(optest_modes[_i].mode));
    optest_assert_close("row 3 dlogits", r.dlogits + 3 * C, r.ref + 3 * C, C,
                        dlogit_atol(optest_modes[_i].mode, &k), dlogit_rtol(optest_modes[_i].mode));
    result_free(&r);

    /* a NaN logit (row 0) and a +inf logit (row 2) make their rows, and so
     * the loss, NaN; the other rows keep their gradients */
    int ok_labels[4] = {3, 1, 2, 0};
    x[0 * C + 5] = NAN;
    x[2 * C + 7] = INFINITY;
    run_xent(optest_modes[_i].ctx, &k, x, ok_labels, &r);
    ck_assert_msg(isnan(r.loss), "[%s] loss %g with a NaN and an inf logit, expected NaN",
                  optest_modes[_i].name, (double)r.loss);
    optest_assert_close("row 1 dlogits beside NaN rows", r.dlogits + C, r.ref + C, C,
                        dlogit_atol(optest_modes[_i].mode, &k), dlogit_rtol(optest_modes[_i].mode));
    result_free(&r);
    free(x);
}
END_TEST

static int count_inf(const float *x, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += isinf(x[i]) != 0;
    return k;
}

/* Loss scale 2^16 over B = 64 keeps |dlogits| <= 1024: finite in half.
 * 2^24 with B = 1 exceeds half's 65504: inf in dlogits (the scaler's cue),
 * while the loss itself stays finite. */
START_TEST(test_scale_overflow)
{
    mpcl_precision mode = optest_modes[_i].mode;
    size_t B = 64, C = 10;
    float *x = random_logits(B * C, 17, -4.0f, 4.0f);
    int *y = spread_labels(B, C, 2);
    xent_case k = {B, C, 0.0f, 65536.0f, 1};
    xent_result r;
    run_xent(optest_modes[_i].ctx, &k, x, y, &r);
    assert_loss("scale 2^16 B=64 loss", &r);
    ck_assert_msg(count_inf(r.dlogits, B * C) == 0, "[%s] scale 2^16, B=64: %d infinite dlogits",
                  optest_modes[_i].name, count_inf(r.dlogits, B * C));
    optest_assert_close("scale 2^16 B=64 dlogits", r.dlogits, r.ref, B * C, dlogit_atol(mode, &k),
                        dlogit_rtol(mode));
    result_free(&r);

    xent_case k1 = {1, C, 0.0f, 16777216.0f, 1};
    run_xent(optest_modes[_i].ctx, &k1, x, y, &r);
    assert_loss("scale 2^24 B=1 loss", &r);
    int infs = count_inf(r.dlogits, C);
    if (mpcl_storage_dtype(optest_modes[_i].ctx) == MPCL_F16) {
        /* the label's entry is 2^24 (p - 1) with p < 0.9: beyond 65504 */
        ck_assert_msg(infs > 0, "[%s] scale 2^24, B=1: no infinite dlogits in half",
                      optest_modes[_i].name);
        for (size_t c = 0; c < C; c++)
            if (fabs(r.ref[c]) > 65520.0) /* half rounds up to inf from 65520 on */
                ck_assert_msg(isinf(r.dlogits[c]) && (r.dlogits[c] > 0) == (r.ref[c] > 0),
                              "[%s] dlogits[%zu] = %g for reference %g, expected a signed inf",
                              optest_modes[_i].name, c, (double)r.dlogits[c], r.ref[c]);
            else
                ck_assert_msg(fabs(r.dlogits[c] - r.ref[c]) <= 1e-3 * fabs(r.ref[c]) + 1e-6 * 16777216.0,
                              "[%s] dlogits[%zu] = %g, reference %g", optest_modes[_i].name, c,
                              (double)r.dlogits[c], r.ref[c]);
    } else {
        ck_assert_int_eq(infs, 0);
        optest_assert_close("scale 2^24 B=1 dlogits", r.dlogits, r.ref, C, dlogit_atol(mode, &k1),
                            dlogit_rtol(mode));
    }
    result_free(&r);
    free(x);
    free(y);
}
END_TEST

/* Without dlogits the loss is the same; the same inputs give the same loss
 * bit for bit (deterministic mean, no atomics). */
START_TEST(test_no_grad_and_determinism)
{
    size_t B = optest_small() ? 9 : 300, C = 10;
    float *x = random_logits(B * C, 23, -3.0f, 3.0f);
    int *y = spread_labels(B, C, 4);
    xent_case k = {B, C, 0.1f, 1.0f, 0};
    xent_result r1, r2, r3;
    run_xent(optest_modes[_i].ctx, &k, x, y, &r1);
    assert_loss("no dlogits loss", &r1);
    ck_assert_ptr_null(r1.dlogits);
    run_xent(optest_modes[_i].ctx, &k, x, y, &r2);
    k.want_grad = 1;
    run_xent(optest_modes[_i].ctx, &k, x, y, &r3);
    ck_assert_msg(memcmp(&r1.loss, &r2.loss, sizeof r1.loss) == 0 &&
                      memcmp(&r1.loss, &r3.loss, sizeof r1.loss) == 0,
                  "[%s] losses differ between runs: %.9g %.9g %.9g", optest_modes[_i].name,
                  (double)r1.loss, (double)r2.loss, (double)r3.loss);
    result_free(&r1);
    result_free(&r2);
    result_free(&r3);
    free(x);
    free(y);
}
END_TEST

/* ------------------------------------------------------------ bad arguments */

typedef struct {
    mpcl_context *ctx;
    mpcl_tensor *logits, *labels, *loss, *dlogits; /* (B, C), (B), (1), (B, C) */
} xent_tensors;

static void make_tensors(mpcl_context *ctx, xent_tensors *t, size_t B, size_t C)
{
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    t->ctx = ctx;
    t->logits = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, B, C, 0, 0);
    t->labels = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, B, 0, 0, 0);
    t->loss = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, 1, 0, 0, 0);
    t->dlogits = optest_tensor(ctx, st, MPCL_MEM_GRADIENTS, NULL, B, C, 0, 0);
    fill_const(t->logits, 0.5f);
    fill_const(t->labels, 1.0f);
    fill_const(t->loss, 123.0f);
    fill_const(t->dlogits, 7.0f);
}

static void free_tensors(xent_tensors *t)
{
    mpcl_tensor_destroy(t->logits);
    mpcl_tensor_destroy(t->labels);
    mpcl_tensor_destroy(t->loss);
    mpcl_tensor_destroy(t->dlogits);
}

/* loss still 123 and dlogits still 7 everywhere: nothing was enqueued. */
static void assert_untouched(const xent_tensors *t, const char *what)
{
    float *l = optest_download(t->loss);
    float *d = optest_download(t->dlogits);
    ck_assert_msg(l[0] == 123.0f, "%s: loss was written (%g)", what, (double)l[0]);
    for (size_t i = 0; i < mpcl_tensor_numel(t->dlogits); i++)
        ck_assert_msg(d[i] == 7.0f, "%s: dlogits[%zu] was written (%g)", what, i, (double)d[i]);
    free(l);
    free(d);
}

static void expect_error(mpcl_context *ctx, mpcl_status got, mpcl_status want, const char *what,
                         const char *shape_a, const char *shape_b)
{
    const char *msg = mpcl_last_error(ctx);
    ck_assert_msg(got == want, "%s: status %s, expected %s (%s)", what, mpcl_status_name(got),
                  mpcl_status_name(want), msg);
    ck_assert_msg(strstr(msg, shape_a) && strstr(msg, shape_b),
                  "%s: message '%s' does not show both '%s' and '%s'", what, msg, shape_a, shape_b);
}

START_TEST(test_bad_arguments)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    const char *sn = mpcl_dtype_name(st);
    char a[64], b[64];
    xent_tensors t;
    make_tensors(ctx, &t, 4, 10);

    /* labels count != B */
    mpcl_tensor *lab5 = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, 5, 0, 0, 0);
    mpcl_status s = mpcl_softmax_cross_entropy(ctx, t.loss, t.dlogits, t.logits, lab5, 0.0f, 1.0f);
    expect_error(ctx, s, MPCL_ERR_SHAPE, "5 labels for B=4", "(5) i32", "(4) i32");
    assert_untouched(&t, "5 labels for B=4");

    /* dlogits (4, 11) for logits (4, 10) */
    mpcl_tensor *d11 = optest_tensor(ctx, st, MPCL_MEM_GRADIENTS, NULL, 4, 11, 0, 0);
    fill_const(d11, 7.0f);
    s = mpcl_softmax_cross_entropy(ctx, t.loss, d11, t.logits, t.labels, 0.0f, 1.0f);
    snprintf(a, sizeof a, "(4, 11) %s", sn);
    snprintf(b, sizeof b, "(4, 10) %s", sn);
    expect_error(ctx, s, MPCL_ERR_SHAPE, "dlogits (4, 11)", a, b);
    assert_untouched(&t, "dlogits (4, 11)");
    float *d = optest_download(d11);
    for (size_t i = 0; i < 44; i++)
        ck_assert_msg(d[i] == 7.0f, "dlogits (4, 11) was written at %zu", i);
    free(d);

    /* loss of 2 elements */
    mpcl_tensor *loss2 = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, 2, 0, 0, 0);
    s = mpcl_softmax_cross_entropy(ctx, loss2, t.dlogits, t.logits, t.labels, 0.0f, 1.0f);
    expect_error(ctx, s, MPCL_ERR_SHAPE, "loss (2)", "(2) f32", "(1) f32");
    assert_untouched(&t, "loss (2)");

    /* logits in the other float dtype than the mode's storage */
    mpcl_dtype other = st == MPCL_F16 ? MPCL_F32 : MPCL_F16;
    mpcl_tensor *lo = optest_tensor(ctx, other, MPCL_MEM_ACTIVATIONS, NULL, 4, 10, 0, 0);
    s = mpcl_softmax_cross_entropy(ctx, t.loss, t.dlogits, lo, t.labels, 0.0f, 1.0f);
    snprintf(a, sizeof a, "(4, 10) %s", mpcl_dtype_name(other));
    snprintf(b, sizeof b, "(*, *) %s", sn);
    expect_error(ctx, s, MPCL_ERR_ARGUMENT, "logits of the wrong dtype", a, b);
    assert_untouched(&t, "logits of the wrong dtype");

    /* labels as f32 */
    mpcl_tensor *labf = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, 4, 0, 0, 0);
    s = mpcl_softmax_cross_entropy(ctx, t.loss, t.dlogits, t.logits, labf, 0.0f, 1.0f);
    expect_error(ctx, s, MPCL_ERR_ARGUMENT, "f32 labels", "(4) f32", "(4) i32");
    assert_untouched(&t, "f32 labels");

    /* smoothing outside [0, 1], NaN grad_scale, NULL loss */
    s = mpcl_softmax_cross_entropy(ctx, t.loss, t.dlogits, t.logits, t.labels, 1.5f, 1.0f);
    ck_assert_int_eq(s, MPCL_ERR_ARGUMENT);
    s = mpcl_softmax_cross_entropy(ctx, t.loss, t.dlogits, t.logits, t.labels, 0.0f, NAN);
    ck_assert_int_eq(s, MPCL_ERR_ARGUMENT);
    s = mpcl_softmax_cross_entropy(ctx, NULL, t.dlogits, t.logits, t.labels, 0.0f, 1.0f);
    ck_assert_int_eq(s, MPCL_ERR_ARGUMENT);
    assert_untouched(&t, "bad smoothing, scale, NULL loss");

    mpcl_tensor_destroy(lab5);
    mpcl_tensor_destroy(d11);
    mpcl_tensor_destroy(loss2);
    mpcl_tensor_destroy(lo);
    mpcl_tensor_destroy(labf);
    free_tensors(&t);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("loss");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"basic", test_basic},
        {"smoothing_scale", test_smoothing_and_scale},
        {"large_c", test_large_c},
        {"large_logits", test_large_logits},
        {"finite_differences", test_finite_differences},
        {"invalid_label", test_invalid_label},
        {"scale_overflow", test_scale_overflow},
        {"no_grad_determinism", test_no_grad_and_determinism},
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
