"""``gmrun collect``: assemble a run's tiles into one product (collection, mosaics, report)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import click

from runner.cli.options import endpoint_option
from runner.common.errors import exit_on_error

if TYPE_CHECKING:
    from runner.planner.grid import TileId
    from runner.planner.plan import Plan
    from runner.product.collect import Attempt


@click.command("collect")
@click.option("--plan", "plan_url", required=True, metavar="URL", help="plan.json (or its folder).")
@click.option(
    "--output",
    "location",
    metavar="URL",
    help="Where the tiles were written, if not the plan's output.location (as run's --output).",
)
@endpoint_option
@exit_on_error
def collect_cmd(plan_url: str, location: str | None, endpoint_url: str | None) -> None:
    """Assemble a run into one product: a STAC collection, a mosaic per band, maps, a report.

    \b
    Writes, in the product folder {output}/{product}/{version}/:
      collection.json     STAC Collection linking every done tile's item
      mosaic/*.vrt        one GDAL mosaic per output band (opens in QGIS,
                          gdal_translate, rasterio; reads the COGs' overviews)
      quicklook.png       true colour of the whole run, from the overviews
      status.png          each tile done / failed / empty / pending / not planned
      tiles.csv           per tile: state, observations, seconds, planned
                          memory and measured peak RSS
      runtime.png, memory.png   the two charts of the report
      report.html         one page showing all of it

    \b
    It reads only what the tiles wrote (done markers, metrics, overviews), so
    run it while a batch is still running and again when it ends: each run
    rewrites the files from what is there. Failed tiles are known from the
    last `gmrun run` of the plan (runs/local.json beside plan.json); for a
    Kubernetes batch, `gmrun k8s collect --batch NAME` reads them from its Jobs.

    \b
    Example:
      gmrun collect --plan gmrun-demo/plan
    """
    from runner.common import store
    from runner.planner.plan import Plan
    from runner.product.collect import local_attempts

    store.use_endpoint(endpoint_url)
    plan = Plan.load(plan_url)
    attempts = local_attempts(plan)
    assemble(plan, location, attempts)


def assemble(plan: Plan, location: str | None, attempts: Mapping[TileId, Attempt]) -> None:
    """:func:`runner.product.collect.collect` with progress bars on stderr, then what it wrote."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from runner.common import store
    from runner.planner.region import plan_outline
    from runner.product.collect import collect

    console = Console(stderr=True)
    with Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:

        def tick(label: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(label, total=total)
            return lambda k: bar.advance(task, k)

        got = collect(plan, location, attempts, plan_outline(plan.folder), progress=tick)
    counts = ", ".join(f"{n} {s}" for s, n in got.counts.items())
    console.print(f"tiles: {counts}")
    for name in ("collection", "quicklook", "status", "table", "report"):
        if name in got.files:
            console.print(f"{name:<11}{got.files[name]}")
    n_mosaics = sum(1 for k in got.files if k.startswith("mosaic:"))
    if n_mosaics:
        console.print(f"{'mosaics':<11}{n_mosaics} VRTs in {store.join(got.folder, 'mosaic')}")
