/* precision.c — the precision report: what fp16 and bf16 would do to each
 * tensor of a model, measured in FP32 on the device (mpcl.h, "precision
 * report"; docs/precision.md).
 *
 * A batch runs forward, loss and backward on the model's own kernels. The
 * model's inspection hook (nn/model.h) hands over each layer's output right
 * after its op and each layer's output gradient once it is complete, before
 * the layer's backward op reads it; the weights and the weight gradients
 * come from the flat buffers after the pass. Every value is read back to
 * the host and counted here, in float and double, against the formats'
 * rounding (mpcl_half_from_float / mpcl_bf16_from_float, round to nearest
 * even). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "io/safetensors.h"
#include "nn/model.h"

#define SCALE_LO (-24) /* the trainer's loss-scale limits, as log2 */
#define SCALE_HI 24
#define DYNAMIC_START 65536.0
#define FLUSH_TOLERANCE 1e-3 /* share of non-zero gradient values a scale may flush */

typedef struct {
    mpcl_precision_tensor t;
    int param;      /* weights and weight gradients: the parameter's index */
    size_t offset;  /* in the flat buffers */
    float *values;  /* unscaled, every batch */
    size_t nvalues, cap;
    int median_done;
} entry;

struct mpcl_precision_report {
    mpcl_model *m;
    float scale;
    size_t batches;
    entry *e;
    size_t n, cap;
    float *host; /* scratch for one read */
    size_t host_cap;
    mpcl_status err; /* of the inspection hook */
};

const char *mpcl_tensor_role_name(mpcl_tensor_role r)
{
    switch (r) {
    case MPCL_ROLE_WEIGHT: return "weight";
    case MPCL_ROLE_ACTIVATION: return "activation";
    case MPCL_ROLE_ACTIVATION_GRADIENT: return "activation_gradient";
    case MPCL_ROLE_WEIGHT_GRADIENT: return "weight_gradient";
    }
    return "unknown";
}

static int is_gradient(mpcl_tensor_role r)
{
    return r == MPCL_ROLE_ACTIVATION_GRADIENT || r == MPCL_ROLE_WEIGHT_GRADIENT;
}

/* Counts n values times scale (a power of two: exact in float but where the
 * product leaves float's range) into s. */
static void count_values(mpcl_value_stats *s, const float *x, size_t n, float scale)
{
    s->count += n;
    for (size_t i = 0; i < n; i++) {
        float y = x[i] * scale;
        if (!isfinite(x[i])) {
            s->nonfinite++;
            continue;
        }
        if (x[i] == 0.0f) {
            s->zeros++;
            continue;
        }
        float a = fabsf(y);
        if (isinf(a)) { /* the scale took it out of float's range: fp16 overflows */
            s->f16_overflow++;
            s->bf16_lossy++;
            s->exponents[MPCL_EXP_BINS - 1]++;
            s->max = INFINITY;
            continue;
        }
        if (a == 0.0f) { /* below float's range after scaling down */
            s->f16_zero++;
            s->bf16_lossy++;
            s->exponents[0]++;
            continue;
        }
        if (s->min_nonzero == 0.0 || a < s->min_nonzero)
            s->min_nonzero = a;
        if (a > s->max)
            s->max = a;
        s->exponents[ilogbf(a) - MPCL_EXP_MIN]++;
        float h = mpcl_half_to_float(mpcl_half_from_float(a));
        if (isinf(h))
            s->f16_overflow++;
        else if (h == 0.0f)
            s->f16_zero++;
        else if (h < 0x1p-14f)
            s->f16_subnormal++;
        float b = mpcl_bf16_to_float(mpcl_bf16_from_float(a));
        if (!isfinite(b) || fabs((double)b - (double)a) > 0x1p-8 * (double)a)
            s->bf16_lossy++;
    }
}

/* The entry of (role, layer, param), made on first sight. */
static entry *entry_of(mpcl_precision_report *r, mpcl_tensor_role role, int layer, int param,
                       const char *name, int ndim, const size_t *shape)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->e[i].t.role == role && r->e[i].t.layer == layer && r->e[i].param == param)
            return &r->e[i];
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 32;
        entry *e = realloc(r->e, cap * sizeof *e);
        if (!e)
            return NULL;
        r->e = e;
        r->cap = cap;
    }
    entry *e = &r->e[r->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->t.name, sizeof e->t.name, "%s", name);
    e->t.role = role;
    e->t.layer = layer;
    e->t.ndim = ndim;
    memcpy(e->t.shape, shape, (size_t)ndim * sizeof *shape);
    e->param = param;
    return e;
}

/* Adds n values to e: kept (for the medians and the caller) and counted. */
static mpcl_status entry_add(mpcl_precision_report *r, entry *e, const float *x, size_t n)
{
    mpcl_context *ctx = r->m->ctx;
    if (e->nvalues + n > e->cap) {
        size_t cap = e->cap ? e->cap : 1024;
        while (cap < e->nvalues + n)
            cap *= 2;
        float *v = realloc(e->values, cap * sizeof *v);
        if (!v)
            return mpcl_set_error(ctx, MPCL_ERR_NOMEM,
                                  "mpcl_precision_report: out of host memory for the %zu values of %s",
                                  cap, e->t.name);
        e->values = v;
        e->cap = cap;
    }
    memcpy(e->values + e->nvalues, x, n * sizeof *x);
    e->nvalues += n;
    e->median_done = 0;
    count_values(&e->t.v, x, n, 1.0f);
    if (is_gradient(e->t.role))
        count_values(&e->t.scaled, x, n, r->scale);
    return MPCL_OK;
}

/* t's values into r->host. */
static mpcl_status read_tensor(mpcl_precision_report *r, const mpcl_tensor *t, size_t n)
{
    if (n > r->host_cap) {
        float *h = realloc(r->host, n * sizeof *h);
        if (!h)
            return mpcl_set_error(r->m->ctx, MPCL_ERR_NOMEM,
                                  "mpcl_precision_report: out of host memory for %zu values", n);
        r->host = h;
        r->host_cap = n;
    }
    return mpcl_tensor_download(t, r->host, n);
}

/* The model's hook: a layer's output (gradient 0) or output gradient. */
static mpcl_status inspect(void *user, int layer, int gradient, const mpcl_tensor *t)
{
    mpcl_precision_report *r = user;
    size_t shape[4] = {0};
    int ndim = t->ndim - 1; /* one sample's */
    for (int i = 0; i < ndim; i++)
        shape[i] = t->shape[i + 1];
    char name[64];
    snprintf(name, sizeof name, "%d.out%s", layer, gradient ? ".grad" : "");
    entry *e = entry_of(r, gradient ? MPCL_ROLE_ACTIVATION_GRADIENT : MPCL_ROLE_ACTIVATION, layer, -1,
                        name, ndim, shape);
    if (!e)
        return mpcl_set_error(r->m->ctx, MPCL_ERR_NOMEM, "mpcl_precision_report: out of host memory");
    mpcl_status s = read_tensor(r, t, t->numel);
    return s == MPCL_OK ? entry_add(r, e, r->host, t->numel) : s;
}

/* The weights (master, role WEIGHT) or their gradients from the flat
 * buffer read into r->host. */
static mpcl_status add_params(mpcl_precision_report *r, mpcl_tensor_role role)
{
    mpcl_param_info pi;
    for (size_t i = 0; mpcl_model_param(r->m, i, &pi) == MPCL_OK; i++) {
        if (pi.offset == (size_t)-1)
            continue; /* running statistics: not trained, not stored in half */
        char name[64];
        snprintf(name, sizeof name, "%s%s", pi.name, role == MPCL_ROLE_WEIGHT ? "" : ".grad");
        int layer = atoi(pi.name);
        entry *e = entry_of(r, role, layer, (int)i, name, pi.ndim, pi.shape);
        if (!e)
            return mpcl_set_error(r->m->ctx, MPCL_ERR_NOMEM, "mpcl_precision_report: out of host memory");
        e->offset = pi.offset;
        mpcl_status s = entry_add(r, e, r->host + pi.offset, pi.numel);
        if (s != MPCL_OK)
            return s;
    }
    return MPCL_OK;
}

mpcl_status mpcl_precision_report_create(mpcl_model *m, float loss_scale, mpcl_precision_report **out)
{
    if (!m || !out)
        return MPCL_ERR_ARGUMENT;
    *out = NULL;
    mpcl_context *ctx = m->ctx;
    const char *op = "mpcl_precision_report_create";
    if (m->gpt)
        return mpcl_set_error(ctx, MPCL_ERR_UNSUPPORTED,
                              "%s: a language model (gpt spec) is not supported; the report takes "
                              "sequential and graph models", op);
    if (m->opt.inference)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: the model was created for inference only; the report needs its "
                              "backward pass", op);
    if (mpcl_storage_dtype(ctx) != MPCL_F32)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: the model's context computes in %s; the report measures in fp32 "
                              "(create the context with MPCL_PRECISION_FP32)", op,
                              mpcl_precision_name(mpcl_precision_chosen(ctx, NULL)));
    if (!(loss_scale > 0.0f) || !isfinite(loss_scale))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: loss scale %g is not a number > 0", op,
                              (double)loss_scale);
    mpcl_precision_report *r = calloc(1, sizeof *r);
    if (!r)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
    r->m = m;
    r->scale = loss_scale;
    *out = r;
    return MPCL_OK;
}

/* Forward, loss and backward of one batch with the hook on. */
static mpcl_status run_batch(mpcl_precision_report *r, const uint8_t *images, const uint8_t *labels,
                             size_t b)
{
    mpcl_model *m = r->m;
    mpcl_context *ctx = m->ctx;
    const mpcl_model_spec *sp = &m->spec;
    const mpcl_layer_spec *last = &sp->layers[sp->nlayers - 1];
    size_t classes = last->out_shape[0];
    size_t xs[4] = {b, sp->input[0], sp->input[1], sp->input[2]}, ys[1] = {b}, ds[2] = {b, classes},
           one[1] = {1};
    size_t sample = sp->input[0] * sp->input[1] * sp->input[2];
    mpcl_tensor *x_u8 = NULL, *x = NULL, *y_u8 = NULL, *y = NULL, *dlogits = NULL, *loss = NULL,
                *logits = NULL;
    mpcl_status s = mpcl_tensor_create(ctx, MPCL_U8, 4, xs, MPCL_MEM_ACTIVATIONS, &x_u8);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_F32, 4, xs, MPCL_MEM_ACTIVATIONS, &x);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_U8, 1, ys, MPCL_MEM_ACTIVATIONS, &y_u8);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_I32, 1, ys, MPCL_MEM_ACTIVATIONS, &y);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_F32, 2, ds, MPCL_MEM_ACTIVATIONS, &dlogits);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_F32, 1, one, MPCL_MEM_ACTIVATIONS, &loss);
    if (s == MPCL_OK)
        s = mpcl_tensor_write(x_u8, images, b * sample);
    if (s == MPCL_OK)
        s = mpcl_normalize_u8(ctx, x, x_u8, &m->norm);
    if (s == MPCL_OK)
        s = mpcl_tensor_write(y_u8, labels, b);
    if (s == MPCL_OK)
        s = mpcl_labels_to_i32(ctx, y, y_u8);
    if (s == MPCL_OK)
        s = mpcl_model_zero_grad(m);
    m->inspect = inspect;
    m->inspect_user = r;
    if (s == MPCL_OK)
        s = mpcl_model_forward(m, x, 1, r->batches + 1, &logits);
    if (s == MPCL_OK)
        s = mpcl_softmax_cross_entropy(ctx, loss, dlogits, logits, y, 0.0f, 1.0f);
    if (s == MPCL_OK)
        s = mpcl_model_backward(m, dlogits);
    m->inspect = NULL;
    m->inspect_user = NULL;
    mpcl_tensor_destroy(x_u8);
    mpcl_tensor_destroy(x);
    mpcl_tensor_destroy(y_u8);
    mpcl_tensor_destroy(y);
    mpcl_tensor_destroy(dlogits);
    mpcl_tensor_destroy(loss);
    return s;
}

/* What a batch may change, to undo it when the batch fails. */
typedef struct {
    mpcl_value_stats v, scaled;
    size_t nvalues;
} saved_entry;

mpcl_status mpcl_precision_report_add_batch(mpcl_precision_report *r, const uint8_t *images,
                                            const uint8_t *labels, size_t b)
{
    if (!r || !images || !labels)
        return MPCL_ERR_ARGUMENT;
    mpcl_model *m = r->m;
    mpcl_context *ctx = m->ctx;
    const char *op = "mpcl_precision_report_add_batch";
    if (b < 1 || b > m->max_batch)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: batch %zu has %zu samples; the model takes 1 to %zu",
                              op, r->batches + 1, b, m->max_batch);
    size_t classes = m->spec.layers[m->spec.nlayers - 1].out_shape[0];
    for (size_t i = 0; i < b; i++)
        if (labels[i] >= classes)
            return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: batch %zu: label %u of sample %zu is outside 0..%zu",
                                  op, r->batches + 1, labels[i], i, classes - 1);
    size_t n0 = r->n;
    saved_entry *saved = malloc((n0 ? n0 : 1) * sizeof *saved);
    if (!saved)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
    for (size_t i = 0; i < n0; i++)
        saved[i] = (saved_entry){r->e[i].t.v, r->e[i].t.scaled, r->e[i].nvalues};
    /* The weights first, as they are before the pass (it changes none, but
     * batch-norm statistics). */
    size_t P = mpcl_tensor_numel(m->master);
    mpcl_status s = read_tensor(r, m->master, P);
    if (s == MPCL_OK)
        s = add_params(r, MPCL_ROLE_WEIGHT);
    if (s == MPCL_OK)
        s = run_batch(r, images, labels, b);
    if (s == MPCL_OK)
        s = read_tensor(r, m->grad, P);
    if (s == MPCL_OK)
        s = add_params(r, MPCL_ROLE_WEIGHT_GRADIENT);
    if (s != MPCL_OK) { /* the report as it was before this batch */
        for (size_t i = n0; i < r->n; i++)
            free(r->e[i].values);
        r->n = n0;
        for (size_t i = 0; i < n0; i++) {
            r->e[i].t.v = saved[i].v;
            r->e[i].t.scaled = saved[i].scaled;
            r->e[i].nvalues = saved[i].nvalues;
            r->e[i].median_done = 0;
        }
        free(saved);
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mpcl_last_error(ctx));
        return mpcl_set_error(ctx, s, "precision report, batch %zu: %s", r->batches + 1, msg);
    }
    free(saved);
    r->batches++;
    return MPCL_OK;
}

size_t mpcl_precision_report_count(const mpcl_precision_report *r) { return r ? r->n : 0; }
size_t mpcl_precision_report_batches(const mpcl_precision_report *r) { return r ? r->batches : 0; }
float mpcl_precision_report_loss_scale(const mpcl_precision_report *r) { return r ? r->scale : 0.0f; }

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The lower median of |x| over the non-zero finite values. */
static double median_of(const entry *e)
{
    size_t n = 0;
    float *a = malloc((e->nvalues ? e->nvalues : 1) * sizeof *a);
    if (!a)
        return NAN;
    for (size_t i = 0; i < e->nvalues; i++)
        if (isfinite(e->values[i]) && e->values[i] != 0.0f)
            a[n++] = fabsf(e->values[i]);
    double med = 0.0;
    if (n) {
        qsort(a, n, sizeof *a, cmp_float);
        med = a[(n - 1) / 2];
    }
    free(a);
    return med;
}

const mpcl_precision_tensor *mpcl_precision_report_tensor(mpcl_precision_report *r, size_t i)
{
    if (!r || i >= r->n)
        return NULL;
    entry *e = &r->e[i];
    if (!e->median_done) {
        e->t.v.median = median_of(e);
        e->t.scaled.median = is_gradient(e->t.role) ? e->t.v.median * r->scale : 0.0;
        e->median_done = 1;
    }
    return &e->t;
}

const float *mpcl_precision_report_values(const mpcl_precision_report *r, size_t i, size_t *n)
{
    if (n)
        *n = (r && i < r->n) ? r->e[i].nvalues : 0;
    return (r && i < r->n) ? r->e[i].values : NULL;
}

/* Non-zero gradient values that fp16 flushes to zero at scale 2^k: those
 * whose exponent is -26 or less after the scaling (|x| < 2^-25). */
static uint64_t flushed_at(const uint64_t *hist, int k)
{
    uint64_t n = 0;
    for (int e = MPCL_EXP_MIN; e <= MPCL_EXP_MAX && e + k <= -26; e++)
        n += hist[e - MPCL_EXP_MIN];
    return n;
}

void mpcl_precision_report_advice(mpcl_precision_report *r, mpcl_precision_advice *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    out->dynamic_start = DYNAMIC_START;
    if (!r)
        return;
    uint64_t hist[MPCL_EXP_BINS] = {0}, nonzero = 0;
    double gmax = 0.0;
    for (size_t i = 0; i < r->n; i++) {
        const mpcl_precision_tensor *t = &r->e[i].t;
        if (is_gradient(t->role)) {
            for (int b = 0; b < MPCL_EXP_BINS; b++) {
                hist[b] += t->v.exponents[b];
                nonzero += t->v.exponents[b];
            }
            if (t->v.max > gmax)
                gmax = t->v.max;
        } else if (t->v.f16_overflow || t->v.nonfinite) {
            out->overflow_tensors++;
        }
    }
    /* the largest scale without overflow: gmax 2^k below 65520, where fp16
     * rounds to inf */
    int kmax = SCALE_LO - 1;
    for (int k = SCALE_HI; k >= SCALE_LO; k--)
        if (ldexp(gmax, k) < 65520.0) {
            kmax = k;
            break;
        }
    int kmin = SCALE_HI + 1;
    for (int k = SCALE_LO; k <= SCALE_HI; k++)
        if ((double)flushed_at(hist, k) <= FLUSH_TOLERANCE * (double)nonzero) {
            kmin = k;
            break;
        }
    out->scale_min = ldexp(1.0, kmin);
    out->scale_max = kmax < SCALE_LO ? 0.0 : ldexp(1.0, kmax);
    out->start_inside = out->scale_min <= DYNAMIC_START && DYNAMIC_START <= out->scale_max;
    out->flushed_at_start = nonzero ? (double)flushed_at(hist, 16) / (double)nonzero : 0.0;
    out->recommend = (out->overflow_tensors || kmin > kmax) ? MPCL_PRECISION_BF16
                                                             : MPCL_PRECISION_FP16_STORAGE;
}

mpcl_status mpcl_precision_report_save_values(const mpcl_precision_report *r, const char *path)
{
    if (!r || !path)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = r->m->ctx;
    st_entry *es = calloc(r->n ? r->n : 1, sizeof *es);
    uint64_t *shapes = calloc(r->n ? r->n : 1, sizeof *shapes);
    if (!es || !shapes) {
        free(es);
        free(shapes);
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", path);
    }
    for (size_t i = 0; i < r->n; i++) {
        shapes[i] = r->e[i].nvalues;
        es[i].name = r->e[i].t.name;
        es[i].dtype = ST_F32;
        es[i].ndim = 1;
        es[i].shape = &shapes[i];
        es[i].data = r->e[i].values;
    }
    char scale[32], batches[32];
    snprintf(scale, sizeof scale, "%.9g", (double)r->scale);
    snprintf(batches, sizeof batches, "%zu", r->batches);
    const char *meta[] = {"format", "mpcl precision report values", "loss_scale", scale,
                          "batches", batches};
    char err[1024];
    mpcl_status s = st_write(path, es, r->n, meta, 3, err, sizeof err);
    free(es);
    free(shapes);
    if (s != MPCL_OK)
        return mpcl_set_error(ctx, s, "%s", err);
    return MPCL_OK;
}

void mpcl_precision_report_destroy(mpcl_precision_report *r)
{
    if (!r)
        return;
    if (r->m) {
        r->m->inspect = NULL;
        r->m->inspect_user = NULL;
    }
    for (size_t i = 0; i < r->n; i++)
        free(r->e[i].values);
    free(r->e);
    free(r->host);
    free(r);
}
