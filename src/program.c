/* program.c — kernel sources (embedded or from MPCL_KERNEL_DIR), runtime
 * builds per precision variant, build logs, and the program binary cache.
 *
 * Cache entry: <dir>/<family>-<variant>-<key>.bin, where key hashes the
 * sources, build options, platform, device and driver version. A 64-byte
 * header, then the driver's binary (integers little-endian):
 *
 *    0  magic "MPCLBIN\x1a"       32  binary length in bytes
 *    8  u32 format version (2)     40  u64 checksum of the binary (FNV-1a
 *   12  u32 header length (64)         64 seeded with the key)
 *   16  u64 key                    48  u64 reserved (0)
 *   24  u64 hash of platform,      56  u64 checksum of bytes 0..55
 *       device and driver
 *
 * Before a binary reaches clCreateProgramWithBinary every field is checked:
 * the file's size (a header, a binary of the stated length, nothing more;
 * at most CACHE_MAX_BINARY), magic, version, header length and checksum, the
 * key and device hash against the build asked for, then the binary's
 * checksum. A truncated, corrupt, foreign, wrong-key or old-format entry is
 * counted (cache.rejected, cache.corrupt), removed and rebuilt from source;
 * the driver never sees its bytes. An entry that passes and that the driver
 * still refuses is rebuilt the same way. Entries are written to a temporary
 * file and renamed over the old one, so readers see a whole entry or none;
 * a write cut short by a crash fails the length or checksum check. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static const char CACHE_MAGIC[8] = {'M', 'P', 'C', 'L', 'B', 'I', 'N', 0x1a};
#define CACHE_VERSION 2u
#define CACHE_HEADER 64u
/* No driver binary of one kernel family comes near this; a larger length
 * field is damage, and is not allocated. */
#define CACHE_MAX_BINARY ((uint64_t)1 << 30)

uint64_t mpcl_hash64(const void *data, size_t len, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t hash_str(uint64_t h, const char *s)
{
    h = mpcl_hash64(s, strlen(s) + 1, h); /* +1: the terminator separates fields */
    return h;
}

static const char *embedded_text(const char *name)
{
    for (size_t i = 0; i < mpcl_embedded_source_count; i++)
        if (strcmp(mpcl_embedded_sources[i].name, name) == 0)
            return mpcl_embedded_sources[i].text;
    return NULL;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            if (len)
                *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

/* The two source strings of a family: cl/precision.h, then cl/<family>.cl.
 * Both are malloc'ed. */
static mpcl_status load_sources(mpcl_context *ctx, const char *family, char **header, char **body)
{
    *header = *body = NULL;
    if (ctx->kernel_dir[0]) {
        char path[MPCL_PATH_LEN + 64];
        mpcl_strfmt(path, sizeof path, "%s/precision.h", ctx->kernel_dir);
        *header = read_file(path, NULL);
        if (!*header)
            return mpcl_set_error(ctx, MPCL_ERR_IO, "cannot read kernel header %s (MPCL_KERNEL_DIR): %s",
                                  path, strerror(errno));
        mpcl_strfmt(path, sizeof path, "%s/%s.cl", ctx->kernel_dir, family);
        *body = read_file(path, NULL);
        if (!*body) {
            free(*header);
            *header = NULL;
            return mpcl_set_error(ctx, MPCL_ERR_IO, "cannot read kernel source %s (MPCL_KERNEL_DIR): %s",
                                  path, strerror(errno));
        }
        return MPCL_OK;
    }
    const char *h = embedded_text("precision.h");
    const char *b = embedded_text(family);
    if (!h || !b)
        return mpcl_set_error(ctx, MPCL_ERR_ARGUMENT, "no kernel source named '%s' is embedded in libmpcl",
                              family);
    *header = strdup(h);
    *body = strdup(b);
    if (!*header || !*body) {
        free(*header);
        free(*body);
        *header = *body = NULL;
        return mpcl_set_error(ctx, MPCL_ERR_NOMEM, "out of host memory loading kernel '%s'", family);
    }
    return MPCL_OK;
}

static void build_options(const mpcl_context *ctx, mpcl_variant v, const char *defines, char *dst,
                          size_t len)
{
    /* No fast-math flags: loss scaling relies on inf and NaN behaving. The
     * variant's extra define (bf16: the verified conversion built-ins;
     * fp16-storage: the device's half conversion choice) is part of the
     * options, so of the cache key. */
    const char *extra = mpcl_variant_extra_define(ctx, v);
    mpcl_strfmt(dst, len, "-cl-std=CL1.2 -D%s%s%s%s%s", mpcl_variant_define(v), *extra ? " " : "",
                extra, defines && *defines ? " " : "", defines ? defines : "");
}

static uint64_t cache_key(mpcl_context *ctx, const char *header, const char *body, const char *opts)
{
    uint64_t h = MPCL_HASH_SEED;
    h = hash_str(h, header);
    h = hash_str(h, body);
    h = hash_str(h, opts);
    const uint64_t dev = mpcl_device_hash(ctx);
    return mpcl_hash64(&dev, sizeof dev, h);
}

/* The platform, device and driver the entry was built by (part of the key
 * too; kept apart so a rejection can say what differed). */
uint64_t mpcl_device_hash(const mpcl_context *ctx)
{
    uint64_t h = MPCL_HASH_SEED;
    h = hash_str(h, ctx->caps.platform);
    h = hash_str(h, ctx->caps.platform_version);
    h = hash_str(h, ctx->caps.device);
    h = hash_str(h, ctx->caps.device_version);
    h = hash_str(h, ctx->caps.driver_version);
    return h;
}

static void entry_path(mpcl_context *ctx, const char *family, mpcl_variant v, uint64_t key,
                       char *dst, size_t len)
{
    mpcl_strfmt(dst, len, "%s/%s-%s-%016llx.bin", ctx->cache_dir, family, mpcl_variant_name(v),
                (unsigned long long)key);
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void mpcl_cache_header(unsigned char hdr[64], uint64_t key, uint64_t dev, const void *bin,
                       size_t len)
{
    memset(hdr, 0, CACHE_HEADER);
    memcpy(hdr, CACHE_MAGIC, 8);
    put_u32(hdr + 8, CACHE_VERSION);
    put_u32(hdr + 12, CACHE_HEADER);
    put_u64(hdr + 16, key);
    put_u64(hdr + 24, dev);
    put_u64(hdr + 32, len);
    put_u64(hdr + 40, mpcl_hash64(bin, len, key));
    put_u64(hdr + 56, mpcl_hash64(hdr, 56, MPCL_HASH_SEED));
}

/* Why the header of a file of file_len bytes does not fit the build of
 * (key, dev), or NULL when it does; *bin_len receives the binary's length. */
static const char *header_problem(const unsigned char *h, uint64_t file_len, uint64_t key,
                                  uint64_t dev, uint64_t *bin_len)
{
    if (memcmp(h, CACHE_MAGIC, 7) == 0 && h[7] != (unsigned char)CACHE_MAGIC[7])
        return "another format version (format 1: \"MPCLBIN1\")";
    if (memcmp(h, CACHE_MAGIC, 8) != 0)
        return "not an mpcl cache entry (magic)";
    if (get_u32(h + 8) != CACHE_VERSION || get_u32(h + 12) != CACHE_HEADER)
        return "another format version";
    if (get_u64(h + 56) != mpcl_hash64(h, 56, MPCL_HASH_SEED))
        return "header checksum";
    if (get_u64(h + 16) != key)
        return "written for another key";
    if (get_u64(h + 24) != dev)
        return "written by another device or driver";
    *bin_len = get_u64(h + 32);
    if (*bin_len == 0 || *bin_len > CACHE_MAX_BINARY || *bin_len != file_len - CACHE_HEADER)
        return "binary length does not match the file";
    return NULL;
}

/* The checks read_entry makes, on an entry of len bytes in memory: NULL when
 * it is a whole, uncorrupted entry for (key, dev), with *bin_len its
 * binary's length (the bytes after the header); else what is wrong. */
const char *mpcl_cache_entry_problem(const unsigned char *entry, uint64_t len, uint64_t key,
                                     uint64_t dev, uint64_t *bin_len)
{
    if (len < CACHE_HEADER)
        return "shorter than a header";
    uint64_t n = 0;
    const char *why = header_problem(entry, len, key, dev, &n);
    if (!why && get_u64(entry + 40) != mpcl_hash64(entry + CACHE_HEADER, (size_t)n, key))
        why = "binary checksum";
    if (!why)
        *bin_len = n;
    return why;
}

static void fill_build_log(mpcl_context *ctx, cl_program prog, char *dst, size_t len)
{
    size_t n = 0;
    dst[0] = '\0';
    if (clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) != CL_SUCCESS || n == 0)
        return;
    char *log = malloc(n + 1);
    if (!log)
        return;
    if (clGetProgramBuildInfo(prog, ctx->device, CL_PROGRAM_BUILD_LOG, n, log, NULL) == CL_SUCCESS) {
        log[n] = '\0';
        mpcl_strfmt(dst, len, "%s", log);
    }
    free(log);
}

static mpcl_status build_from_source(mpcl_context *ctx, const char *family, mpcl_variant v,
                                     const char *header, const char *body, const char *opts,
                                     cl_program *out)
{
    const char *srcs[2] = {header, body};
    cl_int rc;
    cl_program prog = clCreateProgramWithSource(ctx->cl, 2, srcs, NULL, &rc);
    if (!prog || rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "clCreateProgramWithSource('%s', %s) failed: %s",
                              family, mpcl_variant_name(v), mpcl_cl_error_name(rc));
    /* (some compilers, PoCL's, also print diagnostics on the process's
     * stderr; the library leaves the process's descriptors alone: the
     * build log goes into the error message, and an app or the mpcl tool
     * decides what its stderr shows, see tools/cli.c) */
    rc = clBuildProgram(prog, 1, &ctx->device, opts, NULL, NULL);
    if (rc != CL_SUCCESS) {
        char log[3000];
        fill_build_log(ctx, prog, log, sizeof log);
        clReleaseProgram(prog);
        return mpcl_set_error(ctx, MPCL_ERR_BUILD,
                              "kernel program '%s' (%s variant, options \"%s\") failed to build on "
                              "device '%s': %s\nbuild log:\n%s",
                              family, mpcl_variant_name(v), opts, ctx->desc.name,
                              mpcl_cl_error_name(rc), log[0] ? log : "(empty)");
    }
    *out = prog;
    return MPCL_OK;
}

/* Reads and checks the entry at path; returns the binary (malloc'ed) when
 * every check passes, else NULL with *why saying what failed (NULL when the
 * file is absent: an ordinary miss). */
static unsigned char *read_entry(const char *path, uint64_t key, uint64_t dev, size_t *len,
                                 const char **why)
{
    *why = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char hdr[CACHE_HEADER], *bin = NULL;
    uint64_t bin_len = 0;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode))
        *why = "not a regular file";
    else if ((uint64_t)st.st_size < CACHE_HEADER || fread(hdr, 1, CACHE_HEADER, f) != CACHE_HEADER)
        *why = "shorter than a header";
    else
        *why = header_problem(hdr, (uint64_t)st.st_size, key, dev, &bin_len);
    if (!*why && (bin = malloc((size_t)bin_len)) == NULL)
        *why = "out of host memory";
    if (!*why && fread(bin, 1, (size_t)bin_len, f) != bin_len)
        *why = "shorter than its stated length";
    if (!*why && get_u64(hdr + 40) != mpcl_hash64(bin, (size_t)bin_len, key))
        *why = "binary checksum";
    fclose(f);
    if (*why) {
        free(bin);
        return NULL;
    }
    *len = (size_t)bin_len;
    return bin;
}

/* Returns a built program from the cache entry, or NULL (counting a damaged
 * entry as rejected and corrupt, and removing it). Only a binary that passed
 * every check of read_entry reaches the driver. */
static cl_program load_cached(mpcl_context *ctx, const char *path, uint64_t key, const char *opts)
{
    const char *why = NULL;
    size_t bin_len = 0;
    unsigned char *bin = read_entry(path, key, mpcl_device_hash(ctx), &bin_len, &why);
    if (!bin && !why)
        return NULL; /* absent: an ordinary miss */
    cl_program prog = NULL;
    if (bin) {
        const unsigned char *b = bin;
        cl_int status = CL_SUCCESS, rc;
        ctx->cache.binaries++;
        prog = clCreateProgramWithBinary(ctx->cl, 1, &ctx->device, &bin_len, &b, &status, &rc);
        if (prog && (rc != CL_SUCCESS || status != CL_SUCCESS ||
                     clBuildProgram(prog, 1, &ctx->device, opts, NULL, NULL) != CL_SUCCESS)) {
            clReleaseProgram(prog);
            prog = NULL;
        }
        free(bin);
    } else {
        ctx->cache.rejected++;
        mpcl_strfmt(ctx->cache_rejected_why, sizeof ctx->cache_rejected_why, "%s: %s", path, why);
    }
    if (!prog) {
        ctx->cache.corrupt++;
        remove(path);
    }
    return prog;
}

static int mkdir_p(const char *dir)
{
    char tmp[MPCL_PATH_LEN];
    mpcl_strfmt(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return (mkdir(tmp, 0700) != 0 && errno != EEXIST) ? -1 : 0;
}

FILE *mpcl_cache_tmp_open(mpcl_context *ctx, const char *path, char *tmp, const char *mode)
{
    mpcl_strfmt(tmp, MPCL_CACHE_TMP_LEN, "%s.tmp.%ld.%u", path, (long)getpid(), ++ctx->cache_tmp_seq);
    FILE *f = mkdir_p(ctx->cache_dir) == 0 ? fopen(tmp, mode) : NULL;
    if (!f) {
        ctx->cache.write_failed++;
        mpcl_strfmt(ctx->cache_write_why, sizeof ctx->cache_write_why, "%s: %s", tmp, strerror(errno));
    }
    return f;
}

int mpcl_cache_tmp_commit(mpcl_context *ctx, FILE *f, int ok, const char *tmp, const char *path)
{
    int e = ok ? 0 : errno; /* the caller's failed write */
    if (ok && fflush(f) != 0) {
        ok = 0;
        e = errno;
    }
    ok = fclose(f) == 0 && ok;
    if (!e)
        e = errno;
    if (ok && rename(tmp, path) == 0)
        return 1;
    if (!e)
        e = errno;
    remove(tmp);
    ctx->cache.write_failed++; /* the entry stays as it was (or absent): the run goes on */
    mpcl_strfmt(ctx->cache_write_why, sizeof ctx->cache_write_why, "%s: %s", path,
                e ? strerror(e) : "write failed");
    return 0;
}

/* Whether storing a program's binary pays. Handing a binary back is free
 * for a driver that compiles everything at clBuildProgram (Intel's runtime,
 * GPU drivers), but PoCL compiles every kernel of the program for it, at a
 * work-group size it may never launch: for a program of per-geometry conv
 * kernels that is seconds, several times the source build, while PoCL's own
 * kernel cache already makes the next source build fast. So the first
 * program of each family built on a device times its source build and the
 * binary fetch: a fetch over STORE_FETCH_FACTOR builds means no binaries of
 * that family on that device from then on. The verdicts are kept in
 * <cache>/binaries-<device hash>.txt, a line "mpcl-binaries 2" then one line
 * per family "FAMILY store S build_ms B fetch_ms F" (lines that do not read
 * back are measured again). MPCL_STORE_BINARIES=1/0 overrides them all.
 * Entries already stored are loaded either way. */
#define STORE_FETCH_FACTOR 1.0
#define STORE_MAGIC "mpcl-binaries 2"
#define STORE_LINE "%31s store %d build_ms %lf fetch_ms %lf"

static void store_verdict_path(const mpcl_context *ctx, char *dst, size_t len)
{
    mpcl_strfmt(dst, len, "%s/binaries-%016llx.txt", ctx->cache_dir,
                (unsigned long long)mpcl_device_hash(ctx));
}

static mpcl_store_verdict *store_find(mpcl_context *ctx, const char *family)
{
    for (size_t i = 0; i < ctx->store_count; i++)
        if (strcmp(ctx->store[i].family, family) == 0)
            return &ctx->store[i];
    return NULL;
}

/* Adds or replaces family's verdict in ctx; NULL when the table is full. */
static mpcl_store_verdict *store_put(mpcl_context *ctx, const char *family, int store,
                                     double build_ms, double fetch_ms)
{
    mpcl_store_verdict *v = store_find(ctx, family);
    if (!v && ctx->store_count < MPCL_MAX_STORE_VERDICTS)
        v = &ctx->store[ctx->store_count++];
    if (v) {
        mpcl_strfmt(v->family, sizeof v->family, "%s", family);
        v->store = store;
        v->build_ms = build_ms;
        v->fetch_ms = fetch_ms;
    }
    return v;
}

/* Reads the device's verdicts into ctx, once per context. */
static void store_load(mpcl_context *ctx)
{
    if (ctx->store_loaded)
        return;
    ctx->store_loaded = 1;
    char path[MPCL_PATH_LEN + 64], line[160], fam[32];
    store_verdict_path(ctx, path, sizeof path);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fgets(line, sizeof line, f) && strncmp(line, STORE_MAGIC "\n", sizeof STORE_MAGIC) == 0)
        while (fgets(line, sizeof line, f)) {
            int store = -1, used = 0;
            double b = -1, fe = -1;
            if (sscanf(line, STORE_LINE "%n", fam, &store, &b, &fe, &used) == 4 &&
                (line[used] == '\n' || line[used] == '\0') && (store == 0 || store == 1) &&
                b >= 0 && fe >= 0)
                store_put(ctx, fam, store, b, fe);
        }
    fclose(f);
}

static void store_write(mpcl_context *ctx)
{
    char path[MPCL_PATH_LEN + 64], tmp[MPCL_CACHE_TMP_LEN];
    store_verdict_path(ctx, path, sizeof path);
    FILE *f = mpcl_cache_tmp_open(ctx, path, tmp, "w");
    if (!f)
        return;
    int ok = fprintf(f, STORE_MAGIC "\n") > 0;
    for (size_t i = 0; i < ctx->store_count; i++) {
        const mpcl_store_verdict *v = &ctx->store[i];
        ok = ok && fprintf(f, "%s store %d build_ms %.3f fetch_ms %.3f\n", v->family, v->store,
                           v->build_ms, v->fetch_ms) > 0;
    }
    mpcl_cache_tmp_commit(ctx, f, ok, tmp, path);
}

int mpcl_store_binaries(mpcl_context *ctx, const char *family, double *build_ms,
                        double *fetch_ms)
{
    if (build_ms)
        *build_ms = 0;
    if (fetch_ms)
        *fetch_ms = 0;
    if (ctx->store_binaries >= 0)
        return ctx->store_binaries;
    store_load(ctx);
    const mpcl_store_verdict *v = store_find(ctx, family);
    if (!v)
        return -1;
    if (build_ms)
        *build_ms = v->build_ms;
    if (fetch_ms)
        *fetch_ms = v->fetch_ms;
    return v->store;
}

/* Best effort: a cache that cannot be written only makes later starts
 * slower. Written to a temporary file in the same directory, then renamed
 * over path (atomic on POSIX file systems). Returns the seconds the driver
 * took to hand the binary back, or -1 when it did not. */
static double store_cached(mpcl_context *ctx, const char *path, uint64_t key, cl_program prog)
{
    double t0 = mpcl_now_s();
    size_t size = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL) != CL_SUCCESS ||
        size == 0 || size > CACHE_MAX_BINARY)
        return -1;
    unsigned char *buf = malloc(size + CACHE_HEADER);
    if (!buf)
        return -1;
    unsigned char *bin = buf + CACHE_HEADER;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof bin, &bin, NULL) != CL_SUCCESS) {
        free(buf);
        return -1;
    }
    double fetch_s = mpcl_now_s() - t0;
    mpcl_cache_header(buf, key, mpcl_device_hash(ctx), buf + CACHE_HEADER, size);
    char tmp[MPCL_CACHE_TMP_LEN];
    FILE *f = mpcl_cache_tmp_open(ctx, path, tmp, "wb");
    if (f && mpcl_cache_tmp_commit(ctx, f, fwrite(buf, 1, size + CACHE_HEADER, f) == size + CACHE_HEADER,
                                   tmp, path))
        ctx->cache.written++;
    free(buf);
    return fetch_s;
}

/* After a source build of family that took build_s: stores the binary
 * where that pays (above), measuring the family's verdict when there is
 * none yet. */
static void store_after_build(mpcl_context *ctx, const char *family, const char *path,
                              uint64_t key, cl_program prog, double build_s)
{
    int verdict = mpcl_store_binaries(ctx, family, NULL, NULL);
    if (verdict == 0) {
        ctx->cache.declined++;
        return;
    }
    double fetch_s = store_cached(ctx, path, key, prog);
    if (verdict < 0 && fetch_s >= 0) {
        /* what other processes decided meanwhile, then this family's verdict */
        ctx->store_loaded = 0;
        store_load(ctx);
        if (store_put(ctx, family, fetch_s <= STORE_FETCH_FACTOR * build_s, build_s * 1e3,
                      fetch_s * 1e3))
            store_write(ctx);
    }
}

mpcl_status mpcl_program_cache_path(mpcl_context *ctx, const char *family, mpcl_variant variant,
                                    char *path, size_t len)
{
    char *header, *body, opts[128];
    mpcl_status s = load_sources(ctx, family, &header, &body);
    if (s != MPCL_OK)
        return s;
    build_options(ctx, variant, NULL, opts, sizeof opts);
    entry_path(ctx, family, variant, cache_key(ctx, header, body, opts), path, len);
    free(header);
    free(body);
    return MPCL_OK;
}

mpcl_status mpcl_program_build(mpcl_context *ctx, const char *family, mpcl_variant variant,
                               int use_cache, cl_program *out)
{
    return mpcl_program_build_defines(ctx, family, variant, NULL, use_cache, out);
}

mpcl_status mpcl_program_build_defines(mpcl_context *ctx, const char *family, mpcl_variant variant,
                                       const char *defines, int use_cache, cl_program *out)
{
    char *header, *body, opts[MPCL_SPEC_DEFINES_LEN + 128], path[MPCL_PATH_LEN + 128];
    *out = NULL;
    mpcl_status s = load_sources(ctx, family, &header, &body);
    if (s != MPCL_OK)
        return s;
    build_options(ctx, variant, defines, opts, sizeof opts);
    int cached = use_cache && ctx->cache_enabled;
    uint64_t key = cache_key(ctx, header, body, opts);
    if (cached) {
        entry_path(ctx, family, variant, key, path, sizeof path);
        *out = load_cached(ctx, path, key, opts);
        if (*out) {
            ctx->cache.hits++;
            free(header);
            free(body);
            return MPCL_OK;
        }
    }
    double t0 = mpcl_now_s();
    s = build_from_source(ctx, family, variant, header, body, opts, out);
    free(header);
    free(body);
    if (s == MPCL_OK) {
        ctx->cache.misses++;
        if (cached)
            store_after_build(ctx, family, path, key, *out, mpcl_now_s() - t0);
    }
    return s;
}

mpcl_status mpcl_program_get(mpcl_context *ctx, const char *family, mpcl_variant variant,
                             cl_program *out)
{
    for (size_t i = 0; i < ctx->program_count; i++)
        if (ctx->programs[i].variant == variant && strcmp(ctx->programs[i].family, family) == 0) {
            *out = ctx->programs[i].program;
            return MPCL_OK;
        }
    if (ctx->program_count == MPCL_MAX_PROGRAMS)
        return mpcl_set_error(ctx, MPCL_ERR_STATE, "too many kernel programs in one context (%d)",
                              MPCL_MAX_PROGRAMS);
    mpcl_status s = mpcl_program_build(ctx, family, variant, 1, out);
    if (s != MPCL_OK)
        return s;
    mpcl_program_slot *slot = &ctx->programs[ctx->program_count++];
    mpcl_strfmt(slot->family, sizeof slot->family, "%s", family);
    slot->variant = variant;
    slot->program = *out;
    return MPCL_OK;
}

mpcl_status mpcl_kernel_create(mpcl_context *ctx, const char *family, mpcl_variant variant,
                               const char *kernel, cl_kernel *out)
{
    cl_program prog;
    mpcl_status s = mpcl_program_get(ctx, family, variant, &prog);
    if (s != MPCL_OK)
        return s;
    cl_int rc;
    *out = clCreateKernel(prog, kernel, &rc);
    if (!*out || rc != CL_SUCCESS)
        return mpcl_set_error(ctx, MPCL_ERR_OPENCL, "clCreateKernel('%s' in %s.cl, %s) failed: %s",
                              kernel, family, mpcl_variant_name(variant), mpcl_cl_error_name(rc));
    return MPCL_OK;
}

void mpcl_cache_report_get(const mpcl_context *ctx, mpcl_cache_report *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!ctx)
        return;
    out->hits = ctx->cache.hits;
    out->misses = ctx->cache.misses;
    out->written = ctx->cache.written;
    out->rejected = ctx->cache.rejected;
    out->write_failed = ctx->cache.write_failed;
    mpcl_strfmt(out->last_rejected, sizeof out->last_rejected, "%s", ctx->cache.rejected ? ctx->cache_rejected_why : "");
    mpcl_strfmt(out->last_write_failure, sizeof out->last_write_failure, "%s",
                ctx->cache.write_failed ? ctx->cache_write_why : "");
}
