"""``gmrun plan`` as a library call: select tiles, find their items, size them, write the plan.

:func:`make_plan` does the work and returns what happened (:class:`PlanOutcome`); it prints
nothing. The CLI (:mod:`runner.cli.plan`) prints the summary and the outcome.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from runner.common import store
from runner.common.config import RunConfig
from runner.common.errors import UserInputError
from runner.planner.assign import stream_plan
from runner.planner.grid import TileGrid, TileId
from runner.planner.period import Period
from runner.planner.plan import Plan
from runner.planner.region import REGION_FILE, select_tiles
from runner.planner.report import write_map_files
from runner.planner.stac_api import StacApi, StacApiSearch, config_for_catalog


@dataclass(frozen=True)
class TileSelection:
    """Which tiles to plan: exactly one of a bbox (W, S, E, N degrees), tile ids, a file of tile
    ids, a named region or a GeoJSON region (:func:`runner.planner.region.select_tiles`)."""

    bbox: tuple[float, float, float, float] | None = None
    tiles: list[TileId] | None = None
    tiles_file: str | None = None
    region: str | None = None
    geojson: str | None = None


@dataclass(frozen=True)
class ItemSource:
    """Where the items come from: an item file or a preset name (``catalog``), or a STAC API
    search (``stac_api`` + ``collection``; paging and blocking as :class:`StacApi`). Neither:
    only a dry run, which then lists the tiles."""

    catalog: str | None = None
    stac_api: str | None = None
    collection: str | None = None
    page_size: int = 100
    block_tiles: int = 4
    max_items: int | None = None


@dataclass(frozen=True)
class PlanOutcome:
    """What :func:`make_plan` did: the selected tiles and period, the plan (None for a dry run
    without items), the STAC API search's summary line, and the wall time (seconds)."""

    tiles: list[TileId]
    period: Period
    plan: Plan | None
    search_summary: str | None
    seconds: float


def plan_period(year: int | None, period: str | None) -> Period:
    """The period of ``--year`` or ``--period`` (exactly one)."""
    if (year is None) == (period is None):
        raise UserInputError("give exactly one of --year or --period")
    return Period.year(year) if year is not None else Period.parse(period or "")


def make_plan(
    config: RunConfig,
    selection: TileSelection,
    source: ItemSource,
    period: Period,
    out: str | None,
    *,
    max_memory: int | None = None,
    progress: Any | None = None,
) -> PlanOutcome:
    """Plan the selected tiles over ``period`` and write the plan, its items, ``tiles.geojson``
    and ``tiles.png`` to ``out`` (``None``: a dry run, nothing written). ``max_memory`` (bytes)
    caps a tile's memory (row bands beyond it); ``progress``: a rich ``Progress`` for the STAC
    API search."""
    t0 = time.monotonic()
    config = config_for_catalog(config, source.catalog)
    grid = TileGrid.from_config(config.grid)
    tile_ids, outline = select_tiles(
        grid,
        bbox=selection.bbox,
        tiles=selection.tiles,
        tiles_file=selection.tiles_file,
        region=selection.region,
        geojson=selection.geojson,
    )
    api = StacApi.from_options(
        catalog=source.catalog,
        stac_api=source.stac_api,
        collection=source.collection,
        page_size=source.page_size,
        block_tiles=source.block_tiles,
        max_items=source.max_items,
    )
    summary = None
    if source.catalog is None and api is None:
        if out is not None:
            raise UserInputError(
                "give --catalog or --stac-api (only a --dry-run lists the tiles without one)"
            )
        return PlanOutcome(tile_ids, period, None, None, time.monotonic() - t0)
    if api is not None:
        search = StacApiSearch(api, grid, tile_ids, period, config.input.max_cloud_cover)
        search.progress = progress
        plan = stream_plan(
            config, tile_ids, api.source, period, out, max_memory, records=search.records()
        )
        summary = search.summary()
    else:
        assert source.catalog is not None
        plan = stream_plan(config, tile_ids, source.catalog, period, out, max_memory)
    if out is not None:
        write_map_files(plan, out, outline)
        if outline is not None:  # the region, for the maps of `gmrun collect`
            doc = json.dumps(outline.to_crs("EPSG:4326").json, separators=(",", ":"))
            store.write_bytes(store.join(out, REGION_FILE), doc.encode(), "application/geo+json")
    return PlanOutcome(tile_ids, period, plan, summary, time.monotonic() - t0)
