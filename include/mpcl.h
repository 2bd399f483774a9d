/*
 * mpcl.h — the one public header of mpcl, a portable mixed-precision
 * training engine on OpenCL.
 *
 * A worked example: open the default device, see what it can do and which
 * precision mode mpcl chose for it, and why.
 *
 *     mpcl_options opt;
 *     mpcl_options_init(&opt);            // device from MPCL_DEVICE, else first GPU
 *     opt.precision = MPCL_PRECISION_AUTO;
 *     mpcl_context *ctx = NULL;
 *     if (mpcl_context_create(&opt, &ctx) != MPCL_OK) {
 *         fprintf(stderr, "%s\n", mpcl_last_error(ctx));
 *         mpcl_context_destroy(ctx);      // NULL-safe; frees the failed context
 *         return 1;
 *     }
 *     const char *why = NULL;
 *     mpcl_precision p = mpcl_precision_chosen(ctx, &why);
 *     printf("precision %s: %s\n", mpcl_precision_name(p), why);
 *     mpcl_context_destroy(ctx);
 *
 * Conventions
 *   - Every call that can fail returns mpcl_status; the context keeps a
 *     readable message for the last failure (mpcl_last_error), naming the
 *     operation, the OpenCL error by name and the shapes involved.
 *   - The library never exits, aborts or prints; the caller decides.
 *   - No global mutable state: everything hangs off an mpcl_context. A
 *     context is used from one thread at a time.
 *   - Destroy functions accept NULL.
 */
#ifndef MPCL_H
#define MPCL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(MPCL_STATIC)
#define MPCL_API __attribute__((visibility("default")))
#else
#define MPCL_API
#endif

#define MPCL_VERSION_MAJOR 0
#define MPCL_VERSION_MINOR 1
#define MPCL_VERSION_PATCH 0

/* "0.1.0" */
MPCL_API const char *mpcl_version(void);

/* ---------------------------------------------------------------- status */

/* X(name, value, description) — one table generates the enum and its strings. */
#define MPCL_STATUS_MAP(X)                                                    \
    X(OK, 0, "success")                                                       \
    X(ERR_ARGUMENT, 1, "invalid argument")                                    \
    X(ERR_NO_PLATFORM, 2, "no OpenCL platform")                               \
    X(ERR_NO_DEVICE, 3, "no matching OpenCL device")                          \
    X(ERR_OPENCL, 4, "OpenCL call failed")                                    \
    X(ERR_BUILD, 5, "kernel program build failed")                            \
    X(ERR_UNSUPPORTED, 6, "not supported by this device")                     \
    X(ERR_CLBLAST, 7, "CLBlast call failed")                                  \
    X(ERR_NOMEM, 8, "out of host memory")                                     \
    X(ERR_IO, 9, "file I/O failed")                                           \
    X(ERR_FORMAT, 10, "malformed input")                                      \
    X(ERR_SHAPE, 11, "shapes do not match")                                   \
    X(ERR_STATE, 12, "object in the wrong state for this call")

typedef enum {
#define MPCL_STATUS_ENUM_(name, value, text) MPCL_##name = value,
    MPCL_STATUS_MAP(MPCL_STATUS_ENUM_)
#undef MPCL_STATUS_ENUM_
} mpcl_status;

/* "MPCL_ERR_BUILD" and "kernel program build failed"; never NULL. */
MPCL_API const char *mpcl_status_name(mpcl_status s);
MPCL_API const char *mpcl_status_string(mpcl_status s);

/* ------------------------------------------------------- precision modes */

typedef enum {
    MPCL_PRECISION_AUTO = 0,     /* fp16 when the probe verified half arithmetic, else fp32 */
    MPCL_PRECISION_FP16,         /* half storage and elementwise math, Hgemm */
    MPCL_PRECISION_FP16_STORAGE, /* half storage, float math (vload_half / vstore_half) */
    MPCL_PRECISION_FP32          /* float everywhere */
} mpcl_precision;

/* "auto", "fp16", "fp16-storage", "fp32" */
MPCL_API const char *mpcl_precision_name(mpcl_precision p);
/* Parses those names; MPCL_ERR_ARGUMENT for anything else. */
MPCL_API mpcl_status mpcl_precision_parse(const char *name, mpcl_precision *out);

/* ----------------------------------------------------- host fp16 (half.c) */

/* float -> IEEE binary16, round to nearest even; overflow gives inf,
 * subnormals are kept, NaN stays NaN (quiet, sign and top payload bits kept). */
MPCL_API uint16_t mpcl_half_from_float(float x);
/* binary16 -> float, exact. */
MPCL_API float mpcl_half_to_float(uint16_t h);
MPCL_API void mpcl_half_from_float_array(uint16_t *dst, const float *src, size_t n);
MPCL_API void mpcl_half_to_float_array(float *dst, const uint16_t *src, size_t n);

/* -------------------------------------------------------------- devices */

typedef enum {
    MPCL_DEVICE_CPU = 1,
    MPCL_DEVICE_GPU = 2,
    MPCL_DEVICE_ACCELERATOR = 4,
    MPCL_DEVICE_OTHER = 8
} mpcl_device_type;

typedef struct {
    unsigned platform_index; /* the "P" of a "P:D" selector */
    unsigned device_index;   /* the "D", counted within the platform */
    mpcl_device_type type;
    char platform[128];
    char name[128];
    char vendor[128];
} mpcl_device_desc;

/* Lists every device of every platform. Writes up to cap entries, sets
 * *count to the total. Without any platform returns MPCL_ERR_NO_PLATFORM and
 * writes a message (what was looked for, and how to fix it) into err. */
MPCL_API mpcl_status mpcl_device_list(mpcl_device_desc *out, size_t cap, size_t *count,
                             char *err, size_t err_len);

/* "cpu", "gpu", "accelerator", "other" */
MPCL_API const char *mpcl_device_type_name(mpcl_device_type t);

/* -------------------------------------------------------------- context */

typedef struct mpcl_context mpcl_context;

typedef struct {
    /* Device selector: "P:D" (platform:device index), a device type ("gpu",
     * "cpu", "accelerator"), or a case-insensitive substring of the device
     * or platform name. NULL: $MPCL_DEVICE, else the first GPU, else the
     * first device. */
    const char *device;
    mpcl_precision precision;
    uint64_t seed;
    /* Program binary cache directory. NULL: $XDG_CACHE_HOME/mpcl, else
     * $HOME/.cache/mpcl. */
    const char *cache_dir;
    /* Non-zero disables the binary cache (so does MPCL_NO_CACHE=1). */
    int no_cache;
    /* Load kernel sources from this directory instead of the copies embedded
     * in the library. NULL: $MPCL_KERNEL_DIR, else embedded. */
    const char *kernel_dir;
} mpcl_options;

MPCL_API void mpcl_options_init(mpcl_options *opt);

/* Opens the selected device, runs the functional fp16 checks and chooses the
 * precision mode. On failure *out still receives a context that holds only
 * the error message: read it with mpcl_last_error, then destroy it. *out is
 * NULL only when host memory ran out. */
MPCL_API mpcl_status mpcl_context_create(const mpcl_options *opt, mpcl_context **out);
MPCL_API void mpcl_context_destroy(mpcl_context *ctx);

/* The message of the last failure on ctx ("" when none). NULL ctx: a fixed
 * text about running out of memory. */
MPCL_API const char *mpcl_last_error(const mpcl_context *ctx);

/* The mode in use (never AUTO) and, if why != NULL, a sentence saying why it
 * was chosen. */
MPCL_API mpcl_precision mpcl_precision_chosen(const mpcl_context *ctx, const char **why);

/* ---------------------------------------------------------------- probe */

typedef enum {
    MPCL_FP16_UNSUPPORTED = 0,   /* not declared, and does not compile or run right */
    MPCL_FP16_DECLARED_WORKS,    /* cl_khr_fp16 declared, results verified */
    MPCL_FP16_UNDECLARED_WORKS,  /* not declared, yet compiles and verifies */
    MPCL_FP16_DECLARED_BROKEN    /* declared, but fails to build or gives wrong results */
} mpcl_fp16_arith;

/* "unsupported", "declared and works", "works but not declared", "declared but broken" */
MPCL_API const char *mpcl_fp16_arith_name(mpcl_fp16_arith a);

#define MPCL_REASON_LEN 512

typedef struct {
    int passed; /* 1 pass, 0 fail */
    char reason[MPCL_REASON_LEN];
} mpcl_check;

typedef struct {
    int ran; /* 0 when the figure was skipped; reason says why */
    double value;
    char reason[160];
} mpcl_figure;

typedef struct {
    /* facts */
    char platform[128];
    char platform_vendor[128];
    char platform_version[128];
    char device[128];
    char vendor[128];
    char driver_version[128];
    char device_version[128]; /* "OpenCL 3.0 ..." */
    char c_version[128];      /* "OpenCL C 1.2 ..." */
    mpcl_device_type type;
    unsigned compute_units;
    unsigned clock_mhz;
    uint64_t global_mem_bytes;
    uint64_t local_mem_bytes;
    uint64_t constant_mem_bytes;
    uint64_t max_alloc_bytes;
    uint64_t max_work_group_size;
    unsigned preferred_half_width;
    unsigned native_half_width;
    uint64_t half_fp_config; /* CL_DEVICE_HALF_FP_CONFIG bits (0 when not reported) */
    int ext_fp16, ext_fp64, ext_subgroups, ext_int64_atomics;

    /* functional checks */
    mpcl_check fp16_storage;       /* (a) vload_half / vstore_half_rte round trips */
    mpcl_fp16_arith fp16_arith;    /* (b) classification */
    mpcl_check fp16_arith_check;   /* (b) pass/fail and reason */
    int fp16_flushes_subnormals;   /* (b) observed flush-to-zero of half subnormals */
    mpcl_check sgemm;              /* (c) CLBlast Sgemm on a small problem */
    mpcl_check hgemm;              /* (c) CLBlast Hgemm on a small problem */

    /* precision choice */
    mpcl_precision chosen;
    char chosen_why[MPCL_REASON_LEN];

    /* micro-benchmarks (mpcl_probe with bench = 1) */
    int bench_ran;
    unsigned gemm_n;
    mpcl_figure bandwidth_gbs;       /* global memory copy, read + write bytes */
    mpcl_figure fp32_gflops;         /* float FMA chain */
    mpcl_figure fp16_gflops;         /* half FMA chain (fp16 arithmetic only) */
    mpcl_figure sgemm_gflops;        /* CLBlast Sgemm n x n x n */
    mpcl_figure hgemm_gflops;        /* CLBlast Hgemm n x n x n */
    mpcl_figure h2d_gbs;             /* clEnqueueWriteBuffer, blocking */
    mpcl_figure d2h_gbs;             /* clEnqueueReadBuffer, blocking */
    mpcl_figure launch_us;           /* empty kernel, enqueue to completion */
    mpcl_figure build_cold_ms;       /* program build from source, no cache */
    mpcl_figure build_warm_ms;       /* program build from the binary cache */
} mpcl_caps;

typedef struct {
    int bench;       /* run the micro-benchmarks */
    unsigned gemm_n; /* GEMM size for the benchmark; 0: 1024 */
} mpcl_probe_options;

/* Copies the device facts, check results and precision choice into *out and,
 * when opt->bench is set, runs the micro-benchmarks (seconds). opt may be NULL. */
MPCL_API mpcl_status mpcl_probe(mpcl_context *ctx, const mpcl_probe_options *opt, mpcl_caps *out);

#ifdef __cplusplus
}
#endif
#endif /* MPCL_H */
