"""Job manifests, as pure functions of a plan's tile and the batch's options.

A *batch* is one submission of a plan under a short DNS-safe name (``2023a``). Each tile becomes
the Job ``gm-{batch}-{tile}`` (``gm-2023a-x017y156``) labelled ``gmrun.io/batch`` and
``gmrun.io/tile``, whose single container runs ``gmrun run-tile --plan URL --tile ID``
(:func:`runner.fanout.worker_args.run_tile_args`). Manifests are plain ``dict``s: they serialise
to YAML for ``kubectl`` as they are and go to the API server without the client's model classes.
``render``, ``submit`` and ``rerun`` all build a tile's Job with :func:`build_job`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from runner.common.config import KubernetesConfig
from runner.common.errors import UserInputError
from runner.fanout.k8s.placement import Placement, apply_placement, placement_from
from runner.fanout.k8s.policy import fit_to_server, pod_failure_policy
from runner.fanout.worker_args import WorkerOptions, run_tile_args
from runner.planner.grid import TileId
from runner.planner.plan import Plan, TilePlan
from runner.planner.sizing import Resources

LABEL_APP = "app.kubernetes.io/name"
LABEL_BATCH = "gmrun.io/batch"
LABEL_TILE = "gmrun.io/tile"
ANN_PLAN = "gmrun.io/plan"
ANN_MEMORY_BYTES = "gmrun.io/memory-bytes"
ANN_MEMORY_FACTOR = "gmrun.io/memory-factor"
APP_NAME = "gmrun"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

#: Where the worker touches its heartbeat file (``$GMRUN_HEARTBEAT``); the liveness probe checks it.
HEARTBEAT_PATH = "/tmp/gmrun-heartbeat"
#: The namespace of the Jobs when neither ``--namespace``, ``kubernetes.namespace`` nor the
#: kubeconfig context names one.
DEFAULT_NAMESPACE = "gmrun"
#: The name of the worker's container (the failure policy's ``onExitCodes`` names it).
CONTAINER = "gmrun"
#: The worker runs as this non-root user (the image's ``gmrun`` user).
RUN_AS_USER = 10001
JOB_PREFIX = "gm-"
#: Longest tile DNS name: ``xm1234ym1234``.
_MAX_TILE_DNS = 12
#: A Job name (and so its ``job-name`` label) must be a DNS-1123 label of at most 63 characters.
MAX_BATCH_LEN = 63 - len(JOB_PREFIX) - 1 - _MAX_TILE_DNS
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

#: ``kubectl apply -f DIR`` reads only ``*.yaml|*.yml|*.json``; kustomize also accepts a file
#: named ``Kustomization``, so this name lets both ``-f DIR`` and ``-k DIR`` work on one folder.
KUSTOMIZATION_FILE = "Kustomization"


#: where the released worker images are
IMAGE_REPOSITORY = "ghcr.io/gmrun/gmrun"


def default_image() -> str:
    """The worker image of this gmrun: ``ghcr.io/gmrun/gmrun:{version}`` (``+`` of a local
    version becomes ``-``, as image tags have no ``+``)."""
    from runner import __version__

    return f"{IMAGE_REPOSITORY}:{__version__.replace('+', '-')}"


def pull_policy(image: str) -> str:
    """``IfNotPresent`` for an image pinned by digest or by a version tag, ``Always`` for
    ``latest`` or no tag: a moving tag cached on one node must not compute one batch with two
    versions (checkov CKV_K8S_14/15).

    >>> pull_policy("reg/gm@sha256:ab"), pull_policy("reg/gm:1.2"), pull_policy("reg:5000/gm")
    ('IfNotPresent', 'IfNotPresent', 'Always')
    """
    if "@" in image:
        return "IfNotPresent"
    name = image.rsplit("/", 1)[-1]
    tag = name.split(":", 1)[1] if ":" in name else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def validate_batch_name(batch: str) -> str:
    """A batch name must be a lower-case DNS label short enough for every Job name it makes."""
    if not batch or len(batch) > MAX_BATCH_LEN or not _DNS_LABEL_RE.match(batch):
        raise UserInputError(
            f"invalid batch name {batch[:70]!r}: use 1-{MAX_BATCH_LEN} lower-case letters, digits "
            "or '-', starting and ending with a letter or digit (e.g. 2023a)"
        )
    return batch


def job_name(batch: str, tile: TileId) -> str:
    """``gm-2023a-x017y156``: DNS-1123, unique per (batch, tile)."""
    return f"{JOB_PREFIX}{batch}-{tile.dns_name}"


@dataclass(frozen=True)
class JobOptions:
    """What goes into every Job of a batch besides the tile (defaults from ``kubernetes:`` in
    the run configuration, each overridable on the command line)."""

    image: str
    namespace: str
    service_account: str
    backoff_limit: int
    active_deadline_seconds: int
    ttl_seconds_after_finished: int
    s3_secret_name: str | None = None
    kueue_queue: str | None = None
    #: The liveness probe fails when the heartbeat is older than this many seconds.
    heartbeat_timeout: int = 900
    log_format: str = "json"
    #: The worker recomputes done tiles (``--overwrite``; a forced rerun).
    overwrite: bool = False
    #: None: :func:`pull_policy` of the image (``Always`` for ``latest`` or no tag)
    image_pull_policy: str | None = None
    #: ``/tmp`` emptyDir size limit = the container's ephemeral-storage request and limit
    tmp_size: str = "4Gi"
    #: S3-compatible endpoint for the worker (``AWS_ENDPOINT_URL``, a plain env var: no secret).
    endpoint_url: str | None = None
    #: The worker's time budget in seconds (``--max-processing-time``); see :func:`job_deadline`.
    max_processing_time: int | None = None
    #: the container's CPU request (None: the plan's, ``kubernetes.cpu`` at plan time)
    cpu: str | None = None
    #: node selector, tolerations, affinity, priority class, pull secrets, labels,
    #: annotations, pod patch (:mod:`runner.fanout.k8s.placement`)
    placement: Placement = field(default_factory=Placement)

    @classmethod
    def from_config(cls, cfg: KubernetesConfig, **overrides: Any) -> JobOptions:
        base = cls(
            image=cfg.image or default_image(),
            tmp_size=cfg.tmp_size,
            namespace=cfg.namespace or DEFAULT_NAMESPACE,
            service_account=cfg.service_account,
            backoff_limit=cfg.backoff_limit,
            active_deadline_seconds=cfg.active_deadline_seconds,
            ttl_seconds_after_finished=cfg.ttl_seconds_after_finished,
            s3_secret_name=cfg.s3_secret_name,
            kueue_queue=cfg.kueue_queue,
            max_processing_time=cfg.max_processing_time,
            placement=placement_from(cfg),
        )
        opts = replace(base, **{k: v for k, v in overrides.items() if v is not None})
        if opts.endpoint_url:
            from runner.common.store import validate_endpoint

            opts = replace(opts, endpoint_url=validate_endpoint(opts.endpoint_url))
        return opts

    @property
    def worker(self) -> WorkerOptions:
        """The worker's options in every Job (the endpoint goes as an env var, not a flag)."""
        return WorkerOptions(
            overwrite=self.overwrite,
            max_processing_time=self.max_processing_time,
            log_format=self.log_format or None,
        )


def job_deadline(opts: JobOptions) -> int:
    """The Job's ``activeDeadlineSeconds``: with a worker time budget N, N plus a margin for
    image pull, start-up and the last upload (max(300 s, N / 10)), so the worker's own deadline
    ends it first with a clear reason; else the configured ``active_deadline_seconds``."""
    n = opts.max_processing_time
    if not n:
        return opts.active_deadline_seconds
    return int(n + max(300, n // 10))


def worker_env(batch: str, tile: TileId, endpoint_url: str | None = None) -> list[dict[str, Any]]:
    """Environment of the worker container: GDAL's settings that do not depend on the plan
    (:data:`runner.worker.gdal.STATIC_SETTINGS`, the worker's own; its HTTP retries, timeout and
    cache come from ``input.*`` of the plan's config), writable locations under the ``/tmp``
    emptyDir, the heartbeat file, ``GMRUN_THREADS`` = the container's CPU request (downward API,
    rounded up: ``500m`` → 1; the worker's thread budget, :mod:`runner.common.threads`) and, for
    an S3-compatible store, ``AWS_ENDPOINT_URL``. Never credentials: those come from the
    ServiceAccount (IRSA) or the ``envFrom`` secret."""
    from runner.worker.gdal import STATIC_SETTINGS

    env = {
        **STATIC_SETTINGS,
        "GMRUN_HEARTBEAT": HEARTBEAT_PATH,
        "GMRUN_BATCH": batch,
        "GMRUN_TILE": str(tile),
        "HOME": "/tmp",
        "NUMBA_CACHE_DIR": "/tmp/numba-cache",
    }
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    cpu_request = {"containerName": CONTAINER, "resource": "requests.cpu", "divisor": "1"}
    return [{"name": k, "value": v} for k, v in env.items()] + [
        {"name": "GMRUN_THREADS", "valueFrom": {"resourceFieldRef": cpu_request}}
    ]


def liveness_probe(timeout_s: int) -> dict[str, Any]:
    """Exec probe: the heartbeat file exists and was modified less than ``timeout_s`` ago.

    A missing file fails the probe, so the worker must touch it within ``initialDelaySeconds``.
    """
    check = f"test $(( $(date +%s) - $(stat -c %Y {HEARTBEAT_PATH}) )) -lt {int(timeout_s)}"
    return {
        "exec": {"command": ["sh", "-c", check]},
        "initialDelaySeconds": min(120, int(timeout_s)),
        "periodSeconds": 60,
        "timeoutSeconds": 10,
        "failureThreshold": 2,
    }


def build_job(
    tp: TilePlan,
    batch: str,
    plan_url: str,
    opts: JobOptions,
    resources: Resources | None = None,
    memory_factor: float = 1.0,
) -> dict[str, Any]:
    """The ``batch/v1`` Job manifest of one tile (a plain dict, ready for YAML or the API)."""
    res = resources or tp.resources
    tile = tp.tile
    labels = {LABEL_APP: APP_NAME, LABEL_BATCH: batch, LABEL_TILE: str(tile)}
    job_labels = dict(labels)
    if opts.kueue_queue:
        job_labels[QUEUE_LABEL] = opts.kueue_queue
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy or pull_policy(opts.image),
        "command": ["gmrun"],
        "args": run_tile_args(plan_url, tile, opts.worker),
        "env": worker_env(batch, tile, opts.endpoint_url),
        "resources": {
            "requests": {
                "memory": res.memory,
                "cpu": opts.cpu or res.cpu,
                "ephemeral-storage": opts.tmp_size,
            },
            "limits": {"memory": res.memory, "ephemeral-storage": opts.tmp_size},
        },
        "livenessProbe": liveness_probe(opts.heartbeat_timeout),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        # The last lines of the log become the termination message: `status` shows them.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if opts.s3_secret_name:
        container["envFrom"] = [{"secretRef": {"name": opts.s3_secret_name}}]
    spec: dict[str, Any] = {
        "backoffLimit": opts.backoff_limit,
        # exit 2 (bad input, empty) fails the Job at once; disruptions do not count (≥ 1.26)
        "podFailurePolicy": pod_failure_policy(CONTAINER),
        "activeDeadlineSeconds": job_deadline(opts),
        "ttlSecondsAfterFinished": opts.ttl_seconds_after_finished,
        "completions": 1,
        "parallelism": 1,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "serviceAccountName": opts.service_account,
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS_USER,
                    "runAsGroup": RUN_AS_USER,
                    "fsGroup": RUN_AS_USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": opts.tmp_size}}],
            },
        },
    }
    if opts.kueue_queue:
        spec["suspend"] = True  # Kueue unsuspends the Job when the queue admits it
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(batch, tile),
            "namespace": opts.namespace,
            "labels": job_labels,
            "annotations": {
                ANN_PLAN: plan_url,
                ANN_MEMORY_BYTES: str(res.memory_bytes),
                ANN_MEMORY_FACTOR: f"{memory_factor:g}",
            },
        },
        "spec": spec,
    }
    # placement and the user's pod patch last: the same for render, submit and rerun
    return apply_placement(job, opts.placement)


def runnable_tiles(plan: Plan) -> tuple[list[TilePlan], list[TilePlan]]:
    """The plan's tiles that get a Job, and those skipped (``TilePlan.skip``: 0 observations,
    which would only exit 2, "empty", and waste a pod of the tile's memory)."""
    run = [tp for tp in plan.tiles if not tp.skip]
    return run, [tp for tp in plan.tiles if tp.skip]


def render(
    plan: Plan,
    batch: str,
    opts: JobOptions,
    out_dir: str | Path,
    server: tuple[int, int] | None = None,
) -> list[Path]:
    """Write one Job YAML per tile with work (:func:`runnable_tiles`) into ``out_dir`` plus a
    kustomization listing them; for a ``server`` version older than some fields
    (:func:`runner.fanout.k8s.policy.fit_to_server`), without those."""
    validate_batch_name(batch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for tp in runnable_tiles(plan)[0]:
        manifest = fit_to_server(build_job(tp, batch, plan.url, opts), server)
        p = out / f"{manifest['metadata']['name']}.yaml"
        p.write_text(yaml.safe_dump(manifest, sort_keys=False))
        paths.append(p)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [p.name for p in paths],
    }
    (out / KUSTOMIZATION_FILE).write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return paths
