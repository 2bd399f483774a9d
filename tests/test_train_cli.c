/* test_train_cli.c — `mpcl train` end to end: accuracy on a small
 * Fashion-MNIST subset in fp32, fp16-storage and fp16 (where the device
 * runs it; elsewhere its refusal), the JSON-lines log, option validation
 * (exit 2), model/data mismatches and spec errors (exit 1), and a data
 * directory without the IDX files. Runs the built binary ($MPCL_BIN)
 * without a shell; the suite's parent process never calls OpenCL.
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
    result_free(&r);
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
        suite_add_tcase(s, tc);
    }
    int rc = tu_run_suite(s);
    return rc == 0 && no_device ? TU_EXIT_SKIP : rc;
}
