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
 * item. Without them (offline compiles in the tests) the seed CNN's first
 * layer is used. */

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

#define CONV_RS (CONV_R * CONV_S)
#define CONV_CRS (CONV_C * CONV_RS)
#define CONV_KCRS (CONV_K * CONV_CRS)
#define CONV_KBLOCKS ((CONV_K + CONV_KB - 1) / CONV_KB)
/* Whether output channel k0 + kk exists (folds to 1 when KB divides K). */
#define CONV_HAS_K(k0, kk) (CONV_K % CONV_KB == 0 || (k0) + (kk) < CONV_K)

/* The output columns [lo, hi) whose tap s lands inside the image: iw =
 * ow * SW - PW + s * DW in [0, W). Compile-time constants for a constant s. */
#define CONV_OW_LO(s) \
    ((s) * CONV_DW - CONV_PW >= 0 ? 0 : (CONV_PW - (s) * CONV_DW + CONV_SW - 1) / CONV_SW)
#define CONV_OW_HI(s)                                                                    \
    ((s) * CONV_DW - CONV_PW > CONV_W - 1                                                \
         ? 0                                                                             \
         : min(CONV_OW, (CONV_W - 1 + CONV_PW - (s) * CONV_DW) / CONV_SW + 1))

/* Forward: y[b, k, oh, ow] = bias[k] + sum over c, r, s of
 * x[b, c, oh*SH - PH + r*DH, ow*SW - PW + s*DW] w[k, c, r, s].
 * Work item (ow, oh, b * KBLOCKS + kb) computes CONV_KB output channels
 * from k0 = kb * KB, so each input tap is loaded once for KB products;
 * neighbouring items read neighbouring pixels, and the weights are the
 * same for every item of a group. */
kernel void conv_direct_forward(global const store_t *x,    /* (B, C, H, W) */
                                global const store_t *w,    /* (K, C, R, S) */
                                global const store_t *bias, /* (K) */
                                uint has_bias,
                                global store_t *y,          /* (B, K, OH, OW) */
                                int nb)
{
    const int ow = (int)get_global_id(0), oh = (int)get_global_id(1), z = (int)get_global_id(2);
    const int b = z / CONV_KBLOCKS, k0 = (z - b * CONV_KBLOCKS) * CONV_KB;
    if (ow >= CONV_OW || oh >= CONV_OH || b >= nb)
        return;
    acc_t acc[CONV_KB];
    for (int kk = 0; kk < CONV_KB; kk++)
        acc[kk] = has_bias && CONV_HAS_K(k0, kk) ? LOADF(bias, k0 + kk) : 0.0f;
    const int h0 = oh * CONV_SH - CONV_PH, w0 = ow * CONV_SW - CONV_PW;
    for (int c = 0; c < CONV_C; c++) {
        const int xc = (b * CONV_C + c) * CONV_H;
        for (int r = 0; r < CONV_R; r++) {
            const int ih = h0 + r * CONV_DH;
            if (CONV_PH > 0 && (ih < 0 || ih >= CONV_H))
                continue;
            for (int s = 0; s < CONV_S; s++) {
                const int iw = w0 + s * CONV_DW;
                if (CONV_PW > 0 && (iw < 0 || iw >= CONV_W))
                    continue;
                const float v = LOADF(x, (xc + ih) * CONV_W + iw);
                const int wi = c * CONV_RS + r * CONV_S + s;
                for (int kk = 0; kk < CONV_KB; kk++)
                    if (CONV_HAS_K(k0, kk))
                        acc[kk] += v * LOADF(w, (k0 + kk) * CONV_CRS + wi);
            }
        }
    }
    for (int kk = 0; kk < CONV_KB; kk++)
        if (CONV_HAS_K(k0, kk))
            STOREF(y, ((b * CONV_K + k0 + kk) * CONV_OH + oh) * CONV_OW + ow, acc[kk]);
}

/* Input gradient, a gather per input element (no atomics):
 * dx[b, c, h, w] = sum over k, r, s with h = oh*SH - PH + r*DH and
 * w = ow*SW - PW + s*DW of dy[b, k, oh, ow] w[k, c, r, s].
 * Work item (iw, ih, b * C + c). */
kernel void conv_direct_backward_data(global const store_t *dy, /* (B, K, OH, OW) */
                                      global const store_t *w,  /* (K, C, R, S) */
                                      global store_t *dx,       /* (B, C, H, W) */
                                      int nb)
{
    const int iw = (int)get_global_id(0), ih = (int)get_global_id(1), z = (int)get_global_id(2);
    const int b = z / CONV_C, c = z - b * CONV_C;
    if (iw >= CONV_W || ih >= CONV_H || b >= nb)
        return;
    acc_t acc = 0.0f;
    for (int r = 0; r < CONV_R; r++) {
        const int th = ih + CONV_PH - r * CONV_DH;
        const int oh = th / CONV_SH; /* th may be negative: checked below */
        if (th < 0 || oh * CONV_SH != th || oh >= CONV_OH)
            continue;
        for (int s = 0; s < CONV_S; s++) {
            const int tw = iw + CONV_PW - s * CONV_DW;
            const int ow = tw / CONV_SW;
            if (tw < 0 || ow * CONV_SW != tw || ow >= CONV_OW)
                continue;
            for (int k = 0; k < CONV_K; k++)
                acc += LOADF(dy, ((b * CONV_K + k) * CONV_OH + oh) * CONV_OW + ow) *
                       LOADF(w, (k * CONV_C + c) * CONV_RS + r * CONV_S + s);
        }
    }
    STOREF(dx, ((b * CONV_C + c) * CONV_H + ih) * CONV_W + iw, acc);
}

/* Weight (and bias) gradient, first pass: partial sums over cb images.
 * Work item (g, chunk) with g = (k * C + c) * R + r sums, for s = 0..S-1,
 * dy[b, k, oh, ow] x[b, c, oh*SH - PH + r*DH, ow*SW - PW + s*DW] over the
 * chunk's images and every (oh, ow) whose tap lands inside the image, into
 * part[chunk, (k, c, r, s)]. The items with c = r = 0 also sum dy[b, k]
 * into part[chunk, KCRS + k] when has_db. Each inner loop runs over one
 * output row, with contiguous loads. */
kernel void conv_direct_filter_partial(global const store_t *dy, /* (B, K, OH, OW) */
                                       global const store_t *x,  /* (B, C, H, W) */
                                       global float *part,       /* (chunks, KCRS + K) */
                                       uint has_db,
                                       int nb, int cb)
{
    const int g = (int)get_global_id(0), chunk = (int)get_global_id(1);
    if (g >= CONV_K * CONV_C * CONV_R || chunk * cb >= nb)
        return;
    const int kc = g / CONV_R, r = g - kc * CONV_R;
    const int k = kc / CONV_C, c = kc - k * CONV_C;
    /* the output rows whose tap r lands inside the image */
    const int t0 = r * CONV_DH - CONV_PH; /* ih = oh * SH + t0 */
    const int oh_lo = t0 >= 0 ? 0 : (-t0 + CONV_SH - 1) / CONV_SH;
    const int oh_hi = t0 > CONV_H - 1 ? 0 : min(CONV_OH, (CONV_H - 1 - t0) / CONV_SH + 1);
    const int b_end = min(nb, (chunk + 1) * cb);
    acc_t acc[CONV_S];
    for (int s = 0; s < CONV_S; s++)
        acc[s] = 0.0f;
    acc_t accb = 0.0f;
    for (int b = chunk * cb; b < b_end; b++) {
        const int yplane = (b * CONV_K + k) * CONV_OH;
        const int xplane = (b * CONV_C + c) * CONV_H;
        for (int oh = oh_lo; oh < oh_hi; oh++) {
            const int yrow = (yplane + oh) * CONV_OW;
            const int xrow = (xplane + oh * CONV_SH + t0) * CONV_W - CONV_PW;
            for (int s = 0; s < CONV_S; s++) {
                acc_t a = 0.0f;
                for (int ow = CONV_OW_LO(s); ow < CONV_OW_HI(s); ow++)
                    a += LOADF(dy, yrow + ow) * LOADF(x, xrow + ow * CONV_SW + s * CONV_DW);
                acc[s] += a;
            }
        }
        if (has_db && c == 0 && r == 0)
            for (int p = 0; p < CONV_OH * CONV_OW; p++)
                accb += LOADF(dy, yplane * CONV_OW + p);
    }
    global float *out = part + chunk * (CONV_KCRS + CONV_K);
    for (int s = 0; s < CONV_S; s++)
        out[g * CONV_S + s] = acc[s];
    if (has_db && c == 0 && r == 0)
        out[CONV_KCRS + k] = accb;
}

/* Second pass: dw[g] += sum over chunks of part[chunk, g] for g < KCRS, and
 * db[g - KCRS] += the same for the bias entries when has_db. One item per
 * entry; dw and db are rounded to the storage type once. */
kernel void conv_direct_filter_final(global const float *part, /* (chunks, KCRS + K) */
                                     global store_t *dw,       /* (K, C, R, S) */
                                     global store_t *db,       /* (K) */
                                     uint has_db,
                                     int chunks)
{
    const int g = (int)get_global_id(0);
    if (g >= CONV_KCRS + (has_db ? CONV_K : 0))
        return;
    acc_t acc = 0.0f;
    for (int ch = 0; ch < chunks; ch++)
        acc += part[ch * (CONV_KCRS + CONV_K) + g];
    if (g < CONV_KCRS)
        STOREF(dw, g, LOADF(dw, g) + acc);
    else
        STOREF(db, g - CONV_KCRS, LOADF(db, g - CONV_KCRS) + acc);
}
