#!/bin/sh
# Runs a test program under oclgrind (out-of-bounds accesses, data races,
# uninitialised reads) with small shapes, and fails when oclgrind reports
# anything in one of mpcl's own kernels (oclgrind exits 0 even then).
# Reports in CLBlast's kernels are listed but not counted: they are CLBlast's.
# usage: oclgrind-check.sh OCLGRIND CL_DIR PROGRAM [ARGS...]
set -u
oclgrind=$1
cl_dir=$2
shift 2
log=$(mktemp)
trap 'rm -f "$log" "$log.counted"' EXIT INT TERM
# Out-of-bounds accesses (always on in oclgrind) and data races fail the
# test. oclgrind 21.10's uninitialised-value tracking is not used by
# default: it reports values that are written (a buffer that reuses a freed
# buffer's slot keeps the old slot's shadow state; memory set by
# clEnqueueFillBuffer counts as uninitialised; some float2 stores), so every
# suite drowned in false reports, and its 1000-message cap then hid real
# ones. MPCL_OCLGRIND_UNINIT=1 turns it on, and its reports are then listed
# but not counted.
uninit=""
[ "${MPCL_OCLGRIND_UNINIT:-0}" = 1 ] && uninit=--uninitialized
# fp16-storage contexts convert halves with the integer code of
# cl/precision.h here (MPCL_HALF_CONV=builtin checks the built-ins instead):
# timing a simulator to choose between them would only cost time.
MPCL_HALF_CONV=${MPCL_HALF_CONV:-integer} MPCL_TEST_SMALL=1 MPCL_NO_CACHE=1 "$oclgrind" --data-races $uninit --max-errors 1000000 --log "$log" "$@"
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "oclgrind-check: the program failed under oclgrind (exit $rc)"
    cat "$log"
    exit "$rc"
fi
# Every report names its kernel ("\tKernel: NAME"). Count all of them except
#  - CLBlast's kernels (Xgemm, CopyPadMatrix, ...: CLBlast names its kernels
#    in CamelCase, mpcl in lower_case): CLBlast's own;
#  - the probe's half-arithmetic kernels (arith_half, dot_half): oclgrind
#    cannot run half arithmetic ("Unsupported float size: 2 bytes"), and the
#    probe itself compares their results bit for bit and reports the device
#    (here: oclgrind) as unable, which is the verdict those kernels exist for.
clblast='^[A-Z]'
# Reports are blocks separated by blank lines; uninitialised-value reports
# are dropped here when MPCL_OCLGRIND_UNINIT=1 asked for them.
awk 'BEGIN { RS = ""; ORS = "\n\n" } !/[Uu]ninitiali[sz]ed/' "$log" >"$log.counted"
skipped_uninit=$(awk 'BEGIN { RS = "" } /[Uu]ninitiali[sz]ed/ { n++ } END { print n + 0 }' "$log")
[ "$skipped_uninit" -gt 0 ] && echo "oclgrind-check: $skipped_uninit uninitialised-value report(s) listed, not counted"
reports=$(sed -n 's/^[[:space:]]*Kernel: \([A-Za-z0-9_]*\).*/\1/p' "$log.counted")
bad=0
for k in $(printf '%s\n' $reports | sort -u); do
    n=$(printf '%s\n' $reports | grep -c -x "$k")
    if printf '%s' "$k" | grep -q -E "$clblast" || [ "$k" = arith_half ] || [ "$k" = dot_half ]; then
        echo "oclgrind-check: $n report(s) in $k (not counted: CLBlast's or the probe's half check)"
        continue
    fi
    echo "oclgrind-check: $n report(s) in mpcl kernel $k"
    bad=$((bad + n))
done
if [ "$bad" -gt 0 ]; then
    cat "$log"
    echo "0 passed, 1 failed"
    exit 1
fi
if [ -s "$log" ] && [ -z "$reports" ]; then
    echo "oclgrind-check: oclgrind's log has messages that name no kernel:"
    head -n 40 "$log"
fi
echo "oclgrind-check: no error in mpcl's kernels"
exit 0
