"""A real Kubernetes control plane on loopback for the tests: etcd + kube-apiserver +
kube-controller-manager (job, ttl-after-finished and garbage-collector controllers).

There is no kubelet and no scheduler: pods stay Pending until :mod:`tests.k8s.executor` runs them
as local processes and reports their status, as a kubelet would. Everything listens on 127.0.0.1
only, on free ports, with data under a temporary folder (tmpfs when available).

Binaries come from ``.ci/k8s-setup.sh`` (``~/.cache/gmrun-k8s/bin``, or ``$GMRUN_K8S_BIN``); etcd
from ``$PATH``. If they are missing the tests *fail* and say how to get them.

Authorization is RBAC. The ``admin`` user is in ``system:masters`` (allowed everything, as with
``--authorization-mode=AlwaysAllow``); ``alice`` is in ``gmrun:submitters`` (the group bound to the
Role in ``k8s/rbac.yaml``); ``mallory`` has no rights. Use the kubeconfig contexts of those names.

Use in a test module::

    from tests.k8s.cluster import cluster  # noqa: F401  (the session fixture)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("GMRUN_K8S_BIN") or Path.home() / ".cache/gmrun-k8s/bin")
SETUP_HINT = "run `bash .ci/k8s-setup.sh` (builds kube-apiserver, kube-controller-manager, kubectl; installs etcd)"
NAMESPACE = "gmrun"

TOKENS = {
    "admin": "gmrun-admin-token",
    "alice": "gmrun-alice-token",
    "mallory": "gmrun-mallory-token",
}
_GROUPS = {"admin": "system:masters", "alice": "gmrun:submitters", "mallory": ""}


def find_binaries() -> dict[str, Path]:
    """Paths of etcd, kube-apiserver, kube-controller-manager (and kubectl if built)."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    etcd = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if etcd:
        found["etcd"] = Path(etcd)
    else:
        missing.append("etcd")
    for name in ("kube-apiserver", "kube-controller-manager", "kubectl"):
        p = BIN_DIR / name
        if p.exists() and os.access(p, os.X_OK):
            found[name] = p
        elif name != "kubectl":
            missing.append(str(p))
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}: {SETUP_HINT}")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost, and a service-account key pair."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=gmrun-test-ca",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=kube-apiserver",
        cwd=d,
    )
    (d / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        cwd=d,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def write_kubeconfig(path: Path, server: str, ca: Path, current: str = "admin") -> None:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": u, "user": {"token": t}} for u, t in TOKENS.items()],
        "contexts": [
            {"name": u, "context": {"cluster": "test", "user": u, "namespace": NAMESPACE}}
            for u in TOKENS
        ],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@dataclass
class TestCluster:
    """A running control plane. ``kubeconfig`` has contexts ``admin`` (current), ``alice``, ``mallory``."""

    root: Path
    server: str
    kubeconfig: Path
    binaries: dict[str, Path]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    namespace: str = NAMESPACE

    __test__ = False  # not a pytest test class

    @property
    def kubectl(self) -> Path | None:
        return self.binaries.get("kubectl")

    def log(self, name: str, tail: int = 4000) -> str:
        p = self.root / f"{name}.log"
        return p.read_text(errors="replace")[-tail:] if p.exists() else ""

    def api_client(self, context: str = "admin") -> Any:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(
            config_file=str(self.kubeconfig),
            context=context,
            client_configuration=cfg,
            persist_config=False,
        )
        cfg.connection_pool_maxsize = 16
        return client.ApiClient(cfg)

    def env(self, context: str = "admin") -> dict[str, str]:
        """Environment for a subprocess (``gmrun k8s ...`` or ``kubectl``) using this cluster."""
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        if context != "admin":
            kc = self.root / f"kubeconfig-{context}"
            if not kc.exists():
                write_kubeconfig(kc, self.server, self.root / "pki/ca.crt", current=context)
            env["KUBECONFIG"] = str(kc)
        return env

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _spawn(c: TestCluster, name: str, args: list[str]) -> None:
    log = open(c.root / f"{name}.log", "wb")  # noqa: SIM115  (owned by the process)
    c.procs[name] = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()


def _wait(c: TestCluster, name: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = c.procs[name]
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited with {p.returncode}:\n{c.log(name)}")
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {timeout:.0f}s:\n{c.log(name)}")


def _http_ok(url: str, ctx: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as r:
            return int(r.status) == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def start_cluster(authorization_mode: str = "RBAC", timeout: float = 120.0) -> TestCluster:
    """Start etcd, kube-apiserver and kube-controller-manager; raise if not ready in time."""
    binaries = find_binaries()
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="gmrun-k8s-", dir=base))
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    c = TestCluster(root, server, root / "kubeconfig", binaries)
    atexit.register(c.stop)
    try:
        pki = root / "pki"
        make_pki(pki)
        (root / "tokens.csv").write_text(
            "".join(
                f'{tok},{user},{i},"{_GROUPS[user]}"\n' if _GROUPS[user] else f"{tok},{user},{i}\n"
                for i, (user, tok) in enumerate(TOKENS.items(), start=1)
            )
        )
        write_kubeconfig(c.kubeconfig, server, pki / "ca.crt")

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        _spawn(
            c,
            "etcd",
            [
                str(binaries["etcd"]),
                "--name",
                "gmrun-test",
                "--data-dir",
                str(root / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"gmrun-test={peer_url}",
                "--log-level",
                "warn",
                "--snapshot-count",
                "100000",
                "--quota-backend-bytes",
                str(4 << 30),
            ],
        )
        _wait(c, "etcd", lambda: _http_ok(f"{etcd_url}/health"), 30)

        _spawn(
            c,
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--insecure-port=0",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={root / 'tokens.csv'}",
                f"--authorization-mode={authorization_mode}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--feature-gates=TTLAfterFinished=true",
                "--enable-priority-and-fairness=false",
                "--max-requests-inflight=800",
                "--max-mutating-requests-inflight=400",
                "--allow-privileged=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        _wait(
            c, "kube-apiserver", lambda: _http_ok(f"{server}/readyz", ctx, TOKENS["admin"]), timeout
        )

        _spawn(
            c,
            "kube-controller-manager",
            [
                str(binaries["kube-controller-manager"]),
                f"--kubeconfig={c.kubeconfig}",
                "--controllers=job,ttl-after-finished,garbagecollector",
                "--feature-gates=TTLAfterFinished=true",
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
                "--use-service-account-credentials=false",
                "--concurrent-gc-syncs=10",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
                "--v=1",
            ],
        )
        time.sleep(0.5)
        if c.procs["kube-controller-manager"].poll() is not None:
            raise RuntimeError(
                f"kube-controller-manager exited:\n{c.log('kube-controller-manager')}"
            )
        apply_fixed_manifests(c)
    except BaseException:
        c.stop()
        raise
    return c


def apply_fixed_manifests(c: TestCluster) -> None:
    """Create what ``kubectl apply -k k8s/`` creates (namespace, service accounts, RBAC)."""
    from kubernetes import utils

    api = c.api_client()
    kust = yaml.safe_load((REPO / "k8s/kustomization.yaml").read_text())
    for res in kust["resources"]:
        for doc in yaml.safe_load_all((REPO / "k8s" / res).read_text()):
            if doc:
                utils.create_from_dict(api, doc)
    api.close()


_CLUSTER: TestCluster | None = None


def get_cluster() -> TestCluster:
    """The one control plane of this test session (started on first use, stopped at exit)."""
    global _CLUSTER
    if _CLUSTER is None:
        try:
            find_binaries()
        except FileNotFoundError as e:
            missing = str(e)
        else:
            missing = ""
        if missing:  # fail (not skip): CI must run these tests
            pytest.fail(missing, pytrace=False)
        _CLUSTER = start_cluster()
    return _CLUSTER


@pytest.fixture(scope="session")
def cluster() -> Iterator[TestCluster]:
    """The running test control plane (shared by every module that imports this fixture)."""
    yield get_cluster()
