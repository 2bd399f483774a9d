/* fuzz_tuning.c — libFuzzer target for the CLBlast tuning cache file
 * (src/tuning.c: mpcl_tuning_load reads <cache dir>/clblast-<hash>.json and
 * checks its format, version, device hash and CLBlast version;
 * mpcl_tuning_entry_params reads the "single" and "half" parameter sets).
 * Any file must load or be refused with a reason, with no out-of-bounds
 * access, leak or undefined behaviour (AddressSanitizer + UBSan, built by
 * tools/fuzz.sh tuning).
 *
 * No device: the context is the one mpcl_context_create leaves when it
 * refuses its options, given a cache directory and fixed platform and
 * device names (src/internal.h's struct mpcl_context), so its device hash
 * is fixed: 0fc1ff8f0b4f0676 (tests/fuzz/make_corpus.py computes it for
 * the seeds). The CLBlast version is the one tools/fuzz.sh compiles in.
 *
 * Invariants: a file that loads is an object with the right format,
 * version, hash and CLBlast version; a refusal says why; a parameter set
 * that reads has every parameter in 0..1024 and the indirect size in
 * 1..1e6. */
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "fuzz_util.h"

#include "internal.h"

#ifndef MPCL_CLBLAST_VERSION
#define MPCL_CLBLAST_VERSION "unknown"
#endif

static mpcl_context *ctx;
static char path[MPCL_PATH_LEN + 64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    ctx = fuzz_error_context();
    char dir[FUZZ_PATH_LEN];
    fuzz_tmp_path(dir, sizeof dir, "tuning");
    mkdir(dir, 0700);
    snprintf(ctx->cache_dir, sizeof ctx->cache_dir, "%s", dir);
    ctx->cache_enabled = 1;
    snprintf(ctx->caps.platform, sizeof ctx->caps.platform, "Fuzz Platform");
    snprintf(ctx->caps.platform_version, sizeof ctx->caps.platform_version, "OpenCL 1.2 fuzz");
    snprintf(ctx->caps.device, sizeof ctx->caps.device, "fuzz-device");
    snprintf(ctx->caps.device_version, sizeof ctx->caps.device_version, "OpenCL 1.2");
    snprintf(ctx->caps.driver_version, sizeof ctx->caps.driver_version, "0.0");
    mpcl_tuning_path(ctx, path, sizeof path);
    fuzz_tmp_register(path); /* after the directory: removed before it */
    if (getenv("MPCL_FUZZ_SHOW_HASH"))
        fprintf(stderr, "fuzz tuning: device hash %016llx, clblast %s\n",
                (unsigned long long)mpcl_device_hash(ctx), MPCL_CLBLAST_VERSION);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write_file(path, data, size);
    char why[512];
    why[0] = 'x';
    cJSON *root = mpcl_tuning_load(ctx, why, sizeof why);
    if (!root) {
        FUZZ_CHECK(why[0] != '\0' && memchr(why, '\0', sizeof why)); /* the file exists */
        return 0;
    }
    FUZZ_CHECK(cJSON_IsObject(root));
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *hash = cJSON_GetObjectItemCaseSensitive(root, "device_hash");
    const cJSON *cb = cJSON_GetObjectItemCaseSensitive(root, "clblast");
    char want[32];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)mpcl_device_hash(ctx));
    FUZZ_CHECK(cJSON_IsString(fmt) && strcmp(fmt->valuestring, "mpcl-clblast-tuning") == 0);
    FUZZ_CHECK(cJSON_IsNumber(ver) && ver->valuedouble == MPCL_TUNING_FORMAT_VERSION);
    FUZZ_CHECK(cJSON_IsString(hash) && strcmp(hash->valuestring, want) == 0);
    FUZZ_CHECK(cJSON_IsString(cb) && strcmp(cb->valuestring, MPCL_CLBLAST_VERSION) == 0);
    for (int half = 0; half <= 1; half++) {
        mpcl_clblast_params p;
        memset(&p, 0xab, sizeof p);
        why[0] = '\0';
        int r = mpcl_tuning_entry_params(root, half, &p, why, sizeof why);
        FUZZ_CHECK(r >= -1 && r <= 2);
        if (r == 0)
            FUZZ_CHECK(why[0] != '\0');
        if (r == -1)
            FUZZ_CHECK(!cJSON_GetObjectItemCaseSensitive(root, half ? "half" : "single"));
        if (r == 1) {
            for (int i = 0; i < MPCL_XGEMM_NPARAMS; i++)
                FUZZ_CHECK(p.xgemm[i] <= 1024);
            FUZZ_CHECK(p.min_indirect >= 1 && p.min_indirect <= 1000000);
        }
    }
    cJSON_Delete(root);
    return 0;
}
