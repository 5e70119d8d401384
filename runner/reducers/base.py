"""The algorithm seam: what a reducer is, and how its results are assembled over row bands.

A *reducer* turns the worker's cube — uint16 (y, x, band, time), nodata where an observation
is not clear — into per-pixel results, and owns everything that follows from them:

* its **output bands** (:class:`OutputBand`: name, dtype, nodata, units, description,
  scale/offset, overview resampling): the COGs a tile writes, their STAC assets, and what makes
  a tile *done*, all follow this list;
* the **bytes per pixel of its result** (:meth:`Reducer.result_bytes`), so that the memory
  model (:mod:`runner.planner.sizing`) sizes a Job for the reducer that will run in it;
* its **reduce** over a cube, and the 2-D layers written from its result.

Results are dataclasses of NumPy arrays whose first two axes are (y, x): the worker assembles
a tile processed in row bands with :class:`RowBandResult` without knowing what they hold.
Reducers are registered by name in :data:`runner.reducers.REDUCERS` (``algorithm.name``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from runner.common.config import RunConfig

#: ``progress(n_rows)``: called by a reduce after each block of rows.
Progress = Callable[[int], object]


@dataclass(frozen=True, slots=True)
class OutputBand:
    """One output band of a reducer: one COG per tile, one STAC asset."""

    name: str  #: file suffix and STAC asset key (``B02``, ``emad``, ``count``)
    dtype: str  #: NumPy dtype name of the COG (``uint16``, ``float32``)
    nodata: float | None  #: the COG's nodata (NaN for float bands; None: every value is valid)
    units: str  #: of the stored values after scale/offset (``1`` for reflectance, ``count``)
    description: str
    scale: float | None = None  #: value = stored * scale + offset (None: stored as is)
    offset: float | None = None
    #: overview resampling of the COG (``average`` for continuous values, ``nearest`` else)
    resampling: str = "average"


class Reducer(Protocol):
    """A per-pixel algorithm over the worker's cube (see the module docstring)."""

    #: ``algorithm.name`` of this reducer
    name: str
    #: ``odc:product_family`` of its STAC items
    product_family: str
    #: the product name when ``product.name`` is not given
    default_product: str
    #: ``algorithm.backend`` values it runs with
    backends: tuple[str, ...]

    def output_bands(self, config: RunConfig) -> tuple[OutputBand, ...]:
        """Every output band, in file order."""
        ...

    def result_bytes(self, ny: int, nx: int, n_bands: int) -> int:
        """Bytes of :meth:`reduce`'s result for ny × nx pixels of ``n_bands`` input bands."""
        ...

    def reduce(self, cube: NDArray[np.uint16], config: RunConfig, progress: Progress) -> Any:
        """The result of a cube (y, x, band, time); ``progress(n_rows)`` after each row block."""
        ...

    def layers(self, result: Any, config: RunConfig) -> Iterator[tuple[OutputBand, NDArray[Any]]]:
        """Each output band with its 2-D array (y, x) of dtype ``band.dtype``, in file order."""
        ...

    def metrics(self, result: Any) -> dict[str, Any]:
        """Summary numbers of a whole tile's result, for the tile's metrics."""
        ...


class RowBandResult:
    """A whole tile's result, filled row band by row band: each band's result is copied into its
    rows; a tile reduced in one band keeps the reducer's own result, without a copy."""

    def __init__(self, ny: int) -> None:
        self.ny = ny
        self.value: Any = None

    def put(self, result: Any, r0: int, r1: int) -> None:
        """The result of rows ``[r0, r1)``; a band reduced again (a restarted load) overwrites."""
        if r0 == 0 and r1 == self.ny:
            self.value = result
            return
        fields = [f.name for f in dataclasses.fields(result)]
        if self.value is None or getattr(self.value, fields[0]).shape[0] != self.ny:
            self.value = dataclasses.replace(
                result,
                **{f: _rows_like(getattr(result, f), self.ny) for f in fields},
            )
        for f in fields:
            getattr(self.value, f)[r0:r1] = getattr(result, f)


def _rows_like(a: NDArray[Any], ny: int) -> NDArray[Any]:
    return np.empty((ny, *a.shape[1:]), a.dtype)


def reflectance_bands(config: RunConfig, statistic: str) -> tuple[OutputBand, ...]:
    """One uint16 band per input band, in the input's DNs (its nodata, scale and offset): how a
    reducer writes a per-band reflectance ``statistic`` ("geometric median", "median", ...)."""
    inp = config.input
    return tuple(
        OutputBand(
            b,
            "uint16",
            inp.nodata,
            "1",
            f"{statistic} of {b} (surface reflectance)",
            scale=inp.scale,
            offset=inp.offset,
        )
        for b in config.bands
    )


def clear_count_metrics(count: NDArray[np.uint16]) -> dict[str, Any]:
    """``clear_observations_mean``: the mean of a result's per-pixel clear-observation count."""
    return {"clear_observations_mean": float(count.mean())}
