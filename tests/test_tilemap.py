"""Tile maps: a plan's tiles.png (observations, viridis) and a batch's status map, checked on
their pixels: colours, borders, ids, legend, north up, bounded size."""

from __future__ import annotations

import io
import itertools
import random
import time

import numpy as np
import pytest
from odc.geo.geom import Geometry
from odc.geo.geom import box as geo_box
from PIL import Image

from runner.common.config import RunConfig
from runner.demo.layout import demo_layout
from runner.planner.grid import TileGrid, TileId
from runner.planner.period import Period
from runner.planner.plan import Plan, TilePlan
from runner.planner.region import named_region
from runner.planner.report import tiles_png
from runner.planner.sizing import Resources
from runner.product import tilemap
from runner.product.tilemap import (
    BORDER,
    MAX_TILE_PX,
    OTHER_COLOUR,
    STATE_COLOURS,
    plan_map,
    status_map,
    status_map_png,
    viridis,
)

GRID = TileGrid.from_config(RunConfig().grid)
EMPTY = STATE_COLOURS["empty"]
BBOX = geo_box(29.0, -3.0, 34.0, -0.5, "EPSG:4326")  # 6 × 4 tiles around Lake Victoria's west


def _plan(config: RunConfig, tiles: list[TileId], obs: list[int]) -> Plan:
    return Plan(
        config,
        Period.parse("2023--P1Y"),
        tuple(
            TilePlan(t, 2 * n, n, n * 10, Resources(16 << 30, "2"), f"items/{t}.ndjson")
            for t, n in zip(tiles, obs, strict=True)
        ),
    )


def _px(img: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    return img.getpixel((round(x), round(y)))  # type: ignore[return-value]


def _inner(box: tuple[int, int, int, int], inset: int = 2) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return x0 + inset, y0 + inset, x1 - inset, y1 - inset


def _text_pixels(img: Image.Image, box: tuple[int, int, int, int], fill: tuple) -> int:
    """Pixels inside ``box`` (its border excluded) that are not the tile's fill: its text."""
    a = np.asarray(img.crop(_inner(box)))
    return int((np.abs(a.astype(int) - np.array(fill)).sum(axis=2) > 30).sum())


def _no_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tilemap, "_id_font_size", lambda ppt: None)


def test_viridis_ramp() -> None:
    assert viridis(0) == (68, 1, 84) and viridis(1) == (253, 231, 37)
    assert (
        viridis(-5) == viridis(0)
        and viridis(7) == viridis(1)
        and viridis(float("nan")) == viridis(0)
    )
    lum = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b in map(viridis, np.linspace(0, 1, 50))]
    assert all(b > a for a, b in itertools.pairwise(lum))  # perceptually ordered


def test_demo_plan_map_colours_borders_ids_and_legend(monkeypatch: pytest.MonkeyPatch) -> None:
    layout = demo_layout()
    tiles = list(layout.tiles)  # x000y000, x001y000, x000y001, x001y001
    plan = _plan(layout.config, tiles, [61, 58, 0, 73])
    outline = geo_box(*layout.bbox, "EPSG:4326")
    png = tiles_png(plan, outline)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "RGB" and max(img.size) <= 1000
    ref = plan_map(plan, outline)
    assert np.array_equal(np.asarray(ref), np.asarray(img.convert("RGB")))  # the same picture
    boxes, ppt = ref.info["tile_boxes"], ref.info["tile_px"]
    assert ppt == MAX_TILE_PX  # a 2 × 2 plan is not blown up to 1000 px
    b00, b10, b01, b11 = (boxes[t] for t in tiles)
    assert b01[1] < b00[1] and b10[0] > b00[0]  # north up, east right
    assert b10[0] == b00[2] and b00[1] == b01[3]  # neighbours share their borders
    for b in (b00, b10, b01, b11):
        assert (b[2] - b[0], b[3] - b[1]) == (ppt, ppt)
    expect = {b00: viridis(3 / 15), b10: viridis(0), b01: EMPTY, b11: viridis(1)}
    for b, colour in expect.items():
        assert _px(ref, b[0] + 4, b[1] + 4) == colour  # fills (58 → 73 over viridis)
        assert _px(ref, b[0], (b[1] + b[3]) / 2) == BORDER  # borders
        assert _text_pixels(ref, b, colour) > 100  # "x000y000" and "61 obs" written inside
    # the legend, right of the map: the colour bar's ends and the "empty" swatch
    legend = np.asarray(ref)[:, b11[2] + 10 :]
    for colour in (viridis(1), viridis(0), EMPTY):
        assert (legend == colour).all(axis=2).sum() >= 18
    # without ids the tiles are plain fills
    _no_ids(monkeypatch)
    bare = plan_map(plan, outline)
    for b, colour in expect.items():
        assert _text_pixels(bare, b, colour) == 0


def test_bbox_plan_map_is_not_a_flat_block() -> None:
    """The user's complaint: a bbox plan's tiles.png was one flat yellow block."""
    tiles = sorted(GRID.tiles(BBOX))
    assert len(tiles) == 24
    obs = [60 + 3 * i for i in range(len(tiles))]
    obs[5] = 0
    img = plan_map(_plan(RunConfig(), tiles, obs), BBOX)
    assert max(img.size) <= 1000 and min(img.size) >= 400
    boxes = img.info["tile_boxes"]
    fills = {_px(img, boxes[t][0] + 3, boxes[t][1] + 3) for t in tiles}
    assert len(fills) == len(tiles)  # every count its own colour, the empty one grey
    assert _px(img, boxes[tiles[5]][0] + 3, boxes[tiles[5]][1] + 3) == EMPTY
    top = max(range(len(tiles)), key=obs.__getitem__)
    assert _px(img, boxes[tiles[top]][0] + 3, boxes[tiles[top]][1] + 3) == viridis(1)
    sizes = {(b[2] - b[0], b[3] - b[1]) for b in boxes.values()}
    assert len(sizes) == 1 and sizes.pop()[0] >= 60
    for t, n in zip(tiles, obs, strict=True):  # ids legible in every tile
        fill = EMPTY if n == 0 else tilemap.ColourBar("", 60, max(obs)).colour(n)
        assert _text_pixels(img, boxes[t], fill) > 50


def test_africa_map_is_bounded_and_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    africa = named_region("africa")
    tiles = list(GRID.tiles(africa))
    rnd = random.Random(3)
    obs = [rnd.randint(0, 300) for _ in tiles]
    plan = _plan(RunConfig(), tiles, obs)
    t0 = time.perf_counter()
    png = tiles_png(plan, africa)
    assert time.perf_counter() - t0 < 5
    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert max(img.size) <= 1000 and max(img.size) >= 900  # a continent fills the frame
    ref = plan_map(plan, africa)
    boxes, ppt = ref.info["tile_boxes"], ref.info["tile_px"]
    assert 6 <= ppt < 40  # too small for ids: none are written
    _no_ids(monkeypatch)
    assert np.array_equal(np.asarray(plan_map(plan, africa)), np.asarray(ref))
    # the coastline (dark line) is drawn: many pixels of it over the tiles
    assert (np.asarray(ref) == tilemap.COAST).all(axis=2).sum() > 1000
    bar = tilemap.ColourBar("", min(n for n in obs if n), max(obs))
    wrong = 0
    for t, n in list(zip(tiles, obs, strict=True))[::37]:
        x0, y0, x1, y1 = boxes[t]
        want = EMPTY if n == 0 else bar.colour(n)
        inside = [_px(ref, x, y) for x in range(x0 + 1, x1) for y in range(y0 + 1, y1)]
        wrong += inside.count(want) < len(inside) // 2  # (the coastline may cross a tile)
    assert wrong == 0


def test_status_map_states_not_planned_and_counts() -> None:
    tiles = sorted(GRID.tiles(BBOX))
    names = ["done", "failed", "running", "pending", "empty", "mystery"]
    states = {t: names[i % len(names)] for i, t in enumerate(tiles[:18])}
    img = status_map(GRID, states, BBOX, title="batch 2023a")
    boxes = img.info["tile_boxes"]
    assert set(boxes) == set(tiles)  # the 6 tiles of the region not in the batch: not planned
    for t in tiles:
        want = STATE_COLOURS.get(states.get(t, "not planned"), OTHER_COLOUR)
        assert _px(img, boxes[t][0] + 3, boxes[t][1] + 3) == want, t
    # the legend: one swatch per state (and the unknown one), right of the map
    right = max(b[2] for b in boxes.values())
    legend = np.asarray(img)[:, right + 10 :]
    for colour in [*STATE_COLOURS.values(), OTHER_COLOUR]:
        assert (legend == colour).all(axis=2).sum() >= 14 * 14 - 60, colour
    # bytes: a PNG of the same picture; without an outline, only the batch's tiles
    png = status_map_png(GRID, states, BBOX, title="batch 2023a", max_px=700)
    small = Image.open(io.BytesIO(png))
    assert small.format == "PNG" and max(small.size) <= 700
    alone = status_map(GRID, states)
    assert set(alone.info["tile_boxes"]) == set(states)
    legend = np.asarray(alone)[:, max(b[2] for b in alone.info["tile_boxes"].values()) + 10 :]
    assert (legend == STATE_COLOURS["not planned"]).all(axis=2).sum() < 50  # (text edges)


def test_status_map_of_africa_draws_every_outline_tile() -> None:
    africa = named_region("africa")
    tiles = list(GRID.tiles(africa))
    states = {t: "done" for t in tiles[:1000]} | {t: "failed" for t in tiles[1000:1010]}
    t0 = time.perf_counter()
    img = status_map(GRID, states, africa)
    assert time.perf_counter() - t0 < 5 and max(img.size) <= 1000
    boxes = img.info["tile_boxes"]
    assert len(boxes) == len(tiles) == 3456
    a = np.asarray(img)
    assert (a == STATE_COLOURS["failed"]).all(axis=2).sum() >= 10 * (
        img.info["tile_px"] - 1
    ) ** 2 // 2


@pytest.mark.parametrize("obs", [[], [0], [42], [42, 42, 42]])
def test_degenerate_plans(obs: list[int]) -> None:
    """No tiles, one empty tile, one tile, equal counts: a picture, never a division by zero."""
    tiles = [TileId(211 + i, 74) for i in range(len(obs))]
    img = plan_map(_plan(RunConfig(), tiles, obs))
    assert 200 <= max(img.size) <= 1000
    for t, n in zip(tiles, obs, strict=True):
        b = img.info["tile_boxes"][t]
        assert _px(img, b[0] + 3, b[1] + 3) == (viridis(1) if n else EMPTY)
        assert b[2] - b[0] == MAX_TILE_PX


def test_outline_in_another_crs_and_with_a_hole() -> None:
    from shapely.geometry import Polygon

    ring = [(29.0, -3.0), (34.0, -3.0), (34.0, -0.5), (29.0, -0.5)]
    hole = [(30.5, -2.2), (32.5, -2.2), (32.5, -1.2), (30.5, -1.2)]
    outline = Geometry(Polygon(ring, [hole]), "EPSG:4326").to_crs("EPSG:3857")
    img = status_map(GRID, {TileId(212, 75): "done"}, outline)
    boxes = img.info["tile_boxes"]
    assert TileId(212, 75) in boxes and len(boxes) == len(list(GRID.tiles(outline)))
    assert (np.asarray(img) == tilemap.COAST).all(axis=2).sum() > 300  # both rings drawn
