"""One tile the way a Digital Earth Africa user computes it: the odc-stats path (issue #13).

Usage (``benchmarks/bench_load.py`` runs it in a child process, to measure its wall time and
peak RSS side by side with ``gmrun run-tile``)::

    .venv/bin/python benchmarks/odc_stats_path.py --plan PLAN --tile x000y000 --out DIR [--threads N]

The calls odc-stats' ``gm`` plugin (``StatsGM``/``StatsGMS2``) makes, made here directly on the
plan's items, GeoBox and configuration (the same bands, mask classes, morphology, scale, offset,
``eps`` and ``maxiters`` as the gmrun worker, so that their outputs can be compared):

1. ``odc.stac.load(items, bands + [SCL], geobox, chunks={x, y: input.chunk}, groupby="solar_day",
   resampling="nearest")`` (lazy, Dask);
2. ``native_transform``: ``enum_to_bool(SCL, nodata_classes)``; ``enum_to_bool(SCL,
   cloud_classes)`` → ``mask_cleanup(..., [("opening", r), ("dilation", r)])`` (the plugin's
   ``cloud_filters`` with the classes as one key); ``erase_bad(bands, bad)``;
3. ``reduce``: ``geomedian_with_mads(xx, compute_mads=True, compute_count=True,
   reshape_strategy="mem", out_chunks=(-1, -1, -1), work_chunks=(400, 400), num_threads=1,
   scale, offset, eps, maxiters)`` — the plugin's defaults (400 px work chunks where 400 divides
   the tile, as it divides a 9600 px one; else the largest divisor below) — computed with Dask's threaded
   scheduler on ``--threads`` workers (odc-stats' single-process mode);
4. one COG per output band (``odc.geo.cog.write_cog``: DEFLATE, 512 px blocks, overviews), as
   odc-stats writes its outputs.

Prints one JSON line: seconds of the compute (load + mask + reduce, fused by Dask) and of the
writes, and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--plan", required=True, help="the plan folder (gmrun plan -o PLAN)")
    ap.add_argument("--tile", required=True, help="the tile id")
    ap.add_argument("--out", required=True, type=Path, help="folder for the COGs")
    ap.add_argument("--threads", type=int, default=2, help="Dask threads (default 2)")
    args = ap.parse_args()

    import dask
    import odc.stac
    import pystac
    from odc.algo import enum_to_bool, erase_bad, geomedian_with_mads, mask_cleanup
    from odc.geo.cog import write_cog
    from rasterio.errors import NotGeoreferencedWarning

    from runner.planner.plan import Plan
    from runner.worker.gdal import gdal_environment
    from runner.worker.metrics import peak_rss_bytes

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    warnings.filterwarnings("ignore", category=PendingDeprecationWarning)  # odc-algo's .apply
    plan = Plan.load(args.plan)
    tp = plan.tile(args.tile)
    cfg = plan.config
    items = [pystac.Item.from_dict(it) for it in plan.items(tp.tile)]
    geobox = plan.grid.geobox(tp.tile)
    gdal_environment(cfg)
    t0 = time.perf_counter()
    chunk = min(cfg.input.chunk, max(geobox.shape))
    xx = odc.stac.load(
        items,
        bands=[*cfg.bands, cfg.mask.band],
        geobox=geobox,
        chunks={"x": chunk, "y": chunk},
        groupby=cfg.input.groupby,
        resampling="nearest",
        fail_on_error=True,
    )
    scl = xx[cfg.mask.band]
    bad = enum_to_bool(scl, list(cfg.mask.nodata_classes))
    cloud = enum_to_bool(scl, list(cfg.mask.cloud_classes))
    filters = [
        (op, r) for op, r in (("opening", cfg.mask.opening), ("dilation", cfg.mask.dilation))
    ]
    cloud = mask_cleanup(cloud, mask_filters=[(op, r) for op, r in filters if r > 0])
    xx = erase_bad(xx.drop_vars([cfg.mask.band]), cloud | bad)
    for b in cfg.bands:
        xx[b].attrs["nodata"] = cfg.input.nodata
    # odc-stats' 400 px; odc-algo's in-memory sink indexes a short last chunk wrongly, so a tile
    # that 400 does not divide (9600 does) gets the largest divisor below it
    work = max(d for d in range(1, 401) if geobox.shape.y % d == 0 and geobox.shape.x % d == 0)
    gm = geomedian_with_mads(
        xx,
        compute_mads=True,
        compute_count=True,
        reshape_strategy="mem",
        out_chunks=(-1, -1, -1),
        work_chunks=(work, work),
        num_threads=1,
        scale=cfg.input.scale,
        offset=cfg.input.offset,
        eps=cfg.algorithm.eps,
        maxiters=cfg.algorithm.maxiters,
    )
    with dask.config.set(scheduler="threads", num_workers=args.threads):
        gm = gm.compute()
    t1 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in gm.data_vars:
        write_cog(
            gm[name],
            args.out / f"{name}.tif",
            overwrite=True,
            blocksize=512,
            compress="deflate",
            overview_resampling="nearest",
        )
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "compute_s": t1 - t0,
                "write_s": t2 - t1,
                "peak_rss": peak_rss_bytes(),
                "outputs": sorted(str(v) for v in gm.data_vars),
            }
        )
    )


if __name__ == "__main__":
    main()
