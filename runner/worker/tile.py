"""The per-tile worker, top to bottom: load → reduce → write.

1. **load** (:mod:`runner.worker.load`): the tile's items (each asset's header first checked
   against its item: :mod:`runner.worker.asset_checks`), lazily read with odc-stac at the
   tile's GeoBox, masked (:mod:`runner.worker.mask`: SCL classes, opened then dilated; every band
   of a masked observation becomes nodata) and ``da.store``-d into ONE preallocated uint16
   (y, x, band, time) buffer, one row band at a time (one band: the whole tile);
2. **reduce** (:mod:`runner.reducers`): the reducer ``algorithm.name`` names (default: geomedian
   + SMAD/EMAD/BCMAD + count) over each band's cube, its results assembled for the whole tile;
3. **write** (:mod:`runner.worker.outputs`): one COG per output band of the reducer, a metrics
   file, and the STAC item LAST (the done marker).

``--max-processing-time`` is watched by a :class:`~runner.worker.deadline.Deadline`; the
heartbeat file is touched all along (``$GMRUN_HEARTBEAT``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runner import __version__
from runner.common.errors import EmptyTileError
from runner.common.logs import TileLog, tile_logger
from runner.common.progress import Heartbeat, StageProgress
from runner.common.threads import pool_threads
from runner.planner.grid import TileId
from runner.planner.plan import Plan
from runner.planner.sizing import choose_row_bands
from runner.reducers import Reducer, RowBandResult, reducer_for
from runner.worker.asset_checks import check_tile_inputs
from runner.worker.assets import usable_items
from runner.worker.cube import Cube, RowBand, Sink
from runner.worker.deadline import Deadline
from runner.worker.item import ThumbnailTap, item_document, write_thumbnail
from runner.worker.load import TileLoader, sink_bytes
from runner.worker.metrics import peak_rss_bytes, timed
from runner.worker.outputs import TileOutputs, WrittenFile, preflight, write_file, write_layers
from runner.worker.signing import signer_for


@dataclass
class TileReport:
    """What happened to a tile; ``status`` is ``done``, ``skipped`` (already done) or ``empty``."""

    tile: TileId
    status: str
    item_url: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def reduce_cube(
    reducer: Reducer, cube: Cube, plan: Plan, log: TileLog, heartbeat: Heartbeat
) -> Any:
    """The reducer's result of one cube, with progress by row block."""
    blocks = -(-cube.data.shape[0] // plan.config.algorithm.row_block)
    with StageProgress(log, "reduce", blocks, heartbeat, "row blocks") as prog:
        return reducer.reduce(cube.data, plan.config, lambda _rows: prog.advance())


def run_tile(
    plan: Plan,
    tile: TileId | str,
    *,
    location: str | None = None,
    overwrite: bool | None = None,
    skip_bad_inputs: bool = False,
    max_processing_time: float | None = None,
    row_bands: int | None = None,
    max_memory: int | None = None,
    watch_signals: bool = False,
) -> TileReport:
    """Compute one tile of a plan and write its outputs (skipped if already done).

    ``skip_bad_inputs``: drop the items that lack what the tile needs, whose assets' headers
    disagree with their metadata (:mod:`runner.worker.asset_checks`) or whose assets stay
    unreadable (listed in the STAC item's ``gmrun:skipped_inputs``) instead of failing.
    ``max_processing_time``: seconds after which the process ends with exit code 1 and no done
    marker (see :class:`Deadline`).
    ``row_bands`` / ``max_memory`` (bytes): process the tile in row bands, that many or as many
    as fit the memory budget (:func:`runner.planner.sizing.choose_row_bands`). The results are
    kept in memory for the whole tile and each COG is written once at the end: results are
    byte-identical to a whole-tile run. ``watch_signals``: SIGTERM/SIGINT end the process with
    one log line naming the stage (:meth:`Deadline.watch_signals`; the CLI's, not a library
    caller's, since it installs process-wide signal handlers).
    """
    config = plan.config
    tp = plan.tile(tile)
    tid = tp.tile
    log = tile_logger(tid)
    out = TileOutputs.of(config, tid, plan.period, location)
    overwrite = config.output.overwrite if overwrite is None else overwrite
    if not overwrite and out.is_done():
        log.info("already done: %s", out.item_url, extra={"status": "skipped"})
        return TileReport(tid, "skipped", out.item_url)
    reducer = reducer_for(config)
    bands_choice = choose_row_bands(
        config, tp.row_bands, tp.resources.memory_bytes, row_bands, max_memory
    )
    heartbeat = Heartbeat()
    heartbeat.beat(force=True)
    deadline = Deadline(tid, max_processing_time, log)
    if watch_signals:
        deadline.watch_signals()
    timings: dict[str, float] = {}
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    deadline.stage = "items"
    with timed(timings, "items"):
        items = plan.items(tid)
    if not items:
        raise EmptyTileError(
            f"tile {tid} is empty: no STAC items in {plan.period.label}; nothing written"
        )
    needed = (*config.bands, config.mask.band)
    items, dropped = usable_items(items, needed, plan.period, skip_bad_inputs)
    for ident, why in dropped:
        log.warning("skipping item %s: %s", ident, why, extra={"skipped_item": ident})
    if not items:
        raise EmptyTileError(f"tile {tid}: every input item was skipped; nothing written")
    geobox = plan.grid.geobox(tid)
    deadline.stage = "preflight"
    preflight(out, geobox.shape.yx)  # before any pixel: an unwritable output fails now
    # each asset's header against its item (CRS, shape, transform, dtype): before any pixel too
    sink = Sink()  # the cube's memory taken, its pages faulted in, while the inputs are checked
    if nbytes := sink_bytes(config, geobox, bands_choice, tp.n_obs):
        sink.prefault(nbytes, background=pool_threads(config.input.threads) > 1)
    deadline.stage = "check"
    signer = signer_for(config.input.signing, config.input.sas_token_url)
    with timed(timings, "check"):
        items, mismatched = check_tile_inputs(
            items,
            needed,
            config,
            log,
            signer=signer,
            heartbeat=heartbeat,
            skip_bad_inputs=skip_bad_inputs,
        )
    dropped += mismatched
    if not items:
        raise EmptyTileError(f"tile {tid}: every input item was skipped; nothing written")
    ny = geobox.shape.y
    deadline.stage = "load"
    log.info(
        "loading %d items onto %s px",
        len(items),
        "×".join(map(str, geobox.shape)),
        extra={"stage": "load", "items": len(items)},
    )

    # --- load → reduce, band by band ---------------------------------------------------------
    loader = TileLoader(
        items,
        config,
        geobox,
        log,
        row_bands=bands_choice,
        heartbeat=heartbeat,
        skip_bad_inputs=skip_bad_inputs,
        signer=signer,
        sink=sink,
    )
    del sink  # the loader's now: freed with it
    result = RowBandResult(ny)
    reduce_seconds = 0.0
    deadline.stage = "load"
    t0 = time.perf_counter()
    try:
        for cube, band in loader.bands():
            _log_band_loaded(log, cube, band)
            deadline.stage = "reduce" if band.count == 1 else f"reduce ({band.label})"
            t1 = time.perf_counter()
            result.put(reduce_cube(reducer, cube, plan, log, heartbeat), band.r0, band.r1)
            dt = time.perf_counter() - t1
            reduce_seconds += dt
            del cube  # a view of the load's buffer: not kept past its band
            if band.count > 1:
                _log_band_reduced(log, band, dt, ny)
                deadline.stage = f"load (band {band.index + 2}/{band.count})"
    except EmptyTileError:
        raise EmptyTileError(
            f"tile {tid} is empty: its items hold no observations; nothing written"
        ) from None
    timings["load"] = round(time.perf_counter() - t0 - reduce_seconds, 3)
    timings["reduce"] = round(reduce_seconds, 3)
    stats = loader.stats

    # --- write ---------------------------------------------------------------------------------
    deadline.stage = "write"
    n_files = len(reducer.output_bands(config))
    log.info("writing %d files to %s", n_files, out.folder, extra={"stage": "write"})

    def written(band: Any, f: WrittenFile) -> None:
        heartbeat.beat()
        log.info("wrote %s", f.url, extra={"stage": "write", "band": band.name})

    with timed(timings, "write"):
        tap = ThumbnailTap(reducer.output_bands(config), geobox.shape.yx)
        files = write_layers(out, geobox, tap.tap(reducer.layers(result.value, config)), written)
        thumbnail = write_thumbnail(out, tap)
    metrics = {
        "tile": str(tid),
        "started": started,
        "seconds": timings,
        "bytes_read": stats.bytes_read,
        "cube_shape": list(stats.cube_shape),
        "cube_bytes": stats.cube_bytes,
        "tile_cube_bytes": stats.tile_cube_bytes,
        "row_bands": stats.row_bands,
        "band_rows": stats.band_rows,
        "load_restarts": stats.restarts,
        "loader": loader.loader.used,  # gather or odc-stac (input.loader, docs/performance.md)
        "loader_fallback": loader.loader.reason,  # why the gather fell back to odc-stac, if it did
        "peak_rss_bytes": peak_rss_bytes(),
        "observations": len(stats.times),
        "items": len(items),
        **reducer.metrics(result.value),
    }
    write_file(out.metrics_url, json.dumps(metrics, indent=1).encode(), "application/json")
    item = item_document(
        out,
        geobox,
        files,
        thumbnail,
        {
            "gmrun:software": f"gmrun {__version__}",
            "gmrun:algorithm": config.algorithm.model_dump(mode="json"),
            "gmrun:mask": config.mask.model_dump(mode="json"),
            "gmrun:inputs": [it["id"] for it in items],
            "gmrun:skipped_inputs": [ident for ident, _ in dropped] + loader.skipped,
            "gmrun:observation_dates": list(stats.times),
            "gmrun:metrics": metrics,
        },
    )
    deadline.disarm()
    # the done marker, last
    write_file(out.item_url, json.dumps(item, indent=1).encode(), "application/geo+json")
    log.info(
        "done in %.1f s: %s",
        sum(timings.values()),
        out.item_url,
        extra={"status": "done", "metrics": metrics},
    )
    return TileReport(tid, "done", out.item_url, metrics)


def _log_band_loaded(log: TileLog, cube: Cube, band: RowBand) -> None:
    if band.index == 0:
        log.info(
            "cube %s uint16 (%.1f MB), %d observations",
            cube.data.shape,
            cube.nbytes / 1e6,
            len(cube.times),
            extra={"stage": "reduce", "cube_bytes": cube.nbytes},
        )


def _log_band_reduced(log: TileLog, band: RowBand, seconds: float, ny: int) -> None:
    done = 100 * band.r1 // ny
    log.info(
        "band %d/%d: rows %d-%d: done (reduce %.1f s), %d%% of the tile",
        band.index + 1,
        band.count,
        band.r0,
        band.r1,
        seconds,
        done,
        extra={
            "stage": "reduce",
            "band": band.index + 1,
            "row_bands": band.count,
            "progress": done,
        },
    )
