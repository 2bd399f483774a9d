/* cmd_precision.c — `mpcl precision`: what fp16 and bf16 would do to each
 * tensor of a model, measured in FP32 on the device by the library's
 * precision report (mpcl_precision_report_*; docs/precision.md), with
 * advice in plain words, JSON, and a plot through tools/plot.py. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

#include "cli.h"

#define DEFAULT_BATCHES 4UL
#define DEFAULT_BATCH 64UL

static const char HELP[] =
    "usage: mpcl precision CHECKPOINT [options]\n"
    "       mpcl precision --model SPEC [options]\n"
    "\n"
    "Runs a few training batches forward and backward in FP32 on the device and\n"
    "reports, for every weight, layer output, output gradient and weight gradient,\n"
    "the range of its magnitudes, a histogram of base-2 exponents, and the share of\n"
    "values fp16 would flush to zero, make subnormal or overflow (gradients also at\n"
    "the loss scale), and that bf16 would round with a relative error above 2^-8.\n"
    "It ends with advice: the loss scales that keep the gradients representable in\n"
    "fp16, the tensors that overflow it, and whether fp16-storage or bf16 is safer.\n"
    "The weights are not changed. See docs/precision.md.\n"
    "\n"
    "model:\n"
    "  CHECKPOINT          a checkpoint of 'mpcl train --save' (its spec, weights,\n"
    "                      normalisation and loss scale)\n"
    "  --model SPEC        a model spec (file, or a name from data/models) with fresh\n"
    "                      weights (--seed); with CHECKPOINT: the spec for a\n"
    "                      checkpoint without one\n"
    "  --seed N            the fresh weights' seed (default: 1)\n"
    "\n"
    "data (default: the training set of " MPCL_DEFAULT_DATA_DIR "):\n"
    "  --data DIR          an MNIST-layout directory or CIFAR-10's binary version\n"
    "  --batches N         batches to measure, 1..10000 (default: 4)\n"
    "  --batch N           samples per batch, 1..65536 (default: 64)\n"
    "\n"
    "output:\n"
    "  --loss-scale S      the scale for the scaled gradients (default: the\n"
    "                      checkpoint's scaler, else 65536, the dynamic start)\n"
    "  --json              print one JSON document (docs/precision.md) instead of text\n"
    "  --plot FILE.png     also draw the exponent histograms (tools/plot.py; needs\n"
    "                      Python 3 and matplotlib; $MPCL_PYTHON chooses the Python)\n"
    "  --save-values FILE  write every measured value (unscaled) as a safetensors\n"
    "                      file, one 1-D F32 tensor per tensor of the report\n"
    "  --device SEL        P:D, gpu, cpu, accelerator or part of a device or platform name\n"
    "  -h, --help          show this help\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure (checkpoint, data, OpenCL, plot), 2 usage\n"
    "error, 3 no device\n";

enum {
    OPT_MODEL = OPT_BASE,
    OPT_SEED,
    OPT_DATA,
    OPT_BATCHES,
    OPT_BATCH,
    OPT_SCALE,
    OPT_JSON,
    OPT_PLOT,
    OPT_SAVE_VALUES,
    OPT_DEVICE,
    OPT_HELP,
};

static const struct option OPTIONS[] = {
    {"model", required_argument, NULL, OPT_MODEL},
    {"seed", required_argument, NULL, OPT_SEED},
    {"data", required_argument, NULL, OPT_DATA},
    {"batches", required_argument, NULL, OPT_BATCHES},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"loss-scale", required_argument, NULL, OPT_SCALE},
    {"json", no_argument, NULL, OPT_JSON},
    {"plot", required_argument, NULL, OPT_PLOT},
    {"save-values", required_argument, NULL, OPT_SAVE_VALUES},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

typedef struct {
    const char *checkpoint, *model, *data, *plot, *save_values, *device;
    uint64_t seed;
    unsigned long batches, batch;
    double scale; /* 0: the default */
    int json;
} args;

static int parse_args(int argc, char **argv, args *a, int *done)
{
    const char *cmd = "precision";
    *done = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", OPTIONS, NULL)) != -1) {
        switch (c) {
        case OPT_MODEL: a->model = optarg; break;
        case OPT_SEED:
            if (!parse_u64(optarg, &a->seed))
                return usage_error(cmd, "--seed: '%s' is not an unsigned integer", optarg);
            break;
        case OPT_DATA: a->data = optarg; break;
        case OPT_BATCHES:
            if (!parse_uint(optarg, 1, 10000, &a->batches))
                return usage_error(cmd, "--batches: '%s' is not valid; it accepts 1 to 10000", optarg);
            break;
        case OPT_BATCH:
            if (!parse_uint(optarg, 1, 65536, &a->batch))
                return usage_error(cmd, "--batch: '%s' is not valid; it accepts 1 to 65536", optarg);
            break;
        case OPT_SCALE:
            if (!parse_real(optarg, 0.0, 1, 0x1p24, &a->scale))
                return usage_error(cmd, "--loss-scale: '%s' is not valid; it accepts a number > 0 "
                                        "and at most 16777216 (2^24)", optarg);
            break;
        case OPT_JSON: a->json = 1; break;
        case OPT_PLOT:
            if (!*optarg)
                return usage_error(cmd, "--plot: the file name is empty");
            a->plot = optarg;
            break;
        case OPT_SAVE_VALUES:
            if (!*optarg)
                return usage_error(cmd, "--save-values: the file name is empty");
            a->save_values = optarg;
            break;
        case OPT_DEVICE:
            if (!*optarg)
                return usage_error(cmd, "--device: the selector is empty");
            a->device = optarg;
            break;
        case 'h':
        case OPT_HELP:
            fputs(HELP, stdout);
            *done = 1;
            return EXIT_OK;
        default: return option_error(cmd, OPTIONS, c, argc, argv);
        }
    }
    if (optind < argc)
        a->checkpoint = argv[optind++];
    if (optind < argc)
        return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    if (!a->checkpoint && !a->model)
        return usage_error(cmd, "expected a checkpoint (mpcl precision CHECKPOINT) or --model SPEC");
    return EXIT_OK;
}

/* The model on an FP32 context: from the checkpoint (weights, normalisation,
 * loss scale) or fresh from the spec (normalisation measured on the data). */
typedef struct {
    mpcl_context *ctx;
    mpcl_model *model;
    float scale;
    const char *scale_from;
    char desc[4400];
} setup;

static int make_model(const args *a, const mpcl_dataset *ds, size_t n, setup *st)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.device = a->device;
    opt.precision = MPCL_PRECISION_FP32; /* the report measures in FP32 */
    mpcl_model_spec *spec = calloc(1, sizeof *spec);
    if (!spec)
        return runtime_error(MPCL_ERR_NOMEM, "out of host memory");
    char path[4096], searched[2048], err[2048];
    mpcl_checkpoint *ck = NULL;
    int rc = EXIT_OK;
    mpcl_status s = MPCL_OK;
    if (a->model) {
        if (!resolve_model(a->model, path, sizeof path, searched, sizeof searched)) {
            free(spec);
            return usage_error("precision", "--model: '%s' is not a file, and there is no %s or %s.txt "
                               "in %s", a->model, a->model, a->model, searched);
        }
        if ((s = mpcl_model_spec_load(path, spec, err, sizeof err)) != MPCL_OK) {
            free(spec);
            return runtime_error(s, err);
        }
    }
    s = cli_context_create(&opt, &st->ctx);
    if (s == MPCL_OK && a->checkpoint)
        s = mpcl_checkpoint_open(st->ctx, a->checkpoint, &ck);
    if (s == MPCL_OK && ck && !a->model)
        s = mpcl_checkpoint_spec(ck, spec);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(st->ctx));
        goto out;
    }
    if (spec->kind == MPCL_MODEL_GPT) {
        fprintf(stderr, "mpcl: %s: a language model (gpt spec): mpcl precision takes image "
                        "classifiers (sequential and graph specs)\n", a->checkpoint ? a->checkpoint : path);
        rc = EXIT_RUNTIME;
        goto out;
    }
    if (spec->input[0] != ds->train_images.channels || spec->input[1] != ds->train_images.rows ||
        spec->input[2] != ds->train_images.cols) {
        fprintf(stderr, "mpcl: %s: the model takes %zux%zux%zu inputs, but the data's images are "
                        "%zux%zux%zu (channels x rows x columns)\n",
                a->checkpoint ? a->checkpoint : path, spec->input[0], spec->input[1], spec->input[2],
                ds->train_images.channels, ds->train_images.rows, ds->train_images.cols);
        rc = EXIT_RUNTIME;
        goto out;
    }
    mpcl_model_options mo;
    mpcl_model_options_init(&mo);
    mo.max_batch = a->batch;
    mo.seed = a->seed;
    s = mpcl_model_create_with(st->ctx, spec, &mo, &st->model);
    if (s == MPCL_OK && ck)
        s = mpcl_checkpoint_load_model(ck, st->model);
    if (s == MPCL_OK && !ck) {
        mpcl_normalization norm;
        const mpcl_idx *im = &ds->train_images;
        mpcl_normalization_measure(&norm, im->data, n, im->channels, im->rows * im->cols);
        s = mpcl_model_set_normalization(st->model, &norm);
    }
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(st->ctx));
        goto out;
    }
    const char *ck_scale = ck ? mpcl_checkpoint_meta(ck, "loss_scale") : NULL;
    const char *ck_mode = ck ? mpcl_checkpoint_meta(ck, "precision") : NULL;
    double v = 0;
    st->scale = 65536.0f;
    st->scale_from = "the dynamic scaler's start";
    if (a->scale > 0) {
        st->scale = (float)a->scale;
        st->scale_from = "--loss-scale";
    } else if (ck_scale && parse_real(ck_scale, 0.0, 1, 0x1p24, &v) && v > 1.0) {
        st->scale = (float)v; /* a checkpoint trained with loss scaling (fp32 and bf16 keep 1) */
        st->scale_from = "the checkpoint's scaler";
    }
    char how[128] = "";
    if (!ck)
        snprintf(how, sizeof how, ", fresh weights (seed %" PRIu64 ")", a->seed);
    else if (ck_mode)
        snprintf(how, sizeof how, ", trained in %.64s", ck_mode);
    snprintf(st->desc, sizeof st->desc, "%s: %d layers, %zu parameters%s",
             a->checkpoint ? a->checkpoint : path, spec->nlayers, mpcl_model_param_count(st->model), how);
out:
    mpcl_checkpoint_close(ck);
    free(spec);
    return rc;
}

/* ------------------------------------------------------------------ text */

static double share(uint64_t k, uint64_t n) { return n ? (double)k / (double)n : 0.0; }

/* "12.3%", "0", "<0.01%" */
static const char *pct(char *dst, size_t len, uint64_t k, uint64_t n)
{
    double p = 100.0 * share(k, n);
    if (k == 0)
        snprintf(dst, len, "0");
    else if (p < 0.01)
        snprintf(dst, len, "<0.01%%");
    else
        snprintf(dst, len, "%.2f%%", p);
    return dst;
}

static const char *role_short(mpcl_tensor_role r)
{
    switch (r) {
    case MPCL_ROLE_WEIGHT: return "weight";
    case MPCL_ROLE_ACTIVATION: return "output";
    case MPCL_ROLE_ACTIVATION_GRADIENT: return "out.grad";
    case MPCL_ROLE_WEIGHT_GRADIENT: return "w.grad";
    }
    return "?";
}

static void print_table(mpcl_precision_report *r)
{
    char a[16], b[16], c[16], d[16], e[16], f[16], g[16];
    printf("%-16s %-8s %10s %9s %9s %9s   %-22s %-7s %s\n", "", "", "", "|x|", "", "", "fp16 (unscaled)",
           "bf16", "fp16 at the loss scale");
    printf("%-16s %-8s %10s %9s %9s %9s   %6s %7s %7s %7s %6s %7s %7s\n", "tensor", "role", "values",
           "min>0", "median", "max", "zero", "subn", "over", "lossy", "zero", "subn", "over");
    for (size_t i = 0; i < mpcl_precision_report_count(r); i++) {
        const mpcl_precision_tensor *t = mpcl_precision_report_tensor(r, i);
        const mpcl_value_stats *v = &t->v, *s = &t->scaled;
        int grad = t->role == MPCL_ROLE_ACTIVATION_GRADIENT || t->role == MPCL_ROLE_WEIGHT_GRADIENT;
        printf("%-16s %-8s %10" PRIu64 " %9.2e %9.2e %9.2e   %6s %7s %7s %7s", t->name, role_short(t->role),
               v->count, v->min_nonzero, v->median, v->max, pct(a, sizeof a, v->f16_zero, v->count),
               pct(b, sizeof b, v->f16_subnormal, v->count), pct(c, sizeof c, v->f16_overflow, v->count),
               pct(d, sizeof d, v->bf16_lossy, v->count));
        if (grad)
            printf(" %6s %7s %7s", pct(e, sizeof e, s->f16_zero, s->count),
                   pct(f, sizeof f, s->f16_subnormal, s->count), pct(g, sizeof g, s->f16_overflow, s->count));
        if (v->nonfinite)
            printf("  %" PRIu64 " inf/NaN", v->nonfinite);
        printf("\n");
    }
}

/* Each tensor's exponent histogram as one line of characters, darker for
 * more values, over the exponents any tensor has, with fp16's ranges
 * marked on a ruler: '|' its normal range's ends (-14, 15), ':' the
 * smallest subnormal (-24). */
static void print_histograms(mpcl_precision_report *r)
{
    static const char shade[] = " .:-=+*#%@";
    int lo = MPCL_EXP_BINS, hi = -1;
    size_t n = mpcl_precision_report_count(r);
    for (size_t i = 0; i < n; i++) {
        const mpcl_value_stats *v = &mpcl_precision_report_tensor(r, i)->v;
        for (int b = 0; b < MPCL_EXP_BINS; b++)
            if (v->exponents[b]) {
                lo = b < lo ? b : lo;
                hi = b > hi ? b : hi;
            }
    }
    if (hi < 0)
        return;
    int elo = lo + MPCL_EXP_MIN, ehi = hi + MPCL_EXP_MIN;
    if (elo > -24)
        elo = -24;
    if (ehi < 15)
        ehi = 15;
    printf("\nExponent histograms: floor(log2 |x|) from %d (left) to %d (right), unscaled\n\n", elo, ehi);
    printf("%-16s ", "");
    for (int e = elo; e <= ehi; e++)
        putchar(e == -14 || e == 15 ? '|' : e == -24 ? ':' : e % 10 == 0 ? '+' : '-');
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        const mpcl_precision_tensor *t = mpcl_precision_report_tensor(r, i);
        uint64_t most = 0;
        for (int e = elo; e <= ehi; e++)
            if (t->v.exponents[e - MPCL_EXP_MIN] > most)
                most = t->v.exponents[e - MPCL_EXP_MIN];
        printf("%-16s ", t->name);
        for (int e = elo; e <= ehi; e++) {
            uint64_t c = t->v.exponents[e - MPCL_EXP_MIN];
            int k = c == 0 ? 0 : 1 + (int)((double)c / (double)most * (double)(sizeof shade - 3));
            putchar(shade[k]);
        }
        printf("\n");
    }
    printf("%-16s ", "");
    for (int e = elo; e <= ehi; e++)
        putchar(e == -14 || e == 15 ? '|' : e == -24 ? ':' : e % 10 == 0 ? '+' : '-');
    printf("\n%-16s '+' every 10 (0 included), ':' fp16's smallest subnormal 2^-24, '|' its normal range 2^-14 .. 2^15\n", "");
}

/* log2 of a power of two, for "2^k" */
static int log2i(double x) { return (int)lround(log2(x)); }

/* The advice, one sentence per item, into lines[] (each malloc'ed). */
static int advice_lines(mpcl_precision_report *r, const mpcl_precision_advice *ad, char **lines, int max)
{
    int n = 0;
    char buf[1024];
#define LINE(...)                                                   \
    do {                                                            \
        snprintf(buf, sizeof buf, __VA_ARGS__);                     \
        if (n < max && (lines[n] = strdup(buf)) != NULL)            \
            n++;                                                    \
    } while (0)
    uint64_t gz = 0, gnz = 0, gzs = 0, gsub = 0, gsubs = 0;
    double amax = 0;
    const char *amax_name = "";
    char over[512] = "";
    for (size_t i = 0; i < mpcl_precision_report_count(r); i++) {
        const mpcl_precision_tensor *t = mpcl_precision_report_tensor(r, i);
        uint64_t nz = t->v.count - t->v.zeros - t->v.nonfinite;
        if (t->role == MPCL_ROLE_ACTIVATION_GRADIENT || t->role == MPCL_ROLE_WEIGHT_GRADIENT) {
            gz += t->v.f16_zero;
            gzs += t->scaled.f16_zero;
            gsub += t->v.f16_subnormal;
            gsubs += t->scaled.f16_subnormal;
            gnz += nz;
        } else {
            if (t->v.max > amax) {
                amax = t->v.max;
                amax_name = t->name;
            }
            if (t->v.f16_overflow || t->v.nonfinite) {
                size_t l = strlen(over);
                snprintf(over + l, sizeof over - l, "%s%s", l ? ", " : "", t->name);
            }
        }
    }
    float scale = mpcl_precision_report_loss_scale(r);
    if (ad->scale_min <= ad->scale_max) {
        LINE("Loss scale: 2^%d (%g) to 2^%d (%g) keeps every gradient below fp16's largest value "
             "(65504) and loses at most 1 in 1000 non-zero gradient values to zero.",
             log2i(ad->scale_min), ad->scale_min, log2i(ad->scale_max), ad->scale_max);
        if (ad->start_inside)
            LINE("The dynamic scaler's start, 2^16 (65536), is inside this range: mpcl train's "
                 "default needs no change.");
        else if (ad->dynamic_start > ad->scale_max)
            LINE("The dynamic scaler's start, 2^16 (65536), is above this range: its first steps "
                 "overflow and are skipped (about %d) while it halves down to 2^%d; "
                 "--loss-scale %g starts it there.",
                 log2i(ad->dynamic_start) - log2i(ad->scale_max), log2i(ad->scale_max), ad->scale_max);
        else
            LINE("The dynamic scaler's start, 2^16 (65536), is below this range: %.2f%% of the "
                 "non-zero gradient values flush to zero there until it grows (x2 every 2000 steps "
                 "without overflow); --loss-scale %g starts it inside.",
                 100.0 * ad->flushed_at_start, ad->scale_min);
    } else {
        LINE("No loss scale keeps every gradient in fp16's range: the largest gradients overflow "
             "at 2^%d already, while the smallest need 2^%d not to flush to zero.",
             ad->scale_max > 0 ? log2i(ad->scale_max) + 1 : -24, log2i(ad->scale_min));
    }
    char p1[16], p2[16], p3[16], p4[16];
    if (gnz)
        LINE("Without loss scaling, fp16 would flush %s of the non-zero gradient values to zero and "
             "keep %s only as subnormals (fewer significant bits); at the scale %g: %s and %s.",
             pct(p1, sizeof p1, gz, gnz), pct(p2, sizeof p2, gsub, gnz), (double)scale,
             pct(p3, sizeof p3, gzs, gnz), pct(p4, sizeof p4, gsubs, gnz));
    if (over[0])
        LINE("Values beyond fp16's range (65504) in: %s. fp16 would turn them into inf; loss "
             "scaling cannot help, as these are not gradients.", over);
    else if (amax > 0)
        LINE("Every weight and activation fits fp16's range: the largest magnitude is %.4g (in %s), "
             "%.1fx below 65504.", amax, amax_name, 65504.0 / amax);
    if (ad->recommend == MPCL_PRECISION_BF16)
        LINE("Advice: bf16 (fp32's range with 8 significant bits), or fp32. fp16 and "
             "fp16-storage would overflow or lose gradients here.");
    else
        LINE("Advice: fp16-storage (or fp16 where the device has verified half arithmetic) with "
             "dynamic loss scaling is safe for this model; bf16 also is (fp32's range), at 8 "
             "significant bits to fp16's 11.");
#undef LINE
    return n;
}

/* ------------------------------------------------------------------ JSON */

static void stats_json(jctx *j, cJSON *obj, const mpcl_value_stats *v, int full)
{
    int lo = MPCL_EXP_BINS, hi = -1;
    for (int b = 0; b < MPCL_EXP_BINS; b++)
        if (v->exponents[b]) {
            if (b < lo)
                lo = b;
            hi = b;
        }
    if (full) {
        jnum(j, obj, "count", (double)v->count);
        jnum(j, obj, "zeros", (double)v->zeros);
        jnum(j, obj, "nonfinite", (double)v->nonfinite);
        jnum(j, obj, "min_nonzero", v->min_nonzero);
        jnum(j, obj, "median", v->median);
        jnum(j, obj, "max", isinf(v->max) ? 3.4028234663852886e38 : v->max);
    }
    cJSON *ex = jobj(j, obj, "exponents");
    jnum(j, ex, "lo", hi < 0 ? 0 : lo + MPCL_EXP_MIN);
    cJSON *counts = ex ? jcheck(j, cJSON_AddArrayToObject(ex, "counts")) : NULL;
    for (int b = lo; counts && b <= hi; b++)
        cJSON_AddItemToArray(counts, jcheck(j, cJSON_CreateNumber((double)v->exponents[b])));
    cJSON *h = jobj(j, obj, "fp16");
    jnum(j, h, "zero", share(v->f16_zero, v->count));
    jnum(j, h, "subnormal", share(v->f16_subnormal, v->count));
    jnum(j, h, "overflow", share(v->f16_overflow, v->count));
    if (full) {
        cJSON *bf = jobj(j, obj, "bf16");
        jnum(j, bf, "lossy", share(v->bf16_lossy, v->count));
    }
}

static cJSON *report_json(jctx *j, mpcl_precision_report *r, const mpcl_precision_advice *ad,
                          const args *a, const setup *st, const char *source, const char *model_text)
{
    cJSON *root = jcheck(j, cJSON_CreateObject());
    if (!root)
        return NULL;
    jnum(j, root, "schema", 1);
    jstr(j, root, "model", model_text);
    jstr(j, root, "source", st->desc);
    jstr(j, root, "data", source);
    char dev[256];
    cli_device_name(st->ctx, dev, sizeof dev);
    jstr(j, root, "device", dev);
    jnum(j, root, "batches", (double)mpcl_precision_report_batches(r));
    jnum(j, root, "batch", (double)a->batch);
    jnum(j, root, "samples", (double)(mpcl_precision_report_batches(r) * a->batch));
    jnum(j, root, "loss_scale", mpcl_precision_report_loss_scale(r));
    jstr(j, root, "loss_scale_from", st->scale_from);
    cJSON *fm = jobj(j, root, "formats");
    cJSON *h = jobj(j, fm, "fp16");
    jnum(j, h, "max", 65504.0);
    jnum(j, h, "min_normal", 0x1p-14);
    jnum(j, h, "min_subnormal", 0x1p-24);
    cJSON *b = jobj(j, fm, "bf16");
    jnum(j, b, "max", 3.3895313892515355e38);
    jnum(j, b, "min_normal", 0x1p-126);
    jnum(j, b, "min_subnormal", 0x1p-133);
    cJSON *ts = jcheck(j, cJSON_AddArrayToObject(root, "tensors"));
    for (size_t i = 0; ts && i < mpcl_precision_report_count(r); i++) {
        const mpcl_precision_tensor *t = mpcl_precision_report_tensor(r, i);
        cJSON *o = jcheck(j, cJSON_CreateObject());
        if (!o)
            break;
        cJSON_AddItemToArray(ts, o);
        jstr(j, o, "name", t->name);
        jstr(j, o, "role", mpcl_tensor_role_name(t->role));
        jnum(j, o, "layer", t->layer);
        cJSON *shape = jcheck(j, cJSON_AddArrayToObject(o, "shape"));
        for (int d = 0; shape && d < t->ndim; d++)
            cJSON_AddItemToArray(shape, jcheck(j, cJSON_CreateNumber((double)t->shape[d])));
        stats_json(j, o, &t->v, 1);
        if (t->role == MPCL_ROLE_ACTIVATION_GRADIENT || t->role == MPCL_ROLE_WEIGHT_GRADIENT)
            stats_json(j, jobj(j, o, "scaled"), &t->scaled, 0);
    }
    cJSON *adv = jobj(j, root, "advice");
    jnum(j, adv, "loss_scale_min", ad->scale_min);
    jnum(j, adv, "loss_scale_max", ad->scale_max);
    jnum(j, adv, "dynamic_start", ad->dynamic_start);
    jbool(j, adv, "start_inside", ad->start_inside);
    jnum(j, adv, "flushed_at_start", ad->flushed_at_start);
    cJSON *ov = adv ? jcheck(j, cJSON_AddArrayToObject(adv, "overflow_fp16")) : NULL;
    for (size_t i = 0; ov && i < mpcl_precision_report_count(r); i++) {
        const mpcl_precision_tensor *t = mpcl_precision_report_tensor(r, i);
        if ((t->role == MPCL_ROLE_WEIGHT || t->role == MPCL_ROLE_ACTIVATION) &&
            (t->v.f16_overflow || t->v.nonfinite))
            cJSON_AddItemToArray(ov, jcheck(j, cJSON_CreateString(t->name)));
    }
    jstr(j, adv, "recommend", mpcl_precision_name(ad->recommend));
    char *lines[8];
    int n = advice_lines(r, ad, lines, 8);
    cJSON *ls = adv ? jcheck(j, cJSON_AddArrayToObject(adv, "lines")) : NULL;
    for (int i = 0; i < n; i++) {
        if (ls)
            cJSON_AddItemToArray(ls, jcheck(j, cJSON_CreateString(lines[i])));
        free(lines[i]);
    }
    return root;
}

/* ------------------------------------------------------------------ plot */

/* The JSON report into a temporary file, drawn by tools/plot.py. */
static int plot_report(const char *json_text, const char *png)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/mpcl-precision-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "mpcl: --plot: cannot create a temporary file %s: %s\n", path, strerror(errno));
        return EXIT_RUNTIME;
    }
    size_t len = strlen(json_text);
    ssize_t w = write(fd, json_text, len);
    int closed = close(fd);
    int rc = EXIT_RUNTIME;
    if (w != (ssize_t)len || closed != 0)
        fprintf(stderr, "mpcl: --plot: cannot write %s: %s\n", path, strerror(errno));
    else
        rc = cli_plot("precision", path, png);
    unlink(path);
    return rc;
}

/* ------------------------------------------------------------------- run */

int cmd_precision(int argc, char **argv)
{
    args a = {.batches = DEFAULT_BATCHES, .batch = DEFAULT_BATCH, .seed = 1};
    int done = 0;
    int rc = parse_args(argc, argv, &a, &done);
    if (rc != EXIT_OK || done)
        return rc;
    char err[2048], source[4200];
    mpcl_dataset ds;
    memset(&ds, 0, sizeof ds);
    mpcl_status s = mpcl_dataset_load(a.data, &ds, err, sizeof err);
    if (s != MPCL_OK)
        return runtime_error(s, err);
    size_t need = a.batches * a.batch, have = ds.train_images.count;
    snprintf(source, sizeof source, "%s (training set)", a.data ? a.data : MPCL_DEFAULT_DATA_DIR);
    setup st;
    memset(&st, 0, sizeof st);
    mpcl_precision_report *r = NULL;
    char *model_text = NULL;
    if (need > have) {
        rc = usage_error("precision", "--batches %lu x --batch %lu = %zu samples, but %s has %zu",
                         a.batches, a.batch, need, source, have);
        goto done;
    }
    if ((rc = make_model(&a, &ds, have, &st)) != EXIT_OK)
        goto done;
    s = mpcl_precision_report_create(st.model, st.scale, &r);
    size_t sample = mpcl_idx_sample_bytes(&ds.train_images);
    double t0 = now_s();
    for (unsigned long k = 0; s == MPCL_OK && k < a.batches; k++) {
        if (!a.json && isatty(STDERR_FILENO))
            fprintf(stderr, "\rprecision: batch %lu/%lu", k + 1, a.batches);
        s = mpcl_precision_report_add_batch(r, ds.train_images.data + k * a.batch * sample,
                                            ds.train_labels.data + k * a.batch, a.batch);
    }
    if (!a.json && isatty(STDERR_FILENO))
        fprintf(stderr, "\r%40s\r", "");
    if (s == MPCL_OK && a.save_values)
        s = mpcl_precision_report_save_values(r, a.save_values);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(st.ctx));
        goto done;
    }
    double dt = now_s() - t0;
    mpcl_precision_advice ad;
    mpcl_precision_report_advice(r, &ad);
    const mpcl_model_spec *spec = mpcl_model_get_spec(st.model);
    size_t text_len = mpcl_model_spec_format(spec, NULL, 0) + 1;
    model_text = malloc(text_len);
    if (model_text)
        mpcl_model_spec_format(spec, model_text, text_len);
    jctx j = {1};
    cJSON *root = (a.json || a.plot) ? report_json(&j, r, &ad, &a, &st, source, model_text ? model_text : "")
                                     : NULL;
    if (a.json) {
        char *txt = root ? cJSON_Print(root) : NULL;
        if (!txt) {
            rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory for the JSON report");
        } else {
            printf("%s\n", txt);
            cJSON_free(txt);
        }
    } else {
        char dev[256];
        cli_device_name(st.ctx, dev, sizeof dev);
        printf("mpcl %s precision\n\n", mpcl_version());
        field("model", st.desc);
        fieldf("data", "%s: %lu batch%s of %lu samples, in %.1f s", source, a.batches, a.batches == 1 ? "" : "es", a.batch, dt);
        fieldf("device", "%s (measured in fp32)", dev);
        fieldf("loss scale", "%g (%s)", (double)st.scale, st.scale_from);
        printf("\nPer tensor: magnitudes, and the share of all values that fp16 flushes to zero, "
               "makes subnormal\nor overflows, and that bf16 rounds with a relative error above 2^-8\n\n");
        print_table(r);
        print_histograms(r);
        printf("\nAdvice\n");
        char *lines[8];
        int n = advice_lines(r, &ad, lines, 8);
        for (int i = 0; i < n; i++) {
            printf("  - ");
            print_wrapped(lines[i], 4);
            free(lines[i]);
        }
    }
    if (rc == EXIT_OK && a.plot) {
        char *txt = root ? cJSON_PrintUnformatted(root) : NULL;
        rc = txt ? plot_report(txt, a.plot) : runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        cJSON_free(txt);
    }
    cJSON_Delete(root);
done:
    free(model_text);
    mpcl_precision_report_destroy(r);
    mpcl_model_destroy(st.model);
    mpcl_context_destroy(st.ctx);
    mpcl_dataset_free(&ds);
    return rc;
}
