"""Kubernetes fan-out: one ``batch/v1`` Job per tile of a plan.

* :mod:`~runner.fanout.k8s.manifests` — Job manifests as pure functions (names, options, render);
* :mod:`~runner.fanout.k8s.client` — the API client (:class:`Cluster`: retries, one-line errors);
* :mod:`~runner.fanout.k8s.objects` — typed views of the Jobs and pods read back;
* :mod:`~runner.fanout.k8s.states` — the tile states and what they mean;
* :mod:`~runner.fanout.k8s.status` — a tile's state from its Job, its pods and its done marker;
* :mod:`~runner.fanout.k8s.reasons` — why an attempt failed, why a pod waits;
* :mod:`~runner.fanout.k8s.policy` — the Jobs' podFailurePolicy, fitted to older servers;
* :mod:`~runner.fanout.k8s.batch` — submit;
* :mod:`~runner.fanout.k8s.rerun` — rerun (:mod:`~runner.fanout.k8s.attempts`: the failed
  attempts' logs saved first);
* :mod:`~runner.fanout.k8s.watch` — ``status --watch``.

The plan's URL is stored in each Job's ``gmrun.io/plan`` annotation, so ``status`` and ``rerun``
find the plan of a batch without ``--plan``.

The names below are imported on first use, so that ``gmrun --help`` does not load the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.common.lazy import lazy_getattr

if TYPE_CHECKING:
    from runner.fanout.k8s.batch import SubmitResult, read_tile_ids, submit
    from runner.fanout.k8s.client import Cluster, KubeApiError
    from runner.fanout.k8s.manifests import (
        KUSTOMIZATION_FILE,
        MAX_BATCH_LEN,
        JobOptions,
        build_job,
        job_deadline,
        job_name,
        render,
        runnable_tiles,
        validate_batch_name,
    )
    from runner.fanout.k8s.objects import JobView, PodView
    from runner.fanout.k8s.reasons import failure_reason, pending_reason, pod_failure
    from runner.fanout.k8s.rerun import RerunChange, RerunResult, rerun
    from runner.fanout.k8s.states import REASON_MEANINGS, REASONS, STATE_MEANINGS, STATES
    from runner.fanout.k8s.status import (
        TileStatus,
        batch_status,
        done_tiles,
        job_status,
        plan_url_of_batch,
    )

#: Where each public name lives.
_HOMES: dict[str, str] = {
    "Cluster": "runner.fanout.k8s.client",
    "JobOptions": "runner.fanout.k8s.manifests",
    "JobView": "runner.fanout.k8s.objects",
    "KUSTOMIZATION_FILE": "runner.fanout.k8s.manifests",
    "KubeApiError": "runner.fanout.k8s.client",
    "MAX_BATCH_LEN": "runner.fanout.k8s.manifests",
    "PodView": "runner.fanout.k8s.objects",
    "RerunChange": "runner.fanout.k8s.rerun",
    "RerunResult": "runner.fanout.k8s.rerun",
    "STATES": "runner.fanout.k8s.states",
    "STATE_MEANINGS": "runner.fanout.k8s.states",
    "SubmitResult": "runner.fanout.k8s.batch",
    "TileStatus": "runner.fanout.k8s.status",
    "batch_status": "runner.fanout.k8s.status",
    "build_job": "runner.fanout.k8s.manifests",
    "done_tiles": "runner.fanout.k8s.status",
    "job_deadline": "runner.fanout.k8s.manifests",
    "job_name": "runner.fanout.k8s.manifests",
    "job_status": "runner.fanout.k8s.status",
    "plan_url_of_batch": "runner.fanout.k8s.status",
    "pod_failure": "runner.fanout.k8s.reasons",
    "failure_reason": "runner.fanout.k8s.reasons",
    "pending_reason": "runner.fanout.k8s.reasons",
    "REASONS": "runner.fanout.k8s.states",
    "REASON_MEANINGS": "runner.fanout.k8s.states",
    "read_tile_ids": "runner.fanout.k8s.batch",
    "render": "runner.fanout.k8s.manifests",
    "rerun": "runner.fanout.k8s.rerun",
    "runnable_tiles": "runner.fanout.k8s.manifests",
    "submit": "runner.fanout.k8s.batch",
    "validate_batch_name": "runner.fanout.k8s.manifests",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_getattr(__name__, _HOMES)
