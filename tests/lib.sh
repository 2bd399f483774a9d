# Shared by the shell tests (sourced): a temporary directory $T removed at
# exit, and check NAME COMMAND..., which runs COMMAND with its output in
# $T/out and prints "PASS NAME: <its last line>", "SKIP NAME: <its last
# line>" (exit 77) or "FAIL NAME" and the output's last 40 lines. With
# ONLY=TEXT in the environment only the checks whose name has TEXT run.
# check_summary SUITE prints the counts and returns non-zero on a failure.
# require_numpy SUITE PYTHON ends the test (77, or 1 with
# MPCL_REQUIRE_INTEROP=1) when PYTHON lacks numpy or safetensors.
# A test that mounts file systems lists them in $mounts (unmounted at exit).
T=$(mktemp -d) || exit 1
mounts=""
checks=0 failed=0 skipped=0
lib_cleanup() {
    for m in $mounts; do umount "$m" 2>/dev/null; done
    rm -rf "$T"
}
trap lib_cleanup EXIT
check() { # name, command...
    name=$1; shift
    case $name in *"${ONLY:-}"*) ;; *) return 0 ;; esac
    checks=$((checks + 1))
    "$@" >"$T/out" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then echo "PASS $name: $(tail -1 "$T/out")"
    elif [ $rc -eq 77 ]; then skipped=$((skipped + 1)); checks=$((checks - 1)); echo "SKIP $name: $(tail -1 "$T/out")"
    else failed=$((failed + 1)); echo "FAIL $name"; sed 's/^/    /' "$T/out" | tail -40; fi
    return 0
}
check_summary() { # suite name
    echo "$1: $((checks - failed)) passed, $failed failed, $skipped skipped"
    [ $failed -eq 0 ]
}
require_numpy() { # suite, python
    "$2" -c 'import numpy, safetensors' 2>/dev/null && return 0
    echo "$1: $2 has no numpy or safetensors (run tools/python-env.sh)"
    [ "${MPCL_REQUIRE_INTEROP:-0}" = 1 ] && exit 1
    exit 77
}
