/* fuzz_util.h — what the libFuzzer targets of tests/fuzz share: temporary
 * files named per process (so that several fuzzers can run at once), plain
 * or gzip-compressed (optionally cut short, to fuzz damaged streams), and
 * their removal at exit. Header-only: each target is one translation unit
 * (tools/fuzz.sh builds them). */
#ifndef MPCL_FUZZ_UTIL_H
#define MPCL_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "mpcl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_PATH_LEN 256

/* A parser broke one of its promises: abort() gives libFuzzer a crash with
 * the input. The message goes to file descriptor 2 itself (a target may
 * point the stderr stream elsewhere). */
#define FUZZ_CHECK(cond)                                                                    \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            dprintf(2, "fuzz: broken invariant at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

static char fuzz_tmp_paths[8][FUZZ_PATH_LEN];
static int fuzz_tmp_count;

static inline void fuzz_tmp_cleanup(void)
{
    for (int i = fuzz_tmp_count - 1; i >= 0; i--) {
        unlink(fuzz_tmp_paths[i]);
        rmdir(fuzz_tmp_paths[i]);
    }
}

/* Removes path at exit (files inside a directory: register them after it,
 * they are removed first). */
static inline void fuzz_tmp_register(const char *path)
{
    for (int i = 0; i < fuzz_tmp_count; i++)
        if (strcmp(fuzz_tmp_paths[i], path) == 0)
            return;
    if (fuzz_tmp_count == (int)(sizeof fuzz_tmp_paths / sizeof fuzz_tmp_paths[0]) ||
        strlen(path) >= FUZZ_PATH_LEN)
        abort();
    if (fuzz_tmp_count == 0)
        atexit(fuzz_tmp_cleanup);
    snprintf(fuzz_tmp_paths[fuzz_tmp_count++], FUZZ_PATH_LEN, "%s", path);
}

/* Where the temporary files go: $MPCL_FUZZ_TMPDIR, else /dev/shm (memory:
 * a file a run on a disk can cost milliseconds, most of a run's time),
 * else $TMPDIR, else /tmp. */
static inline const char *fuzz_tmp_dir(void)
{
    const char *dir = getenv("MPCL_FUZZ_TMPDIR");
    if (dir && *dir)
        return dir;
    if (access("/dev/shm", W_OK | X_OK) == 0)
        return "/dev/shm";
    dir = getenv("TMPDIR");
    return dir && *dir ? dir : "/tmp";
}

/* dst = DIR/mpcl-fuzz-NAME-PID (removed at exit), DIR as fuzz_tmp_dir
 * says; the same name on every call with the same name. */
static inline void fuzz_tmp_path(char *dst, size_t len, const char *name)
{
    const char *dir = fuzz_tmp_dir();
    int n = snprintf(dst, len, "%s/mpcl-fuzz-%s-%d", dir, name, (int)getpid());
    if (n < 0 || (size_t)n >= len)
        abort();
    fuzz_tmp_register(dst);
}

static inline void fuzz_write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    if (fclose(f) != 0)
        abort();
}

/* data gzip-compressed (one member, as gzip(1) writes it), the last `cut`
 * bytes of the compressed stream left off; *len receives its length. */
static inline uint8_t *fuzz_gzip(const void *data, size_t size, size_t cut, size_t *len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        abort();
    size_t cap = deflateBound(&z, (uLong)size) + 32;
    uint8_t *out = malloc(cap);
    if (!out)
        abort();
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)size;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        abort();
    size_t n = z.total_out;
    deflateEnd(&z);
    *len = cut < n ? n - cut : 0;
    return out;
}

/* Writes data gzip-compressed, cut as fuzz_gzip; returns whether the file
 * is a gzip stream cut short: cut > 0 and 2 bytes or more left (zlib reads
 * a file shorter than the gzip magic, or one that does not start with it,
 * as plain bytes). */
static inline int fuzz_write_gzip(const char *path, const void *data, size_t size, size_t cut)
{
    size_t n = 0;
    uint8_t *z = fuzz_gzip(data, size, cut, &n);
    fuzz_write_file(path, z, n);
    free(z);
    return cut > 0 && n >= 2;
}

/* Whether bytes start like a gzip stream (the readers then decompress it). */
/* The file at path: data as it is, or (gz) gzip-compressed with the last
 * cut bytes cut off, as fuzz_write_gzip; returns whether a gzip stream was
 * cut short. */
static inline int fuzz_write_maybe_gzip(const char *path, const void *data, size_t size, int gz, size_t cut)
{
    if (gz)
        return fuzz_write_gzip(path, data, size, cut);
    fuzz_write_file(path, data, size);
    return 0;
}

/* A context that only carries the refusal of an unknown precision: enough
 * for the readers that report through a context and need no device. */
static inline mpcl_context *fuzz_error_context(void)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = (mpcl_precision)99;
    mpcl_context *ctx = NULL;
    if (mpcl_context_create(&opt, &ctx) == MPCL_OK || !ctx)
        abort();
    return ctx;
}

static inline int fuzz_looks_gzip(const uint8_t *p, size_t n)
{
    return n >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

#endif
