/* cl/optim.cl — optimizer steps over the flat parameter buffer, on FP32
 * master weights and FP32 state, with the FP16 working copy refreshed in the
 * same pass. Dimension letters: P parameters (padded flat buffer).
 *
 * grad holds unscaled gradients in the storage dtype; grad_mul multiplies
 * them (gradient clipping). Everything else is float in every variant. */

/* PyTorch SGD: g += wd * w; buf = momentum * buf + g (first step: buf = g);
 * g = nesterov ? g + momentum * buf : buf; w -= lr * g. */
kernel void sgd_step(global float *master,        /* (P) */
                     global store_t *working,     /* (P), may be master in fp32 */
                     global const store_t *grad,  /* (P) */
                     global float *buf,           /* (P) momentum buffer */
                     uint n, float lr, float momentum, float weight_decay, int nesterov,
                     int first, float grad_mul, int refresh)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    float w = master[i];
    float g = LOADF(grad, i) * grad_mul + weight_decay * w;
    if (momentum != 0.0f) {
        float b = first ? g : momentum * buf[i] + g;
        buf[i] = b;
        g = nesterov ? g + momentum * b : b;
    }
    w -= lr * g;
    master[i] = w;
    if (refresh)
        STOREF(working, i, w);
}

/* Adam (decoupled = 0: L2 penalty added to the gradient) and AdamW
 * (decoupled = 1: w *= 1 - lr * wd before the update), as PyTorch. eps is
 * added to sqrt(v_hat) in float: in half it would round to zero. */
kernel void adam_step(global float *master,       /* (P) */
                      global store_t *working,    /* (P), may be master in fp32 */
                      global const store_t *grad, /* (P) */
                      global float *m,            /* (P) first moment */
                      global float *v,            /* (P) second moment */
                      uint n, float lr, float beta1, float beta2, float eps, float weight_decay,
                      int decoupled, float bias_corr1, float bias_corr2, float grad_mul,
                      int refresh)
{
    uint i = get_global_id(0);
    if (i >= n)
        return;
    float w = master[i];
    float g = LOADF(grad, i) * grad_mul;
    if (decoupled)
        w *= 1.0f - lr * weight_decay;
    else
        g += weight_decay * w;
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float mhat = mi / bias_corr1, vhat = vi / bias_corr2;
    w -= lr * mhat / (sqrt(vhat) + eps);
    master[i] = w;
    if (refresh)
        STOREF(working, i, w);
}

/* Partial sums of squares of grad for the global-norm clip: one float per
 * work-group, in a fixed order (deterministic). The local size is a power
 * of two, at most SUMSQ_WG (the host picks it from the kernel's limit). */
#define SUMSQ_WG 64
kernel void sumsq_partial(global const store_t *grad, /* (P) */
                          global float *partial,      /* (groups) */
                          uint n)
{
    local float part[SUMSQ_WG];
    uint lid = get_local_id(0);
    uint stride = get_global_size(0);
    float acc = 0.0f;
    for (uint i = get_global_id(0); i < n; i += stride) {
        float g = LOADF(grad, i);
        acc += g * g;
    }
    part[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = get_local_size(0) / 2; s > 0; s >>= 1) {
        if (lid < s)
            part[lid] += part[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        partial[get_group_id(0)] = part[0];
}

/* master (f32) -> working copy in the storage dtype, round to nearest even. */
kernel void refresh_working(global const float *master, global store_t *working, uint n)
{
    uint i = get_global_id(0);
    if (i < n)
        STOREF(working, i, master[i]);
}
