/* testutil.h — helpers shared by the Check suites: temporary directories,
 * running programs without a shell, a deterministic RNG, and the "is there a
 * device" question asked in a throw-away child process.
 *
 * The rule these helpers keep: the suite's parent process never calls
 * OpenCL (on PoCL a child forked after its parent used OpenCL hangs at its
 * first OpenCL call), so every OpenCL call happens in Check's forked test
 * children or in a child that exits right after. */
#ifndef MPCL_TESTUTIL_H
#define MPCL_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <check.h>

#include "internal.h"

/* Meson counts exit status 77 as "skipped". */
#define TU_EXIT_SKIP 77

/* What a throw-away child found out about the default device. */
typedef struct {
    int status;           /* mpcl_status of mpcl_context_create (fp32), or -1 when the child died */
    int is_pocl;          /* platform is "Portable Computing Language" */
    int ext_fp16;         /* device declares cl_khr_fp16 */
    int arith_passed;     /* the fp16 arithmetic check passed */
    int storage_passed;   /* the fp16 storage check passed */
    int bf16_passed;      /* the bf16 storage check passed */
    unsigned device_count;
    char message[512];    /* mpcl_last_error on failure */
} tu_device_info;

/* Creates a context (precision fp32, default device) in a forked child and
 * reports back through a pipe; the caller's process never touches OpenCL. */
void tu_probe_device(tu_device_info *info);

/* 1 when the status means "no platform or device" (the suite should skip). */
int tu_no_device(const tu_device_info *info);

/* Unsets the environment variables that would change what a test sees
 * (MPCL_KERNEL_DIR, MPCL_NO_CACHE); call first thing in main. */
void tu_clean_env(void);
/* For the suites that run the CLI: tu_clean_env, no MPCL_MODEL_DIR, and a
 * check that $MPCL_BIN is the built binary (0, with a message, when not). */
int tu_cli_init(const char *suite);

/* A fresh directory under $MPCL_TEST_TMPDIR (else $TMPDIR, else /tmp):
 * "<base>/<tag>-XXXXXX". Returns a malloc'ed path; aborts the test on error. */
char *tu_mkdtemp(const char *tag);
/* Removes a directory tree (best effort). */
void tu_rmtree(const char *path);

/* Reads a whole file (malloc'ed, NUL-terminated); NULL when unreadable. */
char *tu_read_file(const char *path, size_t *len);
/* Writes a file; 0 on success. */
int tu_write_file(const char *path, const void *data, size_t len);
/* 1 when path exists. */
int tu_exists(const char *path);
/* Number of entries in a directory (not . and ..); -1 when it does not exist. */
int tu_dir_entries(const char *path);

/* Runs argv[0] (a path, no PATH search) with argv, environment = the
 * current one plus `env_set` ("NAME=value" strings, NULL-terminated; may be
 * NULL). Captures stdout and stderr (malloc'ed, NUL-terminated). Returns the
 * exit status, 128 + signal when killed, or -1 when it could not start. */
int tu_run(char *const argv[], char *const env_set[], char **out, char **err);

/* splitmix64: deterministic, seeded. */
uint64_t tu_rand(uint64_t *state);

/* Float <-> bits. */
uint32_t tu_f2u(float f);
float tu_u2f(uint32_t u);

/* The environment variable `name`, or fail the test when it is unset. */
const char *tu_env(const char *name);

/* Runs suite s (CK_VERBOSITY decides the output) and returns the exit status
 * for main: 0 when every test passed, 1 otherwise. */
int tu_run_suite(Suite *s);

/* The built mpcl binary ($MPCL_BIN) run with the NULL-terminated arguments
 * (at most 38) and extra environment env (NULL-terminated, may be NULL). */
typedef struct {
    int rc;
    char *out, *err;
} tu_result;
tu_result tu_mpcl_run(char *const env[], const char *a0, ...);
void tu_result_free(tu_result *r);
#define TU_RC(r, want)                                                                           \
    ck_assert_msg((r).rc == (want), "exit %d, expected %d\nstdout:\n%s\nstderr:\n%s", (r).rc,     \
                  (want), (r).out, (r).err)

#endif
