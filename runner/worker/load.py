"""The load: a tile's items → masked uint16 cubes, one row band at a time.

``odc.stac.load`` reads the tile's items at the tile's GeoBox lazily (Dask), one observation
per ``input.groupby`` (overlapping granules of one solar day are fused, not double-counted); the
SCL mask (:mod:`runner.worker.mask`) turns every band of a masked observation to nodata; and each
row band is ``da.store``-d into ONE preallocated uint16 (rows, x, band, time) buffer with Dask's
threaded scheduler in this process (a single worker: GDAL reads in threads, no inter-process
copies). :class:`TileLoader` yields the bands in order; nothing else of the cube's size is ever
allocated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from runner.common.config import RunConfig
from runner.common.errors import EmptyTileError, InputAssetError, ProcessingError
from runner.common.heap import give_back_freed
from runner.common.logs import TileLog
from runner.common.progress import Heartbeat, StageProgress
from runner.common.threads import pool_threads
from runner.planner.sizing import RowBandsChoice, aligned_budget, band_rows
from runner.worker.assets import asset_in_error, hrefs, item_of, probe_asset
from runner.worker.cube import Cube, RowBand, Sink
from runner.worker.gather.dispatch import LoaderChoice
from runner.worker.gather.load import GatherRows
from runner.worker.gdal import gdal_environment
from runner.worker.metrics import bytes_read_so_far
from runner.worker.signing import HrefSigner, signer_for

Item = dict[str, Any]


def odc_stac_dataset(
    items: list[Item], config: RunConfig, geobox: GeoBox, debug: bool = False
) -> tuple[Any, int]:
    """The tile's lazy ``odc.stac.load`` dataset (bands + mask band at ``geobox``, Dask chunks of
    ``input.chunk`` px, grouped by ``input.groupby``) and that chunk size (px): the one call both
    load paths plan with (``debug``: with odc-stac's debug record, for the gather)."""
    import odc.stac
    import pystac

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
        debug=debug,
    )
    return ds, chunk


def lazy_stack(items: list[Item], config: RunConfig, geobox: GeoBox) -> tuple[Any, tuple[str, ...]]:
    """The masked observations as a lazy uint16 Dask array (y, x, band, time), and their dates."""
    import dask.array as da

    from runner.worker.mask import clear_mask

    inp, mask = config.input, config.mask
    ds, _ = odc_stac_dataset(items, config, geobox)
    clear = clear_mask(ds[mask.band].data, mask)
    nodata = np.uint16(inp.nodata)
    layers = [da.where(clear, ds[b].data.astype(np.uint16), nodata) for b in config.bands]
    stack = da.stack(layers, axis=1).transpose(2, 3, 1, 0)  # (t, b, y, x) -> (y, x, b, t)
    times = tuple(str(np.datetime_as_string(t, unit="D")) for t in ds.time.values)
    return stack, times


def row_band_rows(
    choice: RowBandsChoice, ny: int, nx: int, nb: int, nt: int, chunk: int
) -> list[tuple[int, int]]:
    """The row bands ``[(r0, r1), ...]`` a ``choice`` gives a (ny, nx, nb, nt) tile."""
    n = choice if isinstance(choice, int) else choice(ny, nx, nb, nt)
    return band_rows(ny, max(1, n), chunk)


def sink_bytes(config: RunConfig, geobox: GeoBox, choice: RowBandsChoice, n_obs: int) -> int:
    """Bytes of the load's buffer for ``n_obs`` observations (the plan's estimate): the largest
    row band's uint16 cube; 0 without observations."""
    ny, nx = geobox.shape.yx
    nb = len(config.bands)
    if n_obs < 1:
        return 0
    rows = row_band_rows(choice, ny, nx, nb, n_obs, min(config.input.chunk, max(ny, nx)))
    return max(r1 - r0 for r0, r1 in rows) * nx * nb * n_obs * 2


@dataclass
class LoadStats:
    """What loading a tile took, accumulated over its bands (and over restarts, if any)."""

    bytes_read: int = 0  #: see :func:`runner.worker.metrics.bytes_read_so_far`
    row_bands: int = 1
    band_rows: int = 0  #: rows of the largest band (the buffer's height)
    cube_bytes: int = 0  #: bytes of the one preallocated buffer (the largest band's cube)
    tile_cube_bytes: int = 0  #: bytes the whole tile's cube would take
    cube_shape: tuple[int, ...] = ()  #: the whole tile's (y, x, band, time)
    times: tuple[str, ...] = ()
    restarts: int = 0  #: loads started again after a dropped item or a transient failure


class TileLoader:
    """Loads, masks and sinks a tile one row band at a time into ONE preallocated uint16
    (rows, x, band, time) buffer sized for the largest band.

    Iterate :meth:`bands` for ``(cube, band)`` pairs, top to bottom; ``cube.data`` is a view of
    the buffer, valid until the next pair is asked for. The lazy stack is built once; band
    heights are multiples of the Dask chunk edge (:func:`runner.planner.sizing.band_rows`), so
    every chunk is computed by one band only.

    An asset that fails is read again directly (``input.retries`` times, with backoff); if it
    is still unreadable the tile fails with :class:`InputAssetError` naming it — or, with
    ``skip_bad_inputs``, its item is dropped (its id appended to :attr:`skipped`). Either way the
    load then starts again from the first band with the new item list (the observations, so
    every band's pixels, may have changed): the bands are yielded again from the first, and a
    consumer simply overwrites what it kept of the earlier attempt.

    With ``input.signing`` (or a ``signer`` given) the hrefs are signed at each attempt, and
    again before a band when a token is due for renewal; a failed asset is probed with a fresh
    token, so a token that expired or was refused costs one reload, not the tile.
    """

    def __init__(
        self,
        items: list[Item],
        config: RunConfig,
        geobox: GeoBox,
        log: TileLog,
        *,
        row_bands: RowBandsChoice = 1,
        heartbeat: Heartbeat | None = None,
        skip_bad_inputs: bool = False,
        signer: HrefSigner | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.items = list(items)  #: the items still loaded (without the skipped ones)
        self.config, self.geobox, self.log = config, geobox, log
        self.row_bands = row_bands
        self.heartbeat = heartbeat or Heartbeat()
        self.skip_bad_inputs = skip_bad_inputs
        self.signer = signer or signer_for(config.input.signing, config.input.sas_token_url)
        self.skipped: list[str] = []  #: ids of the items dropped as unreadable
        self.stats = LoadStats()
        #: the Dask pool's threads: ``input.threads``, at most the CPU budget (runner.common.threads)
        self.threads = pool_threads(config.input.threads)
        #: the load path (``input.loader``): the gather, or odc-stac (runner.worker.gather)
        self.loader = LoaderChoice(config, log)
        self.sink = sink or Sink()  #: the one buffer (prefaulted early by the caller, if at all)

    def bands(self) -> Iterator[tuple[Cube, RowBand]]:
        """The tile's row bands, loaded, top to bottom (again from the top after a restart)."""
        import warnings

        import odc.stac  # noqa: F401  (imported before counting, so its files are not bytes read)
        from rasterio.errors import NotGeoreferencedWarning

        # odc-loader reprojects into plain arrays; rasterio warns that they have no georeferencing.
        warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
        gdal_environment(self.config)
        config, geobox, log, signer, stats = (
            self.config,
            self.geobox,
            self.log,
            self.signer,
            self.stats,
        )
        transient: set[str] = set()  # assets that failed once, then read: a 2nd failure is fatal
        while True:
            if not self.items:
                raise EmptyTileError("no observations were loaded: every input was skipped")
            rchar0 = bytes_read_so_far()
            signed = signer.sign_items(self.items)  # the items as they are read
            known = hrefs(signed)
            stack, times = self.loader.stack(signed, config, geobox, self.threads)
            ny, nx, nb, nt = stack.shape
            if nt == 0:
                raise EmptyTileError("no observations were loaded")
            chunk = stack.chunks[0][0]
            rows = row_band_rows(self.row_bands, ny, nx, nb, nt, chunk)
            height = max(r1 - r0 for r0, r1 in rows)
            buf = self.sink.take((height, nx, nb, nt))
            stats.row_bands, stats.band_rows, stats.cube_bytes = len(rows), height, int(buf.nbytes)
            stats.tile_cube_bytes = ny * nx * nb * nt * 2
            stats.cube_shape, stats.times = (ny, nx, nb, nt), times
            if len(rows) > 1:
                log.info(
                    "%d row bands of %d rows (chunk %d px): buffer %s uint16 (%.1f MB) of a %.1f MB cube",
                    len(rows),
                    height,
                    chunk,
                    buf.shape,
                    buf.nbytes / 1e6,
                    stats.tile_cube_bytes / 1e6,
                    extra={"stage": "load", "row_bands": len(rows), "cube_bytes": int(buf.nbytes)},
                )
                if height < chunk and not stats.restarts and self.loader.used != "gather":
                    self._warn_unaligned(height, chunk, (ny, nx, nb, nt))
            stats.bytes_read += bytes_read_so_far() - rchar0
            failure: Exception | None = None
            for i, (r0, r1) in enumerate(rows):
                band = RowBand(i, len(rows), r0, r1)
                if i > 0 and signer.expiring():  # a token is due: sign again before reading on
                    signed = signer.sign_items(self.items)
                    known = hrefs(signed)
                    stack, _ = self.loader.stack(signed, config, geobox, self.threads)
                    log.info(
                        "SAS tokens renewed before band %d/%d",
                        i + 1,
                        len(rows),
                        extra={"stage": "load", "band": i + 1},
                    )
                failure = self._store(stack[r0:r1], buf[: r1 - r0], band)
                if failure is not None:
                    break
                give_back_freed()  # what the band's load freed, before the reduce allocates
                yield Cube(buf[: r1 - r0], tuple(config.bands), times, geobox), band
                self.heartbeat.beat(force=True)
            if failure is None:
                return
            if not self.loader.fall_back(failure):  # the gather's unsupported input: odc-stac
                self._recover(failure, known, transient)
            # the failure's traceback holds a view of the buffer: free both before a restart
            del buf, failure
            stats.restarts += 1

    def _recover(self, failure: Exception, known: list[str], transient: set[str]) -> None:
        """After a failed band: return to load again (a transient fault, or the asset's item
        dropped with ``skip_bad_inputs``), or raise what the tile fails with."""
        signer, config = self.signer, self.config
        read_href = asset_in_error(failure, known)
        if read_href is None:
            text = f"{type(failure).__name__}: {failure}"
            if signer.redact(text) != text:  # no token in a message or a traceback
                raise ProcessingError(signer.redact(text)) from None
            raise failure
        href = signer.plain(read_href)
        message = signer.redact(str(failure))
        # read afresh; a signed asset with a new token (the old one may have expired)
        reason = probe_asset(signer.sign(href, fresh=True), config.input.retries)
        reason = signer.redact(reason) if reason is not None else None
        if reason is None and href in transient:
            reason = f"failed twice while loading: {message}"
        if reason is None:
            transient.add(href)
            self.log.warning(
                "transient read failure of %s; loading again", href, extra={"asset": href}
            )
            return
        bad = item_of(self.items, href)
        if not self.skip_bad_inputs or bad is None:
            raise InputAssetError(
                f"input asset unreadable after {config.input.retries} retries: {href} ({reason})"
            ) from None
        self.items.remove(bad)
        self.skipped.append(str(bad.get("id")))
        self.log.warning(
            "skipping item %s: asset unreadable after %d retries: %s (%s); loading again without it",
            bad.get("id"),
            config.input.retries,
            href,
            reason,
            extra={"asset": href, "skipped_item": bad.get("id")},
        )

    def _warn_unaligned(self, height: int, chunk: int, shape: tuple[int, int, int, int]) -> None:
        """Row bands thinner than a Dask chunk re-read sources: each chunk row is computed whole
        by every band that cuts it (the chunk grid stays the whole tile's, so that the outputs
        equal a whole-tile run's: the reprojection of a pixel depends on its chunk's window)."""
        ny, nx, nb, nt = shape
        per_chunk = -(-chunk // height) + (1 if chunk % height else 0)
        aligned = aligned_budget(chunk, ny, nx, nb, nt, self.config)
        self.log.warning(
            "row bands of %d rows are thinner than the %d px Dask chunk: each chunk row is read by "
            "up to %d bands (the load takes up to %dx as long); a memory budget of %d MiB gives "
            "chunk-aligned bands",
            height,
            chunk,
            per_chunk,
            per_chunk,
            -(-aligned // 2**20),
            extra={"stage": "load", "band_rows": height, "chunk": chunk},
        )

    def _store(self, part: Any, view: NDArray[np.uint16], band: RowBand) -> Exception | None:
        """One band's lazy pixels into its view of the buffer, with Dask's threaded scheduler
        (``da.store`` of odc-stac's stack, or the gather's graph); the exception it raised (to be
        matched to an asset), else None."""
        import dask
        import dask.array as da
        from dask.callbacks import Callback
        from dask.core import flatten

        stats = self.stats
        rchar0 = bytes_read_so_far()
        if band.count > 1:
            self.log.info(
                "band %d/%d: rows %d-%d: loading",
                band.index + 1,
                band.count,
                band.r0,
                band.r1,
                extra={"stage": "load", "band": band.index + 1, "row_bands": band.count},
            )
        if isinstance(part, GatherRows):  # the gather path: its own graph, stored by its tasks
            dsk, keys = part.graph(view)
            n_tasks = len(dsk)
        else:  # the tasks this band runs: its slice of the stack's graph, not other bands' chunks
            n_tasks = len(part.__dask_graph__().cull(set(flatten(part.__dask_keys__()))))
        with StageProgress(self.log, "load", n_tasks, self.heartbeat, "tasks") as prog:

            class _Tick(Callback):
                def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
                    prog.advance()

            try:
                with dask.config.set(scheduler="threads", num_workers=self.threads), _Tick():
                    if isinstance(part, GatherRows):
                        dask.threaded.get(dsk, keys, num_workers=self.threads)
                    else:
                        da.store(part, view, lock=False)
            except Exception as e:
                return e
            finally:
                stats.bytes_read += bytes_read_so_far() - rchar0
        return None


def load_cube(
    items: list[Item],
    config: RunConfig,
    geobox: GeoBox,
    log: TileLog,
    heartbeat: Heartbeat | None = None,
    skip_bad_inputs: bool = False,
    sink: Sink | None = None,
) -> Cube:
    """The whole tile's cube in one array (a :class:`TileLoader` of one band), for tools and
    benchmarks (``sink``: a buffer taken beforehand, as the worker takes it while it checks
    its inputs); the worker itself iterates the loader's bands."""
    loader = TileLoader(
        items, config, geobox, log, heartbeat=heartbeat, skip_bad_inputs=skip_bad_inputs, sink=sink
    )
    cube: Cube | None = None
    for band_cube, _band in loader.bands():
        cube = band_cube  # one band: the last one yielded is the whole tile, after any restart
    assert cube is not None  # bands() yields at least one band or raises
    return cube
