/* graph_ref — a few plain SGD steps of a model spec through mpcl's public
 * API, written out for an independent reference (tests/interop/npgraph.py).
 *
 * Usage: graph_ref SPEC_FILE OUT_DIR [--precision fp32] [--steps 5]
 *                  [--batch 4] [--lr 0.05] [--seed 3] [--data-seed 1]
 *
 * Writes into OUT_DIR (created when missing):
 *   weights.safetensors  the initial weights (mpcl_model_save: FP32 master
 *                        weights and batch-norm statistics, PyTorch names)
 *   final.safetensors    the same after the last step
 *   run.json             {"precision", "batch", "steps", "lr", "seed",
 *                         "data_seed", "input_shape": [B, C, H, W],
 *                         "input": [B*C*H*W], "labels": [B],
 *                         "losses": [steps], "grads": {name: [values]}}
 *                        grads: every trainable tensor's gradient of the
 *                        first step (running statistics are not parameters).
 *
 * The input batch: x[i] = 2u - 1, i = 0 .. B*C*H*W-1 in NCHW order, u the
 * i-th output of splitmix64 started at state data_seed (u = (z >> 11) *
 * 2^-53), rounded to float (and then to the storage dtype; "input" holds
 * the values the device saw). Labels: sample b has class b % classes.
 *
 * Each step: zero_grad, forward (training, step index as dropout's seed),
 * mpcl_softmax_cross_entropy (mean loss, no smoothing, grad_scale 1),
 * backward, then on the host w -= lr * g over the FP32 master weights,
 * uploaded back (and the working copy refreshed where it is a separate
 * buffer). The same batch every step.
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
    fprintf(stderr, "graph_ref: %s: %s\n", what, g_ctx ? mpcl_last_error(g_ctx) : "");
    exit(1);
}

#define CHECK(call, what)                                                                          \
    do {                                                                                           \
        if ((call) != MPCL_OK)                                                                     \
            die(what);                                                                             \
    } while (0)

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void usage(void)
{
    fprintf(stderr, "usage: graph_ref SPEC_FILE OUT_DIR [--precision fp32] [--steps 5] [--batch 4] "
                    "[--lr 0.05] [--seed 3] [--data-seed 1]\n");
    exit(2);
}

static unsigned long long parse_uint(const char *opt, const char *v, unsigned long long min)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || x < min || v[0] == '-') {
        fprintf(stderr, "graph_ref: %s %s: expected an integer >= %llu\n", opt, v, min);
        exit(2);
    }
    return x;
}

static void path_join(char *dst, size_t len, const char *dir, const char *file)
{
    if ((size_t)snprintf(dst, len, "%s/%s", dir, file) >= len) {
        fprintf(stderr, "graph_ref: path too long: %s/%s\n", dir, file);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    const char *spec_path = NULL, *out_dir = NULL, *prec_name = "fp32";
    unsigned long long steps = 5, batch = 4, seed = 3, data_seed = 1;
    double lr = 0.05;
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
            else if (strcmp(a, "--seed") == 0)
                seed = parse_uint(a, v, 0);
            else if (strcmp(a, "--data-seed") == 0)
                data_seed = parse_uint(a, v, 0);
            else if (strcmp(a, "--lr") == 0) {
                char *end;
                lr = strtod(v, &end);
                if (*end || end == v || !(lr >= 0)) {
                    fprintf(stderr, "graph_ref: --lr %s: expected a number >= 0\n", v);
                    return 2;
                }
            } else {
                fprintf(stderr, "graph_ref: unknown option %s\n", a);
                usage();
            }
        } else if (!spec_path)
            spec_path = a;
        else if (!out_dir)
            out_dir = a;
        else
            usage();
    }
    if (!spec_path || !out_dir)
        usage();

    mpcl_options opt;
    mpcl_options_init(&opt);
    if (mpcl_precision_parse(prec_name, &opt.precision) != MPCL_OK) {
        fprintf(stderr, "graph_ref: --precision %s: unknown mode\n", prec_name);
        return 2;
    }
    mpcl_status st = mpcl_context_create(&opt, &g_ctx);
    if (st == MPCL_ERR_NO_PLATFORM || st == MPCL_ERR_NO_DEVICE) {
        fprintf(stderr, "graph_ref: no OpenCL device: %s\n", mpcl_last_error(g_ctx));
        mpcl_context_destroy(g_ctx);
        return 77;
    }
    if (st == MPCL_ERR_UNSUPPORTED) {
        fprintf(stderr, "graph_ref: --precision %s does not run on this device: %s\n", prec_name,
                mpcl_last_error(g_ctx));
        mpcl_context_destroy(g_ctx);
        return 4;
    }
    if (st != MPCL_OK)
        die("mpcl_context_create");
    mpcl_context *ctx = g_ctx;

    mpcl_model_spec *spec = malloc(sizeof *spec);
    if (!spec)
        die("out of host memory");
    char err[512];
    if (mpcl_model_spec_load(spec_path, spec, err, sizeof err) != MPCL_OK) {
        fprintf(stderr, "graph_ref: %s\n", err);
        return 1;
    }
    const mpcl_layer_spec *last = &spec->layers[spec->nlayers - 1];
    if (last->out_ndim != 1) {
        fprintf(stderr, "graph_ref: %s: the last layer's output is not flat\n", spec_path);
        return 1;
    }
    size_t classes = last->out_shape[0];

    mpcl_model_options mo;
    mpcl_model_options_init(&mo);
    mo.max_batch = batch;
    mo.seed = seed;
    mpcl_model *m = NULL;
    CHECK(mpcl_model_create_with(ctx, spec, &mo, &m), "mpcl_model_create_with");

    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "graph_ref: mkdir %s: %s\n", out_dir, strerror(errno));
        return 1;
    }
    char path[4096];
    path_join(path, sizeof path, out_dir, "weights.safetensors");
    CHECK(mpcl_model_save(m, path, NULL, 0), path);

    /* the batch */
    size_t C = spec->input[0], H = spec->input[1], W = spec->input[2];
    size_t nx = batch * C * H * W;
    float *x_host = malloc(nx * sizeof *x_host);
    float *lab_host = malloc(batch * sizeof *lab_host);
    if (!x_host || !lab_host)
        die("out of host memory");
    uint64_t state = data_seed;
    for (size_t i = 0; i < nx; i++) {
        double u = (double)(splitmix64(&state) >> 11) * 0x1p-53;
        x_host[i] = (float)(2.0 * u - 1.0);
    }
    for (size_t b = 0; b < batch; b++)
        lab_host[b] = (float)(b % classes);

    mpcl_dtype sd = mpcl_storage_dtype(ctx);
    mpcl_tensor *x = NULL, *labels = NULL, *loss = NULL, *dlogits = NULL;
    size_t xs[4] = {batch, C, H, W}, ls[2] = {batch, classes}, one = 1, bs = batch;
    CHECK(mpcl_tensor_create(ctx, sd, 4, xs, MPCL_MEM_ACTIVATIONS, &x), "input tensor");
    CHECK(mpcl_tensor_create(ctx, MPCL_I32, 1, &bs, MPCL_MEM_ACTIVATIONS, &labels), "labels tensor");
    CHECK(mpcl_tensor_create(ctx, MPCL_F32, 1, &one, MPCL_MEM_SCRATCH, &loss), "loss tensor");
    CHECK(mpcl_tensor_create(ctx, sd, 2, ls, MPCL_MEM_GRADIENTS, &dlogits), "dlogits tensor");
    CHECK(mpcl_tensor_upload(x, x_host, nx), "uploading the input");
    CHECK(mpcl_tensor_download(x, x_host, nx), "downloading the input"); /* as the device has it */
    CHECK(mpcl_tensor_upload(labels, lab_host, batch), "uploading the labels");

    mpcl_tensor *master = mpcl_model_master(m), *working = mpcl_model_working(m);
    mpcl_tensor *grad = mpcl_model_grad(m);
    size_t P = mpcl_tensor_numel(master);
    if (mpcl_tensor_numel(grad) != P)
        die("the gradient buffer and the master weights differ in size");
    float *w_host = malloc(P * sizeof *w_host), *g_host = malloc(P * sizeof *g_host);
    float *losses = malloc(steps * sizeof *losses);
    if (!w_host || !g_host || !losses)
        die("out of host memory");

    cJSON *root = cJSON_CreateObject(), *grads = cJSON_CreateObject();
    if (!root || !grads)
        die("out of host memory");
    for (unsigned long long s = 0; s < steps; s++) {
        mpcl_tensor *logits = NULL;
        char what[64];
        snprintf(what, sizeof what, "step %llu: mpcl_model_zero_grad", s);
        CHECK(mpcl_model_zero_grad(m), what);
        snprintf(what, sizeof what, "step %llu: mpcl_model_forward", s);
        CHECK(mpcl_model_forward(m, x, 1, s, &logits), what);
        snprintf(what, sizeof what, "step %llu: mpcl_softmax_cross_entropy", s);
        CHECK(mpcl_softmax_cross_entropy(ctx, loss, dlogits, logits, labels, 0.0f, 1.0f), what);
        snprintf(what, sizeof what, "step %llu: mpcl_model_backward", s);
        CHECK(mpcl_model_backward(m, dlogits), what);
        snprintf(what, sizeof what, "step %llu: downloading the loss", s);
        CHECK(mpcl_tensor_download(loss, &losses[s], 1), what);
        snprintf(what, sizeof what, "step %llu: downloading the gradients", s);
        CHECK(mpcl_tensor_download(grad, g_host, P), what);
        if (s == 0) {
            mpcl_param_info info;
            for (size_t i = 0; mpcl_model_param(m, i, &info) == MPCL_OK; i++) {
                if (info.buffer)
                    continue; /* running statistics */
                if (info.offset + info.numel > P)
                    die("mpcl_model_param: a parameter lies outside the flat buffer");
                cJSON *a = cJSON_CreateFloatArray(g_host + info.offset, (int)info.numel);
                if (!a || !cJSON_AddItemToObject(grads, info.name, a))
                    die("out of host memory");
            }
        }
        snprintf(what, sizeof what, "step %llu: downloading the master weights", s);
        CHECK(mpcl_tensor_download(master, w_host, P), what);
        for (size_t i = 0; i < P; i++)
            w_host[i] -= (float)lr * g_host[i];
        snprintf(what, sizeof what, "step %llu: uploading the master weights", s);
        CHECK(mpcl_tensor_upload(master, w_host, P), what);
        if (working != master) {
            snprintf(what, sizeof what, "step %llu: mpcl_refresh_working", s);
            CHECK(mpcl_refresh_working(ctx, working, master), what);
        }
    }
    path_join(path, sizeof path, out_dir, "final.safetensors");
    CHECK(mpcl_model_save(m, path, NULL, 0), path);

    int shape[4] = {(int)batch, (int)C, (int)H, (int)W};
    if (!cJSON_AddStringToObject(root, "precision", mpcl_precision_name(mpcl_precision_chosen(ctx, NULL))) ||
        !cJSON_AddNumberToObject(root, "batch", (double)batch) ||
        !cJSON_AddNumberToObject(root, "steps", (double)steps) ||
        !cJSON_AddNumberToObject(root, "lr", (double)(float)lr) ||
        !cJSON_AddNumberToObject(root, "seed", (double)seed) ||
        !cJSON_AddNumberToObject(root, "data_seed", (double)data_seed) ||
        !cJSON_AddItemToObject(root, "input_shape", cJSON_CreateIntArray(shape, 4)) ||
        !cJSON_AddItemToObject(root, "input", cJSON_CreateFloatArray(x_host, (int)nx)) ||
        !cJSON_AddItemToObject(root, "labels", cJSON_CreateFloatArray(lab_host, (int)batch)) ||
        !cJSON_AddItemToObject(root, "losses", cJSON_CreateFloatArray(losses, (int)steps)) ||
        !cJSON_AddItemToObject(root, "grads", grads))
        die("out of host memory");
    char *text = cJSON_PrintUnformatted(root);
    if (!text)
        die("out of host memory");
    path_join(path, sizeof path, out_dir, "run.json");
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) == EOF || fputc('\n', f) == EOF || fclose(f) != 0) {
        fprintf(stderr, "graph_ref: writing %s: %s\n", path, strerror(errno));
        return 1;
    }
    printf("graph_ref: %s, %s, batch %llu, %llu steps, loss %.6f -> %.6f, %zu parameters; wrote %s\n",
           spec_path, mpcl_precision_name(mpcl_precision_chosen(ctx, NULL)), batch, steps,
           (double)losses[0], (double)losses[steps - 1], mpcl_model_param_count(m), out_dir);

    free(text);
    cJSON_Delete(root);
    free(w_host);
    free(g_host);
    free(losses);
    free(x_host);
    free(lab_host);
    mpcl_tensor_destroy(x);
    mpcl_tensor_destroy(labels);
    mpcl_tensor_destroy(loss);
    mpcl_tensor_destroy(dlogits);
    mpcl_model_destroy(m);
    free(spec);
    mpcl_context_destroy(ctx);
    return 0;
}
