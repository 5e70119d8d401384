"""The worker image, built from the real Dockerfile with Debian's podman and run as a Job runs it.

No container registry is reachable from the test machines, so the Dockerfile's ``BASE`` is a
local image: a minbase Debian bookworm made by ``debootstrap`` with Debian's ``python3`` (3.11)
and pip, as ``python:3.11-slim`` offers them (pip usable for the system's Python, the machine's
CA certificates). Its root filesystem is cached as a tarball under
``~/.cache/gmrun-image/`` (~45 s to make, once per machine) and imported into podman (~5 s).

podman runs as root here, without systemd or a writable cgroup hierarchy: each ``podman run``
happens inside ``unshare -m`` with ``/sys/fs/cgroup`` mounted as cgroup2, with
``--cgroups=disabled`` and explicit ulimits; ``podman build`` uses ``--isolation chroot``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gmrun-image"
#: Bump when the base's recipe changes: the cached tarball's name carries it.
RECIPE = "bookworm-python3-v1"
MIRROR = "http://deb.debian.org/debian"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE = "localhost/gmrun:test"


def _run(cmd: Sequence[str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def missing_tools() -> list[str]:
    """The programs the image test needs that this machine lacks (``make test-packages``)."""
    return [t for t in ("podman", "debootstrap", "unshare") if shutil.which(t) is None]


def base_tag() -> str:
    """The base image's tag: the recipe and the CA bundle it carries."""
    ca = hashlib.sha256(CA_BUNDLE.read_bytes()).hexdigest()[:12] if CA_BUNDLE.exists() else "noca"
    return f"localhost/gmrun-test-base:{RECIPE}-{ca}"


def _make_rootfs_tar(tar: Path) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        root = Path(tmp) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-pip,ca-certificates",
                "bookworm",
                str(root),
                MIRROR,
            ],
            timeout=900,
        )
        # What python:3.11-slim allows: pip (and uv --system) installing into the system Python.
        (root / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        if CA_BUNDLE.exists():  # this machine's TLS roots (it may sit behind an intercepting proxy)
            shutil.copyfile(CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        part = tar.with_suffix(".part")
        _run(["tar", "-C", str(root), "-cf", str(part), "."], timeout=600)
        part.replace(tar)


def base_image() -> str:
    """The local base image (made and imported if needed, under a lock); its tag."""
    tag = base_tag()
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(["podman", "image", "exists", tag]).returncode == 0:
            return tag
        tar = CACHE / f"{tag.rsplit(':', 1)[1]}.tar"
        if not tar.exists():
            _make_rootfs_tar(tar)
        _run(["podman", "import", str(tar), tag], timeout=600)
    return tag


@dataclass(frozen=True)
class Built:
    """The image built from the repository's Dockerfile, and the build's wall time."""

    tag: str
    seconds: float
    log: str


def build_image(base: str, tag: str = IMAGE) -> Built:
    """``podman build`` of the repository's Dockerfile on ``base`` (layers cached by podman)."""
    import time

    t0 = time.perf_counter()
    proc = _run(
        [
            "podman",
            "build",
            "--isolation",
            "chroot",
            "--build-arg",
            f"BASE={base}",
            "--build-arg",
            "UV_SYSTEM_CERTS=true",
            "-t",
            tag,
            str(REPO),
        ],
        timeout=1800,
    )
    return Built(tag, time.perf_counter() - t0, proc.stdout + proc.stderr)


def run_container(
    image: str,
    args: Sequence[str],
    *,
    tmp: Path,
    read_only: Sequence[Path] = (),
    extra_mounts: Sequence[tuple[Path, Path]] = (),
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``image`` with ``args`` as a Kubernetes Job runs the worker: a read-only root, uid
    10001, no network, ``tmp`` (host folder) as ``/tmp``, the only writable path, each of
    ``read_only`` mounted read-only at its own path, each ``(host, path)`` of ``extra_mounts``
    writable at ``path``, and ``env`` (the Job's variables)."""
    podman = [
        "podman",
        "run",
        "--rm",
        "--cgroups=disabled",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--read-only",
        "--read-only-tmpfs=false",
        "--user",
        "10001",
        "--network",
        "none",
        "-v",
        f"{tmp}:/tmp:rw",
    ]
    for p in read_only:
        podman += ["-v", f"{p}:{p}:ro"]
    for host, path in extra_mounts:
        podman += ["-v", f"{host}:{path}:rw"]
    for k, v in (env or {}).items():
        podman += ["-e", f"{k}={v}"]
    podman += [image, *args]
    script = f"mount -t cgroup2 none /sys/fs/cgroup && exec {shlex.join(podman)}"
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
