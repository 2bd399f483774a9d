/* test_emulate.c — the host emulation that check (b) of the probe compares
 * device half arithmetic with (mpcl_half_emulate), against an independent
 * exact reference: every half is an integer multiple of 2^-24, so sums,
 * products and fused multiply-adds are exact 128-bit integers, quotients
 * exact rationals, and the correctly rounded half is found by comparing
 * integers with every candidate. No floating-point rounding is involved. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

typedef __int128 i128;

/* |h| in units of 2^-24 (h finite). */
static i128 units(uint16_t h)
{
    unsigned e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0)
        return m;
    return (i128)(m | 0x400) << (e - 1);
}

static int neg(uint16_t h) { return (h & 0x8000) != 0; }

/* The half nearest to num / den * 2^-24 (num >= 0, den > 0), ties to even,
 * overflow to inf. Candidates 0x0000..0x7bff are increasing in value. */
static uint16_t round_exact(i128 num, i128 den)
{
    const i128 overflow = (i128)65520 << 24; /* 65504 + half an ulp: rounds to inf */
    if (num >= overflow * den)
        return 0x7c00;
    unsigned lo = 0, hi = 0x7bff; /* largest p with units(p) * den <= num */
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (units((uint16_t)mid) * den <= num)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (units((uint16_t)lo) * den == num)
        return (uint16_t)lo;
    unsigned up = lo + 1; /* past 0x7bff: 65536, as if the exponent went on */
    i128 vu = up == 0x7c00 ? (i128)65536 << 24 : units((uint16_t)up);
    i128 twice = 2 * num, mid2 = (units((uint16_t)lo) + vu) * den;
    if (twice < mid2)
        return (uint16_t)lo;
    if (twice > mid2)
        return (uint16_t)up;
    return (uint16_t)((lo & 1) ? up : lo);
}

/* Signed exact value in units of 2^-48 (products need 48 fractional bits). */
static i128 signed_units48(uint16_t h)
{
    i128 u = units(h) << 24;
    return neg(h) ? -u : u;
}

static uint16_t from_signed48(i128 s)
{
    if (s == 0)
        return 0x0000; /* exact zero from non-zero operands: +0 in round-to-nearest */
    uint16_t r = round_exact(s < 0 ? -s : s, (i128)1 << 24);
    return (uint16_t)(s < 0 ? (r | 0x8000) : r);
}

static uint16_t ref_op(int op, uint16_t a, uint16_t b, uint16_t c)
{
    i128 ua = units(a), ub = units(b);
    switch (op) {
    case 0: return from_signed48(signed_units48(a) + signed_units48(b));
    case 1: return from_signed48(signed_units48(a) - signed_units48(b));
    case 2: {
        uint16_t r = ua * ub == 0 ? 0 : round_exact(ua * ub, (i128)1 << 24);
        return (uint16_t)(neg(a) != neg(b) ? (r | 0x8000) : r);
    }
    case 3: {
        uint16_t r = round_exact(ua << 24, ub);
        return (uint16_t)(neg(a) != neg(b) ? (r | 0x8000) : r);
    }
    default: {
        i128 p = ua * ub; /* units of 2^-48 */
        if (neg(a) != neg(b))
            p = -p;
        return from_signed48(p + signed_units48(c));
    }
    }
}

static uint64_t rng = 0x1234abcdULL;
static uint32_t next(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng >> 33);
}

/* A finite, non-zero half; biased towards exponents where results stay in
 * range, with a share of subnormals. */
static uint16_t rand_half(void)
{
    for (;;) {
        uint32_t r = next();
        uint16_t h = (r & 7) == 0 ? (uint16_t)(next() & 0x83ff)                       /* subnormal */
                                  : (uint16_t)((r & 0x8000) | ((1 + next() % 30) << 10) | (next() & 0x3ff));
        if ((h & 0x7fff) != 0 && (h & 0x7c00) != 0x7c00)
            return h;
    }
}

static const char *OPS[] = {"a+b", "a-b", "a*b", "a/b", "fma"};

START_TEST(emulation_matches_exact_reference)
{
    int op = _i;
    const int n = 400000;
    for (int i = 0; i < n; i++) {
        uint16_t a = rand_half(), b = rand_half(), c = rand_half();
        if (op == 4 && i % 2 == 0) /* cancellation: c near -a*b, where fma differs from a*b + c */
            c = (uint16_t)(mpcl_half_from_double(-(double)mpcl_half_to_float(a) *
                                                 (double)mpcl_half_to_float(b)) ^ (next() & 3));
        if ((c & 0x7c00) == 0x7c00)
            c = 0x3c00;
        uint16_t want = ref_op(op, a, b, c), got = mpcl_half_emulate(op, a, b, c);
        ck_assert_msg(got == want, "%s with a=0x%04x b=0x%04x c=0x%04x: emulation 0x%04x, exact 0x%04x",
                      OPS[op], a, b, c, got, want);
    }
}
END_TEST

/* Known answers from the issue and from IEEE 754. */
START_TEST(known_answers)
{
    ck_assert_uint_eq(mpcl_half_emulate(0, 0x6800, 0x3c00, 0), 0x6800); /* 2048 + 1 = 2048 */
    ck_assert_uint_eq(mpcl_half_emulate(0, 0x6800, 0x4000, 0), 0x6801); /* 2048 + 2 = 2050 */
    ck_assert_uint_eq(mpcl_half_emulate(2, 0x7bff, 0x4000, 0), 0x7c00); /* 65504 * 2 = inf */
    ck_assert_uint_eq(mpcl_half_emulate(0, 0x0001, 0x0001, 0), 0x0002); /* subnormals add exactly */
    ck_assert_uint_eq(mpcl_half_emulate(2, 0x0001, 0x3800, 0), 0x0000); /* 2^-24 * 0.5: tie to 0 */
    ck_assert_uint_eq(mpcl_half_emulate(2, 0x0003, 0x3800, 0), 0x0002); /* 1.5 ulp: tie to even */
    ck_assert_uint_eq(mpcl_half_emulate(3, 0x3c00, 0x4200, 0), 0x3555); /* 1/3 */
    ck_assert_uint_eq(mpcl_half_emulate(3, 0x3c00, 0x0000, 0), 0x7c00); /* 1/0 = inf */
    uint16_t nan = mpcl_half_emulate(3, 0x0000, 0x0000, 0);             /* 0/0 = NaN */
    ck_assert((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff));
    /* (1 + 2^-10)(1 + 2^-9) - 1 = 2^-9 + 2^-10 + 2^-19: fma keeps the 2^-19,
     * a rounded product then a sum loses it */
    ck_assert_uint_eq(mpcl_half_emulate(4, 0x3c01, 0x3c02, 0xbc00), 0x1a01);
    uint16_t p = mpcl_half_emulate(2, 0x3c01, 0x3c02, 0);
    ck_assert_uint_eq(p, 0x3c03);
    ck_assert_uint_eq(mpcl_half_emulate(0, p, 0xbc00, 0), 0x1a00);
    /* (1 + 2^-10)^2 - 1 = 2^-9 + 2^-20 is a tie: to even, 2^-9 */
    ck_assert_uint_eq(mpcl_half_emulate(4, 0x3c01, 0x3c01, 0xbc00), 0x1800);
    ck_assert_uint_eq(mpcl_half_emulate(0, 0x7bff, 0x4b00, 0), 0x7bff); /* 65504 + 14 stays */
    ck_assert_uint_eq(mpcl_half_emulate(0, 0x7bff, 0x4c00, 0), 0x7c00); /* 65504 + 16 = inf */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("emulate");
    TCase *tc = tcase_create("half-arithmetic emulation");
    tcase_add_test(tc, known_answers);
    tcase_add_loop_test(tc, emulation_matches_exact_reference, 0, 5);
    tcase_set_timeout(tc, 300);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
