#!/bin/sh
# The main job on a fresh Debian 12 machine: install what mpcl needs, build it,
# and train the seed CNN on Fashion-MNIST (Debian's dataset-fashion-mnist).
# Extra arguments go to `mpcl train` (e.g. --precision fp16-storage, --epochs 5).
set -eu
cd "$(dirname "$0")/.."
./tools/install-deps.sh
./tools/build.sh
exec ./build/tools/mpcl train "$@"
