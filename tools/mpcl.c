/*
 * mpcl.c — the mpcl command-line tool: one binary, one table of subcommands.
 * Shared helpers live in cli.c; each subcommand family in cmd_<name>.c.
 *
 * A thin client of include/mpcl.h: anything this tool does, an application
 * that embeds the library can do with the same calls.
 *
 * Each subcommand is a function `int cmd_<name>(int argc, char **argv)` that
 * receives argv starting at its own name, parses its options with
 * getopt_long, and returns the process exit status (see EXIT_* below).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "mpcl.h"

#include "cli.h"

/* =============================================================== version */

static const char VERSION_HELP[] =
    "usage: mpcl version\n"
    "\n"
    "Prints the version of mpcl, as \"mpcl X.Y.Z\".\n";

static const struct option VERSION_OPTIONS[] = {
    {"help", no_argument, NULL, OPT_BASE},
    {NULL, 0, NULL, 0},
};

static int cmd_version(int argc, char **argv)
{
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", VERSION_OPTIONS, NULL)) != -1) {
        switch (c) {
        case 'h':
        case OPT_BASE: fputs(VERSION_HELP, stdout); return EXIT_OK;
        default: return option_error("version", VERSION_OPTIONS, c, argc, argv);
        }
    }
    if (optind < argc)
        return usage_error("version", "unexpected argument '%s'; version takes no arguments",
                           argv[optind]);
    printf("mpcl %s\n", mpcl_version());
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* ================================================================== help */

static int cmd_help(int argc, char **argv);

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand SUBCOMMANDS[] = {
    {"probe", cmd_probe, "report the device's facts, fp16 checks and chosen precision"},
    {"train", cmd_train, "train a model on Fashion-MNIST (or another MNIST-layout set)"},
    {"eval", cmd_eval, "accuracy and confusion matrix of a checkpoint on a labelled set"},
    {"predict", cmd_predict, "classify PGM images or an IDX file with a checkpoint"},
    {"generate", cmd_generate, "generate text with a language-model checkpoint"},
    {"precision", cmd_precision, "what fp16 and bf16 would do to each tensor of a model"},
    {"bench", cmd_bench, "measure training speed per precision mode (mpcl bench train)"},
    {"tune", cmd_tune, "search CLBlast's GEMM parameters on the device and cache them"},
    {"version", cmd_version, "print the version"},
    {"help", cmd_help, "show this help, or a subcommand's help (mpcl help probe)"},
};
#define SUBCOMMAND_COUNT (sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0])

static const subcommand *find_subcommand(const char *name)
{
    for (size_t i = 0; i < SUBCOMMAND_COUNT; i++)
        if (strcmp(name, SUBCOMMANDS[i].name) == 0)
            return &SUBCOMMANDS[i];
    return NULL;
}

static void print_usage(FILE *f)
{
    fprintf(f,
            "usage: mpcl <subcommand> [options]\n"
            "\n"
            "mpcl %s, a portable mixed-precision training engine on OpenCL.\n"
            "\n"
            "subcommands:\n",
            mpcl_version());
    for (size_t i = 0; i < SUBCOMMAND_COUNT; i++)
        fprintf(f, "  %-9s %s\n", SUBCOMMANDS[i].name, SUBCOMMANDS[i].summary);
    fprintf(f,
            "\n"
            "Run 'mpcl <subcommand> --help' for its options.\n"
            "\n"
            "environment:\n"
            "  MPCL_DEVICE      default device selector (as --device)\n"
            "  MPCL_NO_CACHE=1  do not use the kernel binary cache\n"
            "  MPCL_KERNEL_DIR  load kernel sources from this directory\n"
            "  MPCL_MODEL_DIR   first place 'mpcl train --model NAME' looks for NAME.txt\n"
            "  MPCL_DRIVER_OUTPUT=1  show the compiler's own output of the probe's half build\n"
            "  MPCL_MAX_WORK_GROUP=N  cap every kernel launch at N work-items per group\n"
            "\n"
            "%s",
            EXIT_CODES_HELP);
}

static const char HELP_HELP[] =
    "usage: mpcl help [SUBCOMMAND]\n"
    "\n"
    "Lists the subcommands and exit codes, or shows SUBCOMMAND's help.\n";

static const struct option HELP_OPTIONS[] = {
    {"help", no_argument, NULL, OPT_BASE},
    {NULL, 0, NULL, 0},
};

static int cmd_help(int argc, char **argv)
{
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", HELP_OPTIONS, NULL)) != -1) {
        switch (c) {
        case 'h':
        case OPT_BASE: fputs(HELP_HELP, stdout); return EXIT_OK;
        default: return option_error("help", HELP_OPTIONS, c, argc, argv);
        }
    }
    if (optind >= argc) {
        print_usage(stdout);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
    }
    if (optind + 1 < argc)
        return usage_error("help", "expected at most one subcommand, got '%s' and '%s'",
                           argv[optind], argv[optind + 1]);
    const subcommand *sc = find_subcommand(argv[optind]);
    if (!sc)
        return usage_error("help", "unknown subcommand '%s'", argv[optind]);
    /* run "<subcommand> --help" */
    char *sub_argv[] = {(char *)sc->name, "--help", NULL};
    getopt_reset();
    return sc->run(2, sub_argv);
}

/* ================================================================== main */

int main(int argc, char **argv)
{
    /* a file size limit (ulimit -f) makes a write fail with EFBIG, which
     * mpcl reports naming the file, instead of ending the process */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        print_usage(stdout);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
    }
    if (strcmp(name, "--version") == 0)
        name = "version";
    const subcommand *sc = find_subcommand(name);
    if (!sc) {
        char names[256];
        size_t used = 0;
        names[0] = '\0';
        for (size_t i = 0; i < SUBCOMMAND_COUNT && used + 1 < sizeof names; i++) {
            int w = snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                             SUBCOMMANDS[i].name);
            if (w < 0)
                break;
            used += (size_t)w;
        }
        fprintf(stderr, "mpcl: unknown %s '%s'; the subcommands are %s\nsee 'mpcl help'\n",
                name[0] == '-' ? "option" : "subcommand", name, names);
        return EXIT_USAGE;
    }
    /* the subcommand sees argv from its own name on */
    getopt_reset();
    return sc->run(argc - 1, argv + 1);
}
