/* ops/attention.c — the transformer's ops: token + position embedding,
 * causal multi-head self-attention (training, and decoding with a key /
 * value cache). Kernels in cl/attention.cl; docs/ops/attention.md says
 * where each tensor lives in each mode and why.
 *
 * Dimension letters: B sequences, T positions, N = B T rows, C the width,
 * H heads, E = C / H the width of a head, G = B H, V vocabulary.
 *
 * Attention, one call (nothing reaches the host):
 *   forward   q, k, v (G, T, E) <- qkv's columns (heads_copy)
 *             S (G, T, T) f32    = q k^T / sqrt(E)   strided-batched GEMM, C in float
 *             P (G, T, T)        = causal softmax(S), in float, kept for backward
 *             O (G, T, E)        = P v               strided-batched GEMM
 *             y (N, C)           <- O (heads_copy)
 *   backward  q, k, v recomputed from qkv (copies: cheaper than keeping them)
 *             dO <- dy; dP (f32) = dO v^T; dv = P^T dO
 *             dS = P (dP - rowsum(P dP)) / sqrt(E)  (storage dtype)
 *             dq = dS k; dk = dS^T q; dqkv <- dq, dk, dv
 * The per-call work tensors are scratch slots ATT_SLOT_*, grown to the
 * largest call and kept for the context's life. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ATT_WG_MAX 256 /* cl/attention.cl's ATT_WG_MAX */
#define ATT_SLOT_Q 14
#define ATT_SLOT_K 15
#define ATT_SLOT_V 16
#define ATT_SLOT_O 17
#define ATT_SLOT_S 18  /* scores or their gradient, f32 */
#define ATT_SLOT_P 19  /* decode's probabilities; backward's dS (storage dtype) */

static const char *const EMB_FWD = "mpcl_embedding_forward";
static const char *const EMB_BWD = "mpcl_embedding_backward";
static const char *const ATT_FWD = "mpcl_attention_forward";
static const char *const ATT_BWD = "mpcl_attention_backward";
static const char *const ATT_DEC = "mpcl_attention_decode";

static mpcl_status arg_error(mpcl_context *ctx, const char *op, const char *kernel, cl_int rc)
{
    return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "%s: setting %s arguments: %s", op, kernel,
                          mpcl_cl_error_name(rc));
}

/* ------------------------------------------------------------ embedding */

mpcl_status mpcl_embedding_index(const int32_t *tokens, size_t n, size_t vocab, int32_t *order,
                                 int32_t *start, char *err, size_t err_len)
{
    if (!tokens || !order || !start || vocab == 0 || n > INT32_MAX) {
        if (err && err_len)
            mpcl_strfmt(err, err_len, "mpcl_embedding_index: %s",
                        vocab == 0 ? "the vocabulary is empty"
                                   : n > INT32_MAX ? "more than 2^31 - 1 rows" : "a NULL array");
        return MPCL_ERR_ARGUMENT;
    }
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (size_t)tokens[i] >= vocab) {
            if (err && err_len)
                mpcl_strfmt(err, err_len,
                            "mpcl_embedding_index: token %ld at row %zu is outside the "
                            "vocabulary [0, %zu)",
                            (long)tokens[i], i, vocab);
            return MPCL_ERR_ARGUMENT;
        }
    /* a counting sort, stable: each token's rows in ascending order */
    memset(start, 0, (vocab + 1) * sizeof *start);
    for (size_t i = 0; i < n; i++)
        start[tokens[i] + 1]++;
    for (size_t v = 0; v < vocab; v++)
        start[v + 1] += start[v];
    for (size_t i = 0; i < n; i++)
        order[start[tokens[i]]++] = (int32_t)i;
    /* start[v] now holds where v's rows end: shift back */
    for (size_t v = vocab; v > 0; v--)
        start[v] = start[v - 1];
    start[0] = 0;
    return MPCL_OK;
}

static mpcl_status check_rows_of(mpcl_context *ctx, const char *op, size_t n, size_t T)
{
    if (T == 0 || n % T != 0)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: %zu rows are not whole sequences of T = %zu positions", op, n, T);
    return MPCL_OK;
}

mpcl_status mpcl_embedding_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *tokens,
                                   const mpcl_tensor *wte, const mpcl_tensor *wpe, size_t T,
                                   size_t pos)
{
    mpcl_status s = mpcl_check_ctx(ctx, EMB_FWD);
    if (s != MPCL_OK)
        return s;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    if ((s = mpcl_check_tensor(ctx, EMB_FWD, "wte", wte, st, 2, NULL)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, EMB_FWD, "tokens", tokens, MPCL_I32, 1, NULL)) != MPCL_OK)
        return s;
    size_t V = wte->shape[0], D = wte->shape[1], N = tokens->shape[0];
    const size_t pos_dims[2] = {0, D}, y_dims[2] = {N, D};
    if ((s = mpcl_check_tensor(ctx, EMB_FWD, "wpe", wpe, st, 2, pos_dims)) != MPCL_OK ||
        (s = mpcl_check_tensor(ctx, EMB_FWD, "y", y, st, 2, y_dims)) != MPCL_OK ||
        (s = check_rows_of(ctx, EMB_FWD, N, T)) != MPCL_OK ||
        (s = mpcl_check_u32(ctx, EMB_FWD, "y", y->numel)) != MPCL_OK ||
        (s = mpcl_check_u32(ctx, EMB_FWD, "wte", wte->numel)) != MPCL_OK)
        return s;
    if (pos > wpe->shape[0] || wpe->shape[0] - pos < T)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: wpe holds %zu positions, the sequences need positions %zu..%zu",
                              EMB_FWD, wpe->shape[0], pos, pos + T - 1);
    if (N == 0)
        return MPCL_OK;
    cl_kernel k;
    if ((s = mpcl_kernel_get(ctx, "attention", mpcl_ctx_variant(ctx), "embed_forward", &k)) != MPCL_OK)
        return s;
    cl_uint t = (cl_uint)T, d = (cl_uint)D, v = (cl_uint)V, p0 = (cl_uint)pos;
    cl_int rc = mpcl_kernel_args(k, 8, sizeof(cl_mem), &y->mem, sizeof(cl_mem), &tokens->mem,
                                 sizeof(cl_mem), &wte->mem, sizeof(cl_mem), &wpe->mem, sizeof t,
                                 &t, sizeof d, &d, sizeof v, &v, sizeof p0, &p0);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, EMB_FWD, "embed_forward", rc);
    return mpcl_launch_rows(ctx, k, EMB_FWD, D, N, 1);
}

mpcl_status mpcl_embedding_backward(mpcl_context *ctx, mpcl_tensor *dwte, mpcl_tensor *dwpe,
                                    const mpcl_tensor *dy, const mpcl_tensor *order,
                                    const mpcl_tensor *start, size_t T)
{
    mpcl_status s = mpcl_check_ctx(ctx, EMB_BWD);
    if (s != MPCL_OK)
        return s;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    if ((s = mpcl_check_tensor(ctx, EMB_BWD, "dy", dy, st, 2, NULL)) != MPCL_OK)
        return s;
    size_t N = dy->shape[0], D = dy->shape[1];
    if ((s = check_rows_of(ctx, EMB_BWD, N, T)) != MPCL_OK ||
        (s = mpcl_check_u32(ctx, EMB_BWD, "dy", dy->numel)) != MPCL_OK)
        return s;
    if (dwte) {
        const size_t w_dims[2] = {0, D}, o_dims[1] = {N};
        if ((s = mpcl_check_tensor(ctx, EMB_BWD, "dwte", dwte, st, 2, w_dims)) != MPCL_OK ||
            (s = mpcl_check_u32(ctx, EMB_BWD, "dwte", dwte->numel)) != MPCL_OK ||
            (s = mpcl_check_tensor(ctx, EMB_BWD, "order", order, MPCL_I32, 1, o_dims)) != MPCL_OK)
            return s;
        const size_t s_dims[1] = {dwte->shape[0] + 1};
        if ((s = mpcl_check_tensor(ctx, EMB_BWD, "start", start, MPCL_I32, 1, s_dims)) != MPCL_OK)
            return s;
    }
    if (dwpe) {
        const size_t p_dims[2] = {0, D};
        if ((s = mpcl_check_tensor(ctx, EMB_BWD, "dwpe", dwpe, st, 2, p_dims)) != MPCL_OK)
            return s;
        if (dwpe->shape[0] < T)
            return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                                  "%s: dwpe holds %zu positions, the sequences have T = %zu",
                                  EMB_BWD, dwpe->shape[0], T);
    }
    if (N == 0)
        return MPCL_OK;
    cl_kernel k;
    cl_int rc;
    cl_uint d = (cl_uint)D;
    if (dwte) {
        if ((s = mpcl_kernel_get(ctx, "attention", mpcl_ctx_variant(ctx), "embed_backward_wte",
                                 &k)) != MPCL_OK)
            return s;
        rc = mpcl_kernel_args(k, 5, sizeof(cl_mem), &dwte->mem, sizeof(cl_mem), &dy->mem,
                              sizeof(cl_mem), &order->mem, sizeof(cl_mem), &start->mem, sizeof d, &d);
        if (rc != CL_SUCCESS)
            return arg_error(ctx, EMB_BWD, "embed_backward_wte", rc);
        if ((s = mpcl_launch_rows(ctx, k, EMB_BWD, D, dwte->shape[0], 1)) != MPCL_OK)
            return s;
    }
    if (dwpe) {
        if ((s = mpcl_kernel_get(ctx, "attention", mpcl_ctx_variant(ctx), "embed_backward_wpe",
                                 &k)) != MPCL_OK)
            return s;
        cl_uint b = (cl_uint)(N / T), t = (cl_uint)T;
        rc = mpcl_kernel_args(k, 5, sizeof(cl_mem), &dwpe->mem, sizeof(cl_mem), &dy->mem, sizeof b,
                              &b, sizeof t, &t, sizeof d, &d);
        if (rc != CL_SUCCESS)
            return arg_error(ctx, EMB_BWD, "embed_backward_wpe", rc);
        if ((s = mpcl_launch_rows(ctx, k, EMB_BWD, D, T, 1)) != MPCL_OK)
            return s;
    }
    return MPCL_OK;
}

/* ------------------------------------------------------------ attention */

/* The shapes of one attention call. */
typedef struct {
    const char *op;
    size_t B, T, H, E, C; /* T: this call's positions (queries) */
    size_t Tc, t0;        /* key / value positions held, and where this call's go */
} att_dims;

static mpcl_status heads_copy(mpcl_context *ctx, const att_dims *a, cl_mem dst, cl_mem src,
                              size_t ld, size_t off, size_t Tc, size_t t0, int to_heads)
{
    cl_kernel k;
    mpcl_status s = mpcl_kernel_get(ctx, "attention", mpcl_ctx_variant(ctx), "heads_copy", &k);
    if (s != MPCL_OK)
        return s;
    cl_uint T = (cl_uint)a->T, H = (cl_uint)a->H, E = (cl_uint)a->E, L = (cl_uint)ld,
            O = (cl_uint)off, TC = (cl_uint)Tc, T0 = (cl_uint)t0;
    cl_int th = to_heads;
    cl_int rc = mpcl_kernel_args(k, 10, sizeof(cl_mem), &dst, sizeof(cl_mem), &src, sizeof T, &T,
                                 sizeof H, &H, sizeof E, &E, sizeof L, &L, sizeof O, &O, sizeof TC,
                                 &TC, sizeof T0, &T0, sizeof th, &th);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, a->op, "heads_copy", rc);
    return mpcl_launch_rows(ctx, k, a->op, a->E, a->T, a->B * a->H);
}

/* One work-group per row, a power of two up to the row length. */
static mpcl_status launch_softmax(mpcl_context *ctx, cl_kernel k, const char *op, size_t rows,
                                  size_t Tk)
{
    size_t limit = mpcl_wg_limit(ctx, k);
    if (limit > ATT_WG_MAX)
        limit = ATT_WG_MAX;
    size_t local = 1;
    while (local < Tk && local * 2 <= limit)
        local *= 2;
    size_t global = rows * local;
    return mpcl_launch(ctx, k, op, 1, &global, &local);
}

/* probs (G, T, Tk) = causal softmax of S = q K^T / sqrt(E), then
 * o = probs V; q (G, T, E) in slot Q, K and V (G, Tc, E) in kmem / vmem
 * with their first Tk = t0 + T positions in use; o in slot O. */
static mpcl_status attend(mpcl_context *ctx, const att_dims *a, cl_mem q, cl_mem kmem, cl_mem vmem,
                          cl_mem probs, cl_mem o)
{
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    size_t G = a->B * a->H, T = a->T, E = a->E, Tk = a->t0 + a->T, Tc = a->Tc;
    cl_mem S;
    mpcl_status s = mpcl_scratch(ctx, ATT_SLOT_S, G * T * Tk * sizeof(float), &S);
    if (s != MPCL_OK)
        return s;
    s = mpcl_gemm_batched_raw_c32(ctx, a->op, st, 0, 1, T, Tk, E, (float)(1.0 / sqrt((double)E)),
                                  q, 0, E, T * E, kmem, 0, E, Tc * E, 0.0f, S, 0, Tk, T * Tk, G);
    if (s != MPCL_OK)
        return s;
    cl_kernel k;
    if ((s = mpcl_kernel_get(ctx, "attention", mpcl_ctx_variant(ctx), "softmax_causal_forward",
                             &k)) != MPCL_OK)
        return s;
    cl_uint rows = (cl_uint)(G * T), tq = (cl_uint)T, tk = (cl_uint)Tk, q0 = (cl_uint)a->t0;
    cl_int rc = mpcl_kernel_args(k, 6, sizeof(cl_mem), &probs, sizeof(cl_mem), &S, sizeof rows,
                                 &rows, sizeof tq, &tq, sizeof tk, &tk, sizeof q0, &q0);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, a->op, "softmax_causal_forward", rc);
    if ((s = launch_softmax(ctx, k, a->op, G * T, Tk)) != MPCL_OK)
        return s;
    return mpcl_gemm_batched_raw(ctx, a->op, st, 0, 0, T, E, Tk, 1.0f, probs, 0, Tk, T * Tk, vmem,
                                 0, E, Tc * E, 0.0f, o, 0, E, T * E, G);
}

/* Checks qkv (B T, 3 C) and y (B T, C) and fills a. */
static mpcl_status check_qkv(mpcl_context *ctx, const char *op, const char *yname,
                             const mpcl_tensor *y, const mpcl_tensor *qkv, size_t T, size_t heads,
                             att_dims *a)
{
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    mpcl_status s = mpcl_check_tensor(ctx, op, "qkv", qkv, st, 2, NULL);
    if (s != MPCL_OK)
        return s;
    size_t N = qkv->shape[0], C3 = qkv->shape[1];
    if (heads == 0 || C3 % (3 * heads) != 0)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: qkv has %zu columns, not 3 x C with C a multiple of %zu heads",
                              op, C3, heads);
    const size_t y_dims[2] = {N, C3 / 3};
    if ((s = mpcl_check_tensor(ctx, op, yname, y, st, 2, y_dims)) != MPCL_OK ||
        (s = check_rows_of(ctx, op, N, T)) != MPCL_OK ||
        (s = mpcl_check_u32(ctx, op, "qkv", qkv->numel)) != MPCL_OK)
        return s;
    a->op = op;
    a->B = N / T;
    a->T = T;
    a->H = heads;
    a->C = C3 / 3;
    a->E = a->C / heads;
    a->Tc = T;
    a->t0 = 0;
    return MPCL_OK;
}

static mpcl_status check_probs(mpcl_context *ctx, const att_dims *a, const mpcl_tensor *probs)
{
    const size_t p_dims[3] = {a->B * a->H, a->T, a->T};
    mpcl_status s = mpcl_check_tensor(ctx, a->op, "probs", probs, mpcl_storage_dtype(ctx), 3, p_dims);
    if (s == MPCL_OK)
        s = mpcl_check_u32(ctx, a->op, "probs", probs->numel);
    return s;
}

/* q, k, v (G, T, E) in slots Q, K, V, copied from qkv. */
static mpcl_status split_qkv(mpcl_context *ctx, const att_dims *a, const mpcl_tensor *qkv,
                             cl_mem *q, cl_mem *k, cl_mem *v)
{
    size_t bytes = a->B * a->H * a->T * a->E * mpcl_dtype_size(mpcl_storage_dtype(ctx));
    mpcl_status s;
    if ((s = mpcl_scratch(ctx, ATT_SLOT_Q, bytes, q)) != MPCL_OK ||
        (s = mpcl_scratch(ctx, ATT_SLOT_K, bytes, k)) != MPCL_OK ||
        (s = mpcl_scratch(ctx, ATT_SLOT_V, bytes, v)) != MPCL_OK)
        return s;
    size_t C = a->C;
    if ((s = heads_copy(ctx, a, *q, qkv->mem, 3 * C, 0, a->T, 0, 1)) != MPCL_OK ||
        (s = heads_copy(ctx, a, *k, qkv->mem, 3 * C, C, a->T, 0, 1)) != MPCL_OK)
        return s;
    return heads_copy(ctx, a, *v, qkv->mem, 3 * C, 2 * C, a->T, 0, 1);
}

mpcl_status mpcl_attention_forward(mpcl_context *ctx, mpcl_tensor *y, mpcl_tensor *probs,
                                   const mpcl_tensor *qkv, size_t T, size_t heads)
{
    mpcl_status s = mpcl_check_ctx(ctx, ATT_FWD);
    if (s != MPCL_OK)
        return s;
    att_dims a;
    if ((s = check_qkv(ctx, ATT_FWD, "y", y, qkv, T, heads, &a)) != MPCL_OK ||
        (s = check_probs(ctx, &a, probs)) != MPCL_OK)
        return s;
    if (a.B == 0)
        return MPCL_OK;
    cl_mem q, k, v, o;
    if ((s = split_qkv(ctx, &a, qkv, &q, &k, &v)) != MPCL_OK ||
        (s = mpcl_scratch(ctx, ATT_SLOT_O,
                          a.B * a.H * a.T * a.E * mpcl_dtype_size(mpcl_storage_dtype(ctx)), &o)) !=
            MPCL_OK ||
        (s = attend(ctx, &a, q, k, v, probs->mem, o)) != MPCL_OK)
        return s;
    return heads_copy(ctx, &a, y->mem, o, a.C, 0, a.T, 0, 0);
}

mpcl_status mpcl_attention_backward(mpcl_context *ctx, mpcl_tensor *dqkv, const mpcl_tensor *dy,
                                    const mpcl_tensor *qkv, const mpcl_tensor *probs, size_t T,
                                    size_t heads)
{
    mpcl_status s = mpcl_check_ctx(ctx, ATT_BWD);
    if (s != MPCL_OK)
        return s;
    att_dims a;
    if ((s = check_qkv(ctx, ATT_BWD, "dy", dy, qkv, T, heads, &a)) != MPCL_OK ||
        (s = check_probs(ctx, &a, probs)) != MPCL_OK ||
        (s = mpcl_check_same(ctx, ATT_BWD, "dqkv", dqkv, "qkv", qkv)) != MPCL_OK)
        return s;
    if (dqkv->ndim != 2 || dqkv->shape[1] != qkv->shape[1])
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE, "%s: dqkv must have qkv's shape (%zu, %zu)",
                              ATT_BWD, qkv->shape[0], qkv->shape[1]);
    if (a.B == 0)
        return MPCL_OK;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    size_t G = a.B * a.H, E = a.E, C = a.C;
    cl_mem q, k, v, o, dp, ds;
    if ((s = split_qkv(ctx, &a, qkv, &q, &k, &v)) != MPCL_OK ||
        (s = mpcl_scratch(ctx, ATT_SLOT_O, G * T * E * mpcl_dtype_size(st), &o)) != MPCL_OK ||
        (s = mpcl_scratch(ctx, ATT_SLOT_S, G * T * T * sizeof(float), &dp)) != MPCL_OK ||
        (s = mpcl_scratch(ctx, ATT_SLOT_P, G * T * T * mpcl_dtype_size(st), &ds)) != MPCL_OK)
        return s;
    /* dO <- dy; dP = dO v^T (float); dv = P^T dO, into v's slot */
    if ((s = heads_copy(ctx, &a, o, dy->mem, C, 0, T, 0, 1)) != MPCL_OK ||
        (s = mpcl_gemm_batched_raw_c32(ctx, ATT_BWD, st, 0, 1, T, T, E, 1.0f, o, 0, E, T * E, v, 0,
                                       E, T * E, 0.0f, dp, 0, T, T * T, G)) != MPCL_OK ||
        (s = mpcl_gemm_batched_raw(ctx, ATT_BWD, st, 1, 0, T, E, T, 1.0f, probs->mem, 0, T, T * T,
                                   o, 0, E, T * E, 0.0f, v, 0, E, T * E, G)) != MPCL_OK)
        return s;
    cl_kernel kk;
    if ((s = mpcl_kernel_get(ctx, "attention", mpcl_ctx_variant(ctx), "softmax_causal_backward",
                             &kk)) != MPCL_OK)
        return s;
    cl_uint rows = (cl_uint)(G * T), tq = (cl_uint)T, q0 = 0;
    cl_float scale = (float)(1.0 / sqrt((double)E));
    cl_int rc = mpcl_kernel_args(kk, 8, sizeof(cl_mem), &ds, sizeof(cl_mem), &dp, sizeof(cl_mem),
                                 &probs->mem, sizeof rows, &rows, sizeof tq, &tq, sizeof tq, &tq,
                                 sizeof q0, &q0, sizeof scale, &scale);
    if (rc != CL_SUCCESS)
        return arg_error(ctx, ATT_BWD, "softmax_causal_backward", rc);
    if ((s = launch_softmax(ctx, kk, ATT_BWD, G * T, T)) != MPCL_OK)
        return s;
    /* dq = dS k into O's slot (dO is used up), then dk = dS^T q into k's */
    if ((s = mpcl_gemm_batched_raw(ctx, ATT_BWD, st, 0, 0, T, E, T, 1.0f, ds, 0, T, T * T, k, 0, E,
                                   T * E, 0.0f, o, 0, E, T * E, G)) != MPCL_OK ||
        (s = mpcl_gemm_batched_raw(ctx, ATT_BWD, st, 1, 0, T, E, T, 1.0f, ds, 0, T, T * T, q, 0, E,
                                   T * E, 0.0f, k, 0, E, T * E, G)) != MPCL_OK)
        return s;
    if ((s = heads_copy(ctx, &a, dqkv->mem, o, 3 * C, 0, T, 0, 0)) != MPCL_OK ||
        (s = heads_copy(ctx, &a, dqkv->mem, k, 3 * C, C, T, 0, 0)) != MPCL_OK)
        return s;
    return heads_copy(ctx, &a, dqkv->mem, v, 3 * C, 2 * C, T, 0, 0);
}

mpcl_status mpcl_attention_decode(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *qkv,
                                  mpcl_tensor *kcache, mpcl_tensor *vcache, size_t pos,
                                  size_t heads)
{
    mpcl_status s = mpcl_check_ctx(ctx, ATT_DEC);
    if (s != MPCL_OK)
        return s;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    if ((s = mpcl_check_tensor(ctx, ATT_DEC, "kcache", kcache, st, 3, NULL)) != MPCL_OK)
        return s;
    if ((s = mpcl_check_tensor(ctx, ATT_DEC, "vcache", vcache, st, 3, kcache->shape)) != MPCL_OK)
        return s;
    if (heads == 0 || kcache->shape[0] % heads != 0 || !qkv || qkv->ndim != 2 ||
        kcache->shape[0] / heads == 0 || qkv->shape[0] % (kcache->shape[0] / heads) != 0)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: the caches must be (B x heads, positions, head width) for the B "
                              "sequences of qkv (B x Tq rows), with heads = %zu",
                              ATT_DEC, heads);
    size_t B = kcache->shape[0] / heads, Tq = qkv->shape[0] / B;
    att_dims a;
    if ((s = check_qkv(ctx, ATT_DEC, "y", y, qkv, Tq, heads, &a)) != MPCL_OK)
        return s;
    if (kcache->shape[2] != a.E)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: the caches hold heads of width %zu, qkv's are %zu wide", ATT_DEC,
                              kcache->shape[2], a.E);
    a.Tc = kcache->shape[1];
    a.t0 = pos;
    if (pos > a.Tc || Tq > a.Tc - pos)
        return mpcl_set_error(ctx, MPCL_ERR_SHAPE,
                              "%s: positions %zu..%zu do not fit the caches' %zu positions", ATT_DEC,
                              pos, pos + Tq - 1, a.Tc);
    if ((s = mpcl_check_u32(ctx, ATT_DEC, "kcache", kcache->numel)) != MPCL_OK)
        return s;
    if (Tq == 0)
        return MPCL_OK;
    size_t G = a.B * a.H, Tk = pos + Tq, C = a.C, bytes = G * Tq * a.E * mpcl_dtype_size(st);
    cl_mem q, o, p;
    if ((s = mpcl_scratch(ctx, ATT_SLOT_Q, bytes, &q)) != MPCL_OK ||
        (s = mpcl_scratch(ctx, ATT_SLOT_O, bytes, &o)) != MPCL_OK ||
        (s = mpcl_scratch(ctx, ATT_SLOT_P, G * Tq * Tk * mpcl_dtype_size(st), &p)) != MPCL_OK)
        return s;
    if ((s = heads_copy(ctx, &a, q, qkv->mem, 3 * C, 0, Tq, 0, 1)) != MPCL_OK ||
        (s = heads_copy(ctx, &a, kcache->mem, qkv->mem, 3 * C, C, a.Tc, pos, 1)) != MPCL_OK ||
        (s = heads_copy(ctx, &a, vcache->mem, qkv->mem, 3 * C, 2 * C, a.Tc, pos, 1)) != MPCL_OK ||
        (s = attend(ctx, &a, q, kcache->mem, vcache->mem, p, o)) != MPCL_OK)
        return s;
    return heads_copy(ctx, &a, y->mem, o, C, 0, Tq, 0, 0);
}
