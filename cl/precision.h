/* cl/precision.h — included first by every kernel source (the library passes
 * it as the first source string; offline compilers use -include).
 *
 * One source serves three precision variants, chosen by a define:
 *   MPCL_FP16          half buffers and half elementwise math (cl_khr_fp16)
 *   MPCL_FP16_STORAGE  half buffers read with vload_half, written with
 *                      vstore_half_rte; float math; no extension needed
 *   MPCL_FP32          float everywhere (the default)
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

/* Load as float / store from float, whatever the variant. */
#define LOADF(p, i) ((float)LOAD(p, i))
#define STOREF(p, i, v) STORE(p, i, (real_t)(v))

#endif
