/* data/pgm.c — images in the Netpbm formats: grey PGM (P5 binary, P2 text)
 * and colour PPM (P6 binary, P3 text; stored as three channel planes).
 *
 * Netpbm's own library reports errors by exiting the process, which a
 * library must never do, so this small strict reader is mpcl's own.
 * Host code only. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PGM_MAX_SIDE 16384

typedef struct {
    const uint8_t *p, *end, *start;
    const char *path;
    char *err;
    size_t len;
} reader;

static mpcl_status bad(reader *r, const char *fmt, ...) MPCL_PRINTF(2, 3);
static mpcl_status bad(reader *r, const char *fmt, ...)
{
    if (r->err && r->len) {
        int n = snprintf(r->err, r->len, "%s: byte %zu: ", r->path, (size_t)(r->p - r->start));
        va_list ap;
        va_start(ap, fmt);
        if (n >= 0 && (size_t)n < r->len)
            vsnprintf(r->err + n, r->len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return MPCL_ERR_FORMAT;
}

/* Skips white space and '#' comments. */
static void skip_space(reader *r)
{
    while (r->p < r->end) {
        if (*r->p == '#') {
            while (r->p < r->end && *r->p != '\n')
                r->p++;
        } else if (isspace(*r->p)) {
            r->p++;
        } else {
            break;
        }
    }
}

/* A decimal number after optional white space and comments. */
static int number(reader *r, unsigned long max, unsigned long *out)
{
    skip_space(r);
    if (r->p >= r->end || !isdigit(*r->p))
        return 0;
    unsigned long v = 0;
    while (r->p < r->end && isdigit(*r->p)) {
        v = v * 10 + (unsigned long)(*r->p++ - '0');
        if (v > max)
            return 0;
    }
    *out = v;
    return 1;
}

/* A PGM (P5, P2) or, with colour, a PPM (P6, P3) image. */
static mpcl_status parse(reader *r, mpcl_idx *out, int colour)
{
    char m = r->end - r->p >= 2 && r->p[0] == 'P' ? (char)r->p[1] : 0;
    int is_pgm = m == '5' || m == '2', is_ppm = m == '6' || m == '3';
    if (is_ppm && !colour)
        return bad(r, "a colour PPM image (magic 'P%c'), not a grey PGM image; this reader "
                      "takes P5 or P2 only (mpcl_image_load reads both)", m);
    if (!is_pgm && !is_ppm)
        return colour ? bad(r, "not a PGM image (magic 'P5' or 'P2') nor a PPM image ('P6' or "
                               "'P3')")
                      : bad(r, "not a PGM image (expected the magic 'P5' or 'P2')");
    int binary = m == '5' || m == '6';
    size_t ch = is_ppm ? 3 : 1;
    const char *what = is_ppm ? "value" : "grey value";
    r->p += 2;
    unsigned long w, h, maxval;
    if (!number(r, PGM_MAX_SIDE, &w) || w == 0)
        return bad(r, "expected the width, 1..%d", PGM_MAX_SIDE);
    if (!number(r, PGM_MAX_SIDE, &h) || h == 0)
        return bad(r, "expected the height, 1..%d", PGM_MAX_SIDE);
    if (!number(r, 65535, &maxval) || maxval == 0)
        return bad(r, "expected the maximum %s, 1..65535", what);
    size_t n = (size_t)w * h, bps = maxval > 255 ? 2 : 1;
    uint8_t *px = malloc(n * ch);
    if (!px)
        return bad(r, "out of host memory for %lu x %lu pixels", w, h);
    mpcl_status s = MPCL_OK;
    if (binary) {
        /* exactly one white-space byte after maxval, then the raster */
        if (r->p >= r->end || !isspace(*r->p)) {
            free(px);
            return bad(r, "expected one white-space byte before the pixels");
        }
        r->p++;
        if ((size_t)(r->end - r->p) < n * ch * bps) {
            s = bad(r, "%lu x %lu pixels need %zu bytes, the file has %zu (truncated?)", w, h,
                    n * ch * bps, (size_t)(r->end - r->p));
            free(px);
            return s;
        }
    }
    /* samples in file order: pixel by pixel, red, green, blue in a PPM;
     * stored channel-major: sample c of pixel i goes to plane c */
    for (size_t i = 0; i < n; i++) {
        for (size_t c = 0; c < ch; c++) {
            unsigned long v;
            if (binary) {
                v = bps == 2 ? (unsigned long)r->p[0] << 8 | r->p[1] : r->p[0];
                r->p += bps;
            } else if (!number(r, 65535, &v)) {
                free(px);
                return ch == 1 ? bad(r, "expected pixel %zu of %zu (truncated?)", i + 1, n)
                               : bad(r, "expected value %zu of pixel %zu of %zu (truncated?)", c + 1,
                                     i + 1, n);
            }
            if (v > maxval) {
                free(px);
                return bad(r, "pixel %zu is %lu, above the maximum %s %lu", i + 1, v, what, maxval);
            }
            px[c * n + i] = (uint8_t)((v * 255 + maxval / 2) / maxval);
        }
    }
    out->data = px;
    out->ndim = 3;
    out->count = 1;
    out->channels = ch;
    out->rows = h;
    out->cols = w;
    return MPCL_OK;
}

static mpcl_status load(const char *path, mpcl_idx *out, char *err, size_t err_len, int colour)
{
    if (!path || !out)
        return MPCL_ERR_ARGUMENT;
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && err_len)
            snprintf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return MPCL_ERR_IO;
    }
    /* the largest image this reader takes: 16384^2 pixels of 3 two-byte values and a header */
    size_t cap = 1 << 16, used = 0;
    uint8_t *buf = malloc(cap);
    mpcl_status s = buf ? MPCL_OK : MPCL_ERR_NOMEM;
    while (s == MPCL_OK) {
        if (used == cap) {
            if (cap >= ((size_t)6 * PGM_MAX_SIDE * PGM_MAX_SIDE + 4096)) {
                if (err && err_len)
                    snprintf(err, err_len, "%s: larger than the largest image mpcl reads", path);
                s = MPCL_ERR_FORMAT;
                break;
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                s = MPCL_ERR_NOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + used, 1, cap - used, f);
        used += got;
        if (got == 0) {
            if (ferror(f)) {
                if (err && err_len)
                    snprintf(err, err_len, "%s: read failed: %s", path, strerror(errno));
                s = MPCL_ERR_IO;
            }
            break;
        }
    }
    fclose(f);
    if (s == MPCL_ERR_NOMEM && err && err_len)
        snprintf(err, err_len, "%s: out of host memory", path);
    if (s == MPCL_OK) {
        reader r = {buf, buf + used, buf, path, err, err_len};
        s = parse(&r, out, colour);
    }
    free(buf);
    return s;
}

mpcl_status mpcl_pgm_load(const char *path, mpcl_idx *out, char *err, size_t err_len)
{
    return load(path, out, err, err_len, 0);
}

mpcl_status mpcl_image_load(const char *path, mpcl_idx *out, char *err, size_t err_len)
{
    return load(path, out, err, err_len, 1);
}
