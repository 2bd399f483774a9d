/* cmd_tune.c — `mpcl tune`: searches CLBlast's GEMM parameters on the
 * device for the GEMMs a model runs (docs/tune.md), and the automatic
 * tuning at first use that `mpcl train` and `mpcl bench` share
 * (cli_autotune). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

#include "cli.h"

static const char TUNE_HELP[] =
    "usage: mpcl tune [options]\n"
    "\n"
    "Searches CLBlast's GEMM kernel parameters on the device for the GEMMs one\n"
    "training step of a model runs (forward and both backward products), checks\n"
    "every candidate for exact results, and stores the fastest set in the cache\n"
    "directory, where every later run on this device, driver and CLBlast version\n"
    "applies it. A second run goes on from the stored set (--force), or does\n"
    "nothing when the entry exists. `mpcl train` and `mpcl bench` tune the same\n"
    "way at first use (their --no-tune, or MPCL_TUNE=0, skips it). See docs/tune.md.\n"
    "\n"
    "options:\n"
    "  --model FILE        the model whose GEMMs to tune for (default: seed-cnn);\n"
    "                      'none': square GEMMs of 256, 512 and 1024\n"
    "  --batch N           the batch of those GEMMs, 1..65536 (default: 64)\n"
    "  --precision P       single (Sgemm: fp32 and fp16-storage), half (Hgemm: fp16\n"
    "                      with half accumulation) or all: both where the device runs\n"
    "                      half (default: all)\n"
    "  --budget SECONDS    wall-clock budget of the search, 1..86400 (default: 60)\n"
    "  --max-candidates N  stop after N candidates per precision, 1..10000\n"
    "  --force             search even where the cache has an entry (resumes from it)\n"
    "  --json              print the result as one JSON object on stdout\n"
    "  --device SEL        P:D, gpu, cpu, accelerator or part of a device or platform name\n"
    "  -h, --help          show this help\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure (OpenCL, CLBlast, cache), 2 usage error,\n"
    "3 no device, 4 the device does not run the requested precision\n";

enum {
    TUNE_MODEL = OPT_BASE,
    TUNE_BATCH,
    TUNE_PRECISION,
    TUNE_BUDGET,
    TUNE_MAX,
    TUNE_FORCE,
    TUNE_JSON,
    TUNE_DEVICE,
};

static const struct option TUNE_OPTIONS[] = {
    {"model", required_argument, NULL, TUNE_MODEL},
    {"batch", required_argument, NULL, TUNE_BATCH},
    {"precision", required_argument, NULL, TUNE_PRECISION},
    {"budget", required_argument, NULL, TUNE_BUDGET},
    {"max-candidates", required_argument, NULL, TUNE_MAX},
    {"force", no_argument, NULL, TUNE_FORCE},
    {"json", no_argument, NULL, TUNE_JSON},
    {"device", required_argument, NULL, TUNE_DEVICE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* ------------------------------------------------------------ progress */

typedef struct {
    const char *what; /* "tuning" line prefix */
    int tty;
    int drawn;
} progress_state;

static void on_progress(const mpcl_tune_progress *p, void *user)
{
    progress_state *ps = user;
    char stock[64] = "";
    if (p->stock_gflops > 0)
        snprintf(stock, sizeof stock, " (CLBlast's own %.1f)", p->stock_gflops);
    char line[512];
    snprintf(line, sizeof line, "%s CLBlast %s: %u candidate%s, %u rejected, best %.1f GFLOP/s%s, %.0f s of %.0f s",
             ps->what, strcmp(p->precision, "half") == 0 ? "Hgemm" : "Sgemm", p->candidate,
             p->candidate == 1 ? "" : "s", p->rejected, p->best_gflops, stock, p->elapsed_s,
             p->budget_s);
    if (ps->tty) {
        fprintf(stderr, "\r\033[K%s", line);
        ps->drawn = 1;
    } else {
        fprintf(stderr, "%s; last: %s\n", line, p->last);
    }
    fflush(stderr);
}

static void progress_end(progress_state *ps)
{
    if (ps->tty && ps->drawn)
        fputs("\r\033[K", stderr);
    ps->drawn = 0;
}

/* ------------------------------------------------------ first-use tuning */

/* 1 when the first-use search is off: --no-tune or MPCL_TUNE=0. */
static int autotune_off(int no_tune)
{
    const char *env = getenv("MPCL_TUNE");
    return no_tune || (env && strcmp(env, "0") == 0);
}

/* The first-use search of cli_autotune (spec's GEMMs at batch) and
 * cli_autotune_shapes (spec NULL: the given shapes and precisions), with
 * the progress line and the summary on stderr. Never fatal. */
static void first_use_tune(mpcl_context *ctx, const mpcl_model_spec *spec, size_t batch,
                           const mpcl_gemm_shape *shapes, size_t n, unsigned precisions)
{
    progress_state ps = {"mpcl: first use on this device: tuning", isatty(2), 0};
    mpcl_tune_options o;
    mpcl_tune_options_init(&o);
    const char *b = getenv("MPCL_TUNE_BUDGET");
    double budget = 0.0;
    if (b && *b && parse_real(b, 0.0, 1, 86400.0, &budget))
        o.budget_s = budget;
    o.shapes = shapes;
    o.shape_count = n;
    o.precisions = precisions;
    o.quiet_stock = 1; /* CLBlast's own values are not measured at first use */
    o.progress = on_progress;
    o.user = &ps;
    mpcl_tune_result r;
    mpcl_status s = spec ? mpcl_tune_model(ctx, spec, batch, &o, &r) : mpcl_tune(ctx, &o, &r);
    progress_end(&ps);
    if (s != MPCL_OK) /* the run goes on with the parameters in force */
        fprintf(stderr, "mpcl: note: tuning CLBlast failed, going on without: %s\n",
                mpcl_last_error(ctx));
    else if (r.searched)
        fprintf(stderr, "mpcl: %s (saved in %s; --no-tune or MPCL_TUNE=0 skips this)\n", r.summary,
                r.path[0] ? r.path : "no cache");
}

int cli_autotune(mpcl_context *ctx, const mpcl_model_spec *spec, size_t batch, int no_tune)
{
    if (autotune_off(no_tune))
        return 0;
    if (mpcl_tune_cached(ctx, MPCL_TUNE_SINGLE))
        mpcl_tuning_reload(ctx); /* written after ctx was made (another mode's search) */
    else
        first_use_tune(ctx, spec, batch, NULL, 0, 0);
    return 0;
}

int cli_autotune_shapes(mpcl_context *ctx, const mpcl_gemm_shape *shapes, size_t n,
                        unsigned precisions, int no_tune)
{
    if (!autotune_off(no_tune) && !mpcl_tune_cached(ctx, precisions))
        first_use_tune(ctx, NULL, 0, shapes, n, precisions);
    return 0;
}

/* --------------------------------------------------------------- command */

typedef struct {
    const char *model; /* NULL: the default; "none": squares */
    unsigned long batch;
    unsigned precisions; /* 0: all the device runs */
    double budget;
    unsigned long max_candidates;
    int force, json;
    const char *device;
} tune_args;

static int tune_parse(int argc, char **argv, tune_args *a)
{
    const char *cmd = "tune";
    memset(a, 0, sizeof *a);
    a->batch = 64;
    a->budget = 60.0;
    getopt_reset();
    int c;
    while ((c = getopt_long(argc, argv, ":h", TUNE_OPTIONS, NULL)) != -1) {
        switch (c) {
        case 'h':
            fputs(TUNE_HELP, stdout);
            return EXIT_OK;
        case TUNE_MODEL:
            a->model = optarg;
            break;
        case TUNE_BATCH:
            if (!parse_uint(optarg, 1, 65536, &a->batch))
                return usage_error(cmd, "--batch must be an integer 1..65536, not '%s'", optarg);
            break;
        case TUNE_PRECISION:
            if (strcmp(optarg, "single") == 0)
                a->precisions = MPCL_TUNE_SINGLE;
            else if (strcmp(optarg, "half") == 0)
                a->precisions = MPCL_TUNE_HALF;
            else if (strcmp(optarg, "all") == 0)
                a->precisions = 0;
            else
                return usage_error(cmd, "--precision must be single, half or all, not '%s'", optarg);
            break;
        case TUNE_BUDGET:
            if (!parse_real(optarg, 1.0, 0, 86400.0, &a->budget))
                return usage_error(cmd, "--budget must be seconds, 1..86400, not '%s'", optarg);
            break;
        case TUNE_MAX:
            if (!parse_uint(optarg, 1, 10000, &a->max_candidates))
                return usage_error(cmd, "--max-candidates must be an integer 1..10000, not '%s'",
                                   optarg);
            break;
        case TUNE_FORCE:
            a->force = 1;
            break;
        case TUNE_JSON:
            a->json = 1;
            break;
        case TUNE_DEVICE:
            a->device = optarg;
            break;
        default:
            return option_error(cmd, TUNE_OPTIONS, c, argc, argv);
        }
    }
    if (optind < argc)
        return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    return -1;
}

/* One precision: a context in the mode whose GEMMs are that precision's,
 * on CLBlast's own parameters (so that they can be measured), then the
 * search. */
static int tune_one(const tune_args *a, const mpcl_model_spec *spec, int half, cJSON *out_arr,
                    int *any_searched)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.device = a->device;
    opt.precision = half ? MPCL_PRECISION_FP16 : MPCL_PRECISION_FP32;
    opt.clblast_own = 1;
    mpcl_context *ctx = NULL;
    mpcl_status s = cli_context_create(&opt, &ctx);
    if (s != MPCL_OK) {
        int rc = runtime_error(s, mpcl_last_error(ctx));
        mpcl_context_destroy(ctx);
        return rc;
    }
    if (half)
        s = mpcl_set_gemm_accumulation(ctx, MPCL_ACCUM_HALF);
    progress_state ps = {"mpcl tune:", isatty(2), 0};
    mpcl_tune_options o;
    mpcl_tune_options_init(&o);
    o.budget_s = a->budget;
    o.precisions = half ? MPCL_TUNE_HALF : MPCL_TUNE_SINGLE;
    o.max_candidates = (unsigned)a->max_candidates;
    o.force = a->force;
    o.progress = on_progress;
    o.user = &ps;
    mpcl_tune_result r;
    memset(&r, 0, sizeof r);
    if (s == MPCL_OK)
        s = spec ? mpcl_tune_model(ctx, spec, a->batch, &o, &r) : mpcl_tune(ctx, &o, &r);
    progress_end(&ps);
    if (s != MPCL_OK) {
        int rc = runtime_error(s, mpcl_last_error(ctx));
        mpcl_context_destroy(ctx);
        return rc;
    }
    *any_searched |= r.searched;
    if (!a->json) {
        printf("%s: %s\n", half ? "half" : "single", r.summary);
    } else {
        jctx j = {1};
        cJSON *o2 = jcheck(&j, cJSON_CreateObject());
        jstr(&j, o2, "precision", half ? "half" : "single");
        jbool(&j, o2, "searched", r.searched);
        jnum(&j, o2, "candidates", r.candidates);
        jnum(&j, o2, "rejected", r.rejected);
        jnum(&j, o2, "seconds", r.seconds);
        if (r.searched) {
            jnum(&j, o2, "tuned_gflops", r.tuned_gflops);
            if (r.stock_gflops > 0)
                jnum(&j, o2, "stock_gflops", r.stock_gflops);
            else
                cJSON_AddNullToObject(o2, "stock_gflops");
        }
        jstr(&j, o2, "cache", r.path);
        jstr(&j, o2, "summary", r.summary);
        jstr(&j, o2, "clblast_tuning", mpcl_tuning_describe(ctx));
        if (o2)
            cJSON_AddItemToArray(out_arr, o2);
    }
    mpcl_context_destroy(ctx);
    return EXIT_OK;
}

int cmd_tune(int argc, char **argv)
{
    tune_args a;
    int rc = tune_parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    mpcl_model_spec *spec = NULL;
    if (!a.model || strcmp(a.model, "none") != 0) {
        char path[4096], searched[2048], err[2048];
        if (!resolve_model(a.model, path, sizeof path, searched, sizeof searched)) {
            return usage_error("tune", "--model: '%s' is not a file, and there is no %s or %s.txt in %s",
                               a.model ? a.model : "", a.model ? a.model : "", a.model ? a.model : "",
                               searched);
        }
        spec = malloc(sizeof *spec);
        if (!spec)
            return runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        mpcl_status s = mpcl_model_spec_load(path, spec, err, sizeof err);
        if (s != MPCL_OK) {
            free(spec);
            return runtime_error(s, err);
        }
    }
    /* which precisions: half only where the device runs it */
    unsigned want = a.precisions;
    if (want == 0 || (want & MPCL_TUNE_HALF)) {
        mpcl_options opt;
        mpcl_options_init(&opt);
        opt.device = a.device;
        opt.precision = MPCL_PRECISION_FP16;
        mpcl_context *probe = NULL;
        mpcl_status s = cli_context_create(&opt, &probe);
        const int half_ok = s == MPCL_OK;
        if (s != MPCL_OK && s != MPCL_ERR_UNSUPPORTED) {
            rc = runtime_error(s, mpcl_last_error(probe));
            mpcl_context_destroy(probe);
            free(spec);
            return rc;
        }
        if (!half_ok && want == MPCL_TUNE_HALF) {
            fprintf(stderr, "mpcl tune: %s\n", mpcl_last_error(probe));
            mpcl_context_destroy(probe);
            free(spec);
            return EXIT_UNSUPPORTED;
        }
        mpcl_context_destroy(probe);
        if (want == 0)
            want = MPCL_TUNE_SINGLE | (half_ok ? MPCL_TUNE_HALF : 0u);
    }
    cJSON *arr = a.json ? cJSON_CreateArray() : NULL;
    int any = 0;
    rc = EXIT_OK;
    for (int half = 0; half < 2 && rc == EXIT_OK; half++)
        if (want & (half ? MPCL_TUNE_HALF : MPCL_TUNE_SINGLE))
            rc = tune_one(&a, spec, half, arr, &any);
    if (rc == EXIT_OK && arr) {
        jctx j = {1};
        cJSON *root = jcheck(&j, cJSON_CreateObject());
        jnum(&j, root, "schema", 1);
        jstr(&j, root, "command", "tune");
        if (root)
            cJSON_AddItemToObject(root, "precisions", arr);
        arr = NULL;
        rc = json_print(&j, root);
    }
    cJSON_Delete(arr);
    free(spec);
    return rc;
}
