"""The ``deafrica`` preset against odc-stats' ``gm_s2_annual`` path (odc-algo's
``geomedian_with_mads``), on one synthetic tile held in memory.

The reference is odc-stats' ``StatsGMS2`` (``odc/stats/plugins/gm.py``) spelled out with the
odc-algo calls it makes: ``native_transform`` (SCL "no data" → bad; cloud shadows, cloud
medium/high probability and thin cirrus → ``mask_cleanup`` with opening 2 then dilation 5 → bad;
``erase_bad``) and ``reduce`` (``geomedian_with_mads`` with scale 1e-4, offset -1e-4,
maxiters 1000, its default eps, ``reshape_strategy="mem"``). Ours is the worker's own mask
(:func:`runner.worker.mask.clear_mask`, in chunks with halos as the worker runs it) and the
geomedian reducer's reduce and layers under ``preset: deafrica``. Targets (issue #14): count
exact, geomedian within 1 DN at p99.9, MADs within 1e-4 relative at p99.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray

from runner.common.config import PRESETS, parse_config, preset_data
from runner.common.errors import UserInputError
from runner.reducers import reducer_for

odc_algo = pytest.importorskip("odc.algo")

#: DE Africa's Sentinel-2 L2A SCL flags (digitalearthafrica/config, s2_l2a_c1.odc-product.yaml)
SCL_VALUES = {
    0: "no data",
    1: "saturated or defective",
    2: "dark area pixels",
    3: "cloud shadows",
    4: "vegetation",
    5: "bare soils",
    6: "water",
    7: "unclassified",
    8: "cloud medium probability",
    9: "cloud high probability",
    10: "thin cirrus",
    11: "snow or ice",
}
BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: columns of the scene where every observation is the same clear one
IDENTICAL = slice(-3, None)


@dataclass(frozen=True)
class Scene:
    dn: NDArray[np.uint16]  #: (time, band, y, x)
    scl: NDArray[np.uint8]  #: (time, y, x)


def _disc(ny: int, nx: int, cy: float, cx: float, r: float) -> NDArray[np.bool_]:
    y, x = np.ogrid[:ny, :nx]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def synthetic_scene(ny: int = 112, nx: int = 104, nt: int = 36, seed: int = 14) -> Scene:
    """A year over one small tile: a surface of smooth fields and noise, with clouds and their
    shadows (discs of radius 3–14 px), cloud specks the opening removes, thin cirrus, a swath
    edge of SCL "no data" (DN 0), saturated pixels, snow and an all-clear pixel column."""
    rng = np.random.default_rng(seed)
    nb = len(BANDS)
    yy, xx = np.mgrid[:ny, :nx]
    base = np.stack(
        [900 + 300 * b + 600 * np.sin(xx / (9 + b)) * np.cos(yy / (13 + 2 * b)) for b in range(nb)]
    )  # (band, y, x), DN
    # the seasons change the spectrum (band by band, out of phase), not only the brightness
    season = 1 + 0.2 * np.sin(2 * np.pi * np.arange(nt)[:, None] / nt + 0.7 * np.arange(nb))
    dn = base[None] * season[:, :, None, None] + rng.normal(0, 80, (nt, nb, ny, nx))
    scl = rng.choice(np.array([4, 5, 6], np.uint8), (nt, ny, nx))
    for t in range(nt):
        for _ in range(rng.integers(0, 4)):  # clouds, each with its shadow
            cy, cx, r = rng.uniform(0, ny), rng.uniform(0, nx), rng.uniform(3, 14)
            cloud = _disc(ny, nx, cy, cx, r)
            shadow = _disc(ny, nx, cy + 9, cx - 7, r) & ~cloud
            scl[t][cloud] = rng.choice([8, 9])
            dn[t][:, cloud] += rng.uniform(2500, 6000)
            scl[t][shadow] = 3
            dn[t][:, shadow] *= 0.45
        for _ in range(rng.integers(0, 12)):  # specks: opened away, so they stay valid
            cy, cx = rng.integers(0, ny), rng.integers(0, nx)
            scl[t, cy, cx] = 9
            dn[t, :, cy, cx] += 1500
        if t % 5 == 2:  # thin cirrus over a band of rows
            r0 = rng.integers(0, ny - 20)
            scl[t, r0 : r0 + 20] = 10
            dn[t][:, r0 : r0 + 20] += 400
        if t % 7 == 3:  # snow: valid
            scl[t, :, :10] = 11
            dn[t][:, :, :10] = 7000
        if t % 4 == 1:  # a swath edge: no data
            edge = xx > nx * rng.uniform(0.4, 0.9) - yy * 0.3
            scl[t][edge] = 0
            dn[t][:, edge] = 0
        sat = rng.random((ny, nx)) < 0.002  # saturated/defective: valid for DE Africa
        scl[t][sat] = 1
    dn[:, :, :, IDENTICAL] = base[None, :, :, IDENTICAL]  # identical clear observations
    scl[:, :, IDENTICAL] = 4
    scl[:, 40:44, 50:56] = 0  # never observed: nodata
    dn = np.clip(np.rint(dn), 0, 10000)
    dn[np.broadcast_to((scl == 0)[:, None], dn.shape)] = 0
    return Scene(dn.astype(np.uint16), scl)


def odc_stats_gm_s2(scene: Scene) -> dict[str, NDArray]:
    """odc-stats' ``StatsGMS2.native_transform`` + ``reduce``, with the odc-algo calls they make."""
    import dask
    import dask.array as da
    import xarray as xr
    from odc.algo import enum_to_bool, erase_bad, geomedian_with_mads, mask_cleanup

    nt, _, ny, nx = scene.dn.shape
    coords = {"time": np.arange(nt), "y": 10.0 * np.arange(ny), "x": 10.0 * np.arange(nx)}
    dims = ("time", "y", "x")
    xx = xr.Dataset(
        {
            b: xr.DataArray(
                da.from_array(scene.dn[:, i], chunks=(1, -1, -1)), dims=dims, attrs={"nodata": 0}
            )
            for i, b in enumerate(BANDS)
        },
        coords=coords,
    )
    scl = xr.DataArray(
        da.from_array(scene.scl, chunks=(1, -1, -1)),
        dims=dims,
        coords=coords,
        attrs={
            "nodata": 0,
            "flags_definition": {"qa": {"bits": list(range(8)), "values": SCL_VALUES}},
        },
    )
    bad = enum_to_bool(scl, ("no data",))
    clouds = ("cloud shadows", "cloud medium probability", "cloud high probability", "thin cirrus")
    bad = (
        mask_cleanup(enum_to_bool(scl, clouds), mask_filters=[("opening", 2), ("dilation", 5)])
        | bad
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # its Dataset.apply
        xx = erase_bad(xx, bad)
    scale = 1 / 10_000
    gm = geomedian_with_mads(
        xx,
        maxiters=1000,
        num_threads=1,
        scale=scale,
        offset=-1 * scale,
        reshape_strategy="mem",
        out_chunks=(-1, -1, -1),
        work_chunks=(400, 400),
        compute_count=True,
        compute_mads=True,
    ).rename({"smad": "SMAD", "emad": "EMAD", "bcmad": "BCMAD", "count": "COUNT"})
    with (
        dask.config.set(scheduler="threads", num_workers=2),
        warnings.catch_warnings(),
        np.errstate(all="ignore"),
    ):
        warnings.simplefilter("ignore", RuntimeWarning)  # geomad's nanmedian of empty pixels
        out = gm.compute()
    return {k: out[k].values for k in out.data_vars}


def gmrun_deafrica(scene: Scene) -> dict[str, NDArray]:
    """The worker's mask and the geomedian reducer under ``preset: deafrica``."""
    import dask.array as da

    from runner.worker.mask import clear_mask

    config = parse_config({"preset": "deafrica", "algorithm": {"num_threads": 2}}, "test")
    clear = clear_mask(da.from_array(scene.scl, chunks=(4, 48, 48)), config.mask).compute()
    cube = np.where(clear[:, None], scene.dn, np.uint16(config.input.nodata))
    cube = np.ascontiguousarray(cube.transpose(2, 3, 1, 0))  # (y, x, band, time)
    reducer = reducer_for(config)
    result = reducer.reduce(cube, config, lambda n: None)
    return {band.name: data for band, data in reducer.layers(result, config)}


@pytest.fixture(scope="module")
def both() -> tuple[dict[str, NDArray], dict[str, NDArray]]:
    scene = synthetic_scene()
    return gmrun_deafrica(scene), odc_stats_gm_s2(scene)


def test_same_bands_dtypes_and_count(both: tuple[dict, dict]) -> None:
    ours, ref = both
    assert list(ours) == [*BANDS, "SMAD", "EMAD", "BCMAD", "COUNT"]
    assert set(ours) == set(ref)
    np.testing.assert_array_equal(ours["COUNT"], ref["COUNT"])
    count = ours["COUNT"]
    assert count.min() == 0 and count.max() == 36, "empty and all-clear pixels both present"
    for b in BANDS:
        assert ours[b].dtype == ref[b].dtype == np.uint16


def test_geomedian_within_one_dn(both: tuple[dict, dict]) -> None:
    ours, ref = both
    valid = ours["COUNT"] > 0
    diff = np.stack([np.abs(ours[b].astype(np.int32) - ref[b].astype(np.int32)) for b in BANDS])
    d = diff[:, valid]
    print(
        f"geomedian |ours - odc| DN: median {np.median(d)}, p99.9 {np.quantile(d, 0.999)}, max {d.max()}"
    )
    assert np.quantile(d, 0.999) <= 1
    for b in BANDS:  # nodata where there is no observation, in both
        assert (ours[b][~valid] == 0).all() and (ref[b][~valid] == 0).all()


@pytest.mark.parametrize("name", ["SMAD", "EMAD", "BCMAD"])
def test_mads_within_1e4_relative(both: tuple[dict, dict], name: str) -> None:
    """Relative to odc-algo's value, except where every observation is the same: there the
    geomedian is that observation, ours exactly (MADs 0, to 2e-16), odc-algo's to the rounding of its
    float32 weighted mean (EMAD 6e-4 DN, SMAD and BCMAD 3e-8), compared in absolute terms."""
    ours, ref = both
    np.testing.assert_array_equal(np.isnan(ours[name]), np.isnan(ref[name]))
    assert np.isnan(ours[name][ours["COUNT"] == 0]).all()
    same = np.zeros(ours[name].shape, bool)
    same[:, IDENTICAL] = True
    assert np.abs(ours[name][same]).max() <= 1e-15  # SMAD: 1 - cos, cos in float64
    assert np.abs(ref[name][same]).max() <= (1e-3 if name == "EMAD" else 1e-7)
    valid = (ours["COUNT"] > 0) & ~same
    a, b = ours[name][valid].astype(np.float64), ref[name][valid].astype(np.float64)
    rel = np.abs(a - b) / np.abs(b)
    print(
        f"{name} (median {np.median(b):.3g}) relative |ours - odc|: median {np.median(rel):.1e}, "
        f"p99 {np.quantile(rel, 0.99):.1e}, max {rel.max():.1e}"
    )
    assert np.quantile(rel, 0.99) <= 1e-4
    if name == "EMAD":  # in DN, as odc-algo writes it: a reflectance distance x 10000
        assert 30 < np.median(a) < 3000


# --- the preset itself ---------------------------------------------------------------------------
def test_preset_holds_odc_stats_settings() -> None:
    c = parse_config({"preset": "deafrica"}, "gmrun.yaml")
    assert c.preset == "deafrica" and "deafrica" in PRESETS
    assert c.product.name == "gm_s2_annual" and c.bands == BANDS
    assert c.mask.band == "SCL" and c.mask.nodata_classes == (0,)
    assert c.mask.cloud_classes == (3, 8, 9, 10) and (c.mask.opening, c.mask.dilation) == (2, 5)
    assert (c.input.scale, c.input.offset, c.input.nodata) == (1e-4, -1e-4, 0)
    assert c.input.groupby == "solar_day" and c.input.resampling == "bilinear"
    assert (c.algorithm.eps, c.algorithm.maxiters) == (1e-5, 1000)  # 0.1 * scale; 1000
    assert c.algorithm.emad_units == "dn"
    names = [b.name for b in reducer_for(c).output_bands(c)]
    assert names == [*BANDS, "SMAD", "EMAD", "BCMAD", "COUNT"]  # the product's measurements
    assert (c.grid.crs, c.grid.resolution, c.grid.tile_size) == ("EPSG:6933", 10, 96_000)
    # the plan embeds the parsed configuration: parsing it again gives the same one
    assert parse_config(c.model_dump(mode="json"), "plan.json") == c


def test_preset_keys_are_overridden_by_the_file() -> None:
    c = parse_config({"preset": "deafrica", "mask": {"dilation": 3}, "bands": ["B04"]}, "y")
    assert c.mask.dilation == 3 and c.mask.nodata_classes == (0,) and c.bands == ("B04",)
    assert set(preset_data("deafrica")) <= set(c.model_dump())


def test_unknown_preset_is_a_one_line_error() -> None:
    with pytest.raises(
        UserInputError, match=r"^gmrun.yaml: preset: unknown preset 'dea': use one of deafrica$"
    ):
        parse_config({"preset": "dea"}, "gmrun.yaml")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "plan",
            "--preset",
            "nope",
            "--region",
            "africa",
            "--year",
            "2023",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --preset: unknown preset 'nope': use one of deafrica"
    ]


def test_emad_units_switch() -> None:
    """Default EMAD in DN (odc-algo's units) with the COG scale giving reflectance; the switch
    writes reflectance."""
    dn = parse_config({}, "x")
    refl = parse_config({"algorithm": {"emad_units": "reflectance"}}, "x")
    e_dn = next(b for b in reducer_for(dn).output_bands(dn) if b.name == "emad")
    e_refl = next(b for b in reducer_for(refl).output_bands(refl) if b.name == "emad")
    assert (e_dn.scale, e_dn.offset) == (1e-4, 0.0) and "digital numbers" in e_dn.description
    assert e_refl.scale is None and "reflectance" in e_refl.description
    from algos import GeomadResult

    res = GeomadResult(
        gm=np.full((1, 2, 10), 0.1, np.float32),
        emad=np.array([[0.0638, np.nan]], np.float32),
        smad=np.zeros((1, 2), np.float32),
        bcmad=np.zeros((1, 2), np.float32),
        count=np.ones((1, 2), np.uint16),
        iterations=np.ones((1, 2), np.int32),
    )
    got = {b.name: a for b, a in reducer_for(dn).layers(res, dn)}
    assert got["emad"][0, 0] == pytest.approx(638.0) and np.isnan(got["emad"][0, 1])
    got = {b.name: a for b, a in reducer_for(refl).layers(res, refl)}
    assert got["emad"][0, 0] == np.float32(0.0638)
