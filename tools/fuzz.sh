#!/bin/sh
# Fuzzes mpcl's parsers of untrusted input with libFuzzer + AddressSanitizer
# + UBSan (long runs, not part of the default suite):
#   safetensors  the checkpoint reader (seeds: tests/data/*.safetensors)
#   spec         the model spec parser, sequences and graphs, and the
#                format -> parse round trip (seeds: data/models/*.txt)
#   image        the PGM / PPM reader (seeds: tests/data/*.pgm)
# usage: tools/fuzz.sh [TARGET|all] [SECONDS]   (default: all, 300 s each)
# Findings (crash-*, leak-*) go to build/fuzz/TARGET/.
set -eu
cd "$(dirname "$0")/.."
target=${1:-all}
secs=${2:-300}
cc=$(command -v clang-19 || command -v clang-18 || command -v clang-17 || command -v clang-16 || command -v clang-15) || {
    echo "fuzz: needs clang 15 or newer (Debian package clang-15)" >&2; exit 1; }
flags="-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc -Iinclude -D_DEFAULT_SOURCE -DMPCL_VERSION_STRING=\"fuzz\""
run() { # name, max_len, seed files, sources...
    name=$1 maxlen=$2 seeds=$3
    shift 3
    out=build/fuzz/$name
    mkdir -p "$out/corpus"
    # shellcheck disable=SC2086
    cp $seeds "$out/corpus/"
    # shellcheck disable=SC2086
    "$cc" $flags $(pkg-config --cflags libcjson) "tests/fuzz/fuzz_$name.c" "$@" \
        $(pkg-config --libs libcjson) -lz -lm -o "$out/fuzz_$name"
    echo "fuzz: $name for $secs s"
    (cd "$out" && ./"fuzz_$name" -max_total_time="$secs" -max_len="$maxlen" -artifact_prefix=./ corpus)
}
case $target in
    safetensors|all) run safetensors 70000 "tests/data/*.safetensors" src/io/safetensors.c ;;
esac
case $target in
    spec|all) run spec 8192 "data/models/*.txt" src/nn/spec.c src/status.c ;;
esac
case $target in
    image|all) run image 20000 "tests/data/*.pgm" src/data/pgm.c src/data/idx.c src/data/cifar.c src/status.c ;;
esac
case $target in
    safetensors|spec|image|all) ;;
    *) echo "fuzz: unknown target '$target' (safetensors, spec, image or all)" >&2; exit 2 ;;
esac
