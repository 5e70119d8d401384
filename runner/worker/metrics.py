"""What a worker measures of itself: peak memory, bytes read, stage timings."""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image (``VmHWM``), bytes.

    ``getrusage``'s ``ru_maxrss`` is not used: Linux carries it across ``exec``, so a worker
    started by a large parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bytes_read_so_far() -> int:
    """Bytes this process has read so far (``rchar`` of ``/proc/self/io``; 0 where unavailable).

    ``rchar`` counts what ``read()``/``pread()`` returned — local COGs, page-cache hits included —
    so a delta over the load stage is the input bytes GDAL read from files. Reads from network
    sockets with ``recv()`` (GDAL's curl for http/S3 inputs) are NOT counted.
    """
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@contextlib.contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall time of the block in ``timings[stage]`` (seconds, 3 decimals)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(time.perf_counter() - t0, 3)
