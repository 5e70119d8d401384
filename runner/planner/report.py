"""What a plan looks like: a map of its tiles (``tiles.png``, ``tiles.geojson``) and its summary."""

from __future__ import annotations

import json
from typing import Any

from runner.common import store
from runner.planner.plan import Plan
from runner.planner.sizing import Resources

#: Assumed throughput of one worker node, in pixel-observations (pixels × time steps of a tile's
#: cube) per node-hour: a 16-core node at 3.5 M pixel-observations per core-second, a quarter of
#: the fused geomedian + MADs rate measured in docs/algos.md (~15 M/CPU-s at 10 bands), leaving
#: three quarters of the time for reading, decoding, masking and writing. An assumption, not a
#: measurement of a whole tile: use it to compare plans, not to book a cluster.
PX_OBS_PER_NODE_HOUR = 16 * 3.5e6 * 3600


def node_hours(plan: Plan) -> float:
    """Estimated node-hours of a plan at :data:`PX_OBS_PER_NODE_HOUR`."""
    px = plan.grid.tile_pixels**2
    return sum(px * tp.n_obs for tp in plan.tiles) / PX_OBS_PER_NODE_HOUR


_RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))  # viridis stops


def _colour(v: float) -> tuple[int, int, int]:
    """``v`` in [0, 1] on a 5-stop viridis ramp."""
    x = min(max(v, 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(x), len(_RAMP) - 2)
    f = x - i
    return tuple(round(a + (b - a) * f) for a, b in zip(_RAMP[i], _RAMP[i + 1], strict=True))  # type: ignore[return-value]


def tiles_geojson(plan: Plan) -> dict[str, Any]:
    """One Feature per tile (footprint in lon/lat) with n_items, n_obs, cube_bytes, memory."""
    import shapely
    import shapely.geometry
    from pyproj import Transformer

    grid = plan.grid
    tiles = [tp.tile for tp in plan.tiles]
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    boxes = shapely.segmentize(grid.boxes(tiles), grid.tile_size / 8)

    def to_ll(xy: Any) -> Any:
        import numpy as np

        lon, lat = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([lon, lat])

    ll = shapely.set_precision(shapely.simplify(shapely.transform(boxes, to_ll), 1e-7), 1e-7)
    feats = []
    for tp, g in zip(plan.tiles, ll, strict=True):
        feats.append(
            {
                "type": "Feature",
                "id": str(tp.tile),
                "geometry": shapely.geometry.mapping(g),
                "properties": {
                    "tile": str(tp.tile),
                    "n_items": tp.n_items,
                    "n_obs": tp.n_obs,
                    "cube_bytes": tp.cube_bytes,
                    "memory": tp.resources.memory,
                    "memory_bytes": tp.resources.memory_bytes,
                },
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def tiles_png(plan: Plan, outline: Any | None = None, max_px: int = 1000) -> bytes:
    """A map of the plan's tiles (grid CRS, north up) coloured by observation count (viridis,
    0 → max), tiles without observations in red, over the region's outline (grey)."""
    import io

    import shapely
    from odc.geo import CRS
    from PIL import Image, ImageDraw

    grid = plan.grid
    boxes = grid.boxes([tp.tile for tp in plan.tiles])
    geoms = list(boxes)
    region = None
    if outline is not None:
        region = outline.to_crs(CRS(grid.crs)).geom
        geoms.append(region)
    if not geoms:
        geoms = [shapely.box(0, 0, 1, 1)]
    left, bottom, right, top = shapely.total_bounds(geoms)
    scale = max_px / max(right - left, top - bottom)
    w, h = max(1, round((right - left) * scale)) + 2, max(1, round((top - bottom) * scale)) + 2
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)

    def px(x: float, y: float) -> tuple[float, float]:
        return (1 + (x - left) * scale, 1 + (top - y) * scale)

    if region is not None:
        for poly in getattr(region, "geoms", [region]):
            draw.polygon(
                [px(x, y) for x, y in poly.exterior.coords],
                fill=(225, 225, 225),
                outline=(120, 120, 120),
            )
    top_obs = max((tp.n_obs for tp in plan.tiles), default=0) or 1
    for tp, b in zip(plan.tiles, boxes, strict=True):
        x0, y0, x1, y1 = b.bounds
        colour = (220, 40, 40) if tp.n_obs == 0 else _colour(tp.n_obs / top_obs)
        (a, d), (c, e) = px(x0, y1), px(x1, y0)
        draw.rectangle([a, d, max(a, c - 1), max(d, e - 1)], fill=colour)
    if region is not None:  # the coastline over the tiles
        for poly in getattr(region, "geoms", [region]):
            draw.line([px(x, y) for x, y in poly.exterior.coords], fill=(60, 60, 60), width=1)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def summary_table(plan: Plan) -> Any:
    """A rich table: tiles, items, observations, cube TB, estimated node-hours."""
    from rich.table import Table

    tiles = plan.tiles
    t = Table(title=f"plan {plan.period.label}", show_header=True)
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("tiles", f"{len(tiles)}")
    t.add_row("tiles with observations", f"{sum(1 for tp in tiles if tp.n_obs)}")
    t.add_row("item-tile pairs", f"{sum(tp.n_items for tp in tiles)}")
    t.add_row("observations (tile time steps)", f"{sum(tp.n_obs for tp in tiles)}")
    t.add_row("max observations in a tile", f"{max((tp.n_obs for tp in tiles), default=0)}")
    t.add_row("total cube", f"{sum(tp.cube_bytes for tp in tiles) / 1e12:.3f} TB")
    t.add_row(
        "largest memory class",
        max(
            (tp.resources for tp in tiles), key=lambda r: r.memory_bytes, default=Resources(0, "")
        ).memory,
    )
    t.add_row("estimated node-hours*", f"{node_hours(plan):.1f}")
    t.caption = (
        f"* at an assumed {PX_OBS_PER_NODE_HOUR:.2g} pixel-observations per node-hour "
        "(16 cores; see runner/planner/report.py PX_OBS_PER_NODE_HOUR)"
    )
    return t


def write_map_files(plan: Plan, folder: str, outline: Any | None = None) -> None:
    """``tiles.geojson`` and ``tiles.png`` next to ``plan.json``."""
    doc = tiles_geojson(plan)
    store.write_bytes(
        store.join(folder, "tiles.geojson"),
        json.dumps(doc, separators=(",", ":")).encode(),
        "application/geo+json",
    )
    store.write_bytes(store.join(folder, "tiles.png"), tiles_png(plan, outline), "image/png")
