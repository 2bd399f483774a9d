/* fuzz_checkpoint.c — libFuzzer target for the checkpoint reader's host
 * side: mpcl_checkpoint_open (the file read and validated as safetensors),
 * mpcl_checkpoint_meta (every key the library writes and reads) and
 * mpcl_checkpoint_spec (the "model_spec" metadata parsed as a model spec).
 * Any file must open or give an error, with no out-of-bounds access, leak
 * or undefined behaviour (AddressSanitizer + UBSan, built by tools/fuzz.sh
 * checkpoint).
 *
 * No OpenCL device is needed or touched: mpcl_checkpoint_open wants a
 * context only to hold its error message, and mpcl_context_create hands
 * back such a context, with no device, when it refuses its options (here
 * an unknown precision, refused before any OpenCL call). Loading weights
 * into a model (mpcl_checkpoint_load_model / _trainer) needs a device and
 * is not fuzzed here; its bounds rest on the tensors' offsets, which the
 * safetensors target checks.
 *
 * Invariants: an open file reads the same through st_read (the file) as
 * through st_parse (the bytes); a refusal leaves a message in the context;
 * metadata values are strings; a spec that parses formats to text that
 * parses back to the same model. */
#include "fuzz_util.h"

#include "internal.h"
#include "io/safetensors.h"

static mpcl_context *ctx;
static mpcl_model_spec spec_a, spec_b;

/* The keys io/checkpoint.c, mpcl_fit, mpcl_fit_lm and the CLI write and
 * read, and two that no file should have as metadata. */
static const char *const KEYS[] = {
    "format", "format_version", "mpcl_version", "kind", "model_spec", "precision", "seed",
    "input_mean", "input_std", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "beta1",
    "beta2", "eps", "schedule", "total_steps", "step_size", "gamma", "warmup_steps",
    "loss_scaling", "loss_scale", "growth_factor", "backoff_factor", "growth_interval",
    "min_scale", "max_scale", "clip_norm", "label_smoothing", "step", "optimizer_steps",
    "skipped_steps", "growth_tracker", "epochs_done", "epoch_step", "batch", "train_samples",
    "augment", "fit_seed", "class_names", "data", "writer", "task", "text", "lm_batch",
    "lm_context", "lm_seed", "lm_steps", "", "__metadata__",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ctx = fuzz_error_context(); /* no device: the refusal's context is enough */
    return 0;
}

static void check_spec_round_trip(void)
{
    size_t need = mpcl_model_spec_format(&spec_a, NULL, 0) + 1;
    char *out = malloc(need);
    FUZZ_CHECK(out != NULL);
    mpcl_model_spec_format(&spec_a, out, need);
    char err[512];
    FUZZ_CHECK(mpcl_model_spec_parse(out, "formatted", &spec_b, err, sizeof err) == MPCL_OK);
    FUZZ_CHECK(spec_a.kind == spec_b.kind && spec_a.nlayers == spec_b.nlayers &&
               spec_a.params == spec_b.params);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[FUZZ_PATH_LEN];
    fuzz_tmp_path(path, sizeof path, "checkpoint.safetensors");
    fuzz_write_file(path, data, size);

    mpcl_clear_error(ctx);
    static char sentinel;
    mpcl_checkpoint *c = (mpcl_checkpoint *)&sentinel; /* must be set either way */
    mpcl_status s = mpcl_checkpoint_open(ctx, path, &c);
    st_file f;
    char err[512];
    mpcl_status ps = st_parse(data, size, path, &f, err, sizeof err);
    if (s != MPCL_OK) {
        FUZZ_CHECK(c == NULL);
        FUZZ_CHECK(mpcl_last_error(ctx)[0] != '\0');
        FUZZ_CHECK(ps == s); /* the file and the bytes are refused alike */
        if (ps == MPCL_OK)
            st_free(&f);
        return 0;
    }
    FUZZ_CHECK(c != NULL);
    FUZZ_CHECK(ps == MPCL_OK);
    for (size_t k = 0; k < sizeof KEYS / sizeof KEYS[0]; k++) {
        const char *v = mpcl_checkpoint_meta(c, KEYS[k]);
        const char *w = st_meta(&f, KEYS[k]);
        FUZZ_CHECK((v == NULL) == (w == NULL));
        if (v) {
            FUZZ_CHECK(strcmp(v, w) == 0);
            uint64_t u = 0;
            if (mpcl_parse_u64(v, &u))
                FUZZ_CHECK(v[0] >= '0' && v[0] <= '9');
        }
    }
    FUZZ_CHECK(mpcl_checkpoint_meta(c, NULL) == NULL);
    for (size_t i = 0; i < f.count; i++) {
        FUZZ_CHECK(f.tensors[i].begin <= f.tensors[i].end && f.tensors[i].end <= f.data_len);
        FUZZ_CHECK(st_find(&f, f.tensors[i].name) != NULL);
    }
    for (size_t i = 0; i < f.nmeta; i++)
        FUZZ_CHECK(st_meta(&f, f.meta[2 * i]) != NULL);

    mpcl_clear_error(ctx);
    s = mpcl_checkpoint_spec(c, &spec_a);
    if (s == MPCL_OK) {
        FUZZ_CHECK(mpcl_checkpoint_meta(c, "model_spec") != NULL);
        check_spec_round_trip();
    } else {
        FUZZ_CHECK(mpcl_last_error(ctx)[0] != '\0');
    }
    mpcl_checkpoint_close(c);
    st_free(&f);
    return 0;
}
