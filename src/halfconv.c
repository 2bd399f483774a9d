/* halfconv.c — how the fp16-storage kernels convert between half and float
 * on this device (cl/precision.h): the integer code, or the built-ins
 * vload_half / vstore_half_rte where they are clearly faster. Both give the
 * same bits (tests/test_half.c), so the choice changes speed only. It is
 * measured, never guessed from the device's name: cl/probe.cl
 * halfconv_bench, built both ways, runs alternately over HALFCONV_N
 * elements, best of HALFCONV_ROUNDS each, and the built-ins are chosen when
 * they take less than HALFCONV_MARGIN of the integer code's time. The
 * verdict is kept in the cache directory beside the program binaries,
 * keyed like them by platform, device and driver, and the kernel source.
 * MPCL_HALF_CONV=integer|builtin skips the measurement (the oclgrind
 * suites use it: a simulator's timings mean nothing); auto or unset
 * measures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define HALFCONV_N ((size_t)1 << 20)
#define HALFCONV_ROUNDS 5
#define HALFCONV_MARGIN 0.8

static void cache_path(mpcl_context *ctx, char *dst, size_t len)
{
    char cl_path[MPCL_PATH_LEN + 128];
    /* the probe program's own cache entry names source, options and device */
    uint64_t h = MPCL_HASH_SEED;
    if (mpcl_program_cache_path(ctx, "probe", MPCL_VARIANT_FP16_STORAGE, cl_path, sizeof cl_path) ==
        MPCL_OK)
        h = mpcl_hash64(cl_path, strlen(cl_path), h);
    mpcl_strfmt(dst, len, "%s/halfconv-%016llx.txt", ctx->cache_dir, (unsigned long long)h);
}

/* halfconv_bench built with `defines`. */
static mpcl_status bench_kernel(mpcl_context *ctx, const char *defines, cl_kernel *out)
{
    cl_program prog = NULL;
    mpcl_status s = mpcl_program_build_defines(ctx, "probe", MPCL_VARIANT_FP16_STORAGE, defines, 1,
                                               &prog);
    if (s != MPCL_OK)
        return s;
    cl_int rc;
    *out = clCreateKernel(prog, "halfconv_bench", &rc);
    clReleaseProgram(prog);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "halfconv_bench: %s", mpcl_cl_error_name(rc));
    return MPCL_OK;
}

static cl_int time_once(mpcl_context *ctx, cl_kernel k, double *best)
{
    size_t global = HALFCONV_N; /* the work-group size is the driver's choice */
    double t0 = mpcl_now_s();
    cl_int rc = clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &global, NULL, 0, NULL, NULL);
    if (rc == CL_SUCCESS)
        rc = clFinish(ctx->queue);
    double t = mpcl_now_s() - t0;
    if (t < *best)
        *best = t;
    return rc;
}

mpcl_status mpcl_halfconv_choose(mpcl_context *ctx)
{
    ctx->storage_defines[0] = '\0';
    if (ctx->precision != MPCL_PRECISION_FP16_STORAGE)
        return MPCL_OK;
    char path[MPCL_PATH_LEN + 160], verdict[64] = "";
    cache_path(ctx, path, sizeof path);
    if (ctx->cache_enabled) {
        FILE *f = fopen(path, "r");
        if (f) {
            if (!fgets(verdict, sizeof verdict, f))
                verdict[0] = '\0';
            fclose(f);
        }
    }
    int builtin = -1;
    double t_soft = 1e30, t_builtin = 1e30;
    const char *env = getenv("MPCL_HALF_CONV");
    if (env && *env && strcmp(env, "auto") != 0) {
        if (strcmp(env, "integer") != 0 && strcmp(env, "builtin") != 0)
            return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                                  "MPCL_HALF_CONV='%s': expected integer, builtin or auto", env);
        mpcl_strfmt(verdict, sizeof verdict, "%s", env);
    }
    if (strncmp(verdict, "builtin", 7) == 0)
        builtin = 1;
    else if (strncmp(verdict, "integer", 7) == 0)
        builtin = 0;
    if (builtin < 0) {
        cl_kernel ks = NULL, kb = NULL;
        cl_mem in = NULL, out = NULL;
        cl_int rc = CL_SUCCESS;
        mpcl_status s = bench_kernel(ctx, "", &ks);
        if (s == MPCL_OK)
            s = bench_kernel(ctx, "-DMPCL_HALF_BUILTIN_SCALAR", &kb);
        if (s == MPCL_OK) {
            /* input: every finite half in turn, both signs */
            cl_ushort *host = malloc(HALFCONV_N * sizeof *host);
            if (!host)
                return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "half conversion benchmark: out of host memory");
            for (size_t i = 0; i < HALFCONV_N; i++)
                host[i] = (cl_ushort)((i % 0x7c00u) | ((i & 1u) << 15));
            in = clCreateBuffer(ctx->cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, HALFCONV_N * 2, host,
                                &rc);
            free(host);
            if (rc == CL_SUCCESS)
                out = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, HALFCONV_N * 2, NULL, &rc);
            if (rc == CL_SUCCESS)
                rc = clSetKernelArg(ks, 0, sizeof in, &in) | clSetKernelArg(ks, 1, sizeof out, &out) |
                     clSetKernelArg(kb, 0, sizeof in, &in) | clSetKernelArg(kb, 1, sizeof out, &out);
            double warm = 1e30;
            if (rc == CL_SUCCESS)
                rc = time_once(ctx, ks, &warm);
            if (rc == CL_SUCCESS)
                rc = time_once(ctx, kb, &warm);
            for (int r = 0; r < HALFCONV_ROUNDS && rc == CL_SUCCESS; r++) {
                rc = time_once(ctx, ks, &t_soft);
                if (rc == CL_SUCCESS)
                    rc = time_once(ctx, kb, &t_builtin);
            }
            if (rc != CL_SUCCESS)
                s = mpcl_set_error(ctx, MPCL_ERR_OPENCL, "half conversion benchmark: %s",
                                   mpcl_cl_error_name(rc));
        }
        if (ks)
            clReleaseKernel(ks);
        if (kb)
            clReleaseKernel(kb);
        if (in)
            clReleaseMemObject(in);
        if (out)
            clReleaseMemObject(out);
        if (s != MPCL_OK)
            return s;
        builtin = t_builtin < HALFCONV_MARGIN * t_soft;
        if (ctx->cache_enabled) {
            char tmp[MPCL_CACHE_TMP_LEN];
            FILE *f = mpcl_cache_tmp_open(ctx, path, tmp, "w");
            if (f)
                mpcl_cache_tmp_commit(ctx, f, fprintf(f, "%s %.6f %.6f\n", builtin ? "builtin" : "integer",
                                                 t_soft, t_builtin) > 0,
                                      tmp, path);
        }
    }
    if (builtin)
        mpcl_strfmt(ctx->storage_defines, sizeof ctx->storage_defines, "-DMPCL_HALF_BUILTIN_SCALAR");
    size_t used = strlen(ctx->caps.chosen_why);
    if (used < sizeof ctx->caps.chosen_why)
        snprintf(ctx->caps.chosen_why + used, sizeof ctx->caps.chosen_why - used,
                 "; half conversions: %s (measured on this device)",
                 builtin ? "vload_half / vstore_half_rte" : "integer code");
    return MPCL_OK;
}
