"""Progress of long work: a rich bar on a terminal, log lines every 10 % otherwise; each step
also touches the heartbeat file (``$GMRUN_HEARTBEAT``) that a Kubernetes liveness probe watches."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any


class Heartbeat:
    """Touches ``$GMRUN_HEARTBEAT`` (if set) at most every ``interval`` seconds."""

    def __init__(self, path: str | None = None, interval: float = 2.0) -> None:
        p = path if path is not None else os.environ.get("GMRUN_HEARTBEAT")
        self.path = Path(p) if p else None
        self.interval = interval
        self._last = 0.0

    def beat(self, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            with contextlib.suppress(OSError):
                self.path.touch()


class StageProgress:
    """Counts the steps of one stage of a tile (``load``, ``reduce``...)."""

    def __init__(
        self,
        log: logging.LoggerAdapter[logging.Logger],
        stage: str,
        total: int,
        heartbeat: Heartbeat,
        unit: str = "steps",
    ) -> None:
        self.log, self.stage, self.total, self.unit = log, stage, max(total, 1), unit
        self.heartbeat = heartbeat
        self.done = 0
        self._next_pct = 10
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> StageProgress:
        if sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(
                "[bold]{task.description}",
                BarColumn(),
                "{task.completed}/{task.total} " + self.unit,
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            tile = (self.log.extra or {}).get("tile", "")
            self._task = self._bar.add_task(f"{tile} {self.stage}", total=self.total)
        self.heartbeat.beat(force=True)
        return self

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.heartbeat.beat()
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        pct = 100 * self.done // self.total
        if pct >= self._next_pct:
            self._next_pct = (pct // 10 + 1) * 10
            self.log.info(
                "%s %d%%", self.stage, min(pct, 100), extra={"stage": self.stage, "progress": pct}
            )

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
