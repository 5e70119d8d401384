"""The per-tile worker: load → mask → sink → reduce → write.

1. **load**: ``odc.stac.load`` of the tile's items at the tile's GeoBox, lazily (Dask), one
   observation per solar day (overlapping granules of one day are fused, not double-counted);
2. **mask**: SCL classes → invalid; cloud mask opened then dilated (:mod:`runner.mask`); every
   band of a masked observation becomes nodata;
3. **sink**: the pixels are ``da.store``-d into ONE preallocated ``uint16`` array of shape
   (y, x, band, time) — time contiguous per pixel, as the reduction reads it. Nothing else of
   that size is ever allocated: peak memory ≈ cube bytes;
4. **reduce**: geomedian + EMAD/SMAD/BCMAD + count with :func:`algos.geomedian_mads_u16`, which
   reads the uint16 cube one row block at a time;
5. **write**: one COG per output band, a metrics file, and the STAC item LAST (the done marker).

Dask runs its threaded scheduler in this one process (a single worker): GDAL reads in threads,
no inter-process copies.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from runner import __version__
from runner.config import RunConfig
from runner.errors import GmrunError, InputAssetError
from runner.grid import TileId
from runner.logs import tile_logger
from runner.outputs import (
    COG_TYPE,
    COUNT_BAND,
    MAD_BANDS,
    TileOutputs,
    WrittenFile,
    cog_bytes,
    output_bands,
    write_file,
)
from runner.plan import Plan
from runner.progress import Heartbeat, StageProgress


class EmptyTileError(GmrunError):
    """The tile has no observations: it is reported as empty and nothing is written (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Cube:
    """The worker's pixels: ``data`` is uint16 (y, x, band, time), nodata where not clear."""

    data: NDArray[np.uint16]
    bands: tuple[str, ...]
    times: tuple[str, ...]  #: ISO dates of the observations (solar days)
    geobox: GeoBox

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


@dataclass
class TileReport:
    """What happened to a tile; ``status`` is ``done``, ``skipped`` (already done) or ``empty``."""

    tile: TileId
    status: str
    item_url: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image (``VmHWM``).

    ``getrusage``'s ``ru_maxrss`` is not used: Linux carries it across ``exec``, so a worker
    started by a large parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Deadline:
    """``--max-processing-time``: a watchdog thread ends the worker when the time is up.

    It logs the reason, prints ``error: ... exceeded --max-processing-time ...`` and exits with
    code 1 at once — whatever the worker is doing (a GDAL read, a numba kernel). Once the done
    marker is about to be written the deadline is disarmed, so a tile is never reported failed
    with its STAC item written, nor the other way round.
    """

    def __init__(self, tile: TileId, seconds: float | None, log: Any) -> None:
        self.tile, self.seconds, self.log = tile, seconds, log
        self.stage = "start"
        self._lock = threading.Lock()
        self._disarmed = False
        self._timer: threading.Timer | None = None
        if seconds:
            self._timer = threading.Timer(seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        with self._lock:  # held until the process ends: disarm() cannot race past it
            if self._disarmed:
                return
            msg = (f"tile {self.tile} exceeded --max-processing-time {self.seconds:g} s "
                   f"during {self.stage}; stopped, no done marker written")  # fmt: skip
            self.log.error("%s", msg, extra={"status": "failed", "stage": self.stage, "reason": "deadline"})
            with contextlib.suppress(Exception):
                sys.stderr.write(f"error: {msg}\n")
                sys.stderr.flush()
            os._exit(1)

    def disarm(self) -> None:
        with self._lock:
            self._disarmed = True
            if self._timer is not None:
                self._timer.cancel()


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(time.perf_counter() - t0, 3)


# --- load, mask, sink ------------------------------------------------------------------------------
def _hrefs(items: list[dict[str, Any]]) -> list[str]:
    return [a["href"] for it in items for a in it.get("assets", {}).values() if "href" in a]


def _asset_in_error(exc: BaseException, hrefs: list[str]) -> str | None:
    """The input asset an exception is about, found in its message (or its causes'), else in
    the frames it went through: GDAL's HTTP errors (``HTTP response code: 404``) name no file,
    but odc-loader's reader holds the source (``src.uri``) it was reading."""
    e: BaseException | None = exc
    while e is not None:
        text = str(e)
        for h in hrefs:
            if h in text or os.path.basename(h) in text:
                return h
        e = e.__cause__ or e.__context__
    known = set(hrefs)
    e = exc
    while e is not None:
        tb = e.__traceback__
        while tb is not None:
            for v in tb.tb_frame.f_locals.values():
                uri = v if isinstance(v, str) else getattr(v, "uri", None)
                if isinstance(uri, str) and uri in known:
                    return uri
            tb = tb.tb_next
        e = e.__cause__ or e.__context__
    return None


def _probe_asset(href: str, retries: int) -> str | None:
    """Read an asset fully, with retries and backoff; the last error text, or None if readable."""
    import rasterio

    err = None
    for attempt in range(retries + 1):
        try:
            with rasterio.open(href) as src:
                src.read(1)
            return None
        except Exception as e:  # any GDAL/IO failure counts as unreadable
            err = str(e).splitlines()[0] if str(e) else type(e).__name__
            if attempt < retries:
                time.sleep(min(0.5 * 2**attempt, 8.0))
    return err


def gdal_environment(config: RunConfig) -> dict[str, str]:
    """GDAL settings of the worker: a small block cache (the cube is the only big buffer), no
    directory listings on open, HTTP retries and timeout for remote COGs (``input.retries``,
    ``retry_delay`` s, ``http_timeout`` s, ``vsi_cache`` / ``vsi_cache_size_mib``), and, with an
    S3-compatible endpoint (``AWS_ENDPOINT_URL[_S3]``, ``--endpoint-url``), the matching
    ``/vsis3/`` settings. Existing variables win."""
    from runner import store

    inp = config.input
    env = {
        "GDAL_CACHEMAX": "64",  # MB; each COG block is read once into the cube
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "GDAL_HTTP_MAX_RETRY": str(inp.retries),
        "GDAL_HTTP_RETRY_DELAY": f"{inp.retry_delay:g}",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.jp2",
        "VSI_CACHE": "TRUE" if inp.vsi_cache else "FALSE",
        "VSI_CACHE_SIZE": str(inp.vsi_cache_size_mib * 2**20),  # bytes
    }
    if inp.http_timeout is not None:
        env["GDAL_HTTP_TIMEOUT"] = str(inp.http_timeout)
    if endpoint := store.endpoint():
        env.update(store.gdal_s3_settings(endpoint))
    for k, v in env.items():
        os.environ.setdefault(k, v)
    return {k: os.environ[k] for k in env}


def lazy_stack(items: list[dict[str, Any]], config: RunConfig, geobox: GeoBox) -> tuple[Any, tuple[str, ...]]:
    """The masked observations as a lazy uint16 Dask array (y, x, band, time), and their dates."""
    import dask.array as da
    import odc.stac
    import pystac

    from runner.mask import clear_mask

    inp, mask = config.input, config.mask
    chunk = min(inp.chunk, max(geobox.shape))
    ds = odc.stac.load(
        [pystac.Item.from_dict(it) for it in items],
        bands=[*config.bands, mask.band],
        geobox=geobox,
        chunks={"x": chunk, "y": chunk},
        groupby=inp.groupby,
        resampling={"*": inp.resampling, mask.band: "nearest"},
        fail_on_error=True,
    )
    clear = clear_mask(ds[mask.band].data, mask)
    nodata = np.uint16(inp.nodata)
    layers = [da.where(clear, ds[b].data.astype(np.uint16), nodata) for b in config.bands]
    stack = da.stack(layers, axis=1).transpose(2, 3, 1, 0)  # (t, b, y, x) -> (y, x, b, t)
    times = tuple(str(np.datetime_as_string(t, unit="D")) for t in ds.time.values)
    return stack, times


def _item_of(items: list[dict[str, Any]], href: str) -> dict[str, Any] | None:
    for it in items:
        if any(a.get("href") == href for a in it.get("assets", {}).values()):
            return it
    return None


def load_cube(
    items: list[dict[str, Any]],
    config: RunConfig,
    geobox: GeoBox,
    log: Any,
    heartbeat: Heartbeat | None = None,
    skip_bad_inputs: bool = False,
    skipped: list[str] | None = None,
) -> Cube:
    """Load, mask and sink the tile into one preallocated uint16 (y, x, band, time) array.

    An asset that fails is read again directly (``input.retries`` times, with backoff); if it
    is still unreadable the tile fails with :class:`InputAssetError` naming it — or, with
    ``skip_bad_inputs``, its item is dropped (its id appended to ``skipped``) and the load is
    done again without it. If the asset reads now (a transient fault), the load is done once more.
    """
    import warnings

    import dask
    import dask.array as da
    from dask.callbacks import Callback
    from rasterio.errors import NotGeoreferencedWarning

    # odc-loader reprojects into plain arrays; rasterio warns that they have no georeferencing.
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)

    heartbeat = heartbeat or Heartbeat()
    gdal_environment(config)
    items = list(items)
    skipped = skipped if skipped is not None else []
    threads = config.input.threads or os.cpu_count() or 1
    transient: set[str] = set()  # assets that failed once and then read: a second failure is fatal
    while True:
        if not items:
            raise EmptyTileError("no observations were loaded: every input was skipped")
        hrefs = _hrefs(items)
        stack, times = lazy_stack(items, config, geobox)
        ny, nx, nb, nt = stack.shape
        if nt == 0:
            raise EmptyTileError("no observations were loaded")
        cube = np.empty((ny, nx, nb, nt), dtype=np.uint16)
        n_tasks = len(stack.__dask_graph__())
        with StageProgress(log, "load", n_tasks, heartbeat, "tasks") as prog:

            class _Tick(Callback):  # type: ignore[misc]
                def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
                    prog.advance()

            try:
                with dask.config.set(scheduler="threads", num_workers=threads), _Tick():
                    da.store(stack, cube, lock=False)
                return Cube(cube, tuple(config.bands), times, geobox)
            except Exception as e:
                href = _asset_in_error(e, hrefs)
                if href is None:
                    raise
                del cube
                reason = _probe_asset(href, config.input.retries)
                if reason is None and href in transient:
                    reason = f"failed twice while loading: {e}"
                if reason is None:
                    transient.add(href)
                    log.warning("transient read failure of %s; loading again", href, extra={"asset": href})
                    continue
                bad = _item_of(items, href)
                if not skip_bad_inputs or bad is None:
                    raise InputAssetError(
                        f"input asset unreadable after {config.input.retries} retries: {href} ({reason})"
                    ) from None
                items.remove(bad)
                skipped.append(str(bad.get("id")))
                log.warning("skipping item %s: asset unreadable after %d retries: %s (%s)", bad.get("id"),
                            config.input.retries, href, reason,
                            extra={"asset": href, "skipped_item": bad.get("id")})  # fmt: skip


# --- reduce ------------------------------------------------------------------------------------------
def reduce_cube(cube: Cube, config: RunConfig, log: Any, heartbeat: Heartbeat | None = None) -> Any:
    """Geomedian + MADs + count of the cube (see :mod:`algos`)."""
    from algos import geomedian_mads_u16

    alg, inp = config.algorithm, config.input
    ny = cube.data.shape[0]
    blocks = -(-ny // alg.row_block)
    with StageProgress(log, "reduce", blocks, heartbeat or Heartbeat(), "row blocks") as prog:
        return geomedian_mads_u16(
            cube.data, scale=inp.scale, offset=inp.offset, nodata=inp.nodata, eps=alg.eps,
            maxiters=alg.maxiters, num_threads=alg.num_threads, row_block=alg.row_block,
            backend=alg.backend, progress=lambda _rows: prog.advance(),
        )  # fmt: skip


def to_dn(gm: NDArray[np.float32], scale: float, offset: float, nodata: int) -> NDArray[np.uint16]:
    """Reflectance back to uint16 digital numbers (NaN → nodata; valid DNs clipped to >= 1)."""
    dn = np.rint((gm.astype(np.float64) - offset) / scale)
    out = np.clip(np.nan_to_num(dn, nan=0), 1, 65535).astype(np.uint16)
    out[np.isnan(gm)] = nodata
    return out


# --- write --------------------------------------------------------------------------------------------
def write_outputs(
    out: TileOutputs, geobox: GeoBox, result: Any, config: RunConfig, heartbeat: Heartbeat, log: Any = None
) -> dict[str, WrittenFile]:
    """One COG per output band; returns what was written, by band."""
    inp = config.input
    layers: list[tuple[str, NDArray[Any], float | None, str]] = []
    for b, band in enumerate(config.bands):
        layers.append((band, to_dn(result.gm[:, :, b], inp.scale, inp.offset, inp.nodata), inp.nodata, "average"))
    for band in MAD_BANDS:
        layers.append((band, getattr(result, band), float("nan"), "average"))
    layers.append((COUNT_BAND, result.count, None, "nearest"))
    files = {}
    for band, data, nodata, resampling in layers:
        files[band] = write_file(out.band_url(band), cog_bytes(data, geobox, nodata, resampling), COG_TYPE)
        heartbeat.beat()
        if log is not None:
            log.info("wrote %s", files[band].url, extra={"stage": "write", "band": band})
    return files


def run_tile(
    plan: Plan,
    tile: TileId | str,
    *,
    location: str | None = None,
    overwrite: bool | None = None,
    skip_bad_inputs: bool = False,
    max_processing_time: float | None = None,
) -> TileReport:
    """Compute one tile of a plan and write its outputs (skipped if already done).

    ``skip_bad_inputs``: drop the items of assets that stay unreadable (listed in the STAC
    item's ``gmrun:skipped_inputs``) instead of failing. ``max_processing_time``: seconds after
    which the process ends with exit code 1 and no done marker (see :class:`Deadline`).
    """
    import json

    from runner.outputs import tile_item

    config = plan.config
    tp = plan.tile(tile)
    tid = tp.tile
    log = tile_logger(tid)
    out = TileOutputs.of(config, tid, plan.period, location)
    overwrite = config.output.overwrite if overwrite is None else overwrite
    if not overwrite and out.is_done():
        log.info("already done: %s", out.item_url, extra={"status": "skipped"})
        return TileReport(tid, "skipped", out.item_url)
    heartbeat = Heartbeat()
    heartbeat.beat(force=True)
    deadline = Deadline(tid, max_processing_time, log)
    skipped: list[str] = []
    timings: dict[str, float] = {}
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    with _timed(timings, "items"):
        items = plan.items(tid)
    if not items:
        raise EmptyTileError(f"tile {tid} is empty: no STAC items in {plan.period.label}; nothing written")
    grid = plan.grid
    geobox = grid.geobox(tid)
    log.info("loading %d items onto %s px", len(items), "×".join(map(str, geobox.shape)),
             extra={"stage": "load", "items": len(items)})  # fmt: skip
    deadline.stage = "load"
    with _timed(timings, "load"):
        try:
            cube = load_cube(items, config, geobox, log, heartbeat, skip_bad_inputs, skipped)
        except EmptyTileError:
            raise EmptyTileError(f"tile {tid} is empty: its items hold no observations; nothing written") from None
    log.info("cube %s uint16 (%.1f MB), %d observations", cube.data.shape, cube.nbytes / 1e6, len(cube.times),
             extra={"stage": "reduce", "cube_bytes": cube.nbytes})  # fmt: skip
    deadline.stage = "reduce"
    with _timed(timings, "reduce"):
        result = reduce_cube(cube, config, log, heartbeat)
    cube_shape, cube_bytes, dates = list(cube.data.shape), cube.nbytes, cube.times
    del cube  # the results are all that writing needs: give the cube's memory back first
    iters = result.iterations[result.count > 0]
    deadline.stage = "write"
    log.info("writing %d files to %s", len(output_bands(config)), out.folder, extra={"stage": "write"})
    with _timed(timings, "write"):
        files = write_outputs(out, geobox, result, config, heartbeat, log)
    metrics = {
        "tile": str(tid),
        "started": started,
        "seconds": timings,
        "cube_shape": cube_shape,
        "cube_bytes": cube_bytes,
        "peak_rss_bytes": peak_rss_bytes(),
        "observations": len(dates),
        "items": len(items),
        "clear_observations_mean": float(result.count.mean()),
        "iterations_mean": float(iters.mean()) if iters.size else 0.0,
        "iterations_max": int(iters.max()) if iters.size else 0,
    }
    write_file(out.metrics_url, json.dumps(metrics, indent=1).encode(), "application/json")
    item = tile_item(
        out, geobox, files,
        extra={
            "gmrun:software": f"gmrun {__version__}",
            "gmrun:algorithm": config.algorithm.model_dump(mode="json"),
            "gmrun:mask": config.mask.model_dump(mode="json"),
            "gmrun:inputs": [it["id"] for it in items],
            "gmrun:skipped_inputs": skipped,
            "gmrun:observation_dates": list(dates),
            "gmrun:metrics": metrics,
        },
    )  # fmt: skip
    deadline.disarm()
    write_file(out.item_url, json.dumps(item, indent=1).encode(), "application/geo+json")  # the done marker
    log.info("done in %.1f s: %s", sum(timings.values()), out.item_url,
             extra={"status": "done", "metrics": metrics})  # fmt: skip
    return TileReport(tid, "done", out.item_url, metrics)

