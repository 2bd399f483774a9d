/* test_norm.c — batch norm and layer norm against double-precision host
 * references, in every precision mode the device runs.
 *
 * Dimension letters: B batch, C channels, H W height and width, HW = H * W,
 * M = B * HW values per channel; N rows, D features per row.
 *
 * The references take every input as the device holds it (downloaded after
 * upload, so fp16 rounding of inputs is not counted as op error).
 * Tolerances (see docs/ops/loss-norm.md), with rtol 1e-5 in fp32 and 1e-3
 * (two half ulps of the output) in fp16-storage and fp16, whose kernels
 * also compute in float:
 *   statistics (f32, every mode): |err| <= 1e-6 (1 + |offset|) + 1e-5 |ref|
 *   y:        |err| <= 1e-6 S + rtol |ref|, S = max |x| invstd |gamma| + |beta|
 *             (the size of the terms: x - mean is rounded in float)
 *   dx:       |err| <= 1e-5 max |dx_ref| (1 + |offset| invstd) + rtol |ref|
 *   dgamma, dbeta: |err| <= 1e-6 L1 + rtol |ref|, L1 the sum of |terms|
 * Finite differences of the double reference (central, h = 1e-4 |x| + 1e-4)
 * are compared with the device gradients with the same tolerances plus 1e-6
 * of the largest gradient. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

#define MOMENTUM 0.1f
#define EPS 1e-5f

/* ------------------------------------------------------------ helpers */

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

static float *host_uniform(size_t n, uint64_t seed, float lo, float hi)
{
    float *x = malloc(n * sizeof *x);
    ck_assert_ptr_nonnull(x);
    optest_fill_uniform(x, n, seed, lo, hi);
    return x;
}

/* A tensor holding data, and data replaced by what the device holds. */
static mpcl_tensor *upload_held(mpcl_context *ctx, mpcl_dtype dtype, mpcl_mem_tag tag, float *data,
                                size_t d0, size_t d1, size_t d2, size_t d3)
{
    mpcl_tensor *t = optest_tensor(ctx, dtype, tag, data, d0, d1, d2, d3);
    ck_assert_int_eq(mpcl_tensor_download(t, data, mpcl_tensor_numel(t)), MPCL_OK);
    return t;
}

/* An output tensor that is a view of the start of a larger buffer whose
 * GUARD trailing elements hold GUARD_VALUE: a kernel that writes past the
 * end of its output changes them (assert_guard). */
#define GUARD 256
#define GUARD_VALUE 7.0f

typedef struct {
    mpcl_tensor *view, *base;
} guarded;

static guarded guarded_tensor(mpcl_context *ctx, mpcl_dtype dtype, size_t d0, size_t d1, size_t d2,
                              size_t d3)
{
    size_t shape[4] = {d0, d1, d2, d3}, n = 1;
    int ndim = 0;
    while (ndim < 4 && shape[ndim])
        n *= shape[ndim++];
    guarded g;
    g.base = optest_tensor(ctx, dtype, MPCL_MEM_ACTIVATIONS, NULL, n + GUARD, 0, 0, 0);
    fill_const(g.base, GUARD_VALUE);
    mpcl_status s = mpcl_tensor_view(g.base, 0, ndim, shape, &g.view);
    ck_assert_msg(s == MPCL_OK, "mpcl_tensor_view: %s", mpcl_last_error(ctx));
    return g;
}

/* Downloads the view and checks the guard tail. */
static float *guarded_download(const guarded *g, const char *what)
{
    size_t n = mpcl_tensor_numel(g->view);
    float *all = optest_download(g->base);
    for (size_t i = n; i < n + GUARD; i++)
        ck_assert_msg(all[i] == GUARD_VALUE,
                      "%s: written past the end of the output: guard element %zu is %g", what, i - n,
                      (double)all[i]);
    return all; /* the first n are the view's */
}

static void guarded_destroy(guarded *g)
{
    mpcl_tensor_destroy(g->view);
    mpcl_tensor_destroy(g->base);
}

static double rtol_of(mpcl_precision mode)
{
    /* fp16 modes 1e-3 (2 x 2^-11), bf16 8e-3 (2 x 2^-8) */
    return mode == MPCL_PRECISION_FP32 ? 1e-5 : mode == MPCL_PRECISION_BF16 ? 8e-3 : 1e-3;
}

static double max_abs(const double *x, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

static void assert_unchanged(const mpcl_tensor *t, float v, const char *what)
{
    float *h = optest_download(t);
    for (size_t i = 0; i < mpcl_tensor_numel(t); i++)
        ck_assert_msg(h[i] == v, "%s: element %zu was written (%g, was %g)", what, i, (double)h[i],
                      (double)v);
    free(h);
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

/* ------------------------------------------------------------ references */

/* Batch norm, training statistics: mean[c], var[c] (biased) of x (B, C, HW);
 * y when not NULL. */
static void ref_bn_forward(const float *x, size_t B, size_t C, size_t HW, const float *gamma,
                           const float *beta, double eps, double *mean, double *var, double *y)
{
    double M = (double)(B * HW);
    for (size_t c = 0; c < C; c++) {
        double s = 0, q = 0;
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++)
                s += x[(b * C + c) * HW + i];
        double m = s / M;
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) {
                double d = x[(b * C + c) * HW + i] - m;
                q += d * d;
            }
        mean[c] = m;
        var[c] = q / M;
        if (!y)
            continue;
        double inv = 1.0 / sqrt(var[c] + eps);
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) {
                size_t j = (b * C + c) * HW + i;
                y[j] = (x[j] - m) * inv * gamma[c] + beta[c];
            }
    }
}

/* Double-precision x, gamma, beta variant of the forward, for finite
 * differences: returns sum_j w[j] y[j]. */
static double ref_bn_objective(const double *x, size_t B, size_t C, size_t HW, const double *gamma,
                               const double *beta, double eps, const float *w)
{
    double M = (double)(B * HW), total = 0;
    for (size_t c = 0; c < C; c++) {
        double s = 0, q = 0;
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++)
                s += x[(b * C + c) * HW + i];
        double m = s / M;
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) {
                double d = x[(b * C + c) * HW + i] - m;
                q += d * d;
            }
        double inv = 1.0 / sqrt(q / M + eps);
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) {
                size_t j = (b * C + c) * HW + i;
                total += w[j] * ((x[j] - m) * inv * gamma[c] + beta[c]);
            }
    }
    return total;
}

/* dx = (gamma invstd / M) (M dy - sum dy - xhat sum dy xhat) (NULL: skip);
 * dgamma = sum dy xhat, dbeta = sum dy; l1g, l1b: sums of |dy xhat|, |dy|. */
static void ref_bn_backward(const float *x, const float *dy, size_t B, size_t C, size_t HW,
                            const float *gamma, const double *mean, const double *var, double eps,
                            double *dx, double *dgamma, double *dbeta, double *l1g, double *l1b)
{
    double M = (double)(B * HW);
    for (size_t c = 0; c < C; c++) {
        double inv = 1.0 / sqrt(var[c] + eps), sg = 0, sb = 0, ag = 0, ab = 0;
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) {
                size_t j = (b * C + c) * HW + i;
                double xhat = (x[j] - mean[c]) * inv;
                sg += dy[j] * xhat;
                sb += dy[j];
                ag += fabs(dy[j] * xhat);
                ab += fabs(dy[j]);
            }
        dgamma[c] = sg;
        dbeta[c] = sb;
        l1g[c] = ag;
        l1b[c] = ab;
        if (!dx)
            continue;
        for (size_t b = 0; b < B; b++)
            for (size_t i = 0; i < HW; i++) {
                size_t j = (b * C + c) * HW + i;
                double xhat = (x[j] - mean[c]) * inv;
                dx[j] = gamma[c] * inv / M * (M * dy[j] - sb - xhat * sg);
            }
    }
}

/* Layer norm over rows of x (N, D): mean[n], var[n] (biased), y. */
static void ref_ln_forward(const float *x, size_t N, size_t D, const float *gamma, const float *beta,
                           double eps, double *mean, double *var, double *y)
{
    for (size_t n = 0; n < N; n++) {
        double s = 0, q = 0;
        for (size_t d = 0; d < D; d++)
            s += x[n * D + d];
        double m = s / (double)D;
        for (size_t d = 0; d < D; d++)
            q += (x[n * D + d] - m) * (x[n * D + d] - m);
        mean[n] = m;
        var[n] = q / (double)D;
        double inv = 1.0 / sqrt(var[n] + eps);
        for (size_t d = 0; d < D; d++)
            y[n * D + d] = (x[n * D + d] - m) * inv * gamma[d] + beta[d];
    }
}

static double ref_ln_objective(const double *x, size_t N, size_t D, const double *gamma,
                               const double *beta, double eps, const float *w)
{
    double total = 0;
    for (size_t n = 0; n < N; n++) {
        double s = 0, q = 0;
        for (size_t d = 0; d < D; d++)
            s += x[n * D + d];
        double m = s / (double)D;
        for (size_t d = 0; d < D; d++)
            q += (x[n * D + d] - m) * (x[n * D + d] - m);
        double inv = 1.0 / sqrt(q / (double)D + eps);
        for (size_t d = 0; d < D; d++)
            total += w[n * D + d] * ((x[n * D + d] - m) * inv * gamma[d] + beta[d]);
    }
    return total;
}

/* g = dy gamma: dx = invstd (g - mean(g) - xhat mean(g xhat));
 * dgamma[d] = sum_n dy xhat, dbeta[d] = sum_n dy, l1g / l1b their |terms|. */
static void ref_ln_backward(const float *x, const float *dy, size_t N, size_t D, const float *gamma,
                            const double *mean, const double *var, double eps, double *dx,
                            double *dgamma, double *dbeta, double *l1g, double *l1b)
{
    for (size_t d = 0; d < D; d++)
        dgamma[d] = dbeta[d] = l1g[d] = l1b[d] = 0;
    for (size_t n = 0; n < N; n++) {
        double inv = 1.0 / sqrt(var[n] + eps), sg = 0, sgx = 0;
        for (size_t d = 0; d < D; d++) {
            size_t j = n * D + d;
            double xhat = (x[j] - mean[n]) * inv, g = dy[j] * gamma[d];
            sg += g;
            sgx += g * xhat;
            dgamma[d] += dy[j] * xhat;
            dbeta[d] += dy[j];
            l1g[d] += fabs(dy[j] * xhat);
            l1b[d] += fabs(dy[j]);
        }
        for (size_t d = 0; d < D; d++) {
            size_t j = n * D + d;
            double xhat = (x[j] - mean[n]) * inv;
            dx[j] = inv * (dy[j] * gamma[d] - sg / (double)D - xhat * sgx / (double)D);
        }
    }
}

/* ------------------------------------------------------------ batch norm */

typedef struct {
    size_t B, C, H, W;
    float offset; /* x = offset + U(-2, 2) */
} bn_shape;

/* Every tensor of one batch-norm layer, with host copies as the device
 * holds them. */
typedef struct {
    mpcl_context *ctx;
    mpcl_precision mode;
    size_t B, C, HW, n;
    float offset;
    float *x, *gamma, *beta, *rm, *rv; /* (B, C, H, W), (C) x 4 */
    mpcl_tensor *tx, *tgamma, *tbeta, *trm, *trv, *tsm, *tsi;
    guarded y;
} bn_layer;

static void bn_setup(bn_layer *L, int mi, const bn_shape *s, uint64_t seed)
{
    memset(L, 0, sizeof *L);
    L->ctx = optest_modes[mi].ctx;
    L->mode = optest_modes[mi].mode;
    L->B = s->B;
    L->C = s->C;
    L->HW = s->H * s->W;
    L->n = s->B * s->C * L->HW;
    L->offset = s->offset;
    mpcl_dtype st = mpcl_storage_dtype(L->ctx);
    L->x = host_uniform(L->n, seed, s->offset - 2.0f, s->offset + 2.0f);
    L->gamma = host_uniform(L->C, seed + 1, 0.5f, 1.5f);
    L->beta = host_uniform(L->C, seed + 2, -0.5f, 0.5f);
    L->rm = host_uniform(L->C, seed + 3, -1.0f, 1.0f);
    L->rv = host_uniform(L->C, seed + 4, 0.5f, 1.5f);
    L->tx = upload_held(L->ctx, st, MPCL_MEM_ACTIVATIONS, L->x, s->B, s->C, s->H, s->W);
    L->tgamma = upload_held(L->ctx, st, MPCL_MEM_WEIGHTS, L->gamma, L->C, 0, 0, 0);
    L->tbeta = upload_held(L->ctx, st, MPCL_MEM_WEIGHTS, L->beta, L->C, 0, 0, 0);
    L->trm = upload_held(L->ctx, MPCL_F32, MPCL_MEM_WEIGHTS, L->rm, L->C, 0, 0, 0);
    L->trv = upload_held(L->ctx, MPCL_F32, MPCL_MEM_WEIGHTS, L->rv, L->C, 0, 0, 0);
    L->tsm = optest_tensor(L->ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, L->C, 0, 0, 0);
    L->tsi = optest_tensor(L->ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, L->C, 0, 0, 0);
    fill_const(L->tsm, 42.0f);
    fill_const(L->tsi, 42.0f);
    L->y = guarded_tensor(L->ctx, st, s->B, s->C, s->H, s->W);
}

static void bn_teardown(bn_layer *L)
{
    free(L->x);
    free(L->gamma);
    free(L->beta);
    free(L->rm);
    free(L->rv);
    mpcl_tensor_destroy(L->tx);
    mpcl_tensor_destroy(L->tgamma);
    mpcl_tensor_destroy(L->tbeta);
    mpcl_tensor_destroy(L->trm);
    mpcl_tensor_destroy(L->trv);
    mpcl_tensor_destroy(L->tsm);
    mpcl_tensor_destroy(L->tsi);
    guarded_destroy(&L->y);
}

static void bn_forward_ok(bn_layer *L, mpcl_tensor *y, int training)
{
    mpcl_status s = mpcl_batchnorm2d_forward(L->ctx, y, L->tx, L->tgamma, L->tbeta, L->trm, L->trv,
                                             L->tsm, L->tsi, MOMENTUM, EPS, training);
    ck_assert_msg(s == MPCL_OK, "mpcl_batchnorm2d_forward: %s", mpcl_last_error(L->ctx));
}

/* y against the reference, with statistics mean / var (biased), and
 * with relu max(that, 0). */
static void bn_check_y_act(const bn_layer *L, const float *y, const double *mean,
                           const double *var, const char *what, int relu)
{
    double *ref = dalloc(L->n);
    double S = 0;
    for (size_t c = 0; c < L->C; c++) {
        double inv = 1.0 / sqrt(var[c] + EPS);
        for (size_t b = 0; b < L->B; b++)
            for (size_t i = 0; i < L->HW; i++) {
                size_t j = (b * L->C + c) * L->HW + i;
                ref[j] = (L->x[j] - mean[c]) * inv * L->gamma[c] + L->beta[c];
                if (relu && !(ref[j] > 0.0))
                    ref[j] = 0.0;
                double t = fabs(L->x[j]) * inv * fabs(L->gamma[c]) + fabs(L->beta[c]);
                S = t > S ? t : S;
            }
    }
    optest_assert_close(what, y, ref, L->n, 1e-6 * S, rtol_of(L->mode));
    free(ref);
}

static void bn_check_y(const bn_layer *L, const float *y, const double *mean, const double *var,
                       const char *what)
{
    bn_check_y_act(L, y, mean, var, what, 0);
}

static void check_stats(const char *what, const mpcl_tensor *t, const double *ref, size_t n,
                        double offset)
{
    float *got = optest_download(t);
    optest_assert_close(what, got, ref, n, 1e-6 * (1.0 + fabs(offset)), 1e-5);
    free(got);
}

/* Training forward on one shape: y, save_mean, save_invstd, the running
 * statistics; then a second step on new data and the running statistics
 * after both (PyTorch's update with the unbiased variance). */
static void bn_train_case(int mi, const bn_shape *s)
{
    bn_layer L;
    bn_setup(&L, mi, s, 11 + s->C * 7 + s->H);
    char what[160];
    const char *mn = optest_modes[mi].name;
    double *mean = dalloc(L.C), *var = dalloc(L.C), *inv = dalloc(L.C);
    double *rm = dalloc(L.C), *rv = dalloc(L.C);
    double M = (double)(L.B * L.HW);
    for (size_t c = 0; c < L.C; c++) {
        rm[c] = L.rm[c];
        rv[c] = L.rv[c];
    }
    for (int step = 0; step < 2; step++) {
        if (step == 1) { /* new data for the second step */
            optest_fill_uniform(L.x, L.n, 977, s->offset - 1.0f, s->offset + 3.0f);
            ck_assert_int_eq(mpcl_tensor_upload(L.tx, L.x, L.n), MPCL_OK);
            ck_assert_int_eq(mpcl_tensor_download(L.tx, L.x, L.n), MPCL_OK);
        }
        bn_forward_ok(&L, L.y.view, 1);
        ref_bn_forward(L.x, L.B, L.C, L.HW, L.gamma, L.beta, EPS, mean, var, NULL);
        for (size_t c = 0; c < L.C; c++) {
            inv[c] = 1.0 / sqrt(var[c] + EPS);
            rm[c] = (1 - (double)MOMENTUM) * rm[c] + (double)MOMENTUM * mean[c];
            rv[c] = (1 - (double)MOMENTUM) * rv[c] + (double)MOMENTUM * var[c] * M / (M - 1);
        }
        snprintf(what, sizeof what, "bn (%zu,%zu,%zu,%zu)+%g step %d [%s]", s->B, s->C, s->H, s->W,
                 (double)s->offset, step + 1, mn);
        float *y = guarded_download(&L.y, what);
        bn_check_y(&L, y, mean, var, what);
        free(y);
        check_stats("save_mean", L.tsm, mean, L.C, s->offset);
        check_stats("save_invstd", L.tsi, inv, L.C, 0);
        check_stats("running_mean", L.trm, rm, L.C, s->offset);
        check_stats("running_var", L.trv, rv, L.C, s->offset);
    }
    free(mean);
    free(var);
    free(inv);
    free(rm);
    free(rv);
    bn_teardown(&L);
}

START_TEST(test_bn_train)
{
    static const bn_shape shapes[] = {
        {3, 5, 7, 13, 3.0f}, /* odd everything */
        {1, 3, 5, 4, 0.0f},  /* batch 1 */
        {8, 4, 1, 1, 1.0f},  /* 1 x 1 planes (after global pooling) */
        {3, 5, 7, 13, 50.0f}, /* |mean| >> std: two-pass statistics */
        {2, 3, 28, 28, -2.0f}, /* M = 1568 > the work-group: strided loops */
        {37, 3, 13, 17, 1.0f}, /* 13 x 17 planes; the batch in blocks of 2, the last short */
        {20, 5, 7, 7, 20.0f},  /* 7 x 7 planes, |mean| >> std across blocks of one row */
        {37, 4, 32, 32, -1.0f}, /* 4 blocks of 10 rows (not in small runs) */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!optest_small() || shapes[i].B * shapes[i].C * shapes[i].H * shapes[i].W < 50000)
            bn_train_case(_i, &shapes[i]);
}
END_TEST

/* Eval uses the running statistics and leaves save_* (42) and the running
 * statistics untouched; save_* may be NULL. In place (y = x) too. */
START_TEST(test_bn_eval)
{
    bn_shape s = {3, 5, 7, 13, 1.0f};
    bn_layer L;
    bn_setup(&L, _i, &s, 5);
    double *mean = dalloc(L.C), *var = dalloc(L.C);
    for (size_t c = 0; c < L.C; c++) {
        mean[c] = L.rm[c];
        var[c] = L.rv[c];
    }
    bn_forward_ok(&L, L.y.view, 0);
    float *y = guarded_download(&L.y, "bn eval");
    bn_check_y(&L, y, mean, var, "bn eval");
    free(y);
    assert_unchanged(L.tsm, 42.0f, "bn eval save_mean");
    assert_unchanged(L.tsi, 42.0f, "bn eval save_invstd");
    float *rm = optest_download(L.trm);
    ck_assert_mem_eq(rm, L.rm, L.C * sizeof *rm);
    free(rm);

    mpcl_status st = mpcl_batchnorm2d_forward(L.ctx, L.tx, L.tx, L.tgamma, L.tbeta, L.trm, L.trv,
                                              NULL, NULL, MOMENTUM, EPS, 0);
    ck_assert_msg(st == MPCL_OK, "bn eval in place, NULL save_*: %s", mpcl_last_error(L.ctx));
    y = optest_download(L.tx);
    bn_check_y(&L, y, mean, var, "bn eval in place");
    free(y);

    /* one value per channel is fine in eval */
    mpcl_dtype sd = mpcl_storage_dtype(L.ctx);
    float one[3] = {0.5f, -1.0f, 2.0f};
    mpcl_tensor *x1 = upload_held(L.ctx, sd, MPCL_MEM_ACTIVATIONS, one, 1, 3, 1, 1);
    mpcl_tensor *y1 = optest_tensor(L.ctx, sd, MPCL_MEM_ACTIVATIONS, NULL, 1, 3, 1, 1);
    mpcl_tensor *g3 = optest_tensor(L.ctx, sd, MPCL_MEM_WEIGHTS, NULL, 3, 0, 0, 0);
    mpcl_tensor *r3 = optest_tensor(L.ctx, MPCL_F32, MPCL_MEM_WEIGHTS, NULL, 3, 0, 0, 0);
    fill_const(g3, 1.0f);
    fill_const(r3, 0.0f);
    st = mpcl_batchnorm2d_forward(L.ctx, y1, x1, g3, g3, r3, r3, NULL, NULL, MOMENTUM, 0.0f, 0);
    ck_assert_msg(st == MPCL_OK, "bn eval (1, 3, 1, 1): %s", mpcl_last_error(L.ctx));
    mpcl_tensor_destroy(x1);
    mpcl_tensor_destroy(y1);
    mpcl_tensor_destroy(g3);
    mpcl_tensor_destroy(r3);
    free(mean);
    free(var);
    bn_teardown(&L);
}
END_TEST

/* The device's backward results against the double reference: dx (gdx,
 * downloaded by the caller) against rdx, and dgamma / dbeta, accumulated
 * onto 0.25 / -0.5, against rdg / rdb within their L1 sums' rounding.
 * mn names the mode and tag prefixes the gradient names in messages. */
static void bn_check_grads(const bn_layer *L, const bn_shape *s, const char *what,
                           const float *gdx, const double *rdx, const double *var,
                           const mpcl_tensor *tdg, const mpcl_tensor *tdb, const double *rdg,
                           const double *rdb, const double *l1g, const double *l1b,
                           const char *mn, const char *tag)
{
    double inv_max = 0;
    for (size_t c = 0; c < L->C; c++)
        inv_max = fmax(inv_max, 1.0 / sqrt(var[c] + EPS));
    double rtol = rtol_of(L->mode);
    optest_assert_close(what, gdx, rdx, L->n,
                        1e-5 * max_abs(rdx, L->n) * (1.0 + fabs(s->offset) * inv_max), rtol);
    float *gdg = optest_download(tdg), *gdb = optest_download(tdb);
    for (size_t c = 0; c < L->C; c++) {
        double want_g = 0.25 + rdg[c], want_b = -0.5 + rdb[c];
        ck_assert_msg(fabs(gdg[c] - want_g) <= 1e-6 * l1g[c] + rtol * fabs(want_g) + 1e-6,
                      "[%s] %sdgamma[%zu] = %.9g, expected 0.25 + %.9g", mn, tag, c,
                      (double)gdg[c], rdg[c]);
        ck_assert_msg(fabs(gdb[c] - want_b) <= 1e-6 * l1b[c] + rtol * fabs(want_b) + 1e-6,
                      "[%s] %sdbeta[%zu] = %.9g, expected -0.5 + %.9g", mn, tag, c,
                      (double)gdb[c], rdb[c]);
    }
    free(gdg);
    free(gdb);
}

/* Backward after a training forward: dx, and dgamma / dbeta accumulated onto
 * 0.25 / -0.5. */
static void bn_backward_case(int mi, const bn_shape *s, int in_place)
{
    bn_layer L;
    bn_setup(&L, mi, s, 31 + s->C);
    const char *mn = optest_modes[mi].name;
    mpcl_dtype st = mpcl_storage_dtype(L.ctx);
    bn_forward_ok(&L, L.y.view, 1);
    float *dy = host_uniform(L.n, 77, -1.0f, 1.0f);
    mpcl_tensor *tdy = upload_held(L.ctx, st, MPCL_MEM_GRADIENTS, dy, s->B, s->C, s->H, s->W);
    guarded dx = guarded_tensor(L.ctx, st, s->B, s->C, s->H, s->W);
    mpcl_tensor *tdg = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, L.C, 0, 0, 0);
    mpcl_tensor *tdb = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, L.C, 0, 0, 0);
    fill_const(tdg, 0.25f);
    fill_const(tdb, -0.5f);
    mpcl_tensor *out = in_place ? tdy : dx.view;
    mpcl_status rc = mpcl_batchnorm2d_backward(L.ctx, out, tdg, tdb, tdy, L.tx, L.tgamma, L.tsm, L.tsi);
    ck_assert_msg(rc == MPCL_OK, "mpcl_batchnorm2d_backward: %s", mpcl_last_error(L.ctx));

    double *mean = dalloc(L.C), *var = dalloc(L.C), *rdx = dalloc(L.n);
    double *rdg = dalloc(L.C), *rdb = dalloc(L.C), *l1g = dalloc(L.C), *l1b = dalloc(L.C);
    ref_bn_forward(L.x, L.B, L.C, L.HW, L.gamma, L.beta, EPS, mean, var, NULL);
    ref_bn_backward(L.x, dy, L.B, L.C, L.HW, L.gamma, mean, var, EPS, rdx, rdg, rdb, l1g, l1b);
    char what[160];
    snprintf(what, sizeof what, "bn backward (%zu,%zu,%zu,%zu)%s dx [%s]", s->B, s->C, s->H, s->W,
             in_place ? " in place" : "", mn);
    float *gdx = in_place ? optest_download(tdy) : guarded_download(&dx, what);
    bn_check_grads(&L, s, what, gdx, rdx, var, tdg, tdb, rdg, rdb, l1g, l1b, mn, "");
    free(gdx);
    double rtol = rtol_of(L.mode);
    float *gdg, *gdb;

    /* NULL dx: only the parameter gradients, accumulated a second time */
    if (!in_place) {
        rc = mpcl_batchnorm2d_backward(L.ctx, NULL, tdg, NULL, tdy, L.tx, L.tgamma, L.tsm, L.tsi);
        ck_assert_msg(rc == MPCL_OK, "bn backward, NULL dx: %s", mpcl_last_error(L.ctx));
        gdg = optest_download(tdg);
        gdb = optest_download(tdb);
        for (size_t c = 0; c < L.C; c++) {
            double want_g = 0.25 + 2 * rdg[c], want_b = -0.5 + rdb[c];
            /* the half rounding after the first call is kept: rtol of both sums */
            double tol_g = 2e-6 * l1g[c] + rtol * (fabs(0.25 + rdg[c]) + fabs(want_g)) + 1e-6;
            ck_assert_msg(fabs(gdg[c] - want_g) <= tol_g,
                          "[%s] dgamma[%zu] after two calls = %.9g, expected %.9g", mn, c,
                          (double)gdg[c], want_g);
            ck_assert_msg(fabs(gdb[c] - want_b) <= 1e-6 * l1b[c] + rtol * fabs(want_b) + 1e-6,
                          "[%s] dbeta[%zu] changed with NULL dbeta: %.9g", mn, c, (double)gdb[c]);
        }
        free(gdg);
        free(gdb);
    }
    free(mean);
    free(var);
    free(rdx);
    free(rdg);
    free(rdb);
    free(l1g);
    free(l1b);
    free(dy);
    mpcl_tensor_destroy(tdy);
    mpcl_tensor_destroy(tdg);
    mpcl_tensor_destroy(tdb);
    guarded_destroy(&dx);
    bn_teardown(&L);
}

START_TEST(test_bn_backward)
{
    static const bn_shape shapes[] = {
        {3, 5, 7, 13, 0.0f}, {1, 3, 5, 4, 2.0f}, {8, 4, 1, 1, 0.0f}, {2, 3, 28, 28, 10.0f},
        {37, 3, 13, 17, 1.0f}, {20, 5, 7, 7, 0.0f}, {37, 4, 32, 32, 0.0f}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!optest_small() || shapes[i].B * shapes[i].C * shapes[i].H * shapes[i].W < 50000)
            bn_backward_case(_i, &shapes[i], 0);
    bn_backward_case(_i, &shapes[0], 1);
}
END_TEST

/* Central differences of sum(w * y) in double against the device's dx,
 * dgamma and dbeta for dy = w. */
START_TEST(test_bn_finite_differences)
{
    bn_shape s = {3, 5, 7, 13, 0.5f};
    bn_layer L;
    bn_setup(&L, _i, &s, 3);
    mpcl_dtype st = mpcl_storage_dtype(L.ctx);
    const char *mn = optest_modes[_i].name;
    bn_forward_ok(&L, L.y.view, 1);
    float *w = host_uniform(L.n, 8, -1.0f, 1.0f);
    mpcl_tensor *tdy = upload_held(L.ctx, st, MPCL_MEM_GRADIENTS, w, s.B, s.C, s.H, s.W);
    mpcl_tensor *tdx = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, s.B, s.C, s.H, s.W);
    mpcl_tensor *tdg = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, L.C, 0, 0, 0);
    mpcl_tensor *tdb = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, L.C, 0, 0, 0);
    fill_const(tdg, 0.0f);
    fill_const(tdb, 0.0f);
    mpcl_status rc = mpcl_batchnorm2d_backward(L.ctx, tdx, tdg, tdb, tdy, L.tx, L.tgamma, L.tsm, L.tsi);
    ck_assert_msg(rc == MPCL_OK, "mpcl_batchnorm2d_backward: %s", mpcl_last_error(L.ctx));

    double *x = dalloc(L.n), *g = dalloc(L.C), *b = dalloc(L.C);
    for (size_t i = 0; i < L.n; i++)
        x[i] = L.x[i];
    for (size_t c = 0; c < L.C; c++) {
        g[c] = L.gamma[c];
        b[c] = L.beta[c];
    }
    double *fx = dalloc(L.n), *fg = dalloc(L.C), *fb = dalloc(L.C);
    for (size_t i = 0; i < L.n; i++) {
        double keep = x[i], h = 1e-4 * (fabs(keep) + 1);
        x[i] = keep + h;
        double up = ref_bn_objective(x, L.B, L.C, L.HW, g, b, EPS, w);
        x[i] = keep - h;
        double down = ref_bn_objective(x, L.B, L.C, L.HW, g, b, EPS, w);
        x[i] = keep;
        fx[i] = (up - down) / (2 * h);
    }
    for (size_t c = 0; c < L.C; c++) {
        double *p[2] = {g, b}, *f[2] = {fg, fb};
        for (int k = 0; k < 2; k++) {
            double keep = p[k][c], h = 1e-4 * (fabs(keep) + 1);
            p[k][c] = keep + h;
            double up = ref_bn_objective(x, L.B, L.C, L.HW, g, b, EPS, w);
            p[k][c] = keep - h;
            double down = ref_bn_objective(x, L.B, L.C, L.HW, g, b, EPS, w);
            p[k][c] = keep;
            f[k][c] = (up - down) / (2 * h);
        }
    }
    double rtol = rtol_of(L.mode);
    char what[96];
    float *gdx = optest_download(tdx), *gdg = optest_download(tdg), *gdb = optest_download(tdb);
    snprintf(what, sizeof what, "bn dx vs finite differences [%s]", mn);
    optest_assert_close(what, gdx, fx, L.n, 2e-5 * max_abs(fx, L.n), rtol);
    snprintf(what, sizeof what, "bn dgamma vs finite differences [%s]", mn);
    optest_assert_close(what, gdg, fg, L.C, 1e-5 * max_abs(fg, L.C), rtol);
    snprintf(what, sizeof what, "bn dbeta vs finite differences [%s]", mn);
    optest_assert_close(what, gdb, fb, L.C, 1e-5 * max_abs(fb, L.C), rtol);
    free(gdx);
    free(gdg);
    free(gdb);
    free(x);
    free(g);
    free(b);
    free(fx);
    free(fg);
    free(fb);
    free(w);
    mpcl_tensor_destroy(tdy);
    mpcl_tensor_destroy(tdx);
    mpcl_tensor_destroy(tdg);
    mpcl_tensor_destroy(tdb);
    bn_teardown(&L);
}
END_TEST

START_TEST(test_bn_bad_arguments)
{
    bn_shape s = {3, 5, 7, 13, 0.0f};
    bn_layer L;
    bn_setup(&L, _i, &s, 9);
    mpcl_context *ctx = L.ctx;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    const char *sn = mpcl_dtype_name(st);
    char a[64], b[64];
    fill_const(L.y.view, 3.0f);

    /* gamma of 4 for C = 5 */
    mpcl_tensor *g4 = optest_tensor(ctx, st, MPCL_MEM_WEIGHTS, NULL, 4, 0, 0, 0);
    mpcl_status rc = mpcl_batchnorm2d_forward(ctx, L.y.view, L.tx, g4, L.tbeta, L.trm, L.trv, L.tsm,
                                              L.tsi, MOMENTUM, EPS, 1);
    snprintf(a, sizeof a, "(4) %s", sn);
    snprintf(b, sizeof b, "(5) %s", sn);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "gamma (4) for C=5", a, b);
    /* y (3, 5, 7, 12) */
    mpcl_tensor *y12 = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, 3, 5, 7, 12);
    fill_const(y12, 3.0f);
    rc = mpcl_batchnorm2d_forward(ctx, y12, L.tx, L.tgamma, L.tbeta, L.trm, L.trv, L.tsm, L.tsi,
                                  MOMENTUM, EPS, 1);
    snprintf(a, sizeof a, "(3, 5, 7, 12) %s", sn);
    snprintf(b, sizeof b, "(3, 5, 7, 13) %s", sn);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "y (3, 5, 7, 12)", a, b);
    assert_unchanged(y12, 3.0f, "y (3, 5, 7, 12)");
    /* running_mean as i32 */
    mpcl_tensor *ri = optest_tensor(ctx, MPCL_I32, MPCL_MEM_WEIGHTS, NULL, 5, 0, 0, 0);
    rc = mpcl_batchnorm2d_forward(ctx, L.y.view, L.tx, L.tgamma, L.tbeta, ri, L.trv, L.tsm, L.tsi,
                                  MOMENTUM, EPS, 1);
    expect_error(ctx, rc, MPCL_ERR_ARGUMENT, "i32 running_mean", "(5) i32", "(5) f32");
    /* save_invstd of 6; NULL save_mean when training */
    mpcl_tensor *s6 = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, 6, 0, 0, 0);
    rc = mpcl_batchnorm2d_forward(ctx, L.y.view, L.tx, L.tgamma, L.tbeta, L.trm, L.trv, L.tsm, s6,
                                  MOMENTUM, EPS, 1);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "save_invstd (6)", "(6) f32", "(5) f32");
    rc = mpcl_batchnorm2d_forward(ctx, L.y.view, L.tx, L.tgamma, L.tbeta, L.trm, L.trv, NULL, L.tsi,
                                  MOMENTUM, EPS, 1);
    ck_assert_int_eq(rc, MPCL_ERR_ARGUMENT);
    rc = mpcl_batchnorm2d_forward(ctx, L.y.view, L.tx, L.tgamma, L.tbeta, L.trm, L.trv, L.tsm, L.tsi,
                                  MOMENTUM, -1.0f, 1);
    ck_assert_int_eq(rc, MPCL_ERR_ARGUMENT);
    /* nothing was written by any of them */
    assert_unchanged(L.y.view, 3.0f, "bn forward y after bad arguments");
    assert_unchanged(L.tsm, 42.0f, "save_mean after bad arguments");
    assert_unchanged(L.tsi, 42.0f, "save_invstd after bad arguments");
    float *rm = optest_download(L.trm), *rv = optest_download(L.trv);
    ck_assert_mem_eq(rm, L.rm, L.C * sizeof *rm);
    ck_assert_mem_eq(rv, L.rv, L.C * sizeof *rv);
    free(rm);
    free(rv);

    /* training needs more than one value per channel */
    float one[3] = {1, 2, 3};
    mpcl_tensor *x1 = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, one, 1, 3, 1, 1);
    mpcl_tensor *y1 = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, 1, 3, 1, 1);
    mpcl_tensor *g3 = optest_tensor(ctx, st, MPCL_MEM_WEIGHTS, one, 3, 0, 0, 0);
    mpcl_tensor *r3 = optest_tensor(ctx, MPCL_F32, MPCL_MEM_WEIGHTS, one, 3, 0, 0, 0);
    fill_const(y1, 3.0f);
    rc = mpcl_batchnorm2d_forward(ctx, y1, x1, g3, g3, r3, r3, r3, r3, MOMENTUM, EPS, 1);
    snprintf(a, sizeof a, "(1, 3, 1, 1) %s", sn);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "training on (1, 3, 1, 1)", a, "B * H * W");
    assert_unchanged(y1, 3.0f, "training on (1, 3, 1, 1)");
    float *r3h = optest_download(r3);
    ck_assert_mem_eq(r3h, one, sizeof one); /* the running statistics too */
    free(r3h);

    /* backward: dx (3, 5, 7, 12), dgamma of 4 */
    mpcl_tensor *tdy = optest_tensor(ctx, st, MPCL_MEM_GRADIENTS, L.x, 3, 5, 7, 13);
    mpcl_tensor *tdg = optest_tensor(ctx, st, MPCL_MEM_GRADIENTS, NULL, 5, 0, 0, 0);
    fill_const(tdg, 2.0f);
    rc = mpcl_batchnorm2d_backward(ctx, y12, tdg, NULL, tdy, L.tx, L.tgamma, L.tsm, L.tsi);
    snprintf(a, sizeof a, "(3, 5, 7, 12) %s", sn);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "backward dx (3, 5, 7, 12)", a, b);
    fill_const(L.y.view, 3.0f);
    rc = mpcl_batchnorm2d_backward(ctx, L.y.view, g4, NULL, tdy, L.tx, L.tgamma, L.tsm, L.tsi);
    snprintf(a, sizeof a, "(4) %s", sn);
    snprintf(b, sizeof b, "(5) %s", sn);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "backward dgamma (4)", a, b);
    rc = mpcl_batchnorm2d_backward(ctx, L.y.view, tdg, NULL, tdy, L.tx, L.tgamma, s6, L.tsi);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "backward save_mean (6)", "(6) f32", "(5) f32");
    assert_unchanged(y12, 3.0f, "backward dx after bad arguments");
    assert_unchanged(L.y.view, 3.0f, "backward dx after bad arguments");
    assert_unchanged(tdg, 2.0f, "backward dgamma after bad arguments");

    mpcl_tensor_destroy(g4);
    mpcl_tensor_destroy(y12);
    mpcl_tensor_destroy(ri);
    mpcl_tensor_destroy(s6);
    mpcl_tensor_destroy(x1);
    mpcl_tensor_destroy(y1);
    mpcl_tensor_destroy(g3);
    mpcl_tensor_destroy(r3);
    mpcl_tensor_destroy(tdy);
    mpcl_tensor_destroy(tdg);
    bn_teardown(&L);
}
END_TEST

/* ------------------------------------------------------------ layer norm */

typedef struct {
    size_t N, D;
    float offset;
} ln_shape;

typedef struct {
    mpcl_context *ctx;
    mpcl_precision mode;
    size_t N, D, n;
    float *x, *gamma, *beta; /* (N, D), (D), (D) */
    mpcl_tensor *tx, *tgamma, *tbeta, *tsm, *tsi;
    guarded y;
} ln_layer;

static void ln_setup(ln_layer *L, int mi, const ln_shape *s, uint64_t seed)
{
    memset(L, 0, sizeof *L);
    L->ctx = optest_modes[mi].ctx;
    L->mode = optest_modes[mi].mode;
    L->N = s->N;
    L->D = s->D;
    L->n = s->N * s->D;
    mpcl_dtype st = mpcl_storage_dtype(L->ctx);
    L->x = host_uniform(L->n, seed, s->offset - 2.0f, s->offset + 2.0f);
    L->gamma = host_uniform(L->D, seed + 1, 0.5f, 1.5f);
    L->beta = host_uniform(L->D, seed + 2, -0.5f, 0.5f);
    L->tx = upload_held(L->ctx, st, MPCL_MEM_ACTIVATIONS, L->x, s->N, s->D, 0, 0);
    L->tgamma = upload_held(L->ctx, st, MPCL_MEM_WEIGHTS, L->gamma, s->D, 0, 0, 0);
    L->tbeta = upload_held(L->ctx, st, MPCL_MEM_WEIGHTS, L->beta, s->D, 0, 0, 0);
    L->tsm = optest_tensor(L->ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, s->N, 0, 0, 0);
    L->tsi = optest_tensor(L->ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, s->N, 0, 0, 0);
    /* initialised although the forward overwrites them: oclgrind 21.10 then
     * does not take ln_forward's stores to them for uninitialised reads in
     * the backward (seen after a smaller layer's buffers were released; the
     * values it computes are right) */
    fill_const(L->tsm, 42.0f);
    fill_const(L->tsi, 42.0f);
    L->y = guarded_tensor(L->ctx, st, s->N, s->D, 0, 0);
}

static void ln_teardown(ln_layer *L)
{
    free(L->x);
    free(L->gamma);
    free(L->beta);
    mpcl_tensor_destroy(L->tx);
    mpcl_tensor_destroy(L->tgamma);
    mpcl_tensor_destroy(L->tbeta);
    mpcl_tensor_destroy(L->tsm);
    mpcl_tensor_destroy(L->tsi);
    guarded_destroy(&L->y);
}

static void ln_forward_ok(ln_layer *L, mpcl_tensor *y, const mpcl_tensor *x)
{
    mpcl_status s = mpcl_layernorm_forward(L->ctx, y, x, L->tgamma, L->tbeta, L->tsm, L->tsi, EPS);
    ck_assert_msg(s == MPCL_OK, "mpcl_layernorm_forward: %s", mpcl_last_error(L->ctx));
}

static void ln_check_forward(const ln_layer *L, const float *y, const ln_shape *s, const char *what)
{
    double *mean = dalloc(L->N), *var = dalloc(L->N), *inv = dalloc(L->N), *ref = dalloc(L->n);
    ref_ln_forward(L->x, L->N, L->D, L->gamma, L->beta, EPS, mean, var, ref);
    double S = 0;
    for (size_t n = 0; n < L->N; n++) {
        inv[n] = 1.0 / sqrt(var[n] + EPS);
        for (size_t d = 0; d < L->D; d++) {
            double t = fabs(L->x[n * L->D + d]) * inv[n] * fabs(L->gamma[d]) + fabs(L->beta[d]);
            S = t > S ? t : S;
        }
    }
    optest_assert_close(what, y, ref, L->n, 1e-6 * S, rtol_of(L->mode));
    check_stats("ln save_mean", L->tsm, mean, L->N, s->offset);
    check_stats("ln save_invstd", L->tsi, inv, L->N, 0);
    free(mean);
    free(var);
    free(inv);
    free(ref);
}

START_TEST(test_ln_forward)
{
    size_t big = optest_small() ? 300 : 1000;
    ln_shape shapes[] = {{7, 13, 1.0f}, {1, 13, 0.0f}, {4, big, -3.0f}, {5, 1, 2.0f}, {7, 13, 50.0f}};
    char what[128];
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        ln_layer L;
        ln_setup(&L, _i, &shapes[i], 40 + i);
        ln_forward_ok(&L, L.y.view, L.tx);
        snprintf(what, sizeof what, "ln (%zu, %zu)+%g [%s]", shapes[i].N, shapes[i].D,
                 (double)shapes[i].offset, optest_modes[_i].name);
        float *y = guarded_download(&L.y, what);
        ln_check_forward(&L, y, &shapes[i], what);
        free(y);
        if (i == 0) { /* in place */
            ln_forward_ok(&L, L.tx, L.tx);
            y = optest_download(L.tx);
            ln_check_forward(&L, y, &shapes[i], "ln in place");
            free(y);
        }
        ln_teardown(&L);
    }
}
END_TEST

static void ln_backward_case(int mi, const ln_shape *s, int in_place)
{
    ln_layer L;
    ln_setup(&L, mi, s, 60 + s->D);
    const char *mn = optest_modes[mi].name;
    mpcl_dtype st = mpcl_storage_dtype(L.ctx);
    ln_forward_ok(&L, L.y.view, L.tx);
    float *dy = host_uniform(L.n, 61, -1.0f, 1.0f);
    mpcl_tensor *tdy = upload_held(L.ctx, st, MPCL_MEM_GRADIENTS, dy, s->N, s->D, 0, 0);
    guarded dx = guarded_tensor(L.ctx, st, s->N, s->D, 0, 0);
    mpcl_tensor *tdg = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, L.D, 0, 0, 0);
    mpcl_tensor *tdb = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, L.D, 0, 0, 0);
    fill_const(tdg, 0.25f);
    fill_const(tdb, -0.5f);
    mpcl_tensor *out = in_place ? tdy : dx.view;
    mpcl_status rc = mpcl_layernorm_backward(L.ctx, out, tdg, tdb, tdy, L.tx, L.tgamma, L.tsm, L.tsi);
    ck_assert_msg(rc == MPCL_OK, "mpcl_layernorm_backward: %s", mpcl_last_error(L.ctx));

    double *mean = dalloc(L.N), *var = dalloc(L.N), *yref = dalloc(L.n), *rdx = dalloc(L.n);
    double *rdg = dalloc(L.D), *rdb = dalloc(L.D), *l1g = dalloc(L.D), *l1b = dalloc(L.D);
    ref_ln_forward(L.x, L.N, L.D, L.gamma, L.beta, EPS, mean, var, yref);
    ref_ln_backward(L.x, dy, L.N, L.D, L.gamma, mean, var, EPS, rdx, rdg, rdb, l1g, l1b);
    double inv_max = 0;
    for (size_t n = 0; n < L.N; n++)
        inv_max = fmax(inv_max, 1.0 / sqrt(var[n] + EPS));
    char what[128];
    snprintf(what, sizeof what, "ln backward (%zu, %zu)%s dx [%s]", s->N, s->D,
             in_place ? " in place" : "", mn);
    float *gdx = in_place ? optest_download(tdy) : guarded_download(&dx, what);
    double rtol = rtol_of(L.mode);
    optest_assert_close(what, gdx, rdx, L.n,
                        1e-5 * max_abs(rdx, L.n) * (1.0 + fabs(s->offset) * inv_max), rtol);
    free(gdx);
    float *gdg = optest_download(tdg), *gdb = optest_download(tdb);
    for (size_t d = 0; d < L.D; d++) {
        double want_g = 0.25 + rdg[d], want_b = -0.5 + rdb[d];
        ck_assert_msg(fabs(gdg[d] - want_g) <= 1e-6 * l1g[d] + rtol * fabs(want_g) + 1e-6,
                      "[%s] ln dgamma[%zu] = %.9g, expected 0.25 + %.9g", mn, d, (double)gdg[d],
                      rdg[d]);
        ck_assert_msg(fabs(gdb[d] - want_b) <= 1e-6 * l1b[d] + rtol * fabs(want_b) + 1e-6,
                      "[%s] ln dbeta[%zu] = %.9g, expected -0.5 + %.9g", mn, d, (double)gdb[d], rdb[d]);
    }
    free(gdg);
    free(gdb);

    /* NULL dx and NULL dbeta: dgamma accumulates a second time, dbeta stays */
    if (!in_place) {
        rc = mpcl_layernorm_backward(L.ctx, NULL, tdg, NULL, tdy, L.tx, L.tgamma, L.tsm, L.tsi);
        ck_assert_msg(rc == MPCL_OK, "ln backward, NULL dx: %s", mpcl_last_error(L.ctx));
        gdg = optest_download(tdg);
        gdb = optest_download(tdb);
        for (size_t d = 0; d < L.D; d++) {
            double want_g = 0.25 + 2 * rdg[d], want_b = -0.5 + rdb[d];
            /* the half rounding after the first call is kept: rtol of both sums */
            double tol_g = 2e-6 * l1g[d] + rtol * (fabs(0.25 + rdg[d]) + fabs(want_g)) + 1e-6;
            ck_assert_msg(fabs(gdg[d] - want_g) <= tol_g,
                          "[%s] ln dgamma[%zu] after two calls = %.9g, expected %.9g", mn, d,
                          (double)gdg[d], want_g);
            ck_assert_msg(fabs(gdb[d] - want_b) <= 1e-6 * l1b[d] + rtol * fabs(want_b) + 1e-6,
                          "[%s] ln dbeta[%zu] changed with NULL dbeta: %.9g", mn, d, (double)gdb[d]);
        }
        free(gdg);
        free(gdb);
    }
    free(mean);
    free(var);
    free(yref);
    free(rdx);
    free(rdg);
    free(rdb);
    free(l1g);
    free(l1b);
    free(dy);
    mpcl_tensor_destroy(tdy);
    mpcl_tensor_destroy(tdg);
    mpcl_tensor_destroy(tdb);
    guarded_destroy(&dx);
    ln_teardown(&L);
}

START_TEST(test_ln_backward)
{
    size_t big = optest_small() ? 300 : 1000;
    ln_shape shapes[] = {{7, 13, 0.0f}, {1, 13, 1.0f}, {4, big, 0.0f}, {3, 2, 0.0f}, {7, 13, 20.0f}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        ln_backward_case(_i, &shapes[i], 0);
    ln_backward_case(_i, &shapes[0], 1);
}
END_TEST

START_TEST(test_ln_finite_differences)
{
    ln_shape s = {7, 13, 0.5f};
    ln_layer L;
    ln_setup(&L, _i, &s, 70);
    mpcl_dtype st = mpcl_storage_dtype(L.ctx);
    const char *mn = optest_modes[_i].name;
    ln_forward_ok(&L, L.y.view, L.tx);
    float *w = host_uniform(L.n, 71, -1.0f, 1.0f);
    mpcl_tensor *tdy = upload_held(L.ctx, st, MPCL_MEM_GRADIENTS, w, s.N, s.D, 0, 0);
    mpcl_tensor *tdx = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, s.N, s.D, 0, 0);
    mpcl_tensor *tdg = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, L.D, 0, 0, 0);
    mpcl_tensor *tdb = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, L.D, 0, 0, 0);
    fill_const(tdg, 0.0f);
    fill_const(tdb, 0.0f);
    mpcl_status rc = mpcl_layernorm_backward(L.ctx, tdx, tdg, tdb, tdy, L.tx, L.tgamma, L.tsm, L.tsi);
    ck_assert_msg(rc == MPCL_OK, "mpcl_layernorm_backward: %s", mpcl_last_error(L.ctx));

    double *x = dalloc(L.n), *g = dalloc(L.D), *b = dalloc(L.D);
    for (size_t i = 0; i < L.n; i++)
        x[i] = L.x[i];
    for (size_t d = 0; d < L.D; d++) {
        g[d] = L.gamma[d];
        b[d] = L.beta[d];
    }
    double *fx = dalloc(L.n), *fg = dalloc(L.D), *fb = dalloc(L.D);
    for (size_t i = 0; i < L.n; i++) {
        double keep = x[i], h = 1e-4 * (fabs(keep) + 1);
        x[i] = keep + h;
        double up = ref_ln_objective(x, L.N, L.D, g, b, EPS, w);
        x[i] = keep - h;
        double down = ref_ln_objective(x, L.N, L.D, g, b, EPS, w);
        x[i] = keep;
        fx[i] = (up - down) / (2 * h);
    }
    for (size_t d = 0; d < L.D; d++) {
        double *p[2] = {g, b}, *f[2] = {fg, fb};
        for (int k = 0; k < 2; k++) {
            double keep = p[k][d], h = 1e-4 * (fabs(keep) + 1);
            p[k][d] = keep + h;
            double up = ref_ln_objective(x, L.N, L.D, g, b, EPS, w);
            p[k][d] = keep - h;
            double down = ref_ln_objective(x, L.N, L.D, g, b, EPS, w);
            p[k][d] = keep;
            f[k][d] = (up - down) / (2 * h);
        }
    }
    double rtol = rtol_of(L.mode);
    char what[96];
    float *gdx = optest_download(tdx), *gdg = optest_download(tdg), *gdb = optest_download(tdb);
    snprintf(what, sizeof what, "ln dx vs finite differences [%s]", mn);
    optest_assert_close(what, gdx, fx, L.n, 2e-5 * max_abs(fx, L.n), rtol);
    snprintf(what, sizeof what, "ln dgamma vs finite differences [%s]", mn);
    optest_assert_close(what, gdg, fg, L.D, 1e-5 * max_abs(fg, L.D), rtol);
    snprintf(what, sizeof what, "ln dbeta vs finite differences [%s]", mn);
    optest_assert_close(what, gdb, fb, L.D, 1e-5 * max_abs(fb, L.D), rtol);
    free(gdx);
    free(gdg);
    free(gdb);
    free(x);
    free(g);
    free(b);
    free(fx);
    free(fg);
    free(fb);
    free(w);
    mpcl_tensor_destroy(tdy);
    mpcl_tensor_destroy(tdx);
    mpcl_tensor_destroy(tdg);
    mpcl_tensor_destroy(tdb);
    ln_teardown(&L);
}
END_TEST

START_TEST(test_ln_bad_arguments)
{
    ln_shape s = {7, 13, 0.0f};
    ln_layer L;
    ln_setup(&L, _i, &s, 80);
    mpcl_context *ctx = L.ctx;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    const char *sn = mpcl_dtype_name(st);
    char a[64], b[64];
    fill_const(L.y.view, 3.0f);
    fill_const(L.tsm, 42.0f);
    fill_const(L.tsi, 42.0f);

    mpcl_tensor *g12 = optest_tensor(ctx, st, MPCL_MEM_WEIGHTS, NULL, 12, 0, 0, 0);
    mpcl_status rc = mpcl_layernorm_forward(ctx, L.y.view, L.tx, g12, L.tbeta, L.tsm, L.tsi, EPS);
    snprintf(a, sizeof a, "(12) %s", sn);
    snprintf(b, sizeof b, "(13) %s", sn);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "ln gamma (12) for D=13", a, b);
    mpcl_tensor *s6 = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, 6, 0, 0, 0);
    rc = mpcl_layernorm_forward(ctx, L.y.view, L.tx, L.tgamma, L.tbeta, s6, L.tsi, EPS);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "ln save_mean (6) for N=7", "(6) f32", "(7) f32");
    mpcl_tensor *y3 = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, 7, 13, 1, 0);
    rc = mpcl_layernorm_forward(ctx, y3, L.tx, L.tgamma, L.tbeta, L.tsm, L.tsi, EPS);
    snprintf(a, sizeof a, "(7, 13, 1) %s", sn);
    snprintf(b, sizeof b, "(7, 13) %s", sn);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "ln y (7, 13, 1)", a, b);
    mpcl_dtype other = st == MPCL_F16 ? MPCL_F32 : MPCL_F16;
    mpcl_tensor *xo = optest_tensor(ctx, other, MPCL_MEM_ACTIVATIONS, NULL, 7, 13, 0, 0);
    rc = mpcl_layernorm_forward(ctx, L.y.view, xo, L.tgamma, L.tbeta, L.tsm, L.tsi, EPS);
    snprintf(a, sizeof a, "(7, 13) %s", mpcl_dtype_name(other));
    snprintf(b, sizeof b, "(*, *) %s", sn);
    expect_error(ctx, rc, MPCL_ERR_ARGUMENT, "ln x of the wrong dtype", a, b);
    assert_unchanged(L.y.view, 3.0f, "ln y after bad arguments");
    assert_unchanged(L.tsm, 42.0f, "ln save_mean after bad arguments");
    assert_unchanged(L.tsi, 42.0f, "ln save_invstd after bad arguments");

    mpcl_tensor *tdg = optest_tensor(ctx, st, MPCL_MEM_GRADIENTS, NULL, 13, 0, 0, 0);
    fill_const(tdg, 2.0f);
    rc = mpcl_layernorm_backward(ctx, L.y.view, g12, NULL, L.tx, L.tx, L.tgamma, L.tsm, L.tsi);
    snprintf(a, sizeof a, "(12) %s", sn);
    snprintf(b, sizeof b, "(13) %s", sn);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "ln backward dgamma (12)", a, b);
    rc = mpcl_layernorm_backward(ctx, L.y.view, tdg, NULL, L.tx, L.tx, L.tgamma, L.tsm, s6);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "ln backward save_invstd (6)", "(6) f32", "(7) f32");
    rc = mpcl_layernorm_backward(ctx, y3, tdg, NULL, L.tx, L.tx, L.tgamma, L.tsm, L.tsi);
    snprintf(a, sizeof a, "(7, 13, 1) %s", sn);
    snprintf(b, sizeof b, "(7, 13) %s", sn);
    expect_error(ctx, rc, MPCL_ERR_SHAPE, "ln backward dx (7, 13, 1)", a, b);
    assert_unchanged(L.y.view, 3.0f, "ln backward dx after bad arguments");
    assert_unchanged(tdg, 2.0f, "ln backward dgamma after bad arguments");

    mpcl_tensor_destroy(g12);
    mpcl_tensor_destroy(s6);
    mpcl_tensor_destroy(y3);
    mpcl_tensor_destroy(xo);
    mpcl_tensor_destroy(tdg);
    ln_teardown(&L);
}
END_TEST

/* Batch norm fused with ReLU: the training forward against relu of the
 * double reference, the backward against the double reference of batch
 * norm fed dy where the device's y > 0 (0 elsewhere: the mask comes from
 * the output the ReLU made), dgamma / dbeta accumulated onto 0.25 / -0.5;
 * eval; and the arguments only the fused pair has. */
static void bn_relu_case(int mi, const bn_shape *s)
{
    bn_layer L;
    bn_setup(&L, mi, s, 61 + s->C);
    const char *mn = optest_modes[mi].name;
    mpcl_dtype st = mpcl_storage_dtype(L.ctx);
    char what[160];
    mpcl_status rc = mpcl_batchnorm2d_relu_forward(L.ctx, L.y.view, L.tx, L.tgamma, L.tbeta, L.trm,
                                                   L.trv, L.tsm, L.tsi, MOMENTUM, EPS, 1);
    ck_assert_msg(rc == MPCL_OK, "mpcl_batchnorm2d_relu_forward: %s", mpcl_last_error(L.ctx));
    double *mean = dalloc(L.C), *var = dalloc(L.C), *rdx = dalloc(L.n);
    double *rdg = dalloc(L.C), *rdb = dalloc(L.C), *l1g = dalloc(L.C), *l1b = dalloc(L.C);
    ref_bn_forward(L.x, L.B, L.C, L.HW, L.gamma, L.beta, EPS, mean, var, NULL);
    snprintf(what, sizeof what, "bn+relu (%zu,%zu,%zu,%zu)+%g [%s]", s->B, s->C, s->H, s->W,
             (double)s->offset, mn);
    float *y = guarded_download(&L.y, what);
    bn_check_y_act(&L, y, mean, var, what, 1);
    size_t zeros = 0;
    for (size_t j = 0; j < L.n; j++)
        zeros += y[j] == 0.0f;
    ck_assert_msg(zeros > 0 && zeros < L.n, "%s: %zu of %zu outputs are 0; the case must reach both "
                  "sides of the ReLU", what, zeros, L.n);

    float *dy = host_uniform(L.n, 79, -1.0f, 1.0f), *dym = malloc(L.n * sizeof *dym);
    ck_assert_ptr_nonnull(dym);
    mpcl_tensor *tdy = upload_held(L.ctx, st, MPCL_MEM_GRADIENTS, dy, s->B, s->C, s->H, s->W);
    for (size_t j = 0; j < L.n; j++) /* dy as the device holds it */
        dym[j] = y[j] > 0.0f ? dy[j] : 0.0f;
    guarded dx = guarded_tensor(L.ctx, st, s->B, s->C, s->H, s->W);
    mpcl_tensor *tdg = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, L.C, 0, 0, 0);
    mpcl_tensor *tdb = optest_tensor(L.ctx, st, MPCL_MEM_GRADIENTS, NULL, L.C, 0, 0, 0);
    fill_const(tdg, 0.25f);
    fill_const(tdb, -0.5f);
    rc = mpcl_batchnorm2d_relu_backward(L.ctx, dx.view, tdg, tdb, tdy, L.y.view, L.tx, L.tgamma,
                                        L.tsm, L.tsi);
    ck_assert_msg(rc == MPCL_OK, "mpcl_batchnorm2d_relu_backward: %s", mpcl_last_error(L.ctx));
    ref_bn_backward(L.x, dym, L.B, L.C, L.HW, L.gamma, mean, var, EPS, rdx, rdg, rdb, l1g, l1b);
    snprintf(what, sizeof what, "bn+relu backward (%zu,%zu,%zu,%zu) dx [%s]", s->B, s->C, s->H,
             s->W, mn);
    float *gdx = guarded_download(&dx, what);
    bn_check_grads(&L, s, what, gdx, rdx, var, tdg, tdb, rdg, rdb, l1g, l1b, mn,
                   "bn+relu ");

    /* arguments: y is required and may not be dx */
    rc = mpcl_batchnorm2d_relu_backward(L.ctx, dx.view, tdg, tdb, tdy, NULL, L.tx, L.tgamma, L.tsm,
                                        L.tsi);
    ck_assert_int_eq(rc, MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(mpcl_last_error(L.ctx), "mpcl_batchnorm2d_relu_backward") &&
                      strstr(mpcl_last_error(L.ctx), "y is NULL"),
                  "message: %s", mpcl_last_error(L.ctx));
    rc = mpcl_batchnorm2d_relu_backward(L.ctx, L.y.view, tdg, tdb, tdy, L.y.view, L.tx, L.tgamma,
                                        L.tsm, L.tsi);
    ck_assert_int_eq(rc, MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(mpcl_last_error(L.ctx), "share a buffer"), "message: %s",
                  mpcl_last_error(L.ctx));

    /* eval: the running statistics (those the training step left) */
    float *rm = optest_download(L.trm), *rv = optest_download(L.trv);
    for (size_t c = 0; c < L.C; c++) {
        mean[c] = rm[c];
        var[c] = rv[c];
    }
    rc = mpcl_batchnorm2d_relu_forward(L.ctx, L.y.view, L.tx, L.tgamma, L.tbeta, L.trm, L.trv,
                                       NULL, NULL, MOMENTUM, EPS, 0);
    ck_assert_msg(rc == MPCL_OK, "bn+relu eval: %s", mpcl_last_error(L.ctx));
    snprintf(what, sizeof what, "bn+relu eval (%zu,%zu,%zu,%zu) [%s]", s->B, s->C, s->H, s->W, mn);
    float *ye = guarded_download(&L.y, what);
    bn_check_y_act(&L, ye, mean, var, what, 1);

    free(ye); free(rm); free(rv);
    free(gdx); free(y); free(dy); free(dym);
    free(mean); free(var); free(rdx); free(rdg); free(rdb); free(l1g); free(l1b);
    mpcl_tensor_destroy(tdy); mpcl_tensor_destroy(tdg); mpcl_tensor_destroy(tdb);
    guarded_destroy(&dx);
    bn_teardown(&L);
}

START_TEST(test_bn_relu)
{
    static const bn_shape shapes[] = {
        {3, 5, 7, 13, 0.0f},  /* odd everything */
        {2, 3, 28, 28, 0.5f}, /* M = 1568: strided loops */
        {20, 5, 7, 7, 0.0f},  /* blocks of rows */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!optest_small() || shapes[i].B * shapes[i].C * shapes[i].H * shapes[i].W < 50000)
            bn_relu_case(_i, &shapes[i]);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("norm");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"bn_train", test_bn_train},
        {"bn_eval", test_bn_eval},
        {"bn_backward", test_bn_backward},
        {"bn_finite_differences", test_bn_finite_differences},
        {"bn_bad_arguments", test_bn_bad_arguments},
        {"bn_relu", test_bn_relu},
        {"ln_forward", test_ln_forward},
        {"ln_backward", test_ln_backward},
        {"ln_finite_differences", test_ln_finite_differences},
        {"ln_bad_arguments", test_ln_bad_arguments},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 600);
        tcase_add_loop_test(tc, cases[i].fn, 0, optest_nmodes);
        suite_add_tcase(s, tc);
    }
    return optest_run(s);
}
