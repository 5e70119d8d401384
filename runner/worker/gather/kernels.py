"""The gather's two numba kernels; both release the GIL (the load's threads run them side by side)."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray


@njit(cache=True, nogil=True)
def gather_fuse(
    out: NDArray[np.uint16],
    index: NDArray[np.int32],
    win: NDArray[np.uint16] | NDArray[np.uint8],
    win_r0: int,
    win_c0: int,
    src_width: int,
    src_nodata: int,
    has_nodata: bool,
    fill: int,
) -> None:
    """Fill ``out`` (h, w) from the decoded source window ``win`` (its top-left source pixel at
    row ``win_r0``, col ``win_c0``) through ``index`` (h, w: linear source pixel per pixel, -1 none),
    as odc-stac's warp then its default fuser do: a pixel already holding a value other than
    ``fill`` keeps it (the first valid source of a solar day wins); a source pixel equal to
    ``src_nodata`` (when ``has_nodata``) is not copied (GDAL skips it: the pixel stays ``fill``)."""
    h, w = out.shape
    for y in range(h):
        for x in range(w):
            i = index[y, x]
            if i < 0 or out[y, x] != fill:
                continue
            v = win[i // src_width - win_r0, i % src_width - win_c0]
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
    one band's observations ``t0 …`` into the (y, x, band, time) sink, ``k`` contiguous values a pixel."""
    nk, h, w = temp.shape
    for y in range(h):
        for x in range(w):
            for k in range(nk):
                view[y, x, band, t0 + k] = temp[k, y, x] if clear[t0 + k, y, x] else nodata
