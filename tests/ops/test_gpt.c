/* test_gpt.c — the GPT language model of a "gpt" spec (src/nn/gpt.c): its
 * parameters (GPT-2 names, shapes, the weight-decay split), back-propagation
 * against central differences (fp32) and against fp32 (16-bit modes),
 * decoding with the key / value cache against the full forward pass, the
 * trainer's language-model step (AdamW's decay spares embeddings, biases
 * and norms) and its errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

static const char *TINY = "# a small gpt\ngpt vocab=7 context=5 layers=2 heads=2 width=8 hidden=12\n";

static const int32_t TOK[10] = {1, 4, 4, 0, 6, 2, 2, 5, 3, 1};
static const int32_t TGT[10] = {4, 4, 0, 6, 2, 2, 5, 3, 1, 0};

/* Mean cross-entropy of the training forward over B sequences of T;
 * with_grad: the gradients too (zeroed first). */
static double lm_loss(mpcl_model *m, size_t B, size_t T, int with_grad)
{
    mpcl_context *ctx = mpcl_model_context(m);
    mpcl_tensor *logits, *loss, *labels, *dlogits = NULL;
    size_t n = B * T, one = 1, ds[2] = {n, 7};
    int32_t tgt[10];
    for (size_t b = 0; b < B; b++)
        memcpy(tgt + b * T, TGT + b * 5, T * sizeof *tgt);
    int32_t tok[10];
    for (size_t b = 0; b < B; b++)
        memcpy(tok + b * T, TOK + b * 5, T * sizeof *tok);
    ck_assert_int_eq(mpcl_tensor_create(ctx, MPCL_F32, 1, &one, MPCL_MEM_SCRATCH, &loss), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_create(ctx, MPCL_I32, 1, &n, MPCL_MEM_SCRATCH, &labels), MPCL_OK);
    ck_assert_int_eq(mpcl_tensor_write(labels, tgt, n * sizeof *tgt), MPCL_OK);
    if (with_grad)
        ck_assert_int_eq(mpcl_tensor_create(ctx, mpcl_storage_dtype(ctx), 2, ds, MPCL_MEM_SCRATCH,
                                            &dlogits),
                         MPCL_OK);
    ck_assert_int_eq(mpcl_model_zero_grad(m), MPCL_OK);
    mpcl_status s = mpcl_lm_forward(m, tok, B, T, 1, &logits);
    ck_assert_msg(s == MPCL_OK, "forward: %s", mpcl_last_error(ctx));
    s = mpcl_softmax_cross_entropy(ctx, loss, dlogits, logits, labels, 0.0f, 1.0f);
    ck_assert_msg(s == MPCL_OK, "loss: %s", mpcl_last_error(ctx));
    if (with_grad) {
        s = mpcl_lm_backward(m, dlogits);
        ck_assert_msg(s == MPCL_OK, "backward: %s", mpcl_last_error(ctx));
    }
    float l;
    ck_assert_int_eq(mpcl_tensor_download(loss, &l, 1), MPCL_OK);
    mpcl_tensor_destroy(loss);
    mpcl_tensor_destroy(labels);
    mpcl_tensor_destroy(dlogits);
    return l;
}

START_TEST(spec_and_parameters)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_model *m = optest_model(ctx, TINY, "tiny", 2, 0);
    const mpcl_model_spec *sp = mpcl_model_get_spec(m);
    ck_assert_int_eq(sp->kind, MPCL_MODEL_GPT);
    /* C 8, F 12, V 7, context 5: 7*8 + 5*8 + 2 * (16 + 192 + 24 + 64 + 8 + 16 + 96 + 12 + 96 + 8) + 16 */
    ck_assert_uint_eq(sp->params, 56 + 40 + 2 * 532 + 16);
    ck_assert_uint_eq(mpcl_model_param_count(m), sp->params);
    static const char *want[] = {
        "transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
        "transformer.h.0.ln_1.bias", "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_attn.bias", "transformer.h.0.attn.c_proj.weight",
        "transformer.h.0.attn.c_proj.bias", "transformer.h.0.ln_2.weight",
        "transformer.h.0.ln_2.bias", "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.0.mlp.c_fc.bias", "transformer.h.0.mlp.c_proj.weight",
        "transformer.h.0.mlp.c_proj.bias"};
    size_t shape0[] = {7, 5, 8, 8, 24, 24, 8, 8, 8, 8, 12, 12, 8, 8};
    mpcl_param_info pi;
    size_t total = 0, n = 0, align = mpcl_view_alignment(ctx, MPCL_F16);
    size_t last_matrix_end = 0, first_other = (size_t)-1;
    for (size_t i = 0; mpcl_model_param(m, i, &pi) == MPCL_OK; i++, n++) {
        if (i < sizeof want / sizeof want[0]) {
            ck_assert_str_eq(pi.name, want[i]);
            ck_assert_uint_eq(pi.shape[0], shape0[i]);
        }
        ck_assert_uint_eq(pi.offset % align, 0);
        ck_assert_ptr_null(pi.buffer);
        total += pi.numel;
        int matrix = strstr(pi.name, ".c_") && strstr(pi.name, ".weight");
        if (matrix && pi.offset + pi.numel > last_matrix_end)
            last_matrix_end = pi.offset + pi.numel;
        if (!matrix && pi.offset < first_other)
            first_other = pi.offset;
    }
    ck_assert_uint_eq(n, 2 + 2 * 12 + 2);
    ck_assert_uint_eq(total, sp->params);
    /* the decayed matrices come first, in one run */
    ck_assert_uint_le(last_matrix_end, first_other);
    /* the spec formats back to itself */
    char text[256];
    mpcl_model_spec_format(sp, text, sizeof text);
    ck_assert_str_eq(text, "gpt vocab=7 context=5 layers=2 heads=2 width=8 hidden=12\n");
    mpcl_model_destroy(m);
}
END_TEST

START_TEST(spec_errors)
{
    if (_i != 0)
        return; /* host code: once */
    struct {
        const char *text, *want;
    } bad[] = {
        {"gpt vocab=7 context=5 layers=2 heads=3 width=8\n", "width=8 is not a multiple of heads=3"},
        {"gpt vocab=7 context=5 layers=2 width=8\n", "heads= is missing"},
        {"gpt vocab=7 context=5 layers=2 heads=2 width=8 depth=3\n", "unknown option 'depth'"},
        {"gpt vocab=1 context=5 layers=2 heads=2 width=8\n", "vocab=1 must be an integer 2.."},
        {"gpt vocab=7 context=5x layers=2 heads=2 width=8\n", "context=5x"},
        {"gpt vocab=7 context=5 layers=2 heads=2 width=8 vocab=9\n", "vocab= given twice"},
        {"# c\ngpt vocab=7 context=5 layers=2 heads=2 width=8\nlinear out=3\n", "tiny:3:"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mpcl_model_spec spec;
        char err[256];
        ck_assert_int_eq(mpcl_model_spec_parse(bad[i].text, "tiny", &spec, err, sizeof err),
                         MPCL_ERR_FORMAT);
        ck_assert_msg(strstr(err, bad[i].want), "case %zu: '%s' lacks '%s'", i, err, bad[i].want);
    }
}
END_TEST

/* fp32: the gradient of every parameter tensor at three entries against
 * central differences of the loss; 16-bit modes: all gradients against
 * fp32's on the same weights. Full (T = 5) and shorter (T = 4) sequences. */
static void backward_case(int mi, size_t T)
{
    mpcl_context *ctx = optest_modes[mi].ctx;
    mpcl_model *m = optest_model(ctx, TINY, "tiny", 2, 0);
    optest_set_weights(m, 10, 0.5f);
    mpcl_tensor *master = mpcl_model_master(m);
    size_t p = mpcl_tensor_numel(master);
    lm_loss(m, 2, T, 1);
    float *g = optest_download(mpcl_model_grad(m));
    if (optest_modes[mi].mode == MPCL_PRECISION_FP32 && optest_small()) {
        /* under oclgrind (small runs) the point is the kernels' memory
         * accesses, which the backward pass above made; the finite
         * differences run on the real devices */
        for (size_t i = 0; i < p; i++)
            ck_assert_msg(isfinite(g[i]), "gradient %zu is %g", i, (double)g[i]);
    } else if (optest_modes[mi].mode == MPCL_PRECISION_FP32) {
        float *w = optest_download(master);
        mpcl_param_info pi;
        int checked = 0;
        for (size_t i = 0; mpcl_model_param(m, i, &pi) == MPCL_OK; i++)
            for (size_t j = 0; j < 3u && j < pi.numel; j++) {
                size_t k = pi.offset + (j * 5 + 1) % pi.numel;
                const float h = 1e-2f;
                float save = w[k];
                w[k] = save + h;
                ck_assert_int_eq(mpcl_tensor_upload(master, w, p), MPCL_OK);
                double lp = lm_loss(m, 2, T, 0);
                w[k] = save - h;
                ck_assert_int_eq(mpcl_tensor_upload(master, w, p), MPCL_OK);
                double lm = lm_loss(m, 2, T, 0);
                w[k] = save;
                ck_assert_int_eq(mpcl_tensor_upload(master, w, p), MPCL_OK);
                double fd = (lp - lm) / (2.0 * h);
                ck_assert_msg(fabs(fd - g[k]) <= 1e-3 + 3e-2 * fabs(fd),
                              "T %zu %s[%zu]: backward %.6g, finite difference %.6g", T, pi.name,
                              k - pi.offset, (double)g[k], fd);
                checked++;
            }
        ck_assert_int_ge(checked, 28 * 3);
        free(w);
    } else {
        mpcl_model *ref = optest_model(optest_modes[0].ctx, TINY, "tiny", 2, 0);
        optest_set_weights(ref, 10, 0.5f);
        /* the 16-bit run's weights as the device holds them, in fp32 too */
        float *w16 = optest_download(mpcl_model_working(m));
        ck_assert_int_eq(mpcl_tensor_upload(mpcl_model_master(ref), w16, p), MPCL_OK);
        lm_loss(ref, 2, T, 1);
        float *g32 = optest_download(mpcl_model_grad(ref));
        double gmax = 0, *want = malloc(p * sizeof *want);
        for (size_t i = 0; i < p; i++) {
            gmax = fmax(gmax, fabs(g32[i]));
            want[i] = g32[i];
        }
        char what[96];
        snprintf(what, sizeof what, "gpt gradients vs fp32 [%s] T %zu", optest_modes[mi].name, T);
        double u = optest_unit_roundoff(optest_modes[mi].mode);
        optest_assert_close(what, g, want, p, 40 * u * gmax, 40 * u);
        free(want);
        free(g32);
        free(w16);
        mpcl_model_destroy(ref);
    }
    free(g);
    mpcl_model_destroy(m);
}

START_TEST(backward_matches_finite_differences)
{
    backward_case(_i, 5);
    if (!optest_small())
        backward_case(_i, 4);
}
END_TEST

/* The logits of one forward pass over the whole sequences equal those of
 * decoding them: a prompt of 2 positions, then one position per call. */
START_TEST(decode_matches_forward)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_model *m = optest_model(ctx, TINY, "tiny", 2, 1);
    optest_set_weights(m, 20, 0.5f);
    mpcl_tensor *logits;
    mpcl_status s = mpcl_lm_forward(m, TOK, 2, 5, 0, &logits);
    ck_assert_msg(s == MPCL_OK, "forward: %s", mpcl_last_error(ctx));
    float *full = optest_download(logits); /* (10, 7) */
    double u = optest_unit_roundoff(optest_modes[_i].mode);
    double tol = optest_modes[_i].mode == MPCL_PRECISION_FP32 ? 1e-5 : 60 * u;
    size_t pos = 0;
    while (pos < 5) {
        size_t tq = pos == 0 ? 2 : 1;
        int32_t tok[4];
        for (size_t b = 0; b < 2; b++)
            memcpy(tok + b * tq, TOK + b * 5 + pos, tq * sizeof *tok);
        s = mpcl_lm_decode(m, tok, 2, tq, pos, &logits);
        ck_assert_msg(s == MPCL_OK, "decode at %zu: %s", pos, mpcl_last_error(ctx));
        float *part = optest_download(logits);
        for (size_t b = 0; b < 2; b++)
            for (size_t t = 0; t < tq; t++)
                for (size_t v = 0; v < 7; v++) {
                    double got = part[(b * tq + t) * 7 + v], want = full[(b * 5 + pos + t) * 7 + v];
                    ck_assert_msg(fabs(got - want) <= tol * (1 + fabs(want)),
                                  "[%s] logit (seq %zu, pos %zu, %zu): decode %.7g, forward %.7g",
                                  optest_modes[_i].name, b, pos + t, v, got, want);
                }
        free(part);
        pos += tq;
    }
    /* past the context, or continuing a different batch: refused */
    s = mpcl_lm_decode(m, TOK, 1, 1, 5, &logits);
    ck_assert_int_eq(s, MPCL_ERR_SHAPE);
    s = mpcl_lm_decode(m, TOK, 1, 1, 3, &logits);
    ck_assert_int_eq(s, MPCL_ERR_STATE);
    /* an inference model has no backward pass */
    ck_assert_int_eq(mpcl_lm_backward(m, logits), MPCL_ERR_STATE);
    free(full);
    mpcl_model_destroy(m);
}
END_TEST

/* AdamW through the trainer: one step with weight decay 0.1 and one
 * without, from the same weights and batch. The matrices of the blocks
 * differ by the decay, lr * wd * w; embeddings, biases and layer norms are
 * the same bits. */
START_TEST(adamw_spares_embeddings_biases_norms)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    float *after[2];
    float *before = NULL;
    const float lr = 0.01f, wd = 0.1f;
    mpcl_model *keep = NULL;
    for (int k = 0; k < 2; k++) {
        mpcl_model *m = optest_model(ctx, TINY, "tiny", 2, 0);
        optest_set_weights(m, 30, 0.5f);
        if (!before)
            before = optest_download(mpcl_model_master(m));
        mpcl_train_options o;
        mpcl_train_options_init(&o, optest_modes[_i].mode);
        mpcl_optimizer_options_init(&o.optimizer, MPCL_OPT_ADAMW);
        o.optimizer.lr = lr;
        o.optimizer.weight_decay = k ? wd : 0.0f;
        mpcl_trainer *t;
        ck_assert_int_eq(mpcl_trainer_create(m, &o, &t), MPCL_OK);
        mpcl_step_stats st;
        mpcl_status s = mpcl_trainer_step_lm(t, TOK, TGT, 2, 5, &st);
        ck_assert_msg(s == MPCL_OK, "step: %s", mpcl_last_error(ctx));
        ck_assert_msg(!st.skipped && isfinite(st.loss), "step skipped or loss %g", (double)st.loss);
        after[k] = optest_download(mpcl_model_master(m));
        mpcl_trainer_destroy(t);
        if (k == 0)
            keep = m;
        else
            mpcl_model_destroy(m);
    }
    mpcl_param_info pi;
    int decayed = 0, spared = 0;
    for (size_t i = 0; mpcl_model_param(keep, i, &pi) == MPCL_OK; i++) {
        int matrix = strstr(pi.name, ".c_") && strstr(pi.name, ".weight");
        for (size_t j = 0; j < pi.numel; j++) {
            size_t q = pi.offset + j;
            double diff = (double)after[0][q] - after[1][q], want = matrix ? lr * wd * before[q] : 0;
            if (matrix)
                ck_assert_msg(fabs(diff - want) <= 1e-6 + 1e-3 * fabs(want),
                              "%s[%zu]: decay moved it by %.9g, expected %.9g", pi.name, j, diff,
                              want);
            else
                ck_assert_msg(after[0][q] == after[1][q], "%s[%zu] was decayed: %.9g vs %.9g",
                              pi.name, j, (double)after[0][q], (double)after[1][q]);
            matrix ? decayed++ : spared++;
        }
    }
    ck_assert_int_gt(decayed, 0);
    ck_assert_int_gt(spared, 0);
    free(before);
    free(after[0]);
    free(after[1]);
    mpcl_model_destroy(keep);
}
END_TEST

/* Training memorises a fixed batch: the loss falls well below its start. */
START_TEST(training_lowers_the_loss)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_model *m = optest_model(ctx, TINY, "tiny", 2, 0);
    mpcl_train_options o;
    mpcl_train_options_init(&o, optest_modes[_i].mode);
    mpcl_optimizer_options_init(&o.optimizer, MPCL_OPT_ADAMW);
    o.optimizer.lr = 0.02f;
    mpcl_trainer *t;
    ck_assert_int_eq(mpcl_trainer_create(m, &o, &t), MPCL_OK);
    mpcl_step_stats st;
    float first = 0, last = 0;
    int steps = optest_small() ? 3 : 60; /* oclgrind: the launches, not the learning */
    for (int i = 0; i < steps; i++) {
        mpcl_status s = mpcl_trainer_step_lm(t, TOK, TGT, 2, 5, &st);
        ck_assert_msg(s == MPCL_OK, "step %d: %s", i, mpcl_last_error(ctx));
        if (i == 0)
            first = st.loss;
        last = st.loss;
    }
    ck_assert_msg(fabsf(first - logf(7.0f)) < 0.1f, "first loss %g, not near log 7", (double)first);
    if (steps == 60)
        ck_assert_msg(last < 0.5f * first, "loss %g after 60 steps from %g", (double)last,
                      (double)first);
    /* a target outside the vocabulary is refused, naming it */
    int32_t bad[10];
    memcpy(bad, TGT, sizeof bad);
    bad[7] = 7;
    ck_assert_int_eq(mpcl_trainer_step_lm(t, TOK, bad, 2, 5, &st), MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "sequence 1 (position 2)"), "%s", mpcl_last_error(ctx));
    /* and so is a token */
    ck_assert_int_eq(mpcl_trainer_step_lm(t, bad, TGT, 2, 5, &st), MPCL_ERR_ARGUMENT);
    /* the image step refuses a language model */
    uint8_t img[5] = {0}, lab[1] = {0};
    ck_assert_int_eq(mpcl_trainer_step(t, img, lab, 1, &st), MPCL_ERR_ARGUMENT);
    mpcl_trainer_destroy(t);
    mpcl_model_destroy(m);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("gpt");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"spec_and_parameters", spec_and_parameters},
        {"spec_errors", spec_errors},
        {"backward_matches_finite_differences", backward_matches_finite_differences},
        {"decode_matches_forward", decode_matches_forward},
        {"adamw_spares_embeddings_biases_norms", adamw_spares_embeddings_biases_norms},
        {"training_lowers_the_loss", training_lowers_the_loss},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 600);
        tcase_add_loop_test(tc, cases[i].fn, 0, optest_nmodes);
        suite_add_tcase(s, tc);
    }
    return optest_run(s);
}
