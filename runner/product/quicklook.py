"""An RGB quick-look PNG of a mosaic of tiles (B04, B03, B02 with a 2–98 % stretch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from runner.common import store
from runner.planner.grid import TileId
from runner.worker.outputs import TileOutputs


def _read(url: str) -> NDArray[np.uint16]:
    import rasterio

    with rasterio.open(url) as src:
        return src.read(1)


def mosaic_rgb(
    outputs: list[TileOutputs], bands: tuple[str, str, str] = ("B04", "B03", "B02")
) -> NDArray[np.uint8]:
    """Place each tile's RGB into one array by its grid position and stretch it to 8 bits."""
    tiles: list[TileId] = [o.tile for o in outputs]
    x0, x1 = min(t.ix for t in tiles), max(t.ix for t in tiles)
    y0, y1 = min(t.iy for t in tiles), max(t.iy for t in tiles)
    first = _read(outputs[0].band_url(bands[0]))
    n = first.shape[0]
    canvas = np.zeros(((y1 - y0 + 1) * n, (x1 - x0 + 1) * n, 3), dtype=np.float32)
    for o in outputs:
        r = (y1 - o.tile.iy) * n  # north up: larger iy is further north, so higher in the picture
        c = (o.tile.ix - x0) * n
        for k, b in enumerate(bands):
            canvas[r : r + n, c : c + n, k] = _read(o.band_url(b))
    valid = canvas.min(axis=2) > 0
    out = np.zeros(canvas.shape, dtype=np.uint8)
    if valid.any():
        lo, hi = np.percentile(canvas[valid], [2, 98])
        scaled = np.clip((canvas - lo) / max(hi - lo, 1e-6), 0, 1) * 255
        out[valid] = scaled[valid].astype(np.uint8)
    return out


def write_png(rgb: NDArray[np.uint8], path: str | Path) -> None:
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", optimize=True)
    store.write_bytes(str(path), buf.getvalue(), "image/png")
