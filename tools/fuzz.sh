#!/bin/sh
# shellcheck disable=SC2089,SC2090,SC3013
# Fuzzes mpcl's parsers and decoders of untrusted input with libFuzzer +
# AddressSanitizer + UBSan (long runs; not part of the default suite: the
# Meson option -Dfuzz=true registers one 60 s run per target in suite 'fuzz').
# Targets (tests/fuzz/fuzz_TARGET.c; seeds in tests/fuzz/corpus/TARGET/,
# dictionaries in tests/fuzz/TARGET.dict):
#   idx            the IDX reader, plain and gzip-compressed (also cut short)
#   image          the PGM / PPM reader
#   spec           the model spec parser: sequences, graphs and the gpt line,
#                  with a format -> parse round trip
#   safetensors    the safetensors container reader, on a buffer
#   checkpoint     mpcl_checkpoint_open / _meta / _spec on a file (no device)
#   program_cache  the program binary cache entry validation (src/program.c)
#   tuning         the CLBlast tuning cache file (src/tuning.c)
#   cli            the option parsers of mpcl train, bench train, bench gemm
#   text           the language-model text reader and its batches, plain,
#                  gzip-compressed (also cut short) and directories
#
# usage: tools/fuzz.sh [TARGET|all] [SECONDS] [RUNS]
#   SECONDS  time per target (default 300; 0: no time limit)
#   RUNS     stop after this many executions as well (e.g. 1e7)
#
# The library is compiled once, instrumented, into build/fuzz/obj (again
# where a source or header changed), each target into build/fuzz/TARGET/.
# The committed seeds are copied into build/fuzz/TARGET/corpus, which keeps
# what the fuzzer adds. Inputs saved in tests/fuzz/regressions/TARGET/ run
# first. libFuzzer's output goes to build/fuzz/TARGET/last.log; findings
# (crash-*, leak-*, timeout-*, oom-*) to build/fuzz/TARGET/findings/RUN/.
# Per target the last line is
#   fuzz TARGET: N execs, cov C, ft F, K findings
# and the exit status is 1 when any target had a finding or failed.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
ALL="idx image spec safetensors checkpoint program_cache tuning cli text"

usage() {
    echo "usage: tools/fuzz.sh [TARGET|all] [SECONDS] [RUNS]" >&2
    echo "  targets: $ALL" >&2
    exit 2
}
target=${1:-all}
secs=${2:-300}
runs=${3:-}
case $secs in '' | *[!0-9]*) usage ;; esac
if [ -n "$runs" ]; then
    # accept 10000000 or 1e7
    runs=$(awk -v r="$runs" 'BEGIN { if (r !~ /^[0-9]+([.][0-9]+)?([eE][+]?[0-9]+)?$/ || r + 0 < 1) exit 1;
                                     printf "%.0f", r + 0 }') || usage
fi
if [ "$target" = all ]; then
    targets=$ALL
else
    case " $ALL " in
        *" $target "*) targets=$target ;;
        *) echo "fuzz: unknown target '$target'" >&2; usage ;;
    esac
fi

cc=$(command -v clang-19 || command -v clang-18 || command -v clang-17 || command -v clang-16 ||
     command -v clang-15) || {
    echo "fuzz: needs clang 15 or newer (Debian package clang-15)" >&2; exit 1; }
for p in libcjson zlib OpenCL clblast; do
    pkg-config --exists "$p" || { echo "fuzz: needs $p (pkg-config); see tools/install-deps.sh" >&2; exit 1; }
done
clblast_version=$(pkg-config --modversion clblast)
cflags="-std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -DCL_TARGET_OPENCL_VERSION=120
 -DCL_USE_DEPRECATED_OPENCL_1_2_APIS -DMPCL_VERSION_STRING=\"fuzz\"
 -DMPCL_CLBLAST_VERSION=\"$clblast_version\" -Iinclude -Isrc -Itools
 $(pkg-config --cflags libcjson zlib OpenCL clblast)"
libs="$(pkg-config --libs libcjson zlib OpenCL clblast) -lm -lpthread"

# ------------------------------------------------------------------ build
obj=build/fuzz/obj
mkdir -p "$obj"
# new flags or compiler: everything again
printf '%s\n' "$cc $cflags" >"$obj/flags.new"
if ! cmp -s "$obj/flags.new" "$obj/flags"; then
    rm -f "$obj"/*.o "$obj"/*.a
    mv "$obj/flags.new" "$obj/flags"
else
    rm -f "$obj/flags.new"
fi

# stale OUT DEPS...: OUT is missing, or older than a DEP, the flags or a
# header in $headers
# (sh has no local variables: the helpers' names start with their own)
stale() {
    stale_out=$1
    shift
    [ -f "$stale_out" ] || return 0
    for stale_dep in "$@" "$obj/flags"; do
        [ "$stale_dep" -nt "$stale_out" ] && return 0
    done
    # shellcheck disable=SC2086
    [ -n "$(find $headers -name '*.h' -newer "$stale_out" | head -n 1)" ]
}

# archive NAME SOURCES...: the sources compiled (instrumented for coverage)
# into $obj/NAME
archive() {
    archive_name=$1
    shift
    archive_objs=
    for archive_src in "$@"; do
        archive_o=$obj/$(printf '%s' "$archive_src" | tr '/' '_' | sed 's/\.c$/.o/')
        if stale "$archive_o" "$archive_src"; then
            echo "fuzz: cc $archive_src"
            # shellcheck disable=SC2086
            "$cc" $cflags -fsanitize=fuzzer-no-link -c "$archive_src" -o "$archive_o"
        fi
        archive_objs="$archive_objs $archive_o"
    done
    # shellcheck disable=SC2086
    if stale "$obj/$archive_name" $archive_objs; then
        rm -f "$obj/$archive_name"
        # shellcheck disable=SC2086
        ar rcs "$obj/$archive_name" $archive_objs
    fi
}

# The kernels are never built here: an empty table instead of the embedded
# sources (tools/embed-cl.py).
if [ ! -f "$obj/kernels_stub.c" ]; then
    printf '%s\n' '#include "internal.h"' \
        'const mpcl_embedded_source mpcl_embedded_sources[] = {{"precision.h", ""}};' \
        'const size_t mpcl_embedded_source_count = 0;' >"$obj/kernels_stub.c"
fi
headers="src include"
# shellcheck disable=SC2046
archive libmpcl-fuzz.a $(find src -name '*.c' | LC_ALL=C sort) "$obj/kernels_stub.c"
case " $targets " in
    *" cli "*)
        # the tool's sources but main (tools/mpcl.c) and cmd_bench.c, which
        # fuzz_cli.c includes
        headers="src include tools"
        archive libmpcl-tools-fuzz.a tools/cli.c tools/train_args.c tools/train_log.c \
            tools/train_lm.c tools/train_dist.c tools/cmd_train.c tools/cmd_eval.c \
            tools/cmd_probe.c tools/cmd_tune.c tools/cmd_generate.c ;;
esac

# --------------------------------------------------------------------- run
max_len_of() {
    case $1 in
        safetensors | checkpoint) echo 70000 ;;
        image) echo 20000 ;;
        tuning | program_cache) echo 16384 ;;
        spec | text) echo 8192 ;;
        idx) echo 4096 ;;
        cli) echo 1024 ;;
    esac
}

# AddressSanitizer's options where the user sets none. IDX and text files
# may announce or hold up to 2 GiB (the readers' limits); the readers' buffers
# grow with the data they find, and allocations above 256 MiB fail instead
# (the readers' out-of-memory paths), as a slow 2 GiB one would take most of
# the run.
user_asan=${ASAN_OPTIONS:-}
asan_of() {
    case $1 in
        idx | text) echo "allocator_may_return_null=1:max_allocation_size_mb=256" ;;
    esac
}

failed=
headers="src include tools tests/fuzz"
for name in $targets; do
    out=build/fuzz/$name
    mkdir -p "$out/corpus"
    bin=$out/fuzz_$name
    src=tests/fuzz/fuzz_$name.c
    extra=
    deps="$src $obj/libmpcl-fuzz.a"
    if [ "$name" = cli ]; then
        extra=$obj/libmpcl-tools-fuzz.a
        deps="$deps $extra tools/cmd_bench.c"
    fi
    # shellcheck disable=SC2086
    if stale "$bin" $deps; then
        echo "fuzz: cc $src"
        # shellcheck disable=SC2086
        "$cc" $cflags -fsanitize=fuzzer "$src" $extra "$obj/libmpcl-fuzz.a" $libs -o "$bin"
    fi
    if [ -n "$(ls -A "tests/fuzz/corpus/$name" 2>/dev/null)" ]; then
        cp tests/fuzz/corpus/"$name"/* "$out/corpus/"
    fi
    dict=
    [ -f "tests/fuzz/$name.dict" ] && dict="-dict=$root/tests/fuzz/$name.dict"
    run_id=$(date +%Y%m%d-%H%M%S)
    findings=$root/$out/findings/$run_id
    mkdir -p "$findings"
    log=$root/$out/last.log
    opts="-max_len=$(max_len_of "$name") -timeout=25 -rss_limit_mb=4096 -malloc_limit_mb=2100
          -artifact_prefix=$findings/ -print_final_stats=1"

    ASAN_OPTIONS=${user_asan:-$(asan_of "$name")}
    export ASAN_OPTIONS
    rc=0
    : >"$log"
    # the saved regressions first: each must run clean
    if [ -n "$(ls -A "tests/fuzz/regressions/$name" 2>/dev/null)" ]; then
        echo "fuzz: $name: the inputs of tests/fuzz/regressions/$name"
        # shellcheck disable=SC2086
        (cd "$out" && ./"fuzz_$name" $opts "$root/tests/fuzz/regressions/$name"/*) >>"$log" 2>&1 || rc=$?
        [ "$rc" -eq 0 ] || echo "fuzz: $name: a saved regression fails again"
    fi
    regressed=$([ "$rc" -eq 0 ] && echo 0 || echo 1)
    if [ "$rc" -eq 0 ]; then
        if [ "$secs" -eq 0 ]; then span="${runs:-unlimited} runs"; else span="$secs s${runs:+ or $runs runs}"; fi
        echo "fuzz: $name for $span (libFuzzer's output: $out/last.log)"
        # shellcheck disable=SC2086
        (cd "$out" && ./"fuzz_$name" $opts $dict -max_total_time="$secs" ${runs:+-runs=$runs} corpus) \
            >>"$log" 2>&1 || rc=$?
    fi

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    last=$(grep -E 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
    cov=$(printf '%s\n' "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    ft=$(printf '%s\n' "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
    corp=$(printf '%s\n' "$last" | sed -n 's/.*corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p')
    found=$(find "$findings" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' \
              -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l | tr -d ' ')
    found=$((found + regressed))
    if [ "$found" -gt 0 ] || [ "$rc" -ne 0 ]; then
        echo "fuzz: $name: libFuzzer exited with $rc; the end of $out/last.log:"
        grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|INITED)' "$log" | tail -n 60 | sed 's/^/    /'
        if [ -n "$(ls -A "$findings")" ]; then
            echo "fuzz: $name: findings in $out/findings/$run_id:"
            find "$findings" -type f | sed 's|.*/|    |'
        else
            rmdir "$findings"
        fi
        failed="$failed $name"
    else
        rmdir "$findings" 2>/dev/null || true
        echo "fuzz: $name: ${speed:-?} execs/s, corpus ${corp:-?}"
    fi
    echo "fuzz $name: ${execs:-0} execs, cov ${cov:-0}, ft ${ft:-0}, $found findings"
done
if [ -n "$failed" ]; then
    echo "fuzz: failed:$failed" >&2
    exit 1
fi
