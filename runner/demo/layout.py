"""``gmrun demo``: a synthetic catalog, a plan and a local run of 2 × 2 small tiles, end to end.

The demo area straddles the UTM zone 35/36 boundary (30° E) near the equator, so its tiles mix
granules of two zones and same-day overlaps, as continental runs do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml
from odc.geo import CRS
from odc.geo.geom import BoundingBox

from runner.common.config import RunConfig, parse_config
from runner.planner.grid import TileGrid, TileId

#: South-west corner of the demo area (lon, lat).
DEMO_CORNER = (29.975, -2.05)


@dataclass(frozen=True)
class DemoLayout:
    """The demo's grid (a config), its tiles and the area to synthesise."""

    config: RunConfig
    tiles: tuple[TileId, ...]
    bbox: tuple[float, float, float, float]  #: lon/lat of the tiles, plus a margin


def demo_layout(tile_px: int = 480, n: int = 2, resolution: float = 10.0) -> DemoLayout:
    """A grid of ``n`` × ``n`` tiles of ``tile_px`` pixels whose x000y000 corner is at DEMO_CORNER."""
    corner = BoundingBox(*DEMO_CORNER, *DEMO_CORNER, crs=CRS("EPSG:4326")).to_crs(CRS("EPSG:6933"))
    x0 = math.floor(corner.left / resolution) * resolution
    y0 = math.floor(corner.bottom / resolution) * resolution
    size = tile_px * resolution
    grid_doc = {"crs": "EPSG:6933", "resolution": resolution, "tile_size": size, "origin": [x0, y0]}
    config = parse_config({"grid": grid_doc}, "demo")
    grid = TileGrid.from_config(config.grid)
    tiles = tuple(TileId(ix, iy) for iy in range(n) for ix in range(n))
    region = BoundingBox(x0, y0, x0 + n * size, y0 + n * size, crs=CRS("EPSG:6933"))
    region = region.to_crs(CRS("EPSG:4326"))
    m = 0.003
    bbox = (region.left - m, region.bottom - m, region.right + m, region.top + m)
    assert grid.tile_pixels == tile_px
    return DemoLayout(config, tiles, bbox)


def write_config(layout: DemoLayout, path: Path, algorithm: str | None = None) -> None:
    """The demo's ``gmrun.yaml``: its grid, and ``algorithm.name`` when one is chosen."""
    g = layout.config.grid
    doc: dict[str, object] = {
        "grid": {
            "crs": g.crs,
            "resolution": g.resolution,
            "tile_size": g.tile_size,
            "origin": list(g.origin),
        }
    }
    if algorithm is not None:
        doc["algorithm"] = {"name": algorithm}
    path.write_text(
        "# gmrun demo configuration: every other key has its default\n" + yaml.safe_dump(doc)
    )


DEMO_PERIOD = (date(2023, 1, 1), date(2023, 12, 31))
