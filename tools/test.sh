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
./tools/test-setup.sh >/dev/null # packages, build, Python, OpenCL implementations (their output: stderr)
# the interoperability test and every implementation that was set up must
# not skip in CI for want of packages
export MPCL_REQUIRE_INTEROP=1 MPCL_REQUIRE_ICDS=1 MPCL_REQUIRE_PLOT=1
rc=0
meson test -C build -v --print-errorlogs "$@" || rc=$?
python3 tools/test-summary.py build/meson-logs/testlog.json || true
exit $rc
