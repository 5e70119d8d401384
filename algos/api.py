"""Public, hdstats/geomad-compatible entry points (see :mod:`algos` for the maths).

Compatibility, from the sources of hdstats 0.2.1 (``hdstats/geomedian.pyx``, ``geomad.pyx``)
and geomad 1.0.0 (``geomad/pcm.pyx``): hdstats' positional order; geomad's integer paths
(uint16 nodata 0, int16 nodata -999, ``value = X * scale + offset`` with scale 1e-4 and
offset 0, the integer geomedian returned in X's units, the MADs given the geomedian in the
scaled units); where those libraries silently ignore an argument (``nodata`` on float input,
``scale``/``offset`` on float input, unknown keywords) this module honours it or refuses it.
"""

from __future__ import annotations

import contextlib
import math
import numbers
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
#: Integer dtypes the hdstats-compatible functions read, with their default nodata (geomad
#: 1.0.0's ``pcm.pyx``: 0 for uint16, -999 for int16).
INT_NODATA: dict[np.dtype[Any], int] = {np.dtype(np.uint16): 0, np.dtype(np.int16): -999}
#: Default scaling of integer input, value = X * INT_SCALE + INT_OFFSET (geomad/hdstats: 1e-4, 0).
INT_SCALE = 1e-4
INT_OFFSET = 0.0


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


@dataclass(frozen=True)
class _Stack:
    """A checked input of the hdstats-compatible functions, ready for the kernels."""

    X: NDArray[Any]  #: C-contiguous float32 or uint16 (y, x, band, time)
    use_nodata: bool  #: values equal to ``nodata`` are missing (NaN always is)
    nodata: Any  #: a scalar of X's dtype
    scale: np.float32  #: the kernels' value = X * scale + offset (1 and 0 for float X)
    offset: np.float32
    #: (scale, offset) of integer input: the geomedian goes back to its units; None for float
    units: tuple[np.float32, np.float32] | None = None


_UNIT = (np.float32(1.0), np.float32(0.0))


def _is_integral(v: object) -> bool:
    if isinstance(v, bool | np.bool_):
        return False
    if isinstance(v, numbers.Integral):
        return True
    return isinstance(v, numbers.Real) and math.isfinite(float(v)) and float(v).is_integer()


def _prepare(
    X: ArrayLike, nodata: float | None, scale: float | None, offset: float | None
) -> _Stack:
    """Check X and the scaling/nodata arguments as hdstats/geomad read them (see the module doc)."""
    arr = np.asarray(X)
    if arr.ndim != 4:
        raise ValueError(f"X must be 4-d (y, x, band, time), got shape {arr.shape}")
    dtype = arr.dtype
    if dtype.kind in "iu":
        if dtype not in INT_NODATA:
            raise TypeError(
                f"integer X must be uint16 or int16 (as in hdstats/geomad), got {dtype}: "
                "convert it, or pass float with NaN for missing values"
            )
        info = np.iinfo(dtype)
        nd = INT_NODATA[dtype] if nodata is None else nodata
        if not _is_integral(nd) or not info.min <= int(nd) <= info.max:
            raise ValueError(
                f"nodata must be an integer in [{info.min}, {info.max}] for {dtype} X, got {nodata!r}"
            )
        s = INT_SCALE if scale is None else scale
        o = INT_OFFSET if offset is None else offset
        if not (math.isfinite(s) and s != 0 and math.isfinite(o)):
            raise ValueError(f"scale must be finite and non-zero, offset finite: {s!r}, {o!r}")
        s32, o32, nd_x = np.float32(s), np.float32(o), dtype.type(int(nd))
        if dtype == np.uint16:  # read in place by the kernels (scaled as they gather)
            return _Stack(np.ascontiguousarray(arr), True, nd_x, s32, o32, (s32, o32))
        # int16, rare: a scaled float32 copy with NaN for nodata -- the same float32 values the
        # kernels would make, and no kernel variant to compile for it
        Xf = arr.astype(np.float32)
        Xf *= s32
        Xf += o32
        Xf[arr == nd_x] = np.nan
        return _Stack(np.ascontiguousarray(Xf), False, np.float32(0), *_UNIT, (s32, o32))
    if dtype.kind != "f":
        raise TypeError(f"X must be a float, uint16 or int16 array, got {dtype}")
    if scale is not None or offset is not None:
        raise ValueError(
            "scale and offset apply to integer X only (value = X * scale + offset); "
            f"X is {dtype}: scale it before the call"
        )
    if nodata is not None and not isinstance(nodata, numbers.Real):
        raise TypeError(f"nodata must be a number, got {nodata!r}")
    use = nodata is not None and not math.isnan(nodata)
    return _Stack(_as_stack(arr), use, np.float32(nodata if use else 0.0), *_UNIT)


def _check_iteration_args(eps: object, maxiters: object) -> None:
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or math.isnan(eps):
        raise TypeError(
            f"eps must be a number, got {type(eps).__name__}: the order is hdstats' "
            "nangeomedian_pcm(X, eps, maxiters, num_threads, nodata, nocheck); "
            "pass weights as weight=..."
        )
    if not isinstance(maxiters, numbers.Integral) or isinstance(maxiters, bool) or maxiters < 0:
        raise TypeError(f"maxiters must be an integer >= 0, got {maxiters!r}")


@overload
def nangeomedian_pcm(
    X: ArrayLike,
    eps: float = ...,
    maxiters: int = ...,
    num_threads: int | None = ...,
    nodata: float | None = ...,
    nocheck: bool = ...,
    *,
    weight: ArrayLike | None = ...,
    scale: float | None = ...,
    offset: float | None = ...,
    return_iterations: Literal[False] = ...,
) -> NDArray[np.float32]: ...


@overload
def nangeomedian_pcm(
    X: ArrayLike,
    eps: float = ...,
    maxiters: int = ...,
    num_threads: int | None = ...,
    nodata: float | None = ...,
    nocheck: bool = ...,
    *,
    weight: ArrayLike | None = ...,
    scale: float | None = ...,
    offset: float | None = ...,
    return_iterations: Literal[True],
) -> tuple[NDArray[np.float32], NDArray[np.int32]]: ...


def nangeomedian_pcm(
    X: ArrayLike,
    eps: float = 1e-4,
    maxiters: int = 1000,
    num_threads: int | None = None,
    nodata: float | None = None,
    nocheck: bool = False,
    *,
    weight: ArrayLike | None = None,
    scale: float | None = None,
    offset: float | None = None,
    return_iterations: bool = False,
) -> NDArray[np.float32] | tuple[NDArray[np.float32], NDArray[np.int32]]:
    """Geometric median over the last axis of X (y, x, band, time) -> float32 (y, x, band).

    Positional order as hdstats 0.2.1's ``nangeomedian_pcm(X, eps, maxiters, num_threads,
    nodata, nocheck)``; the rest are keywords (geomad's ``weight`` comes second positionally
    there: here it is keyword-only, and a non-number ``eps`` is a TypeError).

    * float X: NaN (and values equal to ``nodata``, when given) are missing; an observation
      with any missing band is ignored.  ``scale``/``offset`` are refused (ValueError).
    * uint16 / int16 X (geomad 1.0.0's integer paths): the geomedian is computed on
      ``float32(X) * scale + offset`` (defaults 1e-4 and 0), observations with any band equal
      to ``nodata`` (default 0 for uint16, -999 for int16) are ignored, and the result is
      returned in X's units, ``(m - offset) / scale`` as float32 -- as geomad does (so
      ``emad_pcm(X, gm * scale + offset, ...)`` gives the MADs of it).

    ``eps`` is the Weiszfeld step below which iteration stops, in the scaled units (reflectance
    for Sentinel-2 DNs with the default scale); hdstats' own default is 1e-7, geomad's 1e-4.
    Pixels without a valid observation are NaN.  ``weight``: one positive weight per time step
    (argmin sum_t w_t ||x_t - y||, as geomad).  ``num_threads``: numba threads for the call
    (``None``: all).  ``nocheck`` is accepted for compatibility and changes nothing (empty
    pixels are always NaN).  With ``return_iterations=True`` returns ``(gm, iterations)``,
    iterations an int32 (y, x) array of Weiszfeld steps per pixel.
    """
    _check_iteration_args(eps, maxiters)
    st = _prepare(X, nodata, scale, offset)
    w = np.empty(0, dtype=np.float32)
    if weight is not None:
        w = np.ascontiguousarray(np.asarray(weight, dtype=np.float32).ravel())
        if w.size != st.X.shape[3]:
            raise ValueError("weight must have one entry per time step")
    ny, nx, nb, _ = st.X.shape
    gm = np.empty((ny, nx, nb), dtype=np.float32)
    count = np.empty((ny, nx), dtype=np.uint16)
    iters = np.empty((ny, nx), dtype=np.int32)
    dummy = np.empty((0, 0), dtype=np.float32)
    with numba_threads(num_threads):
        K.geomedian_kernel(
            st.X,
            st.use_nodata,
            st.nodata,
            st.scale,
            st.offset,
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
    if st.units is not None:  # back to X's units, in float32 as geomad
        gm -= st.units[1]
        gm /= st.units[0]
    if return_iterations:
        return gm, iters
    return gm


def _mad(
    X: ArrayLike,
    gm: ArrayLike,
    kind: int,
    num_threads: int | None,
    nodata: float | None,
    scale: float | None,
    offset: float | None,
) -> NDArray[np.float32]:
    st = _prepare(X, nodata, scale, offset)
    g = _as_stack(gm, 3, "gm")
    if not g.flags.writeable:
        g = g.copy()  # small; avoids compiling a read-only variant of the kernel
    if g.shape != st.X.shape[:3]:
        raise ValueError(f"gm shape {g.shape} does not match X shape {st.X.shape}")
    out = np.empty(st.X.shape[:2], dtype=np.float32)
    with numba_threads(num_threads):
        if st.X.dtype != np.float32 or st.use_nodata:
            K.mad_gather_kernel(st.X, st.use_nodata, st.nodata, st.scale, st.offset, g, kind, out)
        else:
            K.mad_kernel(st.X, g, kind, out)
    return out


_MAD_DOC = """

    hdstats/geomad order and keywords: ``(X, gm, num_threads=None, nocheck=False,
    nodata=None)``, plus keyword-only ``scale``/``offset``.  X float (NaN, and values equal to
    ``nodata`` when given, are missing) or uint16/int16 (scaled to ``float32(X) * scale +
    offset``, defaults 1e-4 and 0; ``nodata`` defaults to 0 / -999).  ``gm`` (y, x, band) is in
    the *scaled* units, as geomad/hdstats expect it.  An observation with any missing band is
    left out of the median (geomad's own uint16 kernels differ there: they count it, see
    docs/algos.md).  Returns float32 (y, x), NaN without a valid observation; ``nocheck`` is
    accepted and changes nothing.
    """


def emad_pcm(
    X: ArrayLike,
    gm: ArrayLike,
    num_threads: int | None = None,
    nocheck: bool = False,
    nodata: float | None = None,
    *,
    scale: float | None = None,
    offset: float | None = None,
) -> NDArray[np.float32]:
    return _mad(X, gm, K.EMAD, num_threads, nodata, scale, offset)


def smad_pcm(
    X: ArrayLike,
    gm: ArrayLike,
    num_threads: int | None = None,
    nocheck: bool = False,
    nodata: float | None = None,
    *,
    scale: float | None = None,
    offset: float | None = None,
) -> NDArray[np.float32]:
    return _mad(X, gm, K.SMAD, num_threads, nodata, scale, offset)


def bcmad_pcm(
    X: ArrayLike,
    gm: ArrayLike,
    num_threads: int | None = None,
    nocheck: bool = False,
    nodata: float | None = None,
    *,
    scale: float | None = None,
    offset: float | None = None,
) -> NDArray[np.float32]:
    return _mad(X, gm, K.BCMAD, num_threads, nodata, scale, offset)


emad_pcm.__doc__ = (
    "Euclidean MAD: median_t ||x_t - m||_2 over the valid observations -> (y, x), in the "
    "scaled units (reflectance for Sentinel-2 DNs)." + _MAD_DOC
)
smad_pcm.__doc__ = (
    "Spectral (cosine) MAD: median_t (1 - <x_t, m> / (||x_t|| ||m||)) -> (y, x), unitless."
    + _MAD_DOC
)
bcmad_pcm.__doc__ = (
    "Bray-Curtis MAD: median_t sum_j |x_tj - m_j| / sum_j |x_tj + m_j| -> (y, x), unitless."
    + _MAD_DOC
)


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

    with numba_threads(num_threads) as nthreads:  # None: numba's count (NUMBA_NUM_THREADS)
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
