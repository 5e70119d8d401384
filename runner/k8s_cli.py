"""``gmrun k8s``: run a plan on Kubernetes, one Job per tile.

Registered by the main CLI with ``cli.add_command(k8s)``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from runner.errors import UserInputError, exit_on_error

F = TypeVar("F", bound=Callable[..., Any])


k8s = click.Group(
    "k8s",
    help="""Run a plan on Kubernetes: one Job per tile.

\b
A batch is one submission of a plan under a short name (e.g. 2023a). Each
tile becomes the Job gm-{batch}-{tile} (gm-2023a-x017y156), labelled
gmrun.io/batch and gmrun.io/tile, whose container runs
  gmrun run-tile --plan PLAN --tile TILE
with the tile's memory from the plan. The Job controller retries a failed
pod backoffLimit times. Tiles whose outputs exist are never resubmitted.

\b
Typical session:
  kubectl apply -k k8s/                         # once: namespace, RBAC
  gmrun k8s submit --plan s3://b/plans/2023 --batch 2023a --max-active 200
  gmrun k8s status --batch 2023a                # table of tiles
  gmrun k8s status --batch 2023a --state failed -o ids
  gmrun k8s rerun  --batch 2023a --failed --memory-factor 1.5

Jobs record their plan in the gmrun.io/plan annotation, so status and rerun
need --plan only when that location has moved. The cluster comes from
--kubeconfig/--context, else $KUBECONFIG or ~/.kube/config, else the pod's
service account. Errors (no cluster, RBAC, bad names) print one line and
exit with code 2.""",
)


# ------------------------------------------------------------------------------------------
# shared options
# ------------------------------------------------------------------------------------------


def _cluster_options(fn: F) -> F:
    fn = click.option(
        "--context", metavar="NAME",
        help="kubeconfig context to use (default: the current context).",
    )(fn)  # fmt: skip
    fn = click.option(
        "--kubeconfig", metavar="PATH", type=click.Path(dir_okay=False),
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster).",
    )(fn)  # fmt: skip
    return fn


def _plan_option(required: bool) -> Callable[[F], F]:
    """``--plan``: required to create Jobs; else optional (read back from the Jobs' annotation)."""
    if required:
        return click.option("--plan", "plan_url", required=True, metavar="PLAN",
                            help="Plan folder or plan.json (local or s3://).")  # fmt: skip
    return click.option("--plan", "plan_url", metavar="PLAN",
                        help="Plan of the batch (default: from its Jobs).")  # fmt: skip


def _batch_option(fn: F) -> F:
    return click.option(
        "--batch", required=True, metavar="NAME",
        help="Batch name: lower-case letters, digits and '-' (e.g. 2023a); names the Jobs.",
    )(fn)  # fmt: skip


def _namespace_option(fn: F) -> F:
    return click.option(
        "--namespace", "-n", metavar="NS",
        help="Namespace of the Jobs (default: kubernetes.namespace of the plan's config, 'gmrun').",
    )(fn)  # fmt: skip


def _job_options(fn: F) -> F:
    fn = click.option(
        "--endpoint-url", metavar="URL",
        help="S3-compatible endpoint for the workers (and for this command's done checks); "
             "passed to each Job as the plain env var AWS_ENDPOINT_URL, never credentials.",
    )(fn)  # fmt: skip
    fn = click.option(
        "--backoff-limit", type=click.IntRange(min=0), metavar="N",
        help="Retries of a failed pod before the Job fails (default: from the config, 2).",
    )(fn)  # fmt: skip
    fn = click.option(
        "--service-account", metavar="NAME",
        help="ServiceAccount of the worker pods (default: from the config, gmrun-worker).",
    )(fn)  # fmt: skip
    fn = click.option(
        "--image", metavar="IMG",
        help="Worker container image (default: kubernetes.image of the plan's config).",
    )(fn)  # fmt: skip
    return fn


def _load_plan(url: str) -> Any:
    """Load a plan; a relative local path is made absolute (the Jobs carry the location)."""
    import os

    from runner.plan import Plan

    if "://" not in url:
        url = os.path.abspath(url)
    return Plan.load(url)


def _job_opts(plan: Any, namespace: str | None, image: str | None, service_account: str | None,
              backoff_limit: int | None, endpoint_url: str | None = None) -> Any:  # fmt: skip
    from runner.k8s import JobOptions

    return JobOptions.from_config(
        plan.config.kubernetes, namespace=namespace, image=image,
        service_account=service_account, backoff_limit=backoff_limit, endpoint_url=endpoint_url,
    )  # fmt: skip


@contextmanager
def _progress(
    enabled: bool, label: str
) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """``(set_total, advance)`` callbacks driving a rich bar on stderr (when it is a terminal)."""
    if not enabled or not sys.stderr.isatty():
        yield (lambda _n: None), (lambda _n: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        f"[bold]{label}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(label, total=None)
        yield (lambda n: bar.update(task, total=n)), (lambda n: bar.advance(task, n))


# ------------------------------------------------------------------------------------------
# render
# ------------------------------------------------------------------------------------------


@k8s.command(
    "render",
    help="""Write the Job manifests of a batch, one YAML file per tile.

\b
The folder works with both
  kubectl apply -f DIR     (reads the *.yaml Jobs)
  kubectl apply -k DIR     (reads DIR/Kustomization, which lists them)
so the manifests can be reviewed, kept in git or applied by a GitOps tool.
`gmrun k8s submit` creates the very same Jobs through the API instead.

\b
Example:
  gmrun k8s render --plan plans/2023 --batch 2023a -o jobs/2023a

Each Job: restartPolicy Never, backoffLimit, activeDeadlineSeconds and
ttlSecondsAfterFinished from the config; memory request = limit = the tile's
size class from the plan; non-root, read-only root filesystem, no
capabilities, /tmp on an emptyDir; a liveness probe on the worker's
heartbeat file; S3 credentials only via envFrom of kubernetes.s3_secret_name;
with kubernetes.kueue_queue, the Kueue queue label and suspend: true.""",
)
@_plan_option(required=True)
@_batch_option
@_namespace_option
@_job_options
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              metavar="DIR", help="Folder to write the manifests into (created if missing).")  # fmt: skip
@exit_on_error
def render_cmd(plan_url: str, batch: str, namespace: str | None, image: str | None,
               service_account: str | None, backoff_limit: int | None, endpoint_url: str | None,
               out_dir: str) -> None:  # fmt: skip
    from runner import k8s as k
    from runner import store

    k.validate_batch_name(batch)
    store.use_endpoint(endpoint_url)  # the plan may be on that store
    plan = _load_plan(plan_url)
    opts = _job_opts(plan, namespace, image, service_account, backoff_limit, endpoint_url)
    paths = k.render(plan, batch, opts, out_dir)
    click.echo(
        f"wrote {len(paths)} Job manifests and {k.KUSTOMIZATION_FILE} to {out_dir}", err=True
    )


# ------------------------------------------------------------------------------------------
# submit
# ------------------------------------------------------------------------------------------


@k8s.command(
    "submit",
    help="""Create the Jobs of a batch on the cluster.

\b
Only tiles that need work get a Job: a tile whose outputs exist (its STAC
item, the done marker) is skipped, and a tile that already has a Job in the
batch is left alone, whatever its state. So submit is safe to repeat: after
an interruption, or to pick up tiles added to the plan. Failed Jobs are not
resubmitted; use `gmrun k8s rerun --failed` for those.

\b
Jobs are created concurrently (--workers); throttling (429) and server
errors are retried with backoff. With --max-active N at most N Jobs of the
batch are unfinished at any time: submit waits, polling the cluster, and
tops up as Jobs finish; stop it any time and run it again.

\b
Examples:
  gmrun k8s submit --plan s3://bucket/plans/2023 --batch 2023a
  gmrun k8s submit --plan plans/2023 --batch 2023a --max-active 100 --context prod""",
)
@_plan_option(required=True)
@_batch_option
@_namespace_option
@_job_options
@click.option("--max-active", type=click.IntRange(min=1), metavar="N",
              help="Keep at most N unfinished Jobs of the batch; wait and top up.")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 128), default=16, show_default=True,
              help="Concurrent API requests.")  # fmt: skip
@click.option("--poll-interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              metavar="SECONDS", help="How often --max-active checks for finished Jobs.")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_cluster_options
@exit_on_error
def submit_cmd(plan_url: str, batch: str, namespace: str | None, image: str | None,
               service_account: str | None, backoff_limit: int | None, endpoint_url: str | None,
               max_active: int | None,
               workers: int, poll_interval: float, quiet: bool, kubeconfig: str | None,
               context: str | None) -> None:  # fmt: skip
    from runner import k8s as k
    from runner import store

    k.validate_batch_name(batch)
    store.use_endpoint(endpoint_url)
    plan = _load_plan(plan_url)
    opts = _job_opts(plan, namespace, image, service_account, backoff_limit, endpoint_url)
    cluster = k.Cluster(kubeconfig, context, pool=max(workers, 4))
    try:
        with _progress(not quiet, f"submit {batch}") as (set_total, advance):
            res = k.submit(
                cluster, plan, batch, opts, max_active=max_active, workers=workers,
                poll_interval=poll_interval, on_total=set_total, progress=advance,
            )  # fmt: skip
    finally:
        cluster.close()
    rate = (
        f" ({len(res.created) / res.seconds:.0f} Jobs/s)" if res.created and res.seconds > 0 else ""
    )
    click.echo(
        f"batch {batch}: created {len(res.created)} Jobs{rate}, {len(res.existed)} already existed, "
        f"{len(res.skipped_done)} tiles already done (namespace {opts.namespace})",
        err=True,
    )


# ------------------------------------------------------------------------------------------
# status
# ------------------------------------------------------------------------------------------


def _resolve_plan(cluster: Any, namespace: str, batch: str, plan_url: str | None) -> Any:
    from runner import k8s as k

    return _load_plan(plan_url or k.plan_url_of_batch(cluster, namespace, batch))


def _namespace(namespace: str | None, plan: Any | None) -> str:
    if namespace:
        return namespace
    if plan is not None:
        return str(plan.config.kubernetes.namespace)
    from runner.config import KubernetesConfig

    return KubernetesConfig().namespace


_STATE_STYLE = {
    "done": "green", "succeeded": "green", "failed": "bold red", "running": "cyan",
    "pending": "yellow", "suspended": "magenta", "unsubmitted": "dim",
}  # fmt: skip


@k8s.command(
    "status",
    help="""Show the state of every tile of a batch.

\b
One row per tile of the plan (and per Job of the batch):
  state     unsubmitted  no Job, no outputs
            suspended    Job waits for its Kueue queue
            pending      Job created, pod not running yet
            running      pod running
            succeeded    Job complete
            failed       Job failed: retries exhausted or deadline exceeded
            done         outputs exist, no Job (or it failed afterwards)
  attempts  pods the Job has run; failures: those that failed
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
@_batch_option
@_plan_option(required=False)
@_namespace_option
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "ids"]), default="table",
              show_default=True, help="table for people, json for programs, ids: one tile per line.")  # fmt: skip
@click.option("--state", "states", multiple=True, metavar="STATE",
              type=click.Choice(["unsubmitted", "suspended", "pending", "running", "succeeded",
                                 "failed", "done"]),
              help="Only tiles in this state (repeatable).")  # fmt: skip
@_cluster_options
@exit_on_error
def status_cmd(batch: str, plan_url: str | None, namespace: str | None, fmt: str,
               states: tuple[str, ...], kubeconfig: str | None, context: str | None) -> None:  # fmt: skip
    from runner import k8s as k

    k.validate_batch_name(batch)
    plan = _load_plan(plan_url) if plan_url else None
    cluster = k.Cluster(kubeconfig, context)
    try:
        ns = _namespace(namespace, plan)
        if plan is None:
            plan = _resolve_plan(cluster, ns, batch, None)
        rows = k.batch_status(cluster, ns, batch, plan)
    finally:
        cluster.close()
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
            r.tile, f"[{style}]{r.state}[/]" if style else r.state, str(r.attempts),
            str(r.failures), "yes" if r.done else "no", r.memory, r.job or "-", r.reason,
        )  # fmt: skip
    console = Console(soft_wrap=not sys.stdout.isatty(), width=None if sys.stdout.isatty() else 250)
    console.print(table)
    summary = ", ".join(f"{counts[s]} {s}" for s in k.STATES if s in counts)
    click.echo(f"batch {batch}: {sum(counts.values())} tiles: {summary or 'none'}", err=True)


# ------------------------------------------------------------------------------------------
# rerun
# ------------------------------------------------------------------------------------------


@k8s.command(
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
@_batch_option
@_plan_option(required=False)
@click.option("--failed", is_flag=True, help="Rerun every tile whose Job failed.")
@click.option("--tiles", "tiles_arg", metavar="IDS", help="Tile ids, separated by commas.")
@click.option(
    "--tiles-file", type=click.File("r"), metavar="FILE", help="File of tile ids ('-': stdin)."
)
@click.option("--memory-factor", type=click.FloatRange(min=0.1, max=64), default=1.0, show_default=True,
              metavar="X", help="Multiply the memory of each tile's previous Job.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Also rerun tiles that are done, recomputing them.")
@_namespace_option
@_job_options
@click.option("--wait-timeout", type=click.FloatRange(min=1), default=300, show_default=True,
              metavar="SECONDS", help="How long to wait for the old Jobs to be deleted.")  # fmt: skip
@_cluster_options
@exit_on_error
def rerun_cmd(batch: str, plan_url: str | None, failed: bool, tiles_arg: str | None,
              tiles_file: Any, memory_factor: float, overwrite: bool, namespace: str | None,
              image: str | None, service_account: str | None, backoff_limit: int | None,
              endpoint_url: str | None, wait_timeout: float, kubeconfig: str | None,
              context: str | None) -> None:  # fmt: skip
    from runner import k8s as k
    from runner import store

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
    plan = _load_plan(plan_url) if plan_url else None
    cluster = k.Cluster(kubeconfig, context)
    try:
        ns = _namespace(namespace, plan)
        if plan is None:
            plan = _resolve_plan(cluster, ns, batch, None)
            ns = _namespace(namespace, plan)
        if failed:
            ids = [
                k.TileId.parse(r.tile)
                for r in k.batch_status(cluster, ns, batch, plan) if r.state == "failed"
            ]  # fmt: skip
        if not ids:
            click.echo(f"batch {batch}: nothing to rerun", err=True)
            return
        opts = _job_opts(plan, ns, image, service_account, backoff_limit, endpoint_url)
        res = k.rerun(
            cluster, plan, batch, opts, ids, overwrite=overwrite, memory_factor=memory_factor,
            wait_timeout=wait_timeout, keep_image=image is None,
        )  # fmt: skip
    finally:
        cluster.close()
    click.echo(
        f"batch {batch}: deleted {len(res.deleted)} Jobs, created {len(res.created)}"
        + (f" with memory x{memory_factor:g}" if memory_factor != 1.0 else ""),
        err=True,
    )
