/* launch_tune.c — the work-group size of 1-D elementwise launches, measured
 * on the device and kept in the cache directory.
 *
 * A CPU implementation runs a work-group as one vectorised loop, and a GPU
 * spreads groups over its compute units: the best size differs between
 * them, and between drivers of the same hardware. So the first 1-D launch
 * of a context times scale_f32 (cl/elementwise.cl, a memory-bound kernel
 * like most 1-D ones) over TUNE_N floats with every candidate size:
 * multiples of the kernel's CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE
 * and the powers of two from 16 to TUNE_MAX_WG, within the kernel's and
 * the device's limits (not the context's cap: launches clip the measured
 * size to the cap). Each candidate runs once to warm up, then TUNE_REPS
 * times; its time is the median device time of one launch (profiling
 * events). The smallest size within TUNE_SLACK of the fastest wins.
 *
 * The result is written to <cache dir>/launch-<device hash>.txt, one line
 * "mpcl-launch 1 wg_1d N", through a temporary file and a rename, and read
 * back by later contexts on the same platform, device and driver; a file
 * that does not parse or names a size the device does not allow is measured
 * again. Without a cache (MPCL_NO_CACHE, no_cache) nothing is measured: the
 * starting point TUNE_DEFAULT (clipped to the limits, rounded down to the
 * preferred multiple) is used, so that runs under a simulator such as
 * oclgrind stay short. A failure to measure is never an error: the starting
 * point is used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define TUNE_N ((size_t)1 << 20)
#define TUNE_REPS 5
#define TUNE_MAX_WG 1024
#define TUNE_DEFAULT 64
#define TUNE_SLACK 1.05
#define TUNE_MAX_CANDIDATES 24

static void tune_path(const mpcl_context *ctx, char *dst, size_t len)
{
    mpcl_strfmt(dst, len, "%s/launch-%016llx.txt", ctx->cache_dir,
                (unsigned long long)mpcl_device_hash(ctx));
}

/* The size recorded for this device, or 0. */
static size_t read_tuned(const mpcl_context *ctx, size_t limit)
{
    char path[MPCL_PATH_LEN + 64];
    tune_path(ctx, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    unsigned long long v = 0;
    int version = 0;
    char tail = 0;
    int n = fscanf(f, "mpcl-launch %d wg_1d %llu%c", &version, &v, &tail);
    fclose(f);
    if (n < 2 || version != 1 || v == 0 || v > limit || (n == 3 && tail != '\n'))
        return 0;
    return (size_t)v;
}

static void write_tuned(mpcl_context *ctx, size_t wg)
{
    char path[MPCL_PATH_LEN + 64], tmp[MPCL_CACHE_TMP_LEN];
    tune_path(ctx, path, sizeof path);
    FILE *f = mpcl_cache_tmp_open(ctx, path, tmp, "w");
    if (f)
        mpcl_cache_tmp_commit(ctx, f, fprintf(f, "mpcl-launch 1 wg_1d %zu\n", wg) > 0, tmp, path);
}

static int by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median device time of one launch of k over n items in groups of wg, or a
 * negative value when the device refused. */
static double time_launches(mpcl_context *ctx, cl_kernel k, size_t n, size_t wg)
{
    size_t global = (n + wg - 1) / wg * wg;
    double t[TUNE_REPS];
    for (int r = -1; r < TUNE_REPS; r++) {
        cl_event ev = NULL;
        cl_int rc = clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &global, &wg, 0, NULL,
                                           r >= 0 ? &ev : NULL);
        if (rc == CL_SUCCESS)
            rc = clFinish(ctx->queue);
        if (rc != CL_SUCCESS) {
            if (ev)
                clReleaseEvent(ev);
            return -1.0;
        }
        if (r < 0)
            continue; /* warm-up */
        cl_ulong t0 = 0, t1 = 0;
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
        clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
        clReleaseEvent(ev);
        t[r] = t1 > t0 ? (double)(t1 - t0) * 1e-9 : 0.0;
    }
    qsort(t, TUNE_REPS, sizeof t[0], by_double);
    return t[TUNE_REPS / 2];
}

/* Candidate sizes up to limit: multiples of m (m, 2m, 4m, ...) and the
 * powers of two from 16, each once, in increasing order. */
static size_t candidates(size_t m, size_t limit, size_t *out)
{
    size_t n = 0;
    for (size_t v = m; v <= limit && n < TUNE_MAX_CANDIDATES / 2; v *= 2)
        out[n++] = v;
    for (size_t v = 16; v <= limit && n < TUNE_MAX_CANDIDATES; v *= 2) {
        size_t i = 0;
        while (i < n && out[i] != v)
            i++;
        if (i == n)
            out[n++] = v;
    }
    for (size_t i = 1; i < n; i++) /* insertion sort */
        for (size_t j = i; j > 0 && out[j - 1] > out[j]; j--) {
            size_t x = out[j];
            out[j] = out[j - 1];
            out[j - 1] = x;
        }
    return n;
}

/* Measures the best size for k on the device; 0 when it cannot. */
static size_t measure(mpcl_context *ctx, cl_kernel k, size_t limit, size_t multiple)
{
    cl_int rc;
    const size_t bytes = TUNE_N * sizeof(cl_float);
    if (bytes > ctx->caps.max_alloc_bytes)
        return 0;
    cl_mem x = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, bytes, NULL, &rc);
    cl_mem y = x ? clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, bytes, NULL, &rc) : NULL;
    size_t best = 0;
    if (x && y) {
        float zero = 0.0f, alpha = 0.5f;
        cl_uint n = (cl_uint)TUNE_N;
        rc = clEnqueueFillBuffer(ctx->queue, x, &zero, sizeof zero, 0, bytes, 0, NULL, NULL);
        if (rc == CL_SUCCESS)
            rc = mpcl_kernel_args(k, 4, sizeof x, &x, sizeof y, &y, sizeof n, &n, sizeof alpha,
                                  &alpha);
        size_t cand[TUNE_MAX_CANDIDATES];
        double times[TUNE_MAX_CANDIDATES], fastest = -1.0;
        size_t nc = rc == CL_SUCCESS ? candidates(multiple, limit, cand) : 0;
        for (size_t i = 0; i < nc; i++) {
            times[i] = time_launches(ctx, k, TUNE_N, cand[i]);
            if (times[i] > 0.0 && (fastest < 0.0 || times[i] < fastest))
                fastest = times[i];
        }
        for (size_t i = 0; i < nc && !best; i++) /* the smallest within the slack */
            if (times[i] > 0.0 && times[i] <= fastest * TUNE_SLACK)
                best = cand[i];
    }
    if (x)
        clReleaseMemObject(x);
    if (y)
        clReleaseMemObject(y);
    return best;
}

size_t mpcl_wg_1d(mpcl_context *ctx)
{
    if (ctx->wg_1d_done)
        return ctx->wg_1d;
    ctx->wg_1d_done = 1;
    /* A kernel object of its own: the context's scale_f32 may have its
     * arguments set for a launch that waits on this one. */
    cl_program prog;
    cl_kernel k = NULL;
    cl_int rc = CL_SUCCESS;
    char saved[MPCL_ERR_LEN];
    mpcl_strfmt(saved, sizeof saved, "%s", ctx->err); /* measuring never changes the message */
    if (mpcl_program_get(ctx, "elementwise", mpcl_ctx_variant(ctx), &prog) == MPCL_OK)
        k = clCreateKernel(prog, "scale_f32", &rc);
    mpcl_strfmt(ctx->err, sizeof ctx->err, "%s", saved);
    size_t limit = ctx->caps.max_work_group_size ? (size_t)ctx->caps.max_work_group_size : 1;
    size_t multiple = 1;
    if (k && rc == CL_SUCCESS) {
        size_t kwg = 0;
        if (clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kwg, &kwg,
                                     NULL) == CL_SUCCESS && kwg && kwg < limit)
            limit = kwg;
        multiple = mpcl_wg_multiple(ctx, k);
    }
    if (limit > ctx->max_item[0])
        limit = ctx->max_item[0];
    if (limit > TUNE_MAX_WG)
        limit = TUNE_MAX_WG;
    size_t wg = TUNE_DEFAULT < limit ? TUNE_DEFAULT : limit;
    if (wg >= multiple)
        wg = wg / multiple * multiple;
    ctx->wg_1d_source = "default";
    if (ctx->cache_enabled && k && rc == CL_SUCCESS) {
        size_t got = read_tuned(ctx, limit);
        if (got) {
            wg = got;
            ctx->wg_1d_source = "cached";
        } else if ((got = measure(ctx, k, limit, multiple)) != 0) {
            wg = got;
            ctx->wg_1d_source = "measured";
            write_tuned(ctx, wg);
        }
    }
    if (k)
        clReleaseKernel(k);
    ctx->wg_1d = wg;
    return wg;
}
