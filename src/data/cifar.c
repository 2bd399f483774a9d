/* cifar.c — CIFAR-10's binary version (cifar-10-binary.tar.gz, which
 * extracts to cifar-10-batches-bin/): data_batch_1.bin ... data_batch_5.bin
 * and test_batch.bin, 10000 records each. Host code only.
 *
 * A record is 3073 bytes: one label byte (0..9), then 3072 pixel bytes: the
 * 1024 red values of the 32x32 image row by row, then the 1024 green, then
 * the 1024 blue. That is channel-major (C, H, W) already, the layout of the
 * model's input, so the bytes are kept as they are. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define CIFAR_SIDE 32
#define CIFAR_CHANNELS 3
#define CIFAR_PIXELS (CIFAR_CHANNELS * CIFAR_SIDE * CIFAR_SIDE) /* 3072 */
#define CIFAR_RECORD (1 + CIFAR_PIXELS)                         /* 3073 */
#define CIFAR_MAX_BYTES ((size_t)1 << 31) /* 2 GiB of records in all: far above CIFAR-10's 184 MB */

static const char *CIFAR10_CLASSES[MPCL_DATASET_CLASSES] = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};

/* One batch file: its path and size (known before anything is read). */
typedef struct {
    char path[MPCL_PATH_LEN];
    size_t bytes;
} part;

/* Checks that path is a readable, non-empty whole number of records. */
static mpcl_status measure(const char *path, part *p, char *err, size_t err_len)
{
    snprintf(p->path, sizeof p->path, "%s", path);
    FILE *f = fopen(path, "rb");
    if (!f) {
        mpcl_strfmt(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return MPCL_ERR_IO;
    }
    struct stat st;
    int ok = fstat(fileno(f), &st) == 0;
    int e = errno;
    fclose(f);
    if (!ok) {
        mpcl_strfmt(err, err_len, "%s: cannot read its size: %s", path, strerror(e));
        return MPCL_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        mpcl_strfmt(err, err_len, "%s: not a regular file", path);
        return MPCL_ERR_IO;
    }
    size_t bytes = (size_t)st.st_size;
    if (bytes == 0) {
        mpcl_strfmt(err, err_len, "%s: byte 0: the file is empty (a CIFAR-10 batch is %d-byte "
                                  "records: a label byte and %d pixel bytes)",
                    path, CIFAR_RECORD, CIFAR_PIXELS);
        return MPCL_ERR_FORMAT;
    }
    if (bytes % CIFAR_RECORD) {
        size_t whole = bytes / CIFAR_RECORD;
        mpcl_strfmt(err, err_len, "%s: %zu bytes is not a whole number of %d-byte records: %zu "
                                  "record%s and %zu byte%s from offset %zu (a truncated file?)",
                    path, bytes, CIFAR_RECORD, whole, whole == 1 ? "" : "s", bytes % CIFAR_RECORD,
                    bytes % CIFAR_RECORD == 1 ? "" : "s", whole * CIFAR_RECORD);
        return MPCL_ERR_FORMAT;
    }
    p->bytes = bytes;
    return MPCL_OK;
}

/* Reads the records of the measured files into images and labels. */
static mpcl_status read_parts(const part *parts, size_t nparts, mpcl_idx *img, mpcl_idx *lab,
                              char *err, size_t err_len)
{
    size_t total = 0;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].bytes > CIFAR_MAX_BYTES - total) {
            mpcl_strfmt(err, err_len, "%s: the batch files hold more than %zu bytes in all",
                        parts[i].path, CIFAR_MAX_BYTES);
            return MPCL_ERR_FORMAT;
        }
        total += parts[i].bytes;
    }
    size_t count = total / CIFAR_RECORD;
    img->data = malloc(count * CIFAR_PIXELS);
    lab->data = malloc(count);
    if (!img->data || !lab->data) {
        mpcl_strfmt(err, err_len, "%s: out of host memory for %zu records", parts[0].path, count);
        return MPCL_ERR_NOMEM;
    }
    uint8_t rec[CIFAR_RECORD];
    size_t at = 0;
    for (size_t i = 0; i < nparts; i++) {
        const char *path = parts[i].path;
        FILE *f = fopen(path, "rb");
        if (!f) {
            mpcl_strfmt(err, err_len, "%s: cannot open: %s", path, strerror(errno));
            return MPCL_ERR_IO;
        }
        size_t n = parts[i].bytes / CIFAR_RECORD;
        for (size_t r = 0; r < n; r++, at++) {
            size_t got = fread(rec, 1, sizeof rec, f);
            if (got != sizeof rec) {
                int failed = ferror(f);
                if (failed)
                    mpcl_strfmt(err, err_len, "%s: read error at byte %zu: %s", path,
                                r * CIFAR_RECORD + got, strerror(errno));
                else
                    mpcl_strfmt(err, err_len, "%s: the file ends at byte %zu, inside record %zu "
                                              "(it shrank while being read?)",
                                path, r * CIFAR_RECORD + got, r);
                fclose(f);
                return failed ? MPCL_ERR_IO : MPCL_ERR_FORMAT;
            }
            if (rec[0] >= MPCL_DATASET_CLASSES) {
                mpcl_strfmt(err, err_len, "%s: byte %zu: record %zu has label %u, outside 0..%d",
                            path, r * CIFAR_RECORD, r, rec[0], MPCL_DATASET_CLASSES - 1);
                fclose(f);
                return MPCL_ERR_FORMAT;
            }
            lab->data[at] = rec[0];
            memcpy(img->data + at * CIFAR_PIXELS, rec + 1, CIFAR_PIXELS);
        }
        fclose(f);
    }
    img->ndim = 3;
    img->count = count;
    img->channels = CIFAR_CHANNELS;
    img->rows = img->cols = CIFAR_SIDE;
    lab->ndim = 1;
    lab->count = count;
    return MPCL_OK;
}

/* lstat: a dangling link named like a batch is that batch, unreadable. */
static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

mpcl_status mpcl_cifar10_load(const char *dir, mpcl_dataset *out, char *err, size_t err_len)
{
    char dummy[8];
    if (!err || !err_len) {
        err = dummy;
        err_len = sizeof dummy;
    }
    err[0] = '\0';
    if (!dir || !out) {
        mpcl_strfmt(err, err_len, "mpcl_cifar10_load: dir and out must not be NULL");
        return MPCL_ERR_ARGUMENT;
    }
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        mpcl_strfmt(err, err_len, "%s: no such data directory", dir);
        return MPCL_ERR_IO;
    }
    /* data_batch_1.bin, data_batch_2.bin, ... while they exist */
    enum { MAX_PARTS = 64 };
    part *parts = calloc(MAX_PARTS, sizeof *parts);
    if (!parts) {
        mpcl_strfmt(err, err_len, "%s: out of host memory", dir);
        return MPCL_ERR_NOMEM;
    }
    mpcl_status s = MPCL_OK;
    size_t nparts = 0;
    char path[MPCL_PATH_LEN];
    for (int i = 1; i <= MAX_PARTS && s == MPCL_OK; i++) {
        snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, i);
        if (i > 1 && !exists(path))
            break;
        s = measure(path, &parts[nparts], err, err_len);
        if (s == MPCL_ERR_IO && i == 1 && !exists(path))
            mpcl_strfmt(err, err_len, "%s: missing data_batch_1.bin (a CIFAR-10 binary directory "
                                      "has data_batch_1.bin ... data_batch_5.bin and test_batch.bin)",
                        dir);
        nparts += s == MPCL_OK;
    }
    part test;
    if (s == MPCL_OK) {
        snprintf(path, sizeof path, "%s/test_batch.bin", dir);
        if (!exists(path)) {
            mpcl_strfmt(err, err_len, "%s: missing test_batch.bin (a CIFAR-10 binary directory has "
                                      "data_batch_1.bin ... data_batch_5.bin and test_batch.bin)",
                        dir);
            s = MPCL_ERR_IO;
        } else {
            s = measure(path, &test, err, err_len);
        }
    }
    if (s == MPCL_OK)
        s = read_parts(parts, nparts, &out->train_images, &out->train_labels, err, err_len);
    if (s == MPCL_OK)
        s = read_parts(&test, 1, &out->test_images, &out->test_labels, err, err_len);
    free(parts);
    if (s != MPCL_OK) {
        mpcl_dataset_free(out);
        return s;
    }
    for (int i = 0; i < MPCL_DATASET_CLASSES; i++)
        out->class_names[i] = CIFAR10_CLASSES[i];
    out->format = MPCL_DATASET_CIFAR10;
    out->name = "CIFAR-10";
    return MPCL_OK;
}
