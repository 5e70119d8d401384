"""A stand-in kubelet for the test cluster: runs Pending pods as local processes.

:class:`PodExecutor` polls the pods of a label selector (``gmrun.io/batch=<batch>``) that are
Pending, and for each one:

1. patches its status to ``Running`` (``patch_namespaced_pod_status``), as a kubelet would;
2. runs the container's ``command + args`` as a local subprocess, with the container's ``env``
   over this process's environment (``gmrun`` is mapped to this virtualenv's ``gmrun``);
3. patches the status to ``Succeeded`` or ``Failed`` with the container's exit code, reason
   (``Completed``, ``Error``, or ``OOMKilled`` for a process killed by SIGKILL) and, on failure, the
   last lines of its output as the termination message (``FallbackToLogsOnError``).

The Job controller of the test cluster then does the rest (retries per ``backoffLimit``, Job
conditions). A pod deleted while it runs (Job deleted, deadline exceeded) has its process killed.

The test server is Kubernetes 1.20, whose Job controller predates ``podFailurePolicy`` (and
whose API server drops the field). With ``failure_policy=`` the executor does, for a failed
pod, what a ≥ 1.26 Job controller does with that policy's ``onExitCodes`` rules: a ``FailJob``
match sets the Job's ``Failed`` condition (reason ``PodFailurePolicy``, the controller's
message) *before* the pod is reported failed, so the 1.20 controller, seeing a finished Job,
starts no retry. (``Ignore`` on ``DisruptionTarget`` is not emulated: nothing here disrupts.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_MAX_MESSAGE = 2048
_MAX_LINES = 80


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpus(quantity: str) -> float:
    """A CPU quantity (``2``, ``1.5``, ``500m``) in CPUs."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def env_value(var: dict[str, Any], ctr: dict[str, Any]) -> str:
    """An ``env`` entry's value as a kubelet gives it: ``value``, or the downward API's
    ``resourceFieldRef`` of ``requests.cpu`` / ``limits.cpu`` (rounded up per ``divisor``)."""
    if "value" in var:
        return str(var["value"])
    ref = (var.get("valueFrom") or {}).get("resourceFieldRef") or {}
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    quantity = ((ctr.get("resources") or {}).get(kind) or {}).get(resource)
    if resource != "cpu" or quantity is None:
        return ""
    return str(math.ceil(_cpus(str(quantity)) / _cpus(str(ref.get("divisor", "1")))))


def gmrun_command() -> list[str]:
    """How to run this checkout's ``gmrun`` console script."""
    script = Path(sys.executable).parent / "gmrun"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from runner.cli import main; sys.exit(main())"]


def fake_gmrun(argv: list[str]) -> list[str]:
    """Map ``gmrun run-tile ...`` to :mod:`tests.k8s.fake_worker` (fast tests, no real data)."""
    if argv[:1] == ["gmrun"]:
        return [sys.executable, "-m", "tests.k8s.fake_worker", *argv[1:]]
    return map_command(argv)


def map_command(argv: list[str]) -> list[str]:
    """Container command → local command: ``gmrun`` and ``python`` come from this virtualenv."""
    if not argv:
        raise ValueError("container has no command")
    head, rest = argv[0], argv[1:]
    if head == "gmrun":
        return [*gmrun_command(), *rest]
    if head in ("python", "python3"):
        return [sys.executable, *rest]
    return argv


class PodExecutor:
    """Runs the pods matching ``selector`` in ``namespace`` until :meth:`stop`."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        selector: str,
        *,
        parallel: int = 4,
        poll: float = 0.3,
        env: dict[str, str] | None = None,
        before_run: Callable[[dict[str, Any]], None] | None = None,
        command_map: Callable[[list[str]], list[str]] = map_command,
        failure_policy: dict[str, Any] | None = None,
    ):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.failure_policy = failure_policy
        self.namespace = namespace
        self.selector = selector
        self.poll = poll
        self.extra_env = env or {}
        self.before_run = before_run
        self.command_map = command_map
        self.running = 0
        self.max_running = 0  #: most pods running at once
        self.pool = ThreadPoolExecutor(parallel, thread_name_prefix="pod")
        self.seen: set[str] = set()
        self.results: dict[str, int] = {}  #: pod name -> exit code
        self.errors: list[str] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="gmrun-pods-"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pod-executor", daemon=True)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> PodExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        self.pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.core.list_namespaced_pod(
                    self.namespace,
                    label_selector=self.selector,
                    field_selector="status.phase=Pending",
                    _preload_content=False,
                )
                for pod in json.loads(resp.data).get("items") or []:
                    meta = pod["metadata"]
                    if meta["uid"] in self.seen or meta.get("deletionTimestamp"):
                        continue
                    self.seen.add(meta["uid"])
                    self.pool.submit(self._run_pod, pod)
            except Exception as e:  # keep polling; the test sees .errors
                self.errors.append(f"list: {e}")
            self._stop.wait(self.poll)

    def _patch(self, name: str, status: dict[str, Any]) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status})
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def _gone(self, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self.core.read_namespaced_pod(name, self.namespace, _preload_content=False)
        except ApiException as e:
            return e.status == 404
        return bool(json.loads(resp.data)["metadata"].get("deletionTimestamp"))

    def _run_pod(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        try:
            self._run_pod_inner(pod)
        except Exception as e:
            self.errors.append(f"{name}: {type(e).__name__}: {e}")

    def _run_pod_inner(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        ctr = pod["spec"]["containers"][0]
        started = _now()
        base_status = {"name": ctr["name"], "image": ctr["image"], "imageID": "", "restartCount": 0}
        if not self._patch(
            name,
            {
                "phase": "Running",
                "startTime": started,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
                "containerStatuses": [
                    {
                        **base_status,
                        "ready": True,
                        "started": True,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        ):
            return
        if self.before_run is not None:
            self.before_run(pod)
        home = self.workdir / name
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update({e["name"]: env_value(e, ctr) for e in ctr.get("env") or [] if "name" in e})
        env.update(
            {
                "HOME": str(home),
                "GMRUN_HEARTBEAT": str(home / "heartbeat"),
                "NUMBA_CACHE_DIR": str(self.workdir / "numba-cache"),
                "TMPDIR": str(home),
            }
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        argv = self.command_map([*(ctr.get("command") or []), *(ctr.get("args") or [])])
        log_path = home / "log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
            with self._lock:
                self._procs[name] = proc
                self.running += 1
                self.max_running = max(self.max_running, self.running)
            deadline_check = time.monotonic() + 2.0
            deleted = False  # killed because the pod was deleted (not an OOM)
            while True:
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if self._stop.is_set():
                    os.killpg(proc.pid, signal.SIGKILL)
                elif time.monotonic() > deadline_check:
                    deadline_check = time.monotonic() + 2.0
                    if self._gone(name):
                        deleted = True
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
            with self._lock:
                self._procs.pop(name, None)
                self.running -= 1
        rc = proc.returncode
        code = 128 - rc if rc < 0 else rc  # killed by signal N -> 128 + N
        oom = rc == -signal.SIGKILL and not deleted and not self._stop.is_set()
        reason = "OOMKilled" if oom else "Completed" if code == 0 else "Error"
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": _now(),
        }
        if code != 0:
            lines = log_path.read_bytes().decode(errors="replace").splitlines()[-_MAX_LINES:]
            terminated["message"] = "\n".join(lines)[-_MAX_MESSAGE:]
        self.results[name] = code
        if code != 0 and self.failure_policy is not None:
            self._apply_failure_policy(pod, ctr["name"], code)
        self._patch(
            name,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": _now()}],
                "containerStatuses": [
                    {
                        **base_status,
                        "ready": False,
                        "started": False,
                        "state": {"terminated": terminated},
                    }
                ],
            },
        )

    def _apply_failure_policy(self, pod: dict[str, Any], container: str, code: int) -> None:
        """A ≥ 1.26 Job controller's ``FailJob`` on a matching ``onExitCodes`` rule."""
        assert self.failure_policy is not None
        hit = exit_code_rule(self.failure_policy, container, code)
        if hit is None or hit[1] != "FailJob":
            return
        job = next(
            (r["name"] for r in pod["metadata"].get("ownerReferences") or [] if r["kind"] == "Job"),
            None,
        )
        if job is None:
            return
        ns, name, now = self.namespace, pod["metadata"]["name"], _now()
        condition = {
            "type": "Failed",
            "status": "True",
            "reason": "PodFailurePolicy",
            "message": f"Container {container} for pod {ns}/{name} failed with exit code "
            f"{code} matching FailJob rule at index {hit[0]}",
            "lastProbeTime": now,
            "lastTransitionTime": now,
        }
        self.batch.patch_namespaced_job_status(
            job, ns, {"status": {"conditions": [condition], "failed": 1, "active": 0}}
        )


def exit_code_rule(policy: dict[str, Any], container: str, code: int) -> tuple[int, str] | None:
    """``(index, action)`` of the first ``onExitCodes`` rule of ``policy`` that an exit ``code``
    of ``container`` matches, as the Job controller evaluates them (0 never matches)."""
    for i, rule in enumerate(policy.get("rules") or []):
        on = rule.get("onExitCodes")
        if not on or code == 0 or on.get("containerName") not in (None, container):
            continue
        values = set(on.get("values") or [])
        if (code in values) == (on.get("operator") == "In"):
            return i, str(rule["action"])
    return None
