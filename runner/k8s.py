"""Kubernetes fan-out: one ``batch/v1`` Job per tile of a plan.

A *batch* is one submission of a plan under a short DNS-safe name (``2023a``). Each tile becomes the
Job ``gm-{batch}-{tile}`` (``gm-2023a-x017y156``) labelled ``gmrun.io/batch`` and ``gmrun.io/tile``,
whose single container runs ``gmrun run-tile --plan URL --tile ID``. The Job controller retries a
failed pod ``backoffLimit`` times; ``gmrun k8s status`` reads Jobs, their pods and the tiles' done
markers; ``gmrun k8s rerun`` deletes and recreates chosen Jobs.

Everything here works on plain ``dict`` manifests: they serialise to YAML for ``kubectl`` as they
are, and the API client sends and returns them without its (slow) model classes, which keeps
listing 10,000 Jobs fast.

The plan's URL is stored in each Job's ``gmrun.io/plan`` annotation, so ``status`` and ``rerun``
find the plan of a batch without ``--plan``.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from runner.config import KubernetesConfig
from runner.errors import UserInputError
from runner.grid import TileId
from runner.outputs import TileOutputs
from runner.plan import Plan, Resources, TilePlan

T = TypeVar("T")

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
#: The worker runs as this non-root user (the image's ``gmrun`` user).
RUN_AS_USER = 10001
JOB_PREFIX = "gm-"
#: Longest tile DNS name: ``xm1234ym1234``.
_MAX_TILE_DNS = 12
#: A Job name (and so its ``job-name`` label) must be a DNS-1123 label of at most 63 characters.
MAX_BATCH_LEN = 63 - len(JOB_PREFIX) - 1 - _MAX_TILE_DNS
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

#: Tile states shown by ``gmrun k8s status``.
STATES: tuple[str, ...] = (
    "unsubmitted", "suspended", "pending", "running", "succeeded", "failed", "done",
)  # fmt: skip
#: States in which a tile's Job still occupies the cluster (counted by ``--max-active``).
UNFINISHED_STATES = frozenset({"suspended", "pending", "running"})

_METADATA_ACCEPT = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_PAGE = 500
_TIMEOUT = (10.0, 60.0)


# --------------------------------------------------------------------------------------------
# Names and manifests
# --------------------------------------------------------------------------------------------


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
    #: Extra arguments after ``run-tile ...`` (e.g. ``--overwrite`` on a forced rerun).
    extra_args: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    #: S3-compatible endpoint for the worker (``AWS_ENDPOINT_URL``, a plain env var: no secret).
    endpoint_url: str | None = None
    #: The worker's time budget in seconds (``--max-processing-time``); see :func:`job_deadline`.
    max_processing_time: int | None = None

    @classmethod
    def from_config(cls, cfg: KubernetesConfig, **overrides: Any) -> JobOptions:
        base = cls(
            image=cfg.image,
            namespace=cfg.namespace,
            service_account=cfg.service_account,
            backoff_limit=cfg.backoff_limit,
            active_deadline_seconds=cfg.active_deadline_seconds,
            ttl_seconds_after_finished=cfg.ttl_seconds_after_finished,
            s3_secret_name=cfg.s3_secret_name,
            kueue_queue=cfg.kueue_queue,
            max_processing_time=cfg.max_processing_time,
        )
        opts = replace(base, **{k: v for k, v in overrides.items() if v is not None})
        if opts.endpoint_url:
            from runner.store import validate_endpoint

            opts = replace(opts, endpoint_url=validate_endpoint(opts.endpoint_url))
        return opts


def job_deadline(opts: JobOptions) -> int:
    """The Job's ``activeDeadlineSeconds``: with a worker time budget N, N plus a margin for
    image pull, start-up and the last upload (max(300 s, N / 10)), so the worker's own deadline
    ends it first with a clear reason; else the configured ``active_deadline_seconds``."""
    n = opts.max_processing_time
    if not n:
        return opts.active_deadline_seconds
    return int(n + max(300, n // 10))


def worker_env(batch: str, tile: TileId, endpoint_url: str | None = None) -> list[dict[str, str]]:
    """Environment of the worker container: GDAL's listing behaviour for COGs on HTTP/S3 (its
    HTTP retries, timeout and cache come from ``input.*`` of the plan's config), writable
    locations under the ``/tmp`` emptyDir, the heartbeat file and, for an S3-compatible store,
    ``AWS_ENDPOINT_URL``. Never credentials: those come from the ServiceAccount (IRSA) or the
    ``envFrom`` secret."""
    env = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
        "GMRUN_HEARTBEAT": HEARTBEAT_PATH,
        "GMRUN_BATCH": batch,
        "GMRUN_TILE": str(tile),
        "HOME": "/tmp",
        "NUMBA_CACHE_DIR": "/tmp/numba-cache",
    }
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    return [{"name": k, "value": v} for k, v in env.items()]


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
    args = ["run-tile", "--plan", plan_url, "--tile", str(tile)]
    if opts.log_format:
        args += ["--log-format", opts.log_format]
    if opts.max_processing_time:
        args += ["--max-processing-time", str(opts.max_processing_time)]
    args += list(opts.extra_args)
    container: dict[str, Any] = {
        "name": "gmrun",
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": ["gmrun"],
        "args": args,
        "env": worker_env(batch, tile, opts.endpoint_url),
        "resources": {
            "requests": {"memory": res.memory, "cpu": res.cpu},
            "limits": {"memory": res.memory},
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
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        },
    }
    if opts.kueue_queue:
        spec["suspend"] = True  # Kueue unsuspends the Job when the queue admits it
    return {
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


#: ``kubectl apply -f DIR`` reads only ``*.yaml|*.yml|*.json``; kustomize also accepts a file
#: named ``Kustomization``, so this name lets both ``-f DIR`` and ``-k DIR`` work on one folder.
KUSTOMIZATION_FILE = "Kustomization"


def render(plan: Plan, batch: str, opts: JobOptions, out_dir: str | Path) -> list[Path]:
    """Write one Job YAML per tile into ``out_dir`` plus a kustomization listing them."""
    validate_batch_name(batch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for tp in plan.tiles:
        manifest = build_job(tp, batch, plan.url, opts)
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


# --------------------------------------------------------------------------------------------
# API access
# --------------------------------------------------------------------------------------------


class KubeApiError(UserInputError):
    """An API call failed with an HTTP status (exit code 2); ``status`` is that status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _api_reason(e: Any) -> str:
    """The ``message`` of a Kubernetes ``Status`` body, else the HTTP reason."""
    try:
        body = json.loads(e.body)
        msg = body.get("message")
        if msg:
            return str(msg)
    except (TypeError, ValueError, AttributeError):
        pass
    return f"{e.status} {e.reason}".strip()


class Cluster:
    """A connection to one Kubernetes API server (thread-safe)."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, pool: int = 32):
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        cfg = client.Configuration()
        try:
            default = Path(os.path.expanduser("~/.kube/config"))
            if kubeconfig or context or os.environ.get("KUBECONFIG") or default.exists():
                if kubeconfig and not Path(kubeconfig).exists():
                    raise UserInputError(f"kubeconfig {kubeconfig} does not exist")
                # $KUBECONFIG is read here, not at import time (may be a ':'-separated list)
                config.load_kube_config(
                    config_file=kubeconfig or os.environ.get("KUBECONFIG") or None, context=context, client_configuration=cfg,
                    persist_config=False,
                )  # fmt: skip
            else:
                config.load_incluster_config(client_configuration=cfg)
        except ConfigException as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserInputError(
                f"no usable Kubernetes configuration ({first}): pass --kubeconfig/--context, "
                "set KUBECONFIG, or run in a pod with a service account"
            ) from None
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise UserInputError(f"cannot read the Kubernetes configuration: {e}") from None
        cfg.connection_pool_maxsize = pool
        cfg.retries = False  # retries are ours (below), with backoff
        self.host: str = cfg.host
        self.api = client.ApiClient(cfg)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def close(self) -> None:
        self.api.close()

    # -- error handling ------------------------------------------------------------------

    def call(
        self, fn: Callable[..., T], *args: Any, what: str, attempts: int = 6, **kwargs: Any
    ) -> T:
        """Call the API, retrying 429/5xx and connection failures with jittered exponential
        backoff; other failures become a one-line :class:`UserInputError`."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        kwargs.setdefault("_request_timeout", _TIMEOUT)
        delay = 0.25
        for attempt in range(1, attempts + 1):
            try:
                return fn(*args, **kwargs)
            except ApiException as e:
                if e.status in _RETRY_STATUS and attempt < attempts:
                    retry_after = (e.headers or {}).get("Retry-After") if e.headers else None
                    wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
                    time.sleep(wait * (0.5 + random.random()))
                    delay = min(delay * 2, 10.0)
                    continue
                raise self.translate(e, what) from None
            except (Urllib3Error, OSError) as e:
                if attempt < min(attempts, 3):
                    time.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 10.0)
                    continue
                reason = getattr(e, "reason", None) or e
                raise UserInputError(
                    f"cannot reach the Kubernetes API server at {self.host}: {_short(reason)}"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def translate(self, e: Any, what: str) -> KubeApiError:
        reason = _api_reason(e)
        status = int(e.status or 0)
        if status == 401:
            msg = f"unauthorized by {self.host} while trying to {what}: check the credentials"
        elif status == 403:
            msg = f"forbidden: {reason} (k8s/rbac.yaml has the Role a submitter needs)"
        elif status == 404 and reason.startswith("namespaces "):
            msg = f"{reason}: create it first (kubectl apply -k k8s/)"
        else:
            msg = f"cannot {what}: {reason}"
        return KubeApiError(msg, status)

    # -- operations ------------------------------------------------------------------------

    def _list(
        self,
        fn: Callable[..., Any],
        namespace: str,
        selector: str,
        what: str,
        field_selector: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Items of a list call, fetched in pages of ``_PAGE`` (``limit``/``continue``)."""
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"label_selector": selector, "limit": _PAGE}
            if field_selector:
                kw["field_selector"] = field_selector
            if headers:
                kw["_headers"] = headers
            if token:
                kw["_continue"] = token
            resp = self.call(fn, namespace, what=what, _preload_content=False, **kw)
            doc = json.loads(resp.data)
            yield from doc.get("items") or []
            token = (doc.get("metadata") or {}).get("continue")
            if not token:
                return

    def list_jobs(self, namespace: str, batch: str) -> list[dict[str, Any]]:
        """All Jobs of a batch (paginated)."""
        return list(
            self._list(
                self.batch.list_namespaced_job, namespace, f"{LABEL_BATCH}={batch}", "list Jobs"
            )
        )

    def list_job_metadata(self, namespace: str, batch: str) -> list[dict[str, Any]]:
        """The Jobs of a batch, metadata only (``PartialObjectMetadataList``: about a third of
        the bytes of the full objects; enough to know which tiles have a Job)."""
        return list(
            self._list(
                self.batch.list_namespaced_job,
                namespace,
                f"{LABEL_BATCH}={batch}",
                "list Jobs",
                headers={"Accept": _METADATA_ACCEPT},
            )
        )

    def list_pods(
        self, namespace: str, batch: str, field_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """The pods of a batch's Jobs (paginated), optionally only those ``field_selector``
        matches (e.g. ``status.phase=Failed``)."""
        return list(
            self._list(
                self.core.list_namespaced_pod,
                namespace,
                f"{LABEL_BATCH}={batch}",
                "list pods",
                field_selector,
            )
        )

    def create_job(self, manifest: dict[str, Any]) -> bool:
        """Create a Job; ``False`` when it already exists (409), which is not an error."""
        ns = manifest["metadata"]["namespace"]
        try:
            self.call(
                self.batch.create_namespaced_job, ns, manifest, what="create Jobs",
                _preload_content=False,
            )  # fmt: skip
        except KubeApiError as e:
            if e.status == 409:
                return False
            raise
        return True

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (Foreground propagation) its pods; ``False`` if it was not there."""
        try:
            self.call(
                self.batch.delete_namespaced_job, name, namespace, what="delete Jobs",
                propagation_policy="Foreground", _preload_content=False,
            )  # fmt: skip
        except KubeApiError as e:
            if e.status == 404:
                return False
            raise
        return True


def _short(x: object) -> str:
    s = str(x)
    # urllib3 wraps the socket error: "<...NewConnectionError object at 0x..>: Failed to ..."
    if ">: " in s:
        s = s.split(">: ", 1)[1]
    return s.splitlines()[0][:200] if s else type(x).__name__


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------

#: Field selector of the pods ``status`` reads: running ones (state) and failed ones (reasons).
INTERESTING_PODS = "status.phase!=Pending,status.phase!=Succeeded"

_EXIT_MEANING = {1: "processing failure", 2: "bad input", 137: "killed", 143: "terminated"}


@dataclass
class TileStatus:
    """One row of ``gmrun k8s status``."""

    tile: str
    state: str
    job: str | None = None
    attempts: int = 0
    failures: int = 0
    reason: str = ""
    done: bool = False
    memory: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cond(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def _last_line(message: str) -> str:
    """The last meaningful line of a termination message; JSON log lines give their message."""
    for line in reversed(message.strip().splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            return line[:300]
        if isinstance(rec, dict):
            for k in ("error", "message", "msg", "event"):
                if isinstance(rec.get(k), str) and rec[k]:
                    return rec[k][:300]
        return line[:300]
    return ""


def pod_failure(pod: dict[str, Any]) -> str:
    """Why a failed pod failed: ``OOMKilled (exit 137)``, ``Error (exit 2: bad input): <log>``,
    ``DeadlineExceeded: ...``."""
    st = pod.get("status") or {}
    for cs in st.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
            "terminated"
        )
        if term:
            code = term.get("exitCode")
            meaning = _EXIT_MEANING.get(code) if isinstance(code, int) else None
            text = (
                f"{term.get('reason') or 'Error'} (exit {code}{': ' + meaning if meaning else ''})"
            )
            msg = _last_line(term.get("message") or "")
            return f"{text}: {msg}" if msg else text
    if st.get("reason"):
        pod_msg = st.get("message")
        return f"{st['reason']}: {pod_msg}" if pod_msg else str(st["reason"])
    return "Failed"


def _owner_uid(pod: dict[str, Any]) -> str | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job":
            return ref.get("uid")
    return ((pod.get("metadata") or {}).get("labels") or {}).get("controller-uid")


def job_status(job: dict[str, Any], pods: Sequence[dict[str, Any]]) -> TileStatus:
    """The state of one tile's Job, from its conditions and its pods."""
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    st = job.get("status") or {}
    tile = (meta.get("labels") or {}).get(LABEL_TILE, "")
    failed_pods = sorted(
        (p for p in pods if (p.get("status") or {}).get("phase") == "Failed"),
        key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "",
    )
    n_failed = max(int(st.get("failed") or 0), len(failed_pods))
    attempts = max(
        int(st.get("failed") or 0) + int(st.get("succeeded") or 0) + int(st.get("active") or 0),
        len(pods),
    )
    reason = pod_failure(failed_pods[-1]) if failed_pods else ""
    if _cond(job, "Complete"):
        state = "succeeded"
    elif (c := _cond(job, "Failed")) is not None:
        state = "failed"
        job_reason = c.get("reason") or "Failed"
        if job_reason == "DeadlineExceeded" or not reason:
            reason = f"{job_reason}: {c.get('message') or ''}".rstrip(": ")
        else:
            reason = f"{job_reason}; last attempt {reason}"
    elif spec.get("suspend"):
        state = "suspended"
    elif any((p.get("status") or {}).get("phase") == "Running" for p in pods):
        state = "running"
    else:
        state = "pending"
    limits = (((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]
    memory = ((limits.get("resources") or {}).get("limits") or {}).get("memory", "")
    return TileStatus(tile, state, meta.get("name"), attempts, n_failed, reason, False, memory)


def done_tiles(plan: Plan, tiles: Iterable[TileId], workers: int = 32) -> set[TileId]:
    """Tiles whose done marker exists in the plan's output location (checked concurrently)."""
    tiles = list(tiles)

    def check(t: TileId) -> bool:
        return TileOutputs.of(plan.config, t, plan.period).is_done()

    if len(tiles) < 64 or "://" not in plan.config.output.location:
        return {t for t in tiles if check(t)}  # local files: threads would only add overhead
    with ThreadPoolExecutor(workers) as pool:
        return {t for t, ok in zip(tiles, pool.map(check, tiles), strict=True) if ok}


def batch_status(
    cluster: Cluster, namespace: str, batch: str, plan: Plan | None
) -> list[TileStatus]:
    """One row per tile of the plan (and per Job of the batch not in the plan), sorted by tile."""
    # Pending pods say nothing the Job's status does not; Succeeded ones neither. Listing only
    # the others keeps the response small (a pod is ~5 kB of JSON), and both lists are fetched
    # at once so that the server's work overlaps our JSON decoding.
    with ThreadPoolExecutor(2) as pool:
        f_jobs = pool.submit(cluster.list_jobs, namespace, batch)
        f_pods = pool.submit(cluster.list_pods, namespace, batch, INTERESTING_PODS)
        jobs, pods = f_jobs.result(), f_pods.result()
    by_uid: dict[str, list[dict[str, Any]]] = {}
    for p in pods:
        uid = _owner_uid(p)
        if uid:
            by_uid.setdefault(uid, []).append(p)
    rows: dict[str, TileStatus] = {}
    for j in jobs:
        row = job_status(j, by_uid.get((j.get("metadata") or {}).get("uid", ""), []))
        if row.tile:
            rows[row.tile] = row
    if plan is not None:
        for tp in plan.tiles:
            rows.setdefault(
                str(tp.tile), TileStatus(str(tp.tile), "unsubmitted", memory=tp.resources.memory)
            )
        in_plan = {str(tp.tile) for tp in plan.tiles}
        done = done_tiles(plan, [tp.tile for tp in plan.tiles])
        for t in done:
            row = rows[str(t)]
            row.done = True
            if row.state in ("unsubmitted", "failed"):
                # outputs exist (computed earlier, or the Job was cleaned up by its TTL)
                row.state = "done"
        for key, row in rows.items():
            if key not in in_plan and not row.reason:
                row.reason = "not in the plan"
    return [rows[k] for k in sorted(rows, key=_tile_sort_key)]


def _tile_sort_key(s: str) -> tuple[int, int, str]:
    try:
        t = TileId.parse(s)
        return (t.ix, t.iy, s)
    except UserInputError:
        return (1 << 30, 0, s)


def plan_url_of_batch(cluster: Cluster, namespace: str, batch: str) -> str:
    """The plan a batch was submitted from (the ``gmrun.io/plan`` annotation of its Jobs)."""
    resp: Any = cluster.call(
        cluster.batch.list_namespaced_job, namespace, what="list Jobs", _preload_content=False,
        label_selector=f"{LABEL_BATCH}={batch}", limit=1,
    )  # fmt: skip
    items = json.loads(resp.data).get("items") or []
    if not items:
        raise UserInputError(
            f"batch {batch!r} has no Jobs in namespace {namespace!r}: pass --plan to see its tiles"
        )
    url = ((items[0].get("metadata") or {}).get("annotations") or {}).get(ANN_PLAN)
    if not url:
        raise UserInputError(f"the Jobs of batch {batch!r} do not record their plan: pass --plan")
    return str(url)


# --------------------------------------------------------------------------------------------
# Submit and rerun
# --------------------------------------------------------------------------------------------


@dataclass
class SubmitResult:
    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    seconds: float = 0.0


#: ``progress(advance)`` is called after each Job is handled.
ProgressFn = Callable[[int], None]


def _noop(_: int) -> None:
    return None


def _existing_by_tile(jobs: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for j in jobs:
        tile = ((j.get("metadata") or {}).get("labels") or {}).get(LABEL_TILE)
        if tile:
            out[tile] = j
    return out


def _unfinished(job: dict[str, Any]) -> bool:
    return _cond(job, "Complete") is None and _cond(job, "Failed") is None


def submit(
    cluster: Cluster,
    plan: Plan,
    batch: str,
    opts: JobOptions,
    *,
    max_active: int | None = None,
    workers: int = 16,
    poll_interval: float = 5.0,
    on_total: Callable[[int], None] = _noop,
    progress: ProgressFn = _noop,
) -> SubmitResult:
    """Create the Jobs of every tile that has neither a Job in the batch nor outputs.

    Idempotent: a Job that exists (409) is left alone. With ``max_active``, at most that many Jobs
    of the batch are unfinished at once; the call waits and tops up until every tile is submitted.
    """
    validate_batch_name(batch)
    t0 = time.perf_counter()
    res = SubmitResult()
    if max_active is None:  # which tiles have a Job is all we need to know
        existing = _existing_by_tile(cluster.list_job_metadata(opts.namespace, batch))
    else:  # also whether they are finished
        existing = _existing_by_tile(cluster.list_jobs(opts.namespace, batch))
    candidates = [tp for tp in plan.tiles if str(tp.tile) not in existing]
    res.existed.extend(sorted(existing))
    done = done_tiles(plan, [tp.tile for tp in candidates])
    todo = [tp for tp in candidates if tp.tile not in done]
    res.skipped_done.extend(str(tp.tile) for tp in candidates if tp.tile in done)
    on_total(len(todo))
    lock = threading.Lock()

    def create(tp: TilePlan) -> None:
        made = cluster.create_job(build_job(tp, batch, plan.url, opts))
        with lock:
            (res.created if made else res.existed).append(str(tp.tile))
        progress(1)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        if max_active is None:
            list(pool.map(create, todo))
        else:
            active = sum(1 for j in existing.values() if _unfinished(j))
            queue = list(todo)
            while queue:
                slots = max_active - active
                if slots <= 0:
                    time.sleep(poll_interval)
                    jobs = cluster.list_jobs(opts.namespace, batch)
                    active = sum(1 for j in jobs if _unfinished(j))
                    continue
                now, queue = queue[:slots], queue[slots:]
                list(pool.map(create, now))
                active += len(now)
    res.seconds = time.perf_counter() - t0
    return res


@dataclass
class RerunResult:
    deleted: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


def rerun(
    cluster: Cluster,
    plan: Plan,
    batch: str,
    opts: JobOptions,
    tiles: Sequence[TileId],
    *,
    overwrite: bool = False,
    memory_factor: float = 1.0,
    wait_timeout: float = 180.0,
    workers: int = 16,
    poll_interval: float = 0.5,
    keep_image: bool = False,
) -> RerunResult:
    """Delete the Jobs of ``tiles`` (waiting until they are gone) and create them again.

    A done tile is refused unless ``overwrite`` (the worker then gets ``--overwrite``). With
    ``memory_factor`` the memory of each new Job is that of its previous Job (or the plan's)
    times the factor, so repeated reruns after OOMKills keep growing. With ``keep_image`` a new
    Job uses the image of the Job it replaces.
    """
    validate_batch_name(batch)
    if memory_factor <= 0:
        raise UserInputError(f"--memory-factor must be positive, not {memory_factor}")
    tps = [plan.tile(t) for t in dict.fromkeys(tiles)]  # raises for tiles not in the plan
    done = done_tiles(plan, [tp.tile for tp in tps])
    if done and not overwrite:
        names = ", ".join(str(t) for t in sorted(done)[:10]) + (" …" if len(done) > 10 else "")
        raise UserInputError(
            f"{len(done)} tile(s) already done ({names}): rerun refuses to recompute them "
            "without --overwrite"
        )
    if overwrite:
        opts = replace(opts, extra_args=(*opts.extra_args, "--overwrite"))
    existing = _existing_by_tile(cluster.list_jobs(opts.namespace, batch))
    res = RerunResult()
    to_delete = [
        existing[str(tp.tile)]["metadata"]["name"] for tp in tps if str(tp.tile) in existing
    ]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for name, gone in zip(
            to_delete,
            pool.map(lambda n: cluster.delete_job(opts.namespace, n), to_delete),
            strict=True,
        ):
            if gone:
                res.deleted.append(name)
        # wait until the Jobs (Foreground: and their pods) are gone, so the names are free
        deadline = time.monotonic() + wait_timeout
        pending = set(to_delete)
        while pending:
            present = {
                str((j.get("metadata") or {}).get("name"))
                for j in cluster.list_jobs(opts.namespace, batch)
            }
            pending &= present
            if not pending:
                break
            if time.monotonic() > deadline:
                raise UserInputError(
                    f"{len(pending)} Job(s) still being deleted after {wait_timeout:.0f}s "
                    f"(e.g. {sorted(pending)[0]}); is the garbage collector running?"
                )
            time.sleep(poll_interval)

        def create(tp: TilePlan) -> None:
            prev = existing.get(str(tp.tile))
            base = tp.resources
            if prev is not None:
                ann = (prev.get("metadata") or {}).get("annotations") or {}
                if (ann.get(ANN_MEMORY_BYTES) or "").isdigit():
                    base = Resources(int(ann[ANN_MEMORY_BYTES]), tp.resources.cpu)
            resources = base.scaled(memory_factor) if memory_factor != 1.0 else base
            o = opts
            if keep_image and prev is not None:
                ctrs = (
                    ((prev.get("spec") or {}).get("template") or {})
                    .get("spec", {})
                    .get("containers")
                )
                if ctrs and ctrs[0].get("image"):
                    o = replace(opts, image=ctrs[0]["image"])
            manifest = build_job(tp, batch, plan.url, o, resources, memory_factor)
            cluster.create_job(manifest)
            res.created.append(str(tp.tile))

        list(pool.map(create, tps))
    return res


def read_tile_ids(text: str) -> list[TileId]:
    """Tile ids separated by commas, whitespace or newlines; ``#`` starts a comment."""
    ids: list[TileId] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for part in re.split(r"[,\s]+", line):
            if part:
                ids.append(TileId.parse(part))
    return ids
