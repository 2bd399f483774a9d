#!/bin/sh
# What every run of the test suite needs first (tools/test.sh,
# tools/sanitize.sh): the Debian packages, the build in ./build, the Python
# environment of the interoperability tests, and the OpenCL implementations
# of MPCL_TEST_ICDS (default: pocl intel) set up under build/icd. What the
# steps print goes to stderr; stdout gets one line, the implementations'
# names, comma-separated.
set -eu
cd "$(dirname "$0")/.."
./tools/install-deps.sh >&2
./tools/build.sh >&2
./tools/python-env.sh >&2
icds=pocl,intel
if [ -n "${MPCL_TEST_ICDS:-}" ]; then
    icds=$(for e in $MPCL_TEST_ICDS; do echo "${e%%=*}"; done | paste -sd, -)
fi
meson configure build "-Dtest_icds=$icds" >&2
./tools/test-icds.sh >&2
echo "$icds"
