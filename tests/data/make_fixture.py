#!/usr/bin/env python3
"""Writes the interoperability fixture: a seed-CNN checkpoint made by Python.

    python3 tests/data/make_fixture.py [FASHION_MNIST_DIR]

Outputs, next to this script:
  seed-cnn-numpy.safetensors   weights from NumPy's generator (seed 2026),
                               written by the `safetensors` package, with the
                               model spec and normalisation in the metadata;
                               "6.bias" is stored as F16 to test widening
  fashion-<i>.pgm              the first four Fashion-MNIST test images (P5)
  seed-cnn-numpy.expected.json their class probabilities from the NumPy
                               float64 forward pass in ../interop/npmodel.py

Run once to regenerate the committed files; the test suite only reads them.
Needs numpy and safetensors (tools/python-env.sh makes such an environment).
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop"))
import npmodel  # noqa: E402

SPEC = """input 1x28x28
conv2d out=10 kernel=5x5 stride=1x1 padding=0x0 dilation=1x1 bias=true
relu
maxpool2d kernel=2x2 stride=2x2 padding=0x0
flatten
linear in=1440 out=10 bias=true
relu
linear in=10 out=10 bias=true
"""
CLASSES = "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
MEAN, STD = 0.2860, 0.3530


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    rng = np.random.default_rng(2026)

    def uniform(shape, fan_in, gain=3.0):
        bound = gain / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    tensors = {
        "0.weight": uniform((10, 1, 5, 5), 25),
        "0.bias": uniform((10,), 25),
        "4.weight": uniform((10, 1440), 1440),
        "4.bias": uniform((10,), 1440),
        "6.weight": uniform((10, 10), 10),
        "6.bias": uniform((10,), 10).astype(np.float16),
    }
    meta = {"format": "mpcl", "kind": "model", "model_spec": SPEC, "input_mean": repr(MEAN),
            "input_std": repr(STD), "class_names": CLASSES, "writer": "tests/data/make_fixture.py"}
    save_file(tensors, os.path.join(HERE, "seed-cnn-numpy.safetensors"), metadata=meta)

    images = npmodel.read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"))[:4]
    labels = npmodel.read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"))[:4]
    names = []
    for i, img in enumerate(images):
        name = f"fashion-{i}.pgm"
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(b"P5\n28 28\n255\n" + img.tobytes())
        names.append(name)
    # mpcl normalises with float32 mean and std
    x = npmodel.normalise(images, float(np.float32(MEAN)), float(np.float32(STD)))[:, None]
    probs = npmodel.softmax(npmodel.forward(SPEC, tensors, x))
    expected = {"checkpoint": "seed-cnn-numpy.safetensors",
                "images": [{"file": n, "label": int(y), "probs": [float(p) for p in row]}
                           for n, y, row in zip(names, labels, probs)]}
    with open(os.path.join(HERE, "seed-cnn-numpy.expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    for n, row in zip(names, probs):
        print(n, int(row.argmax()), f"{row.max():.4f}")


if __name__ == "__main__":
    main()
