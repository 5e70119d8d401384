"""The gather's two numba kernels; both release the GIL (the load's threads run them side by side)."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

#: pixels of a row :func:`write_masked` writes at a time (its block of the sink stays in cache)
WRITE_BLOCK = 64


@njit(cache=True, nogil=True)
def gather_fuse(
    out: NDArray[np.uint16],
    rows: NDArray[np.int16],
    cols: NDArray[np.int16],
    win: NDArray[np.uint16] | NDArray[np.uint8],
    win_r0: int,
    win_c0: int,
    src_nodata: int,
    has_nodata: bool,
    fill: int,
) -> None:
    """Fill ``out`` (h, w) from the decoded source window ``win`` (its top-left source pixel at
    row ``win_r0``, col ``win_c0``) through ``rows``/``cols`` (h, w: the source pixel per pixel,
    -1 none), as odc-stac's warp then its default fuser do: a pixel already holding a value
    other than ``fill`` keeps it (the first valid source of a solar day wins); a source pixel
    equal to ``src_nodata`` (when ``has_nodata``) is not copied (GDAL skips it: the pixel stays
    ``fill``)."""
    h, w = out.shape
    for y in range(h):
        for x in range(w):
            r = rows[y, x]
            if r < 0 or out[y, x] != fill:
                continue
            v = win[r - win_r0, cols[y, x] - win_c0]
            if has_nodata and v == src_nodata:
                continue
            out[y, x] = v


@njit(cache=True, nogil=True)
def write_masked(
    view: NDArray[np.uint16],
    band: int,
    t0: int,
    temp: NDArray[np.uint16],
    clear: NDArray[np.bool_],
    nodata: int,
) -> None:
    """``view[y, x, band, t0 + k] = temp[k, y, x]`` where ``clear[t0 + k, y, x]``, else ``nodata``:
    one band's observations ``t0 …`` into the (y, x, band, time) sink, ``k`` contiguous values a pixel.

    A blocked transpose: :data:`WRITE_BLOCK` pixels of a row at a time, date by date, so that
    ``temp`` and ``clear`` are read in runs along x and the block's slots of the sink (a few
    tens of KB) stay in cache until every date is written; pixel by pixel, the 2 × ``nk`` planes
    read at once would miss the TLB on every value."""
    nk, h, w = temp.shape
    _, _, nb, nt = view.shape
    # flat indices (C-contiguous arrays: the caller's sink rows, its own buffers): the
    # 4-D/3-D index arithmetic and its wrap-around checks cost more than the copy
    vf, tf, cf = view.reshape(-1), temp.reshape(-1), clear.reshape(-1)
    plane, sx, nd = h * w, nb * nt, np.uint16(nodata)
    for y in range(h):
        for xb in range(0, w, WRITE_BLOCK):
            xe = min(w, xb + WRITE_BLOCK)
            for k in range(nk):
                t = t0 + k
                ti, ci = k * plane + y * w, t * plane + y * w
                vo = y * w * sx + band * nt + t
                for x in range(xb, xe):
                    vf[vo + x * sx] = tf[ti + x] if cf[ci + x] else nd
