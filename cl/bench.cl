/* cl/bench.cl — micro-benchmark kernels for `mpcl probe --bench`.
 * Dimension letters: N elements (of float4). */

kernel void copy_f4(global const float4 *in, global float4 *out)
{
    size_t i = get_global_id(0);
    out[i] = in[i];
}

kernel void empty_kernel(global float *unused)
{
    (void)unused;
}

/* Each work item runs 16 independent FMA chains of `iters` steps:
 * 32 * iters flops. The seed comes from the buffer so nothing folds away. */
kernel void fma_f32(global float *data, uint iters)
{
    size_t i = get_global_id(0);
    float x = data[i], y = x * 0.5f;
    float a0 = x, a1 = y, a2 = x + 1.0f, a3 = y + 1.0f, a4 = x + 2.0f, a5 = y + 2.0f,
          a6 = x + 3.0f, a7 = y + 3.0f;
    float a8 = x - 1.0f, a9 = y - 1.0f, a10 = x - 2.0f, a11 = y - 2.0f, a12 = x - 3.0f,
          a13 = y - 3.0f, a14 = x * 2.0f, a15 = y * 2.0f;
    for (uint k = 0; k < iters; k++) {
        a0 = fma(a0, y, x); a1 = fma(a1, y, x); a2 = fma(a2, y, x); a3 = fma(a3, y, x);
        a4 = fma(a4, y, x); a5 = fma(a5, y, x); a6 = fma(a6, y, x); a7 = fma(a7, y, x);
        a8 = fma(a8, y, x); a9 = fma(a9, y, x); a10 = fma(a10, y, x); a11 = fma(a11, y, x);
        a12 = fma(a12, y, x); a13 = fma(a13, y, x); a14 = fma(a14, y, x); a15 = fma(a15, y, x);
    }
    data[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11 + a12 + a13 + a14 + a15;
}

#if defined(MPCL_FP16)
/* The same in half, two lanes per half2 so that paired-half units count. */
kernel void fma_f16(global half *data, uint iters)
{
    size_t i = get_global_id(0);
    half2 x = (half2)(data[i], data[i]);
    half2 y = x * (half)0.5f;
    half2 a0 = x, a1 = y, a2 = x + (half)1.0f, a3 = y + (half)1.0f;
    half2 a4 = x - (half)1.0f, a5 = y - (half)1.0f, a6 = x * (half)2.0f, a7 = y * (half)2.0f;
    for (uint k = 0; k < iters; k++) {
        a0 = fma(a0, y, x); a1 = fma(a1, y, x); a2 = fma(a2, y, x); a3 = fma(a3, y, x);
        a4 = fma(a4, y, x); a5 = fma(a5, y, x); a6 = fma(a6, y, x); a7 = fma(a7, y, x);
    }
    half2 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    data[i] = s.x + s.y;
}
#endif
