#!/bin/sh
# tools/plot.py makes valid PNG files from the training logs and the precision
# report of this directory, and fails cleanly on bad input.
# Usage: test-plot.sh PYTHON SOURCE_ROOT
# The PNG check is independent of matplotlib: the file's signature and its IHDR
# chunk (length, CRC, width and height), read with Python's struct and zlib.
# Skips (77) when PYTHON lacks matplotlib, unless MPCL_REQUIRE_PLOT=1.
set -u
PY=$1 SRC=$2
PLOT=$SRC/tools/plot.py
HERE=$SRC/tests/plot
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    echo "plot: $PY has no matplotlib (Debian: apt-get install python3-matplotlib)"
    [ "${MPCL_REQUIRE_PLOT:-0}" = 1 ] && exit 1
    exit 77
fi
T=$(mktemp -d) || exit 1
trap 'rm -rf "$T"' EXIT
n=0 failed=0
result() { # status, description
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"
    else failed=$((failed + 1)); echo "not ok $n - $2"; sed 's/^/#   /' "$T/out" "$T/err"; fi
}

# png_size FILE: prints "W H" when FILE starts with a PNG signature and a
# well-formed IHDR chunk, else fails.
png_size() {
    "$PY" - "$1" <<'EOF'
import struct, sys, zlib
with open(sys.argv[1], "rb") as f:
    head = f.read(33)
if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit("no PNG signature")
length, kind = struct.unpack(">I4s", head[8:16])
if length != 13 or kind != b"IHDR":
    sys.exit("the first chunk is not a 13-byte IHDR")
if struct.unpack(">I", head[29:33])[0] != zlib.crc32(head[12:29]):
    sys.exit("IHDR CRC mismatch")
w, h = struct.unpack(">II", head[16:24])
if not (0 < w < 100000 and 0 < h < 100000):
    sys.exit(f"implausible size {w} x {h}")
print(w, h)
EOF
}

# plot_ok NAME DESCRIPTION ARGS...: plot.py ARGS -o $T/NAME.png succeeds, the
# file is a PNG, and its size is the one plot.py printed
plot_ok() {
    name=$1 what=$2; shift 2
    out=$T/$name.png
    "$PY" "$PLOT" "$@" -o "$out" >"$T/out" 2>"$T/err"
    result $? "$what: exit status 0"
    size=$(png_size "$out" 2>>"$T/err")
    result $? "$what: $name.png is a PNG (signature, IHDR, CRC)"
    # shellcheck disable=SC2086 # split "W H" into two words
    set -- $size
    grep -qx "plot: wrote $out (${1:-?} x ${2:-?} pixels)" "$T/out"
    result $? "$what: the printed size is the file's (${1:-?} x ${2:-?})"
}

# plot_fails DESCRIPTION NEEDLE ARGS...: plot.py ARGS exits 1 and says NEEDLE
plot_fails() {
    what=$1 needle=$2; shift 2
    "$PY" "$PLOT" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    test "$rc" -eq 1
    result $? "$what: exit status 1 (got $rc)"
    grep -qF "$needle" "$T/err"
    result $? "$what: the message names ${needle##*/}"
}

plot_ok train "train, two logs" train "$HERE/train-fp32.jsonl" "$HERE/train-fp16-storage.jsonl" \
    --labels fp32,fp16-storage --title "plot test"
plot_ok precision "precision report" precision "$HERE/precision-sample.json"
plot_ok gradients "precision, gradients only" precision "$HERE/precision-sample.json" \
    --roles activation_gradient,weight_gradient --max-tensors 2

head -n 5 "$HERE/train-fp32.jsonl" >"$T/broken.jsonl"
echo '{"step":6,"epoch":1,"loss":' >>"$T/broken.jsonl"
plot_fails "a log with a broken line" "broken.jsonl:6" train "$HERE/train-fp32.jsonl" \
    "$T/broken.jsonl" -o "$T/broken.png"
plot_fails "a missing log" "$T/missing.jsonl" train "$T/missing.jsonl" -o "$T/missing.png"
plot_fails "a missing report" "$T/missing.json" precision "$T/missing.json" -o "$T/missing.png"

"$PY" "$PLOT" train "$HERE/train-fp32.jsonl" >"$T/out" 2>"$T/err"
rc=$?
test "$rc" -eq 2
result $? "usage error (no -o): exit status 2 (got $rc)"

echo "# plot: $n checks, $failed failed"
[ "$failed" -eq 0 ]
