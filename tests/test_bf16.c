/* test_bf16.c — host bfloat16 conversion (src/bf16.c) against independent
 * references: exact known answers for every rounding rule, all 65,536 bf16
 * values, a reference that rounds in double arithmetic by comparing with
 * the two neighbouring bf16 values for millions of random floats; and the
 * device's conversions in the bf16 mode (mpcl_cast, the kernels every bf16
 * load and store use) bit for bit against the host on all 65,536 bf16
 * values and on the edge cases plus a few million random floats.
 *
 * Loops count mismatches and assert once, reporting the first mismatch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ------------------------------------------------ independent references */

static int bf16_is_nan(uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0; }

/* The value of a bf16 from its definition: sign, 8-bit exponent (bias 127),
 * 7-bit mantissa; subnormals m * 2^-133, normals (128 + m) * 2^(e - 134). */
static double ref_bf16_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 7) & 0xff, m = h & 0x7f;
    double v;
    if (e == 0)
        v = ldexp((double)m, -133);
    else if (e == 255)
        v = m ? NAN : INFINITY;
    else
        v = ldexp((double)(128 + m), e - 134);
    return s ? -v : v;
}

/* Round to nearest even by comparison: the bf16 codes are ordered like the
 * values they hold, so the largest code whose value is <= |x| and the next
 * one bracket |x|; the nearer wins, a tie goes to the even code. Above the
 * largest finite bf16 the next value is 2^128 with the code of infinity
 * (IEEE 754 rounds as if the exponent were unbounded). Not for NaN. */
static uint16_t ref_bf16_from_float(float x)
{
    uint16_t sign = signbit(x) ? 0x8000u : 0;
    double a = fabs((double)x);
    if (isinf(a))
        return (uint16_t)(sign | 0x7f80u);
    unsigned lo = 0, hi = 0x7f7f;
    while (lo < hi) { /* largest code with value <= a */
        unsigned mid = (lo + hi + 1) / 2;
        if (ref_bf16_value((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    double lo_v = ref_bf16_value((uint16_t)lo);
    double hi_v = lo == 0x7f7f ? ldexp(1.0, 128) : ref_bf16_value((uint16_t)(lo + 1));
    unsigned code;
    if (a - lo_v < hi_v - a)
        code = lo;
    else if (a - lo_v > hi_v - a)
        code = lo + 1;
    else
        code = (lo & 1) ? lo + 1 : lo;
    return (uint16_t)(sign | code);
}

static float random_float(uint64_t *s)
{
    uint32_t bits = (uint32_t)(tu_rand(s) >> 32);
    switch (tu_rand(s) % 4) {
    case 0: /* exact ties and their neighbours in the low half */
        bits = (bits & 0xffff0000u) | (uint32_t)(0x7fffu + tu_rand(s) % 3);
        break;
    case 1: /* magnitudes around 1, where training values live */
        bits = (bits & 0x807fffffu) | ((uint32_t)(127 - 20 + tu_rand(s) % 40) << 23);
        break;
    default: /* any bit pattern: subnormals, huge values, inf, NaN */
        break;
    }
    return tu_u2f(bits);
}

static const struct {
    uint32_t in;
    uint16_t out;
} KNOWN[] = {
    {0x00000000u, 0x0000}, {0x80000000u, 0x8000}, /* zeros keep their sign */
    {0x3f800000u, 0x3f80}, {0xc0000000u, 0xc000}, /* 1, -2 */
    {0x3f808000u, 0x3f80}, /* 1 + 2^-8: tie, to even (down) */
    {0x3f818000u, 0x3f82}, /* 1 + 3 * 2^-8: tie, to even (up) */
    {0x3f808001u, 0x3f81}, /* just above the tie */
    {0x3f807fffu, 0x3f80}, /* just below the tie */
    {0xbf808000u, 0xbf80}, {0xbf818000u, 0xbf82}, /* the same, negative */
    {0x3f7fffffu, 0x3f80}, /* just below 1: up to 1 (the carry steps the exponent) */
    {0x3dcccccdu, 0x3dcd}, /* 0.1f */
    {0x3eaaaaabu, 0x3eab}, /* 1/3 */
    {0x40490fdbu, 0x4049}, /* pi: 3.140625 */
    {0x7f7f7fffu, 0x7f7f}, /* rounds down to the largest bf16, 0x1.fep127 */
    {0x7f7f8000u, 0x7f80}, /* the midpoint to 2^128: tie to even is inf */
    {0x7f7fffffu, 0x7f80}, /* FLT_MAX: inf */
    {0xff7fffffu, 0xff80}, /* -FLT_MAX: -inf */
    {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80}, /* inf stays */
    {0x00000001u, 0x0000}, /* the smallest float subnormal: 0 */
    {0x00008000u, 0x0000}, /* tie between 0 and the smallest bf16 subnormal: 0 */
    {0x00008001u, 0x0001}, /* just above it */
    {0x00018000u, 0x0002}, /* tie between 1 and 2 ulps: 2 */
    {0x007fffffu, 0x0080}, /* the largest float subnormal: up to the smallest normal */
    {0x80008001u, 0x8001},
    {0x7fc00000u, 0x7fc0}, {0xffc00000u, 0xffc0}, /* quiet NaNs */
    {0x7f800001u, 0x7fc0}, /* NaN with a payload below bf16's bits: still NaN, quiet */
    {0xff800001u, 0xffc0},
    {0x7fa00000u, 0x7fe0}, /* signalling NaN: quieted, payload kept */
    {0xffb12345u, 0xfff1},
};

/* ------------------------------------------------------------------ host */

START_TEST(test_known_answers)
{
    for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0]; i++) {
        uint16_t got = mpcl_bf16_from_float(tu_u2f(KNOWN[i].in));
        ck_assert_msg(got == KNOWN[i].out, "mpcl_bf16_from_float(0x%08x) = 0x%04x, expected 0x%04x",
                      KNOWN[i].in, got, KNOWN[i].out);
    }
    ck_assert(mpcl_bf16_to_float(0x3f80) == 1.0f);
    ck_assert(mpcl_bf16_to_float(0xc049) == -3.140625f);
    ck_assert(mpcl_bf16_to_float(0x7f7f) == 0x1.fep127f);
    ck_assert(mpcl_bf16_to_float(0x0001) == 0x1p-133f);
    ck_assert(mpcl_bf16_to_float(0x0080) == 0x1p-126f);
    ck_assert(isinf(mpcl_bf16_to_float(0xff80)) && mpcl_bf16_to_float(0xff80) < 0);
    ck_assert(isnan(mpcl_bf16_to_float(0x7fc1)));
    ck_assert(signbit(mpcl_bf16_to_float(0x8000)) && mpcl_bf16_to_float(0x8000) == 0.0f);
}
END_TEST

/* Every bf16: to_float is exact (the definition's value, NaN bits kept);
 * back to bf16 gives the same code (NaN: the quiet bit added). */
START_TEST(test_all_values)
{
    size_t bad = 0, first = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = mpcl_bf16_to_float(h);
        double want = ref_bf16_value(h);
        int ok = tu_f2u(f) == (uint32_t)h << 16 &&
                 (bf16_is_nan(h) ? isnan(f) : (double)f == want);
        uint16_t back = mpcl_bf16_from_float(f);
        ok = ok && back == (bf16_is_nan(h) ? (uint16_t)(h | 0x40u) : h);
        if (!ok && bad++ == 0)
            first = i;
    }
    ck_assert_msg(bad == 0, "%zu of 65536 bf16 values wrong; first 0x%04zx: to_float %a, back 0x%04x",
                  bad, first, (double)mpcl_bf16_to_float((uint16_t)first),
                  mpcl_bf16_from_float(mpcl_bf16_to_float((uint16_t)first)));
}
END_TEST

#define N_RANDOM (4u << 20)

START_TEST(test_random_vs_reference)
{
    uint64_t seed = 0xbf16bf16;
    size_t bad = 0, nan = 0;
    uint32_t first = 0;
    for (size_t i = 0; i < N_RANDOM; i++) {
        float x = random_float(&seed);
        uint16_t got = mpcl_bf16_from_float(x);
        int ok;
        if (isnan(x)) {
            nan++;
            ok = got == (uint16_t)((tu_f2u(x) >> 16) | 0x40u); /* sign, top payload, quiet */
        } else {
            ok = got == ref_bf16_from_float(x);
        }
        if (!ok && bad++ == 0)
            first = tu_f2u(x);
    }
    ck_assert_msg(bad == 0, "%zu of %u random floats: first 0x%08x gave 0x%04x, reference 0x%04x",
                  bad, N_RANDOM, first, mpcl_bf16_from_float(tu_u2f(first)),
                  isnan(tu_u2f(first)) ? 0xffff : ref_bf16_from_float(tu_u2f(first)));
    ck_assert(nan > 0);
}
END_TEST

START_TEST(test_arrays)
{
    float f[3] = {1.0f, -0.5f, 0x1p-130f}, back[3]; /* the last a bf16 subnormal */
    uint16_t h[3];
    mpcl_bf16_from_float_array(h, f, 3);
    ck_assert_uint_eq(h[0], 0x3f80);
    ck_assert_uint_eq(h[1], 0xbf00);
    ck_assert_uint_eq(h[2], 0x0008);
    mpcl_bf16_to_float_array(back, h, 3);
    ck_assert(back[0] == 1.0f && back[1] == -0.5f && back[2] == 0x1p-130f);
    mpcl_bf16_from_float_array(NULL, f, 3); /* NULL-safe */
    mpcl_bf16_to_float_array(back, NULL, 3);
}
END_TEST

/* ------------------------------------------------- against the device */

#define N_DEVICE (3u << 20)

static mpcl_context *bf16_context(void)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_BF16;
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_msg(s == MPCL_OK, "mpcl_context_create(bf16): %s: %s", mpcl_status_name(s),
                  mpcl_last_error(ctx));
    ck_assert_int_eq(mpcl_storage_dtype(ctx), MPCL_BF16);
    return ctx;
}

static mpcl_tensor *tensor1(mpcl_context *ctx, mpcl_dtype dt, size_t n)
{
    mpcl_tensor *t = NULL;
    mpcl_status s = mpcl_tensor_create(ctx, dt, 1, &n, MPCL_MEM_SCRATCH, &t);
    ck_assert_msg(s == MPCL_OK, "mpcl_tensor_create: %s", mpcl_last_error(ctx));
    return t;
}

/* bf16 -> float on the device for all 65,536 codes, bit for bit. */
START_TEST(test_device_to_float_all)
{
    mpcl_context *ctx = bf16_context();
    uint16_t *all = malloc(65536 * sizeof *all);
    float *got = malloc(65536 * sizeof *got);
    ck_assert(all && got);
    for (uint32_t i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    mpcl_tensor *h = tensor1(ctx, MPCL_BF16, 65536), *f = tensor1(ctx, MPCL_F32, 65536);
    ck_assert_msg(mpcl_tensor_write(h, all, 65536 * 2) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(mpcl_cast(ctx, f, h) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(mpcl_tensor_read(f, got, 65536 * 4) == MPCL_OK, "%s", mpcl_last_error(ctx));
    size_t bad = 0, first = 0;
    for (uint32_t i = 0; i < 65536; i++)
        if (tu_f2u(got[i]) != tu_f2u(mpcl_bf16_to_float((uint16_t)i)) && bad++ == 0)
            first = i;
    ck_assert_msg(bad == 0, "%zu of 65536: device bf16 -> float differs; first 0x%04zx gave 0x%08x",
                  bad, first, tu_f2u(got[first]));
    /* mpcl_tensor_download converts on the host: the same values */
    ck_assert_msg(mpcl_tensor_download(h, got, 65536) == MPCL_OK, "%s", mpcl_last_error(ctx));
    for (uint32_t i = 0; i < 65536; i++)
        ck_assert(tu_f2u(got[i]) == (uint32_t)i << 16);
    mpcl_tensor_destroy(h);
    mpcl_tensor_destroy(f);
    mpcl_context_destroy(ctx);
    free(all);
    free(got);
}
END_TEST

/* float -> bf16 on the device: the known answers, then random floats. A NaN
 * must come back NaN with its sign (as the probe requires); everything else
 * bit for bit. */
START_TEST(test_device_from_float)
{
    mpcl_context *ctx = bf16_context();
    size_t nk = sizeof KNOWN / sizeof KNOWN[0], n = nk + N_DEVICE;
    float *in = malloc(n * sizeof *in);
    uint16_t *out = malloc(n * sizeof *out);
    ck_assert(in && out);
    for (size_t i = 0; i < nk; i++)
        in[i] = tu_u2f(KNOWN[i].in);
    uint64_t seed = 0xdecbf16;
    for (size_t i = nk; i < n; i++)
        in[i] = random_float(&seed);
    mpcl_tensor *f = tensor1(ctx, MPCL_F32, n), *h = tensor1(ctx, MPCL_BF16, n);
    ck_assert_msg(mpcl_tensor_write(f, in, n * 4) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(mpcl_cast(ctx, h, f) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(mpcl_tensor_read(h, out, n * 2) == MPCL_OK, "%s", mpcl_last_error(ctx));
    size_t bad = 0, first = 0, nan = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t host = mpcl_bf16_from_float(in[i]);
        int ok = out[i] == host;
        if (!ok && isnan(in[i])) {
            nan++;
            ok = bf16_is_nan(out[i]) && (out[i] & 0x8000u) == (host & 0x8000u);
        }
        if (!ok && bad++ == 0)
            first = i;
    }
    ck_assert_msg(bad == 0,
                  "%zu of %zu floats: device float -> bf16 and mpcl_bf16_from_float disagree; "
                  "first 0x%08x: device 0x%04x, host 0x%04x",
                  bad, n, tu_f2u(in[first]), out[first], mpcl_bf16_from_float(in[first]));
    if (nan)
        printf("%zu NaN inputs came back as other NaN codes of the same sign\n", nan);
    /* mpcl_tensor_upload rounds on the host the same way */
    ck_assert_msg(mpcl_tensor_upload(h, in, n) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(mpcl_tensor_read(h, out, n * 2) == MPCL_OK, "%s", mpcl_last_error(ctx));
    for (size_t i = 0; i < nk; i++)
        ck_assert_uint_eq(out[i], KNOWN[i].out);
    mpcl_tensor_destroy(h);
    mpcl_tensor_destroy(f);
    mpcl_context_destroy(ctx);
    free(in);
    free(out);
}
END_TEST

/* The probe's verdicts: the integer path passes on every OpenCL 1.2 device,
 * the cl_intel_bfloat16 verdict is consistent, and auto never picks bf16. */
START_TEST(test_device_probe_verdict)
{
    mpcl_context *ctx = bf16_context();
    mpcl_caps caps;
    ck_assert_msg(mpcl_probe(ctx, NULL, &caps) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_msg(caps.bf16_storage.passed, "%s", caps.bf16_storage.reason);
    ck_assert_ptr_nonnull(strstr(caps.bf16_storage.reason, "65536"));
    ck_assert(caps.bf16_intel_used == (caps.ext_bf16_intel && caps.bf16_intel.passed));
    ck_assert(caps.bf16_intel.reason[0] != '\0');
    const char *why = NULL;
    ck_assert_int_eq(mpcl_precision_chosen(ctx, &why), MPCL_PRECISION_BF16);
    ck_assert_ptr_nonnull(strstr(why, "bf16"));
    printf("bf16 storage: %s\ncl_intel_bfloat16: %s, %s\n", caps.bf16_storage.reason,
           caps.ext_bf16_intel ? "declared" : "not declared", caps.bf16_intel.reason);
    mpcl_context_destroy(ctx);

    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_AUTO;
    ck_assert_msg(mpcl_context_create(&opt, &ctx) == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_int_ne(mpcl_precision_chosen(ctx, NULL), MPCL_PRECISION_BF16);
    mpcl_context_destroy(ctx);
}
END_TEST

int main(void)
{
    tu_clean_env();
    Suite *s = suite_create("bf16");
    TCase *host = tcase_create("host");
    tcase_add_test(host, test_known_answers);
    tcase_add_test(host, test_all_values);
    tcase_add_test(host, test_random_vs_reference);
    tcase_add_test(host, test_arrays);
    suite_add_tcase(s, host);

    tu_device_info dev;
    tu_probe_device(&dev);
    if (tu_no_device(&dev)) {
        fprintf(stderr, "test_bf16: no OpenCL device (%s: %s); skipping the device comparison\n",
                mpcl_status_name((mpcl_status)dev.status), dev.message);
    } else {
        TCase *device = tcase_create("device");
        tcase_add_test(device, test_device_to_float_all);
        tcase_add_test(device, test_device_from_float);
        tcase_add_test(device, test_device_probe_verdict);
        suite_add_tcase(s, device);
    }
    return tu_run_suite(s);
}
