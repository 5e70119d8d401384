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

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np
from numpy.typing import NDArray
from odc.geo.geobox import GeoBox

from runner.common.config import RunConfig
from runner.worker.gather.grid_map import ChunkMap, GatherUnsupported, GridMaps
from runner.worker.gather.kernels import P_COLS, gather_fuse, gather_write
from runner.worker.gather.sources import BandPlan, RowParts, Source, open_sources

Item = dict[str, Any]
#: bytes of decoded source windows in flight, all threads together, at most (about)
BUFFER_BUDGET = 256 * 2**20


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


def _typed_list(arrays: list[NDArray[Any]], dtype: type[np.generic], ndim: int) -> Any:
    """A numba typed list of C-contiguous ``ndim``-D arrays of ``dtype`` (empty lists typed too)."""
    from numba import types
    from numba.np.numpy_support import from_dtype
    from numba.typed import List

    out = List.empty_list(types.Array(from_dtype(np.dtype(dtype)), ndim, "C"))
    for a in arrays:
        out.append(np.ascontiguousarray(a, dtype=dtype))
    return out


class GatherRows:
    """Rows ``[r0, r1)`` of a :class:`GatherStack`: a Dask graph whose tasks load them into the
    sink's view (rows, x, band, time), run by the worker's single-process threaded scheduler.

    Tasks: one per date (the SCL gathered with the mask's halo → the clear mask), one per band
    and date group (its sources decoded, gathered, masked and written into the view; it depends
    on its dates' masks). A group holds at most :data:`BUFFER_BUDGET` / threads of decoded
    windows; the more dates a group has, the more contiguous values a pixel each write has."""

    def __init__(self, stack: GatherStack, r0: int, r1: int) -> None:
        from runner.worker.mask import halo

        self.stack, self.r0, self.r1 = stack, r0, r1
        mask, ny = stack.config.mask, stack.shape[0]
        h = halo(mask) if (mask.opening > 0 or mask.dilation > 0) else 0
        self.parts = stack.row_parts(r0, r1)  #: the bands' parts
        self.mask_parts = stack.row_parts(max(0, r0 - h), min(ny, r1 + h))  #: the SCL's (halo)

    def _groups(self) -> list[tuple[int, int]]:
        st = self.stack
        nx, nt = st.shape[1], st.shape[3]
        per = BUFFER_BUDGET // max(1, st.threads * (self.r1 - self.r0) * nx * 2)
        k = max(1, min(nt, per))
        return [(t, min(nt, t + k)) for t in range(0, nt, k)]

    def _clear(self, t: int, clear: NDArray[np.uint8]) -> None:
        """The clear mask of date ``t`` over the rows (SCL gathered with the mask's halo) into
        ``clear[:, :, t]`` ((rows, x, date): a pixel's dates side by side, as the sink's)."""
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
        clear[:, :, t] = ~(bad | cloud)[self.r0 - a : self.r1 - a]

    def _band(
        self, bi: int, t0: int, t1: int, clear: NDArray[np.uint8], view: NDArray[np.uint16]
    ) -> None:
        """Band ``bi``, dates ``[t0, t1)``: decoded (the sources of one granule grid into one
        stack), gathered, masked and written into ``view``."""
        st, a = self.stack, self.r0
        band = st.bands[bi]
        with ExitStack() as opened:
            groups = self._grouped(band, t0, t1, opened)
            # decoded in a frame of their own: no other source is named where one fails
            stacks = [_decode(members) for members in groups]
        maps: dict[int, int] = {}
        map_list: list[ChunkMap] = []
        rows: list[list[int]] = []
        for g, members in enumerate(groups):
            lead, first = members[0][1], members[0][2] == 0
            for p in lead.parts:
                mi = maps.setdefault(id(p.map), len(map_list))
                if mi == len(map_list):
                    map_list.append(p.map)
                r0, c0 = lead.window[0], lead.window[2]
                rows.append([mi, p.y0 - a, p.x0, p.lo - a, p.hi - a, r0, c0, g])
                rows[-1] += [int(lead.has_nodata), lead.nodata, int(first)]
        gather_write(
            view,
            bi,
            t0,
            t1 - t0,
            clear,
            int(st.config.input.nodata),
            band.fill,
            np.asarray(rows, np.int64).reshape(-1, P_COLS),
            _typed_list([m.rows for m in map_list], np.int16, 2),
            _typed_list([m.cols for m in map_list], np.int16, 2),
            _typed_list(stacks, np.uint16, 3),
            _typed_list([np.asarray([k for k, _, _ in m], np.int64) for m in groups], np.int64, 1),
        )

    def _grouped(
        self, band: BandPlan, t0: int, t1: int, opened: ExitStack
    ) -> list[list[tuple[int, Source, int]]]:
        """The sources of dates ``[t0, t1)`` opened and grouped by fusing layer (a date's first
        source, its second, ...) and :attr:`Source.geometry`, first layers first: each group a
        list of (date in the task, source, layer)."""
        groups: dict[tuple[Any, ...], list[tuple[int, Source, int]]] = {}
        for k in range(t1 - t0):
            srcs = self.stack.sources(band, t0 + k, self.parts, opened)
            for layer, src in enumerate(srcs):
                groups.setdefault((layer, *src.geometry), []).append((k, src, layer))
        return [groups[key] for key in sorted(groups, key=lambda g: int(g[0]))]

    def graph(self, view: NDArray[np.uint16]) -> tuple[dict[Any, Any], list[Any]]:
        """The Dask graph that loads the rows into ``view`` (C-contiguous (rows, x, band, time)),
        and its output keys. Nothing runs until a scheduler computes it."""
        st = self.stack
        _, nx, nb, nt = st.shape
        if not view.flags.c_contiguous:  # gather_write indexes it flat
            raise ValueError("the gather stores into a C-contiguous (rows, x, band, time) view")
        ch = st.chunk
        st.maps.forget_rows(max(0, self.r0 - ch) // ch)
        clear = np.empty((self.r1 - self.r0, nx, nt), np.uint8)
        name = f"gather-{id(self):x}-{self.r0}"
        dsk: dict[Any, Any] = {(f"{name}-clear", t): (self._clear, t, clear) for t in range(nt)}
        keys = []
        for g, (t0, t1) in enumerate(self._groups()):
            deps = [(f"{name}-clear", t) for t in range(t0, t1)]
            for bi in range(nb):
                key = (f"{name}-band", bi, g)
                dsk[key] = (_after, self._band, (bi, t0, t1, clear, view), deps)
                keys.append(key)
        return dsk, keys

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

        with _Tick():
            dask.threaded.get(dsk, keys, num_workers=self.stack.threads)


def _decode(members: list[tuple[int, Source, int]]) -> NDArray[np.uint16]:
    """The group's windows decoded into one (sources, rows, cols) uint16 stack."""
    out = np.empty((len(members), *members[0][1].shape), np.uint16)
    for q, (_, src, _) in enumerate(members):
        src.decode_into(out[q])
    return out


def _after(fn: Callable[..., None], args: tuple[Any, ...], _deps: list[Any]) -> None:
    """``fn(*args)``, in a task that depends on the keys ``_deps`` (their results unused)."""
    fn(*args)
