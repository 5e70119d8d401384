"""The states of a batch's tiles, and what each means: one list for ``status``, ``--state`` and
their ``--help``."""

from __future__ import annotations

#: Tile states shown by ``gmrun k8s status``, in order, with what each means (its ``--help``).
STATE_MEANINGS: dict[str, str] = {
    "unsubmitted": "no Job, no outputs",
    "suspended": "Job waits for its Kueue queue",
    "pending": "Job created, pod not running yet",
    "running": "pod running",
    "succeeded": "Job complete",
    "failed": "Job failed: retries exhausted or deadline exceeded",
    "done": "outputs exist, no Job (or it failed afterwards)",
    "empty": "0 observations in the period: the plan skips it, never a Job",
}
STATES: tuple[str, ...] = tuple(STATE_MEANINGS)

#: Why a tile failed, as ``status``'s ``reason`` field and ``rerun --reason`` choose it, with
#: what each means. From the last failed attempt's exit code (the worker's contract,
#: :data:`runner.common.errors.EXIT_MEANINGS`), the kubelet's reason and the Job's condition.
REASON_MEANINGS: dict[str, str] = {
    "bad-input": "exit 2: bad input (an unreadable asset, a missing file); retrying cannot help",
    "error": "exit 1: a processing or transient failure (or a liveness-probe kill)",
    "bug": "exit 3: an unexpected exception in gmrun; its traceback is in the pod's log",
    "OOMKilled": "killed at its memory limit: rerun --reason OOMKilled gives it more",
    "deadline": "over its time budget (activeDeadlineSeconds, --max-processing-time)",
    "disrupted": "stopped by a disruption: SIGTERM (exit 143), eviction, preemption",
    "empty": "0 observations in the period: never a Job",
}
REASONS: tuple[str, ...] = tuple(REASON_MEANINGS)
