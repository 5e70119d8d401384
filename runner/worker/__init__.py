"""The worker: one tile, top to bottom (:func:`run_tile`): load → reduce → write.

* :mod:`~runner.worker.load` — items → masked uint16 cubes, one row band at a time
  (:class:`TileLoader`), with retries, skipped inputs and signing;
* :mod:`~runner.worker.mask` — the SCL cloud mask and its morphology;
* :mod:`~runner.worker.cube` — the cube and the row bands (:class:`Cube`, :class:`RowBand`);
* :mod:`~runner.worker.outputs` — COGs, the STAC item (the done marker) and their locations;
* :mod:`~runner.worker.gdal`, :mod:`~runner.worker.assets`, :mod:`~runner.worker.signing` —
  GDAL's settings, the input assets, Planetary Computer's SAS tokens;
* :mod:`~runner.worker.deadline`, :mod:`~runner.worker.metrics` — ``--max-processing-time``,
  peak memory and bytes read.

The reduce itself is the reducer's (:mod:`runner.reducers`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.common.lazy import lazy_getattr

if TYPE_CHECKING:
    from runner.worker.cube import Cube, RowBand
    from runner.worker.load import LoadStats, TileLoader, load_cube
    from runner.worker.outputs import TileOutputs
    from runner.worker.tile import TileReport, run_tile

_HOMES: dict[str, str] = {
    "Cube": "runner.worker.cube",
    "LoadStats": "runner.worker.load",
    "RowBand": "runner.worker.cube",
    "TileLoader": "runner.worker.load",
    "TileOutputs": "runner.worker.outputs",
    "TileReport": "runner.worker.tile",
    "load_cube": "runner.worker.load",
    "run_tile": "runner.worker.tile",
}

__all__ = sorted(_HOMES)

__getattr__ = lazy_getattr(__name__, _HOMES)
