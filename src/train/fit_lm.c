/* fit_lm.c — the language-model training loop (mpcl_fit_lm) and its
 * evaluation (mpcl_lm_evaluate): steps over random windows of the training
 * text, validation on consecutive windows of the held-out tail every
 * eval_every steps, checkpoint cadence, stop requests and resume. A step's
 * windows are a hash of (seed, step), so a run resumed from a checkpoint
 * takes the same steps on the same windows as one that never stopped.
 * `mpcl train --task lm` is a client of it. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nn/model.h"
#include "train/trainer.h"

void mpcl_fit_lm_options_init(mpcl_fit_lm_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->steps = 2000;
    o->seed = 1;
    o->eval_every = 200;
    o->eval_windows = 64;
}

static mpcl_status lm_loss_sum(mpcl_model *m, const mpcl_text *text, mpcl_text_split split, size_t T,
                               size_t batch, size_t first, size_t n, double *out);

mpcl_status mpcl_lm_evaluate(mpcl_model *m, const mpcl_text *text, mpcl_text_split split, size_t T,
                             size_t batch, size_t max_windows, double *loss)
{
    const char *op = "mpcl_lm_evaluate";
    if (!m || !text || !loss)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = m->ctx;
    if (!m->gpt)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: the model is not a language model", op);
    if (T == 0)
        T = m->spec.gpt.context;
    if (batch == 0 || batch > m->max_batch)
        batch = m->max_batch;
    if (T > m->spec.gpt.context)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: windows of %zu positions; the context is %zu",
                              op, T, m->spec.gpt.context);
    size_t n = mpcl_text_windows(text, split, T);
    if (max_windows && n > max_windows)
        n = max_windows;
    if (n == 0)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: the %s text of %s holds no window of %zu positions", op,
                              split == MPCL_TEXT_VALID ? "validation" : "training", text->source, T);
    double sum = 0;
    mpcl_status s = lm_loss_sum(m, text, split, T, batch, 0, n, &sum);
    if (s == MPCL_OK)
        *loss = sum / (double)n;
    return s;
}

/* The summed loss of windows first .. first + n - 1 (each window's mean
 * over its positions). */
static mpcl_status lm_loss_sum(mpcl_model *m, const mpcl_text *text, mpcl_text_split split, size_t T,
                               size_t batch, size_t first, size_t n, double *out)
{
    const char *op = "mpcl_lm_evaluate";
    mpcl_context *ctx = m->ctx;
    size_t rows = batch * T, one = 1;
    *out = 0;
    int32_t *tok = malloc(rows * sizeof *tok), *tgt = malloc(rows * sizeof *tgt);
    mpcl_tensor *labels = NULL, *lt = NULL;
    mpcl_status s = (tok && tgt) ? MPCL_OK : mpcl_set_error(ctx, MPCL_ERR_NOMEM, "%s: out of host memory", op);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_I32, 1, &rows, MPCL_MEM_SCRATCH, &labels);
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, MPCL_F32, 1, &one, MPCL_MEM_SCRATCH, &lt);
    double sum = 0;
    for (size_t w = first; w < first + n && s == MPCL_OK; w += batch) {
        size_t b = first + n - w < batch ? first + n - w : batch, r = b * T;
        mpcl_tensor *lab = NULL, *logits = NULL;
        float l = NAN;
        s = mpcl_text_window_batch(text, split, w, b, T, tok, tgt);
        if (s != MPCL_OK)
            s = mpcl_set_error(ctx, s, "%s: windows %zu..%zu of %s", op, w, w + b - 1, text->source);
        if (s == MPCL_OK)
            s = mpcl_tensor_view(labels, 0, 1, &r, &lab);
        if (s == MPCL_OK)
            s = mpcl_tensor_write(lab, tgt, r * sizeof *tgt);
        if (s == MPCL_OK)
            s = mpcl_lm_forward(m, tok, b, T, 0, &logits);
        if (s == MPCL_OK)
            s = mpcl_softmax_cross_entropy(ctx, lt, NULL, logits, lab, 0.0f, 1.0f);
        if (s == MPCL_OK)
            s = mpcl_tensor_read(lt, &l, sizeof l);
        mpcl_tensor_destroy(lab);
        sum += (double)l * (double)b; /* the mean over b windows of T positions */
    }
    mpcl_tensor_destroy(labels);
    mpcl_tensor_destroy(lt);
    free(tok);
    free(tgt);
    *out = sum;
    return s;
}

/* Validation: data parallel, each rank sums its shard of the windows. */
static mpcl_status lm_validate(mpcl_trainer *t, const mpcl_text *text, const mpcl_fit_lm_options *o, double *loss)
{
    mpcl_dist *d = mpcl_trainer_dist(t);
    if (!d)
        return mpcl_lm_evaluate(t->model, text, MPCL_TEXT_VALID, o->context, o->batch, o->eval_windows, loss);
    size_t n = mpcl_text_windows(text, MPCL_TEXT_VALID, o->context);
    if (o->eval_windows && n > o->eval_windows)
        n = o->eval_windows;
    if (n == 0)
        return mpcl_set_error(t->ctx, MPCL_ERR_ARGUMENT, "mpcl_fit_lm: the validation text of %s holds no window "
                              "of %zu positions", text->source, o->context);
    size_t first, count;
    mpcl_dist_shard(d, n, &first, &count);
    double v[1] = {0};
    mpcl_status s = count ? lm_loss_sum(t->model, text, MPCL_TEXT_VALID, o->context, o->batch, first, count, v)
                          : MPCL_OK;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", s != MPCL_OK ? mpcl_last_error(t->ctx) : "");
    if ((s = mpcl_dist_agree(d, s, msg, sizeof msg)) != MPCL_OK)
        return mpcl_set_error(t->ctx, s, "%s", msg);
    if ((s = mpcl_dist_reduce_sum(t, v, 1)) == MPCL_OK)
        *loss = v[0] / (double)n;
    return s;
}

/* The checkpoint of a position (the trainer's step count), with what a
 * resume needs to go on exactly. */
static mpcl_status save(mpcl_trainer *t, const mpcl_fit_lm_options *o)
{
    char batch[32], ctxlen[32], seed[32], steps[32];
    snprintf(batch, sizeof batch, "%zu", o->batch);
    snprintf(ctxlen, sizeof ctxlen, "%zu", o->context);
    snprintf(seed, sizeof seed, "%" PRIu64, o->seed);
    snprintf(steps, sizeof steps, "%" PRIu64, o->steps);
    enum { OWN = 5 };
    size_t n = OWN + o->save_nmeta;
    mpcl_meta *meta = malloc(n * sizeof *meta);
    if (!meta)
        return mpcl_set_error(t->ctx, MPCL_ERR_NOMEM, "mpcl_fit_lm: out of host memory");
    mpcl_meta own[OWN] = {{"task", "lm"}, {"lm_batch", batch}, {"lm_context", ctxlen},
                          {"lm_seed", seed}, {"lm_steps", steps}};
    memcpy(meta, own, sizeof own);
    if (o->save_nmeta)
        memcpy(meta + OWN, o->save_meta, o->save_nmeta * sizeof *meta);
    mpcl_status s = mpcl_checkpoint_save(t, o->save_path, meta, n);
    free(meta);
    return s;
}

/* A checkpoint: rank 0 writes it, and every rank learns how that went; a
 * write that fails with MPCL_ERR_IO is reported and training goes on (see
 * mpcl_fit's save_at). */
static mpcl_status save_at(mpcl_trainer *t, const mpcl_fit_lm_options *o, const mpcl_fit_lm_callbacks *cb,
                           mpcl_fit_lm_result *r)
{
    mpcl_dist *d = mpcl_trainer_dist(t);
    mpcl_dist_info di;
    mpcl_dist_get_info(d, &di);
    mpcl_status s = di.rank == 0 ? save(t, o) : MPCL_OK;
    r->last_save_failed = s == MPCL_ERR_IO;
    if (s == MPCL_ERR_IO) {
        r->save_failures++;
        snprintf(r->save_error, sizeof r->save_error, "%s", mpcl_last_error(t->ctx));
        if (cb && cb->save_failed)
            cb->save_failed(cb->user, r->save_error);
        s = MPCL_OK;
    }
    if (!d)
        return s;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", s != MPCL_OK ? mpcl_last_error(t->ctx) : "");
    mpcl_status a = mpcl_dist_agree(d, s, msg, sizeof msg);
    return a == MPCL_OK ? MPCL_OK : mpcl_set_error(t->ctx, a, "%s", msg);
}

static mpcl_status check(mpcl_trainer *t, const mpcl_text *text, mpcl_fit_lm_options *o)
{
    const char *op = "mpcl_fit_lm";
    mpcl_context *ctx = t->ctx;
    mpcl_model *m = t->model;
    if (!m->gpt)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: the model is not a language model (a 'gpt' spec)", op);
    if (o->batch == 0)
        o->batch = m->max_batch;
    if (o->context == 0)
        o->context = m->spec.gpt.context;
    if (o->batch > m->max_batch || o->context > m->spec.gpt.context)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: batches of %zu sequences of %zu positions; the model takes up to "
                              "%zu of up to %zu",
                              op, o->batch, o->context, m->max_batch, m->spec.gpt.context);
    if (m->spec.gpt.vocab < 256)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: text is read as bytes (256 token values); the model's vocabulary "
                              "is %zu",
                              op, m->spec.gpt.vocab);
    size_t train, valid;
    mpcl_text_part(text, MPCL_TEXT_TRAIN, &train);
    mpcl_text_part(text, MPCL_TEXT_VALID, &valid);
    if (train < o->context + 1 || valid < o->context + 1)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: %s: %zu training and %zu validation bytes; windows of %zu "
                              "positions need %zu in each",
                              op, text->source, train, valid, o->context, o->context + 1);
    return MPCL_OK;
}

mpcl_status mpcl_fit_lm(mpcl_trainer *t, const mpcl_text *text, const mpcl_fit_lm_options *opt,
                        const mpcl_fit_lm_callbacks *cb, mpcl_fit_lm_result *res)
{
    if (!t || !text || !opt)
        return MPCL_ERR_ARGUMENT;
    mpcl_fit_lm_options o = *opt;
    mpcl_status s = check(t, text, &o);
    if (s != MPCL_OK)
        return s;
    mpcl_context *ctx = t->ctx;
    mpcl_dist *dist = mpcl_trainer_dist(t);
    mpcl_fit_lm_result r;
    memset(&r, 0, sizeof r);
    r.valid_loss = NAN;
    r.first_step_s = -1;
    size_t rows = o.batch * o.context;
    int32_t *tok = malloc(rows * sizeof *tok), *tgt = malloc(rows * sizeof *tgt);
    if (!tok || !tgt) {
        free(tok);
        free(tgt);
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "mpcl_fit_lm: out of host memory");
    }
    double since_loss = 0, since_s = 0;
    uint64_t since_n = 0, since_tokens = 0, since_skipped = 0;
    r.end = MPCL_FIT_COMPLETE;
    for (;;) {
        mpcl_scaler_state sc;
        mpcl_trainer_scaler(t, &sc);
        if (sc.steps >= o.steps)
            break;
        if (o.stop && *o.stop && !dist) { /* data parallel: agreed after each step */
            r.end = MPCL_FIT_STOPPED;
            break;
        }
        uint64_t step = sc.steps; /* 0-based: the windows' hash */
        s = mpcl_text_batch(text, MPCL_TEXT_TRAIN, o.seed, step, o.batch, o.context, tok, tgt);
        if (s != MPCL_OK) {
            s = mpcl_set_error(ctx, s, "mpcl_fit_lm: the windows of step %" PRIu64 " of %s", step,
                               text->source);
            s = mpcl_trainer_step_failed(t, s); /* data parallel: the others are in the step */
            break;
        }
        double t0 = mpcl_now_s();
        mpcl_step_stats st;
        size_t lo, nseq; /* this rank's sequences of the global batch */
        mpcl_dist_shard(dist, o.batch, &lo, &nseq);
        if ((s = mpcl_trainer_step_lm(t, tok + lo * o.context, tgt + lo * o.context, nseq, o.context, &st)) !=
            MPCL_OK)
            break;
        double dt = mpcl_now_s() - t0;
        if (r.first_step_s < 0)
            r.first_step_s = dt;
        else {
            r.train_seconds += dt;
            r.later_tokens += rows;
        }
        r.steps++;
        r.tokens += rows;
        since_s += dt;
        since_tokens += rows;
        if (st.skipped) {
            r.skipped++;
            since_skipped++;
        } else if (!isfinite(st.loss)) {
            r.nonfinite_applied++; /* a step applied with a non-finite loss */
        }
        if (!st.skipped && isfinite(st.loss)) {
            since_loss += st.loss;
            since_n++;
        }
        mpcl_trainer_scaler(t, &sc);
        int stop = 0;
        if (cb && cb->step) {
            mpcl_fit_lm_step_info si = {.step = sc.steps, .steps = o.steps, .stats = st,
                                        .seconds = dt, .tokens_s = dt > 0 ? rows / dt : 0,
                                        .loss_scale = sc.scale};
            stop = cb->step(cb->user, &si) != 0;
        }
        int last = sc.steps >= o.steps;
        int stop_req = stop || (o.stop && *o.stop);
        if (dist && (s = mpcl_dist_any(dist, stop_req, &stop_req)) != MPCL_OK)
            break;
        int eval = last || (o.eval_every && sc.steps % o.eval_every == 0);
        int saved = 0;
        if (eval) {
            double vl = NAN;
            if ((s = lm_validate(t, text, &o, &vl)) != MPCL_OK)
                break;
            r.valid_loss = vl;
            r.evaluated = 1;
        }
        if (o.save_path && (eval || stop_req || (o.save_every && sc.steps % o.save_every == 0))) {
            if ((s = save_at(t, &o, cb, &r)) != MPCL_OK)
                break;
            saved = !r.last_save_failed;
        }
        r.saved = saved;
        if (eval) {
            if (cb && cb->eval) {
                mpcl_fit_lm_eval_info ei = {.step = sc.steps, .steps = o.steps,
                                            .valid_loss = r.valid_loss,
                                            .train_loss = since_n ? since_loss / since_n : NAN,
                                            .tokens_s = since_s > 0 ? since_tokens / since_s : 0,
                                            .skipped = since_skipped, .loss_scale = sc.scale,
                                            .saved = saved};
                stop_req |= cb->eval(cb->user, &ei) != 0;
            }
            since_loss = since_s = 0;
            since_n = since_tokens = since_skipped = 0;
        }
        if (stop_req && !last) {
            if (o.save_path && !saved) {
                if ((s = save_at(t, &o, cb, &r)) != MPCL_OK)
                    break;
                r.saved = !r.last_save_failed;
            }
            r.end = MPCL_FIT_STOPPED;
            break;
        }
    }
    free(tok);
    free(tgt);
    mpcl_scaler_state sc;
    mpcl_trainer_scaler(t, &sc);
    r.total_steps = sc.steps;
    if (res)
        *res = r;
    return s;
}

mpcl_status mpcl_fit_lm_resume(const mpcl_checkpoint *c, mpcl_trainer *t, mpcl_fit_lm_options *o)
{
    if (!c || !t || !o)
        return MPCL_ERR_ARGUMENT;
    const char *task = mpcl_checkpoint_meta(c, "task");
    uint64_t batch, ctxlen, seed;
    if (!task || strcmp(task, "lm") != 0 ||
        !mpcl_parse_u64(mpcl_checkpoint_meta(c, "lm_batch"), &batch) ||
        !mpcl_parse_u64(mpcl_checkpoint_meta(c, "lm_context"), &ctxlen) ||
        !mpcl_parse_u64(mpcl_checkpoint_meta(c, "lm_seed"), &seed))
        return mpcl_set_error(t->ctx, MPCL_ERR_FORMAT,
                              "mpcl_fit_lm_resume: the checkpoint has no language-model position "
                              "(task lm, lm_batch, lm_context, lm_seed)");
    mpcl_status s = mpcl_checkpoint_load_trainer(c, t);
    if (s != MPCL_OK)
        return s;
    o->batch = (size_t)batch;
    o->context = (size_t)ctxlen;
    o->seed = seed;
    return MPCL_OK;
}
