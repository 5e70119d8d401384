"""Ground truth for the end-to-end tests, computed from the synthetic scene model alone.

Nothing here goes through the code under test (odc-stac, masking, the cube, algos): it asks
:class:`runner.demo.synth.SceneModel` what Sentinel-2 saw at each output pixel's centre, and at four
points 15 m away (the reach of nearest-neighbour resampling from 10/20 m UTM pixels). A pixel
whose five points agree is *unambiguous* for that date, and there the pipeline must match the
truth exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox
from pyproj import Transformer

from runner.demo.synth import (
    SCL_CIRRUS,
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MED,
    SCL_DEFECTIVE,
    SCL_NODATA,
    SCL_SHADOW,
    SceneModel,
    to_dn,
)

INVALID = (SCL_NODATA, SCL_DEFECTIVE, SCL_SHADOW, SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS)
OFFSETS = ((0.0, 0.0), (15.0, 15.0), (15.0, -15.0), (-15.0, 15.0), (-15.0, -15.0))


@dataclass
class Truth:  # (arrays at every ``step``-th pixel)
    valid: NDArray[np.bool_]  #: (t, y, x) clear at the pixel centre
    sure: NDArray[np.bool_]  #: (t, y, x) all five points agree on validity and SCL class
    exact: NDArray[np.bool_]  #: (t, y, x) ... and on land cover and digital numbers
    landcover: NDArray[np.int8]  #: (y, x) at the centre
    same_landcover: NDArray[np.bool_]  #: (y, x) all five points have the same land cover
    scl: NDArray[np.uint8]  #: (t, y, x) at the centre
    dn: NDArray[np.uint16]  #: (t, y, x, band) at the centre
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]


def pixel_lonlat(
    geobox: GeoBox, dx: float = 0.0, dy: float = 0.0, step: int = 1
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Lon/lat of the centres of every ``step``-th pixel, shifted by (dx, dy) CRS units."""
    ny, nx = geobox.shape.yx
    a = geobox.transform
    cols, rows = np.meshgrid(np.arange(0, nx, step) + 0.5, np.arange(0, ny, step) + 0.5)
    x = a.c + cols * a.a + dx
    y = a.f + rows * a.e + dy
    tr = Transformer.from_crs(geobox.crs.to_wkt(), "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(x, y)
    return np.asarray(lon), np.asarray(lat)


def truth(model: SceneModel, geobox: GeoBox, step: int = 1) -> Truth:
    """The truth at every ``step``-th pixel of ``geobox`` (arrays are ``[::step, ::step]``)."""
    points = [pixel_lonlat(geobox, dx, dy, step) for dx, dy in OFFSETS]
    lc = [model.landcover(*p) for p in points]
    same_lc = np.all([c == lc[0] for c in lc[1:]], axis=0)
    valid_l, sure_l, exact_l, scl_l, dn_l = [], [], [], [], []
    for acq in model.acquisitions:
        obs = [model.observe(*p, acq) for p in points]
        ok = [~np.isin(o.scl, INVALID) for o in obs]
        same = np.all([o == ok[0] for o in ok[1:]], axis=0)
        same &= np.all([o.scl == obs[0].scl for o in obs[1:]], axis=0)
        dn0 = to_dn(obs[0].reflectance)
        exact = (
            same
            & same_lc
            & np.all([(to_dn(o.reflectance) == dn0).all(axis=-1) for o in obs[1:]], axis=0)
        )
        valid_l.append(ok[0])
        sure_l.append(same)
        exact_l.append(exact)
        scl_l.append(obs[0].scl)
        dn_l.append(dn0)
    return Truth(
        np.stack(valid_l),
        np.stack(sure_l),
        np.stack(exact_l),
        lc[0],
        same_lc,
        np.stack(scl_l),
        np.stack(dn_l),
        *points[0],
    )
