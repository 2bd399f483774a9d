#!/bin/sh
# Sets up the OpenCL implementations that the test suite runs on. Each one
# gets an ICD vendors directory build/icd/NAME holding one .icd file; a
# test run on NAME points the ICD loader at it with OCL_ICD_VENDORS, so it
# sees that implementation alone, and nothing outside build/ changes.
#
#   pocl   Debian's PoCL (pocl-opencl-icd, installed by install-deps.sh)
#   intel  Intel's OpenCL CPU runtime, installed from PyPI into
#          build/intel-ocl (intel-opencl-rt, intel-cmplr-lib-rt, tbb):
#          it declares cl_khr_fp16, so the fp16 mode runs for real
#   NAME   any other ICD a user adds: MPCL_TEST_ICDS="NAME=/abs/libdriver.so"
#
# Each directory gets a STATUS file: "ok", or "unavailable: REASON" when the
# implementation installed but shows no device here (tests/icd-run.sh then
# skips that implementation's tests and prints the reason). A failure to
# install is an error, not a skip.
#
# usage: tools/test-icds.sh [NAME...]   (default: pocl intel and the names in
#                                        MPCL_TEST_ICDS)
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
ICD="$root/build/icd"
MPCL="$root/build/tools/mpcl"
PY="$root/build/pyenv/bin/python"
# The versions the suite was last checked with; MPCL_INTEL_OCL_VERSION
# overrides (e.g. "" for the newest on PyPI).
INTEL_VERSION=${MPCL_INTEL_OCL_VERSION-2026.2.0}
INTEL_PREFIX="$root/build/intel-ocl"

[ -x "$MPCL" ] || { echo "test-icds: $MPCL is missing: run tools/build.sh first" >&2; exit 1; }

# STATUS of directory $1 from `mpcl probe --list` run on it alone.
verify() { # dir, description
    if out=$(OCL_ICD_VENDORS="$1" "$MPCL" probe --list 2>&1) && echo "$out" | grep -q '^[0-9]*:[0-9]'; then
        echo ok >"$1/STATUS"
        echo "test-icds: $(basename "$1"): $(echo "$out" | sed -n 2p | tr -s ' ')"
    else
        cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
        printf 'unavailable: %s lists no OpenCL device on this machine (CPU: %s): %s\n' "$2" \
            "${cpu:-unknown}" "$(echo "$out" | tr '\n' ' ' | cut -c1-300)" >"$1/STATUS"
        echo "test-icds: $(basename "$1"): $(cat "$1/STATUS")"
    fi
}

# An ICD directory NAME whose .icd file names LIBRARY.
make_dir() { # name, library
    rm -rf "${ICD:?}/$1"
    mkdir -p "$ICD/$1"
    printf '%s\n' "$2" >"$ICD/$1/$1.icd"
}

setup_pocl() {
    lib=""
    for f in /etc/OpenCL/vendors/pocl.icd /usr/share/OpenCL/vendors/pocl.icd; do
        [ -f "$f" ] && { lib=$(head -n 1 "$f"); break; }
    done
    if [ -z "$lib" ]; then
        echo "test-icds: PoCL's ICD file (/etc/OpenCL/vendors/pocl.icd) is missing: install the" \
             "Debian package pocl-opencl-icd (tools/install-deps.sh does)" >&2
        exit 1
    fi
    make_dir pocl "$lib"
    verify "$ICD/pocl" "PoCL ($lib)"
}

setup_intel() {
    lib="$INTEL_PREFIX/lib/libintelocl.so"
    if [ ! -f "$lib" ] || [ ! -f "$INTEL_PREFIX/.version-$INTEL_VERSION" ]; then
        [ -x "$PY" ] || ./tools/python-env.sh
        spec="intel-opencl-rt intel-cmplr-lib-rt tbb"
        [ -n "$INTEL_VERSION" ] && spec="intel-opencl-rt==$INTEL_VERSION intel-cmplr-lib-rt==$INTEL_VERSION tbb"
        echo "test-icds: installing Intel's OpenCL CPU runtime from PyPI into build/intel-ocl" \
             "($spec; about 260 MB to download once)"
        rm -rf "$INTEL_PREFIX"
        # shellcheck disable=SC2086
        if ! "$PY" -m pip install -q --disable-pip-version-check --no-warn-script-location \
                --ignore-installed --prefix "$INTEL_PREFIX" $spec; then
            echo "test-icds: pip could not install Intel's OpenCL runtime ($spec) into" \
                 "$INTEL_PREFIX; set MPCL_TEST_ICDS to leave it out (see README)" >&2
            exit 1
        fi
        [ -f "$lib" ] || { echo "test-icds: the wheel has no lib/libintelocl.so" >&2; exit 1; }
        touch "$INTEL_PREFIX/.version-$INTEL_VERSION"
    fi
    # libintelocl.so finds its own libraries (TBB, libimf, ...) through its
    # RUNPATH ($ORIGIN): no LD_LIBRARY_PATH, so the wheel's libOpenCL.so never
    # shadows Debian's ICD loader.
    make_dir intel "$lib"
    verify "$ICD/intel" "Intel's OpenCL CPU runtime"
}

names=${*:-pocl intel}
if [ $# -eq 0 ] && [ -n "${MPCL_TEST_ICDS:-}" ]; then
    names=$(for e in $MPCL_TEST_ICDS; do echo "${e%%=*}"; done | tr '\n' ' ')
fi
for name in $names; do
    case $name in
    pocl) setup_pocl ;;
    intel) setup_intel ;;
    *)
        lib=""
        for e in ${MPCL_TEST_ICDS:-}; do
            [ "${e%%=*}" = "$name" ] && [ "$e" != "$name" ] && lib=${e#*=}
        done
        if [ -z "$lib" ]; then
            echo "test-icds: no library for '$name': give it as MPCL_TEST_ICDS=\"$name=/path/to/libdriver.so\"" >&2
            exit 1
        fi
        [ -f "$lib" ] || { echo "test-icds: $name: $lib does not exist" >&2; exit 1; }
        make_dir "$name" "$lib"
        verify "$ICD/$name" "$name ($lib)"
        ;;
    esac
done
