"""Benchmark: the tile's load three ways, side by side on the same items and GeoBox (issue #13).

Usage::

    .venv/bin/python benchmarks/bench_load.py                       # 1200 px, 30 dates, 3 repeats
    .venv/bin/python benchmarks/bench_load.py --px 480 --dates 10   # a quick look

The case is ``benchmarks/bench_tile.py``'s (``runner.demo.synth`` seed 0, a tile of ``--px`` px
at 10 m in EPSG:6933 inside UTM zone 36: one granule a date, 10 bands + SCL, DEFLATE COGs of
256 px blocks), cached under ``--workdir`` as there. Measured, interleaved, ``--repeats`` times
each, medians printed (seconds of wall time, this process, ``input.threads`` = the CPU budget):

1. **decode only**: every input asset's source window covering the tile (the tile's extent in
   the source CRS, rounded out to whole pixels) read with rasterio on the same number of
   threads: the blocks the tile needs, decoded, nothing else.
2. **gather**: ``runner.worker.load.load_cube`` with ``input.loader: gather`` (planning with
   odc-stac's ``debug`` record, index warps once per grid and chunk, windowed decode, gather,
   SCL mask with its opening and dilation, the sink). The sink's buffer is allocated and its
   pages faulted in before the clock starts, as the worker does while it checks its inputs
   (``runner.worker.cube.Sink``): a first touch of memory is slow and erratic on some VMs.
3. **odc-stac**: the same with ``input.loader: odc-stac`` (``odc.stac.load`` → Dask → sink).

Then the ratios, and the agreement of the two cubes (pixel by pixel, every band and date).

Then the **whole tile**, each run in a process of its own, interleaved, ``--tile-repeats`` times:

4. **gmrun**: ``gmrun run-tile`` (load → reduce → 14 COGs + STAC item), on the CPU budget;
5. **odc-stats path**: ``benchmarks/odc_stats_path.py`` — ``odc.stac.load`` → odc-algo
   ``enum_to_bool``/``mask_cleanup``/``erase_bad`` → ``geomedian_with_mads`` with the defaults
   odc-stats' ``gm`` plugin sets (400 px work chunks, ``num_threads=1`` per Dask thread) → COGs,
   on as many Dask threads; same bands, mask, scale/offset, eps and maxiters.

Wall seconds (medians), peak RSS (each process's own ``VmHWM``, medians), their ratios, and the
agreement of the outputs (count, geomedian bands in DN, MADs); then whether gmrun's reruns
wrote byte-identical COGs, and whether a run in row bands (``--row-bands 3``) equals the whole
tile, array for array. ``--tile-repeats 0`` skips the whole tile.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def source_window(rdr: Any, geobox: Any) -> Any:
    """The window of ``rdr`` covering ``geobox``'s extent (rounded out), clipped to the raster."""
    from rasterio.windows import Window, from_bounds

    bb = geobox.extent.to_crs(str(rdr.crs)).boundingbox
    w = from_bounds(bb.left, bb.bottom, bb.right, bb.top, transform=rdr.transform)
    w = w.round_offsets(op="floor").round_lengths(op="ceil")
    return w.intersection(Window(0, 0, rdr.width, rdr.height))


def decode_only(items: list[dict[str, Any]], bands: list[str], geobox: Any, threads: int) -> int:
    """Read every asset's window covering the tile on ``threads`` threads; decoded bytes."""
    import rasterio

    hrefs = [it["assets"][b]["href"] for it in items for b in bands if b in it["assets"]]

    def read(href: str) -> int:
        with rasterio.open(href, sharing=False) as rdr:
            try:
                w = source_window(rdr, geobox)
            except Exception:  # the tile's extent misses this granule
                return 0
            return int(rdr.read(1, window=w).nbytes)

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(read, hrefs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--px", type=int, default=1200, help="tile edge in pixels (default 1200)")
    ap.add_argument("--dates", type=int, default=30, help="acquisition dates (default 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each (default 3)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gmrun-bench-tile"))
    ap.add_argument(
        "--tile-repeats", type=int, default=3, help="whole-tile runs of each (default 3; 0: none)"
    )
    args = ap.parse_args()

    import warnings

    import numpy as np
    from bench_tile import Case, prepare
    from rasterio.errors import NotGeoreferencedWarning

    from runner.common.config import parse_config
    from runner.common.logs import tile_logger
    from runner.common.threads import pool_threads
    from runner.planner.plan import Plan
    from runner.worker.cube import Sink
    from runner.worker.gdal import gdal_environment
    from runner.worker.load import load_cube, sink_bytes

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    case = Case(args.workdir, args.px, args.dates, args.seed)
    plan_url, tile = prepare(case)
    plan = Plan.load(plan_url)
    tp = plan.tile(tile)
    items, geobox = plan.items(tp.tile), plan.grid.geobox(tp.tile)
    base = plan.config.model_dump(mode="json")
    configs = {
        name: parse_config({**base, "input": {**base["input"], "loader": name}}, "bench")
        for name in ("gather", "odc-stac")
    }
    gdal_environment(plan.config)
    threads = pool_threads(plan.config.input.threads)
    bands = [*plan.config.bands, plan.config.mask.band]
    print(
        f"tile {args.px} x {args.px} px, {len(items)} items, {len(bands)} bands, "
        f"{threads} threads, {args.repeats} repeats",
        flush=True,
    )
    log = tile_logger(str(tp.tile))
    # warm-up (imports, numba kernels, GDAL's first opens) and the agreement of the two cubes;
    # they are freed before the timed loads, which keep nothing: a timed load's sink then reuses
    # memory the machine has already handed out (a first touch is dearer on some VMs)
    a = load_cube(items, configs["gather"], geobox, log)
    times_of = a.times
    a = a.data.copy()
    b = load_cube(items, configs["odc-stac"], geobox, log).data
    diff = a != b
    agree = (
        f"cube {a.shape}: {int(diff.sum())} of {diff.size} values differ "
        f"({int(diff.any(axis=(2, 3)).sum())} of {a.shape[0] * a.shape[1]} pixels); "
        f"count of valid observations equal: {bool(((a != 0).sum(-1) == (b != 0).sum(-1)).all())}"
    )
    equal = bool(np.array_equal(a, b))
    del a, b, diff
    times: dict[str, list[float]] = {"decode": [], "gather": [], "odc-stac": []}
    nbytes = 0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        nbytes = decode_only(items, bands, geobox, threads)
        times["decode"].append(time.perf_counter() - t0)
        for name, cfg in configs.items():
            sink = Sink()  # faulted in beforehand, as the worker does while it checks inputs
            sink.prefault(sink_bytes(cfg, geobox, 1, len(times_of)))
            sink.wait()
            t0 = time.perf_counter()
            load_cube(items, cfg, geobox, log, sink=sink)
            times[name].append(time.perf_counter() - t0)
            del sink
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"decode only ({nbytes / 1e6:.0f} MB decoded): {med['decode']:.2f} s  {times['decode']}")
    print(f"gather load:   {med['gather']:.2f} s  {[round(t, 2) for t in times['gather']]}")
    print(f"odc-stac load: {med['odc-stac']:.2f} s  {[round(t, 2) for t in times['odc-stac']]}")
    print(
        f"gather / decode {med['gather'] / med['decode']:.2f}x (target <= 2.5x), "
        f"odc-stac / decode {med['odc-stac'] / med['decode']:.2f}x, "
        f"odc-stac / gather {med['odc-stac'] / med['gather']:.2f}x"
    )
    print(agree)
    if not equal:
        raise SystemExit("error: the gather's cube differs from odc-stac's")
    if args.tile_repeats > 0:
        from whole_tile import bench_whole_tile

        bench_whole_tile(case, plan_url, tile, threads, args.tile_repeats)


if __name__ == "__main__":
    main()
