#!/usr/bin/env python3
"""bench-pytorch-lm.py — a PyTorch reference for `mpcl train --task lm`.

Builds the GPT of an mpcl "gpt" spec (data/models/gpt-tiny.txt, ...; the
architecture of docs/lm.md: token and position embeddings, pre-norm blocks
with causal multi-head attention and a GELU (tanh) MLP, a final layer norm,
the head tied to the token embedding, GPT-2's initialisation) and trains it
on the CPU with a fixed number of threads, on text read as bytes (the last
10% held out, as mpcl does), with mpcl's recipe for language models:
AdamW (lr 1e-3, weight decay 0.1 on the block matrices only), clipping at
global norm 1, 100 warm-up steps and a cosine schedule to 0, random windows
of the context length. Modes: fp32, and bf16 under autocast.

    python3 tools/bench-pytorch-lm.py [--model gpt-tiny] [--text DIR|FILE]
        [--precision fp32[,bf16]] [--batch 16] [--steps 2000] [--eval-windows 64]
        [--threads 2] [--seed 1] [--time-only]

Prints one JSON object: per mode the validation loss at the end (nats per
byte, on the first --eval-windows consecutive windows of the held-out text,
as `mpcl train --task lm`), and tokens/s over the steps after the first.
--time-only skips the validation (for speed runs with few steps). A
reference tool only: mpcl never depends on PyTorch.
"""
import argparse
import json
import math
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS_DIR = os.path.join(HERE, "..", "data", "models")


def fail(msg):
    print(f"bench-pytorch-lm: {msg}", file=sys.stderr)
    sys.exit(1)


def parse_gpt(path):
    keys = {}
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] != "gpt":
            fail(f"{path}: not a gpt spec")
        for w in words[1:]:
            k, v = w.split("=", 1)
            keys[k] = int(v)
    keys.setdefault("hidden", 4 * keys["width"])
    return keys


def read_text(path):
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path)
                       if not n.startswith(".") and not n.endswith(".dat")
                       and os.path.isfile(os.path.join(path, n))
                       and not os.path.islink(os.path.join(path, n)))
        return b"".join(open(os.path.join(path, n), "rb").read() for n in names)
    return open(path, "rb").read()


def build(torch, nn, g):
    C, H, F, V, T, L = g["width"], g["heads"], g["hidden"], g["vocab"], g["context"], g["layers"]
    F_ = torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(C, eps=1e-5)
            self.c_attn = nn.Linear(C, 3 * C)
            self.c_proj = nn.Linear(C, C)
            self.ln_2 = nn.LayerNorm(C, eps=1e-5)
            self.c_fc = nn.Linear(C, F)
            self.mlp_proj = nn.Linear(F, C)

        def forward(self, x):
            B, Tn, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q = q.view(B, Tn, H, C // H).transpose(1, 2)
            k = k.view(B, Tn, H, C // H).transpose(1, 2)
            v = v.view(B, Tn, H, C // H).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
            mask = torch.ones(Tn, Tn, dtype=torch.bool).tril()
            att = att.masked_fill(~mask, float("-inf")).float().softmax(dim=-1).to(v.dtype)
            y = (att @ v).transpose(1, 2).contiguous().view(B, Tn, C)
            x = x + self.c_proj(y)
            return x + self.mlp_proj(F_.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(V, C)
            self.wpe = nn.Embedding(T, C)
            self.h = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C, eps=1e-5)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight") or name.endswith("mlp_proj.weight"):
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L))
                elif p.dim() == 2:
                    nn.init.normal_(p, 0.0, 0.02)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx):
            Tn = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(Tn))
            for b in self.h:
                x = b(x)
            return self.ln_f(x) @ self.wte.weight.t()

    return GPT()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gpt-tiny")
    ap.add_argument("--text", default="/usr/share/games/fortunes")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--time-only", action="store_true")
    a = ap.parse_args()
    path = a.model if os.path.isfile(a.model) else os.path.join(MODELS_DIR, a.model + ".txt")
    if not os.path.isfile(path):
        fail(f"--model: no {a.model} or {path}")
    g = parse_gpt(path)
    data = read_text(a.text)
    split = len(data) - round(len(data) * 0.1)
    train, valid = data[:split], data[split:]

    import torch
    import torch.nn as nn

    torch.set_num_threads(a.threads)
    T = g["context"]
    train_t = torch.frombuffer(bytearray(train), dtype=torch.uint8).to(torch.int64)
    valid_t = torch.frombuffer(bytearray(valid), dtype=torch.uint8).to(torch.int64)
    modes = []
    for prec in a.precision.split(","):
        if prec not in ("fp32", "bf16"):
            fail(f"--precision: '{prec}' is not fp32 or bf16")
        torch.manual_seed(a.seed)
        model = build(torch, nn, g)
        decay = [p for n, p in model.named_parameters() if n.startswith("h.") and p.dim() == 2]
        other = [p for n, p in model.named_parameters() if not (n.startswith("h.") and p.dim() == 2)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                 {"params": other, "weight_decay": 0.0}], lr=a.lr)
        gen = torch.Generator().manual_seed(a.seed)

        def lr_at(s):
            if s < a.warmup:
                return a.lr * (s + 1) / a.warmup
            f = min(1.0, (s - a.warmup) / max(1, a.steps - a.warmup))
            return a.lr * 0.5 * (1 + math.cos(math.pi * f))

        t_later, losses = 0.0, []
        for s in range(a.steps):
            t0 = time.perf_counter()
            starts = torch.randint(0, len(train) - T, (a.batch,), generator=gen)
            x = torch.stack([train_t[i:i + T] for i in starts.tolist()])
            y = torch.stack([train_t[i + 1:i + T + 1] for i in starts.tolist()])
            for group in opt.param_groups:
                group["lr"] = lr_at(s)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, g["vocab"]), y.view(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            if s > 0:
                t_later += time.perf_counter() - t0
        entry = {"precision": prec if prec == "fp32" else "bf16-autocast",
                 "tokens_s": (a.steps - 1) * a.batch * T / t_later if t_later > 0 else 0,
                 "final_train_loss": losses[-1]}
        if not a.time_only:
            model.eval()
            n = min(a.eval_windows, (len(valid) - 1) // T) if a.eval_windows else (len(valid) - 1) // T
            tot = 0.0
            with torch.no_grad():
                for w0 in range(0, n, a.batch):
                    ws = range(w0, min(n, w0 + a.batch))
                    x = torch.stack([valid_t[w * T:w * T + T] for w in ws])
                    y = torch.stack([valid_t[w * T + 1:w * T + T + 1] for w in ws])
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                        logits = model(x)
                    tot += torch.nn.functional.cross_entropy(
                        logits.float().view(-1, g["vocab"]), y.view(-1)).item() * len(ws)
            entry["valid_loss"] = tot / n
            entry["valid_windows"] = n
        modes.append(entry)
    print(json.dumps({"engine": "pytorch", "torch_version": torch.__version__,
                      "threads": torch.get_num_threads(),
                      "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                      "model": os.path.normpath(path), "spec": g,
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "text": a.text, "settings": {"batch": a.batch, "steps": a.steps,
                                                   "lr": a.lr, "warmup": a.warmup,
                                                   "weight_decay": 0.1, "clip": 1.0,
                                                   "seed": a.seed},
                      "modes": modes}, indent=2))


if __name__ == "__main__":
    main()
