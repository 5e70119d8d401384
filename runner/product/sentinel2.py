"""What Sentinel-2 MSI bands are: their common names and wavelengths, for ``eo:bands``.

Centre wavelengths and full widths at half maximum (µm) are the mean of Sentinel-2A and 2B as
published by ESA (Sentinel-2 MSI spectral response functions, S2-SRF COPE-GSEG-EOPG-TN-15-0007
v3.1); common names are the STAC eo extension's (v1.1.0) vocabulary. Band names are matched as
Sentinel-2 ids (``B04``, ``B8A``) or as the common-name style asset keys of Earth Search and
Planetary Computer (``red``, ``nir08``, ``swir16``, ``rededge1``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SpectralBand:
    """One Sentinel-2 MSI band."""

    id: str  #: ``B04``
    common_name: str  #: ``red`` (eo extension vocabulary)
    center_wavelength: float  #: µm
    full_width_half_max: float  #: µm
    resolution: int  #: native pixel size, m


BANDS: tuple[SpectralBand, ...] = (
    SpectralBand("B01", "coastal", 0.443, 0.021, 60),
    SpectralBand("B02", "blue", 0.490, 0.066, 10),
    SpectralBand("B03", "green", 0.560, 0.036, 10),
    SpectralBand("B04", "red", 0.665, 0.031, 10),
    SpectralBand("B05", "rededge", 0.704, 0.015, 20),
    SpectralBand("B06", "rededge", 0.740, 0.015, 20),
    SpectralBand("B07", "rededge", 0.783, 0.020, 20),
    SpectralBand("B08", "nir", 0.842, 0.106, 10),
    SpectralBand("B8A", "nir08", 0.865, 0.021, 20),
    SpectralBand("B09", "nir09", 0.945, 0.020, 60),
    SpectralBand("B10", "cirrus", 1.375, 0.031, 60),
    SpectralBand("B11", "swir16", 1.610, 0.091, 20),
    SpectralBand("B12", "swir22", 2.190, 0.175, 20),
)

#: asset keys of the STAC catalogs that name bands by colour (Earth Search v1, ...)
_ALIASES = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
}
_BY_ID = {b.id: b for b in BANDS}


def spectral_band(name: str) -> SpectralBand | None:
    """The Sentinel-2 band an input band name stands for (``B04``, ``b4``, ``red``), if any.

    >>> spectral_band("red").id, spectral_band("B8A").common_name, spectral_band("emad")
    ('B04', 'nir08', None)
    """
    key = name.strip()
    if key.lower() in _ALIASES:
        return _BY_ID[_ALIASES[key.lower()]]
    up = key.upper()
    if up.startswith("B") and up[1:].isdigit() and len(up) <= 3:
        up = f"B{int(up[1:]):02d}"
    return _BY_ID.get(up)


def rgb_bands(names: tuple[str, ...]) -> tuple[str, str, str] | None:
    """The names among ``names`` that are red, green and blue (for true-colour pictures)."""
    found: dict[str, str] = {}
    for n in names:
        sb = spectral_band(n)
        if sb is not None and sb.common_name in ("red", "green", "blue"):
            found.setdefault(sb.common_name, n)
    if len(found) < 3:
        return None
    return found["red"], found["green"], found["blue"]
