/* cl/convert.cl — conversions between half and float, the linear layer's
 * bias kernels, and a GEMM that reads the storage dtype and accumulates in
 * float (the FP32-accumulating path of fp16 and fp16-storage).
 *
 * Dimension letters: N elements; G batch of matrices, R rows, L columns of a
 * matrix with leading dimension LD (elements between rows) and stride ST
 * (elements between matrices); B batch, O output features; M, N, K the GEMM
 * sizes of C (M, N) = op(A) (M, K) op(B) (K, N).
 *
 * The half <-> float kernels take half buffers in every variant (no
 * extension needed), so the GEMM router can use them whatever the context's
 * mode: in fp16-storage as the bit patterns that cl/precision.h converts
 * (HALF_BUF ushort, mpcl_h2f / mpcl_f2h), elsewhere as half pointers read
 * with vload_half and written with vstore_half_rte. */

#if defined(MPCL_FP16_STORAGE)
#define HALF_BUF ushort
#define HLOAD(p, i) mpcl_h2f((p)[i])
#define HSTORE(v, i, p) ((p)[i] = mpcl_f2h(v))
#else
#define HALF_BUF half
#define HLOAD(p, i) vload_half((i), (p))
#define HSTORE(v, i, p) vstore_half_rte((v), (i), (p))
#endif

/* ------------------------------------------------------------- casts */

/* out[i] = (float)in[i], exact. */
kernel void cast_f16_f32(global const HALF_BUF *in, /* (N) */
                         global float *out,     /* (N) */
                         ulong n)
{
    size_t i = get_global_id(0);
    if (i < n)
        out[i] = HLOAD(in, i);
}

/* out[i] = in[i] rounded to the nearest half, ties to even. */
kernel void cast_f32_f16(global const float *in, /* (N) */
                         global HALF_BUF *out,       /* (N) */
                         ulong n)
{
    size_t i = get_global_id(0);
    if (i < n)
        HSTORE(in[i], i, out);
}

/* The GEMM router's conversions of G matrices of R x L elements, leading
 * dimension LD and stride ST, from src + off into dst + 0 with the same
 * layout (only the matrix elements are touched, never the gaps between rows
 * or matrices). Global size (L, R, G). */
kernel void mat_f16_f32(global const HALF_BUF *src, /* (G, R, LD) from off, stride ST */
                        ulong off, uint rows, uint cols, uint ld, ulong stride,
                        global float *dst)      /* (G, R, LD) from 0, stride ST */
{
    uint c = get_global_id(0), r = get_global_id(1);
    size_t g = get_global_id(2);
    if (c >= cols || r >= rows)
        return;
    size_t at = g * stride + (size_t)r * ld + c;
    dst[at] = HLOAD(src, off + at);
}

kernel void mat_f32_f16(global const float *src, /* (G, R, LD) from 0, stride ST */
                        ulong off, uint rows, uint cols, uint ld, ulong stride,
                        global HALF_BUF *dst)        /* (G, R, LD) from off, stride ST */
{
    uint c = get_global_id(0), r = get_global_id(1);
    size_t g = get_global_id(2);
    if (c >= cols || r >= rows)
        return;
    size_t at = g * stride + (size_t)r * ld + c;
    HSTORE(src[at], off + at, dst);
}

/* The same for a contiguous span of N elements (matrices that overlap, or
 * that lie back to back without gaps), each way. */
kernel void span_f16_f32(global const HALF_BUF *src, /* (N) from off */
                         ulong off, ulong n,
                         global float *dst)      /* (N) */
{
    size_t i = get_global_id(0);
    if (i < n)
        dst[i] = HLOAD(src, off + i);
}

kernel void span_f32_f16(global const float *src, /* (N) */
                         ulong off, ulong n,
                         global HALF_BUF *dst)    /* (N) from off */
{
    size_t i = get_global_id(0);
    if (i < n)
        HSTORE(src[i], off + i, dst);
}

/* ------------------------------------------------------------ linear */

/* y[b][o] += bias[o]. An exact range (O, B) (mpcl_launch_rows): no bounds
 * check and no division, so that a CPU device vectorises it along o. */
kernel void bias_add_rows(global store_t *y,          /* (B, O) */
                          global const store_t *bias, /* (O) */
                          uint rows, uint cols)
{
    uint o = get_global_id(0), b = get_global_id(1);
    size_t i = (size_t)b * cols + o;
    acc_t v = LOADF(y, i) + LOADF(bias, o);
    STOREF(y, i, v);
    (void)rows;
}

/* db[o] += sum over b of dy[b][o], the sum in float. Global size O. */
kernel void bias_grad_rows(global store_t *db,       /* (O) */
                           global const store_t *dy, /* (B, O) */
                           uint rows, uint cols)
{
    uint o = get_global_id(0);
    if (o >= cols)
        return;
    acc_t s = 0.0f;
    for (uint b = 0; b < rows; b++)
        s += LOADF(dy, (size_t)b * cols + o);
    STOREF(db, o, LOADF(db, o) + s);
}

/* -------------------------------------------------------------- GEMM */

/* C = alpha op(A) op(B) + beta C for G independent products, row-major,
 * operands in the storage dtype, every product summed in float. C is not
 * read when beta == 0. Work-group (GT, GT); each work-item computes a
 * GW x GW block of C, strided by GT so that neighbouring items touch
 * neighbouring columns. Global size (ceil(N / (GT GW)) GT, ceil(M / (GT GW)) GT, G). */
#ifndef GEMM_GT /* the host builds smaller tiles where 64-item groups do not run */
#define GEMM_GT 8
#endif
#define GT GEMM_GT
#define GW 4
#define GTILE (GT * GW) /* the C tile of one work-group, and the K step */

kernel __attribute__((reqd_work_group_size(GT, GT, 1)))
void gemm_f32acc(uint trans_a, uint trans_b, uint m, uint n, uint k, float alpha,
                 global const store_t *a, /* (G, M, K) or (G, K, M), from a_off, lda, a_stride */
                 ulong a_off, uint lda, ulong a_stride,
                 global const store_t *b, /* (G, K, N) or (G, N, K), from b_off, ldb, b_stride */
                 ulong b_off, uint ldb, ulong b_stride,
                 float beta,
                 global store_t *c,       /* (G, M, N) from c_off, ldc, c_stride */
                 ulong c_off, uint ldc, ulong c_stride)
{
    local float as[GTILE][GTILE + 1]; /* as[kk][row] */
    local float bs[GTILE][GTILE + 1]; /* bs[kk][col] */
    const uint tx = get_local_id(0), ty = get_local_id(1);
    const uint col0 = get_group_id(0) * GTILE, row0 = get_group_id(1) * GTILE;
    const size_t g = get_global_id(2);
    a_off += g * a_stride;
    b_off += g * b_stride;
    c_off += g * c_stride;

    acc_t acc[GW][GW];
    for (uint i = 0; i < GW; i++)
        for (uint j = 0; j < GW; j++)
            acc[i][j] = 0.0f;

    for (uint k0 = 0; k0 < k; k0 += GTILE) {
        /* Each item loads GW x GW elements of each tile; the index that runs
         * along memory follows tx, so neighbouring items read neighbours. */
        for (uint i = 0; i < GW; i++)
            for (uint j = 0; j < GW; j++) {
                uint u = ty + i * GT, v = tx + j * GT; /* u slow, v fast in memory */
                uint ar, ak, bk, bc;
                if (trans_a) { /* A (K, M): rows of A are kk */
                    ak = k0 + u;
                    ar = row0 + v;
                } else { /* A (M, K) */
                    ar = row0 + u;
                    ak = k0 + v;
                }
                float av = 0.0f;
                if (ar < m && ak < k)
                    av = LOADF(a, a_off + (trans_a ? (size_t)ak * lda + ar : (size_t)ar * lda + ak));
                as[ak - k0][ar - row0] = av;
                if (trans_b) { /* B (N, K) */
                    bc = col0 + u;
                    bk = k0 + v;
                } else { /* B (K, N) */
                    bk = k0 + u;
                    bc = col0 + v;
                }
                float bv = 0.0f;
                if (bk < k && bc < n)
                    bv = LOADF(b, b_off + (trans_b ? (size_t)bc * ldb + bk : (size_t)bk * ldb + bc));
                bs[bk - k0][bc - col0] = bv;
            }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint kk = 0; kk < GTILE; kk++) {
            float ar_[GW], bc_[GW];
            for (uint i = 0; i < GW; i++)
                ar_[i] = as[kk][ty + i * GT];
            for (uint j = 0; j < GW; j++)
                bc_[j] = bs[kk][tx + j * GT];
            for (uint i = 0; i < GW; i++)
                for (uint j = 0; j < GW; j++)
                    acc[i][j] = fma(ar_[i], bc_[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    for (uint i = 0; i < GW; i++)
        for (uint j = 0; j < GW; j++) {
            uint r = row0 + ty + i * GT, cc = col0 + tx + j * GT;
            if (r >= m || cc >= n)
                continue;
            size_t at = c_off + (size_t)r * ldc + cc;
            acc_t v = alpha * acc[i][j];
            if (beta != 0.0f)
                v += beta * LOADF(c, at);
            STOREF(c, at, v);
        }
}
