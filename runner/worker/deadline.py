"""``--max-processing-time``: the worker's watchdog."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from runner.common.logs import TileLog
from runner.planner.grid import TileId


class Deadline:
    """A watchdog thread that ends the worker when its time is up.

    It logs the reason, prints ``error: ... exceeded --max-processing-time ...`` and exits with
    code 1 at once — whatever the worker is doing (a GDAL read, a numba kernel). Once the done
    marker is about to be written the deadline is disarmed, so a tile is never reported failed
    with its STAC item written, nor the other way round. ``stage`` names what the worker is
    doing, for that message.
    """

    def __init__(self, tile: TileId, seconds: float | None, log: TileLog) -> None:
        self.tile, self.seconds, self.log = tile, seconds, log
        self.stage = "start"
        self._lock = threading.Lock()
        self._disarmed = False
        self._timer: threading.Timer | None = None
        if seconds:
            self._timer = threading.Timer(seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        with self._lock:  # held until the process ends: disarm() cannot race past it
            if self._disarmed:
                return
            msg = (
                f"tile {self.tile} exceeded --max-processing-time {self.seconds:g} s "
                f"during {self.stage}; stopped, no done marker written"
            )
            self.log.error(
                "%s", msg, extra={"status": "failed", "stage": self.stage, "reason": "deadline"}
            )
            with contextlib.suppress(Exception):
                sys.stderr.write(f"error: {msg}\n")
                sys.stderr.flush()
            os._exit(1)

    def disarm(self) -> None:
        """No more expiry: the done marker is being written."""
        with self._lock:
            self._disarmed = True
            if self._timer is not None:
                self._timer.cancel()
