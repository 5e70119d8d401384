"""The C heap, told to give freed memory back: glibc's ``malloc_trim``.

The load allocates and frees many buffers of 1–30 MB from several threads (decoded source
windows, the gather's stacks, GDAL's block reads). glibc serves a buffer below its *dynamic*
mmap threshold (which grows to 32 MB as large buffers are freed) from a per-thread arena, and an
arena keeps what is freed: measured on the 1200 px, 30-date benchmark tile, 125 MB of resident
memory that nothing used stayed after the load, on top of the cube, until ``malloc_trim``. So
the loader trims after each row band's load, before the reduce allocates its results.

Not done: fixing the mmap threshold low (``mallopt(M_MMAP_THRESHOLD, 1 MiB)``), which keeps
the arenas small all along: every large buffer is then mapped afresh, and page faults are
expensive (on this benchmark machine the 14 COG encodes of the same tile took 3.1 s instead of
1.2 s). Elsewhere than glibc (musl, macOS) the trim is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any


@cache
def _libc() -> Any | None:
    """glibc, if this process runs on it (``malloc_trim`` is glibc's)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def give_back_freed() -> None:
    """Return the arenas' free memory to the system (``malloc_trim(0)``)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
