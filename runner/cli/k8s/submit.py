"""``gmrun k8s render`` and ``gmrun k8s submit``: a batch's Jobs, as files or created."""

from __future__ import annotations

from typing import Any

import click

from runner.cli.k8s.options import (
    batch_option,
    cluster_options,
    job_options,
    load_plan,
    make_job_options,
    namespace_of,
    namespace_option,
    plan_option,
    progress_bar,
    warn_local_paths,
)
from runner.common.errors import UserInputError, exit_on_error
from runner.fanout.k8s.policy import dropped_line, parse_version, unsupported_fields


@click.command(
    "render",
    help="""Write the Job manifests of a batch, one YAML file per tile with work.

\b
Empty tiles (0 observations in the period; the plan marks them "skip") get
no manifest; the last line counts them.

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
@click.option(
    "--kube-version",
    metavar="X.Y",
    help="Kubernetes version of the cluster the manifests are for (default: a current one, "
    "≥ 1.26); older ones get no fields they lack (podFailurePolicy below 1.26), with a warning.",
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
    kube_version: str | None,
    job_flags: dict[str, Any],
) -> None:
    from runner.common import store
    from runner.fanout import k8s as k

    k.validate_batch_name(batch)
    store.use_endpoint(endpoint_url)  # the plan may be on that store
    plan = load_plan(plan_url)
    opts = make_job_options(
        plan,
        namespace_of(namespace, plan),
        image,
        service_account,
        backoff_limit,
        endpoint_url,
        job_flags,
    )
    server = None
    if kube_version is not None:
        try:
            server = parse_version(kube_version)
        except ValueError as e:
            raise UserInputError(f"--kube-version: {e}") from None
    paths = k.render(plan, batch, opts, out_dir, server)
    n_empty = len(k.runnable_tiles(plan)[1])
    click.echo(
        f"wrote {len(paths)} Job manifests and {k.KUSTOMIZATION_FILE} to {out_dir}"
        f"; skipped {n_empty} empty tiles (0 observations)",
        err=True,
    )
    if server is not None and (dropped := unsupported_fields(server)):
        click.echo(dropped_line(dropped, "v{}.{}".format(*server)), err=True)
    warn_local_paths(plan)


@click.command(
    "submit",
    help="""Create the Jobs of a batch on the cluster.

\b
Only tiles that need work get a Job: an empty tile (0 observations: the
plan says "skip") never does, a tile whose outputs exist (its STAC item,
the done marker) is skipped, and a tile that already has a Job in the
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
    job_flags: dict[str, Any],
) -> None:
    from runner.common import store
    from runner.fanout import k8s as k

    k.validate_batch_name(batch)
    store.use_endpoint(endpoint_url)
    plan = load_plan(plan_url)
    cluster = k.Cluster(kubeconfig, context, pool=max(workers, 4))
    try:
        opts = make_job_options(
            plan,
            namespace_of(namespace, plan, cluster),
            image,
            service_account,
            backoff_limit,
            endpoint_url,
            job_flags,
        )
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
        f"{len(res.skipped_done)} tiles already done, {len(res.skipped_empty)} empty tiles skipped "
        f"(namespace {opts.namespace})",
        err=True,
    )
    if res.dropped_fields and res.created:
        click.echo(dropped_line(res.dropped_fields, res.server), err=True)
    warn_local_paths(plan)
