#!/bin/sh
# Installs mpcl into a temporary root (meson install --destdir), then builds
# and runs a small program against the installed library through
# `pkg-config mpcl`, as an application would.
# usage: test_install.sh BUILD_DIR
set -u
build=$1
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
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
