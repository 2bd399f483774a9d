#!/usr/bin/env python3
"""bench-pytorch.py — a PyTorch reference for `mpcl bench train`.

Builds each model from mpcl's own model spec files (data/models/*.txt, the
format of docs/models.md: input, conv2d, linear, relu, leaky_relu, gelu,
sigmoid, tanh, maxpool2d, avgpool2d, global_avgpool, flatten, dropout,
batchnorm2d, add, concat; named layers and from= for graphs), trains
it with Adam, lr 1e-3, softmax cross-entropy, on the CPU with a fixed
number of threads (default 2), in FP32 and optionally under bf16 autocast,
and prints one JSON object with one entry per model (see docs/bench.md).
A reference tool only: mpcl never depends on PyTorch.

    python3 tools/bench-pytorch.py [--model NAME|FILE|all] [--precision fp32[,bf16]]
        [--data DIR | --synthetic] [--batch 64] [--steps 100] [--warmup 10]
        [--rounds 1] [--threads 2] [--seed 1]

With --epochs N it trains instead: N epochs over the training set,
shuffled each epoch, batch --batch, --optimizer adam, adamw or sgd
(--momentum, --nesterov, --weight-decay) at --lr with --schedule constant or
cosine (to 0 at the last step, as `mpcl train --schedule cosine`), and
reports each epoch's test accuracy and the training speed: the reference
for `mpcl train` with the same settings.

Like mpcl's benchmark, it times whole training steps (batch gathering,
forward, loss, backward, optimizer) over --steps steps per round after
--warmup untimed steps, and reports the median over the rounds. The
document records the BLAS PyTorch was built with (torch.__config__.show())
and OPENBLAS_CORETYPE, which decides OpenBLAS's kernels where it
misdetects the CPU.
"""
import argparse
import ctypes
import glob
import gzip
import json
import os
import re
import statistics
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_DIR = os.path.join(HERE, "..", "data", "models")
SPEC_LAYERS = ("conv2d", "linear", "relu", "leaky_relu", "gelu", "sigmoid", "tanh",
               "maxpool2d", "avgpool2d", "global_avgpool", "flatten", "dropout", "batchnorm2d",
               "add", "concat")


def fail(msg):
    sys.exit(f"bench-pytorch: {msg}")


def read_idx(path):
    """An IDX file (plain or .gz) as (dims, bytes)."""
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            opener = gzip.open if p.endswith(".gz") else open
            with opener(p, "rb") as f:
                data = f.read()
            break
    else:
        fail(f"no {path} or {path}.gz")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        fail(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def pair(val, where, lo=1):
    """'5' or '3x5' as (h, w)."""
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", val)
    if not m:
        fail(f"{where}: '{val}' is not N or HxW")
    h = int(m.group(1))
    w = int(m.group(2)) if m.group(2) else h
    if h < lo or w < lo:
        fail(f"{where}: '{val}' is below {lo}")
    return h, w


def parse_spec(path):
    """mpcl's model spec: (input (C, H, W), [(kind, {key: value}, where, inputs), ...]),
    inputs being layer indices (-1: the model's input), as docs/models.md says."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        fail(f"{path}: {e.strerror}")
    shape, layers, names = None, [], {}
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{path}:{no}"
        label = None
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$", line)
        if m:
            label, line = m.group(1), m.group(2)
        word, *opts = line.split()
        if word == "input" and label is None:
            m = re.fullmatch(r"(\d+)x(\d+)x(\d+)", opts[0] if len(opts) == 1 else "")
            if shape is not None or not m:
                fail(f"{where}: expected one 'input CxHxW' line")
            shape = tuple(int(g) for g in m.groups())
            continue
        if word not in SPEC_LAYERS:
            fail(f"{where}: unknown layer '{word}'")
        if shape is None:
            fail(f"{where}: '{word}' before the input line")
        kv = {}
        for o in opts:
            if "=" not in o:
                fail(f"{where}: '{o}' is not key=value")
            k, v = o.split("=", 1)
            kv[k] = v
        me = len(layers)
        ins = [me - 1]
        if "from" in kv:
            refs = []
            for r in kv.pop("from").split(","):
                if r == "input":
                    refs.append(-1)
                elif r in names:
                    refs.append(names[r])
                else:
                    fail(f"{where}: from={r}: no earlier layer is named '{r}'")
            ins = ([me - 1] + refs) if word in ("add", "concat") and len(refs) == 1 else refs
        if label is not None:
            names[label] = me
        layers.append((word, kv, where, ins))
    if shape is None or not layers:
        fail(f"{path}: no input line or no layers")
    return shape, layers


def build_model(path, nn):
    """The spec's layers as a module that runs them in file order, each on
    its inputs' outputs, with PyTorch's default initialisation."""
    import torch

    class Add(nn.Module):
        def forward(self, *xs):
            y = xs[0]
            for x in xs[1:]:
                y = y + x
            return y

    class Concat(nn.Module):
        def forward(self, *xs):
            return torch.cat(xs, 1)

    class Graph(nn.Module):
        def __init__(self, mods, inputs):
            super().__init__()
            self.layers = nn.ModuleList(mods)
            self.inputs = inputs

        def forward(self, x):
            outs = []
            for m, ins in zip(self.layers, self.inputs):
                outs.append(m(*[x if i < 0 else outs[i] for i in ins]))
            return outs[-1]

    (c0, h0, w0), layers = parse_spec(path)
    shapes = []  # per layer: (c, h, w) or (features,)
    mods, inputs = [], []
    for kind, kv, where, ins in layers:
        ish = (c0, h0, w0) if ins[0] < 0 else shapes[ins[0]]
        if kind == "conv2d":
            c, h, w = ish
            kh, kw = pair(kv.get("kernel", ""), where + " kernel")
            sh, sw = pair(kv.get("stride", "1"), where + " stride")
            ph, pw = pair(kv.get("padding", "0"), where + " padding", 0)
            dh, dw = pair(kv.get("dilation", "1"), where + " dilation")
            out = int(kv["out"])
            bias = kv.get("bias", "true") in ("1", "true", "yes")
            mods.append(nn.Conv2d(c, out, (kh, kw), (sh, sw), (ph, pw), (dh, dw), bias=bias))
            osh = (out, (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
        elif kind in ("maxpool2d", "avgpool2d"):
            c, h, w = ish
            kh, kw = pair(kv.get("kernel", ""), where + " kernel")
            sh, sw = pair(kv.get("stride", f"{kh}x{kw}"), where + " stride")
            ph, pw = pair(kv.get("padding", "0"), where + " padding", 0)
            cls = nn.MaxPool2d if kind == "maxpool2d" else nn.AvgPool2d
            mods.append(cls((kh, kw), (sh, sw), (ph, pw)))
            osh = (c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
        elif kind == "global_avgpool":
            mods.append(nn.AdaptiveAvgPool2d(1))
            osh = (ish[0], 1, 1)
        elif kind == "batchnorm2d":
            mods.append(nn.BatchNorm2d(ish[0], eps=float(kv.get("eps", 1e-5)),
                                       momentum=float(kv.get("momentum", 0.1))))
            osh = ish
        elif kind == "flatten":
            mods.append(nn.Flatten())
            n = 1
            for d in ish:
                n *= d
            osh = (n,)
        elif kind == "linear":
            if len(ish) != 1:
                fail(f"{where}: linear before flatten")
            if "in" in kv and int(kv["in"]) != ish[0]:
                fail(f"{where}: in={kv['in']}, but the layer before gives {ish[0]} features")
            out = int(kv["out"])
            mods.append(nn.Linear(ish[0], out, bias=kv.get("bias", "true") in ("1", "true", "yes")))
            osh = (out,)
        elif kind == "add":
            mods.append(Add())
            osh = ish
        elif kind == "concat":
            parts = [(c0, h0, w0) if i < 0 else shapes[i] for i in ins]
            osh = (sum(p[0] for p in parts),) + tuple(ish[1:])
            mods.append(Concat())
        else:
            mods.append({"relu": lambda: nn.ReLU(),
                         "leaky_relu": lambda: nn.LeakyReLU(float(kv.get("slope", 0.01))),
                         "gelu": lambda: nn.GELU(), "sigmoid": lambda: nn.Sigmoid(),
                         "tanh": lambda: nn.Tanh(),
                         "dropout": lambda: nn.Dropout(float(kv.get("p", 0.5)))}[kind]())
            osh = ish
        shapes.append(osh)
        inputs.append(ins)
    if len(shapes[-1]) != 1:
        fail(f"{path}: the model does not end in features (no flatten)")
    return Graph(mods, inputs), shapes[-1][0]


def model_paths(arg):
    if arg == "all":
        paths = sorted(glob.glob(os.path.join(MODELS_DIR, "*.txt")))
        if not paths:
            fail(f"no model specs in {MODELS_DIR}")
        return paths
    if os.path.isfile(arg):
        return [arg]
    p = os.path.join(MODELS_DIR, arg if arg.endswith(".txt") else arg + ".txt")
    if os.path.isfile(p):
        return [p]
    fail(f"--model: '{arg}' is not a file, and there is no {arg}.txt in {MODELS_DIR}")


def blas_info(torch):
    """What torch.__config__.show() says about BLAS and the CPU, and the
    OpenBLAS core in use where OpenBLAS is loaded."""
    show = torch.__config__.show()
    info = {"config_lines": [l.strip() for l in show.splitlines()
                             if re.search(r"BLAS|LAPACK|MKL|CPU capability|OpenMP", l)
                             and "Build settings" not in l]}
    for key in ("BLAS_INFO", "LAPACK_INFO"):
        m = re.search(key + r"=([^,\s]+)", show)
        info[key.lower()] = m.group(1) if m else None
    m = re.search(r"CPU capability usage: (\S+)", show)
    info["cpu_capability"] = m.group(1) if m else None
    info["openblas_corename"] = None
    info["openblas_library"] = None
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({l.split()[-1] for l in f if "openblas" in l.split()[-1]})
        for lib in libs:
            try:
                h = ctypes.CDLL(lib)
                h.openblas_get_corename.restype = ctypes.c_char_p
                info["openblas_corename"] = h.openblas_get_corename().decode()
                info["openblas_library"] = lib
                break
            except (OSError, AttributeError):
                continue
    except OSError:
        pass
    return info


def train_epochs(a, paths, precisions, torch, nn, images, labels, test_images, test_labels):
    """--epochs: full training runs, test accuracy after every epoch."""
    x = images.to(torch.float32).div_(255.0)
    mean, std = x.mean().item(), x.std(unbiased=False).item()
    x = ((x - mean) / std).contiguous()
    xt = ((test_images.to(torch.float32).div_(255.0) - mean) / std).contiguous()
    n, steps_per_epoch = x.shape[0], (x.shape[0] + a.batch - 1) // a.batch
    runs = []
    for path in paths:
        for prec in precisions:
            torch.manual_seed(a.seed)
            model, _ = build_model(path, nn)
            wd = a.weight_decay if a.weight_decay is not None else (0.01 if a.optimizer == "adamw" else 0.0)
            if a.optimizer == "sgd":
                opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum,
                                      nesterov=a.nesterov, weight_decay=wd)
            elif a.optimizer == "adamw":
                opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=wd)
            else:
                opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=wd)
            total = a.epochs * steps_per_epoch
            sched = (torch.optim.lr_scheduler.LambdaLR(
                opt, lambda t: 0.5 * (1 + __import__("math").cos(__import__("math").pi * min(t, total) / total)))
                if a.schedule == "cosine" else None)
            loss_fn = nn.CrossEntropyLoss()
            g = torch.Generator().manual_seed(a.seed)
            epochs, train_s = [], 0.0
            for ep in range(1, a.epochs + 1):
                model.train()
                order = torch.randperm(n, generator=g)
                t0, loss_sum = time.perf_counter(), 0.0
                for i in range(0, n, a.batch):
                    idx = order[i:i + a.batch]
                    xb = x[idx]
                    if a.flip:
                        m = torch.rand(len(idx), generator=g) < 0.5
                        xb = torch.where(m[:, None, None, None], xb.flip(3), xb)
                    opt.zero_grad(set_to_none=True)
                    if prec == "bf16":
                        with torch.autocast("cpu", dtype=torch.bfloat16):
                            out = model(xb)
                        loss = loss_fn(out.float(), labels[idx])
                    else:
                        loss = loss_fn(model(xb), labels[idx])
                    loss.backward()
                    opt.step()
                    if sched:
                        sched.step()
                    loss_sum += loss.item() * len(idx)
                dt = time.perf_counter() - t0
                train_s += dt
                model.eval()
                correct = 0
                with torch.no_grad():
                    for i in range(0, xt.shape[0], 1000):
                        correct += (model(xt[i:i + 1000]).argmax(1) == test_labels[i:i + 1000]).sum().item()
                epochs.append({"epoch": ep, "train_loss": loss_sum / n,
                               "test_accuracy": correct / xt.shape[0], "img_s": n / dt})
                print(f"{os.path.basename(path)} {prec} epoch {ep}: loss {loss_sum / n:.4f} "
                      f"test acc {100 * correct / xt.shape[0]:.2f}% {n / dt:.0f} img/s", file=sys.stderr)
            runs.append({"model": os.path.normpath(path), "precision": prec, "epochs": epochs,
                         "img_s": a.epochs * n / train_s})
    return {"engine": "pytorch", "torch_version": torch.__version__, "threads": torch.get_num_threads(),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "blas": blas_info(torch),
            "settings": {"batch": a.batch, "epochs": a.epochs, "optimizer": a.optimizer, "lr": a.lr,
                         "momentum": a.momentum, "nesterov": a.nesterov, "weight_decay": a.weight_decay,
                         "schedule": a.schedule, "flip": a.flip, "seed": a.seed, "data": a.data},
            "runs": runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="seed-cnn", help="NAME, FILE or all (default seed-cnn)")
    ap.add_argument("--precision", default="fp32", help="fp32, bf16 or fp32,bf16")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--synthetic", action="store_true", help="random images and labels")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=0, help="train N epochs and test (default: time steps)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--schedule", default="constant", choices=("constant", "cosine"))
    ap.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "sgd"))
    ap.add_argument("--flip", action="store_true",
                    help="--epochs: mirror each training image left-right with probability 1/2 "
                         "(as mpcl train --augment flip; other draws)")
    ap.add_argument("--momentum", type=float, default=0.0)
    ap.add_argument("--nesterov", action="store_true")
    ap.add_argument("--weight-decay", type=float, default=None,
                    help="default: 0 for sgd and adam, 0.01 for adamw (as mpcl train)")
    a = ap.parse_args()
    if min(a.batch, a.steps, a.rounds, a.threads) < 1 or a.warmup < 0:
        ap.error("--batch, --steps, --rounds and --threads must be >= 1, --warmup >= 0")
    precisions = a.precision.split(",")
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions) \
            or len(set(precisions)) != len(precisions):
        ap.error(f"--precision: '{a.precision}' is not fp32, bf16 or a comma list of them")
    paths = model_paths(a.model)

    import torch
    import torch.nn as nn

    torch.set_num_threads(a.threads)
    if not a.synthetic:
        (n, rows, cols), pix = read_idx(os.path.join(a.data, "train-images-idx3-ubyte"))
        (nl,), lab = read_idx(os.path.join(a.data, "train-labels-idx1-ubyte"))
        if nl != n:
            fail("image and label counts differ")
        file_images = torch.frombuffer(bytearray(pix), dtype=torch.uint8).view(n, 1, rows, cols)
        file_labels = torch.frombuffer(bytearray(lab), dtype=torch.uint8).to(torch.int64)

    if a.epochs > 0:
        if a.synthetic:
            ap.error("--epochs trains on --data, not --synthetic")
        (nt, rows_t, cols_t), tpix = read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte"))
        (_,), tlab = read_idx(os.path.join(a.data, "t10k-labels-idx1-ubyte"))
        test_images = torch.frombuffer(bytearray(tpix), dtype=torch.uint8).view(nt, 1, rows_t, cols_t)
        test_labels = torch.frombuffer(bytearray(tlab), dtype=torch.uint8).to(torch.int64)
        print(json.dumps(train_epochs(a, paths, precisions, torch, nn, file_images, file_labels,
                                      test_images, test_labels), indent=2))
        return

    results = []
    for path in paths:
        torch.manual_seed(a.seed)
        model, classes = build_model(path, nn)
        in_shape = parse_spec(path)[0]
        if a.synthetic:
            g = torch.Generator().manual_seed(a.seed)
            images = torch.randint(0, 256, (1024,) + in_shape, dtype=torch.uint8, generator=g)
            labels = torch.randint(0, classes, (1024,), dtype=torch.int64, generator=g)
            data_desc = "synthetic"
        else:
            if tuple(file_images.shape[1:]) != in_shape:
                fail(f"{path}: the model takes {in_shape} inputs, the images are "
                     f"{tuple(file_images.shape[1:])}")
            images, labels, data_desc = file_images, file_labels, a.data
        x_all = images.to(torch.float32).div_(255.0)
        mean, std = x_all.mean().item(), x_all.std(unbiased=False).item()
        x_all = ((x_all - mean) / (std if std > 1e-12 else 1.0)).contiguous()
        n = x_all.shape[0]
        entry = {"model": os.path.normpath(path),
                 "name": os.path.splitext(os.path.basename(path))[0],
                 "parameters": sum(p.numel() for p in model.parameters()),
                 "data": data_desc, "samples": n, "modes": []}
        init_state = {k: v.clone() for k, v in model.state_dict().items()}
        for prec in precisions:
            model.load_state_dict(init_state)
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            loss_fn = nn.CrossEntropyLoss()
            state = {"next": 0, "loss": float("nan")}

            def steps(count):
                loss = None
                for _ in range(count):
                    i = state["next"]
                    idx = torch.arange(i, i + a.batch) % n
                    state["next"] = (i + a.batch) % n
                    xb, yb = x_all[idx], labels[idx]
                    opt.zero_grad(set_to_none=True)
                    if prec == "bf16":
                        with torch.autocast("cpu", dtype=torch.bfloat16):
                            out = model(xb)
                        loss = loss_fn(out.float(), yb)
                    else:
                        loss = loss_fn(model(xb), yb)
                    loss.backward()
                    opt.step()
                if loss is not None:
                    state["loss"] = loss.item()

            steps(a.warmup)
            rounds = []
            for _ in range(a.rounds):
                t0 = time.perf_counter()
                steps(a.steps)
                rounds.append(time.perf_counter() - t0)
            img_s = [a.steps * a.batch / t for t in rounds]
            entry["modes"].append({
                "precision": prec if prec == "fp32" else "bf16-autocast",
                "img_s": statistics.median(img_s),
                "ms_per_step": 1e3 * statistics.median(rounds) / a.steps,
                "rounds_img_s": img_s,
                "final_loss": state["loss"],
            })
        results.append(entry)

    out = {
        "engine": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "blas": blas_info(torch),
        "settings": {"batch": a.batch, "steps": a.steps, "warmup": a.warmup,
                     "rounds": a.rounds, "optimizer": "adam", "lr": 1e-3, "seed": a.seed},
        "models": results,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
