"""Test servers as subprocesses on 127.0.0.1: ``moto_server`` (S3) and a static HTTP server with
Range support and injectable faults. Each binds a free port, is waited for with a bounded
wait, and is killed at teardown (never a server inside the test process: GDAL's curl calls
would deadlock against the GIL-holding test thread).

Run as a script, this module is the HTTP server::

    python -m tests.servers ROOT PORT RULES.json

``RULES.json`` is re-read on every request, so a test changes faults while the server runs:

    {"404": ["a/b.tif"], "truncate": {"a/c.tif": 1000}, "fail_first": {"a/d.tif": 3},
     "slow": {"a/e.tif": 0.5}, "status": 503}

``fail_first`` answers the first N requests of a path with ``status`` (default 503).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"server {url} did not start within {timeout} s")


@contextlib.contextmanager
def _process(
    cmd: list[str], probe: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)  # fmt: skip
    try:
        _wait_http(probe, proc)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    port: int

    def env(self) -> dict[str, str]:
        """Environment of a client: boto3 (``AWS_ENDPOINT_URL``) and GDAL ``/vsis3/``."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_S3_ENDPOINT": f"127.0.0.1:{self.port}",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
        }


@contextlib.contextmanager
def moto_s3() -> Iterator[S3Server]:
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    with _process([*cmd, "-H", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}/moto-api/"):
        yield S3Server(f"http://127.0.0.1:{port}", port)


@dataclass(frozen=True)
class HttpServer:
    base: str
    root: Path
    rules_file: Path

    def set_rules(self, **rules: object) -> None:
        tmp = self.rules_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(rules))
        os.replace(tmp, self.rules_file)

    def url(self, path: Path | str) -> str:
        rel = Path(path).resolve().relative_to(self.root.resolve())
        return f"{self.base}/{rel.as_posix()}"


@contextlib.contextmanager
def http_files(root: Path, rules_file: Path) -> Iterator[HttpServer]:
    port = free_port()
    rules_file.write_text("{}")
    cmd = [sys.executable, "-m", "tests.servers", str(root), str(port), str(rules_file)]
    with _process(cmd, f"http://127.0.0.1:{port}/", env={"PYTHONPATH": str(REPO)}):
        yield HttpServer(f"http://127.0.0.1:{port}", root, rules_file)


# --- the HTTP server ------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    root: Path
    rules_file: Path
    counts: dict[str, int] = {}  # noqa: RUF012 (one server per process)

    def log_message(self, *args: object) -> None:
        pass

    def _rules(self) -> dict:
        try:
            return json.loads(self.rules_file.read_text())
        except (OSError, ValueError):
            return {}

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        rules = self._rules()
        n = self.counts[rel] = self.counts.get(rel, 0) + 1
        if delay := rules.get("slow", {}).get(rel):
            time.sleep(float(delay))
        if n <= int(rules.get("fail_first", {}).get(rel, 0)):
            self.send_error(int(rules.get("status", 503)))
            return
        path = (self.root / rel).resolve()
        if (
            rel in rules.get("404", [])
            or not path.is_file()
            or self.root.resolve() not in path.parents
        ):
            self.send_error(404)
            return
        data = path.read_bytes()
        if (cut := rules.get("truncate", {}).get(rel)) is not None:
            data = data[: int(cut)]
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].split(",")[0].partition("-")
            start = int(a) if a else max(0, len(data) - int(b))
            end = min(int(b), len(data) - 1) if a and b else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])


def main(argv: list[str]) -> None:
    root, port, rules = Path(argv[0]), int(argv[1]), Path(argv[2])
    _Handler.root, _Handler.rules_file = root, rules
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), _Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
