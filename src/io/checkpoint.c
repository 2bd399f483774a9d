/* io/checkpoint.c — models and trainers to and from safetensors files.
 *
 * What is stored (names as in PyTorch's state_dict):
 *   "<layer>.weight", "<layer>.bias"        F32 master weights
 *   "<layer>.running_mean", ".running_var"  F32 batch-norm statistics
 *   "optimizer.<param>.<state>"             F32 optimizer state (trainer
 *                                           checkpoints): exp_avg and
 *                                           exp_avg_sq, or momentum_buffer
 *   "__metadata__"                          strings: spec, precision,
 *                                           hyper-parameters, scaler, counters
 * Floats in the metadata are written with 9 significant digits, which reads
 * back to the same float, so a resumed run continues bit for bit.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "io/safetensors.h"

#define FORMAT_NAME "mpcl"
#define FORMAT_VERSION "1"
#define MAX_META 64
#define META_VALUE 64

struct mpcl_checkpoint {
    mpcl_context *ctx;
    st_file f;
};

/* The keys the library writes; a caller's extra metadata may not use them. */
static const char *const RESERVED[] = {
    "format", "format_version", "mpcl_version", "kind", "model_spec", "precision", "seed",
    "input_mean", "input_std", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "beta1",
    "beta2", "eps", "schedule", "total_steps", "step_size", "gamma", "warmup_steps",
    "loss_scaling", "loss_scale", "growth_factor", "backoff_factor", "growth_interval",
    "min_scale", "max_scale", "clip_norm", "label_smoothing", "step", "optimizer_steps",
    "skipped_steps", "growth_tracker",
};

static int is_reserved(const char *key)
{
    for (size_t i = 0; i < sizeof RESERVED / sizeof RESERVED[0]; i++)
        if (strcmp(key, RESERVED[i]) == 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------- metadata out */

typedef struct {
    const char *kv[2 * MAX_META];
    char values[MAX_META][META_VALUE];
    size_t n;
} meta_out;

static void meta_str(meta_out *mo, const char *key, const char *value)
{
    if (mo->n < MAX_META) {
        mo->kv[2 * mo->n] = key;
        mo->kv[2 * mo->n + 1] = value;
        mo->n++;
    }
}

static void meta_fmt(meta_out *mo, const char *key, const char *fmt, ...) MPCL_PRINTF(3, 4);
static void meta_fmt(meta_out *mo, const char *key, const char *fmt, ...)
{
    if (mo->n >= MAX_META)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mo->values[mo->n], META_VALUE, fmt, ap);
    va_end(ap);
    meta_str(mo, key, mo->values[mo->n]);
}

static void meta_float(meta_out *mo, const char *key, float v) { meta_fmt(mo, key, "%.9g", (double)v); }
static void meta_u64(meta_out *mo, const char *key, uint64_t v) { meta_fmt(mo, key, "%" PRIu64, v); }

/* "0.286" or, per channel, "0.491,0.482,0.447" */
static void meta_norm(meta_out *mo, const char *key, const float *v, size_t n)
{
    char buf[160];
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < sizeof buf; i++)
        used += (size_t)snprintf(buf + used, sizeof buf - used, "%s%.9g", i ? "," : "", (double)v[i]);
    meta_fmt(mo, key, "%s", buf); /* copied into mo */
}

static void meta_trainer(meta_out *mo, const mpcl_trainer *t)
{
    const mpcl_train_options *o = mpcl_trainer_options(t);
    mpcl_scaler_state sc;
    mpcl_trainer_scaler(t, &sc);
    const mpcl_optimizer_options *op = &o->optimizer;
    meta_str(mo, "optimizer", mpcl_optimizer_name(op->kind));
    meta_float(mo, "lr", op->lr);
    meta_float(mo, "momentum", op->momentum);
    meta_u64(mo, "nesterov", (uint64_t)(op->nesterov != 0));
    meta_float(mo, "weight_decay", op->weight_decay);
    meta_float(mo, "beta1", op->beta1);
    meta_float(mo, "beta2", op->beta2);
    meta_float(mo, "eps", op->eps);
    meta_str(mo, "schedule", mpcl_schedule_name(o->schedule));
    meta_u64(mo, "total_steps", o->total_steps);
    meta_u64(mo, "step_size", o->step_size);
    meta_float(mo, "gamma", o->gamma);
    meta_u64(mo, "warmup_steps", o->warmup_steps);
    meta_str(mo, "loss_scaling", o->dynamic_scale ? "dynamic" : "static");
    meta_float(mo, "loss_scale", sc.scale);
    meta_float(mo, "growth_factor", o->growth_factor);
    meta_float(mo, "backoff_factor", o->backoff_factor);
    meta_u64(mo, "growth_interval", o->growth_interval);
    meta_float(mo, "min_scale", o->min_scale);
    meta_float(mo, "max_scale", o->max_scale);
    meta_float(mo, "clip_norm", o->clip_norm);
    meta_float(mo, "label_smoothing", o->label_smoothing);
    meta_u64(mo, "step", sc.steps);
    meta_u64(mo, "optimizer_steps", sc.optimizer_steps);
    meta_u64(mo, "skipped_steps", sc.skipped_steps);
    meta_u64(mo, "growth_tracker", sc.growth_tracker);
}

/* Names of the optimizer state tensors of a trainer: which = 0 (state1) or 1. */
static const char *state_name(const mpcl_trainer *t, int which)
{
    if (mpcl_trainer_options(t)->optimizer.kind == MPCL_OPT_SGD)
        return which == 0 ? "momentum_buffer" : NULL;
    return which == 0 ? "exp_avg" : "exp_avg_sq";
}

/* ------------------------------------------------------------------ save */

static mpcl_status save(mpcl_model *m, mpcl_trainer *t, const char *path, const mpcl_meta *extra,
                        size_t nextra)
{
    mpcl_context *ctx = mpcl_model_context(m);
    const char *op = t ? "mpcl_checkpoint_save" : "mpcl_model_save";
    if (!path || !*path)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: no path", op);
    if (nextra > MAX_META / 2 || (nextra && !extra))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %zu extra metadata entries (at most %d)",
                              op, nextra, MAX_META / 2);
    for (size_t i = 0; i < nextra; i++)
        if (!extra[i].key || !extra[i].value || is_reserved(extra[i].key))
            return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: extra metadata key '%s' is %s", op,
                                  extra[i].key ? extra[i].key : "(null)",
                                  extra[i].key ? "one the library writes itself" : "missing");
    size_t np = 0;
    mpcl_param_info info;
    while (mpcl_model_param(m, np, &info) == MPCL_OK)
        np++;
    size_t P = mpcl_tensor_numel(mpcl_model_master(m));
    int nstate = 0;
    mpcl_tensor *state[2] = {t ? mpcl_trainer_state(t, 0) : NULL, t ? mpcl_trainer_state(t, 1) : NULL};
    nstate = (state[0] != NULL) + (state[1] != NULL);
    size_t cap = np * (size_t)(1 + nstate);
    float *host = malloc((size_t)(1 + nstate) * P * sizeof *host);
    st_entry *e = calloc(cap ? cap : 1, sizeof *e);
    char (*names)[ST_MAX_NAME] = calloc(cap ? cap : 1, sizeof *names);
    uint64_t (*shapes)[4] = calloc(cap ? cap : 1, sizeof *shapes);
    float **bufs = calloc(np ? np : 1, sizeof *bufs);
    char *spec = NULL;
    meta_out *mo = calloc(1, sizeof *mo);
    mpcl_status s = MPCL_OK;
    if (!host || !e || !names || !shapes || !bufs || !mo) {
        s = mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
        goto done;
    }
    s = mpcl_tensor_read(mpcl_model_master(m), host, P * sizeof *host);
    for (int k = 0; k < 2 && s == MPCL_OK; k++)
        if (state[k])
            s = mpcl_tensor_read(state[k], host + (size_t)(1 + (k == 1 && state[0])) * P,
                                 P * sizeof *host);
    size_t n = 0;
    for (size_t i = 0; i < np && s == MPCL_OK; i++, n++) {
        mpcl_model_param(m, i, &info);
        snprintf(names[n], ST_MAX_NAME, "%s", info.name);
        for (int d = 0; d < info.ndim; d++)
            shapes[n][d] = info.shape[d];
        e[n] = (st_entry){names[n], ST_F32, info.ndim, shapes[n], NULL};
        if (info.buffer) {
            bufs[i] = malloc(info.numel * sizeof(float));
            if (!bufs[i]) {
                s = mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
                break;
            }
            s = mpcl_tensor_read(info.buffer, bufs[i], info.numel * sizeof(float));
            e[n].data = bufs[i];
        } else {
            e[n].data = host + info.offset;
        }
    }
    for (int k = 0; k < 2 && s == MPCL_OK; k++) {
        if (!state[k])
            continue;
        const float *base = host + (size_t)(1 + (k == 1 && state[0])) * P;
        for (size_t i = 0; i < np; i++) {
            mpcl_model_param(m, i, &info);
            if (info.buffer)
                continue; /* statistics have no optimizer state */
            snprintf(names[n], ST_MAX_NAME, "optimizer.%s.%s", info.name, state_name(t, k));
            for (int d = 0; d < info.ndim; d++)
                shapes[n][d] = info.shape[d];
            e[n] = (st_entry){names[n], ST_F32, info.ndim, shapes[n], base + info.offset};
            n++;
        }
    }
    if (s != MPCL_OK)
        goto done;

    size_t need = mpcl_model_spec_format(mpcl_model_get_spec(m), NULL, 0) + 1;
    spec = malloc(need);
    if (!spec) {
        s = mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
        goto done;
    }
    mpcl_model_spec_format(mpcl_model_get_spec(m), spec, need);
    meta_str(mo, "format", FORMAT_NAME);
    meta_str(mo, "format_version", FORMAT_VERSION);
    meta_str(mo, "mpcl_version", mpcl_version());
    meta_str(mo, "kind", t ? "trainer" : "model");
    meta_str(mo, "model_spec", spec);
    meta_str(mo, "precision", mpcl_precision_name(mpcl_precision_chosen(ctx, NULL)));
    mpcl_normalization norm;
    mpcl_model_normalization(m, &norm);
    meta_u64(mo, "seed", mpcl_model_seed(m));
    meta_norm(mo, "input_mean", norm.mean, norm.channels);
    meta_norm(mo, "input_std", norm.std, norm.channels);
    if (t)
        meta_trainer(mo, t);
    for (size_t i = 0; i < nextra; i++)
        meta_str(mo, extra[i].key, extra[i].value);
    char err[MPCL_ERR_LEN];
    s = st_write(path, e, n, mo->kv, mo->n, err, sizeof err);
    if (s != MPCL_OK)
        mpcl_set_error(ctx, s, "%s", err);
done:
    if (bufs)
        for (size_t i = 0; i < np; i++)
            free(bufs[i]);
    free(bufs);
    free(host);
    free(e);
    free(names);
    free(shapes);
    free(spec);
    free(mo);
    return s;
}

mpcl_status mpcl_checkpoint_save(mpcl_trainer *t, const char *path, const mpcl_meta *extra,
                                 size_t nextra)
{
    return t ? save(mpcl_trainer_model(t), t, path, extra, nextra) : MPCL_ERR_ARGUMENT;
}

mpcl_status mpcl_model_save(mpcl_model *m, const char *path, const mpcl_meta *extra, size_t nextra)
{
    return m ? save(m, NULL, path, extra, nextra) : MPCL_ERR_ARGUMENT;
}

/* ------------------------------------------------------------------ open */

mpcl_status mpcl_checkpoint_open(mpcl_context *ctx, const char *path, mpcl_checkpoint **out)
{
    if (!ctx || !path || !out)
        return ctx ? mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "mpcl_checkpoint_open: no path")
                   : MPCL_ERR_ARGUMENT;
    *out = NULL;
    mpcl_checkpoint *c = calloc(1, sizeof *c);
    if (!c)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", path);
    char err[MPCL_ERR_LEN];
    mpcl_status s = st_read(path, &c->f, err, sizeof err);
    if (s != MPCL_OK) {
        free(c);
        return mpcl_set_error(ctx, s, "%s", err);
    }
    c->ctx = ctx;
    *out = c;
    return MPCL_OK;
}

void mpcl_checkpoint_close(mpcl_checkpoint *c)
{
    if (!c)
        return;
    st_free(&c->f);
    free(c);
}

const char *mpcl_checkpoint_meta(const mpcl_checkpoint *c, const char *key)
{
    return c && key ? st_meta(&c->f, key) : NULL;
}

mpcl_status mpcl_checkpoint_spec(const mpcl_checkpoint *c, mpcl_model_spec *out)
{
    if (!c || !out)
        return MPCL_ERR_ARGUMENT;
    const char *text = st_meta(&c->f, "model_spec");
    if (!text)
        return mpcl_set_error(c->ctx, MPCL_ERR_FORMAT, "%s: no \"model_spec\" in the metadata, so "
                                                       "the model it belongs to is unknown (give "
                                                       "the model's spec file)", c->f.path);
    char name[600], err[MPCL_ERR_LEN];
    snprintf(name, sizeof name, "%s (model_spec)", c->f.path);
    mpcl_status s = mpcl_model_spec_parse(text, name, out, err, sizeof err);
    return s == MPCL_OK ? s : mpcl_set_error(c->ctx, s, "%s", err);
}

/* ------------------------------------------------------------------ load */

static void shape_text(char *dst, size_t len, int ndim, const uint64_t *shape)
{
    size_t used = (size_t)snprintf(dst, len, "[");
    for (int d = 0; d < ndim && used < len; d++)
        used += (size_t)snprintf(dst + used, len - used, "%s%" PRIu64, d ? ", " : "", shape[d]);
    if (used < len)
        snprintf(dst + used, len - used, "]");
}

/* Checks tensor t of the file against a model parameter; F32, F16 or BF16. */
static mpcl_status check_tensor(const mpcl_checkpoint *c, const st_tensor *t,
                                const mpcl_param_info *info)
{
    uint64_t want[4];
    for (int d = 0; d < info->ndim; d++)
        want[d] = info->shape[d];
    int same = t->ndim == info->ndim;
    for (int d = 0; same && d < info->ndim; d++)
        same = t->shape[d] == want[d];
    if (!same) {
        char a[128], b[128];
        shape_text(a, sizeof a, t->ndim, t->shape);
        shape_text(b, sizeof b, info->ndim, want);
        return mpcl_set_error(c->ctx, MPCL_ERR_SHAPE, "%s: tensor '%s' has shape %s, but this "
                                                      "model's is %s (a checkpoint of another "
                                                      "model?)", c->f.path, t->name, a, b);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return mpcl_set_error(c->ctx, MPCL_ERR_FORMAT, "%s: tensor '%s' is %s; mpcl loads F32, "
                                                       "F16 or BF16 weights", c->f.path, t->name,
                              st_dtype_name(t->dtype));
    return MPCL_OK;
}

/* Little-endian F32, F16 or BF16 data to floats (exact). */
static void to_floats(const st_file *f, const st_tensor *t, float *dst)
{
    const uint8_t *p = st_data(f, t);
    for (uint64_t i = 0; i < t->numel; i++) {
        if (t->dtype == ST_F32) {
            uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                         (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
            memcpy(&dst[i], &u, sizeof u);
        } else if (t->dtype == ST_BF16) {
            dst[i] = mpcl_bf16_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        } else {
            dst[i] = mpcl_half_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        }
    }
}

static int parse_f(const char *v, float *out)
{
    if (!v || !*v)
        return 0;
    char *end = NULL;
    errno = 0;
    float f = strtof(v, &end);
    if (errno || *end || !isfinite(f))
        return 0;
    *out = f;
    return 1;
}

int mpcl_parse_u64(const char *v, uint64_t *out)
{
    if (!v || *v < '0' || *v > '9')
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long u = strtoull(v, &end, 10);
    if (errno || *end)
        return 0;
    *out = u;
    return 1;
}

static mpcl_status bad_meta(const mpcl_checkpoint *c, const char *key, const char *what)
{
    const char *v = st_meta(&c->f, key);
    return mpcl_set_error(c->ctx, MPCL_ERR_FORMAT, "%s: metadata \"%s\" is %s%.40s%s; expected %s",
                          c->f.path, key, v ? "'" : "missing", v ? v : "", v ? "'" : "", what);
}

/* A comma list of 1..MPCL_MAX_NORM_CHANNELS finite numbers; its count. */
static size_t parse_list(const char *v, float *out)
{
    char buf[256];
    if (!v || strlen(v) >= sizeof buf)
        return 0;
    snprintf(buf, sizeof buf, "%s", v);
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (n == MPCL_MAX_NORM_CHANNELS || !parse_f(t, &out[n]))
            return 0;
        n++;
    }
    return n;
}

/* The normalisation from the metadata (mean 0, std 1 when absent): one
 * value for every channel, or one per channel of the model's input. */
static mpcl_status read_norm(const mpcl_checkpoint *c, const mpcl_model *m, mpcl_normalization *n)
{
    mpcl_normalization_init(n);
    const char *mv = st_meta(&c->f, "input_mean"), *sv = st_meta(&c->f, "input_std");
    float mean[MPCL_MAX_NORM_CHANNELS], std[MPCL_MAX_NORM_CHANNELS];
    size_t nm = mv ? parse_list(mv, mean) : 1, ns = sv ? parse_list(sv, std) : 1;
    if (!mv)
        mean[0] = 0.0f;
    if (!sv)
        std[0] = 1.0f;
    int fits = nm == 1 || nm == mpcl_model_get_spec(m)->input[0];
    if (!nm || !fits)
        return bad_meta(c, "input_mean", "one finite number, or one per input channel");
    if (!ns || ns != nm)
        return bad_meta(c, "input_std", "as many numbers as input_mean");
    for (size_t i = 0; i < ns; i++)
        if (!(std[i] > 0))
            return bad_meta(c, "input_std", "numbers > 0");
    n->channels = nm;
    memcpy(n->mean, mean, nm * sizeof *mean);
    memcpy(n->std, std, nm * sizeof *std);
    return MPCL_OK;
}

/* Validates the file against m; when host and bufs are given, fills host (P
 * floats: the master) and bufs[i] (statistics of parameter i). */
static mpcl_status check_model(const mpcl_checkpoint *c, mpcl_model *m, float *host, float **bufs)
{
    const st_file *f = &c->f;
    mpcl_param_info info;
    for (size_t i = 0; mpcl_model_param(m, i, &info) == MPCL_OK; i++) {
        const st_tensor *t = st_find(f, info.name);
        if (!t)
            return mpcl_set_error(c->ctx, MPCL_ERR_FORMAT, "%s: no tensor '%s', which this model "
                                                           "has (a checkpoint of another model?)",
                                  f->path, info.name);
        mpcl_status s = check_tensor(c, t, &info);
        if (s != MPCL_OK)
            return s;
        if (host)
            to_floats(f, t, info.buffer ? bufs[i] : host + info.offset);
    }
    for (size_t k = 0; k < f->count; k++) {
        const char *name = f->tensors[k].name;
        if (strncmp(name, "optimizer.", 10) == 0)
            continue;
        int found = 0;
        for (size_t i = 0; !found && mpcl_model_param(m, i, &info) == MPCL_OK; i++)
            found = strcmp(info.name, name) == 0;
        if (!found)
            return mpcl_set_error(c->ctx, MPCL_ERR_FORMAT, "%s: tensor '%s' is not a parameter of "
                                                           "this model (a checkpoint of another "
                                                           "model?)", f->path, name);
    }
    return MPCL_OK;
}

/* Host copies of the file's weights and statistics for m, checked. */
typedef struct {
    size_t np;
    float *master;  /* P */
    float **bufs;   /* np, non-NULL for statistics */
    mpcl_normalization norm;
} model_data;

static void model_data_free(model_data *d)
{
    if (d->bufs)
        for (size_t i = 0; i < d->np; i++)
            free(d->bufs[i]);
    free(d->bufs);
    free(d->master);
    memset(d, 0, sizeof *d);
}

static mpcl_status model_data_read(const mpcl_checkpoint *c, mpcl_model *m, model_data *d)
{
    memset(d, 0, sizeof *d);
    mpcl_param_info info;
    while (mpcl_model_param(m, d->np, &info) == MPCL_OK)
        d->np++;
    size_t P = mpcl_tensor_numel(mpcl_model_master(m));
    d->master = calloc(P ? P : 1, sizeof *d->master);
    d->bufs = calloc(d->np ? d->np : 1, sizeof *d->bufs);
    int ok = d->master && d->bufs;
    for (size_t i = 0; ok && i < d->np; i++) {
        mpcl_model_param(m, i, &info);
        if (info.buffer)
            ok = (d->bufs[i] = malloc(info.numel * sizeof(float))) != NULL;
    }
    mpcl_status s = ok ? MPCL_OK : mpcl_set_error(c->ctx, MPCL_ERR_NOMEM, "%s: out of host memory", c->f.path);
    if (s == MPCL_OK)
        s = check_model(c, m, d->master, d->bufs);
    if (s == MPCL_OK)
        s = read_norm(c, m, &d->norm);
    if (s != MPCL_OK)
        model_data_free(d);
    return s;
}

static mpcl_status model_data_apply(model_data *d, mpcl_model *m)
{
    mpcl_tensor *master = mpcl_model_master(m), *working = mpcl_model_working(m);
    mpcl_status s = mpcl_tensor_write(master, d->master, mpcl_tensor_numel(master) * sizeof(float));
    mpcl_param_info info;
    for (size_t i = 0; s == MPCL_OK && i < d->np; i++) {
        mpcl_model_param(m, i, &info);
        if (info.buffer)
            s = mpcl_tensor_write(info.buffer, d->bufs[i], info.numel * sizeof(float));
    }
    if (s == MPCL_OK && working != master)
        s = mpcl_refresh_working(mpcl_model_context(m), working, master);
    if (s == MPCL_OK)
        s = mpcl_model_set_normalization(m, &d->norm);
    return s;
}

mpcl_status mpcl_checkpoint_load_model(const mpcl_checkpoint *c, mpcl_model *m)
{
    if (!c || !m)
        return MPCL_ERR_ARGUMENT;
    model_data d;
    mpcl_status s = model_data_read(c, m, &d);
    if (s == MPCL_OK)
        s = model_data_apply(&d, m);
    model_data_free(&d);
    return s;
}

mpcl_status mpcl_checkpoint_load_trainer(const mpcl_checkpoint *c, mpcl_trainer *t)
{
    if (!c || !t)
        return MPCL_ERR_ARGUMENT;
    const st_file *f = &c->f;
    mpcl_model *m = mpcl_trainer_model(t);
    const char *kind = st_meta(f, "kind");
    if (!kind || strcmp(kind, "trainer") != 0)
        return mpcl_set_error(c->ctx, MPCL_ERR_FORMAT, "%s: not a training checkpoint (metadata "
                                                       "kind is '%s'): it has no optimizer or loss "
                                                       "scaler state to resume from", f->path,
                              kind ? kind : "missing");
    const char *opt = st_meta(f, "optimizer");
    const char *mine = mpcl_optimizer_name(mpcl_trainer_options(t)->optimizer.kind);
    if (!opt || strcmp(opt, mine) != 0)
        return mpcl_set_error(c->ctx, MPCL_ERR_ARGUMENT, "%s: written with optimizer '%s', but this "
                                                         "training uses '%s'", f->path,
                              opt ? opt : "(missing)", mine);
    /* the scaler and counters */
    mpcl_scaler_state sc;
    uint64_t tracker = 0, seed = 0;
    if (!parse_f(st_meta(f, "loss_scale"), &sc.scale) || !(sc.scale > 0))
        return bad_meta(c, "loss_scale", "a number > 0");
    if (!mpcl_parse_u64(st_meta(f, "growth_tracker"), &tracker) || tracker > UINT32_MAX)
        return bad_meta(c, "growth_tracker", "an integer");
    sc.growth_tracker = (uint32_t)tracker;
    if (!mpcl_parse_u64(st_meta(f, "step"), &sc.steps))
        return bad_meta(c, "step", "an integer");
    if (!mpcl_parse_u64(st_meta(f, "optimizer_steps"), &sc.optimizer_steps) || sc.optimizer_steps > sc.steps)
        return bad_meta(c, "optimizer_steps", "an integer <= step");
    if (!mpcl_parse_u64(st_meta(f, "skipped_steps"), &sc.skipped_steps) ||
        sc.skipped_steps + sc.optimizer_steps != sc.steps)
        return bad_meta(c, "skipped_steps", "step - optimizer_steps");
    if (!mpcl_parse_u64(st_meta(f, "seed"), &seed))
        return bad_meta(c, "seed", "an integer");

    /* the optimizer state, checked before anything changes */
    size_t P = mpcl_tensor_numel(mpcl_model_master(m));
    mpcl_tensor *state[2] = {mpcl_trainer_state(t, 0), mpcl_trainer_state(t, 1)};
    float *host[2] = {NULL, NULL};
    model_data d;
    mpcl_status s = model_data_read(c, m, &d);
    mpcl_param_info info;
    for (int k = 0; k < 2 && s == MPCL_OK; k++) {
        if (!state[k])
            continue;
        host[k] = calloc(P ? P : 1, sizeof(float));
        if (!host[k]) {
            s = mpcl_set_error(c->ctx, MPCL_ERR_NOMEM, "%s: out of host memory", f->path);
            break;
        }
        for (size_t i = 0; s == MPCL_OK && mpcl_model_param(m, i, &info) == MPCL_OK; i++) {
            if (info.buffer)
                continue;
            char name[ST_MAX_NAME];
            snprintf(name, sizeof name, "optimizer.%s.%s", info.name, state_name(t, k));
            const st_tensor *st = st_find(f, name);
            if (!st) {
                s = mpcl_set_error(c->ctx, MPCL_ERR_FORMAT, "%s: no tensor '%s' (the %s state this "
                                                            "training needs)", f->path, name, mine);
                break;
            }
            s = check_tensor(c, st, &info);
            if (s == MPCL_OK && st->dtype != ST_F32)
                s = mpcl_set_error(c->ctx, MPCL_ERR_FORMAT, "%s: tensor '%s' is %s; optimizer "
                                                            "state is F32", f->path, name,
                                   st_dtype_name(st->dtype));
            if (s == MPCL_OK)
                to_floats(f, st, host[k] + info.offset);
        }
    }
    /* everything checked: apply */
    if (s == MPCL_OK)
        s = model_data_apply(&d, m);
    for (int k = 0; k < 2 && s == MPCL_OK; k++)
        if (state[k])
            s = mpcl_tensor_write(state[k], host[k], P * sizeof(float));
    if (s == MPCL_OK) {
        mpcl_trainer_set_scaler(t, &sc);
        mpcl_model_set_seed(m, seed);
    }
    model_data_free(&d);
    free(host[0]);
    free(host[1]);
    return s;
}

mpcl_status mpcl_model_load(mpcl_context *ctx, const char *path, size_t max_batch, mpcl_model **out)
{
    if (!ctx || !out)
        return MPCL_ERR_ARGUMENT;
    *out = NULL;
    mpcl_checkpoint *c = NULL;
    mpcl_model *m = NULL;
    mpcl_model_spec *spec = calloc(1, sizeof *spec);
    if (!spec)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", path ? path : "");
    mpcl_status s = mpcl_checkpoint_open(ctx, path, &c);
    if (s == MPCL_OK)
        s = mpcl_checkpoint_spec(c, spec);
    uint64_t seed = 0;
    if (s == MPCL_OK && st_meta(&c->f, "seed") && !mpcl_parse_u64(st_meta(&c->f, "seed"), &seed))
        s = bad_meta(c, "seed", "an integer");
    mpcl_model_options o;
    mpcl_model_options_init(&o);
    o.max_batch = max_batch;
    o.seed = seed;
    o.inference = 1; /* outputs released after their last reader */
    if (s == MPCL_OK)
        s = mpcl_model_create_with(ctx, spec, &o, &m);
    if (s == MPCL_OK)
        s = mpcl_checkpoint_load_model(c, m);
    mpcl_checkpoint_close(c);
    free(spec);
    if (s != MPCL_OK) {
        mpcl_model_destroy(m);
        return s;
    }
    *out = m;
    return MPCL_OK;
}
