/* bench.c — the micro-benchmarks of mpcl_probe(..., bench = 1).
 *
 * What is measured, and how (the method is clpeak's):
 *   bandwidth_gbs  copy_f4 over two buffers of up to 64 MiB; read + write bytes
 *   fp32_gflops    fma_f32: 8 float4 FMA x 4 lanes x 2 flops = 64 flops per item per iteration
 *   fp16_gflops    fma_f16: 8 half2 FMA x 2 lanes x 2 flops = 32 flops per item per iteration,
 *                  only where the probe verified half arithmetic
 *   sgemm_gflops   CLBlastSgemm, row-major n x n x n, 2 n^3 flops, with mpcl's
 *                  CLBlast tuning for the device (tuning.c)
 *   sgemm_untuned_gflops  the same with CLBlast's own parameters (the tuning
 *                  undone for the run, then applied again)
 *   hgemm_gflops   CLBlastHgemm, the same in half
 *   h2d_gbs        blocking clEnqueueWriteBuffer of up to 64 MiB
 *   d2h_gbs        blocking clEnqueueReadBuffer of up to 64 MiB
 *   launch_us      empty_kernel of one work item, enqueue + clFinish round trip
 *   build_cold_ms  mpcl_program_build of "bench" (fp32) from source, cache bypassed
 *   build_warm_ms  the same build loaded from the binary cache
 *
 * Every measurement gets one warm-up run (first-launch compilation, CLBlast's
 * kernel builds, page faults), one calibration run that sets the repetition
 * count so that a measurement takes about TARGET_S, then REPEATS measurements
 * of which the fastest counts. Kernels are timed with the queue's profiling
 * events; transfers, launch latency, GEMM (CLBlast may enqueue several
 * kernels but reports one event) and builds with the monotonic wall clock.
 *
 * A figure that cannot be measured gets ran = 0 and a reason; the run goes on
 * with the others. Only running out of host memory stops it. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#include <clblast_c.h>

#define TARGET_S 0.1                 /* one measurement: about 100 ms of work */
#define REPEATS 3                    /* the best of three measurements counts */
#define MAX_REPS 100000u             /* repetitions per measurement, at most */
#define XFER_BYTES ((size_t)64 << 20) /* copy and transfer size, before clamping */
#define FMA_ITEMS_PER_CU 16384u      /* fma global size = compute units x this */
#define FMA_LAUNCH_S 0.01            /* calibrate fma iterations to ~10 ms a launch */
#define FMA_MAX_ITERS (1u << 22)
#define BUILD_COLD_REPEATS 2
#define BUILD_WARM_REPEATS 3
#define GEMM_MAX_N 65536u

/* ------------------------------------------------------------- helpers */

static void fig_set(mpcl_figure *f, double value)
{
    f->ran = 1;
    f->value = value;
    f->reason[0] = '\0';
}

static void fig_skip(mpcl_figure *f, const char *fmt, ...) MPCL_PRINTF(2, 3);
static void fig_skip(mpcl_figure *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(f->reason, sizeof f->reason, fmt, ap);
    va_end(ap);
    if (n < 0)
        f->reason[0] = '\0';
    f->ran = 0;
    f->value = 0.0;
}

/* The reason is the first line of the context's last error (a build error
 * carries its log on the lines after). */
static void fig_skip_ctx(mpcl_figure *f, const mpcl_context *ctx)
{
    size_t len = strcspn(ctx->err, "\n");
    fig_skip(f, "%.*s", (int)len, ctx->err);
}

static void fig_skip_cl(mpcl_figure *f, const char *op, cl_int rc)
{
    fig_skip(f, "%s failed: %s", op, mpcl_cl_error_name(rc));
}

/* Repetitions that make a measurement last about TARGET_S, given one run. */
static unsigned reps_for(double one_run_s)
{
    if (one_run_s <= 0.0)
        return MAX_REPS;
    double r = ceil(TARGET_S / one_run_s);
    if (r < 1.0)
        return 1;
    return r > (double)MAX_REPS ? MAX_REPS : (unsigned)r;
}

/* Deterministic values in [lo, hi): inputs that nothing can fold away. */
static uint64_t lcg_next(uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return *state >> 40; /* 24 bits */
}

static void fill_floats(float *dst, size_t n, float lo, float hi, uint64_t seed)
{
    uint64_t s = seed ^ 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < n; i++)
        dst[i] = lo + (hi - lo) * (float)lcg_next(&s) / 16777216.0f;
}

static cl_mem make_buffer(mpcl_context *ctx, cl_mem_flags flags, size_t bytes, cl_int *rc)
{
    cl_mem m = clCreateBuffer(ctx->cl, flags, bytes, NULL, rc);
    if (m && *rc != CL_SUCCESS) {
        clReleaseMemObject(m);
        m = NULL;
    }
    if (!m && *rc == CL_SUCCESS)
        *rc = CL_OUT_OF_RESOURCES;
    return m;
}

static void release_mem(cl_mem *m)
{
    if (*m)
        clReleaseMemObject(*m);
    *m = NULL;
}

/* ------------------------------------------------- calibrated measuring */

/* One timed operation: runs it `reps` times and says how long they took.
 * On failure returns the OpenCL (or CLBlast) code and names the call in *op. */
typedef cl_int (*timed_fn)(void *arg, unsigned reps, double *seconds, const char **op);

/* Warm-up (unless the caller has warmed up already), calibration, then the
 * best of REPEATS: *per_rep receives the fastest time of one repetition. */
static cl_int measure(timed_fn fn, void *arg, int warmed, double *per_rep, const char **op)
{
    double t = 0.0;
    cl_int rc = warmed ? CL_SUCCESS : fn(arg, 1, &t, op); /* warm-up */
    if (rc == CL_SUCCESS)
        rc = fn(arg, 1, &t, op); /* calibration */
    if (rc != CL_SUCCESS)
        return rc;
    unsigned reps = reps_for(t);
    double best = INFINITY;
    for (int i = 0; i < REPEATS; i++) {
        rc = fn(arg, reps, &t, op);
        if (rc != CL_SUCCESS)
            return rc;
        if (t / reps < best)
            best = t / reps;
    }
    *per_rep = best;
    return CL_SUCCESS;
}

/* A kernel launched over `global` items, timed on the device. */
typedef struct {
    mpcl_context *ctx;
    cl_kernel kernel;
    size_t global;
} kernel_run;

/* Enqueues `reps` launches back to back and takes the device time from the
 * start of the first to the end of the last (profiling events). */
static cl_int run_kernel(void *p, unsigned reps, double *seconds, const char **op)
{
    kernel_run *k = p;
    cl_event first = NULL, last = NULL;
    cl_int rc = CL_SUCCESS;
    *op = "clEnqueueNDRangeKernel";
    for (unsigned r = 0; r < reps && rc == CL_SUCCESS; r++) {
        cl_event *ev = r == 0 ? &first : r == reps - 1 ? &last : NULL;
        size_t slot;
        rc = clEnqueueNDRangeKernel(k->ctx->queue, k->kernel, 1, NULL, &k->global,
                                    mpcl_cap_local_1d(k->ctx, k->kernel, k->global, &slot), 0, NULL,
                                    ev);
    }
    cl_int frc = clFinish(k->ctx->queue);
    if (rc == CL_SUCCESS && frc != CL_SUCCESS) {
        rc = frc;
        *op = "clFinish";
    }
    cl_ulong t0 = 0, t1 = 0;
    if (rc == CL_SUCCESS) {
        *op = "clGetEventProfilingInfo";
        rc = clGetEventProfilingInfo(first, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
        if (rc == CL_SUCCESS)
            rc = clGetEventProfilingInfo(last ? last : first, CL_PROFILING_COMMAND_END, sizeof t1,
                                         &t1, NULL);
    }
    if (rc == CL_SUCCESS)
        *seconds = t1 > t0 ? (double)(t1 - t0) * 1e-9 : 0.0;
    if (first)
        clReleaseEvent(first);
    if (last)
        clReleaseEvent(last);
    return rc;
}

/* ------------------------------------------------------- launch latency */

/* One work item of an empty kernel, each launch waited for: the time from
 * enqueue to completion as the host sees it (wall clock). */
static cl_int run_roundtrips(void *p, unsigned reps, double *seconds, const char **op)
{
    kernel_run *k = p;
    double t0 = mpcl_now_s();
    for (unsigned r = 0; r < reps; r++) {
        size_t slot;
        cl_int rc = clEnqueueNDRangeKernel(k->ctx->queue, k->kernel, 1, NULL, &k->global,
                                           mpcl_cap_local_1d(k->ctx, k->kernel, k->global, &slot),
                                           0, NULL, NULL);
        if (rc != CL_SUCCESS) {
            *op = "clEnqueueNDRangeKernel(empty_kernel)";
            clFinish(k->ctx->queue);
            return rc;
        }
        rc = clFinish(k->ctx->queue);
        if (rc != CL_SUCCESS) {
            *op = "clFinish(empty_kernel)";
            return rc;
        }
    }
    *seconds = mpcl_now_s() - t0;
    return CL_SUCCESS;
}

static void bench_launch(mpcl_context *ctx, mpcl_figure *f)
{
    cl_kernel k = NULL;
    cl_mem buf = NULL;
    cl_int rc;
    const char *op = "";
    if (mpcl_kernel_create(ctx, "bench", MPCL_VARIANT_FP32, "empty_kernel", &k) != MPCL_OK) {
        fig_skip_ctx(f, ctx);
        goto done;
    }
    buf = make_buffer(ctx, CL_MEM_READ_WRITE, 64, &rc);
    if (!buf) {
        fig_skip_cl(f, "clCreateBuffer(64 bytes)", rc);
        goto done;
    }
    rc = clSetKernelArg(k, 0, sizeof buf, &buf);
    if (rc != CL_SUCCESS) {
        fig_skip_cl(f, "clSetKernelArg(empty_kernel)", rc);
        goto done;
    }
    kernel_run run = {ctx, k, 1};
    double t;
    rc = measure(run_roundtrips, &run, 0, &t, &op);
    if (rc != CL_SUCCESS)
        fig_skip_cl(f, op, rc);
    else
        fig_set(f, t * 1e6);
done:
    release_mem(&buf);
    if (k)
        clReleaseKernel(k);
}

/* ----------------------------------------------------------- bandwidth */

/* The copy and transfer size: 64 MiB, or less where the device allows less
 * (one allocation, and two buffers within a quarter of global memory). */
static size_t xfer_bytes(const mpcl_caps *caps)
{
    uint64_t b = XFER_BYTES;
    if (caps->max_alloc_bytes && b > caps->max_alloc_bytes)
        b = caps->max_alloc_bytes;
    if (caps->global_mem_bytes && b > caps->global_mem_bytes / 8)
        b = caps->global_mem_bytes / 8;
    return (size_t)(b & ~(uint64_t)15); /* whole float4s */
}

/* Device-to-device copy: each launch reads and writes `bytes`. */
static void bench_bandwidth(mpcl_context *ctx, const void *host, size_t bytes, mpcl_figure *f)
{
    cl_kernel k = NULL;
    cl_mem in = NULL, out = NULL;
    cl_int rc;
    const char *op = "";
    if (bytes < 16) {
        fig_skip(f, "the device's allocation limit leaves no room for a copy buffer");
        return;
    }
    if (mpcl_kernel_create(ctx, "bench", MPCL_VARIANT_FP32, "copy_f4", &k) != MPCL_OK) {
        fig_skip_ctx(f, ctx);
        goto done;
    }
    in = make_buffer(ctx, CL_MEM_READ_ONLY, bytes, &rc);
    if (in)
        out = make_buffer(ctx, CL_MEM_WRITE_ONLY, bytes, &rc);
    if (!out) {
        fig_skip(f, "clCreateBuffer(2 x %zu MiB) failed: %s", bytes >> 20, mpcl_cl_error_name(rc));
        goto done;
    }
    rc = clEnqueueWriteBuffer(ctx->queue, in, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
    if (rc != CL_SUCCESS) {
        fig_skip_cl(f, "clEnqueueWriteBuffer(copy input)", rc);
        goto done;
    }
    rc = clSetKernelArg(k, 0, sizeof in, &in);
    if (rc == CL_SUCCESS)
        rc = clSetKernelArg(k, 1, sizeof out, &out);
    if (rc != CL_SUCCESS) {
        fig_skip_cl(f, "clSetKernelArg(copy_f4)", rc);
        goto done;
    }
    kernel_run run = {ctx, k, bytes / 16};
    double t;
    rc = measure(run_kernel, &run, 0, &t, &op);
    if (rc != CL_SUCCESS)
        fig_skip(f, "%s(copy_f4) failed: %s", op, mpcl_cl_error_name(rc));
    else if (t <= 0.0)
        fig_skip(f, "copy_f4 took no measurable device time (profiling timer resolution)");
    else
        fig_set(f, 2.0 * (double)bytes / t * 1e-9);
done:
    release_mem(&in);
    release_mem(&out);
    if (k)
        clReleaseKernel(k);
}

/* ----------------------------------------------------------- transfers */

typedef struct {
    mpcl_context *ctx;
    cl_mem buf;
    void *host;
    size_t bytes;
    int to_device;
} transfer_run;

/* Blocking transfers, wall clock: what a host waiting on the data sees. */
static cl_int run_transfer(void *p, unsigned reps, double *seconds, const char **op)
{
    transfer_run *x = p;
    double t0 = mpcl_now_s();
    for (unsigned r = 0; r < reps; r++) {
        cl_int rc = x->to_device ? clEnqueueWriteBuffer(x->ctx->queue, x->buf, CL_TRUE, 0, x->bytes,
                                                        x->host, 0, NULL, NULL)
                                 : clEnqueueReadBuffer(x->ctx->queue, x->buf, CL_TRUE, 0, x->bytes,
                                                       x->host, 0, NULL, NULL);
        if (rc != CL_SUCCESS) {
            *op = x->to_device ? "clEnqueueWriteBuffer" : "clEnqueueReadBuffer";
            return rc;
        }
    }
    *seconds = mpcl_now_s() - t0;
    return CL_SUCCESS;
}

static void bench_transfers(mpcl_context *ctx, void *host, size_t bytes, mpcl_figure *h2d,
                            mpcl_figure *d2h)
{
    cl_int rc;
    if (bytes < 16) {
        fig_skip(h2d, "the device's allocation limit leaves no room for a transfer buffer");
        fig_skip(d2h, "%s", h2d->reason);
        return;
    }
    cl_mem buf = make_buffer(ctx, CL_MEM_READ_WRITE, bytes, &rc);
    if (!buf) {
        fig_skip(h2d, "clCreateBuffer(%zu MiB) failed: %s", bytes >> 20, mpcl_cl_error_name(rc));
        fig_skip(d2h, "%s", h2d->reason);
        return;
    }
    mpcl_figure *figs[2] = {h2d, d2h};
    for (int dir = 0; dir < 2; dir++) {
        transfer_run run = {ctx, buf, host, bytes, dir == 0};
        const char *op = "";
        double t;
        rc = measure(run_transfer, &run, 0, &t, &op);
        if (rc != CL_SUCCESS)
            fig_skip(figs[dir], "%s(%zu MiB) failed: %s", op, bytes >> 20, mpcl_cl_error_name(rc));
        else if (t <= 0.0)
            fig_skip(figs[dir], "the transfer took no measurable time (clock resolution)");
        else
            fig_set(figs[dir], (double)bytes / t * 1e-9);
    }
    release_mem(&buf);
}

/* ---------------------------------------------------------- FMA chains */

/* Raises the iteration count until one launch takes about FMA_LAUNCH_S, so
 * that the measurement is of arithmetic, not of launch overhead. The first
 * launch doubles as warm-up. */
static cl_int calibrate_iters(kernel_run *run, cl_uint *iters, const char **op)
{
    cl_uint it = 64;
    double t = 0.0;
    cl_int rc;
    for (int first = 1;; first = 0) {
        *op = "clSetKernelArg(iters)";
        rc = clSetKernelArg(run->kernel, 1, sizeof it, &it);
        if (rc == CL_SUCCESS)
            rc = run_kernel(run, 1, &t, op);
        if (rc != CL_SUCCESS)
            return rc;
        if (first)
            continue; /* warm-up: first-launch compilation is not arithmetic */
        if (t >= FMA_LAUNCH_S || it >= FMA_MAX_ITERS)
            break;
        double scale = t > 0.0 ? 1.2 * FMA_LAUNCH_S / t : 16.0;
        scale = scale < 2.0 ? 2.0 : scale > 16.0 ? 16.0 : scale;
        double next = (double)it * scale;
        it = next > (double)FMA_MAX_ITERS ? FMA_MAX_ITERS : (cl_uint)next;
    }
    *iters = it;
    return CL_SUCCESS;
}

/* fma_f32 or fma_f16 over compute units x FMA_ITEMS_PER_CU items: 64 flops
 * per item per iteration in fma_f32, 32 in fma_f16. Returns MPCL_ERR_NOMEM only. */
static mpcl_status bench_fma(mpcl_context *ctx, const mpcl_caps *caps, int half, mpcl_figure *f)
{
    const char *name = half ? "fma_f16" : "fma_f32";
    mpcl_variant variant = half ? MPCL_VARIANT_FP16 : MPCL_VARIANT_FP32;
    size_t items = (size_t)(caps->compute_units ? caps->compute_units : 1) * FMA_ITEMS_PER_CU;
    size_t elem = half ? sizeof(cl_half) : sizeof(float);
    mpcl_status s = MPCL_OK;
    cl_kernel k = NULL;
    cl_mem data = NULL;
    cl_int rc;
    const char *op = "";

    /* Seeds in [0.1, 0.9): every chain a = a*y + x converges, no inf, no subnormals. */
    float *seeds = malloc(items * sizeof *seeds);
    cl_half *hseeds = half ? malloc(items * sizeof *hseeds) : NULL;
    if (!seeds || (half && !hseeds)) {
        s = mpcl_set_error(ctx, MPCL_ERR_NOMEM, "probe bench: out of host memory for %s seeds (%zu items)",
                           name, items);
        goto done;
    }
    fill_floats(seeds, items, 0.1f, 0.9f, ctx->seed);
    if (half)
        mpcl_half_from_float_array(hseeds, seeds, items);

    if (mpcl_kernel_create(ctx, "bench", variant, name, &k) != MPCL_OK) {
        fig_skip_ctx(f, ctx);
        goto done;
    }
    data = make_buffer(ctx, CL_MEM_READ_WRITE, items * elem, &rc);
    if (!data) {
        fig_skip(f, "clCreateBuffer(%s, %zu bytes) failed: %s", name, items * elem,
                 mpcl_cl_error_name(rc));
        goto done;
    }
    rc = clEnqueueWriteBuffer(ctx->queue, data, CL_TRUE, 0, items * elem,
                              half ? (const void *)hseeds : (const void *)seeds, 0, NULL, NULL);
    if (rc != CL_SUCCESS) {
        fig_skip(f, "clEnqueueWriteBuffer(%s seeds) failed: %s", name, mpcl_cl_error_name(rc));
        goto done;
    }
    rc = clSetKernelArg(k, 0, sizeof data, &data);
    if (rc != CL_SUCCESS) {
        fig_skip(f, "clSetKernelArg(%s) failed: %s", name, mpcl_cl_error_name(rc));
        goto done;
    }
    kernel_run run = {ctx, k, items};
    cl_uint iters = 0;
    double t = 0.0;
    rc = calibrate_iters(&run, &iters, &op);
    if (rc == CL_SUCCESS)
        rc = measure(run_kernel, &run, 1, &t, &op); /* calibrate_iters warmed up */
    if (rc != CL_SUCCESS)
        fig_skip(f, "%s(%s) failed: %s", op, name, mpcl_cl_error_name(rc));
    else if (t <= 0.0)
        fig_skip(f, "%s took no measurable device time (profiling timer resolution)", name);
    else
        fig_set(f, (half ? 32.0 : 64.0) * (double)items * (double)iters / t * 1e-9);
done:
    release_mem(&data);
    if (k)
        clReleaseKernel(k);
    free(seeds);
    free(hseeds);
    return s;
}

static int half_arith_verified(const mpcl_caps *caps)
{
    return (caps->fp16_arith == MPCL_FP16_DECLARED_WORKS ||
            caps->fp16_arith == MPCL_FP16_UNDECLARED_WORKS) &&
           caps->fp16_arith_check.passed;
}

/* ---------------------------------------------------------------- GEMM */

typedef struct {
    mpcl_context *ctx;
    int half;
    size_t n;
    cl_mem a, b, c;
} gemm_run;

/* C = A B, row-major n x n x n, queued `reps` times, then waited for (wall
 * clock). Returns CLBlast's status: OpenCL codes are a subset of it. */
static cl_int run_gemm(void *p, unsigned reps, double *seconds, const char **op)
{
    gemm_run *g = p;
    size_t n = g->n;
    cl_command_queue q = g->ctx->queue;
    double t0 = mpcl_now_s();
    for (unsigned r = 0; r < reps; r++) {
        *op = g->half ? "CLBlastHgemm" : "CLBlastSgemm";
        CLBlastStatusCode st =
            (CLBlastStatusCode)mpcl_clblast_gemm(g->ctx, g->half, 0, 0, n, n, n, 1, g->a, g->b, g->c, NULL);
        if (st != CLBlastSuccess) {
            clFinish(q);
            return (cl_int)st;
        }
    }
    cl_int rc = clFinish(q);
    if (rc != CL_SUCCESS) {
        *op = "clFinish(GEMM)";
        return rc;
    }
    *seconds = mpcl_now_s() - t0;
    return CL_SUCCESS;
}

/* A timing of a GEMM that computes garbage is no figure: compare a few
 * entries of C with a double-precision product of the same inputs.
 * Returns 1 when they agree; otherwise fills the figure's reason. */
static int gemm_spot_check(gemm_run *g, const float *a, const float *b, mpcl_figure *f)
{
    const size_t n = g->n;
    const size_t at[4][2] = {{0, 0}, {n - 1, n - 1}, {n / 2, n / 3}, {n / 3, n - 1}};
    const double rel = g->half ? 5e-2 : 1e-3; /* Hgemm accumulates in half */
    for (int p = 0; p < 4; p++) {
        size_t i = at[p][0], j = at[p][1];
        double want = 0.0;
        for (size_t kk = 0; kk < n; kk++)
            want += (double)a[i * n + kk] * (double)b[kk * n + j];
        double got;
        cl_int rc;
        if (g->half) {
            cl_half h = 0;
            rc = clEnqueueReadBuffer(g->ctx->queue, g->c, CL_TRUE, (i * n + j) * sizeof h, sizeof h,
                                     &h, 0, NULL, NULL);
            got = mpcl_half_to_float(h);
        } else {
            float v = 0.0f;
            rc = clEnqueueReadBuffer(g->ctx->queue, g->c, CL_TRUE, (i * n + j) * sizeof v, sizeof v,
                                     &v, 0, NULL, NULL);
            got = v;
        }
        if (rc != CL_SUCCESS) {
            fig_skip_cl(f, "clEnqueueReadBuffer(GEMM result)", rc);
            return 0;
        }
        /* Inputs are positive, so |want| is also the sum of |a||b|. */
        if (!(fabs(got - want) <= rel * want + 1e-6)) {
            fig_skip(f, "%s returned a wrong result, so it was not timed: C[%zu][%zu] = %g, expected %g",
                     g->half ? "CLBlastHgemm" : "CLBlastSgemm", i, j, got, want);
            return 0;
        }
    }
    return 1;
}

/* CLBlast Sgemm (half = 0) or Hgemm (half = 1) at n x n x n: 2 n^3 flops.
 * Returns MPCL_ERR_NOMEM only. */
static mpcl_status bench_gemm(mpcl_context *ctx, const mpcl_caps *caps, unsigned n, int half,
                              mpcl_figure *f)
{
    const char *name = half ? "CLBlastHgemm" : "CLBlastSgemm";
    const size_t elem = half ? sizeof(cl_half) : sizeof(float);
    mpcl_status s = MPCL_OK;
    float *a = NULL, *b = NULL;
    cl_half *ha = NULL, *hb = NULL;
    gemm_run g = {ctx, half, n, NULL, NULL, NULL};
    cl_int rc;
    const char *op = "";

    if (n == 0 || n > GEMM_MAX_N) {
        fig_skip(f, "GEMM size %u is outside 1..%u", n, GEMM_MAX_N);
        return MPCL_OK;
    }
    const uint64_t count = (uint64_t)n * n, bytes = count * elem;
    if ((caps->max_alloc_bytes && bytes > caps->max_alloc_bytes) ||
        (caps->global_mem_bytes && 3 * bytes > caps->global_mem_bytes)) {
        fig_skip(f, "a %u x %u matrix (%llu MiB) does not fit the device's allocation limits",
                 n, n, (unsigned long long)(bytes >> 20));
        return MPCL_OK;
    }
    if (count > SIZE_MAX / sizeof(float)) {
        fig_skip(f, "a %u x %u matrix does not fit this host's address space", n, n);
        return MPCL_OK;
    }

    /* Inputs in [0, 1): C's entries are about n/4, well inside half's range. */
    a = malloc((size_t)count * sizeof *a);
    b = malloc((size_t)count * sizeof *b);
    if (half) {
        ha = malloc((size_t)count * sizeof *ha);
        hb = malloc((size_t)count * sizeof *hb);
    }
    if (!a || !b || (half && (!ha || !hb))) {
        s = mpcl_set_error(ctx, MPCL_ERR_NOMEM, "probe bench: out of host memory for %s inputs (%u x %u)",
                           name, n, n);
        goto done;
    }
    fill_floats(a, (size_t)count, 0.0f, 1.0f, ctx->seed + 1);
    fill_floats(b, (size_t)count, 0.0f, 1.0f, ctx->seed + 2);
    if (half) {
        /* The host reference uses the values the device sees. */
        mpcl_half_from_float_array(ha, a, (size_t)count);
        mpcl_half_from_float_array(hb, b, (size_t)count);
        mpcl_half_to_float_array(a, ha, (size_t)count);
        mpcl_half_to_float_array(b, hb, (size_t)count);
    }
    const void *src_a = half ? (const void *)ha : (const void *)a;
    const void *src_b = half ? (const void *)hb : (const void *)b;

    g.a = make_buffer(ctx, CL_MEM_READ_ONLY, (size_t)bytes, &rc);
    if (g.a)
        g.b = make_buffer(ctx, CL_MEM_READ_ONLY, (size_t)bytes, &rc);
    if (g.b)
        g.c = make_buffer(ctx, CL_MEM_READ_WRITE, (size_t)bytes, &rc);
    if (!g.c) {
        fig_skip(f, "clCreateBuffer(3 x %llu MiB for %s) failed: %s",
                 (unsigned long long)(bytes >> 20), name, mpcl_cl_error_name(rc));
        goto done;
    }
    rc = clEnqueueWriteBuffer(ctx->queue, g.a, CL_TRUE, 0, (size_t)bytes, src_a, 0, NULL, NULL);
    if (rc == CL_SUCCESS)
        rc = clEnqueueWriteBuffer(ctx->queue, g.b, CL_TRUE, 0, (size_t)bytes, src_b, 0, NULL, NULL);
    if (rc != CL_SUCCESS) {
        fig_skip(f, "clEnqueueWriteBuffer(%s inputs) failed: %s", name, mpcl_cl_error_name(rc));
        goto done;
    }
    /* Warm-up (CLBlast builds its kernels on first use) and correctness. */
    double t = 0.0;
    rc = run_gemm(&g, 1, &t, &op);
    if (rc != CL_SUCCESS) {
        fig_skip(f, "%s failed: %s", op, mpcl_clblast_status_name(rc));
        goto done;
    }
    if (!gemm_spot_check(&g, a, b, f))
        goto done;
    rc = measure(run_gemm, &g, 1, &t, &op);
    if (rc != CL_SUCCESS)
        fig_skip(f, "%s failed: %s", op, mpcl_clblast_status_name(rc));
    else if (t <= 0.0)
        fig_skip(f, "%s took no measurable time (clock resolution)", name);
    else
        fig_set(f, 2.0 * (double)n * (double)n * (double)n / t * 1e-9);
done:
    release_mem(&g.a);
    release_mem(&g.b);
    release_mem(&g.c);
    free(a);
    free(b);
    free(ha);
    free(hb);
    return s;
}

/* Sgemm with CLBlast's own parameters: tuning.c's override for the device
 * is undone for the run and applied (and verified) again afterwards. On a
 * device without an override the tuned figure is already that. */
static mpcl_status bench_sgemm_untuned(mpcl_context *ctx, const mpcl_caps *caps, unsigned n,
                                       const mpcl_figure *tuned, mpcl_figure *f)
{
    if (!mpcl_tuning_has_override(ctx)) {
        *f = *tuned;
        if (f->ran)
            mpcl_strfmt(f->reason, sizeof f->reason,
                        "no CLBlast tuning for this device: the run of sgemm_gflops");
        return MPCL_OK;
    }
    if (mpcl_tuning_set(ctx, 0) != MPCL_OK) {
        fig_skip_ctx(f, ctx);
        return MPCL_OK;
    }
    mpcl_status s = bench_gemm(ctx, caps, n, 0, f);
    if (mpcl_tuning_set(ctx, 1) != MPCL_OK && s == MPCL_OK)
        fig_skip_ctx(f, ctx); /* the tuning could not be put back: tuning_note says so */
    return s;
}

/* -------------------------------------------------------------- builds */

/* Best of `repeats` builds of the "bench" program (fp32), in milliseconds.
 * Returns 0 and fills the figure's reason on a build failure. */
static int time_builds(mpcl_context *ctx, int use_cache, int repeats, double *best_ms,
                       mpcl_figure *f)
{
    double best = INFINITY;
    for (int i = 0; i < repeats; i++) {
        cl_program p = NULL;
        double t0 = mpcl_now_s();
        mpcl_status s = mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP32, use_cache, &p);
        double t = mpcl_now_s() - t0;
        if (p)
            clReleaseProgram(p);
        if (s != MPCL_OK) {
            fig_skip_ctx(f, ctx);
            return 0;
        }
        if (t < best)
            best = t;
    }
    *best_ms = best * 1e3;
    return 1;
}

/* Cold: a source build that bypasses mpcl's cache (a driver may still keep
 * its own, e.g. PoCL's kernel cache). Warm: the same program loaded from
 * mpcl's binary cache, after making sure the entry exists (even on a device
 * where mpcl does not store binaries because fetching them costs more). */
static void bench_builds(mpcl_context *ctx, mpcl_figure *cold, mpcl_figure *warm)
{
    double ms;
    if (time_builds(ctx, 0, BUILD_COLD_REPEATS, &ms, cold))
        fig_set(cold, ms);

    if (!ctx->cache_enabled) {
        fig_skip(warm, "binary cache disabled (MPCL_NO_CACHE or no cache directory)");
        return;
    }
    /* stored whatever the device's verdict on storing binaries (program.c):
     * the figure says what loading one costs, next to the cold build */
    int store = ctx->store_binaries;
    ctx->store_binaries = 1;
    int made = time_builds(ctx, 1, 1, &ms, warm); /* creates the entry when missing */
    ctx->store_binaries = store;
    if (!made)
        return;
    unsigned hits = ctx->cache.hits;
    if (!time_builds(ctx, 1, BUILD_WARM_REPEATS, &ms, warm))
        return;
    if (ctx->cache.hits != hits + BUILD_WARM_REPEATS)
        fig_skip(warm, "the binary cache entry could not be written or loaded (cache directory %s)",
                 ctx->cache_dir);
    else
        fig_set(warm, ms);
}

/* ----------------------------------------------------------- the run */

static void mark_all(mpcl_caps *caps, const char *reason)
{
    mpcl_figure *all[] = {&caps->bandwidth_gbs, &caps->fp32_gflops,  &caps->fp16_gflops,
                          &caps->sgemm_gflops,  &caps->sgemm_untuned_gflops,
                          &caps->hgemm_gflops,  &caps->h2d_gbs,
                          &caps->d2h_gbs,       &caps->launch_us,    &caps->build_cold_ms,
                          &caps->build_warm_ms};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        fig_skip(all[i], "%s", reason);
}

mpcl_status mpcl_probe_bench(mpcl_context *ctx, unsigned gemm_n, mpcl_caps *caps)
{
    if (!ctx || !caps)
        return MPCL_ERR_ARGUMENT;
    if (gemm_n == 0)
        gemm_n = 1024;
    caps->bench_ran = 1;
    caps->gemm_n = gemm_n;
    mark_all(caps, "not measured: the benchmark run stopped early (out of host memory)");

    /* A figure that fails leaves its reason in the figure; the context's
     * message keeps saying what it said before, unless the run fails. */
    char *saved_err = malloc(sizeof ctx->err);
    size_t bytes = xfer_bytes(caps);
    void *host = malloc(bytes ? bytes : 1);
    if (!saved_err || !host) {
        free(saved_err);
        free(host);
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "probe bench: out of host memory for a %zu MiB transfer buffer",
                              bytes >> 20);
    }
    memcpy(saved_err, ctx->err, sizeof ctx->err);
    fill_floats(host, bytes / sizeof(float), 0.0f, 1.0f, ctx->seed);

    mpcl_status s = MPCL_OK;
    clFinish(ctx->queue);
    bench_launch(ctx, &caps->launch_us);
    bench_bandwidth(ctx, host, bytes, &caps->bandwidth_gbs);
    bench_transfers(ctx, host, bytes, &caps->h2d_gbs, &caps->d2h_gbs);
    free(host);

    s = bench_fma(ctx, caps, 0, &caps->fp32_gflops);
    if (s == MPCL_OK) {
        if (half_arith_verified(caps))
            s = bench_fma(ctx, caps, 1, &caps->fp16_gflops);
        else
            fig_skip(&caps->fp16_gflops, "half arithmetic not verified on this device (%s%s)",
                     mpcl_fp16_arith_name(caps->fp16_arith),
                     caps->fp16_arith == MPCL_FP16_DECLARED_WORKS ||
                             caps->fp16_arith == MPCL_FP16_UNDECLARED_WORKS
                         ? ", but the check did not pass"
                         : "");
    }
    if (s == MPCL_OK)
        s = bench_gemm(ctx, caps, gemm_n, 0, &caps->sgemm_gflops);
    if (s == MPCL_OK)
        s = bench_sgemm_untuned(ctx, caps, gemm_n, &caps->sgemm_gflops, &caps->sgemm_untuned_gflops);
    if (s == MPCL_OK && !caps->ext_fp16)
        fig_skip(&caps->hgemm_gflops, "not run: the device does not declare cl_khr_fp16, "
                                      "without which CLBlast refuses half (CLBlastNoHalfPrecision)");
    else if (s == MPCL_OK && !half_arith_verified(caps))
        fig_skip(&caps->hgemm_gflops, "not run: half arithmetic not verified on this device (%s)",
                 mpcl_fp16_arith_name(caps->fp16_arith));
    else if (s == MPCL_OK)
        s = bench_gemm(ctx, caps, gemm_n, 1, &caps->hgemm_gflops);
    if (s == MPCL_OK)
        bench_builds(ctx, &caps->build_cold_ms, &caps->build_warm_ms);

    if (s == MPCL_OK)
        memcpy(ctx->err, saved_err, sizeof ctx->err);
    free(saved_err);
    return s;
}

/* ------------------------------------------------ mpcl bench gemm */

#define GB_DEFAULT_REPEATS 5
#define GB_DEFAULT_MIN_REPEAT_S 0.05
#define GB_MAX_CALLS 10000u
#define GB_FULL_CHECK_MACS ((uint64_t)1 << 26) /* check every entry of C up to this m n k */
#define GB_CHECK_ROWS 32                        /* else this many rows, spread over C */

void mpcl_gemm_bench_options_init(mpcl_gemm_bench_options *opt)
{
    if (!opt)
        return;
    memset(opt, 0, sizeof *opt);
    opt->tuned = 1;
    opt->repeats = GB_DEFAULT_REPEATS;
    opt->min_repeat_s = GB_DEFAULT_MIN_REPEAT_S;
}

typedef struct {
    mpcl_context *ctx;
    const mpcl_gemm_bench_options *o;
    cl_mem a, b, c;
} gb_run;

static CLBlastStatusCode gb_call(const gb_run *g)
{
    const mpcl_gemm_bench_options *o = g->o;
    if (o->routed) /* a failure is named by mpcl_last_error */
        return mpcl_gemm_raw(g->ctx, "mpcl_gemm_bench", MPCL_F32, o->trans_a, o->trans_b, o->m, o->n,
                             o->k, 1.0f, g->a, 0, o->trans_a ? o->m : o->k, g->b, 0,
                             o->trans_b ? o->k : o->n, 0.0f, g->c, 0, o->n) == MPCL_OK
                   ? CLBlastSuccess
                   : CLBlastUnknownError;
    return (CLBlastStatusCode)mpcl_clblast_gemm(g->ctx, o->half, o->trans_a, o->trans_b, o->m, o->n,
                                                o->k, 1, g->a, g->b, g->c, NULL);
}

/* `calls` calls queued back to back, then waited for: seconds per call. */
static mpcl_status gb_time(gb_run *g, unsigned calls, double *per_call, mpcl_gemm_bench_result *out)
{
    const char *name = g->o->half ? "CLBlastHgemm" : "CLBlastSgemm";
    double t0 = mpcl_now_s();
    for (unsigned i = 0; i < calls; i++) {
        CLBlastStatusCode st = gb_call(g);
        if (st != CLBlastSuccess && g->o->routed) {
            mpcl_strfmt(out->reason, sizeof out->reason, "%s", mpcl_last_error(g->ctx));
            return MPCL_ERR_CLBLAST;
        }
        if (st != CLBlastSuccess) {
            clFinish(g->ctx->queue);
            mpcl_strfmt(out->reason, sizeof out->reason, "%s %zux%zux%zu failed: %s (%d)", name,
                        g->o->m, g->o->n, g->o->k, mpcl_clblast_status_name((int)st), (int)st);
            return MPCL_ERR_CLBLAST;
        }
    }
    cl_int rc = clFinish(g->ctx->queue);
    if (rc != CL_SUCCESS) {
        mpcl_strfmt(out->reason, sizeof out->reason, "clFinish after %s: %s", name,
                    mpcl_cl_error_name(rc));
        return MPCL_ERR_OPENCL;
    }
    *per_call = (mpcl_now_s() - t0) / calls;
    return MPCL_OK;
}

/* Host reference on the entries of rows [r0, r1) against the device's C. */
static int gb_check_rows(const mpcl_gemm_bench_options *o, const float *a, const float *b,
                         const float *c, size_t r0, size_t r1, double ulp, mpcl_gemm_bench_result *out)
{
    for (size_t i = r0; i < r1; i++)
        for (size_t j = 0; j < o->n; j++) {
            double s = 0.0, mag = 0.0;
            for (size_t p = 0; p < o->k; p++) {
                double x = (double)(o->trans_a ? a[p * o->m + i] : a[i * o->k + p]) *
                           (double)(o->trans_b ? b[j * o->k + p] : b[p * o->n + j]);
                s += x;
                mag += fabs(x);
            }
            double err = fabs((double)c[i * o->n + j] - s);
            double tol = out->exact ? 0.0 : (double)(o->k + 2) * ulp * mag;
            if (err > out->max_abs_err)
                out->max_abs_err = err;
            out->checked++;
            if (!(err <= tol)) {
                mpcl_strfmt(out->reason, sizeof out->reason,
                            "%s %zux%zux%zu returned a wrong product, so it was not timed: "
                            "C[%zu][%zu] = %g, %s %g", o->half ? "CLBlastHgemm" : "CLBlastSgemm",
                            o->m, o->n, o->k, i, j, (double)c[i * o->n + j],
                            out->exact ? "exactly" : "reference", s);
                return 0;
            }
        }
    return 1;
}

/* Small integers (float: -4..4, every partial sum exact while 16 k < 2^24;
 * half: -1..1, exact while k <= 2048, since half holds every integer up to
 * 2048), as the device holds them. */
static void gb_fill(float *v, uint16_t *h, size_t n, int half, uint64_t seed)
{
    uint64_t s = seed ^ 0x2545f4914f6cdd1dULL;
    for (size_t i = 0; i < n; i++) {
        uint64_t r = lcg_next(&s);
        v[i] = half ? (float)((int)(r % 3) - 1) : (float)((int)(r % 9) - 4);
        if (half)
            h[i] = mpcl_half_from_float(v[i]);
    }
}

static int gb_cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static mpcl_status gb_fail(mpcl_context *ctx, mpcl_gemm_bench_result *out, mpcl_status s)
{
    out->ran = 0;
    mpcl_set_error(ctx, s, "mpcl_gemm_bench: %s", out->reason);
    return s;
}

/* The run itself, with the tuning state already set. */
static mpcl_status gb_measure(mpcl_context *ctx, const mpcl_gemm_bench_options *o,
                              mpcl_gemm_bench_result *out)
{
    const size_t es = o->half ? sizeof(uint16_t) : sizeof(float);
    const size_t na = o->m * o->k, nb = o->k * o->n, nc = o->m * o->n;
    float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c = malloc(nc * sizeof *c);
    uint16_t *ha = o->half ? malloc(na * es) : NULL, *hb = o->half ? malloc(nb * es) : NULL;
    uint16_t *hc = o->half ? malloc(nc * es) : NULL;
    double *times = malloc((o->repeats ? o->repeats : 1) * sizeof *times);
    gb_run g = {ctx, o, NULL, NULL, NULL};
    mpcl_status s = MPCL_OK;
    cl_int rc = CL_SUCCESS;
    if (!a || !b || !c || !times || (o->half && (!ha || !hb || !hc))) {
        mpcl_strfmt(out->reason, sizeof out->reason, "out of host memory for a %zux%zux%zu GEMM",
                    o->m, o->n, o->k);
        s = MPCL_ERR_NOMEM;
        goto done;
    }
    gb_fill(a, ha, na, o->half, ctx->seed + 11);
    gb_fill(b, hb, nb, o->half, ctx->seed + 12);
    g.a = make_buffer(ctx, CL_MEM_READ_ONLY, na * es, &rc);
    if (g.a)
        g.b = make_buffer(ctx, CL_MEM_READ_ONLY, nb * es, &rc);
    if (g.b)
        g.c = make_buffer(ctx, CL_MEM_READ_WRITE, nc * es, &rc);
    if (g.c)
        rc = clEnqueueWriteBuffer(ctx->queue, g.a, CL_TRUE, 0, na * es,
                                  o->half ? (const void *)ha : (const void *)a, 0, NULL, NULL);
    if (g.c && rc == CL_SUCCESS)
        rc = clEnqueueWriteBuffer(ctx->queue, g.b, CL_TRUE, 0, nb * es,
                                  o->half ? (const void *)hb : (const void *)b, 0, NULL, NULL);
    if (rc != CL_SUCCESS) {
        mpcl_strfmt(out->reason, sizeof out->reason, "device buffers for %zux%zux%zu: %s", o->m,
                    o->n, o->k, mpcl_cl_error_name(rc));
        s = MPCL_ERR_OPENCL;
        goto done;
    }
    /* warm-up: CLBlast compiles its kernels on the first call */
    double t1 = 0.0;
    if ((s = gb_time(&g, 1, &t1, out)) != MPCL_OK)
        goto done;
    rc = clEnqueueReadBuffer(ctx->queue, g.c, CL_TRUE, 0, nc * es,
                             o->half ? (void *)hc : (void *)c, 0, NULL, NULL);
    if (rc != CL_SUCCESS) {
        mpcl_strfmt(out->reason, sizeof out->reason, "reading C back: %s", mpcl_cl_error_name(rc));
        s = MPCL_ERR_OPENCL;
        goto done;
    }
    if (o->half)
        mpcl_half_to_float_array(c, hc, nc);
    out->exact = o->half ? o->k <= 2048 : o->k < ((size_t)1 << 20);
    const double ulp = o->half ? 0x1p-11 : 0x1p-24;
    int ok = 1;
    if ((uint64_t)o->m * o->n * o->k <= GB_FULL_CHECK_MACS || o->m <= GB_CHECK_ROWS) {
        ok = gb_check_rows(o, a, b, c, 0, o->m, ulp, out);
    } else {
        for (size_t r = 0; ok && r < GB_CHECK_ROWS; r++) {
            size_t i = r * (o->m - 1) / (GB_CHECK_ROWS - 1); /* first and last rows included */
            ok = gb_check_rows(o, a, b, c, i, i + 1, ulp, out);
        }
    }
    if (!ok) {
        s = MPCL_ERR_CLBLAST;
        goto done;
    }
    /* calibration: calls per repetition so that one lasts min_repeat_s */
    if ((s = gb_time(&g, 1, &t1, out)) != MPCL_OK)
        goto done;
    double want = o->min_repeat_s > 0 ? o->min_repeat_s : 0.0;
    unsigned calls = 1;
    if (t1 > 0 && want > t1)
        calls = want / t1 >= GB_MAX_CALLS ? GB_MAX_CALLS : (unsigned)ceil(want / t1);
    else if (t1 <= 0)
        calls = GB_MAX_CALLS;
    out->calls_per_repeat = calls;
    out->repeats = o->repeats;
    for (unsigned r = 0; r < o->repeats; r++)
        if ((s = gb_time(&g, calls, &times[r], out)) != MPCL_OK)
            goto done;
    qsort(times, o->repeats, sizeof *times, gb_cmp);
    out->min_s = times[0];
    out->max_s = times[o->repeats - 1];
    out->median_s = o->repeats % 2 ? times[o->repeats / 2]
                                   : 0.5 * (times[o->repeats / 2 - 1] + times[o->repeats / 2]);
    if (!(out->median_s > 0)) {
        mpcl_strfmt(out->reason, sizeof out->reason, "the GEMM took no measurable time");
        s = MPCL_ERR_STATE;
        goto done;
    }
    out->gflops = 2.0 * (double)o->m * (double)o->n * (double)o->k / out->median_s * 1e-9;
    out->ran = 1;
    mpcl_strfmt(out->reason, sizeof out->reason, "%s: %zu entries of C checked%s",
                o->tuned ? "mpcl's CLBlast tuning" : "CLBlast's own parameters", out->checked,
                out->exact ? ", exact" : " within (k+2) ulps of the magnitude sum");
done:
    release_mem(&g.a);
    release_mem(&g.b);
    release_mem(&g.c);
    free(a);
    free(b);
    free(c);
    free(ha);
    free(hb);
    free(hc);
    free(times);
    return s;
}

mpcl_status mpcl_gemm_bench(mpcl_context *ctx, const mpcl_gemm_bench_options *opt,
                            mpcl_gemm_bench_result *out)
{
    if (!out)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "mpcl_gemm_bench: out must not be NULL");
    memset(out, 0, sizeof *out);
    mpcl_status s = mpcl_check_ctx(ctx, "mpcl_gemm_bench");
    if (s != MPCL_OK) {
        mpcl_strfmt(out->reason, sizeof out->reason, "%s", mpcl_last_error(ctx));
        return s;
    }
    if (!opt) {
        mpcl_strfmt(out->reason, sizeof out->reason, "opt must not be NULL");
        return gb_fail(ctx, out, MPCL_ERR_ARGUMENT);
    }
    const size_t lim = (size_t)1 << 20;
    if (opt->m < 1 || opt->n < 1 || opt->k < 1 || opt->m > lim || opt->n > lim || opt->k > lim ||
        opt->repeats < 1 || opt->repeats > 1000 || !(opt->min_repeat_s >= 0 && opt->min_repeat_s <= 60)) {
        mpcl_strfmt(out->reason, sizeof out->reason,
                    "m, n, k must be 1..%zu (got %zux%zux%zu), repeats 1..1000 (got %u), "
                    "min_repeat_s 0..60", lim, opt->m, opt->n, opt->k, opt->repeats);
        return gb_fail(ctx, out, MPCL_ERR_ARGUMENT);
    }
    const uint64_t es = opt->half ? 2 : 4;
    const uint64_t big = (uint64_t)opt->m * opt->k > (uint64_t)opt->k * opt->n
                             ? (uint64_t)opt->m * opt->k : (uint64_t)opt->k * opt->n;
    const uint64_t maxel = big > (uint64_t)opt->m * opt->n ? big : (uint64_t)opt->m * opt->n;
    const uint64_t total = ((uint64_t)opt->m * opt->k + (uint64_t)opt->k * opt->n +
                            (uint64_t)opt->m * opt->n) * es;
    if ((ctx->caps.max_alloc_bytes && maxel * es > ctx->caps.max_alloc_bytes) ||
        (ctx->caps.global_mem_bytes && total > ctx->caps.global_mem_bytes / 2) ||
        maxel > SIZE_MAX / 8) {
        mpcl_strfmt(out->reason, sizeof out->reason,
                    "a %zux%zux%zu GEMM (%llu MiB) does not fit the device's allocation limits",
                    opt->m, opt->n, opt->k, (unsigned long long)(total >> 20));
        return gb_fail(ctx, out, MPCL_ERR_ARGUMENT);
    }
    if (opt->half) {
        if (!ctx->caps.ext_fp16) {
            mpcl_strfmt(out->reason, sizeof out->reason,
                        "CLBlastHgemm not run: the device does not declare cl_khr_fp16, without "
                        "which CLBlast refuses half precision");
            return gb_fail(ctx, out, MPCL_ERR_UNSUPPORTED);
        }
        if (!half_arith_verified(&ctx->caps)) {
            mpcl_strfmt(out->reason, sizeof out->reason,
                        "CLBlastHgemm not run: half arithmetic is not verified on this device (%s)",
                        mpcl_fp16_arith_name(ctx->caps.fp16_arith));
            return gb_fail(ctx, out, MPCL_ERR_UNSUPPORTED);
        }
    }
    /* the tuning for the run: CLBlast's own values (possible until the
     * process first overrides them, or where the table records them), or
     * the device's cached tuning (docs/tune.md) */
    if (opt->routed && opt->half) {
        mpcl_strfmt(out->reason, sizeof out->reason, "routed: float GEMMs only");
        return gb_fail(ctx, out, MPCL_ERR_ARGUMENT);
    }
    s = mpcl_tuning_set_precision(ctx, opt->half, opt->tuned || opt->routed ? 1 : 0);
    if (s == MPCL_ERR_UNSUPPORTED && opt->routed)
        s = MPCL_OK; /* no tuning: the router runs CLBlast as the context has it */
    if (s == MPCL_ERR_UNSUPPORTED) {
        mpcl_strfmt(out->reason, sizeof out->reason, "no %s figure: %s",
                    opt->tuned ? "tuned" : "untuned", mpcl_last_error(ctx));
        return gb_fail(ctx, out, MPCL_ERR_UNSUPPORTED);
    }
    if (s != MPCL_OK) {
        mpcl_strfmt(out->reason, sizeof out->reason, "%s", mpcl_last_error(ctx));
        return gb_fail(ctx, out, s);
    }
    s = gb_measure(ctx, opt, out);
    if (s != MPCL_OK)
        return gb_fail(ctx, out, s);
    if (opt->routed) { /* the verdict the router reached on the shape */
        const mpcl_xgemm x = {.trans_a = opt->trans_a, .trans_b = opt->trans_b, .m = opt->m,
                              .n = opt->n, .k = opt->k, .batch = 1, .lda = opt->trans_a ? opt->m : opt->k,
                              .ldb = opt->trans_b ? opt->k : opt->n, .ldc = opt->n};
        int own = 0;
        mpcl_sgemm_cfg cfg;
        if (mpcl_sgemm_pick(ctx, &x, "mpcl_gemm_bench", &own, &cfg) == MPCL_OK && own)
            mpcl_strfmt(out->kernel, sizeof out->kernel, "own MR %d VW %d NV %d KC %d", cfg.mr, cfg.vw,
                        cfg.nv, cfg.kc);
        else
            mpcl_strfmt(out->kernel, sizeof out->kernel, "CLBlast");
    }
    mpcl_clear_error(ctx);
    return MPCL_OK;
}
