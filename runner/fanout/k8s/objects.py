"""Typed, read-only views of the Kubernetes objects gmrun reads back: Jobs and their pods.

The API client returns plain JSON (decoding 10,000 Jobs into the client's model classes is
slow); these views pick out, once and in one place, the few fields ``status``, ``submit`` and
``rerun`` need, tolerating any of them being absent or ``null`` as the API allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]


def _at(doc: Any, *path: str | int) -> Any:
    """``doc[path[0]][path[1]]…``, or None where any step is missing, null or of the wrong kind."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(doc, list) or len(doc) <= key:
                return None
        elif not isinstance(doc, dict):
            return None
        doc = doc[key] if isinstance(key, int) else doc.get(key)
        if doc is None:
            return None
    return doc


def _int(v: Any) -> int:
    return int(v) if isinstance(v, int | str) and str(v).lstrip("-").isdigit() else 0


@dataclass(frozen=True, slots=True)
class JobView:
    """What gmrun reads of a ``batch/v1`` Job."""

    name: str
    uid: str
    labels: dict[str, str]
    annotations: dict[str, str]
    #: condition types whose status is ``"True"``, with their ``(reason, message)``
    conditions: dict[str, tuple[str, str]]
    suspended: bool
    active: int
    succeeded: int
    failed: int
    memory_limit: str  #: the first container's memory limit ("" if none)
    image: str  #: the first container's image ("" if none)
    started_at: str = ""  #: ``status.startTime`` (ISO 8601)
    finished_at: str = ""  #: ``status.completionTime`` (complete Jobs), else the Failed condition's

    @classmethod
    def of(cls, job: Manifest) -> JobView:
        conds: dict[str, tuple[str, str]] = {}
        for c in _at(job, "status", "conditions") or []:
            if isinstance(c, dict) and c.get("status") == "True" and c.get("type"):
                conds[str(c["type"])] = (str(c.get("reason") or ""), str(c.get("message") or ""))
        container = _at(job, "spec", "template", "spec", "containers", 0) or {}
        return cls(
            name=str(_at(job, "metadata", "name") or ""),
            uid=str(_at(job, "metadata", "uid") or ""),
            labels=dict(_at(job, "metadata", "labels") or {}),
            annotations=dict(_at(job, "metadata", "annotations") or {}),
            conditions=conds,
            suspended=bool(_at(job, "spec", "suspend")),
            active=_int(_at(job, "status", "active")),
            succeeded=_int(_at(job, "status", "succeeded")),
            failed=_int(_at(job, "status", "failed")),
            memory_limit=str(_at(container, "resources", "limits", "memory") or ""),
            image=str(_at(container, "image") or ""),
            started_at=str(_at(job, "status", "startTime") or ""),
            finished_at=str(_at(job, "status", "completionTime") or _failed_at(job) or ""),
        )

    @property
    def finished(self) -> bool:
        """Complete or Failed: the Job no longer occupies the cluster."""
        return "Complete" in self.conditions or "Failed" in self.conditions


def _failed_at(job: Manifest) -> str:
    for c in _at(job, "status", "conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Failed" and c.get("status") == "True":
            return str(c.get("lastTransitionTime") or "")
    return ""


@dataclass(frozen=True, slots=True)
class Termination:
    """How a container ended: its exit code, the kubelet's reason and the termination message."""

    exit_code: int | None
    reason: str
    message: str
    started: str = ""  #: ``startedAt``
    finished: str = ""  #: ``finishedAt``


@dataclass(frozen=True, slots=True)
class PodView:
    """What gmrun reads of a Job's pod."""

    phase: str
    created: str  #: ``creationTimestamp`` (ISO 8601, sorts in time order)
    owner_uid: str  #: the uid of the Job that owns it
    reason: str  #: the pod's own status reason (``Evicted``, ``DeadlineExceeded``, …)
    message: str
    terminated: Termination | None  #: the first container's last termination, if any
    node: str = ""  #: ``spec.nodeName``
    started: str = ""  #: ``status.startTime``
    #: condition type -> ``(status, reason, message)`` (``PodScheduled``, ``DisruptionTarget``…)
    conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: the first container's waiting state ``(reason, message)`` (``ImagePullBackOff``…)
    waiting: tuple[str, str] | None = None
    name: str = ""

    @classmethod
    def of(cls, pod: Manifest) -> PodView:
        owner = ""
        for ref in _at(pod, "metadata", "ownerReferences") or []:
            if isinstance(ref, dict) and ref.get("kind") == "Job":
                owner = str(ref.get("uid") or "")
                break
        if not owner:
            owner = str(_at(pod, "metadata", "labels", "controller-uid") or "")
        term = None
        waiting = None
        for cs in _at(pod, "status", "containerStatuses") or []:
            w = _at(cs, "state", "waiting")
            if isinstance(w, dict) and waiting is None:
                waiting = (str(w.get("reason") or ""), str(w.get("message") or ""))
            t = _at(cs, "state", "terminated") or _at(cs, "lastState", "terminated")
            if isinstance(t, dict):
                code = t.get("exitCode")
                term = Termination(
                    code if isinstance(code, int) else None,
                    str(t.get("reason") or ""),
                    str(t.get("message") or ""),
                    str(t.get("startedAt") or ""),
                    str(t.get("finishedAt") or ""),
                )
                break
        conds: dict[str, tuple[str, str, str]] = {}
        for c in _at(pod, "status", "conditions") or []:
            if isinstance(c, dict) and c.get("type"):
                conds[str(c["type"])] = (
                    str(c.get("status") or ""),
                    str(c.get("reason") or ""),
                    str(c.get("message") or ""),
                )
        return cls(
            phase=str(_at(pod, "status", "phase") or ""),
            created=str(_at(pod, "metadata", "creationTimestamp") or ""),
            owner_uid=owner,
            reason=str(_at(pod, "status", "reason") or ""),
            message=str(_at(pod, "status", "message") or ""),
            terminated=term,
            node=str(_at(pod, "spec", "nodeName") or ""),
            started=str(_at(pod, "status", "startTime") or ""),
            conditions=conds,
            waiting=waiting,
            name=str(_at(pod, "metadata", "name") or ""),
        )
