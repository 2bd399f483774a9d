/* test_train.c — the mixed-precision training step: overflow handling (skip,
 * back off, weights untouched, then convergence), scale growth, injected
 * non-finite gradients, determinism, accuracy well above chance on a
 * Fashion-MNIST subset in every mode the device runs, and mpcl_fit's
 * bit-exact resume from a mid-epoch checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "optest.h"

static mpcl_dataset data;
static float data_mean = 0.2860f, data_std = 0.3530f;

static const char *SEED_CNN = "input 1x28x28\nconv2d out=10 kernel=5\nrelu\nmaxpool2d kernel=2\nflatten\n"
                              "linear in=1440 out=10\nrelu\nlinear out=10\n";

/* The seed CNN and a trainer on ctx (small runs: the same net, fewer steps). */
static void make(mpcl_context *ctx, size_t batch, const mpcl_train_options *o, mpcl_model **m,
                 mpcl_trainer **t)
{
    mpcl_model_spec spec;
    char err[256];
    ck_assert_msg(mpcl_model_spec_parse(SEED_CNN, "seed-cnn", &spec, err, sizeof err) == MPCL_OK, "%s", err);
    ck_assert_msg(mpcl_model_create(ctx, &spec, batch, 1, m) == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_normalization n;
    mpcl_normalization_init(&n);
    n.mean[0] = data_mean;
    n.std[0] = data_std;
    ck_assert_msg(mpcl_model_set_normalization(*m, &n) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(mpcl_trainer_create(*m, o, t) == MPCL_OK, "%s", mpcl_last_error(ctx));
}

static void options(mpcl_train_options *o, mpcl_precision p)
{
    mpcl_train_options_init(o, p);
}

static const uint8_t *images(size_t first) { return data.train_images.data + first * 784; }
static const uint8_t *labels(size_t first) { return data.train_labels.data + first; }

/* An initial scale of 2^30 overflows half: those steps are skipped, the scale
 * halves each time, the master weights stay bit for bit, and training then
 * converges. fp32 has the range for 2^30, so the test runs in the half modes. */
START_TEST(overflow_skips_and_backs_off)
{
    mpcl_precision mode = optest_modes[_i].mode;
    if (mode == MPCL_PRECISION_FP32 || mode == MPCL_PRECISION_BF16)
        return; /* covered by injected_inf below; bf16: bf16_range */
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_train_options o;
    options(&o, mode);
    o.loss_scale = 0x1p30f;
    const size_t B = optest_small() ? 8 : 32; /* small: under oclgrind */
    mpcl_model *m;
    mpcl_trainer *t;
    make(ctx, B, &o, &m, &t);
    size_t p = mpcl_tensor_numel(mpcl_model_master(m));
    float *before = optest_download(mpcl_model_master(m));
    int skipped = 0, steps = optest_small() ? 28 : 120;
    float expect_scale = 0x1p30f, first_loss = NAN, last = 0;
    for (int s = 0; s < steps; s++) {
        mpcl_step_stats st;
        ck_assert_msg(mpcl_trainer_step(t, images((size_t)s * B), labels((size_t)s * B), B, &st) == MPCL_OK,
                      "%s", mpcl_last_error(ctx));
        ck_assert(st.scale == expect_scale);
        float *after = optest_download(mpcl_model_master(m));
        if (st.skipped) {
            skipped++;
            ck_assert_msg(memcmp(before, after, p * 4) == 0, "step %d was skipped but the weights changed", s);
            expect_scale *= 0.5f;
        } else {
            ck_assert_msg(memcmp(before, after, p * 4) != 0, "step %d was applied but nothing changed", s);
            if (isnan(first_loss))
                first_loss = st.loss;
        }
        if (s >= steps - 10)
            last += st.loss / 10;
        free(before);
        before = after;
    }
    ck_assert_msg(skipped >= 1, "2^30 never overflowed");
    ck_assert_msg(skipped <= 24, "%d steps skipped", skipped); /* 2^30 down to 2^6 at most */
    mpcl_scaler_state sc;
    mpcl_trainer_scaler(t, &sc);
    ck_assert_uint_eq(sc.skipped_steps, (unsigned)skipped);
    ck_assert_uint_eq(sc.optimizer_steps, (unsigned)(steps - skipped));
    if (!optest_small())
        ck_assert_msg(last < 0.7 * first_loss, "loss %g after overflow recovery, first applied step %g", last,
                      first_loss);
    free(before);
    mpcl_trainer_destroy(t);
    mpcl_model_destroy(m);
}
END_TEST

/* An inf injected into one gradient element at step 3: that step is skipped
 * (weights untouched; a static scale stays), the others are applied. */
START_TEST(injected_inf)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_train_options o;
    options(&o, optest_modes[_i].mode);
    o.inject_inf_step = 3;
    o.dynamic_scale = 0;
    o.loss_scale = 128.0f;
    const size_t B = optest_small() ? 4 : 16;
    mpcl_model *m;
    mpcl_trainer *t;
    make(ctx, B, &o, &m, &t);
    size_t p = mpcl_tensor_numel(mpcl_model_master(m));
    float *before = optest_download(mpcl_model_master(m));
    for (int s = 1; s <= 5; s++) {
        mpcl_step_stats st;
        ck_assert(mpcl_trainer_step(t, images((size_t)s * B), labels((size_t)s * B), B, &st) == MPCL_OK);
        ck_assert_int_eq(st.skipped, s == 3);
        ck_assert(st.scale == 128.0f);
        float *after = optest_download(mpcl_model_master(m));
        ck_assert_int_eq(memcmp(before, after, p * 4) == 0, s == 3);
        free(before);
        before = after;
    }
    free(before);
    mpcl_trainer_destroy(t);
    mpcl_model_destroy(m);
}
END_TEST

/* Dynamic scaling doubles the scale after growth_interval finite steps. */
START_TEST(scale_grows)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_train_options o;
    options(&o, optest_modes[_i].mode);
    o.dynamic_scale = 1;
    o.loss_scale = 64.0f;
    o.growth_interval = 3;
    const size_t B = optest_small() ? 4 : 8;
    mpcl_model *m;
    mpcl_trainer *t;
    make(ctx, B, &o, &m, &t);
    float want[7] = {64, 64, 64, 128, 128, 128, 256};
    for (int s = 0; s < 7; s++) {
        mpcl_step_stats st;
        ck_assert(mpcl_trainer_step(t, images((size_t)s * B), labels((size_t)s * B), B, &st) == MPCL_OK);
        ck_assert_int_eq(st.skipped, 0);
        ck_assert_msg(st.scale == want[s], "step %d scale %g, expected %g", s, (double)st.scale, (double)want[s]);
    }
    mpcl_scaler_state sc;
    mpcl_trainer_scaler(t, &sc);
    ck_assert(sc.scale == 256.0f);
    ck_assert_uint_eq(sc.growth_tracker, 1);
    mpcl_trainer_destroy(t);
    mpcl_model_destroy(m);
}
END_TEST

/* The same seed on the same device gives the same losses, bit for bit. */
START_TEST(deterministic)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_train_options o;
    options(&o, optest_modes[_i].mode);
    const size_t B = optest_small() ? 6 : 32;
    const int steps = optest_small() ? 3 : 15;
    float loss[2][15];
    for (int run = 0; run < 2; run++) {
        mpcl_model *m;
        mpcl_trainer *t;
        make(ctx, B, &o, &m, &t);
        for (int s = 0; s < steps; s++) {
            mpcl_step_stats st;
            ck_assert(mpcl_trainer_step(t, images((size_t)s * B), labels((size_t)s * B), B - (s % 3), &st) == MPCL_OK);
            loss[run][s] = st.loss;
        }
        mpcl_trainer_destroy(t);
        mpcl_model_destroy(m);
    }
    for (int s = 0; s < steps; s++)
        ck_assert_msg(memcmp(&loss[0][s], &loss[1][s], 4) == 0, "step %d: %.9g vs %.9g", s, (double)loss[0][s],
                      (double)loss[1][s]);
}
END_TEST

/* 3000 samples, one epoch, batch 50 (60 Adam steps): test accuracy well above
 * chance (10%) — over 55% where about 63% is measured;
 * a broken gradient cannot get there. */
START_TEST(learns)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_train_options o;
    options(&o, optest_modes[_i].mode);
    const size_t B = 50, n = 3000;
    mpcl_model *m;
    mpcl_trainer *t;
    make(ctx, B, &o, &m, &t);
    for (size_t i = 0; i < n; i += B) {
        mpcl_step_stats st;
        ck_assert_msg(mpcl_trainer_step(t, images(i), labels(i), B, &st) == MPCL_OK, "%s", mpcl_last_error(ctx));
    }
    double acc = 0, loss = 0;
    uint64_t confusion[100];
    ck_assert_msg(mpcl_model_evaluate(m, data.test_images.data, data.test_labels.data, 1000, B, &loss, &acc, confusion) == MPCL_OK,
                  "%s", mpcl_last_error(ctx));
    printf("%s: 1 epoch of %zu samples: test accuracy %.1f%%, loss %.3f\n", optest_modes[_i].name, n, 100 * acc,
           loss);
    ck_assert_msg(acc > 0.55, "test accuracy %.3f", acc); /* measured about 0.63 */
    uint64_t total = 0;
    for (int i = 0; i < 100; i++)
        total += confusion[i];
    ck_assert_uint_eq(total, 1000);
    mpcl_trainer_destroy(t);
    mpcl_model_destroy(m);
}
END_TEST

/* bf16 has float's exponent range: its defaults are a static scale of 1
 * (no loss scaling), and even a scale of 2^30, which overflows half in the
 * test above, leaves every step finite. */
START_TEST(bf16_range)
{
    mpcl_precision mode = optest_modes[_i].mode;
    if (mode != MPCL_PRECISION_BF16)
        return;
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_train_options o;
    options(&o, mode);
    ck_assert_int_eq(o.dynamic_scale, 0);
    ck_assert(o.loss_scale == 1.0f);
    const size_t B = optest_small() ? 4 : 16;
    const int steps = optest_small() ? 3 : 8;
    for (int run = 0; run < 2; run++) {
        if (run == 1) {
            o.dynamic_scale = 1;
            o.loss_scale = 0x1p30f;
        }
        mpcl_model *m;
        mpcl_trainer *t;
        make(ctx, B, &o, &m, &t);
        for (int s = 0; s < steps; s++) {
            mpcl_step_stats st;
            ck_assert(mpcl_trainer_step(t, images((size_t)s * B), labels((size_t)s * B), B, &st) ==
                      MPCL_OK);
            ck_assert_msg(st.skipped == 0 && isfinite(st.loss), "bf16 step %d (scale %g) skipped", s,
                          (double)st.scale);
            ck_assert(st.scale == (run ? 0x1p30f : 1.0f));
        }
        mpcl_trainer_destroy(t);
        mpcl_model_destroy(m);
    }
}
END_TEST

/* mpcl_fit: two epochs of 10 steps with augmentation, against the same
 * fit stopped at step 13 (mid-epoch 2, checkpoint written) and resumed by a
 * new trainer made with the default normalisation, as an app would: the
 * same final weights, bit for bit, and the same test accuracy. A step
 * callback that asks to stop ends the fit there. */
typedef struct {
    int steps, stop_at, epochs;
} fit_count;

static int count_step(void *user, const mpcl_fit_step_info *si)
{
    fit_count *c = user;
    c->steps++;
    ck_assert_uint_eq(si->step, (uint64_t)c->steps);
    ck_assert_uint_eq(si->steps_per_epoch, 10);
    return c->stop_at && c->steps == c->stop_at;
}

static int count_epoch(void *user, const mpcl_fit_epoch_info *ei)
{
    fit_count *c = user;
    c->epochs++;
    ck_assert(ei->test_accuracy >= 0.0 && ei->test_accuracy <= 1.0 && ei->confusion);
    return 0;
}

static void fit_options(mpcl_fit_options *fo)
{
    mpcl_fit_options_init(fo);
    fo->epochs = 2;
    fo->batch = 32;
    fo->seed = 7;
    fo->train_limit = 320;
    fo->test_limit = 200;
    fo->augment = (mpcl_augment_options){.pad = 2, .flip = 1};
}

START_TEST(fit_resumes_mid_epoch_exactly)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_train_options o;
    options(&o, optest_modes[_i].mode);
    mpcl_model *ma, *mb, *mc;
    mpcl_trainer *ta, *tb, *tc;
    make(ctx, 32, &o, &ma, &ta);
    make(ctx, 32, &o, &mb, &tb);
    mpcl_fit_options fo;
    fit_options(&fo);
    fit_count ca = {0, 0, 0};
    mpcl_fit_callbacks cb = {count_step, count_epoch, &ca, NULL};
    mpcl_fit_result ra, rb, rc;
    ck_assert_msg(mpcl_fit(ta, &data, &fo, &cb, &ra) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_int_eq(ra.end, MPCL_FIT_COMPLETE);
    ck_assert_int_eq(ca.steps, 20);
    ck_assert_int_eq(ca.epochs, 2);
    ck_assert_uint_eq(ra.images, 640);
    ck_assert(ra.evaluated);

    char path[512];
    snprintf(path, sizeof path, "%s/fit-%d-%d.st", getenv("MPCL_TEST_TMPDIR") ? getenv("MPCL_TEST_TMPDIR") : "/tmp",
             (int)getpid(), _i);
    fo.max_steps = 13;
    fo.save_path = path;
    ck_assert_msg(mpcl_fit(tb, &data, &fo, NULL, &rb) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_int_eq(rb.end, MPCL_FIT_MAX_STEPS);
    ck_assert_uint_eq(rb.epochs_done, 1);
    ck_assert_uint_eq(rb.epoch_step, 3);
    ck_assert(rb.saved);

    /* a new trainer with the default normalisation resumes from the file */
    mpcl_model_spec spec;
    ck_assert_int_eq(mpcl_model_spec_parse(SEED_CNN, "seed-cnn", &spec, NULL, 0), MPCL_OK);
    ck_assert_int_eq(mpcl_model_create(ctx, &spec, 32, 99, &mc), MPCL_OK);
    ck_assert_int_eq(mpcl_trainer_create(mc, &o, &tc), MPCL_OK);
    mpcl_checkpoint *c;
    ck_assert_msg(mpcl_checkpoint_open(ctx, path, &c) == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_fit_options fr;
    fit_options(&fr);
    fr.seed = 12345;     /* the checkpoint's seed wins */
    fr.augment.pad = 0;  /* and its augmentation */
    ck_assert_msg(mpcl_fit_resume(c, tc, &fr) == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_checkpoint_close(c);
    ck_assert_uint_eq(fr.epochs_done, 1);
    ck_assert_uint_eq(fr.epoch_step, 3);
    ck_assert_uint_eq(fr.seed, 7);
    ck_assert_int_eq(fr.augment.pad, 2);
    ck_assert_msg(mpcl_fit(tc, &data, &fr, NULL, &rc) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_int_eq(rc.end, MPCL_FIT_COMPLETE);
    ck_assert_uint_eq(rc.steps, 20);
    ck_assert_uint_eq(rc.images, 7 * 32);
    float *wa = optest_download(mpcl_model_master(ma)), *wc = optest_download(mpcl_model_master(mc));
    ck_assert_msg(memcmp(wa, wc, mpcl_tensor_numel(mpcl_model_master(ma)) * sizeof *wa) == 0,
                  "[%s] the resumed fit's weights differ from the uninterrupted fit's", optest_modes[_i].name);
    ck_assert(ra.test_accuracy == rc.test_accuracy && ra.test_loss == rc.test_loss);
    free(wa);
    free(wc);

    /* a mid-epoch checkpoint refuses another batch; a callback stops a fit */
    ck_assert_int_eq(mpcl_checkpoint_open(ctx, path, &c), MPCL_OK);
    fit_options(&fr);
    fr.batch = 16;
    ck_assert_int_eq(mpcl_fit_resume(c, tc, &fr), MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "batch 32") && strstr(mpcl_last_error(ctx), "batch 16"), "%s",
                  mpcl_last_error(ctx));
    mpcl_checkpoint_close(c);
    remove(path);
    fit_count cs = {0, 4, 0};
    mpcl_fit_callbacks stopper = {count_step, NULL, &cs, NULL};
    fit_options(&fo);
    mpcl_trainer_destroy(ta);
    mpcl_model_destroy(ma);
    make(ctx, 32, &o, &ma, &ta);
    ck_assert_int_eq(mpcl_fit(ta, &data, &fo, &stopper, &ra), MPCL_OK);
    ck_assert_int_eq(ra.end, MPCL_FIT_STOPPED);
    ck_assert_uint_eq(ra.steps, 4);
    ck_assert_uint_eq(ra.epoch_step, 4);
    /* bad options: nothing runs */
    fo.batch = 64;
    ck_assert_int_eq(mpcl_fit(ta, &data, &fo, NULL, NULL), MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "batch 64"), "%s", mpcl_last_error(ctx));
    mpcl_trainer_destroy(ta);
    mpcl_trainer_destroy(tb);
    mpcl_trainer_destroy(tc);
    mpcl_model_destroy(ma);
    mpcl_model_destroy(mb);
    mpcl_model_destroy(mc);
}
END_TEST

int main(void)
{
    char err[512];
    if (mpcl_dataset_load(NULL, &data, err, sizeof err) != MPCL_OK) {
        printf("skipped: the training tests need the default data: %s\n", err);
        return 77;
    }
    optest_init();
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("trainer");
    tcase_add_loop_test(tc, overflow_skips_and_backs_off, 0, optest_nmodes);
    tcase_add_loop_test(tc, injected_inf, 0, optest_nmodes);
    tcase_add_loop_test(tc, scale_grows, 0, optest_nmodes);
    tcase_add_loop_test(tc, deterministic, 0, optest_nmodes);
    tcase_add_loop_test(tc, bf16_range, 0, optest_nmodes);
    tcase_add_loop_test(tc, fit_resumes_mid_epoch_exactly, 0, optest_nmodes);
    if (!optest_small())
        tcase_add_loop_test(tc, learns, 0, optest_nmodes);
    suite_add_tcase(s, tc);
    int rc = optest_run(s);
    mpcl_dataset_free(&data);
    return rc;
}
