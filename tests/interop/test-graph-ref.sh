#!/bin/sh
# A residual net (tests/interop/resnet-tiny.txt) trained a few SGD steps by
# mpcl (graph_ref.c) and by an independent NumPy float64 forward and backward
# pass (npgraph.py) from the same initial weights, written by mpcl as
# safetensors: the losses of the first 5 steps and the first step's
# gradients must agree (tolerances in npgraph.py).
# Usage: test-graph-ref.sh GRAPH_REF SOURCE_ROOT PYTHON
# Skips (77) when PYTHON lacks numpy or safetensors, unless
# MPCL_REQUIRE_INTEROP=1 (tools/test.sh sets it, so CI never skips), and
# when graph_ref finds no OpenCL device (77).
set -u
GRAPH_REF=$1 SRC=$2 PY=$3
. "$SRC/tests/lib.sh" # $T, check, check_summary
require_numpy graph_ref "$PY"
SPEC=$SRC/tests/interop/resnet-tiny.txt
NP=$SRC/tests/interop/npgraph.py

# The reference itself against central finite differences (no device).
check "npgraph.py against finite differences" "$PY" "$NP" selftest "$SPEC"

for mode in fp32 fp16-storage; do
    "$GRAPH_REF" "$SPEC" "$T/$mode" --precision "$mode" --steps 5 --batch 4 --lr 0.05 --seed 3 \
        >"$T/run.out" 2>&1
    rc=$?
    if [ $rc -eq 77 ]; then cat "$T/run.out"; exit 77; fi
    if [ $rc -eq 4 ] && [ "$mode" != fp32 ]; then
        # the device cannot run this mode (fp32 always runs)
        echo "SKIP $mode: $(tail -1 "$T/run.out")"
        continue
    fi
    check "graph_ref $mode" sh -c "cat '$T/run.out'; test $rc -eq 0"
    [ $rc -eq 0 ] || continue
    check "$mode losses and gradients match NumPy" "$PY" "$NP" compare "$SPEC" "$T/$mode"
done
check_summary graph_ref
