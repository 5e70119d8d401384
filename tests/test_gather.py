"""The gather load path (runner.worker.gather) against odc-stac's, on the session's synthetic
catalog (2 × 2 tiles of 360 px across the UTM 35/36 boundary, same-day overlaps, clouds).

Equal means equal: every value of the (y, x, band, time) uint16 masked cube, with the SCL
opening and dilation, at a Dask chunk of 120 px (9 chunks a tile: chunk edges inside the tile)
and at the default chunk (one chunk a tile)."""

from __future__ import annotations

import logging
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio

from runner.common.config import RunConfig
from runner.common.errors import ProcessingError
from runner.common.logs import tile_logger
from runner.planner.plan import Plan
from runner.worker.gather.dispatch import LoaderChoice
from runner.worker.gather.grid_map import SourceGrid, _warp_indices, chunk_map
from runner.worker.gather.load import GatherStack
from runner.worker.load import lazy_stack, load_cube
from tests.conftest import Synth, make_plan, with_changes

THREADS = 2


@pytest.fixture(scope="module")
def plan(synth_catalog: Synth, tmp_path_factory: pytest.TempPathFactory) -> Plan:
    return make_plan(synth_catalog, tmp_path_factory.mktemp("gather"), synth_catalog.layout.config)


def odc_cube(items: list[dict], config: RunConfig, geobox: object) -> np.ndarray:
    stack, _ = lazy_stack(items, config, geobox)  # type: ignore[arg-type]
    with dask.config.set(scheduler="threads", num_workers=THREADS):
        return np.asarray(stack.compute())


def gather_cube(
    items: list[dict], config: RunConfig, geobox: object, rows: list[tuple[int, int]] | None = None
) -> np.ndarray:
    gs = GatherStack(items, config, geobox, THREADS)  # type: ignore[arg-type]
    out = np.empty(gs.shape, np.uint16)
    for r0, r1 in rows or [(0, gs.shape[0])]:
        gs[r0:r1].store(out[r0:r1])
    return out


def zones(plan: Plan, tp: object) -> int:
    """The distinct CRSs of a tile's items."""
    items = plan.items(tp.tile)  # type: ignore[attr-defined]
    return len(
        {it["properties"].get("proj:code") or it["properties"].get("proj:epsg") for it in items}
    )


@pytest.mark.parametrize("chunk", [120, 1024])
def test_gather_equals_odc_stac_on_every_tile(plan: Plan, chunk: int) -> None:
    """Every tile at the default chunk; at 120 px chunks (odc-stac's graph is 9× the tasks), the
    tile with the most UTM zones and same-day overlaps, which has every case the chunks cut."""
    config = with_changes(plan.config, input={"chunk": chunk})
    tiles = plan.tiles if chunk == 1024 else [max(plan.tiles, key=lambda tp: zones(plan, tp))]
    for tp in tiles:
        items, geobox = plan.items(tp.tile), plan.grid.geobox(tp.tile)
        gs = GatherStack(items, config, geobox, THREADS)
        _, times = lazy_stack(items, config, geobox)
        assert gs.times == times
        ref = odc_cube(items, config, geobox)
        got = gather_cube(items, config, geobox)
        assert got.shape == ref.shape
        # count exact, and every value: no difference to explain
        np.testing.assert_array_equal((got != 0).sum(axis=-1), (ref != 0).sum(axis=-1))
        np.testing.assert_array_equal(got, ref, err_msg=f"tile {tp.tile}, chunk {chunk}")


def test_tiles_have_two_zones_and_same_day_overlaps(plan: Plan) -> None:
    """The catalog exercises what the gather must fuse: two UTM grids and same-day granules."""
    crs = {
        it["properties"].get("proj:code") or it["properties"].get("proj:epsg")
        for tp in plan.tiles
        for it in plan.items(tp.tile)
    }
    assert len(crs) >= 2
    gs = GatherStack(
        plan.items(plan.tiles[0].tile), plan.config, plan.grid.geobox(plan.tiles[0].tile), 1
    )
    assert any(len(feed) > 1 for feed in gs.feeds)


def test_row_bands_and_reruns_are_identical(plan: Plan) -> None:
    """Bands of any height (unaligned with the 120 px chunks) give the whole tile's values;
    a rerun gives the same bytes."""
    config = with_changes(plan.config, input={"chunk": 120})
    tp = plan.tiles[0]
    items, geobox = plan.items(tp.tile), plan.grid.geobox(tp.tile)
    whole = gather_cube(items, config, geobox)
    bands = gather_cube(items, config, geobox, rows=[(0, 50), (50, 170), (170, 171), (171, 360)])
    assert whole.tobytes() == bands.tobytes()
    assert gather_cube(items, config, geobox).tobytes() == whole.tobytes()


def test_sub_window_index_raster_equals_the_whole_granules(plan: Plan) -> None:
    """GDAL's choice over the padded sub-window equals its choice over the whole granule."""
    from odc.geo.geobox import GeoBox, GeoboxTiles

    tp = plan.tiles[0]
    geobox = plan.grid.geobox(tp.tile)
    item = plan.items(tp.tile)[0]
    checked = 0
    for band in ("B04", "SCL"):
        with rasterio.open(item["assets"][band]["href"]) as rdr:
            grid = SourceGrid.of(rdr)
        for iy, ix in [(0, 0), (1, 2), (2, 2)]:
            chunk = GeoboxTiles(geobox, (120, 120))[iy, ix]
            assert isinstance(chunk, GeoBox)
            m = chunk_map(grid, chunk, pad=2)
            if m is None:
                continue
            h, w = grid.shape
            full = _warp_indices(grid, chunk, m.roi, slice(0, h), slice(0, w))
            np.testing.assert_array_equal(m.index, full)
            checked += 1
    assert checked >= 2


def test_auto_falls_back_to_odc_stac_with_the_reason(
    plan: Plan, caplog: pytest.LogCaptureFixture
) -> None:
    tp = plan.tiles[0]
    items, geobox = plan.items(tp.tile), plan.grid.geobox(tp.tile)
    config = with_changes(plan.config, input={"resampling": "bilinear", "loader": "auto"})
    choice = LoaderChoice(config, tile_logger(tp.tile))
    with caplog.at_level(logging.INFO, logger="gmrun"):
        stack, _ = choice.stack(items, config, geobox, THREADS)
    assert choice.used == "odc-stac" and "bilinear" in (choice.reason or "")
    assert hasattr(stack, "__dask_graph__")
    assert any("instead of the gather" in r.getMessage() for r in caplog.records)
    forced = with_changes(config, input={"loader": "gather"})
    with pytest.raises(ProcessingError, match="bilinear"):
        LoaderChoice(forced, tile_logger(tp.tile)).stack(items, forced, geobox, THREADS)


def test_a_raster_in_strips_falls_back_while_reading(plan: Plan, tmp_path: Path) -> None:
    """An input found unsupported mid-load (not tiled) restarts the tile on odc-stac: the cube
    is odc-stac's."""
    tp = plan.tiles[0]
    items = [dict(it) for it in plan.items(tp.tile)[:6]]
    geobox = plan.grid.geobox(tp.tile)
    src = items[3]["assets"]["B08"]["href"]
    with rasterio.open(src) as rdr:
        profile = {**rdr.profile, "tiled": False, "driver": "GTiff"}
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        data = rdr.read()
    strips = tmp_path / "strips.tif"
    with rasterio.open(strips, "w", **profile) as dst:
        dst.write(data)
    items[3] = {**items[3], "assets": {**items[3]["assets"]}}
    items[3]["assets"]["B08"] = {**items[3]["assets"]["B08"], "href": str(strips)}
    auto = with_changes(plan.config, input={"loader": "auto"})
    cube = load_cube(items, auto, geobox, tile_logger(tp.tile))
    ref = load_cube(
        items, with_changes(plan.config, input={"loader": "odc-stac"}), geobox, tile_logger("r")
    )
    np.testing.assert_array_equal(cube.data, ref.data)


@pytest.mark.parametrize("min_run", [1, 3, 8])
def test_runs_of_dates_give_the_same_cube(
    plan: Plan, min_run: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A band written a run of dates at a time (the windows' budget spent at once: runs of
    ``min_run`` dates, the last one shorter) gives the cube of one run of every date."""
    import runner.worker.gather.load as gather_load

    tp = max(plan.tiles, key=lambda tp: zones(plan, tp))  # two grids: two groups a run
    items, geobox = plan.items(tp.tile), plan.grid.geobox(tp.tile)
    whole = gather_cube(items, plan.config, geobox)
    monkeypatch.setattr(gather_load, "LOAD_WINDOWS_BYTES", 1)
    monkeypatch.setattr(gather_load, "MIN_RUN_DATES", min_run)
    runs = gather_cube(items, plan.config, geobox, rows=[(0, 170), (170, 360)])
    assert runs.tobytes() == whole.tobytes()
