#!/bin/sh
# Fuzzes the safetensors reader with libFuzzer + AddressSanitizer + UBSan
# (a long run, not part of the default suite).
# usage: tools/fuzz.sh [SECONDS]   (default 300)
# Seeds: the checkpoint fixture in tests/data. Findings go to build/fuzz/.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-300}
cc=$(command -v clang-19 || command -v clang-18 || command -v clang-17 || command -v clang-16 || command -v clang-15) || {
    echo "fuzz: needs clang 15 or newer (Debian package clang-15)" >&2; exit 1; }
out=build/fuzz
mkdir -p "$out/corpus"
cp tests/data/*.safetensors "$out/corpus/"
"$cc" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Isrc -Iinclude $(pkg-config --cflags libcjson) \
    tests/fuzz/fuzz_safetensors.c src/io/safetensors.c $(pkg-config --libs libcjson) \
    -o "$out/fuzz_safetensors"
cd "$out"
exec ./fuzz_safetensors -max_total_time="$secs" -max_len=70000 -artifact_prefix=./ corpus
