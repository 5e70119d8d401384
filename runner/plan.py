"""Plans: which tiles to compute, from which STAC items, with which resources.

A plan is a folder (local or ``s3://``) holding ``plan.json`` and one ``items/{tile}.ndjson`` per
tile (the STAC items of that tile, one JSON document a line). Keeping the items out of
``plan.json`` keeps the plan small for a continent (thousands of tiles, hundreds of thousands of
items), and a worker reads only its own tile's items. ``plan.json`` embeds the full run
configuration, so a worker needs nothing but the plan's URL and a tile id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from runner import __version__, store
from runner.config import RunConfig, parse_config
from runner.errors import UserInputError
from runner.grid import TileGrid, TileId
from runner.period import Period

#: Version of the plan.json layout; a worker refuses a plan of another version.
PLAN_SCHEMA = "gmrun/plan/1"
PLAN_FILE = "plan.json"

_MIB = 1024**2
_GIB = 1024**3
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
        if self.memory_bytes % _GIB == 0:
            return f"{self.memory_bytes // _GIB}Gi"
        return f"{math.ceil(self.memory_bytes / _MIB)}Mi"

    def scaled(self, factor: float) -> Resources:
        """More memory (e.g. 1.5x after an OOMKill), rounded up to whole MiB."""
        return Resources(math.ceil(self.memory_bytes * factor / _MIB) * _MIB, self.cpu)


def cube_bytes(ny: int, nx: int, n_bands: int, n_obs: int) -> int:
    """Bytes of the worker's uint16 Y×X×B×T cube."""
    return ny * nx * n_bands * n_obs * 2


def results_bytes(ny: int, nx: int, n_bands: int) -> int:
    """Bytes of a worker's results for ny × nx pixels: the float32 geomedian of each band, three
    float32 MADs, the uint16 count and the int32 iteration counts."""
    return ny * nx * (n_bands * 4 + 3 * 4 + 2 + 4)


def estimate_memory(ny: int, nx: int, n_bands: int, n_obs: int, overhead_mib: int) -> int:
    """Peak bytes of a worker computing the whole tile at once: the cube, the results and a
    fixed overhead (MiB) for the interpreter, GDAL caches and the reduction's row blocks."""
    return cube_bytes(ny, nx, n_bands, n_obs) + results_bytes(ny, nx, n_bands) + overhead_mib * _MIB


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


def band_memory(rows: int, ny: int, nx: int, n_bands: int, n_obs: int, overhead_mib: int) -> int:
    """Peak bytes of a worker processing a tile in bands of ``rows`` rows: one band's cube (the
    one preallocated buffer, reused by every band), the whole tile's results, one band's results
    (the reduction's output before it is copied into the tile's) and the fixed overhead (MiB)."""
    return (
        cube_bytes(rows, nx, n_bands, n_obs)
        + results_bytes(ny, nx, n_bands)
        + (results_bytes(rows, nx, n_bands) if rows < ny else 0)
        + overhead_mib * _MIB
    )


def _mib(n: int) -> str:
    return f"{math.ceil(n / _MIB)} MiB"


def row_bands_for(
    budget_bytes: int,
    ny: int,
    nx: int,
    n_bands: int,
    n_obs: int,
    overhead_mib: int,
    chunk: int | None = None,
) -> int:
    """The smallest number of row bands whose estimated peak (:func:`band_memory`) fits
    ``budget_bytes``; band heights as :func:`band_height` (multiples of ``chunk`` when thicker).

    Raises :class:`UserInputError` when even 1-row bands do not fit: the whole tile's results
    plus the fixed overhead are the floor of a worker's memory, whatever the number of bands.
    """
    if n_obs < 1 or budget_bytes >= estimate_memory(ny, nx, n_bands, n_obs, overhead_mib):
        return 1
    floor = band_memory(1, ny, nx, n_bands, n_obs, overhead_mib)
    if budget_bytes < floor:
        raise UserInputError(
            f"memory budget {_mib(budget_bytes)} is too small for a {ny}×{nx} px tile of {n_bands} bands and "
            f"{n_obs} observations: its results ({_mib(results_bytes(ny, nx, n_bands))}) and the fixed overhead "
            f"({overhead_mib} MiB) alone need {_mib(floor)}"
        )
    for n in range(2, ny + 1):  # band_height is non-increasing in n: the first fit is the least
        h = band_height(ny, n, chunk)
        if band_memory(h, ny, nx, n_bands, n_obs, overhead_mib) <= budget_bytes:
            return len(band_rows(ny, n, chunk))
    return ny  # unreachable: 1-row bands fit (checked above)


def size_class(memory_bytes: int) -> int:
    """Round a memory need up to a size class, in bytes (beyond the largest: whole GiB)."""
    for gib in SIZE_CLASSES_GIB:
        if memory_bytes <= gib * _GIB:
            return gib * _GIB
    return math.ceil(memory_bytes / _GIB) * _GIB


@dataclass(frozen=True, slots=True)
class TilePlan:
    """One tile of a plan."""

    tile: TileId
    n_items: int  #: STAC items intersecting the tile in the period
    n_obs: int  #: distinct observations (solar days) the cube will hold
    cube_bytes: int  #: bytes of the uint16 cube
    resources: Resources
    items_href: str  #: the tile's items, relative to the plan folder
    #: row bands the worker cuts the tile into to fit ``resources`` (1: the whole tile at once)
    row_bands: int = 1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "tile": str(self.tile),
            "n_items": self.n_items,
            "n_obs": self.n_obs,
            "cube_bytes": self.cube_bytes,
            "memory_bytes": self.resources.memory_bytes,
            "cpu": self.resources.cpu,
            "items": self.items_href,
        }
        if self.row_bands > 1:  # absent means 1: plans written before row bands read the same
            d["row_bands"] = self.row_bands
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TilePlan:
        return cls(
            tile=TileId.parse(d["tile"]),
            n_items=int(d["n_items"]),
            n_obs=int(d["n_obs"]),
            cube_bytes=int(d["cube_bytes"]),
            resources=Resources(int(d["memory_bytes"]), str(d["cpu"])),
            items_href=str(d["items"]),
            row_bands=int(d.get("row_bands", 1)),
        )


@dataclass(frozen=True)
class Plan:
    """A run: the configuration, the period and the tiles. ``url`` is where it lives."""

    config: RunConfig
    period: Period
    tiles: tuple[TilePlan, ...]
    url: str = ""
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    source: str = ""  #: where the items came from (catalog file or STAC API)

    @property
    def grid(self) -> TileGrid:
        return TileGrid.from_config(self.config.grid)

    @property
    def folder(self) -> str:
        return store.dirname(self.url)

    def tile(self, tile: TileId | str) -> TilePlan:
        """The plan of one tile; a tile not in the plan is a :class:`UserInputError`."""
        tid = tile if isinstance(tile, TileId) else TileId.parse(tile)
        for tp in self.tiles:
            if tp.tile == tid:
                return tp
        raise UserInputError(f"tile {tid} is not in the plan {self.url or '(unsaved)'}")

    def items(self, tile: TileId | str) -> list[dict[str, Any]]:
        """The STAC item documents of one tile."""
        tp = self.tile(tile)
        url = store.join(self.folder, tp.items_href)
        try:
            text = store.read_bytes(url).decode()
        except FileNotFoundError:
            raise UserInputError(f"the plan's item file {url} is missing") from None
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "created": self.created,
            "software": f"gmrun {__version__}",
            "source": self.source,
            "period": {
                "start": self.period.start.isoformat(),
                "end": self.period.end.isoformat(),
                "label": self.period.label,
            },
            "config": self.config.model_dump(mode="json"),
            "tiles": [tp.to_dict() for tp in self.tiles],
        }

    @classmethod
    def load(cls, url: str) -> Plan:
        """Read a plan from a folder or a ``plan.json`` path/URL (local or s3://)."""
        if not url.endswith(".json"):
            url = store.join(url, PLAN_FILE)
        raw = store.read_user_file(url, "plan")
        try:
            d = json.loads(raw)
        except json.JSONDecodeError as e:
            raise UserInputError(f"{url}: not a JSON plan ({e.msg} at line {e.lineno})") from None
        schema = d.get("schema") if isinstance(d, dict) else None
        if schema != PLAN_SCHEMA:
            raise UserInputError(
                f"{url}: plan schema {schema!r} is not supported (this gmrun reads {PLAN_SCHEMA!r})"
            )
        try:
            period = Period(date.fromisoformat(d["period"]["start"]), date.fromisoformat(d["period"]["end"]))
            tiles = tuple(TilePlan.from_dict(t) for t in d["tiles"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserInputError(f"{url}: malformed plan ({e})") from None
        return cls(
            config=parse_config(d.get("config"), f"{url}: config"),
            period=period,
            tiles=tiles,
            url=url,
            created=d.get("created", ""),
            source=d.get("source", ""),
        )

    def save(self, folder: str, items: dict[TileId, Sequence[dict[str, Any]]]) -> Plan:
        """Write ``plan.json`` and the item files into ``folder``; returns the plan with its URL."""
        for tp in self.tiles:
            lines = "".join(json.dumps(it, separators=(",", ":")) + "\n" for it in items.get(tp.tile, ()))
            store.write_bytes(store.join(folder, tp.items_href), lines.encode(), "application/x-ndjson")
        return self.save_manifest(folder)

    def save_manifest(self, folder: str) -> Plan:
        """Write ``plan.json`` only (the item files written already)."""
        url = store.join(folder, PLAN_FILE)
        text = json.dumps(self.to_dict(), indent=1)
        store.write_bytes(url, text.encode(), "application/json")
        return Plan(self.config, self.period, self.tiles, url, self.created, self.source)


def make_tile_plan(
    config: RunConfig, tile: TileId, n_items: int, n_obs: int, max_memory: int | None = None
) -> TilePlan:
    """Size one tile: cube bytes and Kubernetes resources (memory rounded up to a size class).

    A tile whose estimate exceeds ``max_memory`` (bytes) gets ``max_memory`` and the number of
    row bands that fits it (:func:`row_bands_for`); a budget too small for even 1-row bands is
    a :class:`UserInputError`."""
    grid = TileGrid.from_config(config.grid)
    n = grid.tile_pixels
    nb = len(config.bands)
    overhead = config.kubernetes.memory_overhead_mib
    need = estimate_memory(n, n, nb, n_obs, overhead)
    mem = size_class(need)
    bands = 1
    if max_memory is not None and mem > max_memory:
        mem = max_memory
        chunk = min(config.input.chunk, n)
        bands = row_bands_for(max_memory, n, n, nb, n_obs, overhead, chunk)
    return TilePlan(
        tile=tile,
        n_items=n_items,
        n_obs=n_obs,
        cube_bytes=cube_bytes(n, n, nb, n_obs),
        resources=Resources(mem, config.kubernetes.cpu),
        items_href=f"items/{tile}.ndjson",
        row_bands=bands,
    )


def tiles_by_id(tiles: Iterable[TilePlan]) -> dict[TileId, TilePlan]:
    return {tp.tile: tp for tp in tiles}


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
    from runner.catalog import assign_to_tiles, count_observations, in_period

    grid = TileGrid.from_config(config.grid)
    tile_list = sorted(set(tiles))
    selected = in_period(items, period, config.input.max_cloud_cover)
    by_tile = assign_to_tiles(selected, grid, tile_list)
    plans = tuple(
        make_tile_plan(config, t, len(by_tile[t]), count_observations(by_tile[t]), max_memory)
        for t in tile_list
    )
    return Plan(config=config, period=period, tiles=plans, source=source), by_tile


#: Assumed throughput of one worker node, in pixel-observations (pixels × time steps of a tile's
#: cube) per node-hour: a 16-core node at 3.5 M pixel-observations per core-second, a quarter of
#: the fused geomedian + MADs rate measured in docs/algos.md (~15 M/CPU-s at 10 bands), leaving
#: three quarters of the time for reading, decoding, masking and writing. An assumption, not a
#: measurement of a whole tile: use it to compare plans, not to book a cluster.
PX_OBS_PER_NODE_HOUR = 16 * 3.5e6 * 3600
#: Buffered item lines (bytes) before they are appended to the per-tile staging files.
_FLUSH_BYTES = 64 * _MIB


def node_hours(plan: Plan) -> float:
    """Estimated node-hours of a plan at :data:`PX_OBS_PER_NODE_HOUR`."""
    px = plan.grid.tile_pixels**2
    return sum(px * tp.n_obs for tp in plan.tiles) / PX_OBS_PER_NODE_HOUR


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
    tiles in vectorised batches; per tile only a (datetime, id, where) key and the solar days stay
    in memory. At the end every tile's
    raw item lines are written, sorted by (datetime, id), to ``folder/items/{tile}.ndjson``:
    read back by offset from a local ndjson catalog, or else from per-tile staging files written
    along the way. ``folder=None`` only counts (dry run). Same result as :func:`build_plan` +
    :meth:`Plan.save`."""
    import os
    import tempfile

    from runner.catalog import (
        item_datetime,
        iter_catalog,
        iter_ndjson_spans,
        local_ndjson,
        match_tiles,
    )

    grid = TileGrid.from_config(config.grid)
    tile_list = sorted(set(tiles))
    n = len(tile_list)
    keys: list[list[tuple[datetime, str, Any]]] = [[] for _ in range(n)]
    days: list[set[date]] = [set() for _ in range(n)]
    fields = frozenset(("id", "geometry", "properties"))
    path = local_ndjson(catalog) if records is None else None
    source: Iterable[tuple[Any, dict[str, Any]]]
    if records is not None:
        source = records
    else:
        source = iter_ndjson_spans(path, fields) if path is not None else iter_catalog(catalog, fields)
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
            day = (dt + timedelta(hours=lon / 15.0)).date()  # the solar day, as catalog.solar_day
            # spans sort after (datetime, id) in catalog order, as build_plan's stable sort
            key = (dt, str(it.get("id", "")), ref if stage is None else None)
            for j in idx:
                keys[j].append(key)
                days[j].add(day)
                if stage is not None:
                    buf.setdefault(j, []).append(ref)
                    buffered += len(ref)
            if buffered > _FLUSH_BYTES:
                flush()
        plans = tuple(make_tile_plan(config, t, len(keys[j]), len(days[j]), max_memory)
                      for j, t in enumerate(tile_list))  # fmt: skip
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
                    store.write_bytes(store.join(folder, tp.items_href), data, "application/x-ndjson")
            return p.save_manifest(folder)
        flush()
        for j, tp in enumerate(plans):
            part = os.path.join(stage.name, f"{j}.part")
            # split on \n only: a raw line may hold U+2028 etc., which splitlines() would split on
            lines = Path(part).read_text(encoding="utf-8").split("\n")[:-1] if os.path.exists(part) else []
            order = sorted(range(len(lines)), key=lambda k, j=j: keys[j][k][:2])  # type: ignore[misc]
            text = "".join(lines[k] + "\n" for k in order)
            store.write_bytes(store.join(folder, tp.items_href), text.encode(), "application/x-ndjson")
        return p.save_manifest(folder)
    finally:
        if stage is not None:
            stage.cleanup()


_RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))  # viridis stops


def _colour(v: float) -> tuple[int, int, int]:
    """``v`` in [0, 1] on a 5-stop viridis ramp."""
    x = min(max(v, 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(x), len(_RAMP) - 2)
    f = x - i
    return tuple(round(a + (b - a) * f) for a, b in zip(_RAMP[i], _RAMP[i + 1], strict=True))  # type: ignore[return-value]


def tiles_geojson(plan: Plan) -> dict[str, Any]:
    """One Feature per tile (footprint in lon/lat) with n_items, n_obs, cube_bytes, memory."""
    import shapely
    import shapely.geometry
    from pyproj import Transformer

    grid = plan.grid
    tiles = [tp.tile for tp in plan.tiles]
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    boxes = shapely.segmentize(grid.boxes(tiles), grid.tile_size / 8)

    def to_ll(xy: Any) -> Any:
        import numpy as np

        lon, lat = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([lon, lat])

    ll = shapely.set_precision(shapely.simplify(shapely.transform(boxes, to_ll), 1e-7), 1e-7)
    feats = []
    for tp, g in zip(plan.tiles, ll, strict=True):
        feats.append({
            "type": "Feature",
            "id": str(tp.tile),
            "geometry": shapely.geometry.mapping(g),
            "properties": {"tile": str(tp.tile), "n_items": tp.n_items, "n_obs": tp.n_obs,
                           "cube_bytes": tp.cube_bytes, "memory": tp.resources.memory,
                           "memory_bytes": tp.resources.memory_bytes},
        })  # fmt: skip
    return {"type": "FeatureCollection", "features": feats}


def tiles_png(plan: Plan, outline: Any | None = None, max_px: int = 1000) -> bytes:
    """A map of the plan's tiles (grid CRS, north up) coloured by observation count (viridis,
    0 → max), tiles without observations in red, over the region's outline (grey)."""
    import io

    import shapely
    from odc.geo import CRS
    from PIL import Image, ImageDraw

    grid = plan.grid
    boxes = grid.boxes([tp.tile for tp in plan.tiles])
    geoms = list(boxes)
    region = None
    if outline is not None:
        region = outline.to_crs(CRS(grid.crs)).geom
        geoms.append(region)
    if not geoms:
        geoms = [shapely.box(0, 0, 1, 1)]
    left, bottom, right, top = shapely.total_bounds(geoms)
    scale = max_px / max(right - left, top - bottom)
    w, h = max(1, round((right - left) * scale)) + 2, max(1, round((top - bottom) * scale)) + 2
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)

    def px(x: float, y: float) -> tuple[float, float]:
        return (1 + (x - left) * scale, 1 + (top - y) * scale)

    if region is not None:
        for poly in getattr(region, "geoms", [region]):
            draw.polygon([px(x, y) for x, y in poly.exterior.coords], fill=(225, 225, 225), outline=(120, 120, 120))
    top_obs = max((tp.n_obs for tp in plan.tiles), default=0) or 1
    for tp, b in zip(plan.tiles, boxes, strict=True):
        x0, y0, x1, y1 = b.bounds
        colour = (220, 40, 40) if tp.n_obs == 0 else _colour(tp.n_obs / top_obs)
        (a, d), (c, e) = px(x0, y1), px(x1, y0)
        draw.rectangle([a, d, max(a, c - 1), max(d, e - 1)], fill=colour)
    if region is not None:  # the coastline over the tiles
        for poly in getattr(region, "geoms", [region]):
            draw.line([px(x, y) for x, y in poly.exterior.coords], fill=(60, 60, 60), width=1)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def summary_table(plan: Plan) -> Any:
    """A rich table: tiles, items, observations, cube TB, estimated node-hours."""
    from rich.table import Table

    tiles = plan.tiles
    t = Table(title=f"plan {plan.period.label}", show_header=True)
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("tiles", f"{len(tiles)}")
    t.add_row("tiles with observations", f"{sum(1 for tp in tiles if tp.n_obs)}")
    t.add_row("item-tile pairs", f"{sum(tp.n_items for tp in tiles)}")
    t.add_row("observations (tile time steps)", f"{sum(tp.n_obs for tp in tiles)}")
    t.add_row("max observations in a tile", f"{max((tp.n_obs for tp in tiles), default=0)}")
    t.add_row("total cube", f"{sum(tp.cube_bytes for tp in tiles) / 1e12:.3f} TB")
    t.add_row("largest memory class", max((tp.resources for tp in tiles), key=lambda r: r.memory_bytes,
                                          default=Resources(0, "")).memory)  # fmt: skip
    t.add_row("estimated node-hours*", f"{node_hours(plan):.1f}")
    t.caption = (f"* at an assumed {PX_OBS_PER_NODE_HOUR:.2g} pixel-observations per node-hour "
                 "(16 cores; see runner/plan.py PX_OBS_PER_NODE_HOUR)")  # fmt: skip
    return t


def write_outputs(plan: Plan, folder: str, outline: Any | None = None) -> None:
    """``tiles.geojson`` and ``tiles.png`` next to ``plan.json``."""
    doc = tiles_geojson(plan)
    store.write_bytes(store.join(folder, "tiles.geojson"), json.dumps(doc, separators=(",", ":")).encode(),
                      "application/geo+json")  # fmt: skip
    store.write_bytes(store.join(folder, "tiles.png"), tiles_png(plan, outline), "image/png")


def plan_command(
    *,
    catalog: str | None,
    bbox: tuple[float, float, float, float] | None,
    tiles: list[TileId] | None,
    tiles_file: str | None,
    region: str | None,
    geojson: str | None,
    year: int | None,
    period: str | None,
    config_path: str | None,
    out: str,
    max_memory: int | None,
    dry_run: bool,
    stac_api: str | None = None,
    collection: str | None = None,
    page_size: int = 100,
    block_tiles: int = 4,
    max_items: int | None = None,
) -> Plan | None:
    """``gmrun plan``: select the tiles, assign the catalog's (or the STAC API's) items, print a
    summary, write. ``catalog`` is an item file or a preset name (``runner.stac_api.PRESETS``)."""
    import time

    from rich.console import Console

    from runner.config import load_config
    from runner.region import select_tiles
    from runner.stac_api import StacApi, config_for_catalog

    t0 = time.monotonic()
    config = config_for_catalog(load_config(config_path), catalog)
    if (year is None) == (period is None):
        raise UserInputError("give exactly one of --year or --period")
    per = Period.year(year) if year is not None else Period.parse(period or "")
    grid = TileGrid.from_config(config.grid)
    tile_ids, _outline = select_tiles(grid, bbox=bbox, tiles=tiles, tiles_file=tiles_file,
                                      region=region, geojson=geojson)  # fmt: skip
    console = Console()
    api = StacApi.from_options(catalog=catalog, stac_api=stac_api, collection=collection,
                               page_size=page_size, block_tiles=block_tiles, max_items=max_items)  # fmt: skip
    if catalog is None and api is None:
        if not dry_run:
            raise UserInputError("give --catalog or --stac-api (only a --dry-run lists the tiles without one)")
        first, last = (str(tile_ids[0]), str(tile_ids[-1])) if tile_ids else ("-", "-")
        console.print(f"{len(tile_ids)} tiles (first {first}, last {last}), period {per.label}, "
                      f"{time.monotonic() - t0:.2f} s")  # fmt: skip
        return None
    if api is not None:
        from rich.progress import Progress

        from runner.stac_api import StacApiSearch

        search = StacApiSearch(api, grid, tile_ids, per, config.input.max_cloud_cover)
        with Progress(console=Console(stderr=True), transient=True) as bar:
            search.progress = bar
            p = stream_plan(config, tile_ids, api.source, per, None if dry_run else out, max_memory,
                            records=search.records())  # fmt: skip
        console.print(search.summary())
    else:
        assert catalog is not None
        p = stream_plan(config, tile_ids, catalog, per, None if dry_run else out, max_memory)
    console.print(summary_table(p))
    if dry_run:
        console.print(f"dry run: nothing written ({time.monotonic() - t0:.1f} s)")
        return p
    write_outputs(p, out, _outline)
    console.print(f"plan written: {p.url} (+ tiles.geojson, tiles.png) in {time.monotonic() - t0:.1f} s")
    return p
