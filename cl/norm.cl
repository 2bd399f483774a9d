/* cl/norm.cl — batch norm (mpcl_batchnorm2d_*) and layer norm
 * (mpcl_layernorm_*).
 *
 * Dimension letters: B batch, C channels, H W height and width (HW = H * W),
 * M = B * HW values per channel; N rows, D features per row.
 *
 * Normalisation is float in every variant, the fp16 one included: x is read
 * as float (LOADF), statistics are two-pass (the mean first, then the sum of
 * squared deviations from it, which stays accurate when |mean| >> std) and
 * accumulated in acc_t (float) per work-item, then by a local-memory tree in
 * a fixed order. Statistics are f32; y, dx, gamma, beta, dgamma and dbeta
 * are in the storage dtype (STOREF rounds once).
 *
 * Reductions over a channel (batch norm) or a row (layer norm) run one
 * work-group per channel or row, local size a power of two <= NORM_WG_MAX.
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
 *     statistics) is a separate one-work-item-per-channel kernel.
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

/* Element i of channel c's M values, in x (B, C, HW). */
uint bn_index(uint i, uint c, uint C, uint HW)
{
    uint b = i / HW;
    return (b * C + c) * HW + (i - b * HW);
}

/* ------------------------------------------------------------ batch norm */

/* Training statistics, one work-group per channel c:
 *   mean = (1/M) sum x, var = (1/M) sum (x - mean)^2 (biased),
 *   save_mean = mean, save_invstd = 1 / sqrt(var + eps), stats = (mean, var)
 * (stats feeds bn_running). */
kernel void bn_stats(global const store_t *x,   /* (B, C, H, W) */
                     global float *save_mean,   /* (C) */
                     global float *save_invstd, /* (C) */
                     global float *stats,       /* (C, 2) */
                     uint C, uint HW, uint M, float eps)
{
    local float2 red[NORM_WG_MAX];
    uint c = get_group_id(0);
    if (c >= C)
        return; /* uniform across the work-group */
    uint lid = get_local_id(0), lsz = get_local_size(0);

    acc_t sum = 0.0f;
    for (uint i0 = 0; i0 < M; i0 += lsz) {
        uint i = i0 + lid;
        if (i < M) {
            sum += LOADF(x, bn_index(i, c, C, HW));
        }
    }
    float mean = norm_group_sum2(red, (float2)(sum, 0.0f)).x / (float)M;

    acc_t sq = 0.0f;
    for (uint i0 = 0; i0 < M; i0 += lsz) {
        uint i = i0 + lid;
        if (i < M) {
            float d = LOADF(x, bn_index(i, c, C, HW)) - mean;
            sq += d * d;
        }
    }
    float var = norm_group_sum2(red, (float2)(sq, 0.0f)).x / (float)M;

    if (lid == 0) {
        save_mean[c] = mean;
        save_invstd[c] = 1.0f / sqrt(var + eps);
        stats[2 * c] = mean;
        stats[2 * c + 1] = var;
    }
}

/* The running statistics, one work-item per channel, from bn_stats' stats:
 *   running_mean = (1 - momentum) running_mean + momentum mean,
 *   running_var  = (1 - momentum) running_var  + momentum var M / (M - 1).
 * M >= 2 (the host refuses M = 1, as PyTorch does). */
kernel void bn_running(global float *running_mean, /* (C) */
                       global float *running_var,  /* (C) */
                       global const float *stats,  /* (C, 2) */
                       uint C, uint M, float momentum)
{
    uint c = get_global_id(0);
    if (c >= C)
        return;
    float mean = stats[2 * c], var = stats[2 * c + 1];
    float unbiased = var * ((float)M / (float)(M - 1));
    running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean;
    running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
}

/* y = (x - mean[c]) * invstd * gamma[c] + beta[c], one work-item per element.
 * stat_is_var = 0: stat holds invstd (training, save_invstd);
 * stat_is_var = 1: stat holds a variance (eval, running_var): invstd =
 * 1 / sqrt(stat + eps). y may be x. */
kernel void bn_apply(global store_t *y,         /* (B, C, H, W) */
                     global const store_t *x,   /* (B, C, H, W) */
                     global const store_t *gamma, /* (C) */
                     global const store_t *beta,  /* (C) */
                     global const float *mean,  /* (C) */
                     global const float *stat,  /* (C) */
                     uint C, uint HW, uint n, float eps, int stat_is_var)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    uint c = (i / HW) % C;
    float invstd = stat_is_var ? 1.0f / sqrt(stat[c] + eps) : stat[c];
    float v = (LOADF(x, i) - mean[c]) * invstd * LOADF(gamma, c) + LOADF(beta, c);
    STOREF(y, i, v);
}

/* Backward sums, one work-group per channel c, with xhat = (x - mean) invstd:
 *   sums[c] = (sum dy, sum dy xhat) */
kernel void bn_backward_sums(global const store_t *dy, /* (B, C, H, W) */
                             global const store_t *x,  /* (B, C, H, W) */
                             global const float *save_mean,   /* (C) */
                             global const float *save_invstd, /* (C) */
                             global float *sums,        /* (C, 2) */
                             uint C, uint HW, uint M)
{
    local float2 red[NORM_WG_MAX];
    uint c = get_group_id(0);
    if (c >= C)
        return; /* uniform across the work-group */
    uint lid = get_local_id(0), lsz = get_local_size(0);
    float mean = save_mean[c], invstd = save_invstd[c];

    float2 part = (float2)(0.0f, 0.0f); /* (sum dy, sum dy xhat) */
    for (uint i0 = 0; i0 < M; i0 += lsz) {
        uint i = i0 + lid;
        if (i < M) {
            uint j = bn_index(i, c, C, HW);
            float g = LOADF(dy, j);
            float xhat = (LOADF(x, j) - mean) * invstd;
            part += (float2)(g, g * xhat);
        }
    }
    float2 tot = norm_group_sum2(red, part);
    if (lid == 0) {
        sums[2 * c] = tot.x;
        sums[2 * c + 1] = tot.y;
    }
}

/* dgamma[c] += sum dy xhat, dbeta[c] += sum dy (from bn_backward_sums),
 * one work-item per channel; a gradient whose flag is 0 is not touched. */
kernel void bn_param_grads(global store_t *dgamma,     /* (C); when want_dgamma */
                           global store_t *dbeta,      /* (C); when want_dbeta */
                           global const float *sums,   /* (C, 2) */
                           uint C, int want_dgamma, int want_dbeta)
{
    uint c = get_global_id(0);
    if (c >= C)
        return;
    if (want_dgamma)
        STOREF(dgamma, c, LOADF(dgamma, c) + sums[2 * c + 1]);
    if (want_dbeta)
        STOREF(dbeta, c, LOADF(dbeta, c) + sums[2 * c]);
}

/* dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)), which is
 * (gamma invstd / M) (M dy - sum dy - xhat sum dy xhat). dx may be dy. */
kernel void bn_backward_dx(global store_t *dx,         /* (B, C, H, W) */
                           global const store_t *dy,   /* (B, C, H, W) */
                           global const store_t *x,    /* (B, C, H, W) */
                           global const store_t *gamma, /* (C) */
                           global const float *save_mean,   /* (C) */
                           global const float *save_invstd, /* (C) */
                           global const float *sums,   /* (C, 2) */
                           uint C, uint HW, uint M, uint n)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    uint c = (i / HW) % C;
    float invstd = save_invstd[c];
    float xhat = (LOADF(x, i) - save_mean[c]) * invstd;
    float mdy = sums[2 * c] / (float)M, mdyx = sums[2 * c + 1] / (float)M;
    float v = LOADF(gamma, c) * invstd * (LOADF(dy, i) - mdy - xhat * mdyx);
    STOREF(dx, i, v);
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
