"""Which load path a tile takes (``input.loader``), and the fallback to odc-stac.

``auto`` builds a :class:`~runner.worker.gather.load.GatherStack` and falls back to
:func:`runner.worker.load.lazy_stack` (odc-stac) for the rest of the tile when the gather
reports an input it cannot reproduce exactly (:class:`GatherUnsupported`: a resampling other
than nearest, a custom fuser, a non-uint8/uint16 band, a raster in strips or with GCPs, a tile
coarser than its sources, ...), whether that is found while planning or while reading (then
the load restarts from the first band); the reason is logged once per tile. ``gather`` fails
the tile instead; ``odc-stac`` never gathers.
"""

from __future__ import annotations

from typing import Any

from odc.geo.geobox import GeoBox

from runner.common.config import RunConfig
from runner.common.errors import ProcessingError
from runner.common.logs import TileLog
from runner.worker.gather.grid_map import GatherUnsupported


class LoaderChoice:
    """The load path of one tile: the stack to slice, and what to do when the gather cannot."""

    def __init__(self, config: RunConfig, log: TileLog) -> None:
        self.mode = config.input.loader
        self.log = log
        self.reason: str | None = None  #: why the tile fell back to odc-stac, if it did
        self.used: str | None = None  #: "gather" or "odc-stac": the path of the last stack

    def stack(
        self, items: list[dict[str, Any]], config: RunConfig, geobox: GeoBox, threads: int
    ) -> tuple[Any, tuple[str, ...]]:
        """The tile's (y, x, band, time) stack and its dates, by the path chosen."""
        from runner.worker.gather.load import GatherStack
        from runner.worker.load import lazy_stack

        if self.mode != "odc-stac" and self.reason is None:
            try:
                gs = GatherStack(items, config, geobox, threads)
            except GatherUnsupported as e:
                self.fall_back(e)
            else:
                self.used = "gather"
                return gs, gs.times
        self.used = "odc-stac"
        return lazy_stack(items, config, geobox)

    def fall_back(self, failure: BaseException) -> bool:
        """True when ``failure`` is the gather's :class:`GatherUnsupported` and the tile now
        loads with odc-stac (logged once); False for any other failure. With ``loader: gather``
        the tile fails with :class:`ProcessingError` naming the reason."""
        if not isinstance(failure, GatherUnsupported):
            return False
        if self.mode == "gather":
            raise ProcessingError(
                f"input.loader is 'gather' but the gather cannot load this tile: {failure}; "
                "use input.loader: auto or odc-stac"
            ) from None
        self.reason = str(failure)
        self.log.info(
            "loading with odc-stac instead of the gather: %s",
            self.reason,
            extra={"stage": "load", "loader": "odc-stac", "fallback": self.reason},
        )
        return True
