"""The embedded default: run a plan's tiles on this machine, one subprocess per tile.

Each tile runs exactly as a Kubernetes Job would run it (``gmrun run-tile --plan URL --tile ID``
in its own process), so a crash, an OOM kill or a leak in one tile cannot affect the others, and
the peak memory of each tile is measured on its own (``wait4``'s rusage).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from runner.common import store
from runner.common.errors import GmrunError
from runner.common.threads import cpu_budget, share
from runner.fanout.worker_args import WorkerOptions, run_tile_args
from runner.planner.grid import TileId
from runner.planner.plan import Plan
from runner.worker.outputs import TileOutputs


@dataclass
class TileRun:
    """Outcome of one tile: ``done``, ``skipped`` (already done), ``empty``, ``failed`` or
    ``stopped`` (not started: the run was stopped by a signal)."""

    tile: TileId
    status: str
    seconds: float = 0.0
    exit_code: int = 0
    message: str = ""
    peak_rss_bytes: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


def worker_command(plan_url: str, tile: TileId, opts: WorkerOptions = WorkerOptions()) -> list[str]:
    """The tile's worker process: this Python running ``gmrun run-tile …``
    (:func:`runner.fanout.worker_args.run_tile_args`, as a Job's container runs it)."""
    return [sys.executable, "-m", "runner.cli", *run_tile_args(plan_url, tile, opts)]


class Workers:
    """The worker processes of a local run: a stop signal (SIGTERM, SIGINT) given to the run is
    passed on to each of them, and no new one starts after it, so ``gmrun run`` stopped by a
    scheduler or Ctrl-C leaves no orphan writing tiles. Each worker then says in its log where
    it stopped (:meth:`runner.worker.deadline.Deadline.watch_signals`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[str]] = set()
        self.stopped_by: int | None = None  #: the signal the run was stopped by

    def start(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[str] | None:
        """A new worker, or None once the run is stopping."""
        with self._lock:
            if self.stopped_by is not None:
                return None
            proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
            )
            self._live.add(proc)
            return proc

    def done(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._live.discard(proc)

    def stop(self, signum: int) -> None:
        """Pass ``signum`` on to every live worker; start no more."""
        with self._lock:
            if self.stopped_by is None:
                self.stopped_by = signum
            for proc in self._live:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    @contextlib.contextmanager
    def forwarding_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT of this process go to :meth:`stop` while in the block (main
        thread only; elsewhere nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        sigs = (signal.SIGTERM, signal.SIGINT)
        old = {s: signal.signal(s, lambda n, _f: self.stop(n)) for s in sigs}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def run_tile_process(
    plan_url: str,
    tile: TileId,
    opts: WorkerOptions = WorkerOptions(),
    env: dict[str, str] | None = None,
    workers: Workers | None = None,
) -> TileRun:
    """Run one tile in a child process; parse its JSON log for the outcome."""
    t0 = time.perf_counter()
    pool = workers or Workers()
    proc = pool.start(worker_command(plan_url, tile, opts), {**os.environ, **(env or {})})
    if proc is None:
        return TileRun(tile, "stopped", message="not started: the run was stopped")
    assert proc.stderr is not None
    lines = proc.stderr.read().splitlines()
    _, status, usage = os.wait4(proc.pid, 0)
    pool.done(proc)
    proc.returncode = os.waitstatus_to_exitcode(status)
    run = TileRun(
        tile,
        "failed",
        round(time.perf_counter() - t0, 2),
        proc.returncode,
        peak_rss_bytes=usage.ru_maxrss * 1024,
    )
    for line in lines:
        if line.startswith("error: "):
            run.message = line[len("error: ") :]
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if line.strip():
                run.message = run.message or line.strip()
            continue
        if rec.get("status") in ("done", "skipped"):
            run.status = rec["status"]
            run.metrics = rec.get("metrics", {})
        if rec.get("level") == "error":
            run.message = rec.get("msg", run.message)
        if rec.get("status") == "empty":
            run.status = "empty"
    # wait4's ru_maxrss includes the parent's image before exec; the worker's own VmHWM is exact.
    if run.metrics.get("peak_rss_bytes"):
        run.peak_rss_bytes = int(run.metrics["peak_rss_bytes"])
    if proc.returncode != 0 and run.status != "empty":
        run.status = "failed"
        run.message = run.message or f"exit code {proc.returncode}"
    return run


def worker_threads(workers: int) -> int:
    """The threads of each of ``workers`` tiles running here at once: this process's CPU budget
    (``$GMRUN_THREADS``, else its CPU affinity / cgroup quota), shared, at least 1 each."""
    return share(cpu_budget(), workers)


def run_local(
    plan: Plan,
    tiles: Iterable[TileId] | None = None,
    *,
    workers: int = 1,
    options: WorkerOptions = WorkerOptions(),
    console: Console | None = None,
) -> list[TileRun]:
    """Run tiles (default: all of the plan), ``workers`` at a time; done tiles are skipped.

    Each worker gets ``options.threads`` threads, by default (with more than one worker) its
    share of this process's CPU budget (:func:`worker_threads`); one worker finds the budget
    itself, as this process would."""
    console = console or Console(stderr=True)
    if options.threads is None and workers > 1:
        options = dataclasses.replace(options, threads=worker_threads(workers))
    wanted = (
        [plan.tile(t).tile for t in tiles] if tiles is not None else [tp.tile for tp in plan.tiles]
    )
    results: dict[TileId, TileRun] = {}
    todo = []
    for t in wanted:
        if (
            not options.overwrite
            and TileOutputs.of(plan.config, t, plan.period, options.location).is_done()
        ):
            results[t] = TileRun(t, "skipped", message="already done")
        else:
            todo.append(t)
    with Progress(
        "[bold]tiles",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        "{task.description}",
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("", total=len(wanted), completed=len(wanted) - len(todo))
        procs = Workers()
        with procs.forwarding_signals(), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {
                pool.submit(run_tile_process, plan.url, t, options, None, procs): t for t in todo
            }
            for fut in futures:
                r = fut.result()
                results[r.tile] = r
                bar.update(task, advance=1, description=f"{r.tile} {r.status}")
        stopped_by = procs.stopped_by
    runs = [results[t] for t in wanted]
    try:
        record_runs(plan, [r for r in runs if r.status != "stopped"])
    except (OSError, store.StorageError) as e:  # a read-only plan folder: the run still counts
        console.print(f"[yellow]warning: could not record the runs beside the plan: {e}")
    if stopped_by is not None:
        raise RunStopped(stopped_by, runs)
    return runs


class RunStopped(GmrunError):
    """A local run ended by SIGTERM/SIGINT once its workers had stopped (``runs``: every tile's
    outcome; those never started are ``stopped``). Exit code 128 + the signal, as a process
    ended by it."""

    def __init__(self, signum: int, runs: list[TileRun]) -> None:
        n = sum(r.status == "stopped" for r in runs)
        super().__init__(
            f"stopped by {signal.Signals(signum).name}: the running tiles were stopped too, "
            f"{n} not started; run the same command again to go on"
        )
        self.exit_code = 128 + signum
        self.signum, self.runs = signum, runs


#: the outcome of each tile's last local run, beside ``plan.json`` (read by ``gmrun collect``)
RUN_RECORD = "runs/local.json"


def record_runs(plan: Plan, runs: Iterable[TileRun]) -> None:
    """Merge the outcomes of ``runs`` (skipped ones left out) into the plan's :data:`RUN_RECORD`."""
    url = store.join(plan.folder, RUN_RECORD)
    known = recorded_runs(plan)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for r in runs:
        if r.status == "skipped":
            continue
        known[str(r.tile)] = {
            "status": r.status,
            "exit_code": r.exit_code,
            "message": r.message,
            "seconds": r.seconds,
            "peak_rss_bytes": r.peak_rss_bytes,
            "finished": stamp,
        }
    doc = {"tiles": dict(sorted(known.items()))}
    store.write_bytes(url, json.dumps(doc, indent=1).encode(), "application/json")


def recorded_runs(plan: Plan) -> dict[str, dict[str, Any]]:
    """The plan's :data:`RUN_RECORD` by tile id (empty when there is none or it is unreadable)."""
    try:
        doc = json.loads(store.read_bytes(store.join(plan.folder, RUN_RECORD)))
    except (FileNotFoundError, ValueError):
        return {}
    tiles = doc.get("tiles") if isinstance(doc, dict) else None
    return (
        {k: v for k, v in tiles.items() if isinstance(v, dict)} if isinstance(tiles, dict) else {}
    )


def summary_table(runs: list[TileRun]) -> Table:
    table = Table(title="gmrun: tiles")
    for col in ("tile", "status", "obs", "seconds", "peak RSS", "message"):
        table.add_column(col, justify="right" if col in ("obs", "seconds", "peak RSS") else "left")
    colour = {
        "done": "green",
        "skipped": "cyan",
        "empty": "yellow",
        "failed": "red",
        "stopped": "magenta",
    }
    for r in runs:
        rss = f"{r.peak_rss_bytes / 2**20:.0f} MiB" if r.peak_rss_bytes else ""
        obs = str(r.metrics.get("observations", "")) if r.metrics else ""
        table.add_row(
            str(r.tile),
            f"[{colour.get(r.status, 'white')}]{r.status}",
            obs,
            f"{r.seconds:.1f}" if r.seconds else "",
            rss,
            r.message,
        )
    return table
