"""Assemble a run: what ``gmrun collect`` makes of a plan's tiles, done or not.

Everything goes to the product folder, ``{location}/{product}/{version}/``, beside the tiles::

    collection.json                     STAC Collection over the done tiles (relative item links)
    mosaic/{product}_{period}_{band}.vrt   one GDAL mosaic per output band
    quicklook.png                       true colour from the COG overviews (bounded memory)
    status.png                          every tile: done / failed / empty / pending / not planned
    tiles.csv                           one row per planned tile: state, observations, times, RSS
    runtime.png, memory.png             seconds vs observations; planned memory vs peak RSS
    report.html                         one static page showing all of the above

It reads only done markers (the STAC items), metrics files and COG overviews, so it can run while
the batch is still running, as often as wanted: each run rewrites the files from what is there.
A tile's state comes from its done marker, then from what is known of its last attempt (the local
run record :data:`runner.fanout.local.RUN_RECORD`, or a Kubernetes batch's Jobs).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner.common import store
from runner.planner.grid import TileId
from runner.planner.plan import Plan, TilePlan
from runner.product import mosaic, report_html
from runner.product.quicklook import quicklook_rgba, write_png
from runner.product.sentinel2 import rgb_bands
from runner.product.stac import collection
from runner.reducers import reducer_for
from runner.worker.outputs import TileOutputs

#: the states of a tile, in the order the report lists them
STATES = ("done", "running", "pending", "failed", "empty")


@dataclass(frozen=True)
class Attempt:
    """What is known of a tile's last attempt that did not finish it."""

    state: str  #: ``failed``, ``running``, ``pending`` or ``empty``
    message: str = ""
    exit_code: int | None = None


def local_attempts(plan: Plan) -> dict[TileId, Attempt]:
    """The failed and empty tiles of the plan's last local runs (``gmrun run``'s record,
    :data:`runner.fanout.local.RUN_RECORD`)."""
    from runner.fanout.local import recorded_runs

    out = {}
    for tile, rec in recorded_runs(plan).items():
        if rec.get("status") in ("failed", "empty"):
            code = rec.get("exit_code")
            out[TileId.parse(tile)] = Attempt(
                str(rec["status"]),
                str(rec.get("message", "")),
                int(code) if isinstance(code, int) else None,
            )
    return out


@dataclass
class TileRow:
    """One planned tile in the assembled run."""

    plan: TilePlan
    state: str
    message: str = ""
    item: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def tile(self) -> TileId:
        return self.plan.tile

    @property
    def seconds(self) -> float | None:
        """The tile's wall time, s: the sum of its stages' (``metrics.seconds``), if known."""
        secs = self.metrics.get("seconds")
        if not isinstance(secs, dict) or not secs:
            return None
        return float(sum(v for v in secs.values() if isinstance(v, int | float)))


def tile_rows(
    plan: Plan,
    location: str | None,
    attempts: Mapping[TileId, Attempt],
    workers: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[TileRow]:
    """Every planned tile with its state, done items read in ``workers`` threads."""

    def one(tp: TilePlan) -> TileRow:
        try:
            if tp.n_obs == 0:
                return TileRow(tp, "empty", "no observations in the plan")
            out = TileOutputs.of(plan.config, tp.tile, plan.period, location)
            item = out.done_item()
            if item is not None:
                metrics = item.get("properties", {}).get("gmrun:metrics", {})
                return TileRow(tp, "done", item=item, metrics=metrics)
            a = attempts.get(tp.tile)
            if a is None:
                return TileRow(tp, "pending")
            msg = a.message if a.exit_code is None else f"exit {a.exit_code}: {a.message}"
            return TileRow(tp, a.state, msg)
        finally:
            if progress is not None:
                progress(1)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, plan.tiles))


@dataclass(frozen=True)
class Collected:
    """What :func:`collect` wrote, by name, and the counts of tiles by state."""

    folder: str
    files: dict[str, str]
    counts: dict[str, int]
    rows: list[TileRow]


def _csv(rows: Sequence[TileRow]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = (
        "tile",
        "state",
        "n_items",
        "n_obs",
        "observations",
        "seconds_total",
        "seconds_load",
        "seconds_reduce",
        "seconds_write",
        "planned_memory_bytes",
        "peak_rss_bytes",
        "row_bands",
        "clear_observations_mean",
        "message",
    )
    w.writerow(cols)
    for r in rows:
        m = r.metrics
        secs = m.get("seconds", {}) if isinstance(m.get("seconds"), dict) else {}
        total = r.seconds
        w.writerow(
            (
                str(r.tile),
                r.state,
                r.plan.n_items,
                r.plan.n_obs,
                m.get("observations", ""),
                "" if total is None else round(total, 3),
                secs.get("load", ""),
                secs.get("reduce", ""),
                secs.get("write", ""),
                r.plan.resources.memory_bytes,
                m.get("peak_rss_bytes", ""),
                m.get("row_bands", ""),
                m.get("clear_observations_mean", ""),
                r.message,
            )
        )
    return buf.getvalue().encode()


def collect(
    plan: Plan,
    location: str | None = None,
    attempts: Mapping[TileId, Attempt] | None = None,
    outline: Any | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> Collected:
    """Assemble the run of ``plan`` whose outputs are at ``location`` (default: the plan's).

    ``attempts``: what is known of tiles that are not done; ``outline``: the region (an odc-geo
    Geometry) drawn under the status map; ``progress(label, total)`` returns a callback advanced
    once per tile of each pass.
    """
    from runner.product import charts
    from runner.product.tilemap import status_map_png

    config = plan.config
    loc = location or config.output.location
    first = TileOutputs.of(config, plan.tiles[0].tile, plan.period, loc) if plan.tiles else None
    if first is None:
        raise ValueError("the plan has no tiles")
    folder = first.product_folder
    files: dict[str, str] = {}
    tick = progress or (lambda _label, _n: lambda _k: None)

    rows = tile_rows(
        plan, loc, attempts or {}, progress=tick("reading done markers", len(plan.tiles))
    )
    done = [r for r in rows if r.state == "done"]
    outs = [TileOutputs.of(config, r.tile, plan.period, loc) for r in done]
    reducer = reducer_for(config)
    bands = reducer.output_bands(config)

    def put(name: str, rel: str, data: bytes, content_type: str) -> None:
        url = store.join(folder, rel)
        store.write_bytes(url, data, content_type)
        files[name] = url

    if done:
        items = [(o.item_href, r.item or {}) for o, r in zip(outs, done, strict=True)]
        coll = collection(
            config.product.name,
            config.product.version,
            reducer.product_family,
            store.join(folder, "collection.json"),
            items,
        )
        put(
            "collection", "collection.json", json.dumps(coll, indent=1).encode(), "application/json"
        )
        wkt = mosaic.srs_wkt(plan.grid.crs)
        for band in bands:
            sources = [(o.tile, "../" + o.band_href(band.name)) for o in outs]
            xml = mosaic.band_vrt(plan.grid, band, sources, wkt)
            rel = "mosaic/" + mosaic.vrt_name(config.product.name, plan.period.label, band.name)
            put(f"mosaic:{band.name}", rel, xml.encode(), "application/xml")
        rgb = rgb_bands(tuple(b.name for b in bands if b.scale is not None))
        if rgb is not None:
            rgba = quicklook_rgba(
                outs, rgb, plan.grid.tile_pixels, progress=tick("quick-look", len(outs))
            )
            url = store.join(folder, "quicklook.png")
            write_png(rgba, url)
            files["quicklook"] = url

    states = {r.tile: r.state for r in rows}
    counts = {s: n for s, n in Counter(states.values()).most_common()}
    title = f"{config.product.name} {config.product.version} {plan.period.label}"
    put(
        "status", "status.png", status_map_png(plan.grid, states, outline, title=title), "image/png"
    )
    put("table", "tiles.csv", _csv(rows), "text/csv")
    timed = [(r.metrics.get("observations"), r.seconds) for r in done]
    pts = [(float(o), s) for o, s in timed if isinstance(o, int | float) and s is not None]
    put(
        "runtime",
        "runtime.png",
        charts.scatter_png(
            [x for x, _ in pts],
            [y for _, y in pts],
            title="runtime per tile",
            xlabel="observations (time steps)",
            ylabel="wall time (s)",
        ),
        "image/png",
    )
    mem = [
        (r.plan.resources.memory_bytes / 2**30, float(r.metrics["peak_rss_bytes"]) / 2**30)
        for r in done
        if isinstance(r.metrics.get("peak_rss_bytes"), int | float)
    ]
    put(
        "memory",
        "memory.png",
        charts.scatter_png(
            [x for x, _ in mem],
            [y for _, y in mem],
            title="memory per tile: planned vs measured",
            xlabel="planned memory (GiB)",
            ylabel="peak RSS (GiB)",
            identity_line=True,
        ),
        "image/png",
    )
    html = report_html.render(title, plan, rows, counts, files, folder)
    put("report", "report.html", html.encode(), "text/html")
    return Collected(folder, files, counts, rows)
