/* test_checkpoint_cli.c — checkpoints through the CLI: `mpcl train --save
 * / --resume` continues bit for bit (at an epoch boundary, mid-epoch through
 * --max-steps, and after SIGTERM), in fp32, fp16-storage, bf16 and (where
 * the device runs it) fp16; failed saves
 * keep the previous checkpoint; bad checkpoints and images give clear errors
 * and exit 1; `mpcl eval` agrees with the trainer's own evaluation and
 * `mpcl predict` with `eval`. The checkpoint headers are read here with cJSON
 * directly, not with mpcl's reader. Runs the built binary ($MPCL_BIN); the
 * suite's parent process never calls OpenCL. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "testutil.h"

#define HAS(hay, needle) \
    ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

static int g_storage_passed, g_arith_passed, g_bf16_passed;
/* fp16 runs where the device's half arithmetic is verified (Intel's OpenCL
 * CPU runtime in the suite). */
#define NMODES 4
static const char *MODES[NMODES] = {"fp32", "fp16-storage", "bf16", "fp16"};

/* The small run every test trains: 10 steps of 64 per epoch. */
#define SMALL "--limit", "640", "--test-limit", "200", "--batch", "64", "--quiet"

static char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int mode_runs(int i)
{
    int runs = i == 0 || (i == 1 && g_storage_passed) || (i == 2 && g_bf16_passed) ||
               (i == 3 && g_arith_passed);
    if (!runs)
        printf("%s: not run, this device does not run the mode (see mpcl probe)\n", MODES[i]);
    return runs;
}

static void run_ok(tu_result r)
{
    TU_RC(r, 0);
    tu_result_free(&r);
}

/* The checkpoint's metadata, read with cJSON from the raw header. */
static cJSON *header_of(const char *path)
{
    size_t n = 0;
    char *b = tu_read_file(path, &n);
    ck_assert_msg(b && n >= 8, "%s: unreadable", path);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | (uint8_t)b[i];
    ck_assert(8 + hl <= n);
    cJSON *h = cJSON_ParseWithLength(b + 8, hl);
    ck_assert_msg(h != NULL, "%s: header is not JSON", path);
    free(b);
    return h;
}

static const char *meta_of(cJSON *h, const char *key)
{
    cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(h, "__metadata__"), key);
    ck_assert_msg(cJSON_IsString(v), "metadata lacks '%s'", key);
    return v->valuestring;
}

static void assert_same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *x = tu_read_file(a, &na), *y = tu_read_file(b, &nb);
    ck_assert_msg(x && y, "missing %s or %s", a, b);
    ck_assert_msg(na == nb && memcmp(x, y, na) == 0,
                  "%s and %s differ: the resumed run is not the uninterrupted one", a, b);
    free(x);
    free(y);
}

/* The "loss" of each step line of a JSON-lines log, from step `from` on. */
static int losses_from(const char *log, int from, double *out, int cap)
{
    char *text = tu_read_file(log, NULL);
    ck_assert_msg(text != NULL, "no log %s", log);
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        cJSON *step = cJSON_GetObjectItem(o, "step"), *loss = cJSON_GetObjectItem(o, "loss");
        if (cJSON_GetObjectItem(o, "test_accuracy") == NULL && step && loss && step->valueint >= from &&
            n < cap)
            out[n++] = loss->valuedouble;
        cJSON_Delete(o);
    }
    free(text);
    return n;
}

static void assert_same_losses(const char *full, const char *resumed, int from)
{
    double a[64], b[64];
    int na = losses_from(full, from, a, 64), nb = losses_from(resumed, from, b, 64);
    ck_assert_msg(nb > 0 && na == nb, "%d steps from %d in the full run, %d resumed", na, from, nb);
    for (int i = 0; i < na; i++)
        ck_assert_msg(a[i] == b[i], "step %d: loss %.9g uninterrupted, %.9g resumed", from + i, a[i], b[i]);
}

/* Stopped after epoch 1 and resumed with --epochs 2: the same losses and the
 * same final checkpoint, byte for byte, as two epochs in one run. */
START_TEST(resume_at_epoch_boundary)
{
    if (!mode_runs(_i))
        return;
    const char *mode = MODES[_i];
    char *dir = tu_mkdtemp("resume-epoch");
    char *full = path_in(dir, "full.st"), *flog = path_in(dir, "full.jsonl");
    char *part = path_in(dir, "part.st"), *res = path_in(dir, "res.st"), *rlog = path_in(dir, "res.jsonl");
    run_ok(tu_mpcl_run(NULL, "train", SMALL, "--precision", mode, "--epochs", "2", "--save", full, "--log",
                       flog, NULL));
    run_ok(tu_mpcl_run(NULL, "train", SMALL, "--precision", mode, "--epochs", "1", "--save", part, NULL));
    cJSON *h = header_of(part);
    ck_assert_str_eq(meta_of(h, "epochs_done"), "1");
    ck_assert_str_eq(meta_of(h, "epoch_step"), "0");
    ck_assert_str_eq(meta_of(h, "step"), "10");
    ck_assert_str_eq(meta_of(h, "precision"), mode);
    ck_assert(cJSON_GetObjectItem(h, "optimizer.0.weight.exp_avg") != NULL);
    cJSON_Delete(h);
    tu_result r = tu_mpcl_run(NULL, "train", SMALL, "--precision", mode, "--epochs", "2", "--resume", part,
                              "--save", res, "--log", rlog, NULL);
    TU_RC(r, 0);
    HAS(r.out, "2 epochs, 20 steps");
    tu_result_free(&r);
    assert_same_losses(flog, rlog, 11);
    assert_same_file(full, res);
    /* resumed past --epochs: nothing to train, the checkpoint is evaluated */
    r = tu_mpcl_run(NULL, "train", "--limit", "640", "--test-limit", "200", "--precision", mode, "--epochs",
                    "2", "--resume", full, NULL);
    TU_RC(r, 0);
    HAS(r.out, "only evaluating");
    tu_result_free(&r);
    tu_rmtree(dir);
    free(dir), free(full), free(flog), free(part), free(res), free(rlog);
}
END_TEST

/* --max-steps 13 stops inside epoch 2; the resume continues mid-epoch. */
START_TEST(resume_mid_epoch)
{
    if (!mode_runs(_i))
        return;
    const char *mode = MODES[_i];
    char *dir = tu_mkdtemp("resume-mid");
    char *full = path_in(dir, "full.st"), *flog = path_in(dir, "full.jsonl");
    char *part = path_in(dir, "part.st"), *res = path_in(dir, "res.st"), *rlog = path_in(dir, "res.jsonl");
    run_ok(tu_mpcl_run(NULL, "train", SMALL, "--precision", mode, "--epochs", "2", "--save", full, "--log",
                       flog, "--save-every", "4", NULL));
    run_ok(tu_mpcl_run(NULL, "train", SMALL, "--precision", mode, "--epochs", "2", "--save", part,
                       "--max-steps", "13", "--save-every", "4", NULL));
    cJSON *h = header_of(part);
    ck_assert_str_eq(meta_of(h, "epochs_done"), "1");
    ck_assert_str_eq(meta_of(h, "epoch_step"), "3");
    ck_assert_str_eq(meta_of(h, "step"), "13");
    cJSON_Delete(h);
    run_ok(tu_mpcl_run(NULL, "train", SMALL, "--precision", mode, "--epochs", "2", "--resume", part,
                       "--save", res, "--log", rlog, "--save-every", "4", NULL));
    assert_same_losses(flog, rlog, 14);
    assert_same_file(full, res);
    tu_rmtree(dir);
    free(dir), free(full), free(flog), free(part), free(res), free(rlog);
}
END_TEST

/* SIGTERM during training: the step finishes, the checkpoint is written at
 * the step the log last shows, the exit status is 143, and resuming gives
 * the uninterrupted run's result. */
START_TEST(sigterm_checkpoints_and_resumes)
{
    char *dir = tu_mkdtemp("sigterm");
    char *ck = path_in(dir, "ck.st"), *log = path_in(dir, "log.jsonl");
    char *full = path_in(dir, "full.st"), *res = path_in(dir, "res.st");
    const char *bin = tu_env("MPCL_BIN");
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", 1);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execl(bin, bin, "train", "--limit", "3200", "--test-limit", "200", "--batch", "64", "--epochs", "2",
              "--precision", "fp32", "--quiet", "--save", ck, "--log", log, (char *)NULL);
        _exit(127);
    }
    /* wait for a few logged steps, then stop it */
    int lines = 0;
    for (int waited = 0; waited < 1200 && lines < 5; waited++) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        char *t = tu_read_file(log, NULL);
        lines = 0;
        for (char *p = t; p && (p = strchr(p, '\n')); p++)
            lines++;
        free(t);
    }
    ck_assert_msg(lines >= 5, "the run logged no steps in 60 s");
    kill(pid, SIGTERM);
    int status = 0;
    ck_assert(waitpid(pid, &status, 0) == pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGTERM,
                  "status %d: expected a clean exit with 143", status);
    double losses[128];
    int logged = losses_from(log, 0, losses, 128);
    cJSON *h = header_of(ck);
    char want[32];
    snprintf(want, sizeof want, "%d", logged);
    ck_assert_str_eq(meta_of(h, "step"), want);
    cJSON_Delete(h);
    run_ok(tu_mpcl_run(NULL, "train", "--limit", "3200", "--test-limit", "200", "--batch", "64", "--epochs",
                       "2", "--precision", "fp32", "--quiet", "--resume", ck, "--save", res, NULL));
    run_ok(tu_mpcl_run(NULL, "train", "--limit", "3200", "--test-limit", "200", "--batch", "64", "--epochs",
                       "2", "--precision", "fp32", "--quiet", "--save", full, NULL));
    assert_same_file(full, res);
    tu_rmtree(dir);
    free(dir), free(ck), free(log), free(full), free(res);
}
END_TEST

/* A save that fails (no such directory; the file-size limit standing in for
 * a full disk) exits 1 naming the path and keeps the previous checkpoint. */
START_TEST(failed_save_keeps_previous)
{
    char *dir = tu_mkdtemp("save-fail");
    char *ck = path_in(dir, "ck.st"), *missing = path_in(dir, "no/such/dir/ck.st");
    tu_result r = tu_mpcl_run(NULL, "train", SMALL, "--epochs", "1", "--save", missing, NULL);
    TU_RC(r, 1);
    HAS(r.err, missing);
    HAS(r.err, strerror(ENOENT));
    tu_result_free(&r);
    /* a wide MLP (0.8M parameters): its checkpoint (~10 MiB with Adam's
     * moments) is far larger than anything else the run writes (PoCL's
     * compiled kernels), so only the save hits the limit; linear layers
     * build in a fraction of a conv net's time */
    char *wide = path_in(dir, "wide.txt");
    const char *wide_spec = "input 1x28x28\nflatten\nlinear out=1024\nrelu\nlinear out=10\n";
    ck_assert(tu_write_file(wide, wide_spec, strlen(wide_spec)) == 0);
#define WIDE "--model", wide, "--limit", "128", "--test-limit", "64", "--batch", "64", "--quiet"
    run_ok(tu_mpcl_run(NULL, "train", WIDE, "--epochs", "1", "--save", ck, NULL));
    size_t n0;
    char *before = tu_read_file(ck, &n0);
    struct rlimit lim;
    getrlimit(RLIMIT_FSIZE, &lim);
    lim.rlim_cur = n0 / 2;
    signal(SIGXFSZ, SIG_IGN); /* inherited: write() fails with EFBIG instead */
    ck_assert(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    r = tu_mpcl_run(NULL, "train", WIDE, "--epochs", "1", "--seed", "5", "--save", ck, NULL);
    TU_RC(r, 1);
    HAS(r.err, ck);
    HAS(r.err, strerror(EFBIG));
    HAS(r.err, "unchanged");
    tu_result_free(&r);
    size_t n1;
    char *after = tu_read_file(ck, &n1);
    ck_assert_msg(n0 == n1 && memcmp(before, after, n0) == 0, "the previous checkpoint changed");
    ck_assert_int_eq(tu_dir_entries(dir), 2); /* the spec and ck: no temporary file left */
    free(before), free(after);
    tu_rmtree(dir);
    free(dir), free(ck), free(missing), free(wide);
}
END_TEST

/* Bad checkpoints: exit 1 and a message naming the file and the defect. */
START_TEST(bad_checkpoints)
{
    char *dir = tu_mkdtemp("bad-ck");
    char *ck = path_in(dir, "ck.st"), *cut = path_in(dir, "cut.st"), *text = path_in(dir, "text.st");
    run_ok(tu_mpcl_run(NULL, "train", SMALL, "--epochs", "1", "--save", ck, NULL));
    size_t n;
    char *b = tu_read_file(ck, &n);
    ck_assert(tu_write_file(cut, b, n - 100) == 0);
    ck_assert(tu_write_file(text, "hello, not a checkpoint\n", 24) == 0);
    free(b);
    struct {
        const char *sub, *file, *expect;
    } cases[] = {
        {"train", cut, "past the end of the data"},
        {"train", text, "runs past the end of the file"},
        {"eval", cut, "truncated"},
        {"predict", text, "not a safetensors file"},
        {"train", "/nonexistent/ck.st", "cannot open"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tu_result r;
        if (strcmp(cases[i].sub, "train") == 0)
            r = tu_mpcl_run(NULL, "train", SMALL, "--resume", cases[i].file, NULL);
        else if (strcmp(cases[i].sub, "eval") == 0)
            r = tu_mpcl_run(NULL, "eval", cases[i].file, "--limit", "10", NULL);
        else
            r = tu_mpcl_run(NULL, "predict", cases[i].file, tu_env("MPCL_TEST_FASHION_PGM"), NULL);
        TU_RC(r, 1);
        HAS(r.err, cases[i].file);
        HAS(r.err, cases[i].expect);
        tu_result_free(&r);
    }
    /* a checkpoint of another model */
    char *spec = path_in(dir, "other.txt");
    const char *other = "input 1x28x28\nconv2d out=6 kernel=5\nrelu\nmaxpool2d kernel=2\nflatten\nlinear out=10\n";
    ck_assert(tu_write_file(spec, other, strlen(other)) == 0);
    tu_result r = tu_mpcl_run(NULL, "train", SMALL, "--resume", ck, "--model", spec, NULL);
    TU_RC(r, 1);
    HAS(r.err, "'0.weight'");
    HAS(r.err, "another model");
    tu_result_free(&r);
    /* usage */
    r = tu_mpcl_run(NULL, "train", "--save-every", "3", NULL);
    TU_RC(r, 2);
    HAS(r.err, "--save-every needs --save");
    tu_result_free(&r);
    r = tu_mpcl_run(NULL, "eval", NULL);
    TU_RC(r, 2);
    tu_result_free(&r);
    r = tu_mpcl_run(NULL, "predict", ck, NULL);
    TU_RC(r, 2);
    HAS(r.err, "at least one image");
    tu_result_free(&r);
    r = tu_mpcl_run(NULL, "predict", ck, tu_env("MPCL_TEST_FASHION_PGM"), "--top", "0", NULL);
    TU_RC(r, 2);
    tu_result_free(&r);
    tu_rmtree(dir);
    free(dir), free(ck), free(cut), free(text), free(spec);
}
END_TEST

/* eval reproduces the trainer's final test accuracy; predict on an IDX file
 * agrees with eval's confusion matrix; bad images are refused. */
START_TEST(eval_and_predict)
{
    char *dir = tu_mkdtemp("eval");
    char *ck = path_in(dir, "ck.st");
    tu_result r = tu_mpcl_run(NULL, "train", SMALL, "--epochs", "1", "--save", ck, NULL);
    TU_RC(r, 0);
    const char *p = strstr(r.out, "test accuracy");
    ck_assert(p != NULL);
    double train_acc = -1;
    ck_assert(sscanf(p, "test accuracy %lf%%", &train_acc) == 1);
    tu_result_free(&r);
    r = tu_mpcl_run(NULL, "eval", ck, "--limit", "200", "--batch", "64", "--json", NULL);
    TU_RC(r, 0);
    cJSON *j = cJSON_Parse(r.out);
    ck_assert_msg(j != NULL, "eval --json is not JSON:\n%s", r.out);
    double acc = cJSON_GetObjectItem(j, "accuracy")->valuedouble;
    ck_assert_msg(fabs(100.0 * acc - train_acc) < 0.006, "eval %.2f%%, train %.2f%%", 100 * acc, train_acc);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "confusion")), 10);
    ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "class_names"), 9)->valuestring, "Ankle boot");
    /* predicted column sums of the confusion matrix = predict's class counts */
    int col[10] = {0};
    cJSON *rows = cJSON_GetObjectItem(j, "confusion");
    for (int a = 0; a < 10; a++)
        for (int b = 0; b < 10; b++)
            col[b] += cJSON_GetArrayItem(cJSON_GetArrayItem(rows, a), b)->valueint;
    cJSON_Delete(j);
    tu_result_free(&r);
    char idx[600];
    snprintf(idx, sizeof idx, "%s/t10k-images-idx3-ubyte.gz", MPCL_DEFAULT_DATA_DIR);
    r = tu_mpcl_run(NULL, "predict", ck, idx, "--limit", "200", "--json", NULL);
    TU_RC(r, 0);
    j = cJSON_Parse(r.out);
    ck_assert(j != NULL);
    cJSON *preds = cJSON_GetObjectItem(j, "predictions");
    ck_assert_int_eq(cJSON_GetArraySize(preds), 200);
    int count[10] = {0};
    for (int i = 0; i < 200; i++) {
        cJSON *o = cJSON_GetArrayItem(preds, i);
        double pr = cJSON_GetObjectItem(o, "probability")->valuedouble;
        ck_assert(pr >= 0.1 && pr <= 1.0); /* the argmax of 10 probabilities */
        count[cJSON_GetObjectItem(o, "class")->valueint]++;
    }
    for (int c = 0; c < 10; c++)
        ck_assert_msg(count[c] == col[c], "class %d: predict %d, eval %d", c, count[c], col[c]);
    cJSON_Delete(j);
    tu_result_free(&r);
    /* text output of one PGM */
    r = tu_mpcl_run(NULL, "predict", ck, tu_env("MPCL_TEST_FASHION_PGM"), "--top", "3", NULL);
    TU_RC(r, 0);
    HAS(r.out, "fashion-0.pgm: ");
    HAS(r.out, "%, ");
    tu_result_free(&r);
    /* bad images */
    char *small = path_in(dir, "small.pgm"), *trunc = path_in(dir, "trunc.pgm"), *junk = path_in(dir, "junk.pgm");
    char hdr[64];
    int hl = snprintf(hdr, sizeof hdr, "P5\n10 10\n255\n");
    char img[200] = {0};
    memcpy(img, hdr, (size_t)hl);
    ck_assert(tu_write_file(small, img, (size_t)hl + 100) == 0);
    hl = snprintf(hdr, sizeof hdr, "P5\n28 28\n255\n");
    memcpy(img, hdr, (size_t)hl);
    ck_assert(tu_write_file(trunc, img, (size_t)hl + 100) == 0);
    ck_assert(tu_write_file(junk, "GIF89a", 6) == 0);
    struct {
        const char *file, *expect;
    } bad[] = {{small, "the model takes 1x28x28"}, {trunc, "truncated"}, {junk, "not a PGM image"}};
    for (size_t i = 0; i < 3; i++) {
        r = tu_mpcl_run(NULL, "predict", ck, bad[i].file, NULL);
        TU_RC(r, 1);
        HAS(r.err, bad[i].file);
        HAS(r.err, bad[i].expect);
        tu_result_free(&r);
    }
    tu_rmtree(dir);
    free(dir), free(ck), free(small), free(trunc), free(junk);
}
END_TEST

int main(void)
{
    if (!tu_cli_init("test_checkpoint_cli"))
        return 1;
    struct stat st;
    if (stat(MPCL_DEFAULT_DATA_DIR, &st) != 0) {
        printf("skipped: the checkpoint CLI tests train on %s (dataset-fashion-mnist)\n",
               MPCL_DEFAULT_DATA_DIR);
        return TU_EXIT_SKIP;
    }
    tu_device_info dev;
    tu_probe_device(&dev);
    if (tu_no_device(&dev)) {
        printf("skipped: no OpenCL device (%s)\n", dev.message);
        return TU_EXIT_SKIP;
    }
    g_storage_passed = dev.storage_passed;
    g_arith_passed = dev.arith_passed;
    g_bf16_passed = dev.bf16_passed;
    Suite *s = suite_create("checkpoint_cli");
    TCase *tc = tcase_create("resume");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, resume_at_epoch_boundary, 0, NMODES);
    tcase_add_loop_test(tc, resume_mid_epoch, 0, NMODES);
    tcase_add_test(tc, sigterm_checkpoints_and_resumes);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, failed_save_keeps_previous);
    tcase_add_test(tc, bad_checkpoints);
    tcase_add_test(tc, eval_and_predict);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
