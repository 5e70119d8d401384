"""Job manifests of ``gmrun k8s render`` (no cluster needed) and the status logic on plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from runner.cli.k8s import k8s as k8s_group
from runner.common.errors import UserInputError
from runner.fanout import k8s
from runner.fanout.k8s.manifests import _DNS_LABEL_RE
from runner.planner.grid import TileId
from tests.k8s.plans import make_plan


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_plan(tmp_path_factory.mktemp("plan"), 4)


def _opts(plan: Any, **kw: Any) -> k8s.JobOptions:
    return k8s.JobOptions.from_config(plan.config.kubernetes, **kw)


def test_job_names_are_dns_labels() -> None:
    assert k8s.job_name("2023a", TileId(17, 156)) == "gm-2023a-x017y156"
    assert k8s.job_name("b", TileId(-5, -12)) == "gm-b-xm05ym12"
    longest = k8s.job_name("a" * k8s.MAX_BATCH_LEN, TileId(-1234, -1234))
    assert len(longest) <= 63
    assert _DNS_LABEL_RE.match(longest)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "2023_A",
        "UPPER",
        "-x",
        "x-",
        "a.b",
        "a" * 48,
        "a b",
        "../x",
        "a/../b",
        "a;rm -rf ~",
        "$(id)",
        "a`id`",
        "a\nb",
        "a" * 500,
    ],
)
def test_bad_batch_names(bad: str) -> None:
    with pytest.raises(UserInputError, match="invalid batch name"):
        k8s.validate_batch_name(bad)


def test_job_manifest(plan: Any) -> None:
    tp = plan.tiles[0]
    job = k8s.build_job(tp, "2023a", plan.url, _opts(plan))
    meta, spec = job["metadata"], job["spec"]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert meta["name"] == f"gm-2023a-{tp.tile.dns_name}"
    assert meta["labels"] == {
        "app.kubernetes.io/name": "gmrun",
        "gmrun.io/batch": "2023a",
        "gmrun.io/tile": str(tp.tile),
    }
    assert meta["annotations"]["gmrun.io/plan"] == plan.url
    kcfg = plan.config.kubernetes
    assert spec["backoffLimit"] == kcfg.backoff_limit
    assert spec["activeDeadlineSeconds"] == kcfg.active_deadline_seconds
    assert spec["ttlSecondsAfterFinished"] == kcfg.ttl_seconds_after_finished
    assert "suspend" not in spec
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"]["gmrun.io/tile"] == str(tp.tile)
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == kcfg.service_account
    (c,) = pod["containers"]
    assert c["command"] == ["gmrun"]
    assert c["args"][:5] == ["run-tile", "--plan", plan.url, "--tile", str(tp.tile)]
    assert c["args"][5:] == ["--log-format", "json"]
    res = c["resources"]
    assert res["requests"]["memory"] == res["limits"]["memory"] == tp.resources.memory
    assert res["requests"]["cpu"] == tp.resources.cpu
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    # the worker's thread budget: its own CPU request, rounded up (downward API)
    assert [e for e in c["env"] if "value" not in e] == [
        {
            "name": "GMRUN_THREADS",
            "valueFrom": {
                "resourceFieldRef": {
                    "containerName": c["name"],
                    "resource": "requests.cpu",
                    "divisor": "1",
                }
            },
        }
    ]
    assert env["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert env["GMRUN_HEARTBEAT"] == "/tmp/gmrun-heartbeat"
    assert "CPL_VSIL_CURL_ALLOWED_EXTENSIONS" in env
    # GDAL's HTTP retries/timeout come from the plan's input.* (an env var here would win over it)
    assert not any(k.startswith("GDAL_HTTP_") for k in env)
    assert not any(k.startswith("AWS_") for k in env)
    assert "envFrom" not in c
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 10001 and sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    # /tmp is bounded: a worker cannot fill its node's disk
    tmp = kcfg.tmp_size
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": tmp}}]
    assert res["requests"]["ephemeral-storage"] == res["limits"]["ephemeral-storage"] == tmp
    # the image of this gmrun's version, pinned: never a moving latest with IfNotPresent
    from runner import __version__

    assert c["image"] == f"ghcr.io/gmrun/gmrun:{__version__.replace('+', '-')}"
    assert c["imagePullPolicy"] == "IfNotPresent"
    probe = c["livenessProbe"]["exec"]["command"]
    assert probe[:2] == ["sh", "-c"] and "/tmp/gmrun-heartbeat" in probe[2]


def test_secret_and_kueue(plan: Any) -> None:
    opts = _opts(plan, s3_secret_name="gmrun-s3", kueue_queue="team-a", image="reg/gm:1")
    job = k8s.build_job(plan.tiles[1], "b1", plan.url, opts)
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"secretRef": {"name": "gmrun-s3"}}]
    assert c["image"] == "reg/gm:1"
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"


def test_image_pull_policy_follows_the_tag(plan: Any) -> None:
    for image, policy in (
        ("reg/gm:1.2.0", "IfNotPresent"),
        ("reg/gm@sha256:" + "a" * 64, "IfNotPresent"),
        ("reg:5000/gm:latest", "Always"),
        ("reg:5000/gm", "Always"),
    ):
        job = k8s.build_job(plan.tiles[0], "b1", plan.url, _opts(plan, image=image))
        c = job["spec"]["template"]["spec"]["containers"][0]
        assert (c["image"], c["imagePullPolicy"]) == (image, policy)


def test_render_warns_when_pods_cannot_see_the_plan(plan: Any, tmp_path: Path) -> None:
    r = CliRunner().invoke(
        k8s_group, ["render", "--plan", plan.url, "--batch", "w1", "-o", str(tmp_path / "jobs")]
    )
    assert r.exit_code == 0, r.output
    assert f"warning: the plan {plan.url} is a local path" in r.output


def test_memory_override(plan: Any) -> None:
    tp = plan.tiles[0]
    big = tp.resources.scaled(1.5)
    job = k8s.build_job(tp, "b1", plan.url, _opts(plan), big, 1.5)
    lim = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert lim == big.memory != tp.resources.memory
    assert job["metadata"]["annotations"]["gmrun.io/memory-factor"] == "1.5"
    assert job["metadata"]["annotations"]["gmrun.io/memory-bytes"] == str(big.memory_bytes)


def test_render_cli_writes_valid_manifests(plan: Any, tmp_path: Path) -> None:
    out = tmp_path / "jobs"
    r = CliRunner().invoke(
        k8s_group,
        ["render", "--plan", plan.url, "--batch", "2023a", "-o", str(out), "--image", "x/y:1"],
    )
    assert r.exit_code == 0, r.output
    files = sorted(out.glob("*.yaml"))
    assert len(files) == len(plan.tiles)
    kust = yaml.safe_load((out / k8s.KUSTOMIZATION_FILE).read_text())
    assert sorted(kust["resources"]) == [f.name for f in files]
    for f in files:
        doc = yaml.safe_load(f.read_text())
        assert doc["metadata"]["name"] == f.stem
        assert doc["spec"]["template"]["spec"]["containers"][0]["image"] == "x/y:1"


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0"])
def test_manifests_validate_against_the_openapi_schema(plan: Any, version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    opts = _opts(plan, s3_secret_name="gmrun-s3", kueue_queue="q")
    for tp in plan.tiles:
        kubernetes_validate.validate(
            k8s.build_job(tp, "2023a", plan.url, opts), version, strict=True
        )
    repo = Path(__file__).resolve().parents[1]
    for f in sorted((repo / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                kubernetes_validate.validate(doc, version, strict=True)


def test_cli_errors_are_one_line(plan: Any, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(
        k8s_group, ["render", "--plan", plan.url, "--batch", "Bad_Name", "-o", str(tmp_path)]
    )
    assert r.exit_code == 2
    assert r.output.startswith("error: invalid batch name") and r.output.count("\n") == 1
    r = runner.invoke(
        k8s_group, ["render", "--plan", str(tmp_path / "nope"), "--batch", "b", "-o", str(tmp_path)]
    )
    assert r.exit_code == 2 and r.output.startswith("error: plan not found")
    r = runner.invoke(k8s_group, ["rerun", "--batch", "b", "--plan", plan.url])
    assert r.exit_code == 2 and "exactly one of --failed" in r.output


def test_no_kubeconfig_is_a_clear_error(
    plan: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    r = CliRunner().invoke(k8s_group, ["submit", "--plan", plan.url, "--batch", "b"])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: no usable Kubernetes configuration")
    r = CliRunner().invoke(
        k8s_group, ["status", "--batch", "b", "--kubeconfig", str(tmp_path / "missing")]
    )
    assert r.exit_code == 2 and "does not exist" in r.output


def test_unreachable_cluster_is_a_clear_error(plan: Any, tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    r = CliRunner().invoke(
        k8s_group, ["submit", "--plan", plan.url, "--batch", "b", "--kubeconfig", str(kc)]
    )
    assert r.exit_code == 1, r.output  # transient, as kubectl's: not "bad input"
    assert r.output.startswith(
        "error: cannot reach the Kubernetes API server at https://127.0.0.1:1"
    )
    assert "Traceback" not in r.output


def test_read_tile_ids() -> None:
    assert k8s.read_tile_ids("x001y002, x003y004\n# comment\nx-005y006  # tail\n") == [
        TileId(1, 2),
        TileId(3, 4),
        TileId(-5, 6),
    ]
    with pytest.raises(UserInputError):
        k8s.read_tile_ids("x1y2")


def _job(conds: list[dict[str, str]] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "gm-b-x001y001", "uid": "u1", "labels": {"gmrun.io/tile": "x001y001"}},
        "spec": {
            "template": {"spec": {"containers": [{"resources": {"limits": {"memory": "4Gi"}}}]}}
        },
        "status": {"conditions": conds or [], **status},
    }


def _failed_pod(
    reason: str, code: int, message: str = "", created: str = "2024-01-01T00:00:00Z"
) -> dict[str, Any]:
    term = {"exitCode": code, "reason": reason, "message": message}
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": term}}]},
    }


def test_status_of_a_failed_job() -> None:
    job = _job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}], failed=2)
    pods = [
        _failed_pod("OOMKilled", 137, created="2024-01-01T00:00:00Z"),
        _failed_pod(
            "Error",
            2,
            '{"level":"error","message":"cannot read asset s3://b/a.tif"}',
            created="2024-01-01T00:05:00Z",
        ),
    ]
    st = k8s.job_status(job, pods)
    assert st.state == "failed" and st.attempts == 2 and st.failures == 2 and st.memory == "4Gi"
    assert st.message == (
        "BackoffLimitExceeded; last attempt Error (exit 2: bad input): cannot read asset s3://b/a.tif"
    )
    assert (st.reason, st.exit_code) == ("bad-input", 2)
    assert k8s.pod_failure(pods[0]) == "OOMKilled (exit 137: killed)"


def test_status_states() -> None:
    assert (
        k8s.job_status(_job([{"type": "Complete", "status": "True"}], succeeded=1), []).state
        == "succeeded"
    )
    deadline = _job(
        [
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": "Job was active longer than specified deadline",
            }
        ]
    )
    st = k8s.job_status(deadline, [])
    assert st.state == "failed" and st.message.startswith("DeadlineExceeded: Job was active")
    assert st.reason == "deadline"
    running = {"metadata": {}, "status": {"phase": "Running"}}
    assert k8s.job_status(_job(active=1), [running]).state == "running"
    assert k8s.job_status(_job(active=1), []).state == "pending"
    suspended = _job()
    suspended["spec"]["suspend"] = True
    assert k8s.job_status(suspended, []).state == "suspended"


def test_time_budget_reaches_the_job(plan: Any) -> None:
    """kubernetes.max_processing_time: the worker's --max-processing-time, and a Job deadline a
    little larger, so the worker's own clear reason ends the tile first."""
    from tests.conftest import with_changes

    cfg = with_changes(plan.config, kubernetes={"max_processing_time": 3600})
    opts = k8s.JobOptions.from_config(cfg.kubernetes)
    job = k8s.build_job(plan.tiles[0], "b1", plan.url, opts)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    i = args.index("--max-processing-time")
    assert args[i + 1] == "3600"
    assert 3600 < job["spec"]["activeDeadlineSeconds"] <= 3600 + 600
    # without a budget: no flag, the configured deadline
    job = k8s.build_job(plan.tiles[0], "b1", plan.url, _opts(plan))
    assert "--max-processing-time" not in job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert job["spec"]["activeDeadlineSeconds"] == plan.config.kubernetes.active_deadline_seconds
    with pytest.raises(UserInputError, match="max_processing_time"):
        with_changes(plan.config, kubernetes={"max_processing_time": 5})


_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLETOKEN",
}


def test_rendered_manifests_carry_no_credentials(
    plan: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials in the submitting environment never reach a manifest; the endpoint does, as
    a plain env var."""
    for k, v in _SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_PROFILE", "prod-admin")
    out = tmp_path / "jobs"
    r = CliRunner().invoke(
        k8s_group,
        [
            "render",
            "--plan",
            plan.url,
            "--batch",
            "b1",
            "-o",
            str(out),
            "--endpoint-url",
            "http://minio.local:9000",
        ],
    )
    assert r.exit_code == 0, r.output
    files = sorted(out.iterdir())
    assert len(files) == len(plan.tiles) + 1
    for f in files:
        text = f.read_text()
        for v in [*_SECRETS.values(), "prod-admin"]:
            assert v not in text, f"{f.name} leaks a credential"
        assert "AWS_SECRET" not in text and "AWS_SESSION" not in text and "AWS_ACCESS" not in text
    doc = yaml.safe_load(next(out.glob("*.yaml")).read_text())
    env = {
        e["name"]: e.get("value") for e in doc["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["AWS_ENDPOINT_URL"] == "http://minio.local:9000"
    assert [k for k in env if k.startswith("AWS_")] == ["AWS_ENDPOINT_URL"]


@pytest.mark.parametrize(
    "url",
    [
        "http://key:secret@minio:9000",
        "ftp://minio",
        "http://minio/x?a=b",
        "http://minio:9000/bucket",
        "minio:9000",
    ],
)
def test_endpoint_with_credentials_or_path_is_refused(plan: Any, tmp_path: Path, url: str) -> None:
    out = tmp_path / "jobs"
    r = CliRunner().invoke(
        k8s_group,
        ["render", "--plan", plan.url, "--batch", "b1", "-o", str(out), "--endpoint-url", url],
    )
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: invalid endpoint URL") and r.output.count("\n") == 1
    assert "secret" not in r.output
    assert not out.exists()


@pytest.mark.parametrize("batch", ["../etc", "a;touch x", "$(id)", "a" * 300, "a\nb"])
def test_hostile_batch_names_touch_nothing(plan: Any, tmp_path: Path, batch: str) -> None:
    out = tmp_path / "jobs"
    r = CliRunner().invoke(
        k8s_group, ["render", "--plan", plan.url, "--batch", batch, "-o", str(out)]
    )
    assert r.exit_code == 2 and r.output.startswith("error: invalid batch name"), r.output
    assert r.output.count("\n") == 1
    assert not out.exists() and not (tmp_path / "x").exists()


def test_jobs_carry_the_failure_policy(plan: Any, tmp_path: Path) -> None:
    """FailJob on the worker's bad-input code, Ignore on disruptions; restartPolicy Never (the
    policy requires it); left out, with a warning, for a server older than 1.26."""
    from runner.common.errors import EXIT_BAD_INPUT
    from runner.fanout.k8s.policy import fit_to_server, parse_version

    job = k8s.build_job(plan.tiles[0], "b1", plan.url, _opts(plan))
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["podFailurePolicy"] == {
        "rules": [
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": pod["containers"][0]["name"],
                    "operator": "In",
                    "values": [EXIT_BAD_INPUT],
                },
            },
        ]
    }
    assert EXIT_BAD_INPUT == 2
    for version, kept in (("1.25", False), ("v1.26.0", True), ("1.31+", True), ("1.20", False)):
        fitted = fit_to_server(job, parse_version(version))
        assert ("podFailurePolicy" in fitted["spec"]) is kept
    assert "podFailurePolicy" in job["spec"]  # not changed in place
    r = CliRunner().invoke(
        k8s_group,
        ["render", "--plan", plan.url, "--batch", "b1", "-o", str(tmp_path), "--kube-version", "x"],
    )
    assert r.exit_code == 2 and r.output.startswith("error: --kube-version: not a Kubernetes")
