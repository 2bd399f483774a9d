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

#include <signal.h>
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
#define MPCL_VERSION_MINOR 2
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
    X(ERR_STATE, 12, "object in the wrong state for this call")               \
    X(ERR_TIMEOUT, 13, "no answer from another process in time")              \
    X(ERR_DEVICE_MEMORY, 14, "out of device memory")

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
    MPCL_PRECISION_FP32,         /* float everywhere */
    MPCL_PRECISION_BF16          /* bfloat16 storage, float math, no loss scaling by default */
} mpcl_precision;

/* "auto", "fp16", "fp16-storage", "fp32", "bf16". auto never picks bf16. */
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

/* ---------------------------------------------------- host bf16 (bf16.c) */

/* float -> bfloat16 (the upper 16 bits of a float), round to nearest even;
 * overflow gives inf, inf stays inf, subnormals are kept, NaN stays NaN
 * (quiet: sign and the top 6 payload bits kept, the quiet bit set). */
MPCL_API uint16_t mpcl_bf16_from_float(float x);
/* bfloat16 -> float, exact. */
MPCL_API float mpcl_bf16_to_float(uint16_t h);
MPCL_API void mpcl_bf16_from_float_array(uint16_t *dst, const float *src, size_t n);
MPCL_API void mpcl_bf16_to_float_array(float *dst, const uint16_t *src, size_t n);

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
    /* Caps the work-group size of every launch of mpcl's own kernels, as if
     * the device's limit were this small (any value >= 1, powers of two or
     * not): to check that mpcl runs on a device whose limit is smaller than
     * the one at hand, or to debug a device. Kernels that want larger
     * groups adapt (smaller tiles, loops over the group). 0: no cap beyond
     * the device's and each kernel's own limit, else $MPCL_MAX_WORK_GROUP.
     * CLBlast's GEMM kernels choose their own groups within the device's
     * limit and are not capped. */
    size_t max_work_group_size;
    /* 0: apply the device's CLBlast tuning from the cache (else mpcl's
     * built-in starting point for the device, if any); 1: leave CLBlast's
     * own parameters (also MPCL_CLBLAST_OWN=1), e.g. to measure them. */
    int clblast_own;
    /* Convolutions (see mpcl_conv_configure): the algorithm of every
     * convolution ("auto": measured per layer and device, and cached;
     * "im2col", "im2col-dwt", "im2col16", "direct"), the im2col copy
     * kernel ("auto", "rows", "taps") and the images per im2col chunk (0:
     * measured). NULL / 0: $MPCL_CONV_ALGO, $MPCL_IM2COL, $MPCL_CONV_CHUNK,
     * else auto. Read once, at creation. */
    const char *conv_algo;
    const char *conv_im2col;
    size_t conv_chunk;
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
    mpcl_check bf16_storage;       /* (d) bf16 by integer operations: all 65,536 loads, rounding */
    int ext_bf16_intel;            /* cl_intel_bfloat16 (or _conversions) declared */
    mpcl_check bf16_intel;         /* (d) its conversion built-ins, bit for bit against the host */
    int bf16_intel_used;           /* 1: the bf16 kernels use those built-ins */

    /* precision choice */
    mpcl_precision chosen;
    char chosen_why[MPCL_REASON_LEN];

    /* micro-benchmarks (mpcl_probe with bench = 1) */
    int bench_ran;
    unsigned gemm_n;
    mpcl_figure bandwidth_gbs;       /* global memory copy, read + write bytes */
    mpcl_figure fp32_gflops;         /* float FMA chain */
    mpcl_figure fp16_gflops;         /* half FMA chain (fp16 arithmetic only) */
    mpcl_figure sgemm_gflops;        /* CLBlast Sgemm n x n x n, with mpcl's tuning for the device */
    mpcl_figure sgemm_untuned_gflops; /* the same with CLBlast's own parameters */
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

/* One GEMM shape timed through CLBlast (`mpcl bench gemm`, docs/bench.md):
 * C (m, n) = op(A) (m, k) op(B) (k, n), row-major, alpha 1, beta 0. */
typedef struct {
    size_t m, n, k;
    int trans_a, trans_b; /* A stored (k, m), B stored (n, k) when set */
    int half;             /* 0: CLBlast Sgemm on float; 1: CLBlast Hgemm on half */
    int tuned;            /* 1: mpcl's CLBlast tuning for the device; 0: CLBlast's own parameters */
    unsigned repeats;     /* timed repetitions, the median counts; default 5 */
    double min_repeat_s;  /* calls per repetition raised until one lasts this long; default 0.05 */
    int routed;           /* 1 (float only): through the GEMM router, as training runs it: mpcl's
                             own Sgemm kernel where it measured faster on the shape, else CLBlast
                             with the device's tuning where it has one (docs/gemm.md); tuned
                             is then ignored */
} mpcl_gemm_bench_options;

typedef struct {
    int ran;                    /* 1: timed; 0: not timed, reason says why */
    char reason[MPCL_REASON_LEN];
    double gflops;              /* 2 m n k / median_s * 1e-9 */
    double median_s, min_s, max_s; /* seconds per call, over the repetitions */
    unsigned repeats, calls_per_repeat;
    size_t checked;             /* entries of C compared with the host's product first */
    int exact;                  /* 1: compared for equality (sums of small integers) */
    double max_abs_err;         /* the largest difference seen (0 when exact) */
    char kernel[64];            /* routed: what ran ("CLBlast" or "own MR 8 VW 16 NV 2 KC 0") */
} mpcl_gemm_bench_result;

MPCL_API void mpcl_gemm_bench_options_init(mpcl_gemm_bench_options *opt);
/* Warm-up call (CLBlast compiles its kernels), correctness check against a
 * host product on small-integer inputs, then timed repetitions. Returns
 * MPCL_OK with out->ran = 1; MPCL_ERR_UNSUPPORTED when the device has no
 * tuning (tuned = 1) or no verified half arithmetic for Hgemm (half = 1);
 * MPCL_ERR_CLBLAST when CLBlast fails or returns a wrong product;
 * MPCL_ERR_ARGUMENT, MPCL_ERR_NOMEM, MPCL_ERR_OPENCL otherwise. On every
 * failure out->reason says why (also in mpcl_last_error). The context's
 * tuning state is as before the call when it returns. */
MPCL_API mpcl_status mpcl_gemm_bench(mpcl_context *ctx, const mpcl_gemm_bench_options *opt,
                                     mpcl_gemm_bench_result *out);


/* -------------------------------------------------------------- tensors */

typedef enum {
    MPCL_F16 = 0, /* IEEE binary16, stored as 2 bytes */
    MPCL_F32,
    MPCL_I32,
    MPCL_U8,
    MPCL_BF16 /* bfloat16 (the upper half of a float), stored as 2 bytes */
} mpcl_dtype;

/* What device memory is for; accounted per context (mpcl_memory_stats). */
typedef enum {
    MPCL_MEM_WEIGHTS = 0,
    MPCL_MEM_ACTIVATIONS,
    MPCL_MEM_GRADIENTS,
    MPCL_MEM_OPTIMIZER,
    MPCL_MEM_SCRATCH,
    MPCL_MEM_TAG_COUNT
} mpcl_mem_tag;

#define MPCL_MAX_DIMS 4

/* A device tensor: a dtype, a shape of 1..4 dimensions (NCHW for images,
 * row-major), and device memory owned by it or shared with a base tensor. */
typedef struct mpcl_tensor mpcl_tensor;

typedef struct {
    uint64_t current[MPCL_MEM_TAG_COUNT]; /* bytes allocated now, per tag */
    uint64_t peak[MPCL_MEM_TAG_COUNT];    /* the most bytes allocated at once, per tag */
    uint64_t current_total, peak_total;
} mpcl_mem_stats;

MPCL_API const char *mpcl_dtype_name(mpcl_dtype d);   /* "f16", "f32", "i32", "u8", "bf16" */
MPCL_API size_t mpcl_dtype_size(mpcl_dtype d);        /* bytes per element */
MPCL_API const char *mpcl_mem_tag_name(mpcl_mem_tag t); /* "weights", ... */

/* The dtype of activations, gradients and working weights in the context's
 * precision mode: MPCL_F16 in fp16 and fp16-storage, MPCL_BF16 in bf16,
 * MPCL_F32 in fp32. */
MPCL_API mpcl_dtype mpcl_storage_dtype(const mpcl_context *ctx);

/* Allocates an uninitialised tensor. shape has ndim entries, each >= 1. */
MPCL_API mpcl_status mpcl_tensor_create(mpcl_context *ctx, mpcl_dtype dtype, int ndim,
                                        const size_t *shape, mpcl_mem_tag tag, mpcl_tensor **out);
/* A view of base's memory from element `offset` on, with its own shape (a
 * reshape when offset is 0 and the element count is the same). A non-zero
 * offset must be a multiple of mpcl_view_alignment(ctx, dtype). The view
 * keeps the memory alive; destroy it like any tensor. */
MPCL_API mpcl_status mpcl_tensor_view(mpcl_tensor *base, size_t offset, int ndim,
                                      const size_t *shape, mpcl_tensor **out);
MPCL_API size_t mpcl_view_alignment(const mpcl_context *ctx, mpcl_dtype dtype);
MPCL_API void mpcl_tensor_destroy(mpcl_tensor *t);

MPCL_API size_t mpcl_tensor_numel(const mpcl_tensor *t);
MPCL_API int mpcl_tensor_ndim(const mpcl_tensor *t);
MPCL_API size_t mpcl_tensor_dim(const mpcl_tensor *t, int i); /* 0 when i is out of range */
MPCL_API mpcl_dtype mpcl_tensor_dtype(const mpcl_tensor *t);
/* "(64, 1, 28, 28) f16" */
MPCL_API const char *mpcl_tensor_describe(const mpcl_tensor *t, char *buf, size_t len);

/* Host floats to the device, converted to the tensor's dtype (f16, bf16: round to
 * nearest even; i32/u8: must be integers in range). n must equal numel. Blocking. */
MPCL_API mpcl_status mpcl_tensor_upload(mpcl_tensor *t, const float *src, size_t n);
/* Device to host floats (f16, bf16 converted exactly). Waits for queued work. */
MPCL_API mpcl_status mpcl_tensor_download(const mpcl_tensor *t, float *dst, size_t n);
/* Raw bytes in the tensor's own dtype; bytes must equal numel * dtype size. */
MPCL_API mpcl_status mpcl_tensor_write(mpcl_tensor *t, const void *src, size_t bytes);
MPCL_API mpcl_status mpcl_tensor_read(const mpcl_tensor *t, void *dst, size_t bytes);
/* Sets every element to value (converted to the dtype). Enqueued, not waited for. */
MPCL_API mpcl_status mpcl_tensor_fill(mpcl_tensor *t, float value);

MPCL_API void mpcl_memory_stats(const mpcl_context *ctx, mpcl_mem_stats *out);

/* The on-disk cache of a context (compiled programs, tuning results,
 * measured choices; $XDG_CACHE_HOME/mpcl): what it served, and the files it
 * could not use or write. A damaged entry (from another version, a crash or
 * a bad disk) is checked before any driver sees it, ignored and rebuilt; a
 * write that fails (a full disk, no permission) leaves the entry as it was
 * and the run goes on. */
typedef struct {
    unsigned hits, misses;  /* programs loaded from the cache; built from source */
    unsigned written;       /* program entries written */
    unsigned rejected;      /* entries found damaged (header, key, length, checksum) and ignored */
    unsigned write_failed;  /* cache files that could not be written */
    char last_rejected[640];      /* "PATH: REASON" of the last one; "" for none */
    char last_write_failure[640]; /* "PATH: REASON" of the last one; "" for none */
} mpcl_cache_report;
MPCL_API void mpcl_cache_report_get(const mpcl_context *ctx, mpcl_cache_report *out);
/* Waits for all work queued on the context. */
MPCL_API mpcl_status mpcl_finish(mpcl_context *ctx);

/* ------------------------------------------------------------------ ops
 *
 * Every op enqueues work on the context's one in-order queue and returns at
 * once: nothing waits for the device, nothing is read back. Shapes and
 * dtypes are checked first; on a mismatch the op returns MPCL_ERR_SHAPE (or
 * MPCL_ERR_ARGUMENT) with both shapes in mpcl_last_error, and enqueues
 * nothing.
 *
 * Dtypes: activations, gradients and working weights are in the context's
 * storage dtype (mpcl_storage_dtype: f16 in fp16 and fp16-storage, bf16 in
 * bf16, f32 in fp32). Reductions, softmax, loss and normalisation statistics accumulate
 * in float in every mode; their outputs (loss, statistics, flags) are f32
 * (i32 for flags and indices).
 *
 * Gradients: parameter gradients (dw, db, dgamma, dbeta) ACCUMULATE (+=),
 * so zero them once per step; input gradients (dx) are ASSIGNED. A NULL dx
 * skips the input gradient (a first layer).
 *
 * Letters: B batch, C input channels, K output channels, H W input height and
 * width, OH OW output height and width, R S kernel height and width,
 * I O input and output features, N rows, D features per row. */

/* C = alpha * op(A) * op(B) + beta * C, row-major; op transposes when the
 * flag is set. A is (M, K) or (K, M) transposed, B (K, N) or (N, K), C (M, N).
 * 3-D tensors (G, rows, cols) multiply G independent pairs (strided batch).
 * fp32: CLBlast Sgemm. fp16-storage, bf16: float accumulation on half
 * (bf16) operands.
 * fp16: CLBlast Hgemm (which accumulates in half) unless the context's GEMM
 * accumulation is set to float, or CLBlast refuses half on this device. */
MPCL_API mpcl_status mpcl_gemm(mpcl_context *ctx, int trans_a, int trans_b, float alpha,
                               const mpcl_tensor *a, const mpcl_tensor *b, float beta, mpcl_tensor *c);

typedef enum {
    MPCL_ACCUM_DEFAULT = 0, /* the mode's default (see docs/gemm.md) */
    MPCL_ACCUM_HALF,        /* fp16 mode: CLBlast Hgemm */
    MPCL_ACCUM_FLOAT        /* fp16 mode: FP32 accumulation on half operands */
} mpcl_accumulation;
/* Applies to mpcl_gemm, the linear layers and the GEMMs of a convolution
 * whose measured choice is the im2col path on the storage type
 * (im2col16). The float im2col path and the direct one sum in float
 * whatever this says, and so does every convolution's column gradient
 * (docs/ops/conv-pool.md). */
MPCL_API mpcl_status mpcl_set_gemm_accumulation(mpcl_context *ctx, mpcl_accumulation a);

/* ------------------------------------------------------- CLBlast tuning
 * CLBlast's GEMM kernels take their parameters (tile sizes, vector widths,
 * local memory use) from a database compiled into CLBlast; on a device it
 * does not know they are generic and often slow. mpcl searches them on the
 * device (mpcl_tune), checks every candidate for exact results, and keeps
 * the winner per device, driver, CLBlast version and precision in
 * <cache dir>/clblast-<device hash>.json (docs/tune.md), which every later
 * context on that device applies at creation. */

/* One GEMM shape as the GEMM router hands it to CLBlast (row-major). */
typedef struct {
    int half;              /* 1: Hgemm (half operands), 0: Sgemm */
    int trans_a, trans_b;
    size_t m, n, k, batch; /* batch > 1: strided batched */
    unsigned calls;        /* how often the recorded work ran it */
} mpcl_gemm_shape;

/* Starts (on = 1) or stops recording the distinct shapes of the CLBlast
 * calls the context makes; starting clears what was recorded. */
MPCL_API mpcl_status mpcl_gemm_record(mpcl_context *ctx, int on);
/* Copies up to cap recorded shapes to out (NULL with cap 0: count only);
 * returns how many were recorded. */
MPCL_API size_t mpcl_gemm_recorded(const mpcl_context *ctx, mpcl_gemm_shape *out, size_t cap);

typedef enum {
    MPCL_TUNE_SINGLE = 1, /* CLBlast Sgemm (fp32, and fp16-storage's converted GEMMs) */
    MPCL_TUNE_HALF = 2    /* CLBlast Hgemm (fp16 with half accumulation) */
} mpcl_tune_precision;

/* What the search reports while it runs, once per candidate. */
typedef struct {
    const char *precision;  /* "single" or "half" */
    unsigned candidate;     /* candidates measured so far in this precision */
    unsigned rejected;      /* of them, refused by CLBlast or not exact */
    double elapsed_s;       /* since the search began (all precisions) */
    double budget_s;
    double best_gflops;     /* the best set so far on the search's shapes */
    double stock_gflops;    /* CLBlast's own parameters (0: not measured) */
    const char *last;       /* what happened to the last candidate, one line */
} mpcl_tune_progress;

typedef struct {
    double budget_s;        /* wall-clock budget of the whole search; 0: 60 */
    unsigned precisions;    /* MPCL_TUNE_* bits; 0: single, and half where the
                               device's half arithmetic is verified */
    const mpcl_gemm_shape *shapes; /* what to tune for; NULL: square 256, 512, 1024 */
    size_t shape_count;
    unsigned max_candidates; /* per precision; 0: as many as the budget allows */
    int force;              /* search even where the cache has an entry */
    int quiet_stock;        /* 1: do not measure CLBlast's own parameters */
    void (*progress)(const mpcl_tune_progress *p, void *user);
    void *user;
} mpcl_tune_options;

MPCL_API void mpcl_tune_options_init(mpcl_tune_options *o);

typedef struct {
    int searched;           /* 0: nothing was searched (the entry existed, or no precision applies) */
    unsigned candidates, rejected;
    double seconds;
    double tuned_gflops, stock_gflops; /* on the search's shapes, of the single
                                          precision (else half); 0 when not measured */
    char path[4096];        /* the cache file */
    char summary[512];      /* one line for people */
} mpcl_tune_result;

/* Searches CLBlast's GEMM parameters on ctx's device for each precision
 * asked, over opt's shapes, within opt's budget, and stores and applies the
 * best exact set. A precision that already has a cache entry is skipped
 * unless opt->force. The search resumes from the entry's best set. */
MPCL_API mpcl_status mpcl_tune(mpcl_context *ctx, const mpcl_tune_options *opt, mpcl_tune_result *res);
/* 1 when the cache holds a usable entry for every precision of `precisions`
 * (0: those mpcl_tune would search by default) on ctx's device. */
MPCL_API int mpcl_tune_cached(mpcl_context *ctx, unsigned precisions);
/* One sentence: which CLBlast parameters the context uses and why (a
 * cache entry, the built-in starting point, CLBlast's own; a rejected or
 * stale entry is named here). */
MPCL_API const char *mpcl_tuning_describe(const mpcl_context *ctx);
/* Applies the cache entry to ctx where another context (or process) wrote
 * it after ctx was created; nothing when ctx already uses one. */
MPCL_API mpcl_status mpcl_tuning_reload(mpcl_context *ctx);

/* y (B, O) = x (B, I) * w (O, I)^T + b (O); b may be NULL. */
MPCL_API mpcl_status mpcl_linear_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                         const mpcl_tensor *w, const mpcl_tensor *b);
/* dx (B, I) = dy * w; dw (O, I) += dy^T * x; db (O) += sum over B of dy. */
MPCL_API mpcl_status mpcl_linear_backward(mpcl_context *ctx, mpcl_tensor *dx, mpcl_tensor *dw,
                                          mpcl_tensor *db, const mpcl_tensor *dy,
                                          const mpcl_tensor *x, const mpcl_tensor *w);

typedef struct {
    int stride_h, stride_w;     /* >= 1 */
    int pad_h, pad_w;           /* >= 0, zero padding */
    int dilation_h, dilation_w; /* >= 1 */
} mpcl_conv2d_params;
/* Changes ctx's convolution settings (mpcl_options.conv_algo, conv_im2col,
 * conv_chunk) for the convolutions enqueued from now on: to compare
 * algorithms, or to pin one. NULL leaves a string setting as it is, "auto"
 * returns it to the measured choice; chunk MPCL_CONV_KEEP leaves the chunk,
 * 0 returns it to the measured one. A bad value changes nothing
 * (MPCL_ERR_ARGUMENT, naming it). */
#define MPCL_CONV_KEEP ((size_t)-1)
MPCL_API mpcl_status mpcl_conv_configure(mpcl_context *ctx, const char *algo, const char *im2col,
                                         size_t chunk);
/* Stride 1, no padding, no dilation. */
MPCL_API mpcl_conv2d_params mpcl_conv2d_default(void);
/* OH, OW of a convolution (or pooling window) of R x S over H x W;
 * MPCL_ERR_SHAPE when the output would be empty. */
MPCL_API mpcl_status mpcl_conv2d_output_size(size_t h, size_t w, size_t r, size_t s,
                                             const mpcl_conv2d_params *p, size_t *oh, size_t *ow);
/* y (B, K, OH, OW) = x (B, C, H, W) conv w (K, C, R, S) + b (K); b may be NULL. */
MPCL_API mpcl_status mpcl_conv2d_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                         const mpcl_tensor *w, const mpcl_tensor *b,
                                         const mpcl_conv2d_params *p);
MPCL_API mpcl_status mpcl_conv2d_backward(mpcl_context *ctx, mpcl_tensor *dx, mpcl_tensor *dw,
                                          mpcl_tensor *db, const mpcl_tensor *dy,
                                          const mpcl_tensor *x, const mpcl_tensor *w,
                                          const mpcl_conv2d_params *p);

typedef struct {
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w; /* max: padding never wins; avg: padding counts as zeros */
} mpcl_pool2d_params;
/* y (B, C, OH, OW); argmax (i32, same shape as y) records the input index of
 * each maximum within its (H, W) plane, for the backward pass. */
MPCL_API mpcl_status mpcl_maxpool2d_forward(mpcl_context *ctx, mpcl_tensor *y, mpcl_tensor *argmax,
                                            const mpcl_tensor *x, const mpcl_pool2d_params *p);
MPCL_API mpcl_status mpcl_maxpool2d_backward(mpcl_context *ctx, mpcl_tensor *dx,
                                             const mpcl_tensor *dy, const mpcl_tensor *argmax,
                                             const mpcl_pool2d_params *p);
MPCL_API mpcl_status mpcl_avgpool2d_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                            const mpcl_pool2d_params *p);
MPCL_API mpcl_status mpcl_avgpool2d_backward(mpcl_context *ctx, mpcl_tensor *dx,
                                             const mpcl_tensor *dy, const mpcl_pool2d_params *p);

typedef enum {
    MPCL_ACT_RELU = 0,
    MPCL_ACT_LEAKY_RELU, /* slope alpha for x < 0 */
    MPCL_ACT_GELU,       /* tanh form */
    MPCL_ACT_SIGMOID,
    MPCL_ACT_TANH
} mpcl_activation;
/* y = f(x), any shape; y may be x (in place). */
MPCL_API mpcl_status mpcl_activation_forward(mpcl_context *ctx, mpcl_activation f, float alpha,
                                             mpcl_tensor *y, const mpcl_tensor *x);
/* dx = dy * f'(x); x is the forward input, y its output (sigmoid and tanh
 * use y, the others x). dx may be dy. */
MPCL_API mpcl_status mpcl_activation_backward(mpcl_context *ctx, mpcl_activation f, float alpha,
                                              mpcl_tensor *dx, const mpcl_tensor *dy,
                                              const mpcl_tensor *x, const mpcl_tensor *y);

/* Inverted dropout: y = x * mask / (1 - p), mask[i] = (u(seed, step, i) >= p)
 * from a counter-based generator, so backward regenerates the same mask from
 * (seed, step) without storing it. 0 <= p < 1. */
MPCL_API mpcl_status mpcl_dropout_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                          float p, uint64_t seed, uint64_t step);
MPCL_API mpcl_status mpcl_dropout_backward(mpcl_context *ctx, mpcl_tensor *dx,
                                           const mpcl_tensor *dy, float p, uint64_t seed,
                                           uint64_t step);

/* y = a + b (same shapes; y may alias a or b). */
MPCL_API mpcl_status mpcl_add(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *a,
                              const mpcl_tensor *b);
/* dst[r * dst_ld + dst_off + i] = src[r * src_ld + src_off + i] (accumulate:
 * += ) for r < rows, i < cols; both in the storage dtype, any shape (taken
 * flat). A concat's channel slices: row r is sample r. */
MPCL_API mpcl_status mpcl_copy_block(mpcl_context *ctx, mpcl_tensor *dst, size_t dst_ld, size_t dst_off,
                                     const mpcl_tensor *src, size_t src_ld, size_t src_off, size_t rows,
                                     size_t cols, int accumulate);
/* y = alpha * x (y may be x). */
MPCL_API mpcl_status mpcl_scale(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x, float alpha);
/* dst = src converted between f16 and f32, or bf16 and f32 (round to nearest
 * even), same numel. */
MPCL_API mpcl_status mpcl_cast(mpcl_context *ctx, mpcl_tensor *dst, const mpcl_tensor *src);

/* Batch norm over (B, H, W) per channel of x (B, C, H, W). gamma, beta (C)
 * in the storage dtype; running_mean, running_var, save_mean, save_invstd (C)
 * f32. training: batch statistics (biased variance for normalising, unbiased
 * for the running update, as PyTorch), running = (1 - momentum) * running +
 * momentum * batch; eval: running statistics, save_* untouched. */
MPCL_API mpcl_status mpcl_batchnorm2d_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                              const mpcl_tensor *gamma, const mpcl_tensor *beta,
                                              mpcl_tensor *running_mean, mpcl_tensor *running_var,
                                              mpcl_tensor *save_mean, mpcl_tensor *save_invstd,
                                              float momentum, float eps, int training);
MPCL_API mpcl_status mpcl_batchnorm2d_backward(mpcl_context *ctx, mpcl_tensor *dx,
                                               mpcl_tensor *dgamma, mpcl_tensor *dbeta,
                                               const mpcl_tensor *dy, const mpcl_tensor *x,
                                               const mpcl_tensor *gamma,
                                               const mpcl_tensor *save_mean,
                                               const mpcl_tensor *save_invstd);
/* Batch norm fused with the ReLU after it, in one pass over the data:
 * y = max(batchnorm(x), 0) (a NaN stays NaN, as in mpcl_activation_forward's
 * ReLU), arguments and statistics as mpcl_batchnorm2d_forward. The
 * backward pass takes dy, the gradient of that y, and y itself: the
 * gradient passes where y > 0 (the sign of the ReLU's input), then through
 * the batch norm as mpcl_batchnorm2d_backward; dx may be dy, not y. The
 * results equal batchnorm2d followed by a separate ReLU, bit for bit
 * (sequential models fuse the pair: docs/ops/loss-norm.md). */
MPCL_API mpcl_status mpcl_batchnorm2d_relu_forward(mpcl_context *ctx, mpcl_tensor *y,
                                                   const mpcl_tensor *x, const mpcl_tensor *gamma,
                                                   const mpcl_tensor *beta,
                                                   mpcl_tensor *running_mean,
                                                   mpcl_tensor *running_var,
                                                   mpcl_tensor *save_mean,
                                                   mpcl_tensor *save_invstd, float momentum,
                                                   float eps, int training);
MPCL_API mpcl_status mpcl_batchnorm2d_relu_backward(mpcl_context *ctx, mpcl_tensor *dx,
                                                    mpcl_tensor *dgamma, mpcl_tensor *dbeta,
                                                    const mpcl_tensor *dy, const mpcl_tensor *y,
                                                    const mpcl_tensor *x, const mpcl_tensor *gamma,
                                                    const mpcl_tensor *save_mean,
                                                    const mpcl_tensor *save_invstd);
/* Layer norm over the last dimension D of x (N, D); gamma, beta (D);
 * save_mean, save_invstd (N) f32. */
MPCL_API mpcl_status mpcl_layernorm_forward(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                            const mpcl_tensor *gamma, const mpcl_tensor *beta,
                                            mpcl_tensor *save_mean, mpcl_tensor *save_invstd,
                                            float eps);
MPCL_API mpcl_status mpcl_layernorm_backward(mpcl_context *ctx, mpcl_tensor *dx, mpcl_tensor *dgamma,
                                             mpcl_tensor *dbeta, const mpcl_tensor *dy,
                                             const mpcl_tensor *x, const mpcl_tensor *gamma,
                                             const mpcl_tensor *save_mean,
                                             const mpcl_tensor *save_invstd);

/* Fused softmax + cross-entropy over logits (B, C) with integer labels (i32,
 * B). loss (f32, 1) = mean over B of -sum_c t_c log softmax_c, with targets
 * t = (1 - smoothing) one-hot + smoothing / C. dlogits (B, C), may be NULL:
 * grad_scale * (softmax - t) / B, written in the storage dtype (grad_scale
 * is the loss scale). log-sum-exp and every sum in float. A label outside
 * [0, C) makes the loss NaN. */
MPCL_API mpcl_status mpcl_softmax_cross_entropy(mpcl_context *ctx, mpcl_tensor *loss,
                                                mpcl_tensor *dlogits, const mpcl_tensor *logits,
                                                const mpcl_tensor *labels, float smoothing,
                                                float grad_scale);

/* Transformer ops (src/ops/attention.c; docs/ops/attention.md). Letters: B
 * sequences of T positions, N = B T rows, C the width, H heads of width
 * E = C / H, V vocabulary.
 *
 * Token + position embedding: y (N, C) = wte[tokens[n]] + wpe[pos + n % T]
 * (summed in float); tokens i32 (N); wte (V, C); wpe (P, C) with P >= pos +
 * T (pos: the first position, 0 but when decoding). A token outside [0, V)
 * makes its row NaN. */
MPCL_API mpcl_status mpcl_embedding_forward(mpcl_context *ctx, mpcl_tensor *y,
                                            const mpcl_tensor *tokens, const mpcl_tensor *wte,
                                            const mpcl_tensor *wpe, size_t T, size_t pos);
/* The index the embedding's backward pass needs, on the host: order (n)
 * lists the rows grouped by token (ascending within a token), start
 * (vocab + 1) where each token's rows begin. MPCL_ERR_ARGUMENT, with a
 * message in err naming the row, for a token outside [0, vocab). */
MPCL_API mpcl_status mpcl_embedding_index(const int32_t *tokens, size_t n, size_t vocab,
                                          int32_t *order, int32_t *start, char *err,
                                          size_t err_len);
/* dwte[v] += the sum of dy's rows whose token is v, dwpe[t] += the sum of
 * dy's rows at position t (either may be NULL). order (N) and start (V + 1)
 * i32 from mpcl_embedding_index. Each gradient value is summed by one work
 * item in row order: no atomics, the same bits on every run. */
MPCL_API mpcl_status mpcl_embedding_backward(mpcl_context *ctx, mpcl_tensor *dwte,
                                             mpcl_tensor *dwpe, const mpcl_tensor *dy,
                                             const mpcl_tensor *order, const mpcl_tensor *start,
                                             size_t T);
/* Causal multi-head self-attention on a QKV projection's output qkv
 * (N, 3 C), whose rows are [q | k | v] with head h at columns h E .. h E +
 * E - 1 of each: y (N, C) = per head softmax(mask(q k^T / sqrt(E))) v, the
 * heads side by side. Position i attends to positions <= i of its own
 * sequence. The scores are float (f32) in every mode and the softmax
 * subtracts the row maximum and sums in float; probs (B H, T, T, storage
 * dtype) receives the probabilities, which backward needs. */
MPCL_API mpcl_status mpcl_attention_forward(mpcl_context *ctx, mpcl_tensor *y, mpcl_tensor *probs,
                                            const mpcl_tensor *qkv, size_t T, size_t heads);
/* dqkv (N, 3 C) = the gradient of qkv (assigned), from dy (N, C), the
 * forward's qkv and probs. */
MPCL_API mpcl_status mpcl_attention_backward(mpcl_context *ctx, mpcl_tensor *dqkv,
                                             const mpcl_tensor *dy, const mpcl_tensor *qkv,
                                             const mpcl_tensor *probs, size_t T, size_t heads);
/* Attention for decoding with a key / value cache: qkv (B Tq, 3 C) holds Tq
 * new positions pos .. pos + Tq - 1 of B sequences; their keys and values are
 * written into kcache and vcache (B H, Tmax, E) at those positions, and y
 * (B Tq, C) is their attention over positions 0 .. pos + Tq - 1 of the
 * caches (causal within the new ones). pos + Tq <= Tmax. The same
 * arithmetic as mpcl_attention_forward over the whole prefix. */
MPCL_API mpcl_status mpcl_attention_decode(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *qkv,
                                           mpcl_tensor *kcache, mpcl_tensor *vcache, size_t pos,
                                           size_t heads);

typedef enum { MPCL_REDUCE_SUM = 0, MPCL_REDUCE_MEAN, MPCL_REDUCE_MAX_ABS } mpcl_reduction;
/* out (f32, 1) = the reduction of every element of x, accumulated in float. */
MPCL_API mpcl_status mpcl_reduce(mpcl_context *ctx, mpcl_reduction r, mpcl_tensor *out,
                                 const mpcl_tensor *x);
/* flag (i32, 1) = 1 if every element of all n tensors is finite, else 0. */
MPCL_API mpcl_status mpcl_all_finite(mpcl_context *ctx, mpcl_tensor *flag,
                                     const mpcl_tensor *const *xs, size_t n);
/* x *= inv_scale in place, and flag (i32, 1) &= "every result finite": the
 * loss-scaler's unscale + overflow check in one pass. Set flag to 1 first. */
MPCL_API mpcl_status mpcl_unscale(mpcl_context *ctx, mpcl_tensor *x, float inv_scale,
                                  mpcl_tensor *flag);

/* ----------------------------------------------------------------- data */

/* Images or labels in memory: an IDX file (idx1 labels / idx3 images), a
 * PGM or PPM image (count 1), or a CIFAR-10 set's images or labels. One image
 * is channels * rows * cols bytes in channel-major order (C, H, W): the
 * whole first channel's rows, then the next channel's (NCHW, as the model's
 * input). */
typedef struct {
    uint8_t *data;     /* count * channels * rows * cols bytes (count for idx1) */
    int ndim;          /* 1 (labels) or 3 (images) */
    size_t count;      /* first dimension: images or labels */
    size_t rows, cols; /* 0 for idx1 */
    size_t channels;   /* 1 for grey images (IDX, PGM), 3 for colour (CIFAR-10, PPM: red, green,
                        * blue planes); 0 for idx1 labels */
} mpcl_idx;

/* The bytes of one image (channels * rows * cols; channels 0 counts as 1),
 * or 1 for idx1 labels. */
MPCL_API size_t mpcl_idx_sample_bytes(const mpcl_idx *idx);

/* Reads a plain or gzip-compressed IDX file (grey images: channels 1).
 * Errors (err, when not NULL) name the file and the byte offset. */
MPCL_API mpcl_status mpcl_idx_load(const char *path, mpcl_idx *out, char *err, size_t err_len);
MPCL_API void mpcl_idx_free(mpcl_idx *idx);
/* Reads one grey image in the PGM format (P5 binary or P2 text, maximum
 * grey value 1..65535, rescaled to 0..255) as an mpcl_idx of count 1 and
 * channels 1, so that it classifies like a data set's images; free with
 * mpcl_idx_free. A colour PPM image is an error naming the file (read it
 * with mpcl_image_load). */
MPCL_API mpcl_status mpcl_pgm_load(const char *path, mpcl_idx *out, char *err, size_t err_len);
/* Reads one grey or colour image: PGM (P5, P2: channels 1) or PPM (P6
 * binary, P3 text: channels 3), maximum value 1..65535 rescaled to 0..255,
 * as an mpcl_idx of count 1. PPM's interleaved RGB pixels become three
 * planes (all red values, then green, then blue), the layout of CIFAR-10's
 * images and of the model's input. Errors name the file and byte offset. */
MPCL_API mpcl_status mpcl_image_load(const char *path, mpcl_idx *out, char *err, size_t err_len);

#define MPCL_DATASET_CLASSES 10
#define MPCL_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

typedef enum {
    MPCL_DATASET_IDX = 0, /* MNIST layout: four IDX files, grey images */
    MPCL_DATASET_CIFAR10  /* CIFAR-10's binary version: 3x32x32 colour images */
} mpcl_dataset_format;

/* A data set: its training and test images and labels (0..9). */
typedef struct {
    mpcl_idx train_images, train_labels, test_images, test_labels;
    const char *class_names[MPCL_DATASET_CLASSES]; /* Fashion-MNIST's, CIFAR-10's, or digits */
    mpcl_dataset_format format;
    const char *name; /* "Fashion-MNIST", "MNIST" (an MNIST-layout directory of
                       * another name: digits) or "CIFAR-10"; static */
} mpcl_dataset;

/* Reads a data set directory, in either layout:
 *   - MNIST layout: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
 *     t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] (also spelled
 *     with '.' for '-' before idx); class names Fashion-MNIST's when the
 *     path contains "fashion", else digits;
 *   - CIFAR-10 binary (cifar-10-binary.tar.gz extracts to
 *     cifar-10-batches-bin/): a directory with data_batch_1.bin (or one
 *     with a cifar-10-batches-bin/ subdirectory that has it) is read by
 *     mpcl_cifar10_load.
 * dir NULL or "": MPCL_DEFAULT_DATA_DIR (Debian's dataset-fashion-mnist).
 * Checks magic, dimensions, sizes, matching counts and label range 0..9;
 * errors name the file and the byte offset. */
MPCL_API mpcl_status mpcl_dataset_load(const char *dir, mpcl_dataset *out, char *err, size_t err_len);
/* CIFAR-10's binary version: training = data_batch_1.bin, data_batch_2.bin,
 * ... (as many consecutive ones as exist, at least the first), test =
 * test_batch.bin. A record is 3073 bytes: a label byte 0..9, then 3072
 * pixel bytes: the 1024 red values, the 1024 green, the 1024 blue, each
 * 32x32 row-major; the images keep those bytes (channels 3, rows 32, cols
 * 32, channel-major already). A file that is empty, not a whole number of
 * records, or has a label above 9 is an error naming the file and the byte
 * offset (and the record). */
MPCL_API mpcl_status mpcl_cifar10_load(const char *dir, mpcl_dataset *out, char *err, size_t err_len);
MPCL_API void mpcl_dataset_free(mpcl_dataset *d);

/* ------------------------------------------------------------ text
 *
 * Text for language models, read as bytes (UTF-8 stays bytes: the
 * vocabulary is the 256 byte values). The last part of the text is held
 * out for validation. Training batches are random windows; every window's
 * start is a splitmix64 hash of (seed, step, sequence index), so a batch is
 * the same bytes whenever it is made again and a resumed run needs only its
 * step count. Validation reads fixed consecutive windows. */
#define MPCL_DEFAULT_TEXT_DIR "/usr/share/games/fortunes"

typedef struct {
    uint8_t *bytes;      /* the whole text: training part, then validation part */
    size_t size;         /* bytes */
    size_t train_size;   /* bytes[0 .. train_size - 1] train, the rest validates */
    size_t files;        /* files read */
    char source[1024];   /* the path it came from */
} mpcl_text;

typedef enum { MPCL_TEXT_TRAIN = 0, MPCL_TEXT_VALID = 1 } mpcl_text_split;

/* Reads path as bytes: a file (plain, or gzip when its name ends in .gz),
 * or a directory, whose regular files (not symbolic links, not hidden, not
 * ending in .dat: the fortune index files) are read in name order and
 * joined. NULL or "": MPCL_DEFAULT_TEXT_DIR (Debian's fortunes). The last
 * valid_fraction (0 < f < 1; 0: the default 0.1) of the bytes is held out
 * for validation. Each part must hold at least context + 1 bytes (one
 * window and its next byte): otherwise MPCL_ERR_FORMAT naming the path, the
 * sizes and the context. Errors name the file (missing, unreadable,
 * damaged gzip, empty). */
MPCL_API mpcl_status mpcl_text_load(const char *path, double valid_fraction, size_t context,
                                    mpcl_text *out, char *err, size_t err_len);
MPCL_API void mpcl_text_free(mpcl_text *t);
/* The bytes of one part and their count. */
MPCL_API const uint8_t *mpcl_text_part(const mpcl_text *t, mpcl_text_split split, size_t *size);
/* A training batch of b windows of T positions: window i starts at a
 * position drawn uniformly from [0, size - T - 1] of the split by a hash
 * of (seed, step, i); tokens (b T, i32) are its bytes, targets (b T) the
 * bytes one position later. MPCL_ERR_ARGUMENT when the part is too short. */
MPCL_API mpcl_status mpcl_text_batch(const mpcl_text *t, mpcl_text_split split, uint64_t seed,
                                     uint64_t step, size_t b, size_t T, int32_t *tokens,
                                     int32_t *targets);
/* Consecutive windows for evaluation: window w starts at w T; there are
 * (size - 1) / T of them (each needs its next byte). */
MPCL_API size_t mpcl_text_windows(const mpcl_text *t, mpcl_text_split split, size_t T);
/* Windows first .. first + b - 1 as tokens and targets (b T each).
 * MPCL_ERR_ARGUMENT past the last window. */
MPCL_API mpcl_status mpcl_text_window_batch(const mpcl_text *t, mpcl_text_split split, size_t first,
                                            size_t b, size_t T, int32_t *tokens,
                                            int32_t *targets);

/* The normalisation of input bytes: y = (x / 255 - mean[c]) / std[c] for
 * channel c, with one value for every channel (channels 1) or one per
 * channel (channels = the images' channels, at most MPCL_MAX_NORM_CHANNELS,
 * e.g. CIFAR-10's red, green and blue). */
#define MPCL_MAX_NORM_CHANNELS 4
typedef struct {
    size_t channels;
    float mean[MPCL_MAX_NORM_CHANNELS], std[MPCL_MAX_NORM_CHANNELS];
} mpcl_normalization;
/* mean 0, std 1: the bytes / 255. */
MPCL_API void mpcl_normalization_init(mpcl_normalization *n);
/* The mean and the (population) standard deviation of x / 255 over count
 * images of c x plane bytes, per channel where c <= MPCL_MAX_NORM_CHANNELS
 * (else one over all); a flat channel (every byte the same) gets std 1, so
 * that it is only centred. */
MPCL_API void mpcl_normalization_measure(mpcl_normalization *n, const uint8_t *images, size_t count,
                                         size_t c, size_t plane);
/* y (storage dtype) = normalised x (u8), same element count; with one value
 * per channel, y is (B, C, H, W) with C = n->channels. Batches go to the
 * device as bytes and are normalised there. */
MPCL_API mpcl_status mpcl_normalize_u8(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x,
                                       const mpcl_normalization *n);
/* y (i32, N) = x (u8, N): labels for mpcl_softmax_cross_entropy. */
MPCL_API mpcl_status mpcl_labels_to_i32(mpcl_context *ctx, mpcl_tensor *y, const mpcl_tensor *x);

/* ---------------------------------------------------- data augmentation
 *
 * Random crops and mirror images of the training images, made on the host
 * while the batch is assembled. Every random choice is a counter-based hash
 * of (seed, epoch, image index): a batch is the same bytes whenever it is
 * made again, whatever else is in it, so a run resumed in the middle of an
 * epoch sees exactly the images the uninterrupted run saw, and no random
 * state needs saving. */
typedef struct {
    int pad;  /* 0..MPCL_AUGMENT_MAX_PAD: zero-pad by pad pixels, crop back at a random offset */
    int flip; /* 1: mirror left-right with probability 1/2 */
} mpcl_augment_options; /* all 0: none. CIFAR's usual: pad 4, flip 1 (He et al., 2016) */

#define MPCL_AUGMENT_MAX_PAD 64

/* dst[i] (c*h*w bytes) = image src_index[i] of src (each c*h*w bytes,
 * channel-major), zero-padded by pad pixels on every side, cropped back to
 * h x w at an offset (dy, dx) in [0, 2*pad]^2 (the crop's top-left corner in
 * the padded image: dy = dx = pad is the image itself), then mirrored
 * left-right with probability 1/2 when flip. Offsets and flip come from a
 * splitmix64 hash of (seed, epoch, src_index[i]). o NULL or all 0: a plain
 * gather (a memcpy of each image). Every channel gets the same crop. */
MPCL_API void mpcl_augment_gather(uint8_t *dst, const uint8_t *src, const size_t *src_index, size_t n,
                                  size_t c, size_t h, size_t w, const mpcl_augment_options *o,
                                  uint64_t seed, uint64_t epoch);
/* Parses a comma-separated list: "none", or any of "cropN" (pad N pixels,
 * 1..MPCL_AUGMENT_MAX_PAD; "crop" alone is crop4) and "flip", e.g.
 * "crop4,flip". Errors name the bad item (MPCL_ERR_ARGUMENT). */
MPCL_API mpcl_status mpcl_augment_parse(const char *text, mpcl_augment_options *out, char *err,
                                        size_t err_len);
/* The canonical text of o, which mpcl_augment_parse reads back: "none",
 * "crop4", "flip", "crop4,flip". Returns dst. */
MPCL_API char *mpcl_augment_format(const mpcl_augment_options *o, char *dst, size_t len);

/* ------------------------------------------------------ batch prefetch
 *
 * Assembles batches (gather + augmentation, and their labels) on a second
 * host thread while the caller's thread runs the device step of the batch
 * before: double-buffered, two batch buffers. The bytes are those of
 * mpcl_augment_gather on the same indices:
 *
 *     mpcl_prefetch *pf;
 *     mpcl_prefetch_create(images, labels, count, 3, 32, 32, 64, &aug, seed, &pf);
 *     mpcl_prefetch_submit(pf, order, 64, epoch);            // batch 0
 *     for (k = 0; k < steps; k++) {
 *         mpcl_prefetch_next(pf, &img, &lab, &n);            // waits for batch k
 *         if (k + 1 < steps)
 *             mpcl_prefetch_submit(pf, order + (k + 1) * 64, ..., epoch); // built meanwhile
 *         mpcl_trainer_step(tr, img, lab, (int)n, &st);
 *     }
 *     mpcl_prefetch_destroy(pf);
 *
 * A batch returned by mpcl_prefetch_next stays valid until the next call of
 * mpcl_prefetch_next (or destroy); at most two batches are outstanding (the
 * one held and one submitted). One caller thread; the worker blocks every
 * signal, so the caller's handlers run on the caller's threads. */
typedef struct mpcl_prefetch mpcl_prefetch;

/* images: count images of c*h*w bytes; labels: count bytes (NULL: no
 * labels). Both must stay valid and unchanged until destroy. */
MPCL_API mpcl_status mpcl_prefetch_create(const uint8_t *images, const uint8_t *labels, size_t count,
                                          size_t c, size_t h, size_t w, size_t max_batch,
                                          const mpcl_augment_options *o, uint64_t seed,
                                          mpcl_prefetch **out);
/* Queues the batch of n (1..max_batch) images src_index[0..n) (copied: the
 * array may change after the call) of an epoch. MPCL_ERR_ARGUMENT for n or
 * an index out of range, MPCL_ERR_STATE when two batches are outstanding. */
MPCL_API mpcl_status mpcl_prefetch_submit(mpcl_prefetch *p, const size_t *src_index, size_t n,
                                          uint64_t epoch);
/* Releases the batch held before, waits for the oldest submitted one and
 * returns it: images (n*c*h*w bytes), labels (n bytes; NULL without labels).
 * MPCL_ERR_STATE when nothing is submitted. */
MPCL_API mpcl_status mpcl_prefetch_next(mpcl_prefetch *p, const uint8_t **images,
                                        const uint8_t **labels, size_t *n);
/* Waits for the batch being built, stops the thread, frees; NULL-safe. */
MPCL_API void mpcl_prefetch_destroy(mpcl_prefetch *p);

/* ----------------------------------------------------------- model spec
 *
 * A model in text, one layer per line with named options:
 *
 *     # the seed CNN
 *     input 1x28x28
 *     conv2d out=10 kernel=5
 *     relu
 *     maxpool2d kernel=2
 *     flatten
 *     linear in=1440 out=10
 *     relu
 *     linear out=10
 *
 * Layers: conv2d (out, kernel, stride=1, padding=0, dilation=1, bias=1),
 * linear (in: checked when given, out, bias=1), relu, leaky_relu (slope=0.01),
 * gelu, sigmoid, tanh, maxpool2d / avgpool2d (kernel, stride=kernel,
 * padding=0), global_avgpool (the mean over each channel's H x W: C x 1 x 1),
 * flatten, dropout (p=0.5), batchnorm2d (eps=1e-5, momentum=0.1), add (the
 * sum of two or more tensors of one shape: no broadcasting) and concat (along
 * channels: images of one height and width, or flat features).
 * "kernel=5" means 5x5; "kernel=3x5" is height x width (also stride, padding,
 * dilation).
 *
 * Graphs. A layer reads the output of the line before it (the first layer:
 * the model's input) unless it says otherwise:
 *
 *     NAME: LAYER ...        names this layer's output (letters, digits, _;
 *                            up to 31 characters; not "input")
 *     LAYER from=NAME ...    reads NAME's output instead ("input": the model's)
 *     add from=NAME          the line before + NAME
 *     add from=A,B[,...]     A + B + ...; concat likewise, in that order
 *
 * so a residual block needs no special code:
 *
 *     b1: relu
 *     conv2d out=16 kernel=3 padding=1 bias=false
 *     batchnorm2d
 *     relu
 *     conv2d out=16 kernel=3 padding=1 bias=false
 *     batchnorm2d
 *     add from=b1
 *     relu
 *
 * A layer's inputs come before it in the file, so the lines are an order in
 * which the graph runs (a reference to a later line, or to the line itself,
 * is how a cycle would be written, and is an error). Every layer's output
 * must be used except the last one's, which is the model's output and must
 * be flat (class scores). Errors name file:line and what was expected: an
 * unknown name, a name given twice, a cycle, a shape mismatch at an add or
 * a concat, an unused output. A file without names is a sequential model
 * exactly as before. */

typedef enum {
    MPCL_LAYER_CONV2D = 0,
    MPCL_LAYER_LINEAR,
    MPCL_LAYER_RELU,
    MPCL_LAYER_LEAKY_RELU,
    MPCL_LAYER_GELU,
    MPCL_LAYER_SIGMOID,
    MPCL_LAYER_TANH,
    MPCL_LAYER_MAXPOOL2D,
    MPCL_LAYER_AVGPOOL2D,
    MPCL_LAYER_FLATTEN,
    MPCL_LAYER_DROPOUT,
    MPCL_LAYER_BATCHNORM2D,
    MPCL_LAYER_ADD,
    MPCL_LAYER_CONCAT,
    MPCL_LAYER_GLOBAL_AVGPOOL
} mpcl_layer_kind;

#define MPCL_MAX_LAYERS 256
#define MPCL_MAX_INPUTS 8   /* of an add or a concat */
#define MPCL_LAYER_NAME_MAX 32

typedef struct {
    mpcl_layer_kind kind;
    int line;            /* in the spec text */
    size_t out;          /* conv2d: output channels; linear: output features */
    size_t in;           /* linear: input features (inferred) */
    int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
    int bias;
    float slope;         /* leaky_relu */
    float p;             /* dropout */
    float eps, momentum; /* batchnorm2d */
    int in_ndim, out_ndim;       /* 3: (C, H, W) per sample; 1: (features) */
    size_t in_shape[3], out_shape[3]; /* in_shape: of the first input */
    size_t params;       /* parameter count of the layer */
    char name[MPCL_LAYER_NAME_MAX]; /* "" when the spec gives none */
    int ninputs;                    /* 1, or 2.. for add and concat */
    int inputs[MPCL_MAX_INPUTS];    /* layer indices (earlier layers); -1: the model's input */
} mpcl_layer_spec;

/* A GPT-style decoder-only transformer (docs/models.md), one spec line:
 *
 *     gpt vocab=256 context=128 layers=4 heads=4 width=128 [hidden=512]
 *
 * token and learned position embeddings, `layers` pre-norm blocks (layer
 * norm, causal self-attention with `heads` heads, residual add; layer norm,
 * a GELU MLP of `hidden` units (default 4 x width), residual add), a final
 * layer norm and an output head tied to the token embedding. Layer norms
 * use eps 1e-5; every linear layer has a bias. */
typedef struct {
    size_t vocab, context, layers, heads, width, hidden;
    int line; /* in the spec text */
} mpcl_gpt_spec;

typedef enum {
    MPCL_MODEL_LAYERS = 0, /* a sequence or graph of layers over images or features */
    MPCL_MODEL_GPT         /* a language model over tokens (mpcl_gpt_spec) */
} mpcl_model_kind;

typedef struct {
    size_t input[3]; /* C, H, W (a gpt: 1, 1, context) */
    int nlayers;     /* 0 for a gpt */
    mpcl_layer_spec layers[MPCL_MAX_LAYERS];
    size_t params;   /* total parameter count */
    mpcl_model_kind kind;
    mpcl_gpt_spec gpt; /* kind MPCL_MODEL_GPT */
} mpcl_model_spec;

MPCL_API const char *mpcl_layer_kind_name(mpcl_layer_kind k); /* "conv2d", ... */
/* The parameters of a gpt (the tied output head counted once). */
MPCL_API size_t mpcl_gpt_param_count(const mpcl_gpt_spec *g);
/* Parses and shape-checks a spec; name is used in messages (a file name). */
MPCL_API mpcl_status mpcl_model_spec_parse(const char *text, const char *name, mpcl_model_spec *out,
                                           char *err, size_t err_len);
/* Reads the file and parses it. */
MPCL_API mpcl_status mpcl_model_spec_load(const char *path, mpcl_model_spec *out, char *err,
                                          size_t err_len);
/* Writes the spec as text that mpcl_model_spec_parse reads back to the same
 * layers, every option explicit. Returns the length it needs (like
 * snprintf): the text is complete when that is < len. */
MPCL_API size_t mpcl_model_spec_format(const mpcl_model_spec *spec, char *dst, size_t len);

/* ----------------------------------------------------------- optimizers
 *
 * Steps over flat parameter buffers: FP32 master weights and FP32 state,
 * gradients in the storage dtype (read in float and multiplied by grad_mul:
 * the trainer passes 1 / loss scale there, so that gradients are unscaled
 * in float, never rounded to half at their unscaled size), and the working
 * copy in the storage dtype refreshed in the same pass (fused). */

typedef enum { MPCL_OPT_SGD = 0, MPCL_OPT_ADAM, MPCL_OPT_ADAMW } mpcl_optimizer;

typedef struct {
    mpcl_optimizer kind;
    float lr;
    float momentum;     /* SGD */
    int nesterov;       /* SGD */
    float weight_decay; /* SGD, Adam: L2 added to the gradient; AdamW: decoupled */
    float beta1, beta2, eps; /* Adam, AdamW */
} mpcl_optimizer_options;

/* PyTorch's defaults: SGD lr 0.01, momentum 0; Adam lr 1e-3, betas (0.9,
 * 0.999), eps 1e-8, weight decay 0; AdamW the same with weight decay 0.01. */
MPCL_API void mpcl_optimizer_options_init(mpcl_optimizer_options *o, mpcl_optimizer kind);
MPCL_API const char *mpcl_optimizer_name(mpcl_optimizer k); /* "sgd", "adam", "adamw" */
MPCL_API mpcl_status mpcl_optimizer_parse(const char *name, mpcl_optimizer *out);

/* One step at learning rate lr, t = 1 for the first step (bias correction,
 * SGD's first momentum step). master (f32, P); working (storage dtype, P) or
 * NULL when master is itself the working copy (fp32); grad (storage dtype,
 * P); state1 (f32, P: momentum or Adam's m; may be NULL for SGD without
 * momentum); state2 (f32, P: Adam's v). grad_mul scales the gradient. */
MPCL_API mpcl_status mpcl_optimizer_step(mpcl_context *ctx, const mpcl_optimizer_options *o, float lr,
                                         uint64_t t, mpcl_tensor *master, mpcl_tensor *working,
                                         const mpcl_tensor *grad, mpcl_tensor *state1,
                                         mpcl_tensor *state2, float grad_mul);
/* working = master rounded to the storage dtype. */
MPCL_API mpcl_status mpcl_refresh_working(mpcl_context *ctx, mpcl_tensor *working,
                                          const mpcl_tensor *master);
/* The L2 norm of grad, accumulated in float per work-group and in double
 * across groups. Waits for the device (one small read). */
MPCL_API mpcl_status mpcl_grad_norm(mpcl_context *ctx, const mpcl_tensor *grad, double *norm);

/* ---------------------------------------------------------------- model
 *
 * A model built from a spec (a sequence, or a graph of named layers):
 * every parameter lives in one flat buffer (FP32 master weights), mirrored
 * by a working copy and a gradient buffer in the storage dtype, so zeroing
 * the gradients is one fill and an optimizer step is one launch.
 * Activations live in one planned buffer for max_batch samples (see
 * mpcl_model_create_with); smaller batches use views of it. Layers run in
 * the spec's order. */

typedef struct mpcl_model mpcl_model;

typedef struct {
    size_t max_batch;  /* the largest batch a forward pass takes */
    uint64_t seed;     /* initial weights and dropout masks */
    int inference;     /* 1: forward passes only (no backward): activations are
                        * released as soon as their last reader has run */
    int reuse_memory;  /* 1 (default): an activation or gradient's memory is
                        * reused once its last use in the step is past; 0: one
                        * buffer each (for comparing: the results are the same) */
    int fuse;          /* 1 (default): batchnorm2d followed by relu run as one
                        * pass; 0: as two (the same results) */
} mpcl_model_options;

/* max_batch 1, seed 0, training (inference 0), reuse_memory 1, fuse 1. */
MPCL_API void mpcl_model_options_init(mpcl_model_options *o);

/* Allocates the model on ctx and initialises it as PyTorch does
 * (Kaiming-uniform weights and uniform biases with bound 1/sqrt(fan_in);
 * batch norm gamma 1, beta 0, running mean 0, variance 1) from seed.
 *
 * Activation memory is planned once, here: every layer output and output
 * gradient of a step (at max_batch) is placed in one device buffer, at an
 * offset shared with tensors whose lives do not overlap. A layer output
 * lives from its layer's forward run to the last read of it (its readers'
 * forward runs, and their backward runs where they need their input, as
 * convolutions and batch norm do); an output gradient from its first
 * contribution in the backward pass to its layer's backward run. */
MPCL_API mpcl_status mpcl_model_create_with(mpcl_context *ctx, const mpcl_model_spec *spec,
                                            const mpcl_model_options *o, mpcl_model **out);
/* mpcl_model_create_with with the default options and max_batch, seed. */
MPCL_API mpcl_status mpcl_model_create(mpcl_context *ctx, const mpcl_model_spec *spec,
                                       size_t max_batch, uint64_t seed, mpcl_model **out);

/* The model's device memory in bytes, at max_batch. */
typedef struct {
    uint64_t parameters;           /* master, working copy and gradients */
    uint64_t activations;          /* outputs and output gradients, as planned */
    uint64_t activations_unshared; /* the same with one buffer per tensor */
    uint64_t activations_other;    /* max-pool indices, batch-norm statistics (in both) */
    int tensors;                   /* outputs and gradients planned */
} mpcl_model_memory;
MPCL_API void mpcl_model_memory_info(const mpcl_model *m, mpcl_model_memory *out);
MPCL_API void mpcl_model_destroy(mpcl_model *m);
MPCL_API const mpcl_model_spec *mpcl_model_get_spec(const mpcl_model *m);
/* The context the model lives on; its seed (initialisation, dropout masks),
 * which a resumed checkpoint restores. */
MPCL_API mpcl_context *mpcl_model_context(const mpcl_model *m);
MPCL_API uint64_t mpcl_model_seed(const mpcl_model *m);
MPCL_API void mpcl_model_set_seed(mpcl_model *m, uint64_t seed);
/* Number of parameters (without padding). */
MPCL_API size_t mpcl_model_param_count(const mpcl_model *m);

/* Runs the layers on x (storage dtype, (B, C, H, W), B <= max_batch); *logits
 * receives the model's output tensor (B, classes), owned by the model and
 * valid until the next forward. training selects batch statistics and
 * dropout; step seeds dropout's masks. Enqueued, not waited for. */
MPCL_API mpcl_status mpcl_model_forward(mpcl_model *m, const mpcl_tensor *x, int training,
                                        uint64_t step, mpcl_tensor **logits);
/* Back-propagates dlogits (B, classes) through the last forward, accumulating
 * parameter gradients into the gradient buffer; where a layer's output feeds
 * several layers, their gradients add up. MPCL_ERR_STATE on a model created
 * for inference, or before a forward pass. */
MPCL_API mpcl_status mpcl_model_backward(mpcl_model *m, const mpcl_tensor *dlogits);
MPCL_API mpcl_status mpcl_model_zero_grad(mpcl_model *m);

/* Language models (a "gpt" spec; src/nn/gpt.c, docs/lm.md). tokens: B
 * sequences of T token ids each (B <= max_batch, T <= the context), row
 * after row; *logits (B T, vocab), owned by the model and valid until the
 * next call. training 1 prepares the backward pass (the embedding's index,
 * on the host). A token outside the vocabulary is MPCL_ERR_ARGUMENT naming
 * the sequence and position; nothing is enqueued. */
MPCL_API mpcl_status mpcl_lm_forward(mpcl_model *m, const int32_t *tokens, size_t B, size_t T,
                                     int training, mpcl_tensor **logits);
/* Back-propagates dlogits (B T, vocab) through the last training forward,
 * accumulating into the gradient buffer (the tied head and the embedding
 * both add to transformer.wte.weight's gradient). */
MPCL_API mpcl_status mpcl_lm_backward(mpcl_model *m, const mpcl_tensor *dlogits);
/* Decoding with a key / value cache: tokens (B x Tq) at positions pos ..
 * pos + Tq - 1 of B sequences whose earlier positions went through earlier
 * calls (pos 0 starts them: a prompt of Tq tokens, then one token per
 * call). *logits (B Tq, vocab). pos + Tq <= the context. The same
 * arithmetic as mpcl_lm_forward on the whole prefix, without recomputing
 * it. */
MPCL_API mpcl_status mpcl_lm_decode(mpcl_model *m, const int32_t *tokens, size_t B, size_t Tq,
                                    size_t pos, mpcl_tensor **logits);

/* Sampling from a language model (src/nn/generate.c). */
typedef struct {
    float temperature; /* > 0: sample from softmax(logits / temperature); 0: greedy (argmax, lowest index on ties) */
    size_t top_k;      /* > 0: sample among the k most likely tokens only; 0: all */
    uint64_t seed;     /* the draws: a splitmix64 hash of (seed, token index), so a generation is repeatable */
} mpcl_sample_options;
MPCL_API void mpcl_sample_options_init(mpcl_sample_options *o); /* temperature 0.8, top_k 40, seed 1 */
/* Generates `count` tokens after a prompt of n >= 1 tokens, one sequence, with the key/value cache:
 * the prompt in one mpcl_lm_decode call, then one token per call. out (count tokens) may be NULL;
 * on_token (may be NULL) gets each new token as it is made; a non-zero return stops early
 * (*made, may be NULL, receives how many were made). When the cache is full (the context), the last
 * context/2 tokens are read again in one call from position 0 and generation goes on from there.
 * A prompt longer than the context keeps its last context tokens. */
MPCL_API mpcl_status mpcl_lm_generate(mpcl_model *m, const int32_t *prompt, size_t n, size_t count,
                                      const mpcl_sample_options *o, int32_t *out, size_t *made,
                                      int (*on_token)(void *user, int32_t token), void *user);

/* The flat buffers (owned by the model): master weights (f32, P), working
 * copy (storage dtype, P; the master itself in fp32) and gradients (storage
 * dtype, P). P includes alignment padding, whose values stay zero. */
MPCL_API mpcl_tensor *mpcl_model_master(mpcl_model *m);
MPCL_API mpcl_tensor *mpcl_model_working(mpcl_model *m);
MPCL_API mpcl_tensor *mpcl_model_grad(mpcl_model *m);

/* mpcl_tune (the CLBlast tuning section) over the GEMMs one training step of `spec` at `batch` runs on
 * ctx (forward and both backward products), found by running that step on
 * a throwaway copy of the model with mpcl_gemm_record on. */
MPCL_API mpcl_status mpcl_tune_model(mpcl_context *ctx, const mpcl_model_spec *spec, size_t batch,
                                     const mpcl_tune_options *opt, mpcl_tune_result *res);

/* Parameter tensors in PyTorch state_dict order and names ("0.weight",
 * "0.bias", "3.running_mean", ...): index i from 0 while it returns MPCL_OK.
 * offset is the element offset in the flat buffers; buffers (running
 * statistics) are separate f32 tensors with offset (size_t)-1. */
typedef struct {
    char name[48];
    int ndim;
    size_t shape[4];
    size_t numel;
    size_t offset;       /* in the flat buffers; (size_t)-1 for a buffer */
    mpcl_tensor *buffer; /* running statistics (f32), else NULL */
} mpcl_param_info;
MPCL_API mpcl_status mpcl_model_param(const mpcl_model *m, size_t i, mpcl_param_info *out);

/* ------------------------------------------------------ precision report
 *
 * What half precision would do to each tensor of a model (src/train/
 * precision.c; docs/precision.md): N batches run forward and backward in
 * FP32 on the model's own context (create it with MPCL_PRECISION_FP32), and
 * every weight, layer output ("activation"), layer-output gradient and
 * weight gradient is read back and measured: the range of its magnitudes,
 * a histogram of base-2 exponents, and the share of its values that fp16
 * would flush to zero, make subnormal or overflow, and that bf16 would
 * round with a relative error above 2^-8 (what its 8-bit significand
 * keeps). Gradients are measured twice: as computed (unscaled) and times
 * the loss scale. The weights are not changed (no optimizer step), but a
 * training-mode forward pass updates batch-norm running statistics and
 * draws dropout masks, as training would. A language model ("gpt" spec)
 * is not supported (MPCL_ERR_UNSUPPORTED). */
#define MPCL_EXP_MIN (-149) /* floor(log2) of the smallest float subnormal */
#define MPCL_EXP_MAX 127    /* of the largest float */
#define MPCL_EXP_BINS (MPCL_EXP_MAX - MPCL_EXP_MIN + 1)
typedef enum {
    MPCL_ROLE_WEIGHT,              /* a parameter (master weights) */
    MPCL_ROLE_ACTIVATION,          /* a layer's output */
    MPCL_ROLE_ACTIVATION_GRADIENT, /* the loss's gradient at a layer's output */
    MPCL_ROLE_WEIGHT_GRADIENT      /* a parameter's gradient */
} mpcl_tensor_role;
/* "weight", "activation", "activation_gradient", "weight_gradient" */
MPCL_API const char *mpcl_tensor_role_name(mpcl_tensor_role r);
/* Counts over values (all batches). The fp16 and bf16 counts are of non-zero
 * finite values, rounded to nearest even as mpcl's conversions do. */
typedef struct {
    uint64_t count;     /* all values */
    uint64_t zeros;     /* exactly zero */
    uint64_t nonfinite; /* inf or NaN (in FP32 already) */
    double min_nonzero, median, max; /* of |x| over non-zero finite values (0 where none) */
    uint64_t exponents[MPCL_EXP_BINS]; /* [e - MPCL_EXP_MIN]: values with floor(log2|x|) = e */
    uint64_t f16_zero;      /* round to zero in fp16: |x| <= 2^-25 */
    uint64_t f16_subnormal; /* round to an fp16 subnormal (below 2^-14) */
    uint64_t f16_overflow;  /* round to inf in fp16: |x| >= 65520 */
    uint64_t bf16_lossy;    /* |bf16(x) - x| > 2^-8 |x| (bf16 subnormals, overflow) */
} mpcl_value_stats;
typedef struct {
    char name[64];          /* "0.weight", "3.out", "3.out.grad", "0.weight.grad" */
    mpcl_tensor_role role;
    int layer;              /* the layer's index in the spec */
    int ndim;
    size_t shape[4];        /* activations: one sample's (the batch left out) */
    mpcl_value_stats v;      /* as computed in FP32 */
    mpcl_value_stats scaled; /* gradients times the loss scale; zero for the others */
} mpcl_precision_tensor;
/* The advice, from the tensors above. Loss scales are powers of two. */
typedef struct {
    /* The loss scales at which no gradient value overflows fp16
     * (scale_max: the largest) and at most 1 in 1000 of the non-zero
     * gradient values flushes to zero (scale_min: the smallest); both
     * within the trainer's limits 2^-24 .. 2^24. scale_min > scale_max:
     * no scale does both. */
    double scale_min, scale_max;
    double dynamic_start;  /* the dynamic scaler's start, 2^16 */
    int start_inside;      /* scale_min <= dynamic_start <= scale_max */
    size_t overflow_tensors; /* weights and activations with values fp16 cannot hold */
    double flushed_at_start; /* share of non-zero gradient values fp16 flushes at dynamic_start */
    /* MPCL_PRECISION_FP16_STORAGE where fp16 is safe with dynamic loss
     * scaling, MPCL_PRECISION_BF16 where a weight or an activation overflows
     * fp16 or no loss scale fits */
    mpcl_precision recommend;
} mpcl_precision_advice;
typedef struct mpcl_precision_report mpcl_precision_report;
/* A report on model m (created for training, on an FP32 context; else
 * MPCL_ERR_ARGUMENT), with the gradients also measured at loss_scale (> 0,
 * e.g. the scale a checkpoint's scaler reached, or 65536, the dynamic
 * scaler's start). The report keeps every value it measures on the host
 * (4 bytes each) for the medians and mpcl_precision_report_values. */
MPCL_API mpcl_status mpcl_precision_report_create(mpcl_model *m, float loss_scale,
                                                  mpcl_precision_report **out);
MPCL_API mpcl_status mpcl_precision_report_add_batch(mpcl_precision_report *r, const uint8_t *images,
                                                     const uint8_t *labels, size_t b);
/* The tensors: the weights (in mpcl_model_param order), the layers'
 * outputs (forward order), the output gradients (from the last layer back)
 * and the weight gradients; the median is computed on first access. NULL
 * for i >= the count (0 before the first batch). */
MPCL_API size_t mpcl_precision_report_count(const mpcl_precision_report *r);
MPCL_API const mpcl_precision_tensor *mpcl_precision_report_tensor(mpcl_precision_report *r, size_t i);
MPCL_API void mpcl_precision_report_advice(mpcl_precision_report *r, mpcl_precision_advice *out);
MPCL_API size_t mpcl_precision_report_batches(const mpcl_precision_report *r);
MPCL_API float mpcl_precision_report_loss_scale(const mpcl_precision_report *r);
/* Tensor i's values, unscaled, of all batches one after another. */
MPCL_API const float *mpcl_precision_report_values(const mpcl_precision_report *r, size_t i, size_t *n);
/* Writes every tensor's values (as above) to a safetensors file of 1-D F32
 * tensors named as the report's, atomically; MPCL_ERR_IO naming the path. */
MPCL_API mpcl_status mpcl_precision_report_save_values(const mpcl_precision_report *r, const char *path);
MPCL_API void mpcl_precision_report_destroy(mpcl_precision_report *r);

/* -------------------------------------------------------------- trainer
 *
 * One training step: bytes to the device, normalise + cast there, forward,
 * fused softmax + cross-entropy with the loss scaled, backward, an
 * all-finite check over the flat gradient buffer, then either skip the step
 * (non-finite gradients: the dynamic loss scale backs off and the weights
 * stay as they are) or clip, step the optimizer on the FP32 master weights
 * and refresh the working copy. The gradients stay at the loss scale in
 * their buffer: the optimizer unscales them in float as it reads them (as
 * PyTorch's GradScaler unscales into FP32 gradients), so a gradient of
 * 1e-7 keeps its half-precision bits instead of being rounded after
 * unscaling, where half flushes values below 6e-8 to zero. One small read
 * per step brings the loss and the overflow flag to the host. */

typedef enum {
    MPCL_SCHEDULE_CONSTANT = 0,
    MPCL_SCHEDULE_STEP,   /* lr * gamma^(floor(step / step_size)) */
    MPCL_SCHEDULE_COSINE  /* lr * (1 + cos(pi * step / total_steps)) / 2 */
} mpcl_schedule;

typedef struct {
    mpcl_optimizer_options optimizer;
    mpcl_schedule schedule;
    uint64_t total_steps;  /* cosine: the step at which lr reaches 0 */
    uint64_t step_size;    /* step schedule */
    float gamma;           /* step schedule */
    uint64_t warmup_steps; /* linear warm-up from lr / warmup_steps to lr, then the schedule */
    /* Loss scaling (PyTorch GradScaler semantics when dynamic): */
    int dynamic_scale;     /* 1: dynamic; 0: static loss_scale */
    float loss_scale;      /* initial (dynamic) or fixed (static) scale */
    float growth_factor;   /* x this after growth_interval finite steps in a row */
    float backoff_factor;  /* x this on a non-finite step, which is skipped */
    uint32_t growth_interval;
    float min_scale, max_scale;
    float clip_norm;       /* > 0: clip the unscaled gradients to this global L2 norm */
    float label_smoothing;
    uint64_t inject_inf_step; /* testing: put an inf into the gradient at this step (0: never) */
    uint64_t inject_error_step; /* testing: the step fails at this step as a device would (0: never) */
} mpcl_train_options;

/* Defaults: Adam at 1e-3, constant schedule, no clipping; dynamic loss
 * scaling from 2^16 (growth 2 every 2000 finite steps, backoff 0.5, range
 * [2^-24, 2^24]) in the fp16 modes, a static scale of 1 in fp32 and bf16
 * (bf16 has float's exponent range). */
MPCL_API void mpcl_train_options_init(mpcl_train_options *o, mpcl_precision p);
MPCL_API const char *mpcl_schedule_name(mpcl_schedule s); /* "constant", "step", "cosine" */

typedef struct mpcl_trainer mpcl_trainer;

typedef struct {
    float loss;       /* unscaled mean loss of the batch */
    float lr;         /* the learning rate used (0 on a skipped step) */
    float scale;      /* the loss scale the step used */
    int skipped;      /* non-finite gradients: the step was skipped */
    double grad_norm; /* when clipping: the unscaled global norm before clipping */
} mpcl_step_stats;

typedef struct {
    float scale;
    uint32_t growth_tracker;   /* finite steps in a row since the last change */
    uint64_t steps;            /* steps taken or skipped */
    uint64_t optimizer_steps;  /* steps applied */
    uint64_t skipped_steps;
} mpcl_scaler_state;

MPCL_API mpcl_status mpcl_trainer_create(mpcl_model *m, const mpcl_train_options *o, mpcl_trainer **out);
MPCL_API void mpcl_trainer_destroy(mpcl_trainer *t);
/* images: b samples of C*H*W bytes each; labels: b bytes, 0..classes-1. */
MPCL_API mpcl_status mpcl_trainer_step(mpcl_trainer *t, const uint8_t *images, const uint8_t *labels,
                                       size_t b, mpcl_step_stats *stats);
/* A language model's step (a "gpt" spec): B sequences of T tokens and
 * their targets (the next token at each position), B <= max_batch, T <=
 * the context; the loss is the mean cross-entropy over the B T positions.
 * Where the model spares parameters from weight decay (a gpt: embeddings,
 * biases, layer norms; see docs/lm.md), the optimizer decays the rest
 * only. */
MPCL_API mpcl_status mpcl_trainer_step_lm(mpcl_trainer *t, const int32_t *tokens,
                                          const int32_t *targets, size_t B, size_t T,
                                          mpcl_step_stats *stats);
MPCL_API void mpcl_trainer_scaler(const mpcl_trainer *t, mpcl_scaler_state *out);
/* Restores the scaler's state (a resumed run). */
MPCL_API void mpcl_trainer_set_scaler(mpcl_trainer *t, const mpcl_scaler_state *s);
/* The optimizer's state buffers (f32, P; NULL when unused). */
MPCL_API mpcl_tensor *mpcl_trainer_state(mpcl_trainer *t, int which);
/* The learning rate of step t (0-based) under the options' schedule. */
MPCL_API float mpcl_schedule_lr(const mpcl_train_options *o, uint64_t step);


/* ---------------------------------------------------------- checkpoints
 *
 * Checkpoints are safetensors files (8-byte little-endian header length, a
 * JSON header, raw little-endian data) that Python's `safetensors` package
 * reads. Tensors carry PyTorch state_dict names: the FP32 master weights and
 * batch-norm statistics as "0.weight", "0.bias", "3.running_mean", ..., and
 * a trainer's optimizer state as "optimizer.0.weight.exp_avg" (Adam, AdamW:
 * exp_avg, exp_avg_sq; SGD with momentum: momentum_buffer). "__metadata__"
 * holds the model spec ("model_spec"), the precision, the hyper-parameters,
 * the loss scaler's state, the step counters and the seed (see
 * docs/checkpoints.md for every key). Writes are atomic: a temporary file in
 * the same directory, fsync, rename, so a crash or a full disk never leaves
 * a damaged file in place of a good one. */

typedef struct {
    const char *key;
    const char *value;
} mpcl_meta;

/* Saves the trainer's model, optimizer state, scaler state and counters;
 * extra: nextra more metadata entries (the caller's own, e.g. the epoch);
 * their keys must not be the library's. */
MPCL_API mpcl_status mpcl_checkpoint_save(mpcl_trainer *t, const char *path, const mpcl_meta *extra,
                                          size_t nextra);
/* Saves the model alone (weights, statistics, spec, normalisation): what
 * inference needs. */
MPCL_API mpcl_status mpcl_model_save(mpcl_model *m, const char *path, const mpcl_meta *extra,
                                     size_t nextra);

typedef struct mpcl_checkpoint mpcl_checkpoint;

/* Reads and validates a checkpoint file: the header length against the
 * file size, the JSON, every tensor's dtype, shape and offsets (inside the
 * file, not overlapping). Nothing is applied yet. Errors name the file and
 * the tensor or byte offset (mpcl_last_error). */
MPCL_API mpcl_status mpcl_checkpoint_open(mpcl_context *ctx, const char *path, mpcl_checkpoint **out);
MPCL_API void mpcl_checkpoint_close(mpcl_checkpoint *c);
/* A metadata value, NULL when absent. */
MPCL_API const char *mpcl_checkpoint_meta(const mpcl_checkpoint *c, const char *key);
/* The model spec stored in the metadata. */
MPCL_API mpcl_status mpcl_checkpoint_spec(const mpcl_checkpoint *c, mpcl_model_spec *out);
/* Loads weights and statistics into m, after checking that every parameter
 * of m is there with its shape (F32, or F16 / BF16 widened) and that the file holds
 * no tensor m does not have (optimizer state is ignored). Sets the model's
 * input normalisation from the metadata. */
MPCL_API mpcl_status mpcl_checkpoint_load_model(const mpcl_checkpoint *c, mpcl_model *m);
/* Loads the model as above, then the optimizer state, the scaler state, the
 * step counters and the seed, so training continues exactly where it
 * stopped. The trainer's optimizer must be the checkpoint's. */
MPCL_API mpcl_status mpcl_checkpoint_load_trainer(const mpcl_checkpoint *c, mpcl_trainer *t);

/* Open + spec + create + load_model: a model ready for inference in ctx's
 * precision, taking batches of up to max_batch samples. */
MPCL_API mpcl_status mpcl_model_load(mpcl_context *ctx, const char *path, size_t max_batch,
                                     mpcl_model **out);
/* The normalisation of the model's input bytes (mpcl_normalization): the
 * model owns it, checkpoints keep it, and training, evaluation and
 * prediction all use it. Default: mean 0, std 1. set checks it: channels 1
 * or the model's input channels, finite means, stds > 0. */
MPCL_API mpcl_status mpcl_model_set_normalization(mpcl_model *m, const mpcl_normalization *n);
MPCL_API void mpcl_model_normalization(const mpcl_model *m, mpcl_normalization *out);
/* Inference (src/nn/infer.c), in eval mode (running statistics, no
 * dropout), in batches of up to `batch` (0: the model's max_batch) samples
 * of C*H*W bytes, normalised with the model's normalisation. */
/* Mean loss, accuracy and confusion[true][predicted] over n samples; any
 * output may be NULL. */
MPCL_API mpcl_status mpcl_model_evaluate(mpcl_model *m, const uint8_t *images, const uint8_t *labels,
                                         size_t n, size_t batch, double *loss, double *accuracy,
                                         uint64_t *confusion);
/* Class probabilities (n x classes, softmax in double on the host). */
MPCL_API mpcl_status mpcl_model_predict(mpcl_model *m, const uint8_t *images, size_t n, size_t batch,
                                        float *probs);
/* Classifies n samples (C*H*W bytes each) with the model's normalisation:
 * probs (n x classes, may be NULL) and labels (n argmax classes, may be NULL). */
MPCL_API mpcl_status mpcl_model_classify(mpcl_model *m, const uint8_t *images, size_t n, float *probs,
                                         int *labels);
/* The model and options a trainer was made with. */
MPCL_API mpcl_model *mpcl_trainer_model(mpcl_trainer *t);
MPCL_API const mpcl_train_options *mpcl_trainer_options(const mpcl_trainer *t);

/* ------------------------------------------------------------------ fit
 *
 * The training loop of `mpcl train`, for apps that train from their own
 * code: epochs over a data set in a shuffled order (Fisher-Yates from the
 * seed and the epoch, so an epoch's order depends on nothing else),
 * batches gathered and augmented on a host thread while the device runs
 * the step before, evaluation on the test set after every epoch,
 * checkpoints after every epoch, every save_every steps and when stopped
 * mid-epoch, and stop requests (a flag a signal handler may set, or a
 * callback's answer). A fit resumed from its checkpoint (mpcl_fit_resume)
 * takes the same steps on the same batches as one that never stopped, and
 * ends with the same weights, bit for bit.
 *
 *     mpcl_fit_options fo;
 *     mpcl_fit_options_init(&fo);
 *     fo.epochs = 5;
 *     fo.save_path = "run.st";
 *     mpcl_fit_result res;
 *     mpcl_fit(trainer, &data, &fo, NULL, &res);   // res.test_accuracy
 *
 * (examples/fit.c trains a model this way through the installed library.) */

typedef struct {
    unsigned long epochs;           /* the total; a resumed fit goes on to it (default 3) */
    size_t batch;                   /* samples per step, <= the model's max_batch (default: it) */
    uint64_t seed;                  /* epoch order and augmentation (default 1) */
    size_t train_limit, test_limit; /* the first N samples of each half only; 0: all */
    mpcl_augment_options augment;   /* training images only (default none) */
    uint64_t max_steps;             /* stop when the trainer's step count reaches it; 0: never */
    const char *save_path;          /* checkpoint file (written atomically); NULL: none */
    uint64_t save_every;            /* also every N steps; 0: epochs only */
    const mpcl_meta *save_meta;     /* the caller's own metadata for the checkpoints */
    size_t save_nmeta;
    const volatile sig_atomic_t *stop; /* non-zero: stop after the current step (a signal
                                          * handler may set it; NULL: none) */
    unsigned long epochs_done;      /* where to start: whole epochs done ... */
    size_t epoch_step;              /* ... and steps of the next (mpcl_fit_resume) */
} mpcl_fit_options;

typedef struct {
    uint64_t step;                      /* the trainer's step count after this step */
    unsigned long epoch, epochs;        /* epoch is 1-based */
    size_t epoch_step, steps_per_epoch; /* this epoch's steps done, 1-based */
    size_t batch;                       /* samples in this step */
    double seconds;                     /* the step's time */
    mpcl_step_stats stats;
    double epoch_loss;                  /* mean loss of the epoch's finite steps so far (NAN: none) */
    double epoch_img_s;                 /* the epoch's speed so far */
    float loss_scale;                   /* after the step */
} mpcl_fit_step_info;

typedef struct {
    unsigned long epoch, epochs;
    size_t steps;                   /* this call's steps in the epoch */
    uint64_t skipped, images;       /* skipped steps (non-finite gradients), images trained */
    double train_loss;              /* mean over the finite steps (NAN: none) */
    double test_loss, test_accuracy;
    double img_s, seconds;          /* training speed; the epoch's wall time with evaluation */
    double first_step_s;            /* the fit's first step (kernel builds), in its first epoch; else -1 */
    float loss_scale;
    const uint64_t *confusion;      /* classes x classes, [true][predicted] */
    int saved;                      /* the epoch's checkpoint was written */
} mpcl_fit_epoch_info;

typedef struct {
    /* return non-zero to stop (after the step; after the epoch) */
    int (*step)(void *user, const mpcl_fit_step_info *info);
    int (*epoch)(void *user, const mpcl_fit_epoch_info *info);
    void *user;
    /* a checkpoint that could not be written (a full disk, a file size
     * limit: MPCL_ERR_IO naming the path); the file on disk is the previous
     * checkpoint, untouched, and training goes on. NULL: none. */
    void (*save_failed)(void *user, const char *message);
} mpcl_fit_callbacks;

typedef enum {
    MPCL_FIT_COMPLETE = 0, /* every epoch trained */
    MPCL_FIT_MAX_STEPS,    /* options.max_steps reached */
    MPCL_FIT_STOPPED       /* the stop flag or a callback */
} mpcl_fit_end;

typedef struct {
    mpcl_fit_end end;
    unsigned long epochs_done;  /* the position reached */
    size_t epoch_step;
    int saved;                  /* a checkpoint of that position was written */
    uint64_t steps;             /* the trainer's step count */
    uint64_t images;            /* trained in this call */
    double train_seconds;       /* in training steps */
    double first_step_s;        /* -1: no step */
    double later_seconds;       /* the epochs after this call's first: steady speed */
    uint64_t later_images;
    unsigned long later_epochs;
    int evaluated;              /* test_* hold the last evaluation */
    double test_loss, test_accuracy;
    uint64_t confusion[MPCL_DATASET_CLASSES * MPCL_DATASET_CLASSES];
    uint64_t save_failures;     /* checkpoints that could not be written (training went on) */
    int last_save_failed;       /* the last checkpoint attempted is not on disk */
    char save_error[512];       /* the last failure's message */
} mpcl_fit_result;

MPCL_API void mpcl_fit_options_init(mpcl_fit_options *o);
/* Trains t's model on data's training half and evaluates it on the test
 * half (see above); cb and res may be NULL. Checks first (nothing runs on
 * bad options): batch, limits, the model's input against the images and its
 * outputs against the 10 classes, and the start position. */
MPCL_API mpcl_status mpcl_fit(mpcl_trainer *t, const mpcl_dataset *data, const mpcl_fit_options *o,
                              const mpcl_fit_callbacks *cb, mpcl_fit_result *res);
/* Restores a checkpoint written by mpcl_fit into t (weights, optimizer,
 * scaler, normalisation: mpcl_checkpoint_load_trainer) and sets o's
 * position, seed and augmentation from it. A mid-epoch position needs the
 * checkpoint's batch and training-sample count (MPCL_ERR_ARGUMENT names
 * both). */
MPCL_API mpcl_status mpcl_fit_resume(const mpcl_checkpoint *c, mpcl_trainer *t, mpcl_fit_options *o);

/* ------------------------------------------- data parallelism over MPI
 *
 * One training run over N processes (ranks), each with its own OpenCL
 * device, started by MPI's launcher (`mpirun -np N mpcl train ...`; see
 * docs/distributed.md). Every rank holds the same weights (rank 0's, sent
 * to all by mpcl_trainer_set_dist) and takes a disjoint shard of each
 * global batch; after the backward pass the flat gradient buffer is summed
 * over the ranks in float (an allreduce, in buckets that start while the
 * backward pass still runs), so every rank applies the same update and
 * skips the same overflowing steps. mpcl_fit and mpcl_fit_lm shard the
 * batches and the evaluation and write checkpoints from rank 0 alone when
 * the trainer has a group. A failure on one rank (a device error, host
 * memory) reaches every rank as an error naming that rank; a rank that
 * does not answer for timeout_s makes the others fail with
 * MPCL_ERR_TIMEOUT. The library never ends a process: an app that gets
 * MPCL_ERR_TIMEOUT should end the job (MPI_Abort), since a hung rank cannot
 * be recovered.
 *
 * Without MPI at build time (-Dmpi=disabled, or no libopenmpi-dev),
 * mpcl_dist_built() is 0 and mpcl_dist_init returns MPCL_ERR_UNSUPPORTED. */

typedef struct mpcl_dist mpcl_dist;

typedef enum {
    MPCL_WIRE_F32 = 0, /* gradients sent and summed as float (default) */
    MPCL_WIRE_F16,     /* as half, summed in float and rounded per addition: half the bytes */
    MPCL_WIRE_BF16     /* as bfloat16: half the bytes, float's range, 8 bits of precision */
} mpcl_wire;

typedef struct {
    mpcl_wire wire;
    size_t bucket_bytes;  /* gradient bytes (on the wire) per allreduce; 0 (the default): an
                           * eighth of the gradients, within 64 KiB .. 4 MiB, so that the
                           * exchange of the last layers' buckets overlaps the backward pass
                           * of the first layers */
    uint64_t check_every; /* every N steps, compare a checksum of the weights and the scaler
                           * across ranks (MPCL_ERR_STATE when they differ); 0: never */
    double timeout_s;     /* longest wait for the other ranks in a collective (default 1800:
                           * a first step builds kernels and measures convolutions) */
} mpcl_dist_options;

typedef struct {
    int rank, size;             /* this process and the group's size */
    int local_rank, local_size; /* among the ranks on this machine */
    char host[64];
    uint64_t steps;             /* gradient exchanges so far */
    uint64_t wire_bytes;        /* gradient bytes this rank sent into allreduces */
    double exchange_s;          /* wall time from the end of each backward pass's enqueue to
                                 * the reduced gradients written back (overlaps the device) */
    double exposed_s;           /* of that, the time after the device finished the backward
                                 * pass: communication not hidden behind compute */
    size_t buckets, bucket_bytes; /* the trainer's gradient buckets (mpcl_trainer_set_dist) */
    uint64_t checks;            /* weight checksums compared (check_every) */
    uint64_t checksum;          /* the last one (equal on every rank) */
} mpcl_dist_info;

/* 1 when mpcl was built with MPI. */
MPCL_API int mpcl_dist_built(void);
/* 1 when this process was started by an MPI launcher (Open MPI's mpirun,
 * MPICH's mpiexec, Slurm's srun with PMI): its environment says so. */
MPCL_API int mpcl_dist_launched(void);
/* Joins the group (MPI_Init_thread unless the app did, then a copy of
 * MPI_COMM_WORLD). err gets a message on failure. */
MPCL_API mpcl_status mpcl_dist_init(int *argc, char ***argv, mpcl_dist **out, char *err, size_t errlen);
/* Leaves the group (MPI_Finalize if mpcl_dist_init called MPI_Init). A
 * collective: every rank calls it. */
MPCL_API void mpcl_dist_finalize(mpcl_dist *d);
MPCL_API void mpcl_dist_options_init(mpcl_dist_options *o);
MPCL_API const char *mpcl_wire_name(mpcl_wire w); /* "f32", "f16", "bf16" */
MPCL_API mpcl_status mpcl_wire_parse(const char *s, mpcl_wire *out);
MPCL_API void mpcl_dist_get_info(const mpcl_dist *d, mpcl_dist_info *out);
/* Every rank's first..first+count-1 of n items split as evenly as the
 * ranks allow (rank r: [n r / N, n (r + 1) / N)). */
MPCL_API void mpcl_dist_shard(const mpcl_dist *d, size_t n, size_t *first, size_t *count);
/* A collective that makes every rank agree on how a phase went: each
 * passes its own status and message; all return the lowest failing rank's
 * status with "rank R (host): its message" in msg (MPCL_OK when all
 * succeeded). Use it where ranks may fail on their own (device set-up)
 * before they meet in a step. */
MPCL_API mpcl_status mpcl_dist_agree(mpcl_dist *d, mpcl_status local, char *msg, size_t msglen);
/* (The collectives below take d NULL as a group of one: an app's code
 * path need not change without MPI.) */
/* Rank 0's bytes to every rank (a collective). */
MPCL_API mpcl_status mpcl_dist_bcast(mpcl_dist *d, void *buf, size_t bytes);
/* Any rank's flag set: 1 on every rank (a collective). */
MPCL_API mpcl_status mpcl_dist_any(mpcl_dist *d, int local, int *any);
/* Makes t's training data-parallel over d (a collective): rank 0's weights,
 * batch-norm statistics, normalisation, optimizer state, scaler and seed
 * go to every rank. From then on mpcl_trainer_step and
 * mpcl_trainer_step_lm take this rank's shard (which may be empty: b 0),
 * and their statistics describe the whole global batch. */
MPCL_API mpcl_status mpcl_trainer_set_dist(mpcl_trainer *t, mpcl_dist *d, const mpcl_dist_options *o);
MPCL_API mpcl_dist *mpcl_trainer_dist(const mpcl_trainer *t); /* NULL: one process */
/* Sends rank 0's batch-norm running statistics to every rank (a
 * collective; before an evaluation or a checkpoint). */
MPCL_API mpcl_status mpcl_trainer_sync_buffers(mpcl_trainer *t);

/* --------------------------------------------------- language models
 *
 * The training loop of `mpcl train --task lm`: steps over random windows
 * of a text's training part (mpcl_text_batch: a hash of the seed and the
 * step, so the windows depend on nothing else), validation on consecutive
 * windows of its held-out part every eval_every steps and at the end,
 * checkpoints at each validation, every save_every steps and when stopped,
 * and stop requests. A fit resumed from its checkpoint (mpcl_fit_lm_resume)
 * takes the same steps on the same windows as one that never stopped. */

typedef struct {
    uint64_t steps;         /* the trainer's step count to reach (default 2000) */
    size_t batch;           /* sequences per step (0: the model's max_batch) */
    size_t context;         /* positions per sequence (0: the model's context) */
    uint64_t seed;          /* the windows' draws (default 1) */
    uint64_t eval_every;    /* validate every N steps (default 200; 0: at the end only) */
    size_t eval_windows;    /* validation windows per evaluation (default 64; 0: all) */
    const char *save_path;  /* checkpoint file (written atomically); NULL: none */
    uint64_t save_every;    /* also every N steps; 0: at validations only */
    const mpcl_meta *save_meta;
    size_t save_nmeta;
    const volatile sig_atomic_t *stop; /* non-zero: stop after the current step */
} mpcl_fit_lm_options;

typedef struct {
    uint64_t step, steps;   /* the trainer's step count after this step; the target */
    mpcl_step_stats stats;
    double seconds, tokens_s;
    float loss_scale;       /* after the step */
} mpcl_fit_lm_step_info;

typedef struct {
    uint64_t step, steps;
    double valid_loss;      /* mean cross-entropy per token (nats) on the validation windows */
    double train_loss;      /* mean over the finite steps since the last validation (NAN: none) */
    double tokens_s;        /* training speed since the last validation */
    uint64_t skipped;       /* skipped steps since the last validation */
    float loss_scale;
    int saved;
} mpcl_fit_lm_eval_info;

typedef struct {
    int (*step)(void *user, const mpcl_fit_lm_step_info *info); /* non-zero: stop */
    int (*eval)(void *user, const mpcl_fit_lm_eval_info *info); /* non-zero: stop */
    void *user;
    void (*save_failed)(void *user, const char *message); /* as mpcl_fit_callbacks' */
} mpcl_fit_lm_callbacks;

typedef struct {
    mpcl_fit_end end;
    uint64_t steps;             /* taken in this call */
    uint64_t total_steps;       /* the trainer's step count */
    uint64_t skipped;           /* skipped (non-finite gradients) in this call */
    uint64_t nonfinite_applied; /* applied steps whose loss was not finite (0 unless broken) */
    uint64_t tokens;            /* trained in this call */
    double first_step_s;        /* the first step (kernel builds); -1: none */
    double train_seconds;       /* the later steps' time ... */
    uint64_t later_tokens;      /* ... and tokens: steady speed */
    int evaluated;
    double valid_loss;          /* the last validation */
    int saved;                  /* a checkpoint of the end position was written */
    uint64_t save_failures;     /* checkpoints that could not be written (training went on) */
    int last_save_failed;
    char save_error[512];
} mpcl_fit_lm_result;

MPCL_API void mpcl_fit_lm_options_init(mpcl_fit_lm_options *o);
/* Trains t's model (a gpt spec, vocabulary >= 256: text is bytes) on
 * text; cb and res may be NULL. */
MPCL_API mpcl_status mpcl_fit_lm(mpcl_trainer *t, const mpcl_text *text, const mpcl_fit_lm_options *o,
                                 const mpcl_fit_lm_callbacks *cb, mpcl_fit_lm_result *res);
/* Restores a checkpoint written by mpcl_fit_lm into t and sets o's batch,
 * context and seed from it (steps, eval and save settings stay the
 * caller's). */
MPCL_API mpcl_status mpcl_fit_lm_resume(const mpcl_checkpoint *c, mpcl_trainer *t,
                                        mpcl_fit_lm_options *o);
/* The mean cross-entropy per token over the first max_windows (0: all)
 * consecutive windows of T positions (0: the context) of a text's part,
 * in batches of up to `batch` windows (0: max_batch). */
MPCL_API mpcl_status mpcl_lm_evaluate(mpcl_model *m, const mpcl_text *text, mpcl_text_split split,
                                      size_t T, size_t batch, size_t max_windows, double *loss);

/* ------------------------------------------------------------ profiling
 *
 * When enabled, every kernel mpcl enqueues (and every CLBlast call) gets an
 * OpenCL profiling event; mpcl_profile_report waits for the device and sums
 * device time per kernel name. For benchmarks and diagnosis: it costs host
 * time per launch. */
typedef struct {
    char name[64];   /* kernel name, or "CLBlastSgemm" etc. */
    uint64_t count;  /* launches */
    double total_ms; /* summed device time (end - start) */
} mpcl_profile_entry;

MPCL_API mpcl_status mpcl_profile_enable(mpcl_context *ctx, int on);
/* Writes up to cap entries sorted by total time, sets *n to the number of
 * kernel names seen, and clears the records. */
MPCL_API mpcl_status mpcl_profile_report(mpcl_context *ctx, mpcl_profile_entry *out, size_t cap,
                                         size_t *n);
/* The kernel family of a profile entry's name: the cl/<family>.cl source
 * that defines the kernel ("conv" for "conv_direct_forward"), "gemm" for
 * CLBlast's routines ("CLBlastSgemm"), "other" for a name mpcl does not know.
 * Never NULL; the string is static. */
MPCL_API const char *mpcl_profile_family(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* MPCL_H */
