"""A tile's true-colour thumbnail: its red, green and blue reflectance on one fixed stretch.

The stretch is fixed (reflectance 0 → 0.3 onto 0 → 255, gamma 1/1.6) rather than per tile, so
neighbouring thumbnails match and a mosaic of them has no seams of contrast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

#: the longest edge of a thumbnail, pixels
THUMBNAIL_PX = 256
REFLECTANCE_MAX = 0.3
GAMMA = 1 / 1.6


def stride_for(shape: tuple[int, int], max_px: int = THUMBNAIL_PX) -> int:
    """Every how many pixels a picture of at most ``max_px`` takes one (nearest, no filter)."""
    return max(1, math.ceil(max(shape) / max_px))


def true_colour(
    rgb: Sequence[NDArray[np.uint16]], scale: float, offset: float, nodata: int
) -> NDArray[np.uint8]:
    """RGBA uint8 of three DN arrays (value = DN × scale + offset); nodata transparent."""
    stack = np.stack([np.asarray(a) for a in rgb], axis=-1)
    valid = np.all(stack != nodata, axis=-1)
    refl = stack.astype(np.float32) * np.float32(scale) + np.float32(offset)
    x = np.clip(refl / REFLECTANCE_MAX, 0, 1) ** GAMMA
    out = np.zeros((*stack.shape[:2], 4), np.uint8)
    out[..., :3] = np.rint(x * 255).astype(np.uint8)
    out[..., 3] = np.where(valid, 255, 0)
    out[~valid, :3] = 0
    return out


def png_bytes(rgba: NDArray[np.uint8]) -> bytes:
    """PNG of an RGBA array (deterministic: the same pixels give the same bytes)."""
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", optimize=True)
    return buf.getvalue()
