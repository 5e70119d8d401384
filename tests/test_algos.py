"""Tests for the numba geomedian/MAD kernels in :mod:`algos` (reference: geomad 1.0.0)."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest
from numpy.typing import NDArray

import algos
from algos.testing import synthetic_stack

geomad = pytest.importorskip("geomad")

S2TS = Path(__file__).resolve().parent / "data" / "s2ts.txt"  # a copy of ../shared/data/s2ts.txt

MADS = ("emad", "smad", "bcmad")


def ref_gm(X: NDArray[np.float32]) -> NDArray[np.float32]:
    return geomad.nangeomedian_pcm(X, maxiters=1000, eps=1e-4, num_threads=2)


def ref_mad(name: str, X: NDArray[np.float32], gm: NDArray[np.float32]) -> NDArray[np.float32]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return getattr(geomad, f"{name}_pcm")(X, gm, num_threads=2)


def objective(X: NDArray[np.float32], gm: NDArray[np.float32]) -> NDArray[np.float64]:
    """Sum over valid observations of ||x_t - m||, float64."""
    d = np.linalg.norm(X.astype(np.float64) - gm[..., None].astype(np.float64), axis=2)
    return np.nansum(d, axis=2)


def check_against_geomad(X: NDArray[np.float32]) -> None:
    ours = algos.nangeomedian_pcm(X, num_threads=2)
    ref = ref_gm(X)
    assert ours.dtype == np.float32 and ours.shape == X.shape[:3]
    nan_ours = np.isnan(ours).any(axis=2)
    nan_ref = np.isnan(ref).any(axis=2)
    np.testing.assert_array_equal(nan_ours, nan_ref)
    ok = ~nan_ref
    if not ok.any():
        return
    # with exactly 2 observations every point of the segment between them is a
    # geomedian (trajectories may legitimately differ): check those by objective only
    unique = ok & ((~np.isnan(X).any(axis=2)).sum(axis=2) != 2)
    if unique.any():
        err = np.linalg.norm(ours[unique] - ref[unique], axis=-1)
        assert np.median(err) <= 1e-5
        assert np.quantile(err, 0.999) <= 5e-4
    f_ours = objective(X, ours)[ok]
    f_ref = objective(X, ref)[ok]
    assert np.all(f_ours <= f_ref * (1 + 1e-6) + 1e-12)
    for name in MADS:
        m_ours = getattr(algos, f"{name}_pcm")(X, ours, num_threads=2)
        m_ref = ref_mad(name, X, ours)  # same geomedian -> isolates the MAD code
        assert m_ours.dtype == np.float32 and m_ours.shape == X.shape[:2]
        np.testing.assert_array_equal(np.isnan(m_ours), np.isnan(m_ref))
        np.testing.assert_allclose(m_ours, m_ref, rtol=1e-5, atol=1e-6, equal_nan=True)
        # and against geomad's full pipeline (its own geomedian)
        m_full = ref_mad(name, X, ref)
        d = np.abs(m_ours - m_full)[unique]
        if d.size == 0:
            continue
        assert np.median(d) <= 1e-5
        assert np.quantile(d, 0.999) <= 5e-4


@pytest.mark.parametrize(
    ("seed", "shape", "mask", "partial"),
    [
        (0, (40, 50, 10, 75), 0.35, 0.0),
        (1, (30, 20, 6, 30), 0.0, 0.0),
        (2, (25, 30, 13, 82), 0.6, 0.0),
        (3, (20, 20, 10, 40), 0.2, 0.05),  # partially-NaN observations
        (4, (16, 33, 4, 7), 0.5, 0.0),  # very few observations
        (5, (10, 10, 3, 120), 0.9, 0.0),  # mostly masked, some pixels empty
    ],
)
def test_random_stacks_match_geomad(
    seed: int, shape: tuple[int, int, int, int], mask: float, partial: float
) -> None:
    ny, nx, nb, nt = shape
    X = synthetic_stack(ny, nx, nb, nt, mask=mask, seed=seed, partial=partial)
    check_against_geomad(X)


def test_negative_reflectance_matches_geomad() -> None:
    X = synthetic_stack(20, 20, 8, 50, seed=11) - np.float32(0.3)
    assert np.nanmin(X) < 0
    check_against_geomad(X)


def load_s2ts() -> NDArray[np.float32]:
    rows = [line.split() for line in S2TS.read_text().splitlines() if line.strip()]
    a = np.array([[float(v) for v in r[1:]] for r in rows], dtype=np.float32)  # (band, time)
    assert a.shape == (13, 82)
    return a


def test_real_s2_pixel_matches_geomad() -> None:
    a = load_s2ts()
    X = a[None, None]
    check_against_geomad(X)
    # geomedian lies within the valid data range, count is the cloud-free dates
    gm = algos.nangeomedian_pcm(X)[0, 0]
    valid = ~np.isnan(a).any(axis=0)
    assert np.all(gm >= np.nanmin(a[:, valid], axis=1) - 1e-6)
    assert np.all(gm <= np.nanmax(a[:, valid], axis=1) + 1e-6)


def test_real_s2_bootstrap_stack_matches_geomad() -> None:
    """Many pixels made of random date subsets (plus a little noise) of the real series."""
    a = load_s2ts()
    rng = np.random.default_rng(7)
    ny, nx, nt = 24, 24, 60
    idx = rng.integers(0, a.shape[1], (ny, nx, nt))
    X = np.moveaxis(a[:, idx], 0, 2).copy()  # (ny, nx, 13, nt)
    X += rng.normal(0, 0.003, X.shape).astype(np.float32)
    check_against_geomad(X.astype(np.float32))


def test_edge_cases() -> None:
    nb, nt = 5, 9
    rng = np.random.default_rng(3)
    X = np.full((1, 6, nb, nt), np.nan, dtype=np.float32)
    # pixel 0: no valid obs
    # pixel 1: exactly one valid obs (others partially NaN)
    X[0, 1, :, 4] = rng.random(nb)
    X[0, 1, :2, 5] = 0.5
    # pixel 2: all observations identical
    X[0, 2] = rng.random((nb, 1))
    # pixel 3: two identical valid obs + NaNs
    X[0, 3, :, 1] = X[0, 3, :, 7] = [0.1, -0.2, 0.3, 0.0, 0.9]
    # pixel 4: the median is an observation (the doubled origin; |R| = sqrt(3) < 2 there),
    # exercises the Vardi-Zhang step
    X[0, 4, :, :5] = 0.0
    X[0, 4, 0, 2] = X[0, 4, 1, 3] = X[0, 4, 2, 4] = 1.0
    # pixel 5: all-zero observations
    X[0, 5] = 0.0
    gm = algos.nangeomedian_pcm(X)
    assert np.isnan(gm[0, 0]).all()
    np.testing.assert_array_equal(gm[0, 1], X[0, 1, :, 4])
    np.testing.assert_array_equal(gm[0, 2], X[0, 2, :, 0])
    np.testing.assert_array_equal(gm[0, 3], X[0, 3, :, 1])
    np.testing.assert_allclose(gm[0, 4], 0.0, atol=1e-3)
    np.testing.assert_allclose(gm, ref_gm(X), atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(gm[0, 5], 0.0)
    for name in MADS:
        m = getattr(algos, f"{name}_pcm")(X, gm)
        assert np.isnan(m[0, 0])
        if name != "smad":
            assert m[0, 1] == 0 and m[0, 2] == 0 and m[0, 3] == 0
        else:
            assert abs(m[0, 1]) < 1e-6 and abs(m[0, 2]) < 1e-6
        ref = ref_mad(name, X, gm)
        np.testing.assert_allclose(m, ref, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_even_count_median_convention() -> None:
    # 4 observations on a line: distances known, median = mean of the middle two
    X = np.zeros((1, 1, 2, 4), dtype=np.float32)
    X[0, 0, 0] = [0.0, 1.0, 3.0, 10.0]
    gm = np.array([[[1.0, 0.0]]], dtype=np.float32)
    e = algos.emad_pcm(X, gm)
    assert e[0, 0] == pytest.approx(np.median([1.0, 0.0, 2.0, 9.0]))
    assert e[0, 0] == pytest.approx(ref_mad("emad", X, gm)[0, 0])


def test_readonly_noncontiguous_float64_input() -> None:
    X = synthetic_stack(12, 14, 6, 30, seed=5)
    big = np.zeros((12, 28, 6, 30), dtype=np.float64)
    big[:, ::2] = X
    view = big[:, ::2]
    view.flags.writeable = False
    assert not view.flags.c_contiguous
    gm = algos.nangeomedian_pcm(view)
    np.testing.assert_allclose(gm, algos.nangeomedian_pcm(X), atol=1e-7, equal_nan=True)
    gro = gm.copy()
    gro.flags.writeable = False
    for name in MADS:
        f = getattr(algos, f"{name}_pcm")
        np.testing.assert_allclose(f(view, gro), f(X, gm), atol=1e-7, equal_nan=True)


def test_num_threads_restored() -> None:
    before = numba.get_num_threads()
    X = synthetic_stack(4, 4, 3, 10, seed=1)
    algos.nangeomedian_pcm(X, num_threads=1)
    algos.emad_pcm(X, algos.nangeomedian_pcm(X), num_threads=1)
    assert numba.get_num_threads() == before


def to_u16(X: NDArray[np.float32], scale: float, offset: float) -> NDArray[np.uint16]:
    """Quantise a float stack to DN, masked observations -> nodata 0 on all bands."""
    dn = np.clip(np.round((np.nan_to_num(X) - offset) / scale), 1, 65535).astype(np.uint16)
    dn[np.broadcast_to(np.isnan(X).any(axis=2, keepdims=True), X.shape)] = 0
    return dn


def u16_to_float(
    cube: NDArray[np.uint16], scale: float, offset: float, nodata: int = 0
) -> NDArray[np.float32]:
    X = cube.astype(np.float32) * np.float32(scale) + np.float32(offset)
    X[np.broadcast_to((cube == nodata).any(axis=2, keepdims=True), X.shape)] = np.nan
    return X


def test_u16_matches_float_path() -> None:
    scale, offset = 1e-4, -0.1
    X = synthetic_stack(37, 23, 10, 50, seed=9)  # odd sizes: partial row blocks
    X[3, 4] = np.nan  # an empty pixel
    cube = to_u16(X, scale, offset)
    cube[5, 6, 2, 7] = 0  # a single band at nodata invalidates that observation
    calls: list[int] = []
    res = algos.geomedian_mads_u16(
        cube, scale=scale, offset=offset, num_threads=2, row_block=8, progress=calls.append
    )
    assert sum(calls) == cube.shape[0] and len(calls) == 5
    Xf = u16_to_float(cube, scale, offset)
    gm = algos.nangeomedian_pcm(Xf, num_threads=2)
    np.testing.assert_array_equal(res.gm, gm)  # bit-identical conversion and trajectory
    for name in MADS:
        np.testing.assert_array_equal(getattr(res, name), getattr(algos, f"{name}_pcm")(Xf, gm))
    assert res.gm.dtype == np.float32 and res.emad.dtype == np.float32
    assert res.count.dtype == np.uint16 and res.iterations.dtype == np.int32
    np.testing.assert_array_equal(res.count, (~np.isnan(Xf).any(axis=2)).sum(axis=2))
    assert np.isnan(res.gm[3, 4]).all() and np.isnan(res.emad[3, 4]) and res.count[3, 4] == 0
    assert res.iterations[3, 4] == 0 and res.iterations.max() > 1


def test_u16_backends_agree() -> None:
    scale, offset = 2.75e-5, -0.2
    X = synthetic_stack(20, 18, 6, 40, seed=12, mask=0.5)
    X[0, 0] = np.nan
    cube = to_u16(X, scale, offset)
    # a non-contiguous, read-only cube is accepted too
    cube_nc = np.zeros((20, 18, 6, 80), dtype=np.uint16)[..., ::2]
    cube_nc[...] = cube
    cube_nc.flags.writeable = False
    a = algos.geomedian_mads_u16(cube_nc, scale=scale, offset=offset, row_block=7)
    b = algos.geomedian_mads_u16(
        cube, scale=scale, offset=offset, backend="geomad", num_threads=2, row_block=64
    )
    np.testing.assert_array_equal(a.count, b.count)
    for name in ("gm", *MADS):
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
        np.testing.assert_allclose(x, y, atol=5e-4, equal_nan=True)
        assert np.nanmedian(np.abs(x - y)) <= 1e-5
    assert (b.iterations == 0).all()


def test_u16_bad_arguments() -> None:
    cube = np.ones((2, 2, 3, 4), dtype=np.uint16)
    with pytest.raises(ValueError, match="backend"):
        algos.geomedian_mads_u16(cube, scale=1e-4, offset=0, backend="nope")
    with pytest.raises(TypeError):
        algos.geomedian_mads_u16(cube.astype(np.int16), scale=1e-4, offset=0)
    try:
        import hdstats  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"hdstats==0\.2\.1"):
            algos.geomedian_mads_u16(cube, scale=1e-4, offset=0, backend="hdstats")


def test_u16_memory_bounded_by_row_block() -> None:
    """No full-size float copy: traced peak ~ result arrays, independent of the cube size."""
    ny, nx, nb, nt = 256, 256, 10, 96  # 120 MiB uint16; a float32 copy would be 240 MiB
    cube = np.zeros((ny, nx, nb, nt), dtype=np.uint16)
    rng = np.random.default_rng(0)
    cube[:, :, :, :4] = rng.integers(500, 3000, (ny, nx, nb, 4), dtype=np.uint16)
    result_bytes = ny * nx * (nb * 4 + 3 * 4 + 2 + 4)
    row_block = 16
    block_f32 = row_block * nx * nb * nt * 4
    for backend, allowed in (("numba", 1 << 20), ("geomad", 4 * block_f32)):
        tracemalloc.start()
        try:
            res = algos.geomedian_mads_u16(
                cube, scale=1e-4, offset=0.0, row_block=row_block, backend=backend, num_threads=2
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        extra = peak - result_bytes
        assert extra < allowed, (backend, extra, allowed)
        assert extra < cube.nbytes // 4  # a full float32 copy would be 2x cube.nbytes
        assert res.count.max() == 4


def test_deterministic_across_threads_and_row_blocks() -> None:
    X = synthetic_stack(23, 17, 7, 33, seed=21)
    a, ia = algos.nangeomedian_pcm(X, num_threads=1, return_iterations=True)
    b, ib = algos.nangeomedian_pcm(X, num_threads=2, return_iterations=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia, ib)
    cube = to_u16(X, 1e-4, 0.0)
    r1 = algos.geomedian_mads_u16(cube, scale=1e-4, offset=0.0, row_block=1, num_threads=1)
    r2 = algos.geomedian_mads_u16(cube, scale=1e-4, offset=0.0, row_block=64, num_threads=2)
    for name in ("gm", *MADS, "count", "iterations"):
        np.testing.assert_array_equal(getattr(r1, name), getattr(r2, name))


def test_maxiters_and_eps_respected() -> None:
    X = synthetic_stack(10, 10, 5, 30, seed=8)
    _, it = algos.nangeomedian_pcm(X, maxiters=3, return_iterations=True)
    assert it.max() <= 3
    _, it_loose = algos.nangeomedian_pcm(X, eps=1e-2, return_iterations=True)
    _, it_tight = algos.nangeomedian_pcm(X, eps=1e-7, return_iterations=True)
    assert it_loose.mean() < it_tight.mean()
    gm = algos.nangeomedian_pcm(X, maxiters=0)
    assert np.isfinite(gm).all()  # the starting point, not garbage


def test_weighted_geomedian_matches_geomad() -> None:
    X = synthetic_stack(20, 25, 6, 30, seed=31)
    w = np.random.default_rng(31).uniform(0.2, 3.0, 30).astype(np.float32)
    ours = algos.nangeomedian_pcm(X, weight=w)
    ref = geomad.nangeomedian_pcm(X, weight=w, num_threads=2)
    err = np.linalg.norm(ours - ref, axis=-1)
    assert np.nanmedian(err) <= 1e-5 and np.nanquantile(err, 0.999) <= 5e-4
    # uniform weights do not change the result; the weighting does
    np.testing.assert_allclose(
        algos.nangeomedian_pcm(X, weight=np.full(30, 2.0)), algos.nangeomedian_pcm(X), atol=1e-6
    )
    assert np.nanmax(np.abs(ours - algos.nangeomedian_pcm(X))) > 1e-3
    with pytest.raises(ValueError, match="weight"):
        algos.nangeomedian_pcm(X, weight=w[:5])
