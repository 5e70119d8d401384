"""Where a tile's outputs go, and the done marker.

Layout (odc-stats compatible)::

    {location}/{product}/{version}/x017/y156/{period}/{product}_x017y156_{period}_{band}.tif
    {location}/{product}/{version}/x017/y156/{period}/{product}_x017y156_{period}.stac-item.json

The output bands are the reducer's (:meth:`runner.reducers.Reducer.output_bands`): their
files, their STAC assets and the done marker all follow that one list. The STAC item is written
last and is the done marker: a tile is done iff its item exists and names every output band. A
folder with COGs but no item is an incomplete tile and is redone.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from runner.common import store
from runner.common.config import RunConfig
from runner.planner.grid import TileId
from runner.planner.period import Period
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
        p = self.config.product
        return store.join(
            self.location, p.name, p.version, self.tile.x_part, self.tile.y_part, self.period.label
        )

    @property
    def stem(self) -> str:
        return f"{self.config.product.name}_{self.tile}_{self.period.label}"

    def band_url(self, band: str) -> str:
        return store.join(self.folder, f"{self.stem}_{band}.tif")

    @property
    def item_url(self) -> str:
        return store.join(self.folder, f"{self.stem}.stac-item.json")

    @property
    def metrics_url(self) -> str:
        return store.join(self.folder, f"{self.stem}.metrics.json")

    def is_done(self) -> bool:
        """True iff the STAC item (done marker) exists, parses and lists every output band."""
        try:
            doc = json.loads(store.read_bytes(self.item_url))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return False
        assets = doc.get("assets", {}) if isinstance(doc, dict) else {}
        return all(b in assets for b in output_bands(self.config))


# --- writing --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WrittenFile:
    """One written output: where, how big, and its checksum (sha256 multihash, hex)."""

    url: str
    size: int
    multihash: str


def cog_bytes(data: NDArray[Any], geobox: GeoBox, nodata: float | None, resampling: str) -> bytes:
    """Encode a 2-D array as a Cloud Optimized GeoTIFF (DEFLATE, 512 px blocks, overviews).

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
        "nodata": nodata,
    }
    predictor = "3" if data.dtype.kind == "f" else "2"
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), MemoryFile() as src, MemoryFile() as dst:
        with src.open(**profile) as ds:
            ds.write(data, 1)
            rio_copy(
                ds,
                dst.name,
                driver="COG",
                compress="DEFLATE",
                predictor=predictor,
                blocksize=512,
                overview_resampling=resampling,
            )
        return bytes(dst.getbuffer())


def write_file(url: str, data: bytes, content_type: str) -> WrittenFile:
    """Write bytes to a location and return its size and sha256 multihash (``1220`` + hex)."""
    store.write_bytes(url, data, content_type)
    return WrittenFile(url, len(data), "1220" + hashlib.sha256(data).hexdigest())


COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def raster_band(band: OutputBand) -> dict[str, Any]:
    """The ``raster:bands`` entry of an output band (NaN nodata is written ``"nan"``)."""
    raster: dict[str, Any] = {"data_type": band.dtype}
    if band.nodata is not None:
        raster["nodata"] = "nan" if math.isnan(band.nodata) else band.nodata
    if band.scale is not None:
        raster["scale"] = band.scale
    if band.offset is not None:
        raster["offset"] = band.offset
    return raster


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
        cog = cog_bytes(data, geobox, band.nodata, band.resampling)
        files[band.name] = write_file(out.band_url(band.name), cog, COG_TYPE)
        if on_written is not None:
            on_written(band, files[band.name])
    return files


def tile_item(
    out: TileOutputs, geobox: GeoBox, files: dict[str, WrittenFile], extra: dict[str, Any]
) -> dict[str, Any]:
    """The tile's STAC item: footprint, period, grid, one asset per output band of the reducer
    (relative href, size, sha256 multihash, ``raster:bands``) and the processing metadata in
    ``extra``."""
    from odc.geo import CRS

    cfg = out.config
    reducer = reducer_for(cfg)
    bands = {b.name: b for b in reducer.output_bands(cfg)}
    # densify each side into 16 segments (``resolution`` is in the grid's units, metres)
    edge = max(geobox.shape.yx) * abs(geobox.resolution.x)
    footprint = geobox.extent.to_crs(CRS("EPSG:4326"), resolution=edge / 16)
    lon0, lat0, lon1, lat1 = footprint.boundingbox
    if geobox.crs is None:
        raise ValueError(f"tile {out.tile}: its GeoBox has no CRS")
    epsg = geobox.crs.epsg
    assets: dict[str, Any] = {}
    for band, f in files.items():
        assets[band] = {
            "href": "./" + f.url.replace("\\", "/").rsplit("/", 1)[-1],
            "type": COG_TYPE,
            "roles": ["data"],
            "file:size": f.size,
            "file:checksum": f.multihash,
            "raster:bands": [raster_band(bands[band])],
        }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/file/v2.1.0/schema.json",
        ],
        "id": out.stem,
        "collection": cfg.product.name,
        "geometry": footprint.json,
        "bbox": [lon0, lat0, lon1, lat1],
        "properties": {
            "datetime": None,
            "start_datetime": f"{out.period.start:%Y-%m-%d}T00:00:00Z",
            "end_datetime": f"{out.period.end:%Y-%m-%d}T23:59:59Z",
            "odc:product": cfg.product.name,
            "odc:product_family": reducer.product_family,
            "odc:region_code": str(out.tile),
            "odc:dataset_version": cfg.product.version,
            "proj:epsg": epsg,
            "proj:shape": list(geobox.shape.yx),
            "proj:transform": list(geobox.transform)[:6],
            **extra,
        },
        "links": [],
        "assets": assets,
    }
