"""Charts for the run report (Pillow only): :func:`scatter_png`.

Used for *runtime (s) vs observations per tile* and *planned memory (GiB) vs measured peak RSS
(GiB)* (with the y = x line: points above it used more than planned). Axes get "nice" ticks
(1, 2, 2.5, 5 × 10^k) with labels and light grid lines; zero points, one point, equal values and
non-finite values (dropped, and counted under the plot) never divide by zero; thousands of
points are drawn small and translucent so that dense clusters stay readable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runner.product._draw import (
    INK,
    MUTED,
    RGB,
    blank,
    draw_text,
    fmt_number,
    font,
    nice_range,
    png_bytes,
    text_size,
    ticks,
)

if TYPE_CHECKING:
    from PIL import ImageDraw

POINT: RGB = (31, 119, 180)  #: the points' colour
GRID: RGB = (230, 230, 230)  #: grid lines
IDENTITY: RGB = (214, 39, 40)  #: the y = x line
MAX_LABELS = 25  #: point labels are written when there are at most this many points

TITLE_PX, AXIS_PX, TICK_PX, NOTE_PX = 15, 12, 11, 11  #: font sizes, px


def _point_style(n: int) -> tuple[int, int]:
    """(radius px, alpha 0–255) for ``n`` points: big and opaque for a few, small and
    translucent for thousands."""
    if n <= 50:
        return 4, 230
    if n <= 500:
        return 3, 170
    if n <= 5000:
        return 2, 110
    return 1, 80


def scatter_png(
    x: Sequence[float],
    y: Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    identity_line: bool = False,
    labels: Sequence[str] | None = None,
    size: tuple[int, int] = (640, 420),
) -> bytes:
    """A scatter plot of ``(x[i], y[i])`` as PNG bytes of ``size`` (width, height) px.

    Put units in the axis labels (``"runtime (s)"``). ``identity_line`` draws y = x and gives
    both axes the same range, so the line is the diagonal. ``labels[i]`` (e.g. a tile id) is
    written next to its point when there are at most :data:`MAX_LABELS` points. Pairs with a
    NaN or infinite value are left out and counted in a note. ``x`` and ``y`` (and ``labels``)
    must have the same length (else :class:`ValueError`).
    """
    from PIL import Image, ImageDraw

    if len(x) != len(y) or (labels is not None and len(labels) != len(x)):
        raise ValueError(
            f"scatter_png: {len(x)} x, {len(y)} y"
            + ("" if labels is None else f", {len(labels)} labels")
            + " values: they must be as many"
        )
    pts = [
        (float(a), float(b), labels[i] if labels is not None else "")
        for i, (a, b) in enumerate(zip(x, y, strict=True))
        if math.isfinite(float(a)) and math.isfinite(float(b))
    ]
    dropped = len(x) - len(pts)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if identity_line and pts:
        both = xs + ys
        x_rng = y_rng = nice_range(min(both), max(both))
    else:
        x_rng = nice_range(min(xs, default=0.0), max(xs, default=1.0))
        y_rng = nice_range(min(ys, default=0.0), max(ys, default=1.0))
    x_ticks, y_ticks = ticks(*x_rng), ticks(*y_rng)
    x_lab = [fmt_number(v, x_rng[2]) for v in x_ticks]
    y_lab = [fmt_number(v, y_rng[2]) for v in y_ticks]

    width, height = size
    img, draw = blank((width, height))
    line_t = text_size("Hg", TITLE_PX)[1]
    line_a = text_size("Hg", AXIS_PX)[1]
    line_k = text_size("Hg", TICK_PX)[1]
    note = f"{dropped:,} point{'s' if dropped != 1 else ''} without a finite value not shown"
    left = 10 + line_a + 8 + max(text_size(t, TICK_PX)[0] for t in y_lab) + 8
    top = 10 + line_t + 14
    right = width - 18 - text_size(x_lab[-1], TICK_PX)[0] // 2
    bottom = height - (10 + line_a + 6 + line_k + 6 + (line_k + 4 if dropped else 0))
    if right - left < 40 or bottom - top < 40:
        raise ValueError(f"scatter_png: size {size} leaves no room for the plot")

    r, alpha = _point_style(len(pts))
    inset = r + 3  # the data area sits inside the frame, so no point is cut by it

    def px(vx: float, vy: float) -> tuple[float, float]:
        fx = (vx - x_rng[0]) / (x_rng[1] - x_rng[0])
        fy = (vy - y_rng[0]) / (y_rng[1] - y_rng[0])
        return (
            left + inset + fx * (right - left - 2 * inset),
            bottom - inset - fy * (bottom - top - 2 * inset),
        )

    # title and count
    draw_text(draw, (10, 10), title, TITLE_PX)
    n_text = f"n = {len(pts):,}"
    draw_text(draw, (width - 10, 10 + line_t), n_text, NOTE_PX, MUTED, "rd")
    # grid, ticks, tick labels
    for v, t in zip(x_ticks, x_lab, strict=True):
        gx = px(v, y_rng[0])[0]
        draw.line([gx, top, gx, bottom], fill=GRID)
        draw.line([gx, bottom, gx, bottom + 4], fill=INK)
        draw_text(draw, (gx, bottom + 6), t, TICK_PX, INK, "ma")
    for v, t in zip(y_ticks, y_lab, strict=True):
        gy = px(x_rng[0], v)[1]
        draw.line([left, gy, right, gy], fill=GRID)
        draw.line([left - 4, gy, left, gy], fill=INK)
        draw_text(draw, (left - 7, gy), t, TICK_PX, INK, "rm")
    draw.rectangle([left, top, right, bottom], outline=INK)
    # axis labels: x centred under the ticks, y rotated up the left edge
    draw_text(draw, ((left + right) / 2, bottom + 6 + line_k + 6), xlabel, AXIS_PX, INK, "ma")
    lw, lh = text_size(ylabel, AXIS_PX)
    tag = Image.new("L", (lw + 4, lh + 4), 0)
    ImageDraw.Draw(tag).text((2, 2), ylabel, fill=255, font=font(AXIS_PX))
    tag = tag.rotate(90, expand=True)
    img.paste(INK, (10, round((top + bottom) / 2 - tag.height / 2)), tag)
    if dropped:
        draw_text(draw, (10, height - 8), note, NOTE_PX, MUTED, "ld")
    # y = x, then the points (translucent over an RGBA layer), then their labels
    if identity_line:
        lo = max(x_rng[0], y_rng[0])
        hi = min(x_rng[1], y_rng[1])
        _dashed(draw, px(lo, lo), px(hi, hi), IDENTITY)
        draw_text(draw, (left + 8, top + 6), "- - y = x", NOTE_PX, IDENTITY, "la")
    if pts:
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        ld = ImageDraw.Draw(layer)
        for vx, vy, _ in pts:
            cx, cy = px(vx, vy)
            ld.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(*POINT, alpha))
        img.paste(layer, (0, 0), layer)
        if labels is not None and len(pts) <= MAX_LABELS:
            for vx, vy, text in pts:
                cx, cy = px(vx, vy)
                tw = text_size(text, NOTE_PX)[0]
                tx = min(cx + r + 3, right - tw - 2)
                draw_text(draw, (tx, max(cy - r - 1, top + 2)), text, NOTE_PX, MUTED, "ld")
    else:
        draw_text(draw, ((left + right) / 2, (top + bottom) / 2), "no data", AXIS_PX, MUTED, "mm")
    return png_bytes(img)


def _dashed(
    draw: ImageDraw.ImageDraw,
    a: tuple[float, float],
    b: tuple[float, float],
    colour: RGB,
    dash: float = 6,
) -> None:
    """A dashed line from ``a`` to ``b`` (``dash`` px on, ``dash`` px off), 2 px wide."""
    (x0, y0), (x1, y1) = a, b
    length = math.hypot(x1 - x0, y1 - y0)
    if length == 0:
        return
    k = 0.0
    while k < length:
        e = min(k + dash, length)
        draw.line(
            [
                x0 + (x1 - x0) * k / length,
                y0 + (y1 - y0) * k / length,
                x0 + (x1 - x0) * e / length,
                y0 + (y1 - y0) * e / length,
            ],
            fill=colour,
            width=2,
        )
        k += 2 * dash


__all__ = ["MAX_LABELS", "scatter_png"]
