"""``gmrun k8s status`` and ``gmrun k8s rerun``: a batch's tiles, and the ones to run again."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from runner.cli.k8s.options import (
    batch_option,
    batch_rows,
    cluster_options,
    job_options,
    load_plan,
    make_job_options,
    namespace_of,
    namespace_option,
    plan_option,
    resolve_plan,
)
from runner.common.errors import UserInputError, exit_on_error
from runner.fanout.k8s.states import STATE_MEANINGS, STATES

#: ``state`` in ``status --help``: each state and what it means.
_STATE_HELP = "".join(
    f"{'  state' if i == 0 else '':<12}{state:<13}{meaning}\n"
    for i, (state, meaning) in enumerate(STATE_MEANINGS.items())
)

_STATE_STYLE = {
    "done": "green",
    "succeeded": "green",
    "failed": "bold red",
    "running": "cyan",
    "pending": "yellow",
    "suspended": "magenta",
    "unsubmitted": "dim",
}


@click.command(
    "status",
    help="""Show the state of every tile of a batch.

\b
One row per tile of the plan (and per Job of the batch):
"""
    + _STATE_HELP
    + """  attempts  pods the Job has run; failures: those that failed
  done      whether the tile's done marker (its STAC item) exists
  reason    why the last attempt failed: OOMKilled, DeadlineExceeded,
            Error (exit 2: bad input) with the worker's last log line

\b
The plan (tiles, output location) is read from the Jobs' gmrun.io/plan
annotation unless --plan is given. Jobs and pods are listed in pages, so
batches of tens of thousands of tiles are fine.

\b
Examples:
  gmrun k8s status --batch 2023a
  gmrun k8s status --batch 2023a --state failed -o ids > failed.txt
  gmrun k8s status --batch 2023a -o json | jq '.[] | select(.attempts > 1)'""",
)
@batch_option
@plan_option(required=False)
@namespace_option
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(["table", "json", "ids"]),
    default="table",
    show_default=True,
    help="table for people, json for programs, ids: one tile per line.",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    type=click.Choice(STATES),
    help="Only tiles in this state (repeatable).",
)
@cluster_options
@exit_on_error
def status_cmd(
    batch: str,
    plan_url: str | None,
    namespace: str | None,
    fmt: str,
    states: tuple[str, ...],
    kubeconfig: str | None,
    context: str | None,
) -> None:
    _, rows = batch_rows(batch, plan_url, namespace, kubeconfig, context)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    if states:
        rows = [r for r in rows if r.state in states]
    if fmt == "json":
        click.echo(json.dumps([r.to_dict() for r in rows], indent=1))
        return
    if fmt == "ids":
        for r in rows:
            click.echo(r.tile)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("tile", "state", "attempts", "failures", "done", "memory", "job", "reason"):
        table.add_column(col, no_wrap=col != "reason", overflow="fold")
    for r in rows:
        style = _STATE_STYLE.get(r.state, "")
        table.add_row(
            r.tile,
            f"[{style}]{r.state}[/]" if style else r.state,
            str(r.attempts),
            str(r.failures),
            "yes" if r.done else "no",
            r.memory,
            r.job or "-",
            r.reason,
        )
    console = Console(soft_wrap=not sys.stdout.isatty(), width=None if sys.stdout.isatty() else 250)
    console.print(table)
    summary = ", ".join(f"{counts[s]} {s}" for s in STATES if s in counts)
    click.echo(f"batch {batch}: {sum(counts.values())} tiles: {summary or 'none'}", err=True)


@click.command(
    "rerun",
    help="""Delete tiles' Jobs and create them again.

\b
Choose the tiles with exactly one of
  --failed            every tile whose Job failed
  --tiles IDS         x017y156,x018y156 (commas or spaces)
  --tiles-file F      one id a line ('#' comments; '-' reads stdin), e.g.
                      the output of `gmrun k8s status --state failed -o ids`
The old Jobs (and their pods) are deleted and waited for, then new Jobs are
created with the same names. A tile whose outputs exist is refused unless
--overwrite, which also tells the worker to recompute it.

\b
--memory-factor multiplies the memory of each tile's previous Job (or the
plan's estimate): use it after OOMKilled failures; repeat to grow further.

\b
Examples:
  gmrun k8s rerun --batch 2023a --failed --memory-factor 1.5
  gmrun k8s rerun --batch 2023a --tiles x017y156 --overwrite""",
)
@batch_option
@plan_option(required=False)
@click.option("--failed", is_flag=True, help="Rerun every tile whose Job failed.")
@click.option("--tiles", "tiles_arg", metavar="IDS", help="Tile ids, separated by commas.")
@click.option(
    "--tiles-file", type=click.File("r"), metavar="FILE", help="File of tile ids ('-': stdin)."
)
@click.option(
    "--memory-factor",
    type=click.FloatRange(min=0.1, max=64),
    default=1.0,
    show_default=True,
    metavar="X",
    help="Multiply the memory of each tile's previous Job.",
)
@click.option("--overwrite", is_flag=True, help="Also rerun tiles that are done, recomputing them.")
@namespace_option
@job_options
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the old Jobs to be deleted.",
)
@cluster_options
@exit_on_error
def rerun_cmd(
    batch: str,
    plan_url: str | None,
    failed: bool,
    tiles_arg: str | None,
    tiles_file: Any,
    memory_factor: float,
    overwrite: bool,
    namespace: str | None,
    image: str | None,
    service_account: str | None,
    backoff_limit: int | None,
    endpoint_url: str | None,
    wait_timeout: float,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    from runner.common import store
    from runner.fanout import k8s as k
    from runner.planner.grid import TileId

    k.validate_batch_name(batch)
    store.use_endpoint(endpoint_url)
    chosen = sum(x is not None and x is not False for x in (failed or None, tiles_arg, tiles_file))
    if chosen != 1:
        raise UserInputError("choose the tiles with exactly one of --failed, --tiles, --tiles-file")
    ids = None
    if tiles_arg is not None:
        ids = k.read_tile_ids(tiles_arg)
    elif tiles_file is not None:
        ids = k.read_tile_ids(tiles_file.read())
    plan = load_plan(plan_url) if plan_url else None
    cluster = k.Cluster(kubeconfig, context)
    try:
        ns = namespace_of(namespace, plan)
        if plan is None:
            plan = resolve_plan(cluster, ns, batch, None)
            ns = namespace_of(namespace, plan)
        if failed:
            ids = [
                TileId.parse(r.tile)
                for r in k.batch_status(cluster, ns, batch, plan)
                if r.state == "failed"
            ]
        if not ids:
            click.echo(f"batch {batch}: nothing to rerun", err=True)
            return
        opts = make_job_options(plan, ns, image, service_account, backoff_limit, endpoint_url)
        res = k.rerun(
            cluster,
            plan,
            batch,
            opts,
            ids,
            overwrite=overwrite,
            memory_factor=memory_factor,
            wait_timeout=wait_timeout,
            keep_image=image is None,
        )
    finally:
        cluster.close()
    click.echo(
        f"batch {batch}: deleted {len(res.deleted)} Jobs, created {len(res.created)}"
        + (f" with memory x{memory_factor:g}" if memory_factor != 1.0 else ""),
        err=True,
    )
