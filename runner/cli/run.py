"""``gmrun run-tile`` (one tile: what each Job runs) and ``gmrun run`` (a plan, locally)."""

from __future__ import annotations

import sys

import click

from runner.cli.options import endpoint_option, parse_memory, parse_tile_list
from runner.common.errors import (
    GmrunError,
    InternalError,
    ProcessingError,
    exit_on_error,
    internal_error_line,
)

#: the longest --max-processing-time, seconds: a year (``inf`` is refused)
MAX_SECONDS = 365 * 24 * 3600.0


@click.command("run-tile")
@click.option(
    "--plan", "plan_url", required=True, help="Plan folder or plan.json (local or s3://)."
)
@click.option("--tile", required=True, help="Tile id, e.g. x017y156.")
@click.option("--output", "location", help="Output folder or s3:// prefix (overrides the plan's).")
@click.option("--overwrite", is_flag=True, help="Recompute even if the tile is done.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "text"]),
    default="auto",
    show_default=True,
    help="auto: text on a terminal, JSON lines otherwise (as in a Job).",
)
@click.option(
    "--skip-bad-inputs/--no-skip-bad-inputs",
    default=None,
    envvar="GMRUN_SKIP_BAD_INPUTS",
    help="Drop the items of assets still unreadable after retries (listed in the STAC item's "
    "gmrun:skipped_inputs) instead of failing the tile (default: input.skip_bad_inputs "
    "of the plan's config, false).",
)
@endpoint_option
@click.option(
    "--max-processing-time",
    "max_time",
    type=click.FloatRange(min=0, min_open=True, max=MAX_SECONDS),
    envvar="GMRUN_MAX_PROCESSING_TIME",
    metavar="SECONDS",
    help="Stop the tile (exit 1, no done marker) after this many seconds.",
)
@click.option(
    "--row-bands",
    type=click.IntRange(min=1),
    envvar="GMRUN_ROW_BANDS",
    metavar="N",
    help="Process the tile in (at most) N row bands of chunk-aligned height, one band's "
    "cube in memory at a time (default: the plan's, or as --max-memory needs).",
)
@click.option(
    "--max-memory",
    "max_memory",
    envvar="GMRUN_MAX_MEMORY",
    metavar="SIZE",
    help="Memory budget, e.g. 4Gi or 1500Mi: a tile whose cube does not fit is processed "
    "in as many row bands as fit (see docs/subtiles.md).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    metavar="N",
    help="Compute threads (Dask reads, numba, GDAL, BLAS): at most N busy at once (default: "
    "$GMRUN_THREADS, which a Job sets to its CPU request, else this process's CPU affinity / "
    "cgroup CPU quota).",
)
@exit_on_error
def run_tile_cmd(
    plan_url: str,
    tile: str,
    location: str | None,
    overwrite: bool,
    log_format: str,
    skip_bad_inputs: bool | None,
    endpoint_url: str | None,
    max_time: float | None,
    row_bands: int | None,
    max_memory: str | None,
    threads: int | None,
) -> None:
    """Compute one tile: load, mask, reduce, write COGs and the STAC item (last).

    This is what each Kubernetes Job runs. The algorithm is the plan's (algorithm.name:
    geomedian, median). Exit codes (docs/faults.md#exit-codes): 0 done (or already done),
    2 bad input (unknown tile, missing plan, unreadable asset, empty tile; a Job fails at once),
    1 processing or transient failure (retried), 3 an unexpected exception, a bug (traceback in
    the log, a one-line summary last), 143 / 130 stopped by SIGTERM / SIGINT (logged with the
    stage it stopped in).
    """
    from runner.common.threads import apply_threads

    cpus = apply_threads(threads)  # first: numba and numpy read their thread counts at import
    from runner.common import logs, numba_cache, store
    from runner.common.errors import EmptyTileError
    from runner.common.memory import BUDGET_SHARE, local_budget
    from runner.planner.grid import TileId
    from runner.planner.plan import Plan
    from runner.worker.tile import run_tile

    logs.setup(log_format)  # type: ignore[arg-type]
    tid = TileId.parse(tile)
    log = logs.tile_logger(tid)
    log.info(
        "threads: %d (%s)",
        cpus.threads,
        cpus.source,
        extra={"threads": cpus.threads, "threads_source": cpus.source},
    )
    if (seeded := numba_cache.seed_cache()) is not None and seeded.files:
        log.info(
            "numba kernels of the image: %d files copied to %s in %.0f ms",
            seeded.files,
            seeded.target,
            seeded.seconds * 1000,
            extra={"numba_cache_files": seeded.files},
        )
    budget = parse_memory(max_memory) if max_memory is not None else None
    if budget is None and row_bands is None and (local := local_budget()) is not None:
        budget = local.bytes
        log.info(
            "memory budget %.1f GiB: %d%% of the %s (outside a pod; --max-memory sets another)",
            budget / 2**30,
            round(BUDGET_SHARE * 100),
            local.source,
            extra={"memory_budget": budget},
        )
    store.use_endpoint(endpoint_url)
    p = Plan.load(plan_url)
    store.use_acl(p.config.output.acl)
    if skip_bad_inputs is None:  # the flag / GMRUN_SKIP_BAD_INPUTS win over the config
        skip_bad_inputs = p.config.input.skip_bad_inputs
    try:
        run_tile(
            p,
            tid,
            location=location,
            overwrite=overwrite or None,
            skip_bad_inputs=skip_bad_inputs,
            max_processing_time=max_time,
            row_bands=row_bands,
            max_memory=budget,
            watch_signals=True,
        )
    except EmptyTileError as e:
        log.warning("%s", e, extra={"status": "empty"})
        raise
    except GmrunError as e:
        log.error("%s", e, extra={"status": "failed"})
        raise
    except (MemoryError, OSError) as e:  # out of memory, a failed read or write: retry
        log.error("failed: %s: %s", type(e).__name__, e, exc_info=True, extra={"status": "failed"})
        raise ProcessingError(f"tile {tid} failed: {type(e).__name__}: {e}") from None
    except Exception as e:  # a bug: its own exit code, never "bad input"
        log.error(
            "unexpected failure: %s: %s",
            type(e).__name__,
            e,
            exc_info=True,
            extra={"status": "failed", "reason": "bug"},
        )
        raise InternalError(f"tile {tid}: {internal_error_line(e)}") from None


@click.command("run")
@click.option("--plan", "plan_url", required=True, help="Plan folder or plan.json.")
@click.option("--tiles", help="Only these tiles (comma-separated ids).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Tiles at a time (each gets its share of the CPU budget: see --threads).",
)
@click.option("--output", "location", help="Output folder or s3:// prefix (overrides the plan's).")
@click.option("--overwrite", is_flag=True, help="Recompute done tiles too.")
@click.option(
    "--skip-bad-inputs/--no-skip-bad-inputs",
    default=None,
    envvar="GMRUN_SKIP_BAD_INPUTS",
    help="As run-tile's: skip items whose assets stay unreadable (default: the config's).",
)
@endpoint_option
@click.option(
    "--max-processing-time",
    "max_time",
    type=click.FloatRange(min=0, min_open=True, max=MAX_SECONDS),
    metavar="SECONDS",
    help="Per tile: stop it (failed, no done marker) after this many seconds.",
)
@click.option(
    "--max-memory",
    "max_memory",
    metavar="SIZE",
    help="Per-tile memory budget, e.g. 4Gi: as run-tile's (row bands when a cube does not fit).",
)
@click.option(
    "--row-bands", type=click.IntRange(min=1), metavar="N", help="As run-tile's, for every tile."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    metavar="N",
    help="Compute threads of each tile's worker (default: this process's CPU budget, "
    "$GMRUN_THREADS or its CPU affinity / cgroup quota, divided among the --workers).",
)
@exit_on_error
def run_cmd(
    plan_url: str,
    tiles: str | None,
    workers: int,
    location: str | None,
    overwrite: bool,
    skip_bad_inputs: bool | None,
    endpoint_url: str | None,
    max_time: float | None,
    max_memory: str | None,
    row_bands: int | None,
    threads: int | None,
) -> None:
    """Run a plan's tiles on this machine, one process per tile; done tiles are skipped.

    Exit code 1 if any tile failed (the summary names them; rerun the same command to retry
    only what is not done). SIGTERM or SIGINT (Ctrl-C) is passed on to the running workers,
    which stop saying where; no new tile starts; exit 143 / 130.
    """
    from rich.console import Console

    from runner.common import store
    from runner.common.errors import redact_credentials
    from runner.common.memory import local_budget
    from runner.fanout.local import RunStopped, run_local, summary_table
    from runner.fanout.worker_args import WorkerOptions
    from runner.planner.plan import Plan

    store.use_endpoint(endpoint_url)  # this process checks done markers; workers get the flag
    p = Plan.load(plan_url)
    if skip_bad_inputs is None:
        skip_bad_inputs = p.config.input.skip_bad_inputs
    if max_memory is not None:
        parse_memory(max_memory)  # a bad size is one error here, not one per tile
    elif workers > 1 and row_bands is None and (local := local_budget(workers)) is not None:
        max_memory = f"{local.bytes // 2**20}Mi"  # tiles at once share this machine's memory
    opts = WorkerOptions(
        location,
        overwrite,
        skip_bad_inputs,
        max_time,
        endpoint_url=endpoint_url,
        max_memory=max_memory,
        row_bands=row_bands,
        threads=threads,
    )
    console = Console(stderr=True)
    try:
        runs = run_local(p, parse_tile_list(tiles), workers=workers, options=opts)
    except RunStopped as e:
        console.print(summary_table(e.runs))
        raise
    console.print(summary_table(runs))
    where = f" --output {redact_credentials(location)}" if location else ""
    console.print(f"assemble the product: gmrun collect --plan {plan_url}{where}")
    if any(r.status == "failed" for r in runs):
        sys.exit(1)
