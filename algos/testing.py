"""The standard synthetic reflectance stack of the algos tests and benchmark."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def synthetic_stack(
    ny: int,
    nx: int,
    nb: int = 10,
    nt: int = 75,
    mask: float = 0.35,
    outliers: float = 0.15,
    seed: int = 0,
    partial: float = 0.0,
) -> NDArray[np.float32]:
    """A float32 (y, x, band, time) stack in reflectance units: a per-pixel spectrum
    (0.02–0.5) + 0.02 noise, ``outliers`` of observations brightened by 0.3–0.7 (clouds),
    ``mask`` of observations NaN in every band, and ``partial`` of single values NaN."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.02, 0.5, (ny, nx, nb, 1))
    X = base + rng.normal(0.0, 0.02, (ny, nx, nb, nt))
    bright = rng.random((ny, nx, 1, nt)) < outliers
    X = np.where(bright, X + rng.uniform(0.3, 0.7, (ny, nx, 1, nt)), X)
    X = np.where(rng.random((ny, nx, 1, nt)) < mask, np.nan, X)
    if partial:
        X = np.where(rng.random(X.shape) < partial, np.nan, X)
    return X.astype(np.float32)
