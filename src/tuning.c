/* tuning.c — a small per-device table of CLBlast parameter overrides.
 *
 * CLBlast picks GEMM kernel parameters from a database compiled into it;
 * for devices it does not know (PoCL's CPU device among them) the generic
 * values are slow. CLBlastOverrideParameters replaces them for one device,
 * precision and kernel, for the rest of the process only, so every context
 * applies the table again. Legal-looking parameter sets can return success
 * with wrong results (docs/gemm.md), so after applying an entry the context
 * runs two small Sgemms (one plain, one transposed and strided-batched) on
 * small integers, where float arithmetic is exact, and compares them bit for
 * bit with a host product. On a mismatch it puts back the values CLBlast
 * itself uses on that device (recorded in the table) and says so in
 * ctx->tuning_note and in the precision choice's explanation.
 *
 * The table and how it was measured: docs/gemm.md. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#include <clblast_c.h>

#define TUNING_MAX_PARAMS 16

typedef struct {
    const char *name;
    size_t value;
} tuning_param;

typedef struct {
    const char *kernel; /* CLBlast kernel name: "Xgemm", "GemmRoutine", ... */
    size_t count;
    tuning_param tuned[TUNING_MAX_PARAMS];
    tuning_param stock[TUNING_MAX_PARAMS]; /* CLBlast 1.5's own values on the device */
} tuning_kernel;

typedef struct {
    const char *label;
    const char *platform; /* case-insensitive substrings; both must match */
    const char *device;
    tuning_kernel kernels[2]; /* single precision; applied in order */
} tuning_entry;

static const tuning_entry table[] = {
    {
        "PoCL CPU (pthread, haswell target)",
        "Portable Computing Language",
        "pthread-haswell",
        {
            {"Xgemm",
             16,
             {{"GEMMK", 0}, {"KREG", 1}, {"KWG", 16}, {"KWI", 1}, {"MDIMA", 1}, {"MDIMC", 1},
              {"MWG", 16}, {"NDIMB", 1}, {"NDIMC", 1}, {"NWG", 12}, {"SA", 0}, {"SB", 0},
              {"STRM", 0}, {"STRN", 0}, {"VWM", 16}, {"VWN", 4}},
             {{"GEMMK", 0}, {"KREG", 1}, {"KWG", 32}, {"KWI", 2}, {"MDIMA", 8}, {"MDIMC", 8},
              {"MWG", 32}, {"NDIMB", 16}, {"NDIMC", 16}, {"NWG", 32}, {"SA", 1}, {"SB", 1},
              {"STRM", 0}, {"STRN", 0}, {"VWM", 4}, {"VWN", 2}}},
            {"GemmRoutine", 1, {{"XGEMM_MIN_INDIRECT_SIZE", 1}}, {{"XGEMM_MIN_INDIRECT_SIZE", 896}}},
        },
    },
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

int mpcl_tuning_has_override(const mpcl_context *ctx) { return ctx && find_entry(ctx) != NULL; }

/* Applies the tuned (stock = 0) or CLBlast's own (stock = 1) values of every
 * kernel of the entry. */
static CLBlastStatusCode apply_entry(const mpcl_context *ctx, const tuning_entry *e, int stock,
                                     const char **failed)
{
    for (size_t i = 0; i < sizeof e->kernels / sizeof e->kernels[0]; i++) {
        const tuning_kernel *k = &e->kernels[i];
        if (!k->kernel)
            continue;
        const char *names[TUNING_MAX_PARAMS];
        size_t values[TUNING_MAX_PARAMS];
        const tuning_param *p = stock ? k->stock : k->tuned;
        for (size_t j = 0; j < k->count; j++) {
            names[j] = p[j].name;
            values[j] = p[j].value;
        }
        CLBlastStatusCode st = CLBlastOverrideParameters(ctx->device, k->kernel, CLBlastPrecisionSingle,
                                                         k->count, names, values);
        if (st != CLBlastSuccess) {
            *failed = k->kernel;
            return st;
        }
    }
    return CLBlastSuccess;
}

/* -------------------------------------------------------- verification */

/* Verification sizes: not multiples of any tile; batch 2 for the batched call. */
#define VM 67
#define VN 35
#define VK 43
#define VG 2

/* op(A) (M, K) op(B) (K, N) of small integers, on the host, exact in float. */
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

/* Runs C = A B (no transposes) and G = 2 strided C_g = A_g^T B_g^T and
 * compares both exactly. Returns 1 when right; else writes why. */
static int verify_sgemm(mpcl_context *ctx, char *why, size_t why_len)
{
    const size_t na = VG * VM * VK, nb = VG * VK * VN, nc = VG * VM * VN;
    float *h = malloc((2 * na + 2 * nb + 3 * nc) * sizeof *h);
    cl_mem a = NULL, b = NULL, c = NULL;
    int ok = 0;
    if (!h) {
        mpcl_strfmt(why, why_len, "out of host memory for the check");
        return 0;
    }
    float *ha = h, *hb = ha + na, *hc = hb + nb, *ref = hc + nc, *ref2 = ref + nc;
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < na + nb; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        ha[i] = (float)((int)((s >> 33) % 9) - 4); /* -4..4: every sum exact */
    }
    host_gemm(0, 0, VM, VN, VK, ha, hb, ref);
    for (size_t g = 0; g < VG; g++)
        host_gemm(1, 1, VM, VN, VK, ha + g * VM * VK, hb + g * VK * VN, ref2 + g * VM * VN);

    cl_int rc;
    a = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, na * 4, ha, &rc);
    if (rc == CL_SUCCESS)
        b = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nb * 4, hb, &rc);
    if (rc == CL_SUCCESS)
        c = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, nc * 4, NULL, &rc);
    if (rc != CL_SUCCESS) {
        mpcl_strfmt(why, why_len, "clCreateBuffer for the check: %s", mpcl_cl_error_name(rc));
        goto done;
    }
    cl_command_queue q = ctx->queue;
    CLBlastStatusCode st = CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeNo,
                                        VM, VN, VK, 1.0f, a, 0, VK, b, 0, VN, 0.0f, c, 0, VN, &q, NULL);
    if (st == CLBlastSuccess)
        rc = clEnqueueReadBuffer(q, c, CL_TRUE, 0, VM * VN * 4, hc, 0, NULL, NULL);
    if (st != CLBlastSuccess || rc != CL_SUCCESS) {
        mpcl_strfmt(why, why_len, "CLBlastSgemm %dx%dx%d: %s", VM, VN, VK,
                    st != CLBlastSuccess ? mpcl_clblast_status_name((int)st) : mpcl_cl_error_name(rc));
        goto done;
    }
    for (size_t i = 0; i < VM * VN; i++)
        if (hc[i] != ref[i]) {
            mpcl_strfmt(why, why_len, "CLBlastSgemm %dx%dx%d gave C[%zu][%zu] = %g, exact %g", VM, VN,
                        VK, i / VN, i % VN, (double)hc[i], (double)ref[i]);
            goto done;
        }
    st = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, CLBlastTransposeYes, CLBlastTransposeYes, VM,
                                    VN, VK, 1.0f, a, 0, VM, VM * VK, b, 0, VK, VK * VN, 0.0f, c, 0, VN,
                                    VM * VN, VG, &q, NULL);
    if (st == CLBlastSuccess)
        rc = clEnqueueReadBuffer(q, c, CL_TRUE, 0, nc * 4, hc, 0, NULL, NULL);
    if (st != CLBlastSuccess || rc != CL_SUCCESS) {
        mpcl_strfmt(why, why_len, "CLBlastSgemmStridedBatched %dx%dx%d (transposed, batch %d): %s", VM,
                    VN, VK, VG,
                    st != CLBlastSuccess ? mpcl_clblast_status_name((int)st) : mpcl_cl_error_name(rc));
        goto done;
    }
    for (size_t i = 0; i < nc; i++)
        if (hc[i] != ref2[i]) {
            mpcl_strfmt(why, why_len,
                        "CLBlastSgemmStridedBatched %dx%dx%d (transposed) gave C[%zu] = %g, exact %g",
                        VM, VN, VK, i, (double)hc[i], (double)ref2[i]);
            goto done;
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
    return ok;
}

/* ----------------------------------------------------------------- api */

static void note_why(mpcl_context *ctx)
{
    size_t used = strlen(ctx->caps.chosen_why);
    if (used + 2 < sizeof ctx->caps.chosen_why)
        mpcl_strfmt(ctx->caps.chosen_why + used, sizeof ctx->caps.chosen_why - used, "; %s",
                    ctx->tuning_note);
}

void mpcl_tuning_apply(mpcl_context *ctx)
{
    const tuning_entry *e = find_entry(ctx);
    if (!e) {
        mpcl_strfmt(ctx->tuning_note, sizeof ctx->tuning_note,
                    "no CLBlast tuning for this device: CLBlast's own parameters");
        return;
    }
    const char *failed = "";
    CLBlastStatusCode st = apply_entry(ctx, e, 0, &failed);
    char why[160] = "";
    if (st == CLBlastSuccess && verify_sgemm(ctx, why, sizeof why)) {
        mpcl_strfmt(ctx->tuning_note, sizeof ctx->tuning_note,
                    "CLBlast Sgemm tuned for %s, verified exact", e->label);
        return;
    }
    if (st != CLBlastSuccess)
        mpcl_strfmt(why, sizeof why, "CLBlastOverrideParameters(%s): %s", failed,
                    mpcl_clblast_status_name((int)st));
    st = apply_entry(ctx, e, 1, &failed);
    mpcl_strfmt(ctx->tuning_note, sizeof ctx->tuning_note,
                "CLBlast tuning for %s rejected (%s): %s", e->label, why,
                st == CLBlastSuccess ? "CLBlast's own parameters restored"
                                     : "restoring CLBlast's own parameters failed too");
    note_why(ctx);
}

mpcl_status mpcl_tuning_set(mpcl_context *ctx, int on)
{
    mpcl_status s = mpcl_check_ctx(ctx, "mpcl_tuning_set");
    if (s != MPCL_OK)
        return s;
    const tuning_entry *e = find_entry(ctx);
    if (!e)
        return mpcl_set_error(ctx, MPCL_ERR_UNSUPPORTED, "no CLBlast tuning for device '%s'",
                              ctx->desc.name);
    const char *failed = "";
    CLBlastStatusCode st = apply_entry(ctx, e, on ? 0 : 1, &failed);
    if (st != CLBlastSuccess)
        return mpcl_set_error(ctx, MPCL_ERR_CLBLAST, "CLBlastOverrideParameters(%s) for %s: %s",
                              failed, e->label, mpcl_clblast_status_name((int)st));
    char why[160];
    if (on && !verify_sgemm(ctx, why, sizeof why)) {
        apply_entry(ctx, e, 1, &failed);
        mpcl_strfmt(ctx->tuning_note, sizeof ctx->tuning_note,
                    "CLBlast tuning for %s rejected (%s): CLBlast's own parameters restored",
                    e->label, why);
        note_why(ctx);
        return mpcl_set_error(ctx, MPCL_ERR_CLBLAST, "mpcl_tuning_set: %s", ctx->tuning_note);
    }
    return MPCL_OK;
}
