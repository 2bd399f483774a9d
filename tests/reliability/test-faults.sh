#!/bin/sh
# Injected faults, each of which must end in a clear error that names the
# file, device or operation (or a warning, where the run can go on), never a
# crash, a hang, or a lost or corrupted checkpoint:
#   device memory exhausted (MPCL_DEVICE_MEMORY caps the device's memory),
#   a kernel that does not compile (MPCL_KERNEL_DIR), a disk full under the
#   checkpoint and under the cache (small tmpfs mounts; skipped where mount
#   is not allowed), kill -9 at random moments of a run that saves every
#   step (TRIALS trials), labels out of range and non-byte data in the input,
#   every cache file corrupted, and 10 processes starting at once on one
#   empty cache directory.
# Usage: test-faults.sh MPCL SOURCE_ROOT PYTHON [TRIALS]  (default 12 trials;
# the long suite runs 50)
set -u
MPCL=$1 SRC=$2 PY=$3 TRIALS=${4:-12}
export MPCL_MODEL_DIR="$SRC/data/models" MPCL_TUNE=0
. "$SRC/tests/lib.sh" # $T, $mounts, check (ONLY=TEXT), check_summary
small_fs() { # dir size: a tmpfs of that size, or 77
    mkdir -p "$1"
    if ! mount -t tmpfs -o "size=$2" tmpfs "$1" 2>/dev/null; then
        echo "cannot mount a tmpfs here (needs root and mount rights)"
        return 77
    fi
    mounts="$1 $mounts"
}
RUN="train --quiet --limit 1280 --test-limit 200 --batch 64"

device_memory() {
    MPCL_DEVICE_MEMORY=6M $MPCL $RUN --model wide-cnn --batch 256 --epochs 1 >"$T/m.txt" 2>&1
    rc=$?
    cat "$T/m.txt"
    [ $rc -eq 1 ] && grep -q "out of device memory: .* MiB of .* asked.*the device (.*) has 6.0 MiB" "$T/m.txt" ||
        return 1
    echo "exit 1: $(head -c 160 "$T/m.txt")..."
}
check "device memory exhausted: how much was asked and what the device has" device_memory

kernel_build() {
    cp -r "$SRC/cl" "$T/cl"
    printf '\nkernel void broken(global float *x) { x[0] = undeclared_name; }\n' >>"$T/cl/elementwise.cl"
    MPCL_KERNEL_DIR="$T/cl" $MPCL $RUN --epochs 1 >"$T/k.txt" 2>&1
    rc=$?
    cat "$T/k.txt"
    [ $rc -eq 1 ] && grep -q "elementwise" "$T/k.txt" && grep -q "undeclared_name" "$T/k.txt" || return 1
    echo "exit 1, the build log names the family and the compiler's error"
}
check "a kernel that does not compile: the build log reaches the user" kernel_build

disk_full_checkpoint() {
    small_fs "$T/ck" 270k || return 77 # one checkpoint (176 KiB) fits, not a second beside it
    $MPCL $RUN --epochs 2 --save "$T/ck/run.st" --save-every 5 >"$T/d.txt" 2>&1
    rc=$?
    cat "$T/d.txt"
    [ $rc -eq 1 ] || return 1
    grep -q "warning: cannot write $T/ck/run.st: .*No space left on device.*training goes on" "$T/d.txt" || return 1
    grep -q "the last checkpoint could not be written" "$T/d.txt" || return 1
    $MPCL eval "$T/ck/run.st" --limit 100 >"$T/d2.txt" 2>&1 || { cat "$T/d2.txt"; return 1; }
    ls "$T/ck" | grep -q tmp && { echo "a temporary file was left behind"; return 1; }
    echo "exit 1 after training on; $T/ck/run.st still holds the first checkpoint and evaluates"
}
check "disk full under the checkpoint: warnings, training goes on, the old file stays loadable" disk_full_checkpoint

disk_full_cache() {
    small_fs "$T/cache" 16k || return 77
    XDG_CACHE_HOME="$T/cache" POCL_CACHE_DIR="$T/pocl" $MPCL $RUN --epochs 1 --save "$T/c.st" >"$T/c.txt" 2>&1
    rc=$?
    cat "$T/c.txt"
    tr -s ' \n' '  ' <"$T/c.txt" >"$T/c1.txt" # the summary wraps long lines
    [ $rc -eq 0 ] && grep -q "could not be written; the run went on without them (last: $T/cache/.*: No space left on device)" "$T/c1.txt" ||
        return 1
    echo "exit 0; the summary names the cache file that could not be written"
}
check "disk full under the cache: the run goes on, the summary names the path" disk_full_cache

kill_trials() {
    K="train --quiet --limit 2560 --test-limit 100 --batch 32 --epochs 1000 --save $T/k.st --save-every 1"
    # a first run to step 3: kernels built and measured, so that the kills
    # below land in training and in checkpoint writes, not in set-up
    $MPCL $K --max-steps 3 >"$T/w.txt" 2>&1 || { cat "$T/w.txt"; return 1; }
    i=0 first_step=3 last_step=3
    while [ $i -lt "$TRIALS" ]; do
        i=$((i + 1))
        $MPCL $K --resume "$T/k.st" >/dev/null 2>&1 &
        pid=$!
        sleep "$(awk -v s=$i 'BEGIN { srand(s); printf "%.2f", 0.3 + 1.2 * rand() }')"
        kill -9 $pid 2>/dev/null
        wait $pid 2>/dev/null
        [ -f "$T/k.st" ] || { echo "trial $i: the checkpoint is gone"; return 1; }
        step=$("$PY" -c "
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
print(json.loads(b[8:8 + n])['__metadata__']['step'])" "$T/k.st") || { echo "trial $i: not a safetensors file"; return 1; }
        $MPCL eval "$T/k.st" --limit 50 >"$T/e.txt" 2>&1 || { echo "trial $i:"; cat "$T/e.txt"; return 1; }
        [ "$step" -ge "$last_step" ] || { echo "trial $i: step went back from $last_step to $step"; return 1; }
        last_step=$step
    done
    [ "$last_step" -gt "$first_step" ] || { echo "no trial got past step $first_step: the kills came before any step"; return 1; }
    echo "$TRIALS kill -9 trials: after each, the checkpoint loaded and evaluated, never older than before (step $first_step to $last_step)"
}
check "kill -9 at random moments with --save-every 1" kill_trials

bad_data() {
    "$PY" - "$T/data" <<'EOF' || return 1
import os, struct, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
def idx(name, dims, payload, type_=0x08):
    with open(os.path.join(d, name), "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, type_, len(dims)) + b"".join(struct.pack(">I", x) for x in dims) + payload)
for part, n in (("train", 20), ("t10k", 10)):
    idx(part + "-images-idx3-ubyte", (n, 28, 28), bytes(range(256)) * (n * 784 // 256) + bytes(n * 784 % 256))
    idx(part + "-labels-idx1-ubyte", (n,), bytes([i % 10 for i in range(n)]))
EOF
    $MPCL train --quiet --data "$T/data" --epochs 1 --batch 4 >"$T/b0.txt" 2>&1 || { cat "$T/b0.txt"; return 1; }
    printf '\014' | dd of="$T/data/train-labels-idx1-ubyte" bs=1 seek=13 conv=notrunc 2>/dev/null # label 12 at sample 5
    $MPCL train --quiet --data "$T/data" --epochs 1 --batch 4 >"$T/b1.txt" 2>&1
    rc=$?
    cat "$T/b1.txt"
    [ $rc -eq 1 ] && grep -q "train-labels-idx1-ubyte: byte 13: label 12 is outside 0..9" "$T/b1.txt" || return 1
    printf '\015' | dd of="$T/data/t10k-images-idx3-ubyte" bs=1 seek=2 conv=notrunc 2>/dev/null # IDX type 0x0D: floats
    printf '\011' | dd of="$T/data/train-labels-idx1-ubyte" bs=1 seek=13 conv=notrunc 2>/dev/null
    $MPCL train --quiet --data "$T/data" --epochs 1 --batch 4 >"$T/b2.txt" 2>&1
    rc=$?
    cat "$T/b2.txt"
    [ $rc -eq 1 ] && grep -q "t10k-images-idx3-ubyte" "$T/b2.txt" || return 1
    echo "a label of 12 and a float IDX file (which could hold NaN) are refused before any step, naming file and byte"
}
check "bad input data: named and refused before the step" bad_data

corrupt_cache() {
    mkdir -p "$T/cc"
    XDG_CACHE_HOME="$T/cc" MPCL_STORE_BINARIES=1 $MPCL $RUN --epochs 1 >"$T/x0.txt" 2>&1 || { cat "$T/x0.txt"; return 1; }
    n=0
    for f in $(find "$T/cc/mpcl" -type f); do # every file: truncated, or its middle overwritten
        n=$((n + 1))
        size=$(stat -c %s "$f")
        if [ $((n % 2)) -eq 0 ]; then truncate -s $((size / 2)) "$f"
        else printf 'garbage from another version' | dd of="$f" bs=1 seek=$((size / 3)) conv=notrunc 2>/dev/null; fi
    done
    [ $n -gt 0 ] || { echo "the run left no cache files"; return 1; }
    XDG_CACHE_HOME="$T/cc" MPCL_STORE_BINARIES=1 $MPCL $RUN --epochs 1 >"$T/x1.txt" 2>&1
    rc=$?
    cat "$T/x1.txt"
    tr -s ' \n' '  ' <"$T/x1.txt" >"$T/x3.txt"
    [ $rc -eq 0 ] && grep -q "damaged entr.* ignored and rebuilt (last: $T/cc/mpcl/" "$T/x3.txt" || return 1
    XDG_CACHE_HOME="$T/cc" MPCL_STORE_BINARIES=1 $MPCL $RUN --epochs 1 >"$T/x2.txt" 2>&1 || { cat "$T/x2.txt"; return 1; }
    grep -q "damaged" "$T/x2.txt" && { cat "$T/x2.txt"; return 1; }
    echo "$n cache files damaged: the next run ignored and rebuilt them (exit 0), the one after found none damaged"
}
check "every cache file corrupted: ignored with a message, rebuilt" corrupt_cache

concurrent_starts() {
    mkdir -p "$T/shared"
    i=0 pids=""
    while [ $i -lt 10 ]; do
        XDG_CACHE_HOME="$T/shared" MPCL_STORE_BINARIES=1 $MPCL train --quiet --limit 256 --test-limit 64 --batch 64 \
            --epochs 1 >"$T/p$i.txt" 2>&1 &
        pids="$pids $!"
        i=$((i + 1))
    done
    bad=0
    for p in $pids; do wait "$p" || bad=$((bad + 1)); done
    [ $bad -eq 0 ] || { cat "$T"/p*.txt | grep mpcl | head; echo "$bad of 10 starts failed"; return 1; }
    grep -l "damaged" "$T"/p*.txt && return 1
    XDG_CACHE_HOME="$T/shared" MPCL_STORE_BINARIES=1 $MPCL $RUN --epochs 1 >"$T/p.txt" 2>&1 || { cat "$T/p.txt"; return 1; }
    grep -q "damaged" "$T/p.txt" && { cat "$T/p.txt"; return 1; }
    ls "$T/shared/mpcl" | grep -q '\.tmp\.' && { echo "temporary files left in the cache"; return 1; }
    echo "10 concurrent starts on one empty cache: all exit 0; the next run finds no damaged entry"
}
check "10 processes sharing one cache directory at once" concurrent_starts

check_summary faults
