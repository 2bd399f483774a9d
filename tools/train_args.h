/* train_args.h — `mpcl train`'s options (train_args.c parses them), its
 * progress line and its log (train_log.c). */
#ifndef MPCL_TOOLS_TRAIN_ARGS_H
#define MPCL_TOOLS_TRAIN_ARGS_H

#include <stdint.h>
#include <stdio.h>

#include "mpcl.h"

#define TRAIN_MAX_EPOCHS 100000UL
#define TRAIN_MAX_BATCH 65536UL
#define SCALE_MIN 0x1p-24
#define SCALE_MAX 0x1p24

typedef enum { SCALE_DEFAULT = 0, SCALE_DYNAMIC, SCALE_STATIC } scale_mode;

typedef struct {
    const char *model;  /* as given; NULL: the default model */
    const char *data;   /* NULL: MPCL_DEFAULT_DATA_DIR */
    int augment_set;    /* --augment given: aug holds it */
    mpcl_augment_options aug;
    unsigned long epochs, batch;
    mpcl_optimizer optimizer;
    int lr_set, weight_decay_set, momentum_set, nesterov;
    double lr, weight_decay, momentum;
    mpcl_schedule schedule;
    int step_size_set, gamma_set;
    unsigned long step_size;
    double gamma;
    unsigned long warmup;
    mpcl_precision precision;
    scale_mode scale;
    double loss_scale;
    int init_scale_set;
    double init_scale;
    double clip, label_smoothing;
    uint64_t seed;
    const char *device;
    int no_tune;
    unsigned long limit, test_limit; /* 0: all */
    const char *log;
    const char *plot; /* --plot FILE.png: the log drawn at the end */
    const char *save, *resume;
    unsigned long save_every; /* 0: at epoch ends only */
    unsigned long max_steps;  /* 0: no limit */
    int seed_set, epochs_set;
    int quiet;
    /* --task lm: a language model on text */
    int lm;
    const char *text;          /* NULL: MPCL_DEFAULT_TEXT_DIR */
    unsigned long steps;       /* the step count to reach (default 2000) */
    unsigned long eval_every;  /* default 200 */
    unsigned long eval_windows; /* default 64; 0: all */
    unsigned long context;     /* 0: the model's */
    int batch_set, optimizer_set, schedule_set, warmup_set, clip_set, steps_set;
    int eval_every_set, eval_windows_set;
    /* data parallel (mpirun) */
    mpcl_wire wire;
    size_t bucket_bytes;            /* 0: the library's default */
    unsigned long dist_check;       /* 0: never */
    double dist_timeout;            /* 0: the library's default */
    unsigned long inject_error_step; /* tests: this rank's step fails there */
    unsigned long inject_inf_step;   /* tests: an inf in this rank's gradients there */
} train_args;

/* The progress line on stderr (a terminal), redrawn in place. */
typedef struct {
    int on;            /* stderr is a terminal and not --quiet */
    double last;       /* when it was last drawn */
    int width;         /* characters of the last line drawn */
} progress;

#define PROGRESS_BAR 20
#define PROGRESS_INTERVAL_S 0.1

void progress_draw(progress *p, unsigned long epoch, unsigned long epochs, size_t step, size_t steps,
                   double loss, double img_s, float scale, double eta_s);
void progress_clear(progress *p);
/* A checkpoint that could not be written, on stderr: training goes on. */
void warn_save_failed(progress *p, const char *message);

/* The JSON-lines log: one line per step and per epoch; 0 on a write failure. */
typedef struct {
    unsigned long epoch;
    uint64_t steps, skipped, images;
    double train_loss, test_loss, test_accuracy, img_s, seconds;
    double first_step_s; /* the run's first step, in its first epoch; else < 0 */
    float loss_scale;
} epoch_record;
int log_step(FILE *f, uint64_t step, unsigned long epoch, const mpcl_step_stats *st, double img_s);
int log_epoch(FILE *f, const epoch_record *e);
int log_lm_step(FILE *f, const mpcl_fit_lm_step_info *si);
int log_lm_eval(FILE *f, const mpcl_fit_lm_eval_info *ei);

/* Parses train's options into *a; returns -1 to go on, else an exit code
 * (help printed, or a usage error reported). */
int train_parse(int argc, char **argv, train_args *a);

/* cmd_train.c: SIGINT / SIGTERM ask the loop to stop after its step (the
 * signal's number in stop_signal); the trainer's options from a. */
#include <signal.h>
extern volatile sig_atomic_t stop_signal;
void install_stop_handlers(void);
void train_options(const train_args *a, mpcl_precision chosen, uint64_t total_steps,
                   mpcl_train_options *to);
/* train_dist.c: `mpcl train` under mpirun (docs/distributed.md) */
typedef struct {
    mpcl_dist *d;       /* NULL: one process */
    mpcl_dist_info info;
    int agreed;         /* the set-up agreement took place */
    int argc;           /* the command line, compared across ranks */
    char **argv;
} cli_dist;
/* Joins the group when started by an MPI launcher with more than one
 * process (ranks other than 0 turn quiet, without a log); returns an exit
 * code, or -1 to go on. */
int cli_dist_start(train_args *a, int *argc, char ***argv, cli_dist *cd);
/* This rank's device selector (buf holds it where chosen here). */
const char *cli_dist_device(const cli_dist *cd, const char *device, char *buf, size_t len);
/* After the set-up: agrees with the other ranks that all went well, then
 * makes tr data-parallel; msg gets the reason on failure. */
mpcl_status cli_dist_join(cli_dist *cd, mpcl_trainer *tr, const train_args *a, char *msg, size_t len);
/* A failed run: a timeout ends the job (MPI_Abort); other errors reached
 * every rank already. */
void cli_dist_fail(cli_dist *cd, mpcl_status s, const char *msg);
/* The end on every path: a rank that failed before joining tells the
 * others, then leaves the group. Returns rc. */
int cli_dist_end(cli_dist *cd, int rc);
void cli_dist_header(const cli_dist *cd, const train_args *a, size_t params, mpcl_precision p);
void cli_dist_report(const cli_dist *cd, double train_seconds);

/* train_lm.c: `mpcl train --task lm` */
int train_lm(train_args *a, double t_start, cli_dist *cd);
/* The summary's last sections: peak device memory per tag and the
 * backend choice (train_log.c). */
void print_memory_and_backend(mpcl_context *ctx, mpcl_precision chosen, mpcl_precision requested,
                              const char *why);
/* "0:07", "12:34", "1:02:03" (train_log.c) */
void fmt_duration(char *dst, size_t len, double s);

#endif
