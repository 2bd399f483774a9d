/* fuzz_safetensors.c — libFuzzer target for the safetensors reader: any
 * input must give MPCL_OK or an error, with no out-of-bounds access, leak
 * or undefined behaviour (built with AddressSanitizer and UBSan by
 * tools/fuzz.sh). A valid parse must describe only bytes of the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file f;
    char err[512];
    if (st_parse(data, size, "fuzz", &f, err, sizeof err) != MPCL_OK)
        return 0;
    for (size_t i = 0; i < f.count; i++)
        if (f.tensors[i].end > f.data_len || f.tensors[i].begin > f.tensors[i].end)
            abort(); /* the reader let a tensor point outside the data */
    st_free(&f);
    return 0;
}
