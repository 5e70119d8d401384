"""The plan format: which tiles to compute, from which STAC items, with which resources.

A plan is a folder (local or ``s3://``) holding ``plan.json`` and one ``items/{tile}.ndjson`` per
tile (the STAC items of that tile, one JSON document a line). Keeping the items out of
``plan.json`` keeps the plan small for a continent (thousands of tiles, hundreds of thousands of
items), and a worker reads only its own tile's items. ``plan.json`` embeds the full run
configuration, so a worker needs nothing but the plan's URL and a tile id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from runner import __version__
from runner.common import store
from runner.common.config import RunConfig, parse_config
from runner.common.errors import UserInputError
from runner.planner.grid import TileGrid, TileId
from runner.planner.period import Period
from runner.planner.sizing import Resources, size_tile

#: where a tile's items lie in the plan folder: nothing else may be named, so a plan cannot
#: make a worker read ``../../../../etc/passwd`` or another machine's file
_ITEMS_HREF = re.compile(r"items/[A-Za-z0-9_\-]{1,64}\.ndjson", re.ASCII)


def parse_json(raw: bytes, where: str, what: str) -> Any:
    """JSON of a file (or one line of it), every way it can be malformed a one-line
    :class:`UserInputError` naming ``where``: not UTF-8, not JSON, nested too deeply."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserInputError(f"{where}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        at = f"column {e.colno}" if e.lineno == 1 else f"line {e.lineno}, column {e.colno}"
        raise UserInputError(f"{where}: not {what} ({e.msg} at {at})") from None
    except RecursionError:
        raise UserInputError(f"{where}: not {what} (nested too deeply)") from None


#: Version of the plan.json layout; a worker refuses a plan of another version.
PLAN_SCHEMA = "gmrun/plan/1"
PLAN_FILE = "plan.json"

#: Why a tile without observations gets no Job and no worker (``TilePlan.skip``).
EMPTY_REASON = "empty: 0 observations in the period"


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

    @property
    def skip(self) -> str | None:
        """Why the tile is skipped, never run (no Job, no worker): :data:`EMPTY_REASON` for a
        tile with 0 observations; ``None`` for a tile with work to do. Written to ``plan.json``
        as ``"skip"`` for people to read; derived from ``n_obs`` when a plan is read."""
        return EMPTY_REASON if self.n_obs <= 0 else None

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
        if self.skip:
            d["skip"] = self.skip
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TilePlan:
        href = str(d["items"])
        if not _ITEMS_HREF.fullmatch(href):
            raise ValueError(
                f"tile {d.get('tile')!r}: items {href[:80]!r} must be a file in the plan's "
                "items/ folder (items/{tile}.ndjson)"
            )
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
        """The STAC item documents of one tile; a malformed line is an error naming the file and
        the line (``items/x001y000.ndjson:4: …``)."""
        tp = self.tile(tile)
        url = store.join(self.folder, tp.items_href)
        try:
            raw = store.read_bytes(url)
        except FileNotFoundError:
            raise UserInputError(f"the plan's item file {url} is missing") from None
        items = []
        for n, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            doc = parse_json(line, f"{url}:{n}", "a STAC item")
            if not isinstance(doc, dict) or not isinstance(doc.get("assets", {}), dict):
                raise UserInputError(f"{url}:{n}: not a STAC item (a JSON object with assets)")
            items.append(doc)
        return items

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
        d = parse_json(raw, url, "a JSON plan")
        schema = d.get("schema") if isinstance(d, dict) else None
        if schema != PLAN_SCHEMA:
            raise UserInputError(
                f"{url}: plan schema {schema!r} is not supported (this gmrun reads {PLAN_SCHEMA!r})"
            )
        try:
            period = Period(
                date.fromisoformat(d["period"]["start"]), date.fromisoformat(d["period"]["end"])
            )
            tiles = tuple(TilePlan.from_dict(t) for t in d["tiles"])
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
            raise UserInputError(f"{url}: malformed plan ({e})") from None
        except UserInputError as e:  # a tile id, a period: say which file
            raise UserInputError(f"{url}: {e}") from None
        return cls(
            config=parse_config(d.get("config"), f"{url}: config"),
            period=period,
            tiles=tiles,
            url=url,
            created=d.get("created", ""),
            source=d.get("source", ""),
        )

    def save(self, folder: str, items: Mapping[TileId, Sequence[dict[str, Any]]]) -> Plan:
        """Write ``plan.json`` and the item files into ``folder``; returns the plan with its URL."""
        for tp in self.tiles:
            lines = "".join(
                json.dumps(it, separators=(",", ":")) + "\n" for it in items.get(tp.tile, ())
            )
            store.write_bytes(
                store.join(folder, tp.items_href), lines.encode(), "application/x-ndjson"
            )
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
    """A tile of the plan, sized by :func:`runner.planner.sizing.size_tile` (``max_memory`` in
    bytes: row bands when the tile's estimate exceeds it)."""
    size = size_tile(config, n_obs, max_memory)
    return TilePlan(
        tile=tile,
        n_items=n_items,
        n_obs=n_obs,
        cube_bytes=size.cube_bytes,
        resources=size.resources,
        items_href=f"items/{tile}.ndjson",
        row_bands=size.row_bands,
    )


def tiles_by_id(tiles: Iterable[TilePlan]) -> dict[TileId, TilePlan]:
    return {tp.tile: tp for tp in tiles}
