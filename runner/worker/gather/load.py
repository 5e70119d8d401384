"""The gather load: a row band's masked uint16 (y, x, band, time) pixels, decode + one gather.

:class:`GatherStack` stands where :func:`runner.worker.load.lazy_stack`'s Dask array stands in
:class:`runner.worker.load.TileLoader` (``shape``, ``chunks``, ``stack[r0:r1]``), and a slice of
it is a Dask graph that stores itself into the band's view of the sink. What it reproduces
from odc-stac, taken from odc-stac itself: ``odc.stac.load(..., debug=True)`` with the same
arguments as ``lazy_stack`` gives the solar-day groups and their order (time, then id), the
timestamps, the chunk grid (``GeoboxTiles``), which item feeds which chunk (``tyx_bins``, from
the item footprints), each band's source (href, band index) and load parameters (dtype, fill
value, nodata); nothing of its graph is computed. Per row band, the graph's tasks:

1. one per date, the clear mask: the SCL's sources of the date opened, the source window their
   chunks' maps touch (:mod:`.grid_map`) decoded once, gathered and fused (first valid source
   of the day wins, pixel by pixel, in odc-stac's order) over the band's rows plus the mask's
   halo; then :mod:`runner.worker.mask`'s classes, opening and dilation, cropped to the band
   (the same clear mask as the Dask path's ``map_overlap``: both equal the whole-tile cleanup);
2. one per band and group of dates, after its dates' masks: the sources decoded, those of one
   granule grid into one stack, and :func:`.kernels.gather_write` gathers, fuses, masks and
   writes them into the sink, all the group's dates of a pixel at once.

Dask's threaded scheduler runs them on the worker's CPU budget (one process); decoding and the
kernels release the GIL. A failed read raises out of the graph with the href in the reading
frame, so :func:`runner.worker.assets.asset_in_error` finds it as it finds odc-stac's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from runner.common.config import RunConfig
from runner.common.heap import give_back_freed
from runner.planner.sizing import LOAD_WINDOWS_BYTES, MIN_RUN_DATES
from runner.worker.gather.grid_map import ChunkMap, GatherUnsupported, GridMaps, SourceGrid
from runner.worker.gather.kernels import P_COLS, gather_fuse, gather_write
from runner.worker.gather.sources import BandPlan, RowParts, Source, open_sources

Item = dict[str, Any]


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
        #: per SCL value: bit 1 a cloud class, bit 2 a nodata class (a table, not two isin)
        self.scl_classes = np.zeros(2**16, np.uint8)
        self.scl_classes[list(config.mask.cloud_classes)] |= 1
        self.scl_classes[list(config.mask.nodata_classes)] |= 2
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

    def sources(self, band: BandPlan, t: int, parts: RowParts, stack: ExitStack) -> list[Source]:
        """The sources of date ``t`` of ``band`` over the tile rows of ``parts``, opened (closed
        with ``stack``) and planned, in odc-stac's fusing order (:func:`.sources.open_sources`)."""
        return open_sources(parts, self.feeds[t], self.srcs, band, stack)

    def row_parts(self, a: int, b: int) -> RowParts:
        """The planner of tile rows ``[a, b)``'s parts (one per row band and halo)."""
        return RowParts(self.maps, self.chunk, a, b)

    def gather(self, band: BandPlan, t: int, parts: RowParts, out: NDArray[np.uint16]) -> None:
        """Date ``t`` of ``band`` over the tile rows of ``parts`` into ``out`` (rows, x),
        prefilled with the band's fill value (the SCL: its mask's morphology needs whole planes)."""
        a = parts.a
        with ExitStack() as stack:
            for src in self.sources(band, t, parts, stack):
                win = src.decode()
                for p in src.parts:
                    nxp = p.map.rows.shape[1]
                    gather_fuse(
                        out[p.lo - a : p.hi - a, p.x0 : p.x0 + nxp],
                        p.map.rows[p.lo - p.y0 : p.hi - p.y0],
                        p.map.cols[p.lo - p.y0 : p.hi - p.y0],
                        win,
                        src.window[0],
                        src.window[2],
                        src.nodata,
                        src.has_nodata,
                        band.fill,
                    )


class GatherRows:
    """Rows ``[r0, r1)`` of a :class:`GatherStack`: a Dask graph whose tasks load them into the
    sink's view (rows, x, band, time), run by the worker's single-process threaded scheduler.

    Tasks: one per (granule grid, chunk) the rows need (GDAL's choice of source pixel, side by
    side before anything reads), one per date (the SCL gathered with the mask's halo → the clear
    mask), one per band
    (after every mask: its sources decoded, gathered, masked and written into the view, a run
    of dates at a time). A run holds a thread's share of
    :data:`~runner.planner.sizing.LOAD_WINDOWS_BYTES` of decoded windows, but never fewer than
    :data:`~runner.planner.sizing.MIN_RUN_DATES` dates (or all): the memory model is
    :func:`runner.planner.sizing.load_bytes`."""

    def __init__(self, stack: GatherStack, r0: int, r1: int) -> None:
        from runner.worker.mask import halo

        self.stack, self.r0, self.r1 = stack, r0, r1
        mask, ny = stack.config.mask, stack.shape[0]
        h = halo(mask) if (mask.opening > 0 or mask.dilation > 0) else 0
        self.parts = stack.row_parts(r0, r1)  #: the bands' parts
        self._flat: dict[tuple[int, ...], FlatMaps] = {}  #: chunk maps laid flat, per set
        self.mask_parts = stack.row_parts(max(0, r0 - h), min(ny, r1 + h))  #: the SCL's (halo)
        self._scratch = threading.local()  #: each thread's stacks buffer, see :meth:`_stacks`

    def _clear(self, t: int, clear: NDArray[np.uint8]) -> None:
        """The clear mask of date ``t`` over the rows (SCL gathered with the mask's halo) into
        ``clear[t]`` (rows, x / 8): a bit a pixel (``np.packbits``, little bit order), so the
        mask of a band is an eighth of a byte a pixel and date."""
        from runner.worker.mask import cleanup

        st, mask, mp = self.stack, self.stack.config.mask, self.mask_parts
        a, nx = mp.a, st.shape[1]
        scl = np.full((mp.b - a, nx), st.scl.fill, np.uint16)
        st.gather(st.scl, t, mp, scl)
        classes = st.scl_classes[scl]  # bit 1: a cloud class, bit 2: a nodata class
        cloud = (classes & 1).view(np.bool_)
        if (mask.opening or mask.dilation) and cloud.any():  # nothing opened or dilated is nothing
            cloud = cleanup(cloud[None], mask.opening, mask.dilation)[0]
        bad = (classes & 2) != 0
        clear[t] = np.packbits(~(bad | cloud)[self.r0 - a : self.r1 - a], axis=1, bitorder="little")

    def _band(self, bi: int, clear: NDArray[np.uint8], view: NDArray[np.uint16]) -> None:
        """Band ``bi``: every date's sources opened, then decoded a run of dates at a time (a
        thread's share of the windows' budget, and at least ``MIN_RUN_DATES``; the sources of
        one granule grid into one stack), gathered, masked and written into ``view``."""
        st = self.stack
        band, nt = st.bands[bi], st.shape[3]
        share = LOAD_WINDOWS_BYTES // st.threads
        with ExitStack() as opened:
            per_date = [st.sources(band, t, self.parts, opened) for t in range(nt)]
            sizes = [sum(2 * s.shape[0] * s.shape[1] for s in srcs) for srcs in per_date]
            t0 = 0
            while t0 < nt:
                t1 = t0 + 1
                while t1 < nt and (t1 - t0 < MIN_RUN_DATES or sum(sizes[t0 : t1 + 1]) <= share):
                    t1 += 1
                self._write_dates(bi, t0, per_date[t0:t1], clear, view)
                t0 = t1
        give_back_freed()  # the band's windows, freed: not kept by an arena (runner.common.heap)

    def _write_dates(
        self,
        bi: int,
        t0: int,
        per_date: list[list[Source]],
        clear: NDArray[np.uint8],
        view: NDArray[np.uint16],
    ) -> None:
        """Dates ``t0 …`` of band ``bi`` (their open sources, each date's in fusing order):
        grouped by fusing layer and :attr:`Source.geometry`, decoded into one flat buffer, and
        written by :func:`.kernels.gather_write`."""
        st, a = self.stack, self.r0
        keyed: dict[tuple[Any, ...], list[tuple[int, Source, int]]] = {}
        for k, srcs in enumerate(per_date):
            for layer, src in enumerate(srcs):
                keyed.setdefault((layer, *src.geometry), []).append((k, src, layer))
        groups = [
            keyed[key] for key in sorted(keyed, key=lambda g: int(g[0]))
        ]  # first layers first
        sizes = [len(m) * m[0][1].shape[0] * m[0][1].shape[1] for m in groups]
        stacks = self._stacks(sum(sizes))
        for members, start in zip(groups, np.cumsum([0, *sizes[:-1]]), strict=True):
            _decode(members, stacks, int(start))  # a frame of its own: the failing source in it
        maps = self._maps({id(p.map): p.map for m in groups for p in m[0][1].parts})
        gather_write(
            view,
            bi,
            t0,
            len(per_date),
            clear,
            int(st.config.input.nodata),
            st.bands[bi].fill,
            _parts_table(groups, sizes, maps, a),
            maps.rows,
            maps.cols,
            stacks,
            np.asarray([k for m in groups for k, _, _ in m], np.int64),
        )

    def _stacks(self, n: int) -> NDArray[np.uint16]:
        """``n`` uint16 values of this thread's buffer for decoded windows, kept from run to run
        and band to band of the rows (grown when a run needs more; freed with the rows). A
        buffer of 100 MB or so taken afresh each run is mapped afresh and its pages faulted in
        again as the decode writes them: 2.6 GB a load of the 2400 px benchmark tile, 3 % of
        its time."""
        buf: NDArray[np.uint16] | None = getattr(self._scratch, "buf", None)
        if buf is None or buf.size < n:
            self._scratch.buf = buf = None  # the old one freed before the new one is taken
            buf = self._scratch.buf = np.empty(n, np.uint16)
        return buf[:n]

    def _maps(self, maps: dict[int, ChunkMap]) -> FlatMaps:
        """The chunk maps ``maps`` (by id) laid end to end, once per set for the row band."""
        key = tuple(sorted(maps))
        flat = self._flat.get(key)
        if flat is None:
            flat = self._flat.setdefault(key, FlatMaps.of([maps[i] for i in key]))
        return flat

    def graph(self, view: NDArray[np.uint16]) -> tuple[dict[Any, Any], list[Any]]:
        """The Dask graph that loads the rows into ``view`` (C-contiguous (rows, x, band, time)),
        and its output keys. Nothing runs until a scheduler computes it."""
        st = self.stack
        _, nx, nb, nt = st.shape
        if not view.flags.c_contiguous:  # gather_write indexes it flat
            raise ValueError("the gather stores into a C-contiguous (rows, x, band, time) view")
        ch = st.chunk
        st.maps.forget_rows(max(0, self.r0 - ch) // ch)
        clear = np.empty((nt, self.r1 - self.r0, -(-nx // 8)), np.uint8)  # bits: see _clear
        name = f"gather-{id(self):x}-{self.r0}"
        maps = self._expected_maps()
        dsk: dict[Any, Any] = {
            (f"{name}-map", i): (st.maps.get, *key) for i, key in enumerate(maps)
        }
        first = list(dsk)
        for t in range(nt):
            dsk[(f"{name}-clear", t)] = (_after, self._clear, (t, clear), first)
        masks = [(f"{name}-clear", t) for t in range(nt)]
        keys = [(f"{name}-band", bi) for bi in range(nb)]
        for key, bi in zip(keys, range(nb), strict=True):
            dsk[key] = (_after, self._band, (bi, clear, view), masks)
        return dsk, keys

    def _expected_maps(self) -> list[tuple[SourceGrid, int, int]]:
        """The (grid, chunk) maps the rows will ask for, as the sources' metadata declares their
        grids: computed first, as tasks side by side (else the first tasks to need a grid's
        maps compute them one after another, the other threads waiting). A source whose header
        disagrees is mapped when it is read, as before."""
        st, ch = self.stack, self.stack.chunk
        a, b = self.mask_parts.a, self.mask_parts.b
        wanted: dict[tuple[SourceGrid, int, int], None] = {}
        for feed in st.feeds:
            for item, chunks in feed:
                grids = {
                    SourceGrid.of_geobox(src.geobox)
                    for src in st.srcs[item].values()
                    if getattr(src, "geobox", None) is not None and src.geobox.crs is not None
                }
                for iy, ix in chunks:
                    if iy * ch < b and (iy + 1) * ch > a:
                        wanted.update(((g, iy, ix), None) for g in grids)
        return list(wanted)

    def store(self, view: NDArray[np.uint16], on_task: Callable[[], None] | None = None) -> None:
        """Compute :meth:`graph` with Dask's threaded scheduler on the stack's threads (a single
        worker process); ``on_task`` after each task. The first failure is raised."""
        import dask
        from dask.callbacks import Callback

        dsk, keys = self.graph(view)

        class _Tick(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
                if on_task is not None:
                    on_task()

        try:
            with _Tick():
                dask.threaded.get(dsk, keys, num_workers=self.stack.threads)
        finally:
            self._scratch = threading.local()  # the threads' stacks buffers, freed


def _parts_table(
    groups: list[list[tuple[int, Source, int]]], sizes: list[int], maps: FlatMaps, a: int
) -> NDArray[np.int64]:
    """:func:`.kernels.gather_write`'s ``parts`` table (columns ``P_*``): a row per group and
    chunk map part, in the groups' order; ``a`` is the row band's first tile row."""
    rows: list[list[int]] = []
    start = n_dates = 0
    for members, size in zip(groups, sizes, strict=True):
        lead, first = members[0][1], members[0][2] == 0
        r0, c0 = lead.window[0], lead.window[2]
        for p in lead.parts:
            rows.append([maps.offsets[id(p.map)], p.map.rows.shape[1], p.y0 - a, p.x0])
            rows[-1] += [p.lo - a, p.hi - a, r0, c0, start, len(members), *lead.shape, n_dates]
            rows[-1] += [int(lead.has_nodata), lead.nodata, int(first)]
        start, n_dates = start + size, n_dates + len(members)
    return np.asarray(rows, np.int64).reshape(-1, P_COLS)


def _decode(members: list[tuple[int, Source, int]], out: NDArray[np.uint16], start: int) -> None:
    """The group's windows decoded into ``out[start:]`` as one C-order (sources, h, w) stack."""
    h, w = members[0][1].shape
    for q, (_, src, _) in enumerate(members):
        src.decode_into(out[start + q * h * w : start + (q + 1) * h * w].reshape(h, w))


@dataclass(frozen=True, slots=True)
class FlatMaps:
    """Chunk maps laid end to end (C order) in two flat int16 arrays, for
    :func:`.kernels.gather_write`; ``offsets`` by ``id`` of each :class:`ChunkMap`."""

    rows: NDArray[np.int16]
    cols: NDArray[np.int16]
    offsets: dict[int, int]

    @classmethod
    def of(cls, maps: list[ChunkMap]) -> FlatMaps:
        sizes = [m.rows.size for m in maps]
        offsets = {id(m): int(o) for m, o in zip(maps, np.cumsum([0, *sizes[:-1]]), strict=True)}
        rows = np.concatenate([m.rows.ravel() for m in maps]) if maps else np.empty(0, np.int16)
        cols = np.concatenate([m.cols.ravel() for m in maps]) if maps else np.empty(0, np.int16)
        return cls(rows, cols, offsets)


def _after(fn: Callable[..., None], args: tuple[Any, ...], _deps: list[Any]) -> None:
    """``fn(*args)``, in a task that depends on the keys ``_deps`` (their results unused)."""
    fn(*args)
