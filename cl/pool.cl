/* cl/pool.cl — 2-D max and average pooling, forward and backward.
 *
 * Dimension letters: B batch, C channels, H W input height and width,
 * OH OW output height and width, KH KW window height and width.
 *
 * Every kernel ends with the geometry (POOL_GEO_PARAMS, set by
 * src/ops/pool.c): B*C (planes), H, W, OH, OW, KH, KW, stride_h, stride_w,
 * pad_h, pad_w.
 * Windows start at (oh*stride_h - pad_h, ow*stride_w - pad_w). The host
 * keeps pad < window, so every window holds at least one input pixel.
 * Backward kernels gather: one work item per input pixel sums the outputs
 * whose windows cover it (windows overlap when stride < window), in float,
 * with no atomics and no races.
 *
 * Indices are split with one division and a multiply-subtract, never a
 * `/` and `%` of the same operands (oclgrind 21.10 rejects the `freeze`
 * LLVM makes of such pairs). */

/* The geometry parameters every kernel ends with, in this order. (Scalars,
 * not one int16: oclgrind 21.10's uninitialised-value checker crashes on the
 * shufflevector LLVM makes of arithmetic on lanes of a vector argument.) */
#define POOL_GEO_PARAMS \
    const int P_NP, const int P_H, const int P_W, const int P_OH, const int P_OW, \
    const int P_KH, const int P_KW, const int P_SH, const int P_SW, const int P_PH, \
    const int P_PW

/* The first and last output index (oh) whose window covers input row i:
 * oh*st - pad <= i <= oh*st - pad + k - 1, clamped to [0, n). */
static void pool_cover(int i, int k, int st, int pad, int n, int *lo, int *hi)
{
    const int t = i + pad - k + 1; /* oh*st >= t */
    *lo = t <= 0 ? 0 : (t + st - 1) / st;
    *hi = min((i + pad) / st, n - 1);
}

/* y = max over the window (padding never wins); argmax = ih*W + iw of the
 * first maximum in row-major window order. A NaN in the window wins (the
 * first one), so overflow shows through. Compared in float: exact for half. */
kernel void pool_max_forward(global const store_t *x, /* (B, C, H, W) */
                             global store_t *y,       /* (B, C, OH, OW) */
                             global int *argmax,      /* (B, C, OH, OW) */
                             POOL_GEO_PARAMS)
{
    const int id = (int)get_global_id(0);
    if (id >= P_NP * P_OH * P_OW)
        return;
    const int q = id / P_OW, ow = id - q * P_OW, plane = q / P_OH, oh = q - plane * P_OH;
    const int h0 = oh * P_SH - P_PH, w0 = ow * P_SW - P_PW;
    x += plane * P_H * P_W;
    float best = 0.0f;
    int at = -1;
    for (int r = 0; r < P_KH; r++) {
        const int ih = h0 + r;
        if (ih < 0 || ih >= P_H)
            continue;
        for (int s = 0; s < P_KW; s++) {
            const int iw = w0 + s;
            if (iw < 0 || iw >= P_W)
                continue;
            const float v = LOADF(x, ih * P_W + iw);
            if (at < 0 || v > best || (v != v && best == best)) {
                best = v;
                at = ih * P_W + iw;
            }
        }
    }
    STOREF(y, id, best);
    argmax[id] = at;
}

/* dx[b, c, h, w] = sum of dy over the windows whose argmax is (h, w). */
kernel void pool_max_backward(global const store_t *dy, /* (B, C, OH, OW) */
                              global const int *argmax, /* (B, C, OH, OW) */
                              global store_t *dx,       /* (B, C, H, W) */
                              POOL_GEO_PARAMS)
{
    const int id = (int)get_global_id(0);
    if (id >= P_NP * P_H * P_W)
        return;
    const int q = id / P_W, iw = id - q * P_W, plane = q / P_H, ih = q - plane * P_H;
    const int me = ih * P_W + iw, base = plane * P_OH * P_OW;
    if (P_KH <= P_SH && P_KW <= P_SW) {
        /* windows do not overlap (the usual kernel = stride): at most one
         * covers (ih, iw), found without a loop */
        const int th = ih + P_PH, tw = iw + P_PW;
        const int oh = th / P_SH, ow = tw / P_SW;
        float g = 0.0f;
        if (oh < P_OH && ow < P_OW && th - oh * P_SH < P_KH && tw - ow * P_SW < P_KW) {
            const int o = base + oh * P_OW + ow;
            if (argmax[o] == me)
                g = LOADF(dy, o);
        }
        STOREF(dx, id, g);
        return;
    }
    int oh0, oh1, ow0, ow1;
    pool_cover(ih, P_KH, P_SH, P_PH, P_OH, &oh0, &oh1);
    pool_cover(iw, P_KW, P_SW, P_PW, P_OW, &ow0, &ow1);
    acc_t acc = 0.0f;
    for (int oh = oh0; oh <= oh1; oh++)
        for (int ow = ow0; ow <= ow1; ow++) {
            const int o = base + oh * P_OW + ow;
            if (argmax[o] == me)
                acc += LOADF(dy, o);
        }
    STOREF(dx, id, acc);
}

/* y = (sum over the window) / (KH*KW): padding counts as zeros (PyTorch's
 * count_include_pad=True). */
kernel void pool_avg_forward(global const store_t *x, /* (B, C, H, W) */
                             global store_t *y,       /* (B, C, OH, OW) */
                             POOL_GEO_PARAMS)
{
    const int id = (int)get_global_id(0);
    if (id >= P_NP * P_OH * P_OW)
        return;
    const int q = id / P_OW, ow = id - q * P_OW, plane = q / P_OH, oh = q - plane * P_OH;
    const int h0 = oh * P_SH - P_PH, w0 = ow * P_SW - P_PW;
    x += plane * P_H * P_W;
    acc_t acc = 0.0f;
    for (int r = max(0, -h0); r < P_KH && h0 + r < P_H; r++)
        for (int s = max(0, -w0); s < P_KW && w0 + s < P_W; s++)
            acc += LOADF(x, (h0 + r) * P_W + w0 + s);
    STOREF(y, id, acc / (float)(P_KH * P_KW));
}

/* dx[b, c, h, w] = (sum of dy over the windows that cover (h, w)) / (KH*KW). */
kernel void pool_avg_backward(global const store_t *dy, /* (B, C, OH, OW) */
                              global store_t *dx,       /* (B, C, H, W) */
                              POOL_GEO_PARAMS)
{
    const int id = (int)get_global_id(0);
    if (id >= P_NP * P_H * P_W)
        return;
    const int q = id / P_W, iw = id - q * P_W, plane = q / P_H, ih = q - plane * P_H;
    int oh0, oh1, ow0, ow1;
    pool_cover(ih, P_KH, P_SH, P_PH, P_OH, &oh0, &oh1);
    pool_cover(iw, P_KW, P_SW, P_PW, P_OW, &ow0, &ow1);
    const int base = plane * P_OH * P_OW;
    acc_t acc = 0.0f;
    for (int oh = oh0; oh <= oh1; oh++)
        for (int ow = ow0; ow <= ow1; ow++)
            acc += LOADF(dy, base + oh * P_OW + ow);
    STOREF(dx, id, acc / (float)(P_KH * P_KW));
}
