#!/bin/sh
# Data-parallel training (mpirun -np 2, each rank on the OpenCL device of
# this run limited to one compute unit where PoCL is the device) against a
# single process with the same global batch, seed and mode; the weights are
# compared with NumPy (compare.py). Also: weight checksums on every step
# across a skipped (overflow) step, a resume on 2 ranks that reproduces the
# uninterrupted run bit for bit and one on 1 rank that continues it, a rank
# whose step fails or whose set-up fails (both ranks exit non-zero within
# seconds, naming the rank), SIGTERM to one rank (all stop after a
# checkpoint), and a language model.
# Usage: test-dist.sh MPCL SOURCE_ROOT PYTHON MPIRUN
# Skips (77) without numpy and safetensors unless MPCL_REQUIRE_INTEROP=1.
set -u
MPCL=$1 SRC=$2 PY=$3 MPIRUN=$4
. "$SRC/tests/lib.sh" # $T, check, check_summary
require_numpy dist "$PY"
CMP="$PY $SRC/tests/dist/compare.py"
# Open MPI refuses root without these (documented in docs/distributed.md)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export POCL_CPU_MAX_CU_COUNT=1 MPCL_MODEL_DIR="$SRC/data/models"
# Under tools/sanitize.sh: the sanitizers' options for these processes
# (Open MPI leaks at MPI_Finalize, from components it has unloaded by then,
# which no suppression can name; see tools/sanitize.sh)
if [ -n "${MPCL_MPI_ASAN_OPTIONS:-}" ]; then
    export ASAN_OPTIONS="$MPCL_MPI_ASAN_OPTIONS"
fi
MPI="$MPIRUN --oversubscribe --bind-to none"
# 1281 samples in batches of 64: 21 steps, the last of 1 sample (one rank's
# shard is empty there)
RUN="train --quiet --limit 1281 --test-limit 300 --epochs 1 --batch 64 --seed 7"

same_run() { # precision tolerance [tensors]
    $MPCL $RUN --precision $1 --save "$T/one.st" >"$T/one.txt" 2>&1 || { cat "$T/one.txt"; return 1; }
    $MPI -np 2 $MPCL $RUN --precision $1 --save "$T/two.st" --dist-check 1 >"$T/two.txt" 2>&1 ||
        { cat "$T/two.txt"; return 1; }
    grep -q "equal on every rank at 21 checks" "$T/two.txt" || { cat "$T/two.txt"; return 1; }
    $CMP "$T/one.st" "$T/two.st" "$2" "${3:-}"
}
# (the weights, as the acceptance asks; the optimizer's state follows the
# gradients, whose rounding depends on each process's measured choice of
# convolution algorithm)
check "fp32: 2 ranks = 1 process after 21 steps, weights (rel 1e-5), checksums equal every step" same_run fp32 1e-5 '!optimizer.'
# (the weights: the optimizer's second moments follow the squared
# gradients, which differ by the rounding of each rank's half partial sum)
check "fp16-storage: 2 ranks = 1 process, weights (rel 1e-3)" same_run fp16-storage 1e-3 '!optimizer.'

# every rank skips the step where one rank's gradients overflow
skip_run() {
    $MPI -np 1 $MPCL $RUN --precision fp16-storage --dist-check 1 : \
         -np 1 $MPCL $RUN --precision fp16-storage --dist-check 1 --inject-inf-step 5 >"$T/s.txt" 2>&1 ||
        { cat "$T/s.txt"; return 1; }
    grep -q "skipped steps *1 of 21" "$T/s.txt" && grep -q "equal on every rank at 21 checks" "$T/s.txt" ||
        { cat "$T/s.txt"; return 1; }
    echo "rank 1's inf at step 5: 1 of 21 steps skipped on both ranks, checksums equal at all 21"
}
check "an overflow on one rank: both skip the step, weights stay equal" skip_run

# resume: 2 ranks from a mid-epoch checkpoint = the uninterrupted 2 ranks
RES="train --quiet --limit 2560 --test-limit 300 --epochs 1 --batch 64 --seed 7 --optimizer sgd --momentum 0.9"
resume_run() {
    $MPI -np 2 $MPCL $RES --log "$T/a.log" --save "$T/a.st" >"$T/a.txt" 2>&1 || { cat "$T/a.txt"; return 1; }
    $MPI -np 2 $MPCL $RES --max-steps 17 --save "$T/b.st" >"$T/b.txt" 2>&1 || { cat "$T/b.txt"; return 1; }
    $MPI -np 2 $MPCL $RES --resume "$T/b.st" --log "$T/b.log" --save "$T/b2.st" >"$T/b2.txt" 2>&1 ||
        { cat "$T/b2.txt"; return 1; }
    grep '"step"' "$T/a.log" | sed -n '18,40p' | sed 's/,"img_per_s".*//' >"$T/a.steps"
    grep '"step"' "$T/b.log" | sed 's/,"img_per_s".*//' >"$T/b.steps"
    [ -s "$T/a.steps" ] && cmp "$T/a.steps" "$T/b.steps" || { diff "$T/a.steps" "$T/b.steps" | head; return 1; }
    $CMP "$T/a.st" "$T/b2.st" 0 || return 1
    echo "steps 18-40 logged identically; the final checkpoints are bit for bit equal"
}
check "resume on 2 ranks reproduces the uninterrupted 2-rank run bit for bit" resume_run
resume_one() { # the 2-rank checkpoint of step 17 continued by one process
    $MPCL $RES --resume "$T/b.st" --save "$T/c.st" >"$T/c.txt" 2>&1 || { cat "$T/c.txt"; return 1; }
    $CMP "$T/a.st" "$T/c.st" 1e-5 '!optimizer.'
}
check "resume on 1 rank continues the 2-rank run (same global batch)" resume_one

# a rank whose step fails: both ranks end, non-zero, naming it
fail_run() {
    start=$(date +%s)
    timeout 120 $MPI -np 1 $MPCL $RUN : -np 1 $MPCL $RUN --inject-error-step 3 >"$T/f.txt" 2>&1
    rc=$? took=$(($(date +%s) - start))
    cat "$T/f.txt"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || return 1
    [ "$(grep -c 'rank 1 .*injected device failure' "$T/f.txt")" -ge 2 ] || return 1 # both ranks say it
    echo "both ranks exited non-zero after $took s, naming rank 1"
}
check "a failing step on rank 1 ends both ranks with its error" fail_run
setup_run() { # rank 1 asks for a device that does not exist
    timeout 120 $MPI -np 1 $MPCL $RUN : -np 1 $MPCL $RUN --device 99:0 >"$T/d.txt" 2>&1
    rc=$?
    cat "$T/d.txt"
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "rank 1 .*set" "$T/d.txt" || return 1
    echo "rank 1's missing device: both exited non-zero, rank 0 names rank 1"
}
check "a rank that cannot set up stops the others" setup_run

# SIGTERM to one rank: every rank stops after the same step, rank 0 writes
# the checkpoint, and it resumes
term_run() {
    $MPI -np 1 $MPCL train --quiet --epochs 1 --batch 64 --seed 7 --save "$T/t.st" : \
         -np 1 sh -c 'echo $$ >"$0/pid"; exec "$@"' "$T" $MPCL train --quiet --epochs 1 --batch 64 --seed 7 \
         --save "$T/t.st" >"$T/t.txt" 2>&1 &
    job=$!
    i=0
    while [ ! -s "$T/pid" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    sleep 2
    kill -TERM "$(cat "$T/pid")"
    wait $job
    rc=$?
    cat "$T/t.txt"
    [ $rc -ne 0 ] && grep -q "stopped by" "$T/t.txt" && [ -s "$T/t.st" ] || return 1
    $MPCL train --quiet --epochs 1 --batch 64 --resume "$T/t.st" --test-limit 300 >"$T/t2.txt" 2>&1 ||
        { cat "$T/t2.txt"; return 1; }
    echo "SIGTERM to rank 1: both stopped (mpirun $rc), rank 0's checkpoint resumes: $(grep 'test accuracy' "$T/t2.txt")"
}
check "SIGTERM to one rank stops all after a checkpoint" term_run

# a language model: 2 ranks = 1 process
# (SGD: Adam's first steps move every weight by about lr whatever the
# gradient's size, so rounding noise in a near-zero gradient would flip
# whole updates; SGD keeps the comparison linear in the gradients)
LM="train --task lm --quiet --model gpt-tiny --steps 4 --batch 4 --context 32 --eval-every 2 --eval-windows 8 --seed 3 --optimizer sgd --lr 0.1 --momentum 0.9"
lm_run() {
    $MPCL $LM --save "$T/l1.st" >"$T/l1.txt" 2>&1 || { cat "$T/l1.txt"; return 1; }
    $MPI -np 2 $MPCL $LM --save "$T/l2.st" --dist-check 1 >"$T/l2.txt" 2>&1 || { cat "$T/l2.txt"; return 1; }
    grep valid "$T/l1.txt" | head -1 >"$T/v1"
    grep valid "$T/l2.txt" | head -1 >"$T/v2"
    cat "$T/v1" "$T/v2"
    $CMP "$T/l1.st" "$T/l2.st" 1e-5 transformer
}
check "gpt-tiny: 2 ranks = 1 process after 4 steps (rel 1e-5)" lm_run

check_summary dist
