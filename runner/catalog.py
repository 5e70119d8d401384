"""STAC items: reading item files, their footprints, solar days, and which tiles they touch."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from typing import Any

from odc.geo import CRS
from odc.geo.geom import Geometry

from runner import store
from runner.errors import UserInputError
from runner.grid import TileGrid, TileId
from runner.period import Period

Item = dict[str, Any]


def read_items(url: str) -> Iterator[Item]:
    """Items from a local or s3:// file: ndjson (one item a line), an ItemCollection /
    FeatureCollection, or a single Item."""
    try:
        raw = store.read_bytes(url)
    except FileNotFoundError:
        raise UserInputError(f"catalog not found: {url}") from None
    except IsADirectoryError:
        raise UserInputError(f"catalog {url} is a folder: give an .ndjson or .json item file") from None
    text = raw.decode()
    if url.endswith((".ndjson", ".jsonl")):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserInputError(f"{url}:{n}: not a JSON item ({e.msg})") from None
        return
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserInputError(f"{url}: not JSON ({e.msg} at line {e.lineno})") from None
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        yield from doc.get("features", [])
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        yield doc
    else:
        raise UserInputError(f"{url}: expected a STAC Item, ItemCollection or ndjson of items")


def item_datetime(item: Item) -> datetime:
    props = item.get("properties", {})
    text = props.get("datetime") or props.get("start_datetime")
    if not text:
        raise UserInputError(f"item {item.get('id')!r} has no datetime")
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def item_footprint(item: Item) -> Geometry:
    return Geometry(item["geometry"], crs=CRS("EPSG:4326"))


def solar_day(item: Item) -> date:
    """Local solar date of an acquisition: UTC time shifted by the footprint centre's longitude
    (15° per hour), as odc-stac's ``groupby="solar_day"`` computes it."""
    lon = item_footprint(item).centroid.coords[0][0]
    return (item_datetime(item) + timedelta(hours=lon / 15.0)).date()


def in_period(items: Iterable[Item], period: Period, max_cloud_cover: float = 100.0) -> Iterator[Item]:
    for it in items:
        cc = it.get("properties", {}).get("eo:cloud_cover")
        if period.contains(item_datetime(it)) and (cc is None or cc <= max_cloud_cover):
            yield it


def assign_to_tiles(items: Iterable[Item], grid: TileGrid, tiles: Iterable[TileId]) -> dict[TileId, list[Item]]:
    """Items per tile, by footprint intersection (area > 0) with each tile's footprint."""
    wanted = set(tiles)
    out: dict[TileId, list[Item]] = {t: [] for t in wanted}
    crs = CRS(grid.crs)
    for it in items:
        fp = item_footprint(it).to_crs(crs)
        left, bottom, right, top = fp.boundingbox
        lo, hi = grid.locate(left, bottom), grid.locate(right, top)
        for iy in range(lo.iy, hi.iy + 1):
            for ix in range(lo.ix, hi.ix + 1):
                t = TileId(ix, iy)
                if t in wanted:
                    inter = grid.footprint(t).intersection(fp)
                    if not inter.is_empty and inter.area > 0:
                        out[t].append(it)
    for lst in out.values():
        lst.sort(key=lambda it: (item_datetime(it), it.get("id", "")))
    return out


def count_observations(items: Iterable[Item]) -> int:
    """Distinct solar days: the time steps of the tile's cube."""
    return len({solar_day(it) for it in items})
