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

/* The shipped residual nets: shapes, parameters and wiring. */
START_TEST(resnets)
{
    mpcl_model_spec m;
    load("resnet20.txt", &m);
    /* stem 16*3*9 + bn; stage 1: 6 convs 16*16*9; stage 2: 32*16*9 + 5 * 32*32*9 + 1x1 32*16;
     * stage 3 likewise at 64; batch norms 2 * channels each; linear 64*10 + 10 */
    size_t convs = 16 * 3 * 9 + 6 * 16 * 16 * 9 + 32 * 16 * 9 + 5 * 32 * 32 * 9 + 32 * 16 +
                   64 * 32 * 9 + 5 * 64 * 64 * 9 + 64 * 32;
    size_t bns = 2 * (16 + 6 * 16 + 7 * 32 + 7 * 64);
    ck_assert_uint_eq(m.params, convs + bns + 650);
    ck_assert(m.params > 265000 && m.params < 280000); /* "0.27M" */
    int adds = 0, convn = 0;
    for (int i = 0; i < m.nlayers; i++) {
        adds += m.layers[i].kind == MPCL_LAYER_ADD;
        convn += m.layers[i].kind == MPCL_LAYER_CONV2D;
    }
    ck_assert_int_eq(adds, 9);
    ck_assert_int_eq(convn, 21); /* 19 + two projections */
    const mpcl_layer_spec *gap = &m.layers[m.nlayers - 3];
    ck_assert_int_eq(gap->kind, MPCL_LAYER_GLOBAL_AVGPOOL);
    ck_assert_uint_eq(gap->in_shape[1], 8);
    ck_assert_uint_eq(gap->out_shape[0], 64);
    ck_assert_uint_eq(gap->out_shape[1], 1);
    load("resnet8.txt", &m);
    ck_assert(m.params > 70000 && m.params < 90000);
}
END_TEST

static int layer_named(const mpcl_model_spec *m, const char *name)
{
    for (int i = 0; i < m->nlayers; i++)
        if (strcmp(m->layers[i].name, name) == 0)
            return i;
    return -2;
}

/* Names, from=, add and concat: inputs, shapes, and the text that
 * mpcl_model_spec_format writes reads back to the same graph. */
START_TEST(graphs)
{
    const char *t = "input 3x8x8\n"
                    "stem: conv2d out=4 kernel=3 padding=1\n"
                    "relu\n"
                    "a: conv2d out=4 kernel=3 padding=1\n"
                    "b:conv2d from=stem out=2 kernel=1\n"     /* no space after ':' */
                    "cat: concat from=a,b,input\n"              /* 4 + 2 + 3 channels */
                    "conv2d out=4 kernel=1\n"
                    "s: add from=stem\n"
                    "add from=s,a,stem\n"
                    "global_avgpool\n"
                    "flatten\n"
                    "linear out=3\n";
    mpcl_model_spec m, back;
    char err[512];
    ck_assert_msg(mpcl_model_spec_parse(t, "g.txt", &m, err, sizeof err) == MPCL_OK, "%s", err);
    ck_assert_int_eq(m.nlayers, 11);
    ck_assert_int_eq(layer_named(&m, "stem"), 0);
    ck_assert_int_eq(m.layers[0].inputs[0], -1);
    ck_assert_int_eq(m.layers[1].inputs[0], 0);
    ck_assert_int_eq(m.layers[3].inputs[0], 0); /* b from stem */
    const mpcl_layer_spec *cat = &m.layers[4];
    ck_assert_int_eq(cat->kind, MPCL_LAYER_CONCAT);
    ck_assert_int_eq(cat->ninputs, 3);
    ck_assert_int_eq(cat->inputs[0], 2);
    ck_assert_int_eq(cat->inputs[1], 3);
    ck_assert_int_eq(cat->inputs[2], -1);
    ck_assert_uint_eq(cat->out_shape[0], 9);
    ck_assert_uint_eq(cat->out_shape[1], 8);
    const mpcl_layer_spec *add1 = &m.layers[6], *add2 = &m.layers[7];
    ck_assert_int_eq(add1->ninputs, 2);
    ck_assert_int_eq(add1->inputs[0], 5); /* the line before */
    ck_assert_int_eq(add1->inputs[1], 0);
    ck_assert_int_eq(add2->ninputs, 3);
    ck_assert_int_eq(add2->inputs[0], 6);
    ck_assert_int_eq(add2->inputs[1], 2);
    ck_assert_int_eq(add2->inputs[2], 0);
    ck_assert_uint_eq(m.layers[8].out_shape[0], 4);
    ck_assert_uint_eq(m.layers[8].out_shape[2], 1);
    ck_assert_uint_eq(m.layers[10].in, 4);
    /* round trip */
    char text[4096];
    size_t n = mpcl_model_spec_format(&m, text, sizeof text);
    ck_assert_uint_lt(n, sizeof text);
    ck_assert_msg(mpcl_model_spec_parse(text, "formatted", &back, err, sizeof err) == MPCL_OK, "%s\n%s", err,
                  text);
    ck_assert_int_eq(back.nlayers, m.nlayers);
    ck_assert_uint_eq(back.params, m.params);
    for (int i = 0; i < m.nlayers; i++) {
        ck_assert_int_eq(back.layers[i].kind, m.layers[i].kind);
        ck_assert_int_eq(back.layers[i].ninputs, m.layers[i].ninputs);
        for (int k = 0; k < m.layers[i].ninputs; k++)
            ck_assert_int_eq(back.layers[i].inputs[k], m.layers[i].inputs[k]);
        ck_assert_mem_eq(back.layers[i].out_shape, m.layers[i].out_shape, sizeof m.layers[i].out_shape);
    }
    /* a sequential spec formats without names or from= */
    load("lenet5.txt", &m);
    mpcl_model_spec_format(&m, text, sizeof text);
    ck_assert_msg(!strchr(text, ':') && !strstr(text, "from="), "%s", text);
    /* a spec built in code without names gets labels it can read back */
    ck_assert_msg(mpcl_model_spec_parse(t, "g.txt", &m, err, sizeof err) == MPCL_OK, "%s", err);
    for (int i = 0; i < m.nlayers; i++)
        m.layers[i].name[0] = '\0';
    mpcl_model_spec_format(&m, text, sizeof text);
    ck_assert_msg(mpcl_model_spec_parse(text, "unnamed", &back, err, sizeof err) == MPCL_OK, "%s\n%s", err,
                  text);
    for (int i = 0; i < m.nlayers; i++)
        for (int k = 0; k < m.layers[i].ninputs; k++)
            ck_assert_int_eq(back.layers[i].inputs[k], m.layers[i].inputs[k]);
}
END_TEST

START_TEST(graph_errors)
{
    const char *head = "input 2x8x8\n";
    char t[1024];
#define BAD(body, needle)                                  \
    do {                                                   \
        snprintf(t, sizeof t, "%s%s", head, body);         \
        expect_error(t, needle);                           \
    } while (0)
    BAD("conv2d out=2 kernel=3 from=nowhere\nflatten\nlinear out=2\n",
        "bad.txt:2: from=nowhere: no layer is named 'nowhere'");
    BAD("a: conv2d out=2 kernel=3 from=a\nflatten\nlinear out=2\n",
        "bad.txt:2: from=a: the layer reads its own output, a cycle");
    BAD("conv2d out=2 kernel=3 from=c\nc: relu\nflatten\nlinear out=2\n",
        "bad.txt:2: from=c: 'c' is line 3, after this one");
    BAD("a: relu\nb: relu\na: relu\nflatten\nlinear out=2\n", "bad.txt:4: 'a' already names line 2");
    BAD("a: relu\nconv2d out=3 kernel=3\nadd from=a\nflatten\nlinear out=2\n",
        "bad.txt:4: add: the line before (line 3, conv2d) is 3x6x6 but 'a' (line 2) is 2x8x8; add needs "
        "inputs of one shape");
    BAD("a: relu\nconv2d out=3 kernel=3\nconcat from=a\nflatten\nlinear out=2\n",
        "bad.txt:4: concat: the line before (line 3, conv2d) is 3x6x6 but 'a' (line 2) is 2x8x8");
    BAD("a: relu\nconv2d out=3 kernel=1\nconv2d out=2 kernel=1 from=a\nflatten\nlinear out=2\n",
        "bad.txt:3: the output of this conv2d is never used");
    BAD("a: relu\nrelu\nadd\nflatten\nlinear out=2\n", "bad.txt:4: add needs from=NAME");
    BAD("a: relu\nb: relu\nconv2d out=2 kernel=1 from=a,b\nflatten\nlinear out=2\n",
        "bad.txt:4: conv2d takes one input, but from= lists 2");
    BAD("1a: relu\nflatten\nlinear out=2\n", "bad.txt:2: '1a:' is not a layer name");
    BAD("input: relu\nflatten\nlinear out=2\n", "bad.txt:2: 'input' names the model's input");
    BAD("a:\nflatten\nlinear out=2\n", "bad.txt:2: 'a:' names no layer");
    BAD("add from=input\nflatten\nlinear out=2\n", "bad.txt:2: add from=input: the first layer has no line before it");
    BAD("relu from=input,input\nflatten\nlinear out=2\n", "relu takes one input");
    BAD("a: relu\nrelu from=a from=a\nflatten\nlinear out=2\n", "bad.txt:3: from= given twice");
    BAD("global_avgpool\nflatten\nlinear out=2 from=input\n", "linear needs a flat input");
    BAD("flatten\nglobal_avgpool\nlinear out=2\n", "bad.txt:3: global_avgpool needs an image input");
#undef BAD
}
END_TEST

/* The shipped language models and the wide residual net: parameter counts
 * computed by hand. gpt: wte V C + wpe T C + L (12 C^2 + 13 C) + ln_f 2 C
 * (hidden 4 C: c_attn 3C^2 + 3C, c_proj C^2 + C, c_fc 4C^2 + 4C, mlp c_proj
 * 4C^2 + C, two layer norms 4C). */
START_TEST(shipped_gpt_and_wide)
{
    mpcl_model_spec m;
    load("gpt-tiny.txt", &m);
    ck_assert_int_eq(m.kind, MPCL_MODEL_GPT);
    ck_assert_uint_eq(m.gpt.hidden, 512);
    ck_assert_uint_eq(m.params, 256 * 128 + 128 * 128 + 4 * (12 * 128 * 128 + 13 * 128) + 2 * 128);
    load("gpt-small.txt", &m);
    ck_assert_uint_eq(m.params, 256 * 384 + 256 * 384 + 6 * (12 * 384 * 384 + 13 * 384) + 2 * 384);
    load("resnet8-wide.txt", &m);
    ck_assert_int_eq(m.kind, MPCL_MODEL_LAYERS);
    /* stem 9*24; stage 1: 2 x 9*24*24; stage 2: 9*24*48 + 9*48*48 + 1x1 24*48; stage 3:
     * 9*48*96 + 9*96*96 + 1x1 48*96; batch norms 2 C each: 24 x 3, 48 x 3, 96 x 3; linear 96*10+10 */
    size_t conv = 9 * 24 + 2 * 9 * 24 * 24 + 9 * 24 * 48 + 9 * 48 * 48 + 24 * 48 + 9 * 48 * 96 +
                  9 * 96 * 96 + 48 * 96;
    size_t bn = 2 * (24 * 3 + 48 * 3 + 96 * 3);
    ck_assert_uint_eq(m.params, conv + bn + 96 * 10 + 10);
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
    tcase_add_test(tc, resnets);
    tcase_add_test(tc, graphs);
    tcase_add_test(tc, graph_errors);
    tcase_add_test(tc, shipped_gpt_and_wide);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
