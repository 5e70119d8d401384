"""Submit and rerun: create a batch's Jobs, and replace chosen ones."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from runner.common.errors import UserInputError
from runner.fanout.k8s.client import Cluster
from runner.fanout.k8s.manifests import (
    ANN_MEMORY_BYTES,
    LABEL_TILE,
    JobOptions,
    build_job,
    validate_batch_name,
)
from runner.fanout.k8s.objects import JobView, Manifest
from runner.fanout.k8s.status import done_tiles
from runner.planner.grid import TileId
from runner.planner.plan import Plan, TilePlan
from runner.planner.sizing import Resources


@dataclass
class SubmitResult:
    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    seconds: float = 0.0


#: ``progress(advance)`` is called after each Job is handled.
ProgressFn = Callable[[int], None]


def _noop(_: int) -> None:
    return None


def _by_tile(jobs: Iterable[Manifest]) -> dict[str, JobView]:
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
    """Create the Jobs of every tile that has neither a Job in the batch nor outputs.

    Idempotent: a Job that exists (409) is left alone. With ``max_active``, at most that many Jobs
    of the batch are unfinished at once; the call waits and tops up until every tile is submitted.
    """
    validate_batch_name(batch)
    t0 = time.perf_counter()
    res = SubmitResult()
    if max_active is None:  # which tiles have a Job is all we need to know
        existing = _by_tile(cluster.list_job_metadata(opts.namespace, batch))
    else:  # also whether they are finished
        existing = _by_tile(cluster.list_jobs(opts.namespace, batch))
    candidates = [tp for tp in plan.tiles if str(tp.tile) not in existing]
    res.existed.extend(sorted(existing))
    done = done_tiles(plan, [tp.tile for tp in candidates])
    todo = [tp for tp in candidates if tp.tile not in done]
    res.skipped_done.extend(str(tp.tile) for tp in candidates if tp.tile in done)
    on_total(len(todo))
    lock = threading.Lock()

    def create(tp: TilePlan) -> None:
        made = cluster.create_job(build_job(tp, batch, plan.url, opts))
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


@dataclass
class RerunResult:
    deleted: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


def rerun(
    cluster: Cluster,
    plan: Plan,
    batch: str,
    opts: JobOptions,
    tiles: Sequence[TileId],
    *,
    overwrite: bool = False,
    memory_factor: float = 1.0,
    wait_timeout: float = 180.0,
    workers: int = 16,
    poll_interval: float = 0.5,
    keep_image: bool = False,
) -> RerunResult:
    """Delete the Jobs of ``tiles`` (waiting until they are gone) and create them again.

    A done tile is refused unless ``overwrite`` (the worker then gets ``--overwrite``). With
    ``memory_factor`` the memory of each new Job is that of its previous Job (or the plan's)
    times the factor, so repeated reruns after OOMKills keep growing. With ``keep_image`` a new
    Job uses the image of the Job it replaces.
    """
    validate_batch_name(batch)
    if memory_factor <= 0:
        raise UserInputError(f"--memory-factor must be positive, not {memory_factor}")
    tps = [plan.tile(t) for t in dict.fromkeys(tiles)]  # raises for tiles not in the plan
    done = done_tiles(plan, [tp.tile for tp in tps])
    if done and not overwrite:
        names = ", ".join(str(t) for t in sorted(done)[:10]) + (" …" if len(done) > 10 else "")
        raise UserInputError(
            f"{len(done)} tile(s) already done ({names}): rerun refuses to recompute them "
            "without --overwrite"
        )
    if overwrite:
        opts = replace(opts, overwrite=True)
    existing = _by_tile(cluster.list_jobs(opts.namespace, batch))
    res = RerunResult()
    to_delete = [existing[str(tp.tile)].name for tp in tps if str(tp.tile) in existing]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        gone = pool.map(lambda n: cluster.delete_job(opts.namespace, n), to_delete)
        res.deleted.extend(name for name, ok in zip(to_delete, gone, strict=True) if ok)
        # wait until the Jobs (Foreground: and their pods) are gone, so the names are free
        deadline = time.monotonic() + wait_timeout
        pending = set(to_delete)
        while pending:
            pending &= {JobView.of(j).name for j in cluster.list_jobs(opts.namespace, batch)}
            if not pending:
                break
            if time.monotonic() > deadline:
                raise UserInputError(
                    f"{len(pending)} Job(s) still being deleted after {wait_timeout:.0f}s "
                    f"(e.g. {sorted(pending)[0]}); is the garbage collector running?"
                )
            time.sleep(poll_interval)

        def create(tp: TilePlan) -> None:
            prev = existing.get(str(tp.tile))
            base = tp.resources
            if prev is not None and (prev.annotations.get(ANN_MEMORY_BYTES) or "").isdigit():
                base = Resources(int(prev.annotations[ANN_MEMORY_BYTES]), tp.resources.cpu)
            resources = base.scaled(memory_factor) if memory_factor != 1.0 else base
            o = opts
            if keep_image and prev is not None and prev.image:
                o = replace(opts, image=prev.image)
            cluster.create_job(build_job(tp, batch, plan.url, o, resources, memory_factor))
            res.created.append(str(tp.tile))

        list(pool.map(create, tps))
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
