"""A true-colour quick-look PNG of a whole run, read from the COGs' overviews.

Memory is bounded whatever the region's size: the picture is at most ``max_px`` on its long edge,
each tile gets ``p = max_px // (tiles across)`` pixels (at least 1, at most the tile's), and each
tile band is read straight at ``p × p`` — GDAL picks the COG overview nearest above that size, so
a 9600 px tile read at 34 px decodes a 300 px overview, not the tile. What is held: the canvas
(3 × float32 per pixel, plus its uint8 RGBA: 16 B per pixel, 64 MiB at 2048 px), one tile band
at ``p × p``, the stretch's sample and strips (:func:`quicklook_bytes_bound`), plus GDAL's block
cache (``GDAL_CACHEMAX``).

Colours: a 2–98 % stretch over (a sample of) the whole picture's valid pixels (one stretch for all tiles, so no
seams), gamma 1/1.6; pixels without data are transparent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from runner.common import store
from runner.product.mosaic import MosaicExtent
from runner.worker.outputs import TileOutputs

#: the longest edge of a quick-look, pixels
QUICKLOOK_PX = 2048
#: pixels sampled for the stretch's percentiles
_SAMPLE = 65_536


def quicklook_bytes_bound(max_px: int = QUICKLOOK_PX) -> int:
    """The most a quick-look allocates at once, bytes: its canvas and picture (16 B a pixel)
    plus 8 MiB (the percentile sample, one strip of the stretch, one tile read)."""
    return 16 * max_px * max_px + 8 * 2**20


def _read_at(url: str, size: int) -> NDArray[np.float32]:
    """One band of a COG at ``size × size`` (its overviews; average within the chosen one),
    nodata as NaN."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(url) as src:
        a = src.read(1, out_shape=(size, size), resampling=Resampling.average, masked=True)
    return np.ma.filled(a.astype(np.float32), np.nan)


def quicklook_rgba(
    outputs: Sequence[TileOutputs],
    bands: tuple[str, str, str],
    tile_px: int,
    max_px: int = QUICKLOOK_PX,
    progress: Callable[[int], None] | None = None,
) -> NDArray[np.uint8]:
    """RGBA uint8 of the tiles' ``bands`` (red, green, blue) placed by grid position, north up;
    ``progress(1)`` after each tile."""
    ext = MosaicExtent.of([o.tile for o in outputs], tile_px)
    across = max(ext.x1 - ext.x0 + 1, ext.y1 - ext.y0 + 1)
    p = max(1, min(tile_px, max_px // across))
    small = MosaicExtent(ext.x0, ext.x1, ext.y0, ext.y1, p)
    canvas = np.full((*small.shape, 3), np.nan, dtype=np.float32)
    for o in outputs:
        r, c = small.offset(o.tile)
        for k, b in enumerate(bands):
            canvas[r : r + p, c : c + p, k] = _read_at(o.band_url(b), p)
        if progress is not None:
            progress(1)
    return _stretch(canvas)


def _stretch(canvas: NDArray[np.float32], rows: int = 64) -> NDArray[np.uint8]:
    """RGBA of a float canvas: 2–98 % of a sample of its valid pixels (at most
    :data:`_SAMPLE` of them) onto 0–255 with gamma 1/1.6, ``rows`` rows at a time so that no
    temporary is larger than a strip; NaN pixels transparent."""
    ny, nx, _ = canvas.shape
    step = max(1, int(np.ceil(np.sqrt(ny * nx / _SAMPLE))))
    sub = canvas[::step, ::step]
    sample = sub[~np.isnan(sub).any(axis=2)]
    out = np.zeros((ny, nx, 4), dtype=np.uint8)
    if sample.size == 0:
        return out
    lo, hi = (float(v) for v in np.percentile(sample, [2, 98]))
    span = np.float32(max(hi - lo, 1e-6))
    for r in range(0, ny, rows):
        strip = canvas[r : r + rows]
        valid: NDArray[np.bool_] = np.asarray(~np.isnan(strip).any(axis=2))
        x = np.clip((strip - np.float32(lo)) / span, 0, 1) ** np.float32(1 / 1.6)
        rgb = np.rint(np.nan_to_num(x) * 255).astype(np.uint8)
        out[r : r + rows, :, :3] = np.where(valid[..., None], rgb, 0)
        out[r : r + rows, :, 3] = np.where(valid, 255, 0)
    return out


def write_png(rgba: NDArray[np.uint8], path: str | Path) -> None:
    """An RGB or RGBA uint8 array as a PNG at ``path`` (a local path or an s3:// URL)."""
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    mode = "RGBA" if rgba.shape[-1] == 4 else "RGB"
    Image.fromarray(rgba, mode).save(buf, format="PNG", optimize=True)
    store.write_bytes(str(path), buf.getvalue(), "image/png")
