/* train_lm.c — `mpcl train --task lm`: a language model (a "gpt" spec) on
 * text, a client of mpcl_fit_lm: header, progress, validation lines, the
 * JSON-lines log and the summary (docs/lm.md). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpcl.h"

#include "cli.h"
#include "train_args.h"

#define LM_DEFAULT_MODEL "gpt-tiny"

typedef struct {
    const train_args *a;
    FILE *logf;
    int log_failed;
    progress prog;
    double t0;
} lm_ui;

static int on_step(void *user, const mpcl_fit_lm_step_info *si)
{
    lm_ui *u = user;
    if (u->logf && !log_lm_step(u->logf, si)) {
        u->log_failed = errno ? errno : EIO;
        return 1;
    }
    if (u->prog.on && (now_s() - u->prog.last >= PROGRESS_INTERVAL_S || si->step == si->steps)) {
        char bar[PROGRESS_BAR + 1], eta[32], line[256];
        size_t fill = si->steps ? (size_t)(si->step * PROGRESS_BAR / si->steps) : 0;
        for (size_t i = 0; i < PROGRESS_BAR; i++)
            bar[i] = i < fill ? '=' : (i == fill && si->step < si->steps) ? '>' : ' ';
        bar[PROGRESS_BAR] = '\0';
        fmt_duration(eta, sizeof eta, si->seconds * (double)(si->steps - si->step));
        int w = snprintf(line, sizeof line,
                         "step %" PRIu64 "/%" PRIu64 " [%s] loss %.3f %.0f tok/s scale %g ETA %s",
                         si->step, si->steps, bar, (double)si->stats.loss, si->tokens_s,
                         (double)si->loss_scale, eta);
        if (w > 0) {
            fprintf(stderr, "\r%s%*s", line, u->prog.width > w ? u->prog.width - w : 0, "");
            fflush(stderr);
            u->prog.width = w;
            u->prog.last = now_s();
        }
    }
    return 0;
}

static void on_save_failed(void *user, const char *message)
{
    lm_ui *u = user;
    warn_save_failed(&u->prog, message);
}

static int on_eval(void *user, const mpcl_fit_lm_eval_info *ei)
{
    lm_ui *u = user;
    progress_clear(&u->prog);
    if (!u->a->quiet) {
        printf("step %" PRIu64 "/%" PRIu64 "  train loss %.4f  valid loss %.4f (ppl %.2f)  %.0f tok/s"
               "  scale %g  skipped %" PRIu64 "%s\n",
               ei->step, ei->steps, ei->train_loss, ei->valid_loss, exp(ei->valid_loss), ei->tokens_s,
               (double)ei->loss_scale, ei->skipped, ei->saved ? "  (saved)" : "");
        fflush(stdout);
    }
    if (u->logf && (!log_lm_eval(u->logf, ei) || fflush(u->logf) != 0)) {
        u->log_failed = errno ? errno : EIO;
        return 1;
    }
    return 0;
}

int train_lm(train_args *a, double t_start, cli_dist *cd)
{
    char dev_buf[64];
    const char *cmd = "train";
    char model_path[4096], searched[2048], err[2048];
    mpcl_model_spec *spec = calloc(1, sizeof *spec);
    mpcl_text text;
    memset(&text, 0, sizeof text);
    lm_ui ui = {.a = a};
    mpcl_context *ctx = NULL;
    mpcl_model *model = NULL;
    mpcl_trainer *tr = NULL;
    mpcl_checkpoint *ck = NULL;
    mpcl_status s;
    int rc = EXIT_RUNTIME;
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.device = cli_dist_device(cd, a->device, dev_buf, sizeof dev_buf);
    opt.precision = a->precision;
    opt.seed = a->seed;
    if (!spec) {
        rc = runtime_error(MPCL_ERR_NOMEM, "out of host memory");
        goto done;
    }

    /* the model: --model, the checkpoint's, or gpt-tiny */
    if (a->resume) {
        s = cli_context_create(&opt, &ctx);
        if (s == MPCL_OK)
            s = mpcl_checkpoint_open(ctx, a->resume, &ck);
        if (s == MPCL_OK && !a->model)
            s = mpcl_checkpoint_spec(ck, spec);
        if (s != MPCL_OK) {
            rc = runtime_error(s, mpcl_last_error(ctx));
            goto done;
        }
        snprintf(model_path, sizeof model_path, "%s (model_spec)", a->resume);
    }
    if (!a->resume || a->model) {
        const char *name = a->model ? a->model : LM_DEFAULT_MODEL;
        if (!resolve_model(name, model_path, sizeof model_path, searched, sizeof searched)) {
            rc = usage_error(cmd, "--model: '%s' is not a file, and there is no %s or %s.txt in %s",
                             name, name, name, searched);
            goto done;
        }
        if ((s = mpcl_model_spec_load(model_path, spec, err, sizeof err)) != MPCL_OK) {
            rc = runtime_error(s, err);
            goto done;
        }
    }
    if (spec->kind != MPCL_MODEL_GPT) {
        fprintf(stderr, "mpcl: %s is not a language model (its spec is not a 'gpt' line); --task lm "
                        "trains one, e.g. --model gpt-tiny\n", model_path);
        goto done;
    }
    const mpcl_gpt_spec *g = &spec->gpt;
    size_t context = a->context ? a->context : g->context;
    if (context > g->context) {
        rc = usage_error(cmd, "--context: %lu is more than the model's context of %zu positions",
                         a->context, g->context);
        goto done;
    }
    if (g->vocab < 256) {
        fprintf(stderr, "mpcl: %s: the vocabulary is %zu tokens; text is read as bytes, which needs "
                        "vocab=256 or more\n", model_path, g->vocab);
        goto done;
    }

    /* the text */
    if ((s = mpcl_text_load(a->text, 0, context, &text, err, sizeof err)) != MPCL_OK) {
        rc = runtime_error(s, err);
        goto done;
    }
    if (a->log && !(ui.logf = fopen(a->log, "w"))) {
        fprintf(stderr, "mpcl: %s: cannot open the log for writing: %s\n", a->log, strerror(errno));
        goto done;
    }

    /* device, model, trainer */
    s = ctx ? MPCL_OK : cli_context_create(&opt, &ctx);
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(ctx));
        goto done;
    }
    const char *why = NULL;
    mpcl_precision chosen = mpcl_precision_chosen(ctx, &why);
    mpcl_train_options to;
    train_options(a, chosen, a->steps, &to);
    s = mpcl_model_create(ctx, spec, a->batch, a->seed, &model);
    if (s == MPCL_OK)
        s = mpcl_trainer_create(model, &to, &tr);
    mpcl_fit_lm_options fo;
    mpcl_fit_lm_options_init(&fo);
    fo.steps = a->steps;
    fo.batch = a->batch;
    fo.context = context;
    fo.seed = a->seed;
    fo.eval_every = a->eval_every;
    fo.eval_windows = a->eval_windows;
    fo.save_path = a->save;
    fo.save_every = a->save_every;
    fo.stop = &stop_signal;
    if (s == MPCL_OK && ck) {
        s = mpcl_fit_lm_resume(ck, tr, &fo);
        if (s == MPCL_OK && (fo.batch != a->batch || fo.context != context))
            fprintf(stderr, "mpcl: note: %s was trained with %zu sequences of %zu positions; this "
                            "run goes on with the checkpoint's\n", a->resume, fo.batch, fo.context);
        if (s == MPCL_OK && fo.batch > a->batch) {
            rc = usage_error(cmd, "--resume %s: it trains %zu sequences a step; give --batch %zu",
                             a->resume, fo.batch, fo.batch);
            goto done;
        }
    }
    if (s != MPCL_OK) {
        rc = runtime_error(s, mpcl_last_error(ctx));
        goto done;
    }
    mpcl_meta meta[] = {{"text", text.source}};
    fo.save_meta = meta;
    fo.save_nmeta = 1;

    size_t train_bytes, valid_bytes;
    mpcl_text_part(&text, MPCL_TEXT_TRAIN, &train_bytes);
    mpcl_text_part(&text, MPCL_TEXT_VALID, &valid_bytes);
    /* data parallel: every rank set up, then rank 0's weights to all */
    if (cd->d && (s = cli_dist_join(cd, tr, a, err, sizeof err)) != MPCL_OK) {
        rc = runtime_error(s, err);
        goto done;
    }
    if (!a->quiet) {
        printf("mpcl %s train --task lm\n\n", mpcl_version());
        fieldf("text", "%s: %zu file%s, %zu bytes (%zu training, %zu validation)", text.source,
               text.files, text.files == 1 ? "" : "s", text.size, train_bytes, valid_bytes);
        mpcl_model_memory mm;
        mpcl_model_memory_info(model, &mm);
        fieldf("model", "%s: gpt, %zu layers, %zu heads, width %zu, context %zu, vocabulary %zu; "
                        "%zu parameters",
               model_path, g->layers, g->heads, g->width, g->context, g->vocab,
               mpcl_model_param_count(model));
        fieldf("activations", "%.1f MiB at %lu sequences of %zu", (double)mm.activations / MIB,
               a->batch, g->context);
        fieldf("precision", "%s (requested %s)", mpcl_precision_name(chosen),
               mpcl_precision_name(a->precision));
        fieldf("optimizer", "%s, lr %g, weight decay %g (block matrices only), clip %g",
               mpcl_optimizer_name(a->optimizer), (double)to.optimizer.lr,
               (double)to.optimizer.weight_decay, (double)to.clip_norm);
        fieldf("schedule", "%s%s, %" PRIu64 " warm-up steps", mpcl_schedule_name(to.schedule),
               to.schedule == MPCL_SCHEDULE_COSINE ? " to 0 at the last step" : "", to.warmup_steps);
        if (to.dynamic_scale)
            fieldf("loss scale", "dynamic, from %g", (double)to.loss_scale);
        else
            fieldf("loss scale", "static %g", (double)to.loss_scale);
        fieldf("steps", "%lu of %zu sequences x %zu positions (%zu tokens a step); windows drawn "
                        "from seed %" PRIu64,
               a->steps, fo.batch, fo.context, fo.batch * fo.context, fo.seed);
        char wins[64];
        if (fo.eval_windows)
            snprintf(wins, sizeof wins, "the first %zu", fo.eval_windows);
        else
            snprintf(wins, sizeof wins, "all %zu", mpcl_text_windows(&text, MPCL_TEXT_VALID, fo.context));
        char when[64] = "at the end";
        if (fo.eval_every)
            snprintf(when, sizeof when, "every %" PRIu64 " steps and at the end", fo.eval_every);
        fieldf("validation", "%s, on %s windows of %zu bytes", when, wins, fo.context);
        cli_dist_header(cd, a, mpcl_model_param_count(model), chosen);
        if (ck) {
            mpcl_scaler_state rs;
            mpcl_trainer_scaler(tr, &rs);
            fieldf("resumed", "%s at step %" PRIu64 ", loss scale %g", a->resume, rs.steps,
                   (double)rs.scale);
        }
        if (a->save)
            fieldf("checkpoint", "%s at every validation%s", a->save,
                   a->save_every ? " and every N steps" : "");
        printf("\n");
        fflush(stdout);
    }
    mpcl_checkpoint_close(ck);
    ck = NULL;

    install_stop_handlers();
    ui.prog.on = !a->quiet && isatty(STDERR_FILENO);
    mpcl_fit_lm_callbacks cb = {on_step, on_eval, &ui, on_save_failed};
    mpcl_fit_lm_result res;
    s = mpcl_fit_lm(tr, &text, &fo, cd->info.rank == 0 ? &cb : NULL, &res);
    progress_clear(&ui.prog);
    if (s != MPCL_OK) {
        cli_dist_fail(cd, s, mpcl_last_error(ctx));
        rc = runtime_error(s, mpcl_last_error(ctx));
        goto done;
    }
    if (cd->info.rank != 0) { /* rank 0 reports */
        rc = res.end == MPCL_FIT_STOPPED ? 128 + (stop_signal ? stop_signal : SIGINT) : EXIT_OK;
        goto done;
    }
    if (ui.log_failed || (ui.logf && fclose(ui.logf) != 0)) {
        ui.logf = NULL;
        fprintf(stderr, "mpcl: %s: cannot write the log: %s\n", a->log,
                strerror(ui.log_failed ? ui.log_failed : errno));
        goto done;
    }
    ui.logf = NULL;
    if (res.last_save_failed) { /* the run trained, but its end is not on disk */
        fprintf(stderr, "mpcl: the last checkpoint could not be written (%" PRIu64 " failed writes in all): %s\n",
                res.save_failures, res.save_error);
        goto done;
    }
    if (res.end == MPCL_FIT_STOPPED) {
        fprintf(stderr, "mpcl: stopped by %s at step %" PRIu64 "%s%s%s\n",
                stop_signal == SIGTERM ? "SIGTERM" : "SIGINT", res.total_steps,
                res.saved ? "; checkpoint written to " : "", res.saved ? a->save : "",
                res.saved ? "; continue with --resume it" : "");
        rc = 128 + (stop_signal ? stop_signal : SIGINT);
        goto done;
    }

    mpcl_scaler_state sc;
    mpcl_trainer_scaler(tr, &sc);
    if (!a->quiet)
        printf("\n");
    printf("Result\n");
    fieldf("valid loss", "%.4f nats per byte (perplexity %.2f, %.3f bits per byte)", res.valid_loss,
           exp(res.valid_loss), res.valid_loss / log(2.0));
    fieldf("trained", "%" PRIu64 " steps, %" PRIu64 " tokens%s", res.total_steps, res.tokens,
           a->resume ? " (this run's)" : "");
    fieldf("skipped steps", "%" PRIu64 " of %" PRIu64 " (non-finite gradients); %" PRIu64
                            " applied with a non-finite loss",
           sc.skipped_steps, sc.steps, res.nonfinite_applied);
    fieldf("final loss scale", "%g (%s)", (double)sc.scale, to.dynamic_scale ? "dynamic" : "static");
    cli_dist_report(cd, res.train_seconds);
    if (a->save)
        fieldf("checkpoint", "%s", a->save);
    fieldf("wall time", "%.1f s", now_s() - t_start);
    fieldf("training speed", "%.0f tokens/s (after the first step; %.2f s in training steps)",
           res.train_seconds > 0 ? (double)res.later_tokens / res.train_seconds : 0.0,
           res.train_seconds);
    if (res.first_step_s >= 0)
        fieldf("first step", "%.2f s (builds the kernels the cache lacks, and CLBlast's)",
               res.first_step_s);
    print_memory_and_backend(ctx, chosen, a->precision, why);
    rc = fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
    if (rc == EXIT_OK && a->plot)
        rc = cli_plot("train", a->log, a->plot);

done:
    if (ui.logf)
        fclose(ui.logf);
    mpcl_checkpoint_close(ck);
    mpcl_trainer_destroy(tr);
    mpcl_model_destroy(model);
    mpcl_context_destroy(ctx);
    mpcl_text_free(&text);
    free(spec);
    return rc;
}
