#!/bin/sh
# Runs one test program on one OpenCL implementation: the ICD loader sees
# only the .icd file in ICD_DIR (made by tools/test-icds.sh). When that
# implementation is not set up, or shows no device on this machine, the test
# is skipped (exit 77) with the reason printed; with MPCL_REQUIRE_ICDS=1
# (tools/test.sh sets it) an implementation that was never set up fails.
# ICD_DIR may be a list DIR1:DIR2:...: the test then runs once, on the first
# implementation in the list that is set up and usable (the work-group cap
# suites, which need one implementation, not each).
# usage: icd-run.sh ICD_DIR[:ICD_DIR...] PROGRAM [ARGS...]
set -u
dir=$1
shift
case $dir in
*:*)
    list=$dir
    dir=
    tried=
    for d in $(echo "$list" | tr ':' ' '); do
        if [ -f "$d/STATUS" ] && [ "$(cat "$d/STATUS")" = ok ]; then
            dir=$d
            break
        fi
        tried="$tried $(basename "$d")"
    done
    if [ -z "$dir" ]; then
        echo "icd-run: skipping: none of the OpenCL implementations$tried is set up and usable"
        [ "${MPCL_REQUIRE_ICDS:-0}" = 1 ] && exit 1
        exit 77
    fi
    ;;
esac
name=$(basename "$dir")
if [ ! -f "$dir/STATUS" ]; then
    echo "icd-run: the OpenCL implementation '$name' is not set up ($dir is missing):" \
         "run tools/test-icds.sh $name"
    [ "${MPCL_REQUIRE_ICDS:-0}" = 1 ] && exit 1
    exit 77
fi
status=$(cat "$dir/STATUS")
if [ "$status" != ok ]; then
    echo "icd-run: skipping '$name': $status"
    exit 77
fi
echo "icd-run: OpenCL implementation '$name' ($(cat "$dir"/*.icd))"
OCL_ICD_VENDORS=$dir
export OCL_ICD_VENDORS
# Each implementation keeps its test scratch apart from the others'.
[ -n "${MPCL_TEST_TMPDIR:-}" ] && MPCL_TEST_TMPDIR="$MPCL_TEST_TMPDIR/$name" && export MPCL_TEST_TMPDIR \
    && mkdir -p "$MPCL_TEST_TMPDIR"
exec "$@"
