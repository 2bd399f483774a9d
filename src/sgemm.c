/* sgemm.c — mpcl's own Sgemm kernel (cl/sgemm.cl) and the choice, per GEMM
 * shape, between it and CLBlast's Sgemm (docs/gemm.md).
 *
 * CLBlast is the BLAS: every shape starts there. The router (gemm.c) asks
 * mpcl_sgemm_pick at a shape's first call; with a cache directory the
 * shape is timed there, on the device, once: CLBlast's Sgemm as the router
 * runs it (with the context's tuning and a lent temporary buffer) against
 * the own kernel in a few block shapes (6 or 8 rows of two or three
 * vectors of the device's native float width, 14 rows of two; then, for a
 * long K, the best of them with K split into chunks of 512). Each candidate runs once to warm
 * up (program build), then three times; the fastest run counts. The own
 * kernel wins only when its best is below CLBlast's. The verdict stays in
 * the context and in <cache dir>/sgemm-<device hash>.txt (float GEMMs: one
 * file and one build of the kernels for every precision mode):
 *   mpcl-sgemm 1
 *   own|clblast M N K TRANS SIG MR VW NV KC        (one line per shape;
 *                                                   TRANS: A transposed 1, B 2)
 * SIG is a hash of the CLBlast parameters the context applied (mpcl tune
 * changes them, and the verdict with them). Without a cache directory
 * (oclgrind runs, MPCL_NO_CACHE), while the tuner records shapes, or for
 * shapes the kernel does not take (a transposed B, a batch, sizes past
 * int), CLBlast runs. MPCL_SGEMM=clblast|auto|own[:MR:VW:NV:KC] overrides
 * the choice (tests force each block shape and a split K with it). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define SG_REPS 3
#define SG_SPLIT_KC 512        /* K chunk of the split candidates */
#define SG_SPLIT_MIN_K 4096    /* a K from which a split is tried */
#define SG_FILE_MAX 512        /* lines of the cache file read at most */

int mpcl_sgemm_takes(const mpcl_xgemm *x)
{
    /* int indices in the kernels: C's and B's element counts too
     * (sgemm_edge's and sgemm_transpose's items) */
    return !x->half && (!x->store16 || x->baseline) && x->batch <= 1 && x->m <= INT_MAX &&
           x->n <= INT_MAX && x->k <= INT_MAX && x->m * x->n <= INT_MAX &&
           x->n * x->k <= INT_MAX && x->lda <= INT_MAX && x->ldb <= INT_MAX &&
           x->ldc <= INT_MAX && x->a_off <= UINT_MAX && x->b_off <= UINT_MAX &&
           x->c_off <= UINT_MAX;
}

/* Bytes of one element of x's operands. */
static size_t sg_elem_size(const mpcl_xgemm *x)
{
    return x->store16 ? 2 : sizeof(cl_float);
}

/* The device's native float vector width, as a block width of 4, 8 or 16. */
static int native_vw(const mpcl_context *ctx)
{
    cl_uint w = 0;
    clGetDeviceInfo(ctx->device, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT, sizeof w, &w, NULL);
    return w >= 16 ? 16 : w >= 8 ? 8 : 4;
}

static mpcl_status sg_kernel(mpcl_context *ctx, const mpcl_sgemm_cfg *cfg, const mpcl_xgemm *x,
                             const char *name, cl_kernel *k)
{
    char defs[MPCL_SPEC_DEFINES_LEN];
    mpcl_strfmt(defs, sizeof defs, "-DSG_MR=%d -DSG_VW=%d -DSG_NV=%d -DSG_TA=%d -DSG_CF=%d",
                cfg->mr, cfg->vw, cfg->nv, x->trans_a ? 1 : 0, x->store16 && x->c_f32 ? 1 : 0);
    /* float operands: the fp32 build serves every mode's contexts; 16-bit
     * ones: the context's variant (its store_t) */
    return mpcl_kernel_get_spec(ctx, "sgemm", x->store16 ? mpcl_ctx_variant(ctx) : MPCL_VARIANT_FP32,
                                defs, name, k);
}

static mpcl_status sg_arg_error(mpcl_context *ctx, const char *what, cl_int rc)
{
    return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clSetKernelArg for the Sgemm kernel failed: %s",
                          what, mpcl_cl_error_name(rc));
}

/* sgemm_edge over rows [r0, r0 + rows) x columns [c0, c0 + cols), one
 * item per element. Few elements (the columns beside the blocks of a
 * weight gradient: 16 x 6 with K = B*OH*OW = 6400 in lenet5) would make
 * one work-group at the device's 1-D size, one compute unit walking every
 * item's whole K while the others idle: the items are then spread over
 * groups that give every compute unit one (LeNet-5's,
 * 2 cores: 0.77 -> 0.42 ms on PoCL, 1.41 -> 0.75 ms on Intel's runtime in
 * fp16). */
#define SG_EDGE_STEP 8
static mpcl_status sg_edge(mpcl_context *ctx, const mpcl_xgemm *x, const mpcl_sgemm_cfg *cfg,
                           const char *what, size_t r0, size_t c0, size_t rows, size_t cols)
{
    if (!rows || !cols)
        return MPCL_OK;
    cl_kernel k;
    mpcl_status s = sg_kernel(ctx, cfg, x, "sgemm_edge", &k);
    if (s != MPCL_OK)
        return s;
    const size_t items = rows * cols;
    cl_int kt = (cl_int)x->k, r = (cl_int)r0, c = (cl_int)c0, nc = (cl_int)cols;
    cl_int ni = (cl_int)items;
    cl_int lda = (cl_int)x->lda, ldb = (cl_int)x->ldb, ldc = (cl_int)x->ldc;
    cl_uint ao = (cl_uint)x->a_off, bo = (cl_uint)x->b_off, co = (cl_uint)x->c_off;
    cl_int rc = mpcl_kernel_args(k, 16, sizeof kt, &kt, sizeof r, &r, sizeof c, &c, sizeof nc, &nc,
                                 sizeof ni, &ni, sizeof(cl_mem), &x->a, sizeof ao, &ao,
                                 sizeof lda, &lda, sizeof(cl_mem), &x->b, sizeof bo, &bo,
                                 sizeof ldb, &ldb, sizeof(cl_mem), &x->c, sizeof co, &co,
                                 sizeof ldc, &ldc, sizeof x->alpha, &x->alpha, sizeof x->beta,
                                 &x->beta);
    if (rc != CL_SUCCESS)
        return sg_arg_error(ctx, what, rc);
    const size_t units = ctx->caps.compute_units ? ctx->caps.compute_units : 1;
    const size_t wg1 = mpcl_wg_1d(ctx);
    if (units > 1 && items < units * wg1) {
        /* a multiple of SG_EDGE_STEP: PoCL compiles a kernel again for
         * each local size */
        size_t wg = ((items + units - 1) / units + SG_EDGE_STEP - 1) / SG_EDGE_STEP * SG_EDGE_STEP;
        size_t lim = mpcl_wg_limit(ctx, k);
        if (lim > ctx->max_item[0])
            lim = ctx->max_item[0];
        if (wg > lim)
            wg = lim;
        const size_t global = (items + wg - 1) / wg * wg;
        return mpcl_launch(ctx, k, what, 1, &global, &wg);
    }
    return mpcl_launch_1d(ctx, k, what, items);
}

/* B's rows SG_ALIAS_BYTES apart (or a multiple) fall in one set of a CPU's
 * L1 cache: a work item streaming down such rows misses at every row
 * (1024^3: 115 GFLOP/s; with rows 4224 bytes apart, 194). Such a B is
 * copied first with rows SG_PAD floats longer. */
#define SG_ALIAS_BYTES 4096
#define SG_PAD 16

/* x with B in a copy whose rows are SG_PAD floats longer, where B's rows
 * are a multiple of SG_ALIAS_BYTES apart and B is read often enough to pay
 * for the copy (at least SG_ALIAS_READS row blocks of C: 1024^3 with
 * blocks of 8 rows reads it 128 times and gains 1.9x; wide-cnn's
 * 64x50176x288 reads its 58 MB B 8 times and lost 1.4x to the copy);
 * else x unchanged. Callers that make B (conv.c's column matrices) choose
 * rows off the stride instead. */
#define SG_ALIAS_READS 64
static mpcl_status unalias_b(mpcl_context *ctx, const char *what, const mpcl_sgemm_cfg *cfg,
                             mpcl_xgemm *x)
{
    const size_t es = sg_elem_size(x);
    if ((x->ldb * es) % SG_ALIAS_BYTES != 0 || x->k < 64 || x->m / (size_t)cfg->mr < SG_ALIAS_READS)
        return MPCL_OK;
    const size_t ld = x->ldb + SG_PAD;
    cl_mem p;
    mpcl_status s = mpcl_scratch(ctx, MPCL_SCRATCH_GEMM_P, x->k * ld * es, &p);
    if (s != MPCL_OK)
        return s;
    const size_t src[3] = {x->b_off * es, 0, 0}, dst[3] = {0, 0, 0};
    const size_t region[3] = {x->n * es, x->k, 1};
    cl_int rc = clEnqueueCopyBufferRect(ctx->queue, x->b, p, src, dst, region, x->ldb * es,
                                        0, ld * es, 0, 0, NULL, NULL);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: clEnqueueCopyBufferRect of B for the Sgemm "
                              "kernel failed: %s", what, mpcl_cl_error_name(rc));
    x->b = p;
    x->b_off = 0;
    x->ldb = ld;
    return MPCL_OK;
}

/* x with B given transposed (N x K) copied to K x N (scratch slot
 * MPCL_SCRATCH_GEMM_P, rows SG_PAD longer where N's rows would lie a
 * multiple of SG_ALIAS_BYTES apart), trans_b cleared: the kernel reads rows
 * of B. (Weights of linear layers are stored (out, in): their forward
 * product is y = x W^T.) */
static mpcl_status untranspose_b(mpcl_context *ctx, const char *what, const mpcl_sgemm_cfg *cfg,
                                 mpcl_xgemm *x)
{
    const size_t es = sg_elem_size(x);
    const size_t ld = (x->n * es) % SG_ALIAS_BYTES == 0 ? x->n + SG_PAD : x->n;
    cl_mem p;
    cl_kernel k;
    mpcl_status s = mpcl_scratch(ctx, MPCL_SCRATCH_GEMM_P, x->k * ld * es, &p);
    if (s == MPCL_OK)
        s = sg_kernel(ctx, cfg, x, "sgemm_transpose", &k);
    if (s != MPCL_OK)
        return s;
    cl_int n = (cl_int)x->n, kk = (cl_int)x->k, ldb = (cl_int)x->ldb, ldd = (cl_int)ld;
    cl_uint bo = (cl_uint)x->b_off;
    cl_int rc = mpcl_kernel_args(k, 7, sizeof n, &n, sizeof kk, &kk, sizeof(cl_mem), &x->b,
                                 sizeof bo, &bo, sizeof ldb, &ldb, sizeof(cl_mem), &p, sizeof ldd, &ldd);
    if (rc != CL_SUCCESS)
        return sg_arg_error(ctx, what, rc);
    s = mpcl_launch_1d(ctx, k, what, x->n * x->k);
    if (s != MPCL_OK)
        return s;
    x->b = p;
    x->b_off = 0;
    x->ldb = ld;
    x->trans_b = 0;
    return MPCL_OK;
}

mpcl_status mpcl_sgemm_own(mpcl_context *ctx, const mpcl_xgemm *x0, const mpcl_sgemm_cfg *cfg,
                           const char *what)
{
    mpcl_xgemm xb = *x0;
    const mpcl_xgemm *x = &xb;
    mpcl_status s0 = xb.trans_b ? untranspose_b(ctx, what, cfg, &xb) : unalias_b(ctx, what, cfg, &xb);
    if (s0 != MPCL_OK)
        return s0;
    const size_t nr = (size_t)cfg->vw * (size_t)cfg->nv;
    const size_t m0 = x->m - x->m % (size_t)cfg->mr, n0 = x->n - x->n % nr;
    size_t z = cfg->kc > 0 ? (x->k + (size_t)cfg->kc - 1) / (size_t)cfg->kc : 1;
    mpcl_status s = MPCL_OK;
    if (m0 && n0) {
        cl_mem part = x->c; /* not read without a split */
        if (z > 1)
            s = mpcl_gemm_part_buffer(ctx, z * m0 * n0, &part);
        cl_kernel k;
        if (s == MPCL_OK)
            s = sg_kernel(ctx, cfg, x, "sgemm_tile", &k);
        if (s != MPCL_OK)
            return s;
        cl_int kt = (cl_int)x->k, kc = z > 1 ? cfg->kc : (cl_int)x->k, to_part = z > 1;
        cl_int lda = (cl_int)x->lda, ldb = (cl_int)x->ldb, ldc = (cl_int)x->ldc;
        cl_uint ao = (cl_uint)x->a_off, bo = (cl_uint)x->b_off, co = (cl_uint)x->c_off;
        cl_int rc = mpcl_kernel_args(
            k, 15, sizeof kt, &kt, sizeof kc, &kc, sizeof(cl_mem), &x->a, sizeof ao, &ao, sizeof lda,
            &lda, sizeof(cl_mem), &x->b, sizeof bo, &bo, sizeof ldb, &ldb, sizeof(cl_mem), &x->c,
            sizeof co, &co, sizeof ldc, &ldc, sizeof x->alpha, &x->alpha, sizeof x->beta, &x->beta,
            sizeof to_part, &to_part, sizeof(cl_mem), &part);
        if (rc != CL_SUCCESS)
            return sg_arg_error(ctx, what, rc);
        const size_t global[3] = {m0 / (size_t)cfg->mr, n0 / nr, z}, local[3] = {1, 1, 1};
        s = mpcl_launch(ctx, k, what, 3, global, local);
        if (s == MPCL_OK && z > 1) {
            s = sg_kernel(ctx, cfg, x, "sgemm_reduce", &k);
            if (s != MPCL_OK)
                return s;
            cl_int zc = (cl_int)z;
            rc = mpcl_kernel_args(k, 7, sizeof zc, &zc, sizeof(cl_mem), &part, sizeof(cl_mem), &x->c,
                                  sizeof co, &co, sizeof ldc, &ldc, sizeof x->alpha, &x->alpha,
                                  sizeof x->beta, &x->beta);
            if (rc != CL_SUCCESS)
                return sg_arg_error(ctx, what, rc);
            const size_t g2[2] = {n0, m0};
            s = mpcl_launch(ctx, k, what, 2, g2, NULL);
        }
    }
    if (s == MPCL_OK) /* the columns right of the blocks, beside them */
        s = sg_edge(ctx, x, cfg, what, 0, n0, m0, x->n - n0);
    if (s == MPCL_OK) /* the rows below the blocks, all columns */
        s = sg_edge(ctx, x, cfg, what, m0, 0, x->m - m0, x->n);
    return s;
}

/* ------------------------------------------------------------ the choice */

/* The verdict's fourth field: A transposed (1), B transposed (2). */
static unsigned long long trans_code(const mpcl_xgemm *x)
{
    return (unsigned long long)(x->trans_a ? 1 : 0) | (x->trans_b ? 2u : 0u);
}

/* The verdict's fifth field: a hash of CLBlast's parameters (the
 * reference of float products), or for 16-bit operands that hash with the
 * variant's name and whether C is float (their reference is another path,
 * and the kernel another build). */
static unsigned long long shape_sig(const mpcl_context *ctx, const mpcl_xgemm *x)
{
    const uint64_t sig = ctx->clblast_sig[0];
    if (!x->store16)
        return (unsigned long long)sig;
    char v[48];
    mpcl_strfmt(v, sizeof v, "%s%s", mpcl_variant_name(mpcl_ctx_variant(ctx)),
                x->c_f32 ? " c-f32" : "");
    return (unsigned long long)mpcl_hash64(v, strlen(v), mpcl_hash64(&sig, sizeof sig, MPCL_HASH_SEED));
}

static uint64_t shape_key(const mpcl_context *ctx, const mpcl_xgemm *x)
{
    const unsigned long long v[5] = {x->m, x->n, x->k, trans_code(x),
                                     shape_sig(ctx, x)};
    return mpcl_hash64(v, sizeof v, MPCL_HASH_SEED);
}

static void choice_path(const mpcl_context *ctx, char *dst, size_t len)
{
    mpcl_strfmt(dst, len, "%s/sgemm-%016llx.txt", ctx->cache_dir,
                (unsigned long long)mpcl_device_hash(ctx));
}

typedef struct {
    unsigned long long v[5]; /* M N K TRANS SIG */
    int own;
    mpcl_sgemm_cfg cfg;
} sg_line;

/* The cache file's lines (0 when it is missing or does not parse). */
static size_t choice_read(const mpcl_context *ctx, sg_line *lines)
{
    char path[MPCL_PATH_LEN + 96], buf[256];
    choice_path(ctx, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = 0;
    int ok = fgets(buf, sizeof buf, f) && strcmp(buf, "mpcl-sgemm 1\n") == 0;
    while (ok && n < SG_FILE_MAX && fgets(buf, sizeof buf, f)) {
        sg_line *l = &lines[n];
        char name[16];
        int used = 0;
        int got = sscanf(buf, "%15s %llu %llu %llu %llu %llu %d %d %d %d%n", name, &l->v[0], &l->v[1],
                         &l->v[2], &l->v[3], &l->v[4], &l->cfg.mr, &l->cfg.vw, &l->cfg.nv, &l->cfg.kc,
                         &used);
        l->own = strcmp(name, "own") == 0;
        /* an own verdict names a block shape; a clblast one carries zeros */
        ok = got == 10 && strcmp(buf + used, "\n") == 0 && (l->own || strcmp(name, "clblast") == 0) &&
             (!l->own || (l->cfg.mr >= 1 && l->cfg.mr <= 16 &&
                          (l->cfg.vw == 4 || l->cfg.vw == 8 || l->cfg.vw == 16) && l->cfg.nv >= 1 &&
                          l->cfg.nv <= 3 && l->cfg.kc >= 0)) &&
             l->v[3] <= 3;
        if (!ok)
            break;
        n++;
    }
    ok = ok && !ferror(f);
    fclose(f);
    return ok ? n : 0;
}

/* Adds a verdict to the cache file through a temporary file and a rename
 * (an older verdict for the same shape dropped); failures are ignored. */
static void choice_write(mpcl_context *ctx, const sg_line *add)
{
    sg_line *have = malloc(SG_FILE_MAX * sizeof *have);
    if (!have)
        return;
    size_t n = choice_read(ctx, have);
    char path[MPCL_PATH_LEN + 96], tmp[MPCL_CACHE_TMP_LEN];
    choice_path(ctx, path, sizeof path);
    FILE *f = mpcl_cache_tmp_open(ctx, path, tmp, "w");
    if (!f) {
        free(have);
        return;
    }
    int ok = fprintf(f, "mpcl-sgemm 1\n") > 0;
    for (size_t i = 0; i <= n && ok; i++) {
        const sg_line *l = i < n ? &have[i] : add;
        if (i < n && memcmp(l->v, add->v, sizeof l->v) == 0)
            continue;
        ok = fprintf(f, "%s %llu %llu %llu %llu %llu %d %d %d %d\n", l->own ? "own" : "clblast",
                     l->v[0], l->v[1], l->v[2], l->v[3], l->v[4], l->cfg.mr, l->cfg.vw, l->cfg.nv,
                     l->cfg.kc) > 0;
    }
    mpcl_cache_tmp_commit(ctx, f, ok, tmp, path);
    free(have);
}

/* MPCL_SGEMM: -1 unset or auto, 0 clblast, 1 own (cfg filled; defaults for
 * the fields not given); -2 not understood (error set). */
static int env_choice(mpcl_context *ctx, const char *what, mpcl_sgemm_cfg *cfg)
{
    const char *e = getenv("MPCL_SGEMM");
    if (!e || !*e || strcmp(e, "auto") == 0)
        return -1;
    if (strcmp(e, "clblast") == 0)
        return 0;
    *cfg = (mpcl_sgemm_cfg){8, native_vw(ctx), 2, 0};
    if (strncmp(e, "own", 3) == 0) {
        int mr = cfg->mr, vw = cfg->vw, nv = cfg->nv, kc = cfg->kc, used = 0;
        const char *p = e + 3;
        if (!*p || (sscanf(p, ":%d:%d:%d:%d%n", &mr, &vw, &nv, &kc, &used) == 4 && !p[used] &&
                    mr >= 1 && mr <= 16 && (vw == 4 || vw == 8 || vw == 16) && nv >= 1 && nv <= 3 &&
                    kc >= 0)) {
            *cfg = (mpcl_sgemm_cfg){mr, vw, nv, kc};
            return 1;
        }
    }
    mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                   "%s: MPCL_SGEMM is \"%s\"; expected clblast, auto, own or own:MR:VW:NV:KC "
                   "(MR 1..16, VW 4, 8 or 16, NV 1..3, KC >= 0)",
                   what, e);
    return -2;
}

/* Seconds of the fastest of SG_REPS runs after a warm-up, or -1 when a run
 * fails. own 0: the reference, CLBlast as the router runs it (16-bit
 * operands: x->baseline). */
static double time_one(mpcl_context *ctx, const mpcl_xgemm *x, int own, const mpcl_sgemm_cfg *cfg)
{
    double best = -1.0;
    for (int r = 0; r <= SG_REPS; r++) {
        const double t0 = mpcl_now_s();
        int ok = own         ? mpcl_sgemm_own(ctx, x, cfg, "Sgemm choice") == MPCL_OK
                 : x->store16 ? x->baseline(ctx, x) == MPCL_OK
                              : mpcl_sgemm_clblast(ctx, x) == 0;
        ok = ok && clFinish(ctx->queue) == CL_SUCCESS;
        const double t = mpcl_now_s() - t0;
        if (!ok)
            return -1.0;
        if (r > 0 && (best < 0 || t < best))
            best = t;
    }
    return best;
}

static void remember(mpcl_context *ctx, uint64_t key, int own, const mpcl_sgemm_cfg *cfg)
{
    const size_t slot = ctx->sgemm_choice_n++ % MPCL_SGEMM_CHOICES;
    ctx->sgemm_choice[slot].key = key;
    ctx->sgemm_choice[slot].own = own;
    ctx->sgemm_choice[slot].cfg = *cfg;
}

/* Times CLBlast and the own kernel's candidates on x's shape, with C in a
 * temporary buffer (C = alpha AB + beta C must not run twice on the real
 * one). 1 when the own kernel won (cfg set), 0 when CLBlast did. */
static int measure(mpcl_context *ctx, const mpcl_xgemm *x, mpcl_sgemm_cfg *cfg)
{
    char saved[MPCL_ERR_LEN];
    mpcl_strfmt(saved, sizeof saved, "%s", ctx->err);
    cl_int rc;
    cl_mem c = clCreateBuffer(ctx->cl, CL_MEM_READ_WRITE, x->m * x->n * sizeof(cl_float), NULL, &rc);
    if (rc != CL_SUCCESS)
        return 0;
    const cl_float zero = 0.0f;
    int own = 0;
    if (clEnqueueFillBuffer(ctx->queue, c, &zero, sizeof zero, 0, x->m * x->n * sizeof(cl_float), 0,
                            NULL, NULL) == CL_SUCCESS) {
        mpcl_xgemm t = *x;
        t.c = c;
        t.c_off = 0;
        t.ldc = x->n;
        double best = time_one(ctx, &t, 0, NULL);
        const int vw = native_vw(ctx);
        static const int mrs[][2] = {{6, 2}, {8, 2}, {14, 2}, {6, 3}, {8, 3}}; /* MR, NV */
        mpcl_sgemm_cfg top = {0, 0, 0, 0};
        double top_t = -1.0;
        for (size_t i = 0; i < sizeof mrs / sizeof mrs[0]; i++) {
            const mpcl_sgemm_cfg cand = {mrs[i][0], vw, mrs[i][1], 0};
            const double tc = time_one(ctx, &t, 1, &cand);
            if (tc > 0 && (top_t < 0 || tc < top_t)) {
                top = cand;
                top_t = tc;
            }
        }
        if (top_t > 0 && x->k >= SG_SPLIT_MIN_K) {
            const mpcl_sgemm_cfg cand = {top.mr, top.vw, top.nv, SG_SPLIT_KC};
            const double tc = time_one(ctx, &t, 1, &cand);
            if (tc > 0 && tc < top_t) {
                top = cand;
                top_t = tc;
            }
        }
        if (top_t > 0 && (best < 0 || top_t < best)) {
            own = 1;
            *cfg = top;
        }
    }
    clReleaseMemObject(c);
    mpcl_strfmt(ctx->err, sizeof ctx->err, "%s", saved); /* a failed candidate is not an error */
    return own;
}

mpcl_status mpcl_sgemm_pick(mpcl_context *ctx, const mpcl_xgemm *x, const char *what, int *own,
                            mpcl_sgemm_cfg *cfg)
{
    *own = 0;
    if (!mpcl_sgemm_takes(x))
        return MPCL_OK;
    const int env = env_choice(ctx, what, cfg);
    if (env == -2)
        return MPCL_ERR_ARGUMENT;
    if (env >= 0) {
        *own = env;
        return MPCL_OK;
    }
    if (!ctx->cache_enabled || ctx->gemm_rec_on)
        return MPCL_OK;
    const uint64_t key = shape_key(ctx, x);
    const size_t kept = ctx->sgemm_choice_n < MPCL_SGEMM_CHOICES ? ctx->sgemm_choice_n
                                                                 : MPCL_SGEMM_CHOICES;
    for (size_t i = 0; i < kept; i++)
        if (ctx->sgemm_choice[i].key == key) {
            *own = ctx->sgemm_choice[i].own;
            *cfg = ctx->sgemm_choice[i].cfg;
            return MPCL_OK;
        }
    sg_line add = {{x->m, x->n, x->k, trans_code(x), shape_sig(ctx, x)},
                   0,
                   {0, 0, 0, 0}};
    sg_line *have = malloc(SG_FILE_MAX * sizeof *have);
    size_t n = have ? choice_read(ctx, have) : 0;
    int found = 0;
    for (size_t i = 0; i < n && !found; i++)
        if (memcmp(have[i].v, add.v, sizeof add.v) == 0) {
            add = have[i];
            found = 1;
        }
    free(have);
    if (!found) {
        add.own = measure(ctx, x, &add.cfg);
        choice_write(ctx, &add);
    }
    remember(ctx, key, add.own, &add.cfg);
    *own = add.own;
    *cfg = add.cfg;
    return MPCL_OK;
}
