/* cl/loss.cl — fused softmax + cross-entropy (mpcl_softmax_cross_entropy).
 *
 * Dimension letters: B rows (batch), C classes.
 *
 * Every variant computes in float: logits are read as float (LOADF), the
 * log-sum-exp subtracts the row maximum before exp, and every sum is
 * accumulated in acc_t (float) with a local-memory tree reduction. The only
 * store in the storage dtype is dlogits (STOREF), where a value beyond the
 * dtype's range becomes inf, which the loss scaler then detects.
 *
 * Work layout: xent_rows runs one work-group per row (local size a power of
 * two, at most LOSS_WG_MAX) and writes one float per row; xent_mean reduces
 * those in one work-group, in a fixed order, so the mean is deterministic
 * (no float atomics).
 *
 * Strided row loops have a trip count that is the same for every work-item
 * (c0 = 0, lsz, 2 lsz, ...) with the bound checked inside: PoCL 3.1 compiled
 * the plainer "for (c = lid; c < C; c += lsz)" form of the dlogits loop into
 * stores past the end of the row (measured: lanes C..lsz-1 of the last row
 * wrote beyond the buffer); the tests keep a guard tail after every output.
 * After a work-group reduction, lid 0 only stores (see cl/norm.cl for a
 * second PoCL miscompilation, of a read-modify-write in that position).
 */

#ifndef LOSS_WG_MAX
#define LOSS_WG_MAX 256
#endif

/* The max of one value per work-item across the work-group (local size a
 * power of two); every work-item gets it. fmax ignores a NaN operand, but a
 * NaN logit still reaches the loss through exp(NaN - max). The trailing
 * barrier lets the caller reuse red at once. */
float loss_group_max(local float *red, float v)
{
    uint lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = get_local_size(0) / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] = fmax(red[lid], red[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* Two sums at once, (a, b) per work-item, in a fixed tree order. */
float2 loss_group_sum2(local float2 *red, float2 v)
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

/* Per row b, with m = max_c x[b, c], se = sum_c exp(x[b, c] - m),
 * sx = sum_c (x[b, c] - m) and label y = labels[b]:
 *   row_loss[b] = log(se) - (1 - s) (x[b, y] - m) - (s / C) sx
 * which is -sum_c t_c log softmax_c with t = (1 - s) onehot(y) + s / C,
 * computed relative to the maximum so that large logits cancel exactly.
 * With want_grad: dlogits[b, c] = gscale * (softmax_c - t_c), gscale being
 * grad_scale / B. A label outside [0, C) is never read through: its row
 * loss and its dlogits row are NaN. */
kernel void xent_rows(global const store_t *logits, /* (B, C) */
                      global const int *labels,     /* (B) */
                      global store_t *dlogits,      /* (B, C); written when want_grad */
                      global float *row_loss,       /* (B) */
                      uint B, uint C, float smoothing, float gscale, int want_grad)
{
    local float red_max[LOSS_WG_MAX];
    local float2 red_sum[LOSS_WG_MAX];
    uint b = get_group_id(0);
    if (b >= B)
        return; /* uniform across the work-group: no barrier is skipped by part of it */
    uint lid = get_local_id(0), lsz = get_local_size(0);
    uint base = b * C;

    float m = -INFINITY;
    for (uint c0 = 0; c0 < C; c0 += lsz) {
        uint c = c0 + lid;
        if (c < C) {
            m = fmax(m, LOADF(logits, base + c));
        }
    }
    m = loss_group_max(red_max, m);

    float2 part = (float2)(0.0f, 0.0f); /* (sum exp(x - m), sum (x - m)) */
    for (uint c0 = 0; c0 < C; c0 += lsz) {
        uint c = c0 + lid;
        if (c < C) {
            float z = LOADF(logits, base + c) - m;
            part += (float2)(exp(z), z);
        }
    }
    float2 tot = loss_group_sum2(red_sum, part);

    int y = labels[b];
    int valid = y >= 0 && (uint)y < C;
    float s = smoothing;
    float s_c = s / (float)C;
    if (lid == 0) {
        float zy = valid ? LOADF(logits, base + (uint)y) - m : NAN;
        row_loss[b] = log(tot.x) - (1.0f - s) * zy - s_c * tot.y;
    }
    if (!want_grad)
        return;
    float inv_se = 1.0f / tot.x;
    for (uint c0 = 0; c0 < C; c0 += lsz) {
        uint c = c0 + lid;
        if (c < C) {
            float p = exp(LOADF(logits, base + c) - m) * inv_se;
            float t = s_c + ((int)c == y ? 1.0f - s : 0.0f);
            float d = valid ? gscale * (p - t) : NAN;
            /* The repeated bound is not redundant: without it PoCL 3.1 stores
             * past the end of dlogits for lanes c >= C of the last row
             * (found with valgrind; C = 10, work-group 16). */
            if (c < C)
                STOREF(dlogits, base + c, d);
        }
    }
}

/* loss[0] = (1 / B) sum_b row_loss[b], one work-group, fixed order. */
kernel void xent_mean(global const float *row_loss, /* (B) */
                      global float *loss,           /* (1) */
                      uint B)
{
    local float2 red[LOSS_WG_MAX];
    uint lid = get_local_id(0), lsz = get_local_size(0);
    float acc = 0.0f;
    for (uint b0 = 0; b0 < B; b0 += lsz) {
        uint b = b0 + lid;
        if (b < B) {
            acc += row_loss[b];
        }
    }
    float2 tot = loss_group_sum2(red, (float2)(acc, 0.0f));
    if (lid == 0)
        loss[0] = tot.x / (float)B;
}
