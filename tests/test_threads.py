"""The worker's threads follow its CPU budget (:mod:`runner.common.threads`): the budget from
``--threads``, ``$GMRUN_THREADS``, the CPU affinity and the cgroup quota; and a real worker
whose busy threads are counted from ``/proc/<pid>/task/*/stat`` while it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner.common import threads as T
from runner.common.errors import UserInputError
from runner.fanout.local import worker_threads
from runner.fanout.worker_args import WorkerOptions, run_tile_args
from runner.planner.grid import TileId
from tests.conftest import Synth, assert_clean_error, gmrun, make_plan, start_run_tile

# --- the budget ----------------------------------------------------------------------------


def fake_cgroup(tmp_path: Path, proc_lines: str, files: dict[str, str]) -> dict[str, Path]:
    """A cgroup file system under ``tmp_path/cg`` (``files``: path → text) and a
    ``/proc/self/cgroup`` of ``proc_lines``: the keywords of :func:`T.cpu_budget`."""
    root = tmp_path / "cg"
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(proc_lines)
    return {"cgroup_root": root, "proc_cgroup": proc}


POD = "kubepods.slice/kubepods-burstable.slice/pod1"


@pytest.mark.parametrize(
    ("proc", "files", "threads", "source"),
    [
        # no quota: the affinity (8 CPUs); cgroup v2's "max" and v1's -1 are no limit
        ("0::/\n", {}, 8, "CPU affinity"),
        (f"0::/{POD}\n", {f"{POD}/cpu.max": "max 100000"}, 8, "CPU affinity"),
        (
            "4:cpu,cpuacct:/docker/c1\n",
            {"cpu/docker/c1/cpu.cfs_quota_us": "-1", "cpu/docker/c1/cpu.cfs_period_us": "100000"},
            8,
            "CPU affinity",
        ),
        # a quota of 1.5 CPUs is 2 threads; 0.5 is 1
        (f"0::/{POD}\n", {f"{POD}/cpu.max": "150000 100000"}, 2, "cgroup CPU quota"),
        (f"0::/{POD}\n", {f"{POD}/cpu.max": "50000 100000"}, 1, "cgroup CPU quota"),
        # a parent's quota applies to its children
        (
            f"0::/{POD}/ctr\n",
            {f"{POD}/cpu.max": "300000 100000", f"{POD}/ctr/cpu.max": "max 100000"},
            3,
            "cgroup CPU quota",
        ),
        # a container in its own cgroup namespace sees its cgroup at the root
        ("0::/\n", {"cpu.max": "400000 100000"}, 4, "cgroup CPU quota"),
        # cgroup v1, mounted as cpu,cpuacct
        (
            "11:pids:/docker/c1\n4:cpu,cpuacct:/docker/c1\n",
            {
                "cpu,cpuacct/docker/c1/cpu.cfs_quota_us": "250000",
                "cpu,cpuacct/docker/c1/cpu.cfs_period_us": "100000",
            },
            3,
            "cgroup CPU quota",
        ),
        # a quota above the affinity: the affinity
        (f"0::/{POD}\n", {f"{POD}/cpu.max": "1600000 100000"}, 8, "CPU affinity"),
        # an unreadable /proc/self/cgroup and garbage: the affinity
        ("garbage\n", {"cpu.max": "lots"}, 8, "CPU affinity"),
    ],
)
def test_budget_from_affinity_and_cgroup_quota(
    tmp_path: Path, proc: str, files: dict[str, str], threads: int, source: str
) -> None:
    where = fake_cgroup(tmp_path, proc, files)
    budget = T.find_budget({}, affinity=8, **where)
    assert (budget.threads, budget.source) == (threads, source)
    assert T.cpu_budget({}, affinity=8, **where) == threads


def test_budget_is_never_below_one(tmp_path: Path) -> None:
    where = fake_cgroup(tmp_path, "0::/\n", {"cpu.max": "1000 100000"})  # 0.01 CPU
    assert T.cpu_budget({}, affinity=8, **where) == 1
    assert T.cpu_budget({}, affinity=0, cgroup_root=tmp_path / "none") == 1


def test_env_wins_over_the_machine(tmp_path: Path) -> None:
    where = fake_cgroup(tmp_path, "0::/\n", {"cpu.max": "100000 100000"})
    assert T.find_budget({"GMRUN_THREADS": "6"}, affinity=2, **where) == T.CpuBudget(
        6, "GMRUN_THREADS"
    )
    # empty is unset (a kubelet-less executor may give "")
    assert T.find_budget({"GMRUN_THREADS": " "}, affinity=2, **where).source == "cgroup CPU quota"


def test_this_process_budget_is_at_most_its_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GMRUN_THREADS", raising=False)
    assert 1 <= T.cpu_budget() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("bad", ["0", "-2", "abc", "1.5", "2 cpus", "1e3", "500m"])
def test_bad_env_is_one_line_naming_it(bad: str) -> None:
    with pytest.raises(UserInputError) as e:
        T.cpu_budget({"GMRUN_THREADS": bad}, affinity=4)
    msg = str(e.value)
    assert "GMRUN_THREADS" in msg and repr(bad) in msg and "\n" not in msg


@pytest.fixture
def numba_threads_kept() -> Iterator[None]:
    """numba's thread count as it was (apply_threads sets it when numba is imported)."""
    numba = sys.modules.get("numba")
    before = numba.get_num_threads() if numba else None
    yield
    if numba:
        numba.set_num_threads(before)


@pytest.mark.usefixtures("numba_threads_kept")
def test_apply_threads_sets_every_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GMRUN_THREADS", *T.LIBRARY_VARS):
        monkeypatch.setenv(var, "64")
    budget = T.apply_threads(3)
    assert budget == T.CpuBudget(3, "--threads")
    assert {v: os.environ[v] for v in ("GMRUN_THREADS", *T.LIBRARY_VARS)} == dict.fromkeys(
        ("GMRUN_THREADS", *T.LIBRARY_VARS), "3"
    )
    # the pools then read it: a configured count is capped by the budget
    assert (T.pool_threads(), T.pool_threads(2), T.pool_threads(8)) == (3, 2, 3)
    monkeypatch.setenv("GMRUN_THREADS", "5")
    assert T.apply_threads() == T.CpuBudget(5, "GMRUN_THREADS")


def test_local_workers_share_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMRUN_THREADS", "8")
    assert [worker_threads(w) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    args = run_tile_args("p", TileId(1, 2), WorkerOptions(threads=3))
    assert args[-2:] == ["--threads", "3"]
    assert "--threads" not in run_tile_args("p", TileId(1, 2))


def test_cli_refuses_a_bad_budget(tmp_path: Path) -> None:
    proc = gmrun(
        "run-tile", "--plan", str(tmp_path), "--tile", "x001y001", env={"GMRUN_THREADS": "two"}
    )
    assert_clean_error(proc, "GMRUN_THREADS='two'")
    proc = gmrun("run-tile", "--plan", str(tmp_path), "--tile", "x001y001", "--threads", "0")
    assert proc.returncode == 2 and "--threads" in proc.stderr and "Traceback" not in proc.stderr


# --- a real worker: its busy threads, counted from /proc -------------------------------------

INTERVAL = 0.02  #: seconds between samples
#: A thread is busy in a window when it wanted a CPU (ran, or waited on a run queue for one)
#: more than this share of it.
BUSY = 0.6
#: Each thread's busy seconds so far: ``schedstat``'s ns on a CPU + ns waiting on a run queue
#: for one (a thread ready to run is busy whether or not a core is free: other load on the
#: machine does not hide it), else ``stat``'s utime + stime (CPU time only). Either reads a
#: little off: schedstat adds a running thread's time at each scheduler tick (≤ 10 ms) and a
#: waiting one's when it gets a CPU (a few ms); stat floors utime and stime to 10 ms ticks each.
#: So a thread's busy time over a window reads less than ~20 ms off, and two threads taking
#: turns (a Dask worker and the scheduler's thread, say) read < window + 40 ms together. Over a
#: window of 0.2 s that is under 1.2 windows: they cannot both read > 60 % of it, and two busy
#: threads in one window are two threads that really wanted a CPU at the same time.
WINDOW = 0.2
SCHEDSTAT = os.path.exists(f"/proc/self/task/{os.getpid()}/schedstat")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def busy_seconds(pid: int) -> dict[int, float]:
    """Each thread of ``pid``: the seconds it has been busy (:data:`SCHEDSTAT`)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if SCHEDSTAT:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    run_ns, wait_ns = f.read().split()[:2]
                out[int(tid)] = (int(run_ns) + int(wait_ns)) / 1e9
            else:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15
        except OSError:  # the thread ended
            continue
    return out


@dataclass
class BusyThreads:
    """Samples of a process's per-thread busy time, every :data:`INTERVAL` s until it ends."""

    pid: int
    samples: list[tuple[float, dict[int, float]]] = field(default_factory=list)

    def run(self, proc: subprocess.Popen[str]) -> None:
        while proc.poll() is None:
            t = time.monotonic()
            try:
                busy = busy_seconds(self.pid)
            except OSError:  # it has just ended
                return
            self.samples.append((t, busy))
            time.sleep(max(0.0, INTERVAL - (time.monotonic() - t)))

    def busy_counts(self) -> list[int]:
        """For each window of :data:`WINDOW` s (sliding by one sample), how many threads were
        busy more than :data:`BUSY` of it."""
        counts, j = [], 0
        for t, now in self.samples:
            while j + 1 < len(self.samples) and t - self.samples[j + 1][0] >= WINDOW:
                j += 1
            t0, before = self.samples[j]
            if t - t0 < WINDOW:
                continue
            limit = BUSY * (t - t0)
            counts.append(sum(v - before.get(tid, 0.0) > limit for tid, v in now.items()))
        return counts


@dataclass
class WorkerRun:
    max_busy: int
    windows: int  #: windows measured
    busy_windows: int  #: windows with a busy thread
    max_threads: int  #: the most threads the worker had at once
    log: list[dict]


def run_worker(synth: Synth, tmp_path: Path, *args: str, env: dict[str, str]) -> WorkerRun:
    """``gmrun run-tile`` of one tile of the session's catalog, watched from /proc."""
    cfg = synth.layout.config
    tile = synth.layout.tiles[0]
    plan = make_plan(synth, tmp_path / "plan", cfg, [tile])
    proc = start_run_tile(plan, tile, "--output", str(tmp_path / "out"), *args, env=env)
    assert proc.stderr is not None
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True)
    reader.start()
    watch = BusyThreads(proc.pid)
    watch.run(proc)
    assert proc.wait(timeout=600) == 0, "".join(stderr)
    reader.join(timeout=10)
    log = [json.loads(line) for line in stderr if line.startswith("{")]
    counts = watch.busy_counts()
    return WorkerRun(
        max(counts, default=0),
        len(counts),
        sum(c > 0 for c in counts),
        max(len(s) for _, s in watch.samples),
        log,
    )


def budget_line(run: WorkerRun) -> dict:
    (line,) = [r for r in run.log if "threads" in r]
    assert run.log.index(line) == 0, "the budget is the worker's first line"
    return line


@pytest.mark.slow
def test_worker_runs_at_most_its_budget_of_busy_threads(
    synth_catalog: Synth, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GMRUN_THREADS", *T.LIBRARY_VARS)}
    runs = {
        "GMRUN_THREADS=1": run_worker(
            synth_catalog, tmp_path / "env1", env={**env, "GMRUN_THREADS": "1"}
        ),
        # the flag wins over the environment
        "--threads 1": run_worker(
            synth_catalog, tmp_path / "flag1", "--threads", "1", env={**env, "GMRUN_THREADS": "2"}
        ),
        "GMRUN_THREADS=2": run_worker(
            synth_catalog, tmp_path / "env2", env={**env, "GMRUN_THREADS": "2"}
        ),
    }
    summary = {k: (r.max_busy, r.busy_windows, r.windows, r.max_threads) for k, r in runs.items()}
    print("max busy threads, windows with one, windows, most threads:", summary)
    for name, run in runs.items():
        n = int(name[-1])
        line = budget_line(run)
        assert (line["threads"], line["threads_source"]) == (
            n,
            "--threads" if name.startswith("--") else "GMRUN_THREADS",
        ), line
        assert run.busy_windows > 10, f"{name}: the worker was never seen busy: {summary}"
        assert run.max_busy <= n, f"{name}: more than {n} busy threads at once: {summary}"
    # the measure can see more than one: two threads do run at once with a budget of 2
    assert runs["GMRUN_THREADS=2"].max_busy == 2, summary
