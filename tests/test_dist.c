/* test_dist.c — the data-parallel API without a launcher (host only): the
 * wire types' names, the options' defaults, how a process tells that an
 * MPI launcher started it, a NULL group as a group of one, and, in a build
 * without MPI, the error that says so. The exchange itself, with mpirun
 * -np 2 against one process, is tests/dist/test-dist.sh. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

START_TEST(wire_names)
{
    static const char *names[] = {"f32", "f16", "bf16"};
    for (int w = MPCL_WIRE_F32; w <= MPCL_WIRE_BF16; w++) {
        mpcl_wire back = MPCL_WIRE_BF16;
        ck_assert_str_eq(mpcl_wire_name((mpcl_wire)w), names[w]);
        ck_assert_int_eq(mpcl_wire_parse(names[w], &back), MPCL_OK);
        ck_assert_int_eq(back, w);
    }
    mpcl_wire w = MPCL_WIRE_F16;
    ck_assert_int_eq(mpcl_wire_parse("fp32", &w), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_wire_parse("", &w), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_wire_parse(NULL, &w), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(w, MPCL_WIRE_F16); /* unchanged on failure */
    ck_assert_str_eq(mpcl_wire_name((mpcl_wire)7), "unknown");
}
END_TEST

START_TEST(option_defaults)
{
    mpcl_dist_options o;
    memset(&o, 0xff, sizeof o);
    mpcl_dist_options_init(&o);
    ck_assert_int_eq(o.wire, MPCL_WIRE_F32);
    ck_assert_uint_eq(o.bucket_bytes, 0); /* auto */
    ck_assert_uint_eq(o.check_every, 0);
    ck_assert(o.timeout_s == 1800.0);
}
END_TEST

START_TEST(launcher_environment)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    ck_assert_int_eq(mpcl_dist_launched(), 0);
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        setenv(vars[i], "2", 1);
        ck_assert_msg(mpcl_dist_launched() == 1, "%s set, but not seen as launched", vars[i]);
        unsetenv(vars[i]);
    }
    ck_assert_int_eq(mpcl_dist_launched(), 0);
}
END_TEST

START_TEST(group_of_one)
{
    mpcl_dist_info di;
    memset(&di, 0x5a, sizeof di);
    mpcl_dist_get_info(NULL, &di);
    ck_assert_int_eq(di.rank, 0);
    ck_assert_int_eq(di.size, 1);
    ck_assert_uint_eq(di.steps, 0);
    size_t first = 9, count = 9;
    mpcl_dist_shard(NULL, 37, &first, &count);
    ck_assert_uint_eq(first, 0);
    ck_assert_uint_eq(count, 37);
    char msg[64] = "kept";
    ck_assert_int_eq(mpcl_dist_agree(NULL, MPCL_ERR_IO, msg, sizeof msg), MPCL_ERR_IO);
    ck_assert_str_eq(msg, "kept");
    int any = -1;
    ck_assert_int_eq(mpcl_dist_any(NULL, 3, &any), MPCL_OK);
    ck_assert_int_eq(any, 1);
    ck_assert_int_eq(mpcl_dist_any(NULL, 0, &any), MPCL_OK);
    ck_assert_int_eq(any, 0);
    ck_assert_int_eq(mpcl_dist_any(NULL, 0, NULL), MPCL_ERR_ARGUMENT);
    int v = 42;
    ck_assert_int_eq(mpcl_dist_bcast(NULL, &v, sizeof v), MPCL_OK);
    ck_assert_int_eq(v, 42);
    ck_assert_int_eq(mpcl_dist_bcast(NULL, NULL, 4), MPCL_ERR_ARGUMENT);
    ck_assert_ptr_null(mpcl_trainer_dist(NULL));
    ck_assert_int_eq(mpcl_trainer_set_dist(NULL, NULL, NULL), MPCL_ERR_ARGUMENT);
    ck_assert_int_eq(mpcl_status_name(MPCL_ERR_TIMEOUT)[0], 'M');
    ck_assert_str_eq(mpcl_status_name(MPCL_ERR_TIMEOUT), "MPCL_ERR_TIMEOUT");
}
END_TEST

START_TEST(built_as_configured)
{
#ifdef MPCL_HAVE_MPI
    ck_assert_int_eq(mpcl_dist_built(), 1);
#else
    ck_assert_int_eq(mpcl_dist_built(), 0);
    mpcl_dist *d = (mpcl_dist *)&d;
    char err[256] = "";
    ck_assert_int_eq(mpcl_dist_init(NULL, NULL, &d, err, sizeof err), MPCL_ERR_UNSUPPORTED);
    ck_assert_ptr_null(d);
    ck_assert_msg(strstr(err, "without MPI") != NULL, "message: %s", err);
#endif
}
END_TEST

int main(void)
{
    tu_clean_env();
    Suite *s = suite_create("dist");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, wire_names);
    tcase_add_test(tc, option_defaults);
    tcase_add_test(tc, launcher_environment);
    tcase_add_test(tc, group_of_one);
    tcase_add_test(tc, built_as_configured);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
