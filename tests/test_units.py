"""Fast unit tests: config, grid, periods, plans, masking."""

from __future__ import annotations

import json
from datetime import date

import dask.array as da
import numpy as np
import pytest
from odc.geo import CRS, yx_
from odc.geo.geom import box
from odc.geo.gridspec import GridSpec

from runner.common.config import RunConfig, load_config, parse_config
from runner.common.errors import UserInputError
from runner.planner.grid import TileGrid, TileId
from runner.planner.period import Period
from runner.planner.plan import Plan, make_tile_plan
from runner.planner.sizing import Resources, size_class
from runner.worker.mask import cleanup, clear_mask, disk


# --- config -----------------------------------------------------------------------------------------
def test_defaults_need_no_file() -> None:
    cfg = load_config(None)
    assert cfg.grid.crs == "EPSG:6933" and cfg.grid.tile_size == 96_000
    assert cfg.mask.opening == 2 and cfg.mask.dilation == 5
    assert len(cfg.bands) == 10


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"algorithm": {"eps": 0}}, "algorithm.eps"),
        ({"algorithm": {"epsilon": 1}}, "algorithm.epsilon"),
        ({"bands": []}, "bands"),
        ({"product": {"name": "../../etc"}}, "product.name"),
        ({"mask": {"dilation": -1}}, "mask.dilation"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(doc: dict, message: str) -> None:
    with pytest.raises(UserInputError) as e:
        parse_config(doc, "gmrun.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_config_file_errors(tmp_path) -> None:
    with pytest.raises(UserInputError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: [1, 2\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_config(bad)


# --- tile ids and the grid -----------------------------------------------------------------------------
def test_tile_id_roundtrip() -> None:
    for t in (TileId(17, 156), TileId(0, 0), TileId(-1, -12), TileId(12345, 7)):
        assert TileId.parse(str(t)) == t
    assert str(TileId(17, 156)) == "x017y156"


@pytest.mark.parametrize(
    "bad",
    [
        "x17y156",
        "x017",
        "../x017y156",
        "x017y156/../../etc",
        "x017y156;rm -rf /",
        "x017y156 ",
        "X017Y156",
        "x017y156\n",
        "x" + "1" * 60 + "y001",
        "$(id)",
        "",
    ],
)
def test_bad_tile_ids_are_refused(bad: str) -> None:
    with pytest.raises(UserInputError, match="invalid tile id"):
        TileId.parse(bad)


def test_grid_agrees_with_odc_geo_gridspec_africa_10() -> None:
    grid = TileGrid.from_config(RunConfig().grid)
    gs = GridSpec(
        crs=CRS("EPSG:6933"),
        tile_shape=(9600, 9600),
        resolution=10,
        origin=yx_(-7_392_000, -17_376_000),
    )  # odc-stats GRIDS["africa_10"]
    for ix, iy in [(0, 0), (17, 156), (199, 60), (105, 77)]:
        ours, theirs = grid.geobox(TileId(ix, iy)), gs.tile_geobox((ix, iy))
        assert ours.shape == theirs.shape
        assert ours.transform.almost_equals(theirs.transform)
        assert ours.crs == theirs.crs


def test_locate_and_tiles_of_a_region() -> None:
    grid = TileGrid.from_config(RunConfig().grid)
    b = grid.bounds(TileId(200, 80))
    assert grid.locate(b.left + 1, b.bottom + 1) == TileId(200, 80)
    assert grid.locate(b.left - 1, b.bottom + 1) == TileId(199, 80)
    # a small lon/lat box inside one tile → that tile only
    centre = box(
        b.left + 10_000, b.bottom + 10_000, b.left + 20_000, b.bottom + 20_000, CRS("EPSG:6933")
    )
    assert list(grid.tiles(centre.to_crs("EPSG:4326"))) == [TileId(200, 80)]


def test_tiles_follow_the_geometry_not_its_bbox() -> None:
    grid = TileGrid.from_config(RunConfig().grid)
    b0, b1 = grid.bounds(TileId(100, 70)), grid.bounds(TileId(102, 72))
    from odc.geo.geom import polygon

    # an L-shape over a 3×3 block: the bbox touches 9 tiles, the shape only 5
    pts = [
        (b0.left + 1, b0.bottom + 1),
        (b1.right - 1, b0.bottom + 1),
        (b1.right - 1, b0.top - 1),
        (b0.right - 1, b0.top - 1),
        (b0.right - 1, b1.top - 1),
        (b0.left + 1, b1.top - 1),
    ]
    shape = polygon([*pts, pts[0]], crs=CRS("EPSG:6933"))
    got = sorted(grid.tiles(shape))
    assert len(got) == 5
    assert TileId(102, 72) not in got


# --- periods ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "start", "end", "label"),
    [
        ("2023", date(2023, 1, 1), date(2023, 12, 31), "2023--P1Y"),
        ("2023--P1Y", date(2023, 1, 1), date(2023, 12, 31), "2023--P1Y"),
        ("2023-07--P6M", date(2023, 7, 1), date(2023, 12, 31), "2023-07--P6M"),
        ("2023-01-01--2023-06-30", date(2023, 1, 1), date(2023, 6, 30), "2023-01--P6M"),
        ("2023-01-05--2023-02-03", date(2023, 1, 5), date(2023, 2, 3), "2023-01-05--P30D"),
    ],
)
def test_periods(text: str, start: date, end: date, label: str) -> None:
    p = Period.parse(text)
    assert (p.start, p.end, p.label) == (start, end, label)


@pytest.mark.parametrize(
    "bad", ["23", "2023-13-01--2023-12-31", "2023-06-01--2023-01-01", "last year", "2023--P0Y"]
)
def test_bad_periods(bad: str) -> None:
    with pytest.raises(UserInputError):
        Period.parse(bad)


# --- plans ---------------------------------------------------------------------------------------------
def test_tile_sizing_and_resources() -> None:
    cfg = RunConfig()
    tp = make_tile_plan(cfg, TileId(1, 2), n_items=150, n_obs=75)
    assert tp.cube_bytes == 9600 * 9600 * 10 * 75 * 2
    assert tp.resources.memory_bytes >= tp.cube_bytes
    assert tp.resources.memory == "256Gi"
    assert size_class(3 * 2**30) == 4 * 2**30
    assert Resources(3 * 2**30, "2").scaled(1.5).memory == "4608Mi"


def test_plan_roundtrip_and_errors(tmp_path) -> None:
    cfg = RunConfig()
    tp = make_tile_plan(cfg, TileId(1, 2), n_items=1, n_obs=1)
    plan = Plan(cfg, Period.year(2023), (tp,)).save(
        str(tmp_path / "p"), {TileId(1, 2): [{"id": "a"}]}
    )
    again = Plan.load(str(tmp_path / "p"))
    assert again.tiles == plan.tiles and again.config == cfg and again.period == plan.period
    assert again.items("x001y002") == [{"id": "a"}]
    with pytest.raises(UserInputError, match="not in the plan"):
        again.tile("x009y009")
    with pytest.raises(UserInputError, match="plan not found"):
        Plan.load(str(tmp_path / "nothing"))
    other = tmp_path / "other.json"
    other.write_text('{"schema": "gmrun/plan/0", "tiles": []}')
    with pytest.raises(UserInputError, match="schema"):
        Plan.load(str(other))


def test_old_plans_overhead_key_still_loads(tmp_path) -> None:
    """kubernetes.memory_overhead_mib (plans before the memory section) is read as
    memory.overhead_mib; giving both, different, is a one-line error naming the fix."""
    cfg = parse_config({"kubernetes": {"memory_overhead_mib": 2048, "cpu": "4"}})
    assert cfg.memory.overhead_mib == 2048 and cfg.kubernetes.cpu == "4"
    tp = make_tile_plan(RunConfig(), TileId(1, 2), n_items=1, n_obs=1)
    plan = Plan(RunConfig(), Period.year(2023), (tp,)).save(str(tmp_path / "p"), {tp.tile: []})
    path = tmp_path / "p" / "plan.json"
    doc = json.loads(path.read_text())
    doc["config"].pop("memory")
    doc["config"]["kubernetes"]["memory_overhead_mib"] = 512
    path.write_text(json.dumps(doc))
    assert Plan.load(str(tmp_path / "p")).config.memory.overhead_mib == 512
    assert plan.config.memory.overhead_mib == 1024
    with pytest.raises(UserInputError, match=r"is now memory\.overhead_mib") as e:
        parse_config({"kubernetes": {"memory_overhead_mib": 1}, "memory": {"overhead_mib": 2}})
    assert "\n" not in str(e.value)


def test_planner_observations_follow_groupby() -> None:
    """Two granules of one pass (5 s apart, one solar day) are one observation under
    ``solar_day`` and two under ``time``; the planner's sizes follow."""
    from runner.planner.catalog import count_observations

    def item(iid: str, when: str, lon: float) -> dict:
        geom = box(lon, 0.0, lon + 1.0, 1.0, CRS("EPSG:4326")).json
        return {"id": iid, "geometry": geom, "properties": {"datetime": when}}

    same_pass = [
        item("a", "2023-03-01T08:10:00Z", 29.5),
        item("b", "2023-03-01T08:10:05Z", 30.2),
        item("c", "2023-03-11T08:10:00Z", 29.5),
    ]
    assert count_observations(same_pass, "solar_day") == 2
    assert count_observations(same_pass, "time") == 3
    # late-evening UTC east of Greenwich: the next solar day
    late = [item("d", "2023-03-01T23:30:00Z", 30.0), item("e", "2023-03-02T00:30:00Z", 30.0)]
    assert count_observations(late, "solar_day") == 1


# --- masking -------------------------------------------------------------------------------------------
def test_opening_drops_specks_and_dilation_grows_clouds() -> None:
    m = np.zeros((1, 40, 40), bool)
    m[0, 5, 5] = True  # a speck: opened away
    m[0, 20:30, 20:30] = True  # a cloud: kept and grown by 5 px
    out = cleanup(m, opening=2, dilation=5)[0]
    assert not out[:12, :12].any()
    assert out[20:30, 20:30].all()
    assert out[15, 25] and out[25, 15] and not out[13, 25]
    assert disk(2).sum() == 13


def test_chunked_mask_equals_whole_array() -> None:
    rng = np.random.default_rng(0)
    scl = rng.choice(
        np.array([4, 5, 8, 9, 3, 0, 11], np.uint8),
        size=(3, 200, 200),
        p=[0.5, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05],
    )
    cfg = RunConfig().mask
    whole = clear_mask(da.from_array(scl, chunks=(1, 200, 200)), cfg).compute()
    chunked = clear_mask(da.from_array(scl, chunks=(1, 64, 64)), cfg).compute()
    np.testing.assert_array_equal(whole, chunked)
    assert not whole[scl == 0].any()  # nodata never clear
    # snow is clear unless a cloud's dilation reaches it
    assert whole[scl == 11].any()


def test_local_write_removes_temporaries_of_killed_writers(tmp_path) -> None:
    """A writer killed between writing its temporary and renaming it leaves ``.name.tmpPID``;
    the next write of that file removes it, but not a live writer's."""
    import subprocess
    import sys

    from runner.common.store import write_bytes

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_pid = 2**22 + 17  # above Linux's pid_max (4194304): never a process
        stale = tmp_path / f".b.tif.tmp{dead_pid}"
        in_flight = tmp_path / f".b.tif.tmp{live.pid}"
        other = tmp_path / f".c.tif.tmp{dead_pid}"
        for p in (stale, in_flight, other):
            p.write_bytes(b"partial")
        write_bytes(str(tmp_path / "b.tif"), b"whole")
        assert (tmp_path / "b.tif").read_bytes() == b"whole"
        assert not stale.exists()
        assert in_flight.exists() and other.exists()
    finally:
        live.kill()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_disk_morphology_equals_scipy(seed: int) -> None:
    """The run-decomposed numba opening/dilation equals scipy.ndimage's with the same disc, the
    array's edges included (pixels outside count as clear), on masks of several densities."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    for shape, p in [((1, 57, 83), 0.5), ((2, 64, 64), 0.1), ((1, 30, 7), 0.8), ((1, 1, 40), 0.6)]:
        m = rng.random(shape) < p
        m[..., 10:20, :5] = True  # a cloud on the edge
        for opening, dilation in [(2, 5), (0, 3), (1, 0), (3, 1)]:
            want = np.empty_like(m)
            for i in range(m.shape[0]):
                w = m[i]
                if opening:
                    w = ndimage.binary_opening(w, structure=disk(opening))
                if dilation:
                    w = ndimage.binary_dilation(w, structure=disk(dilation))
                want[i] = w
            np.testing.assert_array_equal(
                cleanup(m, opening, dilation), want, err_msg=f"{shape} {opening} {dilation}"
            )


def test_cpu_quantities_give_the_workers_threads() -> None:
    """A Job's CPU request, rounded up, is its worker's threads (the downward API's divisor 1);
    a quantity Kubernetes would refuse is a one-line error naming the key."""
    from runner.planner.sizing import cpu_threads, load_bytes

    assert [cpu_threads(c) for c in ("2", "1500m", "1.5", "250m", "16")] == [2, 2, 2, 1, 16]
    with pytest.raises(UserInputError, match=r"kubernetes\.cpu: 'two' is not a CPU quantity"):
        parse_config({"kubernetes": {"cpu": "two"}}, "gmrun.yaml")
    # the load's memory grows with the threads once their runs of 8 dates outgrow 64 MiB; a small
    # tile's is what all its dates' windows hold, whatever the budget
    assert load_bytes(1024, 9600, 75, threads=8) > load_bytes(1024, 9600, 75, threads=2) > 2**28
    assert load_bytes(64, 64, 10, threads=8) < 2**20
