"""The report's scatter plots, checked on their pixels, and the tick arithmetic under them."""

from __future__ import annotations

import io
import math
import random
import time

import numpy as np
import pytest
from PIL import Image

from runner.product._draw import fmt_number, nice_range, ticks
from runner.product.charts import IDENTITY, MAX_LABELS, POINT, scatter_png

KW = {"title": "runtime vs observations", "xlabel": "observations", "ylabel": "runtime (s)"}


def _img(png: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG"
    return np.asarray(im.convert("RGB")).astype(int)


def _near(a: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    return np.abs(a - np.array(colour)).sum(axis=2) <= tol


def _bluish(a: np.ndarray) -> np.ndarray:
    """Pixels of a point: blue well above red (whatever their translucency)."""
    return (a[..., 2] - a[..., 0] > 25) & (a[..., 2] > 120)


@pytest.mark.parametrize(
    ("lo", "hi", "want"),
    [
        (0, 1, ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]),
        (17, 3600, ["0", "1000", "2000", "3000", "4000"]),
        (0.1, 0.13, ["0.10", "0.11", "0.12", "0.13"]),
        (0, 12.5, ["0", "2.5", "5.0", "7.5", "10.0", "12.5"]),
        (3, 3, ["2.6", "2.8", "3.0", "3.2", "3.4"]),  # equal values: widened by 10 %
        (0, 0, ["-1.0", "-0.5", "0", "0.5", "1.0"]),
        (1.2e7, 3e7, ["1e+07", "1.5e+07", "2e+07", "2.5e+07", "3e+07"]),
    ],
)
def test_nice_ticks(lo: float, hi: float, want: list[str]) -> None:
    start, stop, step = nice_range(lo, hi)
    assert start <= min(lo, hi) and stop >= max(lo, hi) and step > 0
    assert [fmt_number(v, step) for v in ticks(start, stop, step)] == want


def test_size_axes_and_points() -> None:
    x = [10.0, 20.0, 30.0, 40.0]
    y = [100.0, 180.0, 330.0, 400.0]
    a = _img(scatter_png(x, y, **KW, size=(500, 300)))
    assert a.shape == (300, 500, 3)
    dark = (a.sum(axis=2) < 200).sum()
    assert dark > 500  # frame, ticks, labels
    blobs = _bluish(a)
    ys, xs = np.nonzero(blobs)
    assert 4 * 40 <= blobs.sum() <= 4 * 120  # four points of radius 4
    # the points climb left to right: the lowest x has the largest row (lowest on screen)
    left, right = xs < np.median(xs), xs >= np.median(xs)
    assert ys[left].mean() > ys[right].mean()


def test_no_points_one_point_equal_values_and_nans() -> None:
    empty = _img(scatter_png([], [], **KW))
    assert empty.shape == (420, 640, 3) and not _bluish(empty).any()
    one = _img(scatter_png([3.0], [3.0], **KW))
    _, xs = np.nonzero(_bluish(one))
    assert len(xs) > 20
    # one point sits in the middle of its ±10 % range: the plot's centre
    plot = np.nonzero((one.sum(axis=2) < 150).any(axis=0))[0]
    assert abs(xs.mean() - (plot.min() + plot.max()) / 2) < 40
    same = _img(scatter_png([5.0] * 50, [2.0] * 50, **KW))
    assert _bluish(same).sum() > 20
    nan = [1.0, math.nan, 3.0, math.inf]
    with_nan = _img(scatter_png(nan, [1.0, 2.0, 3.0, 4.0], **KW))
    clean = _img(scatter_png([1.0, 3.0], [1.0, 3.0], **KW))
    bottom = slice(-20, None)
    assert (with_nan[bottom] != clean[bottom]).any()  # "2 points without a finite value…"
    assert _bluish(with_nan).sum() == _bluish(clean).sum()


def test_identity_line_runs_corner_to_corner() -> None:
    planned = [4.0, 8.0, 8.0, 16.0]
    rss = [3.1, 6.0, 9.5, 12.0]
    a = _img(
        scatter_png(
            planned,
            rss,
            title="memory",
            xlabel="planned memory (GiB)",
            ylabel="peak RSS (GiB)",
            identity_line=True,
        )
    )
    red = _near(a, IDENTITY, 60)
    assert red[:70].sum() > 20  # the "y = x" key, top left
    red[:70] = False
    ys, xs = np.nonzero(red)
    assert len(xs) > 300
    assert np.corrcoef(xs, -ys)[0, 1] > 0.99  # one straight rising line
    span_x, span_y = np.ptp(xs), np.ptp(ys)
    assert span_x > 400 and abs(span_x - span_y) / span_x < 0.45  # same range on both axes
    without = _img(scatter_png(planned, rss, **KW))
    assert _near(without, IDENTITY, 60).sum() < 20


def test_labels_when_few_points_only() -> None:
    x, y = [1.0, 2.0, 3.0], [1.0, 4.0, 9.0]
    names = ["x210y074", "x211y074", "x212y074"]
    bare, named = scatter_png(x, y, **KW), scatter_png(x, y, **KW, labels=names)
    assert (_img(bare) != _img(named)).any(axis=2).sum() > 100
    n = MAX_LABELS + 1
    many = [float(i) for i in range(n)]
    assert scatter_png(many, many, **KW) == scatter_png(many, many, **KW, labels=["t"] * n)
    with pytest.raises(ValueError, match="as many"):
        scatter_png(x, y[:2], **KW)
    with pytest.raises(ValueError, match="as many"):
        scatter_png(x, y, **KW, labels=names[:1])


def test_thousands_of_points_fast_and_translucent() -> None:
    rnd = random.Random(0)
    obs = [rnd.randint(20, 300) for _ in range(5000)]
    secs = [30 + 4 * o * rnd.uniform(0.8, 1.3) for o in obs]
    t0 = time.perf_counter()
    png = scatter_png(obs, secs, **KW)
    assert time.perf_counter() - t0 < 3
    a = _img(png)
    blue = _bluish(a)
    assert blue.sum() > 5000
    assert not _near(a, POINT, 10).all(axis=None)  # translucent: not all solid POINT colour
    assert (a == 255).all(axis=2).sum() > 0.3 * a.shape[0] * a.shape[1]  # not a blue blob
