/* tuning.c — the CLBlast parameters a context uses.
 *
 * CLBlast picks GEMM kernel parameters from a database compiled into it;
 * for devices it does not know (CPU devices, new GPUs, PoCL's and Mesa's
 * drivers) the generic values are slow. CLBlastOverrideParameters replaces
 * them for one device, precision and kernel, for the rest of the process
 * only, so every context applies them again at creation:
 *
 *   1. the cache entry mpcl_tune (tune.c) wrote for this device, driver,
 *      CLBlast version and precision: <cache dir>/clblast-<hash>.json, the
 *      format in docs/tune.md. A file that does not parse, or was written
 *      for another device, driver, CLBlast or format version, is ignored
 *      and named in ctx->tuning_note;
 *   2. else the built-in starting point for the device, if the table below
 *      names it (a starting point of the search, measured once on one
 *      machine: never the answer);
 *   3. else CLBlast's own parameters.
 *
 * Legal-looking parameter sets can return success with wrong results
 * (docs/gemm.md), so every set is checked before it stays: small GEMMs of
 * every transposition and a strided batch, on small integers where the sums
 * are exact, compared bit for bit with the host. A set that fails is
 * replaced by the next source down the list (CLBlast's own values where the
 * table records them), and ctx->tuning_note and the precision choice's
 * explanation say so. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "internal.h"

#include <clblast_c.h>

#ifndef MPCL_CLBLAST_VERSION
#define MPCL_CLBLAST_VERSION "unknown"
#endif

const char *const mpcl_xgemm_param_names[MPCL_XGEMM_NPARAMS] = {
    "GEMMK", "KREG", "KWG", "KWI", "MDIMA", "MDIMC", "MWG", "NDIMB",
    "NDIMC", "NWG", "SA", "SB", "STRM", "STRN", "VWM", "VWN"};

/* {GEMMK, KREG, KWG, KWI, MDIMA, MDIMC, MWG, NDIMB, NDIMC, NWG, SA, SB, STRM, STRN, VWM, VWN} */
#define XG(kwg, kwi, mdima, mdimc, mwg, ndimb, ndimc, nwg, sa, sb, vwm, vwn) \
    {0, 1, kwg, kwi, mdima, mdimc, mwg, ndimb, ndimc, nwg, sa, sb, 0, 0, vwm, vwn}

typedef struct {
    const char *label;
    const char *platform; /* case-insensitive substrings; both must match */
    const char *device;
    mpcl_clblast_params tuned;
    mpcl_clblast_params stock; /* CLBlast 1.5's own values on the device */
} tuning_entry;

/* Device entries: applied when no cache entry exists, and the first
 * starting points of the search on that device. */
static const tuning_entry table[] = {
    {"PoCL CPU (pthread, haswell target)", "Portable Computing Language", "pthread-haswell",
     {XG(16, 1, 1, 1, 16, 1, 1, 12, 0, 0, 16, 4), 1},
     {XG(32, 2, 8, 8, 32, 16, 16, 32, 1, 1, 4, 2), 896}},
};

/* General starting points by device type, tried in this order after the
 * device's own entry. CPU devices: one work item per tile with wide
 * vectors (implementations that vectorise inside a work item), then small
 * groups along M (implementations that vectorise across work items); GPU
 * devices: 8x8 and 16x16 groups with local memory tiles. */
static const mpcl_clblast_params cpu_starts[] = {
    {XG(32, 1, 1, 1, 32, 1, 1, 12, 0, 0, 16, 4), 0},
    {XG(16, 1, 1, 1, 16, 1, 1, 12, 0, 0, 16, 4), 0},
    {XG(32, 2, 16, 16, 64, 4, 4, 32, 0, 0, 1, 4), 0},
    {XG(32, 2, 8, 8, 64, 8, 8, 64, 1, 1, 4, 4), 0},
};
static const mpcl_clblast_params gpu_starts[] = {
    {XG(32, 2, 16, 16, 64, 16, 16, 64, 1, 1, 2, 2), 0},
    {XG(32, 2, 8, 8, 64, 8, 8, 64, 1, 1, 4, 4), 0},
    {XG(16, 2, 8, 8, 32, 8, 8, 32, 1, 1, 2, 2), 0},
    {XG(32, 2, 16, 16, 128, 16, 16, 128, 1, 1, 4, 4), 0},
};

/* ------------------------------------------------------------ matching */

static int contains_nocase(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return 1;
    }
    return n == 0;
}

static const tuning_entry *find_entry(const mpcl_context *ctx)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (contains_nocase(ctx->desc.platform, table[i].platform) &&
            contains_nocase(ctx->desc.name, table[i].device))
            return &table[i];
    return NULL;
}

int mpcl_tuning_has_override(const mpcl_context *ctx)
{
    return ctx && (find_entry(ctx) != NULL || ctx->tuning_cached[0]);
}

size_t mpcl_tuning_starts(const mpcl_context *ctx, int other_type, mpcl_clblast_params *out,
                          size_t cap)
{
    size_t n = 0;
    const tuning_entry *e = find_entry(ctx);
    if (e && !other_type && n < cap)
        out[n++] = e->tuned;
    const int gpu = (ctx->caps.type == MPCL_DEVICE_GPU) != (other_type != 0);
    const mpcl_clblast_params *set = gpu ? gpu_starts : cpu_starts;
    const size_t ns = gpu ? sizeof gpu_starts / sizeof gpu_starts[0] : sizeof cpu_starts / sizeof cpu_starts[0];
    for (size_t i = 0; i < ns && n < cap; i++)
        out[n++] = set[i];
    return n;
}

/* ---------------------------------------------- which devices were touched */

/* CLBlast has no call that puts its own parameters back, so once a process
 * has overridden them for a device and precision, "CLBlast's own" can only
 * be measured again where the table records them. */
#define MAX_TOUCHED 16
static struct {
    cl_device_id dev;
    int half;
} touched[MAX_TOUCHED];
static size_t touched_n;

void mpcl_clblast_mark_overridden(const mpcl_context *ctx, int half)
{
    if (mpcl_clblast_overridden(ctx, half) || touched_n == MAX_TOUCHED)
        return;
    touched[touched_n].dev = ctx->device;
    touched[touched_n].half = half;
    touched_n++;
}

int mpcl_clblast_overridden(const mpcl_context *ctx, int half)
{
    for (size_t i = 0; i < touched_n; i++)
        if (touched[i].dev == ctx->device && touched[i].half == half)
            return 1;
    return 0;
}

/* ------------------------------------------------------------ override */

int mpcl_clblast_override(mpcl_context *ctx, int half, const mpcl_clblast_params *p,
                          const char **failed)
{
    const CLBlastPrecision prec = half ? CLBlastPrecisionHalf : CLBlastPrecisionSingle;
    mpcl_clblast_mark_overridden(ctx, half);
    CLBlastStatusCode st = CLBlastOverrideParameters(ctx->device, "Xgemm", prec, MPCL_XGEMM_NPARAMS,
                                                     (const char **)mpcl_xgemm_param_names, p->xgemm);
    if (st != CLBlastSuccess) {
        *failed = "Xgemm";
        return (int)st;
    }
    ctx->clblast_sig[half ? 1 : 0] = mpcl_hash64(p, sizeof *p, MPCL_HASH_SEED);
    if (p->min_indirect) {
        const char *name = "XGEMM_MIN_INDIRECT_SIZE";
        st = CLBlastOverrideParameters(ctx->device, "GemmRoutine", prec, 1, &name, &p->min_indirect);
        if (st != CLBlastSuccess) {
            *failed = "GemmRoutine";
            return (int)st;
        }
    }
    return CLBlastSuccess;
}

/* -------------------------------------------------------- verification */

/* Verification sizes: not multiples of any tile; batch 2 for the batched
 * call. Values -4..4: every sum of K = 43 products is exact in half too. */
#define VM 67
#define VN 35
#define VK 43
#define VG 2

/* op(A) (M, K) op(B) (K, N) on the host. */
static void host_gemm(int ta, int tb, size_t m, size_t n, size_t k, const float *a, const float *b,
                      float *c)
{
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0.0;
            for (size_t p = 0; p < k; p++)
                s += (double)(ta ? a[p * m + i] : a[i * k + p]) * (double)(tb ? b[j * k + p] : b[p * n + j]);
            c[i * n + j] = (float)s;
        }
}

int mpcl_clblast_verify(mpcl_context *ctx, int half, int batched, char *why, size_t why_len)
{
    const size_t na = VG * VM * VK, nb = VG * VK * VN, nc = VG * VM * VN;
    const size_t es = half ? 2 : 4;
    float *h = malloc((na + nb + 2 * nc) * sizeof *h);
    uint16_t *hh = malloc((na + nb + nc) * sizeof *hh);
    cl_mem a = NULL, b = NULL, c = NULL;
    int ok = 0;
    const char *rname = half ? "CLBlastHgemm" : "CLBlastSgemm";
    if (!h || !hh) {
        mpcl_strfmt(why, why_len, "out of host memory for the check");
        goto done;
    }
    float *ha = h, *hb = ha + na, *hc = hb + nb, *ref = hc + nc;
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < na + nb; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        ha[i] = (float)((int)((s >> 33) % 9) - 4);
    }
    if (half)
        mpcl_half_from_float_array(hh, ha, na + nb);
    cl_int rc;
    a = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, na * es,
                       half ? (void *)hh : (void *)ha, &rc);
    if (rc == CL_SUCCESS)
        b = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nb * es,
                           half ? (void *)(hh + na) : (void *)hb, &rc);
    if (rc == CL_SUCCESS)
        c = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, nc * es, NULL, &rc);
    if (rc != CL_SUCCESS) {
        mpcl_strfmt(why, why_len, "clCreateBuffer for the check: %s", mpcl_cl_error_name(rc));
        goto done;
    }
    /* NN, NT, TN, TT, then TT strided-batched over VG pairs (CLBlast's
     * batched routine is a program of its own: built only when asked) */
    for (int t = 0; t < (batched ? 5 : 4); t++) {
        const int ta = t == 2 || t >= 3, tb = t == 1 || t >= 3;
        const size_t batch = t == 4 ? VG : 1;
        for (size_t g = 0; g < batch; g++)
            host_gemm(ta, tb, VM, VN, VK, ha + g * VM * VK, hb + g * VK * VN, ref + g * VM * VN);
        CLBlastStatusCode st = mpcl_clblast_gemm(ctx, half, ta, tb, VM, VN, VK, batch, a, b, c, NULL);
        const size_t n = batch * VM * VN;
        if (st == CLBlastSuccess)
            rc = clEnqueueReadBuffer(ctx->queue, c, CL_TRUE, 0, n * es, half ? (void *)hh : (void *)hc,
                                     0, NULL, NULL);
        if (st != CLBlastSuccess || rc != CL_SUCCESS) {
            mpcl_strfmt(why, why_len, "%s%s %dx%dx%d (op %c%c, batch %zu): %s", rname,
                        batch > 1 ? "StridedBatched" : "", VM, VN, VK, ta ? 'T' : 'N', tb ? 'T' : 'N',
                        batch,
                        st != CLBlastSuccess ? mpcl_clblast_status_name((int)st) : mpcl_cl_error_name(rc));
            goto done;
        }
        for (size_t i = 0; i < n; i++) {
            const float got = half ? mpcl_half_to_float(hh[i]) : hc[i];
            if (got != ref[i]) {
                mpcl_strfmt(why, why_len, "%s%s %dx%dx%d (op %c%c) gave C[%zu] = %g, exact %g", rname,
                            batch > 1 ? "StridedBatched" : "", VM, VN, VK, ta ? 'T' : 'N',
                            tb ? 'T' : 'N', i, (double)got, (double)ref[i]);
                goto done;
            }
        }
    }
    ok = 1;
done:
    clFinish(ctx->queue);
    if (a)
        clReleaseMemObject(a);
    if (b)
        clReleaseMemObject(b);
    if (c)
        clReleaseMemObject(c);
    free(h);
    free(hh);
    return ok;
}

/* --------------------------------------------------------------- cache */

void mpcl_tuning_path(const mpcl_context *ctx, char *dst, size_t len)
{
    mpcl_strfmt(dst, len, "%s/clblast-%016llx.json", ctx->cache_dir,
                (unsigned long long)mpcl_device_hash(ctx));
}

/* The params of one precision's object ("single" / "half") of a parsed
 * cache file; 0 with why on a malformed entry, -1 when absent. */
int mpcl_tuning_entry_params(const cJSON *root, int half, mpcl_clblast_params *p, char *why,
                             size_t why_len)
{
    const char *pname = half ? "half" : "single";
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, pname);
    if (!e)
        return -1;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "own")))
        return 2; /* CLBlast's own parameters measured fastest: no override */
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(e, "Xgemm");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "XGEMM_MIN_INDIRECT_SIZE");
    if (!cJSON_IsObject(x) || !cJSON_IsNumber(t) || t->valuedouble < 1 || t->valuedouble > 1e6) {
        mpcl_strfmt(why, why_len, "\"%s\" lacks \"Xgemm\" or a valid \"XGEMM_MIN_INDIRECT_SIZE\"", pname);
        return 0;
    }
    memset(p, 0, sizeof *p);
    for (int i = 0; i < MPCL_XGEMM_NPARAMS; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(x, mpcl_xgemm_param_names[i]);
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1024 ||
            v->valuedouble != (double)(size_t)v->valuedouble) {
            mpcl_strfmt(why, why_len, "\"%s\".Xgemm.%s is missing or not an integer 0..1024", pname,
                        mpcl_xgemm_param_names[i]);
            return 0;
        }
        p->xgemm[i] = (size_t)v->valuedouble;
    }
    p->min_indirect = (size_t)t->valuedouble;
    return 1;
}

/* Reads and checks the cache file's header: returns the parsed document
 * (the caller deletes it), or NULL with why ("" when the file does not
 * exist). */
cJSON *mpcl_tuning_load(const mpcl_context *ctx, char *why, size_t why_len)
{
    char path[MPCL_PATH_LEN + 64];
    mpcl_tuning_path(ctx, path, sizeof path);
    why[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno != ENOENT)
            mpcl_strfmt(why, why_len, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t len = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && n < (16L << 20) && fseek(f, 0, SEEK_SET) == 0 && (text = malloc((size_t)n + 1)))
            len = fread(text, 1, (size_t)n, f);
    }
    fclose(f);
    if (!text) {
        mpcl_strfmt(why, why_len, "%s: empty, too large or unreadable", path);
        return NULL;
    }
    text[len] = '\0';
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        mpcl_strfmt(why, why_len, "%s: not valid JSON", path);
        cJSON_Delete(root);
        return NULL;
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *hash = cJSON_GetObjectItemCaseSensitive(root, "device_hash");
    const cJSON *cb = cJSON_GetObjectItemCaseSensitive(root, "clblast");
    char want[32];
    mpcl_strfmt(want, sizeof want, "%016llx", (unsigned long long)mpcl_device_hash(ctx));
    const char *bad = NULL;
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "mpcl-clblast-tuning") != 0)
        bad = "\"format\" is not \"mpcl-clblast-tuning\"";
    else if (!cJSON_IsNumber(ver) || ver->valuedouble != MPCL_TUNING_FORMAT_VERSION)
        bad = "written by another version of the format (stale)";
    else if (!cJSON_IsString(hash) || strcmp(hash->valuestring, want) != 0)
        bad = "written for another platform, device or driver (stale)";
    else if (!cJSON_IsString(cb) || strcmp(cb->valuestring, MPCL_CLBLAST_VERSION) != 0)
        bad = "written with another CLBlast version (stale)";
    if (bad) {
        mpcl_strfmt(why, why_len, "%s: %s", path, bad);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* ----------------------------------------------------------------- api */

static void note_why(mpcl_context *ctx)
{
    size_t used = strlen(ctx->caps.chosen_why);
    if (used + 2 < sizeof ctx->caps.chosen_why)
        mpcl_strfmt(ctx->caps.chosen_why + used, sizeof ctx->caps.chosen_why - used, "; %s",
                    ctx->tuning_note);
}

static void note_add(mpcl_context *ctx, const char *fmt, const char *a, const char *b)
{
    size_t used = strlen(ctx->tuning_note);
    if (used && used + 2 < sizeof ctx->tuning_note)
        used += strlen(mpcl_strfmt(ctx->tuning_note + used, sizeof ctx->tuning_note - used, "; "));
    if (used + 1 < sizeof ctx->tuning_note)
        mpcl_strfmt(ctx->tuning_note + used, sizeof ctx->tuning_note - used, fmt, a, b);
}

/* Applies and verifies one set; 1 when it stays. */
static int try_set(mpcl_context *ctx, int half, const mpcl_clblast_params *p, char *why, size_t len)
{
    const char *failed = "";
    int st = mpcl_clblast_override(ctx, half, p, &failed);
    if (st != CLBlastSuccess) {
        mpcl_strfmt(why, len, "CLBlastOverrideParameters(%s): %s", failed, mpcl_clblast_status_name(st));
        return 0;
    }
    return mpcl_clblast_verify(ctx, half, 0, why, len);
}

/* A rejected set stays in force in CLBlast (it has no call that restores
 * its own values): replace it by the device's recorded CLBlast values if
 * the table has them, else by the first built-in starting point that
 * passes the check. */
static void replace_rejected(mpcl_context *ctx, int half)
{
    char why[320];
    const tuning_entry *e = find_entry(ctx);
    if (e && !half) {
        const char *failed = "";
        if (mpcl_clblast_override(ctx, 0, &e->stock, &failed) == CLBlastSuccess) {
            note_add(ctx, "%s%s", "CLBlast's own values restored", "");
            return;
        }
    }
    mpcl_clblast_params starts[16];
    size_t n = mpcl_tuning_starts(ctx, 0, starts, 16);
    n += mpcl_tuning_starts(ctx, 1, starts + n, 16 - n);
    for (size_t i = 0; i < n; i++)
        if (try_set(ctx, half, &starts[i], why, sizeof why)) {
            note_add(ctx, "%s%s", "a built-in starting point in its place, verified exact", "");
            return;
        }
    note_add(ctx, "%s%s", "no built-in set passed the check either: GEMMs may be wrong", "");
}

/* Applies the cached entry of one precision if there is one; 1 when it
 * stays, 0 when there is none or it was rejected (noted). */
static int apply_cached(mpcl_context *ctx, const cJSON *root, int half)
{
    const char *pname = half ? "half" : "single";
    mpcl_clblast_params p;
    char why[320];
    int r = mpcl_tuning_entry_params(root, half, &p, why, sizeof why);
    if (r < 0)
        return 0;
    if (r == 0) {
        note_add(ctx, "cached %s tuning ignored: %s", pname, why);
        return 0;
    }
    if (r == 2)
        return 2; /* CLBlast's own values won the search: nothing to override */
    if (!try_set(ctx, half, &p, why, sizeof why)) {
        note_add(ctx, "cached %s tuning rejected: %s", pname, why);
        replace_rejected(ctx, half);
        return 0;
    }
    return 1;
}

int mpcl_half_gemm_possible(const mpcl_context *ctx)
{
    /* CLBlast 1.5 runs Hgemm only where cl_khr_fp16 is declared; the probe
     * verified half arithmetic works */
    return ctx->caps.ext_fp16 && ctx->caps.fp16_arith == MPCL_FP16_DECLARED_WORKS;
}

void mpcl_tuning_apply(mpcl_context *ctx)
{
    const char *own = getenv("MPCL_CLBLAST_OWN");
    ctx->tuning_note[0] = '\0';
    ctx->tuning_cached[0] = ctx->tuning_cached[1] = 0;
    if (ctx->clblast_own || (own && *own && strcmp(own, "0") != 0)) {
        ctx->clblast_own = 1;
        mpcl_strfmt(ctx->tuning_note, sizeof ctx->tuning_note,
                    "CLBlast's own parameters (asked for: no overrides)");
        return;
    }
    char why[MPCL_PATH_LEN + 160];
    int rejected = 0;
    if (ctx->cache_enabled) {
        cJSON *root = mpcl_tuning_load(ctx, why, sizeof why);
        if (!root && why[0]) {
            note_add(ctx, "CLBlast tuning cache ignored: %s%s", why, "");
            rejected = 1;
        }
        if (root) {
            size_t before = strlen(ctx->tuning_note);
            ctx->tuning_cached[0] = apply_cached(ctx, root, 0);
            if (mpcl_half_gemm_possible(ctx))
                ctx->tuning_cached[1] = apply_cached(ctx, root, 1);
            rejected = strlen(ctx->tuning_note) != before;
            cJSON_Delete(root);
        }
    }
    if (ctx->tuning_cached[0]) {
        if (ctx->tuning_cached[0] == 2)
            note_add(ctx, "CLBlast Sgemm: CLBlast's own parameters, measured fastest on this device "
                          "(cache)%s%s", "", "");
        else
            note_add(ctx, "CLBlast Sgemm tuned on this device (cache), verified exact%s%s", "", "");
        if (ctx->tuning_cached[1])
            note_add(ctx, "CLBlast Hgemm %s (cache)%s",
                     ctx->tuning_cached[1] == 2 ? "on its own parameters" : "tuned, verified exact", "");
        if (rejected)
            note_why(ctx);
        return;
    }
    const tuning_entry *e = find_entry(ctx);
    if (!e) {
        note_add(ctx, "no CLBlast tuning for this device yet (mpcl tune)%s%s",
                 mpcl_clblast_overridden(ctx, 0) ? "" : ": CLBlast's own parameters", "");
        if (rejected)
            note_why(ctx);
        return;
    }
    if (try_set(ctx, 0, &e->tuned, why, sizeof why)) {
        note_add(ctx, "CLBlast Sgemm: the built-in starting point for %s, verified exact (not tuned "
                      "on this device yet: mpcl tune)%s",
                 e->label, "");
        if (rejected)
            note_why(ctx);
        return;
    }
    const char *failed = "";
    int st = mpcl_clblast_override(ctx, 0, &e->stock, &failed);
    char msg[MPCL_PATH_LEN + 256];
    mpcl_strfmt(msg, sizeof msg, "CLBlast tuning for %s rejected (%s)", e->label, why);
    note_add(ctx, "%s: %s", msg,
             st == CLBlastSuccess ? "CLBlast's own parameters restored"
                                  : "restoring CLBlast's own parameters failed too");
    note_why(ctx);
}

mpcl_status mpcl_tuning_reload(mpcl_context *ctx)
{
    mpcl_status s = mpcl_check_ctx(ctx, "mpcl_tuning_reload");
    if (s != MPCL_OK)
        return s;
    if (!ctx->tuning_cached[0]) {
        ctx->clblast_own = 0;
        mpcl_tuning_apply(ctx);
    }
    return MPCL_OK;
}

const char *mpcl_clblast_version(void) { return MPCL_CLBLAST_VERSION; }

const char *mpcl_tuning_describe(const mpcl_context *ctx)
{
    return ctx ? ctx->tuning_note : "";
}

mpcl_status mpcl_tuning_set_precision(mpcl_context *ctx, int half, int on)
{
    mpcl_status s = mpcl_check_ctx(ctx, "mpcl_tuning_set");
    if (s != MPCL_OK)
        return s;
    const tuning_entry *e = half ? NULL : find_entry(ctx);
    const char *pname = half ? "Hgemm" : "Sgemm";
    char why[MPCL_PATH_LEN + 160];
    if (on) {
        /* the cached entry first, then the table */
        cJSON *root = ctx->cache_enabled ? mpcl_tuning_load(ctx, why, sizeof why) : NULL;
        mpcl_clblast_params p;
        int r = root ? mpcl_tuning_entry_params(root, half, &p, why, sizeof why) : -1;
        cJSON_Delete(root);
        if (r == 2) { /* the search kept CLBlast's own values */
            if (!mpcl_clblast_overridden(ctx, half))
                return MPCL_OK;
            if (!e)
                return mpcl_set_error(ctx, MPCL_ERR_UNSUPPORTED,
                                      "the tuned %s parameters for device '%s' are CLBlast's own, "
                                      "which cannot be restored in this process",
                                      pname, ctx->desc.name);
            p = e->stock;
        } else if (r <= 0) {
            if (!e)
                return mpcl_set_error(ctx, MPCL_ERR_UNSUPPORTED,
                                      "no CLBlast %s tuning for device '%s' (run mpcl tune)", pname,
                                      ctx->desc.name);
            p = e->tuned;
        }
        if (!try_set(ctx, half, &p, why, sizeof why)) {
            ctx->tuning_note[0] = '\0';
            note_add(ctx, "CLBlast tuning rejected (%s)%s", why, "");
            replace_rejected(ctx, half);
            note_why(ctx);
            return mpcl_set_error(ctx, MPCL_ERR_CLBLAST, "mpcl_tuning_set: %s", ctx->tuning_note);
        }
        return MPCL_OK;
    }
    if (!mpcl_clblast_overridden(ctx, half))
        return MPCL_OK; /* CLBlast's own parameters are in force */
    if (!e)
        return mpcl_set_error(ctx, MPCL_ERR_UNSUPPORTED,
                              "CLBlast's own %s parameters for device '%s' cannot be restored in "
                              "this process once overridden (measure them first, or create the "
                              "context with clblast_own)",
                              pname, ctx->desc.name);
    const char *failed = "";
    int st = mpcl_clblast_override(ctx, 0, &e->stock, &failed);
    if (st != CLBlastSuccess)
        return mpcl_set_error(ctx, MPCL_ERR_CLBLAST, "CLBlastOverrideParameters(%s) for %s: %s",
                              failed, e->label, mpcl_clblast_status_name(st));
    return MPCL_OK;
}

mpcl_status mpcl_tuning_set(mpcl_context *ctx, int on) { return mpcl_tuning_set_precision(ctx, 0, on); }
