"""Numba kernels for the per-pixel geometric median and MADs.

All kernels work on a 4-d stack ``X[y, x, band, time]`` (time contiguous per
pixel, the hdstats/geomad layout) and are parallel over image rows
(``prange`` over ``y``), sequential over the columns of a row.

Per pixel the valid observations (time steps whose bands are *all* valid:
not NaN for float input, ``!= nodata`` for integer input) are first gathered
into a small dense, band-major scratch buffer ``xb[band, k]`` (float64).  All
later passes run over that buffer with unit-stride inner loops over ``k``, so
masked observations cost nothing after the gather and the inner loops
vectorise (SIMD over observations).  Integer input is converted to
reflectance on the fly during the gather as ``float32(DN) * scale + offset``
(float32 arithmetic, bit-identical to ``cube.astype(float32) * scale +
offset`` in NumPy), so no float copy of the cube is ever made.

The geometric median uses the Vardi & Zhang (2000) modified Weiszfeld
iteration with the geomad/hdstats trajectory (same starting point and the
same treatment of an iterate that coincides with observations); see
:mod:`algos` for the maths and references.  The MADs are medians (NumPy
convention: mean of the two middle values for an even count) of per
observation distances to the float32-rounded geomedian.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# distance kinds for the MAD kernels
EMAD = 0
SMAD = 1
BCMAD = 2


@njit(cache=True, inline="always")
def _invalid(v, use_nodata: bool, nodata) -> bool:  # type: ignore[no-untyped-def]
    if use_nodata:
        return v == nodata
    return v != v  # NaN test that also compiles for integer dtypes


@njit(cache=True)
def _gather(X, r: int, c: int, use_nodata: bool, nodata, scale, offset,
            valid, xb, start) -> int:  # type: ignore[no-untyped-def]
    """Gather the valid observations of pixel (r, c) into ``xb[:, :k]``.

    Also writes into ``start`` the per-band mean over all individually valid
    values (the geomad/hdstats starting point, which includes observations
    that are only partially valid).  Returns ``k``, the number of valid
    observations.
    """
    nb = X.shape[2]
    nt = X.shape[3]
    for t in range(nt):
        valid[t] = True
    for j in range(nb):
        tot = 0.0
        cnt = 0
        for t in range(nt):
            v = X[r, c, j, t]
            if _invalid(v, use_nodata, nodata):
                valid[t] = False
            else:
                tot += np.float32(v) * scale + offset
                cnt += 1
        start[j] = tot / cnt if cnt > 0 else np.nan
    k = 0
    for t in range(nt):
        if valid[t]:
            for j in range(nb):
                xb[j, k] = np.float32(X[r, c, j, t]) * scale + offset
            k += 1
    return k


@njit(cache=True)
def _weiszfeld(xb, nv: int, y, y1, dd, inv, T, maxiters: int, eps: float) -> tuple[int, bool]:
    """Vardi-Zhang modified Weiszfeld iteration on ``xb[:, :nv]``, in place on ``y``.

    Returns (iterations, final step was NaN).
    """
    nb = xb.shape[0]
    it = 0
    nan_step = False
    while it < maxiters:
        # squared distances, vectorised over observations
        for k in range(nv):
            dd[k] = 0.0
        for j in range(nb):
            yj = y[j]
            for k in range(nv):
                diff = xb[j, k] - yj
                dd[k] += diff * diff
        S = 0.0
        nz = 0
        for k in range(nv):
            d = math.sqrt(dd[k])
            if d > 0.0:
                w = 1.0 / d
            else:
                # observation coincides with the iterate (geomad: weight 1)
                w = 1.0
                nz += 1
            inv[k] = w
            S += w
        for j in range(nb):
            tot = 0.0
            for k in range(nv):
                tot += inv[k] * xb[j, k]
            T[j] = tot / S
        if nz == 0:
            for j in range(nb):
                y1[j] = T[j]
        elif nz == nv:
            # every observation coincides with the iterate: it is the median
            for j in range(nb):
                y1[j] = y[j]
            break
        else:
            # Vardi & Zhang (2000): R = sum_{x_i != y} (x_i - y)/d_i
            r = 0.0
            for j in range(nb):
                Rj = (T[j] - y[j]) * S
                r += Rj * Rj
            r = math.sqrt(r)
            rinv = nz / r if r > 0.0 else 0.0
            a = max(0.0, 1.0 - rinv)
            b = min(1.0, rinv)
            for j in range(nb):
                y1[j] = a * T[j] + b * y[j]
        step = 0.0
        for j in range(nb):
            diff = y[j] - y1[j]
            step += diff * diff
            y[j] = y1[j]
        step = math.sqrt(step)
        it += 1
        if step != step:
            nan_step = True
            break
        if step < eps:
            break
    return it, nan_step


@njit(cache=True)
def _select(a, n: int, kth: int) -> float:
    """Quickselect: partially sort ``a[:n]`` in place so a[kth] is the kth smallest."""
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        # median of three pivot
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if kth <= j:
            hi = j
        elif kth >= i:
            lo = i
        else:
            break
    return a[kth]


@njit(cache=True)
def _median(a, n: int) -> float:
    """NumPy-convention median of ``a[:n]`` (destroys order); NaN if n == 0."""
    if n == 0:
        return np.nan
    h = (n - 1) // 2
    lo = _select(a, n, h)
    if n % 2 == 1:
        return lo
    # even: mean of a[h] and the smallest element above it
    hi = a[h + 1]
    for i in range(h + 2, n):
        if a[i] < hi:
            hi = a[i]
    return 0.5 * (lo + hi)


@njit(cache=True)
def _mad(xb, nv: int, g, kind: int, buf) -> float:
    """Median over the nv gathered observations of the chosen distance to g."""
    nb = xb.shape[0]
    m = 0
    if kind == EMAD:
        for k in range(nv):
            buf[k] = 0.0
        for j in range(nb):
            gj = g[j]
            for k in range(nv):
                diff = xb[j, k] - gj
                buf[k] += diff * diff
        for k in range(nv):
            v = np.float32(math.sqrt(buf[k]))
            if v == v:
                buf[m] = v
                m += 1
    elif kind == SMAD:
        ng = 0.0
        for j in range(nb):
            ng += g[j] * g[j]
        ng = math.sqrt(ng)
        for k in range(nv):
            num = 0.0
            nx2 = 0.0
            for j in range(nb):
                x = xb[j, k]
                num += x * g[j]
                nx2 += x * x
            den = math.sqrt(nx2) * ng
            if den != 0.0:
                v = np.float32(1.0 - num / den)
            elif num != 0.0:
                v = np.float32(1.0 - math.copysign(np.inf, num))
            else:
                v = np.float32(np.nan)
            if v == v:
                buf[m] = v
                m += 1
    else:
        for k in range(nv):
            num = 0.0
            den = 0.0
            for j in range(nb):
                x = xb[j, k]
                num += abs(x - g[j])
                den += abs(x + g[j])
            if den != 0.0:
                v = np.float32(num / den)
            elif num != 0.0:
                v = np.float32(np.inf)
            else:
                v = np.float32(np.nan)
            if v == v:
                buf[m] = v
                m += 1
    return _median(buf, m)


@njit(parallel=True, cache=True)
def geomedian_kernel(X, use_nodata: bool, nodata, scale, offset, maxiters: int, eps: float,
                     with_mads: bool, gm_out, emad_out, smad_out, bcmad_out,
                     count_out, iter_out) -> None:  # type: ignore[no-untyped-def]
    """Geomedian (and optionally the three MADs) of every pixel of X.

    gm_out (ny, nx, nb) float32; the rest (ny, nx); MAD outputs are ignored
    unless ``with_mads``.  ``scale``/``offset`` must be float32 scalars.
    """
    ny, nx, nb, nt = X.shape
    for r in prange(ny):
        valid = np.empty(nt, dtype=np.bool_)
        xb = np.empty((nb, max(nt, 1)), dtype=np.float64)
        start = np.empty(nb, dtype=np.float64)
        y = np.empty(nb, dtype=np.float64)
        y1 = np.empty(nb, dtype=np.float64)
        T = np.empty(nb, dtype=np.float64)
        g = np.empty(nb, dtype=np.float64)
        dd = np.empty(max(nt, 1), dtype=np.float64)
        inv = np.empty(max(nt, 1), dtype=np.float64)
        reseed = True
        for c in range(nx):
            nv = _gather(X, r, c, use_nodata, nodata, scale, offset, valid, xb, start)
            count_out[r, c] = nv
            if nv == 0:
                for j in range(nb):
                    gm_out[r, c, j] = np.nan
                iter_out[r, c] = 0
                if with_mads:
                    emad_out[r, c] = np.nan
                    smad_out[r, c] = np.nan
                    bcmad_out[r, c] = np.nan
                # geomad: an all-invalid pixel ends on a NaN step -> reseed
                if maxiters > 0:
                    reseed = True
                continue
            # geomad/hdstats trajectory: start from the band-wise nan-mean for
            # the first pixel of a row (and after a pixel whose iteration ended
            # on NaN), otherwise from the origin.
            for j in range(nb):
                y[j] = start[j] if reseed else 0.0
                y1[j] = y[j]
            it, nan_step = _weiszfeld(xb, nv, y, y1, dd, inv, T, maxiters, eps)
            if it > 0:
                reseed = nan_step
            iter_out[r, c] = it
            for j in range(nb):
                gv = np.float32(y1[j])
                gm_out[r, c, j] = gv
                g[j] = gv
            if with_mads:
                emad_out[r, c] = _mad(xb, nv, g, EMAD, dd)
                smad_out[r, c] = _mad(xb, nv, g, SMAD, dd)
                bcmad_out[r, c] = _mad(xb, nv, g, BCMAD, dd)


@njit(parallel=True, cache=True)
def mad_kernel(X, gm, kind: int, out) -> None:  # type: ignore[no-untyped-def]
    """One MAD (EMAD/SMAD/BCMAD by ``kind``) of float X against geomedian gm."""
    ny, nx, nb, nt = X.shape
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for r in prange(ny):
        valid = np.empty(nt, dtype=np.bool_)
        xb = np.empty((nb, max(nt, 1)), dtype=np.float64)
        start = np.empty(nb, dtype=np.float64)
        g = np.empty(nb, dtype=np.float64)
        buf = np.empty(max(nt, 1), dtype=np.float64)
        for c in range(nx):
            nv = _gather(X, r, c, False, 0, one, zero, valid, xb, start)
            for j in range(nb):
                g[j] = gm[r, c, j]
            out[r, c] = _mad(xb, nv, g, kind, buf)
