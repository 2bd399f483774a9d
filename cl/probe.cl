/* cl/probe.cl — the capability probe's functional checks.
 * Dimension letters: N elements. */

/* (a) fp16 storage: float -> half with round-to-nearest-even, and back. */
kernel void store_half_rte(global const float *in, /* (N) */
                           global half *out,       /* (N) */
                           uint n)
{
    uint i = get_global_id(0);
    if (i < n)
        vstore_half_rte(in[i], i, out);
}

kernel void load_half(global const half *in, /* (N) */
                      global float *out,     /* (N) */
                      uint n)
{
    uint i = get_global_id(0);
    if (i < n)
        out[i] = vload_half(i, in);
}

#if defined(MPCL_FP16)
/* (b) fp16 arithmetic. No contraction: a*b+c must round twice, as emulated. */
#pragma OPENCL FP_CONTRACT OFF

#define ARITH_OPS 6
/* Per element i: out[6i+0..5] = a+b, a-b, a*b, a/b, fma(a,b,c), (half)f;
 * cmp[i] = bit 0 a<b, 1 a==b, 2 a>b, 3 a<=b, 4 a!=b; back[i] = (float)a. */
kernel void arith_half(global const half *a,  /* (N) */
                       global const half *b,  /* (N) */
                       global const half *c,  /* (N) */
                       global const float *f, /* (N) */
                       global half *out,      /* (N, 6) */
                       global uint *cmp,      /* (N) */
                       global float *back,    /* (N) */
                       uint n)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    half x = a[i], y = b[i], z = c[i];
    out[ARITH_OPS * i + 0] = x + y;
    out[ARITH_OPS * i + 1] = x - y;
    out[ARITH_OPS * i + 2] = x * y;
    out[ARITH_OPS * i + 3] = x / y;
    out[ARITH_OPS * i + 4] = fma(x, y, z);
    out[ARITH_OPS * i + 5] = (half)f[i];
    cmp[i] = (uint)(x < y) | ((uint)(x == y) << 1) | ((uint)(x > y) << 2) |
             ((uint)(x <= y) << 3) | ((uint)(x != y) << 4);
    back[i] = (float)x;
}

/* A half dot-product loop, as a naive fp16 kernel would write it: each
 * product and each partial sum rounded to half. Row r of x and y (R, L). */
kernel void dot_half(global const half *x, /* (R, L) */
                     global const half *y, /* (R, L) */
                     global half *out,     /* (R) */
                     uint rows, uint len)
{
    uint r = get_global_id(0);
    if (r >= rows)
        return;
    /* starts from the first product, not a half literal: some compilers
     * (oclgrind's among them) reject half constants */
    half acc = x[r * len] * y[r * len];
    for (uint k = 1; k < len; k++) {
        half p = x[r * len + k] * y[r * len + k];
        acc = acc + p;
    }
    out[r] = acc;
}
#endif

#if defined(MPCL_FP16_STORAGE)
/* (c) The storage variant's own conversions (cl/precision.h mpcl_h2f*,
 * mpcl_f2h*, whichever way this build defines them), at every vector width,
 * next to the built-ins, for tests/test_half.c. Work item j converts
 * elements 16j .. 16j+15 once per width: out[w * n + i] for widths 1, 2, 4,
 * 8, 16 (w = 0..4) and the built-in (w = 5). n is a multiple of 16. */
#define HALFCONV_WIDTHS 6

kernel void halfconv_to_float(global const store_t *in, /* (N) half bits */
                              global float *out,        /* (6, N) */
                              uint n)
{
    const uint j = get_global_id(0);
    if (j >= n / 16)
        return;
    const uint i0 = 16 * j;
    for (uint k = 0; k < 16; k++)
        out[i0 + k] = mpcl_h2f(in[i0 + k]);
    for (uint k = 0; k < 8; k++)
        vstore2(mpcl_h2f2(vload2(8 * j + k, in)), 8 * j + k, out + n);
    for (uint k = 0; k < 4; k++)
        vstore4(mpcl_h2f4(vload4(4 * j + k, in)), 4 * j + k, out + 2 * n);
    for (uint k = 0; k < 2; k++)
        vstore8(mpcl_h2f8(vload8(2 * j + k, in)), 2 * j + k, out + 3 * n);
    vstore16(mpcl_h2f16(vload16(j, in)), j, out + 4 * n);
    for (uint k = 0; k < 16; k++)
        out[5 * n + i0 + k] = vload_half(i0 + k, (global const half *)in);
}

kernel void halfconv_from_float(global const float *in, /* (N) */
                                global store_t *out,    /* (6, N) half bits */
                                uint n)
{
    const uint j = get_global_id(0);
    if (j >= n / 16)
        return;
    const uint i0 = 16 * j;
    for (uint k = 0; k < 16; k++)
        out[i0 + k] = mpcl_f2h(in[i0 + k]);
    for (uint k = 0; k < 8; k++)
        vstore2(mpcl_f2h2(vload2(8 * j + k, in)), 8 * j + k, out + n);
    for (uint k = 0; k < 4; k++)
        vstore4(mpcl_f2h4(vload4(4 * j + k, in)), 4 * j + k, out + 2 * n);
    for (uint k = 0; k < 2; k++)
        vstore8(mpcl_f2h8(vload8(2 * j + k, in)), 2 * j + k, out + 3 * n);
    vstore16(mpcl_f2h16(vload16(j, in)), j, out + 4 * n);
    for (uint k = 0; k < 16; k++)
        vstore_half_rte(in[i0 + k], i0 + k, (global half *)(out + 5 * n));
}
#endif

#if defined(MPCL_FP16_STORAGE)
/* (d) The micro-benchmark behind the choice between the integer code and
 * the built-ins for scalar conversions (src/halfconv.c): a read, convert,
 * multiply-add, convert, write per element, as the elementwise and pooling
 * kernels do. Launched over exactly N items. */
kernel void halfconv_bench(global const store_t *restrict in, /* (N) */
                           global store_t *restrict out)      /* (N) */
{
    const size_t i = get_global_id(0);
    out[i] = mpcl_f2h(mpcl_h2f(in[i]) * 1.5f + 0.25f);
}
#endif
