"""Loss curves drawn with Pillow (matplotlib is not a dependency)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


def read_loss_csv(path: str | Path) -> tuple[list[str], list[list[float]]]:
    """Reads a loss CSV written by the training loop: `(header, rows)` with every value as float."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        rows = [[float(v) for v in row] for row in reader if row]
    return header, rows


def _smooth(values: list[float], window: int) -> list[float]:
    # Centred moving average: unlike an exponential one it does not lag behind the raw curve.
    half = max(0, window // 2)
    csum = [0.0]
    for v in values:
        csum.append(csum[-1] + v)
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - half), min(len(values), i + half + 1)
        out.append((csum[hi] - csum[lo]) / (hi - lo))
    return out


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def plot_loss(steps: list[float], losses: list[float], path: str | Path, *, title: str = "loss",
              size: tuple[int, int] = (800, 420)) -> Path:
    """Draws a loss curve (raw in light blue, smoothed in dark blue) to a PNG file.

    The y axis is logarithmic when the losses span more than a factor of 20, as early diffusion and
    reconstruction losses do, so the late part of the curve stays readable.

    Args:
        steps (`list[float]`): x values.
        losses (`list[float]`): y values, one per step.
        path (`str` or `Path`): the PNG file to write.
        title (`str`): drawn at the top.
        size (`tuple[int, int]`): image width and height in pixels.
    """
    w, h = size
    left, right, top, bottom = 70, 20, 30, 40
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((left, 8), title, fill="black", font=font)
    pts = [(s, v) for s, v in zip(steps, losses, strict=True) if math.isfinite(v)]
    if not pts:
        draw.text((w // 2 - 30, h // 2), "no data", fill="black", font=font)
        img.save(path)
        return Path(path)
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    log_y = min(ys) > 0 and max(ys) / min(ys) > 20
    ty = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    y_lo, y_hi = ty(min(ys)), ty(max(ys))
    if y_hi == y_lo:
        y_lo, y_hi = y_lo - 1, y_hi + 1
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_hi = x_lo + 1

    def px(x: float, y: float) -> tuple[float, float]:
        fx = left + (x - x_lo) / (x_hi - x_lo) * (w - left - right)
        fy = h - bottom - (ty(y) - y_lo) / (y_hi - y_lo) * (h - top - bottom)
        return fx, fy

    # Axes and ticks.
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for t in _nice_ticks(y_lo, y_hi):
        yv = 10 ** t if log_y else t
        _, fy = px(x_lo, yv)
        draw.line([left - 4, fy, left, fy], fill="black")
        draw.line([left + 1, fy, w - right - 1, fy], fill=(230, 230, 230))
        draw.text((4, fy - 6), f"{yv:.3g}", fill="black", font=font)
    for t in _nice_ticks(x_lo, x_hi):
        fx, _ = px(t, 10 ** y_lo if log_y else y_lo)
        draw.line([fx, h - bottom, fx, h - bottom + 4], fill="black")
        draw.text((fx - 10, h - bottom + 8), f"{t:g}", fill="black", font=font)
    draw.text((w // 2 - 15, h - 16), "step", fill="black", font=font)
    if log_y:
        draw.text((left + 4, top + 4), "log scale", fill=(120, 120, 120), font=font)

    raw = [px(x, y) for x, y in pts]
    smooth = [px(x, y) for x, y in zip(xs, _smooth(ys, len(ys) // 40), strict=True)]
    if len(raw) > 1:
        draw.line(raw, fill=(170, 200, 240), width=1)
        draw.line(smooth, fill=(20, 60, 160), width=2)
    else:
        x, y = raw[0]
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(20, 60, 160))
    img.save(path)
    return Path(path)
