#!/bin/sh
# Configures (once) and builds mpcl in ./build. Used by main.sh and test.sh.
set -eu
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
    meson setup build -Dwerror=true -Dmpi=enabled # install-deps.sh installs Open MPI
fi
meson compile -C build
