/* test_spec.c — the text model spec: the shipped models parse to the shapes
 * and parameter counts computed by hand here, and every mistake names
 * file:line and what was expected. Host only. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *models_dir(void)
{
    const char *d = getenv("MPCL_TEST_MODELS_DIR");
    return d ? d : "data/models";
}

static void load(const char *name, mpcl_model_spec *m)
{
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/%s", models_dir(), name);
    mpcl_status s = mpcl_model_spec_load(path, m, err, sizeof err);
    ck_assert_msg(s == MPCL_OK, "%s", err);
}

START_TEST(seed_cnn)
{
    mpcl_model_spec m;
    load("seed-cnn.txt", &m);
    ck_assert_int_eq(m.nlayers, 7);
    ck_assert_int_eq(m.layers[0].kind, MPCL_LAYER_CONV2D);
    ck_assert_uint_eq(m.layers[0].out_shape[0], 10);
    ck_assert_uint_eq(m.layers[0].out_shape[1], 24); /* 28 - 5 + 1 */
    ck_assert_uint_eq(m.layers[2].out_shape[1], 12); /* max-pool 2 */
    ck_assert_uint_eq(m.layers[3].out_shape[0], 1440);
    ck_assert_uint_eq(m.layers[4].in, 1440);
    /* conv 10*1*5*5 + 10, linear 1440*10 + 10, linear 10*10 + 10 */
    ck_assert_uint_eq(m.params, 260 + 14410 + 110);
}
END_TEST

START_TEST(shipped_models)
{
    mpcl_model_spec m;
    load("lenet5.txt", &m);
    /* 6*25+6, 16*6*25+16, 400*120+120, 120*84+84, 84*10+10 */
    ck_assert_uint_eq(m.params, 156 + 2416 + 48120 + 10164 + 850);
    load("mlp.txt", &m);
    ck_assert_uint_eq(m.params, 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
    load("wide-cnn.txt", &m);
    /* convs without bias + batch norm pairs + two linears */
    size_t p = 32 * 9 + 64 * 32 * 9 + 64 * 64 * 9 + 2 * (32 + 64 + 64) + 3136 * 256 + 256 + 2570;
    ck_assert_uint_eq(m.params, p);
    ck_assert(m.params >= 500000 && m.params <= 1000000);
}
END_TEST

START_TEST(options_and_defaults)
{
    mpcl_model_spec m;
    char err[512];
    const char *t = "input 3x13x7\n"
                    "conv2d out=4 kernel=3x2 stride=2 padding=1 dilation=2 bias=false  # comment\n"
                    "leaky_relu slope=0.2\n"
                    "avgpool2d kernel=2 stride=1\n"
                    "dropout p=0.1\n"
                    "flatten\n"
                    "linear out=5\n";
    ck_assert_msg(mpcl_model_spec_parse(t, "t.txt", &m, err, sizeof err) == MPCL_OK, "%s", err);
    const mpcl_layer_spec *c = &m.layers[0];
    ck_assert_int_eq(c->kernel_h, 3);
    ck_assert_int_eq(c->kernel_w, 2);
    ck_assert_int_eq(c->bias, 0);
    /* (13 + 2 - 2*2 - 1)/2 + 1 = 6, (7 + 2 - 2*1 - 1)/2 + 1 = 4 */
    ck_assert_uint_eq(c->out_shape[1], 6);
    ck_assert_uint_eq(c->out_shape[2], 4);
    ck_assert_uint_eq(c->params, 4 * 3 * 3 * 2);
    ck_assert(m.layers[1].slope == 0.2f);
    ck_assert_uint_eq(m.layers[2].out_shape[1], 5);
    ck_assert(m.layers[3].p == 0.1f);
    ck_assert_uint_eq(m.layers[5].in, 4 * 5 * 3);
}
END_TEST

static void expect_error(const char *text, const char *needle)
{
    mpcl_model_spec m;
    char err[512];
    mpcl_status s = mpcl_model_spec_parse(text, "bad.txt", &m, err, sizeof err);
    ck_assert_msg(s == MPCL_ERR_FORMAT, "accepted: %s", text);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
}

START_TEST(errors_name_file_and_line)
{
    expect_error("input 1x28x28\nconv2d out=10 kernal=5\n", "bad.txt:2: unknown option 'kernal' for conv2d");
    expect_error("input 1x28x28\nconv2d out=10 kernel=5\nflatten\nlinear in=1000 out=10\n",
                 "bad.txt:4: linear in=1000, but its input has 5760 features");
    expect_error("input 1x28x28\nconv2d kernel=5\nflatten\nlinear out=2\n", "bad.txt:2: conv2d needs out=N");
    expect_error("input 1x28x28\nconvolution out=3\n", "bad.txt:2: unknown layer 'convolution'");
    expect_error("conv2d out=3 kernel=3\n", "bad.txt:1: 'conv2d' before the 'input CxHxW' line");
    expect_error("input 28x28\nflatten\nlinear out=2\n", "bad.txt:1: input: expected CxHxW");
    expect_error("input 1x4x4\nconv2d out=2 kernel=5\nflatten\nlinear out=2\n", "bad.txt:2: conv2d kernel 5x5");
    expect_error("input 1x8x8\nlinear out=3\n", "bad.txt:2: linear needs a flat input");
    expect_error("input 1x8x8\nflatten\ndropout p=1.5\n", "bad.txt:3: p=1.5");
    expect_error("input 1x8x8\nrelu slope=2\nflatten\nlinear out=2\n", "bad.txt:2: relu takes no options");
    expect_error("input 1x8x8\nflatten\nlinear out=two\n", "bad.txt:3: out=two: expected a positive integer");
    expect_error("input 1x8x8\nconv2d out=2 kernel=3\n", "it ends in 2x6x6");
    expect_error("input 1x8x8\nflatten\nlinear out=2 bias\n", "bad.txt:3: expected key=value, found 'bias'");
    expect_error("# nothing\n", "no 'input CxHxW' line");
    char path[256], err[256];
    mpcl_model_spec m;
    snprintf(path, sizeof path, "%s/does-not-exist.txt", models_dir());
    ck_assert_int_eq(mpcl_model_spec_load(path, &m, err, sizeof err), MPCL_ERR_IO);
    ck_assert_msg(strstr(err, "does-not-exist.txt: cannot open"), "%s", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("spec");
    TCase *tc = tcase_create("model spec");
    tcase_add_test(tc, seed_cnn);
    tcase_add_test(tc, shipped_models);
    tcase_add_test(tc, options_and_defaults);
    tcase_add_test(tc, errors_name_file_and_line);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
