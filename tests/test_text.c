/* test_text.c — the text data module (host only): files and directories
 * written here with known bytes (plain and gzip), the split into training
 * and validation parts, the hashed training windows (checked against the
 * part's bytes and against the documented formula, with a splitmix64
 * finaliser written out here), the consecutive validation windows, and
 * every defect the reader must name. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "testutil.h"

static char *dir;

static void setup(void) { dir = tu_mkdtemp("text"); }
static void teardown(void)
{
    tu_rmtree(dir);
    free(dir);
}

static char *path_in(const char *d, const char *name)
{
    char *p = malloc(strlen(d) + strlen(name) + 2);
    ck_assert_ptr_nonnull(p);
    sprintf(p, "%s/%s", d, name);
    return p;
}

/* n bytes of a fixed pseudo-random stream (every value 0..255 occurs). */
static uint8_t *random_bytes(size_t n, uint64_t seed)
{
    uint8_t *p = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(p);
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(tu_rand(&st) >> 56);
    return p;
}

static char *write_plain(const char *d, const char *name, const void *data, size_t len)
{
    char *p = path_in(d, name);
    ck_assert_int_eq(tu_write_file(p, data, len), 0);
    return p;
}

static char *write_gz(const char *d, const char *name, const void *data, size_t len)
{
    char *p = path_in(d, name);
    gzFile f = gzopen(p, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(gzwrite(f, data, (unsigned)len), (int)len);
    ck_assert_int_eq(gzclose(f), Z_OK);
    return p;
}

static void load_ok(const char *path, double f, size_t context, mpcl_text *t)
{
    char err[1024];
    mpcl_status s = mpcl_text_load(path, f, context, t, err, sizeof err);
    ck_assert_msg(s == MPCL_OK, "%s: %s: %s", path ? path : "(null)", mpcl_status_name(s), err);
}

static void load_fails(const char *path, double f, size_t context, mpcl_status want,
                       const char *needle1, const char *needle2)
{
    mpcl_text t;
    char err[1024];
    mpcl_status s = mpcl_text_load(path, f, context, &t, err, sizeof err);
    ck_assert_msg(s == want, "status %s, expected %s (%s)", mpcl_status_name(s),
                  mpcl_status_name(want), err);
    ck_assert_msg(!needle1 || strstr(err, needle1), "message lacks '%s': %s", needle1, err);
    ck_assert_msg(!needle2 || strstr(err, needle2), "message lacks '%s': %s", needle2, err);
    ck_assert_ptr_null(t.bytes);
    ck_assert_uint_eq(t.size, 0);
}

/* The splitmix64 finaliser (Steele, Lea and Flood), written out here. */
static uint64_t sm_fin(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The documented start of window i of step `step`. */
static size_t expected_start(uint64_t seed, uint64_t step, size_t i, size_t size, size_t T)
{
    return (size_t)(sm_fin(seed ^ sm_fin(step ^ sm_fin((uint64_t)i + 0x5851f42d4c957f2dULL))) %
                    (uint64_t)(size - T));
}

START_TEST(file_sizes_and_split)
{
    uint8_t *data = random_bytes(1006, 1);
    char *p = write_plain(dir, "corpus.txt", data, 1006);
    mpcl_text t;
    load_ok(p, 0, 16, &t); /* default 0.1: round(100.6) = 101 held out */
    ck_assert_uint_eq(t.size, 1006);
    ck_assert_uint_eq(t.train_size, 905);
    ck_assert_uint_eq(t.files, 1);
    ck_assert_str_eq(t.source, p);
    ck_assert_mem_eq(t.bytes, data, 1006);
    size_t n = 0;
    const uint8_t *tr = mpcl_text_part(&t, MPCL_TEXT_TRAIN, &n);
    ck_assert_uint_eq(n, 905);
    ck_assert_mem_eq(tr, data, 905);
    const uint8_t *va = mpcl_text_part(&t, MPCL_TEXT_VALID, &n);
    ck_assert_uint_eq(n, 101);
    ck_assert_mem_eq(va, data + 905, 101);
    mpcl_text_free(&t);
    ck_assert_ptr_null(t.bytes);
    ck_assert_uint_eq(t.size, 0);

    load_ok(p, 0.25, 16, &t); /* round(251.5) = 252 */
    ck_assert_uint_eq(t.train_size, 754);
    mpcl_text_free(&t);
    load_ok(p, 0.5, 502, &t); /* 503 and 503: exactly context + 1 each */
    ck_assert_uint_eq(t.train_size, 503);
    mpcl_text_free(&t);
    load_fails(p, 0.5, 503, MPCL_ERR_FORMAT, "context 503", "503");

    /* NULL-safe accessors */
    mpcl_text_free(NULL);
    n = 7;
    ck_assert_ptr_null(mpcl_text_part(NULL, MPCL_TEXT_TRAIN, &n));
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(mpcl_text_windows(NULL, MPCL_TEXT_TRAIN, 4), 0);
    free(p);
    free(data);
}
END_TEST

START_TEST(directory_order_and_filter)
{
    static const char a[] = "alpha alpha alpha alpha alpha\n"; /* 30 bytes */
    static const char b[] = "bravo bravo bravo\n";             /* 18 bytes */
    char *d = path_in(dir, "corpus");
    ck_assert_int_eq(mkdir(d, 0755), 0);
    free(write_plain(d, "b", b, strlen(b)));
    free(write_plain(d, "a", a, strlen(a)));
    free(write_plain(d, "a.dat", "INDEX-INDEX-INDEX", 17));
    free(write_plain(d, ".hidden", "HIDDEN-HIDDEN", 13));
    char *link = path_in(d, "c.u8");
    ck_assert_int_eq(symlink("a", link), 0);
    free(link);
    char *sub = path_in(d, "sub");
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    free(write_plain(sub, "inner", "INNER", 5));
    free(sub);

    mpcl_text t;
    load_ok(d, 0, 3, &t);
    ck_assert_uint_eq(t.files, 2);
    ck_assert_uint_eq(t.size, 48);
    ck_assert_mem_eq(t.bytes, a, 30);
    ck_assert_mem_eq(t.bytes + 30, b, 18);
    ck_assert_uint_eq(t.train_size, 48 - 5); /* round(4.8) */
    ck_assert_str_eq(t.source, d);
    mpcl_text_free(&t);

    /* a gzip file among them is read decompressed, in its name's place */
    free(write_gz(d, "ab.gz", "GZ-TEXT", 7));
    load_ok(d, 0, 3, &t);
    ck_assert_uint_eq(t.files, 3);
    ck_assert_uint_eq(t.size, 55);
    ck_assert_mem_eq(t.bytes, a, 30);
    ck_assert_mem_eq(t.bytes + 30, "GZ-TEXT", 7);
    ck_assert_mem_eq(t.bytes + 37, b, 18);
    mpcl_text_free(&t);

    /* only index files, hidden files, links and directories: no text */
    char *e = path_in(dir, "empty-dir");
    ck_assert_int_eq(mkdir(e, 0755), 0);
    free(write_plain(e, "x.dat", "INDEX", 5));
    free(write_plain(e, ".x", "HIDDEN", 6));
    char *l2 = path_in(e, "y");
    ck_assert_int_eq(symlink("x.dat", l2), 0);
    free(l2);
    load_fails(e, 0, 1, MPCL_ERR_FORMAT, e, "no text files");
    free(e);
    free(d);
}
END_TEST

START_TEST(gzip_reads_like_plain)
{
    size_t n = 70000; /* more than one read buffer */
    uint8_t *data = random_bytes(n, 2);
    char *p = write_plain(dir, "plain", data, n);
    char *g = write_gz(dir, "plain.gz", data, n);
    mpcl_text tp, tg;
    load_ok(p, 0.2, 64, &tp);
    load_ok(g, 0.2, 64, &tg);
    ck_assert_uint_eq(tp.size, n);
    ck_assert_uint_eq(tg.size, n);
    ck_assert_uint_eq(tg.train_size, tp.train_size);
    ck_assert_uint_eq(tg.train_size, n - 14000);
    ck_assert_mem_eq(tg.bytes, data, n);
    ck_assert_mem_eq(tp.bytes, data, n);
    mpcl_text_free(&tp);
    mpcl_text_free(&tg);
    free(p);
    free(g);
    free(data);
}
END_TEST

/* Every window of a batch is the part's bytes at the documented start, and
 * the targets are the next bytes. */
static void check_batch(const mpcl_text *t, mpcl_text_split split, uint64_t seed, uint64_t step,
                        size_t b, size_t T)
{
    size_t size = 0;
    const uint8_t *part = mpcl_text_part(t, split, &size);
    int32_t *tok = malloc(b * T * sizeof *tok), *tgt = malloc(b * T * sizeof *tgt);
    ck_assert_ptr_nonnull(tok);
    ck_assert_ptr_nonnull(tgt);
    ck_assert_int_eq(mpcl_text_batch(t, split, seed, step, b, T, tok, tgt), MPCL_OK);
    for (size_t i = 0; i < b; i++) {
        size_t s = expected_start(seed, step, i, size, T);
        ck_assert_uint_lt(s + T, size);
        for (size_t j = 0; j < T; j++) {
            ck_assert_int_eq(tok[i * T + j], part[s + j]);
            ck_assert_int_eq(tgt[i * T + j], part[s + j + 1]);
            if (j + 1 < T)
                ck_assert_int_eq(tgt[i * T + j], tok[i * T + j + 1]);
        }
    }
    free(tok);
    free(tgt);
}

START_TEST(batches_are_windows_of_the_part)
{
    uint8_t *data = random_bytes(5000, 3);
    char *p = write_plain(dir, "t", data, 5000);
    mpcl_text t;
    load_ok(p, 0.1, 32, &t);
    for (uint64_t step = 0; step < 20; step++) {
        check_batch(&t, MPCL_TEXT_TRAIN, 1234, step, 8, 32);
        check_batch(&t, MPCL_TEXT_VALID, 99, step, 5, 17);
    }
    check_batch(&t, MPCL_TEXT_TRAIN, UINT64_MAX, UINT64_MAX, 3, 1);
    /* the longest window a part allows: one start only */
    check_batch(&t, MPCL_TEXT_VALID, 5, 6, 4, 499);
    int32_t tok[4 * 499], tgt[4 * 499];
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_VALID, 5, 6, 4, 499, tok, tgt), MPCL_OK);
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(tok[i * 499], data[4500]);
        ck_assert_int_eq(tgt[i * 499 + 498], data[4999]);
    }
    /* a window as long as the part has no next byte */
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_VALID, 5, 6, 1, 500, tok, tgt), MPCL_ERR_ARGUMENT);
    mpcl_text_free(&t);
    free(p);
    free(data);
}
END_TEST

START_TEST(batches_deterministic)
{
    uint8_t *data = random_bytes(20000, 4);
    char *p = write_plain(dir, "t", data, 20000);
    mpcl_text t;
    load_ok(p, 0, 64, &t);
    enum { B = 6, T = 64 };
    static int32_t a[B * T], at[B * T], b[B * T], bt[B * T];
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_TRAIN, 42, 7, B, T, a, at), MPCL_OK);
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_TRAIN, 42, 7, B, T, b, bt), MPCL_OK);
    ck_assert_mem_eq(a, b, sizeof a);
    ck_assert_mem_eq(at, bt, sizeof at);
    /* a loaded copy gives the same batch: only (seed, step) decide */
    mpcl_text t2;
    load_ok(p, 0, 64, &t2);
    ck_assert_int_eq(mpcl_text_batch(&t2, MPCL_TEXT_TRAIN, 42, 7, B, T, b, bt), MPCL_OK);
    ck_assert_mem_eq(a, b, sizeof a);
    mpcl_text_free(&t2);
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_TRAIN, 42, 8, B, T, b, bt), MPCL_OK);
    ck_assert(memcmp(a, b, sizeof a) != 0);
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_TRAIN, 43, 7, B, T, b, bt), MPCL_OK);
    ck_assert(memcmp(a, b, sizeof a) != 0);
    /* the windows of one batch differ from each other */
    for (size_t i = 1; i < B; i++)
        ck_assert(memcmp(a, a + i * T, T * sizeof *a) != 0);
    /* a smaller batch is the first windows of a larger one */
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_TRAIN, 42, 7, 2, T, b, bt), MPCL_OK);
    ck_assert_mem_eq(a, b, 2 * T * sizeof *a);
    mpcl_text_free(&t);
    free(p);
    free(data);
}
END_TEST

/* With all bytes distinct, a window's first byte tells its start. */
START_TEST(starts_cover_the_range)
{
    uint8_t data[40];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(100 + i);
    char *p = write_plain(dir, "t", data, sizeof data);
    mpcl_text t;
    load_ok(p, 0.5, 4, &t);
    ck_assert_uint_eq(t.train_size, 20);
    enum { B = 8, T = 4 };
    for (int split = 0; split < 2; split++) {
        size_t size = 0;
        const uint8_t *part = mpcl_text_part(&t, (mpcl_text_split)split, &size);
        ck_assert_uint_eq(size, 20);
        unsigned seen[20] = {0};
        for (uint64_t step = 0; step < 200; step++) {
            int32_t tok[B * T], tgt[B * T];
            ck_assert_int_eq(mpcl_text_batch(&t, (mpcl_text_split)split, 77, step, B, T, tok, tgt),
                             MPCL_OK);
            for (size_t i = 0; i < B; i++) {
                long s = (long)tok[i * T] - part[0];
                ck_assert_msg(s >= 0 && s <= (long)(size - T - 1), "start %ld outside 0..%zu", s,
                              size - T - 1);
                for (size_t j = 0; j < T; j++) {
                    ck_assert_int_eq(tok[i * T + j], part[s + j]);
                    ck_assert_int_eq(tgt[i * T + j], part[s + j + 1]);
                }
                seen[s]++;
            }
        }
        for (size_t s = 0; s < size - T; s++)
            ck_assert_msg(seen[s] > 0, "split %d: start %zu never drawn", split, s);
        for (size_t s = size - T; s < size; s++)
            ck_assert_uint_eq(seen[s], 0);
    }
    mpcl_text_free(&t);
    free(p);
}
END_TEST

START_TEST(window_batches)
{
    uint8_t *data = random_bytes(1000, 5);
    char *p = write_plain(dir, "t", data, 1000);
    mpcl_text t;
    load_ok(p, 0, 8, &t); /* 900 and 100 */
    ck_assert_uint_eq(mpcl_text_windows(&t, MPCL_TEXT_TRAIN, 7), 128); /* 899 / 7 */
    ck_assert_uint_eq(mpcl_text_windows(&t, MPCL_TEXT_VALID, 11), 9);  /* 99 / 11 */
    ck_assert_uint_eq(mpcl_text_windows(&t, MPCL_TEXT_VALID, 9), 11);  /* 99 / 9 */
    ck_assert_uint_eq(mpcl_text_windows(&t, MPCL_TEXT_VALID, 99), 1);
    ck_assert_uint_eq(mpcl_text_windows(&t, MPCL_TEXT_VALID, 100), 0);
    ck_assert_uint_eq(mpcl_text_windows(&t, MPCL_TEXT_VALID, 0), 0);

    int32_t tok[9 * 11], tgt[9 * 11];
    ck_assert_int_eq(mpcl_text_window_batch(&t, MPCL_TEXT_TRAIN, 3, 5, 7, tok, tgt), MPCL_OK);
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < 7; j++) {
            ck_assert_int_eq(tok[i * 7 + j], data[(3 + i) * 7 + j]);
            ck_assert_int_eq(tgt[i * 7 + j], data[(3 + i) * 7 + j + 1]);
        }
    /* all of the validation part: its last target is its last byte */
    ck_assert_int_eq(mpcl_text_window_batch(&t, MPCL_TEXT_VALID, 0, 9, 11, tok, tgt), MPCL_OK);
    for (size_t i = 0; i < 9; i++)
        for (size_t j = 0; j < 11; j++) {
            ck_assert_int_eq(tok[i * 11 + j], data[900 + i * 11 + j]);
            ck_assert_int_eq(tgt[i * 11 + j], data[900 + i * 11 + j + 1]);
        }
    ck_assert_int_eq(tgt[9 * 11 - 1], data[999]);
    /* past the end */
    ck_assert_int_eq(mpcl_text_window_batch(&t, MPCL_TEXT_VALID, 9, 1, 11, tok, tgt), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_window_batch(&t, MPCL_TEXT_VALID, 7, 3, 11, tok, tgt), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_window_batch(&t, MPCL_TEXT_VALID, 8, 1, 11, tok, tgt), MPCL_OK);
    ck_assert_int_eq(mpcl_text_window_batch(&t, MPCL_TEXT_VALID, SIZE_MAX, 2, 11, tok, tgt),
                     MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_window_batch(&t, MPCL_TEXT_VALID, 0, 1, 100, tok, tgt), MPCL_ERR_ARGUMENT);
    mpcl_text_free(&t);
    free(p);
    free(data);
}
END_TEST

START_TEST(bad_arguments)
{
    uint8_t *data = random_bytes(1000, 6);
    char *p = write_plain(dir, "t", data, 1000);
    char err[256];
    ck_assert_int_eq(mpcl_text_load(p, 0, 8, NULL, err, sizeof err), MPCL_ERR_ARGUMENT);
    static const double bad[] = {1.0, -0.1, 1.5, -1.0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        load_fails(p, bad[i], 8, MPCL_ERR_ARGUMENT, "valid_fraction", NULL);
    load_fails(p, NAN, 8, MPCL_ERR_ARGUMENT, "valid_fraction", NULL);
    /* no error buffer: still a status */
    mpcl_text t;
    ck_assert_int_eq(mpcl_text_load(p, 2.0, 8, &t, NULL, 0), MPCL_ERR_ARGUMENT);

    load_ok(p, 0, 8, &t);
    int32_t tok[64], tgt[64];
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_TRAIN, 1, 1, 2, 0, tok, tgt), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_TRAIN, 1, 1, 0, 8, tok, tgt), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_TRAIN, 1, 1, 2, 8, NULL, tgt), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_batch(&t, MPCL_TEXT_TRAIN, 1, 1, 2, 8, tok, NULL), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_batch(NULL, MPCL_TEXT_TRAIN, 1, 1, 2, 8, tok, tgt), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_batch(&t, (mpcl_text_split)2, 1, 1, 2, 8, tok, tgt), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_window_batch(&t, MPCL_TEXT_TRAIN, 0, 2, 0, tok, tgt), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_window_batch(&t, MPCL_TEXT_TRAIN, 0, 0, 8, tok, tgt), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_window_batch(&t, MPCL_TEXT_TRAIN, 0, 2, 8, NULL, tgt), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_text_window_batch(NULL, MPCL_TEXT_TRAIN, 0, 2, 8, tok, tgt), MPCL_ERR_ARGUMENT);
    mpcl_text_free(&t);
    free(p);
    free(data);
}
END_TEST

START_TEST(file_defects)
{
    /* missing */
    char *m = path_in(dir, "no-such-file");
    load_fails(m, 0, 4, MPCL_ERR_IO, m, "No such file");
    free(m);
    /* empty */
    char *e = write_plain(dir, "empty", "", 0);
    load_fails(e, 0, 4, MPCL_ERR_FORMAT, e, "empty");
    /* an empty file among a directory's is named too */
    char *d = path_in(dir, "with-empty");
    ck_assert_int_eq(mkdir(d, 0755), 0);
    free(write_plain(d, "a", "some text to read here", 22));
    char *de = write_plain(d, "b", "", 0);
    load_fails(d, 0, 1, MPCL_ERR_FORMAT, de, "empty");
    free(de);
    free(d);
    free(e);
    /* too short for the context: 50 bytes, 45 and 5, context 10 */
    char *s = write_plain(dir, "short", "0123456789012345678901234567890123456789012345678\n", 50);
    load_fails(s, 0, 10, MPCL_ERR_FORMAT, "context 10", s);
    load_fails(s, 0, 10, MPCL_ERR_FORMAT, "training part has 45 bytes", "validation part 5");
    mpcl_text t;
    load_ok(s, 0, 4, &t); /* 5 = context + 1 */
    mpcl_text_free(&t);
    free(s);
    /* damaged gzip: the magic bytes, then garbage */
    static const unsigned char bad[] = {0x1f, 0x8b, 'g', 'a', 'r', 'b', 'a', 'g', 'e', ' ', 'g',
                                        'a',  'r',  'b', 'a', 'g', 'e', 0,   1,   2,   3};
    char *g = write_plain(dir, "bad.gz", bad, sizeof bad);
    load_fails(g, 0, 1, MPCL_ERR_FORMAT, g, "gzip");
    free(g);
    /* a truncated gzip file */
    uint8_t *data = random_bytes(4000, 7);
    char *full = write_gz(dir, "full.gz", data, 4000);
    size_t len = 0;
    char *z = tu_read_file(full, &len);
    ck_assert_ptr_nonnull(z);
    ck_assert_uint_gt(len, 100);
    char *cut = write_plain(dir, "cut.gz", z, len / 2);
    load_fails(cut, 0, 1, MPCL_ERR_FORMAT, cut, "gzip");
    /* ... and one inside a directory is named by its own path */
    char *d2 = path_in(dir, "with-bad");
    ck_assert_int_eq(mkdir(d2, 0755), 0);
    free(write_plain(d2, "a", data, 4000));
    char *cut2 = write_plain(d2, "b.gz", z, len / 2);
    load_fails(d2, 0, 1, MPCL_ERR_FORMAT, cut2, "gzip");
    free(cut2);
    free(d2);
    free(cut);
    free(z);
    free(full);
    free(data);
    /* unreadable (where permissions hold: not as root) */
    char *u = write_plain(dir, "unreadable", "text text text text", 19);
    ck_assert_int_eq(chmod(u, 0), 0);
    if (access(u, R_OK) != 0)
        load_fails(u, 0, 1, MPCL_ERR_IO, u, NULL);
    free(u);
}
END_TEST

/* NULL or "": the default directory, read like any other, where it exists. */
START_TEST(default_text_dir)
{
    const char *dd = MPCL_DEFAULT_TEXT_DIR;
    struct stat sb;
    if (stat(dd, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        load_fails(NULL, 0, 64, MPCL_ERR_IO, dd, "fortunes");
        printf("%s missing: default text check skipped\n", dd);
        return;
    }
    /* what it should read: its regular, visible, non-.dat files */
    DIR *d = opendir(dd);
    ck_assert_ptr_nonnull(d);
    size_t files = 0, bytes = 0;
    int has_gz = 0;
    char first[1024] = "";
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || (n >= 4 && strcmp(e->d_name + n - 4, ".dat") == 0))
            continue;
        char *p = path_in(dd, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            files++;
            bytes += (size_t)st.st_size;
            has_gz |= n >= 3 && strcmp(e->d_name + n - 3, ".gz") == 0;
            if (!first[0] || strcmp(e->d_name, first) < 0)
                snprintf(first, sizeof first, "%s", e->d_name);
        }
        free(p);
    }
    closedir(d);
    if (files == 0) {
        printf("%s has no text files: default text check skipped\n", dd);
        return;
    }
    mpcl_text a, b;
    load_ok(NULL, 0, 64, &a);
    load_ok("", 0, 64, &b);
    ck_assert_str_eq(a.source, dd);
    ck_assert_str_eq(b.source, dd);
    ck_assert_uint_eq(a.files, files);
    ck_assert_uint_eq(a.size, b.size);
    ck_assert_mem_eq(a.bytes, b.bytes, a.size);
    if (!has_gz)
        ck_assert_uint_eq(a.size, bytes);
    char *fp = path_in(dd, first);
    size_t flen = 0;
    char *fb = tu_read_file(fp, &flen);
    ck_assert_ptr_nonnull(fb);
    if (!has_gz && flen <= a.size)
        ck_assert_mem_eq(a.bytes, fb, flen);
    free(fb);
    free(fp);
    mpcl_text_free(&a);
    mpcl_text_free(&b);
}
END_TEST

int main(void)
{
    tu_clean_env();
    Suite *s = suite_create("text");
    TCase *tc = tcase_create("load");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, file_sizes_and_split);
    tcase_add_test(tc, directory_order_and_filter);
    tcase_add_test(tc, gzip_reads_like_plain);
    tcase_add_test(tc, file_defects);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, default_text_dir);
    suite_add_tcase(s, tc);
    tc = tcase_create("batches");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, batches_are_windows_of_the_part);
    tcase_add_test(tc, batches_deterministic);
    tcase_add_test(tc, starts_cover_the_range);
    tcase_add_test(tc, window_batches);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
