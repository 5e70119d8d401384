"""What an operator of a production cluster relies on, against the real test control plane
(kube-apiserver + Job controller on loopback, the stand-in kubelet of :mod:`tests.k8s.executor`
running :mod:`tests.k8s.fake_worker`): empty tiles never get a Job, exit codes map to states and
reasons, the Jobs' failure policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.fanout import k8s
from runner.planner.plan import EMPTY_REASON, Plan
from tests.k8s.cluster import TestCluster, get_cluster
from tests.k8s.plans import africa_plan, make_plan
from tests.test_k8s_cluster import _read_job as read_job
from tests.test_k8s_cluster import all_in, executor, gm, status, wait_for

pytestmark = [pytest.mark.k8s, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="session")
def cluster() -> TestCluster:
    return get_cluster()


@pytest.fixture(scope="module")
def africa(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    """An Africa plan (3456 africa_10 tiles) of a synthetic catalog that covers 2 of them."""
    return africa_plan(tmp_path_factory.mktemp("africa"))


def test_empty_tiles_never_get_a_job(cluster: TestCluster, africa: Plan, tmp_path: Path) -> None:
    c, plan = cluster, africa
    full = [str(tp.tile) for tp in plan.tiles if tp.n_obs > 0]
    assert len(plan.tiles) == 3456 and len(full) == 2
    n_empty = len(plan.tiles) - len(full)
    # the plan says why each tile is skipped
    doc = json.loads(Path(plan.url).read_text())
    skips = {t["tile"]: t.get("skip") for t in doc["tiles"]}
    assert all(skips[t] is None for t in full)
    assert sum(v == EMPTY_REASON for v in skips.values()) == n_empty

    r = gm(c, "render", "--plan", plan.url, "--batch", "af", "-o", str(tmp_path / "jobs"))
    assert r.exit_code == 0, r.output
    assert "wrote 2 Job manifests" in r.output and f"skipped {n_empty} empty tiles" in r.output
    rendered = sorted(
        yaml.safe_load(f.read_text())["metadata"]["labels"]["gmrun.io/tile"]
        for f in (tmp_path / "jobs").glob("*.yaml")
    )
    assert rendered == sorted(full)

    with executor(c, "af") as ex:
        r = gm(c, "submit", "--plan", plan.url, "--batch", "af")
        assert r.exit_code == 0, r.output
        assert "created 2 Jobs" in r.output and f"{n_empty} empty tiles skipped" in r.output
        wait_for("both Jobs", lambda: all_in({t: status(c, "af")[t] for t in full}, "succeeded"))
        rows = status(c, "af")
        assert len(rows) == 3456
        assert {t for t, row in rows.items() if row["job"]} == set(full)
        empty = [row for row in rows.values() if row["state"] == "empty"]
        assert len(empty) == n_empty
        assert all((row["reason"], row["message"]) == ("empty", EMPTY_REASON) for row in empty)
        r = gm(c, "status", "--batch", "af")
        assert r.exit_code == 0 and f"2 succeeded, {n_empty} empty" in r.output, r.output
        r = gm(c, "status", "--batch", "af", "--state", "empty", "-o", "ids")
        assert len(r.stdout.split()) == n_empty
        # an empty tile chosen for a rerun is left alone, and said so
        empty_tile = next(t for t in rows if rows[t]["state"] == "empty")
        r = gm(c, "rerun", "--batch", "af", "--tiles", empty_tile)
        assert r.exit_code == 0 and "created 0; skipped 1 empty tiles" in r.output, r.output
        # submitting again: nothing new
        r = gm(c, "submit", "--plan", plan.url, "--batch", "af")
        assert r.exit_code == 0 and "created 0 Jobs, 2 already existed" in r.output, r.output
    assert sorted(ex.results.values()) == [0, 0] and not ex.errors


def _fail(plan: Plan, tile: str, what: str) -> None:
    d = Path(plan.folder) / "fail"
    d.mkdir(exist_ok=True)
    (d / tile).write_text(what)


def test_exit_codes_on_the_1_20_job_controller(cluster: TestCluster, tmp_path: Path) -> None:
    """The test server (1.20) predates podFailurePolicy: submit leaves it out and says so in one
    line; its Job controller retries every failure backoffLimit times, and status still names
    each failure by its exit code."""
    c = cluster
    plan = make_plan(tmp_path / "plan", 3, {"kubernetes": {"backoff_limit": 1}})
    bad, bug = str(plan.tiles[1].tile), str(plan.tiles[2].tile)
    _fail(plan, bad, "exit 2")
    _fail(plan, bug, "exit 3")
    with executor(c, "codes") as ex:
        r = gm(c, "submit", "--plan", plan.url, "--batch", "codes")
        assert r.exit_code == 0, r.output
        warning = [ln for ln in r.output.splitlines() if ln.startswith("warning: the API server")]
        assert (
            len(warning) == 1
            and "v1.20" in warning[0]
            and "podFailurePolicy (≥ 1.26)" in (warning[0])
        ), r.output
        job = read_job(c, k8s.job_name("codes", plan.tiles[1].tile))
        assert "podFailurePolicy" not in job["spec"]
        wait_for("the Jobs", lambda: all_in(status(c, "codes"), "succeeded", "failed"), timeout=120)
    rows = status(c, "codes")
    assert rows[str(plan.tiles[0].tile)]["state"] == "succeeded"
    for tile, reason, code in ((bad, "bad-input", 2), (bug, "bug", 3)):
        row = rows[tile]
        assert (row["state"], row["reason"], row["exit_code"]) == ("failed", reason, code), row
        assert row["attempts"] == 2 and row["message"].startswith("BackoffLimitExceeded"), row
    assert not ex.errors


def test_bad_input_fails_at_once_under_the_failure_policy(
    cluster: TestCluster, tmp_path: Path
) -> None:
    """With the stand-in kubelet applying the Jobs' podFailurePolicy as a ≥ 1.26 Job controller
    does: exit 2 fails the Job after one attempt (reason bad-input), exit 1 is retried."""
    c = cluster
    plan = make_plan(tmp_path / "plan", 2, {"kubernetes": {"backoff_limit": 1}})
    bad, flaky = str(plan.tiles[0].tile), str(plan.tiles[1].tile)
    _fail(plan, bad, "exit 2")
    _fail(plan, flaky, "exit 1")
    policy = k8s.build_job(
        plan.tiles[0], "pfp", plan.url, k8s.JobOptions.from_config(plan.config.kubernetes)
    )["spec"]["podFailurePolicy"]
    with executor(c, "pfp", failure_policy=policy) as ex:
        r = gm(c, "submit", "--plan", plan.url, "--batch", "pfp")
        assert r.exit_code == 0, r.output
        wait_for("the Jobs", lambda: all_in(status(c, "pfp"), "failed"), timeout=120)
    rows = status(c, "pfp")
    assert (rows[bad]["reason"], rows[bad]["exit_code"], rows[bad]["attempts"]) == (
        "bad-input",
        2,
        1,
    ), rows[bad]
    assert rows[bad]["message"].startswith(
        "PodFailurePolicy; last attempt Error (exit 2: bad input): cannot read asset"
    ), rows[bad]
    assert (rows[flaky]["reason"], rows[flaky]["attempts"]) == ("error", 2), rows[flaky]
    assert sorted(ex.results.values()) == [1, 1, 2] and not ex.errors


def _pods(c: TestCluster, batch: str) -> list[dict[str, Any]]:
    from kubernetes import client

    resp = client.CoreV1Api(c.api_client()).list_namespaced_pod(
        c.namespace, label_selector=f"gmrun.io/batch={batch}", _preload_content=False
    )
    return list(json.loads(resp.data)["items"])


def _set_pod_status(c: TestCluster, name: str, status: dict[str, Any]) -> None:
    """What a scheduler or a kubelet would report about a pod that cannot start."""
    from kubernetes import client

    client.CoreV1Api(c.api_client()).patch_namespaced_pod_status(
        name, c.namespace, {"status": status}
    )


def test_status_formats_pending_reasons_and_watch(cluster: TestCluster, tmp_path: Path) -> None:
    c = cluster
    plan = make_plan(tmp_path / "plan", 3, {"kubernetes": {"backoff_limit": 0}})
    t0, t1, t2 = (str(tp.tile) for tp in plan.tiles)
    _fail(plan, t2, "exit 2")
    r = gm(c, "submit", "--plan", plan.url, "--batch", "st")
    assert r.exit_code == 0, r.output
    wait_for("3 pods", lambda: len(_pods(c, "st")) == 3)
    pods = {p["metadata"]["labels"]["gmrun.io/tile"]: p["metadata"]["name"] for p in _pods(c, "st")}
    unschedulable = "0/3 nodes are available: 3 Insufficient memory."
    _set_pod_status(
        c,
        pods[t0],
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": unschedulable,
                }
            ],
        },
    )
    pull = 'Back-off pulling image "ghcr.io/gmrun/gmrun:nope"'
    _set_pod_status(
        c,
        pods[t1],
        {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "gmrun",
                    "image": "ghcr.io/gmrun/gmrun:nope",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": pull}},
                }
            ],
        },
    )
    r = gm(c, "status", "--batch", "st", "-o", "wide")
    assert r.exit_code == 0, r.output
    header = r.stdout.splitlines()[0].split()
    assert header[:4] == ["tile", "state", "reason", "exit"]
    assert {"node", "started", "finished", "duration", "failures"} <= set(header)
    assert f"Unschedulable: {unschedulable}" in r.stdout
    assert f"ImagePullBackOff: {pull}" in r.stdout
    assert r.output.strip().splitlines()[-1] == "batch st: 3 tiles: 3 pending"
    r = gm(c, "status", "--batch", "st", "-o", "yaml")
    rows = {row["tile"]: row for row in yaml.safe_load(r.stdout)}
    assert rows[t0]["message"] == f"Unschedulable: {unschedulable}"
    assert {"reason", "exit_code", "node", "started", "finished", "seconds"} <= set(rows[t0])
    assert rows[t0]["started"]  # the Job controller's startTime
    r = gm(c, "status", "--batch", "st", "-o", "name")
    assert sorted(r.stdout.split()) == sorted(
        f"job.batch/{k8s.job_name('st', tp.tile)}" for tp in plan.tiles
    )

    # the stand-in kubelet starts them after all; --watch follows until the batch settles
    with executor(c, "st", env={"FAKE_WORKER_SECONDS": "2"}) as ex:
        r = gm(c, "status", "--batch", "st", "--watch", "--timeout", "120", "-o", "json")
    assert r.exit_code == 0, r.output
    assert f"{t0} running -> succeeded" in r.output or f"{t0} pending -> succeeded" in r.output
    assert "-> failed (bad-input)" in r.output, r.output
    assert r.output.strip().splitlines()[-1] == "batch st: 3 tiles: 2 succeeded, 1 failed"
    final = {row["tile"]: row for row in json.loads(r.stdout)}
    assert final[t2]["state"] == "failed" and final[t2]["exit_code"] == 2
    assert final[t0]["state"] == "succeeded" and final[t0]["done"]
    assert final[t0]["seconds"] is not None and final[t0]["finished"]
    assert not ex.errors
    # settled already: --watch answers at once
    r = gm(c, "status", "--batch", "st", "--watch")
    assert r.exit_code == 0 and "2 succeeded, 1 failed" in r.output


def test_rerun_by_reason_dry_run_cap_and_saved_logs(cluster: TestCluster, tmp_path: Path) -> None:
    """An OOMKilled tile reruns with more memory (up to the cap), a bad-input one does not;
    --dry-run changes nothing; the failed attempt's message is saved before its Job goes."""
    c = cluster
    plan = make_plan(tmp_path / "plan", 3, {"kubernetes": {"backoff_limit": 0}})
    oom, bad, ok = (str(tp.tile) for tp in plan.tiles)
    _fail(plan, oom, "oom")
    _fail(plan, bad, "exit 2")
    with executor(c, "rr") as ex:
        r = gm(c, "submit", "--plan", plan.url, "--batch", "rr")
        assert r.exit_code == 0, r.output
        wait_for("the Jobs", lambda: all_in(status(c, "rr"), "succeeded", "failed"))
        rows = status(c, "rr")
        assert (rows[oom]["reason"], rows[bad]["reason"]) == ("OOMKilled", "bad-input")
        mem = rows[oom]["memory"]
        grown = f"{int(_gib(mem) * 1.5)}Gi" if _gib(mem) * 1.5 == int(_gib(mem) * 1.5) else None
        uids = {t: read_job(c, rows[t]["job"])["metadata"]["uid"] for t in (oom, bad)}

        # --dry-run: what would change, nothing changed
        r = gm(c, "rerun", "--batch", "rr", "--reason", "OOMKilled", "--dry-run")
        assert r.exit_code == 0, r.output
        (line,) = [ln for ln in r.stdout.splitlines() if ln]
        assert line.startswith(f"{oom}  gm-rr-{oom}  OOMKilled  replace  memory {mem} -> ")
        assert grown is None or f"-> {grown}" in line
        assert (
            "would delete 1 Jobs and create 1, 1 with more memory (OOMKilled); nothing changed"
            in r.output
        )
        r = gm(c, "rerun", "--batch", "rr", "--failed", "--reason", "bad-input", "--dry-run")
        assert (
            r.exit_code == 0
            and f"{bad}  gm-rr-{bad}  bad-input  replace  memory {rows[bad]['memory']}  image"
            in (r.stdout)
        ), r.output
        # above the cap: refused before anything is touched
        r = gm(c, "rerun", "--batch", "rr", "--reason", "OOMKilled", "--max-memory", mem)
        assert r.exit_code == 2, r.output
        assert r.output.startswith(
            f"error: 1 tile(s) would get more memory than --max-memory {mem}"
        )
        assert r.output.count("\n") == 1
        assert {t: read_job(c, rows[t]["job"])["metadata"]["uid"] for t in (oom, bad)} == uids
        assert status(c, "rr") == rows
        # a reason no chosen tile has: nothing to do
        r = gm(c, "rerun", "--batch", "rr", "--tiles", bad, "--reason", "OOMKilled")
        assert r.exit_code == 0 and "nothing to rerun" in r.output

        # the real thing, inputs fixed
        for f in (Path(plan.folder) / "fail").iterdir():
            f.unlink()
        r = gm(c, "rerun", "--batch", "rr", "--failed")
        assert r.exit_code == 0, r.output
        assert "deleted 2 Jobs, created 2, 1 with more memory (OOMKilled)" in r.output
        assert "saved 2 failed attempts' logs under" in r.output
        wait_for("the reruns", lambda: all_in(status(c, "rr"), "succeeded"))
        after = status(c, "rr")
        assert _gib(after[oom]["memory"]) == pytest.approx(1.5 * _gib(mem), rel=0.01)
        assert after[bad]["memory"] == rows[bad]["memory"]
        assert after[ok]["job"] == rows[ok]["job"] and after[ok]["attempts"] == 1
    assert not ex.errors
    logs = sorted((Path(plan.folder) / "logs" / "rr").rglob("*.log"))
    assert [p.parent.name for p in logs] == sorted([oom, bad])
    text = (Path(plan.folder) / "logs" / "rr" / bad).glob("*.log").__next__().read_text()
    head = json.loads(text.splitlines()[0][2:])
    assert (head["tile"], head["reason"], head["exit_code"]) == (bad, "bad-input", 2)
    assert "cannot read asset" in text  # the termination message: the worker's last lines
    assert "# log tail" in text  # the kubelet's log, or why it could not be had


def _gib(q: str) -> float:
    return float(q[:-2]) / (1024 if q.endswith("Mi") else 1)


def test_kueue_queue(cluster: TestCluster, tmp_path: Path) -> None:
    """--queue: suspended, labelled Jobs (checked against current schemas and the example
    queues); a 1.20 server, which would drop spec.suspend and run them at once, is refused."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    c = cluster
    plan = make_plan(tmp_path / "plan", 3)
    r = gm(
        c,
        "render",
        "--plan",
        plan.url,
        "--batch",
        "kq",
        "-o",
        str(tmp_path / "j"),
        "--queue",
        "gmrun",
    )
    assert r.exit_code == 0, r.output
    jobs = [yaml.safe_load(f.read_text()) for f in sorted((tmp_path / "j").glob("*.yaml"))]
    assert len(jobs) == 3
    for job in jobs:
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gmrun"
        for version in ("1.29.0", "1.33.0"):
            kubernetes_validate.validate(job, version, strict=True)
    repo = Path(__file__).resolve().parents[1]
    docs = list(yaml.safe_load_all((repo / "k8s/kueue/queues.example.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ResourceFlavor", "ClusterQueue", "LocalQueue"}
    assert all(d["apiVersion"] == "kueue.x-k8s.io/v1beta1" for d in docs)
    local = kinds["LocalQueue"]
    assert (local["metadata"]["name"], local["metadata"]["namespace"]) == ("gmrun", c.namespace)
    assert local["spec"]["clusterQueue"] == kinds["ClusterQueue"]["metadata"]["name"]
    (group,) = kinds["ClusterQueue"]["spec"]["resourceGroups"]
    requested = set(jobs[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"])
    assert requested <= set(group["coveredResources"])  # Kueue admits only covered resources
    assert group["flavors"][0]["name"] == kinds["ResourceFlavor"]["metadata"]["name"]

    r = gm(c, "submit", "--plan", plan.url, "--batch", "kq", "--queue", "gmrun")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: the API server is v1.20") and "spec.suspend" in r.output
    r = gm(
        c, "submit", "--plan", plan.url, "--batch", "kq", "--queue", "gmrun", "--max-active", "5"
    )
    assert r.exit_code == 2 and "use one" in r.output, r.output
    r = gm(c, "status", "--batch", "kq", "--plan", plan.url)
    assert r.exit_code == 0 and "3 unsubmitted" in r.output  # nothing was created
