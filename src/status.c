/* status.c — status names, error messages, OpenCL and CLBlast code names. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

const char *mpcl_version(void) { return MPCL_VERSION_STRING; }

const char *mpcl_status_name(mpcl_status s)
{
    switch (s) {
#define MPCL_STATUS_NAME_(name, value, text) \
    case MPCL_##name:                        \
        return "MPCL_" #name;
        MPCL_STATUS_MAP(MPCL_STATUS_NAME_)
#undef MPCL_STATUS_NAME_
    }
    return "MPCL_UNKNOWN_STATUS";
}

const char *mpcl_status_string(mpcl_status s)
{
    switch (s) {
#define MPCL_STATUS_TEXT_(name, value, text) \
    case MPCL_##name:                        \
        return text;
        MPCL_STATUS_MAP(MPCL_STATUS_TEXT_)
#undef MPCL_STATUS_TEXT_
    }
    return "unknown status";
}

double mpcl_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

char *mpcl_strfmt(char *dst, size_t len, const char *fmt, ...)
{
    if (len == 0)
        return dst;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, len, fmt, ap);
    va_end(ap);
    if (n < 0)
        dst[0] = '\0';
    return dst;
}

mpcl_status mpcl_set_error(mpcl_context *ctx, mpcl_status s, const char *fmt, ...)
{
    if (ctx) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
        va_end(ap);
        if (n < 0)
            ctx->err[0] = '\0';
    }
    return s;
}

void mpcl_clear_error(mpcl_context *ctx)
{
    if (ctx)
        ctx->err[0] = '\0';
}

const char *mpcl_last_error(const mpcl_context *ctx)
{
    if (!ctx)
        return "out of host memory (no context could be allocated)";
    return ctx->err;
}

const char *mpcl_cl_error_name(cl_int err)
{
    switch (err) {
#define N_(code) \
    case code:   \
        return #code;
        N_(CL_SUCCESS) N_(CL_DEVICE_NOT_FOUND) N_(CL_DEVICE_NOT_AVAILABLE)
        N_(CL_COMPILER_NOT_AVAILABLE) N_(CL_MEM_OBJECT_ALLOCATION_FAILURE)
        N_(CL_OUT_OF_RESOURCES) N_(CL_OUT_OF_HOST_MEMORY)
        N_(CL_PROFILING_INFO_NOT_AVAILABLE) N_(CL_MEM_COPY_OVERLAP)
        N_(CL_IMAGE_FORMAT_MISMATCH) N_(CL_IMAGE_FORMAT_NOT_SUPPORTED)
        N_(CL_BUILD_PROGRAM_FAILURE) N_(CL_MAP_FAILURE)
        N_(CL_MISALIGNED_SUB_BUFFER_OFFSET) N_(CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST)
        N_(CL_COMPILE_PROGRAM_FAILURE) N_(CL_LINKER_NOT_AVAILABLE) N_(CL_LINK_PROGRAM_FAILURE)
        N_(CL_DEVICE_PARTITION_FAILED) N_(CL_KERNEL_ARG_INFO_NOT_AVAILABLE)
        N_(CL_INVALID_VALUE) N_(CL_INVALID_DEVICE_TYPE) N_(CL_INVALID_PLATFORM)
        N_(CL_INVALID_DEVICE) N_(CL_INVALID_CONTEXT) N_(CL_INVALID_QUEUE_PROPERTIES)
        N_(CL_INVALID_COMMAND_QUEUE) N_(CL_INVALID_HOST_PTR) N_(CL_INVALID_MEM_OBJECT)
        N_(CL_INVALID_IMAGE_FORMAT_DESCRIPTOR) N_(CL_INVALID_IMAGE_SIZE) N_(CL_INVALID_SAMPLER)
        N_(CL_INVALID_BINARY) N_(CL_INVALID_BUILD_OPTIONS) N_(CL_INVALID_PROGRAM)
        N_(CL_INVALID_PROGRAM_EXECUTABLE) N_(CL_INVALID_KERNEL_NAME)
        N_(CL_INVALID_KERNEL_DEFINITION) N_(CL_INVALID_KERNEL) N_(CL_INVALID_ARG_INDEX)
        N_(CL_INVALID_ARG_VALUE) N_(CL_INVALID_ARG_SIZE) N_(CL_INVALID_KERNEL_ARGS)
        N_(CL_INVALID_WORK_DIMENSION) N_(CL_INVALID_WORK_GROUP_SIZE)
        N_(CL_INVALID_WORK_ITEM_SIZE) N_(CL_INVALID_GLOBAL_OFFSET)
        N_(CL_INVALID_EVENT_WAIT_LIST) N_(CL_INVALID_EVENT) N_(CL_INVALID_OPERATION)
        N_(CL_INVALID_GL_OBJECT) N_(CL_INVALID_BUFFER_SIZE) N_(CL_INVALID_MIP_LEVEL)
        N_(CL_INVALID_GLOBAL_WORK_SIZE) N_(CL_INVALID_PROPERTY)
        N_(CL_INVALID_IMAGE_DESCRIPTOR) N_(CL_INVALID_COMPILER_OPTIONS)
        N_(CL_INVALID_LINKER_OPTIONS) N_(CL_INVALID_DEVICE_PARTITION_COUNT)
#undef N_
    case -1001:
        return "CL_PLATFORM_NOT_FOUND_KHR";
    }
    return "CL_UNKNOWN_ERROR";
}

const char *mpcl_clblast_status_name(int status)
{
    /* CLBlast reuses OpenCL's codes above -1000 and has its own below. */
    switch (status) {
    case 0: return "CLBlastSuccess";
    case -1024: return "CLBlastNotImplemented";
    case -1022: return "CLBlastInvalidMatrixA";
    case -1021: return "CLBlastInvalidMatrixB";
    case -1020: return "CLBlastInvalidMatrixC";
    case -1019: return "CLBlastInvalidVectorX";
    case -1018: return "CLBlastInvalidVectorY";
    case -1017: return "CLBlastInvalidDimension";
    case -1016: return "CLBlastInvalidLeadDimA";
    case -1015: return "CLBlastInvalidLeadDimB";
    case -1014: return "CLBlastInvalidLeadDimC";
    case -1013: return "CLBlastInvalidIncrementX";
    case -1012: return "CLBlastInvalidIncrementY";
    case -1011: return "CLBlastInsufficientMemoryA";
    case -1010: return "CLBlastInsufficientMemoryB";
    case -1009: return "CLBlastInsufficientMemoryC";
    case -1008: return "CLBlastInsufficientMemoryX";
    case -1007: return "CLBlastInsufficientMemoryY";
    case -2050: return "CLBlastInsufficientMemoryTemp";
    case -2049: return "CLBlastInvalidBatchCount";
    case -2048: return "CLBlastInvalidOverrideKernel";
    case -2047: return "CLBlastMissingOverrideParameter";
    case -2046: return "CLBlastInvalidLocalMemUsage";
    case -2045: return "CLBlastNoHalfPrecision";
    case -2044: return "CLBlastNoDoublePrecision";
    case -2043: return "CLBlastInvalidVectorScalar";
    case -2042: return "CLBlastInsufficientMemoryScalar";
    case -2041: return "CLBlastDatabaseError";
    case -2040: return "CLBlastUnknownError";
    case -2039: return "CLBlastUnexpectedError";
    default: break;
    }
    if (status > -1000)
        return mpcl_cl_error_name(status);
    return "CLBlastUnknownStatus";
}
