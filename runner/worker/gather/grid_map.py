"""Which source pixel GDAL puts in each tile pixel: computed once per (source grid, chunk).

odc-stac (odc-loader 0.5, ``odc.loader._rio._do_read``) reads one source into one Dask chunk of
the tile's GeoBox by, per chunk: ``compute_reproject_roi(src_geobox, chunk_geobox, ttol=0.9)``
(``ttol`` 0.9 px for nearest); nothing when the chunk's ROI is empty; a plain windowed read when
the source is pixel-aligned with the chunk (``paste_ok`` and ``read_shrink == 1``, sub-pixel
shifts below 0.9 px ignored); otherwise ``rasterio.warp.reproject(band, dst[roi_dst],
src_nodata, dst_crs=str(crs), dst_transform=chunk_geobox[roi_dst].transform, dst_nodata,
resampling=nearest)`` with rasterio's defaults for everything else (GDAL's approximate
transformer with a 0.125 px error threshold, 64 MB warp memory, one thread, ``INIT_DEST`` =
nodata). With nearest resampling the warper only *chooses* a source pixel per destination
pixel (or none), so :func:`chunk_map` makes that same call with the same destination window
and transform over an int32 raster of the source's linear pixel indices (``row * width +
col``) — GDAL's choice, recorded once for every date and band on that grid.

The index raster covers the source ROI odc-stac computes, padded (:data:`PAD` px) and grown
until no chosen pixel lies on a cut edge, so that the warper sees every pixel it would choose
(a sub-window saves the 480 MB a whole 10980² granule would take; ``tests/test_gather.py``
checks it equal to the whole-granule raster's choice). Source nodata is applied when gathering
(GDAL skips a nodata source pixel; so does :func:`runner.worker.gather.load.gather_fuse`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

#: the ``ttol`` odc-stac's reader passes for nearest resampling (px)
NEAREST_TTOL = 0.9
#: source pixels added around odc-stac's source ROI for the index raster (grown ×4 if needed)
PAD = 16


class GatherUnsupported(Exception):
    """An input the gather path cannot reproduce exactly; the message is the reason."""


@dataclass(frozen=True, slots=True)
class SourceGrid:
    """A source raster's pixel grid: CRS (WKT), affine transform and (rows, cols)."""

    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]  #: GDAL order (a, b, c, d, e, f)
    shape: tuple[int, int]

    @classmethod
    def of(cls, rdr: Any) -> SourceGrid:
        """The grid of an open rasterio dataset."""
        t = rdr.transform
        return cls(rdr.crs.to_wkt(), (t.a, t.b, t.c, t.d, t.e, t.f), (rdr.height, rdr.width))

    @classmethod
    def of_geobox(cls, geobox: GeoBox) -> SourceGrid:
        """The grid a source's metadata declares (odc-stac's ``RasterSource.geobox``, from its
        item's ``proj:`` fields), keyed as :meth:`of` keys the opened raster: equal to it when
        the header agrees with the item (which the input checks ask of every asset)."""
        from rasterio.crs import CRS as RioCRS

        if geobox.crs is None:
            raise GatherUnsupported("a source without a CRS")
        epsg = geobox.crs.epsg
        crs = RioCRS.from_epsg(epsg) if epsg else RioCRS.from_wkt(geobox.crs.to_wkt())
        t, (h, w) = geobox.transform, geobox.shape.yx
        return cls(crs.to_wkt(), (t.a, t.b, t.c, t.d, t.e, t.f), (h, w))

    def geobox(self) -> GeoBox:
        """As odc-loader's ``rio_geobox`` makes it (shape, transform, CRS)."""
        from affine import Affine
        from odc.geo import CRS

        return GeoBox(self.shape, Affine(*self.transform), CRS(self.crs_wkt))


@dataclass(frozen=True, slots=True)
class ChunkMap:
    """GDAL's choice of source pixel for one chunk's ROI (chunk pixel coordinates).

    ``rows[i, j]``, ``cols[i, j]`` are the source pixel of chunk pixel ``(roi[0].start + i,
    roi[1].start + j)``, or -1 where the warper writes nothing (int16: a gather reads two small
    integers instead of dividing a linear index; sources up to 32767 px a side, a Sentinel-2
    granule is 10980). ``row_lo/row_hi/col_lo/col_hi``
    bound the source rows and columns each ROI row uses (inclusive; ``lo > hi`` for a row with
    none), so a band of rows knows the source window to decode without scanning the index."""

    roi: tuple[slice, slice]
    rows: NDArray[np.int16]
    cols: NDArray[np.int16]
    width: int  #: the source's width (px)
    row_lo: NDArray[np.int32]
    row_hi: NDArray[np.int32]
    col_lo: NDArray[np.int32]
    col_hi: NDArray[np.int32]

    @property
    def index(self) -> NDArray[np.int32]:
        """The linear source pixel (``row * width + col``) per chunk pixel, -1 for none."""
        r, c = self.rows.astype(np.int32), self.cols.astype(np.int32)
        return np.where(r >= 0, r * self.width + c, -1).astype(np.int32)

    def window(self, i0: int, i1: int) -> tuple[int, int, int, int] | None:
        """Source (row0, row1, col0, col1), half-open, used by ROI rows ``[i0, i1)``; None if none."""
        lo, hi = self.row_lo[i0:i1], self.row_hi[i0:i1]
        used = lo <= hi
        if not used.any():
            return None
        return (
            int(lo[used].min()),
            int(hi[used].max()) + 1,
            int(self.col_lo[i0:i1][used].min()),
            int(self.col_hi[i0:i1][used].max()) + 1,
        )


def _warp_indices(
    grid: SourceGrid, dst: GeoBox, roi_dst: tuple[slice, slice], rows: slice, cols: slice
) -> NDArray[np.int32]:
    """GDAL's nearest choice over source rows × cols (a sub-window) into ``dst[roi_dst]``: the
    linear source index per destination pixel, -1 where none."""
    import rasterio.warp
    from affine import Affine
    from rasterio.crs import CRS as RioCRS
    from rasterio.enums import Resampling

    _, w = grid.shape
    r = np.arange(rows.start, rows.stop, dtype=np.int64)[:, None]
    c = np.arange(cols.start, cols.stop, dtype=np.int64)[None, :]
    src = (r * w + c).astype(np.int32)
    sub = Affine(*grid.transform) * Affine.translation(cols.start, rows.start)
    out = np.full(
        (roi_dst[0].stop - roi_dst[0].start, roi_dst[1].stop - roi_dst[1].start), -1, np.int32
    )
    rasterio.warp.reproject(
        src,
        out,
        src_transform=sub,
        src_crs=RioCRS.from_wkt(grid.crs_wkt),
        src_nodata=None,
        dst_crs=str(dst.crs),
        dst_transform=dst[roi_dst].transform,
        dst_nodata=-1,
        resampling=Resampling.nearest,
    )
    return out


def _touches_cut(index: NDArray[np.int32], grid: SourceGrid, rows: slice, cols: slice) -> bool:
    """Whether a chosen pixel lies on an edge of the sub-window that is not the source's edge
    (the warper might have wanted a pixel beyond it)."""
    h, w = grid.shape
    valid = index[index >= 0]
    if valid.size == 0:
        return rows.start > 0 or cols.start > 0 or rows.stop < h or cols.stop < w
    r, c = valid // w, valid % w
    return bool(
        (rows.start > 0 and r.min() <= rows.start)
        or (rows.stop < h and r.max() >= rows.stop - 1)
        or (cols.start > 0 and c.min() <= cols.start)
        or (cols.stop < w and c.max() >= cols.stop - 1)
    )


def _bounds(index: NDArray[np.int32], width: int) -> tuple[NDArray[np.int32], ...]:
    """Per row of ``index``: min/max source row and column of its chosen pixels."""
    valid = index >= 0
    big, small = np.int32(np.iinfo(np.int32).max), np.int32(-1)
    r, c = index // width, index % width
    return (
        np.where(valid, r, big).min(axis=1).astype(np.int32),
        np.where(valid, r, small).max(axis=1).astype(np.int32),
        np.where(valid, c, big).min(axis=1).astype(np.int32),
        np.where(valid, c, small).max(axis=1).astype(np.int32),
    )


def chunk_map(grid: SourceGrid, chunk: GeoBox, *, pad: int = PAD) -> ChunkMap | None:
    """GDAL's choice of source pixel for ``chunk`` (one Dask chunk's GeoBox), exactly as
    odc-stac's reader makes it; None when the source does not reach the chunk.

    Raises :class:`GatherUnsupported` when odc-stac would read an overview (``read_shrink`` > 1)
    or the source has too many pixels for an int32 index."""
    from odc.geo.overlap import compute_reproject_roi
    from odc.geo.roi import roi_is_empty

    h, w = grid.shape
    if max(h, w) > np.iinfo(np.int16).max:
        raise GatherUnsupported(f"a source of {h} × {w} px is too large for int16 pixel indices")
    rr = compute_reproject_roi(grid.geobox(), chunk, ttol=NEAREST_TTOL)
    roi_dst: tuple[slice, slice] = rr.roi_dst  # type: ignore[assignment]
    if roi_is_empty(roi_dst) or roi_is_empty(rr.roi_src):
        return None  # odc-stac leaves (or fills) these pixels with the fill value
    if rr.read_shrink != 1:
        raise GatherUnsupported(
            f"the tile is {rr.read_shrink}× coarser than a source: odc-stac reads its overviews"
        )
    ys, xs = rr.roi_src
    if rr.paste_ok:  # a plain windowed read of roi_src into roi_dst
        r = np.arange(ys.start, ys.stop, dtype=np.int64)[:, None]
        c = np.arange(xs.start, xs.stop, dtype=np.int64)[None, :]
        index = (r * w + c).astype(np.int32)
        if index.shape != (roi_dst[0].stop - roi_dst[0].start, roi_dst[1].stop - roi_dst[1].start):
            raise GatherUnsupported("an aligned source's window does not match its chunk's")
    else:
        while True:
            rows = slice(max(0, ys.start - pad), min(h, ys.stop + pad))
            cols = slice(max(0, xs.start - pad), min(w, xs.stop + pad))
            index = _warp_indices(grid, chunk, roi_dst, rows, cols)
            if not _touches_cut(index, grid, rows, cols):
                break
            if rows == slice(0, h) and cols == slice(0, w):
                break
            pad *= 4
    valid = index >= 0
    if not valid.any():
        return None
    rows_ = np.where(valid, index // w, -1).astype(np.int16)
    cols_ = np.where(valid, index % w, -1).astype(np.int16)
    return ChunkMap(roi_dst, rows_, cols_, w, *_bounds(index, w))


class GridMaps:
    """:func:`chunk_map` of every (source grid, chunk) a load asks for, each computed once
    (threads asking for the same one wait for it) and kept until :meth:`forget_rows`."""

    def __init__(self, chunks: Any) -> None:
        #: odc-geo ``GeoboxTiles`` of the tile: the same chunks as odc-stac's
        self.chunks = chunks
        self._maps: dict[tuple[SourceGrid, int, int], ChunkMap | None] = {}
        self._locks: dict[tuple[SourceGrid, int, int], threading.Lock] = {}
        self._guard = threading.Lock()
        self.computed = 0  #: chunk maps computed (warps run)

    def get(self, grid: SourceGrid, iy: int, ix: int) -> ChunkMap | None:
        """The map of ``grid`` into chunk ``(iy, ix)``."""
        key = (grid, iy, ix)
        with self._guard:
            if key in self._maps:
                return self._maps[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._maps:
                    return self._maps[key]
            m = chunk_map(grid, self.chunks[iy, ix])
            with self._guard:
                self._maps[key] = m
                self.computed += 1
            return m

    def forget_rows(self, below: int) -> None:
        """Drop the maps of chunk rows ``iy < below`` (row bands below them no longer read them)."""
        with self._guard:
            for key in [k for k in self._maps if k[1] < below]:
                del self._maps[key]
                self._locks.pop(key, None)
