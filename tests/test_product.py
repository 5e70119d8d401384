"""The product as catalogs, GDAL and browsers see it: valid STAC, self-describing COGs, the run
assembled (``gmrun collect``: collection, VRT mosaics, quick-look, status map, report)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio

from runner.common.config import parse_config
from runner.fanout.local import TileRun, record_runs
from runner.planner.grid import TileGrid, TileId
from runner.planner.period import Period
from runner.planner.plan import Plan
from runner.product.mosaic import MosaicExtent
from runner.product.quicklook import quicklook_bytes_bound, quicklook_rgba
from runner.product.sentinel2 import rgb_bands, spectral_band
from runner.product.stac import EXTENSIONS
from runner.reducers import OutputBand, reducer_for
from runner.worker.outputs import TileOutputs, cog_bytes
from tests.conftest import DemoRun, gmrun
from tests.stac_validation import declared_extensions, validate


def _product(demo: DemoRun) -> Path:
    (folder,) = (demo.folder / "out").glob("*/*/collection.json")
    return folder.parent


def _items(demo: DemoRun) -> list[Path]:
    items = sorted(_product(demo).rglob("*.stac-item.json"))
    assert len(items) == 4
    return items


def test_every_item_and_the_collection_validate_offline(demo_run: DemoRun) -> None:
    assert set(EXTENSIONS.values()) <= declared_extensions()
    for path in _items(demo_run):
        doc = json.loads(path.read_text())
        checked = validate(doc, str(path))
        assert set(doc["stac_extensions"]) <= set(checked), path
        # links that resolve from wherever the folder is: relative, to a file that exists
        rels = {ln["rel"]: ln["href"] for ln in doc["links"]}
        assert {"collection", "parent", "root", "self"} <= set(rels)
        assert (path.parent / rels["collection"]).resolve() == _product(
            demo_run
        ) / "collection.json"
        for key, asset in doc["assets"].items():
            assert asset["href"].startswith("./"), key
            assert (path.parent / asset["href"]).stat().st_size == asset["file:size"], key
        red = [
            a
            for a in doc["assets"].values()
            if a.get("eo:bands", [{}])[0].get("common_name") == "red"
        ]
        assert [a["href"].rsplit("_", 1)[1] for a in red] == ["B04.tif"]
        sw = doc["properties"]["processing:software"]
        assert {"gmrun", "gdal", "odc-stac", "numba"} <= set(sw)
        assert doc["assets"]["thumbnail"]["roles"] == ["thumbnail"]
    coll_path = _product(demo_run) / "collection.json"
    coll = json.loads(coll_path.read_text())
    validate(coll, str(coll_path))
    hrefs = sorted(ln["href"] for ln in coll["links"] if ln["rel"] == "item")
    assert [(coll_path.parent / h).resolve() for h in hrefs] == _items(demo_run)
    (bbox,) = coll["extent"]["spatial"]["bbox"]
    for path in _items(demo_run):
        b = json.loads(path.read_text())["bbox"]
        assert bbox[0] <= b[0] and bbox[1] <= b[1] and b[2] <= bbox[2] and b[3] <= bbox[3]


def test_a_broken_item_fails_the_validation(demo_run: DemoRun) -> None:
    """The check can fail: a wrong type in an extension's field is caught, and so is an
    extension whose schema is not held here (never fetched)."""
    from pystac.errors import STACValidationError

    doc = json.loads(_items(demo_run)[0].read_text())
    doc["assets"]["B02"]["file:size"] = "big"
    with pytest.raises(STACValidationError):
        validate(doc)
    doc = json.loads(_items(demo_run)[0].read_text())
    doc["stac_extensions"].append("https://stac-extensions.github.io/sar/v1.0.0/schema.json")
    with pytest.raises(Exception, match="sar"):
        validate(doc)


def test_cogs_describe_themselves(demo_run: DemoRun) -> None:
    item = json.loads(_items(demo_run)[0].read_text())
    for key, asset in item["assets"].items():
        if key == "thumbnail":
            continue
        with rasterio.open(_items(demo_run)[0].parent / asset["href"]) as src:
            (raster,) = asset["raster:bands"]
            assert src.descriptions == (asset["title"],), key
            assert src.descriptions[0], key
            assert src.units == (raster["unit"],), key
            assert src.scales == (raster.get("scale", 1.0),), key
            assert src.offsets == (raster.get("offset", 0.0),), key


def test_odc_stac_loads_the_outputs_by_common_name(demo_run: DemoRun) -> None:
    import odc.stac
    import pystac

    path = _items(demo_run)[0]
    item = pystac.Item.from_file(str(path))
    ds = odc.stac.load([item], bands=["red"], chunks={})
    with rasterio.open(path.parent / item.assets["B04"].href) as src:
        np.testing.assert_array_equal(ds["red"].isel(time=0).values, src.read(1))


def test_the_mosaic_of_each_band_equals_the_tiles(demo_run: DemoRun) -> None:
    product = _product(demo_run)
    plan = Plan.load(str(demo_run.folder / "plan"))
    bands = reducer_for(plan.config).output_bands(plan.config)
    vrts = sorted((product / "mosaic").glob("*.vrt"))
    assert len(vrts) == len(bands)
    ext = MosaicExtent.of([tp.tile for tp in plan.tiles], plan.grid.tile_pixels)
    for band in (bands[2], bands[-2], bands[-1]):  # B04, a MAD, count
        (vrt,) = (v for v in vrts if v.stem.endswith("_" + band.name))
        with rasterio.open(vrt) as src:
            assert src.shape == ext.shape and src.crs.to_epsg() == 6933
            assert src.descriptions == (band.description,)
            whole = src.read(1)
        for tp in plan.tiles:
            out = TileOutputs.of(plan.config, tp.tile, plan.period)
            r, c = ext.offset(tp.tile)
            with rasterio.open(out.band_url(band.name)) as t:
                assert t.transform.c == src.transform.c + c * plan.grid.resolution
                n = plan.grid.tile_pixels
                np.testing.assert_array_equal(whole[r : r + n, c : c + n], t.read(1))
    if shutil.which("gdal_translate"):  # Debian's GDAL (3.6 on bookworm) opens it as well
        vrt = next(v for v in vrts if v.stem.endswith("_B04"))
        info = subprocess.run(["gdalinfo", str(vrt)], capture_output=True, text=True, check=True)
        assert "Size is 192, 192" in info.stdout
        tif = product / "B04-translated.tif"
        subprocess.run(["gdal_translate", "-q", str(vrt), str(tif)], check=True)
        with rasterio.open(tif) as a, rasterio.open(vrt) as b:
            np.testing.assert_array_equal(a.read(1), b.read(1))
        tif.unlink()


def test_the_report_loads_in_chromium(demo_run: DemoRun) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    report = _product(demo_run) / "report.html"
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == [], console
    dom = proc.stdout
    assert 'data-images="4"' in dom and 'data-images-loaded="4"' in dom, dom[:400]
    for name in ("status.png", "quicklook.png", "runtime.png", "memory.png", "collection.json"):
        assert name in dom


def test_collect_reports_failed_tiles_and_is_rerunnable(demo_run: DemoRun, tmp_path: Path) -> None:
    plan = Plan.load(str(demo_run.folder / "plan"))
    product = _product(demo_run)
    before = (product / "collection.json").read_bytes()
    victim = plan.tiles[0].tile
    out = TileOutputs.of(plan.config, victim, plan.period)
    item = Path(out.item_url)
    saved = item.read_bytes()
    record = demo_run.folder / "plan" / "runs" / "local.json"
    kept = record.read_bytes()
    try:
        item.unlink()  # no done marker, and its last local run failed
        record_runs(plan, [TileRun(victim, "failed", 3.0, 2, "asset B04 unreadable: HTTP 404")])
        proc = gmrun("collect", "--plan", str(demo_run.folder / "plan"))
        assert proc.returncode == 0, proc.stderr
        assert "3 done, 1 failed" in proc.stderr, proc.stderr
        coll = json.loads((product / "collection.json").read_text())
        assert sum(ln["rel"] == "item" for ln in coll["links"]) == 3
        rows = (product / "tiles.csv").read_text().splitlines()
        assert any(r.startswith(f"{victim},failed,") and "HTTP 404" in r for r in rows), rows
        assert "asset B04 unreadable" in (product / "report.html").read_text()
    finally:
        item.write_bytes(saved)
        record.write_bytes(kept)
    again = gmrun("collect", "--plan", str(demo_run.folder / "plan"))
    assert again.returncode == 0, again.stderr
    assert "4 done" in again.stderr
    assert (product / "collection.json").read_bytes() == before


def test_quicklook_of_12x12_tiles_stays_within_its_memory_bound(tmp_path: Path) -> None:
    """144 tiles of 256 px (each a constant reflectance, growing with its index) read at 42 px a
    tile from their overviews: the canvas is the only large allocation, and each tile lands in
    its place with its own brightness."""
    cfg = parse_config(
        {"grid": {"tile_size": 2560.0}, "output": {"location": str(tmp_path / "out")}}
    )
    grid = TileGrid.from_config(cfg.grid)
    period = Period.parse("2023")
    band = OutputBand("B04", "uint16", 0, "1", "test", scale=1e-4, offset=0.0)
    outs = []
    for iy in range(12):
        for ix in range(12):
            tile = TileId(100 + ix, 50 + iy)
            out = TileOutputs.of(cfg, tile, period)
            value = 500 + 10 * (iy * 12 + ix)
            data = np.full((256, 256), value, np.uint16)
            cog = cog_bytes(data, grid.geobox(tile), band)
            for b in ("B04", "B03", "B02"):
                Path(out.band_url(b)).parent.mkdir(parents=True, exist_ok=True)
                Path(out.band_url(b)).write_bytes(cog)
            outs.append(out)
    max_px = 512
    tracemalloc.start()
    rgba = quicklook_rgba(outs, ("B04", "B03", "B02"), 256, max_px=max_px)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    p = max_px // 12
    assert rgba.shape == (12 * p, 12 * p, 4)
    assert peak <= quicklook_bytes_bound(max_px), (peak, quicklook_bytes_bound(max_px))
    # north up: the brightest tile (last, top right) in the top-right corner, the darkest bottom left
    assert rgba[0, -1, 0] > rgba[p, -1, 0] > rgba[-1, 0, 0]
    assert (rgba[..., 3] == 255).all()


def test_band_names_and_common_names() -> None:
    assert spectral_band("B04").common_name == "red"  # type: ignore[union-attr]
    assert spectral_band("nir08").id == "B8A"  # type: ignore[union-attr]
    assert spectral_band("b2").id == "B02"  # type: ignore[union-attr]
    assert spectral_band("emad") is None
    assert rgb_bands(("B02", "B03", "B04", "B08")) == ("B04", "B03", "B02")
    assert rgb_bands(("red", "green", "blue")) == ("red", "green", "blue")
    assert rgb_bands(("B08", "B11")) is None
