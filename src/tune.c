/* tune.c — searches CLBlast's GEMM parameters on the device (mpcl_tune).
 *
 * What is searched, per precision (Sgemm; Hgemm where the device runs it):
 *   1. CLBlast's Xgemm kernel parameters (GEMMK 0, KREG 1): tile sizes MWG,
 *      NWG, KWG, work-group shape MDIMC x NDIMC (and MDIMA, NDIMB for the
 *      local-memory loads), vector widths VWM, VWN, unroll KWI, local
 *      memory SA, SB and strides STRM, STRN. Every candidate runs with
 *      XGEMM_MIN_INDIRECT_SIZE = 1, so that every shape takes Xgemm.
 *   2. Then the GemmRoutine threshold: the winner runs once more with
 *      every shape on CLBlast's direct kernel (XgemmDirect, its own
 *      parameters), and the threshold that gives each shape the faster of
 *      the two (as far as one cube-root threshold can) is kept.
 * XgemmDirect's parameters and the copy, pad and transpose kernels keep
 * CLBlast's values: every override makes CLBlast rebuild its whole GEMM
 * program, which costs seconds per candidate on CPU drivers (docs/tune.md),
 * so the budget goes to Xgemm, where the time is.
 *
 * The candidates: the cached winner (a search resumes), the built-in
 * starting points for the device type (tuning.c), then a local search:
 * each parameter of the best set doubled and halved in turn (then the
 * other device types' starting points), keeping the
 * constraints CLBlast's own tuner states (tile sizes multiples of the
 * work-group and vector sizes, local memory within the device's), the
 * work-group within the device's limit. A candidate is measured only after
 * it passed the exactness check (mpcl_clblast_verify: small integer GEMMs
 * of every transposition and a strided batch, bit for bit); CLBlast's
 * refusals and wrong results are recorded as rejected. The score is the
 * time of the search's shapes, each weighted by how often the model runs
 * it (calls), measured on the wall clock around clFinish.
 *
 * The search stops when the budget would be exceeded by one more candidate
 * (at the largest cost so far), when max_candidates is reached, or when no
 * untried neighbour of the best set is left. The winner is stored in the
 * cache file (tuning.c reads it) with every candidate tried, so that a
 * later `mpcl tune` goes on where this one stopped. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "internal.h"

#include <clblast_c.h>

#ifndef MPCL_CLBLAST_VERSION
#define MPCL_CLBLAST_VERSION "unknown"
#endif

#define TUNE_DEFAULT_BUDGET 60.0
#define TUNE_MAX_TRIED 512
#define TUNE_MIN_REP_S 0.02 /* time each shape over at least this long */
#define TUNE_MAX_REPS 20
#define TUNE_MIN_REPS 3
#define TUNE_CONFIRM 3 /* the best sets measured a second time at the end */
#define TUNE_DIRECT_ALL ((size_t)1 << 20) /* a threshold above every shape: all direct */

/* Parameter indices in mpcl_xgemm_param_names order. */
enum { P_GEMMK, P_KREG, P_KWG, P_KWI, P_MDIMA, P_MDIMC, P_MWG, P_NDIMB, P_NDIMC, P_NWG, P_SA, P_SB,
       P_STRM, P_STRN, P_VWM, P_VWN };

/* ------------------------------------------------------- shape recording */

mpcl_status mpcl_gemm_record(mpcl_context *ctx, int on)
{
    mpcl_status s = mpcl_check_ctx(ctx, "mpcl_gemm_record");
    if (s != MPCL_OK)
        return s;
    ctx->gemm_rec_on = on != 0;
    if (on)
        ctx->gemm_rec_n = 0;
    return MPCL_OK;
}

size_t mpcl_gemm_recorded(const mpcl_context *ctx, mpcl_gemm_shape *out, size_t cap)
{
    if (!ctx)
        return 0;
    for (size_t i = 0; out && i < cap && i < ctx->gemm_rec_n; i++)
        out[i] = ctx->gemm_rec[i];
    return ctx->gemm_rec_n;
}

void mpcl_gemm_note_shape(mpcl_context *ctx, int half, int ta, int tb, size_t m, size_t n, size_t k,
                          size_t batch)
{
    if (!ctx->gemm_rec_on)
        return;
    for (size_t i = 0; i < ctx->gemm_rec_n; i++) {
        mpcl_gemm_shape *g = &ctx->gemm_rec[i];
        if (g->half == half && g->trans_a == ta && g->trans_b == tb && g->m == m && g->n == n &&
            g->k == k && g->batch == batch) {
            g->calls++;
            return;
        }
    }
    if (ctx->gemm_rec_n == ctx->gemm_rec_cap) {
        size_t cap = ctx->gemm_rec_cap ? 2 * ctx->gemm_rec_cap : 16;
        mpcl_gemm_shape *p = realloc(ctx->gemm_rec, cap * sizeof *p);
        if (!p)
            return; /* a shape missed by the recording, not an error of the GEMM */
        ctx->gemm_rec = p;
        ctx->gemm_rec_cap = cap;
    }
    mpcl_gemm_shape g = {half, ta, tb, m, n, k, batch, 1};
    ctx->gemm_rec[ctx->gemm_rec_n++] = g;
}

/* ------------------------------------------------------------- options */

void mpcl_tune_options_init(mpcl_tune_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->budget_s = TUNE_DEFAULT_BUDGET;
}

/* ---------------------------------------------------------- candidates */

static int pow2(size_t v) { return v && !(v & (v - 1)); }

/* CLBlast's constraints for Xgemm (GEMMK 0), the device's work-group and
 * local memory limits; 1 when the set may be tried. */
static int legal(const mpcl_context *ctx, int half, const size_t *p)
{
    for (int i = 0; i < MPCL_XGEMM_NPARAMS; i++)
        if (i != P_GEMMK && i != P_SA && i != P_SB && i != P_STRM && i != P_STRN && p[i] == 0)
            return 0;
    if (p[P_GEMMK] != 0 || p[P_KREG] != 1 || p[P_SA] > 1 || p[P_SB] > 1 || p[P_STRM] > 1 ||
        p[P_STRN] > 1)
        return 0;
    if (!pow2(p[P_VWM]) || p[P_VWM] > 16 || !pow2(p[P_VWN]) || p[P_VWN] > 16)
        return 0;
    if (p[P_MWG] > 256 || p[P_NWG] > 256 || p[P_KWG] > 64 || p[P_KWI] > 8)
        return 0;
    if (p[P_KWG] % p[P_KWI] || p[P_MWG] % (p[P_MDIMC] * p[P_VWM]) ||
        p[P_NWG] % (p[P_NDIMC] * p[P_VWN]) || p[P_MWG] % (p[P_MDIMA] * p[P_VWM]) ||
        p[P_NWG] % (p[P_NDIMB] * p[P_VWN]))
        return 0;
    const size_t wg = p[P_MDIMC] * p[P_NDIMC];
    if (wg % p[P_MDIMA] || wg % p[P_NDIMB] || p[P_KWG] % (wg / p[P_MDIMA]) ||
        p[P_KWG] % (wg / p[P_NDIMB]))
        return 0;
    if (wg > ctx->caps.max_work_group_size || p[P_MDIMC] > ctx->max_item[0] ||
        p[P_NDIMC] > ctx->max_item[1])
        return 0;
    const size_t es = half ? 2 : 4;
    const size_t lmem = ((p[P_SA] ? p[P_KWG] * p[P_MWG] : 0) + (p[P_SB] ? p[P_KWG] * p[P_NWG] : 0)) * es;
    return lmem <= ctx->caps.local_mem_bytes;
}

/* Without local memory the load shapes MDIMA, NDIMB are unused: the same
 * as the work-group's, so that such sets compare equal. */
static void normalise(size_t *p)
{
    if (!p[P_SA])
        p[P_MDIMA] = p[P_MDIMC];
    if (!p[P_SB])
        p[P_NDIMB] = p[P_NDIMC];
}

typedef struct {
    mpcl_clblast_params p;
    double secs;   /* weighted time of the shapes; < 0 rejected */
    char why[200]; /* rejected: why */
} tried_set;

typedef struct {
    mpcl_context *ctx;
    int half;
    const mpcl_gemm_shape *shapes;
    size_t ns;
    double flops; /* of the shapes, weighted */
    int batched;  /* a shape is strided-batched: the check covers that routine too */
    cl_mem a, b, c;
    cl_mem tmp;       /* CLBlast's temporary buffer, lent as the GEMM router does */
    size_t tmp_bytes;
    double *t_shape;  /* per shape, the candidate being measured */
    double *t_best;   /* per shape, the best so far */
    tried_set *tried;
    size_t ntried;
    const mpcl_tune_options *opt;
    double t0, budget_end;
    unsigned candidates, rejected;
    double best_secs, stock_secs;
    size_t best;
    double mean_cost; /* seconds a candidate costs: the largest so far */
    char last[256];
} search;

static int seen(const search *S, const mpcl_clblast_params *p)
{
    for (size_t i = 0; i < S->ntried; i++)
        if (!memcmp(S->tried[i].p.xgemm, p->xgemm, sizeof p->xgemm))
            return 1;
    return 0;
}

/* The next untried legal neighbour of the best set (each parameter
 * doubled, then halved, in turn; the group shape changes MDIMA / NDIMB
 * with it); 0 when none is left. */
static int next_neighbour(const search *S, mpcl_clblast_params *out)
{
    static const int order[] = {P_MWG, P_NWG, P_VWM, P_VWN, P_KWG, P_MDIMC, P_NDIMC, P_KWI,
                                P_SA,  P_SB,  P_STRM, P_STRN};
    const mpcl_clblast_params *b = &S->tried[S->best].p;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        for (int dir = 0; dir < 2; dir++) {
            mpcl_clblast_params c = *b;
            size_t *v = &c.xgemm[order[i]];
            if (order[i] == P_SA || order[i] == P_SB || order[i] == P_STRM || order[i] == P_STRN) {
                if (dir)
                    continue;
                *v = !*v;
                if (order[i] == P_SA)
                    c.xgemm[P_MDIMA] = c.xgemm[P_MDIMC];
                if (order[i] == P_SB)
                    c.xgemm[P_NDIMB] = c.xgemm[P_NDIMC];
            } else {
                if (dir == 0)
                    *v *= 2;
                else if (*v % 2 == 0)
                    *v /= 2;
                else
                    continue;
                if (order[i] == P_MDIMC && c.xgemm[P_SA])
                    c.xgemm[P_MDIMA] = c.xgemm[P_MDIMC];
                if (order[i] == P_NDIMC && c.xgemm[P_SB])
                    c.xgemm[P_NDIMB] = c.xgemm[P_NDIMC];
            }
            normalise(c.xgemm);
            c.min_indirect = 1;
            if (legal(S->ctx, S->half, c.xgemm) && !seen(S, &c)) {
                *out = c;
                return 1;
            }
        }
    return 0;
}

/* ----------------------------------------------------------- measuring */

/* One call of shape g as the GEMM router makes it: Sgemm with a lent
 * temporary buffer (grown here to what CLBlast asks for). */
static CLBlastStatusCode call_shape(search *S, const mpcl_gemm_shape *g)
{
    cl_mem tmp = NULL;
    if (!S->half && g->batch <= 1) {
        const mpcl_xgemm x = {.trans_a = g->trans_a, .trans_b = g->trans_b, .m = g->m, .n = g->n,
                              .k = g->k, .batch = 1, .lda = g->trans_a ? g->m : g->k,
                              .ldb = g->trans_b ? g->k : g->n, .ldc = g->n};
        const size_t bytes = mpcl_clblast_temp_bytes(S->ctx, &x);
        if (bytes > S->tmp_bytes) {
            if (S->tmp)
                clReleaseMemObject(S->tmp);
            cl_int rc;
            S->tmp = clCreateBuffer(S->ctx->cl, CL_MEM_READ_WRITE, bytes, NULL, &rc);
            S->tmp_bytes = rc == CL_SUCCESS ? bytes : 0;
            if (rc != CL_SUCCESS)
                S->tmp = NULL;
        }
        if (bytes && S->tmp)
            tmp = S->tmp;
    }
    return (CLBlastStatusCode)mpcl_clblast_gemm(S->ctx, S->half, g->trans_a, g->trans_b, g->m, g->n,
                                                g->k, g->batch, S->a, S->b, S->c, tmp);
}

/* Seconds per call of shape g, or < 0 with S->last: a warm-up call, then
 * calls timed one by one (at least TUNE_MIN_REPS, until TUNE_MIN_REP_S
 * have passed, at most TUNE_MAX_REPS); the fastest counts, because what
 * else runs on the machine only ever makes a call slower. */
static double time_shape(search *S, const mpcl_gemm_shape *g)
{
    CLBlastStatusCode st = call_shape(S, g);
    cl_int rc = st == CLBlastSuccess ? clFinish(S->ctx->queue) : CL_SUCCESS;
    const double start = mpcl_now_s();
    double best = -1.0;
    for (int reps = 0; st == CLBlastSuccess && rc == CL_SUCCESS && reps < TUNE_MAX_REPS; reps++) {
        const double t = mpcl_now_s();
        st = call_shape(S, g);
        if (st == CLBlastSuccess)
            rc = clFinish(S->ctx->queue);
        const double dt = mpcl_now_s() - t;
        if (best < 0 || dt < best)
            best = dt;
        if (reps + 1 >= TUNE_MIN_REPS && mpcl_now_s() - start >= TUNE_MIN_REP_S)
            break;
    }
    if (st != CLBlastSuccess || rc != CL_SUCCESS) {
        mpcl_strfmt(S->last, sizeof S->last, "%zux%zux%zu: %s", g->m, g->n, g->k,
                    st != CLBlastSuccess ? mpcl_clblast_status_name((int)st) : mpcl_cl_error_name(rc));
        return -1.0;
    }
    return best;
}

/* The weighted time of every shape into S->t_shape; < 0 on a failure. */
static double time_shapes(search *S)
{
    double total = 0.0;
    for (size_t i = 0; i < S->ns; i++) {
        double t = time_shape(S, &S->shapes[i]);
        if (t < 0)
            return t;
        S->t_shape[i] = t;
        total += t * (S->shapes[i].calls ? S->shapes[i].calls : 1);
    }
    return total;
}

static double gflops_of(const search *S, double secs) { return secs > 0 ? S->flops / secs * 1e-9 : 0.0; }

static void report(search *S)
{
    if (!S->opt->progress)
        return;
    mpcl_tune_progress p = {
        S->half ? "half" : "single", S->candidates, S->rejected, mpcl_now_s() - S->t0,
        S->opt->budget_s > 0 ? S->opt->budget_s : TUNE_DEFAULT_BUDGET,
        S->best_secs > 0 ? gflops_of(S, S->best_secs) : 0.0,
        S->stock_secs > 0 ? gflops_of(S, S->stock_secs) : 0.0, S->last,
    };
    S->opt->progress(&p, S->opt->user);
}

static void params_text(const mpcl_clblast_params *p, char *dst, size_t len)
{
    mpcl_strfmt(dst, len, "MWG %zu NWG %zu KWG %zu MDIMC %zu NDIMC %zu VWM %zu VWN %zu KWI %zu SA %zu SB %zu",
                p->xgemm[P_MWG], p->xgemm[P_NWG], p->xgemm[P_KWG], p->xgemm[P_MDIMC], p->xgemm[P_NDIMC],
                p->xgemm[P_VWM], p->xgemm[P_VWN], p->xgemm[P_KWI], p->xgemm[P_SA], p->xgemm[P_SB]);
}

/* Applies, verifies and measures candidate c; records it in S->tried. */
static void try_candidate(search *S, const mpcl_clblast_params *c)
{
    if (S->ntried == TUNE_MAX_TRIED)
        return;
    tried_set *t = &S->tried[S->ntried++];
    memset(t, 0, sizeof *t);
    t->p = *c;
    t->p.min_indirect = 1;
    S->candidates++;
    char desc[160];
    params_text(&t->p, desc, sizeof desc);
    const char *failed = "";
    int st = mpcl_clblast_override(S->ctx, S->half, &t->p, &failed);
    if (st != CLBlastSuccess) {
        mpcl_strfmt(t->why, sizeof t->why, "CLBlastOverrideParameters(%s): %s", failed,
                    mpcl_clblast_status_name(st));
    } else if (!mpcl_clblast_verify(S->ctx, S->half, S->batched, t->why, sizeof t->why)) {
        /* why says what differed */
    } else {
        t->secs = time_shapes(S);
        if (t->secs < 0)
            mpcl_strfmt(t->why, sizeof t->why, "%s", S->last);
    }
    if (t->why[0]) {
        t->secs = -1.0;
        S->rejected++;
        mpcl_strfmt(S->last, sizeof S->last, "rejected %s: %s", desc, t->why);
    } else {
        const int better = S->best_secs <= 0 || t->secs < S->best_secs;
        mpcl_strfmt(S->last, sizeof S->last, "%.1f GFLOP/s %s%s", gflops_of(S, t->secs), desc,
                    better ? " (best)" : "");
        if (better) {
            S->best_secs = t->secs;
            S->best = S->ntried - 1;
            memcpy(S->t_best, S->t_shape, S->ns * sizeof *S->t_best);
        }
    }
    report(S);
}

/* ------------------------------------------------------------- storing */

static cJSON *params_json(const mpcl_clblast_params *p)
{
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < MPCL_XGEMM_NPARAMS; i++)
        cJSON_AddNumberToObject(o, mpcl_xgemm_param_names[i], (double)p->xgemm[i]);
    return o;
}

static int params_from_array(const cJSON *a, mpcl_clblast_params *p)
{
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != MPCL_XGEMM_NPARAMS)
        return 0;
    for (int i = 0; i < MPCL_XGEMM_NPARAMS; i++) {
        const cJSON *v = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1024)
            return 0;
        p->xgemm[i] = (size_t)v->valuedouble;
    }
    return 1;
}

/* The entry of one precision, as tuning.c reads it (docs/tune.md). */
static cJSON *entry_json(const search *S, const mpcl_clblast_params *win, double seconds, int own)
{
    cJSON *e = cJSON_CreateObject();
    if (!e)
        return NULL;
    if (own) {
        cJSON_AddTrueToObject(e, "own");
    } else {
        cJSON_AddItemToObject(e, "Xgemm", params_json(win));
        cJSON_AddNumberToObject(e, "XGEMM_MIN_INDIRECT_SIZE", (double)win->min_indirect);
    }
    cJSON_AddNumberToObject(e, "gflops", gflops_of(S, S->best_secs));
    if (S->stock_secs > 0)
        cJSON_AddNumberToObject(e, "stock_gflops", gflops_of(S, S->stock_secs));
    cJSON_AddNumberToObject(e, "search_seconds", seconds);
    cJSON_AddNumberToObject(e, "candidates", S->candidates);
    cJSON_AddNumberToObject(e, "rejected", S->rejected);
    cJSON *shapes = cJSON_AddArrayToObject(e, "shapes");
    for (size_t i = 0; shapes && i < S->ns; i++) {
        const mpcl_gemm_shape *g = &S->shapes[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "m", (double)g->m);
        cJSON_AddNumberToObject(o, "n", (double)g->n);
        cJSON_AddNumberToObject(o, "k", (double)g->k);
        cJSON_AddNumberToObject(o, "trans_a", g->trans_a);
        cJSON_AddNumberToObject(o, "trans_b", g->trans_b);
        cJSON_AddNumberToObject(o, "batch", (double)g->batch);
        cJSON_AddNumberToObject(o, "calls", g->calls);
        cJSON_AddNumberToObject(o, "tuned_ms", S->t_best[i] * 1e3);
        cJSON_AddItemToArray(shapes, o);
    }
    cJSON *tried = cJSON_AddArrayToObject(e, "tried");
    for (size_t i = 0; tried && i < S->ntried; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON *a = cJSON_AddArrayToObject(o, "params");
        for (int j = 0; a && j < MPCL_XGEMM_NPARAMS; j++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber((double)S->tried[i].p.xgemm[j]));
        if (S->tried[i].secs < 0)
            cJSON_AddStringToObject(o, "rejected", S->tried[i].why);
        else
            cJSON_AddNumberToObject(o, "gflops", gflops_of(S, S->tried[i].secs));
        cJSON_AddItemToArray(tried, o);
    }
    return e;
}

/* Writes the entry of S's precision into the cache file (keeping the other
 * precision's), through a temporary file and a rename. */
static mpcl_status store(search *S, cJSON *entry, char *path, size_t path_len)
{
    mpcl_context *ctx = S->ctx;
    mpcl_tuning_path(ctx, path, path_len);
    char why[MPCL_PATH_LEN + 160];
    cJSON *root = mpcl_tuning_load(ctx, why, sizeof why);
    if (!root) {
        root = cJSON_CreateObject();
        char hash[32];
        mpcl_strfmt(hash, sizeof hash, "%016llx", (unsigned long long)mpcl_device_hash(ctx));
        cJSON_AddStringToObject(root, "format", "mpcl-clblast-tuning");
        cJSON_AddNumberToObject(root, "version", MPCL_TUNING_FORMAT_VERSION);
        cJSON_AddStringToObject(root, "device_hash", hash);
        cJSON_AddStringToObject(root, "clblast", MPCL_CLBLAST_VERSION);
        cJSON_AddStringToObject(root, "platform", ctx->caps.platform);
        cJSON_AddStringToObject(root, "device", ctx->caps.device);
        cJSON_AddStringToObject(root, "driver", ctx->caps.driver_version);
    }
    const char *pname = S->half ? "half" : "single";
    cJSON_DeleteItemFromObjectCaseSensitive(root, pname);
    cJSON_AddItemToObject(root, pname, entry);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text)
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "mpcl_tune: out of host memory for %s", path);
    char tmp[MPCL_CACHE_TMP_LEN];
    FILE *f = mpcl_cache_tmp_open(ctx, path, tmp, "w");
    const int ok = f && mpcl_cache_tmp_commit(ctx, f, fputs(text, f) >= 0 && fputc('\n', f) != EOF, tmp, path);
    free(text);
    if (!ok) {
        return mpcl_set_error(ctx, MPCL_ERR_IO, "mpcl_tune: cannot write the tuning cache %s", path);
    }
    return MPCL_OK;
}

/* ---------------------------------------------------------------- search */

static const mpcl_gemm_shape default_shapes[] = {
    {0, 0, 0, 256, 256, 256, 1, 1},
    {0, 0, 0, 512, 512, 512, 1, 1},
    {0, 0, 0, 1024, 1024, 1024, 1, 1},
};

static mpcl_status alloc_buffers(search *S)
{
    size_t na = 0, nb = 0, nc = 0;
    for (size_t i = 0; i < S->ns; i++) {
        const mpcl_gemm_shape *g = &S->shapes[i];
        const size_t bt = g->batch ? g->batch : 1;
        if (g->m * g->k * bt > na)
            na = g->m * g->k * bt;
        if (g->k * g->n * bt > nb)
            nb = g->k * g->n * bt;
        if (g->m * g->n * bt > nc)
            nc = g->m * g->n * bt;
        S->batched |= bt > 1;
        S->flops += 2.0 * (double)g->m * (double)g->n * (double)g->k * (double)bt *
                    (double)(g->calls ? g->calls : 1);
    }
    const size_t es = S->half ? 2 : 4, n = na > nb ? na : nb;
    void *host = malloc(n * es);
    if (!host)
        return mpcl_set_error(S->ctx, MPCL_ERR_NOMEM, "mpcl_tune: out of host memory");
    for (size_t i = 0; i < n; i++) {
        const float v = (float)((int)(i % 7) - 3) * 0.25f;
        if (S->half)
            ((uint16_t *)host)[i] = mpcl_half_from_float(v);
        else
            ((float *)host)[i] = v;
    }
    cl_int rc;
    S->a = clCreateBuffer(S->ctx->cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, na * es, host, &rc);
    if (rc == CL_SUCCESS)
        S->b = clCreateBuffer(S->ctx->cl, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nb * es, host, &rc);
    if (rc == CL_SUCCESS)
        S->c = clCreateBuffer(S->ctx->cl, CL_MEM_READ_WRITE, nc * es, NULL, &rc);
    free(host);
    if (rc != CL_SUCCESS)
        return mpcl_set_error(S->ctx, MPCL_ERR_OPENCL,
                              "mpcl_tune: clCreateBuffer for GEMMs up to %zu elements: %s", n,
                              mpcl_cl_error_name(rc));
    return MPCL_OK;
}

/* The candidates the cache file lists for this precision: its winner
 * first (resumed), then every tried set (skipped: already known). */
static void resume(search *S, mpcl_clblast_params *win, int *has_win)
{
    char why[MPCL_PATH_LEN + 160];
    cJSON *root = mpcl_tuning_load(S->ctx, why, sizeof why);
    *has_win = 0;
    if (!root)
        return;
    *has_win = mpcl_tuning_entry_params(root, S->half, win, why, sizeof why) == 1; /* 2: own */
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, S->half ? "half" : "single");
    const cJSON *tried = cJSON_GetObjectItemCaseSensitive(e, "tried");
    const cJSON *it;
    cJSON_ArrayForEach(it, tried)
    {
        const cJSON *rej = cJSON_GetObjectItemCaseSensitive(it, "rejected");
        mpcl_clblast_params p = {{0}, 1};
        if (!cJSON_IsString(rej) || !params_from_array(cJSON_GetObjectItemCaseSensitive(it, "params"), &p))
            continue;
        /* a set rejected before is not tried again */
        if (S->ntried < TUNE_MAX_TRIED && !seen(S, &p)) {
            tried_set *t = &S->tried[S->ntried++];
            memset(t, 0, sizeof *t);
            t->p = p;
            t->secs = -1.0;
            mpcl_strfmt(t->why, sizeof t->why, "%s", rej->valuestring);
        }
    }
    cJSON_Delete(root);
}

/* The TUNE_CONFIRM best sets are measured once more (their kernels are
 * built again: PoCL finds them in its cache) and each keeps the faster of
 * its two measurements, so that one measurement disturbed by other work on
 * the machine does not decide the winner. Within the budget only. */
static void confirm(search *S, double budget_end)
{
    size_t top[TUNE_CONFIRM];
    size_t nt = 0;
    for (size_t i = 0; i < S->ntried; i++) {
        if (S->tried[i].secs < 0)
            continue;
        size_t j = nt < TUNE_CONFIRM ? nt++ : TUNE_CONFIRM;
        if (j == TUNE_CONFIRM) {
            if (S->tried[i].secs >= S->tried[top[TUNE_CONFIRM - 1]].secs)
                continue;
            j = TUNE_CONFIRM - 1;
        }
        while (j > 0 && S->tried[top[j - 1]].secs > S->tried[i].secs) {
            if (j < TUNE_CONFIRM)
                top[j] = top[j - 1];
            j--;
        }
        top[j] = i;
    }
    if (nt < 2)
        return;
    for (size_t r = 0; r < nt; r++) {
        if (mpcl_now_s() + S->mean_cost > budget_end)
            return;
        tried_set *t = &S->tried[top[r]];
        const char *failed = "";
        if (mpcl_clblast_override(S->ctx, S->half, &t->p, &failed) != CLBlastSuccess)
            continue;
        const double secs = time_shapes(S);
        if (secs > 0 && secs < t->secs) {
            t->secs = secs;
            if (secs < S->best_secs || S->best == top[r]) {
                if (secs < S->best_secs)
                    S->best = top[r];
                if (S->best == top[r]) {
                    S->best_secs = secs;
                    memcpy(S->t_best, S->t_shape, S->ns * sizeof *S->t_best);
                }
            }
        }
    }
}

/* The threshold under which CLBlast's direct kernel runs: the winner once
 * more with every shape direct, then the cube-root threshold that gives the
 * least weighted time. 1 (never direct) when the direct kernel fails the
 * check or a shape fails. */
static size_t choose_threshold(search *S)
{
    mpcl_clblast_params p = S->tried[S->best].p;
    p.min_indirect = TUNE_DIRECT_ALL;
    const char *failed = "";
    char why[200];
    if (mpcl_clblast_override(S->ctx, S->half, &p, &failed) != CLBlastSuccess ||
        !mpcl_clblast_verify(S->ctx, S->half, S->batched, why, sizeof why) || time_shapes(S) < 0)
        return 1;
    /* S->t_shape: direct; S->t_best: indirect */
    size_t best_t = 1;
    double best_cost = S->best_secs;
    for (size_t j = 0; j < S->ns; j++) {
        const mpcl_gemm_shape *gj = &S->shapes[j];
        const double mnk = (double)gj->m * (double)gj->n * (double)gj->k;
        const size_t t = (size_t)floor(cbrt(mnk)) + 1; /* every shape with m n k < t^3 goes direct */
        double cost = 0.0;
        for (size_t i = 0; i < S->ns; i++) {
            const mpcl_gemm_shape *g = &S->shapes[i];
            const double gm = (double)g->m * (double)g->n * (double)g->k;
            const int direct = gm < (double)t * (double)t * (double)t;
            cost += (direct ? S->t_shape[i] : S->t_best[i]) * (g->calls ? g->calls : 1);
        }
        if (cost < best_cost) {
            best_cost = cost;
            best_t = t;
        }
    }
    if (best_t > 1) {
        for (size_t i = 0; i < S->ns; i++) {
            const mpcl_gemm_shape *g = &S->shapes[i];
            if ((double)g->m * (double)g->n * (double)g->k <
                (double)best_t * (double)best_t * (double)best_t)
                S->t_best[i] = S->t_shape[i];
        }
        S->best_secs = best_cost;
    }
    return best_t;
}

static mpcl_status search_precision(mpcl_context *ctx, int half, const mpcl_tune_options *opt,
                                    const mpcl_gemm_shape *shapes, size_t ns, double budget_end,
                                    double t0, mpcl_tune_result *res)
{
    search S;
    memset(&S, 0, sizeof S);
    S.ctx = ctx;
    S.half = half;
    S.shapes = shapes;
    S.ns = ns;
    S.opt = opt;
    S.t0 = t0;
    S.budget_end = budget_end;
    S.t_shape = calloc(ns, sizeof *S.t_shape);
    S.t_best = calloc(ns, sizeof *S.t_best);
    S.tried = calloc(TUNE_MAX_TRIED, sizeof *S.tried);
    const double start = mpcl_now_s();
    mpcl_status s = MPCL_OK;
    if (!S.t_shape || !S.t_best || !S.tried) {
        s = mpcl_set_error(ctx, MPCL_ERR_NOMEM, "mpcl_tune: out of host memory");
        goto done;
    }
    if ((s = alloc_buffers(&S)) != MPCL_OK)
        goto done;

    /* CLBlast's own parameters, where this process has not overridden them */
    if (!opt->quiet_stock && !mpcl_clblast_overridden(ctx, half)) {
        double t = time_shapes(&S);
        if (t > 0)
            S.stock_secs = t;
        mpcl_strfmt(S.last, sizeof S.last, "CLBlast's own parameters: %.1f GFLOP/s", gflops_of(&S, t));
        report(&S);
    }

    mpcl_clblast_params queue[24];
    size_t nq = 0;
    int has_win = 0;
    resume(&S, &queue[0], &has_win);
    if (has_win)
        nq = 1;
    nq += mpcl_tuning_starts(ctx, 0, queue + nq, sizeof queue / sizeof queue[0] - nq);
    /* the other device types' starting points: once no neighbour is left */
    mpcl_clblast_params later[8];
    const size_t nl = mpcl_tuning_starts(ctx, 1, later, sizeof later / sizeof later[0]);
    size_t li = 0;

    const unsigned max_c = opt->max_candidates;
    /* a candidate's cost: the largest so far, not the mean. A set whose
     * program PoCL has cached costs well under a second, a new one 10 s and
     * more; with the mean of a run that began on cached sets the search
     * started candidates it had no room for and passed a 60 s budget by
     * 16 s */
    double cost_max = 0.0;
    size_t qi = 0;
    for (;;) {
        if (max_c && S.candidates >= max_c)
            break;
        const double now = mpcl_now_s();
        /* room for this candidate, the threshold's run and the second
         * measurements after it */
        if (S.candidates && now + 3.0 * cost_max > budget_end)
            break;
        S.mean_cost = cost_max;
        mpcl_clblast_params c;
        int have = 0;
        while (qi < nq && !have) {
            c = queue[qi++];
            normalise(c.xgemm);
            c.min_indirect = 1;
            have = legal(ctx, half, c.xgemm) && !seen(&S, &c);
        }
        if (!have && S.best_secs > 0)
            have = next_neighbour(&S, &c);
        while (!have && li < nl) {
            c = later[li++];
            normalise(c.xgemm);
            c.min_indirect = 1;
            have = legal(ctx, half, c.xgemm) && !seen(&S, &c);
        }
        if (!have)
            break;
        const double c0 = mpcl_now_s();
        try_candidate(&S, &c);
        if (mpcl_now_s() - c0 > cost_max)
            cost_max = mpcl_now_s() - c0;
    }
    if (S.best_secs <= 0) {
        s = mpcl_set_error(ctx, MPCL_ERR_CLBLAST,
                           "mpcl_tune: no CLBlast %s parameter set passed the exactness check on "
                           "device '%s' (%u tried; last: %s)",
                           half ? "Hgemm" : "Sgemm", ctx->desc.name, S.candidates, S.last);
        goto done;
    }
    S.mean_cost = cost_max;
    confirm(&S, budget_end);
    mpcl_clblast_params win = S.tried[S.best].p;
    /* the threshold's run costs about one candidate: within the budget only
     * (else every shape stays on Xgemm, as measured) */
    S.mean_cost = cost_max;
    win.min_indirect = mpcl_now_s() + S.mean_cost <= budget_end ? choose_threshold(&S) : 1;
    const char *failed = "";
    char why[200];
    if (mpcl_clblast_override(ctx, half, &win, &failed) != CLBlastSuccess ||
        !mpcl_clblast_verify(ctx, half, S.batched, why, sizeof why)) {
        win.min_indirect = 1; /* measured and verified with this threshold */
        if (mpcl_clblast_override(ctx, half, &win, &failed) != CLBlastSuccess ||
            !mpcl_clblast_verify(ctx, half, S.batched, why, sizeof why)) {
            s = mpcl_set_error(ctx, MPCL_ERR_CLBLAST, "mpcl_tune: the winning %s set failed its "
                               "second check on '%s': %s", half ? "Hgemm" : "Sgemm", ctx->desc.name, why);
            goto done;
        }
    }
    const double secs = mpcl_now_s() - start;
    /* CLBlast's own values, where measured and not slower, win: the entry
     * then says so and later contexts override nothing (this one keeps the
     * verified winner: CLBlast cannot put its own values back) */
    const int own = S.stock_secs > 0 && S.stock_secs <= S.best_secs;
    if (own)
        S.best_secs = S.stock_secs;
    cJSON *entry = entry_json(&S, &win, secs, own);
    if (!entry) {
        s = mpcl_set_error(ctx, MPCL_ERR_NOMEM, "mpcl_tune: out of host memory");
        goto done;
    }
    if (ctx->cache_enabled) {
        s = store(&S, entry, res->path, sizeof res->path);
        if (s != MPCL_OK)
            goto done;
    } else {
        cJSON_Delete(entry);
        res->path[0] = '\0';
    }
    ctx->tuning_cached[half] = 1;
    ctx->clblast_own = 0;
    res->searched = 1;
    res->candidates += S.candidates;
    res->rejected += S.rejected;
    if (!half || res->tuned_gflops == 0.0) {
        res->tuned_gflops = gflops_of(&S, S.best_secs);
        res->stock_gflops = S.stock_secs > 0 ? gflops_of(&S, S.stock_secs) : 0.0;
    }
    char desc[200];
    params_text(&win, desc, sizeof desc);
    if (own) {
        mpcl_strfmt(desc, sizeof desc, "%s", "CLBlast's own parameters kept (no candidate was faster)");
    } else {
        size_t dl = strlen(desc);
        mpcl_strfmt(desc + dl, sizeof desc - dl, ", direct kernel below %zu^3", win.min_indirect);
    }
    char stock[32] = "not measured";
    if (S.stock_secs > 0)
        mpcl_strfmt(stock, sizeof stock, "%.1f GFLOP/s", gflops_of(&S, S.stock_secs));
    size_t used = strlen(res->summary);
    mpcl_strfmt(res->summary + used, sizeof res->summary - used,
                "%sCLBlast %s: %.1f GFLOP/s on %zu shape%s (CLBlast's own: %s), %u candidates (%u "
                "rejected) in %.0f s; %s",
                used ? "; " : "", half ? "Hgemm" : "Sgemm", gflops_of(&S, S.best_secs), ns,
                ns == 1 ? "" : "s", stock, S.candidates, S.rejected, secs, desc);
    mpcl_strfmt(ctx->tuning_note, sizeof ctx->tuning_note, "CLBlast %s tuned on this device (%s), verified exact",
                ctx->tuning_cached[1] ? "Sgemm and Hgemm" : "Sgemm", "searched now");
done:
    if (S.a)
        clReleaseMemObject(S.a);
    if (S.b)
        clReleaseMemObject(S.b);
    if (S.c)
        clReleaseMemObject(S.c);
    if (S.tmp)
        clReleaseMemObject(S.tmp);
    free(S.t_shape);
    free(S.t_best);
    free(S.tried);
    return s;
}

static unsigned default_precisions(const mpcl_context *ctx)
{
    return MPCL_TUNE_SINGLE | (mpcl_half_gemm_possible(ctx) ? MPCL_TUNE_HALF : 0u);
}

int mpcl_tune_cached(mpcl_context *ctx, unsigned precisions)
{
    if (!ctx || !ctx->usable)
        return 0;
    if (!precisions)
        precisions = default_precisions(ctx);
    char why[MPCL_PATH_LEN + 160];
    cJSON *root = ctx->cache_enabled ? mpcl_tuning_load(ctx, why, sizeof why) : NULL;
    int ok = root != NULL;
    for (int h = 0; ok && h < 2; h++) {
        mpcl_clblast_params p;
        if (precisions & (h ? MPCL_TUNE_HALF : MPCL_TUNE_SINGLE))
            ok = mpcl_tuning_entry_params(root, h, &p, why, sizeof why) >= 1;
    }
    cJSON_Delete(root);
    return ok;
}

mpcl_status mpcl_tune(mpcl_context *ctx, const mpcl_tune_options *opt_in, mpcl_tune_result *res)
{
    mpcl_status s = mpcl_check_ctx(ctx, "mpcl_tune");
    if (s != MPCL_OK)
        return s;
    mpcl_tune_options opt;
    if (opt_in)
        opt = *opt_in;
    else
        mpcl_tune_options_init(&opt);
    mpcl_tune_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    if (!(opt.budget_s >= 0.0) || opt.budget_s > 1e6)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "mpcl_tune: budget %g s out of range (0..1e6)",
                              opt.budget_s);
    if (opt.budget_s == 0.0)
        opt.budget_s = TUNE_DEFAULT_BUDGET;
    if (opt.shape_count && !opt.shapes)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "mpcl_tune: %zu shapes but no array",
                              opt.shape_count);
    for (size_t i = 0; i < opt.shape_count; i++) {
        const mpcl_gemm_shape *g = &opt.shapes[i];
        if (!g->m || !g->n || !g->k || g->m > (1u << 24) || g->n > (1u << 24) || g->k > (1u << 24) ||
            g->batch > (1u << 16))
            return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT,
                                  "mpcl_tune: shape %zu (%zu x %zu x %zu, batch %zu) out of range", i,
                                  g->m, g->n, g->k, g->batch);
    }
    /* a context on CLBlast's own parameters (clblast_own) is where they can
     * be measured; the winner is applied to it all the same */
    unsigned want = opt.precisions ? opt.precisions : default_precisions(ctx);
    if ((want & MPCL_TUNE_HALF) && !mpcl_half_gemm_possible(ctx)) {
        if (opt.precisions & MPCL_TUNE_HALF)
            return mpcl_set_error(ctx, MPCL_ERR_UNSUPPORTED,
                                  "mpcl_tune: device '%s' does not run CLBlast Hgemm (cl_khr_fp16 "
                                  "with verified half arithmetic is needed)",
                                  ctx->desc.name);
        want &= ~(unsigned)MPCL_TUNE_HALF;
    }
    mpcl_tuning_path(ctx, res->path, sizeof res->path);
    const double t0 = mpcl_now_s(), end = t0 + opt.budget_s;
    for (int half = 0; half < 2; half++) {
        const unsigned bit = half ? MPCL_TUNE_HALF : MPCL_TUNE_SINGLE;
        if (!(want & bit))
            continue;
        if (!opt.force && mpcl_tune_cached(ctx, bit))
            continue;
        /* the shapes of this precision (all of them when none is marked) */
        const mpcl_gemm_shape *shapes = opt.shapes;
        size_t ns = opt.shape_count;
        mpcl_gemm_shape *mine = NULL;
        if (ns) {
            mine = malloc(ns * sizeof *mine);
            if (!mine)
                return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "mpcl_tune: out of host memory");
            size_t k = 0;
            for (size_t i = 0; i < ns; i++)
                if (shapes[i].half == half)
                    mine[k++] = shapes[i];
            if (k == 0) /* none recorded in this precision: tune for all of them */
                for (size_t i = 0; i < ns; i++) {
                    mine[k] = shapes[i];
                    mine[k++].half = half;
                }
            shapes = mine;
            ns = k;
        } else {
            shapes = default_shapes;
            ns = sizeof default_shapes / sizeof default_shapes[0];
        }
        /* single gets two thirds of what is left when half follows */
        const int half_next = !half && (want & MPCL_TUNE_HALF) &&
                              (opt.force || !mpcl_tune_cached(ctx, MPCL_TUNE_HALF));
        const double now = mpcl_now_s();
        const double my_end = half_next ? now + (end - now) * 2.0 / 3.0 : end;
        s = search_precision(ctx, half, &opt, shapes, ns, my_end, t0, res);
        free(mine);
        if (s != MPCL_OK)
            return s;
    }
    res->seconds = mpcl_now_s() - t0;
    if (!res->searched)
        mpcl_strfmt(res->summary, sizeof res->summary, "%s",
                    want ? "CLBlast tuning for this device is cached: nothing searched"
                         : "nothing to tune");
    return MPCL_OK;
}

mpcl_status mpcl_tune_model(mpcl_context *ctx, const mpcl_model_spec *spec, size_t batch,
                            const mpcl_tune_options *opt, mpcl_tune_result *res)
{
    mpcl_status s = mpcl_check_ctx(ctx, "mpcl_tune_model");
    if (s != MPCL_OK)
        return s;
    if (!spec || batch == 0)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "mpcl_tune_model: spec must be non-NULL and batch >= 1");
    mpcl_model *m = NULL;
    mpcl_tensor *x = NULL, *dl = NULL, *logits = NULL;
    mpcl_gemm_shape *shapes = NULL;
    s = mpcl_model_create(ctx, spec, batch, 1, &m);
    const size_t xs[4] = {batch, spec->input[0], spec->input[1], spec->input[2]};
    if (s == MPCL_OK)
        s = mpcl_tensor_create(ctx, mpcl_storage_dtype(ctx), 4, xs, MPCL_MEM_ACTIVATIONS, &x);
    if (s == MPCL_OK)
        s = mpcl_tensor_fill(x, 0.5f);
    if (s == MPCL_OK)
        s = mpcl_gemm_record(ctx, 1);
    if (s == MPCL_OK)
        s = mpcl_model_forward(m, x, 1, 0, &logits);
    if (s == MPCL_OK) {
        const size_t ds[2] = {batch, mpcl_tensor_dim(logits, 1)};
        s = mpcl_tensor_create(ctx, mpcl_storage_dtype(ctx), 2, ds, MPCL_MEM_ACTIVATIONS, &dl);
    }
    if (s == MPCL_OK)
        s = mpcl_tensor_fill(dl, 0.01f);
    if (s == MPCL_OK)
        s = mpcl_model_backward(m, dl);
    if (s == MPCL_OK && clFinish(ctx->queue) != CL_SUCCESS)
        s = mpcl_set_error(ctx, MPCL_ERR_OPENCL, "mpcl_tune_model: the recording step failed");
    ctx->gemm_rec_on = 0;
    size_t ns = ctx->gemm_rec_n;
    if (s == MPCL_OK && ns) {
        shapes = malloc(ns * sizeof *shapes);
        if (!shapes)
            s = mpcl_set_error(ctx, MPCL_ERR_NOMEM, "mpcl_tune_model: out of host memory");
        else
            mpcl_gemm_recorded(ctx, shapes, ns);
    }
    mpcl_tensor_destroy(x);
    mpcl_tensor_destroy(dl);
    mpcl_model_destroy(m); /* before the search: its memory is free for the GEMM buffers */
    if (s == MPCL_OK) {
        mpcl_tune_options o;
        if (opt)
            o = *opt;
        else
            mpcl_tune_options_init(&o);
        o.shapes = shapes;
        o.shape_count = ns;
        if (!o.precisions) /* the precisions the model's GEMMs run in */
            for (size_t i = 0; i < ns; i++)
                o.precisions |= shapes[i].half ? MPCL_TUNE_HALF : MPCL_TUNE_SINGLE;
        if (ns == 0) {
            if (res) {
                memset(res, 0, sizeof *res);
                mpcl_strfmt(res->summary, sizeof res->summary,
                            "the model runs no CLBlast GEMM in %s mode: nothing to tune",
                            mpcl_precision_name(ctx->precision));
            }
        } else {
            s = mpcl_tune(ctx, &o, res);
        }
    }
    free(shapes);
    return s;
}
