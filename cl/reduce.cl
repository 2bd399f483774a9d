/* cl/reduce.cl — whole-tensor reductions (sum, mean, max |x|), finite
 * checks and the loss scaler's fused unscale.
 *
 * Dimension letters: N elements (any shape, flattened), G work-groups of
 * the first stage, L work-items per group (a power of two, fixed per device
 * by the host, with L floats / ints of local memory passed as the last
 * argument).
 *
 * Every reduction accumulates in acc_t (float), in every variant. Each
 * work-item walks a grid-stride loop over the input (i = gid, gid + G L, ...),
 * then each group combines its L values in a fixed local-memory tree. The
 * order depends only on N, G and L, so the result is the same on every run
 * (no float atomics). The finite checks end with one atomic_and on an int
 * flag per group that saw a non-finite value (atomics are race-free). Every
 * work-item reaches every barrier: bounds are checked inside the loops. */

#define RED_SUM 0
#define RED_MEAN 1
#define RED_MAX_ABS 2

/* max that propagates NaN: a NaN on either side wins. */
inline acc_t max_nan(acc_t a, acc_t b) { return (a > b || a != a) ? a : b; }

inline acc_t red_combine(int op, acc_t a, acc_t b)
{
    return op == RED_MAX_ABS ? max_nan(a, b) : a + b;
}

/* Tree over tmp[0..L): leaves the group's value in tmp[0]. */
inline void tree_acc(local acc_t *tmp, int op)
{
    uint lid = get_local_id(0);
    for (uint s = get_local_size(0) / 2; s > 0; s >>= 1) {
        if (lid < s)
            tmp[lid] = red_combine(op, tmp[lid], tmp[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

inline void tree_min_int(local int *tmp)
{
    uint lid = get_local_id(0);
    for (uint s = get_local_size(0) / 2; s > 0; s >>= 1) {
        if (lid < s)
            tmp[lid] = min(tmp[lid], tmp[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

/* Stage 1: partial (G) = the reduction of each group's share of x (N).
 * For max |x| the partials are already absolute values. */
#define DEFINE_REDUCE_PARTIAL(NAME, T, LOADER)                                                     \
    kernel void NAME(global const T *x, /* (N) */                                                  \
                     uint n, int op,                                                               \
                     global acc_t *partial, /* (G) */                                              \
                     local acc_t *tmp)      /* (L) */                                              \
    {                                                                                              \
        acc_t acc = 0.0f;                                                                          \
        size_t stride = get_global_size(0);                                                        \
        for (size_t i = get_global_id(0); i < n; i += stride) {                                    \
            acc_t v = LOADER(x, i);                                                                \
            acc = op == RED_MAX_ABS ? max_nan(acc, fabs(v)) : acc + v;                             \
        }                                                                                          \
        tmp[get_local_id(0)] = acc;                                                                \
        barrier(CLK_LOCAL_MEM_FENCE);                                                              \
        tree_acc(tmp, op);                                                                         \
        if (get_local_id(0) == 0)                                                                  \
            partial[get_group_id(0)] = tmp[0];                                                     \
    }

#define LOAD_F32(p, i) ((p)[i])

DEFINE_REDUCE_PARTIAL(reduce_partial, store_t, LOADF)
DEFINE_REDUCE_PARTIAL(reduce_partial_f32, float, LOAD_F32)

/* Stage 2, one group of L: out (1) = the reduction of partial (G), times
 * scale (1 / N for the mean, else 1). */
kernel void reduce_final(global const acc_t *partial, /* (G) */
                         uint groups, int op, float scale,
                         global float *out, /* (1) */
                         local acc_t *tmp)  /* (L) */
{
    uint lid = get_local_id(0);
    acc_t acc = 0.0f;
    for (uint g = lid; g < groups; g += get_local_size(0))
        acc = red_combine(op, acc, partial[g]);
    tmp[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    tree_acc(tmp, op);
    if (lid == 0)
        out[0] = op == RED_MEAN ? tmp[0] * scale : tmp[0];
}

/* What a stored value can hold: a float r stored as half (round to nearest
 * even) is finite iff |r| < 65520, the midpoint between the largest half
 * (65504) and the next power of two. NaN compares false. */
#if defined(MPCL_FP32)
#define STORED_FINITE(r) isfinite(r)
#elif defined(MPCL_BF16)
/* bf16: finite iff |r| < 0x1.fep127 + half an ulp, the midpoint between the
 * largest bf16 (0x7f7f) and 2^128, which rounds (to even) up to inf. */
#define STORED_FINITE(r) (fabs(r) < as_float(0x7f7f8000u))
#else
#define STORED_FINITE(r) (fabs(r) < 65520.0f)
#endif
#define F32_FINITE(r) isfinite(r)

/* Ends a finite check: flag (1) &= 0 once per group that saw a non-finite
 * value (ok == 0 in some work-item). */
inline void flag_group(local int *tmp, int ok, global int *flag)
{
    tmp[get_local_id(0)] = ok;
    barrier(CLK_LOCAL_MEM_FENCE);
    tree_min_int(tmp);
    if (get_local_id(0) == 0 && tmp[0] == 0)
        atomic_and(flag, 0);
}

/* flag (1) = v (one work-item). */
kernel void flag_set(global int *flag, /* (1) */
                     int v)
{
    if (get_global_id(0) == 0)
        flag[0] = v;
}

/* flag (1) &= "every element of x (N) is finite". */
#define DEFINE_ALL_FINITE(NAME, T, LOADER)                                                         \
    kernel void NAME(global const T *x, /* (N) */                                                  \
                     uint n,                                                                       \
                     global int *flag, /* (1) */                                                   \
                     local int *tmp)   /* (L) */                                                   \
    {                                                                                              \
        int ok = 1;                                                                                \
        size_t stride = get_global_size(0);                                                        \
        for (size_t i = get_global_id(0); i < n; i += stride)                                      \
            ok &= isfinite(LOADER(x, i)) ? 1 : 0;                                                  \
        flag_group(tmp, ok, flag);                                                                 \
    }

DEFINE_ALL_FINITE(all_finite, store_t, LOADF)
DEFINE_ALL_FINITE(all_finite_f32, float, LOAD_F32)

/* x (N) *= inv_scale in place (in float), and flag (1) &= "every stored
 * result is finite": one pass.
 *
 * The _main kernels cover the first G * UNSCALE_U elements, G its global size:
 * work item g does g, g + G, ..., g + (UNSCALE_U - 1) G, unrolled, with no
 * bounds check and no loop, so a CPU device vectorises the pass across work
 * items (PoCL vectorises only innermost loops: a grid-stride loop in the
 * kernel ran scalar); then one tree per group. The others do the rest,
 * elements base, base + 1, ..., n - 1, in a checked grid-stride loop
 * (base = 0: all of them). */
#define UNSCALE_U 8
#define DEFINE_UNSCALE_MAIN(NAME, T, LOADER, STORER, FINITE)                                       \
    kernel void NAME(global T *x, /* (N) */                                                        \
                     float inv_scale,                                                              \
                     global int *flag, /* (1) */                                                   \
                     local int *tmp)   /* (L) */                                                   \
    {                                                                                              \
        int ok = 1;                                                                                \
        const size_t g = get_global_id(0), G = get_global_size(0);                                 \
        _Pragma("unroll") for (int u = 0; u < UNSCALE_U; u++)                                      \
        {                                                                                          \
            const float r = LOADER(x, g + u * G) * inv_scale;                                      \
            STORER(x, g + u * G, r);                                                               \
            ok &= FINITE(r) ? 1 : 0;                                                               \
        }                                                                                          \
        flag_group(tmp, ok, flag);                                                                 \
    }
#define DEFINE_UNSCALE(NAME, T, LOADER, STORER, FINITE)                                            \
    kernel void NAME(global T *x, /* (N) */                                                        \
                     uint n, float inv_scale,                                                      \
                     global int *flag, /* (1) */                                                   \
                     local int *tmp,   /* (L) */                                                   \
                     uint base)                                                                    \
    {                                                                                              \
        int ok = 1;                                                                                \
        size_t stride = get_global_size(0);                                                        \
        for (size_t i = base + get_global_id(0); i < n; i += stride) {                             \
            float r = LOADER(x, i) * inv_scale;                                                    \
            STORER(x, i, r);                                                                       \
            ok &= FINITE(r) ? 1 : 0;                                                               \
        }                                                                                          \
        flag_group(tmp, ok, flag);                                                                 \
    }

#define STORE_F32(p, i, v) ((p)[i] = (v))

DEFINE_UNSCALE_MAIN(unscale_main, store_t, LOADF, STOREF, STORED_FINITE)
DEFINE_UNSCALE_MAIN(unscale_f32_main, float, LOAD_F32, STORE_F32, F32_FINITE)
DEFINE_UNSCALE(unscale, store_t, LOADF, STOREF, STORED_FINITE)
DEFINE_UNSCALE(unscale_f32, float, LOAD_F32, STORE_F32, F32_FINITE)
