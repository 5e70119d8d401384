"""Maps of grid tiles (Pillow only): a plan's ``tiles.png`` and a batch's status map.

One renderer, :func:`render_tile_map`: the tiles in the grid CRS, north up, each filled with its
colour and bordered, over the region's outline (grey land under the tiles, the coastline drawn
over them); a title and a subtitle above; on the right a legend — a key of categorical colours
with counts, or a colour bar with its minimum and maximum — and the tile ids written inside the
tiles when a tile is wide enough for them (≥ 46 px: a 2 × 2 or 6 × 5 tile plan, not a continent).
The whole image fits in ``max_px`` × ``max_px`` whatever the region (Africa's 3456 tiles: ~10 px
each); one tile is drawn at most :data:`MAX_TILE_PX` wide.

Faces: :func:`status_map_png` (done / failed / empty / pending / running / not planned) and
:func:`plan_map` (observations per tile, viridis: ``tiles.png``, written by
:func:`runner.planner.report.tiles_png`); both as images (for tests and composition) too.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.product._draw import (
    INK,
    MUTED,
    RGB,
    WHITE,
    blank,
    draw_text,
    fmt_number,
    ink_on,
    nice_step,
    png_bytes,
    text_size,
)

if TYPE_CHECKING:
    from odc.geo.geom import Geometry
    from PIL import Image

    from runner.planner.grid import TileGrid, TileId
    from runner.planner.plan import Plan

#: The colour of each tile state of a batch, in legend order.
STATE_COLOURS: dict[str, RGB] = {
    "done": (44, 160, 44),
    "failed": (214, 39, 40),
    "running": (31, 119, 180),
    "pending": (255, 187, 60),
    "empty": (178, 178, 178),
    "not planned": (246, 246, 246),
}
#: A state that is none of :data:`STATE_COLOURS` (drawn and listed under its own name).
OTHER_COLOUR: RGB = (148, 103, 189)

#: The widest a tile is drawn, px (a 1-tile plan is not a 1000 px square).
MAX_TILE_PX = 160

LAND: RGB = (226, 226, 222)  #: the region's fill under the tiles
COAST: RGB = (20, 20, 20)  #: the region's outline over the tiles
BORDER: RGB = (60, 60, 60)  #: tile borders

_VIRIDIS = (  # matplotlib's viridis at 0, 0.1, …, 1
    (68, 1, 84),
    (72, 36, 117),
    (65, 68, 135),
    (53, 95, 141),
    (42, 120, 142),
    (33, 145, 140),
    (34, 168, 132),
    (68, 191, 112),
    (122, 209, 81),
    (189, 223, 38),
    (253, 231, 37),
)

TITLE_PX, SUB_PX, LEGEND_PX = 17, 12, 13  #: font sizes, px
PAD = 12  #: margin, px


def viridis(v: float) -> RGB:
    """``v`` in [0, 1] (clamped; NaN → 0) on matplotlib's viridis (11 stops, linear between)."""
    v = 0.0 if not math.isfinite(v) else min(max(v, 0.0), 1.0)
    x = v * (len(_VIRIDIS) - 1)
    i = min(int(x), len(_VIRIDIS) - 2)
    f = x - i
    a, b = _VIRIDIS[i], _VIRIDIS[i + 1]
    return (
        round(a[0] + (b[0] - a[0]) * f),
        round(a[1] + (b[1] - a[1]) * f),
        round(a[2] + (b[2] - a[2]) * f),
    )


@dataclass(frozen=True)
class Category:
    """One legend entry: a swatch, its label and (optionally) how many tiles have it."""

    label: str
    colour: RGB
    count: int | None = None


@dataclass(frozen=True)
class ColourBar:
    """A continuous legend: ``ramp`` over [0, 1] labelled ``vmin`` (bottom) to ``vmax`` (top),
    with ``extra`` categories (e.g. "empty") listed under it."""

    label: str
    vmin: float
    vmax: float
    ramp: Callable[[float], RGB] = viridis
    extra: Sequence[Category] = field(default_factory=tuple)

    def colour(self, v: float) -> RGB:
        """The colour of value ``v`` (the top colour when ``vmin == vmax``)."""
        span = self.vmax - self.vmin
        return self.ramp(1.0 if span <= 0 else (v - self.vmin) / span)


@dataclass(frozen=True)
class _Frame:
    """Where the map's extent lands in the image: ``ppt`` px per tile, the extent's top-left
    corner (``fx0`` tiles east and ``fy1`` tiles north of the grid origin) at pixel (ox, oy)."""

    fx0: float
    fy1: float
    width: float  #: extent, in tiles
    height: float
    ppt: float  #: pixels per tile
    ox: int
    oy: int

    def px(self, fx: float, fy: float) -> tuple[float, float]:
        """The pixel of a point given in tile units from the grid origin."""
        return self.ox + (fx - self.fx0) * self.ppt, self.oy + (self.fy1 - fy) * self.ppt

    def tile_box(self, ix: int, iy: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the tile's first pixel and the first pixel past it."""
        x0, y0 = self.px(ix, iy + 1)
        x1, y1 = self.px(ix + 1, iy)
        return round(x0), round(y0), round(x1), round(y1)


def render_tile_map(
    grid: TileGrid,
    tiles: Sequence[TileId],
    colours: Sequence[RGB],
    *,
    legend: Sequence[Category] | ColourBar,
    title: str,
    subtitle: str = "",
    outline: Geometry | None = None,
    details: Sequence[str] | None = None,
    legend_title: str = "",
    max_px: int = 1000,
) -> Image.Image:
    """The map (see the module): ``tiles[i]`` filled with ``colours[i]``; ``details[i]`` (e.g.
    ``"87 obs"``) written under the tile's id when there is room; ``legend_title`` heads a
    categorical legend (a colour bar has its own label). ``outline`` (any CRS) is drawn
    under and over the tiles and widens the extent to its own. At most ``max_px`` px a side.

    ``img.info["tile_boxes"]`` maps each tile to its (x0, y0, x1, y1) pixels (x1, y1: its east
    and south borders) and ``img.info["tile_px"]`` is the tile edge in px (not saved in a PNG)."""
    from odc.geo import CRS

    region = None
    if outline is not None:
        region = outline.to_crs(CRS(grid.crs)).geom
        if region.is_empty:
            region = None
    legend_w, legend_h = _legend_size(legend, legend_title)
    head_h = (
        PAD
        + text_size("Hg", TITLE_PX)[1]
        + (4 + text_size("Hg", SUB_PX)[1] if subtitle else 0)
        + PAD
    )
    frame = _frame(grid, tiles, region, max_px - legend_w - 4 * PAD, max_px - head_h - PAD, head_h)
    map_w, map_h = math.ceil(frame.width * frame.ppt) + 1, math.ceil(frame.height * frame.ppt) + 1
    title_w = max(text_size(title, TITLE_PX)[0], text_size(subtitle, SUB_PX)[0] if subtitle else 0)
    width = min(max_px, max(PAD + map_w + 2 * PAD + legend_w + PAD, title_w + 2 * PAD))
    height = min(max_px, head_h + max(map_h, legend_h) + PAD)
    img, draw = blank((width, height))
    draw_text(draw, (PAD, PAD), _fit(title, TITLE_PX, width - 2 * PAD), TITLE_PX)
    if subtitle:
        y = PAD + text_size("Hg", TITLE_PX)[1] + 4
        draw_text(draw, (PAD, y), _fit(subtitle, SUB_PX, width - 2 * PAD), SUB_PX, fill=MUTED)
    rings = _rings(grid, frame, region) if region is not None else []
    for ring, hole in rings:  # land under the tiles
        draw.polygon(ring, fill=WHITE if hole else LAND)
    _draw_tiles(draw, frame, tiles, colours)
    for ring, _ in rings:  # the coastline over the tiles: a white halo under a dark line
        draw.line([*ring, ring[0]], fill=WHITE, width=3, joint="curve")
    for ring, _ in rings:
        draw.line([*ring, ring[0]], fill=COAST, width=1)
    _draw_ids(draw, frame, tiles, colours, details)
    if not tiles:
        draw_text(draw, (PAD + map_w / 2, head_h + map_h / 2), "no tiles", LEGEND_PX, MUTED, "mm")
    _draw_legend(draw, legend, legend_title, (PAD + map_w + 2 * PAD, head_h))
    img.info["tile_boxes"] = {t: frame.tile_box(t.ix, t.iy) for t in tiles}
    img.info["tile_px"] = frame.ppt
    return img


def _frame(
    grid: TileGrid,
    tiles: Sequence[TileId],
    region: Any,
    avail_w: int,
    avail_h: int,
    top: int,
) -> _Frame:
    """The extent of the tiles and the region (plus 2 %), scaled into ``avail_w`` × ``avail_h``;
    whole pixels per tile from 3 px up, so all tiles are drawn the same size."""
    xs = [float(t.ix) for t in tiles] + [t.ix + 1.0 for t in tiles]
    ys = [float(t.iy) for t in tiles] + [t.iy + 1.0 for t in tiles]
    if region is not None:
        left, bottom, right, top_y = region.bounds
        (ox, oy), size = grid.origin, grid.tile_size
        xs += [(left - ox) / size, (right - ox) / size]
        ys += [(bottom - oy) / size, (top_y - oy) / size]
    if not xs:
        xs, ys = [0.0, 1.0], [0.0, 1.0]
    margin = 0.02 * max(max(xs) - min(xs), max(ys) - min(ys))
    fx0, fx1, fy0, fy1 = min(xs) - margin, max(xs) + margin, min(ys) - margin, max(ys) + margin
    ppt = min(max(avail_w, 16) / (fx1 - fx0), max(avail_h, 16) / (fy1 - fy0), MAX_TILE_PX)
    if ppt >= 3:
        ppt = math.floor(ppt)
    return _Frame(fx0, fy1, fx1 - fx0, fy1 - fy0, ppt, PAD, top)


def _rings(
    grid: TileGrid, frame: _Frame, region: Any
) -> list[tuple[list[tuple[float, float]], bool]]:
    """The region's rings in image pixels (simplified to half a pixel), with "is a hole"."""
    import shapely

    scale = frame.ppt / grid.tile_size
    x0 = grid.origin[0] + frame.fx0 * grid.tile_size
    y1 = grid.origin[1] + frame.fy1 * grid.tile_size
    simple = shapely.simplify(region, 0.5 / scale)
    out = []
    for poly in shapely.get_parts(simple):
        if poly.geom_type != "Polygon":
            continue
        for k, ring in enumerate((poly.exterior, *poly.interiors)):
            pts = [
                (frame.ox + (x - x0) * scale, frame.oy + (y1 - y) * scale) for x, y in ring.coords
            ]
            if len(pts) >= 3:
                out.append((pts, k > 0))
    return out


def _draw_tiles(draw: Any, frame: _Frame, tiles: Sequence[TileId], colours: Sequence[RGB]) -> None:
    """Fills, with 1 px borders shared between neighbours (none below 4 px a tile)."""
    border = frame.ppt >= 4
    for t, c in zip(tiles, colours, strict=True):
        x0, y0, x1, y1 = frame.tile_box(t.ix, t.iy)
        if border:
            draw.rectangle([x0, y0, x1, y1], fill=c, outline=BORDER)
        else:
            draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], fill=c)


def _draw_ids(
    draw: Any,
    frame: _Frame,
    tiles: Sequence[TileId],
    colours: Sequence[RGB],
    details: Sequence[str] | None,
) -> None:
    """Each tile's id in its middle (and its detail under it) when the tile is wide enough."""
    size = _id_font_size(frame.ppt)
    if size is None:
        return
    line_h = text_size("Hg", size)[1]
    for i, (t, c) in enumerate(zip(tiles, colours, strict=True)):
        x0, y0, x1, y1 = frame.tile_box(t.ix, t.iy)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        detail = details[i] if details else ""
        two = (
            bool(detail)
            and frame.ppt >= 2 * line_h + 8
            and text_size(detail, size)[0] <= frame.ppt - 6
        )
        ink = ink_on(c)
        if two:
            draw_text(draw, (cx, cy - 1), str(t), size, ink, "md")
            draw_text(draw, (cx, cy + 1), detail, size, ink, "ma")
        else:
            draw_text(draw, (cx, cy), str(t), size, ink, "mm")


def _id_font_size(ppt: float) -> int | None:
    """The largest font (9–14 px) whose ``x000y000`` fits in a tile with 3 px either side."""
    for size in (14, 13, 12, 11, 10, 9):
        w, h = text_size("x000y000", size)
        if w <= ppt - 6 and h <= ppt - 4:
            return size
    return None


def _fit(text: str, size: int, width: float) -> str:
    """``text`` cut (with …) to ``width`` px."""
    if text_size(text, size)[0] <= width:
        return text
    while text and text_size(text + "…", size)[0] > width:
        text = text[:-1]
    return text + "…"


_SWATCH, _ROW = 14, 20  # legend swatch edge and row height, px
_BAR_W, _BAR_H = 18, 200  # colour bar, px


def _entry_text(c: Category) -> tuple[str, str]:
    return c.label, "" if c.count is None else f"{c.count:,}"


def _legend_size(legend: Sequence[Category] | ColourBar, heading: str) -> tuple[int, int]:
    """(width, height) of the legend panel, px."""
    cats = list(legend.extra) if isinstance(legend, ColourBar) else list(legend)
    count_w = max((text_size(_entry_text(c)[1], LEGEND_PX)[0] for c in cats), default=0)
    label_w = max((text_size(c.label, LEGEND_PX)[0] for c in cats), default=0)
    w = _SWATCH + 8 + label_w + (12 + count_w if count_w else 0)
    h = len(cats) * _ROW
    if isinstance(legend, ColourBar):
        heading = legend.label
        nums = max(text_size(label, LEGEND_PX)[0] for _, label in _bar_ticks(legend))
        w = max(w, _BAR_W + 8 + nums)
        h += _BAR_H + 12
    if heading:
        w = max(w, text_size(heading, LEGEND_PX)[0])
        h += _ROW
    return max(w, 120), h


def _bar_ticks(bar: ColourBar) -> list[tuple[float, str]]:
    """(fraction up the bar, label): the minimum, the maximum, and the round values between
    them that keep 18 px clear of both (whole numbers when both ends are; one label when
    ``vmin == vmax``)."""
    lo, hi = bar.vmin, bar.vmax
    if not hi > lo:
        return [(1.0, fmt_number(hi))]
    step = nice_step(hi - lo, 4)
    if float(lo).is_integer() and float(hi).is_integer():  # counts: whole-number ticks only
        step = max(step, 1.0)
    out = [(0.0, fmt_number(lo)), (1.0, fmt_number(hi))]
    clear = 18 / _BAR_H
    v = math.ceil(lo / step) * step
    while v < hi:
        f = (v - lo) / (hi - lo)
        if clear <= f <= 1 - clear:
            out.append((f, fmt_number(v, step)))
        v += step
    return out


def _draw_legend(
    draw: Any, legend: Sequence[Category] | ColourBar, heading: str, at: tuple[int, int]
) -> None:
    x, y = at
    cats: Sequence[Category] = legend.extra if isinstance(legend, ColourBar) else legend
    if isinstance(legend, ColourBar):
        draw_text(draw, (x, y), legend.label, LEGEND_PX)
        y += _ROW
        for k in range(_BAR_H):  # top = vmax
            draw.line([x, y + k, x + _BAR_W - 1, y + k], fill=legend.ramp(1 - k / (_BAR_H - 1)))
        draw.rectangle([x - 1, y - 1, x + _BAR_W, y + _BAR_H], outline=BORDER)
        for f, label in _bar_ticks(legend):
            ty = y + (1 - f) * (_BAR_H - 1)
            if 0 < f < 1:  # a tick inside the bar (the ends are the bar's edges)
                draw.line([x + _BAR_W - 5, ty, x + _BAR_W - 1, ty], fill=BORDER)
            draw_text(draw, (x + _BAR_W + 6, ty), label, LEGEND_PX, INK, "lm")
        y += _BAR_H + 12
    elif heading:
        draw_text(draw, (x, y), heading, LEGEND_PX)
        y += _ROW
    count_w = max((text_size(_entry_text(c)[1], LEGEND_PX)[0] for c in cats), default=0)
    label_w = max((text_size(c.label, LEGEND_PX)[0] for c in cats), default=0)
    for c in cats:
        draw.rectangle(
            [x, y + 2, x + _SWATCH - 1, y + 2 + _SWATCH - 1], fill=c.colour, outline=BORDER
        )
        label, count = _entry_text(c)
        draw_text(draw, (x + _SWATCH + 8, y + 2 + _SWATCH / 2), label, LEGEND_PX, INK, "lm")
        if count:
            right = x + _SWATCH + 8 + label_w + 12 + count_w
            draw_text(draw, (right, y + 2 + _SWATCH / 2), count, LEGEND_PX, MUTED, "rm")
        y += _ROW


def grid_subtitle(grid: TileGrid, n_tiles: int, noun: str = "tile") -> str:
    """``30 tiles · EPSG:6933, 96 km tiles · north up``."""
    plural = "s" if n_tiles != 1 else ""
    return f"{n_tiles:,} {noun}{plural} · {grid.crs}, {grid.tile_size / 1000:g} km tiles · north up"


def status_map(
    grid: TileGrid,
    states: Mapping[TileId, str],
    outline: Geometry | None = None,
    title: str = "tile status",
    max_px: int = 1000,
) -> Image.Image:
    """The image of :func:`status_map_png`."""
    tiles = sorted(states)
    names = [states[t] for t in tiles]
    if outline is not None:
        extra = [t for t in grid.tiles(outline) if t not in states]
        tiles += extra
        names += ["not planned"] * len(extra)
    counts = Counter(names)
    legend = [Category(s, c, counts.get(s, 0)) for s, c in STATE_COLOURS.items()]
    if outline is None and not counts.get("not planned"):
        legend = [c for c in legend if c.label != "not planned"]
    legend += [
        Category(s, OTHER_COLOUR, n) for s, n in sorted(counts.items()) if s not in STATE_COLOURS
    ]
    return render_tile_map(
        grid,
        tiles,
        [STATE_COLOURS.get(s, OTHER_COLOUR) for s in names],
        legend=legend,
        title=title,
        subtitle=grid_subtitle(grid, len(states), "planned tile")
        + (" · region outline" if outline is not None else ""),
        outline=outline,
        legend_title="tile state",
        max_px=max_px,
    )


def status_map_png(
    grid: TileGrid,
    states: Mapping[TileId, str],
    outline: Geometry | None = None,
    title: str = "tile status",
    max_px: int = 1000,
) -> bytes:
    """A batch's tiles coloured by state (:data:`STATE_COLOURS`; another state in
    :data:`OTHER_COLOUR` under its own name) with a legend of counts per state. With an
    ``outline``, the grid's tiles that intersect it but are not in ``states`` are drawn as
    "not planned". PNG bytes, at most ``max_px`` px a side."""
    return png_bytes(status_map(grid, states, outline, title, max_px))


def plan_map(plan: Plan, outline: Geometry | None = None, max_px: int = 1000) -> Image.Image:
    """A plan's tiles coloured by observation count (``tiles.png``): viridis from the smallest
    non-zero count to the largest (a colour bar), tiles without observations in the "empty"
    grey, ``N obs`` under the ids when there is room."""
    grid = plan.grid
    obs = [tp.n_obs for tp in plan.tiles]
    seen = [n for n in obs if n > 0]
    empty = STATE_COLOURS["empty"]
    bar = ColourBar(
        "observations per tile",
        min(seen, default=0),
        max(seen, default=0),
        extra=(Category("empty (0 obs)", empty, len(obs) - len(seen)),),
    )
    return render_tile_map(
        grid,
        [tp.tile for tp in plan.tiles],
        [bar.colour(n) if n > 0 else empty for n in obs],
        legend=bar,
        title=f"plan {plan.period.label}: observations per tile",
        subtitle=grid_subtitle(grid, len(obs))
        + (" · region outline" if outline is not None else ""),
        outline=outline,
        details=[f"{n} obs" for n in obs],
        max_px=max_px,
    )
