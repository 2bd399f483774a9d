/* test_checkpoint.c — safetensors files and checkpoints.
 *
 * The container: a round trip checked against the format's byte layout;
 * every kind of malformed file (each with the message it must give); every
 * truncation and thousands of corruptions of a good file (errors, never a
 * crash); failed writes (missing directory, file-size limit standing in for
 * a full disk, read-only directory) that leave the previous file as it was.
 * Checkpoints, in every precision mode: a trainer saved and loaded into
 * another continues bit for bit; a saved model loads for inference and
 * predicts what the original did; a file of another model, another
 * optimizer or without training state is refused and changes nothing; the
 * spec text written into checkpoints parses back to the same layers. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "io/safetensors.h"
#include "optest.h"

static char tmpdir[512];

static void path_in(char *dst, size_t len, const char *name)
{
    snprintf(dst, len, "%s/%s", tmpdir, name);
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    ck_assert(fread(b, 1, (size_t)sz, f) == (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void spill(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert(f != NULL);
    ck_assert(fwrite(b, 1, n, f) == n);
    fclose(f);
}

/* A file from a JSON header and data bytes, as a writer would lay it out. */
static uint8_t *craft(const char *json, const void *data, size_t dlen, uint64_t hlen_override,
                      size_t *n)
{
    size_t hl = strlen(json);
    *n = 8 + hl + dlen;
    uint8_t *b = malloc(*n);
    uint64_t h = hlen_override ? hlen_override : hl;
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(h >> (8 * i));
    memcpy(b + 8, json, hl);
    if (dlen)
        memcpy(b + 8 + hl, data, dlen);
    return b;
}

/* ------------------------------------------------------------ container */

START_TEST(st_round_trip)
{
    char path[600];
    path_in(path, sizeof path, "rt.safetensors");
    float a[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 65504.0f};
    uint16_t h[4] = {0x3c00, 0xc000, 0x7bff, 0x0001};
    uint8_t u[1] = {200};
    uint64_t sa[2] = {2, 3}, sh[1] = {4};
    st_entry e[3] = {{"layer.w", ST_F32, 2, sa, a}, {"h", ST_F16, 1, sh, h}, {"scalar", ST_U8, 0, NULL, u}};
    const char *meta[] = {"model_spec", "input 1x2x2\nflatten\n", "note", "ünïcode \"quoted\""};
    char err[512];
    ck_assert_msg(st_write(path, e, 3, meta, 2, err, sizeof err) == MPCL_OK, "%s", err);

    /* the bytes as the format defines them */
    size_t n;
    uint8_t *b = slurp(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | b[i];
    ck_assert_uint_eq(hl % 8, 0); /* data 8-byte aligned */
    ck_assert_uint_eq(n, 8 + hl + sizeof a + sizeof h + sizeof u);
    cJSON *root = cJSON_ParseWithLength((const char *)b + 8, hl);
    ck_assert(root != NULL);
    cJSON *w = cJSON_GetObjectItem(root, "layer.w");
    ck_assert_str_eq(cJSON_GetObjectItem(w, "dtype")->valuestring, "F32");
    cJSON *off = cJSON_GetObjectItem(w, "data_offsets");
    size_t begin = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    ck_assert_int_eq(memcmp(b + 8 + hl + begin, a, sizeof a), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "__metadata__"), "note")->valuestring,
                     meta[3]);
    cJSON_Delete(root);
    free(b);

    st_file f;
    ck_assert_msg(st_read(path, &f, err, sizeof err) == MPCL_OK, "%s", err);
    ck_assert_uint_eq(f.count, 3);
    const st_tensor *t = st_find(&f, "layer.w");
    ck_assert(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    ck_assert_int_eq(memcmp(st_data(&f, t), a, sizeof a), 0);
    t = st_find(&f, "h");
    ck_assert(t && t->dtype == ST_F16 && t->numel == 4);
    ck_assert_int_eq(memcmp(st_data(&f, t), h, sizeof h), 0);
    t = st_find(&f, "scalar");
    ck_assert(t && t->ndim == 0 && t->numel == 1 && *(const uint8_t *)st_data(&f, t) == 200);
    ck_assert_str_eq(st_meta(&f, "model_spec"), meta[1]);
    ck_assert_str_eq(st_meta(&f, "note"), meta[3]);
    ck_assert(st_meta(&f, "absent") == NULL);
    st_free(&f);
}
END_TEST

/* Each malformed file and the words its error must contain. */
static const struct {
    const char *json;
    size_t dlen;
    uint64_t hlen; /* 0: the JSON's length */
    const char *expect;
} BAD[] = {
    {"", 0, 0, "does not start with '{'"},
    {"[1, 2]", 0, 0, "does not start with '{'"},
    {"{\"a\":", 0, 0, "not valid near byte"},
    {"{}", 0, 1000000, "runs past the end"},
    {"{\"w\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "unknown dtype 'F7'"},
    {"{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 0, "'w': no \"dtype\""},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,4]}}", 4, 0, "shape[0]"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, 0, "shape[0]"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, 0, "needs 8"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,4]}}", 4, 0,
     "needs more than"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, 0, "past the end of the data"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, 0, "end before"},
    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, 0, "[begin, end]"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0, "overlap"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, 0, "unused bytes"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9, 0, "bytes after the last"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, 0, "appears twice"},
    {"{\"__metadata__\":{\"k\":1}}", 0, 0, "'k' is not a string"},
    {"{\"__metadata__\":[]}", 0, 0, "must be an object"},
    {"{\"w\":[]}", 0, 0, "expected an object"},
    {"{} x", 0, 0, "unexpected bytes after the JSON"},
};

START_TEST(st_rejects_malformed)
{
    uint8_t zeros[64] = {0};
    const char *expect = BAD[_i].expect;
    size_t n;
    uint8_t *b = craft(BAD[_i].json, zeros, BAD[_i].dlen, BAD[_i].hlen, &n);
    st_file f;
    char err[512] = "";
    mpcl_status s = st_parse(b, n, "bad.safetensors", &f, err, sizeof err);
    ck_assert_msg(s == MPCL_ERR_FORMAT, "case %d (%s) returned %d", _i, BAD[_i].json, s);
    ck_assert_msg(strstr(err, expect) && strstr(err, "bad.safetensors"),
                  "case %d: message '%s' lacks '%s' or the file name", _i, err, expect);
    free(b);
    /* and a file too short for the length itself */
    uint8_t tiny[5] = {1, 0, 0, 0, 0};
    ck_assert(st_parse(tiny, sizeof tiny, "tiny", &f, err, sizeof err) == MPCL_ERR_FORMAT);
    ck_assert_msg(strstr(err, "too short"), "%s", err);
}
END_TEST

/* Every truncation of a good file is an error; random corruptions of its
 * header are errors or valid files, never a crash or a wrong-size read. */
START_TEST(st_truncated_and_corrupted)
{
    char path[600], err[512];
    path_in(path, sizeof path, "fuzz.safetensors");
    float a[5] = {1, 2, 3, 4, 5};
    uint64_t sa[1] = {5}, sb[2] = {1, 2};
    st_entry e[2] = {{"a", ST_F32, 1, sa, a}, {"b", ST_F16, 2, sb, a}};
    const char *meta[] = {"k", "v"};
    ck_assert(st_write(path, e, 2, meta, 1, err, sizeof err) == MPCL_OK);
    size_t n;
    uint8_t *good = slurp(path, &n);
    st_file f;
    for (size_t len = 0; len < n; len++)
        ck_assert_msg(st_parse(good, len, "cut", &f, err, sizeof err) == MPCL_ERR_FORMAT,
                      "a file cut to %zu of %zu bytes was accepted", len, n);
    uint8_t *b = malloc(n);
    uint64_t rng = 12345;
    int accepted = 0;
    for (int k = 0; k < 4000; k++) {
        memcpy(b, good, n);
        for (int flips = 0; flips < 1 + k % 3; flips++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t at = (size_t)(rng >> 33) % n;
            b[at] = (uint8_t)(rng >> 25);
        }
        mpcl_status s = st_parse(b, n, "corrupt", &f, err, sizeof err);
        ck_assert(s == MPCL_OK || s == MPCL_ERR_FORMAT);
        if (s == MPCL_OK) {
            accepted++;
            for (size_t i = 0; i < f.count; i++) /* a valid parse stays inside the data */
                ck_assert(f.tensors[i].end <= f.data_len);
            st_free(&f);
        }
    }
    ck_assert_int_lt(accepted, 4000);
    free(b);
    free(good);
}
END_TEST

static int temp_files_left(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *de; d && (de = readdir(d));)
        n += strstr(de->d_name, ".tmp-") != NULL;
    if (d)
        closedir(d);
    return n;
}

/* A failed write names the path and the reason, and leaves the previous
 * file byte for byte. */
START_TEST(st_failed_writes_keep_the_old_file)
{
    char path[600], err[1024];
    path_in(path, sizeof path, "keep.safetensors");
    float small[4] = {1, 2, 3, 4};
    uint64_t s4[1] = {4};
    st_entry e = {"w", ST_F32, 1, s4, small};
    ck_assert(st_write(path, &e, 1, NULL, 0, err, sizeof err) == MPCL_OK);
    size_t n0;
    uint8_t *before = slurp(path, &n0);

    /* missing directory */
    char missing[700];
    snprintf(missing, sizeof missing, "%s/no-such-dir/x.safetensors", tmpdir);
    ck_assert(st_write(missing, &e, 1, NULL, 0, err, sizeof err) == MPCL_ERR_IO);
    ck_assert_msg(strstr(err, missing) && strstr(err, strerror(ENOENT)), "%s", err);

    /* a full disk: the file-size limit makes write() fail (EFBIG) */
    size_t big_n = 1 << 20;
    float *big = calloc(big_n, sizeof *big);
    uint64_t sbig[1] = {big_n};
    st_entry eb = {"w", ST_F32, 1, sbig, big};
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 64 * 1024;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    mpcl_status s = st_write(path, &eb, 1, NULL, 0, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    free(big);
    ck_assert_int_eq(s, MPCL_ERR_IO);
    ck_assert_msg(strstr(err, path) && strstr(err, strerror(EFBIG)) && strstr(err, "unchanged"), "%s", err);
    size_t n1;
    uint8_t *after = slurp(path, &n1);
    ck_assert(n1 == n0 && memcmp(before, after, n0) == 0);
    free(after);
    ck_assert_int_eq(temp_files_left(), 0);

    /* a read-only directory (root writes anyway, so only as another user) */
    if (geteuid() != 0) {
        ck_assert(chmod(tmpdir, 0555) == 0);
        s = st_write(path, &e, 1, NULL, 0, err, sizeof err);
        chmod(tmpdir, 0755);
        ck_assert_int_eq(s, MPCL_ERR_IO);
        ck_assert_msg(strstr(err, strerror(EACCES)), "%s", err);
        after = slurp(path, &n1);
        ck_assert(n1 == n0 && memcmp(before, after, n0) == 0);
        free(after);
    }
    free(before);
}
END_TEST

/* ----------------------------------------------------------- checkpoints */

static const char *SEED_CNN = "input 1x28x28\nconv2d out=10 kernel=5\nrelu\nmaxpool2d kernel=2\nflatten\n"
                              "linear in=1440 out=10\nrelu\nlinear out=10\n";
static const char *OTHER_CNN = "input 1x28x28\nconv2d out=12 kernel=5\nrelu\nmaxpool2d kernel=2\nflatten\n"
                               "linear in=1728 out=10\nrelu\nlinear out=10\n";
/* batch norm (statistics) and dropout (the seed drives its masks) */
static const char *BN_CNN = "input 1x28x28\nconv2d out=4 kernel=3 padding=1\nbatchnorm2d\nrelu\n"
                            "maxpool2d kernel=2\ndropout p=0.25\nflatten\nlinear out=10\n";

#define B 16
static uint8_t images[8 * B * 784], labels[8 * B];

static void make(mpcl_context *ctx, const char *text, uint64_t seed, mpcl_optimizer opt,
                 mpcl_model **m, mpcl_trainer **t)
{
    mpcl_model_spec spec;
    char err[256];
    ck_assert_msg(mpcl_model_spec_parse(text, "spec", &spec, err, sizeof err) == MPCL_OK, "%s", err);
    ck_assert_msg(mpcl_model_create(ctx, &spec, B, seed, m) == MPCL_OK, "%s", mpcl_last_error(ctx));
    if (!t)
        return;
    mpcl_train_options o;
    mpcl_train_options_init(&o, mpcl_precision_chosen(ctx, NULL));
    mpcl_optimizer_options_init(&o.optimizer, opt);
    if (opt == MPCL_OPT_SGD)
        o.optimizer.momentum = 0.9f;
    o.growth_interval = 2; /* the scaler's state moves within a few steps */
    if (seed != 99) { /* seed 99: a trainer made with the defaults, to be resumed */
        mpcl_normalization n = {1, {0.5f}, {0.25f}};
        ck_assert_msg(mpcl_model_set_normalization(*m, &n) == MPCL_OK, "%s", mpcl_last_error(ctx));
    }
    ck_assert_msg(mpcl_trainer_create(*m, &o, t) == MPCL_OK, "%s", mpcl_last_error(ctx));
}

static void steps(mpcl_context *ctx, mpcl_trainer *t, int first, int n, float *losses)
{
    for (int k = first; k < first + n; k++) {
        mpcl_step_stats st;
        ck_assert_msg(mpcl_trainer_step(t, images + (size_t)(k % 8) * B * 784, labels + (k % 8) * B, B,
                                        &st) == MPCL_OK, "%s", mpcl_last_error(ctx));
        if (losses)
            losses[k - first] = st.loss;
    }
}

static void assert_same_tensor(const char *what, const mpcl_tensor *a, const mpcl_tensor *b)
{
    ck_assert_uint_eq(mpcl_tensor_numel(a), mpcl_tensor_numel(b));
    float *x = optest_download(a), *y = optest_download(b);
    ck_assert_msg(memcmp(x, y, mpcl_tensor_numel(a) * sizeof *x) == 0, "%s differ", what);
    free(x);
    free(y);
}

/* Saved after 5 steps and loaded into a trainer made with another seed, the
 * copy holds the same weights, optimizer state and scaler state, and the
 * next steps give the same losses and weights, bit for bit. */
START_TEST(trainer_resumes_exactly)
{
    mpcl_context *ctx = optest_modes[_i % optest_nmodes].ctx;
    const char *text = _i / optest_nmodes ? BN_CNN : SEED_CNN;
    mpcl_optimizer opt = _i / optest_nmodes ? MPCL_OPT_SGD : MPCL_OPT_ADAMW;
    char path[600];
    path_in(path, sizeof path, "trainer.safetensors");
    mpcl_model *ma, *mb;
    mpcl_trainer *ta, *tb;
    make(ctx, text, 1, opt, &ma, &ta);
    make(ctx, text, 99, opt, &mb, &tb);
    steps(ctx, ta, 0, 5, NULL);
    mpcl_meta extra[] = {{"epochs_done", "0"}, {"note", "test"}};
    ck_assert_msg(mpcl_checkpoint_save(ta, path, extra, 2) == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_checkpoint *c;
    ck_assert_msg(mpcl_checkpoint_open(ctx, path, &c) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_str_eq(mpcl_checkpoint_meta(c, "note"), "test");
    ck_assert_str_eq(mpcl_checkpoint_meta(c, "kind"), "trainer");
    ck_assert_str_eq(mpcl_checkpoint_meta(c, "step"), "5");
    /* tb was made with the default normalisation (mean 0, std 1), as an
     * app that resumes would: the model takes the checkpoint's, and the
     * trainer trains with it */
    mpcl_normalization nb;
    mpcl_model_normalization(mb, &nb);
    ck_assert(nb.mean[0] == 0.0f && nb.std[0] == 1.0f);
    ck_assert_msg(mpcl_checkpoint_load_trainer(c, tb) == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_checkpoint_close(c);
    mpcl_model_normalization(mb, &nb);
    ck_assert(nb.channels == 1 && nb.mean[0] == 0.5f && nb.std[0] == 0.25f);

    assert_same_tensor("master weights", mpcl_model_master(ma), mpcl_model_master(mb));
    assert_same_tensor("working weights", mpcl_model_working(ma), mpcl_model_working(mb));
    for (int k = 0; k < 2; k++)
        if (mpcl_trainer_state(ta, k))
            assert_same_tensor("optimizer state", mpcl_trainer_state(ta, k), mpcl_trainer_state(tb, k));
    mpcl_param_info ia, ib;
    for (size_t i = 0; mpcl_model_param(ma, i, &ia) == MPCL_OK; i++) {
        ck_assert(mpcl_model_param(mb, i, &ib) == MPCL_OK);
        if (ia.buffer)
            assert_same_tensor(ia.name, ia.buffer, ib.buffer);
    }
    mpcl_scaler_state sa, sb;
    mpcl_trainer_scaler(ta, &sa);
    mpcl_trainer_scaler(tb, &sb);
    ck_assert(sa.scale == sb.scale && sa.growth_tracker == sb.growth_tracker && sa.steps == sb.steps &&
              sa.optimizer_steps == sb.optimizer_steps && sa.skipped_steps == sb.skipped_steps);
    float la[4], lb[4];
    steps(ctx, ta, 5, 4, la);
    steps(ctx, tb, 5, 4, lb);
    ck_assert_msg(memcmp(la, lb, sizeof la) == 0, "losses after the resume differ: %.9g vs %.9g", la[0], lb[0]);
    assert_same_tensor("master weights after 4 more steps", mpcl_model_master(ma), mpcl_model_master(mb));
    mpcl_trainer_destroy(ta);
    mpcl_trainer_destroy(tb);
    mpcl_model_destroy(ma);
    mpcl_model_destroy(mb);
}
END_TEST

/* mpcl_model_save + mpcl_model_load: the loaded model predicts what the
 * original does, with the normalisation it was trained with. */
START_TEST(model_loads_for_inference)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    char path[600];
    path_in(path, sizeof path, "model.safetensors");
    mpcl_model *m, *loaded;
    mpcl_trainer *t;
    make(ctx, SEED_CNN, 3, MPCL_OPT_ADAM, &m, &t);
    steps(ctx, t, 0, 3, NULL);
    ck_assert_msg(mpcl_model_save(m, path, NULL, 0) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(mpcl_model_load(ctx, path, 7, &loaded) == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_normalization nl;
    mpcl_model_normalization(loaded, &nl);
    ck_assert(nl.channels == 1 && nl.mean[0] == 0.5f && nl.std[0] == 0.25f);
    const size_t n = 20; /* three batches of at most 7 */
    float *want = malloc(n * 10 * sizeof *want), *got = malloc(n * 10 * sizeof *got);
    int cls[20];
    ck_assert(mpcl_model_predict(m, images, n, B, want) == MPCL_OK);
    ck_assert_msg(mpcl_model_classify(loaded, images, n, got, cls) == MPCL_OK, "%s", mpcl_last_error(ctx));
    /* The loaded model runs batches of 7, the original batches of B: each
     * batch geometry picks its convolution algorithm by measurement, so the
     * sums may run in another order and, in the 16-bit modes, a stored
     * activation may round the other way. The weights are identical, so the
     * outputs agree to the mode's rounding of one stored value. */
    const double rtol = optest_rtol(optest_modes[_i].mode);
    for (size_t i = 0; i < n; i++) {
        int best = 0;
        for (int c = 0; c < 10; c++) {
            double w = want[i * 10 + c];
            ck_assert_msg(fabs(got[i * 10 + c] - w) <= 1e-6 + rtol * fabs(w), "sample %zu class %d: %.9g vs %.9g",
                          i, c, got[i * 10 + c], w);
            if (got[i * 10 + c] > got[i * 10 + best])
                best = c;
        }
        ck_assert_int_eq(cls[i], best);
    }
    /* a model file is not a training checkpoint */
    mpcl_checkpoint *c;
    ck_assert(mpcl_checkpoint_open(ctx, path, &c) == MPCL_OK);
    ck_assert_int_eq(mpcl_checkpoint_load_trainer(c, t), MPCL_ERR_FORMAT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "not a training checkpoint"), "%s", mpcl_last_error(ctx));
    mpcl_checkpoint_close(c);
    free(want);
    free(got);
    mpcl_model_destroy(loaded);
    mpcl_trainer_destroy(t);
    mpcl_model_destroy(m);
}
END_TEST

/* Refusals name the tensor and leave the target as it was. */
START_TEST(refuses_other_models_and_optimizers)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    char other[600], adam[600];
    path_in(other, sizeof other, "other.safetensors");
    path_in(adam, sizeof adam, "adam.safetensors");
    mpcl_model *mo, *m, *ms;
    mpcl_trainer *to, *t, *ts;
    make(ctx, OTHER_CNN, 1, MPCL_OPT_ADAM, &mo, &to);
    make(ctx, SEED_CNN, 1, MPCL_OPT_ADAM, &m, &t);
    make(ctx, SEED_CNN, 2, MPCL_OPT_SGD, &ms, &ts);
    ck_assert(mpcl_checkpoint_save(to, other, NULL, 0) == MPCL_OK);
    ck_assert(mpcl_checkpoint_save(t, adam, NULL, 0) == MPCL_OK);
    float *before = optest_download(mpcl_model_master(m));
    size_t p = mpcl_tensor_numel(mpcl_model_master(m));

    mpcl_checkpoint *c;
    ck_assert(mpcl_checkpoint_open(ctx, other, &c) == MPCL_OK);
    ck_assert_int_eq(mpcl_checkpoint_load_trainer(c, t), MPCL_ERR_SHAPE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "'0.weight'") && strstr(mpcl_last_error(ctx), "[12, 1, 5, 5]"),
                  "%s", mpcl_last_error(ctx));
    ck_assert_int_eq(mpcl_checkpoint_load_model(c, m), MPCL_ERR_SHAPE);
    mpcl_checkpoint_close(c);
    float *after = optest_download(mpcl_model_master(m));
    ck_assert_msg(memcmp(before, after, p * 4) == 0, "a refused checkpoint changed the weights");
    free(after);

    ck_assert(mpcl_checkpoint_open(ctx, adam, &c) == MPCL_OK);
    ck_assert_int_eq(mpcl_checkpoint_load_trainer(c, ts), MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "'adam'") && strstr(mpcl_last_error(ctx), "'sgd'"), "%s",
                  mpcl_last_error(ctx));
    mpcl_checkpoint_close(c);

    /* a tensor this model does not have, and one it lacks */
    char extra[600];
    path_in(extra, sizeof extra, "extra.safetensors");
    st_file f;
    char err[512];
    ck_assert(st_read(adam, &f, err, sizeof err) == MPCL_OK);
    st_entry *e = calloc(f.count + 1, sizeof *e);
    size_t k = 0;
    for (size_t i = 0; i < f.count; i++) {
        if (strcmp(f.tensors[i].name, "4.bias") == 0)
            continue; /* drop one */
        e[k++] = (st_entry){f.tensors[i].name, f.tensors[i].dtype, f.tensors[i].ndim, f.tensors[i].shape,
                            st_data(&f, &f.tensors[i])};
    }
    ck_assert(st_write(extra, e, k, (const char *const *)f.meta, f.nmeta, err, sizeof err) == MPCL_OK);
    ck_assert(mpcl_checkpoint_open(ctx, extra, &c) == MPCL_OK);
    ck_assert_int_eq(mpcl_checkpoint_load_model(c, m), MPCL_ERR_FORMAT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "no tensor '4.bias'"), "%s", mpcl_last_error(ctx));
    mpcl_checkpoint_close(c);
    uint64_t one[1] = {1};
    float x = 1.0f;
    e[k++] = (st_entry){"4.bias", ST_F32, 1, one, &x}; /* wrong shape */
    ck_assert(st_write(extra, e, k, (const char *const *)f.meta, f.nmeta, err, sizeof err) == MPCL_OK);
    ck_assert(mpcl_checkpoint_open(ctx, extra, &c) == MPCL_OK);
    ck_assert_int_eq(mpcl_checkpoint_load_model(c, m), MPCL_ERR_SHAPE);
    mpcl_checkpoint_close(c);
    e[k - 1] = (st_entry){"9.weight", ST_F32, 1, one, &x}; /* an unknown name; 4.bias still missing */
    for (size_t i = 0; i < f.count; i++)
        if (strcmp(f.tensors[i].name, "4.bias") == 0)
            e[k++] = (st_entry){"4.bias", f.tensors[i].dtype, f.tensors[i].ndim, f.tensors[i].shape,
                                st_data(&f, &f.tensors[i])};
    ck_assert(st_write(extra, e, k, (const char *const *)f.meta, f.nmeta, err, sizeof err) == MPCL_OK);
    ck_assert(mpcl_checkpoint_open(ctx, extra, &c) == MPCL_OK);
    ck_assert_int_eq(mpcl_checkpoint_load_model(c, m), MPCL_ERR_FORMAT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "'9.weight' is not a parameter"), "%s", mpcl_last_error(ctx));
    mpcl_checkpoint_close(c);
    after = optest_download(mpcl_model_master(m));
    ck_assert_msg(memcmp(before, after, p * 4) == 0, "a refused checkpoint changed the weights");
    free(after);
    free(e);
    st_free(&f);

    /* a damaged file: open refuses it with the file's name */
    size_t n;
    uint8_t *b = slurp(adam, &n);
    spill(extra, b, n / 2);
    free(b);
    ck_assert_int_eq(mpcl_checkpoint_open(ctx, extra, &c), MPCL_ERR_FORMAT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), extra), "%s", mpcl_last_error(ctx));
    free(before);
    mpcl_trainer_destroy(to);
    mpcl_trainer_destroy(t);
    mpcl_trainer_destroy(ts);
    mpcl_model_destroy(mo);
    mpcl_model_destroy(m);
    mpcl_model_destroy(ms);
}
END_TEST

/* A checkpoint whose linear layer's weight (3, 4) w and bias (3) b are
 * 16-bit tensors of safetensors dtype `dt` loads into a model of every
 * mode with every value widened exactly (`widen`, the host reference); a
 * file without a spec cannot make a model by itself. */
static void loads_16bit_weights(mpcl_context *ctx, const char *file, st_dtype dt, const uint16_t w[12],
                                const uint16_t b[3], float (*widen)(uint16_t))
{
    char path[600], err[512];
    path_in(path, sizeof path, file);
    mpcl_model *m;
    make(ctx, "input 1x2x2\nflatten\nlinear out=3\n", 1, MPCL_OPT_ADAM, &m, NULL);
    uint64_t sw[2] = {3, 4}, sb[1] = {3};
    st_entry e[2] = {{"1.weight", dt, 2, sw, w}, {"1.bias", dt, 1, sb, b}};
    const char *meta[] = {"input_mean", "0", "input_std", "1"};
    ck_assert(st_write(path, e, 2, meta, 2, err, sizeof err) == MPCL_OK);
    mpcl_checkpoint *c;
    ck_assert(mpcl_checkpoint_open(ctx, path, &c) == MPCL_OK);
    ck_assert_msg(mpcl_checkpoint_load_model(c, m) == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_model_spec spec;
    ck_assert_int_eq(mpcl_checkpoint_spec(c, &spec), MPCL_ERR_FORMAT);
    mpcl_checkpoint_close(c);
    float *master = optest_download(mpcl_model_master(m));
    mpcl_param_info info;
    for (size_t i = 0; mpcl_model_param(m, i, &info) == MPCL_OK; i++) {
        const uint16_t *src = info.numel == 12 ? w : b;
        for (size_t k = 0; k < info.numel; k++)
            ck_assert(master[info.offset + k] == widen(src[k]));
    }
    free(master);
    mpcl_model_destroy(m);
}

/* F16 weights (as a Python tool may write them) are widened exactly. */
START_TEST(loads_f16_weights)
{
    uint16_t w[12], b[3];
    for (int i = 0; i < 12; i++)
        w[i] = mpcl_half_from_float(0.125f * (float)(i - 6));
    for (int i = 0; i < 3; i++)
        b[i] = mpcl_half_from_float(1000.0f + (float)i);
    loads_16bit_weights(optest_modes[_i].ctx, "f16.safetensors", ST_F16, w, b, mpcl_half_to_float);
}
END_TEST

/* BF16 weights (PyTorch's torch.bfloat16 saves as "BF16") are widened
 * exactly, in every mode; the checkpoint's own tensors stay F32. */
START_TEST(loads_bf16_weights)
{
    uint16_t w[12], b[3];
    for (int i = 0; i < 12; i++)
        w[i] = mpcl_bf16_from_float(0.3f * (float)(i - 6));
    for (int i = 0; i < 3; i++)
        b[i] = mpcl_bf16_from_float(1e30f * (float)(i + 1)); /* beyond half's range */
    loads_16bit_weights(optest_modes[_i].ctx, "bf16.safetensors", ST_BF16, w, b, mpcl_bf16_to_float);
}
END_TEST

/* The spec text stored in checkpoints reads back to the same layers. */
START_TEST(spec_format_round_trip)
{
    const char *specs[] = {
        SEED_CNN, BN_CNN,
        "input 3x17x13\nconv2d out=5 kernel=3x2 stride=2x1 padding=1x0 dilation=2x1 bias=false\n"
        "leaky_relu slope=0.2\navgpool2d kernel=2 stride=1 padding=1\ngelu\nconv2d out=2 kernel=1\n"
        "sigmoid\nmaxpool2d kernel=3x2 stride=2\ntanh\nflatten\nlinear out=7 bias=no\n"
        "dropout p=0.1\nlinear out=3\n",
    };
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        mpcl_model_spec a, b;
        char err[256], text[2048];
        ck_assert(mpcl_model_spec_parse(specs[k], "a", &a, err, sizeof err) == MPCL_OK);
        size_t need = mpcl_model_spec_format(&a, NULL, 0);
        ck_assert_uint_eq(mpcl_model_spec_format(&a, text, sizeof text), need);
        ck_assert_uint_lt(need, sizeof text);
        ck_assert_msg(mpcl_model_spec_parse(text, "formatted", &b, err, sizeof err) == MPCL_OK, "%s\n%s", err,
                      text);
        ck_assert_int_eq(a.nlayers, b.nlayers);
        ck_assert_uint_eq(a.params, b.params);
        for (int i = 0; i < a.nlayers; i++) {
            b.layers[i].line = a.layers[i].line;
            ck_assert_msg(memcmp(&a.layers[i], &b.layers[i], sizeof a.layers[i]) == 0,
                          "spec %zu layer %d differs after formatting:\n%s", k, i, text);
        }
        /* a short buffer: truncated, terminated, and the length still right */
        char small[16];
        ck_assert_uint_eq(mpcl_model_spec_format(&a, small, sizeof small), need);
        ck_assert_uint_eq(strlen(small), sizeof small - 1);
    }
}
END_TEST

int main(void)
{
    const char *base = getenv("MPCL_TEST_TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/mpcl-ckpt-XXXXXX", base && *base ? base : "/tmp");
    if (base && *base)
        mkdir(base, 0755);
    if (!mkdtemp(tmpdir)) {
        printf("cannot create a temporary directory %s: %s\n", tmpdir, strerror(errno));
        return 1;
    }
    uint64_t r = 7;
    for (size_t i = 0; i < sizeof images; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        images[i] = (uint8_t)(r >> 56);
    }
    for (size_t i = 0; i < sizeof labels; i++)
        labels[i] = (uint8_t)(i * 7 % 10);
    optest_init();
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("safetensors");
    tcase_add_test(tc, st_round_trip);
    tcase_add_loop_test(tc, st_rejects_malformed, 0, (int)(sizeof BAD / sizeof BAD[0]));
    tcase_add_test(tc, st_truncated_and_corrupted);
    tcase_add_test(tc, st_failed_writes_keep_the_old_file);
    tcase_add_test(tc, spec_format_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("checkpoints");
    tcase_add_loop_test(tc, trainer_resumes_exactly, 0, 2 * optest_nmodes);
    tcase_add_loop_test(tc, model_loads_for_inference, 0, optest_nmodes);
    tcase_add_loop_test(tc, refuses_other_models_and_optimizers, 0, optest_nmodes);
    tcase_add_loop_test(tc, loads_f16_weights, 0, optest_nmodes);
    tcase_add_loop_test(tc, loads_bf16_weights, 0, optest_nmodes);
    suite_add_tcase(s, tc);
    int rc = optest_run(s);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return rc;
}
