"""Options and helpers shared by the ``gmrun k8s`` verbs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def cluster_options(fn: F) -> F:
    fn = click.option(
        "--context",
        metavar="NAME",
        help="kubeconfig context to use (default: the current context).",
    )(fn)
    fn = click.option(
        "--kubeconfig",
        metavar="PATH",
        type=click.Path(dir_okay=False),
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster).",
    )(fn)
    return fn


def plan_option(required: bool) -> Callable[[F], F]:
    """``--plan``: required to create Jobs; else optional (read back from the Jobs' annotation)."""
    if required:
        return click.option(
            "--plan",
            "plan_url",
            required=True,
            metavar="PLAN",
            help="Plan folder or plan.json (local or s3://).",
        )
    return click.option(
        "--plan", "plan_url", metavar="PLAN", help="Plan of the batch (default: from its Jobs)."
    )


def batch_option(fn: F) -> F:
    return click.option(
        "--batch",
        required=True,
        metavar="NAME",
        help="Batch name: lower-case letters, digits and '-' (e.g. 2023a); names the Jobs.",
    )(fn)


def namespace_option(fn: F) -> F:
    return click.option(
        "--namespace",
        "-n",
        metavar="NS",
        help="Namespace of the Jobs (default: kubernetes.namespace of the plan's config, 'gmrun').",
    )(fn)


def job_options(fn: F) -> F:
    fn = click.option(
        "--endpoint-url",
        metavar="URL",
        help="S3-compatible endpoint for the workers (and for this command's done checks); "
        "passed to each Job as the plain env var AWS_ENDPOINT_URL, never credentials.",
    )(fn)
    fn = click.option(
        "--backoff-limit",
        type=click.IntRange(min=0),
        metavar="N",
        help="Retries of a failed pod before the Job fails (default: from the config, 2).",
    )(fn)
    fn = click.option(
        "--service-account",
        metavar="NAME",
        help="ServiceAccount of the worker pods (default: from the config, gmrun-worker).",
    )(fn)
    fn = click.option(
        "--image",
        metavar="IMG",
        help="Worker container image (default: kubernetes.image of the plan's config, else "
        "ghcr.io/gmrun/gmrun:VERSION of this gmrun; latest or untagged images are pulled Always).",
    )(fn)
    return fn


def load_plan(url: str) -> Any:
    """Load a plan; a relative local path is made absolute (the Jobs carry the location)."""
    from runner.common import store
    from runner.planner.plan import Plan

    return Plan.load(store.absolute(url))


def make_job_options(
    plan: Any,
    namespace: str | None,
    image: str | None,
    service_account: str | None,
    backoff_limit: int | None,
    endpoint_url: str | None = None,
) -> Any:
    from runner.fanout.k8s import JobOptions

    return JobOptions.from_config(
        plan.config.kubernetes,
        namespace=namespace,
        image=image,
        service_account=service_account,
        backoff_limit=backoff_limit,
        endpoint_url=endpoint_url,
    )


@contextmanager
def progress_bar(
    enabled: bool, label: str
) -> Iterator[tuple[Callable[[int], None], Callable[[int], None]]]:
    """``(set_total, advance)`` callbacks driving a rich bar on stderr (when it is a terminal)."""
    if not enabled or not sys.stderr.isatty():
        yield (lambda _n: None), (lambda _n: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        f"[bold]{label}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield (lambda n: bar.update(task, total=n)), (lambda n: bar.advance(task, n))


def resolve_plan(cluster: Any, namespace: str, batch: str, plan_url: str | None) -> Any:
    from runner.fanout import k8s as k

    return load_plan(plan_url or k.plan_url_of_batch(cluster, namespace, batch))


def namespace_of(namespace: str | None, plan: Any | None) -> str:
    if namespace:
        return namespace
    if plan is not None:
        return str(plan.config.kubernetes.namespace)
    from runner.common.config import KubernetesConfig

    return KubernetesConfig().namespace


def batch_rows(
    batch: str,
    plan_url: str | None,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> tuple[Any, list[Any]]:
    """The plan of a batch (``--plan``, else the Jobs' annotation) and its tiles' status rows
    (:func:`runner.fanout.k8s.batch_status`), the cluster connection closed after."""
    from runner.fanout import k8s as k

    k.validate_batch_name(batch)
    plan = load_plan(plan_url) if plan_url else None
    cluster = k.Cluster(kubeconfig, context)
    try:
        ns = namespace_of(namespace, plan)
        if plan is None:
            plan = resolve_plan(cluster, ns, batch, None)
        return plan, k.batch_status(cluster, ns, batch, plan)
    finally:
        cluster.close()


def warn_local_paths(plan: Any) -> None:
    """Warn (stderr) when the plan or its output location is a local path: a pod sees it only if
    that very path is mounted into it (a hostPath or a shared volume), which gmrun's Jobs do not
    do; on a real cluster both belong on object storage (``s3://``)."""
    for what, url in (("plan", plan.url), ("output location", plan.config.output.location)):
        if "://" not in url:
            click.echo(
                f"warning: the {what} {url} is a local path: the pods will not see it unless it "
                "is mounted into them at the same path (use s3://… on a cluster)",
                err=True,
            )
