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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from runner import __version__
from runner.config import RunConfig
from runner.errors import GmrunError, InputAssetError, ProcessingError, UserInputError
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
from runner.plan import Plan, TilePlan
from runner.progress import Heartbeat, StageProgress
from runner.signing import HrefSigner, signer_for


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
            self.log.error(
                "%s", msg, extra={"status": "failed", "stage": self.stage, "reason": "deadline"}
            )
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


#: GDAL's network file systems, by URL scheme (as rasterio maps hrefs onto them).
_VSI_PREFIXES = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/",
                 "az": "/vsiaz/"}  # fmt: skip


def vsi_path(href: str) -> str | None:
    """The GDAL ``/vsi…/`` path GDAL caches a remote asset under (None for a local file).

    >>> vsi_path("https://host/a/b.tif"), vsi_path("s3://bucket/k.tif"), vsi_path("/data/x.tif")
    ('/vsicurl/https://host/a/b.tif', '/vsis3/bucket/k.tif', None)
    """
    scheme, sep, rest = href.partition("://")
    prefix = _VSI_PREFIXES.get(scheme.lower()) if sep else None
    if prefix is None:
        return None
    return prefix + (href if prefix == "/vsicurl/" else rest)


def _probe_asset(href: str, retries: int) -> str | None:
    """Read an asset fully, with retries and backoff; the last error text, or None if readable.

    A remote asset is read with ``CPL_VSIL_CURL_NON_CACHED`` naming it: GDAL's ``/vsicurl/``
    cache (shared by the whole process) would otherwise hand back the failed read — a
    connection reset mid-response stays "unreadable" for the rest of the process — and closing
    a non-cached handle drops what the cache held of that file, so the load that follows reads
    it afresh too.
    """
    import rasterio

    err = None
    vsi = vsi_path(href)
    options = {"CPL_VSIL_CURL_NON_CACHED": vsi} if vsi else {}
    for attempt in range(retries + 1):
        try:
            with rasterio.Env(**options), rasterio.open(href) as src:
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
    ``/vsis3/`` settings. Existing variables win.

    The settings are also handed to odc-stac (``configure_rio``): its reads run under a
    ``rasterio.Env`` whose options override environment variables, and which otherwise carries
    odc-stac's own cloud defaults (10 HTTP retries, 0.5 s delay doubling each time: minutes of
    retrying a timed-out request whatever ``input.retries`` says)."""
    import odc.stac

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
    settings = {k: os.environ[k] for k in env}
    # GDAL_CACHEMAX is process-wide (read from the environment); rasterio.Env wants it an int
    odc.stac.configure_rio(
        cloud_defaults=False, **{k: v for k, v in settings.items() if k != "GDAL_CACHEMAX"}
    )
    return settings


def lazy_stack(
    items: list[dict[str, Any]], config: RunConfig, geobox: GeoBox
) -> tuple[Any, tuple[str, ...]]:
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
        chunks={"x": chunk, "y": chunk, "time": inp.time_chunk},
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


def bytes_read_so_far() -> int:
    """Bytes this process has read so far (``rchar`` of ``/proc/self/io``; 0 where unavailable).

    ``rchar`` counts what ``read()``/``pread()`` returned — local COGs, page-cache hits included —
    so a delta over the load stage is the input bytes GDAL read from files. Reads from network
    sockets with ``recv()`` (GDAL's curl for http/S3 inputs) are NOT counted.
    """
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True, slots=True)
class RowBand:
    """Rows ``[r0, r1)`` of the tile: band ``index`` (0-based) of ``count``."""

    index: int
    count: int
    r0: int
    r1: int


@dataclass
class LoadStats:
    """What loading a tile took, accumulated over its bands (and over restarts, if any)."""

    seconds: float = 0.0  #: wall time of the load stage (graph + GDAL reads + mask + sink)
    bytes_read: int = 0  #: see :func:`bytes_read_so_far`
    row_bands: int = 1
    band_rows: int = 0  #: rows of the largest band (the buffer's height)
    cube_bytes: int = 0  #: bytes of the one preallocated buffer (the largest band's cube)
    tile_cube_bytes: int = 0  #: bytes the whole tile's cube would take
    cube_shape: tuple[int, ...] = ()  #: the whole tile's (y, x, band, time)
    times: tuple[str, ...] = ()
    restarts: int = 0  #: loads started again after a dropped item or a transient failure


#: ``row_bands``: a fixed number of bands, or a function of the tile's (ny, nx, n_bands, n_obs)
#: (the number of observations is only known once the items are grouped into solar days).
RowBandsChoice = int | Callable[[int, int, int, int], int]


def load_bands(
    items: list[dict[str, Any]],
    config: RunConfig,
    geobox: GeoBox,
    log: Any,
    on_band: Callable[[Cube, RowBand], None],
    *,
    row_bands: RowBandsChoice = 1,
    heartbeat: Heartbeat | None = None,
    skip_bad_inputs: bool = False,
    skipped: list[str] | None = None,
    signer: HrefSigner | None = None,
) -> LoadStats:
    """Load, mask and sink the tile one row band at a time into ONE preallocated uint16
    (rows, x, band, time) buffer sized for the largest band, calling ``on_band(cube, band)``
    after each band (``cube.data`` is a view of the buffer, valid until ``on_band`` returns).

    The lazy stack is built once; band heights are multiples of the Dask chunk edge (see
    :func:`runner.plan.band_rows`), so every chunk is computed by one band only.

    An asset that fails is read again directly (``input.retries`` times, with backoff); if it
    is still unreadable the tile fails with :class:`InputAssetError` naming it — or, with
    ``skip_bad_inputs``, its item is dropped (its id appended to ``skipped``). Either way the
    load then starts again from the first band with the new item list (the observations, so
    every band's pixels, may have changed): ``on_band`` sees every band again and must simply
    overwrite what it kept of the earlier attempt.

    With ``input.signing`` (or a ``signer`` given) the hrefs are signed at each attempt, and
    again before a band when a token is due for renewal; a failed asset is probed with a fresh
    token, so a token that expired or was refused costs one reload, not the tile.
    """
    import warnings

    import odc.stac  # noqa: F401  (imported before counting, so that its files are not bytes read)
    from rasterio.errors import NotGeoreferencedWarning

    from runner.plan import band_rows

    # odc-loader reprojects into plain arrays; rasterio warns that they have no georeferencing.
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)

    heartbeat = heartbeat or Heartbeat()
    gdal_environment(config)
    items = list(items)
    skipped = skipped if skipped is not None else []
    threads = config.input.threads or os.cpu_count() or 1
    stats = LoadStats()
    transient: set[str] = set()  # assets that failed once and then read: a second failure is fatal
    signer = signer or signer_for(config.input.signing, config.input.sas_token_url)
    while True:
        if not items:
            raise EmptyTileError("no observations were loaded: every input was skipped")
        t0, rchar0 = time.perf_counter(), bytes_read_so_far()
        signed = signer.sign_items(items)  # the items as they are read
        hrefs = _hrefs(signed)
        stack, times = lazy_stack(signed, config, geobox)
        ny, nx, nb, nt = stack.shape
        if nt == 0:
            raise EmptyTileError("no observations were loaded")
        n = row_bands if isinstance(row_bands, int) else row_bands(ny, nx, nb, nt)
        chunk = stack.chunks[0][0]
        rows = band_rows(ny, max(1, n), chunk)
        height = max(r1 - r0 for r0, r1 in rows)
        buf = np.empty((height, nx, nb, nt), dtype=np.uint16)
        stats.row_bands, stats.band_rows, stats.cube_bytes = len(rows), height, int(buf.nbytes)
        stats.tile_cube_bytes, stats.cube_shape, stats.times = (
            ny * nx * nb * nt * 2,
            (ny, nx, nb, nt),
            times,
        )
        if len(rows) > 1:
            log.info("%d row bands of %d rows (chunk %d px): buffer %s uint16 (%.1f MB) of a %.1f MB cube",
                     len(rows), height, chunk, buf.shape, buf.nbytes / 1e6, stats.tile_cube_bytes / 1e6,
                     extra={"stage": "load", "row_bands": len(rows), "cube_bytes": int(buf.nbytes)})  # fmt: skip
            if height < chunk and not stats.restarts:
                _warn_unaligned_bands(log, height, chunk, (ny, nx, nb, nt), config)
        stats.seconds += time.perf_counter() - t0
        stats.bytes_read += bytes_read_so_far() - rchar0
        failure: Exception | None = None
        for i, (r0, r1) in enumerate(rows):
            band = RowBand(i, len(rows), r0, r1)
            view = buf[: r1 - r0]
            if i > 0 and signer.expiring():  # a token is due: sign again before reading on
                signed = signer.sign_items(items)
                hrefs = _hrefs(signed)
                stack, _ = lazy_stack(signed, config, geobox)
                log.info("SAS tokens renewed before band %d/%d", i + 1, len(rows),
                         extra={"stage": "load", "band": i + 1})  # fmt: skip
            failure = _store_band(stack[r0:r1], view, band, threads, stats, log, heartbeat)
            if failure is not None:
                break
            on_band(Cube(view, tuple(config.bands), times, geobox), band)
            heartbeat.beat(force=True)
        if failure is None:
            return stats
        read_href = _asset_in_error(failure, hrefs)
        if read_href is None:
            text = f"{type(failure).__name__}: {failure}"
            if signer.redact(text) != text:  # no token in a message or a traceback
                raise ProcessingError(signer.redact(text)) from None
            raise failure
        href = signer.plain(read_href)
        message = signer.redact(str(failure))
        del buf, view, failure  # the traceback holds the buffer: free it before the next attempt
        stats.restarts += 1
        # read afresh; a signed asset with a new token (the old one may have expired)
        reason = _probe_asset(signer.sign(href, fresh=True), config.input.retries)
        reason = signer.redact(reason) if reason is not None else None
        if reason is None and href in transient:
            reason = f"failed twice while loading: {message}"
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
        log.warning("skipping item %s: asset unreadable after %d retries: %s (%s); loading again without it",
                    bad.get("id"), config.input.retries, href, reason,
                    extra={"asset": href, "skipped_item": bad.get("id")})  # fmt: skip


def _warn_unaligned_bands(
    log: Any, height: int, chunk: int, shape: tuple[int, int, int, int], config: RunConfig
) -> None:
    """Row bands thinner than a Dask chunk re-read sources: each chunk row is computed whole by
    every band that cuts it (the chunk grid stays the whole tile's, so that the outputs equal a
    whole-tile run's: the reprojection of a pixel depends on its chunk's window)."""
    from runner.plan import band_memory

    ny, nx, nb, nt = shape
    per_chunk = -(-chunk // height) + (1 if chunk % height else 0)
    aligned = band_memory(min(chunk, ny), ny, nx, nb, nt, config.kubernetes.memory_overhead_mib)
    log.warning("row bands of %d rows are thinner than the %d px Dask chunk: each chunk row is read by up to %d "
                "bands (the load takes up to %dx as long); a memory budget of %d MiB gives chunk-aligned bands",
                height, chunk, per_chunk, per_chunk, -(-aligned // 2**20),
                extra={"stage": "load", "band_rows": height, "chunk": chunk})  # fmt: skip


def _store_band(
    part: Any,
    view: NDArray[np.uint16],
    band: RowBand,
    threads: int,
    stats: LoadStats,
    log: Any,
    heartbeat: Heartbeat,
) -> Exception | None:
    """``da.store`` one band's lazy pixels into its view of the buffer, with the threaded
    scheduler; the exception it raised (to be matched to an asset by the caller), else None."""
    import dask
    import dask.array as da
    from dask.callbacks import Callback
    from dask.core import flatten

    t0, rchar0 = time.perf_counter(), bytes_read_so_far()
    if band.count > 1:
        log.info("band %d/%d: rows %d-%d: loading", band.index + 1, band.count, band.r0, band.r1,
                 extra={"stage": "load", "band": band.index + 1, "row_bands": band.count})  # fmt: skip
    # the tasks this band runs: its slice of the stack's graph, without the other bands' chunks
    n_tasks = len(part.__dask_graph__().cull(set(flatten(part.__dask_keys__()))))
    with StageProgress(log, "load", n_tasks, heartbeat, "tasks") as prog:

        class _Tick(Callback):  # type: ignore[misc]
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
                prog.advance()

        try:
            with dask.config.set(scheduler="threads", num_workers=threads), _Tick():
                da.store(part, view, lock=False)
        except Exception as e:
            return e
        finally:
            stats.seconds += time.perf_counter() - t0
            stats.bytes_read += bytes_read_so_far() - rchar0
    return None


def load_cube(
    items: list[dict[str, Any]],
    config: RunConfig,
    geobox: GeoBox,
    log: Any,
    heartbeat: Heartbeat | None = None,
    skip_bad_inputs: bool = False,
    skipped: list[str] | None = None,
    stats: list[LoadStats] | None = None,
) -> Cube:
    """Load, mask and sink the whole tile into one preallocated uint16 (y, x, band, time) array
    (:func:`load_bands` with one band; its :class:`LoadStats` appended to ``stats`` if given).

    An asset that fails is read again directly (``input.retries`` times, with backoff); if it
    is still unreadable the tile fails with :class:`InputAssetError` naming it — or, with
    ``skip_bad_inputs``, its item is dropped (its id appended to ``skipped``) and the load is
    done again without it. If the asset reads now (a transient fault), the load is done once more.
    """
    cubes: list[Cube] = []
    st = load_bands(items, config, geobox, log, lambda cube, _band: cubes.append(cube), row_bands=1,
                    heartbeat=heartbeat, skip_bad_inputs=skip_bad_inputs, skipped=skipped)  # fmt: skip
    if stats is not None:
        stats.append(st)
    return cubes[-1]


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
    out: TileOutputs,
    geobox: GeoBox,
    result: Any,
    config: RunConfig,
    heartbeat: Heartbeat,
    log: Any = None,
) -> dict[str, WrittenFile]:
    """One COG per output band; returns what was written, by band."""
    inp = config.input
    layers: list[tuple[str, NDArray[Any], float | None, str]] = []
    for b, band in enumerate(config.bands):
        layers.append(
            (
                band,
                to_dn(result.gm[:, :, b], inp.scale, inp.offset, inp.nodata),
                inp.nodata,
                "average",
            )
        )
    for band in MAD_BANDS:
        layers.append((band, getattr(result, band), float("nan"), "average"))
    layers.append((COUNT_BAND, result.count, None, "nearest"))
    files = {}
    for band, data, nodata, resampling in layers:
        files[band] = write_file(
            out.band_url(band), cog_bytes(data, geobox, nodata, resampling), COG_TYPE
        )
        heartbeat.beat()
        if log is not None:
            log.info("wrote %s", files[band].url, extra={"stage": "write", "band": band})
    return files


def choose_row_bands(
    plan_tile: TilePlan,
    config: RunConfig,
    row_bands: int | None = None,
    max_memory: int | None = None,
) -> RowBandsChoice:
    """How many row bands the worker cuts a tile into: ``row_bands`` if given; else, when the
    plan gave the tile ``row_bands`` > 1 and/or ``max_memory`` (bytes) is given, the number that
    fits the smaller of the two budgets (the plan's memory, ``max_memory``) once the number of
    observations is known (never fewer than the plan's); else 1. See docs/subtiles.md."""
    from runner.plan import row_bands_for

    if row_bands is not None:
        if row_bands < 1:
            raise UserInputError(f"--row-bands must be at least 1, got {row_bands}")
        return row_bands
    budgets = [
        b
        for b in (max_memory, plan_tile.resources.memory_bytes if plan_tile.row_bands > 1 else None)
        if b
    ]
    if not budgets:
        return plan_tile.row_bands
    budget, overhead = min(budgets), config.kubernetes.memory_overhead_mib

    def fit(ny: int, nx: int, nb: int, nt: int) -> int:
        chunk = min(config.input.chunk, max(ny, nx))
        return max(plan_tile.row_bands, row_bands_for(budget, ny, nx, nb, nt, overhead, chunk))

    return fit


class _TileResult:
    """The whole tile's results, filled band by band (a band's result is copied into its rows);
    with one band the reduction's own result is kept as it is, without a copy."""

    def __init__(self) -> None:
        self.result: Any = None
        self.reduce_seconds = 0.0

    def put(self, res: Any, band: RowBand, ny: int) -> None:
        from algos import GeomadResult

        if band.count == 1:
            self.result = res
            return
        if self.result is None or self.result.count.shape[0] != ny:
            nx = res.count.shape[1]
            self.result = GeomadResult(*(np.empty((ny, nx, *getattr(res, f).shape[2:]), getattr(res, f).dtype)
                                         for f in ("gm", "emad", "smad", "bcmad", "count", "iterations")))  # fmt: skip
        for f in ("gm", "emad", "smad", "bcmad", "count", "iterations"):
            getattr(self.result, f)[band.r0 : band.r1] = getattr(res, f)


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
) -> TileReport:
    """Compute one tile of a plan and write its outputs (skipped if already done).

    ``skip_bad_inputs``: drop the items of assets that stay unreadable (listed in the STAC
    item's ``gmrun:skipped_inputs``) instead of failing. ``max_processing_time``: seconds after
    which the process ends with exit code 1 and no done marker (see :class:`Deadline`).
    ``row_bands`` / ``max_memory`` (bytes): process the tile in row bands, that many or as many
    as fit the memory budget (see :func:`choose_row_bands`). The results are kept in memory for
    the whole tile and each COG is written once at the end: results are byte-identical to a
    whole-tile run.
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
    bands_choice = choose_row_bands(tp, config, row_bands, max_memory)
    heartbeat = Heartbeat()
    heartbeat.beat(force=True)
    deadline = Deadline(tid, max_processing_time, log)
    skipped: list[str] = []
    timings: dict[str, float] = {}
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    with _timed(timings, "items"):
        items = plan.items(tid)
    if not items:
        raise EmptyTileError(
            f"tile {tid} is empty: no STAC items in {plan.period.label}; nothing written"
        )
    grid = plan.grid
    geobox = grid.geobox(tid)
    ny = geobox.shape.y
    log.info("loading %d items onto %s px", len(items), "×".join(map(str, geobox.shape)),
             extra={"stage": "load", "items": len(items)})  # fmt: skip
    deadline.stage = "load"
    tile_result = _TileResult()

    def on_band(cube: Cube, band: RowBand) -> None:
        if band.index == 0:
            log.info("cube %s uint16 (%.1f MB), %d observations", cube.data.shape, cube.nbytes / 1e6,
                     len(cube.times), extra={"stage": "reduce", "cube_bytes": cube.nbytes})  # fmt: skip
        deadline.stage = (
            "reduce" if band.count == 1 else f"reduce (band {band.index + 1}/{band.count})"
        )
        t0 = time.perf_counter()
        tile_result.put(reduce_cube(cube, config, log, heartbeat), band, ny)
        dt = time.perf_counter() - t0
        tile_result.reduce_seconds += dt
        if band.count > 1:
            log.info("band %d/%d: rows %d-%d: done (reduce %.1f s), %d%% of the tile", band.index + 1,
                     band.count, band.r0, band.r1, dt, 100 * band.r1 // ny,
                     extra={"stage": "reduce", "band": band.index + 1, "row_bands": band.count,
                            "progress": 100 * band.r1 // ny})  # fmt: skip
            deadline.stage = f"load (band {band.index + 2}/{band.count})"

    t0 = time.perf_counter()
    try:
        stats = load_bands(items, config, geobox, log, on_band, row_bands=bands_choice, heartbeat=heartbeat,
                           skip_bad_inputs=skip_bad_inputs, skipped=skipped)  # fmt: skip
    except EmptyTileError:
        raise EmptyTileError(
            f"tile {tid} is empty: its items hold no observations; nothing written"
        ) from None
    timings["load"] = round(time.perf_counter() - t0 - tile_result.reduce_seconds, 3)
    timings["reduce"] = round(tile_result.reduce_seconds, 3)
    result, dates = tile_result.result, stats.times
    iters = result.iterations[result.count > 0]
    deadline.stage = "write"
    log.info(
        "writing %d files to %s", len(output_bands(config)), out.folder, extra={"stage": "write"}
    )
    with _timed(timings, "write"):
        files = write_outputs(out, geobox, result, config, heartbeat, log)
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
    write_file(
        out.item_url, json.dumps(item, indent=1).encode(), "application/geo+json"
    )  # the done marker
    log.info("done in %.1f s: %s", sum(timings.values()), out.item_url,
             extra={"status": "done", "metrics": metrics})  # fmt: skip
    return TileReport(tid, "done", out.item_url, metrics)
