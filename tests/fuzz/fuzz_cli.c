/* fuzz_cli.c — libFuzzer target for the mpcl tool's option parsers, argv
 * as input: `mpcl train` (train_parse, tools/train_args.c) and `mpcl bench
 * train` / `mpcl bench gemm` (bench_parse and gemm_parse, static in
 * tools/cmd_bench.c, which this file includes to reach them). Any command
 * line must parse or give a usage error, with no out-of-bounds access,
 * leak or undefined behaviour (AddressSanitizer + UBSan, built by
 * tools/fuzz.sh cli). The other commands (eval, predict, generate, probe,
 * tune) parse their options inside the command itself, between device
 * and file work, so they are not separable here.
 *
 * Input: the arguments, separated by NUL bytes (at most 64). The first is
 * the command: "train", or "bench" followed by "train" or "gemm"; any other
 * first word is given to train_parse as its argv[0].
 *
 * The help text (stdout) and usage errors (stderr) go to /dev/null: the
 * target points the stdout and stderr streams at it once, at start. It
 * does not freopen them: that would move file descriptor 2, where
 * libFuzzer's progress lines (its own copy of the stderr stream) and the
 * sanitizers' reports are written, and tools/fuzz.sh reads them.
 *
 * Invariants: a parse returns -1 (go on), 0 (help shown) or 2 (usage
 * error); options that go on are in their documented ranges and
 * combinations. */
#include "../../tools/cmd_bench.c"

#include "fuzz_util.h"

#include "train_args.h"

#define FUZZ_MAX_ARGS 64

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    FILE *null = fopen("/dev/null", "w");
    if (!null)
        abort();
    stdout = null;
    stderr = null;
    return 0;
}

static int nonempty(const char *s) { return !s || *s; }

static void check_train(const train_args *a)
{
    FUZZ_CHECK(nonempty(a->model) && nonempty(a->data) && nonempty(a->device) && nonempty(a->log) &&
               nonempty(a->save) && nonempty(a->resume) && nonempty(a->text));
    FUZZ_CHECK(a->epochs >= 1 && a->epochs <= TRAIN_MAX_EPOCHS);
    FUZZ_CHECK(a->batch >= 1 && a->batch <= TRAIN_MAX_BATCH);
    FUZZ_CHECK(!a->lr_set || (a->lr > 0 && a->lr <= 1e6));
    FUZZ_CHECK(a->weight_decay >= 0 && a->weight_decay <= 1e6);
    FUZZ_CHECK(a->momentum >= 0 && a->momentum < 1);
    FUZZ_CHECK(!a->momentum_set || a->optimizer == MPCL_OPT_SGD);
    FUZZ_CHECK(!a->nesterov || (a->optimizer == MPCL_OPT_SGD && a->momentum > 0));
    FUZZ_CHECK(!(a->step_size_set || a->gamma_set) || a->schedule == MPCL_SCHEDULE_STEP);
    FUZZ_CHECK(!a->gamma_set || (a->gamma > 0 && a->gamma <= 1));
    FUZZ_CHECK(!a->step_size_set || a->step_size >= 1);
    FUZZ_CHECK(a->scale != SCALE_STATIC || (a->loss_scale > 0 && a->loss_scale <= SCALE_MAX));
    FUZZ_CHECK(!a->init_scale_set ||
               (a->scale == SCALE_DYNAMIC && a->init_scale >= SCALE_MIN && a->init_scale <= SCALE_MAX));
    FUZZ_CHECK(a->clip >= 0 && a->label_smoothing >= 0 && a->label_smoothing < 1);
    FUZZ_CHECK(!a->save_every || a->save);
    FUZZ_CHECK(a->context <= (1UL << 16));
    FUZZ_CHECK(a->bucket_bytes == 0 ||
               (a->bucket_bytes >= 1048 && a->bucket_bytes <= (size_t)1024 * 1048576));
    FUZZ_CHECK(a->dist_timeout == 0 || (a->dist_timeout >= 1 && a->dist_timeout <= 1e6));
    if (a->lm) {
        FUZZ_CHECK(!a->data && !a->epochs_set && !a->limit && !a->test_limit && !a->augment_set &&
                   !a->max_steps && a->label_smoothing == 0);
        FUZZ_CHECK(a->steps >= 1);
    } else {
        FUZZ_CHECK(!a->text && !a->steps_set && !a->context && !a->eval_every_set &&
                   !a->eval_windows_set);
    }
}

static void check_bench(const bench_args *a)
{
    FUZZ_CHECK(nonempty(a->model) && nonempty(a->data) && nonempty(a->device));
    FUZZ_CHECK(a->batch >= 1 && a->batch <= 65536 && a->steps >= 1 && a->steps <= 1000000);
    FUZZ_CHECK(a->warmup <= 1000000 && a->rounds >= 1 && a->rounds <= 1000 &&
               a->profile_steps <= 1000000);
    FUZZ_CHECK(a->nmodes >= 1 && a->nmodes <= BENCH_MAX_MODES);
    FUZZ_CHECK(!a->all || a->nmodes == 4);
    for (int i = 0; i < a->nmodes; i++) {
        FUZZ_CHECK((unsigned)a->modes[i] <= MPCL_PRECISION_BF16);
        for (int j = 0; j < i; j++)
            FUZZ_CHECK(a->modes[i] != a->modes[j]);
    }
    FUZZ_CHECK(!(a->synthetic && a->data));
}

static void check_gemm(const gemm_args *a)
{
    FUZZ_CHECK(a->nshapes >= 1 && a->nshapes <= GEMM_MAX_SHAPES);
    for (int i = 0; i < a->nshapes; i++) {
        const gemm_shape *g = &a->shapes[i];
        FUZZ_CHECK(g->m >= 1 && g->m <= GEMM_MAX_DIM && g->n >= 1 && g->n <= GEMM_MAX_DIM &&
                   g->k >= 1 && g->k <= GEMM_MAX_DIM);
        FUZZ_CHECK((g->ta == 0 || g->ta == 1) && (g->tb == 0 || g->tb == 1));
    }
    FUZZ_CHECK(a->prec[0] || a->prec[1]);
    FUZZ_CHECK(a->tuning[0] || a->tuning[1]);
    FUZZ_CHECK(a->repeats >= 1 && a->repeats <= 1000 && a->min_repeat_ms <= 60000);
    FUZZ_CHECK(nonempty(a->device));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the arguments: NUL-separated, the last one terminated here */
    char *buf = malloc(size + 1);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *argv[FUZZ_MAX_ARGS + 1];
    int argc = 0;
    for (size_t i = 0; i <= size && argc < FUZZ_MAX_ARGS;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;

    int r;
    if (argc >= 2 && strcmp(argv[0], "bench") == 0 && strcmp(argv[1], "gemm") == 0) {
        static gemm_args g;
        getopt_reset();
        r = gemm_parse(argc - 1, argv + 1, &g);
        if (r < 0)
            check_gemm(&g);
    } else if (argc >= 2 && strcmp(argv[0], "bench") == 0 && strcmp(argv[1], "train") == 0) {
        static bench_args b;
        getopt_reset();
        r = bench_parse(argc - 1, argv + 1, &b);
        if (r < 0)
            check_bench(&b);
    } else {
        static train_args t;
        getopt_reset();
        r = train_parse(argc, argv, &t);
        if (r < 0)
            check_train(&t);
    }
    FUZZ_CHECK(r == -1 || r == EXIT_OK || r == EXIT_USAGE);
    free(buf);
    return 0;
}
