"""Sentinel-2 SCL masking: which observations of a pixel are clear.

``nodata_classes`` (no data, saturated/defective) are invalid as they are. ``cloud_classes``
(cloud shadow, cloud medium/high probability, thin cirrus) form a cloud mask that is cleaned
with a morphological *opening* (drops specks narrower than the disc) and then *dilated* (grows
a safety margin around clouds and shadows), both with discs of the given radius in pixels, as
Digital Earth Africa's GeoMAD does (``[("opening", 2), ("dilation", 5)]``). Snow (11) is valid.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from numba import njit
from numpy.typing import NDArray

from runner.common.config import MaskConfig


def disk(radius: int) -> NDArray[np.bool_]:
    """A disc structuring element of the given radius in pixels (``2r+1`` square)."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


#: the largest disc radius the kernel takes (distances are uint8: 2 (r + 1) must fit in 255)
MAX_RADIUS = 126


@njit(cache=True, nogil=True, boundscheck=False)
def _disk_morphology(m: NDArray[np.uint8], radius: int, dilate: bool) -> NDArray[np.uint8]:
    """Binary dilation (``dilate``) or erosion of a 2-D 0/1 mask by :func:`disk` ``(radius)``,
    pixels outside the array being 0: exactly ``scipy.ndimage.binary_dilation`` /
    ``binary_erosion`` with that structure and their default ``border_value=0``.

    The disc is the union of its columns: column ``dx`` spans ``|dy| <= h(dx) = isqrt(r² - dx²)``.
    So with ``dist[y, x]``, the vertical distance from ``(y, x)`` to the nearest *deciding* pixel
    of its column (a 1 for a dilation; a 0, or the outside, for an erosion), capped at ``r + 1``, a
    pixel's disc holds a deciding pixel iff ``dist[y, x + dx] <= h(dx)`` for some ``dx``. ``dist``
    is two sweeps down and up the rows, and the test is ``min_dx(dist[y, x + dx] + r + 1 - h(dx))
    <= r + 1``: ``2r + 1`` passes of a uint8 ``min`` along a row. Every loop runs along x over
    contiguous uint8 rows, so LLVM vectorises them (32 pixels an instruction with AVX2): ≈ 6× the
    earlier per-pixel row-segment counts. ``nogil``: the load's threads run it side by side.
    """
    ny, nx = m.shape
    cap = np.uint8(radius + 1)
    one = np.uint8(1)
    tgt = np.uint8(1 if dilate else 0)  # the deciding value
    dist = np.empty((ny, nx), np.uint8)
    prev = np.empty(nx, np.uint8)
    # beyond the first/last row: nothing decides a dilation, the outside decides an erosion
    edge = cap if dilate else np.uint8(0)
    prev[:] = edge
    for y in range(ny):
        row, d = m[y], dist[y]
        for x in range(nx):
            v = min(prev[x] + one, cap) * np.uint8(row[x] != tgt)
            d[x] = v
            prev[x] = v
    prev[:] = edge
    for y in range(ny - 1, -1, -1):
        row, d = m[y], dist[y]
        for x in range(nx):
            v = min(prev[x] + one, cap) * np.uint8(row[x] != tgt)
            prev[x] = v
            d[x] = min(d[x], v)
    offs = np.empty(2 * radius + 1, np.uint8)  # r + 1 - h(dx)
    for k in range(2 * radius + 1):
        dx = k - radius
        h = 0
        while (h + 1) * (h + 1) <= radius * radius - dx * dx:
            h += 1
        offs[k] = cap - np.uint8(h)
    out = np.empty((ny, nx), np.uint8)
    best = np.empty(nx, np.uint8)
    for y in range(ny):
        drow = dist[y]
        best[:] = 255
        for k in range(2 * radius + 1):
            dx, off = k - radius, offs[k]
            lo, hi = max(0, -dx), min(nx, nx - dx)
            if not dilate:  # columns beyond the edges are outside: they decide an erosion
                for x in range(0, lo):
                    best[x] = min(best[x], off)
                for x in range(hi, nx):
                    best[x] = min(best[x], off)
            src, dst = drow[lo + dx : hi + dx], best[lo:hi]  # slices: no index wrap-around checks
            for i in range(hi - lo):
                dst[i] = min(dst[i], src[i] + off)
        o = out[y]
        for x in range(nx):
            o[x] = np.uint8(best[x] <= cap) if dilate else np.uint8(best[x] > cap)
    return out


def cleanup(mask: NDArray[np.bool_], opening: int, dilation: int) -> NDArray[np.bool_]:
    """Opening then dilation of a boolean mask over its last two axes (y, x), with discs of
    radius ``opening`` and ``dilation``; pixels outside the array count as clear (the result is
    ``scipy.ndimage``'s ``binary_opening`` then ``binary_dilation`` with :func:`disk`, exactly)."""
    if max(opening, dilation) > MAX_RADIUS:
        raise ValueError(f"a disc radius over {MAX_RADIUS} px is not supported")
    out = np.empty_like(mask, dtype=np.bool_)
    lead = np.ascontiguousarray(mask, dtype=np.bool_).reshape(-1, *mask.shape[-2:])
    flat = out.reshape(-1, *mask.shape[-2:])
    for i in range(lead.shape[0]):
        m = lead[i].view(np.uint8)
        if opening > 0:
            m = _disk_morphology(_disk_morphology(m, opening, False), opening, True)
        if dilation > 0:
            m = _disk_morphology(m, dilation, True)
        flat[i] = m.view(np.bool_)
    return out


def halo(cfg: MaskConfig) -> int:
    """Pixels of context a chunk needs so that chunked cleanup equals whole-array cleanup."""
    return 2 * cfg.opening + cfg.dilation + 1


def clear_mask(scl: da.Array, cfg: MaskConfig) -> da.Array:
    """Lazy boolean (time, y, x) array: True where an observation is clear."""
    cloud = da.isin(scl, np.asarray(cfg.cloud_classes, dtype=scl.dtype))
    if cfg.opening > 0 or cfg.dilation > 0:
        kw = {"opening": cfg.opening, "dilation": cfg.dilation}
        if len(cloud.chunks[1]) == 1 and len(cloud.chunks[2]) == 1:
            # one spatial chunk: no neighbours to borrow from (and map_overlap needs depth <= size)
            cloud = da.map_blocks(cleanup, cloud, dtype=bool, **kw)
        else:
            h = halo(cfg)
            cloud = da.map_overlap(
                cleanup, cloud, depth={0: 0, 1: h, 2: h}, boundary="none", dtype=bool, **kw
            )
    bad = da.isin(scl, np.asarray(cfg.nodata_classes, dtype=scl.dtype))
    return ~(bad | cloud)
