"""A Job's failure policy from gmrun's exit codes, and Jobs fitted to older API servers.

The worker's exit codes are a contract (:mod:`runner.common.errors`, docs/faults.md): 2 is bad
input or an empty tile, which no retry can fix, so the Job's ``podFailurePolicy`` fails it at
once (``FailJob``); a pod ended by a disruption (node drain, preemption, eviction: the
``DisruptionTarget`` condition) is not counted (``Ignore``); every other failure (1 processing,
3 bug, 137 OOMKilled, 143 SIGTERM) counts against ``backoffLimit``. ``podFailurePolicy`` needs
``restartPolicy: Never`` (gmrun's) and Kubernetes ≥ 1.26 (beta, on by default; GA in 1.31).

An API server older than a field would drop it without a word (1.20 does, for
``podFailurePolicy``) or ``kubectl`` would refuse the manifest; :func:`fit_to_server` removes
such fields first and says which, so ``submit`` can print one line about it.
"""

from __future__ import annotations

import copy
from typing import Any

from runner.common.errors import EXIT_BAD_INPUT, UserInputError

#: Job spec fields newer than some servers: field -> the first (major, minor) that enforces it.
JOB_FIELDS_SINCE: dict[str, tuple[int, int]] = {"podFailurePolicy": (1, 26)}


def pod_failure_policy(container: str) -> dict[str, Any]:
    """The ``podFailurePolicy`` of every gmrun Job: disruptions ignored, bad input fatal."""
    return {
        "rules": [
            # first: a pod stopped by a disruption never fails the Job, whatever its exit code
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": container,
                    "operator": "In",
                    "values": [EXIT_BAD_INPUT],
                },
            },
        ]
    }


def parse_version(text: str) -> tuple[int, int]:
    """``"1.20"``, ``"v1.28.3"``, ``"1.29+"`` → ``(1, 20)`` …; a :class:`ValueError` otherwise."""
    parts = text.strip().lstrip("v").split(".")
    if len(parts) < 2:
        raise ValueError(f"not a Kubernetes version (MAJOR.MINOR): {text!r}")
    major, minor = (int("".join(ch for ch in p if ch.isdigit()) or "x") for p in parts[:2])
    return major, minor


def unsupported_fields(version: tuple[int, int] | None) -> list[str]:
    """The Job spec fields a server of ``version`` lacks (None: a current server, none)."""
    if version is None:
        return []
    return [f for f, since in JOB_FIELDS_SINCE.items() if version < since]


def fit_to_server(manifest: dict[str, Any], version: tuple[int, int] | None) -> dict[str, Any]:
    """``manifest`` without the Job spec fields a server of ``version`` lacks (a copy when any
    is removed; the manifest itself otherwise)."""
    drop = [f for f in unsupported_fields(version) if f in manifest.get("spec", {})]
    if not drop:
        return manifest
    out = copy.deepcopy(manifest)
    for f in drop:
        del out["spec"][f]
    return out


def dropped_line(fields: list[str], server: str) -> str:
    """The one line ``submit``/``render`` print when they leave fields out."""
    since = ", ".join(f"{f} (≥ {'.'.join(map(str, JOB_FIELDS_SINCE[f]))})" for f in fields)
    return (
        f"warning: the API server is {server}: Jobs are created without {since}; its Job "
        "controller retries a bad-input tile backoffLimit times and counts disruptions as "
        "failures (docs/kubernetes.md#failure-policy)"
    )


#: Kueue admits a Job by unsuspending it: ``spec.suspend`` is beta (on) from Kubernetes 1.22
SUSPEND_SINCE = (1, 22)


def check_queue_server(queue: str | None, version: tuple[int, int], server: str) -> None:
    """A Kueue queue needs ``spec.suspend``, which an older server would drop — the Jobs would
    run at once, outside the queue: refuse instead."""
    if queue and version < SUSPEND_SINCE:
        raise UserInputError(
            f"the API server is {server}: Kueue queues (--queue {queue}, kubernetes.kueue_queue) "
            "need Jobs with spec.suspend, Kubernetes ≥ 1.22; submit without a queue "
            "(--max-active N throttles from here instead)"
        )
