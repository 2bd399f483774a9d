#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into tests/fuzz/corpus/TARGET/.

Run from anywhere: python3 tests/fuzz/make_corpus.py. The seeds are small,
valid inputs in each target's input layout (tests/fuzz/fuzz_TARGET.c says
what the control bytes mean), made from the repository's files, from the
formats' writers where they run without a device, and from a few system
files where present (Debian's fashion-mnist and fortunes, the CLBlast
tuning files mpcl wrote under ~/.cache/mpcl); the committed seeds were made
on a machine that had them. Files of the same name are overwritten; others
are left alone.

Seeds not written here, committed as they were made by mpcl's own writer
(`mpcl train --save`, PoCL, Debian's Fashion-MNIST and fortunes):
  checkpoint/mpcl-trainer-adam-fp32.safetensors
      --model M1 --epochs 1 --limit 64 --test-limit 64 --batch 32
  checkpoint/mpcl-trainer-sgd-fp16-storage.safetensors
      --model M2 --epochs 1 --limit 64 --test-limit 64 --batch 32
      --optimizer sgd --momentum 0.9 --nesterov --schedule step --step-size 2
      --gamma 0.5 --precision fp16-storage --clip 1 --label-smoothing 0.1
  checkpoint/mpcl-trainer-gpt.safetensors
      --task lm --model M3 --text (3000 bytes of fortunes/art) --steps 2
      --eval-every 0 --eval-windows 2 --batch 2
where M1 = input 1x28x28 / avgpool2d kernel=7 stride=7 / flatten /
linear out=10; M2 = input 1x28x28 / conv2d out=2 kernel=3 stride=3
padding=1 bias=false / batchnorm2d / stem: relu / conv2d out=2 kernel=3
padding=1 / add from=stem / maxpool2d kernel=2 / global_avgpool / flatten /
dropout p=0.1 / linear out=10; M3 = gpt vocab=256 context=8 layers=1
heads=2 width=8 hidden=16.
"""
import glob
import gzip
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


# ------------------------------------------------------------------ hashes
MASK = (1 << 64) - 1
HASH_SEED = 0xCBF29CE484222325


def fnv1a(data, h):
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & MASK
    return h


def hash_str(h, s):
    return fnv1a(s.encode() + b"\0", h)


# the fixed caps of tests/fuzz/fuzz_tuning.c's context
FUZZ_CAPS = ["Fuzz Platform", "OpenCL 1.2 fuzz", "fuzz-device", "OpenCL 1.2", "0.0"]


def device_hash(caps):
    h = HASH_SEED
    for s in caps:
        h = hash_str(h, s)
    return h


# --------------------------------------------------------------------- idx
def idx(ndim, dims, payload):
    return struct.pack(">I", 0x800 | ndim) + b"".join(struct.pack(">I", d) for d in dims) + payload


def idx_seeds():
    labels = idx(1, [10], bytes(range(10)))
    images = idx(3, [2, 4, 4], bytes((i * 17) & 0xFF for i in range(32)))
    put("idx", "labels-10", b"\x00" + labels)
    put("idx", "images-2x4x4", b"\x00" + images)
    put("idx", "labels-10.gz-here", b"\x01" + labels)
    put("idx", "images-2x4x4.gz-here", b"\x01" + images)
    put("idx", "images-cut-3.gz-here", bytes([1 | (3 << 1)]) + images)
    put("idx", "labels-10.gz-given", b"\x00" + gz(labels))
    put("idx", "labels-trailing", b"\x00" + labels + b"\x00")
    put("idx", "labels-short", b"\x00" + labels[:-1])
    # the first image and labels of Debian's Fashion-MNIST test set
    base = "/usr/share/datasets/fashion-mnist/"
    try:
        im = gzip.open(base + "t10k-images-idx3-ubyte.gz").read(16 + 784)
        lab = gzip.open(base + "t10k-labels-idx1-ubyte.gz").read(8 + 16)
    except OSError:
        return
    assert struct.unpack(">IIII", im[:16])[0] == 0x803
    put("idx", "fashion-t10k-image-0", b"\x00" + idx(3, [1, 28, 28], im[16:]))
    put("idx", "fashion-t10k-image-0.gz-here", b"\x01" + idx(3, [1, 28, 28], im[16:]))
    put("idx", "fashion-t10k-labels-16", b"\x00" + idx(1, [16], lab[8:]))


# -------------------------------------------------------------------- text
def text_seeds():
    readme = read(os.path.join(ROOT, "README.md"))[:1500]
    put("text", "readme-plain", b"\x00\x10\x00" + readme)
    put("text", "readme-gz", b"\x01\x08\x01" + readme)
    put("text", "readme-dir", b"\x02\x04" + bytes([2 | (15 << 3)]) + readme[:600])
    put("text", "readme-dir-gz", b"\x03\x04" + bytes([1 | (8 << 3)]) + readme[:600])
    put("text", "readme-gz-cut", bytes([1 | (2 << 2), 4, 0]) + readme[:400])
    put("text", "tiny-context-0", b"\x00\x00\x02" + b"ab")
    put("text", "utf8", b"\x00\x02\x00" + "h\u00e9llo w\u00f6rld \u2014 \U0001F600\n".encode() * 4)
    put("text", "gz-given", b"\x00\x04\x00" + gz(readme[:300]))
    for path in sorted(glob.glob("/usr/share/games/fortunes/*.u8"))[:2]:
        put("text", "fortunes-" + os.path.basename(path), b"\x00\x20\x00" + read(path)[:2000])


# -------------------------------------------------------------------- spec
def spec_seeds():
    for path in sorted(glob.glob(os.path.join(ROOT, "data", "models", "*.txt"))):
        put("spec", os.path.basename(path), read(path))
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "interop", "*.txt"))):
        put("spec", "interop-" + os.path.basename(path), read(path))
    put("spec", "gpt-hidden.txt", "# comment\ngpt vocab=256 context=8 layers=1 heads=2 width=8 hidden=16  # tail\n")
    put("spec", "graph-concat.txt",
        "input 3x8x8\na: conv2d out=4 kernel=3 padding=1\nb: conv2d from=-1 out=4 kernel=1\n"
        "concat from=a,b\nleaky_relu slope=0.1\navgpool2d kernel=2\nflatten\nlinear out=10 bias=no\n")


# ------------------------------------------------------------- safetensors
def safetensors(tensors, meta=None, pad=8):
    """tensors: (name, dtype, shape, bytes); the header padded to pad bytes."""
    header, data = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % pad)
    return struct.pack("<Q", len(h)) + h + data


def f32(vals):
    return struct.pack("<%df" % len(vals), *vals)


def safetensors_seeds():
    put("safetensors", "seed-cnn-numpy.safetensors", read(os.path.join(ROOT, "tests", "data", "seed-cnn-numpy.safetensors")))
    put("safetensors", "dtypes.safetensors", safetensors([
        ("a", "F32", [2, 2], f32([1, 2, 3, 4])),
        ("b", "F16", [3], b"\x00\x3c\x00\x40\x00\xc0"),
        ("c", "BF16", [1, 2], b"\x80\x3f\x00\x40"),
        ("d", "I64", [1], struct.pack("<q", -5)),
        ("e", "U8", [4], b"\x01\x02\x03\x04"),
        ("f", "BOOL", [2], b"\x00\x01"),
        ("g", "F64", [], struct.pack("<d", 2.5)),
        ("h", "F8_E4M3", [2], b"\x38\x40"),
    ], {"note": "dtypes"}))
    put("safetensors", "empty.safetensors", safetensors([], {}))
    put("safetensors", "zero-dim.safetensors", safetensors([("z", "F32", [0, 3], b"")]))


# -------------------------------------------------------------- checkpoint
TRAINER_META = {
    "format": "mpcl", "format_version": "1", "mpcl_version": "0.2.0", "kind": "trainer",
    "precision": "fp32", "seed": "1", "input_mean": "0.491,0.482,0.447", "input_std": "0.247,0.243,0.261",
    "optimizer": "adamw", "lr": "0.00100000005", "momentum": "0", "nesterov": "0", "weight_decay": "0.100000001",
    "beta1": "0.899999976", "beta2": "0.999000013", "eps": "9.99999994e-09", "schedule": "cosine",
    "total_steps": "100", "step_size": "1000", "gamma": "0.100000001", "warmup_steps": "10",
    "loss_scaling": "dynamic", "loss_scale": "65536", "growth_factor": "2", "backoff_factor": "0.5",
    "growth_interval": "2000", "min_scale": "5.96046448e-08", "max_scale": "16777216", "clip_norm": "1",
    "label_smoothing": "0", "step": "7", "optimizer_steps": "6", "skipped_steps": "1", "growth_tracker": "5",
    "epochs_done": "0", "epoch_step": "7", "batch": "8", "train_samples": "56", "augment": "crop4,flip",
    "fit_seed": "1", "class_names": "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck",
}


def checkpoint_seeds():
    spec = ("input 3x4x4\nconv2d out=2 kernel=3x3 stride=1x1 padding=1x1 dilation=1x1 bias=true\nrelu\n"
            "flatten\nlinear in=32 out=10 bias=true\n")
    tensors = [("0.weight", "F32", [2, 3, 3, 3], f32([0.01 * i for i in range(54)])),
               ("0.bias", "F32", [2], f32([0, 0])),
               ("3.weight", "F16", [10, 32], b"\x00\x3c" * 320),
               ("3.bias", "BF16", [10], b"\x80\x3f" * 10)]
    opt = [("optimizer.%s.%s" % (n, s), "F32", shape, b"\0" * (4 * len(raw) // (2 if dt != "F32" else 4)))
           for s in ("exp_avg", "exp_avg_sq") for n, dt, shape, raw in tensors]
    put("checkpoint", "model-cifar.safetensors", safetensors(tensors, dict(TRAINER_META, kind="model", model_spec=spec)))
    put("checkpoint", "trainer-cifar.safetensors", safetensors(tensors + opt, dict(TRAINER_META, model_spec=spec)))
    put("checkpoint", "gpt-spec-only.safetensors", safetensors([], {
        "format": "mpcl", "kind": "model", "task": "lm", "lm_context": "8",
        "model_spec": "gpt vocab=256 context=8 layers=1 heads=2 width=8\n"}))
    put("checkpoint", "no-spec.safetensors", safetensors([("w", "F32", [1], f32([1]))], {"format": "mpcl"}))
    put("checkpoint", "bad-spec.safetensors", safetensors([], {"model_spec": "input 1x2x2\nlinear out=0\n"}))


# ----------------------------------------------------------- program cache
FUZZ_KEY = 0x0123456789ABCDEF
FUZZ_DEV = 0xFEDCBA9876543210


def cache_header(key, dev, binary, version=2, magic=b"MPCLBIN\x1a"):
    """What mpcl_cache_header (src/program.c) writes."""
    h = bytearray(64)
    h[0:8] = magic
    h[8:12] = struct.pack("<I", version)
    h[12:16] = struct.pack("<I", 64)
    h[16:24] = struct.pack("<Q", key)
    h[24:32] = struct.pack("<Q", dev)
    h[32:40] = struct.pack("<Q", len(binary))
    h[40:48] = struct.pack("<Q", fnv1a(binary, key))
    h[56:64] = struct.pack("<Q", fnv1a(bytes(h[:56]), HASH_SEED))
    return bytes(h)


def program_cache_seeds():
    binary = b"\x7fELF\x02\x01\x01" + bytes(range(57))
    entry = cache_header(FUZZ_KEY, FUZZ_DEV, binary) + binary
    put("program_cache", "valid-fixed-key", b"\x00" + entry)
    put("program_cache", "valid-own-key", b"\x01" + entry)
    put("program_cache", "valid-repaired", b"\x02" + entry)
    put("program_cache", "one-byte", b"\x00" + cache_header(FUZZ_KEY, FUZZ_DEV, b"\x00") + b"\x00")
    put("program_cache", "format-1", b"\x00" + cache_header(FUZZ_KEY, FUZZ_DEV, binary, 1, b"MPCLBIN1") + binary)
    put("program_cache", "header-only", b"\x00" + entry[:64])
    put("program_cache", "long-length-repaired", b"\x03" + entry[:32] + struct.pack("<Q", 1 << 40) + entry[40:])
    # a real entry (PoCL's binary), checked against its own key and device
    real = [p for p in sorted(glob.glob(os.path.expanduser("~/.cache/mpcl/probe-fp32-*.bin")))
            if os.path.getsize(p) < 12000 and read(p)[:8] == b"MPCLBIN\x1a"]
    if real:
        put("program_cache", "pocl-probe-fp32", b"\x01" + read(real[0]))


# ------------------------------------------------------------------ tuning
def xgemm(vals):
    names = ["GEMMK", "KREG", "KWG", "KWI", "MDIMA", "MDIMC", "MWG", "NDIMB", "NDIMC", "NWG", "SA", "SB",
             "STRM", "STRN", "VWM", "VWN"]
    return dict(zip(names, vals))


def tuning_doc(clblast):
    return {
        "format": "mpcl-clblast-tuning", "version": 2, "device_hash": "%016x" % device_hash(FUZZ_CAPS),
        "clblast": clblast, "platform": FUZZ_CAPS[0], "device": FUZZ_CAPS[2], "driver": FUZZ_CAPS[4],
        "single": {
            "Xgemm": xgemm([0, 1, 16, 1, 1, 1, 32, 1, 1, 12, 0, 0, 0, 0, 16, 2]),
            "XGEMM_MIN_INDIRECT_SIZE": 19, "gflops": 15.2, "search_seconds": 75.5, "candidates": 9,
            "rejected": 0,
            "shapes": [{"m": 10, "n": 36864, "k": 25, "trans_a": 0, "trans_b": 0, "batch": 1, "calls": 1,
                        "tuned_ms": 0.83}],
            "tried": [{"params": [0, 1, 16, 1, 1, 1, 32, 1, 1, 12, 0, 0, 0, 0, 16, 2], "gflops": 15.2},
                      {"params": [0, 1, 32, 2, 8, 8, 64, 8, 8, 64, 1, 1, 0, 0, 4, 4], "rejected": "wrong results"}],
        },
        "half": {"own": True, "gflops": 3.1, "search_seconds": 12.0, "candidates": 4, "rejected": 1},
    }


def tuning_seeds():
    import subprocess
    try:
        clblast = subprocess.run(["pkg-config", "--modversion", "clblast"], capture_output=True, text=True,
                                 check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        clblast = "1.5.3"
    doc = tuning_doc(clblast)
    put("tuning", "single-half-own.json", json.dumps(doc, indent="\t"))
    single_only = {k: v for k, v in doc.items() if k != "half"}
    put("tuning", "single-only.json", json.dumps(single_only))
    put("tuning", "stale-version.json", json.dumps(dict(doc, version=1)))
    put("tuning", "bad-param.json", json.dumps(dict(doc, single=dict(doc["single"], Xgemm=xgemm([0, 1, 1.5] + [1] * 13)))))
    # files mpcl tune wrote (tune.c's writer), moved to the fuzz context's device
    for path in sorted(glob.glob(os.path.expanduser("~/.cache/mpcl/clblast-*.json")))[:2]:
        try:
            real = json.loads(read(path))
        except ValueError:
            continue
        real["device_hash"] = doc["device_hash"]
        put("tuning", "written-" + os.path.basename(path), json.dumps(real, indent="\t"))


# --------------------------------------------------------------------- cli
def argv(*args):
    return b"\0".join(a.encode() for a in args)


def cli_seeds():
    lines = {
        "train-default": argv("train"),
        "train-adam": argv("train", "--model", "seed-cnn", "--epochs", "3", "--batch", "64", "--lr", "0.001",
                           "--precision", "fp16-storage", "--save", "ck.safetensors", "--save-every", "100"),
        "train-sgd": argv("train", "--optimizer", "sgd", "--momentum", "0.9", "--nesterov", "--schedule", "step",
                          "--step-size", "500", "--gamma", "0.5", "--weight-decay", "5e-4", "--seed", "7"),
        "train-scale": argv("train", "--precision", "fp16", "--init-scale", "1024", "--clip", "1",
                            "--label-smoothing", "0.1", "--augment", "crop4,flip", "--limit", "1000",
                            "--test-limit", "500", "--log", "log.jsonl", "--quiet"),
        "train-static-scale": argv("train", "--loss-scale", "128", "--device", "cpu", "--no-tune", "--max-steps", "10"),
        "train-lm": argv("train", "--task", "lm", "--model", "gpt-tiny", "--text", "/usr/share/games/fortunes",
                         "--steps", "2000", "--context", "64", "--eval-every", "200", "--eval-windows", "0",
                         "--warmup", "100", "--resume", "ck.safetensors"),
        "train-dist": argv("train", "--dist-wire", "bf16", "--dist-bucket-mib", "0.5", "--dist-check", "10",
                           "--dist-timeout", "60", "--inject-error-step", "3", "--inject-inf-step", "2"),
        "train-usage": argv("train", "--epochs", "0", "extra"),
        "train-help": argv("train", "-h"),
        "bench-train": argv("bench", "train", "--model", "lenet5", "--synthetic", "--batch", "128", "--steps", "50",
                            "--warmup", "5", "--rounds", "3", "--profile-steps", "10", "--precision",
                            "fp32,fp16-storage", "--seed", "3", "--no-tune"),
        "bench-train-all": argv("bench", "train", "--precision", "all", "--data", "/usr/share/datasets/fashion-mnist"),
        "bench-gemm": argv("bench", "gemm", "--shapes", "256x256x256,64x10x1440:nt,10x10x64:tn", "--precision",
                           "single,half", "--tuning", "both", "--repeats", "5", "--min-repeat-ms", "50",
                           "--device", "0:0", "--seed", "1"),
        "bench-gemm-tt": argv("bench", "gemm", "--shapes", "7x5x3:tt", "--precision", "half", "--tuning", "tuned"),
    }
    for name, data in lines.items():
        put("cli", name, data)


def main():
    idx_seeds()
    text_seeds()
    spec_seeds()
    safetensors_seeds()
    checkpoint_seeds()
    program_cache_seeds()
    tuning_seeds()
    cli_seeds()
    put("image", "fashion-0.pgm", read(os.path.join(ROOT, "tests", "data", "fashion-0.pgm")))
    put("image", "p2-text.pgm", "P2\n# a comment\n3 2\n15\n0 5 10\n15 7 3\n")
    put("image", "p3-text.ppm", "P3\n2 1\n255\n255 0 0  0 255 0\n")
    put("image", "p6-binary.ppm", b"P6\n2 2\n255\n" + bytes(range(12)))
    put("image", "p5-16bit.pgm", b"P5 2 1 65535\n\x12\x34\xff\xff")
    print("fuzz corpus written to", CORPUS)


if __name__ == "__main__":
    main()
