"""The planner: regions, tile selection, grid lookups, plan outputs, and its errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from odc.geo import CRS

from runner.common.config import RunConfig
from runner.common.errors import UserInputError
from runner.planner.grid import TileGrid, TileId
from runner.planner.region import named_region, parse_geojson, read_tiles_file, select_tiles
from tests.conftest import assert_clean_error, gmrun

GRID = TileGrid.from_config(RunConfig().grid)

#: Measured with runner/data/africa.geojson (see docs/planner.md).
AFRICA_TILES = 3456
AFRICA_FIRST, AFRICA_LAST = "x199y033", "x191y123"


def _square(lon: float, lat: float, d: float) -> dict:
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


# --- regions ------------------------------------------------------------------------------------------
def test_africa_land_tiles() -> None:
    t0 = time.monotonic()
    tiles = list(GRID.tiles(named_region("africa")))
    assert time.monotonic() - t0 < 10
    assert 3300 <= len(tiles) <= 3600
    assert len(tiles) == AFRICA_TILES
    assert (str(tiles[0]), str(tiles[-1])) == (AFRICA_FIRST, AFRICA_LAST)
    # the outline, not its bbox: far fewer than the bbox's tiles, and none in the open Atlantic
    left, bottom, right, top = named_region("africa").to_crs(CRS(GRID.crs)).boundingbox
    lo, hi = GRID.locate(left, bottom), GRID.locate(right, top)
    assert len(tiles) < 0.6 * (hi.ix - lo.ix + 1) * (hi.iy - lo.iy + 1)
    assert GRID.locate_lonlat(-10.0, -10.0) not in tiles  # South Atlantic
    assert GRID.locate_lonlat(30.06, -1.95) in tiles  # Kigali


def test_unknown_region_lists_known_ones() -> None:
    with pytest.raises(UserInputError, match="known regions are africa"):
        named_region("atlantis")


def test_geojson_kinds_and_crs() -> None:
    poly = _square(30.0, -2.0, 0.5)
    want = sorted(GRID.tiles(parse_geojson(poly)))
    assert want
    for doc in (
        {"type": "Feature", "properties": {}, "geometry": poly},
        {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "properties": {}, "geometry": poly}],
        },
        {"type": "MultiPolygon", "coordinates": [poly["coordinates"]]},
    ):
        assert sorted(GRID.tiles(parse_geojson(doc))) == want
    # the same square in EPSG:6933 metres, named by a crs member
    b = GRID.bounds(TileId(200, 80))
    ring = [
        [b.left + 1e3, b.bottom + 1e3],
        [b.left + 2e3, b.bottom + 1e3],
        [b.left + 2e3, b.bottom + 2e3],
        [b.left + 1e3, b.bottom + 1e3],
    ]
    doc = {
        "type": "Polygon",
        "coordinates": [ring],
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::6933"}},
    }
    assert list(GRID.tiles(parse_geojson(doc))) == [TileId(200, 80)]


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
            "invalid polygon",
        ),
        ({"type": "FeatureCollection", "features": []}, "empty"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        ({"type": "Point", "coordinates": [0, 0]}, "Polygon or MultiPolygon"),
        (
            {
                "type": "Polygon",
                "coordinates": [[[0, 0], [1, 0], [0, 1], [0, 0]]],
                "crs": "EPSG:999999",
            },
            "unknown CRS",
        ),
    ],
)
def test_bad_geojson(doc: dict, needle: str) -> None:
    with pytest.raises(UserInputError, match=needle):
        parse_geojson(doc)


def test_tiles_file_and_one_region_only(tmp_path: Path) -> None:
    f = tmp_path / "tiles.txt"
    f.write_text("# tiles\nx017y156\n\nx001y002  # comment\nx017y156\n")
    assert read_tiles_file(str(f)) == [TileId(17, 156), TileId(1, 2), TileId(17, 156)]
    assert select_tiles(GRID, tiles_file=str(f))[0] == [TileId(1, 2), TileId(17, 156)]
    f.write_text("x017y156\nx17y1\n")
    with pytest.raises(UserInputError, match=r"tiles.txt:2: invalid tile id"):
        read_tiles_file(str(f))
    with pytest.raises(UserInputError, match="give a region"):
        select_tiles(GRID, region="africa", tiles_file=str(f))


def test_dry_run_over_africa_without_a_catalog() -> None:
    t0 = time.monotonic()
    proc = gmrun("plan", "--region", "africa", "--year", "2023", "--dry-run")
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 0, proc.stderr
    assert f"{AFRICA_TILES} tiles (first {AFRICA_FIRST}, last {AFRICA_LAST})" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--region", "atlantis"], "unknown region 'atlantis': known regions are africa"),
        (["--region", "africa", "--bbox", "0,0,1,1"], "give a region"),
        (["--bbox", "0,0,1,1"], "give --catalog"),
        (["--geojson", "BOWTIE"], "invalid polygon"),
        (["--geojson", "EMPTY"], "empty"),
        (["--geojson", "MISSING"], "not found"),
    ],
)
def test_plan_region_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    files = {
        "BOWTIE": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
        "EMPTY": {"type": "FeatureCollection", "features": []},
    }
    for i, a in enumerate(args):
        if a in files:
            (tmp_path / "r.geojson").write_text(json.dumps(files[a]))
            args[i] = str(tmp_path / "r.geojson")
        elif a == "MISSING":
            args[i] = str(tmp_path / "nope.geojson")
    assert_clean_error(gmrun("plan", "--year", "2023", *args), needle)


# --- grid lookups -------------------------------------------------------------------------------------
def test_grid_locate_and_show() -> None:
    proc = gmrun("grid", "locate", "30.06", "-1.95")
    assert proc.returncode == 0, proc.stderr
    tile = TileId.parse(proc.stdout.strip())
    assert tile == GRID.locate_lonlat(30.06, -1.95) == TileId(211, 74)
    shown = gmrun("grid", "show", str(tile))
    assert shown.returncode == 0, shown.stderr
    b = GRID.bounds(tile)
    assert f"{b.left:.0f} {b.bottom:.0f} {b.right:.0f} {b.top:.0f}" in shown.stdout
    feat = json.loads(gmrun("grid", "show", str(tile), "--geojson").stdout)
    assert feat["properties"]["tile"] == str(tile)
    w, s, e, n = parse_geojson(feat["geometry"]).boundingbox
    assert w < 30.06 < e and s < -1.95 < n
    assert_clean_error(gmrun("grid", "show", "x1y"), "invalid tile id")
    assert_clean_error(gmrun("grid", "locate", "200", "0"), "out of range")


# --- plans from a catalog -----------------------------------------------------------------------------
def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_plan", Path(__file__).parents[1] / "benchmarks/bench_plan.py"
    )
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_streamed_plan_equals_in_memory_plan_and_writes_outputs(tmp_path: Path) -> None:
    from PIL import Image

    from runner.planner.assign import build_plan, stream_plan
    from runner.planner.catalog import read_items
    from runner.planner.period import Period
    from runner.planner.plan import Plan
    from runner.planner.report import write_map_files

    bench = _bench()
    items = tmp_path / "items.ndjson"
    bench.generate(items, 600, 4)
    tiles = bench.region_tiles(4)
    cfg = RunConfig()
    period = Period.parse("2023-01-01--2023-09-30")
    ref, ref_items = build_plan(cfg, tiles, read_items(str(items)), period)
    got = stream_plan(cfg, tiles, str(items), period, str(tmp_path / "plan"))
    assert [tp.to_dict() for tp in got.tiles] == [tp.to_dict() for tp in ref.tiles]
    assert sum(tp.n_items for tp in got.tiles) > 600  # footprints overlap several tiles
    loaded = Plan.load(str(tmp_path / "plan"))
    for t in tiles:
        assert loaded.items(t) == ref_items[t]  # same items, same (datetime, id) order
    dry = stream_plan(cfg, tiles, str(items), period, None)
    assert [tp.to_dict() for tp in dry.tiles] == [tp.to_dict() for tp in ref.tiles]
    # a catalog that is not local ndjson goes through per-tile staging files: same plan
    fc = tmp_path / "items.json"
    fc.write_text(
        json.dumps({"type": "FeatureCollection", "features": list(read_items(str(items)))})
    )
    staged = stream_plan(cfg, tiles, str(fc), period, str(tmp_path / "plan2"))
    assert [tp.to_dict() for tp in staged.tiles] == [tp.to_dict() for tp in ref.tiles]
    for t in tiles:
        assert Plan.load(str(tmp_path / "plan2")).items(t) == ref_items[t]

    write_map_files(loaded, str(tmp_path / "plan"), parse_geojson(_square(14, -1, 3)))
    doc = json.loads((tmp_path / "plan/tiles.geojson").read_text())
    assert [f["properties"]["tile"] for f in doc["features"]] == [str(t) for t in sorted(tiles)]
    f0 = doc["features"][0]["properties"]
    assert set(f0) >= {"n_items", "n_obs", "cube_bytes", "memory"}
    with Image.open(tmp_path / "plan/tiles.png") as im:
        assert im.format == "PNG" and max(im.size) <= 1002


def test_antimeridian_footprints() -> None:
    """A footprint across ±180° (written with a +179.5° → −179.5° jump, or split at ±180° as the
    STAC spec advises) matches the tiles on both sides of it, not the globe the other way round."""
    from runner.planner.catalog import assign_to_tiles, solar_day

    east, west, far = (
        GRID.locate_lonlat(179.8, 10.0),
        GRID.locate_lonlat(-179.8, 10.0),
        GRID.locate_lonlat(0.0, 10.0),
    )
    naive = _square(179.5, 9.9, 1.0)
    naive["coordinates"][0] = [[(x - 360 if x > 180 else x), y] for x, y in naive["coordinates"][0]]
    split = {
        "type": "MultiPolygon",
        "coordinates": [
            _square(179.5, 9.9, 0.5)["coordinates"],
            _square(-180.0, 9.9, 0.5)["coordinates"],
        ],
    }
    inside = _square(10.0, 9.9, 1.0)  # an ordinary footprint near the tile at 0°, as a control
    near = GRID.locate_lonlat(10.5, 10.4)
    items = [
        {"id": name, "geometry": g, "properties": {"datetime": "2023-06-01T23:30:00Z"}}
        for name, g in (("naive", naive), ("split", split), ("inside", inside))
    ]
    got = assign_to_tiles(items, GRID, [east, west, far, near])
    assert [it["id"] for it in got[east]] == ["naive", "split"]
    assert [it["id"] for it in got[west]] == ["naive", "split"]
    assert got[far] == [] and [it["id"] for it in got[near]] == ["inside"]
    # both spellings have the same centre (±180°), so the same solar day, ±12 h from the UTC date
    assert solar_day(items[0]) == solar_day(items[1])
    assert abs((solar_day(items[0]) - solar_day(items[2])).days) <= 1


def test_plan_cli_writes_plan_and_outputs(tmp_path: Path) -> None:
    bench = _bench()
    items = tmp_path / "items.ndjson"
    bench.generate(items, 200, 2)
    tf = tmp_path / "tiles.txt"
    tf.write_text("\n".join(str(t) for t in bench.region_tiles(2)))
    proc = gmrun(
        "plan",
        "--catalog",
        str(items),
        "--tiles-file",
        str(tf),
        "--year",
        "2023",
        "-o",
        str(tmp_path / "plan"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "estimated node-hours" in proc.stdout and "total cube" in proc.stdout
    for name in ("plan.json", "tiles.geojson", "tiles.png"):
        assert (tmp_path / "plan" / name).is_file()


@pytest.mark.parametrize(
    "doc",
    [
        {
            "id": "a",
            "geometry": {"type": "Point", "coordinates": [1, 2]},
            "properties": {"x": 1},
            "assets": {},
        },
        # nested members of the same names before the top-level ones must not be taken
        {
            "assets": {"b": {"properties": {"x": 9}, "id": "nested", "geometry": None}},
            "id": "a",
            "properties": {"x": 1, "s": '"properties": {}'},
            "geometry": None,
        },
        {"id": "é\u2028", "properties": {}},  # missing member, odd characters
    ],
)
def test_parse_fields_reads_top_level_members(doc: dict) -> None:
    from runner.planner.catalog import parse_fields

    fields = frozenset(("id", "geometry", "properties"))
    for line in (
        json.dumps(doc),
        json.dumps(doc, indent=1).replace("\n", " "),
        json.dumps(doc, ensure_ascii=False),
    ):
        assert parse_fields(line, fields) == {k: v for k, v in doc.items() if k in fields}


def test_parse_fields_errors_like_json() -> None:
    from runner.planner.catalog import parse_fields

    for bad in ('{"id": "a", "geometry": {', '{"id" "a"}', "[1, 2]", '{"id": "a",, "x": 1}'):
        try:
            got = parse_fields(bad, frozenset(("id", "geometry")))
        except json.JSONDecodeError:
            continue
        assert not isinstance(got, dict) or got == {"id": "a"}, bad


def test_plan_errors_exit_2_in_one_line(tmp_path: Path) -> None:
    assert_clean_error(
        gmrun("plan", "--bbox", "30,-2,200,-1.9", "--year", "2023", "--dry-run"), "out of range"
    )
    assert_clean_error(
        gmrun("plan", "--region", "africa", "--period", "someday", "--dry-run"), "invalid period"
    )
    bench = _bench()
    items = tmp_path / "items.ndjson"
    bench.generate(items, 20, 1)
    tf = tmp_path / "tiles.txt"
    tf.write_text(str(bench.region_tiles(1)[0]) + "\n")
    proc = gmrun(
        "plan",
        "--catalog",
        str(items),
        "--tiles-file",
        str(tf),
        "--year",
        "2023",
        "-o",
        str(tmp_path / "p"),
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "p/plan.json").read_text())
    doc["schema"] = "gmrun/plan/999"
    (tmp_path / "p/plan.json").write_text(json.dumps(doc))
    assert_clean_error(
        gmrun("run-tile", "--plan", str(tmp_path / "p"), "--tile", doc["tiles"][0]["tile"]),
        "plan schema 'gmrun/plan/999' is not supported",
    )
