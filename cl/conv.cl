/* cl/conv.cl — 2-D convolution: im2col / col2im around the GEMM router and
 * the layout and bias kernels of the im2col path. (The direct convolution
 * for skinny layers is cl/conv_direct.cl.)
 *
 * Dimension letters: B batch (NB images in one launch), C input channels,
 * K output channels, H W input height and width, OH OW output height and
 * width, R S kernel height and width, P = OH * OW output pixels per image.
 *
 * Built once per layer geometry, like cl/conv_direct.cl: the host
 * (src/ops/conv.c) passes every size as a -D define (CONV_C, CONV_H,
 * CONV_W, CONV_K, CONV_R, CONV_S, CONV_OH, CONV_OW, CONV_SH, CONV_SW
 * (stride), CONV_PH, CONV_PW (padding), CONV_DH, CONV_DW (dilation)), so
 * every division of an index is by a constant (a multiply on the device)
 * and the window loops unroll. Only the image count nb is a run-time
 * argument. Without the defines (offline compiles in the tests) a small
 * padded, strided geometry is used.
 *
 * The column matrix of nb images, col (C*R*S, nb*P): entry (c, r, s) x
 * (b, oh, ow) at (c*R*S + r*S + s) * LD + b*P + oh*OW + ow, one GEMM
 * operand for the whole chunk. Its rows, and those of yt, dyt and dcol,
 * are LD = CONV_LD(nb) elements apart: nb*P, or CONV_LD_PAD more where
 * nb*P is a multiple of 1024 (4 KiB of floats, as the GEMM reads them):
 * rows a multiple of 4 KiB apart fall in one set of a CPU's L1 cache, and
 * a GEMM kernel streaming down them misses at every row (src/sgemm.c).
 * src/ops/conv.c computes the same LD.
 *
 * The element-wise kernels are launched over exactly their items in 3-D
 * (mpcl_launch_rows: dim 0 along an image row, so neighbouring items read
 * and write neighbouring addresses) and have no bounds check, no early
 * return and no load or store under a condition: a CPU device vectorises
 * a work-group across dim 0 then. A tap in the padding reads a clamped,
 * valid address and selects 0. Every sum accumulates in float (acc_t);
 * values are read and written in the storage type through LOADF / STOREF.
 *
 * Indices are split with one division and a multiply-subtract, never a
 * `/` and `%` of the same operands: LLVM turns such pairs into `freeze`
 * instructions that oclgrind 21.10's uninitialised-value checker rejects. */

#ifndef CONV_C
#define CONV_C 3
#define CONV_H 7
#define CONV_W 9
#define CONV_K 5
#define CONV_R 3
#define CONV_S 3
#define CONV_OH 4
#define CONV_OW 5
#define CONV_SH 2
#define CONV_SW 2
#define CONV_PH 1
#define CONV_PW 1
#define CONV_DH 1
#define CONV_DW 1
#endif

#define CONV_LD_PAD 16
#define CONV_LD(nb) ((nb) * CONV_P + (((nb) * CONV_P) % 1024 == 0 ? CONV_LD_PAD : 0))

#define CONV_RS (CONV_R * CONV_S)
#define CONV_CRS (CONV_C * CONV_RS)
#define CONV_P (CONV_OH * CONV_OW)

/* The largest work-group of the reduction kernel conv_bias_grad (one group
 * per output channel): the host launches it with a power of two up to
 * this, as large as the kernel and device allow. */
#define CONV_WG 64

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

/* The tap of x at image b_, column-matrix row crs_ and output pixel
 * (oh_, ow_), all declared before: declares `at`, its index from the
 * launch's first image, clamped into the image, and `inside`, 0 for a tap
 * in the padding. */
#define CONV_TAP(at, inside)                                                              \
    const int c_ = crs_ / CONV_RS, rs_ = crs_ - c_ * CONV_RS;                            \
    const int r_ = rs_ / CONV_S, s_ = rs_ - r_ * CONV_S;                                 \
    const int ih_ = oh_ * CONV_SH - CONV_PH + r_ * CONV_DH;                              \
    const int iw_ = ow_ * CONV_SW - CONV_PW + s_ * CONV_DW;                              \
    const int ihc_ = clamp(ih_, 0, CONV_H - 1), iwc_ = clamp(iw_, 0, CONV_W - 1);        \
    const int at = ((b_ * CONV_C + c_) * CONV_H + ihc_) * CONV_W + iwc_;                 \
    const int inside = ih_ == ihc_ && iw_ == iwc_

/* The tap the work item (ow, oh, z = b*CRS + crs) of an im2col launch
 * reads (`at`, `inside`: CONV_TAP) and `dst`, the entry of col
 * (C*R*S, nb*P) it goes to. */
#define IM2COL_TAP(at, inside, dst)                                                       \
    const int p_ = (int)get_global_id(0), oh_ = p_ / CONV_OW, ow_ = p_ - oh_ * CONV_OW;  \
    const int z_ = (int)get_global_id(2);                                                \
    const int b_ = z_ / CONV_CRS, crs_ = z_ - b_ * CONV_CRS;                             \
    CONV_TAP(at, inside);                                                                \
    const int dst = crs_ * CONV_LD(nb) + b_ * CONV_P + oh_ * CONV_OW + ow_

/* out[dst] = tap `at` of xs (store_t, from the launch's first image), 0 in
 * the padding; the load is unconditional (its address is clamped into the
 * image), so a CPU device vectorises it. 16-bit storage copies the value's
 * bits (+0 in the padding, 0x0000 in half and bf16): no conversion, and
 * 16-bit integer moves vectorise where half gathers may not. */
#if !defined(MPCL_FP32)
#define IM2COL_COPY(xs, out, at, inside, dst)                                             \
    do {                                                                                 \
        const ushort v_ = ((global const ushort *)(xs))[at];                             \
        ((global ushort *)(out))[dst] = (inside) ? v_ : (ushort)0;                       \
    } while (0)
#else
#define IM2COL_COPY(xs, out, at, inside, dst)                                             \
    do {                                                                                 \
        const float v_ = LOADF(xs, at);                                                  \
        STOREF(out, dst, (inside) ? v_ : 0.0f);                                          \
    } while (0)
#endif
/* The same for the _pairs kernels: x as uint words, the tap read through
 * the aligned 32-bit word that holds it. */
#define IM2COL_COPY_PAIRS(xw, x_off, out, at, inside, dst)                                \
    do {                                                                                 \
        const ushort v_ = WORD_HALF(xw, (x_off) + (uint)(at));                           \
        (out)[dst] = (inside) ? v_ : (ushort)0;                                          \
    } while (0)

/* col entry (c, r, s) x (b, oh, ow) = x[b, c, oh*sh - ph + r*dh,
 * ow*sw - pw + s*dw], zero outside the image. Items (OW, OH, nb*C*R*S),
 * one per entry. */
kernel void conv_im2col(global const store_t *x, /* (B, C, H, W), first image at x_off */
                        uint x_off,
                        global store_t *col,     /* (C*R*S, nb*P) */
                        int nb)
{
    IM2COL_TAP(at, inside, dst);
    IM2COL_COPY(x + x_off, col, at, inside, dst);
}

/* Values moved, not computed: 16-bit storage copies their bits. */
#if defined(MPCL_FP32)
typedef float conv_word_t;
#else
typedef ushort conv_word_t;
#endif

/* conv_im2col for layers of horizontal stride 1, by rows: work item
 * (crs, b) writes its image's P entries of col row crs, one output row
 * after another. With stride 1 an output row's taps are a contiguous run
 * of an input row (zeros where it leaves the image), so each row is a
 * contiguous copy that a compiler turns into vector loads and stores;
 * conv_im2col's items, one per entry, read through a clamped index that a
 * CPU device vectorising across work items can only gather (wide-cnn's
 * im2col a step: 19.4 ms gathered, 13.6-15.7 as rows on PoCL; 38.1 and
 * 12.6 on Intel's CPU runtime). Items
 * (C*R*S, nb), work-groups of one item (the host's launch). Same
 * arguments as conv_im2col. */
kernel void conv_im2col_rows(global const store_t *x, /* (B, C, H, W), first image at x_off */
                             uint x_off,
                             global store_t *col,     /* (C*R*S, nb*P) */
                             int nb)
{
    const int crs = (int)get_global_id(0), b = (int)get_global_id(1);
    const int c = crs / CONV_RS, rs = crs - c * CONV_RS;
    const int r = rs / CONV_S, s = rs - r * CONV_S;
    const int dw = s * CONV_DW - CONV_PW; /* iw = ow + dw */
    /* the output columns whose tap lies in the image: [lo, hi) */
    const int lo = min(CONV_OW, max(0, -dw));
    const int hi = max(lo, min(CONV_OW, CONV_W - dw));
    global const conv_word_t *restrict xs = (global const conv_word_t *)x;
    global conv_word_t *restrict d = (global conv_word_t *)col;
    const int src0 = (int)x_off + (b * CONV_C + c) * CONV_H * CONV_W + dw;
    int dst = crs * CONV_LD(nb) + b * CONV_P;
    for (int oh = 0; oh < CONV_OH; oh++, dst += CONV_OW) {
        const int ih = oh * CONV_SH - CONV_PH + r * CONV_DH;
        const int in_row = ih >= 0 && ih < CONV_H;
        const int l = in_row ? lo : CONV_OW, h = in_row ? hi : CONV_OW;
        const int src = src0 + ih * CONV_W;
        for (int ow = 0; ow < l; ow++)
            d[dst + ow] = (conv_word_t)0;
        for (int ow = l; ow < h; ow++)
            d[dst + ow] = xs[src + ow];
        for (int ow = h; ow < CONV_OW; ow++)
            d[dst + ow] = (conv_word_t)0;
    }
}

#if !defined(MPCL_FP32)
/* conv_im2col for 16-bit storage (fp16, fp16-storage, bf16) where x holds
 * an even number of elements: each tap is read as the aligned 32-bit word
 * that holds it, and the half of the word it is taken. A CPU device has
 * 32-bit gathers but no 16-bit ones. x's buffer starts 4-byte aligned and
 * ends on a word, so every word read is inside it. Same arguments as
 * conv_im2col. */
kernel void conv_im2col_pairs(global const uint *x, /* (B, C, H, W) as words, first image at x_off */
                              uint x_off,
                              global ushort *col,   /* (C*R*S, nb*P) */
                              int nb)
{
    IM2COL_TAP(at, inside, dst);
    IM2COL_COPY_PAIRS(x, x_off, col, at, inside, dst);
}
#endif

/* dx[b, c, h, w] = sum of the dcol entries that im2col read from
 * (b, c, h, w): a gather (no atomics), float sum. dcol is float in every
 * variant: the GEMM that makes it sums in float and writes float
 * (mpcl_gemm_raw_c32), so the R*S loads per element convert nothing (with
 * half dcol, PoCL's software conversions made this kernel 4x slower than
 * in fp32). Items (W, H, nb*C), one per input element. Every tap
 * (r, s) loads from a valid address (output 0 when no output reads (h, w)
 * through it) and selects 0. */
kernel void conv_col2im(global const float *dcol, /* (C*R*S, nb*P), a scratch buffer */
                        int nb,
                        global store_t *dx,         /* (B, C, H, W), first image at dx_off */
                        uint dx_off)
{
    const int w = (int)get_global_id(0), h = (int)get_global_id(1), z = (int)get_global_id(2);
    const int b = z / CONV_C, c = z - b * CONV_C;
    const int ld = CONV_LD(nb), base = c * CONV_RS * ld + b * CONV_P;
    acc_t acc = 0.0f;
#pragma unroll
    for (int r = 0; r < CONV_R; r++) {
        const int th = h + CONV_PH - r * CONV_DH;
        const int oh = th / CONV_SH;
        const int okh = th >= 0 && oh * CONV_SH == th && oh < CONV_OH;
        const int ohc = okh ? oh : 0;
#pragma unroll
        for (int s = 0; s < CONV_S; s++) {
            const int tw = w + CONV_PW - s * CONV_DW;
            const int ow = tw / CONV_SW;
            const int ok = okh && tw >= 0 && ow * CONV_SW == tw && ow < CONV_OW;
            const int owc = ok ? ow : 0;
            const float v = dcol[base + (r * CONV_S + s) * ld + ohc * CONV_OW + owc];
            acc += ok ? v : 0.0f;
        }
    }
    STOREF(dx + dx_off, (z * CONV_H + h) * CONV_W + w, acc);
}

/* y[b, k, p] = yt[k, b*P + p] + bias[k]: the GEMM's output (K, nb*P)
 * back to NCHW, with the bias added (has_bias 0: the bias is read at 0 and
 * not used). Items (P, K, nb). */
#define CONV_GATHER_OUT(LD_YT, LD_BIAS)                                                    \
    const int p = (int)get_global_id(0), k = (int)get_global_id(1), b = (int)get_global_id(2); \
    const float bv = LD_BIAS(bias, has_bias ? k : 0);                                     \
    const float v = LD_YT(yt, k * CONV_LD(nb) + b * CONV_P + p) + (has_bias ? bv : 0.0f); \
    STOREF(y + y_off, (b * CONV_K + k) * CONV_P + p, v)
#define CONV_LD_F32(p, i) ((p)[i])

kernel void conv_gather_out(global const store_t *yt,   /* (K, nb*P) */
                            global const store_t *bias, /* (K) */
                            uint has_bias,
                            global store_t *y,          /* (B, K, OH, OW), first image at y_off */
                            uint y_off,
                            int nb)
{
    CONV_GATHER_OUT(LOADF, LOADF);
}

/* conv_gather_out from a float yt and bias (the 16-bit modes' float
 * pipeline, src/ops/conv.c): y rounded to the storage type once. */
kernel void conv_gather_out_f32(global const float *yt,   /* (K, nb*P) */
                                global const float *bias, /* (K) */
                                uint has_bias,
                                global store_t *y,        /* (B, K, OH, OW), first image at y_off */
                                uint y_off,
                                int nb)
{
    CONV_GATHER_OUT(CONV_LD_F32, CONV_LD_F32);
}

/* dyt[k, b*P + p] = dy[b, k, p]: nb images of dy as the (K, nb*P) operand
 * of the weight gradient's GEMM. Items (P, K, nb). */
kernel void conv_scatter_dy(global const store_t *dy, /* (B, K, OH, OW), first image at dy_off */
                            uint dy_off,
                            global store_t *dyt,      /* (K, nb*P) */
                            int nb)
{
    const int p = (int)get_global_id(0), k = (int)get_global_id(1), b = (int)get_global_id(2);
    dy += dy_off;
    dyt[k * CONV_LD(nb) + b * CONV_P + p] = dy[(b * CONV_K + k) * CONV_P + p]; /* a copy */
}

/* The transposed operands of the weight gradient's GEMM,
 * dw (K, C*R*S) += dytt (nb*P, K)^T colt (nb*P, C*R*S): both stored with
 * the summed index (b, p) as rows, which is the layout GEMM kernels of the
 * outer-product kind (CLBlast's Xgemm) read without a copy; the
 * untransposed pair (dyt, col) made CLBlast transpose the whole column
 * matrix at every call. */

/* The tap item (crs, p, b) of a conv_im2col_t launch reads (`at`,
 * `inside`: CONV_TAP) and `dst`, the entry of colt (nb*P, C*R*S) it goes
 * to. */
#define IM2COLT_TAP(at, inside, dst)                                                      \
    const int crs_ = (int)get_global_id(0), p_ = (int)get_global_id(1);                  \
    const int b_ = (int)get_global_id(2);                                                \
    const int oh_ = p_ / CONV_OW, ow_ = p_ - oh_ * CONV_OW;                              \
    CONV_TAP(at, inside);                                                                \
    const int dst = (b_ * CONV_P + p_) * CONV_CRS + crs_

/* colt entry (b, oh, ow) x (c, r, s) = col entry (c, r, s) x (b, oh, ow).
 * Items (C*R*S, P, nb), one per entry; same arguments as conv_im2col. */
kernel void conv_im2col_t(global const store_t *x, /* (B, C, H, W), first image at x_off */
                          uint x_off,
                          global store_t *colt,     /* (nb*P, C*R*S) */
                          int nb)
{
    IM2COLT_TAP(at, inside, dst);
    IM2COL_COPY(x + x_off, colt, at, inside, dst);
}

#if !defined(MPCL_FP32)
/* conv_im2col_t reading 16-bit x as aligned 32-bit words, as
 * conv_im2col_pairs does (x holds an even number of elements). */
kernel void conv_im2col_t_pairs(global const uint *x, /* (B, C, H, W) as words, first image at x_off */
                                uint x_off,
                                global ushort *colt,  /* (nb*P, C*R*S) */
                                int nb)
{
    IM2COLT_TAP(at, inside, dst);
    IM2COL_COPY_PAIRS(x, x_off, colt, at, inside, dst);
}
#endif

/* dytt[b*P + p, k] = dy[b, k, p]. Items (K, P, nb). */
kernel void conv_scatter_dy_t(global const store_t *dy, /* (B, K, OH, OW), first image at dy_off */
                              uint dy_off,
                              global store_t *dytt,     /* (nb*P, K) */
                              int nb)
{
    const int k = (int)get_global_id(0), p = (int)get_global_id(1), b = (int)get_global_id(2);
    dy += dy_off;
    dytt[(b * CONV_P + p) * CONV_K + k] = dy[(b * CONV_K + k) * CONV_P + p]; /* a copy */
}

/* dw[k, j] += dwt[j, k]: the weight gradient that im2col-dwt's GEMM summed
 * transposed, dwt (C*R*S, K) = col (C*R*S, nb*P) dytt (nb*P, K), added to
 * dw (K, C*R*S). Both float (dw is the float pipeline's copy in the
 * 16-bit modes). Items (C*R*S, K). */
kernel void conv_add_dwt(global float *dw, global const float *dwt)
{
    const int j = (int)get_global_id(0), k = (int)get_global_id(1);
    dw[k * CONV_CRS + j] += dwt[j * CONV_K + k];
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
 * of L items, L a power of two <= CONV_WG: the host takes the largest the
 * kernel and device allow (1 works). */
kernel void conv_bias_grad(global const store_t *dy, /* (B, K, OH, OW) */
                           global store_t *db,       /* (K) */
                           int nb)
{
    local acc_t part[CONV_WG];
    const int k = (int)get_group_id(0), lid = (int)get_local_id(0);
    acc_t acc = 0.0f;
    if (k < CONV_K)
        for (int j = lid; j < nb * CONV_P; j += (int)get_local_size(0)) {
            const int b = j / CONV_P, p = j - b * CONV_P;
            acc += LOADF(dy, (b * CONV_K + k) * CONV_P + p);
        }
    acc = conv_group_sum(part, acc);
    if (lid == 0 && k < CONV_K)
        STOREF(db, k, LOADF(db, k) + acc);
}
