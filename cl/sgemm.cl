/* cl/sgemm.cl — mpcl's register-tiled Sgemm, C = alpha op(A) B + beta C,
 * row-major, float sums on float or 16-bit operands (below). The GEMM router (src/gemm.c, docs/gemm.md) runs it in
 * place of CLBlast's Sgemm for a shape only where it measured faster on the
 * device at the shape's first call (CLBlast stays the default and the
 * reference of the choice).
 *
 * One work item computes an SG_MR x SG_NR block of C (SG_NR = SG_NV
 * vectors of SG_VW floats) in registers: per k it loads SG_NV vectors of a
 * row of B, broadcasts SG_MR values of a column of op(A) and does
 * SG_MR * SG_NV vector FMAs (SG_NV 1, 2 or 3). No local memory and no barrier: the kernel
 * suits devices whose compiler maps one work item to a core's vector unit
 * (CPU devices: PoCL, Intel's runtime), where CLBlast's Xgemm reached a
 * quarter of the cores' speed. The block sizes are -D defines chosen by
 * measurement on the device (src/sgemm.c), never assumed: SG_VW is the
 * vector width, SG_MR the rows, SG_NV the vectors per row, SG_TA 1 when A
 * is stored transposed (K, M).
 *
 * The launch covers the block-aligned part of C, M0 = M - M % SG_MR rows
 * and N0 = N - N % SG_NR columns; sgemm_edge computes the rest. With a
 * split K (Z > 1 chunks of kc, dim 2), each chunk's raw sums go to
 * part (Z, M0, N0) and sgemm_reduce adds them up: for products with few
 * blocks and a long K (the weight gradients of convolutions, K = B*OH*OW),
 * whose operands would otherwise stream from memory once per block.
 * The block kernels' work items read and write only inside the operands
 * (no bounds checks needed: the grid is exact). */

#ifndef SG_MR
#define SG_MR 8
#endif
#ifndef SG_VW
#define SG_VW 16
#endif
#ifndef SG_NV
#define SG_NV 2
#endif
#ifndef SG_TA
#define SG_TA 0
#endif

#define SG_CAT_(a, b) a##b
#define SG_CAT(a, b) SG_CAT_(a, b)
#define sg_vec SG_CAT(float, SG_VW)
#define SG_VLOAD SG_CAT(vload, SG_VW)
#define SG_VSTORE SG_CAT(vstore, SG_VW)
#define SG_NR (SG_VW * SG_NV)

/* The operands and C are the variant's store_t (cl/precision.h): float in
 * the fp32 variant; half, or bf16's bits, in the 16-bit ones, converted to
 * float on load (a row of B SG_VW elements at once) and rounded once on
 * the store of C; the sums are float in every variant. SG_LD1 loads one
 * element as float, SG_LDV SG_VW of them, SG_STV stores SG_VW floats. */
#if defined(MPCL_FP32)
#define SG_LD1(p, i) ((p)[i])
#define SG_LDV(p) SG_VLOAD(0, p)
#define SG_STV(v, p) SG_VSTORE(v, 0, p)
#elif defined(MPCL_FP16)
#define SG_LD1(p, i) ((float)(p)[i])
#define SG_LDV(p) SG_CAT(convert_float, SG_VW)(SG_VLOAD(0, p))
#define SG_STV(v, p) SG_VSTORE(SG_CAT(SG_CAT(convert_half, SG_VW), _rte)(v), 0, p)
#elif defined(MPCL_FP16_STORAGE)
#define SG_LD1(p, i) mpcl_h2f((p)[i])
#define SG_LDV(p) SG_CAT(mpcl_h2f, SG_VW)(SG_VLOAD(0, p))
#define SG_STV(v, p) SG_VSTORE(SG_CAT(mpcl_f2h, SG_VW)(v), 0, p)
#elif defined(MPCL_BF16)
#define SG_LD1(p, i) mpcl_bf16_load((p)[i])
#define SG_LDV(p) SG_CAT(as_float, SG_VW)(SG_CAT(convert_uint, SG_VW)(SG_VLOAD(0, p)) << 16)
#define SG_STV(v, p) SG_VSTORE(sg_bf16v(v), 0, p)
#define sg_ushortv SG_CAT(ushort, SG_VW)
#define sg_uintv SG_CAT(uint, SG_VW)
/* floats to bf16 bits, SG_VW at once: round to nearest even, NaN kept
 * quiet (the scalar mpcl_bf16_store's rule, cl/precision.h) */
static inline sg_ushortv sg_bf16v(sg_vec v)
{
    const sg_uintv u = SG_CAT(as_uint, SG_VW)(v);
    const sg_uintv r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const sg_uintv q = (u >> 16) | 0x40u;
    return SG_CAT(convert_ushort, SG_VW)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
}
#endif

/* C's type: store_t, or float with SG_CF 1 (16-bit operands whose
 * product feeds a float consumer, as the column gradient of a
 * convolution: no rounding to 16 bits and back). SG_LDVC / SG_STVC load
 * and store SG_VW elements of C, SG_LDC / SG_STC one. */
#ifndef SG_CF
#define SG_CF 0
#endif
#if SG_CF
typedef float sg_c_t;
#define SG_LDVC(p) SG_VLOAD(0, p)
#define SG_STVC(v, p) SG_VSTORE(v, 0, p)
#define SG_LDC(p, i) ((p)[i])
#define SG_STC(p, i, v) ((p)[i] = (v))
#else
typedef store_t sg_c_t;
#define SG_LDVC(p) SG_LDV(p)
#define SG_STVC(v, p) SG_STV(v, p)
#define SG_LDC(p, i) LOADF(p, i)
#define SG_STC(p, i, v) STOREF(p, i, v)
#endif

#if SG_TA
#define SG_A(a, lda, i, k) SG_LD1(a, (size_t)(k) * (lda) + (i))
#else
#define SG_A(a, lda, i, k) SG_LD1(a, (size_t)(i) * (lda) + (k))
#endif

/* Items (M0 / SG_MR, N0 / SG_NR, Z). Chunk z sums k in [z*kc, min(K,
 * (z+1)*kc)). to_part 0 (Z = 1): C block = alpha * sum + beta * C (C not
 * read when beta is 0); to_part 1: the raw sums to part + z*M0*N0, row
 * length N0 (c, c_off, ldc, alpha and beta unused). */
kernel void sgemm_tile(int k_total, int kc,
                       global const store_t *a, uint a_off, int lda,
                       global const store_t *b, uint b_off, int ldb,
                       global sg_c_t *c, uint c_off, int ldc,
                       float alpha, float beta,
                       int to_part, global float *part)
{
    const int i0 = (int)get_global_id(0) * SG_MR, j0 = (int)get_global_id(1) * SG_NR;
    const int z = (int)get_global_id(2);
    const int k0 = z * kc, k1 = min(k_total, k0 + kc);
    a += a_off;
    b += b_off + j0;
    sg_vec acc0[SG_MR];
#if SG_NV >= 2
    sg_vec acc1[SG_MR];
#endif
#if SG_NV >= 3
    sg_vec acc2[SG_MR];
#endif
#pragma unroll
    for (int i = 0; i < SG_MR; i++) {
        acc0[i] = (sg_vec)0.0f;
#if SG_NV >= 2
        acc1[i] = (sg_vec)0.0f;
#endif
#if SG_NV >= 3
        acc2[i] = (sg_vec)0.0f;
#endif
    }
    for (int k = k0; k < k1; k++) {
        global const store_t *brow = b + (size_t)k * ldb;
        const sg_vec b0 = SG_LDV(brow);
#if SG_NV >= 2
        const sg_vec b1 = SG_LDV(brow + SG_VW);
#endif
#if SG_NV >= 3
        const sg_vec b2 = SG_LDV(brow + 2 * SG_VW);
#endif
#pragma unroll
        for (int i = 0; i < SG_MR; i++) {
            const float as = SG_A(a, lda, i0 + i, k); /* a vector literal of (a) would be a cast of a */
            const sg_vec av = (sg_vec)(as);
            acc0[i] = fma(av, b0, acc0[i]);
#if SG_NV >= 2
            acc1[i] = fma(av, b1, acc1[i]);
#endif
#if SG_NV >= 3
            acc2[i] = fma(av, b2, acc2[i]);
#endif
        }
    }
    if (to_part) {
        const int m0 = (int)get_global_size(0) * SG_MR, n0 = (int)get_global_size(1) * SG_NR;
        global float *p = part + (size_t)z * m0 * n0 + j0;
#pragma unroll
        for (int i = 0; i < SG_MR; i++) {
            SG_VSTORE(acc0[i], 0, p + (size_t)(i0 + i) * n0);
#if SG_NV >= 2
            SG_VSTORE(acc1[i], 0, p + (size_t)(i0 + i) * n0 + SG_VW);
#endif
#if SG_NV >= 3
            SG_VSTORE(acc2[i], 0, p + (size_t)(i0 + i) * n0 + 2 * SG_VW);
#endif
        }
        return;
    }
    c += c_off + j0;
#pragma unroll
    for (int i = 0; i < SG_MR; i++) {
        global sg_c_t *crow = c + (size_t)(i0 + i) * ldc;
        sg_vec r0 = alpha * acc0[i];
#if SG_NV >= 2
        sg_vec r1 = alpha * acc1[i];
#endif
#if SG_NV >= 3
        sg_vec r2 = alpha * acc2[i];
#endif
        if (beta != 0.0f) {
            r0 += beta * SG_LDVC(crow);
#if SG_NV >= 2
            r1 += beta * SG_LDVC(crow + SG_VW);
#endif
#if SG_NV >= 3
            r2 += beta * SG_LDVC(crow + 2 * SG_VW);
#endif
        }
        SG_STVC(r0, crow);
#if SG_NV >= 2
        SG_STVC(r1, crow + SG_VW);
#endif
#if SG_NV >= 3
        SG_STVC(r2, crow + 2 * SG_VW);
#endif
    }
}

/* C[i, j] = alpha * sum over z of part[z, i, j] + beta * C[i, j] over the
 * block-aligned part (M0, N0) of C. Items (N0, M0). */
kernel void sgemm_reduce(int z_count, global const float *part,
                         global sg_c_t *c, uint c_off, int ldc, float alpha, float beta)
{
    const int j = (int)get_global_id(0), i = (int)get_global_id(1);
    const int n0 = (int)get_global_size(0), m0 = (int)get_global_size(1);
    float s = 0.0f;
    for (int z = 0; z < z_count; z++)
        s += part[((size_t)z * m0 + i) * n0 + j];
    const size_t at = c_off + (size_t)i * ldc + j;
    SG_STC(c, at, beta != 0.0f ? alpha * s + beta * SG_LDC(c, at) : alpha * s);
}

/* The rest of C outside the blocks: the region of rows x cols elements
 * whose first element is (row0, col0), one item per element in 1-D (item t
 * at row t / cols, column t % cols), each summing its whole K. A 1-D launch
 * of items = rows * cols items, rounded up to the device's group size (one
 * build serves every shape; the items past the region return). */
kernel void sgemm_edge(int k_total, int row0, int col0, int cols, int items,
                       global const store_t *a, uint a_off, int lda,
                       global const store_t *b, uint b_off, int ldb,
                       global sg_c_t *c, uint c_off, int ldc,
                       float alpha, float beta)
{
    const int t = (int)get_global_id(0);
    if (t >= items)
        return;
    const int i = row0 + t / cols, j = col0 + t % cols;
    a += a_off;
    b += b_off;
    float s = 0.0f;
    for (int k = 0; k < k_total; k++)
        s = fma(SG_A(a, lda, i, k), SG_LD1(b, (size_t)k * ldb + j), s);
    const size_t at = c_off + (size_t)i * ldc + j;
    SG_STC(c, at, beta != 0.0f ? alpha * s + beta * SG_LDC(c, at) : alpha * s);
}

/* B given transposed (stored N x K, leading dimension ld, from off) copied
 * to dst as K x N with leading dimension ldd, for sgemm_tile, which reads
 * rows of B. One item per element in 1-D (item t: stored row t / k, column
 * t % k), items rounded up to the device's group size. */
kernel void sgemm_transpose(int n, int k, global const store_t *src, uint off, int ld,
                            global store_t *dst, int ldd)
{
    const int t = (int)get_global_id(0);
    if (t >= n * k)
        return;
    const int r = t / k, c = t % k;
    dst[(size_t)c * ldd + r] = src[off + (size_t)r * ld + c];
}
