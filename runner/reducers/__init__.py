"""Reducers: the per-pixel algorithms a tile can run, by ``algorithm.name``.

* ``geomedian`` (default) — :class:`~runner.reducers.geomedian.GeomedianMads`: geometric median
  of the bands + SMAD/EMAD/BCMAD + count (the GeoMAD product);
* ``median`` — :class:`~runner.reducers.median.MedianComposite`: per-band median + count.

See :mod:`runner.reducers.base` for the interface, and docs/reducers.md for adding one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.reducers.base import OutputBand, Reducer, RowBandResult
from runner.reducers.geomedian import GeomedianMads
from runner.reducers.median import MedianComposite

if TYPE_CHECKING:
    from runner.common.config import RunConfig

#: Every reducer, by ``algorithm.name``.
REDUCERS: dict[str, Reducer] = {r.name: r for r in (GeomedianMads(), MedianComposite())}
#: ``algorithm.name`` when none is given.
DEFAULT_REDUCER = "geomedian"


def reducer_for(config: RunConfig) -> Reducer:
    """The reducer ``algorithm.name`` names (validated when the configuration was parsed)."""
    return REDUCERS[config.algorithm.name]


__all__ = [
    "DEFAULT_REDUCER",
    "REDUCERS",
    "OutputBand",
    "Reducer",
    "RowBandResult",
    "reducer_for",
]
