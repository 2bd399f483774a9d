#!/bin/sh
# A tiny GPT (tests/interop/gpt-tiny-ref.txt) trained 10 AdamW steps by
# mpcl (gpt_ref.c: mpcl_trainer_step_lm) and by an independent NumPy
# float64 GPT with a hand-written backward pass (npgpt.py) from the same
# initial weights and batches: the losses, the first step's gradients and
# the weights after the last step must agree (tolerances in npgpt.py).
# Step 4 gets an inf in its gradients (--inject-inf 4): the trainer skips
# it, as it skips an fp16 overflow, and the reference must skip it too (no
# update, and Adam's step count does not advance).
# The text is written here (deterministic pseudo-English): no data files.
# Usage: test-gpt-ref.sh GPT_REF SOURCE_ROOT PYTHON
# Skips (77) when PYTHON lacks numpy or safetensors, unless
# MPCL_REQUIRE_INTEROP=1 (tools/test.sh sets it, so CI never skips), and
# when gpt_ref finds no OpenCL device (77).
set -u
GPT_REF=$1 SRC=$2 PY=$3
. "$SRC/tests/lib.sh" # $T, check, check_summary
require_numpy gpt_ref "$PY"
SPEC=$SRC/tests/interop/gpt-tiny-ref.txt
NP=$SRC/tests/interop/npgpt.py

# About 6 KB of sentences from a small word list, picked by a 31-bit LCG
# (exact in any awk: the products stay below 2^53).
awk 'BEGIN {
    n = split("the a model trains on small batches of text and every step moves " \
              "its weights toward lower loss while attention reads earlier tokens " \
              "layer norm keeps values in range gradients flow back through each block", w, " ")
    s = 12345; out = ""; cap = 1
    for (i = 0; i < 1100; i++) {
        s = (s * 16807) % 2147483647
        word = w[s % n + 1]
        if (cap) { word = toupper(substr(word, 1, 1)) substr(word, 2); cap = 0 }
        out = out word
        s = (s * 16807) % 2147483647
        r = s % 12
        if (r == 0) { out = out ".\n"; cap = 1 } else if (r == 1) out = out ", "; else out = out " "
    }
    printf "%s.\n", out
}' >"$T/text.txt"

# The reference itself against central finite differences (no device).
check "npgpt.py against finite differences" "$PY" "$NP" selftest

for mode in fp32 fp16-storage fp16; do
    "$GPT_REF" "$SPEC" "$T/text.txt" "$T/$mode" --precision "$mode" --steps 10 --batch 4 \
        --lr 1e-3 --weight-decay 0.1 --seed 3 --inject-inf 4 >"$T/run.out" 2>&1
    rc=$?
    if [ $rc -eq 77 ]; then cat "$T/run.out"; exit 77; fi
    if [ $rc -eq 4 ] && [ "$mode" != fp32 ]; then
        # the device cannot run this mode (fp32 always runs)
        echo "SKIP $mode: $(tail -1 "$T/run.out")"
        continue
    fi
    check "gpt_ref $mode" sh -c "cat '$T/run.out'; test $rc -eq 0"
    [ $rc -eq 0 ] || continue
    check "$mode losses, gradients and weights match NumPy" "$PY" "$NP" compare "$T/$mode" "$SPEC"
done
check_summary gpt_ref
