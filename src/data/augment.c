/* augment.c — random crops and mirror images for the training batches,
 * and the --augment option's text.
 *
 * Every random choice of an image is one 64-bit hash of (seed, epoch,
 * image index), splitmix64's mixing function applied in a chain: no state
 * carries from one image to the next, so an image looks the same whichever
 * batch (or batch position) it lands in, and a batch made again after a
 * resume is the same bytes. Host code only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define GOLDEN 0x9e3779b97f4a7c15ULL
/* Keeps these draws apart from other users of the same seed (the shuffle). */
#define AUGMENT_DOMAIN 0x61756d656e74ULL /* "augment" */

static uint64_t image_hash(uint64_t seed, uint64_t epoch, uint64_t index)
{
    uint64_t h = mpcl_mix64(seed + GOLDEN * AUGMENT_DOMAIN);
    h = mpcl_mix64(h + GOLDEN * (epoch + 1));
    return mpcl_mix64(h + GOLDEN * (index + 1));
}

/* A value in [0, n) from 24 bits of the hash (n <= 2 * MPCL_AUGMENT_MAX_PAD + 1). */
static size_t below(uint64_t bits24, size_t n)
{
    return (size_t)((bits24 * (uint64_t)n) >> 24);
}

/* One image: out(c, y, x) = padded(c, y + dy, xx + dx), xx = flip ? w-1-x : x,
 * where padded(c, Y, X) = in(c, Y - pad, X - pad) inside the image, else 0. */
static void augment_one(uint8_t *dst, const uint8_t *src, size_t c, size_t h, size_t w, size_t pad,
                        size_t dy, size_t dx, int flip)
{
    for (size_t ch = 0; ch < c; ch++) {
        const uint8_t *in = src + ch * h * w;
        uint8_t *out = dst + ch * h * w;
        for (size_t y = 0; y < h; y++) {
            uint8_t *row = out + y * w;
            /* source row y + dy - pad, which may lie in the padding */
            if (y + dy < pad || y + dy - pad >= h) {
                memset(row, 0, w);
                continue;
            }
            const uint8_t *srow = in + (y + dy - pad) * w;
            /* columns x whose source column x + dx - pad is inside: [x0, x1) */
            size_t x0 = dx < pad ? pad - dx : 0;
            size_t x1 = w + pad > dx ? w + pad - dx : 0;
            if (x1 > w)
                x1 = w;
            if (x0 >= x1) {
                memset(row, 0, w);
                continue;
            }
            if (!flip) {
                memset(row, 0, x0);
                memcpy(row + x0, srow + x0 + dx - pad, x1 - x0);
                memset(row + x1, 0, w - x1);
            } else {
                /* the unflipped crop's column x lands at w-1-x */
                for (size_t x = 0; x < w; x++)
                    row[w - 1 - x] = x >= x0 && x < x1 ? srow[x + dx - pad] : 0;
            }
        }
    }
}

void mpcl_augment_gather(uint8_t *dst, const uint8_t *src, const size_t *src_index, size_t n,
                         size_t c, size_t h, size_t w, const mpcl_augment_options *o, uint64_t seed,
                         uint64_t epoch)
{
    size_t sample = c * h * w;
    int pad = o && o->pad > 0 ? o->pad : 0, flip = o && o->flip;
    if (pad > MPCL_AUGMENT_MAX_PAD)
        pad = MPCL_AUGMENT_MAX_PAD;
    if (!dst || !src || !src_index || sample == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *in = src + src_index[i] * sample;
        uint8_t *out = dst + i * sample;
        if (!pad && !flip) {
            memcpy(out, in, sample);
            continue;
        }
        uint64_t r = image_hash(seed, epoch, src_index[i]);
        size_t span = 2 * (size_t)pad + 1;
        size_t dy = below(r & 0xffffff, span), dx = below((r >> 24) & 0xffffff, span);
        int mirror = flip && (r >> 63);
        augment_one(out, in, c, h, w, (size_t)pad, dy, dx, mirror);
    }
}

mpcl_status mpcl_augment_parse(const char *text, mpcl_augment_options *out, char *err, size_t err_len)
{
    char dummy[8];
    if (!err || !err_len) {
        err = dummy;
        err_len = sizeof dummy;
    }
    err[0] = '\0';
    if (!text || !out) {
        mpcl_strfmt(err, err_len, "mpcl_augment_parse: text and out must not be NULL");
        return MPCL_ERR_ARGUMENT;
    }
    mpcl_augment_options o = {0, 0};
    if (strcmp(text, "none") == 0) {
        *out = o;
        return MPCL_OK;
    }
    int have_crop = 0;
    const char *p = text;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 4 && strncmp(p, "flip", 4) == 0 && !o.flip) {
            o.flip = 1;
        } else if (len >= 4 && strncmp(p, "crop", 4) == 0 && !have_crop) {
            unsigned long v = 4;
            if (len > 4) {
                v = 0;
                for (size_t i = 4; i < len && v <= MPCL_AUGMENT_MAX_PAD; i++) {
                    if (p[i] < '0' || p[i] > '9' || (i == 4 && p[i] == '0')) {
                        v = 0;
                        break;
                    }
                    v = v * 10 + (unsigned long)(p[i] - '0');
                }
            }
            if (v < 1 || v > MPCL_AUGMENT_MAX_PAD) {
                mpcl_strfmt(err, err_len, "'%.*s' in '%s': a crop's padding is 1..%d pixels "
                                          "(cropN, e.g. crop4)",
                            (int)len, p, text, MPCL_AUGMENT_MAX_PAD);
                return MPCL_ERR_ARGUMENT;
            }
            o.pad = (int)v;
            have_crop = 1;
        } else {
            int repeated = (len == 4 && strncmp(p, "flip", 4) == 0) ||
                           (len >= 4 && strncmp(p, "crop", 4) == 0);
            mpcl_strfmt(err, err_len, "'%.*s' in '%s': %s; it accepts 'none' or a comma-separated "
                                      "list of cropN (N = 1..%d pixels of padding; crop = crop4) "
                                      "and flip, e.g. crop4,flip",
                        (int)len, p, text, repeated ? "given twice" : "not an augmentation",
                        MPCL_AUGMENT_MAX_PAD);
            return MPCL_ERR_ARGUMENT;
        }
        if (!end)
            break;
        p = end + 1;
    }
    *out = o;
    return MPCL_OK;
}

char *mpcl_augment_format(const mpcl_augment_options *o, char *dst, size_t len)
{
    if (!dst || !len)
        return dst;
    int pad = o && o->pad > 0 ? o->pad : 0, flip = o && o->flip;
    if (!pad && !flip)
        snprintf(dst, len, "none");
    else if (pad && flip)
        snprintf(dst, len, "crop%d,flip", pad);
    else if (pad)
        snprintf(dst, len, "crop%d", pad);
    else
        snprintf(dst, len, "flip");
    return dst;
}
