/* test_half.c — host fp16 conversion (src/half.c) against independent
 * references: all 65,536 halves, known answers for every rounding rule, an
 * exhaustive-neighbour reference in exact double arithmetic for millions of
 * random floats, and the device's own vstore_half_rte.
 *
 * Loops count mismatches and assert once (a Check assertion per element
 * would cost a pipe write each), reporting the first mismatch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* ------------------------------------------------ independent references */

/* The value of a binary16 from its definition: (-1)^s * m * 2^-24 for
 * subnormals, (-1)^s * (1024 + m) * 2^(e - 25) for normals. */
static double ref_half_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0)
        v = ldexp((double)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp((double)(1024 + m), e - 25);
    return s ? -v : v;
}

static int half_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }

/* Round-to-nearest-even by search: find the two neighbouring halves of |x|
 * (binary search over the ordered finite codes) and compare |x| with their
 * midpoint, which double holds exactly; ties go to the even code. Above the
 * largest half, the next "half" is 2^16 with the code of infinity, as IEEE
 * 754 rounds with an unbounded exponent. Not for NaN. */
static uint16_t ref_half_from_double(double x)
{
    uint16_t sign = signbit(x) ? 0x8000u : 0;
    double a = fabs(x);
    if (isinf(a))
        return (uint16_t)(sign | 0x7c00u);
    unsigned lo = 0, hi = 0x7bff; /* invariant: value(lo) <= a once found */
    if (a >= ref_half_value(0x7bff)) {
        lo = 0x7bff;
    } else {
        while (lo < hi) { /* largest code with value <= a */
            unsigned mid = (lo + hi + 1) / 2;
            if (ref_half_value((uint16_t)mid) <= a)
                lo = mid;
            else
                hi = mid - 1;
        }
    }
    double lo_v = ref_half_value((uint16_t)lo);
    double hi_v = lo == 0x7bff ? 65536.0 : ref_half_value((uint16_t)(lo + 1));
    unsigned code;
    if (a == lo_v) {
        code = lo;
    } else {
        double midpoint = (lo_v + hi_v) / 2; /* exact: a few more bits than a half */
        if (a < midpoint)
            code = lo;
        else if (a > midpoint)
            code = lo + 1;
        else
            code = (lo & 1) ? lo + 1 : lo;
    }
    return (uint16_t)(sign | code); /* lo + 1 == 0x7c00 is infinity */
}

static uint16_t ref_half_from_float(float x) { return ref_half_from_double((double)x); }

/* A random float: any bit pattern, one near half's range, or a near-tie. */
static float random_float(uint64_t *s)
{
    uint64_t r = tu_rand(s);
    uint32_t bits = (uint32_t)r;
    switch ((r >> 32) % 4) {
    case 0: /* any bits at all */
        break;
    case 1:
    case 2: /* exponents 2^-30 .. 2^17 */
        bits = (bits & 0x807fffffu) | ((uint32_t)(127 - 30 + (int)((r >> 40) % 48)) << 23);
        break;
    default: { /* a half's midpoint, and a float ulp either side */
        uint16_t h = (uint16_t)(r >> 40) & 0x7bffu;
        double m = (ref_half_value(h) + ref_half_value((uint16_t)(h + 1))) / 2;
        if (h == 0x7bff)
            m = 65520.0;
        float f = (float)m; /* exact: midpoints need at most 12 significant bits */
        int d = (int)((r >> 56) % 3) - 1;
        bits = tu_f2u(f) + (uint32_t)d;
        if ((r >> 60) & 1)
            bits |= 0x80000000u;
        break;
    }
    }
    return tu_u2f(bits);
}

/* ---------------------------------------------------------- half -> float */

START_TEST(test_round_trip_all_halves)
{
    size_t bad = 0;
    unsigned first = 0, got_first = 0;
    for (unsigned i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        uint16_t back = mpcl_half_from_float(mpcl_half_to_float(h));
        int ok;
        if (half_is_nan(h)) /* stays NaN, keeps its sign and payload, comes back quiet */
            ok = back == (uint16_t)(h | 0x0200u);
        else
            ok = back == h;
        if (!ok && bad++ == 0) {
            first = i;
            got_first = back;
        }
    }
    ck_assert_msg(bad == 0, "%zu of 65536 halves do not round-trip; first 0x%04x -> 0x%04x", bad,
                  first, got_first);
}
END_TEST

START_TEST(test_to_float_exact_all_halves)
{
    size_t bad = 0;
    unsigned first = 0;
    for (unsigned i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = mpcl_half_to_float(h);
        double want = ref_half_value(h);
        int ok;
        if (half_is_nan(h)) /* NaN, same sign, payload in the top mantissa bits */
            ok = isnan(f) && ((tu_f2u(f) >> 31) == (h >> 15u)) &&
                 ((tu_f2u(f) >> 13) & 0x3ffu) == (h & 0x3ffu);
        else
            ok = (double)f == want && !signbit(f) == !signbit(want);
        if (!ok && bad++ == 0)
            first = i;
    }
    ck_assert_msg(bad == 0, "%zu of 65536 halves convert wrongly; first 0x%04x gave %a, want %a",
                  bad, first, (double)mpcl_half_to_float((uint16_t)first),
                  ref_half_value((uint16_t)first));
}
END_TEST

START_TEST(test_to_float_known_answers)
{
    ck_assert(mpcl_half_to_float(0x3c00) == 1.0f);
    ck_assert(mpcl_half_to_float(0xc000) == -2.0f);
    ck_assert(mpcl_half_to_float(0x7bff) == 65504.0f);
    ck_assert(mpcl_half_to_float(0x0001) == 0x1p-24f);
    ck_assert(mpcl_half_to_float(0x03ff) == 1023 * 0x1p-24f);
    ck_assert(mpcl_half_to_float(0x0400) == 0x1p-14f);
    ck_assert(mpcl_half_to_float(0x3555) == 0x1.554p-2f);
    ck_assert_uint_eq(tu_f2u(mpcl_half_to_float(0x8000)), 0x80000000u);
    ck_assert_uint_eq(tu_f2u(mpcl_half_to_float(0x0000)), 0x00000000u);
    ck_assert(isinf(mpcl_half_to_float(0x7c00)) && mpcl_half_to_float(0x7c00) > 0);
    ck_assert(isinf(mpcl_half_to_float(0xfc00)) && mpcl_half_to_float(0xfc00) < 0);
    ck_assert(isnan(mpcl_half_to_float(0x7e00)));
    ck_assert(isnan(mpcl_half_to_float(0x7c01)));
    ck_assert(isnan(mpcl_half_to_float(0xfe00)) && signbit(mpcl_half_to_float(0xfe00)));
}
END_TEST

/* ---------------------------------------------------------- float -> half */

typedef struct {
    float in;
    uint16_t want;
    const char *what;
} known;

static const known KNOWN[] = {
    {0.0f, 0x0000, "+0"},
    {-0.0f, 0x8000, "-0 keeps its sign"},
    {1.0f, 0x3c00, "1"},
    {-2.0f, 0xc000, "-2"},
    {0.5f, 0x3800, "0.5"},
    {0.1f, 0x2e66, "0.1"},
    {1.0f / 3.0f, 0x3555, "1/3"},
    {1.0f + 0x1p-11f, 0x3c00, "tie 1+2^-11 rounds to even (down)"},
    {1.0f + 3 * 0x1p-11f, 0x3c02, "tie 1+3*2^-11 rounds to even (up)"},
    {1.0f + 0x1p-11f + 0x1p-23f, 0x3c01, "just above a tie rounds up"},
    {1.0f + 0x1p-11f - 0x1p-23f, 0x3c00, "just below a tie rounds down"},
    {2049.0f, 0x6800, "tie 2049 -> 2048 (even)"},
    {2051.0f, 0x6802, "tie 2051 -> 2052 (even)"},
    {65504.0f, 0x7bff, "largest half"},
    {65519.99f, 0x7bff, "just below the overflow threshold"},
    {65520.0f, 0x7c00, "the overflow threshold is a tie that rounds to inf"},
    {65536.0f, 0x7c00, "2^16 overflows"},
    {-65520.0f, 0xfc00, "negative overflow"},
    {1e10f, 0x7c00, "1e10 overflows"},
    {3.4028235e38f, 0x7c00, "largest float overflows"},
    {0x1p-14f, 0x0400, "smallest normal"},
    {0x1p-14f - 0x1p-25f, 0x0400, "tie between largest subnormal and smallest normal -> normal"},
    {0x1p-14f - 0x1p-24f, 0x03ff, "largest subnormal"},
    {0x1p-24f, 0x0001, "smallest subnormal"},
    {0x1p-25f, 0x0000, "tie between 0 and 2^-24 rounds to 0 (even)"},
    {0x1p-25f + 0x1p-48f, 0x0001, "just above 2^-25 rounds up"},
    {3 * 0x1p-25f, 0x0002, "tie 3*2^-25 -> 2 subnormal ulps (even)"},
    {5 * 0x1p-25f, 0x0002, "tie 5*2^-25 -> 2 subnormal ulps (even)"},
    {0x1p-26f, 0x0000, "below half of the smallest subnormal"},
    {-0x1p-25f, 0x8000, "negative tie to -0"},
    {-0x1p-24f, 0x8001, "negative smallest subnormal"},
    {0x1p-126f, 0x0000, "smallest normal float -> 0"},
    {0x1p-149f, 0x0000, "smallest float subnormal -> 0"},
    {-0x1p-149f, 0x8000, "negative float subnormal -> -0"},
};

START_TEST(test_from_float_known_answers)
{
    for (size_t i = 0; i < sizeof KNOWN / sizeof KNOWN[0]; i++) {
        uint16_t got = mpcl_half_from_float(KNOWN[i].in);
        ck_assert_msg(got == KNOWN[i].want, "%s: %a -> 0x%04x, expected 0x%04x", KNOWN[i].what,
                      (double)KNOWN[i].in, got, KNOWN[i].want);
        /* the reference agrees with the table too: it is checked, not trusted */
        ck_assert_msg(ref_half_from_float(KNOWN[i].in) == KNOWN[i].want,
                      "reference disagrees on %s", KNOWN[i].what);
    }
    ck_assert_uint_eq(mpcl_half_from_float(tu_u2f(0x007fffffu)), 0x0000); /* largest float subnormal */
    ck_assert_uint_eq(mpcl_half_from_float(tu_u2f(0x807fffffu)), 0x8000);
}
END_TEST

START_TEST(test_from_float_inf_nan)
{
    ck_assert_uint_eq(mpcl_half_from_float(INFINITY), 0x7c00);
    ck_assert_uint_eq(mpcl_half_from_float(-INFINITY), 0xfc00);
    /* NaN stays NaN: exponent all ones, mantissa non-zero, sign kept, for
     * quiet and signalling NaNs and payloads only in the low bits (which a
     * plain truncation would turn into infinity) */
    static const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,
                                    0x7fffffffu, 0xffffffffu, 0x7f802000u, 0x7fa00000u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = mpcl_half_from_float(tu_u2f(nans[i]));
        ck_assert_msg((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0,
                      "NaN 0x%08x -> 0x%04x is not a NaN", nans[i], h);
        ck_assert_msg((h >> 15) == (nans[i] >> 31), "NaN 0x%08x -> 0x%04x lost its sign", nans[i], h);
    }
}
END_TEST

/* Every float that is exactly a half converts to that half: 63,488 finite
 * halves, and every float strictly between two neighbouring halves rounds
 * to one of them (checked at the midpoint +- 1 float ulp). */
START_TEST(test_from_float_neighbours_exhaustive)
{
    size_t bad = 0;
    uint32_t first = 0;
    uint16_t first_got = 0, first_want = 0;
    for (unsigned h = 0; h < 0x7c00; h++) {
        double lo = ref_half_value((uint16_t)h);
        double hi = h == 0x7bff ? 65536.0 : ref_half_value((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2);
        uint16_t up = (uint16_t)(h + 1), even = (h & 1) ? up : (uint16_t)h;
        struct {
            float x;
            uint16_t want;
        } cases[] = {{(float)lo, (uint16_t)h},
                     {mid, even},
                     {nextafterf(mid, 0.0f), (uint16_t)h},
                     {nextafterf(mid, INFINITY), up}};
        for (int sgn = 0; sgn < 2; sgn++)
            for (size_t c = 0; c < 4; c++) {
                float x = sgn ? -cases[c].x : cases[c].x;
                uint16_t want = (uint16_t)(cases[c].want | (sgn ? 0x8000u : 0));
                uint16_t got = mpcl_half_from_float(x);
                if (got != want && bad++ == 0) {
                    first = tu_f2u(x);
                    first_got = got;
                    first_want = want;
                }
            }
    }
    ck_assert_msg(bad == 0, "%zu wrong; first float 0x%08x -> 0x%04x, expected 0x%04x", bad, first,
                  first_got, first_want);
}
END_TEST

#define N_RANDOM (1u << 21)

START_TEST(test_from_float_random_vs_reference)
{
    uint64_t seed = 0x4a1f2024;
    size_t bad = 0, nans = 0;
    uint32_t first = 0;
    uint16_t first_got = 0, first_want = 0;
    for (unsigned i = 0; i < N_RANDOM; i++) {
        float x = random_float(&seed);
        uint16_t got = mpcl_half_from_float(x);
        int ok;
        uint16_t want = 0;
        if (isnan(x)) {
            nans++;
            ok = half_is_nan(got) && (got >> 15) == (tu_f2u(x) >> 31);
        } else {
            want = ref_half_from_float(x);
            ok = got == want;
        }
        if (!ok && bad++ == 0) {
            first = tu_f2u(x);
            first_got = got;
            first_want = want;
        }
    }
    ck_assert_msg(bad == 0, "%zu of %u random floats differ from the reference; first 0x%08x -> "
                  "0x%04x, expected 0x%04x", bad, N_RANDOM, first, first_got, first_want);
    ck_assert_msg(nans > 0, "the random patterns should include NaNs");
}
END_TEST

/* Doubles round once (no double rounding through float): values that float
 * cannot hold break the tie the float would see. */
START_TEST(test_from_double)
{
    ck_assert_uint_eq(mpcl_half_from_double(1.0 + 0x1p-11), 0x3c00);
    ck_assert_uint_eq(mpcl_half_from_double(1.0 + 0x1p-11 + 0x1p-40), 0x3c01);
    ck_assert_uint_eq(mpcl_half_from_double(1.0 + 0x1p-11 - 0x1p-40), 0x3c00);
    ck_assert_uint_eq(mpcl_half_from_double(0x1p-25 + 0x1p-70), 0x0001);
    ck_assert_uint_eq(mpcl_half_from_double(65520.0 - 0x1p-30), 0x7bff);
    ck_assert_uint_eq(mpcl_half_from_double(65520.0), 0x7c00);
    ck_assert_uint_eq(mpcl_half_from_double(1e300), 0x7c00);
    ck_assert_uint_eq(mpcl_half_from_double(-1e-300), 0x8000);
    ck_assert_uint_eq(mpcl_half_from_double(0x1p-1074), 0x0000); /* double subnormal */
    /* double NaNs stay NaN, also with a payload only in the low bits, and keep their sign */
    static const uint64_t nans[] = {0x7ff8000000000000ULL, 0x7ff0000000000001ULL,
                                    0xfff0000000000001ULL, 0x7ff00000000003ffULL,
                                    0xfff8000000000000ULL};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        double x;
        memcpy(&x, &nans[i], sizeof x);
        uint16_t h = mpcl_half_from_double(x);
        ck_assert_msg(half_is_nan(h), "double NaN 0x%016llx -> 0x%04x is not a NaN",
                      (unsigned long long)nans[i], h);
        ck_assert_uint_eq(h >> 15, (unsigned)(nans[i] >> 63));
    }
    ck_assert_uint_eq(mpcl_half_from_double(INFINITY), 0x7c00);
    ck_assert_uint_eq(mpcl_half_from_double(-INFINITY), 0xfc00);
    uint64_t seed = 77;
    size_t bad = 0;
    double first = 0;
    for (int i = 0; i < 200000; i++) {
        uint64_t r = tu_rand(&seed);
        /* doubles with exponents 2^-30 .. 2^17 and full 52-bit mantissas */
        uint64_t bits = (r & 0x800fffffffffffffULL) | ((uint64_t)(1023 - 30 + (int)((r >> 52) % 48)) << 52);
        double x;
        memcpy(&x, &bits, sizeof x);
        if (mpcl_half_from_double(x) != ref_half_from_double(x) && bad++ == 0)
            first = x;
    }
    ck_assert_msg(bad == 0, "%zu random doubles differ from the reference; first %a", bad, first);
}
END_TEST

/* mpcl_half_from_double_sticky(x, r): r, below x's precision, breaks ties
 * only: a remainder of x's sign rounds away from zero, of the opposite sign
 * towards zero, none to even. */
START_TEST(test_sticky_ties)
{
    const double t = 1.0 + 0x1p-11; /* tie between 0x3c00 (even) and 0x3c01 */
    ck_assert_uint_eq(mpcl_half_from_double_sticky(t, 0.0), 0x3c00);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(t, 0x1p-80), 0x3c01);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(t, -0x1p-80), 0x3c00);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(-t, -0x1p-80), 0xbc01);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(-t, 0x1p-80), 0xbc00);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(-t, 0.0), 0xbc00);

    const double u = 1.0 + 3 * 0x1p-11; /* tie between 0x3c01 and 0x3c02 (even) */
    ck_assert_uint_eq(mpcl_half_from_double_sticky(u, 0.0), 0x3c02);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(u, 0x1p-80), 0x3c02);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(u, -0x1p-80), 0x3c01);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(-u, 0x1p-80), 0xbc01);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(-u, -0x1p-80), 0xbc02);

    /* subnormal ties */
    ck_assert_uint_eq(mpcl_half_from_double_sticky(0x1p-25, 0x1p-90), 0x0001);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(0x1p-25, -0x1p-90), 0x0000);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(3 * 0x1p-25, -0x1p-90), 0x0001);
    /* the overflow tie: towards zero stays finite */
    ck_assert_uint_eq(mpcl_half_from_double_sticky(65520.0, -0x1p-40), 0x7bff);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(65520.0, 0x1p-40), 0x7c00);

    /* not a tie: the remainder changes nothing */
    ck_assert_uint_eq(mpcl_half_from_double_sticky(t + 0x1p-20, -0x1p-80), 0x3c01);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(t - 0x1p-20, 0x1p-80), 0x3c00);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(1.0, -0x1p-80), 0x3c00);
    ck_assert_uint_eq(mpcl_half_from_double_sticky(1.0, 0x1p-80), 0x3c00);
}
END_TEST

/* ------------------------------------------------------------ array forms */

START_TEST(test_arrays)
{
    enum { N = 65536 + 4096 };
    float *f = malloc(N * sizeof *f), *back = malloc(N * sizeof *back);
    uint16_t *h = malloc(N * sizeof *h), *all = malloc(65536 * sizeof *all);
    ck_assert(f && back && h && all);
    for (unsigned i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    mpcl_half_to_float_array(f, all, 65536);
    uint64_t seed = 5;
    for (unsigned i = 65536; i < N; i++)
        f[i] = random_float(&seed);
    mpcl_half_from_float_array(h, f, N);
    mpcl_half_to_float_array(back, h, N);
    size_t bad = 0;
    for (unsigned i = 0; i < N; i++) {
        if (i < 65536 && !(isnan(f[i]) ? half_is_nan(all[i]) : tu_f2u(f[i]) == tu_f2u(mpcl_half_to_float(all[i]))))
            bad++;
        if (!isnan(f[i]) && h[i] != ref_half_from_float(f[i]))
            bad++;
        if (isnan(f[i]) && !half_is_nan(h[i]))
            bad++;
        if (!half_is_nan(h[i]) && (double)back[i] != ref_half_value(h[i]))
            bad++;
    }
    ck_assert_msg(bad == 0, "%zu array elements differ", bad);

    /* n = 0 touches nothing; n = 1 touches only the first element */
    uint16_t hs[2] = {0x1234, 0x1234};
    float fs[2] = {7.0f, 7.0f};
    mpcl_half_from_float_array(hs, fs, 0);
    mpcl_half_to_float_array(fs, hs, 0);
    ck_assert_uint_eq(hs[0], 0x1234);
    ck_assert(fs[0] == 7.0f);
    mpcl_half_from_float_array(hs, fs, 1);
    ck_assert_uint_eq(hs[0], 0x4700);
    ck_assert_uint_eq(hs[1], 0x1234);
    free(f);
    free(back);
    free(h);
    free(all);
}
END_TEST

/* ------------------------------------------------- against the device */

#define N_DEVICE (1u << 20)

START_TEST(test_device_vstore_half_rte)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_msg(s == MPCL_OK, "mpcl_context_create: %s: %s", mpcl_status_name(s),
                  mpcl_last_error(ctx));

    /* every half as a float, the known answers, then random bit patterns */
    size_t nk = sizeof KNOWN / sizeof KNOWN[0];
    size_t n = 65536 + nk + N_DEVICE;
    float *in = malloc(n * sizeof *in);
    uint16_t *out = malloc(n * sizeof *out);
    ck_assert(in && out);
    for (unsigned i = 0; i < 65536; i++) {
        double v = ref_half_value((uint16_t)i);
        in[i] = isnan(v) ? tu_u2f(0x7fc00000u | ((i & 0x8000u) << 16) | ((i & 0x3ffu) << 13))
                         : (float)v;
    }
    for (size_t i = 0; i < nk; i++)
        in[65536 + i] = KNOWN[i].in;
    uint64_t seed = 0xdec0de;
    for (size_t i = 65536 + nk; i < n; i++)
        in[i] = random_float(&seed);

    cl_kernel k = NULL;
    s = mpcl_kernel_create(ctx, "probe", MPCL_VARIANT_FP32, "store_half_rte", &k);
    ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
    cl_int rc;
    cl_mem din = clCreateBuffer(ctx->cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * 4, in, &rc);
    ck_assert_msg(rc == CL_SUCCESS, "clCreateBuffer: %s", mpcl_cl_error_name(rc));
    cl_mem dout = clCreateBuffer(ctx->cl, CL_MEM_WRITE_ONLY, n * 2, NULL, &rc);
    ck_assert_msg(rc == CL_SUCCESS, "clCreateBuffer: %s", mpcl_cl_error_name(rc));
    cl_uint un = (cl_uint)n;
    rc = clSetKernelArg(k, 0, sizeof din, &din);
    rc |= clSetKernelArg(k, 1, sizeof dout, &dout);
    rc |= clSetKernelArg(k, 2, sizeof un, &un);
    ck_assert_msg(rc == CL_SUCCESS, "clSetKernelArg failed");
    size_t global = (n + 255) / 256 * 256;
    rc = clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &global, NULL, 0, NULL, NULL);
    ck_assert_msg(rc == CL_SUCCESS, "clEnqueueNDRangeKernel: %s", mpcl_cl_error_name(rc));
    rc = clEnqueueReadBuffer(ctx->queue, dout, CL_TRUE, 0, n * 2, out, 0, NULL, NULL);
    ck_assert_msg(rc == CL_SUCCESS, "clEnqueueReadBuffer: %s", mpcl_cl_error_name(rc));

    size_t bad = 0, nan_in = 0;
    size_t first = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t host = mpcl_half_from_float(in[i]);
        int ok;
        if (isnan(in[i])) { /* vstore_half's NaN payload and sign are the driver's choice */
            nan_in++;
            ok = half_is_nan(out[i]) && half_is_nan(host);
        } else {
            ok = out[i] == host;
        }
        if (!ok && bad++ == 0)
            first = i;
    }
    ck_assert_msg(bad == 0,
                  "%zu of %zu floats: the device's vstore_half_rte and mpcl_half_from_float "
                  "disagree; first float 0x%08x: device 0x%04x, host 0x%04x",
                  bad, n, tu_f2u(in[first]), out[first], mpcl_half_from_float(in[first]));
    ck_assert(nan_in > 0);
    clReleaseMemObject(din);
    clReleaseMemObject(dout);
    clReleaseKernel(k);
    mpcl_context_destroy(ctx);
    free(in);
    free(out);
}
END_TEST

/* The storage variant's own conversions (cl/precision.h, the very functions
 * every fp16-storage kernel uses) on the device, in both builds the host
 * may choose between (integer code, and the built-ins), at every vector
 * width (1, 2, 4, 8, 16), against the host (src/half.c) and the device's
 * vload_half / vstore_half_rte:
 *   half -> float: all 65,536 halves;
 *   float -> half: all 65,536 halves as floats, the known answers above,
 *     inf, NaNs, every midpoint between neighbouring finite halves and the
 *     floats one ulp either side (both signs), and N_STORAGE_RANDOM random
 *     floats.
 * Non-NaN results must be bit for bit the host's. A NaN must give a NaN of
 * the same sign; the integer code keeps payloads: half -> float exactly
 * the host's bits, float -> half quiet with the host's bits. The built-ins'
 * NaN payloads are the driver's choice (NaN-ness only, as above). */
#define N_STORAGE_RANDOM (3u << 20)
#define CONV_WIDTHS 6 /* cl/probe.cl HALFCONV_WIDTHS: widths 1, 2, 4, 8, 16, then the built-in */

static const char *const WIDTH_NAME[CONV_WIDTHS] = {"mpcl_h2f/f2h", "2-wide", "4-wide",
                                                    "8-wide", "16-wide", "built-in"};

static size_t storage_floats(float **out)
{
    size_t nk = sizeof KNOWN / sizeof KNOWN[0];
    size_t n = 65536 + nk + 16 + 0x7c00 * 8 + N_STORAGE_RANDOM;
    n = (n + 15) / 16 * 16;
    float *in = malloc(n * sizeof *in);
    ck_assert_ptr_nonnull(in);
    size_t m = 0;
    for (unsigned i = 0; i < 65536; i++)
        in[m++] = mpcl_half_to_float((uint16_t)i); /* NaNs with every payload, both signs */
    for (size_t i = 0; i < nk; i++)
        in[m++] = KNOWN[i].in;
    static const uint32_t specials[] = {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u,
                                        0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7f802000u,
                                        0x007fffffu, 0x807fffffu, 0x00000001u, 0x80000000u,
                                        0x477fefffu, 0x477ff000u, 0x38800000u, 0x387fffffu};
    for (size_t i = 0; i < 16; i++)
        in[m++] = tu_u2f(specials[i]);
    for (unsigned h = 0; h < 0x7c00; h++) { /* every rounding boundary */
        double lo = ref_half_value((uint16_t)h);
        double hi = h == 0x7bff ? 65536.0 : ref_half_value((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2);
        float c[4] = {mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY), (float)lo};
        for (int k = 0; k < 4; k++) {
            in[m++] = c[k];
            in[m++] = -c[k];
        }
    }
    uint64_t seed = 0x57a9e;
    while (m < n)
        in[m++] = random_float(&seed);
    *out = in;
    return n;
}

static cl_kernel conv_kernel(mpcl_context *ctx, const char *defines, const char *name)
{
    cl_program prog = NULL;
    mpcl_status s = mpcl_program_build_defines(ctx, "probe", MPCL_VARIANT_FP16_STORAGE, defines, 1,
                                               &prog);
    ck_assert_msg(s == MPCL_OK, "probe (fp16-storage, \"%s\"): %s", defines, mpcl_last_error(ctx));
    cl_int rc;
    cl_kernel k = clCreateKernel(prog, name, &rc);
    ck_assert_msg(rc == CL_SUCCESS, "%s: %s", name, mpcl_cl_error_name(rc));
    clReleaseProgram(prog);
    return k;
}

/* Runs kernel k (in, out, n) over n elements: in has in_size bytes per
 * element, out CONV_WIDTHS x n elements of out_size bytes. */
static void run_conv(mpcl_context *ctx, cl_kernel k, const void *in, size_t in_size, void *out,
                     size_t out_size, size_t n)
{
    cl_int rc;
    cl_mem din = clCreateBuffer(ctx->cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, n * in_size,
                                (void *)in, &rc);
    ck_assert_msg(rc == CL_SUCCESS, "clCreateBuffer: %s", mpcl_cl_error_name(rc));
    cl_mem dout = clCreateBuffer(ctx->cl, CL_MEM_WRITE_ONLY, CONV_WIDTHS * n * out_size, NULL, &rc);
    ck_assert_msg(rc == CL_SUCCESS, "clCreateBuffer: %s", mpcl_cl_error_name(rc));
    cl_uint un = (cl_uint)n;
    rc = clSetKernelArg(k, 0, sizeof din, &din);
    rc |= clSetKernelArg(k, 1, sizeof dout, &dout);
    rc |= clSetKernelArg(k, 2, sizeof un, &un);
    ck_assert_msg(rc == CL_SUCCESS, "clSetKernelArg failed");
    size_t global = n / 16;
    rc = clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &global, NULL, 0, NULL, NULL);
    ck_assert_msg(rc == CL_SUCCESS, "clEnqueueNDRangeKernel: %s", mpcl_cl_error_name(rc));
    rc = clEnqueueReadBuffer(ctx->queue, dout, CL_TRUE, 0, CONV_WIDTHS * n * out_size, out, 0, NULL,
                             NULL);
    ck_assert_msg(rc == CL_SUCCESS, "clEnqueueReadBuffer: %s", mpcl_cl_error_name(rc));
    clReleaseMemObject(din);
    clReleaseMemObject(dout);
}

static const char *const CONV_BUILDS[] = {"", "-DMPCL_HALF_BUILTIN"};

START_TEST(test_device_storage_conversions)
{
    const char *defines = CONV_BUILDS[_i];
    const int soft = defines[0] == '\0'; /* the integer code at every width */
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32; /* the program is built by hand in fp16-storage */
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_msg(s == MPCL_OK, "mpcl_context_create: %s: %s", mpcl_status_name(s),
                  mpcl_last_error(ctx));

    /* half -> float, all 65,536 halves */
    uint16_t *all = malloc(65536 * sizeof *all);
    float *f = malloc(CONV_WIDTHS * 65536 * sizeof *f);
    ck_assert(all && f);
    for (unsigned i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    cl_kernel k = conv_kernel(ctx, defines, "halfconv_to_float");
    run_conv(ctx, k, all, 2, f, 4, 65536);
    clReleaseKernel(k);
    size_t bad[CONV_WIDTHS] = {0}, first[CONV_WIDTHS] = {0}, builtin_differs = 0;
    for (unsigned w = 0; w < CONV_WIDTHS; w++)
        for (unsigned i = 0; i < 65536; i++) {
            float got = f[w * 65536 + i], host = mpcl_half_to_float((uint16_t)i);
            int ok;
            if (isnan(host))
                ok = isnan(got) && signbit(got) == signbit(host) &&
                     (!soft || w == CONV_WIDTHS - 1 || tu_f2u(got) == tu_f2u(host));
            else
                ok = tu_f2u(got) == tu_f2u(host);
            if (!ok && bad[w]++ == 0)
                first[w] = i;
            /* the conversion against the device's own vload_half */
            float dev = f[(CONV_WIDTHS - 1) * 65536 + i];
            if (w < CONV_WIDTHS - 1 && !(tu_f2u(got) == tu_f2u(dev) || (isnan(got) && isnan(dev))))
                builtin_differs++;
        }
    for (unsigned w = 0; w < CONV_WIDTHS; w++)
        ck_assert_msg(bad[w] == 0,
                      "half -> float (%s build, %s): %zu of 65536 halves differ from the host; "
                      "first 0x%04zx gave 0x%08x, host 0x%08x",
                      soft ? "integer" : "built-in", WIDTH_NAME[w], bad[w], first[w],
                      tu_f2u(f[w * 65536 + first[w]]), tu_f2u(mpcl_half_to_float((uint16_t)first[w])));
    ck_assert_msg(builtin_differs == 0, "half -> float: %zu results differ from vload_half",
                  builtin_differs);
    free(all);
    free(f);

    /* float -> half */
    float *in = NULL;
    size_t n = storage_floats(&in);
    uint16_t *h = malloc(CONV_WIDTHS * n * sizeof *h);
    ck_assert_ptr_nonnull(h);
    k = conv_kernel(ctx, defines, "halfconv_from_float");
    run_conv(ctx, k, in, 4, h, 2, n);
    clReleaseKernel(k);
    size_t nans = 0;
    memset(bad, 0, sizeof bad);
    builtin_differs = 0;
    for (unsigned w = 0; w < CONV_WIDTHS; w++)
        for (size_t i = 0; i < n; i++) {
            uint16_t got = h[w * n + i], host = mpcl_half_from_float(in[i]);
            uint16_t dev = h[(CONV_WIDTHS - 1) * n + i];
            int ok;
            if (isnan(in[i])) {
                nans += w == 0;
                ok = half_is_nan(got) && (got >> 15) == (host >> 15) &&
                     (!soft || w == CONV_WIDTHS - 1 || got == host); /* host: quiet, payload kept */
                if (w < CONV_WIDTHS - 1 && !half_is_nan(dev))
                    builtin_differs++;
            } else {
                ok = got == host;
                if (w < CONV_WIDTHS - 1 && got != dev)
                    builtin_differs++;
            }
            if (!ok && bad[w]++ == 0)
                first[w] = i;
        }
    for (unsigned w = 0; w < CONV_WIDTHS; w++)
        ck_assert_msg(bad[w] == 0,
                      "float -> half (%s build, %s): %zu of %zu floats differ from the host; "
                      "first 0x%08x gave 0x%04x, host 0x%04x",
                      soft ? "integer" : "built-in", WIDTH_NAME[w], bad[w], n,
                      tu_f2u(in[first[w]]), h[w * n + first[w]], mpcl_half_from_float(in[first[w]]));
    ck_assert_msg(builtin_differs == 0, "float -> half: %zu results differ from vstore_half_rte",
                  builtin_differs);
    ck_assert(nans > 1000);
    fprintf(stderr, "storage conversions (%s build) on '%s': 65536 halves and %zu floats x 5 "
                    "widths, bit-exact against the host and the built-ins\n",
            soft ? "integer" : "built-in", ctx->caps.device, n);
    free(in);
    free(h);
    mpcl_context_destroy(ctx);
}
END_TEST

int main(void)
{
    tu_clean_env();
    Suite *s = suite_create("half");
    TCase *host = tcase_create("host");
    tcase_add_test(host, test_round_trip_all_halves);
    tcase_add_test(host, test_to_float_exact_all_halves);
    tcase_add_test(host, test_to_float_known_answers);
    tcase_add_test(host, test_from_float_known_answers);
    tcase_add_test(host, test_from_float_inf_nan);
    tcase_add_test(host, test_from_float_neighbours_exhaustive);
    tcase_add_test(host, test_from_float_random_vs_reference);
    tcase_add_test(host, test_from_double);
    tcase_add_test(host, test_sticky_ties);
    tcase_add_test(host, test_arrays);
    suite_add_tcase(s, host);

    tu_device_info dev;
    tu_probe_device(&dev);
    if (tu_no_device(&dev)) {
        /* the host half of the suite still runs; say why the device half does not */
        fprintf(stderr, "test_half: no OpenCL device (%s: %s); skipping the device comparison\n",
                mpcl_status_name((mpcl_status)dev.status), dev.message);
    } else { /* a device that exists but fails makes the device test fail, with the reason */
        TCase *device = tcase_create("device");
        tcase_add_test(device, test_device_vstore_half_rte);
        tcase_add_loop_test(device, test_device_storage_conversions, 0,
                            (int)(sizeof CONV_BUILDS / sizeof CONV_BUILDS[0]));
        suite_add_tcase(s, device);
    }
    return tu_run_suite(s);
}
