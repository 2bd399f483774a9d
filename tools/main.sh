#!/bin/sh
# The main job on a fresh Debian 12 machine: install what mpcl needs, build it,
# and train the seed CNN on Fashion-MNIST (Debian's dataset-fashion-mnist),
# saving the trained model to build/trained.safetensors.
# Extra arguments go to `mpcl train` (e.g. --precision fp16-storage, --epochs 5;
# a later --save FILE replaces the default one).
set -eu
cd "$(dirname "$0")/.."
./tools/install-deps.sh
./tools/build.sh
./build/tools/mpcl train --save build/trained.safetensors "$@"
echo
echo "The trained model is in build/trained.safetensors; try:"
echo "  ./build/tools/mpcl eval build/trained.safetensors"
echo "  ./build/tools/mpcl predict build/trained.safetensors tests/data/fashion-0.pgm --top 3"
