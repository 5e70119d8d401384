"""The geomedian reducer: geometric median + EMAD/SMAD/BCMAD + count (the GeoMAD product).

The numbers come from :func:`algos.geomedian_mads_u16`, which reads the uint16 cube one row
block at a time (no float copy of it); see :mod:`algos` for the maths and references.

Units, as odc-algo's ``geomedian_with_mads`` (the odc-stats / Digital Earth Africa GeoMAD path,
``odc/algo/_geomedian.py``) writes them, so that the two products are interchangeable: the
geomedian bands in the input's digital numbers (uint16, the input's scale/offset); SMAD and
BCMAD unitless; EMAD by default in the input's digital numbers too, i.e. the reflectance
distance divided by ``input.scale`` (DE Africa's product lists EMAD's range as 0–31623 =
√10 × 10000), the COG's scale giving reflectance back; ``algorithm.emad_units: reflectance``
writes the reflectance distance itself. ``algorithm.aux_names`` renames the MAD and count bands
(odc-stats' ``aux_names``: ``SMAD``, ``EMAD``, ``BCMAD``, ``COUNT`` in DE Africa's product).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from runner.common.threads import pool_threads
from runner.reducers.base import OutputBand, Progress, clear_count_metrics, reflectance_bands

if TYPE_CHECKING:
    from algos import GeomadResult
    from runner.common.config import RunConfig

#: The MAD bands, in file order.
MAD_BANDS: tuple[str, ...] = ("smad", "emad", "bcmad")
#: The bands ``algorithm.aux_names`` may rename (odc-stats' ``aux_names`` keys).
AUX_BANDS: tuple[str, ...] = (*MAD_BANDS, "count")
_MAD_DESCRIPTIONS = {
    "smad": "spectral median absolute deviation: median of 1 - cos(angle to the geomedian)",
    "emad": "Euclidean median absolute deviation: median distance to the geomedian",
    "bcmad": "Bray-Curtis median absolute deviation from the geomedian",
}
COUNT_BAND = OutputBand(
    "count", "uint16", None, "count", "clear observations per pixel", resampling="nearest"
)


def emad_band(config: RunConfig, name: str = "emad") -> OutputBand:
    """The EMAD band in ``algorithm.emad_units``: ``dn`` stores distance / ``input.scale`` (the
    COG's scale, offset 0, gives reflectance back), ``reflectance`` the distance itself."""
    what = _MAD_DESCRIPTIONS["emad"]
    if config.algorithm.emad_units == "reflectance":
        return OutputBand(name, "float32", math.nan, "1", f"{what} (reflectance)")
    return OutputBand(
        name,
        "float32",
        math.nan,
        "1",
        f"{what} (in the input's digital numbers: x {config.input.scale:g} = reflectance)",
        scale=config.input.scale,
        offset=0.0,
    )


def to_dn(gm: NDArray[np.float32], scale: float, offset: float, nodata: int) -> NDArray[np.uint16]:
    """Reflectance back to uint16 digital numbers (NaN → nodata; valid DNs clipped to >= 1)."""
    dn = np.rint((gm.astype(np.float64) - offset) / scale)
    out = np.clip(np.nan_to_num(dn, nan=0), 1, 65535).astype(np.uint16)
    out[np.isnan(gm)] = nodata
    return out


class GeomedianMads:
    """Geomedian of each input band (uint16 DNs, the input's scale and offset), the three MADs
    (float32, NaN without observations) and the clear-observation count."""

    name = "geomedian"
    product_family = "geomedian"
    default_product = "gm_s2_annual"
    backends: tuple[str, ...] = ("numba", "geomad", "hdstats")
    aux_bands = AUX_BANDS

    def output_bands(self, config: RunConfig) -> tuple[OutputBand, ...]:
        """The geomedian of each input band, SMAD, EMAD, BCMAD and the count, in file order,
        named as ``algorithm.aux_names`` says."""
        names = config.algorithm.aux_names
        refl = reflectance_bands(config, "geometric median")
        mads = tuple(
            emad_band(config, names.get(m, m))
            if m == "emad"
            else OutputBand(names.get(m, m), "float32", math.nan, "1", _MAD_DESCRIPTIONS[m])
            for m in MAD_BANDS
        )
        count = dataclasses.replace(COUNT_BAND, name=names.get("count", "count"))
        return (*refl, *mads, count)

    def result_bytes(self, ny: int, nx: int, n_bands: int) -> int:
        """The float32 geomedian of each band, three float32 MADs, the uint16 count and the int32
        iteration counts."""
        return ny * nx * (n_bands * 4 + 3 * 4 + 2 + 4)

    def reduce(
        self, cube: NDArray[np.uint16], config: RunConfig, progress: Progress
    ) -> GeomadResult:
        from algos import geomedian_mads_u16

        alg, inp = config.algorithm, config.input
        return geomedian_mads_u16(
            cube,
            scale=inp.scale,
            offset=inp.offset,
            nodata=inp.nodata,
            eps=alg.eps,
            maxiters=alg.maxiters,
            num_threads=pool_threads(alg.num_threads),
            row_block=alg.row_block,
            backend=alg.backend,
            progress=progress,
        )

    def layers(
        self, result: GeomadResult, config: RunConfig
    ) -> Iterator[tuple[OutputBand, NDArray[Any]]]:
        inp = config.input
        bands = self.output_bands(config)
        nb = len(config.bands)
        for b, band in enumerate(bands[:nb]):
            yield band, to_dn(result.gm[:, :, b], inp.scale, inp.offset, inp.nodata)
        for m, band in zip(MAD_BANDS, bands[nb:-1], strict=True):
            mad = getattr(result, m)
            if m == "emad" and band.scale is not None:
                # odc-algo: emad *= 1 / scale (float32 x float32(1/scale), as NumPy does it there)
                mad = mad * np.float32(1 / band.scale)
            yield band, mad
        yield bands[-1], result.count

    def metrics(self, result: GeomadResult) -> dict[str, Any]:
        iters = result.iterations[result.count > 0]
        return {
            **clear_count_metrics(result.count),
            "iterations_mean": float(iters.mean()) if iters.size else 0.0,
            "iterations_max": int(iters.max()) if iters.size else 0,
        }
