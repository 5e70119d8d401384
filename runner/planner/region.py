"""Regions to plan: a named outline shipped with gmrun, a GeoJSON file, or a list of tile ids.

``africa`` is the Natural Earth 1:110m outline of the African countries (public domain), unioned
and simplified to 0.05° (``runner/data/africa.geojson``; ``benchmarks/make_africa_outline.py``
says how it was made). It is an outline of the land: tiles of open sea are not planned.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import shapely
from odc.geo import CRS
from odc.geo.geom import Geometry
from shapely.geometry import shape
from shapely.validation import explain_validity

from runner.common import store
from runner.common.errors import UserInputError
from runner.planner.grid import TileGrid, TileId

#: Named regions: name → GeoJSON file in ``runner/data``.
REGIONS: dict[str, str] = {"africa": "africa.geojson"}

_POLYGONAL = ("Polygon", "MultiPolygon")
#: the plan's region beside ``plan.json`` (lon/lat GeoJSON geometry), when it was planned from one
REGION_FILE = "region.geojson"


def named_region(name: str) -> Geometry:
    """The outline of a named region (EPSG:4326); an unknown name lists the known ones."""
    key = name.strip().lower()
    if key not in REGIONS:
        known = ", ".join(sorted(REGIONS))
        raise UserInputError(f"unknown region {name!r}: known regions are {known}")
    text = resources.files("runner").joinpath("data", REGIONS[key]).read_text()
    return parse_geojson(json.loads(text), f"region {key}")


def read_geojson(url: str) -> Geometry:
    """The (multi)polygon of a GeoJSON file: a Polygon, MultiPolygon, Feature or FeatureCollection
    (its features' polygons, unioned). CRS from a ``crs`` member if present, else EPSG:4326."""
    raw = store.read_user_file(url, "GeoJSON file")
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserInputError(f"{url}: not JSON ({e})") from None
    return parse_geojson(doc, url)


def _crs_of(doc: dict[str, Any], where: str) -> CRS:
    member = doc.get("crs")
    if member is None:
        return CRS("EPSG:4326")
    name = member
    if isinstance(member, dict):
        name = (member.get("properties") or {}).get("name")
    if not isinstance(name, str):
        raise UserInputError(f"{where}: unreadable crs member {json.dumps(member)[:80]}")
    try:
        return CRS(name)
    except Exception:
        raise UserInputError(f"{where}: unknown CRS {name!r}") from None


def _geometries(doc: Any, where: str) -> list[Any]:
    if not isinstance(doc, dict):
        raise UserInputError(f"{where}: expected a GeoJSON object")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise UserInputError(f"{where}: FeatureCollection without a features list")
        return [g for f in feats for g in _geometries(f, where)]
    if kind == "Feature":
        geom = doc.get("geometry")
        return [] if geom is None else _geometries(geom, where)
    if kind == "GeometryCollection":
        return [g for sub in doc.get("geometries") or [] for g in _geometries(sub, where)]
    if kind in _POLYGONAL:
        try:
            return [shape(doc)]
        except Exception as e:
            raise UserInputError(f"{where}: malformed {kind} ({e})") from None
    raise UserInputError(f"{where}: a region must be a Polygon or MultiPolygon, not {kind!r}")


def parse_geojson(doc: Any, where: str = "GeoJSON") -> Geometry:
    """A GeoJSON document as one valid, non-empty (multi)polygon; else :class:`UserInputError`."""
    geoms = _geometries(doc, where)
    crs = _crs_of(doc, where)
    for g in geoms:
        if not g.is_valid:
            reason = explain_validity(g)
            raise UserInputError(
                f"{where}: invalid polygon ({reason}); fix it, e.g. with shapely's make_valid"
            )
    geoms = [g for g in geoms if not g.is_empty and g.area > 0]
    if not geoms:
        raise UserInputError(f"{where}: the region is empty (no polygon with an area)")
    union = geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
    return Geometry(union, crs=crs)


def read_tiles_file(url: str) -> list[TileId]:
    """Tile ids, one a line (blank lines and ``#`` comments ignored)."""
    text = store.read_user_file(url, "tiles file").decode()
    out: list[TileId] = []
    for n, line in enumerate(text.splitlines(), 1):
        word = line.split("#", 1)[0].strip()
        if word:
            try:
                out.append(TileId.parse(word))
            except UserInputError as e:
                raise UserInputError(f"{Path(url).name}:{n}: {e}") from None
    if not out:
        raise UserInputError(f"{url}: no tile ids")
    return out


def select_tiles(
    grid: TileGrid,
    *,
    bbox: tuple[float, float, float, float] | None = None,
    tiles: list[TileId] | None = None,
    tiles_file: str | None = None,
    region: str | None = None,
    geojson: str | None = None,
) -> tuple[list[TileId], Geometry | None]:
    """The tiles of exactly one region argument, and the region's outline (None for tile lists)."""
    given = [
        n
        for n, v in (
            ("--bbox", bbox),
            ("--tiles", tiles),
            ("--tiles-file", tiles_file),
            ("--region", region),
            ("--geojson", geojson),
        )
        if v
    ]
    if len(given) != 1:
        what = "got " + " and ".join(given) if given else "none given"
        raise UserInputError(
            f"give a region: exactly one of --region NAME, --geojson FILE, --bbox W,S,E,N, --tiles IDS "
            f"or --tiles-file FILE ({what})"
        )
    if tiles:
        return sorted(set(tiles)), None
    if tiles_file:
        return sorted(set(read_tiles_file(tiles_file))), None
    if bbox:
        from odc.geo.geom import box

        geom = box(*bbox, CRS("EPSG:4326"))
    elif region:
        geom = named_region(region)
    else:
        geom = read_geojson(geojson or "")
    return list(grid.tiles(geom)), geom


def plan_outline(plan_folder: str) -> Geometry | None:
    """The region a plan was made for (:data:`REGION_FILE`), or None (a bbox or tile list plan)."""
    url = store.join(plan_folder, REGION_FILE)
    if not store.exists(url):
        return None
    return parse_geojson(json.loads(store.read_bytes(url)), url)
