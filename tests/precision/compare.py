#!/usr/bin/env python3
"""Checks a report of `mpcl precision --json` against NumPy over the values
the same run wrote with --save-values (safetensors).

usage: compare.py REPORT.json VALUES.safetensors LABELS_IDX [CHECKPOINT]

Per tensor, from the values alone: the count, zeros, inf/NaN, the smallest,
median (lower) and largest magnitude, the exponent histogram, the shares
that fp16 flushes to zero, makes subnormal or overflows (NumPy's float16
rounding), the share bf16 rounds with a relative error above 2^-8 (bf16 by
integer round-to-nearest-even on the float bits), each within one value, and
the same at the loss scale for gradients. The advice's loss-scale range is
recomputed from the histograms with the rule of docs/precision.md.

The tensors are the model's: the last layer's output gradient is
(softmax(logits) - onehot(labels)) / B for each batch, the last linear
layer's weight gradient is its output gradient times its input, and with a
checkpoint the weights are the checkpoint's.
"""
import gzip
import json
import sys

import numpy as np
from safetensors.numpy import load_file

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL", msg)


def bf16_round(x):
    """float32 -> bfloat16 (as float32), round to nearest even."""
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    out = rounded.astype(np.uint32).view(np.float32)
    nan = np.isnan(x)
    out[nan] = np.nan
    return out


def stats(x):
    """The report's counts for float32 values x."""
    fin = np.isfinite(x)
    nz = fin & (x != 0)
    a = np.abs(x[nz]).astype(np.float32)
    s = {"count": x.size, "zeros": int(np.sum(fin & (x == 0))), "nonfinite": int(np.sum(~fin))}
    if a.size:
        s["min_nonzero"] = float(a.min())
        s["max"] = float(a.max())
        s["median"] = float(np.sort(a)[(a.size - 1) // 2])
        _, e = np.frexp(a)
        e = e.astype(np.int64) - 1  # floor(log2|x|)
        lo = int(e.min())
        s["exponents"] = {"lo": lo, "counts": np.bincount(e - lo).tolist()}
    else:
        s.update(min_nonzero=0.0, max=0.0, median=0.0, exponents={"lo": 0, "counts": []})
    with np.errstate(over="ignore"):
        h = a.astype(np.float16).astype(np.float32)
    s["f16_overflow"] = int(np.sum(np.isinf(h)))
    s["f16_zero"] = int(np.sum(h == 0))
    s["f16_subnormal"] = int(np.sum((h != 0) & (h < 2.0 ** -14)))
    with np.errstate(over="ignore", invalid="ignore"):
        b = bf16_round(a)
        rel = np.abs(b.astype(np.float64) - a.astype(np.float64))
        s["bf16_lossy"] = int(np.sum(~np.isfinite(b) | (rel > 2.0 ** -8 * a.astype(np.float64))))
    return s


def close_count(name, what, share, count, want):
    got = share * count
    if abs(got - want) > 1.0:
        fail(f"{name}: {what}: the report's share {share:.9g} of {count} is {got:.1f} values, "
             f"NumPy counts {want}")


def check_stats(name, rep, want, scaled=False):
    tag = " (at the loss scale)" if scaled else ""
    if not scaled:
        for k in ("count", "zeros", "nonfinite"):
            if rep[k] != want[k]:
                fail(f"{name}: {k} {rep[k]}, NumPy {want[k]}")
        for k in ("min_nonzero", "median", "max"):
            if not np.isclose(rep[k], want[k], rtol=1e-6, atol=0):
                fail(f"{name}: {k} {rep[k]!r}, NumPy {want[k]!r}")
    if rep["exponents"] != want["exponents"]:
        fail(f"{name}: exponent histogram{tag} differs: {rep['exponents']} against {want['exponents']}")
    n = want["count"]
    close_count(name, "fp16 zero" + tag, rep["fp16"]["zero"], n, want["f16_zero"])
    close_count(name, "fp16 subnormal" + tag, rep["fp16"]["subnormal"], n, want["f16_subnormal"])
    close_count(name, "fp16 overflow" + tag, rep["fp16"]["overflow"], n, want["f16_overflow"])
    if not scaled:
        close_count(name, "bf16 lossy", rep["bf16"]["lossy"], n, want["bf16_lossy"])


def advice(tensors):
    """The loss-scale range by the documented rule, from the histograms."""
    hist = {}
    gmax = 0.0
    for t in tensors:
        if t["role"] not in ("activation_gradient", "weight_gradient"):
            continue
        lo = t["exponents"]["lo"]
        for i, c in enumerate(t["exponents"]["counts"]):
            hist[lo + i] = hist.get(lo + i, 0) + c
        gmax = max(gmax, t["max"])
    nonzero = sum(hist.values())
    kmax = next((k for k in range(24, -25, -1) if gmax * 2.0 ** k < 65520.0), None)
    kmin = next((k for k in range(-24, 25)
                 if sum(c for e, c in hist.items() if e + k <= -26) <= 1e-3 * nonzero), 25)
    return (2.0 ** kmin, 0.0 if kmax is None else 2.0 ** kmax)


def read_idx_labels(path, n):
    with (gzip.open(path) if path.endswith(".gz") else open(path, "rb")) as f:
        data = f.read()
    return np.frombuffer(data[8:8 + n], dtype=np.uint8).astype(np.int64)


def main():
    report = json.load(open(sys.argv[1]))
    values = load_file(sys.argv[2])
    tensors = report["tensors"]
    batches, batch, scale = report["batches"], report["batch"], report["loss_scale"]
    names = [t["name"] for t in tensors]
    if sorted(names) != sorted(values):
        fail(f"the report's tensors {names} are not the saved ones {sorted(values)}")
        return
    for t in tensors:
        x = values[t["name"]]
        check_stats(t["name"], t, stats(x))
        if "scaled" in t:
            with np.errstate(over="ignore"):
                xs = (x * np.float32(scale)).astype(np.float32)
            check_stats(t["name"], t["scaled"], stats(xs), scaled=True)
    lo, hi = advice(tensors)
    ad = report["advice"]
    if (ad["loss_scale_min"], ad["loss_scale_max"]) != (lo, hi):
        fail(f"advice: loss scales {ad['loss_scale_min']} .. {ad['loss_scale_max']}, "
             f"the rule gives {lo} .. {hi}")
    print(f"{len(tensors)} tensors: counts, ranges, exponent histograms and fp16/bf16 shares "
          f"agree with NumPy; loss scales {lo:g} .. {hi:g}")

    # the tensors are the model's
    outs = [t for t in tensors if t["role"] == "activation"]
    last, prev = outs[-1], outs[-2]
    labels = read_idx_labels(sys.argv[3], batches * batch)
    logits = values[last["name"]].reshape(batches, batch, -1).astype(np.float64)
    p = np.exp(logits - logits.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    onehot = np.eye(logits.shape[2])[labels.reshape(batches, batch)]
    want = (p - onehot) / batch
    got = values[last["name"] + ".grad"].reshape(want.shape)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    if err > 1e-5:
        fail(f"{last['name']}.grad is not (softmax - onehot) / B: max relative error {err:.3g}")
    layer = last["layer"]
    wg = values[f"{layer}.weight.grad"].reshape(batches, logits.shape[2], -1)
    x = values[prev["name"]].reshape(batches, batch, -1).astype(np.float64)
    want_w = np.einsum("bno,bni->boi", got.astype(np.float64), x)
    err_w = np.max(np.abs(wg - want_w)) / np.max(np.abs(want_w))
    if err_w > 1e-4:
        fail(f"{layer}.weight.grad is not out.grad^T x input: max relative error {err_w:.3g}")
    print(f"model: {last['name']}.grad = (softmax - onehot)/B within {err:.2g}, "
          f"{layer}.weight.grad = dY^T X within {err_w:.2g}")
    if len(sys.argv) > 4:
        ck = load_file(sys.argv[4])
        for t in tensors:
            if t["role"] != "weight":
                continue
            w = values[t["name"]].reshape(batches, -1)
            if not np.array_equal(w[0], ck[t["name"]].reshape(-1).astype(np.float32)):
                fail(f"{t['name']}: the report's weights are not the checkpoint's")
        print("the weights are the checkpoint's, bit for bit")


main()
if failures:
    print(f"{len(failures)} failures")
    sys.exit(1)
