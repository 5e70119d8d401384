"""The state of a batch's tiles: Jobs, their pods and the tiles' done markers.

A tile's state is its Job's (conditions, suspension, pods) combined with its done marker (the
STAC item): a tile whose outputs exist is ``done`` even when its Job failed afterwards or was
removed by its TTL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from runner.common.errors import UserInputError
from runner.fanout.k8s.client import Cluster
from runner.fanout.k8s.manifests import ANN_PLAN, LABEL_BATCH, LABEL_TILE
from runner.fanout.k8s.objects import JobView, Manifest, PodView
from runner.fanout.k8s.reasons import failure_reason, pending_reason, pod_failure
from runner.planner.grid import TileId
from runner.planner.plan import Plan
from runner.worker.outputs import TileOutputs

#: Field selector of the pods ``status`` reads: pending ones (why they wait), running ones
#: (state, node) and failed ones (reasons); succeeded pods say nothing their Job does not.
INTERESTING_PODS = "status.phase!=Succeeded"


@dataclass
class TileStatus:
    """One row of ``gmrun k8s status`` (``-o json``/``yaml`` give these fields)."""

    tile: str
    state: str
    job: str | None = None
    attempts: int = 0
    failures: int = 0
    #: why the last attempt failed (:data:`~runner.fanout.k8s.states.REASONS`), "" if none did
    reason: str = ""
    exit_code: int | None = None  #: the last failed attempt's exit code
    #: for people: the Job's and the last failed pod's reasons with the worker's last log line,
    #: or why a pending pod waits (Unschedulable, ImagePullBackOff)
    message: str = ""
    done: bool = False
    memory: str = ""
    node: str = ""  #: the node of the latest attempt
    started: str = ""  #: the Job's start (ISO 8601, UTC)
    finished: str = ""  #: when the Job completed or failed
    seconds: float | None = None  #: finished (or now, while it runs) minus started

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _seconds(start: str, end: str | None) -> float | None:
    try:
        t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
        t1 = datetime.fromisoformat(end.replace("Z", "+00:00")) if end else datetime.now(UTC)
    except ValueError:
        return None
    return round((t1 - t0).total_seconds(), 1)


def job_status(job: Manifest | JobView, pods: Sequence[Manifest | PodView]) -> TileStatus:
    """The state of one tile's Job, from its conditions and its pods."""
    j = job if isinstance(job, JobView) else JobView.of(job)
    views = sorted(
        (p if isinstance(p, PodView) else PodView.of(p) for p in pods), key=lambda p: p.created
    )
    failed_pods = [p for p in views if p.phase == "Failed"]
    n_failed = max(j.failed, len(failed_pods))
    attempts = max(j.failed + j.succeeded + j.active, len(views))
    last = failed_pods[-1] if failed_pods else None
    reason = failure_reason(last) if last is not None else ""
    code = last.terminated.exit_code if last is not None and last.terminated else None
    message = pod_failure(last) if last is not None else ""
    if "Complete" in j.conditions:
        state = "succeeded"
    elif "Failed" in j.conditions:
        state = "failed"
        why, text = j.conditions["Failed"]
        job_reason = why or "Failed"
        if job_reason == "DeadlineExceeded" or not message:
            message = f"{job_reason}: {text}".rstrip(": ")
            reason = "deadline" if job_reason == "DeadlineExceeded" else reason or "error"
        else:
            message = f"{job_reason}; last attempt {message}"
    elif j.suspended:
        state = "suspended"
    elif any(p.phase == "Running" for p in views):
        state = "running"
    else:
        state = "pending"
        waiting = [w for p in views if p.phase == "Pending" and (w := pending_reason(p))]
        if waiting:
            message = waiting[-1] + (f"; earlier attempt {message}" if message else "")
    node = next((p.node for p in reversed(views) if p.node), "")
    return TileStatus(
        tile=j.labels.get(LABEL_TILE, ""),
        state=state,
        job=j.name or None,
        attempts=attempts,
        failures=n_failed,
        reason=reason,
        exit_code=code,
        message=message,
        memory=j.memory_limit,
        node=node,
        started=j.started_at,
        finished=j.finished_at,
        seconds=_seconds(j.started_at, j.finished_at or None) if j.started_at else None,
    )


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
    # Succeeded pods say nothing the Job's status does not. Listing only the others keeps the
    # response small (a pod is ~5 kB of JSON), and both lists are fetched at once so that the
    # server's work overlaps our JSON decoding.
    with ThreadPoolExecutor(2) as pool:
        f_jobs = pool.submit(cluster.list_jobs, namespace, batch)
        f_pods = pool.submit(cluster.list_pods, namespace, batch, INTERESTING_PODS)
        jobs, pods = f_jobs.result(), f_pods.result()
    done = done_tiles(plan, [tp.tile for tp in plan.tiles if not tp.skip]) if plan else set()
    return tile_rows(map(JobView.of, jobs), map(PodView.of, pods), plan, done)


def tile_rows(
    jobs: Iterable[JobView], pods: Iterable[PodView], plan: Plan | None, done: set[TileId]
) -> list[TileStatus]:
    """The rows of :func:`batch_status` from Jobs, their pods and the done tiles (a list, or
    the state a watch keeps)."""
    by_uid: dict[str, list[PodView]] = {}
    for p in pods:
        if p.owner_uid and p.phase != "Succeeded":
            by_uid.setdefault(p.owner_uid, []).append(p)
    rows: dict[str, TileStatus] = {}
    for j in jobs:
        row = job_status(j, by_uid.get(j.uid, []))
        if row.tile:
            rows[row.tile] = row
    if plan is not None:
        for tp in plan.tiles:
            if tp.skip:  # never a Job (an older gmrun's Job of it shows as that Job's state)
                rows.setdefault(
                    str(tp.tile), TileStatus(str(tp.tile), "empty", reason="empty", message=tp.skip)
                )
            else:
                rows.setdefault(
                    str(tp.tile),
                    TileStatus(str(tp.tile), "unsubmitted", memory=tp.resources.memory),
                )
        in_plan = {str(tp.tile) for tp in plan.tiles}
        for t in done:
            row = rows[str(t)]
            row.done = True
            if row.state in ("unsubmitted", "failed"):
                # outputs exist (computed earlier, or the Job was cleaned up by its TTL)
                row.state = "done"
        for key, row in rows.items():
            if key not in in_plan and not row.message:
                row.message = "not in the plan"
    return [rows[k] for k in sorted(rows, key=_tile_sort_key)]


#: states in which a tile's Job still occupies (or waits for) the cluster
UNSETTLED = frozenset({"pending", "running", "suspended"})


def counts(rows: Iterable[TileStatus]) -> dict[str, int]:
    """How many tiles are in each state, in :data:`~runner.fanout.k8s.states.STATES` order."""
    from runner.fanout.k8s.states import STATES

    n: dict[str, int] = {}
    for r in rows:
        n[r.state] = n.get(r.state, 0) + 1
    return {s: n[s] for s in (*STATES, *sorted(set(n) - set(STATES))) if s in n}


def summary_line(batch: str, rows: Sequence[TileStatus]) -> str:
    """``batch 2023a: 4 tiles: 2 succeeded, 1 failed, 1 running``."""
    c = counts(rows)
    parts = ", ".join(f"{v} {k}" for k, v in c.items())
    return f"batch {batch}: {len(rows)} tiles: {parts or 'none'}"


def _tile_sort_key(s: str) -> tuple[int, int, str]:
    try:
        t = TileId.parse(s)
        return (t.ix, t.iy, s)
    except UserInputError:
        return (1 << 30, 0, s)


def plan_url_of_batch(cluster: Cluster, namespace: str, batch: str) -> str:
    """The plan a batch was submitted from (the ``gmrun.io/plan`` annotation of its Jobs)."""
    resp: Any = cluster.call(
        cluster.batch.list_namespaced_job,
        namespace,
        what="list Jobs",
        _preload_content=False,
        label_selector=f"{LABEL_BATCH}={batch}",
        limit=1,
    )
    items = json.loads(resp.data).get("items") or []
    if not items:
        raise UserInputError(
            f"batch {batch!r} has no Jobs in namespace {namespace!r}: pass --plan to see its tiles"
        )
    url = JobView.of(items[0]).annotations.get(ANN_PLAN)
    if not url:
        raise UserInputError(f"the Jobs of batch {batch!r} do not record their plan: pass --plan")
    return str(url)
