/* fuzz_idx.c — libFuzzer target for the IDX reader (mpcl_idx_load), plain
 * and gzip-compressed: any file must read or give an error, with no
 * out-of-bounds access, leak or undefined behaviour (AddressSanitizer +
 * UBSan, built by tools/fuzz.sh idx).
 *
 * Input: byte 0 selects how the rest (an IDX file) reaches the reader:
 *   bit 0 clear: written as it is (a gzip stream the fuzzer makes is read
 *                as one: zlib reads both);
 *   bit 0 set:   gzip-compressed here, and the last (byte 0 >> 1) bytes of
 *                the compressed stream cut off (0: a whole stream; what is
 *                left of a stream cut to under 2 bytes is plain bytes).
 * A file that reads must be exactly what it claims: a 0x0801 or 0x0803
 * magic, dimensions >= 1, and the data bytes are the file's bytes after the
 * header, all of them, none more; a gzip stream cut short never reads
 * (tests/fuzz/regressions/idx/gzip-trailer-cut: one whose CRC and length
 * were cut off did, before src/data/idx.c checked for it). */
#include "fuzz_util.h"

#include "mpcl.h"

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const unsigned mode = data[0];
    const uint8_t *file = data + 1;
    const size_t n = size - 1;
    const int gz = mode & 1;
    const size_t cut = mode >> 1;
    char path[FUZZ_PATH_LEN];
    fuzz_tmp_path(path, sizeof path, gz ? "idx.gz" : "idx");
    int cut_short = fuzz_write_maybe_gzip(path, file, n, gz, cut); /* a gzip stream cut short */

    mpcl_idx im;
    char err[512];
    err[0] = 'x';
    mpcl_status s = mpcl_idx_load(path, &im, err, sizeof err);
    if (s != MPCL_OK) {
        /* an error says what, and leaves nothing behind */
        FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err));
        FUZZ_CHECK(im.data == NULL && im.count == 0);
        return 0;
    }
    FUZZ_CHECK(im.data != NULL && im.count >= 1);
    FUZZ_CHECK(im.ndim == 1 || im.ndim == 3);
    size_t total;
    if (im.ndim == 3) {
        FUZZ_CHECK(im.rows >= 1 && im.cols >= 1 && im.channels == 1);
        FUZZ_CHECK(mpcl_idx_sample_bytes(&im) == im.rows * im.cols);
        total = im.count * im.rows * im.cols;
    } else {
        FUZZ_CHECK(im.rows == 0 && im.cols == 0 && im.channels == 0);
        FUZZ_CHECK(mpcl_idx_sample_bytes(&im) == 1);
        total = im.count;
    }
    /* every byte it claims is there (ASan) */
    volatile uint8_t sum = 0;
    for (size_t i = 0; i < total; i++)
        sum += im.data[i];
    /* a gzip stream cut short is damaged, even where all the data is
     * there and only its end (CRC, length) is missing */
    FUZZ_CHECK(!cut_short);
    /* what it read is the file: the uncompressed bytes are known unless the
     * fuzzer's own bytes are a gzip stream, or a cut one is plain bytes */
    if (gz ? cut == 0 : !fuzz_looks_gzip(file, n)) {
        size_t header = 4 + 4 * (size_t)im.ndim;
        FUZZ_CHECK(n == header + total);
        FUZZ_CHECK(be32(file) == (im.ndim == 3 ? 0x803u : 0x801u));
        FUZZ_CHECK(be32(file + 4) == im.count);
        if (im.ndim == 3)
            FUZZ_CHECK(be32(file + 8) == im.rows && be32(file + 12) == im.cols);
        FUZZ_CHECK(memcmp(im.data, file + header, total) == 0);
    }
    mpcl_idx_free(&im);
    FUZZ_CHECK(im.data == NULL);
    return 0;
}
