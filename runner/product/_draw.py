"""Small Pillow helpers shared by the tile maps and the charts: fonts, text, ticks, PNG bytes."""

from __future__ import annotations

import io
import math
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]

INK: RGB = (33, 33, 33)  #: text and axes
MUTED: RGB = (105, 105, 105)  #: secondary text
WHITE: RGB = (255, 255, 255)


@cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` px (Pillow ≥ 10.1 with FreeType embeds a scalable one);
    without FreeType the fixed ~11 px bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # old Pillow, or no FreeType: the bitmap font
        return ImageFont.load_default()


def text_size(text: str, size: int) -> tuple[int, int]:
    """(width, height) in px of ``text`` in :func:`font` ``size`` (height: ascent + descent)."""
    f = font(size)
    left, _, right, _ = f.getbbox(text)
    asc, desc = f.getmetrics() if hasattr(f, "getmetrics") else (size, 0)
    return math.ceil(right - min(left, 0)), asc + desc


def draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    size: int,
    fill: RGB = INK,
    anchor: str = "la",
) -> None:
    """Text at ``xy``; ``anchor`` as Pillow's (``la`` left-ascender, ``mm`` middle, ``ra`` …)."""
    draw.text(xy, text, font=font(size), fill=fill, anchor=anchor)


def ink_on(fill: RGB) -> RGB:
    """Black or white, whichever reads better on ``fill`` (relative luminance)."""
    r, g, b = fill
    return INK if 0.299 * r + 0.587 * g + 0.114 * b > 140 else WHITE


def nice_step(span: float, n: int = 5) -> float:
    """A 1, 2, 2.5 or 5 × 10^k step giving about ``n`` intervals over ``span`` (> 0)."""
    raw = span / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * mag * (1 + 1e-9):
            return m * mag
    return 10.0 * mag


def nice_range(lo: float, hi: float, n: int = 5) -> tuple[float, float, float]:
    """(start, stop, step): ``[lo, hi]`` widened to whole steps; a range narrower than 1e-6 of its
    values (``lo == hi``) is first widened by ±10 % around its value (±1 around 0), so nothing
    ever divides by zero and no two tick labels read the same."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo <= 1e-6 * max(abs(lo), abs(hi)):
        pad = abs(lo) * 0.1 if lo != 0 else 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, n)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    return start, stop, step


def ticks(start: float, stop: float, step: float) -> list[float]:
    """The multiples of ``step`` from ``start`` to ``stop`` (inclusive)."""
    k = round((stop - start) / step)
    return [start + i * step for i in range(k + 1)]


def fmt_number(v: float, step: float | None = None) -> str:
    """A tick label with as many decimals as ``step`` needs (0.25 → ``0.75``, 2.5 → ``7.5``,
    100 → ``300``); without a step 4 significant digits; ``1.5e+07`` for huge or tiny values."""
    if not math.isfinite(v):
        return str(v)
    if abs(v) < 1e-12 * (abs(step) if step else 1.0) or v == 0:
        return "0"
    if abs(v) >= 1e6 or (abs(v) < 1e-3 and (step is None or abs(step) < 1e-3)):
        return f"{v:.3g}"
    if step is None:
        return f"{v:.4g}"
    decimals = 0
    while decimals < 6:
        scaled = abs(step) * 10.0**decimals
        if abs(scaled - round(scaled)) <= 1e-6 * max(1.0, scaled):
            break
        decimals += 1
    return f"{v:.{decimals}f}"


def png_bytes(img: Image.Image) -> bytes:
    """``img`` as PNG bytes (optimised; deterministic: no time stamp or metadata)."""
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def blank(size: tuple[int, int], colour: RGB = WHITE) -> Any:
    """A new RGB image and its ImageDraw."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, colour)
    return img, ImageDraw.Draw(img)
