"""Each input raster against what its item says, from its header (issue #16): an asset with
another CRS, float32 or int16 data, or a 4×4 raster where the item says otherwise was loaded
silently (exit 0, the outputs changed); now the tile fails naming the item, the asset and what
differs, or with --skip-bad-inputs drops the item and lists it. Real COGs written with rasterio,
real `gmrun run-tile` runs; a clean catalog (and the metadata layouts of Earth Search and
Planetary Computer) passes, and the check reads headers only."""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from runner.common.errors import InputItemError
from runner.planner.catalog import read_items
from runner.worker.asset_checks import check_headers, header_mismatch, read_header
from runner.worker.metrics import bytes_read_so_far
from runner.worker.outputs import TileOutputs
from tests.conftest import Synth, assert_clean_error, gmrun, make_plan, tile_items

NEEDED = ("B04", "SCL")


def _cog(path: Path, data: NDArray[Any], crs: str | None, transform: Any, nodata: Any = 0) -> str:
    """A COG of ``data`` (bands, rows, columns or rows, columns), as the catalogs write them."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    data = data if data.ndim == 3 else data[None]
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "count": data.shape[0],
        "height": data.shape[1],
        "width": data.shape[2],
        "dtype": data.dtype.name,
        "transform": transform,
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
    path.parent.mkdir(parents=True, exist_ok=True)
    with MemoryFile() as mem, mem.open(**profile) as ds:
        ds.write(data)
        with rasterio.Env(GDAL_NUM_THREADS="1"):
            rio_copy(ds, str(path), driver="COG", compress="DEFLATE", blocksize=256)
    return str(path)


def _variant(src_href: str, folder: Path, fault: str) -> tuple[str, str]:
    """A copy of a real asset with one fault, and the text the error must hold."""
    import rasterio

    with rasterio.open(src_href) as src:
        data, crs, tf = src.read(1), src.crs, src.transform
        epsg = crs.to_epsg()
    path = folder / f"{fault}-{Path(src_href).name}"
    if fault == "crs":
        other = epsg + 1 if epsg % 100 < 60 else epsg - 1  # the neighbouring UTM zone
        return _cog(
            path, data, f"EPSG:{other}", tf
        ), f"has CRS EPSG:{other}, the item says EPSG:{epsg}"
    if fault == "float32":
        return _cog(path, data.astype(np.float32), crs, tf), "is float32, the item says uint16"
    if fault == "int16":
        signed = (data.astype(np.int32) - 2000).astype(np.int16)  # negative values
        assert (signed < 0).any()
        return _cog(path, signed, crs, tf), "is int16, the item says uint16"
    assert fault == "4x4"
    h, w = data.shape
    return _cog(path, data[:4, :4], crs, tf), f"is 4×4 px, the item says {h}×{w} (proj:shape)"


FAULTS = ("crs", "float32", "int16", "4x4")


@pytest.mark.slow
def test_assets_that_disagree_with_their_item_are_bad_inputs(
    synth_catalog: Synth, tmp_path: Path
) -> None:
    cfg = synth_catalog.layout.config
    tile = synth_catalog.layout.tiles[0]
    plan = make_plan(synth_catalog, tmp_path / "plan", cfg, tiles=[tile])
    out = TileOutputs.of(plan.config, tile, plan.period, str(tmp_path / "out"))
    args = ("run-tile", "--plan", plan.url, "--tile", str(tile), "--output", str(tmp_path / "out"))
    with tile_items(plan, tile) as items:
        pristine = copy.deepcopy(items)
    victims = {}
    # each fault alone: the tile fails before the load, one line naming the item and asset
    for k, fault in enumerate(FAULTS):
        i = 1 + 2 * k
        href, needle = _variant(pristine[i]["assets"]["B04"]["href"], tmp_path / "bad", fault)
        victims[fault] = (i, href, needle)
        with tile_items(plan, tile) as items:
            items[:] = copy.deepcopy(pristine)
            items[i]["assets"]["B04"]["href"] = href
        proc = gmrun(*args)
        assert_clean_error(
            proc,
            f"input item {pristine[i]['id']}: asset B04 {needle}",
            "fix the catalog or pass --skip-bad-inputs",
        )
        assert "loading" not in proc.stderr, "found before the load"
        assert not out.is_done()
    # all four at once with --skip-bad-inputs: the tile is done without them, and lists them
    with tile_items(plan, tile) as items:
        items[:] = copy.deepcopy(pristine)
        for i, href, _ in victims.values():
            items[i]["assets"]["B04"]["href"] = href
    proc = gmrun(*args, "--skip-bad-inputs")
    assert proc.returncode == 0, proc.stderr
    item = json.loads(Path(out.item_url).read_text())
    ids = [pristine[i]["id"] for i, _, _ in victims.values()]
    assert item["properties"]["gmrun:skipped_inputs"] == ids, "exactly these: no false positive"
    assert set(item["properties"]["gmrun:inputs"]) == {it["id"] for it in pristine} - set(ids)
    logged = [json.loads(ln)["msg"] for ln in proc.stderr.splitlines() if ln.startswith("{")]
    for i, _, needle in victims.values():
        assert f"skipping item {pristine[i]['id']}: asset B04 {needle}" in logged


def test_a_clean_catalog_passes_the_header_check(synth_catalog: Synth) -> None:
    """Every item of the synthetic catalog (proj:epsg, proj:shape, proj:transform and
    raster:bands on each asset, as Earth Search writes them), every band and SCL: nothing
    flagged. Prints what a header costs here."""
    items = list(read_items(str(synth_catalog.result.catalog)))
    needed = (*synth_catalog.layout.config.bands, "SCL")
    t0 = time.perf_counter()
    kept, dropped = check_headers(items, needed, skip_bad_inputs=False)
    seconds = time.perf_counter() - t0
    assert dropped == [] and kept == items
    n = len(items) * len(needed)
    print(f"{n} headers in {seconds:.2f} s: {1000 * seconds / n:.2f} ms per asset")


def _asset(href: str, **fields: Any) -> dict[str, Any]:
    return {
        "href": href,
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        **fields,
    }


def _utm_cog(folder: Path, name: str, res: float, dtype: str = "uint16", **kw: Any) -> str:
    from rasterio.transform import from_origin

    n = int(1200 / res)
    data = (np.arange(n * n).reshape(n, n) % 4000 + 1).astype(dtype)
    return _cog(
        folder / name, data, kw.get("crs", "EPSG:32735"), from_origin(600000, 9800040, res, res)
    )


def test_catalog_metadata_layouts(tmp_path: Path) -> None:
    """The layouts real catalogs use pass; what an item does not declare is not compared, but
    a raster the uint16 cube cannot hold as it is (float, int16), several bands or no CRS is a
    mismatch wherever it comes from."""
    from rasterio.transform import from_origin

    b04, scl = _utm_cog(tmp_path, "B04.tif", 10.0), _utm_cog(tmp_path, "SCL.tif", 20.0, "uint8")
    shape10, tf10 = [120, 120], [10.0, 0.0, 600000.0, 0.0, -10.0, 9800040.0]
    shape20, tf20 = [60, 60], [20.0, 0.0, 600000.0, 0.0, -20.0, 9800040.0]
    earth_search: dict[
        str, Any
    ] = {  # Earth Search v1: proj:epsg on the item, raster:bands per asset
        "id": "es",
        "properties": {"proj:epsg": 32735},
        "assets": {
            "B04": _asset(
                b04,
                **{
                    "proj:shape": shape10,
                    "proj:transform": tf10,
                    "raster:bands": [
                        {
                            "nodata": 0,
                            "data_type": "uint16",
                            "bits_per_sample": 15,
                            "spatial_resolution": 10,
                            "scale": 0.0001,
                            "offset": -0.1,
                        }
                    ],
                },
            ),
            "SCL": _asset(
                scl,
                **{
                    "proj:shape": shape20,
                    "proj:transform": tf20,
                    "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
                },
            ),
        },
    }
    planetary: dict[
        str, Any
    ] = {  # Planetary Computer: no raster:bands, 9-term transforms are allowed too
        "id": "pc",
        "properties": {"proj:epsg": 32735},
        "assets": {
            "B04": _asset(b04, **{"proj:shape": shape10, "proj:transform": [*tf10, 0, 0, 1]}),
            "SCL": _asset(scl, **{"proj:shape": shape20, "proj:transform": tf20}),
        },
    }
    proj_v2: dict[str, Any] = {  # projection v2 / STAC 1.1: proj:code, bands with data_type
        "id": "v2",
        "properties": {"proj:code": "EPSG:32735"},
        "assets": {
            "B04": _asset(b04, **{"proj:shape": shape10, "bands": [{"data_type": "uint16"}]}),
            "SCL": _asset(scl, **{"proj:code": "EPSG:32735", "data_type": "uint8"}),
        },
    }
    bare: dict[str, Any] = {
        "id": "bare",
        "properties": {},
        "assets": {"B04": _asset(b04), "SCL": _asset(scl)},
    }
    good = [earth_search, planetary, proj_v2, bare]
    assert check_headers(good, NEEDED, skip_bad_inputs=False) == (good, [])

    # near-identical numbers are the same (float noise); a pixel's shift is not
    nudged: dict[str, Any] = copy.deepcopy(planetary)
    nudged["assets"]["B04"]["proj:transform"][2] += 1e-6
    assert header_mismatch(read_header(b04), nudged["assets"]["B04"], nudged) is None
    nudged["assets"]["B04"]["proj:transform"][2] += 10
    why = header_mismatch(read_header(b04), nudged["assets"]["B04"], nudged)
    assert why is not None and why.startswith("has transform [10, 0, 600000, 0, -10, 9800040]")

    # the file disagrees with what the catalog declares; or the catalog declares nothing
    cases = {
        "crs": (
            _utm_cog(tmp_path, "z36.tif", 10.0, crs="EPSG:32736"),
            "has CRS EPSG:32736, the item says EPSG:32735",
        ),
        "nocrs": (
            _utm_cog(tmp_path, "nocrs.tif", 10.0, crs=None),
            "has no CRS, the item says EPSG:32735",
        ),
        "float32": (
            _utm_cog(tmp_path, "f32.tif", 10.0, "float32"),
            "is float32, the item says uint16",
        ),
        "int16": (_utm_cog(tmp_path, "i16.tif", 10.0, "int16"), "is int16, the item says uint16"),
        "shape": (
            _utm_cog(tmp_path, "20m.tif", 20.0),
            "is 60×60 px, the item says 120×120 (proj:shape)",
        ),
    }
    for href, needle in cases.values():
        bad: dict[str, Any] = copy.deepcopy(earth_search)
        bad["assets"]["B04"]["href"] = href
        with pytest.raises(
            InputItemError, match="^" + re.escape(f"input item es: asset B04 {needle}; fix the")
        ):
            check_headers([bad], NEEDED, skip_bad_inputs=False)
        assert check_headers([bad, proj_v2], NEEDED, skip_bad_inputs=True) == (
            [proj_v2],
            [("es", f"asset B04 {needle}")],
        )
    three = _cog(
        tmp_path / "rgb.tif",
        np.ones((3, 120, 120), np.uint16),
        "EPSG:32735",
        from_origin(600000, 9800040, 10, 10),
    )
    undeclared = {
        cases["float32"][0]: "is float32; the tile reads uint8 or uint16",
        cases["int16"][0]: "is int16; the tile reads uint8 or uint16",
        cases["nocrs"][0]: "has no CRS",
        three: "has 3 bands, the tile reads single-band assets",
    }
    for href, needle in undeclared.items():
        item: dict[str, Any] = {
            "id": "bare",
            "properties": {},
            "assets": {"B04": _asset(href), "SCL": _asset(scl)},
        }
        why = header_mismatch(read_header(href), item["assets"]["B04"], item)
        assert why is not None and why.startswith(needle), why
    # a header that cannot be read is no verdict here: the load retries it and names it
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    unread: dict[str, Any] = {
        "id": "x",
        "properties": {},
        "assets": {"B04": _asset(str(broken)), "SCL": _asset(scl)},
    }
    assert check_headers([unread], NEEDED, skip_bad_inputs=False) == ([unread], [])


def test_the_check_reads_headers_only(tmp_path: Path) -> None:
    """24 assets of an 8 MiB COG (random uint16, 2048², so no pixel read is small): the check
    reads under 64 KiB of each (``rchar``: every ``read()`` of this process, its threads' too);
    a single 256² block of it is 128 KiB. Prints the cost of a header."""
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    data = rng.integers(1, 65535, (2048, 2048), dtype=np.uint16)
    big = _cog(tmp_path / "big.tif", data, "EPSG:32735", from_origin(600000, 9800040, 10, 10))
    assert Path(big).stat().st_size > 8 * 10**6
    meta = {"proj:shape": [2048, 2048], "raster:bands": [{"data_type": "uint16"}]}
    items = [
        {
            "id": f"i{k}",
            "properties": {"proj:epsg": 32735},
            "assets": {b: _asset(big, **meta) for b in NEEDED},
        }
        for k in range(12)
    ]
    check_headers(items[:1], NEEDED, skip_bad_inputs=False)  # imports and GDAL's first open
    before, t0 = bytes_read_so_far(), time.perf_counter()
    kept, dropped = check_headers(items, NEEDED, skip_bad_inputs=False)
    seconds, read = time.perf_counter() - t0, bytes_read_so_far() - before
    assert kept == items and dropped == []
    n = len(items) * len(NEEDED)
    assert 0 < read < n * 64 * 1024, f"{read} bytes read for {n} headers: pixels were read"
    print(f"{n} headers: {read / n / 1024:.1f} KiB and {1000 * seconds / n:.2f} ms per asset")
