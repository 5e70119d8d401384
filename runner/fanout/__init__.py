"""The fan-out: a plan's tiles, each run by ``gmrun run-tile`` in its own process.

* :mod:`~runner.fanout.worker_args` — the worker's command line, built in one place;
* :mod:`~runner.fanout.local` — the embedded default: one subprocess per tile on this machine;
* :mod:`runner.fanout.k8s` — one Kubernetes Job per tile: manifests, API client, status,
  submit and rerun.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.common.lazy import lazy_getattr

if TYPE_CHECKING:
    from runner.fanout.local import TileRun, run_local
    from runner.fanout.worker_args import WorkerOptions, run_tile_args

_HOMES: dict[str, str] = {
    "TileRun": "runner.fanout.local",
    "WorkerOptions": "runner.fanout.worker_args",
    "run_local": "runner.fanout.local",
    "run_tile_args": "runner.fanout.worker_args",
}

__all__ = sorted(_HOMES)

__getattr__ = lazy_getattr(__name__, _HOMES)
