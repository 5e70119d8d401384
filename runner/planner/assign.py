"""Items to tiles: which STAC items each tile of a plan reads, and how many observations.

:func:`stream_plan` (what ``gmrun plan`` runs) streams a catalog of any size; :func:`build_plan`
assigns items already in memory (the demo, tests). Both count a tile's observations as the
worker will group them (:func:`runner.planner.catalog.observation_key`, ``input.groupby``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Hashable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from runner.common import store
from runner.common.config import RunConfig
from runner.planner.catalog import (
    assign_to_tiles,
    count_observations,
    in_period,
    item_datetime,
    iter_catalog,
    iter_ndjson_spans,
    local_ndjson,
    match_tiles,
    observation_key,
)
from runner.planner.grid import TileGrid, TileId
from runner.planner.period import Period
from runner.planner.plan import Plan, make_tile_plan
from runner.planner.sizing import MIB


def build_plan(
    config: RunConfig,
    tiles: Iterable[TileId],
    items: Iterable[dict[str, Any]],
    period: Period,
    source: str = "",
    max_memory: int | None = None,
) -> tuple[Plan, dict[TileId, list[dict[str, Any]]]]:
    """Assign items (already read) to tiles and size each tile. Tiles without items are kept
    (with ``n_obs == 0``) so that a run reports them as empty instead of silently dropping them."""
    grid = TileGrid.from_config(config.grid)
    tile_list = sorted(set(tiles))
    selected = in_period(items, period, config.input.max_cloud_cover)
    by_tile = assign_to_tiles(selected, grid, tile_list)
    plans = tuple(
        make_tile_plan(
            config,
            t,
            len(by_tile[t]),
            count_observations(by_tile[t], config.input.groupby),
            max_memory,
        )
        for t in tile_list
    )
    return Plan(config=config, period=period, tiles=plans, source=source), by_tile


#: Buffered item lines (bytes) before they are appended to the per-tile staging files.
_FLUSH_BYTES = 64 * MIB


def stream_plan(
    config: RunConfig,
    tiles: Iterable[TileId],
    catalog: str,
    period: Period,
    folder: str | None,
    max_memory: int | None = None,
    records: Iterable[tuple[str, dict[str, Any]]] | None = None,
) -> Plan:
    """Plan straight from a catalog file (or from ``records``, ``(json line, item)`` pairs such
    as a STAC API search yields; ``catalog`` then only names the source) without holding its
    items: each item's top-level id, geometry and properties are parsed once and matched to
    tiles in vectorised batches; per tile only a (datetime, id, where) key and the observation
    keys stay in memory. At the end every tile's raw item lines are written, sorted by (datetime, id), to ``folder/items/{tile}.ndjson``:
    read back by offset from a local ndjson catalog, or else from per-tile staging files written
    along the way. ``folder=None`` only counts (dry run). Same result as :func:`build_plan` +
    :meth:`Plan.save`."""
    grid = TileGrid.from_config(config.grid)
    tile_list = sorted(set(tiles))
    n = len(tile_list)
    keys: list[list[tuple[datetime, str, Any]]] = [[] for _ in range(n)]
    observations: list[set[Hashable]] = [set() for _ in range(n)]
    fields = frozenset(("id", "geometry", "properties"))
    path = local_ndjson(catalog) if records is None else None
    source: Iterable[tuple[Any, dict[str, Any]]]
    if records is not None:
        source = records
    else:
        source = (
            iter_ndjson_spans(path, fields) if path is not None else iter_catalog(catalog, fields)
        )
    staging = folder is not None and path is None
    stage = tempfile.TemporaryDirectory(prefix=".gmrun-plan-") if staging else None
    buf: dict[int, list[str]] = {}
    buffered = 0

    def flush() -> None:
        nonlocal buffered
        assert stage is not None
        for j, lines in buf.items():
            with open(os.path.join(stage.name, f"{j}.part"), "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        buf.clear()
        buffered = 0

    cc_max = config.input.max_cloud_cover
    groupby = config.input.groupby

    def selected() -> Iterator[tuple[Any, dict[str, Any], datetime]]:
        for ref, it in source:
            dt = item_datetime(it)
            cc = it.get("properties", {}).get("eo:cloud_cover")
            if period.contains(dt) and (cc is None or cc <= cc_max):
                yield ref, it, dt

    try:
        for (ref, it, dt), idx, lon in match_tiles(selected(), grid, tile_list, lambda r: r[1]):
            if not idx:
                continue
            obs = observation_key(dt, lon, groupby)
            # spans sort after (datetime, id) in catalog order, as build_plan's stable sort
            key = (dt, str(it.get("id", "")), ref if stage is None else None)
            for j in idx:
                keys[j].append(key)
                observations[j].add(obs)
                if stage is not None:
                    buf.setdefault(j, []).append(ref)
                    buffered += len(ref)
            if buffered > _FLUSH_BYTES:
                flush()
        plans = tuple(
            make_tile_plan(config, t, len(keys[j]), len(observations[j]), max_memory)
            for j, t in enumerate(tile_list)
        )
        p = Plan(config=config, period=period, tiles=plans, source=catalog)
        if folder is None:
            return p
        if stage is None:
            assert path is not None
            with path.open("rb") as f:
                fd = f.fileno()
                for j, tp in enumerate(plans):
                    spans = [k[2] for k in sorted(keys[j])]
                    data = b"".join(os.pread(fd, ln, off) + b"\n" for off, ln in spans)
                    store.write_bytes(
                        store.join(folder, tp.items_href), data, "application/x-ndjson"
                    )
            return p.save_manifest(folder)
        flush()
        for j, tp in enumerate(plans):
            part = os.path.join(stage.name, f"{j}.part")
            # split on \n only: a raw line may hold U+2028 etc., which splitlines() would split on
            lines = (
                Path(part).read_text(encoding="utf-8").split("\n")[:-1]
                if os.path.exists(part)
                else []
            )
            order = sorted(range(len(lines)), key=lambda k, j=j: keys[j][k][:2])  # type: ignore[misc]
            text = "".join(lines[k] + "\n" for k in order)
            store.write_bytes(
                store.join(folder, tp.items_href), text.encode(), "application/x-ndjson"
            )
        return p.save_manifest(folder)
    finally:
        if stage is not None:
            stage.cleanup()
