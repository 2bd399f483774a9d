/* cmd_probe.c — `mpcl probe`: device facts, fp16 checks, micro-benchmarks. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
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

/* ------------------------------------------------- CL_DEVICE_HALF_FP_CONFIG */

static const struct {
    uint64_t bit;
    const char *name;
} HALF_FP_FLAGS[] = {
    {1, "DENORM"},         {2, "INF_NAN"},       {4, "ROUND_TO_NEAREST"},
    {8, "ROUND_TO_ZERO"},  {16, "ROUND_TO_INF"}, {32, "FMA"},
    {64, "SOFT_FLOAT"},    {128, "CORRECTLY_ROUNDED_DIVIDE_SQRT"},
};
#define HALF_FP_FLAG_COUNT (sizeof HALF_FP_FLAGS / sizeof HALF_FP_FLAGS[0])

static void fmt_half_fp_config(char *dst, size_t len, uint64_t cfg)
{
    if (cfg == 0) {
        snprintf(dst, len, "not reported");
        return;
    }
    size_t used = (size_t)snprintf(dst, len, "0x%" PRIx64 " =", cfg);
    uint64_t known = 0;
    for (size_t i = 0; i < HALF_FP_FLAG_COUNT && used < len; i++) {
        known |= HALF_FP_FLAGS[i].bit;
        if (cfg & HALF_FP_FLAGS[i].bit)
            used += (size_t)snprintf(dst + used, len - used, " %s", HALF_FP_FLAGS[i].name);
    }
    if ((cfg & ~known) && used < len)
        snprintf(dst + used, len - used, " +0x%" PRIx64 " (unknown bits)", cfg & ~known);
}


/* ================================================================= probe */

static const char PROBE_HELP[] =
    "usage: mpcl probe [--device SEL] [--precision MODE] [--json] [--bench] [--gemm-n N]\n"
    "       mpcl probe --list [--json]\n"
    "\n"
    "Opens an OpenCL device, reports its facts, runs the functional fp16 storage,\n"
    "fp16 arithmetic, CLBlast GEMM and bf16 conversion checks (the integer path\n"
    "and, where declared, the cl_intel_bfloat16 built-ins), and says which\n"
    "precision mode mpcl chose for it and why.\n"
    "\n"
    "options:\n"
    "  --device SEL      the device: P:D (platform:device index, see --list), gpu, cpu,\n"
    "                    accelerator, or part of a device or platform name\n"
    "                    (default: $MPCL_DEVICE, else the first GPU, else the first device)\n"
    "  --precision MODE  auto, fp16, fp16-storage, fp32 or bf16 (default: auto); a mode the\n"
    "                    device cannot run is refused with the reason (exit 4)\n"
    "  --json            print one JSON object (schema 1, see docs/probe.md) instead of text\n"
    "  --bench           also run the micro-benchmarks (takes seconds)\n"
    "  --gemm-n N        GEMM size for --bench, 16..16384 (default: 1024)\n"
    "  --list            list every OpenCL platform and device and exit\n"
    "  -h, --help        show this help\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure (OpenCL, a failed check), 2 usage error,\n"
    "3 no OpenCL platform or no device matches, 4 precision refused by the device\n";

enum {
    PROBE_DEVICE = OPT_BASE,
    PROBE_PRECISION,
    PROBE_JSON,
    PROBE_BENCH,
    PROBE_GEMM_N,
    PROBE_LIST,
    PROBE_HELP_OPT
};

static const struct option PROBE_OPTIONS[] = {
    {"device", required_argument, NULL, PROBE_DEVICE},
    {"precision", required_argument, NULL, PROBE_PRECISION},
    {"json", no_argument, NULL, PROBE_JSON},
    {"bench", no_argument, NULL, PROBE_BENCH},
    {"gemm-n", required_argument, NULL, PROBE_GEMM_N},
    {"list", no_argument, NULL, PROBE_LIST},
    {"help", no_argument, NULL, PROBE_HELP_OPT},
    {NULL, 0, NULL, 0},
};

typedef struct {
    const char *device; /* NULL: library default ($MPCL_DEVICE, first GPU, first device) */
    mpcl_precision precision;
    int json, bench, list;
    int precision_set, gemm_n_set;
    unsigned gemm_n;
} probe_args;

/* ------------------------------------------------------------ --list */

static int probe_list(const probe_args *a)
{
    char err[1024];
    size_t n = 0;
    mpcl_status s = mpcl_device_list(NULL, 0, &n, err, sizeof err);
    if (s != MPCL_OK)
        return runtime_error(s, err);
    mpcl_device_desc *devs = calloc(n ? n : 1, sizeof *devs);
    if (!devs)
        return runtime_error(MPCL_ERR_NOMEM, "out of host memory while listing devices");
    size_t got = 0;
    s = mpcl_device_list(devs, n, &got, err, sizeof err);
    if (s != MPCL_OK) {
        free(devs);
        return runtime_error(s, err);
    }
    if (got < n)
        n = got; /* a device went away between the calls */

    int rc = EXIT_OK;
    if (a->json) {
        jctx j = {1};
        cJSON *root = jcheck(&j, cJSON_CreateArray());
        for (size_t i = 0; root && i < n; i++) {
            cJSON *d = jcheck(&j, cJSON_CreateObject());
            if (!d || !cJSON_AddItemToArray(root, d)) {
                cJSON_Delete(d);
                j.ok = 0;
                break;
            }
            char idx[32];
            snprintf(idx, sizeof idx, "%u:%u", devs[i].platform_index, devs[i].device_index);
            jstr(&j, d, "index", idx);
            jnum(&j, d, "platform_index", devs[i].platform_index);
            jnum(&j, d, "device_index", devs[i].device_index);
            jstr(&j, d, "type", mpcl_device_type_name(devs[i].type));
            jstr(&j, d, "name", devs[i].name);
            jstr(&j, d, "platform", devs[i].platform);
            jstr(&j, d, "vendor", devs[i].vendor);
        }
        rc = json_print(&j, root);
    } else {
        int wi = (int)strlen("INDEX"), wt = (int)strlen("TYPE"), wn = (int)strlen("NAME"),
            wp = (int)strlen("PLATFORM");
        char idx[32];
        for (size_t i = 0; i < n; i++) {
            int l = snprintf(idx, sizeof idx, "%u:%u", devs[i].platform_index,
                             devs[i].device_index);
            if (l > wi) wi = l;
            l = (int)strlen(mpcl_device_type_name(devs[i].type));
            if (l > wt) wt = l;
            l = (int)strlen(devs[i].name);
            if (l > wn) wn = l;
            l = (int)strlen(devs[i].platform);
            if (l > wp) wp = l;
        }
        printf("%-*s  %-*s  %-*s  %-*s  %s\n", wi, "INDEX", wt, "TYPE", wn, "NAME", wp,
               "PLATFORM", "VENDOR");
        for (size_t i = 0; i < n; i++) {
            snprintf(idx, sizeof idx, "%u:%u", devs[i].platform_index, devs[i].device_index);
            printf("%-*s  %-*s  %-*s  %-*s  %s\n", wi, idx, wt,
                   mpcl_device_type_name(devs[i].type), wn, devs[i].name, wp, devs[i].platform,
                   devs[i].vendor);
        }
        if (fflush(stdout) != 0)
            rc = EXIT_RUNTIME;
    }
    free(devs);
    return rc;
}

/* ------------------------------------------------------------ text report */

static const char *pass_fail(int passed) { return passed ? "PASS  " : "FAIL  "; }

static void text_device(const mpcl_caps *c)
{
    char buf[256];
    printf("Device\n");
    field("platform", c->platform);
    field("platform vendor", c->platform_vendor);
    field("platform version", c->platform_version);
    field("device", c->device);
    field("vendor", c->vendor);
    field("type", mpcl_device_type_name(c->type));
    field("driver version", c->driver_version);
    field("OpenCL version", c->device_version);
    field("OpenCL C version", c->c_version);
    fieldf("compute units", "%u", c->compute_units);
    fieldf("max clock", "%u MHz", c->clock_mhz);
    fmt_size(buf, sizeof buf, c->global_mem_bytes, MIB, "MiB");
    field("global memory", buf);
    fmt_size(buf, sizeof buf, c->local_mem_bytes, KIB, "KiB");
    field("local memory", buf);
    fmt_size(buf, sizeof buf, c->constant_mem_bytes, KIB, "KiB");
    field("constant memory", buf);
    fmt_size(buf, sizeof buf, c->max_alloc_bytes, MIB, "MiB");
    field("max allocation", buf);
    fieldf("max work-group size", "%" PRIu64, c->max_work_group_size);
    fieldf("preferred half width", "%u", c->preferred_half_width);
    fieldf("native half width", "%u", c->native_half_width);
    fmt_half_fp_config(buf, sizeof buf, c->half_fp_config);
    field("half fp config", buf);
    field("cl_khr_fp16", c->ext_fp16 ? "yes" : "no");
    field("cl_khr_fp64", c->ext_fp64 ? "yes" : "no");
    field("subgroups", c->ext_subgroups ? "yes" : "no");
    field("int64 atomics", c->ext_int64_atomics ? "yes" : "no");
    field("cl_intel_bfloat16", c->ext_bf16_intel ? "yes" : "no");
}

static void text_checks(const mpcl_caps *c)
{
    char buf[MPCL_REASON_LEN + 64];
    printf("\nChecks\n");
    field2("fp16 storage", pass_fail(c->fp16_storage.passed), c->fp16_storage.reason);
    snprintf(buf, sizeof buf, "%s: %s", mpcl_fp16_arith_name(c->fp16_arith),
             c->fp16_arith_check.reason[0] ? c->fp16_arith_check.reason : "-");
    field2("fp16 arithmetic", pass_fail(c->fp16_arith_check.passed), buf);
    if (c->fp16_flushes_subnormals)
        field2("", "      ", "flushes half subnormals to zero");
    field2("CLBlast Sgemm", pass_fail(c->sgemm.passed), c->sgemm.reason);
    field2("CLBlast Hgemm", pass_fail(c->hgemm.passed), c->hgemm.reason);
    field2("bf16 storage", pass_fail(c->bf16_storage.passed), c->bf16_storage.reason);
    snprintf(buf, sizeof buf, "%s: %s",
             c->bf16_intel_used       ? "used by the bf16 kernels"
             : c->ext_bf16_intel      ? "not used (integer conversions instead)"
                                      : "not present",
             c->bf16_intel.reason);
    field2("bf16 intel built-ins", c->ext_bf16_intel ? pass_fail(c->bf16_intel.passed) : "skip  ",
           buf);
}

/* What the context does with CLBlast's parameters (mpcl_tuning_describe). */
static const char *g_clblast_note = "";

static void text_precision(const mpcl_caps *c, mpcl_precision requested)
{
    printf("\nPrecision\n");
    field("requested", mpcl_precision_name(requested));
    field("chosen", mpcl_precision_name(c->chosen));
    field("why", c->chosen_why);
    field("CLBlast GEMMs", g_clblast_note);
}

/* The benchmark figures, in one table for text and JSON. */
typedef struct {
    const char *key;   /* JSON key */
    const char *label; /* text label */
    const char *unit;
    size_t offset;     /* of the mpcl_figure in mpcl_caps */
} figure_desc;

#define FIG(key, label, unit) {#key, label, unit, offsetof(mpcl_caps, key)}
static const figure_desc FIGURES[] = {
    FIG(bandwidth_gbs, "memory bandwidth", "GB/s"),
    FIG(fp32_gflops, "fp32 FMA", "GFLOP/s"),
    FIG(fp16_gflops, "fp16 FMA", "GFLOP/s"),
    FIG(sgemm_gflops, "CLBlast Sgemm", "GFLOP/s"),
    FIG(sgemm_untuned_gflops, "CLBlast Sgemm, untuned", "GFLOP/s"),
    FIG(hgemm_gflops, "CLBlast Hgemm", "GFLOP/s"),
    FIG(h2d_gbs, "host to device", "GB/s"),
    FIG(d2h_gbs, "device to host", "GB/s"),
    FIG(launch_us, "kernel launch", "us"),
    FIG(build_cold_ms, "program build, cold", "ms"),
    FIG(build_warm_ms, "program build, cached", "ms"),
};
#undef FIG
#define FIGURE_COUNT (sizeof FIGURES / sizeof FIGURES[0])

static const mpcl_figure *figure_of(const mpcl_caps *c, const figure_desc *d)
{
    return (const mpcl_figure *)(const void *)((const char *)c + d->offset);
}

static const char *skip_reason(const mpcl_figure *f)
{
    return f->reason[0] ? f->reason : "not run";
}

/* 3 significant-ish digits: "1234", "43.9", "7.63" */
static int figure_precision(double v) { return v >= 100.0 ? 0 : v >= 10.0 ? 1 : 2; }

static void text_bench(const mpcl_caps *c)
{
    char buf[256];
    printf("\nBenchmarks\n");
    if (!c->bench_ran) {
        field("", "not run");
        return;
    }
    fieldf("GEMM size", "%u x %u x %u", c->gemm_n, c->gemm_n, c->gemm_n);
    /* numbers right-aligned to the widest one, so the units line up */
    int width = 1;
    for (size_t i = 0; i < FIGURE_COUNT; i++) {
        const mpcl_figure *f = figure_of(c, &FIGURES[i]);
        if (f->ran) {
            int w = snprintf(buf, sizeof buf, "%.*f", figure_precision(f->value), f->value);
            if (w > width && w < 40)
                width = w;
        }
    }
    for (size_t i = 0; i < FIGURE_COUNT; i++) {
        const mpcl_figure *f = figure_of(c, &FIGURES[i]);
        if (!f->ran) {
            snprintf(buf, sizeof buf, "skipped: %s", skip_reason(f));
            field(FIGURES[i].label, buf);
            continue;
        }
        /* the number goes in the prefix, which keeps its padding */
        snprintf(buf, sizeof buf, "%*.*f ", width, figure_precision(f->value), f->value);
        field2(FIGURES[i].label, buf, FIGURES[i].unit);
    }
}

static int probe_text(const mpcl_caps *c, const probe_args *a)
{
    printf("mpcl %s probe\n\n", mpcl_version());
    text_device(c);
    text_checks(c);
    text_precision(c, a->precision);
    if (a->bench)
        text_bench(c);
    return fflush(stdout) == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* ------------------------------------------------------------ JSON report */

static void json_check(jctx *j, cJSON *parent, const char *key, const mpcl_check *chk)
{
    cJSON *o = jobj(j, parent, key);
    jbool(j, o, "passed", chk->passed);
    jstr(j, o, "reason", chk->reason);
}

static int probe_json(const mpcl_caps *c, const probe_args *a)
{
    jctx j = {1};
    cJSON *root = jcheck(&j, cJSON_CreateObject());
    if (!root)
        return json_print(&j, root);
    jstr(&j, root, "mpcl_version", mpcl_version());
    jnum(&j, root, "schema", 1);

    cJSON *d = jobj(&j, root, "device");
    jstr(&j, d, "platform", c->platform);
    jstr(&j, d, "platform_vendor", c->platform_vendor);
    jstr(&j, d, "platform_version", c->platform_version);
    jstr(&j, d, "name", c->device);
    jstr(&j, d, "vendor", c->vendor);
    jstr(&j, d, "type", mpcl_device_type_name(c->type));
    jstr(&j, d, "driver_version", c->driver_version);
    jstr(&j, d, "opencl_version", c->device_version);
    jstr(&j, d, "opencl_c_version", c->c_version);
    jnum(&j, d, "compute_units", c->compute_units);
    jnum(&j, d, "max_clock_mhz", c->clock_mhz);
    jnum(&j, d, "global_mem_bytes", (double)c->global_mem_bytes);
    jnum(&j, d, "local_mem_bytes", (double)c->local_mem_bytes);
    jnum(&j, d, "constant_mem_bytes", (double)c->constant_mem_bytes);
    jnum(&j, d, "max_alloc_bytes", (double)c->max_alloc_bytes);
    jnum(&j, d, "max_work_group_size", (double)c->max_work_group_size);
    jnum(&j, d, "preferred_half_width", c->preferred_half_width);
    jnum(&j, d, "native_half_width", c->native_half_width);
    jnum(&j, d, "half_fp_config", (double)c->half_fp_config);
    cJSON *flags = jcheck(&j, cJSON_AddArrayToObject(d, "half_fp_config_flags"));
    for (size_t i = 0; flags && i < HALF_FP_FLAG_COUNT; i++)
        if (c->half_fp_config & HALF_FP_FLAGS[i].bit) {
            cJSON *s = jcheck(&j, cJSON_CreateString(HALF_FP_FLAGS[i].name));
            if (s && !cJSON_AddItemToArray(flags, s)) {
                cJSON_Delete(s);
                j.ok = 0;
            }
        }
    cJSON *ext = jobj(&j, d, "extensions");
    jbool(&j, ext, "cl_khr_fp16", c->ext_fp16);
    jbool(&j, ext, "cl_khr_fp64", c->ext_fp64);
    jbool(&j, ext, "subgroups", c->ext_subgroups);
    jbool(&j, ext, "int64_atomics", c->ext_int64_atomics);
    jbool(&j, ext, "cl_intel_bfloat16", c->ext_bf16_intel);

    cJSON *ch = jobj(&j, root, "checks");
    json_check(&j, ch, "fp16_storage", &c->fp16_storage);
    cJSON *ar = jobj(&j, ch, "fp16_arithmetic");
    jstr(&j, ar, "status", mpcl_fp16_arith_name(c->fp16_arith));
    jbool(&j, ar, "passed", c->fp16_arith_check.passed);
    jstr(&j, ar, "reason", c->fp16_arith_check.reason);
    jbool(&j, ar, "flushes_subnormals", c->fp16_flushes_subnormals);
    json_check(&j, ch, "clblast_sgemm", &c->sgemm);
    json_check(&j, ch, "clblast_hgemm", &c->hgemm);
    json_check(&j, ch, "bf16_storage", &c->bf16_storage);
    cJSON *bi = jobj(&j, ch, "bf16_intel_conversions");
    jbool(&j, bi, "present", c->ext_bf16_intel);
    jbool(&j, bi, "verified", c->bf16_intel.passed);
    jbool(&j, bi, "used", c->bf16_intel_used);
    jstr(&j, bi, "reason", c->bf16_intel.reason);

    cJSON *pr = jobj(&j, root, "precision");
    jstr(&j, pr, "requested", mpcl_precision_name(a->precision));
    jstr(&j, pr, "chosen", mpcl_precision_name(c->chosen));
    jstr(&j, pr, "why", c->chosen_why);
    jstr(&j, pr, "clblast_tuning", g_clblast_note);

    if (!a->bench) {
        jcheck(&j, cJSON_AddNullToObject(root, "bench"));
    } else {
        cJSON *b = jobj(&j, root, "bench");
        jnum(&j, b, "gemm_n", c->bench_ran ? c->gemm_n : a->gemm_n);
        for (size_t i = 0; b && i < FIGURE_COUNT; i++) {
            const mpcl_figure *f = figure_of(c, &FIGURES[i]);
            cJSON *o = jobj(&j, b, FIGURES[i].key);
            if (f->ran && c->bench_ran)
                jnum(&j, o, "value", f->value);
            else
                jstr(&j, o, "skipped", skip_reason(f));
        }
    }
    return json_print(&j, root);
}

/* ------------------------------------------------------------ cmd_probe */

int cmd_probe(int argc, char **argv)
{
    const char *cmd = "probe";
    probe_args a;
    memset(&a, 0, sizeof a);
    a.precision = MPCL_PRECISION_AUTO;
    a.gemm_n = 1024;

    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", PROBE_OPTIONS, NULL)) != -1) {
        switch (c) {
        case PROBE_DEVICE:
            if (!*optarg)
                return usage_error(cmd, "--device: the selector is empty; it accepts P:D, gpu, "
                                        "cpu, accelerator or part of a device or platform name");
            a.device = optarg;
            break;
        case PROBE_PRECISION:
            if (mpcl_precision_parse(optarg, &a.precision) != MPCL_OK)
                return usage_error(cmd,
                                   "--precision: '%s' is not a precision mode; it accepts auto, "
                                   "fp16, fp16-storage, fp32 or bf16",
                                   optarg);
            a.precision_set = 1;
            break;
        case PROBE_JSON: a.json = 1; break;
        case PROBE_BENCH: a.bench = 1; break;
        case PROBE_GEMM_N: {
            unsigned long v = 0;
            if (!parse_uint(optarg, 16, 16384, &v))
                return usage_error(cmd, "--gemm-n: '%s' is not valid; it accepts an integer "
                                        "from 16 to 16384",
                                   optarg);
            a.gemm_n = (unsigned)v;
            a.gemm_n_set = 1;
            break;
        }
        case PROBE_LIST: a.list = 1; break;
        case 'h':
        case PROBE_HELP_OPT: fputs(PROBE_HELP, stdout); return EXIT_OK;
        default: return option_error(cmd, PROBE_OPTIONS, c, argc, argv);
        }
    }
    if (optind < argc)
        return usage_error(cmd, "unexpected argument '%s'; probe takes only options",
                           argv[optind]);
    if (a.list && (a.device || a.precision_set || a.bench || a.gemm_n_set))
        return usage_error(cmd, "--list lists every device and takes only --json; "
                                "drop --device, --precision, --bench and --gemm-n");

    if (a.list)
        return probe_list(&a);

    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.device = a.device;
    opt.precision = a.precision;
    mpcl_context *ctx = NULL;
    mpcl_status s = cli_context_create(&opt, &ctx);
    if (s != MPCL_OK) {
        int rc = runtime_error(s, mpcl_last_error(ctx));
        mpcl_context_destroy(ctx);
        return rc;
    }

    mpcl_probe_options popt;
    memset(&popt, 0, sizeof popt);
    popt.bench = a.bench;
    popt.gemm_n = a.gemm_n;
    mpcl_caps *caps = calloc(1, sizeof *caps);
    if (!caps) {
        mpcl_context_destroy(ctx);
        return runtime_error(MPCL_ERR_NOMEM, "out of host memory");
    }
    s = cli_probe(ctx, &popt, caps);
    g_clblast_note = mpcl_tuning_describe(ctx);
    int rc;
    if (s != MPCL_OK)
        rc = runtime_error(s, mpcl_last_error(ctx));
    else
        rc = a.json ? probe_json(caps, &a) : probe_text(caps, &a);
    free(caps);
    mpcl_context_destroy(ctx);
    return rc;
}

