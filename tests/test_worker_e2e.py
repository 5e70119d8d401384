"""End-to-end worker tests on real files: synthetic COGs → odc-stac → cube → algos → COGs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from algos import nangeomedian_pcm
from runner.common.logs import tile_logger
from runner.demo.synth import BARE, SCL_SNOW
from runner.planner.grid import TileId
from runner.worker.load import load_cube
from runner.worker.outputs import TileOutputs, output_bands
from tests.conftest import N_DATES, ExactRun, gmrun, make_plan, start_run_tile, with_changes
from tests.truth import truth

pytestmark = pytest.mark.slow
STRADDLE = TileId(0, 0)  # the tile that the 30° E UTM zone boundary crosses
STEP = 2  # the truth is computed at every 2nd pixel (it is slow: 5 points × 40 dates)


def read(run: ExactRun, tile: TileId, band: str, step: int = 1) -> np.ndarray:
    url = TileOutputs.of(run.plan.config, tile, run.plan.period, str(run.out)).band_url(band)
    with rasterio.open(url) as src:
        return src.read(1)[::step, ::step]


@pytest.fixture(scope="module")
def straddle_truth(exact_run: ExactRun):
    return truth(exact_run.synth.result.model, exact_run.plan.grid.geobox(STRADDLE), STEP)


def test_all_tiles_done_with_stac_item_last(exact_run: ExactRun) -> None:
    for tp in exact_run.plan.tiles:
        out = TileOutputs.of(
            exact_run.plan.config, tp.tile, exact_run.plan.period, str(exact_run.out)
        )
        assert out.is_done()
        item = json.loads(Path(out.item_url).read_text())
        assert set(item["assets"]) == {*output_bands(exact_run.plan.config), "thumbnail"}
        item_mtime = Path(out.item_url).stat().st_mtime_ns
        for band in output_bands(exact_run.plan.config):
            p = Path(out.band_url(band))
            assert p.stat().st_mtime_ns <= item_mtime, "the STAC item must be written last"
            assert item["assets"][band]["file:size"] == p.stat().st_size
        metrics = item["properties"]["gmrun:metrics"]
        assert metrics["observations"] == N_DATES
        assert metrics["peak_rss_bytes"] > metrics["cube_bytes"]


def test_straddling_tile_mixes_two_utm_zones(exact_run: ExactRun) -> None:
    items = exact_run.plan.items(STRADDLE)
    zones = {it["properties"]["proj:epsg"] for it in items}
    assert zones == {32735, 32736}
    # two granules a date, fused into one observation per solar day (not double counted)
    assert len(items) == 2 * N_DATES
    assert exact_run.plan.tile(STRADDLE).n_obs == N_DATES


def test_count_equals_independent_truth(exact_run: ExactRun, straddle_truth) -> None:
    count = read(exact_run, STRADDLE, "count", STEP)
    t = straddle_truth
    # the count lies between the surely-clear and the possibly-clear observations...
    lo = (t.valid & t.sure).sum(axis=0)
    hi = (t.valid | ~t.sure).sum(axis=0)
    assert ((count >= lo) & (count <= hi)).all()
    # and where no date is ambiguous, it is exact
    sure_everywhere = t.sure.all(axis=0)
    assert sure_everywhere.sum() > 100
    np.testing.assert_array_equal(count[sure_everywhere], t.valid.sum(axis=0)[sure_everywhere])


def test_masked_observations_never_reach_the_cube(exact_run: ExactRun, straddle_truth) -> None:
    plan = exact_run.plan
    cube = load_cube(
        plan.items(STRADDLE), plan.config, plan.grid.geobox(STRADDLE), tile_logger(STRADDLE)
    )
    t = straddle_truth
    data = np.moveaxis(cube.data[::STEP, ::STEP], 3, 0)  # (t, y, x, b)
    observed = (data != 0).all(axis=-1)
    sure = t.sure
    # cloudy, shadowed, cirrus, defective, outside the swath: dropped (all bands nodata)
    assert not observed[sure & ~t.valid].any()
    # clear (including snow): kept, with the surface's exact digital numbers
    np.testing.assert_array_equal(observed[sure & t.valid], True)
    exact = t.exact & t.valid
    assert exact.sum() > 10_000
    np.testing.assert_array_equal(data[exact], t.dn[exact])
    snow = sure & (t.scl == SCL_SNOW)
    assert snow.sum() > 100, "the synthetic year should have snow here"
    assert observed[snow].all(), "snow (SCL 11) is a valid observation"
    shadow_or_cloud = sure & np.isin(t.scl, (3, 8, 9, 10))
    assert shadow_or_cloud.sum() > 1000
    assert not observed[shadow_or_cloud].any()


def test_identical_clear_observations_give_that_value(exact_run: ExactRun, straddle_truth) -> None:
    t = straddle_truth
    # bare rock all around the pixel, and no date whose validity is in doubt: every clear
    # observation that reaches the pixel is the same rock with the same digital numbers
    bare = (t.landcover == BARE) & t.same_landcover & t.sure.all(axis=0) & (t.valid.sum(axis=0) > 0)
    assert bare.sum() > 10
    first_clear = np.argmax(t.valid, axis=0)
    dn = np.take_along_axis(t.dn, first_clear[None, ..., None], axis=0)[0]
    for b, band in enumerate(exact_run.plan.config.bands):
        gm = read(exact_run, STRADDLE, band, STEP)
        np.testing.assert_array_equal(gm[bare], dn[..., b][bare])


def test_straddling_tile_is_seamless(exact_run: ExactRun, straddle_truth) -> None:
    """The geomedian matches the geomedian of the true clear observations on both sides of the
    zone boundary, and no column near the boundary is worse than the tile as a whole."""
    t = straddle_truth
    refl = np.where(t.valid[..., None], t.dn * 1e-4 - 0.1, np.nan).astype(
        np.float32
    )  # (t, y, x, b)
    expected = nangeomedian_pcm(np.ascontiguousarray(np.moveaxis(refl, 0, -1)), eps=1e-6)
    ours = np.stack(
        [read(exact_run, STRADDLE, b, STEP) for b in exact_run.plan.config.bands], axis=-1
    )
    ours = ours * 1e-4 - 0.1
    err = np.linalg.norm(ours - expected, axis=-1)
    ok = np.isfinite(err) & t.sure.all(axis=0)
    # nearest-neighbour resampling reaches up to 15 m away: ~2e-3 of texture in reflectance
    assert np.median(err[ok]) < 5e-3
    boundary_col = int(np.argmin(np.abs(t.lon[t.lon.shape[0] // 2] - 30.0)))
    assert 10 < boundary_col < t.lon.shape[1] - 10, "the boundary should cross this tile"
    near = ok.copy()
    near[:, : boundary_col - 8] = False
    near[:, boundary_col + 8 :] = False
    assert np.percentile(err[near], 99) <= max(2 * np.percentile(err[ok], 99), 2e-3)


def test_outputs_are_valid_cogs_with_grid_georeferencing(exact_run: ExactRun) -> None:
    gb = exact_run.plan.grid.geobox(STRADDLE)
    for band in output_bands(exact_run.plan.config):
        url = TileOutputs.of(
            exact_run.plan.config, STRADDLE, exact_run.plan.period, str(exact_run.out)
        ).band_url(band)
        with rasterio.open(url) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", band
            assert src.crs.to_epsg() == 6933
            assert src.transform.almost_equals(gb.transform)
            assert src.shape == gb.shape.yx
            if max(src.shape) > 512:  # GDAL adds overviews beyond one 512 px block
                assert src.overviews(1)
            if band in exact_run.plan.config.bands:
                assert src.nodata == 0 and src.dtypes[0] == "uint16"
            elif band == "count":
                assert src.dtypes[0] == "uint16"
            else:
                assert np.isnan(src.nodata) and src.dtypes[0] == "float32"


def test_rerun_gives_byte_identical_cogs(exact_run: ExactRun) -> None:
    out = TileOutputs.of(
        exact_run.plan.config, TileId(1, 1), exact_run.plan.period, str(exact_run.out)
    )
    before = {b: Path(out.band_url(b)).read_bytes() for b in output_bands(exact_run.plan.config)}
    skipped = gmrun("run-tile", "--plan", exact_run.plan.url, "--tile", "x001y001")
    assert skipped.returncode == 0 and "already done" in skipped.stderr
    again = gmrun("run-tile", "--plan", exact_run.plan.url, "--tile", "x001y001", "--overwrite")
    assert again.returncode == 0, again.stderr
    for b, data in before.items():
        assert Path(out.band_url(b)).read_bytes() == data, f"{b} changed on rerun"


def _vm_hwm(pid: int) -> int:
    """The child's VmHWM once it runs the worker (before exec it is a copy of pytest)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        if b"run-tile" not in f.read():
            return 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def test_peak_rss_is_bounded_by_the_cube(synth_catalog, tmp_path: Path) -> None:
    """One 720-px tile over the demo area (cube ≈ 415 MB): the worker's peak RSS, read from
    /proc while it runs and reported in its metrics, stays under 1.5 × cube + 300 MB."""

    cfg = with_changes(
        synth_catalog.layout.config,
        grid={"tile_size": 7200.0},
        output={"location": str(tmp_path / "out")},
    )
    plan = make_plan(synth_catalog, tmp_path / "plan", cfg, tiles=[TileId(0, 0)])
    proc = start_run_tile(plan, TileId(0, 0))
    polled = 0
    while proc.poll() is None:
        try:
            polled = max(polled, _vm_hwm(proc.pid))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.05)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, err
    out = TileOutputs.of(plan.config, TileId(0, 0), plan.period)
    metrics = json.loads(Path(out.metrics_url).read_text())
    cube = metrics["cube_bytes"]
    assert cube == 720 * 720 * 10 * N_DATES * 2
    budget = 1.5 * cube + 300e6
    print(
        f"cube {cube / 1e6:.0f} MB, peak RSS {metrics['peak_rss_bytes'] / 1e6:.0f} MB "
        f"(polled {polled / 1e6:.0f} MB), budget {budget / 1e6:.0f} MB"
    )
    assert polled > cube
    # the metrics are taken before the STAC item is written: a little below the final peak
    assert 0.95 * polled <= metrics["peak_rss_bytes"] <= polled
    assert polled <= budget
    assert metrics["peak_rss_bytes"] <= budget
