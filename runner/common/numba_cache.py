"""The numba kernels compiled at image build, made usable by a pod with a read-only root.

numba only uses a cache folder it can write to (it creates a temporary file there first), so the
image's cache under ``/opt`` is ignored by a pod whose root is read-only and whose
``NUMBA_CACHE_DIR`` is the ``/tmp`` emptyDir. The image names its cache in
``GMRUN_NUMBA_CACHE_SEED``; before its first kernel call the worker copies that folder into
``NUMBA_CACHE_DIR`` (a few MiB, ~10 ms), so the kernels load instead of compiling (~20 s).
numba then checks each entry itself (source file stamp, numba version, CPU model) and compiles
only what does not match.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: The environment variable naming the image's baked cache.
SEED_ENV = "GMRUN_NUMBA_CACHE_SEED"


@dataclass(frozen=True)
class Seeded:
    """What :func:`seed_cache` copied: ``files`` files of ``bytes`` bytes in ``seconds``."""

    source: str
    target: str
    files: int
    bytes: int
    seconds: float


def seed_cache(env: Mapping[str, str] | None = None) -> Seeded | None:
    """Copy the baked cache (``$GMRUN_NUMBA_CACHE_SEED``) into ``$NUMBA_CACHE_DIR``, keeping
    files already there and their modification times; None when there is nothing to do (either
    variable unset, the same folder, no seed folder) or the target cannot be written (numba then
    compiles, as it would without a seed)."""
    env = os.environ if env is None else env
    seed, target = env.get(SEED_ENV), env.get("NUMBA_CACHE_DIR")
    if not seed or not target:
        return None
    src, dst = Path(seed), Path(target)
    if not src.is_dir() or src.resolve() == dst.resolve():
        return None
    t0 = time.perf_counter()
    files = size = 0
    try:
        for path in src.rglob("*"):
            if not path.is_file():
                continue
            out = dst / path.relative_to(src)
            if out.exists():
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            part = out.with_name(f".{out.name}.{os.getpid()}")
            shutil.copy2(path, part)
            os.replace(part, out)  # whole files only, should two workers seed at once
            files += 1
            size += path.stat().st_size
    except OSError:
        return None
    return Seeded(str(src), str(dst), files, size, time.perf_counter() - t0)
