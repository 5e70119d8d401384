"""``gmrun k8s submit|status|rerun`` against a real kube-apiserver + Job controller on loopback.

Pods are run by :class:`tests.k8s.executor.PodExecutor`; here the worker is the fast stand-in
:mod:`tests.k8s.fake_worker` (the real worker runs in ``test_k8s_e2e.py``).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from runner.cli.k8s import k8s as k8s_group
from runner.fanout import k8s
from runner.fanout.k8s import client as k8s_client
from tests.k8s.cluster import TestCluster, get_cluster
from tests.k8s.executor import PodExecutor, fake_gmrun
from tests.k8s.plans import make_plan

pytestmark = [pytest.mark.k8s, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="session")
def cluster() -> TestCluster:
    """The test control plane (one per session, shared with the other k8s test modules)."""
    return get_cluster()


def gm(c: TestCluster, *args: str, context: str = "admin", input: str | None = None) -> Result:
    """Run ``gmrun k8s ARGS`` in-process against the test cluster."""
    return CliRunner().invoke(k8s_group, list(args), env=c.env(context), input=input)


def wait_for(what: str, fn: Callable[[], bool], timeout: float = 60.0, every: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def status(c: TestCluster, batch: str, *extra: str) -> dict[str, dict[str, Any]]:
    r = gm(c, "status", "--batch", batch, "-o", "json", *extra)
    assert r.exit_code == 0, r.output
    return {row["tile"]: row for row in json.loads(r.stdout)}


def executor(c: TestCluster, batch: str, **kw: Any) -> PodExecutor:
    kw.setdefault("command_map", fake_gmrun)
    return PodExecutor(c.api_client(), c.namespace, f"gmrun.io/batch={batch}", **kw)


def all_in(rows: dict[str, dict[str, Any]], *states: str) -> bool:
    return bool(rows) and all(r["state"] in states for r in rows.values())


def test_submit_status_rerun_cycle(cluster: TestCluster, tmp_path: Path) -> None:
    c = cluster
    plan = make_plan(tmp_path / "plan", 5, {"kubernetes": {"backoff_limit": 0}})
    bad, oom = str(plan.tiles[1].tile), str(plan.tiles[2].tile)
    (tmp_path / "plan/fail").mkdir()
    (tmp_path / "plan/fail" / bad).write_text("exit 2")
    (tmp_path / "plan/fail" / oom).write_text("oom")

    rows = status(c, "cyc", "--plan", plan.url)
    assert {r["state"] for r in rows.values()} == {"unsubmitted"}

    with executor(c, "cyc") as ex:
        r = gm(c, "submit", "--plan", plan.url, "--batch", "cyc")
        assert r.exit_code == 0, r.output
        assert "created 5 Jobs" in r.output
        wait_for("all Jobs finished", lambda: all_in(status(c, "cyc"), "succeeded", "failed"))
        rows = status(c, "cyc")  # the plan comes from the Jobs' gmrun.io/plan annotation
        assert rows[bad]["state"] == "failed"
        assert rows[bad]["message"].startswith(
            "BackoffLimitExceeded; last attempt Error (exit 2: bad input)"
        )
        assert (rows[bad]["reason"], rows[bad]["exit_code"]) == ("bad-input", 2)
        assert "cannot read asset" in rows[bad]["message"]
        assert rows[oom]["state"] == "failed" and "OOMKilled (exit 137" in rows[oom]["message"]
        assert (rows[oom]["reason"], rows[oom]["exit_code"]) == ("OOMKilled", 137)
        ok = [t for t in rows if t not in (bad, oom)]
        assert all(rows[t]["state"] == "succeeded" and rows[t]["done"] for t in ok)
        assert all(rows[t]["attempts"] == 1 for t in rows)
        assert not ex.errors

        # table and ids outputs
        r = gm(c, "status", "--batch", "cyc")
        assert r.exit_code == 0 and "BackoffLimitExceeded" in r.stdout and "3 succeeded" in r.output
        r = gm(c, "status", "--batch", "cyc", "--state", "failed", "-o", "ids")
        assert sorted(r.stdout.split()) == sorted([bad, oom])

        # submitting again creates nothing: existing Jobs (even failed ones) are left alone
        r = gm(c, "submit", "--plan", plan.url, "--batch", "cyc")
        assert r.exit_code == 0 and "created 0 Jobs, 5 already existed" in r.output

        # a done tile is never rerun without --overwrite; unknown tiles are refused
        r = gm(c, "rerun", "--batch", "cyc", "--tiles", ok[0])
        assert r.exit_code == 2 and "already done" in r.output and "--overwrite" in r.output
        r = gm(c, "rerun", "--batch", "cyc", "--tiles", "x999y999")
        assert r.exit_code == 2 and "not in the plan" in r.output

        # fix the inputs, rerun the failed tiles: more memory for the OOMKilled one only
        for f in (tmp_path / "plan/fail").iterdir():
            f.unlink()
        old_mem = {t: rows[t]["memory"] for t in (bad, oom)}
        r = gm(c, "rerun", "--batch", "cyc", "--failed", "--memory-factor", "1.5")
        assert r.exit_code == 0, r.output
        assert "deleted 2 Jobs, created 2, 1 with more memory (OOMKilled)" in r.output
        wait_for("reruns finished", lambda: all_in(status(c, "cyc"), "succeeded"))
        rows = status(c, "cyc")
        assert all(r["done"] for r in rows.values())
        for t in old_mem:
            assert rows[t]["attempts"] == 1  # the new Job's pods only
        assert _mib(rows[oom]["memory"]) == pytest.approx(1.5 * _mib(old_mem[oom]), rel=0.01)
        assert rows[bad]["memory"] == old_mem[bad]  # bad input: more memory would not help
        assert not ex.errors

        # --overwrite reruns a done tile and tells the worker to recompute
        r = gm(c, "rerun", "--batch", "cyc", "--tiles", ok[0], "--overwrite")
        assert r.exit_code == 0, r.output
        job = _read_job(c, k8s.job_name("cyc", plan.tiles[0].tile))
        assert job["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--overwrite"


def _mib(q: str) -> float:
    return float(q[:-2]) * (1024 if q.endswith("Gi") else 1)


def _read_job(c: TestCluster, name: str) -> dict[str, Any]:
    api = c.api_client()
    from kubernetes import client

    resp = client.BatchV1Api(api).read_namespaced_job(name, c.namespace, _preload_content=False)
    return dict(json.loads(resp.data))


def test_max_active_tops_up(cluster: TestCluster, tmp_path: Path) -> None:
    c = cluster
    plan = make_plan(tmp_path / "plan", 6)
    ex = executor(c, "maxa", parallel=6, env={"FAKE_WORKER_SECONDS": "1.0"})
    with ex:
        r = gm(
            c,
            "submit",
            "--plan",
            plan.url,
            "--batch",
            "maxa",
            "--max-active",
            "2",
            "--poll-interval",
            "0.3",
        )
        assert r.exit_code == 0, r.output
        assert "created 6 Jobs" in r.output
        wait_for("all done", lambda: all_in(status(c, "maxa"), "succeeded"))
    assert ex.max_running <= 2
    assert len(ex.results) == 6 and set(ex.results.values()) == {0}


def test_done_tiles_are_skipped_and_ttl_cleans_up(cluster: TestCluster, tmp_path: Path) -> None:
    c = cluster
    plan = make_plan(tmp_path / "plan", 3, {"kubernetes": {"ttl_seconds_after_finished": 0}})
    with executor(c, "ttl"):
        r = gm(
            c,
            "submit",
            "--plan",
            plan.url,
            "--batch",
            "ttl",
            "--max-active",
            "1",
            "--poll-interval",
            "0.3",
        )
        assert r.exit_code == 0, r.output
        # ttlSecondsAfterFinished: 0 -> the TTL controller deletes each finished Job
        wait_for(
            "Jobs deleted by TTL", lambda: all_in(status(c, "ttl", "--plan", plan.url), "done")
        )
    rows = status(c, "ttl", "--plan", plan.url)
    assert all(r["job"] is None and r["done"] for r in rows.values())
    r = gm(c, "submit", "--plan", plan.url, "--batch", "ttl")
    assert (
        r.exit_code == 0 and "created 0 Jobs, 0 already existed, 3 tiles already done" in r.output
    )


def test_rbac(cluster: TestCluster, tmp_path: Path) -> None:
    c = cluster
    plan = make_plan(tmp_path / "plan", 2)
    # alice is in gmrun:submitters, bound to the Role of k8s/rbac.yaml: enough for everything
    r = gm(c, "submit", "--plan", plan.url, "--batch", "rbac", context="alice")
    assert r.exit_code == 0, r.output
    r = gm(c, "status", "--batch", "rbac", context="alice")
    assert r.exit_code == 0 and "2 pending" in r.output, r.output
    r = gm(c, "rerun", "--batch", "rbac", "--tiles", str(plan.tiles[0].tile), context="alice")
    assert r.exit_code == 0, r.output
    # mallory has no rights
    for args in (["submit", "--plan", plan.url], ["status", "--plan", plan.url]):
        r = gm(c, *args, "--batch", "rbac", context="mallory")
        assert r.exit_code == 2, r.output
        line = r.output.strip()
        assert line.startswith("error: forbidden: ") and "\n" not in line
        assert 'User "mallory" cannot list resource "jobs"' in line
    # the Role is namespaced: alice cannot use another namespace
    r = gm(c, "status", "--batch", "rbac", "--plan", plan.url, "-n", "default", context="alice")
    assert r.exit_code == 2 and r.output.startswith("error: forbidden: ")


def test_missing_namespace(cluster: TestCluster, tmp_path: Path) -> None:
    plan = make_plan(tmp_path / "plan", 1)
    r = gm(cluster, "submit", "--plan", plan.url, "--batch", "nons", "-n", "nowhere")
    assert r.exit_code == 2
    assert r.output.startswith('error: namespaces "nowhere" not found: create it first')


def test_kubectl_accepts_the_manifests(cluster: TestCluster, tmp_path: Path) -> None:
    c = cluster
    if c.kubectl is None:
        pytest.fail("kubectl was not built: run `bash .ci/k8s-setup.sh`", pytrace=False)
    plan = make_plan(tmp_path / "plan", 3, {"kubernetes": {"s3_secret_name": "gmrun-s3"}})
    # for a current cluster the Jobs carry podFailurePolicy (≥ 1.26), which 1.20's kubectl refuses
    r = gm(c, "render", "--plan", plan.url, "--batch", "kubectl", "-o", str(tmp_path / "new"))
    assert r.exit_code == 0, r.output
    p = subprocess.run(
        [str(c.kubectl), "apply", "--dry-run=server", "-f", str(tmp_path / "new")],
        env=c.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0 and 'unknown field "podFailurePolicy"' in p.stderr, p.stderr
    # --kube-version 1.20 leaves it out, and says so
    out = tmp_path / "jobs"
    r = gm(
        c,
        "render",
        "--plan",
        plan.url,
        "--batch",
        "kubectl",
        "-o",
        str(out),
        "--kube-version",
        "1.20",
    )
    assert r.exit_code == 0, r.output
    assert "warning: the API server is v1.20: Jobs are created without podFailurePolicy" in r.output
    repo = Path(__file__).resolve().parents[1]
    for args in (["-f", str(out)], ["-k", str(out)], ["-k", str(repo / "k8s")]):
        p = subprocess.run(
            [str(c.kubectl), "apply", "--dry-run=server", *args],
            env=c.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        if "k8s" not in args[-1]:
            assert p.stdout.count("job.batch/gm-kubectl-") == 3, p.stdout


def test_status_paginates(
    cluster: TestCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(k8s_client, "_PAGE", 4)  # 10 Jobs: 3 pages of a list call
    plan = make_plan(tmp_path / "plan", 10)
    cl = k8s.Cluster(str(cluster.kubeconfig))
    opts = k8s.JobOptions.from_config(plan.config.kubernetes)
    res = k8s.submit(cl, plan, "pages", opts, workers=4)
    assert len(res.created) == 10
    rows = k8s.batch_status(cl, opts.namespace, "pages", plan)
    assert [r.state for r in rows] == ["pending"] * 10
    assert len({r.job for r in rows}) == 10
    cl.close()


def test_deadline_exceeded(cluster: TestCluster, tmp_path: Path) -> None:
    """activeDeadlineSeconds: the Job controller fails the Job and deletes its running pod."""
    from dataclasses import replace

    plan = make_plan(tmp_path / "plan", 1)
    cl = k8s.Cluster(str(cluster.kubeconfig))
    opts = replace(k8s.JobOptions.from_config(plan.config.kubernetes), active_deadline_seconds=3)
    ex = executor(cluster, "deadline", env={"FAKE_WORKER_SECONDS": "60"})
    with ex:
        k8s.submit(cl, plan, "deadline", opts)
        wait_for(
            "the deadline",
            lambda: all_in(status(cluster, "deadline"), "failed"),
            timeout=60,
        )
        wait_for("the worker to be killed", lambda: ex.running == 0, timeout=20)
    (row,) = status(cluster, "deadline").values()
    assert row["message"].startswith("DeadlineExceeded") and row["reason"] == "deadline", row
    assert not row["done"]
    cl.close()
