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


def tiles_geojson(plan: Plan) -> dict[str, Any]:
    """One Feature per tile (footprint in lon/lat, :meth:`TileGrid.lonlat_footprints`: clipped
    to the CRS's valid area, split at the antimeridian) with n_items, n_obs, cube_bytes, memory;
    a tile with no lon/lat footprint has ``"geometry": null``."""
    import shapely.geometry

    ll = plan.grid.lonlat_footprints([tp.tile for tp in plan.tiles])
    feats = []
    for tp, g in zip(plan.tiles, ll, strict=True):
        feats.append(
            {
                "type": "Feature",
                "id": str(tp.tile),
                "geometry": None if g.is_empty else shapely.geometry.mapping(g),
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
    """A map of the plan's tiles (grid CRS, north up, at most ``max_px`` px a side): coloured by
    observation count on viridis from the smallest non-zero count to the largest (colour bar),
    tiles without observations in the "empty" grey, ids (and ``N obs``) inside the tiles when
    they are legible, over the region's outline. See :func:`runner.product.tilemap.plan_map`."""
    from runner.product._draw import png_bytes
    from runner.product.tilemap import plan_map

    return png_bytes(plan_map(plan, outline, max_px))


def summary_table(plan: Plan) -> Any:
    """A rich table: tiles, items, observations, cube TB, estimated node-hours."""
    from rich.table import Table

    tiles = plan.tiles
    t = Table(title=f"plan {plan.period.label}", show_header=True)
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("tiles", f"{len(tiles)}")
    t.add_row("tiles with observations", f"{sum(1 for tp in tiles if tp.n_obs)}")
    t.add_row("empty tiles (skipped: no Job)", f"{sum(1 for tp in tiles if tp.skip)}")
    t.add_row("item-tile pairs", f"{sum(tp.n_items for tp in tiles)}")
    t.add_row("observations (tile time steps)", f"{sum(tp.n_obs for tp in tiles)}")
    t.add_row("max observations in a tile", f"{max((tp.n_obs for tp in tiles), default=0)}")
    t.add_row("total cube", f"{sum(tp.cube_bytes for tp in tiles) / 1e12:.3f} TB")
    t.add_row(
        "largest memory class",
        max(
            (tp.resources for tp in tiles if not tp.skip),
            key=lambda r: r.memory_bytes,
            default=Resources(0, ""),
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
