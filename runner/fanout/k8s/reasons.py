"""Why an attempt failed, or why a pod does not run: from the pods' and Jobs' own fields.

* :func:`failure_reason` — the keyword of :data:`runner.fanout.k8s.states.REASONS`
  (``bad-input``, ``OOMKilled``, ``deadline`` …) from a failed pod's exit code (the worker's
  contract, :data:`runner.common.errors.EXIT_MEANINGS`), the kubelet's reason and its conditions;
* :func:`pod_failure` — the same for people: ``Error (exit 2: bad input): <the worker's last line>``;
* :func:`pending_reason` — why a pod waits: ``Unschedulable: 0/3 nodes are available: …``,
  ``ImagePullBackOff: …`` (its ``PodScheduled`` condition, its container's waiting state).
"""

from __future__ import annotations

import json

from runner.common.errors import EXIT_BAD_INPUT, EXIT_BUG, EXIT_MEANINGS
from runner.fanout.k8s.objects import Manifest, PodView

#: pod ``status.reason`` values of a disruption (the kubelet's or the scheduler's)
_DISRUPTED = frozenset({"Evicted", "Preempting", "Shutdown", "NodeShutdown", "Terminated"})
#: what the worker prints when its own time budget ends (runner/worker/deadline.py)
_OWN_DEADLINE = "exceeded --max-processing-time"


def last_line(message: str) -> str:
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


def _view(pod: Manifest | PodView) -> PodView:
    return pod if isinstance(pod, PodView) else PodView.of(pod)


def pod_failure(pod: Manifest | PodView) -> str:
    """Why a failed pod failed: ``OOMKilled (exit 137: killed)``, ``Error (exit 2: bad input):
    <log>``, ``Evicted: …``."""
    p = _view(pod)
    if (term := p.terminated) is not None:
        code = term.exit_code
        meaning = EXIT_MEANINGS.get(code) if code is not None else None
        text = f"{term.reason or 'Error'} (exit {code}{': ' + meaning if meaning else ''})"
        msg = last_line(term.message)
        return f"{text}: {msg}" if msg else text
    if p.reason:
        return f"{p.reason}: {p.message}" if p.message else p.reason
    return "Failed"


def failure_reason(pod: Manifest | PodView) -> str:
    """The reason keyword of a failed pod (:data:`~runner.fanout.k8s.states.REASONS`)."""
    p = _view(pod)
    if p.conditions.get("DisruptionTarget", ("",))[0] == "True" or p.reason in _DISRUPTED:
        return "disrupted"
    if p.reason == "DeadlineExceeded":
        return "deadline"
    term = p.terminated
    if term is None:
        return "error"
    if term.reason == "OOMKilled":
        return "OOMKilled"
    code = term.exit_code
    if code == EXIT_BAD_INPUT:
        return "bad-input"
    if code == EXIT_BUG:
        return "bug"
    if code in (130, 143):
        return "disrupted"
    if _OWN_DEADLINE in term.message:
        return "deadline"
    return "error"


def pending_reason(pod: Manifest | PodView) -> str:
    """Why a pod that is not running waits, ``""`` when nothing says: its container's waiting
    state (``ImagePullBackOff: Back-off pulling image …``, ``CreateContainerConfigError: secret
    "gmrun-s3" not found``), else its ``PodScheduled`` condition (``Unschedulable: 0/3 nodes are
    available: 3 Insufficient memory.``)."""
    p = _view(pod)
    if p.waiting is not None and p.waiting[0] not in ("", "ContainerCreating"):
        why, msg = p.waiting
        return f"{why}: {msg}" if msg else why
    status, why, msg = p.conditions.get("PodScheduled", ("", "", ""))
    if status == "False" and why:
        return f"{why}: {msg}" if msg else why
    if p.waiting is not None and p.waiting[0]:
        return p.waiting[0]
    return ""
