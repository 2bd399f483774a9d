/* cmd_train.c — `mpcl train`: data, model, trainer, progress, logs, report. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

#include "cli.h"
#include "train_args.h"

/* ------------------------------------------------------------ helpers */

static double mib(uint64_t bytes) { return (double)bytes / (double)MIB; }

/* ---------------------------------------------------------- checkpoints */

/* SIGINT / SIGTERM: the first asks the loop to stop after its step, the
 * second stops at once (the default action). */
volatile sig_atomic_t stop_signal = 0;

static void on_stop_signal(int sig)
{
    if (stop_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_signal = sig;
    static const char msg[] = "\nmpcl: stopping after this step (signal again to stop now)\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
}

void install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ------------------------------------------------------ the fit's client */

/* What the step and epoch callbacks need. */
typedef struct {
    const train_args *a;
    FILE *logf;
    int log_failed;
    progress prog;
} run_ui;

static int on_step(void *user, const mpcl_fit_step_info *si)
{
    run_ui *u = user;
    if (u->logf && !log_step(u->logf, si->step, si->epoch, &si->stats,
                             si->seconds > 0 ? (double)si->batch / si->seconds : 0.0)) {
        u->log_failed = errno ? errno : EIO;
        return 1;
    }
    int last = si->epoch_step == si->steps_per_epoch;
    if (u->prog.on && (now_s() - u->prog.last >= PROGRESS_INTERVAL_S || last)) {
        double per_step = si->epoch_img_s > 0 ? (double)si->batch / si->epoch_img_s : 0.0;
        progress_draw(&u->prog, si->epoch, si->epochs, si->epoch_step, si->steps_per_epoch, si->epoch_loss,
                      si->epoch_img_s, si->loss_scale,
                      per_step * (double)(si->steps_per_epoch - si->epoch_step));
    }
    return 0;
}

static int on_epoch(void *user, const mpcl_fit_epoch_info *ei)
{
    run_ui *u = user;
    progress_clear(&u->prog);
    if (!u->a->quiet) {
        printf("epoch %lu/%lu  loss %.4f  test loss %.4f  test acc %.2f%%  %.0f img/s  scale %g  skipped %" PRIu64
               "  %.1f s",
               ei->epoch, ei->epochs, ei->train_loss, ei->test_loss, 100.0 * ei->test_accuracy, ei->img_s,
               (double)ei->loss_scale, ei->skipped, ei->seconds);
        if (ei->first_step_s >= 0)
            printf("  (first step %.2f s: kernel builds)", ei->first_step_s);
        printf("\n");
        fflush(stdout);
    }
    epoch_record e = {ei->epoch,   ei->steps,         ei->skipped, ei->images,  ei->train_loss, ei->test_loss,
                      ei->test_accuracy, ei->img_s, ei->seconds, ei->first_step_s, ei->loss_scale};
    if (u->logf && (!log_epoch(u->logf, &e) || fflush(u->logf) != 0)) {
        u->log_failed = errno ? errno : EIO;
        return 1;
    }
    return 0;
}

/* A checkpoint that could not be written: training goes on (the file on
 * disk is the previous checkpoint); the run's exit code says so at the end
 * if the last one failed too. */
static void on_save_failed(void *user, const char *message)
{
    run_ui *u = user;
    warn_save_failed(&u->prog, message);
}

/* The schedule in words, for the header. */
static void schedule_text(const mpcl_train_options *to, char *dst, size_t len)
{
    if (to->schedule == MPCL_SCHEDULE_STEP)
        snprintf(dst, len, "step: x %g every %" PRIu64 " steps", (double)to->gamma, to->step_size);
    else if (to->schedule == MPCL_SCHEDULE_COSINE)
        snprintf(dst, len, "cosine to 0 at step %" PRIu64, to->total_steps);
    else
        snprintf(dst, len, "constant");
    if (to->warmup_steps)
        snprintf(dst + strlen(dst), len - strlen(dst), ", linear warm-up over %" PRIu64 " steps",
                 to->warmup_steps);
}

/* The trainer's options from the command line; total_steps: where a
 * cosine schedule reaches 0. */
void train_options(const train_args *a, mpcl_precision chosen, uint64_t total_steps,
                   mpcl_train_options *to)
{
    mpcl_train_options_init(to, chosen);
    mpcl_optimizer_options_init(&to->optimizer, a->optimizer);
    if (a->lr_set)
        to->optimizer.lr = (float)a->lr;
    if (a->weight_decay_set)
        to->optimizer.weight_decay = (float)a->weight_decay;
    if (a->momentum_set)
        to->optimizer.momentum = (float)a->momentum;
    to->optimizer.nesterov = a->nesterov;
    to->schedule = a->schedule;
    if (a->schedule == MPCL_SCHEDULE_COSINE)
        to->total_steps = total_steps;
    if (a->step_size_set)
        to->step_size = a->step_size;
    if (a->gamma_set)
        to->gamma = (float)a->gamma;
    to->warmup_steps = a->warmup;
    if (a->scale == SCALE_STATIC) {
        to->dynamic_scale = 0;
        to->loss_scale = (float)a->loss_scale;
    } else if (a->scale == SCALE_DYNAMIC) {
        if (!to->dynamic_scale) /* fp32's default is static; dynamic starts where fp16's does */
            to->loss_scale = 65536.0f;
        to->dynamic_scale = 1;
    }
    if (a->init_scale_set)
        to->loss_scale = (float)a->init_scale;
    to->clip_norm = (float)a->clip;
    to->label_smoothing = (float)a->label_smoothing;
    to->inject_error_step = a->inject_error_step;
    to->inject_inf_step = a->inject_inf_step;
}

/* "mean 0.2860 std 0.3530" or, per channel, "mean 0.4914,0.4822,0.4465 std ..." */
static void norm_text(const mpcl_normalization *n, char *dst, size_t len)
{
    size_t used = (size_t)snprintf(dst, len, "mean ");
    for (int k = 0; k < 2; k++) {
        for (size_t c = 0; c < n->channels && used < len; c++)
            used += (size_t)snprintf(dst + used, len - used, "%s%.6f", c ? "," : "",
                                     (double)(k ? n->std[c] : n->mean[c]));
        if (!k && used < len)
            used += (size_t)snprintf(dst + used, len - used, " std ");
    }
}

int cmd_train(int argc, char **argv)
{
    const char *cmd = "train";
    train_args a;
    int rc = train_parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    double t_start = now_s();
    cli_dist cd;
    if ((rc = cli_dist_start(&a, &argc, &argv, &cd)) >= 0)
        return rc;
    if (a.lm)
        return cli_dist_end(&cd, train_lm(&a, t_start, &cd));
    char dev_buf[64];

    char model_path[4096], searched[2048], err[2048];
    mpcl_model_spec *spec = NULL;
    mpcl_dataset data;
    memset(&data, 0, sizeof data);
    int have_data = 0;
    run_ui ui = {.a = &a};
    mpcl_context *ctx = NULL;
    mpcl_model *model = NULL;
    mpcl_trainer *tr = NULL;
    mpcl_checkpoint *ck = NULL;
    mpcl_status s;
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.device = cli_dist_device(&cd, a.device, dev_buf, sizeof dev_buf);
    opt.precision = a.precision;
    opt.seed = a.seed;

    /* --resume: the checkpoint first; without --model its spec is the model */
    if (a.resume) {
        s = cli_context_create(&opt, &ctx);
        if (s == MPCL_OK)
            s = mpcl_checkpoint_open(ctx, a.resume, &ck);
        if (s != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(ctx));
            goto done;
        }
        if (!a.model)
            snprintf(model_path, sizeof model_path, "%s (model_spec)", a.resume);
    }

    /* the model spec first: it is quick to find and check */
    spec = calloc(1, sizeof *spec);
    if (!spec) {
        rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        goto done;
    }
    if (a.resume && !a.model) {
        if ((s = mpcl_checkpoint_spec(ck, spec)) != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(ctx));
            goto done;
        }
    } else if (!resolve_model(a.model, model_path, sizeof model_path, searched, sizeof searched)) {
        if (a.model) {
            rc = usage_error(cmd, "--model: '%s' is not a file, and there is no %s or %s.txt "
                                  "in %s", a.model, a.model, a.model, searched);
            goto done;
        }
        fprintf(stderr, "mpcl: the default model %s.txt is not in %s; give --model FILE or set "
                        "MPCL_MODEL_DIR\n", CLI_DEFAULT_MODEL, searched);
        rc = EXIT_RUNTIME;
        goto done;
    } else if ((s = mpcl_model_spec_load(model_path, spec, err, sizeof err)) != MPCL_OK) {
        rc = runtime_error(s, err);
        goto done;
    }

    /* data */
    const char *data_dir = a.data ? a.data : MPCL_DEFAULT_DATA_DIR;
    s = mpcl_dataset_load(a.data, &data, err, sizeof err);
    if (s != MPCL_OK) {
        rc = runtime_error(s, err);
        goto done;
    }
    have_data = 1;
    size_t n_train = data.train_images.count, n_test = data.test_images.count;
    size_t chans = data.train_images.channels, rows = data.train_images.rows;
    size_t cols = data.train_images.cols;
    if (a.limit > n_train || a.test_limit > n_test) {
        rc = a.limit > n_train
                 ? usage_error(cmd, "--limit: %lu is more than the %zu training samples in %s", a.limit,
                               n_train, data_dir)
                 : usage_error(cmd, "--test-limit: %lu is more than the %zu test samples in %s",
                               a.test_limit, n_test, data_dir);
        goto done;
    }
    if (a.limit)
        n_train = a.limit;
    if (a.test_limit)
        n_test = a.test_limit;
    if (n_train == 0 || n_test == 0) {
        fprintf(stderr, "mpcl: %s: no %s samples\n", data_dir, n_train ? "test" : "training");
        rc = EXIT_RUNTIME;
        goto done;
    }

    /* the model must fit the data */
    const mpcl_layer_spec *last = &spec->layers[spec->nlayers - 1];
    if (spec->input[0] != chans || spec->input[1] != rows || spec->input[2] != cols) {
        fprintf(stderr, "mpcl: %s: the model takes %zux%zux%zu inputs (channels x rows x columns), "
                        "but the images in %s are %zux%zux%zu (%s, %zu x %zu); change the spec's "
                        "'input' line to 'input %zux%zux%zu'\n",
                model_path, spec->input[0], spec->input[1], spec->input[2], data_dir, chans, rows,
                cols, chans == 1 ? "grey" : chans == 3 ? "colour" : "channels", rows, cols, chans,
                rows, cols);
        rc = EXIT_RUNTIME;
        goto done;
    }
    if (last->out_ndim != 1 || last->out_shape[0] != MPCL_DATASET_CLASSES) {
        fprintf(stderr, "mpcl: %s:%d: the model ends in %zu outputs, but the data have %d "
                        "classes; the last layer must have out=%d\n",
                model_path, last->line, last->out_shape[0], MPCL_DATASET_CLASSES,
                MPCL_DATASET_CLASSES);
        rc = EXIT_RUNTIME;
        goto done;
    }

    if (a.log && !(ui.logf = fopen(a.log, "w"))) {
        fprintf(stderr, "mpcl: %s: cannot open the log for writing: %s\n", a.log, strerror(errno));
        rc = EXIT_RUNTIME;
        goto done;
    }

    /* device, model, trainer; a resumed run's state, position and normalisation */
    s = ctx ? MPCL_OK : cli_context_create(&opt, &ctx);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(ctx));
        goto done;
    }
    const char *why = NULL;
    mpcl_precision chosen = mpcl_precision_chosen(ctx, &why);
    cli_autotune(ctx, spec, a.batch, a.no_tune);
    size_t steps_per_epoch = (n_train + a.batch - 1) / a.batch;
    mpcl_train_options to;
    train_options(&a, chosen, (uint64_t)a.epochs * steps_per_epoch, &to);
    s = mpcl_model_create(ctx, spec, a.batch, a.seed, &model);
    if (s == MPCL_OK)
        s = mpcl_trainer_create(model, &to, &tr);
    mpcl_fit_options fo;
    mpcl_fit_options_init(&fo);
    fo.epochs = a.epochs;
    fo.batch = a.batch;
    fo.seed = a.seed;
    fo.train_limit = n_train;
    fo.test_limit = n_test;
    fo.max_steps = a.max_steps;
    fo.save_path = a.save;
    fo.save_every = a.save_every;
    fo.stop = &stop_signal;
    /* augmentation: --augment, else the checkpoint's, else the data set's usual */
    if (data.format == MPCL_DATASET_CIFAR10)
        fo.augment = (mpcl_augment_options){.pad = 4, .flip = 1}; /* He et al. 2016 */
    mpcl_normalization norm;
    if (s == MPCL_OK && ck) {
        s = mpcl_fit_resume(ck, tr, &fo); /* the run's seed, augmentation, normalisation */
    } else if (s == MPCL_OK) { /* a flat channel gets std 1: only centred */
        mpcl_normalization_measure(&norm, data.train_images.data, n_train, chans, rows * cols);
        s = mpcl_model_set_normalization(model, &norm);
    }
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(ctx));
        goto done;
    }
    mpcl_model_normalization(model, &norm);
    char aug_text[64], ck_aug_text[64];
    mpcl_augment_format(&fo.augment, ck_aug_text, sizeof ck_aug_text);
    if (a.seed_set)
        fo.seed = a.seed;
    if (a.augment_set)
        fo.augment = a.aug;
    mpcl_augment_format(&fo.augment, aug_text, sizeof aug_text);
    if (ck) {
        const char *b_s = mpcl_checkpoint_meta(ck, "batch"), *n_s = mpcl_checkpoint_meta(ck, "train_samples");
        uint64_t ck_batch = 0, ck_samples = 0;
        if (b_s && n_s && parse_u64(b_s, &ck_batch) && parse_u64(n_s, &ck_samples) &&
            (ck_batch != a.batch || ck_samples != n_train))
            fprintf(stderr, "mpcl: note: %s was trained with batch %" PRIu64 " on %" PRIu64
                            " samples, this run uses batch %lu on %zu; the run will not match an "
                            "uninterrupted one\n", a.resume, ck_batch, ck_samples, a.batch, n_train);
        if (strcmp(aug_text, ck_aug_text) != 0)
            fprintf(stderr, "mpcl: note: %s was trained with --augment %s, this run uses %s; the run "
                            "will not match an uninterrupted one\n", a.resume, ck_aug_text, aug_text);
    }
    char names[512];
    size_t used = 0;
    names[0] = '\0';
    for (int i = 0; i < MPCL_DATASET_CLASSES && used < sizeof names; i++)
        used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? "," : "", data.class_names[i]);
    mpcl_meta meta[] = {{"data", data_dir}, {"class_names", names}};
    fo.save_meta = meta;
    fo.save_nmeta = sizeof meta / sizeof meta[0];

    /* data parallel: every rank set up, then rank 0's weights to all */
    if (cd.d && (s = cli_dist_join(&cd, tr, &a, err, sizeof err)) != MPCL_OK) {
        rc = runtime_error(s, err);
        goto done;
    }

    if (!a.quiet) {
        printf("mpcl %s train\n\n", mpcl_version());
        fieldf("data", "%s (%s): %zu of %zu training and %zu of %zu test images, %zux%zux%zu",
               data_dir, data.name, n_train, data.train_images.count, n_test,
               data.test_images.count, chans, rows, cols);
        fieldf("augmentation", "%s%s", aug_text,
               fo.augment.pad || fo.augment.flip ? " (training images; a hash of seed, epoch and image)" : "");
        char nt[256];
        norm_text(&norm, nt, sizeof nt);
        fieldf("normalisation", "%s (of x/255%s)", nt,
               ck ? ", the checkpoint's" : norm.channels > 1 ? " per channel, over the training images used"
                                                             : ", over the training images used");
        mpcl_model_memory mm;
        mpcl_model_memory_info(model, &mm);
        fieldf("model", "%s: %d layers, %zu parameters", model_path, spec->nlayers,
               mpcl_model_param_count(model));
        fieldf("activations", "%.1f MiB at batch %lu (%.1f MiB with one buffer per tensor)",
               mib(mm.activations), a.batch, mib(mm.activations_unshared));
        fieldf("precision", "%s (requested %s)", mpcl_precision_name(chosen),
               mpcl_precision_name(a.precision));
        char extra[96] = "", sched[160];
        if (a.optimizer == MPCL_OPT_SGD)
            snprintf(extra, sizeof extra, ", momentum %g%s", (double)to.optimizer.momentum,
                     to.optimizer.nesterov ? " (Nesterov)" : "");
        fieldf("optimizer", "%s, lr %g, weight decay %g%s", mpcl_optimizer_name(a.optimizer),
               (double)to.optimizer.lr, (double)to.optimizer.weight_decay, extra);
        schedule_text(&to, sched, sizeof sched);
        field("schedule", sched);
        if (to.dynamic_scale)
            fieldf("loss scale", "dynamic, from %g", (double)to.loss_scale);
        else
            fieldf("loss scale", "static %g", (double)to.loss_scale);
        fieldf("batches", "%lu epoch%s of %zu steps, batch %lu%s", a.epochs,
               a.epochs == 1 ? "" : "s", steps_per_epoch, a.batch,
               n_train % a.batch ? " (the last one smaller)" : "");
        cli_dist_header(&cd, &a, mpcl_model_param_count(model), chosen);
        printf("\n");
        if (a.resume) {
            mpcl_scaler_state rs;
            mpcl_trainer_scaler(tr, &rs);
            fieldf("resumed", "%s: step %" PRIu64 ", %lu epoch%s done%s, loss scale %g", a.resume, rs.steps,
                   fo.epochs_done, fo.epochs_done == 1 ? "" : "s", fo.epoch_step ? " and part of the next" : "",
                   (double)rs.scale);
            if (fo.epochs_done >= a.epochs)
                fieldf("note", "the checkpoint has trained %lu epoch%s already (--epochs %lu is the "
                               "total); only evaluating", fo.epochs_done, fo.epochs_done == 1 ? "" : "s",
                       a.epochs);
            printf("\n");
        }
        if (a.save) {
            fieldf("checkpoint", "%s after every epoch%s", a.save, a.save_every ? " and every N steps" : "");
            printf("\n");
        }
        fflush(stdout);
    }
    mpcl_checkpoint_close(ck);
    ck = NULL;

    /* the loop: the library's */
    install_stop_handlers();
    ui.prog.on = !a.quiet && isatty(STDERR_FILENO);
    if (ui.prog.on) { /* the first step builds kernels and measures convolutions: may take minutes */
        ui.prog.width = fprintf(stderr, "first step: building kernels and measuring each convolution's "
                                        "algorithm (kept in the cache for later runs)...");
        fflush(stderr);
    }
    mpcl_fit_callbacks cb = {on_step, on_epoch, &ui, on_save_failed};
    mpcl_fit_result res;
    s = mpcl_fit(tr, &data, &fo, cd.info.rank == 0 ? &cb : NULL, &res);
    progress_clear(&ui.prog);
    if (s != MPCL_OK) {
        cli_dist_fail(&cd, s, mpcl_last_error(ctx));
        rc = runtime_error(s, mpcl_last_error(ctx));
        goto done;
    }
    if (ui.log_failed) {
        fprintf(stderr, "mpcl: %s: cannot write the log: %s\n", a.log, strerror(ui.log_failed));
        rc = EXIT_RUNTIME;
        goto done;
    }
    if (res.last_save_failed) { /* the run trained, but its end is not on disk */
        fprintf(stderr, "mpcl: the last checkpoint could not be written (%" PRIu64 " failed writes in all): %s\n",
                res.save_failures, res.save_error);
        rc = EXIT_RUNTIME;
        goto done;
    }
    if (res.end == MPCL_FIT_STOPPED && cd.info.rank != 0) {
        rc = 128 + (stop_signal ? stop_signal : SIGINT);
        goto done;
    }
    if (res.end == MPCL_FIT_STOPPED) {
        if (res.epoch_step)
            fprintf(stderr, "mpcl: stopped by %s after step %" PRIu64 " (epoch %lu, step %zu of %zu)%s%s%s\n",
                    stop_signal == SIGINT ? "SIGINT" : "SIGTERM", res.steps, res.epochs_done + 1, res.epoch_step,
                    steps_per_epoch, res.saved ? "; checkpoint written to " : "", res.saved ? a.save : "",
                    res.saved ? "; continue with --resume it" : "");
        else if (res.saved)
            fprintf(stderr, "mpcl: checkpoint of epoch %lu written to %s; continue with --resume it\n",
                    res.epochs_done, a.save);
        else
            fprintf(stderr, "mpcl: stopped by %s after step %" PRIu64 " (the end of epoch %lu)\n",
                    stop_signal == SIGINT ? "SIGINT" : "SIGTERM", res.steps, res.epochs_done);
        rc = 128 + (stop_signal ? stop_signal : SIGINT);
        goto done;
    }
    if (res.end == MPCL_FIT_MAX_STEPS) {
        if (!a.quiet && res.epoch_step)
            printf("stopped at step %" PRIu64 " (--max-steps), in epoch %lu at step %zu of %zu%s%s\n", res.steps,
                   res.epochs_done + 1, res.epoch_step, steps_per_epoch, a.save ? "; checkpoint written to " : "",
                   a.save ? a.save : "");
        else if (!a.quiet)
            printf("stopped at step %" PRIu64 " (--max-steps), after epoch %lu%s%s\n", res.steps,
                   res.epochs_done, a.save ? "; checkpoint written to " : "", a.save ? a.save : "");
        rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
        goto done;
    }
    if (ui.logf) {
        int bad = fclose(ui.logf) != 0;
        ui.logf = NULL;
        if (bad) {
            fprintf(stderr, "mpcl: %s: cannot write the log: %s\n", a.log, strerror(errno));
            rc = EXIT_RUNTIME;
            goto done;
        }
    }

    if (cd.info.rank != 0) { /* rank 0 reports */
        rc = EXIT_OK;
        goto done;
    }

    /* ------------------------------------------------------- summary */
    mpcl_scaler_state sc;
    mpcl_trainer_scaler(tr, &sc);
    uint64_t correct = 0;
    for (int i = 0; i < MPCL_DATASET_CLASSES; i++)
        correct += res.confusion[i * MPCL_DATASET_CLASSES + i];
    if (!a.quiet)
        printf("\n");
    printf("Result\n");
    fieldf("test accuracy", "%.2f%% (%" PRIu64 " of %zu test images)", 100.0 * res.test_accuracy, correct,
           n_test);
    fieldf("test loss", "%.4f", res.test_loss);
    fieldf("trained", "%lu epoch%s, %" PRIu64 " steps, %" PRIu64 " images%s", a.epochs,
           a.epochs == 1 ? "" : "s", res.steps, res.images,
           a.resume ? " (images: this run's, after the resume)" : "");
    if (a.save)
        fieldf("checkpoint", "%s", a.save);
    fieldf("wall time", "%.1f s", now_s() - t_start);
    fieldf("training speed", "%.0f img/s (%.2f s in training steps)",
           res.train_seconds > 0 ? (double)res.images / res.train_seconds : 0.0, res.train_seconds);
    if (res.later_epochs)
        fieldf("after epoch 1", "%.0f img/s (the %lu epoch%s after this run's first; %.2f s)",
               res.later_seconds > 0 ? (double)res.later_images / res.later_seconds : 0.0, res.later_epochs,
               res.later_epochs == 1 ? "" : "s", res.later_seconds);
    if (res.first_step_s >= 0)
        fieldf("first step", "%.2f s (builds the kernels the cache lacks, and CLBlast's)", res.first_step_s);
    cli_dist_report(&cd, res.train_seconds);
    fieldf("skipped steps", "%" PRIu64 " of %" PRIu64, sc.skipped_steps, sc.steps);
    fieldf("final loss scale", "%g (%s)", (double)sc.scale, to.dynamic_scale ? "dynamic" : "static");
    print_confusion(res.confusion, data.class_names);
    print_memory_and_backend(ctx, chosen, a.precision, why);
    rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
    if (rc == EXIT_OK && a.plot)
        rc = cli_plot("train", a.log, a.plot);

done:
    if (ui.logf)
        fclose(ui.logf);
    mpcl_checkpoint_close(ck);
    mpcl_trainer_destroy(tr);
    mpcl_model_destroy(model);
    mpcl_context_destroy(ctx);
    if (have_data)
        mpcl_dataset_free(&data);
    free(spec);
    return cli_dist_end(&cd, rc);
}
