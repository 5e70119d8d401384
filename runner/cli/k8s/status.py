"""``gmrun k8s status``: a batch's tiles, once or followed with ``--watch`` until it settles."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from runner.cli.k8s.options import (
    batch_option,
    cluster_options,
    namespace_option,
    open_batch,
    plan_option,
)
from runner.common.errors import exit_on_error
from runner.fanout.k8s.states import REASON_MEANINGS, STATE_MEANINGS, STATES

#: each state and what it means (the --help)
_STATE_HELP = "".join(f"  {state:<13}{meaning}\n" for state, meaning in STATE_MEANINGS.items())
_REASON_HELP = "".join(f"  {reason:<11}{meaning}\n" for reason, meaning in REASON_MEANINGS.items())

_STATE_STYLE = {
    "done": "green",
    "succeeded": "green",
    "failed": "bold red",
    "running": "cyan",
    "pending": "yellow",
    "suspended": "magenta",
    "unsubmitted": "dim",
    "empty": "dim",
}
FORMATS = ("table", "wide", "json", "yaml", "ids", "name")
#: columns of -o table; -o wide adds the rest
_TABLE = ("tile", "state", "reason", "exit", "attempts", "done", "memory", "message")
_WIDE = (
    "tile",
    "state",
    "reason",
    "exit",
    "attempts",
    "failures",
    "done",
    "memory",
    "node",
    "started",
    "finished",
    "duration",
    "job",
    "message",
)


@click.command(
    "status",
    help="""Show the state of every tile of a batch.

\b
One row per tile of the plan (and per Job of the batch). States:
"""
    + _STATE_HELP
    + """
\b
reason: why the last attempt failed (its exit code, the kubelet's reason,
the Job's condition; `rerun --reason` chooses by it):
"""
    + _REASON_HELP
    + """
\b
Fields (-o wide, json, yaml): attempts (pods the Job ran), failures, exit
(the last failed attempt's exit code), done (the tile's STAC item exists),
memory, node, started/finished/duration of the Job, job, and message: the
Job's and the pod's reasons with the worker's last log line, or why a pod
waits (Unschedulable: 0/3 nodes are available…, ImagePullBackOff: …).
Empty tiles are counted but not listed in a table unless --state empty.
The last line (stderr) counts the tiles by state.

\b
--watch follows the batch through watches on its Jobs and pods (no
polling), prints a line per change (stderr), and ends when no Job is
pending, running or suspended; then the chosen output.

\b
The plan (tiles, output location) is read from the Jobs' gmrun.io/plan
annotation unless --plan is given.

\b
Examples:
  gmrun k8s status --batch 2023a
  gmrun k8s status --batch 2023a -o wide --state pending
  gmrun k8s status --batch 2023a --watch
  gmrun k8s status --batch 2023a --state failed -o ids > failed.txt
  gmrun k8s status --batch 2023a -o json | jq '.[] | select(.reason == "OOMKilled")'
  kubectl logs $(gmrun k8s status --batch 2023a --state failed -o name | head -1)""",
)
@batch_option
@plan_option(required=False)
@namespace_option
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table/wide for people; json/yaml for programs; ids: one tile a line; "
    "name: job.batch/NAME of each Job (for kubectl).",
)
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    type=click.Choice(STATES),
    help="Only tiles in this state (repeatable).",
)
@click.option(
    "--watch", "-w", is_flag=True, help="Follow the batch until it settles, then print it."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="With --watch: stop after this long even if the batch has not settled (exit 1).",
)
@cluster_options
@exit_on_error
def status_cmd(
    batch: str,
    plan_url: str | None,
    namespace: str | None,
    fmt: str,
    states: tuple[str, ...],
    watch: bool,
    timeout: float | None,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    from runner.fanout import k8s as k
    from runner.fanout.k8s.status import UNSETTLED, summary_line

    with open_batch(batch, plan_url, namespace, kubeconfig, context) as (cluster, plan, ns):
        if watch:
            from runner.fanout.k8s.watch import BatchWatch

            rows = BatchWatch(cluster, ns, batch, plan).run(_print_change, timeout)
        else:
            rows = k.batch_status(cluster, ns, batch, plan)
    summary = summary_line(batch, rows)
    shown = [r for r in rows if r.state in states] if states else rows
    if fmt in ("table", "wide") and not states:
        shown = [r for r in shown if r.state != "empty"]
    _print(shown, fmt)
    click.echo(summary, err=True)
    if watch and any(r.state in UNSETTLED for r in rows):
        raise SystemExit(1)  # --timeout before the batch settled


def _print_change(before: Any, after: Any) -> None:
    from datetime import datetime

    was = before.state if before is not None else "-"
    why = f" ({after.reason})" if after.reason else ""
    tail = f": {after.message}" if after.message and after.state in ("pending", "failed") else ""
    click.echo(
        f"{datetime.now():%H:%M:%S} {after.tile} {was} -> {after.state}{why}"
        f" [attempts {after.attempts}]{tail}",
        err=True,
    )


def _cell(r: Any, col: str) -> str:
    if col == "exit":
        return "" if r.exit_code is None else str(r.exit_code)
    if col == "done":
        return "yes" if r.done else "no"
    if col == "duration":
        return _duration(r.seconds)
    if col == "job":
        return r.job or "-"
    value = getattr(r, col)
    return "" if value is None else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _print(rows: Sequence[Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([r.to_dict() for r in rows], indent=1))
        return
    if fmt == "yaml":
        import yaml

        click.echo(yaml.safe_dump([r.to_dict() for r in rows], sort_keys=False), nl=False)
        return
    if fmt == "ids":
        for r in rows:
            click.echo(r.tile)
        return
    if fmt == "name":
        for r in rows:
            if r.job:
                click.echo(f"job.batch/{r.job}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    cols = _WIDE if fmt == "wide" else _TABLE
    for col in cols:
        table.add_column(col, no_wrap=col != "message", overflow="fold")
    for r in rows:
        cells = [_cell(r, c) for c in cols]
        style = _STATE_STYLE.get(r.state, "")
        cells[1] = f"[{style}]{r.state}[/]" if style else r.state
        table.add_row(*cells)
    tty = sys.stdout.isatty()
    Console(soft_wrap=not tty, width=None if tty else 250, highlight=False).print(table)
