/* gpt_ref — a few AdamW training steps of a GPT spec through mpcl's public
 * API (mpcl_trainer_step_lm), written out for an independent reference
 * (tests/interop/npgpt.py).
 *
 * Usage: gpt_ref SPEC_FILE TEXT_FILE OUT_DIR [--precision fp32] [--steps 10]
 *                [--batch 4] [--context N] [--lr 1e-3] [--weight-decay 0.1]
 *                [--seed 3] [--inject-inf 0]
 *
 * SPEC_FILE holds a "gpt" spec; TEXT_FILE is read as bytes (mpcl_text_load,
 * the default validation fraction); --context is the sequence length T of a
 * batch (default: the model's context). --inject-inf N puts an inf into the
 * gradients of step N (1-based; mpcl_train_options.inject_inf_step, 0:
 * never), which the trainer then skips as it skips an fp16 overflow.
 *
 * Writes into OUT_DIR (created when missing):
 *   weights.safetensors  the initial weights (mpcl_model_save: FP32 master
 *                        weights, nanoGPT's names)
 *   final.safetensors    the same after the last step
 *   run.json             {"precision", "batch", "context", "steps", "lr",
 *                         "weight_decay", "seed", "inject_inf",
 *                         "tokens": [steps][batch*context],
 *                         "targets": [steps][batch*context],
 *                         "losses": [steps], "skipped": [steps] (0 or 1),
 *                         "scales": [steps] (the loss scale each step used),
 *                         "grads_step": s, "grads": {name: [values]}}
 *                        grads: every parameter's gradient of step s, the
 *                        first step whose gradients were finite (0 unless
 *                        the fp16 loss scaler skipped step 0): the
 *                        gradients the optimizer read (the buffer holds them
 *                        at the loss scale; divided by it here, exactly: a
 *                        power of two). Without such a step,
 *                        grads_step is -1 and grads is empty.
 *
 * The trainer: mpcl_train_options_init for the precision (dynamic loss
 * scaling in the fp16 modes), AdamW at a constant lr with the given weight
 * decay (mpcl spares embeddings, biases and layer norms from it). Step i
 * trains on mpcl_text_batch(TRAIN, seed, i, batch, context).
 *
 * Exit status: 0 done, 1 a failure (the message names the operation or the
 * file), 2 usage, 4 the precision mode does not run on the device, 77 no
 * OpenCL device.
 */
#include "mpcl.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static mpcl_context *g_ctx;

static void die(const char *what)
{
    fprintf(stderr, "gpt_ref: %s: %s\n", what, g_ctx ? mpcl_last_error(g_ctx) : "");
    exit(1);
}

#define CHECK(call, what)                                                                          \
    do {                                                                                           \
        if ((call) != MPCL_OK)                                                                     \
            die(what);                                                                             \
    } while (0)

static void usage(void)
{
    fprintf(stderr, "usage: gpt_ref SPEC_FILE TEXT_FILE OUT_DIR [--precision fp32] [--steps 10] "
                    "[--batch 4] [--context N] [--lr 1e-3] [--weight-decay 0.1] [--seed 3] "
                    "[--inject-inf 0]\n");
    exit(2);
}

static unsigned long long parse_uint(const char *opt, const char *v, unsigned long long min)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || x < min || v[0] == '-') {
        fprintf(stderr, "gpt_ref: %s %s: expected an integer >= %llu\n", opt, v, min);
        exit(2);
    }
    return x;
}

static double parse_nonneg(const char *opt, const char *v)
{
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= 0)) {
        fprintf(stderr, "gpt_ref: %s %s: expected a number >= 0\n", opt, v);
        exit(2);
    }
    return x;
}

static void path_join(char *dst, size_t len, const char *dir, const char *file)
{
    if ((size_t)snprintf(dst, len, "%s/%s", dir, file) >= len) {
        fprintf(stderr, "gpt_ref: path too long: %s/%s\n", dir, file);
        exit(1);
    }
}

/* An int array for cJSON (int32_t need not be int). */
static cJSON *int_array(const int32_t *v, size_t n)
{
    int *tmp = malloc((n ? n : 1) * sizeof *tmp);
    if (!tmp)
        return NULL;
    for (size_t i = 0; i < n; i++)
        tmp[i] = (int)v[i];
    cJSON *a = cJSON_CreateIntArray(tmp, (int)n);
    free(tmp);
    return a;
}

int main(int argc, char **argv)
{
    const char *spec_path = NULL, *text_path = NULL, *out_dir = NULL, *prec_name = "fp32";
    unsigned long long steps = 10, batch = 4, seed = 3, context = 0, inject = 0;
    double lr = 1e-3, wd = 0.1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] == '-' && a[1] == '-') {
            if (i + 1 >= argc)
                usage();
            const char *v = argv[++i];
            if (strcmp(a, "--precision") == 0)
                prec_name = v;
            else if (strcmp(a, "--steps") == 0)
                steps = parse_uint(a, v, 1);
            else if (strcmp(a, "--batch") == 0)
                batch = parse_uint(a, v, 1);
            else if (strcmp(a, "--context") == 0)
                context = parse_uint(a, v, 1);
            else if (strcmp(a, "--seed") == 0)
                seed = parse_uint(a, v, 0);
            else if (strcmp(a, "--inject-inf") == 0)
                inject = parse_uint(a, v, 0);
            else if (strcmp(a, "--lr") == 0)
                lr = parse_nonneg(a, v);
            else if (strcmp(a, "--weight-decay") == 0)
                wd = parse_nonneg(a, v);
            else {
                fprintf(stderr, "gpt_ref: unknown option %s\n", a);
                usage();
            }
        } else if (!spec_path)
            spec_path = a;
        else if (!text_path)
            text_path = a;
        else if (!out_dir)
            out_dir = a;
        else
            usage();
    }
    if (!spec_path || !text_path || !out_dir)
        usage();

    mpcl_options opt;
    mpcl_options_init(&opt);
    if (mpcl_precision_parse(prec_name, &opt.precision) != MPCL_OK) {
        fprintf(stderr, "gpt_ref: --precision %s: unknown mode\n", prec_name);
        return 2;
    }
    mpcl_status st = mpcl_context_create(&opt, &g_ctx);
    if (st == MPCL_ERR_NO_PLATFORM || st == MPCL_ERR_NO_DEVICE) {
        fprintf(stderr, "gpt_ref: no OpenCL device: %s\n", mpcl_last_error(g_ctx));
        mpcl_context_destroy(g_ctx);
        return 77;
    }
    if (st == MPCL_ERR_UNSUPPORTED) {
        fprintf(stderr, "gpt_ref: --precision %s does not run on this device: %s\n", prec_name,
                mpcl_last_error(g_ctx));
        mpcl_context_destroy(g_ctx);
        return 4;
    }
    if (st != MPCL_OK)
        die("mpcl_context_create");
    mpcl_context *ctx = g_ctx;
    mpcl_precision prec = mpcl_precision_chosen(ctx, NULL);

    mpcl_model_spec *spec = malloc(sizeof *spec);
    if (!spec)
        die("out of host memory");
    char err[512];
    if (mpcl_model_spec_load(spec_path, spec, err, sizeof err) != MPCL_OK) {
        fprintf(stderr, "gpt_ref: %s\n", err);
        return 1;
    }
    if (spec->kind != MPCL_MODEL_GPT) {
        fprintf(stderr, "gpt_ref: %s: not a gpt spec\n", spec_path);
        return 1;
    }
    if (context == 0)
        context = spec->gpt.context;
    if (context > spec->gpt.context) {
        fprintf(stderr, "gpt_ref: --context %llu: the model's context is %zu\n", context,
                spec->gpt.context);
        return 2;
    }

    mpcl_model_options mo;
    mpcl_model_options_init(&mo);
    mo.max_batch = batch;
    mo.seed = seed;
    mpcl_model *m = NULL;
    CHECK(mpcl_model_create_with(ctx, spec, &mo, &m), "mpcl_model_create_with");

    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "gpt_ref: mkdir %s: %s\n", out_dir, strerror(errno));
        return 1;
    }
    char path[4096];
    path_join(path, sizeof path, out_dir, "weights.safetensors");
    CHECK(mpcl_model_save(m, path, NULL, 0), path);

    mpcl_text text;
    memset(&text, 0, sizeof text);
    if (mpcl_text_load(text_path, 0, context, &text, err, sizeof err) != MPCL_OK) {
        fprintf(stderr, "gpt_ref: %s\n", err);
        return 1;
    }

    mpcl_train_options to;
    mpcl_train_options_init(&to, prec);
    mpcl_optimizer_options_init(&to.optimizer, MPCL_OPT_ADAMW);
    to.optimizer.lr = (float)lr;
    to.optimizer.weight_decay = (float)wd;
    to.inject_inf_step = inject;
    mpcl_trainer *tr = NULL;
    CHECK(mpcl_trainer_create(m, &to, &tr), "mpcl_trainer_create");

    mpcl_tensor *grad = mpcl_model_grad(m);
    size_t P = mpcl_tensor_numel(grad);
    size_t n = batch * context;
    float *g_host = malloc(P * sizeof *g_host);
    float *losses = malloc(steps * sizeof *losses), *scales = malloc(steps * sizeof *scales);
    int *skipped = malloc(steps * sizeof *skipped);
    int32_t *tokens = malloc(n * sizeof *tokens), *targets = malloc(n * sizeof *targets);
    cJSON *root = cJSON_CreateObject(), *grads = cJSON_CreateObject();
    cJSON *jtok = cJSON_CreateArray(), *jtgt = cJSON_CreateArray();
    if (!g_host || !losses || !scales || !skipped || !tokens || !targets || !root || !grads ||
        !jtok || !jtgt)
        die("out of host memory");
    long grads_step = -1;
    for (unsigned long long s = 0; s < steps; s++) {
        char what[64];
        snprintf(what, sizeof what, "step %llu: mpcl_text_batch", s);
        CHECK(mpcl_text_batch(&text, MPCL_TEXT_TRAIN, seed, s, batch, context, tokens, targets),
              what);
        cJSON *a = int_array(tokens, n), *b = int_array(targets, n);
        if (!a || !b || !cJSON_AddItemToArray(jtok, a) || !cJSON_AddItemToArray(jtgt, b))
            die("out of host memory");
        mpcl_step_stats stats;
        snprintf(what, sizeof what, "step %llu: mpcl_trainer_step_lm", s);
        CHECK(mpcl_trainer_step_lm(tr, tokens, targets, batch, context, &stats), what);
        losses[s] = stats.loss;
        scales[s] = stats.scale;
        skipped[s] = stats.skipped != 0;
        if (grads_step < 0 && !stats.skipped) {
            /* the buffer holds this step's gradients at its loss scale;
             * the optimizer unscaled them in float as it read them */
            grads_step = (long)s;
            snprintf(what, sizeof what, "step %llu: downloading the gradients", s);
            CHECK(mpcl_tensor_download(grad, g_host, P), what);
            for (size_t i = 0; i < P; i++)
                g_host[i] /= stats.scale;
            mpcl_param_info info;
            for (size_t i = 0; mpcl_model_param(m, i, &info) == MPCL_OK; i++) {
                if (info.buffer)
                    continue;
                if (info.offset + info.numel > P)
                    die("mpcl_model_param: a parameter lies outside the flat buffer");
                cJSON *g = cJSON_CreateFloatArray(g_host + info.offset, (int)info.numel);
                if (!g || !cJSON_AddItemToObject(grads, info.name, g))
                    die("out of host memory");
            }
        }
    }
    path_join(path, sizeof path, out_dir, "final.safetensors");
    CHECK(mpcl_model_save(m, path, NULL, 0), path);

    if (!cJSON_AddStringToObject(root, "precision", mpcl_precision_name(prec)) ||
        !cJSON_AddNumberToObject(root, "batch", (double)batch) ||
        !cJSON_AddNumberToObject(root, "context", (double)context) ||
        !cJSON_AddNumberToObject(root, "steps", (double)steps) ||
        !cJSON_AddNumberToObject(root, "lr", (double)(float)lr) ||
        !cJSON_AddNumberToObject(root, "weight_decay", (double)(float)wd) ||
        !cJSON_AddNumberToObject(root, "seed", (double)seed) ||
        !cJSON_AddNumberToObject(root, "inject_inf", (double)inject) ||
        !cJSON_AddItemToObject(root, "tokens", jtok) ||
        !cJSON_AddItemToObject(root, "targets", jtgt) ||
        !cJSON_AddItemToObject(root, "losses", cJSON_CreateFloatArray(losses, (int)steps)) ||
        !cJSON_AddItemToObject(root, "skipped", cJSON_CreateIntArray(skipped, (int)steps)) ||
        !cJSON_AddItemToObject(root, "scales", cJSON_CreateFloatArray(scales, (int)steps)) ||
        !cJSON_AddNumberToObject(root, "grads_step", (double)grads_step) ||
        !cJSON_AddItemToObject(root, "grads", grads))
        die("out of host memory");
    char *json = cJSON_PrintUnformatted(root);
    if (!json)
        die("out of host memory");
    path_join(path, sizeof path, out_dir, "run.json");
    FILE *f = fopen(path, "w");
    if (!f || fputs(json, f) == EOF || fputc('\n', f) == EOF || fclose(f) != 0) {
        fprintf(stderr, "gpt_ref: writing %s: %s\n", path, strerror(errno));
        return 1;
    }
    int nskipped = 0;
    for (unsigned long long s = 0; s < steps; s++)
        nskipped += skipped[s];
    printf("gpt_ref: %s, %s, batch %llu x %llu, %llu steps (%d skipped), loss %.6f -> %.6f, "
           "%zu parameters; wrote %s\n",
           spec_path, mpcl_precision_name(prec), batch, context, steps, nskipped,
           (double)losses[0], (double)losses[steps - 1], mpcl_model_param_count(m), out_dir);

    free(json);
    cJSON_Delete(root);
    free(g_host);
    free(losses);
    free(scales);
    free(skipped);
    free(tokens);
    free(targets);
    mpcl_trainer_destroy(tr);
    mpcl_text_free(&text);
    mpcl_model_destroy(m);
    free(spec);
    mpcl_context_destroy(ctx);
    return 0;
}
