"""How many compute threads a worker runs: its CPU budget, not the host's core count.

The budget is a whole number of threads (one per CPU core it may keep busy):

1. ``--threads N`` of ``gmrun run-tile`` (:func:`apply_threads`'s ``threads``), else
2. ``$GMRUN_THREADS``: a Job fills it from its own ``requests.cpu`` through the downward API
   (``divisor: 1`` rounds a request up: ``500m`` → 1, ``2`` → 2), else
3. this process's CPUs: the CPUs its affinity allows (``os.sched_getaffinity``: ``taskset``,
   cpusets), fewer when its cgroup has a CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
   ``cpu.cfs_period_us``: a quota of 1.5 CPUs is 2 threads). A pod with a CPU request and no
   limit has no quota: that is why the Job passes its request.

:func:`apply_threads` sets it for every pool of the worker, before numpy and numba are imported
(their thread counts are read once, at import): numba (``NUMBA_NUM_THREADS``), numpy's BLAS
(``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``), and ``$GMRUN_THREADS``
itself, which the Dask scheduler of the load, the reducers and the COG writer
(``GDAL_NUM_THREADS``) then read through :func:`pool_threads`. Only standard-library imports here.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runner.common.errors import UserInputError

#: the environment variable of the budget (a Job's downward API fills it)
ENV_VAR = "GMRUN_THREADS"
#: thread counts of numba and numpy's BLAS libraries, read when they are loaded
LIBRARY_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True, slots=True)
class CpuBudget:
    """A number of compute threads and where it comes from."""

    threads: int
    #: ``--threads``, ``GMRUN_THREADS``, ``cgroup CPU quota`` or ``CPU affinity``
    source: str


def parse_threads(text: str, source: str = ENV_VAR) -> int:
    """A positive whole number of threads; a one-line :class:`UserInputError` naming ``source``
    otherwise.

    >>> parse_threads(" 4 ")
    4
    """
    value = text.strip()
    if not value.isdigit() or int(value) < 1:
        raise UserInputError(
            f"{source}={text!r} is not a number of threads: use a whole number ≥ 1, e.g. 2"
        )
    return int(value)


def _quota_cpus(folder: Path, v2: bool) -> float | None:
    """The CPU quota set in one cgroup folder, in CPUs (quota / period), or None."""
    try:
        if v2:  # "max 100000" or "150000 100000"
            quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
        else:  # cfs_quota_us: -1 without a limit
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        q, p = int(quota), int(period or 100_000)
    except (OSError, ValueError):  # no such file, or "max"
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup, in CPUs (``1.5``), or None without one.

    The smallest quota of the cgroup and its ancestors (a parent's limit applies to its
    children), found from ``proc_cgroup``'s lines (``0::/path`` for v2; ``N:cpu,cpuacct:/path``
    for v1, mounted at ``cpu`` or ``cpu,cpuacct`` under ``cgroup_root``), and at the root
    itself (a container with its own cgroup namespace sees its cgroup there)."""
    folders: list[tuple[Path, bool]] = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = Path(path.strip().lstrip("/"))
        if controllers == "":
            bases = [(cgroup_root, True), (cgroup_root / "unified", True)]
        elif "cpu" in controllers.split(","):
            bases = [(cgroup_root / name, False) for name in ("cpu", "cpu,cpuacct", controllers)]
        else:
            continue
        for base, v2 in bases:
            folders += [(base / up, v2) for up in (rel, *rel.parents)]
    folders += [(cgroup_root, True), (cgroup_root / "cpu", False)]
    quotas = [q for f, v2 in dict.fromkeys(folders) if (q := _quota_cpus(f, v2)) is not None]
    return min(quotas) if quotas else None


def affinity_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), else the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def find_budget(
    env: Mapping[str, str] | None = None,
    *,
    cgroup_root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
    affinity: int | None = None,
) -> CpuBudget:
    """The budget from ``$GMRUN_THREADS`` (of ``env``, default ``os.environ``; empty is unset),
    else min(affinity, ceil(cgroup quota)); at least 1."""
    text = (os.environ if env is None else env).get(ENV_VAR, "")
    if text.strip():
        return CpuBudget(parse_threads(text), ENV_VAR)
    cpus = affinity_cpus() if affinity is None else affinity
    quota = cgroup_cpus(cgroup_root, proc_cgroup)
    if quota is not None and math.ceil(quota) < cpus:
        return CpuBudget(max(1, math.ceil(quota)), "cgroup CPU quota")
    return CpuBudget(max(1, cpus), "CPU affinity")


def cpu_budget(
    env: Mapping[str, str] | None = None,
    *,
    cgroup_root: Path = CGROUP_ROOT,
    proc_cgroup: Path = PROC_CGROUP,
    affinity: int | None = None,
) -> int:
    """The number of compute threads this process may run (see :func:`find_budget`)."""
    return find_budget(
        env, cgroup_root=cgroup_root, proc_cgroup=proc_cgroup, affinity=affinity
    ).threads


def pool_threads(configured: int | None = None) -> int:
    """The threads of one pool: ``configured`` (``input.threads``, ``algorithm.num_threads``),
    never more than the budget; the budget when not configured."""
    budget = cpu_budget()
    return budget if configured is None else max(1, min(configured, budget))


def apply_threads(threads: int | None = None) -> CpuBudget:
    """Set the budget (``threads``: ``--threads``, else :func:`find_budget`) for every thread
    pool of this process; call it before numpy or numba is imported. The variables it sets
    replace any already there: the budget is the one setting. If numba is already imported its
    pool cannot grow, but it is shrunk to the budget."""
    budget = CpuBudget(threads, "--threads") if threads is not None else find_budget()
    n = str(budget.threads)
    os.environ[ENV_VAR] = n  # what pool_threads() reads from now on, here and in children
    for var in LIBRARY_VARS:
        os.environ[var] = n
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(budget.threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    return budget


def share(budget: int, workers: int) -> int:
    """The threads of each of ``workers`` processes sharing ``budget``: at least 1.

    >>> share(8, 3), share(2, 4)
    (2, 1)
    """
    return max(1, budget // max(1, workers))
