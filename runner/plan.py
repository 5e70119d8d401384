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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
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


def estimate_memory(ny: int, nx: int, n_bands: int, n_obs: int, overhead_mib: int) -> int:
    """Peak bytes of a worker: the cube, the float32 results (geomedian per band, three MADs,
    count) and a fixed overhead for the interpreter, GDAL caches and the reduction's row blocks."""
    results = ny * nx * (n_bands * 4 + 3 * 4 + 2)
    return cube_bytes(ny, nx, n_bands, n_obs) + results + overhead_mib * _MIB


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "tile": str(self.tile),
            "n_items": self.n_items,
            "n_obs": self.n_obs,
            "cube_bytes": self.cube_bytes,
            "memory_bytes": self.resources.memory_bytes,
            "cpu": self.resources.cpu,
            "items": self.items_href,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TilePlan:
        return cls(
            tile=TileId.parse(d["tile"]),
            n_items=int(d["n_items"]),
            n_obs=int(d["n_obs"]),
            cube_bytes=int(d["cube_bytes"]),
            resources=Resources(int(d["memory_bytes"]), str(d["cpu"])),
            items_href=str(d["items"]),
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
        try:
            raw = store.read_bytes(url)
        except FileNotFoundError:
            raise UserInputError(f"plan not found: {url}") from None
        except IsADirectoryError:
            raise UserInputError(f"plan not found: {url} is a folder") from None
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
        url = store.join(folder, PLAN_FILE)
        text = json.dumps(self.to_dict(), indent=1)
        store.write_bytes(url, text.encode(), "application/json")
        return Plan(self.config, self.period, self.tiles, url, self.created, self.source)


def make_tile_plan(
    config: RunConfig, tile: TileId, n_items: int, n_obs: int, max_memory: int | None = None
) -> TilePlan:
    """Size one tile: cube bytes and Kubernetes resources (memory rounded up to a size class)."""
    grid = TileGrid.from_config(config.grid)
    n = grid.tile_pixels
    nb = len(config.bands)
    need = estimate_memory(n, n, nb, n_obs, config.kubernetes.memory_overhead_mib)
    mem = size_class(need)
    if max_memory is not None:
        mem = min(mem, max_memory)
    return TilePlan(
        tile=tile,
        n_items=n_items,
        n_obs=n_obs,
        cube_bytes=cube_bytes(n, n, nb, n_obs),
        resources=Resources(mem, config.kubernetes.cpu),
        items_href=f"items/{tile}.ndjson",
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
) -> Plan | None:
    """``gmrun plan``: select the tiles, assign the catalog's items, print a summary, write."""
    import time

    from rich.console import Console

    from runner.config import load_config
    from runner.region import select_tiles

    t0 = time.monotonic()
    config = load_config(config_path)
    if (year is None) == (period is None):
        raise UserInputError("give exactly one of --year or --period")
    per = Period.year(year) if year is not None else Period.parse(period or "")
    grid = TileGrid.from_config(config.grid)
    tile_ids, _outline = select_tiles(grid, bbox=bbox, tiles=tiles, tiles_file=tiles_file,
                                      region=region, geojson=geojson)  # fmt: skip
    console = Console()
    if catalog is None:
        if not dry_run:
            raise UserInputError("give --catalog (only a --dry-run lists the tiles without one)")
        first, last = (str(tile_ids[0]), str(tile_ids[-1])) if tile_ids else ("-", "-")
        console.print(f"{len(tile_ids)} tiles (first {first}, last {last}), period {per.label}, "
                      f"{time.monotonic() - t0:.2f} s")  # fmt: skip
        return None
    from runner.catalog import read_items

    p, items = build_plan(config, tile_ids, read_items(catalog), per, source=catalog, max_memory=max_memory)
    n_items = sum(tp.n_items for tp in p.tiles)
    cube_tb = sum(tp.cube_bytes for tp in p.tiles) / 1e12
    console.print(f"{len(p.tiles)} tiles, {n_items} item-tile pairs, "
                  f"{sum(tp.n_obs for tp in p.tiles)} observations, cube total {cube_tb:.4f} TB, "
                  f"period {per.label}")  # fmt: skip
    if dry_run:
        return p
    saved = p.save(out, items)
    console.print(f"plan written: {saved.url}")
    return saved
