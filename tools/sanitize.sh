#!/bin/sh
# The whole default test suite under AddressSanitizer (with LeakSanitizer)
# and UndefinedBehaviorSanitizer: library, CLI and tests are built with
# -Db_sanitize=address,undefined into build/sanitize, and every test runs as
# in tools/test.sh, on the same OpenCL implementations (build/icd/NAME,
# shared with the normal build).
#
# Any sanitizer report ends the process that made it with a non-zero status,
# so a report fails its test. The OpenCL drivers, the ICD loader and Open MPI
# are not built with the sanitizers and keep memory to the end of a process
# on purpose: their leaks are suppressed in tests/sanitize/lsan.supp, each
# entry with its reason, and nothing of mpcl's code is. (The suppressions
# used are not printed, as tests compare the tools' output; to see them:
# LSAN_OPTIONS=print_suppressions=1 tools/sanitize.sh TEST.)
#
# usage: tools/sanitize.sh [meson test arguments]   (e.g. a test name)
# Takes about three times as long as tools/test.sh.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
icds=$(./tools/test-setup.sh) # packages, build, Python, OpenCL implementations (output: stderr)

dir=build/sanitize
if [ ! -f "$dir/build.ninja" ]; then
    # b_lundef=false: a shared library built with the sanitizers leaves
    # their symbols to the executable's runtime. werror=false: GCC's
    # instrumentation makes its own warnings (GCC's manual says so; e.g. a
    # "null format string" for a constant table's entry), and the normal
    # build (tools/build.sh) is the one with -Werror.
    meson setup "$dir" -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=false \
        -Dmpi=enabled
fi
meson configure "$dir" "-Dtest_icds=$icds"
meson compile -C "$dir"
# the suite finds its OpenCL implementations, Python environment and PoCL
# cache under the build directory: the normal build's
for d in icd pyenv intel-ocl pocl-cache; do
    ln -sfn "$root/build/$d" "$dir/$d"
done

# halt_on_error / -fno-sanitize-recover: the first report ends the process.
# detect_stack_use_after_return is off: PoCL's and Intel's worker threads
# switch stacks (fibers), which it mistakes for errors.
# verify_asan_link_order=0: the oclgrind tests preload oclgrind's own
# OpenCL library, which then comes before the sanitizer's runtime (harmless:
# the executable carries it).
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=0:exitcode=86:detect_leaks=1:detect_stack_use_after_return=0:verify_asan_link_order=0:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
# use_tls=0: LeakSanitizer's tracer crashes reading the thread-local storage
# of PoCL's worker threads ("Tracer caught signal 11", then "LeakSanitizer
# has encountered a fatal error"); without thread-local storage as a root
# it can only report more leaks, never hide one.
export LSAN_OPTIONS="suppressions=$root/tests/sanitize/lsan.supp:print_suppressions=0:use_tls=0:exitcode=87:${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=88:${UBSAN_OPTIONS:-}"
# The dist tests (processes under mpirun): no leak detection. Open MPI keeps
# memory past MPI_Finalize (its FAQ says so), partly in components it has
# unloaded by then, whose stacks LeakSanitizer prints as "<unknown module>"
# that no suppression can name. AddressSanitizer and UBSan stay on there,
# and mpcl's code outside the exchange is leak-checked by every other test.
export MPCL_MPI_ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0"
# Check's own per-test timeouts, for the slower instrumented code
export CK_TIMEOUT_MULTIPLIER="${CK_TIMEOUT_MULTIPLIER:-4}"
export MPCL_REQUIRE_INTEROP=1 MPCL_REQUIRE_ICDS=1 MPCL_REQUIRE_PLOT=1
rc=0
meson test -C "$dir" -v --print-errorlogs --timeout-multiplier 4 "$@" || rc=$?
python3 tools/test-summary.py "$dir/meson-logs/testlog.json" || true
# what the sanitizers said, over all tests: reports (none where the run is
# clean) and the suppressed leaks
reports=$(grep -c -E '^(==[0-9]+==ERROR: |SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer))|runtime error: ' \
    "$dir/meson-logs/testlog.txt" || true)
echo "sanitize: $reports sanitizer report lines in $dir/meson-logs/testlog.txt"
exit $rc
