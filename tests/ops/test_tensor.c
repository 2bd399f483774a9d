/* test_tensor.c — the tensor API: creation per dtype, host transfers with
 * conversion, views, fill, argument checks, memory accounting, describe.
 * Runs in every precision mode the device accepts (each mode has its own
 * context; tensors behave the same in all of them). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optest.h"

static mpcl_context *mode_ctx(int i) { return optest_modes[i].ctx; }

static void expect_ok(mpcl_context *ctx, mpcl_status s, const char *what)
{
    ck_assert_msg(s == MPCL_OK, "%s: %s (%s)", what, mpcl_status_name(s), mpcl_last_error(ctx));
}

static void expect_status(mpcl_context *ctx, mpcl_status got, mpcl_status want, const char *needle,
                          const char *what)
{
    const char *msg = mpcl_last_error(ctx);
    ck_assert_msg(got == want, "%s: %s, expected %s (%s)", what, mpcl_status_name(got),
                  mpcl_status_name(want), msg);
    if (needle)
        ck_assert_msg(strstr(msg, needle) != NULL, "%s: message \"%s\" lacks \"%s\"", what, msg,
                      needle);
}

static mpcl_tensor *create(mpcl_context *ctx, mpcl_dtype dt, mpcl_mem_tag tag, int ndim,
                           const size_t *shape)
{
    mpcl_tensor *t = NULL;
    expect_ok(ctx, mpcl_tensor_create(ctx, dt, ndim, shape, tag, &t), "mpcl_tensor_create");
    ck_assert_ptr_nonnull(t);
    return t;
}

static const mpcl_dtype all_dtypes[5] = {MPCL_F16, MPCL_F32, MPCL_I32, MPCL_U8, MPCL_BF16};

/* ------------------------------------------------------------ creation */

START_TEST(test_create_destroy)
{
    mpcl_context *ctx = mode_ctx(_i);
    const size_t s4[4] = {2, 3, 4, 5};
    for (int d = 0; d < 5; d++) {
        for (int ndim = 1; ndim <= 4; ndim++) {
            mpcl_tensor *t = create(ctx, all_dtypes[d], MPCL_MEM_ACTIVATIONS, ndim, s4);
            size_t numel = 1;
            for (int k = 0; k < ndim; k++) {
                ck_assert_uint_eq(mpcl_tensor_dim(t, k), s4[k]);
                numel *= s4[k];
            }
            ck_assert_uint_eq(mpcl_tensor_dim(t, ndim), 0);
            ck_assert_uint_eq(mpcl_tensor_dim(t, -1), 0);
            ck_assert_int_eq(mpcl_tensor_ndim(t), ndim);
            ck_assert_uint_eq(mpcl_tensor_numel(t), numel);
            ck_assert_int_eq(mpcl_tensor_dtype(t), all_dtypes[d]);
            mpcl_tensor_destroy(t);
        }
    }
    ck_assert_uint_eq(mpcl_dtype_size(MPCL_F16), 2);
    ck_assert_uint_eq(mpcl_dtype_size(MPCL_F32), 4);
    ck_assert_uint_eq(mpcl_dtype_size(MPCL_I32), 4);
    ck_assert_uint_eq(mpcl_dtype_size(MPCL_U8), 1);
    ck_assert_uint_eq(mpcl_dtype_size(MPCL_BF16), 2);
    ck_assert_str_eq(mpcl_dtype_name(MPCL_BF16), "bf16");
    mpcl_tensor_destroy(NULL); /* NULL-safe */

    /* Bad shapes and dtypes: an error, and *out stays NULL. */
    const size_t s0[2] = {3, 0}, s5[5] = {1, 1, 1, 1, 1};
    mpcl_tensor *t = (mpcl_tensor *)&t; /* a non-NULL value that must be cleared */
    expect_status(ctx, mpcl_tensor_create(ctx, MPCL_F32, 2, s0, MPCL_MEM_ACTIVATIONS, &t),
                  MPCL_ERR_SHAPE, "dimension 1 is 0", "zero dimension");
    ck_assert_ptr_null(t);
    expect_status(ctx, mpcl_tensor_create(ctx, MPCL_F32, 5, s5, MPCL_MEM_ACTIVATIONS, &t),
                  MPCL_ERR_ARGUMENT, "not 5", "5 dimensions");
    ck_assert_ptr_null(t);
    expect_status(ctx, mpcl_tensor_create(ctx, MPCL_F32, 0, s5, MPCL_MEM_ACTIVATIONS, &t),
                  MPCL_ERR_ARGUMENT, "not 0", "0 dimensions");
    expect_status(ctx, mpcl_tensor_create(ctx, (mpcl_dtype)9, 1, s5, MPCL_MEM_ACTIVATIONS, &t),
                  MPCL_ERR_ARGUMENT, "dtype 9", "unknown dtype");
    expect_status(ctx,
                  mpcl_tensor_create(ctx, MPCL_F32, 1, s5, (mpcl_mem_tag)MPCL_MEM_TAG_COUNT, &t),
                  MPCL_ERR_ARGUMENT, "tag", "unknown tag");
    ck_assert_ptr_null(t);
}
END_TEST

START_TEST(test_describe)
{
    mpcl_context *ctx = mode_ctx(_i);
    char buf[64];
    const size_t a[2] = {2, 3}, b[4] = {64, 1, 28, 28}, c[1] = {7}, d[3] = {1, 2, 3};
    struct {
        mpcl_dtype dt;
        int ndim;
        const size_t *shape;
        const char *want;
    } cases[] = {{MPCL_F16, 2, a, "(2, 3) f16"},
                 {MPCL_F32, 4, b, "(64, 1, 28, 28) f32"},
                 {MPCL_U8, 1, c, "(7) u8"},
                 {MPCL_I32, 3, d, "(1, 2, 3) i32"}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        mpcl_tensor *t = create(ctx, cases[k].dt, MPCL_MEM_WEIGHTS, cases[k].ndim, cases[k].shape);
        ck_assert_str_eq(mpcl_tensor_describe(t, buf, sizeof buf), cases[k].want);
        /* A short buffer is truncated and terminated. */
        char small[6];
        memset(small, 'x', sizeof small);
        mpcl_tensor_describe(t, small, sizeof small);
        ck_assert_uint_lt(strlen(small), sizeof small);
        ck_assert_int_eq(strncmp(small, cases[k].want, strlen(small)), 0);
        mpcl_tensor_destroy(t);
    }
    ck_assert_str_eq(mpcl_tensor_describe(NULL, buf, sizeof buf), "(null)");
}
END_TEST

/* ----------------------------------------------------------- transfers */

START_TEST(test_roundtrip_f32_f16)
{
    mpcl_context *ctx = mode_ctx(_i);
    const float v[] = {
        0.0f,    -0.0f,    1.0f,      -2.5f,    0.1f,     3.14159265f,
        1e-40f,  -1e-7f,   65504.0f,  65520.0f, 70000.0f, 1.00048828125f /* a tie in half */,
        3.4e38f, INFINITY, -INFINITY, NAN,      2049.0f,  1e-5f};
    const size_t n = sizeof v / sizeof v[0];
    const size_t shape[1] = {n};
    float got[sizeof v / sizeof v[0]];

    mpcl_tensor *t = create(ctx, MPCL_F32, MPCL_MEM_ACTIVATIONS, 1, shape);
    expect_ok(ctx, mpcl_tensor_upload(t, v, n), "upload f32");
    expect_ok(ctx, mpcl_tensor_download(t, got, n), "download f32");
    ck_assert_msg(memcmp(got, v, sizeof v) == 0, "f32 round trip is not bit-exact");
    mpcl_tensor_destroy(t);

    t = create(ctx, MPCL_F16, MPCL_MEM_ACTIVATIONS, 1, shape);
    expect_ok(ctx, mpcl_tensor_upload(t, v, n), "upload f16");
    expect_ok(ctx, mpcl_tensor_download(t, got, n), "download f16");
    for (size_t i = 0; i < n; i++) {
        float want = mpcl_half_to_float(mpcl_half_from_float(v[i]));
        ck_assert_msg((isnan(want) && isnan(got[i])) || memcmp(&want, &got[i], sizeof want) == 0,
                      "f16 [%zu]: %.9g -> %.9g, expected %.9g", i, (double)v[i], (double)got[i],
                      (double)want);
    }
    /* The stored bits are mpcl_half_from_float's. */
    uint16_t bits[sizeof v / sizeof v[0]];
    expect_ok(ctx, mpcl_tensor_read(t, bits, sizeof bits), "read f16");
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(bits[i] == mpcl_half_from_float(v[i]),
                      "f16 bits [%zu]: 0x%04x, expected 0x%04x", i, bits[i],
                      mpcl_half_from_float(v[i]));
    ck_assert_uint_eq(bits[10], 0x7c00); /* 70000 overflows to inf */
    ck_assert_uint_eq(bits[11], 0x3c00); /* the tie rounds to even */
    mpcl_tensor_destroy(t);

    /* bf16: the stored bits are mpcl_bf16_from_float's, downloads exact */
    t = create(ctx, MPCL_BF16, MPCL_MEM_ACTIVATIONS, 1, shape);
    expect_ok(ctx, mpcl_tensor_upload(t, v, n), "upload bf16");
    expect_ok(ctx, mpcl_tensor_download(t, got, n), "download bf16");
    expect_ok(ctx, mpcl_tensor_read(t, bits, sizeof bits), "read bf16");
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(bits[i] == mpcl_bf16_from_float(v[i]), "bf16 bits [%zu]: 0x%04x, expected 0x%04x",
                      i, bits[i], mpcl_bf16_from_float(v[i]));
        float want = mpcl_bf16_to_float(bits[i]);
        ck_assert_msg(memcmp(&want, &got[i], sizeof want) == 0, "bf16 [%zu]: %.9g -> %.9g", i,
                      (double)v[i], (double)got[i]);
    }
    ck_assert_uint_eq(bits[10], mpcl_bf16_from_float(70000.0f)); /* in range: no overflow */
    ck_assert(isfinite(got[10]) && fabsf(got[10] - 70000.0f) <= 70000.0f * 0x1p-8f);
    /* fill rounds the same way */
    expect_ok(ctx, mpcl_tensor_fill(t, 1.0f + 0x1p-8f), "fill bf16"); /* a tie: to even, 1 */
    expect_ok(ctx, mpcl_tensor_read(t, bits, sizeof bits), "read bf16");
    ck_assert_uint_eq(bits[0], 0x3f80);
    mpcl_tensor_destroy(t);
}
END_TEST

START_TEST(test_roundtrip_integers)
{
    mpcl_context *ctx = mode_ctx(_i);
    const float vi[] = {0, -1, 5, -2147483648.0f, 16777216.0f, 2147483520.0f, -123456};
    const size_t ni = sizeof vi / sizeof vi[0];
    float got[8];
    mpcl_tensor *t = create(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, 1, (size_t[]){ni});
    expect_ok(ctx, mpcl_tensor_upload(t, vi, ni), "upload i32");
    expect_ok(ctx, mpcl_tensor_download(t, got, ni), "download i32");
    ck_assert_msg(memcmp(got, vi, sizeof vi) == 0, "i32 round trip differs");
    int32_t raw[sizeof vi / sizeof vi[0]];
    expect_ok(ctx, mpcl_tensor_read(t, raw, sizeof raw), "read i32");
    for (size_t i = 0; i < ni; i++)
        ck_assert_msg((float)raw[i] == vi[i], "i32 raw [%zu] = %d", i, raw[i]);

    /* Non-integers and out-of-range values are refused, naming the element,
     * and nothing is written. */
    const float bad_i[][3] = {{1, 2, 1.5f}, {1, 2, 2147483648.0f}, {1, 2, NAN}, {1, 2, -3e9f}};
    for (size_t k = 0; k < sizeof bad_i / sizeof bad_i[0]; k++) {
        mpcl_tensor *s = create(ctx, MPCL_I32, MPCL_MEM_ACTIVATIONS, 1, (size_t[]){3});
        const float good[3] = {7, 8, 9};
        expect_ok(ctx, mpcl_tensor_upload(s, good, 3), "upload");
        expect_status(ctx, mpcl_tensor_upload(s, bad_i[k], 3), MPCL_ERR_ARGUMENT, "element 2",
                      "i32 bad value");
        ck_assert_ptr_nonnull(strstr(mpcl_last_error(ctx), "i32"));
        expect_ok(ctx, mpcl_tensor_download(s, got, 3), "download");
        ck_assert_msg(got[0] == 7 && got[1] == 8 && got[2] == 9, "refused upload wrote");
        mpcl_tensor_destroy(s);
    }
    mpcl_tensor_destroy(t);

    float vu[256];
    for (int i = 0; i < 256; i++)
        vu[i] = (float)(255 - i);
    t = create(ctx, MPCL_U8, MPCL_MEM_ACTIVATIONS, 2, (size_t[]){16, 16});
    expect_ok(ctx, mpcl_tensor_upload(t, vu, 256), "upload u8");
    float gu[256];
    expect_ok(ctx, mpcl_tensor_download(t, gu, 256), "download u8");
    ck_assert_msg(memcmp(gu, vu, sizeof vu) == 0, "u8 round trip differs");
    uint8_t bytes[256];
    expect_ok(ctx, mpcl_tensor_read(t, bytes, sizeof bytes), "read u8");
    for (int i = 0; i < 256; i++)
        ck_assert_uint_eq(bytes[i], (unsigned)(255 - i));
    const float bad_u[][2] = {{1, -1}, {1, 256}, {1, 0.5f}, {1, INFINITY}};
    for (size_t k = 0; k < sizeof bad_u / sizeof bad_u[0]; k++) {
        mpcl_tensor *s = create(ctx, MPCL_U8, MPCL_MEM_ACTIVATIONS, 1, (size_t[]){2});
        expect_status(ctx, mpcl_tensor_upload(s, bad_u[k], 2), MPCL_ERR_ARGUMENT, "element 1",
                      "u8 bad value");
        ck_assert_ptr_nonnull(strstr(mpcl_last_error(ctx), "u8"));
        mpcl_tensor_destroy(s);
    }
    mpcl_tensor_destroy(t);
}
END_TEST

START_TEST(test_raw_write_read)
{
    mpcl_context *ctx = mode_ctx(_i);
    mpcl_tensor *t = create(ctx, MPCL_F16, MPCL_MEM_GRADIENTS, 2, (size_t[]){3, 5});
    uint16_t bits[15], back[15];
    for (int i = 0; i < 15; i++)
        bits[i] = (uint16_t)(0x3c00 + 37 * i); /* arbitrary finite halves */
    expect_ok(ctx, mpcl_tensor_write(t, bits, sizeof bits), "write");
    expect_ok(ctx, mpcl_tensor_read(t, back, sizeof back), "read");
    ck_assert_msg(memcmp(bits, back, sizeof bits) == 0, "raw f16 bytes differ");
    float f[15];
    expect_ok(ctx, mpcl_tensor_download(t, f, 15), "download");
    for (int i = 0; i < 15; i++)
        ck_assert_msg(f[i] == mpcl_half_to_float(bits[i]), "download [%d] = %g", i, (double)f[i]);
    mpcl_tensor_destroy(t);
}
END_TEST

/* Mismatched counts: MPCL_ERR_SHAPE naming the tensor's shape; nothing moves. */
START_TEST(test_count_mismatch)
{
    mpcl_context *ctx = mode_ctx(_i);
    for (int d = 0; d < 4; d++) {
        mpcl_dtype dt = all_dtypes[d];
        mpcl_tensor *t = create(ctx, dt, MPCL_MEM_ACTIVATIONS, 2, (size_t[]){2, 3});
        char shape[32];
        snprintf(shape, sizeof shape, "(2, 3) %s", mpcl_dtype_name(dt));
        float h[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        expect_ok(ctx, mpcl_tensor_upload(t, h, 6), "upload");
        float g[8] = {0};
        expect_status(ctx, mpcl_tensor_upload(t, h + 1, 5), MPCL_ERR_SHAPE, shape, "upload 5 of 6");
        expect_status(ctx, mpcl_tensor_upload(t, h + 1, 7), MPCL_ERR_SHAPE, shape, "upload 7 of 6");
        expect_status(ctx, mpcl_tensor_download(t, g, 7), MPCL_ERR_SHAPE, shape, "download 7 of 6");
        ck_assert_msg(g[0] == 0, "refused download wrote");
        unsigned char raw[64];
        size_t bytes = 6 * mpcl_dtype_size(dt);
        expect_status(ctx, mpcl_tensor_write(t, raw, bytes - 1), MPCL_ERR_SHAPE, shape, "write");
        expect_status(ctx, mpcl_tensor_read(t, raw, bytes + 1), MPCL_ERR_SHAPE, shape, "read");
        expect_ok(ctx, mpcl_tensor_download(t, g, 6), "download");
        for (int i = 0; i < 6; i++)
            ck_assert_msg(g[i] == h[i], "%s [%d] = %g after refused transfers", shape, i,
                          (double)g[i]);
        mpcl_tensor_destroy(t);
    }
}
END_TEST

/* ------------------------------------------------------------------ fill */

START_TEST(test_fill)
{
    mpcl_context *ctx = mode_ctx(_i);
    const float values[4] = {0.1f, -2.5f, -7.0f, 200.0f}; /* per dtype of all_dtypes */
    for (int d = 0; d < 4; d++) {
        mpcl_dtype dt = all_dtypes[d];
        size_t n = 1031;
        mpcl_tensor *t = create(ctx, dt, MPCL_MEM_ACTIVATIONS, 1, &n);
        expect_ok(ctx, mpcl_tensor_fill(t, values[d]), "fill");
        float *g = optest_download(t);
        float want =
            dt == MPCL_F16 ? mpcl_half_to_float(mpcl_half_from_float(values[d])) : values[d];
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(g[i] == want, "fill %s [%zu] = %.9g, expected %.9g", mpcl_dtype_name(dt),
                          i, (double)g[i], (double)want);
        free(g);
        mpcl_tensor_destroy(t);
    }
}
END_TEST

/* ----------------------------------------------------------------- views */

START_TEST(test_views)
{
    mpcl_context *ctx = mode_ctx(_i);
    for (int d = 0; d < 2; d++) {
        mpcl_dtype dt = d ? MPCL_F16 : MPCL_F32;
        size_t align = mpcl_view_alignment(ctx, dt);
        ck_assert_uint_ge(align, 1);
        size_t n = 3 * align + 5;
        float *h = malloc(n * sizeof *h); /* (N), small integers: exact in f16 */
        for (size_t i = 0; i < n; i++)
            h[i] = (float)(i % 1000);
        mpcl_tensor *base = create(ctx, dt, MPCL_MEM_ACTIVATIONS, 1, &n);
        expect_ok(ctx, mpcl_tensor_upload(base, h, n), "upload base");

        mpcl_mem_stats before, after;
        mpcl_memory_stats(ctx, &before);
        /* Reshape: offset 0, same numel. */
        mpcl_tensor *r = NULL;
        size_t rs[2] = {n, 1};
        expect_ok(ctx, mpcl_tensor_view(base, 0, 2, rs, &r), "reshape view");
        ck_assert_int_eq(mpcl_tensor_ndim(r), 2);
        ck_assert_uint_eq(mpcl_tensor_numel(r), n);
        float *g = optest_download(r);
        ck_assert_msg(memcmp(g, h, n * sizeof *h) == 0, "reshape reads other memory");
        free(g);

        /* Sub-view at an aligned offset reads and writes the base's memory. */
        mpcl_tensor *v = NULL;
        size_t vs[2] = {align, 1};
        expect_ok(ctx, mpcl_tensor_view(base, align, 2, vs, &v), "sub-view");
        mpcl_memory_stats(ctx, &after);
        ck_assert_msg(memcmp(&before, &after, sizeof before) == 0,
                      "views changed the memory stats");
        g = optest_download(v);
        ck_assert_msg(memcmp(g, h + align, align * sizeof *h) == 0, "sub-view reads other memory");
        for (size_t i = 0; i < align; i++)
            g[i] = (float)(2000 + i % 10);
        expect_ok(ctx, mpcl_tensor_upload(v, g, align), "upload through the view");
        float *b = optest_download(base);
        for (size_t i = 0; i < n; i++) {
            float want = (i >= align && i < 2 * align) ? g[i - align] : h[i];
            ck_assert_msg(b[i] == want, "base [%zu] = %g after the view's write, expected %g", i,
                          (double)b[i], (double)want);
        }
        free(b);
        free(g);

        /* Misaligned and out-of-range views are refused. */
        mpcl_tensor *bad = (mpcl_tensor *)&bad;
        size_t one[1] = {1};
        if (align > 1) {
            expect_status(ctx, mpcl_tensor_view(base, align / 2, 1, one, &bad), MPCL_ERR_ARGUMENT,
                          "alignment", "misaligned view");
            ck_assert_ptr_null(bad);
        }
        size_t too_big[1] = {n - align + 1};
        expect_status(ctx, mpcl_tensor_view(base, align, 1, too_big, &bad), MPCL_ERR_SHAPE,
                      "do not fit", "view past the end");
        expect_status(ctx, mpcl_tensor_view(base, n, 1, one, &bad), MPCL_ERR_SHAPE, "do not fit",
                      "view from past the end");
        size_t whole_plus[1] = {n + 1};
        expect_status(ctx, mpcl_tensor_view(base, 0, 1, whole_plus, &bad), MPCL_ERR_SHAPE,
                      "do not fit", "reshape with more elements");

        /* A view keeps the memory alive after its base is destroyed. */
        mpcl_tensor_destroy(base);
        g = optest_download(r);
        ck_assert_msg(g[0] == h[0] && g[n - 1] == h[n - 1], "view lost its memory");
        free(g);
        mpcl_tensor_destroy(v);
        mpcl_tensor_destroy(r);
        free(h);
    }
}
END_TEST

/* ----------------------------------------------------- memory accounting */

START_TEST(test_memory_stats)
{
    mpcl_context *ctx = mode_ctx(_i);
    const mpcl_mem_tag tags[3] = {MPCL_MEM_WEIGHTS, MPCL_MEM_GRADIENTS, MPCL_MEM_OPTIMIZER};
    for (int k = 0; k < 3; k++) {
        mpcl_mem_tag tag = tags[k];
        mpcl_mem_stats s0, s1, s2, s3;
        mpcl_memory_stats(ctx, &s0);
        size_t shape[3] = {3, 5, 7}; /* 105 elements */
        mpcl_tensor *a = create(ctx, MPCL_F16, tag, 3, shape);
        mpcl_memory_stats(ctx, &s1);
        uint64_t ab = 105 * 2;
        ck_assert_uint_eq(s1.current[tag], s0.current[tag] + ab);
        ck_assert_uint_eq(s1.current_total, s0.current_total + ab);
        uint64_t want_peak =
            s0.current[tag] + ab > s0.peak[tag] ? s0.current[tag] + ab : s0.peak[tag];
        ck_assert_uint_eq(s1.peak[tag], want_peak);
        for (int t = 0; t < MPCL_MEM_TAG_COUNT; t++)
            if (t != (int)tag)
                ck_assert_uint_eq(s1.current[t], s0.current[t]);

        mpcl_tensor *b = create(ctx, MPCL_F32, tag, 1, (size_t[]){1000});
        mpcl_memory_stats(ctx, &s2);
        ck_assert_uint_eq(s2.current[tag], s1.current[tag] + 4000);
        uint64_t peak2 =
            s1.current[tag] + 4000 > s1.peak[tag] ? s1.current[tag] + 4000 : s1.peak[tag];
        ck_assert_uint_eq(s2.peak[tag], peak2);
        ck_assert_uint_ge(s2.peak_total, s2.current_total);

        /* A view adds nothing. */
        mpcl_tensor *v = NULL;
        expect_ok(ctx, mpcl_tensor_view(b, 0, 2, (size_t[]){10, 100}, &v), "view");
        mpcl_memory_stats(ctx, &s3);
        ck_assert_uint_eq(s3.current[tag], s2.current[tag]);
        mpcl_tensor_destroy(v);

        /* Destroying falls by the exact bytes; the peak stays. */
        mpcl_tensor_destroy(b);
        mpcl_memory_stats(ctx, &s3);
        ck_assert_uint_eq(s3.current[tag], s1.current[tag]);
        ck_assert_uint_eq(s3.peak[tag], s2.peak[tag]);
        mpcl_tensor_destroy(a);
        mpcl_memory_stats(ctx, &s3);
        ck_assert_uint_eq(s3.current[tag], s0.current[tag]);
        ck_assert_uint_eq(s3.current_total, s0.current_total);
        ck_assert_uint_eq(s3.peak[tag], s2.peak[tag]);
        ck_assert_uint_ge(s3.peak_total, s2.current_total);
    }
    mpcl_mem_stats z;
    mpcl_memory_stats(NULL, &z); /* NULL context: zeros */
    ck_assert_uint_eq(z.current_total, 0);
    ck_assert_str_eq(mpcl_mem_tag_name(MPCL_MEM_GRADIENTS), "gradients");
}
END_TEST

int main(void)
{
    optest_init();
    Suite *s = suite_create("tensor");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"create_destroy", test_create_destroy},
        {"describe", test_describe},
        {"roundtrip_f32_f16", test_roundtrip_f32_f16},
        {"roundtrip_integers", test_roundtrip_integers},
        {"raw_write_read", test_raw_write_read},
        {"count_mismatch", test_count_mismatch},
        {"fill", test_fill},
        {"views", test_views},
        {"memory_stats", test_memory_stats},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 600);
        tcase_add_loop_test(tc, cases[i].fn, 0, optest_nmodes);
        suite_add_tcase(s, tc);
    }
    return optest_run(s);
}
