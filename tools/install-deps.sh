#!/bin/sh
# Installs every Debian 12 package that mpcl's build, tests and default data need
# (libopenblas-dev: the OpenBLAS reference of mpcl bench gemm, tools/openblas-sgemm.c,
# and its tests; libmpcl never links it).
# Safe to run again: apt-get skips what is already installed.
set -eu

PKGS="meson ninja-build pkg-config gcc
ocl-icd-opencl-dev opencl-c-headers ocl-icd-libopencl1 pocl-opencl-icd clinfo
libclblast-dev zlib1g-dev libcjson-dev check
openmpi-bin libopenmpi-dev
clang-15 oclgrind
libopenblas-dev
dataset-fashion-mnist fortunes
python3 python3-venv python3-pip python3-matplotlib
git ca-certificates"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "install-deps: need root (or sudo) to install: $PKGS" >&2; exit 1
    fi
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

if [ -n "$missing" ]; then
    echo "install-deps: installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing
else
    echo "install-deps: all packages present"
fi
