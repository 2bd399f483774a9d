/* test_optim.c — SGD (momentum, Nesterov, weight decay), Adam and AdamW
 * steps against a double-precision host implementation of PyTorch's update
 * rules, in every mode; the working copy is the master rounded to the
 * storage dtype; the gradient norm; learning-rate schedules (host). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

typedef struct {
    double w, s1, s2;
} ref_state;

/* PyTorch's rules, in double. */
static void ref_step(const mpcl_optimizer_options *o, double lr, uint64_t t, ref_state *st, double g)
{
    double w = st->w;
    if (o->kind == MPCL_OPT_SGD) {
        g += o->weight_decay * w;
        if (o->momentum != 0.0f) {
            double b = t == 1 ? g : o->momentum * st->s1 + g;
            st->s1 = b;
            g = o->nesterov ? g + o->momentum * b : b;
        }
        st->w = w - lr * g;
        return;
    }
    if (o->kind == MPCL_OPT_ADAMW)
        w *= 1.0 - lr * o->weight_decay;
    else
        g += o->weight_decay * w;
    st->s1 = o->beta1 * st->s1 + (1.0 - o->beta1) * g;
    st->s2 = o->beta2 * st->s2 + (1.0 - o->beta2) * g * g;
    double mhat = st->s1 / (1.0 - pow(o->beta1, (double)t)), vhat = st->s2 / (1.0 - pow(o->beta2, (double)t));
    st->w = w - lr * mhat / (sqrt(vhat) + o->eps);
}

static const struct {
    mpcl_optimizer kind;
    float momentum, wd;
    int nesterov;
} CASES[] = {
    {MPCL_OPT_SGD, 0.0f, 0.0f, 0}, {MPCL_OPT_SGD, 0.9f, 1e-2f, 0}, {MPCL_OPT_SGD, 0.9f, 0.0f, 1},
    {MPCL_OPT_ADAM, 0.0f, 0.0f, 0}, {MPCL_OPT_ADAM, 0.0f, 1e-2f, 0}, {MPCL_OPT_ADAMW, 0.0f, 0.1f, 0},
};
#define NCASES ((int)(sizeof CASES / sizeof CASES[0]))

START_TEST(optimizer_matches_reference)
{
    mpcl_context *ctx = optest_modes[_i / NCASES].ctx;
    int c = _i % NCASES;
    const size_t n = optest_small() ? 37 : 1237;
    mpcl_optimizer_options o;
    mpcl_optimizer_options_init(&o, CASES[c].kind);
    o.momentum = CASES[c].momentum;
    o.weight_decay = CASES[c].wd;
    o.nesterov = CASES[c].nesterov;
    float *w0 = malloc(n * 4), *g = malloc(n * 4);
    optest_fill_uniform(w0, n, 11, -1.0f, 1.0f);
    ref_state *ref = calloc(n, sizeof *ref);
    for (size_t i = 0; i < n; i++)
        ref[i].w = w0[i];
    mpcl_dtype sd = mpcl_storage_dtype(ctx);
    mpcl_tensor *master = optest_tensor(ctx, MPCL_F32, MPCL_MEM_WEIGHTS, w0, n, 0, 0, 0);
    mpcl_tensor *work = sd == MPCL_F32 ? NULL : optest_tensor(ctx, sd, MPCL_MEM_WEIGHTS, NULL, n, 0, 0, 0);
    mpcl_tensor *grad = optest_tensor(ctx, sd, MPCL_MEM_GRADIENTS, NULL, n, 0, 0, 0);
    mpcl_tensor *s1 = optest_tensor(ctx, MPCL_F32, MPCL_MEM_OPTIMIZER, NULL, n, 0, 0, 0);
    mpcl_tensor *s2 = optest_tensor(ctx, MPCL_F32, MPCL_MEM_OPTIMIZER, NULL, n, 0, 0, 0);
    float *zero = calloc(n, 4);
    ck_assert_int_eq(mpcl_tensor_upload(s1, zero, n), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_upload(s2, zero, n), MPCL_OK);
    const float grad_mul = 0.5f;
    for (uint64_t t = 1; t <= 4; t++) {
        optest_fill_uniform(g, n, 100 + t, -2.0f, 2.0f);
        optest_quantize(ctx, g, n); /* the gradient as the device holds it */
        ck_assert_int_eq(mpcl_tensor_upload(grad, g, n), MPCL_OK);
        float lr = 0.05f / (float)t;
        mpcl_status s = mpcl_optimizer_step(ctx, &o, lr, t, master, work, grad, s1, s2, grad_mul);
        ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
        for (size_t i = 0; i < n; i++)
            ref_step(&o, lr, t, &ref[i], (double)g[i] * grad_mul);
    }
    float *got = optest_download(master);
    double *want = malloc(n * sizeof *want);
    for (size_t i = 0; i < n; i++)
        want[i] = ref[i].w;
    optest_assert_close("master after 4 steps", got, want, n, 1e-6, 1e-5); /* f32 state every mode */
    if (work) { /* the working copy is the master, rounded once */
        float *wk = optest_download(work);
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(optest_round_storage(ctx, got[i]) == wk[i],
                          "working[%zu] = %g is not %s(master %g)", i, (double)wk[i],
                          mpcl_dtype_name(sd), (double)got[i]);
        free(wk);
    }
    free(got);
    free(want);
    free(w0);
    free(g);
    free(ref);
    free(zero);
    mpcl_tensor_destroy(master);
    mpcl_tensor_destroy(work);
    mpcl_tensor_destroy(grad);
    mpcl_tensor_destroy(s1);
    mpcl_tensor_destroy(s2);
}
END_TEST

/* Adam's eps in float: tiny gradients give a finite, bounded step, where an
 * eps rounded to half (0) and a half v would give 0/0. */
START_TEST(adam_tiny_gradients_stay_finite)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    const size_t n = 64;
    mpcl_optimizer_options o;
    mpcl_optimizer_options_init(&o, MPCL_OPT_ADAM);
    float w0[64], g[64], zero[64] = {0};
    for (size_t i = 0; i < n; i++) {
        w0[i] = 1.0f;
        g[i] = i % 2 ? 0x1p-24f : 0.0f; /* smallest half subnormal, and zero */
    }
    mpcl_dtype sd = mpcl_storage_dtype(ctx);
    mpcl_tensor *master = optest_tensor(ctx, MPCL_F32, MPCL_MEM_WEIGHTS, w0, n, 0, 0, 0);
    mpcl_tensor *work = sd == MPCL_F32 ? NULL : optest_tensor(ctx, sd, MPCL_MEM_WEIGHTS, NULL, n, 0, 0, 0);
    mpcl_tensor *grad = optest_tensor(ctx, sd, MPCL_MEM_GRADIENTS, g, n, 0, 0, 0);
    mpcl_tensor *s1 = optest_tensor(ctx, MPCL_F32, MPCL_MEM_OPTIMIZER, zero, n, 0, 0, 0);
    mpcl_tensor *s2 = optest_tensor(ctx, MPCL_F32, MPCL_MEM_OPTIMIZER, zero, n, 0, 0, 0);
    ck_assert_int_eq(mpcl_optimizer_step(ctx, &o, 1e-3f, 1, master, work, grad, s1, s2, 1.0f), MPCL_OK);
    float *got = optest_download(master);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(isfinite(got[i]), "w[%zu] = %g", i, (double)got[i]);
        /* g = 0: no move; g = 2^-24: m_hat / (sqrt(v_hat) + eps) = 2^-24 / (2^-24 + 1e-8) */
        double step = i % 2 ? 1e-3 * 0x1p-24 / (0x1p-24 + 1e-8) : 0.0;
        ck_assert_msg(fabs(got[i] - (1.0 - step)) < 1e-7, "w[%zu] = %.9g, expected %.9g", i, (double)got[i],
                      1.0 - step);
    }
    free(got);
    mpcl_tensor_destroy(master);
    mpcl_tensor_destroy(work);
    mpcl_tensor_destroy(grad);
    mpcl_tensor_destroy(s1);
    mpcl_tensor_destroy(s2);
}
END_TEST

START_TEST(grad_norm_and_bad_arguments)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    const size_t n = optest_small() ? 100 : 100003;
    float *g = malloc(n * 4);
    optest_fill_uniform(g, n, 5, -1.0f, 1.0f);
    optest_quantize(ctx, g, n);
    mpcl_dtype sd = mpcl_storage_dtype(ctx);
    mpcl_tensor *grad = optest_tensor(ctx, sd, MPCL_MEM_GRADIENTS, g, n, 0, 0, 0);
    double norm = 0, want = 0;
    for (size_t i = 0; i < n; i++)
        want += (double)g[i] * g[i];
    want = sqrt(want);
    ck_assert_int_eq(mpcl_grad_norm(ctx, grad, &norm), MPCL_OK);
    ck_assert_msg(fabs(norm - want) <= 1e-5 * want, "norm %.9g, reference %.9g", norm, want);
    /* mismatched sizes: refused with both shapes, nothing written */
    float w0[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    mpcl_tensor *master = optest_tensor(ctx, MPCL_F32, MPCL_MEM_WEIGHTS, w0, 10, 0, 0, 0);
    mpcl_optimizer_options o;
    mpcl_optimizer_options_init(&o, MPCL_OPT_SGD);
    mpcl_tensor *work = sd == MPCL_F32 ? NULL : optest_tensor(ctx, sd, MPCL_MEM_WEIGHTS, NULL, 10, 0, 0, 0);
    mpcl_status s = mpcl_optimizer_step(ctx, &o, 0.1f, 1, master, work, grad, NULL, NULL, 1.0f);
    ck_assert_int_eq(s, MPCL_ERR_SHAPE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "(10) f32") && strstr(mpcl_last_error(ctx), "grad"), "%s",
                  mpcl_last_error(ctx));
    float *after = optest_download(master);
    for (int i = 0; i < 10; i++)
        ck_assert(after[i] == w0[i]);
    free(after);
    free(g);
    mpcl_tensor_destroy(grad);
    mpcl_tensor_destroy(master);
    mpcl_tensor_destroy(work);
}
END_TEST

/* The input kernels: bytes normalised and cast on the device, labels to i32. */
START_TEST(normalize_input)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    const size_t n = optest_small() ? 300 : 70000;
    float *bytes = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        bytes[i] = (float)((i * 37 + 11) % 256);
    mpcl_tensor *u8 = optest_tensor(ctx, MPCL_U8, MPCL_MEM_ACTIVATIONS, bytes, n, 0, 0, 0);
    mpcl_tensor *y = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    const float mean = 0.2860f, std = 0.3530f;
    mpcl_normalization nz;
    mpcl_normalization_init(&nz);
    nz.mean[0] = mean;
    nz.std[0] = std;
    ck_assert_msg(mpcl_normalize_u8(ctx, y, u8, &nz) == MPCL_OK, "%s", mpcl_last_error(ctx));
    float *got = optest_download(y);
    double *want = malloc(n * sizeof *want);
    for (size_t i = 0; i < n; i++)
        want[i] = ((double)bytes[i] / 255.0 - mean) / std;
    optest_assert_close("normalize_u8", got, want, n, 1e-6, optest_rtol(optest_modes[_i].mode));
    mpcl_tensor *lab = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    ck_assert_msg(mpcl_labels_to_i32(ctx, lab, u8) == MPCL_OK, "%s", mpcl_last_error(ctx));
    float *l = optest_download(lab);
    for (size_t i = 0; i < n; i++)
        ck_assert(l[i] == bytes[i]);
    /* a wrong dtype is refused and names it */
    ck_assert_int_eq(mpcl_normalize_u8(ctx, y, y, &nz), MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "u8"), "%s", mpcl_last_error(ctx));
    /* per channel: y (B, 3, H, W), channel c of each image by its own mean and std */
    {
        const size_t b = 2, c = 3, hw = 5 * 7;
        mpcl_tensor *u = optest_tensor(ctx, MPCL_U8, MPCL_MEM_ACTIVATIONS, bytes, b, c, 5, 7);
        mpcl_tensor *yc = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, NULL, b, c, 5, 7);
        mpcl_normalization pc = {3, {0.49f, 0.48f, 0.45f, 0}, {0.25f, 0.24f, 0.26f, 1}};
        ck_assert_msg(mpcl_normalize_u8(ctx, yc, u, &pc) == MPCL_OK, "%s", mpcl_last_error(ctx));
        float *gc = optest_download(yc);
        double wc[2 * 3 * 35];
        for (size_t i = 0; i < b * c * hw; i++) {
            size_t ch = i / hw % c;
            wc[i] = ((double)bytes[i] / 255.0 - pc.mean[ch]) / pc.std[ch];
        }
        optest_assert_close("normalize_u8 per channel", gc, wc, b * c * hw, 1e-6, optest_rtol(optest_modes[_i].mode));
        /* 3 channels need (B, 3, H, W): a flat y is refused; so is a std of 0 */
        ck_assert_int_eq(mpcl_normalize_u8(ctx, y, u8, &pc), MPCL_ERR_SHAPE);
        pc.std[1] = 0.0f;
        ck_assert_int_eq(mpcl_normalize_u8(ctx, yc, u, &pc), MPCL_ERR_ARGUMENT);
        ck_assert_msg(strstr(mpcl_last_error(ctx), "channel 1"), "%s", mpcl_last_error(ctx));
        free(gc);
        mpcl_tensor_destroy(u);
        mpcl_tensor_destroy(yc);
    }
    free(bytes);
    free(got);
    free(want);
    free(l);
    mpcl_tensor_destroy(u8);
    mpcl_tensor_destroy(y);
    mpcl_tensor_destroy(lab);
}
END_TEST

START_TEST(schedules)
{
    mpcl_train_options o;
    mpcl_train_options_init(&o, MPCL_PRECISION_FP32);
    o.optimizer.lr = 0.1f;
    ck_assert(mpcl_schedule_lr(&o, 12345) == 0.1f);
    o.schedule = MPCL_SCHEDULE_STEP;
    o.step_size = 10;
    o.gamma = 0.5f;
    ck_assert(fabsf(mpcl_schedule_lr(&o, 9) - 0.1f) < 1e-7f);
    ck_assert(fabsf(mpcl_schedule_lr(&o, 10) - 0.05f) < 1e-7f);
    ck_assert(fabsf(mpcl_schedule_lr(&o, 25) - 0.025f) < 1e-7f);
    o.schedule = MPCL_SCHEDULE_COSINE;
    o.total_steps = 100;
    ck_assert(fabsf(mpcl_schedule_lr(&o, 0) - 0.1f) < 1e-7f);
    ck_assert(fabsf(mpcl_schedule_lr(&o, 50) - 0.05f) < 1e-7f);
    ck_assert(fabsf(mpcl_schedule_lr(&o, 100)) < 1e-7f);
    o.warmup_steps = 10; /* linear from lr/10 to lr, then cosine over the remaining 90 */
    ck_assert(fabsf(mpcl_schedule_lr(&o, 0) - 0.01f) < 1e-7f);
    ck_assert(fabsf(mpcl_schedule_lr(&o, 9) - 0.1f) < 1e-7f);
    ck_assert(fabsf(mpcl_schedule_lr(&o, 55) - 0.05f) < 1e-7f);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("optimizers");
    tcase_add_loop_test(tc, optimizer_matches_reference, 0, optest_nmodes * NCASES);
    tcase_add_loop_test(tc, adam_tiny_gradients_stay_finite, 0, optest_nmodes);
    tcase_add_loop_test(tc, grad_norm_and_bad_arguments, 0, optest_nmodes);
    tcase_add_loop_test(tc, normalize_input, 0, optest_nmodes);
    tcase_add_test(tc, schedules);
    suite_add_tcase(s, tc);
    return optest_run(s);
}
