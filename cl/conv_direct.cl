/* cl/conv_direct.cl — direct convolution for skinny layers (few input
 * channels, small kernels), built once per layer geometry: the host
 * (src/ops/conv.c) passes every size as a -D define, so loops over the
 * kernel window unroll, bounds that padding cannot reach fold away, and
 * indices need no division by a run-time value. Only the batch size is a
 * run-time argument.
 *
 * Letters: B batch (nb in a launch), C input channels, K output channels,
 * H W input height and width, OH OW output height and width, R S kernel
 * height and width. Every sum accumulates in float (acc_t); values are
 * read and written in the storage type through LOADF / STOREF.
 *
 * Defines (all ints): CONV_C, CONV_H, CONV_W, CONV_K, CONV_R, CONV_S,
 * CONV_OH, CONV_OW, CONV_SH, CONV_SW (stride), CONV_PH, CONV_PW (padding),
 * CONV_DH, CONV_DW (dilation); CONV_KB, output channels per forward work
 * item (a divisor of K). Without them (offline
 * compiles in the tests) the seed CNN's first layer is used.
 *
 * The forward and input-gradient kernels are launched over exactly their
 * items (mpcl_launch_rows) and have no bounds checks, no early return and
 * no load or store under a condition: a CPU device (PoCL) then vectorises
 * each work-group across neighbouring items along a row, which it does
 * not do otherwise. A tap that falls in the padding reads a clamped,
 * valid address and selects 0. */

#ifndef CONV_C
#define CONV_C 1
#define CONV_H 28
#define CONV_W 28
#define CONV_K 10
#define CONV_R 5
#define CONV_S 5
#define CONV_OH 24
#define CONV_OW 24
#define CONV_SH 1
#define CONV_SW 1
#define CONV_PH 0
#define CONV_PW 0
#define CONV_DH 1
#define CONV_DW 1
#define CONV_KB 10
#endif

/* Fully unrolled loops make a work item straight-line code; for large
 * windows (reached only when MPCL_CONV_ALGO forces the direct path) the
 * loops stay rolled to keep the program small. */
#if CONV_K * CONV_C * CONV_R * CONV_S <= 1024
#define CONV_UNROLL _Pragma("unroll")
#else
#define CONV_UNROLL
#endif

#define CONV_RS (CONV_R * CONV_S)
#define CONV_CRS (CONV_C * CONV_RS)
#define CONV_KCRS (CONV_K * CONV_CRS)
#define CONV_KCR (CONV_K * CONV_C * CONV_R)
#define CONV_KBLOCKS (CONV_K / CONV_KB)

/* Row / column i clamped into the image, when padding can take it out. */
#define CONV_CLAMP_H(i) (CONV_PH > 0 ? clamp((i), 0, CONV_H - 1) : (i))
#define CONV_CLAMP_W(i) (CONV_PW > 0 ? clamp((i), 0, CONV_W - 1) : (i))

/* Eight values from p + i as float8. */
#if defined(MPCL_FP16_STORAGE)
#define LOADF8(p, i) LOAD_HALF8(p, i)
#elif defined(MPCL_FP16)
#define LOADF8(p, i) convert_float8(vload8(0, (p) + (i)))
#elif defined(MPCL_BF16)
#define LOADF8(p, i) as_float8(convert_uint8(vload8(0, (p) + (i))) << 16)
#else
#define LOADF8(p, i) vload8(0, (p) + (i))
#endif

/* The forward kernel's input as it reads it: in every 16-bit variant
 * (fp16, fp16-storage, bf16) the host passes a float copy (src/ops/conv.c,
 * converted once per call): every tap is read by R*S work items, so a
 * conversion at every read would cost more than the products, and a
 * clamped (padded) 16-bit gather is not vectorised where a 32-bit one is
 * (measured on Intel's CPU runtime in fp16: the forward took 1.6x fp32's
 * time reading half taps). */
#if !defined(MPCL_FP32)
typedef float xin_t;
#define LOADX(p, i) ((p)[i])
#else
typedef store_t xin_t;
#define LOADX(p, i) LOADF(p, i)
#endif

/* The weights and the bias as float, for the forward and input-gradient
 * kernels of the half variants: out[0, KCRS) = w, out[KCRS, KCRS + K) =
 * bias (0 without one). Every work item of those kernels reads every
 * weight it uses, the same address across a work-group; read from a float
 * buffer, that is one broadcast operand per multiply-add, where a half
 * weight costs a load, a broadcast and a conversion per use on a CPU
 * device that vectorises across work items (measured: the forward ran
 * 3-4x slower than in fp32 on such a device). The conversion is exact, so
 * results are the same. */
kernel void conv_direct_params_f32(global const store_t *w,    /* (K, C, R, S) */
                                   global const store_t *bias, /* (K), or any buffer of K */
                                   uint has_bias,              /* 0: no bias (bias unused) */
                                   global float *out)          /* (KCRS + K) */
{
    const int i = (int)get_global_id(0);
    if (i < CONV_KCRS)
        out[i] = LOADF(w, i);
    else if (i < CONV_KCRS + CONV_K)
        out[i] = has_bias ? LOADF(bias, i - CONV_KCRS) : 0.0f;
}

/* Forward: y[b, k, oh, ow] = bias[k] + sum over c, r, s of
 * x[b, c, oh*SH - PH + r*DH, ow*SW - PW + s*DW] w[k, c, r, s].
 * Work item (ow, oh, b * KBLOCKS + kb) computes the KB output channels
 * from k0 = kb * KB, so each input tap is loaded once for KB products. */
kernel void conv_direct_forward(global const xin_t *restrict x,      /* (B, C, H, W) */
                                global const float *restrict w,      /* (K, C, R, S) as float */
                                global const float *restrict bias,   /* (K) as float from bias_at,
                                                                        or any buffer of K */
                                uint bias_at,               /* index of bias[0] in bias */
                                uint has_bias,              /* 0: no bias (bias is read, unused) */
                                global store_t *restrict y) /* (B, K, OH, OW) */
{
    const int ow = (int)get_global_id(0), oh = (int)get_global_id(1), z = (int)get_global_id(2);
    const int b = z / CONV_KBLOCKS, k0 = (z - b * CONV_KBLOCKS) * CONV_KB;
    acc_t acc[CONV_KB];
    CONV_UNROLL
    for (int kk = 0; kk < CONV_KB; kk++) { /* an unconditional load, then a select */
        const float bv = bias[bias_at + k0 + kk];
        acc[kk] = has_bias ? bv : 0.0f;
    }
    const int h0 = oh * CONV_SH - CONV_PH, w0 = ow * CONV_SW - CONV_PW;
    CONV_UNROLL
    for (int c = 0; c < CONV_C; c++) {
        CONV_UNROLL
        for (int r = 0; r < CONV_R; r++) {
            const int ih = h0 + r * CONV_DH, ihc = CONV_CLAMP_H(ih);
            const int row = ((b * CONV_C + c) * CONV_H + ihc) * CONV_W;
            CONV_UNROLL
            for (int s = 0; s < CONV_S; s++) {
                const int iw = w0 + s * CONV_DW, iwc = CONV_CLAMP_W(iw);
                float v = LOADX(x, row + iwc);
#if CONV_PH > 0 || CONV_PW > 0
                v = ih == ihc && iw == iwc ? v : 0.0f;
#endif
                const int wi = c * CONV_RS + r * CONV_S + s;
                CONV_UNROLL
                for (int kk = 0; kk < CONV_KB; kk++)
                    acc[kk] += v * w[(k0 + kk) * CONV_CRS + wi];
            }
        }
    }
    CONV_UNROLL
    for (int kk = 0; kk < CONV_KB; kk++)
        STOREF(y, ((b * CONV_K + k0 + kk) * CONV_OH + oh) * CONV_OW + ow, acc[kk]);
}

/* Input gradient, a gather per input element (no atomics):
 * dx[b, c, h, w] = sum over k, r, s with h = oh*SH - PH + r*DH and
 * w = ow*SW - PW + s*DW of dy[b, k, oh, ow] w[k, c, r, s].
 * Work item (iw, ih, b * C + c). A tap (r, s) that no output reaches
 * reads a clamped address and selects 0. */
kernel void conv_direct_backward_data(global const store_t *restrict dy, /* (B, K, OH, OW) */
                                      global const float *restrict w,    /* (K, C, R, S) as float */
                                      global store_t *restrict dx)       /* (B, C, H, W) */
{
    const int iw = (int)get_global_id(0), ih = (int)get_global_id(1), z = (int)get_global_id(2);
    const int b = z / CONV_C, c = z - b * CONV_C;
    acc_t acc = 0.0f;
    CONV_UNROLL
    for (int r = 0; r < CONV_R; r++) {
        const int th = ih + CONV_PH - r * CONV_DH;
        const int oh = clamp(th, 0, (CONV_OH - 1) * CONV_SH) / CONV_SH;
        const int hit_h = oh * CONV_SH == th; /* th in range and on the stride */
        CONV_UNROLL
        for (int s = 0; s < CONV_S; s++) {
            const int tw = iw + CONV_PW - s * CONV_DW;
            const int ow = clamp(tw, 0, (CONV_OW - 1) * CONV_SW) / CONV_SW;
            const int hit = hit_h && ow * CONV_SW == tw;
            acc_t t = 0.0f;
            CONV_UNROLL
            for (int k = 0; k < CONV_K; k++)
                t += LOADF(dy, ((b * CONV_K + k) * CONV_OH + oh) * CONV_OW + ow) *
                     w[(k * CONV_C + c) * CONV_RS + r * CONV_S + s];
            acc += hit ? t : 0.0f;
        }
    }
    STOREF(dx, ((b * CONV_C + c) * CONV_H + ih) * CONV_W + iw, acc);
}

/* dy[yrow + ow] x[xrow + ow*SW] summed over the output columns [lo, hi):
 * eight columns at a time in float8 where the columns are contiguous
 * (stride 1), the rest one by one. */
static acc_t conv_row_dot(global const store_t *dy, int yrow, global const store_t *x, int xrow,
                          const int lo, const int hi)
{
    acc_t a = 0.0f;
    int ow = lo;
    if (CONV_SW == 1) {
        float8 v = (float8)(0.0f);
        for (; ow + 8 <= hi; ow += 8)
            v += LOADF8(dy, yrow + ow) * LOADF8(x, xrow + ow);
        a = ((v.s0 + v.s1) + (v.s2 + v.s3)) + ((v.s4 + v.s5) + (v.s6 + v.s7));
    }
    for (; ow < hi; ow++)
        a += LOADF(dy, yrow + ow) * LOADF(x, xrow + ow * CONV_SW);
    return a;
}

/* The output columns [lo, hi) whose tap s lands inside the image: iw =
 * ow * SW - PW + s * DW in [0, W). Constants for a constant s. */
#define CONV_OW_LO(s) \
    ((s) * CONV_DW - CONV_PW >= 0 ? 0 : (CONV_PW - (s) * CONV_DW + CONV_SW - 1) / CONV_SW)
#define CONV_OW_HI(s)                                                                    \
    ((s) * CONV_DW - CONV_PW > CONV_W - 1                                                \
         ? 0                                                                             \
         : min(CONV_OW, (CONV_W - 1 + CONV_PW - (s) * CONV_DW) / CONV_SW + 1))

/* Weight (and bias) gradient, first pass: partial sums over a chunk of cb
 * images. Work item (g, chunk): for g = (k * C + c) * R + r < KCR it sums,
 * for s = 0..S-1, dy[b, k, oh, ow] x[b, c, oh*SH - PH + r*DH,
 * ow*SW - PW + s*DW] over the chunk's images and the (oh, ow) whose tap
 * lands inside the image, into part[chunk, (k, c, r, s)]; for g = KCR + k
 * (only launched with a bias) it sums dy[b, k] into part[chunk, KCRS + k].
 * Each row is a dot product along contiguous memory, in float8. */
kernel void conv_direct_filter_partial(global const store_t *restrict dy, /* (B, K, OH, OW) */
                                       global const store_t *restrict x,  /* (B, C, H, W) */
                                       global float *restrict part,       /* (chunks, KCRS + K) */
                                       int nb, int cb)
{
    const int g = (int)get_global_id(0), chunk = (int)get_global_id(1);
    const int b0 = chunk * cb, b1 = min(nb, b0 + cb);
    global float *out = part + chunk * (CONV_KCRS + CONV_K);
    if (g >= CONV_KCR) { /* the bias gradient of channel g - KCR */
        const int k = g - CONV_KCR;
        acc_t acc = 0.0f;
        for (int b = b0; b < b1; b++) {
            const int plane = (b * CONV_K + k) * CONV_OH * CONV_OW;
            for (int oh = 0; oh < CONV_OH; oh++) {
                int ow = 0;
                float8 v = (float8)(0.0f);
                for (; ow + 8 <= CONV_OW; ow += 8)
                    v += LOADF8(dy, plane + oh * CONV_OW + ow);
                acc_t a = ((v.s0 + v.s1) + (v.s2 + v.s3)) + ((v.s4 + v.s5) + (v.s6 + v.s7));
                for (; ow < CONV_OW; ow++)
                    a += LOADF(dy, plane + oh * CONV_OW + ow);
                acc += a;
            }
        }
        out[CONV_KCRS + k] = acc;
        return;
    }
    const int kc = g / CONV_R, r = g - kc * CONV_R;
    const int k = kc / CONV_C, c = kc - k * CONV_C;
    /* the output rows whose tap r lands inside the image: ih = oh * SH + t0 */
    const int t0 = r * CONV_DH - CONV_PH;
    const int oh_lo = t0 >= 0 ? 0 : (-t0 + CONV_SH - 1) / CONV_SH;
    const int oh_hi = t0 > CONV_H - 1 ? 0 : min(CONV_OH, (CONV_H - 1 - t0) / CONV_SH + 1);
    acc_t acc[CONV_S];
    CONV_UNROLL
    for (int s = 0; s < CONV_S; s++)
        acc[s] = 0.0f;
    for (int b = b0; b < b1; b++) {
        const int yplane = (b * CONV_K + k) * CONV_OH;
        const int xplane = (b * CONV_C + c) * CONV_H;
        for (int oh = oh_lo; oh < oh_hi; oh++) {
            const int yrow = (yplane + oh) * CONV_OW;
            const int xrow = (xplane + oh * CONV_SH + t0) * CONV_W - CONV_PW;
            CONV_UNROLL
            for (int s = 0; s < CONV_S; s++)
                acc[s] += conv_row_dot(dy, yrow, x, xrow + s * CONV_DW, CONV_OW_LO(s),
                                       CONV_OW_HI(s));
        }
    }
    CONV_UNROLL
    for (int s = 0; s < CONV_S; s++)
        out[g * CONV_S + s] = acc[s];
}

/* Second pass: dw[e] += the sum over chunks of part[chunk, e] for
 * e < KCRS, and db[e - KCRS] += the same for e >= KCRS (only launched
 * with a bias). One item per entry; dw and db are rounded to the storage
 * type once. */
kernel void conv_direct_filter_final(global const float *restrict part, /* (chunks, KCRS + K) */
                                     global store_t *restrict dw,       /* (K, C, R, S) */
                                     global store_t *restrict db,       /* (K) */
                                     int n, int chunks)
{
    const int e = (int)get_global_id(0);
    if (e >= n)
        return;
    acc_t acc = 0.0f;
    for (int ch = 0; ch < chunks; ch++)
        acc += part[ch * (CONV_KCRS + CONV_K) + e];
    if (e < CONV_KCRS)
        STOREF(dw, e, LOADF(dw, e) + acc);
    else
        STOREF(db, e - CONV_KCRS, LOADF(db, e - CONV_KCRS) + acc);
}
