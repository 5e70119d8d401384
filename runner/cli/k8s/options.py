"""Options and helpers shared by the ``gmrun k8s`` verbs."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import click

from runner.common.config import CPU_QUANTITY
from runner.common.errors import UserInputError

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
        help="Namespace of the Jobs (default: kubernetes.namespace of the plan's config, else "
        "the kubeconfig context's, else 'gmrun').",
    )(fn)


#: the flags of :func:`job_options` handed to the command as one ``job_flags`` mapping
_JOB_FLAGS = (
    "node_selector",
    "tolerations",
    "affinity",
    "priority_class",
    "image_pull_secrets",
    "labels",
    "annotations",
    "pod_patch",
    "queue",
    "s3_secret",
    "cpu",
)


def job_options(fn: F) -> F:
    """What goes into every Job, for render, submit and rerun alike (the config's, overridden):
    image, service account, backoff limit, endpoint, and the placement and override flags,
    which reach the command as ``job_flags`` (for :func:`make_job_options`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = {k: kwargs.pop(k) for k in _JOB_FLAGS}
        return fn(*args, job_flags=flags, **kwargs)

    opts: list[Callable[[Any], Any]] = [
        click.option(
            "--image",
            metavar="IMG",
            help="Worker container image (default: kubernetes.image of the plan's config, else "
            "ghcr.io/gmrun/gmrun:VERSION of this gmrun; latest or untagged images are pulled "
            "Always).",
        ),
        click.option(
            "--service-account",
            metavar="NAME",
            help="ServiceAccount of the worker pods (default: from the config, gmrun-worker).",
        ),
        click.option(
            "--backoff-limit",
            type=click.IntRange(min=0),
            metavar="N",
            help="Retries of a failed pod before the Job fails (default: from the config, 2).",
        ),
        click.option(
            "--endpoint-url",
            metavar="URL",
            help="S3-compatible endpoint for the workers (and for this command's done checks); "
            "passed to each Job as the plain env var AWS_ENDPOINT_URL, never credentials.",
        ),
        click.option(
            "--queue",
            metavar="NAME",
            help="Kueue LocalQueue: the Jobs are created suspended with its label "
            "(default: kubernetes.kueue_queue).",
        ),
        click.option(
            "--s3-secret",
            metavar="NAME",
            help="Secret the workers get as environment (envFrom) for S3 "
            "(default: kubernetes.s3_secret_name).",
        ),
        click.option(
            "--cpu",
            metavar="Q",
            help="CPU request of each worker, e.g. 4 or 3500m (default: the plan's, "
            "kubernetes.cpu); the worker sizes its threads to it.",
        ),
        click.option(
            "--node-selector",
            "node_selector",
            multiple=True,
            metavar="KEY=VALUE",
            help="Add to the pods' nodeSelector (repeatable; over kubernetes.node_selector).",
        ),
        click.option(
            "--toleration",
            "tolerations",
            multiple=True,
            metavar="KEY[=VALUE][:EFFECT]",
            help="Add a toleration, as kubectl taint writes taints (repeatable).",
        ),
        click.option(
            "--affinity",
            metavar="YAML|@FILE",
            help="The pods' affinity, YAML/JSON inline or @FILE (replaces kubernetes.affinity).",
        ),
        click.option(
            "--priority-class",
            metavar="NAME",
            help="The pods' priorityClassName (default: kubernetes.priority_class_name).",
        ),
        click.option(
            "--image-pull-secret",
            "image_pull_secrets",
            multiple=True,
            metavar="NAME",
            help="A Secret to pull the image with (repeatable; adds to the config's).",
        ),
        click.option(
            "--label",
            "labels",
            multiple=True,
            metavar="KEY=VALUE",
            help="An extra label of the Jobs and pods (repeatable).",
        ),
        click.option(
            "--annotation",
            "annotations",
            multiple=True,
            metavar="KEY=VALUE",
            help="An extra annotation of the Jobs and pods, e.g. "
            "karpenter.sh/do-not-disrupt=true (repeatable).",
        ),
        click.option(
            "--pod-patch",
            metavar="YAML|@FILE",
            help="A patch of the pod template applied last: mappings merge, null removes, "
            "containers/env/volumes merge by name (replaces kubernetes.pod_patch).",
        ),
    ]
    out: Any = wrapper
    for opt in reversed(opts):
        out = opt(out)
    return cast(F, out)


def load_plan(url: str) -> Any:
    """Load a plan; a relative local path is made absolute (the Jobs carry the location)."""
    from runner.common import store
    from runner.planner.plan import Plan

    return Plan.load(store.absolute(url))


def make_job_options(
    plan: Any,
    namespace: str,
    image: str | None,
    service_account: str | None,
    backoff_limit: int | None,
    endpoint_url: str | None = None,
    job_flags: dict[str, Any] | None = None,
) -> Any:
    """The :class:`~runner.fanout.k8s.JobOptions` of a batch: the plan's config with the flags
    over it — the same for render, submit and rerun, so their pod specs are the same."""
    from runner.fanout.k8s import JobOptions
    from runner.fanout.k8s.placement import placement_from

    f = job_flags or {}
    cfg = plan.config.kubernetes
    if f.get("cpu") and not re.fullmatch(CPU_QUANTITY, f["cpu"]):
        raise UserInputError(f"--cpu {f['cpu']!r}: use a CPU quantity such as 4, 1.5 or 3500m")
    placement = placement_from(
        cfg,
        node_selector=f.get("node_selector") or (),
        tolerations=f.get("tolerations") or (),
        affinity=f.get("affinity"),
        priority_class=f.get("priority_class"),
        image_pull_secrets=f.get("image_pull_secrets") or (),
        labels=f.get("labels") or (),
        annotations=f.get("annotations") or (),
        pod_patch=f.get("pod_patch"),
    )
    return JobOptions.from_config(
        cfg,
        namespace=namespace,
        image=image,
        service_account=service_account,
        backoff_limit=backoff_limit,
        endpoint_url=endpoint_url,
        kueue_queue=f.get("queue"),
        s3_secret_name=f.get("s3_secret"),
        cpu=f.get("cpu"),
        placement=placement,
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


def namespace_of(namespace: str | None, plan: Any | None, cluster: Any | None = None) -> str:
    """``--namespace``, else the plan's ``kubernetes.namespace``, else the kubeconfig context's
    (or the pod's service account's), else ``gmrun``."""
    from runner.fanout.k8s.manifests import DEFAULT_NAMESPACE

    if namespace:
        return namespace
    if plan is not None and plan.config.kubernetes.namespace:
        return str(plan.config.kubernetes.namespace)
    if cluster is not None and cluster.context_namespace:
        return str(cluster.context_namespace)
    return DEFAULT_NAMESPACE


@contextmanager
def open_batch(
    batch: str,
    plan_url: str | None,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    pool: int = 32,
) -> Iterator[tuple[Any, Any, str]]:
    """``(cluster, plan, namespace)`` of a batch, for ``status``, ``rerun`` and ``collect``
    alike: the plan of ``--plan``, else of the Jobs' ``gmrun.io/plan`` annotation (looked up
    in ``--namespace``, else the default); the namespace ``--namespace``, else the plan's
    ``kubernetes.namespace``. The connection is closed after."""
    from runner.fanout import k8s as k

    k.validate_batch_name(batch)
    plan = load_plan(plan_url) if plan_url else None
    cluster = k.Cluster(kubeconfig, context, pool=pool)
    try:
        ns = namespace_of(namespace, plan, cluster)
        if plan is None:
            plan = resolve_plan(cluster, ns, batch, None)
            ns = namespace_of(namespace, plan, cluster)
        yield cluster, plan, ns
    finally:
        cluster.close()


def batch_rows(
    batch: str,
    plan_url: str | None,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
) -> tuple[Any, list[Any]]:
    """The plan of a batch (:func:`open_batch`) and its tiles' status rows
    (:func:`runner.fanout.k8s.batch_status`)."""
    from runner.fanout import k8s as k

    with open_batch(batch, plan_url, namespace, kubeconfig, context) as (cluster, plan, ns):
        return plan, k.batch_status(cluster, ns, batch, plan)


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
