"""``gmrun k8s status --watch``: a batch's tiles followed by watches on its Jobs and pods.

One list of each (as :func:`~runner.fanout.k8s.status.batch_status`), then two server-side
watches from the lists' ``resourceVersion``, each in a thread feeding one queue: the state is
kept in memory and a tile's row is computed again when its Job or one of its pods changes —
nothing is polled. A tile that turns ``succeeded`` or ``failed`` has its done marker checked
(that tile only). An expired version (410 Gone) or a lost connection lists again. It ends when
the batch *settles*: no Job of it is pending, running or suspended.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runner.common.errors import GmrunError
from runner.fanout.k8s.client import Cluster, KubeApiError
from runner.fanout.k8s.objects import JobView, PodView
from runner.fanout.k8s.status import UNSETTLED, TileStatus, done_tiles, tile_rows
from runner.planner.grid import TileId
from runner.planner.plan import Plan

#: ``on_change(before, after)`` for each tile whose row changed (``before`` None: a new row)
ChangeFn = Callable[[TileStatus | None, TileStatus], None]
#: what the watch threads hand the main thread: ``(kind, event type, object)`` or their error
_Queue = queue.Queue[tuple[str, str, dict[str, Any]] | BaseException]


@dataclass
class _State:
    jobs: dict[str, JobView] = field(default_factory=dict)  #: by uid
    pods: dict[str, PodView] = field(default_factory=dict)  #: by pod uid
    done: set[TileId] = field(default_factory=set)
    versions: dict[str, str] = field(default_factory=dict)  #: kind -> resourceVersion


class BatchWatch:
    """The tiles of one batch, kept current by watching its Jobs and pods."""

    def __init__(self, cluster: Cluster, namespace: str, batch: str, plan: Plan | None) -> None:
        self.cluster, self.namespace, self.batch, self.plan = cluster, namespace, batch, plan
        self.state = _State()
        self.events: _Queue = queue.Queue()
        self._stop = threading.Event()
        self.relists = 0  #: how often the state was listed again (410, lost connection)

    # -- state -------------------------------------------------------------------------

    def _list(self) -> None:
        jm: dict[str, str] = {}
        pm: dict[str, str] = {}
        jobs = self.cluster.list_jobs(self.namespace, self.batch, meta=jm)
        pods = self.cluster.list_pods(self.namespace, self.batch, meta=pm)
        st = _State()
        st.jobs = {v.uid: v for v in map(JobView.of, jobs)}
        st.pods = {str((p.get("metadata") or {}).get("uid")): PodView.of(p) for p in pods}
        st.versions = {"jobs": jm.get("resourceVersion", ""), "pods": pm.get("resourceVersion", "")}
        if self.plan is not None:
            st.done = done_tiles(self.plan, [tp.tile for tp in self.plan.tiles if not tp.skip])
        self.state = st

    def rows(self) -> list[TileStatus]:
        return tile_rows(
            self.state.jobs.values(), self.state.pods.values(), self.plan, self.state.done
        )

    @staticmethod
    def settled(rows: list[TileStatus]) -> bool:
        return not any(r.state in UNSETTLED for r in rows)

    def _apply(self, kind: str, kind_event: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        if rv := meta.get("resourceVersion"):
            self.state.versions[kind] = str(rv)
        if kind_event == "BOOKMARK":
            return
        uid = str(meta.get("uid") or "")
        if kind == "jobs":
            if kind_event == "DELETED":
                self.state.jobs.pop(uid, None)
            else:
                view = JobView.of(obj)
                self.state.jobs[uid] = view
                tile = view.labels.get("gmrun.io/tile")
                if view.finished and tile and self.plan is not None:
                    tid = TileId.parse(tile)
                    if tid not in self.state.done and done_tiles(self.plan, [tid]):
                        self.state.done.add(tid)
        elif kind_event == "DELETED":
            self.state.pods.pop(uid, None)
        else:
            self.state.pods[uid] = PodView.of(obj)

    # -- watches -----------------------------------------------------------------------

    def _watch(self, kind: str, version: str, events: _Queue, stop: threading.Event) -> None:
        try:
            for ev_type, obj in self.cluster.watch(kind, self.namespace, self.batch, version):
                if stop.is_set():
                    return
                events.put((kind, ev_type, obj))
            events.put((kind, "END", {}))  # the server ended it (its timeout): resume
        except BaseException as e:  # to the main thread, which relists or gives up
            events.put(e)

    def _start(self, kind: str) -> None:
        version = self.state.versions.get(kind, "")
        args = (kind, version, self.events, self._stop)
        threading.Thread(target=self._watch, args=args, daemon=True).start()

    def run(self, on_change: ChangeFn, timeout: float | None = None) -> list[TileStatus]:
        """Follow the batch until it settles (or ``timeout`` seconds); the rows at the end."""
        self._list()
        rows = self.rows()
        before = {r.tile: r for r in rows}
        end = None if timeout is None else time.monotonic() + timeout
        if self.settled(rows):
            return rows
        for kind in ("jobs", "pods"):
            self._start(kind)
        try:
            while True:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return self.rows()
                try:
                    item = self.events.get(timeout=left)
                except queue.Empty:
                    return self.rows()
                if isinstance(item, BaseException):
                    if not isinstance(item, KubeApiError | GmrunError | OSError):
                        raise item
                    if isinstance(item, KubeApiError) and item.status not in (410, 0, 500, 503):
                        raise item
                    self._relist()  # too old a version, or the connection dropped
                    continue
                kind, ev_type, obj = item
                if ev_type == "END":
                    self._start(kind)
                    continue
                self._apply(kind, ev_type, obj)
                rows = self.rows()
                for r in rows:
                    old = before.get(r.tile)
                    if old is None or _changed(old, r):
                        on_change(old, r)
                before = {r.tile: r for r in rows}
                if self.settled(rows):
                    # the two watches are not ordered with each other (a Job's Failed may come
                    # before its pod's last change): end with one consistent list
                    self._list()
                    final = self.rows()
                    for r in final:
                        old = before.get(r.tile)
                        if old is None or _changed(old, r):
                            on_change(old, r)
                    if self.settled(final):
                        return final
                    before = {r.tile: r for r in final}
        finally:
            self._stop.set()

    def _relist(self) -> None:
        self.relists += 1
        time.sleep(min(5.0, 0.5 * self.relists))
        self._stop.set()  # the old watch threads end at their next event
        self._stop = threading.Event()
        self.events = queue.Queue()
        self._list()
        for kind in ("jobs", "pods"):
            self._start(kind)


def _changed(a: TileStatus, b: TileStatus) -> bool:
    """A change worth a line: state, attempts, reason, or why a pod waits."""
    return (a.state, a.attempts, a.reason, a.message, a.done) != (
        b.state,
        b.attempts,
        b.reason,
        b.message,
        b.done,
    )
