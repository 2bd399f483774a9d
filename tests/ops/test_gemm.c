/* test_gemm.c — mpcl_gemm, the raw router below it (offsets, leading
 * dimensions, strided batches, a shared operand), mpcl_cast, the GEMM
 * accuracy table and the CLBlast tuning check, in every precision mode the
 * device runs.
 *
 * Dimension letters: G batch of products, M N K the sizes of
 * C (M, N) = op(A) (M, K) op(B) (K, N).
 *
 * References are in double from the operands as the device holds them
 * (downloaded after upload). Tolerances are worst-case rounding bounds of
 * the mode (docs/gemm.md), per element, with mag = |alpha| sum_k |a_ik b_kj|
 * + |beta c_ij|:
 *   |err| <= (K + 2) u_acc mag + u_out |ref| + 1e-30
 * u_acc: 2^-24 when the sum is kept in float (fp32, fp16-storage, fp16 with
 * float accumulation), 2^-11 for CLBlast Hgemm (half accumulation);
 * u_out: 0 for f32 output, 2^-11 for f16 output (one rounding of C). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

#define U_F32 0x1p-24
#define U_F16 0x1p-11

/* ------------------------------------------------------------ helpers */

/* Sets every element of t to v by an upload. (Not mpcl_tensor_fill: under
 * oclgrind 21.10 memory written by clEnqueueFillBuffer reads as
 * uninitialised in later kernels; docs/gemm.md.) */
static void set_all(mpcl_tensor *t, float v)
{
    size_t n = mpcl_tensor_numel(t);
    float *h = malloc(n * sizeof *h);
    ck_assert_ptr_nonnull(h);
    for (size_t i = 0; i < n; i++)
        h[i] = v;
    ck_assert_int_eq(mpcl_tensor_upload(t, h, n), MPCL_OK);
    free(h);
}



/* The accumulation the context will use for a GEMM on storage operands:
 * 1 for half (CLBlast Hgemm), 0 for float. */
static int accumulates_in_half(const mpcl_context *ctx)
{
    mpcl_accumulation a = ctx->gemm_accum;
    return ctx->precision == MPCL_PRECISION_FP16 && a == MPCL_ACCUM_HALF && !ctx->hgemm_refused;
}

static double u_out(const mpcl_context *ctx)
{
    /* one rounding of the output to the storage dtype */
    mpcl_dtype d = mpcl_storage_dtype(ctx);
    return d == MPCL_F16 ? U_F16 : d == MPCL_BF16 ? 0x1p-8 : 0.0;
}

static double u_acc(const mpcl_context *ctx) { return accumulates_in_half(ctx) ? U_F16 : U_F32; }

/* Element (g, i, j) of op(X) for X stored as (G, rows, cols) with leading
 * dimension ld, stride st, offset off. */
static double at(const float *x, size_t off, size_t ld, size_t st, size_t g, int trans, size_t i,
                 size_t j)
{
    return trans ? x[off + g * st + j * ld + i] : x[off + g * st + i * ld + j];
}

typedef struct {
    int ta, tb;
    size_t m, n, k, g;
    size_t a_off, lda, a_st, b_off, ldb, b_st, c_off, ldc, c_st; /* elements */
    float alpha, beta;
} gemm_case;

/* Dense 3-D (or 2-D when g == 1) layout of a case. */
static gemm_case dense_case(int ta, int tb, size_t m, size_t n, size_t k, size_t g, float alpha,
                            float beta)
{
    gemm_case c = {ta, tb, m, n, k, g, 0, ta ? m : k, m * k, 0, tb ? k : n, k * n, 0, n, m * n,
                   alpha, beta};
    return c;
}

/* A single product of `variant` (bit 0 A transposed, bit 1 B transposed,
 * 4..7 alpha -1.5 and beta 1, else alpha 1 and beta 0) with offsets and
 * leading dimensions past the rows. */
static gemm_case padded_case(int variant, size_t m, size_t n, size_t k)
{
    gemm_case c;
    c.ta = variant & 1;
    c.tb = (variant >> 1) & 1;
    c.m = m, c.n = n, c.k = k, c.g = 1;
    const size_t ac = c.ta ? c.m : c.k, bc = c.tb ? c.k : c.n;
    c.a_off = 3, c.lda = ac + 2, c.a_st = 0;
    c.b_off = 1, c.ldb = bc + 1, c.b_st = 0;
    c.c_off = 2, c.ldc = c.n + 3, c.c_st = 0;
    c.alpha = variant >= 4 ? -1.5f : 1.0f;
    c.beta = variant >= 4 ? 1.0f : 0.0f;
    return c;
}

static size_t span(size_t off, size_t g, size_t st, size_t rows, size_t ld)
{
    return off + (g - 1) * st + rows * ld;
}

/* Reference and per-element tolerance of case c from host copies of what
 * the device holds. ref, tol (G, M, N) dense. */
static void reference(double ua, double uo, const gemm_case *c, const float *a, const float *b,
                      const float *c0, double *ref, double *tol)
{
    for (size_t g = 0; g < c->g; g++)
        for (size_t i = 0; i < c->m; i++)
            for (size_t j = 0; j < c->n; j++) {
                double s = 0, mag = 0;
                for (size_t p = 0; p < c->k; p++) {
                    double t = at(a, c->a_off, c->lda, c->a_st, g, c->ta, i, p) *
                               at(b, c->b_off, c->ldb, c->b_st, g, c->tb, p, j);
                    s += t;
                    mag += fabs(t);
                }
                double cv = c->beta != 0.0f ? c0[c->c_off + g * c->c_st + i * c->ldc + j] : 0.0;
                double r = c->alpha * s + c->beta * cv;
                mag = fabs(c->alpha) * mag + fabs(c->beta * cv);
                size_t o = (g * c->m + i) * c->n + j;
                ref[o] = r;
                tol[o] = (double)(c->k + 2) * ua * mag + uo * fabs(r) + 1e-30;
            }
}

/* Runs case c through mpcl_gemm_batched_raw on buffers filled with random
 * values (C's gaps with a sentinel), checks every element of C against the
 * reference and every gap against the sentinel. Returns the worst err/tol.
 * c32: C in float through mpcl_gemm_raw_c32 (one product), whose float sums
 * must reach C unrounded: the bound is float's, tighter than one rounding
 * to 16 bits. */
static double run_raw(mpcl_context *ctx, const gemm_case *c, uint64_t seed, int c32)
{
    mpcl_dtype dt = mpcl_storage_dtype(ctx);
    size_t na = span(c->a_off, c->g, c->a_st, c->ta ? c->k : c->m, c->lda);
    size_t nb = span(c->b_off, c->g, c->b_st, c->tb ? c->n : c->k, c->ldb);
    size_t nc = span(c->c_off, c->g, c->c_st, c->m, c->ldc);
    float *ha = malloc(na * sizeof *ha), *hb = malloc(nb * sizeof *hb), *hc = malloc(nc * sizeof *hc);
    ck_assert(ha && hb && hc);
    optest_fill_uniform(ha, na, seed, -1.0f, 1.0f);
    optest_fill_uniform(hb, nb, seed + 1, -1.0f, 1.0f);
    optest_fill_uniform(hc, nc, seed + 2, -1.0f, 1.0f);
    /* C's gaps (and, with beta == 0, C itself) hold a sentinel */
    const float sentinel = 7.0f;
    unsigned char *in_c = calloc(nc, 1);
    ck_assert_ptr_nonnull(in_c);
    for (size_t g = 0; g < c->g; g++)
        for (size_t i = 0; i < c->m; i++)
            for (size_t j = 0; j < c->n; j++)
                in_c[c->c_off + g * c->c_st + i * c->ldc + j] = 1;
    for (size_t i = 0; i < nc; i++)
        if (!in_c[i] || c->beta == 0.0f)
            hc[i] = sentinel;

    mpcl_tensor *ta = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, ha, na, 0, 0, 0);
    mpcl_tensor *tb = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, hb, nb, 0, 0, 0);
    mpcl_tensor *tc = optest_tensor(ctx, c32 ? MPCL_F32 : dt, MPCL_MEM_ACTIVATIONS, hc, nc, 0, 0, 0);
    free(ha);
    free(hb);
    free(hc);
    ha = optest_download(ta); /* what the device holds */
    hb = optest_download(tb);
    hc = optest_download(tc);

    mpcl_status s;
    if (c32) {
        ck_assert_uint_eq(c->g, 1);
        s = mpcl_gemm_raw_c32(ctx, "test_gemm", dt, c->ta, c->tb, c->m, c->n, c->k, c->alpha,
                              ta->mem, c->a_off, c->lda, tb->mem, c->b_off, c->ldb, c->beta,
                              tc->mem, c->c_off, c->ldc);
    } else {
        s = mpcl_gemm_batched_raw(ctx, "test_gemm", dt, c->ta, c->tb, c->m, c->n, c->k, c->alpha,
                                  ta->mem, c->a_off, c->lda, c->a_st, tb->mem, c->b_off, c->ldb,
                                  c->b_st, c->beta, tc->mem, c->c_off, c->ldc, c->c_st, c->g);
    }
    ck_assert_msg(s == MPCL_OK, "mpcl_gemm_batched_raw: %s", mpcl_last_error(ctx));
    float *got = optest_download(tc);

    size_t nout = c->g * c->m * c->n;
    double *ref = malloc(nout * sizeof *ref), *tol = malloc(nout * sizeof *tol);
    ck_assert(ref && tol);
    reference(c32 ? U_F32 : u_acc(ctx), c32 ? 0.0 : u_out(ctx), c, ha, hb, hc, ref, tol);
    double worst = 0;
    for (size_t g = 0; g < c->g; g++)
        for (size_t i = 0; i < c->m; i++)
            for (size_t j = 0; j < c->n; j++) {
                size_t o = (g * c->m + i) * c->n + j;
                double v = got[c->c_off + g * c->c_st + i * c->ldc + j];
                double e = fabs(v - ref[o]);
                ck_assert_msg(e <= tol[o],
                              "%s: C[%zu][%zu][%zu] = %.9g, reference %.9g (error %.3g > bound %.3g); "
                              "M=%zu N=%zu K=%zu G=%zu trans %d%d path %d",
                              mpcl_precision_name(ctx->precision), g, i, j, v, ref[o], e, tol[o], c->m, c->n, c->k,
                              c->g, c->ta, c->tb, ctx->gemm_f16_path);
                if (e / tol[o] > worst)
                    worst = e / tol[o];
            }
    for (size_t i = 0; i < nc; i++)
        if (!in_c[i])
            ck_assert_msg(got[i] == sentinel, "element %zu outside C was written: %g", i,
                          (double)got[i]);
    free(in_c);
    free(ha);
    free(hb);
    free(hc);
    free(got);
    free(ref);
    free(tol);
    mpcl_tensor_destroy(ta);
    mpcl_tensor_destroy(tb);
    mpcl_tensor_destroy(tc);
    return worst;
}

static double run_raw_case(mpcl_context *ctx, const gemm_case *c, uint64_t seed)
{
    return run_raw(ctx, c, seed, 0);
}

/* The float-accumulating implementations to try in ctx's mode. */
static int paths_for(const mpcl_context *ctx, int *paths)
{
    if (mpcl_storage_dtype(ctx) == MPCL_F32) {
        paths[0] = MPCL_GEMM_F16_AUTO;
        return 1;
    }
    paths[0] = MPCL_GEMM_F16_AUTO;
    paths[1] = MPCL_GEMM_F16_CONVERT;
    paths[2] = MPCL_GEMM_F16_DIRECT;
    return 3;
}

/* The accumulations to try in ctx's mode (only fp16 has a choice). */
static int accums_for(const mpcl_context *ctx, mpcl_accumulation *acc)
{
    acc[0] = MPCL_ACCUM_DEFAULT;
    if (ctx->precision != MPCL_PRECISION_FP16)
        return 1;
    acc[1] = MPCL_ACCUM_HALF;
    acc[2] = MPCL_ACCUM_FLOAT;
    return 3;
}

/* ------------------------------------------------------------- tests */

/* Every transpose combination, odd sizes, alpha and beta (exact in half),
 * through mpcl_gemm on 2-D tensors, each implementation the mode has. */
START_TEST(test_gemm_transposes)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_dtype dt = mpcl_storage_dtype(ctx);
    const size_t M = optest_small() ? 7 : 37, N = optest_small() ? 5 : 29, K = optest_small() ? 9 : 45;
    int paths[3];
    int np = paths_for(ctx, paths);
    mpcl_accumulation acc[3];
    int na = accums_for(ctx, acc);
    for (int ai = 0; ai < na; ai++)
        for (int pi = 0; pi < np; pi++)
            for (int t = 0; t < 4; t++)
                for (int bi = 0; bi < 2; bi++) {
                    ck_assert_int_eq(mpcl_set_gemm_accumulation(ctx, acc[ai]), MPCL_OK);
                    ctx->gemm_f16_path = paths[pi];
                    int ta = t & 1, tb = t >> 1;
                    float alpha = 0.75f, beta = bi ? -0.5f : 0.0f;
                    float *ha = malloc(M * K * 4), *hb = malloc(K * N * 4), *hc = malloc(M * N * 4);
                    optest_fill_uniform(ha, M * K, 11 + t, -1, 1);
                    optest_fill_uniform(hb, K * N, 21 + t, -1, 1);
                    optest_fill_uniform(hc, M * N, 31 + t, -1, 1);
                    mpcl_tensor *a = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, ha, ta ? K : M,
                                                   ta ? M : K, 0, 0);
                    mpcl_tensor *b = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, hb, tb ? N : K,
                                                   tb ? K : N, 0, 0);
                    mpcl_tensor *c = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, hc, M, N, 0, 0);
                    free(ha);
                    free(hb);
                    free(hc);
                    ha = optest_download(a);
                    hb = optest_download(b);
                    hc = optest_download(c);
                    mpcl_status s = mpcl_gemm(ctx, ta, tb, alpha, a, b, beta, c);
                    ck_assert_msg(s == MPCL_OK, "mpcl_gemm: %s", mpcl_last_error(ctx));
                    float *got = optest_download(c);
                    gemm_case gc = dense_case(ta, tb, M, N, K, 1, alpha, beta);
                    double ref[37 * 29], tol[37 * 29];
                    reference(u_acc(ctx), u_out(ctx), &gc, ha, hb, hc, ref, tol);
                    for (size_t i = 0; i < M * N; i++)
                        ck_assert_msg(fabs(got[i] - ref[i]) <= tol[i],
                                      "%s trans %d%d accum %d path %d beta %g: C[%zu] = %.9g, "
                                      "reference %.9g, bound %.3g",
                                      optest_modes[_i].name, ta, tb, (int)acc[ai], paths[pi],
                                      (double)beta, i, (double)got[i], ref[i], tol[i]);
                    free(ha);
                    free(hb);
                    free(hc);
                    free(got);
                    mpcl_tensor_destroy(a);
                    mpcl_tensor_destroy(b);
                    mpcl_tensor_destroy(c);
                }
    mpcl_set_gemm_accumulation(ctx, MPCL_ACCUM_DEFAULT);
    ctx->gemm_f16_path = MPCL_GEMM_F16_AUTO;
}
END_TEST

/* 3-D tensors: G independent products. */
START_TEST(test_gemm_batched_tensors)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_dtype dt = mpcl_storage_dtype(ctx);
    const size_t G = 3, M = optest_small() ? 4 : 19, N = optest_small() ? 6 : 23, K = optest_small() ? 5 : 17;
    int paths[3];
    int np = paths_for(ctx, paths);
    for (int pi = 0; pi < np; pi++)
        for (int t = 1; t <= 2; t++) {
            ctx->gemm_f16_path = paths[pi];
            int ta = t & 1, tb = t >> 1;
            float *ha = malloc(G * M * K * 4), *hb = malloc(G * K * N * 4), *hc = malloc(G * M * N * 4);
            optest_fill_uniform(ha, G * M * K, 41, -1, 1);
            optest_fill_uniform(hb, G * K * N, 42, -1, 1);
            optest_fill_uniform(hc, G * M * N, 43, -1, 1);
            mpcl_tensor *a = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, ha, G, ta ? K : M, ta ? M : K, 0);
            mpcl_tensor *b = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, hb, G, tb ? N : K, tb ? K : N, 0);
            mpcl_tensor *c = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, hc, G, M, N, 0);
            free(ha);
            free(hb);
            free(hc);
            ha = optest_download(a);
            hb = optest_download(b);
            hc = optest_download(c);
            ck_assert_msg(mpcl_gemm(ctx, ta, tb, 1.0f, a, b, 1.0f, c) == MPCL_OK, "mpcl_gemm: %s",
                          mpcl_last_error(ctx));
            float *got = optest_download(c);
            gemm_case gc = dense_case(ta, tb, M, N, K, G, 1.0f, 1.0f);
            double ref[3 * 19 * 23], tol[3 * 19 * 23];
            reference(u_acc(ctx), u_out(ctx), &gc, ha, hb, hc, ref, tol);
            for (size_t i = 0; i < G * M * N; i++)
                ck_assert_msg(fabs(got[i] - ref[i]) <= tol[i],
                              "%s batched trans %d%d path %d: C[%zu] = %.9g, reference %.9g, bound %.3g",
                              optest_modes[_i].name, ta, tb, paths[pi], i, (double)got[i], ref[i], tol[i]);
            free(ha);
            free(hb);
            free(hc);
            free(got);
            mpcl_tensor_destroy(a);
            mpcl_tensor_destroy(b);
            mpcl_tensor_destroy(c);
        }
    ctx->gemm_f16_path = MPCL_GEMM_F16_AUTO;
}
END_TEST

/* The raw router as conv uses it: offsets, leading dimensions wider than a
 * row, strides with gaps, a shared (stride 0) operand, beta 0 and 1; the
 * gaps of C must keep their sentinel. */
START_TEST(test_gemm_raw_layouts)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    const int small = optest_small();
    const size_t m = small ? 5 : 10, n = small ? 7 : 53, k = small ? 6 : 25, g = small ? 2 : 4;
    int paths[3];
    int np = paths_for(ctx, paths);
    for (int pi = 0; pi < np; pi++)
        for (int variant = 0; variant < 4; variant++) {
            ctx->gemm_f16_path = paths[pi];
            gemm_case c;
            c.ta = variant & 1;
            c.tb = (variant >> 1) & 1;
            c.m = m, c.n = n, c.k = k, c.g = g;
            size_t ar = c.ta ? k : m, ac = c.ta ? m : k, br = c.tb ? n : k, bc = c.tb ? k : n;
            c.a_off = 3, c.lda = ac + 2, c.a_st = variant == 0 ? 0 : ar * c.lda + 1; /* shared A */
            c.b_off = 1, c.ldb = bc + 1, c.b_st = br * c.ldb + 3;
            c.c_off = 2, c.ldc = n + 3, c.c_st = m * c.ldc + 5;
            c.alpha = 1.0f;
            c.beta = variant >= 2 ? 1.0f : 0.0f;
            run_raw_case(ctx, &c, 100 + (uint64_t)variant);
        }
    ctx->gemm_f16_path = MPCL_GEMM_F16_AUTO;

    /* overlapping C matrices are refused before anything is enqueued */
    mpcl_dtype dt = mpcl_storage_dtype(ctx);
    mpcl_tensor *t = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, 64, 0, 0, 0);
    mpcl_status s = mpcl_gemm_batched_raw(ctx, "test_gemm", dt, 0, 0, 4, 4, 4, 1.0f, t->mem, 0, 4, 0,
                                          t->mem, 0, 4, 0, 0.0f, t->mem, 0, 4, 8, 2);
    ck_assert_int_eq(s, MPCL_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mpcl_last_error(ctx), "overlap"));
    mpcl_tensor_destroy(t);
}
END_TEST

/* mpcl_gemm_raw_c32: the storage mode's operands, C in float (a
 * convolution's column gradient), on every path and accumulation the mode
 * has, through CLBlast's reference path and the own kernel forced (its
 * SG_CF build: tiles, split K, edges) and chosen by measurement: every
 * transposition, beta 0 and not, offsets and leading dimensions past the
 * rows, within float's bound (a C rounded to 16 bits fails it). */
START_TEST(test_gemm_raw_c32)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    const int small = optest_small();
    static const char *const sgemm[] = {"own:3:4:2:8", "clblast", "auto"};
    int paths[3];
    /* oclgrind: the own kernel and the default path and accumulation (the
     * others reach the same convert path) */
    const int np = small ? (paths[0] = MPCL_GEMM_F16_AUTO, 1) : paths_for(ctx, paths);
    mpcl_accumulation acc[3];
    const int na = small ? (acc[0] = MPCL_ACCUM_DEFAULT, 1) : accums_for(ctx, acc);
    const size_t ns = small ? 2 : sizeof sgemm / sizeof sgemm[0];
    for (size_t si = 0; si < ns; si++) {
        ck_assert_int_eq(setenv("MPCL_SGEMM", sgemm[si], 1), 0);
        for (int pi = 0; pi < np; pi++)
            for (int ai = 0; ai < na; ai++)
                for (int variant = 0; variant < 8; variant++) {
                    if (small && variant % 3 != 0)
                        continue;
                    ctx->gemm_f16_path = paths[pi];
                    ctx->gemm_accum = acc[ai];
                    const gemm_case c = padded_case(variant, small ? 7 : 19, small ? 9 : 45,
                                                    small ? 20 : 33);
                    run_raw(ctx, &c, 700 + si * 64 + (uint64_t)(pi * 8 + variant), 1);
                }
    }
    ctx->gemm_f16_path = MPCL_GEMM_F16_AUTO;
    ctx->gemm_accum = MPCL_ACCUM_DEFAULT;
    ck_assert_int_eq(unsetenv("MPCL_SGEMM"), 0);
}
END_TEST

/* mpcl's own Sgemm kernel (cl/sgemm.cl; MPCL_SGEMM forces it, docs/gemm.md),
 * in the 16-bit modes its build that reads half or bf16 operands, in block
 * shapes that reach each of its parts on these sizes: register
 * blocks with edge strips right of and below them, one to three vectors
 * per row, a split K with its reduction, vectors wider than the device's,
 * only edge strips (a block wider than C), and a B whose rows lie 4 KiB
 * apart (copied to longer rows first). Every transposition (a transposed B
 * copied to rows first), beta 0 and not, and single
 * products with offsets and leading dimensions past the rows, against the
 * double reference. Then the measured choice: unforced, a shape's first
 * call writes the verdict to the cache directory and the result is right
 * either way. */
/* The whole file at path, terminated (NULL when it cannot be read). */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n + 4096 + 1 > cap) {
            cap = 2 * cap + 4096 + 1;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, 4096, f);
        n += got;
    } while (got > 0);
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

START_TEST(test_gemm_own_kernel)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    static const char *const cfgs[] = {"own:3:4:1:0", "own:5:4:2:16", "own:4:4:3:0", "own:6:8:2:7",
                                       "own:2:4:1:4", "own:8:16:2:0"};
    const int small = optest_small();
    /* small shapes (oclgrind): the first three, which reach one, two and
     * three vectors per row, a split K and the edges (oclgrind simulates
     * every item; the other three differ in widths and split sizes) */
    const size_t ncfg = small ? 3 : sizeof cfgs / sizeof cfgs[0];
    for (size_t ci = 0; ci < ncfg; ci++) {
        ck_assert_int_eq(setenv("MPCL_SGEMM", cfgs[ci], 1), 0);
        test_gemm_transposes_fn(_i);
        for (int variant = 0; variant < 8; variant++) {
            /* B transposed (variant bit 1): copied to rows first */
            const gemm_case c = padded_case(variant, small ? 7 : 23, small ? 9 : 37, small ? 10 : 41);
            run_raw_case(ctx, &c, 300 + ci * 8 + (uint64_t)variant);
        }
        /* B's rows 4 KiB apart: the kernel reads a copy with longer rows */
        gemm_case c = dense_case(ci & 1, 0, 130, 37, 70, 1, 1.0f, 0.5f); /* 64 blocks of 2 rows */
        c.b_off = 5, c.ldb = 1024;
        run_raw_case(ctx, &c, 350 + ci);
        /* B transposed with N = 1024 (4 KiB rows in float): copied to longer rows */
        if (!small) {
            gemm_case t = dense_case(0, 1, 9, 1024, 20, 1, 1.0f, 0.0f);
            run_raw_case(ctx, &t, 360 + ci);
        }
    }
    /* (in the 16-bit modes the forced kernel above is its 16-bit build,
     * which reads the operands as stored and rounds C once) */
    ck_assert_int_eq(setenv("MPCL_SGEMM", "own:0:4:1:0", 1), 0); /* MR 0 */
    mpcl_tensor *a = optest_tensor(ctx, mpcl_storage_dtype(ctx), MPCL_MEM_ACTIVATIONS, NULL, 4, 4, 0, 0);
    ck_assert_int_eq(mpcl_gemm(ctx, 0, 0, 1.0f, a, a, 0.0f, a), MPCL_ERR_ARGUMENT);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "MPCL_SGEMM is \"own:0:4:1:0\""), "%s", mpcl_last_error(ctx));
    mpcl_tensor_destroy(a);
    ck_assert_int_eq(unsetenv("MPCL_SGEMM"), 0);

    /* the measured choice, kept in the cache directory */
    if (!ctx->cache_enabled)
        return;
    char path[MPCL_PATH_LEN + 96];
    snprintf(path, sizeof path, "%s/sgemm-%016llx.txt", ctx->cache_dir,
             (unsigned long long)mpcl_device_hash(ctx));
    const size_t m = 48 + (size_t)_i, n = 40, k = 36; /* a shape no other test runs */
    gemm_case c = dense_case(0, 0, m, n, k, 1, 1.0f, 0.0f);
    run_raw_case(ctx, &c, 400 + (uint64_t)_i);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no Sgemm choice file %s", path);
    char line[256], want[64];
    snprintf(want, sizeof want, " %zu %zu %zu 0 ", m, n, k);
    int seen = 0;
    ck_assert(fgets(line, sizeof line, f) && strcmp(line, "mpcl-sgemm 1\n") == 0);
    while (fgets(line, sizeof line, f))
        if (strstr(line, want) && (strncmp(line, "own ", 4) == 0 || strncmp(line, "clblast ", 8) == 0))
            seen = 1;
    fclose(f);
    ck_assert_msg(seen, "%s has no verdict for %zux%zux%zu", path, m, n, k);

    /* verdicts for the reference path (zeros for the block shape) read back:
     * one on file survives the next shape's verdict */
    size_t len = 0;
    char *text = read_all(path, &len);
    ck_assert_ptr_nonnull(text);
    static const char keep[] = "clblast 3 3 3 2 42 0 0 0 0\n";
    char *more = malloc(len + sizeof keep);
    ck_assert_ptr_nonnull(more);
    memcpy(more, text, len);
    memcpy(more + len, keep, sizeof keep);
    FILE *w = fopen(path, "wb");
    ck_assert_ptr_nonnull(w);
    ck_assert_uint_eq(fwrite(more, 1, len + sizeof keep - 1, w), len + sizeof keep - 1);
    ck_assert_int_eq(fclose(w), 0);
    gemm_case c2 = dense_case(1, 1, m, n + 1, k, 1, 1.0f, 0.0f); /* both transposed, a new shape */
    run_raw_case(ctx, &c2, 500 + (uint64_t)_i);
    free(text);
    text = read_all(path, &len);
    ck_assert_ptr_nonnull(text);
    snprintf(want, sizeof want, " %zu %zu %zu 3 ", m, n + 1, k);
    ck_assert_msg(strstr(text, keep) && strstr(text, want), "%s lost a verdict:\n%s", path, text);
    free(text);
    free(more);
}
END_TEST

/* Shape and dtype errors: the right status, every shape in the message,
 * and C untouched. */
START_TEST(test_gemm_bad_args)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_dtype dt = mpcl_storage_dtype(ctx), other = dt == MPCL_F16 ? MPCL_F32 : MPCL_F16;
    mpcl_tensor *a = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, 64, 20, 0, 0);
    mpcl_tensor *b = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, 10, 30, 0, 0);
    mpcl_tensor *c = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, 64, 30, 0, 0);
    mpcl_tensor *c_bad = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, 64, 31, 0, 0);
    mpcl_tensor *b_ok = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, 20, 30, 0, 0);
    mpcl_tensor *b_other = optest_tensor(ctx, other, MPCL_MEM_ACTIVATIONS, NULL, 20, 30, 0, 0);
    mpcl_tensor *a3 = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, 2, 64, 20, 0);
    mpcl_tensor *b3 = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, 3, 20, 30, 0);
    mpcl_tensor *c3 = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, 2, 64, 30, 0);
    set_all(a, 1.0f);
    set_all(b_ok, 1.0f);
    set_all(c, 5.0f);
    set_all(c_bad, 5.0f);
    set_all(c3, 5.0f);

    /* inner dimensions 20 vs 10 */
    ck_assert_int_eq(mpcl_gemm(ctx, 0, 0, 1.0f, a, b, 0.0f, c), MPCL_ERR_SHAPE);
    const char *e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(64, 20)") && strstr(e, "(10, 30)") && strstr(e, "(64, 30)"),
                  "message lacks a shape: %s", e);
    /* C of the wrong size */
    ck_assert_int_eq(mpcl_gemm(ctx, 0, 0, 1.0f, a, b_ok, 0.0f, c_bad), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(64, 20)") && strstr(e, "(20, 30)") && strstr(e, "(64, 31)"),
                  "message lacks a shape: %s", e);
    /* transposing B makes (10, 30) -> (30, 10): still wrong */
    ck_assert_int_eq(mpcl_gemm(ctx, 0, 1, 1.0f, a, b, 0.0f, c), MPCL_ERR_SHAPE);
    /* wrong dtype */
    ck_assert_int_eq(mpcl_gemm(ctx, 0, 0, 1.0f, a, b_other, 0.0f, c), MPCL_ERR_ARGUMENT);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, mpcl_dtype_name(other)) && strstr(e, mpcl_dtype_name(dt)),
                  "message lacks the dtypes: %s", e);
    /* batch 2 vs 3; mixed 2-D and 3-D */
    ck_assert_int_eq(mpcl_gemm(ctx, 0, 0, 1.0f, a3, b3, 0.0f, c3), MPCL_ERR_SHAPE);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(2, 64, 20)") && strstr(e, "(3, 20, 30)") && strstr(e, "(2, 64, 30)"),
                  "message lacks a shape: %s", e);
    ck_assert_int_eq(mpcl_gemm(ctx, 0, 0, 1.0f, a3, b_ok, 0.0f, c3), MPCL_ERR_SHAPE);
    ck_assert_int_eq(mpcl_gemm(ctx, 0, 0, 1.0f, NULL, b_ok, 0.0f, c), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_set_gemm_accumulation(ctx, (mpcl_accumulation)7), MPCL_ERR_ARGUMENT);

    /* nothing was written */
    mpcl_tensor *outs[3] = {c, c_bad, c3};
    for (int t = 0; t < 3; t++) {
        float *got = optest_download(outs[t]);
        for (size_t i = 0; i < mpcl_tensor_numel(outs[t]); i++)
            ck_assert_msg(got[i] == 5.0f, "a refused GEMM wrote C[%zu] = %g", i, (double)got[i]);
        free(got);
    }
    /* and the good call works */
    ck_assert_int_eq(mpcl_gemm(ctx, 0, 0, 1.0f, a, b_ok, 0.0f, c), MPCL_OK);
    float *got = optest_download(c);
    for (size_t i = 0; i < 64 * 30; i++)
        ck_assert_msg(got[i] == 20.0f, "C[%zu] = %g, expected 20", i, (double)got[i]);
    free(got);
    mpcl_tensor *all[] = {a, b, c, c_bad, b_ok, b_other, a3, b3, c3};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        mpcl_tensor_destroy(all[i]);
}
END_TEST

/* ---------------------------------------------------------- accuracy */

/* Hgemm's half accumulation emulated on the host: every partial sum
 * rounded to half (one rounding per multiply-add, as an fma), C = alpha s. */
static double emulated_half_dot(const float *a, const float *b, size_t k, size_t n, size_t i,
                                size_t j)
{
    double s = 0;
    for (size_t p = 0; p < k; p++)
        s = mpcl_half_to_float(mpcl_half_from_double(s + (double)a[i * k + p] * (double)b[p * n + j]));
    return s;
}

/* Max error relative to the magnitude sum, and max normwise relative error
 * (max |err| / max |ref|), of M x N x K products of uniform [-1, 1) inputs,
 * for K = 64, 512, 4096; asserted against the mode's bound (K + 2) u_acc +
 * u_out. Prints the table docs/gemm.md reports. */
START_TEST(test_gemm_accuracy)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    mpcl_dtype dt = mpcl_storage_dtype(ctx);
    const size_t M = optest_small() ? 4 : 64, N = optest_small() ? 4 : 64;
    const size_t ks[3] = {64, 512, 4096};
    const int nk = optest_small() ? 2 : 3; /* oclgrind: K = 4096 took half the suite's time */
    int paths[3];
    int np = paths_for(ctx, paths);
    mpcl_accumulation acc[3];
    int nacc = accums_for(ctx, acc);
    for (int ki = 0; ki < nk; ki++) {
        size_t K = ks[ki];
        float *ha = malloc(M * K * 4), *hb = malloc(K * N * 4);
        double *ref = malloc(M * N * sizeof *ref), *mag = malloc(M * N * sizeof *mag);
        ck_assert(ha && hb && ref && mag);
        optest_fill_uniform(ha, M * K, 500 + K, -1, 1);
        optest_fill_uniform(hb, K * N, 600 + K, -1, 1);
        mpcl_tensor *a = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, ha, M, K, 0, 0);
        mpcl_tensor *b = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, hb, K, N, 0, 0);
        mpcl_tensor *c = optest_tensor(ctx, dt, MPCL_MEM_ACTIVATIONS, NULL, M, N, 0, 0);
        free(ha);
        free(hb);
        ha = optest_download(a);
        hb = optest_download(b);
        double refmax = 0;
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++) {
                double s = 0, m = 0;
                for (size_t p = 0; p < K; p++) {
                    s += (double)ha[i * K + p] * hb[p * N + j];
                    m += fabs((double)ha[i * K + p] * hb[p * N + j]);
                }
                ref[i * N + j] = s;
                mag[i * N + j] = m;
                refmax = fmax(refmax, fabs(s));
            }
        for (int ai = 0; ai < nacc; ai++)
            for (int pi = 0; pi < np; pi++) {
                ck_assert_int_eq(mpcl_set_gemm_accumulation(ctx, acc[ai]), MPCL_OK);
                ctx->gemm_f16_path = paths[pi];
                ck_assert_msg(mpcl_gemm(ctx, 0, 0, 1.0f, a, b, 0.0f, c) == MPCL_OK, "mpcl_gemm: %s",
                              mpcl_last_error(ctx));
                float *got = optest_download(c);
                double worst_mag = 0, worst_abs = 0;
                double bound = (double)(K + 2) * u_acc(ctx) + u_out(ctx);
                for (size_t i = 0; i < M * N; i++) {
                    double err = fabs(got[i] - ref[i]);
                    worst_mag = fmax(worst_mag, err / mag[i]);
                    worst_abs = fmax(worst_abs, err);
                }
                const char *how = mpcl_storage_dtype(ctx) == MPCL_F32 ? "Sgemm"
                                  : accumulates_in_half(ctx)          ? "Hgemm (half accumulation)"
                                  : mpcl_storage_dtype(ctx) == MPCL_BF16 && paths[pi] == MPCL_GEMM_F16_CONVERT
                                      ? "bf16 convert + Sgemm"
                                  : mpcl_storage_dtype(ctx) == MPCL_BF16 && paths[pi] == MPCL_GEMM_F16_DIRECT
                                      ? "bf16 direct gemm_f32acc"
                                  : paths[pi] == MPCL_GEMM_F16_CONVERT ? "convert + Sgemm"
                                  : paths[pi] == MPCL_GEMM_F16_DIRECT  ? "direct gemm_f32acc"
                                                                       : "default path";
                printf("accuracy %s %s M=%zu N=%zu K=%zu: max |err|/mag %.3g, max |err|/max|ref| "
                       "%.3g (bound %.3g)\n",
                       optest_modes[_i].name, how, M, N, K, worst_mag, worst_abs / refmax, bound);
                ck_assert_msg(worst_mag <= bound, "%s %s K=%zu: error %.3g of the magnitude exceeds %.3g",
                              optest_modes[_i].name, how, K, worst_mag, bound);
                free(got);
            }
        if (_i == 0) {
            /* the expected error of Hgemm, from its emulation on the same
             * inputs rounded to half */
            double worst_mag = 0, worst_abs = 0;
            for (size_t i = 0; i < M * K; i++)
                ha[i] = mpcl_half_to_float(mpcl_half_from_float(ha[i]));
            for (size_t i = 0; i < K * N; i++)
                hb[i] = mpcl_half_to_float(mpcl_half_from_float(hb[i]));
            for (size_t i = 0; i < M; i++)
                for (size_t j = 0; j < N; j++) {
                    double r = 0, m = 0;
                    for (size_t p = 0; p < K; p++) {
                        r += (double)ha[i * K + p] * hb[p * N + j];
                        m += fabs((double)ha[i * K + p] * hb[p * N + j]);
                    }
                    double err = fabs(emulated_half_dot(ha, hb, K, N, i, j) - r);
                    worst_mag = fmax(worst_mag, err / m);
                    worst_abs = fmax(worst_abs, err);
                }
            printf("accuracy emulated-hgemm (host, half partial sums) M=%zu N=%zu K=%zu: max "
                   "|err|/mag %.3g, max |err|/max|ref| %.3g (bound %.3g)\n",
                   M, N, K, worst_mag, worst_abs / refmax, (double)(K + 2) * U_F16);
        }
        free(ha);
        free(hb);
        free(ref);
        free(mag);
        mpcl_tensor_destroy(a);
        mpcl_tensor_destroy(b);
        mpcl_tensor_destroy(c);
    }
    mpcl_set_gemm_accumulation(ctx, MPCL_ACCUM_DEFAULT);
    ctx->gemm_f16_path = MPCL_GEMM_F16_AUTO;
}
END_TEST

/* fp16 mode: a CLBlast that refuses Hgemm must leave a note in the
 * precision explanation and fall back to float accumulation. */
START_TEST(test_gemm_hgemm_fallback)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    if (ctx->precision != MPCL_PRECISION_FP16)
        return; /* only fp16 mode has Hgemm */
    ck_assert_int_eq(mpcl_set_gemm_accumulation(ctx, MPCL_ACCUM_HALF), MPCL_OK);
    mpcl_tensor *a = optest_tensor(ctx, MPCL_F16, MPCL_MEM_ACTIVATIONS, NULL, 8, 8, 0, 0);
    mpcl_tensor *c = optest_tensor(ctx, MPCL_F16, MPCL_MEM_ACTIVATIONS, NULL, 8, 8, 0, 0);
    set_all(a, 0.5f);
    ck_assert_msg(mpcl_gemm(ctx, 0, 0, 1.0f, a, a, 0.0f, c) == MPCL_OK, "%s", mpcl_last_error(ctx));
    float *got = optest_download(c);
    for (int i = 0; i < 64; i++)
        ck_assert_msg(got[i] == 2.0f, "C[%d] = %g, expected 2", i, (double)got[i]);
    free(got);
    const char *why = NULL;
    mpcl_precision_chosen(ctx, &why);
    printf("fp16: Hgemm %s; why: %s\n", ctx->hgemm_refused ? "refused" : "accepted", why);
    if (ctx->hgemm_refused)
        ck_assert_msg(strstr(why, "Hgemm refused") != NULL, "no note of the refusal: %s", why);
    else
        ck_assert_msg(strstr(why, "Hgemm refused") == NULL, "a note without a refusal: %s", why);
    mpcl_set_gemm_accumulation(ctx, MPCL_ACCUM_DEFAULT);
    mpcl_tensor_destroy(a);
    mpcl_tensor_destroy(c);
}
END_TEST

/* The tuning table: on a device it lists, the override was verified at
 * context creation, and Sgemm with it is exact on small integers (checked
 * here again, independently of tuning.c, through mpcl_gemm in fp32). */
START_TEST(test_gemm_tuning)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    printf("%s: tuning: %s\n", optest_modes[_i].name, ctx->tuning_note);
    if (mpcl_tuning_has_override(ctx))
        ck_assert_msg(strstr(ctx->tuning_note, "verified exact") != NULL, "tuning not verified: %s",
                      ctx->tuning_note);
    else
        ck_assert_ptr_nonnull(strstr(ctx->tuning_note, "no CLBlast tuning"));
    if (mpcl_storage_dtype(ctx) != MPCL_F32)
        return;
    const size_t M = optest_small() ? 9 : 129, N = optest_small() ? 7 : 67, K = optest_small() ? 11 : 257;
    float *ha = malloc(M * K * 4), *hb = malloc(K * N * 4);
    ck_assert(ha && hb);
    for (size_t i = 0; i < M * K; i++)
        ha[i] = (float)((int)((i * 7919) % 9) - 4);
    for (size_t i = 0; i < K * N; i++)
        hb[i] = (float)((int)((i * 104729) % 7) - 3);
    mpcl_tensor *a = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, ha, M, K, 0, 0);
    mpcl_tensor *b = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, hb, K, N, 0, 0);
    mpcl_tensor *c = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, M, N, 0, 0);
    ck_assert_int_eq(mpcl_gemm(ctx, 0, 0, 1.0f, a, b, 0.0f, c), MPCL_OK);
    float *got = optest_download(c);
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            double s = 0;
            for (size_t p = 0; p < K; p++)
                s += (double)ha[i * K + p] * hb[p * N + j];
            ck_assert_msg(got[i * N + j] == (float)s, "C[%zu][%zu] = %g, exact %g", i, j,
                          (double)got[i * N + j], s);
        }
    free(ha);
    free(hb);
    free(got);
    mpcl_tensor_destroy(a);
    mpcl_tensor_destroy(b);
    mpcl_tensor_destroy(c);
}
END_TEST

/* --------------------------------------------------------------- cast */

static int half_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x03ff); }

static float tu_u2f_(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* f16 -> f32 for every half (a stride through them in small mode), bit for
 * bit against mpcl_half_to_float (NaN: a NaN with the same sign). */
START_TEST(test_cast_f16_to_f32)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    const size_t step = optest_small() ? 61 : 1;
    const size_t n = (65536 + step - 1) / step;
    uint16_t *h = malloc(n * 2);
    ck_assert_ptr_nonnull(h);
    for (size_t i = 0; i < n; i++)
        h[i] = (uint16_t)(i * step);
    mpcl_tensor *src = optest_tensor(ctx, MPCL_F16, MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    mpcl_tensor *dst = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    ck_assert_int_eq(mpcl_tensor_write(src, h, n * 2), MPCL_OK);
    ck_assert_msg(mpcl_cast(ctx, dst, src) == MPCL_OK, "mpcl_cast: %s", mpcl_last_error(ctx));
    uint32_t *got = malloc(n * 4);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(mpcl_tensor_read(dst, got, n * 4), MPCL_OK);
    for (size_t i = 0; i < n; i++) {
        float want = mpcl_half_to_float(h[i]);
        uint32_t wb;
        memcpy(&wb, &want, 4);
        if (half_is_nan(h[i]))
            ck_assert_msg((got[i] & 0x7f800000u) == 0x7f800000u && (got[i] & 0x7fffffu) &&
                              (got[i] >> 31) == (uint32_t)(h[i] >> 15),
                          "half 0x%04x: got 0x%08x, not a NaN of its sign", h[i], got[i]);
        else
            ck_assert_msg(got[i] == wb, "half 0x%04x: got 0x%08x, expected 0x%08x", h[i], got[i], wb);
    }
    free(h);
    free(got);
    mpcl_tensor_destroy(src);
    mpcl_tensor_destroy(dst);
}
END_TEST

/* f32 -> f16 bit for bit against mpcl_half_from_float: edge cases (ties
 * to even, subnormals, overflow, inf, NaN, -0), every exact tie between
 * neighbouring finite halves and one float ulp either side, and random
 * floats over many binades. */
START_TEST(test_cast_f32_to_f16)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    const float edges[] = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, 1e9f, -1e9f,
                           INFINITY, -INFINITY, NAN, -NAN, 0x1p-24f, 0x1p-25f, 0x1.8p-25f, 0x1p-26f,
                           0x1p-14f, 0x1.ffcp-15f, 1.0009765625f, 1.00048828125f, 1.00146484375f,
                           2049.0f, 2051.0f, 0x1p-149f, 3.14159265f, -2.71828f};
    const size_t ne = sizeof edges / sizeof edges[0];
    const size_t step = optest_small() ? 257 : 1;
    const size_t nt = (0x7bff + step) / step; /* ties below the largest finite half */
    const size_t nr = optest_small() ? 64 : 20000;
    const size_t n = ne + 6 * nt + nr;
    float *x = malloc(n * 4);
    ck_assert_ptr_nonnull(x);
    size_t at_ = 0;
    for (size_t i = 0; i < ne; i++)
        x[at_++] = edges[i];
    for (size_t t = 0; t < nt; t++) {
        uint16_t h = (uint16_t)(t * step);
        /* the exact midpoint between h and h + 1, positive and negative,
         * and the floats next to it */
        float mid = (mpcl_half_to_float(h) + mpcl_half_to_float((uint16_t)(h + 1))) * 0.5f;
        float lo = nextafterf(mid, 0.0f), hi = nextafterf(mid, INFINITY);
        x[at_++] = mid;
        x[at_++] = -mid;
        x[at_++] = lo;
        x[at_++] = hi;
        x[at_++] = -lo;
        x[at_++] = -hi;
    }
    uint64_t s = 12345;
    for (size_t i = 0; i < nr; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        uint32_t bits = (uint32_t)(s >> 32);
        /* exponents from 2^-30 to 2^20: subnormal halves to overflow */
        uint32_t e = 97 + (bits % 51);
        bits = (bits & 0x807fffffu) | (e << 23);
        memcpy(&x[at_++], &bits, 4);
    }
    ck_assert_uint_eq(at_, n);
    mpcl_tensor *src = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, x, n, 0, 0, 0);
    mpcl_tensor *dst = optest_tensor(ctx, MPCL_F16, MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    ck_assert_msg(mpcl_cast(ctx, dst, src) == MPCL_OK, "mpcl_cast: %s", mpcl_last_error(ctx));
    uint16_t *got = malloc(n * 2);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(mpcl_tensor_read(dst, got, n * 2), MPCL_OK);
    for (size_t i = 0; i < n; i++) {
        uint16_t want = mpcl_half_from_float(x[i]);
        if (half_is_nan(want))
            ck_assert_msg(half_is_nan(got[i]) && (got[i] >> 15) == (want >> 15),
                          "float %a: got 0x%04x, expected a NaN like 0x%04x", (double)x[i], got[i], want);
        else
            ck_assert_msg(got[i] == want, "float %a (%.9g): got 0x%04x, expected 0x%04x", (double)x[i],
                          (double)x[i], got[i], want);
    }
    free(x);
    free(got);
    mpcl_tensor_destroy(src);
    mpcl_tensor_destroy(dst);
}
END_TEST

/* Same-dtype casts copy bit for bit; bad arguments write nothing. */
START_TEST(test_cast_copy_and_bad_args)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    const size_t n = 1001;
    float *x = malloc(n * 4);
    ck_assert_ptr_nonnull(x);
    optest_fill_uniform(x, n, 77, -100, 100);
    mpcl_dtype types[2] = {MPCL_F32, MPCL_F16};
    for (int t = 0; t < 2; t++) {
        mpcl_tensor *src = optest_tensor(ctx, types[t], MPCL_MEM_ACTIVATIONS, x, n, 0, 0, 0);
        mpcl_tensor *dst = optest_tensor(ctx, types[t], MPCL_MEM_ACTIVATIONS, NULL, 7, 11, 13, 0);
        ck_assert_msg(mpcl_cast(ctx, dst, src) == MPCL_OK, "mpcl_cast: %s", mpcl_last_error(ctx));
        float *a = optest_download(src), *b = optest_download(dst);
        ck_assert_int_eq(memcmp(a, b, n * 4), 0);
        free(a);
        free(b);
        mpcl_tensor_destroy(src);
        mpcl_tensor_destroy(dst);
    }
    mpcl_tensor *src = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, x, n, 0, 0, 0);
    mpcl_tensor *dst = optest_tensor(ctx, MPCL_F16, MPCL_MEM_ACTIVATIONS, NULL, 10, 100, 0, 0);
    mpcl_tensor *dst_i = optest_tensor(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    set_all(dst, 3.0f);
    set_all(dst_i, 3.0f);
    ck_assert_int_eq(mpcl_cast(ctx, dst, src), MPCL_ERR_SHAPE);
    const char *e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(10, 100) f16") && strstr(e, "(1001) f32"), "message lacks a shape: %s", e);
    ck_assert_int_eq(mpcl_cast(ctx, dst_i, src), MPCL_ERR_ARGUMENT);
    e = mpcl_last_error(ctx);
    ck_assert_msg(strstr(e, "(1001) i32") && strstr(e, "(1001) f32"), "message lacks a shape: %s", e);
    ck_assert_int_eq(mpcl_cast(ctx, NULL, src), MPCL_ERR_ARGUMENT);
    float *got = optest_download(dst);
    for (size_t i = 0; i < 1000; i++)
        ck_assert_msg(got[i] == 3.0f, "a refused cast wrote dst[%zu] = %g", i, (double)got[i]);
    free(got);
    got = optest_download(dst_i);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == 3.0f, "a refused cast wrote dst[%zu] = %g", i, (double)got[i]);
    free(got);
    free(x);
    mpcl_tensor_destroy(src);
    mpcl_tensor_destroy(dst);
    mpcl_tensor_destroy(dst_i);
}
END_TEST

/* bf16 <-> f32 in every mode (cl/bf16.cl builds in every variant): every
 * bf16 (a stride in small mode) to float bit for bit, and floats (exact
 * ties between neighbouring bf16 values, one float ulp either side, inf,
 * NaN, random bit patterns) to bf16 against mpcl_bf16_from_float (NaN: a
 * NaN of the same sign). f16 <-> bf16 has no direct cast. */
static int bf16_is_nan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x7f); }

START_TEST(test_cast_bf16)
{
    mpcl_context *ctx = optest_modes[_i].ctx;
    const size_t step = optest_small() ? 61 : 1;
    const size_t n = (65536 + step - 1) / step;
    uint16_t *h = malloc(n * 2), *got16 = malloc(6 * n * 2);
    uint32_t *got = malloc(n * 4);
    float *x = malloc(6 * n * 4);
    ck_assert(h && got && x && got16);
    for (size_t i = 0; i < n; i++)
        h[i] = (uint16_t)(i * step);
    mpcl_tensor *src = optest_tensor(ctx, MPCL_BF16, MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    mpcl_tensor *dst = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, n, 0, 0, 0);
    ck_assert_int_eq(mpcl_tensor_write(src, h, n * 2), MPCL_OK);
    ck_assert_msg(mpcl_cast(ctx, dst, src) == MPCL_OK, "mpcl_cast: %s", mpcl_last_error(ctx));
    ck_assert_int_eq(mpcl_tensor_read(dst, got, n * 4), MPCL_OK);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(got[i] == (uint32_t)h[i] << 16, "bf16 0x%04x: got 0x%08x", h[i], got[i]);
    /* ties: the float halfway between code c and c + 1 has low half 0x8000 */
    size_t m = 0;
    uint64_t s = 99;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = (uint32_t)h[i] << 16;
        x[m++] = tu_u2f_(c | 0x8000u);
        x[m++] = tu_u2f_(c | 0x7fffu);
        x[m++] = tu_u2f_(c | 0x8001u);
        x[m++] = tu_u2f_(c);
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[m++] = tu_u2f_((uint32_t)(s >> 32));
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        x[m++] = tu_u2f_((uint32_t)(s >> 32));
    }
    mpcl_tensor *fs = optest_tensor(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, NULL, m, 0, 0, 0);
    mpcl_tensor *bs = optest_tensor(ctx, MPCL_BF16, MPCL_MEM_ACTIVATIONS, NULL, m, 0, 0, 0);
    ck_assert_int_eq(mpcl_tensor_write(fs, x, m * 4), MPCL_OK);
    ck_assert_msg(mpcl_cast(ctx, bs, fs) == MPCL_OK, "mpcl_cast: %s", mpcl_last_error(ctx));
    ck_assert_int_eq(mpcl_tensor_read(bs, got16, m * 2), MPCL_OK);
    for (size_t i = 0; i < m; i++) {
        uint16_t want = mpcl_bf16_from_float(x[i]);
        if (bf16_is_nan(want))
            ck_assert_msg(bf16_is_nan(got16[i]) && (got16[i] >> 15) == (want >> 15),
                          "float %a: got 0x%04x, expected a NaN like 0x%04x", (double)x[i], got16[i],
                          want);
        else
            ck_assert_msg(got16[i] == want, "float %a: got 0x%04x, expected 0x%04x", (double)x[i],
                          got16[i], want);
    }
    /* no direct f16 <-> bf16 cast; nothing written */
    mpcl_tensor *f16 = optest_tensor(ctx, MPCL_F16, MPCL_MEM_ACTIVATIONS, NULL, m, 0, 0, 0);
    ck_assert_int_eq(mpcl_cast(ctx, f16, bs), MPCL_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(mpcl_last_error(ctx), "bf16"));
    free(h);
    free(got);
    free(got16);
    free(x);
    mpcl_tensor_destroy(src);
    mpcl_tensor_destroy(dst);
    mpcl_tensor_destroy(fs);
    mpcl_tensor_destroy(bs);
    mpcl_tensor_destroy(f16);
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("gemm");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"transposes", test_gemm_transposes},
        {"batched", test_gemm_batched_tensors},
        {"raw_layouts", test_gemm_raw_layouts},
        {"raw_c32", test_gemm_raw_c32},
        {"bad_args", test_gemm_bad_args},
        {"accuracy", test_gemm_accuracy},
        {"hgemm_fallback", test_gemm_hgemm_fallback},
        {"tuning", test_gemm_tuning},
        {"own_kernel", test_gemm_own_kernel},
        {"cast_f16_f32", test_cast_f16_to_f32},
        {"cast_f32_f16", test_cast_f32_to_f16},
        {"cast_copy_bad", test_cast_copy_and_bad_args},
        {"cast_bf16", test_cast_bf16},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 1200);
        tcase_add_loop_test(tc, cases[i].fn, 0, optest_nmodes);
        suite_add_tcase(s, tc);
    }
    return optest_run(s);
}
