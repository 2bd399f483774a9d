#!/bin/sh
# Interoperability of mpcl's checkpoints with Python's safetensors + NumPy
# (see check_interop.py). Usage: test-interop.sh MPCL SOURCE_ROOT PYTHON
# Skips (77) when PYTHON lacks numpy or safetensors, unless
# MPCL_REQUIRE_INTEROP=1 (tools/test.sh sets it, so CI never skips).
set -u
MPCL=$1 SRC=$2 PY=$3
DATA=${MPCL_TEST_DATA:-/usr/share/datasets/fashion-mnist}
. "$SRC/tests/lib.sh" # $T, check, check_summary
require_numpy interop "$PY"
[ -d "$DATA" ] || { echo "interop: no data in $DATA"; exit 77; }
fixture=$SRC/tests/data/seed-cnn-numpy.safetensors

# 1. mpcl writes, Python reads: a short fp32 training run, its accuracy by
#    mpcl eval and by NumPy on all 10,000 test images
check "train --save" "$MPCL" train --precision fp32 --limit 3000 --epochs 1 --test-limit 100 \
    --quiet --save "$T/ck.st" --data "$DATA"
check "eval --json" sh -c "'$MPCL' eval '$T/ck.st' --precision fp32 --json --data '$DATA' > '$T/eval.json'"
check "safetensors + numpy read mpcl's checkpoint" "$PY" "$SRC/tests/interop/check_interop.py" \
    read "$T/ck.st" "$T/eval.json" "$DATA"

# 2. Python writes, mpcl reads: the fixture, in every runnable mode
for mode in fp32 fp16-storage fp16; do
    tol=1e-5; [ "$mode" != fp32 ] && tol=5e-3
    "$MPCL" predict "$fixture" "$SRC"/tests/data/fashion-*.pgm --top 10 --json \
        --precision "$mode" >"$T/p.json" 2>"$T/p.err"
    rc=$?
    if [ $rc -eq 4 ]; then echo "SKIP predict $mode: $(tail -1 "$T/p.err")"; continue; fi
    check "predict $mode exit status" test $rc -eq 0
    check "predict $mode matches NumPy" "$PY" "$SRC/tests/interop/check_interop.py" \
        predict "$T/p.json" "$SRC/tests/data/seed-cnn-numpy.expected.json" "$tol"
done
check_summary interop
