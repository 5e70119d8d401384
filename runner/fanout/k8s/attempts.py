"""A failed attempt's termination message and log tail, saved before its Job is deleted.

Deleting a Job deletes its pods, and their logs with them. So before ``rerun`` deletes a Job
whose pods failed, the last failed pod's termination message (the worker's last log lines,
``FallbackToLogsOnError``) and the tail of its log (if the kubelet can still give it) are
written to the batch's log folder beside the plan:

    {plan folder}/logs/{batch}/{tile}/{pod name}.log

local or ``s3://``, like the plan. The first lines say which Job, pod and node, the exit code
and the reasons; the file is never needed again by gmrun, only by the people reading it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from runner.common import store
from runner.common.errors import GmrunError, redact_credentials
from runner.fanout.k8s.client import Cluster
from runner.fanout.k8s.manifests import CONTAINER, LABEL_TILE
from runner.fanout.k8s.objects import JobView, PodView
from runner.fanout.k8s.reasons import failure_reason, pod_failure
from runner.planner.plan import Plan

#: lines of a failed container's log kept (on top of its termination message)
LOG_TAIL_LINES = 200


def attempt_log_url(plan: Plan, batch: str, tile: str, pod: str) -> str:
    return store.join(plan.folder, "logs", batch, tile, f"{pod}.log")


def save_failed_attempts(
    cluster: Cluster, plan: Plan, batch: str, namespace: str, jobs: Sequence[JobView]
) -> list[str]:
    """Save the last failed attempt of each of ``jobs`` that has one; the files written."""
    failing = [j for j in jobs if j.failed or "Failed" in j.conditions]
    if not failing:
        return []
    uids = {j.uid: j for j in failing}
    last: dict[str, PodView] = {}
    for p in map(PodView.of, cluster.list_pods(namespace, batch, "status.phase=Failed")):
        if p.owner_uid in uids and (
            p.owner_uid not in last or p.created > last[p.owner_uid].created
        ):
            last[p.owner_uid] = p

    def save(item: tuple[str, PodView]) -> str:
        uid, pod = item
        job = uids[uid]
        tile = job.labels.get(LABEL_TILE, "unknown")
        try:
            tail = cluster.pod_log_tail(namespace, pod.name, CONTAINER, LOG_TAIL_LINES)
        except GmrunError as e:  # no kubelet to ask (node gone), or not allowed
            tail = f"(unavailable: {e})\n"
        term = pod.terminated
        head = {
            "batch": batch,
            "tile": tile,
            "job": job.name,
            "pod": pod.name,
            "node": pod.node,
            "reason": failure_reason(pod),
            "exit_code": term.exit_code if term else None,
            "summary": pod_failure(pod),
            "finished": term.finished if term else "",
        }
        text = (
            "# "
            + json.dumps(head)
            + "\n# termination message:\n"
            + (term.message if term and term.message else "(none)")
            + f"\n# log tail ({LOG_TAIL_LINES} lines):\n"
            + tail
        )
        url = attempt_log_url(plan, batch, tile, pod.name)
        store.write_bytes(url, redact_credentials(text).encode(), "text/plain")
        return url

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(save, sorted(last.items(), key=lambda kv: kv[1].name)))
