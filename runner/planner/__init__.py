"""The planner: a region → grid tiles → each tile's STAC items and size → a plan.

* :mod:`~runner.planner.grid` — tiles of the output grid (:class:`TileGrid`, :class:`TileId`);
* :mod:`~runner.planner.region` — which tiles a bbox, GeoJSON, named region or tile list covers;
* :mod:`~runner.planner.period` — the period a plan composites (:class:`Period`);
* :mod:`~runner.planner.catalog` — STAC item files, footprints, observations (solar days);
* :mod:`~runner.planner.stac_api` — searching a STAC API, presets, request signing settings;
* :mod:`~runner.planner.assign` — items to tiles, streamed (:func:`stream_plan`) or in memory;
* :mod:`~runner.planner.sizing` — the memory model: a Job's memory, a worker's row bands;
* :mod:`~runner.planner.plan` — the plan file format (:class:`Plan`, :class:`TilePlan`);
* :mod:`~runner.planner.report` — the plan's map (tiles.geojson, tiles.png) and summary table;
* :mod:`~runner.planner.make` — ``gmrun plan`` as one call (:func:`make_plan`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.common.lazy import lazy_getattr

if TYPE_CHECKING:
    from runner.planner.assign import build_plan, stream_plan
    from runner.planner.grid import TileGrid, TileId
    from runner.planner.make import ItemSource, PlanOutcome, TileSelection, make_plan
    from runner.planner.period import Period
    from runner.planner.plan import Plan, TilePlan
    from runner.planner.sizing import Resources, size_tile

_HOMES: dict[str, str] = {
    "ItemSource": "runner.planner.make",
    "Period": "runner.planner.period",
    "Plan": "runner.planner.plan",
    "PlanOutcome": "runner.planner.make",
    "Resources": "runner.planner.sizing",
    "TileGrid": "runner.planner.grid",
    "TileId": "runner.planner.grid",
    "TilePlan": "runner.planner.plan",
    "TileSelection": "runner.planner.make",
    "build_plan": "runner.planner.assign",
    "make_plan": "runner.planner.make",
    "size_tile": "runner.planner.sizing",
    "stream_plan": "runner.planner.assign",
}

__all__ = sorted(_HOMES)

__getattr__ = lazy_getattr(__name__, _HOMES)
