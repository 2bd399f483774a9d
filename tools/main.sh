#!/bin/sh
# The main job on a fresh Debian 12 machine: install what mpcl needs, build it,
# and run it. Extra arguments go to `mpcl probe`.
set -eu
cd "$(dirname "$0")/.."
./tools/install-deps.sh
./tools/build.sh
exec ./build/tools/mpcl probe "$@"
