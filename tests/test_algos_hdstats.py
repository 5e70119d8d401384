"""The hdstats-compatible face of :mod:`algos`: integer input, nodata, argument order.

The properties are those the reference suites check (hdstats 0.2.1 and geomad 1.0.0,
``tests/test_pcm.py``: uint16 MADs with a nodata pixel agree with the float MADs to 4
significant digits, ``int16`` geomedian = float geomedian x 10000, an all-NaN band gives NaN,
read-only input), written here against this implementation, plus element-wise agreement with
geomad on the same input, fixed values known in closed form, hdstats' positional order, and
clear errors instead of silently ignored arguments.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from numpy.typing import NDArray

import algos
from algos.testing import synthetic_stack

geomad = pytest.importorskip("geomad")

MADS = ("emad", "smad", "bcmad")


def mad(name: str, *args: object, **kw: object) -> NDArray[np.float32]:
    return getattr(algos, f"{name}_pcm")(*args, **kw)


def geomad_mad(name: str, *args: object, **kw: object) -> NDArray[np.float32]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return getattr(geomad, f"{name}_pcm")(*args, num_threads=2, **kw)


@pytest.fixture(scope="module")
def data() -> NDArray[np.float32]:
    """Reflectances like the reference suites' ``landchar-small.pkl`` (8 bands, 18 dates),
    no missing values, all positive (so that ``astype(uint16)`` is defined), smaller."""
    return np.clip(synthetic_stack(40, 40, 8, 18, mask=0.0, seed=3), 0.001, None)


@pytest.fixture(scope="module")
def gm(data: NDArray[np.float32]) -> NDArray[np.float32]:
    return algos.nangeomedian_pcm(data, num_threads=2)


def to_dn(X: NDArray[np.float32], dtype: type = np.uint16) -> NDArray[np.integer]:
    """The reference suites' quantisation ``(data * 10000).astype(dtype)``, rounded rather than
    truncated: truncation biases every value by -0.5 DN, which moves this stack's mean EMAD by
    5e-4 relative, past the suites' 4 significant digits."""
    return np.round(X * 10000).astype(dtype)


# --- uint16 input: scaled by 1e-4, 0 is nodata -------------------------------------------------
@pytest.mark.parametrize("name", MADS)
def test_uint16_mads_with_a_nodata_pixel_match_float(
    name: str, data: NDArray[np.float32], gm: NDArray[np.float32]
) -> None:
    """hdstats/geomad ``test_*mad_uint16``: a pixel whose band 0 is nodata at every date."""
    stat = mad(name, data, gm)
    intdata = to_dn(data)
    intdata[1, 1, 0, :] = 0
    intstat = mad(name, intdata, gm, nodata=0)
    np.testing.assert_approx_equal(np.nanmean(stat), np.nanmean(intstat), significant=4)
    assert np.isnan(intstat[1, 1])  # no valid observation left there
    # exactly the float path on the scaled values with NaN for nodata
    Xf = intdata.astype(np.float32) * np.float32(1e-4)
    Xf[1, 1] = np.nan
    np.testing.assert_array_equal(intstat, mad(name, Xf, gm))
    # and geomad's float path on the same numbers
    np.testing.assert_allclose(intstat, geomad_mad(name, Xf, gm), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", MADS)
def test_uint16_mads_match_geomads_uint16_kernels(name: str, data: NDArray[np.float32]) -> None:
    """Without nodata in the stack, geomad's own uint16 MAD kernels give the same numbers
    (with nodata they count a nodata observation, see docs/algos.md; ours leave it out)."""
    intdata = to_dn(data)
    gm = algos.nangeomedian_pcm(intdata) * np.float32(1e-4)  # geomedian in reflectance
    ours = mad(name, intdata, gm)
    np.testing.assert_allclose(ours, geomad_mad(name, intdata, gm), rtol=1e-5, atol=1e-7)
    # offset honoured as geomad's scale/offset keywords are
    ours = mad(name, intdata, gm - np.float32(0.1), scale=1e-4, offset=-0.1)
    ref = geomad_mad(name, intdata, gm - np.float32(0.1), scale=1e-4, offset=-0.1)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_uint16_issue_example_is_reflectance_not_dn(
    data: NDArray[np.float32], gm: NDArray[np.float32]
) -> None:
    """The issue's report: EMAD/BCMAD of a uint16 stack were 3713.86 / 0.99979 (DN against a
    reflectance geomedian) where geomad gives reflectance-scale values."""
    intdata = to_dn(data)
    emad, bcmad = mad("emad", intdata, gm), mad("bcmad", intdata, gm)
    assert 0.005 < np.median(emad) < 0.2 and 0.005 < np.median(bcmad) < 0.3
    np.testing.assert_allclose(emad, geomad_mad("emad", intdata, gm), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bcmad, geomad_mad("bcmad", intdata, gm), rtol=1e-5, atol=1e-7)


def test_integer_geomedian_in_input_units_matches_geomad(data: NDArray[np.float32]) -> None:
    """geomad's integer ``nangeomedian_pcm`` returns the geomedian in the input's units
    (``(m - offset) / scale``); ``test_nangeomedian_fixed``: int16 x 10000 = float x 10000."""
    X = data.copy()
    X[2, 3, :, 5:9] = np.nan  # some observations missing ...
    X[4, 4] = np.nan  # ... and an empty pixel
    gm_f = algos.nangeomedian_pcm(X)
    for dtype, nodata in ((np.uint16, 0), (np.int16, -999)):
        fixed = to_dn(np.nan_to_num(X), dtype)
        fixed[np.broadcast_to(np.isnan(X), X.shape)] = nodata
        ours = algos.nangeomedian_pcm(fixed)  # default nodata: 0 for uint16, -999 for int16
        assert ours.dtype == np.float32 and np.isnan(ours[4, 4]).all()
        np.testing.assert_approx_equal(np.nanmean(ours), np.nanmean(gm_f) * 10000, significant=4)
        ref = geomad.nangeomedian_pcm(fixed, maxiters=1000, eps=1e-4, num_threads=2)
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=2e-3, equal_nan=True)  # DN
        # the same trajectory as the float path on the scaled values
        scaled = fixed.astype(np.float32) * np.float32(1e-4)
        scaled[np.broadcast_to((fixed == nodata).any(axis=2, keepdims=True), X.shape)] = np.nan
        np.testing.assert_allclose(
            ours * np.float32(1e-4), algos.nangeomedian_pcm(scaled), atol=1e-7, equal_nan=True
        )


def test_integer_scale_offset_and_custom_nodata() -> None:
    """scale/offset/nodata of integer input are honoured, as in geomad's ``**kw``."""
    X = synthetic_stack(12, 10, 6, 25, mask=0.3, seed=4)
    scale, offset = 2.75e-5, -0.2
    dn = np.round((np.nan_to_num(X) - offset) / scale).astype(np.uint16)
    dn[np.broadcast_to(np.isnan(X).any(axis=2, keepdims=True), X.shape)] = 65535
    gm = algos.nangeomedian_pcm(dn, nodata=65535, scale=scale, offset=offset)
    ref = geomad.nangeomedian_pcm(
        dn, maxiters=1000, eps=1e-4, num_threads=2, nodata=65535, scale=scale, offset=offset
    )
    np.testing.assert_allclose(gm, ref, rtol=1e-6, atol=2e-3, equal_nan=True)
    refl = gm * np.float32(scale) + np.float32(offset)
    scaled = dn.astype(np.float32) * np.float32(scale) + np.float32(offset)
    scaled[dn == 65535] = np.nan
    for name in MADS:
        ours = mad(name, dn, refl, nodata=65535, scale=scale, offset=offset)
        np.testing.assert_array_equal(ours, mad(name, scaled, refl))


# --- bad data, NaN and nodata on float input ----------------------------------------------------
def test_baddata_all_nan_band_gives_nan(data: NDArray[np.float32], gm: NDArray[np.float32]) -> None:
    """hdstats/geomad ``test_*_baddata``: a band NaN at every date -> NaN there."""
    baddata = data[:3, :3].copy()
    baddata[1, 1, 0, :] = np.nan
    g = algos.nangeomedian_pcm(baddata)
    assert np.isnan(g[1, 1]).all() and np.isfinite(np.delete(g.reshape(9, -1), 4, 0)).all()
    for name in MADS:
        m = mad(name, baddata, gm[:3, :3])
        assert np.isnan(m[1, 1]) and np.isfinite(m).sum() == 8


def test_float_nodata_is_honoured(data: NDArray[np.float32]) -> None:
    """``nodata=-999`` on float input marks missing values as NaN does (hdstats accepts the
    keyword and ignores it)."""
    X = data.copy()
    rng = np.random.default_rng(5)
    hole = rng.random((*X.shape[:2], 1, X.shape[3])) < 0.3
    Xnan = np.where(hole, np.float32(np.nan), X)
    X999 = np.where(hole, np.float32(-999), X)
    X999[0, 0, 2, 3] = np.nan  # NaN stays missing when a nodata value is given
    Xnan[0, 0, 2, 3] = np.nan
    a, ia = algos.nangeomedian_pcm(Xnan, return_iterations=True)
    b, ib = algos.nangeomedian_pcm(X999, nodata=-999, return_iterations=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia, ib)
    for name in MADS:
        np.testing.assert_array_equal(mad(name, Xnan, a), mad(name, X999, a, nodata=-999))
    np.testing.assert_array_equal(a, algos.nangeomedian_pcm(Xnan, nodata=np.nan))


def test_readonly_integer_input(data: NDArray[np.float32]) -> None:
    intdata = to_dn(data)
    ro = intdata.copy()
    ro.setflags(write=False)
    np.testing.assert_array_equal(algos.nangeomedian_pcm(ro), algos.nangeomedian_pcm(intdata))


# --- fixed values known in closed form -----------------------------------------------------------
def test_fixed_values_square() -> None:
    """Four DN points at the corners of a square around (1500, 1500): the geomedian is the
    centre, EMAD the half diagonal, in reflectance with the default scale 1e-4."""
    X = np.zeros((1, 2, 2, 5), dtype=np.uint16)
    X[0, :, 0, :4] = [1000, 2000, 1000, 2000]
    X[0, :, 1, :4] = [1000, 1000, 2000, 2000]
    X[0, 1, :, 4] = 0  # pixel 1: a fifth, nodata observation (ignored)
    X[0, 0, :, 4] = [1500, 1500]  # pixel 0: a fifth observation at the centre
    gm = algos.nangeomedian_pcm(X, eps=1e-9)
    np.testing.assert_allclose(gm, 1500.0, atol=1e-2)
    refl = np.full((1, 2, 2), 0.15, dtype=np.float32)
    emad = algos.emad_pcm(X, refl)
    half_diagonal = np.hypot(0.05, 0.05)
    assert emad[0, 0] == pytest.approx(half_diagonal, rel=1e-6)  # median of 4 x d and a 0
    assert emad[0, 1] == pytest.approx(half_diagonal, rel=1e-6)  # the nodata one left out
    # Bray-Curtis, sum|x - m| / sum|x + m|: 0.1/0.5, 0.1/0.6 twice, 0.1/0.7 (and 0 at the centre)
    np.testing.assert_allclose(algos.bcmad_pcm(X, refl), [[1 / 6, 1 / 6]], rtol=1e-6)
    # SMAD: corners at 1 - cos of their angle to the diagonal, two of each kind
    c = (0.1 * 0.15 + 0.2 * 0.15) / (np.hypot(0.1, 0.2) * np.hypot(0.15, 0.15))
    diag = 0.0  # (1000, 1000) and (2000, 2000) lie on the diagonal
    smad = algos.smad_pcm(X, refl)
    assert smad[0, 1] == pytest.approx(np.median([diag, 1 - c, 1 - c, diag]), abs=1e-7)


def test_fixed_values_one_and_identical_observations() -> None:
    X = np.zeros((1, 3, 3, 6), dtype=np.int16)  # int16: nodata -999 by default, 0 is valid
    X[0, 0] = -999
    X[0, 0, :, 2] = [10, -20, 0]  # exactly one valid observation, negative DNs allowed
    X[0, 1] = np.array([[7], [8], [9]], dtype=np.int16)  # all identical
    X[0, 2] = -999  # none valid
    gm = algos.nangeomedian_pcm(X)
    np.testing.assert_allclose(gm[0, 0], [10, -20, 0], atol=1e-3)  # DN, via float32 scaling
    np.testing.assert_allclose(gm[0, 1], [7, 8, 9], atol=1e-3)
    assert np.isnan(gm[0, 2]).all()
    refl = gm * np.float32(1e-4)
    for name in MADS:
        m = mad(name, X, refl)
        assert abs(m[0, 0]) < 1e-6 and abs(m[0, 1]) < 1e-6 and np.isnan(m[0, 2])


# --- hdstats' positional order; nothing silently ignored -----------------------------------------
def test_positional_order_is_hdstats() -> None:
    params = list(inspect.signature(algos.nangeomedian_pcm).parameters)
    assert params[:6] == ["X", "eps", "maxiters", "num_threads", "nodata", "nocheck"]
    for name in MADS:
        params = list(inspect.signature(getattr(algos, f"{name}_pcm")).parameters)
        assert params[:5] == ["X", "gm", "num_threads", "nocheck", "nodata"]
    X = synthetic_stack(6, 5, 4, 20, mask=0.2, seed=6)
    a, ia = algos.nangeomedian_pcm(X, 1e-7, 3, 1, None, True, return_iterations=True)
    b, ib = algos.nangeomedian_pcm(X, eps=1e-7, maxiters=3, num_threads=1, return_iterations=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia, ib)
    assert ia.max() == 3
    X999 = np.nan_to_num(X, nan=-999)
    np.testing.assert_array_equal(
        algos.emad_pcm(X999, a, 1, False, -999), algos.emad_pcm(X, a, num_threads=1)
    )


def test_bad_arguments_are_refused_clearly() -> None:
    X = synthetic_stack(3, 3, 4, 10, seed=7)
    w = np.ones(10)
    with pytest.raises(TypeError, match=r"weight="):
        algos.nangeomedian_pcm(X, w)  # geomad's order: weight second
    with pytest.raises(TypeError, match="maxiters"):
        algos.nangeomedian_pcm(X, 1e-4, 10.5)
    with pytest.raises(TypeError):
        algos.nangeomedian_pcm(X, foo=1)
    with pytest.raises(ValueError, match="integer X only"):
        algos.nangeomedian_pcm(X, scale=1e-4)
    with pytest.raises(ValueError, match="integer X only"):
        algos.emad_pcm(X, algos.nangeomedian_pcm(X), offset=-0.1)
    dn = to_dn(np.nan_to_num(X))
    with pytest.raises(ValueError, match="nodata must be an integer"):
        algos.nangeomedian_pcm(dn, nodata=np.nan)
    with pytest.raises(ValueError, match="nodata must be an integer"):
        algos.smad_pcm(dn, np.zeros((3, 3, 4)), nodata=-1)
    with pytest.raises(TypeError, match="uint16 or int16"):
        algos.nangeomedian_pcm(dn.astype(np.int32))
    with pytest.raises(ValueError, match="scale"):
        algos.nangeomedian_pcm(dn, scale=0.0)
