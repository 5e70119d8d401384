"""The worker's pixels: the uint16 (y, x, band, time) cube, its buffer, and the row bands a tile
is cut into."""

from __future__ import annotations

import math
import threading
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


#: bytes between two writes that fault in every page of a buffer (the smallest page size)
_PAGE = 4096


class Sink:
    """The worker's one large buffer: the uint16 (rows, x, band, time) cube of its largest row
    band, taken early.

    :meth:`prefault` allocates it for the plan's expected size and writes one byte a page in a
    thread of its own, while the worker imports and checks its inputs (an idle core then: the
    page faults of a cube are seconds of kernel time, 1.3 s for 864 MB on the benchmark VM, and
    a pod short of memory fails in the first seconds rather than after its load; a worker with
    a budget of one thread faults them in first, in its own thread). :meth:`take`
    gives it the load's real shape — the plan's estimate of the observations can differ from
    the items' once grouped — when that needs at most its bytes and not a quarter fewer; else a
    buffer of its own (and the early one is freed)."""

    def __init__(self) -> None:
        self._buf: NDArray[np.uint8] | None = None
        self._thread: threading.Thread | None = None

    def prefault(self, nbytes: int, background: bool = True) -> None:
        """Allocate ``nbytes`` and fault its pages in: in the background, or now where the
        worker's CPU budget is one thread (a second busy thread would overrun it)."""

        def touch() -> None:
            try:
                buf = np.empty(nbytes, np.uint8)
                buf[::_PAGE] = 0
                self._buf = buf
            except MemoryError:  # the load's own allocation will say so, where it belongs
                self._buf = None

        if not background:
            touch()
            return
        self._thread = threading.Thread(target=touch, name="sink-prefault", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Until the prefault has faulted in every page."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def take(self, shape: tuple[int, ...]) -> NDArray[np.uint16]:
        """A uint16 buffer of ``shape``: the prefaulted one if it fits, else a new one."""
        self.wait()
        buf, self._buf = self._buf, None
        need = math.prod(shape) * 2
        if buf is not None and need <= buf.nbytes <= need * 4 // 3:
            return buf[:need].view(np.uint16).reshape(shape)
        del buf
        return np.empty(shape, dtype=np.uint16)
