"""The tile's STAC item and thumbnail, from what the worker wrote (see :mod:`runner.product.stac`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from runner.planner.footprint import lonlat_bounds
from runner.planner.grid import TileGrid
from runner.product import thumbnail as thumb
from runner.product.sentinel2 import rgb_bands
from runner.product.stac import ItemSpec, tile_item
from runner.reducers import OutputBand, reducer_for
from runner.worker.outputs import TileOutputs, WrittenFile, write_file


class ThumbnailTap:
    """Keeps every ``stride``-th pixel of the red, green and blue layers as they go by to the COG
    writer, so the thumbnail needs no second read and no copy of a whole band."""

    def __init__(self, bands: tuple[OutputBand, ...], shape: tuple[int, int]) -> None:
        self.rgb = rgb_bands(tuple(b.name for b in bands if b.scale is not None))
        self.stride = thumb.stride_for(shape)
        self.kept: dict[str, NDArray[Any]] = {}
        self.band: OutputBand | None = None

    def tap(
        self, layers: Iterable[tuple[OutputBand, NDArray[Any]]]
    ) -> Iterator[tuple[OutputBand, NDArray[Any]]]:
        for band, data in layers:
            if self.rgb is not None and band.name in self.rgb:
                self.kept[band.name] = np.array(data[:: self.stride, :: self.stride])
                self.band = band
            yield band, data

    def png(self) -> bytes | None:
        """The thumbnail, or None when the outputs have no red, green and blue bands."""
        if self.rgb is None or self.band is None or len(self.kept) < 3:
            return None
        b = self.band
        nodata = int(b.nodata) if b.nodata is not None else -1
        rgba = thumb.true_colour(
            [self.kept[n] for n in self.rgb], b.scale or 1.0, b.offset or 0.0, nodata
        )
        return thumb.png_bytes(rgba)


def write_thumbnail(out: TileOutputs, tap: ThumbnailTap) -> WrittenFile | None:
    png = tap.png()
    return None if png is None else write_file(out.thumbnail_url, png, "image/png")


def item_document(
    out: TileOutputs,
    geobox: GeoBox,
    files: dict[str, WrittenFile],
    thumbnail: WrittenFile | None,
    properties: dict[str, Any],
) -> dict[str, Any]:
    """The tile's STAC item: footprint, period, grid, one asset per output band of the reducer,
    the thumbnail, and the processing metadata in ``properties``."""
    cfg = out.config
    reducer = reducer_for(cfg)
    if geobox.crs is None:
        raise ValueError(f"tile {out.tile}: its GeoBox has no CRS")
    footprint = TileGrid.from_config(cfg.grid).lonlat_footprint(out.tile)
    import shapely.geometry

    spec = ItemSpec(
        id=out.stem,
        collection=cfg.product.name,
        self_url=out.item_url,
        geometry=shapely.geometry.mapping(footprint),
        bbox=lonlat_bounds(footprint),
        start=datetime.combine(out.period.start, datetime.min.time(), UTC),
        end=datetime.combine(out.period.end, datetime.max.time(), UTC).replace(microsecond=0),
        crs=str(geobox.crs),
        shape=geobox.shape.yx,
        transform=tuple(geobox.transform)[:6],
        resolution=abs(geobox.resolution.x),
        properties={
            "title": f"{cfg.product.name} {out.tile} {out.period.label}",
            "odc:product": cfg.product.name,
            "odc:product_family": reducer.product_family,
            "odc:region_code": str(out.tile),
            "odc:dataset_version": cfg.product.version,
            **properties,
        },
        bands=reducer.output_bands(cfg),
        files=files,
        thumbnail=thumbnail,
    )
    return tile_item(spec)
