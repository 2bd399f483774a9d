#!/bin/sh
# Installs mpcl into a temporary root (meson install --destdir), then builds
# and runs a small program against the installed library through
# `pkg-config mpcl`, as an application would: a small check program,
# examples/embed.c, which loads a checkpoint and classifies images (its
# classes must be those the installed `mpcl predict` gives), and
# examples/fit.c, which trains with mpcl_fit and resumes from its checkpoint.
# usage: test_install.sh BUILD_DIR SOURCE_ROOT
set -u
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
passed=0
failed=0
check() { # name, command...
    name=$1
    shift
    if "$@" >"$tmp/out.txt" 2>&1; then
        passed=$((passed + 1))
        echo "ok: $name"
    else
        failed=$((failed + 1))
        echo "FAILED: $name"
        sed 's/^/    /' "$tmp/out.txt"
    fi
}

check "meson install --destdir" meson install -C "$build" --destdir "$tmp/root" --no-rebuild --quiet

pc=$(find "$tmp/root" -name mpcl.pc | head -n 1)
check "mpcl.pc installed" test -n "$pc"
check "mpcl.h installed" test -n "$(find "$tmp/root" -path '*include/mpcl.h' | head -n 1)"
check "libmpcl.so installed" test -n "$(find "$tmp/root" -name 'libmpcl.so*' | head -n 1)"
check "libmpcl.a installed" test -n "$(find "$tmp/root" -name 'libmpcl.a' | head -n 1)"

if [ -n "$pc" ]; then
    # Point the installed .pc file's prefix at the temporary root.
    mkdir -p "$tmp/pc"
    prefix=$(sed -n 's/^prefix=//p' "$pc")
    sed "s|^prefix=.*|prefix=$tmp/root$prefix|" "$pc" >"$tmp/pc/mpcl.pc"
    export PKG_CONFIG_PATH="$tmp/pc"
    cat >"$tmp/app.c" <<'APP'
#include <mpcl.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    if (strcmp(mpcl_version(), "0.1.0") < 0) return 1;
    if (mpcl_half_from_float(65504.0f) != 0x7bff) return 2;
    if (mpcl_half_from_float(65520.0f) != 0x7c00) return 3;
    if (mpcl_half_to_float(0x0001) != 0x1p-24f) return 4;
    mpcl_precision p;
    if (mpcl_precision_parse("fp16-storage", &p) != MPCL_OK || p != MPCL_PRECISION_FP16_STORAGE) return 5;
    printf("mpcl %s via pkg-config: ok\n", mpcl_version());
    return 0;
}
APP
    flags=$(pkg-config --cflags --libs mpcl)
    check "pkg-config --cflags --libs mpcl" test -n "$flags"
    # shellcheck disable=SC2086
    check "build an app against the installed library" cc -std=c11 -Wall -Werror "$tmp/app.c" -o "$tmp/app" $flags
    libdir=$(pkg-config --variable=libdir mpcl)
    check "run the app on the installed shared library" env LD_LIBRARY_PATH="$libdir" "$tmp/app"
    check "the app links the installed libmpcl" sh -c "LD_LIBRARY_PATH='$libdir' ldd '$tmp/app' | grep -q '$libdir/libmpcl.so'"

    # examples/embed.c: a checkpoint written by Python, four images
    # shellcheck disable=SC2086
    check "build examples/embed.c against the installed library" \
        cc -std=c11 -Wall -Wextra -Werror "$src/examples/embed.c" -o "$tmp/embed" $flags
    fixture=$src/tests/data/seed-cnn-numpy.safetensors
    images="$src/tests/data/fashion-0.pgm $src/tests/data/fashion-1.pgm $src/tests/data/fashion-2.pgm $src/tests/data/fashion-3.pgm"
    # shellcheck disable=SC2086
    if LD_LIBRARY_PATH="$libdir" "$tmp/embed" "$fixture" $images >"$tmp/embed.txt" 2>&1; then
        check "embed classifies the images" grep -q 'fashion-3.pgm: ' "$tmp/embed.txt"
        bin=$(find "$tmp/root" -path '*bin/mpcl' | head -n 1)
        # shellcheck disable=SC2086
        LD_LIBRARY_PATH="$libdir" "$bin" predict "$fixture" $images >"$tmp/predict.txt" 2>/dev/null
        # "FILE: NAME (P%)" and "FILE: NAME P%" -> "FILE: NAME"
        sed -n 's/ ([0-9.]*%)$//p' "$tmp/embed.txt" >"$tmp/a"
        sed -n 's/ [0-9.]*%$//p' "$tmp/predict.txt" >"$tmp/b"
        check "embed's classes are those of the installed mpcl predict" \
            sh -c "test -s '$tmp/a' && diff '$tmp/a' '$tmp/b'"
        sed 's/^/    /' "$tmp/embed.txt"
    elif grep -q 'no usable OpenCL device' "$tmp/embed.txt"; then
        echo "skip: embed needs an OpenCL device: $(cat "$tmp/embed.txt")"
    else
        check "run examples/embed" false
        sed 's/^/    /' "$tmp/embed.txt"
    fi
    check "embed refuses a missing checkpoint" sh -c \
        "! LD_LIBRARY_PATH='$libdir' '$tmp/embed' '$tmp/none.st' $src/tests/data/fashion-0.pgm 2>'$tmp/e' && grep -q 'none.st' '$tmp/e'"

    # examples/fit.c: mpcl_fit through the installed library, then a second
    # run that resumes from its checkpoint and trains the next epoch
    data=${MPCL_TEST_DATA:-/usr/share/datasets/fashion-mnist}
    # shellcheck disable=SC2086
    check "build examples/fit.c against the installed library" \
        cc -std=c11 -Wall -Wextra -Werror "$src/examples/fit.c" -o "$tmp/fit" $flags
    if [ -d "$data" ]; then
        spec=$src/data/models/seed-cnn.txt
        check "fit trains an epoch and saves it" sh -c \
            "LD_LIBRARY_PATH='$libdir' '$tmp/fit' '$spec' '$data' 1 '$tmp/fit.st' 512 >'$tmp/f1' && grep -q '^epoch 1/1' '$tmp/f1' && grep -q '^test accuracy' '$tmp/f1' && test -s '$tmp/fit.st'"
        check "fit resumes from its checkpoint" sh -c \
            "LD_LIBRARY_PATH='$libdir' '$tmp/fit' '$spec' '$data' 2 '$tmp/fit.st' 512 >'$tmp/f2' && grep -q 'resumed from .*: 1 epochs and 0 steps done' '$tmp/f2' && grep -q '^epoch 2/2' '$tmp/f2' && ! grep -q '^epoch 1/2' '$tmp/f2'"
        sed 's/^/    /' "$tmp/f1" "$tmp/f2" 2>/dev/null
        check "fit refuses a spec that does not fit the data" sh -c \
            "printf 'input 3x8x8\\nflatten\\nlinear out=10\\n' >'$tmp/bad.txt' && ! LD_LIBRARY_PATH='$libdir' '$tmp/fit' '$tmp/bad.txt' '$data' 1 '$tmp/bad.st' 64 2>'$tmp/e' && grep -q '3x8x8' '$tmp/e'"
    else
        echo "skip: examples/fit needs a data set in $data"
    fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
