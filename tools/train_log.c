/* train_log.c — what `mpcl train` shows while it runs: the progress line
 * on a terminal and the JSON-lines log (docs/train.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

#include "cli.h"
#include "train_args.h"

/* "0:07", "12:34", "1:02:03" */
void fmt_duration(char *dst, size_t len, double s)
{
    if (!(s >= 0) || s > 1e8)
        s = 0;
    unsigned long t = (unsigned long)(s + 0.5);
    if (t >= 3600)
        snprintf(dst, len, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(dst, len, "%lu:%02lu", t / 60, t % 60);
}



void progress_draw(progress *p, unsigned long epoch, unsigned long epochs, size_t step,
                          size_t steps, double loss, double img_s, float scale, double eta_s)
{
    char bar[PROGRESS_BAR + 1];
    size_t fill = steps ? step * PROGRESS_BAR / steps : 0;
    for (size_t i = 0; i < PROGRESS_BAR; i++)
        bar[i] = i < fill ? '=' : (i == fill && step < steps) ? '>' : ' ';
    bar[PROGRESS_BAR] = '\0';
    char eta[32];
    fmt_duration(eta, sizeof eta, eta_s);
    char line[256];
    int w = snprintf(line, sizeof line, "epoch %lu/%lu [%s] %zu/%zu loss %.3f %.0f img/s scale %g ETA %s",
                     epoch, epochs, bar, step, steps, loss, img_s, (double)scale, eta);
    if (w < 0)
        return;
    /* pad over the rest of a longer previous line */
    fprintf(stderr, "\r%s%*s", line, p->width > w ? p->width - w : 0, "");
    fflush(stderr);
    p->width = w;
    p->last = now_s();
}

void progress_clear(progress *p)
{
    if (p->on && p->width > 0) {
        fprintf(stderr, "\r%*s\r", p->width, "");
        fflush(stderr);
    }
    p->width = 0;
}

/* One JSON line into the log; 0 on a write failure. */
static int log_line(FILE *f, cJSON *o)
{
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text)
        return 0;
    int ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    cJSON_free(text);
    return ok;
}

/* A float as the shortest decimal that reads back as the same float, so the
 * log says 0.001, not 0.0010000000474974513. Non-finite values pass through
 * (cJSON writes them as null). */
static double float_decimal(float x)
{
    if (!isfinite(x))
        return (double)x;
    char buf[32];
    for (int digits = 6; digits < 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)x);
        if (strtof(buf, NULL) == x)
            return strtod(buf, NULL);
    }
    snprintf(buf, sizeof buf, "%.9g", (double)x);
    return strtod(buf, NULL);
}

/* v rounded to `decimals` places (speeds and times in the log). */
static double rounded(double v, int decimals)
{
    char buf[64];
    if (!isfinite(v))
        return v;
    snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return strtod(buf, NULL);
}

int log_step(FILE *f, uint64_t step, unsigned long epoch, const mpcl_step_stats *st,
                    double img_s)
{
    jctx j = {1};
    cJSON *o = jcheck(&j, cJSON_CreateObject());
    if (!o)
        return 0;
    jnum(&j, o, "step", (double)step);
    jnum(&j, o, "epoch", (double)epoch);
    jnum(&j, o, "loss", float_decimal(st->loss)); /* cJSON writes a non-finite number as null */
    jnum(&j, o, "lr", float_decimal(st->lr));
    jnum(&j, o, "loss_scale", float_decimal(st->scale));
    jbool(&j, o, "skipped", st->skipped);
    jnum(&j, o, "img_per_s", rounded(img_s, 1));
    if (!j.ok) {
        cJSON_Delete(o);
        return 0;
    }
    return log_line(f, o);
}



/* A language model's step and validation lines (mpcl train --task lm). */
int log_lm_step(FILE *f, const mpcl_fit_lm_step_info *si)
{
    jctx j = {1};
    cJSON *o = jcheck(&j, cJSON_CreateObject());
    if (!o)
        return 0;
    jnum(&j, o, "step", (double)si->step);
    jnum(&j, o, "loss", float_decimal(si->stats.loss));
    jnum(&j, o, "lr", float_decimal(si->stats.lr));
    jnum(&j, o, "loss_scale", float_decimal(si->stats.scale));
    jbool(&j, o, "skipped", si->stats.skipped);
    jnum(&j, o, "tokens_per_s", rounded(si->tokens_s, 1));
    if (!j.ok) {
        cJSON_Delete(o);
        return 0;
    }
    return log_line(f, o);
}

int log_lm_eval(FILE *f, const mpcl_fit_lm_eval_info *ei)
{
    jctx j = {1};
    cJSON *o = jcheck(&j, cJSON_CreateObject());
    if (!o)
        return 0;
    jnum(&j, o, "eval_step", (double)ei->step);
    jnum(&j, o, "train_loss", ei->train_loss);
    jnum(&j, o, "valid_loss", ei->valid_loss);
    jnum(&j, o, "valid_ppl", exp(ei->valid_loss));
    jnum(&j, o, "tokens_per_s", rounded(ei->tokens_s, 1));
    jnum(&j, o, "skipped", (double)ei->skipped);
    jnum(&j, o, "loss_scale", float_decimal(ei->loss_scale));
    if (!j.ok) {
        cJSON_Delete(o);
        return 0;
    }
    return log_line(f, o);
}

int log_epoch(FILE *f, const epoch_record *e)
{
    jctx j = {1};
    cJSON *o = jcheck(&j, cJSON_CreateObject());
    if (!o)
        return 0;
    jstr(&j, o, "event", "epoch");
    jnum(&j, o, "epoch", (double)e->epoch);
    jnum(&j, o, "steps", (double)e->steps);
    jnum(&j, o, "images", (double)e->images);
    jnum(&j, o, "train_loss", e->train_loss);
    jnum(&j, o, "test_loss", e->test_loss);
    jnum(&j, o, "test_accuracy", e->test_accuracy);
    jnum(&j, o, "skipped", (double)e->skipped);
    jnum(&j, o, "loss_scale", float_decimal(e->loss_scale));
    jnum(&j, o, "img_per_s", rounded(e->img_s, 1));
    jnum(&j, o, "seconds", rounded(e->seconds, 3));
    if (e->first_step_s >= 0)
        jnum(&j, o, "first_step_s", rounded(e->first_step_s, 3));
    if (!j.ok) {
        cJSON_Delete(o);
        return 0;
    }
    return log_line(f, o);
}

void print_memory_and_backend(mpcl_context *ctx, mpcl_precision chosen, mpcl_precision requested,
                              const char *why)
{
    mpcl_mem_stats mem;
    mpcl_memory_stats(ctx, &mem);
    printf("\nPeak device memory\n");
    for (int t = 0; t < MPCL_MEM_TAG_COUNT; t++)
        fieldf(mpcl_mem_tag_name((mpcl_mem_tag)t), "%.2f MiB", (double)mem.peak[t] / MIB);
    fieldf("total", "%.2f MiB (the peak of the sum)", (double)mem.peak_total / MIB);
    printf("\nBackend\n");
    fieldf("precision", "%s (requested %s)", mpcl_precision_name(chosen), mpcl_precision_name(requested));
    field("why", why);
    mpcl_cache_report cr;
    mpcl_cache_report_get(ctx, &cr);
    if (cr.rejected)
        fieldf("cache", "%u damaged entr%s ignored and rebuilt (last: %s)", cr.rejected, cr.rejected == 1 ? "y" : "ies",
               cr.last_rejected);
    if (cr.write_failed)
        fieldf("cache", "%u file%s could not be written; the run went on without them (last: %s)", cr.write_failed,
               cr.write_failed == 1 ? "" : "s", cr.last_write_failure);
}

void warn_save_failed(progress *p, const char *message)
{
    progress_clear(p);
    fprintf(stderr, "mpcl: warning: %s; training goes on\n", message);
}
