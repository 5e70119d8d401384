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
from typing import Any

from runner.common.errors import UserInputError
from runner.fanout.k8s.client import Cluster
from runner.fanout.k8s.manifests import ANN_PLAN, LABEL_BATCH, LABEL_TILE
from runner.fanout.k8s.objects import JobView, Manifest, PodView
from runner.planner.grid import TileId
from runner.planner.plan import Plan
from runner.worker.outputs import TileOutputs

#: Field selector of the pods ``status`` reads: running ones (state) and failed ones (reasons).
INTERESTING_PODS = "status.phase!=Pending,status.phase!=Succeeded"

_EXIT_MEANING = {1: "processing failure", 2: "bad input", 137: "killed", 143: "terminated"}


@dataclass
class TileStatus:
    """One row of ``gmrun k8s status``."""

    tile: str
    state: str
    job: str | None = None
    attempts: int = 0
    failures: int = 0
    reason: str = ""
    done: bool = False
    memory: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _last_line(message: str) -> str:
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


def pod_failure(pod: Manifest | PodView) -> str:
    """Why a failed pod failed: ``OOMKilled (exit 137)``, ``Error (exit 2: bad input): <log>``,
    ``DeadlineExceeded: ...``."""
    p = pod if isinstance(pod, PodView) else PodView.of(pod)
    if (term := p.terminated) is not None:
        code = term.exit_code
        meaning = _EXIT_MEANING.get(code) if code is not None else None
        text = f"{term.reason or 'Error'} (exit {code}{': ' + meaning if meaning else ''})"
        msg = _last_line(term.message)
        return f"{text}: {msg}" if msg else text
    if p.reason:
        return f"{p.reason}: {p.message}" if p.message else p.reason
    return "Failed"


def job_status(job: Manifest | JobView, pods: Sequence[Manifest | PodView]) -> TileStatus:
    """The state of one tile's Job, from its conditions and its pods."""
    j = job if isinstance(job, JobView) else JobView.of(job)
    views = [p if isinstance(p, PodView) else PodView.of(p) for p in pods]
    failed_pods = sorted((p for p in views if p.phase == "Failed"), key=lambda p: p.created)
    n_failed = max(j.failed, len(failed_pods))
    attempts = max(j.failed + j.succeeded + j.active, len(views))
    reason = pod_failure(failed_pods[-1]) if failed_pods else ""
    if "Complete" in j.conditions:
        state = "succeeded"
    elif "Failed" in j.conditions:
        state = "failed"
        why, message = j.conditions["Failed"]
        job_reason = why or "Failed"
        if job_reason == "DeadlineExceeded" or not reason:
            reason = f"{job_reason}: {message}".rstrip(": ")
        else:
            reason = f"{job_reason}; last attempt {reason}"
    elif j.suspended:
        state = "suspended"
    elif any(p.phase == "Running" for p in views):
        state = "running"
    else:
        state = "pending"
    tile = j.labels.get(LABEL_TILE, "")
    return TileStatus(
        tile, state, j.name or None, attempts, n_failed, reason, False, j.memory_limit
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
    # Pending pods say nothing the Job's status does not; Succeeded ones neither. Listing only
    # the others keeps the response small (a pod is ~5 kB of JSON), and both lists are fetched
    # at once so that the server's work overlaps our JSON decoding.
    with ThreadPoolExecutor(2) as pool:
        f_jobs = pool.submit(cluster.list_jobs, namespace, batch)
        f_pods = pool.submit(cluster.list_pods, namespace, batch, INTERESTING_PODS)
        jobs, pods = f_jobs.result(), f_pods.result()
    by_uid: dict[str, list[PodView]] = {}
    for p in map(PodView.of, pods):
        if p.owner_uid:
            by_uid.setdefault(p.owner_uid, []).append(p)
    rows: dict[str, TileStatus] = {}
    for j in map(JobView.of, jobs):
        row = job_status(j, by_uid.get(j.uid, []))
        if row.tile:
            rows[row.tile] = row
    if plan is not None:
        for tp in plan.tiles:
            rows.setdefault(
                str(tp.tile), TileStatus(str(tp.tile), "unsubmitted", memory=tp.resources.memory)
            )
        in_plan = {str(tp.tile) for tp in plan.tiles}
        done = done_tiles(plan, [tp.tile for tp in plan.tiles])
        for t in done:
            row = rows[str(t)]
            row.done = True
            if row.state in ("unsubmitted", "failed"):
                # outputs exist (computed earlier, or the Job was cleaned up by its TTL)
                row.state = "done"
        for key, row in rows.items():
            if key not in in_plan and not row.reason:
                row.reason = "not in the plan"
    return [rows[k] for k in sorted(rows, key=_tile_sort_key)]


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
