/* test_data.c — the data readers and batch assembly (host only): IDX files
 * and dataset directories (MNIST layout and CIFAR-10's binary version), PGM
 * and PPM images, written here with known contents, and every defect the
 * readers must name (file and byte offset); augmentation against a
 * reference written here (brute force over every crop), and the prefetch
 * thread against the serial gather. */
#include <check.h>
#include <math.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "testutil.h"

static char *dir;

static void setup(void) { dir = tu_mkdtemp("data"); }
static void teardown(void)
{
    tu_rmtree(dir);
    free(dir);
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Writes an IDX file: magic, dims, then `data_len` bytes of pattern
 * (i * 7 + 3) % mod. gz: gzip-compressed. Returns the path (malloc'ed). */
static char *write_idx(const char *name, uint32_t magic, int ndim, const uint32_t *dims,
                       size_t data_len, unsigned mod, int gz)
{
    size_t len = 4 + 4 * (size_t)ndim + data_len;
    unsigned char *buf = malloc(len);
    ck_assert_ptr_nonnull(buf);
    put32(buf, magic);
    for (int i = 0; i < ndim; i++)
        put32(buf + 4 + 4 * i, dims[i]);
    for (size_t i = 0; i < data_len; i++)
        buf[4 + 4 * ndim + i] = (unsigned char)((i * 7 + 3) % mod);
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(gzwrite(f, buf, (unsigned)len), (int)len);
        gzclose(f);
    } else {
        ck_assert_int_eq(tu_write_file(path, buf, len), 0);
    }
    free(buf);
    return path;
}

static void expect_error(const char *path, mpcl_status want, const char *needle1, const char *needle2)
{
    mpcl_idx idx;
    char err[512];
    mpcl_status s = mpcl_idx_load(path, &idx, err, sizeof err);
    ck_assert_msg(s == want, "status %s, expected %s (%s)", mpcl_status_name(s), mpcl_status_name(want), err);
    ck_assert_msg(strstr(err, path) != NULL, "message does not name the file: %s", err);
    ck_assert_msg(!needle1 || strstr(err, needle1), "message lacks '%s': %s", needle1, err);
    ck_assert_msg(!needle2 || strstr(err, needle2), "message lacks '%s': %s", needle2, err);
    ck_assert_ptr_null(idx.data);
}

START_TEST(reads_plain_and_gzip)
{
    uint32_t dims[3] = {5, 3, 4};
    for (int gz = 0; gz < 2; gz++) {
        char *p = write_idx(gz ? "img.gz" : "img", 0x803, 3, dims, 60, 251, gz);
        mpcl_idx idx;
        char err[256];
        ck_assert_int_eq(mpcl_idx_load(p, &idx, err, sizeof err), MPCL_OK);
        ck_assert_int_eq(idx.ndim, 3);
        ck_assert_uint_eq(idx.count, 5);
        ck_assert_uint_eq(idx.rows, 3);
        ck_assert_uint_eq(idx.cols, 4);
        ck_assert_uint_eq(idx.channels, 1); /* IDX images are grey */
        ck_assert_uint_eq(mpcl_idx_sample_bytes(&idx), 12);
        for (size_t i = 0; i < 60; i++)
            ck_assert_uint_eq(idx.data[i], (i * 7 + 3) % 251);
        mpcl_idx_free(&idx);
        free(p);
    }
    uint32_t n = 9;
    char *p = write_idx("lab", 0x801, 1, &n, 9, 10, 0);
    mpcl_idx idx;
    ck_assert_int_eq(mpcl_idx_load(p, &idx, NULL, 0), MPCL_OK);
    ck_assert_int_eq(idx.ndim, 1);
    ck_assert_uint_eq(idx.count, 9);
    ck_assert_uint_eq(idx.rows, 0);
    ck_assert_uint_eq(idx.channels, 0); /* labels */
    ck_assert_uint_eq(mpcl_idx_sample_bytes(&idx), 1);
    mpcl_idx_free(&idx);
    free(p);
}
END_TEST

START_TEST(rejects_defects_with_offsets)
{
    uint32_t dims[3] = {2, 2, 2};
    char *p;
    p = write_idx("magic", 0x0d03, 3, dims, 8, 256, 0); /* type 0x0d: float, not ubyte */
    expect_error(p, MPCL_ERR_FORMAT, "byte 0", "magic 0x00000d03");
    free(p);
    p = write_idx("ndim2", 0x802, 2, dims, 4, 256, 1);
    expect_error(p, MPCL_ERR_FORMAT, "byte 0", "1 or 3 dimensions");
    free(p);
    p = write_idx("short", 0x803, 3, dims, 5, 256, 1); /* 8 bytes announced, 5 there */
    expect_error(p, MPCL_ERR_FORMAT, "ends at byte 21", "8 data bytes");
    free(p);
    p = write_idx("long", 0x803, 3, dims, 9, 256, 0);
    expect_error(p, MPCL_ERR_FORMAT, "after byte 24", NULL);
    free(p);
    uint32_t zero[3] = {2, 0, 2};
    p = write_idx("zero", 0x803, 3, zero, 0, 256, 0);
    expect_error(p, MPCL_ERR_FORMAT, "byte 8", "dimension 1 is 0");
    free(p);
    uint32_t huge[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu};
    p = write_idx("huge", 0x803, 3, huge, 0, 256, 0);
    expect_error(p, MPCL_ERR_FORMAT, "more than", NULL);
    free(p);
    /* header cut inside the dimensions */
    char path[512];
    snprintf(path, sizeof path, "%s/cut", dir);
    unsigned char cut[6] = {0, 0, 8, 3, 0, 0};
    ck_assert_int_eq(tu_write_file(path, cut, sizeof cut), 0);
    expect_error(path, MPCL_ERR_FORMAT, "dimension sizes", NULL);
    snprintf(path, sizeof path, "%s/empty", dir);
    ck_assert_int_eq(tu_write_file(path, "", 0), 0);
    expect_error(path, MPCL_ERR_FORMAT, "ends at byte 0", NULL);
    snprintf(path, sizeof path, "%s/absent", dir);
    expect_error(path, MPCL_ERR_IO, "cannot open", NULL);
}
END_TEST

/* Files larger than the reader's first buffer (1 MiB) read whole, through
 * the buffer's growth; one byte short or long is still refused; a tiny file
 * that announces 1.5 GB fails at its end (its buffer grows only with what
 * the file holds). */
START_TEST(large_files_grow_the_buffer)
{
    uint32_t dims[3] = {3, 700, 1000}; /* 2.1 MB: 1 MiB, 2 MiB, then all */
    const size_t total = 3u * 700u * 1000u;
    for (int gz = 0; gz < 2; gz++) {
        char *p = write_idx(gz ? "big.gz" : "big", 0x803, 3, dims, total, 253, gz);
        mpcl_idx idx;
        char err[256];
        ck_assert_msg(mpcl_idx_load(p, &idx, err, sizeof err) == MPCL_OK, "%s", err);
        ck_assert_uint_eq(idx.count * mpcl_idx_sample_bytes(&idx), total);
        for (size_t i = 0; i < total; i++)
            if (idx.data[i] != (i * 7 + 3) % 253)
                ck_abort_msg("byte %zu is %u, expected %zu", i, idx.data[i], (i * 7 + 3) % 253);
        mpcl_idx_free(&idx);
        free(p);
        p = write_idx(gz ? "short.gz" : "short", 0x803, 3, dims, total - 1, 253, gz);
        expect_error(p, MPCL_ERR_FORMAT, "ends at byte 2100015", "2100000 data bytes");
        free(p);
        p = write_idx(gz ? "long.gz" : "long", 0x803, 3, dims, total + 1, 253, gz);
        expect_error(p, MPCL_ERR_FORMAT, "after byte 2100016", NULL);
        free(p);
    }
    uint32_t huge[3] = {1500, 1000, 1000};
    char *p = write_idx("announces-1.5GB", 0x803, 3, huge, 5, 256, 0);
    expect_error(p, MPCL_ERR_FORMAT, "ends at byte 21", "1500000000 data bytes");
    free(p);
}
END_TEST

static void write_dataset(unsigned label_mod, uint32_t test_count_labels)
{
    uint32_t tr[3] = {12, 4, 3}, te[3] = {6, 4, 3}, ntr = 12, nte = test_count_labels;
    free(write_idx("train-images-idx3-ubyte.gz", 0x803, 3, tr, 144, 256, 1));
    free(write_idx("train-labels-idx1-ubyte.gz", 0x801, 1, &ntr, 12, label_mod, 1));
    free(write_idx("t10k-images-idx3-ubyte", 0x803, 3, te, 72, 256, 0));
    free(write_idx("t10k-labels-idx1-ubyte", 0x801, 1, &nte, nte, 10, 0));
}

START_TEST(dataset_directory)
{
    write_dataset(10, 6);
    mpcl_dataset d;
    char err[512];
    ck_assert_int_eq(mpcl_dataset_load(dir, &d, err, sizeof err), MPCL_OK);
    ck_assert_uint_eq(d.train_images.count, 12);
    ck_assert_uint_eq(d.test_labels.count, 6);
    ck_assert_str_eq(d.class_names[0], "0"); /* not a fashion directory: digits */
    ck_assert_int_eq(d.format, MPCL_DATASET_IDX);
    ck_assert_str_eq(d.name, "MNIST");
    ck_assert_uint_eq(d.train_images.channels, 1);
    mpcl_dataset_free(&d);
}
END_TEST

START_TEST(dataset_defects)
{
    mpcl_dataset d;
    char err[512];
    write_dataset(13, 6); /* labels (i*7+3) % 13 reach 10..12 */
    ck_assert_int_eq(mpcl_dataset_load(dir, &d, err, sizeof err), MPCL_ERR_FORMAT);
    ck_assert_msg(strstr(err, "train-labels-idx1-ubyte.gz: byte 9: label 10 is outside 0..9"), "%s", err);
    write_dataset(10, 5); /* 5 test labels for 6 images */
    ck_assert_int_eq(mpcl_dataset_load(dir, &d, err, sizeof err), MPCL_ERR_FORMAT);
    ck_assert_msg(strstr(err, "has 5 labels but") && strstr(err, "has 6 images"), "%s", err);
    char p[512];
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", dir);
    remove(p);
    ck_assert_int_eq(mpcl_dataset_load(dir, &d, err, sizeof err), MPCL_ERR_IO);
    ck_assert_msg(strstr(err, "missing") && strstr(err, "t10k-images"), "%s", err);
    snprintf(p, sizeof p, "%s/nope", dir);
    ck_assert_int_eq(mpcl_dataset_load(p, &d, err, sizeof err), MPCL_ERR_IO);
    ck_assert_msg(strstr(err, "no such data directory"), "%s", err);
}
END_TEST

/* The embedded default: Debian's dataset-fashion-mnist (installed by
 * tools/install-deps.sh). */
START_TEST(default_fashion_mnist)
{
    mpcl_dataset d;
    char err[512];
    mpcl_status s = mpcl_dataset_load(NULL, &d, err, sizeof err);
    if (s == MPCL_ERR_IO && strstr(err, "dataset-fashion-mnist")) {
        printf("default data missing (message names the package): %s\n", err);
        return;
    }
    ck_assert_msg(s == MPCL_OK, "%s", err);
    ck_assert_uint_eq(d.train_images.count, 60000);
    ck_assert_uint_eq(d.test_images.count, 10000);
    ck_assert_uint_eq(d.train_images.rows, 28);
    ck_assert_uint_eq(d.train_images.cols, 28);
    ck_assert_str_eq(d.class_names[9], "Ankle boot");
    /* every class appears 6000 times in the training set (a known fact of the data) */
    size_t counts[10] = {0};
    for (size_t i = 0; i < d.train_labels.count; i++)
        counts[d.train_labels.data[i]]++;
    for (int c = 0; c < 10; c++)
        ck_assert_uint_eq(counts[c], 6000);
    mpcl_dataset_free(&d);
}
END_TEST


/* ------------------------------------------------------------- CIFAR-10 */

#define REC 3073 /* a CIFAR-10 record: label byte + 3 x 32 x 32 pixel bytes */

/* The known bytes of record r of batch file f (test_batch: f = 0). */
static unsigned char cifar_label(int f, size_t r) { return (unsigned char)((f * 7 + r) % 10); }
static unsigned char cifar_pixel(int f, size_t r, size_t j)
{
    return (unsigned char)((size_t)f * 31 + r * 13 + j * 7 + j / 1024);
}

static char *path_in(const char *d, const char *name)
{
    char *p = malloc(strlen(d) + strlen(name) + 2);
    sprintf(p, "%s/%s", d, name);
    return p;
}

/* Writes <d>/<name> with n records of file f, then `extra` stray bytes. */
static char *write_cifar(const char *d, const char *name, int f, size_t n, size_t extra)
{
    size_t len = n * REC + extra;
    unsigned char *buf = malloc(len ? len : 1);
    ck_assert_ptr_nonnull(buf);
    for (size_t r = 0; r < n; r++) {
        buf[r * REC] = cifar_label(f, r);
        for (size_t j = 0; j < REC - 1; j++)
            buf[r * REC + 1 + j] = cifar_pixel(f, r, j);
    }
    memset(buf + n * REC, 0x5a, extra);
    char *p = path_in(d, name);
    ck_assert_int_eq(tu_write_file(p, buf, len), 0);
    free(buf);
    return p;
}

/* data_batch_1..3 (5, 4 and 3 records), a data_batch_5 that is not read
 * (data_batch_4 is missing: only consecutive batches count), test_batch. */
static void write_cifar_dir(const char *d)
{
    free(write_cifar(d, "data_batch_1.bin", 1, 5, 0));
    free(write_cifar(d, "data_batch_2.bin", 2, 4, 0));
    free(write_cifar(d, "data_batch_3.bin", 3, 3, 0));
    free(write_cifar(d, "data_batch_5.bin", 5, 7, 0));
    free(write_cifar(d, "test_batch.bin", 0, 6, 0));
}

static void check_cifar(const mpcl_dataset *ds)
{
    ck_assert_int_eq(ds->format, MPCL_DATASET_CIFAR10);
    ck_assert_str_eq(ds->name, "CIFAR-10");
    ck_assert_str_eq(ds->class_names[0], "airplane");
    ck_assert_str_eq(ds->class_names[3], "cat");
    ck_assert_str_eq(ds->class_names[9], "truck");
    const mpcl_idx *ti = &ds->train_images, *tl = &ds->train_labels;
    ck_assert_int_eq(ti->ndim, 3);
    ck_assert_uint_eq(ti->count, 12);
    ck_assert_uint_eq(ti->channels, 3);
    ck_assert_uint_eq(ti->rows, 32);
    ck_assert_uint_eq(ti->cols, 32);
    ck_assert_uint_eq(mpcl_idx_sample_bytes(ti), 3072);
    ck_assert_int_eq(tl->ndim, 1);
    ck_assert_uint_eq(tl->count, 12);
    ck_assert_uint_eq(tl->channels, 0);
    /* the records in file order: batch 1's, then 2's, then 3's */
    static const int file_of[12] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3};
    static const size_t rec_of[12] = {0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2};
    for (size_t i = 0; i < 12; i++) {
        ck_assert_uint_eq(tl->data[i], cifar_label(file_of[i], rec_of[i]));
        for (size_t j = 0; j < 3072; j++)
            if (ti->data[i * 3072 + j] != cifar_pixel(file_of[i], rec_of[i], j))
                ck_abort_msg("image %zu byte %zu: %u, expected %u", i, j, ti->data[i * 3072 + j],
                             cifar_pixel(file_of[i], rec_of[i], j));
    }
    ck_assert_uint_eq(ds->test_images.count, 6);
    ck_assert_uint_eq(ds->test_images.channels, 3);
    ck_assert_uint_eq(ds->test_labels.count, 6);
    for (size_t i = 0; i < 6; i++) {
        ck_assert_uint_eq(ds->test_labels.data[i], cifar_label(0, i));
        ck_assert_uint_eq(ds->test_images.data[i * 3072 + 2000], cifar_pixel(0, i, 2000));
    }
}

START_TEST(cifar_reads_batches)
{
    write_cifar_dir(dir);
    mpcl_dataset d;
    char err[512];
    ck_assert_msg(mpcl_dataset_load(dir, &d, err, sizeof err) == MPCL_OK, "%s", err);
    check_cifar(&d);
    mpcl_dataset_free(&d);
    ck_assert_msg(mpcl_cifar10_load(dir, &d, err, sizeof err) == MPCL_OK, "%s", err);
    check_cifar(&d);
    mpcl_dataset_free(&d);
    /* the directory the official archive extracts to, given its parent */
    char *parent = path_in(dir, "parent");
    ck_assert_int_eq(mkdir(parent, 0700), 0);
    char *sub = path_in(parent, "cifar-10-batches-bin");
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    write_cifar_dir(sub);
    ck_assert_msg(mpcl_dataset_load(parent, &d, err, sizeof err) == MPCL_OK, "%s", err);
    check_cifar(&d);
    mpcl_dataset_free(&d);
    free(sub);
    free(parent);
}
END_TEST

static void expect_cifar_error(mpcl_status want, const char *needle1, const char *needle2)
{
    mpcl_dataset d;
    char err[512];
    mpcl_status s = mpcl_dataset_load(dir, &d, err, sizeof err);
    ck_assert_msg(s == want, "status %s, expected %s (%s)", mpcl_status_name(s), mpcl_status_name(want),
                  err);
    ck_assert_msg(!needle1 || strstr(err, needle1), "message lacks '%s': %s", needle1, err);
    ck_assert_msg(!needle2 || strstr(err, needle2), "message lacks '%s': %s", needle2, err);
    if (want == MPCL_OK) {
        mpcl_dataset_free(&d);
        return;
    }
    ck_assert_ptr_null(d.train_images.data);
    ck_assert_ptr_null(d.test_labels.data);
}

START_TEST(cifar_defects)
{
    char want[1024];
    write_cifar_dir(dir);
    /* a truncated batch: 10 records and 5 bytes */
    char *p = write_cifar(dir, "data_batch_2.bin", 2, 10, 5);
    snprintf(want, sizeof want, "%s: 30735 bytes is not a whole number of 3073-byte records: 10 "
                                "records and 5 bytes from offset 30730 (a truncated file?)", p);
    expect_cifar_error(MPCL_ERR_FORMAT, want, NULL);
    free(p);
    /* an empty one */
    p = write_cifar(dir, "data_batch_2.bin", 2, 0, 0);
    snprintf(want, sizeof want, "%s: byte 0: the file is empty", p);
    expect_cifar_error(MPCL_ERR_FORMAT, want, NULL);
    free(p);
    free(write_cifar(dir, "data_batch_2.bin", 2, 4, 0));
    /* a label above 9 in record 2 of the test batch */
    p = write_cifar(dir, "test_batch.bin", 0, 6, 0);
    size_t len = 0;
    char *bytes = tu_read_file(p, &len);
    ck_assert_ptr_nonnull(bytes);
    bytes[2 * REC] = 10;
    ck_assert_int_eq(tu_write_file(p, bytes, len), 0);
    free(bytes);
    snprintf(want, sizeof want, "%s: byte 6146: record 2 has label 10, outside 0..9", p);
    expect_cifar_error(MPCL_ERR_FORMAT, want, NULL);
    /* a truncated test batch */
    free(write_cifar(dir, "test_batch.bin", 0, 1, 3000));
    snprintf(want, sizeof want, "%s: 6073 bytes is not a whole number of 3073-byte records: 1 "
                                "record and 3000 bytes from offset 3073", p);
    expect_cifar_error(MPCL_ERR_FORMAT, want, NULL);
    /* no test batch */
    remove(p);
    free(p);
    expect_cifar_error(MPCL_ERR_IO, dir, "missing test_batch.bin");
    free(write_cifar(dir, "test_batch.bin", 0, 6, 0));
    /* unreadable (as root every file is readable: then that part is not checked) */
    p = path_in(dir, "data_batch_3.bin");
    ck_assert_int_eq(chmod(p, 0), 0);
    FILE *f = fopen(p, "rb");
    if (!f) {
        snprintf(want, sizeof want, "%s: cannot open: %s", p, strerror(EACCES));
        expect_cifar_error(MPCL_ERR_IO, want, NULL);
    } else {
        fclose(f);
    }
    chmod(p, 0600);
    free(p);
    /* a dangling link in place of a batch */
    p = path_in(dir, "data_batch_2.bin");
    remove(p);
    ck_assert_int_eq(symlink("no-such-target.bin", p), 0);
    snprintf(want, sizeof want, "%s: cannot open: %s", p, strerror(ENOENT));
    expect_cifar_error(MPCL_ERR_IO, want, NULL);
    remove(p);
    free(write_cifar(dir, "data_batch_2.bin", 2, 4, 0));
    free(p);
    /* mpcl_cifar10_load on a directory without data_batch_1.bin */
    char *empty = path_in(dir, "empty");
    ck_assert_int_eq(mkdir(empty, 0700), 0);
    mpcl_dataset d;
    char err[512];
    ck_assert_int_eq(mpcl_cifar10_load(empty, &d, err, sizeof err), MPCL_ERR_IO);
    ck_assert_msg(strstr(err, empty) && strstr(err, "missing data_batch_1.bin"), "%s", err);
    /* and mpcl_dataset_load's message names both layouts */
    ck_assert_int_eq(mpcl_dataset_load(empty, &d, err, sizeof err), MPCL_ERR_IO);
    ck_assert_msg(strstr(err, "train-images-idx3-ubyte") && strstr(err, "CIFAR-10"), "%s", err);
    free(empty);
    /* the good directory still loads */
    expect_cifar_error(MPCL_OK, NULL, NULL);
}
END_TEST

/* ------------------------------------------------------------ PGM / PPM */

static char *write_text(const char *name, const void *data, size_t len)
{
    char *p = path_in(dir, name);
    ck_assert_int_eq(tu_write_file(p, data, len), 0);
    return p;
}

static void expect_image_error(const char *path, int colour, const char *needle1, const char *needle2)
{
    mpcl_idx im;
    char err[512];
    mpcl_status s = colour ? mpcl_image_load(path, &im, err, sizeof err)
                           : mpcl_pgm_load(path, &im, err, sizeof err);
    ck_assert_msg(s == MPCL_ERR_FORMAT, "status %s (%s)", mpcl_status_name(s), err);
    ck_assert_msg(strstr(err, path) != NULL, "message does not name the file: %s", err);
    ck_assert_msg(!needle1 || strstr(err, needle1), "message lacks '%s': %s", needle1, err);
    ck_assert_msg(!needle2 || strstr(err, needle2), "message lacks '%s': %s", needle2, err);
    ck_assert_ptr_null(im.data);
}

START_TEST(ppm_images)
{
    /* P6, 3 wide x 2 high: pixel (y, x) = (r, g, b) = (10y+x, 100+10y+x, 200+10y+x) */
    unsigned char p6[64];
    int hl = snprintf((char *)p6, sizeof p6, "P6\n# a comment\n3 2\n255\n");
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++)
            for (int c = 0; c < 3; c++)
                p6[hl + (y * 3 + x) * 3 + c] = (unsigned char)(100 * c + 10 * y + x);
    char *path = write_text("a.ppm", p6, (size_t)hl + 18);
    mpcl_idx im;
    char err[512];
    ck_assert_msg(mpcl_image_load(path, &im, err, sizeof err) == MPCL_OK, "%s", err);
    ck_assert_uint_eq(im.count, 1);
    ck_assert_uint_eq(im.channels, 3);
    ck_assert_uint_eq(im.rows, 2);
    ck_assert_uint_eq(im.cols, 3);
    ck_assert_int_eq(im.ndim, 3);
    for (int c = 0; c < 3; c++) /* channel-major planes */
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 3; x++)
                ck_assert_uint_eq(im.data[c * 6 + y * 3 + x], 100 * c + 10 * y + x);
    mpcl_idx_free(&im);
    /* the grey reader refuses it, naming the file */
    expect_image_error(path, 0, "byte 0", "colour PPM");
    free(path);
    /* truncated raster: 18 bytes needed, 10 there */
    path = write_text("cut.ppm", p6, (size_t)hl + 10);
    snprintf(err, sizeof err, "byte %d: 3 x 2 pixels need 18 bytes, the file has 10 (truncated?)", hl);
    expect_image_error(path, 1, err, NULL);
    free(path);
    /* P3 text, maxval 1000: rescaled to 0..255, rounded */
    const char *p3 = "P3 2 1 1000\n0 500 1000   1000 0 2\n";
    path = write_text("t.ppm", p3, strlen(p3));
    ck_assert_msg(mpcl_image_load(path, &im, err, sizeof err) == MPCL_OK, "%s", err);
    ck_assert_uint_eq(im.channels, 3);
    ck_assert_uint_eq(im.cols, 2);
    unsigned want[6] = {0, 255, (500 * 255 + 500) / 1000, 0, 255, (2 * 255 + 500) / 1000};
    for (int i = 0; i < 6; i++)
        ck_assert_uint_eq(im.data[i], want[i]);
    mpcl_idx_free(&im);
    free(path);
    /* P3 cut short, a value above maxval, bad headers */
    const char *p3cut = "P3 2 1 255\n1 2 3 4 5\n";
    path = write_text("tcut.ppm", p3cut, strlen(p3cut));
    expect_image_error(path, 1, "byte 21", "expected value 3 of pixel 2 of 2 (truncated?)");
    free(path);
    const char *p3big = "P3 1 1 100\n1 2 300\n";
    path = write_text("big.ppm", p3big, strlen(p3big));
    expect_image_error(path, 1, "pixel 1 is 300, above the maximum value 100", NULL);
    free(path);
    const char *badw = "P6\nx 2\n255\n";
    path = write_text("badw.ppm", badw, strlen(badw));
    expect_image_error(path, 1, "byte 3", "expected the width");
    free(path);
    const char *badmax = "P6 2 2 70000\n";
    path = write_text("badmax.ppm", badmax, strlen(badmax));
    expect_image_error(path, 1, "expected the maximum value, 1..65535", NULL);
    free(path);
    path = write_text("gif.ppm", "GIF89a", 6);
    expect_image_error(path, 1, "byte 0", "not a PGM image");
    free(path);
    /* P6 with 16-bit values, big-endian: 0x8000 of 65535 is 128 */
    unsigned char p16[32];
    hl = snprintf((char *)p16, sizeof p16, "P6 1 1 65535\n");
    unsigned char px16[6] = {0x80, 0x00, 0xff, 0xff, 0x00, 0x00};
    memcpy(p16 + hl, px16, 6);
    path = write_text("w.ppm", p16, (size_t)hl + 6);
    ck_assert_msg(mpcl_image_load(path, &im, err, sizeof err) == MPCL_OK, "%s", err);
    ck_assert_uint_eq(im.data[0], 128);
    ck_assert_uint_eq(im.data[1], 255);
    ck_assert_uint_eq(im.data[2], 0);
    mpcl_idx_free(&im);
    free(path);
    /* a PGM through both readers: channels 1 */
    const char *p2 = "P2 2 2 255 1 2 3 4\n";
    path = write_text("g.pgm", p2, strlen(p2));
    for (int colour = 0; colour < 2; colour++) {
        mpcl_status s = colour ? mpcl_image_load(path, &im, err, sizeof err)
                               : mpcl_pgm_load(path, &im, err, sizeof err);
        ck_assert_msg(s == MPCL_OK, "%s", err);
        ck_assert_uint_eq(im.channels, 1);
        ck_assert_uint_eq(im.data[3], 4);
        mpcl_idx_free(&im);
    }
    free(path);
}
END_TEST

/* --------------------------------------------------------- augmentation */

/* Random images: n of c x h x w bytes. */
static uint8_t *random_images(size_t n, size_t c, size_t h, size_t w, uint64_t seed)
{
    uint8_t *p = malloc(n * c * h * w);
    ck_assert_ptr_nonnull(p);
    uint64_t st = seed;
    for (size_t i = 0; i < n * c * h * w; i++)
        p[i] = (uint8_t)(tu_rand(&st) >> 56);
    return p;
}

/* The test's own reference: the image zero-padded into a (h+2p) x (w+2p)
 * canvas, the h x w window at (dy, dx) cut out, then mirrored if flip. */
static void reference_crop(uint8_t *out, const uint8_t *in, size_t c, size_t h, size_t w, size_t pad,
                           size_t dy, size_t dx, int flip)
{
    size_t ph = h + 2 * pad, pw = w + 2 * pad;
    uint8_t *canvas = calloc(c * ph * pw, 1);
    ck_assert_ptr_nonnull(canvas);
    for (size_t ch = 0; ch < c; ch++)
        for (size_t y = 0; y < h; y++)
            for (size_t x = 0; x < w; x++)
                canvas[(ch * ph + y + pad) * pw + x + pad] = in[(ch * h + y) * w + x];
    for (size_t ch = 0; ch < c; ch++)
        for (size_t y = 0; y < h; y++)
            for (size_t x = 0; x < w; x++) {
                size_t xs = flip ? w - 1 - x : x;
                out[(ch * h + y) * w + x] = canvas[(ch * ph + y + dy) * pw + xs + dx];
            }
    free(canvas);
}

START_TEST(augment_plain_gather)
{
    const size_t n = 40, c = 3, h = 5, w = 7, sample = c * h * w;
    uint8_t *src = random_images(n, c, h, w, 11);
    size_t idx[6] = {39, 0, 7, 7, 21, 2};
    uint8_t *dst = malloc(6 * sample), *dst2 = malloc(6 * sample);
    mpcl_augment_options none = {0, 0};
    mpcl_augment_gather(dst, src, idx, 6, c, h, w, &none, 1, 1);
    mpcl_augment_gather(dst2, src, idx, 6, c, h, w, NULL, 99, 5);
    for (size_t i = 0; i < 6; i++) {
        ck_assert_int_eq(memcmp(dst + i * sample, src + idx[i] * sample, sample), 0);
        ck_assert_int_eq(memcmp(dst2 + i * sample, src + idx[i] * sample, sample), 0);
    }
    free(src), free(dst), free(dst2);
}
END_TEST

/* Each output is one crop of the padded image at an offset in [0, 2 pad]^2,
 * mirrored or not; every offset occurs and about half are mirrored. */
static void check_crops(size_t c, size_t h, size_t w, int pad, int flip, size_t n)
{
    const size_t sample = c * h * w, span = 2 * (size_t)pad + 1;
    uint8_t *src = random_images(n, c, h, w, 5 + (uint64_t)pad);
    size_t *idx = malloc(n * sizeof *idx);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    uint8_t *dst = malloc(n * sample), *ref = malloc(sample);
    mpcl_augment_options o = {pad, flip};
    mpcl_augment_gather(dst, src, idx, n, c, h, w, &o, 1234, 3);
    size_t flipped = 0, *seen_dy = calloc(span, sizeof *seen_dy), *seen_dx = calloc(span, sizeof *seen_dx);
    for (size_t i = 0; i < n; i++) {
        int found = 0, found_flip = 0;
        size_t fy = 0, fx = 0;
        for (size_t dy = 0; dy < span; dy++)
            for (size_t dx = 0; dx < span; dx++)
                for (int f = 0; f <= flip; f++) {
                    reference_crop(ref, src + i * sample, c, h, w, (size_t)pad, dy, dx, f);
                    if (memcmp(ref, dst + i * sample, sample) == 0) {
                        found++;
                        found_flip = f;
                        fy = dy, fx = dx;
                    }
                }
        ck_assert_msg(found == 1, "image %zu: %d crops of the padded image match its output", i, found);
        flipped += (size_t)found_flip;
        seen_dy[fy]++;
        seen_dx[fx]++;
    }
    for (size_t k = 0; k < span; k++)
        ck_assert_msg(seen_dy[k] > 0 && seen_dx[k] > 0, "offset %zu never drawn (pad %d)", k, pad);
    if (flip)
        ck_assert_msg(flipped >= n * 35 / 100 && flipped <= n * 65 / 100, "%zu of %zu mirrored",
                      flipped, n);
    else
        ck_assert_uint_eq(flipped, 0);
    free(src), free(idx), free(dst), free(ref), free(seen_dy), free(seen_dx);
}

START_TEST(augment_crops_and_flips)
{
    check_crops(3, 7, 9, 3, 1, 1000); /* odd sizes, colour */
    check_crops(1, 6, 5, 2, 0, 200);  /* crops alone */
}
END_TEST

START_TEST(augment_flip_only_and_large_pad)
{
    /* flip alone: the image or its mirror */
    check_crops(2, 4, 6, 0, 1, 400);
    /* padding wider than the image: crops may be mostly zeros, still in range */
    const size_t c = 1, h = 3, w = 2, sample = c * h * w;
    uint8_t *src = random_images(1, c, h, w, 3);
    for (size_t i = 0; i < sample; i++)
        src[i] |= 1; /* no zero pixels: a crop's zeros are padding */
    size_t idx[64];
    for (size_t i = 0; i < 64; i++)
        idx[i] = 0;
    uint8_t out[64 * 6], ref[6];
    mpcl_augment_options o = {5, 1};
    for (uint64_t e = 0; e < 8; e++) {
        mpcl_augment_gather(out, src, idx, 1, c, h, w, &o, 7, e);
        int found = 0;
        for (size_t dy = 0; dy <= 10; dy++)
            for (size_t dx = 0; dx <= 10; dx++)
                for (int f = 0; f < 2; f++) {
                    reference_crop(ref, src, c, h, w, 5, dy, dx, f);
                    found += memcmp(ref, out, sample) == 0;
                }
        ck_assert_msg(found >= 1, "epoch %d: the output is no crop of the padded image", (int)e);
    }
    free(src);
}
END_TEST

START_TEST(augment_deterministic)
{
    const size_t n = 64, c = 3, h = 8, w = 8, sample = c * h * w;
    uint8_t *src = random_images(n, c, h, w, 21);
    size_t idx[64];
    for (size_t i = 0; i < n; i++)
        idx[i] = (i * 37) % n;
    uint8_t *a = malloc(n * sample), *b = malloc(n * sample), *e2 = malloc(n * sample),
            *s2 = malloc(n * sample);
    mpcl_augment_options o = {2, 1};
    mpcl_augment_gather(a, src, idx, n, c, h, w, &o, 42, 1);
    mpcl_augment_gather(b, src, idx, n, c, h, w, &o, 42, 1);
    ck_assert_int_eq(memcmp(a, b, n * sample), 0); /* same seed, epoch, indices: same bytes */
    mpcl_augment_gather(e2, src, idx, n, c, h, w, &o, 42, 2);
    mpcl_augment_gather(s2, src, idx, n, c, h, w, &o, 43, 1);
    size_t diff_epoch = 0, diff_seed = 0;
    for (size_t i = 0; i < n; i++) {
        diff_epoch += memcmp(a + i * sample, e2 + i * sample, sample) != 0;
        diff_seed += memcmp(a + i * sample, s2 + i * sample, sample) != 0;
    }
    /* 25 offsets x 2: an image looks the same in two draws 1 time in 50 */
    ck_assert_msg(diff_epoch > n / 2, "epoch 2 changed only %zu of %zu images", diff_epoch, n);
    ck_assert_msg(diff_seed > n / 2, "another seed changed only %zu of %zu images", diff_seed, n);
    /* image k alone, or at position 5 of another batch: the same bytes */
    for (size_t k = 0; k < n; k += 9) {
        size_t one = k, batch[8] = {3, 1, 4, 1, 5, k, 9, 2};
        uint8_t *alone = malloc(sample), *in_batch = malloc(8 * sample);
        mpcl_augment_gather(alone, src, &one, 1, c, h, w, &o, 42, 1);
        mpcl_augment_gather(in_batch, src, batch, 8, c, h, w, &o, 42, 1);
        ck_assert_int_eq(memcmp(alone, in_batch + 5 * sample, sample), 0);
        /* and the same as in the first batch (position (k * 37^-1) mod 64 there) */
        for (size_t i = 0; i < n; i++)
            if (idx[i] == k)
                ck_assert_int_eq(memcmp(alone, a + i * sample, sample), 0);
        free(alone), free(in_batch);
    }
    free(src), free(a), free(b), free(e2), free(s2);
}
END_TEST

START_TEST(augment_parse_and_format)
{
    static const struct {
        const char *text;
        int pad, flip;
        const char *canonical;
    } good[] = {
        {"none", 0, 0, "none"},          {"crop4,flip", 4, 1, "crop4,flip"},
        {"flip,crop2", 2, 1, "crop2,flip"}, {"crop", 4, 0, "crop4"},
        {"flip", 0, 1, "flip"},          {"crop64", 64, 0, "crop64"},
    };
    char err[256], text[64];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        mpcl_augment_options o = {9, 9};
        ck_assert_msg(mpcl_augment_parse(good[i].text, &o, err, sizeof err) == MPCL_OK, "%s: %s",
                      good[i].text, err);
        ck_assert_int_eq(o.pad, good[i].pad);
        ck_assert_int_eq(o.flip, good[i].flip);
        ck_assert_str_eq(mpcl_augment_format(&o, text, sizeof text), good[i].canonical);
        mpcl_augment_options back;
        ck_assert_int_eq(mpcl_augment_parse(text, &back, NULL, 0), MPCL_OK);
        ck_assert(back.pad == o.pad && back.flip == o.flip);
    }
    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"crop0", "'crop0'"},  {"crop65", "1..64"},          {"blur", "'blur' in 'blur'"},
        {"flip,flip", "given twice"}, {"crop4,", "'' in 'crop4,'"}, {"", "not an augmentation"},
        {"crop4x", "'crop4x'"}, {"none,flip", "'none'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mpcl_augment_options o;
        ck_assert_int_eq(mpcl_augment_parse(bad[i].text, &o, err, sizeof err), MPCL_ERR_ARGUMENT);
        ck_assert_msg(strstr(err, bad[i].needle), "'%s': message lacks '%s': %s", bad[i].text,
                      bad[i].needle, err);
    }
}
END_TEST

/* ------------------------------------------------------------- prefetch */

/* The training loop's pattern (submit the next batch, then step on this
 * one) over two epochs: every batch equals the serial gather's bytes. */
static void check_prefetch(const mpcl_augment_options *o)
{
    const size_t n = 203, c = 3, h = 8, w = 6, sample = c * h * w, batch = 16;
    uint8_t *src = random_images(n, c, h, w, 77);
    uint8_t labels[203];
    for (size_t i = 0; i < n; i++)
        labels[i] = (uint8_t)(i * 7 % 10);
    mpcl_prefetch *pf = NULL;
    ck_assert_int_eq(mpcl_prefetch_create(src, labels, n, c, h, w, batch, o, 5, &pf), MPCL_OK);
    size_t order[203];
    uint8_t *serial = malloc(batch * sample);
    for (uint64_t epoch = 1; epoch <= 2; epoch++) {
        uint64_t st = epoch;
        for (size_t i = 0; i < n; i++)
            order[i] = i;
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)(tu_rand(&st) % i), t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        size_t steps = (n + batch - 1) / batch;
        ck_assert_int_eq(mpcl_prefetch_submit(pf, order, batch, epoch), MPCL_OK);
        for (size_t k = 0; k < steps; k++) {
            const uint8_t *img = NULL, *lab = NULL;
            size_t b = 0;
            ck_assert_int_eq(mpcl_prefetch_next(pf, &img, &lab, &b), MPCL_OK);
            if (k + 1 < steps) {
                size_t first = (k + 1) * batch, nb = n - first < batch ? n - first : batch;
                ck_assert_int_eq(mpcl_prefetch_submit(pf, order + first, nb, epoch), MPCL_OK);
            }
            size_t want = n - k * batch < batch ? n - k * batch : batch;
            ck_assert_uint_eq(b, want);
            mpcl_augment_gather(serial, src, order + k * batch, b, c, h, w, o, 5, epoch);
            ck_assert_msg(memcmp(serial, img, b * sample) == 0, "epoch %d batch %zu differs from "
                          "the serial gather", (int)epoch, k);
            for (size_t i = 0; i < b; i++)
                ck_assert_uint_eq(lab[i], labels[order[k * batch + i]]);
        }
    }
    free(serial);
    mpcl_prefetch_destroy(pf);
    free(src);
}

START_TEST(prefetch_matches_serial)
{
    mpcl_augment_options none = {0, 0}, cifar = {4, 1};
    check_prefetch(&none);
    check_prefetch(&cifar);
}
END_TEST

START_TEST(prefetch_misuse)
{
    const size_t n = 10;
    uint8_t *src = random_images(n, 1, 2, 2, 1);
    mpcl_prefetch *pf = NULL;
    ck_assert_int_eq(mpcl_prefetch_create(src, NULL, n, 1, 2, 2, 0, NULL, 1, &pf), MPCL_ERR_ARGUMENT);
    ck_assert_ptr_null(pf);
    ck_assert_int_eq(mpcl_prefetch_create(src, NULL, n, 1, 2, 2, 4, NULL, 1, &pf), MPCL_OK);
    const uint8_t *img, *lab;
    size_t b;
    ck_assert_int_eq(mpcl_prefetch_next(pf, &img, &lab, &b), MPCL_ERR_STATE); /* nothing submitted */
    size_t idx[5] = {0, 1, 2, 3, 10};
    ck_assert_int_eq(mpcl_prefetch_submit(pf, idx, 5, 1), MPCL_ERR_ARGUMENT); /* > max_batch */
    ck_assert_int_eq(mpcl_prefetch_submit(pf, idx + 1, 4, 1), MPCL_ERR_ARGUMENT); /* index 10 */
    ck_assert_int_eq(mpcl_prefetch_submit(pf, idx, 0, 1), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_prefetch_submit(pf, idx, 2, 1), MPCL_OK);
    ck_assert_int_eq(mpcl_prefetch_submit(pf, idx + 2, 2, 1), MPCL_OK);
    ck_assert_int_eq(mpcl_prefetch_submit(pf, idx, 1, 1), MPCL_ERR_STATE); /* both slots taken */
    ck_assert_int_eq(mpcl_prefetch_next(pf, &img, &lab, &b), MPCL_OK);
    ck_assert_uint_eq(b, 2);
    ck_assert_ptr_null(lab); /* created without labels */
    ck_assert_int_eq(memcmp(img, src, 8), 0);
    ck_assert_int_eq(mpcl_prefetch_submit(pf, idx, 1, 1), MPCL_ERR_STATE); /* one held, one queued */
    ck_assert_int_eq(mpcl_prefetch_next(pf, &img, &lab, &b), MPCL_OK);
    ck_assert_int_eq(memcmp(img, src + 8, 8), 0);
    ck_assert_int_eq(mpcl_prefetch_submit(pf, idx, 1, 1), MPCL_OK);
    mpcl_prefetch_destroy(pf); /* with a batch outstanding */
    mpcl_prefetch_destroy(NULL);
    free(src);
}
END_TEST

/* mpcl_normalization_measure against the mean and population standard
 * deviation computed here in double, per channel for 3 channels, over all
 * channels for 5; a flat channel gets std 1. */
START_TEST(normalization_measure)
{
    enum { N = 7, PLANE = 11 };
    uint8_t img[N * 5 * PLANE];
    uint64_t st = 99;
    for (size_t i = 0; i < sizeof img; i++)
        img[i] = (uint8_t)(tu_rand(&st) % 256);
    for (size_t i = 0; i < N; i++) /* channel 2 of the 3-channel layout: flat */
        memset(img + i * 3 * PLANE + 2 * PLANE, 77, PLANE);
    mpcl_normalization n;
    mpcl_normalization_measure(&n, img, N, 3, PLANE);
    ck_assert_uint_eq(n.channels, 3);
    for (size_t c = 0; c < 3; c++) {
        double sum = 0, sq = 0;
        for (size_t i = 0; i < N; i++)
            for (size_t k = 0; k < PLANE; k++)
                sum += img[i * 3 * PLANE + c * PLANE + k] / 255.0;
        double mean = sum / (N * PLANE);
        for (size_t i = 0; i < N; i++)
            for (size_t k = 0; k < PLANE; k++) {
                double d = img[i * 3 * PLANE + c * PLANE + k] / 255.0 - mean;
                sq += d * d;
            }
        double sd = sqrt(sq / (N * PLANE));
        ck_assert_msg(fabs(n.mean[c] - mean) < 1e-6, "channel %zu mean %g, want %g", c, (double)n.mean[c], mean);
        if (c == 2)
            ck_assert(n.std[c] == 1.0f); /* flat: only centred */
        else
            ck_assert_msg(fabs(n.std[c] - sd) < 1e-6, "channel %zu std %g, want %g", c, (double)n.std[c], sd);
    }
    /* more channels than MPCL_MAX_NORM_CHANNELS: one value over all */
    mpcl_normalization_measure(&n, img, N, 5, PLANE);
    ck_assert_uint_eq(n.channels, 1);
    double sum = 0;
    for (size_t i = 0; i < sizeof img; i++)
        sum += img[i] / 255.0;
    ck_assert(fabs(n.mean[0] - sum / sizeof img) < 1e-6);
}
END_TEST

int main(void)
{
    tu_clean_env();
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("idx");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, reads_plain_and_gzip);
    tcase_add_test(tc, rejects_defects_with_offsets);
    tcase_add_test(tc, large_files_grow_the_buffer);
    tcase_add_test(tc, dataset_directory);
    tcase_add_test(tc, dataset_defects);
    tcase_add_test(tc, default_fashion_mnist);
    suite_add_tcase(s, tc);
    tc = tcase_create("cifar");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, cifar_reads_batches);
    tcase_add_test(tc, cifar_defects);
    tcase_add_test(tc, ppm_images);
    tcase_add_test(tc, normalization_measure);
    suite_add_tcase(s, tc);
    tc = tcase_create("augment");
    tcase_add_test(tc, augment_plain_gather);
    tcase_add_test(tc, augment_crops_and_flips);
    tcase_add_test(tc, augment_flip_only_and_large_pad);
    tcase_add_test(tc, augment_deterministic);
    tcase_add_test(tc, augment_parse_and_format);
    tcase_add_test(tc, prefetch_matches_serial);
    tcase_add_test(tc, prefetch_misuse);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
