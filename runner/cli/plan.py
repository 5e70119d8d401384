"""``gmrun plan`` and ``gmrun grid``: the planner's faces."""

from __future__ import annotations

import click

from runner.cli.options import endpoint_option, parse_bbox, parse_memory, parse_tile_list
from runner.common.errors import exit_on_error


@click.command()
@click.option(
    "--catalog",
    help="STAC items: .ndjson, .json (ItemCollection) or stac-geoparquet .parquet, "
    "path or s3://; or a STAC API preset: earth-search, planetary-computer. "
    "Optional with --dry-run (then only the tiles are listed).",
)
@click.option(
    "--stac-api", metavar="URL", help="Search this STAC API (with --collection) instead of a file."
)
@click.option(
    "--collection", help="The STAC API's collection, e.g. sentinel-2-l2a (a preset has one)."
)
@click.option(
    "--page-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="STAC API: items per page of a search.",
)
@click.option(
    "--block-tiles",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="STAC API: one search per block of N x N tiles.",
)
@click.option(
    "--max-items",
    type=click.IntRange(min=1),
    help="STAC API: fail if one block's search matches more items than this.",
)
@click.option("--region", help="Named region: africa (land outline, Natural Earth 1:110m).")
@click.option(
    "--geojson",
    "geojson",
    help="Region from a GeoJSON (Multi)Polygon, Feature or FeatureCollection.",
)
@click.option("--bbox", help="Region W,S,E,N in degrees.")
@click.option("--tiles", help="Tiles to plan, e.g. x017y156,x018y156 (instead of --bbox).")
@click.option("--tiles-file", help="Tiles to plan, one id a line.")
@click.option("--year", type=int, help="Calendar year, e.g. 2023.")
@click.option(
    "--period", help="2023-01-01--2023-06-30, or odc-stats style 2023--P1Y / 2023-07--P6M."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="gmrun.yaml (defaults for every key).",
)
@click.option(
    "--preset",
    help="A shipped configuration under --config's keys: deafrica (odc-stats' gm_s2_annual).",
)
@click.option(
    "-o", "--output", "out", default="plan", show_default=True, help="Plan folder (local or s3://)."
)
@click.option("--max-memory", type=str, help="Cap per-tile memory, e.g. 64Gi.")
@click.option("--dry-run", is_flag=True, help="Print the summary only; write nothing.")
@endpoint_option
@exit_on_error
def plan(
    catalog: str | None,
    stac_api: str | None,
    collection: str | None,
    page_size: int,
    block_tiles: int,
    max_items: int | None,
    region: str | None,
    geojson: str | None,
    bbox: str | None,
    tiles: str | None,
    tiles_file: str | None,
    year: int | None,
    period: str | None,
    config_path: str | None,
    preset: str | None,
    out: str,
    max_memory: str | None,
    dry_run: bool,
    endpoint_url: str | None,
) -> None:
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
    from rich.console import Console
    from rich.progress import Progress

    from runner.common import store
    from runner.common.config import load_config
    from runner.planner.make import ItemSource, TileSelection, make_plan, plan_period
    from runner.planner.report import summary_table

    store.use_endpoint(endpoint_url)
    config = load_config(config_path, preset)
    selection = TileSelection(
        bbox=parse_bbox(bbox) if bbox else None,
        tiles=parse_tile_list(tiles),
        tiles_file=tiles_file,
        region=region,
        geojson=geojson,
    )
    source = ItemSource(catalog, stac_api, collection, page_size, block_tiles, max_items)
    budget = parse_memory(max_memory) if max_memory is not None else None
    console = Console()
    with Progress(console=Console(stderr=True), transient=True) as bar:
        outcome = make_plan(
            config,
            selection,
            source,
            plan_period(year, period),
            None if dry_run else out,
            max_memory=budget,
            progress=bar,
        )
    if outcome.plan is None:  # a dry run without items: the tiles only
        ids = outcome.tiles
        first, last = (str(ids[0]), str(ids[-1])) if ids else ("-", "-")
        console.print(
            f"{len(ids)} tiles (first {first}, last {last}), period {outcome.period.label}, "
            f"{outcome.seconds:.2f} s"
        )
        return
    if outcome.search_summary:
        console.print(outcome.search_summary)
    console.print(summary_table(outcome.plan))
    if dry_run:
        console.print(f"dry run: nothing written ({outcome.seconds:.1f} s)")
        return
    console.print(
        f"plan written: {outcome.plan.url} (+ tiles.geojson, tiles.png) in {outcome.seconds:.1f} s"
    )


@click.group()
def grid() -> None:
    """Look up tiles of the output grid (africa_10 unless --config says otherwise)."""


@grid.command("locate", context_settings={"ignore_unknown_options": True})
@click.argument("lon", type=float)
@click.argument("lat", type=float)
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="gmrun.yaml (its grid)."
)
@exit_on_error
def grid_locate(lon: float, lat: float, config_path: str | None) -> None:
    """Print the id of the tile containing LON LAT (degrees, EPSG:4326)."""
    from runner.common.config import load_config
    from runner.planner.grid import TileGrid

    click.echo(str(TileGrid.from_config(load_config(config_path).grid).locate_lonlat(lon, lat)))


@grid.command("show")
@click.argument("tile")
@click.option(
    "--geojson",
    "as_geojson",
    is_flag=True,
    help="Print the footprint as a GeoJSON Feature (lon/lat).",
)
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="gmrun.yaml (its grid)."
)
@exit_on_error
def grid_show(tile: str, as_geojson: bool, config_path: str | None) -> None:
    """Print a tile's bounds in the grid CRS and in lon/lat.

    The lon/lat footprint is the part of the tile inside the CRS's valid area (EPSG:6933:
    86°S–86°N), split at the antimeridian when it crosses it; a tile wholly outside that area
    is a one-line error.

    \b
    Example:
      gmrun grid show x211y074 --geojson
    """
    from runner.common.config import load_config
    from runner.planner.grid import TileGrid, TileId

    g = TileGrid.from_config(load_config(config_path).grid)
    click.echo(g.describe(TileId.parse(tile), as_geojson=as_geojson))
