/* test_data.c — the IDX reader and dataset directories (host only): files
 * written here with known contents, plain and gzip, and every defect the
 * reader must name (file and byte offset). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(void)
{
    tu_clean_env();
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("idx");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, reads_plain_and_gzip);
    tcase_add_test(tc, rejects_defects_with_offsets);
    tcase_add_test(tc, dataset_directory);
    tcase_add_test(tc, dataset_defects);
    tcase_add_test(tc, default_fashion_mnist);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
