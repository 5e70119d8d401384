"""``gmrun demo`` as a library call: synthetic catalog → plan → local run → the run assembled
(``gmrun collect``: collection, mosaics, maps, report) and an RGB quick-look."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from runner.common import store
from runner.common.config import load_config
from runner.common.errors import GmrunError
from runner.demo.layout import DEMO_PERIOD, demo_layout, write_config
from runner.demo.synth import synthesize
from runner.fanout.local import TileRun, run_local, summary_table
from runner.planner.assign import build_plan
from runner.planner.catalog import read_items
from runner.planner.grid import TileGrid
from runner.planner.period import Period
from runner.planner.region import REGION_FILE
from runner.product.collect import collect, local_attempts


@dataclass(frozen=True)
class DemoResult:
    """What a demo run made: its tiles' runs, the outputs folder, the quick-look PNG and the
    report of the assembled run."""

    runs: list[TileRun]
    outputs: Path
    quicklook: Path
    report: Path

    @property
    def failed(self) -> bool:
        return any(r.status == "failed" for r in self.runs)


def run_demo(
    folder: Path,
    *,
    tile_px: int = 480,
    n_dates: int = 40,
    seed: int = 0,
    algorithm: str | None = None,
    console: Console | None = None,
) -> DemoResult:
    """Everything in ``folder``: ``gmrun.yaml`` (the demo grid; ``algorithm.name`` if given),
    ``catalog/`` (synthesised once, reused), ``plan/``, ``out/`` (the tiles, and the assembled
    product of :func:`runner.product.collect.collect`: ``collection.json``, ``mosaic/``,
    ``report.html``, ...) and ``mosaic.png``. Tiles that are done are skipped; progress and tables
    go to ``console`` (stderr by default)."""
    from odc.geo import CRS
    from odc.geo.geom import box

    console = console or Console(stderr=True)
    folder.mkdir(parents=True, exist_ok=True)
    layout = demo_layout(tile_px)
    cfg_path = folder / "gmrun.yaml"
    write_config(layout, cfg_path, algorithm)
    catalog = folder / "catalog" / "items.ndjson"
    if not catalog.exists():
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("synthesising Sentinel-2 scenes", total=None)
            synthesize(
                folder / "catalog",
                layout.bbox,
                *DEMO_PERIOD,
                n_dates=n_dates,
                seed=seed,
                progress=lambda d, t: bar.update(task, completed=d, total=t),
            )
    console.print(f"catalog: {catalog}")
    config = load_config(cfg_path)
    output = config.output.model_copy(update={"location": str(folder / "out")})
    config = config.model_copy(update={"output": output})
    grid = TileGrid.from_config(config.grid)
    region = box(*layout.bbox, CRS("EPSG:4326"))
    tiles = [t for t in grid.tiles(region) if t in layout.tiles]
    period = Period(*DEMO_PERIOD)
    plan, items = build_plan(config, tiles, read_items(str(catalog)), period, source=str(catalog))
    saved = plan.save(str(folder / "plan"), items)
    console.print(f"plan: {saved.url} ({len(tiles)} tiles, algorithm {config.algorithm.name})")
    region_doc = json.dumps(region.json, separators=(",", ":")).encode()
    store.write_bytes(store.join(saved.folder, REGION_FILE), region_doc, "application/geo+json")
    runs = run_local(saved, console=console)
    console.print(summary_table(runs))
    if not any(r.status in ("done", "skipped") for r in runs):
        raise GmrunError("no tile completed; see the table above")
    assembled = collect(saved, attempts=local_attempts(saved), outline=region)
    png = folder / "mosaic.png"  # the product's quick-look, where the demo always put it
    png.write_bytes(store.read_bytes(assembled.files["quicklook"]))
    report = Path(assembled.files["report"])
    console.print(f"collection: {assembled.files['collection']}")
    return DemoResult(runs, folder / "out", png, report)
