"""A synthetic Sentinel-2 L2A catalog: real COGs + STAC items from an analytic scene model.

The scene is a function of (lon, lat, date) alone, so every granule that sees a place on a day
sees the same thing, whatever its UTM zone, and tests can ask the model for the truth at any
pixel of any grid (:class:`SceneModel`) without going through the code under test.

What it contains, all deterministic from ``seed``:

* **land cover** classes (water, forest, cropland, grassland, bare rock) from smooth random fields,
  each with a seasonal surface-reflectance curve per band; bare rock is constant in time, so its
  clear observations are identical and the geomedian must return them exactly;
* **granules** in UTM zones like MGRS tiles: one per zone that the bbox touches, overlapping across
  the zone boundary, so a place near it is seen twice on one solar day (fused, not double-counted);
* **swath edges**: on some dates a slanted line beyond which the granule holds nodata (0, SCL 0);
* **clouds** (SCL 8 medium / 9 high probability) with **shadows** (SCL 3) cast at an offset,
  **cirrus** (SCL 10), **thin haze** (unflagged, slightly brighter), **snow** (SCL 11, valid) on
  some winter dates, a **defective** patch (SCL 1), and **outlier dates**: a fire scar (dark NIR)
  and a flood (water, SCL 6) that the geomedian should resist.

Bands are written as in Sentinel-2: B02 B03 B04 B08 at 10 m; B05 B06 B07 B8A B11 B12 and SCL at
20 m; uint16 with DN = (reflectance + 0.1) / 1e-4 (processing baseline 04.00 offset), nodata 0.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

BANDS_10M: tuple[str, ...] = ("B02", "B03", "B04", "B08")
BANDS_20M: tuple[str, ...] = ("B05", "B06", "B07", "B8A", "B11", "B12")
ALL_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
SCALE = 1e-4
OFFSET = -0.1

# SCL classes (Sentinel-2 L2A Scene Classification)
SCL_NODATA, SCL_DEFECTIVE, SCL_SHADOW, SCL_VEG, SCL_BARE, SCL_WATER = 0, 1, 3, 4, 5, 6
SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 8, 9, 10, 11

WATER, FOREST, CROP, GRASS, BARE = 0, 1, 2, 3, 4
CLASS_NAMES = ("water", "forest", "cropland", "grassland", "bare")

#: Mean surface reflectance per class and band (order of ALL_BANDS).
_BASE = np.array(
    [
        [0.050, 0.060, 0.040, 0.035, 0.030, 0.025, 0.020, 0.018, 0.010, 0.008],  # water
        [0.030, 0.050, 0.030, 0.080, 0.200, 0.260, 0.300, 0.310, 0.150, 0.070],  # forest
        [0.050, 0.080, 0.070, 0.120, 0.220, 0.270, 0.300, 0.310, 0.220, 0.140],  # cropland
        [0.060, 0.090, 0.100, 0.140, 0.190, 0.210, 0.230, 0.240, 0.280, 0.200],  # grassland
        [0.110, 0.150, 0.190, 0.220, 0.240, 0.250, 0.260, 0.270, 0.330, 0.290],  # bare rock
    ],
    dtype=np.float64,
)
#: Seasonal amplitude per class and band (bare rock: none, it is constant).
_AMP = np.array(
    [
        [0.005, 0.005, 0.005, 0.004, 0.003, 0.003, 0.003, 0.003, 0.002, 0.002],
        [0.005, 0.008, 0.006, 0.015, 0.040, 0.050, 0.060, 0.060, 0.030, 0.015],
        [0.020, 0.030, 0.040, 0.040, 0.080, 0.100, 0.120, 0.120, 0.060, 0.050],
        [0.015, 0.020, 0.030, 0.030, 0.040, 0.050, 0.060, 0.060, 0.050, 0.040],
        [0.0] * 10,
    ],
    dtype=np.float64,
)
_CLOUD = np.array([0.45, 0.46, 0.47, 0.48, 0.49, 0.50, 0.51, 0.51, 0.40, 0.32])
_SNOW = np.array([0.80, 0.78, 0.75, 0.72, 0.68, 0.65, 0.62, 0.60, 0.10, 0.06])
_BURN = np.array([0.030, 0.040, 0.045, 0.060, 0.070, 0.075, 0.080, 0.085, 0.150, 0.160])
_KM_PER_DEG_LAT = 110.574


def _rng(seed: int, *key: object) -> np.random.Generator:
    h = hashlib.sha256(repr((seed, *key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


class _Field:
    """A smooth random field in [-1, 1]-ish: a sum of random plane waves of a given scale (km)."""

    def __init__(self, rng: np.random.Generator, scale_km: float, n: int = 7) -> None:
        ang = rng.uniform(0, 2 * np.pi, n)
        k = 2 * np.pi / (scale_km * rng.uniform(0.6, 1.6, n))
        self.kx, self.ky = k * np.cos(ang), k * np.sin(ang)
        self.phase = rng.uniform(0, 2 * np.pi, n)
        self.norm = math.sqrt(n / 2)

    def __call__(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.zeros(np.broadcast(x, y).shape)
        for kx, ky, ph in zip(self.kx, self.ky, self.phase, strict=True):
            out += np.cos(kx * x + ky * y + ph)
        return out / self.norm


@dataclass(frozen=True)
class Acquisition:
    """One overpass (one date): its time and its weather."""

    index: int
    time: datetime
    cloud_threshold: float  #: cloud where the cloud field exceeds this (inf: clear day)
    cirrus_threshold: float
    haze: float  #: added reflectance in the visible bands (thin, unflagged haze)
    swath_edge_km: float  #: no data beyond this along-track line (inf: full coverage)
    swath_angle: float
    snow: bool
    fire: bool
    flood: bool
    defective: bool


@dataclass(frozen=True)
class Observation:
    """What a granule records at some places on one date."""

    scl: NDArray[np.uint8]
    reflectance: NDArray[np.float64]  #: (..., band) in ALL_BANDS order
    covered: NDArray[np.bool_]  #: inside the swath


class SceneModel:
    """The analytic world behind the synthetic catalog (see the module docstring)."""

    def __init__(
        self,
        bbox: tuple[float, float, float, float],
        start: date,
        end: date,
        n_dates: int = 40,
        seed: int = 0,
    ) -> None:
        self.bbox = bbox
        self.seed = seed
        self.lon0 = (bbox[0] + bbox[2]) / 2
        self.lat0 = (bbox[1] + bbox[3]) / 2
        self._kx = 111.320 * math.cos(math.radians(self.lat0))
        self._lc_a = _Field(_rng(seed, "lc", "a"), 3.0)
        self._lc_b = _Field(_rng(seed, "lc", "b"), 2.0)
        self._texture = _Field(_rng(seed, "texture"), 0.35)
        self._snowfield = _Field(_rng(seed, "snow"), 1.5)
        self.acquisitions = tuple(self._acquisitions(start, end, n_dates))
        self._cloud = [_Field(_rng(seed, "cloud", a.index), 1.2) for a in self.acquisitions]
        self._cirrus = [_Field(_rng(seed, "cirrus", a.index), 2.5) for a in self.acquisitions]
        self.shadow_offset_km = (0.35, -0.25)

    def _acquisitions(self, start: date, end: date, n: int) -> Iterator[Acquisition]:
        rng = _rng(self.seed, "dates")
        days = (end - start).days + 1
        picks = np.linspace(0, days - 1, n).round().astype(int)
        fire_i, flood_i = int(n * 0.55), int(n * 0.8)
        for i, d in enumerate(picks):
            when = datetime.combine(start + timedelta(days=int(d)), datetime.min.time(), UTC)
            # Sentinel-2 crosses the equator ~10:30 local solar time.
            when += timedelta(hours=10.5 - self.lon0 / 15.0, seconds=int(rng.integers(0, 600)))
            weather = rng.random()
            cloud_thr = math.inf if weather < 0.25 else float(rng.uniform(-0.6, 1.2))
            edge = float(rng.uniform(-1.0, 2.0)) if rng.random() < 0.15 else math.inf
            doy = when.timetuple().tm_yday
            yield Acquisition(
                index=i,
                time=when,
                cloud_threshold=cloud_thr,
                cirrus_threshold=float(rng.uniform(0.4, 1.0)) if rng.random() < 0.2 else math.inf,
                haze=float(rng.uniform(0.01, 0.04)) if rng.random() < 0.2 else 0.0,
                swath_edge_km=edge,
                swath_angle=float(rng.uniform(-0.3, 0.3)),
                snow=(doy < 40 or doy > 340) and rng.random() < 0.5,
                fire=i == fire_i,
                flood=i == flood_i,
                defective=rng.random() < 0.05,
            )

    # --- geometry -------------------------------------------------------------------------------
    def km(
        self, lon: NDArray[np.float64], lat: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Local east/north kilometres from the bbox centre (the fields live in this plane)."""
        return (np.asarray(lon) - self.lon0) * self._kx, (
            np.asarray(lat) - self.lat0
        ) * _KM_PER_DEG_LAT

    def landcover(self, lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.int8]:
        x, y = self.km(lon, lat)
        a, b = self._lc_a(x, y), self._lc_b(x, y)
        lc = np.full(a.shape, CROP, dtype=np.int8)
        lc[a > 0.35] = FOREST
        lc[(a <= 0.35) & (b > 0.25)] = GRASS
        lc[(a < -0.6)] = WATER
        lc[(a >= -0.6) & (a <= 0.35) & (b < -0.7)] = BARE
        return lc

    def clear_reflectance(
        self, lon: NDArray[np.float64], lat: NDArray[np.float64], when: datetime
    ) -> NDArray[np.float64]:
        """Cloud-free surface reflectance (..., band) without events (fire, flood, haze, snow)."""
        lc = self.landcover(lon, lat)
        x, y = self.km(lon, lat)
        doy = when.timetuple().tm_yday
        season = math.cos(2 * math.pi * (doy - 80) / 365.25)
        refl = _BASE[lc] + _AMP[lc] * season
        texture = np.where(lc == BARE, 0.0, 0.01 * self._texture(x, y))
        return refl + texture[..., None]

    def observe(
        self, lon: NDArray[np.float64], lat: NDArray[np.float64], acq: Acquisition
    ) -> Observation:
        """What Sentinel-2 records at (lon, lat) during ``acq``: SCL class and reflectance."""
        lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        x, y = self.km(lon, lat)
        lc = self.landcover(lon, lat)
        refl = self.clear_reflectance(lon, lat, acq.time)
        scl = np.where(lc == WATER, SCL_WATER, np.where(lc == BARE, SCL_BARE, SCL_VEG)).astype(
            np.uint8
        )
        if acq.fire:
            burn = (np.hypot(x + 0.6, y - 0.4) < 0.8) & (lc != WATER) & (lc != BARE)
            refl[burn] = _BURN
        if acq.flood:
            flood = (np.hypot(x - 0.9, y + 0.7) < 0.9) & (lc != BARE)
            refl[flood] = _BASE[WATER]
            scl[flood] = SCL_WATER
        if acq.haze:
            refl[..., :3] += np.where(lc == BARE, 0.0, acq.haze)[..., None]
        if acq.snow:
            snow = (self._snowfield(x, y) > 0.5) & (lc == GRASS)
            refl[snow] = _SNOW
            scl[snow] = SCL_SNOW
        if acq.cirrus_threshold < math.inf:
            cirrus = self._cirrus[acq.index](x, y) > acq.cirrus_threshold
            refl[cirrus] = 0.6 * refl[cirrus] + 0.4 * _CLOUD * 0.5
            scl[cirrus] = SCL_CIRRUS
        if acq.cloud_threshold < math.inf:
            field = self._cloud[acq.index]
            dx, dy = self.shadow_offset_km
            shadow = field(x + dx, y + dy) > acq.cloud_threshold
            refl[shadow] *= 0.3
            scl[shadow] = SCL_SHADOW
            c = field(x, y)
            cloud = c > acq.cloud_threshold
            refl[cloud] = _CLOUD
            scl[cloud] = np.where(
                c[cloud] > acq.cloud_threshold + 0.3, SCL_CLOUD_HIGH, SCL_CLOUD_MED
            )
        if acq.defective:
            bad = np.hypot(x + 1.5, y + 1.5) < 0.3
            scl[bad] = SCL_DEFECTIVE
        covered = np.ones(scl.shape, dtype=bool)
        if acq.swath_edge_km < math.inf:
            along = x * math.cos(acq.swath_angle) + y * math.sin(acq.swath_angle)
            covered = along < acq.swath_edge_km
        scl = np.where(covered, scl, SCL_NODATA).astype(np.uint8)
        return Observation(scl=scl, reflectance=refl, covered=covered)


def to_dn(reflectance: NDArray[np.float64]) -> NDArray[np.uint16]:
    """Reflectance to Sentinel-2 L2A digital numbers (0 is nodata, so valid DNs are >= 1)."""
    return np.clip(np.round((reflectance - OFFSET) / SCALE), 1, 65535).astype(np.uint16)


# --- granules and files ---------------------------------------------------------------------------
def utm_zone(lon: float) -> int:
    return math.floor((lon + 180) / 6) + 1


def utm_epsg(zone: int, lat: float) -> int:
    return (32600 if lat >= 0 else 32700) + zone


@dataclass(frozen=True)
class Granule:
    """A UTM rectangle standing in for an MGRS tile; ``code`` looks like ``35MQU``."""

    epsg: int
    left: float
    bottom: float
    right: float
    top: float
    code: str


def granules(
    bbox: tuple[float, float, float, float], overlap_deg: float = 0.006, margin_m: float = 240.0
) -> list[Granule]:
    """One granule per UTM zone the bbox touches; neighbours overlap by ``overlap_deg`` each side
    of the zone boundary (real MGRS tiles overlap their neighbours across zone boundaries)."""
    from pyproj import Transformer

    w, s, e, n = bbox
    out = []
    for zone in range(utm_zone(w), utm_zone(e) + 1):
        zw, ze = -180 + 6 * (zone - 1), -180 + 6 * zone
        gw, ge = max(w, zw - overlap_deg), min(e, ze + overlap_deg)
        if ge <= gw:
            continue
        epsg = utm_epsg(zone, (s + n) / 2)
        tr = Transformer.from_crs(4326, epsg, always_xy=True)
        lons = np.array([gw, ge, gw, ge, (gw + ge) / 2, (gw + ge) / 2])
        lats = np.array([s, s, n, n, s, n])
        xs, ys = tr.transform(lons, lats)
        snap = 60.0
        left = math.floor((min(xs) - margin_m) / snap) * snap
        right = math.ceil((max(xs) + margin_m) / snap) * snap
        bottom = math.floor((min(ys) - margin_m) / snap) * snap
        top = math.ceil((max(ys) + margin_m) / snap) * snap
        band = "CDEFGHJKLMNPQRSTUVWX"[min(19, max(0, int((s + n) / 2 + 80) // 8))]
        out.append(Granule(epsg, left, bottom, right, top, f"{zone:02d}{band}SY"))
    return out


def _pixel_lonlat(g: Granule, res: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    from pyproj import Transformer

    xs = np.arange(g.left + res / 2, g.right, res)
    ys = np.arange(g.top - res / 2, g.bottom, -res)
    xx, yy = np.meshgrid(xs, ys)
    tr = Transformer.from_crs(g.epsg, 4326, always_xy=True)
    lon, lat = tr.transform(xx, yy)
    return np.asarray(lon), np.asarray(lat)


def _write_cog(path: Path, data: NDArray[Any], g: Granule, res: float) -> None:
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import from_origin

    profile = {
        "driver": "GTiff",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{g.epsg}",
        "nodata": 0,
        "transform": from_origin(g.left, g.top, res, res),
    }
    with MemoryFile() as mem, mem.open(**profile) as ds:
        ds.write(data, 1)
        with rasterio.Env(GDAL_NUM_THREADS="1"):
            rio_copy(
                ds,
                str(path),
                driver="COG",
                compress="DEFLATE",
                predictor="2",
                blocksize=256,
                overview_resampling="nearest",
            )


def _item(
    acq: Acquisition, g: Granule, folder: Path, item_id: str, cloud_cover: float, platform: str
) -> dict[str, Any]:
    from pyproj import Transformer

    tr = Transformer.from_crs(g.epsg, 4326, always_xy=True)
    xs = [g.left, g.right, g.right, g.left, g.left]
    ys = [g.bottom, g.bottom, g.top, g.top, g.bottom]
    lon, lat = tr.transform(xs, ys)
    ring = [[round(a, 7), round(b, 7)] for a, b in zip(lon, lat, strict=True)]
    assets: dict[str, Any] = {}
    for band in (*ALL_BANDS, "SCL"):
        res = 10.0 if band in BANDS_10M else 20.0
        shape = [round((g.top - g.bottom) / res), round((g.right - g.left) / res)]
        raster: dict[str, Any] = {"data_type": "uint16", "nodata": 0, "spatial_resolution": res}
        if band != "SCL":
            raster.update(scale=SCALE, offset=OFFSET)
        else:
            raster["data_type"] = "uint8"
        assets[band] = {
            "href": str((folder / f"{item_id}_{band}.tif").resolve()),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "proj:epsg": g.epsg,
            "proj:shape": shape,
            "proj:transform": [res, 0.0, g.left, 0.0, -res, g.top],
            "raster:bands": [raster],
        }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        ],
        "id": item_id,
        "collection": "sentinel-2-l2a",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [min(lon), min(lat), max(lon), max(lat)],
        "properties": {
            "datetime": acq.time.isoformat().replace("+00:00", "Z"),
            "platform": platform,
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": round(cloud_cover, 2),
            "s2:mgrs_tile": g.code,
            "proj:epsg": g.epsg,
            "gsd": 10,
        },
        "links": [],
        "assets": assets,
    }


@dataclass(frozen=True)
class SynthResult:
    catalog: Path  #: the ndjson item file
    n_items: int
    n_dates: int
    model: SceneModel


def synthesize(
    out: Path,
    bbox: tuple[float, float, float, float],
    start: date,
    end: date,
    n_dates: int = 40,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Write COGs and ``items.ndjson`` for ``bbox`` (lon/lat) and the dates in [start, end]."""
    out = Path(out)
    cogs = out / "cogs"
    cogs.mkdir(parents=True, exist_ok=True)
    model = SceneModel(bbox, start, end, n_dates=n_dates, seed=seed)
    grans = granules(bbox)
    grids = {(g, res): _pixel_lonlat(g, res) for g in grans for res in (10.0, 20.0)}
    items = []
    total, done = len(grans) * len(model.acquisitions), 0
    for acq in model.acquisitions:
        for g in grans:
            platform = "sentinel-2a" if acq.index % 2 == 0 else "sentinel-2b"
            item_id = f"S2{platform[-1].upper()}_{g.code}_{acq.time:%Y%m%d}_0_L2A"
            lon, lat = grids[(g, 10.0)]
            obs10 = model.observe(lon, lat, acq)
            lon, lat = grids[(g, 20.0)]
            obs20 = model.observe(lon, lat, acq)
            for b, band in enumerate(ALL_BANDS):
                obs = obs10 if band in BANDS_10M else obs20
                dn = np.where(obs.covered, to_dn(obs.reflectance[..., b]), 0).astype(np.uint16)
                _write_cog(
                    cogs / f"{item_id}_{band}.tif", dn, g, 10.0 if band in BANDS_10M else 20.0
                )
            _write_cog(cogs / f"{item_id}_SCL.tif", obs20.scl, g, 20.0)
            valid = obs20.scl[obs20.covered]
            cloudy = np.isin(valid, (SCL_SHADOW, SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS))
            cc = 100.0 * float(cloudy.mean()) if valid.size else 0.0
            items.append(_item(acq, g, cogs, item_id, cc, platform))
            done += 1
            if progress:
                progress(done, total)
    catalog = out / "items.ndjson"
    catalog.write_text("".join(json.dumps(it) + "\n" for it in items))
    return SynthResult(
        catalog=catalog, n_items=len(items), n_dates=len(model.acquisitions), model=model
    )
