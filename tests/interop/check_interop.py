#!/usr/bin/env python3
"""Interoperability checks between mpcl and Python's safetensors + NumPy.

  check_interop.py read CHECKPOINT EVAL_JSON DATA_DIR
      CHECKPOINT (written by `mpcl train --save`) must load with the
      `safetensors` package, carry the documented names, dtypes and metadata,
      and a NumPy float64 forward pass on the test set must reproduce the
      accuracy in EVAL_JSON (`mpcl eval --json`) within 0.1 point.

  check_interop.py predict PREDICT_JSON EXPECTED_JSON TOLERANCE
      `mpcl predict --json --top K` on the Python-written fixture must give
      the fixture's expected classes, and probabilities within TOLERANCE.
"""
import json
import os
import sys

import numpy as np
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import npmodel  # noqa: E402


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check_read(path, eval_json, data_dir):
    with safe_open(path, framework="np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key in ("format", "mpcl_version", "kind", "model_spec", "precision", "step",
                "optimizer", "loss_scale", "seed", "input_mean", "input_std", "epochs_done"):
        if key not in meta:
            fail(f"{path}: metadata has no '{key}'")
    if meta["format"] != "mpcl" or meta["kind"] != "trainer":
        fail(f"{path}: format {meta['format']!r}, kind {meta['kind']!r}")
    want = {"0.weight": (10, 1, 5, 5), "0.bias": (10,), "4.weight": (10, 1440), "4.bias": (10,),
            "6.weight": (10, 10), "6.bias": (10,)}
    for name, shape in want.items():
        if name not in tensors:
            fail(f"{path}: no tensor {name}")
        if tensors[name].shape != shape or tensors[name].dtype != np.float32:
            fail(f"{path}: {name} is {tensors[name].dtype} {tensors[name].shape}, want float32 {shape}")
        for state in ("exp_avg", "exp_avg_sq"):
            s = tensors.get(f"optimizer.{name}.{state}")
            if s is None or s.shape != shape or s.dtype != np.float32:
                fail(f"{path}: optimizer.{name}.{state} missing or wrong")
        if not np.all(np.isfinite(tensors[name])):
            fail(f"{path}: {name} has non-finite values")
    if np.any(tensors["optimizer.0.weight.exp_avg_sq"] < 0):
        fail("Adam's second moment is negative")
    with open(eval_json) as f:
        ev = json.load(f)
    n = int(ev["samples"])
    images = npmodel.read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))[:n]
    labels = npmodel.read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"))[:n]
    mean, std = float(meta["input_mean"]), float(meta["input_std"])
    correct = 0
    for i in range(0, n, 1000):
        x = npmodel.normalise(images[i:i + 1000], mean, std)[:, None]
        logits = npmodel.forward(meta["model_spec"], tensors, x)
        correct += int((logits.argmax(axis=1) == labels[i:i + 1000]).sum())
    acc_np = correct / n
    diff = abs(acc_np - ev["accuracy"]) * 100
    print(f"numpy accuracy {100 * acc_np:.2f}% ({correct} of {n}), mpcl {100 * ev['accuracy']:.2f}% "
          f"({ev['correct']}), difference {diff:.2f} points")
    if diff > 0.1:
        fail("the NumPy forward pass does not reproduce mpcl's accuracy within 0.1 point")


def check_predict(predict_json, expected_json, tol):
    with open(predict_json) as f:
        got = json.load(f)["predictions"]
    with open(expected_json) as f:
        exp = json.load(f)["images"]
    if len(got) != len(exp):
        fail(f"{len(got)} predictions for {len(exp)} images")
    worst = 0.0
    for g, e in zip(got, exp):
        if os.path.basename(g["file"]) != e["file"]:
            fail(f"prediction for {g['file']}, expected {e['file']}")
        probs = np.zeros(len(e["probs"]))
        for t in g["top"]:
            probs[t["class"]] = t["probability"]
        if len(g["top"]) != len(e["probs"]):
            fail("run predict with --top equal to the number of classes")
        if g["class"] != int(np.argmax(e["probs"])):
            fail(f"{e['file']}: class {g['class']}, expected {int(np.argmax(e['probs']))}")
        worst = max(worst, float(np.max(np.abs(probs - np.array(e["probs"])))))
    print(f"{len(got)} images, classes as expected, largest probability difference {worst:.2e} "
          f"(tolerance {tol:g})")
    if worst > tol:
        fail("probabilities differ from the NumPy reference")


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "read":
        check_read(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 5 and sys.argv[1] == "predict":
        check_predict(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
