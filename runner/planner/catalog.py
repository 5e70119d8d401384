"""STAC items: reading item files, their footprints, solar days, and which tiles they touch."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import islice
from json.decoder import scanstring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import shapely
from odc.geo import CRS
from odc.geo.geom import Geometry
from pyproj import Transformer
from shapely.geometry import shape

from runner.common import store
from runner.common.config import GroupBy
from runner.common.errors import UserInputError
from runner.planner.grid import TileGrid, TileId
from runner.planner.period import Period

Item = dict[str, Any]
T = TypeVar("T")
#: How errors name a STAC item file the user gave.
CATALOG = "catalog (an .ndjson, .json or stac-geoparquet .parquet item file)"


def read_geoparquet(url: str) -> list[Item]:
    """The items of a stac-geoparquet file (local or s3://), via rustac. The whole file is
    decoded at once (no streaming): fine for the item files of a region, not for a continent's
    archive in one file."""
    import tempfile

    import rustac

    if store.is_s3(url):
        raw = store.read_user_file(url, CATALOG)
        with tempfile.NamedTemporaryFile(suffix=".parquet") as f:
            f.write(raw)
            f.flush()
            return read_geoparquet(f.name)
    path = store.local_path(url)
    with store.open_user_file(path, CATALOG, "rb"):
        pass  # the usual one-line errors for a missing file or a folder
    try:
        doc = rustac.read_sync(str(path), format="parquet", set_self_link=False)
    except Exception as e:  # rustac raises its own and arrow errors
        raise UserInputError(
            f"{url}: not a stac-geoparquet file ({' '.join(str(e).split())[:200]})"
        ) from None
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list):
        raise UserInputError(f"{url}: not a stac-geoparquet item collection")
    return feats


def read_items(url: str) -> Iterator[Item]:
    """Items from a local or s3:// file: ndjson (one item a line), an ItemCollection /
    FeatureCollection, a single Item, or stac-geoparquet (``.parquet``/``.geoparquet``)."""
    if url.endswith((".parquet", ".geoparquet")):
        yield from read_geoparquet(url)
        return
    raw = store.read_user_file(url, CATALOG)
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


def _shift_east(xy: np.ndarray) -> np.ndarray:
    return np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360.0, xy[:, 0]), xy[:, 1]])


def split_antimeridian(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(footprints, centroid longitudes)`` of shapely geometries in lon/lat, with antimeridian
    crossings resolved: a footprint whose longitudes span more than 180° is taken to cross ±180°
    (a polygon written with a +179° → −179° jump, or one already split at ±180° as the STAC spec
    advises). Its negative longitudes are shifted by +360°, the shape is cut at 180° and the part
    beyond is moved back by −360° (a MultiPolygon on both sides); its centroid longitude is the
    shifted shape's, wrapped to [−180°, 180°). Other footprints are returned as they are."""
    lon = shapely.get_x(shapely.centroid(geoms))
    if not len(geoms):
        return geoms, lon
    bounds = shapely.bounds(geoms)
    wide = np.flatnonzero(bounds[:, 2] - bounds[:, 0] > 180.0)
    if not wide.size:
        return geoms, lon
    geoms, lon = geoms.copy(), lon.copy()
    for i in wide.tolist():
        g = shapely.transform(geoms[i], _shift_east)
        lon[i] = (shapely.get_x(shapely.centroid(g)) + 180.0) % 360.0 - 180.0
        west = shapely.clip_by_rect(g, -180.0, -90.0, 180.0, 90.0)
        east = shapely.transform(
            shapely.clip_by_rect(g, 180.0, -90.0, 540.0, 90.0), lambda xy: xy - [360.0, 0.0]
        )
        geoms[i] = shapely.union(west, east)
    return geoms, lon


def solar_date(t: datetime, lon: float) -> date:
    """Local solar date of an acquisition at UTC time ``t`` and longitude ``lon`` (degrees):
    ``t`` shifted by 15° per hour, as odc-stac's ``groupby="solar_day"`` computes it. The one
    place the rule is written; the planner and the tests use it."""
    return (t + timedelta(hours=lon / 15.0)).date()


def observation_key(t: datetime, lon: float, groupby: GroupBy) -> date | datetime:
    """What makes two items one observation (one time step of the cube) under ``input.groupby``:
    their solar date, or their exact acquisition time."""
    return solar_date(t, lon) if groupby == "solar_day" else t


def item_longitude(item: Item) -> float:
    """Longitude of the footprint's centre (of a footprint crossing the antimeridian as
    :func:`split_antimeridian` finds it), degrees."""
    return float(split_antimeridian(np.array([shape(item["geometry"])], dtype=object))[1][0])


def solar_day(item: Item) -> date:
    """Local solar date of an item (:func:`solar_date` at its footprint's centre)."""
    return solar_date(item_datetime(item), item_longitude(item))


def in_period(
    items: Iterable[Item], period: Period, max_cloud_cover: float = 100.0
) -> Iterator[Item]:
    for it in items:
        cc = it.get("properties", {}).get("eo:cloud_cover")
        if period.contains(item_datetime(it)) and (cc is None or cc <= max_cloud_cover):
            yield it


#: Items transformed and matched at a time (bounds the memory of the vectorised step).
BATCH = 4096


_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


def parse_fields(line: str, fields: frozenset[str]) -> Item:
    """The top-level members ``fields`` of one JSON object, parsing values only until all are
    found: members after them (a STAC item's large ``assets`` usually comes last) are skipped
    unparsed. A proper top-level scan (not a text search), so nested keys of the same name do not
    confuse it. Anything unusual falls back to :func:`json.loads` (and its error)."""

    def ws(text: str, pos: int) -> re.Match[str]:
        m = _WS.match(text, pos)
        assert m is not None  # a run of blanks, possibly empty, always matches
        return m

    blank = " \t\n\r"
    try:
        pos = ws(line, 0).end()
        if line[pos] != "{" or not line.rstrip().endswith("}"):
            return json.loads(line)
        pos += 1
        out: Item = {}
        need = set(fields)
        while need:
            if line[pos] in blank:  # compact JSON (the usual ndjson) skips the regex call
                pos = ws(line, pos).end()
            if line[pos] == "}":
                break
            if line[pos] != '"':
                return json.loads(line)
            key, pos = scanstring(line, pos + 1)
            if line[pos] in blank:
                pos = ws(line, pos).end()
            if line[pos] != ":":
                return json.loads(line)
            pos += 1
            if line[pos] in blank:
                pos = ws(line, pos).end()
            value, pos = _DECODER.raw_decode(line, pos)
            if key in fields:
                out[key] = value
                need.discard(key)
            if line[pos] in blank:
                pos = ws(line, pos).end()
            if line[pos] == ",":
                pos += 1
            elif line[pos] != "}":
                return json.loads(line)
        return out
    except (IndexError, ValueError):
        return json.loads(line)


def iter_catalog(url: str, fields: frozenset[str] | None = None) -> Iterator[tuple[str, Item]]:
    """``(line, item)`` pairs: for a local ndjson file the raw line (streamed, never the whole
    file in memory, so a plan can copy it verbatim); else the item re-serialised. With
    ``fields``, ndjson items hold only those top-level members (see :func:`parse_fields`)."""
    if url.endswith((".ndjson", ".jsonl")) and not store.is_s3(url):
        path = store.local_path(url)
        with store.open_user_file(path, CATALOG) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield (
                            line.rstrip("\n"),
                            (parse_fields(line, fields) if fields else json.loads(line)),
                        )
                    except json.JSONDecodeError as e:
                        raise UserInputError(f"{url}:{n}: not a JSON item ({e.msg})") from None
        return
    for it in read_items(url):
        yield json.dumps(it, separators=(",", ":")), it


def local_ndjson(url: str) -> Path | None:
    """The path of a local ndjson catalog (whose lines can be addressed by offset), else None."""
    if url.endswith((".ndjson", ".jsonl")) and not store.is_s3(url):
        return store.local_path(url)
    return None


def iter_ndjson_spans(path: Path, fields: frozenset[str]) -> Iterator[tuple[tuple[int, int], Item]]:
    """``((offset, length), item)`` for each item line of a local ndjson file: where its bytes
    are (without the line end), and its top-level ``fields`` (:func:`parse_fields`)."""
    offset = 0
    with store.open_user_file(path, CATALOG, "rb") as f:
        for n, raw in enumerate(f, 1):
            start = offset
            offset += len(raw)
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            try:
                yield (start, len(body)), parse_fields(body.decode("utf-8"), fields)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UserInputError(f"{path}:{n}: not a JSON item ({e})") from None


@dataclass(frozen=True, slots=True)
class Matches:
    """One batch's result: per record the indices (into the tile list) of its tiles, and the
    longitude of its footprint's centroid (for the solar day)."""

    tiles: list[list[int]]
    lon: np.ndarray


class TileMatcher:
    """Which of ``tiles`` each footprint intersects (area > 0), vectorised: footprints crossing
    the antimeridian are split there (:func:`split_antimeridian`), all are transformed in one
    pyproj call per batch, candidates come from an STRtree of the tile boxes
    and edge/corner-only contacts are dropped."""

    def __init__(self, grid: TileGrid, tiles: Sequence[TileId]) -> None:
        self.tiles = list(tiles)
        self.boxes = grid.boxes(self.tiles)
        self.tree = shapely.STRtree(self.boxes)
        self._tr = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)

    def _project(self, xy: np.ndarray) -> np.ndarray:
        x, y = self._tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    def match(self, geometries: Sequence[dict[str, Any]]) -> Matches:
        """Match GeoJSON geometries (EPSG:4326) to the tiles."""
        geoms, lon = split_antimeridian(np.array([shape(g) for g in geometries], dtype=object))
        # densify (0.25°) so that edges curving in the grid CRS stay close to the footprint
        proj = shapely.transform(shapely.segmentize(geoms, 0.25), self._project)
        out: list[list[int]] = [[] for _ in range(len(geoms))]
        if len(self.tiles) and len(geoms):
            src, dst = self.tree.query(proj, predicate="intersects")
            keep = ~shapely.touches(proj[src], self.boxes[dst])
            for i, j in zip(src[keep].tolist(), dst[keep].tolist(), strict=True):
                out[i].append(j)
        return Matches(out, lon)


def match_tiles(
    records: Iterable[T],
    grid: TileGrid,
    tiles: Sequence[TileId],
    item: Callable[[T], Item],
    batch: int = BATCH,
) -> Iterator[tuple[T, list[int], float]]:
    """``(record, tile indices, centroid longitude)`` for each record, in order, batch by batch."""
    matcher = TileMatcher(grid, tiles)
    it = iter(records)
    while chunk := list(islice(it, batch)):
        m = matcher.match([item(r)["geometry"] for r in chunk])
        yield from zip(chunk, m.tiles, m.lon.tolist(), strict=True)


def assign_to_tiles(
    items: Iterable[Item], grid: TileGrid, tiles: Iterable[TileId]
) -> dict[TileId, list[Item]]:
    """Items per tile, by footprint intersection (area > 0) with each tile's footprint."""
    wanted = sorted(set(tiles))
    out: dict[TileId, list[Item]] = {t: [] for t in wanted}
    for it, idx, _lon in match_tiles(items, grid, wanted, lambda r: r):
        for j in idx:
            out[wanted[j]].append(it)
    for lst in out.values():
        lst.sort(key=lambda it: (item_datetime(it), it.get("id", "")))
    return out


def count_observations(items: Iterable[Item], groupby: GroupBy = "solar_day") -> int:
    """Distinct observations (:func:`observation_key`): the time steps of the tile's cube."""
    return len({observation_key(item_datetime(it), item_longitude(it), groupby) for it in items})
