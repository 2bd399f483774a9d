"""npgraph.py: an independent NumPy (float64) forward AND backward pass of
mpcl's graph model specs, to check mpcl's training step against.

It shares no code with mpcl: it reads the spec text itself (docs/models.md)
and the weights from the safetensors file mpcl wrote (by their PyTorch
state_dict names), and differentiates every layer by hand.

Layers: conv2d (out, kernel, stride, padding, dilation, bias; dilation is
implemented but the test's spec uses 1 only), batchnorm2d in training mode
(batch statistics, biased variance for normalising, the unbiased one for
running_var, eps, momentum), relu, add, concat (channels, or flat
features), global_avgpool, flatten, linear (out, in, bias); softmax
cross-entropy with the mean over the batch. Anything else is refused.

Graph rules (docs/models.md): a line reads the line before (the first layer:
the input) unless it says from=; "NAME: layer" names a line; "add from=B"
and "concat from=B" join the line before with B (in that order); "from=A,B"
lists the inputs. Where an output feeds several layers the backward pass
adds their gradients. Parameter names: "<i>.weight", "<i>.bias",
"<i>.running_mean", "<i>.running_var", i the 0-based position of the line
among the layer lines ('input' is not a layer).

Usage:
  npgraph.py selftest SPEC      the reference against central finite
                                differences (float64, h = 1e-6), no mpcl
  npgraph.py compare SPEC DIR   DIR from graph_ref (weights.safetensors,
                                final.safetensors, run.json): replays the
                                run in float64 and compares
Exit status: 0 agree, 1 a mismatch (or a malformed input), 2 usage.
"""
import json
import os
import sys

import numpy as np


class SpecError(Exception):
    pass


# ------------------------------------------------------------------ spec

def _pair(v):
    a, _, b = v.partition("x")
    return (int(a), int(b)) if b else (int(a), int(a))


def _bool(v):
    if v in ("1", "true", "yes"):
        return True
    if v in ("0", "false", "no"):
        return False
    raise SpecError("bias=%s: expected true or false" % v)


OPTIONS = {
    "conv2d": {"out", "kernel", "stride", "padding", "dilation", "bias"},
    "linear": {"out", "in", "bias"},
    "batchnorm2d": {"eps", "momentum"},
    "relu": set(), "add": set(), "concat": set(), "global_avgpool": set(), "flatten": set(),
}


def parse_spec(text, name="spec"):
    """(input shape (C, H, W), [layer dicts]) with inferred shapes."""
    shape, layers, labels = None, [], {"input": -1}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = "%s:%d" % (name, lineno)
        toks = line.split()
        if shape is None:
            if toks[0] != "input" or len(toks) != 2:
                raise SpecError(where + ": expected 'input CxHxW' first")
            shape = tuple(int(v) for v in toks[1].split("x"))
            continue
        label = None
        if ":" in toks[0] and "=" not in toks[0]:
            label, _, rest = toks[0].partition(":")
            toks = ([rest] if rest else []) + toks[1:]
        kind, opts = toks[0], {}
        if kind not in OPTIONS:
            raise SpecError(where + ": layer '%s' is not in npgraph's subset" % kind)
        for t in toks[1:]:
            k, eq, v = t.partition("=")
            if not eq or (k != "from" and k not in OPTIONS[kind]):
                raise SpecError(where + ": option '%s' for %s" % (t, kind))
            opts[k] = v
        index = len(layers)
        before = index - 1  # -1: the model's input
        if "from" in opts:
            src = []
            for n in opts.pop("from").split(","):
                if n not in labels:
                    raise SpecError(where + ": from=%s: no earlier layer is named so" % n)
                src.append(labels[n])
            inputs = [before] + src if kind in ("add", "concat") and len(src) == 1 else src
        else:
            if kind in ("add", "concat"):
                raise SpecError(where + ": %s needs from=" % kind)
            inputs = [before]
        if label:
            if label in labels:
                raise SpecError(where + ": '%s' named twice" % label)
            labels[label] = index
        layers.append({"kind": kind, "opts": opts, "inputs": inputs, "where": where, "index": index})
    if shape is None:
        raise SpecError(name + ": no input line")
    _infer(shape, layers)
    return shape, layers


def _infer(shape, layers):
    shapes = {-1: shape}
    for ly in layers:
        k, o, ins = ly["kind"], ly["opts"], [shapes[i] for i in ly["inputs"]]
        s = ins[0]
        if k == "conv2d":
            kh, kw = _pair(o["kernel"])
            sh, sw = _pair(o.get("stride", "1"))
            ph, pw = _pair(o.get("padding", "0"))
            dh, dw = _pair(o.get("dilation", "1"))
            ly.update(kernel=(kh, kw), stride=(sh, sw), pad=(ph, pw), dil=(dh, dw),
                      bias=_bool(o.get("bias", "true")), out=int(o["out"]))
            oh = (s[1] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
            ow = (s[2] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
            ly["params"] = {"weight": (ly["out"], s[0], kh, kw)}
            if ly["bias"]:
                ly["params"]["bias"] = (ly["out"],)
            out = (ly["out"], oh, ow)
        elif k == "linear":
            if len(s) != 1:
                raise SpecError(ly["where"] + ": linear needs a flat input")
            if "in" in o and int(o["in"]) != s[0]:
                raise SpecError(ly["where"] + ": in=%s but the input has %d" % (o["in"], s[0]))
            ly.update(out=int(o["out"]), bias=_bool(o.get("bias", "true")))
            ly["params"] = {"weight": (ly["out"], s[0])}
            if ly["bias"]:
                ly["params"]["bias"] = (ly["out"],)
            out = (ly["out"],)
        elif k == "batchnorm2d":
            ly.update(eps=float(o.get("eps", "1e-5")), momentum=float(o.get("momentum", "0.1")))
            ly["params"] = {"weight": (s[0],), "bias": (s[0],)}
            ly["buffers"] = {"running_mean": (s[0],), "running_var": (s[0],)}
            out = s
        elif k == "add":
            if any(t != s for t in ins):
                raise SpecError(ly["where"] + ": add of shapes %s" % (ins,))
            out = s
        elif k == "concat":
            if any(len(t) != len(s) or t[1:] != s[1:] for t in ins):
                raise SpecError(ly["where"] + ": concat of shapes %s" % (ins,))
            out = (sum(t[0] for t in ins),) + s[1:]
        elif k == "global_avgpool":
            out = (s[0], 1, 1)
        elif k == "flatten":
            out = (int(np.prod(s)),)
        else:  # relu
            out = s
        ly.setdefault("params", {})
        ly.setdefault("buffers", {})
        ly["out_shape"] = shapes[ly["index"]] = out


def param_shapes(layers):
    """{name: shape} of the trainable tensors, in state_dict order."""
    return {"%d.%s" % (ly["index"], p): s for ly in layers for p, s in ly["params"].items()}


def buffer_shapes(layers):
    return {"%d.%s" % (ly["index"], p): s for ly in layers for p, s in ly["buffers"].items()}


# ------------------------------------------------------------------ layers

def _windows(xp, i, j, ly, oh, ow):
    (sh, sw), (dh, dw) = ly["stride"], ly["dil"]
    return (slice(None), slice(None), slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def conv_forward(ly, x, w, b):
    ph, pw = ly["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    _, oh, ow = ly["out_shape"]
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            y += np.einsum("nchw,oc->nohw", xp[_windows(xp, i, j, ly, oh, ow)], w[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv_backward(ly, x, w, dy):
    ph, pw = ly["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    _, oh, ow = ly["out_shape"]
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            win = _windows(xp, i, j, ly, oh, ow)
            dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dy, xp[win])
            dxp[win] += np.einsum("nohw,oc->nchw", dy, w[:, :, i, j])
    dx = dxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def bn_forward(ly, x, gamma, beta):
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))  # biased
    invstd = 1.0 / np.sqrt(var + ly["eps"])
    xhat = (x - mean[None, :, None, None]) * invstd[None, :, None, None]
    y = gamma[None, :, None, None] * xhat + beta[None, :, None, None]
    return y, (xhat, invstd, mean, var)


def bn_backward(gamma, saved, dy):
    xhat, invstd, _, _ = saved
    m = dy.shape[0] * dy.shape[2] * dy.shape[3]
    dbeta = dy.sum(axis=(0, 2, 3))
    dgamma = (dy * xhat).sum(axis=(0, 2, 3))
    dx = (gamma * invstd / m)[None, :, None, None] * (
        m * dy - dbeta[None, :, None, None] - xhat * dgamma[None, :, None, None])
    return dx, dgamma, dbeta


def softmax_xent(z, labels):
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    n = z.shape[0]
    s = z - z.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(n), labels].mean()
    d = np.exp(logp)
    d[np.arange(n), labels] -= 1.0
    return loss, d / n


# ------------------------------------------------------------------ graph

def forward(layers, params, x):
    """Logits, the outputs of every layer (key -1: the input) and the
    batch-norm saves."""
    outs, saved = {-1: x}, {}
    for ly in layers:
        i, k = ly["index"], ly["kind"]
        ins = [outs[j] for j in ly["inputs"]]
        p = lambda n: params.get("%d.%s" % (i, n))
        if k == "conv2d":
            y = conv_forward(ly, ins[0], p("weight"), p("bias"))
        elif k == "linear":
            y = ins[0] @ p("weight").T
            if p("bias") is not None:
                y = y + p("bias")
        elif k == "batchnorm2d":
            y, saved[i] = bn_forward(ly, ins[0], p("weight"), p("bias"))
        elif k == "relu":
            y = np.maximum(ins[0], 0.0)
        elif k == "add":
            y = sum(ins[1:], ins[0])
        elif k == "concat":
            y = np.concatenate(ins, axis=1)
        elif k == "global_avgpool":
            y = ins[0].mean(axis=(2, 3), keepdims=True)
        elif k == "flatten":
            y = ins[0].reshape(ins[0].shape[0], -1)
        outs[i] = y
    return outs[layers[-1]["index"]], outs, saved


def backward(layers, params, outs, saved, dlogits):
    """Gradients {name: array} of every parameter, and of the input."""
    gout = {layers[-1]["index"]: dlogits}
    grads = {}
    for ly in reversed(layers):
        i, k = ly["index"], ly["kind"]
        dy = gout.pop(i)  # every output has a reader (docs/models.md), so it is there
        ins = [outs[j] for j in ly["inputs"]]
        p = lambda n: params.get("%d.%s" % (i, n))
        if k == "conv2d":
            dx, dw, db = conv_backward(ly, ins[0], p("weight"), dy)
            grads["%d.weight" % i] = dw
            if ly["bias"]:
                grads["%d.bias" % i] = db
            dxs = [dx]
        elif k == "linear":
            grads["%d.weight" % i] = dy.T @ ins[0]
            if ly["bias"]:
                grads["%d.bias" % i] = dy.sum(axis=0)
            dxs = [dy @ p("weight")]
        elif k == "batchnorm2d":
            dx, grads["%d.weight" % i], grads["%d.bias" % i] = bn_backward(p("weight"), saved[i], dy)
            dxs = [dx]
        elif k == "relu":
            dxs = [dy * (ins[0] > 0)]
        elif k == "add":
            dxs = [dy] * len(ins)
        elif k == "concat":
            cuts = np.cumsum([t.shape[1] for t in ins])[:-1]
            dxs = np.split(dy, cuts, axis=1)
        elif k == "global_avgpool":
            t = ins[0]
            dxs = [np.broadcast_to(dy, t.shape) / (t.shape[2] * t.shape[3])]
        elif k == "flatten":
            dxs = [dy.reshape(ins[0].shape)]
        for j, d in zip(ly["inputs"], dxs):
            gout[j] = gout[j] + d if j in gout else d  # never in place: dxs may alias
    return grads, gout.get(-1)


def loss_and_grads(layers, params, x, labels):
    logits, outs, saved = forward(layers, params, x)
    loss, dlogits = softmax_xent(logits, labels)
    grads, dx = backward(layers, params, outs, saved, dlogits)
    return loss, grads, dx, saved


def update_running(layers, buffers, saved):
    """PyTorch's running statistics after one training forward pass."""
    for ly in layers:
        if ly["kind"] != "batchnorm2d":
            continue
        i, mom = ly["index"], ly["momentum"]
        xhat, _, mean, var = saved[i]
        n = xhat.size // var.size  # values per channel: B x H x W
        rm, rv = "%d.running_mean" % i, "%d.running_var" % i
        buffers[rm] = (1 - mom) * buffers[rm] + mom * mean
        buffers[rv] = (1 - mom) * buffers[rv] + mom * var * n / (n - 1)


# ------------------------------------------------------------------ selftest

def selftest(spec_path):
    """Analytic gradients against central differences in float64."""
    with open(spec_path) as f:
        shape, layers = parse_spec(f.read(), spec_path)
    rng = np.random.default_rng(20240611)
    params = {n: rng.uniform(-0.6, 0.6, s) for n, s in param_shapes(layers).items()}
    for ly in layers:  # batch norm away from gamma 1, beta 0
        if ly["kind"] == "batchnorm2d":
            params["%d.weight" % ly["index"]] = rng.uniform(0.5, 1.5, ly["params"]["weight"])
    batch = 3
    x = rng.uniform(-1, 1, (batch,) + shape)
    classes = layers[-1]["out_shape"][0]
    labels = np.arange(batch) % classes
    _, grads, dx, _ = loss_and_grads(layers, params, x, labels)
    h, worst, checked, bad = 1e-6, 0.0, 0, []

    def fd(arr, idx):
        keep = arr[idx]
        arr[idx] = keep + h
        lp = loss_and_grads(layers, params, x, labels)[0]
        arr[idx] = keep - h
        lm = loss_and_grads(layers, params, x, labels)[0]
        arr[idx] = keep
        return (lp - lm) / (2 * h)

    targets = [(n, params[n], grads[n]) for n in params] + [("input", x, dx)]
    for name, arr, g in targets:
        for flat in rng.choice(arr.size, size=min(3, arr.size), replace=False):
            idx = np.unravel_index(flat, arr.shape)
            num, ana = fd(arr, idx), g[idx]
            # central differences in float64 at h = 1e-6: truncation ~h^2,
            # rounding ~1e-16 * |loss| / h ~ 1e-10; gradients here are ~1e-3..1
            err = abs(num - ana)
            worst = max(worst, err / (1e-7 + abs(ana)))
            checked += 1
            if err > 1e-7 + 1e-5 * abs(ana):
                bad.append("%s%s: analytic %.10g, finite difference %.10g" % (name, [int(i) for i in idx], ana, num))
    for b in bad:
        print("MISMATCH " + b)
    print("selftest: %d gradient entries of %d tensors and the input against central differences "
          "(h=1e-6): %s, worst |fd - analytic| / (1e-7 + |analytic|) = %.2e"
          % (checked, len(params), "FAILED" if bad else "ok", worst))
    return 1 if bad else 0


# ------------------------------------------------------------------ compare

# Tolerances per precision mode, relative to the NumPy float64 value (losses)
# or to the largest magnitude of the tensor (gradients, weights, running
# statistics), plus a small absolute floor for tensors that are ~0.
#  fp32: mpcl stores and computes in float (unit roundoff 6e-8); the sums
#   here are short (<= 256 terms) and batch norm's backward pass cancels
#   (measured on PoCL: losses 5e-8, gradients 1.3e-6 of max, weights after 5
#   steps 3e-7 of max); 1e-4 leaves a wide margin and still fails a wrong
#   term (a flipped or missing contribution changes a tensor by far more
#   than 1e-4 of its size). The weights and running statistics after the
#   last step get 1e-5 of max (30x the measured error): tight enough that
#   running_var's unbiased factor M / (M - 1), against (M + 1) / M, fails.
#  fp16-storage: activations, gradients and working weights are stored in
#   half (unit roundoff 4.9e-4) with float math. Besides rounding, a ReLU
#   input within ~1e-3 of the tensor's scale of zero can land on the other
#   side of the kink, which changes gradients discretely (this net has a
#   few such inputs every step). The loss is continuous through that, so
#   the losses stay tight (measured 2.5e-5, tolerance 2e-3); the first
#   step's gradients get 5e-2 of max (measured 6.2e-3): loose, but a
#   wrong sign or a missing branch is an O(1) error. The weights after 5
#   steps are not compared in this mode: kink flips in later steps compound
#   (measured up to 3.6e-2 of a bias tensor after 4 steps, while the step-0
#   gradients agree to 6e-3).
TOLERANCES = {
    "fp32": {"loss": 1e-4, "grad": 1e-4, "weights": 1e-5, "floor": 1e-6},
    "fp16-storage": {"loss": 2e-3, "grad": 5e-2, "weights": None, "floor": 1e-4},
}


def splitmix_inputs(seed, n):
    """graph_ref's documented input generator: 2u - 1, u from splitmix64."""
    mask = (1 << 64) - 1
    state, out = seed, np.empty(n)
    for i in range(n):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        out[i] = 2.0 * ((z >> 11) * 2.0 ** -53) - 1.0
    return out.astype(np.float32)


def _tensor_errors(kind, names, got, ref, tol, floor, report, failures):
    """Checks max |got - ref| <= tol * max |ref| + floor per tensor; returns
    the worst max |got - ref| / max |ref|."""
    worst = 0.0
    for n in names:
        g, r = np.asarray(got[n], dtype=np.float64).reshape(ref[n].shape), ref[n]
        scale = float(np.abs(r).max())
        err = float(np.abs(g - r).max())
        limit = tol * scale + floor
        ok = err <= limit
        rel = err / scale if scale else (0.0 if err == 0 else float("inf"))
        worst = max(worst, rel)
        report.append("  %-7s %-16s %-14s max|ref| %.3e  max err %.3e  (%.2e of max)%s"
                      % (kind, n, str(tuple(r.shape)), scale, err, rel,
                         "" if ok else "  > %.3e: MISMATCH" % limit))
        if not ok:
            failures.append("%s %s" % (kind, n))
    return worst


def compare(spec_path, run_dir):
    from safetensors.numpy import load_file

    with open(spec_path) as f:
        shape, layers = parse_spec(f.read(), spec_path)
    with open(os.path.join(run_dir, "run.json")) as f:
        run = json.load(f)
    mode = run["precision"]
    if mode not in TOLERANCES:
        print("compare: no tolerances for precision mode %s" % mode)
        return 1
    tol = TOLERANCES[mode]
    failures, report = [], []

    # the weights mpcl started from, by name; the names must be the spec's
    wpath = os.path.join(run_dir, "weights.safetensors")
    st = load_file(wpath)
    pshapes, bshapes = param_shapes(layers), buffer_shapes(layers)
    want = dict(pshapes, **bshapes)
    if set(st) != set(want):
        print("compare: %s holds %s; the spec's parameters are %s"
              % (wpath, sorted(set(st) - set(want)) or "no extra", sorted(set(want) - set(st)) or "all"))
        return 1
    for n, s in want.items():
        if tuple(st[n].shape) != tuple(s):
            print("compare: %s: %s has shape %s, the spec says %s" % (wpath, n, st[n].shape, s))
            return 1
    params = {n: st[n].astype(np.float64) for n in pshapes}
    buffers = {n: st[n].astype(np.float64) for n in bshapes}

    # the batch, and that it is the documented one
    b, c, hh, ww = run["input_shape"]
    if (c, hh, ww) != tuple(shape):
        print("compare: run.json's input is %dx%dx%d, the spec's %s" % (c, hh, ww, shape))
        return 1
    x32 = np.asarray(run["input"], dtype=np.float32)
    regen = splitmix_inputs(run["data_seed"], x32.size)
    if mode.startswith("fp16"):
        regen = regen.astype(np.float16).astype(np.float32)
    if not np.array_equal(regen, x32):
        failures.append("input")
        report.append("  the input is not graph_ref's documented generator's (data_seed %d)" % run["data_seed"])
    x = x32.astype(np.float64).reshape(b, c, hh, ww)
    labels = np.asarray(run["labels"], dtype=np.int64)
    classes = layers[-1]["out_shape"][0]
    if not np.array_equal(labels, np.arange(b) % classes):
        failures.append("labels")
        report.append("  the labels are not b %% %d" % classes)

    # the same SGD steps in float64
    lr, losses = float(run["lr"]), []
    for step in range(run["steps"]):
        loss, grads, _, saved = loss_and_grads(layers, params, x, labels)
        losses.append(loss)
        if step == 0:
            first = grads
        update_running(layers, buffers, saved)
        for n in params:
            params[n] = params[n] - lr * grads[n]

    worst_loss = 0.0
    for step, (got, ref) in enumerate(zip(run["losses"], losses)):
        rel = abs(got - ref) / abs(ref)
        worst_loss = max(worst_loss, rel)
        ok = rel <= tol["loss"]
        report.append("  loss    step %d  mpcl %.8f  numpy %.8f  rel err %.2e%s"
                      % (step, got, ref, rel, "" if ok else "  > %.0e: MISMATCH" % tol["loss"]))
        if not ok:
            failures.append("loss %d" % step)
    if len(run["losses"]) != run["steps"]:
        failures.append("losses")
    if set(run["grads"]) != set(pshapes):
        report.append("  run.json's gradients are of %s, the spec's parameters %s"
                      % (sorted(run["grads"]), sorted(pshapes)))
        failures.append("gradient names")
        worst_grad = float("nan")
    else:
        worst_grad = _tensor_errors("grad", pshapes, run["grads"], first, tol["grad"], tol["floor"],
                                    report, failures)

    # after the last step: the weights and the running statistics
    if tol["weights"] is not None:
        fin = load_file(os.path.join(run_dir, "final.safetensors"))
        ref_final = dict(params, **buffers)
        worst_w = _tensor_errors("final", list(pshapes) + list(bshapes), fin, ref_final,
                                 tol["weights"], tol["floor"], report, failures)
        final_text = "final weights and statistics (tol %.0e of max, worst %.2e)" % (tol["weights"], worst_w)
    else:
        final_text = "final weights not compared in this mode"

    print("\n".join(report))
    status = "FAILED (%s)" % ", ".join(failures) if failures else "agree"
    print("%s: %d losses (tol %.0e rel, worst %.2e), %d first-step gradients (tol %.0e of max, worst "
          "%.2e), %s: %s"
          % (mode, len(losses), tol["loss"], worst_loss, len(pshapes), tol["grad"], worst_grad,
             final_text, status))
    return 1 if failures else 0


def main(argv):
    try:
        if len(argv) == 3 and argv[1] == "selftest":
            return selftest(argv[2])
        if len(argv) == 4 and argv[1] == "compare":
            return compare(argv[2], argv[3])
    except (SpecError, OSError, KeyError, ValueError) as e:
        print("npgraph: %s: %s" % (type(e).__name__, e))
        return 1
    print(__doc__.split("Usage:")[1].rstrip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
