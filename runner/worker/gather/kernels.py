"""The gather's numba kernels; all release the GIL (the load's threads run them side by side).

:func:`gather_fuse` gathers one date of one band into a 2-D (rows, x) plane (the SCL, whose
clear mask needs whole planes for its morphology). :func:`gather_write` gathers several dates of
one band straight into the (y, x, band, time) sink: decoded source windows in, masked cube
values out, one source-pixel lookup for every date of a granule grid, no plane of the tile's
size in between.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

# columns of gather_write's ``parts`` table: one row per (source group, chunk map part)
P_MAP = 0  #: offset of the chunk map's first pixel in ``map_rows``/``map_cols``
P_MAP_W = 1  #: the map's width (px): its rows are that many values each
P_Y0 = 2  #: band row of the map's first row (may be < 0: the map starts above the band)
P_X0 = 3  #: tile column of the map's first column
P_LO = 4  #: first band row the part writes
P_HI = 5  #: one past its last band row
P_R0 = 6  #: source row of the group's window's first row
P_C0 = 7  #: source column of the window's first column
P_STACK = 8  #: offset of the group's decoded windows in ``stacks`` ((n, h, w), C order)
P_N = 9  #: sources (dates) in the group
P_H = 10  #: window height (px)
P_W = 11  #: window width (px)
P_DATES = 12  #: offset of the group's dates (within the task) in ``dates``
P_HAS = 13  #: 1 if the sources have an integer nodata value (skipped, as GDAL skips it)
P_NODATA = 14  #: that nodata value
P_FIRST = 15  #: 1 if the group holds the first source of each of its dates (nothing to fuse)
P_COLS = 16


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


@njit(cache=True, nogil=True, boundscheck=False)
def gather_write(
    view: NDArray[np.uint16],
    band: int,
    t0: int,
    nk: int,
    clear: NDArray[np.uint8],
    nodata: int,
    fill: int,
    parts: NDArray[np.int64],
    map_rows: NDArray[np.int16],
    map_cols: NDArray[np.int16],
    stacks: NDArray[np.uint16],
    dates: NDArray[np.int64],
) -> None:
    """``view[y, x, band, t0 + k]`` for ``k < nk``: each date's sources gathered and fused, then
    masked by the clear mask (``clear[t, y]``: date ``t``'s row ``y``, a bit a pixel, as
    ``np.packbits(..., bitorder="little")`` packs it; 0: ``nodata``).

    The sources come in *groups*: sources of several dates sharing one grid, window and chunk
    maps (the granules of one MGRS tile), decoded into one stack (n, h, w) at an offset of the
    flat ``stacks``, whose layer ``q`` is date ``dates[P_DATES + q]``; the chunk maps (source row
    and column per tile pixel, -1 none) lie flat in ``map_rows``/``map_cols``. ``parts``
    (columns ``P_*``) has a row per group and chunk map; groups of a date's first sources
    (``P_FIRST``) come before those of its second, and so on (odc-stac's fusing order). Row by
    row of the view, each part reaching the row reads its map once per pixel and gathers that
    source pixel of every date of its group into a (x, nk) row buffer: the first valid source of
    a day wins, pixel by pixel, as odc-stac's default fuser (``fill`` until then); a source
    pixel equal to the nodata is skipped, as GDAL skips it. The buffer is then masked and
    written ``nk`` contiguous values a pixel: the sink's cache lines are written whole, not once
    a date. Pixels no source reaches keep ``fill`` (odc-stac's fill value), masked like the
    rest. Plain arrays only (no typed lists): the compiled kernel is cached on disk."""
    h, w, nb, nt = view.shape
    vf = view.reshape(-1)
    sx = nb * nt
    nd, fl = np.uint16(nodata), np.uint16(fill)
    buf = np.empty((w, nk), np.uint16)
    cb = np.empty((w, nk), np.uint8)
    offs = np.empty(w, np.int64)  # a row's source offsets, per part
    xs = np.empty(w, np.int64)  # and their columns
    n_parts = parts.shape[0]
    for y in range(h):
        buf[:, :] = fl
        for p in range(n_parts):
            if y < parts[p, P_LO] or y >= parts[p, P_HI]:
                continue
            mw, x0 = parts[p, P_MAP_W], parts[p, P_X0]
            mo = parts[p, P_MAP] + (y - parts[p, P_Y0]) * mw
            mrow, mcol = map_rows[mo : mo + mw], map_cols[mo : mo + mw]
            n, ww = parts[p, P_N], parts[p, P_W]
            plane = parts[p, P_H] * ww
            sf = stacks[parts[p, P_STACK] : parts[p, P_STACK] + n * plane]
            ks = dates[parts[p, P_DATES] : parts[p, P_DATES] + n]
            r0, c0 = parts[p, P_R0], parts[p, P_C0]
            has, snd = parts[p, P_HAS] != 0, np.uint16(parts[p, P_NODATA])
            first = parts[p, P_FIRST] != 0
            # the row's source offsets once, then one date at a time: one stream of reads
            nv = 0
            for j in range(mw):
                r = np.int64(mrow[j])
                if r >= 0:
                    offs[nv] = (r - r0) * ww + (np.int64(mcol[j]) - c0)
                    xs[nv] = x0 + j
                    nv += 1
            for q in range(n):
                k, sq = ks[q], sf[q * plane : (q + 1) * plane]
                if first:
                    for i in range(nv):
                        v = sq[offs[i]]
                        buf[xs[i], k] = fl if has and v == snd else v
                else:
                    for i in range(nv):
                        if buf[xs[i], k] != fl:
                            continue
                        v = sq[offs[i]]
                        if not (has and v == snd):
                            buf[xs[i], k] = v
        base = y * w * sx + band * nt + t0
        for k in range(nk):  # the row's clear bits, unpacked to (x, date)
            cyk = clear[t0 + k, y]
            for x in range(w):
                cb[x, k] = (cyk[x >> 3] >> (x & 7)) & 1
        for x in range(w):
            o, b, c = vf[base + x * sx : base + x * sx + nk], buf[x], cb[x]
            for k in range(nk):
                o[k] = b[k] if c[k] else nd
