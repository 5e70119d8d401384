"""Numba kernels for the per-pixel geometric median and MADs.

All kernels work on a 4-d stack ``X[y, x, band, time]`` (time contiguous per
pixel, the hdstats/geomad layout) and are parallel over image rows
(``prange`` over ``y``), sequential over the columns of a row.

Per pixel the valid observations (time steps whose bands are *all* valid:
not NaN for float input, ``!= nodata`` for integer input) are first gathered
into a small dense, band-major float32 scratch buffer ``xb[band, k]``.  All
later passes run over that buffer with unit-stride inner loops over ``k``, so
masked observations cost nothing after the gather and the inner loops
vectorise (SIMD over observations).  (The stand-alone float MAD kernel skips the
gather: NaN propagates through a distance and NaN distances are dropped; the
integer / explicit-nodata one, :func:`mad_gather_kernel`, gathers.)  Integer input is converted to
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

# Floating-point flags for the Weiszfeld/MAD inner loops: allow reassociation
# (vectorised sums over observations) and FMA contraction only.  NaN/Inf
# semantics are kept (no 'nnan'/'ninf'), which the kernels rely on; the
# accuracy tests against geomad cover the changed summation order.
FASTMATH = {"reassoc", "contract"}

# distance kinds for the MAD kernels
EMAD = 0
SMAD = 1
BCMAD = 2


@njit(cache=True, inline="always", error_model="numpy")
def _invalid(v, use_nodata: bool, nodata) -> bool:
    """``v`` is missing: NaN (``v != v``, always False for integers), or equal to ``nodata``."""
    if use_nodata:
        return v == nodata or v != v
    return v != v  # NaN test that also compiles for integer dtypes


@njit(cache=True, error_model="numpy")
def _gather(P, use_nodata: bool, nodata, scale, offset, valid, xb) -> int:
    """Gather the valid observations of one pixel ``P[band, time]`` into ``xb[:, :k]``.

    An observation is valid when all its bands are valid.  Returns ``k``.
    The compaction is branch-free (always store, advance when valid), which
    beats index lists and per-observation branches on partially cloudy data.
    """
    nb, nt = P.shape
    for t in range(nt):
        valid[t] = 1
    for j in range(nb):
        Pj = P[j]
        for t in range(nt):
            valid[t] &= not _invalid(Pj[t], use_nodata, nodata)
    k = 0
    for j in range(nb):
        Pj = P[j]
        row = xb[j]
        k = 0
        for t in range(nt):
            row[k] = np.float32(Pj[t]) * scale + offset
            k += valid[t]
    if nb == 0:
        for t in range(nt):
            k += valid[t]
    return k


@njit(cache=True, error_model="numpy")
def _all_same(xb, nv: int) -> bool:
    """True when all nv gathered observations are identical (early exit otherwise)."""
    nb = xb.shape[0]
    for k in range(1, nv):
        for j in range(nb):
            if xb[j, k] != xb[j, 0]:
                return False
    return True


@njit(cache=True, error_model="numpy")
def _nanmean_start(P, use_nodata: bool, nodata, scale, offset, y) -> None:
    """geomad/hdstats starting point: per-band mean over all individually valid values."""
    nb, nt = P.shape
    for j in range(nb):
        tot = 0.0
        cnt = 0
        for t in range(nt):
            v = P[j, t]
            if not _invalid(v, use_nodata, nodata):
                tot += np.float32(v) * scale + offset
                cnt += 1
        y[j] = tot / cnt if cnt > 0 else np.nan


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _weiszfeld(
    xb, nv: int, y, y1, yf, dd, inv, T, maxiters: int, eps: float, weighted: bool, wb
) -> tuple[int, bool]:
    """Vardi-Zhang modified Weiszfeld iteration on ``xb[:, :nv]``, in place on ``y``.

    With ``weighted`` the observation weights ``wb[:nv]`` multiply 1/d (and
    replace it for an observation coinciding with the iterate), as in geomad.

    The inner O(nb * nv) loops run over the observation axis (SIMD).  The
    squared distances and the weights 1/d are computed in float32 (geomad
    stores D and 1/D as float32 too; this halves the cost of the sqrt/div
    pass), the weighted sums T, the iterate and the step length in float64.
    Returns (iterations, final step was NaN).
    """
    nb = xb.shape[0]
    it = 0
    nan_step = False
    zero = 0.0
    while it < maxiters:
        for j in range(nb):
            yf[j] = np.float32(y[j])
        # squared distances, vectorised over observations
        for k in range(nv):
            dd[k] = 0
        for j in range(nb):
            yj = yf[j]
            row = xb[j]
            for k in range(nv):
                diff = row[k] - yj
                dd[k] += diff * diff
        S = zero
        nz = 0
        for k in range(nv):
            q = dd[k]
            # an observation coinciding with the iterate gets weight 1 (as geomad)
            w = np.float32(1.0) / np.sqrt(q)
            w = np.float32(1.0) if q == 0 else w
            if weighted:
                w *= wb[k]
            nz += q == 0
            inv[k] = w
            S += np.float64(w)
        Sd = S
        for j in range(nb):
            row = xb[j]
            tot = zero
            for k in range(nv):
                tot += inv[k] * np.float64(row[k])
            T[j] = tot / Sd
        if nz == 0:
            for j in range(nb):
                y1[j] = T[j]
        elif nz == nv:
            # every observation coincides with the iterate: it is the median
            for j in range(nb):
                y1[j] = y[j]
            break
        else:
            # Vardi & Zhang (2000): R = sum_{x_i != y} (x_i - y)/d_i = (T - y) * S
            r = 0.0
            for j in range(nb):
                Rj = (T[j] - y[j]) * Sd
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


@njit(cache=True, error_model="numpy")
def _select_bf(a, b, n: int, k: int):
    """k-th smallest (0-based) of ``a[:n]``; ``a`` and ``b`` are both used as scratch.

    Quickselect with a branch-free three-way partition into the other buffer
    (every element is stored at both ends, the cursors advance on the
    comparison results), so there are no unpredictable branches; small
    ranges finish with a branch-free rank count.
    """
    src = a
    dst = b
    s0 = 0
    while n > 12:
        x0 = src[s0]
        x1 = src[s0 + (n >> 1)]
        x2 = src[s0 + n - 1]
        p = max(min(x0, x1), min(max(x0, x1), x2))
        il = 0
        ih = n - 1
        for i in range(n):
            x = src[s0 + i]
            dst[il] = x
            il += x < p
            dst[ih] = x
            ih -= x > p
        if k < il:
            n = il
            s0 = 0
        elif k <= ih:
            return p
        else:
            k -= ih + 1
            s0 = ih + 1
            n = n - 1 - ih
        src, dst = dst, src
    # small range: branch-free rank selection (a[i] occupies sorted positions
    # [#{a < a[i]}, #{a <= a[i]}))
    res = src[s0]
    for i in range(s0, s0 + n):
        ai = src[i]
        lt = 0
        le = 0
        for j in range(s0, s0 + n):
            x = src[j]
            lt += x < ai
            le += x <= ai
        res = ai if (lt <= k and k < le) else res
    return res


@njit(cache=True, error_model="numpy")
def _median(a, n: int, s1, s2) -> float:
    """NumPy-convention median of ``a[:n]`` (``a`` is kept; s1, s2 are scratch); NaN if n == 0."""
    if n == 0:
        return np.nan
    for i in range(n):
        s1[i] = a[i]
    h = (n - 1) // 2
    lo = _select_bf(s1, s2, n, h)
    if n % 2 == 1:
        return lo
    # even: the (h+1)-th smallest is lo again if lo is repeated, else min{a > lo}
    le = 0
    hi = np.inf
    for i in range(n):
        x = a[i]
        le += x <= lo
        hi = min(hi, x) if x > lo else hi
    if le > h + 1:
        hi = lo
    return 0.5 * (np.float64(lo) + np.float64(hi))


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _mad(xb, nv: int, g, kind: int, buf, acc, dist, s1, s2) -> float:
    """Median over the nv gathered observations of the chosen distance to g.

    Per-observation distances are accumulated in float64 (``buf``/``acc``,
    vectorised over observations), rounded to float32 like geomad's result
    array, and undefined ones (NaN, e.g. 0/0) are dropped as np.nanmedian does.
    """
    nb = xb.shape[0]
    for k in range(nv):
        buf[k] = 0.0
        acc[k] = 0.0
    if kind == EMAD:
        for j in range(nb):
            gj = g[j]
            row = xb[j]
            for k in range(nv):
                diff = np.float64(row[k]) - gj
                buf[k] += diff * diff
        for k in range(nv):
            buf[k] = np.float32(math.sqrt(buf[k]))
    elif kind == SMAD:
        ng = 0.0
        for j in range(nb):
            ng += g[j] * g[j]
        ng = math.sqrt(ng)
        for j in range(nb):
            gj = g[j]
            row = xb[j]
            for k in range(nv):
                x = np.float64(row[k])
                buf[k] += x * gj
                acc[k] += x * x
        for k in range(nv):
            # IEEE division: 0/0 -> NaN (dropped), x/0 -> inf, as geomad's C code
            buf[k] = np.float32(1.0 - _div(buf[k], math.sqrt(acc[k]) * ng))
    else:
        for j in range(nb):
            gj = g[j]
            row = xb[j]
            for k in range(nv):
                x = np.float64(row[k])
                buf[k] += abs(x - gj)
                acc[k] += abs(x + gj)
        for k in range(nv):
            buf[k] = np.float32(_div(buf[k], acc[k]))
    m = 0
    for k in range(nv):
        v = np.float32(buf[k])
        dist[m] = v
        m += v == v
    return _median(dist, m, s1, s2)


@njit(cache=True, error_model="numpy")
def _div(a: float, b: float) -> float:
    """IEEE-754 a / b (numba would raise ZeroDivisionError for b == 0)."""
    if b != 0.0:
        return a / b
    if a != a or a == 0.0:
        return np.nan
    return math.copysign(np.inf, a) * math.copysign(1.0, b)


@njit(parallel=True, cache=True, error_model="numpy")
def geomedian_kernel(
    X,
    use_nodata: bool,
    nodata,
    scale,
    offset,
    maxiters: int,
    eps: float,
    weights,
    with_mads: bool,
    gm_out,
    emad_out,
    smad_out,
    bcmad_out,
    count_out,
    iter_out,
) -> None:
    """Geomedian (and optionally the three MADs) of every pixel of X.

    gm_out (ny, nx, nb) float32; the rest (ny, nx); MAD outputs are ignored
    unless ``with_mads``.  ``weights``: float32 (nt,) per-observation weights
    for the geomedian, or an empty array for unweighted.  ``scale``/``offset`` must be float32 scalars.
    """
    ny, nx, nb, nt = X.shape
    weighted = weights.shape[0] > 0
    for r in prange(ny):
        valid = np.empty(nt, dtype=np.uint8)
        xb = np.empty((nb, nt + 1), dtype=np.float32)
        wb = np.empty(nt + 1, dtype=np.float32)
        y = np.empty(nb, dtype=np.float64)
        y1 = np.empty(nb, dtype=np.float64)
        yf = np.empty(nb, dtype=np.float32)
        T = np.empty(nb, dtype=np.float64)
        g = np.empty(nb, dtype=np.float64)
        dd = np.empty(nt + 1, dtype=np.float32)
        inv = np.empty(nt + 1, dtype=np.float32)
        buf = np.empty(nt + 1, dtype=np.float64)
        acc = np.empty(nt + 1, dtype=np.float64)
        dist = np.empty(nt + 1, dtype=np.float32)
        s1 = np.empty(nt + 1, dtype=np.float32)
        s2 = np.empty(nt + 1, dtype=np.float32)
        reseed = True
        for c in range(nx):
            P = X[r, c]
            nv = _gather(P, use_nodata, nodata, scale, offset, valid, xb)
            if weighted:
                m = 0
                for t in range(nt):
                    wb[m] = weights[t]
                    m += valid[t]
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
            if _all_same(xb, nv):
                # one observation, or all identical: that observation, exactly
                # (geomad keeps reseeding only if it stopped before iterating)
                reseed = reseed and nv == nt
                iter_out[r, c] = 0
                for j in range(nb):
                    y1[j] = xb[j, 0]
            else:
                # geomad/hdstats trajectory: start from the band-wise nan-mean for
                # the first pixel of a row (and after a pixel whose iteration
                # ended on NaN), otherwise from the origin.
                if reseed:
                    _nanmean_start(P, use_nodata, nodata, scale, offset, y)
                else:
                    for j in range(nb):
                        y[j] = 0.0
                for j in range(nb):
                    y1[j] = y[j]
                it, nan_step = _weiszfeld(
                    xb, nv, y, y1, yf, dd, inv, T, maxiters, eps, weighted, wb
                )
                if it > 0:
                    reseed = nan_step
                iter_out[r, c] = it
            for j in range(nb):
                gv = np.float32(y1[j])
                gm_out[r, c, j] = gv
                g[j] = gv
            if with_mads:
                emad_out[r, c] = _mad(xb, nv, g, EMAD, buf, acc, dist, s1, s2)
                smad_out[r, c] = _mad(xb, nv, g, SMAD, buf, acc, dist, s1, s2)
                bcmad_out[r, c] = _mad(xb, nv, g, BCMAD, buf, acc, dist, s1, s2)


@njit(parallel=True, cache=True, error_model="numpy")
def mad_kernel(X, gm, kind: int, out) -> None:
    """One MAD (EMAD/SMAD/BCMAD by ``kind``) of float X against geomedian gm.

    Works on the dense series without a gather: a NaN in any band makes that
    observation's distance NaN, and NaN distances are dropped before the
    median (geomad's semantics), so one streaming pass over the data suffices.
    """
    ny, nx, nb, nt = X.shape
    for r in prange(ny):
        g = np.empty(nb, dtype=np.float64)
        buf = np.empty(nt + 1, dtype=np.float64)
        acc = np.empty(nt + 1, dtype=np.float64)
        dist = np.empty(nt + 1, dtype=np.float32)
        s1 = np.empty(nt + 1, dtype=np.float32)
        s2 = np.empty(nt + 1, dtype=np.float32)
        for c in range(nx):
            for j in range(nb):
                g[j] = gm[r, c, j]
            out[r, c] = _mad(X[r, c], nt, g, kind, buf, acc, dist, s1, s2)


@njit(parallel=True, cache=True, error_model="numpy")
def mad_gather_kernel(X, use_nodata: bool, nodata, scale, offset, gm, kind: int, out) -> None:
    """One MAD of X (integer or float) against the geomedian gm (in scaled units), with a gather.

    Each pixel's valid observations (no band NaN or ``nodata``) are gathered and scaled
    (``float32(v) * scale + offset``) exactly as in :func:`geomedian_kernel`, then the MAD of
    :func:`_mad` is taken over them: the same numbers as the fused u16 path.
    ``scale``/``offset`` must be float32 scalars.
    """
    ny, nx, nb, nt = X.shape
    for r in prange(ny):
        valid = np.empty(nt, dtype=np.uint8)
        xb = np.empty((nb, nt + 1), dtype=np.float32)
        g = np.empty(nb, dtype=np.float64)
        buf = np.empty(nt + 1, dtype=np.float64)
        acc = np.empty(nt + 1, dtype=np.float64)
        dist = np.empty(nt + 1, dtype=np.float32)
        s1 = np.empty(nt + 1, dtype=np.float32)
        s2 = np.empty(nt + 1, dtype=np.float32)
        for c in range(nx):
            nv = _gather(X[r, c], use_nodata, nodata, scale, offset, valid, xb)
            for j in range(nb):
                g[j] = gm[r, c, j]
            out[r, c] = _mad(xb, nv, g, kind, buf, acc, dist, s1, s2)
