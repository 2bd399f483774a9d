"""Compares two mpcl checkpoints tensor by tensor (safetensors + NumPy,
independent of mpcl): the largest difference of each tensor relative to
its largest magnitude must be at most TOL. TOL 0 asks for identical bits.

usage: compare.py A.st B.st TOL [PREFIX]   (PREFIX: only tensors whose
name starts with it; !PREFIX: all but those, e.g. !optimizer. for the
model's weights without the optimizer state)
"""
import sys

import numpy as np
from safetensors.numpy import load_file


def main():
    a, b, tol = load_file(sys.argv[1]), load_file(sys.argv[2]), float(sys.argv[3])
    prefix = sys.argv[4] if len(sys.argv) > 4 else ""
    if set(a) != set(b):
        print("the tensors differ:", sorted(set(a) ^ set(b)))
        return 1
    worst, worst_name, n = 0.0, "", 0
    for k in sorted(a):
        skip = k.startswith(prefix[1:]) if prefix.startswith("!") else not k.startswith(prefix)
        if skip or a[k].dtype.kind != "f":
            continue
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        if tol == 0:
            d = 0.0 if a[k].tobytes() == b[k].tobytes() else float("inf")
        else:
            scale = max(np.abs(x).max(), np.abs(y).max(), 1e-30)
            d = float(np.abs(x - y).max() / scale)
        n += 1
        if d > worst or not worst_name:
            worst, worst_name = d, k
    print(f"{n} tensors, largest relative difference {worst:.3g} ({worst_name}), tolerance {tol:g}")
    return 0 if n and worst <= tol else 1


if __name__ == "__main__":
    sys.exit(main())
