r"""Per-pixel, per-band median composite of image stacks (numba).

For a pixel with clear observations :math:`x_1, \dots, x_n \in \mathbb{R}^p`
(time steps whose bands are *all* valid: not NaN for float input,
``!= nodata`` for uint16 input, the rule of the geomedian in
:mod:`algos.api`) the median composite is, band by band,

.. math:: m_j = \operatorname{median}(x_{1j}, \dots, x_{nj}),

with NumPy's convention: the middle value for odd :math:`n`, and for even
:math:`n` the mean of the two middle values computed in float32 as
``(lo + hi) / 2``, exactly as ``np.nanmedian`` does for float32 input (so
the results are bit-identical to ``np.nanmedian`` of the same values; two
middle values above ``float32`` max / 2 overflow to inf there and here).
For odd :math:`n` the middle value is returned as is; ``np.nanmedian``
along an axis of a multi-dimensional array computes ``(m + m) / 2`` instead,
which only differs for ``|m| > 1.7e38`` (inf there).  A zero median is
+0.0 even when the middle values are -0.0, as NumPy's (its sums start from
+0).  A pixel without a clear observation is NaN in every band.

Unlike the geomedian the band-wise median is not a spectrum of any one
observation (bands can come from different dates), but it is cheap,
robust and a common baseline composite.

Implementation: the kernel is parallel over image rows (``prange`` over
``y``; thread count and dynamic row scheduling via
:func:`algos.api.numba_threads`).  Per pixel the clear-observation mask is
built once, then per band the clear values are gathered into a float32
scratch buffer (uint16 DN convert exactly) and the middle value(s) are found
with the branch-free quickselect of :mod:`algos._kernels` — O(n) per band,
~2x faster than an insertion sort and ~4x faster than ``ndarray.sort`` for
30-80 observations.  No fastmath: the result is an input value or the
float32 mean of two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from . import _kernels as K
from .api import numba_threads

__all__ = ["MedianResult", "median_u16", "nanmedian_pcm"]

U16_MAX = int(np.iinfo(np.uint16).max)


@dataclass(frozen=True)
class MedianResult:
    """Output of :func:`median_u16`.

    median: float32 (ny, nx, nb) band-wise median in DN (the cube's units), NaN where count == 0.
    count: uint16 (ny, nx), clear observations (all bands != nodata).
    """

    median: NDArray[np.float32]
    count: NDArray[np.uint16]


@njit(cache=True, error_model="numpy")
def _median_f32(a, n: int, s1, s2):  # type: ignore[no-untyped-def]
    """NumPy-convention float32 median of ``a[:n]``, n >= 1 (``a`` kept; s1, s2 scratch).

    Even n: ``(lo + hi) / 2`` in float32 arithmetic, as ``np.nanmedian`` on float32;
    a zero median is +0.0 (as numpy's), whatever the sign of the zeros in ``a``.
    """
    for i in range(n):
        s1[i] = a[i]
    h = (n - 1) // 2
    lo = K._select_bf(s1, s2, n, h)
    zero = np.float32(0.0)  # x + 0 turns -0 into +0 (numpy's sums start from +0), else exact
    if n % 2 == 1:
        return lo + zero
    # even: the (h+1)-th smallest is lo again if lo is repeated, else min{a > lo}
    le = 0
    hi = np.float32(np.inf)
    for i in range(n):
        x = a[i]
        le += x <= lo
        hi = min(hi, x) if x > lo else hi
    if le > h + 1:
        hi = lo
    return (lo + hi) / np.float32(2.0) + zero


@njit(parallel=True, cache=True, error_model="numpy")
def median_kernel(X, use_nodata: bool, nodata, med_out, count_out) -> None:  # type: ignore[no-untyped-def]
    """Band-wise median over the clear observations of every pixel of ``X[y, x, band, time]``.

    An observation is clear when every band is valid (not NaN, or ``!= nodata``
    with ``use_nodata``).  med_out: float32 (ny, nx, nb), NaN without a clear
    observation; count_out: (ny, nx) number of clear observations.
    """
    ny, nx, nb, nt = X.shape
    for r in prange(ny):
        valid = np.empty(nt, dtype=np.uint8)
        buf = np.empty(nt + 1, dtype=np.float32)
        s1 = np.empty(nt + 1, dtype=np.float32)
        s2 = np.empty(nt + 1, dtype=np.float32)
        for c in range(nx):
            P = X[r, c]
            for t in range(nt):
                valid[t] = 1
            for j in range(nb):
                Pj = P[j]
                for t in range(nt):
                    valid[t] &= not K._invalid(Pj[t], use_nodata, nodata)
            n = 0
            for t in range(nt):
                n += valid[t]
            count_out[r, c] = n
            if n == 0:
                for j in range(nb):
                    med_out[r, c, j] = np.nan
                continue
            for j in range(nb):
                # branch-free compaction of the clear values (always store, advance when clear)
                Pj = P[j]
                k = 0
                for t in range(nt):
                    buf[k] = np.float32(Pj[t])
                    k += valid[t]
                med_out[r, c, j] = _median_f32(buf, n, s1, s2)


def _check_4d(arr: np.ndarray, name: str) -> None:
    if arr.ndim != 4:
        raise ValueError(f"{name} must be 4-d (y, x, band, time), got shape {arr.shape}")


def nanmedian_pcm(X: ArrayLike, num_threads: int | None = None) -> NDArray[np.float32]:
    """Band-wise median over the last axis of X (y, x, band, time) -> (y, x, band) float32.

    Observations (time steps) with a NaN in any band are ignored; pixels
    without a clear observation are NaN.  Output is in X's units (e.g.
    reflectance) and equals ``np.nanmedian`` of each pixel's clear values
    bit for bit (see :mod:`algos.median`).  float32 input is used as is
    (read-only and C-contiguous arrays without a copy); other floating dtypes
    are converted to float32 first.  ``num_threads``: numba threads (default:
    the current numba setting).
    """
    arr = np.asarray(X)
    _check_4d(arr, "X")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"X must be a floating-point array with NaN for missing values, got {arr.dtype}"
            " (use median_u16 for uint16 cubes with a nodata value)"
        )
    Xf = np.ascontiguousarray(arr, dtype=np.float32)
    ny, nx, nb, _ = Xf.shape
    med = np.empty((ny, nx, nb), dtype=np.float32)
    count = np.empty((ny, nx), dtype=np.int32)
    with numba_threads(num_threads):
        median_kernel(Xf, False, np.float32(0), med, count)
    return med


def median_u16(
    cube: NDArray[np.uint16],
    *,
    nodata: int = 0,
    num_threads: int | None = None,
    row_block: int = 64,
    progress: Callable[[int], object] | None = None,
) -> MedianResult:
    """Band-wise median of a uint16 cube (ny, nx, nb, nt) of DN -> :class:`MedianResult`.

    Observations with any band equal to ``nodata`` are ignored (as in
    :func:`algos.api.geomedian_mads_u16`).  The median is in DN, float32
    (even counts give half-integers), NaN where no observation is clear; it
    equals :func:`nanmedian_pcm` of the cube converted to float32 with
    nodata -> NaN, exactly.  The uint16 data are read directly, ``row_block``
    rows at a time (a bounded contiguous copy of a block only for
    non-contiguous input); ``progress(n_rows)`` is called after each block.
    """
    cube = np.asarray(cube)
    _check_4d(cube, "cube")
    if cube.dtype != np.uint16:
        raise ValueError(f"cube must be uint16, got {cube.dtype}")
    if not 0 <= int(nodata) <= U16_MAX:
        raise ValueError(f"nodata must be in 0..{U16_MAX}, got {nodata}")
    if int(row_block) < 1:
        raise ValueError(f"row_block must be >= 1, got {row_block}")
    ny, nx, nb, nt = cube.shape
    if nt > U16_MAX:
        raise ValueError(f"at most {U16_MAX} time steps (uint16 count), got {nt}")
    row_block = int(row_block)
    med = np.empty((ny, nx, nb), dtype=np.float32)
    count = np.empty((ny, nx), dtype=np.uint16)
    nd = np.uint16(nodata)
    with numba_threads(num_threads):
        for r0 in range(0, ny, row_block):
            r1 = min(ny, r0 + row_block)
            # a view for C-contiguous input; bounded copy of one block otherwise
            blk = np.ascontiguousarray(cube[r0:r1])
            median_kernel(blk, True, nd, med[r0:r1], count[r0:r1])
            if progress is not None:
                progress(r1 - r0)
    return MedianResult(median=med, count=count)
