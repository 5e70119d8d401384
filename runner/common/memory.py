"""How much memory this process can really use: its cgroup's limit, else the available RAM.

Outside a Kubernetes pod (where the Job's limit is the plan's size class), the worker sizes its
row bands to this instead of assuming the tile fits: a 96 km tile on a 24 GiB laptop is cut into
bands, not ended by ``MemoryError: Unable to allocate 68.7 GiB``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: a cgroup v1 "no limit" is a page-rounded 2**63; anything this large means none
_UNLIMITED = 2**60
#: the share of the usable memory a budget takes (the rest: the page cache, other processes)
BUDGET_SHARE = 0.85


@dataclass(frozen=True, slots=True)
class UsableMemory:
    """The memory a process can use, bytes, and where the figure comes from."""

    bytes: int
    source: str  #: ``cgroup limit`` or ``available RAM``


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), bytes, or None without one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2 unified hierarchy
            candidates.append(Path("/sys/fs/cgroup", path.lstrip("/"), "memory.max"))
        elif "memory" in controllers.split(","):
            candidates.append(
                Path("/sys/fs/cgroup/memory", path.lstrip("/"), "memory.limit_in_bytes")
            )
    candidates += [Path("/sys/fs/cgroup/memory.max")]
    for p in candidates:
        try:
            text = p.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _UNLIMITED:
            return int(text)
    return None


def _available_ram() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo``, bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def usable_memory() -> UsableMemory | None:
    """The smaller of the cgroup limit and the available RAM, or None when neither is known."""
    found = [
        UsableMemory(v, s)
        for v, s in ((_cgroup_limit(), "cgroup limit"), (_available_ram(), "available RAM"))
        if v
    ]
    return min(found, key=lambda u: u.bytes) if found else None


def in_pod() -> bool:
    """True inside a Kubernetes pod (its limit is the plan's size class: no budget needed)."""
    return "KUBERNETES_SERVICE_HOST" in os.environ


def local_budget(workers: int = 1) -> UsableMemory | None:
    """The memory budget of one of ``workers`` tiles running here at once: :data:`BUDGET_SHARE`
    of the usable memory, shared; None inside a pod or when nothing is known."""
    if in_pod():
        return None
    u = usable_memory()
    if u is None:
        return None
    return UsableMemory(int(u.bytes * BUDGET_SHARE / max(1, workers)), u.source)
