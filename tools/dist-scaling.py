#!/usr/bin/env python3
"""Predicted data-parallel scaling of mpcl models (docs/distributed.md).

A ring allreduce of B gradient bytes over N devices sends 2 (N - 1) / N * B
bytes per device; at link bandwidth W it takes at least that / W. With each
device keeping its own batch (the global batch grows with N), a step takes
the compute time C plus whatever part of the exchange is not hidden behind
the backward pass; the bound below hides none of it:

    efficiency(N) = C / (C + 2 (N - 1) / N * B / W)

usage: dist-scaling.py [--wire-bytes 4] NAME:PARAMS:STEP_MS ...
  NAME      a label; PARAMS its parameter count; STEP_MS its measured step
            time on one device (mpcl bench train, or mpcl train's ms a step)
prints a Markdown table: gradient MB per step, the step time, and the
efficiency at 2..64 devices over 10 and 100 Gbit/s links.
Reference tool: the engine never needs Python."""
import sys

DEVICES = [2, 4, 8, 16, 32, 64]
LINKS = [10e9, 100e9]  # bit/s


def main(argv):
    wire = 4
    args = argv[1:]
    if args[:1] == ["--wire-bytes"]:
        wire = int(args[1])
        args = args[2:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    head = ["model", "gradient MB", "step ms"]
    for w in LINKS:
        head += [f"{n} dev @ {w / 1e9:g} Gb/s" for n in DEVICES]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for a in args:
        try:
            name, params, ms = a.split(":")
            params, ms = int(params), float(ms)
        except ValueError:
            print(f"dist-scaling: '{a}' is not NAME:PARAMS:STEP_MS", file=sys.stderr)
            return 2
        b = params * wire
        row = [name, f"{b / 1e6:.2f}", f"{ms:g}"]
        for w in LINKS:
            for n in DEVICES:
                comm_ms = 2 * (n - 1) / n * b * 8 / w * 1e3
                row.append(f"{100 * ms / (ms + comm_ms):.0f}%")
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
