"""Submit and rerun: create a batch's Jobs, and replace chosen ones."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from runner.common.errors import UserInputError
from runner.fanout.k8s.client import Cluster
from runner.fanout.k8s.manifests import (
    LABEL_TILE,
    JobOptions,
    build_job,
    runnable_tiles,
    validate_batch_name,
)
from runner.fanout.k8s.objects import JobView, Manifest
from runner.fanout.k8s.policy import check_queue_server, fit_to_server, unsupported_fields
from runner.fanout.k8s.status import done_tiles
from runner.planner.grid import TileId
from runner.planner.plan import Plan, TilePlan


@dataclass
class SubmitResult:
    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    #: tiles the plan skips (``TilePlan.skip``: 0 observations): never a Job
    skipped_empty: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Job fields left out because the API server predates them, and its version
    dropped_fields: list[str] = field(default_factory=list)
    server: str = ""


#: ``progress(advance)`` is called after each Job is handled.
ProgressFn = Callable[[int], None]


def _noop(_: int) -> None:
    return None


def by_tile(jobs: Iterable[Manifest]) -> dict[str, JobView]:
    out: dict[str, JobView] = {}
    for j in map(JobView.of, jobs):
        if tile := j.labels.get(LABEL_TILE):
            out[tile] = j
    return out


def submit(
    cluster: Cluster,
    plan: Plan,
    batch: str,
    opts: JobOptions,
    *,
    max_active: int | None = None,
    workers: int = 16,
    poll_interval: float = 5.0,
    on_total: Callable[[int], None] = _noop,
    progress: ProgressFn = _noop,
) -> SubmitResult:
    """Create the Jobs of every tile that has work (not ``TilePlan.skip``, i.e. not empty) and
    has neither a Job in the batch nor outputs.

    Idempotent: a Job that exists (409) is left alone. With ``max_active``, at most that many Jobs
    of the batch are unfinished at once; the call waits and tops up until every tile is submitted.
    """
    validate_batch_name(batch)
    t0 = time.perf_counter()
    if max_active is not None and opts.kueue_queue:
        raise UserInputError(
            f"--max-active throttles from this terminal, the Kueue queue {opts.kueue_queue!r} "
            "from the cluster: use one (with a queue, submit creates every Job at once, "
            "suspended, and Kueue admits them as quota allows)"
        )
    major, minor, server = cluster.server_version()
    check_queue_server(opts.kueue_queue, (major, minor), server)
    res = SubmitResult(dropped_fields=unsupported_fields((major, minor)), server=server)
    if max_active is None:  # which tiles have a Job is all we need to know
        existing = by_tile(cluster.list_job_metadata(opts.namespace, batch))
    else:  # also whether they are finished
        existing = by_tile(cluster.list_jobs(opts.namespace, batch))
    runnable, empty = runnable_tiles(plan)
    res.skipped_empty.extend(str(tp.tile) for tp in empty)
    candidates = [tp for tp in runnable if str(tp.tile) not in existing]
    res.existed.extend(sorted(existing))
    done = done_tiles(plan, [tp.tile for tp in candidates])
    todo = [tp for tp in candidates if tp.tile not in done]
    res.skipped_done.extend(str(tp.tile) for tp in candidates if tp.tile in done)
    on_total(len(todo))
    lock = threading.Lock()

    def create(tp: TilePlan) -> None:
        made = cluster.create_job(
            fit_to_server(build_job(tp, batch, plan.url, opts), (major, minor))
        )
        with lock:
            (res.created if made else res.existed).append(str(tp.tile))
        progress(1)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        if max_active is None:
            list(pool.map(create, todo))
        else:
            active = sum(1 for j in existing.values() if not j.finished)
            queue = list(todo)
            while queue:
                slots = max_active - active
                if slots <= 0:
                    time.sleep(poll_interval)
                    jobs = map(JobView.of, cluster.list_jobs(opts.namespace, batch))
                    active = sum(1 for j in jobs if not j.finished)
                    continue
                now, queue = queue[:slots], queue[slots:]
                list(pool.map(create, now))
                active += len(now)
    res.seconds = time.perf_counter() - t0
    return res


def read_tile_ids(text: str) -> list[TileId]:
    """Tile ids separated by commas, whitespace or newlines; ``#`` starts a comment."""
    ids: list[TileId] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for part in re.split(r"[,\s]+", line):
            if part:
                ids.append(TileId.parse(part))
    return ids
