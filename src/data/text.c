/* text.c — text for language models, read as bytes: a file (plain or
 * gzip-compressed: zlib reads both) or a directory of them, joined in name
 * order; the last part held out for validation; training batches of
 * hashed random windows and validation batches of consecutive windows.
 * Host code only: no OpenCL, so it can be tested and fuzzed alone.
 *
 * A directory's files: its regular files (lstat: symbolic links are
 * skipped, so Debian's fortunes/NAME.u8 -> NAME links are not read twice),
 * not hidden (no leading '.'), not ending in ".dat" (the fortune index
 * files), sorted by strcmp of their names. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "internal.h"

#define TEXT_MAX_BYTES ((size_t)1 << 31) /* 2 GiB in all: a guard against runaway gzip streams */
#define TEXT_DEFAULT_VALID 0.1

/* A growing byte buffer. */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} text_buf;

static int buf_reserve(text_buf *b, size_t more)
{
    if (b->cap - b->len >= more)
        return 1;
    if (more > SIZE_MAX - b->len)
        return 0;
    /* double, or what is asked where that is more */
    size_t cap = b->cap <= SIZE_MAX / 2 ? b->cap * 2 : SIZE_MAX;
    if (cap < b->len + more)
        cap = b->len + more;
    if (cap < 4096)
        cap = 4096;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return 0;
    b->data = p;
    b->cap = cap;
    return 1;
}

/* Appends the whole of path (plain or gzip) to b. size_hint: the file's size
 * on disk (the bytes of a plain file; a start for a gzip one). */
static mpcl_status append_file(const char *path, size_t size_hint, text_buf *b, char *err,
                               size_t err_len)
{
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        mpcl_strfmt(err, err_len, "%s: cannot open: %s", path, errno ? strerror(errno) : "zlib error");
        return errno == ENOMEM ? MPCL_ERR_NOMEM : MPCL_ERR_IO;
    }
    size_t start = b->len;
    if (size_hint > TEXT_MAX_BYTES - start)
        size_hint = TEXT_MAX_BYTES - start;
    mpcl_status st = MPCL_OK;
    int zerr = 0;
    for (;;) {
        /* the first read: the file's size and one more byte (a plain file
         * is then read at once, its end seen by the next read); then room
         * for one byte at least (buf_reserve doubles the buffer) */
        size_t want = size_hint + 1;
        if (!buf_reserve(b, want)) {
            mpcl_strfmt(err, err_len, "%s: out of host memory for %zu bytes", path, b->len + want);
            st = MPCL_ERR_NOMEM;
            break;
        }
        size_t room = b->cap - b->len;
        unsigned chunk = (unsigned)(room > (1u << 30) ? (1u << 30) : room);
        errno = 0;
        int n = gzread(f, b->data + b->len, chunk);
        if (n < 0) {
            const char *msg = gzerror(f, &zerr);
            if (zerr == Z_ERRNO) {
                mpcl_strfmt(err, err_len, "%s: read error at byte %zu: %s", path, b->len - start,
                            strerror(errno));
                st = MPCL_ERR_IO;
            } else if (zerr == Z_MEM_ERROR) {
                mpcl_strfmt(err, err_len, "%s: out of host memory in zlib", path);
                st = MPCL_ERR_NOMEM;
            } else {
                mpcl_strfmt(err, err_len, "%s: the gzip stream is damaged after %zu bytes of text: %s",
                            path, b->len - start, msg);
                st = MPCL_ERR_FORMAT;
            }
            break;
        }
        if (n == 0) {
            /* gzread returns what it has at a truncated gzip stream and
             * keeps Z_BUF_ERROR ("unexpected end of file") for gzerror */
            const char *msg = gzerror(f, &zerr);
            if (zerr == Z_BUF_ERROR) {
                mpcl_strfmt(err, err_len, "%s: the gzip stream is truncated after %zu bytes of text: %s",
                            path, b->len - start, msg);
                st = MPCL_ERR_FORMAT;
            } else if (zerr != Z_OK) {
                mpcl_strfmt(err, err_len, "%s: read error after %zu bytes: %s", path, b->len - start, msg);
                st = MPCL_ERR_IO;
            }
            break;
        }
        b->len += (size_t)n;
        if (b->len > TEXT_MAX_BYTES) {
            mpcl_strfmt(err, err_len, "%s: the text is longer than %zu bytes", path, TEXT_MAX_BYTES);
            st = MPCL_ERR_FORMAT;
            break;
        }
        size_hint = 0;
    }
    gzclose(f);
    if (st == MPCL_OK && b->len == start) {
        mpcl_strfmt(err, err_len, "%s: byte 0: the file is empty", path);
        st = MPCL_ERR_FORMAT;
    }
    return st;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* Reads a directory's text files in name order into b. */
static mpcl_status append_dir(const char *dir, text_buf *b, size_t *files, char *err, size_t err_len)
{
    DIR *d = opendir(dir);
    if (!d) {
        mpcl_strfmt(err, err_len, "%s: cannot read the directory: %s", dir, strerror(errno));
        return MPCL_ERR_IO;
    }
    char **names = NULL;
    size_t count = 0, cap = 0;
    mpcl_status st = MPCL_OK;
    char path[MPCL_PATH_LEN];
    struct dirent *e;
    for (errno = 0; (e = readdir(d)) != NULL; errno = 0) {
        const char *name = e->d_name;
        if (name[0] == '.' || ends_with(name, ".dat"))
            continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
            mpcl_strfmt(err, err_len, "%s: the path of its file %s is longer than %d bytes", dir, name,
                        MPCL_PATH_LEN - 1);
            st = MPCL_ERR_IO;
            break;
        }
        struct stat sb;
        if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (count == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **p = realloc(names, ncap * sizeof *names);
            if (!p) {
                st = MPCL_ERR_NOMEM;
                break;
            }
            names = p;
            cap = ncap;
        }
        names[count] = strdup(name);
        if (!names[count]) {
            st = MPCL_ERR_NOMEM;
            break;
        }
        count++;
    }
    if (st == MPCL_OK && errno) {
        mpcl_strfmt(err, err_len, "%s: cannot read the directory: %s", dir, strerror(errno));
        st = MPCL_ERR_IO;
    }
    closedir(d);
    if (st == MPCL_ERR_NOMEM)
        mpcl_strfmt(err, err_len, "%s: out of host memory for the list of its files", dir);
    if (st == MPCL_OK && count == 0) {
        mpcl_strfmt(err, err_len, "%s: the directory has no text files (regular files, not hidden, "
                                  "not ending in .dat)", dir);
        st = MPCL_ERR_FORMAT;
    }
    if (st == MPCL_OK)
        qsort(names, count, sizeof *names, cmp_names);
    for (size_t i = 0; st == MPCL_OK && i < count; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat sb;
        if (lstat(path, &sb) != 0) {
            mpcl_strfmt(err, err_len, "%s: cannot open: %s", path, strerror(errno));
            st = MPCL_ERR_IO;
            break;
        }
        st = append_file(path, (size_t)sb.st_size, b, err, err_len);
    }
    *files = st == MPCL_OK ? count : 0;
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    return st;
}

void mpcl_text_free(mpcl_text *t)
{
    if (!t)
        return;
    free(t->bytes);
    memset(t, 0, sizeof *t);
}

mpcl_status mpcl_text_load(const char *path, double valid_fraction, size_t context, mpcl_text *out,
                           char *err, size_t err_len)
{
    char dummy[8];
    if (!err || !err_len) {
        err = dummy;
        err_len = sizeof dummy;
    }
    err[0] = '\0';
    if (!out) {
        mpcl_strfmt(err, err_len, "mpcl_text_load: out must not be NULL");
        return MPCL_ERR_ARGUMENT;
    }
    memset(out, 0, sizeof *out);
    if (valid_fraction != 0 && !(valid_fraction > 0 && valid_fraction < 1)) {
        mpcl_strfmt(err, err_len, "mpcl_text_load: valid_fraction %g is outside (0, 1) (0: the default %g)",
                    valid_fraction, TEXT_DEFAULT_VALID);
        return MPCL_ERR_ARGUMENT;
    }
    if (valid_fraction == 0)
        valid_fraction = TEXT_DEFAULT_VALID;
    int is_default = !path || !*path;
    if (is_default)
        path = MPCL_DEFAULT_TEXT_DIR;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        mpcl_strfmt(err, err_len, "%s: cannot open: %s%s", path, strerror(errno),
                    is_default ? " (the default text, Debian's fortunes: install the package "
                                 "fortunes-min or fortunes, or give a path)"
                               : "");
        return MPCL_ERR_IO;
    }
    text_buf b = {0};
    mpcl_status st;
    if (S_ISDIR(sb.st_mode)) {
        st = append_dir(path, &b, &out->files, err, err_len);
    } else if (S_ISREG(sb.st_mode)) {
        st = append_file(path, (size_t)sb.st_size, &b, err, err_len);
        out->files = 1;
    } else {
        mpcl_strfmt(err, err_len, "%s: not a regular file or a directory", path);
        st = MPCL_ERR_IO;
    }
    if (st == MPCL_OK) {
        size_t size = b.len;
        size_t valid = (size_t)((double)size * valid_fraction + 0.5); /* round half up */
        if (valid > size)
            valid = size;
        size_t train = size - valid;
        if (train <= context || valid <= context) {
            mpcl_strfmt(err, err_len,
                        "%s: %zu bytes of text are too short for the context %zu: the training part "
                        "has %zu bytes and the validation part %zu (valid_fraction %g), and each "
                        "needs at least context + 1 = %zu",
                        path, size, context, train, valid, valid_fraction,
                        context == (size_t)-1 ? context : context + 1);
            st = MPCL_ERR_FORMAT;
        } else {
            out->size = size;
            out->train_size = train;
        }
    }
    if (st != MPCL_OK) {
        free(b.data);
        memset(out, 0, sizeof *out);
        return st;
    }
    /* give back the slack of the growing buffer (keeping it when that fails) */
    uint8_t *shrunk = realloc(b.data, b.len);
    out->bytes = shrunk ? shrunk : b.data;
    snprintf(out->source, sizeof out->source, "%s", path);
    return MPCL_OK;
}

const uint8_t *mpcl_text_part(const mpcl_text *t, mpcl_text_split split, size_t *size)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    if (t && t->bytes && t->train_size <= t->size) {
        if (split == MPCL_TEXT_TRAIN) {
            p = t->bytes;
            n = t->train_size;
        } else if (split == MPCL_TEXT_VALID) {
            p = t->bytes + t->train_size;
            n = t->size - t->train_size;
        }
    }
    if (size)
        *size = n;
    return p;
}

/* Checks the common arguments of the batch calls; the part's bytes and size. */
static const uint8_t *batch_part(const mpcl_text *t, mpcl_text_split split, size_t b, size_t T,
                                 const int32_t *tokens, const int32_t *targets, size_t *size)
{
    if (!tokens || !targets || b == 0 || T == 0 || b > SIZE_MAX / T)
        return NULL;
    return mpcl_text_part(t, split, size);
}

/* Window i of step `step` starts at
 *     mpcl_mix64(seed ^ mpcl_mix64(step ^ mpcl_mix64(i + 0x5851f42d4c957f2d))) % (size - T)
 * (size: the part's bytes), a position in [0, size - T - 1], so that its
 * last target, byte start + T, is in the part. The modulo's bias is below
 * (size - T) / 2^64: nothing for any text that fits in memory. */
mpcl_status mpcl_text_batch(const mpcl_text *t, mpcl_text_split split, uint64_t seed, uint64_t step,
                            size_t b, size_t T, int32_t *tokens, int32_t *targets)
{
    size_t size = 0;
    const uint8_t *part = batch_part(t, split, b, T, tokens, targets, &size);
    if (!part || size <= T)
        return MPCL_ERR_ARGUMENT;
    uint64_t range = (uint64_t)(size - T);
    for (size_t i = 0; i < b; i++) {
        uint64_t h = mpcl_mix64(seed ^ mpcl_mix64(step ^ mpcl_mix64((uint64_t)i + 0x5851f42d4c957f2dULL)));
        const uint8_t *w = part + (size_t)(h % range);
        int32_t *tok = tokens + i * T, *tgt = targets + i * T;
        for (size_t j = 0; j < T; j++) {
            tok[j] = w[j];
            tgt[j] = w[j + 1];
        }
    }
    return MPCL_OK;
}

size_t mpcl_text_windows(const mpcl_text *t, mpcl_text_split split, size_t T)
{
    size_t size = 0;
    if (T == 0 || !mpcl_text_part(t, split, &size) || size == 0)
        return 0;
    return (size - 1) / T;
}

mpcl_status mpcl_text_window_batch(const mpcl_text *t, mpcl_text_split split, size_t first, size_t b,
                                   size_t T, int32_t *tokens, int32_t *targets)
{
    size_t size = 0;
    const uint8_t *part = batch_part(t, split, b, T, tokens, targets, &size);
    if (!part)
        return MPCL_ERR_ARGUMENT;
    size_t windows = mpcl_text_windows(t, split, T);
    if (first >= windows || b > windows - first)
        return MPCL_ERR_ARGUMENT;
    for (size_t i = 0; i < b; i++) {
        const uint8_t *w = part + (first + i) * T;
        int32_t *tok = tokens + i * T, *tgt = targets + i * T;
        for (size_t j = 0; j < T; j++) {
            tok[j] = w[j];
            tgt[j] = w[j + 1];
        }
    }
    return MPCL_OK;
}
