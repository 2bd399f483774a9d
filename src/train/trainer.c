/* trainer.c — the mixed-precision training step, the dynamic loss scaler
 * and learning-rate schedules. (Inference: nn/infer.c.) */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nn/model.h"
#include "train/trainer.h"

void mpcl_train_options_init(mpcl_train_options *o, mpcl_precision p)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    mpcl_optimizer_options_init(&o->optimizer, MPCL_OPT_ADAM);
    o->schedule = MPCL_SCHEDULE_CONSTANT;
    o->gamma = 0.1f;
    o->step_size = 1000;
    /* bf16 has float's exponent range: like fp32, no loss scaling needed */
    int half = p != MPCL_PRECISION_FP32 && p != MPCL_PRECISION_BF16;
    o->dynamic_scale = half;
    o->loss_scale = half ? 65536.0f : 1.0f;
    o->growth_factor = 2.0f;
    o->backoff_factor = 0.5f;
    o->growth_interval = 2000;
    o->min_scale = 0x1p-24f;
    o->max_scale = 0x1p24f;
}

const char *mpcl_schedule_name(mpcl_schedule s)
{
    switch (s) {
    case MPCL_SCHEDULE_CONSTANT: return "constant";
    case MPCL_SCHEDULE_STEP: return "step";
    case MPCL_SCHEDULE_COSINE: return "cosine";
    }
    return "unknown";
}

float mpcl_schedule_lr(const mpcl_train_options *o, uint64_t step)
{
    double lr = o->optimizer.lr;
    if (o->warmup_steps && step < o->warmup_steps)
        return (float)(lr * (double)(step + 1) / (double)o->warmup_steps);
    uint64_t s = step - (o->warmup_steps ? o->warmup_steps : 0);
    switch (o->schedule) {
    case MPCL_SCHEDULE_STEP:
        return (float)(lr * pow((double)o->gamma, (double)(s / (o->step_size ? o->step_size : 1))));
    case MPCL_SCHEDULE_COSINE: {
        uint64_t total = o->total_steps > o->warmup_steps ? o->total_steps - o->warmup_steps : 1;
        double f = s >= total ? 1.0 : (double)s / (double)total;
        return (float)(lr * 0.5 * (1.0 + cos(M_PI * f)));
    }
    default:
        return (float)lr;
    }
}

void mpcl_trainer_destroy(mpcl_trainer *t)
{
    if (!t)
        return;
    mpcl_tensor *all[] = {t->x_u8, t->y_u8, t->x, t->labels, t->loss, t->flag,
                          t->dlogits, t->state1, t->state2, t->inf_probe, t->targets};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mpcl_tensor_destroy(all[i]);
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 5; k++)
            mpcl_tensor_destroy(t->split[r][k]);
    mpcl_dist_state_free(t->ds);
    if (t->model && t->model->grad_ready_user == t) {
        t->model->grad_ready = NULL;
        t->model->grad_ready_user = NULL;
    }
    free(t);
}

mpcl_status mpcl_trainer_create(mpcl_model *m, const mpcl_train_options *o, mpcl_trainer **out)
{
    const char *op = "mpcl_trainer_create";
    if (!m || !o || !out)
        return MPCL_ERR_ARGUMENT;
    *out = NULL;
    mpcl_context *ctx = m->ctx;
    if (!(o->loss_scale > 0.0f) || !isfinite(o->loss_scale) ||
        !(o->optimizer.lr >= 0.0f) || o->growth_interval == 0 || !(o->growth_factor >= 1.0f) ||
        !(o->backoff_factor > 0.0f && o->backoff_factor <= 1.0f) || !(o->clip_norm >= 0.0f) ||
        !(o->label_smoothing >= 0.0f && o->label_smoothing < 1.0f))
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: options out of range (loss scale %g, growth %g every %u, backoff %g, "
                              "lr %g, clip %g, label smoothing %g)",
                              op, (double)o->loss_scale, (double)o->growth_factor, o->growth_interval,
                              (double)o->backoff_factor, (double)o->optimizer.lr, (double)o->clip_norm,
                              (double)o->label_smoothing);
    mpcl_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
    t->ctx = ctx;
    t->model = m;
    t->opt = *o;
    t->scaler.scale = o->loss_scale;
    t->max_batch = m->max_batch;
    const mpcl_model_spec *sp = &m->spec;
    int lm = sp->kind == MPCL_MODEL_GPT;
    /* a language model: a row per position, the vocabulary as classes */
    size_t rows = lm ? t->max_batch * sp->gpt.context : t->max_batch;
    t->sample_bytes = sp->input[0] * sp->input[1] * sp->input[2];
    t->classes = lm ? sp->gpt.vocab : sp->layers[sp->nlayers - 1].out_shape[0];
    size_t xs[4] = {t->max_batch, sp->input[0], sp->input[1], sp->input[2]};
    size_t ys[1] = {rows}, one[1] = {1}, ds[2] = {rows, t->classes};
    size_t p[1] = {m->padded};
    mpcl_dtype sd = mpcl_storage_dtype(ctx);
    mpcl_status s = MPCL_OK;
    if (!lm) {
        s = mpcl_tensor_create(ctx, MPCL_U8, 4, xs, MPCL_MEM_ACTIVATIONS, &t->x_u8);
        if (s == MPCL_OK)
            s = mpcl_tensor_create(ctx, MPCL_U8, 1, ys, MPCL_MEM_ACTIVATIONS, &t->y_u8);
        if (s == MPCL_OK)
            s = mpcl_tensor_create(ctx, sd, 4, xs, MPCL_MEM_ACTIVATIONS, &t->x);
    }
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_I32, 1, ys, MPCL_MEM_ACTIVATIONS, &t->labels);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_F32, 1, one, MPCL_MEM_SCRATCH, &t->loss);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_I32, 1, one, MPCL_MEM_SCRATCH, &t->flag);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, sd, 2, ds, MPCL_MEM_GRADIENTS, &t->dlogits);
    int need1 = o->optimizer.kind != MPCL_OPT_SGD || o->optimizer.momentum != 0.0f;
    int need2 = o->optimizer.kind != MPCL_OPT_SGD;
    if (s == MPCL_OK && need1)
        s = mpcl_tensor_create(ctx, MPCL_F32, 1, p, MPCL_MEM_OPTIMIZER, &t->state1);
    if (s == MPCL_OK && need1)
        s = mpcl_tensor_fill(t->state1, 0.0f);
    if (s == MPCL_OK && need2)
        s = mpcl_tensor_create(ctx, MPCL_F32, 1, p, MPCL_MEM_OPTIMIZER, &t->state2);
    if (s == MPCL_OK && need2)
        s = mpcl_tensor_fill(t->state2, 0.0f);
    if (s == MPCL_OK && o->inject_inf_step)
        s = mpcl_tensor_view(m->grad, 0, 1, one, &t->inf_probe);
    if (s == MPCL_OK && m->decay_numel < m->padded) {
        mpcl_tensor *whole[5] = {m->master, m->working == m->master ? NULL : m->working, m->grad,
                                 t->state1, t->state2};
        size_t lo[2] = {0, m->decay_numel}, n[2] = {m->decay_numel, m->padded - m->decay_numel};
        for (int r = 0; r < 2 && s == MPCL_OK; r++)
            for (int k = 0; k < 5 && s == MPCL_OK; k++)
                if (whole[k] && n[r])
                    s = mpcl_tensor_view(whole[k], lo[r], 1, &n[r], &t->split[r][k]);
    }
    if (s != MPCL_OK) {
        mpcl_trainer_destroy(t);
        return s;
    }
    *out = t;
    return MPCL_OK;
}

void mpcl_trainer_scaler(const mpcl_trainer *t, mpcl_scaler_state *out)
{
    if (t && out)
        *out = t->scaler;
}

void mpcl_trainer_set_scaler(mpcl_trainer *t, const mpcl_scaler_state *s)
{
    if (t && s)
        t->scaler = *s;
}

mpcl_tensor *mpcl_trainer_state(mpcl_trainer *t, int which)
{
    if (!t)
        return NULL;
    return which == 0 ? t->state1 : which == 1 ? t->state2 : NULL;
}

/* Views of the batch buffers for b samples (b < max_batch on a last partial
 * batch); the caller destroys them. */
typedef struct {
    mpcl_tensor *x_u8, *y_u8, *x, *labels, *dlogits;
} batch_views;

static void views_free(batch_views *v)
{
    mpcl_tensor_destroy(v->x_u8);
    mpcl_tensor_destroy(v->y_u8);
    mpcl_tensor_destroy(v->x);
    mpcl_tensor_destroy(v->labels);
    mpcl_tensor_destroy(v->dlogits);
    memset(v, 0, sizeof *v);
}

static mpcl_status views_make(mpcl_trainer *t, size_t b, batch_views *v)
{
    const mpcl_model_spec *sp = &t->model->spec;
    size_t xs[4] = {b, sp->input[0], sp->input[1], sp->input[2]}, ys[1] = {b}, ds[2] = {b, t->classes};
    memset(v, 0, sizeof *v);
    mpcl_status s = mpcl_tensor_view(t->x_u8, 0, 4, xs, &v->x_u8);
    if (s == MPCL_OK)
        s = mpcl_tensor_view(t->y_u8, 0, 1, ys, &v->y_u8);
    if (s == MPCL_OK)
        s = mpcl_tensor_view(t->x, 0, 4, xs, &v->x);
    if (s == MPCL_OK)
        s = mpcl_tensor_view(t->labels, 0, 1, ys, &v->labels);
    if (s == MPCL_OK)
        s = mpcl_tensor_view(t->dlogits, 0, 2, ds, &v->dlogits);
    if (s != MPCL_OK)
        views_free(v);
    return s;
}

/* Uploads b samples as bytes and normalises them on the device with the
 * model's normalisation. */
static mpcl_status upload_batch(mpcl_context *ctx, batch_views *v, const uint8_t *images,
                                const uint8_t *labels, size_t b, size_t sample_bytes,
                                const mpcl_normalization *n)
{
    mpcl_status s = mpcl_tensor_write(v->x_u8, images, b * sample_bytes);
    if (s == MPCL_OK)
        s = mpcl_normalize_u8(ctx, v->x, v->x_u8, n);
    if (s == MPCL_OK && labels) {
        s = mpcl_tensor_write(v->y_u8, labels, b);
        if (s == MPCL_OK)
            s = mpcl_labels_to_i32(ctx, v->labels, v->y_u8);
    }
    return s;
}

static void scaler_update(mpcl_trainer *t, int finite)
{
    mpcl_scaler_state *sc = &t->scaler;
    sc->steps++;
    if (!finite) {
        sc->skipped_steps++;
        sc->growth_tracker = 0;
        if (t->opt.dynamic_scale)
            sc->scale = fmaxf(sc->scale * t->opt.backoff_factor, t->opt.min_scale);
        return;
    }
    sc->optimizer_steps++;
    if (!t->opt.dynamic_scale)
        return;
    if (++sc->growth_tracker >= t->opt.growth_interval) {
        sc->growth_tracker = 0;
        sc->scale = fminf(sc->scale * t->opt.growth_factor, t->opt.max_scale);
    }
}

/* The step after the backward pass: the unscale and overflow check, the
 * one read of the step (loss and flag), then the optimizer (with clipping)
 * or a skip, and the scaler's update. */
static mpcl_status optimizer_step(mpcl_trainer *t, float lr, float grad_mul)
{
    mpcl_model *m = t->model;
    const mpcl_optimizer_options *oo = &t->opt.optimizer;
    uint64_t n = t->scaler.optimizer_steps + 1;
    if (!t->split[0][0] || oo->weight_decay == 0.0f)
        return mpcl_optimizer_step(t->ctx, oo, lr, n, m->master, m->working == m->master ? NULL : m->working,
                                   m->grad, t->state1, t->state2, grad_mul);
    mpcl_optimizer_options spared = *oo;
    spared.weight_decay = 0.0f;
    mpcl_tensor *const *a = t->split[0], *const *b = t->split[1];
    mpcl_status s = mpcl_optimizer_step(t->ctx, oo, lr, n, a[0], a[1], a[2], a[3], a[4], grad_mul);
    if (s == MPCL_OK && b[0])
        s = mpcl_optimizer_step(t->ctx, &spared, lr, n, b[0], b[1], b[2], b[3], b[4], grad_mul);
    return s;
}

/* After the backward pass (or its failure: s): the gradient exchange of a
 * data-parallel trainer, which leaves the sum over the ranks in the
 * gradient buffer and the global batch's loss in *loss; every rank gets
 * the same status. One process: the loss is read with the flag. */
static mpcl_status after_backward(mpcl_trainer *t, mpcl_status s, uint64_t step, size_t b, float *loss)
{
    if (s == MPCL_OK && step + 1 == t->opt.inject_error_step)
        s = mpcl_set_error(t->ctx, MPCL_ERR_OPENCL,
                           "step %" PRIu64 ": an injected device failure (inject_error_step, a test hook)", step + 1);
    if (s == MPCL_OK && t->inf_probe && step + 1 == t->opt.inject_inf_step)
        s = mpcl_tensor_fill(t->inf_probe, INFINITY);
    *loss = NAN;
    if (!t->dist)
        return s;
    return mpcl_dist_step_reduce(t, s, b, loss);
}

static mpcl_status finish_step(mpcl_trainer *t, float scale, float dist_loss, mpcl_step_stats *stats)
{
    mpcl_context *ctx = t->ctx;
    mpcl_model *m = t->model;
    int32_t finite = 0;
    float loss = dist_loss;
    mpcl_status s = MPCL_OK;
    /* The gradients stay at the loss scale: the optimizer reads them in
     * float and multiplies by 1 / scale there. Unscaling them in place
     * would round each to the storage dtype again at its unscaled size,
     * where half flushes values below 6e-8 to 0 and keeps few bits of those
     * near it (as PyTorch's GradScaler unscales into FP32 gradients). */
    const mpcl_tensor *grads[1] = {m->grad};
    if (s == MPCL_OK)
        s = mpcl_all_finite(ctx, t->flag, grads, 1);
    /* the one read of the step: loss and overflow flag */
    if (s == MPCL_OK && !t->dist)
        s = mpcl_tensor_read(t->loss, &loss, sizeof loss);
    if (s == MPCL_OK)
        s = mpcl_tensor_read(t->flag, &finite, sizeof finite);
    double norm = 0;
    float lr = 0.0f;
    if (s == MPCL_OK && finite) {
        float grad_mul = 1.0f / scale; /* a power of two: exact */
        if (t->opt.clip_norm > 0.0f) {
            s = mpcl_grad_norm(ctx, m->grad, &norm);
            norm /= (double)scale; /* the unscaled gradients' norm */
            if (s == MPCL_OK && norm > t->opt.clip_norm)
                grad_mul = (float)((double)grad_mul * (t->opt.clip_norm / (norm + 1e-6)));
        }
        lr = mpcl_schedule_lr(&t->opt, t->scaler.optimizer_steps);
        if (s == MPCL_OK)
            s = optimizer_step(t, lr, grad_mul);
    }
    if (s != MPCL_OK)
        return s;
    scaler_update(t, finite != 0);
    if (t->dist && (s = mpcl_dist_step_check(t)) != MPCL_OK)
        return s;
    if (stats) {
        stats->loss = loss;
        stats->lr = lr;
        stats->scale = scale;
        stats->skipped = !finite;
        stats->grad_norm = norm;
    }
    return MPCL_OK;
}

/* A data-parallel step's start: the global batch B over the ranks, and
 * this shard's weight b / B in the loss gradient, so that the gradients'
 * sum over the ranks is the global batch's mean (1 for one process). */
static mpcl_status dist_begin(mpcl_trainer *t, size_t b, float *weight)
{
    *weight = 1.0f;
    if (!t->dist)
        return MPCL_OK;
    size_t global = 0;
    mpcl_status s = mpcl_dist_step_begin(t, b, &global);
    if (s == MPCL_OK && global == 0)
        s = mpcl_set_error(t->ctx, MPCL_ERR_ARGUMENT, "mpcl_trainer_step: every rank's shard is empty");
    if (s == MPCL_OK)
        *weight = (float)((double)b / (double)global);
    return s;
}

mpcl_status mpcl_trainer_step_failed(mpcl_trainer *t, mpcl_status why)
{
    if (!t->dist)
        return why;
    float weight, loss;
    mpcl_status s = dist_begin(t, 0, &weight);
    if (s == MPCL_OK || s == MPCL_ERR_ARGUMENT) /* (every shard empty: the failure is the news) */
        s = after_backward(t, why, t->scaler.steps, 0, &loss);
    return s;
}

mpcl_status mpcl_trainer_step(mpcl_trainer *t, const uint8_t *images, const uint8_t *labels, size_t b,
                              mpcl_step_stats *stats)
{
    const char *op = "mpcl_trainer_step";
    if (!t || ((!images || !labels) && !(t->dist && b == 0)))
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = t->ctx;
    if (t->model->gpt)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: a language model trains on tokens: use mpcl_trainer_step_lm", op);
    /* A data-parallel rank meets the others even with bad input: its error
     * then reaches every rank (after_backward) instead of leaving them
     * waiting. */
    mpcl_status bad = MPCL_OK;
    if ((b < 1 && !t->dist) || b > t->max_batch)
        bad = mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: batch of %zu samples; the model takes %d to %zu", op, b,
                             t->dist ? 0 : 1, t->max_batch);
    for (size_t i = 0; bad == MPCL_OK && i < b; i++)
        if (labels[i] >= t->classes)
            bad = mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: label %u of sample %zu is outside 0..%zu", op,
                                 labels[i], i, t->classes - 1);
    if (bad != MPCL_OK && !t->dist)
        return bad;
    mpcl_model *m = t->model;
    float scale = t->scaler.scale;
    uint64_t step = t->scaler.steps; /* 0-based */
    float weight = 1.0f, loss = NAN;
    mpcl_status s = dist_begin(t, bad == MPCL_OK ? b : 0, &weight);
    if (s != MPCL_OK)
        return s;
    batch_views v;
    memset(&v, 0, sizeof v);
    mpcl_tensor *logits = NULL;
    if (bad != MPCL_OK)
        s = bad;
    else if (b == 0) /* an empty shard: no gradient of its own */
        s = mpcl_model_zero_grad(m);
    else if ((s = views_make(t, b, &v)) == MPCL_OK) {
        s = upload_batch(ctx, &v, images, labels, b, t->sample_bytes, &m->norm);
        if (s == MPCL_OK)
            s = mpcl_model_zero_grad(m);
        if (s == MPCL_OK)
            s = mpcl_model_forward(m, v.x, 1, step + 1, &logits);
        if (s == MPCL_OK)
            s = mpcl_softmax_cross_entropy(ctx, t->loss, v.dlogits, logits, v.labels, t->opt.label_smoothing,
                                           scale * weight);
        if (s == MPCL_OK)
            s = mpcl_model_backward(m, v.dlogits);
    }
    s = after_backward(t, s, step, b, &loss);
    if (s == MPCL_OK)
        s = finish_step(t, scale, loss, stats);
    views_free(&v);
    return s;
}

mpcl_status mpcl_trainer_step_lm(mpcl_trainer *t, const int32_t *tokens, const int32_t *targets,
                                 size_t B, size_t T, mpcl_step_stats *stats)
{
    const char *op = "mpcl_trainer_step_lm";
    if (!t || ((!tokens || !targets) && !(t->dist && B == 0)))
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = t->ctx;
    mpcl_model *m = t->model;
    if (!m->gpt)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: the model is not a language model (a 'gpt' spec): use "
                              "mpcl_trainer_step",
                              op);
    size_t rows = B * T;
    mpcl_status bad = MPCL_OK; /* data parallel: reported through the exchange (see mpcl_trainer_step) */
    if ((B < 1 && !t->dist) || B > t->max_batch || T < 1 || T > m->spec.gpt.context)
        bad = mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                             "%s: %zu sequences of %zu tokens; the model takes %d to %zu sequences "
                             "of 1 to %zu",
                             op, B, T, t->dist ? 0 : 1, t->max_batch, m->spec.gpt.context);
    for (size_t i = 0; bad == MPCL_OK && i < rows; i++)
        if (targets[i] < 0 || (size_t)targets[i] >= t->classes)
            bad = mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                                 "%s: target %ld of sequence %zu (position %zu) is outside the "
                                 "vocabulary 0..%zu",
                                 op, (long)targets[i], i / T, i % T, t->classes - 1);
    if (bad != MPCL_OK && !t->dist)
        return bad;
    size_t ys[1] = {rows}, ds[2] = {rows, t->classes};
    mpcl_tensor *labels = NULL, *dlogits = NULL, *logits = NULL;
    float scale = t->scaler.scale, weight = 1.0f, loss = NAN;
    uint64_t step = t->scaler.steps;
    mpcl_status s = dist_begin(t, bad == MPCL_OK ? B : 0, &weight);
    if (s != MPCL_OK)
        return s;
    if (bad != MPCL_OK)
        s = bad;
    else if (B == 0)
        s = mpcl_model_zero_grad(m);
    else {
        s = mpcl_tensor_view(t->labels, 0, 1, ys, &labels);
        if (s == MPCL_OK)
            s = mpcl_tensor_view(t->dlogits, 0, 2, ds, &dlogits);
        if (s == MPCL_OK)
            s = mpcl_tensor_write(labels, targets, rows * sizeof *targets);
        if (s == MPCL_OK)
            s = mpcl_model_zero_grad(m);
        if (s == MPCL_OK)
            s = mpcl_lm_forward(m, tokens, B, T, 1, &logits);
        if (s == MPCL_OK)
            s = mpcl_softmax_cross_entropy(ctx, t->loss, dlogits, logits, labels, t->opt.label_smoothing,
                                           scale * weight);
        if (s == MPCL_OK)
            s = mpcl_lm_backward(m, dlogits);
    }
    s = after_backward(t, s, step, B, &loss);
    if (s == MPCL_OK)
        s = finish_step(t, scale, loss, stats);
    mpcl_tensor_destroy(labels);
    mpcl_tensor_destroy(dlogits);
    return s;
}

mpcl_model *mpcl_trainer_model(mpcl_trainer *t) { return t ? t->model : NULL; }

const mpcl_train_options *mpcl_trainer_options(const mpcl_trainer *t) { return t ? &t->opt : NULL; }
