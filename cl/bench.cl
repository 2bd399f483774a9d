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

/* Each work item runs 8 independent FMA chains of float4 for `iters` steps:
 * 8 chains x 4 lanes x 2 flops = 64 flops per iteration. Vector types let
 * CPU devices use their SIMD units, as clpeak does. The seed comes from the
 * buffer so nothing folds away. */
kernel void fma_f32(global float *data, uint iters)
{
    size_t i = get_global_id(0);
    float4 x = (float4)(data[i], data[i] + 1.0f, data[i] + 2.0f, data[i] + 3.0f);
    float4 y = x * 0.5f;
    float4 a0 = x, a1 = y, a2 = x + 1.0f, a3 = y + 1.0f;
    float4 a4 = x - 1.0f, a5 = y - 1.0f, a6 = x * 2.0f, a7 = y * 2.0f;
    for (uint k = 0; k < iters; k++) {
        a0 = fma(a0, y, x); a1 = fma(a1, y, x); a2 = fma(a2, y, x); a3 = fma(a3, y, x);
        a4 = fma(a4, y, x); a5 = fma(a5, y, x); a6 = fma(a6, y, x); a7 = fma(a7, y, x);
    }
    float4 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    data[i] = s.x + s.y + s.z + s.w;
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
