/* device.c — platforms, devices, selection (--device / MPCL_DEVICE), context. */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MAX_PLATFORMS 16
#define MAX_DEVICES_PER_PLATFORM 64

typedef struct {
    mpcl_device_desc desc;
    cl_platform_id platform;
    cl_device_id device;
} found_device;

const char *mpcl_device_type_name(mpcl_device_type t)
{
    switch (t) {
    case MPCL_DEVICE_CPU: return "cpu";
    case MPCL_DEVICE_GPU: return "gpu";
    case MPCL_DEVICE_ACCELERATOR: return "accelerator";
    default: return "other";
    }
}

static mpcl_device_type type_of(cl_device_type t)
{
    if (t & CL_DEVICE_TYPE_GPU) return MPCL_DEVICE_GPU;
    if (t & CL_DEVICE_TYPE_CPU) return MPCL_DEVICE_CPU;
    if (t & CL_DEVICE_TYPE_ACCELERATOR) return MPCL_DEVICE_ACCELERATOR;
    return MPCL_DEVICE_OTHER;
}

void mpcl_device_string(cl_device_id d, cl_device_info what, char *dst, size_t len)
{
    size_t got = 0;
    dst[0] = '\0';
    if (clGetDeviceInfo(d, what, len - 1, dst, &got) != CL_SUCCESS) {
        /* value longer than dst: read it whole and truncate */
        char *tmp = NULL;
        if (clGetDeviceInfo(d, what, 0, NULL, &got) == CL_SUCCESS && got > 0 &&
            (tmp = malloc(got + 1)) != NULL &&
            clGetDeviceInfo(d, what, got, tmp, NULL) == CL_SUCCESS) {
            tmp[got] = '\0';
            mpcl_strfmt(dst, len, "%s", tmp);
        }
        free(tmp);
        return;
    }
    dst[len - 1] = '\0';
    /* drivers pad some names with spaces */
    size_t n = strlen(dst);
    while (n > 0 && isspace((unsigned char)dst[n - 1]))
        dst[--n] = '\0';
}

static void platform_string(cl_platform_id p, cl_platform_info what, char *dst, size_t len)
{
    dst[0] = '\0';
    if (clGetPlatformInfo(p, what, len - 1, dst, NULL) != CL_SUCCESS)
        dst[0] = '\0';
    dst[len - 1] = '\0';
}

static const char NO_PLATFORM_HELP[] =
    "no OpenCL driver (ICD) is installed or none loads; install one (Debian: "
    "pocl-opencl-icd for the CPU, or your GPU vendor's OpenCL ICD package) and check "
    "that OCL_ICD_VENDORS, if set, points at a directory of .icd files";

/* Enumerates every device; *out is malloc'ed. */
static mpcl_status enumerate(found_device **out, size_t *count, char *err, size_t err_len)
{
    cl_platform_id plats[MAX_PLATFORMS];
    cl_uint np = 0;
    *out = NULL;
    *count = 0;
    cl_int rc = clGetPlatformIDs(MAX_PLATFORMS, plats, &np);
    if (rc != CL_SUCCESS || np == 0) {
        mpcl_strfmt(err, err_len, "no OpenCL platform found (clGetPlatformIDs: %s): %s",
                    rc == CL_SUCCESS ? "0 platforms" : mpcl_cl_error_name(rc), NO_PLATFORM_HELP);
        return MPCL_ERR_NO_PLATFORM;
    }
    found_device *all = calloc((size_t)np * MAX_DEVICES_PER_PLATFORM, sizeof *all);
    if (!all) {
        mpcl_strfmt(err, err_len, "out of host memory while listing OpenCL devices");
        return MPCL_ERR_NOMEM;
    }
    size_t n = 0;
    for (cl_uint p = 0; p < np; p++) {
        cl_device_id devs[MAX_DEVICES_PER_PLATFORM];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES_PER_PLATFORM, devs, &nd) !=
            CL_SUCCESS)
            nd = 0; /* a platform with no devices is not an error */
        char pname[128];
        platform_string(plats[p], CL_PLATFORM_NAME, pname, sizeof pname);
        for (cl_uint d = 0; d < nd; d++) {
            found_device *f = &all[n++];
            f->platform = plats[p];
            f->device = devs[d];
            f->desc.platform_index = p;
            f->desc.device_index = d;
            cl_device_type t = 0;
            clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof t, &t, NULL);
            f->desc.type = type_of(t);
            mpcl_strfmt(f->desc.platform, sizeof f->desc.platform, "%s", pname);
            mpcl_device_string(devs[d], CL_DEVICE_NAME, f->desc.name, sizeof f->desc.name);
            mpcl_device_string(devs[d], CL_DEVICE_VENDOR, f->desc.vendor, sizeof f->desc.vendor);
        }
    }
    if (n == 0) {
        free(all);
        mpcl_strfmt(err, err_len, "%u OpenCL platform(s) found, but none has a device: %s",
                    (unsigned)np, NO_PLATFORM_HELP);
        return MPCL_ERR_NO_DEVICE;
    }
    *out = all;
    *count = n;
    return MPCL_OK;
}

mpcl_status mpcl_device_list(mpcl_device_desc *out, size_t cap, size_t *count, char *err,
                             size_t err_len)
{
    char dummy[8];
    if (!err || err_len == 0) {
        err = dummy;
        err_len = sizeof dummy;
    }
    err[0] = '\0';
    if (!count || (cap > 0 && !out)) {
        mpcl_strfmt(err, err_len, "mpcl_device_list: count is NULL, or out is NULL with cap > 0");
        return MPCL_ERR_ARGUMENT;
    }
    found_device *all = NULL;
    size_t n = 0;
    mpcl_status s = enumerate(&all, &n, err, err_len);
    *count = n;
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = all[i].desc;
    free(all);
    return s;
}

static int ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return 0;
    return *a == *b;
}

static int icontains(const char *hay, const char *needle)
{
    size_t nl = strlen(needle);
    if (nl == 0)
        return 0;
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < nl && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == nl)
            return 1;
    }
    return 0;
}

/* Writes "0:0 NAME (cpu, PLATFORM); 0:1 ..." for error messages. */
static void describe_all(const mpcl_device_desc *list, size_t n, char *dst, size_t len)
{
    size_t used = 0;
    dst[0] = '\0';
    for (size_t i = 0; i < n && used + 1 < len; i++) {
        int w = snprintf(dst + used, len - used, "%s%u:%u %s (%s, %s)", i ? "; " : "",
                         list[i].platform_index, list[i].device_index, list[i].name,
                         mpcl_device_type_name(list[i].type), list[i].platform);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

mpcl_status mpcl_device_select(const mpcl_device_desc *list, size_t n, const char *sel,
                               size_t *index, char *err, size_t err_len)
{
    if (n == 0) {
        mpcl_strfmt(err, err_len, "no OpenCL device to select from");
        return MPCL_ERR_NO_DEVICE;
    }
    if (!sel || !*sel) { /* default: the first GPU, else the first device */
        for (size_t i = 0; i < n; i++)
            if (list[i].type == MPCL_DEVICE_GPU) {
                *index = i;
                return MPCL_OK;
            }
        *index = 0;
        return MPCL_OK;
    }
    unsigned p, d;
    char tail;
    if (sscanf(sel, "%u:%u%c", &p, &d, &tail) == 2) {
        for (size_t i = 0; i < n; i++)
            if (list[i].platform_index == p && list[i].device_index == d) {
                *index = i;
                return MPCL_OK;
            }
    } else {
        mpcl_device_type want = 0;
        if (ieq(sel, "gpu")) want = MPCL_DEVICE_GPU;
        else if (ieq(sel, "cpu")) want = MPCL_DEVICE_CPU;
        else if (ieq(sel, "accelerator")) want = MPCL_DEVICE_ACCELERATOR;
        for (size_t i = 0; i < n; i++)
            if (want ? list[i].type == want
                     : (icontains(list[i].name, sel) || icontains(list[i].platform, sel))) {
                *index = i;
                return MPCL_OK;
            }
    }
    char avail[1024];
    describe_all(list, n, avail, sizeof avail);
    mpcl_strfmt(err, err_len,
                "no OpenCL device matches '%s' (a selector is P:D, gpu, cpu, accelerator or part "
                "of a device or platform name); available: %s",
                sel, avail);
    return MPCL_ERR_NO_DEVICE;
}

void mpcl_options_init(mpcl_options *opt)
{
    if (!opt)
        return;
    memset(opt, 0, sizeof *opt);
    opt->precision = MPCL_PRECISION_AUTO;
    opt->seed = 0;
}

static void configure_paths(mpcl_context *ctx, const mpcl_options *opt)
{
    const char *nc = getenv("MPCL_NO_CACHE");
    ctx->cache_enabled = !(opt->no_cache || (nc && *nc && strcmp(nc, "0") != 0));
    ctx->cache_dir[0] = '\0';
    if (opt->cache_dir && *opt->cache_dir) {
        mpcl_strfmt(ctx->cache_dir, sizeof ctx->cache_dir, "%s", opt->cache_dir);
    } else {
        const char *xdg = getenv("XDG_CACHE_HOME");
        const char *home = getenv("HOME");
        if (xdg && xdg[0] == '/')
            mpcl_strfmt(ctx->cache_dir, sizeof ctx->cache_dir, "%s/mpcl", xdg);
        else if (home && *home)
            mpcl_strfmt(ctx->cache_dir, sizeof ctx->cache_dir, "%s/.cache/mpcl", home);
        else
            ctx->cache_enabled = 0; /* nowhere to put it */
    }
    const char *kd = opt->kernel_dir;
    if (!kd || !*kd)
        kd = getenv("MPCL_KERNEL_DIR");
    mpcl_strfmt(ctx->kernel_dir, sizeof ctx->kernel_dir, "%s", kd ? kd : "");
}

/* ctx->wg_cap from opt->max_work_group_size, else $MPCL_MAX_WORK_GROUP. */
static mpcl_status work_group_cap(mpcl_context *ctx, const mpcl_options *opt)
{
    ctx->wg_cap = opt->max_work_group_size;
    const char *env = getenv("MPCL_MAX_WORK_GROUP");
    if (ctx->wg_cap || !env || !*env)
        return MPCL_OK;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(env, &end, 10);
    if (errno || *end || env[0] == '-' || v > SIZE_MAX)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "MPCL_MAX_WORK_GROUP='%s' is not a work-group size (an integer >= 1, "
                              "or 0 for no cap)", env);
    ctx->wg_cap = (size_t)v;
    return MPCL_OK;
}

/* ctx->gemm_f16_env from $MPCL_GEMM_F16_PATH (convert, direct, or auto /
 * unset), read once here rather than at every GEMM. */
static mpcl_status gemm_f16_env(mpcl_context *ctx)
{
    const char *e = getenv("MPCL_GEMM_F16_PATH");
    ctx->gemm_f16_env = MPCL_GEMM_F16_AUTO;
    if (e && strcmp(e, "convert") == 0)
        ctx->gemm_f16_env = MPCL_GEMM_F16_CONVERT;
    else if (e && strcmp(e, "direct") == 0)
        ctx->gemm_f16_env = MPCL_GEMM_F16_DIRECT;
    else if (e && *e && strcmp(e, "auto") != 0)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "mpcl_context_create: MPCL_GEMM_F16_PATH is \"%s\"; expected auto, "
                              "convert or direct", e);
    return MPCL_OK;
}

/* ctx->store_binaries from $MPCL_STORE_BINARIES: 1 always, 0 never, auto or
 * unset measured on the device (program.c). */
static mpcl_status store_binaries_env(mpcl_context *ctx)
{
    const char *e = getenv("MPCL_STORE_BINARIES");
    ctx->store_binaries = -1;
    if (e && strcmp(e, "1") == 0)
        ctx->store_binaries = 1;
    else if (e && strcmp(e, "0") == 0)
        ctx->store_binaries = 0;
    else if (e && *e && strcmp(e, "auto") != 0)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                              "mpcl_context_create: MPCL_STORE_BINARIES is \"%s\"; expected auto, "
                              "1 or 0", e);
    return MPCL_OK;
}

static mpcl_status open_device(mpcl_context *ctx, const char *sel)
{
    found_device *all = NULL;
    size_t n = 0;
    mpcl_status s = enumerate(&all, &n, ctx->err, sizeof ctx->err);
    if (s != MPCL_OK)
        return s;
    mpcl_device_desc *descs = malloc(n * sizeof *descs);
    if (!descs) {
        free(all);
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "out of host memory while selecting a device");
    }
    for (size_t i = 0; i < n; i++)
        descs[i] = all[i].desc;
    size_t idx = 0;
    s = mpcl_device_select(descs, n, sel, &idx, ctx->err, sizeof ctx->err);
    free(descs);
    if (s != MPCL_OK) {
        free(all);
        return s;
    }
    ctx->platform = all[idx].platform;
    ctx->device = all[idx].device;
    ctx->desc = all[idx].desc;
    free(all);

    cl_int rc;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)ctx->platform, 0};
    ctx->cl = clCreateContext(props, 1, &ctx->device, NULL, NULL, &rc);
    if (!ctx->cl || rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL,
                              "cannot create an OpenCL context on device %u:%u '%s' (%s): "
                              "clCreateContext returned %s",
                              ctx->desc.platform_index, ctx->desc.device_index, ctx->desc.name,
                              ctx->desc.platform, mpcl_cl_error_name(rc));
    ctx->queue = clCreateCommandQueue(ctx->cl, ctx->device, CL_QUEUE_PROFILING_ENABLE, &rc);
    if (!ctx->queue || rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL,
                              "cannot create a command queue on device %u:%u '%s': "
                              "clCreateCommandQueue returned %s",
                              ctx->desc.platform_index, ctx->desc.device_index, ctx->desc.name,
                              mpcl_cl_error_name(rc));
    return MPCL_OK;
}

mpcl_status mpcl_context_create(const mpcl_options *opt_in, mpcl_context **out)
{
    if (!out)
        return MPCL_ERR_ARGUMENT;
    mpcl_context *ctx = calloc(1, sizeof *ctx);
    *out = ctx;
    if (!ctx)
        return MPCL_ERR_NOMEM;
    mpcl_options defaults;
    mpcl_options_init(&defaults);
    const mpcl_options *opt = opt_in ? opt_in : &defaults;
    if ((unsigned)opt->precision > MPCL_PRECISION_BF16)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "mpcl_context_create: unknown precision %d",
                              (int)opt->precision);
    ctx->seed = opt->seed;
    configure_paths(ctx, opt);
    mpcl_status s = work_group_cap(ctx, opt);
    if (s == MPCL_OK)
        s = gemm_f16_env(ctx);
    if (s == MPCL_OK)
        s = store_binaries_env(ctx);
    if (s == MPCL_OK)
        s = mpcl_conv_settings_init(ctx, opt);
    if (s != MPCL_OK)
        return s;

    const char *sel = opt->device;
    if (!sel || !*sel)
        sel = getenv("MPCL_DEVICE");
    s = open_device(ctx, sel);
    if (s != MPCL_OK)
        return s;

    mpcl_probe_facts(ctx, &ctx->caps);
    cl_uint align_bits = 0;
    clGetDeviceInfo(ctx->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    ctx->base_align_bytes = align_bits >= 8 ? align_bits / 8 : 128;
    size_t items[3] = {0, 0, 0}, dims_n = 0;
    clGetDeviceInfo(ctx->device, CL_DEVICE_MAX_WORK_ITEM_SIZES, sizeof items, items, &dims_n);
    for (int d = 0; d < 3; d++)
        ctx->max_item[d] = items[d] ? items[d] : 1;
    s = mpcl_probe_checks(ctx, &ctx->caps);
    if (s != MPCL_OK)
        return s;
    s = mpcl_probe_bf16(ctx, &ctx->caps);
    if (s != MPCL_OK)
        return s;
    ctx->bf16_intel = ctx->caps.bf16_intel_used;
    s = mpcl_backend_choose(&ctx->caps, opt->precision, &ctx->caps.chosen, ctx->caps.chosen_why,
                            sizeof ctx->caps.chosen_why);
    if (s != MPCL_OK)
        return mpcl_set_error(ctx, s, "precision %s refused on device %u:%u '%s': %s",
                              mpcl_precision_name(opt->precision), ctx->desc.platform_index,
                              ctx->desc.device_index, ctx->desc.name, ctx->caps.chosen_why);
    ctx->precision = ctx->caps.chosen;
    ctx->clblast_own = opt->clblast_own != 0;
    mpcl_tuning_apply(ctx); /* CLBlast overrides are per process: every context applies them */
    s = mpcl_halfconv_choose(ctx);
    if (s != MPCL_OK)
        return s;
    ctx->usable = 1;
    mpcl_clear_error(ctx);
    return MPCL_OK;
}

void mpcl_context_destroy(mpcl_context *ctx)
{
    if (!ctx)
        return;
    for (int i = 0; i < MPCL_SCRATCH_SLOTS; i++)
        if (ctx->scratch[i])
            clReleaseMemObject(ctx->scratch[i]);
    mpcl_spec_release(ctx);
    for (size_t i = 0; i < ctx->kernel_count; i++)
        clReleaseKernel(ctx->kernels[i].kernel);
    for (size_t i = 0; i < ctx->program_count; i++)
        if (ctx->programs[i].program)
            clReleaseProgram(ctx->programs[i].program);
    if (ctx->queue) {
        clFinish(ctx->queue);
        for (size_t i = 0; i < ctx->prof_n; i++)
            clReleaseEvent(ctx->prof[i].ev);
        free(ctx->prof);
        clReleaseCommandQueue(ctx->queue);
    }
    if (ctx->cl)
        clReleaseContext(ctx->cl);
    free(ctx->gemm_rec);
    free(ctx);
}

mpcl_precision mpcl_precision_chosen(const mpcl_context *ctx, const char **why)
{
    if (!ctx || !ctx->usable) {
        if (why)
            *why = "no usable context";
        return MPCL_PRECISION_FP32;
    }
    if (why)
        *why = ctx->caps.chosen_why;
    return ctx->precision;
}
