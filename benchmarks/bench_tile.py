"""Benchmark: one whole tile end to end through the worker, its reduce against odc-algo's, and
the extrapolation to a full 96 km tile and to the continent (issue #7).

Usage::

    .venv/bin/python benchmarks/bench_tile.py                 # the standard case (long: see below)
    .venv/bin/python benchmarks/bench_tile.py --px 600        # a quick look while developing

Standard case: a synthetic tile of 2400 x 2400 px (24 km at 10 m), 10 bands, 40 dates of 2023,
COGs on local disk, made with the project's own synthetic catalog (``runner.demo.synth``, seed 0) in
one UTM zone (one granule a date) and planned on a grid of 24 km tiles. The catalog, the plan and
the loaded cube are cached under ``--workdir`` keyed by (px, dates, seed): a rerun reuses them.

What it measures, side by side in one run (medians where ``--repeats`` > 1):

1. **worker, whole tile**: ``gmrun run-tile`` in a subprocess (all cores): wall seconds, seconds
   per stage (from the tile's metrics JSON), CPU seconds (``wait4`` rusage), pixel-observations
   (ny * nx * observations) per second of the whole run and of the reduce, peak RSS (the
   worker's own ``VmHWM`` from the metrics, and polled from outside with psutil), cube bytes and
   peak RSS / cube bytes. Target: peak RSS <= 1.3 x cube bytes + 300 MB.
2. **worker, sub-tiled** (only when ``gmrun run-tile`` has ``--max-memory``): the same tile with a
   budget of ``--budget-fraction`` of the whole run's peak; its peak RSS against the budget
   (target: <= budget) and its output COGs compared array by array with the whole run's
   (target: equal).
3. **reduce, ours vs odc-algo**: the cube the worker loads (``runner.worker.load.load_cube``, saved once
   as ``.npy``) reduced by ``algos.geomedian_mads_u16`` and by ``odc.algo.geomedian_with_mads``
   (the Digital Earth Africa / odc-stats code path, PyPI ``odc-algo``; it calls GA's ``geomad``
   package), each in a fresh subprocess so that each peak RSS is its own, on the same threads:
   ours with ``num_threads=N``; odc-algo as odc-stats runs it, a Dask threaded scheduler of N
   workers over ``--odc-chunk`` px blocks, ``num_threads=1`` each. Both get the uint16 Y X B T
   array (odc-algo as a Dask-backed ``xarray.DataArray`` in YXBT order with ``nodata=0``, no
   copy), ``scale=1e-4``, ``offset=-0.1``, the same ``eps`` and ``maxiters``. Wall seconds, peak
   RSS, the speed ratio (target: ours >= 4x) and the differences between the two results.
4. **extrapolation**: the measured whole-tile throughput per core to a 9600 x 9600 tile with 75
   observations on a 32-core node (assuming linear scaling with cores; the kernels scale
   1.88-2.02x from 1 to 2 threads, see docs/algos.md), times the planner's Africa tiles, next
   to the odc-stats anchor (~12 min per 96 km tile, ~75 observations, 32-core node); and the
   memory a full tile needs whole and in row bands.

Memory: the standard cube is 2400^2 x 10 x 40 x 2 B = 4.6 GB; each reduce child holds it once
(plus odc-algo's float32 blocks). Do not run two standard cases at once on a shared machine.
Time on 2 cores: ~10 min to synthesise the catalog (once), then ~10 min for the measurements.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: South-west corner (lon, lat) of the benchmark tile: inside UTM zone 36 (30-36 E) near the
#: equator, so that each date is one granule (the demo's corner straddles a zone boundary).
CORNER = (33.0, -2.0)
PERIOD = (date(2023, 1, 1), date(2023, 12, 31))
#: odc-stats' anchor: ~12 minutes per 96 km tile with ~75 observations on a 32-core node.
ANCHOR_NODE_HOURS_PER_TILE = 12 / 60
FULL_PX, FULL_OBS, NODE_CORES = 9600, 75, 32
MB = 1e6
GIB = 1024**3


# --- the case: catalog and plan ------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One benchmark case and where its cached files live."""

    workdir: Path
    px: int  #: tile edge in pixels (10 m)
    dates: int  #: acquisition dates in 2023
    seed: int

    @property
    def key(self) -> str:
        return f"{self.px}px-{self.dates}d-s{self.seed}"

    @property
    def catalog_dir(self) -> Path:
        return self.workdir / f"catalog-{self.key}"

    @property
    def plan_dir(self) -> Path:
        return self.workdir / f"plan-{self.key}"

    @property
    def cube_path(self) -> Path:
        return self.workdir / f"cube-{self.key}.npy"

    def out_dir(self, name: str) -> Path:
        return self.workdir / f"out-{self.key}" / name


def layout(px: int) -> tuple[Any, Any, tuple[float, float, float, float]]:
    """(RunConfig, TileId, lon/lat bbox with a margin) of one ``px``-pixel tile at CORNER."""
    from odc.geo import CRS
    from odc.geo.geom import BoundingBox

    from runner.common.config import parse_config
    from runner.planner.grid import TileGrid, TileId

    res = 10.0
    corner = BoundingBox(*CORNER, *CORNER, crs=CRS("EPSG:4326")).to_crs(CRS("EPSG:6933"))
    x0, y0 = math.floor(corner.left / res) * res, math.floor(corner.bottom / res) * res
    size = px * res
    config = parse_config(
        {"grid": {"crs": "EPSG:6933", "resolution": res, "tile_size": size, "origin": [x0, y0]}},
        "bench",
    )
    grid = TileGrid.from_config(config.grid)
    assert grid.tile_pixels == px
    region = BoundingBox(x0, y0, x0 + size, y0 + size, crs=CRS("EPSG:6933")).to_crs(
        CRS("EPSG:4326")
    )
    m = 0.003
    return (
        config,
        TileId(0, 0),
        (region.left - m, region.bottom - m, region.right + m, region.top + m),
    )


def prepare(case: Case) -> tuple[str, Any]:
    """The plan's URL and the tile id; synthesises the catalog and plans it unless cached."""
    from runner.demo.synth import synthesize
    from runner.planner.assign import build_plan
    from runner.planner.catalog import read_items
    from runner.planner.period import Period

    config, tile, bbox = layout(case.px)
    done = case.catalog_dir / "done.json"
    if not done.exists():
        print(
            f"synthesising {case.dates} dates over {case.px} x {case.px} px into {case.catalog_dir} "
            "(once; cached) ...",
            flush=True,
        )
        t0 = time.perf_counter()
        last = [t0]

        def progress(i: int, n: int) -> None:
            if time.perf_counter() - last[0] > 30 or i == n:
                last[0] = time.perf_counter()
                print(f"  {i}/{n} granules, {last[0] - t0:.0f} s", flush=True)

        res = synthesize(
            case.catalog_dir, bbox, *PERIOD, n_dates=case.dates, seed=case.seed, progress=progress
        )
        done.write_text(
            json.dumps(
                {
                    "items": res.n_items,
                    "dates": res.n_dates,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
        )
    plan_json = case.plan_dir / "plan.json"
    if not plan_json.exists():
        plan, items = build_plan(
            config, [tile], read_items(str(case.catalog_dir / "items.ndjson")), Period(*PERIOD)
        )
        plan.save(str(case.plan_dir), items)
    return str(case.plan_dir), tile


# --- running a worker and watching it ---------------------------------------------------------------
@dataclass(frozen=True)
class Proc:
    """A finished child process: exit code, wall and CPU seconds, RSS polled from outside."""

    returncode: int
    wall_s: float
    cpu_s: float  #: user + system of the child (all its threads), from wait4
    polled_peak_rss: int  #: bytes, the largest RSS sampled every ``interval`` s (process tree)
    stderr_tail: str


def run_watched(
    cmd: list[str], log: Path, interval: float = 0.05, env: dict[str, str] | None = None
) -> Proc:
    """Run ``cmd`` with stdout+stderr to ``log``, sampling its RSS (and its children's) with psutil."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})}
        )
        ps = psutil.Process(proc.pid)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                rss = ps.memory_info().rss + sum(
                    c.memory_info().rss for c in ps.children(recursive=True)
                )
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(interval)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    return Proc(proc.returncode, wall, usage.ru_utime + usage.ru_stime, peak, tail)


def worker_help() -> str:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", "run-tile", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout


def run_worker(case: Case, plan_url: str, tile: Any, name: str, extra: list[str]) -> dict[str, Any]:
    """``gmrun run-tile`` on the tile into ``out-KEY/NAME``; the tile's metrics plus our own."""
    from runner.planner.plan import Plan
    from runner.worker.outputs import TileOutputs

    out = case.out_dir(name)
    cmd = [
        sys.executable,
        "-m",
        "runner.cli",
        "run-tile",
        "--plan",
        plan_url,
        "--tile",
        str(tile),
        "--output",
        str(out),
        "--overwrite",
        "--log-format",
        "json",
        *extra,
    ]
    p = run_watched(cmd, case.workdir / "logs" / f"{case.key}-{name}.log")
    if p.returncode != 0:
        raise SystemExit(
            f"error: gmrun run-tile {name} failed (exit {p.returncode}):\n{p.stderr_tail}"
        )
    plan = Plan.load(plan_url)
    outputs = TileOutputs.of(plan.config, tile, plan.period, str(out))
    metrics = json.loads(Path(outputs.metrics_url).read_text())
    return {
        "wall_s": p.wall_s,
        "cpu_s": p.cpu_s,
        "polled_peak_rss": p.polled_peak_rss,
        "metrics": metrics,
        "folder": outputs.folder,
        "outputs": outputs,
    }


def compare_outputs(a: Any, b: Any, bands: list[str]) -> list[str]:
    """Bands whose COG arrays differ between two runs' outputs (NaN equals NaN)."""
    import numpy as np
    import rasterio

    differ = []
    for band in bands:
        with rasterio.open(a.band_url(band)) as fa, rasterio.open(b.band_url(band)) as fb:
            x, y = fa.read(), fb.read()
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            differ.append(band)
    return differ


# --- reduce: ours vs odc-algo, each in its own process --------------------------------------------------
def child_load(plan_url: str, tile: str, cube_path: str) -> None:
    """Child: load the tile as the worker does (``runner.worker.load.load_cube``) and save the cube."""
    import numpy as np

    from runner.common.logs import tile_logger
    from runner.planner.plan import Plan
    from runner.worker.load import load_cube

    plan = Plan.load(plan_url)
    tp = plan.tile(tile)
    cube = load_cube(
        plan.items(tp.tile), plan.config, plan.grid.geobox(tp.tile), tile_logger(tp.tile)
    )
    tmp = cube_path + ".part.npy"
    np.save(tmp, cube.data)
    os.replace(tmp, cube_path)


def child_reduce(
    impl: str, cube_path: str, threads: int, eps: float, maxiters: int, chunk: int, result_path: str
) -> None:
    """Child: reduce the saved cube with ``impl`` (``ours`` or ``odc``) on ``threads`` threads;
    prints one JSON line (seconds, peak RSS) and saves the results (DN geomedian, emad in
    reflectance, smad, bcmad, count) to ``result_path`` (.npz)."""
    import numpy as np

    from runner.reducers.geomedian import to_dn
    from runner.worker.metrics import peak_rss_bytes

    scale, offset, nodata = 1e-4, -0.1, 0
    cube = np.load(cube_path)  # read into memory, as the worker's cube is
    ny, nx, _nb, nt = cube.shape
    rss_loaded = peak_rss_bytes()
    if impl == "ours":
        from algos import geomedian_mads_u16

        def run(c: Any) -> Any:
            r = geomedian_mads_u16(
                c,
                scale=scale,
                offset=offset,
                nodata=nodata,
                eps=eps,
                maxiters=maxiters,
                num_threads=threads,
                backend="numba",
            )
            return {
                "gm": to_dn(r.gm, scale, offset, nodata),
                "emad": r.emad,
                "smad": r.smad,
                "bcmad": r.bcmad,
                "count": r.count,
            }

    else:
        import dask
        import dask.array as da
        import xarray as xr
        from odc.algo import geomedian_with_mads

        def run(c: Any) -> Any:
            edge = min(chunk, c.shape[0], c.shape[1])
            arr = da.from_array(c, chunks=(edge, edge, -1, -1), name=False)
            yxbt = xr.DataArray(
                arr,
                dims=("y", "x", "band", "time"),
                attrs={"nodata": nodata},
                coords={"band": [f"b{i}" for i in range(c.shape[2])]},
            )
            ds = geomedian_with_mads(
                yxbt, scale=scale, offset=offset, eps=eps, maxiters=maxiters, num_threads=1
            )
            with dask.config.set(scheduler="threads", num_workers=threads):
                out = ds.compute()
            gm = np.stack([out[f"b{i}"].values for i in range(c.shape[2])], axis=-1)
            return {
                "gm": gm,
                "emad": out["emad"].values * scale,
                "smad": out["smad"].values,
                "bcmad": out["bcmad"].values,
                "count": out["count"].values,
            }

    run(np.ascontiguousarray(cube[:8, :8]))  # compile / warm up, untimed
    c0, t0 = time.process_time(), time.perf_counter()
    res = run(cube)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    np.savez(result_path, **res)
    print(
        json.dumps(
            {
                "impl": impl,
                "threads": threads,
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss": peak_rss_bytes(),
                "rss_after_load": rss_loaded,
                "px_obs": ny * nx * nt,
            }
        )
    )


def run_reduce(
    case: Case, impl: str, threads: int, eps: float, maxiters: int, chunk: int, tag: str
) -> dict[str, Any]:
    result = case.workdir / f"reduce-{case.key}-{tag}.npz"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_reduce",
        impl,
        str(case.cube_path),
        str(threads),
        str(eps),
        str(maxiters),
        str(chunk),
        str(result),
    ]
    log = case.workdir / "logs" / f"{case.key}-reduce-{tag}.log"
    p = run_watched(cmd, log, env={"OMP_NUM_THREADS": str(threads)})
    if p.returncode != 0:
        raise SystemExit(
            f"error: reduce {impl} ({threads} threads) failed (exit {p.returncode}):\n{p.stderr_tail}"
        )
    line = [ln for ln in log.read_text().splitlines() if ln.startswith('{"impl"')][-1]
    return {**json.loads(line), "polled_peak_rss": p.polled_peak_rss, "result": result}


def result_differences(ours: Path, odc: Path) -> list[str]:
    """One line per output: max and p99 of |ours - odc| (geomedian in DN, emad in reflectance)."""
    import numpy as np

    a, b = np.load(ours), np.load(odc)
    lines = []
    for k in ("gm", "emad", "smad", "bcmad", "count"):
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        if k == "gm":
            ok = (x != 0) & (y != 0)
            nan_mismatch = int(((x == 0) != (y == 0)).sum())
        else:
            ok = np.isfinite(x) & np.isfinite(y)
            nan_mismatch = int((np.isfinite(x) != np.isfinite(y)).sum())
        d = np.abs(x - y)[ok]
        mx = float(d.max()) if d.size else 0.0
        p99 = float(np.percentile(d, 99)) if d.size else 0.0
        unit = {"gm": " DN", "emad": " (reflectance)"}.get(k, "")
        lines.append(f"{k:6s} max {mx:.3g}  p99 {p99:.3g}{unit}  nodata mismatches {nan_mismatch}")
    return lines


# --- extrapolation -------------------------------------------------------------------------------------
def africa_tiles() -> int:
    """Tiles of the planner's ``africa`` region on the default grid (``gmrun plan --region africa``)."""
    from runner.common.config import GridConfig
    from runner.planner.grid import TileGrid
    from runner.planner.region import named_region

    return sum(1 for _ in TileGrid.from_config(GridConfig()).tiles(named_region("africa")))


def extrapolate(px_obs_per_core_s: float, label: str, n_tiles: int) -> list[str]:
    """Lines: a full tile's node-hours on NODE_CORES cores, and the continent's, vs the anchor."""
    full = FULL_PX * FULL_PX * FULL_OBS
    node_h = full / (px_obs_per_core_s * NODE_CORES) / 3600
    return [
        f"{label}: {px_obs_per_core_s / 1e6:.2f} M px-obs per core-second "
        f"= {px_obs_per_core_s * NODE_CORES * 3600:.3g} px-obs per {NODE_CORES}-core node-hour",
        f"  full tile {FULL_PX} x {FULL_PX} px x {FULL_OBS} obs: {node_h * 60:.1f} min on a {NODE_CORES}-core node "
        f"({node_h:.3f} node-hours; odc-stats anchor ~{ANCHOR_NODE_HOURS_PER_TILE * 60:.0f} min, "
        f"{ANCHOR_NODE_HOURS_PER_TILE / node_h:.1f}x ours)",
        f"  continent, {n_tiles} tiles x {FULL_OBS} obs: {node_h * n_tiles:,.0f} node-hours "
        f"(anchor {ANCHOR_NODE_HOURS_PER_TILE * n_tiles:,.0f})",
    ]


def memory_lines(whole_excess: float, sub_excess: float | None) -> list[str]:
    """What a full tile needs whole and in row bands: the planner's estimates
    (:func:`runner.planner.sizing.estimate_memory`, :func:`runner.planner.sizing.band_memory`, 1 GiB overhead) and
    the measured model, cube (or band cube) + results + the excess measured here beyond them."""
    from runner.planner.sizing import (
        band_height,
        band_memory,
        cube_bytes,
        results_bytes,
        row_bands_for,
    )

    n, nb, nt, over = FULL_PX, 10, FULL_OBS, 1024
    cube, res = cube_bytes(n, n, nb, nt), results_bytes(n, n, nb)
    lines = [
        f"MEMORY of a full tile ({n}^2 px x {nb} bands x {nt} obs): cube {cube / GIB:.1f} GiB, "
        f"results {res / GIB:.1f} GiB",
        f"  whole: planner {(cube + res + over * 2**20) / GIB:.1f} GiB; measured model "
        f"{(cube + res + whole_excess) / GIB:.1f} GiB (excess over cube + results "
        f"measured here: {whole_excess / MB:,.0f} MB)",
    ]
    excess = sub_excess if sub_excess is not None else whole_excess
    src = "sub-tiled" if sub_excess is not None else "whole (no sub-tiled run)"
    for pod in (64, 32, 16):
        bands = row_bands_for(pod * GIB, n, n, nb, nt, over, 1024)
        h = band_height(n, bands, 1024)
        plan_b = band_memory(h, n, n, nb, nt, over)
        meas = cube_bytes(h, n, nb, nt) + res + results_bytes(h, n, nb) + excess
        lines.append(
            f"  {pod:2d} GiB pod: {bands} row bands of {h} rows, band cube {cube_bytes(h, n, nb, nt) / GIB:.1f} GiB; "
            f"planner {plan_b / GIB:.1f} GiB, measured model {meas / GIB:.1f} GiB ({src} excess "
            f"{excess / MB:,.0f} MB)"
        )
    return lines


def parse_size(text: str) -> int:
    """``1500Mi`` / ``4Gi`` / bytes -> bytes (for ``--budget``)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for u, f in units.items():
        if text.endswith(u):
            return int(float(text[: -len(u)]) * f)
    return int(text)


# --- main ------------------------------------------------------------------------------------------------
def med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def fmt_stage(runs: list[dict[str, Any]]) -> str:
    stages = runs[0]["metrics"]["seconds"].keys()
    return ", ".join(f"{s} {med([r['metrics']['seconds'][s] for r in runs]):.1f}" for s in stages)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--px", type=int, default=2400, help="tile edge in 10 m pixels (default 2400 = 24 km)"
    )
    ap.add_argument("--dates", type=int, default=40, help="acquisition dates in 2023 (default 40)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic scene seed (default 0)")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/gmrun-bench-tile"),
        help="cache of catalogs, plans, cubes, outputs and logs (default %(default)s)",
    )
    ap.add_argument(
        "--repeats", type=int, default=1, help="whole-tile worker runs (median; default 1)"
    )
    ap.add_argument(
        "--reduce-repeats", type=int, default=1, help="runs of each reduce (median; default 1)"
    )
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="'all threads' (default: cores)"
    )
    ap.add_argument(
        "--single-thread", action="store_true", help="also compare the reduces on 1 thread"
    )
    ap.add_argument(
        "--budget-fraction",
        type=float,
        default=0.4,
        help="sub-tiled run's --max-memory as a fraction of the whole run's peak RSS (default 0.4)",
    )
    ap.add_argument(
        "--budget",
        type=parse_size,
        default=None,
        help="sub-tiled run's --max-memory, e.g. 1500Mi (instead of --budget-fraction; "
        "the worker refuses budgets below its results + 1 GiB overhead)",
    )
    ap.add_argument(
        "--odc-chunk", type=int, default=400, help="odc-algo's Dask block edge in px (default 400)"
    )
    ap.add_argument("--skip-worker", action="store_true", help="skip the worker runs (reduce only)")
    ap.add_argument("--skip-reduce", action="store_true", help="skip ours vs odc-algo")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args()

    from runner.common.config import AlgorithmConfig
    from runner.planner.sizing import results_bytes

    case = Case(args.workdir, args.px, args.dates, args.seed)
    case.workdir.mkdir(parents=True, exist_ok=True)
    import importlib.metadata as md

    vers = {p: md.version(p) for p in ("numba", "odc-algo", "geomad", "odc-stac", "numpy")}
    print(
        f"bench_tile: {args.px} x {args.px} px, 10 bands, {args.dates} dates, seed {args.seed}; "
        f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.2f}; "
        + ", ".join(f"{k} {v}" for k, v in vers.items()),
        flush=True,
    )
    plan_url, tile = prepare(case)
    out: dict[str, Any] = {"case": case.key, "cores": os.cpu_count(), "versions": vers}
    lines: list[str] = []
    whole_excess, sub_excess, core_rates = 0.0, None, []

    if not args.skip_worker:
        runs = []
        for i in range(args.repeats):
            print(f"worker, whole tile, run {i + 1}/{args.repeats} ...", flush=True)
            runs.append(run_worker(case, plan_url, tile, "whole", []))
        m = runs[0]["metrics"]
        ny, nx, nb, nt = m["cube_shape"]
        px_obs = ny * nx * nt
        cube = m["cube_bytes"]
        total = med([sum(r["metrics"]["seconds"].values()) for r in runs])
        red = med([r["metrics"]["seconds"]["reduce"] for r in runs])
        wall = med([r["wall_s"] for r in runs])
        cpu = med([r["cpu_s"] for r in runs])
        peak = med([r["metrics"]["peak_rss_bytes"] for r in runs])
        polled = med([r["polled_peak_rss"] for r in runs])
        ratio = peak / cube
        whole_excess = peak - cube - results_bytes(ny, nx, nb)
        limit = 1.3 * cube + 300 * MB
        cores = os.cpu_count() or 1
        core_rates = [px_obs / (wall * cores), px_obs / cpu]
        lines += [
            f"WORKER, whole tile ({len(runs)} run(s), medians): cube {ny} x {nx} x {nb} x {nt} "
            f"= {cube / MB:,.0f} MB, {px_obs / 1e6:.0f} M px-obs",
            f"  wall {wall:.1f} s (stages {total:.1f} s: {fmt_stage(runs)}); CPU {cpu:.1f} s "
            f"({cpu / wall:.2f} cores busy)",
            f"  {px_obs / total / 1e6:.2f} M px-obs/s over all stages, {px_obs / red / 1e6:.2f} M/s in reduce, "
            f"{px_obs / cpu / 1e6:.2f} M per CPU-second; read {m.get('bytes_read', 0) / MB:,.0f} MB of COGs",
            f"  peak RSS {peak / MB:,.0f} MB (worker VmHWM; polled {polled / MB:,.0f} MB) "
            f"= {ratio:.2f} x cube; target <= 1.3 x cube + 300 MB = {limit / MB:,.0f} MB: "
            + ("MET" if peak <= limit else f"GAP {(peak - limit) / MB:,.0f} MB"),
        ]
        out["whole"] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "stage_s": total,
            "reduce_s": red,
            "px_obs": px_obs,
            "cube_bytes": cube,
            "peak_rss": peak,
            "polled_peak_rss": polled,
            "metrics": [r["metrics"] for r in runs],
        }
        print("\n".join(lines), flush=True)

        if "--max-memory" in worker_help():
            budget = args.budget or int(args.budget_fraction * peak)
            print(f"worker, sub-tiled, --max-memory {budget // 2**20}Mi ...", flush=True)
            s = run_worker(
                case, plan_url, tile, "subtiled", ["--max-memory", f"{budget // 2**20}Mi"]
            )
            sm = s["metrics"]
            band_cube = sm.get("cube_bytes", 0)
            rows = sm.get("band_rows", ny)
            sub_excess = (
                sm["peak_rss_bytes"]
                - band_cube
                - results_bytes(ny, nx, nb)
                - (results_bytes(rows, nx, nb) if rows < ny else 0)
            )
            bands = [*runs[0]["outputs"].config.bands, "emad", "smad", "bcmad", "count"]
            differ = compare_outputs(runs[0]["outputs"], s["outputs"], bands)
            sub = [
                f"WORKER, sub-tiled: --max-memory {budget / MB:,.0f} MB ({args.budget_fraction:.0%} of the whole "
                f"peak): {sm.get('row_bands', '?')} row bands, wall {s['wall_s']:.1f} s ({fmt_stage([s])})",
                f"  peak RSS {sm['peak_rss_bytes'] / MB:,.0f} MB (polled {s['polled_peak_rss'] / MB:,.0f} MB) "
                f"vs budget {budget / MB:,.0f} MB: "
                + ("MET" if sm["peak_rss_bytes"] <= budget else "GAP")
                + f"; cube a band {band_cube / MB:,.0f} MB",
                "  outputs equal to the whole run's: "
                + (f"YES (all {len(bands)} COGs)" if not differ else f"NO: {', '.join(differ)}"),
            ]
            out["subtiled"] = {
                "budget": budget,
                "wall_s": s["wall_s"],
                "metrics": sm,
                "polled_peak_rss": s["polled_peak_rss"],
                "differ": differ,
            }
        else:
            sub = ["WORKER, sub-tiled: not run: this gmrun run-tile has no --max-memory option yet"]
        print("\n".join(sub), flush=True)
        lines += sub

    if not args.skip_reduce:
        if not case.cube_path.exists():
            print(
                f"loading the cube once into {case.cube_path} (runner.worker.load.load_cube) ... (load avg {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            p = run_watched(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "_load",
                    plan_url,
                    str(tile),
                    str(case.cube_path),
                ],
                case.workdir / "logs" / f"{case.key}-load.log",
            )
            if p.returncode != 0:
                raise SystemExit(
                    f"error: loading the cube failed (exit {p.returncode}):\n{p.stderr_tail}"
                )
        alg = AlgorithmConfig()
        red_lines = []
        for nth in sorted({args.threads, *([1] if args.single_thread else [])}, reverse=True):
            res: dict[str, list[dict[str, Any]]] = {"ours": [], "odc": []}
            for i in range(args.reduce_repeats):
                for impl in ("ours", "odc"):
                    print(
                        f"reduce {impl}, {nth} thread(s), run {i + 1}/{args.reduce_repeats} ... (load avg {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
                    res[impl].append(
                        run_reduce(
                            case, impl, nth, alg.eps, alg.maxiters, args.odc_chunk, f"{impl}-{nth}t"
                        )
                    )
            o, d = res["ours"], res["odc"]
            ow, dw = med([r["wall_s"] for r in o]), med([r["wall_s"] for r in d])
            orss, drss = med([r["peak_rss"] for r in o]), med([r["peak_rss"] for r in d])
            px_obs = o[0]["px_obs"]
            red_lines += [
                f"REDUCE, {nth} thread(s), same cube ({len(o)} run(s) each, medians):",
                f"  ours     {ow:7.1f} s  {px_obs / ow / 1e6:6.2f} M px-obs/s  peak RSS {orss / MB:,.0f} MB "
                f"(cube read in: {o[0]['rss_after_load'] / MB:,.0f} MB)",
                f"  odc-algo {dw:7.1f} s  {px_obs / dw / 1e6:6.2f} M px-obs/s  peak RSS {drss / MB:,.0f} MB "
                f"(cube read in: {d[0]['rss_after_load'] / MB:,.0f} MB)",
                f"  ours {dw / ow:.2f}x faster; target >= 4x: "
                + ("MET" if dw / ow >= 4 else "GAP"),
                "  |ours - odc-algo|:",
                *("    " + ln for ln in result_differences(o[0]["result"], d[0]["result"])),
            ]
            out[f"reduce_{nth}t"] = {"ours": o, "odc": d}
        print("\n".join(red_lines), flush=True)
        lines += red_lines

    if core_rates:
        n_tiles = africa_tiles()
        ext = [
            f"EXTRAPOLATION (linear in cores; {NODE_CORES}-core node; planner's africa region: {n_tiles} tiles)"
        ]
        ext += extrapolate(core_rates[0], "measured per core (wall x cores, whole tile)", n_tiles)
        ext += extrapolate(core_rates[1], "measured per CPU-second (whole tile)", n_tiles)
        ext += memory_lines(whole_excess, sub_excess)
        out["px_obs_per_node_hour"] = core_rates[0] * NODE_CORES * 3600
        print("\n".join(ext), flush=True)
        lines += ext
    (case.workdir / f"summary-{case.key}.txt").write_text("\n".join(lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        child_load(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "_reduce":
        a = sys.argv[2:]
        child_reduce(a[0], a[1], int(a[2]), float(a[3]), int(a[4]), int(a[5]), a[6])
    else:
        main()
