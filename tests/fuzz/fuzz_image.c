/* fuzz_image.c — libFuzzer target for the PGM / PPM reader
 * (mpcl_image_load): any file must read or give an error, with no
 * out-of-bounds access, leak or undefined behaviour (AddressSanitizer +
 * UBSan, built by tools/fuzz.sh image). An image that reads holds exactly
 * channels x rows x cols bytes. */
#include "fuzz_util.h"

#include "mpcl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[FUZZ_PATH_LEN];
    fuzz_tmp_path(path, sizeof path, "image");
    fuzz_write_file(path, data, size);
    mpcl_idx im;
    char err[512];
    err[0] = 'x';
    if (mpcl_image_load(path, &im, err, sizeof err) != MPCL_OK) {
        FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof err)); /* an error says what */
    } else {
        if (im.count != 1 || !im.data || (im.channels != 1 && im.channels != 3) || !im.rows || !im.cols)
            abort();
        volatile uint8_t sum = 0;
        for (size_t i = 0; i < im.channels * im.rows * im.cols; i++)
            sum += im.data[i]; /* every byte it claims is there (ASan) */
        mpcl_idx_free(&im);
    }
    return 0;
}
