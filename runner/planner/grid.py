"""Tiles of the output grid: :class:`TileId` names them, :class:`TileGrid` places them.

The default grid is Digital Earth Africa's ``africa_10`` (odc-stats ``GRIDS["africa_10"]``):
EPSG:6933, 10 m pixels, 96 km (9600 px) tiles, origin (x, y) = (-17 376 000, -7 392 000) m.
Tile ``x{ix:03d}y{iy:03d}`` covers ``x0 + ix*T <= x < x0 + (ix+1)*T`` and likewise in y, with ``iy``
growing northwards, exactly as odc-geo's :class:`~odc.geo.gridspec.GridSpec` numbers them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
import shapely
from odc.geo import CRS, yx_
from odc.geo.geobox import GeoBox
from odc.geo.geom import BoundingBox, Geometry
from odc.geo.gridspec import GridSpec
from pyproj import Transformer

from runner.common.config import GridConfig
from runner.common.errors import UserInputError

#: A tile id: ``x`` and ``y`` indices zero-padded to 3 characters (``x017``; negative: ``x-01``),
#: at most 5 digits. Anchored: nothing else (no path separators, no shell metacharacters) can
#: pass, so ids are safe in paths, URLs and Kubernetes names. ASCII digits only (``re.ASCII``: a
#: bare ``\d`` would read ``x00١y001``, with an Arabic-Indic one, as ``x001y001``).
TILE_ID_RE = re.compile(r"x(-\d{2,5}|\d{3,5})y(-\d{2,5}|\d{3,5})", re.ASCII)


@dataclass(frozen=True, order=True, slots=True)
class TileId:
    """Index of one grid tile; ``str(TileId(17, 156)) == "x017y156"``."""

    ix: int
    iy: int

    def __str__(self) -> str:
        return f"x{self.ix:03d}y{self.iy:03d}"

    @classmethod
    def parse(cls, text: str) -> TileId:
        """Parse ``x017y156``; anything else raises :class:`UserInputError`."""
        m = TILE_ID_RE.fullmatch(text) if isinstance(text, str) and len(text) <= 16 else None
        if m is None:
            shown = text if isinstance(text, str) and len(text) <= 40 else repr(text)[:40] + "…"
            raise UserInputError(
                f"invalid tile id {shown!r}: expected the form x###y### (e.g. x017y156)"
            )
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def x_part(self) -> str:
        """``x017``: the first folder level of the output layout."""
        return f"x{self.ix:03d}"

    @property
    def y_part(self) -> str:
        return f"y{self.iy:03d}"

    @property
    def dns_name(self) -> str:
        """Lower-case DNS-1123 form for Kubernetes names (``-`` becomes ``m``): ``x017y156``."""
        return str(self).replace("-", "m")


@dataclass(frozen=True)
class TileGrid:
    """A regular grid of square tiles in a projected CRS."""

    crs: str
    resolution: float  #: pixel size in CRS units (metres)
    tile_size: float  #: tile edge in CRS units (metres); a whole number of pixels
    origin: tuple[float, float]  #: (x, y) of the corner of tile x000y000

    def __post_init__(self) -> None:
        n = self.tile_size / self.resolution
        if abs(n - round(n)) > 1e-9:
            raise UserInputError(
                f"grid: tile_size {self.tile_size} is not a whole number of {self.resolution} pixels"
            )

    @classmethod
    def from_config(cls, cfg: GridConfig) -> TileGrid:
        return cls(cfg.crs, cfg.resolution, cfg.tile_size, tuple(cfg.origin))  # type: ignore[arg-type]

    @property
    def tile_pixels(self) -> int:
        """Tile edge in pixels (9600 for africa_10)."""
        return round(self.tile_size / self.resolution)

    @cached_property
    def gridspec(self) -> GridSpec:
        """The same grid as an odc-geo :class:`GridSpec`."""
        n = self.tile_pixels
        return GridSpec(
            crs=CRS(self.crs),
            tile_shape=(n, n),
            resolution=self.resolution,
            origin=yx_(self.origin[1], self.origin[0]),
        )

    def bounds(self, tile: TileId) -> BoundingBox:
        """Tile bounds in the grid CRS: (left, bottom, right, top)."""
        x0 = self.origin[0] + tile.ix * self.tile_size
        y0 = self.origin[1] + tile.iy * self.tile_size
        return BoundingBox(x0, y0, x0 + self.tile_size, y0 + self.tile_size, crs=CRS(self.crs))

    def geobox(self, tile: TileId) -> GeoBox:
        """Pixel grid of one tile (north up, ``tile_pixels`` square)."""
        return GeoBox.from_bbox(self.bounds(tile), resolution=self.resolution)

    def footprint(self, tile: TileId) -> Geometry:
        return self.bounds(tile).polygon

    def locate(self, x: float, y: float) -> TileId:
        """The tile containing point (x, y) given in the grid CRS."""
        return TileId(
            math.floor((x - self.origin[0]) / self.tile_size),
            math.floor((y - self.origin[1]) / self.tile_size),
        )

    def boxes(self, tiles: Sequence[TileId]) -> np.ndarray:
        """Tile footprints in the grid CRS as a shapely array (vectorised, no odc-geo objects)."""
        ix = np.fromiter((t.ix for t in tiles), dtype=np.float64, count=len(tiles))
        iy = np.fromiter((t.iy for t in tiles), dtype=np.float64, count=len(tiles))
        x0 = self.origin[0] + ix * self.tile_size
        y0 = self.origin[1] + iy * self.tile_size
        return shapely.box(x0, y0, x0 + self.tile_size, y0 + self.tile_size)

    def locate_lonlat(self, lon: float, lat: float) -> TileId:
        """The tile containing a point given in degrees (EPSG:4326)."""
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise UserInputError(
                f"point ({lon}, {lat}) is out of range: need -180 <= lon <= 180, -90 <= lat <= 90"
            )
        x, y = _to_grid(self.crs).transform(lon, lat)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise UserInputError(f"point ({lon}, {lat}) has no position in {self.crs}")
        return self.locate(x, y)

    def describe(self, tile: TileId, as_geojson: bool = False) -> str:
        """Bounds in the grid CRS and lon/lat, or a GeoJSON Feature of the footprint; a tile
        wholly outside the CRS's valid area is a :class:`UserInputError`."""
        return _describe(self, tile, as_geojson)

    def lonlat_footprint(self, tile: TileId) -> shapely.Geometry:
        """The tile's footprint in lon/lat (EPSG:4326): a Polygon, or a MultiPolygon split at
        ±180° when it crosses the antimeridian.

        Only the part inside the CRS's valid area (:mod:`runner.planner.footprint`; EPSG:6933:
        its area of use, 86°S–86°N, 180°W–180°E) is kept; edges are densified every
        ``tile_size / 16`` (6 km for africa_10) so curved ones stay right, collinear vertices are
        dropped and coordinates rounded to 1e-7° (≈1 cm). About 0.35 ms a tile. A tile wholly
        outside the valid area raises :class:`UserInputError`."""
        geom = self.lonlat_footprints([tile])[0]
        if geom.is_empty:
            raise UserInputError(f"tile {tile} {outside_message(self)}")
        return geom

    def lonlat_footprints(self, tiles: Sequence[TileId]) -> np.ndarray:
        """:meth:`lonlat_footprint` of many tiles at once (a shapely array in ``tiles``' order;
        vectorised, ≈50 µs a tile); a tile wholly outside the valid area is an empty Polygon."""
        from runner.planner.footprint import lonlat_footprints

        return lonlat_footprints(self, self.boxes(tiles))

    def valid_fraction(self, tile: TileId) -> float:
        """The fraction (0–1) of the tile's area in the grid CRS that has a lon/lat footprint."""
        from runner.planner.footprint import grid_parts

        box = self.boxes([tile])
        return float(shapely.area(grid_parts(self, box)[0]) / shapely.area(box[0]))

    def tiles(self, region: Geometry) -> Iterator[TileId]:
        """Tiles whose area intersects ``region`` (its geometry, not just its bounding box), row
        by row from the south-west. Vectorised: one prepared geometry tested against the boxes of
        every tile of the region's bounding box, so a continent (thousands of tiles) takes well
        under a second."""
        geom = region.to_crs(CRS(self.crs))
        shp = geom.geom
        if shp.is_empty:
            return
        left, bottom, right, top = shp.bounds
        lo, hi = self.locate(left, bottom), self.locate(right, top)
        cand = [TileId(ix, iy) for iy in range(lo.iy, hi.iy + 1) for ix in range(lo.ix, hi.ix + 1)]
        boxes = self.boxes(cand)
        shapely.prepare(shp)
        hit = shapely.intersects(shp, boxes)
        idx = np.flatnonzero(hit)
        # area > 0: drop tiles that only touch the region along an edge or at a corner
        keep = idx[~shapely.touches(shp, boxes[idx])]
        for i in keep:
            yield cand[i]


@cache
def _to_grid(crs: str) -> Transformer:
    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


def outside_message(grid: TileGrid) -> str:
    """``lies wholly outside EPSG:6933's valid area (…); tiles with a footprint: x000–x361, …``."""
    from runner.planner.footprint import valid_area

    area = valid_area(grid.crs)
    if area is None:
        return f"has no position in lon/lat: {grid.crs} cannot transform it"
    left, bottom, right, top = area.bounds
    lo = grid.locate(left, bottom)
    hi = grid.locate(math.nextafter(right, -math.inf), math.nextafter(top, -math.inf))
    return (
        f"lies wholly outside {grid.crs}'s valid area ({_area_name(grid.crs)}; "
        f"x {left:.0f} to {right:.0f}, y {bottom:.0f} to {top:.0f}): it has no lon/lat footprint. "
        f"Tiles of this grid with one: {TileId(lo.ix, 0).x_part}–{TileId(hi.ix, 0).x_part}, "
        f"{TileId(0, lo.iy).y_part}–{TileId(0, hi.iy).y_part}"
    )


@cache
def _area_name(crs: str) -> str:
    import pyproj

    aou = pyproj.CRS(crs).area_of_use
    return "no declared area of use" if aou is None else aou.name.rstrip(".")


def _describe(grid: TileGrid, tile: TileId, as_geojson: bool = False) -> str:
    import json

    import shapely.geometry

    from runner.planner.footprint import lonlat_bounds

    b = grid.bounds(tile)
    ll = grid.lonlat_footprint(tile)
    w, s, e, n = lonlat_bounds(ll)
    frac = grid.valid_fraction(tile)
    if as_geojson:
        doc = {
            "type": "Feature",
            "id": str(tile),
            "bbox": [w, s, e, n],
            "properties": {
                "tile": str(tile),
                "crs": grid.crs,
                "bounds": [b.left, b.bottom, b.right, b.top],
                "valid_fraction": round(frac, 6),
            },
            "geometry": shapely.geometry.mapping(ll),
        }
        return json.dumps(doc)
    lines = [
        f"tile {tile}",
        f"grid       {grid.crs}, {grid.resolution:g} m pixels, {grid.tile_pixels} px tiles",
        f"bounds     {b.left:.0f} {b.bottom:.0f} {b.right:.0f} {b.top:.0f} (left bottom right top, {grid.crs})",
        f"lon/lat    {w:.5f} {s:.5f} {e:.5f} {n:.5f} (W S E N, EPSG:4326)",
    ]
    if w > e:
        lines.append("note       the footprint crosses the antimeridian (W > E): two polygons")
    if frac < 1 - 1e-9:
        lines.append(
            f"note       {100 * frac:.1f} % of the tile lies in {grid.crs}'s valid area "
            f"({_area_name(grid.crs)}); lon/lat is that part"
        )
    return "\n".join(lines)
