/* backend.c — the precision choice and its reasons; kernel build variants. */
#include <string.h>

#include "internal.h"

const char *mpcl_precision_name(mpcl_precision p)
{
    switch (p) {
    case MPCL_PRECISION_AUTO: return "auto";
    case MPCL_PRECISION_FP16: return "fp16";
    case MPCL_PRECISION_FP16_STORAGE: return "fp16-storage";
    case MPCL_PRECISION_FP32: return "fp32";
    case MPCL_PRECISION_BF16: return "bf16";
    }
    return "unknown";
}

mpcl_status mpcl_precision_parse(const char *name, mpcl_precision *out)
{
    static const mpcl_precision all[] = {MPCL_PRECISION_AUTO, MPCL_PRECISION_FP16,
                                         MPCL_PRECISION_FP16_STORAGE, MPCL_PRECISION_FP32,
                                         MPCL_PRECISION_BF16};
    if (!name || !out)
        return MPCL_ERR_ARGUMENT;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(name, mpcl_precision_name(all[i])) == 0) {
            *out = all[i];
            return MPCL_OK;
        }
    return MPCL_ERR_ARGUMENT;
}

const char *mpcl_variant_name(mpcl_variant v)
{
    switch (v) {
    case MPCL_VARIANT_FP16: return "fp16";
    case MPCL_VARIANT_FP16_STORAGE: return "fp16-storage";
    case MPCL_VARIANT_FP32: return "fp32";
    case MPCL_VARIANT_BF16: return "bf16";
    default: return "unknown";
    }
}

const char *mpcl_variant_define(mpcl_variant v)
{
    switch (v) {
    case MPCL_VARIANT_FP16: return "MPCL_FP16";
    case MPCL_VARIANT_FP16_STORAGE: return "MPCL_FP16_STORAGE";
    case MPCL_VARIANT_BF16: return "MPCL_BF16";
    default: return "MPCL_FP32";
    }
}

mpcl_variant mpcl_variant_of(mpcl_precision p)
{
    switch (p) {
    case MPCL_PRECISION_FP16: return MPCL_VARIANT_FP16;
    case MPCL_PRECISION_FP16_STORAGE: return MPCL_VARIANT_FP16_STORAGE;
    case MPCL_PRECISION_BF16: return MPCL_VARIANT_BF16;
    default: return MPCL_VARIANT_FP32;
    }
}

const char *mpcl_fp16_arith_name(mpcl_fp16_arith a)
{
    switch (a) {
    case MPCL_FP16_DECLARED_WORKS: return "declared and works";
    case MPCL_FP16_UNDECLARED_WORKS: return "works but not declared";
    case MPCL_FP16_DECLARED_BROKEN: return "declared but broken";
    default: return "unsupported";
    }
}

static int arith_ok(const mpcl_caps *c)
{
    return c->fp16_arith_check.passed &&
           (c->fp16_arith == MPCL_FP16_DECLARED_WORKS || c->fp16_arith == MPCL_FP16_UNDECLARED_WORKS);
}

/* What fp16 mode means on this device beyond "it works". */
static void fp16_notes(const mpcl_caps *c, char *dst, size_t len)
{
    mpcl_strfmt(dst, len, "%s",
                c->fp16_flushes_subnormals
                    ? "; the device flushes half subnormals to zero (its CL_DEVICE_HALF_FP_CONFIG "
                      "lacks CL_FP_DENORM), so small gradients need a larger loss scale"
                    : "");
}

mpcl_status mpcl_backend_choose(const mpcl_caps *caps, mpcl_precision requested,
                                mpcl_precision *chosen, char *why, size_t why_len)
{
    char notes[MPCL_REASON_LEN];
    switch (requested) {
    case MPCL_PRECISION_FP32:
        *chosen = MPCL_PRECISION_FP32;
        mpcl_strfmt(why, why_len, "fp32 was requested; every device runs it");
        return MPCL_OK;
    case MPCL_PRECISION_FP16_STORAGE:
        if (!caps->fp16_storage.passed) {
            *chosen = MPCL_PRECISION_FP32;
            mpcl_strfmt(why, why_len,
                        "fp16-storage needs working vload_half/vstore_half_rte, and the storage "
                        "check failed: %s",
                        caps->fp16_storage.reason);
            return MPCL_ERR_UNSUPPORTED;
        }
        *chosen = MPCL_PRECISION_FP16_STORAGE;
        mpcl_strfmt(why, why_len,
                    "fp16-storage was requested and the storage check passed (%s); arithmetic "
                    "stays in float",
                    caps->fp16_storage.reason);
        return MPCL_OK;
    case MPCL_PRECISION_FP16:
        if (!arith_ok(caps)) {
            *chosen = MPCL_PRECISION_FP32;
            mpcl_strfmt(why, why_len,
                        "fp16 needs verified half arithmetic, and the device's is %s: %s; use "
                        "fp16-storage (half buffers, float math) or fp32",
                        mpcl_fp16_arith_name(caps->fp16_arith), caps->fp16_arith_check.reason);
            return MPCL_ERR_UNSUPPORTED;
        }
        fp16_notes(caps, notes, sizeof notes);
        *chosen = MPCL_PRECISION_FP16;
        mpcl_strfmt(why, why_len, "fp16 was requested and half arithmetic %s (verified)%s",
                    mpcl_fp16_arith_name(caps->fp16_arith), notes);
        return MPCL_OK;
    case MPCL_PRECISION_BF16:
        if (!caps->bf16_storage.passed) {
            *chosen = MPCL_PRECISION_FP32;
            mpcl_strfmt(why, why_len,
                        "bf16 needs bfloat16 storage by integer operations, and the bf16 check "
                        "failed: %s; use fp32",
                        caps->bf16_storage.reason);
            return MPCL_ERR_UNSUPPORTED;
        }
        *chosen = MPCL_PRECISION_BF16;
        mpcl_strfmt(why, why_len,
                    "bf16 was requested and the bf16 storage check passed; arithmetic stays in "
                    "float, loss scaling is off by default (bf16 has float's exponent range); "
                    "conversions: %s",
                    caps->bf16_intel_used
                        ? "cl_intel_bfloat16 built-ins (verified bit for bit)"
                        : caps->ext_bf16_intel ? "integer operations (the cl_intel_bfloat16 "
                                                 "built-ins failed the bit-for-bit check)"
                                               : "integer operations");
        return MPCL_OK;
    case MPCL_PRECISION_AUTO:
    default:
        if (arith_ok(caps)) {
            fp16_notes(caps, notes, sizeof notes);
            *chosen = MPCL_PRECISION_FP16;
            mpcl_strfmt(why, why_len, "auto: half arithmetic %s (verified bit for bit), so fp16%s",
                        mpcl_fp16_arith_name(caps->fp16_arith), notes);
        } else {
            *chosen = MPCL_PRECISION_FP32;
            mpcl_strfmt(why, why_len, "auto: half arithmetic is %s (%s), so fp32",
                        mpcl_fp16_arith_name(caps->fp16_arith), caps->fp16_arith_check.reason);
        }
        return MPCL_OK;
    }
}

const char *mpcl_variant_extra_define(const mpcl_context *ctx, mpcl_variant v)
{
    if (!ctx)
        return "";
    if (v == MPCL_VARIANT_BF16)
        return ctx->bf16_intel ? "-DMPCL_BF16_INTEL" : "";
    if (v == MPCL_VARIANT_FP16_STORAGE)
        return ctx->storage_defines; /* halfconv.c: the device's half conversion choice */
    return "";
}
