/* test_model.c — the sequential model's wiring: parameter layout and names,
 * and back-propagation through every layer kind checked against central
 * finite differences of the loss (fp32), and against the fp32 gradients in
 * the half-storage modes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

static const char *SPEC = "input 2x9x8\n"
                          "conv2d out=3 kernel=3 padding=1\n"
                          "batchnorm2d\n"
                          "tanh\n"
                          "maxpool2d kernel=2\n"      /* 3x4x4 */
                          "conv2d out=4 kernel=2\n"  /* 4x3x3 */
                          "gelu\n"
                          "avgpool2d kernel=2 stride=1\n" /* 4x2x2 */
                          "flatten\n"
                          "dropout p=0.25\n"
                          "linear out=6\n"
                          "sigmoid\n"
                          "linear out=5\n"
                          "leaky_relu slope=0.1\n";

#define B 3

typedef struct {
    mpcl_model *m;
    mpcl_tensor *x, *labels, *loss, *dlogits;
} rig;

/* A model of `text` at batch B, seed 7, with inputs uniform in [-2, 2] and
 * labels (1, 4, 0) mod the class count. */
static void rig_make_spec(mpcl_context *ctx, rig *r, const char *text)
{
    mpcl_model_spec spec;
    char err[256];
    ck_assert_msg(mpcl_model_spec_parse(text, "test", &spec, err, sizeof err) == MPCL_OK, "%s", err);
    ck_assert_msg(mpcl_model_create(ctx, &spec, B, 7, &r->m) == MPCL_OK, "%s", mpcl_last_error(ctx));
    size_t c = spec.input[0], h = spec.input[1], w = spec.input[2];
    size_t classes = spec.layers[spec.nlayers - 1].out_shape[0];
    float *x = malloc(B * c * h * w * sizeof *x), y[B] = {1, 4, 0};
    for (int i = 0; i < B; i++)
        y[i] = (float)((int)y[i] % (int)classes);
    optest_fill_uniform(x, B * c * h * w, 3, -2.0f, 2.0f);
    r->x = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, x, B, c, h, w);
    free(x);
    r->labels = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, y, B, 0, 0, 0);
    r->loss = optest_tensor(ctx, MPCL_F32, MPCL_MEM_SCRATCH, NULL, 1, 0, 0, 0);
    r->dlogits = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_GRADIENTS, NULL, B, classes, 0, 0);
}

static void rig_make(mpcl_context *ctx, rig *r) { rig_make_spec(ctx, r, SPEC); }

static void rig_free(rig *r)
{
    mpcl_model_destroy(r->m);
    mpcl_tensor_destroy(r->x);
    mpcl_tensor_destroy(r->labels);
    mpcl_tensor_destroy(r->loss);
    mpcl_tensor_destroy(r->dlogits);
}

/* loss of a training-mode forward at step 1 (same dropout mask every time) */
static double loss_at(mpcl_context *ctx, rig *r, int with_grad)
{
    mpcl_tensor *logits;
    ck_assert_int_eq(mpcl_model_zero_grad(r->m), MPCL_OK);
    ck_assert_msg(mpcl_model_forward(r->m, r->x, 1, 1, &logits) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(mpcl_softmax_cross_entropy(ctx, r->loss, with_grad ? r->dlogits : NULL, logits, r->labels,
                                             0.0f, 1.0f) == MPCL_OK,
                  "%s", mpcl_last_error(ctx));
    if (with_grad)
        ck_assert_msg(mpcl_model_backward(r->m, r->dlogits) == MPCL_OK, "%s", mpcl_last_error(ctx));
    float l;
    ck_assert_int_eq(mpcl_tensor_download(r->loss, &l, 1), MPCL_OK);
    return l;
}

START_TEST(parameters_named_like_pytorch)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    rig r;
    rig_make(ctx, &r);
    static const char *want[] = {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                 "1.running_var", "4.weight", "4.bias", "9.weight", "9.bias",
                                 "11.weight", "11.bias"};
    size_t numel[] = {3 * 2 * 9, 3, 3, 3, 3, 3, 4 * 3 * 4, 4, 6 * 16, 6, 5 * 6, 5};
    mpcl_param_info pi;
    size_t total = 0, align = mpcl_view_alignment(ctx, MPCL_F16);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ck_assert_int_eq(mpcl_model_param(r.m, i, &pi), MPCL_OK);
        ck_assert_str_eq(pi.name, want[i]);
        ck_assert_uint_eq(pi.numel, numel[i]);
        if (pi.buffer == NULL) {
            ck_assert_uint_eq(pi.offset % align, 0);
            total += pi.numel;
        }
    }
    ck_assert_int_ne(mpcl_model_param(r.m, 12, &pi), MPCL_OK);
    ck_assert_uint_eq(total, mpcl_model_param_count(r.m));
    rig_free(&r);
}
END_TEST

/* Back-propagation through `text`: central differences of the loss in
 * fp32 at two parameters of every tensor; the fp32 gradients in the other
 * modes. */
static void check_backward(int mode, const char *text)
{
    int _i = mode;
    mpcl_context *ctx = optest_modes[_i].ctx;
    /* one convolution algorithm, unmeasured: the test is about the wiring,
     * and a cold cache would measure every geometry (the suite's time) */
    ck_assert_int_eq(mpcl_conv_configure(ctx, "im2col", NULL, MPCL_CONV_KEEP), MPCL_OK);
    ck_assert_int_eq(mpcl_conv_configure(optest_modes[0].ctx, "im2col", NULL, MPCL_CONV_KEEP), MPCL_OK);
    rig r;
    rig_make_spec(ctx, &r, text);
    mpcl_tensor *master = mpcl_model_master(r.m), *grad = mpcl_model_grad(r.m);
    size_t p = mpcl_tensor_numel(master);
    loss_at(ctx, &r, 1);
    float *g = optest_download(grad);
    float *w = optest_download(master);
    if (optest_modes[_i].mode == MPCL_PRECISION_FP32) {
        /* central differences in fp32 at 16 parameters of every layer kind */
        mpcl_param_info pi;
        int checked = 0;
        for (size_t i = 0; mpcl_model_param(r.m, i, &pi) == MPCL_OK; i++) {
            if (pi.buffer)
                continue;
            /* two entries of every tensor; one under oclgrind (small
             * runs), where the point is the kernels' memory accesses */
            for (size_t j = 0; j < pi.numel && j < (optest_small() ? 1u : 2u); j++) {
                size_t k = pi.offset + (j * 7) % pi.numel;
                const float h = 1e-2f;
                float save = w[k];
                w[k] = save + h;
                ck_assert_int_eq(mpcl_tensor_upload(master, w, p), MPCL_OK);
                double lp = loss_at(ctx, &r, 0);
                w[k] = save - h;
                ck_assert_int_eq(mpcl_tensor_upload(master, w, p), MPCL_OK);
                double lm = loss_at(ctx, &r, 0);
                w[k] = save;
                double fd = (lp - lm) / (2.0 * h);
                ck_assert_msg(fabs(fd - g[k]) <= 2e-3 + 3e-2 * fabs(fd), "%s[%zu]: backward %.6g, finite difference %.6g",
                              pi.name, (j * 7) % pi.numel, (double)g[k], fd);
                checked++;
            }
        }
        ck_assert_int_ge(checked, optest_small() ? 5 : 10);
    } else {
        /* the same model and data in fp32 (the harness's first mode) */
        rig ref;
        rig_make_spec(optest_modes[0].ctx, &ref, text);
        loss_at(optest_modes[0].ctx, &ref, 1);
        float *g32 = optest_download(mpcl_model_grad(ref.m));
        double gmax = 0;
        for (size_t i = 0; i < p; i++)
            gmax = fmax(gmax, fabs(g32[i]));
        double *want = malloc(p * sizeof *want);
        for (size_t i = 0; i < p; i++)
            want[i] = g32[i];
        /* half inputs, activations and gradients through 12 layers */
        optest_assert_close("gradients vs fp32", g, want, p, 3e-2 * gmax, 5e-2);
        free(want);
        free(g32);
        rig_free(&ref);
    }
    free(g);
    free(w);
    rig_free(&r);
    ck_assert_int_eq(mpcl_conv_configure(ctx, "auto", NULL, MPCL_CONV_KEEP), MPCL_OK);
    ck_assert_int_eq(mpcl_conv_configure(optest_modes[0].ctx, "auto", NULL, MPCL_CONV_KEEP), MPCL_OK);
}

START_TEST(backward_matches_finite_differences) { check_backward(_i, SPEC); }
END_TEST

/* A graph: a fork (the stem feeds three readers), a residual add, a
 * concat of the input and a branch, a strided 1x1 convolution, batch norm
 * and global average pooling. */
static const char *GRAPH_SPEC = "input 2x6x6\n"
                                "stem: conv2d out=3 kernel=3 padding=1\n"
                                "batchnorm2d\n"
                                "relu\n"
                                "conv2d out=3 kernel=3 padding=1\n"
                                "r: add from=stem\n"
                                "cat: concat from=r,input\n"            /* 5x6x6 */
                                "tanh\n"
                                "a: conv2d out=4 kernel=3 stride=2 padding=1\n" /* 4x3x3 */
                                "conv2d from=stem out=4 kernel=1 stride=2\n"
                                "add from=a\n"
                                "global_avgpool\n"
                                "flatten\n"
                                "linear out=5\n";

START_TEST(graph_backward_matches_finite_differences) { check_backward(_i, GRAPH_SPEC); }
END_TEST

/* A flatten that is not its input's last reader (so it has a gradient
 * buffer of its own, added into its input's), a concat of flat features,
 * dropout and max-pooling on a branch. */
static const char *FLAT_SPEC = "input 2x6x6\n"
                               "a: conv2d out=2 kernel=3 padding=1\n"
                               "flatten\n"
                               "f: linear out=3\n"
                               "maxpool2d from=a kernel=2\n"
                               "dropout p=0.25\n"
                               "global_avgpool\n"
                               "flatten\n"
                               "concat from=f\n"
                               "linear out=4\n";

START_TEST(flat_graph_backward_matches_finite_differences) { check_backward(_i, FLAT_SPEC); }
END_TEST

START_TEST(bad_arguments)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    rig r;
    rig_make(ctx, &r);
    mpcl_tensor *logits = NULL;
    float x[4 * 2 * 9 * 8] = {0};
    mpcl_tensor *big = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, x, 4, 2, 9, 8);
    ck_assert_int_eq(mpcl_model_forward(r.m, big, 1, 1, &logits), MPCL_ERR_SHAPE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "max_batch 3"), "%s", mpcl_last_error(ctx));
    mpcl_tensor *wrong = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, x, 2, 2, 8, 9);
    ck_assert_int_eq(mpcl_model_forward(r.m, wrong, 1, 1, &logits), MPCL_ERR_SHAPE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "(2, 2, 8, 9)") && strstr(mpcl_last_error(ctx), "(*, 2, 9, 8)"),
                  "%s", mpcl_last_error(ctx));
    mpcl_model *fresh;
    mpcl_model_spec spec;
    ck_assert_int_eq(mpcl_model_spec_parse(SPEC, "t", &spec, NULL, 0), MPCL_OK);
    ck_assert_int_eq(mpcl_model_create(ctx, &spec, 2, 1, &fresh), MPCL_OK);
    ck_assert_int_eq(mpcl_model_backward(fresh, r.dlogits), MPCL_ERR_STATE);
    mpcl_model_destroy(fresh);
    mpcl_tensor_destroy(big);
    mpcl_tensor_destroy(wrong);
    rig_free(&r);
}
END_TEST

/* The precision report (mpcl_precision_report_*): FP32 contexts only; on
 * one, every tensor is there, the weights are the master copy, the last
 * layer's output gradient is (softmax - onehot) / B as the host computes it
 * in double from the report's own logits, gradients at the loss scale are
 * the same histogram shifted by log2 of the scale, and a second batch
 * doubles the counts. */
START_TEST(precision_report)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_model_spec spec;
    ck_assert_int_eq(mpcl_model_spec_parse(SPEC, "t", &spec, NULL, 0), MPCL_OK);
    mpcl_model *m;
    ck_assert_msg(mpcl_model_create(ctx, &spec, B, 7, &m) == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_precision_report *r = NULL;
    if (optest_modes[_i].mode != MPCL_PRECISION_FP32) {
        ck_assert_int_eq(mpcl_precision_report_create(m, 1024.0f, &r), MPCL_ERR_ARGUMENT);
        ck_assert_msg(strstr(mpcl_last_error(ctx), "fp32"), "%s", mpcl_last_error(ctx));
        ck_assert_ptr_null(r);
        mpcl_model_destroy(m);
        return;
    }
    ck_assert_int_eq(mpcl_precision_report_create(m, 0.0f, &r), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_precision_report_create(m, 1024.0f, &r), MPCL_OK);
    uint8_t img[B * 2 * 9 * 8], lab[B] = {1, 4, 0}, bad[B] = {1, 5, 0};
    for (size_t i = 0; i < sizeof img; i++)
        img[i] = (uint8_t)(i * 37 % 256);
    ck_assert_int_eq(mpcl_precision_report_add_batch(r, img, bad, B), MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "batch 1") && strstr(mpcl_last_error(ctx), "label 5"), "%s",
                  mpcl_last_error(ctx));
    ck_assert_int_eq(mpcl_precision_report_add_batch(r, img, lab, B + 1), MPCL_ERR_SHAPE);
    ck_assert_msg(mpcl_precision_report_add_batch(r, img, lab, B) == MPCL_OK, "%s", mpcl_last_error(ctx));
    size_t n = mpcl_precision_report_count(r), nparam = 0, nact = 0, ngrad = 0, nwgrad = 0;
    mpcl_param_info pi;
    while (mpcl_model_param(m, nparam, &pi) == MPCL_OK)
        nparam++;
    float *master = optest_download(mpcl_model_master(m));
    const mpcl_precision_tensor *logits = NULL, *dlogits = NULL;
    size_t ilogits = 0, idlogits = 0;
    for (size_t i = 0; i < n; i++) {
        const mpcl_precision_tensor *t = mpcl_precision_report_tensor(r, i);
        size_t nv;
        const float *v = mpcl_precision_report_values(r, i, &nv);
        ck_assert_uint_eq(nv, t->v.count);
        switch (t->role) {
        case MPCL_ROLE_WEIGHT:
            for (size_t k = 0; mpcl_model_param(m, k, &pi) == MPCL_OK; k++)
                if (strcmp(pi.name, t->name) == 0)
                    for (size_t j = 0; j < nv; j++)
                        ck_assert_msg(v[j] == master[pi.offset + j], "%s[%zu] %.9g, master %.9g", t->name, j,
                                      (double)v[j], (double)master[pi.offset + j]);
            ck_assert_uint_eq(t->scaled.count, 0);
            break;
        case MPCL_ROLE_ACTIVATION:
            nact++;
            if (t->layer == spec.nlayers - 1) {
                logits = t;
                ilogits = i;
            }
            break;
        case MPCL_ROLE_ACTIVATION_GRADIENT:
            ngrad++;
            if (t->layer == spec.nlayers - 1) {
                dlogits = t;
                idlogits = i;
            }
            /* fall through */
        case MPCL_ROLE_WEIGHT_GRADIENT:
            nwgrad += t->role == MPCL_ROLE_WEIGHT_GRADIENT;
            ck_assert_uint_eq(t->scaled.count, t->v.count);
            for (int b = 0; b + 10 < MPCL_EXP_BINS; b++)
                ck_assert_msg(t->v.exponents[b] == t->scaled.exponents[b + 10], "%s: exponent bin %d",
                              t->name, b + MPCL_EXP_MIN);
            break;
        }
    }
    /* running statistics are not weights; flatten is not an output; the
     * batch norm (not fused here: tanh follows) is */
    size_t running = 2;
    ck_assert_uint_eq(n, 2 * (nparam - running) + nact + ngrad);
    ck_assert_uint_eq(nwgrad, nparam - running);
    ck_assert_uint_eq(nact, (size_t)spec.nlayers - 1);
    ck_assert_ptr_nonnull(logits);
    ck_assert_ptr_nonnull(dlogits);
    size_t C = spec.layers[spec.nlayers - 1].out_shape[0], nl, nd;
    const float *lg = mpcl_precision_report_values(r, ilogits, &nl);
    const float *dl = mpcl_precision_report_values(r, idlogits, &nd);
    ck_assert_uint_eq(nl, B * C);
    ck_assert_uint_eq(nd, B * C);
    for (size_t b = 0; b < B; b++) {
        double mx = -INFINITY, sum = 0;
        for (size_t c = 0; c < C; c++)
            mx = fmax(mx, lg[b * C + c]);
        for (size_t c = 0; c < C; c++)
            sum += exp(lg[b * C + c] - mx);
        for (size_t c = 0; c < C; c++) {
            double want = (exp(lg[b * C + c] - mx) / sum - (c == lab[b])) / B;
            ck_assert_msg(fabs(dl[b * C + c] - want) <= 1e-6 * fabs(want) + 1e-8, "dlogits[%zu][%zu] %.9g, host %.9g",
                          b, c, (double)dl[b * C + c], want);
        }
    }
    uint64_t before = logits->v.count;
    ck_assert_int_eq(mpcl_precision_report_add_batch(r, img, lab, B), MPCL_OK);
    ck_assert_uint_eq(mpcl_precision_report_batches(r), 2);
    ck_assert_uint_eq(mpcl_precision_report_tensor(r, ilogits)->v.count, 2 * before);
    mpcl_precision_advice ad;
    mpcl_precision_report_advice(r, &ad);
    ck_assert(ad.scale_min <= ad.scale_max);
    ck_assert_int_eq(ad.recommend, MPCL_PRECISION_FP16_STORAGE);
    free(master);
    mpcl_precision_report_destroy(r);
    mpcl_model_options mo;
    mpcl_model_options_init(&mo);
    mo.max_batch = B;
    mo.inference = 1;
    mpcl_model *inf;
    ck_assert_int_eq(mpcl_model_create_with(ctx, &spec, &mo, &inf), MPCL_OK);
    ck_assert_int_eq(mpcl_precision_report_create(inf, 1.0f, &r), MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "inference"), "%s", mpcl_last_error(ctx));
    mpcl_model_destroy(inf);
    mpcl_model_destroy(m);
}
END_TEST

/* PyTorch's default initialisation: uniform in +-1/sqrt(fan_in), the same
 * values for the same seed, other values for another seed. */
START_TEST(initialisation)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_model_spec spec;
    ck_assert_int_eq(mpcl_model_spec_parse("input 1x28x28\nflatten\nlinear out=300\nlinear out=10\n", "t", &spec,
                                           NULL, 0),
                     MPCL_OK);
    mpcl_model *a, *b, *c;
    ck_assert_int_eq(mpcl_model_create(ctx, &spec, 1, 42, &a), MPCL_OK);
    ck_assert_int_eq(mpcl_model_create(ctx, &spec, 1, 42, &b), MPCL_OK);
    ck_assert_int_eq(mpcl_model_create(ctx, &spec, 1, 43, &c), MPCL_OK);
    float *wa = optest_download(mpcl_model_master(a)), *wb = optest_download(mpcl_model_master(b));
    float *wc = optest_download(mpcl_model_master(c));
    size_t p = mpcl_tensor_numel(mpcl_model_master(a));
    ck_assert(memcmp(wa, wb, p * 4) == 0);
    ck_assert(memcmp(wa, wc, p * 4) != 0);
    mpcl_param_info pi;
    ck_assert_int_eq(mpcl_model_param(a, 0, &pi), MPCL_OK); /* 1.weight (300, 784) */
    double bound = 1.0 / sqrt(784.0), mx = 0, sum2 = 0;
    for (size_t i = 0; i < pi.numel; i++) {
        double v = wa[pi.offset + i];
        mx = fmax(mx, fabs(v));
        sum2 += v * v;
    }
    ck_assert(mx <= bound);
    ck_assert(mx > 0.99 * bound);
    /* uniform(-b, b) has variance b^2 / 3 */
    double var = sum2 / (double)pi.numel;
    ck_assert_msg(fabs(var - bound * bound / 3) < 0.02 * bound * bound / 3, "variance %g", var);
    free(wa);
    free(wb);
    free(wc);
    mpcl_model_destroy(a);
    mpcl_model_destroy(b);
    mpcl_model_destroy(c);
}
END_TEST

/* batchnorm2d + relu, fused by default (mpcl_batchnorm2d_relu_*), against
 * the same model built with fuse 0 (batch norm and ReLU as two ops,
 * each tested on its own): the training logits, every gradient and the
 * eval logits (running statistics) the same bits. */
static const char *FUSE_SPEC = "input 3x8x8\n"
                               "conv2d out=4 kernel=3 padding=1\n"
                               "batchnorm2d\n"
                               "relu\n"
                               "maxpool2d kernel=2\n"
                               "conv2d out=5 kernel=3 padding=1\n"
                               "batchnorm2d\n"
                               "relu\n"
                               "flatten\n"
                               "linear out=4\n";

/* One training step of `text` (input 3x8x8, 4 classes) built with
 * options fuse / reuse: the training logits, the gradients and the eval
 * logits after it. */
static void fuse_run(mpcl_context *ctx, const char *text, int fuse, int reuse, float **logits_out,
                     float **grad_out, float **eval_out, size_t *nlogits, size_t *ngrad)
{
    mpcl_model_spec spec;
    char err[256];
    ck_assert_msg(mpcl_model_spec_parse(text, "fuse", &spec, err, sizeof err) == MPCL_OK, "%s", err);
    mpcl_model_options o;
    mpcl_model_options_init(&o);
    o.max_batch = 4;
    o.seed = 11;
    o.fuse = fuse;
    o.reuse_memory = reuse;
    mpcl_model *m = NULL;
    mpcl_status s = mpcl_model_create_with(ctx, &spec, &o, &m);
    ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
    float x[4 * 3 * 8 * 8], lab[4] = {0, 3, 1, 2};
    optest_fill_uniform(x, sizeof x / sizeof x[0], 5, -2.0f, 2.0f);
    mpcl_tensor *tx = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, x, 4, 3, 8, 8);
    mpcl_tensor *tl = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, lab, 4, 0, 0, 0);
    mpcl_tensor *loss = optest_tensor(ctx, MPCL_F32, MPCL_MEM_SCRATCH, NULL, 1, 0, 0, 0);
    mpcl_tensor *dl = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_GRADIENTS, NULL, 4, 4, 0, 0);
    mpcl_tensor *logits = NULL;
    ck_assert_int_eq(mpcl_model_zero_grad(m), MPCL_OK);
    ck_assert_msg(mpcl_model_forward(m, tx, 1, 1, &logits) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_int_eq(mpcl_softmax_cross_entropy(ctx, loss, dl, logits, tl, 0.0f, 1.0f), MPCL_OK);
    ck_assert_msg(mpcl_model_backward(m, dl) == MPCL_OK, "%s", mpcl_last_error(ctx));
    *nlogits = mpcl_tensor_numel(logits);
    *ngrad = mpcl_tensor_numel(mpcl_model_grad(m));
    *logits_out = optest_download(logits);
    *grad_out = optest_download(mpcl_model_grad(m));
    ck_assert_msg(mpcl_model_forward(m, tx, 0, 2, &logits) == MPCL_OK, "%s", mpcl_last_error(ctx));
    *eval_out = optest_download(logits);
    mpcl_tensor_destroy(tx);
    mpcl_tensor_destroy(tl);
    mpcl_tensor_destroy(loss);
    mpcl_tensor_destroy(dl);
    mpcl_model_destroy(m);
}

START_TEST(fused_batchnorm_relu)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    float *lf, *gf, *ef, *lu, *gu, *eu;
    size_t nl, ng, nl2, ng2;
    /* one convolution algorithm, unmeasured (the suite's time): both runs
     * take the same path through the convolutions */
    ck_assert_int_eq(mpcl_conv_configure(ctx, "im2col", NULL, MPCL_CONV_KEEP), MPCL_OK);
    fuse_run(ctx, FUSE_SPEC, 1, 1, &lf, &gf, &ef, &nl, &ng);
    fuse_run(ctx, FUSE_SPEC, 0, 1, &lu, &gu, &eu, &nl2, &ng2);
    ck_assert_int_eq(mpcl_conv_configure(ctx, "auto", NULL, MPCL_CONV_KEEP), MPCL_OK);
    ck_assert_uint_eq(nl, nl2);
    ck_assert_uint_eq(ng, ng2);
    size_t nonzero = 0;
    for (size_t i = 0; i < ng; i++)
        nonzero += gu[i] != 0.0f;
    ck_assert_msg(nonzero > ng / 2, "only %zu of %zu gradients are non-zero", nonzero, ng);
    ck_assert_msg(memcmp(lf, lu, nl * sizeof *lf) == 0, "[%s] fused logits differ",
                  optest_modes[_i].name);
    ck_assert_msg(memcmp(ef, eu, nl * sizeof *ef) == 0, "[%s] fused eval logits differ",
                  optest_modes[_i].name);
    for (size_t i = 0; i < ng; i++)
        ck_assert_msg(memcmp(&gf[i], &gu[i], sizeof gf[i]) == 0,
                      "[%s] gradient %zu: fused %.9g, unfused %.9g", optest_modes[_i].name, i,
                      (double)gf[i], (double)gu[i]);
    free(lf); free(gf); free(ef); free(lu); free(gu); free(eu);
}
END_TEST

/* concat(conv_a(x), conv_b(x)) is one convolution with a's and b's
 * filters stacked: the graph (whose input gradient sums the two branches'
 * contributions at the fork) against that sequential model given the same
 * weights: logits, every gradient and eval logits. */
static const char *FORK_SPEC = "input 3x8x8\n"
                               "x: relu\n"
                               "a: conv2d out=2 kernel=3 padding=1\n"
                               "b: conv2d from=x out=3 kernel=3 padding=1\n"
                               "concat from=a,b\n"
                               "batchnorm2d\n"
                               "relu\n"
                               "conv2d out=4 kernel=3 stride=2\n"
                               "flatten\n"
                               "linear out=4\n";
/* a relu first, so that the input has a gradient to fork */
static const char *STACKED_SPEC = "input 3x8x8\n"
                                  "relu\n"
                                  "conv2d out=5 kernel=3 padding=1\n"
                                  "batchnorm2d\n"
                                  "relu\n"
                                  "conv2d out=4 kernel=3 stride=2\n"
                                  "flatten\n"
                                  "linear out=4\n";

/* Copies the graph's master weights into the stacked model's: parameter
 * j of the graph goes to stacked parameter map[j], at element offset
 * at[j] within it (a's and b's filters and biases stacked). */
static void copy_stacked(mpcl_context *ctx, mpcl_model *g, mpcl_model *q)
{
    /* graph params: 1.weight (2,3,3,3) 1.bias (2) 2.weight (3,3,3,3) 2.bias (3) 4.* bn 6.* 8.*;
     * stacked: 1.weight (5,3,3,3) 1.bias (5) 2.* bn 4.* 6.* */
    float *wg = optest_download(mpcl_model_master(g)), *wq = optest_download(mpcl_model_master(q));
    size_t pq = mpcl_tensor_numel(mpcl_model_master(q));
    mpcl_param_info a, b;
    size_t gi, qi;
    /* the stacked convolution */
    mpcl_param_info qw, qb, gw2, gb2;
    ck_assert_int_eq(mpcl_model_param(g, 0, &a), MPCL_OK);
    ck_assert_int_eq(mpcl_model_param(g, 1, &b), MPCL_OK);
    ck_assert_int_eq(mpcl_model_param(g, 2, &gw2), MPCL_OK);
    ck_assert_int_eq(mpcl_model_param(g, 3, &gb2), MPCL_OK);
    ck_assert_int_eq(mpcl_model_param(q, 0, &qw), MPCL_OK);
    ck_assert_int_eq(mpcl_model_param(q, 1, &qb), MPCL_OK);
    ck_assert_uint_eq(qw.numel, a.numel + gw2.numel);
    memcpy(wq + qw.offset, wg + a.offset, a.numel * 4);
    memcpy(wq + qw.offset + a.numel, wg + gw2.offset, gw2.numel * 4);
    memcpy(wq + qb.offset, wg + b.offset, b.numel * 4);
    memcpy(wq + qb.offset + b.numel, wg + gb2.offset, gb2.numel * 4);
    /* the rest, one to one */
    for (gi = 4, qi = 2; mpcl_model_param(g, gi, &a) == MPCL_OK; gi++, qi++) {
        ck_assert_int_eq(mpcl_model_param(q, qi, &b), MPCL_OK);
        ck_assert_uint_eq(a.numel, b.numel);
        if (!a.buffer)
            memcpy(wq + b.offset, wg + a.offset, a.numel * 4);
    }
    ck_assert_int_eq(mpcl_tensor_upload(mpcl_model_master(q), wq, pq), MPCL_OK);
    if (mpcl_model_working(q) != mpcl_model_master(q))
        ck_assert_int_eq(mpcl_refresh_working(ctx, mpcl_model_working(q), mpcl_model_master(q)), MPCL_OK);
    free(wg);
    free(wq);
}

START_TEST(graph_matches_sequential_equivalent)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    int fp32 = optest_modes[_i].mode == MPCL_PRECISION_FP32;
    ck_assert_int_eq(mpcl_conv_configure(ctx, "im2col", NULL, MPCL_CONV_KEEP), MPCL_OK);
    rig g, q;
    rig_make_spec(ctx, &g, FORK_SPEC);
    rig_make_spec(ctx, &q, STACKED_SPEC);
    copy_stacked(ctx, g.m, q.m);
    double lg = loss_at(ctx, &g, 1), lq = loss_at(ctx, &q, 1);
    ck_assert_msg(fabs(lg - lq) <= (fp32 ? 1e-5 : 2e-3) * fabs(lq), "[%s] loss: graph %.9g, stacked %.9g",
                  optest_modes[_i].name, lg, lq);
    float *gg = optest_download(mpcl_model_grad(g.m)), *gq = optest_download(mpcl_model_grad(q.m));
    /* map the gradients as the weights were mapped, then compare */
    size_t pq = mpcl_tensor_numel(mpcl_model_grad(q.m));
    double *want = calloc(pq, sizeof *want);
    float *got = calloc(pq, sizeof *got);
    mpcl_param_info a, b, w2, b2, qw, qb;
    mpcl_model_param(g.m, 0, &a);
    mpcl_model_param(g.m, 1, &b);
    mpcl_model_param(g.m, 2, &w2);
    mpcl_model_param(g.m, 3, &b2);
    mpcl_model_param(q.m, 0, &qw);
    mpcl_model_param(q.m, 1, &qb);
    for (size_t i = 0; i < a.numel; i++)
        got[qw.offset + i] = gg[a.offset + i];
    for (size_t i = 0; i < w2.numel; i++)
        got[qw.offset + a.numel + i] = gg[w2.offset + i];
    for (size_t i = 0; i < b.numel; i++)
        got[qb.offset + i] = gg[b.offset + i];
    for (size_t i = 0; i < b2.numel; i++)
        got[qb.offset + b.numel + i] = gg[b2.offset + i];
    for (size_t gi = 4, qi = 2; mpcl_model_param(g.m, gi, &a) == MPCL_OK; gi++, qi++) {
        mpcl_model_param(q.m, qi, &b);
        if (!a.buffer)
            for (size_t i = 0; i < a.numel; i++)
                got[b.offset + i] = gg[a.offset + i];
    }
    double gmax = 0;
    for (size_t i = 0; i < pq; i++) {
        want[i] = gq[i];
        gmax = fmax(gmax, fabs(gq[i]));
    }
    ck_assert(gmax > 0);
    optest_assert_close("graph gradients vs stacked", got, want, pq, (fp32 ? 1e-5 : 1e-2) * gmax,
                        fp32 ? 1e-4 : 2e-2);
    free(want);
    free(got);
    free(gg);
    free(gq);
    rig_free(&g);
    rig_free(&q);
    ck_assert_int_eq(mpcl_conv_configure(ctx, "auto", NULL, MPCL_CONV_KEEP), MPCL_OK);
}
END_TEST

/* Activation memory: the planned buffer against one buffer per tensor
 * (the same bits in every result: no tensor is overwritten while it is
 * still read), and an inference plan smaller again, which refuses a
 * backward pass. */
START_TEST(memory_plan)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    float *l1, *g1, *e1, *l0, *g0, *e0;
    size_t nl, ng, nl0, ng0;
    ck_assert_int_eq(mpcl_conv_configure(ctx, "im2col", NULL, MPCL_CONV_KEEP), MPCL_OK);
    fuse_run(ctx, FORK_SPEC, 1, 1, &l1, &g1, &e1, &nl, &ng);
    fuse_run(ctx, FORK_SPEC, 1, 0, &l0, &g0, &e0, &nl0, &ng0);
    ck_assert(memcmp(l1, l0, nl * sizeof *l1) == 0);
    ck_assert(memcmp(g1, g0, ng * sizeof *g1) == 0);
    ck_assert(memcmp(e1, e0, nl * sizeof *e1) == 0);
    free(l1); free(g1); free(e1); free(l0); free(g0); free(e0);

    mpcl_model_spec spec;
    ck_assert_int_eq(mpcl_model_spec_parse(GRAPH_SPEC, "t", &spec, NULL, 0), MPCL_OK);
    mpcl_model_options o;
    mpcl_model_options_init(&o);
    o.max_batch = 16;
    mpcl_model *train, *unshared, *infer;
    ck_assert_int_eq(mpcl_model_create_with(ctx, &spec, &o, &train), MPCL_OK);
    o.reuse_memory = 0;
    ck_assert_int_eq(mpcl_model_create_with(ctx, &spec, &o, &unshared), MPCL_OK);
    o.reuse_memory = 1;
    o.inference = 1;
    ck_assert_int_eq(mpcl_model_create_with(ctx, &spec, &o, &infer), MPCL_OK);
    mpcl_model_memory mt, mu, mi;
    mpcl_model_memory_info(train, &mt);
    mpcl_model_memory_info(unshared, &mu);
    mpcl_model_memory_info(infer, &mi);
    /* every layer output but the flatten's (a view) and the fused batch
     * norm's, and as many gradients: sizes in the storage dtype */
    size_t es = mpcl_dtype_size(mpcl_storage_dtype(ctx));
    size_t per_sample = 3 * 36 * 3 /* stem, relu, conv */ + 3 * 36 /* r */ + 5 * 36 * 2 /* cat, tanh */ +
                        4 * 9 * 3 /* a, 1x1, add */ + 4 /* gap */ + 5;
    ck_assert_uint_ge(mu.activations_unshared, 2 * 16 * per_sample * es);
    ck_assert_uint_eq(mu.activations, mu.activations_unshared);
    ck_assert_uint_eq(mt.activations_unshared, mu.activations_unshared);
    ck_assert_msg(mt.activations < mt.activations_unshared * 3 / 4, "planned %llu of %llu bytes",
                  (unsigned long long)mt.activations, (unsigned long long)mt.activations_unshared);
    ck_assert_uint_lt(mi.activations, mt.activations);
    /* inference: outputs only; two buffers' worth is enough for this chain */
    ck_assert_uint_le(mi.activations, 3 * 16 * (5 * 36 + 3 * 36) * es + 4096 * es);
    float x[16 * 2 * 6 * 6] = {0};
    mpcl_tensor *tx = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, x, 16, 2, 6, 6);
    mpcl_tensor *logits = NULL;
    ck_assert_msg(mpcl_model_forward(infer, tx, 0, 1, &logits) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_int_eq(mpcl_model_backward(infer, logits), MPCL_ERR_STATE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "inference"), "%s", mpcl_last_error(ctx));
    mpcl_tensor_destroy(tx);
    mpcl_model_destroy(train);
    mpcl_model_destroy(unshared);
    mpcl_model_destroy(infer);
    ck_assert_int_eq(mpcl_conv_configure(ctx, "auto", NULL, MPCL_CONV_KEEP), MPCL_OK);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_add_loop_test(tc, parameters_named_like_pytorch, 0, optest_nmodes);
    tcase_add_loop_test(tc, backward_matches_finite_differences, 0, optest_nmodes);
    tcase_add_loop_test(tc, bad_arguments, 0, optest_nmodes);
    tcase_add_loop_test(tc, precision_report, 0, optest_nmodes);
    tcase_add_loop_test(tc, initialisation, 0, optest_nmodes);
    tcase_add_loop_test(tc, fused_batchnorm_relu, 0, optest_nmodes);
    tcase_add_loop_test(tc, graph_backward_matches_finite_differences, 0, optest_nmodes);
    tcase_add_loop_test(tc, flat_graph_backward_matches_finite_differences, 0, optest_nmodes);
    tcase_add_loop_test(tc, graph_matches_sequential_equivalent, 0, optest_nmodes);
    tcase_add_loop_test(tc, memory_plan, 0, optest_nmodes);
    suite_add_tcase(s, tc);
    return optest_run(s);
}
