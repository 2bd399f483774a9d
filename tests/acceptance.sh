#!/bin/sh
# Training acceptance per precision mode (the long suite): the seed CNN, 3
# epochs of the full Fashion-MNIST, Adam lr 1e-3, batch 64, seed 1, in fp32
# and in each 16-bit mode the device runs; each mode's final test accuracy
# must lie within 0.5 points of fp32's on the same device, and fp32 must
# reach 85% (a broken gradient cannot). A mode the device refuses (exit 4)
# is reported and not counted.
# usage: acceptance.sh MPCL [MODE...]   (default: fp16 fp16-storage bf16)
# MPCL_ACCEPTANCE_LOGS=DIR keeps each run's output and JSON-lines log there.
set -u
MPCL=$1
shift
modes=${*:-fp16 fp16-storage bf16}
DATA=${MPCL_TEST_DATA:-/usr/share/datasets/fashion-mnist}
[ -d "$DATA" ] || { echo "acceptance: no data in $DATA (dataset-fashion-mnist)"; exit 77; }
T=$(mktemp -d) || exit 1
keep() { [ -n "${MPCL_ACCEPTANCE_LOGS:-}" ] && mkdir -p "$MPCL_ACCEPTANCE_LOGS" && cp "$T"/* "$MPCL_ACCEPTANCE_LOGS"/; rm -rf "$T"; }
trap keep EXIT INT TERM

# Final test accuracy (percent) of one run, from its JSON-lines log.
run() { # mode
    "$MPCL" train --model seed-cnn --epochs 3 --batch 64 --optimizer adam --lr 0.001 --seed 1 \
        --precision "$1" --data "$DATA" --log "$T/$1.jsonl" >"$T/$1.out" 2>&1
    rc=$?
    [ $rc -ne 0 ] && return $rc
    sed -n 's/.*"event":"epoch".*"test_accuracy":\([0-9.e-]*\).*/\1/p' "$T/$1.jsonl" | tail -n 1 |
        awk '{ printf "%.2f", 100 * $1 }'
}

passed=0 failed=0 skipped=0
ref=$(run fp32) || { echo "FAIL fp32 did not train:"; cat "$T/fp32.out"; exit 1; }
echo "fp32: test accuracy $ref%"
if awk "BEGIN { exit !($ref >= 85) }"; then passed=$((passed + 1))
else failed=$((failed + 1)); echo "FAIL fp32 reached only $ref% (expected >= 85%)"; fi
for m in $modes; do
    acc=$(run "$m")
    rc=$?
    if [ $rc -eq 4 ]; then
        skipped=$((skipped + 1))
        echo "$m: not run, the device refuses it: $(tail -n 1 "$T/$m.out")"
        continue
    fi
    if [ $rc -ne 0 ] || [ -z "$acc" ]; then
        failed=$((failed + 1)); echo "FAIL $m did not train (exit $rc):"; cat "$T/$m.out"; continue
    fi
    skips=$(sed -n 's/.*skipped steps *\([0-9][0-9]* of [0-9][0-9]*\).*/\1/p' "$T/$m.out" | tail -n 1)
    d=$(awk "BEGIN { printf \"%+.2f\", $acc - $ref }")
    if awk "BEGIN { d = $acc - $ref; exit !(d <= 0.5 && d >= -0.5) }"; then
        passed=$((passed + 1)); echo "$m: test accuracy $acc% ($d points against fp32; skipped steps: ${skips:-?})"
    else
        failed=$((failed + 1)); echo "FAIL $m: test accuracy $acc% is $d points from fp32's $ref% (allowed: 0.5)"
    fi
done
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
