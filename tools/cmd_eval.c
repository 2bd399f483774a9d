/* cmd_eval.c — `mpcl eval` and `mpcl predict`: a checkpoint's accuracy on a
 * labelled set (IDX or CIFAR-10), and its classes for PGM / PPM images or an
 * IDX file. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

#include "cli.h"

#define MAX_CLASSES 1000
#define NAME_LEN 64
#define DEFAULT_BATCH 256UL

/* What both subcommands need: a model from a checkpoint on a device. */
typedef struct {
    const char *checkpoint;
    const char *model;  /* a spec file for checkpoints without model_spec */
    const char *device;
    mpcl_precision precision;
    unsigned long batch;
    unsigned long limit; /* eval: samples; predict: images per IDX file; 0: all */
    int json;
} load_args;

typedef struct {
    mpcl_context *ctx;
    mpcl_model *model;
    size_t classes;
    char (*names)[NAME_LEN]; /* classes names */
    char model_desc[256];
    int has_names; /* the checkpoint named its classes */
} loaded;

static void loaded_free(loaded *l)
{
    mpcl_model_destroy(l->model);
    mpcl_context_destroy(l->ctx);
    free(l->names);
    memset(l, 0, sizeof *l);
}

/* Class names from the checkpoint's "class_names" (comma-separated), else
 * fallback (may be NULL), else "class N". */
static void set_names(loaded *l, const char *meta, const char *const *fallback, size_t nfallback)
{
    for (size_t i = 0; i < l->classes; i++) {
        if (fallback && i < nfallback && fallback[i])
            snprintf(l->names[i], NAME_LEN, "%s", fallback[i]);
        else
            snprintf(l->names[i], NAME_LEN, "class %zu", i);
    }
    if (!meta)
        return;
    size_t i = 0;
    for (const char *p = meta; *p && i < l->classes; i++) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n > 0)
            snprintf(l->names[i], NAME_LEN, "%.*s", (int)(n < NAME_LEN ? n : NAME_LEN - 1), p);
        p += n + (comma != NULL);
    }
}

static int load_model(const char *cmd, const load_args *a, loaded *l)
{
    memset(l, 0, sizeof *l);
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.device = a->device;
    opt.precision = a->precision;
    mpcl_checkpoint *ck = NULL;
    mpcl_model_spec *spec = calloc(1, sizeof *spec);
    char path[4096], searched[2048], err[2048];
    int rc = EXIT_OK;
    if (!spec)
        return runtime_error(MPCL_ERR_NOMEM, "out of host memory");
    if (a->model && !resolve_model(a->model, path, sizeof path, searched, sizeof searched)) {
        free(spec);
        return usage_error(cmd, "--model: '%s' is not a file, and there is no %s or %s.txt in %s",
                           a->model, a->model, a->model, searched);
    }
    mpcl_status s = MPCL_OK;
    if (a->model && (s = mpcl_model_spec_load(path, spec, err, sizeof err)) != MPCL_OK) {
        free(spec);
        return runtime_error(s, err);
    }
    s = cli_context_create(&opt, &l->ctx);
    if (s == MPCL_OK)
        s = mpcl_checkpoint_open(l->ctx, a->checkpoint, &ck);
    if (s == MPCL_OK && !a->model)
        s = mpcl_checkpoint_spec(ck, spec);
    uint64_t seed = 0;
    const char *seed_s = ck ? mpcl_checkpoint_meta(ck, "seed") : NULL;
    if (seed_s)
        parse_u64(seed_s, &seed);
    const mpcl_layer_spec *last = s == MPCL_OK ? &spec->layers[spec->nlayers - 1] : NULL;
    if (s == MPCL_OK && (last->out_ndim != 1 || last->out_shape[0] > MAX_CLASSES)) {
        fprintf(stderr, "mpcl: %s: the model's last layer does not give 1..%d class scores\n",
                a->checkpoint, MAX_CLASSES);
        rc = EXIT_RUNTIME;
        goto out;
    }
    mpcl_model_options mo;
    mpcl_model_options_init(&mo);
    mo.max_batch = a->batch;
    mo.seed = seed;
    mo.inference = 1; /* forward passes only: outputs freed after their last reader */
    if (s == MPCL_OK)
        s = mpcl_model_create_with(l->ctx, spec, &mo, &l->model);
    if (s == MPCL_OK)
        s = mpcl_checkpoint_load_model(ck, l->model);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(l->ctx));
        goto out;
    }
    l->classes = last->out_shape[0];
    l->names = calloc(l->classes, sizeof *l->names);
    if (!l->names) {
        rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        goto out;
    }
    set_names(l, mpcl_checkpoint_meta(ck, "class_names"), NULL, 0);
    l->has_names = mpcl_checkpoint_meta(ck, "class_names") != NULL;
    const char *epochs = mpcl_checkpoint_meta(ck, "epochs_done");
    const char *step = mpcl_checkpoint_meta(ck, "step");
    snprintf(l->model_desc, sizeof l->model_desc, "%d layers, %zu parameters%s%s%s%s%s",
             spec->nlayers, mpcl_model_param_count(l->model), epochs ? ", trained " : "",
             epochs ? epochs : "", epochs ? " epochs" : "", step ? ", step " : "", step ? step : "");
out:
    mpcl_checkpoint_close(ck);
    free(spec);
    if (rc != EXIT_OK)
        loaded_free(l);
    return rc;
}

/* Images must fit the model's input (channels, rows, columns). */
static int check_images(const loaded *l, const char *path, const mpcl_idx *im)
{
    const mpcl_model_spec *sp = mpcl_model_get_spec(l->model);
    if (sp->input[0] != im->channels || sp->input[1] != im->rows || sp->input[2] != im->cols) {
        fprintf(stderr, "mpcl: %s: the image%s %zux%zux%zu (%s, %zu rows x %zu columns), but "
                        "the model takes %zux%zux%zu (channels x rows x columns)\n", path,
                im->count == 1 ? " is" : "s are", im->channels, im->rows, im->cols,
                im->channels == 1 ? "grey" : im->channels == 3 ? "colour" : "channels", im->rows,
                im->cols, sp->input[0], sp->input[1], sp->input[2]);
        return EXIT_RUNTIME;
    }
    return EXIT_OK;
}

/* Shared options: their parse. Returns -1 when c is not one of them. */
enum {
    OPT_MODEL = OPT_BASE,
    OPT_DEVICE,
    OPT_PRECISION,
    OPT_BATCH,
    OPT_JSON,
    OPT_LIMIT,
    OPT_HELP,
    OPT_DATA,
    OPT_IMAGES,
    OPT_LABELS,
    OPT_TOP,
};

/* The next option of argv: -1 at the end, 0 when it was a common option
 * (handled), 1 for the caller's own options (c), else an exit code + 2. */
static int common_option(const char *cmd, int c, load_args *a);
static int next_option(const char *cmd, int argc, char **argv, const struct option *opts, load_args *a,
                       int *c)
{
    *c = getopt_long(argc, argv, ":h", opts, NULL);
    if (*c == -1)
        return -1;
    int r = common_option(cmd, *c, a);
    return r < 0 ? 1 : r == EXIT_OK ? 0 : r + 2;
}

static int common_option(const char *cmd, int c, load_args *a)
{
    switch (c) {
    case OPT_MODEL:
        if (!*optarg)
            return usage_error(cmd, "--model: the value is empty; it accepts a model spec file");
        a->model = optarg;
        return EXIT_OK;
    case OPT_DEVICE:
        if (!*optarg)
            return usage_error(cmd, "--device: the selector is empty; it accepts P:D, gpu, cpu, "
                                    "accelerator or part of a device or platform name");
        a->device = optarg;
        return EXIT_OK;
    case OPT_PRECISION:
        if (mpcl_precision_parse(optarg, &a->precision) != MPCL_OK)
            return usage_error(cmd, "--precision: '%s' is not valid; it accepts auto, fp16, "
                                    "fp16-storage, fp32 or bf16", optarg);
        return EXIT_OK;
    case OPT_BATCH:
        if (!parse_uint(optarg, 1, 65536, &a->batch))
            return usage_error(cmd, "--batch: '%s' is not valid; it accepts an integer from 1 to "
                                    "65536", optarg);
        return EXIT_OK;
    case OPT_JSON: a->json = 1; return EXIT_OK;
    case OPT_LIMIT:
        if (!parse_uint(optarg, 1, ULONG_MAX, &a->limit))
            return usage_error(cmd, "--limit: '%s' is not valid; it accepts an integer >= 1", optarg);
        return EXIT_OK;
    default: return -1;
    }
}

#define COMMON_HELP                                                                          \
    "  --model FILE        the model spec, for a checkpoint without one (e.g. written by\n"  \
    "                      another tool); default: the checkpoint's own\n"                   \
    "  --device SEL        P:D, gpu, cpu, accelerator or part of a device or platform name\n" \
    "  --precision MODE    auto, fp16, fp16-storage, fp32 or bf16 (default: auto)\n"               \
    "  --batch N           samples per forward pass, 1..65536 (default: 256)\n"              \
    "  --json              print one JSON document instead of text\n"                        \
    "  -h, --help          show this help\n"

#define COMMON_OPTIONS                                                                        \
    {"model", required_argument, NULL, OPT_MODEL},                                            \
        {"device", required_argument, NULL, OPT_DEVICE},                                      \
        {"precision", required_argument, NULL, OPT_PRECISION},                                \
        {"batch", required_argument, NULL, OPT_BATCH}, {"json", no_argument, NULL, OPT_JSON}, \
        {"limit", required_argument, NULL, OPT_LIMIT}, {"help", no_argument, NULL, OPT_HELP}

/* ================================================================= eval */

static const char EVAL_HELP[] =
    "usage: mpcl eval CHECKPOINT [options]\n"
    "\n"
    "Evaluates a checkpoint (written by 'mpcl train --save', or any safetensors file\n"
    "with the model's tensors) on a labelled set: accuracy, mean cross-entropy loss and\n"
    "a confusion matrix. See docs/checkpoints.md.\n"
    "\n"
    "data (default: the test set of " MPCL_DEFAULT_DATA_DIR "):\n"
    "  --data DIR          an MNIST-layout directory (its t10k test set) or CIFAR-10's\n"
    "                      binary version (its test_batch.bin)\n"
    "  --images FILE       an IDX image file (idx3, .gz allowed), with --labels\n"
    "  --labels FILE       an IDX label file (idx1), with --images\n"
    "  --limit N           the first N samples only\n"
    "\n" COMMON_HELP
    "\n"
    "exit codes: 0 success, 1 runtime failure (checkpoint, data, OpenCL), 2 usage error,\n"
    "3 no device, 4 precision refused by the device\n";

static const struct option EVAL_OPTIONS[] = {
    COMMON_OPTIONS,
    {"data", required_argument, NULL, OPT_DATA},
    {"images", required_argument, NULL, OPT_IMAGES},
    {"labels", required_argument, NULL, OPT_LABELS},
    {NULL, 0, NULL, 0},
};

static int eval_json(const load_args *a, const loaded *l, const char *source, size_t n,
                     double acc, double loss, const uint64_t *conf, double img_s)
{
    jctx j = {1};
    cJSON *root = jcheck(&j, cJSON_CreateObject());
    if (!root)
        return json_print(&j, root);
    jstr(&j, root, "checkpoint", a->checkpoint);
    jstr(&j, root, "data", source);
    jstr(&j, root, "precision", mpcl_precision_name(mpcl_precision_chosen(l->ctx, NULL)));
    jnum(&j, root, "samples", (double)n);
    uint64_t correct = 0;
    for (size_t c = 0; c < l->classes; c++)
        correct += conf[c * l->classes + c];
    jnum(&j, root, "correct", (double)correct);
    jnum(&j, root, "accuracy", acc);
    jnum(&j, root, "loss", loss);
    jnum(&j, root, "img_per_s", img_s);
    cJSON *names = jcheck(&j, cJSON_AddArrayToObject(root, "class_names"));
    cJSON *rows = jcheck(&j, cJSON_AddArrayToObject(root, "confusion"));
    for (size_t r = 0; names && rows && r < l->classes; r++) {
        cJSON_AddItemToArray(names, jcheck(&j, cJSON_CreateString(l->names[r])));
        cJSON *row = jcheck(&j, cJSON_CreateArray());
        for (size_t c = 0; row && c < l->classes; c++)
            cJSON_AddItemToArray(row, jcheck(&j, cJSON_CreateNumber((double)conf[r * l->classes + c])));
        if (row)
            cJSON_AddItemToArray(rows, row);
    }
    return json_print(&j, root);
}

int cmd_eval(int argc, char **argv)
{
    const char *cmd = "eval";
    load_args a = {.precision = MPCL_PRECISION_AUTO, .batch = DEFAULT_BATCH};
    const char *data = NULL, *images = NULL, *labels = NULL;
    opterr = 0;
    int c, r;
    while ((r = next_option(cmd, argc, argv, EVAL_OPTIONS, &a, &c)) >= 0) {
        if (r != 1) {
            if (r > 1)
                return r - 2;
            continue;
        }
        switch (c) {
        case OPT_DATA: data = optarg; break;
        case OPT_IMAGES: images = optarg; break;
        case OPT_LABELS: labels = optarg; break;
        case 'h':
        case OPT_HELP: fputs(EVAL_HELP, stdout); return EXIT_OK;
        default: return option_error(cmd, EVAL_OPTIONS, c, argc, argv);
        }
    }
    if (optind >= argc)
        return usage_error(cmd, "expected the checkpoint file (mpcl eval CHECKPOINT)");
    if (optind + 1 < argc)
        return usage_error(cmd, "unexpected argument '%s' after the checkpoint", argv[optind + 1]);
    a.checkpoint = argv[optind];
    if ((images != NULL) != (labels != NULL))
        return usage_error(cmd, "--images and --labels go together");
    if (data && images)
        return usage_error(cmd, "give either --data DIR or --images and --labels, not both");

    /* data first: it needs no device */
    char err[2048], source[4200];
    mpcl_dataset ds;
    mpcl_idx im, lb;
    memset(&ds, 0, sizeof ds);
    memset(&im, 0, sizeof im);
    memset(&lb, 0, sizeof lb);
    int have_ds = 0;
    mpcl_status s;
    const mpcl_idx *X, *Y;
    if (images) {
        s = mpcl_idx_load(images, &im, err, sizeof err);
        if (s == MPCL_OK)
            s = mpcl_idx_load(labels, &lb, err, sizeof err);
        if (s != MPCL_OK) {
            mpcl_idx_free(&im);
            return runtime_error(s, err);
        }
        if (im.ndim != 3 || lb.ndim != 1 || im.count != lb.count) {
            fprintf(stderr, "mpcl: %s and %s: expected idx3 images and idx1 labels of the same "
                            "count, got idx%d of %zu and idx%d of %zu\n", images, labels, im.ndim,
                    im.count, lb.ndim, lb.count);
            mpcl_idx_free(&im);
            mpcl_idx_free(&lb);
            return EXIT_RUNTIME;
        }
        X = &im;
        Y = &lb;
        snprintf(source, sizeof source, "%s, %s", images, labels);
    } else {
        s = mpcl_dataset_load(data, &ds, err, sizeof err);
        if (s != MPCL_OK)
            return runtime_error(s, err);
        have_ds = 1;
        X = &ds.test_images;
        Y = &ds.test_labels;
        snprintf(source, sizeof source, "%s (test set)", data ? data : MPCL_DEFAULT_DATA_DIR);
    }
    size_t n = X->count;
    int rc = EXIT_OK;
    loaded l;
    memset(&l, 0, sizeof l);
    uint64_t *conf = NULL;
    if (a.limit > n) {
        rc = usage_error(cmd, "--limit: %lu is more than the %zu samples in %s", a.limit, n, source);
        goto done;
    }
    if (a.limit)
        n = a.limit;
    rc = load_model(cmd, &a, &l);
    if (rc != EXIT_OK)
        goto done;
    if ((rc = check_images(&l, images ? images : source, X)) != EXIT_OK)
        goto done;
    for (size_t i = 0; i < n; i++)
        if (Y->data[i] >= l.classes) {
            fprintf(stderr, "mpcl: %s: label %u of sample %zu is not one of the model's %zu "
                            "classes\n", labels ? labels : source, Y->data[i], i, l.classes);
            rc = EXIT_RUNTIME;
            goto done;
        }
    if (!l.has_names && have_ds)
        set_names(&l, NULL, ds.class_names, MPCL_DATASET_CLASSES);
    conf = calloc(l.classes * l.classes, sizeof *conf);
    if (!conf) {
        rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        goto done;
    }
    double loss = 0, acc = 0, t0 = now_s();
    s = mpcl_model_evaluate(l.model, X->data, Y->data, n, a.batch, &loss, &acc, conf);
    double dt = now_s() - t0;
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(l.ctx));
        goto done;
    }
    double img_s = dt > 0 ? (double)n / dt : 0.0;
    if (a.json) {
        rc = eval_json(&a, &l, source, n, acc, loss, conf, img_s);
        goto done;
    }
    uint64_t correct = 0;
    for (size_t k = 0; k < l.classes; k++)
        correct += conf[k * l.classes + k];
    printf("mpcl %s eval\n\n", mpcl_version());
    fieldf("checkpoint", "%s: %s", a.checkpoint, l.model_desc);
    fieldf("data", "%s: %zu samples", source, n);
    fieldf("precision", "%s (requested %s)", mpcl_precision_name(mpcl_precision_chosen(l.ctx, NULL)),
           mpcl_precision_name(a.precision));
    printf("\nResult\n");
    fieldf("accuracy", "%.2f%% (%" PRIu64 " of %zu)", 100.0 * acc, correct, n);
    fieldf("loss", "%.4f (mean cross-entropy)", loss);
    fieldf("speed", "%.0f img/s", img_s);
    if (l.classes == MPCL_DATASET_CLASSES) {
        const char *names[MPCL_DATASET_CLASSES];
        for (int k = 0; k < MPCL_DATASET_CLASSES; k++)
            names[k] = l.names[k];
        print_confusion(conf, names);
    }
    rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
done:
    free(conf);
    loaded_free(&l);
    mpcl_idx_free(&im);
    mpcl_idx_free(&lb);
    if (have_ds)
        mpcl_dataset_free(&ds);
    return rc;
}

/* ============================================================== predict */

static const char PREDICT_HELP[] =
    "usage: mpcl predict CHECKPOINT FILE... [options]\n"
    "\n"
    "Classifies images with a checkpoint: each FILE is a PGM image (P5 or P2, grey), a\n"
    "PPM image (P6 or P3, colour: for a model with 3 input channels, e.g. one trained\n"
    "on CIFAR-10) or an IDX image file (idx3, .gz allowed), of the model's input size\n"
    "(channels x rows x columns). Prints one line per image: the file (and index, for\n"
    "IDX), the class name and its probability.\n"
    "\n"
    "options:\n"
    "  --top K             the K most probable classes per image (default: 1)\n"
    "  --limit N           the first N images of each IDX file only\n"
    COMMON_HELP
    "\n"
    "exit codes: 0 success, 1 runtime failure (checkpoint, image, OpenCL), 2 usage error,\n"
    "3 no device, 4 precision refused by the device\n";

static const struct option PREDICT_OPTIONS[] = {
    COMMON_OPTIONS,
    {"top", required_argument, NULL, OPT_TOP},
    {NULL, 0, NULL, 0},
};

/* The images of one FILE: an IDX file when it starts with IDX's magic
 * (0x00 0x00 0x08 0x03, or gzip's 0x1f 0x8b), else PGM or PPM. */
static mpcl_status load_images(const char *path, mpcl_idx *out, int *is_idx, char *err, size_t len)
{
    *is_idx = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, len, "%s: cannot open: %s", path, strerror(errno));
        return MPCL_ERR_IO;
    }
    unsigned char m[2] = {0, 0};
    size_t got = fread(m, 1, 2, f);
    fclose(f);
    if (got == 2 && ((m[0] == 0 && m[1] == 0) || (m[0] == 0x1f && m[1] == 0x8b))) {
        *is_idx = 1;
        mpcl_status s = mpcl_idx_load(path, out, err, len);
        if (s == MPCL_OK && out->ndim != 3) {
            snprintf(err, len, "%s: an idx%d file; predict takes images (idx3)", path, out->ndim);
            mpcl_idx_free(out);
            return MPCL_ERR_FORMAT;
        }
        return s;
    }
    return mpcl_image_load(path, out, err, len);
}

int cmd_predict(int argc, char **argv)
{
    const char *cmd = "predict";
    load_args a = {.precision = MPCL_PRECISION_AUTO, .batch = DEFAULT_BATCH};
    unsigned long top = 1;
    opterr = 0;
    int c, r;
    while ((r = next_option(cmd, argc, argv, PREDICT_OPTIONS, &a, &c)) >= 0) {
        if (r != 1) {
            if (r > 1)
                return r - 2;
            continue;
        }
        switch (c) {
        case OPT_TOP:
            if (!parse_uint(optarg, 1, MAX_CLASSES, &top))
                return usage_error(cmd, "--top: '%s' is not valid; it accepts an integer from 1 "
                                        "to the number of classes", optarg);
            break;
        case 'h':
        case OPT_HELP: fputs(PREDICT_HELP, stdout); return EXIT_OK;
        default: return option_error(cmd, PREDICT_OPTIONS, c, argc, argv);
        }
    }
    if (argc - optind < 2)
        return usage_error(cmd, "expected the checkpoint and at least one image file "
                                "(mpcl predict CHECKPOINT FILE...)");
    a.checkpoint = argv[optind];
    /* every image is read and checked before the device is touched */
    int nfiles = argc - optind - 1;
    char **files = argv + optind + 1;
    mpcl_idx *im = calloc((size_t)nfiles, sizeof *im);
    int *is_idx = calloc((size_t)nfiles, sizeof *is_idx);
    if (!im || !is_idx) {
        free(im);
        free(is_idx);
        return runtime_error(MPCL_ERR_NOMEM, "out of host memory");
    }
    char err[2048];
    int rc = EXIT_OK;
    loaded l;
    memset(&l, 0, sizeof l);
    float *probs = NULL;
    uint8_t *all = NULL;
    cJSON *root = NULL;
    jctx j = {1};
    size_t total = 0;
    for (int i = 0; i < nfiles; i++) {
        mpcl_status s = load_images(files[i], &im[i], &is_idx[i], err, sizeof err);
        if (s != MPCL_OK) {
            rc = runtime_error(s, err);
            goto done;
        }
        if (a.limit && im[i].count > a.limit)
            im[i].count = a.limit;
        total += im[i].count;
    }
    rc = load_model(cmd, &a, &l);
    if (rc != EXIT_OK)
        goto done;
    for (int i = 0; i < nfiles; i++) /* every file has the model's shape, so the same one */
        if ((rc = check_images(&l, files[i], &im[i])) != EXIT_OK)
            goto done;
    if (top > l.classes)
        top = l.classes;
    size_t sample = mpcl_idx_sample_bytes(&im[0]);
    all = malloc(total * sample);
    probs = malloc(total * l.classes * sizeof *probs);
    if (!all || !probs) {
        rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        goto done;
    }
    size_t at = 0;
    for (int i = 0; i < nfiles; i++) {
        memcpy(all + at * sample, im[i].data, im[i].count * sample);
        at += im[i].count;
    }
    mpcl_status s = mpcl_model_classify(l.model, all, total, probs, NULL);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(l.ctx));
        goto done;
    }
    cJSON *arr = NULL;
    if (a.json) {
        root = jcheck(&j, cJSON_CreateObject());
        if (root) {
            jstr(&j, root, "checkpoint", a.checkpoint);
            jstr(&j, root, "precision", mpcl_precision_name(mpcl_precision_chosen(l.ctx, NULL)));
            arr = jcheck(&j, cJSON_AddArrayToObject(root, "predictions"));
        }
    }
    at = 0;
    for (int i = 0; i < nfiles; i++) {
        for (size_t k = 0; k < im[i].count; k++, at++) {
            const float *p = probs + at * l.classes;
            /* the top classes, most probable first (ties: the lower class) */
            size_t order[MAX_CLASSES];
            for (size_t q = 0; q < l.classes; q++)
                order[q] = q;
            for (size_t q = 0; q < top; q++)
                for (size_t r = q + 1; r < l.classes; r++)
                    if (p[order[r]] > p[order[q]])
                        order[q] ^= order[r], order[r] ^= order[q], order[q] ^= order[r];
            if (a.json && arr) {
                cJSON *o = jcheck(&j, cJSON_CreateObject());
                if (!o)
                    break;
                cJSON_AddItemToArray(arr, o);
                jstr(&j, o, "file", files[i]);
                jnum(&j, o, "index", (double)k);
                jnum(&j, o, "class", (double)order[0]);
                jstr(&j, o, "name", l.names[order[0]]);
                jnum(&j, o, "probability", (double)p[order[0]]);
                cJSON *t = jcheck(&j, cJSON_AddArrayToObject(o, "top"));
                for (size_t q = 0; t && q < top; q++) {
                    cJSON *e = jcheck(&j, cJSON_CreateObject());
                    if (!e)
                        break;
                    cJSON_AddItemToArray(t, e);
                    jnum(&j, e, "class", (double)order[q]);
                    jstr(&j, e, "name", l.names[order[q]]);
                    jnum(&j, e, "probability", (double)p[order[q]]);
                }
                continue;
            }
            if (is_idx[i])
                printf("%s[%zu]: ", files[i], k);
            else
                printf("%s: ", files[i]);
            for (size_t q = 0; q < top; q++)
                printf("%s%s %.2f%%", q ? ", " : "", l.names[order[q]], 100.0 * (double)p[order[q]]);
            printf("\n");
        }
    }
    if (a.json) {
        rc = json_print(&j, root);
        root = NULL;
    } else {
        rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
    }
done:
    cJSON_Delete(root);
    for (int i = 0; i < nfiles; i++)
        mpcl_idx_free(&im[i]);
    free(im);
    free(is_idx);
    free(all);
    free(probs);
    loaded_free(&l);
    return rc;
}
