/* fuzz_spec.c — libFuzzer target for the model spec parser (sequences and
 * graphs, and the one-line 'gpt' spec): any text must parse or give an
 * error, with no out-of-bounds access, leak or undefined behaviour
 * (AddressSanitizer + UBSan, built by tools/fuzz.sh spec). A spec that
 * parses must format to text that parses back to the same model: the same
 * kind, input, layers, inputs and shapes, or the same gpt sizes. */
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
        if (a.nlayers != b.nlayers || a.params != b.params || a.kind != b.kind ||
            memcmp(a.input, b.input, sizeof a.input))
            abort();
        if (a.kind == MPCL_MODEL_GPT) {
            const mpcl_gpt_spec *x = &a.gpt, *y = &b.gpt;
            if (a.nlayers != 0 || x->vocab != y->vocab || x->context != y->context ||
                x->layers != y->layers || x->heads != y->heads || x->width != y->width ||
                x->hidden != y->hidden || x->width % x->heads != 0 || x->vocab < 2 ||
                a.params != mpcl_gpt_param_count(x) || a.input[2] != x->context)
                abort(); /* another gpt, or one the parser should have refused */
        } else if (a.kind != MPCL_MODEL_LAYERS || a.nlayers < 1) {
            abort();
        }
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
