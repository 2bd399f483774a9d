/* cl/attention.cl — the transformer's own kernels (src/ops/attention.c):
 * token + position embedding and its gradients, the copies between a
 * GEMM's rows and per-head matrices, and the causal softmax.
 *
 * Dimension letters: N rows (B sequences of T positions), D features per
 * row (the width C), V vocabulary, G = B * H (sequence, head) pairs, E the
 * width of one head (C / H), Tq query and Tk key positions.
 *
 * Where the values live (docs/ops/attention.md): the attention scores
 * q k^T / sqrt(E) come out of their GEMM in float (f32) in every mode, and
 * the softmax reads them in float, subtracts the row maximum and sums in
 * float: raw scores may exceed half's range (65504) where the
 * probabilities never do. The probabilities (in [0, 1]) and every other
 * tensor here are in the storage dtype.
 *
 * Work layout: the embedding and copy kernels run one work item per
 * element over exact 3-D ranges (mpcl_launch_rows: no bounds checks);
 * the softmax kernels one work-group per row (a power of two, at most
 * ATT_WG_MAX items), with the row loops' trip count the same for every item
 * and the bound checked inside (see cl/loss.cl for why), and lid 0 alone
 * storing after a reduction.
 */

#ifndef ATT_WG_MAX
#define ATT_WG_MAX 256
#endif

/* y[n, d] = wte[tokens[n], d] + wpe[pos + n % T, d], summed in float; a
 * token outside [0, V) is never read through: its row is NaN. Range (D, N). */
kernel void embed_forward(global store_t *y,         /* (N, D) */
                          global const int *tokens,  /* (N) */
                          global const store_t *wte, /* (V, D) */
                          global const store_t *wpe, /* (>= pos + T, D) */
                          uint T, uint D, uint V, uint pos)
{
    uint d = get_global_id(0), n = get_global_id(1);
    int tok = tokens[n];
    uint t = pos + n % T;
    float p = LOADF(wpe, t * D + d);
    float v = (tok >= 0 && (uint)tok < V) ? LOADF(wte, (uint)tok * D + d) + p : NAN;
    STOREF(y, n * D + d, v);
}

/* dwte[v, d] += the sum of dy[n, d] over the rows n whose token is v, in
 * row order: order (N) lists the rows grouped by token (ascending rows
 * within a token), start (V + 1) where each token's rows begin. One item
 * owns one (v, d): no two items write one value, and the sum's order is
 * fixed, so the gradient is the same bits on every run. Range (D, V). */
kernel void embed_backward_wte(global store_t *dwte,     /* (V, D) */
                               global const store_t *dy, /* (N, D) */
                               global const int *order,  /* (N) */
                               global const int *start,  /* (V + 1) */
                               uint D)
{
    uint d = get_global_id(0), v = get_global_id(1);
    int i0 = start[v], i1 = start[v + 1];
    acc_t acc = 0.0f;
    for (int i = i0; i < i1; i++)
        acc += LOADF(dy, (uint)order[i] * D + d);
    if (i1 > i0)
        STOREF(dwte, v * D + d, LOADF(dwte, v * D + d) + acc);
}

/* dwpe[t, d] += sum over the B sequences of dy[b T + t, d]. Range (D, T). */
kernel void embed_backward_wpe(global store_t *dwpe,     /* (>= T, D) */
                               global const store_t *dy, /* (B T, D) */
                               uint B, uint T, uint D)
{
    uint d = get_global_id(0), t = get_global_id(1);
    acc_t acc = 0.0f;
    for (uint b = 0; b < B; b++)
        acc += LOADF(dy, (b * T + t) * D + d);
    STOREF(dwpe, t * D + d, LOADF(dwpe, t * D + d) + acc);
}

/* Copies between rows and heads. Rows: (B T, ld) with head h's E columns
 * at off + h E (a QKV projection's output, ld = 3 C and off 0, C or 2 C; an
 * attention output, ld = C and off 0). Heads: (G, Tc, E) with the T rows
 * of this call at positions t0 .. t0 + T - 1 of each (a key / value cache
 * holds Tc positions; t0 = 0 and Tc = T otherwise). to_heads: heads =
 * rows, else rows = heads. Bits are copied as they are. Range (E, T, G). */
kernel void heads_copy(global store_t *dst, global const store_t *src,
                       uint T, uint H, uint E, uint ld, uint off, uint Tc, uint t0,
                       int to_heads)
{
    uint e = get_global_id(0), t = get_global_id(1), g = get_global_id(2);
    uint b = g / H, h = g - b * H;
    uint hi = (g * Tc + t0 + t) * E + e;
    uint ri = (b * T + t) * ld + off + h * E + e;
    if (to_heads)
        dst[hi] = src[ri];
    else
        dst[ri] = src[hi];
}

/* The max of one value per work-item across the work-group (a power of
 * two); every item gets it. */
float att_group_max(local float *red, float v)
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

float att_group_sum(local float *red, float v)
{
    uint lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = get_local_size(0) / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* Causal softmax of one score row per work-group. Row r of (G, Tq, Tk) is
 * query position i = q0 + r % Tq, which sees keys j <= i:
 *   p[r, j] = exp(s[r, j] - m) / sum_{j' <= i} exp(s[r, j'] - m), j <= i
 *   p[r, j] = 0, j > i
 * with m the maximum of the visible scores, all in float. A NaN score
 * makes its row NaN (exp(NaN - m)); an inf makes it NaN as well, which the
 * loss scaler then sees. */
kernel void softmax_causal_forward(global store_t *p,      /* (G Tq, Tk) */
                                   global const float *s,  /* (G Tq, Tk) */
                                   uint rows, uint Tq, uint Tk, uint q0)
{
    local float red[ATT_WG_MAX];
    uint r = get_group_id(0);
    if (r >= rows)
        return; /* uniform across the work-group */
    uint lid = get_local_id(0), lsz = get_local_size(0);
    uint vis = q0 + r % Tq + 1; /* visible keys */
    if (vis > Tk)
        vis = Tk;
    uint base = r * Tk;

    float m = -INFINITY;
    for (uint j0 = 0; j0 < Tk; j0 += lsz) {
        uint j = j0 + lid;
        if (j < vis)
            m = fmax(m, s[base + j]);
    }
    m = att_group_max(red, m);
    acc_t sum = 0.0f;
    for (uint j0 = 0; j0 < Tk; j0 += lsz) {
        uint j = j0 + lid;
        if (j < vis)
            sum += exp(s[base + j] - m);
    }
    sum = att_group_sum(red, sum);
    float inv = 1.0f / sum;
    for (uint j0 = 0; j0 < Tk; j0 += lsz) {
        uint j = j0 + lid;
        if (j < Tk) {
            float v = j < vis ? exp(s[base + j] - m) * inv : 0.0f;
            STOREF(p, base + j, v);
        }
    }
}

/* The softmax's backward pass, per row: with dp the gradient of p (f32),
 *   ds[r, j] = scale p[r, j] (dp[r, j] - sum_j' p[r, j'] dp[r, j'])
 * (0 at masked positions, where p is 0), stored in the storage dtype for
 * the GEMMs that follow; scale folds in the 1 / sqrt(E) of the scores. */
kernel void softmax_causal_backward(global store_t *ds,       /* (G Tq, Tk) */
                                    global const float *dp,   /* (G Tq, Tk) */
                                    global const store_t *p,  /* (G Tq, Tk) */
                                    uint rows, uint Tq, uint Tk, uint q0, float scale)
{
    local float red[ATT_WG_MAX];
    uint r = get_group_id(0);
    if (r >= rows)
        return; /* uniform across the work-group */
    uint lid = get_local_id(0), lsz = get_local_size(0);
    uint vis = q0 + r % Tq + 1;
    if (vis > Tk)
        vis = Tk;
    uint base = r * Tk;

    acc_t dot = 0.0f;
    for (uint j0 = 0; j0 < Tk; j0 += lsz) {
        uint j = j0 + lid;
        if (j < vis)
            dot += LOADF(p, base + j) * dp[base + j];
    }
    dot = att_group_sum(red, dot);
    for (uint j0 = 0; j0 < Tk; j0 += lsz) {
        uint j = j0 + lid;
        if (j < Tk) {
            float v = j < vis ? scale * LOADF(p, base + j) * (dp[base + j] - dot) : 0.0f;
            STOREF(ds, base + j, v);
        }
    }
}
