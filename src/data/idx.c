/* idx.c — IDX files (idx1 labels / idx3 images, unsigned byte), plain or
 * gzip-compressed (zlib reads both), and data set directories: MNIST-style
 * ones here, CIFAR-10's binary version in cifar.c.
 * Host code only: no OpenCL, so it can be tested and fuzzed alone.
 *
 * Layout: u32 magic (0x00000801 or 0x00000803, big-endian), then one u32
 * size per dimension (big-endian), then the bytes, row-major. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zlib.h>

#include "internal.h"

#define IDX_MAX_BYTES ((size_t)1 << 31) /* 2 GiB: far above any IDX data set */

void mpcl_idx_free(mpcl_idx *idx)
{
    if (!idx)
        return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}

size_t mpcl_idx_sample_bytes(const mpcl_idx *idx)
{
    if (!idx || idx->ndim != 3)
        return 1;
    return (idx->channels ? idx->channels : 1) * idx->rows * idx->cols;
}

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Reads exactly len bytes unless the file ends; returns the count read, or -1. */
static long read_full(gzFile f, unsigned char *dst, size_t len)
{
    size_t got = 0;
    while (got < len) {
        unsigned chunk = (unsigned)((len - got) > (1u << 30) ? (1u << 30) : (len - got));
        int n = gzread(f, dst + got, chunk);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (long)got;
}

mpcl_status mpcl_idx_load(const char *path, mpcl_idx *out, char *err, size_t err_len)
{
    char dummy[8];
    if (!err || !err_len) {
        err = dummy;
        err_len = sizeof dummy;
    }
    err[0] = '\0';
    if (!path || !out) {
        mpcl_strfmt(err, err_len, "mpcl_idx_load: path and out must not be NULL");
        return MPCL_ERR_ARGUMENT;
    }
    memset(out, 0, sizeof *out);
    gzFile f = gzopen(path, "rb");
    if (!f) {
        mpcl_strfmt(err, err_len, "%s: cannot open: %s", path, errno ? strerror(errno) : "zlib error");
        return MPCL_ERR_IO;
    }
    mpcl_status st = MPCL_ERR_FORMAT;
    unsigned char head[16];
    long n = read_full(f, head, 4);
    int zerr = 0;
    if (n < 0) {
        mpcl_strfmt(err, err_len, "%s: read error at byte 0: %s", path, gzerror(f, &zerr));
        goto fail;
    }
    if (n < 4) {
        mpcl_strfmt(err, err_len, "%s: file ends at byte %ld, inside the 4-byte IDX magic", path, n);
        goto fail;
    }
    uint32_t magic = be32(head);
    int ndim = (int)(magic & 0xff), type = (int)((magic >> 8) & 0xff);
    if ((magic >> 16) != 0 || type != 0x08 || (ndim != 1 && ndim != 3)) {
        mpcl_strfmt(err, err_len,
                    "%s: byte 0: magic 0x%08x is not an unsigned-byte IDX file with 1 or 3 "
                    "dimensions (expected 0x00000801 or 0x00000803)%s",
                    path, magic,
                    (head[0] == 0x1f && head[1] == 0x8b) ? " (the gzip stream is damaged)" : "");
        goto fail;
    }
    n = read_full(f, head + 4, (size_t)ndim * 4);
    if (n < 0 || n < ndim * 4) {
        mpcl_strfmt(err, err_len, "%s: file ends at byte %ld, inside the %d dimension sizes", path,
                    4 + (n < 0 ? 0 : n), ndim);
        goto fail;
    }
    size_t dims[3] = {1, 1, 1}, total = 1;
    for (int i = 0; i < ndim; i++) {
        dims[i] = be32(head + 4 + 4 * i);
        if (dims[i] == 0) {
            mpcl_strfmt(err, err_len, "%s: byte %d: dimension %d is 0", path, 4 + 4 * i, i);
            goto fail;
        }
        if (total > IDX_MAX_BYTES / dims[i]) {
            mpcl_strfmt(err, err_len, "%s: byte %d: the dimensions ask for more than %zu bytes", path,
                        4 + 4 * i, IDX_MAX_BYTES);
            goto fail;
        }
        total *= dims[i];
    }
    size_t header = 4 + (size_t)ndim * 4;
    /* The buffer grows with what the file really holds (doubling from
     * 1 MiB up to the announced size): a short or damaged file that
     * announces gigabytes fails at its end without asking for them. */
    size_t cap = total + 1 < ((size_t)1 << 20) ? total + 1 : ((size_t)1 << 20);
    size_t got = 0;
    for (;;) {
        unsigned char *grown = realloc(out->data, cap);
        if (!grown) {
            mpcl_strfmt(err, err_len, "%s: out of host memory for %zu bytes", path, cap);
            st = MPCL_ERR_NOMEM;
            goto fail;
        }
        out->data = grown;
        n = read_full(f, out->data + got, cap - got); /* total + 1: detects trailing bytes */
        if (n < 0) {
            mpcl_strfmt(err, err_len, "%s: read error after byte %zu: %s", path, header + got,
                        gzerror(f, &zerr));
            goto fail;
        }
        got += (size_t)n;
        if (got < cap || cap == total + 1)
            break;
        cap = cap > (total + 1) / 2 ? total + 1 : 2 * cap;
    }
    n = (long)got;
    if ((size_t)n < total) {
        mpcl_strfmt(err, err_len, "%s: file ends at byte %zu, but the header announces %zu data bytes (up to byte %zu)",
                    path, header + (size_t)n, total, header + total);
        goto fail;
    }
    if ((size_t)n > total) {
        mpcl_strfmt(err, err_len, "%s: unexpected data after byte %zu, where the announced %zu data bytes end",
                    path, header + total, total);
        goto fail;
    }
    /* gzread gives what it has of a cut gzip stream and keeps Z_BUF_ERROR
     * for gzerror: the data is all there, but the stream's end (its CRC
     * and length) is missing */
    gzerror(f, &zerr);
    if (zerr == Z_BUF_ERROR) {
        mpcl_strfmt(err, err_len, "%s: the gzip stream is truncated after the %zu data bytes (its CRC and "
                    "length are missing)", path, total);
        goto fail;
    }
    gzclose(f);
    out->ndim = ndim;
    out->count = dims[0];
    out->rows = ndim == 3 ? dims[1] : 0;
    out->cols = ndim == 3 ? dims[2] : 0;
    out->channels = ndim == 3 ? 1 : 0; /* IDX images are grey */
    return MPCL_OK;
fail:
    gzclose(f);
    mpcl_idx_free(out);
    return st;
}

static const char *FASHION_CLASSES[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
static const char *DIGIT_CLASSES[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* Finds <dir>/<stem>[-.]idx?-ubyte[.gz] under the usual spellings. */
static int find_part(const char *dir, const char *stem, int nd, char *dst, size_t len)
{
    static const char *const forms[] = {"%s/%s-idx%d-ubyte.gz", "%s/%s-idx%d-ubyte", "%s/%s.idx%d-ubyte.gz",
                                  "%s/%s.idx%d-ubyte"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        snprintf(dst, len, forms[i], dir, stem, nd);
        if (file_exists(dst))
            return 1;
    }
    snprintf(dst, len, forms[0], dir, stem, nd);
    return 0;
}

static mpcl_status load_pair(const char *dir, const char *stem_img, const char *stem_lab,
                             mpcl_idx *img, mpcl_idx *lab, char *err, size_t err_len)
{
    char pi[MPCL_PATH_LEN], pl[MPCL_PATH_LEN];
    if (!find_part(dir, stem_img, 3, pi, sizeof pi) || !find_part(dir, stem_lab, 1, pl, sizeof pl)) {
        mpcl_strfmt(err, err_len, "%s: missing %s (looked for %s-idx3-ubyte[.gz] and %s-idx1-ubyte[.gz])",
                    dir, file_exists(pi) ? pl : pi, stem_img, stem_lab);
        return MPCL_ERR_IO;
    }
    mpcl_status s = mpcl_idx_load(pi, img, err, err_len);
    if (s == MPCL_OK && img->ndim != 3) {
        mpcl_strfmt(err, err_len, "%s: byte 0: an image file must have 3 dimensions, this one has %d", pi,
                    img->ndim);
        s = MPCL_ERR_FORMAT;
    }
    if (s == MPCL_OK)
        s = mpcl_idx_load(pl, lab, err, err_len);
    if (s == MPCL_OK && lab->ndim != 1) {
        mpcl_strfmt(err, err_len, "%s: byte 0: a label file must have 1 dimension, this one has %d", pl,
                    lab->ndim);
        s = MPCL_ERR_FORMAT;
    }
    if (s == MPCL_OK && lab->count != img->count) {
        mpcl_strfmt(err, err_len, "%s has %zu labels but %s has %zu images", pl, lab->count, pi, img->count);
        s = MPCL_ERR_FORMAT;
    }
    for (size_t i = 0; s == MPCL_OK && i < lab->count; i++)
        if (lab->data[i] >= MPCL_DATASET_CLASSES) {
            mpcl_strfmt(err, err_len, "%s: byte %zu: label %u is outside 0..%d", pl, 8 + i, lab->data[i],
                        MPCL_DATASET_CLASSES - 1);
            s = MPCL_ERR_FORMAT;
        }
    return s;
}

mpcl_status mpcl_dataset_load(const char *dir, mpcl_dataset *out, char *err, size_t err_len)
{
    char dummy[8];
    if (!err || !err_len) {
        err = dummy;
        err_len = sizeof dummy;
    }
    err[0] = '\0';
    if (!out) {
        mpcl_strfmt(err, err_len, "mpcl_dataset_load: out must not be NULL");
        return MPCL_ERR_ARGUMENT;
    }
    memset(out, 0, sizeof *out);
    int is_default = !dir || !*dir;
    if (is_default)
        dir = MPCL_DEFAULT_DATA_DIR;
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        mpcl_strfmt(err, err_len, "%s: no such data directory%s", dir,
                    is_default ? " (the default Fashion-MNIST; install the Debian package "
                                 "dataset-fashion-mnist, or give --data DIR)"
                               : "");
        return MPCL_ERR_IO;
    }
    /* CIFAR-10's binary version: the directory itself, or the one its archive extracts to */
    char cifar[MPCL_PATH_LEN];
    snprintf(cifar, sizeof cifar, "%s/data_batch_1.bin", dir);
    if (file_exists(cifar))
        return mpcl_cifar10_load(dir, out, err, err_len);
    snprintf(cifar, sizeof cifar, "%s/cifar-10-batches-bin/data_batch_1.bin", dir);
    if (file_exists(cifar)) {
        snprintf(cifar, sizeof cifar, "%s/cifar-10-batches-bin", dir);
        return mpcl_cifar10_load(cifar, out, err, err_len);
    }
    mpcl_status s = load_pair(dir, "train-images", "train-labels", &out->train_images,
                              &out->train_labels, err, err_len);
    if (s == MPCL_ERR_IO && strstr(err, ": missing ")) {
        size_t used = strlen(err);
        mpcl_strfmt(err + used, err_len - used, "; nor is it a CIFAR-10 binary directory "
                                                "(data_batch_1.bin ... and test_batch.bin)");
    }
    if (s == MPCL_OK)
        s = load_pair(dir, "t10k-images", "t10k-labels", &out->test_images, &out->test_labels, err,
                      err_len);
    if (s == MPCL_OK && (out->test_images.rows != out->train_images.rows ||
                         out->test_images.cols != out->train_images.cols)) {
        mpcl_strfmt(err, err_len, "%s: test images are %zux%zu but training images %zux%zu", dir,
                    out->test_images.rows, out->test_images.cols, out->train_images.rows,
                    out->train_images.cols);
        s = MPCL_ERR_FORMAT;
    }
    if (s != MPCL_OK) {
        mpcl_dataset_free(out);
        return s;
    }
    /* Fashion-MNIST's classes when the directory says so, else digits. */
    const char **names = DIGIT_CLASSES;
    out->name = "MNIST";
    for (const char *p = dir; *p; p++)
        if (strncasecmp(p, "fashion", 7) == 0) {
            names = FASHION_CLASSES;
            out->name = "Fashion-MNIST";
        }
    for (int i = 0; i < MPCL_DATASET_CLASSES; i++)
        out->class_names[i] = names[i];
    out->format = MPCL_DATASET_IDX;
    return MPCL_OK;
}

void mpcl_dataset_free(mpcl_dataset *d)
{
    if (!d)
        return;
    mpcl_idx_free(&d->train_images);
    mpcl_idx_free(&d->train_labels);
    mpcl_idx_free(&d->test_images);
    mpcl_idx_free(&d->test_labels);
}
