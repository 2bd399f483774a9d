/* cl/conv.cl — 2-D convolution: im2col / col2im around the GEMM router, the
 * bias and layout kernels of the im2col path. (The direct convolution for
 * skinny layers, built per geometry, is cl/conv_direct.cl.)
 *
 * Dimension letters: B batch (NB images in one chunk), C input channels,
 * K output channels, H W input height and width, OH OW output height and
 * width, R S kernel height and width, P = OH * OW output pixels per image,
 * N = NB * P columns of a chunk's column matrix.
 *
 * Every kernel ends with the geometry (CONV_GEO_PARAMS, set by
 * src/ops/conv.c): C, H, W, K, R, S, OH, OW, stride_h, stride_w, pad_h,
 * pad_w, dil_h, dil_w, NB (images in this launch).
 * Element offsets (x_off, ...) select the first image of a chunk. Every sum
 * accumulates in float (acc_t); values are read and written in the storage
 * type through LOADF / STOREF.
 *
 * Indices are split with one division and a multiply-subtract, never a
 * `/` and `%` of the same operands: LLVM turns such pairs into `freeze`
 * instructions that oclgrind 21.10's uninitialised-value checker rejects. */

/* The geometry parameters every kernel ends with, in this order. (Scalars,
 * not one int16: oclgrind 21.10's uninitialised-value checker crashes on the
 * shufflevector LLVM makes of arithmetic on lanes of a vector argument.) */
#define CONV_GEO_PARAMS \
    const int G_C, const int G_H, const int G_W, const int G_K, const int G_R, const int G_S, \
    const int G_OH, const int G_OW, const int G_SH, const int G_SW, const int G_PH, \
    const int G_PW, const int G_DH, const int G_DW, const int G_NB

/* The largest work-group of the reduction kernel conv_bias_grad (one group
 * per output value): the host launches it with a power of two up to this,
 * as large as the kernel and device allow. */
#define CONV_WG 64

/* The tap of x that element id of col (C*R*S, N) reads: declares `at`, its
 * index from the chunk's first image, clamped into the image, and
 * `inside`, 0 for a tap in the padding (which reads the clamped address
 * and takes 0). */
#define IM2COL_TAP(id, at, inside)                                                       \
    const int P_ = G_OH * G_OW, N_ = G_NB * P_, RS_ = G_R * G_S;                          \
    const int row_ = (id) / N_, n_ = (id) - row_ * N_;                                    \
    const int c_ = row_ / RS_, rs_ = row_ - c_ * RS_;                                     \
    const int r_ = rs_ / G_S, s_ = rs_ - r_ * G_S;                                        \
    const int b_ = n_ / P_, p_ = n_ - b_ * P_;                                            \
    const int oh_ = p_ / G_OW, ow_ = p_ - oh_ * G_OW;                                     \
    const int ih_ = oh_ * G_SH - G_PH + r_ * G_DH, iw_ = ow_ * G_SW - G_PW + s_ * G_DW;  \
    const int ihc_ = clamp(ih_, 0, G_H - 1), iwc_ = clamp(iw_, 0, G_W - 1);               \
    const int at = ((b_ * G_C + c_) * G_H + ihc_) * G_W + iwc_;                           \
    const int inside = ih_ == ihc_ && iw_ == iwc_

#if !defined(MPCL_FP32)
/* Element i of a buffer of 16-bit values, read through the aligned 32-bit
 * word that holds it: CPU devices gather 32-bit words, not 16-bit values.
 * The buffer must start 4-byte aligned and end on a word. */
#ifdef __ENDIAN_LITTLE__
#define WORD_HALF(p, i) ((ushort)((((global const uint *)(p))[(i) >> 1] >> (((i) & 1) * 16)) & 0xffffu))
#else
#define WORD_HALF(p, i) ((ushort)((((global const uint *)(p))[(i) >> 1] >> ((1 - ((i) & 1)) * 16)) & 0xffffu))
#endif
#endif

/* col (C*R*S, N): col[(c, r, s), (b, oh, ow)] = x[b, c, oh*sh - ph + r*dh,
 * ow*sw - pw + s*dw], zero outside the image. One work item per entry.
 * Every item loads (a tap outside the image reads a clamped address and
 * selects 0): a CPU device that vectorises across items gathers without a
 * mask, which for half values, gathered element by element, measured 1.3x
 * faster. */
kernel void conv_im2col(global const store_t *x, /* (B, C, H, W), chunk at x_off */
                        uint x_off,
                        global store_t *col,     /* (C*R*S, N) */
                        CONV_GEO_PARAMS)
{
    const int id = (int)get_global_id(0);
    if (id >= G_C * G_R * G_S * G_NB * G_OH * G_OW)
        return;
    IM2COL_TAP(id, at, inside);
    x += x_off;
#if !defined(MPCL_FP32)
    /* a copy of the 16-bit value's bits (+0 in the padding, 0x0000 in half
     * and bf16): no conversion, and 16-bit integer moves vectorise where
     * half gathers may not (Intel's CPU runtime, fp16: 1.6x fp32's time) */
    const ushort v = ((global const ushort *)x)[at];
    ((global ushort *)col)[id] = inside ? v : (ushort)0;
#else
    /* every tap from a clamped address, then a select: no load under a
     * condition */
    const float v = LOADF(x, at);
    STOREF(col, id, inside ? v : 0.0f);
#endif
}

#if !defined(MPCL_FP32)
/* conv_im2col for 16-bit storage (fp16, fp16-storage, bf16) where x holds
 * an even number of elements: each tap is read as the aligned 32-bit word
 * that holds it, and the half of the word it is taken. A CPU device has
 * 32-bit gathers but no 16-bit ones, so this gathers in hardware where the
 * ushort reads went element by element (Intel's CPU runtime, fp16). x's
 * buffer starts 4-byte aligned and ends on a word, so every word read is
 * inside it. Same arguments as conv_im2col. */
kernel void conv_im2col_pairs(global const uint *x, /* (B, C, H, W) as words, chunk at x_off */
                              uint x_off,
                              global ushort *col,   /* (C*R*S, N) */
                              CONV_GEO_PARAMS)
{
    const int id = (int)get_global_id(0);
    if (id >= G_C * G_R * G_S * G_NB * G_OH * G_OW)
        return;
    IM2COL_TAP(id, at, inside);
    const ushort v = WORD_HALF(x, x_off + (uint)at);
    col[id] = inside ? v : (ushort)0;
}
#endif

/* A 16-bit value of a scratch buffer (dcol: its size is a power of two of
 * at least 1 MiB, its start aligned) read as float through the aligned
 * 32-bit word that holds it (WORD_HALF). */
#if !defined(MPCL_FP32)
#if defined(MPCL_FP16)
#define LOAD_SCRATCH(p, i) ((float)as_half(WORD_HALF(p, i)))
#elif defined(MPCL_FP16_STORAGE)
#define LOAD_SCRATCH(p, i) mpcl_h2f(WORD_HALF(p, i))
#else
#define LOAD_SCRATCH(p, i) mpcl_bf16_load(WORD_HALF(p, i))
#endif
#else
#define LOAD_SCRATCH(p, i) LOADF(p, i)
#endif

/* dx[b, c, h, w] = sum of the dcol entries that im2col read from (b, c, h, w):
 * a gather (no atomics), one work item per input element, float sum. */
kernel void conv_col2im(global const store_t *dcol, /* (C*R*S, N), a scratch buffer */
                        global store_t *dx,         /* (B, C, H, W), chunk at dx_off */
                        uint dx_off,
                        CONV_GEO_PARAMS)
{
    const int P = G_OH * G_OW, N = G_NB * P, RS = G_R * G_S;
    const int id = (int)get_global_id(0);
    if (id >= G_NB * G_C * G_H * G_W)
        return;
    int q = id / G_W;
    const int w = id - q * G_W;
    int q2 = q / G_H;
    const int h = q - q2 * G_H;
    const int b = q2 / G_C, c = q2 - b * G_C;
    /* every tap (r, s) loads from a valid address (output 0 when no output
     * reads (h, w) through it) and selects 0: no branch, no load under a
     * condition, the terms added in the same order as before */
    acc_t acc = 0.0f;
    for (int r = 0; r < G_R; r++) {
        const int th = h + G_PH - r * G_DH;
        const int oh = th / G_SH;
        const int okh = th >= 0 && oh * G_SH == th && oh < G_OH;
        const int ohc = okh ? oh : 0;
        for (int s = 0; s < G_S; s++) {
            const int tw = w + G_PW - s * G_DW;
            const int ow = tw / G_SW;
            const int ok = okh && tw >= 0 && ow * G_SW == tw && ow < G_OW;
            const int owc = ok ? ow : 0;
            const float v = LOAD_SCRATCH(dcol, (c * RS + r * G_S + s) * N + b * P + ohc * G_OW + owc);
            acc += ok ? v : 0.0f;
        }
    }
    STOREF(dx + dx_off, id, acc);
}

/* y[b, k, p] = yt[k, b*P + p] + bias[k]: the chunk's GEMM output (K, N) back
 * to NCHW, with the bias added (has_bias 0: bias is not read). */
kernel void conv_gather_out(global const store_t *yt,   /* (K, N) */
                            global const store_t *bias, /* (K) */
                            uint has_bias,
                            global store_t *y,          /* (B, K, OH, OW), chunk at y_off */
                            uint y_off,
                            CONV_GEO_PARAMS)
{
    const int P = G_OH * G_OW, N = G_NB * P;
    const int id = (int)get_global_id(0);
    if (id >= G_NB * G_K * P)
        return;
    const int q = id / P, p = id - q * P, b = q / G_K, k = q - b * G_K;
    float v = LOADF(yt, k * N + b * P + p);
    if (has_bias)
        v += LOADF(bias, k);
    STOREF(y + y_off, id, v);
}

/* dyt[k, b*P + p] = dy[b, k, p]: a chunk of dy as the (K, N) GEMM operand. */
kernel void conv_scatter_dy(global const store_t *dy, /* (B, K, OH, OW), chunk at dy_off */
                            uint dy_off,
                            global store_t *dyt,      /* (K, N) */
                            CONV_GEO_PARAMS)
{
    const int P = G_OH * G_OW, N = G_NB * P;
    const int id = (int)get_global_id(0);
    if (id >= G_NB * G_K * P)
        return;
    const int q = id / P, p = id - q * P, b = q / G_K, k = q - b * G_K;
    dy += dy_off;
    dyt[k * N + b * P + p] = dy[id]; /* a copy, in every variant */
}

/* Sums part[0..L) of the work-group (L = the local size, a power of two
 * <= CONV_WG); the result is valid in item 0. */
static acc_t conv_group_sum(local acc_t *part, acc_t v)
{
    const int lid = (int)get_local_id(0);
    part[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int half_n = (int)get_local_size(0) / 2; half_n > 0; half_n /= 2) {
        if (lid < half_n)
            part[lid] += part[lid + half_n];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return part[0];
}

/* db[k] += sum over b, oh, ow of dy[b, k, oh, ow]. One work-group per k
 * (NB = B, the whole batch) of L items, L a power of two <= CONV_WG: the
 * host takes the largest the kernel and device allow (1 works). */
kernel void conv_bias_grad(global const store_t *dy, /* (B, K, OH, OW) */
                           global store_t *db,       /* (K) */
                           CONV_GEO_PARAMS)
{
    local acc_t part[CONV_WG];
    const int P = G_OH * G_OW, k = (int)get_group_id(0), lid = (int)get_local_id(0);
    acc_t acc = 0.0f;
    if (k < G_K)
        for (int j = lid; j < G_NB * P; j += (int)get_local_size(0)) {
            const int b = j / P, p = j - b * P;
            acc += LOADF(dy, (b * G_K + k) * P + p);
        }
    acc = conv_group_sum(part, acc);
    if (lid == 0 && k < G_K)
        STOREF(db, k, LOADF(db, k) + acc);
}
