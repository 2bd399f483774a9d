#!/bin/sh
# mpcl precision (docs/precision.md): the report's figures against NumPy over
# the values the same run saved (compare.py), on fresh weights and on a
# checkpoint; the acceptance of the advice (after one epoch of the seed CNN
# in fp16-storage, the advised loss-scale range holds the scale the dynamic
# scaler settled on); --plot (a valid PNG, where matplotlib is installed);
# and the errors (exit codes, messages naming the file).
# Usage: test-precision.sh MPCL SOURCE_ROOT PYTHON
# Skips (77) without numpy and safetensors unless MPCL_REQUIRE_INTEROP=1.
set -u
MPCL=$1 SRC=$2 PY=$3
. "$SRC/tests/lib.sh"
require_numpy precision "$PY"
export MPCL_MODEL_DIR="$SRC/data/models" MPCL_TUNE=0
DATA=/usr/share/datasets/fashion-mnist
LABELS=$DATA/train-labels-idx1-ubyte.gz

fresh() {
    $MPCL precision --model seed-cnn --batches 3 --batch 32 --seed 5 --json \
        --save-values "$T/fresh.st" >"$T/fresh.json" || return 1
    "$PY" "$SRC/tests/precision/compare.py" "$T/fresh.json" "$T/fresh.st" "$LABELS"
}
check "fresh seed CNN: the report against NumPy over its saved values" fresh

# One epoch of the seed CNN in fp16-storage; the scale its scaler settled on
# must lie in the advised range of the report on its checkpoint.
trained() {
    $MPCL train --quiet --precision fp16-storage --epochs 1 --test-limit 500 --save "$T/ck.st" \
        --log "$T/log.jsonl" >"$T/train.txt" 2>&1 || { cat "$T/train.txt"; return 1; }
    $MPCL precision "$T/ck.st" --json --save-values "$T/ck-values.st" >"$T/ck.json" || return 1
    "$PY" "$SRC/tests/precision/compare.py" "$T/ck.json" "$T/ck-values.st" "$LABELS" "$T/ck.st" || return 1
    "$PY" - "$T/log.jsonl" "$T/ck.json" <<'EOF'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"step"' in l]
settled = steps[-1]["loss_scale"]
skipped = sum(s["skipped"] for s in steps)
rep = json.load(open(sys.argv[2]))
ad = rep["advice"]
assert rep["loss_scale"] == settled, (rep["loss_scale"], settled)
assert ad["loss_scale_min"] <= settled <= ad["loss_scale_max"], (ad, settled)
print(f"{len(steps)} steps, {skipped} skipped: the scaler settled on {settled:g}, inside the advised "
      f"{ad['loss_scale_min']:g} .. {ad['loss_scale_max']:g}; advice {ad['recommend']}")
EOF
}
check "one epoch in fp16-storage: the advised range holds the scale the scaler settled on" trained

text_report() {
    $MPCL precision "$T/ck.st" --batches 1 >"$T/text.txt" 2>&1 || { cat "$T/text.txt"; return 1; }
    for want in "loss scale .*the checkpoint's scaler" "^0.weight " "^6.out.grad " "Advice" "Loss scale: 2^"; do
        grep -q "$want" "$T/text.txt" || { cat "$T/text.txt"; echo "no '$want'"; return 1; }
    done
    echo "the text report names every tensor and gives the advice"
}
check "text report" text_report

plot() {
    # the tool's own choice of Python (MPCL_PYTHON, else /usr/bin/python3)
    if ! ${MPCL_PYTHON:-/usr/bin/python3} -c 'import matplotlib' 2>/dev/null; then
        echo "no matplotlib for ${MPCL_PYTHON:-/usr/bin/python3}"
        [ "${MPCL_REQUIRE_PLOT:-0}" = 1 ] && return 1
        return 77
    fi
    $MPCL precision "$T/ck.st" --batches 1 --plot "$T/p.png" >"$T/plot.txt" 2>&1 || { cat "$T/plot.txt"; return 1; }
    png_ok "$T/p.png" || return 1
    $MPCL train --quiet --limit 256 --test-limit 64 --epochs 2 --plot "$T/t.png" >"$T/t.txt" 2>&1
    [ $? -eq 2 ] && grep -q "needs --log" "$T/t.txt" || { cat "$T/t.txt"; return 1; }
    $MPCL train --quiet --limit 256 --test-limit 64 --epochs 2 --log "$T/t.jsonl" --plot "$T/t.png" \
        >"$T/t.txt" 2>&1 || { cat "$T/t.txt"; return 1; }
    png_ok "$T/t.png" || return 1
    # a Python without matplotlib (the tests' own environment has none):
    # exit 1, what to install, and the report itself still printed
    if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
        MPCL_PYTHON="$PY" $MPCL precision "$T/ck.st" --batches 1 --plot "$T/q.png" >"$T/q.txt" 2>&1
        rc=$?
        [ $rc -eq 1 ] && grep -q "apt-get install python3-matplotlib" "$T/q.txt" && grep -q "^Advice" "$T/q.txt" &&
            [ ! -e "$T/q.png" ] || { cat "$T/q.txt"; echo "without matplotlib: exit $rc"; return 1; }
    fi
    echo "PNGs written; without matplotlib: exit 1 with what to install, the report complete"
}
png_ok() {
    "$PY" - "$1" <<'EOF'
import struct, sys, zlib
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
n, kind = struct.unpack(">I4s", b[8:16])
assert kind == b"IHDR" and n == 13
w, h = struct.unpack(">II", b[16:24])
assert struct.unpack(">I", b[29:33])[0] == zlib.crc32(b[12:29]), "IHDR CRC"
assert w > 200 and h > 200
print(f"--plot wrote a {w} x {h} PNG ({sys.argv[1].rsplit('/', 1)[-1]})")
EOF
}
check "precision --plot and train --log --plot write PNGs" plot

errors() {
    $MPCL precision >"$T/e1.txt" 2>&1; [ $? -eq 2 ] || { cat "$T/e1.txt"; return 1; }
    $MPCL precision "$T/absent.st" >"$T/e2.txt" 2>&1; rc=$?
    [ $rc -eq 1 ] && grep -q "$T/absent.st" "$T/e2.txt" || { cat "$T/e2.txt"; return 1; }
    $MPCL precision --model seed-cnn --batches 10000 --batch 64 >"$T/e3.txt" 2>&1; rc=$?
    [ $rc -eq 2 ] && grep -q "60000" "$T/e3.txt" || { cat "$T/e3.txt"; return 1; }
    $MPCL precision --model gpt-tiny >"$T/e4.txt" 2>&1; rc=$?
    [ $rc -eq 1 ] && grep -q "language model" "$T/e4.txt" || { cat "$T/e4.txt"; return 1; }
    head -c 100 "$T/ck.st" >"$T/cut.st"
    $MPCL precision "$T/cut.st" >"$T/e5.txt" 2>&1; rc=$?
    [ $rc -eq 1 ] && grep -q "$T/cut.st" "$T/e5.txt" || { cat "$T/e5.txt"; return 1; }
    $MPCL precision --model seed-cnn --batches 1 --save-values "$T/no/such/dir/v.st" >"$T/e6.txt" 2>&1; rc=$?
    [ $rc -eq 1 ] && grep -q "$T/no/such/dir/v.st" "$T/e6.txt" || { cat "$T/e6.txt"; return 1; }
    echo "usage 2; missing, cut checkpoint, unwritable values file 1 naming the file; gpt refused"
}
check "errors: exit codes and messages" errors

check_summary precision
