/* test_attention.c — the transformer ops (token + position embedding,
 * causal multi-head self-attention, decoding with a key / value cache)
 * against double-precision host references, in every precision mode the
 * device runs.
 *
 * Letters: B sequences of T positions, N = B T rows, C width, H heads of
 * width E, V vocabulary.
 *
 * The references take the inputs as the device holds them (rounded to the
 * storage dtype first). Tolerances, with u the mode's unit roundoff (2^-24
 * fp32, 2^-11 fp16 modes, 2^-8 bf16) and M a magnitude bound of each result
 * computed by the same reference on absolute values:
 *   embedding:     |err| <= 2 u M (one sum, one rounding)
 *   attention:     |err| <= (8 + 2 T) u M + the effect of the float score
 *                  error (2^-22 of the score's magnitude, which matters only
 *                  for scores near half's range and beyond)
 * The reference backward pass is itself checked against central
 * differences of the reference forward pass. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

static double *dalloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

static float *falloc(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    return p;
}

static void upload(mpcl_tensor *t, const float *x)
{
    mpcl_status s = mpcl_tensor_upload(t, x, mpcl_tensor_numel(t));
    ck_assert_msg(s == MPCL_OK, "upload: %s", mpcl_last_error(t->ctx));
}

/* A tensor holding x rounded to the storage dtype; x is replaced by what
 * the device holds. */
static mpcl_tensor *held(mpcl_context *ctx, float *x, size_t d0, size_t d1, size_t d2)
{
    size_t n = d0 * (d1 ? d1 : 1) * (d2 ? d2 : 1);
    optest_quantize(ctx, x, n);
    return optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, x, d0, d1, d2, 0);
}

static mpcl_tensor *i32_tensor(mpcl_context *ctx, const int32_t *v, size_t n)
{
    mpcl_tensor *t = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    mpcl_status s = mpcl_tensor_write(t, v, n * sizeof *v);
    ck_assert_msg(s == MPCL_OK, "write: %s", mpcl_last_error(ctx));
    return t;
}

static double unit(mpcl_precision mode)
{
    return optest_unit_roundoff(mode);
}

/* ------------------------------------------------------------ embedding */

START_TEST(test_embedding_index)
{
    if (_i != 0)
        return; /* host code: once */
    const int32_t tok[] = {3, 1, 3, 0, 1, 3};
    int32_t order[6], start[5];
    char err[256] = "";
    ck_assert_int_eq(mpcl_embedding_index(tok, 6, 4, order, start, err, sizeof err), MPCL_OK);
    const int32_t want_order[] = {3, 1, 4, 0, 2, 5}, want_start[] = {0, 1, 3, 3, 6};
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(order[i], want_order[i]);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(start[i], want_start[i]);
    const int32_t bad[] = {0, 4};
    ck_assert_int_eq(mpcl_embedding_index(bad, 2, 4, order, start, err, sizeof err),
                     MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(err, "row 1") && strstr(err, "token 4"), "message: %s", err);
}
END_TEST

START_TEST(test_embedding)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_precision mode = optest_modes[_i].mode;
    const size_t B = 3, T = 5, N = B * T, V = 11, D = 13, P = 7;
    float *wte = falloc(V * D), *wpe = falloc(P * D), *dy = falloc(N * D);
    optest_fill_uniform(wte, V * D, 1, -1.0f, 1.0f);
    optest_fill_uniform(wpe, P * D, 2, -1.0f, 1.0f);
    optest_fill_uniform(dy, N * D, 3, -1.0f, 1.0f);
    int32_t tok[15] = {0, 4, 4, 10, 2, 2, 2, 9, 0, 4, 7, 4, 1, 10, 4}; /* 3, 5, 6, 8 unused */
    mpcl_tensor *twte = held(ctx, wte, V, D, 0), *twpe = held(ctx, wpe, P, D, 0);
    mpcl_tensor *tdy = held(ctx, dy, N, D, 0), *ttok = i32_tensor(ctx, tok, N);
    mpcl_tensor *ty = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, NULL, N, D, 0, 0);
    mpcl_status s = mpcl_embedding_forward(ctx, ty, ttok, twte, twpe, T, 0);
    ck_assert_msg(s == MPCL_OK, "forward: %s", mpcl_last_error(ctx));
    float *y = optest_download(ty);
    double *ref = dalloc(N * D);
    double M = 0;
    for (size_t n = 0; n < N; n++)
        for (size_t d = 0; d < D; d++) {
            ref[n * D + d] = (double)wte[tok[n] * D + d] + wpe[(n % T) * D + d];
            M = fmax(M, fabs(wte[tok[n] * D + d]) + fabs(wpe[(n % T) * D + d]));
        }
    char what[96];
    snprintf(what, sizeof what, "embedding forward [%s]", optest_modes[_i].name);
    optest_assert_close(what, y, ref, N * D, 2 * unit(mode) * M, 0);
    free(y);

    /* backward: gradients accumulate onto 0.5 (wte) and -0.25 (wpe) */
    int32_t order[15], start[12];
    char err[128];
    ck_assert_int_eq(mpcl_embedding_index(tok, N, V, order, start, err, sizeof err), MPCL_OK);
    mpcl_tensor *tord = i32_tensor(ctx, order, N), *tst = i32_tensor(ctx, start, V + 1);
    float *g0 = falloc(V * D), *p0 = falloc(P * D);
    for (size_t i = 0; i < V * D; i++)
        g0[i] = 0.5f;
    for (size_t i = 0; i < P * D; i++)
        p0[i] = -0.25f;
    mpcl_tensor *tdw = held(ctx, g0, V, D, 0), *tdp = held(ctx, p0, P, D, 0);
    s = mpcl_embedding_backward(ctx, tdw, tdp, tdy, tord, tst, T);
    ck_assert_msg(s == MPCL_OK, "backward: %s", mpcl_last_error(ctx));
    double *rw = dalloc(V * D), *mw = dalloc(V * D), *rp = dalloc(P * D), *mp = dalloc(P * D);
    for (size_t i = 0; i < V * D; i++)
        rw[i] = mw[i] = 0.5;
    for (size_t i = 0; i < P * D; i++) {
        rp[i] = -0.25;
        mp[i] = 0.25;
    }
    for (size_t n = 0; n < N; n++)
        for (size_t d = 0; d < D; d++) {
            rw[tok[n] * D + d] += dy[n * D + d];
            mw[tok[n] * D + d] += fabs(dy[n * D + d]);
            rp[(n % T) * D + d] += dy[n * D + d];
            mp[(n % T) * D + d] += fabs(dy[n * D + d]);
        }
    float *gw = optest_download(tdw), *gp = optest_download(tdp);
    double tol = 4 * unit(mode);
    for (size_t i = 0; i < V * D; i++)
        ck_assert_msg(fabs(gw[i] - rw[i]) <= tol * mw[i] + 1e-7,
                      "[%s] dwte[%zu] = %.9g, expected %.9g", optest_modes[_i].name, i,
                      (double)gw[i], rw[i]);
    for (size_t i = 0; i < P * D; i++) {
        if (i >= T * D) /* positions past T are untouched */
            ck_assert_msg(gp[i] == -0.25f, "dwpe[%zu] beyond T changed: %g", i, (double)gp[i]);
        else
            ck_assert_msg(fabs(gp[i] - rp[i]) <= tol * mp[i] + 1e-7,
                          "[%s] dwpe[%zu] = %.9g, expected %.9g", optest_modes[_i].name, i,
                          (double)gp[i], rp[i]);
    }
    /* deterministic: the same call again adds the same bits */
    upload(tdw, g0);
    s = mpcl_embedding_backward(ctx, tdw, NULL, tdy, tord, tst, T);
    ck_assert_msg(s == MPCL_OK, "backward again: %s", mpcl_last_error(ctx));
    float *gw2 = optest_download(tdw);
    ck_assert_msg(memcmp(gw, gw2, V * D * sizeof *gw) == 0, "embedding backward is not repeatable");

    /* a token outside the vocabulary makes its row NaN */
    tok[4] = (int32_t)V;
    mpcl_tensor *tbad = i32_tensor(ctx, tok, N);
    s = mpcl_embedding_forward(ctx, ty, tbad, twte, twpe, T, 0);
    ck_assert_msg(s == MPCL_OK, "forward: %s", mpcl_last_error(ctx));
    y = optest_download(ty);
    for (size_t d = 0; d < D; d++) {
        ck_assert_msg(isnan(y[4 * D + d]), "row of a bad token: %g", (double)y[4 * D + d]);
        ck_assert_msg(!isnan(y[5 * D + d]), "the next row is NaN");
    }
    /* shape errors name the op */
    s = mpcl_embedding_forward(ctx, ty, ttok, twte, twpe, 4, 0);
    ck_assert_int_eq(s, MPCL_ERR_SHAPE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "mpcl_embedding_forward"), "%s", mpcl_last_error(ctx));
    s = mpcl_embedding_forward(ctx, ty, ttok, twte, twpe, 15, 0); /* wpe has 7 positions */
    ck_assert_int_eq(s, MPCL_ERR_SHAPE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "wpe holds 7 positions"), "%s", mpcl_last_error(ctx));
    s = mpcl_embedding_forward(ctx, ty, ttok, twte, twpe, 5, 3); /* positions 3..7 of 0..6 */
    ck_assert_int_eq(s, MPCL_ERR_SHAPE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "positions 3..7"), "%s", mpcl_last_error(ctx));
    /* from position 2: the rows of position t use wpe[2 + t] */
    tok[4] = 2;
    mpcl_tensor *tok2 = i32_tensor(ctx, tok, N);
    s = mpcl_embedding_forward(ctx, ty, tok2, twte, twpe, T, 2);
    ck_assert_msg(s == MPCL_OK, "forward at 2: %s", mpcl_last_error(ctx));
    float *y2 = optest_download(ty);
    for (size_t n = 0; n < N; n++)
        for (size_t d = 0; d < D; d++) {
            double want = (double)wte[tok[n] * D + d] + wpe[(2 + n % T) * D + d];
            ck_assert_msg(fabs(y2[n * D + d] - want) <= 2 * unit(mode) * fabs(want) + 1e-7,
                          "[%s] y[%zu, %zu] from position 2 = %g, expected %g",
                          optest_modes[_i].name, n, d, (double)y2[n * D + d], want);
        }
    free(y2);
    mpcl_tensor_destroy(tok2);

    free(y);
    free(gw);
    free(gw2);
    free(gp);
    free(rw);
    free(mw);
    free(rp);
    free(mp);
    free(g0);
    free(p0);
    free(ref);
    free(wte);
    free(wpe);
    free(dy);
    mpcl_tensor *ts[] = {twte, twpe, tdy, ttok, ty, tord, tst, tdw, tdp, tbad};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        mpcl_tensor_destroy(ts[i]);
}
END_TEST

/* ------------------------------------------------------------ attention */

typedef struct {
    size_t B, T, H, E;
    double mag; /* qkv values uniform in [-mag, mag) */
} att_case;

/* The reference on qkv (N, 3C) in double. y (N, C), p (G, T, T); with dy:
 * dqkv (N, 3C). abs: the same on |values| (magnitude bounds: every
 * difference taken as a sum). serr: a bound of the score error of float
 * arithmetic, per score, its maximum returned through *serr_max. */
static void ref_attention(const att_case *c, const double *qkv, const double *dy, double *y,
                          double *p, double *dqkv, int abs_mode, double *serr_max)
{
    size_t B = c->B, T = c->T, H = c->H, E = c->E, C = H * E, C3 = 3 * C;
    double sc = 1.0 / sqrt((double)E);
    double *s = dalloc(T * T), *pp = dalloc(T * T), *dp = dalloc(T * T), *ds = dalloc(T * T);
    if (serr_max)
        *serr_max = 0;
    if (dqkv)
        memset(dqkv, 0, B * T * C3 * sizeof *dqkv);
#define Q(t, e) qkv[(b * T + (t)) * C3 + h * E + (e)]
#define K(t, e) qkv[(b * T + (t)) * C3 + C + h * E + (e)]
#define VV(t, e) qkv[(b * T + (t)) * C3 + 2 * C + h * E + (e)]
#define F(x) (abs_mode ? fabs(x) : (x))
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++) {
            for (size_t i = 0; i < T; i++) {
                double m = -INFINITY;
                for (size_t j = 0; j <= i; j++) {
                    double v = 0, a = 0;
                    for (size_t e = 0; e < E; e++) {
                        v += Q(i, e) * K(j, e);
                        a += fabs(Q(i, e) * K(j, e));
                    }
                    s[i * T + j] = v * sc;
                    if (serr_max)
                        *serr_max = fmax(*serr_max, 4.0 * ldexp(1.0, -24) * (E + 2) * a * sc);
                    m = fmax(m, s[i * T + j]);
                }
                double se = 0;
                for (size_t j = 0; j <= i; j++)
                    se += exp(s[i * T + j] - m);
                for (size_t j = 0; j < T; j++)
                    pp[i * T + j] = j <= i ? exp(s[i * T + j] - m) / se : 0.0;
            }
            if (p)
                memcpy(p + (b * H + h) * T * T, pp, T * T * sizeof *pp);
            for (size_t i = 0; i < T; i++)
                for (size_t e = 0; e < E; e++) {
                    double o = 0;
                    for (size_t j = 0; j <= i; j++)
                        o += pp[i * T + j] * F(VV(j, e));
                    y[(b * T + i) * C + h * E + e] = o;
                }
            if (!dqkv)
                continue;
#define DY(t, e) F(dy[(b * T + (t)) * C + h * E + (e)])
            for (size_t i = 0; i < T; i++) {
                double dot = 0;
                for (size_t j = 0; j < T; j++) {
                    double v = 0;
                    for (size_t e = 0; e < E; e++)
                        v += DY(i, e) * F(VV(j, e));
                    dp[i * T + j] = v;
                    dot += pp[i * T + j] * v;
                }
                for (size_t j = 0; j < T; j++)
                    ds[i * T + j] = abs_mode ? pp[i * T + j] * (dp[i * T + j] + fabs(dot))
                                             : pp[i * T + j] * (dp[i * T + j] - dot);
            }
            double *dq = dqkv, *dk = dqkv + C, *dv = dqkv + 2 * C;
            for (size_t i = 0; i < T; i++)
                for (size_t e = 0; e < E; e++) {
                    double aq = 0, ak = 0, av = 0;
                    for (size_t j = 0; j < T; j++) {
                        aq += ds[i * T + j] * F(K(j, e));
                        ak += ds[j * T + i] * F(Q(j, e));
                        av += pp[j * T + i] * DY(j, e);
                    }
                    size_t r = (b * T + i) * C3 + h * E + e;
                    dq[r] = aq * sc;
                    dk[r] = ak * sc;
                    dv[r] = av;
                }
#undef DY
        }
#undef Q
#undef K
#undef VV
#undef F
    free(s);
    free(pp);
    free(dp);
    free(ds);
}

/* The reference backward against central differences of the reference
 * forward, for L = sum(y * dy). */
START_TEST(test_attention_reference_self_check)
{
    if (_i != 0)
        return; /* host code: once */
    att_case c = {2, 4, 2, 3, 1.0};
    size_t N = c.B * c.T, C = c.H * c.E, n3 = N * 3 * C;
    float *fq = falloc(n3), *fd = falloc(N * C);
    optest_fill_uniform(fq, n3, 5, -1.0f, 1.0f);
    optest_fill_uniform(fd, N * C, 6, -1.0f, 1.0f);
    double *qkv = dalloc(n3), *dy = dalloc(N * C), *y = dalloc(N * C), *g = dalloc(n3);
    for (size_t i = 0; i < n3; i++)
        qkv[i] = fq[i];
    for (size_t i = 0; i < N * C; i++)
        dy[i] = fd[i];
    ref_attention(&c, qkv, dy, y, NULL, g, 0, NULL);
    const double h = 1e-6;
    for (size_t i = 0; i < n3; i++) {
        double keep = qkv[i], lp = 0, lm = 0;
        qkv[i] = keep + h;
        ref_attention(&c, qkv, NULL, y, NULL, NULL, 0, NULL);
        for (size_t j = 0; j < N * C; j++)
            lp += y[j] * dy[j];
        qkv[i] = keep - h;
        ref_attention(&c, qkv, NULL, y, NULL, NULL, 0, NULL);
        for (size_t j = 0; j < N * C; j++)
            lm += y[j] * dy[j];
        qkv[i] = keep;
        double fdv = (lp - lm) / (2 * h);
        ck_assert_msg(fabs(fdv - g[i]) <= 1e-7 + 1e-6 * fabs(g[i]),
                      "reference dqkv[%zu] = %.12g, central difference %.12g", i, g[i], fdv);
    }
    free(fq);
    free(fd);
    free(qkv);
    free(dy);
    free(y);
    free(g);
}
END_TEST

static void check_against(const char *what, const float *got, const double *ref, const double *mag,
                          size_t n, double rel, double extra)
{
    for (size_t i = 0; i < n; i++) {
        double tol = rel * mag[i] + extra + 1e-30;
        ck_assert_msg(isfinite(got[i]) && fabs(got[i] - ref[i]) <= tol,
                      "%s[%zu] = %.9g, expected %.9g (tolerance %.3g)", what, i, (double)got[i],
                      ref[i], tol);
    }
}

static void attention_case(int mi, const att_case *c, uint64_t seed)
{
    mpcl_context *ctx = optest_modes[mi].ctx;
    mpcl_precision mode = optest_modes[mi].mode;
    const char *mn = optest_modes[mi].name;
    size_t B = c->B, T = c->T, H = c->H, E = c->E, C = H * E, N = B * T, n3 = N * 3 * C;
    size_t G = B * H;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    float *fq = falloc(n3), *fd = falloc(N * C);
    optest_fill_uniform(fq, n3, seed, (float)-c->mag, (float)c->mag);
    optest_fill_uniform(fd, N * C, seed + 1, -1.0f, 1.0f);
    mpcl_tensor *tqkv = held(ctx, fq, N, 3 * C, 0), *tdy = held(ctx, fd, N, C, 0);
    mpcl_tensor *ty = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, N, C, 0, 0);
    mpcl_tensor *tp = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, G, T, T, 0);
    mpcl_tensor *tdq = optest_tensor(ctx, st, MPCL_MEM_GRADIENTS, NULL, N, 3 * C, 0, 0);
    mpcl_status s = mpcl_attention_forward(ctx, ty, tp, tqkv, T, H);
    ck_assert_msg(s == MPCL_OK, "forward: %s", mpcl_last_error(ctx));
    s = mpcl_attention_backward(ctx, tdq, tdy, tqkv, tp, T, H);
    ck_assert_msg(s == MPCL_OK, "backward: %s", mpcl_last_error(ctx));

    double *qkv = dalloc(n3), *dy = dalloc(N * C);
    for (size_t i = 0; i < n3; i++)
        qkv[i] = fq[i];
    for (size_t i = 0; i < N * C; i++)
        dy[i] = fd[i];
    double *y = dalloc(N * C), *p = dalloc(G * T * T), *g = dalloc(n3);
    double *ya = dalloc(N * C), *pa = dalloc(G * T * T), *ga = dalloc(n3), serr;
    ref_attention(c, qkv, dy, y, p, g, 0, &serr);
    ref_attention(c, qkv, dy, ya, pa, ga, 1, NULL);
    double u = unit(mode), rel = (8.0 + 2.0 * (double)T) * u;
    if (mode == MPCL_PRECISION_FP32)
        rel = 64 * u; /* float sums in another order */
    /* a score error serr moves a probability by at most ~2 serr (relative) */
    double pe = 2.0 * serr;
    double vmax = 0, dmax = 0;
    for (size_t i = 0; i < n3; i++)
        vmax = fmax(vmax, fabs(qkv[i]));
    for (size_t i = 0; i < N * C; i++)
        dmax = fmax(dmax, fabs(dy[i]));
    char what[128];
    float *gy = optest_download(ty), *gp = optest_download(tp), *gg = optest_download(tdq);
    snprintf(what, sizeof what, "[%s] B%zu T%zu H%zu E%zu x%g y", mn, B, T, H, E, c->mag);
    check_against(what, gy, y, ya, N * C, rel, pe * vmax);
    double *one = dalloc(G * T * T);
    for (size_t i = 0; i < G * T * T; i++)
        one[i] = 1.0;
    snprintf(what, sizeof what, "[%s] B%zu T%zu H%zu E%zu x%g probs", mn, B, T, H, E, c->mag);
    check_against(what, gp, p, one, G * T * T, 2 * u, pe);
    for (size_t gi = 0; gi < G; gi++) /* the mask: exact zeros */
        for (size_t i = 0; i < T; i++)
            for (size_t j = i + 1; j < T; j++)
                ck_assert_msg(gp[(gi * T + i) * T + j] == 0.0f, "[%s] masked prob not 0", mn);
    snprintf(what, sizeof what, "[%s] B%zu T%zu H%zu E%zu x%g dqkv", mn, B, T, H, E, c->mag);
    /* the gradient's float-score term scales with the probabilities'
     * gradients: bounded through the magnitude reference */
    double *gtol = dalloc(n3);
    for (size_t i = 0; i < n3; i++)
        gtol[i] = ga[i];
    check_against(what, gg, g, gtol, n3, 2 * rel, pe * 4 * vmax * vmax * dmax * (double)T);

    free(one);
    free(gtol);
    free(gy);
    free(gp);
    free(gg);
    free(fq);
    free(fd);
    free(qkv);
    free(dy);
    free(y);
    free(p);
    free(g);
    free(ya);
    free(pa);
    free(ga);
    mpcl_tensor *ts[] = {tqkv, tdy, ty, tp, tdq};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        mpcl_tensor_destroy(ts[i]);
}

START_TEST(test_attention)
{
    att_case cases[] = {
        {2, 7, 2, 5, 1.0},  /* odd sizes */
        {1, 1, 1, 4, 1.0},  /* one position: the output is v */
        {3, 16, 4, 8, 2.0}, /* several heads, sharper softmax */
        {1, 33, 1, 3, 1.0}, /* a row longer than small work-groups */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        attention_case(_i, &cases[i], 100 + 10 * i);
}
END_TEST

/* Raw scores beyond half's range (|q k| / sqrt(E) up to ~1e5 > 65504): the
 * scores are float in every mode, so the output stays finite and right. */
START_TEST(test_attention_large_scores)
{
    att_case c = {1, 6, 1, 8, 200.0};
    attention_case(_i, &c, 300);
}
END_TEST

/* Decoding with a key / value cache: the prefix in chunks (4 positions,
 * then one at a time) gives the rows of one forward pass over the whole
 * sequence, and the caches hold the keys and values bit for bit. */
START_TEST(test_attention_decode)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_precision mode = optest_modes[_i].mode;
    const size_t B = 2, T = 9, H = 2, E = 4, C = H * E, N = B * T, Tmax = 12;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    float *fq = falloc(N * 3 * C);
    optest_fill_uniform(fq, N * 3 * C, 400, -1.5f, 1.5f);
    mpcl_tensor *tqkv = held(ctx, fq, N, 3 * C, 0);
    mpcl_tensor *ty = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, N, C, 0, 0);
    mpcl_tensor *tp = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, B * H, T, T, 0);
    mpcl_status s = mpcl_attention_forward(ctx, ty, tp, tqkv, T, H);
    ck_assert_msg(s == MPCL_OK, "forward: %s", mpcl_last_error(ctx));
    float *yfull = optest_download(ty);

    mpcl_tensor *kc = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, B * H, Tmax, E, 0);
    mpcl_tensor *vc = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, B * H, Tmax, E, 0);
    size_t pos = 0;
    double tol = (8.0 + 2.0 * T) * unit(mode) * 1.5 * 2 + 1e-6;
    while (pos < T) {
        size_t tq = pos == 0 ? 4 : 1;
        float *chunk = falloc(B * tq * 3 * C);
        for (size_t b = 0; b < B; b++)
            memcpy(chunk + b * tq * 3 * C, fq + (b * T + pos) * 3 * C, tq * 3 * C * sizeof *fq);
        mpcl_tensor *tc = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, chunk, B * tq, 3 * C, 0, 0);
        mpcl_tensor *tyc = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, B * tq, C, 0, 0);
        s = mpcl_attention_decode(ctx, tyc, tc, kc, vc, pos, H);
        ck_assert_msg(s == MPCL_OK, "decode at %zu: %s", pos, mpcl_last_error(ctx));
        float *yc = optest_download(tyc);
        for (size_t b = 0; b < B; b++)
            for (size_t t = 0; t < tq; t++)
                for (size_t i = 0; i < C; i++) {
                    float got = yc[(b * tq + t) * C + i], want = yfull[(b * T + pos + t) * C + i];
                    ck_assert_msg(fabsf(got - want) <= tol,
                                  "[%s] decode y[b %zu, pos %zu, %zu] = %.9g, forward %.9g",
                                  optest_modes[_i].name, b, pos + t, i, (double)got, (double)want);
                }
        free(yc);
        free(chunk);
        mpcl_tensor_destroy(tc);
        mpcl_tensor_destroy(tyc);
        pos += tq;
    }
    float *kh = optest_download(kc), *vh = optest_download(vc);
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++)
            for (size_t t = 0; t < T; t++)
                for (size_t e = 0; e < E; e++) {
                    size_t ci = ((b * H + h) * Tmax + t) * E + e, ri = (b * T + t) * 3 * C + h * E + e;
                    ck_assert_msg(kh[ci] == fq[ri + C] && vh[ci] == fq[ri + 2 * C],
                                  "cache (b %zu, h %zu, t %zu, e %zu) differs", b, h, t, e);
                }
    /* positions past the cache are refused, naming them */
    mpcl_tensor *t1 = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, fq, B * 4, 3 * C, 0, 0);
    mpcl_tensor *y1 = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, B * 4, C, 0, 0);
    s = mpcl_attention_decode(ctx, y1, t1, kc, vc, 10, H);
    ck_assert_int_eq(s, MPCL_ERR_SHAPE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "10..13"), "%s", mpcl_last_error(ctx));
    free(kh);
    free(vh);
    free(yfull);
    free(fq);
    mpcl_tensor *ts[] = {tqkv, ty, tp, kc, vc, t1, y1};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        mpcl_tensor_destroy(ts[i]);
}
END_TEST

START_TEST(test_attention_bad_arguments)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_dtype st = mpcl_storage_dtype(ctx);
    mpcl_tensor *qkv = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, 8, 24, 0, 0);
    mpcl_tensor *y = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, 8, 8, 0, 0);
    mpcl_tensor *p = optest_tensor(ctx, st, MPCL_MEM_ACTIVATIONS, NULL, 4, 4, 4, 0);
    /* heads that do not divide the width */
    mpcl_status s = mpcl_attention_forward(ctx, y, p, qkv, 4, 3);
    ck_assert_int_eq(s, MPCL_ERR_SHAPE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "mpcl_attention_forward"), "%s", mpcl_last_error(ctx));
    /* rows that are not whole sequences */
    s = mpcl_attention_forward(ctx, y, p, qkv, 3, 2);
    ck_assert_int_eq(s, MPCL_ERR_SHAPE);
    /* probs of the wrong shape (B H = 4, T = 4: fits; T = 2 does not) */
    s = mpcl_attention_forward(ctx, y, p, qkv, 2, 2);
    ck_assert_int_eq(s, MPCL_ERR_SHAPE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "probs"), "%s", mpcl_last_error(ctx));
    s = mpcl_attention_forward(ctx, y, p, qkv, 4, 2);
    ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_tensor_destroy(qkv);
    mpcl_tensor_destroy(y);
    mpcl_tensor_destroy(p);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("attention");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"embedding_index", test_embedding_index},
        {"embedding", test_embedding},
        {"attention_reference_self_check", test_attention_reference_self_check},
        {"attention", test_attention},
        {"attention_large_scores", test_attention_large_scores},
        {"attention_decode", test_attention_decode},
        {"attention_bad_arguments", test_attention_bad_arguments},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 600);
        tcase_add_loop_test(tc, cases[i].fn, 0, optest_nmodes);
        suite_add_tcase(s, tc);
    }
    return optest_run(s);
}
