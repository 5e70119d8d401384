"""Planner at scale: ≥200 000 STAC items (metadata only, no pixels) over a 30 × 30 tile region.

    .venv/bin/python benchmarks/bench_plan.py [--items 200000] [--tiles 30] [--workdir /tmp/bench-plan]

Step 1 (a child process) writes ``items.ndjson``: Sentinel-2-like items of the exact shape
``runner/demo/synth.py::_item`` produces (14 assets, projection/raster/eo fields), one per
(granule, date), granules being 1° × 1° cells snapped to a 109.8 km UTM square, dates spread over
2023. Step 2 (another child) runs the planner exactly as ``gmrun plan`` does
(:func:`runner.planner.assign.stream_plan` + outputs) into ``plan/`` and reports its wall time and peak RSS
(``VmHWM`` of that process alone). Step 3 checks a sample of tiles against a plain per-item
shapely intersection.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

X0, Y0 = 190, 60  #: south-west tile of the region (central Africa)


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def region_tiles(n: int) -> list:
    from runner.planner.grid import TileId

    return [TileId(X0 + i, Y0 + j) for j in range(n) for i in range(n)]


def generate(path: Path, n_items: int, n_tiles: int) -> None:
    from pyproj import Transformer

    from runner.common.config import RunConfig
    from runner.demo.synth import Acquisition, Granule, _item, utm_epsg, utm_zone
    from runner.planner.grid import TileGrid

    grid = TileGrid.from_config(RunConfig().grid)
    tiles = region_tiles(n_tiles)
    lo, hi = grid.bounds(tiles[0]), grid.bounds(tiles[-1])
    to_ll = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    (w, e), (s, n) = to_ll.transform([lo.left, hi.right], [lo.bottom, hi.top])
    cells = []
    for lat in range(math.floor(s), math.ceil(n)):
        for lon in range(math.floor(w), math.ceil(e)):
            zone = utm_zone(lon + 0.5)
            epsg = utm_epsg(zone, lat + 0.5)
            x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon + 0.5, lat + 0.5)
            left, bottom = math.floor((x - 54_900) / 60) * 60, math.floor((y - 54_900) / 60) * 60
            cells.append(
                Granule(epsg, left, bottom, left + 109_800, bottom + 109_800, f"{zone:02d}XSY")
            )
    per = math.ceil(n_items / len(cells))
    t0 = datetime(2023, 1, 1, 8, 0, tzinfo=UTC)
    nan = float("nan")
    folder = Path("/data/none")
    written = 0
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for k in range(per):
            for gi, g in enumerate(cells):
                if written >= n_items:
                    break
                when = t0 + timedelta(days=365 * k / per, minutes=gi % 60)
                acq = Acquisition(k, when, nan, nan, 0.0, nan, 0.0, False, False, False, False)
                item = _item(
                    acq,
                    g,
                    folder,
                    f"S2_{g.code}_{gi:04d}_{k:04d}",
                    (gi * 7 + k) % 100,
                    "sentinel-2a" if k % 2 else "sentinel-2b",
                )
                f.write(json.dumps(item, separators=(",", ":")) + "\n")
                written += 1
    tmp.replace(path)
    print(json.dumps({"granules": len(cells), "items": written, "bytes": path.stat().st_size}))


def plan(path: Path, out: Path, n_tiles: int) -> None:
    from runner.common.config import RunConfig
    from runner.planner.assign import stream_plan
    from runner.planner.period import Period
    from runner.planner.report import node_hours, write_map_files

    t0 = time.monotonic()
    p = stream_plan(RunConfig(), region_tiles(n_tiles), str(path), Period.year(2023), str(out))
    t1 = time.monotonic()
    write_map_files(p, str(out))
    t2 = time.monotonic()
    print(
        json.dumps(
            {
                "seconds_plan": round(t1 - t0, 1),
                "seconds_outputs": round(t2 - t1, 1),
                "peak_rss_mib": round(vm_hwm_mib()),
                "tiles": len(p.tiles),
                "item_tile_pairs": sum(tp.n_items for tp in p.tiles),
                "max_obs": max(tp.n_obs for tp in p.tiles),
                "node_hours": round(node_hours(p), 1),
            }
        )
    )


def assign(path: Path, n_tiles: int) -> None:
    """The in-memory API: ``assign_to_tiles`` over all items (their id/geometry/properties)."""
    from runner.common.config import RunConfig
    from runner.planner.catalog import assign_to_tiles, iter_catalog
    from runner.planner.grid import TileGrid

    grid = TileGrid.from_config(RunConfig().grid)
    t0 = time.monotonic()
    fields = frozenset(("id", "geometry", "properties"))
    by_tile = assign_to_tiles(
        (it for _line, it in iter_catalog(str(path), fields)), grid, region_tiles(n_tiles)
    )
    print(
        json.dumps(
            {
                "assign_to_tiles_seconds": round(time.monotonic() - t0, 1),
                "peak_rss_mib": round(vm_hwm_mib()),
                "item_tile_pairs": sum(len(v) for v in by_tile.values()),
            }
        )
    )


def check(path: Path, out: Path, n_tiles: int, sample: int = 12) -> None:
    """A sample of tiles: their item ids equal a brute-force per-item shapely intersection."""
    import shapely
    from odc.geo import CRS
    from odc.geo.geom import Geometry

    from runner.common.config import RunConfig
    from runner.planner.grid import TileGrid

    grid = TileGrid.from_config(RunConfig().grid)
    tiles = region_tiles(n_tiles)[:: max(1, n_tiles * n_tiles // sample)]
    want: dict = {t: [] for t in tiles}
    fps = {t: grid.footprint(t).geom for t in tiles}
    with path.open() as f:
        for line in f:
            it = json.loads(line)
            fp = Geometry(it["geometry"], CRS("EPSG:4326")).to_crs(CRS(grid.crs)).geom
            for t in tiles:
                if shapely.intersection(fp, fps[t]).area > 0:
                    want[t].append(it["id"])
    bad = 0
    for t in tiles:
        got = [
            json.loads(ln)["id"] for ln in (out / "items" / f"{t}.ndjson").read_text().splitlines()
        ]
        bad += sorted(got) != sorted(want[t])
    print(json.dumps({"checked_tiles": len(tiles), "mismatches": bad}))
    if bad:
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--tiles", type=int, default=30, help="Region edge in tiles.")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench-plan"))
    ap.add_argument("--check", action="store_true", help="Also brute-force check a sample (slow).")
    ap.add_argument(
        "--assign",
        action="store_true",
        help="Also time the in-memory assign_to_tiles over the items' id/geometry/properties.",
    )
    ap.add_argument(
        "--step", choices=["generate", "plan", "check", "assign"], help=argparse.SUPPRESS
    )
    a = ap.parse_args()
    items = a.workdir / f"items-{a.items}-{a.tiles}.ndjson"
    out = a.workdir / "plan"
    if a.step == "generate":
        generate(items, a.items, a.tiles)
        return
    if a.step == "plan":
        plan(items, out, a.tiles)
        return
    if a.step == "assign":
        assign(items, a.tiles)
        return
    if a.step == "check":
        check(items, out, a.tiles)
        return
    a.workdir.mkdir(parents=True, exist_ok=True)
    base = [
        sys.executable,
        __file__,
        "--items",
        str(a.items),
        "--tiles",
        str(a.tiles),
        "--workdir",
        str(a.workdir),
    ]
    if not items.exists():
        subprocess.run([*base, "--step", "generate"], check=True)
    subprocess.run([*base, "--step", "plan"], check=True)
    if a.assign:
        subprocess.run([*base, "--step", "assign"], check=True)
    if a.check:
        subprocess.run([*base, "--step", "check"], check=True)


if __name__ == "__main__":
    main()
