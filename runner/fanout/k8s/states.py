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
}
STATES: tuple[str, ...] = tuple(STATE_MEANINGS)
