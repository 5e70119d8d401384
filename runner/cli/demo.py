"""``gmrun demo`` (end to end on synthetic data) and ``gmrun synth`` (the synthetic catalog)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from runner.cli.options import parse_bbox
from runner.common.errors import exit_on_error


class AlgorithmName(click.ParamType):
    """An ``algorithm.name`` of :data:`runner.reducers.REDUCERS` (checked when given, so that
    ``--help`` loads no reducer)."""

    name = "algorithm"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from runner.reducers import REDUCERS

        if value not in REDUCERS:
            self.fail(f"{value!r} is not one of {', '.join(REDUCERS)}", param, ctx)
        return value


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--bbox", required=True, help="W,S,E,N in degrees (EPSG:4326).")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default="2023-01-01", show_default=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default="2023-12-31", show_default=True)
@click.option(
    "--dates",
    "n_dates",
    type=click.IntRange(1, 400),
    default=40,
    show_default=True,
    help="Acquisition dates between start and end.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@exit_on_error
def synth(out: Path, bbox: str, start: datetime, end: datetime, n_dates: int, seed: int) -> None:
    """Write a synthetic Sentinel-2 L2A catalog: COGs + OUT/items.ndjson.

    Realistic enough to exercise the real code paths: UTM granules (two zones when the bbox
    straddles a boundary), swath edges, same-day overlaps, clouds with shadows, cirrus, haze,
    snow, seasonal land cover and outlier dates. Deterministic from --seed.
    """
    from rich.progress import Progress

    from runner.demo.synth import synthesize

    with Progress(transient=True) as bar:
        task = bar.add_task("synthesising", total=None)
        res = synthesize(
            out,
            parse_bbox(bbox),
            start.date(),
            end.date(),
            n_dates,
            seed,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
        )
    click.echo(f"wrote {res.n_items} items ({res.n_dates} dates) to {res.catalog}")


@click.command()
@click.argument("folder", default="gmrun-demo", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--tile-px",
    type=click.IntRange(64, 2400),
    default=480,
    show_default=True,
    help="Tile edge in pixels.",
)
@click.option("--dates", "n_dates", type=click.IntRange(2, 200), default=40, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--algorithm",
    type=AlgorithmName(),
    metavar="NAME",
    help="The reducer (algorithm.name): geomedian (+ MADs + count, the default) or median "
    "(per-band median + count); see docs/reducers.md.",
)
@exit_on_error
def demo(folder: Path, tile_px: int, n_dates: int, seed: int, algorithm: str | None) -> None:
    """End to end on synthetic data: catalog → plan → 2×2 tiles locally → the run assembled.

    Everything lands in FOLDER (default ./gmrun-demo): gmrun.yaml, catalog/, plan/, out/ and
    mosaic.png. The tiles are then assembled as `gmrun collect` does: out/{product}/{version}/
    holds collection.json, mosaic/*.vrt, status.png, quicklook.png and report.html (open it in
    a browser). Running it again reuses the catalog and skips tiles that are done.

    \b
    Examples:
      gmrun demo
      gmrun demo median-demo --algorithm median
    """
    from rich.console import Console

    from runner.demo.run import run_demo

    console = Console(stderr=True)
    res = run_demo(
        folder, tile_px=tile_px, n_dates=n_dates, seed=seed, algorithm=algorithm, console=console
    )
    console.print(f"outputs: {res.outputs}\nquick-look: {res.quicklook}\nreport: {res.report}")
    if res.failed:
        sys.exit(1)
