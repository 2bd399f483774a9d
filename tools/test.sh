#!/bin/sh
# The whole default test suite on a fresh Debian 12 machine: install, build,
# set up the OpenCL implementations the suite runs on (PoCL and Intel's CPU
# runtime from PyPI, both kept inside build/), run every test with Check's
# per-suite summaries. Extra arguments go to `meson test` (e.g. --suite
# long, --suite intel, or a test name such as op_conv@pocl).
#
# MPCL_TEST_ICDS="pocl intel NAME=/abs/libdriver.so" chooses the
# implementations (default: pocl intel); see README, "Testing".
set -eu
cd "$(dirname "$0")/.."
./tools/install-deps.sh
./tools/build.sh
./tools/python-env.sh
icds=pocl,intel
if [ -n "${MPCL_TEST_ICDS:-}" ]; then
    icds=$(for e in $MPCL_TEST_ICDS; do echo "${e%%=*}"; done | paste -sd, -)
fi
meson configure build "-Dtest_icds=$icds"
./tools/test-icds.sh
# the interoperability test and every implementation that was set up must
# not skip in CI for want of packages
export MPCL_REQUIRE_INTEROP=1 MPCL_REQUIRE_ICDS=1 MPCL_REQUIRE_PLOT=1
rc=0
meson test -C build -v --print-errorlogs "$@" || rc=$?
python3 tools/test-summary.py build/meson-logs/testlog.json || true
exit $rc
