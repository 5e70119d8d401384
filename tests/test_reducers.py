"""The algorithm seam: a second reducer (the per-band median) end to end, and what follows the
reducer (its output bands, STAC assets, product name, memory estimate, config errors)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from runner.common.config import parse_config
from runner.common.errors import UserInputError
from runner.common.logs import tile_logger
from runner.planner.sizing import estimate_memory, size_tile
from runner.reducers import REDUCERS, reducer_for
from runner.worker.load import load_cube
from runner.worker.outputs import TileOutputs, output_bands
from tests.conftest import Synth, assert_clean_error, gmrun, make_plan, tile_cogs, with_changes


def test_median_reducer_owns_its_bands_product_and_size() -> None:
    cfg = parse_config({"algorithm": {"name": "median"}})
    assert cfg.product.name == "median_s2_annual"
    names = list(output_bands(cfg))
    assert names == [*cfg.bands, "count"]
    geo = parse_config({})
    assert list(output_bands(geo)) == [*geo.bands, "smad", "emad", "bcmad", "count"]
    # the memory estimate follows the reducer's result bytes per pixel
    n, nb = 9600, len(cfg.bands)
    diff = estimate_memory(n, n, nb, 75, 1024, REDUCERS["geomedian"]) - estimate_memory(
        n, n, nb, 75, 1024, REDUCERS["median"]
    )
    assert diff == n * n * (3 * 4 + 4)  # three float32 MADs and the int32 iteration counts
    assert size_tile(cfg, 75).cube_bytes == size_tile(geo, 75).cube_bytes
    # an explicit product name is kept
    named = parse_config({"algorithm": {"name": "median"}, "product": {"name": "ndvi_x"}})
    assert named.product.name == "ndvi_x" and reducer_for(named).name == "median"


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"algorithm": {"name": "nope"}}, "unknown algorithm 'nope'"),
        ({"algorithm": {"name": "median", "backend": "geomad"}}, "backend numba"),
    ],
)
def test_bad_algorithm_is_one_line(doc: dict, needle: str) -> None:
    with pytest.raises(UserInputError, match=needle) as e:
        parse_config(doc, "gmrun.yaml")
    assert str(e.value).startswith("gmrun.yaml: algorithm")
    assert "\n" not in str(e.value)


def test_bad_algorithm_in_a_config_file_via_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "gmrun.yaml"
    cfg.write_text("algorithm: {name: percentile}\n")
    proc = gmrun("plan", "--config", str(cfg), "--tiles", "x000y000", "--year", "2023", "--dry-run")
    assert_clean_error(proc, "algorithm", "unknown algorithm 'percentile'")


def _dn_median(cube: np.ndarray, nodata: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: per band, numpy.nanmedian over the observations whose bands are all valid,
    rounded half to even into uint16 DNs (nodata where none); and the count of those."""
    clear = (cube != nodata).all(axis=2)  # (y, x, t)
    f = np.where(clear[:, :, None, :], cube.astype(np.float64), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels without a clear observation
        med = np.nanmedian(f, axis=-1)  # (y, x, b)
    dn = np.where(np.isnan(med), nodata, np.rint(np.nan_to_num(med))).astype(np.uint16)
    return dn, clear.sum(axis=-1).astype(np.uint16)


@pytest.mark.slow
def test_median_tile_end_to_end(synth_catalog: Synth, tmp_path: Path) -> None:
    """`gmrun run-tile` with algorithm.name: median writes the median's COGs (band medians equal
    numpy.nanmedian of the loaded cube, exact count), a STAC item listing exactly them, under the
    median's product name; in row bands the COGs are byte-identical."""
    cfg = with_changes(
        synth_catalog.layout.config,
        algorithm={"name": "median"},
        product={"name": "median_s2_annual"},
        output={"location": str(tmp_path / "out")},
    )
    tile = synth_catalog.layout.tiles[1]
    plan = make_plan(synth_catalog, tmp_path / "plan", cfg, tiles=[tile])
    proc = gmrun("run-tile", "--plan", plan.url, "--tile", str(tile))
    assert proc.returncode == 0, proc.stderr
    out = TileOutputs.of(cfg, tile, plan.period, str(tmp_path / "out"))
    assert out.is_done()
    assert "/median_s2_annual/" in out.item_url
    item = json.loads(Path(out.item_url).read_text())
    assert list(item["assets"]) == [
        *(b.name for b in reducer_for(cfg).output_bands(cfg)),
        "thumbnail",
    ]
    assert item["properties"]["gmrun:algorithm"]["name"] == "median"
    assert "iterations_mean" not in item["properties"]["gmrun:metrics"]

    cube = load_cube(plan.items(tile), cfg, plan.grid.geobox(tile), tile_logger(tile))
    want_dn, want_count = _dn_median(cube.data, cfg.input.nodata)
    for b, band in enumerate(cfg.bands):
        with rasterio.open(out.band_url(band)) as src:
            assert src.dtypes[0] == "uint16" and src.nodata == cfg.input.nodata
            np.testing.assert_array_equal(src.read(1), want_dn[:, :, b], err_msg=band)
    with rasterio.open(out.band_url("count")) as src:
        count = src.read(1)
    np.testing.assert_array_equal(count, want_count)
    assert count.max() > 0 and math.isclose(
        item["properties"]["gmrun:metrics"]["clear_observations_mean"], float(count.mean())
    )

    whole = tile_cogs(out)
    banded = gmrun(
        "run-tile",
        "--plan",
        plan.url,
        "--tile",
        str(tile),
        "--row-bands",
        "3",
        "--output",
        str(tmp_path / "banded"),
    )
    assert banded.returncode == 0, banded.stderr
    assert "band 3/3" in banded.stderr
    assert tile_cogs(TileOutputs.of(cfg, tile, plan.period, str(tmp_path / "banded"))) == whole


@pytest.mark.slow
def test_demo_with_the_median_reducer(tmp_path: Path) -> None:
    proc = gmrun(
        "demo", str(tmp_path / "demo"), "--tile-px", "96", "--dates", "6", "--algorithm", "median"
    )
    assert proc.returncode == 0, proc.stderr
    tifs = sorted((tmp_path / "demo" / "out" / "median_s2_annual").rglob("*.tif"))
    assert len(tifs) == 4 * 11  # 10 bands + count, 4 tiles
    assert not any("emad" in p.name for p in tifs)
    assert (tmp_path / "demo" / "mosaic.png").stat().st_size > 0
    bad = gmrun("demo", str(tmp_path / "demo2"), "--algorithm", "nope")
    assert bad.returncode == 2 and "nope" in bad.stderr and "Traceback" not in bad.stderr
