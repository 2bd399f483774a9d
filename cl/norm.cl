/* cl/norm.cl — batch norm (mpcl_batchnorm2d_*) and layer norm
 * (mpcl_layernorm_*).
 *
 * Dimension letters: B batch, C channels, H W height and width (HW = H * W),
 * M = B * HW values per channel; N rows, D features per row.
 *
 * Normalisation is float in every variant, the fp16 one included: x is read
 * as float (LOADF) and statistics are accumulated in acc_t (float).
 * Statistics are f32; y, dx, gamma, beta, dgamma and dbeta are in the
 * storage dtype (STOREF rounds once).
 *
 * Batch norm: column partials, then one work item per channel combines
 * them in a fixed order (see the batch-norm section below). The mean and
 * variance stay accurate when |mean| >> std: every column's sums are of
 * deviations from one of its own values, and the columns are combined with
 * Chan's formula (the mean first, then the deviations of the column means
 * from it).
 *
 * Layer norm: one work-group per row, local size a power of two <=
 * NORM_WG_MAX, two-pass statistics accumulated per work-item, then by a
 * local-memory tree in a fixed order.
 *
 * Two PoCL 3.1 miscompilations shape this file (both measured; oclgrind
 * runs the plain forms right):
 *   - "for (c = lid; c < C; c += lsz)" with a store in the body wrote past
 *     the end of the row (cl/loss.cl's dlogits loop): strided loops here have
 *     a trip count that is the same for every work-item (c0 = 0, lsz, ...)
 *     with the bound checked inside;
 *   - a uniform "if (flag)" nested in "if (lid == 0)" after the reduction's
 *     barriers ran its body on every work-item (dbeta += sum came out 256
 *     times too large): after a work-group reduction, lid 0 only stores;
 *     every read-modify-write (+= into dgamma and dbeta, the running
 *     statistics) is in a kernel of one work item per value with no
 *     barrier.
 * The tests keep a guard tail after every output and check every +=.
 */

#ifndef NORM_WG_MAX
#define NORM_WG_MAX 256
#endif

/* Sums (a, b) across the work-group, every work-item gets the result; the
 * trailing barrier lets the caller reuse red at once. */
float2 norm_group_sum2(local float2 *red, float2 v)
{
    uint lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = get_local_size(0) / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float2 r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* ------------------------------------------------------------ batch norm
 *
 * Batch norm runs over 3-D ranges of exactly (HW, C, G) work items
 * (mpcl_launch_rows): item (hw, c, g) owns column hw of channel c, and
 * element (b, c, hw) of x lies at (b C + c) HW + hw, so indices are
 * products, never divisions, neighbouring items touch neighbouring
 * elements, and no item falls outside the range (no bounds checks: a CPU
 * device vectorises along dim 0). The per-channel reductions are column
 * partials in a first kernel (each item sums its column over a block of
 * NORM_BC rows of the batch, in float, no local memory, no barriers), then
 * a second kernel of one work item per channel combines that channel's
 * partials in a fixed order: deterministic, whatever the work-group sizes.
 *
 * The partial kernels are built per batch split (src/ops/norm.c passes
 * -DNORM_B=B -DNORM_BC=bc, with G = ceil(B / bc) blocks, and -DNORM_R for
 * the elementwise kernels, a divisor of B): the row loop is
 * unrolled, with no loop left in the kernel, so that the work-item loop a
 * CPU device wraps around it is the innermost loop and vectorises (PoCL
 * vectorises only innermost loops: a run-time row loop ran scalar, at a
 * third of the speed). Rows past B (the last block) read row B - 1 and
 * weigh 0. Without the defines (offline compiles in the tests) a batch of
 * 8 in blocks of 4 (and 2 rows an elementwise item) is assumed. */
/* NORM_RELU 1: batch norm fused with the ReLU after it (the model fuses
 * batchnorm2d + relu): bn_apply writes max(bn(x), 0), NaN kept as relu_forward keeps
 * it, and the backward kernels take the gradient of that output with the
 * output y, passing dy where y > 0 (relu_backward's rule, on the sign of
 * the output, which is that of its input) and 0 elsewhere. */
#ifndef NORM_RELU
#define NORM_RELU 0
#endif
#if NORM_RELU
#define NORM_ACT(v) ((v) <= 0.0f ? 0.0f : (v))
#define NORM_GRAD(g, yv) ((yv) > 0.0f ? (g) : 0.0f)
#else
#define NORM_ACT(v) (v)
#define NORM_GRAD(g, yv) (g)
#endif

#ifndef NORM_BC
#define NORM_B 8
#define NORM_BC 4
#define NORM_R 2
#endif

/* Statistics partials: item (hw, c, g) over rows b in [g bc, min(B, g bc +
 * bc)) of column hw of channel c: the column's mean and its sum of squared
 * deviations from that mean (M2), from sums of (x - k), shifted by the
 * block's first value k (accurate when |mean| >> std: the rows of one block
 * are few). part[0, g, c, hw] = mean, part[1, g, c, hw] = M2 (two planes:
 * an interleaved float2 store kept PoCL from vectorising the kernel). */
kernel void bn_stats_partial(global const store_t *restrict x, /* (B, C, H, W) */
                             global float *restrict part)      /* (2, G, C, HW) */
{
    const uint hw = get_global_id(0), c = get_global_id(1), g = get_global_id(2);
    const uint C = get_global_size(1), HW = get_global_size(0);
    const uint b0 = g * NORM_BC;
    const float k = LOADF(x, (b0 * C + c) * HW + hw);
    acc_t s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (uint r = 0; r < NORM_BC; r++) {
        const uint b = min(b0 + r, (uint)NORM_B - 1u);
        const float w = b0 + r < NORM_B ? 1.0f : 0.0f;
        const float d = (LOADF(x, (b * C + c) * HW + hw) - k) * w;
        s1 += d;
        s2 += d * d;
    }
    const float n = (float)min((uint)NORM_BC, (uint)NORM_B - b0);
    const uint o = (g * C + c) * HW + hw, plane = get_global_size(2) * C * HW;
    part[o] = k + s1 / n;                          /* the block's mean */
    part[plane + o] = max(s2 - s1 * s1 / n, 0.0f); /* its M2 */
}

/* One work item per channel c: combines the G * HW column partials of
 * bn_stats_partial (Chan et al.: M2 = sum M2_j + sum n_j (mean_j - mean)^2)
 * in a fixed order into
 *   mean = (1/M) sum x, var = (1/M) sum (x - mean)^2 (biased),
 *   save_mean = mean, save_invstd = 1 / sqrt(var + eps),
 * and the running statistics (M >= 2, the host refuses M = 1 as PyTorch
 * does):
 *   running_mean = (1 - momentum) running_mean + momentum mean,
 *   running_var  = (1 - momentum) running_var  + momentum var M / (M - 1). */
kernel void bn_stats_final(global const float *restrict part, /* (2, G, C, HW) */
                           global float *restrict save_mean,   /* (C) */
                           global float *restrict save_invstd, /* (C) */
                           global float *restrict running_mean, /* (C) */
                           global float *restrict running_var,  /* (C) */
                           uint C, uint HW, uint B, uint bc, uint G, float eps, float momentum)
{
    const uint c = get_global_id(0);
    if (c >= C)
        return;
    const float M = (float)B * (float)HW;
    acc_t sum = 0.0f;
    for (uint g = 0; g < G; g++) {
        const float n = (float)(min(B, g * bc + bc) - g * bc);
        acc_t s = 0.0f;
        for (uint j = 0; j < HW; j++)
            s += part[(g * C + c) * HW + j];
        sum += n * s;
    }
    const float mean = sum / M;
    acc_t m2 = 0.0f;
    for (uint g = 0; g < G; g++) {
        const float n = (float)(min(B, g * bc + bc) - g * bc);
        acc_t s = 0.0f;
        for (uint j = 0; j < HW; j++) {
            const uint o = (g * C + c) * HW + j;
            const float d = part[o] - mean;
            s += part[G * C * HW + o] + n * d * d;
        }
        m2 += s;
    }
    const float var = m2 / M;
    save_mean[c] = mean;
    save_invstd[c] = 1.0f / sqrt(var + eps);
    const float unbiased = var * (M / (M - 1.0f));
    running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean;
    running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
}

/* y = (x - mean[c]) * invstd * gamma[c] + beta[c], item (hw, c, g) of a
 * (HW, C, B / NORM_R) range for rows g NORM_R ... g NORM_R + NORM_R - 1
 * (NORM_R divides B: several rows an item make work-groups big enough that
 * their start-up cost, large on CPU runtimes, does not dominate).
 * stat_is_var = 0: stat holds invstd (training, save_invstd); stat_is_var =
 * 1: stat holds a variance (eval, running_var): invstd = 1 / sqrt(stat +
 * eps). y may be x. */
kernel void bn_apply(global store_t *y,         /* (B, C, H, W) */
                     global const store_t *x,   /* (B, C, H, W) */
                     global const store_t *gamma, /* (C) */
                     global const store_t *beta,  /* (C) */
                     global const float *mean,  /* (C) */
                     global const float *stat,  /* (C) */
                     float eps, int stat_is_var)
{
    const uint hw = get_global_id(0), c = get_global_id(1), g = get_global_id(2);
    const uint C = get_global_size(1), HW = get_global_size(0);
    const float st = stat[c];
    const float invstd = stat_is_var ? 1.0f / sqrt(st + eps) : st;
    const float scale = invstd * LOADF(gamma, c);
    const float shift = LOADF(beta, c) - mean[c] * scale;
    const uint i0 = (g * NORM_R * C + c) * HW, step = C * HW;
    float v[NORM_R]; /* every load before the first store: y may be x */
#pragma unroll
    for (uint r = 0; r < NORM_R; r++)
        v[r] = LOADF(x, i0 + r * step + hw);
#pragma unroll
    for (uint r = 0; r < NORM_R; r++)
        STOREF(y, i0 + r * step + hw, NORM_ACT(v[r] * scale + shift));
}

/* Backward partials, item (hw, c, g) as in bn_stats_partial, with xhat =
 * (x - mean) invstd: part[0, g, c, hw] = sum dy, part[1, g, c, hw] = sum dy
 * xhat over its rows. dy and x are read once for both sums. With NORM_RELU
 * dy is the gradient of the fused output y and passes where y > 0 (y is not
 * read without). */
kernel void bn_backward_partial(global const store_t *restrict dy, /* (B, C, H, W) */
                                global const store_t *restrict y,  /* (B, C, H, W) */
                                global const store_t *restrict x,  /* (B, C, H, W) */
                                global const float *restrict save_mean,   /* (C) */
                                global const float *restrict save_invstd, /* (C) */
                                global float *restrict part)       /* (2, G, C, HW) */
{
    const uint hw = get_global_id(0), c = get_global_id(1), g = get_global_id(2);
    const uint C = get_global_size(1), HW = get_global_size(0);
    const uint b0 = g * NORM_BC;
    const float mean = save_mean[c], invstd = save_invstd[c];
    acc_t s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (uint r = 0; r < NORM_BC; r++) {
        const uint b = min(b0 + r, (uint)NORM_B - 1u);
        const uint j = (b * C + c) * HW + hw;
#if NORM_RELU
        const float gj = NORM_GRAD(LOADF(dy, j), LOADF(y, j));
#else
        const float gj = LOADF(dy, j);
#endif
        const float gr = b0 + r < NORM_B ? gj : 0.0f;
        s1 += gr;
        s2 += gr * ((LOADF(x, j) - mean) * invstd);
    }
    const uint o = (g * C + c) * HW + hw, plane = get_global_size(2) * C * HW;
    part[o] = s1;
    part[plane + o] = s2;
}

/* One work item per channel c: sums[c] = (sum dy, sum dy xhat) from the
 * G * HW partials of bn_backward_partial in a fixed order, and
 * dgamma[c] += sum dy xhat, dbeta[c] += sum dy; a gradient whose flag is 0
 * is not touched. */
kernel void bn_backward_final(global const float *restrict part, /* (2, G, C, HW) */
                              global float *restrict sums,        /* (C, 2) */
                              global store_t *dgamma,             /* (C); when want_dgamma */
                              global store_t *dbeta,              /* (C); when want_dbeta */
                              uint C, uint HW, uint G, int want_dgamma, int want_dbeta)
{
    const uint c = get_global_id(0);
    if (c >= C)
        return;
    float2 tot = (float2)(0.0f, 0.0f);
    for (uint g = 0; g < G; g++) {
        float2 s = (float2)(0.0f, 0.0f);
        for (uint j = 0; j < HW; j++) {
            const uint o = (g * C + c) * HW + j;
            s += (float2)(part[o], part[G * C * HW + o]);
        }
        tot += s;
    }
    sums[2 * c] = tot.x;
    sums[2 * c + 1] = tot.y;
    if (want_dgamma)
        STOREF(dgamma, c, LOADF(dgamma, c) + tot.y);
    if (want_dbeta)
        STOREF(dbeta, c, LOADF(dbeta, c) + tot.x);
}

/* dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)), item (hw, c, g)
 * of a (HW, C, B / NORM_R) range as in bn_apply, M = B HW. dx may be dy.
 * With NORM_RELU dy passes where the fused output y > 0. */
kernel void bn_backward_dx(global store_t *dx,         /* (B, C, H, W) */
                           global const store_t *dy,   /* (B, C, H, W) */
                           global const store_t *y,    /* (B, C, H, W) */
                           global const store_t *x,    /* (B, C, H, W) */
                           global const store_t *gamma, /* (C) */
                           global const float *save_mean,   /* (C) */
                           global const float *save_invstd, /* (C) */
                           global const float *sums,   /* (C, 2) */
                           float m)
{
    const uint hw = get_global_id(0), c = get_global_id(1), g = get_global_id(2);
    const uint C = get_global_size(1), HW = get_global_size(0);
    const float invstd = save_invstd[c], mean = save_mean[c];
    const float mdy = sums[2 * c] / m, mdyx = sums[2 * c + 1] / m;
    const float k = LOADF(gamma, c) * invstd;
    const uint i0 = (g * NORM_R * C + c) * HW, step = C * HW;
    float v[NORM_R]; /* every load before the first store: dx may be dy */
#pragma unroll
    for (uint r = 0; r < NORM_R; r++) {
        const float xhat = (LOADF(x, i0 + r * step + hw) - mean) * invstd;
#if NORM_RELU
        const float g = NORM_GRAD(LOADF(dy, i0 + r * step + hw), LOADF(y, i0 + r * step + hw));
#else
        const float g = LOADF(dy, i0 + r * step + hw);
#endif
        v[r] = k * (g - mdy - xhat * mdyx);
    }
#pragma unroll
    for (uint r = 0; r < NORM_R; r++)
        STOREF(dx, i0 + r * step + hw, v[r]);
}

/* ------------------------------------------------------------ layer norm */

/* One work-group per row n: mean, biased variance (two-pass), then
 * y[n, d] = (x[n, d] - mean) invstd gamma[d] + beta[d]. y may be x. */
kernel void ln_forward(global store_t *y,          /* (N, D) */
                       global const store_t *x,    /* (N, D) */
                       global const store_t *gamma, /* (D) */
                       global const store_t *beta,  /* (D) */
                       global float *save_mean,    /* (N) */
                       global float *save_invstd,  /* (N) */
                       uint N, uint D, float eps)
{
    local float2 red[NORM_WG_MAX];
    uint n = get_group_id(0);
    if (n >= N)
        return; /* uniform across the work-group */
    uint lid = get_local_id(0), lsz = get_local_size(0);
    uint base = n * D;

    acc_t sum = 0.0f;
    for (uint d0 = 0; d0 < D; d0 += lsz) {
        uint d = d0 + lid;
        if (d < D) {
            sum += LOADF(x, base + d);
        }
    }
    float mean = norm_group_sum2(red, (float2)(sum, 0.0f)).x / (float)D;

    acc_t sq = 0.0f;
    for (uint d0 = 0; d0 < D; d0 += lsz) {
        uint d = d0 + lid;
        if (d < D) {
            float v = LOADF(x, base + d) - mean;
            sq += v * v;
        }
    }
    float var = norm_group_sum2(red, (float2)(sq, 0.0f)).x / (float)D;
    float invstd = 1.0f / sqrt(var + eps);

    /* every work-item has read all of its x before the barrier above, so
     * writing y in place is safe */
    for (uint d0 = 0; d0 < D; d0 += lsz) {
        uint d = d0 + lid;
        if (d < D) {
            float v = (LOADF(x, base + d) - mean) * invstd * LOADF(gamma, d) + LOADF(beta, d);
            STOREF(y, base + d, v);
        }
    }
    if (lid == 0) {
        save_mean[n] = mean;
        save_invstd[n] = invstd;
    }
}

/* One work-group per row n, with g = dy gamma and xhat = (x - mean) invstd:
 * dx[n, d] = invstd (g[d] - mean_d(g) - xhat[d] mean_d(g xhat)). dx may be dy. */
kernel void ln_backward_dx(global store_t *dx,         /* (N, D) */
                           global const store_t *dy,   /* (N, D) */
                           global const store_t *x,    /* (N, D) */
                           global const store_t *gamma, /* (D) */
                           global const float *save_mean,   /* (N) */
                           global const float *save_invstd, /* (N) */
                           uint N, uint D)
{
    local float2 red[NORM_WG_MAX];
    uint n = get_group_id(0);
    if (n >= N)
        return; /* uniform across the work-group */
    uint lid = get_local_id(0), lsz = get_local_size(0);
    uint base = n * D;
    float mean = save_mean[n], invstd = save_invstd[n];

    float2 part = (float2)(0.0f, 0.0f); /* (sum g, sum g xhat) */
    for (uint d0 = 0; d0 < D; d0 += lsz) {
        uint d = d0 + lid;
        if (d < D) {
            float g = LOADF(dy, base + d) * LOADF(gamma, d);
            float xhat = (LOADF(x, base + d) - mean) * invstd;
            part += (float2)(g, g * xhat);
        }
    }
    float2 tot = norm_group_sum2(red, part) / (float)D;

    for (uint d0 = 0; d0 < D; d0 += lsz) {
        uint d = d0 + lid;
        if (d < D) {
            float g = LOADF(dy, base + d) * LOADF(gamma, d);
            float xhat = (LOADF(x, base + d) - mean) * invstd;
            STOREF(dx, base + d, invstd * (g - tot.x - xhat * tot.y));
        }
    }
}

/* Parameter gradients, one work-item per feature d, rows summed in order:
 * dgamma[d] += sum_n dy[n, d] xhat[n, d], dbeta[d] += sum_n dy[n, d]. */
kernel void ln_backward_params(global store_t *dgamma, /* (D); when want_dgamma */
                               global store_t *dbeta,  /* (D); when want_dbeta */
                               global const store_t *dy, /* (N, D) */
                               global const store_t *x,  /* (N, D) */
                               global const float *save_mean,   /* (N) */
                               global const float *save_invstd, /* (N) */
                               uint N, uint D, int want_dgamma, int want_dbeta)
{
    uint d = get_global_id(0);
    if (d >= D)
        return;
    acc_t sg = 0.0f, sb = 0.0f;
    for (uint n = 0; n < N; n++) {
        float g = LOADF(dy, n * D + d);
        float xhat = (LOADF(x, n * D + d) - save_mean[n]) * save_invstd[n];
        sg += g * xhat;
        sb += g;
    }
    if (want_dgamma)
        STOREF(dgamma, d, LOADF(dgamma, d) + sg);
    if (want_dbeta)
        STOREF(dbeta, d, LOADF(dbeta, d) + sb);
}
