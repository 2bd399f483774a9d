/* test_program.c — kernel sources (embedded and from a directory), runtime
 * builds of every family in every variant the device can run, build logs,
 * and the program binary cache: misses, hits, corrupt entries rebuilt (never
 * trusted), the switches that turn it off, and the measured choice of
 * storing binaries at all (per family, per device).
 *
 * Every test uses its own cache directory. Usage: test_program CL_FILE...
 * (the cl_sources list of src/meson.build). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define HAS(hay, needle) ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

static int g_argc;
static char **g_argv;

static mpcl_context *open_ctx_opt(const mpcl_options *opt)
{
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(opt, &ctx);
    ck_assert_msg(s == MPCL_OK, "mpcl_context_create: %s: %s", mpcl_status_name(s), mpcl_last_error(ctx));
    return ctx;
}

static mpcl_context *open_ctx(const char *cache_dir)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    opt.cache_dir = cache_dir;
    return open_ctx_opt(&opt);
}

static int known_pocl(const mpcl_caps *c)
{
    return strstr(c->platform, "Portable Computing Language") != NULL && c->ext_fp16 == 0;
}

static const char *embedded(const char *name)
{
    for (size_t i = 0; i < mpcl_embedded_source_count; i++)
        if (strcmp(mpcl_embedded_sources[i].name, name) == 0)
            return mpcl_embedded_sources[i].text;
    return NULL;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    ck_assert_ptr_nonnull(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Copies cl/<name> into dir, appending `extra` when not NULL. */
static void copy_cl(const char *dir, const char *name, const char *extra)
{
    char *src = path_join(tu_env("MPCL_TEST_CL_DIR"), name), *dst = path_join(dir, name);
    size_t len = 0;
    char *text = tu_read_file(src, &len);
    ck_assert_msg(text != NULL, "cannot read %s", src);
    size_t el = extra ? strlen(extra) : 0;
    char *all = malloc(len + el + 1);
    ck_assert_ptr_nonnull(all);
    memcpy(all, text, len);
    if (el)
        memcpy(all + len, extra, el);
    ck_assert_int_eq(tu_write_file(dst, all, len + el), 0);
    free(all);
    free(text);
    free(src);
    free(dst);
}

/* Copies every listed kernel source into dir. */
static void copy_all_cl(const char *dir)
{
    for (int i = 1; i < g_argc; i++) {
        const char *base = strrchr(g_argv[i], '/');
        copy_cl(dir, base ? base + 1 : g_argv[i], NULL);
    }
}

/* Runs store_half_rte of `prog` on edge cases and random floats and
 * compares with the host conversion (itself checked by test_half). */
static void assert_store_half_works(mpcl_context *ctx, cl_program prog)
{
    enum { N = 20000 };
    static float in[N];
    static uint16_t out[N];
    static const float edge[] = {0.0f, -0.0f, 1.0f, 65504.0f, 65520.0f, 1.0f + 0x1p-11f,
                                 1.0f + 3 * 0x1p-11f, 0x1p-24f, 0x1p-25f, 3 * 0x1p-25f, 1e10f};
    size_t ne = sizeof edge / sizeof edge[0];
    memcpy(in, edge, sizeof edge);
    uint64_t seed = 99;
    for (size_t i = ne; i < N; i++) {
        uint32_t b = (uint32_t)tu_rand(&seed);
        b = (b & 0x807fffffu) | ((uint32_t)(127 - 28 + (int)(b % 46)) << 23);
        in[i] = tu_u2f(b);
    }
    cl_int rc;
    cl_kernel k = clCreateKernel(prog, "store_half_rte", &rc);
    ck_assert_msg(rc == CL_SUCCESS, "clCreateKernel: %s", mpcl_cl_error_name(rc));
    cl_mem din = clCreateBuffer(ctx->cl, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof in, in, &rc);
    ck_assert_int_eq(rc, CL_SUCCESS);
    cl_mem dout = clCreateBuffer(ctx->cl, CL_MEM_WRITE_ONLY, sizeof out, NULL, &rc);
    ck_assert_int_eq(rc, CL_SUCCESS);
    cl_uint n = N;
    ck_assert_int_eq(clSetKernelArg(k, 0, sizeof din, &din), CL_SUCCESS);
    ck_assert_int_eq(clSetKernelArg(k, 1, sizeof dout, &dout), CL_SUCCESS);
    ck_assert_int_eq(clSetKernelArg(k, 2, sizeof n, &n), CL_SUCCESS);
    size_t global = N;
    ck_assert_int_eq(clEnqueueNDRangeKernel(ctx->queue, k, 1, NULL, &global, NULL, 0, NULL, NULL), CL_SUCCESS);
    ck_assert_int_eq(clEnqueueReadBuffer(ctx->queue, dout, CL_TRUE, 0, sizeof out, out, 0, NULL, NULL), CL_SUCCESS);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < N; i++)
        if (out[i] != mpcl_half_from_float(in[i]) && bad++ == 0)
            first = i;
    ck_assert_msg(bad == 0, "%zu of %d wrong; first %a -> 0x%04x, expected 0x%04x", bad, N,
                  (double)in[first], out[first], mpcl_half_from_float(in[first]));
    clReleaseMemObject(din);
    clReleaseMemObject(dout);
    clReleaseKernel(k);
}

/* ------------------------------------------------------- sources */

START_TEST(test_embedded_match_sources)
{
    ck_assert_msg(g_argc > 1, "usage: test_program CL_FILE... (meson passes cl_sources)");
    size_t listed = 0;
    for (int i = 1; i < g_argc; i++) {
        const char *path = g_argv[i];
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        char name[256];
        snprintf(name, sizeof name, "%s", base);
        size_t nl = strlen(name);
        if (nl > 3 && strcmp(name + nl - 3, ".cl") == 0)
            name[nl - 3] = '\0';
        const char *text = embedded(name);
        ck_assert_msg(text != NULL, "%s is listed in cl_sources but not embedded as '%s'", path, name);
        char *disk = tu_read_file(path, NULL);
        ck_assert_msg(disk != NULL, "cannot read %s", path);
        ck_assert_msg(strcmp(disk, text) == 0, "the embedded copy of %s differs from the file", path);
        free(disk);
        listed++;
    }
    ck_assert_uint_eq(listed, mpcl_embedded_source_count);
    ck_assert_ptr_nonnull(embedded("precision.h"));
    ck_assert_ptr_nonnull(embedded("probe"));
}
END_TEST

/* ------------------------------------------------------- builds */

START_TEST(test_every_family_builds)
{
    char *dir = tu_mkdtemp("families");
    mpcl_context *ctx = open_ctx(dir);
    int fp16 = ctx->caps.fp16_arith_check.passed;
    size_t families = 0;
    for (size_t i = 0; i < mpcl_embedded_source_count; i++) {
        const char *fam = mpcl_embedded_sources[i].name;
        if (strcmp(fam, "precision.h") == 0)
            continue;
        families++;
        for (int v = 0; v < MPCL_VARIANT_COUNT; v++) {
            if (v == MPCL_VARIANT_FP16 && !fp16)
                continue;
            char path[MPCL_PATH_LEN + 128];
            ck_assert_int_eq(mpcl_program_cache_path(ctx, fam, (mpcl_variant)v, path, sizeof path), MPCL_OK);
            int existed = tu_exists(path); /* the context caches what its own checks build */
            mpcl_cache_stats before = ctx->cache;
            cl_program prog = NULL;
            mpcl_status s = mpcl_program_build(ctx, fam, (mpcl_variant)v, 0, &prog);
            ck_assert_msg(s == MPCL_OK, "%s (%s): %s", fam, mpcl_variant_name((mpcl_variant)v),
                          mpcl_last_error(ctx));
            ck_assert_ptr_nonnull(prog);
            size_t nk = 0;
            ck_assert_int_eq(clGetProgramInfo(prog, CL_PROGRAM_NUM_KERNELS, sizeof nk, &nk, NULL), CL_SUCCESS);
            ck_assert_msg(nk >= 1, "%s (%s) has no kernels", fam, mpcl_variant_name((mpcl_variant)v));
            clReleaseProgram(prog);
            /* use_cache 0: a source build that neither reads nor writes the cache */
            ck_assert_uint_eq(ctx->cache.misses, before.misses + 1);
            ck_assert_uint_eq(ctx->cache.hits, before.hits);
            ck_assert_uint_eq(ctx->cache.written, before.written);
            ck_assert_msg(tu_exists(path) == existed, "use_cache 0 wrote %s", path);
        }
    }
    ck_assert_uint_ge(families, 2);
    if (known_pocl(&ctx->caps)) { /* half arithmetic does not compile here: a build error with its log */
        cl_program prog = NULL;
        mpcl_status s = mpcl_program_build(ctx, "probe", MPCL_VARIANT_FP16, 0, &prog);
        ck_assert_int_eq(s, MPCL_ERR_BUILD);
        ck_assert_ptr_null(prog);
        HAS(mpcl_last_error(ctx), "build log");
        HAS(mpcl_last_error(ctx), "fp16");
    }
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_program_table_and_kernels)
{
    char *dir = tu_mkdtemp("table");
    mpcl_context *ctx = open_ctx(dir);
    cl_program a = NULL, b = NULL;
    ck_assert_int_eq(mpcl_program_get(ctx, "probe", MPCL_VARIANT_FP16_STORAGE, &a), MPCL_OK);
    ck_assert_int_eq(mpcl_program_get(ctx, "probe", MPCL_VARIANT_FP16_STORAGE, &b), MPCL_OK);
    ck_assert_ptr_eq(a, b); /* built once per context and variant */
    cl_program c = NULL;
    ck_assert_int_eq(mpcl_program_get(ctx, "probe", MPCL_VARIANT_FP32, &c), MPCL_OK);
    ck_assert_ptr_ne(a, c);
    assert_store_half_works(ctx, a);

    cl_kernel k = NULL;
    mpcl_status s = mpcl_kernel_create(ctx, "probe", MPCL_VARIANT_FP32, "no_such_kernel", &k);
    ck_assert_int_eq(s, MPCL_ERR_OPENCL);
    HAS(mpcl_last_error(ctx), "no_such_kernel");
    HAS(mpcl_last_error(ctx), "probe");
    HAS(mpcl_last_error(ctx), "CL_INVALID_KERNEL_NAME");

    s = mpcl_program_build(ctx, "no_such_family", MPCL_VARIANT_FP32, 0, &a);
    ck_assert_int_ne(s, MPCL_OK);
    HAS(mpcl_last_error(ctx), "no_such_family");
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------- cache */

static int has_magic(const char *path)
{
    size_t len = 0;
    char *buf = tu_read_file(path, &len);
    int ok = buf && len > 64 && memcmp(buf, "MPCLBIN\x1a", 8) == 0;
    free(buf);
    return ok;
}

START_TEST(test_cache_miss_then_hit)
{
    char *dir = tu_mkdtemp("cache-hit");
    mpcl_context *ctx = open_ctx(dir);
    /* a fresh directory: the context's own probe programs are misses, written */
    ck_assert_uint_eq(ctx->cache.hits, 0);
    ck_assert_uint_eq(ctx->cache.corrupt, 0);
    ck_assert_uint_ge(ctx->cache.misses, 1);
    ck_assert_uint_ge(ctx->cache.written, 1);
    ck_assert_str_eq(ctx->cache_dir, dir);

    char path[MPCL_PATH_LEN + 128];
    ck_assert_int_eq(mpcl_program_cache_path(ctx, "bench", MPCL_VARIANT_FP32, path, sizeof path), MPCL_OK);
    ck_assert_msg(strncmp(path, dir, strlen(dir)) == 0, "entry %s is outside the cache dir %s", path, dir);
    ck_assert(!tu_exists(path));
    mpcl_cache_stats before = ctx->cache;
    cl_program prog = NULL;
    ck_assert_int_eq(mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP32, 1, &prog), MPCL_OK);
    clReleaseProgram(prog);
    ck_assert_uint_eq(ctx->cache.misses, before.misses + 1);
    ck_assert_uint_eq(ctx->cache.written, before.written + 1);
    ck_assert_uint_eq(ctx->cache.hits, before.hits);
    ck_assert_msg(has_magic(path), "no valid entry at %s", path);
    /* the variant is part of the key */
    char other[MPCL_PATH_LEN + 128];
    ck_assert_int_eq(mpcl_program_cache_path(ctx, "bench", MPCL_VARIANT_FP16_STORAGE, other, sizeof other), MPCL_OK);
    ck_assert_str_ne(path, other);
    mpcl_context_destroy(ctx);

    /* a new context, same directory: everything it builds comes from the cache */
    ctx = open_ctx(dir);
    ck_assert_uint_ge(ctx->cache.hits, 1);
    ck_assert_uint_eq(ctx->cache.misses, 0);
    ck_assert_uint_eq(ctx->cache.corrupt, 0);
    before = ctx->cache;
    prog = NULL;
    ck_assert_int_eq(mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP32, 1, &prog), MPCL_OK);
    ck_assert_uint_eq(ctx->cache.hits, before.hits + 1);
    ck_assert_uint_eq(ctx->cache.misses, before.misses);
    ck_assert_uint_eq(ctx->cache.written, before.written);
    cl_int rc;
    cl_kernel k = clCreateKernel(prog, "copy_f4", &rc);
    ck_assert_msg(rc == CL_SUCCESS, "a cached program lacks its kernel: %s", mpcl_cl_error_name(rc));
    clReleaseKernel(k);
    clReleaseProgram(prog);
    /* the storage kernels this context loaded from the cache work */
    cl_program probe = NULL;
    ck_assert_int_eq(mpcl_program_get(ctx, "probe", MPCL_VARIANT_FP32, &probe), MPCL_OK);
    assert_store_half_works(ctx, probe);
    ck_assert(ctx->caps.fp16_storage.passed || !known_pocl(&ctx->caps));
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

typedef enum {
    DAMAGE_TRUNCATE,        /* the second half cut off */
    DAMAGE_TRUNCATE_HEADER, /* cut inside the header */
    DAMAGE_EMPTY,           /* zero bytes */
    DAMAGE_EXTRA,           /* bytes appended after the binary */
    DAMAGE_FLIP_MIDDLE,     /* 16 bytes of the binary flipped */
    DAMAGE_MAGIC,           /* the magic's first byte */
    DAMAGE_GARBAGE_BINARY,  /* random bytes in place of the binary, header kept */
    DAMAGE_OLD_FORMAT,      /* format 1 ("MPCLBIN1" | key | size | FNV of the binary) around garbage */
    DAMAGE_HUGE_LENGTH,     /* a consistent header whose binary length is 2^62 */
    DAMAGE_FOREIGN,         /* random bytes of the entry's length: not an mpcl file */
    DAMAGE_WRONG_KEY        /* a good entry of another program (fp16-storage probe) */
} damage;

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void damage_entry(mpcl_context *ctx, const char *path, damage how)
{
    size_t len = 0;
    unsigned char *buf = (unsigned char *)tu_read_file(path, &len);
    ck_assert_msg(buf && len > 128, "no cache entry to damage at %s", path);
    uint64_t seed = 1;
    switch (how) {
    case DAMAGE_TRUNCATE:
        len /= 2;
        break;
    case DAMAGE_TRUNCATE_HEADER:
        len = 40;
        break;
    case DAMAGE_EMPTY:
        len = 0;
        break;
    case DAMAGE_EXTRA: {
        unsigned char *more = realloc(buf, len + 100);
        ck_assert_ptr_nonnull(more);
        buf = more;
        memset(buf + len, 0x5a, 100);
        len += 100;
        break;
    }
    case DAMAGE_FLIP_MIDDLE:
        for (size_t i = len / 2; i < len / 2 + 16 && i < len; i++)
            buf[i] ^= 0xa5;
        break;
    case DAMAGE_MAGIC:
        buf[0] ^= 0xff;
        break;
    case DAMAGE_GARBAGE_BINARY:
        for (size_t i = 64; i < len; i++)
            buf[i] = (unsigned char)tu_rand(&seed);
        break;
    case DAMAGE_OLD_FORMAT: {
        uint64_t key = get64(buf + 16);
        memcpy(buf, "MPCLBIN1", 8);
        put64(buf + 8, key);
        put64(buf + 16, len - 32);
        for (size_t i = 32; i < len; i++)
            buf[i] = (unsigned char)tu_rand(&seed);
        put64(buf + 24, mpcl_hash64(buf + 32, len - 32, MPCL_HASH_SEED));
        break;
    }
    case DAMAGE_HUGE_LENGTH:
        put64(buf + 32, (uint64_t)1 << 62);
        put64(buf + 56, mpcl_hash64(buf, 56, MPCL_HASH_SEED)); /* a consistent header */
        break;
    case DAMAGE_FOREIGN:
        for (size_t i = 0; i < len; i++)
            buf[i] = (unsigned char)tu_rand(&seed);
        break;
    case DAMAGE_WRONG_KEY: {
        char other[MPCL_PATH_LEN + 128];
        cl_program p = NULL; /* makes sure the other entry exists */
        ck_assert_int_eq(mpcl_program_build(ctx, "probe", MPCL_VARIANT_FP16_STORAGE, 1, &p), MPCL_OK);
        clReleaseProgram(p);
        ck_assert_int_eq(mpcl_program_cache_path(ctx, "probe", MPCL_VARIANT_FP16_STORAGE, other,
                                                 sizeof other), MPCL_OK);
        free(buf);
        buf = (unsigned char *)tu_read_file(other, &len);
        ck_assert_msg(buf && len > 128, "no entry for probe (fp16-storage) at %s", other);
        break;
    }
    }
    ck_assert_int_eq(tu_write_file(path, buf, len), 0);
    free(buf);
}

/* Damages the cache entry of probe (fp32), builds it again, and checks that
 * the entry was refused before any binary reached the driver (cache.binaries
 * unchanged), that the program was rebuilt from source and works, and that
 * a good entry replaced the damaged one. */
static void corrupt_then_rebuild(damage how, const char *tag, const char *reason)
{
    char *dir = tu_mkdtemp(tag);
    mpcl_context *ctx = open_ctx(dir);
    char path[MPCL_PATH_LEN + 128];
    ck_assert_int_eq(mpcl_program_cache_path(ctx, "probe", MPCL_VARIANT_FP32, path, sizeof path), MPCL_OK);
    ck_assert_msg(has_magic(path), "the context did not cache probe (fp32) at %s", path);
    size_t good_len = 0;
    free(tu_read_file(path, &good_len));
    damage_entry(ctx, path, how);

    mpcl_cache_stats before = ctx->cache;
    cl_program prog = NULL;
    mpcl_status s = mpcl_program_build(ctx, "probe", MPCL_VARIANT_FP32, 1, &prog);
    ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
    ck_assert_uint_eq(ctx->cache.binaries, before.binaries); /* the driver never saw it */
    ck_assert_uint_eq(ctx->cache.rejected, before.rejected + 1);
    HAS(ctx->cache_rejected_why, path);
    HAS(ctx->cache_rejected_why, reason);
    ck_assert_uint_eq(ctx->cache.corrupt, before.corrupt + 1);
    ck_assert_uint_eq(ctx->cache.hits, before.hits);
    ck_assert_uint_eq(ctx->cache.misses, before.misses + 1);
    ck_assert_uint_eq(ctx->cache.written, before.written + 1);
    assert_store_half_works(ctx, prog); /* the rebuilt program, not the damaged one */
    clReleaseProgram(prog);
    /* the entry was replaced by a good one */
    size_t now_len = 0;
    free(tu_read_file(path, &now_len));
    ck_assert_uint_eq(now_len, good_len);
    ck_assert(has_magic(path));
    mpcl_context_destroy(ctx);

    ctx = open_ctx(dir);
    ck_assert_uint_eq(ctx->cache.corrupt, 0);
    ck_assert_uint_eq(ctx->cache.rejected, 0);
    ck_assert_uint_ge(ctx->cache.hits, 1);
    ck_assert_uint_eq(ctx->cache.binaries, ctx->cache.hits); /* every binary loaded was a hit */
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}

#define DAMAGE_TEST(name, how, tag, reason)                                                      \
    START_TEST(name) { corrupt_then_rebuild(how, tag, reason); }                                 \
    END_TEST

DAMAGE_TEST(test_cache_truncated, DAMAGE_TRUNCATE, "cache-trunc", "binary length does not match the file")
DAMAGE_TEST(test_cache_truncated_header, DAMAGE_TRUNCATE_HEADER, "cache-trunc-hdr", "shorter than a header")
DAMAGE_TEST(test_cache_empty, DAMAGE_EMPTY, "cache-empty", "shorter than a header")
DAMAGE_TEST(test_cache_extra_bytes, DAMAGE_EXTRA, "cache-extra", "binary length does not match the file")
DAMAGE_TEST(test_cache_flipped, DAMAGE_FLIP_MIDDLE, "cache-flip", "binary checksum")
DAMAGE_TEST(test_cache_bad_magic, DAMAGE_MAGIC, "cache-magic", "magic")
DAMAGE_TEST(test_cache_garbage_binary, DAMAGE_GARBAGE_BINARY, "cache-garbage", "binary checksum")
DAMAGE_TEST(test_cache_old_format, DAMAGE_OLD_FORMAT, "cache-v1", "another format version")
DAMAGE_TEST(test_cache_huge_length, DAMAGE_HUGE_LENGTH, "cache-huge", "binary length does not match the file")
DAMAGE_TEST(test_cache_foreign_file, DAMAGE_FOREIGN, "cache-foreign", "magic")
DAMAGE_TEST(test_cache_wrong_key, DAMAGE_WRONG_KEY, "cache-key", "written for another key")

/* A damaged entry met at context creation is rebuilt too, and the
 * context's checks still pass. */
START_TEST(test_cache_corrupt_at_creation)
{
    char *dir = tu_mkdtemp("cache-create");
    mpcl_context *ctx = open_ctx(dir);
    char path[MPCL_PATH_LEN + 128];
    ck_assert_int_eq(mpcl_program_cache_path(ctx, "probe", MPCL_VARIANT_FP32, path, sizeof path), MPCL_OK);
    int storage = ctx->caps.fp16_storage.passed;
    mpcl_context_destroy(ctx);
    damage_entry(NULL, path, DAMAGE_FLIP_MIDDLE);
    ctx = open_ctx(dir);
    ck_assert_uint_eq(ctx->cache.corrupt, 1);
    ck_assert_uint_eq(ctx->cache.rejected, 1);
    ck_assert_uint_eq(ctx->cache.binaries, ctx->cache.hits);
    ck_assert_uint_ge(ctx->cache.misses, 1);
    ck_assert_int_eq(ctx->caps.fp16_storage.passed, storage);
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_no_cache_option)
{
    char *dir = tu_mkdtemp("nocache-opt");
    char *sub = path_join(dir, "mpcl");
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    opt.cache_dir = sub;
    opt.no_cache = 1;
    mpcl_context *ctx = open_ctx_opt(&opt);
    cl_program prog = NULL;
    ck_assert_int_eq(mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP32, 1, &prog), MPCL_OK);
    clReleaseProgram(prog);
    ck_assert_uint_eq(ctx->cache.written, 0);
    ck_assert_uint_eq(ctx->cache.hits, 0);
    ck_assert_int_le(tu_dir_entries(sub), 0);
    mpcl_context_destroy(ctx);

    /* with entries present, no_cache does not read them either */
    opt.no_cache = 0;
    ctx = open_ctx_opt(&opt);
    ck_assert_uint_ge(ctx->cache.written, 1);
    mpcl_context_destroy(ctx);
    opt.no_cache = 1;
    ctx = open_ctx_opt(&opt);
    ck_assert_uint_eq(ctx->cache.hits, 0);
    ck_assert_uint_ge(ctx->cache.misses, 1);
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(sub);
    free(dir);
}
END_TEST

START_TEST(test_no_cache_env)
{
    char *dir = tu_mkdtemp("nocache-env");
    char *sub = path_join(dir, "mpcl");
    setenv("MPCL_NO_CACHE", "1", 1);
    mpcl_context *ctx = open_ctx(sub);
    cl_program prog = NULL;
    ck_assert_int_eq(mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP32, 1, &prog), MPCL_OK);
    clReleaseProgram(prog);
    ck_assert_uint_eq(ctx->cache.written, 0);
    ck_assert_uint_eq(ctx->cache.hits, 0);
    ck_assert_int_le(tu_dir_entries(sub), 0);
    mpcl_context_destroy(ctx);
    /* "0" means the cache is on */
    setenv("MPCL_NO_CACHE", "0", 1);
    ctx = open_ctx(sub);
    ck_assert_uint_ge(ctx->cache.written, 1);
    ck_assert_int_ge(tu_dir_entries(sub), 1);
    mpcl_context_destroy(ctx);
    unsetenv("MPCL_NO_CACHE");
    tu_rmtree(dir);
    free(sub);
    free(dir);
}
END_TEST

START_TEST(test_default_cache_dir)
{
    char *dir = tu_mkdtemp("xdg");
    /* PoCL keeps its own kernel cache under XDG_CACHE_HOME too: keep it where
     * it was, or every PoCL build in this test is cold (a minute) */
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && *xdg && !getenv("POCL_CACHE_DIR")) {
        char *pocl = path_join(xdg, "pocl");
        setenv("POCL_CACHE_DIR", pocl, 1);
        free(pocl);
    }
    setenv("XDG_CACHE_HOME", dir, 1);
    mpcl_context *ctx = open_ctx(NULL);
    char *want = path_join(dir, "mpcl");
    ck_assert_str_eq(ctx->cache_dir, want);
    ck_assert_int_ge(tu_dir_entries(want), 1);
    mpcl_context_destroy(ctx);
    /* a relative XDG_CACHE_HOME is ignored (XDG spec): $HOME/.cache/mpcl */
    setenv("XDG_CACHE_HOME", "relative/dir", 1);
    setenv("HOME", dir, 1);
    ctx = open_ctx(NULL);
    char *home_cache = path_join(dir, ".cache/mpcl");
    ck_assert_str_eq(ctx->cache_dir, home_cache);
    mpcl_context_destroy(ctx);
    free(home_cache);
    free(want);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------------------- kernel dir */

START_TEST(test_kernel_dir_option)
{
    char *cache = tu_mkdtemp("kdir-opt");
    const char *cl = tu_env("MPCL_TEST_CL_DIR");
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    opt.cache_dir = cache;
    opt.kernel_dir = cl;
    mpcl_context *ctx = open_ctx_opt(&opt);
    ck_assert_str_eq(ctx->kernel_dir, cl);
    if (known_pocl(&ctx->caps))
        ck_assert_msg(ctx->caps.fp16_storage.passed, "%s", ctx->caps.fp16_storage.reason);
    cl_program prog = NULL;
    ck_assert_int_eq(mpcl_program_build(ctx, "probe", MPCL_VARIANT_FP32, 0, &prog), MPCL_OK);
    assert_store_half_works(ctx, prog);
    clReleaseProgram(prog);
    /* the same text from disk and embedded gives the same cache key */
    char from_disk[MPCL_PATH_LEN + 128], from_lib[MPCL_PATH_LEN + 128];
    ck_assert_int_eq(mpcl_program_cache_path(ctx, "probe", MPCL_VARIANT_FP32, from_disk, sizeof from_disk), MPCL_OK);
    mpcl_context_destroy(ctx);
    ctx = open_ctx(cache);
    ck_assert_str_eq(ctx->kernel_dir, "");
    ck_assert_int_eq(mpcl_program_cache_path(ctx, "probe", MPCL_VARIANT_FP32, from_lib, sizeof from_lib), MPCL_OK);
    ck_assert_str_eq(from_disk, from_lib);
    mpcl_context_destroy(ctx);
    tu_rmtree(cache);
    free(cache);
}
END_TEST

START_TEST(test_kernel_dir_env)
{
    char *cache = tu_mkdtemp("kdir-env");
    char *empty = tu_mkdtemp("kdir-empty");
    const char *cl = tu_env("MPCL_TEST_CL_DIR");
    setenv("MPCL_KERNEL_DIR", cl, 1);
    mpcl_context *ctx = open_ctx(cache);
    ck_assert_str_eq(ctx->kernel_dir, cl);
    cl_program prog = NULL;
    ck_assert_int_eq(mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP16_STORAGE, 0, &prog), MPCL_OK);
    clReleaseProgram(prog);
    mpcl_context_destroy(ctx);
    /* the option wins over the variable */
    setenv("MPCL_KERNEL_DIR", empty, 1);
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    opt.cache_dir = cache;
    opt.kernel_dir = cl;
    ctx = open_ctx_opt(&opt);
    ck_assert_str_eq(ctx->kernel_dir, cl);
    ck_assert_int_eq(mpcl_program_build(ctx, "probe", MPCL_VARIANT_FP32, 0, &prog), MPCL_OK);
    clReleaseProgram(prog);
    mpcl_context_destroy(ctx);
    unsetenv("MPCL_KERNEL_DIR");
    tu_rmtree(cache);
    tu_rmtree(empty);
    free(cache);
    free(empty);
}
END_TEST

START_TEST(test_kernel_dir_changed_source)
{
    char *cache = tu_mkdtemp("kdir-mod");
    char *kd = tu_mkdtemp("kdir-mod-src");
    copy_all_cl(kd);
    copy_cl(kd, "probe.cl", "\n/* changed: a different source is a different cache key */\n");
    mpcl_context *ctx = open_ctx(cache);
    char lib[MPCL_PATH_LEN + 128], mod[MPCL_PATH_LEN + 128];
    ck_assert_int_eq(mpcl_program_cache_path(ctx, "probe", MPCL_VARIANT_FP32, lib, sizeof lib), MPCL_OK);
    mpcl_context_destroy(ctx);
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    opt.cache_dir = cache;
    opt.kernel_dir = kd;
    ctx = open_ctx_opt(&opt);
    ck_assert_int_eq(mpcl_program_cache_path(ctx, "probe", MPCL_VARIANT_FP32, mod, sizeof mod), MPCL_OK);
    ck_assert_str_ne(lib, mod);
    /* nothing stale was loaded: the changed probe program was built (a
     * miss); the only hits are check (d)'s unchanged bf16 programs */
    ck_assert_uint_ge(ctx->cache.misses, 1);
    ck_assert_uint_le(ctx->cache.hits, ctx->caps.ext_bf16_intel ? 2 : 1);
    ck_assert(has_magic(mod));
    mpcl_context_destroy(ctx);
    tu_rmtree(cache);
    tu_rmtree(kd);
    free(cache);
    free(kd);
}
END_TEST

/* Opens a context on kernel dir kd; creation may refuse (the library's
 * probe kernels come from kd too), but then with the same error. */
static mpcl_context *open_on_kernel_dir(const char *kd, const char *cache, mpcl_status want,
                                        const char *must_name)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    opt.cache_dir = cache;
    opt.kernel_dir = kd;
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    if (s != MPCL_OK) {
        ck_assert_msg(s == want, "context creation: %s: %s", mpcl_status_name(s), mpcl_last_error(ctx));
        HAS(mpcl_last_error(ctx), must_name);
        mpcl_context_destroy(ctx);
        return NULL;
    }
    return ctx;
}

START_TEST(test_kernel_dir_missing_files)
{
    char *cache = tu_mkdtemp("kdir-missing-cache");
    char *kd = tu_mkdtemp("kdir-missing");
    char *hdr = path_join(kd, "precision.h"), *body = path_join(kd, "probe.cl");
    mpcl_context *ctx = open_on_kernel_dir(kd, cache, MPCL_ERR_IO, hdr);
    if (ctx) {
        cl_program prog = (cl_program)1;
        mpcl_status s = mpcl_program_build(ctx, "probe", MPCL_VARIANT_FP32, 0, &prog);
        ck_assert_int_eq(s, MPCL_ERR_IO);
        ck_assert_ptr_null(prog);
        HAS(mpcl_last_error(ctx), hdr);
        cl_kernel k = NULL;
        ck_assert_int_eq(mpcl_kernel_create(ctx, "probe", MPCL_VARIANT_FP32, "store_half_rte", &k), MPCL_ERR_IO);
        mpcl_context_destroy(ctx);
    }
    /* the header alone: now the family's source is what is missing */
    copy_cl(kd, "precision.h", NULL);
    ctx = open_on_kernel_dir(kd, cache, MPCL_ERR_IO, body);
    if (ctx) {
        cl_program prog = NULL;
        ck_assert_int_eq(mpcl_program_build(ctx, "probe", MPCL_VARIANT_FP32, 0, &prog), MPCL_ERR_IO);
        HAS(mpcl_last_error(ctx), body);
        mpcl_context_destroy(ctx);
    }
    free(hdr);
    free(body);
    tu_rmtree(cache);
    tu_rmtree(kd);
    free(cache);
    free(kd);
}
END_TEST

START_TEST(test_broken_kernel_build_log)
{
    char *cache = tu_mkdtemp("broken-cache");
    char *kd = tu_mkdtemp("broken");
    copy_all_cl(kd);
    char *body = path_join(kd, "probe.cl");
    const char *bad = "kernel void store_half_rte(global float *x)\n"
                      "{\n"
                      "    x[0] = mpcl_broken_identifier;\n"
                      "}\n";
    ck_assert_int_eq(tu_write_file(body, bad, strlen(bad)), 0);
    mpcl_context *ctx = open_on_kernel_dir(kd, cache, MPCL_ERR_BUILD, "build log");
    if (ctx) {
        mpcl_cache_stats before = ctx->cache;
        cl_program prog = (cl_program)1;
        mpcl_status s = mpcl_program_build(ctx, "probe", MPCL_VARIANT_FP32, 1, &prog);
        ck_assert_int_eq(s, MPCL_ERR_BUILD);
        ck_assert_ptr_null(prog);
        const char *msg = mpcl_last_error(ctx);
        HAS(msg, "build log");
        HAS(msg, "probe");
        HAS(msg, "fp32");
        if (known_pocl(&ctx->caps)) /* the compiler's own diagnostic is in it */
            HAS(msg, "mpcl_broken_identifier");
        ck_assert_uint_eq(ctx->cache.written, before.written); /* a failure is not cached */
        char path[MPCL_PATH_LEN + 128];
        ck_assert_int_eq(mpcl_program_cache_path(ctx, "probe", MPCL_VARIANT_FP32, path, sizeof path), MPCL_OK);
        ck_assert(!tu_exists(path));
        mpcl_context_destroy(ctx);
    }
    free(body);
    tu_rmtree(cache);
    tu_rmtree(kd);
    free(cache);
    free(kd);
}
END_TEST

/* ------------------------------------------------------- launches */

/* Launch shapes are checked before the driver sees them. */
START_TEST(test_launch_shape_checks)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    opt.no_cache = 1;
    opt.max_work_group_size = 4;
    mpcl_context *ctx = open_ctx_opt(&opt);
    ck_assert_uint_eq(ctx->wg_cap, 4);
    cl_kernel k;
    ck_assert_int_eq(mpcl_kernel_get(ctx, "elementwise", MPCL_VARIANT_FP32, "relu_forward", &k), MPCL_OK);
    ck_assert_uint_le(mpcl_wg_limit(ctx, k), 4);
    size_t g2[2] = {SIZE_MAX / 2, 4}, g1 = 16, l1 = 8, l3 = 3, g10 = 10, zero = 0;
    ck_assert_int_eq(mpcl_launch(ctx, k, "test", 0, &g1, NULL), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_launch(ctx, k, "test", 4, &g1, NULL), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_launch(ctx, k, "test", 2, g2, NULL), MPCL_ERR_ARGUMENT);
    HAS(mpcl_last_error(ctx), "overflows size_t");
    ck_assert_int_eq(mpcl_launch(ctx, k, "test", 1, &g10, &l3), MPCL_ERR_STATE);
    HAS(mpcl_last_error(ctx), "relu_forward");
    HAS(mpcl_last_error(ctx), "does not fit");
    ck_assert_int_eq(mpcl_launch(ctx, k, "test", 1, &g1, &l1), MPCL_ERR_STATE);
    HAS(mpcl_last_error(ctx), "a work-group of 8 items, 4 allowed");
    ck_assert_int_eq(mpcl_launch(ctx, k, "test", 1, &zero, &l1), MPCL_OK); /* nothing to do */
    ck_assert_int_eq(mpcl_launch_1d(ctx, k, "test", SIZE_MAX - 1), MPCL_ERR_ARGUMENT);
    ck_assert_uint_eq(ctx->wg_seen, 0); /* none of these reached the queue */
    if (sizeof(size_t) > 4) {
        ck_assert_int_eq(mpcl_check_u32(ctx, "op", "x", (size_t)UINT32_MAX + 1), MPCL_ERR_ARGUMENT);
        HAS(mpcl_last_error(ctx), "op: x has 4294967296 elements");
    }
    ck_assert_int_eq(mpcl_check_u32(ctx, "op", "x", UINT32_MAX), MPCL_OK);
    mpcl_context_destroy(ctx);
}
END_TEST

/* mpcl_options.max_work_group_size, else MPCL_MAX_WORK_GROUP; a bad value
 * is refused with a message that names the variable. */
START_TEST(test_work_group_cap_sources)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    opt.no_cache = 1;
    setenv("MPCL_MAX_WORK_GROUP", "5", 1);
    mpcl_context *ctx = open_ctx_opt(&opt);
    ck_assert_uint_eq(ctx->wg_cap, 5);
    ck_assert_uint_le(mpcl_wg_device_limit(ctx), 5);
    mpcl_context_destroy(ctx);
    opt.max_work_group_size = 7; /* the option wins */
    ctx = open_ctx_opt(&opt);
    ck_assert_uint_eq(ctx->wg_cap, 7);
    mpcl_context_destroy(ctx);
    opt.max_work_group_size = 0;
    setenv("MPCL_MAX_WORK_GROUP", "0", 1); /* no cap */
    ctx = open_ctx_opt(&opt);
    ck_assert_uint_eq(ctx->wg_cap, 0);
    ck_assert_uint_eq(mpcl_wg_device_limit(ctx), ctx->caps.max_work_group_size);
    mpcl_context_destroy(ctx);
    const char *bad[] = {"abc", "-3", "12x", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("MPCL_MAX_WORK_GROUP", bad[i], 1);
        ctx = NULL;
        ck_assert_int_eq(mpcl_context_create(&opt, &ctx), MPCL_ERR_ARGUMENT);
        HAS(mpcl_last_error(ctx), "MPCL_MAX_WORK_GROUP");
        HAS(mpcl_last_error(ctx), bad[i]);
        mpcl_context_destroy(ctx);
    }
    unsetenv("MPCL_MAX_WORK_GROUP");
}
END_TEST

/* The 1-D work-group size is measured once per device, kept in the cache
 * directory, read back, and measured again when the file is damaged. */
START_TEST(test_wg_1d_measured_and_cached)
{
    char *dir = tu_mkdtemp("launch-tune");
    mpcl_context *ctx = open_ctx(dir);
    size_t wg = mpcl_wg_1d(ctx);
    ck_assert_str_eq(ctx->wg_1d_source, "measured");
    ck_assert_uint_ge(wg, 1);
    ck_assert_uint_le(wg, ctx->caps.max_work_group_size);
    char path[MPCL_PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/launch-%016llx.txt", dir,
             (unsigned long long)mpcl_device_hash(ctx));
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    ck_assert_msg(text != NULL, "no launch file at %s", path);
    char want[64];
    snprintf(want, sizeof want, "mpcl-launch 1 wg_1d %zu\n", wg);
    ck_assert_str_eq(text, want);
    free(text);
    printf("1-D work-group size measured on '%s': %zu\n", ctx->desc.name, wg);
    mpcl_context_destroy(ctx);

    ctx = open_ctx(dir); /* read back, not measured */
    ck_assert_uint_eq(mpcl_wg_1d(ctx), wg);
    ck_assert_str_eq(ctx->wg_1d_source, "cached");
    mpcl_context_destroy(ctx);

    const char *bad[] = {"garbage\n", "mpcl-launch 1 wg_1d 0\n", "mpcl-launch 2 wg_1d 64\n",
                         "mpcl-launch 1 wg_1d 999999999999\n", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(tu_write_file(path, bad[i], strlen(bad[i])), 0);
        ctx = open_ctx(dir);
        size_t again = mpcl_wg_1d(ctx);
        ck_assert_msg(strcmp(ctx->wg_1d_source, "measured") == 0, "'%s' was %s", bad[i],
                      ctx->wg_1d_source);
        ck_assert_uint_le(again, ctx->caps.max_work_group_size);
        mpcl_context_destroy(ctx);
        text = tu_read_file(path, &len);
        ck_assert_ptr_nonnull(text);
        ck_assert_msg(strncmp(text, "mpcl-launch 1 wg_1d ", 20) == 0, "rewritten as '%s'", text);
        free(text);
    }

    mpcl_options opt; /* without a cache: the starting point, nothing measured */
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    opt.no_cache = 1;
    ctx = open_ctx_opt(&opt);
    ck_assert_uint_le(mpcl_wg_1d(ctx), 64);
    ck_assert_str_eq(ctx->wg_1d_source, "default");
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ------------------------------------------ storing binaries: the verdicts */

static void verdict_path(mpcl_context *ctx, const char *dir, char *dst, size_t len)
{
    snprintf(dst, len, "%s/binaries-%016llx.txt", dir, (unsigned long long)mpcl_device_hash(ctx));
}

/* The verdict file of ctx's device in dir, and the cache entry of the fp32
 * "bench" program (buffers of MPCL_PATH_LEN + 64 and + 128). */
static void store_paths(mpcl_context *ctx, const char *dir, char *path, char *entry)
{
    verdict_path(ctx, dir, path, MPCL_PATH_LEN + 64);
    ck_assert_int_eq(mpcl_program_cache_path(ctx, "bench", MPCL_VARIANT_FP32, entry, MPCL_PATH_LEN + 128),
                     MPCL_OK);
}

/* Measured: the verdict file holds one line per family built, each store
 * flag following its own figures (store when the fetch took at most one
 * source build), and the context reports the same. */
START_TEST(test_store_verdict_measured)
{
    unsetenv("MPCL_STORE_BINARIES");
    char *dir = tu_mkdtemp("store-measured");
    mpcl_context *ctx = open_ctx(dir);
    ck_assert_int_eq(mpcl_store_binaries(ctx, "bench", NULL, NULL), -1); /* not built yet */
    cl_program prog = NULL;
    mpcl_cache_stats before = ctx->cache;
    ck_assert_int_eq(mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP32, 1, &prog), MPCL_OK);
    clReleaseProgram(prog);
    ck_assert_uint_eq(ctx->cache.written, before.written + 1); /* measuring stores the binary */
    double b = -1, f = -1;
    int v = mpcl_store_binaries(ctx, "bench", &b, &f);
    ck_assert_msg(v == (f <= b), "bench: store %d with build %.3f ms, fetch %.3f ms", v, b, f);
    ck_assert(b > 0);

    char path[MPCL_PATH_LEN + 64], fam[32], line[200];
    verdict_path(ctx, dir, path, sizeof path);
    FILE *fp = fopen(path, "r");
    ck_assert_msg(fp != NULL, "no verdict file at %s", path);
    ck_assert(fgets(line, sizeof line, fp) != NULL);
    ck_assert_str_eq(line, "mpcl-binaries 2\n");
    int lines = 0, saw_bench = 0;
    while (fgets(line, sizeof line, fp)) {
        int store;
        double lb, lf;
        ck_assert_msg(sscanf(line, "%31s store %d build_ms %lf fetch_ms %lf", fam, &store, &lb, &lf) == 4,
                      "bad verdict line '%s'", line);
        ck_assert_msg(store == (lf <= lb), "%s: store %d with build %.3f ms, fetch %.3f ms", fam, store, lb, lf);
        ck_assert_int_eq(mpcl_store_binaries(ctx, fam, NULL, NULL), store);
        saw_bench += strcmp(fam, "bench") == 0;
        lines++;
    }
    fclose(fp);
    ck_assert_int_ge(lines, 2); /* the context's probe programs, then bench */
    ck_assert_int_eq(saw_bench, 1);
    printf("binaries on '%s': bench build %.1f ms, fetch %.1f ms: %s\n", ctx->desc.name, b, f,
           v ? "stored" : "not stored");
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* A verdict on file is followed: store 0 declines (no entry, counted), store
 * 1 stores; a line that does not read back is measured again. */
START_TEST(test_store_verdict_followed)
{
    unsetenv("MPCL_STORE_BINARIES");
    char *dir = tu_mkdtemp("store-followed");
    mpcl_context *ctx = open_ctx(dir);
    char path[MPCL_PATH_LEN + 64], entry[MPCL_PATH_LEN + 128];
    store_paths(ctx, dir, path, entry);
    mpcl_context_destroy(ctx);

    static const char no[] = "mpcl-binaries 2\nbench store 0 build_ms 1.0 fetch_ms 5.0\n";
    ck_assert_int_eq(tu_write_file(path, no, strlen(no)), 0);
    ctx = open_ctx(dir);
    ck_assert_int_eq(mpcl_store_binaries(ctx, "bench", NULL, NULL), 0);
    mpcl_cache_stats before = ctx->cache;
    cl_program prog = NULL;
    ck_assert_int_eq(mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP32, 1, &prog), MPCL_OK);
    clReleaseProgram(prog);
    ck_assert_uint_eq(ctx->cache.declined, before.declined + 1);
    ck_assert_uint_eq(ctx->cache.written, before.written);
    ck_assert_msg(!tu_exists(entry), "%s written although bench's verdict is store 0", entry);
    mpcl_context_destroy(ctx);

    static const char yes[] = "mpcl-binaries 2\nbench store 1 build_ms 5.0 fetch_ms 1.0\n";
    ck_assert_int_eq(tu_write_file(path, yes, strlen(yes)), 0);
    ctx = open_ctx(dir);
    before = ctx->cache;
    ck_assert_int_eq(mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP32, 1, &prog), MPCL_OK);
    clReleaseProgram(prog);
    ck_assert_uint_eq(ctx->cache.written, before.written + 1);
    ck_assert_uint_eq(ctx->cache.declined, before.declined);
    ck_assert_msg(has_magic(entry), "no valid entry at %s", entry);
    mpcl_context_destroy(ctx);
    ck_assert_int_eq(remove(entry), 0);

    /* a damaged line (store 7), a foreign first line: measured again */
    static const char *bad[] = {"mpcl-binaries 2\nbench store 7 build_ms 5.0 fetch_ms 1.0\n",
                                "mpcl-binaries 1 store 0\nbench store 0 build_ms 1.0 fetch_ms 5.0\n"};
    for (size_t i = 0; i < 2; i++) {
        ck_assert_int_eq(tu_write_file(path, bad[i], strlen(bad[i])), 0);
        ctx = open_ctx(dir);
        ck_assert_int_eq(mpcl_store_binaries(ctx, "bench", NULL, NULL), -1);
        before = ctx->cache;
        ck_assert_int_eq(mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP32, 1, &prog), MPCL_OK);
        clReleaseProgram(prog);
        ck_assert_uint_eq(ctx->cache.written, before.written + 1);
        ck_assert_int_ge(mpcl_store_binaries(ctx, "bench", NULL, NULL), 0);
        mpcl_context_destroy(ctx);
        size_t len = 0;
        char *text = tu_read_file(path, &len);
        ck_assert_ptr_nonnull(text);
        ck_assert_msg(strncmp(text, "mpcl-binaries 2\n", 16) == 0 && strstr(text, "\nbench store ") &&
                          !strstr(text, "store 7"),
                      "verdict file not rewritten: '%s'", text);
        free(text);
        ck_assert_int_eq(remove(entry), 0);
    }
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* MPCL_STORE_BINARIES=0 stores nothing and measures nothing, =1 stores
 * whatever the file says, anything else is refused at context creation. */
START_TEST(test_store_env)
{
    char *dir = tu_mkdtemp("store-env");
    setenv("MPCL_STORE_BINARIES", "0", 1);
    mpcl_context *ctx = open_ctx(dir);
    ck_assert_uint_eq(ctx->cache.written, 0);
    ck_assert_uint_ge(ctx->cache.declined, 1);
    ck_assert_int_le(tu_dir_entries(dir), 0);
    char path[MPCL_PATH_LEN + 64], entry[MPCL_PATH_LEN + 128];
    store_paths(ctx, dir, path, entry);
    mpcl_context_destroy(ctx);

    static const char no[] = "mpcl-binaries 2\nbench store 0 build_ms 1.0 fetch_ms 5.0\n";
    ck_assert_int_eq(tu_write_file(path, no, strlen(no)), 0);
    setenv("MPCL_STORE_BINARIES", "1", 1);
    ctx = open_ctx(dir);
    ck_assert_int_eq(mpcl_store_binaries(ctx, "bench", NULL, NULL), 1);
    cl_program prog = NULL;
    ck_assert_int_eq(mpcl_program_build(ctx, "bench", MPCL_VARIANT_FP32, 1, &prog), MPCL_OK);
    clReleaseProgram(prog);
    ck_assert_msg(has_magic(entry), "no valid entry at %s", entry);
    mpcl_context_destroy(ctx);

    setenv("MPCL_STORE_BINARIES", "yes", 1);
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.cache_dir = dir;
    ctx = NULL;
    ck_assert_int_eq(mpcl_context_create(&opt, &ctx), MPCL_ERR_ARGUMENT);
    HAS(mpcl_last_error(ctx), "MPCL_STORE_BINARIES is \"yes\"");
    mpcl_context_destroy(ctx);
    unsetenv("MPCL_STORE_BINARIES");
    tu_rmtree(dir);
    free(dir);
}
END_TEST

int main(int argc, char **argv)
{
    g_argc = argc;
    g_argv = argv;
    tu_clean_env();
    tu_device_info dev;
    tu_probe_device(&dev);
    Suite *s = suite_create("program");
    TCase *src = tcase_create("sources");
    tcase_add_test(src, test_embedded_match_sources);
    suite_add_tcase(s, src);
    if (tu_no_device(&dev)) {
        fprintf(stderr, "test_program: no OpenCL device (%s: %s): skipped\n",
                mpcl_status_name((mpcl_status)dev.status), dev.message);
        return TU_EXIT_SKIP;
    }
    /* The cache tests below check stored entries: binaries stored on every
     * device, whatever its measured verdict (tested in "store"). */
    setenv("MPCL_STORE_BINARIES", "1", 1);
    TCase *tc = tcase_create("build");
    tcase_add_test(tc, test_every_family_builds);
    tcase_add_test(tc, test_program_table_and_kernels);
    tcase_add_test(tc, test_cache_miss_then_hit);
    tcase_add_test(tc, test_cache_truncated);
    tcase_add_test(tc, test_cache_flipped);
    tcase_add_test(tc, test_cache_bad_magic);
    tcase_add_test(tc, test_cache_garbage_binary);
    tcase_add_test(tc, test_cache_truncated_header);
    tcase_add_test(tc, test_cache_empty);
    tcase_add_test(tc, test_cache_extra_bytes);
    tcase_add_test(tc, test_cache_old_format);
    tcase_add_test(tc, test_cache_huge_length);
    tcase_add_test(tc, test_cache_foreign_file);
    tcase_add_test(tc, test_cache_wrong_key);
    tcase_add_test(tc, test_cache_corrupt_at_creation);
    tcase_add_test(tc, test_no_cache_option);
    tcase_add_test(tc, test_no_cache_env);
    tcase_add_test(tc, test_default_cache_dir);
    tcase_add_test(tc, test_kernel_dir_option);
    tcase_add_test(tc, test_kernel_dir_env);
    tcase_add_test(tc, test_kernel_dir_changed_source);
    tcase_add_test(tc, test_kernel_dir_missing_files);
    tcase_add_test(tc, test_broken_kernel_build_log);
    tcase_add_test(tc, test_launch_shape_checks);
    tcase_add_test(tc, test_work_group_cap_sources);
    tcase_add_test(tc, test_wg_1d_measured_and_cached);
    suite_add_tcase(s, tc);
    TCase *st = tcase_create("store");
    tcase_add_test(st, test_store_verdict_measured);
    tcase_add_test(st, test_store_verdict_followed);
    tcase_add_test(st, test_store_env);
    suite_add_tcase(s, st);
    return tu_run_suite(s);
}
