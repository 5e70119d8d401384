"""STAC-API discovery and stac-geoparquet item files, against a real STAC API server on loopback
(``rustac serve``, see tests/stac_server.py) serving the synthetic catalog."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.common.config import RunConfig
from runner.common.errors import UserInputError
from runner.demo.layout import DEMO_PERIOD
from runner.planner.assign import stream_plan
from runner.planner.catalog import read_items
from runner.planner.grid import TileGrid, TileId
from runner.planner.period import Period
from runner.planner.plan import Plan
from runner.planner.stac_api import (
    PRESETS,
    StacApi,
    StacApiSearch,
    absolute_hrefs,
    cloud_cover_filter,
    make_blocks,
)
from tests.conftest import ExactRun, Synth, assert_clean_error, gmrun, with_changes
from tests.stac_server import StacServer, flaky_front, free_port, rustac_binary, serve

PERIOD = Period(*DEMO_PERIOD)


@pytest.fixture(scope="module")
def stac_server(
    synth_catalog: Synth, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StacServer]:
    log = tmp_path_factory.mktemp("stac-server") / "server.log"
    with serve(synth_catalog.result.catalog, log=log) as server:
        yield server


def _tiles(synth: Synth) -> list[TileId]:
    return sorted(synth.layout.tiles)


def _plan_ids(p: Plan) -> dict[str, list[str]]:
    """Per tile: the ids of its item file, in order."""
    return {str(tp.tile): [it["id"] for it in p.items(tp.tile)] for tp in p.tiles}


def _counts(p: Plan) -> list[tuple[str, int, int, int]]:
    return [(str(tp.tile), tp.n_items, tp.n_obs, tp.resources.memory_bytes) for tp in p.tiles]


def _api(server: StacServer, **kw: object) -> StacApi:
    return StacApi(server.url, "sentinel-2-l2a", **{"retries": 2, "backoff": 0.01, **kw})  # type: ignore[arg-type]


def _api_plan(
    config: RunConfig, synth: Synth, api: StacApi, folder: Path
) -> tuple[Plan, StacApiSearch]:
    search = StacApiSearch(
        api, TileGrid.from_config(config.grid), _tiles(synth), PERIOD, config.input.max_cloud_cover
    )
    stream_plan(config, _tiles(synth), api.source, PERIOD, str(folder), records=search.records())
    return Plan.load(str(folder)), search


def _file_plan(config: RunConfig, synth: Synth, folder: Path, catalog: str | None = None) -> Plan:
    stream_plan(config, _tiles(synth), catalog or str(synth.result.catalog), PERIOD, str(folder))
    return Plan.load(str(folder))


# --- the API path equals the item-file path ------------------------------------------------------------
def test_api_plan_equals_item_file_plan_with_paging_and_blocks(
    synth_catalog: Synth, stac_server: StacServer, tmp_path: Path
) -> None:
    config = synth_catalog.layout.config
    want = _file_plan(config, synth_catalog, tmp_path / "file")
    before = stac_server.requests("/search")
    # one block per tile (4 searches), 7 items a page: every search takes several pages
    got, search = _api_plan(
        config, synth_catalog, _api(stac_server, page_size=7, block_tiles=1), tmp_path / "api"
    )
    assert _counts(got) == _counts(want)
    assert _plan_ids(got) == _plan_ids(want)
    assert sum(tp.n_items for tp in got.tiles) > 0 and all(tp.n_obs for tp in got.tiles)
    assert got.source == f"{stac_server.url}#collection=sentinel-2-l2a"
    s = search.stats
    n_items = len(list(read_items(str(synth_catalog.result.catalog))))
    assert s.blocks == 4 and len(search.blocks) == 4
    assert s.items == n_items  # every item of the catalog touches the region, once after dedup
    assert s.duplicates > 0  # footprints spanning several blocks were found by each, kept once
    assert s.pages >= s.blocks * 2 and s.pages >= (s.items + s.duplicates) / 7
    # the server saw exactly the search requests the client counted: first pages and next pages
    assert s.searches == s.pages
    assert stac_server.requests("/search") - before == s.searches
    # the server adds a self link under its own host; the plan's hrefs still name the same files
    import pystac

    for tp in got.tiles:
        for g, w in zip(got.items(tp.tile), want.items(tp.tile), strict=True):
            assert {k: a["href"] for k, a in g["assets"].items()} == {
                k: a["href"] for k, a in w["assets"].items()
            }
            assert not any(ln.get("rel") == "self" for ln in g["links"])
            resolved = pystac.Item.from_dict(g).assets["B04"].get_absolute_href()
            assert resolved == w["assets"]["B04"]["href"]


def test_one_block_needs_fewer_searches(
    synth_catalog: Synth, stac_server: StacServer, tmp_path: Path
) -> None:
    config = synth_catalog.layout.config
    got, search = _api_plan(
        config, synth_catalog, _api(stac_server, page_size=1000), tmp_path / "api"
    )
    assert search.stats.blocks == 1 and search.stats.searches == 1 and search.stats.duplicates == 0
    assert _plan_ids(got) == _plan_ids(_file_plan(config, synth_catalog, tmp_path / "file"))


def test_cloud_cover_filter(synth_catalog: Synth, stac_server: StacServer, tmp_path: Path) -> None:
    config = with_changes(synth_catalog.layout.config, input={"max_cloud_cover": 50})
    got, search = _api_plan(
        config, synth_catalog, _api(stac_server, page_size=20), tmp_path / "api"
    )
    want = _file_plan(config, synth_catalog, tmp_path / "file")
    everything = _file_plan(synth_catalog.layout.config, synth_catalog, tmp_path / "all")
    assert _plan_ids(got) == _plan_ids(want)
    assert _counts(got) == _counts(want)
    assert 0 < sum(tp.n_items for tp in got.tiles) < sum(tp.n_items for tp in everything.tiles)
    for tile_items in (got.items(tp.tile) for tp in got.tiles):
        assert all(it["properties"]["eo:cloud_cover"] <= 50 for it in tile_items)
    # rustac's memory backend advertises neither Filter nor Query: the planner filters alone
    assert search.stats.server_filter == "none"


def test_cloud_cover_filter_follows_conformance() -> None:
    cql2 = {
        "filter": {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 30.0]},
        "filter_lang": "cql2-json",
    }
    assert cloud_cover_filter({"FILTER", "QUERY"}, 30.0) == cql2
    assert cloud_cover_filter({"QUERY"}, 30.0) == {"query": {"eo:cloud_cover": {"lte": 30.0}}}
    assert cloud_cover_filter(set(), 30.0) == {}
    assert cloud_cover_filter({"FILTER"}, 100.0) == {}


def test_relative_hrefs_are_resolved_against_the_self_link() -> None:
    item = {
        "links": [
            {"rel": "self", "href": "https://api.example/collections/c/items/i"},
            {"rel": "collection", "href": "https://api.example/collections/c"},
        ],
        "assets": {
            "a": {"href": "./B02.tif"},
            "b": {"href": "../../data/B03.tif"},
            "c": {"href": "https://cdn.example/B04.tif"},
            "d": {"href": "/shared/B05.tif"},
            "e": {"href": "s3://bucket/B06.tif"},
        },
    }
    got = absolute_hrefs(item)
    assert {k: a["href"] for k, a in got["assets"].items()} == {
        "a": "https://api.example/collections/c/items/B02.tif",
        "b": "https://api.example/collections/data/B03.tif",
        "c": "https://cdn.example/B04.tif",
        "d": "/shared/B05.tif",
        "e": "s3://bucket/B06.tif",
    }
    assert got["links"] == [{"rel": "collection", "href": "https://api.example/collections/c"}]


def test_blocks_cover_their_tiles() -> None:
    grid = TileGrid.from_config(RunConfig().grid)
    tiles = [TileId(x, y) for x in range(200, 211) for y in range(70, 75)]  # 11 × 5 tiles
    blocks = make_blocks(grid, tiles, 4)
    assert len(blocks) == 3 * 2
    assert sorted(t for b in blocks for t in b.tiles) == sorted(tiles)
    import shapely
    from odc.geo import CRS
    from odc.geo.geom import box

    for b in blocks:
        bb = shapely.box(*b.bbox)
        for t in b.tiles:
            ll = box(*grid.bounds(t), CRS(grid.crs)).to_crs("EPSG:4326").geom
            assert bb.contains(ll), (t, b.bbox)
    assert make_blocks(grid, [], 4) == []


# --- the CLI -----------------------------------------------------------------------------------------
def _tile_args(synth: Synth) -> list[str]:
    return [
        "--tiles",
        ",".join(str(t) for t in _tiles(synth)),
        "--period",
        "2023-01-01--2023-12-31",
    ]


@pytest.fixture
def config_file(synth_catalog: Synth, tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "gmrun.yaml"
    path.write_text(yaml.safe_dump(synth_catalog.layout.config.model_dump(mode="json")))
    return path


def test_gmrun_plan_with_stac_api(
    synth_catalog: Synth, stac_server: StacServer, tmp_path: Path, config_file: Path
) -> None:
    args = [*_tile_args(synth_catalog), "--config", str(config_file)]
    proc = gmrun(
        "plan",
        "--stac-api",
        stac_server.url,
        "--collection",
        "sentinel-2-l2a",
        "--page-size",
        "10",
        "--block-tiles",
        "1",
        *args,
        "-o",
        str(tmp_path / "api"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 block searches" in " ".join(proc.stdout.split())
    ref = gmrun(
        "plan", "--catalog", str(synth_catalog.result.catalog), *args, "-o", str(tmp_path / "file")
    )
    assert ref.returncode == 0, ref.stderr
    got, want = Plan.load(str(tmp_path / "api")), Plan.load(str(tmp_path / "file"))
    assert _plan_ids(got) == _plan_ids(want) and _counts(got) == _counts(want)
    doc = json.loads((tmp_path / "api" / "plan.json").read_text())
    assert doc["source"] == f"{stac_server.url}#collection=sentinel-2-l2a"
    assert (tmp_path / "api" / "tiles.geojson").exists()


def test_unreachable_stac_api_fails_after_retries(synth_catalog: Synth, config_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    proc = gmrun(
        "plan",
        "--stac-api",
        url,
        "--collection",
        "sentinel-2-l2a",
        *_tile_args(synth_catalog),
        "--config",
        str(config_file),
        "--dry-run",
        env={"GMRUN_STAC_RETRIES": "3", "GMRUN_STAC_BACKOFF": "0.05"},
    )
    assert time.monotonic() - t0 < 20  # mostly the interpreter's start on a loaded machine
    assert_clean_error(proc, f"STAC API {url}", "failed after 3 retries", "Connection refused")


def test_connection_errors_are_retried_with_backoff() -> None:
    grid = TileGrid.from_config(RunConfig().grid)
    url = f"http://127.0.0.1:{free_port()}"
    # urllib3 2 waits 0, then 2 × 0.25, then 4 × 0.25 s: 1.5 s in all before giving up
    search = StacApiSearch(StacApi(url, "c", retries=3, backoff=0.25), grid, [TileId(0, 0)], PERIOD)
    t0 = time.monotonic()
    with pytest.raises(
        UserInputError, match=r"opening the API failed after 3 retries.*Connection refused"
    ):
        list(search.records())
    assert 1.4 <= time.monotonic() - t0 < 6
    search = StacApiSearch(StacApi(url, "c", retries=0), grid, [TileId(0, 0)], PERIOD)
    t0 = time.monotonic()
    with pytest.raises(UserInputError, match="failed after 0 retries"):
        list(search.records())
    assert time.monotonic() - t0 < 1


def test_rate_limit_is_retried_honouring_retry_after(
    synth_catalog: Synth, stac_server: StacServer, tmp_path: Path
) -> None:
    config = synth_catalog.layout.config
    with flaky_front(stac_server.url, failures=2, status=429, retry_after="1") as front:
        t0 = time.monotonic()
        api = StacApi(front.url, "sentinel-2-l2a", retries=3, backoff=0.01)
        got, _ = _api_plan(config, synth_catalog, api, tmp_path / "api")
        elapsed = time.monotonic() - t0
    assert front.failed == 2 and front.forwarded >= 1
    assert elapsed >= 1.9  # two Retry-After: 1 waits, not the 0.01 s backoff
    assert _plan_ids(got) == _plan_ids(_file_plan(config, synth_catalog, tmp_path / "file"))
    # more failures than retries: one clear error naming the status
    with flaky_front(stac_server.url, failures=10, status=503, retry_after=None) as front:
        api = StacApi(front.url, "sentinel-2-l2a", retries=2, backoff=0.01)
        with pytest.raises(UserInputError, match=r"failed after 2 retries.*503"):
            _api_plan(config, synth_catalog, api, tmp_path / "api2")
    assert front.failed == 3  # the first try and two retries
    # a client error is not retried
    with flaky_front(stac_server.url, failures=10, status=400, retry_after=None) as front:
        api = StacApi(front.url, "sentinel-2-l2a", retries=2, backoff=0.01)
        with pytest.raises(UserInputError, match=r"opening the API failed: HTTP 400"):
            _api_plan(config, synth_catalog, api, tmp_path / "api3")
    assert front.failed == 1


def test_unknown_collection_and_bad_options(stac_server: StacServer) -> None:
    grid = TileGrid.from_config(RunConfig().grid)
    search = StacApiSearch(
        StacApi(stac_server.url, "landsat-c2-l2", retries=0), grid, [TileId(0, 0)], PERIOD
    )
    with pytest.raises(UserInputError, match="has no collection 'landsat-c2-l2'"):
        list(search.records())
    with pytest.raises(UserInputError, match="not both"):
        StacApi.from_options(catalog="x.ndjson", stac_api=stac_server.url, collection="c")
    with pytest.raises(UserInputError, match="http:// or https://"):
        StacApi.from_options(catalog=None, stac_api="ftp://example.org", collection="c")
    with pytest.raises(UserInputError, match="give --collection"):
        StacApi.from_options(catalog=None, stac_api=stac_server.url, collection=None)
    assert StacApi.from_options(catalog="items.ndjson", stac_api=None, collection=None) is None


def test_presets() -> None:
    es = StacApi.from_options(catalog="earth-search", stac_api=None, collection=None)
    pc = StacApi.from_options(catalog="planetary-computer", stac_api=None, collection=None)
    assert es is not None and pc is not None
    assert (es.url, es.collection) == (
        "https://earth-search.aws.element84.com/v1",
        "sentinel-2-l2a",
    )
    assert (pc.url, pc.collection) == (
        "https://planetarycomputer.microsoft.com/api/stac/v1",
        "sentinel-2-l2a",
    )
    assert set(PRESETS) == {"earth-search", "planetary-computer"}


def test_max_items_guards_a_runaway_search(
    synth_catalog: Synth, stac_server: StacServer, tmp_path: Path
) -> None:
    with pytest.raises(UserInputError, match="matched more than --max-items 5 items"):
        _api_plan(
            synth_catalog.layout.config,
            synth_catalog,
            _api(stac_server, max_items=5, page_size=3),
            tmp_path / "api",
        )


# --- stac-geoparquet item files ----------------------------------------------------------------------
def test_geoparquet_catalog_equals_ndjson(synth_catalog: Synth, tmp_path: Path) -> None:
    parquet = tmp_path / "items.parquet"
    subprocess.run(
        [rustac_binary(), "translate", str(synth_catalog.result.catalog), str(parquet)], check=True
    )
    config = synth_catalog.layout.config
    got = _file_plan(config, synth_catalog, tmp_path / "parquet", str(parquet))
    want = _file_plan(config, synth_catalog, tmp_path / "ndjson")
    assert _plan_ids(got) == _plan_ids(want) and _counts(got) == _counts(want)
    assert got.source == str(parquet)
    first = got.items(got.tiles[0].tile)[0]
    assert set(first["assets"]) == set(want.items(want.tiles[0].tile)[0]["assets"])
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(UserInputError, match="not a stac-geoparquet file"):
        list(read_items(str(bad)))


@pytest.mark.slow
def test_geoparquet_catalog_on_s3(
    synth_catalog: Synth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.common import store
    from tests.servers import moto_s3

    parquet = tmp_path / "items.parquet"
    subprocess.run(
        [rustac_binary(), "translate", str(synth_catalog.result.catalog), str(parquet)], check=True
    )
    with moto_s3() as s3:
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        store.s3_client.cache_clear()
        try:
            store.s3_client().create_bucket(Bucket="gmrun-stac")
            url = "s3://gmrun-stac/catalog/items.parquet"
            store.write_bytes(url, parquet.read_bytes())
            got = _file_plan(synth_catalog.layout.config, synth_catalog, tmp_path / "s3", url)
            with pytest.raises(UserInputError, match="not found"):
                list(read_items("s3://gmrun-stac/catalog/missing.parquet"))
        finally:
            store.s3_client.cache_clear()
    want = _file_plan(synth_catalog.layout.config, synth_catalog, tmp_path / "ndjson")
    assert _plan_ids(got) == _plan_ids(want) and _counts(got) == _counts(want)
    assert got.source == url


@pytest.mark.slow
def test_a_tile_planned_from_the_api_runs_like_the_file_plan(
    exact_run: ExactRun, stac_server: StacServer, tmp_path: Path
) -> None:
    """End to end: the worker computes a tile from the API plan's items (asset hrefs, datetimes,
    footprints as the server returned them) to the same arrays as from the item-file plan."""
    import numpy as np
    import rasterio

    from runner.worker.outputs import TileOutputs, output_bands

    tile = TileId(0, 0)
    config = exact_run.plan.config
    api = _api(stac_server, page_size=25)
    search = StacApiSearch(api, TileGrid.from_config(config.grid), [tile], PERIOD)
    stream_plan(
        config, [tile], api.source, PERIOD, str(tmp_path / "plan"), records=search.records()
    )
    out = tmp_path / "out"
    proc = gmrun(
        "run-tile", "--plan", str(tmp_path / "plan"), "--tile", str(tile), "--output", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    mine = TileOutputs.of(config, tile, PERIOD, str(out))
    ref = TileOutputs.of(config, tile, exact_run.plan.period, str(exact_run.out))
    for band in output_bands(config):
        with rasterio.open(mine.band_url(band)) as a, rasterio.open(ref.band_url(band)) as b:
            np.testing.assert_array_equal(a.read(), b.read(), err_msg=band)
