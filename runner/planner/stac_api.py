"""Item discovery from a STAC API (pystac-client): block-wise searches over the planned tiles.

A region's tiles are grouped into square blocks of ``block_tiles`` × ``block_tiles`` tiles; each
block is one search (its planned tiles' bounding box in EPSG:4326, the period, the collection and,
where the API supports it, an ``eo:cloud_cover`` filter), paged ``page_size`` items at a time.
Items are deduplicated by id across blocks (a footprint straddling blocks is found by each),
their relative asset hrefs resolved against their ``self`` link (:func:`absolute_hrefs`), and
handed on as ``(json line, item)`` records, which :func:`runner.planner.plan.stream_plan` assigns to tiles
by footprint intersection exactly as it does a catalog file's.

Requests are retried on connection errors, read errors and HTTP 429/500/502/503/504 (urllib3
``Retry``, honouring ``Retry-After``), ``retries`` times with exponential backoff (urllib3 2:
no wait before the first retry, then ``backoff`` × 2^(n-1) seconds before the n-th: 2, 4, 8, 16 s
at the default 1 s, at most 120 s). ``GMRUN_STAC_RETRIES``, ``GMRUN_STAC_BACKOFF`` (seconds) and
``GMRUN_STAC_TIMEOUT`` (seconds per request) override the defaults.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import shapely
from pyproj import Transformer
from pystac_client import Client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from urllib3.util.retry import Retry

from runner.common.config import RunConfig, SigningMethod
from runner.common.errors import UserInputError
from runner.planner.grid import TileGrid, TileId
from runner.planner.period import Period

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Preset:
    """A documented public STAC API and its Sentinel-2 L2A collection."""

    url: str
    collection: str
    note: str = ""
    #: ``input.signing`` its assets need (set in the plan unless the config chose one).
    signing: SigningMethod = "none"


#: ``--catalog NAME`` presets.
PRESETS: dict[str, Preset] = {
    "earth-search": Preset(
        "https://earth-search.aws.element84.com/v1",
        "sentinel-2-l2a",
        "Element 84 Earth Search; assets are public COGs on AWS (us-west-2)",
    ),
    "planetary-computer": Preset(
        "https://planetarycomputer.microsoft.com/api/stac/v1",
        "sentinel-2-l2a",
        "Microsoft Planetary Computer; the worker signs asset hrefs (SAS tokens)",
        signing="planetary-computer",
    ),
}


def config_for_catalog(config: RunConfig, catalog: str | None) -> RunConfig:
    """The run configuration a plan from ``catalog`` embeds: a preset whose assets need signing
    turns ``input.signing`` on, unless the configuration already chose a method."""
    preset = PRESETS.get(catalog or "")
    if preset is None or preset.signing == "none" or config.input.signing != "none":
        return config
    return config.model_copy(
        update={"input": config.input.model_copy(update={"signing": preset.signing})}
    )


#: HTTP statuses that are retried (rate limits and transient server errors).
RETRY_STATUSES = (429, 500, 502, 503, 504)


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise UserInputError(f"{name}={text!r} is not a number") from None
    if value < 0:
        raise UserInputError(f"{name}={text!r} must not be negative")
    return value


@dataclass(frozen=True, slots=True)
class StacApi:
    """Where and how to search: the API's root URL, the collection, and the search's shape."""

    url: str
    collection: str
    page_size: int = 100  #: items per page (the search's ``limit``)
    block_tiles: int = 4  #: tiles per block side: one search per block
    max_items: int | None = None  #: per block; a block matching more is an error (a runaway search)
    retries: int = 5  #: retries per request (connection, read, 429/5xx)
    backoff: float = 1.0  #: seconds; the n-th retry (n ≥ 2) waits backoff × 2^(n-1), or Retry-After
    timeout: float = 60.0  #: seconds per request (connect and read)

    def __post_init__(self) -> None:
        if not re.match(r"https?://", self.url):
            raise UserInputError(f"--stac-api {self.url!r}: expected an http:// or https:// URL")
        if not self.collection:
            raise UserInputError("give --collection with --stac-api")
        if self.page_size < 1 or self.block_tiles < 1:
            raise UserInputError("--page-size and --block-tiles must be at least 1")
        if self.max_items is not None and self.max_items < 1:
            raise UserInputError("--max-items must be at least 1")

    @property
    def source(self) -> str:
        """How a plan records it: ``URL#collection=C``."""
        return f"{self.url.rstrip('/')}#collection={self.collection}"

    @classmethod
    def from_options(
        cls,
        *,
        catalog: str | None,
        stac_api: str | None,
        collection: str | None,
        page_size: int = 100,
        block_tiles: int = 4,
        max_items: int | None = None,
    ) -> StacApi | None:
        """The API to search from the CLI options (a ``--catalog`` preset name, or ``--stac-api``
        with ``--collection``), retry settings from the environment; None for an item file."""
        if stac_api is not None and catalog is not None:
            raise UserInputError("give --catalog or --stac-api, not both")
        if (
            stac_api is None
            and collection is not None
            and (catalog is None or catalog not in PRESETS)
        ):
            raise UserInputError("--collection goes with --stac-api or a --catalog preset")
        if stac_api is not None:
            url, coll = stac_api, collection or ""
        elif catalog in PRESETS:
            url, coll = PRESETS[catalog].url, collection or PRESETS[catalog].collection
        else:
            return None
        return cls(
            url,
            coll,
            page_size,
            block_tiles,
            max_items,
            retries=int(_env_number("GMRUN_STAC_RETRIES", 5)),
            backoff=_env_number("GMRUN_STAC_BACKOFF", 1.0),
            timeout=_env_number("GMRUN_STAC_TIMEOUT", 60.0) or 60.0,
        )

    def retry(self) -> Retry:
        """The urllib3 retry policy of every request (POST searches included)."""
        return Retry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            other=0,
            backoff_factor=self.backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=None,
            respect_retry_after_header=True,
            raise_on_status=False,
        )


class CountingStacApiIO(StacApiIO):
    """pystac-client's HTTP layer, counting the requests it makes (retries are not counted)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests: dict[str, int] = {}

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        path = re.sub(r"^https?://[^/]+", "", href).split("?")[0] or "/"
        key = f"{(method or 'GET').upper()} {path}"
        self.requests[key] = self.requests.get(key, 0) + 1
        return super().request(href, method, headers, parameters)


@dataclass(frozen=True, slots=True)
class Block:
    """One search: the planned tiles of one block and their bounding box in lon/lat."""

    tiles: tuple[TileId, ...]
    bbox: tuple[float, float, float, float]


def make_blocks(grid: TileGrid, tiles: Sequence[TileId], block_tiles: int) -> list[Block]:
    """Group tiles into ``block_tiles`` × ``block_tiles`` blocks of the grid (only blocks holding
    planned tiles), each with the EPSG:4326 bounding box of its planned tiles' footprints
    (densified to 1/8 tile so that curved edges are covered; 1e-6° margin)."""
    groups: dict[tuple[int, int], list[TileId]] = {}
    for t in sorted(set(tiles)):
        groups.setdefault((t.iy // block_tiles, t.ix // block_tiles), []).append(t)
    if not groups:
        return []
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    out = []
    for key in sorted(groups):
        members = groups[key]
        boxes = shapely.segmentize(grid.boxes(members), grid.tile_size / 8)
        xy = shapely.get_coordinates(boxes)
        lon, lat = tr.transform(xy[:, 0], xy[:, 1])
        m = 1e-6
        bbox = (
            max(-180.0, float(lon.min()) - m),
            max(-90.0, float(lat.min()) - m),
            min(180.0, float(lon.max()) + m),
            min(90.0, float(lat.max()) + m),
        )
        out.append(Block(tuple(members), bbox))
    return out


def cloud_cover_filter(conforms: set[str], max_cloud_cover: float) -> dict[str, Any]:
    """Search arguments filtering on ``eo:cloud_cover``: CQL2-JSON ``filter`` if the API conforms
    to Filter, else ``query`` if it conforms to Query, else none (the planner filters every item
    it receives on its own as well, so the result is the same; only more items are transferred)."""
    if max_cloud_cover >= 100:
        return {}
    if "FILTER" in conforms:
        return {
            "filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, max_cloud_cover]},
            "filter_lang": "cql2-json",
        }
    if "QUERY" in conforms:
        return {"query": {"eo:cloud_cover": {"lte": max_cloud_cover}}}
    return {}


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def absolute_hrefs(item: Item) -> Item:
    """The item (changed in place) as a plan keeps it: asset hrefs that need no base URL. A
    relative href (no scheme, not starting with ``/``) is resolved against the item's ``self``
    link, and the ``self`` link is dropped, so that a reader (pystac, odc-stac) does not resolve
    the hrefs against the API's host again later. An href starting with ``/`` stays a path: an
    API serving the items of a shared filesystem (as the tests' loopback server does) means a
    file there, not a path on the API's host. Public APIs' hrefs are absolute URLs: unchanged."""
    links = item.get("links") or []
    base = next(
        (ln.get("href") for ln in links if isinstance(ln, dict) and ln.get("rel") == "self"), None
    )
    for asset in (item.get("assets") or {}).values():
        href = asset.get("href") if isinstance(asset, dict) else None
        if (
            isinstance(base, str)
            and isinstance(href, str)
            and not _SCHEME.match(href)
            and not href.startswith("/")
        ):
            asset["href"] = urljoin(base, href)
    item["links"] = [ln for ln in links if not (isinstance(ln, dict) and ln.get("rel") == "self")]
    return item


def _one_line(err: Exception, limit: int = 240) -> str:
    """The error on one line, led by its HTTP status if it has one."""
    text = " ".join(str(err).split())
    status = getattr(err, "status_code", None)
    if status is not None:
        text = f"HTTP {status}" + (f": {text}" if text else "")
    text = text or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class SearchStats:
    """What a discovery did: blocks searched, pages, items kept, duplicates dropped, requests."""

    blocks: int = 0
    pages: int = 0
    items: int = 0
    duplicates: int = 0
    server_filter: str = "none"
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def searches(self) -> int:
        """Requests to the item-search endpoint (first pages and next pages)."""
        return sum(n for k, n in self.requests.items() if k.endswith("/search"))


class StacApiSearch:
    """Discovery of one plan: iterate :meth:`records` once; :attr:`stats` is filled as it goes."""

    def __init__(
        self,
        api: StacApi,
        grid: TileGrid,
        tiles: Sequence[TileId],
        period: Period,
        max_cloud_cover: float = 100.0,
        progress: Any | None = None,
    ) -> None:
        self.api = api
        self.blocks = make_blocks(grid, tiles, api.block_tiles)
        self.period = period
        self.max_cloud_cover = max_cloud_cover
        self.progress = progress  #: a rich Progress (or None): one task advanced per block
        self.stats = SearchStats()

    def _fail(self, what: str, err: Exception) -> UserInputError:
        status = getattr(err, "status_code", None)
        retried = status is None or status in RETRY_STATUSES  # a 400 or 404 is not retried
        after = f" after {self.api.retries} retries" if retried else ""
        return UserInputError(f"STAC API {self.api.url}: {what} failed{after}: {_one_line(err)}")

    def open(self) -> tuple[Client, CountingStacApiIO]:
        io = CountingStacApiIO(max_retries=self.api.retry(), timeout=self.api.timeout)
        self.stats.requests = io.requests
        try:
            client = Client.open(self.api.url, stac_io=io)
        except APIError as e:
            raise self._fail("opening the API", e) from None
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            raise UserInputError(f"{self.api.url} is not a STAC API ({_one_line(e)})") from None
        try:
            coll = client.get_collection(self.api.collection)
        except APIError as e:
            raise self._fail(f"reading collection {self.api.collection!r}", e) from None
        if coll is None or coll.id != self.api.collection:  # pystac-client: None on a 404
            raise UserInputError(
                f"STAC API {self.api.url} has no collection {self.api.collection!r}"
            )
        return client, io

    def records(self) -> Iterator[tuple[str, Item]]:
        """``(compact JSON line, item)`` of every distinct item the block searches return."""
        client, _io = self.open()
        conforms = {c.name for c in _conformance_classes() if client.conforms_to(c)}
        extra = cloud_cover_filter(conforms, self.max_cloud_cover)
        self.stats.server_filter = next(iter(k for k in ("filter", "query") if k in extra), "none")
        seen: set[str] = set()
        task = None
        if self.progress is not None:
            task = self.progress.add_task("STAC search", total=len(self.blocks))
        for block in self.blocks:
            n_block = 0
            limit = None if self.api.max_items is None else self.api.max_items + 1
            search = client.search(
                collections=[self.api.collection],
                bbox=block.bbox,
                datetime=self.period.stac_datetime(),
                limit=self.api.page_size,
                max_items=limit,
                **extra,
            )
            try:
                for page in search.pages_as_dicts():
                    self.stats.pages += 1
                    for it in page.get("features", []):
                        n_block += 1
                        if self.api.max_items is not None and n_block > self.api.max_items:
                            raise UserInputError(
                                f"STAC API {self.api.url}: the search of tiles {block.tiles[0]}.."
                                f"{block.tiles[-1]} matched more than --max-items "
                                f"{self.api.max_items} items"
                            )
                        iid = str(it.get("id", ""))
                        if iid in seen:
                            self.stats.duplicates += 1
                            continue
                        seen.add(iid)
                        self.stats.items += 1
                        absolute_hrefs(it)
                        yield json.dumps(it, separators=(",", ":")), it
                    if self.progress is not None and task is not None:
                        self.progress.update(
                            task,
                            description=f"STAC search: {self.stats.items} items, "
                            f"{self.stats.pages} pages",
                        )
            except APIError as e:
                raise self._fail(
                    f"the search of tiles {block.tiles[0]}..{block.tiles[-1]}", e
                ) from None
            self.stats.blocks += 1
            if task is not None:
                self.progress.advance(task)  # type: ignore[union-attr]

    def summary(self) -> str:
        s = self.stats
        return (
            f"STAC API {self.api.source}: {s.blocks} block searches, {s.searches} search requests "
            f"({s.pages} pages of ≤ {self.api.page_size}), {s.items} items, "
            f"{s.duplicates} duplicates dropped, server-side cloud filter: {s.server_filter}"
        )


def _conformance_classes() -> list[Any]:
    from pystac_client.conformance import ConformanceClasses

    return [ConformanceClasses.FILTER, ConformanceClasses.QUERY]
