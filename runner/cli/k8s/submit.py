"""``gmrun k8s render`` and ``gmrun k8s submit``: a batch's Jobs, as files or created."""

from __future__ import annotations

import click

from runner.cli.k8s.options import (
    batch_option,
    cluster_options,
    job_options,
    load_plan,
    make_job_options,
    namespace_option,
    plan_option,
    progress_bar,
    warn_local_paths,
)
from runner.common.errors import exit_on_error


@click.command(
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
@plan_option(required=True)
@batch_option
@namespace_option
@job_options
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Folder to write the manifests into (created if missing).",
)
@exit_on_error
def render_cmd(
    plan_url: str,
    batch: str,
    namespace: str | None,
    image: str | None,
    service_account: str | None,
    backoff_limit: int | None,
    endpoint_url: str | None,
    out_dir: str,
) -> None:
    from runner.common import store
    from runner.fanout import k8s as k

    k.validate_batch_name(batch)
    store.use_endpoint(endpoint_url)  # the plan may be on that store
    plan = load_plan(plan_url)
    opts = make_job_options(plan, namespace, image, service_account, backoff_limit, endpoint_url)
    paths = k.render(plan, batch, opts, out_dir)
    click.echo(
        f"wrote {len(paths)} Job manifests and {k.KUSTOMIZATION_FILE} to {out_dir}", err=True
    )
    warn_local_paths(plan)


@click.command(
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
@plan_option(required=True)
@batch_option
@namespace_option
@job_options
@click.option(
    "--max-active",
    type=click.IntRange(min=1),
    metavar="N",
    help="Keep at most N unfinished Jobs of the batch; wait and top up.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 128),
    default=16,
    show_default=True,
    help="Concurrent API requests.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How often --max-active checks for finished Jobs.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@cluster_options
@exit_on_error
def submit_cmd(
    plan_url: str,
    batch: str,
    namespace: str | None,
    image: str | None,
    service_account: str | None,
    backoff_limit: int | None,
    endpoint_url: str | None,
    max_active: int | None,
    workers: int,
    poll_interval: float,
    quiet: bool,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    from runner.common import store
    from runner.fanout import k8s as k

    k.validate_batch_name(batch)
    store.use_endpoint(endpoint_url)
    plan = load_plan(plan_url)
    opts = make_job_options(plan, namespace, image, service_account, backoff_limit, endpoint_url)
    cluster = k.Cluster(kubeconfig, context, pool=max(workers, 4))
    try:
        with progress_bar(not quiet, f"submit {batch}") as (set_total, advance):
            res = k.submit(
                cluster,
                plan,
                batch,
                opts,
                max_active=max_active,
                workers=workers,
                poll_interval=poll_interval,
                on_total=set_total,
                progress=advance,
            )
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
    warn_local_paths(plan)
