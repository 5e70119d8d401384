"""The gather load: a row band's masked uint16 (y, x, band, time) pixels, decode + one gather.

:class:`GatherStack` stands where :func:`runner.worker.load.lazy_stack`'s Dask array stands in
:class:`runner.worker.load.TileLoader` (``shape``, ``chunks``, ``stack[r0:r1]``), and a slice of
it stores itself into the band's view of the sink. What it reproduces from odc-stac, taken from
odc-stac itself: ``odc.stac.load(..., debug=True)`` with the same arguments as ``lazy_stack``
gives the solar-day groups and their order (time, then id), the timestamps, the chunk grid
(``GeoboxTiles``), which item feeds which chunk (``tyx_bins``, from the item footprints), each
band's source (href, band index) and load parameters (dtype, fill value, nodata); nothing of
its graph is computed. Per row band:

1. SCL: for each date, every source of the date is opened, the source window its chunks' maps
   touch (:mod:`.grid_map`) decoded once, and gathered and fused (first valid source of the
   day wins, pixel by pixel, in odc-stac's order) over the band's rows plus the mask's halo;
   then :mod:`runner.worker.mask`'s classes, opening and dilation, cropped to the band: the
   same clear mask as the Dask path's ``map_overlap`` (both equal the whole-tile cleanup).
2. Every band, ``time_chunk`` dates a task: gathered the same way into a (dates, rows, x)
   buffer, then written with the mask into the sink, that many time-contiguous values a pixel.

Tasks run in a thread pool of the worker's CPU budget; decoding and both kernels release the
GIL. A failed read raises out of :meth:`GatherRows.store` with the href in the reading frame,
so :func:`runner.worker.assets.asset_in_error` finds it as it finds odc-stac's.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from runner.common.config import RunConfig
from runner.worker.gather.grid_map import ChunkMap, GatherUnsupported, GridMaps
from runner.worker.gather.kernels import gather_fuse, write_masked
from runner.worker.gather.read import open_source

Item = dict[str, Any]
#: bytes of (dates, rows, x) gather buffers in flight, all threads together, at most
BUFFER_BUDGET = 256 * 2**20


@dataclass(frozen=True, slots=True)
class BandPlan:
    """One band as odc-stac loads it: its name, dtype and fill value, its load parameters."""

    name: str
    dtype: np.dtype[Any]
    fill: int
    cfg: Any  #: odc-loader ``RasterLoadParams``


def plan_load(items: list[Item], config: RunConfig, geobox: GeoBox) -> Any:
    """odc-stac's plan of the load (``odc.stac.load(..., debug=True)``'s debug record, with
    ``ds``: the lazy dataset itself); :class:`GatherUnsupported` for what the gather cannot serve."""
    from runner.worker.load import odc_stac_dataset  # here: runner.worker.load imports this module

    if config.input.resampling != "nearest":
        raise GatherUnsupported(f"input.resampling is {config.input.resampling!r}, not 'nearest'")
    ds, chunk = odc_stac_dataset(items, config, geobox, debug=True)
    dbg = ds.encoding["debug"]
    dbg.ds, dbg.chunk = ds, chunk
    return dbg


def band_plans(dbg: Any, names: list[str]) -> list[BandPlan]:
    """The bands' dtypes and fill values as odc-stac resolves them; :class:`GatherUnsupported`
    for a resampling, fuser, dtype or extra dimension the gather does not reproduce."""
    from odc.loader._reader import resolve_dst_fill_value, resolve_src_nodata

    out = []
    for name in names:
        cfg = dbg.load_cfg[name]
        if not cfg.nearest:
            raise GatherUnsupported(f"band {name} is resampled with {cfg.resampling!r}")
        if cfg.fuser_fqn is not None:
            raise GatherUnsupported(f"band {name} has a custom fuser {cfg.fuser_fqn}")
        if cfg.dims:
            raise GatherUnsupported(f"band {name} has extra dimensions {cfg.dims}")
        dtype = np.dtype(cfg.dtype or "uint16")
        if dtype not in (np.dtype("uint8"), np.dtype("uint16")):
            raise GatherUnsupported(f"band {name} loads as {dtype}, not uint8/uint16")
        fill = resolve_dst_fill_value(dtype, cfg, resolve_src_nodata(cfg.fill_value, cfg))
        out.append(BandPlan(name, dtype, int(fill), cfg))
    return out


class GatherStack:
    """A tile's masked observations, (y, x, band, time) uint16, loaded by gathering.

    ``shape``, ``chunks`` (rows per chunk row first, as a Dask array's) and ``times`` as
    :func:`runner.worker.load.lazy_stack` gives them; ``stack[r0:r1]`` is a :class:`GatherRows`.
    """

    def __init__(self, items: list[Item], config: RunConfig, geobox: GeoBox, threads: int) -> None:
        self.config, self.geobox, self.threads = config, geobox, max(1, threads)
        dbg = plan_load(items, config, geobox)
        self.chunk: int = dbg.chunk
        self.bands = band_plans(dbg, list(config.bands))
        self.scl = band_plans(dbg, [config.mask.band])[0]
        self.srcs: list[dict[str, Any]] = dbg.srcs
        self.maps = GridMaps(dbg.gbt)
        #: per date: (item index, its chunks (iy, ix)) in odc-stac's fusing order
        self.feeds: list[list[tuple[int, list[tuple[int, int]]]]] = []
        for t, group in enumerate(dbg.grouped_idx):
            chunks: dict[int, list[tuple[int, int]]] = {}
            for (tt, iy, ix), ii in dbg.tyx_bins.items():
                if tt == t:
                    for i in ii:
                        chunks.setdefault(i, []).append((iy, ix))
            self.feeds.append([(i, sorted(chunks[i])) for i in group if i in chunks])
        ny, nx = geobox.shape.yx
        self.times = tuple(str(np.datetime_as_string(t, unit="D")) for t in dbg.ds.time.values)
        self.shape = (ny, nx, len(self.bands), len(self.times))
        edges = list(range(0, ny, self.chunk))
        self.chunks = (tuple(min(ny, e + self.chunk) - e for e in edges),)

    def __getitem__(self, rows: slice) -> GatherRows:
        return GatherRows(self, int(rows.start or 0), int(rows.stop))

    def gather(self, band: BandPlan, t: int, a: int, b: int, out: NDArray[np.uint16]) -> None:
        """Date ``t`` of ``band`` over tile rows ``[a, b)`` into ``out`` (b - a, x), prefilled
        with the band's fill value: each source decoded once over the window it needs."""
        from odc.loader._reader import resolve_dst_nodata, resolve_src_nodata

        ch = self.chunk
        for item, chunks in self.feeds[t]:
            rows = [(iy, ix) for iy, ix in chunks if iy * ch < b and (iy + 1) * ch > a]
            src = self.srcs[item].get(band.name) if rows else None
            if src is None:
                continue
            if src.subdataset is not None or src.band < 1:
                raise GatherUnsupported(f"{src.uri}: a subdataset or a multi-band read")
            uri = src.uri  # named in this frame: asset_in_error finds it in a failure's traceback
            with open_source(uri, src.band) as s:
                parts: list[tuple[ChunkMap, int, int, int, int]] = []
                windows = []
                for iy, ix in rows:
                    m = self.maps.get(s.grid, iy, ix)
                    if m is None:
                        continue
                    y0, x0 = iy * ch + m.roi[0].start, ix * ch + m.roi[1].start
                    lo, hi = max(a, y0), min(b, iy * ch + m.roi[0].stop)
                    w = m.window(lo - y0, hi - y0) if lo < hi else None
                    if w is not None:
                        parts.append((m, lo, hi, y0, x0))
                        windows.append(w)
                if not parts:
                    continue
                r0, c0 = min(w[0] for w in windows), min(w[2] for w in windows)
                win = s.read((r0, max(w[1] for w in windows), c0, max(w[3] for w in windows)))
                src_nodata = resolve_src_nodata(s.nodata, band.cfg)
                dst_nodata = resolve_dst_nodata(band.dtype, band.cfg, src_nodata)
                if dst_nodata is None or int(dst_nodata) != band.fill:
                    raise GatherUnsupported(f"{uri}: nodata {dst_nodata} is not the fill value")
                has = src_nodata is not None and float(src_nodata).is_integer()
                for m, lo, hi, y0, x0 in parts:
                    nxp = m.rows.shape[1]
                    gather_fuse(
                        out[lo - a : hi - a, x0 : x0 + nxp],
                        m.rows[lo - y0 : hi - y0],
                        m.cols[lo - y0 : hi - y0],
                        win,
                        r0,
                        c0,
                        int(src_nodata) if has else 0,  # type: ignore[arg-type]
                        has,
                        band.fill,
                    )


class GatherRows:
    """Rows ``[r0, r1)`` of a :class:`GatherStack`, to be stored into the sink's view."""

    def __init__(self, stack: GatherStack, r0: int, r1: int) -> None:
        self.stack, self.r0, self.r1 = stack, r0, r1

    def _groups(self) -> list[tuple[int, int]]:
        st = self.stack
        nx, nt = st.shape[1], st.shape[3]
        per = BUFFER_BUDGET // max(1, st.threads * (self.r1 - self.r0) * nx * 2)
        k = max(1, min(nt, per))
        return [(t, min(nt, t + k)) for t in range(0, nt, k)]

    def n_tasks(self) -> int:
        """Tasks :meth:`store` runs: one per date (the mask), one per band and date group."""
        return self.stack.shape[3] + self.stack.shape[2] * len(self._groups())

    def _clear(self, t: int, clear: NDArray[np.bool_]) -> None:
        """The clear mask of date ``t`` over the rows (SCL gathered with the mask's halo)."""
        from runner.worker.mask import cleanup, halo

        st, mask = self.stack, self.stack.config.mask
        ny, nx = st.shape[:2]
        h = halo(mask) if (mask.opening > 0 or mask.dilation > 0) else 0
        a, b = max(0, self.r0 - h), min(ny, self.r1 + h)
        scl = np.full((b - a, nx), st.scl.fill, np.uint16)
        st.gather(st.scl, t, a, b, scl)
        cloud = np.isin(scl, np.asarray(mask.cloud_classes, dtype=np.uint16))
        if h:
            cloud = cleanup(cloud[None], mask.opening, mask.dilation)[0]
        bad = np.isin(scl, np.asarray(mask.nodata_classes, dtype=np.uint16))
        clear[t] = ~(bad | cloud)[self.r0 - a : self.r1 - a]

    def _band(
        self, bi: int, t0: int, t1: int, clear: NDArray[np.bool_], view: NDArray[np.uint16]
    ) -> None:
        st = self.stack
        band = st.bands[bi]
        temp = np.full((t1 - t0, self.r1 - self.r0, st.shape[1]), band.fill, np.uint16)
        for k in range(t1 - t0):
            st.gather(band, t0 + k, self.r0, self.r1, temp[k])
        write_masked(view, bi, t0, temp, clear, int(st.config.input.nodata))

    def store(self, view: NDArray[np.uint16], on_task: Callable[[], None] | None = None) -> None:
        """Load the rows into ``view`` (rows, x, band, time); ``on_task`` after each task. The
        first failure is raised (the tasks not yet started are cancelled)."""
        st = self.stack
        _, nx, nb, nt = st.shape
        if not view.flags.c_contiguous:  # write_masked indexes it flat
            raise ValueError("the gather stores into a C-contiguous (rows, x, band, time) view")
        ch = st.chunk
        st.maps.forget_rows(max(0, self.r0 - ch) // ch)
        clear = np.empty((nt, self.r1 - self.r0, nx), np.bool_)
        with ThreadPoolExecutor(max_workers=st.threads, thread_name_prefix="gather") as pool:
            _run(pool, [(self._clear, (t, clear)) for t in range(nt)], on_task)
            jobs = [
                (self._band, (bi, t0, t1, clear, view))
                for t0, t1 in self._groups()
                for bi in range(nb)
            ]
            _run(pool, jobs, on_task)


def _run(
    pool: ThreadPoolExecutor,
    jobs: list[tuple[Callable[..., None], tuple[Any, ...]]],
    on_task: Callable[[], None] | None,
) -> None:
    """Run the jobs in the pool; the first exception is raised after cancelling the rest."""
    futures: list[Future[None]] = [pool.submit(fn, *args) for fn, args in jobs]
    try:
        for f in futures:
            f.result()
            if on_task is not None:
                on_task()
    except BaseException:
        for f in futures:
            f.cancel()
        raise
