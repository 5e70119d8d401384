"""Sentinel-2 SCL masking: which observations of a pixel are clear.

``nodata_classes`` (no data, saturated/defective) are invalid as they are. ``cloud_classes``
(cloud shadow, cloud medium/high probability, thin cirrus) form a cloud mask that is cleaned
with a morphological *opening* (drops specks narrower than the disc) and then *dilated* (grows
a safety margin around clouds and shadows), both with discs of the given radius in pixels, as
Digital Earth Africa's GeoMAD does (``[("opening", 2), ("dilation", 5)]``). Snow (11) is valid.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from runner.config import MaskConfig


def disk(radius: int) -> NDArray[np.bool_]:
    """A disc structuring element of the given radius in pixels (``2r+1`` square)."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def cleanup(mask: NDArray[np.bool_], opening: int, dilation: int) -> NDArray[np.bool_]:
    """Opening then dilation of a boolean mask over its last two axes (y, x); pixels outside
    the array count as clear."""
    out = np.empty_like(mask)
    lead = mask.reshape(-1, *mask.shape[-2:])
    flat = out.reshape(-1, *mask.shape[-2:])
    for i in range(lead.shape[0]):
        m = lead[i]
        if opening > 0:
            m = ndimage.binary_opening(m, structure=disk(opening))
        if dilation > 0:
            m = ndimage.binary_dilation(m, structure=disk(dilation))
        flat[i] = m
    return out


def halo(cfg: MaskConfig) -> int:
    """Pixels of context a chunk needs so that chunked cleanup equals whole-array cleanup."""
    return 2 * cfg.opening + cfg.dilation + 1


def clear_mask(scl: da.Array, cfg: MaskConfig) -> da.Array:
    """Lazy boolean (time, y, x) array: True where an observation is clear."""
    cloud = da.isin(scl, np.asarray(cfg.cloud_classes, dtype=scl.dtype))
    if cfg.opening > 0 or cfg.dilation > 0:
        kw = {"opening": cfg.opening, "dilation": cfg.dilation}
        if len(cloud.chunks[1]) == 1 and len(cloud.chunks[2]) == 1:
            # one spatial chunk: no neighbours to borrow from (and map_overlap needs depth <= size)
            cloud = da.map_blocks(cleanup, cloud, dtype=bool, **kw)
        else:
            h = halo(cfg)
            cloud = da.map_overlap(cleanup, cloud, depth={0: 0, 1: h, 2: h}, boundary="none",
                                   dtype=bool, **kw)  # fmt: skip
    bad = da.isin(scl, np.asarray(cfg.nodata_classes, dtype=scl.dtype))
    return ~(bad | cloud)
