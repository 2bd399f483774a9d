/* cmd_bench.c — `mpcl bench train`: training throughput per precision mode,
 * with the device time per kernel and kernel family, as one JSON object
 * (docs/bench.md); `--model all` runs every shipped model. `mpcl bench
 * gemm` (further down): CLBlast GEMM GFLOP/s per shape, precision and
 * tuning, through mpcl_gemm_bench.
 *
 * Every requested mode gets its own context, model and trainer, created
 * before anything is timed. Then each mode runs --warmup untimed steps, and
 * --rounds times over all modes (so the modes alternate and share the
 * machine's load) --steps timed steps; img/s is the median over the rounds.
 * Last, with the library's profiler on, each mode runs --profile-steps more
 * steps for the device-time breakdown (profiling costs host time per
 * launch, so it never runs during the timed steps). */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

#include "cli.h"

static const char BENCH_HELP[] =
    "usage: mpcl bench train [options]\n"
    "\n"
    "Measures training speed: trains a model (default: the seed CNN, Adam lr 0.001)\n"
    "for a fixed number of steps in each requested precision mode and prints one\n"
    "JSON object with img/s, ms per step and the device time per kernel and kernel\n"
    "family. See docs/bench.md.\n"
    "\n"
    "options:\n"
    "  --model FILE        model spec or shipped model name (default: seed-cnn); all:\n"
    "                      every shipped model, one entry of \"models\" each\n"
    "  --data DIR          MNIST-layout or CIFAR-10 binary directory (default:\n"
    "                      " MPCL_DEFAULT_DATA_DIR ")\n"
    "  --synthetic         train on random images and labels instead of --data\n"
    "  --batch N           samples per step, 1..65536 (default: 64)\n"
    "  --steps N           timed steps per round, 1..1000000 (default: 100)\n"
    "  --warmup N          untimed steps per mode first, 0..1000000 (default: 10)\n"
    "  --rounds N          timed rounds over all modes, 1..1000 (default: 1); img/s is\n"
    "                      the median over the rounds\n"
    "  --profile-steps N   steps run with the profiler for the device-time breakdown,\n"
    "                      0..1000000 (default: 20; 0: no breakdown)\n"
    "  --precision LIST    a mode (auto, fp16, fp16-storage, fp32, bf16), a comma list of\n"
    "                      modes, or 'all': every mode the device runs (default: fp32)\n"
    "  --device SEL        P:D, gpu, cpu, accelerator or part of a device or platform name\n"
    "  --seed N            seeds the initialisation and the synthetic data (default: 1)\n"
    "  --no-tune           do not tune CLBlast's GEMMs at first use on the device (also\n"
    "                      MPCL_TUNE=0; docs/tune.md)\n"
    "  -h, --help          show this help\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure (data, model, OpenCL), 2 usage error,\n"
    "3 no device, 4 a requested precision is refused by the device\n";

enum {
    BENCH_MODEL = OPT_BASE,
    BENCH_DATA,
    BENCH_SYNTHETIC,
    BENCH_BATCH,
    BENCH_STEPS,
    BENCH_WARMUP,
    BENCH_ROUNDS,
    BENCH_PROFILE_STEPS,
    BENCH_PRECISION,
    BENCH_DEVICE,
    BENCH_SEED,
    BENCH_NO_TUNE,
    BENCH_HELP_OPT
};

static const struct option BENCH_OPTIONS[] = {
    {"model", required_argument, NULL, BENCH_MODEL},
    {"data", required_argument, NULL, BENCH_DATA},
    {"synthetic", no_argument, NULL, BENCH_SYNTHETIC},
    {"batch", required_argument, NULL, BENCH_BATCH},
    {"steps", required_argument, NULL, BENCH_STEPS},
    {"warmup", required_argument, NULL, BENCH_WARMUP},
    {"rounds", required_argument, NULL, BENCH_ROUNDS},
    {"profile-steps", required_argument, NULL, BENCH_PROFILE_STEPS},
    {"precision", required_argument, NULL, BENCH_PRECISION},
    {"device", required_argument, NULL, BENCH_DEVICE},
    {"seed", required_argument, NULL, BENCH_SEED},
    {"no-tune", no_argument, NULL, BENCH_NO_TUNE},
    {"help", no_argument, NULL, BENCH_HELP_OPT},
    {NULL, 0, NULL, 0},
};

#define BENCH_MAX_MODES 5
#define BENCH_MAX_KERNELS 64

typedef struct {
    const char *model, *data, *device;
    int synthetic;
    unsigned long batch, steps, warmup, rounds, profile_steps;
    int all;                              /* --precision all */
    int nmodes;                           /* requested modes, in order */
    mpcl_precision modes[BENCH_MAX_MODES];
    uint64_t seed;
    int no_tune;
} bench_args;

/* One precision mode's run. */
typedef struct {
    mpcl_precision requested, chosen;
    const char *why;
    mpcl_context *ctx;
    mpcl_model *model;
    mpcl_trainer *tr;
    double round_s[1000]; /* seconds of each round's timed steps */
    float last_loss;
    mpcl_profile_entry prof[BENCH_MAX_KERNELS];
    size_t nprof, nprof_total;
} bench_mode;

/* The training samples the steps cycle through. */
typedef struct {
    const uint8_t *images, *labels;
    size_t n, sample; /* samples, bytes per sample */
    size_t next;      /* the next sample to use */
} bench_data;

/* "fp32", "fp16-storage,fp32" or "all" into a. */
static int parse_modes(const char *cmd, const char *list, bench_args *a)
{
    a->nmodes = 0;
    a->all = 0;
    if (strcmp(list, "all") == 0) {
        static const mpcl_precision all[] = {MPCL_PRECISION_FP16, MPCL_PRECISION_FP16_STORAGE,
                                             MPCL_PRECISION_FP32, MPCL_PRECISION_BF16};
        a->all = 1;
        a->nmodes = 4;
        memcpy(a->modes, all, sizeof all);
        return -1;
    }
    char buf[256];
    if (strlen(list) >= sizeof buf || !*list)
        return usage_error(cmd, "--precision: '%s' is not valid; it accepts a mode (auto, fp16, "
                                "fp16-storage, fp32, bf16), a comma list of modes, or all", list);
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        mpcl_precision p;
        if (mpcl_precision_parse(tok, &p) != MPCL_OK)
            return usage_error(cmd, "--precision: '%s' in '%s' is not a precision mode; it "
                                    "accepts auto, fp16, fp16-storage, fp32, bf16, a comma list of "
                                    "them, or all", tok, list);
        for (int i = 0; i < a->nmodes; i++)
            if (a->modes[i] == p)
                return usage_error(cmd, "--precision: '%s' is listed twice in '%s'", tok, list);
        if (a->nmodes == BENCH_MAX_MODES)
            return usage_error(cmd, "--precision: at most %d modes", BENCH_MAX_MODES);
        a->modes[a->nmodes++] = p;
    }
    if (a->nmodes == 0 || list[strlen(list) - 1] == ',' || list[0] == ',' || strstr(list, ",,"))
        return usage_error(cmd, "--precision: '%s' has an empty entry; it accepts a mode, a "
                                "comma list of modes, or all", list);
    return -1;
}

static int count_opt(const char *cmd, const char *name, const char *v, unsigned long lo,
                     unsigned long hi, unsigned long *out)
{
    if (!parse_uint(v, lo, hi, out))
        return usage_error(cmd, "--%s: '%s' is not valid; it accepts an integer from %lu to %lu",
                           name, v, lo, hi);
    return -1;
}

/* Parses bench train's options; returns -1 to go on, else an exit code. */
static int bench_parse(int argc, char **argv, bench_args *a)
{
    const char *cmd = "bench train";
    memset(a, 0, sizeof *a);
    a->batch = 64;
    a->steps = 100;
    a->warmup = 10;
    a->rounds = 1;
    a->profile_steps = 20;
    a->nmodes = 1;
    a->modes[0] = MPCL_PRECISION_FP32;
    a->seed = 1;

    opterr = 0;
    int c, rc = -1;
    while (rc < 0 && (c = getopt_long(argc, argv, ":h", BENCH_OPTIONS, NULL)) != -1) {
        switch (c) {
        case BENCH_MODEL:
            if (!*optarg)
                return usage_error(cmd, "--model: the value is empty; it accepts a model spec "
                                        "file or the name of a shipped model (seed-cnn, lenet5, ...)");
            a->model = optarg;
            break;
        case BENCH_DATA:
            if (!*optarg)
                return usage_error(cmd, "--data: the value is empty; it accepts a directory "
                                        "with the four MNIST-layout IDX files or CIFAR-10's "
                                        "batches");
            a->data = optarg;
            break;
        case BENCH_SYNTHETIC: a->synthetic = 1; break;
        case BENCH_BATCH: rc = count_opt(cmd, "batch", optarg, 1, 65536, &a->batch); break;
        case BENCH_STEPS: rc = count_opt(cmd, "steps", optarg, 1, 1000000, &a->steps); break;
        case BENCH_WARMUP: rc = count_opt(cmd, "warmup", optarg, 0, 1000000, &a->warmup); break;
        case BENCH_ROUNDS: rc = count_opt(cmd, "rounds", optarg, 1, 1000, &a->rounds); break;
        case BENCH_PROFILE_STEPS:
            rc = count_opt(cmd, "profile-steps", optarg, 0, 1000000, &a->profile_steps);
            break;
        case BENCH_PRECISION: rc = parse_modes(cmd, optarg, a); break;
        case BENCH_DEVICE:
            if (!*optarg)
                return usage_error(cmd, "--device: the selector is empty; it accepts P:D, gpu, "
                                        "cpu, accelerator or part of a device or platform name");
            a->device = optarg;
            break;
        case BENCH_NO_TUNE:
            a->no_tune = 1;
            break;
        case BENCH_SEED: {
            unsigned long v = 0;
            rc = count_opt(cmd, "seed", optarg, 0, ULONG_MAX, &v);
            a->seed = v;
            break;
        }
        case 'h':
        case BENCH_HELP_OPT: fputs(BENCH_HELP, stdout); return EXIT_OK;
        default: return option_error(cmd, BENCH_OPTIONS, c, argc, argv);
        }
    }
    if (rc >= 0)
        return rc;
    if (optind < argc)
        return usage_error(cmd, "unexpected argument '%s'; bench train takes only options",
                           argv[optind]);
    if (a->synthetic && a->data)
        return usage_error(cmd, "--synthetic and --data do not go together (synthetic data "
                                "needs no directory)");
    return -1;
}


/* Copies the next batch (cycling through the samples) into img / lab. */
static void next_batch(bench_data *d, size_t b, uint8_t *img, uint8_t *lab)
{
    for (size_t i = 0; i < b; i++) {
        memcpy(img + i * d->sample, d->images + d->next * d->sample, d->sample);
        lab[i] = d->labels[d->next];
        d->next = d->next + 1 == d->n ? 0 : d->next + 1;
    }
}

/* n steps of mode m; the last loss in m->last_loss. */
static mpcl_status run_steps(bench_mode *m, bench_data *d, size_t b, unsigned long n, uint8_t *img,
                             uint8_t *lab)
{
    for (unsigned long i = 0; i < n; i++) {
        mpcl_step_stats st;
        memset(&st, 0, sizeof st);
        next_batch(d, b, img, lab);
        mpcl_status s = mpcl_trainer_step(m->tr, img, lab, b, &st);
        if (s != MPCL_OK)
            return s;
        m->last_loss = st.loss;
    }
    return mpcl_finish(m->ctx);
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double median(const double *v, size_t n)
{
    double *t = malloc(n * sizeof *t);
    if (!t)
        return v[0];
    memcpy(t, v, n * sizeof *t);
    qsort(t, n, sizeof *t, cmp_double);
    double r = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    free(t);
    return r;
}

/* The "device_time" object of one mode: per family and per kernel. */
static void json_device_time(jctx *j, cJSON *o, const bench_mode *m, unsigned long steps)
{
    cJSON *dt = jobj(j, o, "device_time");
    if (!dt)
        return;
    double total = 0.0;
    for (size_t i = 0; i < m->nprof; i++)
        total += m->prof[i].total_ms;
    jnum(j, dt, "profiled_steps", (double)steps);
    jnum(j, dt, "ms_per_step", steps ? total / (double)steps : 0.0);
    jnum(j, dt, "kernel_names", (double)m->nprof_total);
    /* families, in order of time */
    const char *fam[BENCH_MAX_KERNELS];
    double fms[BENCH_MAX_KERNELS];
    size_t nf = 0;
    for (size_t i = 0; i < m->nprof; i++) {
        const char *f = mpcl_profile_family(m->prof[i].name);
        size_t k = 0;
        while (k < nf && strcmp(fam[k], f) != 0)
            k++;
        if (k == nf) {
            fam[nf] = f;
            fms[nf++] = 0.0;
        }
        fms[k] += m->prof[i].total_ms;
    }
    for (size_t a = 0; a < nf; a++) /* few entries: selection sort, largest first */
        for (size_t b = a + 1; b < nf; b++)
            if (fms[b] > fms[a]) {
                double t = fms[a];
                fms[a] = fms[b];
                fms[b] = t;
                const char *s = fam[a];
                fam[a] = fam[b];
                fam[b] = s;
            }
    cJSON *fa = jcheck(j, cJSON_AddArrayToObject(dt, "families"));
    for (size_t i = 0; fa && i < nf; i++) {
        cJSON *e = jcheck(j, cJSON_CreateObject());
        if (!e || !cJSON_AddItemToArray(fa, e)) {
            cJSON_Delete(e);
            j->ok = 0;
            break;
        }
        jstr(j, e, "family", fam[i]);
        jnum(j, e, "ms_per_step", fms[i] / (double)steps);
        jnum(j, e, "share", total > 0 ? fms[i] / total : 0.0);
    }
    cJSON *ka = jcheck(j, cJSON_AddArrayToObject(dt, "kernels"));
    for (size_t i = 0; ka && i < m->nprof; i++) {
        cJSON *e = jcheck(j, cJSON_CreateObject());
        if (!e || !cJSON_AddItemToArray(ka, e)) {
            cJSON_Delete(e);
            j->ok = 0;
            break;
        }
        jstr(j, e, "name", m->prof[i].name);
        jstr(j, e, "family", mpcl_profile_family(m->prof[i].name));
        jnum(j, e, "launches_per_step", (double)m->prof[i].count / (double)steps);
        jnum(j, e, "ms_per_step", m->prof[i].total_ms / (double)steps);
        jnum(j, e, "share", total > 0 ? m->prof[i].total_ms / total : 0.0);
    }
}

typedef struct {
    const bench_args *a;
    const char *model_path, *data_desc;
    const mpcl_caps *caps;
    size_t params, n_samples;
    mpcl_normalization norm;
    const char *skipped_mode[BENCH_MAX_MODES];
    char skipped_why[BENCH_MAX_MODES][512];
    int nskipped;
} bench_report;

/* The document of one model's run; NULL when out of host memory. */
static cJSON *bench_json(const bench_report *r, const bench_mode *modes, int nmodes)
{
    const bench_args *a = r->a;
    jctx j = {1};
    cJSON *root = jcheck(&j, cJSON_CreateObject());
    if (!root)
        return NULL;
    jnum(&j, root, "schema", 1);
    jstr(&j, root, "bench", "train");
    jstr(&j, root, "mpcl_version", mpcl_version());
    cJSON *d = jobj(&j, root, "device");
    if (d) {
        jstr(&j, d, "name", r->caps->device);
        jstr(&j, d, "vendor", r->caps->vendor);
        jstr(&j, d, "platform", r->caps->platform);
        jstr(&j, d, "driver_version", r->caps->driver_version);
        jstr(&j, d, "device_version", r->caps->device_version);
        jstr(&j, d, "type", mpcl_device_type_name(r->caps->type));
        jnum(&j, d, "compute_units", r->caps->compute_units);
    }
    cJSON *st = jobj(&j, root, "settings");
    if (st) {
        jstr(&j, st, "model", r->model_path);
        jnum(&j, st, "parameters", (double)r->params);
        jstr(&j, st, "data", r->data_desc);
        jnum(&j, st, "samples", (double)r->n_samples);
        jnum(&j, st, "batch", (double)a->batch);
        jnum(&j, st, "steps", (double)a->steps);
        jnum(&j, st, "warmup", (double)a->warmup);
        jnum(&j, st, "rounds", (double)a->rounds);
        jnum(&j, st, "profile_steps", (double)a->profile_steps);
        jstr(&j, st, "optimizer", "adam");
        jnum(&j, st, "lr", 0.001);
        jnum(&j, st, "seed", (double)a->seed);
    }
    cJSON *arr = jcheck(&j, cJSON_AddArrayToObject(root, "modes"));
    double first_img_s = 0.0;
    for (int i = 0; arr && i < nmodes; i++) {
        const bench_mode *m = &modes[i];
        cJSON *o = jcheck(&j, cJSON_CreateObject());
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            j.ok = 0;
            break;
        }
        double img_s[1000], med_s = median(m->round_s, a->rounds);
        for (unsigned long k = 0; k < a->rounds; k++)
            img_s[k] = m->round_s[k] > 0 ? (double)(a->steps * a->batch) / m->round_s[k] : 0.0;
        double med_img_s = median(img_s, a->rounds);
        if (i == 0)
            first_img_s = med_img_s;
        jstr(&j, o, "precision", mpcl_precision_name(m->chosen));
        jstr(&j, o, "requested", mpcl_precision_name(m->requested));
        jstr(&j, o, "why", m->why);
        jstr(&j, o, "clblast", mpcl_tuning_describe(m->ctx));
        jnum(&j, o, "img_s", med_img_s);
        jnum(&j, o, "ms_per_step", 1e3 * med_s / (double)a->steps);
        jnum(&j, o, "relative_to_first", first_img_s > 0 ? med_img_s / first_img_s : 0.0);
        /* the model's device memory at this batch: activations as planned
         * (memory shared once a tensor's last use is past) and with one
         * buffer per tensor */
        mpcl_model_memory mm;
        mpcl_model_memory_info(m->model, &mm);
        cJSON *mo = jobj(&j, o, "model_memory");
        if (mo) {
            jnum(&j, mo, "parameter_bytes", (double)mm.parameters);
            jnum(&j, mo, "activation_bytes", (double)mm.activations);
            jnum(&j, mo, "activation_bytes_unshared", (double)mm.activations_unshared);
            jnum(&j, mo, "tensors", mm.tensors);
        }
        cJSON *ra = jcheck(&j, cJSON_CreateDoubleArray(img_s, (int)a->rounds));
        if (ra && !cJSON_AddItemToObject(o, "rounds_img_s", ra)) {
            cJSON_Delete(ra);
            j.ok = 0;
        }
        mpcl_scaler_state sc;
        mpcl_trainer_scaler(m->tr, &sc);
        jnum(&j, o, "final_loss", isfinite(m->last_loss) ? (double)m->last_loss : -1.0);
        jnum(&j, o, "loss_scale", (double)sc.scale);
        jnum(&j, o, "skipped_steps", (double)sc.skipped_steps);
        jnum(&j, o, "total_steps", (double)sc.steps);
        if (a->profile_steps)
            json_device_time(&j, o, m, a->profile_steps);
        else
            jcheck(&j, cJSON_AddNullToObject(o, "device_time"));
    }
    cJSON *sk = jcheck(&j, cJSON_AddArrayToObject(root, "skipped"));
    for (int i = 0; sk && i < r->nskipped; i++) {
        cJSON *o = jcheck(&j, cJSON_CreateObject());
        if (!o || !cJSON_AddItemToArray(sk, o)) {
            cJSON_Delete(o);
            j.ok = 0;
            break;
        }
        jstr(&j, o, "precision", r->skipped_mode[i]);
        jstr(&j, o, "reason", r->skipped_why[i]);
    }
    if (!j.ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* One model's run (model_arg: --model, NULL for the default) into *doc. */
static int bench_model(const bench_args *ap, const char *model_arg, cJSON **doc)
{
    const char *cmd = "bench train";
    bench_args a = *ap;
    int rc = -1;
    a.model = model_arg;
    *doc = NULL;

    char model_path[4096], searched[2048], err[2048];
    mpcl_model_spec *spec = NULL;
    mpcl_dataset data;
    memset(&data, 0, sizeof data);
    int have_data = 0;
    uint8_t *syn = NULL, *img = NULL, *lab = NULL;
    bench_mode *modes = NULL;
    mpcl_caps *caps = NULL;
    int nmodes = 0;
    mpcl_status s;
    bench_report rep;
    memset(&rep, 0, sizeof rep);
    rep.a = &a;

    if (!resolve_model(a.model, model_path, sizeof model_path, searched, sizeof searched)) {
        if (a.model)
            return usage_error(cmd, "--model: '%s' is not a file, and there is no %s or %s.txt "
                                    "in %s", a.model, a.model, a.model, searched);
        fprintf(stderr, "mpcl: the default model %s.txt is not in %s; give --model FILE or set "
                        "MPCL_MODEL_DIR\n", CLI_DEFAULT_MODEL, searched);
        return EXIT_RUNTIME;
    }
    rep.model_path = model_path;
    spec = calloc(1, sizeof *spec);
    modes = calloc(BENCH_MAX_MODES, sizeof *modes);
    caps = calloc(1, sizeof *caps);
    if (!spec || !modes || !caps) {
        rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        goto done;
    }
    rep.caps = caps;
    s = mpcl_model_spec_load(model_path, spec, err, sizeof err);
    if (s != MPCL_OK) {
        rc = runtime_error(s, err);
        goto done;
    }
    if (spec->kind == MPCL_MODEL_GPT) {
        fprintf(stderr, "mpcl: %s is a language model: bench train times image models; "
                        "`mpcl train --task lm` reports a language model's tokens/s\n", model_path);
        rc = EXIT_RUNTIME;
        goto done;
    }
    const mpcl_layer_spec *last = &spec->layers[spec->nlayers - 1];
    if (last->out_ndim != 1 || last->out_shape[0] < 2 || last->out_shape[0] > 256) {
        fprintf(stderr, "mpcl: %s:%d: the model must end in 2..256 class outputs\n", model_path,
                last->line);
        rc = EXIT_RUNTIME;
        goto done;
    }
    const size_t classes = last->out_shape[0];

    /* the samples */
    bench_data bd = {0};
    const char *data_dir = a.data ? a.data : MPCL_DEFAULT_DATA_DIR;
    if (a.synthetic) {
        bd.sample = spec->input[0] * spec->input[1] * spec->input[2];
        bd.n = 1024;
        syn = malloc(bd.n * (bd.sample + 1));
        if (!syn) {
            rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory for the synthetic data");
            goto done;
        }
        uint64_t st = a.seed ^ 0x5eedULL;
        for (size_t i = 0; i < bd.n * (bd.sample + 1); i++) {
            st = st * 6364136223846793005ULL + 1442695040888963407ULL;
            syn[i] = (uint8_t)(st >> 56);
        }
        for (size_t i = 0; i < bd.n; i++)
            syn[bd.n * bd.sample + i] = (uint8_t)(syn[bd.n * bd.sample + i] % classes);
        bd.images = syn;
        bd.labels = syn + bd.n * bd.sample;
        rep.data_desc = "synthetic";
    } else {
        s = mpcl_dataset_load(a.data, &data, err, sizeof err);
        if (s != MPCL_OK) {
            rc = runtime_error(s, err);
            goto done;
        }
        have_data = 1;
        bd.images = data.train_images.data;
        bd.labels = data.train_labels.data;
        bd.n = data.train_images.count;
        bd.sample = mpcl_idx_sample_bytes(&data.train_images);
        rep.data_desc = data_dir;
        if (spec->input[0] != data.train_images.channels ||
            spec->input[1] != data.train_images.rows || spec->input[2] != data.train_images.cols) {
            fprintf(stderr, "mpcl: %s: the model takes %zux%zux%zu inputs (channels x rows x "
                            "columns), but the images in %s are %zux%zux%zu\n", model_path,
                    spec->input[0], spec->input[1], spec->input[2], data_dir,
                    data.train_images.channels, data.train_images.rows, data.train_images.cols);
            rc = EXIT_RUNTIME;
            goto done;
        }
        if (classes < MPCL_DATASET_CLASSES) {
            fprintf(stderr, "mpcl: %s:%d: the model ends in %zu outputs, but the data have %d "
                            "classes\n", model_path, last->line, classes, MPCL_DATASET_CLASSES);
            rc = EXIT_RUNTIME;
            goto done;
        }
    }
    if (bd.n == 0) {
        fprintf(stderr, "mpcl: %s: no training samples\n", data_dir);
        rc = EXIT_RUNTIME;
        goto done;
    }
    rep.n_samples = bd.n;
    /* per channel (up to 4), as mpcl train measures it */
    mpcl_normalization_measure(&rep.norm, bd.images, bd.n, spec->input[0], spec->input[1] * spec->input[2]);
    img = malloc(a.batch * bd.sample);
    lab = malloc(a.batch);
    if (!img || !lab) {
        rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory for the batch buffers");
        goto done;
    }

    /* a context, model and trainer per mode */
    for (int i = 0; i < a.nmodes; i++) {
        bench_mode *m = &modes[nmodes];
        mpcl_options opt;
        mpcl_options_init(&opt);
        opt.device = a.device;
        opt.precision = a.modes[i];
        opt.seed = a.seed;
        m->requested = a.modes[i];
        s = cli_context_create(&opt, &m->ctx);
        if (s == MPCL_ERR_UNSUPPORTED && a.all) {
            rep.skipped_mode[rep.nskipped] = mpcl_precision_name(a.modes[i]);
            snprintf(rep.skipped_why[rep.nskipped++], sizeof rep.skipped_why[0], "%s",
                     mpcl_last_error(m->ctx));
            mpcl_context_destroy(m->ctx);
            m->ctx = NULL;
            continue;
        }
        if (s != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(m->ctx));
            mpcl_context_destroy(m->ctx);
            m->ctx = NULL;
            goto done;
        }
        nmodes++;
        m->chosen = mpcl_precision_chosen(m->ctx, &m->why);
        s = mpcl_model_create(m->ctx, spec, a.batch, a.seed, &m->model);
        mpcl_train_options to;
        if (s == MPCL_OK) {
            mpcl_train_options_init(&to, m->chosen);
            mpcl_optimizer_options_init(&to.optimizer, MPCL_OPT_ADAM);
            s = mpcl_model_set_normalization(m->model, &rep.norm);
            if (s == MPCL_OK)
                s = mpcl_trainer_create(m->model, &to, &m->tr);
        }
        if (s != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(m->ctx));
            goto done;
        }
    }
    /* CLBlast tuned at first use on the device (docs/tune.md), before
     * anything is timed: one search serves every mode (the overrides are
     * per process and device) */
    for (int i = 0; i < nmodes; i++)
        cli_autotune(modes[i].ctx, spec, a.batch, a.no_tune);
    if (nmodes == 0) {
        fprintf(stderr, "mpcl: the device runs none of the requested precision modes\n");
        rc = EXIT_UNSUPPORTED;
        goto done;
    }
    rep.params = mpcl_model_param_count(modes[0].model);
    s = cli_probe(modes[0].ctx, NULL, caps);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(modes[0].ctx));
        goto done;
    }

    /* warm-up, timed rounds (modes alternate), then the profiled steps */
    /* The first steps are where CLBlast may refuse a routine (Hgemm on a
     * device with undeclared half: the library then accumulates in float);
     * CLBlast's own stderr line is kept off the terminal there. */
    for (int i = 0; i < nmodes; i++) {
        cli_quiet q;
        cli_quiet_begin(&q, 0);
        s = run_steps(&modes[i], &bd, a.batch, a.warmup, img, lab);
        cli_quiet_end(&q);
        if (s != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(modes[i].ctx));
            goto done;
        }
    }
    for (unsigned long r = 0; r < a.rounds; r++)
        for (int i = 0; i < nmodes; i++) {
            cli_quiet q;
            if (r == 0 && a.warmup == 0)
                cli_quiet_begin(&q, 0);
            double t0 = now_s();
            s = run_steps(&modes[i], &bd, a.batch, a.steps, img, lab);
            modes[i].round_s[r] = now_s() - t0;
            if (r == 0 && a.warmup == 0)
                cli_quiet_end(&q);
            if (s != MPCL_OK) {
                rc = runtime_error(s, mpcl_last_error(modes[i].ctx));
                goto done;
            }
        }
    for (int i = 0; i < nmodes && a.profile_steps; i++) {
        bench_mode *m = &modes[i];
        s = mpcl_profile_enable(m->ctx, 1);
        if (s == MPCL_OK)
            s = run_steps(m, &bd, a.batch, a.profile_steps, img, lab);
        if (s == MPCL_OK)
            s = mpcl_profile_report(m->ctx, m->prof, BENCH_MAX_KERNELS, &m->nprof_total);
        if (s == MPCL_OK)
            s = mpcl_profile_enable(m->ctx, 0);
        if (s != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(m->ctx));
            goto done;
        }
        m->nprof = m->nprof_total < BENCH_MAX_KERNELS ? m->nprof_total : BENCH_MAX_KERNELS;
    }
    *doc = bench_json(&rep, modes, nmodes);
    if (!*doc) {
        fprintf(stderr, "mpcl: out of host memory while building the JSON output\n");
        rc = EXIT_RUNTIME;
    } else {
        rc = EXIT_OK;
    }

done:
    for (int i = 0; modes && i < BENCH_MAX_MODES; i++) {
        mpcl_trainer_destroy(modes[i].tr);
        mpcl_model_destroy(modes[i].model);
        mpcl_context_destroy(modes[i].ctx);
    }
    free(modes);
    free(caps);
    free(img);
    free(lab);
    free(syn);
    if (have_data)
        mpcl_dataset_free(&data);
    free(spec);
    return rc;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The shipped models: every *.txt beside the default model, by name. */
static int shipped_models(char ***out, size_t *count)
{
    char path[4096], searched[2048];
    *out = NULL;
    *count = 0;
    if (!resolve_model(NULL, path, sizeof path, searched, sizeof searched)) {
        fprintf(stderr, "mpcl: --model all: the shipped models (%s.txt) are not in %s; set "
                        "MPCL_MODEL_DIR\n", CLI_DEFAULT_MODEL, searched);
        return EXIT_RUNTIME;
    }
    char *slash = strrchr(path, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(path, sizeof path, ".");
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "mpcl: --model all: cannot read %s: %s\n", path, strerror(errno));
        return EXIT_RUNTIME;
    }
    char **names = NULL;
    size_t n = 0;
    int rc = EXIT_OK;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len <= 4 || strcmp(e->d_name + len - 4, ".txt") != 0 || e->d_name[0] == '.')
            continue;
        char **grown = realloc(names, (n + 1) * sizeof *names);
        char *full = malloc(strlen(path) + len + 2);
        if (grown)
            names = grown;
        if (!grown || !full) {
            free(full);
            rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory listing the models");
            break;
        }
        names = grown;
        sprintf(full, "%s/%s", path, e->d_name);
        names[n++] = full;
    }
    closedir(d);
    if (rc == EXIT_OK && n == 0) {
        fprintf(stderr, "mpcl: --model all: no model specs (*.txt) in %s\n", path);
        rc = EXIT_RUNTIME;
    }
    if (rc != EXIT_OK) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return rc;
    }
    qsort(names, n, sizeof *names, cmp_str);
    *out = names;
    *count = n;
    return EXIT_OK;
}

static int bench_train(int argc, char **argv)
{
    bench_args a;
    int rc = bench_parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    if (!a.model || strcmp(a.model, "all") != 0) {
        cJSON *doc = NULL;
        rc = bench_model(&a, a.model, &doc);
        if (rc != EXIT_OK)
            return rc;
        jctx j = {1};
        return json_print(&j, doc);
    }
    /* --model all: one document, one entry of "models" per shipped model */
    char **paths = NULL;
    size_t n = 0;
    if ((rc = shipped_models(&paths, &n)) != EXIT_OK)
        return rc;
    jctx j = {1};
    cJSON *root = jcheck(&j, cJSON_CreateObject());
    cJSON *arr = NULL;
    if (root) {
        jnum(&j, root, "schema", 1);
        jstr(&j, root, "bench", "train");
        jstr(&j, root, "mpcl_version", mpcl_version());
        arr = jcheck(&j, cJSON_AddArrayToObject(root, "models"));
    }
    for (size_t i = 0; rc == EXIT_OK && arr && i < n; i++) {
        cJSON *doc = NULL;
        mpcl_model_spec *sp = calloc(1, sizeof *sp);
        char why[256];
        int lm = sp && mpcl_model_spec_load(paths[i], sp, why, sizeof why) == MPCL_OK &&
                 sp->kind == MPCL_MODEL_GPT;
        free(sp);
        if (lm)
            continue; /* language models: tokens, not images */
        rc = bench_model(&a, paths[i], &doc);
        if (rc == EXIT_OK && !cJSON_AddItemToArray(arr, doc)) {
            cJSON_Delete(doc);
            j.ok = 0;
        }
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    if (rc != EXIT_OK) {
        cJSON_Delete(root);
        return rc;
    }
    return json_print(&j, root);
}

/* ------------------------------------------------------- bench gemm */

static const char GEMM_HELP[] =
    "usage: mpcl bench gemm [options]\n"
    "\n"
    "Measures CLBlast GEMM speed on the device: each shape in each precision the\n"
    "device runs (single: Sgemm; half: Hgemm where the probe verified half\n"
    "arithmetic), with mpcl's CLBlast tuning for the device and with CLBlast's own\n"
    "parameters. Every product is first checked against the host's on small-integer\n"
    "inputs; GFLOP/s = 2 M N K / the median time of a call. One JSON object; see\n"
    "docs/bench.md.\n"
    "\n"
    "options:\n"
    "  --shapes LIST       comma list of MxNxK, each optionally :nn, :nt, :tn or :tt\n"
    "                      (transposes of A and B) (default: 256, 512, 1024 square and\n"
    "                      conv / linear training shapes of the shipped models)\n"
    "  --precision LIST    single, half, a comma list of them, or all: every precision\n"
    "                      the device runs (default: all)\n"
    "  --tuning LIST       tuned, untuned or both (default: both)\n"
    "  --repeats N         timed repetitions per measurement, 1..1000 (default: 5)\n"
    "  --min-repeat-ms N   GEMM calls per repetition raised until one lasts N ms,\n"
    "                      0..60000 (default: 50)\n"
    "  --device SEL        P:D, gpu, cpu, accelerator or part of a device or platform name\n"
    "  --seed N            seeds the inputs (default: 1)\n"
    "  --no-tune           where the device has no CLBlast tuning yet, report tuned as\n"
    "                      null instead of searching one over these shapes (also\n"
    "                      MPCL_TUNE=0; docs/tune.md)\n"
    "  -h, --help          show this help\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure (OpenCL, CLBlast, a wrong product),\n"
    "2 usage error, 3 no device, 4 a requested precision is refused by the device\n";

enum {
    GEMM_SHAPES = OPT_BASE,
    GEMM_PRECISION,
    GEMM_TUNING,
    GEMM_REPEATS,
    GEMM_MIN_REPEAT_MS,
    GEMM_DEVICE,
    GEMM_SEED,
    GEMM_NO_TUNE,
    GEMM_HELP_OPT
};

static const struct option GEMM_OPTIONS[] = {
    {"shapes", required_argument, NULL, GEMM_SHAPES},
    {"precision", required_argument, NULL, GEMM_PRECISION},
    {"tuning", required_argument, NULL, GEMM_TUNING},
    {"repeats", required_argument, NULL, GEMM_REPEATS},
    {"min-repeat-ms", required_argument, NULL, GEMM_MIN_REPEAT_MS},
    {"device", required_argument, NULL, GEMM_DEVICE},
    {"seed", required_argument, NULL, GEMM_SEED},
    {"no-tune", no_argument, NULL, GEMM_NO_TUNE},
    {"help", no_argument, NULL, GEMM_HELP_OPT},
    {NULL, 0, NULL, 0},
};

#define GEMM_MAX_SHAPES 64
#define GEMM_MAX_DIM 65536ul

typedef struct {
    size_t m, n, k;
    int ta, tb;
    const char *label; /* what the shape stands for; NULL for --shapes */
} gemm_shape;

/* The default shapes: square sizes, then the GEMMs of training steps at batch
 * 64 (conv as im2col over the whole batch: M = out channels, N = 64 x the
 * output pixels, K = in channels x kernel taps; linear as y = x W^T). */
static const gemm_shape GEMM_DEFAULT_SHAPES[] = {
    {256, 256, 256, 0, 0, "square"},
    {512, 512, 512, 0, 0, "square"},
    {1024, 1024, 1024, 0, 0, "square"},
    {64, 50176, 288, 0, 0, "wide-cnn conv2 forward (64 out, 32x3x3 in, 64 images of 28x28)"},
    {64, 288, 50176, 0, 1, "wide-cnn conv2 weight gradient"},
    {288, 50176, 64, 1, 0, "wide-cnn conv2 input gradient"},
    {64, 256, 3136, 0, 1, "wide-cnn linear 3136->256 forward, batch 64"},
    {256, 3136, 64, 1, 0, "wide-cnn linear 3136->256 weight gradient"},
    {64, 256, 784, 0, 1, "mlp linear 784->256 forward, batch 64"},
    {64, 120, 400, 0, 1, "lenet5 linear 400->120 forward, batch 64"},
};

typedef struct {
    gemm_shape shapes[GEMM_MAX_SHAPES];
    int nshapes;
    int prec[2];   /* single, half requested */
    int all_prec;  /* --precision all (the default) */
    int tuning[2]; /* untuned, tuned */
    unsigned long repeats, min_repeat_ms;
    const char *device;
    uint64_t seed;
    int no_tune;
} gemm_args;

static int parse_shapes(const char *cmd, const char *list, gemm_args *a)
{
    char buf[2048];
    const char *accepts = "it accepts a comma list of MxNxK (each 1..65536), each optionally "
                          "followed by :nn, :nt, :tn or :tt";
    if (!*list || strlen(list) >= sizeof buf)
        return usage_error(cmd, "--shapes: '%s' is not valid; %s", list, accepts);
    if (list[0] == ',' || list[strlen(list) - 1] == ',' || strstr(list, ",,"))
        return usage_error(cmd, "--shapes: '%s' has an empty entry; %s", list, accepts);
    snprintf(buf, sizeof buf, "%s", list);
    a->nshapes = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (a->nshapes == GEMM_MAX_SHAPES)
            return usage_error(cmd, "--shapes: at most %d shapes", GEMM_MAX_SHAPES);
        gemm_shape *g = &a->shapes[a->nshapes];
        memset(g, 0, sizeof *g);
        char *colon = strchr(tok, ':');
        if (colon) {
            *colon = '\0';
            const char *t = colon + 1;
            if (strlen(t) != 2 || (t[0] != 'n' && t[0] != 't') || (t[1] != 'n' && t[1] != 't'))
                return usage_error(cmd, "--shapes: ':%s' in '%s' is not a transpose; %s", t, list,
                                   accepts);
            g->ta = t[0] == 't';
            g->tb = t[1] == 't';
        }
        char dims[3][32];
        size_t nd = 0;
        char *save2 = NULL;
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", tok);
        /* (":nt" alone leaves tok empty) */
        int bad = !*tok || tok[0] == 'x' || tok[strlen(tok) - 1] == 'x' || strstr(tok, "xx");
        for (char *d = strtok_r(tmp, "x", &save2); d && !bad; d = strtok_r(NULL, "x", &save2)) {
            if (nd == 3 || strlen(d) >= sizeof dims[0])
                bad = 1;
            else
                snprintf(dims[nd++], sizeof dims[0], "%s", d);
        }
        unsigned long v[3];
        for (size_t i = 0; !bad && i < 3; i++)
            bad = i >= nd || !parse_uint(dims[i], 1, GEMM_MAX_DIM, &v[i]);
        if (bad)
            return usage_error(cmd, "--shapes: '%s' in '%s' is not a shape; %s", tok, list,
                               accepts);
        g->m = v[0];
        g->n = v[1];
        g->k = v[2];
        a->nshapes++;
    }
    return -1;
}

/* "single", "half,single", "all"; or "tuned", "untuned", "both": into flags[2]. */
static int parse_pair(const char *cmd, const char *opt, const char *list, const char *n0,
                      const char *n1, const char *both, int flags[2])
{
    char buf[256];
    flags[0] = flags[1] = 0;
    if (strcmp(list, both) == 0) {
        flags[0] = flags[1] = 1;
        return -1;
    }
    if (!*list || strlen(list) >= sizeof buf || list[0] == ',' || list[strlen(list) - 1] == ',' ||
        strstr(list, ",,"))
        return usage_error(cmd, "--%s: '%s' is not valid; it accepts %s, %s, a comma list of "
                                "them, or %s", opt, list, n0, n1, both);
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int i = strcmp(tok, n0) == 0 ? 0 : strcmp(tok, n1) == 0 ? 1 : -1;
        if (i < 0)
            return usage_error(cmd, "--%s: '%s' in '%s' is not valid; it accepts %s, %s, a comma "
                                    "list of them, or %s", opt, tok, list, n0, n1, both);
        if (flags[i])
            return usage_error(cmd, "--%s: '%s' is listed twice in '%s'", opt, tok, list);
        flags[i] = 1;
    }
    return -1;
}

static int gemm_parse(int argc, char **argv, gemm_args *a)
{
    const char *cmd = "bench gemm";
    memset(a, 0, sizeof *a);
    a->nshapes = (int)(sizeof GEMM_DEFAULT_SHAPES / sizeof GEMM_DEFAULT_SHAPES[0]);
    memcpy(a->shapes, GEMM_DEFAULT_SHAPES, sizeof GEMM_DEFAULT_SHAPES);
    a->prec[0] = a->prec[1] = 1;
    a->all_prec = 1;
    a->tuning[0] = a->tuning[1] = 1;
    a->repeats = 5;
    a->min_repeat_ms = 50;
    a->seed = 1;
    opterr = 0;
    int c, rc = -1;
    while (rc < 0 && (c = getopt_long(argc, argv, ":h", GEMM_OPTIONS, NULL)) != -1) {
        switch (c) {
        case GEMM_SHAPES: rc = parse_shapes(cmd, optarg, a); break;
        case GEMM_PRECISION:
            rc = parse_pair(cmd, "precision", optarg, "single", "half", "all", a->prec);
            a->all_prec = strcmp(optarg, "all") == 0;
            break;
        case GEMM_TUNING:
            rc = parse_pair(cmd, "tuning", optarg, "untuned", "tuned", "both", a->tuning);
            break;
        case GEMM_REPEATS: rc = count_opt(cmd, "repeats", optarg, 1, 1000, &a->repeats); break;
        case GEMM_MIN_REPEAT_MS:
            rc = count_opt(cmd, "min-repeat-ms", optarg, 0, 60000, &a->min_repeat_ms);
            break;
        case GEMM_DEVICE:
            if (!*optarg)
                return usage_error(cmd, "--device: the selector is empty; it accepts P:D, gpu, "
                                        "cpu, accelerator or part of a device or platform name");
            a->device = optarg;
            break;
        case GEMM_SEED: {
            unsigned long v = 0;
            rc = count_opt(cmd, "seed", optarg, 0, ULONG_MAX, &v);
            a->seed = v;
            break;
        }
        case GEMM_NO_TUNE: a->no_tune = 1; break;
        case 'h':
        case GEMM_HELP_OPT: fputs(GEMM_HELP, stdout); return EXIT_OK;
        default: return option_error(cmd, GEMM_OPTIONS, c, argc, argv);
        }
    }
    if (rc >= 0)
        return rc;
    if (optind < argc)
        return usage_error(cmd, "unexpected argument '%s'; bench gemm takes only options",
                           argv[optind]);
    return -1;
}

/* The CPU's model name from /proc/cpuinfo, or "" where there is none. */
static void cpu_model(char *dst, size_t len)
{
    dst[0] = '\0';
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            const char *v = strchr(line, ':');
            if (v) {
                v++;
                while (*v == ' ' || *v == '\t')
                    v++;
                snprintf(dst, len, "%s", v);
                dst[strcspn(dst, "\n")] = '\0';
            }
            break;
        }
    fclose(f);
}

static void json_device(jctx *j, cJSON *root, const mpcl_caps *c)
{
    cJSON *d = jobj(j, root, "device");
    if (!d)
        return;
    jstr(j, d, "name", c->device);
    jstr(j, d, "vendor", c->vendor);
    jstr(j, d, "platform", c->platform);
    jstr(j, d, "driver_version", c->driver_version);
    jstr(j, d, "device_version", c->device_version);
    jstr(j, d, "type", mpcl_device_type_name(c->type));
    jnum(j, d, "compute_units", c->compute_units);
}

static void json_timing(jctx *j, cJSON *o, const char *key, const mpcl_gemm_bench_result *r)
{
    cJSON *t = jobj(j, o, key);
    if (!t)
        return;
    jnum(j, t, "gflops", r->gflops);
    jnum(j, t, "median_ms", r->median_s * 1e3);
    jnum(j, t, "min_ms", r->min_s * 1e3);
    jnum(j, t, "max_ms", r->max_s * 1e3);
    jnum(j, t, "repeats", r->repeats);
    jnum(j, t, "calls_per_repeat", r->calls_per_repeat);
    jnum(j, t, "checked", (double)r->checked);
    jbool(j, t, "exact", r->exact);
}

/* What mpcl_gemm_bench requires of the device for Hgemm: CLBlast runs half
 * only where cl_khr_fp16 is declared, and mpcl only where the probe verified
 * half arithmetic. */
static int half_runs(const mpcl_caps *c)
{
    return c->ext_fp16 && c->fp16_arith_check.passed &&
           (c->fp16_arith == MPCL_FP16_DECLARED_WORKS || c->fp16_arith == MPCL_FP16_UNDECLARED_WORKS);
}

static void gemm_options(const gemm_args *a, int i, int half, int tuned, mpcl_gemm_bench_options *go)
{
    const gemm_shape *g = &a->shapes[i];
    mpcl_gemm_bench_options_init(go);
    go->m = g->m;
    go->n = g->n;
    go->k = g->k;
    go->trans_a = g->ta;
    go->trans_b = g->tb;
    go->half = half;
    go->tuned = tuned;
    go->repeats = (unsigned)a->repeats;
    go->min_repeat_s = (double)a->min_repeat_ms * 1e-3;
}

static int bench_gemm(int argc, char **argv)
{
    gemm_args a;
    int rc = gemm_parse(argc, argv, &a);
    if (rc >= 0)
        return rc;

    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.device = a.device;
    opt.precision = MPCL_PRECISION_FP32;
    opt.seed = a.seed;
    opt.clblast_own = 1; /* CLBlast's own values are measured before any override */
    mpcl_context *ctx = NULL;
    mpcl_status s = cli_context_create(&opt, &ctx);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(ctx));
        mpcl_context_destroy(ctx);
        return rc;
    }
    mpcl_status *ust = NULL;
    mpcl_gemm_bench_result *ures = NULL;
    mpcl_caps *caps = calloc(1, sizeof *caps);
    mpcl_gemm_bench_result *res = calloc(1, sizeof *res);
    if (!caps || !res) {
        rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        goto done;
    }
    if ((s = cli_probe(ctx, NULL, caps)) != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(ctx));
        goto done;
    }

    jctx j = {1};
    cJSON *root = jcheck(&j, cJSON_CreateObject());
    if (!root) {
        rc = json_print(&j, root);
        goto done;
    }
    jnum(&j, root, "schema", 1);
    jstr(&j, root, "bench", "gemm");
    jstr(&j, root, "mpcl_version", mpcl_version());
    json_device(&j, root, caps);
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    if (*cpu)
        jstr(&j, root, "cpu", cpu);
    else
        jcheck(&j, cJSON_AddNullToObject(root, "cpu"));
    cJSON *st = jobj(&j, root, "settings");
    if (st) {
        jnum(&j, st, "repeats", (double)a.repeats);
        jnum(&j, st, "min_repeat_ms", (double)a.min_repeat_ms);
        jnum(&j, st, "seed", (double)a.seed);
        jstr(&j, st, "layout", "row-major, alpha 1, beta 0");
    }
    /* CLBlast's own values first, every shape: once this process overrides
     * them they cannot be measured again (docs/tune.md) */
    ust = calloc(2 * (size_t)a.nshapes, sizeof *ust);
    ures = calloc(2 * (size_t)a.nshapes, sizeof *ures);
    if (!ust || !ures) {
        cJSON_Delete(root);
        rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        goto done;
    }
    for (int p = 0; p < 2 && a.tuning[0]; p++)
        for (int i = 0; i < a.nshapes && a.prec[p]; i++) {
            mpcl_gemm_bench_options go;
            gemm_options(&a, i, p, 0, &go);
            cli_quiet q;
            cli_quiet_begin(&q, 0);
            ust[p * a.nshapes + i] = mpcl_gemm_bench(ctx, &go, &ures[p * a.nshapes + i]);
            cli_quiet_end(&q);
        }
    /* then the device's tuning: searched over these shapes at first use */
    if (a.tuning[1]) {
        mpcl_gemm_shape ts[2 * GEMM_MAX_SHAPES];
        size_t nts = 0;
        unsigned precs = 0;
        for (int p = 0; p < 2; p++)
            if (a.prec[p] && (p == 0 || half_runs(caps))) {
                precs |= p ? MPCL_TUNE_HALF : MPCL_TUNE_SINGLE;
                for (int i = 0; i < a.nshapes; i++) {
                    const gemm_shape *g = &a.shapes[i];
                    mpcl_gemm_shape t = {p, g->ta, g->tb, g->m, g->n, g->k, 1, 1};
                    ts[nts++] = t;
                }
            }
        if (precs)
            cli_autotune_shapes(ctx, ts, nts, precs, a.no_tune);
    }
    cJSON *modes = jcheck(&j, cJSON_AddArrayToObject(root, "modes"));
    cJSON *skipped = jcheck(&j, cJSON_AddArrayToObject(root, "skipped"));
    int failures = 0, refused = 0;
    static const char *const prec_name[2] = {"single", "half"};
    static const char *const routine[2] = {"CLBlastSgemm", "CLBlastHgemm"};
    static const char *const tuning_key[2] = {"untuned", "tuned"};
    for (int p = 0; p < 2 && modes && skipped; p++) {
        if (!a.prec[p])
            continue;
        cJSON *mode = NULL, *shapes = NULL;
        for (int i = 0; i < a.nshapes; i++) {
            const gemm_shape *g = &a.shapes[i];
            cJSON *e = NULL;
            for (int t = 0; t < 2; t++) {
                if (!a.tuning[t])
                    continue;
                if (t == 0) {
                    s = ust[p * a.nshapes + i];
                    *res = ures[p * a.nshapes + i];
                } else {
                    mpcl_gemm_bench_options go;
                    gemm_options(&a, i, p, t, &go);
                    cli_quiet q;
                    cli_quiet_begin(&q, 0);
                    s = mpcl_gemm_bench(ctx, &go, res);
                    cli_quiet_end(&q);
                }
                if (s == MPCL_ERR_UNSUPPORTED && p == 1 && !half_runs(caps)) {
                    /* no verified half: the whole precision is refused */
                    if (!a.all_prec) {
                        fprintf(stderr, "mpcl: bench gemm: --precision half: %s\n", res->reason);
                        refused = 1;
                    } else {
                        cJSON *o = jcheck(&j, cJSON_CreateObject());
                        if (o && cJSON_AddItemToArray(skipped, o)) {
                            jstr(&j, o, "precision", prec_name[p]);
                            jstr(&j, o, "reason", res->reason);
                        } else {
                            cJSON_Delete(o);
                            j.ok = 0;
                        }
                    }
                    goto next_precision;
                }
                if (!mode) {
                    mode = jcheck(&j, cJSON_CreateObject());
                    if (!mode || !cJSON_AddItemToArray(modes, mode)) {
                        cJSON_Delete(mode);
                        j.ok = 0;
                        goto emit;
                    }
                    jstr(&j, mode, "precision", prec_name[p]);
                    jstr(&j, mode, "routine", routine[p]);
                    shapes = jcheck(&j, cJSON_AddArrayToObject(mode, "shapes"));
                }
                if (!e) {
                    e = jcheck(&j, cJSON_CreateObject());
                    if (!e || !shapes || !cJSON_AddItemToArray(shapes, e)) {
                        cJSON_Delete(e);
                        j.ok = 0;
                        goto emit;
                    }
                    char name[96], tr[3] = {g->ta ? 't' : 'n', g->tb ? 't' : 'n', 0};
                    snprintf(name, sizeof name, "%zux%zux%zu:%s", g->m, g->n, g->k, tr);
                    jstr(&j, e, "shape", name);
                    if (g->label)
                        jstr(&j, e, "label", g->label);
                    else
                        jcheck(&j, cJSON_AddNullToObject(e, "label"));
                    jnum(&j, e, "m", (double)g->m);
                    jnum(&j, e, "n", (double)g->n);
                    jnum(&j, e, "k", (double)g->k);
                    jstr(&j, e, "transpose", tr);
                    jnum(&j, e, "gflop", 2e-9 * (double)g->m * (double)g->n * (double)g->k);
                }
                char rkey[32];
                snprintf(rkey, sizeof rkey, "%s_reason", tuning_key[t]);
                if (s == MPCL_OK) {
                    json_timing(&j, e, tuning_key[t], res);
                } else {
                    jcheck(&j, cJSON_AddNullToObject(e, tuning_key[t]));
                    jstr(&j, e, rkey, res->reason);
                    if (s != MPCL_ERR_UNSUPPORTED) {
                        failures++;
                        fprintf(stderr, "mpcl: bench gemm: %s\n", res->reason);
                    }
                }
            }
            if (e && p == 0 && a.tuning[1]) { /* the router's Sgemm: own kernel or CLBlast */
                mpcl_gemm_bench_options go;
                gemm_options(&a, i, p, 1, &go);
                go.routed = 1;
                cli_quiet q;
                cli_quiet_begin(&q, 0);
                s = mpcl_gemm_bench(ctx, &go, res);
                cli_quiet_end(&q);
                if (s == MPCL_OK) {
                    json_timing(&j, e, "routed", res);
                    jstr(&j, e, "routed_kernel", res->kernel);
                    cJSON *tu = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e, "tuned"), "gflops");
                    if (cJSON_IsNumber(tu) && tu->valuedouble > 0)
                        jnum(&j, e, "routed_over_tuned", res->gflops / tu->valuedouble);
                    else
                        jcheck(&j, cJSON_AddNullToObject(e, "routed_over_tuned"));
                } else {
                    jcheck(&j, cJSON_AddNullToObject(e, "routed"));
                    jstr(&j, e, "routed_reason", res->reason);
                    failures++;
                    fprintf(stderr, "mpcl: bench gemm: routed: %s\n", res->reason);
                }
            }
            if (e && a.tuning[0] && a.tuning[1]) {
                cJSON *u = cJSON_GetObjectItemCaseSensitive(e, "untuned");
                cJSON *tu = cJSON_GetObjectItemCaseSensitive(e, "tuned");
                cJSON *ug = cJSON_GetObjectItemCaseSensitive(u, "gflops");
                cJSON *tg = cJSON_GetObjectItemCaseSensitive(tu, "gflops");
                if (cJSON_IsNumber(ug) && cJSON_IsNumber(tg) && ug->valuedouble > 0)
                    jnum(&j, e, "tuned_over_untuned", tg->valuedouble / ug->valuedouble);
                else
                    jcheck(&j, cJSON_AddNullToObject(e, "tuned_over_untuned"));
            }
        }
    next_precision:;
    }
emit:
    if (refused) {
        cJSON_Delete(root);
        rc = EXIT_UNSUPPORTED;
        goto done;
    }
    rc = json_print(&j, root);
    if (rc == EXIT_OK && failures)
        rc = EXIT_RUNTIME;
done:
    free(ust);
    free(ures);
    free(res);
    free(caps);
    mpcl_context_destroy(ctx);
    return rc;
}

static const char BENCH_TOP_HELP[] =
    "usage: mpcl bench train [options]\n"
    "       mpcl bench gemm [options]\n"
    "\n"
    "Benchmarks:\n"
    "  train   training throughput per precision mode, with the device time per\n"
    "          kernel ('mpcl bench train --help')\n"
    "  gemm    CLBlast GEMM GFLOP/s per shape and precision, tuned and untuned\n"
    "          ('mpcl bench gemm --help')\n";

int cmd_bench(int argc, char **argv)
{
    if (argc < 2) {
        fputs(BENCH_TOP_HELP, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(BENCH_TOP_HELP, stdout);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
    }
    if (strcmp(argv[1], "train") == 0)
        return bench_train(argc - 1, argv + 1);
    if (strcmp(argv[1], "gemm") == 0)
        return bench_gemm(argc - 1, argv + 1);
    return usage_error("bench", "unknown benchmark '%s'; the benchmarks are: train, gemm", argv[1]);
}
