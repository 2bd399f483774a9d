#!/bin/sh
# Valgrind memcheck over the mpcl tool's main commands on a CPU OpenCL
# device: `mpcl probe`, a short `mpcl train` (saving a model), `mpcl eval`
# and `mpcl predict` of that model. Each run must end with zero errors and
# no definite leak; what the OpenCL driver and the ICD loader do inside
# their own code is suppressed by tests/sanitize/valgrind.supp (each entry
# with its reason; nothing of mpcl's code is).
#
# usage: tools/valgrind.sh [ICD]   (ICD: pocl, the default, or intel; set up
#                                   by tools/test-icds.sh under build/icd)
# Each run's whole report goes to build/valgrind/COMMAND.log; the last line
# per command is
#   valgrind COMMAND: E errors (S suppressed), definitely lost B bytes
# and the exit status is 1 when any command had an error or a leak.
# About 15 minutes on a 2-core machine.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
icd=${1:-pocl}
command -v valgrind >/dev/null || { echo "valgrind: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ -x build/tools/mpcl ] || { echo "valgrind: build/tools/mpcl is missing: run tools/build.sh" >&2; exit 1; }
[ -f "build/icd/$icd/STATUS" ] || { echo "valgrind: build/icd/$icd is missing: run tools/test-icds.sh $icd" >&2; exit 1; }
export OCL_ICD_VENDORS="$root/build/icd/$icd"
export POCL_CACHE_DIR="$root/build/pocl-cache"
# PoCL's own worker threads: one keeps the run (serialised by valgrind
# anyway) short. The measurements that pick an algorithm per device (the
# CLBlast search at first use, convolution algorithms, mpcl's own Sgemm
# against CLBlast's) run hundreds of kernels, each about 50 times slower
# under valgrind: the runs take fixed choices instead (the measuring code
# itself runs in the suite and under the sanitizers).
export POCL_CPU_MAX_CU_COUNT=1 MPCL_TUNE=0 MPCL_CONV_ALGO=im2col MPCL_SGEMM=clblast
out=build/valgrind
rm -rf "$out"
mkdir -p "$out"
# mpcl's own caches (program binaries, tuning) in a fresh place, so that
# the runs exercise both the writing and the reading of entries
export XDG_CACHE_HOME="$root/$out/cache"

failed=0
# run NAME ARGS...: mpcl ARGS under memcheck
run() {
    name=$1
    shift
    log=$out/$name.log
    rc=0
    valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
        --errors-for-leak-kinds=definite --track-origins=yes --num-callers=30 \
        --suppressions="$root/tests/sanitize/valgrind.supp" --gen-suppressions=all \
        --error-exitcode=99 --log-file="$log" ./build/tools/mpcl "$@" \
        >"$out/$name.out" 2>&1 || rc=$?
    errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -n 1)
    suppressed=$(sed -n 's/.*ERROR SUMMARY: .*suppressed: \([0-9]*\) from.*/\1/p' "$log" | tail -n 1)
    lost=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1)
    echo "valgrind $name: ${errors:-?} errors (${suppressed:-?} suppressed), definitely lost ${lost:-0} bytes, exit $rc"
    if [ "$rc" != 0 ] || [ "${errors:-1}" != 0 ]; then
        failed=1
        echo "valgrind $name: see $log and $out/$name.out" >&2
    fi
}

run probe probe
run train train --epochs 1 --limit 256 --test-limit 128 --batch 64 --save "$out/model.safetensors"
run eval eval "$out/model.safetensors" --limit 128
run predict predict "$out/model.safetensors" tests/data/fashion-0.pgm --top 3
exit $failed
