"""Row bands (sub-tile processing): sizing, plan.json, and the real worker split in bands.

The end-to-end tests run ``gmrun run-tile`` in a subprocess on one 360 px tile of the session's
synthetic catalog, with a Dask chunk of 120 px (so 3 bands of 120 rows are chunk-aligned) and a
4-month period (fewer dates: faster). A band run must give the whole-tile run's COGs byte for
byte; a memory budget must make the worker choose bands by itself and keep its peak RSS under it.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio

from runner.common.config import RunConfig
from runner.common.errors import UserInputError
from runner.demo.layout import DEMO_PERIOD
from runner.fanout.local import WorkerOptions, worker_command
from runner.planner.catalog import read_items
from runner.planner.grid import TileId
from runner.planner.period import Period
from runner.planner.plan import PLAN_FILE, Plan, make_tile_plan
from runner.planner.sizing import (
    band_height,
    band_memory,
    band_rows,
    estimate_memory,
    row_bands_for,
)
from runner.worker.outputs import TileOutputs, output_bands
from tests.conftest import (
    N_DATES,
    Synth,
    assert_clean_error,
    gmrun,
    start_run_tile,
    tile_cogs,
    tile_items,
    with_changes,
)

TILE = TileId(1, 0)
PX = 360  #: the tile's edge (the session catalog's demo layout)
CHUNK = 120  #: Dask chunk edge of these tests: 3 bands of 120 rows are chunk-aligned
#: the worker's fixed memory (interpreter, numba, GDAL) assumed by the budget test
OVERHEAD_MIB = 400
PERIOD = Period(date(2023, 1, 1), date(2023, 4, 30))
_MIB = 2**20
_GIB = 2**30


# --- sizing -------------------------------------------------------------------------------------------
def test_band_rows_cover_the_tile_in_chunk_multiples() -> None:
    for ny, n, chunk in [
        (9600, 5, 1024),
        (9600, 3, 1024),
        (360, 3, 120),
        (360, 2, 120),
        (361, 3, 120),
        (360, 4, 360),
        (100, 7, 64),
        (5, 9, None),
    ]:
        rows = band_rows(ny, n, chunk)
        assert rows[0][0] == 0 and rows[-1][1] == ny
        assert all(a[1] == b[0] for a, b in itertools.pairwise(rows)), rows
        assert 1 <= len(rows) <= n
        h = band_height(ny, n, chunk)
        assert all(r1 - r0 == h for r0, r1 in rows[:-1]) and rows[-1][1] - rows[-1][0] <= h
        if chunk and h > chunk:
            assert h % chunk == 0, (ny, n, chunk, h)  # every chunk is read by one band only
    assert band_rows(360, 3, 120) == [(0, 120), (120, 240), (240, 360)]
    assert band_rows(360, 2, 120) == [(0, 240), (240, 360)]  # 180 rounded up to 2 chunks
    assert band_rows(360, 4, 360) == [
        (0, 90),
        (90, 180),
        (180, 270),
        (270, 360),
    ]  # thinner than a chunk
    # as many bands as chunk rows: one chunk a band, not 960-row bands that cut every chunk
    assert band_height(9600, 10, 1024) == 1024 and len(band_rows(9600, 10, 1024)) == 10
    assert band_height(9600, 11, 1024) == 873  # thinner than a chunk: unaligned


def test_row_bands_for_is_the_least_that_fits() -> None:
    ny = nx = 9600
    nb, nobs, over, chunk = 10, 150, 1024, 1024
    whole = estimate_memory(ny, nx, nb, nobs, over)
    assert row_bands_for(whole, ny, nx, nb, nobs, over, chunk) == 1
    budget = 64 * _GIB  # a full 96 km tile of 150 observations (≈ 282 GB cube) in a 64 GiB pod
    n = row_bands_for(budget, ny, nx, nb, nobs, over, chunk)
    h = band_height(ny, n, chunk)
    assert n == len(band_rows(ny, n, chunk)) > 1
    assert band_memory(h, ny, nx, nb, nobs, over) <= budget
    assert band_memory(band_height(ny, n - 1, chunk), ny, nx, nb, nobs, over) > budget
    assert (n, h) == (5, 2048)
    # more memory never needs more bands
    counts = [
        row_bands_for(g * _GIB, ny, nx, nb, nobs, over, chunk)
        for g in (8, 16, 32, 64, 128, 256, 512)
    ]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 1 and counts[0] > counts[3]
    # 75 observations in a 32 GiB pod: chunk-aligned bands of one chunk (1024 rows), the
    # thinnest aligned bands, rather than the 960-row bands that fit too
    n = row_bands_for(32 * _GIB, ny, nx, nb, 75, over, chunk)
    assert (n, band_height(ny, n, chunk)) == (10, 1024)


def test_row_bands_for_refuses_a_budget_below_results_and_overhead() -> None:
    floor = band_memory(1, 9600, 9600, 10, 150, 1024)
    assert row_bands_for(floor, 9600, 9600, 10, 150, 1024) == 9600
    with pytest.raises(
        UserInputError, match=r"too small for a 9600×9600 px tile .* alone need \d+ MiB"
    ):
        row_bands_for(floor - 1, 9600, 9600, 10, 150, 1024)


def test_plan_json_row_bands_roundtrip(tmp_path: Path) -> None:
    cfg = RunConfig()
    big = make_tile_plan(cfg, TileId(1, 2), n_items=150, n_obs=150, max_memory=64 * _GIB)
    small = make_tile_plan(cfg, TileId(2, 2), n_items=2, n_obs=2, max_memory=64 * _GIB)
    free = make_tile_plan(cfg, TileId(3, 2), n_items=150, n_obs=150)
    assert big.resources.memory_bytes == 64 * _GIB and big.row_bands == 5
    assert small.row_bands == 1 and small.resources.memory_bytes < 64 * _GIB
    assert free.row_bands == 1 and free.resources.memory_bytes > 64 * _GIB
    plan = Plan(cfg, Period.year(2023), (big, small, free)).save(str(tmp_path / "p"), {})
    doc = json.loads((tmp_path / "p" / PLAN_FILE).read_text())
    assert doc["schema"] == "gmrun/plan/1"
    assert [t.get("row_bands") for t in doc["tiles"]] == [5, None, None]  # written only when > 1
    assert Plan.load(str(tmp_path / "p")).tiles == plan.tiles
    # a plan written before row bands (no key at all) still loads, with 1 band a tile
    for t in doc["tiles"]:
        t.pop("row_bands", None)
    (tmp_path / "p" / PLAN_FILE).write_text(json.dumps(doc))
    assert [t.row_bands for t in Plan.load(str(tmp_path / "p")).tiles] == [1, 1, 1]
    with pytest.raises(UserInputError, match="too small"):
        make_tile_plan(cfg, TileId(1, 2), n_items=150, n_obs=150, max_memory=2 * _GIB)


def test_run_passes_memory_options_to_its_workers() -> None:
    cmd = worker_command("plan", TILE, WorkerOptions(max_memory="1500Mi", row_bands=3))
    assert cmd[cmd.index("--max-memory") + 1] == "1500Mi"
    assert cmd[cmd.index("--row-bands") + 1] == "3"
    assert "--max-memory" not in worker_command("plan", TILE, WorkerOptions())


# --- the worker, end to end -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Whole:
    plan: Plan
    out: TileOutputs
    metrics: dict


def _plan(synth: Synth, folder: Path, period: Period = PERIOD) -> Plan:
    from runner.planner.assign import build_plan

    cfg = with_changes(
        synth.layout.config,
        input={"chunk": CHUNK},
        output={"location": str(folder / "out")},
        memory={"overhead_mib": OVERHEAD_MIB},
    )
    p, items = build_plan(cfg, [TILE], read_items(str(synth.result.catalog)), period)
    return p.save(str(folder / "plan"), items)


def _outputs(plan: Plan, location: Path) -> TileOutputs:
    return TileOutputs.of(plan.config, TILE, plan.period, str(location))


def _worker(
    plan: Plan, location: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return start_run_tile(plan, TILE, "--output", str(location), *args, env=env)


@pytest.fixture(scope="module")
def whole(synth_catalog: Synth, tmp_path_factory: pytest.TempPathFactory) -> Whole:
    """The tile computed at once (``--row-bands 1``): the reference of the band runs."""
    root = tmp_path_factory.mktemp("subtile")
    plan = _plan(synth_catalog, root)
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE), "--row-bands", "1")
    assert proc.returncode == 0, proc.stderr
    out = _outputs(plan, root / "out")
    assert out.is_done()
    return Whole(plan, out, json.loads(Path(out.metrics_url).read_text()))


@pytest.mark.slow
def test_three_row_bands_give_byte_identicaltile_cogs(whole: Whole, tmp_path: Path) -> None:
    hb = tmp_path / "heartbeat"
    proc = _worker(
        whole.plan, tmp_path / "out", "--row-bands", "3", env={"GMRUN_HEARTBEAT": str(hb)}
    )
    assert proc.stderr is not None
    beats: list[int] = []  # the heartbeat's mtime as each band is reported done
    lines = []
    for line in proc.stderr:
        lines.append(line)
        rec = json.loads(line) if line.startswith("{") else {}
        if "band" in rec and str(rec.get("msg", "")).endswith("of the tile"):
            beats.append(hb.stat().st_mtime_ns)
    assert proc.wait() == 0, "".join(lines)
    out = _outputs(whole.plan, tmp_path / "out")
    assert out.is_done()
    # one progress line a band, and the heartbeat touched during each band (a Job's liveness)
    assert len(beats) == 3 and beats[0] < beats[1] < beats[2], beats

    m = json.loads(Path(out.metrics_url).read_text())
    ny, nx, nb, nt = m["cube_shape"]
    assert (ny, nx, nb) == (PX, PX, 10) and nt == whole.metrics["observations"] > 5
    assert (m["row_bands"], m["band_rows"]) == (3, 120)
    assert m["cube_bytes"] == 120 * PX * nb * nt * 2
    assert (
        m["tile_cube_bytes"]
        == whole.metrics["cube_bytes"]
        == whole.metrics["tile_cube_bytes"]
        == 3 * m["cube_bytes"]
    )
    assert whole.metrics["row_bands"] == 1
    for key in ("items", "load", "reduce", "write"):
        assert m["seconds"][key] >= 0, key
    assert m["bytes_read"] > 0 and m["iterations_max"] >= 1 and m["load_restarts"] == 0
    item = json.loads(Path(out.item_url).read_text())
    assert item["properties"]["gmrun:metrics"] == m

    ours, ref = tile_cogs(out), tile_cogs(whole.out)
    assert sorted(ours) == sorted(ref) and len(ours) == len(output_bands(whole.plan.config))
    for name, data in ref.items():
        assert ours[name] == data, f"{name} differs from the whole-tile run"
    for band in ("B04", "emad", "count"):
        with rasterio.open(out.band_url(band)) as a, rasterio.open(whole.out.band_url(band)) as b:
            np.testing.assert_array_equal(a.read(1), b.read(1))


@pytest.mark.slow
def test_max_memory_picks_bands_and_peak_rss_stays_under_it(
    synth_catalog: Synth, tmp_path: Path
) -> None:
    """The whole year (40 dates, a 104 MB cube): the whole tile is estimated at ~531 MiB and
    measured at ~470 MiB of peak RSS; with a 460 MiB budget (120-row bands: ~451 MiB) the worker
    cuts it in 3 bands."""
    plan = _plan(synth_catalog, tmp_path, Period(*DEMO_PERIOD))
    budget = 460 * _MIB
    assert estimate_memory(PX, PX, 10, N_DATES, OVERHEAD_MIB) > budget, (
        "the whole tile must not fit"
    )
    t0 = time.perf_counter()
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE), "--max-memory", "460Mi")
    assert proc.returncode == 0, proc.stderr
    m = json.loads(Path(TileOutputs.of(plan.config, TILE, plan.period).metrics_url).read_text())
    print(
        f"{m['row_bands']} bands, buffer {m['cube_bytes'] / 1e6:.1f} MB of {m['tile_cube_bytes'] / 1e6:.1f} MB, "
        f"peak RSS {m['peak_rss_bytes'] / _MIB:.0f} MiB, budget 460 MiB, {time.perf_counter() - t0:.0f} s"
    )
    assert m["observations"] == N_DATES
    assert m["row_bands"] == 3 and m["tile_cube_bytes"] == 3 * m["cube_bytes"]
    assert m["peak_rss_bytes"] <= budget


@pytest.mark.slow
def test_too_small_budget_is_a_one_line_error(synth_catalog: Synth, tmp_path: Path) -> None:
    plan = _plan(synth_catalog, tmp_path)
    proc = gmrun(
        "run-tile",
        "--plan",
        plan.url,
        "--tile",
        str(TILE),
        "--output",
        str(tmp_path / "out"),
        "--max-memory",
        "200Mi",
    )
    assert_clean_error(proc, "memory budget 200 MiB is too small", f"{PX}×{PX} px tile")
    assert not Path(_outputs(plan, tmp_path / "out").item_url).exists()
    bad = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE), "--max-memory", "2GB")
    assert_clean_error(bad, "invalid memory '2GB'")
    zero = gmrun("run-tile", "--plan", plan.url, "--tile", str(TILE), "--row-bands", "0")
    assert zero.returncode == 2 and "Traceback" not in zero.stderr


def _cut_after_band_one(plan: Plan, item: dict, asset: str, folder: Path) -> str:
    """Copy ``item``'s ``asset`` COG truncated at the first block row that only the 2nd band's
    rows need (the 1st band reads fine, the 2nd fails) and point the plan's item at the copy."""
    from odc.geo import CRS

    geobox = plan.grid.geobox(TILE)
    href = item["assets"][asset]["href"]
    with rasterio.open(href) as src:
        bh = src.block_shapes[0][0]
        ncols = -(-src.shape[1] // src.block_shapes[0][1])

        def last_row(
            r0: int, r1: int
        ) -> float:  # the southernmost source row of tile rows [r0, r1)
            bottom = geobox[r0:r1, :].extent.to_crs(CRS(str(src.crs))).boundingbox.bottom
            return (src.transform.f - bottom) / abs(src.transform.e)

        cut_row = int(last_row(0, CHUNK) + 2) // bh + 1  # first block row band 1 never reads
        assert cut_row * bh < last_row(CHUNK, 2 * CHUNK) < src.shape[0], (
            "band 2 must need the cut blocks"
        )
        offsets = [
            int(src.get_tag_item(f"BLOCK_OFFSET_{c}_{cut_row}", "TIFF", bidx=1))
            for c in range(ncols)
        ]
        before = [
            int(src.get_tag_item(f"BLOCK_OFFSET_{c}_{cut_row - 1}", "TIFF", bidx=1))
            for c in range(ncols)
        ]
    assert max(before) < min(offsets), "full-resolution blocks are stored row by row"
    cut = folder / f"cut_{asset}.tif"
    cut.write_bytes(Path(href).read_bytes()[: min(offsets)])
    with tile_items(plan, TILE) as docs:
        for d in docs:
            if d["id"] == item["id"]:
                d["assets"][asset]["href"] = str(cut)
    return str(cut)


@pytest.mark.slow
def test_item_dropped_in_band_two_restarts_from_band_one(
    synth_catalog: Synth, tmp_path: Path
) -> None:
    """A COG whose blocks under the 2nd band are unreadable: with --skip-bad-inputs the load
    restarts from band 1 without its item, and the tile equals the whole-tile run's."""
    plan = _plan(synth_catalog, tmp_path)
    item = plan.items(TILE)[2]
    cut = _cut_after_band_one(plan, item, "B04", tmp_path)
    proc = _worker(plan, tmp_path / "bands", "--row-bands", "3", "--skip-bad-inputs")
    assert proc.stderr is not None
    events = []
    lines = []
    for line in proc.stderr:
        lines.append(line)
        rec = json.loads(line) if line.startswith("{") else {}
        if rec.get("skipped_item"):
            events.append("skip")
        elif rec.get("band") and str(rec.get("msg", "")).endswith("loading"):
            events.append(f"load {rec['band']}")
    assert proc.wait() == 0, "".join(lines)
    assert events == ["load 1", "load 2", "skip", "load 1", "load 2", "load 3"], events
    out = _outputs(plan, tmp_path / "bands")
    doc = json.loads(Path(out.item_url).read_text())["properties"]
    assert doc["gmrun:skipped_inputs"] == [item["id"]]
    assert doc["gmrun:metrics"]["load_restarts"] == 1 and doc["gmrun:metrics"]["row_bands"] == 3
    # the same inputs at once: the asset fails in the only band; same item dropped, same COGs
    whole = gmrun(
        "run-tile",
        "--plan",
        plan.url,
        "--tile",
        str(TILE),
        "--output",
        str(tmp_path / "whole"),
        "--row-bands",
        "1",
        "--skip-bad-inputs",
    )
    assert whole.returncode == 0, whole.stderr
    assert cut in whole.stderr
    ref = _outputs(plan, tmp_path / "whole")
    assert json.loads(Path(ref.item_url).read_text())["properties"]["gmrun:skipped_inputs"] == [
        item["id"]
    ]
    assert tile_cogs(out) == tile_cogs(ref)
