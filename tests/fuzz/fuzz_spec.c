/* fuzz_spec.c — libFuzzer target for the model spec parser (sequences and
 * graphs): any text must parse or give an error, with no out-of-bounds
 * access, leak or undefined behaviour (AddressSanitizer + UBSan, built by
 * tools/fuzz.sh spec). A spec that parses must format to text that parses
 * back to the same graph: the same layers, inputs and shapes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpcl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static mpcl_model_spec a, b;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char err[512];
    if (mpcl_model_spec_parse(text, "fuzz", &a, err, sizeof err) == MPCL_OK) {
        size_t need = mpcl_model_spec_format(&a, NULL, 0) + 1;
        char *out = malloc(need);
        if (!out)
            abort();
        mpcl_model_spec_format(&a, out, need);
        if (mpcl_model_spec_parse(out, "formatted", &b, err, sizeof err) != MPCL_OK)
            abort(); /* the formatted text does not read back */
        if (a.nlayers != b.nlayers || a.params != b.params)
            abort();
        for (int i = 0; i < a.nlayers; i++) {
            const mpcl_layer_spec *x = &a.layers[i], *y = &b.layers[i];
            if (x->kind != y->kind || x->ninputs != y->ninputs ||
                memcmp(x->inputs, y->inputs, (size_t)x->ninputs * sizeof x->inputs[0]) ||
                memcmp(x->out_shape, y->out_shape, sizeof x->out_shape))
                abort(); /* another graph */
        }
        free(out);
    }
    free(text);
    return 0;
}
