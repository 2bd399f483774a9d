/* internal.h — what the library's modules share; not installed. */
#ifndef MPCL_INTERNAL_H
#define MPCL_INTERNAL_H

#define CL_TARGET_OPENCL_VERSION 120
#define CL_USE_DEPRECATED_OPENCL_1_2_APIS
#include <CL/cl.h>
#include <stdarg.h>

#include "mpcl.h"

#if defined(__GNUC__)
#define MPCL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MPCL_PRINTF(a, b)
#endif

#define MPCL_ERR_LEN 4096
#define MPCL_PATH_LEN 4096

/* The three ways every kernel source is built (cl/precision.h). */
typedef enum {
    MPCL_VARIANT_FP16 = 0,     /* -DMPCL_FP16: half arithmetic, needs cl_khr_fp16 */
    MPCL_VARIANT_FP16_STORAGE, /* -DMPCL_FP16_STORAGE: half buffers, float math */
    MPCL_VARIANT_FP32,         /* -DMPCL_FP32 */
    MPCL_VARIANT_COUNT
} mpcl_variant;

const char *mpcl_variant_name(mpcl_variant v);   /* "fp16", "fp16-storage", "fp32" */
const char *mpcl_variant_define(mpcl_variant v); /* "MPCL_FP16", ... */
mpcl_variant mpcl_variant_of(mpcl_precision p);  /* AUTO is not allowed */

/* Embedded kernel sources (generated at build time from cl/). */
typedef struct {
    const char *name; /* "probe" for cl/probe.cl; "precision.h" for the header */
    const char *text;
} mpcl_embedded_source;
extern const mpcl_embedded_source mpcl_embedded_sources[];
extern const size_t mpcl_embedded_source_count;

#define MPCL_MAX_PROGRAMS 32

typedef struct {
    char family[32];
    mpcl_variant variant;
    cl_program program;
} mpcl_program_slot;

typedef struct {
    unsigned hits;      /* programs loaded from the binary cache */
    unsigned misses;    /* programs built from source */
    unsigned corrupt;   /* cache entries found damaged and rebuilt */
    unsigned written;   /* cache entries written */
} mpcl_cache_stats;

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

    mpcl_program_slot programs[MPCL_MAX_PROGRAMS];
    size_t program_count;
    uint64_t seed;
};

/* status.c */
mpcl_status mpcl_set_error(mpcl_context *ctx, mpcl_status s, const char *fmt, ...) MPCL_PRINTF(3, 4);
void mpcl_clear_error(mpcl_context *ctx);
const char *mpcl_cl_error_name(cl_int err);         /* "CL_OUT_OF_RESOURCES" */
const char *mpcl_clblast_status_name(int status);   /* "CLBlastNoHalfPrecision" */
/* snprintf that never overflows and always terminates; returns dst. */
char *mpcl_strfmt(char *dst, size_t len, const char *fmt, ...) MPCL_PRINTF(3, 4);

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
/* Path of the cache entry the given build would use (for tests and tools). */
mpcl_status mpcl_program_cache_path(mpcl_context *ctx, const char *family, mpcl_variant variant,
                                    char *path, size_t len);
/* Creates a kernel, with the error message naming family and kernel. */
mpcl_status mpcl_kernel_create(mpcl_context *ctx, const char *family, mpcl_variant variant,
                               const char *kernel, cl_kernel *out);
/* 64-bit FNV-1a, used for cache keys and checksums. */
uint64_t mpcl_hash64(const void *data, size_t len, uint64_t seed);
#define MPCL_HASH_SEED 0xcbf29ce484222325ULL

/* probe.c */
void mpcl_probe_facts(mpcl_context *ctx, mpcl_caps *caps);
void mpcl_probe_checks(mpcl_context *ctx, mpcl_caps *caps);
/* bench.c */
mpcl_status mpcl_probe_bench(mpcl_context *ctx, unsigned gemm_n, mpcl_caps *caps);

/* half.c — exact rounding of a double plus a sticky remainder, for emulation. */
uint16_t mpcl_half_from_double(double x);
/* Rounds x + r to half where r is a remainder below the double's precision
 * (TwoSum error term): r only breaks exact ties. */
uint16_t mpcl_half_from_double_sticky(double x, double r);

#endif
