"""The worker's pixels: the uint16 (y, x, band, time) cube and the row bands a tile is cut into."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox


@dataclass(frozen=True)
class Cube:
    """Clear pixels of (part of) a tile: ``data`` is uint16 (y, x, band, time), time contiguous
    per pixel as the reducers read it, ``input.nodata`` wherever an observation is not clear."""

    data: NDArray[np.uint16]
    bands: tuple[str, ...]
    times: tuple[str, ...]  #: ISO dates of the observations
    geobox: GeoBox  #: the whole tile's (a row band's cube holds rows of it)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


@dataclass(frozen=True, slots=True)
class RowBand:
    """Rows ``[r0, r1)`` of the tile: band ``index`` (0-based) of ``count``."""

    index: int
    count: int
    r0: int
    r1: int

    @property
    def label(self) -> str:
        """``band 2/4`` (1-based), for logs."""
        return f"band {self.index + 1}/{self.count}"
