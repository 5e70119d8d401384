"""One date's sources of one band over a range of tile rows: opened, planned, then decoded.

A :class:`Source` is one input raster of one date (a granule's band), open, with the
:class:`Part` of each chunk map it feeds in the rows asked for and the one source window those
parts use (the COG blocks it touches are all that is decoded). Sources of several dates that
share a :attr:`Source.geometry` (same grid, window and parts: the granules of one MGRS tile) are
decoded into one stacked array and gathered together by
:func:`runner.worker.gather.kernels.gather_write`.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runner.worker.gather.grid_map import ChunkMap, GatherUnsupported, GridMaps
from runner.worker.gather.read import OpenSource, open_source


@dataclass(frozen=True, slots=True)
class BandPlan:
    """One band as odc-stac loads it: its name, dtype and fill value, its load parameters."""

    name: str
    dtype: np.dtype[Any]
    fill: int
    cfg: Any  #: odc-loader ``RasterLoadParams``


@dataclass(frozen=True, slots=True)
class Part:
    """One chunk map's share of a source: tile rows ``[lo, hi)``, the map's first tile row
    ``y0`` and column ``x0``, and the source window (r0, r1, c0, c1) those rows use."""

    map: ChunkMap
    lo: int
    hi: int
    y0: int
    x0: int
    window: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Source:
    """One open source of one date: its parts, the window they use (rows ``r0:r1``, cols
    ``c0:c1``) and its nodata (``has_nodata``: an integer nodata value, skipped as GDAL skips
    it). ``uri`` names it in every frame that holds it: a failed read's traceback leads
    :func:`runner.worker.assets.asset_in_error` to the asset."""

    uri: str
    reader: OpenSource
    parts: tuple[Part, ...]
    window: tuple[int, int, int, int]
    nodata: int
    has_nodata: bool

    @property
    def geometry(self) -> tuple[Any, ...]:
        """What sources decoded into one stack must share: grid, window, parts and nodata."""
        parts = tuple((id(p.map), p.lo, p.hi, p.y0, p.x0) for p in self.parts)
        return (self.reader.grid, self.window, parts, self.nodata, self.has_nodata)

    @property
    def shape(self) -> tuple[int, int]:
        r0, r1, c0, c1 = self.window
        return (r1 - r0, c1 - c0)

    def decode(self) -> NDArray[Any]:
        """The window, decoded (only the COG blocks it touches)."""
        return self.reader.read(self.window)

    def decode_into(self, out: NDArray[np.uint16]) -> None:
        """The window decoded into ``out`` (its shape, uint16)."""
        self.reader.read_into(self.window, out)


class RowParts:
    """The :class:`Part` of each (source grid, chunk) in tile rows ``[a, b)``: the same for every
    date and band on that grid, so planned once (threads may race to plan one: both get equal
    parts)."""

    def __init__(self, maps: GridMaps, chunk: int, a: int, b: int) -> None:
        self.maps, self.chunk, self.a, self.b = maps, chunk, a, b
        self._parts: dict[tuple[Any, int, int], Part | None] = {}

    def get(self, grid: Any, iy: int, ix: int) -> Part | None:
        """The part of chunk ``(iy, ix)`` fed by ``grid`` in the rows; None if it feeds none."""
        key = (grid, iy, ix)
        if key in self._parts:
            return self._parts[key]
        ch, a, b = self.chunk, self.a, self.b
        m = self.maps.get(grid, iy, ix)
        part = None
        if m is not None:
            y0, x0 = iy * ch + m.roi[0].start, ix * ch + m.roi[1].start
            lo, hi = max(a, y0), min(b, iy * ch + m.roi[0].stop)
            w = m.window(lo - y0, hi - y0) if lo < hi else None
            part = Part(m, lo, hi, y0, x0, w) if w is not None else None
        self._parts[key] = part
        return part


def open_sources(
    parts_of: RowParts,
    feeds: list[tuple[int, list[tuple[int, int]]]],
    srcs: list[dict[str, Any]],
    band: BandPlan,
    stack: ExitStack,
) -> list[Source]:
    """The sources of one date of ``band`` reaching the tile rows of ``parts_of``, in odc-stac's
    fusing order, opened (closed with ``stack``) and planned; :class:`GatherUnsupported` for a
    source the gather cannot read as odc-stac does.

    ``feeds`` is the date's (item index, its chunks (iy, ix)) list, ``srcs`` odc-stac's sources
    per item."""
    from odc.loader._reader import resolve_dst_nodata, resolve_src_nodata

    chunk, a, b = parts_of.chunk, parts_of.a, parts_of.b
    out: list[Source] = []
    for item, chunks in feeds:
        rows = [(iy, ix) for iy, ix in chunks if iy * chunk < b and (iy + 1) * chunk > a]
        src = srcs[item].get(band.name) if rows else None
        if src is None:
            continue
        if src.subdataset is not None or src.band < 1:
            raise GatherUnsupported(f"{src.uri}: a subdataset or a multi-band read")
        uri = src.uri  # named in this frame: asset_in_error finds it in a failure's traceback
        s = stack.enter_context(open_source(uri, src.band))
        parts = [p for p in (parts_of.get(s.grid, iy, ix) for iy, ix in rows) if p is not None]
        if not parts:
            continue
        window = (
            min(p.window[0] for p in parts),
            max(p.window[1] for p in parts),
            min(p.window[2] for p in parts),
            max(p.window[3] for p in parts),
        )
        src_nodata = resolve_src_nodata(s.nodata, band.cfg)
        dst_nodata = resolve_dst_nodata(band.dtype, band.cfg, src_nodata)
        if dst_nodata is None or int(dst_nodata) != band.fill:
            raise GatherUnsupported(f"{uri}: nodata {dst_nodata} is not the fill value")
        has = src_nodata is not None and float(src_nodata).is_integer()
        nodata = int(src_nodata) if has else 0  # type: ignore[arg-type]
        out.append(Source(uri, s, tuple(parts), window, nodata, has))
    return out
