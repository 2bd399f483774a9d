/* cl/bf16.cl — conversions between bfloat16 and float: the casts, and the
 * GEMM router's copies of bf16 operands into float scratch (and of the float
 * result back), for the convert + Sgemm path of the bf16 mode.
 *
 * Buffers of bf16 are ushort (the upper 16 bits of a float); the
 * conversions are precision.h's mpcl_bf16_load / mpcl_bf16_store (integer
 * operations, or the verified cl_intel_bfloat16 built-ins), so these kernels
 * build and run in every variant.
 *
 * Dimension letters: N elements; G batch of matrices, R rows, L columns of a
 * matrix with leading dimension LD (elements between rows) and stride ST
 * (elements between matrices). */

/* out[i] = (float)in[i], exact. */
kernel void cast_bf16_f32(global const ushort *in, /* (N) */
                          global float *out,       /* (N) */
                          ulong n)
{
    size_t i = get_global_id(0);
    if (i < n)
        out[i] = mpcl_bf16_load(in[i]);
}

/* out[i] = in[i] rounded to the nearest bf16, ties to even. */
kernel void cast_f32_bf16(global const float *in, /* (N) */
                          global ushort *out,     /* (N) */
                          ulong n)
{
    size_t i = get_global_id(0);
    if (i < n)
        out[i] = mpcl_bf16_store(in[i]);
}

/* G matrices of R x L elements from src + off into dst + 0 with the same
 * layout (only matrix elements are touched). Global size (L, R, G). */
kernel void mat_bf16_f32(global const ushort *src, /* (G, R, LD) from off, stride ST */
                         ulong off, uint rows, uint cols, uint ld, ulong stride,
                         global float *dst)        /* (G, R, LD) from 0, stride ST */
{
    uint c = get_global_id(0), r = get_global_id(1);
    size_t g = get_global_id(2);
    if (c >= cols || r >= rows)
        return;
    size_t at = g * stride + (size_t)r * ld + c;
    dst[at] = mpcl_bf16_load(src[off + at]);
}

kernel void mat_f32_bf16(global const float *src, /* (G, R, LD) from 0, stride ST */
                         ulong off, uint rows, uint cols, uint ld, ulong stride,
                         global ushort *dst)      /* (G, R, LD) from off, stride ST */
{
    uint c = get_global_id(0), r = get_global_id(1);
    size_t g = get_global_id(2);
    if (c >= cols || r >= rows)
        return;
    size_t at = g * stride + (size_t)r * ld + c;
    dst[off + at] = mpcl_bf16_store(src[at]);
}

/* The same for a contiguous span of N elements (matrices that overlap, or
 * that lie back to back without gaps), each way. */
kernel void span_bf16_f32(global const ushort *src, /* (N) from off */
                          ulong off, ulong n,
                          global float *dst)        /* (N) */
{
    size_t i = get_global_id(0);
    if (i < n)
        dst[i] = mpcl_bf16_load(src[off + i]);
}

kernel void span_f32_bf16(global const float *src, /* (N) */
                          ulong off, ulong n,
                          global ushort *dst)      /* (N) from off */
{
    size_t i = get_global_id(0);
    if (i < n)
        dst[off + i] = mpcl_bf16_store(src[i]);
}
