"""Where a tile's outputs go, and the done marker.

Layout (odc-stats compatible)::

    {location}/{product}/{version}/x017/y156/{period}/{product}_x017y156_{period}_{band}.tif
    {location}/{product}/{version}/x017/y156/{period}/{product}_x017y156_{period}_thumbnail.png
    {location}/{product}/{version}/x017/y156/{period}/{product}_x017y156_{period}.stac-item.json
    {location}/{product}/{version}/collection.json       (``gmrun collect``)

The output bands are the reducer's (:meth:`runner.reducers.Reducer.output_bands`): their
files, their STAC assets and the done marker all follow that one list. The STAC item is written
last and is the done marker: a tile is done iff its item exists and names every output band. A
folder with COGs but no item is an incomplete tile and is redone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from runner.common import store
from runner.common.config import RunConfig
from runner.common.errors import UserInputError
from runner.common.threads import pool_threads
from runner.planner.grid import TileId
from runner.planner.period import Period
from runner.product.stac import COG_TYPE
from runner.reducers import OutputBand, reducer_for


def output_bands(config: RunConfig) -> tuple[str, ...]:
    """The names of a tile's output bands (its reducer's), in file order."""
    return tuple(b.name for b in reducer_for(config).output_bands(config))


@dataclass(frozen=True)
class TileOutputs:
    """The output locations of one tile of one period."""

    config: RunConfig
    tile: TileId
    period: Period
    location: str  #: output root (folder or s3:// prefix)

    @classmethod
    def of(
        cls, config: RunConfig, tile: TileId, period: Period, location: str | None = None
    ) -> TileOutputs:
        return cls(config, tile, period, location or config.output.location)

    @property
    def folder(self) -> str:
        return store.join(
            self.product_folder, self.tile.x_part, self.tile.y_part, self.period.label
        )

    @property
    def stem(self) -> str:
        return f"{self.config.product.name}_{self.tile}_{self.period.label}"

    def band_file(self, band: str) -> str:
        """The file name of a band's COG (``{stem}_B02.tif``)."""
        return f"{self.stem}_{band}.tif"

    @property
    def item_file(self) -> str:
        return f"{self.stem}.stac-item.json"

    def band_url(self, band: str) -> str:
        return store.join(self.folder, self.band_file(band))

    @property
    def item_url(self) -> str:
        return store.join(self.folder, self.item_file)

    @property
    def metrics_url(self) -> str:
        return store.join(self.folder, f"{self.stem}.metrics.json")

    @property
    def thumbnail_url(self) -> str:
        return store.join(self.folder, f"{self.stem}_thumbnail.png")

    @property
    def product_folder(self) -> str:
        """``{location}/{product}/{version}``: where the collection and the mosaics go."""
        p = self.config.product
        return store.join(self.location, p.name, p.version)

    @property
    def item_href(self) -> str:
        """The item's href relative to the product folder (``x017/y156/2023/….stac-item.json``)."""
        return self._from_product(self.item_file)

    def _from_product(self, name: str) -> str:
        """A file of the tile's folder, relative to the product folder."""
        return "/".join((self.tile.x_part, self.tile.y_part, self.period.label, name))

    def is_done(self) -> bool:
        """True iff the tile's done marker is there (:meth:`done_item`)."""
        return self.done_item() is not None

    def done_item(self) -> dict[str, Any] | None:
        """The tile's STAC item if it is a done marker — it exists, parses, lists every output
        band, and every file it lists is there with the size it records (one folder listing: a
        stat per file locally, one LIST request on S3) — else None."""
        try:
            doc = json.loads(store.read_bytes(self.item_url))
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict) or not self.is_done_item(doc):
            return None
        return doc if self.assets_present(doc) else None

    def is_done_item(self, doc: object) -> bool:
        """True iff ``doc`` (a parsed item) lists every output band of the tile as an asset."""
        assets = doc.get("assets", {}) if isinstance(doc, dict) else {}
        return isinstance(assets, dict) and all(b in assets for b in output_bands(self.config))

    def assets_present(self, doc: dict[str, Any]) -> bool:
        """True iff every asset of the item (``./name`` beside it) is in the tile's folder with
        its ``file:size``: a COG deleted or cut short after the item was written undoes the
        tile."""
        sizes = store.list_sizes(self.folder)
        for asset in doc.get("assets", {}).values():
            href = asset.get("href", "") if isinstance(asset, dict) else ""
            if not href.startswith("./"):
                continue
            size = sizes.get(href[2:])
            if size is None or size != asset.get("file:size", size):
                return False
        return True

    def band_href(self, band: str) -> str:
        """A band's COG relative to the product folder (``x017/y156/2023/…_B02.tif``)."""
        return self._from_product(self.band_file(band))


def output_bytes_bound(config: RunConfig, shape: tuple[int, int]) -> int:
    """The most a tile's COGs can take, bytes: every output band uncompressed, plus a third for
    the overviews (DEFLATE makes them smaller; this is a bound, not an estimate)."""
    ny, nx = shape
    per_px = sum(np.dtype(b.dtype).itemsize for b in reducer_for(config).output_bands(config))
    return ny * nx * per_px * 4 // 3


def preflight(out: TileOutputs, shape: tuple[int, int]) -> None:
    """Fail now, not after the whole tile is computed, if its outputs cannot be written: the
    folder must take a small object (created and removed again; on S3 a PUT and a DELETE) and,
    locally, have room for :func:`output_bytes_bound`. A :class:`UserInputError` (exit 2: the
    output location is a setting to fix, not a transient fault)."""
    probe = store.join(out.folder, f".gmrun-write-check-{os.getpid()}")
    try:
        store.write_bytes(probe, b"gmrun", "text/plain")
    except (store.StorageError, OSError) as e:
        reason = str(e).split(": ", 1)[-1] if isinstance(e, store.StorageError) else e.strerror
        raise UserInputError(
            f"tile {out.tile}: output {out.folder} is not writable ({reason}); "
            "nothing computed: fix --output / output.location"
        ) from None
    with contextlib.suppress(store.StorageError):  # may PUT, not DELETE: the probe is tiny
        store.delete(probe)
    if store.is_s3(out.folder):
        return
    need = output_bytes_bound(out.config, shape)
    free = shutil.disk_usage(store.local_path(out.folder)).free
    if free < need:
        raise UserInputError(
            f"tile {out.tile}: output {out.folder} has {free / 2**20:.0f} MiB free, and the "
            f"tile's COGs may take up to {need / 2**20:.0f} MiB; nothing computed"
        )


# --- writing --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WrittenFile:
    """One written output: where, how big, and its checksum (sha256 multihash, hex)."""

    url: str
    size: int
    multihash: str


def cog_bytes(data: NDArray[Any], geobox: GeoBox, band: OutputBand) -> bytes:
    """Encode a 2-D array as a Cloud Optimized GeoTIFF (DEFLATE, 512 px blocks, overviews) that
    describes itself: the band's description, scale, offset, unit and nodata, as GDAL, QGIS and
    ``rio info`` show them.

    GDAL writes no timestamps, so the same array always encodes to the same bytes.
    """
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    profile = {
        "driver": "GTiff",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": str(geobox.crs),
        "transform": geobox.transform,
        "nodata": band.nodata,
    }
    predictor = "3" if data.dtype.kind == "f" else "2"
    threads = str(pool_threads())  # the CPU budget, not ALL_CPUS (the host's cores)
    with rasterio.Env(GDAL_NUM_THREADS=threads), MemoryFile() as src, MemoryFile() as dst:
        with src.open(**profile) as ds:
            ds.write(data, 1)
            ds.set_band_description(1, band.description)
            if band.units:
                ds.set_band_unit(1, band.units)
            if band.scale is not None or band.offset is not None:
                ds.scales = (1.0 if band.scale is None else band.scale,)
                ds.offsets = (0.0 if band.offset is None else band.offset,)
            rio_copy(
                ds,
                dst.name,
                driver="COG",
                compress="DEFLATE",
                predictor=predictor,
                blocksize=512,
                overview_resampling=band.resampling,
            )
        return bytes(dst.getbuffer())


def write_file(url: str, data: bytes, content_type: str) -> WrittenFile:
    """Write bytes to a location and return its size and sha256 multihash (``1220`` + hex)."""
    store.write_bytes(url, data, content_type)
    return WrittenFile(url, len(data), "1220" + hashlib.sha256(data).hexdigest())


def write_layers(
    out: TileOutputs,
    geobox: GeoBox,
    layers: Iterable[tuple[OutputBand, NDArray[Any]]],
    on_written: Any = None,
) -> dict[str, WrittenFile]:
    """One COG per output band (``layers``: a reducer's :meth:`~runner.reducers.Reducer.layers`);
    ``on_written(band, file)`` after each. Returns what was written, by band name."""
    files = {}
    for band, data in layers:
        cog = cog_bytes(data, geobox, band)
        files[band.name] = write_file(out.band_url(band.name), cog, COG_TYPE)
        if on_written is not None:
            on_written(band, files[band.name])
    return files
