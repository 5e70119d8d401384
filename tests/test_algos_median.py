"""Band-wise median composite (algos.median) against numpy.nanmedian, bit for bit."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest
from numpy.typing import NDArray

import algos
from algos.testing import synthetic_stack

S2TS = Path(__file__).resolve().parent / "data" / "s2ts.txt"  # a copy of ../shared/data/s2ts.txt


def load_s2ts() -> NDArray[np.float32]:
    """The real Sentinel-2 pixel series: (13 bands, 82 dates) reflectance, NaN = cloudy.

    (The same file as tests/test_algos.py reads; not imported from there, because that
    module skips itself without geomad.)
    """
    a = np.loadtxt(S2TS, usecols=range(1, 83), dtype=np.float32)  # first column: band name
    assert a.shape == (13, 82)
    return a


def clear_mask(X: NDArray[np.floating]) -> NDArray[np.bool_]:
    """(y, x, time): observations whose bands are all non-NaN."""
    return ~np.isnan(X).any(axis=2)


def ref_median(X: NDArray[np.float32]) -> NDArray[np.float32]:
    """np.nanmedian over time of the clear observations only (an observation with any NaN band
    is dropped from every band)."""
    Xm = np.where(clear_mask(X)[:, :, None, :], X, np.float32(np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        return np.nanmedian(Xm, axis=-1)


def assert_bits_equal(a: NDArray[np.float32], b: NDArray[np.float32]) -> None:
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    np.testing.assert_array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32))


def u16_to_float(cube: NDArray[np.uint16], nodata: int = 0) -> NDArray[np.float32]:
    X = cube.astype(np.float32)
    X[np.broadcast_to((cube == nodata).any(axis=2, keepdims=True), X.shape)] = np.nan
    return X


def random_stack(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """Random float32 stack: mixed magnitudes, ties, whole-observation and single-band NaN,
    and some pixels without any clear observation."""
    ny, nx, _nb, nt = shape
    X = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 4)
    tie = rng.random(shape) < 0.3
    X[tie] = np.round(X[tie] * 0.1)  # ties, including +-0.0
    X = X.astype(np.float32)
    X = np.where(rng.random((ny, nx, 1, nt)) < rng.uniform(0, 0.7), np.nan, X)
    X = np.where(rng.random(shape) < 0.03, np.nan, X)  # one band invalidates the observation
    X[rng.random((ny, nx)) < 0.05] = np.nan  # empty pixels
    return X.astype(np.float32)


@pytest.mark.parametrize("nt", [1, 2, 3, 8, 13, 40, 81])
def test_random_stacks_match_nanmedian(nt: int) -> None:
    rng = np.random.default_rng(nt)
    for _ in range(3):
        X = random_stack(rng, (9, 11, 4, nt))
        got = algos.nanmedian_pcm(X)
        assert_bits_equal(got, ref_median(X))
        n = clear_mask(X).sum(axis=2)
        assert np.isnan(got[n == 0]).all() and not np.isnan(got[n > 0]).any()
        if nt >= 3:
            assert (n % 2 == 0).any() and (n % 2 == 1).any()


def test_per_pixel_1d_nanmedian() -> None:
    """Also equal to the 1-d np.nanmedian of each pixel's selected values."""
    rng = np.random.default_rng(1)
    X = random_stack(rng, (6, 7, 3, 30))
    got = algos.nanmedian_pcm(X)
    for i, j in np.ndindex(6, 7):
        clear = clear_mask(X)[i, j]
        if not clear.any():
            continue
        for b in range(3):
            want = np.float32(np.nanmedian(X[i, j, b, clear]))
            assert got[i, j, b].view(np.uint32) == want.view(np.uint32)


def test_median_convention() -> None:
    X = np.full((1, 7, 2, 6), np.nan, dtype=np.float32)
    X[0, 0, 0, :4] = [4, 1, 3, 2]  # even: mean of the middle two
    X[0, 1, 0, :4] = [9, 2, 1, 2]  # even, repeated middle value
    X[0, 2, 0, :3] = [7, -1, 3]  # odd
    X[0, 3, 0, :1] = [5]  # single observation
    X[0, 4, 0, :2] = [1, np.float32(1) + np.float32(2**-23)]  # float32 rounding of (lo+hi)/2
    X[0, 5, 0, :1] = [-0.0]  # zero medians are +0.0, as numpy's
    X[0, 6, 0, :4] = [-0.0, 3, -0.0, -1]
    X[:, :, 1] = X[:, :, 0] * 2
    X[0, 0, 1, 3] = np.nan  # band 1 cloudy at t=3 -> drops t=3 from band 0 too
    got = algos.nanmedian_pcm(X)
    assert got[0, 0].tolist() == [np.median([4, 1, 3]), 6.0]
    assert got[0, 1, 0] == 2.0 and got[0, 2, 0] == 3.0 and got[0, 3, 0] == 5.0
    assert got[0, 5:].tolist() == [[0.0, 0.0]] * 2 and not np.signbit(got[0, 5:]).any()
    assert_bits_equal(got, ref_median(X))


def test_real_s2_series() -> None:
    a = load_s2ts()  # (13, 82), 33 dates cloudy in every band
    clear = ~np.isnan(a).any(axis=0)
    # the single real pixel
    m = algos.nanmedian_pcm(a[None, None])[0, 0]
    for b in range(13):
        assert m[b].view(np.uint32) == np.float32(np.nanmedian(a[b, clear])).view(np.uint32)
    # a small cube of random date subsets (odd and even clear counts, some all cloudy)
    rng = np.random.default_rng(3)
    ny, nx, nt = 12, 10, 40
    idx = rng.integers(0, a.shape[1], (ny, nx, nt))
    idx[0, 0] = rng.choice(np.flatnonzero(~clear), nt)  # only cloudy dates
    X = np.ascontiguousarray(np.moveaxis(a[:, idx], 0, 2))  # (ny, nx, 13, nt)
    got = algos.nanmedian_pcm(X)
    assert_bits_equal(got, ref_median(X))
    assert np.isnan(got[0, 0]).all()
    # as DN (offset so negative reflectances stay > nodata), through the uint16 path
    dn = np.round((np.nan_to_num(X) + 0.1) * 1e4).astype(np.uint16)
    dn[np.broadcast_to(np.isnan(X), X.shape)] = 0
    res = algos.median_u16(dn, row_block=5)
    assert_bits_equal(res.median, algos.nanmedian_pcm(u16_to_float(dn)))
    np.testing.assert_array_equal(res.count, clear_mask(X).sum(axis=2))
    assert res.count[0, 0] == 0


@pytest.mark.parametrize("nodata", [0, 65535])
def test_u16_matches_float_path(nodata: int) -> None:
    rng = np.random.default_rng(nodata)
    ny, nx, nb, nt = 37, 23, 5, 31  # odd sizes: partial row blocks
    cube = rng.integers(1, 65535, (ny, nx, nb, nt), dtype=np.uint16)
    cube[rng.random((ny, nx, nb, nt)) < 0.2] = rng.integers(1, 100)  # ties
    cube = np.where(rng.random((ny, nx, 1, nt)) < 0.4, np.uint16(nodata), cube)
    cube[5, 6, 2, 7] = nodata  # a single band at nodata invalidates that observation
    cube[3, 4] = nodata  # an empty pixel
    calls: list[int] = []
    res = algos.median_u16(cube, nodata=nodata, num_threads=2, row_block=8, progress=calls.append)
    assert calls == [8, 8, 8, 8, 5]
    Xf = u16_to_float(cube, nodata)
    assert_bits_equal(res.median, algos.nanmedian_pcm(Xf))
    assert_bits_equal(res.median, ref_median(Xf))
    assert res.median.dtype == np.float32 and res.count.dtype == np.uint16
    assert res.median.shape == (ny, nx, nb) and res.count.shape == (ny, nx)
    np.testing.assert_array_equal(res.count, clear_mask(Xf).sum(axis=2))
    assert res.count[3, 4] == 0 and np.isnan(res.median[3, 4]).all()
    assert res.count[5, 6] == clear_mask(Xf)[5, 6].sum() and not clear_mask(Xf)[5, 6, 7]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.count = res.count  # type: ignore[misc]


def test_deterministic_across_threads_and_row_blocks() -> None:
    before = numba.get_num_threads()
    X = synthetic_stack(23, 17, 7, 33, seed=21, partial=0.01)
    a = algos.nanmedian_pcm(X, num_threads=1)
    b = algos.nanmedian_pcm(X, num_threads=2)
    assert_bits_equal(a, b)
    cube = np.round(np.nan_to_num(X, nan=0.0) * 1e4).astype(np.uint16)
    calls1: list[int] = []
    r1 = algos.median_u16(cube, row_block=1, num_threads=1, progress=calls1.append)
    calls2: list[int] = []
    r2 = algos.median_u16(cube, row_block=64, num_threads=2, progress=calls2.append)
    assert calls1 == [1] * 23 and calls2 == [23]
    assert_bits_equal(r1.median, r2.median)
    np.testing.assert_array_equal(r1.count, r2.count)
    assert numba.get_num_threads() == before


def test_readonly_noncontiguous_input() -> None:
    rng = np.random.default_rng(5)
    X = random_stack(rng, (12, 14, 6, 30))
    want = algos.nanmedian_pcm(X)
    # strided float64 view, read-only (float64 holding float32 values converts exactly)
    big = np.zeros((12, 28, 6, 30), dtype=np.float64)
    big[:, ::2] = X
    view = big[:, ::2]
    view.flags.writeable = False
    assert not view.flags.c_contiguous
    assert_bits_equal(algos.nanmedian_pcm(view), want)
    # transposed float32 view of a (time, band, x, y) array
    Xt = np.ascontiguousarray(X.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    assert not Xt.flags.c_contiguous
    assert_bits_equal(algos.nanmedian_pcm(Xt), want)
    # read-only contiguous float32
    ro = X.copy()
    ro.flags.writeable = False
    assert_bits_equal(algos.nanmedian_pcm(ro), want)
    # uint16: read-only contiguous and read-only strided cubes
    cube = rng.integers(0, 4, (12, 14, 6, 30), dtype=np.uint16)  # many nodata zeros, ties
    ref = algos.median_u16(cube)
    cro = cube.copy()
    cro.flags.writeable = False
    cnc = np.zeros((12, 14, 6, 60), dtype=np.uint16)[..., ::2]
    cnc[...] = cube
    cnc.flags.writeable = False
    for c in (cro, cnc):
        res = algos.median_u16(c, row_block=5)
        assert_bits_equal(res.median, ref.median)
        np.testing.assert_array_equal(res.count, ref.count)
    assert_bits_equal(ref.median, ref_median(u16_to_float(cube)))


def test_empty_shapes() -> None:
    assert algos.nanmedian_pcm(np.zeros((0, 3, 2, 5), np.float32)).shape == (0, 3, 2)
    m = algos.nanmedian_pcm(np.zeros((2, 3, 4, 0), np.float32))
    assert m.shape == (2, 3, 4) and np.isnan(m).all()
    calls: list[int] = []
    res = algos.median_u16(np.zeros((0, 3, 2, 5), np.uint16), progress=calls.append)
    assert res.median.shape == (0, 3, 2) and res.count.shape == (0, 3) and calls == []
    res = algos.median_u16(np.ones((2, 3, 0, 5), np.uint16))  # no bands: every date clear
    assert res.median.shape == (2, 3, 0) and (res.count == 5).all()


def test_bad_arguments() -> None:
    X = np.zeros((2, 2, 3, 4), dtype=np.float32)
    cube = np.ones((2, 2, 3, 4), dtype=np.uint16)
    with pytest.raises(ValueError, match="4-d"):
        algos.nanmedian_pcm(X[0])
    with pytest.raises(ValueError, match="floating-point"):
        algos.nanmedian_pcm(cube)
    with pytest.raises(ValueError, match="4-d"):
        algos.median_u16(cube[..., 0])
    with pytest.raises(ValueError, match="uint16"):
        algos.median_u16(X)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint16"):
        algos.median_u16(cube.astype(np.int16))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="row_block"):
        algos.median_u16(cube, row_block=0)
    for bad in (-1, 65536):
        with pytest.raises(ValueError, match="nodata"):
            algos.median_u16(cube, nodata=bad)
