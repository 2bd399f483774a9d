/* test_train_cli.c — `mpcl train` end to end: accuracy on a small
 * Fashion-MNIST subset in fp32, fp16-storage and fp16 (where the device
 * runs it; elsewhere its refusal), the JSON-lines log, option validation
 * (exit 2), model/data mismatches and spec errors (exit 1), a data
 * directory without the IDX files, and CIFAR-10: a small directory in its
 * binary format written here, trained with augmentation, resumed mid-epoch
 * bit for bit, and `mpcl predict` on PPM images. Runs the built binary
 * ($MPCL_BIN) without a shell; the suite's parent process never calls
 * OpenCL.
 *
 * The runs that need the default data set assert the documented "install
 * dataset-fashion-mnist" error when MPCL_DEFAULT_DATA_DIR is missing, and
 * train otherwise. Every run is tiny (at most 3000 samples, one epoch). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cJSON.h>

#include "testutil.h"

#define HAS(hay, needle) \
    ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

/* hay with every run of spaces and newlines as one space (a field's value
 * wraps where the terminal width and the paths' lengths say); malloc'ed */
static char *flat(const char *hay)
{
    char *f = malloc(strlen(hay) + 1), *o = f;
    ck_assert_ptr_nonnull(f);
    for (const char *p = hay; *p; p++) {
        if (*p == ' ' || *p == '\n') {
            if (o == f || o[-1] != ' ')
                *o++ = ' ';
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return f;
}
#define HAS_FLAT(hay, needle)                \
    do {                                     \
        char *flat_ = flat(hay);             \
        HAS(flat_, needle);                  \
        free(flat_);                         \
    } while (0)

typedef tu_result result;
#define mpcl_run tu_mpcl_run
#define result_free tu_result_free
#define RC TU_RC

/* Set in main, before Check forks: what the default device can do. */
static int g_storage_passed, g_arith_passed, g_bf16_passed;

static int have_default_data(void)
{
    struct stat st;
    return stat(MPCL_DEFAULT_DATA_DIR, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Without the default data set, a run must fail with the documented hint. */
static void assert_missing_data(const result *r)
{
    RC(*r, 1);
    HAS(r->err, MPCL_DEFAULT_DATA_DIR);
    HAS(r->err, "dataset-fashion-mnist");
}

/* The number after "  test accuracy" in the summary (see docs/train.md). */
static double summary_accuracy(const char *out)
{
    const char *label = "\n  test accuracy ";
    const char *p = strstr(out, label);
    if (!p && strncmp(out, label + 1, strlen(label) - 1) == 0)
        p = out - 1;
    ck_assert_msg(p != NULL, "no 'test accuracy' line in:\n%s", out);
    p += strlen(label);
    double acc = -1.0;
    char pct = 0;
    ck_assert_msg(sscanf(p, " %lf%c", &acc, &pct) == 2 && pct == '%',
                  "cannot read the accuracy after '  test accuracy' in:\n%s", out);
    return acc;
}

/* ------------------------------------------------------------- training */

static void train_small(const char *precision, int expect_rc)
{
    result r = mpcl_run(NULL, "train", "--limit", "3000", "--test-limit", "1000", "--epochs", "1",
                        "--batch", "50", "--precision", precision, "--quiet", NULL);
    if (!have_default_data()) {
        assert_missing_data(&r);
        result_free(&r);
        return;
    }
    RC(r, expect_rc);
    if (expect_rc == 0) {
        ck_assert_msg(strncmp(r.out, "Result\n", 7) == 0, "--quiet printed more than the summary:\n%s",
                      r.out);
        double acc = summary_accuracy(r.out);
        ck_assert_msg(acc > 50.0 && acc <= 100.0, "%s: test accuracy %.2f%% (chance is 10%%)\n%s",
                      precision, acc, r.out);
        HAS(r.out, " of 1000 test images)");
        HAS(r.out, "Confusion matrix");
        HAS(r.out, "T-shirt/top");
        HAS(r.out, "Ankle boot");
        HAS(r.out, "Peak device memory");
        HAS(r.out, "activations");
        HAS(r.out, " MiB");
        HAS(r.out, "skipped steps");
        HAS(r.out, "final loss scale");
        HAS(r.out, "why");
        HAS(r.out, precision);
        ck_assert_msg(strstr(r.out, "epoch 1/1") == NULL, "--quiet printed an epoch line:\n%s",
                      r.out);
    } else {
        HAS(r.err, precision);
    }
    result_free(&r);
}

START_TEST(test_train_fp32)
{
    train_small("fp32", 0);
}
END_TEST

/* fp16 (half arithmetic) where the probe verified it, else the documented
 * refusal (exit 4) */
START_TEST(test_train_fp16)
{
    train_small("fp16", g_arith_passed ? 0 : 4);
}
END_TEST

START_TEST(test_train_fp16_storage)
{
    /* every OpenCL 1.2 device should pass the storage check; if not, exit 4 */
    train_small("fp16-storage", g_storage_passed ? 0 : 4);
}
END_TEST

/* bf16: the same accuracy bound; no loss scaling by default (static 1) and
 * no skipped step. */
START_TEST(test_train_bf16)
{
    train_small("bf16", g_bf16_passed ? 0 : 4);
    if (!g_bf16_passed || !have_default_data())
        return;
    result r = mpcl_run(NULL, "train", "--limit", "500", "--test-limit", "200", "--epochs", "1",
                        "--batch", "50", "--precision", "bf16", "--quiet", NULL);
    RC(r, 0);
    HAS(r.out, "skipped steps            0 of 10");
    HAS(r.out, "final loss scale         1 (static)");
    result_free(&r);
}
END_TEST

static cJSON *item(cJSON *o, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    ck_assert_msg(v != NULL, "log line lacks '%s'", key);
    return v;
}

START_TEST(test_train_log)
{
    char *dir = tu_mkdtemp("train-log");
    char path[4200];
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    /* 300 samples in batches of 64: 4 full batches and one of 44, twice */
    const int limit = 300, batch = 64, epochs = 2;
    result r = mpcl_run(NULL, "train", "--limit", "300", "--test-limit", "200", "--epochs", "2",
                        "--batch", "64", "--precision", "fp32", "--log", path, NULL);
    if (!have_default_data()) {
        assert_missing_data(&r);
        goto out;
    }
    RC(r, 0);
    HAS(r.out, "normalisation");
    HAS(r.out, "mean ");
    HAS(r.out, "epoch 1/2");
    HAS(r.out, "epoch 2/2");
    HAS(r.out, "test accuracy");
    /* the first epoch's first step (kernel builds) is reported apart, and
     * the speed of the epochs after the first */
    HAS(r.out, "s: kernel builds)\nepoch 2/2");
    HAS(r.out, "  after epoch 1 ");
    HAS(r.out, "  first step ");
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    ck_assert_msg(text != NULL, "no log file %s", path);
    int steps = 0, epoch_events = 0;
    double last_step = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const char *end = NULL;
        cJSON *o = cJSON_ParseWithOpts(line, &end, 1);
        ck_assert_msg(o != NULL && cJSON_IsObject(o), "not a JSON object: %s", line);
        cJSON *ev = cJSON_GetObjectItemCaseSensitive(o, "event");
        if (ev) {
            ck_assert(cJSON_IsString(ev));
            ck_assert_str_eq(ev->valuestring, "epoch");
            epoch_events++;
            cJSON *ep = item(o, "epoch");
            ck_assert(cJSON_IsNumber(ep) && ep->valuedouble == epoch_events);
            cJSON *acc = item(o, "test_accuracy");
            ck_assert(cJSON_IsNumber(acc) && acc->valuedouble >= 0 && acc->valuedouble <= 1);
            cJSON *tl = item(o, "test_loss");
            ck_assert(cJSON_IsNumber(tl) && isfinite(tl->valuedouble));
            cJSON *ns = item(o, "steps");
            ck_assert(cJSON_IsNumber(ns) && ns->valuedouble == (limit + batch - 1) / batch);
            cJSON *fs = cJSON_GetObjectItemCaseSensitive(o, "first_step_s");
            if (epoch_events == 1)
                ck_assert_msg(cJSON_IsNumber(fs) && fs->valuedouble > 0, "epoch 1 lacks first_step_s");
            else
                ck_assert_msg(fs == NULL, "first_step_s after epoch 1: %s", line);
        } else {
            steps++;
            cJSON *st = item(o, "step");
            ck_assert(cJSON_IsNumber(st));
            ck_assert_msg(st->valuedouble > last_step, "step %g after %g", st->valuedouble,
                          last_step);
            last_step = st->valuedouble;
            cJSON *loss = item(o, "loss");
            ck_assert_msg(cJSON_IsNumber(loss) && isfinite(loss->valuedouble) &&
                              loss->valuedouble > 0,
                          "loss not finite: %s", line);
            cJSON *ep = item(o, "epoch");
            ck_assert(cJSON_IsNumber(ep) && ep->valuedouble == epoch_events + 1);
            ck_assert(cJSON_IsNumber(item(o, "lr")));
            cJSON *ls = item(o, "loss_scale");
            ck_assert(cJSON_IsNumber(ls) && ls->valuedouble == 1.0); /* fp32: static 1 */
            ck_assert(cJSON_IsBool(item(o, "skipped")));
            ck_assert(cJSON_IsFalse(item(o, "skipped")));
            cJSON *ips = item(o, "img_per_s");
            ck_assert(cJSON_IsNumber(ips) && ips->valuedouble > 0);
        }
        cJSON_Delete(o);
    }
    ck_assert_int_eq(steps, ((limit + batch - 1) / batch) * epochs);
    ck_assert_int_eq(epoch_events, epochs);
    free(text);
out:
    result_free(&r);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------- options */

/* Each bad command line exits 2 and names the option (and the bad value). */
START_TEST(test_bad_options)
{
    static const char *cases[][3] = {
        /* option, value, what the message must contain */
        {"--epochs", "0", "--epochs"},
        {"--batch", "x", "--batch"},
        {"--precision", "fp8", "--precision"},
        {"--optimizer", "rmsprop", "--optimizer"},
        {"--loss-scale", "-3", "--loss-scale"},
        {"--lr", "-1", "--lr"},
        {"--lr", "nan", "--lr"},
        {"--schedule", "linear", "--schedule"},
        {"--label-smoothing", "1", "--label-smoothing"},
        {"--momentum", "0.9", "--momentum"}, /* adam has no momentum option */
        {"--limit", "0", "--limit"},
        {"--seed", "-1", "--seed"},
        {"--init-scale", "1e9", "--init-scale"},
        {"--augment", "blur", "--augment"},
        {"--augment", "crop99", "--augment"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        result r = mpcl_run(NULL, "train", cases[i][0], cases[i][1], NULL);
        RC(r, 2);
        HAS(r.err, cases[i][2]);
        if (strcmp(cases[i][0], "--momentum") != 0)
            HAS(r.err, cases[i][1]);
        ck_assert_str_eq(r.out, "");
        result_free(&r);
    }
    result r = mpcl_run(NULL, "train", "--no-such-option", NULL);
    RC(r, 2);
    HAS(r.err, "--no-such-option");
    result_free(&r);

    r = mpcl_run(NULL, "train", "--epochs", NULL);
    RC(r, 2);
    HAS(r.err, "--epochs");
    result_free(&r);

    r = mpcl_run(NULL, "train", "stray", NULL);
    RC(r, 2);
    HAS(r.err, "stray");
    result_free(&r);

    r = mpcl_run(NULL, "train", "--model", "no-such-model-xyz", NULL);
    RC(r, 2);
    HAS(r.err, "--model");
    HAS(r.err, "no-such-model-xyz");
    result_free(&r);

    r = mpcl_run(NULL, "train", "--help", NULL);
    RC(r, 0);
    HAS(r.out, "--model");
    HAS(r.out, "--loss-scale");
    HAS(r.out, "--log");
    HAS(r.out, "--augment");
    HAS(r.out, "CIFAR-10");
    result_free(&r);
}
END_TEST

/* ------------------------------------------------------- CIFAR-10 files */

#define CIFAR_REC 3073 /* label byte + 3 x 32 x 32 pixel bytes */

/* A CIFAR-10 binary directory: data_batch_1.bin and data_batch_2.bin (32
 * records each) and test_batch.bin (32). Each image is a flat colour per
 * class plus noise, so a tiny model learns something. */
static void write_cifar_dir(const char *dir)
{
    static const char *names[3] = {"data_batch_1.bin", "data_batch_2.bin", "test_batch.bin"};
    uint64_t st = 2024;
    unsigned char *buf = malloc(32 * CIFAR_REC);
    ck_assert_ptr_nonnull(buf);
    for (int f = 0; f < 3; f++) {
        for (size_t r = 0; r < 32; r++) {
            unsigned char *rec = buf + r * CIFAR_REC;
            rec[0] = (unsigned char)(tu_rand(&st) % 10);
            for (size_t j = 0; j < 3072; j++)
                rec[1 + j] = (unsigned char)(rec[0] * 20 + (j / 1024) * 30 + tu_rand(&st) % 40);
        }
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, names[f]);
        ck_assert_int_eq(tu_write_file(path, buf, 32 * CIFAR_REC), 0);
    }
    free(buf);
}

/* A small model for `input` (e.g. 3x32x32): conv, relu, pool, linear. */
static char *write_spec(const char *dir, const char *name, const char *input)
{
    char text[256];
    snprintf(text, sizeof text, "input %s\nconv2d out=4 kernel=3\nrelu\nmaxpool2d kernel=2\n"
                                "flatten\nlinear out=10\n", input);
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    ck_assert_int_eq(tu_write_file(path, text, strlen(text)), 0);
    return path;
}

/* A w x h PPM, P6 binary or P3 text, pseudo-random pixels, less the last
 * `cut` bytes. */
static char *write_ppm(const char *dir, const char *name, int binary, int w, int h, size_t cut)
{
    size_t cap = 64 + (size_t)w * h * 3 * 4;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    size_t len = (size_t)snprintf(buf, cap, "%s\n%d %d\n255\n", binary ? "P6" : "P3", w, h);
    uint64_t st = (uint64_t)w * 131 + (uint64_t)binary;
    for (int i = 0; i < w * h * 3; i++) {
        unsigned v = (unsigned)(tu_rand(&st) % 256);
        if (binary)
            buf[len++] = (char)v;
        else
            len += (size_t)snprintf(buf + len, cap - len, "%u%c", v, i % 12 == 11 ? '\n' : ' ');
    }
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    ck_assert_int_eq(tu_write_file(path, buf, len - cut), 0);
    free(buf);
    return path;
}

/* ResNet-20 (data/models/resnet20.txt) on a CIFAR-format set written here:
 * each image's class sets which colour channel is brighter (class % 3) and
 * its texture (class / 3: flat, horizontal stripes, vertical stripes,
 * checks, 4 pixels wide), under noise. Three epochs of 256 images must
 * reach well above chance (10%) on 128 test images: the graph trains. One
 * convolution algorithm (im2col) for every layer: no first-use measuring
 * of its 21 geometries inside the suite. */
static void write_pattern_cifar(const char *dir, const char *name, size_t n, uint64_t *st)
{
    unsigned char *buf = malloc(n * CIFAR_REC);
    ck_assert_ptr_nonnull(buf);
    for (size_t r = 0; r < n; r++) {
        unsigned char *rec = buf + r * CIFAR_REC;
        unsigned k = (unsigned)(tu_rand(st) % 10), ch = k % 3, pat = k / 3;
        rec[0] = (unsigned char)k;
        for (unsigned c = 0; c < 3; c++)
            for (unsigned y = 0; y < 32; y++)
                for (unsigned x = 0; x < 32; x++) {
                    unsigned v = 60 + (unsigned)(tu_rand(st) % 40) + (c == ch ? 50 : 0);
                    int on = pat == 1 ? (y / 4) % 2 : pat == 2 ? (x / 4) % 2 : pat == 3 ? (x / 4 + y / 4) % 2 : 0;
                    rec[1 + c * 1024 + y * 32 + x] = (unsigned char)(v + (on ? 60 : 0));
                }
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(tu_write_file(path, buf, n * CIFAR_REC), 0);
    free(buf);
}

START_TEST(test_resnet20_learns_cifar_patterns)
{
    char *dir = tu_mkdtemp("r20");
    uint64_t st = 5;
    write_pattern_cifar(dir, "data_batch_1.bin", 256, &st);
    write_pattern_cifar(dir, "test_batch.bin", 128, &st);
    char algo[] = "MPCL_CONV_ALGO=im2col";
    char *const env[] = {algo, NULL};
    result r = mpcl_run(env, "train", "--data", dir, "--model", "resnet20", "--epochs", "3", "--batch", "32",
                        "--augment", "none", "--precision", "fp32", NULL);
    RC(r, 0);
    HAS(r.out, "resnet20.txt: 73 layers, 272474 parameters");
    HAS(r.out, "with one buffer per tensor)");
    const char *acc = strstr(r.out, "test accuracy ");
    ck_assert_ptr_nonnull(acc);
    double pct = strtod(acc + strlen("test accuracy "), NULL);
    ck_assert_msg(pct >= 40.0, "ResNet-20 reached %.2f%% on 10 classes (chance: 10%%):\n%s", pct, r.out);
    result_free(&r);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ----------------------------------------------------- model and data */

START_TEST(test_model_mismatch)
{
    char *dir = tu_mkdtemp("train-spec");
    char path[4200];
    snprintf(path, sizeof path, "%s/rgb.txt", dir);
    const char *rgb = "# a CIFAR-shaped net\n"
                      "input 3x32x32\n"
                      "flatten\n"
                      "linear out=10\n";
    ck_assert_int_eq(tu_write_file(path, rgb, strlen(rgb)), 0);
    result r = mpcl_run(NULL, "train", "--model", path, "--epochs", "1", NULL);
    if (!have_default_data()) {
        assert_missing_data(&r);
    } else {
        RC(r, 1);
        HAS(r.err, "3x32x32");
        HAS(r.err, "1x28x28");
    }
    result_free(&r);

    /* 5 outputs for 10 classes */
    snprintf(path, sizeof path, "%s/five.txt", dir);
    const char *five = "input 1x28x28\nflatten\nlinear out=5\n";
    ck_assert_int_eq(tu_write_file(path, five, strlen(five)), 0);
    r = mpcl_run(NULL, "train", "--model", path, NULL);
    if (!have_default_data()) {
        assert_missing_data(&r);
    } else {
        RC(r, 1);
        HAS(r.err, "five.txt:3");
        HAS(r.err, "10 classes");
    }
    result_free(&r);

    /* a syntax error: exit 1 with file:line */
    snprintf(path, sizeof path, "%s/broken.txt", dir);
    const char *broken = "input 1x28x28\n"
                         "conv2d out=8 kernel=3\n"
                         "frobnicate size=3\n"
                         "flatten\n"
                         "linear out=10\n";
    ck_assert_int_eq(tu_write_file(path, broken, strlen(broken)), 0);
    r = mpcl_run(NULL, "train", "--model", path, NULL);
    RC(r, 1);
    HAS(r.err, "broken.txt:3");
    result_free(&r);

    /* a grey model on CIFAR-10's colour images (checked before any device) */
    char *cifar = tu_mkdtemp("train-cifar-spec");
    write_cifar_dir(cifar);
    char *grey = write_spec(dir, "grey.txt", "1x32x32");
    r = mpcl_run(NULL, "train", "--data", cifar, "--model", grey, NULL);
    RC(r, 1);
    HAS(r.err, "grey.txt: the model takes 1x32x32 inputs");
    HAS(r.err, "are 3x32x32 (colour");
    HAS(r.err, "'input 3x32x32'");
    result_free(&r);
    tu_rmtree(cifar);
    free(cifar), free(grey);

    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_empty_data_dir)
{
    char *dir = tu_mkdtemp("train-nodata");
    /* "--model lenet5" is found by name (in the source tree's data/models) */
    result r = mpcl_run(NULL, "train", "--data", dir, "--model", "lenet5", NULL);
    RC(r, 1);
    HAS(r.err, dir);
    HAS(r.err, "train-images-idx3-ubyte");
    ck_assert_str_eq(r.out, "");
    result_free(&r);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------------ CIFAR-10 */

/* 1 epoch on a CIFAR-format directory (crop4,flip by default), then
 * `mpcl predict` on PPM images (P6, P3) and the errors for images that do
 * not fit the model. */
START_TEST(test_cifar_train_and_predict)
{
    char *dir = tu_mkdtemp("cifar");
    write_cifar_dir(dir);
    char *spec = write_spec(dir, "rgb.txt", "3x32x32");
    char ck[4200];
    snprintf(ck, sizeof ck, "%s/ck.st", dir);
    result r = mpcl_run(NULL, "train", "--data", dir, "--model", spec, "--epochs", "1", "--batch",
                        "16", "--precision", "fp32", "--save", ck, NULL);
    RC(r, 0);
    HAS_FLAT(r.out, "(CIFAR-10): 64 of 64 training and 32 of 32 test images, 3x32x32");
    HAS(r.out, "augmentation             crop4,flip");
    HAS(r.out, "1 epoch of 4 steps, batch 16");
    HAS(r.out, " of 32 test images)");
    HAS(r.out, "airplane");
    HAS(r.out, "truck");
    result_free(&r);

    char *p6 = write_ppm(dir, "a.ppm", 1, 32, 32, 0), *p3 = write_ppm(dir, "b.ppm", 0, 32, 32, 0);
    r = mpcl_run(NULL, "predict", ck, p6, p3, "--top", "2", NULL);
    RC(r, 0);
    static const char *classes[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                      "dog", "frog", "horse", "ship", "truck"};
    char *lines[2] = {strstr(r.out, "a.ppm: "), strstr(r.out, "b.ppm: ")};
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(lines[i] != NULL, "no line for image %d in:\n%s", i, r.out);
        int named = 0;
        for (int c = 0; c < 10; c++)
            named |= strncmp(lines[i] + 7, classes[c], strlen(classes[c])) == 0;
        ck_assert_msg(named, "not a CIFAR-10 class: %s", lines[i]);
    }
    HAS(r.out, "%, ");
    result_free(&r);

    /* images that do not fit: grey, another size, truncated */
    char *small = write_ppm(dir, "small.ppm", 1, 8, 8, 0), *cut = write_ppm(dir, "cut.ppm", 1, 32, 32, 100);
    char grey[4200];
    snprintf(grey, sizeof grey, "%s/grey.pgm", dir);
    char pgm[16 + 32 * 32];
    int hl = snprintf(pgm, sizeof pgm, "P5\n32 32\n255\n");
    memset(pgm + hl, 7, 32 * 32);
    ck_assert_int_eq(tu_write_file(grey, pgm, (size_t)hl + 32 * 32), 0);
    struct {
        const char *file, *expect1, *expect2;
    } bad[] = {
        {grey, "the image is 1x32x32 (grey", "the model takes 3x32x32"},
        {small, "the image is 3x8x8 (colour", "the model takes 3x32x32"},
        {cut, "byte 13: 32 x 32 pixels need 3072 bytes, the file has 2972", "truncated"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = mpcl_run(NULL, "predict", ck, p6, bad[i].file, NULL);
        RC(r, 1);
        HAS(r.err, bad[i].file);
        HAS(r.err, bad[i].expect1);
        HAS(r.err, bad[i].expect2);
        result_free(&r);
    }
    tu_rmtree(dir);
    free(dir), free(spec), free(p6), free(p3), free(small), free(cut);
}
END_TEST

/* The "loss" of each step of a JSON-lines log, from step `from` on. */
static int log_losses(const char *path, int from, double *out, int cap)
{
    char *text = tu_read_file(path, NULL);
    ck_assert_msg(text != NULL, "no log %s", path);
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *o = cJSON_Parse(line);
        cJSON *step = cJSON_GetObjectItem(o, "step"), *loss = cJSON_GetObjectItem(o, "loss");
        if (!cJSON_GetObjectItem(o, "event") && step && loss && step->valueint >= from && n < cap)
            out[n++] = loss->valuedouble;
        cJSON_Delete(o);
    }
    free(text);
    return n;
}

/* With augmentation (crop4,flip, CIFAR's default), a run stopped inside its
 * second epoch and resumed ends with the uninterrupted run's losses and
 * checkpoint, byte for byte: the augmentation is stored in the checkpoint
 * and every image's draw is a hash of (seed, epoch, image). */
START_TEST(test_cifar_resume_mid_epoch)
{
    char *dir = tu_mkdtemp("cifar-resume");
    write_cifar_dir(dir);
    char *spec = write_spec(dir, "rgb.txt", "3x32x32");
    char full[4200], flog[4200], part[4200], res[4200], rlog[4200];
    snprintf(full, sizeof full, "%s/full.st", dir);
    snprintf(flog, sizeof flog, "%s/full.jsonl", dir);
    snprintf(part, sizeof part, "%s/part.st", dir);
    snprintf(res, sizeof res, "%s/res.st", dir);
    snprintf(rlog, sizeof rlog, "%s/res.jsonl", dir);
    /* 4 steps of 16 per epoch; --max-steps 6 stops at step 2 of epoch 2 */
#define CIFAR_RUN "train", "--data", dir, "--batch", "16", "--precision", "fp32", "--epochs", "2", \
                  "--quiet", "--save-every", "2", "--seed", "7"
    result r = mpcl_run(NULL, CIFAR_RUN, "--model", spec, "--save", full, "--log", flog, NULL);
    RC(r, 0);
    result_free(&r);
    r = mpcl_run(NULL, CIFAR_RUN, "--model", spec, "--save", part, "--max-steps", "6", NULL);
    RC(r, 0);
    result_free(&r);
    /* the checkpoint's own model and augmentation */
    r = mpcl_run(NULL, CIFAR_RUN, "--resume", part, "--save", res, "--log", rlog, NULL);
    RC(r, 0);
    ck_assert_msg(strstr(r.err, "augment") == NULL, "a note about the augmentation:\n%s", r.err);
    result_free(&r);
#undef CIFAR_RUN
    double a[16], b[16];
    int na = log_losses(flog, 7, a, 16), nb = log_losses(rlog, 7, b, 16);
    ck_assert_msg(na == 2 && nb == 2, "%d steps from 7 in the full run, %d resumed", na, nb);
    for (int i = 0; i < na; i++)
        ck_assert_msg(a[i] == b[i], "step %d: loss %.9g uninterrupted, %.9g resumed", 7 + i, a[i], b[i]);
    size_t lf = 0, lr = 0;
    char *xf = tu_read_file(full, &lf), *xr = tu_read_file(res, &lr);
    ck_assert_msg(xf && xr && lf == lr && memcmp(xf, xr, lf) == 0,
                  "%s and %s differ: the resumed run is not the uninterrupted one", full, res);
    const char *key = "\"augment\":\"crop4,flip\"";
    ck_assert_msg(lf > 8 && strstr(xf + 8, key) != NULL, /* the JSON header after its length */
                  "the checkpoint does not record the augmentation");
    free(xf), free(xr);
    tu_rmtree(dir);
    free(dir), free(spec);
}
END_TEST

int main(void)
{
    if (!tu_cli_init("test_train_cli"))
        return 1;
    Suite *s = suite_create("train_cli");
    TCase *usage = tcase_create("usage");
    tcase_add_test(usage, test_bad_options);
    tcase_add_test(usage, test_model_mismatch);
    tcase_add_test(usage, test_empty_data_dir);
    suite_add_tcase(s, usage);

    tu_device_info dev;
    tu_probe_device(&dev);
    int no_device = tu_no_device(&dev);
    if (no_device) {
        fprintf(stderr, "test_train_cli: no OpenCL device (%s: %s): the training tests are "
                        "skipped\n",
                mpcl_status_name((mpcl_status)dev.status), dev.message);
    } else {
        g_storage_passed = dev.storage_passed;
        g_arith_passed = dev.arith_passed;
        g_bf16_passed = dev.bf16_passed;
        TCase *tc = tcase_create("train");
        tcase_set_timeout(tc, 240);
        tcase_add_test(tc, test_train_fp32);
        tcase_add_test(tc, test_train_fp16_storage);
        tcase_add_test(tc, test_train_fp16);
        tcase_add_test(tc, test_train_bf16);
        tcase_add_test(tc, test_train_log);
        tcase_add_test(tc, test_cifar_train_and_predict);
        tcase_add_test(tc, test_cifar_resume_mid_epoch);
        tcase_add_test(tc, test_resnet20_learns_cifar_patterns);
        suite_add_tcase(s, tc);
    }
    int rc = tu_run_suite(s);
    return rc == 0 && no_device ? TU_EXIT_SKIP : rc;
}
