"""How ``runner/data/africa.geojson`` was made (run by hand; not part of the package).

Source: Natural Earth 1:110m "Admin 0 - Countries" (public domain), as bundled by geopandas < 1.0
in ``geopandas/datasets/naturalearth_lowres``. geopandas itself is not needed; ``pyshp`` reads
the shapefile::

    pip download --no-deps geopandas==0.14.4 -d /tmp/gp
    cd /tmp/gp && unzip -o geopandas-0.14.4-py3-none-any.whl 'geopandas/datasets/*'
    pip install --target /tmp/gp/lib pyshp
    PYTHONPATH=/tmp/gp/lib .venv/bin/python benchmarks/make_africa_outline.py \\
        /tmp/gp/geopandas/datasets/naturalearth_lowres/naturalearth_lowres.shp runner/data/africa.geojson

It keeps the countries whose ``continent`` is ``Africa``, unions them (shapely), simplifies the
union to 0.05° (topology preserving) and rounds coordinates to 1e-4° (about 10 m).
"""

from __future__ import annotations

import json
import sys

import shapefile  # pyshp
import shapely
from shapely.geometry import mapping, shape

TOLERANCE_DEG = 0.05


def main(shp: str, out: str) -> None:
    reader = shapefile.Reader(shp)
    fields = [f[0] for f in reader.fields[1:]]
    geoms = []
    names = []
    for sr in reader.shapeRecords():
        rec = dict(zip(fields, sr.record, strict=True))
        if rec["continent"] == "Africa":
            geoms.append(shapely.make_valid(shape(sr.shape.__geo_interface__)))
            names.append(rec["name"])
    union = shapely.union_all(geoms)
    simple = shapely.set_precision(union.simplify(TOLERANCE_DEG, preserve_topology=True), 1e-4)
    assert simple.is_valid and not simple.is_empty
    doc = {
        "type": "Feature",
        "properties": {
            "name": "africa",
            "source": "Natural Earth 1:110m Admin 0 Countries (public domain), via geopandas 0.14.4 "
            "naturalearth_lowres; continent == Africa, unioned, simplified to 0.05 deg",
            "countries": len(names),
        },
        "geometry": mapping(simple),
    }
    with open(out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print(
        f"{len(names)} countries -> {simple.geom_type}, {shapely.get_num_coordinates(simple)} vertices, "
        f"bounds {tuple(round(v, 3) for v in simple.bounds)}"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
