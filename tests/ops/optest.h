/* optest.h — shared by the op test suites (tests/ops/test_*.c).
 *
 * Each suite runs without forking (CK_FORK=no: OpenCL state cannot cross a
 * fork on some drivers), with one context per precision mode the device
 * accepts, created before the runner starts. A test loops over those modes
 * with tcase_add_loop_test(tc, fn, 0, optest_nmodes) and gets its context
 * from optest_modes[_i].
 *
 * References are computed in double on the host from the inputs as the
 * device holds them (read back after upload, so fp16 rounding of inputs is
 * not counted as op error). MPCL_TEST_SMALL=1 (set for the oclgrind runs)
 * asks suites for small shapes. */
#ifndef MPCL_OPTEST_H
#define MPCL_OPTEST_H

#include <check.h>
#include <stdint.h>

#include "internal.h"

typedef struct {
    mpcl_precision mode;
    mpcl_context *ctx;
    const char *name;
} optest_mode;

extern optest_mode optest_modes[4];
extern int optest_nmodes;

/* Opens a context for fp32, fp16-storage, fp16 and bf16 (those the device runs;
 * the others are reported as skipped). Exits 77 when there is no device. */
void optest_init(void);
void optest_cleanup(void);
/* Non-zero when MPCL_TEST_SMALL=1. */
int optest_small(void);
/* The work-group cap of this run of the suite (0: none). */
size_t optest_cap(void);
/* Runs the suite without forking, prints Check's summary; returns the exit
 * code. With MPCL_TEST_CAPS=1,7,16,32 the suite runs once per value, its
 * contexts opened with that mpcl_options.max_work_group_size (and
 * MPCL_MAX_WORK_GROUP set for contexts the tests open), and fails when any
 * launch used a larger work-group. */
int optest_run(Suite *s);

/* Deterministic uniform values in [lo, hi). */
void optest_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);
/* Creates a tensor (dims terminated by 0) and uploads data (NULL: leaves it
 * uninitialised). Fails the test on error. */
mpcl_tensor *optest_tensor(mpcl_context *ctx, mpcl_dtype dtype, mpcl_mem_tag tag, const float *data,
                           size_t d0, size_t d1, size_t d2, size_t d3);
/* Downloads numel floats into a new malloc'ed array (caller frees); waits. */
float *optest_download(const mpcl_tensor *t);
/* Replaces host values by what the device holds for them (fp16 or bf16 rounding). */
void optest_quantize(mpcl_context *ctx, float *x, size_t n);
/* x rounded to the storage dtype of ctx (f16, bf16; unchanged for f32). */
float optest_round_storage(const mpcl_context *ctx, float x);
/* Unit roundoff of one stored value in a mode: 2^-24 (fp32), 2^-11 (fp16
 * modes), 2^-8 (bf16: 8 significant bits). */
double optest_unit_roundoff(mpcl_precision mode);

/* Tolerance per mode for results of a computation of depth ~k (k terms
 * summed): fp32 ~ 1e-5 relative, fp16 storage ~ half's epsilon per stored
 * value, bf16 ~ bf16's (2^-8). Documented in docs/ops.md. */
double optest_rtol(mpcl_precision mode);
/* Asserts |got - ref| <= atol + rtol * |ref| elementwise; on failure reports
 * the first bad index, the worst error and the op name. */
void optest_assert_close(const char *what, const float *got, const double *ref, size_t n,
                         double atol, double rtol);

/* A model of the spec text (parsed as "name"), created with max_batch,
 * seed 3 and inference as given; fails the test on error. */
mpcl_model *optest_model(mpcl_context *ctx, const char *text, const char *name, size_t max_batch,
                         int inference);
/* Every parameter uniform in [-bound, bound) (seeded per tensor from
 * seed), layer-norm weights ("ln_*.weight") shifted by 1; the working copy
 * refreshed. Larger than GPT-2's initialisation, so that gradients stand
 * above finite differences' noise and logits are not all alike. */
void optest_set_weights(mpcl_model *m, uint64_t seed, float bound);

#endif
