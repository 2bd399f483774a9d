#!/bin/sh
# The whole default test suite on a fresh Debian 12 machine: install, build,
# run every test with Check's per-suite summaries. Extra arguments go to
# `meson test` (e.g. --suite long, or a test name).
set -eu
cd "$(dirname "$0")/.."
./tools/install-deps.sh
./tools/build.sh
./tools/python-env.sh
# the interoperability test must not skip in CI for want of Python packages
export MPCL_REQUIRE_INTEROP=1
exec meson test -C build -v --print-errorlogs "$@"
