"""Lon/lat footprints of grid tiles: the projection's edges, the antimeridian, the poles, and
`gmrun grid show` of any id."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from odc.geo import CRS
from pyproj import Transformer
from shapely.geometry import shape

from runner.cli.plan import grid as grid_cli
from runner.common.config import RunConfig
from runner.common.errors import UserInputError
from runner.planner.footprint import grid_parts, lonlat_bounds, valid_area
from runner.planner.grid import TileGrid, TileId
from runner.planner.region import named_region
from tests.conftest import assert_clean_error, gmrun

GRID = TileGrid.from_config(RunConfig().grid)  # africa_10: EPSG:6933, 96 km tiles
X_MAX, Y_MAX = 17367530.445161372, 7324184.56362408  # EPSG:6933 at 180° E and 86° N


def _show(*args: str) -> tuple[int, str]:
    """``gmrun grid show ARGS`` in-process: (exit code, stdout + stderr)."""
    res = CliRunner().invoke(grid_cli, ["show", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    return res.exit_code, res.output


def _old_answer(grid: TileGrid, tile: TileId) -> shapely.Geometry:
    """What `describe` printed before footprints were clipped (odc-geo to_crs)."""
    fp = grid.footprint(tile).to_crs(CRS("EPSG:4326"), resolution=grid.tile_size / 16)
    return shapely.set_precision(fp.geom.simplify(1e-7), 1e-7)


def _covers_samples(grid: TileGrid, tile: TileId, n: int = 200) -> None:
    """Random points of the tile's valid part (50 m inside its edges: the footprint's edges are
    within ~1 m of the true ones), transformed one by one, lie in the footprint."""
    part = grid_parts(grid, grid.boxes([tile]))[0].buffer(-50)
    rnd = random.Random(str(tile))
    left, bottom, right, top = part.bounds
    xy = np.array([(rnd.uniform(left, right), rnd.uniform(bottom, top)) for _ in range(n)])
    xy = xy[shapely.contains_xy(part, xy[:, 0], xy[:, 1])]
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(*xy.T)
    fp = grid.lonlat_footprint(tile).buffer(1e-6)
    assert len(xy) > n // 4 and shapely.contains_xy(fp, lon, lat).all()


# --- EPSG:6933: the projection's edges ----------------------------------------------------------------
def test_valid_area_is_epsg6933s_rectangle() -> None:
    area = valid_area("EPSG:6933")
    assert area is not None
    assert np.allclose(area.bounds, (-X_MAX, -Y_MAX, X_MAX, Y_MAX), atol=0.01)
    assert area.equals(shapely.box(*area.bounds))


def test_readme_example_id_outside_the_projection_is_a_clean_error() -> None:
    """x017y156 (the README's example) lies north of the pole: an error, never a traceback."""
    t = TileId.parse("x017y156")
    with pytest.raises(UserInputError, match="wholly outside EPSG:6933's valid area") as e:
        GRID.lonlat_footprint(t)
    assert "x000–x361, y000–y153" in str(e.value)
    for args in (["x017y156"], ["x017y156", "--geojson"]):
        code, out = _show(*args)
        assert code == 2 and out.count("error: ") == 1 and "Traceback" not in out
        assert "x017y156 lies wholly outside" in out
    assert_clean_error(gmrun("grid", "show", "x017y156"), "wholly outside")  # the real CLI


def test_tile_across_180_east_is_clipped_not_wrapped() -> None:
    """x361y077 reaches 8.5 km past 180° E: only its part west of 180° is kept (the old answer
    wrapped it round the globe to -179.9°)."""
    t = TileId(361, 77)
    fp = GRID.lonlat_footprint(t)
    assert fp.geom_type == "Polygon" and fp.is_valid
    assert np.allclose(fp.bounds, (179.0928198, 0.0, 180.0, 0.7525297), atol=1e-7)
    assert GRID.valid_fraction(t) == pytest.approx((X_MAX - 17280000) / 96000)
    code, out = _show("x361y077")
    assert code == 0, out
    assert "lon/lat    179.09282 0.00000 180.00000 0.75253 (W S E N" in out
    assert "91.2 % of the tile lies in EPSG:6933's valid area" in out
    _covers_samples(GRID, t)


def test_every_edge_tile_has_a_footprint_and_those_past_it_none() -> None:
    edge = [TileId(ix, iy) for ix in (0, 361) for iy in range(154)]
    edge += [TileId(ix, iy) for iy in (0, 153) for ix in range(1, 361)]
    fps = GRID.lonlat_footprints(edge)
    assert shapely.is_valid(fps).all() and not shapely.is_empty(fps).any()
    b = shapely.bounds(fps)
    assert (b[:, 0] >= -180).all() and (b[:, 2] <= 180).all()
    assert (b[:, 1] >= -86).all() and (b[:, 3] <= 86).all()
    assert (b[:, 2] - b[:, 0] < 1.0).all()  # none wrapped the long way round
    assert np.isclose(b[:, 3].max(), 86) and np.isclose(b[:, 1].min(), -86)
    past = [TileId(-1, 70), TileId(362, 70), TileId(100, -1), TileId(100, 154), TileId(-99, -99)]
    assert shapely.is_empty(GRID.lonlat_footprints(past)).all()
    for t in past:
        with pytest.raises(UserInputError, match="wholly outside"):
            GRID.describe(t)
    for t in (TileId(0, 0), TileId(361, 153)):
        _covers_samples(GRID, t)


def test_any_valid_id_prints_an_answer_or_one_error_line() -> None:
    for tid in ("x000y000", "x361y153", "x180y153", "x-01y070", "x99999y99999", "x-9999y-9999"):
        for extra in ([], ["--geojson"]):
            code, out = _show(tid, *extra)
            assert "Traceback" not in out
            if code == 0:
                assert out.startswith("{" if extra else f"tile {tid}")
            else:
                assert code == 2 and out.strip().count("\n") == 0 and out.startswith("error: ")


# --- ordinary tiles: the old answer, fast -------------------------------------------------------------
def test_african_tiles_equal_the_old_answer() -> None:
    tiles = list(GRID.tiles(named_region("africa")))
    fps = GRID.lonlat_footprints(tiles)
    assert len(fps) == len(tiles) == 3456 and shapely.is_valid(fps).all()
    for i in range(0, len(tiles), 97):  # 36 tiles across the continent
        old, new = _old_answer(GRID, tiles[i]), fps[i]
        assert shapely.equals_exact(shapely.normalize(old), shapely.normalize(new), 1e-7)
        assert new.equals_exact(GRID.lonlat_footprint(tiles[i]), 0)  # the same, one at a time
        assert shapely.is_ccw(new.exterior)  # RFC 7946's right-hand rule
    kigali = GRID.lonlat_footprint(TileId(211, 74))
    assert kigali.bounds == pytest.approx(
        (29.8488033, -2.2580947, 30.8437634, -1.5051857), abs=1e-7
    )
    assert kigali.contains(shapely.Point(30.06, -1.95))


def test_footprints_are_fast_and_deterministic() -> None:
    tiles = [TileId(200 + i % 20, 60 + i // 20) for i in range(200)]
    GRID.lonlat_footprint(tiles[0])
    t0 = time.perf_counter()
    one = [GRID.lonlat_footprint(t) for t in tiles]
    per_tile = (time.perf_counter() - t0) / len(tiles)
    assert per_tile < 5e-3, f"{per_tile * 1e3:.2f} ms a tile"
    again = GRID.lonlat_footprints(tiles)
    assert all(a.wkb == b.wkb for a, b in zip(one, again, strict=True))


def test_geojson_output_is_valid_geojson() -> None:
    for tid in ("x211y074", "x361y077", "x000y000"):
        code, out = _show(tid, "--geojson")
        assert code == 0, out
        feat = json.loads(out)
        geom = shape(feat["geometry"])
        assert feat["type"] == "Feature" and feat["id"] == tid and geom.is_valid
        assert geom.geom_type == "Polygon" and shapely.is_ccw(geom.exterior)
        assert feat["bbox"] == pytest.approx(list(geom.bounds))
        assert 0 < feat["properties"]["valid_fraction"] <= 1
        assert all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in geom.exterior.coords)


# --- other CRSs: a tile across the antimeridian, a tile on the pole ----------------------------------
PACIFIC = TileGrid("EPSG:3832", 10, 96000, (0.0, 0.0))  # Mercator centred on 150° E


def test_tile_across_the_antimeridian_is_split_in_two() -> None:
    t = TileId(34, 10)  # x 3 264 000 – 3 360 000 m: 179.3° E to 179.8° W
    fp = PACIFIC.lonlat_footprint(t)
    assert fp.geom_type == "MultiPolygon" and fp.is_valid and len(fp.geoms) == 2
    east, west = sorted(fp.geoms, key=lambda g: -g.bounds[0])
    assert east.bounds[2] == 180.0 and west.bounds[0] == -180.0
    assert east.bounds[1] == west.bounds[1] and east.bounds[3] == west.bounds[3]
    w, _, e, _ = lonlat_bounds(fp)
    assert (w, e) == pytest.approx((179.3210109, -179.8166065), abs=1e-7) and w > e
    assert 180 - w + e + 180 == pytest.approx(96000 / (6378137 * np.pi / 180), rel=1e-6)
    for neighbour in (TileId(33, 10), TileId(35, 10)):
        assert PACIFIC.lonlat_footprint(neighbour).geom_type == "Polygon"
    _covers_samples(PACIFIC, t)
    feat = json.loads(PACIFIC.describe(t, as_geojson=True))
    assert feat["geometry"]["type"] == "MultiPolygon" and shape(feat["geometry"]).is_valid
    assert feat["bbox"][0] > feat["bbox"][2]
    assert "crosses the antimeridian" in PACIFIC.describe(t)


def test_utm_tile_past_its_zone_is_kept_whole_and_split() -> None:
    """Transverse Mercator is invertible well past its zone: such a tile is not clipped to the
    zone's 6° area of use, only split where it crosses 180°."""
    utm = TileGrid("EPSG:32660", 10, 96000, (0.0, 0.0))
    t = TileId(8, 10)
    assert utm.valid_fraction(t) == 1.0
    fp = utm.lonlat_footprint(t)
    assert fp.geom_type == "MultiPolygon" and fp.is_valid
    w, _, e, _ = lonlat_bounds(fp)
    assert 179 < w < 180 and -180 < e < -179
    _covers_samples(utm, t)


@pytest.mark.parametrize("origin", [(-48000.0, -48000.0), (0.0, 0.0)])
def test_polar_tiles(origin: tuple[float, float]) -> None:
    """EPSG:3031 (south polar stereographic): the pole inside a tile, or at four tiles' corner."""
    polar = TileGrid("EPSG:3031", 10, 96000, origin)
    tiles = [TileId(0, 0), TileId(-1, 0), TileId(-1, -1), TileId(0, -1), TileId(3, 4)]
    fps = polar.lonlat_footprints(tiles)
    assert shapely.is_valid(fps).all() and not shapely.is_empty(fps).any()
    b = shapely.bounds(fps)
    if origin[0] < 0:  # x000y000 holds the pole: a cap over every longitude
        assert tuple(b[0]) == pytest.approx((-180, -90, 180, -89.37524), abs=1e-5)
    else:  # the pole is a corner of four tiles, each a quadrant of 90° of longitude
        assert sorted(tuple(np.round(r[[0, 2]])) for r in b[:4]) == [
            (-180, -90),
            (-90, 0),
            (0, 90),
            (90, 180),
        ]
        assert (b[:4, 1] == -90).all()
    for t in tiles:
        _covers_samples(polar, t)
