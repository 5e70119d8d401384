"""Public, hdstats/geomad-compatible entry points (see :mod:`algos` for the maths)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, overload

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _kernels as K

__all__ = [
    "GeomadResult",
    "bcmad_pcm",
    "emad_pcm",
    "geomedian_mads_u16",
    "nangeomedian_pcm",
    "smad_pcm",
]

BACKENDS = ("numba", "geomad", "hdstats")
HDSTATS_HINT = "pip install hdstats==0.2.1 'scipy<1.15'"


@dataclass
class GeomadResult:
    """Output of :func:`geomedian_mads_u16`.

    gm: float32 (ny, nx, nb) geomedian in reflectance units, NaN without valid obs.
    emad, smad, bcmad: float32 (ny, nx), NaN without valid obs.
    count: uint16 (ny, nx), observations with all bands != nodata.
    iterations: int32 (ny, nx), Weiszfeld iterations (0 for backends that cannot report it).
    """

    gm: NDArray[np.float32]
    emad: NDArray[np.float32]
    smad: NDArray[np.float32]
    bcmad: NDArray[np.float32]
    count: NDArray[np.uint16]
    iterations: NDArray[np.int32]


@contextlib.contextmanager
def numba_threads(num_threads: int | None) -> Iterator[int]:
    """Temporarily set the numba thread count (clamped to 1..NUMBA_NUM_THREADS).

    Also sets the parallel chunk size to 1 row, so rows are handed out
    dynamically: row costs vary with cloud cover (and with other load on the
    machine), which a static split of the rows would not balance.
    """
    old = numba.get_num_threads()
    old_chunk = numba.get_parallel_chunksize()
    n = (
        old
        if num_threads is None
        else max(1, min(int(num_threads), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    )
    numba.set_num_threads(n)
    numba.set_parallel_chunksize(1)
    try:
        yield n
    finally:
        numba.set_parallel_chunksize(old_chunk)
        numba.set_num_threads(old)


def _as_stack(X: ArrayLike, ndim: int = 4, name: str = "X") -> NDArray[np.float32]:
    arr = np.asarray(X)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-d, got shape {arr.shape}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr)


@overload
def nangeomedian_pcm(
    X: ArrayLike,
    weight: ArrayLike | None = ...,
    maxiters: int = ...,
    eps: float = ...,
    num_threads: int | None = ...,
    nocheck: bool = ...,
    return_iterations: Literal[False] = ...,
    **kw: Any,
) -> NDArray[np.float32]: ...


@overload
def nangeomedian_pcm(
    X: ArrayLike,
    weight: ArrayLike | None = ...,
    maxiters: int = ...,
    eps: float = ...,
    num_threads: int | None = ...,
    nocheck: bool = ...,
    *,
    return_iterations: Literal[True],
    **kw: Any,
) -> tuple[NDArray[np.float32], NDArray[np.int32]]: ...


def nangeomedian_pcm(
    X: ArrayLike,
    weight: ArrayLike | None = None,
    maxiters: int = 1000,
    eps: float = 1e-4,
    num_threads: int | None = None,
    nocheck: bool = False,
    return_iterations: bool = False,
    **kw: Any,
) -> NDArray[np.float32] | tuple[NDArray[np.float32], NDArray[np.int32]]:
    """Geometric median over the last axis of X (y, x, band, time) -> (y, x, band) float32.

    With ``return_iterations=True`` returns ``(gm, iterations)``, iterations an
    int32 (y, x) array of Weiszfeld steps per pixel.

    Observations with any NaN band are ignored; pixels without a valid
    observation are NaN.  ``weight``: optional positive weight per time step
    (weighted geomedian, argmin sum_t w_t ||x_t - y||, as hdstats/geomad);
    ``nocheck`` and extra keywords are accepted for compatibility.
    """
    Xf = _as_stack(X)
    w = np.empty(0, dtype=np.float32)
    if weight is not None:
        w = np.ascontiguousarray(np.asarray(weight, dtype=np.float32).ravel())
        if w.size != Xf.shape[3]:
            raise ValueError("weight must have one entry per time step")
    ny, nx, nb, _ = Xf.shape
    gm = np.empty((ny, nx, nb), dtype=np.float32)
    count = np.empty((ny, nx), dtype=np.uint16)
    iters = np.empty((ny, nx), dtype=np.int32)
    dummy = np.empty((0, 0), dtype=np.float32)
    with numba_threads(num_threads):
        K.geomedian_kernel(
            Xf,
            False,
            np.float32(0),
            np.float32(1),
            np.float32(0),
            int(maxiters),
            float(eps),
            w,
            False,
            gm,
            dummy,
            dummy,
            dummy,
            count,
            iters,
        )
    if return_iterations:
        return gm, iters
    return gm


def _mad(X: ArrayLike, gm: ArrayLike, kind: int, num_threads: int | None) -> NDArray[np.float32]:
    Xf = _as_stack(X)
    g = _as_stack(gm, 3, "gm")
    if not g.flags.writeable:
        g = g.copy()  # small; avoids compiling a read-only variant of the kernel
    if g.shape != Xf.shape[:3]:
        raise ValueError(f"gm shape {g.shape} does not match X shape {Xf.shape}")
    out = np.empty(Xf.shape[:2], dtype=np.float32)
    with numba_threads(num_threads):
        K.mad_kernel(Xf, g, kind, out)
    return out


def emad_pcm(
    X: ArrayLike, gm: ArrayLike, num_threads: int | None = None, **kw: Any
) -> NDArray[np.float32]:
    """Euclidean MAD: median_t ||x_t - m||_2 over valid observations -> (y, x)."""
    return _mad(X, gm, K.EMAD, num_threads)


def smad_pcm(
    X: ArrayLike, gm: ArrayLike, num_threads: int | None = None, **kw: Any
) -> NDArray[np.float32]:
    """Spectral (cosine) MAD: median_t (1 - <x_t, m>/(||x_t|| ||m||)) -> (y, x)."""
    return _mad(X, gm, K.SMAD, num_threads)


def bcmad_pcm(
    X: ArrayLike, gm: ArrayLike, num_threads: int | None = None, **kw: Any
) -> NDArray[np.float32]:
    """Bray-Curtis MAD: median_t sum|x_t - m| / sum|x_t + m| -> (y, x)."""
    return _mad(X, gm, K.BCMAD, num_threads)


def _external_backend(backend: str) -> Any:
    if backend == "geomad":
        import geomad

        return geomad
    try:
        import hdstats
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"backend='hdstats' needs the hdstats package: {HDSTATS_HINT}") from e
    return hdstats


def geomedian_mads_u16(
    cube: NDArray[np.uint16],
    *,
    scale: float,
    offset: float,
    nodata: int = 0,
    eps: float = 1e-4,
    maxiters: int = 1000,
    num_threads: int | None = None,
    row_block: int = 64,
    backend: str = "numba",
    progress: Callable[[int], Any] | None = None,
) -> GeomadResult:
    """Geomedian + EMAD/SMAD/BCMAD of a uint16 cube (ny, nx, nb, nt).

    Reflectance = DN * scale + offset (computed in float32); observations with
    any band equal to ``nodata`` are ignored.  The cube is processed
    ``row_block`` rows at a time: the numba backend reads the uint16 data
    directly (no float copy at all), the geomad/hdstats backends convert one
    row block at a time to float32, so extra memory is bounded by row_block.
    ``progress(n_rows)`` is called after each row block.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    cube = np.asarray(cube)
    if cube.ndim != 4:
        raise ValueError(f"cube must be 4-d (ny, nx, nb, nt), got shape {cube.shape}")
    if cube.dtype != np.uint16:
        raise TypeError(f"cube must be uint16, got {cube.dtype}")
    if row_block < 1:
        raise ValueError("row_block must be >= 1")
    ny, nx, nb, _nt = cube.shape
    gm = np.empty((ny, nx, nb), dtype=np.float32)
    emad = np.empty((ny, nx), dtype=np.float32)
    smad = np.empty((ny, nx), dtype=np.float32)
    bcmad = np.empty((ny, nx), dtype=np.float32)
    count = np.empty((ny, nx), dtype=np.uint16)
    iters = np.zeros((ny, nx), dtype=np.int32)
    s32 = np.float32(scale)
    o32 = np.float32(offset)
    ext = None if backend == "numba" else _external_backend(backend)
    no_weights = np.empty(0, dtype=np.float32)
    nthreads = num_threads if num_threads is not None else (os.cpu_count() or 1)

    with numba_threads(num_threads):
        for r0 in range(0, ny, row_block):
            r1 = min(ny, r0 + row_block)
            # a view for C-contiguous input; bounded copy of one block otherwise
            blk = np.ascontiguousarray(cube[r0:r1])
            if ext is None:
                K.geomedian_kernel(
                    blk,
                    True,
                    np.uint16(nodata),
                    s32,
                    o32,
                    int(maxiters),
                    float(eps),
                    no_weights,
                    True,
                    gm[r0:r1],
                    emad[r0:r1],
                    smad[r0:r1],
                    bcmad[r0:r1],
                    count[r0:r1],
                    iters[r0:r1],
                )
            else:
                invalid = (blk == nodata).any(axis=2)  # (rows, nx, nt)
                count[r0:r1] = (~invalid).sum(axis=2, dtype=np.uint16)
                X = blk.astype(np.float32)
                X *= s32
                X += o32
                X[np.broadcast_to(invalid[:, :, None, :], X.shape)] = np.nan
                del invalid
                g = np.asarray(
                    ext.nangeomedian_pcm(X, maxiters=maxiters, eps=eps, num_threads=nthreads),
                    dtype=np.float32,
                )
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    emad[r0:r1] = ext.emad_pcm(X, g, num_threads=nthreads)
                    smad[r0:r1] = ext.smad_pcm(X, g, num_threads=nthreads)
                    bcmad[r0:r1] = ext.bcmad_pcm(X, g, num_threads=nthreads)
                gm[r0:r1] = g
                del X
            if progress is not None:
                progress(r1 - r0)
    if ext is not None:
        none = count == 0
        gm[none] = np.nan
        emad[none] = np.nan
        smad[none] = np.nan
        bcmad[none] = np.nan
    return GeomadResult(gm=gm, emad=emad, smad=smad, bcmad=bcmad, count=count, iterations=iters)
