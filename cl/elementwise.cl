/* cl/elementwise.cl — activations, dropout, add, scale, block copies.
 *
 * Dimension letters: N elements (any shape, flattened). One work-item per
 * element; the global size is rounded up, so every kernel checks i < n
 * (except relu_forward, relu_backward and dropout, launched over exactly n
 * items).
 *
 * Precision: buffers are store_t. Comparisons, selects, add and the
 * backward products of sigmoid / tanh use real_t (half in the MPCL_FP16
 * variant). exp and expm1 (gelu, sigmoid, tanh) are computed in float in
 * every variant, and so is every product with a float scalar argument (leaky
 * slope, dropout's 1 / (1 - p), scale's alpha): rounding such a scalar to
 * half first would add an error of its own, and a memory-bound kernel gains
 * nothing from half multiplies. Aliasing: y may be x (and dx may be dy): each
 * work-item reads its element before it writes it. */

#define ACT_RELU 0
#define ACT_LEAKY_RELU 1
#define ACT_GELU 2
#define ACT_SIGMOID 3
#define ACT_TANH 4

#define GELU_C 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_K 0.044715f

/* sigmoid(t) and 1 - sigmoid(t) without overflow: a = exp(-|t|) is in (0, 1]. */
inline float sigmoid_f(float t)
{
    float a = exp(-fabs(t));
    return t >= 0.0f ? 1.0f / (1.0f + a) : a / (1.0f + a);
}

/* tanh through expm1: e = expm1(-2|x|) in (-1, 0], tanh |x| = -e / (2 + e).
 * Accurate near 0, exactly +-1 for large |x| (some libraries' tanh(inf) is
 * one ulp short of 1), -0 stays -0, NaN stays NaN. */
inline float tanh_f(float x)
{
    float e = expm1(-2.0f * fabs(x));
    return copysign(-e / (2.0f + e), x);
}

/* gelu(x) = 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = c (x + k x^3); the
 * sigmoid form has no cancellation for negative x. x -> +inf gives +inf,
 * x -> -inf gives NaN (an overflow stays visible). */
inline float gelu_f(float x)
{
    float u = GELU_C * (x + GELU_K * x * x * x);
    float a = exp(-2.0f * fabs(u));
    return u >= 0.0f ? x / (1.0f + a) : x * a / (1.0f + a);
}

/* gelu'(x) = s + 2 x u' s (1 - s), s = sigmoid(2u), u' = c (1 + 3k x^2).
 * Beyond |x| = 20 the float value is exactly 1 (or 0): clamp there so that
 * x^3 cannot overflow into inf * 0. NaN passes through the clamp. */
inline float gelu_grad_f(float x)
{
    float xc = x > 20.0f ? 20.0f : (x < -20.0f ? -20.0f : x);
    float u = GELU_C * (xc + GELU_K * xc * xc * xc);
    float du = GELU_C * (1.0f + 3.0f * GELU_K * xc * xc);
    float a = exp(-2.0f * fabs(u));
    float inv = 1.0f / (1.0f + a);
    float s = u >= 0.0f ? inv : a * inv;  /* sigmoid(2u) */
    float sm = u >= 0.0f ? a * inv : inv; /* 1 - sigmoid(2u) */
    return s * (1.0f + 2.0f * xc * du * sm);
}

/* ReLU alone, forward and backward: the same results as activation_forward
 * and activation_backward with ACT_RELU, but launched over exactly n items
 * (mpcl_launch_exact_1d), so without a bounds check or a branch around a
 * store, which lets a CPU device vectorise them.
 *
 * fp16-storage works on the halves' bits, without converting: relu keeps
 * a value > 0 and makes anything else +0, NaN kept; the float path (convert,
 * compare, convert back) gives the same bits, a NaN made quiet (| 0x0200)
 * by the way back. (The conversions cost Intel's CPU runtime 4x the fp32
 * time in these memory-bound kernels.) */
#if defined(MPCL_FP16_STORAGE)
/* h > 0 as a half: sign clear, not zero, not NaN */
#define RELU_H_POS(h) (((h) & 0x8000u) == 0u && (h) != 0u && (h) <= 0x7c00u)
#define RELU_H_NAN(h) (((h) & 0x7fffu) > 0x7c00u)
#define RELU_H_OUT(h) (RELU_H_NAN(h) ? (ushort)((h) | 0x0200u) : (ushort)(h))
#endif

kernel void relu_forward(global const store_t *x, /* (N) */
                         global store_t *y)       /* (N), may be x */
{
    const size_t i = get_global_id(0);
#if defined(MPCL_FP16_STORAGE)
    const uint h = x[i];
    y[i] = RELU_H_NAN(h) || RELU_H_POS(h) ? RELU_H_OUT(h) : (ushort)0;
#else
    const real_t v = LOAD(x, i), zero = (real_t)0;
    STORE(y, i, v <= zero ? zero : v);
#endif
}

kernel void relu_backward(global const store_t *dy, /* (N) */
                          global const store_t *x,  /* (N) forward input */
                          global store_t *dx)       /* (N), may be dy */
{
    const size_t i = get_global_id(0);
#if defined(MPCL_FP16_STORAGE)
    const uint g = dy[i], h = x[i];
    dx[i] = RELU_H_POS(h) ? RELU_H_OUT(g) : (ushort)0;
#else
    const real_t g = LOAD(dy, i), v = LOAD(x, i), zero = (real_t)0;
    STORE(dx, i, v > zero ? g : zero);
#endif
}

/* y (N) = f(x (N)); alpha is the leaky slope. relu(-0) = +0, NaN stays NaN. */
kernel void activation_forward(global const store_t *x, /* (N) */
                               global store_t *y,       /* (N), may be x */
                               uint n, int f, float alpha)
{
    size_t i = get_global_id(0);
    if (i >= n)
        return;
    real_t v = LOAD(x, i);
    real_t zero = (real_t)0;
    switch (f) {
    case ACT_RELU:
        STORE(y, i, v <= zero ? zero : v);
        break;
    case ACT_LEAKY_RELU:
        if (v > zero)
            STORE(y, i, v);
        else
            STOREF(y, i, alpha * (float)v);
        break;
    case ACT_GELU:
        STOREF(y, i, gelu_f((float)v));
        break;
    case ACT_SIGMOID:
        STOREF(y, i, sigmoid_f((float)v));
        break;
    default: /* ACT_TANH */
        STOREF(y, i, tanh_f((float)v));
        break;
    }
}

/* dx (N) = dy (N) * f'(.): relu, leaky and gelu from the forward input x,
 * sigmoid and tanh from the forward output y (the other pointer is unused
 * and may be any buffer). relu'(0) = 0, leaky'(0) = alpha. */
kernel void activation_backward(global const store_t *dy, /* (N) */
                                global const store_t *x,  /* (N) forward input */
                                global const store_t *y,  /* (N) forward output */
                                global store_t *dx,       /* (N), may be dy */
                                uint n, int f, float alpha)
{
    size_t i = get_global_id(0);
    if (i >= n)
        return;
    real_t g = LOAD(dy, i);
    real_t one = (real_t)1;
    real_t zero = (real_t)0;
    switch (f) {
    case ACT_RELU: {
        real_t v = LOAD(x, i);
        STORE(dx, i, v > zero ? g : zero);
        break;
    }
    case ACT_LEAKY_RELU: {
        real_t v = LOAD(x, i);
        if (v > zero)
            STORE(dx, i, g);
        else
            STOREF(dx, i, alpha * (float)g);
        break;
    }
    case ACT_GELU:
        STOREF(dx, i, (float)g * gelu_grad_f(LOADF(x, i)));
        break;
    case ACT_SIGMOID: {
        real_t s = LOAD(y, i);
        STORE(dx, i, g * s * (one - s));
        break;
    }
    default: { /* ACT_TANH: 1 - t^2 as (1 - t)(1 + t): no cancellation near |t| = 1 */
        real_t t = LOAD(y, i);
        STORE(dx, i, g * ((one - t) * (one + t)));
        break;
    }
    }
}

/* The dropout generator: splitmix64's output function over a counter.
 * The host derives key = mix64(seed ^ mix64(step ^ GOLDEN)) from (seed,
 * step); element i draws h = mix64(key + (i + 1) * GOLDEN) and uses its top
 * 24 bits: u = (h >> 40) / 2^24 in [0, 1). */
inline ulong mix64(ulong z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
    return z ^ (z >> 31);
}

/* y (N) = keep_i ? x * scale : +0, keep_i = u_i >= p. Forward and backward
 * (dx from dy) are the same kernel: the mask is regenerated from the key.
 * Launched over exactly n items (mpcl_launch_exact_1d), the store
 * unconditional: a CPU device vectorises it. */
kernel void dropout(global const store_t *x, /* (N) */
                    global store_t *y,       /* (N), may be x */
                    uint key_lo, uint key_hi, float p, float scale)
{
    const size_t i = get_global_id(0);
    const ulong key = ((ulong)key_hi << 32) | (ulong)key_lo;
    const ulong h = mix64(key + ((ulong)i + 1UL) * 0x9e3779b97f4a7c15UL);
    const float u = (float)(uint)(h >> 40) * 0x1p-24f;
    const float v = LOADF(x, i) * scale;
    STOREF(y, i, u >= p ? v : 0.0f);
}

/* y (N) = a (N) + b (N); y may be a or b. */
kernel void add(global const store_t *a, /* (N) */
                global const store_t *b, /* (N) */
                global store_t *y,       /* (N) */
                uint n)
{
    size_t i = get_global_id(0);
    if (i >= n)
        return;
    STORE(y, i, LOAD(a, i) + LOAD(b, i));
}

/* A block of rows: dst[r * dst_ld + dst_off + i] = src[r * src_ld + src_off + i]
 * (accumulate: += ) for r < rows, i < cols, one item per element: concat's
 * channel slices (a row is one sample's C x H x W). */
kernel void copy_block(global const store_t *src, /* (rows, src_ld) */
                       global store_t *dst,       /* (rows, dst_ld) */
                       uint src_ld, uint src_off, uint dst_ld, uint dst_off, uint rows, uint cols,
                       uint accumulate)
{
    size_t g = get_global_id(0);
    if (g >= (size_t)rows * cols)
        return;
    size_t r = g / cols, i = g - r * cols;
    size_t d = r * dst_ld + dst_off + i;
    real_t v = LOAD(src, r * src_ld + src_off + i);
    if (accumulate)
        v = v + LOAD(dst, d);
    STORE(dst, d, v);
}

/* y (N) = alpha * x (N), in float; y may be x. */
kernel void scale(global const store_t *x, /* (N) */
                  global store_t *y,       /* (N) */
                  uint n, float alpha)
{
    size_t i = get_global_id(0);
    if (i >= n)
        return;
    STOREF(y, i, alpha * LOADF(x, i));
}

/* The same on f32 tensors in any variant. */
kernel void scale_f32(global const float *x, /* (N) */
                      global float *y,       /* (N) */
                      uint n, float alpha)
{
    size_t i = get_global_id(0);
    if (i >= n)
        return;
    y[i] = alpha * x[i];
}
