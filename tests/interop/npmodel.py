"""A NumPy (float64) forward pass of mpcl's sequential models: the
independent reference of the interoperability tests.

It reads the model spec text that mpcl stores in a checkpoint's metadata
("model_spec") and the weights by their PyTorch state_dict names. Layers:
input, conv2d, relu, leaky_relu, tanh, sigmoid, maxpool2d, avgpool2d (no
padding), flatten, linear, dropout (identity at inference).
"""
import numpy as np


def parse_spec(text):
    """[(kind, {option: value})] and the input shape (C, H, W)."""
    layers, shape = [], None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        word, *opts = line.split()
        if word == "input":
            shape = tuple(int(v) for v in opts[0].split("x"))
        else:
            layers.append((word, dict(o.split("=", 1) for o in opts)))
    if shape is None:
        raise ValueError("model spec has no input line")
    return shape, layers


def _pair(v, default):
    if v is None:
        return default, default
    if "x" in v:
        a, b = v.split("x")
        return int(a), int(b)
    return int(v), int(v)


def _conv2d(x, w, b, stride, pad, dil):
    n, c, h, wd = x.shape
    oc, ic, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (x.shape[2] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (x.shape[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    cols = np.empty((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dil[0], j * dil[1]
            cols[:, :, i, j] = x[:, :, r0:r0 + stride[0] * oh:stride[0], c0:c0 + stride[1] * ow:stride[1]]
    y = np.einsum("ncijhw,ocij->nohw", cols, w)
    if b is not None:
        y += b[None, :, None, None]
    return y


def _pool(x, k, s, kind):
    n, c, h, w = x.shape
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    win = np.empty((n, c, k[0], k[1], oh, ow))
    for i in range(k[0]):
        for j in range(k[1]):
            win[:, :, i, j] = x[:, :, i:i + s[0] * oh:s[0], j:j + s[1] * ow:s[1]]
    return win.max(axis=(2, 3)) if kind == "max" else win.mean(axis=(2, 3))


def forward(spec_text, tensors, x):
    """Logits (float64) for x: (N, C, H, W) float64, already normalised."""
    _, layers = parse_spec(spec_text)
    for idx, (kind, o) in enumerate(layers):
        w = tensors.get(f"{idx}.weight")
        b = tensors.get(f"{idx}.bias")
        w = None if w is None else w.astype(np.float64)
        b = None if b is None else b.astype(np.float64)
        if kind == "conv2d":
            x = _conv2d(x, w, b, _pair(o.get("stride"), 1), _pair(o.get("padding"), 0),
                        _pair(o.get("dilation"), 1))
        elif kind == "linear":
            x = x @ w.T + (b if b is not None else 0.0)
        elif kind == "relu":
            x = np.maximum(x, 0.0)
        elif kind == "leaky_relu":
            x = np.where(x > 0, x, float(o.get("slope", 0.01)) * x)
        elif kind == "tanh":
            x = np.tanh(x)
        elif kind == "sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
        elif kind in ("maxpool2d", "avgpool2d"):
            k = _pair(o.get("kernel"), 2)
            s = _pair(o.get("stride"), k[0]) if o.get("stride") else k
            if _pair(o.get("padding"), 0) != (0, 0):
                raise NotImplementedError("pooling with padding")
            x = _pool(x, k, s, "max" if kind == "maxpool2d" else "avg")
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif kind == "dropout":
            pass
        else:
            raise NotImplementedError(f"layer {kind} in the NumPy reference")
    return x


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def normalise(images_u8, mean, std):
    """mpcl's input normalisation: (x / 255 - mean) / std."""
    return (images_u8.astype(np.float64) / 255.0 - mean) / std


def read_idx(path):
    """An IDX file of unsigned bytes (plain or .gz) as an array."""
    import gzip
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(dims)
