/* cl/pool.cl — 2-D max and average pooling, forward and backward.
 *
 * Dimension letters: B batch, C channels, H W input height and width,
 * OH OW output height and width, KH KW window height and width.
 *
 * Built once per geometry: src/ops/pool.c passes the sizes as -D defines
 * (P_H, P_W, P_OH, P_OW, P_KH, P_KW, P_SH, P_SW stride, P_PH, P_PW
 * padding, P_R planes an item), so window loops unroll and indices need
 * no division by a run-time value. Work item (w, h, p) of a 3-D range of
 * exactly the output (forward) or input (backward) columns, rows and
 * B*C / P_R plane groups (mpcl_launch_rows) does column w of row h in
 * planes p P_R ... p P_R + P_R - 1 (P_R divides B*C; more than one plane an
 * item makes work-groups big enough that their start-up cost, large on
 * CPU runtimes, does not dominate): no bounds checks, no early return and no load or
 * store under a condition, so a CPU device vectorises a work-group along
 * its rows; window taps in the padding read a clamped address and are
 * selected away. Without the defines (offline compiles in the tests) the
 * seed CNN's 2x2 pooling of 24x24 is used.
 * Windows start at (oh*stride_h - pad_h, ow*stride_w - pad_w). The host
 * keeps pad < window, so every window holds at least one input pixel.
 * Backward kernels gather: one work item per input pixel sums the outputs
 * whose windows cover it (windows overlap when stride < window), in float,
 * with no atomics and no races.
 *
 * Indices are split with one division and a multiply-subtract, never a
 * `/` and `%` of the same operands (oclgrind 21.10 rejects the `freeze`
 * LLVM makes of such pairs). */

#ifndef P_H
#define P_H 24
#define P_W 24
#define P_OH 12
#define P_OW 12
#define P_KH 2
#define P_KW 2
#define P_SH 2
#define P_SW 2
#define P_PH 0
#define P_PW 0
#define P_R 2
#endif

/* fp16-storage, windows two pixels wide at stride 2 without column padding
 * on rows of even width (2x2 pooling): a window row's two halves are read,
 * and max pooling's backward pass writes them, as one 32-bit word, so that
 * neighbouring work items touch neighbouring words. A CPU device vectorises
 * that across a work-group; two 16-bit accesses two elements apart it does
 * not (PoCL 3.1: 4x slower than fp32). Halves are 2-byte aligned and a
 * buffer's start is aligned to far more, so word (i / 2) holds elements i
 * and i + 1 for even i. */
#if defined(MPCL_FP16_STORAGE) && P_KW == 2 && P_SW == 2 && P_PW == 0 && P_W % 2 == 0
#define P_PAIRS 1
#ifdef __ENDIAN_LITTLE__
#define P_LO(u) ((ushort)((u) & 0xffffu)) /* the element at the even index */
#define P_HI(u) ((ushort)((u) >> 16))
#define P_PACK(lo, hi) ((uint)(lo) | ((uint)(hi) << 16))
#else
#define P_LO(u) ((ushort)((u) >> 16))
#define P_HI(u) ((ushort)((u) & 0xffffu))
#define P_PACK(lo, hi) ((uint)(hi) | ((uint)(lo) << 16))
#endif
#else
#define P_PAIRS 0
#endif

/* Windows two columns wide without column padding (every window's pair of
 * columns lies inside the row): the max-pool forward reads each row's pair
 * as one 2-vector. Strided single-element loads of half values are
 * gathered element by element on a CPU device that vectorises across work
 * items (measured: 1.5x slower than in fp32); a 2-vector per item is a
 * contiguous load and a de-interleave. */
#if P_KW == 2 && P_PW == 0
#if defined(MPCL_FP16)
#define POOL_LOAD2(p, i) convert_float2(vload2(0, (p) + (i)))
#elif defined(MPCL_FP32)
#define POOL_LOAD2(p, i) vload2(0, (p) + (i))
#endif
#endif

/* At most this many windows cover one input row (column). */
#define P_NH ((P_KH + P_SH - 1) / P_SH)
#define P_NW ((P_KW + P_SW - 1) / P_SW)

/* Input row / column i clamped into the image when padding can take it out. */
#define P_CLAMP_H(i) (P_PH > 0 ? clamp((i), 0, P_H - 1) : (i))
#define P_CLAMP_W(i) (P_PW > 0 ? clamp((i), 0, P_W - 1) : (i))

/* The first and last output index (oh) whose window covers input row i:
 * oh*st - pad <= i <= oh*st - pad + k - 1, clamped to [0, n); lo > hi
 * when none does. */
static void pool_cover(int i, int k, int st, int pad, int n, int *lo, int *hi)
{
    const int t = i + pad - k + 1; /* oh*st >= t */
    *lo = t <= 0 ? 0 : (t + st - 1) / st;
    *hi = min((i + pad) / st, n - 1);
}

/* y = max over the window (padding never wins); argmax = ih*W + iw of the
 * first maximum in row-major window order. A NaN in the window wins (the
 * first one), so overflow shows through. Compared in float: exact for half.
 * Every window holds at least one input pixel (pad < window). */
kernel void pool_max_forward(global const store_t *restrict x, /* (B, C, H, W) */
                             global store_t *restrict y,       /* (B, C, OH, OW) */
                             global int *restrict argmax)      /* (B, C, OH, OW) */
{
#pragma unroll
    for (int pr = 0; pr < P_R; pr++) {
        const int plane = (int)get_global_id(2) * P_R + pr;
        global const store_t *restrict xp = x + plane * P_H * P_W;
        const int ow = (int)get_global_id(0), oh = (int)get_global_id(1);
        const int id = (plane * P_OH + oh) * P_OW + ow;
        const int h0 = oh * P_SH - P_PH, w0 = ow * P_SW - P_PW;
#if P_PAIRS
        /* compared as halves, without converting: an integer key that orders
         * halves as their values (-0 = +0, infinities at the ends), NaN tested
         * apart, the same decisions as the float comparisons below; the
         * winner's bits are stored, a NaN made quiet: the bits the float path
         * stores */
        int kbest = 0, nbest = 0;
        uint bbest = 0;
#else
        float best = 0.0f;
#endif
        int at = -1;
#pragma unroll
        for (int r = 0; r < P_KH; r++) {
            const int ih = h0 + r, ihc = P_CLAMP_H(ih);
#if P_PAIRS
            const uint pair = ((global const uint *)xp)[ihc * (P_W / 2) + ow]; /* w0 = 2 ow */
#elif defined(POOL_LOAD2)
            /* the window's two columns of this row, as one 2-vector */
            const float2 v2 = POOL_LOAD2(xp, ihc * P_W + w0);
#endif
#pragma unroll
            for (int s = 0; s < P_KW; s++) {
                const int iw = w0 + s, iwc = P_CLAMP_W(iw);
#if P_PAIRS
                const uint b = s == 0 ? P_LO(pair) : P_HI(pair);
                const int mag = (int)(b & 0x7fffu);
                const int k = (b & 0x8000u) ? -mag : mag, n = mag > 0x7c00;
                const int take = ih == ihc && iw == iwc && (at < 0 || (!nbest && (n || k > kbest)));
                kbest = take ? k : kbest;
                nbest = take ? n : nbest;
                bbest = take ? b : bbest;
#else
#ifdef POOL_LOAD2
                const float v = s == 0 ? v2.s0 : v2.s1;
#else
                const float v = LOADF(xp, ihc * P_W + iwc);
#endif
                const int take = ih == ihc && iw == iwc &&
                                 (at < 0 || v > best || (v != v && best == best));
                best = take ? v : best;
#endif
                at = take ? ihc * P_W + iwc : at;
            }
        }
#if P_PAIRS
        y[id] = (ushort)(nbest ? bbest | 0x0200u : bbest);
#else
        STOREF(y, id, best);
#endif
        argmax[id] = at;
    }
}

/* dx[b, c, h, w] = sum of dy over the windows whose argmax is (h, w), in
 * row-major window order. */
kernel void pool_max_backward(global const store_t *restrict dy, /* (B, C, OH, OW) */
                              global const int *restrict argmax, /* (B, C, OH, OW) */
                              global store_t *restrict dx)       /* (B, C, H, W) */
{
#pragma unroll
    for (int pr = 0; pr < P_R; pr++) {
        const int plane = (int)get_global_id(2) * P_R + pr;
        const int iw = (int)get_global_id(0), ih = (int)get_global_id(1);
        const int id = (plane * P_H + ih) * P_W + iw;
        const int me = ih * P_W + iw, base = plane * P_OH * P_OW;
        int oh0, oh1, ow0, ow1;
        pool_cover(ih, P_KH, P_SH, P_PH, P_OH, &oh0, &oh1);
        pool_cover(iw, P_KW, P_SW, P_PW, P_OW, &ow0, &ow1);
        acc_t acc = 0.0f;
#pragma unroll
        for (int j = 0; j < P_NH; j++)
#pragma unroll
            for (int i = 0; i < P_NW; i++) {
                const int oh = oh0 + j, ow = ow0 + i;
                const int o = base + min(oh, P_OH - 1) * P_OW + min(ow, P_OW - 1);
                const float g = LOADF(dy, o);
                acc += oh <= oh1 && ow <= ow1 && argmax[o] == me ? g : 0.0f;
            }
        STOREF(dx, id, acc);
    }
}

/* pool_max_backward when the windows tile the input exactly (window =
 * stride, no padding, H = OH*SH, W = OW*SW): every input pixel lies in
 * exactly one window, so work item (ow, oh, plane) writes its window's
 * pixels of dx: dy where the argmax is, 0 elsewhere. */
kernel void pool_max_backward_tiled(global const store_t *restrict dy, /* (B, C, OH, OW) */
                                    global const int *restrict argmax, /* (B, C, OH, OW) */
                                    global store_t *restrict dx)       /* (B, C, H, W) */
{
#pragma unroll
    for (int pr = 0; pr < P_R; pr++) {
        const int plane = (int)get_global_id(2) * P_R + pr;
        const int ow = (int)get_global_id(0), oh = (int)get_global_id(1);
        const int o = (plane * P_OH + oh) * P_OW + ow;
        const int at = argmax[o];
#if P_PAIRS
        /* dy's own bits, or +0: the same halves the float path stores */
        const ushort g = dy[o];
#pragma unroll
        for (int r = 0; r < P_KH; r++) {
            const int ih = oh * P_SH + r, iw = ow * P_SW;
            ((global uint *)dx)[(plane * P_H + ih) * (P_W / 2) + ow] =
                P_PACK(at == ih * P_W + iw ? g : (ushort)0, at == ih * P_W + iw + 1 ? g : (ushort)0);
        }
#else
        const float g = LOADF(dy, o);
#pragma unroll
        for (int r = 0; r < P_KH; r++)
#pragma unroll
            for (int s = 0; s < P_KW; s++) {
                const int ih = oh * P_SH + r, iw = ow * P_SW + s;
                STOREF(dx, (plane * P_H + ih) * P_W + iw, at == ih * P_W + iw ? g : 0.0f);
            }
#endif
    }
}

/* y = (sum over the window) / (KH*KW): padding counts as zeros (PyTorch's
 * count_include_pad=True). */
kernel void pool_avg_forward(global const store_t *restrict x, /* (B, C, H, W) */
                             global store_t *restrict y)       /* (B, C, OH, OW) */
{
#pragma unroll
    for (int pr = 0; pr < P_R; pr++) {
        const int plane = (int)get_global_id(2) * P_R + pr;
        global const store_t *restrict xp = x + plane * P_H * P_W;
        const int ow = (int)get_global_id(0), oh = (int)get_global_id(1);
        const int id = (plane * P_OH + oh) * P_OW + ow;
        const int h0 = oh * P_SH - P_PH, w0 = ow * P_SW - P_PW;
        acc_t acc = 0.0f;
#pragma unroll
        for (int r = 0; r < P_KH; r++) {
            const int ih = h0 + r, ihc = P_CLAMP_H(ih);
#pragma unroll
            for (int s = 0; s < P_KW; s++) {
                const int iw = w0 + s, iwc = P_CLAMP_W(iw);
                const float v = LOADF(xp, ihc * P_W + iwc);
                acc += ih == ihc && iw == iwc ? v : 0.0f;
            }
        }
        STOREF(y, id, acc / (float)(P_KH * P_KW));
    }
}

/* dx[b, c, h, w] = (sum of dy over the windows that cover (h, w)) / (KH*KW). */
kernel void pool_avg_backward(global const store_t *restrict dy, /* (B, C, OH, OW) */
                              global store_t *restrict dx)       /* (B, C, H, W) */
{
#pragma unroll
    for (int pr = 0; pr < P_R; pr++) {
        const int plane = (int)get_global_id(2) * P_R + pr;
        const int iw = (int)get_global_id(0), ih = (int)get_global_id(1);
        const int id = (plane * P_H + ih) * P_W + iw;
        int oh0, oh1, ow0, ow1;
        pool_cover(ih, P_KH, P_SH, P_PH, P_OH, &oh0, &oh1);
        pool_cover(iw, P_KW, P_SW, P_PW, P_OW, &ow0, &ow1);
        const int base = plane * P_OH * P_OW;
        acc_t acc = 0.0f;
#pragma unroll
        for (int j = 0; j < P_NH; j++)
#pragma unroll
            for (int i = 0; i < P_NW; i++) {
                const int oh = oh0 + j, ow = ow0 + i;
                const float g = LOADF(dy, base + min(oh, P_OH - 1) * P_OW + min(ow, P_OW - 1));
                acc += oh <= oh1 && ow <= ow1 ? g : 0.0f;
            }
        STOREF(dx, id, acc / (float)(P_KH * P_KW));
    }
}
