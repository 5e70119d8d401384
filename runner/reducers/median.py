"""The median reducer: a per-band median composite + count.

For each band, the median of its values over the pixel's clear observations (those whose
bands are all valid, as the geomedian counts them; NumPy's convention: the mean of the two
middle values for an even count), from :func:`algos.median_u16`, which reads the uint16 cube
one row block at a time. Written as uint16 DNs (rounded half to even) with the input's
scale and offset, so its bands read like the geomedian's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from runner.common.threads import pool_threads
from runner.reducers.base import OutputBand, Progress, clear_count_metrics, reflectance_bands
from runner.reducers.geomedian import COUNT_BAND

if TYPE_CHECKING:
    from algos import MedianResult
    from runner.common.config import RunConfig


class MedianComposite:
    """Per-band median of each input band (uint16 DNs) and the clear-observation count."""

    name = "median"
    product_family = "median"
    default_product = "median_s2_annual"
    backends: tuple[str, ...] = ("numba",)

    def output_bands(self, config: RunConfig) -> tuple[OutputBand, ...]:
        refl = reflectance_bands(config, "median")
        return (*refl, COUNT_BAND)

    def result_bytes(self, ny: int, nx: int, n_bands: int) -> int:
        """The float32 median of each band (in DN, halves kept) and the uint16 count."""
        return ny * nx * (n_bands * 4 + 2)

    def reduce(
        self, cube: NDArray[np.uint16], config: RunConfig, progress: Progress
    ) -> MedianResult:
        from algos import median_u16

        alg = config.algorithm
        return median_u16(
            cube,
            nodata=config.input.nodata,
            num_threads=pool_threads(alg.num_threads),
            row_block=alg.row_block,
            progress=progress,
        )

    def layers(
        self, result: MedianResult, config: RunConfig
    ) -> Iterator[tuple[OutputBand, NDArray[Any]]]:
        bands = self.output_bands(config)
        nodata = config.input.nodata
        for b, band in enumerate(bands[:-1]):
            m = result.median[:, :, b]
            dn = np.where(np.isnan(m), nodata, np.rint(np.nan_to_num(m)))
            yield band, dn.astype(np.uint16)
        yield bands[-1], result.count

    def metrics(self, result: MedianResult) -> dict[str, Any]:
        return clear_count_metrics(result.count)
