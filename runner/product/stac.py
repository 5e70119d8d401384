"""The product's STAC metadata: one Item per tile and one Collection per product and version.

Built with pystac, STAC 1.1.0, and these extensions (their schemas are held in
``tests/data/stac-schemas/`` and every item and collection is validated against them offline):

- projection v2.0.0 (``proj:code``, ``proj:shape``, ``proj:transform``, item level),
- raster v1.1.0 (``raster:bands``: data type, nodata, scale, offset, unit, resolution),
- eo v1.1.0 (``eo:bands`` of the reflectance assets: common name, wavelengths — what odc-stac
  and titiler match ``red`` or ``nir`` against),
- file v2.1.0 (``file:size``, ``file:checksum`` as a sha256 multihash),
- processing v1.2.0 (``processing:software``: gmrun, GDAL, rasterio, odc-stac, numba, numpy).

Links: an item's ``collection``, ``parent`` and ``root`` are the relative href of its product's
``collection.json`` (``../../../collection.json``: the item lies in ``x017/y156/{period}/``),
and assets are relative too, so a product folder copied or served anywhere still resolves;
``self`` is the absolute URL the object was written to (pystac replaces it with the place an
object is read from). The Collection links its items by relative hrefs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Protocol

from runner.common import store
from runner.product.sentinel2 import spectral_band
from runner.reducers import OutputBand

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
PNG_TYPE = "image/png"
STAC_VERSION = "1.1.0"
EXTENSIONS = {
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
}
#: the license of the product (as Digital Earth Africa's GeoMAD): outputs derived from
#: Copernicus Sentinel-2 data, whose own licence asks for attribution
LICENSE = "CC-BY-4.0"
#: where an item lies below its collection.json: ``x017/y156/{period}/``
COLLECTION_FROM_ITEM = "../../../collection.json"
_SOFTWARE = ("gmrun", "rasterio", "odc-stac", "odc-geo", "numba", "numpy", "pystac")


@cache
def software_versions() -> dict[str, str]:
    """Versions of the software that made the outputs (``processing:software``), GDAL's from the
    library rasterio is linked with."""
    from importlib.metadata import PackageNotFoundError, version

    import rasterio

    out = {"gdal": rasterio.__gdal_version__}
    for name in _SOFTWARE:
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            out[name] = "unknown"
    return dict(sorted(out.items()))


def href_in_folder(url: str) -> str:
    """An output's href relative to the item beside it: ``./name.tif``."""
    return "./" + url.replace("\\", "/").rsplit("/", 1)[-1]


class AssetFile(Protocol):
    """A written file an asset points at: where, how big, and its sha256 multihash (hex)."""

    @property
    def url(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def multihash(self) -> str: ...


def raster_band(band: OutputBand, resolution: float) -> dict[str, Any]:
    """The ``raster:bands`` entry of an output band (NaN nodata is written ``"nan"``)."""
    raster: dict[str, Any] = {"data_type": band.dtype, "spatial_resolution": resolution}
    if band.nodata is not None:
        raster["nodata"] = "nan" if math.isnan(band.nodata) else band.nodata
    if band.scale is not None:
        raster["scale"] = band.scale
    if band.offset is not None:
        raster["offset"] = band.offset
    if band.units:
        raster["unit"] = band.units
    return raster


def eo_band(band: OutputBand) -> dict[str, Any] | None:
    """The ``eo:bands`` entry of a reflectance band named like a Sentinel-2 band, else None."""
    sb = spectral_band(band.name) if band.scale is not None else None
    if sb is None:
        return None
    return {
        "name": band.name,
        "common_name": sb.common_name,
        "description": band.description,
        "center_wavelength": sb.center_wavelength,
        "full_width_half_max": sb.full_width_half_max,
    }


def data_asset(band: OutputBand, f: AssetFile, resolution: float) -> dict[str, Any]:
    """The asset of one output COG."""
    asset: dict[str, Any] = {
        "href": href_in_folder(f.url),
        "type": COG_TYPE,
        "title": band.description,
        "roles": ["data"],
        "file:size": f.size,
        "file:checksum": f.multihash,
        "raster:bands": [raster_band(band, resolution)],
    }
    if (eo := eo_band(band)) is not None:
        asset["eo:bands"] = [eo]
    return asset


@dataclass(frozen=True)
class ItemSpec:
    """What a tile's item says, gathered by the worker."""

    id: str
    collection: str
    self_url: str
    geometry: dict[str, Any]  #: GeoJSON, lon/lat
    bbox: tuple[float, float, float, float]
    start: datetime
    end: datetime
    crs: str  #: ``EPSG:6933``
    shape: tuple[int, int]  #: (ny, nx) pixels
    transform: tuple[float, ...]  #: the first six affine coefficients
    resolution: float  #: pixel size, CRS units (m)
    properties: Mapping[str, Any]  #: ``odc:*``, ``gmrun:*``, ...
    bands: tuple[OutputBand, ...]  #: the reducer's, in file order
    files: Mapping[str, AssetFile]  #: by band name
    thumbnail: AssetFile | None = None


def tile_item(spec: ItemSpec) -> dict[str, Any]:
    """The STAC Item of one tile (a dict ready for ``json.dumps``)."""
    import pystac

    by_name = {b.name: b for b in spec.bands}
    props = {
        "start_datetime": _stamp(spec.start),
        "end_datetime": _stamp(spec.end),
        "gsd": spec.resolution,
        "proj:code": spec.crs,
        "proj:shape": list(spec.shape),
        "proj:transform": list(spec.transform)[:6],
        "processing:level": "L3",
        "processing:lineage": (
            "per-pixel statistics of the cloud-masked Sentinel-2 observations of the period "
            "(gmrun: SCL mask with morphology, solar-day fusion, nearest-neighbour reprojection)"
        ),
        "processing:software": software_versions(),
        **spec.properties,
    }
    item = pystac.Item(
        id=spec.id,
        geometry=spec.geometry,
        bbox=list(spec.bbox),
        datetime=None,
        properties=props,
        start_datetime=spec.start,
        end_datetime=spec.end,
        stac_extensions=list(EXTENSIONS.values()),
    )
    item.collection_id = spec.collection
    for rel in ("collection", "parent", "root"):
        item.add_link(pystac.Link(rel, COLLECTION_FROM_ITEM, media_type="application/json"))
    item.add_link(pystac.Link("self", store.absolute(spec.self_url), "application/geo+json"))
    for name, f in spec.files.items():
        d = data_asset(by_name[name], f, spec.resolution)
        item.add_asset(name, pystac.Asset.from_dict(d))
    if spec.thumbnail is not None:
        t = spec.thumbnail
        item.add_asset(
            "thumbnail",
            pystac.Asset(
                href_in_folder(t.url),
                title="true-colour thumbnail",
                media_type=PNG_TYPE,
                roles=["thumbnail"],
                extra_fields={"file:size": t.size, "file:checksum": t.multihash},
            ),
        )
    d = item.to_dict(include_self_link=True, transform_hrefs=False)
    d["properties"]["start_datetime"] = props["start_datetime"]  # pystac's form has microseconds
    d["properties"]["end_datetime"] = props["end_datetime"]
    return d


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def collection(
    product: str,
    version: str,
    family: str,
    self_url: str,
    items: Iterable[tuple[str, Mapping[str, Any]]],
) -> dict[str, Any]:
    """The Collection of a product version from its items (``(relative href, item)`` pairs):
    spatial extent the union of their bboxes, temporal extent their periods, summaries of their
    grids and bands, a relative ``item`` link to each."""
    import pystac

    hrefs, bboxes, starts, ends = [], [], [], []
    codes: set[str] = set()
    gsds: set[float] = set()
    assets: dict[str, Mapping[str, Any]] = {}
    for href, it in items:
        hrefs.append(href)
        bboxes.append(it["bbox"])
        p = it["properties"]
        starts.append(p["start_datetime"])
        ends.append(p["end_datetime"])
        codes.add(p.get("proj:code", ""))
        if "gsd" in p:
            gsds.add(p["gsd"])
        for k, a in it.get("assets", {}).items():
            assets.setdefault(k, a)
    if not hrefs:
        raise ValueError(f"{product} {version}: no done tiles to make a collection of")
    union = [
        min(b[0] for b in bboxes),
        min(b[1] for b in bboxes),
        max(b[2] for b in bboxes),
        max(b[3] for b in bboxes),
    ]
    if any(b[0] > b[2] for b in bboxes):  # a footprint across the antimeridian: all longitudes
        union[0], union[2] = -180.0, 180.0
    t0, t1 = (pystac.utils.str_to_datetime(t) for t in (min(starts), max(ends)))
    summaries = {"proj:code": sorted(c for c in codes if c), "gsd": sorted(gsds)}
    eo = [a["eo:bands"][0] for a in assets.values() if "eo:bands" in a]
    if eo:
        summaries["eo:bands"] = eo
    coll = pystac.Collection(
        id=product,
        title=f"{product} {version}",
        description=(
            f"{family} of Sentinel-2 surface reflectance per grid tile, version {version}, "
            "computed by gmrun"
        ),
        extent=pystac.Extent(pystac.SpatialExtent([union]), pystac.TemporalExtent([[t0, t1]])),
        license=LICENSE,
        keywords=["sentinel-2", "geomedian", family],
        providers=[pystac.Provider("gmrun", roles=[pystac.ProviderRole.PROCESSOR])],
        summaries=pystac.Summaries(summaries),
        extra_fields={
            "item_assets": {
                k: {kk: vv for kk, vv in a.items() if kk in ("type", "title", "roles")}
                for k, a in assets.items()
            },
            "gmrun:version": version,
        },
        stac_extensions=[EXTENSIONS["eo"], EXTENSIONS["proj"]] if eo else [EXTENSIONS["proj"]],
    )
    coll.add_link(pystac.Link("root", "./collection.json", "application/json"))
    coll.add_link(pystac.Link("self", store.absolute(self_url), "application/json"))
    for h in hrefs:
        coll.add_link(pystac.Link("item", h, "application/geo+json"))
    return coll.to_dict(include_self_link=True, transform_hrefs=False)
