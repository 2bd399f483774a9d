/* cl/precision.h — included first by every kernel source (the library passes
 * it as the first source string; offline compilers use -include).
 *
 * One source serves three precision variants, chosen by a define:
 *   MPCL_FP16          half buffers and half elementwise math (cl_khr_fp16)
 *   MPCL_FP16_STORAGE  half buffers read with vload_half, written with
 *                      vstore_half_rte; float math; no extension needed
 *   MPCL_FP32          float everywhere (the default)
 *   MPCL_BF16          bfloat16 buffers (ushort: the upper 16 bits of a
 *                      float), float math; integer conversions, no
 *                      extension needed (MPCL_BF16_INTEL: the verified
 *                      cl_intel_bfloat16 conversion built-ins instead)
 * Every reduction accumulates in acc_t (float) in every variant.
 *
 * Portability rules for the MPCL_FP16 variant: only + - * /, fma/mad,
 * comparisons, min/max and casts on half. exp, log, tanh, sqrt, dot and the
 * rest are computed in float: some half-capable drivers lack half math
 * built-ins. Half scalars are never kernel arguments (not portable): pass
 * float and convert. */
#ifndef MPCL_PRECISION_H
#define MPCL_PRECISION_H

#if defined(MPCL_FP16)
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
typedef half store_t; /* what buffers hold */
typedef half real_t;  /* elementwise arithmetic */
#define LOAD(p, i) ((p)[i])
#define STORE(p, i, v) ((p)[i] = (half)(v))
#define MPCL_VARIANT_NAME "fp16"
#elif defined(MPCL_FP16_STORAGE)
/* Half buffers are held as their IEEE binary16 bit patterns (ushort) and
 * converted to and from float with integer and float operations that a
 * device without half hardware vectorises (PoCL 3.1 on x86 runs a scalar
 * vstore_half_rte as a software routine per element that its vectoriser
 * cannot widen: 10x slower than the code below). The conversions are exact: half -> float is exact by
 * nature, float -> half rounds to nearest even, overflows to inf, keeps
 * subnormals, -0, inf and NaN (quiet, sign and top payload bits kept), the
 * same bits as the host's mpcl_half_from_float / mpcl_half_to_float
 * (tests/test_half.c checks them on the device against both, and against
 * the device's vload_half / vstore_half_rte).
 *
 * Whether these or the built-ins vload_half / vstore_half_rte are faster
 * depends on the device (hardware conversion, how the compiler treats the
 * built-ins), and on the width: the host measures both once per device
 * (src/halfconv.c) and builds with -DMPCL_HALF_BUILTIN_SCALAR (mpcl_h2f,
 * mpcl_f2h) and / or -DMPCL_HALF_BUILTIN_VECTOR (the 2- to 16-wide forms)
 * where the built-ins won. -DMPCL_HALF_BUILTIN means both. Both ways give
 * the same bits, so the choice never changes a result. */
typedef ushort store_t; /* the half's bits; no extension needed */
typedef float real_t;

/* Through a private variable: vload_half / vstore_half_rte take a pointer
 * to half in any address space. */
#define MPCL_HALF_CONV_BUILTIN(N)                                               \
    static inline float##N mpcl_h2f##N(ushort##N h)                           \
    {                                                                           \
        return vload_half##N(0, (const private half *)&h);                    \
    }                                                                           \
    static inline ushort##N mpcl_f2h##N(float##N v)                           \
    {                                                                           \
        ushort##N h;                                                            \
        vstore_half##N##_rte(v, 0, (private half *)&h);                        \
        return h;                                                               \
    }

/* half -> float: exponent and mantissa moved into place (<< 13) with the
 * exponent rebiased (+112) for normal halves; for inf and NaN the float's
 * all-ones exponent (payload kept bit for bit); zeros and subnormals
 * m * 2^-24 as (float)m * 2^-24, exact and a normal float (so right also
 * where float subnormals are flushed). The sign goes on last: -0 stays -0.
 * (Written with float selects: the same cases selected as integers kept
 * PoCL 3.1 from vectorising max pooling.)
 *
 * float -> half, on a = |x|'s bits:
 *   normal results (2^-14 <= a < 2^16): rebias (-112 << 23), add half a
 *     half ulp less one (0xfff) plus the ulp's parity (ties to even), drop
 *     13 bits; a carry bumps the exponent, up to inf from 65520 on;
 *   subnormal results (a < 2^-14): a + 0.5f puts 2^-24 at float's last
 *     bit, so the float addition rounds to nearest even exactly there, and
 *     the bits above 0.5 are the half's code (1024 when it rounds up to the
 *     smallest normal); float subnormal inputs give 0 whether or not the
 *     device flushes them;
 *   a >= 2^16 (and inf): inf; NaN: 0x7e00 | the top 10 payload bits.
 * Every path is computed and the result selected, so the code has no
 * branches and vectorises. */
#define MPCL_HALF_CONV_SOFT(N)                                                  \
    static inline float##N mpcl_h2f##N(ushort##N h16)                         \
    {                                                                           \
        const uint##N h = convert_uint##N(h16);                                 \
        const uint##N o = (h & 0x7fffu) << 13;                                  \
        float##N f = as_float##N(o + 0x38000000u);                              \
        f = (h & 0x7c00u) == 0u ? convert_float##N(h & 0x3ffu) * 0x1p-24f : f;  \
        f = (h & 0x7c00u) == 0x7c00u ? as_float##N(o | 0x7f800000u) : f;        \
        return as_float##N(as_uint##N(f) | ((h & 0x8000u) << 16));              \
    }                                                                           \
    static inline ushort##N mpcl_f2h##N(float##N v)                           \
    {                                                                           \
        const uint##N f = as_uint##N(v);                                        \
        const uint##N a = f & 0x7fffffffu;                                      \
        const uint##N norm = (a - 0x38000000u + 0x0fffu + ((a >> 13) & 1u)) >> 13; \
        const uint##N sub = as_uint##N(as_float##N(a) + 0.5f) - 0x3f000000u;    \
        uint##N o = a < 0x38800000u ? sub : norm;                               \
        o = a >= 0x47800000u ? (uint##N)0x7c00u : o;                            \
        o = a > 0x7f800000u ? (0x7e00u | ((a >> 13) & 0x3ffu)) : o;             \
        return convert_ushort##N(o | ((f >> 16) & 0x8000u));                    \
    }

#if defined(MPCL_HALF_BUILTIN)
#define MPCL_HALF_BUILTIN_SCALAR
#define MPCL_HALF_BUILTIN_VECTOR
#endif
#if defined(MPCL_HALF_BUILTIN_SCALAR)
MPCL_HALF_CONV_BUILTIN()
#else
MPCL_HALF_CONV_SOFT()
#endif
#if defined(MPCL_HALF_BUILTIN_VECTOR)
MPCL_HALF_CONV_BUILTIN(2)
MPCL_HALF_CONV_BUILTIN(4)
MPCL_HALF_CONV_BUILTIN(8)
MPCL_HALF_CONV_BUILTIN(16)
#else
MPCL_HALF_CONV_SOFT(2)
MPCL_HALF_CONV_SOFT(4)
MPCL_HALF_CONV_SOFT(8)
MPCL_HALF_CONV_SOFT(16)
#endif

#define LOAD(p, i) mpcl_h2f((p)[i])
#define STORE(p, i, v) ((p)[i] = mpcl_f2h((float)(v)))
/* Eight halves from p + i as float8, eight floats to p + i. */
#define LOAD_HALF8(p, i) mpcl_h2f8(vload8(0, (p) + (i)))
#define STORE_HALF8(p, i, v) vstore8(mpcl_f2h8(v), 0, (p) + (i))
#define MPCL_VARIANT_NAME "fp16-storage"
#elif defined(MPCL_BF16)
typedef ushort store_t; /* bfloat16 bits */
typedef float real_t;
#define LOAD(p, i) mpcl_bf16_load((p)[i])
#define STORE(p, i, v) ((p)[i] = mpcl_bf16_store((float)(v)))
#define MPCL_VARIANT_NAME "bf16"
#else
#ifndef MPCL_FP32
#define MPCL_FP32
#endif
typedef float store_t;
typedef float real_t;
#define LOAD(p, i) ((p)[i])
#define STORE(p, i, v) ((p)[i] = (v))
#define MPCL_VARIANT_NAME "fp32"
#endif

typedef float acc_t; /* every reduction accumulates in float */

/* bfloat16 <-> float, available in every variant (the GEMM router's and the
 * casts' bf16 kernels run whatever the context's mode). The integer path
 * works on every OpenCL 1.2 device: widening is a shift; narrowing rounds
 * the low 16 bits to nearest even (adding 0x7fff plus the lowest kept bit;
 * a carry steps the exponent, up to inf), NaN stays NaN with the quiet bit
 * set. MPCL_BF16_INTEL (set only after the probe verified the built-ins bit
 * for bit against the host) uses cl_intel_bfloat16's conversions. */
#if defined(MPCL_BF16_INTEL)
#pragma OPENCL EXTENSION cl_intel_bfloat16_conversions : enable
#define mpcl_bf16_load(h) intel_convert_as_bfloat16_float(h)
#define mpcl_bf16_store(f) intel_convert_bfloat16_as_ushort(f)
#else
/* Macros, not functions: PoCL vectorised the forward conv and pool kernels
 * several times better this way (measured: conv_direct_forward 6x). The
 * argument of mpcl_bf16_store is evaluated more than once: pass it no side
 * effects (STORE passes a value). */
#define mpcl_bf16_load(h) as_float((uint)(h) << 16)
#define mpcl_bf16_round_(u)                                                                        \
    ((ushort)((((u) & 0x7fffffffu) > 0x7f800000u ? ((u) | 0x00400000u)                            \
                                                 : ((u) + 0x7fffu + (((u) >> 16) & 1u))) >>        \
              16))
#define mpcl_bf16_store(f) mpcl_bf16_round_(as_uint((float)(f)))
#endif

/* Load as float / store from float, whatever the variant. */
#define LOADF(p, i) ((float)LOAD(p, i))
#define STOREF(p, i, v) STORE(p, i, (real_t)(v))

#endif
