/* cmd_train.c — `mpcl train`: data, model, trainer, progress, logs, report. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

#include "cli.h"

/* ================================================================= train */

static const char TRAIN_HELP[] =
    "usage: mpcl train [options]\n"
    "\n"
    "Trains a model (default: the seed CNN) on an MNIST-layout data set (default:\n"
    "Fashion-MNIST) or CIFAR-10, evaluates it on the test set after every epoch, and\n"
    "prints the test accuracy, a confusion matrix, speed, device memory and the backend\n"
    "choice. See docs/train.md.\n"
    "\n"
    "data and model:\n"
    "  --model FILE        model spec; a name without '/' that is not a file is looked up\n"
    "                      as NAME or NAME.txt in $MPCL_MODEL_DIR, the installed models and\n"
    "                      the source tree's data/models (default: seed-cnn)\n"
    "  --data DIR          an MNIST-layout directory (four IDX files) or CIFAR-10's binary\n"
    "                      version (cifar-10-batches-bin: data_batch_N.bin, test_batch.bin)\n"
    "                      (default: " MPCL_DEFAULT_DATA_DIR ")\n"
    "  --augment LIST      training images only: none, or a comma-separated list of cropN\n"
    "                      (zero-pad N pixels, crop back at a random offset; crop = crop4)\n"
    "                      and flip (mirror left-right, probability 1/2), e.g. crop4,flip\n"
    "                      (default: crop4,flip for CIFAR-10, none for MNIST layouts; with\n"
    "                      --resume, the checkpoint's); each image's draw depends only on\n"
    "                      the seed, the epoch and the image, so a resumed run sees the\n"
    "                      images an uninterrupted one does\n"
    "  --limit N           train on the first N training samples only (default: all)\n"
    "  --test-limit N      evaluate on the first N test samples only (default: all)\n"
    "\n"
    "training:\n"
    "  --epochs N          passes over the training samples, 1..100000 (default: 3)\n"
    "  --batch N           samples per step, 1..65536 (default: 64); the last batch of an\n"
    "                      epoch may be smaller\n"
    "  --optimizer NAME    sgd, adam or adamw (default: adam)\n"
    "  --lr X              learning rate, > 0 (default: sgd 0.01, adam and adamw 0.001)\n"
    "  --weight-decay X    >= 0 (default: sgd and adam 0, adamw 0.01)\n"
    "  --momentum X        sgd only, 0 <= X < 1 (default: 0)\n"
    "  --nesterov          sgd only, Nesterov momentum (needs --momentum > 0)\n"
    "  --schedule NAME     constant, step or cosine (default: constant); cosine reaches 0\n"
    "                      after epochs x steps per epoch steps\n"
    "  --step-size N       step schedule: multiply the rate by --gamma every N steps\n"
    "                      (default: 1000)\n"
    "  --gamma X           step schedule: the factor, 0 < X <= 1 (default: 0.1)\n"
    "  --warmup N          linear warm-up over the first N steps (default: 0)\n"
    "  --clip X            clip gradients to global L2 norm X, >= 0 (default: 0, off)\n"
    "  --label-smoothing X 0 <= X < 1 (default: 0)\n"
    "  --seed N            seeds initialisation, shuffling and dropout (default: 1)\n"
    "\n"
    "precision and device:\n"
    "  --device SEL        P:D, gpu, cpu, accelerator or part of a device or platform name\n"
    "                      (default: $MPCL_DEVICE, else the first GPU, else the first device)\n"
    "  --no-tune           do not tune CLBlast's GEMMs at first use on a device (also\n"
    "                      MPCL_TUNE=0; docs/tune.md)\n"
    "  --precision MODE    auto, fp16, fp16-storage, fp32 or bf16 (default: auto; bf16\n"
    "                      is never chosen by auto: bfloat16 storage, float math,\n"
    "                      static loss scale 1 unless --loss-scale says otherwise)\n"
    "  --loss-scale S      dynamic, or a number > 0 for a static scale (default: dynamic\n"
    "                      in the fp16 modes, a static 1 in fp32 and bf16)\n"
    "  --init-scale X      the initial dynamic scale, 2^-24..2^24 (default: 65536);\n"
    "                      implies --loss-scale dynamic\n"
    "\n"
    "checkpoints (safetensors, see docs/checkpoints.md):\n"
    "  --save FILE         write a checkpoint after every epoch, and when stopped by\n"
    "                      SIGINT or SIGTERM (atomically: a failed write keeps the old file)\n"
    "  --save-every N      with --save: also every N steps\n"
    "  --max-steps N       stop once the run (resumed runs included) reaches step N,\n"
    "                      writing the --save checkpoint there\n"
    "  --resume FILE       continue the training in FILE: weights, optimizer and loss\n"
    "                      scaler state, step, seed and position in the epoch; --epochs is\n"
    "                      the total, so an epoch-1 checkpoint with --epochs 2 trains one\n"
    "                      more epoch; the model is the checkpoint's unless --model is given\n"
    "\n"
    "output:\n"
    "  --log FILE          write JSON lines: one per step, one per epoch\n"
    "  --quiet             print only the final summary\n"
    "  -h, --help          show this help\n"
    "\n"
    "SIGINT or SIGTERM (Ctrl-C) stops after the current step, writes the --save\n"
    "checkpoint and exits with 130 or 143; a second signal stops at once.\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure (data, model, OpenCL, checkpoint), 2 usage\n"
    "error, 3 no device, 4 precision refused by the device, 130/143 stopped by a signal\n";

enum {
    TRAIN_MODEL = OPT_BASE,
    TRAIN_DATA,
    TRAIN_AUGMENT,
    TRAIN_EPOCHS,
    TRAIN_BATCH,
    TRAIN_LR,
    TRAIN_OPTIMIZER,
    TRAIN_WEIGHT_DECAY,
    TRAIN_MOMENTUM,
    TRAIN_NESTEROV,
    TRAIN_SCHEDULE,
    TRAIN_STEP_SIZE,
    TRAIN_GAMMA,
    TRAIN_WARMUP,
    TRAIN_PRECISION,
    TRAIN_LOSS_SCALE,
    TRAIN_INIT_SCALE,
    TRAIN_CLIP,
    TRAIN_LABEL_SMOOTHING,
    TRAIN_SEED,
    TRAIN_DEVICE,
    TRAIN_NO_TUNE,
    TRAIN_LIMIT,
    TRAIN_TEST_LIMIT,
    TRAIN_LOG,
    TRAIN_SAVE,
    TRAIN_SAVE_EVERY,
    TRAIN_RESUME,
    TRAIN_MAX_STEPS,
    TRAIN_QUIET,
    TRAIN_HELP_OPT
};

static const struct option TRAIN_OPTIONS[] = {
    {"model", required_argument, NULL, TRAIN_MODEL},
    {"data", required_argument, NULL, TRAIN_DATA},
    {"augment", required_argument, NULL, TRAIN_AUGMENT},
    {"epochs", required_argument, NULL, TRAIN_EPOCHS},
    {"batch", required_argument, NULL, TRAIN_BATCH},
    {"lr", required_argument, NULL, TRAIN_LR},
    {"optimizer", required_argument, NULL, TRAIN_OPTIMIZER},
    {"weight-decay", required_argument, NULL, TRAIN_WEIGHT_DECAY},
    {"momentum", required_argument, NULL, TRAIN_MOMENTUM},
    {"nesterov", no_argument, NULL, TRAIN_NESTEROV},
    {"schedule", required_argument, NULL, TRAIN_SCHEDULE},
    {"step-size", required_argument, NULL, TRAIN_STEP_SIZE},
    {"gamma", required_argument, NULL, TRAIN_GAMMA},
    {"warmup", required_argument, NULL, TRAIN_WARMUP},
    {"precision", required_argument, NULL, TRAIN_PRECISION},
    {"loss-scale", required_argument, NULL, TRAIN_LOSS_SCALE},
    {"init-scale", required_argument, NULL, TRAIN_INIT_SCALE},
    {"clip", required_argument, NULL, TRAIN_CLIP},
    {"label-smoothing", required_argument, NULL, TRAIN_LABEL_SMOOTHING},
    {"seed", required_argument, NULL, TRAIN_SEED},
    {"device", required_argument, NULL, TRAIN_DEVICE},
    {"no-tune", no_argument, NULL, TRAIN_NO_TUNE},
    {"limit", required_argument, NULL, TRAIN_LIMIT},
    {"test-limit", required_argument, NULL, TRAIN_TEST_LIMIT},
    {"log", required_argument, NULL, TRAIN_LOG},
    {"save", required_argument, NULL, TRAIN_SAVE},
    {"save-every", required_argument, NULL, TRAIN_SAVE_EVERY},
    {"resume", required_argument, NULL, TRAIN_RESUME},
    {"max-steps", required_argument, NULL, TRAIN_MAX_STEPS},
    {"quiet", no_argument, NULL, TRAIN_QUIET},
    {"help", no_argument, NULL, TRAIN_HELP_OPT},
    {NULL, 0, NULL, 0},
};


#define TRAIN_MAX_EPOCHS 100000UL
#define TRAIN_MAX_BATCH 65536UL
#define SCALE_MIN 0x1p-24
#define SCALE_MAX 0x1p24

typedef enum { SCALE_DEFAULT = 0, SCALE_DYNAMIC, SCALE_STATIC } scale_mode;

typedef struct {
    const char *model;  /* as given; NULL: the default model */
    const char *data;   /* NULL: MPCL_DEFAULT_DATA_DIR */
    int augment_set;    /* --augment given: aug holds it */
    mpcl_augment_options aug;
    unsigned long epochs, batch;
    mpcl_optimizer optimizer;
    int lr_set, weight_decay_set, momentum_set, nesterov;
    double lr, weight_decay, momentum;
    mpcl_schedule schedule;
    int step_size_set, gamma_set;
    unsigned long step_size;
    double gamma;
    unsigned long warmup;
    mpcl_precision precision;
    scale_mode scale;
    double loss_scale;
    int init_scale_set;
    double init_scale;
    double clip, label_smoothing;
    uint64_t seed;
    const char *device;
    int no_tune;
    unsigned long limit, test_limit; /* 0: all */
    const char *log;
    const char *save, *resume;
    unsigned long save_every; /* 0: at epoch ends only */
    unsigned long max_steps;  /* 0: no limit */
    int seed_set, epochs_set;
    int quiet;
} train_args;



static int schedule_parse(const char *name, mpcl_schedule *out)
{
    static const mpcl_schedule all[] = {MPCL_SCHEDULE_CONSTANT, MPCL_SCHEDULE_STEP,
                                        MPCL_SCHEDULE_COSINE};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, mpcl_schedule_name(all[i])) == 0) {
            *out = all[i];
            return 1;
        }
    return 0;
}

/* Parses train's options into *a; returns -1 to go on, else an exit code. */
static int train_parse(int argc, char **argv, train_args *a)
{
    const char *cmd = "train";
    memset(a, 0, sizeof *a);
    a->epochs = 3;
    a->batch = 64;
    a->optimizer = MPCL_OPT_ADAM;
    a->schedule = MPCL_SCHEDULE_CONSTANT;
    a->precision = MPCL_PRECISION_AUTO;
    a->seed = 1;

    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", TRAIN_OPTIONS, NULL)) != -1) {
        unsigned long u = 0;
        double x = 0;
        switch (c) {
        case TRAIN_MODEL:
            if (!*optarg)
                return usage_error(cmd, "--model: the value is empty; it accepts a model spec "
                                        "file or the name of a shipped model (seed-cnn, lenet5, ...)");
            a->model = optarg;
            break;
        case TRAIN_DATA:
            if (!*optarg)
                return usage_error(cmd, "--data: the value is empty; it accepts a directory "
                                        "with the four MNIST-layout IDX files or CIFAR-10's "
                                        "batches");
            a->data = optarg;
            break;
        case TRAIN_AUGMENT: {
            char why[256];
            if (mpcl_augment_parse(optarg, &a->aug, why, sizeof why) != MPCL_OK)
                return usage_error(cmd, "--augment: %s", why);
            a->augment_set = 1;
            break;
        }
        case TRAIN_EPOCHS:
            if (!parse_uint(optarg, 1, TRAIN_MAX_EPOCHS, &u))
                return usage_error(cmd, "--epochs: '%s' is not valid; it accepts an integer from "
                                        "1 to %lu", optarg, TRAIN_MAX_EPOCHS);
            a->epochs = u;
            a->epochs_set = 1;
            break;
        case TRAIN_BATCH:
            if (!parse_uint(optarg, 1, TRAIN_MAX_BATCH, &u))
                return usage_error(cmd, "--batch: '%s' is not valid; it accepts an integer from "
                                        "1 to %lu", optarg, TRAIN_MAX_BATCH);
            a->batch = u;
            break;
        case TRAIN_LR:
            if (!parse_real(optarg, 0.0, 1, 1e6, &a->lr))
                return usage_error(cmd, "--lr: '%s' is not valid; it accepts a number greater "
                                        "than 0 (e.g. 0.001)", optarg);
            a->lr_set = 1;
            break;
        case TRAIN_OPTIMIZER:
            if (mpcl_optimizer_parse(optarg, &a->optimizer) != MPCL_OK)
                return usage_error(cmd, "--optimizer: '%s' is not an optimizer; it accepts sgd, "
                                        "adam or adamw", optarg);
            break;
        case TRAIN_WEIGHT_DECAY:
            if (!parse_real(optarg, 0.0, 0, 1e6, &a->weight_decay))
                return usage_error(cmd, "--weight-decay: '%s' is not valid; it accepts a number "
                                        ">= 0", optarg);
            a->weight_decay_set = 1;
            break;
        case TRAIN_MOMENTUM:
            if (!parse_real(optarg, 0.0, 0, 1.0, &x) || x >= 1.0)
                return usage_error(cmd, "--momentum: '%s' is not valid; it accepts a number from "
                                        "0 up to (not including) 1", optarg);
            a->momentum = x;
            a->momentum_set = 1;
            break;
        case TRAIN_NESTEROV: a->nesterov = 1; break;
        case TRAIN_SCHEDULE:
            if (!schedule_parse(optarg, &a->schedule))
                return usage_error(cmd, "--schedule: '%s' is not a schedule; it accepts "
                                        "constant, step or cosine", optarg);
            break;
        case TRAIN_STEP_SIZE:
            if (!parse_uint(optarg, 1, ULONG_MAX, &a->step_size))
                return usage_error(cmd, "--step-size: '%s' is not valid; it accepts an integer "
                                        ">= 1 (steps)", optarg);
            a->step_size_set = 1;
            break;
        case TRAIN_GAMMA:
            if (!parse_real(optarg, 0.0, 1, 1.0, &a->gamma))
                return usage_error(cmd, "--gamma: '%s' is not valid; it accepts a number greater "
                                        "than 0 and at most 1", optarg);
            a->gamma_set = 1;
            break;
        case TRAIN_WARMUP:
            if (!parse_uint(optarg, 0, ULONG_MAX, &a->warmup))
                return usage_error(cmd, "--warmup: '%s' is not valid; it accepts an integer "
                                        ">= 0 (steps)", optarg);
            break;
        case TRAIN_PRECISION:
            if (mpcl_precision_parse(optarg, &a->precision) != MPCL_OK)
                return usage_error(cmd, "--precision: '%s' is not a precision mode; it accepts "
                                        "auto, fp16, fp16-storage, fp32 or bf16", optarg);
            break;
        case TRAIN_LOSS_SCALE:
            if (strcmp(optarg, "dynamic") == 0) {
                a->scale = SCALE_DYNAMIC;
            } else if (parse_real(optarg, 0.0, 1, SCALE_MAX, &a->loss_scale)) {
                a->scale = SCALE_STATIC;
            } else {
                return usage_error(cmd, "--loss-scale: '%s' is not valid; it accepts 'dynamic' or "
                                        "a static scale greater than 0 and at most 16777216 (2^24)",
                                   optarg);
            }
            break;
        case TRAIN_INIT_SCALE:
            if (!parse_real(optarg, SCALE_MIN, 0, SCALE_MAX, &a->init_scale))
                return usage_error(cmd, "--init-scale: '%s' is not valid; it accepts a number "
                                        "from 2^-24 to 2^24 (16777216)", optarg);
            a->init_scale_set = 1;
            break;
        case TRAIN_CLIP:
            if (!parse_real(optarg, 0.0, 0, 1e30, &a->clip))
                return usage_error(cmd, "--clip: '%s' is not valid; it accepts a number >= 0 "
                                        "(0: no clipping)", optarg);
            break;
        case TRAIN_LABEL_SMOOTHING:
            if (!parse_real(optarg, 0.0, 0, 1.0, &x) || x >= 1.0)
                return usage_error(cmd, "--label-smoothing: '%s' is not valid; it accepts a "
                                        "number from 0 up to (not including) 1", optarg);
            a->label_smoothing = x;
            break;
        case TRAIN_SEED:
            if (!parse_u64(optarg, &a->seed))
                return usage_error(cmd, "--seed: '%s' is not valid; it accepts an integer from 0 "
                                        "to 18446744073709551615", optarg);
            a->seed_set = 1;
            break;
        case TRAIN_DEVICE:
            if (!*optarg)
                return usage_error(cmd, "--device: the selector is empty; it accepts P:D, gpu, "
                                        "cpu, accelerator or part of a device or platform name");
            a->device = optarg;
            break;
        case TRAIN_NO_TUNE:
            a->no_tune = 1;
            break;
        case TRAIN_LIMIT:
            if (!parse_uint(optarg, 1, ULONG_MAX, &a->limit))
                return usage_error(cmd, "--limit: '%s' is not valid; it accepts an integer >= 1 "
                                        "(training samples)", optarg);
            break;
        case TRAIN_TEST_LIMIT:
            if (!parse_uint(optarg, 1, ULONG_MAX, &a->test_limit))
                return usage_error(cmd, "--test-limit: '%s' is not valid; it accepts an integer "
                                        ">= 1 (test samples)", optarg);
            break;
        case TRAIN_LOG:
            if (!*optarg)
                return usage_error(cmd, "--log: the file name is empty");
            a->log = optarg;
            break;
        case TRAIN_SAVE:
        case TRAIN_RESUME:
            if (!*optarg)
                return usage_error(cmd, "--%s: the file name is empty",
                                   c == TRAIN_SAVE ? "save" : "resume");
            *(c == TRAIN_SAVE ? &a->save : &a->resume) = optarg;
            break;
        case TRAIN_SAVE_EVERY:
            if (!parse_uint(optarg, 1, ULONG_MAX, &a->save_every))
                return usage_error(cmd, "--save-every: '%s' is not valid; it accepts an integer "
                                        ">= 1 (steps)", optarg);
            break;
        case TRAIN_MAX_STEPS:
            if (!parse_uint(optarg, 1, ULONG_MAX, &a->max_steps))
                return usage_error(cmd, "--max-steps: '%s' is not valid; it accepts an integer "
                                        ">= 1 (steps)", optarg);
            break;
        case TRAIN_QUIET: a->quiet = 1; break;
        case 'h':
        case TRAIN_HELP_OPT: fputs(TRAIN_HELP, stdout); return EXIT_OK;
        default: return option_error(cmd, TRAIN_OPTIONS, c, argc, argv);
        }
    }
    if (optind < argc)
        return usage_error(cmd, "unexpected argument '%s'; train takes only options (the model "
                                "is --model FILE)", argv[optind]);
    /* combinations */
    if (a->momentum_set && a->optimizer != MPCL_OPT_SGD)
        return usage_error(cmd, "--momentum applies to --optimizer sgd only (adam and adamw "
                                "have their own betas)");
    if (a->nesterov && a->optimizer != MPCL_OPT_SGD)
        return usage_error(cmd, "--nesterov applies to --optimizer sgd only");
    if (a->nesterov && !(a->momentum > 0.0))
        return usage_error(cmd, "--nesterov needs --momentum greater than 0");
    if ((a->step_size_set || a->gamma_set) && a->schedule != MPCL_SCHEDULE_STEP)
        return usage_error(cmd, "--step-size and --gamma apply to --schedule step only");
    if (a->init_scale_set && a->scale == SCALE_STATIC)
        return usage_error(cmd, "--init-scale is the initial dynamic scale; it does not go with "
                                "a static --loss-scale %g", a->loss_scale);
    if (a->init_scale_set)
        a->scale = SCALE_DYNAMIC;
    if (a->save_every && !a->save)
        return usage_error(cmd, "--save-every needs --save FILE (where to write)");
    return -1;
}

/* ------------------------------------------------------------ helpers */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, bound), without modulo bias. */
static uint64_t uniform_below(uint64_t *state, uint64_t bound)
{
    uint64_t threshold = (0 - bound) % bound; /* 2^64 mod bound */
    for (;;) {
        uint64_t r = splitmix64(state);
        if (r >= threshold)
            return r % bound;
    }
}

/* The sample order of an epoch (1-based): 0..n-1 shuffled by Fisher-Yates
 * with splitmix64 seeded from (seed, epoch). It depends only on seed,
 * epoch and n, not on earlier epochs. */
static void epoch_order(size_t *idx, size_t n, uint64_t seed, unsigned long epoch)
{
    uint64_t st = seed;
    st = splitmix64(&st) ^ (uint64_t)epoch;
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)uniform_below(&st, (uint64_t)i);
        size_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

/* The size of batch k (0-based) of an epoch of n samples. */
static size_t batch_at(size_t n, size_t batch, size_t k)
{
    size_t first = k * batch;
    return n - first < batch ? n - first : batch;
}

/* "0:07", "12:34", "1:02:03" */
static void fmt_duration(char *dst, size_t len, double s)
{
    if (!(s >= 0) || s > 1e8)
        s = 0;
    unsigned long t = (unsigned long)(s + 0.5);
    if (t >= 3600)
        snprintf(dst, len, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(dst, len, "%lu:%02lu", t / 60, t % 60);
}

/* The progress line on stderr (a terminal), redrawn in place. */
typedef struct {
    int on;            /* stderr is a terminal and not --quiet */
    double last;       /* when it was last drawn */
    int width;         /* characters of the last line drawn */
} progress;

#define PROGRESS_BAR 20
#define PROGRESS_INTERVAL_S 0.1

static void progress_draw(progress *p, unsigned long epoch, unsigned long epochs, size_t step,
                          size_t steps, double loss, double img_s, float scale, double eta_s)
{
    char bar[PROGRESS_BAR + 1];
    size_t fill = steps ? step * PROGRESS_BAR / steps : 0;
    for (size_t i = 0; i < PROGRESS_BAR; i++)
        bar[i] = i < fill ? '=' : (i == fill && step < steps) ? '>' : ' ';
    bar[PROGRESS_BAR] = '\0';
    char eta[32];
    fmt_duration(eta, sizeof eta, eta_s);
    char line[256];
    int w = snprintf(line, sizeof line, "epoch %lu/%lu [%s] %zu/%zu loss %.3f %.0f img/s scale %g ETA %s",
                     epoch, epochs, bar, step, steps, loss, img_s, (double)scale, eta);
    if (w < 0)
        return;
    /* pad over the rest of a longer previous line */
    fprintf(stderr, "\r%s%*s", line, p->width > w ? p->width - w : 0, "");
    fflush(stderr);
    p->width = w;
    p->last = now_s();
}

static void progress_clear(progress *p)
{
    if (p->on && p->width > 0) {
        fprintf(stderr, "\r%*s\r", p->width, "");
        fflush(stderr);
    }
    p->width = 0;
}

/* One JSON line into the log; 0 on a write failure. */
static int log_line(FILE *f, cJSON *o)
{
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text)
        return 0;
    int ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    cJSON_free(text);
    return ok;
}

/* A float as the shortest decimal that reads back as the same float, so the
 * log says 0.001, not 0.0010000000474974513. Non-finite values pass through
 * (cJSON writes them as null). */
static double float_decimal(float x)
{
    if (!isfinite(x))
        return (double)x;
    char buf[32];
    for (int digits = 6; digits < 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)x);
        if (strtof(buf, NULL) == x)
            return strtod(buf, NULL);
    }
    snprintf(buf, sizeof buf, "%.9g", (double)x);
    return strtod(buf, NULL);
}

/* v rounded to `decimals` places (speeds and times in the log). */
static double rounded(double v, int decimals)
{
    char buf[64];
    if (!isfinite(v))
        return v;
    snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return strtod(buf, NULL);
}

static int log_step(FILE *f, uint64_t step, unsigned long epoch, const mpcl_step_stats *st,
                    double img_s)
{
    jctx j = {1};
    cJSON *o = jcheck(&j, cJSON_CreateObject());
    if (!o)
        return 0;
    jnum(&j, o, "step", (double)step);
    jnum(&j, o, "epoch", (double)epoch);
    jnum(&j, o, "loss", float_decimal(st->loss)); /* cJSON writes a non-finite number as null */
    jnum(&j, o, "lr", float_decimal(st->lr));
    jnum(&j, o, "loss_scale", float_decimal(st->scale));
    jbool(&j, o, "skipped", st->skipped);
    jnum(&j, o, "img_per_s", rounded(img_s, 1));
    if (!j.ok) {
        cJSON_Delete(o);
        return 0;
    }
    return log_line(f, o);
}

typedef struct {
    unsigned long epoch;
    uint64_t steps, skipped, images;
    double train_loss, test_loss, test_accuracy, img_s, seconds;
    double first_step_s; /* the run's first step, in its first epoch; else < 0 */
    float loss_scale;
} epoch_record;

static int log_epoch(FILE *f, const epoch_record *e)
{
    jctx j = {1};
    cJSON *o = jcheck(&j, cJSON_CreateObject());
    if (!o)
        return 0;
    jstr(&j, o, "event", "epoch");
    jnum(&j, o, "epoch", (double)e->epoch);
    jnum(&j, o, "steps", (double)e->steps);
    jnum(&j, o, "images", (double)e->images);
    jnum(&j, o, "train_loss", e->train_loss);
    jnum(&j, o, "test_loss", e->test_loss);
    jnum(&j, o, "test_accuracy", e->test_accuracy);
    jnum(&j, o, "skipped", (double)e->skipped);
    jnum(&j, o, "loss_scale", float_decimal(e->loss_scale));
    jnum(&j, o, "img_per_s", rounded(e->img_s, 1));
    jnum(&j, o, "seconds", rounded(e->seconds, 3));
    if (e->first_step_s >= 0)
        jnum(&j, o, "first_step_s", rounded(e->first_step_s, 3));
    if (!j.ok) {
        cJSON_Delete(o);
        return 0;
    }
    return log_line(f, o);
}


static double mib(uint64_t bytes) { return (double)bytes / (double)MIB; }

/* ---------------------------------------------------------- checkpoints */

/* SIGINT / SIGTERM: the first asks the loop to stop after its step, the
 * second stops at once (the default action). */
static volatile sig_atomic_t stop_signal = 0;

static void on_stop_signal(int sig)
{
    if (stop_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_signal = sig;
    static const char msg[] = "\nmpcl: stopping after this step (signal again to stop now)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
}

static void install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* What the CLI adds to a checkpoint: where in the data the run stands. */
typedef struct {
    const char *data_dir;
    const char *const *class_names;
    unsigned long batch;
    size_t train_samples;
    const char *augment; /* mpcl_augment_format's text */
} run_info;

/* Writes the --save checkpoint at a position: epochs_done whole epochs and
 * epoch_step steps of the next. Returns an exit code (EXIT_OK on success). */
static int save_checkpoint(mpcl_trainer *tr, mpcl_context *ctx, const char *path,
                           const run_info *ri, unsigned long epochs_done, size_t epoch_step)
{
    char done[32], in_epoch[32], batch[32], samples[32], names[512];
    snprintf(done, sizeof done, "%lu", epochs_done);
    snprintf(in_epoch, sizeof in_epoch, "%zu", epoch_step);
    snprintf(batch, sizeof batch, "%lu", ri->batch);
    snprintf(samples, sizeof samples, "%zu", ri->train_samples);
    size_t used = 0;
    names[0] = '\0';
    for (int i = 0; i < MPCL_DATASET_CLASSES && used < sizeof names; i++)
        used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? "," : "",
                                 ri->class_names[i]);
    mpcl_meta extra[] = {
        {"epochs_done", done},     {"epoch_step", in_epoch}, {"batch", batch},
        {"train_samples", samples}, {"data", ri->data_dir},  {"class_names", names},
        {"augment", ri->augment},
    };
    mpcl_status s = mpcl_checkpoint_save(tr, path, extra, sizeof extra / sizeof extra[0]);
    return s == MPCL_OK ? EXIT_OK : runtime_error(s, mpcl_last_error(ctx));
}

/* A whole-number metadata value of the --resume checkpoint; 0 if absent. */
static int meta_count(const mpcl_checkpoint *ck, const char *key, uint64_t *out)
{
    const char *v = mpcl_checkpoint_meta(ck, key);
    *out = 0;
    return !v || parse_u64(v, out);
}

/* ------------------------------------------------------------ cmd_train */

int cmd_train(int argc, char **argv)
{
    const char *cmd = "train";
    train_args a;
    int rc = train_parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    double t_start = now_s();

    char model_path[4096], searched[2048], err[2048];
    mpcl_model_spec *spec = NULL;
    mpcl_dataset data;
    memset(&data, 0, sizeof data);
    int have_data = 0;
    FILE *logf = NULL;
    mpcl_context *ctx = NULL;
    mpcl_model *model = NULL;
    mpcl_trainer *tr = NULL;
    size_t *order = NULL;
    mpcl_prefetch *pf = NULL;
    mpcl_checkpoint *ck = NULL;
    mpcl_status s;
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.device = a.device;
    opt.precision = a.precision;
    opt.seed = a.seed;

    /* --resume: the checkpoint first; without --model its spec is the model */
    uint64_t ck_epochs = 0, ck_epoch_step = 0, ck_batch = 0, ck_samples = 0;
    double ck_mean = 0.0, ck_std = 1.0;
    mpcl_augment_options ck_aug = {0, 0};
    if (a.resume) {
        s = cli_context_create(&opt, &ctx);
        if (s == MPCL_OK)
            s = mpcl_checkpoint_open(ctx, a.resume, &ck);
        if (s != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(ctx));
            goto done;
        }
        uint64_t seed = 0;
        const char *mean_s = mpcl_checkpoint_meta(ck, "input_mean");
        const char *std_s = mpcl_checkpoint_meta(ck, "input_std");
        if (!meta_count(ck, "epochs_done", &ck_epochs) ||
            !meta_count(ck, "epoch_step", &ck_epoch_step) || !meta_count(ck, "batch", &ck_batch) ||
            !meta_count(ck, "train_samples", &ck_samples) || !meta_count(ck, "seed", &seed) ||
            !mean_s || !std_s || !parse_real(mean_s, -1e30, 0, 1e30, &ck_mean) ||
            !parse_real(std_s, 0.0, 1, 1e30, &ck_std)) {
            fprintf(stderr, "mpcl: %s: the metadata (epochs_done, epoch_step, batch, "
                            "train_samples, seed, input_mean, input_std) is missing or not "
                            "numbers; was it written by 'mpcl train --save'?\n", a.resume);
            rc = EXIT_RUNTIME;
            goto done;
        }
        if (!a.seed_set)
            a.seed = seed;
        /* the run's augmentation; a checkpoint from before --augment existed had none */
        const char *aug_s = mpcl_checkpoint_meta(ck, "augment");
        char why[256];
        if (mpcl_augment_parse(aug_s ? aug_s : "none", &ck_aug, why, sizeof why) != MPCL_OK) {
            fprintf(stderr, "mpcl: %s: the metadata 'augment' is not valid: %s\n", a.resume, why);
            rc = EXIT_RUNTIME;
            goto done;
        }
        if (!a.model) {
            model_path[0] = '\0';
            snprintf(model_path, sizeof model_path, "%s (model_spec)", a.resume);
        }
    }

    /* the model spec first: it is quick to find and check */
    spec = calloc(1, sizeof *spec);
    if (!spec) {
        rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        goto done;
    }
    if (a.resume && !a.model) {
        s = mpcl_checkpoint_spec(ck, spec);
        if (s != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(ctx));
            goto done;
        }
    } else if (!resolve_model(a.model, model_path, sizeof model_path, searched, sizeof searched)) {
        if (a.model) {
            rc = usage_error(cmd, "--model: '%s' is not a file, and there is no %s or %s.txt "
                                  "in %s", a.model, a.model, a.model, searched);
            goto done;
        }
        fprintf(stderr, "mpcl: the default model %s.txt is not in %s; give --model FILE or set "
                        "MPCL_MODEL_DIR\n", CLI_DEFAULT_MODEL, searched);
        rc = EXIT_RUNTIME;
        goto done;
    } else {
        s = mpcl_model_spec_load(model_path, spec, err, sizeof err);
        if (s != MPCL_OK) {
            rc = runtime_error(s, err);
            goto done;
        }
    }

    /* data */
    const char *data_dir = a.data ? a.data : MPCL_DEFAULT_DATA_DIR;
    s = mpcl_dataset_load(a.data, &data, err, sizeof err);
    if (s != MPCL_OK) {
        rc = runtime_error(s, err);
        goto done;
    }
    have_data = 1;
    size_t n_train = data.train_images.count, n_test = data.test_images.count;
    size_t chans = data.train_images.channels, rows = data.train_images.rows;
    size_t cols = data.train_images.cols;
    if (a.limit > n_train) {
        rc = usage_error(cmd, "--limit: %lu is more than the %zu training samples in %s", a.limit,
                         n_train, data_dir);
        goto done;
    }
    if (a.test_limit > n_test) {
        rc = usage_error(cmd, "--test-limit: %lu is more than the %zu test samples in %s",
                         a.test_limit, n_test, data_dir);
        goto done;
    }
    if (a.limit)
        n_train = a.limit;
    if (a.test_limit)
        n_test = a.test_limit;
    if (n_train == 0 || n_test == 0) {
        fprintf(stderr, "mpcl: %s: no %s samples\n", data_dir, n_train ? "test" : "training");
        rc = EXIT_RUNTIME;
        goto done;
    }

    /* the model must fit the data */
    const mpcl_layer_spec *last = &spec->layers[spec->nlayers - 1];
    if (spec->input[0] != chans || spec->input[1] != rows || spec->input[2] != cols) {
        fprintf(stderr, "mpcl: %s: the model takes %zux%zux%zu inputs (channels x rows x columns), "
                        "but the images in %s are %zux%zux%zu (%s, %zu x %zu); change the spec's "
                        "'input' line to 'input %zux%zux%zu'\n",
                model_path, spec->input[0], spec->input[1], spec->input[2], data_dir, chans, rows,
                cols, chans == 1 ? "grey" : chans == 3 ? "colour" : "channels", rows, cols, chans,
                rows, cols);
        rc = EXIT_RUNTIME;
        goto done;
    }
    if (last->out_ndim != 1 || last->out_shape[0] != MPCL_DATASET_CLASSES) {
        fprintf(stderr, "mpcl: %s:%d: the model ends in %zu outputs, but the data have %d "
                        "classes; the last layer must have out=%d\n",
                model_path, last->line, last->out_shape[0], MPCL_DATASET_CLASSES,
                MPCL_DATASET_CLASSES);
        rc = EXIT_RUNTIME;
        goto done;
    }

    /* augmentation: --augment, else the checkpoint's, else the data set's usual */
    mpcl_augment_options aug = {0, 0};
    if (a.augment_set)
        aug = a.aug;
    else if (a.resume)
        aug = ck_aug;
    else if (data.format == MPCL_DATASET_CIFAR10)
        aug = (mpcl_augment_options){.pad = 4, .flip = 1}; /* He et al. 2016 */
    char aug_text[64], ck_aug_text[64];
    mpcl_augment_format(&aug, aug_text, sizeof aug_text);
    mpcl_augment_format(&ck_aug, ck_aug_text, sizeof ck_aug_text);
    if (a.resume && strcmp(aug_text, ck_aug_text) != 0)
        fprintf(stderr, "mpcl: note: %s was trained with --augment %s, this run uses %s; the run "
                        "will not match an uninterrupted one\n", a.resume, ck_aug_text, aug_text);

    /* normalisation over the samples used: one mean and std over every channel */
    size_t sample = chans * rows * cols;
    double mean = 0.0, std = 1.0;
    pixel_stats(data.train_images.data, n_train * sample, &mean, &std);
    int std_flat = !(std > 1e-12);
    if (std_flat)
        std = 1.0; /* every pixel the same: only centre */
    if (ck) { /* the normalisation the run started with, to the bit */
        mean = ck_mean;
        std = ck_std;
        std_flat = 0;
    }

    if (a.log) {
        logf = fopen(a.log, "w");
        if (!logf) {
            fprintf(stderr, "mpcl: %s: cannot open the log for writing: %s\n", a.log,
                    strerror(errno));
            rc = EXIT_RUNTIME;
            goto done;
        }
    }

    /* device, model, trainer */
    opt.seed = a.seed;
    s = ctx ? MPCL_OK : cli_context_create(&opt, &ctx);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(ctx));
        goto done;
    }
    const char *why = NULL;
    mpcl_precision chosen = mpcl_precision_chosen(ctx, &why);
    cli_autotune(ctx, spec, a.batch, a.no_tune);
    s = mpcl_model_create(ctx, spec, a.batch, a.seed, &model);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(ctx));
        goto done;
    }
    size_t steps_per_epoch = (n_train + a.batch - 1) / a.batch;
    mpcl_train_options to;
    mpcl_train_options_init(&to, chosen);
    mpcl_optimizer_options_init(&to.optimizer, a.optimizer);
    if (a.lr_set)
        to.optimizer.lr = (float)a.lr;
    if (a.weight_decay_set)
        to.optimizer.weight_decay = (float)a.weight_decay;
    if (a.momentum_set)
        to.optimizer.momentum = (float)a.momentum;
    to.optimizer.nesterov = a.nesterov;
    to.schedule = a.schedule;
    if (a.schedule == MPCL_SCHEDULE_COSINE)
        to.total_steps = (uint64_t)a.epochs * steps_per_epoch;
    if (a.step_size_set)
        to.step_size = a.step_size;
    if (a.gamma_set)
        to.gamma = (float)a.gamma;
    to.warmup_steps = a.warmup;
    if (a.scale == SCALE_STATIC) {
        to.dynamic_scale = 0;
        to.loss_scale = (float)a.loss_scale;
    } else if (a.scale == SCALE_DYNAMIC) {
        if (!to.dynamic_scale) /* fp32's default is static; dynamic starts where fp16's does */
            to.loss_scale = 65536.0f;
        to.dynamic_scale = 1;
    }
    if (a.init_scale_set)
        to.loss_scale = (float)a.init_scale;
    to.clip_norm = (float)a.clip;
    to.label_smoothing = (float)a.label_smoothing;
    to.input_mean = (float)mean;
    to.input_std = (float)std;
    s = mpcl_trainer_create(model, &to, &tr);
    if (s == MPCL_OK && ck)
        s = mpcl_checkpoint_load_trainer(ck, tr);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(ctx));
        goto done;
    }
    mpcl_checkpoint_close(ck);
    ck = NULL;
    unsigned long first_epoch = 1;
    size_t skip_steps = 0;
    if (a.resume) {
        first_epoch = (unsigned long)ck_epochs + 1;
        skip_steps = (size_t)ck_epoch_step;
        if (skip_steps >= steps_per_epoch && skip_steps) {
            fprintf(stderr, "mpcl: %s: the checkpoint is at step %zu of an epoch, but an epoch "
                            "here has %zu steps (a different --batch or --limit?)\n",
                    a.resume, skip_steps, steps_per_epoch);
            rc = EXIT_RUNTIME;
            goto done;
        }
        if (ck_batch != a.batch || ck_samples != n_train)
            fprintf(stderr, "mpcl: note: %s was trained with batch %" PRIu64 " on %" PRIu64
                            " samples, this run uses batch %lu on %zu; the run will not match an "
                            "uninterrupted one\n", a.resume, ck_batch, ck_samples, a.batch, n_train);
    }
    run_info ri = {data_dir, data.class_names, a.batch, n_train, aug_text};

    /* batches are gathered (and augmented) on a second thread during the step before */
    order = malloc(n_train * sizeof *order);
    s = order ? mpcl_prefetch_create(data.train_images.data, data.train_labels.data, n_train, chans,
                                     rows, cols, a.batch, &aug, a.seed, &pf)
              : MPCL_ERR_NOMEM;
    if (s != MPCL_OK) {
        rc = runtime_error(s, "cannot set up the batch buffers and their thread (out of host "
                              "memory?)");
        goto done;
    }

    if (!a.quiet) {
        printf("mpcl %s train\n\n", mpcl_version());
        fieldf("data", "%s (%s): %zu of %zu training and %zu of %zu test images, %zux%zux%zu",
               data_dir, data.name, n_train, data.train_images.count, n_test,
               data.test_images.count, chans, rows, cols);
        fieldf("augmentation", "%s%s", aug_text,
               aug.pad || aug.flip ? " (training images; a hash of seed, epoch and image)" : "");
        fieldf("normalisation", "mean %.6f std %.6f (of x/255, over the %zu training images "
                                "used)%s", mean, std, n_train,
               std_flat ? "; every pixel is the same, so std is taken as 1" : "");
        fieldf("model", "%s: %d layers, %zu parameters", model_path, spec->nlayers,
               mpcl_model_param_count(model));
        fieldf("precision", "%s (requested %s)", mpcl_precision_name(chosen),
               mpcl_precision_name(a.precision));
        char extra[128] = "";
        if (a.optimizer == MPCL_OPT_SGD)
            snprintf(extra, sizeof extra, ", momentum %g%s", (double)to.optimizer.momentum,
                     to.optimizer.nesterov ? " (Nesterov)" : "");
        fieldf("optimizer", "%s, lr %g, weight decay %g%s", mpcl_optimizer_name(a.optimizer),
               (double)to.optimizer.lr, (double)to.optimizer.weight_decay, extra);
        char sched[160];
        if (to.schedule == MPCL_SCHEDULE_STEP)
            snprintf(sched, sizeof sched, "step: x %g every %" PRIu64 " steps", (double)to.gamma,
                     to.step_size);
        else if (to.schedule == MPCL_SCHEDULE_COSINE)
            snprintf(sched, sizeof sched, "cosine to 0 at step %" PRIu64, to.total_steps);
        else
            snprintf(sched, sizeof sched, "constant");
        if (to.warmup_steps)
            snprintf(sched + strlen(sched), sizeof sched - strlen(sched),
                     ", linear warm-up over %" PRIu64 " steps", to.warmup_steps);
        field("schedule", sched);
        if (to.dynamic_scale)
            fieldf("loss scale", "dynamic, from %g", (double)to.loss_scale);
        else
            fieldf("loss scale", "static %g", (double)to.loss_scale);
        fieldf("batches", "%lu epoch%s of %zu steps, batch %lu%s", a.epochs,
               a.epochs == 1 ? "" : "s", steps_per_epoch, a.batch,
               n_train % a.batch ? " (the last one smaller)" : "");
        printf("\n");
        fflush(stdout);
    }

    if (!a.quiet && a.resume) {
        mpcl_scaler_state rs;
        mpcl_trainer_scaler(tr, &rs);
        fieldf("resumed", "%s: step %" PRIu64 ", %lu epoch%s done%s, loss scale %g", a.resume,
               rs.steps, first_epoch - 1, first_epoch == 2 ? "" : "s",
               skip_steps ? " and part of the next" : "", (double)rs.scale);
        if (first_epoch > a.epochs)
            fieldf("note", "the checkpoint has trained %lu epoch%s already (--epochs %lu is the "
                           "total); only evaluating", first_epoch - 1, first_epoch == 2 ? "" : "s",
                   a.epochs);
        printf("\n");
        fflush(stdout);
    }
    if (a.save && !a.quiet) {
        fieldf("checkpoint", "%s after every epoch%s", a.save, a.save_every ? " and every N steps" : "");
        printf("\n");
    }
    install_stop_handlers();

    progress prog = {.on = !a.quiet && isatty(STDERR_FILENO)};
    uint64_t step = 0, images_trained = 0;
    double train_time = 0.0;
    /* The run's first step builds what the binary cache does not hold
     * (CLBlast's kernels always: it keeps them in the process only), so
     * the first epoch's speed is not the steady one: the epochs after it
     * are timed apart, and the first step's time is reported. */
    double first_step_s = -1.0, later_time = 0.0;
    uint64_t later_images = 0;
    unsigned long later_epochs = 0;
    double test_loss = 0.0, test_acc = 0.0;
    uint64_t confusion[MPCL_DATASET_CLASSES * MPCL_DATASET_CLASSES];
    memset(confusion, 0, sizeof confusion);
    mpcl_scaler_state sc;
    mpcl_trainer_scaler(tr, &sc);
    step = sc.steps;
    int evaluated = 0;
    for (unsigned long epoch = first_epoch; epoch <= a.epochs; epoch++) {
        double ep_start = now_s(), ep_train = 0.0, loss_sum = 0.0;
        uint64_t loss_n = 0, ep_skipped = 0, ep_images = 0;
        float scale = to.loss_scale;
        epoch_order(order, n_train, a.seed, epoch);
        size_t k = epoch == first_epoch ? skip_steps : 0;
        s = MPCL_OK;
        if (k * a.batch < n_train)
            s = mpcl_prefetch_submit(pf, order + k * a.batch, batch_at(n_train, a.batch, k),
                                     epoch);
        for (size_t first = k * a.batch; first < n_train; first += a.batch, k++) {
            const uint8_t *bimg = NULL, *blab = NULL;
            size_t b = 0;
            /* this step's batch, then the next one's gather while the device computes */
            if (s == MPCL_OK)
                s = mpcl_prefetch_next(pf, &bimg, &blab, &b);
            if (s == MPCL_OK && first + a.batch < n_train)
                s = mpcl_prefetch_submit(pf, order + first + a.batch,
                                         batch_at(n_train, a.batch, k + 1), epoch);
            if (s != MPCL_OK) {
                progress_clear(&prog);
                rc = runtime_error(s, "the batch prefetch failed");
                goto done;
            }
            mpcl_step_stats st;
            memset(&st, 0, sizeof st);
            double t0 = now_s();
            s = mpcl_trainer_step(tr, bimg, blab, b, &st);
            double dt = now_s() - t0;
            if (s != MPCL_OK) {
                progress_clear(&prog);
                rc = runtime_error(s, mpcl_last_error(ctx));
                goto done;
            }
            step++;
            ep_train += dt;
            if (first_step_s < 0)
                first_step_s = dt;
            ep_images += b;
            if (st.skipped)
                ep_skipped++;
            if (isfinite(st.loss)) {
                loss_sum += (double)st.loss * (double)b;
                loss_n += b;
            }
            mpcl_trainer_scaler(tr, &sc);
            scale = sc.scale;
            if (logf && !log_step(logf, step, epoch, &st, dt > 0 ? (double)b / dt : 0.0)) {
                progress_clear(&prog);
                fprintf(stderr, "mpcl: %s: cannot write the log: %s\n", a.log, strerror(errno));
                rc = EXIT_RUNTIME;
                goto done;
            }
            int last_step = k + 1 == steps_per_epoch;
            int at_max = a.max_steps && step >= a.max_steps;
            if (a.save && !last_step &&
                (stop_signal || at_max || (a.save_every && step % a.save_every == 0))) {
                rc = save_checkpoint(tr, ctx, a.save, &ri, epoch - 1, k + 1);
                if (rc != EXIT_OK) {
                    progress_clear(&prog);
                    goto done;
                }
            }
            if (at_max && !stop_signal && !last_step) {
                progress_clear(&prog);
                if (!a.quiet)
                    printf("stopped at step %" PRIu64 " (--max-steps), in epoch %lu at step %zu "
                           "of %zu%s%s\n", step, epoch, k + 1, steps_per_epoch,
                           a.save ? "; checkpoint written to " : "", a.save ? a.save : "");
                rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
                goto done;
            }
            if (stop_signal) {
                progress_clear(&prog);
                fprintf(stderr, "mpcl: stopped by %s after step %" PRIu64 " (epoch %lu, step %zu "
                                "of %zu)%s%s%s\n", stop_signal == SIGINT ? "SIGINT" : "SIGTERM",
                        step, epoch, k + 1, steps_per_epoch,
                        a.save && !last_step ? "; checkpoint written to " : "",
                        a.save && !last_step ? a.save : "",
                        a.save && !last_step ? "; continue with --resume it" : "");
                if (!last_step || !a.save) {
                    rc = 128 + stop_signal;
                    goto done;
                }
                /* the epoch is complete: evaluate and save it as usual, then stop */
            }
            if (prog.on && (now_s() - prog.last >= PROGRESS_INTERVAL_S || last_step)) {
                double per_step = ep_train / (double)(k + 1);
                progress_draw(&prog, epoch, a.epochs, k + 1, steps_per_epoch,
                              loss_n ? loss_sum / (double)loss_n : NAN,
                              ep_train > 0 ? (double)ep_images / ep_train : 0.0, scale,
                              per_step * (double)(steps_per_epoch - k - 1));
            }
        }
        progress_clear(&prog);
        train_time += ep_train;
        images_trained += ep_images;
        if (epoch != first_epoch) {
            later_time += ep_train;
            later_images += ep_images;
            later_epochs++;
        }

        s = mpcl_model_evaluate(model, data.test_images.data, data.test_labels.data, n_test,
                                a.batch, (float)mean, (float)std, &test_loss, &test_acc, confusion);
        if (s != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(ctx));
            goto done;
        }
        evaluated = 1;
        if (a.save) {
            rc = save_checkpoint(tr, ctx, a.save, &ri, epoch, 0);
            if (rc != EXIT_OK)
                goto done;
        }
        epoch_record e = {
            .epoch = epoch,
            .steps = k,
            .skipped = ep_skipped,
            .images = ep_images,
            .train_loss = loss_n ? loss_sum / (double)loss_n : NAN,
            .test_loss = test_loss,
            .test_accuracy = test_acc,
            .img_s = ep_train > 0 ? (double)ep_images / ep_train : 0.0,
            .seconds = now_s() - ep_start,
            .first_step_s = epoch == first_epoch ? first_step_s : -1.0,
            .loss_scale = scale,
        };
        if (!a.quiet) {
            printf("epoch %lu/%lu  loss %.4f  test loss %.4f  test acc %.2f%%  %.0f img/s  "
                   "scale %g  skipped %" PRIu64 "  %.1f s",
                   epoch, a.epochs, e.train_loss, test_loss, 100.0 * test_acc, e.img_s,
                   (double)scale, ep_skipped, e.seconds);
            if (e.first_step_s >= 0)
                printf("  (first step %.2f s: kernel builds)", e.first_step_s);
            printf("\n");
            fflush(stdout);
        }
        if (logf && (!log_epoch(logf, &e) || fflush(logf) != 0)) {
            fprintf(stderr, "mpcl: %s: cannot write the log: %s\n", a.log, strerror(errno));
            rc = EXIT_RUNTIME;
            goto done;
        }
        if (stop_signal) {
            fprintf(stderr, "mpcl: checkpoint of epoch %lu written to %s; continue with --resume "
                            "it\n", epoch, a.save);
            rc = 128 + stop_signal;
            goto done;
        }
        if (a.max_steps && step >= a.max_steps && epoch < a.epochs) {
            if (!a.quiet)
                printf("stopped at step %" PRIu64 " (--max-steps), after epoch %lu%s%s\n", step,
                       epoch, a.save ? "; checkpoint written to " : "", a.save ? a.save : "");
            rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
            goto done;
        }
    }
    if (!evaluated) { /* resumed past --epochs: report the checkpoint as it is */
        s = mpcl_model_evaluate(model, data.test_images.data, data.test_labels.data, n_test,
                                a.batch, (float)mean, (float)std, &test_loss, &test_acc, confusion);
        if (s != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(ctx));
            goto done;
        }
    }
    if (logf) {
        int bad = fclose(logf) != 0;
        logf = NULL;
        if (bad) {
            fprintf(stderr, "mpcl: %s: cannot write the log: %s\n", a.log, strerror(errno));
            rc = EXIT_RUNTIME;
            goto done;
        }
    }

    /* ------------------------------------------------------- summary */
    mpcl_trainer_scaler(tr, &sc);
    mpcl_mem_stats mem;
    mpcl_memory_stats(ctx, &mem);
    double wall = now_s() - t_start;
    uint64_t correct = 0;
    for (int i = 0; i < MPCL_DATASET_CLASSES; i++)
        correct += confusion[i * MPCL_DATASET_CLASSES + i];

    if (!a.quiet)
        printf("\n");
    printf("Result\n");
    fieldf("test accuracy", "%.2f%% (%" PRIu64 " of %zu test images)", 100.0 * test_acc, correct,
           n_test);
    fieldf("test loss", "%.4f", test_loss);
    fieldf("trained", "%lu epoch%s, %" PRIu64 " steps, %" PRIu64 " images%s", a.epochs,
           a.epochs == 1 ? "" : "s", step, images_trained,
           a.resume ? " (images: this run's, after the resume)" : "");
    if (a.save)
        fieldf("checkpoint", "%s", a.save);
    fieldf("wall time", "%.1f s", wall);
    fieldf("training speed", "%.0f img/s (%.2f s in training steps)",
           train_time > 0 ? (double)images_trained / train_time : 0.0, train_time);
    if (later_epochs)
        fieldf("after epoch 1", "%.0f img/s (the %lu epoch%s after this run's first; %.2f s)",
               later_time > 0 ? (double)later_images / later_time : 0.0, later_epochs,
               later_epochs == 1 ? "" : "s", later_time);
    if (first_step_s >= 0)
        fieldf("first step", "%.2f s (builds the kernels the cache lacks, and CLBlast's)",
               first_step_s);
    fieldf("skipped steps", "%" PRIu64 " of %" PRIu64, sc.skipped_steps, sc.steps);
    fieldf("final loss scale", "%g (%s)", (double)sc.scale, to.dynamic_scale ? "dynamic" : "static");

    print_confusion(confusion, data.class_names);

    printf("\nPeak device memory\n");
    for (int t = 0; t < MPCL_MEM_TAG_COUNT; t++)
        fieldf(mpcl_mem_tag_name((mpcl_mem_tag)t), "%.2f MiB", mib(mem.peak[t]));
    fieldf("total", "%.2f MiB (the peak of the sum)", mib(mem.peak_total));

    printf("\nBackend\n");
    fieldf("precision", "%s (requested %s)", mpcl_precision_name(chosen),
           mpcl_precision_name(a.precision));
    field("why", why);
    rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;

done:
    if (logf)
        fclose(logf);
    mpcl_checkpoint_close(ck);
    mpcl_prefetch_destroy(pf); /* first: its thread reads data */
    free(order);
    mpcl_trainer_destroy(tr);
    mpcl_model_destroy(model);
    mpcl_context_destroy(ctx);
    if (have_data)
        mpcl_dataset_free(&data);
    free(spec);
    return rc;
}

