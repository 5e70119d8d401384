"""Windowed decode of one input band: open as odc-stac opens it, check it, read a window.

Reads run under odc-stac's own GDAL environment (``odc.stac.configure_rio``, set by
:func:`runner.worker.gdal.gdal_environment`: HTTP retries and timeout, S3 endpoint) with
``VSI_CACHE`` off, as odc-loader's reader does, and ``sharing=False`` (each thread its own
handle). rasterio releases the GIL while GDAL decodes, so reads run side by side in threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from runner.worker.gather.grid_map import GatherUnsupported, SourceGrid

#: source dtypes the gather serves (odc-stac casts to the band's dtype; these cast exactly)
DTYPES = ("uint8", "uint16")


@dataclass(frozen=True, slots=True)
class OpenSource:
    """An open input band: its dataset, 1-based band index, grid and nodata (None: none)."""

    rdr: Any
    bidx: int
    grid: SourceGrid
    nodata: float | None

    def read(self, window: tuple[int, int, int, int]) -> NDArray[Any]:
        """Decode source rows ``[r0, r1)`` × cols ``[c0, c1)`` (only the COG blocks they touch)."""
        from rasterio.windows import Window

        r0, r1, c0, c1 = window
        return np.asarray(self.rdr.read(self.bidx, window=Window(c0, r0, c1 - c0, r1 - r0)))

    def read_into(self, window: tuple[int, int, int, int], out: NDArray[np.uint16]) -> None:
        """:meth:`read` into ``out`` (the window's shape; uint16): decoded in place when the
        source is uint16, else cast (uint8 → uint16 is exact)."""
        from rasterio.windows import Window

        r0, r1, c0, c1 = window
        w = Window(c0, r0, c1 - c0, r1 - r0)
        if self.rdr.dtypes[self.bidx - 1] == "uint16":
            self.rdr.read(self.bidx, window=w, out=out)
        else:
            out[...] = self.rdr.read(self.bidx, window=w)


def check_source(rdr: Any, bidx: int, uri: str) -> None:
    """Raise :class:`GatherUnsupported` for what odc-stac would read differently than a window
    and a gather: GCPs/RPCs instead of a transform, a dtype other than :data:`DTYPES`, or a
    raster stored in strips (not tiled: a window decodes whole rows of strips)."""
    if rdr.gcps[0] or rdr.rpcs is not None:
        raise GatherUnsupported(f"{uri} is georeferenced by GCPs or RPCs, not a transform")
    if bidx > rdr.count:
        raise GatherUnsupported(f"{uri} has {rdr.count} bands, band {bidx} was asked for")
    if rdr.dtypes[bidx - 1] not in DTYPES:
        raise GatherUnsupported(f"{uri} is {rdr.dtypes[bidx - 1]}, not one of {', '.join(DTYPES)}")
    bh, bw = rdr.block_shapes[bidx - 1]
    if not rdr.profile.get("tiled", False) and not (bh > 1 and bw < rdr.width):
        raise GatherUnsupported(f"{uri} is not tiled (blocks of {bh} × {bw} px)")


@contextmanager
def open_source(uri: str, bidx: int) -> Iterator[OpenSource]:
    """Open ``uri`` for band ``bidx`` under odc-stac's GDAL environment, checked."""
    import rasterio
    from odc.loader._rio import capture_rio_env, rio_env

    env = {**capture_rio_env(), "VSI_CACHE": False}
    with rio_env(**env), rasterio.open(uri, "r", sharing=False) as rdr:
        check_source(rdr, bidx, uri)
        yield OpenSource(rdr, bidx, SourceGrid.of(rdr), rdr.nodatavals[bidx - 1])
