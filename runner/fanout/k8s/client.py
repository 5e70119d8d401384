"""The Kubernetes API client: one connection, retries with backoff, one-line errors.

Lists are paginated and read as plain JSON (``_preload_content=False``), which keeps listing
10,000 Jobs fast; :mod:`runner.fanout.k8s.objects` reads the fields gmrun needs.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from runner.common.errors import EXIT_BAD_INPUT, EXIT_FAILURE, TransientError, UserInputError
from runner.fanout.k8s.manifests import LABEL_BATCH

T = TypeVar("T")

_METADATA_ACCEPT = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_PAGE = 500
_TIMEOUT = (10.0, 60.0)


class KubeApiError(UserInputError):
    """An API call failed with an HTTP status; ``status`` is that status. Exit code 2 (the
    request was refused: forbidden, not found, invalid), 1 when the server stayed unavailable
    (429, 5xx after the retries), as kubectl's."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status
        self.exit_code = EXIT_FAILURE if status in _RETRY_STATUS else EXIT_BAD_INPUT


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
        #: the namespace of the kubeconfig context (or the pod's service account), if any
        self.context_namespace: str | None = None
        try:
            default = Path(os.path.expanduser("~/.kube/config"))
            if kubeconfig or context or os.environ.get("KUBECONFIG") or default.exists():
                if kubeconfig and not Path(kubeconfig).exists():
                    raise UserInputError(f"kubeconfig {kubeconfig} does not exist")
                # $KUBECONFIG is read here, not at import time (may be a ':'-separated list)
                file = kubeconfig or os.environ.get("KUBECONFIG") or None
                config.load_kube_config(
                    config_file=file,
                    context=context,
                    client_configuration=cfg,
                    persist_config=False,
                )
                contexts, active = config.list_kube_config_contexts(config_file=file)
                chosen = next((c for c in contexts if c.get("name") == context), active)
                ns = ((chosen or {}).get("context") or {}).get("namespace")
                self.context_namespace = str(ns) if ns else None
            else:
                config.load_incluster_config(client_configuration=cfg)
                sa_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                if sa_ns.exists():
                    self.context_namespace = sa_ns.read_text().strip() or None
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
        self._version: tuple[int, int, str] | None = None
        self.api = client.ApiClient(cfg)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def close(self) -> None:
        self.api.close()

    def server_version(self) -> tuple[int, int, str]:
        """``(major, minor, "v1.20.2")`` of the API server (``GET /version``, read once); a
        minor such as ``"28+"`` (managed clusters) counts as 28."""
        if self._version is None:
            from kubernetes import client

            info: Any = self.call(client.VersionApi(self.api).get_code, what="read /version")

            def num(v: Any) -> int:
                digits = "".join(ch for ch in str(v or "") if ch.isdigit())
                return int(digits) if digits else 0

            self._version = (num(info.major), num(info.minor), str(info.git_version or ""))
        return self._version

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
                raise TransientError(
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
        meta: dict[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Items of a list call, fetched in pages of ``_PAGE`` (``limit``/``continue``); the
        list's ``resourceVersion`` (where a watch starts) goes into ``meta``."""
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
            if meta is not None and not token:
                meta["resourceVersion"] = str(
                    (doc.get("metadata") or {}).get("resourceVersion", "")
                )
            yield from doc.get("items") or []
            token = (doc.get("metadata") or {}).get("continue")
            if not token:
                return

    def list_jobs(
        self, namespace: str, batch: str, meta: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """All Jobs of a batch (paginated); the list's ``resourceVersion`` into ``meta``."""
        return list(
            self._list(
                self.batch.list_namespaced_job,
                namespace,
                f"{LABEL_BATCH}={batch}",
                "list Jobs",
                meta=meta,
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
        self,
        namespace: str,
        batch: str,
        field_selector: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The pods of a batch's Jobs (paginated), optionally only those ``field_selector``
        matches (e.g. ``status.phase=Failed``); the list's ``resourceVersion`` into ``meta``."""
        return list(
            self._list(
                self.core.list_namespaced_pod,
                namespace,
                f"{LABEL_BATCH}={batch}",
                "list pods",
                field_selector,
                meta=meta,
            )
        )

    def watch(
        self,
        kind: str,
        namespace: str,
        batch: str,
        resource_version: str,
        timeout_seconds: int = 240,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(event type, object)`` of the batch's ``kind`` (``jobs`` or ``pods``) from
        ``resource_version`` on, for up to ``timeout_seconds`` (a server-side watch: events as
        they happen, no polling). A ``BOOKMARK`` only moves the version on. A
        :class:`KubeApiError` with status 410 means the version is too old: list again."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        fn = self.batch.list_namespaced_job if kind == "jobs" else self.core.list_namespaced_pod
        w = watch.Watch()
        try:
            for ev in w.stream(
                fn,
                namespace,
                label_selector=f"{LABEL_BATCH}={batch}",
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                allow_watch_bookmarks=True,
                deserialize=False,
                _request_timeout=(_TIMEOUT[0], timeout_seconds + 30),
            ):
                yield str(ev.get("type", "")), ev.get("object") or {}
        except ApiException as e:
            raise self.translate(e, f"watch {kind}") from None
        finally:
            w.stop()

    def pod_log_tail(self, namespace: str, pod: str, container: str, lines: int = 200) -> str:
        """The last ``lines`` lines of a container's log (a :class:`KubeApiError` when the
        kubelet cannot give it: the pod or its node is gone)."""
        resp: Any = self.call(
            self.core.read_namespaced_pod_log,
            pod,
            namespace,
            what="read a pod's log",
            attempts=2,
            container=container,
            tail_lines=lines,
            _preload_content=False,
        )
        return bytes(resp.data).decode(errors="replace")

    def create_job(self, manifest: dict[str, Any]) -> bool:
        """Create a Job; ``False`` when it already exists (409), which is not an error."""
        ns = manifest["metadata"]["namespace"]
        try:
            self.call(
                self.batch.create_namespaced_job,
                ns,
                manifest,
                what="create Jobs",
                _preload_content=False,
            )
        except KubeApiError as e:
            if e.status == 409:
                return False
            raise
        return True

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (Foreground propagation) its pods; ``False`` if it was not there."""
        try:
            self.call(
                self.batch.delete_namespaced_job,
                name,
                namespace,
                what="delete Jobs",
                propagation_policy="Foreground",
                _preload_content=False,
            )
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
