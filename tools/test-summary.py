#!/usr/bin/env python3
"""Prints the test suite's counts per OpenCL implementation from Meson's
test log (build/meson-logs/testlog.json): Check's "Checks: N, Failures: F,
Errors: E" lines and the script tests' "N passed, N failed" lines, summed
for every implementation (tests named TEST@NAME, and tests run once on the
first usable implementation, which icd-run.sh names) and for the host-only
tests, then one total line ("total: N passed, N failed, N skipped": checks
passed and failed, a test that failed outside any check counted as one
failed check, and skipped tests). Reference tool of tools/test.sh; the engine
never needs Python.

usage: test-summary.py [TESTLOG]"""
import json
import re
import sys

CHECK = re.compile(r"^\d+%: Checks: (\d+), Failures: (\d+), Errors: (\d+)", re.M)
ICD_RUN = re.compile(r"^icd-run: OpenCL implementation '([^']+)'", re.M)
PLAIN = re.compile(r"^(?:\w+: )?(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$", re.M)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "build/meson-logs/testlog.json"
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        print(f"test-summary: cannot read {path}: {e.strerror}", file=sys.stderr)
        return 1
    groups = {}
    for line in lines:
        if not line.strip():
            continue
        t = json.loads(line)
        name = t["name"].split(" / ")[-1]
        out = t.get("stdout") or ""
        impl = name.split("@", 1)[1] if "@" in name else "host"
        ran_on = ICD_RUN.search(out)  # a test run once, on the first usable implementation
        if ran_on and "@" not in name:
            impl = ran_on.group(1)
        g = groups.setdefault(impl, {"tests": 0, "ok": 0, "skip": 0, "fail": 0,
                                     "checks": 0, "failed": 0})
        g["tests"] += 1
        res = t["result"]
        if res == "EXPECTEDFAIL":  # a test that must fail (should_fail) and did: it passed
            res = "OK"
        g["ok" if res == "OK" else "skip" if res == "SKIP" else "fail"] += 1
        checks = failed = 0
        found = list(CHECK.finditer(out))
        if name.startswith("cap_") and found:
            found = found[-1:]  # one Check runner over every cap: its counts add up, the last is the total
        for m in found:
            checks += int(m.group(1))
            failed += int(m.group(2)) + int(m.group(3))
        for m in PLAIN.finditer(out):
            checks += int(m.group(1)) + int(m.group(2))
            failed += int(m.group(2))
        if res not in ("OK", "SKIP") and failed == 0:
            checks, failed = checks + 1, 1  # died, timed out or failed outside a check
        g["checks"] += checks
        g["failed"] += failed
    print("Test counts per OpenCL implementation (host: tests without a device, and oclgrind)")
    total = [0, 0, 0]
    for impl in sorted(groups, key=lambda k: (k == "host", k)):
        g = groups[impl]
        print(f"  {impl:8} {g['tests']:3} tests: {g['ok']} ok, {g['skip']} skipped, {g['fail']} failed;"
              f" {g['checks']} checks, {g['failed']} failed")
        total[0] += g["checks"] - g["failed"]
        total[1] += g["failed"]
        total[2] += g["skip"]
    print(f"total: {total[0]} passed, {total[1]} failed, {total[2]} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
