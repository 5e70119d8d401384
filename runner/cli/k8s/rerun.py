"""``gmrun k8s rerun``: delete chosen tiles' Jobs and create them again."""

from __future__ import annotations

from typing import Any

import click

from runner.cli.k8s.options import (
    batch_option,
    cluster_options,
    job_options,
    make_job_options,
    namespace_option,
    open_batch,
    plan_option,
)
from runner.common.errors import UserInputError, exit_on_error
from runner.fanout.k8s.states import REASONS


@click.command(
    "rerun",
    help="""Delete tiles' Jobs and create them again.

\b
Choose the tiles with --failed, --tiles or --tiles-file, and/or --reason:
  --failed            every tile whose Job failed
  --tiles IDS         x017y156,x018y156 (commas or spaces)
  --tiles-file F      one id a line ('#' comments; '-' reads stdin), e.g.
                      the output of `gmrun k8s status --state failed -o ids`
  --reason R          only tiles whose last attempt failed for reason R
                      (repeatable: OOMKilled, deadline, error, bad-input, bug,
                      disrupted; see `gmrun k8s status --help`); alone, it
                      means the failed tiles with that reason
The old Jobs (and their pods) are deleted and waited for, then new Jobs are
created with the same names. A tile whose outputs exist is refused unless
--overwrite, which also tells the worker to recompute it. Empty tiles are
left alone.

\b
Memory grows only where the last attempt was OOMKilled: its new Job gets
--memory-factor (default: kubernetes.oom_memory_factor, 1.5) times the
memory of the Job it replaces; other tiles keep theirs. Repeat to grow
further. No Job gets more than --max-memory (kubernetes.max_memory): a
rerun above it is refused before anything changes.

\b
Before a Job is deleted, its last failed attempt's termination message
and log tail are saved beside the plan: PLAN/logs/BATCH/TILE/POD.log.
--dry-run prints what each tile would get (memory, image) and changes
nothing.

\b
Examples:
  gmrun k8s rerun --batch 2023a --reason OOMKilled --dry-run
  gmrun k8s rerun --batch 2023a --reason OOMKilled --max-memory 256Gi
  gmrun k8s rerun --batch 2023a --failed --reason error --reason deadline
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
    "--reason",
    "reasons",
    multiple=True,
    type=click.Choice(REASONS),
    metavar="REASON",
    help="Only tiles whose last attempt failed for this reason (repeatable).",
)
@click.option(
    "--memory-factor",
    type=click.FloatRange(min=1.0, max=16),
    metavar="X",
    help="Memory of an OOMKilled tile's new Job: X times its previous Job's "
    "(default: kubernetes.oom_memory_factor, 1.5).",
)
@click.option(
    "--max-memory",
    metavar="SIZE",
    help="Refuse to give a Job more memory than this, e.g. 256Gi (default: "
    "kubernetes.max_memory, none).",
)
@click.option("--overwrite", is_flag=True, help="Also rerun tiles that are done, recomputing them.")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
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
    reasons: tuple[str, ...],
    memory_factor: float | None,
    max_memory: str | None,
    overwrite: bool,
    dry_run: bool,
    namespace: str | None,
    image: str | None,
    service_account: str | None,
    backoff_limit: int | None,
    endpoint_url: str | None,
    wait_timeout: float,
    kubeconfig: str | None,
    context: str | None,
    job_flags: dict[str, Any],
) -> None:
    from runner.cli.options import parse_memory
    from runner.common import store
    from runner.fanout import k8s as k
    from runner.planner.grid import TileId

    k.validate_batch_name(batch)
    store.use_endpoint(endpoint_url)
    chosen = sum(x is not None and x is not False for x in (failed or None, tiles_arg, tiles_file))
    if chosen > 1 or (chosen == 0 and not reasons):
        raise UserInputError(
            "choose the tiles with exactly one of --failed, --tiles, --tiles-file (and/or --reason)"
        )
    if chosen == 0:
        failed = True  # --reason alone: the failed tiles with that reason
    ids = None
    if tiles_arg is not None:
        ids = k.read_tile_ids(tiles_arg)
    elif tiles_file is not None:
        ids = k.read_tile_ids(tiles_file.read())
    cap_text = max_memory
    with open_batch(batch, plan_url, namespace, kubeconfig, context) as (cluster, plan, ns):
        kcfg = plan.config.kubernetes
        cap_text = cap_text or kcfg.max_memory
        cap = parse_memory(cap_text) if cap_text else None
        rows = {r.tile: r for r in k.batch_status(cluster, ns, batch, plan)}
        if failed:
            ids = [TileId.parse(t) for t, r in rows.items() if r.state == "failed"]
        assert ids is not None
        if reasons:
            ids = [t for t in ids if (r := rows.get(str(t))) is not None and r.reason in reasons]
        if not ids:
            click.echo(f"batch {batch}: nothing to rerun", err=True)
            return
        opts = make_job_options(
            plan, ns, image, service_account, backoff_limit, endpoint_url, job_flags
        )
        res = k.rerun(
            cluster,
            plan,
            batch,
            opts,
            ids,
            rows,
            overwrite=overwrite,
            memory_factor=memory_factor or kcfg.oom_memory_factor,
            max_memory=cap,
            dry_run=dry_run,
            wait_timeout=wait_timeout,
            keep_image=image is None,
        )
    empty = f"; skipped {len(res.skipped_empty)} empty tiles" if res.skipped_empty else ""
    grown = sum(1 for c in res.changes if c.memory_after != c.memory_before)
    more = f", {grown} with more memory (OOMKilled)" if grown else ""
    if dry_run:
        for c in res.changes:
            click.echo(c.line())
        n_old = sum(c.replaces for c in res.changes)
        click.echo(
            f"batch {batch}: dry run: would delete {n_old} Jobs and create "
            f"{len(res.changes)}{more}{empty}; nothing changed",
            err=True,
        )
        return
    if res.saved:
        where = res.saved[0].rsplit("/", 2)[0]
        click.echo(f"saved {len(res.saved)} failed attempts' logs under {where}", err=True)
    click.echo(
        f"batch {batch}: deleted {len(res.deleted)} Jobs, created {len(res.created)}{more}{empty}",
        err=True,
    )
    if res.dropped_fields and res.created:
        from runner.fanout.k8s.policy import dropped_line

        click.echo(dropped_line(res.dropped_fields, res.server), err=True)
