/* train_args.c — `mpcl train`'s help text and option parsing (the run
 * itself: cmd_train.c). */
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

#include "cli.h"
#include "train_args.h"

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
    "language models (--task lm, docs/lm.md):\n"
    "  --task NAME         image (default) or lm: train a language model (a 'gpt' spec;\n"
    "                      default model gpt-tiny) on text read as bytes\n"
    "  --text PATH         a text file (or .gz), or a directory of them, joined; the last\n"
    "                      10%% is held out for validation (default: " MPCL_DEFAULT_TEXT_DIR ",\n"
    "                      Debian's fortunes)\n"
    "  --steps N           the step count to reach (default: 2000); --epochs does not apply\n"
    "  --context N         positions per sequence, up to the model's (default: the model's)\n"
    "  --eval-every N      validate every N steps and at the end (default: 200)\n"
    "  --eval-windows N    validation windows of the context length per validation\n"
    "                      (default: 64; 0: all)\n"
    "                      defaults for lm: --batch 16, --optimizer adamw, --lr 0.001,\n"
    "                      --weight-decay 0.1 (block matrices only), --clip 1, --warmup 100,\n"
    "                      --schedule cosine to 0 at --steps\n"
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
    "data parallel (under mpirun -np N; docs/distributed.md):\n"
    "  --device A,B,...    a list: rank r on this machine takes entry r mod its length\n"
    "                      (default: the r-th device of the preferred type, r mod count)\n"
    "  --dist-wire TYPE    gradients sent as f32, f16 or bf16 (default: f32; the 16-bit\n"
    "                      types halve the bytes and round each partial sum)\n"
    "  --dist-bucket-mib N gradient MiB (on the wire) per allreduce, 0.001..1024 (default:\n"
    "                      an eighth of the gradients, within 0.0625..4)\n"
    "  --dist-check N      compare weight checksums across ranks every N steps (default: 0)\n"
    "  --dist-timeout S    end the job when another rank is silent for S seconds (default:\n"
    "                      1800: a first step builds kernels and measures convolutions)\n"
    "\n"
    "output:\n"
    "  --log FILE          write JSON lines: one per step, one per epoch\n"
    "  --plot FILE.png     at the end, draw the log (--log) with tools/plot.py: loss,\n"
    "                      accuracy, loss scale and skipped steps (needs matplotlib)\n"
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
    TRAIN_PLOT,
    TRAIN_TASK,
    TRAIN_TEXT,
    TRAIN_STEPS,
    TRAIN_CONTEXT,
    TRAIN_EVAL_EVERY,
    TRAIN_EVAL_WINDOWS,
    TRAIN_DIST_WIRE,
    TRAIN_DIST_BUCKET,
    TRAIN_DIST_CHECK,
    TRAIN_DIST_TIMEOUT,
    TRAIN_INJECT_ERROR,
    TRAIN_INJECT_INF,
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
    {"plot", required_argument, NULL, TRAIN_PLOT},
    {"task", required_argument, NULL, TRAIN_TASK},
    {"text", required_argument, NULL, TRAIN_TEXT},
    {"steps", required_argument, NULL, TRAIN_STEPS},
    {"context", required_argument, NULL, TRAIN_CONTEXT},
    {"eval-every", required_argument, NULL, TRAIN_EVAL_EVERY},
    {"eval-windows", required_argument, NULL, TRAIN_EVAL_WINDOWS},
    {"dist-wire", required_argument, NULL, TRAIN_DIST_WIRE},
    {"dist-bucket-mib", required_argument, NULL, TRAIN_DIST_BUCKET},
    {"dist-check", required_argument, NULL, TRAIN_DIST_CHECK},
    {"dist-timeout", required_argument, NULL, TRAIN_DIST_TIMEOUT},
    {"inject-error-step", required_argument, NULL, TRAIN_INJECT_ERROR}, /* tests: not in the help */
    {"inject-inf-step", required_argument, NULL, TRAIN_INJECT_INF},
    {"help", no_argument, NULL, TRAIN_HELP_OPT},
    {NULL, 0, NULL, 0},
};






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
int train_parse(int argc, char **argv, train_args *a)
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
            a->batch_set = 1;
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
            a->optimizer_set = 1;
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
            a->schedule_set = 1;
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
            a->warmup_set = 1;
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
            a->clip_set = 1;
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
        case TRAIN_PLOT:
            if (!*optarg)
                return usage_error(cmd, "--plot: the file name is empty");
            a->plot = optarg;
            break;
        case TRAIN_DIST_WIRE:
            if (mpcl_wire_parse(optarg, &a->wire) != MPCL_OK)
                return usage_error(cmd, "--dist-wire: '%s' is not one of f32, f16, bf16", optarg);
            break;
        case TRAIN_DIST_BUCKET: {
            char *end = NULL;
            double mb = strtod(optarg, &end);
            if (!*optarg || *end || !(mb >= 0.001 && mb <= 1024))
                return usage_error(cmd, "--dist-bucket-mib: '%s' is not valid; it accepts a number "
                                        "from 0.001 to 1024 (MiB)", optarg);
            a->bucket_bytes = (size_t)(mb * 1048576.0);
            break;
        }
        case TRAIN_DIST_CHECK:
            if (!parse_uint(optarg, 1, ULONG_MAX, &a->dist_check))
                return usage_error(cmd, "--dist-check: '%s' is not valid; it accepts an integer "
                                        ">= 1 (steps)", optarg);
            break;
        case TRAIN_DIST_TIMEOUT: {
            char *end = NULL;
            double t = strtod(optarg, &end);
            if (!*optarg || *end || !(t >= 1 && t <= 1e6))
                return usage_error(cmd, "--dist-timeout: '%s' is not valid; it accepts seconds from "
                                        "1 to 1000000", optarg);
            a->dist_timeout = t;
            break;
        }
        case TRAIN_INJECT_ERROR:
        case TRAIN_INJECT_INF:
            if (!parse_uint(optarg, 1, ULONG_MAX, c == TRAIN_INJECT_INF ? &a->inject_inf_step : &a->inject_error_step))
                return usage_error(cmd, "--inject-%s-step: '%s' is not an integer >= 1",
                                   c == TRAIN_INJECT_INF ? "inf" : "error", optarg);
            break;
        case TRAIN_TASK:
            if (strcmp(optarg, "lm") == 0)
                a->lm = 1;
            else if (strcmp(optarg, "image") == 0)
                a->lm = 0;
            else
                return usage_error(cmd, "--task: '%s' is not a task; it accepts image or lm",
                                   optarg);
            break;
        case TRAIN_TEXT:
            if (!*optarg)
                return usage_error(cmd, "--text: the value is empty; it accepts a text file or a "
                                        "directory of text files");
            a->text = optarg;
            break;
        case TRAIN_STEPS:
            if (!parse_uint(optarg, 1, ULONG_MAX, &a->steps))
                return usage_error(cmd, "--steps: '%s' is not valid; it accepts an integer >= 1",
                                   optarg);
            a->steps_set = 1;
            break;
        case TRAIN_CONTEXT:
            if (!parse_uint(optarg, 1, 1UL << 16, &a->context))
                return usage_error(cmd, "--context: '%s' is not valid; it accepts an integer "
                                        "from 1 to the model's context",
                                   optarg);
            break;
        case TRAIN_EVAL_EVERY:
            if (!parse_uint(optarg, 0, ULONG_MAX, &a->eval_every))
                return usage_error(cmd, "--eval-every: '%s' is not valid; it accepts an integer "
                                        ">= 0 (0: at the end only)",
                                   optarg);
            a->eval_every_set = 1;
            break;
        case TRAIN_EVAL_WINDOWS:
            if (!parse_uint(optarg, 0, ULONG_MAX, &a->eval_windows))
                return usage_error(cmd, "--eval-windows: '%s' is not valid; it accepts an "
                                        "integer >= 0 (0: all)",
                                   optarg);
            a->eval_windows_set = 1;
            break;
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
    if (a->plot && !a->log)
        return usage_error(cmd, "--plot draws the run's log: it needs --log FILE too");
    if (!a->lm && (a->text || a->steps_set || a->context || a->eval_every_set || a->eval_windows_set))
        return usage_error(cmd, "--text, --steps, --context, --eval-every and --eval-windows "
                                "apply to --task lm only");
    if (a->lm && (a->data || a->epochs_set || a->limit || a->test_limit || a->augment_set ||
                  a->max_steps || a->label_smoothing > 0))
        return usage_error(cmd, "--data, --epochs, --limit, --test-limit, --augment, --max-steps "
                                "and --label-smoothing apply to image training; a language model "
                                "takes --text and --steps");
    if (a->lm) { /* the usual recipe for small GPTs (nanoGPT's) */
        if (!a->steps_set)
            a->steps = 2000;
        if (!a->batch_set)
            a->batch = 16;
        if (!a->optimizer_set)
            a->optimizer = MPCL_OPT_ADAMW;
        if (!a->weight_decay_set && a->optimizer == MPCL_OPT_ADAMW) {
            a->weight_decay = 0.1;
            a->weight_decay_set = 1;
        }
        if (!a->clip_set)
            a->clip = 1.0;
        if (!a->warmup_set)
            a->warmup = 100;
        if (!a->schedule_set)
            a->schedule = MPCL_SCHEDULE_COSINE;
        if (!a->eval_every_set)
            a->eval_every = 200;
        if (!a->eval_windows_set)
            a->eval_windows = 64;
    }
    return -1;
}
