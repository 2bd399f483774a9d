/* fit.c — the training loop (mpcl_fit): epochs in a seeded order, batches
 * gathered and augmented on the prefetch thread while the device runs,
 * evaluation after every epoch, checkpoint cadence, stop requests and
 * resume positions. `mpcl train` is a client of it. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "nn/model.h"
#include "train/trainer.h"

void mpcl_fit_options_init(mpcl_fit_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->epochs = 3;
    o->seed = 1;
}

/* Uniform in [0, bound) without modulo bias (rejection). */
static uint64_t uniform_below(uint64_t *state, uint64_t bound)
{
    uint64_t threshold = (0 - bound) % bound; /* 2^64 mod bound */
    for (;;) {
        uint64_t r = mpcl_splitmix64(state);
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
    st = mpcl_splitmix64(&st) ^ (uint64_t)epoch;
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)uniform_below(&st, (uint64_t)i);
        size_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

/* The checkpoint of a position: epochs_done whole epochs and epoch_step
 * steps of the next, with what a resume needs to go on exactly. */
static mpcl_status save(mpcl_trainer *t, const mpcl_fit_options *o, size_t n_train,
                        unsigned long epochs_done, size_t epoch_step)
{
    char done[32], in_epoch[32], batch[32], samples[32], aug[64], seed[32];
    snprintf(done, sizeof done, "%lu", epochs_done);
    snprintf(in_epoch, sizeof in_epoch, "%zu", epoch_step);
    snprintf(batch, sizeof batch, "%zu", o->batch);
    snprintf(samples, sizeof samples, "%zu", n_train);
    snprintf(seed, sizeof seed, "%" PRIu64, o->seed);
    mpcl_augment_format(&o->augment, aug, sizeof aug);
    enum { OWN = 6 };
    size_t n = OWN + o->save_nmeta;
    mpcl_meta *meta = malloc(n * sizeof *meta);
    if (!meta)
        return mpcl_set_error(t->ctx, MPCL_ERR_NOMEM, "mpcl_fit: out of host memory");
    mpcl_meta own[OWN] = {{"epochs_done", done}, {"epoch_step", in_epoch}, {"batch", batch},
                          {"train_samples", samples}, {"augment", aug}, {"fit_seed", seed}};
    memcpy(meta, own, sizeof own);
    if (o->save_nmeta)
        memcpy(meta + OWN, o->save_meta, o->save_nmeta * sizeof *meta);
    mpcl_status s = mpcl_checkpoint_save(t, o->save_path, meta, n);
    free(meta);
    return s;
}

static mpcl_status check(mpcl_trainer *t, const mpcl_dataset *d, const mpcl_fit_options *o,
                         size_t *n_train, size_t *n_test)
{
    const char *op = "mpcl_fit";
    mpcl_context *ctx = t->ctx;
    const mpcl_model_spec *sp = &t->model->spec;
    const mpcl_idx *im = &d->train_images;
    if (!o->batch || o->batch > t->max_batch)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: batch %zu; the model takes 1 to %zu samples", op,
                              o->batch, t->max_batch);
    if (!o->epochs)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: epochs must be >= 1", op);
    if (!im->data || !d->train_labels.data || !d->test_images.data || !d->test_labels.data ||
        im->count != d->train_labels.count || d->test_images.count != d->test_labels.count)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: the data set needs training and test images with one label each", op);
    size_t c = im->channels ? im->channels : 1;
    if (sp->input[0] != c || sp->input[1] != im->rows || sp->input[2] != im->cols ||
        d->test_images.rows != im->rows || d->test_images.cols != im->cols)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: the model takes %zux%zux%zu inputs, but the images are %zux%zux%zu", op,
                              sp->input[0], sp->input[1], sp->input[2], c, im->rows, im->cols);
    if (t->classes != MPCL_DATASET_CLASSES)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: the model gives %zu class scores, the data have %d classes",
                              op, t->classes, MPCL_DATASET_CLASSES);
    if (o->train_limit > im->count || o->test_limit > d->test_images.count)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: limits of %zu training and %zu test samples, but the data set has %zu and %zu",
                              op, o->train_limit, o->test_limit, im->count, d->test_images.count);
    *n_train = o->train_limit ? o->train_limit : im->count;
    *n_test = o->test_limit ? o->test_limit : d->test_images.count;
    if (!*n_train || !*n_test)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: no %s samples", op, *n_train ? "test" : "training");
    size_t steps = (*n_train + o->batch - 1) / o->batch;
    if (o->epoch_step && o->epoch_step >= steps)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "%s: the start position is step %zu of an epoch, but an epoch has %zu steps "
                              "(another batch or training-sample count than the checkpoint's?)",
                              op, o->epoch_step, steps);
    if (o->augment.pad < 0 || o->augment.pad > MPCL_AUGMENT_MAX_PAD)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: augmentation padding %d is outside 0..%d", op,
                              o->augment.pad, MPCL_AUGMENT_MAX_PAD);
    return MPCL_OK;
}

/* The state of one fit call. */
typedef struct {
    mpcl_trainer *t;
    const mpcl_dataset *d;
    const mpcl_fit_options *o;
    const mpcl_fit_callbacks *cb;
    mpcl_fit_result *r;
    size_t n_train, n_test, steps_per_epoch;
} fit_run;

/* The test set; data parallel: each rank evaluates its shard (with rank
 * 0's batch-norm statistics) and the sums are reduced. */
static mpcl_status evaluate(fit_run *f)
{
    mpcl_trainer *t = f->t;
    mpcl_dist *d = mpcl_trainer_dist(t);
    mpcl_fit_result *r = f->r;
    const mpcl_idx *im = &f->d->test_images;
    size_t first = 0, n = f->n_test;
    mpcl_dist_shard(d, f->n_test, &first, &n);
    mpcl_status s = mpcl_trainer_sync_buffers(t);
    if (!d) {
        if (s == MPCL_OK)
            s = mpcl_model_evaluate(t->model, im->data, f->d->test_labels.data, n, f->o->batch, &r->test_loss,
                                    &r->test_accuracy, r->confusion);
    } else {
        enum { C = MPCL_DATASET_CLASSES };
        double sums[1 + C * C + 1];
        memset(sums, 0, sizeof sums);
        size_t sample = (im->channels ? im->channels : 1) * im->rows * im->cols;
        if (s == MPCL_OK && n)
            s = mpcl_model_evaluate(t->model, im->data + first * sample, f->d->test_labels.data + first, n,
                                    f->o->batch, &r->test_loss, &r->test_accuracy, r->confusion);
        if (s == MPCL_OK && n) {
            sums[0] = r->test_loss * (double)n;
            for (size_t i = 0; i < C * C; i++)
                sums[1 + i] = (double)r->confusion[i];
        }
        sums[1 + C * C] = s != MPCL_OK;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", s != MPCL_OK ? mpcl_last_error(t->ctx) : "");
        mpcl_status a = mpcl_dist_agree(d, s, msg, sizeof msg);
        if (a != MPCL_OK)
            return mpcl_set_error(t->ctx, a, "%s", msg);
        if ((s = mpcl_dist_reduce_sum(t, sums, sizeof sums / sizeof sums[0])) != MPCL_OK)
            return s;
        uint64_t correct = 0;
        for (size_t i = 0; i < C * C; i++)
            r->confusion[i] = (uint64_t)sums[1 + i];
        for (size_t i = 0; i < C; i++)
            correct += r->confusion[i * C + i];
        r->test_loss = sums[0] / (double)f->n_test;
        r->test_accuracy = (double)correct / (double)f->n_test;
    }
    if (s == MPCL_OK)
        r->evaluated = 1;
    return s;
}

/* The stop flag; data parallel: any rank's, so that all stop at the same
 * step. */
static mpcl_status stop_requested(const fit_run *f, int *stop)
{
    *stop |= f->o->stop && *f->o->stop;
    mpcl_dist *d = mpcl_trainer_dist(f->t);
    return d ? mpcl_dist_any(d, *stop, stop) : MPCL_OK;
}

/* A checkpoint: rank 0 writes it, and every rank learns how that went. A
 * write that fails (MPCL_ERR_IO: a full disk, a file size limit) leaves the
 * previous checkpoint on disk as it was (mpcl_checkpoint_save is atomic):
 * it is reported (the result, the save_failed callback) and training goes
 * on, to try again at the next checkpoint. */
static mpcl_status save_at(fit_run *f, unsigned long epochs_done, size_t epoch_step)
{
    mpcl_dist *d = mpcl_trainer_dist(f->t);
    mpcl_status s = mpcl_trainer_sync_buffers(f->t);
    mpcl_dist_info di;
    mpcl_dist_get_info(d, &di);
    if (s == MPCL_OK && di.rank == 0) {
        s = save(f->t, f->o, f->n_train, epochs_done, epoch_step);
        f->r->last_save_failed = s == MPCL_ERR_IO;
        if (s == MPCL_ERR_IO) {
            f->r->save_failures++;
            snprintf(f->r->save_error, sizeof f->r->save_error, "%s", mpcl_last_error(f->t->ctx));
            if (f->cb && f->cb->save_failed)
                f->cb->save_failed(f->cb->user, f->r->save_error);
            s = MPCL_OK;
        }
    }
    if (!d)
        return s;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", s != MPCL_OK ? mpcl_last_error(f->t->ctx) : "");
    mpcl_status a = mpcl_dist_agree(d, s, msg, sizeof msg);
    return a == MPCL_OK ? MPCL_OK : mpcl_set_error(f->t->ctx, a, "%s", msg);
}

/* Queues the gather of the batch that starts at order[first]: this rank's
 * shard of it (all of it for one process; nothing for an empty shard). */
static mpcl_status submit(const fit_run *f, mpcl_prefetch *pf, const size_t *order, size_t first,
                          unsigned long epoch)
{
    size_t b = f->n_train - first < f->o->batch ? f->n_train - first : f->o->batch, lo, n;
    mpcl_dist_shard(mpcl_trainer_dist(f->t), b, &lo, &n);
    return n ? mpcl_prefetch_submit(pf, order + first + lo, n, epoch) : MPCL_OK;
}

mpcl_status mpcl_fit(mpcl_trainer *t, const mpcl_dataset *data, const mpcl_fit_options *o,
                     const mpcl_fit_callbacks *cb, mpcl_fit_result *res)
{
    if (!t)
        return MPCL_ERR_ARGUMENT;
    if (!data || !o)
        return mpcl_set_error(t->ctx, MPCL_ERR_ARGUMENT, "mpcl_fit: data and options must not be NULL");
    mpcl_fit_result local;
    mpcl_fit_result *r = res ? res : &local;
    memset(r, 0, sizeof *r);
    r->first_step_s = -1.0;
    fit_run f = {.t = t, .d = data, .o = o, .cb = cb, .r = r};
    mpcl_status s = check(t, data, o, &f.n_train, &f.n_test);
    if (s != MPCL_OK)
        return s;
    f.steps_per_epoch = (f.n_train + o->batch - 1) / o->batch;
    const mpcl_idx *im = &data->train_images;
    size_t *order = malloc(f.n_train * sizeof *order);
    mpcl_prefetch *pf = NULL;
    if (!order)
        return mpcl_set_error(t->ctx, MPCL_ERR_NOMEM, "mpcl_fit: out of host memory for %zu indices", f.n_train);
    s = mpcl_prefetch_create(im->data, data->train_labels.data, f.n_train, im->channels ? im->channels : 1,
                             im->rows, im->cols, o->batch, &o->augment, o->seed, &pf);
    if (s != MPCL_OK) {
        free(order);
        return mpcl_set_error(t->ctx, s, "mpcl_fit: cannot set up the batch buffers and their thread");
    }
    mpcl_scaler_state sc;
    mpcl_trainer_scaler(t, &sc);
    r->steps = sc.steps;
    r->epochs_done = o->epochs_done;
    r->epoch_step = o->epoch_step;
    unsigned long first_epoch = o->epochs_done + 1;
    int stop = 0, ended = 0;
    for (unsigned long epoch = first_epoch; epoch <= o->epochs && !ended; epoch++) {
        double ep_start = mpcl_now_s(), ep_train = 0.0, loss_sum = 0.0;
        uint64_t loss_n = 0, skipped = 0, images = 0;
        size_t k = epoch == first_epoch ? o->epoch_step : 0, done = 0;
        epoch_order(order, f.n_train, o->seed, epoch);
        if (k * o->batch < f.n_train)
            s = submit(&f, pf, order, k * o->batch, epoch);
        int epoch_complete = 0;
        for (size_t first = k * o->batch; s == MPCL_OK && first < f.n_train; first += o->batch, k++) {
            const uint8_t *bimg = NULL, *blab = NULL;
            size_t b = 0, global_b = f.n_train - first < o->batch ? f.n_train - first : o->batch;
            /* this step's batch (this rank's shard of it), then the next
             * one's gather while the device computes */
            size_t shard_first, shard_n;
            mpcl_dist_shard(mpcl_trainer_dist(t), global_b, &shard_first, &shard_n);
            if (shard_n)
                s = mpcl_prefetch_next(pf, &bimg, &blab, &b);
            size_t next = first + o->batch;
            if (s == MPCL_OK && next < f.n_train)
                s = submit(&f, pf, order, next, epoch);
            if (s != MPCL_OK) {
                s = mpcl_set_error(t->ctx, s, "mpcl_fit: the batch prefetch failed");
                s = mpcl_trainer_step_failed(t, s); /* data parallel: the others are in the step */
                break;
            }
            mpcl_fit_step_info si;
            memset(&si, 0, sizeof si);
            double t0 = mpcl_now_s();
            s = mpcl_trainer_step(t, bimg, blab, b, &si.stats);
            double dt = mpcl_now_s() - t0;
            b = global_b;
            if (s != MPCL_OK)
                break;
            done++;
            ep_train += dt;
            images += b;
            r->train_seconds += dt;
            r->images += b;
            if (r->first_step_s < 0)
                r->first_step_s = dt;
            skipped += si.stats.skipped != 0;
            if (isfinite(si.stats.loss)) {
                loss_sum += (double)si.stats.loss * (double)b;
                loss_n += b;
            }
            mpcl_trainer_scaler(t, &sc);
            r->steps = sc.steps;
            r->epochs_done = epoch - 1;
            r->epoch_step = k + 1;
            r->saved = 0;
            si.step = sc.steps;
            si.epoch = epoch;
            si.epochs = o->epochs;
            si.epoch_step = k + 1;
            si.steps_per_epoch = f.steps_per_epoch;
            si.batch = b;
            si.seconds = dt;
            si.epoch_loss = loss_n ? loss_sum / (double)loss_n : NAN;
            si.epoch_img_s = ep_train > 0 ? (double)images / ep_train : 0.0;
            si.loss_scale = sc.scale;
            if (cb && cb->step && cb->step(cb->user, &si))
                stop = 1;
            if ((s = stop_requested(&f, &stop)) != MPCL_OK)
                break;
            int last = k + 1 == f.steps_per_epoch;
            int at_max = o->max_steps && sc.steps >= o->max_steps;
            if (o->save_path && !last && (stop || at_max || (o->save_every && sc.steps % o->save_every == 0))) {
                if ((s = save_at(&f, epoch - 1, k + 1)) != MPCL_OK)
                    break;
                r->saved = !r->last_save_failed;
            }
            if (last) {
                epoch_complete = 1;
                if (stop && !o->save_path) { /* stop now: no checkpoint of the epoch to write */
                    r->epochs_done = epoch;
                    r->epoch_step = 0;
                    r->end = MPCL_FIT_STOPPED;
                    ended = 1;
                }
                /* else the epoch is complete: evaluate and save it as usual */
            } else if (stop || at_max) {
                r->end = stop ? MPCL_FIT_STOPPED : MPCL_FIT_MAX_STEPS;
                ended = 1;
                break;
            }
        }
        if (s != MPCL_OK || ended || !epoch_complete)
            break;
        r->epochs_done = epoch;
        r->epoch_step = 0;
        if (epoch != first_epoch) {
            r->later_seconds += ep_train;
            r->later_images += images;
            r->later_epochs++;
        }
        if ((s = evaluate(&f)) != MPCL_OK)
            break;
        r->saved = 0;
        if (o->save_path) {
            if ((s = save_at(&f, epoch, 0)) != MPCL_OK)
                break;
            r->saved = !r->last_save_failed;
        }
        mpcl_fit_epoch_info ei = {
            .epoch = epoch,
            .epochs = o->epochs,
            .steps = done,
            .skipped = skipped,
            .images = images,
            .train_loss = loss_n ? loss_sum / (double)loss_n : NAN,
            .test_loss = r->test_loss,
            .test_accuracy = r->test_accuracy,
            .img_s = ep_train > 0 ? (double)images / ep_train : 0.0,
            .seconds = mpcl_now_s() - ep_start,
            .first_step_s = epoch == first_epoch ? r->first_step_s : -1.0,
            .loss_scale = sc.scale,
            .confusion = r->confusion,
            .saved = r->saved,
        };
        if (cb && cb->epoch && cb->epoch(cb->user, &ei))
            stop = 1;
        if ((s = stop_requested(&f, &stop)) != MPCL_OK)
            break;
        if (stop) {
            r->end = MPCL_FIT_STOPPED;
            break;
        }
        if (o->max_steps && sc.steps >= o->max_steps && epoch < o->epochs) {
            r->end = MPCL_FIT_MAX_STEPS;
            break;
        }
    }
    mpcl_prefetch_destroy(pf); /* first: its thread reads the data */
    free(order);
    if (s == MPCL_OK && !r->evaluated && r->end == MPCL_FIT_COMPLETE)
        s = evaluate(&f); /* resumed past the last epoch: the checkpoint as it is */
    return s;
}

/* A whole-number metadata value; 0 when absent. */
static int meta_count(const mpcl_checkpoint *c, const char *key, uint64_t *out)
{
    const char *v = mpcl_checkpoint_meta(c, key);
    *out = 0;
    if (!v)
        return 1;
    char *end = NULL;
    if (!*v || *v == '-')
        return 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end)
        return 0;
    *out = (uint64_t)x;
    return 1;
}

mpcl_status mpcl_fit_resume(const mpcl_checkpoint *c, mpcl_trainer *t, mpcl_fit_options *o)
{
    const char *op = "mpcl_fit_resume";
    if (!t)
        return MPCL_ERR_ARGUMENT;
    if (!c || !o)
        return mpcl_set_error(t->ctx, MPCL_ERR_ARGUMENT, "%s: checkpoint and options must not be NULL", op);
    uint64_t done, step, batch, samples, seed;
    if (!meta_count(c, "epochs_done", &done) || !meta_count(c, "epoch_step", &step) ||
        !meta_count(c, "batch", &batch) || !meta_count(c, "train_samples", &samples) ||
        !meta_count(c, "fit_seed", &seed) || !mpcl_checkpoint_meta(c, "epochs_done") ||
        !mpcl_checkpoint_meta(c, "batch"))
        return mpcl_set_error(t->ctx, MPCL_ERR_FORMAT,
                              "%s: the checkpoint's fit position (epochs_done, epoch_step, batch, train_samples, "
                              "fit_seed) is missing or not whole numbers: was it written by mpcl_fit?", op);
    mpcl_augment_options aug = {0, 0};
    const char *aug_s = mpcl_checkpoint_meta(c, "augment");
    char why[256];
    if (mpcl_augment_parse(aug_s ? aug_s : "none", &aug, why, sizeof why) != MPCL_OK)
        return mpcl_set_error(t->ctx, MPCL_ERR_FORMAT, "%s: the checkpoint's augment '%s' is not valid: %s", op,
                              aug_s, why);
    size_t n_train = o->train_limit;
    if (step && (batch != o->batch || (n_train && samples != n_train)))
        return mpcl_set_error(t->ctx, MPCL_ERR_ARGUMENT,
                              "%s: the checkpoint stopped at step %" PRIu64 " of an epoch with batch %" PRIu64
                              " on %" PRIu64 " samples; this fit has batch %zu%s: resuming mid-epoch needs the same",
                              op, step, batch, samples, o->batch, n_train ? " and another sample count" : "");
    mpcl_status s = mpcl_checkpoint_load_trainer(c, t);
    if (s != MPCL_OK)
        return s;
    o->epochs_done = (unsigned long)done;
    o->epoch_step = (size_t)step;
    if (mpcl_checkpoint_meta(c, "fit_seed"))
        o->seed = seed;
    else if (meta_count(c, "seed", &seed) && mpcl_checkpoint_meta(c, "seed"))
        o->seed = seed; /* written before fit_seed: the run's seed was the model's */
    o->augment = aug;
    return MPCL_OK;
}
