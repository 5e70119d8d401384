"""Rerun: replace chosen tiles' Jobs, with more memory only where the last attempt ran out of it.

:func:`plan_rerun` decides, for each tile, what its new Job gets (:class:`RerunChange`: memory,
image) and refuses the whole rerun when a tile would exceed the memory cap — before anything is
touched, so ``--dry-run`` shows exactly what :func:`rerun` then does. :func:`rerun` saves each
failed attempt's termination message and log tail (:mod:`~runner.fanout.k8s.attempts`) before it
deletes the Job (its pods, and their logs, go with it), waits until the names are free and
creates the new Jobs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from runner.common.errors import UserInputError
from runner.fanout.k8s.attempts import save_failed_attempts
from runner.fanout.k8s.batch import by_tile
from runner.fanout.k8s.client import Cluster
from runner.fanout.k8s.manifests import ANN_MEMORY_BYTES, JobOptions, build_job, job_name
from runner.fanout.k8s.objects import JobView
from runner.fanout.k8s.policy import check_queue_server, fit_to_server, unsupported_fields
from runner.fanout.k8s.status import TileStatus, done_tiles
from runner.planner.grid import TileId
from runner.planner.plan import Plan, TilePlan
from runner.planner.sizing import Resources


@dataclass(frozen=True)
class RerunChange:
    """What a rerun does to one tile."""

    tile: str
    job: str
    reason: str  #: the last attempt's reason (``OOMKilled`` grows the memory), "" if none
    replaces: bool  #: a Job of the tile exists and is deleted first
    memory_before: str
    memory_after: str
    memory_factor: float  #: memory_after / memory_before (1 unless OOMKilled)
    memory_bytes: int  #: memory_after in bytes
    image_before: str
    image_after: str

    def line(self) -> str:
        """``x017y156  gm-2023a-x017y156  OOMKilled  replace  memory 16Gi -> 24Gi  image …``."""
        mem = (
            f"memory {self.memory_before} -> {self.memory_after}"
            if self.memory_before != self.memory_after
            else f"memory {self.memory_after}"
        )
        img = (
            f"image {self.image_before} -> {self.image_after}"
            if self.image_before and self.image_before != self.image_after
            else f"image {self.image_after}"
        )
        what = "replace" if self.replaces else "create"
        return f"{self.tile}  {self.job}  {self.reason or '-'}  {what}  {mem}  {img}"


@dataclass
class RerunResult:
    changes: list[RerunChange] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    #: chosen tiles the plan skips (0 observations): left alone, never a Job
    skipped_empty: list[str] = field(default_factory=list)
    #: where the failed attempts' messages and log tails were saved
    saved: list[str] = field(default_factory=list)
    #: Job fields left out because the API server predates them, and its version
    dropped_fields: list[str] = field(default_factory=list)
    server: str = ""
    dry_run: bool = False


def _memory_text(n: int) -> str:
    return Resources(n, "").memory


def plan_rerun(
    plan: Plan,
    batch: str,
    opts: JobOptions,
    tiles: Sequence[TilePlan],
    existing: Mapping[str, JobView],
    rows: Mapping[str, TileStatus],
    *,
    memory_factor: float,
    max_memory: int | None,
    keep_image: bool,
) -> list[RerunChange]:
    """The change of each tile; a :class:`UserInputError` naming the tiles whose grown memory
    would exceed ``max_memory`` (bytes), before anything is changed."""
    changes: list[RerunChange] = []
    over: list[str] = []
    for tp in tiles:
        t = str(tp.tile)
        prev = existing.get(t)
        row = rows.get(t)
        reason = row.reason if row is not None else ""
        base = tp.resources.memory_bytes
        if prev is not None and (prev.annotations.get(ANN_MEMORY_BYTES) or "").isdigit():
            base = int(prev.annotations[ANN_MEMORY_BYTES])
        factor = memory_factor if reason == "OOMKilled" else 1.0
        after = Resources(base, tp.resources.cpu).scaled(factor).memory_bytes
        if max_memory is not None and after > max_memory:
            over.append(f"{t} ({_memory_text(base)} x{factor:g} = {_memory_text(after)})")
        image = prev.image if keep_image and prev is not None and prev.image else opts.image
        changes.append(
            RerunChange(
                tile=t,
                job=job_name(batch, tp.tile),
                reason=reason,
                replaces=prev is not None,
                memory_before=_memory_text(base),
                memory_after=_memory_text(after),
                memory_factor=factor,
                memory_bytes=after,
                image_before=prev.image if prev is not None else "",
                image_after=image,
            )
        )
    if over and max_memory is not None:
        raise UserInputError(
            f"{len(over)} tile(s) would get more memory than --max-memory "
            f"{_memory_text(max_memory)} (kubernetes.max_memory): {', '.join(over[:5])}"
            + (" …" if len(over) > 5 else "")
            + "; a pod above the largest node's memory would pend forever: raise the cap, or "
            "plan these tiles with row bands (gmrun plan --max-memory)"
        )
    return changes


def rerun(
    cluster: Cluster,
    plan: Plan,
    batch: str,
    opts: JobOptions,
    tiles: Sequence[TileId],
    rows: Mapping[str, TileStatus],
    *,
    overwrite: bool = False,
    memory_factor: float = 1.5,
    max_memory: int | None = None,
    dry_run: bool = False,
    wait_timeout: float = 180.0,
    workers: int = 16,
    poll_interval: float = 0.5,
    keep_image: bool = False,
) -> RerunResult:
    """Delete the Jobs of ``tiles`` (waiting until they are gone) and create them again.

    ``rows`` are the batch's status rows (their ``reason``): a tile whose last attempt was
    ``OOMKilled`` gets ``memory_factor`` × the memory of its previous Job (else the plan's), the
    others the same memory; above ``max_memory`` the rerun is refused. A done tile is refused
    unless ``overwrite`` (the worker then gets ``--overwrite``). With ``keep_image`` a new Job
    uses the image of the Job it replaces. ``dry_run``: the changes, nothing touched.
    """
    if memory_factor < 1:
        raise UserInputError(f"--memory-factor must be at least 1, not {memory_factor:g}")
    chosen = [plan.tile(t) for t in dict.fromkeys(tiles)]  # raises for tiles not in the plan
    tps = [tp for tp in chosen if not tp.skip]
    done = done_tiles(plan, [tp.tile for tp in tps])
    if done and not overwrite:
        names = ", ".join(str(t) for t in sorted(done)[:10]) + (" …" if len(done) > 10 else "")
        raise UserInputError(
            f"{len(done)} tile(s) already done ({names}): rerun refuses to recompute them "
            "without --overwrite"
        )
    if overwrite:
        opts = replace(opts, overwrite=True)
    existing = by_tile(cluster.list_jobs(opts.namespace, batch))
    major, minor, server = cluster.server_version()
    check_queue_server(opts.kueue_queue, (major, minor), server)
    res = RerunResult(
        skipped_empty=[str(tp.tile) for tp in chosen if tp.skip],
        dropped_fields=unsupported_fields((major, minor)),
        server=server,
        dry_run=dry_run,
    )
    res.changes = plan_rerun(
        plan,
        batch,
        opts,
        tps,
        existing,
        rows,
        memory_factor=memory_factor,
        max_memory=max_memory,
        keep_image=keep_image,
    )
    if dry_run:
        return res
    old = [existing[c.tile] for c in res.changes if c.replaces]
    res.saved = save_failed_attempts(cluster, plan, batch, opts.namespace, old)
    to_delete = [j.name for j in old]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        gone = pool.map(lambda n: cluster.delete_job(opts.namespace, n), to_delete)
        res.deleted.extend(name for name, ok in zip(to_delete, gone, strict=True) if ok)
        _wait_gone(cluster, opts.namespace, batch, set(to_delete), wait_timeout, poll_interval)
        by_id = {str(tp.tile): tp for tp in tps}

        def create(c: RerunChange) -> None:
            tp = by_id[c.tile]
            o = replace(opts, image=c.image_after)
            mem = Resources(c.memory_bytes, tp.resources.cpu)
            job = build_job(tp, batch, plan.url, o, mem, c.memory_factor)
            cluster.create_job(fit_to_server(job, (major, minor)))
            res.created.append(c.tile)

        list(pool.map(create, res.changes))
    return res


def _wait_gone(
    cluster: Cluster, namespace: str, batch: str, names: set[str], timeout: float, every: float
) -> None:
    """Until the Jobs (Foreground: and their pods) are gone, so the names are free."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        pending &= {JobView.of(j).name for j in cluster.list_jobs(namespace, batch)}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise UserInputError(
                f"{len(pending)} Job(s) still being deleted after {timeout:.0f}s "
                f"(e.g. {sorted(pending)[0]}); is the garbage collector running?"
            )
        time.sleep(every)
