/*
 * cli.h — what the mpcl subcommands share: exit codes, usage errors, strict
 * number parsing, aligned text fields and JSON building.
 */
#ifndef MPCL_TOOLS_CLI_H
#define MPCL_TOOLS_CLI_H

#include <getopt.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

enum {
    EXIT_OK = 0,          /* success */
    EXIT_RUNTIME = 1,     /* any other runtime failure */
    EXIT_USAGE = 2,       /* bad command line */
    EXIT_NO_DEVICE = 3,   /* no OpenCL platform, or no device matches --device */
    EXIT_UNSUPPORTED = 4  /* the requested precision is refused by the device */
};

extern const char EXIT_CODES_HELP[];

/* Long options get values from OPT_BASE up, so optopt identifies them. */
#define OPT_BASE 256

#define TEXT_WIDTH 100  /* wrap long values (reasons) at this column */
#define LABEL_INDENT 2
#define LABEL_WIDTH 24

#define KIB 1024ULL
#define MIB (1024ULL * 1024ULL)

/* Every add records failure in *ok, so a half-built document is never printed. */
typedef struct {
    int ok;
} jctx;

int exit_code_of(mpcl_status s);
int runtime_error(mpcl_status s, const char *msg);
int usage_error(const char *cmd, const char *fmt, ...);
void getopt_reset(void);
void option_names(const struct option *opts, char *dst, size_t len);
const char *option_name_of(const struct option *opts, int val);
int option_error(const char *cmd, const struct option *opts, int c, int argc, char **argv);
int parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out);
void print_wrapped(const char *text, int col);
void field2(const char *label, const char *prefix, const char *value);
void field(const char *label, const char *value);
void fieldf(const char *label, const char *fmt, ...);
void fmt_size(char *dst, size_t len, uint64_t bytes, uint64_t unit, const char *uname);
void utf8_sanitize(const char *src, char *dst, size_t len);
cJSON *jcheck(jctx *j, cJSON *item);
void jstr(jctx *j, cJSON *obj, const char *key, const char *val);
void jnum(jctx *j, cJSON *obj, const char *key, double v);
void jbool(jctx *j, cJSON *obj, const char *key, int v);
cJSON *jobj(jctx *j, cJSON *obj, const char *key);
int json_print(jctx *j, cJSON *root);

int parse_real(const char *s, double lo, int lo_open, double hi, double *out);
int parse_u64(const char *s, uint64_t *out);
/* Model lookup for --model (train, bench): the default model's name, and
 * resolve_model, which turns --model (NULL: the default) into a path in dst;
 * 0 when nothing matched, with the directories searched in `searched`. A
 * value with a '/' or naming a file is used as it is; a name is looked up as
 * NAME and NAME.txt in $MPCL_MODEL_DIR, the installed models and the source
 * tree's data/models. */
#define CLI_DEFAULT_MODEL "seed-cnn"
int resolve_model(const char *arg, char *dst, size_t len, char *searched, size_t slen);


/* Rows: true class ("3 Dress"), columns: predicted class (by index). */
void print_confusion(const uint64_t *conf, const char *const *names);

/* Monotonic seconds, for timing. */
double now_s(void);

/* The tool's stderr around a library call (see tools/cli.c). */
typedef struct {
    FILE *tmp;
    int saved, drop_all;
} cli_quiet;
void cli_quiet_begin(cli_quiet *q, int drop_all);
void cli_quiet_end(cli_quiet *q);
/* mpcl_context_create and mpcl_probe with the drivers' own stderr output
 * (compiler diagnostics of builds expected to fail) kept off the terminal
 * unless MPCL_DRIVER_OUTPUT=1. */
mpcl_status cli_context_create(const mpcl_options *opt, mpcl_context **ctx);
mpcl_status cli_probe(mpcl_context *ctx, const mpcl_probe_options *opt, mpcl_caps *caps);
/* The context's device name: the only device there is (quick), else the
 * probe's facts ("?" when neither answers). */
void cli_device_name(mpcl_context *ctx, char *dst, size_t len);
/* tools/plot.py KIND INPUT -o PNG ("train" LOG or "precision" JSON) in
 * Python (docs/precision.md, "Plots"): its output passes through; an exit
 * code, with what to install when matplotlib is missing. */
int cli_plot(const char *kind, const char *input, const char *png);

/* The subcommands: argv starts at the subcommand's own name. */
int cmd_probe(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_precision(int argc, char **argv);

/* First-use CLBlast tuning for train and bench (cmd_tune.c): when the
 * cache has no entry for the device, searches over the GEMMs of one step of
 * spec at batch, with a progress line on stderr; skipped with no_tune or
 * MPCL_TUNE=0 (MPCL_TUNE_BUDGET=SECONDS sets the budget). A failure is a
 * note, never fatal. Returns 0. */
int cli_autotune(mpcl_context *ctx, const mpcl_model_spec *spec, size_t batch, int no_tune);
/* The same over given shapes and precisions (bench gemm). */
int cli_autotune_shapes(mpcl_context *ctx, const mpcl_gemm_shape *shapes, size_t n,
                        unsigned precisions, int no_tune);

#endif
