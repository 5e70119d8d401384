"""The ``gmrun`` command line: one verb per job.

    gmrun demo                      # synthetic catalog → plan → run 2×2 tiles → mosaic.png
    gmrun synth OUT --bbox ...      # write a synthetic Sentinel-2 L2A catalog (COGs + STAC)
    gmrun plan --catalog ... --bbox ... --year 2023 -o PLAN
    gmrun run --plan PLAN           # every tile locally, one process per tile
    gmrun run-tile --plan PLAN --tile x017y156   # one tile (what each Kubernetes Job runs)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from runner import __version__
from runner.errors import GmrunError, UserInputError, exit_on_error


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        w, s, e, n = (float(v) for v in text.split(","))
    except ValueError:
        raise UserInputError(f"invalid bbox {text!r}: expected W,S,E,N in degrees") from None
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise UserInputError(f"bbox {text!r} is out of range: need -180 <= W < E <= 180, -90 <= S < N <= 90")
    return w, s, e, n


def _endpoint_option(fn: Any) -> Any:
    """``--endpoint-url``: an S3-compatible store (sets ``AWS_ENDPOINT_URL``; GDAL follows)."""
    return click.option("--endpoint-url", metavar="URL",
                        help="S3-compatible endpoint, e.g. http://minio:9000 (default: $AWS_ENDPOINT_URL_S3 "
                             "or $AWS_ENDPOINT_URL, else AWS S3). Credentials: the AWS chain only.")(fn)  # fmt: skip


def _tile_list(text: str | None) -> list[Any] | None:
    from runner.grid import TileId

    if not text:
        return None
    return [TileId.parse(t) for t in text.replace(" ", ",").split(",") if t]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gmrun")
def cli() -> None:
    """gmrun: cloud-free Sentinel-2 geomedian + MAD mosaics, one tile per process or Kubernetes Job.

    A plan splits a region into grid tiles and lists the STAC items of each; each tile is then
    loaded, cloud-masked, reduced to its geometric median (and EMAD/SMAD/BCMAD, count) and
    written as COGs plus a STAC item. Start with `gmrun demo`.
    """


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--bbox", required=True, help="W,S,E,N in degrees (EPSG:4326).")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default="2023-01-01", show_default=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), default="2023-12-31", show_default=True)
@click.option("--dates", "n_dates", type=click.IntRange(1, 400), default=40, show_default=True,
              help="Acquisition dates between start and end.")
@click.option("--seed", type=int, default=0, show_default=True)
@exit_on_error
def synth(out: Path, bbox: str, start: Any, end: Any, n_dates: int, seed: int) -> None:
    """Write a synthetic Sentinel-2 L2A catalog: COGs + OUT/items.ndjson.

    Realistic enough to exercise the real code paths: UTM granules (two zones when the bbox
    straddles a boundary), swath edges, same-day overlaps, clouds with shadows, cirrus, haze,
    snow, seasonal land cover and outlier dates. Deterministic from --seed.
    """
    from rich.progress import Progress

    from runner.synth import synthesize

    with Progress(transient=True) as bar:
        task = bar.add_task("synthesising", total=None)
        res = synthesize(out, _bbox(bbox), start.date(), end.date(), n_dates, seed,
                         progress=lambda d, t: bar.update(task, completed=d, total=t))  # fmt: skip
    click.echo(f"wrote {res.n_items} items ({res.n_dates} dates) to {res.catalog}")


@cli.command()
@click.option("--catalog", help="STAC items: .ndjson, .json (ItemCollection) or stac-geoparquet .parquet, "
              "path or s3://; or a STAC API preset: earth-search, planetary-computer. "
              "Optional with --dry-run (then only the tiles are listed).")  # fmt: skip
@click.option("--stac-api", metavar="URL", help="Search this STAC API (with --collection) instead of a file.")
@click.option("--collection", help="The STAC API's collection, e.g. sentinel-2-l2a (a preset has one).")
@click.option("--page-size", type=click.IntRange(min=1), default=100, show_default=True,
              help="STAC API: items per page of a search.")  # fmt: skip
@click.option("--block-tiles", type=click.IntRange(min=1), default=4, show_default=True,
              help="STAC API: one search per block of N x N tiles.")  # fmt: skip
@click.option("--max-items", type=click.IntRange(min=1),
              help="STAC API: fail if one block's search matches more items than this.")  # fmt: skip
@click.option("--region", help="Named region: africa (land outline, Natural Earth 1:110m).")
@click.option("--geojson", "geojson", help="Region from a GeoJSON (Multi)Polygon, Feature or FeatureCollection.")
@click.option("--bbox", help="Region W,S,E,N in degrees.")
@click.option("--tiles", help="Tiles to plan, e.g. x017y156,x018y156 (instead of --bbox).")
@click.option("--tiles-file", help="Tiles to plan, one id a line.")
@click.option("--year", type=int, help="Calendar year, e.g. 2023.")
@click.option("--period", help="2023-01-01--2023-06-30, or odc-stats style 2023--P1Y / 2023-07--P6M.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="gmrun.yaml (defaults for every key).")
@click.option("-o", "--output", "out", default="plan", show_default=True, help="Plan folder (local or s3://).")
@click.option("--max-memory", type=str, help="Cap per-tile memory, e.g. 64Gi.")
@click.option("--dry-run", is_flag=True, help="Print the summary only; write nothing.")
@_endpoint_option
@exit_on_error
def plan(catalog: str | None, stac_api: str | None, collection: str | None, page_size: int, block_tiles: int,
         max_items: int | None, region: str | None, geojson: str | None, bbox: str | None, tiles: str | None,
         tiles_file: str | None, year: int | None, period: str | None, config_path: str | None, out: str,
         max_memory: str | None, dry_run: bool, endpoint_url: str | None) -> None:  # fmt: skip
    """Plan a run: tiles of the region, the STAC items of each, and their sizes.

    Writes OUT/plan.json, OUT/items/{tile}.ndjson, OUT/tiles.geojson and OUT/tiles.png. The plan
    embeds the configuration, so a worker needs only the plan's location and a tile id.

    \b
    Examples:
      gmrun plan --catalog items.ndjson --bbox 29.9,-2.1,30.1,-1.9 --year 2023 -o plan
      gmrun plan --region africa --year 2023 --dry-run
      gmrun plan --catalog earth-search --tiles x211y074 --year 2023 -o plan
      gmrun plan --stac-api http://127.0.0.1:7822 --collection sentinel-2-l2a --bbox ... --year 2023
    """
    from runner import store
    from runner.plan import plan_command

    store.use_endpoint(endpoint_url)
    plan_command(catalog=catalog, bbox=_bbox(bbox) if bbox else None, tiles=_tile_list(tiles),
                 tiles_file=tiles_file, region=region, geojson=geojson, year=year, period=period,
                 config_path=config_path, out=out, max_memory=_parse_memory(max_memory) if max_memory else None,
                 dry_run=dry_run, stac_api=stac_api, collection=collection, page_size=page_size,
                 block_tiles=block_tiles, max_items=max_items)  # fmt: skip


@cli.group()
def grid() -> None:
    """Look up tiles of the output grid (africa_10 unless --config says otherwise)."""


@grid.command("locate", context_settings={"ignore_unknown_options": True})
@click.argument("lon", type=float)
@click.argument("lat", type=float)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="gmrun.yaml (its grid).")
@exit_on_error
def grid_locate(lon: float, lat: float, config_path: str | None) -> None:
    """Print the id of the tile containing LON LAT (degrees, EPSG:4326)."""
    from runner.config import load_config
    from runner.grid import TileGrid

    click.echo(str(TileGrid.from_config(load_config(config_path).grid).locate_lonlat(lon, lat)))


@grid.command("show")
@click.argument("tile")
@click.option("--geojson", "as_geojson", is_flag=True, help="Print the footprint as a GeoJSON Feature (lon/lat).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="gmrun.yaml (its grid).")
@exit_on_error
def grid_show(tile: str, as_geojson: bool, config_path: str | None) -> None:
    """Print a tile's bounds in the grid CRS and in lon/lat."""
    from runner.config import load_config
    from runner.grid import TileGrid, TileId

    g = TileGrid.from_config(load_config(config_path).grid)
    click.echo(g.describe(TileId.parse(tile), as_geojson=as_geojson))


def _parse_memory(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for u, f in units.items():
        if text.endswith(u):
            try:
                return int(float(text[: -len(u)]) * f)
            except ValueError:
                break
    raise UserInputError(f"invalid memory {text!r}: use e.g. 64Gi or 1536Mi")


@cli.command("run-tile")
@click.option("--plan", "plan_url", required=True, help="Plan folder or plan.json (local or s3://).")
@click.option("--tile", required=True, help="Tile id, e.g. x017y156.")
@click.option("--output", "location", help="Output folder or s3:// prefix (overrides the plan's).")
@click.option("--overwrite", is_flag=True, help="Recompute even if the tile is done.")
@click.option("--log-format", type=click.Choice(["auto", "json", "text"]), default="auto", show_default=True,
              help="auto: text on a terminal, JSON lines otherwise (as in a Job).")  # fmt: skip
@click.option("--skip-bad-inputs/--no-skip-bad-inputs", default=None, envvar="GMRUN_SKIP_BAD_INPUTS",
              help="Drop the items of assets still unreadable after retries (listed in the STAC item's "
                   "gmrun:skipped_inputs) instead of failing the tile (default: input.skip_bad_inputs "
                   "of the plan's config, false).")  # fmt: skip
@_endpoint_option
@click.option("--max-processing-time", "max_time", type=click.FloatRange(min=0, min_open=True),
              envvar="GMRUN_MAX_PROCESSING_TIME", metavar="SECONDS",
              help="Stop the tile (exit 1, no done marker) after this many seconds.")  # fmt: skip
@click.option("--row-bands", type=click.IntRange(min=1), envvar="GMRUN_ROW_BANDS", metavar="N",
              help="Process the tile in (at most) N row bands of chunk-aligned height, one band's "
                   "cube in memory at a time (default: the plan's, or as --max-memory needs).")  # fmt: skip
@click.option("--max-memory", "max_memory", envvar="GMRUN_MAX_MEMORY", metavar="SIZE",
              help="Memory budget, e.g. 4Gi or 1500Mi: a tile whose cube does not fit is processed "
                   "in as many row bands as fit (see docs/subtiles.md).")  # fmt: skip
@exit_on_error
def run_tile_cmd(plan_url: str, tile: str, location: str | None, overwrite: bool, log_format: str,
                 skip_bad_inputs: bool | None, endpoint_url: str | None, max_time: float | None,
                 row_bands: int | None, max_memory: str | None) -> None:  # fmt: skip
    """Compute one tile: load, mask, reduce, write COGs and the STAC item (last).

    This is what each Kubernetes Job runs. Exit codes: 0 done (or already done), 2 bad input
    (unknown tile, missing plan, unreadable asset, empty tile), 1 processing failure.
    """
    from runner import logs, store
    from runner.grid import TileId
    from runner.plan import Plan
    from runner.tile import EmptyTileError, run_tile

    logs.setup(log_format)  # type: ignore[arg-type]
    tid = TileId.parse(tile)
    log = logs.tile_logger(tid)
    budget = _parse_memory(max_memory) if max_memory else None
    store.use_endpoint(endpoint_url)
    p = Plan.load(plan_url)
    store.use_acl(p.config.output.acl)
    if skip_bad_inputs is None:  # the flag / GMRUN_SKIP_BAD_INPUTS win over the config
        skip_bad_inputs = p.config.input.skip_bad_inputs
    try:
        run_tile(p, tid, location=location, overwrite=overwrite or None, skip_bad_inputs=skip_bad_inputs,
                 max_processing_time=max_time, row_bands=row_bands, max_memory=budget)  # fmt: skip
    except EmptyTileError as e:
        log.warning("%s", e, extra={"status": "empty"})
        raise
    except GmrunError as e:
        log.error("%s", e, extra={"status": "failed"})
        raise
    except Exception as e:
        log.error("unexpected failure: %s: %s", type(e).__name__, e, exc_info=True, extra={"status": "failed"})
        raise GmrunError(f"tile {tid} failed: {type(e).__name__}: {e}") from None


@cli.command("run")
@click.option("--plan", "plan_url", required=True, help="Plan folder or plan.json.")
@click.option("--tiles", help="Only these tiles (comma-separated ids).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Tiles at a time (each tile uses all cores).")
@click.option("--output", "location", help="Output folder or s3:// prefix (overrides the plan's).")
@click.option("--overwrite", is_flag=True, help="Recompute done tiles too.")
@click.option("--skip-bad-inputs/--no-skip-bad-inputs", default=None, envvar="GMRUN_SKIP_BAD_INPUTS",
              help="As run-tile's: skip items whose assets stay unreadable (default: the config's).")
@_endpoint_option
@click.option("--max-processing-time", "max_time", type=click.FloatRange(min=0, min_open=True),
              metavar="SECONDS", help="Per tile: stop it (failed, no done marker) after this many seconds.")  # fmt: skip
@click.option("--max-memory", "max_memory", metavar="SIZE",
              help="Per-tile memory budget, e.g. 4Gi: as run-tile's (row bands when a cube does not fit).")
@click.option("--row-bands", type=click.IntRange(min=1), metavar="N", help="As run-tile's, for every tile.")
@exit_on_error
def run_cmd(plan_url: str, tiles: str | None, workers: int, location: str | None, overwrite: bool,
            skip_bad_inputs: bool | None, endpoint_url: str | None, max_time: float | None,
            max_memory: str | None, row_bands: int | None) -> None:  # fmt: skip
    """Run a plan's tiles on this machine, one process per tile; done tiles are skipped.

    Exit code 1 if any tile failed (the summary names them; rerun the same command to retry
    only what is not done).
    """
    from rich.console import Console

    from runner import store
    from runner.local import WorkerOptions, run_local, summary_table
    from runner.plan import Plan

    store.use_endpoint(endpoint_url)  # this process checks done markers; workers get the flag
    p = Plan.load(plan_url)
    if skip_bad_inputs is None:
        skip_bad_inputs = p.config.input.skip_bad_inputs
    if max_memory:
        _parse_memory(max_memory)  # a bad size is one error here, not one per tile
    opts = WorkerOptions(location, overwrite, skip_bad_inputs, max_time, endpoint_url=endpoint_url,
                         max_memory=max_memory, row_bands=row_bands)  # fmt: skip
    runs = run_local(p, _tile_list(tiles), workers=workers, options=opts)
    Console(stderr=True).print(summary_table(runs))
    if any(r.status == "failed" for r in runs):
        sys.exit(1)


@cli.command()
@click.argument("folder", default="gmrun-demo", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tile-px", type=click.IntRange(64, 2400), default=480, show_default=True, help="Tile edge in pixels.")
@click.option("--dates", "n_dates", type=click.IntRange(2, 200), default=40, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@exit_on_error
def demo(folder: Path, tile_px: int, n_dates: int, seed: int) -> None:
    """End to end on synthetic data: catalog → plan → 2×2 tiles locally → RGB mosaic.png.

    Everything lands in FOLDER (default ./gmrun-demo): catalog/, plan/, out/ and mosaic.png.
    Running it again reuses the catalog and skips tiles that are done.
    """
    from odc.geo import CRS
    from odc.geo.geom import box
    from rich.console import Console
    from rich.progress import Progress

    from runner.catalog import read_items
    from runner.config import load_config
    from runner.demo import DEMO_PERIOD, demo_layout, write_config
    from runner.grid import TileGrid
    from runner.local import run_local, summary_table
    from runner.outputs import TileOutputs
    from runner.period import Period
    from runner.plan import build_plan
    from runner.quicklook import mosaic_rgb, write_png
    from runner.synth import synthesize

    console = Console(stderr=True)
    folder.mkdir(parents=True, exist_ok=True)
    layout = demo_layout(tile_px)
    cfg_path = folder / "gmrun.yaml"
    write_config(layout, cfg_path)
    catalog = folder / "catalog" / "items.ndjson"
    if not catalog.exists():
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("synthesising Sentinel-2 scenes", total=None)
            synthesize(folder / "catalog", layout.bbox, *DEMO_PERIOD, n_dates=n_dates, seed=seed,
                       progress=lambda d, t: bar.update(task, completed=d, total=t))  # fmt: skip
    console.print(f"catalog: {catalog}")
    config = load_config(cfg_path)
    config = config.model_copy(update={"output": config.output.model_copy(update={"location": str(folder / "out")})})
    grid = TileGrid.from_config(config.grid)
    region = box(*layout.bbox, CRS("EPSG:4326"))
    tiles = [t for t in grid.tiles(region) if t in layout.tiles]
    p, items = build_plan(config, tiles, read_items(str(catalog)), Period(*DEMO_PERIOD), source=str(catalog))
    saved = p.save(str(folder / "plan"), items)
    console.print(f"plan: {saved.url} ({len(tiles)} tiles)")
    runs = run_local(saved, console=console)
    console.print(summary_table(runs))
    done = [TileOutputs.of(config, r.tile, p.period) for r in runs if r.status in ("done", "skipped")]
    if not done:
        raise GmrunError("no tile completed; see the table above")
    png = folder / "mosaic.png"
    write_png(mosaic_rgb(done), png)
    console.print(f"outputs: {folder / 'out'}\nquick-look: {png}")
    if any(r.status == "failed" for r in runs):
        sys.exit(1)


def _register_optional() -> None:
    try:
        from runner.k8s_cli import k8s
    except ImportError:  # the Kubernetes verbs are optional at import time
        return
    cli.add_command(k8s)


_register_optional()


def main() -> None:
    cli(prog_name="gmrun")


if __name__ == "__main__":
    main()
