"""One raster per output band over every done tile: a GDAL VRT mosaic.

All tiles of a run lie on one grid, so the mosaic is exact: each tile's COG is a source placed
at its grid offset, nothing is resampled, and GDAL reads the COGs' own overviews when the mosaic
is read at a reduced size (QGIS zoomed out, ``gdal_translate -outsize``). Sources are relative
to the VRT (``relativeToVRT="1"``), so the product folder can be copied, synced to S3 or served
over HTTP and the mosaic still opens (``/vsis3/…/mosaic/…vrt``, ``/vsicurl/https://…``).

A VRT rather than a GTI (GDAL's GeoTIFF tile index, GDAL ≥ 3.9): a VRT opens in every GDAL and
QGIS still in use (Debian 12's GDAL is 3.6) and needs no vector driver to write; a GTI would
open faster for a whole continent (thousands of sources), at the price of GDAL ≥ 3.9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from runner.planner.grid import TileGrid, TileId
from runner.reducers import OutputBand

_GDAL_TYPES = {
    "uint8": "Byte",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}
BLOCK = 512  #: the COGs' block size (runner.worker.outputs.cog_bytes)


@dataclass(frozen=True)
class MosaicExtent:
    """Where the done tiles lie in the grid: the tile index span and the pixel size of the whole."""

    x0: int
    x1: int  #: inclusive
    y0: int
    y1: int  #: inclusive
    tile_px: int

    @classmethod
    def of(cls, tiles: Sequence[TileId], tile_px: int) -> MosaicExtent:
        if not tiles:
            raise ValueError("no tiles to make a mosaic of")
        return cls(
            min(t.ix for t in tiles),
            max(t.ix for t in tiles),
            min(t.iy for t in tiles),
            max(t.iy for t in tiles),
            tile_px,
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the mosaic, pixels."""
        n = self.tile_px
        return (self.y1 - self.y0 + 1) * n, (self.x1 - self.x0 + 1) * n

    def offset(self, tile: TileId) -> tuple[int, int]:
        """(row, column) of a tile's top-left pixel; north up, so higher ``iy`` is higher up."""
        n = self.tile_px
        return (self.y1 - tile.iy) * n, (tile.ix - self.x0) * n


def _number(v: float) -> str:
    return "nan" if math.isnan(v) else repr(float(v)) if isinstance(v, float) else str(v)


def band_vrt(
    grid: TileGrid, band: OutputBand, sources: Sequence[tuple[TileId, str]], srs_wkt: str
) -> str:
    """The VRT XML of one output band: ``sources`` are (tile, href relative to the VRT)."""
    ext = MosaicExtent.of([t for t, _ in sources], grid.tile_pixels)
    ny, nx = ext.shape
    res = grid.resolution
    left = grid.origin[0] + ext.x0 * grid.tile_size
    top = grid.origin[1] + (ext.y1 + 1) * grid.tile_size
    dtype = _GDAL_TYPES[band.dtype]
    n = grid.tile_pixels
    lines = [
        f'<VRTDataset rasterXSize="{nx}" rasterYSize="{ny}">',
        f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(srs_wkt)}</SRS>',
        f"  <GeoTransform>{left!r}, {res!r}, 0.0, {top!r}, 0.0, {-res!r}</GeoTransform>",
        f'  <VRTRasterBand dataType="{dtype}" band="1" blockXSize="{BLOCK}" blockYSize="{BLOCK}">',
        f"    <Description>{escape(band.description)}</Description>",
    ]
    if band.nodata is not None:
        lines.append(f"    <NoDataValue>{_number(band.nodata)}</NoDataValue>")
    if band.units:
        lines.append(f"    <UnitType>{escape(band.units)}</UnitType>")
    if band.scale is not None or band.offset is not None:
        lines.append(f"    <Offset>{_number(band.offset or 0.0)}</Offset>")
        lines.append(f"    <Scale>{_number(1.0 if band.scale is None else band.scale)}</Scale>")
    lines.append("    <ColorInterp>Gray</ColorInterp>")
    for tile, href in sorted(sources):
        row, col = ext.offset(tile)
        lines += [
            "    <SimpleSource>",
            f'      <SourceFilename relativeToVRT="1">{escape(href)}</SourceFilename>',
            "      <SourceBand>1</SourceBand>",
            f'      <SourceProperties RasterXSize="{n}" RasterYSize="{n}" DataType="{dtype}" '
            f'BlockXSize="{BLOCK}" BlockYSize="{BLOCK}" />',
            f'      <SrcRect xOff="0" yOff="0" xSize="{n}" ySize="{n}" />',
            f'      <DstRect xOff="{col}" yOff="{row}" xSize="{n}" ySize="{n}" />',
            "    </SimpleSource>",
        ]
    lines += ["  </VRTRasterBand>", "</VRTDataset>", ""]
    return "\n".join(lines)


def srs_wkt(crs: str) -> str:
    """The CRS as WKT (what a VRT's ``<SRS>`` holds)."""
    from pyproj import CRS

    return str(CRS.from_user_input(crs).to_wkt())


def vrt_name(product: str, period: str, band: str) -> str:
    return f"{product}_{period}_{band}.vrt"
