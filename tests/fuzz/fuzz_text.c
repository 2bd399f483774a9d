/* fuzz_text.c — libFuzzer target for the language-model text reader
 * (mpcl_text_load) and the batches cut from it: any file or directory must
 * read or give an error, with no out-of-bounds access, leak or undefined
 * behaviour (AddressSanitizer + UBSan, built by tools/fuzz.sh text).
 *
 * Input: three control bytes, then the text.
 *   byte 0: bit 0 set: gzip-compressed here (name ending in .gz), with the
 *           last (byte 0 >> 2) bytes of the stream cut off; bit 1 set: a
 *           directory of two files (the text split at byte 2's share), plus
 *           a hidden file and a .dat file that must be skipped;
 *   byte 1: the context (0..255);
 *   byte 2: the validation fraction, one of eight (0: the default), and in
 *           directory mode where the text is split (byte 2 >> 3 of 31).
 * (What is left of a gzip stream cut to under 2 bytes is plain bytes.)
 * A text that reads is the bytes given, in order, split into a training
 * part and a validation part of at least context + 1 bytes each; its
 * batches hold bytes of the part, each target the token after it; a gzip
 * stream cut short never reads. */
#include <sys/stat.h>

#include "fuzz_util.h"

#include "mpcl.h"

static const double FRACTIONS[8] = {0, 0.1, 0.5, 0.01, 0.99, 0.25, 1e-9, 0.999999};

static void check_batches(const mpcl_text *t, size_t context)
{
    for (int split = MPCL_TEXT_TRAIN; split <= MPCL_TEXT_VALID; split++) {
        size_t n = 0;
        const uint8_t *part = mpcl_text_part(t, (mpcl_text_split)split, &n);
        FUZZ_CHECK(part && n > context);
        FUZZ_CHECK(part >= t->bytes && part + n <= t->bytes + t->size);
        size_t T = context + 1 < n ? context + 1 : n - 1; /* a window and its next byte fit */
        if (T == 0)
            continue;
        enum { B = 3 };
        int32_t tok[B * 256], tgt[B * 256]; /* T <= context + 1 <= 256 */
        FUZZ_CHECK(mpcl_text_batch(t, (mpcl_text_split)split, 7, 11, B, T, tok, tgt) == MPCL_OK);
        for (size_t i = 0; i < B * T; i++) {
            FUZZ_CHECK(tok[i] >= 0 && tok[i] <= 255 && tgt[i] >= 0 && tgt[i] <= 255);
            if ((i + 1) % T)
                FUZZ_CHECK(tgt[i] == tok[i + 1]);
        }
        size_t windows = mpcl_text_windows(t, (mpcl_text_split)split, T);
        FUZZ_CHECK(windows == (n - 1) / T);
        if (windows) {
            size_t b = windows < B ? windows : B;
            FUZZ_CHECK(mpcl_text_window_batch(t, (mpcl_text_split)split, windows - b, b, T, tok, tgt) ==
                       MPCL_OK);
            for (size_t i = 0; i < b * T; i++)
                FUZZ_CHECK(tok[i] == part[(windows - b) * T + i] &&
                           tgt[i] == part[(windows - b) * T + i + 1]);
        }
        FUZZ_CHECK(mpcl_text_window_batch(t, (mpcl_text_split)split, windows, 1, T, tok, tgt) ==
                   MPCL_ERR_ARGUMENT);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    const int gz = data[0] & 1, dir = (data[0] >> 1) & 1;
    const size_t cut = gz ? data[0] >> 2 : 0;
    const size_t context = data[1];
    const double fraction = FRACTIONS[data[2] & 7];
    const uint8_t *text = data + 3;
    const size_t n = size - 3;

    char path[FUZZ_PATH_LEN], a[FUZZ_PATH_LEN + 32], b[FUZZ_PATH_LEN + 32], hidden[FUZZ_PATH_LEN + 32],
        dat[FUZZ_PATH_LEN + 32];
    size_t first = n; /* bytes in the first file */
    int cut_short = 0; /* a gzip stream cut short */
    if (dir) {
        fuzz_tmp_path(path, sizeof path, "text-dir");
        mkdir(path, 0700);
        /* (the files are removed after each read, the directory at exit) */
        snprintf(a, sizeof a, "%s/a%s", path, gz ? ".gz" : "");
        snprintf(b, sizeof b, "%s/b%s", path, gz ? ".gz" : "");
        snprintf(hidden, sizeof hidden, "%s/.hidden", path);
        snprintf(dat, sizeof dat, "%s/a.dat", path);
        first = (size_t)((double)n * (double)(data[2] >> 3) / 31.0);
        if (gz) {
            fuzz_write_gzip(a, text, first, 0);
            cut_short = fuzz_write_gzip(b, text + first, n - first, cut);
        } else {
            fuzz_write_file(a, text, first);
            fuzz_write_file(b, text + first, n - first);
        }
        fuzz_write_file(hidden, "hidden", 6);
        fuzz_write_file(dat, "index", 5);
    } else {
        fuzz_tmp_path(path, sizeof path, gz ? "text.gz" : "text");
        cut_short = fuzz_write_maybe_gzip(path, text, n, gz, cut);
    }

    mpcl_text t;
    char err[512];
    err[0] = 'x';
    mpcl_status s = mpcl_text_load(path, fraction, context, &t, err, sizeof err);
    if (dir) {
        unlink(a);
        unlink(b);
        unlink(hidden);
        unlink(dat);
    }
    if (s != MPCL_OK) {
        FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err));
        FUZZ_CHECK(t.bytes == NULL && t.size == 0);
        return 0;
    }
    FUZZ_CHECK(!cut_short); /* a gzip stream cut short is damaged */
    FUZZ_CHECK(t.bytes && t.size >= 2 * (context + 1));
    FUZZ_CHECK(t.train_size > context && t.size - t.train_size > context);
    FUZZ_CHECK(t.files == (dir ? 2u : 1u));
    FUZZ_CHECK(strcmp(t.source, path) == 0);
    volatile uint8_t sum = 0;
    for (size_t i = 0; i < t.size; i++)
        sum += t.bytes[i];
    /* the bytes are the text, unless a plain file is a gzip stream the
     * fuzzer made (then they are its contents), or a gzip stream cut to
     * under 2 bytes is read as those bytes */
    int known = gz ? cut == 0
                   : !fuzz_looks_gzip(text, first) && !fuzz_looks_gzip(text + first, n - first);
    if (known) {
        FUZZ_CHECK(t.size == n);
        FUZZ_CHECK(memcmp(t.bytes, text, n) == 0);
    }
    check_batches(&t, context);
    mpcl_text_free(&t);
    FUZZ_CHECK(t.bytes == NULL);
    return 0;
}
