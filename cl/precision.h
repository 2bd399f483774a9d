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
typedef half store_t; /* pointers to half need no extension */
typedef float real_t;
#define LOAD(p, i) vload_half((i), (p))
#define STORE(p, i, v) vstore_half_rte((v), (i), (p))
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
