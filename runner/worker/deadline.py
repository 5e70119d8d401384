"""The worker's watchdog: ``--max-processing-time``, and SIGTERM/SIGINT said in the log."""

from __future__ import annotations

import contextlib
import os
import signal
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
        self._stopping = False
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

    #: the signals a worker is stopped by: Kubernetes sends SIGTERM on eviction, preemption,
    #: node drain and activeDeadlineSeconds; a terminal sends SIGINT (Ctrl-C)
    STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def watch_signals(self) -> None:
        """Say why the worker stops when it is sent SIGTERM or SIGINT: one log line (tile, stage,
        signal), ``error: …`` on stderr, then exit ``128 + signal`` (143, 130), the code of a
        process ended by that signal — a disruption, never the bad-input code 2.

        A Python signal handler, so it runs in the main thread at its next bytecode: while the
        load waits on its reader threads (at once), between row blocks of the reduce, between
        COG writes — well within Kubernetes' 30 s grace period before SIGKILL. (Blocking the
        signals for a ``sigwait`` thread instead cannot work here: numpy's BLAS threads start
        at import, before any worker code, and would take the signal's default action.) Call it
        from the main thread.
        """
        for sig in self.STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._stopping:  # a second signal (a terminal's and its parent's) while saying so
            return
        self._stopping = True
        name = signal.Signals(signum).name
        with self._lock:
            msg = f"tile {self.tile} stopped by {name} during {self.stage}" + (
                "" if self._disarmed else "; no done marker written"
            )
            self.log.error(
                "%s", msg, extra={"status": "failed", "stage": self.stage, "reason": name}
            )
            with contextlib.suppress(Exception):
                sys.stderr.write(f"error: {msg}\n")
                sys.stderr.flush()
            os._exit(128 + signum)

    def disarm(self) -> None:
        """No more expiry: the done marker is being written."""
        with self._lock:
            self._disarmed = True
            if self._timer is not None:
                self._timer.cancel()
