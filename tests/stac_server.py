"""A real STAC API server on loopback for the planner's tests: ``rustac serve`` (the rustac
package's stac-server, from PyPI) with its in-memory backend, loaded from item files.

The server runs as its own process on a free 127.0.0.1 port and logs every request at debug
level (``-vvv``), which :meth:`StacServer.requests` counts. Its memory backend implements
item search with ``bbox``, ``datetime``, ``collections``, ``limit`` and ``next`` paging, but not
the Filter or Query extensions (it does not advertise them in ``/conformance``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of the call)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rustac_binary() -> str:
    """The ``rustac`` CLI of this interpreter's environment (else the one on PATH)."""
    exe = Path(sys.executable).parent / "rustac"
    if exe.exists():
        return str(exe)
    found = shutil.which("rustac")
    if found is None:
        raise RuntimeError("the rustac CLI is not installed (pip install rustac)")
    return found


@dataclass(frozen=True)
class StacServer:
    """A running server: its root URL and the log it writes."""

    url: str
    log: Path

    def requests(self, path: str = "/search") -> int:
        """Requests the server has received so far whose path starts with ``path``."""
        text = self.log.read_text(errors="replace")
        return sum(
            1 for ln in text.splitlines() if f" uri={path}" in ln and "request; method=" in ln
        )


@contextlib.contextmanager
def serve(*hrefs: Path, log: Path, timeout: float = 30.0) -> Iterator[StacServer]:
    """Run ``rustac serve`` over item files (ndjson/json/geoparquet, collections created from the
    items' ``collection``) until the block exits; waits until ``/`` answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        rustac_binary(),
        "-vvv",
        "serve",
        "--addr",
        f"127.0.0.1:{port}",
        "--create-collections",
        *map(str, hrefs),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"rustac serve exited with {proc.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"rustac serve did not answer on {url} in {timeout} s")
            time.sleep(0.1)
        yield StacServer(url, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class FlakyFront:
    """Counts of a :func:`flaky_front`: requests answered with the error, and forwarded."""

    url: str
    failed: int = 0
    forwarded: int = 0


@contextlib.contextmanager
def flaky_front(
    upstream: str, failures: int, status: int = 429, retry_after: str | None = "1"
) -> Iterator[FlakyFront]:
    """A real HTTP server on loopback in front of ``upstream``: the first ``failures`` requests
    get ``status`` (with a ``Retry-After`` header if given), every later one is forwarded to the
    upstream (method, path, body) and its answer relayed. Links in the answers still name the
    upstream, so only requests to this front's own URL pass through it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    state = FlakyFront("")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            with lock:
                fail = state.failed < failures
                state.failed += fail
                state.forwarded += not fail
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if fail:
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            req = urllib.request.Request(
                upstream + self.path,
                data=body or None,
                method=self.command,
                headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                data, code, ctype = (
                    r.read(),
                    r.status,
                    r.headers.get("Content-Type", "application/json"),
                )
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
