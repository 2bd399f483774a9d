/* half.c — host IEEE binary16 <-> binary32 conversion.
 *
 * One rounding routine serves both float and double inputs: a float widens
 * to double exactly, so rounding the double once to half is the correctly
 * rounded float -> half conversion (no double rounding). */
#include <string.h>

#include "internal.h"

static uint64_t bits_of_double(double x)
{
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

/* Rounds |x| (as sign, exponent, 53-bit significand) to half, to nearest even.
 * `sticky` is the sign of a remainder below the double's precision (exact =
 * x + tiny): it breaks exact ties, for emulating fused operations. */
static uint16_t round_to_half(double x, int sticky)
{
    uint64_t b = bits_of_double(x);
    uint16_t sign = (uint16_t)((b >> 48) & 0x8000u);
    int bexp = (int)((b >> 52) & 0x7ff);
    uint64_t frac = b & 0xfffffffffffffULL;

    if (bexp == 0x7ff) {
        if (frac == 0)
            return (uint16_t)(sign | 0x7c00u);
        /* NaN: quiet, keep the top payload bits. */
        return (uint16_t)(sign | 0x7e00u | (uint16_t)(frac >> 42));
    }
    if (bexp == 0) /* zero or double subnormal: far below half's range */
        return sign;

    int e = bexp - 1023;
    uint64_t mant = frac | (1ULL << 52);
    if (e > 15)
        return (uint16_t)(sign | 0x7c00u);
    if (e < -25)
        return sign;

    int shift = 42 + (e < -14 ? (-14 - e) : 0); /* bits dropped below half's ulp */
    uint64_t r = mant >> shift;
    uint64_t rem = mant & ((1ULL << shift) - 1);
    uint64_t halfway = 1ULL << (shift - 1);
    /* a remainder of the same sign as x makes the magnitude larger */
    int mag_sticky = (sticky == 0) ? 0 : ((sticky > 0) == ((b >> 63) == 0) ? 1 : -1);
    if (rem > halfway || (rem == halfway && (mag_sticky > 0 || (mag_sticky == 0 && (r & 1)))))
        r++;

    uint32_t h;
    if (e < -14)
        h = (uint32_t)r; /* subnormal; r == 1024 is the smallest normal */
    else
        h = ((uint32_t)(e + 15) << 10) + (uint32_t)r - 1024u; /* carry bumps the exponent */
    if (h >= 0x7c00u)
        h = 0x7c00u;
    return (uint16_t)(sign | h);
}

uint16_t mpcl_half_from_double(double x) { return round_to_half(x, 0); }

uint16_t mpcl_half_from_double_sticky(double x, double remainder)
{
    return round_to_half(x, remainder > 0 ? 1 : (remainder < 0 ? -1 : 0));
}

uint16_t mpcl_half_from_float(float x) { return round_to_half((double)x, 0); }

float mpcl_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    uint32_t f;
    if (e == 0x1f) {
        f = sign | 0x7f800000u | (m << 13);
    } else if (e == 0) {
        if (m == 0) {
            f = sign;
        } else { /* subnormal: normalise */
            int k = 0;
            while (!(m & 0x400u)) {
                m <<= 1;
                k++;
            }
            m &= 0x3ffu;
            f = sign | ((uint32_t)(127 - 15 + 1 - k) << 23) | (m << 13);
        }
    } else {
        f = sign | ((e + 127 - 15) << 23) | (m << 13);
    }
    float out;
    memcpy(&out, &f, sizeof out);
    return out;
}

void mpcl_half_from_float_array(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = mpcl_half_from_float(src[i]);
}

void mpcl_half_to_float_array(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = mpcl_half_to_float(src[i]);
}
