"""The worker's memory model, in one place: what a tile needs, and how it is cut to fit.

A worker holds one preallocated uint16 cube (y, x, band, time), the reducer's result for the
whole tile, what the load holds beside the cube while it fills it (:func:`load_bytes`: the clear
mask and the decoded source windows in flight), and a fixed overhead (``memory.overhead_mib``:
the interpreter, GDAL caches, the reduction's row blocks). A tile whose cube does not fit a budget is processed in *row bands*:
one band's cube at a time in one buffer, the whole tile's result kept (docs/subtiles.md). The
planner sizes each Job with these functions, the worker picks its row bands with them, and
``rerun --memory-factor`` scales what they gave. Sizes are bytes unless a name says MiB/GiB.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.common.errors import UserInputError

if TYPE_CHECKING:
    from runner.common.config import RunConfig
    from runner.reducers import Reducer

MIB = 1024**2
GIB = 1024**3
#: Kubernetes memory size classes (request = limit); a tile gets the smallest that fits.
SIZE_CLASSES_GIB: tuple[int, ...] = (2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True, slots=True)
class Resources:
    """What one tile's worker needs: memory (request = limit) and CPU."""

    memory_bytes: int
    cpu: str

    @property
    def memory(self) -> str:
        """Kubernetes quantity, e.g. ``16Gi`` or ``1536Mi``."""
        if self.memory_bytes % GIB == 0:
            return f"{self.memory_bytes // GIB}Gi"
        return f"{math.ceil(self.memory_bytes / MIB)}Mi"

    def scaled(self, factor: float) -> Resources:
        """More memory (e.g. 1.5x after an OOMKill), rounded up to whole MiB."""
        return Resources(math.ceil(self.memory_bytes * factor / MIB) * MIB, self.cpu)


def _reducer(reducer: Reducer | None) -> Reducer:
    from runner.reducers import DEFAULT_REDUCER, REDUCERS

    return reducer if reducer is not None else REDUCERS[DEFAULT_REDUCER]


#: bytes of decoded source windows the gather load holds at once, all threads together — unless
#: each thread's run of :data:`MIN_RUN_DATES` dates of one band needs more
LOAD_WINDOWS_BYTES = 64 * MIB
#: dates of one band a gather run writes at least: the (y, x, band, time) sink takes a pixel's
#: dates side by side, and fewer dates a write touch its cache lines for a few bytes each (the
#: gather kernel on the 1200 px benchmark tile: 1.5x slower at 4 dates a run, 5x at 1)
MIN_RUN_DATES = 8
#: a source window over the rows of a band, per tile pixel: uint16, with its margin (the
#: granule's grid is turned against the tile's) and a second granule on some dates
_WINDOW_BYTES_PER_PX = 2.5


def cube_bytes(ny: int, nx: int, n_bands: int, n_obs: int) -> int:
    """Bytes of the worker's uint16 Y×X×B×T cube."""
    return ny * nx * n_bands * n_obs * 2


def results_bytes(ny: int, nx: int, n_bands: int, reducer: Reducer | None = None) -> int:
    """Bytes of a reducer's result for ny × nx pixels (default: the default reducer's)."""
    return _reducer(reducer).result_bytes(ny, nx, n_bands)


def load_bytes(rows: int, nx: int, n_obs: int, threads: int = 2) -> int:
    """Peak bytes the load holds beside the cube for a band of ``rows`` rows: the clear mask (a
    bit per pixel and observation) and the decoded source windows in flight: each of the
    worker's ``threads`` holds a run of one band's dates, its share of
    :data:`LOAD_WINDOWS_BYTES` but at least :data:`MIN_RUN_DATES` dates, and at most all."""
    threads, n = max(threads, 1), max(n_obs, 1)
    window = math.ceil(rows * nx * _WINDOW_BYTES_PER_PX)  # one date's, of one band
    run = min(n * window, max(LOAD_WINDOWS_BYTES // threads, min(n, MIN_RUN_DATES) * window))
    return rows * -(-nx // 8) * n_obs + threads * run


def estimate_memory(
    ny: int,
    nx: int,
    n_bands: int,
    n_obs: int,
    overhead_mib: int,
    reducer: Reducer | None = None,
    threads: int = 2,
) -> int:
    """Peak bytes of a worker computing the whole tile at once: the cube, what the load holds
    beside it, the result and the fixed overhead (:func:`band_memory` of one band)."""
    return band_memory(ny, ny, nx, n_bands, n_obs, overhead_mib, reducer, threads)


def band_height(ny: int, n: int, chunk: int | None = None) -> int:
    """Rows of each row band (the last may be shorter) when a tile of ``ny`` rows is cut into
    at most ``n`` bands: ``ceil(ny / n)`` rounded up to a multiple of the Dask ``chunk`` (so that
    every chunk, and so every source block, is read by one band only) while ``n`` is at most the
    tile's rows of chunks (down to one chunk a band); more bands than that are thinner than a
    chunk, cannot be aligned, and are exactly ``ceil(ny / n)`` rows."""
    if n < 1 or ny < 1:
        raise ValueError(f"need n >= 1 and ny >= 1, got n={n}, ny={ny}")
    h = -(-ny // min(n, ny))
    if chunk and n <= -(-ny // chunk):
        h = min(ny, -(-h // chunk) * chunk)
    return h


def band_rows(ny: int, n: int, chunk: int | None = None) -> list[tuple[int, int]]:
    """The row ranges ``[(r0, r1), ...]`` of the bands of :func:`band_height` (at most ``n``)."""
    h = band_height(ny, n, chunk)
    return [(r0, min(ny, r0 + h)) for r0 in range(0, ny, h)]


def band_memory(
    rows: int,
    ny: int,
    nx: int,
    n_bands: int,
    n_obs: int,
    overhead_mib: int,
    reducer: Reducer | None = None,
    threads: int = 2,
) -> int:
    """Peak bytes of a worker processing a tile in bands of ``rows`` rows: one band's cube (the
    one preallocated buffer, reused by every band) and what its load holds beside it, the whole
    tile's result, one band's result (the reduction's output before it is copied into the
    tile's) and the fixed overhead."""
    return (
        cube_bytes(rows, nx, n_bands, n_obs)
        + load_bytes(rows, nx, n_obs, threads)
        + results_bytes(ny, nx, n_bands, reducer)
        + (results_bytes(rows, nx, n_bands, reducer) if rows < ny else 0)
        + overhead_mib * MIB
    )


def _mib(n: int) -> str:
    return f"{math.ceil(n / MIB)} MiB"


def row_bands_for(
    budget_bytes: int,
    ny: int,
    nx: int,
    n_bands: int,
    n_obs: int,
    overhead_mib: int,
    chunk: int | None = None,
    reducer: Reducer | None = None,
    threads: int = 2,
) -> int:
    """The smallest number of row bands whose estimated peak (:func:`band_memory`) fits
    ``budget_bytes``; band heights as :func:`band_height` (multiples of ``chunk`` when thicker).

    Raises :class:`UserInputError` when even 1-row bands do not fit: the whole tile's result
    plus the fixed overhead are the floor of a worker's memory, whatever the number of bands.
    """
    whole = estimate_memory(ny, nx, n_bands, n_obs, overhead_mib, reducer, threads)
    if n_obs < 1 or budget_bytes >= whole:
        return 1
    floor = band_memory(1, ny, nx, n_bands, n_obs, overhead_mib, reducer, threads)
    if budget_bytes < floor:
        raise UserInputError(
            f"memory budget {_mib(budget_bytes)} is too small for a {ny}×{nx} px tile of {n_bands} bands and "
            f"{n_obs} observations: its results ({_mib(results_bytes(ny, nx, n_bands, reducer))}) and the fixed "
            f"overhead ({overhead_mib} MiB) alone need {_mib(floor)}"
        )
    for n in range(2, ny + 1):  # band_height is non-increasing in n: the first fit is the least
        h = band_height(ny, n, chunk)
        if band_memory(h, ny, nx, n_bands, n_obs, overhead_mib, reducer, threads) <= budget_bytes:
            return len(band_rows(ny, n, chunk))
    return ny  # unreachable: 1-row bands fit (checked above)


def aligned_budget(
    chunk: int, ny: int, nx: int, n_bands: int, n_obs: int, config: RunConfig
) -> int:
    """The budget that gives one-chunk row bands (``chunk`` rows each), for this worker."""
    from runner.common.threads import pool_threads
    from runner.reducers import reducer_for

    rows, overhead = min(chunk, ny), config.memory.overhead_mib
    threads = pool_threads(config.input.threads)
    return band_memory(rows, ny, nx, n_bands, n_obs, overhead, reducer_for(config), threads)


def cpu_threads(cpu: str) -> int:
    """The threads of a worker given a Kubernetes CPU quantity (``"2"``, ``"1500m"``, ``"0.5"``):
    rounded up, as the Job's downward API hands it to ``GMRUN_THREADS`` (divisor 1)."""
    text = cpu.strip()
    value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    return max(1, math.ceil(value))


def size_class(memory_bytes: int) -> int:
    """Round a memory need up to a size class, in bytes (beyond the largest: whole GiB)."""
    for gib in SIZE_CLASSES_GIB:
        if memory_bytes <= gib * GIB:
            return gib * GIB
    return math.ceil(memory_bytes / GIB) * GIB


@dataclass(frozen=True, slots=True)
class TileSize:
    """What the planner gives a tile: its cube, its Job's resources and its row bands."""

    cube_bytes: int
    resources: Resources
    row_bands: int  #: 1: the whole tile at once


def size_tile(config: RunConfig, n_obs: int, max_memory: int | None = None) -> TileSize:
    """Size one tile of the config's grid with ``n_obs`` observations: memory rounded up to a
    size class; a tile whose estimate exceeds ``max_memory`` gets ``max_memory`` and the number of
    row bands that fits it (:func:`row_bands_for`; a budget too small for even 1-row bands is a
    :class:`UserInputError`)."""
    from runner.reducers import reducer_for

    n = round(config.grid.tile_size / config.grid.resolution)
    nb = len(config.bands)
    overhead = config.memory.overhead_mib
    reducer = reducer_for(config)
    threads = cpu_threads(config.kubernetes.cpu)  # the Job's: GMRUN_THREADS is its CPU request
    mem = size_class(estimate_memory(n, n, nb, n_obs, overhead, reducer, threads))
    bands = 1
    if max_memory is not None and mem > max_memory:
        mem = max_memory
        chunk = min(config.input.chunk, n)
        bands = row_bands_for(max_memory, n, n, nb, n_obs, overhead, chunk, reducer, threads)
    return TileSize(cube_bytes(n, n, nb, n_obs), Resources(mem, config.kubernetes.cpu), bands)


#: ``row_bands``: a fixed number of bands, or a function of the tile's (ny, nx, n_bands, n_obs)
#: (the number of observations is only known once the items are grouped into observations).
RowBandsChoice = int | Callable[[int, int, int, int], int]


def choose_row_bands(
    config: RunConfig,
    planned_bands: int,
    planned_memory: int,
    row_bands: int | None = None,
    max_memory: int | None = None,
) -> RowBandsChoice:
    """How many row bands the worker cuts a tile into: ``row_bands`` if given; else, when the
    plan gave the tile ``planned_bands`` > 1 and/or ``max_memory`` is given, the number that fits
    the smaller of the two budgets (``planned_memory``, ``max_memory``) once the number of
    observations is known (never fewer than the plan's); else the plan's. See docs/subtiles.md."""
    from runner.common.threads import pool_threads
    from runner.reducers import reducer_for

    if row_bands is not None:
        if row_bands < 1:
            raise UserInputError(f"--row-bands must be at least 1, got {row_bands}")
        return row_bands
    budgets = [b for b in (max_memory, planned_memory if planned_bands > 1 else None) if b]
    if not budgets:
        return planned_bands
    budget, overhead = min(budgets), config.memory.overhead_mib
    reducer = reducer_for(config)
    threads = pool_threads(config.input.threads)  # this worker's

    def fit(ny: int, nx: int, nb: int, nt: int) -> int:
        chunk = min(config.input.chunk, max(ny, nx))
        bands = row_bands_for(budget, ny, nx, nb, nt, overhead, chunk, reducer, threads)
        return max(planned_bands, bands)

    return fit
