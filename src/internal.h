/* internal.h — what the library's modules share; not installed. */
#ifndef MPCL_INTERNAL_H
#define MPCL_INTERNAL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#ifndef CL_USE_DEPRECATED_OPENCL_1_2_APIS
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#endif
#include <CL/cl.h>
#include <stdarg.h>
#include <stdio.h>

#include "mpcl.h"

#if defined(__GNUC__)
#define MPCL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MPCL_PRINTF(a, b)
#endif

#define MPCL_ERR_LEN 4096
#define MPCL_PATH_LEN 4096

/* The ways every kernel source is built (cl/precision.h). */
typedef enum {
    MPCL_VARIANT_FP16 = 0,     /* -DMPCL_FP16: half arithmetic, needs cl_khr_fp16 */
    MPCL_VARIANT_FP16_STORAGE, /* -DMPCL_FP16_STORAGE: half buffers, float math */
    MPCL_VARIANT_FP32,         /* -DMPCL_FP32 */
    MPCL_VARIANT_BF16,         /* -DMPCL_BF16: bfloat16 buffers (ushort), float math */
    MPCL_VARIANT_COUNT
} mpcl_variant;

const char *mpcl_variant_name(mpcl_variant v);   /* "fp16", "fp16-storage", "fp32", "bf16" */
const char *mpcl_variant_define(mpcl_variant v); /* "MPCL_FP16", ... */
mpcl_variant mpcl_variant_of(mpcl_precision p);  /* AUTO is not allowed */

/* Embedded kernel sources (generated at build time from cl/). */
typedef struct {
    const char *name; /* "probe" for cl/probe.cl; "precision.h" for the header */
    const char *text;
} mpcl_embedded_source;
extern const mpcl_embedded_source mpcl_embedded_sources[];
extern const size_t mpcl_embedded_source_count;

struct mpcl_prof_rec {
    const char *name; /* a string literal or a kernel slot's name */
    cl_event ev;
};

#define MPCL_MAX_PROGRAMS 32
#define MPCL_MAX_KERNELS 160
#define MPCL_SCRATCH_SLOTS 20

typedef struct {
    const char *family; /* string literals only */
    const char *name;
    mpcl_variant variant;
    cl_kernel kernel;
} mpcl_kernel_slot;

typedef struct {
    char family[32];
    mpcl_variant variant;
    cl_program program;
} mpcl_program_slot;

/* A program built with extra defines (a layer's geometry as compile-time
 * constants, so the device compiler can unroll and fold), with the kernels
 * created from it. The context keeps MPCL_MAX_SPEC_PROGRAMS of them and
 * releases the least recently used one when it needs a slot. */
#define MPCL_MAX_SPEC_PROGRAMS 24
#define MPCL_SPEC_KERNELS 12
#define MPCL_SPEC_DEFINES_LEN 384
#define MPCL_CONV_CHOICES 32 /* layers whose conv algorithm a context remembers */
#define MPCL_SGEMM_CHOICES 64 /* GEMM shapes whose Sgemm choice a context remembers */
/* A block shape of mpcl's own Sgemm kernel (cl/sgemm.cl): rows, vector
 * width, vectors per row (1..3), K chunk of a split (0: none). */
typedef struct {
    int mr, vw, nv, kc;
} mpcl_sgemm_cfg;
typedef struct {
    char family[32];
    mpcl_variant variant;
    char defines[MPCL_SPEC_DEFINES_LEN];
    cl_program program;
    const char *names[MPCL_SPEC_KERNELS]; /* string literals */
    cl_kernel kernels[MPCL_SPEC_KERNELS];
    int nk;
    uint64_t last_use;
} mpcl_spec_slot;

typedef struct {
    unsigned hits;      /* programs loaded from the binary cache */
    unsigned misses;    /* programs built from source */
    unsigned corrupt;   /* cache entries found damaged and rebuilt */
    unsigned written;   /* cache entries written */
    unsigned binaries;  /* binaries handed to clCreateProgramWithBinary (each verified first) */
    unsigned rejected;  /* entries refused before the driver saw them (header, key, length, checksum) */
    unsigned declined;  /* programs built from source whose binary was not stored (store_binaries 0) */
    unsigned write_failed; /* cache files that could not be written (a full disk): the run goes on */
} mpcl_cache_stats;

/* One kernel family's verdict on storing binaries (program.c). */
#define MPCL_MAX_STORE_VERDICTS 32
typedef struct {
    char family[32];
    int store;
    double build_ms, fetch_ms;
} mpcl_store_verdict;

struct mpcl_context {
    char err[MPCL_ERR_LEN];
    int usable; /* 0 for a context that only carries a creation error */

    cl_platform_id platform;
    cl_device_id device;
    cl_context cl;
    cl_command_queue queue;
    mpcl_device_desc desc;

    mpcl_caps caps; /* facts, checks and choice; bench fields filled by mpcl_probe */
    mpcl_precision precision;

    char cache_dir[MPCL_PATH_LEN];
    int cache_enabled;
    char kernel_dir[MPCL_PATH_LEN]; /* "" = embedded sources */
    mpcl_cache_stats cache;
    unsigned cache_tmp_seq; /* names the temporary files of cache writes */
    char cache_rejected_why[MPCL_PATH_LEN + 128]; /* "PATH: REASON" of the last rejected entry */
    char cache_write_why[MPCL_PATH_LEN + 128];    /* "PATH: REASON" of the last failed cache write */
    /* Whether programs built from source have their binary stored
     * (program.c): MPCL_STORE_BINARIES (1, 0; -1 auto), else per family as
     * measured on the device. */
    int store_binaries;
    int store_loaded; /* the verdict file was read */
    mpcl_store_verdict store[MPCL_MAX_STORE_VERDICTS];
    size_t store_count;

    int clblast_checked; /* caps.sgemm / caps.hgemm are filled */
    mpcl_program_slot programs[MPCL_MAX_PROGRAMS];
    size_t program_count;
    mpcl_kernel_slot kernels[MPCL_MAX_KERNELS];
    size_t kernel_count;
    mpcl_spec_slot spec[MPCL_MAX_SPEC_PROGRAMS]; /* specialised programs (launch.c) */
    size_t spec_count;
    uint64_t spec_clock;
    size_t wg_1d; /* work-group size for 1-D elementwise launches (launch_tune.c) */
    int wg_1d_done; /* wg_1d is set */
    const char *wg_1d_source; /* "measured", "cached" or "default" */
    size_t wg_cap; /* mpcl_options.max_work_group_size / MPCL_MAX_WORK_GROUP; 0: none */
    size_t max_item[3]; /* CL_DEVICE_MAX_WORK_ITEM_SIZES (at least 1 each) */
    size_t wg_seen; /* the largest work-group any launch of this context used */
    int gemm_gt; /* convert.cl gemm_f32acc: the GT x GT group it was built for (0: not yet) */
    cl_uint base_align_bytes; /* CL_DEVICE_MEM_BASE_ADDR_ALIGN / 8 */
    mpcl_mem_stats mem;
    cl_mem scratch[MPCL_SCRATCH_SLOTS];
    size_t scratch_bytes[MPCL_SCRATCH_SLOTS];
    mpcl_accumulation gemm_accum;
    /* profiling (mpcl_profile_enable): events of this period's launches */
    int prof_on;
    struct mpcl_prof_rec *prof;
    size_t prof_n, prof_cap;
    uint64_t seed;
    /* gemm.c and tuning.c */
    int gemm_f16_path;     /* mpcl_gemm_f16_path: how float-accumulating GEMMs on half run */
    int gemm_f16_env;      /* the same from $MPCL_GEMM_F16_PATH, read at creation (AUTO: unset) */
    int bf16_intel;        /* bf16 kernels built with -DMPCL_BF16_INTEL (verified built-ins) */
    int hgemm_refused;     /* CLBlast refused Hgemm: fp16 GEMMs accumulate in float from then on */
    char tuning_note[512]; /* what tuning.c did to CLBlast's parameters for this device */
    int clblast_own;       /* mpcl_options.clblast_own / MPCL_CLBLAST_OWN: no overrides */
    /* ops/conv.c: mpcl_options.conv_* (or MPCL_CONV_ALGO, MPCL_IM2COL,
     * MPCL_CONV_CHUNK, read once at creation), changed by mpcl_conv_configure */
    int conv_algo;         /* conv.c's conv_algo; 0: measured */
    int conv_rows;         /* im2col kernel: -1 measured, 0 taps, 1 rows */
    size_t conv_chunk;     /* images per im2col chunk; 0: measured */
    int tuning_cached[2];  /* [0] single, [1] half: a verified cache entry is applied */
    /* gemm.c: shapes of the CLBlast calls while recording (mpcl_gemm_record) */
    int gemm_rec_on;
    mpcl_gemm_shape *gemm_rec;
    size_t gemm_rec_n, gemm_rec_cap;
    char storage_defines[64]; /* halfconv.c: added to fp16-storage builds ("" or -DMPCL_HALF_...) */
    /* ops/conv.c: the algorithm (and chunk) chosen per convolution layer (a key of its
     * geometry and batch, MPCL_CONV_CHOICES kept, the oldest replaced) */
    struct {
        uint64_t key;
        int algo;
        size_t nb; /* images per im2col chunk, 0: the most that fit */
        int rows;  /* the rows kernel for the forward-layout im2col */
    } conv_choice[MPCL_CONV_CHOICES];
    size_t conv_choice_n;
    /* sgemm.c: CLBlast or the own kernel per GEMM shape */
    struct {
        uint64_t key;
        int own;
        mpcl_sgemm_cfg cfg;
    } sgemm_choice[MPCL_SGEMM_CHOICES];
    size_t sgemm_choice_n;
    uint64_t clblast_sig[2]; /* a hash of the CLBlast parameters applied ([0] single, [1] half; 0: CLBlast's own) */
    unsigned conv_measured; /* layer passes whose algorithm this context measured */
    unsigned conv_cached;   /* layer passes whose algorithm it read from the cache directory */
};

struct mpcl_tensor {
    mpcl_context *ctx;
    cl_mem mem; /* own buffer, or a sub-buffer / retained handle of the base's */
    mpcl_dtype dtype;
    int ndim;
    size_t shape[MPCL_MAX_DIMS];
    size_t numel;
    mpcl_mem_tag tag;
    size_t accounted; /* bytes counted in ctx->mem (0 for views) */
};

/* status.c */
mpcl_status mpcl_set_error(mpcl_context *ctx, mpcl_status s, const char *fmt, ...) MPCL_PRINTF(3, 4);
void mpcl_clear_error(mpcl_context *ctx);
const char *mpcl_cl_error_name(cl_int err);         /* "CL_OUT_OF_RESOURCES" */
const char *mpcl_clblast_status_name(int status);   /* "CLBlastNoHalfPrecision" */
/* snprintf that never overflows and always terminates; returns dst. */
char *mpcl_strfmt(char *dst, size_t len, const char *fmt, ...) MPCL_PRINTF(3, 4);
/* Seconds on the monotonic clock (for timing builds, launches, searches). */
double mpcl_now_s(void);

/* splitmix64 (Steele, Lea and Flood): mpcl_mix64 is its finaliser, a
 * bijection of 64-bit words that mixes well; mpcl_splitmix64 the next value
 * of the stream in *state. Weight initialisation, epoch orders and
 * augmentation draw from them. */
static inline uint64_t mpcl_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t mpcl_splitmix64(uint64_t *state) { return mpcl_mix64(*state += 0x9e3779b97f4a7c15ULL); }

/* device.c */
/* Reads a device info string into dst (always terminated). */
void mpcl_device_string(cl_device_id d, cl_device_info what, char *dst, size_t len);
/* Picks the device that selector `sel` names from list (NULL or "": the first
 * GPU, else the first device). MPCL_ERR_NO_DEVICE with a message that lists
 * what exists when nothing matches. */
mpcl_status mpcl_device_select(const mpcl_device_desc *list, size_t n, const char *sel,
                               size_t *index, char *err, size_t err_len);

/* backend.c */
/* Chooses the mode for `requested` from verified caps. On refusal returns
 * MPCL_ERR_UNSUPPORTED; why always receives the reason. */
mpcl_status mpcl_backend_choose(const mpcl_caps *caps, mpcl_precision requested,
                                mpcl_precision *chosen, char *why, size_t why_len);

/* program.c */
/* The program of `family` (cl/<family>.cl) built for `variant`, built or
 * loaded from the cache on first use and kept for the context's life. */
mpcl_status mpcl_program_get(mpcl_context *ctx, const char *family, mpcl_variant variant,
                             cl_program *out);
/* Builds without touching the program table: use_cache 0 forces a source
 * build and writes nothing. The caller releases *out. */
mpcl_status mpcl_program_build(mpcl_context *ctx, const char *family, mpcl_variant variant,
                               int use_cache, cl_program *out);
/* mpcl_program_build with `defines` (e.g. "-DCONV_C=1 -DCONV_H=28") added
 * to the build options; they are part of the binary cache key. */
mpcl_status mpcl_program_build_defines(mpcl_context *ctx, const char *family, mpcl_variant variant,
                                       const char *defines, int use_cache, cl_program *out);
/* Path of the cache entry the given build would use (for tests and tools). */
/* Whether programs of family built from source get their binary stored on
 * this device: 1 yes, 0 no, -1 not decided yet (the next build measures
 * it); *build_ms, *fetch_ms (may be NULL) the source build and binary fetch
 * behind the verdict (0 when it came from MPCL_STORE_BINARIES or is not
 * decided). */
int mpcl_store_binaries(mpcl_context *ctx, const char *family, double *build_ms, double *fetch_ms);
mpcl_status mpcl_program_cache_path(mpcl_context *ctx, const char *family, mpcl_variant variant,
                                    char *path, size_t len);
/* Creates a kernel, with the error message naming family and kernel. */
mpcl_status mpcl_kernel_create(mpcl_context *ctx, const char *family, mpcl_variant variant,
                               const char *kernel, cl_kernel *out);
/* The kernel `name` of cl/<family>.cl in `variant`, created once per context
 * and kept (arguments are set at each launch). family and name must be
 * string literals. */
mpcl_status mpcl_kernel_get(mpcl_context *ctx, const char *family, mpcl_variant variant,
                            const char *name, cl_kernel *out);
/* The kernel `name` of cl/<family>.cl built for `variant` with `defines`
 * (at most MPCL_SPEC_DEFINES_LEN - 1 characters), created once and kept in
 * the context's table of specialised programs. family and name must be
 * string literals. The kernel stays valid until the next call (which may
 * release the least recently used program): set its arguments and enqueue
 * it before asking for another. */
mpcl_status mpcl_kernel_get_spec(mpcl_context *ctx, const char *family, mpcl_variant variant,
                                 const char *defines, const char *name, cl_kernel *out);
/* Releases the specialised programs and their kernels (context destroy). */
void mpcl_spec_release(mpcl_context *ctx);
/* The 64-byte header of a program cache entry for key, device hash dev and
 * the len bytes of bin (program.c describes the format; for tests). */
/* Cache files (program binaries, tunings, measured choices) are written to
 * a temporary file beside path and renamed over it, so a reader sees the old
 * file or the new one, never half of one. mpcl_cache_tmp_open creates the
 * cache directory and opens the temporary file (its name in tmp, at least
 * MPCL_PATH_LEN + 64 bytes) in mode; NULL on failure. mpcl_cache_tmp_commit
 * closes it and renames it over path when ok and the close succeeded, else
 * removes it; 1 when path now holds the new file. */
#define MPCL_CACHE_TMP_LEN (MPCL_PATH_LEN + 64)
FILE *mpcl_cache_tmp_open(mpcl_context *ctx, const char *path, char *tmp, const char *mode);
int mpcl_cache_tmp_commit(mpcl_context *ctx, FILE *f, int ok, const char *tmp, const char *path);
void mpcl_cache_header(unsigned char hdr[64], uint64_t key, uint64_t dev, const void *bin,
                       size_t len);
/* The validation of a program cache entry (header fields and checksums,
 * length, key and device hash) on the len bytes of a whole entry in memory:
 * NULL when it is sound, with *bin_len its binary's length; else the reason
 * (program.c; for the fuzz target tests/fuzz/fuzz_program_cache.c). */
const char *mpcl_cache_entry_problem(const unsigned char *entry, uint64_t len, uint64_t key,
                                     uint64_t dev, uint64_t *bin_len);
/* A hash of the platform, device and driver (names and versions): what
 * cache entries are written for. */
uint64_t mpcl_device_hash(const mpcl_context *ctx);
/* halfconv.c: in an fp16-storage context, measures (or reads from the cache
 * directory) whether the storage kernels convert halves with integer code
 * or the built-ins, and sets ctx->storage_defines; a no-op otherwise. */
mpcl_status mpcl_halfconv_choose(mpcl_context *ctx);
/* ops/cast.c: n elements of src converted into dst, storage dtype (f16 or
 * bf16) -> f32 (to_float) or f32 -> storage dtype, in the context's variant (no checks; op names the caller). */
mpcl_status mpcl_cast_raw(mpcl_context *ctx, const char *op, int to_float, cl_mem src, cl_mem dst,
                          size_t n);
/* io/checkpoint.c: a metadata value that is a whole number (digits only, in
 * range) into *out; 0 for NULL or anything else. */
int mpcl_parse_u64(const char *v, uint64_t *out);
/* 64-bit FNV-1a, used for cache keys and checksums. */
uint64_t mpcl_hash64(const void *data, size_t len, uint64_t seed);
#define MPCL_HASH_SEED 0xcbf29ce484222325ULL

/* launch.c */
/* Profiling: an event pointer for the next enqueue of `name` (NULL when
 * profiling is off), to be recorded with mpcl_profile_add. */
cl_event *mpcl_profile_event(mpcl_context *ctx, cl_event *slot);
void mpcl_profile_add(mpcl_context *ctx, const char *name, cl_event ev);
/* Sets nargs kernel arguments given as (size_t size, const void *value) pairs. */
cl_int mpcl_kernel_args(cl_kernel k, int nargs, ...);
/* The largest work-group a launch of k may use: the least of
 * CL_KERNEL_WORK_GROUP_SIZE for k on the device, the device's
 * CL_DEVICE_MAX_WORK_GROUP_SIZE and the context's cap (max_work_group_size,
 * MPCL_MAX_WORK_GROUP). At least 1. Every launcher sizes its groups from
 * this; mpcl_launch refuses a local size above it. */
size_t mpcl_wg_limit(mpcl_context *ctx, cl_kernel k);
/* The device's CL_DEVICE_MAX_WORK_GROUP_SIZE with the context's cap applied
 * (for choices made before a kernel exists). At least 1. */
size_t mpcl_wg_device_limit(const mpcl_context *ctx);
/* CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE of k (1 when not reported). */
size_t mpcl_wg_multiple(mpcl_context *ctx, cl_kernel k);
/* The local size for a 1-D launch of n items that would leave the group to
 * the driver: NULL without a cap, else slot, set to the largest divisor of
 * n within mpcl_wg_limit (for the probe's and the benchmarks' launches). */
const size_t *mpcl_cap_local_1d(mpcl_context *ctx, cl_kernel k, size_t n, size_t *slot);
/* launch_tune.c — the work-group size for 1-D launches on this device
 * (before the kernel's limit and the cap clip it): measured on first use
 * and kept in the cache directory, read from there, or a starting point
 * without a cache. */
size_t mpcl_wg_1d(mpcl_context *ctx);
/* The largest power of two <= n (n >= 1), for work-group tree reductions. */
size_t mpcl_pow2_floor(size_t n);
/* The largest divisor of n that is <= cap (at least 1). */
size_t mpcl_largest_divisor_le(size_t n, size_t cap);
/* Enqueues k over n items in 1-D (global rounded up to the work-group size;
 * kernels check their bounds). `what` names the op for error messages. */
/* ops/conv.c: ctx's convolution settings from the options, else the
 * environment (at context creation). */
mpcl_status mpcl_conv_settings_init(mpcl_context *ctx, const mpcl_options *opt);
mpcl_status mpcl_launch_1d(mpcl_context *ctx, cl_kernel k, const char *what, size_t n);
/* Enqueues exactly (n0, n1, n2) work items in 3-D, for kernels that walk
 * image rows: dim 0 runs along a row (neighbouring items read neighbouring
 * pixels), and a work-group takes whole rows, as many as fit in
 * MPCL_ROWS_GROUP items (each local size divides its global size). No
 * item falls outside the range, so the kernels need no bounds checks: a
 * CPU device then vectorises them across neighbouring items (PoCL does
 * not when a kernel returns early or branches around a load or store). */
#define MPCL_ROWS_GROUP 256
mpcl_status mpcl_launch_rows(mpcl_context *ctx, cl_kernel k, const char *what, size_t n0,
                             size_t n1, size_t n2);
/* Enqueues exactly n items in 1-D: work-groups of a divisor of n from
 * MPCL_EXACT_GROUP / 4 to MPCL_EXACT_GROUP items when there is one, else
 * groups of MPCL_EXACT_GROUP and one group for the rest, at a global
 * offset. For kernels without a bounds check, which a
 * CPU device vectorises (see mpcl_launch_rows). */
#define MPCL_EXACT_GROUP 256
mpcl_status mpcl_launch_exact_1d(mpcl_context *ctx, cl_kernel k, const char *what, size_t n);
/* Enqueues an N-D range after checking its shape: 1 to 3 dimensions, no
 * size_t overflow of the item count (MPCL_ERR_ARGUMENT), and a local size
 * that divides the global size and fits mpcl_wg_limit and the device's item
 * sizes (MPCL_ERR_STATE: a launcher's bug, reported rather than handed to
 * the driver). A zero global size enqueues nothing. local may be NULL: with
 * a cap in force mpcl then picks the group itself, within the cap. */
mpcl_status mpcl_launch(mpcl_context *ctx, cl_kernel k, const char *what, cl_uint dims,
                        const size_t *global, const size_t *local);
/* The variant the context's kernels are built in (from its precision). */
mpcl_variant mpcl_ctx_variant(const mpcl_context *ctx);

/* check.c — argument checks for ops; each returns MPCL_ERR_SHAPE or
 * MPCL_ERR_ARGUMENT with a message naming the op, the argument and both
 * shapes ("mpcl_linear_forward: w is (10, 20) f32, expected (10, 1440) f32"). */
#define MPCL_ANY 0 /* a wildcard dimension or dtype count for mpcl_check_tensor */
/* t must be non-NULL with ndim dims; dims[i] == 0 accepts any size. */
mpcl_status mpcl_check_tensor(mpcl_context *ctx, const char *op, const char *name,
                              const mpcl_tensor *t, mpcl_dtype dtype, int ndim, const size_t *dims);
/* Same element count and dtype, any shape. */
mpcl_status mpcl_check_same(mpcl_context *ctx, const char *op, const char *name_a,
                            const mpcl_tensor *a, const char *name_b, const mpcl_tensor *b);
/* n fits the 32-bit element counts the kernels take (cl_uint), else
 * MPCL_ERR_ARGUMENT naming op and name: never a count truncated silently. */
mpcl_status mpcl_check_u32(mpcl_context *ctx, const char *op, const char *name, size_t n);
/* A context-less check that the tensor belongs to ctx. */
mpcl_status mpcl_check_ctx(mpcl_context *ctx, const char *op);

/* scratch: grow-only device buffers per slot, kept for the context's life
 * (accounted as MPCL_MEM_SCRATCH). The returned buffer holds at least bytes. */
mpcl_status mpcl_scratch(mpcl_context *ctx, int slot, size_t bytes, cl_mem *out);

/* gemm.c — the router below mpcl_gemm, on raw buffers (offsets and leading
 * dimensions in elements, row-major). dtype is that of A, B and C. */
mpcl_status mpcl_gemm_raw(mpcl_context *ctx, const char *what, mpcl_dtype dtype, int trans_a,
                          int trans_b, size_t m, size_t n, size_t k, float alpha, cl_mem a,
                          size_t a_off, size_t lda, cl_mem b, size_t b_off, size_t ldb, float beta,
                          cl_mem c, size_t c_off, size_t ldc);
/* mpcl_gemm_raw with C in float whatever dtype (that of A and B) is: float
 * sums on 16-bit operands written without rounding to 16 bits (for a
 * consumer that reads float, as conv.c's col2im). */
mpcl_status mpcl_gemm_raw_c32(mpcl_context *ctx, const char *what, mpcl_dtype dtype, int trans_a,
                              int trans_b, size_t m, size_t n, size_t k, float alpha, cl_mem a,
                              size_t a_off, size_t lda, cl_mem b, size_t b_off, size_t ldb,
                              float beta, cl_mem c, size_t c_off, size_t ldc);
/* batch independent products, the i-th at offsets + i * stride. */
mpcl_status mpcl_gemm_batched_raw(mpcl_context *ctx, const char *what, mpcl_dtype dtype,
                                  int trans_a, int trans_b, size_t m, size_t n, size_t k,
                                  float alpha, cl_mem a, size_t a_off, size_t lda, size_t a_stride,
                                  cl_mem b, size_t b_off, size_t ldb, size_t b_stride, float beta,
                                  cl_mem c, size_t c_off, size_t ldc, size_t c_stride,
                                  size_t batch);

/* mpcl_gemm_batched_raw with C in float (as mpcl_gemm_raw_c32). */
mpcl_status mpcl_gemm_batched_raw_c32(mpcl_context *ctx, const char *what, mpcl_dtype dtype,
                                      int trans_a, int trans_b, size_t m, size_t n, size_t k,
                                      float alpha, cl_mem a, size_t a_off, size_t lda,
                                      size_t a_stride, cl_mem b, size_t b_off, size_t ldb,
                                      size_t b_stride, float beta, cl_mem c, size_t c_off,
                                      size_t ldc, size_t c_stride, size_t batch);

/* The GEMM router owns scratch slots 0..3 (float copies of half operands on
 * the convert path: 0 A, 1 B, 2 C; 3 CLBlast's temporary buffer); conv uses
 * 4..7. */
#define MPCL_SCRATCH_GEMM_A 0
#define MPCL_SCRATCH_GEMM_B 1
#define MPCL_SCRATCH_GEMM_C 2
#define MPCL_SCRATCH_GEMM_T 3 /* CLBlast's temporary buffer (padded copies) of Sgemm */
#define MPCL_SCRATCH_GEMM_P 8 /* the own Sgemm's copy of B with rows off the 4 KiB stride */
/* How a float-accumulating GEMM on half operands (fp16-storage, and fp16
 * with MPCL_ACCUM_FLOAT) runs; ctx->gemm_f16_path. AUTO is the measured
 * faster one (docs/gemm.md). */
typedef enum {
    MPCL_GEMM_F16_AUTO = 0,
    MPCL_GEMM_F16_CONVERT, /* half -> float scratch copies, CLBlast Sgemm, float -> half */
    MPCL_GEMM_F16_DIRECT   /* convert.cl gemm_f32acc: reads half, sums in float */
} mpcl_gemm_f16_path;

/* tuning.c — applies the device's CLBlast parameters at context creation:
 * the cache entry written by mpcl_tune (tune.c), else the built-in starting
 * point for the device, if any; each is verified exact on small integer
 * GEMMs first and undone when it fails. Never fails the context;
 * ctx->tuning_note says what happened. */
void mpcl_tuning_apply(mpcl_context *ctx);

/* The parameters mpcl sets for one precision: CLBlast's Xgemm kernel (the
 * names below, in this order) and the GemmRoutine threshold under which
 * CLBlast runs its direct kernel (XGEMM_MIN_INDIRECT_SIZE). */
#define MPCL_XGEMM_NPARAMS 16
extern const char *const mpcl_xgemm_param_names[MPCL_XGEMM_NPARAMS];
typedef struct {
    size_t xgemm[MPCL_XGEMM_NPARAMS];
    size_t min_indirect; /* 0: leave CLBlast's own threshold */
} mpcl_clblast_params;
/* Overrides CLBlast's parameters of ctx's device for half (1) or single (0);
 * CLBlast status, *failed naming the kernel that was refused. */
int mpcl_clblast_override(mpcl_context *ctx, int half, const mpcl_clblast_params *p,
                          const char **failed);
/* Version of the CLBlast tuning cache file ("mpcl-clblast-tuning"). 2: the
 * sets are measured on the column-major form of mpcl's GEMMs (M and N trade
 * places in CLBlast's kernel), so version 1's sets are stale. */
#define MPCL_TUNING_FORMAT_VERSION 2
/* One row-major CLBlast GEMM, C = alpha op(A) op(B) + beta C (batch > 1:
 * strided batched; Sgemm with batch 1 lends tmp as CLBlast's temporary
 * buffer when non-NULL). Offsets, leading dimensions, strides in elements. */
typedef struct mpcl_xgemm mpcl_xgemm;
struct mpcl_xgemm {
    int half, trans_a, trans_b;
    size_t m, n, k, batch;
    float alpha, beta;
    cl_mem a, b, c, tmp;
    size_t a_off, b_off, c_off, lda, ldb, ldc, sa, sb, sc;
    /* For the own kernel only: 1 when A, B and C hold the context's 16-bit
     * storage type (half or bf16; sums in float), and the path it is
     * measured against (gemm.c's conversion or direct path) in place of
     * CLBlast's Sgemm. */
    int store16;
    int c_f32; /* store16 only: C holds float (mpcl_gemm_raw_c32) */
    mpcl_status (*baseline)(mpcl_context *ctx, const mpcl_xgemm *x);
};
/* Issues x (gemm.c: as the column-major product C^T = op(B)^T op(A)^T, which
 * spares CLBlast's transpose of C); CLBlast status. */
int mpcl_clblast_run(mpcl_context *ctx, const mpcl_xgemm *x, cl_event *evp);
/* Bytes of the temporary buffer CLBlast's Sgemm wants for x; 0 for none. */
size_t mpcl_clblast_temp_bytes(mpcl_context *ctx, const mpcl_xgemm *x);
/* x as the router runs CLBlast's Sgemm (a scratch buffer lent as CLBlast's
 * temporary one, profiled); CLBlast status. */
int mpcl_sgemm_clblast(mpcl_context *ctx, const mpcl_xgemm *x);
/* Scratch for the own Sgemm's split-K partial sums (the slot CLBlast's
 * temporary buffer uses: the two never run in one call). */
mpcl_status mpcl_gemm_part_buffer(mpcl_context *ctx, size_t elems, cl_mem *out);
/* sgemm.c: x is a product the own kernel takes (float, or store16 in a
 * 16-bit mode; one matrix, B not transposed, sizes within int). */
int mpcl_sgemm_takes(const mpcl_xgemm *x);
/* Runs x with the own kernel in block shape cfg (what names the op). */
mpcl_status mpcl_sgemm_own(mpcl_context *ctx, const mpcl_xgemm *x, const mpcl_sgemm_cfg *cfg,
                           const char *what);
/* Whether x's shape runs the own kernel (*own 1, *cfg its block shape) or
 * CLBlast: MPCL_SGEMM, else the context's or the cache file's verdict, else
 * measured now (sgemm.c). An error only for a bad MPCL_SGEMM. */
mpcl_status mpcl_sgemm_pick(mpcl_context *ctx, const mpcl_xgemm *x, const char *what, int *own,
                            mpcl_sgemm_cfg *cfg);
/* One CLBlast GEMM, C = op(A) op(B), row-major, alpha 1, beta 0, on packed
 * operands (leading dimensions the rows' lengths, batch > 1: matrices back
 * to back, strided batched): Hgemm (half) or Sgemm, the latter with tmp
 * lent as its temporary buffer when non-NULL (batch 1). CLBlast status. */
int mpcl_clblast_gemm(mpcl_context *ctx, int half, int trans_a, int trans_b, size_t m, size_t n,
                      size_t k, size_t batch, cl_mem a, cl_mem b, cl_mem c, cl_mem tmp);
/* Runs small GEMMs of every transposition (and, with batched, a strided
 * batch) on small integers, exact in the precision, and compares them bit
 * for bit with the host. 1 when right; else why says what differed. */
int mpcl_clblast_verify(mpcl_context *ctx, int half, int batched, char *why, size_t why_len);
/* The built-in starting points for the search on ctx's device: its own
 * table entry, then the general ones for its device type (other_type 0),
 * or those for the other device types (1); returns how many were written. */
size_t mpcl_tuning_starts(const mpcl_context *ctx, int other_type, mpcl_clblast_params *out,
                          size_t cap);
/* The CLBlast version mpcl was built against (part of the cache key). */
const char *mpcl_clblast_version(void);
/* The cache file of ctx's device. */
void mpcl_tuning_path(const mpcl_context *ctx, char *dst, size_t len);
/* Marks CLBlast's parameters of ctx's device and precision as overridden in
 * this process (after which its own values cannot be measured again); and
 * asks whether they are. */
void mpcl_clblast_mark_overridden(const mpcl_context *ctx, int half);
int mpcl_clblast_overridden(const mpcl_context *ctx, int half);
/* 1 where CLBlast's Hgemm can run: cl_khr_fp16 declared and half arithmetic verified. */
int mpcl_half_gemm_possible(const mpcl_context *ctx);
/* tune.c: counts one CLBlast call's shape while mpcl_gemm_record is on. */
void mpcl_gemm_note_shape(mpcl_context *ctx, int half, int ta, int tb, size_t m, size_t n, size_t k,
                          size_t batch);
/* The cache file parsed, its header checked (format, version, device
 * hash, CLBlast version): NULL with why ("" when there is no file). */
struct cJSON *mpcl_tuning_load(const mpcl_context *ctx, char *why, size_t why_len);
/* The parameters of the "single" (half 0) or "half" entry: 1 read, 0
 * malformed (why says how), -1 absent. */
int mpcl_tuning_entry_params(const struct cJSON *root, int half, mpcl_clblast_params *p, char *why,
                             size_t why_len);
/* 1 when the table has an Sgemm override for ctx's device. */
int mpcl_tuning_has_override(const mpcl_context *ctx);
/* Applies (on = 1) or undoes (on = 0) the Sgemm override of ctx's device,
 * for benchmarks that compare the two. */
mpcl_status mpcl_tuning_set(mpcl_context *ctx, int on);
/* The same for half (1) or single (0): on applies the cached entry (else the
 * table's set); off puts CLBlast's own values back where that is possible
 * (not overridden yet in this process, or recorded in the table), else
 * MPCL_ERR_UNSUPPORTED. */
mpcl_status mpcl_tuning_set_precision(mpcl_context *ctx, int half, int on);

/* probe.c */
void mpcl_probe_facts(mpcl_context *ctx, mpcl_caps *caps);
/* Check (d): bf16 storage by integer operations, and the cl_intel_bfloat16
 * conversion built-ins where declared, both bit for bit against bf16.c. Run
 * at context creation; sets caps->bf16_* (a failure that says nothing about
 * the device is returned, as for mpcl_probe_checks). */
mpcl_status mpcl_probe_bf16(mpcl_context *ctx, mpcl_caps *caps);
/* The extra build options of a variant on ctx: "" or "-DMPCL_BF16_INTEL"
 * (bf16), the half conversion choice of halfconv.c (fp16-storage). */
const char *mpcl_variant_extra_define(const mpcl_context *ctx, mpcl_variant v);
/* Exact host emulation of one half operation, rounded once to nearest even:
 * op 0 a+b, 1 a-b, 2 a*b, 3 a/b, 4 fma(a,b,c). What check (b) compares with. */
uint16_t mpcl_half_emulate(int op, uint16_t a, uint16_t b, uint16_t c);
/* Checks (a) fp16 storage and (b) fp16 arithmetic: run at context creation. */
/* A failure that says nothing about the device (kernel sources unreadable,
 * no memory) is returned, with the message in ctx. */
mpcl_status mpcl_probe_checks(mpcl_context *ctx, mpcl_caps *caps);
/* Check (c) CLBlast Sgemm and Hgemm: run by mpcl_probe (CLBlast compiles
 * its kernels on first use, which is slow on some devices). */
void mpcl_probe_clblast(mpcl_context *ctx, mpcl_caps *caps);
/* bench.c */
mpcl_status mpcl_probe_bench(mpcl_context *ctx, unsigned gemm_n, mpcl_caps *caps);

/* half.c — exact rounding of a double plus a sticky remainder, for emulation. */
uint16_t mpcl_half_from_double(double x);
/* Rounds x + r to half where r is a remainder below the double's precision
 * (TwoSum error term): r only breaks exact ties. */
uint16_t mpcl_half_from_double_sticky(double x, double r);

#endif
