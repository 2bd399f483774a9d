#!/usr/bin/env python3
"""bench-pytorch.py — a PyTorch reference for `mpcl bench train`.

Trains the seed CNN (conv 1->10 k5, ReLU, maxpool 2, flatten, linear
1440->10, ReLU, linear 10->10) with Adam, lr 1e-3, softmax cross-entropy,
in FP32 on the CPU with a fixed number of threads (default 2), and prints
img/s as one JSON object shaped like one entry of mpcl's "modes" (see
docs/bench.md). A reference tool only: mpcl never depends on PyTorch.

    python3 tools/bench-pytorch.py [--data DIR | --synthetic] [--batch 64]
        [--steps 100] [--warmup 10] [--rounds 1] [--threads 2]

Like mpcl's benchmark, it times whole training steps (batch gathering,
forward, loss, backward, optimizer) over --steps steps per round after
--warmup untimed steps, and reports the median over the rounds.
"""
import argparse
import gzip
import json
import os
import statistics
import struct
import sys
import time


def read_idx(path):
    """An IDX file (plain or .gz) as (dims, bytes)."""
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            opener = gzip.open if p.endswith(".gz") else open
            with opener(p, "rb") as f:
                data = f.read()
            break
    else:
        sys.exit(f"bench-pytorch: no {path} or {path}.gz")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"bench-pytorch: {path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--synthetic", action="store_true", help="random images and labels")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if min(a.batch, a.steps, a.rounds, a.threads) < 1 or a.warmup < 0:
        ap.error("--batch, --steps, --rounds and --threads must be >= 1, --warmup >= 0")

    import torch
    import torch.nn as nn

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.synthetic:
        g = torch.Generator().manual_seed(a.seed)
        images = torch.randint(0, 256, (1024, 28, 28), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (1024,), dtype=torch.int64, generator=g)
        data_desc = "synthetic"
    else:
        (n, rows, cols), pix = read_idx(os.path.join(a.data, "train-images-idx3-ubyte"))
        (nl,), lab = read_idx(os.path.join(a.data, "train-labels-idx1-ubyte"))
        if nl != n:
            sys.exit("bench-pytorch: image and label counts differ")
        images = torch.frombuffer(bytearray(pix), dtype=torch.uint8).view(n, rows, cols)
        labels = torch.frombuffer(bytearray(lab), dtype=torch.uint8).to(torch.int64)
        data_desc = a.data
    x_all = images.to(torch.float32).div_(255.0)
    mean, std = x_all.mean().item(), x_all.std(unbiased=False).item()
    x_all = ((x_all - mean) / (std if std > 1e-12 else 1.0)).unsqueeze(1).contiguous()
    n = x_all.shape[0]

    model = nn.Sequential(
        nn.Conv2d(1, 10, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(1440, 10), nn.ReLU(), nn.Linear(10, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    state = {"next": 0, "loss": float("nan")}

    def steps(count):
        for _ in range(count):
            i = state["next"]
            idx = torch.arange(i, i + a.batch) % n
            state["next"] = (i + a.batch) % n
            xb, yb = x_all[idx], labels[idx]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        state["loss"] = loss.item()

    steps(a.warmup)
    rounds = []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        steps(a.steps)
        rounds.append(time.perf_counter() - t0)
    img_s = [a.steps * a.batch / t for t in rounds]
    out = {
        "engine": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": "fp32",
        "data": data_desc,
        "batch": a.batch,
        "steps": a.steps,
        "warmup": a.warmup,
        "rounds": a.rounds,
        "img_s": statistics.median(img_s),
        "ms_per_step": 1e3 * statistics.median(rounds) / a.steps,
        "rounds_img_s": img_s,
        "final_loss": state["loss"],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
