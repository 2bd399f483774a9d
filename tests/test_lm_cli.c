/* test_lm_cli.c — `mpcl train --task lm` end to end on texts the test
 * writes: a small gpt learns a repetitive text (the validation loss falls
 * far below a uniform guess's ln 256), the JSON-lines log, a run stopped
 * and resumed ends with the uninterrupted run's losses and checkpoint byte
 * for byte, the 16-bit modes, and the errors: an image model, a missing or
 * too short text, options that belong to the other task. Runs the built
 * binary ($MPCL_BIN) without a shell; the parent never calls OpenCL. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "testutil.h"

#define HAS(hay, needle) \
    ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

typedef tu_result result;
#define mpcl_run tu_mpcl_run
#define result_free tu_result_free
#define RC TU_RC

static int g_storage_passed, g_arith_passed;

#define SPEC_TEXT "gpt vocab=256 context=16 layers=1 heads=2 width=16\n"

/* A text of n bytes: words from a small list in a seeded order (repeat 0)
 * or one phrase over and over (repeat 1). */
static char *write_text(const char *dir, const char *name, size_t n, int repeat)
{
    static const char *words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran",
                                  "far", "away", "from", "home", "today", "while", "it", "rained"};
    char *path = malloc(4200), *buf = malloc(n + 32);
    ck_assert_ptr_nonnull(path);
    ck_assert_ptr_nonnull(buf);
    snprintf(path, 4200, "%s/%s", dir, name);
    size_t used = 0;
    uint64_t st = 5;
    while (used < n) {
        const char *w = repeat ? "hello world. " : words[tu_rand(&st) % (sizeof words / sizeof *words)];
        used += (size_t)snprintf(buf + used, n + 32 - used, "%s%s", w, repeat ? "" : " ");
    }
    ck_assert_int_eq(tu_write_file(path, buf, n), 0);
    free(buf);
    return path;
}

static char *write_spec(const char *dir)
{
    char *path = malloc(4200);
    ck_assert_ptr_nonnull(path);
    snprintf(path, 4200, "%s/lm.txt", dir);
    ck_assert_int_eq(tu_write_file(path, SPEC_TEXT, strlen(SPEC_TEXT)), 0);
    return path;
}

/* The value after "  valid loss " in the summary. */
static double valid_loss(const char *out)
{
    const char *p = strstr(out, "  valid loss ");
    ck_assert_msg(p != NULL, "no 'valid loss' line in:\n%s", out);
    double v = NAN;
    ck_assert_msg(sscanf(p + 13, " %lf", &v) == 1, "cannot read the valid loss in:\n%s", out);
    return v;
}

/* Step losses (step >= from) and the number of validation lines of a log. */
static int log_read(const char *path, int from, double *loss, int cap, int *evals)
{
    char *text = tu_read_file(path, NULL);
    ck_assert_msg(text != NULL, "no log %s", path);
    int n = 0;
    *evals = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *o = cJSON_Parse(line);
        ck_assert_msg(o != NULL, "a log line is not JSON: %s", line);
        cJSON *step = cJSON_GetObjectItem(o, "step"), *l = cJSON_GetObjectItem(o, "loss");
        if (cJSON_GetObjectItem(o, "eval_step")) {
            ck_assert_ptr_nonnull(cJSON_GetObjectItem(o, "valid_loss"));
            (*evals)++;
        } else {
            ck_assert_msg(step && l && cJSON_GetObjectItem(o, "tokens_per_s"), "step line: %s", line);
            if (step->valueint >= from && n < cap)
                loss[n++] = l->valuedouble;
        }
        cJSON_Delete(o);
    }
    free(text);
    return n;
}

/* A repetitive text is learnt: from ln 256 = 5.55 to below 1 nat per byte. */
START_TEST(test_lm_learns)
{
    char *dir = tu_mkdtemp("lm-learn");
    char *text = write_text(dir, "hello.txt", 6000, 1), *spec = write_spec(dir);
    result r = mpcl_run(NULL, "train", "--task", "lm", "--text", text, "--model", spec, "--steps",
                        "200", "--batch", "8", "--lr", "0.01", "--warmup", "5", "--eval-every", "0",
                        "--precision", "fp32", NULL);
    RC(r, 0);
    HAS(r.out, "train --task lm");
    HAS(r.out, "skipped steps            0 of 200");
    double v = valid_loss(r.out);
    ck_assert_msg(v < 1.0, "valid loss %g after 200 steps on a repeated phrase:\n%s", v, r.out);
    result_free(&r);
    tu_rmtree(dir);
    free(dir), free(text), free(spec);
}
END_TEST

/* A run stopped at step 3 and resumed to step 6 takes the uninterrupted
 * run's steps on the same windows: the same losses and checkpoint bytes. */
START_TEST(test_lm_log_and_resume)
{
    char *dir = tu_mkdtemp("lm-resume");
    char *text = write_text(dir, "words.txt", 20000, 0), *spec = write_spec(dir);
    char full[4200], flog[4200], part[4200], res[4200], rlog[4200];
    snprintf(full, sizeof full, "%s/full.st", dir);
    snprintf(flog, sizeof flog, "%s/full.jsonl", dir);
    snprintf(part, sizeof part, "%s/part.st", dir);
    snprintf(res, sizeof res, "%s/res.st", dir);
    snprintf(rlog, sizeof rlog, "%s/res.jsonl", dir);
#define LM_RUN "train", "--task", "lm", "--text", text, "--batch", "2", "--precision", "fp32", \
               "--eval-every", "3", "--eval-windows", "4", "--seed", "9", "--quiet"
    result r = mpcl_run(NULL, LM_RUN, "--model", spec, "--steps", "6", "--save", full, "--log",
                        flog, NULL);
    RC(r, 0);
    result_free(&r);
    r = mpcl_run(NULL, LM_RUN, "--model", spec, "--steps", "3", "--save", part, NULL);
    RC(r, 0);
    result_free(&r);
    r = mpcl_run(NULL, LM_RUN, "--resume", part, "--steps", "6", "--save", res, "--log", rlog, NULL);
    RC(r, 0);
    result_free(&r);
#undef LM_RUN
    double a[8], b[8];
    int ea, eb;
    int na = log_read(flog, 4, a, 8, &ea), nb = log_read(rlog, 4, b, 8, &eb);
    ck_assert_msg(na == 3 && nb == 3, "%d steps from 4 uninterrupted, %d resumed", na, nb);
    ck_assert_int_eq(ea, 2); /* steps 3 and 6 */
    ck_assert_int_eq(eb, 1); /* step 6 */
    for (int i = 0; i < na; i++)
        ck_assert_msg(a[i] == b[i], "step %d: loss %.9g uninterrupted, %.9g resumed", 4 + i, a[i], b[i]);
    size_t lf = 0, lr = 0;
    char *xf = tu_read_file(full, &lf), *xr = tu_read_file(res, &lr);
    ck_assert_msg(xf && xr && lf == lr && memcmp(xf, xr, lf) == 0,
                  "%s and %s differ: the resumed run is not the uninterrupted one", full, res);
    ck_assert_msg(lf > 8 && strstr(xf + 8, "transformer.h.0.attn.c_attn.weight") &&
                      strstr(xf + 8, "\"task\":\"lm\""),
                  "the checkpoint lacks GPT-2 names or its task");
    free(xf), free(xr);
    tu_rmtree(dir);
    free(dir), free(text), free(spec);
}
END_TEST

static void lm_mode(const char *mode, int runs)
{
    char *dir = tu_mkdtemp("lm-mode");
    char *text = write_text(dir, "words.txt", 20000, 0), *spec = write_spec(dir);
    result r = mpcl_run(NULL, "train", "--task", "lm", "--text", text, "--model", spec, "--steps",
                        "8", "--batch", "4", "--eval-every", "4", "--precision", mode, NULL);
    if (!runs) {
        RC(r, 4); /* the device refuses the mode */
    } else {
        RC(r, 0);
        double v = valid_loss(r.out);
        ck_assert_msg(isfinite(v) && v < 6.0, "[%s] valid loss %g", mode, v);
        HAS(r.out, "applied with a non-finite loss");
        HAS(r.out, "; 0 applied");
    }
    result_free(&r);
    tu_rmtree(dir);
    free(dir), free(text), free(spec);
}

START_TEST(test_lm_fp16_storage) { lm_mode("fp16-storage", g_storage_passed); }
END_TEST
START_TEST(test_lm_fp16) { lm_mode("fp16", g_arith_passed); }
END_TEST

START_TEST(test_lm_errors)
{
    char *dir = tu_mkdtemp("lm-err");
    char *text = write_text(dir, "words.txt", 4000, 0), *spec = write_spec(dir);
    char *tiny = write_text(dir, "tiny.txt", 20, 0);
    /* an image model */
    result r = mpcl_run(NULL, "train", "--task", "lm", "--text", text, "--model", "mlp", NULL);
    RC(r, 1);
    HAS(r.err, "is not a language model");
    result_free(&r);
    /* a missing text */
    char missing[4200];
    snprintf(missing, sizeof missing, "%s/nothing.txt", dir);
    r = mpcl_run(NULL, "train", "--task", "lm", "--text", missing, "--model", spec, NULL);
    ck_assert_msg(r.rc != 0, "a missing text trained");
    HAS(r.err, missing);
    result_free(&r);
    /* a text too short for one window of the context and its held-out part */
    r = mpcl_run(NULL, "train", "--task", "lm", "--text", tiny, "--model", spec, NULL);
    ck_assert_msg(r.rc != 0, "a 20-byte text trained");
    HAS(r.err, tiny);
    result_free(&r);
    /* options of the other task, and a context beyond the model's */
    r = mpcl_run(NULL, "train", "--steps", "5", NULL);
    RC(r, 2);
    HAS(r.err, "--task lm only");
    result_free(&r);
    r = mpcl_run(NULL, "train", "--task", "lm", "--epochs", "2", NULL);
    RC(r, 2);
    result_free(&r);
    r = mpcl_run(NULL, "train", "--task", "lm", "--task", "speech", NULL);
    RC(r, 2);
    HAS(r.err, "'speech' is not a task");
    result_free(&r);
    r = mpcl_run(NULL, "train", "--task", "lm", "--text", text, "--model", spec, "--context", "17",
                 NULL);
    RC(r, 2);
    HAS(r.err, "more than the model's context of 16");
    result_free(&r);
    tu_rmtree(dir);
    free(dir), free(text), free(spec), free(tiny);
}
END_TEST

int main(void)
{
    if (!tu_cli_init("test_lm_cli"))
        return 1;
    Suite *s = suite_create("lm_cli");
    tu_device_info dev;
    tu_probe_device(&dev);
    int no_device = tu_no_device(&dev);
    TCase *usage = tcase_create("usage");
    tcase_add_test(usage, test_lm_errors);
    tcase_set_timeout(usage, 240);
    if (!no_device) /* the checks that reach the device need one */
        suite_add_tcase(s, usage);
    if (no_device) {
        fprintf(stderr, "test_lm_cli: no OpenCL device (%s: %s): skipped\n",
                mpcl_status_name((mpcl_status)dev.status), dev.message);
    } else {
        g_storage_passed = dev.storage_passed;
        g_arith_passed = dev.arith_passed;
        TCase *tc = tcase_create("train");
        tcase_set_timeout(tc, 240);
        tcase_add_test(tc, test_lm_learns);
        tcase_add_test(tc, test_lm_log_and_resume);
        tcase_add_test(tc, test_lm_fp16_storage);
        tcase_add_test(tc, test_lm_fp16);
        suite_add_tcase(s, tc);
    }
    int rc = no_device ? 0 : tu_run_suite(s);
    return rc == 0 && no_device ? TU_EXIT_SKIP : rc;
}
