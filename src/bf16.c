/* bf16.c — host bfloat16 <-> binary32 conversion.
 *
 * bfloat16 is the upper 16 bits of an IEEE binary32: the same sign and
 * 8-bit exponent, 7 stored mantissa bits. Widening is a shift; narrowing
 * rounds the low 16 bits away to nearest, ties to even, with integer
 * operations only (the same steps as the device's integer path in
 * cl/precision.h). */
#include <string.h>

#include "internal.h"

uint16_t mpcl_bf16_from_float(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet, keep sign and top payload */
        return (uint16_t)((u >> 16) | 0x0040u);
    /* Adding 0x7fff plus the lowest kept bit rounds to nearest even; a carry
     * out of the mantissa steps the exponent, up to inf (0x7f80). inf itself
     * has zero low bits and stays. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float mpcl_bf16_to_float(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

void mpcl_bf16_from_float_array(uint16_t *dst, const float *src, size_t n)
{
    if (!dst || !src)
        return;
    for (size_t i = 0; i < n; i++)
        dst[i] = mpcl_bf16_from_float(src[i]);
}

void mpcl_bf16_to_float_array(float *dst, const uint16_t *src, size_t n)
{
    if (!dst || !src)
        return;
    for (size_t i = 0; i < n; i++)
        dst[i] = mpcl_bf16_to_float(src[i]);
}
