/* launch.c — kernel objects kept per context, argument setting, launches. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

mpcl_variant mpcl_ctx_variant(const mpcl_context *ctx) { return mpcl_variant_of(ctx->precision); }

mpcl_status mpcl_kernel_get(mpcl_context *ctx, const char *family, mpcl_variant variant,
                            const char *name, cl_kernel *out)
{
    for (size_t i = 0; i < ctx->kernel_count; i++) {
        mpcl_kernel_slot *s = &ctx->kernels[i];
        if (s->variant == variant && strcmp(s->name, name) == 0 && strcmp(s->family, family) == 0) {
            *out = s->kernel;
            return MPCL_OK;
        }
    }
    if (ctx->kernel_count == MPCL_MAX_KERNELS)
        return mpcl_set_error(ctx, MPCL_ERR_STATE, "too many kernels in one context (%d)",
                              MPCL_MAX_KERNELS);
    cl_kernel k;
    mpcl_status st = mpcl_kernel_create(ctx, family, variant, name, &k);
    if (st != MPCL_OK)
        return st;
    mpcl_kernel_slot *s = &ctx->kernels[ctx->kernel_count++];
    s->family = family;
    s->name = name;
    s->variant = variant;
    s->kernel = k;
    *out = k;
    return MPCL_OK;
}

mpcl_status mpcl_kernel_get_spec(mpcl_context *ctx, const char *family, mpcl_variant variant,
                                 const char *defines, const char *name, cl_kernel *out)
{
    if (strlen(defines) >= MPCL_SPEC_DEFINES_LEN)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "kernel '%s': %zu characters of defines, at "
                              "most %d are supported", name, strlen(defines),
                              MPCL_SPEC_DEFINES_LEN - 1);
    mpcl_spec_slot *slot = NULL;
    for (size_t i = 0; i < ctx->spec_count && !slot; i++) {
        mpcl_spec_slot *p = &ctx->spec[i];
        if (p->variant == variant && strcmp(p->family, family) == 0 &&
            strcmp(p->defines, defines) == 0)
            slot = p;
    }
    if (!slot) {
        cl_program prog;
        mpcl_status st = mpcl_program_build_defines(ctx, family, variant, defines, 1, &prog);
        if (st != MPCL_OK)
            return st;
        if (ctx->spec_count < MPCL_MAX_SPEC_PROGRAMS) {
            slot = &ctx->spec[ctx->spec_count++];
        } else { /* release the least recently used program */
            slot = &ctx->spec[0];
            for (size_t i = 1; i < ctx->spec_count; i++)
                if (ctx->spec[i].last_use < slot->last_use)
                    slot = &ctx->spec[i];
            for (int i = 0; i < slot->nk; i++)
                clReleaseKernel(slot->kernels[i]);
            clReleaseProgram(slot->program);
        }
        memset(slot, 0, sizeof *slot);
        mpcl_strfmt(slot->family, sizeof slot->family, "%s", family);
        mpcl_strfmt(slot->defines, sizeof slot->defines, "%s", defines);
        slot->variant = variant;
        slot->program = prog;
    }
    slot->last_use = ++ctx->spec_clock;
    for (int i = 0; i < slot->nk; i++)
        if (strcmp(slot->names[i], name) == 0) {
            *out = slot->kernels[i];
            return MPCL_OK;
        }
    if (slot->nk == MPCL_SPEC_KERNELS)
        return mpcl_set_error(ctx, MPCL_ERR_STATE, "more than %d kernels from one specialised "
                              "program of %s.cl", MPCL_SPEC_KERNELS, family);
    cl_int rc;
    cl_kernel k = clCreateKernel(slot->program, name, &rc);
    if (!k || rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "clCreateKernel('%s' in %s.cl, %s, %s) failed: %s",
                              name, family, mpcl_variant_name(variant), defines,
                              mpcl_cl_error_name(rc));
    slot->names[slot->nk] = name;
    slot->kernels[slot->nk++] = k;
    *out = k;
    return MPCL_OK;
}

void mpcl_spec_release(mpcl_context *ctx)
{
    for (size_t i = 0; i < ctx->spec_count; i++) {
        for (int j = 0; j < ctx->spec[i].nk; j++)
            clReleaseKernel(ctx->spec[i].kernels[j]);
        clReleaseProgram(ctx->spec[i].program);
    }
    ctx->spec_count = 0;
}

cl_int mpcl_kernel_args(cl_kernel k, int nargs, ...)
{
    va_list ap;
    va_start(ap, nargs);
    cl_int rc = CL_SUCCESS;
    for (int i = 0; i < nargs && rc == CL_SUCCESS; i++) {
        size_t sz = va_arg(ap, size_t);
        const void *p = va_arg(ap, const void *);
        rc = clSetKernelArg(k, (cl_uint)i, sz, p);
    }
    va_end(ap);
    return rc;
}

cl_event *mpcl_profile_event(mpcl_context *ctx, cl_event *slot)
{
    *slot = NULL;
    return ctx->prof_on ? slot : NULL;
}

void mpcl_profile_add(mpcl_context *ctx, const char *name, cl_event ev)
{
    if (!ev)
        return;
    if (ctx->prof_n == ctx->prof_cap) {
        size_t cap = ctx->prof_cap ? 2 * ctx->prof_cap : 1024;
        struct mpcl_prof_rec *p = realloc(ctx->prof, cap * sizeof *p);
        if (!p) { /* profiling is best effort */
            clReleaseEvent(ev);
            return;
        }
        ctx->prof = p;
        ctx->prof_cap = cap;
    }
    ctx->prof[ctx->prof_n].name = name;
    ctx->prof[ctx->prof_n].ev = ev;
    ctx->prof_n++;
}

static const char *kernel_name(mpcl_context *ctx, cl_kernel k)
{
    for (size_t i = 0; i < ctx->kernel_count; i++)
        if (ctx->kernels[i].kernel == k)
            return ctx->kernels[i].name;
    for (size_t i = 0; i < ctx->spec_count; i++)
        for (int j = 0; j < ctx->spec[i].nk; j++)
            if (ctx->spec[i].kernels[j] == k)
                return ctx->spec[i].names[j];
    return "(kernel)";
}

static mpcl_status launch_at(mpcl_context *ctx, cl_kernel k, const char *what, cl_uint dims,
                             const size_t *offset, const size_t *global, const size_t *local);

mpcl_status mpcl_launch(mpcl_context *ctx, cl_kernel k, const char *what, cl_uint dims,
                        const size_t *global, const size_t *local)
{
    return launch_at(ctx, k, what, dims, NULL, global, local);
}

static mpcl_status launch_at(mpcl_context *ctx, cl_kernel k, const char *what, cl_uint dims,
                             const size_t *offset, const size_t *global, const size_t *local)
{
    if (!k || !global || dims < 1 || dims > 3)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: kernel launch with %s (%u dimensions)",
                              what, !k ? "no kernel" : "no global size", (unsigned)dims);
    size_t items = 1;
    for (cl_uint d = 0; d < dims; d++) {
        if (global[d] == 0)
            return MPCL_OK; /* nothing to do */
        if (items > SIZE_MAX / global[d] ||
            (offset && offset[d] > SIZE_MAX - global[d]))
            return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                                  "%s: kernel '%s': a launch of %zu x %zu x %zu items overflows "
                                  "size_t", what, kernel_name(ctx, k), global[0],
                                  dims > 1 ? global[1] : 1, dims > 2 ? global[2] : 1);
        items *= global[d];
    }
    size_t own[3] = {1, 1, 1};
    const size_t limit = mpcl_wg_limit(ctx, k);
    if (!local && ctx->wg_cap) { /* the driver would pick up to the device's limit */
        size_t left = limit;
        for (cl_uint d = 0; d < dims; d++) {
            size_t cap = left < ctx->max_item[d] ? left : ctx->max_item[d];
            own[d] = mpcl_largest_divisor_le(global[d], cap);
            left /= own[d];
        }
        local = own;
    }
    if (local) {
        size_t group = 1;
        for (cl_uint d = 0; d < dims; d++) {
            if (local[d] == 0 || global[d] % local[d] != 0 || local[d] > ctx->max_item[d])
                return mpcl_set_error(ctx, MPCL_ERR_STATE,
                                      "%s: kernel '%s': local size %zu does not fit global size "
                                      "%zu in dimension %u (device '%s' allows %zu items there)",
                                      what, kernel_name(ctx, k), local[d], global[d], (unsigned)d,
                                      ctx->desc.name, ctx->max_item[d]);
            group *= local[d];
        }
        if (group > limit)
            return mpcl_set_error(ctx, MPCL_ERR_STATE,
                                  "%s: kernel '%s': a work-group of %zu items, %zu allowed here "
                                  "(kernel, device '%s'%s)",
                                  what, kernel_name(ctx, k), group, limit, ctx->desc.name,
                                  ctx->wg_cap ? ", max_work_group_size cap" : "");
        if (group > ctx->wg_seen)
            ctx->wg_seen = group;
    }
    cl_event ev;
    cl_event *evp = mpcl_profile_event(ctx, &ev);
    cl_int rc = clEnqueueNDRangeKernel(ctx->queue, k, dims, offset, global, local, 0, NULL, evp);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clEnqueueNDRangeKernel('%s') on device "
                              "'%s' failed: %s", what, kernel_name(ctx, k), ctx->desc.name,
                              mpcl_cl_error_name(rc));
    if (evp)
        mpcl_profile_add(ctx, kernel_name(ctx, k), ev);
    return MPCL_OK;
}

static void profile_clear(mpcl_context *ctx)
{
    for (size_t i = 0; i < ctx->prof_n; i++)
        clReleaseEvent(ctx->prof[i].ev);
    ctx->prof_n = 0;
}

mpcl_status mpcl_profile_enable(mpcl_context *ctx, int on)
{
    if (!ctx || !ctx->usable)
        return MPCL_ERR_STATE;
    ctx->prof_on = on != 0;
    if (!on) {
        clFinish(ctx->queue);
        profile_clear(ctx);
    }
    return MPCL_OK;
}

static int by_time(const void *a, const void *b)
{
    double x = ((const mpcl_profile_entry *)a)->total_ms, y = ((const mpcl_profile_entry *)b)->total_ms;
    return (x < y) - (x > y);
}

mpcl_status mpcl_profile_report(mpcl_context *ctx, mpcl_profile_entry *out, size_t cap, size_t *n)
{
    if (!ctx || !ctx->usable || !n || (cap && !out))
        return MPCL_ERR_ARGUMENT;
    cl_int rc = clFinish(ctx->queue);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "mpcl_profile_report: clFinish: %s", mpcl_cl_error_name(rc));
    size_t distinct = 0, max = ctx->prof_n ? ctx->prof_n : 1;
    mpcl_profile_entry *all = calloc(max, sizeof *all);
    if (!all)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "mpcl_profile_report: out of host memory");
    for (size_t i = 0; i < ctx->prof_n; i++) {
        cl_ulong t0 = 0, t1 = 0;
        clGetEventProfilingInfo(ctx->prof[i].ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
        clGetEventProfilingInfo(ctx->prof[i].ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
        size_t j = 0;
        while (j < distinct && strcmp(all[j].name, ctx->prof[i].name) != 0)
            j++;
        if (j == distinct)
            mpcl_strfmt(all[distinct++].name, sizeof all[0].name, "%s", ctx->prof[i].name);
        all[j].count++;
        all[j].total_ms += t1 > t0 ? (double)(t1 - t0) * 1e-6 : 0.0;
    }
    qsort(all, distinct, sizeof *all, by_time);
    for (size_t i = 0; i < distinct && i < cap; i++)
        out[i] = all[i];
    *n = distinct;
    free(all);
    profile_clear(ctx);
    return MPCL_OK;
}

/* Whether text defines the kernel `name`: `kernel void name(`, or a line
 * `DEFINE_...(name, ...)` (kernels stamped out by a macro, as in reduce.cl). */
static int defines_kernel(const char *text, const char *name)
{
    const size_t n = strlen(name);
    for (const char *p = strstr(text, name); p; p = strstr(p + 1, name)) {
        const char *after = p + n;
        while (*after == ' ')
            after++;
        const char *before = p;
        while (before > text && before[-1] == ' ')
            before--;
        if (*after == '(' && before - text >= 11 && strncmp(before - 11, "kernel void", 11) == 0)
            return 1;
        if (*after == ',' && before > text && before[-1] == '(') {
            const char *line = before - 1;
            while (line > text && line[-1] != '\n')
                line--;
            if (strncmp(line, "DEFINE_", 7) == 0)
                return 1;
        }
    }
    return 0;
}

const char *mpcl_profile_family(const char *name)
{
    if (!name || !*name)
        return "other";
    if (strncmp(name, "CLBlast", 7) == 0)
        return "gemm";
    for (size_t i = 0; i < mpcl_embedded_source_count; i++) {
        const mpcl_embedded_source *e = &mpcl_embedded_sources[i];
        if (strcmp(e->name, "precision.h") != 0 && defines_kernel(e->text, name))
            return strcmp(e->name, "sgemm") == 0 ? "gemm" : e->name; /* with CLBlast's */
    }
    return "other";
}

size_t mpcl_largest_divisor_le(size_t n, size_t cap)
{
    for (size_t v = n < cap ? n : cap; v > 1; v--)
        if (n % v == 0)
            return v;
    return 1;
}

size_t mpcl_pow2_floor(size_t n)
{
    size_t p = 1;
    while (p <= n / 2)
        p *= 2;
    return p;
}

size_t mpcl_wg_device_limit(const mpcl_context *ctx)
{
    size_t lim = ctx->caps.max_work_group_size ? (size_t)ctx->caps.max_work_group_size : 1;
    if (ctx->wg_cap && ctx->wg_cap < lim)
        lim = ctx->wg_cap;
    return lim;
}

size_t mpcl_wg_limit(mpcl_context *ctx, cl_kernel k)
{
    size_t kwg = 0;
    if (clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kwg, &kwg,
                                 NULL) != CL_SUCCESS || kwg == 0)
        kwg = 1;
    size_t lim = mpcl_wg_device_limit(ctx);
    return kwg < lim ? kwg : lim;
}

const size_t *mpcl_cap_local_1d(mpcl_context *ctx, cl_kernel k, size_t n, size_t *slot)
{
    if (!ctx->wg_cap)
        return NULL;
    size_t lim = mpcl_wg_limit(ctx, k);
    *slot = mpcl_largest_divisor_le(n, lim < ctx->max_item[0] ? lim : ctx->max_item[0]);
    return slot;
}

size_t mpcl_wg_multiple(mpcl_context *ctx, cl_kernel k)
{
    size_t m = 0;
    if (clGetKernelWorkGroupInfo(k, ctx->device, CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE,
                                 sizeof m, &m, NULL) != CL_SUCCESS || m == 0)
        m = 1;
    return m;
}

mpcl_status mpcl_launch_rows(mpcl_context *ctx, cl_kernel k, const char *what, size_t n0,
                             size_t n1, size_t n2)
{
    size_t cap = mpcl_wg_limit(ctx, k);
    if (cap > MPCL_ROWS_GROUP)
        cap = MPCL_ROWS_GROUP;
    const size_t l0 = mpcl_largest_divisor_le(n0, cap < ctx->max_item[0] ? cap : ctx->max_item[0]);
    const size_t c1 = cap / l0 < ctx->max_item[1] ? cap / l0 : ctx->max_item[1];
    const size_t l1 = mpcl_largest_divisor_le(n1, c1);
    size_t global[3] = {n0, n1, n2}, local[3] = {l0, l1, 1};
    return mpcl_launch(ctx, k, what, 3, global, local);
}

mpcl_status mpcl_launch_exact_1d(mpcl_context *ctx, cl_kernel k, const char *what, size_t n)
{
    size_t wg = mpcl_wg_limit(ctx, k);
    if (wg > MPCL_EXACT_GROUP)
        wg = MPCL_EXACT_GROUP;
    if (wg > ctx->max_item[0])
        wg = ctx->max_item[0];
    const size_t div = mpcl_largest_divisor_le(n, wg);
    if (div >= wg / 4) /* one launch when n has a fair divisor */
        wg = div;
    const size_t main = n / wg * wg, tail = n - main, zero = 0;
    mpcl_status s = MPCL_OK;
    if (main)
        s = launch_at(ctx, k, what, 1, &zero, &main, &wg);
    if (s == MPCL_OK && tail)
        s = launch_at(ctx, k, what, 1, &main, &tail, &tail);
    return s;
}

mpcl_status mpcl_launch_1d(mpcl_context *ctx, cl_kernel k, const char *what, size_t n)
{
    size_t wg = mpcl_wg_1d(ctx), lim = mpcl_wg_limit(ctx, k);
    if (wg > lim) /* the kernel or the cap allows less: the largest multiple of the preferred one */
    {
        const size_t m = mpcl_wg_multiple(ctx, k);
        wg = lim >= m ? lim / m * m : lim;
    }
    if (wg > ctx->max_item[0])
        wg = ctx->max_item[0];
    if (n > SIZE_MAX - wg)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "%s: %zu work items overflow size_t", what, n);
    size_t global = (n + wg - 1) / wg * wg;
    return mpcl_launch(ctx, k, what, 1, &global, &wg);
}

mpcl_status mpcl_finish(mpcl_context *ctx)
{
    if (!ctx || !ctx->usable)
        return MPCL_ERR_STATE;
    cl_int rc = clFinish(ctx->queue);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "clFinish failed: %s", mpcl_cl_error_name(rc));
    return MPCL_OK;
}
