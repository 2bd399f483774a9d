#!/usr/bin/env python3
"""Plots of mpcl's training logs and precision reports, as PNG files.

usage:
  plot.py train LOG [LOG ...] -o FILE.png [--labels A,B,...] [--title TEXT]
      LOG: the JSON-lines log of `mpcl train --log LOG`. Four panels against
      the step, one colour per run (its label: --labels, else the file's
      stem): (a) the training loss, per step and its moving average over 20
      steps; (b) the test accuracy at the end of each epoch, or the
      validation loss for a language model; (c) the loss scale (log2 axis);
      (d) the cumulative count of skipped steps.
  plot.py precision REPORT.json -o FILE.png [--roles ROLE,...]
                    [--max-tensors N] [--title TEXT]
      REPORT.json: the output of `mpcl precision --json` (schema 1). One row
      per tensor (the first N in file order, default 40; roles weight,
      activation, activation_gradient, weight_gradient, default all): the
      histogram of the base-2 exponents floor(log2|x|), for a gradient also
      at the loss scale (outline), over fp16's normal and subnormal ranges,
      where fp16 overflows and where it flushes to zero.

On success prints "plot: wrote FILE.png (W x H pixels)". Exit status 0; 1 for
an input that is missing, unreadable or malformed, or an output that cannot be
written; 2 for a usage error; 3 when matplotlib is missing (Debian:
apt-get install python3-matplotlib). A tool: the engine never needs Python.
"""
import argparse
import json
import math
import pathlib
import re
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
    import numpy as np
except ImportError:
    plt = None

NO_MATPLOTLIB = ("plot: needs matplotlib: on Debian, apt-get install python3-matplotlib "
                 "(or pip install matplotlib)")
DPI = 100
MA_WINDOW = 20
STYLES = ("-", "--", "-.", ":")  # per run, so that runs that coincide stay visible
ROLES = ("weight", "activation", "activation_gradient", "weight_gradient")
ROLE_COLOURS = {"weight": "#3f6fb0", "activation": "#3f9a4a",
                "activation_gradient": "#e0861a", "weight_gradient": "#b0407f"}
# floor(log2|x|) of fp16: normal -14..15, subnormal -24..-15; bf16 -133..127
FP16_NORMAL, FP16_SUBNORMAL, FP16_OVERFLOW = -14, -24, 16
BF16_LO, BF16_HI = -133, 127
BANDS = (  # (from, to, colour, legend) on the exponent axis, bin e = [e, e + 1)
    (FP16_NORMAL, FP16_OVERFLOW, "#d9e7f5", "fp16 normal (2^-14..2^15)"),
    (FP16_SUBNORMAL, FP16_NORMAL, "#edf3fa", "fp16 subnormal (2^-24..2^-15)"),
    (FP16_OVERFLOW, math.inf, "#f7d4d4", "fp16 overflow (>= 2^16)"),
    (-math.inf, FP16_SUBNORMAL, "#e3e3e3", "fp16 flushes to zero (< 2^-24)"),
)


class InputError(Exception):
    """A message that names the input (or output) file: exit status 1."""


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None


# printf's "nan", "inf", "-nan" where a JSON writer has null
NONFINITE = re.compile(r"(?<=[:,\[])(\s*)[-+]?(?:nan|inf(?:inity)?)\b", re.IGNORECASE)


def json_line(path, lineno, text):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        try:
            return json.loads(NONFINITE.sub(r"\1null", text))
        except json.JSONDecodeError:
            raise InputError(f"{path}:{lineno}: not a JSON line ({e.msg} at column {e.colno})") \
                from None


def num(v):
    """A JSON number as a float; anything else (null, a string) as NaN."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


# ---- train -----------------------------------------------------------------

def read_log(path, label):
    """The steps and evaluations of one `mpcl train --log` file."""
    run = {"label": label, "step": [], "loss": [], "scale": [], "skipped": [],
           "eval_step": [], "accuracy": [], "val_loss": []}
    last_step = total_steps = 0
    for lineno, text in enumerate(read_text(path).splitlines(), 1):
        rec = json_line(path, lineno, text) if text.strip() else None
        if not isinstance(rec, dict):
            continue
        if rec.get("event") == "epoch" or "eval_step" in rec:
            steps = num(rec.get("steps"))
            total_steps += steps if steps > 0 else 0
            at = num(rec.get("eval_step", last_step or total_steps))
            val = next((rec[k] for k in ("val_loss", "valid_loss", "test_loss") if k in rec), None)
            run["eval_step"].append(at)
            run["accuracy"].append(100 * num(rec.get("test_accuracy")))
            run["val_loss"].append(num(val))
        elif "event" not in rec and "step" in rec:
            last_step = num(rec["step"])
            run["step"].append(last_step)
            run["loss"].append(num(rec.get("loss")))
            run["scale"].append(num(rec.get("loss_scale")))
            run["skipped"].append(rec.get("skipped") is True)
    return run


def moving_average(y, window):
    """The trailing mean over `window` values, NaNs left out."""
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(y)
    sums = np.concatenate(([0.0], np.cumsum(np.where(ok, y, 0.0))))
    counts = np.concatenate(([0], np.cumsum(ok)))
    end = np.arange(1, len(y) + 1)
    start = np.maximum(end - window, 0)
    n = counts[end] - counts[start]
    return np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)


def has_data(values):
    return bool(np.isfinite(np.asarray(values, dtype=float)).any())


def panel_loss(ax, runs):
    for i, r in enumerate(runs):
        if has_data(r["loss"]):
            ax.plot(r["step"], r["loss"], color=f"C{i}", lw=0.6, alpha=0.4)
            ax.plot(r["step"], moving_average(r["loss"], MA_WINDOW), color=f"C{i}", lw=1.8,
                    ls=STYLES[i % 4], label=r["label"])
    ax.set(title=f"(a) training loss (thin: per step, thick: mean of {MA_WINDOW})",
           ylabel="loss (nats)")


def panel_eval(ax, runs):
    key = "accuracy" if any(has_data(r["accuracy"]) for r in runs) else "val_loss"
    for i, r in enumerate(runs):
        if has_data(r[key]):
            ax.plot(r["eval_step"], r[key], marker="o", ls=STYLES[i % 4], color=f"C{i}", ms=5,
                    label=r["label"])
    if key == "accuracy":
        ax.set(title="(b) test accuracy at the end of each epoch", ylabel="accuracy (%)")
    else:
        ax.set(title="(b) validation loss", ylabel="loss (nats)")


def panel_scale(ax, runs):
    for i, r in enumerate(runs):
        scale = np.asarray(r["scale"], dtype=float)
        scale[~(scale > 0)] = np.nan
        if has_data(scale):
            ax.step(r["step"], scale, where="post", color=f"C{i}", lw=1.5, ls=STYLES[i % 4],
                    label=r["label"])
    ax.set_yscale("log", base=2)
    ax.set(title="(c) loss scale", ylabel="loss scale (log2 axis)", xlabel="step")


def panel_skipped(ax, runs):
    for i, r in enumerate(runs):
        if r["step"]:
            ax.step(r["step"], np.cumsum(r["skipped"]), where="post", color=f"C{i}", lw=1.5,
                    ls=STYLES[i % 4], label=f"{r['label']} ({sum(r['skipped'])})")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title="(d) skipped steps (overflow in the gradients)", ylabel="skipped steps (cumulative)",
           xlabel="step")


def plot_train(args):
    labels = args.labels or [pathlib.Path(p).stem for p in args.logs]
    runs = [read_log(p, lab) for p, lab in zip(args.logs, labels)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), dpi=DPI, sharex=True, layout="constrained")
    for ax, panel in zip(axes.flat, (panel_loss, panel_eval, panel_scale, panel_skipped)):
        panel(ax, runs)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data in these logs", transform=ax.transAxes, ha="center",
                    color="grey")
    fig.suptitle(args.title or "mpcl train: " + ", ".join(labels))
    return fig


# ---- precision -------------------------------------------------------------

def histogram(path, tensor, obj):
    """(edges, counts) of an {"lo": L, "counts": [...]} object, or None if empty."""
    if obj is None:
        return None
    try:
        lo, counts = int(obj["lo"]), np.asarray(obj["counts"], dtype=float)
    except (TypeError, KeyError, ValueError):
        raise InputError(f"{path}: tensor {tensor}: exponents are not {{\"lo\": N, \"counts\": [...]}}") \
            from None
    if counts.ndim != 1 or not counts.size or not counts.sum() > 0:
        return None
    return np.arange(lo, lo + counts.size + 1), counts


def read_report(path, roles, max_tensors):
    try:
        report = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None
    if not isinstance(report, dict) or not isinstance(report.get("tensors"), list):
        raise InputError(f"{path}: not an mpcl precision report (no \"tensors\" list)")
    if report.get("schema", 1) != 1:
        raise InputError(f"{path}: schema {report.get('schema')!r}; this tool reads schema 1")
    tensors = [t for t in report["tensors"] if isinstance(t, dict) and t.get("role") in roles]
    if not tensors:
        raise InputError(f"{path}: no tensors with the roles {', '.join(roles)}")
    if len(tensors) > max_tensors:
        print(f"plot: showing the first {max_tensors} of {len(tensors)} tensors (--max-tensors)",
              file=sys.stderr)
    for t in tensors[:max_tensors]:
        name = t.setdefault("name", "?")
        t["hist"] = histogram(path, name, t.get("exponents"))
        t["scaled_hist"] = histogram(path, name, (t.get("scaled") or {}).get("exponents"))
    return report, tensors[:max_tensors]


def percent(x):
    x = 100 * num(x)
    return "?" if math.isnan(x) else "0" if x == 0 else "<0.1" if x < 0.1 else f"{x:.1f}"


def short(name, width=36):
    name = str(name)
    return name if len(name) <= width else "\u2026" + name[1 - width:]


def fp16_note(t):
    """'zero / subnormal / overflow' in fp16, in percent, unscaled then scaled."""
    def fracs(obj):
        obj = obj if isinstance(obj, dict) else {}
        return "/".join(percent(obj.get(k)) for k in ("zero", "subnormal", "overflow"))
    note = fracs(t.get("fp16"))
    if isinstance(t.get("scaled"), dict):
        note += "  scaled " + fracs(t["scaled"].get("fp16"))
    if num(t.get("nonfinite")) > 0:
        note += f"  {t['nonfinite']} non-finite"
    return note


def exponent_range(tensors):
    hists = [h for t in tensors for h in (t["hist"], t["scaled_hist"]) if h]
    lo = min([h[0][0] for h in hists] + [FP16_SUBNORMAL - 2])
    hi = max([h[0][-1] for h in hists] + [FP16_OVERFLOW + 2])
    return lo - 1, hi + 1


def draw_bands(ax, xlim):
    for a, b, colour, _ in BANDS:
        ax.axvspan(max(a, xlim[0]), min(b, xlim[1]), color=colour, lw=0, zorder=0)
    for edge in (BF16_LO, BF16_HI + 1):
        if xlim[0] < edge < xlim[1]:
            ax.axvline(edge, color="black", ls=":", lw=1)


def draw_rows(ax, tensors):
    for row, t in enumerate(tensors):
        base = -row - 0.45
        colour = ROLE_COLOURS.get(t.get("role"), "grey")
        peak = max([h[1].max() for h in (t["hist"], t["scaled_hist"]) if h] or [1])
        if t["hist"]:
            ax.stairs(base + 0.85 * t["hist"][1] / peak, t["hist"][0], baseline=base, fill=True,
                      color=colour, alpha=0.85)
        else:
            ax.annotate("all zeros", (0.01, base + 0.3), xycoords=("axes fraction", "data"),
                        fontsize=7, va="center", color="dimgrey")
        if t["scaled_hist"]:
            ax.stairs(base + 0.85 * t["scaled_hist"][1] / peak, t["scaled_hist"][0],
                      baseline=base, color="black", lw=1)
        ax.axhline(base, color="grey", lw=0.4, alpha=0.6)
        ax.annotate(fp16_note(t), (1.01, base + 0.3), xycoords=("axes fraction", "data"),
                    fontsize=7, va="center", family="monospace")


def legend_handles(tensors, scale, xlim):
    handles = [Patch(color=c, label=lab) for a, b, c, lab in BANDS]
    if xlim[0] < BF16_LO or xlim[1] > BF16_HI + 1:
        handles.append(Line2D([], [], color="black", ls=":", label="bf16's range (2^-133..2^127)"))
    else:
        handles.append(Patch(fill=False, ec="none", label="bf16: 2^-133..2^127, all of this axis"))
    for role in ROLES:
        if any(t.get("role") == role for t in tensors):
            handles.append(Patch(color=ROLE_COLOURS[role], label=role.replace("_", " ")))
    if any(t["scaled_hist"] for t in tensors):
        handles.append(Patch(fill=False, ec="black", label=f"gradient \u00d7 loss scale {scale:g}"))
    return handles


def advice_text(report):
    adv = report.get("advice") if isinstance(report.get("advice"), dict) else {}
    head = (f"recommend: {adv.get('recommend', '?')}   loss scale that fits fp16: "
            f"{adv.get('loss_scale_min', '?')}..{adv.get('loss_scale_max', '?')}")
    if "dynamic_start" in adv:
        inside = {True: "inside", False: "outside"}.get(adv.get("start_inside"), "?")
        head += f"   (dynamic start {adv['dynamic_start']}: {inside})"
    lines = [str(s) for s in adv.get("lines", []) if s][:5]
    return "\n".join([head] + [s if len(s) <= 160 else s[:157] + "..." for s in lines])



def model_summary(spec):
    """A spec's text in one short line: its layer kinds, "conv2d > relu > ..."."""
    kinds = [line.split()[0] for line in str(spec).splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "input"))]
    text = " > ".join(kinds) or "?"
    return text if len(text) <= 90 else text[:87] + "..."

def plot_precision(args):
    report, tensors = read_report(args.report, args.roles, args.max_tensors)
    scale = num(report.get("loss_scale"))
    advice = advice_text(report)
    top, bottom = 1.5, 0.8 + 0.15 * advice.count("\n")  # inches: title + legend; axis + advice
    height = round((top + bottom + max(3.0, 0.32 * len(tensors))) * DPI) / DPI
    fig, ax = plt.subplots(figsize=(11, height), dpi=DPI)
    fig.subplots_adjust(left=0.2, right=0.72, top=1 - top / height, bottom=bottom / height)
    xlim = exponent_range(tensors)
    draw_bands(ax, xlim)
    draw_rows(ax, tensors)
    ax.set(xlim=xlim, ylim=(-len(tensors) + 0.5, 0.5),
           xlabel="base-2 exponent e = floor(log2 |x|)  (bin e: 2^e <= |x| < 2^(e+1))")
    ax.set_yticks([-r - 0.15 for r in range(len(tensors))], [short(t["name"]) for t in tensors],
                  fontsize=8)
    ax.tick_params(axis="y", length=0)
    ax.annotate("fp16 % zero/subnormal/overflow", (1.01, 1.005), xycoords="axes fraction",
                fontsize=7, va="bottom", family="monospace")
    ax.grid(True, axis="x", alpha=0.3)
    fig.legend(handles=legend_handles(tensors, scale, xlim), loc="upper center", ncol=4,
               fontsize="small", bbox_to_anchor=(0.5, 1 - 0.55 / height), frameon=False)
    samples = f"{report.get('samples', '?')} samples, loss scale {scale:g}"
    fig.suptitle(args.title or f"mpcl precision: {model_summary(report.get('model', ''))}",
                 y=1 - 0.1 / height, va="top")
    fig.text(0.5, 1 - 0.38 / height, f"{report.get('source', '')}  on {report.get('device', '?')}, "
             f"{samples}", ha="center", va="top", fontsize=9, color="dimgrey")
    fig.text(0.02, 0.15 / height, advice, fontsize=8, va="bottom",
             bbox={"boxstyle": "round", "fc": "#fbfbf3", "ec": "#cccccc"})
    return fig


# ---- main ------------------------------------------------------------------

def role_list(text):
    roles = [r for r in text.split(",") if r]
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise argparse.ArgumentTypeError(f"roles are {','.join(ROLES)}; not {','.join(bad) or text!r}")
    return roles


def positive(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="plot.py", description=__doc__.split("\n")[0],
                                epilog="Details: see the docstring of tools/plot.py.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="plot `mpcl train --log` files")
    t.add_argument("logs", nargs="+", metavar="LOG")
    t.add_argument("--labels", help="comma-separated labels, one per LOG (default: file stems)")
    r = sub.add_parser("precision", help="plot an `mpcl precision --json` report")
    r.add_argument("report", metavar="REPORT.json")
    r.add_argument("--roles", type=role_list, default=list(ROLES),
                   help=f"comma-separated roles to show (default: {','.join(ROLES)})")
    r.add_argument("--max-tensors", type=positive, default=40,
                   help="show the first N tensors in file order (default: 40)")
    for s in (t, r):
        s.add_argument("-o", "--output", required=True, metavar="FILE.png")
        s.add_argument("--title", help="the figure's title")
    args = p.parse_args(argv)
    if args.command == "train" and args.labels:
        args.labels = args.labels.split(",")
        if len(args.labels) != len(args.logs):
            t.error(f"--labels has {len(args.labels)} labels for {len(args.logs)} logs")
    return args


def main(argv):
    args = parse_args(argv)
    if plt is None:
        print(NO_MATPLOTLIB, file=sys.stderr)
        return 3
    try:
        fig = (plot_train if args.command == "train" else plot_precision)(args)
        try:
            fig.savefig(args.output, dpi=DPI, format="png")
        except OSError as e:
            raise InputError(f"{args.output}: cannot write: {e.strerror or e}") from None
        width, height = fig.canvas.get_width_height()
    except InputError as e:
        print(f"plot: {e}", file=sys.stderr)
        return 1
    print(f"plot: wrote {args.output} ({width} x {height} pixels)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
