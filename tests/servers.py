"""Test servers as subprocesses on 127.0.0.1: ``moto_server`` (S3), a static HTTP server with
Range support and injectable faults, and an S3 fault proxy in front of ``moto_server``. Each binds a free port, is waited for with a bounded
wait, and is killed at teardown (never a server inside the test process: GDAL's curl calls
would deadlock against the GIL-holding test thread).

Run as a script, this module is the HTTP server::

    python -m tests.servers ROOT PORT RULES.json

``RULES.json`` is re-read on every request, so a test changes faults while the server runs:

    {"404": ["a/b.tif"], "truncate": {"a/c.tif": 1000}, "fail_first": {"a/d.tif": 3},
     "slow": {"a/e.tif": 0.5}, "status": 503, "reset": {"a/f.tif": 2}}

``fail_first`` answers the first N requests of a path with ``status`` (default 503); ``reset``
sends the headers and half the body of the first N GETs of a path, then resets the connection
(TCP RST).

The same server is a Planetary Computer stand-in: ``GET /api/sas/v1/token/{account}/{container}``
issues SAS tokens (``sas_ttl`` seconds; the first ``sas_revoked`` ones are refused anyway), and,
used as GDAL's HTTP proxy (``GDAL_HTTP_PROXY``), it serves
``http://{account}.blob.core.windows.net/{container}/{rel}`` from ``ROOT/{rel}`` only with a
valid token of that container in the query (else 403, as Azure).

The S3 fault proxy (``python -m tests.servers --s3-proxy UPSTREAM_PORT PORT RULES.json``)
forwards every request to ``moto_server`` except the ones its rules fail, counted per S3
operation (``PutObject``, ``UploadPart``, ``CreateMultipartUpload``,
``CompleteMultipartUpload``)::

    {"UploadPart": {"from": 3, "count": 2, "mode": "reset"}, "PutObject": {"from": 1, "count": -1}}

fails the 3rd and 4th UploadPart by resetting the connection after reading the request, and
every PutObject (``count`` -1) with ``500 InternalError`` (``mode`` ``status``, the default).
``"mode": "hang", "seconds": S`` forwards the request only after S seconds (an upload in flight).
Requests are counted from the first one after the rules last changed. Each failure is appended
to ``RULES.log`` as ``OP N MODE``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

REPO = Path(__file__).resolve().parents[1]
#: The SAS token API path of the HTTP server (as Planetary Computer's), and Azure's blob hosts.
SAS_API = "/api/sas/v1/token/"
BLOB_SUFFIX = ".blob.core.windows.net"


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
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
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
class S3Proxy:
    """An S3 endpoint (``moto_server`` behind a fault proxy) whose faults a test sets."""

    upstream: S3Server
    endpoint: str
    rules_file: Path

    def set_rules(self, **rules: object) -> None:
        tmp = self.rules_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(rules))
        os.replace(tmp, self.rules_file)

    def failures(self) -> list[str]:
        """``OP N MODE`` of every request the proxy failed so far."""
        log = self.rules_file.with_suffix(".log")
        return log.read_text().splitlines() if log.exists() else []


@contextlib.contextmanager
def s3_fault_proxy(upstream: S3Server, rules_file: Path) -> Iterator[S3Proxy]:
    port = free_port()
    rules_file.write_text("{}")
    rules_file.with_suffix(".log").unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "tests.servers",
        "--s3-proxy",
        str(upstream.port),
        str(port),
        str(rules_file),
    ]
    with _process(cmd, f"http://127.0.0.1:{port}/moto-api/", env={"PYTHONPATH": str(REPO)}):
        yield S3Proxy(upstream, f"http://127.0.0.1:{port}", rules_file)


def _reset(sock: socket.socket) -> None:
    """Close a connection with a TCP RST (SO_LINGER 0) instead of an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


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

    def blob_url(self, path: Path | str, account: str, container: str) -> str:
        """``path`` as an (unsigned) Azure blob href, served when GDAL_HTTP_PROXY is this server."""
        rel = Path(path).resolve().relative_to(self.root.resolve())
        return f"http://{account}{BLOB_SUFFIX}/{container}/{rel.as_posix()}"

    @property
    def sas_token_url(self) -> str:
        return self.base + SAS_API.rstrip("/")

    def tokens_issued(self) -> list[str]:
        """``account/container N`` of every SAS token issued so far."""
        log = self.rules_file.with_suffix(".tokens")
        return log.read_text().splitlines() if log.exists() else []


@contextlib.contextmanager
def http_files(root: Path, rules_file: Path) -> Iterator[HttpServer]:
    port = free_port()
    rules_file.write_text("{}")
    rules_file.with_suffix(".tokens").unlink(missing_ok=True)
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
        if self.path.startswith(SAS_API):
            self._sas_token()
            return
        path = self.path
        if path.startswith("http://"):  # a proxied request (GDAL_HTTP_PROXY): Azure Blob Storage
            path = self._blob(path)
            if path is None:
                return
        rel = path.split("?", 1)[0].lstrip("/")
        rules = self._rules()
        n = self.counts[rel] = self.counts.get(rel, 0) + 1
        if delay := rules.get("slow", {}).get(rel):
            time.sleep(float(delay))
        if n <= int(rules.get("fail_first", {}).get(rel, 0)):
            self.send_error(int(rules.get("status", 503)))
            return
        reset = body and self._count_get(rel) <= int(rules.get("reset", {}).get(rel, 0))
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
        if reset:  # half the body, then a TCP reset mid-response
            self.wfile.write(data[start : start + (end - start + 1) // 2])
            self.close_connection = True
            _reset(self.connection)
            return
        if body:
            self.wfile.write(data[start : end + 1])

    gets: dict[str, int] = {}  # noqa: RUF012

    def _count_get(self, rel: str) -> int:
        n = self.gets[rel] = self.gets.get(rel, 0) + 1
        return n

    # --- a Planetary Computer SAS token API, and Azure Blob Storage that checks the tokens -------
    tokens: dict[str, tuple[str, float, bool]] = {}  # noqa: RUF012  sig → (account/container, expiry, revoked)
    lock = threading.Lock()

    def _sas_token(self) -> None:
        """``GET /api/sas/v1/token/{account}/{container}``: a token valid ``sas_ttl`` s (default
        3600); the first ``sas_revoked`` tokens (default 0) are refused by the storage anyway.
        Each issue is logged to ``RULES.tokens`` as ``account/container N``."""
        where = self.path[len(SAS_API) :].split("?", 1)[0].strip("/")
        rules = self._rules()
        expiry = time.time() + float(rules.get("sas_ttl", 3600))
        with self.lock:
            n = len(self.tokens) + 1
            sig = hashlib.sha256(f"{where}/{n}/{expiry}".encode()).hexdigest()[:32]
            self.tokens[sig] = (where, expiry, n <= int(rules.get("sas_revoked", 0)))
        with self.rules_file.with_suffix(".tokens").open("a") as f:
            f.write(f"{where} {n}\n")
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
        doc = json.dumps({"msft:expiry": iso, "token": f"se={int(expiry)}&sp=rl&sr=c&sig={sig}"})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(doc)))
        self.end_headers()
        self.wfile.write(doc.encode())

    def _blob(self, url: str) -> str | None:
        """``http://{account}.blob.core.windows.net/{container}/{rel}?{token}`` → ``/{rel}`` of
        the served root, if the token is one this server issued for that container, unexpired
        and not revoked; else answer 403 as Azure does (and None)."""
        from urllib.parse import urlsplit

        u = urlsplit(url)
        host = u.hostname or ""
        container, _, rel = u.path.lstrip("/").partition("/")
        sig = parse_qs(u.query).get("sig", [""])[0]
        with self.lock:
            where, expiry, revoked = self.tokens.get(sig, ("", 0.0, True))
        if (
            not host.endswith(BLOB_SUFFIX)
            or where != f"{host[: -len(BLOB_SUFFIX)]}/{container}"
            or revoked
            or time.time() > expiry
        ):
            self.send_error(403, "AuthenticationFailed")
            return None
        return "/" + rel


# --- the S3 fault proxy -------------------------------------------------------------------------------
_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "expect",
    "proxy-connection",
    "te",
    "upgrade",
}


class _S3ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and ``Expect: 100-continue`` as S3 answers it
    upstream_port: int
    rules_file: Path
    counts: dict[str, int] = {}  # noqa: RUF012 (one server per process)
    rules_text = ""
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _operation(self) -> str:
        path, _, query = self.path.partition("?")
        q = parse_qs(query, keep_blank_values=True)
        if self.command == "PUT" and "/" not in path.strip("/"):
            return "CreateBucket"
        if self.command == "PUT" and "x-amz-copy-source" not in self.headers:
            return "UploadPart" if "partNumber" in q else "PutObject"
        if self.command == "POST":
            return "CreateMultipartUpload" if "uploads" in q else "CompleteMultipartUpload"
        return self.command

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _fault(self, op: str) -> tuple[str, dict] | None:
        try:
            text = self.rules_file.read_text()
            rules = json.loads(text)
        except (OSError, ValueError):
            text, rules = "", {}
        with self.lock:
            if text != _S3ProxyHandler.rules_text:  # new rules: count from the next request
                _S3ProxyHandler.rules_text = text
                self.counts.clear()
            n = self.counts[op] = self.counts.get(op, 0) + 1
            rule = rules.get(op)
            if not rule:
                return None
            first, count = int(rule.get("from", 1)), int(rule.get("count", 1))
            if n < first or (count >= 0 and n >= first + count):
                return None
            mode = str(rule.get("mode", "status"))
            with self.rules_file.with_suffix(".log").open("a") as f:
                f.write(f"{op} {n} {mode}\n")
            return mode, rule

    def _proxy(self) -> None:
        body = self._body()
        op = self._operation()
        mode, rule = self._fault(op) or (None, {})
        if mode == "hang":  # a slow upload: forwarded, but only after ``seconds``
            time.sleep(float(rule.get("seconds", 30)))
            mode = None
        if mode == "reset":
            self.close_connection = True
            _reset(self.connection)
            return
        if mode is not None:
            err = (
                b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code>"
                b"<Message>injected fault</Message></Error>"
            )
            self.send_response(500)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(err)))
            self.end_headers()
            self.wfile.write(err)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=120)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP and k.lower() != "content-length":
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _proxy


def main(argv: list[str]) -> None:
    ThreadingHTTPServer.daemon_threads = True
    if argv[0] == "--s3-proxy":
        _S3ProxyHandler.upstream_port, _S3ProxyHandler.rules_file = int(argv[1]), Path(argv[3])
        ThreadingHTTPServer(("127.0.0.1", int(argv[2])), _S3ProxyHandler).serve_forever()
        return
    root, port, rules = Path(argv[0]), int(argv[1]), Path(argv[2])
    _Handler.root, _Handler.rules_file = root, rules
    ThreadingHTTPServer(("127.0.0.1", port), _Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
