"""Each raster a tile will read, checked against what its item says, from its header alone.

odc-stac trusts an item's metadata and does not look at the files before it reads them: it
places each asset by its ``proj:*`` fields (``proj:code``/``proj:epsg``/``proj:wkt2``,
``proj:shape``, ``proj:transform``, on the asset or else the item: its footprint decides which
Dask chunks read it) while GDAL warps the pixels by the file's own georeferencing, and it reads
into the ``data_type`` the item declares (``bands``/``raster:bands``), casting whatever the file
holds. A file that disagrees with its item — another CRS, a 4×4 raster where the item says
10980×10980, float32 or int16 where it says uint16 — is loaded without an error and changes the
outputs silently. So before the load every asset of ``input bands + mask band`` is opened
(:func:`read_header`: ``rasterio.open``, no pixel read, in a small thread pool; over HTTP GDAL's
``/vsicurl/`` cache then serves these bytes to the load) and compared (:func:`header_mismatch`):

* its CRS equals the declared one (same EPSG code, or an equivalent CRS); it has a CRS at all;
* its (rows, columns) equal ``proj:shape``; its geotransform equals ``proj:transform`` (scale
  terms to 1e-6 of a pixel, the origin to 1 % of a pixel);
* its data type equals the declared ``data_type``; and, declared or not, it is uint8 or
  uint16, the types the uint16 cube holds as they are (Sentinel-2 L2A bands are uint16, SCL
  uint8): int16 may hold negative values that would wrap, a float type is cast;
* it has as many bands as declared (none declared: one).

Only what an item declares is compared with it, so a catalog with correct metadata (Earth
Search v1: ``proj:epsg`` or ``proj:code`` on the item, ``proj:shape``/``proj:transform`` and
``raster:bands`` per asset; Planetary Computer: the same without ``raster:bands``) passes as it
is. A header that cannot be read is no verdict here: the load reads it again and its failure
handling (retries, ``--skip-bad-inputs``) applies. A mismatch is an :class:`InputItemError`
naming the item, the asset and what differs, or with ``skip_bad_inputs`` the item is dropped.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.common.errors import InputItemError

if TYPE_CHECKING:
    from runner.common.config import RunConfig
    from runner.common.logs import TileLog
    from runner.common.progress import Heartbeat
    from runner.worker.signing import HrefSigner

Item = dict[str, Any]

#: Threads opening headers: the opens wait on the network (or the disk), not on the CPU.
HEADER_THREADS = 16
#: What the uint16 cube holds without a change of value.
CUBE_DTYPES = ("uint8", "uint16")
#: The projection extension's CRS fields, in the order pystac (so odc-stac) prefers them.
_CRS_KEYS = ("proj:code", "proj:epsg", "proj:wkt2", "proj:projjson")


@dataclass(frozen=True)
class Header:
    """What a raster's header says (no pixel read)."""

    crs_wkt: str | None
    shape: tuple[int, int]  #: (rows, columns)
    transform: tuple[float, ...]  #: GDAL's affine a, b, c, d, e, f
    dtype: str  #: of its first band
    count: int  #: bands


def read_header(href: str) -> Header:
    """Open ``href`` and read its header: CRS, size, geotransform, data type, band count."""
    import rasterio

    with rasterio.open(href) as src:
        return Header(
            crs_wkt=src.crs.to_wkt() if src.crs else None,
            shape=(src.height, src.width),
            transform=tuple(src.transform)[:6],
            dtype=str(src.dtypes[0]),
            count=src.count,
        )


def _declared(asset: dict[str, Any], item: Item, key: str) -> Any:
    """An asset's field, else its item's property of that name (as pystac reads extensions)."""
    value = asset.get(key)
    if value is None:
        props = item.get("properties")
        value = props.get(key) if isinstance(props, dict) else None
    return value


def declared_crs(asset: dict[str, Any], item: Item) -> str | None:
    """The CRS the asset's metadata declares, as ``EPSG:n``/WKT/PROJJSON text, if any."""
    for key in _CRS_KEYS:
        value = _declared(asset, item, key)
        if value is None:
            continue
        if key == "proj:epsg":
            return (
                f"EPSG:{value}" if isinstance(value, int) and not isinstance(value, bool) else None
            )
        if key == "proj:projjson":
            return json.dumps(value) if isinstance(value, dict) else None
        return value if isinstance(value, str) and value else None
    return None


def declared_bands(asset: dict[str, Any], item: Item) -> tuple[int | None, str | None]:
    """How many bands the asset declares and the data type of its first, where it says: as
    odc-stac reads them, STAC 1.1 ``bands`` and ``data_type`` (on the band, else the asset,
    else the item), else the raster extension's ``raster:bands``."""
    props = item.get("properties")
    common = asset.get("data_type")
    if common is None and isinstance(props, dict):
        common = props.get("data_type")
    count, dtype = None, common
    bands, raster = asset.get("bands"), asset.get("raster:bands")
    if isinstance(bands, list) and bands:
        count = len(bands)
        if isinstance(bands[0], dict) and bands[0].get("data_type") is not None:
            dtype = bands[0]["data_type"]
    elif isinstance(raster, list) and raster:
        count = len(raster)
        if dtype is None and isinstance(raster[0], dict):
            dtype = raster[0].get("data_type")
    return count, dtype if isinstance(dtype, str) else None


@functools.lru_cache(maxsize=256)
def _crs_info(text: str) -> tuple[Any, int | None, str] | None:
    """``(pyproj CRS, EPSG code or None, a short label)`` of a CRS text; None if unparseable."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(text)
    except CRSError:
        return None
    code = crs.to_epsg()
    return crs, code, f"EPSG:{code}" if code is not None else crs.name


@functools.lru_cache(maxsize=256)
def _crs_difference(file_wkt: str, declared: str) -> str | None:
    """``"EPSG:a, the item says EPSG:b"`` when the two CRSs differ, else None (also when the
    declared one cannot be parsed: no verdict on what cannot be read)."""
    mine, theirs = _crs_info(file_wkt), _crs_info(declared)
    if mine is None or theirs is None:
        return None
    (crs_a, code_a, label_a), (crs_b, code_b, label_b) = mine, theirs
    if code_a is not None and code_b is not None:
        same = code_a == code_b
    else:
        same = crs_a.equals(crs_b, ignore_axis_order=True)
    return None if same else f"{label_a}, the item says {label_b}"


def _numbers(value: Any, n: tuple[int, ...]) -> list[float] | None:
    """``value`` as a list of finite numbers of one of the lengths ``n``, else None."""
    if not isinstance(value, list) or len(value) not in n:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return None
    out = [float(v) for v in value]
    return out if all(math.isfinite(v) for v in out) else None


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.10g}" for v in values) + "]"


def _same_transform(file: Sequence[float], said: Sequence[float]) -> bool:
    """Scale/rotation terms (a, b, d, e) equal to 1e-6 of a pixel, the origin (c, f) to 1 %."""
    pixel = max(abs(file[0]), abs(file[4]), abs(file[1]), abs(file[3])) or 1.0
    for i, (a, b) in enumerate(zip(file, said, strict=True)):
        tol = 0.01 * pixel if i in (2, 5) else 1e-6 * pixel
        if abs(a - b) > tol:
            return False
    return True


def _dtype_name(text: str) -> str | None:
    import numpy as np

    try:
        return np.dtype(text).name
    except TypeError:
        return None


def header_mismatch(header: Header, asset: dict[str, Any], item: Item) -> str | None:
    """How the raster's header disagrees with its item's metadata (or with what the uint16
    cube holds), in words, else None."""
    said_crs = declared_crs(asset, item)
    if header.crs_wkt is None:
        return "has no CRS" + (f", the item says {said_crs}" if said_crs else "")
    if said_crs is not None and (diff := _crs_difference(header.crs_wkt, said_crs)):
        return f"has CRS {diff}"
    shape = _numbers(_declared(asset, item, "proj:shape"), (2,))
    if shape is not None and tuple(header.shape) != (shape[0], shape[1]):
        h, w = header.shape
        return f"is {h}×{w} px, the item says {shape[0]:.0f}×{shape[1]:.0f} (proj:shape)"
    said_tf = _numbers(_declared(asset, item, "proj:transform"), (6, 9))
    if said_tf is not None and not _same_transform(header.transform, said_tf[:6]):
        return (
            f"has transform {_fmt(header.transform)}, "
            f"the item says {_fmt(said_tf[:6])} (proj:transform)"
        )
    count, said_dtype = declared_bands(asset, item)
    said = _dtype_name(said_dtype) if said_dtype else None
    if said is not None and header.dtype != said:
        return f"is {header.dtype}, the item says {said}"
    if header.dtype not in CUBE_DTYPES:
        return (
            f"is {header.dtype}; the tile reads {' or '.join(CUBE_DTYPES)} "
            "(Sentinel-2 L2A reflectance is uint16, SCL uint8) into its uint16 cube"
        )
    want = count or 1
    if header.count != want:
        return f"has {header.count} bands, the " + (
            f"item says {want}" if count else "tile reads single-band assets"
        )
    return None


def check_headers(
    items: list[Item],
    needed: tuple[str, ...],
    skip_bad_inputs: bool,
    *,
    sign: Callable[[str], str] = lambda href: href,
    threads: int = HEADER_THREADS,
    on_done: Callable[[], None] | None = None,
) -> tuple[list[Item], list[tuple[str, str]]]:
    """The items whose ``needed`` assets agree with their metadata, and ``(item id, why)`` of
    those dropped. Without ``skip_bad_inputs`` the first item (in order) with a mismatch fails
    the tile: :class:`InputItemError` naming the item, the asset and what differs.

    ``sign`` turns a plan's href into the one to read (SAS tokens); ``on_done`` is called in this
    thread after each header (a heartbeat). Every asset must have an href
    (:func:`runner.worker.assets.usable_items` ran first)."""
    jobs = [
        (i, band, sign(it["assets"][band]["href"])) for i, it in enumerate(items) for band in needed
    ]
    problems: dict[int, tuple[str, str]] = {}  # item index -> (band, why), the first in `needed`
    if jobs:
        with ThreadPoolExecutor(max(1, min(threads, len(jobs))), "gmrun-header") as pool:
            futures = [pool.submit(_try_header, href) for _i, _b, href in jobs]
            for (i, band, _href), fut in zip(jobs, futures, strict=True):
                header = fut.result()
                if on_done is not None:
                    on_done()
                if header is None or i in problems:
                    continue
                why = header_mismatch(header, items[i]["assets"][band], items[i])
                if why is not None:
                    problems[i] = (band, why)
    kept, dropped = [], []
    for i, it in enumerate(items):
        if i not in problems:
            kept.append(it)
            continue
        band, why = problems[i]
        ident, reason = str(it.get("id", "?")), f"asset {band} {why}"
        if not skip_bad_inputs:
            raise InputItemError(
                f"input item {ident}: {reason}; fix the catalog or pass --skip-bad-inputs"
            )
        dropped.append((ident, reason))
    return kept, dropped


def _try_header(href: str) -> Header | None:
    """The header, or None where it cannot be read (the load retries it and reports it)."""
    try:
        return read_header(href)
    except Exception:  # any GDAL/IO failure: not this check's verdict
        return None


def check_tile_inputs(
    items: list[Item],
    needed: tuple[str, ...],
    config: RunConfig,
    log: TileLog,
    *,
    signer: HrefSigner,
    heartbeat: Heartbeat,
    skip_bad_inputs: bool,
) -> tuple[list[Item], list[tuple[str, str]]]:
    """:func:`check_headers` for a tile, under its GDAL settings (:func:`gdal_environment`: the
    HTTP retries and timeout apply to the headers too) with its signer: one log line of what it
    took, a warning per item dropped."""
    from runner.worker.gdal import gdal_environment

    gdal_environment(config)
    t0 = time.perf_counter()
    kept, dropped = check_headers(
        items, needed, skip_bad_inputs, sign=signer.sign, on_done=heartbeat.beat
    )
    seconds, n = time.perf_counter() - t0, len(items) * len(needed)
    log.info(
        "checked %d asset headers of %d items in %.2f s (%.2f ms per asset)",
        n,
        len(items),
        seconds,
        1000 * seconds / max(n, 1),
        extra={"stage": "check", "assets": n},
    )
    for ident, why in dropped:
        log.warning("skipping item %s: %s", ident, why, extra={"skipped_item": ident})
    return kept, dropped
