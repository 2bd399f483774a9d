/* test_device.c — device selection, status names, precision names and the
 * backend choice (pure functions on synthetic inputs), then the real device
 * list, contexts and the "no OpenCL platform" path (in Check's forked
 * children: the parent never calls OpenCL). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* --------------------------------------------------- synthetic device lists */

static mpcl_device_desc mk(unsigned p, unsigned d, mpcl_device_type t, const char *plat,
                           const char *name)
{
    mpcl_device_desc x;
    memset(&x, 0, sizeof x);
    x.platform_index = p;
    x.device_index = d;
    x.type = t;
    snprintf(x.platform, sizeof x.platform, "%s", plat);
    snprintf(x.name, sizeof x.name, "%s", name);
    snprintf(x.vendor, sizeof x.vendor, "vendor of %s", name);
    return x;
}

/* 0:0 cpu (PoCL), 1:0 gpu, 1:1 gpu, 2:0 accelerator */
static size_t mixed_list(mpcl_device_desc *l)
{
    l[0] = mk(0, 0, MPCL_DEVICE_CPU, "Portable Computing Language", "pthread-haswell-AMD EPYC");
    l[1] = mk(1, 0, MPCL_DEVICE_GPU, "NVIDIA CUDA", "NVIDIA GeForce RTX 3080");
    l[2] = mk(1, 1, MPCL_DEVICE_GPU, "NVIDIA CUDA", "Tesla T4");
    l[3] = mk(2, 0, MPCL_DEVICE_ACCELERATOR, "Intel(R) FPGA Emulation Platform",
              "Intel(R) FPGA Emulation Device");
    return 4;
}

static size_t sel_ok(const mpcl_device_desc *l, size_t n, const char *sel)
{
    size_t idx = 12345;
    char err[2048] = "";
    mpcl_status s = mpcl_device_select(l, n, sel, &idx, err, sizeof err);
    ck_assert_msg(s == MPCL_OK, "selector '%s': %s (%s)", sel ? sel : "(null)", mpcl_status_name(s),
                  err);
    ck_assert_msg(idx < n, "selector '%s' gave index %zu of %zu", sel ? sel : "(null)", idx, n);
    return idx;
}

static void sel_fails(const mpcl_device_desc *l, size_t n, const char *sel, char *err, size_t len)
{
    size_t idx = 12345;
    err[0] = '\0';
    mpcl_status s = mpcl_device_select(l, n, sel, &idx, err, len);
    ck_assert_msg(s == MPCL_ERR_NO_DEVICE, "selector '%s' should match nothing, got %s (index %zu)",
                  sel, mpcl_status_name(s), idx);
    ck_assert_msg(err[0] != '\0', "selector '%s': empty message", sel);
}

START_TEST(test_select_default)
{
    mpcl_device_desc l[8];
    size_t n = mixed_list(l);
    ck_assert_uint_eq(sel_ok(l, n, NULL), 1); /* the first GPU, not the first device */
    ck_assert_uint_eq(sel_ok(l, n, ""), 1);
    /* no GPU: the first device */
    mpcl_device_desc c[2] = {mk(0, 0, MPCL_DEVICE_ACCELERATOR, "A", "acc"),
                             mk(1, 0, MPCL_DEVICE_CPU, "B", "cpu0")};
    ck_assert_uint_eq(sel_ok(c, 2, NULL), 0);
    /* a GPU last */
    mpcl_device_desc g[3] = {mk(0, 0, MPCL_DEVICE_CPU, "A", "c0"), mk(0, 1, MPCL_DEVICE_OTHER, "A", "o"),
                             mk(1, 0, MPCL_DEVICE_GPU, "B", "g")};
    ck_assert_uint_eq(sel_ok(g, 3, NULL), 2);
}
END_TEST

START_TEST(test_select_index)
{
    mpcl_device_desc l[8];
    size_t n = mixed_list(l);
    ck_assert_uint_eq(sel_ok(l, n, "0:0"), 0);
    ck_assert_uint_eq(sel_ok(l, n, "1:0"), 1);
    ck_assert_uint_eq(sel_ok(l, n, "1:1"), 2);
    ck_assert_uint_eq(sel_ok(l, n, "2:0"), 3);
    char err[2048];
    sel_fails(l, n, "9:9", err, sizeof err);
    ck_assert_msg(strstr(err, "9:9") != NULL, "message does not name the selector: %s", err);
    sel_fails(l, n, "0:1", err, sizeof err); /* platform 0 has one device */
    sel_fails(l, n, "3:0", err, sizeof err);
    /* trailing junk is not an index */
    sel_fails(l, n, "1:0x", err, sizeof err);
}
END_TEST

START_TEST(test_select_type)
{
    mpcl_device_desc l[8];
    size_t n = mixed_list(l);
    ck_assert_uint_eq(sel_ok(l, n, "gpu"), 1);
    ck_assert_uint_eq(sel_ok(l, n, "GPU"), 1);
    ck_assert_uint_eq(sel_ok(l, n, "cpu"), 0);
    ck_assert_uint_eq(sel_ok(l, n, "Cpu"), 0);
    ck_assert_uint_eq(sel_ok(l, n, "accelerator"), 3);
    ck_assert_uint_eq(sel_ok(l, n, "ACCELERATOR"), 3);
    /* a type that no device has */
    mpcl_device_desc c[1] = {mk(0, 0, MPCL_DEVICE_CPU, "P", "c")};
    char err[2048];
    sel_fails(c, 1, "gpu", err, sizeof err);
    ck_assert_msg(strstr(err, "gpu") != NULL, "%s", err);
}
END_TEST

START_TEST(test_select_name)
{
    mpcl_device_desc l[8];
    size_t n = mixed_list(l);
    ck_assert_uint_eq(sel_ok(l, n, "rtx"), 1);
    ck_assert_uint_eq(sel_ok(l, n, "GeForce RTX 3080"), 1);
    ck_assert_uint_eq(sel_ok(l, n, "TESLA"), 2);
    ck_assert_uint_eq(sel_ok(l, n, "t4"), 2);
    ck_assert_uint_eq(sel_ok(l, n, "epyc"), 0);
    ck_assert_uint_eq(sel_ok(l, n, "fpga emulation device"), 3);
    /* platform names */
    ck_assert_uint_eq(sel_ok(l, n, "portable computing"), 0);
    ck_assert_uint_eq(sel_ok(l, n, "cuda"), 1); /* the first device of that platform */
    ck_assert_uint_eq(sel_ok(l, n, "FPGA Emulation Platform"), 3);
}
END_TEST

START_TEST(test_select_no_match_lists_devices)
{
    mpcl_device_desc l[8];
    size_t n = mixed_list(l);
    char err[4096];
    sel_fails(l, n, "nomatch-xyz", err, sizeof err);
    ck_assert_msg(strstr(err, "nomatch-xyz") != NULL, "message lacks the selector: %s", err);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(strstr(err, l[i].name) != NULL, "message lacks device '%s': %s", l[i].name, err);
        char idx[16];
        snprintf(idx, sizeof idx, "%u:%u", l[i].platform_index, l[i].device_index);
        ck_assert_msg(strstr(err, idx) != NULL, "message lacks index %s: %s", idx, err);
    }
    /* a short buffer is truncated, never overrun */
    char small[24];
    memset(small, 'Z', sizeof small);
    size_t idx;
    ck_assert_int_eq(mpcl_device_select(l, n, "nomatch-xyz", &idx, small, 16), MPCL_ERR_NO_DEVICE);
    ck_assert_uint_le(strlen(small), 15);
    for (size_t i = 16; i < sizeof small; i++)
        ck_assert_int_eq(small[i], 'Z');
    /* an empty list matches nothing, whatever the selector */
    ck_assert_int_eq(mpcl_device_select(l, 0, NULL, &idx, err, sizeof err), MPCL_ERR_NO_DEVICE);
    ck_assert_int_eq(mpcl_device_select(l, 0, "0:0", &idx, err, sizeof err), MPCL_ERR_NO_DEVICE);
}
END_TEST

/* ------------------------------------------------------ names and parsing */

START_TEST(test_precision_names)
{
    static const struct {
        mpcl_precision p;
        const char *name;
    } all[] = {{MPCL_PRECISION_AUTO, "auto"},
               {MPCL_PRECISION_FP16, "fp16"},
               {MPCL_PRECISION_FP16_STORAGE, "fp16-storage"},
               {MPCL_PRECISION_FP32, "fp32"},
               {MPCL_PRECISION_BF16, "bf16"}};
    for (size_t i = 0; i < 5; i++) {
        ck_assert_str_eq(mpcl_precision_name(all[i].p), all[i].name);
        mpcl_precision got = (mpcl_precision)99;
        ck_assert_int_eq(mpcl_precision_parse(all[i].name, &got), MPCL_OK);
        ck_assert_int_eq(got, all[i].p);
    }
    static const char *bad[] = {"", "fp8", "FP16x", "fp16 ", " fp16", "fp16storage", "fp16-storagex",
                                "fp64", "half", "float", "autox"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mpcl_precision got = MPCL_PRECISION_FP32;
        ck_assert_msg(mpcl_precision_parse(bad[i], &got) == MPCL_ERR_ARGUMENT, "accepted '%s'", bad[i]);
    }
    mpcl_precision got;
    ck_assert_int_eq(mpcl_precision_parse(NULL, &got), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_precision_parse("fp32", NULL), MPCL_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(mpcl_precision_name((mpcl_precision)42));
}
END_TEST

START_TEST(test_variant_names)
{
    ck_assert_str_eq(mpcl_variant_name(MPCL_VARIANT_FP16), "fp16");
    ck_assert_str_eq(mpcl_variant_name(MPCL_VARIANT_FP16_STORAGE), "fp16-storage");
    ck_assert_str_eq(mpcl_variant_name(MPCL_VARIANT_FP32), "fp32");
    ck_assert_str_eq(mpcl_variant_define(MPCL_VARIANT_FP16), "MPCL_FP16");
    ck_assert_str_eq(mpcl_variant_define(MPCL_VARIANT_FP16_STORAGE), "MPCL_FP16_STORAGE");
    ck_assert_str_eq(mpcl_variant_define(MPCL_VARIANT_FP32), "MPCL_FP32");
    ck_assert_str_eq(mpcl_variant_name(MPCL_VARIANT_BF16), "bf16");
    ck_assert_str_eq(mpcl_variant_define(MPCL_VARIANT_BF16), "MPCL_BF16");
    ck_assert_int_eq(mpcl_variant_of(MPCL_PRECISION_BF16), MPCL_VARIANT_BF16);
    ck_assert_int_eq(mpcl_variant_of(MPCL_PRECISION_FP16), MPCL_VARIANT_FP16);
    ck_assert_int_eq(mpcl_variant_of(MPCL_PRECISION_FP16_STORAGE), MPCL_VARIANT_FP16_STORAGE);
    ck_assert_int_eq(mpcl_variant_of(MPCL_PRECISION_FP32), MPCL_VARIANT_FP32);
    ck_assert_str_eq(mpcl_device_type_name(MPCL_DEVICE_CPU), "cpu");
    ck_assert_str_eq(mpcl_device_type_name(MPCL_DEVICE_GPU), "gpu");
    ck_assert_str_eq(mpcl_device_type_name(MPCL_DEVICE_ACCELERATOR), "accelerator");
    ck_assert_str_eq(mpcl_device_type_name(MPCL_DEVICE_OTHER), "other");
    ck_assert_str_eq(mpcl_fp16_arith_name(MPCL_FP16_UNSUPPORTED), "unsupported");
    ck_assert_str_eq(mpcl_fp16_arith_name(MPCL_FP16_DECLARED_WORKS), "declared and works");
    ck_assert_str_eq(mpcl_fp16_arith_name(MPCL_FP16_UNDECLARED_WORKS), "works but not declared");
    ck_assert_str_eq(mpcl_fp16_arith_name(MPCL_FP16_DECLARED_BROKEN), "declared but broken");
}
END_TEST

START_TEST(test_status_names)
{
    static const struct {
        mpcl_status s;
        int value;
        const char *name, *text;
    } all[] = {
#define ROW_(name, value, text) {MPCL_##name, value, "MPCL_" #name, text},
        MPCL_STATUS_MAP(ROW_)
#undef ROW_
    };
    size_t n = sizeof all / sizeof all[0];
    ck_assert_uint_eq(n, 15);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq((int)all[i].s, all[i].value);
        ck_assert_str_eq(mpcl_status_name(all[i].s), all[i].name);
        ck_assert_str_eq(mpcl_status_string(all[i].s), all[i].text);
        for (size_t j = 0; j < i; j++) {
            ck_assert_int_ne(all[i].value, all[j].value);
            ck_assert_str_ne(mpcl_status_string(all[i].s), mpcl_status_string(all[j].s));
        }
    }
    ck_assert_str_eq(mpcl_status_name(MPCL_OK), "MPCL_OK");
    ck_assert_str_eq(mpcl_status_name(MPCL_ERR_BUILD), "MPCL_ERR_BUILD");
    ck_assert_str_eq(mpcl_status_string(MPCL_ERR_BUILD), "kernel program build failed");
    /* never NULL, even for values outside the table */
    ck_assert_ptr_nonnull(mpcl_status_name((mpcl_status)999));
    ck_assert_ptr_nonnull(mpcl_status_string((mpcl_status)-7));
    ck_assert_str_ne(mpcl_status_name((mpcl_status)999), "MPCL_OK");
}
END_TEST

START_TEST(test_cl_error_names)
{
    ck_assert_str_eq(mpcl_cl_error_name(-5), "CL_OUT_OF_RESOURCES");
    ck_assert_str_eq(mpcl_cl_error_name(CL_OUT_OF_RESOURCES), "CL_OUT_OF_RESOURCES");
    ck_assert_str_eq(mpcl_cl_error_name(0), "CL_SUCCESS");
    ck_assert_str_eq(mpcl_cl_error_name(-1), "CL_DEVICE_NOT_FOUND");
    ck_assert_str_eq(mpcl_cl_error_name(-4), "CL_MEM_OBJECT_ALLOCATION_FAILURE");
    ck_assert_str_eq(mpcl_cl_error_name(-11), "CL_BUILD_PROGRAM_FAILURE");
    ck_assert_str_eq(mpcl_cl_error_name(-30), "CL_INVALID_VALUE");
    ck_assert_str_eq(mpcl_cl_error_name(-46), "CL_INVALID_KERNEL_NAME");
    ck_assert_str_eq(mpcl_cl_error_name(-54), "CL_INVALID_WORK_GROUP_SIZE");
    ck_assert_str_eq(mpcl_cl_error_name(-1001), "CL_PLATFORM_NOT_FOUND_KHR");
    ck_assert_str_eq(mpcl_cl_error_name(-9999), "CL_UNKNOWN_ERROR");
    ck_assert_str_eq(mpcl_clblast_status_name(-2045), "CLBlastNoHalfPrecision");
    ck_assert_str_eq(mpcl_clblast_status_name(-2044), "CLBlastNoDoublePrecision");
    ck_assert_str_eq(mpcl_clblast_status_name(0), "CLBlastSuccess");
    ck_assert_str_eq(mpcl_clblast_status_name(-1017), "CLBlastInvalidDimension");
    ck_assert_str_eq(mpcl_clblast_status_name(-1024), "CLBlastNotImplemented");
    /* CLBlast passes OpenCL's own codes through */
    ck_assert_str_eq(mpcl_clblast_status_name(-5), "CL_OUT_OF_RESOURCES");
    ck_assert_str_eq(mpcl_clblast_status_name(-11), "CL_BUILD_PROGRAM_FAILURE");
    ck_assert_ptr_nonnull(mpcl_clblast_status_name(-3000));
    ck_assert_str_ne(mpcl_clblast_status_name(-3000), "CLBlastSuccess");
}
END_TEST

/* -------------------------------------------------------- backend choice */

static mpcl_caps caps_with(int storage, mpcl_fp16_arith arith, int arith_passed)
{
    mpcl_caps c;
    memset(&c, 0, sizeof c);
    c.fp16_storage.passed = storage;
    snprintf(c.fp16_storage.reason, sizeof c.fp16_storage.reason, "%s",
             storage ? "storage-ok-marker" : "storage-broken-marker");
    c.fp16_arith = arith;
    c.fp16_arith_check.passed = arith_passed;
    snprintf(c.fp16_arith_check.reason, sizeof c.fp16_arith_check.reason, "%s",
             arith_passed ? "arith-ok-marker" : "arith-failed-marker");
    c.ext_fp16 = arith == MPCL_FP16_DECLARED_WORKS || arith == MPCL_FP16_DECLARED_BROKEN;
    return c;
}

static mpcl_status choose(const mpcl_caps *c, mpcl_precision req, mpcl_precision *got, char *why)
{
    why[0] = '\0';
    *got = (mpcl_precision)77;
    mpcl_status s = mpcl_backend_choose(c, req, got, why, MPCL_REASON_LEN);
    ck_assert_msg(why[0] != '\0', "no reason given for %s", mpcl_precision_name(req));
    return s;
}

#define HAS(hay, needle) ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' lacks '%s'", (hay), (needle))

START_TEST(test_backend_auto)
{
    char why[MPCL_REASON_LEN];
    mpcl_precision p;
    mpcl_caps c = caps_with(1, MPCL_FP16_DECLARED_WORKS, 1);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_AUTO, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP16);
    HAS(why, "fp16");

    c = caps_with(1, MPCL_FP16_UNDECLARED_WORKS, 1);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_AUTO, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP16);
    HAS(why, "not declared");

    c = caps_with(1, MPCL_FP16_UNSUPPORTED, 0);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_AUTO, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP32);
    HAS(why, "unsupported");
    HAS(why, "arith-failed-marker");
    HAS(why, "fp32");

    c = caps_with(1, MPCL_FP16_DECLARED_BROKEN, 0);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_AUTO, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP32);
    HAS(why, "broken");

    /* a classification without a passed check is not trusted */
    c = caps_with(1, MPCL_FP16_DECLARED_WORKS, 0);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_AUTO, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP32);

    /* auto never picks fp16-storage, even with storage alone working */
    c = caps_with(1, MPCL_FP16_UNSUPPORTED, 0);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_AUTO, &p, why), MPCL_OK);
    ck_assert_int_ne(p, MPCL_PRECISION_FP16_STORAGE);
}
END_TEST

START_TEST(test_backend_fp16)
{
    char why[MPCL_REASON_LEN];
    mpcl_precision p;
    mpcl_caps c = caps_with(1, MPCL_FP16_UNSUPPORTED, 0);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_FP16, &p, why), MPCL_ERR_UNSUPPORTED);
    ck_assert_int_ne(p, MPCL_PRECISION_FP16);
    HAS(why, "fp16");
    HAS(why, "unsupported");
    HAS(why, "arith-failed-marker");

    c = caps_with(1, MPCL_FP16_DECLARED_BROKEN, 0);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_FP16, &p, why), MPCL_ERR_UNSUPPORTED);
    HAS(why, "broken");

    c = caps_with(1, MPCL_FP16_DECLARED_WORKS, 1);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_FP16, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP16);

    c = caps_with(1, MPCL_FP16_UNDECLARED_WORKS, 1);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_FP16, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP16);

    /* a device that flushes half subnormals: accepted, and the reason says so */
    c = caps_with(1, MPCL_FP16_DECLARED_WORKS, 1);
    c.fp16_flushes_subnormals = 1;
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_FP16, &p, why), MPCL_OK);
    HAS(why, "subnormal");
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_AUTO, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP16);
    HAS(why, "subnormal");
}
END_TEST

/* bf16 needs only the bf16 storage check; auto never picks it; the reason
 * names the conversions in use. */
START_TEST(test_backend_bf16)
{
    char why[MPCL_REASON_LEN];
    mpcl_precision p;
    mpcl_caps c = caps_with(1, MPCL_FP16_DECLARED_WORKS, 1);
    c.bf16_storage.passed = 1;
    c.bf16_intel_used = 1;
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_AUTO, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP16);
    c = caps_with(1, MPCL_FP16_UNSUPPORTED, 0);
    c.bf16_storage.passed = 1;
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_AUTO, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP32);

    ck_assert_int_eq(choose(&c, MPCL_PRECISION_BF16, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_BF16);
    HAS(why, "bf16");
    HAS(why, "loss scaling is off");
    HAS(why, "integer operations");
    c.ext_bf16_intel = 1;
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_BF16, &p, why), MPCL_OK);
    HAS(why, "failed the bit-for-bit check");
    c.bf16_intel_used = 1;
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_BF16, &p, why), MPCL_OK);
    HAS(why, "cl_intel_bfloat16 built-ins");

    c.bf16_storage.passed = 0;
    snprintf(c.bf16_storage.reason, sizeof c.bf16_storage.reason, "bf16-broken-marker");
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_BF16, &p, why), MPCL_ERR_UNSUPPORTED);
    ck_assert_int_ne(p, MPCL_PRECISION_BF16);
    HAS(why, "bf16-broken-marker");
}
END_TEST

START_TEST(test_backend_storage_and_fp32)
{
    char why[MPCL_REASON_LEN];
    mpcl_precision p;
    /* fp16-storage needs only the storage check */
    mpcl_caps c = caps_with(1, MPCL_FP16_UNSUPPORTED, 0);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_FP16_STORAGE, &p, why), MPCL_OK);
    ck_assert_int_eq(p, MPCL_PRECISION_FP16_STORAGE);
    HAS(why, "fp16-storage");

    c = caps_with(0, MPCL_FP16_DECLARED_WORKS, 1);
    ck_assert_int_eq(choose(&c, MPCL_PRECISION_FP16_STORAGE, &p, why), MPCL_ERR_UNSUPPORTED);
    ck_assert_int_ne(p, MPCL_PRECISION_FP16_STORAGE);
    HAS(why, "storage-broken-marker");

    /* fp32 whatever the checks say */
    for (int storage = 0; storage < 2; storage++)
        for (int a = MPCL_FP16_UNSUPPORTED; a <= MPCL_FP16_DECLARED_BROKEN; a++) {
            c = caps_with(storage, (mpcl_fp16_arith)a, a == 1 || a == 2);
            ck_assert_int_eq(choose(&c, MPCL_PRECISION_FP32, &p, why), MPCL_OK);
            ck_assert_int_eq(p, MPCL_PRECISION_FP32);
            HAS(why, "fp32");
        }

    /* a short reason buffer is truncated, never overrun */
    char small[32];
    memset(small, 'Z', sizeof small);
    c = caps_with(1, MPCL_FP16_UNSUPPORTED, 0);
    ck_assert_int_eq(mpcl_backend_choose(&c, MPCL_PRECISION_FP16, &p, small, 8), MPCL_ERR_UNSUPPORTED);
    ck_assert_uint_le(strlen(small), 7);
    for (size_t i = 8; i < sizeof small; i++)
        ck_assert_int_eq(small[i], 'Z');
}
END_TEST

/* --------------------------------------------------------- real devices */

static mpcl_device_desc *real_list(size_t *n)
{
    char err[2048];
    size_t count = 0;
    mpcl_status s = mpcl_device_list(NULL, 0, &count, err, sizeof err);
    ck_assert_msg(s == MPCL_OK, "mpcl_device_list: %s: %s", mpcl_status_name(s), err);
    ck_assert_uint_ge(count, 1);
    mpcl_device_desc *l = calloc(count + 1, sizeof *l);
    ck_assert_ptr_nonnull(l);
    size_t again = 0;
    s = mpcl_device_list(l, count, &again, err, sizeof err);
    ck_assert_msg(s == MPCL_OK, "%s", err);
    ck_assert_uint_eq(again, count);
    *n = count;
    return l;
}

START_TEST(test_real_device_list)
{
    size_t n = 0;
    mpcl_device_desc *l = real_list(&n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(l[i].name[0] != '\0', "device %zu has no name", i);
        ck_assert_msg(l[i].platform[0] != '\0', "device %zu has no platform name", i);
        ck_assert(l[i].type == MPCL_DEVICE_CPU || l[i].type == MPCL_DEVICE_GPU ||
                  l[i].type == MPCL_DEVICE_ACCELERATOR || l[i].type == MPCL_DEVICE_OTHER);
        /* indices count devices within their platform, in order */
        if (i > 0 && l[i].platform_index == l[i - 1].platform_index)
            ck_assert_uint_eq(l[i].device_index, l[i - 1].device_index + 1);
        else
            ck_assert_uint_eq(l[i].device_index, 0);
        /* each device's own "P:D" selects it */
        char sel[32];
        snprintf(sel, sizeof sel, "%u:%u", l[i].platform_index, l[i].device_index);
        size_t idx = 999;
        char err[2048];
        ck_assert_int_eq(mpcl_device_select(l, n, sel, &idx, err, sizeof err), MPCL_OK);
        ck_assert_uint_eq(idx, i);
    }
    /* cap smaller than the count: writes cap entries, reports the total */
    mpcl_device_desc one[2];
    memset(one, 0, sizeof one);
    one[1].name[0] = 'Z';
    size_t count = 0;
    ck_assert_int_eq(mpcl_device_list(one, 1, &count, NULL, 0), MPCL_OK);
    ck_assert_uint_eq(count, n);
    ck_assert_str_eq(one[0].name, l[0].name);
    ck_assert_int_eq(one[1].name[0], 'Z');
    /* bad arguments */
    char err[256];
    ck_assert_int_eq(mpcl_device_list(NULL, 1, &count, err, sizeof err), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_device_list(one, 1, NULL, err, sizeof err), MPCL_ERR_ARGUMENT);
    free(l);
}
END_TEST

START_TEST(test_real_context_cpu)
{
    size_t n = 0;
    mpcl_device_desc *l = real_list(&n);
    int have_cpu = 0;
    for (size_t i = 0; i < n; i++)
        have_cpu |= l[i].type == MPCL_DEVICE_CPU;
    mpcl_options opt;
    mpcl_options_init(&opt);
    ck_assert_int_eq(opt.precision, MPCL_PRECISION_AUTO);
    ck_assert_ptr_null(opt.device);
    opt.device = have_cpu ? "cpu" : NULL;
    opt.precision = MPCL_PRECISION_FP32;
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_msg(s == MPCL_OK, "context on %s: %s: %s", have_cpu ? "cpu" : "the default device",
                  mpcl_status_name(s), mpcl_last_error(ctx));
    ck_assert_ptr_nonnull(ctx);
    ck_assert_str_eq(mpcl_last_error(ctx), "");
    if (have_cpu)
        ck_assert_int_eq(ctx->desc.type, MPCL_DEVICE_CPU);
    const char *why = NULL;
    ck_assert_int_eq(mpcl_precision_chosen(ctx, &why), MPCL_PRECISION_FP32);
    ck_assert_ptr_nonnull(why);
    ck_assert_msg(strstr(why, "fp32") != NULL, "%s", why);
    ck_assert_int_eq(mpcl_precision_chosen(ctx, NULL), MPCL_PRECISION_FP32);
    mpcl_context_destroy(ctx);
    mpcl_context_destroy(NULL); /* NULL-safe */
    free(l);
}
END_TEST

START_TEST(test_real_context_by_index)
{
    size_t n = 0;
    mpcl_device_desc *l = real_list(&n);
    const mpcl_device_desc *last = &l[n - 1];
    char sel[32];
    snprintf(sel, sizeof sel, "%u:%u", last->platform_index, last->device_index);
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.device = sel;
    opt.precision = MPCL_PRECISION_FP32;
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_msg(s == MPCL_OK, "%s: %s", sel, mpcl_last_error(ctx));
    ck_assert_str_eq(ctx->desc.name, last->name);
    ck_assert_str_eq(ctx->desc.platform, last->platform);
    ck_assert_uint_eq(ctx->desc.platform_index, last->platform_index);
    ck_assert_uint_eq(ctx->desc.device_index, last->device_index);
    mpcl_context_destroy(ctx);
    free(l);
}
END_TEST

static void assert_no_device_message(const char *msg, const char *sel, const mpcl_device_desc *l,
                                     size_t n)
{
    ck_assert_msg(strstr(msg, sel) != NULL, "message lacks the selector '%s': %s", sel, msg);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(strstr(msg, l[i].name) != NULL, "message lacks device '%s': %s", l[i].name, msg);
}

START_TEST(test_real_no_match)
{
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.device = "nomatch-xyz";
    mpcl_context *ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_int_eq(s, MPCL_ERR_NO_DEVICE);
    ck_assert_ptr_nonnull(ctx); /* carries the message */
    size_t n = 0;
    mpcl_device_desc *l = real_list(&n);
    assert_no_device_message(mpcl_last_error(ctx), "nomatch-xyz", l, n);
    /* a failed context is not usable */
    char before[MPCL_ERR_LEN];
    snprintf(before, sizeof before, "%s", mpcl_last_error(ctx));
    mpcl_caps caps;
    ck_assert_int_eq(mpcl_probe(ctx, NULL, &caps), MPCL_ERR_STATE);
    ck_assert_str_eq(mpcl_last_error(ctx), before); /* the creation error stays readable */
    mpcl_context_destroy(ctx);

    opt.device = "9:9";
    ctx = NULL;
    ck_assert_int_eq(mpcl_context_create(&opt, &ctx), MPCL_ERR_NO_DEVICE);
    assert_no_device_message(mpcl_last_error(ctx), "9:9", l, n);
    mpcl_context_destroy(ctx);
    free(l);
}
END_TEST

START_TEST(test_real_env_selector)
{
    /* MPCL_DEVICE applies when opt.device is NULL ... */
    setenv("MPCL_DEVICE", "nomatch-from-env", 1);
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = MPCL_PRECISION_FP32;
    mpcl_context *ctx = NULL;
    ck_assert_int_eq(mpcl_context_create(&opt, &ctx), MPCL_ERR_NO_DEVICE);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "nomatch-from-env") != NULL, "%s", mpcl_last_error(ctx));
    mpcl_context_destroy(ctx);
    /* ... and opt.device wins over it */
    size_t n = 0;
    mpcl_device_desc *l = real_list(&n);
    char sel[32];
    snprintf(sel, sizeof sel, "%u:%u", l[0].platform_index, l[0].device_index);
    free(l);
    opt.device = sel;
    ctx = NULL;
    mpcl_status s = mpcl_context_create(&opt, &ctx);
    ck_assert_msg(s == MPCL_OK, "%s", mpcl_last_error(ctx));
    mpcl_context_destroy(ctx);
    unsetenv("MPCL_DEVICE");
}
END_TEST

START_TEST(test_context_bad_arguments)
{
    ck_assert_int_eq(mpcl_context_create(NULL, NULL), MPCL_ERR_ARGUMENT);
    mpcl_options opt;
    mpcl_options_init(&opt);
    opt.precision = (mpcl_precision)17;
    mpcl_context *ctx = NULL;
    ck_assert_int_eq(mpcl_context_create(&opt, &ctx), MPCL_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(ctx);
    ck_assert_msg(strstr(mpcl_last_error(ctx), "precision") != NULL, "%s", mpcl_last_error(ctx));
    const char *why = NULL;
    (void)mpcl_precision_chosen(ctx, &why);
    ck_assert_ptr_nonnull(why);
    mpcl_context_destroy(ctx);
    ck_assert_ptr_nonnull(mpcl_last_error(NULL));
}
END_TEST

/* With the ICD loader pointed at an empty vendor directory before the
 * first OpenCL call of this (forked) process, no platform exists. */
START_TEST(test_no_platform)
{
    char *dir = tu_mkdtemp("no-icd");
    setenv("OCL_ICD_VENDORS", dir, 1);
    setenv("OPENCL_VENDOR_PATH", dir, 1);
    unsetenv("OCL_ICD_FILENAMES");
    char err[2048];
    size_t count = 99;
    mpcl_status s = mpcl_device_list(NULL, 0, &count, err, sizeof err);
    ck_assert_msg(s == MPCL_ERR_NO_PLATFORM, "mpcl_device_list: %s (%s)", mpcl_status_name(s), err);
    ck_assert_uint_eq(count, 0);
    HAS(err, "no OpenCL platform");
    HAS(err, "pocl-opencl-icd");

    mpcl_context *ctx = NULL;
    s = mpcl_context_create(NULL, &ctx);
    ck_assert_int_eq(s, MPCL_ERR_NO_PLATFORM);
    ck_assert_ptr_nonnull(ctx);
    HAS(mpcl_last_error(ctx), "no OpenCL platform");
    HAS(mpcl_last_error(ctx), "pocl-opencl-icd");
    mpcl_context_destroy(ctx);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    tu_clean_env();
    Suite *s = suite_create("device");
    TCase *pure = tcase_create("pure");
    tcase_add_test(pure, test_select_default);
    tcase_add_test(pure, test_select_index);
    tcase_add_test(pure, test_select_type);
    tcase_add_test(pure, test_select_name);
    tcase_add_test(pure, test_select_no_match_lists_devices);
    tcase_add_test(pure, test_precision_names);
    tcase_add_test(pure, test_backend_bf16);
    tcase_add_test(pure, test_variant_names);
    tcase_add_test(pure, test_status_names);
    tcase_add_test(pure, test_cl_error_names);
    tcase_add_test(pure, test_backend_auto);
    tcase_add_test(pure, test_backend_fp16);
    tcase_add_test(pure, test_backend_storage_and_fp32);
    tcase_add_test(pure, test_context_bad_arguments);
    suite_add_tcase(s, pure);

    const char *fork_env = getenv("CK_FORK");
    int forking = !(fork_env && strcmp(fork_env, "no") == 0);
    if (forking) { /* needs a fresh process per test: the ICD loader reads its variables once */
        TCase *np = tcase_create("no-platform");
        tcase_add_test(np, test_no_platform);
        suite_add_tcase(s, np);
    }

    tu_device_info dev;
    tu_probe_device(&dev);
    if (tu_no_device(&dev)) {
        fprintf(stderr, "test_device: no OpenCL device (%s: %s); skipping the real-device tests\n",
                mpcl_status_name((mpcl_status)dev.status), dev.message);
    } else {
        TCase *real = tcase_create("real");
        tcase_add_test(real, test_real_device_list);
        tcase_add_test(real, test_real_context_cpu);
        tcase_add_test(real, test_real_context_by_index);
        tcase_add_test(real, test_real_no_match);
        tcase_add_test(real, test_real_env_selector);
        suite_add_tcase(s, real);
    }
    return tu_run_suite(s);
}
