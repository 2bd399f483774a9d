/* io/safetensors.c — safetensors reading (validated) and atomic writing. */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

static const struct {
    const char *name;
    size_t size;
} DTYPES[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},     [ST_I8] = {"I8", 1},
    [ST_U16] = {"U16", 2},   [ST_I16] = {"I16", 2},   [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_U32] = {"U32", 4},   [ST_I32] = {"I32", 4},
    [ST_F32] = {"F32", 4},   [ST_U64] = {"U64", 8},   [ST_I64] = {"I64", 8},
    [ST_F64] = {"F64", 8},   [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *st_dtype_name(st_dtype d) { return (unsigned)d < ST_DTYPE_COUNT ? DTYPES[d].name : "?"; }
size_t st_dtype_size(st_dtype d) { return (unsigned)d < ST_DTYPE_COUNT ? DTYPES[d].size : 0; }

static mpcl_status fail(char *err, size_t len, mpcl_status s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static mpcl_status fail(char *err, size_t len, mpcl_status s, const char *fmt, ...)
{
    if (err && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
    }
    return s;
}

void st_free(st_file *f)
{
    if (!f)
        return;
    free(f->bytes);
    free(f->tensors);
    for (size_t i = 0; i < 2 * f->nmeta; i++)
        free(f->meta[i]);
    free(f->meta);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key)
{
    for (size_t i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[2 * i], key) == 0)
            return f->meta[2 * i + 1];
    return NULL;
}

/* A JSON number that is a whole number in [0, 2^53]. */
static int json_u64(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0) || floor(d) != d)
        return 0;
    *out = (uint64_t)d;
    return 1;
}

static int cmp_begin(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static mpcl_status parse_entry(const char *path, const cJSON *e, st_tensor *t, char *err,
                               size_t len)
{
    const char *name = e->string;
    if (strlen(name) >= ST_MAX_NAME)
        return fail(err, len, MPCL_ERR_FORMAT, "%s: tensor name '%.40s...' is longer than %d bytes",
                    path, name, ST_MAX_NAME - 1);
    snprintf(t->name, sizeof t->name, "%s", name);
    if (!cJSON_IsObject(e))
        return fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': expected an object with dtype, "
                                               "shape and data_offsets", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': no \"dtype\" string", path, name);
    int d = -1;
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(dt->valuestring, DTYPES[i].name) == 0)
            d = i;
    if (d < 0)
        return fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", path,
                    name, dt->valuestring);
    t->dtype = (st_dtype)d;
    if (!cJSON_IsArray(sh))
        return fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': no \"shape\" array", path, name);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_NDIM)
        return fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': %d dimensions; mpcl reads at "
                                               "most %d", path, name, nd, ST_MAX_NDIM);
    t->ndim = nd;
    /* numel x size must not overflow: track it in 128-bit-safe steps */
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < nd; i++) {
        if (!json_u64(cJSON_GetArrayItem(sh, i), &t->shape[i]))
            return fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a "
                                                   "non-negative integer", path, name, i);
        if (t->shape[i] && numel > UINT64_MAX / t->shape[i])
            overflow = 1;
        else
            numel *= t->shape[i];
    }
    t->numel = numel;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !json_u64(cJSON_GetArrayItem(off, 0), &t->begin) ||
        !json_u64(cJSON_GetArrayItem(off, 1), &t->end))
        return fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be "
                                               "[begin, end] with non-negative integers", path, name);
    if (t->end < t->begin)
        return fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end "
                                               "before they begin", path, name,
                    (unsigned long long)t->begin, (unsigned long long)t->end);
    size_t es = DTYPES[d].size;
    if (overflow || numel > UINT64_MAX / es || numel * es != t->end - t->begin)
        return fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] hold "
                                               "%llu bytes, but a %s tensor of that shape needs "
                                               "%s%llu", path, name,
                    (unsigned long long)t->begin, (unsigned long long)t->end,
                    (unsigned long long)(t->end - t->begin), DTYPES[d].name,
                    overflow || numel > UINT64_MAX / es ? "more than " : "",
                    overflow || numel > UINT64_MAX / es ? (unsigned long long)UINT64_MAX
                                                        : (unsigned long long)(numel * es));
    return MPCL_OK;
}

static mpcl_status parse_meta(const char *path, const cJSON *m, st_file *f, char *err, size_t len)
{
    if (!cJSON_IsObject(m))
        return fail(err, len, MPCL_ERR_FORMAT, "%s: \"__metadata__\" must be an object of strings",
                    path);
    size_t n = (size_t)cJSON_GetArraySize(m);
    f->meta = calloc(2 * n + 1, sizeof *f->meta);
    if (!f->meta)
        return fail(err, len, MPCL_ERR_NOMEM, "%s: out of host memory for the metadata", path);
    for (const cJSON *kv = m->child; kv; kv = kv->next) {
        if (!cJSON_IsString(kv))
            return fail(err, len, MPCL_ERR_FORMAT, "%s: metadata '%.64s' is not a string", path,
                        kv->string);
        f->meta[2 * f->nmeta] = strdup(kv->string);
        f->meta[2 * f->nmeta + 1] = strdup(kv->valuestring);
        f->nmeta++;
        if (!f->meta[2 * f->nmeta - 2] || !f->meta[2 * f->nmeta - 1])
            return fail(err, len, MPCL_ERR_NOMEM, "%s: out of host memory for the metadata", path);
    }
    return MPCL_OK;
}

static mpcl_status parse_header(st_file *f, const char *hdr, uint64_t hlen, char *err, size_t len)
{
    const char *path = f->path;
    /* the reference requires an object: '{' first */
    if (hlen == 0 || hdr[0] != '{')
        return fail(err, len, MPCL_ERR_FORMAT, "%s: the header at byte 8 does not start with "
                                               "'{' (not a safetensors file?)", path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        uint64_t pos = at && at >= hdr && at <= hdr + hlen ? (uint64_t)(at - hdr) : 0;
        return fail(err, len, MPCL_ERR_FORMAT, "%s: the JSON header is not valid near byte %llu "
                                               "of the file", path,
                    (unsigned long long)(8 + pos));
    }
    mpcl_status s = MPCL_OK;
    /* after the object only the padding spaces the writers add */
    for (const char *p = end; p && p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\0' && *p != '\n' && *p != '\t' && *p != '\r') {
            s = fail(err, len, MPCL_ERR_FORMAT, "%s: unexpected bytes after the JSON header at "
                                                "byte %llu", path,
                     (unsigned long long)(8 + (uint64_t)(p - hdr)));
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        s = fail(err, len, MPCL_ERR_FORMAT, "%s: the header is not a JSON object", path);
        goto out;
    }
    size_t n = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        n += strcmp(e->string, "__metadata__") != 0;
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors) {
        s = fail(err, len, MPCL_ERR_NOMEM, "%s: out of host memory for the header", path);
        goto out;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (f->meta) {
                s = fail(err, len, MPCL_ERR_FORMAT, "%s: two \"__metadata__\" entries", path);
                goto out;
            }
            s = parse_meta(path, e, f, err, len);
        } else {
            if (st_find(f, e->string)) {
                s = fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%.64s' appears twice", path,
                         e->string);
                goto out;
            }
            s = parse_entry(path, e, &f->tensors[f->count], err, len);
            f->count++;
        }
        if (s != MPCL_OK)
            goto out;
    }
out:
    cJSON_Delete(root);
    return s;
}

/* Offsets inside the data region, no overlap, no gap. */
static mpcl_status check_layout(st_file *f, char *err, size_t len)
{
    if (f->count == 0)
        return f->data_len == 0 ? MPCL_OK
                                : fail(err, len, MPCL_ERR_FORMAT, "%s: no tensors, but %llu bytes "
                                                                  "of data", f->path,
                                       (unsigned long long)f->data_len);
    const st_tensor **by = malloc(f->count * sizeof *by);
    if (!by)
        return fail(err, len, MPCL_ERR_NOMEM, "%s: out of host memory", f->path);
    for (size_t i = 0; i < f->count; i++)
        by[i] = &f->tensors[i];
    qsort(by, f->count, sizeof *by, cmp_begin);
    mpcl_status s = MPCL_OK;
    uint64_t at = 0;
    for (size_t i = 0; i < f->count && s == MPCL_OK; i++) {
        const st_tensor *t = by[i];
        if (t->end > f->data_len)
            s = fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] run "
                                                "past the end of the data (%llu bytes; the file "
                                                "is %llu bytes, truncated?)", f->path, t->name,
                     (unsigned long long)t->begin, (unsigned long long)t->end,
                     (unsigned long long)f->data_len, (unsigned long long)f->size);
        else if (t->begin < at)
            s = fail(err, len, MPCL_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] "
                                                "overlap tensor '%s'", f->path, t->name,
                     (unsigned long long)t->begin, (unsigned long long)t->end, by[i - 1]->name);
        else if (t->begin > at)
            s = fail(err, len, MPCL_ERR_FORMAT, "%s: %llu unused bytes of data before tensor '%s' "
                                                "(at data offset %llu)", f->path,
                     (unsigned long long)(t->begin - at), t->name, (unsigned long long)at);
        at = t->end > at ? t->end : at;
    }
    if (s == MPCL_OK && at != f->data_len)
        s = fail(err, len, MPCL_ERR_FORMAT, "%s: %llu bytes after the last tensor's data (at byte "
                                            "%llu)", f->path, (unsigned long long)(f->data_len - at),
                 (unsigned long long)(f->size - (f->data_len - at)));
    free(by);
    return s;
}

mpcl_status st_parse(const uint8_t *buf, uint64_t size, const char *path, st_file *out, char *err,
                     size_t len)
{
    memset(out, 0, sizeof *out);
    snprintf(out->path, sizeof out->path, "%s", path ? path : "(buffer)");
    if (size < 8)
        return fail(err, len, MPCL_ERR_FORMAT, "%s: %llu bytes is too short for a safetensors file "
                                               "(the header length alone is 8 bytes)", out->path,
                    (unsigned long long)size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen > size - 8)
        return fail(err, len, MPCL_ERR_FORMAT, "%s: the header length %llu at byte 0 runs past the "
                                               "end of the file (%llu bytes; truncated, or not a "
                                               "safetensors file)", out->path,
                    (unsigned long long)hlen, (unsigned long long)size);
    if (hlen > ST_MAX_HEADER)
        return fail(err, len, MPCL_ERR_FORMAT, "%s: the header length %llu at byte 0 is over the "
                                               "format's limit of %u bytes", out->path,
                    (unsigned long long)hlen, ST_MAX_HEADER);
    out->bytes = malloc(size ? size : 1);
    if (!out->bytes)
        return fail(err, len, MPCL_ERR_NOMEM, "%s: out of host memory for %llu bytes", out->path,
                    (unsigned long long)size);
    memcpy(out->bytes, buf, size);
    out->size = size;
    out->data = out->bytes + 8 + hlen;
    out->data_len = size - 8 - hlen;
    mpcl_status s = parse_header(out, (const char *)out->bytes + 8, hlen, err, len);
    if (s == MPCL_OK)
        s = check_layout(out, err, len);
    if (s != MPCL_OK)
        st_free(out);
    return s;
}

mpcl_status st_read(const char *path, st_file *out, char *err, size_t len)
{
    memset(out, 0, sizeof *out);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return fail(err, len, MPCL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        fclose(fp);
        return fail(err, len, MPCL_ERR_IO, "%s: not a regular file%s%s", path, e ? ": " : "",
                    e ? strerror(e) : "");
    }
    uint64_t size = (uint64_t)sb.st_size;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        fclose(fp);
        return fail(err, len, MPCL_ERR_NOMEM, "%s: out of host memory for %llu bytes", path,
                    (unsigned long long)size);
    }
    size_t got = fread(buf, 1, size, fp);
    int rerr = ferror(fp);
    fclose(fp);
    mpcl_status s;
    if (rerr || got != size)
        s = fail(err, len, MPCL_ERR_IO, "%s: read %zu of %llu bytes%s%s", path, got,
                 (unsigned long long)size, rerr ? ": " : "", rerr ? strerror(errno) : "");
    else
        s = st_parse(buf, size, path, out, err, len);
    free(buf);
    return s;
}

/* ------------------------------------------------------------- writing */

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static char *build_header(const st_entry *e, size_t n, const char *const *meta, size_t nmeta,
                          uint64_t *data_len)
{
    cJSON *root = cJSON_CreateObject();
    int ok = root != NULL;
    if (ok && nmeta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        ok = m != NULL;
        for (size_t i = 0; ok && i < nmeta; i++)
            ok = cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1]) != NULL;
    }
    uint64_t at = 0;
    for (size_t i = 0; ok && i < n; i++) {
        cJSON *t = cJSON_AddObjectToObject(root, e[i].name);
        ok = t && cJSON_AddStringToObject(t, "dtype", st_dtype_name(e[i].dtype));
        cJSON *sh = ok ? cJSON_AddArrayToObject(t, "shape") : NULL;
        uint64_t numel = 1;
        ok = ok && sh;
        for (int d = 0; ok && d < e[i].ndim; d++) {
            cJSON *v = cJSON_CreateNumber((double)e[i].shape[d]);
            ok = v && cJSON_AddItemToArray(sh, v);
            numel *= e[i].shape[d];
        }
        uint64_t bytes = numel * st_dtype_size(e[i].dtype);
        cJSON *off = ok ? cJSON_AddArrayToObject(t, "data_offsets") : NULL;
        cJSON *b0 = cJSON_CreateNumber((double)at), *b1 = cJSON_CreateNumber((double)(at + bytes));
        ok = ok && off && b0 && b1 && cJSON_AddItemToArray(off, b0) && cJSON_AddItemToArray(off, b1);
        if (!ok) {
            cJSON_Delete(b0);
            cJSON_Delete(b1);
        }
        at += bytes;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    *data_len = at;
    return text;
}

static void dir_of(const char *path, char *dst, size_t len)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dst, len, ".");
    else if (slash == path)
        snprintf(dst, len, "/");
    else
        snprintf(dst, len, "%.*s", (int)(slash - path), path);
}

mpcl_status st_write(const char *path, const st_entry *entries, size_t n, const char *const *meta,
                     size_t nmeta, char *err, size_t len)
{
    uint64_t data_len = 0;
    char *hdr = build_header(entries, n, meta, nmeta, &data_len);
    if (!hdr)
        return fail(err, len, MPCL_ERR_NOMEM, "cannot write %s: out of host memory for the header",
                    path);
    size_t hl = strlen(hdr);
    size_t padded = (hl + 7) / 8 * 8; /* the data region starts 8-byte aligned */
    /* A new temporary file beside the target, made with mode 0666 so that
     * the process's umask applies as to any ordinary file (mkstemp's 0600
     * would need the umask read, and changing the umask to read it is not
     * safe while an app's other threads create files). */
    char tmp[4200];
    int fd = -1;
    static unsigned seq;
    for (int attempt = 0; fd < 0 && attempt < 64; attempt++) {
        uint64_t r = ((uint64_t)getpid() << 32) ^ (uint64_t)__atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED) ^
                     ((uint64_t)(uintptr_t)tmp << 7) ^ (uint64_t)attempt * 0x9e3779b97f4a7c15ULL;
        if (snprintf(tmp, sizeof tmp, "%s.tmp-%012llx", path, (unsigned long long)(r & 0xffffffffffffULL)) >=
            (int)sizeof tmp) {
            free(hdr);
            return fail(err, len, MPCL_ERR_ARGUMENT, "cannot write %.200s...: the path is too long", path);
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        int e = errno;
        free(hdr);
        char dir[4096];
        dir_of(path, dir, sizeof dir);
        return fail(err, len, MPCL_ERR_IO, "cannot write %s: cannot create a temporary file in "
                                           "%s: %s", path, dir, strerror(e));
    }
    const char *step = "write";
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int bad = write_all(fd, lenb, 8) || write_all(fd, hdr, hl) ||
              write_all(fd, "        ", padded - hl);
    for (size_t i = 0; !bad && i < n; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < entries[i].ndim; d++)
            numel *= entries[i].shape[d];
        bad = write_all(fd, entries[i].data, (size_t)(numel * st_dtype_size(entries[i].dtype)));
    }
    free(hdr);
    if (!bad) {
        step = "fsync";
        bad = fsync(fd) != 0;
    }
    int e = errno;
    if (close(fd) != 0 && !bad) {
        step = "close";
        bad = 1;
        e = errno;
    }
    if (!bad && rename(tmp, path) != 0) {
        step = "rename";
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(tmp);
        return fail(err, len, MPCL_ERR_IO, "cannot write %s: %s of the temporary file %s failed: "
                                           "%s; the previous %s (if any) is unchanged", path, step,
                    tmp, strerror(e), path);
    }
    /* make the rename itself durable */
    char dir[4096];
    dir_of(path, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    (void)data_len;
    return MPCL_OK;
}
