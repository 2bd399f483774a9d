"""npgpt.py: an independent NumPy (float64) GPT with a hand-written backward
pass and PyTorch's AdamW, to check mpcl's language-model training step
(mpcl_trainer_step_lm) against.

It shares no code with mpcl: it reads the "gpt" spec line itself
(include/mpcl.h, docs/models.md) and the weights from the safetensors file
mpcl wrote, by nanoGPT's state_dict names.

The model (nanoGPT's GPT-2): x = wte[tokens] + wpe[positions]; per block
  x = x + c_proj(attention(c_attn(ln_1(x))))
  x = x + mlp.c_proj(gelu(mlp.c_fc(ln_2(x))))
then logits = ln_f(x) wte^T (the head tied to the token embedding, no bias).
Linear weights are (out, in): y = x W^T + b. c_attn yields [q | k | v], each
C wide, head h at columns h E .. h E + E - 1 of each (E = C / heads);
scores q k^T / sqrt(E), causal mask, softmax. Layer norms: biased variance,
eps 1e-5. GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
Loss: mean cross-entropy over all B T positions.

AdamW as torch.optim.AdamW (and mpcl's cl/optim.cl): w *= 1 - lr wd, then
m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
w -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps), t the count of
applied steps (a step the loss scaler skipped neither moves the weights nor
counts). mpcl's defaults (mpcl_optimizer_options_init): betas 0.9 / 0.999,
eps 1e-8. Weight decay only on the blocks' four matrices (attn.c_attn,
attn.c_proj, mlp.c_fc, mlp.c_proj weights); the rest gets none.

Usage:
  npgpt.py selftest                 the backward pass of a random small
                                    model against central finite
                                    differences (float64), no mpcl
  npgpt.py compare OUT_DIR SPEC     OUT_DIR from gpt_ref (weights.safetensors,
                                    final.safetensors, run.json): replays the
                                    run in float64 and compares
Exit status: 0 agree, 1 a mismatch (or a malformed input), 2 usage.
"""
import json
import math
import os
import sys

import numpy as np

LN_EPS = 1e-5
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
GELU_C = math.sqrt(2.0 / math.pi)
GELU_K = 0.044715


class SpecError(Exception):
    pass


# ------------------------------------------------------------------ spec

def parse_spec(text, name="spec"):
    """The gpt line's sizes: {vocab, context, layers, heads, width, hidden}."""
    cfg = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = "%s:%d" % (name, lineno)
        toks = line.split()
        if toks[0] != "gpt" or cfg is not None:
            raise SpecError(where + ": expected one 'gpt vocab=.. context=.. layers=.. heads=.. width=..' line")
        cfg = {}
        for t in toks[1:]:
            k, eq, v = t.partition("=")
            if not eq or k not in ("vocab", "context", "layers", "heads", "width", "hidden") or k in cfg:
                raise SpecError(where + ": option '%s'" % t)
            cfg[k] = int(v)
    if cfg is None:
        raise SpecError(name + ": no gpt line")
    for k in ("vocab", "context", "layers", "heads", "width"):
        if k not in cfg:
            raise SpecError(name + ": gpt without %s=" % k)
    cfg.setdefault("hidden", 4 * cfg["width"])
    if cfg["width"] % cfg["heads"]:
        raise SpecError(name + ": width %d is not a multiple of heads %d" % (cfg["width"], cfg["heads"]))
    return cfg


MATRICES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def param_shapes(cfg):
    """{name: shape} in nanoGPT's state_dict order."""
    V, T, C, F = cfg["vocab"], cfg["context"], cfg["width"], cfg["hidden"]
    s = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C)}
    for i in range(cfg["layers"]):
        h = "transformer.h.%d." % i
        s.update({h + "ln_1.weight": (C,), h + "ln_1.bias": (C,),
                  h + "attn.c_attn.weight": (3 * C, C), h + "attn.c_attn.bias": (3 * C,),
                  h + "attn.c_proj.weight": (C, C), h + "attn.c_proj.bias": (C,),
                  h + "ln_2.weight": (C,), h + "ln_2.bias": (C,),
                  h + "mlp.c_fc.weight": (F, C), h + "mlp.c_fc.bias": (F,),
                  h + "mlp.c_proj.weight": (C, F), h + "mlp.c_proj.bias": (C,)})
    s.update({"transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,)})
    return s


def decayed(name):
    return name.startswith("transformer.h.") and name.split(".", 3)[3] in MATRICES


# ------------------------------------------------------------------ layers

def ln_forward(x, g, b):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)  # biased
    rstd = 1.0 / np.sqrt(var + LN_EPS)
    xhat = (x - mu) * rstd
    return xhat * g + b, (xhat, rstd)


def ln_backward(dy, g, saved):
    xhat, rstd = saved
    red = tuple(range(dy.ndim - 1))
    dg = (dy * xhat).sum(axis=red)
    db = dy.sum(axis=red)
    dxhat = dy * g
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dg, db


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + GELU_K * x ** 3)))


def gelu_grad(x):
    t = np.tanh(GELU_C * (x + GELU_K * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_K * x * x)


def attn_forward(qkv, H):
    """qkv (B, T, 3C) -> y (B, T, C), saves."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    E = C // H
    heads = lambda a: a.reshape(B, T, H, E).transpose(0, 2, 1, 3)  # (B, H, T, E)
    q, k, v = heads(qkv[..., :C]), heads(qkv[..., C:2 * C]), heads(qkv[..., 2 * C:])
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(E)
    mask = np.tril(np.ones((T, T), dtype=bool))
    s = np.where(mask, s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    y = p @ v
    return y.transpose(0, 2, 1, 3).reshape(B, T, C), (q, k, v, p)


def attn_backward(dy, saved):
    q, k, v, p = saved
    B, H, T, E = q.shape
    dyh = dy.reshape(B, T, H, E).transpose(0, 2, 1, 3)
    dp = dyh @ v.transpose(0, 1, 3, 2)
    dv = p.transpose(0, 1, 3, 2) @ dyh
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))  # 0 where masked (p = 0)
    ds /= math.sqrt(E)
    dq = ds @ k
    dk = ds.transpose(0, 1, 3, 2) @ q
    back = lambda a: a.transpose(0, 2, 1, 3).reshape(B, T, H * E)
    return np.concatenate([back(dq), back(dk), back(dv)], axis=-1)


# ------------------------------------------------------------------ model

def loss_and_grads(cfg, params, tokens, targets):
    """Mean cross-entropy of tokens (B, T) against targets (B, T), and the
    gradient of every parameter."""
    B, T = tokens.shape
    H, L = cfg["heads"], cfg["layers"]
    P = lambda i, n: params["transformer.h.%d.%s" % (i, n)]
    wte, wpe = params["transformer.wte.weight"], params["transformer.wpe.weight"]
    x = wte[tokens] + wpe[None, :T]
    saves = []
    for i in range(L):
        ln1, s1 = ln_forward(x, P(i, "ln_1.weight"), P(i, "ln_1.bias"))
        qkv = ln1 @ P(i, "attn.c_attn.weight").T + P(i, "attn.c_attn.bias")
        atty, sa = attn_forward(qkv, H)
        xmid = x + atty @ P(i, "attn.c_proj.weight").T + P(i, "attn.c_proj.bias")
        ln2, s2 = ln_forward(xmid, P(i, "ln_2.weight"), P(i, "ln_2.bias"))
        fc = ln2 @ P(i, "mlp.c_fc.weight").T + P(i, "mlp.c_fc.bias")
        act = gelu(fc)
        out = xmid + act @ P(i, "mlp.c_proj.weight").T + P(i, "mlp.c_proj.bias")
        saves.append((ln1, s1, atty, sa, ln2, s2, fc, act))
        x = out
    lnf, sf = ln_forward(x, params["transformer.ln_f.weight"], params["transformer.ln_f.bias"])
    logits = lnf @ wte.T  # (B, T, V)
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    n = B * T
    bi, ti = np.meshgrid(np.arange(B), np.arange(T), indexing="ij")
    loss = -logp[bi, ti, targets].mean()
    dlogits = np.exp(logp)
    dlogits[bi, ti, targets] -= 1.0
    dlogits /= n

    g = {}
    flat = lambda a: a.reshape(-1, a.shape[-1])
    dwte = flat(dlogits).T @ flat(lnf)  # the tied head
    dlnf = dlogits @ wte
    dx, g["transformer.ln_f.weight"], g["transformer.ln_f.bias"] = ln_backward(
        dlnf, params["transformer.ln_f.weight"], sf)
    for i in reversed(range(L)):
        h = "transformer.h.%d." % i
        ln1, s1, atty, sa, ln2, s2, fc, act = saves[i]
        # out = xmid + act Wfp^T + bfp
        g[h + "mlp.c_proj.weight"] = flat(dx).T @ flat(act)
        g[h + "mlp.c_proj.bias"] = flat(dx).sum(axis=0)
        dfc = (dx @ P(i, "mlp.c_proj.weight")) * gelu_grad(fc)
        g[h + "mlp.c_fc.weight"] = flat(dfc).T @ flat(ln2)
        g[h + "mlp.c_fc.bias"] = flat(dfc).sum(axis=0)
        dln2 = dfc @ P(i, "mlp.c_fc.weight")
        dxm, g[h + "ln_2.weight"], g[h + "ln_2.bias"] = ln_backward(dln2, P(i, "ln_2.weight"), s2)
        dxmid = dx + dxm
        # xmid = x + atty Wp^T + bp
        g[h + "attn.c_proj.weight"] = flat(dxmid).T @ flat(atty)
        g[h + "attn.c_proj.bias"] = flat(dxmid).sum(axis=0)
        dqkv = attn_backward(dxmid @ P(i, "attn.c_proj.weight"), sa)
        g[h + "attn.c_attn.weight"] = flat(dqkv).T @ flat(ln1)
        g[h + "attn.c_attn.bias"] = flat(dqkv).sum(axis=0)
        dln1 = dqkv @ P(i, "attn.c_attn.weight")
        dxl, g[h + "ln_1.weight"], g[h + "ln_1.bias"] = ln_backward(dln1, P(i, "ln_1.weight"), s1)
        dx = dxmid + dxl
    np.add.at(dwte, tokens.reshape(-1), flat(dx))
    g["transformer.wte.weight"] = dwte
    dwpe = np.zeros_like(wpe)
    dwpe[:T] = dx.sum(axis=0)
    g["transformer.wpe.weight"] = dwpe
    return loss, g


class AdamW:
    """torch.optim.AdamW over a dict of float64 arrays."""

    def __init__(self, params, lr, weight_decay):
        self.lr, self.wd, self.t = lr, weight_decay, 0
        self.m = {n: np.zeros_like(p) for n, p in params.items()}
        self.v = {n: np.zeros_like(p) for n, p in params.items()}

    def step(self, params, grads):
        self.t += 1
        bc1, bc2 = 1.0 - BETA1 ** self.t, 1.0 - BETA2 ** self.t
        for n in params:
            g, w = grads[n], params[n]
            if decayed(n):
                w = w * (1.0 - self.lr * self.wd)
            self.m[n] = BETA1 * self.m[n] + (1.0 - BETA1) * g
            self.v[n] = BETA2 * self.v[n] + (1.0 - BETA2) * g * g
            params[n] = w - self.lr * (self.m[n] / bc1) / (np.sqrt(self.v[n] / bc2) + ADAM_EPS)


# ------------------------------------------------------------------ selftest

def selftest():
    """Analytic gradients against central differences in float64, on a
    random small model whose every path carries weight (layer norms away
    from 1 / 0, biases non-zero, weights large enough that GELU and softmax
    are far from linear)."""
    cfg = {"vocab": 11, "context": 6, "layers": 2, "heads": 2, "width": 8, "hidden": 12}
    rng = np.random.default_rng(20240611)
    params = {}
    for n, s in param_shapes(cfg).items():
        if n.endswith("ln_1.weight") or n.endswith("ln_2.weight") or n.endswith("ln_f.weight"):
            params[n] = rng.uniform(0.5, 1.5, s)
        else:
            params[n] = rng.normal(0.0, 0.5, s)
    B, T = 3, 5  # T < context: wpe's last row gets no gradient
    tokens = rng.integers(0, cfg["vocab"], (B, T))
    tokens[1, 3] = tokens[0, 1]  # a repeated token: the embedding's gradient adds up
    targets = rng.integers(0, cfg["vocab"], (B, T))
    _, grads = loss_and_grads(cfg, params, tokens, targets)
    h, worst, checked, bad = 1e-6, 0.0, 0, []
    for name, arr in params.items():
        g = grads[name]
        if g.shape != arr.shape:
            bad.append("%s: gradient shape %s, parameter %s" % (name, g.shape, arr.shape))
            continue
        picks = rng.choice(arr.size, size=min(6, arr.size), replace=False)
        if name == "transformer.wpe.weight":  # and one of the unused last row
            picks = np.append(picks, arr.size - 1)
        for flat in picks:
            idx = np.unravel_index(flat, arr.shape)
            keep = arr[idx]
            arr[idx] = keep + h
            lp = loss_and_grads(cfg, params, tokens, targets)[0]
            arr[idx] = keep - h
            lm = loss_and_grads(cfg, params, tokens, targets)[0]
            arr[idx] = keep
            num, ana = (lp - lm) / (2 * h), g[idx]
            # float64 central differences at h = 1e-6: truncation ~h^2 f''',
            # rounding ~1e-16 |loss| / h ~ 3e-10; gradients here ~1e-4..1
            err = abs(num - ana)
            worst = max(worst, err / (1e-7 + abs(ana)))
            checked += 1
            if err > 1e-7 + 1e-5 * abs(ana):
                bad.append("%s%s: analytic %.10g, finite difference %.10g"
                           % (name, [int(i) for i in idx], ana, num))
    for b in bad:
        print("MISMATCH " + b)
    print("selftest: %d gradient entries of all %d tensors against central differences (h=1e-6): "
          "%s, worst |fd - analytic| / (1e-7 + |analytic|) = %.2e"
          % (checked, len(params), "FAILED" if bad else "ok", worst))
    return 1 if bad else 0


# ------------------------------------------------------------------ compare

# Tolerances per precision mode. loss: relative to the float64 loss.
# grad: max |mpcl - numpy| over a tensor, relative to the tensor's largest
# float64 gradient. final (the weights after the last step), relative to
# the float64 run's update of the tensor (w_final - w_initial: the weights
# barely move in 10 steps, so a tolerance relative to them would hide a
# wrong update): final_max bounds max |mpcl - numpy| / max |update|,
# final_rms bounds rms(mpcl - numpy) / rms(update); None: reported only.
#
# Adam's first step moves a weight by lr g / (|g| + eps), about lr sign(g)
# whatever |g| is (for |g| >> eps = 1e-8): an entry whose gradient is
# within rounding of 0 can step the other way, 2 lr apart, and keep that
# difference. Such entries are why the final weights' max is loose and
# their rms (which a few flipped entries barely move, but a systematic
# error moves everywhere) is the tight test.
#
#  fp32: everything in float (unit roundoff 6e-8), sums of <= 128 terms
#   (measured on PoCL and Intel: losses 9e-8, gradients 5e-7 of max, final
#   weights 1.6e-4 of the largest update (max), 2.2e-5 (rms)). 1e-4 on the
#   losses and gradients leaves a wide margin and still fails a wrong term.
#   final_rms 1e-3 fails a missing weight decay on the matrices (lr wd w
#   per step: 4e-3 of the update's rms here), decay on a spared tensor (a
#   layer norm weight of 1 moves by lr wd per step: 0.1 of its update), a
#   skipped step that counts for Adam's bias correction (2e-2) and a wrong
#   eps (1e-6: 8e-2).
#  fp16-storage / fp16: activations, gradients and the working weights in
#   half (unit roundoff 4.9e-4; fp16 also computes some of it in half),
#   GEMMs accumulating in float. Losses 1e-2 relative (measured 4e-6),
#   gradients 3e-2 of max (measured 1.1e-3; a wrong sign or a missing
#   branch is an O(1) error). The unscaled gradients are stored in half:
#   entries below its subnormal range (6e-8; 1e-6 keeps 5 bits) are flushed
#   or coarse, and Adam turns each such sign difference into lr per step
#   (measured: 2e-3 = 2 lr off in 0.1-0.2 % of a matrix's entries, whose
#   step-0 gradients were ~1e-4 of the tensor's max): the max is not
#   checked, the rms is (measured 9e-3 of the update's rms; 5e-2). These
#   runs cannot see a missing decay or a skipped step counted for Adam
#   (both ~2e-2 here); the fp32 run does.
#  bf16 (not in test-gpt-ref.sh; for a manual run): storage with 8
#   mantissa bits (unit roundoff 3.9e-3, 8x half's), so 3x the 16-bit
#   tolerances: losses 3e-2 relative (measured on Intel 1e-4), gradients
#   1e-1 of max (measured 1e-2), the final rms 0.2.
TOLERANCES = {
    "fp32": {"loss": 1e-4, "grad": 1e-4, "final_max": 2e-2, "final_rms": 1e-3},
    "fp16-storage": {"loss": 1e-2, "grad": 3e-2, "final_max": None, "final_rms": 5e-2},
    "fp16": {"loss": 1e-2, "grad": 3e-2, "final_max": None, "final_rms": 5e-2},
    "bf16": {"loss": 3e-2, "grad": 1e-1, "final_max": None, "final_rms": 0.2},
}


def _tensor_errors(kind, names, got, ref, base, tol_max, tol_rms, report, failures):
    """Per tensor: max |got - ref| <= tol_max * max |base| and rms(got -
    ref) <= tol_rms * rms(base) (base: the reference gradient, or the
    reference update; a None tolerance is not checked). Returns the worst
    max and rms ratios."""
    worst_max = worst_rms = 0.0
    ratio = lambda e, s: e / s if s else (0.0 if e == 0 else float("inf"))
    for n in names:
        g = np.asarray(got[n], dtype=np.float64).reshape(ref[n].shape)
        d = g - ref[n]
        smax, srms = float(np.abs(base[n]).max()), float(np.sqrt((base[n] ** 2).mean()))
        emax, erms = float(np.abs(d).max()), float(np.sqrt((d ** 2).mean()))
        rmax, rrms = ratio(emax, smax), ratio(erms, srms)
        bad = []
        if not np.all(np.isfinite(g)):
            bad.append("not finite")
        if tol_max is not None and not rmax <= tol_max:
            bad.append("max > %.2g" % tol_max)
        if tol_rms is not None and not rrms <= tol_rms:
            bad.append("rms > %.2g" % tol_rms)
        worst_max, worst_rms = max(worst_max, rmax), max(worst_rms, rrms)
        report.append("  %-5s %-34s %-8s max|ref| %.3e  max err %.3e (%.2e of max)  rms %.2e of rms%s"
                      % (kind, n, "x".join(str(k) for k in ref[n].shape), smax, emax, rmax, rrms,
                         "  MISMATCH: " + ", ".join(bad) if bad else ""))
        if bad:
            failures.append("%s %s" % (kind, n))
    return worst_max, worst_rms


def compare(run_dir, spec_path):
    from safetensors.numpy import load_file

    with open(spec_path) as f:
        cfg = parse_spec(f.read(), spec_path)
    with open(os.path.join(run_dir, "run.json")) as f:
        run = json.load(f)
    mode = run["precision"]
    if mode not in TOLERANCES:
        print("compare: no tolerances for precision mode %s" % mode)
        return 1
    tol = TOLERANCES[mode]
    failures, report = [], []

    wpath = os.path.join(run_dir, "weights.safetensors")
    st = load_file(wpath)
    shapes = param_shapes(cfg)
    if set(st) != set(shapes):
        print("compare: %s holds %s; the spec's parameters are %s"
              % (wpath, sorted(set(st) - set(shapes)) or "no extra", sorted(set(shapes) - set(st)) or "all"))
        return 1
    for n, s in shapes.items():
        if tuple(st[n].shape) != s:
            print("compare: %s: %s has shape %s, the spec says %s" % (wpath, n, st[n].shape, s))
            return 1
    params = {n: st[n].astype(np.float64) for n in shapes}
    initial = {n: p.copy() for n, p in params.items()}

    steps, B, T = run["steps"], run["batch"], run["context"]
    tokens = np.asarray(run["tokens"], dtype=np.int64)
    targets = np.asarray(run["targets"], dtype=np.int64)
    skipped = [bool(s) for s in run["skipped"]]
    if tokens.shape != (steps, B * T) or targets.shape != tokens.shape or len(skipped) != steps \
            or len(run["losses"]) != steps:
        print("compare: run.json: tokens %s, targets %s, %d skipped flags and %d losses for %d steps "
              "of %d x %d" % (tokens.shape, targets.shape, len(skipped), len(run["losses"]), steps, B, T))
        return 1
    tokens, targets = tokens.reshape(steps, B, T), targets.reshape(steps, B, T)
    # the batches are windows of a text: each target is the next token
    if not np.array_equal(tokens[:, :, 1:], targets[:, :, :-1]):
        failures.append("batches")
        report.append("  the targets are not the tokens shifted by one position")
    if tokens.min() < 0 or tokens.max() >= cfg["vocab"] or targets.min() < 0 or targets.max() >= cfg["vocab"]:
        print("compare: run.json holds tokens outside the vocabulary")
        return 1

    inject = int(run.get("inject_inf", 0))
    if inject and (inject > steps or not skipped[inject - 1]):
        failures.append("skipped steps")
        report.append("  gpt_ref put an inf into step %d's gradients (1-based), but the trainer did not "
                      "skip that step" % inject)

    # the same steps in float64; a step mpcl skipped (non-finite fp16
    # gradients) moves nothing here either and does not count for Adam
    opt = AdamW(params, float(run["lr"]), float(run["weight_decay"]))
    gstep, losses, first = run.get("grads_step", 0), [], None
    for step in range(steps):
        loss, grads = loss_and_grads(cfg, params, tokens[step], targets[step])
        losses.append(loss)
        if step == gstep:
            first = grads
        if not skipped[step]:
            opt.step(params, grads)

    worst_loss = 0.0
    for step, (got, ref) in enumerate(zip(run["losses"], losses)):
        rel = abs(got - ref) / abs(ref) if got is not None else float("inf")
        worst_loss = max(worst_loss, rel)
        ok = rel <= tol["loss"]
        report.append("  loss  step %d%s  mpcl %.8f  numpy %.8f  rel err %.2e%s"
                      % (step, " (skipped)" if skipped[step] else "", got if got is not None else float("nan"),
                         ref, rel, "" if ok else "  > %.0e: MISMATCH" % tol["loss"]))
        if not ok:
            failures.append("loss %d" % step)

    if first is None:
        report.append("  no step had finite gradients: gradients not compared")
        failures.append("gradients")
        worst_grad = float("nan")
    elif set(run["grads"]) != set(shapes):
        report.append("  run.json's gradients are of %s, the spec's parameters %s"
                      % (sorted(run["grads"]), sorted(shapes)))
        failures.append("gradient names")
        worst_grad = float("nan")
    else:
        if any(v is None for a in run["grads"].values() for v in a):
            report.append("  run.json's gradients of step %d hold non-finite values" % gstep)
            failures.append("gradients")
        got = {n: np.asarray([np.nan if v is None else v for v in run["grads"][n]]) for n in shapes}
        worst_grad = _tensor_errors("grad", shapes, got, first, first, tol["grad"], None, report,
                                    failures)[0]

    # The key bias (the middle third of c_attn.bias) has a gradient of
    # exactly 0: adding a constant to every key of a query shifts its
    # scores alike, which the softmax cancels. Both gradients there are
    # rounding noise (float64's ~1e-18, mpcl's ~1e-9 in fp32, more in the
    # 16-bit modes), which Adam turns into steps of up to lr each (g / (|g|
    # + 1e-8)): the final weights leave it out (the gradient check above
    # still holds it to the tolerance of the tensor's max).
    fin = dict(load_file(os.path.join(run_dir, "final.safetensors")))
    upd = {n: params[n] - initial[n] for n in shapes}
    final_ref = dict(params)
    C = cfg["width"]
    for i in range(cfg["layers"]):
        n = "transformer.h.%d.attn.c_attn.bias" % i
        keep = np.r_[0:C, 2 * C:3 * C]
        fin[n], final_ref[n], upd[n] = fin[n][keep], final_ref[n][keep], upd[n][keep]
    fmax, frms = _tensor_errors("final", shapes, fin, final_ref, upd, tol["final_max"], tol["final_rms"],
                                report, failures)
    tmax = "not checked" if tol["final_max"] is None else "tol %.2g" % tol["final_max"]

    print("\n".join(report))
    status = "FAILED (%s)" % ", ".join(failures) if failures else "agree"
    print("%s: %d losses (%d skipped; tol %.2g rel, worst %.2e), step-%d gradients of %d tensors "
          "(tol %.2g of max, worst %.2e), final weights against the update (max: %s, worst %.2e; "
          "rms: tol %.2g, worst %.2e): %s"
          % (mode, len(losses), sum(skipped), tol["loss"], worst_loss, gstep, len(shapes), tol["grad"],
             worst_grad, tmax, fmax, tol["final_rms"], frms, status))
    return 1 if failures else 0


def main(argv):
    try:
        if len(argv) == 2 and argv[1] == "selftest":
            return selftest()
        if len(argv) == 4 and argv[1] == "compare":
            return compare(argv[2], argv[3])
    except (SpecError, OSError, KeyError, ValueError, TypeError) as e:
        print("npgpt: %s: %s" % (type(e).__name__, e))
        return 1
    print(__doc__.split("Usage:")[1].rstrip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
